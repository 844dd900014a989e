//! Reading the files: gateway.yaml, every API definition, users, policies. Each file goes
//! text → YAML tree → `${VAR}` interpolation → raw structs (serde, with field paths) → model, and
//! every problem of every file is collected before the load fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::error::{ConfigErrors, FileProblems, Problems, field, index};
use super::interpolate::{Env, interpolate_tree};
use super::model::{ApiDef, Config, GatewaySettings, Policy, RuntimeConfig, User};
use super::raw::{RawApi, RawGateway, RawPolicy, RawUser};
use super::{accounts, api, gateway};

impl Config {
    /// Loads and validates `gateway.yaml` at `path` and every file it names, reading `${VAR}` from the
    /// process environment. On failure, every problem found in every file is returned.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// Re-reads everything from `self.source` for a hot reload and returns the new runtime part.
    ///
    /// The whole of the new `gateway.yaml` must be valid, or nothing changes. Settings kept in
    /// `GatewaySettings` (listeners, public URL, TLS, storage, signing keys, admin, log) are bound at
    /// start-up, so changes to them are only logged as needing a restart; the caller keeps `self.gateway`.
    /// The API definitions, users and policies are read from the locations the new `gateway.yaml`
    /// names, since those are just where to read from (a folder watcher set up at start keeps
    /// watching the old folder, hence the warning lists `api_definitions` too).
    pub fn load_runtime(&self) -> Result<Arc<RuntimeConfig>, ConfigErrors> {
        let new = Config::load(&self.source)?;
        let mut changed = restart_only_changes(&self.gateway, &new.gateway);
        // The listeners read these once when they start.
        let (old_limits, new_limits) = (&self.runtime.limits, &new.runtime.limits);
        if old_limits.max_connections != new_limits.max_connections {
            changed.push("limits.max_connections");
        }
        if old_limits.header_read_timeout != new_limits.header_read_timeout {
            changed.push("limits.header_read_timeout");
        }
        if old_limits.shutdown_grace != new_limits.shutdown_grace {
            changed.push("limits.shutdown_grace");
        }
        if !changed.is_empty() {
            tracing::warn!(
                file = %self.source.display(),
                settings = ?changed,
                "changed settings take effect only after a restart"
            );
        }
        Ok(new.runtime)
    }

    pub fn api_count(&self) -> usize {
        self.runtime.api_count()
    }

    /// Settings that load but that most likely do not do what was meant, one line each naming the file
    /// and field: `tollgate check` prints them (and still exits 0), `run` logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let alg = self.gateway.signing.algorithm;
        if alg == super::SigningAlgorithm::Rs256 {
            return Vec::new();
        }
        self.runtime
            .apis
            .iter()
            .filter(|api| api.oauth.as_ref().is_some_and(|o| o.openid))
            .map(|api| {
                format!(
                    "{}: signing.algorithm: {} signs the ID tokens of API `{}` (oauth.openid), but \
                     OpenID Connect Discovery 1.0 §3 requires an OpenID Provider to support RS256 and \
                     strict relying parties (Authlib) refuse one that does not; set signing.algorithm: RS256",
                    self.source.display(),
                    alg.as_str(),
                    api.id
                )
            })
            .collect()
    }

    /// Static clients across all APIs (for `tollgate check`'s `ok: N apis, M clients`).
    pub fn client_count(&self) -> usize {
        self.runtime.client_count()
    }
}

impl RuntimeConfig {
    pub fn api_count(&self) -> usize {
        self.apis.len()
    }

    pub fn client_count(&self) -> usize {
        self.apis
            .iter()
            .filter_map(|a| a.oauth.as_ref())
            .map(|o| o.clients.len())
            .sum()
    }
}

fn restart_only_changes(old: &GatewaySettings, new: &GatewaySettings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut note = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    note("listen", old.listen != new.listen);
    note("public_url", old.public_url != new.public_url);
    note("tls", old.tls != new.tls);
    note(
        "api_definitions",
        old.api_definitions != new.api_definitions,
    );
    // Re-read from the new location, but the file watcher keeps polling the old one until a restart.
    note("users", old.users_file != new.users_file);
    note("policies", old.policies_file != new.policies_file);
    note("storage", old.storage != new.storage);
    note("signing", old.signing != new.signing);
    note("admin", old.admin != new.admin);
    note("log", old.log != new.log);
    changed
}

/// `Config::load` with an injectable environment, so tests need not mutate the process environment.
pub(crate) fn load_with_env(path: &Path, env: Env<'_>) -> Result<Config, ConfigErrors> {
    let mut problems = Problems::default();
    // Every other file is named relative to gateway.yaml and shown joined onto the path the user
    // gave (`conf/gateway.yaml` → `conf/api-definitions/movies.yaml`).
    let base = path.parent().unwrap_or(Path::new(""));

    let Some(value) = read_yaml(path, Value::Mapping(Mapping::new()), env, &mut problems) else {
        return problems.fail(path);
    };
    let raw: Option<RawGateway> = deserialize(path, value.clone(), &mut problems);
    // A type error in gateway.yaml should not hide the problems of the other files, so their
    // locations are salvaged from the tree when the whole does not deserialize.
    let locations = match &raw {
        Some(r) => Locations {
            api_definitions: r.api_definitions.clone(),
            users: r.users.clone(),
            policies: r.policies.clone(),
        },
        None => Locations::salvage(&value),
    };
    let parts = raw.as_ref().map(|raw| {
        let mut out = FileProblems {
            file: path,
            problems: &mut problems,
        };
        gateway::convert(raw, base, &mut out)
    });

    let users = match &locations.users {
        Some(rel) => match named_file(path, "users", base, rel, &mut problems) {
            Some(file) => read_list::<RawUser, User>(&file, env, &mut problems, accounts::users),
            None => None,
        },
        None => Some(Vec::new()),
    };

    let policies = match &locations.policies {
        Some(rel) => match named_file(path, "policies", base, rel, &mut problems) {
            Some(file) => {
                read_list::<RawPolicy, Policy>(&file, env, &mut problems, accounts::policies)
                    .map(|p| PolicySet::Loaded(file, p))
            }
            None => Some(PolicySet::Failed),
        },
        None => Some(PolicySet::NotConfigured),
    }
    .unwrap_or(PolicySet::Failed);

    let (apis, unparsed_ids) =
        read_apis(path, base, &locations.api_definitions, env, &mut problems);
    cross_check(path, &apis, &unparsed_ids, &policies, &mut problems);

    let (Some(parts), Some(users)) = (parts, users) else {
        return problems.fail(path);
    };
    let policies = match policies {
        PolicySet::Loaded(_, p) => p,
        PolicySet::NotConfigured | PolicySet::Failed => Vec::new(),
    };
    problems.into_result(Config {
        source: path.to_owned(),
        gateway: parts.settings,
        runtime: Arc::new(RuntimeConfig {
            apis: apis.into_iter().map(Arc::new).collect(),
            users,
            policies,
            limits: parts.limits,
            trusted_proxies: parts.trusted_proxies,
            allowed_hosts: parts.allowed_hosts,
        }),
    })
}

struct Locations {
    api_definitions: String,
    users: Option<String>,
    policies: Option<String>,
}

impl Locations {
    fn salvage(value: &Value) -> Self {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        Locations {
            api_definitions: text("api_definitions")
                .unwrap_or_else(|| "api-definitions".to_owned()),
            users: text("users"),
            policies: text("policies"),
        }
    }
}

enum PolicySet {
    NotConfigured,
    /// Reported already; references to policies are not checked against a partial list.
    Failed,
    Loaded(PathBuf, Vec<Policy>),
}

/// Checks that a file named in gateway.yaml at `key` exists; reports it there if not.
fn named_file(
    gateway_file: &Path,
    key: &str,
    base: &Path,
    rel: &str,
    problems: &mut Problems,
) -> Option<PathBuf> {
    let before = problems.len();
    let mut out = FileProblems {
        file: gateway_file,
        problems,
    };
    let file = gateway::existing_file(&mut out, key, base, rel);
    (problems.len() == before).then_some(file)
}

fn read_yaml(file: &Path, if_empty: Value, env: Env<'_>, problems: &mut Problems) -> Option<Value> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            problems.push(file, "", format!("cannot read: {e}"));
            return None;
        }
    };
    let mut value: Value = match serde_yaml::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(file, "", format!("invalid YAML: {e}"));
            return None;
        }
    };
    // Anchors and aliases resolve in the parser; `<<` merge keys need this extra step, or
    // deny_unknown_fields would reject them.
    if let Err(e) = value.apply_merge() {
        problems.push(file, "", format!("invalid YAML merge: {e}"));
        return None;
    }
    // An empty file (or one with only comments) means "all defaults".
    if value.is_null() {
        value = if_empty;
    }
    interpolate_tree(&mut value, "", env, &mut FileProblems { file, problems });
    Some(value)
}

/// Deserializes through serde_path_to_error so that a type error names its field path.
fn deserialize<T: DeserializeOwned>(
    file: &Path,
    value: Value,
    problems: &mut Problems,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = format_path(e.path());
            problems.push(file, &path, e.inner().to_string());
            None
        }
    }
}

fn format_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .fold(String::new(), |acc, segment| match segment {
            Segment::Seq { index: i } => index(&acc, *i),
            Segment::Map { key } | Segment::Enum { variant: key } => field(&acc, key),
            Segment::Unknown => field(&acc, "?"),
        })
}

/// users.yaml and policies.yaml: a YAML list of entries. `None` when the file did not deserialize.
fn read_list<R: DeserializeOwned, M>(
    file: &Path,
    env: Env<'_>,
    problems: &mut Problems,
    convert: fn(Vec<R>, &mut FileProblems<'_>) -> Vec<M>,
) -> Option<Vec<M>> {
    let value = read_yaml(file, Value::Sequence(Vec::new()), env, problems)?;
    let raw: Vec<R> = deserialize(file, value, problems)?;
    Some(convert(raw, &mut FileProblems { file, problems }))
}

/// Reads every `*.yaml`/`*.yml` in the folder, sorted by name (dotfiles, such as editor swap files,
/// are skipped). Returns the APIs that deserialized, and the ids of those that did not (taken from
/// their `id` field or file name) so that references to them are not reported as dangling.
fn read_apis(
    gateway_file: &Path,
    base: &Path,
    rel: &str,
    env: Env<'_>,
    problems: &mut Problems,
) -> (Vec<ApiDef>, Vec<String>) {
    let dir = base.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            let message = match e.kind() {
                std::io::ErrorKind::NotFound => format!("{} does not exist", dir.display()),
                std::io::ErrorKind::NotADirectory => format!("{} is not a folder", dir.display()),
                _ => format!("{}: {e}", dir.display()),
            };
            problems.push(gateway_file, "api_definitions", message);
            return (Vec::new(), Vec::new());
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| {
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
        })
        .filter(|name| dir.join(name).is_file())
        .collect();
    names.sort();
    if names.is_empty() {
        problems.push(
            gateway_file,
            "api_definitions",
            format!(
                "no API definitions found in {} (expected *.yaml or *.yml files)",
                dir.display()
            ),
        );
    }

    let mut apis = Vec::with_capacity(names.len());
    let mut unparsed_ids = Vec::new();
    for name in names {
        let file = dir.join(&name);
        let stem = Path::new(&name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(&name)
            .to_owned();
        let Some(value) = read_yaml(&file, Value::Mapping(Mapping::new()), env, problems) else {
            unparsed_ids.push(stem);
            continue;
        };
        let id_in_file = value.get("id").and_then(Value::as_str).map(str::to_owned);
        match deserialize::<RawApi>(&file, value, problems) {
            Some(raw) => apis.push(api::convert(
                raw,
                &file,
                &stem,
                &mut FileProblems {
                    file: &file,
                    problems,
                },
            )),
            None => unparsed_ids.push(id_in_file.unwrap_or(stem)),
        }
    }
    (apis, unparsed_ids)
}

/// Checks between files: unique API ids and listen paths, `accept_from`, client policies, and the
/// APIs a policy grants access to.
fn cross_check(
    gateway_file: &Path,
    apis: &[ApiDef],
    unparsed_ids: &[String],
    policies: &PolicySet,
    problems: &mut Problems,
) {
    let mut by_id: HashMap<&str, &ApiDef> = HashMap::new();
    let mut by_path: HashMap<&str, &ApiDef> = HashMap::new();
    for a in apis {
        match by_id.get(a.id.as_str()) {
            Some(first) => problems.push(
                &a.file,
                "id",
                format!("id `{}` is already used by {}", a.id, first.file.display()),
            ),
            None => {
                by_id.insert(&a.id, a);
            }
        }
        match by_path.get(a.listen_path.as_str()) {
            Some(first) => problems.push(
                &a.file,
                "listen_path",
                format!(
                    "`{}` is already the listen path of API `{}` ({})",
                    a.listen_path,
                    first.id,
                    first.file.display()
                ),
            ),
            None => {
                by_path.insert(&a.listen_path, a);
            }
        }
    }
    let api_exists = |id: &str| by_id.contains_key(id) || unparsed_ids.iter().any(|u| u == id);

    for a in apis {
        for (i, id) in a.auth.accept_from.iter().enumerate() {
            if !id.is_empty() && !api_exists(id) {
                problems.push(
                    &a.file,
                    &index("auth.accept_from", i),
                    format!("no API with id `{id}`"),
                );
            }
        }
        let Some(oauth) = &a.oauth else { continue };
        for (i, c) in oauth.clients.iter().enumerate() {
            let Some(policy) = c.policy.as_deref().filter(|p| !p.is_empty()) else {
                continue;
            };
            let path = field(&index("oauth.clients", i), "policy");
            match policies {
                PolicySet::Loaded(file, list) => {
                    if !list.iter().any(|p| p.id == policy) {
                        problems.push(
                            &a.file,
                            &path,
                            format!("no policy with id `{policy}` in {}", file.display()),
                        );
                    }
                }
                PolicySet::NotConfigured => problems.push(
                    &a.file,
                    &path,
                    format!(
                        "no policy with id `{policy}` ({} names no policies file)",
                        gateway_file.display()
                    ),
                ),
                PolicySet::Failed => {}
            }
        }
    }

    if let PolicySet::Loaded(file, list) = policies {
        for (i, p) in list.iter().enumerate() {
            for (j, id) in p.access.iter().enumerate() {
                if !api_exists(id) {
                    problems.push(
                        file,
                        &index(&field(&index("", i), "access"), j),
                        format!("no API with id `{id}`"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::model::*;
    use crate::config::testutil::{ECHO_API, Fixture, PHC};

    const FULL_GATEWAY: &str = r#"
listen: 0.0.0.0:8080
public_url: http://localhost:8080/
tls: { cert: certs/cert.pem, key: certs/key.pem }
api_definitions: api-definitions
users: users.yaml
policies: policies.yaml
storage:
  backend: redis
  redis:
    url: redis://127.0.0.1:6379/0
    cluster: [ ]
    key_prefix: "tg:"
    timeout: 300ms
signing:
  algorithm: EdDSA
  key_file: keys/signing.pem
  generate: false
  previous_keys: [keys/old.pem]
admin:
  listen: 127.0.0.1:8081
  secret: ${TOLLGATE_ADMIN_SECRET}
log: { level: debug, format: json }
limits:
  max_body_bytes: 1048576
  header_read_timeout: 5s
  upstream_connect_timeout: 2s
  upstream_timeout: 20s
  shutdown_grace: 15s
  max_connections: 500
trusted_proxies: [10.0.0.0/8, "::1"]
"#;

    fn full_movies() -> String {
        format!(
            r#"
id: movies
name: Movies API
listen_path: /movies/
strip_listen_path: false
upstream:
  url: http://127.0.0.1:9000/v1
  preserve_host: true
  timeout: 10s
auth:
  type: oauth2
  header: {{ name: Authorization, prefix: "Bearer " }}
  query: access_token
  cookie: tg_access
  strip_credentials: false
  required_scopes: [read]
  accept_from: [echo]
  forward_claims: {{ X-User-Id: sub, X-Client-Id: client_id }}
oauth:
  grant_types: [authorization_code, client_credentials, password, refresh_token]
  pkce: optional
  login: builtin
  code_ttl: 30s
  access_token: {{ ttl: 15m }}
  refresh_token: {{ ttl: 7d, max_refreshes: 10 }}
  scopes: [read, write]
  notifications: {{ url: http://127.0.0.1:7000/hook, shared_secret: "${{HOOK_SECRET}}" }}
  clients:
    - client_id: movies_app
      secret_hash: "{PHC}"
      redirect_uris: [http://localhost:3000/callback]
      grant_types: [authorization_code, password, refresh_token, client_credentials]
      scopes: [read]
      policy: gold
      claims: {{ tier: gold }}
    - client_id: spa
      redirect_uris: [https://spa.example/cb]
      grant_types: [authorization_code, refresh_token]
rate_limit: {{ rate: 100, per: 1s, on_storage_error: allow }}
quota: {{ max: 10000, period: 1d }}
global_rate_limit: {{ rate: 5000, per: 1s }}
"#
        )
    }

    fn full_fixture() -> Fixture {
        let mut f = Fixture::new();
        f.set_env("TOLLGATE_ADMIN_SECRET", "a-very-long-admin-secret");
        f.set_env("HOOK_SECRET", "hook-secret");
        for file in [
            "certs/cert.pem",
            "certs/key.pem",
            "keys/signing.pem",
            "keys/old.pem",
        ] {
            f.write(file, "pem");
        }
        f.write("gateway.yaml", FULL_GATEWAY);
        f.write("api-definitions/movies.yaml", &full_movies());
        f.write(
            "users.yaml",
            &format!("- {{username: alice, password_hash: '{PHC}', scopes: [read], claims: {{email: alice@example.com}}}}\n"),
        );
        f.write(
            "policies.yaml",
            "- {id: gold, rate_limit: {rate: 1000, per: 1s}, access: [movies, echo]}\n",
        );
        f
    }

    #[test]
    fn full_example_loads() {
        let f = full_fixture();
        let c = f.load().unwrap_or_else(|e| panic!("{e}"));
        let d = f.dir();
        assert_eq!(c.source, f.gateway_path());
        assert_eq!(c.api_count(), 2);
        assert_eq!(c.client_count(), 2);

        let g = &c.gateway;
        assert_eq!(g.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(g.public_url, "http://localhost:8080");
        assert_eq!(
            g.tls,
            Some(TlsFiles {
                cert: d.join("certs/cert.pem"),
                key: d.join("certs/key.pem")
            })
        );
        assert_eq!(g.api_definitions, d.join("api-definitions"));
        assert_eq!(g.users_file, Some(d.join("users.yaml")));
        assert_eq!(g.policies_file, Some(d.join("policies.yaml")));
        assert_eq!(
            g.storage,
            StorageConfig::Redis(RedisConfig {
                url: Some("redis://127.0.0.1:6379/0".into()),
                cluster: vec![],
                key_prefix: "tg:".into(),
                timeout: Duration::from_millis(300),
            })
        );
        assert_eq!(
            g.signing,
            SigningConfig {
                algorithm: SigningAlgorithm::EdDsa,
                key_file: d.join("keys/signing.pem"),
                generate: false,
                previous_keys: vec![d.join("keys/old.pem")],
            }
        );
        assert_eq!(
            g.admin,
            Some(AdminConfig {
                listen: "127.0.0.1:8081".parse().unwrap(),
                secret: "a-very-long-admin-secret".into(),
                ui_idle_timeout: crate::config::DEFAULT_UI_IDLE_TIMEOUT,
            })
        );
        assert_eq!(
            g.log,
            LogConfig {
                level: "debug".into(),
                format: LogFormat::Json
            }
        );

        let r = &c.runtime;
        assert_eq!(
            r.limits,
            Limits {
                max_body_bytes: 1_048_576,
                header_read_timeout: Duration::from_secs(5),
                upstream_connect_timeout: Duration::from_secs(2),
                upstream_timeout: Duration::from_secs(20),
                shutdown_grace: Duration::from_secs(15),
                max_connections: 500,
                // Unset: 256, or half of max_connections when that is smaller.
                max_connections_per_ip: 250,
                ..Limits::default()
            }
        );
        assert_eq!(
            r.trusted_proxies,
            vec![
                Cidr {
                    addr: "10.0.0.0".parse().unwrap(),
                    prefix: 8
                },
                Cidr {
                    addr: "::1".parse().unwrap(),
                    prefix: 128
                },
            ]
        );
        assert_eq!(r.users.len(), 1);
        assert_eq!(r.policies.len(), 1);

        // Sorted by file name: echo.yaml, movies.yaml.
        assert_eq!(r.apis[0].id, "echo");
        let m = &r.apis[1];
        assert_eq!(m.id, "movies");
        assert_eq!(m.name, "Movies API");
        assert_eq!(m.listen_path, "/movies/");
        assert!(!m.strip_listen_path);
        assert!(m.upstream.preserve_host);
        assert_eq!(m.upstream.timeout, Some(Duration::from_secs(10)));
        let UpstreamTarget::Targets(targets) = &m.upstream.target else {
            panic!("url")
        };
        let (uri, path_prefix) = (&targets[0].uri, &targets[0].path_prefix);
        assert_eq!(uri.to_string(), "http://127.0.0.1:9000/");
        assert_eq!(path_prefix, "/v1");
        assert_eq!(m.auth.kind, AuthType::OAuth2);
        assert_eq!(m.auth.query.as_deref(), Some("access_token"));
        assert_eq!(m.auth.cookie.as_deref(), Some("tg_access"));
        assert!(!m.auth.strip_credentials);
        assert_eq!(m.auth.required_scopes, vec!["read"]);
        assert_eq!(m.auth.accept_from, vec!["echo"]);
        assert_eq!(m.auth.forward_claims.len(), 2);
        let o = m.oauth.as_ref().unwrap();
        assert_eq!(o.grant_types.len(), 4);
        assert_eq!(o.pkce, PkceMode::Optional);
        assert_eq!(o.code_ttl, Duration::from_secs(30));
        assert_eq!(o.access_token_ttl, Duration::from_secs(900));
        assert_eq!(o.refresh_token_ttl, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(o.max_refreshes, Some(10));
        assert_eq!(o.scopes, vec!["read", "write"]);
        let n = o.notifications.as_ref().unwrap();
        assert_eq!(
            (n.url.as_str(), n.shared_secret.as_str()),
            ("http://127.0.0.1:7000/hook", "hook-secret")
        );
        let app = &o.clients[0];
        assert_eq!(app.secret_hash.as_deref(), Some(PHC));
        assert_eq!(app.policy.as_deref(), Some("gold"));
        assert_eq!(app.claims["tier"], serde_json::json!("gold"));
        assert_eq!(o.clients[1].secret_hash, None);
        assert_eq!(
            m.rate_limit,
            Some(RateLimit {
                rate: 100,
                per: Duration::from_secs(1),
                on_storage_error: OnStorageError::Allow,
                exact: false,
            })
        );
        assert_eq!(
            m.quota,
            Some(Quota {
                max: 10_000,
                period: Duration::from_secs(86_400)
            })
        );
        assert_eq!(m.global_rate_limit.map(|g| g.rate), Some(5000));
        assert_eq!(m.file, d.join("api-definitions/movies.yaml"));
    }

    #[test]
    fn problems_across_files_are_all_reported() {
        let f = Fixture::new();
        f.write(
            "gateway.yaml",
            "signing: {generate: true}\nlog: {level: loud}\nusers: users.yaml\n",
        );
        f.write("users.yaml", "- {username: alice, password_hash: nope}\n");
        f.write(
            "api-definitions/a.yaml",
            "listen_path: a/\nupstream: {url: 'http://u'}\noauth: {grant_types: [password], pkce: plain}\n",
        );
        f.write(
            "api-definitions/b.yaml",
            "listen_path: /b/\nupstream: {}\nrate_limit: {rate: 0, per: 1s}\n",
        );
        assert_eq!(
            f.problems(),
            vec![
                "gateway.yaml: log.level: unknown level `loud` (expected trace, debug, info, warn or error)",
                "users.yaml: [0].password_hash: not an argon2id PHC string (make one with `tollgate hash-secret`)",
                "api-definitions/a.yaml: listen_path: must start and end with `/`",
                "api-definitions/a.yaml: oauth.pkce: `plain` is never accepted (it offers no protection against a stolen code); use required (S256) or optional",
                "api-definitions/b.yaml: upstream: set exactly one of url, targets or mock",
                "api-definitions/b.yaml: rate_limit.rate: must be greater than 0",
            ]
        );
    }

    #[test]
    fn type_error_in_gateway_still_checks_other_files() {
        let f = Fixture::new();
        f.write("gateway.yaml", "signing: {generate: yes-please}\n");
        f.write(
            "api-definitions/bad.yaml",
            "listen_path: /bad\nupstream: {url: 'http://u'}\n",
        );
        assert_eq!(
            f.problems(),
            vec![
                "gateway.yaml: signing.generate: invalid type: string \"yes-please\", expected a boolean",
                "api-definitions/bad.yaml: listen_path: must start and end with `/`",
            ]
        );
    }

    #[test]
    fn interpolation_present_missing_default() {
        let mut f = Fixture::new();
        f.write(
            "gateway.yaml",
            "signing: {generate: true}\nlog: {level: '${LOG_LEVEL:-warn}'}\nadmin: {secret: '${ADMIN_SECRET}'}\n",
        );
        // Missing: reported at the field path, with no second message about the empty value left behind.
        assert_eq!(
            f.problems(),
            vec!["gateway.yaml: admin.secret: environment variable `ADMIN_SECRET` is not set"]
        );
        f.set_env("ADMIN_SECRET", "0123456789abcdef-from-env");
        let c = f.load().unwrap();
        assert_eq!(c.gateway.admin.unwrap().secret, "0123456789abcdef-from-env");
        assert_eq!(c.gateway.log.level, "warn");
        f.set_env("LOG_LEVEL", "error");
        assert_eq!(f.load().unwrap().gateway.log.level, "error");
    }

    #[test]
    fn interpolation_in_api_files_and_lists() {
        let mut f = Fixture::new();
        f.write(
            "api-definitions/m.yaml",
            "listen_path: /m/\nupstream: {url: 'http://${UPSTREAM_HOST}:9000'}\nauth: {required_scopes: [a, '${SCOPE}']}\n",
        );
        f.set_env("UPSTREAM_HOST", "10.1.2.3");
        assert_eq!(
            f.problems(),
            vec![
                "api-definitions/m.yaml: auth.required_scopes[1]: environment variable `SCOPE` is not set"
            ]
        );
        f.set_env("SCOPE", "read");
        let c = f.load().unwrap();
        let UpstreamTarget::Targets(targets) = &c.runtime.apis[1].upstream.target else {
            panic!("url")
        };
        let uri = &targets[0].uri;
        assert_eq!(uri.host(), Some("10.1.2.3"));
    }

    #[test]
    fn yaml_syntax_error_has_no_field_path() {
        let f = Fixture::new();
        f.write("api-definitions/broken.yaml", "listen_path: [/x/\n");
        let lines = f.problems();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("api-definitions/broken.yaml: invalid YAML: "),
            "{lines:?}"
        );
    }

    #[test]
    fn missing_gateway_file() {
        let f = Fixture::new();
        f.remove("gateway.yaml");
        let lines = f.problems();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("gateway.yaml: cannot read: "),
            "{lines:?}"
        );
    }

    #[test]
    fn api_folder_rules() {
        let f = Fixture::new();
        f.remove("api-definitions/echo.yaml");
        f.write("api-definitions/README.md", "not yaml");
        f.expect(
            "gateway.yaml: api_definitions: no API definitions found in api-definitions (expected *.yaml or *.yml files)",
        );
        f.write(
            "gateway.yaml",
            "signing: {generate: true}\napi_definitions: apis\n",
        );
        f.expect("gateway.yaml: api_definitions: apis does not exist");
        f.write("apis", "a file");
        f.expect("gateway.yaml: api_definitions: apis is not a folder");
    }

    #[test]
    fn api_files_yml_sorted_and_dotfiles_skipped() {
        let f = Fixture::new();
        f.write(
            "api-definitions/a.yml",
            "listen_path: /a/\nupstream: {url: 'http://u'}\n",
        );
        f.write("api-definitions/.swap.yaml", "garbage: [");
        let c = f.load().unwrap();
        let ids: Vec<_> = c.runtime.apis.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "echo"]);
    }

    #[test]
    fn api_id_unique_across_files() {
        let f = Fixture::new();
        f.write(
            "api-definitions/other.yaml",
            "id: echo\nlisten_path: /other/\nupstream: {url: 'http://u'}\n",
        );
        assert_eq!(
            f.problems(),
            vec![
                "api-definitions/other.yaml: id: id `echo` is already used by api-definitions/echo.yaml"
            ]
        );
    }

    #[test]
    fn listen_path_unique_across_files() {
        let f = Fixture::new();
        f.write(
            "api-definitions/other.yaml",
            "listen_path: /echo/\nupstream: {url: 'http://u'}\n",
        );
        assert_eq!(
            f.problems(),
            vec![
                "api-definitions/other.yaml: listen_path: `/echo/` is already the listen path of API `echo` (api-definitions/echo.yaml)"
            ]
        );
    }

    #[test]
    fn accept_from_must_name_an_api() {
        let f = Fixture::new();
        f.write(
            "api-definitions/m.yaml",
            "listen_path: /m/\nupstream: {url: 'http://u'}\nauth: {accept_from: [echo, films]}\n",
        );
        assert_eq!(
            f.problems(),
            vec!["api-definitions/m.yaml: auth.accept_from[1]: no API with id `films`"]
        );
    }

    #[test]
    fn references_to_unparsable_apis_are_not_dangling() {
        let f = Fixture::new();
        f.write(
            "api-definitions/films.yaml",
            "listen_path: /films/\nupstream: 5\n",
        );
        f.write(
            "api-definitions/m.yaml",
            "listen_path: /m/\nupstream: {url: 'http://u'}\nauth: {accept_from: [films]}\n",
        );
        assert_eq!(
            f.problems(),
            vec![
                "api-definitions/films.yaml: upstream: invalid type: integer `5`, expected struct RawUpstream"
            ]
        );
    }

    fn api_with_policy(policy: &str) -> String {
        format!(
            "listen_path: /m/\nupstream: {{url: 'http://u'}}\noauth:\n  grant_types: [password]\n  clients: [{{client_id: c, grant_types: [password], policy: {policy}}}]\n"
        )
    }

    #[test]
    fn client_policy_must_exist() {
        let f = Fixture::new();
        f.write("api-definitions/m.yaml", &api_with_policy("gold"));
        assert_eq!(
            f.problems(),
            vec![
                "api-definitions/m.yaml: oauth.clients[0].policy: no policy with id `gold` (gateway.yaml names no policies file)"
            ]
        );
        f.write(
            "gateway.yaml",
            "signing: {generate: true}\npolicies: policies.yaml\n",
        );
        f.write("policies.yaml", "- {id: silver}\n");
        assert_eq!(
            f.problems(),
            vec![
                "api-definitions/m.yaml: oauth.clients[0].policy: no policy with id `gold` in policies.yaml"
            ]
        );
        f.write("policies.yaml", "- {id: gold}\n");
        assert_eq!(f.problems(), Vec::<String>::new());
        // A policies file that does not parse is reported once, not once per client.
        f.write("policies.yaml", "- {id: gold, extra: 1}\n");
        assert_eq!(
            f.problems(),
            vec![
                "policies.yaml: [0].extra: unknown field `extra`, expected one of `id`, `rate_limit`, `quota`, `scopes`, `access`"
            ]
        );
    }

    #[test]
    fn policy_access_must_name_an_api() {
        let f = Fixture::new();
        f.write(
            "gateway.yaml",
            "signing: {generate: true}\npolicies: policies.yaml\n",
        );
        f.write("policies.yaml", "- {id: gold, access: [echo, films]}\n");
        assert_eq!(
            f.problems(),
            vec!["policies.yaml: [0].access[1]: no API with id `films`"]
        );
    }

    #[test]
    fn yaml_merge_keys() {
        let f = Fixture::new();
        f.write(
            "api-definitions/m.yaml",
            "base: &base {url: 'http://u', timeout: 5s}\nlisten_path: /m/\nupstream: {<<: *base}\n",
        );
        // The anchor holder itself is an unknown field: merge keys work, stray fields still do not.
        assert_eq!(
            f.problems(),
            vec![
                "api-definitions/m.yaml: base: unknown field `base`, expected one of `id`, `name`, `listen_path`, `strip_listen_path`, `allow_semicolons`, `upstream`, `auth`, `oauth`, `rate_limit`, `quota`, `global_rate_limit`, `cors`"
            ]
        );
    }

    #[test]
    fn load_runtime_rereads_and_keeps_going_on_errors() {
        let f = Fixture::new();
        let c = f.load().unwrap();
        assert_eq!(c.runtime.api_count(), 1);
        f.write(
            "api-definitions/m.yaml",
            "listen_path: /m/\nupstream: {url: 'http://u'}\n",
        );
        f.write(
            "gateway.yaml",
            "signing: {generate: true}\nlisten: 127.0.0.1:9999\nlimits: {max_body_bytes: 5}\n",
        );
        let runtime = c.load_runtime().unwrap();
        assert_eq!(runtime.api_count(), 2);
        assert_eq!(runtime.limits.max_body_bytes, 5);
        assert_eq!(
            restart_only_changes(
                &c.gateway,
                &Config::load(&f.gateway_path()).unwrap().gateway
            ),
            vec!["listen", "public_url"]
        );
        f.write(
            "api-definitions/m.yaml",
            "listen_path: /echo/\nupstream: {url: 'http://u'}\n",
        );
        let e = c.load_runtime().unwrap_err();
        assert_eq!(e.len(), 1);
        let echo = f.dir().join("api-definitions/echo.yaml");
        let expected = format!(
            "m.yaml: listen_path: `/echo/` is already the listen path of API `echo` ({})",
            echo.display()
        );
        assert!(e.to_string().ends_with(&expected), "{e}");
    }

    #[test]
    fn counts() {
        let f = Fixture::new();
        f.write("api-definitions/z.yaml", &ECHO_API.replace("/echo/", "/z/"));
        let c = f.load().unwrap();
        assert_eq!((c.api_count(), c.client_count()), (2, 0));
    }
}
