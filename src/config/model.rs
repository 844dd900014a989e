//! The validated configuration model.
//!
//! Everything here has passed validation: listen paths are canonical, URLs are absolute, durations are
//! positive, every cross-reference (policy ids, `accept_from` ids, client grant types) resolves. The rest
//! of the gateway reads these types and never re-checks what validation already proved.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};

/// Everything loaded from `gateway.yaml` and the files it names.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of `gateway.yaml` itself; reloads read it again.
    pub source: PathBuf,
    pub gateway: GatewaySettings,
    /// The part that hot reload replaces atomically.
    pub runtime: Arc<RuntimeConfig>,
}

/// Settings that need a restart to change (listeners, TLS, storage, keys, admin).
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    /// Base of every issuer URL, without a trailing `/`.
    pub public_url: String,
    pub tls: Option<TlsFiles>,
    /// Absolute path of the API definitions folder (watched for changes).
    pub api_definitions: PathBuf,
    pub users_file: Option<PathBuf>,
    pub policies_file: Option<PathBuf>,
    pub storage: StorageConfig,
    pub signing: SigningConfig,
    pub admin: Option<AdminConfig>,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    Memory,
    Redis(RedisConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Either one URL or the seed nodes of a cluster (never both).
    pub url: Option<String>,
    pub cluster: Vec<String>,
    pub key_prefix: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    Es256,
    EdDsa,
    Rs256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::EdDsa => "EdDSA",
            SigningAlgorithm::Rs256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(SigningAlgorithm::Es256),
            "EdDSA" => Some(SigningAlgorithm::EdDsa),
            "RS256" => Some(SigningAlgorithm::Rs256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    pub algorithm: SigningAlgorithm,
    pub key_file: PathBuf,
    pub generate: bool,
    pub previous_keys: Vec<PathBuf>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub secret: String,
    /// How long an admin UI session lasts without a request (`admin.ui_idle_timeout`).
    pub ui_idle_timeout: Duration,
}

/// `admin.ui_idle_timeout` when absent.
pub const DEFAULT_UI_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl std::fmt::Debug for AdminConfig {
    // The secret never reaches a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// One of trace, debug, info, warn, error.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Concurrent client connections per listener; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// argon2 verifications that may run at once (docs/design.md §9a); 0 = one per CPU core.
    pub secret_verifications: usize,
    /// Longest wait between two reads of a request body (408 and close past it).
    pub body_read_timeout: Duration,
    /// A connection without a request in progress (HTTP/1) or an open stream (HTTP/2) is closed after this.
    pub idle_timeout: Duration,
    /// A WebSocket tunnel with no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Open connections per client address (IPv6: per /64) and listener; more are closed at accept.
    pub max_connections_per_ip: usize,
    /// Largest request head (HTTP/1) or header list (HTTP/2) in bytes; larger → 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 10_000,
            secret_verifications: 0,
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(600),
            max_connections_per_ip: 256,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address means a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The hot-reloadable part: APIs, users, policies and the request limits.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub apis: Vec<Arc<ApiDef>>,
    pub users: Vec<User>,
    pub policies: Vec<Policy>,
    pub limits: Limits,
    pub trusted_proxies: Vec<Cidr>,
    /// `None`: any Host is served.
    pub allowed_hosts: Option<Vec<HostPattern>>,
}

/// One entry of `allowed_hosts`, lowercase: `api.example.com` or `*.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// Any name below a domain; kept with its leading dot (`.example.com`).
    Subdomains(String),
}

impl HostPattern {
    /// `host` as [`crate::proxy::headers::host_name`] returns it (no port, any case).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiDef {
    pub id: String,
    pub name: String,
    /// Starts and ends with `/`, canonical (no empty, `.` or `..` segments, no `%` or `\`).
    pub listen_path: String,
    pub strip_listen_path: bool,
    /// `;` in a request path is refused (400) unless this is set.
    pub allow_semicolons: bool,
    pub upstream: Upstream,
    pub auth: AuthConfig,
    pub oauth: Option<OAuthConfig>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    pub global_rate_limit: Option<RateLimit>,
    pub cors: Option<CorsConfig>,
    /// The file this API was read from (for messages).
    pub file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub target: UpstreamTarget,
    pub preserve_host: bool,
    /// `None`: `limits.upstream_timeout`.
    pub timeout: Option<Duration>,
    pub balance: Balance,
    pub health_check: HealthCheck,
    /// Further targets a request may be sent to after a connect error or reset (docs/design.md §9b).
    pub retries: u32,
    pub websockets: bool,
}

#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// One or more targets (`url` is one target of weight 1), all of the same scheme.
    Targets(Vec<TargetDef>),
    Mock(MockResponse),
}

/// One upstream server of an API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDef {
    /// `scheme://authority/` only.
    pub uri: Uri,
    /// The URL's path without a trailing `/` (empty for `/`), prefixed to every forwarded path.
    pub path_prefix: String,
    pub weight: u32,
}

impl TargetDef {
    /// The URL as the operator would write it: `http://10.0.0.1:9000/v1`.
    pub fn name(&self) -> String {
        format!(
            "{}://{}{}",
            self.uri.scheme_str().unwrap_or("http"),
            self.uri.authority().map(|a| a.as_str()).unwrap_or(""),
            self.path_prefix
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's): a weight-3 target gets 3 of every 4 requests, spread out.
    RoundRobin,
    /// The target with the fewest requests in flight relative to its weight.
    LeastConnections,
    /// Consistent hashing on a key of the request.
    Hash(HashOn),
}

impl Balance {
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConnections => "least_connections",
            Balance::Hash(_) => "hash",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    /// A request header's value; a request without it hashes on the client address.
    Header(HeaderName),
    /// A claim of the access token; without it (or on an API without auth) the client address.
    Claim(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCheck {
    pub active: Option<ActiveCheck>,
    pub passive: Option<PassiveCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    /// Starts with `/`; appended to the target's path prefix.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successful probes that bring a target back.
    pub healthy_after: u32,
    /// Consecutive failed probes that take a target out.
    pub unhealthy_after: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveCheck {
    /// Consecutive connect errors, resets or 5xx answers that eject a target.
    pub unhealthy_after: u32,
    pub eject_for: Duration,
}

/// The `cors` block of an API, with the header values precomputed.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// `None`: any origin (`"*"`, only allowed without credentials).
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_methods: HeaderValue,
    pub allowed_headers: HeaderValue,
    pub exposed_headers: Option<HeaderValue>,
    pub allow_credentials: bool,
    pub max_age: HeaderValue,
}

#[derive(Debug, Clone)]
pub struct MockResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    OAuth2,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSource {
    pub name: HeaderName,
    /// E.g. `Bearer ` — the scheme part is matched case-insensitively.
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub kind: AuthType,
    pub header: Option<HeaderSource>,
    pub query: Option<String>,
    pub cookie: Option<String>,
    pub strip_credentials: bool,
    pub required_scopes: Vec<String>,
    pub accept_from: Vec<String>,
    /// Header to set → claim name, in file order.
    pub forward_claims: Vec<(HeaderName, String)>,
}

/// The scopes an OpenID Provider (`oauth.openid: true`) grants on top of the API's own.
pub const OIDC_SCOPES: [&str; 3] = ["openid", "profile", "email"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    AuthorizationCode,
    ClientCredentials,
    Password,
    RefreshToken,
}

impl GrantType {
    /// Every grant, in a fixed order (metrics index their counters by it).
    pub const ALL: [GrantType; 4] = [
        GrantType::AuthorizationCode,
        GrantType::ClientCredentials,
        GrantType::Password,
        GrantType::RefreshToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
            GrantType::RefreshToken => "refresh_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authorization_code" => Some(GrantType::AuthorizationCode),
            "client_credentials" => Some(GrantType::ClientCredentials),
            "password" => Some(GrantType::Password),
            "refresh_token" => Some(GrantType::RefreshToken),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkceMode {
    Required,
    Optional,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginMode {
    Builtin,
    /// An external identity provider; it obtains codes through the admin API.
    Redirect(String),
}

#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub grant_types: Vec<GrantType>,
    pub pkce: PkceMode,
    pub login: LoginMode,
    pub code_ttl: Duration,
    pub access_token_ttl: Duration,
    /// `None`: refresh tokens never expire (`ttl: never`).
    pub refresh_token_ttl: Option<Duration>,
    /// `None`: unlimited; `Some(0)`: no refresh tokens at all.
    pub max_refreshes: Option<u32>,
    pub scopes: Vec<String>,
    pub notifications: Option<Notifications>,
    pub clients: Vec<ClientDef>,
    /// At least 1 (docs/design.md §9f): a new session beyond it ends the user's oldest with the client.
    pub max_sessions_per_user: u32,
    /// Token requests per client, counted after the client authenticated (so nobody can spend
    /// another client's budget by naming it).
    pub token_rate_limit: Option<RateLimit>,
    /// OpenID Provider (docs/design.md §9c): `openid`, `profile` and `email` are in `scopes`.
    pub openid: bool,
    /// Lifetime of a builtin-login session cookie; zero: no login sessions.
    pub login_session: Duration,
}

#[derive(Clone)]
pub struct Notifications {
    pub url: String,
    pub shared_secret: String,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("url", &self.url)
            .field("shared_secret", &"<redacted>")
            .finish()
    }
}

/// A static client from an API definition (read-only at runtime).
#[derive(Debug, Clone)]
pub struct ClientDef {
    pub client_id: String,
    /// argon2id PHC string; `None` for a public client.
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub scopes: Vec<String>,
    pub policy: Option<String>,
    pub claims: BTreeMap<String, serde_json::Value>,
    pub post_logout_redirect_uris: Vec<String>,
    pub skip_consent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStorageError {
    /// Fall back to this node's own in-memory limiter.
    Local,
    Allow,
    Deny,
}

impl OnStorageError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnStorageError::Local => "local",
            OnStorageError::Allow => "allow",
            OnStorageError::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(OnStorageError::Local),
            "allow" => Some(OnStorageError::Allow),
            "deny" => Some(OnStorageError::Deny),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: u32,
    pub per: Duration,
    pub on_storage_error: OnStorageError,
    /// With Redis storage: count every request in Redis (one script call each) instead of spending
    /// local leases of GCRA tokens, which may over-admit by lease lifetime / window (docs/redis.md).
    pub exact: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max: u64,
    pub period: Duration,
}

#[derive(Clone)]
pub struct User {
    pub username: String,
    pub password_hash: String,
    pub scopes: Vec<String>,
    pub claims: BTreeMap<String, serde_json::Value>,
    pub disabled: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("scopes", &self.scopes)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: String,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    /// `None`: the client's own scopes apply unchanged.
    pub scopes: Option<Vec<String>>,
    pub access: Vec<String>,
}
