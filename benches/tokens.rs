//! Micro-benchmarks of the token work: signing an access token (what the token endpoint does per
//! token), verifying one in full (a token the gateway has not seen), and the cache hit that every later
//! request with the same token costs; plus one check of the in-memory rate limiter and quota.
//!
//! Run with `cargo bench --bench tokens`. The load comparison lives in `benches/load/`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::config::{OnStorageError, Quota, RateLimit, SigningAlgorithm};
use tollgate::limits::Limiter;
use tollgate::limits::memory::MemoryLimiter;
use tollgate::token::cache::TokenCache;
use tollgate::token::jwt::{ACCESS_TOKEN_TYP, AccessClaims, sign, verify_signature};
use tollgate::token::keys::{KeySet, SigningKey, generate_pkcs8_pem};

fn keys(alg: SigningAlgorithm) -> KeySet {
    let pem = generate_pkcs8_pem(alg).expect("generate");
    let key = SigningKey::from_pkcs8_pem(pem.as_bytes(), Path::new("bench.pem")).expect("key");
    KeySet::from_keys(key, Vec::new())
}

/// The claims of a client_credentials token as the token endpoint mints them.
fn claims() -> AccessClaims {
    AccessClaims {
        iss: "http://127.0.0.1:8080/bench".into(),
        sub: "bench-client".into(),
        aud: "bench".into(),
        client_id: "bench-client".into(),
        scope: "read".into(),
        exp: 4_000_000_000,
        iat: 1_700_000_000,
        nbf: 1_700_000_000,
        jti: "Xf3kQ9v2Lr8sT1wZ0aBcDe".into(),
        sid: "Pq7nM4hJ2kL9sD3fG6aZxC".into(),
        extra: Default::default(),
    }
}

fn signing(c: &mut Criterion) {
    let mut group = c.benchmark_group("token/sign");
    for (name, alg) in [
        ("ES256", SigningAlgorithm::Es256),
        ("EdDSA", SigningAlgorithm::EdDsa),
    ] {
        let keys = keys(alg);
        let claims = claims();
        group.bench_function(format!("{name}/parsed_key"), |b| {
            b.iter(|| sign(&keys, black_box(&claims)).expect("sign"))
        });
        // What every token cost before the key was kept parsed: jsonwebtoken parses the PKCS#8 key
        // on each call.
        let key = keys.current();
        group.bench_function(format!("{name}/jsonwebtoken_encode"), |b| {
            b.iter(|| {
                jsonwebtoken::encode(
                    &key.header(ACCESS_TOKEN_TYP),
                    black_box(&claims),
                    key.encoding_key(),
                )
                .expect("encode")
            })
        });
    }
    group.finish();
}

fn verifying(c: &mut Criterion) {
    let mut group = c.benchmark_group("token/verify");
    let keys = keys(SigningAlgorithm::Es256);
    let token = sign(&keys, &claims()).expect("sign");
    group.bench_function("ES256/full", |b| {
        b.iter(|| verify_signature(&keys, black_box(&token)).expect("verify"))
    });
    let cache = TokenCache::new(100_000);
    cache.insert(
        &token,
        Arc::new(verify_signature(&keys, &token).expect("verify")),
    );
    // A cache with other tokens in it, as on a busy gateway.
    for i in 0..10_000 {
        cache.insert(&format!("{token}{i}"), Arc::new(claims()));
    }
    group.bench_function("ES256/cache_hit", |b| {
        b.iter(|| cache.get(black_box(&token)).expect("hit"))
    });
    group.finish();
}

fn limiting(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let limiter = MemoryLimiter::new();
    let rate = RateLimit {
        rate: 100_000_000,
        per: Duration::from_secs(1),
        on_storage_error: OnStorageError::Local,
        exact: false,
    };
    let quota = Quota {
        max: u64::MAX / 2,
        period: Duration::from_secs(30 * 24 * 3600),
    };
    let key = "session:Pq7nM4hJ2kL9sD3fG6aZxC:api:bench";
    c.bench_function("limits/memory/rate_and_quota", |b| {
        b.iter(|| {
            runtime
                .block_on(limiter.check(black_box(key), Some(&rate), Some(&quota), 1_700_000_000))
                .expect("check")
        })
    });
}

criterion_group!(benches, signing, verifying, limiting);
criterion_main!(benches);
