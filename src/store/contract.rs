//! The contract every [`Store`] backend must pass: one `pub async fn` per behaviour.
//!
//! Run it against a backend with [`store_contract_tests!`] (one `#[tokio::test]` per behaviour, so a
//! failure names the behaviour) or with [`run_all`]:
//!
//! ```ignore
//! #[cfg(test)]
//! mod tests {
//!     crate::store::contract::store_contract_tests!(std::sync::Arc::new(MyStore::connect().await));
//! }
//! ```
//!
//! The factory expression is evaluated inside each (async) test, so it may `.await`.
//!
//! Conventions the suite relies on, and which every backend must therefore honour:
//!
//! * Expiry is judged against the `now` the caller passes (an entry is live while
//!   `now < expires_at`), not against the backend's own clock. A backend may also use its clock to
//!   *drop* data (Redis TTLs), but only after the data has expired by the caller's clock too. The suite
//!   uses the real current time as its base so that TTLs computed from the wall clock agree.
//! * Every function uses keys unique to its run (see `uniq`), so the suite may share one backend
//!   (e.g. one redis-server) between functions running in parallel and between test runs.
//! * Concurrency checks spawn tasks: run them on a multi-thread runtime, or they prove little.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Barrier;

use super::{
    Admission, Attempt, AuthCode, CodeTake, GrantKind, Guess, LoginSession, OidcGrant, PolicyWrite,
    RefreshToken, Release, Rotation, Session, StatelessCount, StatelessIssue, Store, StoredClient,
    StoredPolicy, StoredQuota, StoredRateLimit,
};

/// How many tasks race in the concurrency checks.
const RACERS: usize = 32;

/// The suite's clock: the real time, so backends that derive TTLs from the wall clock agree.
fn t0() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1_700_000_000)
}

/// A key no other function, parallel test or earlier run uses.
fn uniq(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{nanos}-{n}", std::process::id())
}

fn code(sid: &str, expires_at: u64) -> AuthCode {
    AuthCode {
        api_id: "api".into(),
        client_id: "client".into(),
        redirect_uri: "https://app.example/cb".into(),
        scope: "read write".into(),
        username: "alice".into(),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        sid: sid.into(),
        expires_at,
        oidc: None,
    }
}

fn session(sid: &str, api_id: &str, client_id: &str, created_at: u64, expires_at: u64) -> Session {
    Session {
        sid: sid.into(),
        api_id: api_id.into(),
        client_id: client_id.into(),
        username: Some("alice".into()),
        scope: "read write".into(),
        grant: GrantKind::AuthorizationCode,
        created_at,
        last_refresh_at: None,
        refresh_count: 0,
        expires_at,
        oidc: None,
    }
}

fn refresh(sid: &str, generation: u32, issued_at: u64, expires_at: Option<u64>) -> RefreshToken {
    RefreshToken {
        sid: sid.into(),
        api_id: "api".into(),
        client_id: "client".into(),
        username: Some("alice".into()),
        scope: "read write".into(),
        generation,
        issued_at,
        expires_at,
    }
}

fn client(api_id: &str, client_id: &str, scopes: &[&str]) -> StoredClient {
    StoredClient {
        api_id: api_id.into(),
        client_id: client_id.into(),
        secret_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into()),
        redirect_uris: vec!["https://app.example/cb".into()],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        policy: None,
        claims: [("tier".to_string(), serde_json::json!("gold"))]
            .into_iter()
            .collect(),
        created_at: 1_700_000_000,
    }
}

fn policy(id: &str, rate: u32) -> StoredPolicy {
    StoredPolicy {
        id: id.into(),
        rate_limit: Some(StoredRateLimit {
            rate,
            per_ms: 1_000,
            on_storage_error: "local".into(),
            exact: false,
        }),
        quota: Some(StoredQuota {
            max: 10_000,
            period_ms: 86_400_000,
        }),
        scopes: Some(vec!["read".into()]),
        access: vec!["movies".into(), "books".into()],
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
    }
}

/// A session with one live refresh token: (sid, token hash, session).
async fn session_with_token(store: &dyn Store, now: u64) -> (String, String, Session) {
    let sid = uniq("sid");
    let rt = uniq("rt");
    let s = session(&sid, "api", "client", now, now + 10_000);
    store.put_session(&s, 100).await.unwrap();
    store
        .put_refresh(&rt, &refresh(&sid, 0, now, Some(now + 5_000)))
        .await
        .unwrap();
    (sid, rt, s)
}

// ------------------------------------------------------------------------------------------------
// Authorization codes

/// A stored code is taken once, whole.
pub async fn code_take_once(store: Arc<dyn Store>) {
    let now = t0();
    let hash = uniq("code");
    let stored = code(&uniq("sid"), now + 60);
    store.put_code(&hash, &stored).await.unwrap();
    assert_eq!(
        store.take_code(&hash, now + 1).await.unwrap(),
        CodeTake::Fresh(stored)
    );
}

/// Every redemption after the first names the session the first one started.
pub async fn code_second_take_is_already_used(store: Arc<dyn Store>) {
    let now = t0();
    let hash = uniq("code");
    let sid = uniq("sid");
    store.put_code(&hash, &code(&sid, now + 60)).await.unwrap();
    assert!(matches!(
        store.take_code(&hash, now).await.unwrap(),
        CodeTake::Fresh(_)
    ));
    for later in [now + 1, now + 59] {
        assert_eq!(
            store.take_code(&hash, later).await.unwrap(),
            CodeTake::AlreadyUsed { sid: sid.clone() },
            "redemption at +{}",
            later - now
        );
    }
}

/// Unknown codes, codes taken at or after their expiry, and spent codes after their expiry are
/// `Unknown`.
pub async fn code_expired_or_unknown_is_unknown(store: Arc<dyn Store>) {
    let now = t0();
    assert_eq!(
        store.take_code(&uniq("never-stored"), now).await.unwrap(),
        CodeTake::Unknown
    );

    let expired = uniq("code");
    store
        .put_code(&expired, &code(&uniq("sid"), now + 60))
        .await
        .unwrap();
    assert_eq!(
        store.take_code(&expired, now + 60).await.unwrap(),
        CodeTake::Unknown
    );
    // An expired code stays unusable (it is not revived by being looked at).
    assert_eq!(
        store.take_code(&expired, now + 61).await.unwrap(),
        CodeTake::Unknown
    );

    let spent = uniq("code");
    store
        .put_code(&spent, &code(&uniq("sid"), now + 60))
        .await
        .unwrap();
    assert!(matches!(
        store.take_code(&spent, now).await.unwrap(),
        CodeTake::Fresh(_)
    ));
    assert_eq!(
        store.take_code(&spent, now + 60).await.unwrap(),
        CodeTake::Unknown
    );
}

/// Many simultaneous redemptions of one code: exactly one `Fresh`, all others `AlreadyUsed`.
pub async fn code_concurrent_takes_exactly_one_fresh(store: Arc<dyn Store>) {
    let now = t0();
    let hash = uniq("code");
    let sid = uniq("sid");
    store.put_code(&hash, &code(&sid, now + 60)).await.unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (store, hash, barrier) = (store.clone(), hash.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.take_code(&hash, now + 1).await.unwrap()
            })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        match task.await.unwrap() {
            CodeTake::Fresh(_) => fresh += 1,
            CodeTake::AlreadyUsed { sid: used } => assert_eq!(used, sid),
            CodeTake::Unknown => panic!("a racing redemption saw the code as unknown"),
        }
    }
    assert_eq!(fresh, 1, "exactly one redemption must win");
}

// ------------------------------------------------------------------------------------------------
// Refresh tokens

/// Rotation spends the old token, returns its record, and the successor works (and rotates in turn).
pub async fn refresh_rotation_issues_working_successor(store: Arc<dyn Store>) {
    let now = t0();
    let (sid, rt1, _) = session_with_token(&*store, now).await;
    let old = store
        .get_refresh(&rt1, now)
        .await
        .unwrap()
        .expect("rt1 live");
    let (rt2, rt2_record) = (uniq("rt"), refresh(&sid, 1, now + 10, Some(now + 5_010)));
    assert_eq!(
        store
            .rotate_refresh(&rt1, &rt2, &rt2_record, now + 10)
            .await
            .unwrap(),
        Rotation::Rotated(old)
    );
    assert_eq!(
        store.get_refresh(&rt2, now + 11).await.unwrap(),
        Some(rt2_record.clone())
    );
    let rt3 = uniq("rt");
    assert_eq!(
        store
            .rotate_refresh(&rt2, &rt3, &refresh(&sid, 2, now + 20, None), now + 20)
            .await
            .unwrap(),
        Rotation::Rotated(rt2_record)
    );
    assert!(!store.is_revoked(&sid, "", now + 20));
}

/// Presenting a rotated token again is reuse: `Reused{sid}`, the session is revoked (its successor
/// token too), for as long as the session's tokens can live.
pub async fn refresh_reuse_revokes_session(store: Arc<dyn Store>) {
    let now = t0();
    let (sid, rt1, _) = session_with_token(&*store, now).await;
    let rt2 = uniq("rt");
    let rotated = store
        .rotate_refresh(
            &rt1,
            &rt2,
            &refresh(&sid, 1, now + 10, Some(now + 5_010)),
            now + 10,
        )
        .await
        .unwrap();
    assert!(matches!(rotated, Rotation::Rotated(_)));
    let session_expiry = store
        .get_session(&sid)
        .await
        .unwrap()
        .expect("session stored")
        .expires_at;

    let attacker = uniq("rt");
    assert_eq!(
        store
            .rotate_refresh(&rt1, &attacker, &refresh(&sid, 1, now + 20, None), now + 20)
            .await
            .unwrap(),
        Rotation::Reused { sid: sid.clone() }
    );
    assert_eq!(store.get_refresh(&attacker, now + 20).await.unwrap(), None);
    assert_eq!(store.get_refresh(&rt2, now + 20).await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh(
                &rt2,
                &uniq("rt"),
                &refresh(&sid, 2, now + 21, None),
                now + 21
            )
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert!(store.is_revoked(&sid, "", now + 21));
    assert!(store.is_revoked(&sid, "some-jti", now + 21));
    // Access tokens of the session live until the session's expiry at most; revoked that long.
    assert!(store.is_revoked(&sid, "", session_expiry - 1));
    // A replay of the spent token keeps being reported as reuse.
    assert_eq!(
        store
            .rotate_refresh(
                &rt1,
                &uniq("rt"),
                &refresh(&sid, 1, now + 30, None),
                now + 30
            )
            .await
            .unwrap(),
        Rotation::Reused { sid: sid.clone() }
    );
    assert!(
        store
            .client_sessions("api", "client", now + 30)
            .await
            .unwrap()
            .iter()
            .all(|s| s.sid != sid)
    );
}

/// Many simultaneous rotations of one token: exactly one `Rotated`; every other one is reuse.
pub async fn refresh_concurrent_rotations_exactly_one(store: Arc<dyn Store>) {
    let now = t0();
    let (sid, rt1, _) = session_with_token(&*store, now).await;
    let barrier = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (store, rt1, barrier) = (store.clone(), rt1.clone(), barrier.clone());
            let new_hash = uniq(&format!("rt-racer{i}"));
            let new = refresh(&sid, 1, now + 1, Some(now + 5_001));
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .rotate_refresh(&rt1, &new_hash, &new, now + 1)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut rotated = 0;
    for task in tasks {
        match task.await.unwrap() {
            Rotation::Rotated(_) => rotated += 1,
            Rotation::Reused { sid: reused } => assert_eq!(reused, sid),
            Rotation::Invalid => panic!("a racing rotation saw the token as invalid, not reused"),
        }
    }
    assert_eq!(rotated, 1, "exactly one rotation must win");
    // The losers presented a spent token: the session is revoked.
    assert!(store.is_revoked(&sid, "", now + 2));
}

/// After the session is revoked its refresh tokens are dead: not returned, not rotatable, and a
/// failed rotation stores nothing.
pub async fn refresh_rotate_after_revoke_is_invalid(store: Arc<dyn Store>) {
    let now = t0();
    let (sid, rt1, _) = session_with_token(&*store, now).await;
    store.revoke_session(&sid, now + 10_000).await.unwrap();
    assert_eq!(store.get_refresh(&rt1, now + 1).await.unwrap(), None);
    let rt2 = uniq("rt");
    assert_eq!(
        store
            .rotate_refresh(&rt1, &rt2, &refresh(&sid, 1, now + 1, None), now + 1)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert_eq!(store.get_refresh(&rt2, now + 1).await.unwrap(), None);
    assert_eq!(store.get_session(&sid).await.unwrap(), None);
}

/// A token stored for a session that was already revoked (an exchange racing a revocation) is dead
/// on arrival: no token may survive a revocation.
pub async fn refresh_put_after_revoke_is_dead(store: Arc<dyn Store>) {
    let now = t0();
    let sid = uniq("sid");
    store.revoke_session(&sid, now + 10_000).await.unwrap();
    let rt = uniq("rt");
    store
        .put_refresh(&rt, &refresh(&sid, 0, now, None))
        .await
        .unwrap();
    assert_eq!(store.get_refresh(&rt, now + 1).await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh(&rt, &uniq("rt"), &refresh(&sid, 1, now + 1, None), now + 1)
            .await
            .unwrap(),
        Rotation::Invalid
    );
}

/// A token is live while `now < expires_at`; at and after its expiry it neither reads nor rotates,
/// and the failed rotation neither stores the successor nor counts as a spend (no later `Reused`).
pub async fn refresh_rotate_after_expiry_is_invalid(store: Arc<dyn Store>) {
    let now = t0();
    let sid = uniq("sid");
    let rt = uniq("rt");
    let record = refresh(&sid, 0, now, Some(now + 100));
    store
        .put_session(&session(&sid, "api", "client", now, now + 1_000), 100)
        .await
        .unwrap();
    store.put_refresh(&rt, &record).await.unwrap();
    assert_eq!(
        store.get_refresh(&rt, now + 99).await.unwrap(),
        Some(record)
    );
    assert_eq!(store.get_refresh(&rt, now + 100).await.unwrap(), None);
    let next = uniq("rt");
    assert_eq!(
        store
            .rotate_refresh(&rt, &next, &refresh(&sid, 1, now + 100, None), now + 100)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert_eq!(store.get_refresh(&next, now + 100).await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh(
                &rt,
                &uniq("rt"),
                &refresh(&sid, 1, now + 101, None),
                now + 101
            )
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert!(!store.is_revoked(&sid, "", now + 101));
}

/// Rotating a token never stored is `Invalid` and stores nothing (the token endpoint probes unknown
/// tokens this way to tell reuse from garbage).
pub async fn refresh_rotate_unknown_is_invalid(store: Arc<dyn Store>) {
    let now = t0();
    let new_hash = uniq("rt");
    assert_eq!(
        store
            .rotate_refresh(&uniq("rt"), &new_hash, &refresh("", 0, now, Some(now)), now)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert_eq!(store.get_refresh(&new_hash, now).await.unwrap(), None);
}

/// A rotated token is no longer a token: `get_refresh` does not return it.
pub async fn refresh_get_of_rotated_is_none(store: Arc<dyn Store>) {
    let now = t0();
    let (sid, rt1, _) = session_with_token(&*store, now).await;
    let rt2 = uniq("rt");
    store
        .rotate_refresh(&rt1, &rt2, &refresh(&sid, 1, now + 1, None), now + 1)
        .await
        .unwrap();
    assert_eq!(store.get_refresh(&rt1, now + 2).await.unwrap(), None);
    assert!(store.get_refresh(&rt2, now + 2).await.unwrap().is_some());
}

/// A rotation racing a revocation of its session: whichever wins, no token of the session survives.
pub async fn refresh_revoke_racing_rotation_leaves_no_token(store: Arc<dyn Store>) {
    let now = t0();
    for round in 0..64 {
        let (sid, rt1, _) = session_with_token(&*store, now).await;
        let rt2 = uniq("rt");
        let barrier = Arc::new(Barrier::new(2));
        let rotate = {
            let (store, barrier, rt1, rt2) =
                (store.clone(), barrier.clone(), rt1.clone(), rt2.clone());
            let new = refresh(&sid, 1, now + 1, None);
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .rotate_refresh(&rt1, &rt2, &new, now + 1)
                    .await
                    .unwrap()
            })
        };
        let revoke = {
            let (store, barrier, sid) = (store.clone(), barrier.clone(), sid.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.revoke_session(&sid, now + 10_000).await.unwrap();
            })
        };
        let rotation = rotate.await.unwrap();
        revoke.await.unwrap();
        assert!(
            matches!(rotation, Rotation::Rotated(_) | Rotation::Invalid),
            "round {round}: {rotation:?}"
        );
        for hash in [&rt1, &rt2] {
            assert_eq!(
                store.get_refresh(hash, now + 2).await.unwrap(),
                None,
                "round {round}: a token survived the revocation"
            );
        }
        let rt3 = uniq("rt");
        assert_eq!(
            store
                .rotate_refresh(&rt2, &rt3, &refresh(&sid, 2, now + 2, None), now + 2)
                .await
                .unwrap(),
            Rotation::Invalid,
            "round {round}: the successor still rotates"
        );
        assert_eq!(store.get_refresh(&rt3, now + 2).await.unwrap(), None);
        assert!(store.is_revoked(&sid, "", now + 2));
    }
}

// ------------------------------------------------------------------------------------------------
// Sessions

/// Sessions are stored whole, replaced by a later put, and unknown sids are `None`.
pub async fn session_put_get(store: Arc<dyn Store>) {
    let now = t0();
    let sid = uniq("sid");
    assert_eq!(store.get_session(&sid).await.unwrap(), None);
    let mut s = session(&sid, "api", "client", now, now + 3_600);
    store.put_session(&s, 100).await.unwrap();
    assert_eq!(store.get_session(&sid).await.unwrap(), Some(s.clone()));
    s.scope = "read".into();
    s.username = None;
    s.grant = GrantKind::ClientCredentials;
    store.put_session(&s, 100).await.unwrap();
    assert_eq!(store.get_session(&sid).await.unwrap(), Some(s));
}

/// A rotation counts on its session: `refresh_count` + 1, `last_refresh_at` = now, and the session's
/// expiry never shrinks and covers the new token.
pub async fn session_rotation_bumps_refresh_count(store: Arc<dyn Store>) {
    let now = t0();
    let (sid, rt1, before) = session_with_token(&*store, now).await;
    let rt2 = uniq("rt");
    let new = refresh(&sid, 1, now + 100, Some(now + 100 + 20_000));
    assert!(matches!(
        store
            .rotate_refresh(&rt1, &rt2, &new, now + 100)
            .await
            .unwrap(),
        Rotation::Rotated(_)
    ));
    let after = store
        .get_session(&sid)
        .await
        .unwrap()
        .expect("session kept");
    assert_eq!(after.refresh_count, before.refresh_count + 1);
    assert_eq!(after.last_refresh_at, Some(now + 100));
    assert!(after.expires_at >= before.expires_at);
    assert!(after.expires_at >= now + 100 + 20_000);
    assert_eq!(
        (after.sid, after.api_id, after.client_id, after.created_at),
        (
            before.sid,
            before.api_id,
            before.client_id,
            before.created_at
        )
    );
    store
        .rotate_refresh(
            &rt2,
            &uniq("rt"),
            &refresh(&sid, 2, now + 200, None),
            now + 200,
        )
        .await
        .unwrap();
    let again = store
        .get_session(&sid)
        .await
        .unwrap()
        .expect("session kept");
    assert_eq!(again.refresh_count, before.refresh_count + 2);
    assert_eq!(again.last_refresh_at, Some(now + 200));
}

/// `client_sessions` lists the live sessions of exactly one client of one API.
pub async fn client_sessions_lists_live_only(store: Arc<dyn Store>) {
    let now = t0();
    let api = uniq("api");
    let other_api = uniq("api");
    let live_a = session(&uniq("sid"), &api, "app", now, now + 1_000);
    let live_b = session(&uniq("sid"), &api, "app", now + 1, now + 2_000);
    let expired = session(&uniq("sid"), &api, "app", now - 100, now);
    let revoked = session(&uniq("sid"), &api, "app", now, now + 1_000);
    let other_client = session(&uniq("sid"), &api, "other", now, now + 1_000);
    let same_client_other_api = session(&uniq("sid"), &other_api, "app", now, now + 1_000);
    for s in [
        &live_a,
        &live_b,
        &expired,
        &revoked,
        &other_client,
        &same_client_other_api,
    ] {
        store.put_session(s, 100).await.unwrap();
    }
    store
        .revoke_session(&revoked.sid, now + 1_000)
        .await
        .unwrap();

    let mut listed = store.client_sessions(&api, "app", now).await.unwrap();
    listed.sort_by(|a, b| a.sid.cmp(&b.sid));
    let mut expected = vec![live_a.clone(), live_b.clone()];
    expected.sort_by(|a, b| a.sid.cmp(&b.sid));
    assert_eq!(listed, expected);

    // Later, the first one has expired too.
    let later = store
        .client_sessions(&api, "app", now + 1_000)
        .await
        .unwrap();
    assert_eq!(later, vec![live_b]);
    assert_eq!(
        store.client_sessions(&api, "nobody", now).await.unwrap(),
        Vec::<Session>::new()
    );
}

// ------------------------------------------------------------------------------------------------
// Revocation

/// A revoked session is reported (whatever the jti) while `now < until`, then no longer.
pub async fn revoke_session_until(store: Arc<dyn Store>) {
    let now = t0();
    let sid = uniq("sid");
    assert!(!store.is_revoked(&sid, "", now));
    store.revoke_session(&sid, now + 100).await.unwrap();
    assert!(store.is_revoked(&sid, "", now));
    assert!(store.is_revoked(&sid, &uniq("jti"), now + 99));
    assert!(!store.is_revoked(&sid, "", now + 100));
    assert!(!store.is_revoked(&uniq("sid"), "", now));
}

/// A revoked access token is reported (whatever the sid) while `now < until`, then no longer.
pub async fn revoke_jti_until(store: Arc<dyn Store>) {
    let now = t0();
    let jti = uniq("jti");
    assert!(!store.is_revoked("any-sid", &jti, now));
    store.revoke_jti(&jti, now + 100).await.unwrap();
    assert!(store.is_revoked("any-sid", &jti, now));
    assert!(store.is_revoked(&uniq("sid"), &jti, now + 99));
    assert!(!store.is_revoked("any-sid", &jti, now + 100));
    assert!(!store.is_revoked("any-sid", &uniq("jti"), now));
}

/// A per-client cutoff revokes the client's tokens issued up to it while `now < until`; a later
/// cutoff moves it forward, an earlier one never moves it back; other clients and APIs are untouched.
pub async fn client_cutoff_until_and_never_back(store: Arc<dyn Store>) {
    let now = t0();
    let api = uniq("api");
    assert_eq!(store.client_cutoff(&api, "c", now), None);
    store
        .revoke_client_tokens(&api, "c", now, now + 100)
        .await
        .unwrap();
    assert_eq!(store.client_cutoff(&api, "c", now), Some(now));
    assert_eq!(store.client_cutoff(&api, "c", now + 99), Some(now));
    assert_eq!(store.client_cutoff(&api, "c", now + 100), None);
    assert_eq!(store.client_cutoff(&api, "other", now), None);
    assert_eq!(store.client_cutoff(&uniq("api"), "c", now), None);
    // An earlier, shorter one changes nothing; a later one moves the cutoff forward.
    store
        .revoke_client_tokens(&api, "c", now - 50, now + 10)
        .await
        .unwrap();
    assert_eq!(store.client_cutoff(&api, "c", now + 99), Some(now));
    store
        .revoke_client_tokens(&api, "c", now + 5, now + 200)
        .await
        .unwrap();
    assert_eq!(store.client_cutoff(&api, "c", now + 150), Some(now + 5));
}

/// `access_revoked` is the one check the proxy path makes: it sees a revoked session, a revoked token
/// and a client-wide cutoff (tokens issued up to it), each only while it lasts, and nothing else.
pub async fn access_revoked_sees_sessions_tokens_and_cutoffs(store: Arc<dyn Store>) {
    let now = t0();
    let api = uniq("api");
    let token = |sid: &str, jti: &str, client: &str, iat: u64| crate::token::AccessClaims {
        iss: "https://gw".into(),
        sub: "alice".into(),
        aud: api.clone(),
        client_id: client.into(),
        scope: String::new(),
        exp: now + 600,
        iat,
        nbf: iat,
        jti: jti.into(),
        sid: sid.into(),
        extra: Default::default(),
    };
    let (sid, jti) = (uniq("sid"), uniq("jti"));
    let fresh = token(&uniq("sid"), &uniq("jti"), "c", now);
    assert!(!store.access_revoked(&fresh, now));

    store.revoke_session(&sid, now + 100).await.unwrap();
    assert!(store.access_revoked(&token(&sid, &uniq("jti"), "c", now), now));
    assert!(!store.access_revoked(&token(&sid, &uniq("jti"), "c", now), now + 100));

    store.revoke_jti(&jti, now + 100).await.unwrap();
    assert!(store.access_revoked(&token(&uniq("sid"), &jti, "c", now), now + 99));
    assert!(!store.access_revoked(&token(&uniq("sid"), &jti, "c", now), now + 100));

    store
        .revoke_client_tokens(&api, "c", now, now + 100)
        .await
        .unwrap();
    assert!(store.access_revoked(&token(&uniq("sid"), &uniq("jti"), "c", now), now));
    // Issued after the cutoff, by another client, or checked after the cutoff ended: not revoked.
    assert!(!store.access_revoked(&token(&uniq("sid"), &uniq("jti"), "c", now + 1), now + 1));
    assert!(!store.access_revoked(&token(&uniq("sid"), &uniq("jti"), "other", now), now));
    assert!(!store.access_revoked(&token(&uniq("sid"), &uniq("jti"), "c", now), now + 100));
}

/// Stateless tokens are counted per client; deleting a dynamic client forgets its count.
pub async fn stateless_tokens_are_counted_per_client(store: Arc<dyn Store>) {
    let now = t0();
    let api = uniq("api");
    assert_eq!(
        store.stateless_count(&api, "c").await.unwrap(),
        StatelessCount::default()
    );
    for i in 0..3 {
        store.count_stateless(&api, "c", now + i).await.unwrap();
    }
    store.count_stateless(&api, "d", now).await.unwrap();
    let count = store.stateless_count(&api, "c").await.unwrap();
    assert_eq!(count.issued, 3);
    assert_eq!(count.last_issued_at, Some(now + 2));
    assert_eq!(store.stateless_count(&api, "d").await.unwrap().issued, 1);
    store
        .put_client(&client(&api, "c", &["read"]))
        .await
        .unwrap();
    assert!(store.delete_client(&api, "c").await.unwrap());
    assert_eq!(store.stateless_count(&api, "c").await.unwrap().issued, 0);
    assert_eq!(store.stateless_count(&api, "d").await.unwrap().issued, 1);
}

/// Beyond `max_per_user` live sessions of one (API, client, user), storing a session ends the oldest:
/// revoked, its refresh tokens dead, its record gone. Sessions that ended otherwise do not count, and
/// other users, clients and sessions without a user are not capped.
pub async fn sessions_per_user_are_capped(store: Arc<dyn Store>) {
    let now = t0();
    let api = uniq("api");
    let user_session = |sid: &str, user: &str| {
        let mut s = session(sid, &api, "client", now, now + 1_000);
        s.username = Some(user.to_string());
        s
    };
    let sids: Vec<String> = (0..4).map(|i| uniq(&format!("s{i}"))).collect();
    let first_refresh = uniq("rt");
    for sid in &sids[..2] {
        let ended = store
            .put_session(&user_session(sid, "alice"), 2)
            .await
            .unwrap();
        assert_eq!(ended, Vec::<String>::new());
    }
    store
        .put_refresh(
            &first_refresh,
            &refresh(&sids[0], 0, now, Some(now + 1_000)),
        )
        .await
        .unwrap();
    // Bob, another client and a client_credentials session are counted apart.
    let bob = uniq("bob");
    assert!(
        store
            .put_session(&user_session(&bob, "bob"), 2)
            .await
            .unwrap()
            .is_empty()
    );
    let mut elsewhere = user_session(&uniq("other-client"), "alice");
    elsewhere.client_id = "other".into();
    assert!(store.put_session(&elsewhere, 2).await.unwrap().is_empty());

    let ended = store
        .put_session(&user_session(&sids[2], "alice"), 2)
        .await
        .unwrap();
    assert_eq!(ended, vec![sids[0].clone()]);
    assert!(store.is_revoked(&sids[0], "", now));
    assert_eq!(store.get_session(&sids[0]).await.unwrap(), None);
    assert_eq!(store.get_refresh(&first_refresh, now).await.unwrap(), None);
    assert!(!store.is_revoked(&sids[1], "", now));
    assert!(!store.is_revoked(&bob, "", now));

    // A session revoked some other way frees its place.
    store.revoke_session(&sids[1], now + 1_000).await.unwrap();
    let ended = store
        .put_session(&user_session(&sids[3], "alice"), 2)
        .await
        .unwrap();
    assert_eq!(ended, Vec::<String>::new());
    let live: Vec<String> = store
        .client_sessions(&api, "client", now)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.sid)
        .collect();
    assert_eq!(live.len(), 3, "{live:?}");
    for sid in [&sids[2], &sids[3], &bob] {
        assert!(live.contains(sid), "{sid} in {live:?}");
    }
}

/// Many parallel sign-ins of one user never leave more than the cap alive.
pub async fn sessions_per_user_cap_holds_under_concurrency(store: Arc<dyn Store>) {
    let now = t0();
    let api = uniq("api");
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let store = store.clone();
        let mut s = session(&uniq(&format!("race{i}")), &api, "client", now, now + 1_000);
        s.username = Some("alice".into());
        tasks.push(tokio::spawn(async move {
            store.put_session(&s, 3).await.unwrap().len()
        }));
    }
    let mut ended = 0;
    for task in tasks {
        ended += task.await.unwrap();
    }
    assert_eq!(ended, RACERS - 3);
    let live = store.client_sessions(&api, "client", now).await.unwrap();
    assert_eq!(live.len(), 3, "{live:?}");
}

// ------------------------------------------------------------------------------------------------
// Dynamic clients

/// Create, read, replace, list, delete.
pub async fn clients_crud(store: Arc<dyn Store>) {
    let api = uniq("api");
    assert_eq!(store.get_client(&api, "c1").await.unwrap(), None);
    assert_eq!(store.list_clients(&api).await.unwrap(), vec![]);

    let c1 = client(&api, "c1", &["read"]);
    let c2 = client(&api, "c2", &["read", "write"]);
    store.put_client(&c1).await.unwrap();
    store.put_client(&c2).await.unwrap();
    assert_eq!(
        store.get_client(&api, "c1").await.unwrap(),
        Some(c1.clone())
    );

    let mut c1_replaced = c1.clone();
    c1_replaced.scopes = vec!["admin".into()];
    c1_replaced.secret_hash = None;
    store.put_client(&c1_replaced).await.unwrap();
    assert_eq!(
        store.get_client(&api, "c1").await.unwrap(),
        Some(c1_replaced.clone())
    );

    let mut listed = store.list_clients(&api).await.unwrap();
    listed.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    assert_eq!(listed, vec![c1_replaced, c2.clone()]);

    assert!(store.delete_client(&api, "c1").await.unwrap());
    assert!(!store.delete_client(&api, "c1").await.unwrap());
    assert_eq!(store.get_client(&api, "c1").await.unwrap(), None);
    assert_eq!(store.list_clients(&api).await.unwrap(), vec![c2]);
    assert!(!store.delete_client(&api, "never-existed").await.unwrap());
}

/// The same client_id in two APIs is two independent clients.
pub async fn clients_isolated_per_api(store: Arc<dyn Store>) {
    let (api1, api2) = (uniq("api"), uniq("api"));
    let in_api1 = client(&api1, "shared", &["read"]);
    let in_api2 = client(&api2, "shared", &["write"]);
    store.put_client(&in_api1).await.unwrap();
    store.put_client(&in_api2).await.unwrap();
    assert_eq!(
        store.get_client(&api1, "shared").await.unwrap(),
        Some(in_api1.clone())
    );
    assert_eq!(
        store.get_client(&api2, "shared").await.unwrap(),
        Some(in_api2.clone())
    );
    assert_eq!(store.list_clients(&api1).await.unwrap(), vec![in_api1]);

    assert!(store.delete_client(&api1, "shared").await.unwrap());
    assert_eq!(store.get_client(&api1, "shared").await.unwrap(), None);
    assert_eq!(
        store.get_client(&api2, "shared").await.unwrap(),
        Some(in_api2.clone())
    );
    assert_eq!(store.list_clients(&api2).await.unwrap(), vec![in_api2]);
}

// ------------------------------------------------------------------------------------------------
// Policies

/// Create refuses an existing id, replace an unknown one; get, list and delete see every change.
pub async fn policies_crud(store: Arc<dyn Store>) {
    let id = uniq("gold");
    assert_eq!(store.get_policy(&id).await.unwrap(), None);
    let replaced = policy(&id, 10);
    assert!(
        !store
            .put_policy(&replaced, PolicyWrite::Replace)
            .await
            .unwrap(),
        "replace of an unknown id writes nothing"
    );
    assert_eq!(store.get_policy(&id).await.unwrap(), None);

    let created = policy(&id, 10);
    assert!(
        store
            .put_policy(&created, PolicyWrite::Create)
            .await
            .unwrap()
    );
    assert_eq!(store.get_policy(&id).await.unwrap(), Some(created.clone()));
    let mut second = policy(&id, 99);
    second.scopes = None;
    assert!(
        !store
            .put_policy(&second, PolicyWrite::Create)
            .await
            .unwrap(),
        "create of an existing id writes nothing"
    );
    assert_eq!(store.get_policy(&id).await.unwrap(), Some(created.clone()));

    let mut raised = created.clone();
    raised.rate_limit = Some(StoredRateLimit {
        rate: 500,
        per_ms: 250,
        on_storage_error: "deny".into(),
        exact: false,
    });
    raised.quota = None;
    raised.access = vec![];
    raised.updated_at += 60;
    assert!(
        store
            .put_policy(&raised, PolicyWrite::Replace)
            .await
            .unwrap()
    );
    assert_eq!(store.get_policy(&id).await.unwrap(), Some(raised.clone()));

    let listed = store.list_policies().await.unwrap();
    assert_eq!(listed.iter().filter(|p| p.id == id).count(), 1);
    assert!(listed.contains(&raised));
    assert!(listed.windows(2).all(|w| w[0].id < w[1].id), "sorted by id");

    assert!(store.delete_policy(&id).await.unwrap());
    assert_eq!(store.get_policy(&id).await.unwrap(), None);
    assert!(!store.delete_policy(&id).await.unwrap());
    assert!(
        !store
            .list_policies()
            .await
            .unwrap()
            .iter()
            .any(|p| p.id == id)
    );
}

/// Of many concurrent creates of one id, exactly one succeeds.
pub async fn policies_concurrent_create_exactly_one(store: Arc<dyn Store>) {
    let id = uniq("race");
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, barrier, id) = (store.clone(), barrier.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mine = policy(&id, u32::try_from(i).unwrap() + 1);
            let won = store.put_policy(&mine, PolicyWrite::Create).await.unwrap();
            (won, mine)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (won, mine) = task.await.unwrap();
        if won {
            winners.push(mine);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins");
    assert_eq!(store.get_policy(&id).await.unwrap(), winners.pop());
}

/// This node's own writes move the policy epoch at once, so a cache keyed by it is never stale here;
/// reads and refused writes need not.
pub async fn policies_epoch_moves_on_every_write(store: Arc<dyn Store>) {
    let id = uniq("epoch");
    let epoch = || {
        store
            .policy_epoch()
            .expect("a healthy store knows its policy epoch")
    };
    let before_create = epoch();
    store
        .put_policy(&policy(&id, 1), PolicyWrite::Create)
        .await
        .unwrap();
    let after_create = epoch();
    assert_ne!(after_create, before_create, "create");
    store
        .put_policy(&policy(&id, 2), PolicyWrite::Replace)
        .await
        .unwrap();
    let after_replace = epoch();
    assert_ne!(after_replace, after_create, "replace");
    store.delete_policy(&id).await.unwrap();
    assert_ne!(epoch(), after_replace, "delete");
}

// ------------------------------------------------------------------------------------------------
// Guessing throttles

/// A guess at `subject` from `address`, in a scope no other run uses.
fn guess<'a>(scope: &'a str, address: &'a str, subject: &'a str) -> Guess<'a> {
    Guess {
        scope,
        address,
        subject,
    }
}

async fn reserve(store: &Arc<dyn Store>, g: &Guess<'_>, limit: u32, now: u64) -> Attempt {
    store.reserve_attempt(g, limit, 60, now).await.unwrap()
}

/// Attempts are reserved up to the limit; then refused (counting nothing) until the window, which
/// starts at the first attempt, is over; the refusal says how long that is.
pub async fn attempts_reserved_up_to_the_limit_per_window(store: Arc<dyn Store>) {
    let now = t0();
    let scope = uniq("login:api");
    let alice = guess(&scope, "10.0.0.1", "alice");
    for i in 0..3 {
        assert_eq!(reserve(&store, &alice, 3, now + i).await, Attempt::Reserved);
    }
    assert_eq!(
        reserve(&store, &alice, 3, now + 10).await,
        Attempt::Throttled {
            retry_after_secs: 50
        }
    );
    assert_eq!(
        reserve(&store, &alice, 3, now + 59).await,
        Attempt::Throttled {
            retry_after_secs: 1
        }
    );
    // The window began with the first attempt, not the latest one.
    assert_eq!(
        reserve(&store, &alice, 3, now + 60).await,
        Attempt::Reserved
    );
    assert_eq!(
        reserve(&store, &alice, 3, now + 61).await,
        Attempt::Reserved
    );
}

/// The per-address counter covers every subject from that address; the per-subject counter is per
/// address, so the same subject from elsewhere is untouched.
pub async fn attempts_count_per_address_and_per_subject_and_address(store: Arc<dyn Store>) {
    let now = t0();
    let scope = uniq("client:api");
    for subject in ["a", "b", "c"] {
        let g = guess(&scope, "10.0.0.1", subject);
        assert_eq!(reserve(&store, &g, 3, now).await, Attempt::Reserved);
    }
    // The address is used up, for a fresh subject too.
    let d = guess(&scope, "10.0.0.1", "d");
    assert!(matches!(
        reserve(&store, &d, 3, now).await,
        Attempt::Throttled { .. }
    ));
    // Another address, and the same subjects: fine.
    for subject in ["a", "b", "c", "d"] {
        let g = guess(&scope, "10.0.0.2", subject);
        assert_eq!(reserve(&store, &g, 4, now).await, Attempt::Reserved);
    }
    // A subject at its limit from one address does not spend the address's other subjects.
    let other_scope = uniq("login:api");
    let x = guess(&other_scope, "10.0.0.3", "x");
    assert_eq!(reserve(&store, &x, 1, now).await, Attempt::Reserved);
    assert!(matches!(
        reserve(&store, &x, 1, now).await,
        Attempt::Throttled { .. }
    ));
}

/// Parallel reservations never exceed the limit: the check and the count are one step.
pub async fn attempts_parallel_reservations_never_exceed_the_limit(store: Arc<dyn Store>) {
    let now = t0();
    let scope = Arc::new(uniq("login:api"));
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let (store, scope, barrier) = (store.clone(), scope.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let g = guess(&scope, "10.0.0.9", "alice");
            store.reserve_attempt(&g, 5, 60, now).await.unwrap()
        }));
    }
    let mut reserved = 0;
    for task in tasks {
        if task.await.unwrap() == Attempt::Reserved {
            reserved += 1;
        }
    }
    assert_eq!(
        reserved, 5,
        "{RACERS} parallel reservations with a limit of 5"
    );
}

/// A success forgets the subject's count at that address and gives the address its attempt back;
/// an attempt that was never evaluated gives both back; nothing changes after the window.
pub async fn attempts_release(store: Arc<dyn Store>) {
    let now = t0();
    let scope = uniq("login:api");
    let alice = guess(&scope, "10.0.0.1", "alice");
    let bob = guess(&scope, "10.0.0.1", "bob");
    // alice: 2 attempts; bob: 1; the address: 3 of 4.
    reserve(&store, &alice, 4, now).await;
    reserve(&store, &alice, 4, now).await;
    reserve(&store, &bob, 4, now).await;
    // bob's attempt succeeded: the address is back at 2, bob at 0.
    store
        .release_attempt(&bob, Release::Success, now)
        .await
        .unwrap();
    // alice's second was never evaluated: alice back at 1, the address at 1.
    store
        .release_attempt(&alice, Release::NotEvaluated, now)
        .await
        .unwrap();
    // So alice has 1 more before her limit of 2, and the address 3 before its limit of 4.
    assert_eq!(reserve(&store, &alice, 2, now + 1).await, Attempt::Reserved);
    assert!(matches!(
        reserve(&store, &alice, 2, now + 1).await,
        Attempt::Throttled { .. }
    ));
    assert_eq!(reserve(&store, &bob, 4, now + 1).await, Attempt::Reserved);
    assert_eq!(reserve(&store, &bob, 4, now + 1).await, Attempt::Reserved);
    assert!(matches!(
        reserve(&store, &bob, 4, now + 1).await,
        Attempt::Throttled { .. }
    ));
    // Releasing after the window changes nothing, and releasing what was never reserved is fine.
    store
        .release_attempt(&alice, Release::NotEvaluated, now + 61)
        .await
        .unwrap();
    let nobody = guess(&scope, "10.0.0.5", "nobody");
    store
        .release_attempt(&nobody, Release::NotEvaluated, now)
        .await
        .unwrap();
    store
        .release_attempt(&nobody, Release::Success, now)
        .await
        .unwrap();
    assert_eq!(reserve(&store, &nobody, 1, now).await, Attempt::Reserved);
}

/// `admit_attempt` with the suite's window (60 s).
async fn admit(
    store: &Arc<dyn Store>,
    g: &Guess<'_>,
    limit: u32,
    now: u64,
    issued: Option<StatelessIssue<'_>>,
) -> Admission {
    store
        .admit_attempt(g, limit, 60, now, issued)
        .await
        .unwrap()
}

/// An admission is refused exactly when a reservation would be (a full counter per address, or per
/// subject and address, in its window), with the same wait; a refusal counts nothing: neither an
/// attempt nor the token.
pub async fn attempts_admitted_unless_a_reservation_would_be_refused(store: Arc<dyn Store>) {
    let now = t0();
    let scope = uniq("client:api");
    let api = uniq("api");
    let issued = |client_id| {
        Some(StatelessIssue {
            api_id: &api,
            client_id,
            issued_at: now + 10,
        })
    };
    // alice at 10.0.0.1 is at her limit of 2 (the address at 2 of 3).
    let alice = guess(&scope, "10.0.0.1", "alice");
    reserve(&store, &alice, 3, now).await;
    reserve(&store, &alice, 2, now).await;
    assert_eq!(
        admit(&store, &alice, 2, now + 10, issued("alice")).await,
        Admission::Throttled {
            retry_after_secs: 50
        }
    );
    // A reservation gets the same answer: the refused admission counted nothing.
    assert_eq!(
        reserve(&store, &alice, 2, now + 10).await,
        Attempt::Throttled {
            retry_after_secs: 50
        }
    );
    // The address is full for every subject, one never seen before too.
    let bob = guess(&scope, "10.0.0.1", "bob");
    reserve(&store, &bob, 3, now + 5).await;
    assert_eq!(
        admit(&store, &bob, 3, now + 20, issued("bob")).await,
        Admission::Throttled {
            retry_after_secs: 40
        }
    );
    let carol = guess(&scope, "10.0.0.1", "carol");
    assert_eq!(
        admit(&store, &carol, 3, now + 20, issued("carol")).await,
        Admission::Throttled {
            retry_after_secs: 40
        }
    );
    for client_id in ["alice", "bob", "carol"] {
        assert_eq!(
            store.stateless_count(&api, client_id).await.unwrap(),
            StatelessCount::default(),
            "{client_id}: a refused admission counts no token"
        );
    }
    // alice from another address, and everyone once the window is over: admitted.
    let elsewhere = guess(&scope, "10.0.0.2", "alice");
    assert_eq!(
        admit(&store, &elsewhere, 2, now + 20, None).await,
        Admission::Admitted
    );
    assert_eq!(
        admit(&store, &alice, 2, now + 60, None).await,
        Admission::Admitted
    );
}

/// An admitted attempt leaves both counters as a reservation released as a success does: the
/// address's count as it was (a new window, with nothing in it, when none was live), the subject's
/// counter forgotten. Checked by running the same story through both in two scopes and probing both
/// alike.
pub async fn attempts_admitted_leave_the_counters_as_a_released_success(store: Arc<dyn Store>) {
    let now = t0();
    let mut answers: Vec<Vec<Attempt>> = Vec::new();
    for admitted in [false, true] {
        let scope = uniq("client:api");
        let success = async |g: &Guess<'_>, at: u64| {
            if admitted {
                assert_eq!(admit(&store, g, 5, at, None).await, Admission::Admitted);
            } else {
                assert_eq!(reserve(&store, g, 5, at).await, Attempt::Reserved);
                store
                    .release_attempt(g, Release::Success, at)
                    .await
                    .unwrap();
            }
        };
        let from = |subject| guess(&scope, "10.0.0.1", subject);
        let mut seen = Vec::new();
        // A failure of bob, then two of alice: the address at 3 until now + 60, alice at 2 until
        // now + 110.
        reserve(&store, &from("bob"), 5, now).await;
        reserve(&store, &from("alice"), 5, now + 50).await;
        reserve(&store, &from("alice"), 5, now + 50).await;
        // A success within the address's window leaves it at 3: one more of 4, then refused.
        success(&from("carol"), now + 55).await;
        seen.push(reserve(&store, &from("carol"), 4, now + 56).await);
        seen.push(reserve(&store, &from("bob"), 4, now + 56).await);
        // alice's success after the address's window: alice starts over (her 2 would refuse a limit
        // of 2 until now + 110), and the address begins a new window, empty, ending at now + 130.
        success(&from("alice"), now + 70).await;
        seen.push(reserve(&store, &from("alice"), 2, now + 71).await);
        seen.push(reserve(&store, &from("dave"), 3, now + 71).await);
        seen.push(reserve(&store, &from("dave"), 3, now + 71).await);
        seen.push(reserve(&store, &from("erin"), 3, now + 71).await);
        answers.push(seen);
    }
    let expected = vec![
        Attempt::Reserved,
        Attempt::Throttled {
            retry_after_secs: 4,
        },
        Attempt::Reserved,
        Attempt::Reserved,
        Attempt::Reserved,
        Attempt::Throttled {
            retry_after_secs: 59,
        },
    ];
    assert_eq!(answers[0], expected, "reserve + release(success)");
    assert_eq!(answers[1], expected, "admit");
}

/// An admission counts the token it is given, as `count_stateless` would, and only that one; many
/// at once count each one.
pub async fn attempts_admitted_count_their_token(store: Arc<dyn Store>) {
    let now = t0();
    let scope = Arc::new(uniq("client:api"));
    let api = Arc::new(uniq("api"));
    let g = guess(&scope, "10.0.0.1", "svc");
    let issued = |at| {
        Some(StatelessIssue {
            api_id: &api,
            client_id: "svc",
            issued_at: at,
        })
    };
    assert_eq!(
        admit(&store, &g, 5, now, issued(now)).await,
        Admission::Admitted
    );
    assert_eq!(
        admit(&store, &g, 5, now + 1, None).await,
        Admission::Admitted
    );
    assert_eq!(
        admit(&store, &g, 5, now + 1, issued(now + 2)).await,
        Admission::Admitted
    );
    assert_eq!(
        store.stateless_count(&api, "svc").await.unwrap(),
        StatelessCount {
            issued: 2,
            last_issued_at: Some(now + 2),
        }
    );
    assert_eq!(
        store.stateless_count(&api, "other").await.unwrap().issued,
        0
    );
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let (store, scope, api, barrier) =
            (store.clone(), scope.clone(), api.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let g = guess(&scope, "10.0.0.1", "svc");
            let issued = StatelessIssue {
                api_id: &api,
                client_id: "svc",
                issued_at: now + 3,
            };
            store
                .admit_attempt(&g, 5, 60, now + 3, Some(issued))
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Admission::Admitted);
    }
    assert_eq!(
        store.stateless_count(&api, "svc").await.unwrap().issued,
        2 + RACERS as u64
    );
}

// ------------------------------------------------------------------------------------------------
// Health

pub async fn ping_ok(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

// --- OpenID Connect

fn oidc_grant() -> OidcGrant {
    OidcGrant {
        auth_time: t0() - 30,
        nonce: Some("n-0S6_WzA2Mj".into()),
        claims: Some(
            [
                ("email".to_string(), serde_json::json!("a@example.com")),
                ("name".to_string(), serde_json::json!("Alice \u{e9} \"A\"")),
                ("email_verified".to_string(), serde_json::json!(true)),
            ]
            .into(),
        ),
    }
}

/// What an OIDC sign-in adds to a code and a session comes back unchanged: from the code, from the
/// session, and from the session after a rotation rewrote it (Redis: in Lua).
pub async fn oidc_grant_survives_code_session_and_rotation(store: Arc<dyn Store>) {
    let now = t0();
    let (sid, code_hash) = (uniq("sid"), uniq("code"));
    let mut c = code(&sid, now + 60);
    c.oidc = Some(Box::new(oidc_grant()));
    store.put_code(&code_hash, &c).await.unwrap();
    match store.take_code(&code_hash, now).await.unwrap() {
        CodeTake::Fresh(taken) => assert_eq!(taken.oidc, Some(Box::new(oidc_grant()))),
        other => panic!("expected Fresh, got {other:?}"),
    }
    let mut s = session(&sid, "api", "client", now, now + 3_600);
    s.oidc = Some(oidc_grant());
    store.put_session(&s, 100).await.unwrap();
    let (rt1, rt2) = (uniq("rt"), uniq("rt"));
    store
        .put_refresh(&rt1, &refresh(&sid, 0, now, Some(now + 3_600)))
        .await
        .unwrap();
    let rotated = store
        .rotate_refresh(
            &rt1,
            &rt2,
            &refresh(&sid, 1, now + 1, Some(now + 3_601)),
            now + 1,
        )
        .await
        .unwrap();
    assert!(matches!(rotated, Rotation::Rotated(_)), "{rotated:?}");
    let after = store.get_session(&sid).await.unwrap().expect("session");
    assert_eq!(after.oidc, Some(oidc_grant()));
    assert_eq!(after.refresh_count, 1);
}

fn login(api_id: &str, username: &str, auth_time: u64, ttl: u64) -> LoginSession {
    LoginSession {
        api_id: api_id.into(),
        username: username.into(),
        auth_time,
        expires_at: auth_time + ttl,
    }
}

/// A login session is found by its hash while live, not after its expiry, and not once ended.
pub async fn login_session_put_get_end(store: Arc<dyn Store>) {
    let now = t0();
    let (user, h) = (uniq("user"), uniq("ls"));
    assert_eq!(store.get_login_session(&h, now).await.unwrap(), None);
    let s = login("api", &user, now, 3_600);
    store.put_login_session(&h, &s, 10).await.unwrap();
    assert_eq!(
        store.get_login_session(&h, now).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(
        store.get_login_session(&h, now + 3_599).await.unwrap(),
        Some(s)
    );
    assert_eq!(
        store.get_login_session(&h, now + 3_600).await.unwrap(),
        None
    );
    assert!(store.end_login_session(&h, now).await.unwrap());
    assert_eq!(store.get_login_session(&h, now).await.unwrap(), None);
    assert!(!store.end_login_session(&h, now).await.unwrap());
    assert!(
        store
            .user_login_sessions(&user, now)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A user's login sessions are listed oldest first and ended all at once; another user's stay.
pub async fn login_sessions_per_user_listed_and_ended(store: Arc<dyn Store>) {
    let now = t0();
    let (alice, bob) = (uniq("alice"), uniq("bob"));
    let (a1, a2, b1) = (uniq("ls"), uniq("ls"), uniq("ls"));
    store
        .put_login_session(&a1, &login("api", &alice, now, 600), 10)
        .await
        .unwrap();
    store
        .put_login_session(&a2, &login("other", &alice, now + 1, 600), 10)
        .await
        .unwrap();
    store
        .put_login_session(&b1, &login("api", &bob, now, 600), 10)
        .await
        .unwrap();
    let listed = store.user_login_sessions(&alice, now + 1).await.unwrap();
    let hashes: Vec<&str> = listed.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(hashes, vec![a1.as_str(), a2.as_str()]);
    assert_eq!(listed[1].1.api_id, "other");
    // Expired ones are neither listed nor counted.
    assert_eq!(
        store
            .user_login_sessions(&alice, now + 600)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .end_user_login_sessions(&alice, now + 1)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.get_login_session(&a1, now + 1).await.unwrap(), None);
    assert_eq!(store.get_login_session(&a2, now + 1).await.unwrap(), None);
    assert!(
        store
            .user_login_sessions(&alice, now + 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_login_session(&b1, now + 1)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store
            .end_user_login_sessions(&alice, now + 1)
            .await
            .unwrap(),
        0
    );
}

/// One more login session than `max_per_user` forgets the oldest, also when many are stored at once.
pub async fn login_sessions_per_user_are_bounded(store: Arc<dyn Store>) {
    let now = t0();
    let user = uniq("user");
    let hashes: Vec<String> = (0..5).map(|_| uniq("ls")).collect();
    for (i, h) in hashes.iter().enumerate() {
        store
            .put_login_session(h, &login("api", &user, now + i as u64, 600), 3)
            .await
            .unwrap();
    }
    let live = store.user_login_sessions(&user, now + 5).await.unwrap();
    let live: Vec<&str> = live.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        live,
        hashes[2..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(
        store.get_login_session(&hashes[0], now + 5).await.unwrap(),
        None
    );
    assert_eq!(
        store.get_login_session(&hashes[1], now + 5).await.unwrap(),
        None
    );

    let crowd = uniq("crowd");
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let (store, barrier, crowd) = (store.clone(), barrier.clone(), crowd.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .put_login_session(&uniq("ls"), &login("api", &crowd, now, 600), 4)
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store.user_login_sessions(&crowd, now).await.unwrap().len(),
        4
    );
}

// ------------------------------------------------------------------------------------------------
// Running the suite

/// Expands to one `#[tokio::test]` (multi-thread, 4 workers) per contract function, each with a
/// store from `$factory` (an expression evaluated inside the async test, so it may `.await`; its
/// value must coerce to `Arc<dyn Store>`). The list of functions lives here only, shared with
/// [`run_all`].
macro_rules! store_contract_tests {
    ($factory:expr) => {
        $crate::store::contract::store_contract_tests!(@with_names tests ($factory));
    };
    (@with_names $mode:ident $args:tt) => {
        $crate::store::contract::store_contract_tests!(@$mode $args
            code_take_once,
            code_second_take_is_already_used,
            code_expired_or_unknown_is_unknown,
            code_concurrent_takes_exactly_one_fresh,
            refresh_rotation_issues_working_successor,
            refresh_reuse_revokes_session,
            refresh_concurrent_rotations_exactly_one,
            refresh_rotate_after_revoke_is_invalid,
            refresh_put_after_revoke_is_dead,
            refresh_rotate_after_expiry_is_invalid,
            refresh_rotate_unknown_is_invalid,
            refresh_get_of_rotated_is_none,
            refresh_revoke_racing_rotation_leaves_no_token,
            session_put_get,
            session_rotation_bumps_refresh_count,
            client_sessions_lists_live_only,
            revoke_session_until,
            revoke_jti_until,
            clients_crud,
            clients_isolated_per_api,
            policies_crud,
            policies_concurrent_create_exactly_one,
            policies_epoch_moves_on_every_write,
            attempts_reserved_up_to_the_limit_per_window,
            attempts_count_per_address_and_per_subject_and_address,
            attempts_parallel_reservations_never_exceed_the_limit,
            attempts_release,
            attempts_admitted_unless_a_reservation_would_be_refused,
            attempts_admitted_leave_the_counters_as_a_released_success,
            attempts_admitted_count_their_token,
            ping_ok,
            client_cutoff_until_and_never_back,
            access_revoked_sees_sessions_tokens_and_cutoffs,
            stateless_tokens_are_counted_per_client,
            sessions_per_user_are_capped,
            sessions_per_user_cap_holds_under_concurrency,
            oidc_grant_survives_code_session_and_rotation,
            login_session_put_get_end,
            login_sessions_per_user_listed_and_ended,
            login_sessions_per_user_are_bounded,
        );
    };
    (@tests ($factory:expr) $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::store::Store> = $factory;
                $crate::store::contract::$name(store).await;
            }
        )*
    };
    (@run ($factory:expr) $($name:ident),* $(,)?) => {
        $(
            eprintln!("store contract: {}", stringify!($name));
            $crate::store::contract::$name($factory().await).await;
        )*
    };
}
pub(crate) use store_contract_tests;

/// Runs every contract function in turn, each with a fresh store from `factory`; panics (naming the
/// function on stderr just before) at the first failure. Prefer [`store_contract_tests!`] in test
/// modules: it reports each behaviour separately.
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    store_contract_tests!(@with_names run (factory));
}
