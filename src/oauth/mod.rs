//! The OAuth 2.0 authorization server: flows (`server`), HTTP handlers (`handlers`), login and consent
//! pages, clients, PKCE and notifications.

pub mod authorize;
pub mod clients;
pub mod handlers;
pub mod login_page;
pub mod notify;
pub mod pkce;
pub mod server;

pub use server::AuthServer;
