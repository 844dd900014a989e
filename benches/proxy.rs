//! Micro-benchmarks of the per-request work the proxy does before it forwards: the canonical path
//! check, routing among many APIs, the upstream path, and the header rewriting.
//!
//! Run with `cargo bench --bench proxy`. The load comparison with nginx lives in `benches/load/`.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::header::HeaderName;
use http::header::{HeaderMap, HeaderValue};
use tollgate::config::Cidr;
use tollgate::proxy::headers::{drop_spoofable, forwarded_for, strip_hop_by_hop};
use tollgate::proxy::path::{Router, canonical, check_canonical, upstream_path};

/// Stands in for the routed API (the real one is larger, but the router only holds an `Arc`).
struct Api {
    listen_path: String,
}

/// 100 APIs: `/api-00/` … `/api-89/`, plus ten nested ones (`/api-00/admin/` …) so that the longest
/// match has to be found, as with real deployments that give an admin sub-API its own definition.
fn router() -> Router<Api> {
    let mut paths: Vec<String> = (0..90).map(|i| format!("/api-{i:02}/")).collect();
    paths.extend((0..10).map(|i| format!("/api-{i:02}/admin/")));
    let apis: Vec<(String, Arc<Api>)> = paths
        .into_iter()
        .map(|p| {
            let api = Arc::new(Api {
                listen_path: p.clone(),
            });
            (p, api)
        })
        .collect();
    Router::new(apis.iter().map(|(p, api)| (p.as_str(), api.clone())))
}

/// A typical browser/SDK request as it reaches the gateway: 12 headers, one of them `Connection`.
fn typical_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    add("host", "api.example.com");
    add(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    );
    add("accept", "application/json, text/plain, */*");
    add("accept-encoding", "gzip, deflate, br");
    add("accept-language", "en-GB,en;q=0.9");
    add(
        "authorization",
        "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
    );
    add("content-type", "application/json");
    add("content-length", "42");
    add("connection", "keep-alive");
    add("x-request-id", "0f5c2b8e-6d0e-4c53-9a0c-1f2e3d4c5b6a");
    add("cookie", "session=abc123; theme=dark");
    add("x-forwarded-for", "203.0.113.7");
    assert_eq!(h.len(), 12);
    h
}

fn bench_path(c: &mut Criterion) {
    let router = router();
    let mut group = c.benchmark_group("path");
    group.bench_function("check_canonical/typical", |b| {
        b.iter(|| check_canonical(black_box("/api-42/v1/users/123/orders")))
    });
    group.bench_function("check_canonical/percent_encoded", |b| {
        b.iter(|| check_canonical(black_box("/api-42/v1/search/caf%C3%A9%20au%20lait")))
    });
    group.bench_function("canonical/decodes_unreserved", |b| {
        b.iter(|| canonical(black_box("/api-42/%61dmin/users/123/orders")).map(|p| p.len()))
    });
    for (name, path) in [
        ("hit_short", "/api-42/users"),
        ("hit_typical", "/api-42/v1/users/123/orders"),
        ("hit_nested", "/api-07/admin/settings"),
        ("hit_deep", "/api-89/a/b/c/d/e/f/g/h"),
        ("miss", "/unknown/v1/users/123"),
    ] {
        // Sanity: hits must really hit, or the figures would describe the wrong code path.
        assert_eq!(
            router.route(path).is_some(),
            !name.starts_with("miss"),
            "{path}"
        );
        group.bench_function(format!("route_100_apis/{name}"), |b| {
            b.iter(|| {
                router
                    .route(black_box(path))
                    .map(|api| api.listen_path.len())
            })
        });
    }
    group.bench_function("upstream_path/strip_with_prefix", |b| {
        b.iter(|| {
            upstream_path(
                black_box("/api-42/v1/users/123/orders"),
                black_box("/api-42/"),
                true,
                black_box("/backend"),
            )
        })
    });
    group.finish();
}

fn bench_headers(c: &mut Criterion) {
    let headers = typical_headers();
    let mut group = c.benchmark_group("headers");
    group.bench_function("clone_12_headers_baseline", |b| {
        b.iter(|| black_box(&headers).clone())
    });
    group.bench_function("strip_hop_by_hop/12_headers", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| strip_hop_by_hop(black_box(h)),
            BatchSize::SmallInput,
        )
    });
    let mut named = headers.clone();
    named.insert(
        "connection",
        HeaderValue::from_static("keep-alive, x-secret, x-debug"),
    );
    named.insert("x-secret", HeaderValue::from_static("1"));
    named.insert("x-debug", HeaderValue::from_static("1"));
    group.bench_function("strip_hop_by_hop/connection_names_2", |b| {
        b.iter_batched_ref(
            || named.clone(),
            |h| strip_hop_by_hop(black_box(h)),
            BatchSize::SmallInput,
        )
    });
    // What every proxied request pays: the two default forward_claims, nothing to drop (a trusted
    // peer keeps its X-Forwarded-For), and an untrusted peer whose X-Forwarded-For goes.
    let identity = [
        (HeaderName::from_static("x-user-id"), "sub".to_owned()),
        (
            HeaderName::from_static("x-client-id"),
            "client_id".to_owned(),
        ),
    ];
    group.bench_function("drop_spoofable/12_headers_nothing_to_drop", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| drop_spoofable(black_box(h), &identity, true),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("drop_spoofable/12_headers_untrusted_xff_dropped", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| drop_spoofable(black_box(h), &identity, false),
            BatchSize::SmallInput,
        )
    });
    let peer: IpAddr = "198.51.100.23".parse().unwrap();
    group.bench_function("forwarded_for/untrusted_peer", |b| {
        b.iter(|| forwarded_for(black_box(&headers), black_box(peer), black_box(false)))
    });
    let trusted = [Cidr {
        addr: "198.51.100.0".parse().unwrap(),
        prefix: 24,
    }];
    group.bench_function("forwarded_for/trusted_peer_extends_chain", |b| {
        // The membership test is inside the measured closure, as it was when forwarded_for did it.
        b.iter(|| {
            let peer_trusted = black_box(&trusted).iter().any(|c| c.contains(peer));
            forwarded_for(black_box(&headers), black_box(peer), peer_trusted)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_path, bench_headers);
criterion_main!(benches);
