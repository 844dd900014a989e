//! `gateway.yaml`: raw → `GatewaySettings`, `Limits` and trusted proxies.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::check;
use super::duration::parse_duration;
use super::error::{FileProblems, field, index};
use super::model::{
    AdminConfig, Cidr, DEFAULT_UI_IDLE_TIMEOUT, GatewaySettings, HostPattern, Limits, LogConfig,
    LogFormat, RedisConfig, SigningAlgorithm, SigningConfig, StorageConfig, TlsFiles,
};
use super::raw::{RawDuration, RawGateway, RawLimits, RawRedis, RawStorage};

/// The admin secret the sample gateway.yaml falls back to when TOLLGATE_ADMIN_SECRET is unset.
pub const SAMPLE_ADMIN_SECRET: &str = "quickstart-admin-secret-change-me";

/// Upper bound of `limits.secret_verifications`: far above any core count, low enough that the
/// permits' argon2 memory (19 MiB each) stays a number an operator would choose on purpose.
const MAX_SECRET_VERIFICATIONS: usize = 1024;

pub(crate) struct GatewayParts {
    pub(crate) settings: GatewaySettings,
    pub(crate) limits: Limits,
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) allowed_hosts: Option<Vec<HostPattern>>,
}

/// Converts everything in `gateway.yaml` except the contents of the files it names (the loader reads
/// those). `base` is the folder of `gateway.yaml` as the user named it.
pub(crate) fn convert(raw: &RawGateway, base: &Path, out: &mut FileProblems<'_>) -> GatewayParts {
    let fallback_listen = SocketAddr::from(([0, 0, 0, 0], 8080));
    let listen = out
        .check("listen", check::socket_addr(&raw.listen))
        .unwrap_or(fallback_listen);

    let tls = raw.tls.as_ref().map(|tls| TlsFiles {
        cert: existing_file(out, "tls.cert", base, &tls.cert),
        key: existing_file(out, "tls.key", base, &tls.key),
    });

    let public_url = match &raw.public_url {
        Some(url) => {
            let _ = out.check("public_url", check::http_url(url, false));
            url.trim_end_matches('/').to_owned()
        }
        None => default_public_url(listen, tls.is_some()),
    };

    let api_definitions = base.join(&raw.api_definitions);
    // The folder is watched for changes, so it is kept absolute: a later change of working directory
    // must not point the watcher elsewhere.
    let api_definitions = std::path::absolute(&api_definitions).unwrap_or(api_definitions);

    let users_file = raw.users.as_ref().map(|u| base.join(u));
    let policies_file = raw.policies.as_ref().map(|p| base.join(p));

    let storage = storage(&raw.storage, out);

    let signing = &raw.signing;
    let algorithm = SigningAlgorithm::parse(&signing.algorithm).unwrap_or_else(|| {
        out.push(
            "signing.algorithm",
            format!(
                "unknown algorithm `{}` (expected ES256, EdDSA or RS256)",
                signing.algorithm
            ),
        );
        SigningAlgorithm::Es256
    });
    let key_file = if signing.generate {
        // Created at first start when missing; only something that is there but not a file is wrong.
        let path = base.join(&signing.key_file);
        if signing.key_file.is_empty() {
            out.push("signing.key_file", "must not be empty");
        } else if path.exists() && !path.is_file() {
            out.push(
                "signing.key_file",
                format!("{} is not a file", path.display()),
            );
        }
        path
    } else {
        existing_file(out, "signing.key_file", base, &signing.key_file)
    };
    let previous_keys = signing
        .previous_keys
        .iter()
        .enumerate()
        .map(|(i, k)| existing_file(out, &index("signing.previous_keys", i), base, k))
        .collect();

    let admin = raw.admin.as_ref().map(|admin| {
        let admin_listen = out
            .check("admin.listen", check::socket_addr(&admin.listen))
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081)));
        // Port 0 asks the OS for a free port, so two `:0` addresses never collide.
        if admin_listen == listen && listen.port() != 0 {
            out.push("admin.listen", "must differ from listen");
        }
        if admin.secret.chars().count() < 16 {
            out.push("admin.secret", "must be at least 16 characters");
        }
        // The quick-start secret is printed in the README: anyone can read it. On loopback it only
        // lets local users in; anywhere else it would open the admin API to the network.
        if admin.secret == SAMPLE_ADMIN_SECRET && !admin_listen.ip().is_loopback() {
            out.push(
                "admin.secret",
                "is the quick-start sample secret, which may only be used with a loopback admin.listen; set TOLLGATE_ADMIN_SECRET",
            );
        }
        let ui_idle_timeout = match &admin.ui_idle_timeout {
            Some(raw) => duration(out, "admin.ui_idle_timeout", raw, DEFAULT_UI_IDLE_TIMEOUT),
            None => DEFAULT_UI_IDLE_TIMEOUT,
        };
        if ui_idle_timeout < Duration::from_secs(1) {
            out.push("admin.ui_idle_timeout", "must be at least 1s");
        }
        AdminConfig {
            listen: admin_listen,
            secret: admin.secret.clone(),
            ui_idle_timeout,
        }
    });

    let level = raw.log.level.as_str();
    if !matches!(level, "trace" | "debug" | "info" | "warn" | "error") {
        out.push(
            "log.level",
            format!("unknown level `{level}` (expected trace, debug, info, warn or error)"),
        );
    }
    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            out.push(
                "log.format",
                format!("unknown format `{other}` (expected text or json)"),
            );
            LogFormat::Text
        }
    };

    let limits = limits(&raw.limits, out);

    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| out.check(&index("trusted_proxies", i), check::cidr(c)))
        .collect();

    let allowed_hosts = raw.allowed_hosts.as_ref().map(|hosts| {
        if hosts.is_empty() {
            out.push(
                "allowed_hosts",
                "must not be empty (omit it to accept any host)",
            );
        }
        hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| out.check(&index("allowed_hosts", i), host_pattern(h)))
            .collect()
    });

    GatewayParts {
        settings: GatewaySettings {
            listen,
            public_url,
            tls,
            api_definitions,
            users_file,
            policies_file,
            storage,
            signing: SigningConfig {
                algorithm,
                key_file,
                generate: signing.generate,
                previous_keys,
            },
            admin,
            log: LogConfig {
                level: level.to_owned(),
                format,
            },
        },
        limits,
        trusted_proxies,
        allowed_hosts,
    }
}

/// `api.example.com`, `*.example.com`, `192.0.2.1` or `[2001:db8::1]`; no port (it is not compared:
/// the gateway may sit behind a port mapping).
fn host_pattern(entry: &str) -> Result<HostPattern, String> {
    let lower = entry.trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        if wildcard || inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{entry}` is not a valid IPv6 literal"));
        }
    } else if name.contains(':') {
        return Err(format!(
            "`{entry}`: write the host without a port (ports are not compared; IPv6 in brackets)"
        ));
    } else if name.is_empty()
        || name.len() > 253
        || name.split('.').any(|label| {
            label.is_empty()
                || label.len() > 63
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
    {
        return Err(format!(
            "`{entry}` is not a host name (expected e.g. api.example.com or *.example.com)"
        ));
    }
    Ok(if wildcard {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

/// `http://<listen>` (`https` with TLS); a wildcard address is not something a client can connect
/// to, so it becomes `localhost`.
fn default_public_url(listen: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if listen.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", listen.port())
    } else {
        match listen.ip() {
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{}", listen.port()),
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}", listen.port()),
        }
    }
}

/// Resolves `rel` against `base` and reports it at `path` unless it is an existing regular file.
pub(crate) fn existing_file(
    out: &mut FileProblems<'_>,
    path: &str,
    base: &Path,
    rel: &str,
) -> PathBuf {
    let full = base.join(rel);
    if rel.is_empty() {
        out.push(path, "must not be empty");
        return full;
    }
    match std::fs::metadata(&full) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => out.push(path, format!("{} is not a file", full.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.push(path, format!("{} does not exist", full.display()));
        }
        Err(e) => out.push(path, format!("{}: {e}", full.display())),
    }
    full
}

/// Parses a duration, reporting it at `path`; `fallback` only keeps conversion going.
pub(crate) fn duration(
    out: &mut FileProblems<'_>,
    path: &str,
    raw: &RawDuration,
    fallback: Duration,
) -> Duration {
    out.check(path, parse_duration(&raw.0)).unwrap_or(fallback)
}

fn storage(raw: &RawStorage, out: &mut FileProblems<'_>) -> StorageConfig {
    match raw.backend.as_str() {
        "memory" => StorageConfig::Memory,
        "redis" => match &raw.redis {
            Some(redis) => StorageConfig::Redis(redis_config(redis, out)),
            None => {
                out.push("storage.redis", "required when storage.backend is redis");
                StorageConfig::Memory
            }
        },
        other => {
            out.push(
                "storage.backend",
                format!("unknown backend `{other}` (expected memory or redis)"),
            );
            StorageConfig::Memory
        }
    }
}

fn redis_config(raw: &RawRedis, out: &mut FileProblems<'_>) -> RedisConfig {
    match (&raw.url, raw.cluster.is_empty()) {
        (Some(_), false) => out.push("storage.redis", "set either url or cluster, not both"),
        (None, true) => out.push("storage.redis", "set url or cluster"),
        _ => {}
    }
    if let Some(url) = &raw.url {
        let _ = out.check(
            "storage.redis.url",
            redis_url(url, &["redis", "rediss", "redis+unix"]),
        );
    }
    for (i, node) in raw.cluster.iter().enumerate() {
        let _ = out.check(&index("storage.redis.cluster", i), redis_node(node));
    }
    RedisConfig {
        url: raw.url.clone(),
        cluster: raw.cluster.clone(),
        key_prefix: raw.key_prefix.clone(),
        timeout: duration(
            out,
            "storage.redis.timeout",
            &raw.timeout,
            Duration::from_millis(250),
        ),
    }
}

fn redis_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let expected = schemes.join(", ");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("not a Redis URL (expected {expected})"));
    };
    if !schemes.contains(&scheme) {
        return Err(format!("scheme must be one of {expected}, not `{scheme}`"));
    }
    if rest.is_empty() || rest.chars().any(char::is_whitespace) {
        return Err(format!("not a Redis URL (expected {expected})"));
    }
    Ok(())
}

/// A cluster seed node: `host:port` or a `redis://`/`rediss://` URL.
fn redis_node(node: &str) -> Result<(), String> {
    if node.contains("://") {
        return redis_url(node, &["redis", "rediss"]);
    }
    match node.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err("not a cluster node like 10.0.0.1:6379 or redis://10.0.0.1:6379".to_owned()),
    }
}

fn limits(raw: &RawLimits, out: &mut FileProblems<'_>) -> Limits {
    let d = Limits::default();
    let mut one = |name: &str, value: &Option<RawDuration>, fallback: Duration| match value {
        Some(v) => duration(out, &field("limits", name), v, fallback),
        None => fallback,
    };
    let header_read_timeout = one(
        "header_read_timeout",
        &raw.header_read_timeout,
        d.header_read_timeout,
    );
    let upstream_connect_timeout = one(
        "upstream_connect_timeout",
        &raw.upstream_connect_timeout,
        d.upstream_connect_timeout,
    );
    let upstream_timeout = one(
        "upstream_timeout",
        &raw.upstream_timeout,
        d.upstream_timeout,
    );
    let shutdown_grace = one("shutdown_grace", &raw.shutdown_grace, d.shutdown_grace);
    let body_read_timeout = one(
        "body_read_timeout",
        &raw.body_read_timeout,
        d.body_read_timeout,
    );
    let idle_timeout = one("idle_timeout", &raw.idle_timeout, d.idle_timeout);
    let tunnel_idle_timeout = one(
        "tunnel_idle_timeout",
        &raw.tunnel_idle_timeout,
        d.tunnel_idle_timeout,
    );
    if raw.max_body_bytes == Some(0) {
        out.push("limits.max_body_bytes", "must be greater than 0");
    }
    if raw.max_connections == Some(0) {
        out.push("limits.max_connections", "must be greater than 0");
    }
    // Each permit may hold one argon2 working set (19 MiB): a typo like 100000 would undo the bound.
    if raw
        .secret_verifications
        .is_some_and(|n| n > MAX_SECRET_VERIFICATIONS)
    {
        out.push(
            "limits.secret_verifications",
            format!("must be at most {MAX_SECRET_VERIFICATIONS} (0 = one per CPU core)"),
        );
    }
    if raw.max_connections_per_ip == Some(0) {
        out.push("limits.max_connections_per_ip", "must be greater than 0");
    }
    let max_header_bytes = raw.max_header_bytes.unwrap_or(d.max_header_bytes);
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&max_header_bytes) {
        out.push(
            "limits.max_header_bytes",
            format!(
                "must be between {MIN_HEADER_BYTES} (hyper's smallest read buffer) and {MAX_HEADER_BYTES}"
            ),
        );
    }
    Limits {
        max_body_bytes: raw.max_body_bytes.unwrap_or(d.max_body_bytes),
        header_read_timeout,
        upstream_connect_timeout,
        upstream_timeout,
        shutdown_grace,
        max_connections: raw.max_connections.unwrap_or(d.max_connections),
        secret_verifications: raw.secret_verifications.unwrap_or(d.secret_verifications),
        body_read_timeout,
        idle_timeout,
        tunnel_idle_timeout,
        max_connections_per_ip: raw.max_connections_per_ip.unwrap_or_else(|| {
            // Unset, the cap also stays below a small `max_connections`, so that one address can
            // never hold every slot: with `max_connections: 50`, one address gets at most 25.
            let max_connections = raw.max_connections.unwrap_or(d.max_connections);
            d.max_connections_per_ip.min((max_connections / 2).max(1))
        }),
        max_header_bytes,
    }
}

/// hyper's HTTP/1 read buffer, which bounds the request head, cannot be smaller than 8 KiB.
const MIN_HEADER_BYTES: usize = 8 * 1024;
/// A head beyond 1 MiB is an attack or a bug; the bound also keeps the HTTP/2 setting in a u32.
const MAX_HEADER_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::Fixture;

    fn problems_with(gateway: &str) -> Vec<String> {
        let f = Fixture::new();
        f.write("gateway.yaml", gateway);
        f.problems()
    }

    fn expect(gateway: &str, line: &str) {
        let lines = problems_with(gateway);
        assert!(
            lines.iter().any(|l| l == line),
            "expected {line:?} in {lines:#?}"
        );
    }

    const SIGN: &str = "signing: {generate: true}\n";

    #[test]
    fn defaults() {
        let f = Fixture::new();
        f.write("gateway.yaml", SIGN);
        let c = f.load().unwrap();
        let g = &c.gateway;
        assert_eq!(g.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(g.public_url, "http://localhost:8080");
        assert_eq!(g.tls, None);
        assert_eq!(g.api_definitions, f.dir().join("api-definitions"));
        assert!(g.api_definitions.is_absolute());
        assert_eq!(g.storage, StorageConfig::Memory);
        assert_eq!(g.signing.algorithm, SigningAlgorithm::Es256);
        assert_eq!(g.signing.key_file, f.dir().join("keys/signing.pem"));
        assert!(g.signing.previous_keys.is_empty());
        assert_eq!(g.admin, None);
        assert_eq!(
            g.log,
            LogConfig {
                level: "info".into(),
                format: LogFormat::Text
            }
        );
        assert_eq!(c.runtime.limits, Limits::default());
        assert!(c.runtime.trusted_proxies.is_empty());
    }

    #[test]
    fn empty_gateway_file_uses_defaults_and_requires_a_key() {
        expect(
            "",
            "gateway.yaml: signing.key_file: keys/signing.pem does not exist",
        );
    }

    #[test]
    fn listen_must_be_socket_address() {
        expect(
            "listen: localhost:8080\n",
            "gateway.yaml: listen: not a socket address like 0.0.0.0:8080 or [::]:8080",
        );
    }

    #[test]
    fn public_url_rules() {
        expect(
            "public_url: localhost:8080\n",
            "gateway.yaml: public_url: not an absolute http(s) URL",
        );
        expect(
            "public_url: ftp://example.com\n",
            "gateway.yaml: public_url: scheme must be http or https, not `ftp`",
        );
        expect(
            "public_url: https://example.com/?x=1\n",
            "gateway.yaml: public_url: must not have a query (`?`)",
        );
        expect(
            "public_url: https://example.com/#x\n",
            "gateway.yaml: public_url: must not have a fragment (`#`)",
        );
    }

    #[test]
    fn public_url_trimmed_and_defaulted() {
        let f = Fixture::new();
        f.write(
            "gateway.yaml",
            &format!("{SIGN}public_url: https://gw.example/base/\n"),
        );
        assert_eq!(
            f.load().unwrap().gateway.public_url,
            "https://gw.example/base"
        );

        f.write("gateway.yaml", &format!("{SIGN}listen: '[::]:9000'\n"));
        assert_eq!(
            f.load().unwrap().gateway.public_url,
            "http://localhost:9000"
        );

        f.write("gateway.yaml", &format!("{SIGN}listen: '[::1]:9000'\n"));
        assert_eq!(f.load().unwrap().gateway.public_url, "http://[::1]:9000");

        f.write("gateway.yaml", &format!("{SIGN}listen: 127.0.0.1:9000\n"));
        assert_eq!(
            f.load().unwrap().gateway.public_url,
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn tls_files_must_exist() {
        let f = Fixture::new();
        f.write("certs/cert.pem", "x");
        f.write(
            "gateway.yaml",
            &format!("{SIGN}tls: {{cert: certs/cert.pem, key: certs/key.pem}}\n"),
        );
        assert_eq!(
            f.problems(),
            vec!["gateway.yaml: tls.key: certs/key.pem does not exist"]
        );
        f.write("certs/key.pem", "x");
        let c = f.load().unwrap();
        assert_eq!(
            c.gateway.tls,
            Some(TlsFiles {
                cert: f.dir().join("certs/cert.pem"),
                key: f.dir().join("certs/key.pem")
            })
        );
        assert_eq!(c.gateway.public_url, "https://localhost:8080");
        f.write(
            "gateway.yaml",
            &format!("{SIGN}tls: {{cert: certs, key: certs/key.pem}}\n"),
        );
        assert_eq!(
            f.problems(),
            vec!["gateway.yaml: tls.cert: certs is not a file"]
        );
    }

    #[test]
    fn users_and_policies_files_must_exist() {
        let f = Fixture::new();
        f.write(
            "gateway.yaml",
            &format!("{SIGN}users: users.yaml\npolicies: p/policies.yaml\n"),
        );
        assert_eq!(
            f.problems(),
            vec![
                "gateway.yaml: users: users.yaml does not exist",
                "gateway.yaml: policies: p/policies.yaml does not exist",
            ]
        );
    }

    #[test]
    fn storage_backend() {
        expect(
            "storage: {backend: etcd}\n",
            "gateway.yaml: storage.backend: unknown backend `etcd` (expected memory or redis)",
        );
        expect(
            "storage: {backend: redis}\n",
            "gateway.yaml: storage.redis: required when storage.backend is redis",
        );
    }

    #[test]
    fn redis_url_or_cluster() {
        expect(
            "storage: {backend: redis, redis: {}}\n",
            "gateway.yaml: storage.redis: set url or cluster",
        );
        expect(
            "storage: {backend: redis, redis: {url: 'redis://a', cluster: ['b:6379']}}\n",
            "gateway.yaml: storage.redis: set either url or cluster, not both",
        );
        expect(
            "storage: {backend: redis, redis: {url: 'http://a:6379'}}\n",
            "gateway.yaml: storage.redis.url: scheme must be one of redis, rediss, redis+unix, not `http`",
        );
        expect(
            "storage: {backend: redis, redis: {url: 'a:6379'}}\n",
            "gateway.yaml: storage.redis.url: not a Redis URL (expected redis, rediss, redis+unix)",
        );
        expect(
            "storage: {backend: redis, redis: {cluster: ['a:6379', 'nope']}}\n",
            "gateway.yaml: storage.redis.cluster[1]: not a cluster node like 10.0.0.1:6379 or redis://10.0.0.1:6379",
        );
        expect(
            "storage: {backend: redis, redis: {url: 'redis://a', timeout: 0ms}}\n",
            "gateway.yaml: storage.redis.timeout: `0ms`: must be greater than 0",
        );
    }

    #[test]
    fn redis_config_parsed() {
        let f = Fixture::new();
        f.write(
            "gateway.yaml",
            &format!("{SIGN}storage: {{backend: redis, redis: {{url: 'rediss://r:6380/1'}}}}\n"),
        );
        assert_eq!(
            f.load().unwrap().gateway.storage,
            StorageConfig::Redis(RedisConfig {
                url: Some("rediss://r:6380/1".into()),
                cluster: vec![],
                key_prefix: "tollgate:".into(),
                timeout: Duration::from_millis(250),
            })
        );
    }

    #[test]
    fn signing_rules() {
        expect(
            "signing: {algorithm: HS256, generate: true}\n",
            "gateway.yaml: signing.algorithm: unknown algorithm `HS256` (expected ES256, EdDSA or RS256)",
        );
        expect(
            "signing: {key_file: k.pem}\n",
            "gateway.yaml: signing.key_file: k.pem does not exist",
        );
        expect(
            "signing: {generate: true, previous_keys: [old.pem]}\n",
            "gateway.yaml: signing.previous_keys[0]: old.pem does not exist",
        );
        let f = Fixture::new();
        f.write("keys/signing.pem/x", "a directory where the key should be");
        f.write("gateway.yaml", SIGN);
        assert_eq!(
            f.problems(),
            vec!["gateway.yaml: signing.key_file: keys/signing.pem is not a file"]
        );
    }

    #[test]
    fn allowed_hosts_rules() {
        let with_gateway = |yaml: &str| {
            let f = Fixture::new();
            f.write("gateway.yaml", yaml);
            f.load().unwrap_or_else(|e| panic!("{e}"))
        };
        let c = with_gateway(SIGN);
        assert_eq!(c.runtime.allowed_hosts, None);
        let c = with_gateway(&format!(
            "{SIGN}allowed_hosts: [API.example.com., '*.apps.example.com', 192.0.2.1, '[2001:db8::1]']\n"
        ));
        assert_eq!(
            c.runtime.allowed_hosts,
            Some(vec![
                HostPattern::Exact("api.example.com".into()),
                HostPattern::Subdomains(".apps.example.com".into()),
                HostPattern::Exact("192.0.2.1".into()),
                HostPattern::Exact("[2001:db8::1]".into()),
            ])
        );
        expect(
            &format!("{SIGN}allowed_hosts: []\n"),
            "gateway.yaml: allowed_hosts: must not be empty (omit it to accept any host)",
        );
        expect(
            &format!("{SIGN}allowed_hosts: [ok.example, 'api.example.com:8443']\n"),
            "gateway.yaml: allowed_hosts[1]: `api.example.com:8443`: write the host without a port (ports are not compared; IPv6 in brackets)",
        );
        expect(
            &format!("{SIGN}allowed_hosts: ['a..b', '*', 'x/y']\n"),
            "gateway.yaml: allowed_hosts[2]: `x/y` is not a host name (expected e.g. api.example.com or *.example.com)",
        );
        expect(
            &format!("{SIGN}allowed_hosts: ['a..b']\n"),
            "gateway.yaml: allowed_hosts[0]: `a..b` is not a host name (expected e.g. api.example.com or *.example.com)",
        );
        expect(
            &format!("{SIGN}allowed_hosts: ['[not-v6]']\n"),
            "gateway.yaml: allowed_hosts[0]: `[not-v6]` is not a valid IPv6 literal",
        );
    }

    #[test]
    fn admin_rules() {
        expect(
            &format!("{SIGN}admin: {{secret: short}}\n"),
            "gateway.yaml: admin.secret: must be at least 16 characters",
        );
        expect(
            &format!("{SIGN}admin: {{listen: nowhere, secret: 0123456789abcdef}}\n"),
            "gateway.yaml: admin.listen: not a socket address like 0.0.0.0:8080 or [::]:8080",
        );
        expect(
            &format!(
                "{SIGN}listen: 127.0.0.1:9000\nadmin: {{listen: 127.0.0.1:9000, secret: 0123456789abcdef}}\n"
            ),
            "gateway.yaml: admin.listen: must differ from listen",
        );
        expect(
            &format!("{SIGN}admin: {{listen: 127.0.0.1:9001}}\n"),
            "gateway.yaml: admin: missing field `secret`",
        );
        expect(
            &format!("{SIGN}admin: {{listen: 0.0.0.0:8081, secret: {SAMPLE_ADMIN_SECRET}}}\n"),
            "gateway.yaml: admin.secret: is the quick-start sample secret, which may only be used with a loopback admin.listen; set TOLLGATE_ADMIN_SECRET",
        );
    }

    #[test]
    fn the_per_address_cap_defaults_below_a_small_max_connections() {
        let cap = |limits: &str| {
            let f = Fixture::new();
            f.write("gateway.yaml", &format!("{SIGN}limits: {limits}\n"));
            f.load().unwrap().runtime.limits.max_connections_per_ip
        };
        assert_eq!(cap("{}"), 256);
        assert_eq!(cap("{max_connections: 50}"), 25);
        assert_eq!(cap("{max_connections: 1}"), 1);
        // Set explicitly, it is taken as written (the gateway warns at start when it is not below).
        assert_eq!(cap("{max_connections: 50, max_connections_per_ip: 80}"), 80);
    }

    #[test]
    fn admin_parsed() {
        let f = Fixture::new();
        f.write(
            "gateway.yaml",
            &format!("{SIGN}admin: {{secret: 0123456789abcdef}}\n"),
        );
        let admin = f.load().unwrap().gateway.admin.unwrap();
        assert_eq!(admin.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(admin.secret, "0123456789abcdef");
        // On loopback the sample secret is allowed (the quick start), with a warning at start.
        f.write(
            "gateway.yaml",
            &format!("{SIGN}admin: {{listen: \"[::1]:8081\", secret: {SAMPLE_ADMIN_SECRET}}}\n"),
        );
        assert_eq!(
            f.load().unwrap().gateway.admin.unwrap().secret,
            SAMPLE_ADMIN_SECRET
        );
    }

    #[test]
    fn log_rules() {
        expect(
            &format!("{SIGN}log: {{level: verbose}}\n"),
            "gateway.yaml: log.level: unknown level `verbose` (expected trace, debug, info, warn or error)",
        );
        expect(
            &format!("{SIGN}log: {{format: xml}}\n"),
            "gateway.yaml: log.format: unknown format `xml` (expected text or json)",
        );
    }

    #[test]
    fn trusted_proxies_rules() {
        expect(
            &format!("{SIGN}trusted_proxies: ['10.0.0.0/8', '10.0.0.0/40']\n"),
            "gateway.yaml: trusted_proxies[1]: prefix length 40 is out of range (0–32 for IPv4)",
        );
        expect(
            &format!("{SIGN}trusted_proxies: [proxy.local]\n"),
            "gateway.yaml: trusted_proxies[0]: not a CIDR like 10.0.0.0/8 or ::1/128",
        );
    }

    #[test]
    fn secret_verifications_rule() {
        expect(
            &format!("{SIGN}limits: {{secret_verifications: 5000}}\n"),
            "gateway.yaml: limits.secret_verifications: must be at most 1024 (0 = one per CPU core)",
        );
        expect(
            &format!("{SIGN}limits: {{secret_verifications: -1}}\n"),
            "gateway.yaml: limits.secret_verifications: invalid value: integer `-1`, expected usize",
        );
    }

    #[test]
    fn limits_rules() {
        expect(
            &format!("{SIGN}limits: {{max_body_bytes: 0}}\n"),
            "gateway.yaml: limits.max_body_bytes: must be greater than 0",
        );
        expect(
            &format!("{SIGN}limits: {{max_connections: 0}}\n"),
            "gateway.yaml: limits.max_connections: must be greater than 0",
        );
        expect(
            &format!("{SIGN}limits: {{upstream_timeout: 30}}\n"),
            "gateway.yaml: limits.upstream_timeout: `30`: expected a duration like 250ms, 30s, 15m, 12h or 30d",
        );
        expect(
            &format!("{SIGN}limits: {{shutdown_grace: 0s}}\n"),
            "gateway.yaml: limits.shutdown_grace: `0s`: must be greater than 0",
        );
        expect(
            &format!("{SIGN}limits: {{max_body_bytes: -1}}\n"),
            "gateway.yaml: limits.max_body_bytes: invalid value: integer `-1`, expected u64",
        );
        expect(
            &format!("{SIGN}limits: {{body_read_timeout: 0s}}\n"),
            "gateway.yaml: limits.body_read_timeout: `0s`: must be greater than 0",
        );
        expect(
            &format!("{SIGN}limits: {{idle_timeout: soon}}\n"),
            "gateway.yaml: limits.idle_timeout: `soon`: expected a duration like 250ms, 30s, 15m, 12h or 30d",
        );
        expect(
            &format!("{SIGN}limits: {{max_connections_per_ip: 0}}\n"),
            "gateway.yaml: limits.max_connections_per_ip: must be greater than 0",
        );
        expect(
            &format!("{SIGN}limits: {{max_header_bytes: 4096}}\n"),
            "gateway.yaml: limits.max_header_bytes: must be between 8192 (hyper's smallest read buffer) and 1048576",
        );
    }

    #[test]
    fn unknown_fields_are_errors() {
        expect(
            &format!("{SIGN}lissten: 0.0.0.0:80\n"),
            "gateway.yaml: lissten: unknown field `lissten`, expected one of `listen`, `public_url`, `tls`, `api_definitions`, `users`, `policies`, `storage`, `signing`, `admin`, `log`, `limits`, `trusted_proxies`, `allowed_hosts`",
        );
    }
}
