//! The OAuth 2.0 authorization server: signing keys and JWKS, secrets, PKCE.

pub mod keys;
pub mod pkce;
pub mod secrets;
