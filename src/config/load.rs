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
        let changed = restart_only_changes(&self.gateway, &new.gateway);
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
    note("api_definitions", old.api_definitions != new.api_definitions);
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
        let mut out = FileProblems { file: path, problems: &mut problems };
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
            Some(file) => read_list::<RawPolicy, Policy>(&file, env, &mut problems, accounts::policies)
                .map(|p| PolicySet::Loaded(file, p)),
            None => Some(PolicySet::Failed),
        },
        None => Some(PolicySet::NotConfigured),
    }
    .unwrap_or(PolicySet::Failed);

    let (apis, unparsed_ids) = read_apis(path, base, &locations.api_definitions, env, &mut problems);
    cross_check(&apis, &unparsed_ids, &policies, &mut problems);

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
            api_definitions: text("api_definitions").unwrap_or_else(|| "api-definitions".to_owned()),
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
fn named_file(gateway_file: &Path, key: &str, base: &Path, rel: &str, problems: &mut Problems) -> Option<PathBuf> {
    let before = problems.len();
    let mut out = FileProblems { file: gateway_file, problems };
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
fn deserialize<T: DeserializeOwned>(file: &Path, value: Value, problems: &mut Problems) -> Option<T> {
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
    path.iter().fold(String::new(), |acc, segment| match segment {
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
        .filter(|name| !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")))
        .filter(|name| dir.join(name).is_file())
        .collect();
    names.sort();
    if names.is_empty() {
        problems.push(
            gateway_file,
            "api_definitions",
            format!("no API definitions found in {} (expected *.yaml or *.yml files)", dir.display()),
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
            Some(raw) => apis.push(api::convert(raw, &file, &stem, &mut FileProblems { file: &file, problems })),
            None => unparsed_ids.push(id_in_file.unwrap_or(stem)),
        }
    }
    (apis, unparsed_ids)
}

/// Checks between files: unique API ids and listen paths, `accept_from`, client policies, and the
/// APIs a policy grants access to.
fn cross_check(apis: &[ApiDef], unparsed_ids: &[String], policies: &PolicySet, problems: &mut Problems) {
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
                problems.push(&a.file, &index("auth.accept_from", i), format!("no API with id `{id}`"));
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
                    format!("no policy with id `{policy}` (gateway.yaml names no policies file)"),
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
