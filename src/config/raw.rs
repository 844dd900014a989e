//! Serde mirrors of the YAML files (docs/design.md §2, §3). No validation beyond types happens here: values
//! that need checking stay strings so that conversion into the model can report every problem with
//! its own message instead of serde stopping at the first.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

// ---------------------------------------------------------------------------------------------
// Shared value types

/// A duration as written (`30s`); parsed during validation. Accepts a bare YAML integer too, so that
/// `timeout: 30` gets the "expected a duration like …" message rather than a type error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl RawDuration {
    pub fn new(s: &str) -> Self {
        RawDuration(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 250ms, 30s, 15m, 12h or 30d")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML mapping read in file order (for `forward_claims` and mock headers, where order is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    entries.push((k, v));
                }
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Arbitrary extra claims (`claims: {tier: gold}`), kept as JSON values for the token encoder.
pub type RawClaims = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub rate: u32,
    pub per: RawDuration,
    #[serde(default = "default_on_storage_error")]
    pub on_storage_error: String,
    /// Redis storage: one script call per request instead of local leases (docs/design.md §9e).
    #[serde(default)]
    pub exact: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub max: u64,
    pub period: RawDuration,
}

// ---------------------------------------------------------------------------------------------
// gateway.yaml

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default = "default_api_definitions")]
    pub api_definitions: String,
    #[serde(default)]
    pub users: Option<String>,
    #[serde(default)]
    pub policies: Option<String>,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub signing: RawSigning,
    /// Absent: no admin API.
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    #[serde(default = "default_backend")]
    pub backend: String,
    #[serde(default)]
    pub redis: Option<RawRedis>,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            backend: default_backend(),
            redis: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub cluster: Vec<String>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_redis_timeout")]
    pub timeout: RawDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    #[serde(default = "default_key_file")]
    pub key_file: String,
    #[serde(default)]
    pub generate: bool,
    #[serde(default)]
    pub previous_keys: Vec<String>,
}

impl Default for RawSigning {
    fn default() -> Self {
        RawSigning {
            algorithm: default_algorithm(),
            key_file: default_key_file(),
            generate: false,
            previous_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Defaults to loopback: the admin API should never be reachable from outside by accident.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    pub secret: String,
    /// The admin web UI's sign-in lasts this long without a request.
    #[serde(default)]
    pub ui_idle_timeout: Option<RawDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default = "default_log_format")]
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}

/// Every field optional: an absent one takes its value from `model::Limits::default()`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub header_read_timeout: Option<RawDuration>,
    #[serde(default)]
    pub upstream_connect_timeout: Option<RawDuration>,
    #[serde(default)]
    pub upstream_timeout: Option<RawDuration>,
    #[serde(default)]
    pub shutdown_grace: Option<RawDuration>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub secret_verifications: Option<usize>,
    #[serde(default)]
    pub body_read_timeout: Option<RawDuration>,
    #[serde(default)]
    pub idle_timeout: Option<RawDuration>,
    #[serde(default)]
    pub tunnel_idle_timeout: Option<RawDuration>,
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
}

// ---------------------------------------------------------------------------------------------
// api-definitions/<id>.yaml

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Absent: the file stem.
    #[serde(default)]
    pub id: Option<String>,
    /// Absent: the id.
    #[serde(default)]
    pub name: Option<String>,
    pub listen_path: String,
    #[serde(default = "yes")]
    pub strip_listen_path: bool,
    #[serde(default)]
    pub allow_semicolons: bool,
    pub upstream: RawUpstream,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub oauth: Option<RawOAuth>,
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub quota: Option<RawQuota>,
    #[serde(default)]
    pub global_rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub cors: Option<RawCors>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub mock: Option<RawMock>,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub timeout: Option<RawDuration>,
    // Traffic management (docs/design.md §9b).
    #[serde(default)]
    pub targets: Option<Vec<RawTarget>>,
    #[serde(default)]
    pub balance: Option<String>,
    /// `client_ip`, `{header: X}` or `{claim: sub}`; read as a generic value so that conversion can
    /// say which shape was expected instead of serde's "did not match any variant".
    #[serde(default)]
    pub hash_on: Option<serde_json::Value>,
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub websockets: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(default)]
    pub active: Option<RawActiveCheck>,
    #[serde(default)]
    pub passive: Option<RawPassiveCheck>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActiveCheck {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval: Option<RawDuration>,
    #[serde(default)]
    pub timeout: Option<RawDuration>,
    #[serde(default)]
    pub healthy_after: Option<u32>,
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveCheck {
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
    #[serde(default)]
    pub eject_for: Option<RawDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allowed_methods: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_headers: Option<Vec<String>>,
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub max_age: Option<RawDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMock {
    #[serde(default = "default_mock_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: OrderedMap<String>,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Secure by default: an API without an `auth` block requires tokens.
    #[serde(rename = "type", default = "default_auth_type")]
    pub kind: String,
    /// Absent: `Authorization: Bearer`. Explicit `null`: no header credential (serde only calls the
    /// default function for a missing field, so `null` reaches us as `None`).
    #[serde(default = "default_header")]
    pub header: Option<RawHeader>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default = "yes")]
    pub strip_credentials: bool,
    #[serde(default)]
    pub required_scopes: Vec<String>,
    #[serde(default)]
    pub accept_from: Vec<String>,
    #[serde(default)]
    pub forward_claims: OrderedMap<String>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            kind: default_auth_type(),
            header: default_header(),
            query: None,
            cookie: None,
            strip_credentials: true,
            required_scopes: Vec::new(),
            accept_from: Vec::new(),
            forward_claims: OrderedMap::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    #[serde(default = "default_header_name")]
    pub name: String,
    /// Absent: `Bearer ` for the `Authorization` header, nothing for any other header (an
    /// `X-Api-Key: <token>` style header carries no scheme).
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth {
    /// Absent or empty is reported by validation ("at least one grant type is required").
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default = "default_pkce")]
    pub pkce: String,
    #[serde(default = "default_login")]
    pub login: RawLogin,
    #[serde(default = "default_code_ttl")]
    pub code_ttl: RawDuration,
    #[serde(default)]
    pub access_token: RawAccessToken,
    #[serde(default)]
    pub refresh_token: RawRefreshToken,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub notifications: Option<RawNotifications>,
    #[serde(default)]
    pub clients: Vec<RawClient>,
    /// Sessions per (client, user); the oldest ends when a new one would pass it.
    #[serde(default = "default_max_sessions_per_user")]
    pub max_sessions_per_user: u32,
    /// Token requests per client (GCRA); absent: no limit.
    #[serde(default)]
    pub token_rate_limit: Option<RawRateLimit>,
    /// OpenID Connect (docs/design.md §9c): ID tokens, userinfo, discovery, login sessions.
    #[serde(default)]
    pub openid: bool,
    /// How long the builtin login page's session cookie keeps a browser signed in; `0s` = off.
    #[serde(default = "default_login_session")]
    pub login_session: RawDuration,
}

fn default_login_session() -> RawDuration {
    RawDuration::new("8h")
}

fn default_max_sessions_per_user() -> u32 {
    100
}

/// `login: builtin` or `login: {redirect: URL}`. A hand-written visitor instead of an untagged enum,
/// because an untagged enum hides the real problem behind "data did not match any variant".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawLogin {
    Named(String),
    Redirect(RawLoginRedirect),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawLoginRedirect {
    pub redirect: String,
}

impl<'de> Deserialize<'de> for RawLogin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawLogin;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`builtin` or a map `{redirect: URL}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawLogin, E> {
                Ok(RawLogin::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawLogin, A::Error> {
                RawLoginRedirect::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawLogin::Redirect)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessToken {
    #[serde(default = "default_access_ttl")]
    pub ttl: RawDuration,
}

impl Default for RawAccessToken {
    fn default() -> Self {
        RawAccessToken {
            ttl: default_access_ttl(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefreshToken {
    /// A duration or `never`.
    #[serde(default = "default_refresh_ttl")]
    pub ttl: RawDuration,
    /// `null`/absent: unlimited; 0: no refresh tokens.
    #[serde(default)]
    pub max_refreshes: Option<u32>,
}

impl Default for RawRefreshToken {
    fn default() -> Self {
        RawRefreshToken {
            ttl: default_refresh_ttl(),
            max_refreshes: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    pub url: String,
    pub shared_secret: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub client_id: String,
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Absent or empty is reported by validation: a client's grants are never guessed.
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub claims: RawClaims,
    /// Where RP-initiated logout may send the browser back to (exact match).
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// A browser with a login session is not asked for consent again.
    #[serde(default)]
    pub skip_consent: bool,
}

// ---------------------------------------------------------------------------------------------
// users.yaml, policies.yaml

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub username: String,
    pub password_hash: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: RawClaims,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub id: String,
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub quota: Option<RawQuota>,
    /// Absent: the client's own scopes apply unchanged; `[]` grants none.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub access: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Defaults (functions, because serde's `default = "..."` takes a path)

fn yes() -> bool {
    true
}
fn default_listen() -> String {
    "0.0.0.0:8080".to_owned()
}
fn default_api_definitions() -> String {
    "api-definitions".to_owned()
}
fn default_backend() -> String {
    "memory".to_owned()
}
fn default_key_prefix() -> String {
    "tollgate:".to_owned()
}
fn default_redis_timeout() -> RawDuration {
    RawDuration::new("250ms")
}
fn default_algorithm() -> String {
    "ES256".to_owned()
}
fn default_key_file() -> String {
    "keys/signing.pem".to_owned()
}
fn default_admin_listen() -> String {
    "127.0.0.1:8081".to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_log_format() -> String {
    "text".to_owned()
}
fn default_mock_status() -> u16 {
    200
}
fn default_auth_type() -> String {
    "oauth2".to_owned()
}
fn default_header() -> Option<RawHeader> {
    Some(RawHeader {
        name: default_header_name(),
        prefix: None,
    })
}
fn default_header_name() -> String {
    "Authorization".to_owned()
}
fn default_pkce() -> String {
    "required".to_owned()
}
fn default_login() -> RawLogin {
    RawLogin::Named("builtin".to_owned())
}
// Token lifetimes default to the values of the example in docs/design.md: short codes (RFC 6749 §4.1.2 asks
// for at most 10 minutes), half-hour access tokens, refresh tokens for a month.
fn default_code_ttl() -> RawDuration {
    RawDuration::new("60s")
}
fn default_access_ttl() -> RawDuration {
    RawDuration::new("30m")
}
fn default_refresh_ttl() -> RawDuration {
    RawDuration::new("30d")
}
fn default_on_storage_error() -> String {
    "local".to_owned()
}
