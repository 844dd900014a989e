//! Tyk classic API definitions and Tyk policies → tollgate API definitions and policies.yaml.
//!
//! Pure conversion: JSON values in, YAML text and a report out; reading and writing files is the
//! caller's ([`super::import_tyk`]). The invariant this module keeps is that **no Tyk field is lost
//! without a line in the report**: every field the converter reads is marked as used, every field it
//! cannot carry over is reported with a reason where it is read, and after conversion a walk over the
//! whole input reports every remaining field whose value is not empty (`null`, `false`, `0`, `""`,
//! `[]`, `{}` — Tyk writes every field of its schema, mostly with those zero values).
//!
//! Authentication fails closed: an API whose Tyk auth modes tollgate has no equivalent for (HMAC
//! signatures, basic auth, mutual TLS, external JWTs, OpenID Connect, plugins) is imported as
//! requiring tollgate-issued tokens, never as an open API, and each of those modes is reported.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value as Yaml};

/// One input file, already parsed. `name` is how the report names it (the path as given).
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub json: Json,
}

/// A Tyk field that was not carried over, or whose meaning changed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub file: String,
    /// JSON path inside the file, like `proxy.target_list` or `[1].auth_configs.hmac`.
    pub path: String,
    pub why: String,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            // About the whole file.
            write!(f, "{}: {}", self.file, self.why)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.why)
        }
    }
}

/// One converted API definition.
#[derive(Debug, Clone)]
pub struct ImportedApi {
    /// tollgate id, also the file stem: `api-definitions/<id>.yaml`.
    pub id: String,
    pub tyk_api_id: String,
    /// The YAML file's text, a comment naming its source first.
    pub yaml: String,
}

#[derive(Debug, Clone, Default)]
pub struct Conversion {
    pub apis: Vec<ImportedApi>,
    /// The text of policies.yaml, when a policies file was given.
    pub policies_yaml: Option<String>,
    pub policy_count: usize,
    pub dropped: Vec<Dropped>,
}

/// Converts every API definition in `apis` and, when given, the Tyk policies file.
pub fn convert(apis: &[Source], policies: Option<&Source>) -> Conversion {
    let mut out = Conversion::default();
    // Tyk api_id → tollgate id, for the policies' access rights.
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut used_ids: BTreeSet<String> = BTreeSet::new();
    for source in apis {
        for (prefix, def) in definitions(&source.json) {
            let mut walk = Walk::new(&source.name, &prefix);
            if let Some(api) = convert_api(def, &mut walk, &mut used_ids) {
                ids.insert(api.tyk_api_id.clone(), api.id.clone());
                out.apis.push(api);
            }
            walk.leftovers(def);
            out.dropped.extend(walk.dropped);
        }
    }
    if let Some(source) = policies {
        let mut walk = Walk::new(&source.name, "");
        let (yaml, count) = convert_policies(&source.json, &ids, &mut walk);
        walk.leftovers(&source.json);
        out.dropped.extend(walk.dropped);
        out.policies_yaml = Some(yaml);
        out.policy_count = count;
    }
    out
}

/// The API definitions in one file, with the JSON path prefix of each: a single definition, a list of
/// them, a Dashboard export `{"apis": [{"api_definition": {...}}]}`, or one `{"api_definition": ...}`.
fn definitions(json: &Json) -> Vec<(String, &Json)> {
    fn unwrap(prefix: String, v: &Json) -> (String, &Json) {
        match v.get("api_definition") {
            Some(inner) if inner.is_object() => (format!("{prefix}api_definition."), inner),
            _ => (prefix, v),
        }
    }
    match json {
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| unwrap(format!("[{i}]."), v))
            .collect(),
        Json::Object(map) => match map.get("apis") {
            Some(Json::Array(items)) if !map.contains_key("proxy") => items
                .iter()
                .enumerate()
                .map(|(i, v)| unwrap(format!("apis[{i}]."), v))
                .collect(),
            _ => vec![unwrap(String::new(), json)],
        },
        _ => vec![(String::new(), json)],
    }
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping: which fields were used, which were reported

/// Tracks the fields of one Tyk object (a definition, or the policies file).
struct Walk {
    file: String,
    /// Prefix of every path reported (e.g. `[2].` inside a list).
    prefix: String,
    /// Paths that are accounted for, with everything under them.
    used: BTreeSet<String>,
    dropped: Vec<Dropped>,
}

impl Walk {
    fn new(file: &str, prefix: &str) -> Walk {
        Walk {
            file: file.to_owned(),
            prefix: prefix.to_owned(),
            used: BTreeSet::new(),
            dropped: Vec::new(),
        }
    }

    /// Marks `path` (and everything under it) as accounted for and returns its value.
    fn take<'a>(&mut self, root: &'a Json, path: &str) -> Option<&'a Json> {
        self.used.insert(path.to_owned());
        lookup(root, path)
    }

    /// Marks `path` as accounted for without reading it (a setting Tyk itself ignores in this
    /// definition, like the options of an auth mode that is off).
    fn ignore(&mut self, path: &str) {
        self.used.insert(path.to_owned());
    }

    fn text<'a>(&mut self, root: &'a Json, path: &str) -> Option<&'a str> {
        self.take(root, path)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
    }

    fn flag(&mut self, root: &Json, path: &str) -> bool {
        self.take(root, path).and_then(Json::as_bool) == Some(true)
    }

    fn number(&mut self, root: &Json, path: &str) -> Option<f64> {
        self.take(root, path).and_then(Json::as_f64)
    }

    /// Reports `path` as not carried over (when it has a value) and marks it as accounted for.
    fn drop(&mut self, root: &Json, path: &str, why: impl Into<String>) {
        self.used.insert(path.to_owned());
        if lookup(root, path).is_some_and(|v| !is_empty(v)) {
            self.note(path, why);
        }
    }

    /// Reports `path` whatever its value (a change of meaning, or a whole API or policy left out).
    fn note(&mut self, path: &str, why: impl Into<String>) {
        self.dropped.push(Dropped {
            file: self.file.clone(),
            path: format!("{}{path}", self.prefix)
                .trim_end_matches('.')
                .to_owned(),
            why: why.into(),
        });
    }

    fn is_used(&self, path: &str) -> bool {
        // A path is accounted for when it or one of its ancestors is.
        let mut candidate = path;
        loop {
            if self.used.contains(candidate) {
                return true;
            }
            match candidate.rfind(['.', '[']) {
                Some(i) => candidate = &candidate[..i],
                None => return false,
            }
        }
    }

    /// Reports every field not accounted for whose value is not empty. A non-empty list is reported
    /// as one line, not one per element.
    fn leftovers(&mut self, root: &Json) {
        let mut found = Vec::new();
        self.collect(root, "", &mut found);
        for path in found {
            let why = generic_reason(&path);
            self.note(&path, why);
        }
    }

    fn collect(&self, value: &Json, path: &str, found: &mut Vec<String>) {
        if !path.is_empty() && self.is_used(path) {
            return;
        }
        match value {
            Json::Object(map) => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.collect(child, &child_path, found);
                }
            }
            // A file that is a list (of policies): its entries are accounted for one by one.
            Json::Array(items) if path.is_empty() => {
                for (i, child) in items.iter().enumerate() {
                    self.collect(child, &format!("[{i}]"), found);
                }
            }
            other if !is_empty(other) => found.push(path.to_owned()),
            _ => {}
        }
    }
}

/// Tyk's zero values: a field holding one of these configures nothing.
fn is_empty(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Bool(b) => !b,
        Json::Number(n) => n.as_f64() == Some(0.0),
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.values().all(is_empty),
    }
}

/// `a.b.c` inside `root` (object keys only; keys containing dots are looked up whole first).
fn lookup<'a>(root: &'a Json, path: &str) -> Option<&'a Json> {
    if let Some(v) = root.get(path) {
        return Some(v);
    }
    let mut current = root;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    Some(current)
}

/// Why a field nobody read is not carried over: specific where Tyk's meaning is well known.
fn generic_reason(path: &str) -> String {
    const REASONS: &[(&str, &str)] = &[
        (
            "version_data",
            "per-version settings and middleware (extended_paths: allow/block lists, transforms, mocks, caching per path, ...) have no tollgate equivalent; tollgate APIs are not versioned",
        ),
        ("definition", "API versioning has no tollgate equivalent"),
        (
            "custom_middleware",
            "plugins (custom middleware) have no tollgate equivalent",
        ),
        (
            "custom_middleware_bundle",
            "plugin bundles have no tollgate equivalent",
        ),
        (
            "cache_options",
            "response caching has no tollgate equivalent",
        ),
        (
            "uptime_tests",
            "uptime tests have no tollgate equivalent (active health checks come with upstream.targets, docs/design.md §9b)",
        ),
        (
            "enable_ip_whitelisting",
            "IP allow lists have no tollgate equivalent",
        ),
        ("allowed_ips", "IP allow lists have no tollgate equivalent"),
        (
            "enable_ip_blacklisting",
            "IP block lists have no tollgate equivalent",
        ),
        (
            "blacklisted_ips",
            "IP block lists have no tollgate equivalent",
        ),
        (
            "domain",
            "routing by host name has no tollgate equivalent; the API is served on every host",
        ),
        (
            "internal",
            "internal (looped-only) APIs have no tollgate equivalent; the API is served publicly",
        ),
        ("tags", "gateway sharding tags have no tollgate equivalent"),
        (
            "event_handlers",
            "event handlers (webhooks on events) have no tollgate equivalent",
        ),
        (
            "response_processors",
            "response processors have no tollgate equivalent",
        ),
        (
            "basic_auth",
            "basic authentication settings: basic authentication has no tollgate equivalent",
        ),
        (
            "openid_options",
            "OpenID Connect provider settings: tokens of other providers are not accepted",
        ),
        (
            "config_data",
            "plugin config data has no tollgate equivalent",
        ),
        (
            "proxy.transport",
            "upstream TLS/transport options have no tollgate equivalent",
        ),
        (
            "proxy.service_discovery",
            "service discovery has no tollgate equivalent",
        ),
        (
            "certificates",
            "per-API server certificates have no tollgate equivalent (tls in gateway.yaml)",
        ),
        (
            "upstream_certificates",
            "upstream client certificates have no tollgate equivalent",
        ),
        (
            "pinned_public_keys",
            "certificate pinning has no tollgate equivalent",
        ),
        (
            "enable_context_vars",
            "context variables have no tollgate equivalent",
        ),
        (
            "session_lifetime",
            "key lifetimes belong to Tyk keys; tollgate token lifetimes are oauth.access_token.ttl and oauth.refresh_token.ttl",
        ),
        (
            "do_not_track",
            "tollgate keeps no per-request analytics to switch off",
        ),
        (
            "expire_analytics_after",
            "tollgate keeps no per-request analytics",
        ),
        (
            "enable_batch_request_support",
            "batch requests have no tollgate equivalent",
        ),
        (
            "strip_auth_data",
            "tollgate strips the credential by default (auth.strip_credentials: true); Tyk keys are not tollgate tokens, so an upstream that read them needs changing anyway",
        ),
        ("org_id", "Tyk organisation; tollgate has no organisations"),
        ("id", "Tyk Dashboard database id; not needed"),
        ("_id", "Tyk Dashboard database id; not needed"),
        (
            "slug",
            "Tyk Dashboard slug; tollgate names the API by its id and name",
        ),
        ("last_updated", "Tyk metadata"),
        (
            "listen_port",
            "per-API listen ports have no tollgate equivalent (one `listen` in gateway.yaml)",
        ),
        ("protocol", "per-API protocols have no tollgate equivalent"),
        ("jwt_", "external JWT validation has no tollgate equivalent"),
        (
            "hmac_",
            "HMAC request signatures have no tollgate equivalent",
        ),
        ("graphql", "GraphQL has no tollgate equivalent"),
    ];
    let last = path.rsplit('.').next().unwrap_or(path);
    let first = path.split('.').next().unwrap_or(path);
    for (key, why) in REASONS {
        if path == *key
            || path.starts_with(&format!("{key}."))
            || first == *key
            || (key.ends_with('_') && (first.starts_with(key) || last.starts_with(key)))
        {
            return (*why).to_owned();
        }
    }
    "no tollgate equivalent".to_owned()
}

// ---------------------------------------------------------------------------------------------
// API definitions

/// Tyk auth modes that tollgate cannot carry over, with the flag that enables each.
const UNSUPPORTED_AUTH: &[(&str, &str)] = &[
    ("use_basic_auth", "basic authentication"),
    ("enable_signature_checking", "HMAC request signatures"),
    ("use_mutual_tls_auth", "mutual TLS (client certificates)"),
    ("enable_jwt", "JWTs issued by another identity provider"),
    ("use_openid", "OpenID Connect tokens of another provider"),
    ("custom_plugin_auth_enabled", "custom plugin authentication"),
    ("use_go_plugin_auth", "Go plugin authentication"),
    (
        "enable_coprocess_auth",
        "coprocess (Python/gRPC/JS) plugin authentication",
    ),
];

/// Top-level settings that belong to one auth mode.
const MODE_SETTINGS: &[(&str, &[&str])] = &[
    (
        "enable_signature_checking",
        &["hmac_allowed_clock_skew", "hmac_allowed_algorithms"],
    ),
    ("use_basic_auth", &["basic_auth"]),
    ("use_openid", &["openid_options"]),
    (
        "enable_jwt",
        &[
            "jwt_signing_method",
            "jwt_source",
            "jwt_identity_base_field",
            "jwt_client_base_field",
            "jwt_policy_field_name",
            "jwt_default_policies",
            "jwt_issued_at_validation_skew",
            "jwt_expires_at_validation_skew",
            "jwt_not_before_validation_skew",
            "jwt_skip_kid",
            "jwt_scope_to_policy_mapping",
            "jwt_scope_claim_name",
        ],
    ),
];

/// `auth_configs` keys and the mode each belongs to.
const AUTH_CONFIG_KEYS: &[&str] = &[
    "authToken",
    "oauth",
    "jwt",
    "basic",
    "hmac",
    "coprocess",
    "oidc",
];

fn convert_api(
    def: &Json,
    walk: &mut Walk,
    used_ids: &mut BTreeSet<String>,
) -> Option<ImportedApi> {
    if !def.is_object() {
        walk.note("", "not a JSON object: not an API definition, skipped");
        return None;
    }
    if def.get("x-tyk-api-gateway").is_some() || def.get("openapi").is_some() {
        walk.note(
            "x-tyk-api-gateway",
            "a Tyk OAS API definition: not imported; export the API's classic definition from Tyk instead",
        );
        mark_all(def, walk);
        return None;
    }
    let looks_like_policies = def.get("proxy").is_none()
        && def
            .as_object()
            .is_some_and(|m| m.values().any(|v| v.get("access_rights").is_some()));
    if looks_like_policies {
        walk.note(
            "",
            "a Tyk policies file, not an API definition: pass it with --policies",
        );
        mark_all(def, walk);
        return None;
    }
    let name = walk.text(def, "name").map(str::to_owned);
    let tyk_api_id = walk.text(def, "api_id").unwrap_or_default().to_owned();
    let label = match (&name, tyk_api_id.is_empty()) {
        (Some(name), _) => name.clone(),
        (None, false) => tyk_api_id.clone(),
        (None, true) => "(no name, no api_id)".to_owned(),
    };

    // Tyk's zero value for `active` is false, but a definition without the field at all is a
    // hand-written file meant to run: only an explicit `false` leaves the API out.
    if walk.take(def, "active").and_then(Json::as_bool) == Some(false) {
        walk.note(
            "active",
            format!("API `{label}` is inactive in Tyk: not imported (tollgate serves every API definition file it finds)"),
        );
        mark_all(def, walk);
        return None;
    }

    let Some(raw_listen) = walk.text(def, "proxy.listen_path") else {
        walk.note(
            "proxy.listen_path",
            format!("API `{label}` has no listen path: not imported"),
        );
        mark_all(def, walk);
        return None;
    };
    let Some(listen_path) = listen_path(raw_listen) else {
        walk.note(
            "proxy.listen_path",
            format!("`{raw_listen}`: path variables and regular expressions have no tollgate equivalent: API `{label}` not imported"),
        );
        mark_all(def, walk);
        return None;
    };
    if listen_path != raw_listen {
        walk.note(
            "proxy.listen_path",
            format!("`{raw_listen}` became `{listen_path}`: tollgate listen paths start and end with `/` and match on segment boundaries"),
        );
    }

    let id = unique_id(&slug(name.as_deref().unwrap_or(&tyk_api_id)), used_ids);

    let mut yaml = Mapping::new();
    put(&mut yaml, "id", s(&id));
    put(&mut yaml, "name", s(name.as_deref().unwrap_or(&id)));
    put(&mut yaml, "listen_path", s(&listen_path));
    // Tyk's default is false (a missing field is false in Go); tollgate's is true: always written.
    put(
        &mut yaml,
        "strip_listen_path",
        Yaml::Bool(walk.flag(def, "proxy.strip_listen_path")),
    );

    let upstream = upstream(def, walk, &label)?;
    put(&mut yaml, "upstream", Yaml::Mapping(upstream));

    let (auth, oauth) = auth(def, walk);
    put(&mut yaml, "auth", Yaml::Mapping(auth));
    if let Some(oauth) = oauth {
        put(&mut yaml, "oauth", Yaml::Mapping(oauth));
    }

    if let Some(limit) = rate(
        walk.number(def, "global_rate_limit.rate"),
        walk.number(def, "global_rate_limit.per"),
        walk,
        "global_rate_limit",
    ) {
        put(&mut yaml, "global_rate_limit", limit);
    }
    if walk.flag(def, "disable_rate_limit") {
        walk.note(
            "disable_rate_limit",
            "no switch to exempt an API from rate limits: the API has no rate_limit of its own, but a client whose policy sets a rate_limit is limited here too",
        );
    }
    if walk.flag(def, "disable_quota") {
        walk.note(
            "disable_quota",
            "no switch to exempt an API from quotas: the API has no quota of its own, but a client whose policy sets a quota is counted here too",
        );
    }

    if walk.flag(def, "CORS.enable") {
        walk.drop(
            def,
            "CORS",
            "CORS is not carried over yet: tollgate's `cors` block (docs/design.md §9b) is not in this build; add it by hand after upgrading",
        );
    } else {
        // Tyk keeps the settings of a switched-off CORS block; they configure nothing.
        walk.ignore("CORS");
    }

    // Not versioned (or one version only): the version bookkeeping carries no behaviour.
    let not_versioned = walk.flag(def, "version_data.not_versioned");
    let versions = def
        .get("version_data")
        .and_then(|v| v.get("versions"))
        .and_then(Json::as_object);
    if not_versioned || versions.is_some_and(|v| v.len() <= 1) {
        walk.ignore("definition");
        if let Some(versions) = versions {
            for key in versions.keys() {
                for field in ["name", "use_extended_paths"] {
                    walk.ignore(&format!("version_data.versions.{key}.{field}"));
                }
                walk.drop(
                    def,
                    &format!("version_data.versions.{key}.expires"),
                    "an expiry date of the API has no tollgate equivalent: the API is served until its file is removed",
                );
            }
        }
    } else if let Some(versions) = versions {
        walk.note(
            "version_data.versions",
            format!(
                "{} versions: tollgate APIs are not versioned; every request is served as one API",
                versions.len()
            ),
        );
        walk.ignore("version_data");
        walk.ignore("definition");
    }

    let header = format!(
        "# Imported from Tyk by `tollgate import tyk`: {} (api_id {}).\n# Fields not carried over are listed in import-report.txt.\n",
        one_line(&walk.file),
        if tyk_api_id.is_empty() {
            "none".to_owned()
        } else {
            one_line(&tyk_api_id)
        }
    );
    let body = serde_yaml::to_string(&Yaml::Mapping(yaml)).unwrap_or_default();
    Some(ImportedApi {
        id,
        tyk_api_id,
        yaml: header + &body,
    })
}

/// Marks everything in `def` as accounted for (a definition left out whole was reported as such).
fn mark_all(def: &Json, walk: &mut Walk) {
    if let Some(map) = def.as_object() {
        for key in map.keys() {
            walk.ignore(key);
        }
    }
}

fn upstream(def: &Json, walk: &mut Walk, label: &str) -> Option<Mapping> {
    let mut up = Mapping::new();
    let balanced = walk.flag(def, "proxy.enable_load_balancing");
    let targets: Vec<String> = walk
        .take(def, "proxy.target_list")
        .and_then(Json::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Json::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let target_url = walk.text(def, "proxy.target_url").map(str::to_owned);
    let url = if balanced && !targets.is_empty() {
        walk.note(
            "proxy.target_list",
            format!(
                "load balancing over {} targets is not carried over yet: tollgate's upstream.targets (docs/design.md §9b) is not in this build; the first target `{}` is used as upstream.url",
                targets.len(),
                targets[0]
            ),
        );
        if target_url.is_some() {
            walk.note(
                "proxy.target_url",
                "not used by Tyk while load balancing is on; not carried over",
            );
        }
        Some(targets[0].clone())
    } else {
        target_url
    };
    let Some(url) = url else {
        walk.note(
            "proxy.target_url",
            format!("API `{label}` has no upstream URL: not imported"),
        );
        mark_all(def, walk);
        return None;
    };
    if !is_http_url(&url) {
        walk.note(
            "proxy.target_url",
            format!("`{url}` is not an http(s) URL with a host and without a query or fragment: API `{label}` not imported"),
        );
        mark_all(def, walk);
        return None;
    }
    put(&mut up, "url", s(&url));
    if walk.flag(def, "proxy.preserve_host_header") {
        put(&mut up, "preserve_host", Yaml::Bool(true));
    }
    // Tyk's service discovery settings configure nothing while it is off.
    if !walk.flag(def, "proxy.service_discovery.use_discovery_service") {
        walk.ignore("proxy.service_discovery");
    }
    Some(up)
}

fn is_http_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.query().is_none()
        && !url.contains('#')
        && !url.contains('@')
}

/// The `auth` block and, for Tyk's OAuth 2.0 APIs, the `oauth` block.
fn auth(def: &Json, walk: &mut Walk) -> (Mapping, Option<Mapping>) {
    let keyless = walk.flag(def, "use_keyless");
    let oauth2 = walk.flag(def, "use_oauth2");
    let standard = walk.flag(def, "use_standard_auth");
    let unsupported: Vec<(&str, &str)> = UNSUPPORTED_AUTH
        .iter()
        .copied()
        .filter(|(flag, _)| walk.flag(def, flag))
        .collect();

    let mut auth = Mapping::new();
    if keyless {
        put(&mut auth, "type", s("none"));
        // Tyk ignores every other auth setting of a keyless API, so nothing is lost; still said,
        // because an operator reading the Tyk file may think it is protected.
        for (flag, mode) in &unsupported {
            walk.note(
                flag,
                format!(
                    "{mode} is ignored by Tyk on a keyless API; imported as open (auth.type: none)"
                ),
            );
        }
        if oauth2 || standard {
            walk.note(
                if oauth2 {
                    "use_oauth2"
                } else {
                    "use_standard_auth"
                },
                "ignored by Tyk on a keyless API; imported as open (auth.type: none)",
            );
        }
        ignore_auth_settings(walk);
        return (auth, None);
    }

    put(&mut auth, "type", s("oauth2"));
    for (flag, mode) in &unsupported {
        let extra = if oauth2 || standard {
            " (Tyk required it in addition to the token: the imported API is protected by the token alone)"
        } else {
            " (the imported API requires tollgate-issued tokens instead: it stays closed, issue tokens through an API with an oauth block and a policy granting access here)"
        };
        walk.note(flag, format!("{mode}: no tollgate equivalent{extra}"));
    }
    // The settings of modes that are off configure nothing (Tyk writes them all, some with non-zero
    // defaults such as `hmac_allowed_clock_skew: -1`).
    for (flag, fields) in MODE_SETTINGS {
        if !unsupported.iter().any(|(f, _)| f == flag) {
            for field in *fields {
                walk.ignore(field);
            }
        }
    }
    const KEYS: &str = "Tyk keys cannot be carried over: this API accepts tollgate-issued access tokens in the same place; get them from an API with an oauth block whose client's policy grants access to this API (policies.yaml `access`)";
    if standard {
        walk.note("use_standard_auth", KEYS);
    } else if !oauth2 && unsupported.is_empty() {
        // Tyk's default when no mode is switched on is the auth token; said, since it is implicit.
        walk.note(
            "use_standard_auth",
            format!("not set, and no other auth mode: Tyk uses auth tokens (keys). {KEYS}"),
        );
    }

    // Where the token is read: the settings of the mode in use (auth_configs.<mode>), else the
    // legacy top-level `auth` block that Tyk still reads for it.
    let mode_key = if oauth2 { "oauth" } else { "authToken" };
    let config_path = if def
        .get("auth_configs")
        .and_then(|c| c.get(mode_key))
        .is_some_and(Json::is_object)
    {
        format!("auth_configs.{mode_key}")
    } else {
        "auth".to_owned()
    };
    location(def, walk, &config_path, &mut auth);
    // The settings of every other mode configure nothing here, except those of the unsupported
    // modes that are on, already reported above.
    for key in AUTH_CONFIG_KEYS {
        let path = format!("auth_configs.{key}");
        if path != config_path {
            walk.ignore(&path);
        }
    }
    if config_path != "auth" {
        walk.ignore("auth");
    }

    let oauth = oauth2.then(|| oauth_block(def, walk));
    if !oauth2 {
        walk.ignore("oauth_meta");
        walk.ignore("notifications");
    }
    (auth, oauth)
}

/// Marks every auth setting as accounted for (a keyless API).
fn ignore_auth_settings(walk: &mut Walk) {
    for path in [
        "auth",
        "auth_configs",
        "oauth_meta",
        "notifications",
        "base_identity_provided_by",
    ] {
        walk.ignore(path);
    }
    // Every auth mode's own top-level settings, and one that belongs to all of them.
    for (_, settings) in MODE_SETTINGS {
        for path in *settings {
            walk.ignore(path);
        }
    }
    walk.ignore("strip_auth_data");
}

/// Header, query parameter and cookie of the token, from a Tyk auth config object at `path`.
fn location(def: &Json, walk: &mut Walk, path: &str, auth: &mut Mapping) {
    let field = |f: &str| format!("{path}.{f}");
    let header_name = walk
        .text(def, &field("auth_header_name"))
        .unwrap_or("Authorization")
        .to_owned();
    let header_name = if header_name.eq_ignore_ascii_case("authorization") {
        "Authorization".to_owned()
    } else {
        header_name
    };
    if walk.flag(def, &field("disable_header")) {
        put(auth, "header", Yaml::Null);
    } else {
        let mut header = Mapping::new();
        put(&mut header, "name", s(&header_name));
        // Tyk reads `Authorization: Bearer <key>` and a bare key alike; tollgate reads the scheme it
        // is told. A custom header carries the bare token, as in Tyk.
        let prefix = if header_name == "Authorization" {
            "Bearer "
        } else {
            ""
        };
        put(&mut header, "prefix", s(prefix));
        put(auth, "header", Yaml::Mapping(header));
    }
    if walk.flag(def, &field("use_param")) {
        // Tyk names the parameter like the header when param_name is empty.
        let name = walk
            .text(def, &field("param_name"))
            .unwrap_or(&header_name)
            .to_owned();
        put(auth, "query", s(&name));
    } else {
        walk.ignore(&field("param_name"));
    }
    if walk.flag(def, &field("use_cookie")) {
        let name = walk
            .text(def, &field("cookie_name"))
            .unwrap_or(&header_name)
            .to_owned();
        put(auth, "cookie", s(&name));
    } else {
        walk.ignore(&field("cookie_name"));
    }
    walk.drop(
        def,
        &field("use_certificate"),
        "client certificates as keys have no tollgate equivalent",
    );
    if walk.flag(def, &field("validate_signature")) {
        walk.drop(
            def,
            &field("signature"),
            "request signature validation has no tollgate equivalent",
        );
        walk.note(
            &field("validate_signature"),
            "request signature validation has no tollgate equivalent (the token alone protects the API)",
        );
    } else {
        walk.ignore(&field("signature"));
    }
    walk.ignore(&field("name"));
}

fn oauth_block(def: &Json, walk: &mut Walk) -> Mapping {
    let mut oauth = Mapping::new();
    let mut grants: Vec<&str> = Vec::new();
    let access_types = walk
        .take(def, "oauth_meta.allowed_access_types")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, t) in access_types.iter().enumerate() {
        let grant = match t.as_str() {
            Some("authorization_code") => "authorization_code",
            Some("refresh_token") => "refresh_token",
            Some("client_credentials") => "client_credentials",
            Some("password") => "password",
            _ => {
                walk.note(
                    &format!("oauth_meta.allowed_access_types[{i}]"),
                    format!("grant type {t} has no tollgate equivalent"),
                );
                continue;
            }
        };
        if !grants.contains(&grant) {
            grants.push(grant);
        }
    }
    let authorize_types = walk
        .take(def, "oauth_meta.allowed_authorize_types")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, t) in authorize_types.iter().enumerate() {
        if t.as_str() != Some("code") {
            walk.note(
                &format!("oauth_meta.allowed_authorize_types[{i}]"),
                format!("response type {t} is not supported (the implicit flow is deprecated by RFC 9700); use the authorization code flow with PKCE"),
            );
        }
    }
    if grants.is_empty() {
        walk.note(
            "oauth_meta.allowed_access_types",
            "no grant type tollgate knows: authorization_code used, since tollgate needs at least one",
        );
        grants.push("authorization_code");
    }
    put(
        &mut oauth,
        "grant_types",
        Yaml::Sequence(grants.iter().map(|g| s(g)).collect()),
    );
    if let Some(redirect) = walk.text(def, "oauth_meta.auth_login_redirect") {
        if is_http_url_with_query(redirect) {
            let mut login = Mapping::new();
            put(&mut login, "redirect", s(redirect));
            put(&mut oauth, "login", Yaml::Mapping(login));
        } else {
            walk.note(
                "oauth_meta.auth_login_redirect",
                format!(
                    "`{redirect}` is not an absolute http(s) URL: the builtin login page is used"
                ),
            );
        }
    }
    if let Some(url) = walk.text(def, "notifications.oauth_on_keychange_url") {
        let secret = walk.text(def, "notifications.shared_secret");
        let https_or_loopback = url.starts_with("https://")
            || ["http://127.", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| url.starts_with(p));
        match secret {
            Some(secret) if https_or_loopback => {
                let mut n = Mapping::new();
                put(&mut n, "url", s(url));
                put(&mut n, "shared_secret", s(secret));
                put(&mut oauth, "notifications", Yaml::Mapping(n));
            }
            Some(_) => walk.note(
                "notifications.oauth_on_keychange_url",
                format!("`{url}`: tollgate sends token notifications only over https (or http to loopback): not carried over"),
            ),
            None => walk.note(
                "notifications.oauth_on_keychange_url",
                "no shared_secret: tollgate signs every notification, so it needs one: not carried over",
            ),
        }
    } else {
        walk.ignore("notifications");
    }
    oauth
}

fn is_http_url_with_query(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    }) && !url.contains('#')
}

/// Tyk `rate` per `per` seconds (both JSON numbers, possibly fractional) → `{rate, per}`.
fn rate(rate: Option<f64>, per: Option<f64>, walk: &mut Walk, path: &str) -> Option<Yaml> {
    let (rate, per) = (rate.unwrap_or(0.0), per.unwrap_or(0.0));
    if rate <= 0.0 || per <= 0.0 || !rate.is_finite() || !per.is_finite() {
        if rate > 0.0 || per > 0.0 {
            walk.note(
                path,
                format!(
                    "rate {rate} per {per}s sets no limit in Tyk either (both must be above 0)"
                ),
            );
        }
        return None;
    }
    // Whole requests per whole milliseconds: scale a fractional rate (0.5 per 1s = 1 per 2s).
    let mut scale = 1.0;
    while (rate * scale).fract() != 0.0 && scale < 1000.0 {
        scale *= 10.0;
    }
    let scaled_rate = (rate * scale).round();
    let millis = (per * scale * 1000.0).round();
    if scaled_rate > f64::from(u32::MAX) || !(1.0..=1e15).contains(&millis) {
        walk.note(
            path,
            format!("rate {rate} per {per}s is out of range: not carried over"),
        );
        return None;
    }
    if (scaled_rate / scale - rate).abs() > f64::EPSILON * rate.max(1.0) {
        walk.note(
            path,
            format!("rate {rate} rounded to {}", scaled_rate / scale),
        );
    }
    let mut m = Mapping::new();
    put(&mut m, "rate", Yaml::Number((scaled_rate as u64).into()));
    put(&mut m, "per", s(&duration_text(millis as u64)));
    Some(Yaml::Mapping(m))
}

/// Milliseconds as the largest whole unit: `60000` → `1m`, `1500` → `1500ms`.
fn duration_text(millis: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in UNITS {
        if millis.is_multiple_of(*size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// A Tyk listen path as a tollgate one: leading and trailing `/`; `None` when it uses Tyk's path
/// variables or regular expressions, which tollgate cannot express.
fn listen_path(raw: &str) -> Option<String> {
    if raw.contains(['{', '}', '(', ')', '*', '?', '#', '\\', '$', '^']) {
        return None;
    }
    let mut path = String::with_capacity(raw.len() + 2);
    if !raw.starts_with('/') {
        path.push('/');
    }
    path.push_str(raw);
    if !path.ends_with('/') {
        path.push('/');
    }
    Some(path)
}

/// A tollgate id (A-Z a-z 0-9 `_` `-`, at most 64) from a Tyk name or id.
fn slug(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out = out.trim_end_matches('-').to_owned();
    out.truncate(56);
    if out.is_empty() {
        "api".to_owned()
    } else {
        out
    }
}

fn unique_id(base: &str, used: &mut BTreeSet<String>) -> String {
    let mut id = base.to_owned();
    let mut n = 2;
    while used.contains(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    used.insert(id.clone());
    id
}

// ---------------------------------------------------------------------------------------------
// Policies

/// Tyk's policies.json (an object keyed by policy id) or a Dashboard list (each with `id` or `_id`).
fn convert_policies(
    json: &Json,
    ids: &BTreeMap<String, String>,
    walk: &mut Walk,
) -> (String, usize) {
    let entries: Vec<(String, String, &Json)> = match json {
        Json::Object(map) => map
            .iter()
            .map(|(key, p)| (key.clone(), key.clone(), p))
            .collect(),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let id = ["id", "_id"]
                    .iter()
                    .find_map(|k| p.get(*k).and_then(Json::as_str).filter(|s| !s.is_empty()))
                    .unwrap_or_default()
                    .to_owned();
                (format!("[{i}]"), id, p)
            })
            .collect(),
        _ => {
            walk.note(
                "",
                "neither an object of policies nor a list: no policies imported",
            );
            walk.ignore("");
            return ("[]\n".to_owned(), 0);
        }
    };
    let mut text = String::from(
        "# Imported from Tyk by `tollgate import tyk`. Fields not carried over are listed in import-report.txt.\n",
    );
    let mut count = 0;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (path, id, policy) in entries {
        // Paths inside one policy: `<key>.<field>`; keys may hold dots, so every path is built here.
        let mut sub = Walk::new(&walk.file, &format!("{}{path}.", walk.prefix));
        walk.ignore(&path);
        if json.is_array() {
            sub.ignore("id");
            sub.ignore("_id");
        }
        let name = sub.text(policy, "name").map(str::to_owned);
        let inactive = sub.take(policy, "active").and_then(Json::as_bool) == Some(false)
            || sub.flag(policy, "is_inactive");
        if inactive {
            sub.note(
                "",
                format!("policy `{id}` is inactive in Tyk: not imported"),
            );
            mark_all(policy, &mut sub);
            walk.dropped.append(&mut sub.dropped);
            continue;
        }
        if id.is_empty() {
            sub.note("", "policy without an id: not imported");
            mark_all(policy, &mut sub);
            walk.dropped.append(&mut sub.dropped);
            continue;
        }
        // tollgate policy ids follow the client id rule (visible ASCII) so that the admin API can name
        // them in a path; Tyk's ids (hex or names) pass it as they are, so clients keep their policy.
        let tollgate_id = if id.len() <= 128 && id.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
            id.clone()
        } else {
            let new = slug(&id);
            sub.note(
                "",
                format!("policy id `{id}` became `{new}` (ids are visible ASCII without spaces)"),
            );
            new
        };
        if !seen.insert(tollgate_id.clone()) {
            sub.note(
                "",
                format!("a second policy with id `{tollgate_id}`: not imported"),
            );
            mark_all(policy, &mut sub);
            walk.dropped.append(&mut sub.dropped);
            continue;
        }

        let mut entry = Mapping::new();
        put(&mut entry, "id", s(&tollgate_id));
        let per = sub.number(policy, "per");
        if let Some(limit) = rate(sub.number(policy, "rate"), per, &mut sub, "rate") {
            put(&mut entry, "rate_limit", limit);
        }
        let quota_max = sub.number(policy, "quota_max").unwrap_or(-1.0);
        let renewal = sub.number(policy, "quota_renewal_rate").unwrap_or(0.0);
        if quota_max > 0.0 && renewal > 0.0 && quota_max.fract() == 0.0 {
            let mut q = Mapping::new();
            put(&mut q, "max", Yaml::Number((quota_max as u64).into()));
            put(
                &mut q,
                "period",
                s(&duration_text((renewal * 1000.0).round() as u64)),
            );
            put(&mut entry, "quota", Yaml::Mapping(q));
        } else if quota_max == 0.0 {
            sub.note(
                "quota_max",
                "0 (no requests at all) has no tollgate equivalent (quota.max must be above 0): no quota imported; remove the policy's access instead",
            );
        } else if quota_max > 0.0 {
            sub.note(
                "quota_renewal_rate",
                format!(
                    "quota_max {quota_max} without a renewal period above 0: no quota imported"
                ),
            );
        }
        // quota_max -1 is Tyk's "unlimited": no quota, nothing to say.

        let mut access: Vec<Yaml> = Vec::new();
        if let Some(rights) = sub.take(policy, "access_rights").and_then(Json::as_object) {
            for (api_key, right) in rights {
                let tyk_id = right
                    .get("api_id")
                    .and_then(Json::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(api_key);
                match ids.get(tyk_id) {
                    Some(tollgate) => access.push(s(tollgate)),
                    None => sub.note(
                        &format!("access_rights.{api_key}"),
                        format!("no imported API has api_id `{tyk_id}` (import its definition in the same run): access not carried over"),
                    ),
                }
                let mut nested = Walk::new(
                    &sub.file,
                    &format!("{}access_rights.{api_key}.", sub.prefix),
                );
                for f in ["api_id", "api_name"] {
                    nested.ignore(f);
                }
                let versions: Vec<&str> = nested
                    .take(right, "versions")
                    .and_then(Json::as_array)
                    .map(|v| v.iter().filter_map(Json::as_str).collect())
                    .unwrap_or_default();
                if versions.len() > 1 || versions.iter().any(|v| *v != "Default") {
                    nested.note(
                        "versions",
                        format!("access to versions {versions:?}: tollgate APIs are not versioned, the whole API is granted"),
                    );
                }
                nested.drop(
                    right,
                    "allowed_urls",
                    "path and method restrictions have no tollgate equivalent: the whole API is granted",
                );
                nested.drop(
                    right,
                    "limit",
                    "per-API limits inside a policy have no tollgate equivalent: the policy's own rate_limit and quota apply to every API it grants",
                );
                nested.leftovers(right);
                sub.dropped.append(&mut nested.dropped);
            }
        }
        // `access` is written even when empty, so the file says what the policy grants.
        put(&mut entry, "access", Yaml::Sequence(access));
        // tollgate policies have no name; it is kept in the comment above the entry.
        sub.ignore("name");

        sub.leftovers(policy);
        walk.dropped.append(&mut sub.dropped);

        let comment = match &name {
            Some(name) => format!("\n# Tyk policy `{}`: {}\n", one_line(&id), one_line(name)),
            None => format!("\n# Tyk policy `{}`\n", one_line(&id)),
        };
        text.push_str(&comment);
        text.push_str(
            &serde_yaml::to_string(&Yaml::Sequence(vec![Yaml::Mapping(entry)])).unwrap_or_default(),
        );
        count += 1;
    }
    if count == 0 {
        text.push_str("[]\n");
    }
    (text, count)
}

// ---------------------------------------------------------------------------------------------
// YAML helpers

/// Text from the input for a YAML comment: a line break would end the comment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn put(map: &mut Mapping, key: &str, value: Yaml) {
    map.insert(Yaml::String(key.to_owned()), value);
}

/// A YAML string. `${` is written as `$${`: tollgate replaces `${VAR}` in every string of its
/// files, and a value from Tyk must arrive as it was, not be read as a placeholder.
fn s(text: &str) -> Yaml {
    Yaml::String(text.replace("${", "$${"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(def: Json) -> Conversion {
        convert(
            &[Source {
                name: "tyk.json".into(),
                json: def,
            }],
            None,
        )
    }

    fn paths(c: &Conversion) -> Vec<&str> {
        c.dropped.iter().map(|d| d.path.as_str()).collect()
    }

    #[test]
    fn zero_values_are_not_reported() {
        let c = one(json!({
            "name": "A", "api_id": "a", "active": true, "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://u:1", "strip_listen_path": true,
                      "target_list": [], "enable_load_balancing": false, "preserve_host_header": false},
            "session_lifetime": 0, "tags": [], "domain": "", "CORS": {"enable": false, "allowed_origins": ["*"]},
            "custom_middleware": {"pre": [], "post": [], "driver": ""},
            "global_rate_limit": {"rate": 0, "per": 0}
        }));
        assert_eq!(c.apis.len(), 1);
        assert!(c.dropped.is_empty(), "{:?}", c.dropped);
    }

    /// Tyk writes every auth mode's settings into each definition; on a keyless API they configure
    /// nothing, so they are not reported.
    #[test]
    fn a_keyless_apis_auth_settings_are_not_reported() {
        let c = one(json!({
            "name": "A", "api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://u:1"},
            "auth": {"auth_header_name": "Authorization"},
            "auth_configs": {"authToken": {"auth_header_name": "Authorization"}},
            "jwt_signing_method": "rsa", "jwt_source": "abc", "jwt_skip_kid": true,
            "jwt_scope_to_policy_mapping": {"read": "p"},
            "hmac_allowed_clock_skew": -1, "hmac_allowed_algorithms": ["hmac-sha256"],
            "basic_auth": {"disable_caching": true}, "openid_options": {"providers": [{"issuer": "x"}]},
            "strip_auth_data": true
        }));
        assert_eq!(c.apis.len(), 1);
        assert!(c.dropped.is_empty(), "{:?}", c.dropped);
    }

    #[test]
    fn unknown_fields_with_values_are_reported_with_their_path() {
        let c = one(json!({
            "name": "A", "api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://u:1",
                      "transport": {"ssl_insecure_skip_verify": true}},
            "some_future_field": {"deep": [1]}, "tags": ["edge"]
        }));
        assert_eq!(
            paths(&c),
            [
                "proxy.transport.ssl_insecure_skip_verify",
                "some_future_field.deep",
                "tags"
            ]
        );
        assert_eq!(c.dropped[1].why, "no tollgate equivalent");
        assert!(c.dropped[2].why.contains("sharding tags"));
    }

    #[test]
    fn rates_keep_their_meaning() {
        let mut w = Walk::new("f", "");
        let yaml = |v: Option<Yaml>| serde_yaml::to_string(&v.unwrap()).unwrap();
        assert_eq!(
            yaml(rate(Some(100.0), Some(60.0), &mut w, "r")),
            "rate: 100\nper: 1m\n"
        );
        assert_eq!(
            yaml(rate(Some(0.5), Some(1.0), &mut w, "r")),
            "rate: 5\nper: 10s\n"
        );
        assert_eq!(
            yaml(rate(Some(3.0), Some(0.25), &mut w, "r")),
            "rate: 3\nper: 250ms\n"
        );
        assert!(rate(Some(-1.0), Some(0.0), &mut w, "r").is_none());
        assert!(w.dropped.is_empty());
        assert_eq!(duration_text(86_400_000 * 30), "30d");
        assert_eq!(duration_text(3_600_000), "1h");
    }

    #[test]
    fn listen_paths_and_ids() {
        assert_eq!(listen_path("movies").as_deref(), Some("/movies/"));
        assert_eq!(listen_path("/movies/").as_deref(), Some("/movies/"));
        assert_eq!(listen_path("/users/{id}/"), None);
        assert_eq!(slug("My Movies API (v2)"), "my-movies-api-v2");
        assert_eq!(slug("!!!"), "api");
        let mut used = BTreeSet::new();
        assert_eq!(unique_id("a", &mut used), "a");
        assert_eq!(unique_id("a", &mut used), "a-2");
    }

    #[test]
    fn placeholders_in_values_are_escaped() {
        let c = one(json!({"name": "A", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://u:1/${HOME}"}}));
        assert!(
            c.apis[0].yaml.contains("http://u:1/$${HOME}"),
            "{}",
            c.apis[0].yaml
        );
    }

    #[test]
    fn line_breaks_in_names_stay_inside_comments() {
        let api = Source {
            name: "a\nb.json".into(),
            json: json!({"name": "A", "api_id": "x\nid: evil", "use_keyless": true,
                "proxy": {"listen_path": "/a/", "target_url": "http://u:1"}}),
        };
        let policies = Source {
            name: "p.json".into(),
            json: json!({"p\n- id: evil": {"name": "n\nx", "rate": 1, "per": 1}}),
        };
        let c = convert(&[api], Some(&policies));
        let yaml: serde_yaml::Value = serde_yaml::from_str(&c.apis[0].yaml).unwrap();
        assert_eq!(yaml["id"], "a");
        let policies: Vec<serde_yaml::Value> =
            serde_yaml::from_str(c.policies_yaml.as_deref().unwrap()).unwrap();
        assert_eq!(policies.len(), 1);
        assert_eq!(policies[0]["id"], "p-id-evil");
    }

    #[test]
    fn a_policies_file_given_as_a_definition_is_named_as_such() {
        let c = one(json!({"gold": {"rate": 1, "per": 1, "access_rights": {}}}));
        assert!(c.apis.is_empty());
        assert_eq!(
            c.dropped[0].to_string(),
            "tyk.json: a Tyk policies file, not an API definition: pass it with --policies"
        );
        assert_eq!(c.dropped.len(), 1);
    }

    #[test]
    fn oas_definitions_are_reported_not_misread() {
        let c = one(
            json!({"openapi": "3.0.3", "info": {"title": "A"}, "paths": {},
            "x-tyk-api-gateway": {"info": {"name": "A"}, "server": {"listenPath": {"value": "/a/"}}}}),
        );
        assert!(c.apis.is_empty());
        assert_eq!(paths(&c), ["x-tyk-api-gateway"]);
    }

    #[test]
    fn unsupported_auth_fails_closed() {
        let c = one(
            json!({"name": "H", "enable_signature_checking": true, "use_basic_auth": true,
            "proxy": {"listen_path": "/h/", "target_url": "http://u:1"}}),
        );
        let yaml = &c.apis[0].yaml;
        assert!(yaml.contains("type: oauth2"), "{yaml}");
        assert!(paths(&c).contains(&"enable_signature_checking"));
        assert!(paths(&c).contains(&"use_basic_auth"));
    }

    #[test]
    fn wrapped_and_listed_definitions() {
        let def = json!({"name": "A", "use_keyless": true, "proxy": {"listen_path": "/a/", "target_url": "http://u:1"}});
        let c = one(json!({"apis": [{"api_definition": def.clone(), "hook_references": []}]}));
        assert_eq!(c.apis.len(), 1);
        let c = one(
            json!([def.clone(), {"name": "B", "use_keyless": true, "tags": ["x"], "proxy": {"listen_path": "/b/", "target_url": "http://u:1"}}]),
        );
        assert_eq!(c.apis.len(), 2);
        assert_eq!(paths(&c), ["[1].tags"]);
    }

    #[test]
    fn policies_from_a_list_and_an_object() {
        let api = Source {
            name: "a.json".into(),
            json: json!({"name": "A", "api_id": "abc", "proxy": {"listen_path": "/a/", "target_url": "http://u:1"}}),
        };
        let list = Source {
            name: "p.json".into(),
            json: json!([{"_id": "gold", "name": "Gold", "rate": 10, "per": 1, "quota_max": -1,
                "access_rights": {"abc": {"api_id": "abc", "versions": ["Default"], "allowed_urls": [{"url": "/x", "methods": ["GET"]}]},
                                  "zzz": {"api_id": "zzz"}}}]),
        };
        let c = convert(&[api], Some(&list));
        let yaml = c.policies_yaml.unwrap();
        assert!(
            yaml.contains(
                "- id: gold\n  rate_limit:\n    rate: 10\n    per: 1s\n  access:\n  - a\n"
            ),
            "{yaml}"
        );
        let policy_lines: Vec<String> = c
            .dropped
            .iter()
            .filter(|d| d.file == "p.json")
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            policy_lines,
            [
                "p.json: [0].access_rights.abc.allowed_urls: path and method restrictions have no tollgate equivalent: the whole API is granted",
                "p.json: [0].access_rights.zzz: no imported API has api_id `zzz` (import its definition in the same run): access not carried over",
            ]
        );
    }
}
