//! The OAuth 2.0 authorization server: flows (`server`), HTTP handlers (`handlers`), login and consent
//! pages, clients, PKCE and notifications.
//!
//! May import: `token`, `policy`, `store`, `limits` (the token endpoint's rate limit), `error`, `html`,
//! `http_util`, `server` (connection info), `config`. Never `auth` or `proxy`: the proxy lends the
//! handlers a [`Ctx`] for one request.

pub mod authorize;
pub mod clients;
pub mod handlers;
pub mod login_page;
pub mod login_session;
pub mod notify;
pub mod oidc;
pub mod oidc_handlers;
pub mod pkce;
pub mod server;

pub use server::AuthServer;

/// What the OAuth endpoints see of the running gateway for one request, lent by the proxy: the
/// authorization server, the configuration the request loaded (a reload in the middle of the request
/// never mixes two), the gateway settings (the admin secret for introspection) and the caller's
/// address as the gateway believes it (for the guessing throttles). `oauth` never sees the proxy's
/// own state.
pub struct Ctx<'a> {
    pub auth: &'a AuthServer,
    pub config: &'a crate::config::RuntimeConfig,
    pub settings: &'a crate::config::GatewaySettings,
    pub client_ip: std::net::IpAddr,
}
