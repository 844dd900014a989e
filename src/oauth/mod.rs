//! The OAuth 2.0 authorization server: flows (`server`), HTTP handlers (`handlers`), signing keys and
//! JWKS, access tokens, clients, secrets, PKCE and notifications.

pub mod authorize;
pub mod clients;
pub mod error;
pub mod handlers;
pub mod keys;
pub mod login_page;
pub mod login_session;
pub mod notify;
pub mod oidc;
pub mod oidc_handlers;
pub mod pkce;
pub mod secrets;
pub mod server;
pub mod tokens;

pub use server::AuthServer;
