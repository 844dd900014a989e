//! The Redis store against a real `redis-server` (one started per test on a free port).

use std::time::Duration;

use super::*;
use crate::config::{OnStorageError, Quota, RateLimit};
use crate::limits::{Limiter, Refused};
use crate::redis::conn::REBUILD_AFTER_TIMEOUTS;
use crate::redis::testing::{RedisCluster, RedisServer, raw_command, unique_prefix};

/// The limiter as `lib.rs` builds it: counting in the same Redis, over the same connection.
fn limiter_of(store: &RedisStore) -> crate::limits::redis::RedisLimiter {
    crate::limits::redis::RedisLimiter::new(store.backend(), store.key_prefix())
}
use crate::store::GrantKind;

const TIMEOUT: Duration = Duration::from_secs(2);

/// How long a change may take to reach another node before the test calls it lost. Not a speed claim
/// (a loaded CI machine may take a while): how fast changes travel is measured in benchmarks.
const PROPAGATION: Duration = Duration::from_secs(10);
/// What a call bounded by `storage.redis.timeout` may take beyond it on a loaded machine: enough to
/// never race the scheduler, far below the hang (or the default timeout) it rules out.
const SLACK: Duration = Duration::from_secs(2);

/// A store configuration with a key prefix no other test uses.
fn config(server: &RedisServer, timeout: Duration) -> RedisConfig {
    RedisConfig {
        url: Some(server.url()),
        cluster: Vec::new(),
        key_prefix: unique_prefix(),
        timeout,
    }
}

fn cluster_config(cluster: &RedisCluster, timeout: Duration) -> RedisConfig {
    RedisConfig {
        url: None,
        cluster: cluster.seeds(),
        key_prefix: unique_prefix(),
        timeout,
    }
}

async fn shared_store() -> Arc<RedisStore> {
    RedisStore::connect(&config(&RedisServer::shared(), TIMEOUT))
        .await
        .expect("connect to the test redis")
}

crate::store::contract::store_contract_tests!(shared_store().await);

mod limiter_contract {
    crate::limiter_contract_tests!(async {
        let store = super::shared_store().await;
        std::sync::Arc::new(super::limiter_of(&store)) as std::sync::Arc<dyn crate::limits::Limiter>
    });
}

fn t0() -> u64 {
    now_secs()
}

fn sha256_hex(s: &str) -> String {
    crate::secrets::sha256_hex(s.as_bytes())
}

fn session(sid: &str, now: u64) -> Session {
    Session {
        sid: sid.into(),
        api_id: "api".into(),
        client_id: "client".into(),
        username: Some("alice".into()),
        scope: "read".into(),
        grant: GrantKind::AuthorizationCode,
        created_at: now,
        last_refresh_at: None,
        refresh_count: 0,
        expires_at: now + 3_600,
        oidc: None,
    }
}

fn token(sid: &str, now: u64, expires_at: Option<u64>) -> RefreshToken {
    RefreshToken {
        sid: sid.into(),
        api_id: "api".into(),
        client_id: "client".into(),
        username: Some("alice".into()),
        scope: "read".into(),
        generation: 0,
        issued_at: now,
        expires_at,
    }
}

/// Fills every kind of key the store and the limiter write.
async fn exercise(store: &RedisStore, raw_code: &str, raw_tokens: [&str; 3], secret: &str) {
    let now = t0();
    let sid = "sid-exercise";
    store
        .put_code(
            &sha256_hex(raw_code),
            &AuthCode {
                api_id: "api".into(),
                client_id: "client".into(),
                redirect_uri: "https://app.example/cb".into(),
                scope: "read".into(),
                username: "alice".into(),
                code_challenge: None,
                sid: sid.into(),
                expires_at: now + 60,
                oidc: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        store.take_code(&sha256_hex(raw_code), now).await.unwrap(),
        CodeTake::Fresh(_)
    ));
    store.put_session(&session(sid, now), 100).await.unwrap();
    let [rt1, rt2, rt_forever] = raw_tokens;
    store
        .put_refresh(&sha256_hex(rt1), &token(sid, now, Some(now + 600)))
        .await
        .unwrap();
    store
        .rotate_refresh(
            &sha256_hex(rt1),
            &sha256_hex(rt2),
            &token(sid, now, Some(now + 1200)),
            now,
        )
        .await
        .unwrap();
    store
        .put_session(&session("sid-forever", now), 100)
        .await
        .unwrap();
    store
        .put_refresh(&sha256_hex(rt_forever), &token("sid-forever", now, None))
        .await
        .unwrap();
    store
        .revoke_session("sid-revoked", now + 600)
        .await
        .unwrap();
    store.revoke_jti("jti-revoked", now + 600).await.unwrap();
    store
        .reserve_attempt(
            &Guess {
                scope: "login:api",
                address: "10.0.0.1",
                subject: "alice",
            },
            5,
            300,
            now,
        )
        .await
        .unwrap();
    store
        .put_client(&StoredClient {
            api_id: "api".into(),
            client_id: "dyn".into(),
            secret_hash: Some(crate::secrets::hash_secret(secret).unwrap()),
            redirect_uris: vec![],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["read".into()],
            policy: None,
            claims: Default::default(),
            created_at: now,
        })
        .await
        .unwrap();
    store
        .put_policy(
            &StoredPolicy {
                id: "gold".into(),
                rate_limit: None,
                quota: None,
                scopes: None,
                access: vec![],
                created_at: now,
                updated_at: now,
            },
            PolicyWrite::Create,
        )
        .await
        .unwrap();
    let limiter = limiter_of(store);
    let rate = RateLimit {
        rate: 10,
        per: Duration::from_secs(60),
        on_storage_error: OnStorageError::Deny,
        exact: false,
    };
    let quota = Quota {
        max: 100,
        period: Duration::from_secs(3600),
    };
    limiter
        .check("session:x", Some(&rate), Some(&quota), now)
        .await
        .unwrap();
}

/// Every key has a TTL except the dynamic clients and the stored policies (docs/design.md §7), and every
/// TTL is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_but_clients_and_policies_has_a_ttl() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let store = RedisStore::connect(&cfg).await.unwrap();
    exercise(&store, "code-raw", ["rt-a", "rt-b", "rt-c"], "s3cret-value").await;
    let keys = server.keys_and_ttls(&cfg.key_prefix).await;
    let kinds = [
        "code:",
        "{tokens}:rt:",
        "{tokens}:session:",
        "{tokens}:session_rts:",
        "{tokens}:client_sessions:",
        "{tokens}:revoked:sid",
        "{tokens}:revoked:jti",
        "failures:",
        "clients:",
        "policies",
        "rl:",
    ];
    for kind in kinds {
        assert!(
            keys.iter()
                .any(|(k, _)| k.starts_with(&format!("{}{kind}", cfg.key_prefix))),
            "no {kind} key written: {keys:?}"
        );
    }
    for (key, ttl) in &keys {
        if key.starts_with(&format!("{}clients:", cfg.key_prefix))
            || *key == format!("{}policies", cfg.key_prefix)
        {
            assert_eq!(*ttl, -1, "{key}");
        } else {
            assert!(*ttl > 0, "{key} has no TTL ({ttl})");
            assert!(
                *ttl <= NEVER_EXPIRING_REFRESH_KEEP_SECS as i64 + 10,
                "{key}: {ttl}"
            );
        }
    }
}

/// Codes, refresh tokens and client secrets never reach Redis in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_in_clear() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let store = RedisStore::connect(&cfg).await.unwrap();
    let raw = [
        "code-Zq8YpX2mW9",
        "rt-Kd7Lm2Pq9Xa",
        "rt-Hy6Tn3Bv8Qe",
        "rt-Fw5Rj1Cs7Ug",
    ];
    let secret = "client-secret-Pz4Nk8Vt2";
    exercise(&store, raw[0], [raw[1], raw[2], raw[3]], secret).await;
    let everything = server.dump(&cfg.key_prefix).await;
    assert!(
        everything.contains(&sha256_hex(raw[1])),
        "hashes are stored"
    );
    for needle in raw.iter().chain([&secret]) {
        assert!(!everything.contains(needle), "{needle} stored in clear");
    }
}

/// A revocation on one node reaches another node's `is_revoked` within 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_another_node_within_100ms() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let a = RedisStore::connect(&cfg).await.unwrap();
    let b = RedisStore::connect(&cfg).await.unwrap();
    let now = t0();
    for (sid, jti) in [("sid-1", ""), ("", "jti-1")] {
        assert!(!b.is_revoked(sid, jti, now));
        let started = Instant::now();
        if sid.is_empty() {
            a.revoke_jti(jti, now + 600).await.unwrap();
        } else {
            a.revoke_session(sid, now + 600).await.unwrap();
        }
        assert!(a.is_revoked(sid, jti, now), "local at once");
        while !b.is_revoked(sid, jti, now) {
            assert!(
                started.elapsed() < PROPAGATION,
                "the other node never saw it"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Reuse detected on A revokes on B too.
    a.put_session(&session("sid-2", now), 100).await.unwrap();
    a.put_refresh("h1", &token("sid-2", now, Some(now + 600)))
        .await
        .unwrap();
    a.rotate_refresh("h1", "h2", &token("sid-2", now, Some(now + 600)), now)
        .await
        .unwrap();
    assert_eq!(
        b.rotate_refresh("h1", "h3", &token("sid-2", now, None), now)
            .await
            .unwrap(),
        Rotation::Reused {
            sid: "sid-2".into()
        }
    );
    assert!(b.is_revoked("sid-2", "", now));
    let started = Instant::now();
    while !a.is_revoked("sid-2", "", now) {
        assert!(started.elapsed() < PROPAGATION);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A node that starts later loads the revocations made before it; a revocation it missed while
/// its subscription was down is reloaded when the subscription comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_are_reloaded_on_start_and_on_reconnect() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let now = t0();
    let a = RedisStore::connect(&cfg).await.unwrap();
    a.revoke_session("before-start", now + 600).await.unwrap();
    a.revoke_jti("jti-before-start", now + 600).await.unwrap();
    a.revoke_client_tokens("api", "client-before-start", now, now + 600)
        .await
        .unwrap();
    let b = RedisStore::connect(&cfg).await.unwrap();
    assert!(b.is_revoked("before-start", "", now));
    assert!(b.is_revoked("", "jti-before-start", now));
    assert_eq!(
        b.client_cutoff("api", "client-before-start", now),
        Some(now)
    );

    // A revocation written without a message (as if B missed it), then B's subscription drops.
    let mut conn = server.connection().await;
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("{}{{tokens}}:revoked:sid", cfg.key_prefix))
        .arg(now + 600)
        .arg("missed")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!b.is_revoked("missed", "", now));
    let record = serde_json::json!({
        "kind": "client_cutoff", "api": "api", "id": "client-missed", "at": now, "until": now + 600,
    });
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{}{{tokens}}:client_cutoffs", cfg.key_prefix))
        .arg("api client-missed")
        .arg(record.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(b.client_cutoff("api", "client-missed", now), None);
    let killed = raw_command(server.port(), "CLIENT KILL TYPE pubsub").unwrap();
    assert!(killed.starts_with(':'), "{killed}");
    let started = Instant::now();
    while !b.is_revoked("missed", "", now) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not reloaded after the subscription came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    while b.client_cutoff("api", "client-missed", now).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "client cutoffs not reloaded after the subscription came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the new subscription delivers again.
    let started = Instant::now();
    while !b.subscribed() {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.revoke_jti("after-reconnect", now + 600).await.unwrap();
    let started = Instant::now();
    while !b.is_revoked("", "after-reconnect", now) {
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client changed on one node is not served stale from another node's cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cache_is_invalidated_across_nodes() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let a = RedisStore::connect(&cfg).await.unwrap();
    let b = RedisStore::connect(&cfg).await.unwrap();
    let mut client = StoredClient {
        api_id: "api".into(),
        client_id: "c".into(),
        secret_hash: None,
        redirect_uris: vec![],
        grant_types: vec![],
        scopes: vec!["read".into()],
        policy: None,
        claims: Default::default(),
        created_at: 1,
    };
    a.put_client(&client).await.unwrap();
    assert_eq!(
        b.get_client("api", "c").await.unwrap(),
        Some(client.clone())
    );
    client.scopes = vec!["write".into()];
    a.put_client(&client).await.unwrap();
    let started = Instant::now();
    while b.get_client("api", "c").await.unwrap() != Some(client.clone()) {
        assert!(started.elapsed() < PROPAGATION);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(a.delete_client("api", "c").await.unwrap());
    let started = Instant::now();
    while b.get_client("api", "c").await.unwrap().is_some() {
        assert!(started.elapsed() < PROPAGATION);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A policy written on one node moves another node's policy epoch by exactly one (so its cache is
/// dropped) and the other node reads the change; while a node's subscription is down its epoch is `None` (nothing cached is trusted),
/// and when the subscription returns the epoch has moved (changes missed meanwhile are reloaded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_reach_another_node() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let a = RedisStore::connect(&cfg).await.unwrap();
    let b = RedisStore::connect(&cfg).await.unwrap();
    let mut policy = StoredPolicy {
        id: "gold".into(),
        rate_limit: None,
        quota: None,
        scopes: None,
        access: vec![],
        created_at: 1,
        updated_at: 1,
    };
    // Waits for `b` to hear of one more change. The bound only proves the message is not lost (no
    // timing is asserted: a loaded machine may take a while); how fast it arrives is a benchmark.
    async fn hears_one_change(b: &RedisStore, before: Option<u64>) {
        let started = Instant::now();
        while b.policy_epoch() == before {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the other node never heard of the change"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(
            b.policy_epoch(),
            before.map(|e| e + 1),
            "one write, one message"
        );
    }
    let before = b.policy_epoch();
    assert!(before.is_some());
    assert!(a.put_policy(&policy, PolicyWrite::Create).await.unwrap());
    hears_one_change(&b, before).await;
    assert_eq!(b.get_policy("gold").await.unwrap(), Some(policy.clone()));

    policy.scopes = Some(vec!["read".into()]);
    let before = b.policy_epoch();
    assert!(a.put_policy(&policy, PolicyWrite::Replace).await.unwrap());
    hears_one_change(&b, before).await;
    assert_eq!(b.get_policy("gold").await.unwrap(), Some(policy.clone()));

    let before = b.policy_epoch();
    assert!(a.delete_policy("gold").await.unwrap());
    hears_one_change(&b, before).await;
    assert_eq!(b.get_policy("gold").await.unwrap(), None);
    assert!(
        b.list_policies()
            .await
            .unwrap()
            .iter()
            .all(|p| p.id != "gold")
    );

    // A refused write publishes nothing: after it and one accepted write, the other node has heard
    // exactly one message (messages on one channel arrive in order, so the refused one would have
    // come first).
    let before = b.policy_epoch();
    assert!(!a.put_policy(&policy, PolicyWrite::Replace).await.unwrap());
    assert!(!a.delete_policy("gold").await.unwrap());
    let silver = StoredPolicy {
        id: "silver".into(),
        ..policy.clone()
    };
    assert!(a.put_policy(&silver, PolicyWrite::Create).await.unwrap());
    hears_one_change(&b, before).await;
    let before = b.policy_epoch();

    // Subscription lost: no epoch; back: a new one.
    let killed = raw_command(server.port(), "CLIENT KILL TYPE pubsub").unwrap();
    assert!(killed.starts_with(':'), "{killed}");
    let started = Instant::now();
    while b.policy_epoch().is_some() && b.policy_epoch() == before {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    while b.policy_epoch().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not resubscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(b.policy_epoch(), before);
}

/// Redis down: every call fails with `Unavailable` within the timeout, revocation checks go on
/// locally, the limiter follows `on_storage_error`; Redis back: everything recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(250);
    let cfg = config(&server, timeout);
    let a = RedisStore::connect(&cfg).await.unwrap();
    let b = RedisStore::connect(&cfg).await.unwrap();
    let limiter = limiter_of(&a);
    let now = t0();
    a.revoke_session("revoked-before", now + 600).await.unwrap();

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let err = a.get_session("x").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < timeout + SLACK,
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(matches!(a.ping().await, Err(StoreError::Unavailable(_))));
        // Bounded by the timeout (plus slack for a loaded machine), never a hang.
        assert!(started.elapsed() < timeout + Duration::from_secs(1));
    }
    assert!(a.is_revoked("revoked-before", "", now));
    assert!(b.is_revoked("revoked-before", "", now));
    let rate = |choice| RateLimit {
        rate: 1,
        per: Duration::from_secs(60),
        on_storage_error: choice,
        exact: false,
    };
    let local = rate(OnStorageError::Local);
    assert_eq!(
        limiter
            .check("k", Some(&local), None, now)
            .await
            .unwrap()
            .refused,
        None
    );
    assert!(matches!(
        limiter
            .check("k", Some(&local), None, now)
            .await
            .unwrap()
            .refused,
        Some(Refused::RateLimit { .. })
    ));
    let allow = rate(OnStorageError::Allow);
    assert_eq!(
        limiter
            .check("k", Some(&allow), None, now)
            .await
            .unwrap()
            .refused,
        None
    );
    let deny = rate(OnStorageError::Deny);
    assert!(limiter.check("k", Some(&deny), None, now).await.is_err());
    assert_eq!(
        crate::limits::Limiter::storage_errors(&limiter),
        vec![("local", 2), ("allow", 1), ("deny", 1)]
    );

    server.restart();
    let started = Instant::now();
    while a.ping().await.is_err() || b.ping().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no recovery after redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both subscriptions come back, and revocations flow again.
    let started = Instant::now();
    while !(a.subscribed() && b.subscribed()) {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.revoke_jti("after-restart", now + 600).await.unwrap();
    let started = Instant::now();
    while !b.is_revoked("", "after-restart", now) {
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Revocations held locally survive the (empty) restarted Redis.
    assert!(b.is_revoked("revoked-before", "", now));
    let d = limiter.check("k", Some(&deny), None, now).await.unwrap();
    assert_eq!(d.refused, None);
}

/// A Redis that accepts but never answers (frozen): every call still ends within the timeout, and
/// the node recovers once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_redis_answers_unavailable_within_the_timeout() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(250);
    let store = RedisStore::connect(&config(&server, timeout))
        .await
        .unwrap();
    let limiter = limiter_of(&store);
    let deny = RateLimit {
        rate: 100,
        per: Duration::from_secs(1),
        on_storage_error: OnStorageError::Deny,
        exact: false,
    };
    let pid = server.pid();
    let frozen = server.freeze();
    for _ in 0..(REBUILD_AFTER_TIMEOUTS + 2) {
        let started = Instant::now();
        assert!(matches!(
            store.put_session(&session("s", t0()), 100).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(limiter.check("k", Some(&deny), None, 0).await.is_err());
        assert!(
            started.elapsed() < 2 * timeout + SLACK,
            "{:?}",
            started.elapsed()
        );
    }
    drop(frozen);
    let started = Instant::now();
    while store.ping().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.put_session(&session("s", t0()), 100).await.unwrap();
    assert_eq!(server.pid(), pid);
}

/// The whole contract, the limiter and propagation work on a Redis Cluster too (every script's
/// keys in one slot, pub/sub reaching subscribers on other nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster() {
    let cluster = RedisCluster::start();
    let cfg = cluster_config(&cluster, TIMEOUT);
    crate::store::contract::run_all(|| async {
        RedisStore::connect(&cfg)
            .await
            .expect("connect to the cluster") as Arc<dyn Store>
    })
    .await;

    // Two nodes subscribed on different cluster nodes.
    let mut cfg_a = cfg.clone();
    cfg_a.cluster.rotate_left(1);
    let a = RedisStore::connect(&cfg_a).await.unwrap();
    let b = RedisStore::connect(&cfg).await.unwrap();
    let now = t0();
    a.revoke_session("cluster-sid", now + 600).await.unwrap();
    let started = Instant::now();
    while !b.is_revoked("cluster-sid", "", now) {
        assert!(started.elapsed() < PROPAGATION);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = RateLimit {
        rate: 2,
        per: Duration::from_secs(60),
        on_storage_error: OnStorageError::Deny,
        exact: false,
    };
    let quota = Quota {
        max: 5,
        period: Duration::from_secs(60),
    };
    let (la, lb) = (limiter_of(&a), limiter_of(&b));
    let mut refused = Vec::new();
    for limiter in [&la, &lb, &la] {
        let d = limiter
            .check("session:c", Some(&rate), Some(&quota), now)
            .await
            .unwrap();
        refused.push(d.refused.is_some());
    }
    assert_eq!(refused, vec![false, false, true]);
    let client = StoredClient {
        api_id: "api".into(),
        client_id: "c".into(),
        secret_hash: None,
        redirect_uris: vec![],
        grant_types: vec![],
        scopes: vec![],
        policy: None,
        claims: Default::default(),
        created_at: 1,
    };
    a.put_client(&client).await.unwrap();
    assert_eq!(b.get_client("api", "c").await.unwrap(), Some(client));
}

/// Nothing to connect to at start: a clear error, quickly.
#[tokio::test]
async fn connect_fails_fast_when_redis_is_down() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = RedisConfig {
        url: Some(format!("redis://127.0.0.1:{port}/")),
        cluster: vec![],
        key_prefix: "x:".into(),
        timeout: Duration::from_millis(250),
    };
    let started = Instant::now();
    let err = RedisStore::connect(&cfg).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// Two limiters on two nodes draw on one budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_shared_between_nodes() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let a = limiter_of(&RedisStore::connect(&cfg).await.unwrap());
    let b = limiter_of(&RedisStore::connect(&cfg).await.unwrap());
    let now = t0();
    let rate = RateLimit {
        rate: 4,
        per: Duration::from_secs(60),
        on_storage_error: OnStorageError::Deny,
        exact: false,
    };
    let mut passed = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        if limiter
            .check("shared", Some(&rate), None, now)
            .await
            .unwrap()
            .refused
            .is_none()
        {
            passed += 1;
        }
    }
    assert_eq!(passed, 4, "the burst is shared");

    let quota = Quota {
        max: 3,
        period: Duration::from_secs(3600),
    };
    let mut remaining = Vec::new();
    for i in 0..5 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let d = limiter.check("q", None, Some(&quota), now).await.unwrap();
        remaining.push((d.refused.is_some(), d.quota.unwrap().remaining));
    }
    assert_eq!(
        remaining,
        vec![(false, 2), (false, 1), (false, 0), (true, 0), (true, 0)]
    );
    // Refusals were not counted.
    let peek = b.peek("q", None, Some(&quota), now).await.unwrap();
    assert_eq!(peek.quota.unwrap().remaining, 0);
    let mut conn = server.connection().await;
    let used: i64 = redis::cmd("GET")
        .arg(format!("{}rl:{{q}}:quota", cfg.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(used, 3);
}

/// Parallel checks from two nodes never let more than the burst through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_respect_the_burst() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let a = Arc::new(limiter_of(&RedisStore::connect(&cfg).await.unwrap()));
    let b = Arc::new(limiter_of(&RedisStore::connect(&cfg).await.unwrap()));
    let rate = RateLimit {
        rate: 10,
        per: Duration::from_secs(3600),
        on_storage_error: OnStorageError::Deny,
        exact: false,
    };
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                limiter
                    .check("race", Some(&rate), None, 0)
                    .await
                    .unwrap()
                    .refused
                    .is_none()
            })
        })
        .collect();
    let mut passed = 0;
    for task in tasks {
        passed += usize::from(task.await.unwrap());
    }
    assert_eq!(passed, 10);
}

/// A corrupt record is reported as such, not as an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_records_are_corrupt() {
    let server = RedisServer::shared();
    let cfg = config(&server, TIMEOUT);
    let store = RedisStore::connect(&cfg).await.unwrap();
    let mut conn = server.connection().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}code:bad", cfg.key_prefix))
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        store.take_code("bad", t0()).await,
        Err(StoreError::Corrupt(_))
    ));
}
