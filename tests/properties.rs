//! Property tests (proptest) for the parsers a client or a config file controls: the canonical path
//! and routing, header-name normalisation and the headers dropped before forwarding, form and HTTP
//! Basic parsing of the OAuth endpoints, and config loading. Arbitrary input never panics, and the
//! path rules hold for every input, not only the examples in the unit tests.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use tollgate::proxy::headers::{drop_spoofable, host_name, same_normalised_name};
use tollgate::proxy::path::{
    Router, canonical, check_semicolons, upstream_path, without_path_parameters,
};

/// `n` cases; failures are not persisted to files (an integration test has no source folder that
/// proptest can find, and the minimal failing input is printed anyway).
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

/// Pieces that make path confusion: separators, dots, encodings of both (either hex case),
/// semicolons, backslashes, malformed escapes, encoded unreserved and reserved characters.
fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just(";".to_owned()),
        Just("\\".to_owned()),
        Just("%".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%2F".to_owned()),
        Just("%5c".to_owned()),
        Just("%3B".to_owned()),
        Just("%25".to_owned()),
        Just("%00".to_owned()),
        Just("%C3%A9".to_owned()),
        "%[0-9A-Fa-f]{2}",
        "%[0-9A-Za-z]{0,2}",
        "[a-z0-9_~-]{1,4}",
        Just("pub".to_owned()),
        Just("admin".to_owned()),
    ]
}

/// Half hostile pieces in any order, half well-formed segments (so that many cases canonicalise and
/// the properties of the result are exercised, not only the refusals).
fn request_path() -> impl Strategy<Value = String> {
    let segment = prop::collection::vec(
        prop_oneof![
            "[a-z0-9._~-]{1,3}",
            "(pub|admin|a|b|c)",
            "%[46][1-9A-Fa-f]",
            "%[37][0-9Aa]",
            "%2[0-9A-Da-d]",
            Just(";".to_owned()),
            Just("%2E".to_owned()),
        ],
        1..4,
    )
    .prop_map(|parts| parts.concat());
    prop_oneof![
        prop::collection::vec(path_piece(), 0..12).prop_map(|p| format!("/{}", p.concat())),
        (prop::collection::vec(segment, 0..5), any::<bool>()).prop_map(|(segments, slash)| {
            let tail = if slash { "/" } else { "" };
            format!("/{}{tail}", segments.join("/"))
        }),
    ]
}

/// Full percent-decoding, as an upstream that decodes everything would read the path.
fn fully_decoded(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn nested_router() -> (Router<&'static str>, Vec<&'static str>) {
    let paths = vec!["/", "/pub/", "/pub/admin/", "/a/", "/a/b/c/"];
    let router = Router::new(paths.iter().map(|p| (*p, Arc::new(*p))));
    (router, paths)
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn the_canonical_path_is_idempotent_and_has_no_hidden_structure(raw in request_path()) {
        let Ok(path) = canonical(&raw) else { return Ok(()) };
        // Idempotent: the forwarded path, checked again, is itself.
        let again = canonical(&path);
        prop_assert_eq!(again.as_deref(), Ok(path.as_ref()));
        // No dot segments and no empty segment except the trailing slash.
        let segments: Vec<&str> = path[1..].split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            prop_assert!(*segment != "." && *segment != "..", "{path}");
            prop_assert!(!segment.is_empty() || i + 1 == segments.len(), "{path}");
        }
        // Decoding never creates a separator, and encoded separators are never let through.
        prop_assert_eq!(raw.matches('/').count(), path.matches('/').count());
        let lower = path.to_ascii_lowercase();
        prop_assert!(!lower.contains("%2f") && !lower.contains("%5c") && !path.contains('\\'));
        // Only unreserved characters were decoded, and all of them: the meaning is unchanged.
        prop_assert_eq!(fully_decoded(&raw), fully_decoded(&path));
        for escape in path.match_indices('%') {
            let hex = &path[escape.0 + 1..escape.0 + 3];
            let value = u8::from_str_radix(hex, 16);
            prop_assert!(value.is_ok_and(|v| !is_unreserved(v)), "{path}");
        }
    }

    #[test]
    fn the_routed_path_is_the_forwarded_path(raw in request_path(), strip: bool) {
        let (router, _) = nested_router();
        let Ok(path) = canonical(&raw) else { return Ok(()) };
        let Some(routed) = router.route(&path) else { return Ok(()) };
        let listen_path = **routed;
        let trimmed = listen_path.trim_end_matches('/');
        // The API that matched owns the path on a segment boundary...
        prop_assert!(path.starts_with(trimmed));
        prop_assert!(matches!(path.as_bytes().get(trimmed.len()), None | Some(b'/')));
        // ...and the upstream receives exactly that path (minus the listen path when stripping).
        let forwarded = upstream_path(&path, listen_path, strip, "");
        if strip {
            let rest = &path[trimmed.len()..];
            prop_assert_eq!(forwarded, if rest.is_empty() { "/" } else { rest });
        } else {
            prop_assert_eq!(forwarded, path.as_ref());
        }
        // A `;` that passes cannot move the request to another API for a server that strips it.
        if check_semicolons(&router, &path, routed, true).is_ok() && path.contains(';') {
            let stripped = without_path_parameters(&path);
            prop_assert!(router.route(&stripped).is_some_and(|r| Arc::ptr_eq(r, routed)));
        }
        prop_assert_eq!(
            check_semicolons(&router, &path, routed, false).is_ok(),
            !path.contains(';')
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Headers

fn normalised(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[xX][-_][uU]ser[-_][iI]d",
        "[xX][-_][fF]orwarded[-_][a-zA-Z]{0,6}",
        "(x[-_]real[-_]ip|true[-_]client[-_]ip|x[-_]client[-_]ip|forwarded)",
        "[a-zA-Z][a-zA-Z0-9_-]{0,14}",
    ]
}

const FORWARDING: [&str; 4] = ["forwarded", "x-real-ip", "true-client-ip", "x-client-ip"];

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn names_match_when_they_normalise_alike(a in "[a-zA-Z_-]{0,6}", b in "[a-zA-Z_-]{0,6}") {
        prop_assert_eq!(
            same_normalised_name(a.as_bytes(), b.as_bytes()),
            normalised(&a) == normalised(&b)
        );
    }

    #[test]
    fn spoofable_headers_are_dropped_in_every_spelling_and_others_kept(
        names in prop::collection::vec(header_name(), 0..12),
        trusted: bool,
    ) {
        let mut headers = HeaderMap::new();
        for name in &names {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.append(name, HeaderValue::from_static("v"));
            }
        }
        let before = headers.clone();
        let identity = vec![(HeaderName::from_static("x-user-id"), "sub".to_owned())];
        drop_spoofable(&mut headers, &identity, trusted);
        for (name, values) in before.iter().map(|(n, _)| (n, before.get_all(n))) {
            let norm = normalised(name.as_str());
            let forwarding = norm.starts_with("x-forwarded-") || FORWARDING.contains(&norm.as_str());
            let dropped = norm == "x-user-id"
                || (forwarding && (!trusted || name.as_str().contains('_')));
            let kept = headers.get_all(name).iter().count();
            prop_assert_eq!(kept, if dropped { 0 } else { values.iter().count() }, "{}", name);
        }
    }

    #[test]
    fn host_names_are_parsed_without_panicking(authority in "[a-zA-Z0-9.:_@\\[\\]%-]{0,24}") {
        if let Some(host) = host_name(&authority) {
            prop_assert!(!host.is_empty() && authority.starts_with(host));
            prop_assert!(!host.contains('@') && !host.contains('%'));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Form and HTTP Basic parsing (OAuth endpoints)

fn basic_header(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(AUTHORIZATION, value);
    }
    headers
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn form_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = tollgate::http_util::parse_pairs(&body);
    }

    #[test]
    fn form_bodies_of_distinct_pairs_parse_back(
        pairs in prop::collection::hash_map("[a-z_]{1,8}", ".{0,12}", 0..6)
    ) {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let parsed = tollgate::http_util::parse_pairs(body.as_bytes());
        prop_assert_eq!(parsed.ok(), Some(pairs));
    }

    #[test]
    fn arbitrary_authorization_headers_never_panic(
        value in "(Basic |basic |Bearer )?[ -~]{0,64}",
        raw_b64 in prop::collection::vec(any::<u8>(), 0..48),
        form_id in proptest::option::of(".{0,8}"),
    ) {
        let mut form = HashMap::new();
        if let Some(id) = form_id {
            form.insert("client_id".to_owned(), id);
        }
        let _ = tollgate::oauth::handlers::client_auth(&basic_header(&value), &mut form.clone());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&raw_b64);
        let _ = tollgate::oauth::handlers::client_auth(
            &basic_header(&format!("Basic {encoded}")),
            &mut form,
        );
    }

    #[test]
    fn basic_credentials_round_trip(id in "[!-~]{1,24}", secret in ".{0,24}") {
        // RFC 6749 §2.3.1: form-urlencoded, then base64.
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", encode(&id), encode(&secret)));
        let auth = tollgate::oauth::handlers::client_auth(
            &basic_header(&format!("Basic {encoded}")),
            &mut HashMap::new(),
        );
        let auth = auth.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(auth.client_id, Some(id));
        prop_assert_eq!(auth.secret, Some(secret));
    }
}

// ---------------------------------------------------------------------------------------------
// Config loading

/// YAML-ish text: flow mappings and sequences built from the real field names and awkward scalars,
/// so that many cases get past the YAML parser into deserialization and validation.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("listen"),
        Just("public_url"),
        Just("tls"),
        Just("api_definitions"),
        Just("storage"),
        Just("backend"),
        Just("redis"),
        Just("signing"),
        Just("generate"),
        Just("limits"),
        Just("trusted_proxies"),
        Just("allowed_hosts"),
        Just("listen_path"),
        Just("strip_listen_path"),
        Just("allow_semicolons"),
        Just("upstream"),
        Just("url"),
        Just("mock"),
        Just("status"),
        Just("auth"),
        Just("type"),
        Just("forward_claims"),
        Just("oauth"),
        Just("clients"),
        Just("rate_limit"),
        Just("rate"),
        Just("per"),
        Just("quota"),
        Just("timeout"),
        Just("<<"),
    ];
    let scalar = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("~".to_owned()),
        Just("''".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e999".to_owned()),
        Just("30s".to_owned()),
        Just("99999999999d".to_owned()),
        Just("/x/".to_owned()),
        Just("http://127.0.0.1:1/v1".to_owned()),
        Just("'${MISSING}'".to_owned()),
        Just("'*.'".to_owned()),
        Just("'[::1'".to_owned()),
        Just("&a x".to_owned()),
        Just("*a".to_owned()),
        "[a-z0-9./:*%-]{0,10}",
    ];
    scalar.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec((key.clone(), inner.clone()), 0..6).prop_map(|entries| {
                let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
            prop::collection::vec(inner, 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
        ]
    })
}

/// Either a document built from the grammar, or one with a few bytes of noise spliced in.
fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        yamlish(),
        (
            yamlish(),
            any::<prop::sample::Index>(),
            "[{}\\[\\]:,'\"\n\t &*!|>%@#-]{1,4}"
        )
            .prop_map(|(text, at, noise)| {
                let mut at = at.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                format!("{}{}{}", &text[..at], noise, &text[at..])
            }),
    ]
}

proptest! {
    // Every case writes two files and loads them: fewer cases, still hundreds of shapes.
    #![proptest_config(cases(192))]

    #[test]
    fn loading_arbitrary_config_files_never_panics(gateway in config_text(), api in config_text()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let folder = dir.path().join("api-definitions");
        std::fs::create_dir_all(&folder).map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::fs::write(folder.join("fuzz.yaml"), &api).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let gateway_file = dir.path().join("gateway.yaml");
        // As given, and with a valid base so that the API definition is reached too.
        for text in [gateway.clone(), format!("signing: {{generate: true}}\n# {}", gateway.replace('\n', " "))] {
            std::fs::write(&gateway_file, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if let Err(errors) = tollgate::Config::load(&gateway_file) {
                // Every problem names its file.
                for line in errors.lines() {
                    prop_assert!(line.contains(".yaml"), "{}", line);
                }
            }
        }
    }
}
