//! The guessing throttles: failed attempts per address and per (subject, address), reserved before a
//! secret is verified and released after; or, for a secret known to be right, admitted in one step
//! together with the token it earns.

use super::*;
use crate::redis::Conn;

pub(super) async fn reserve_attempt(
    store: &RedisStore,
    guess: &Guess<'_>,
    limit: u32,
    window_secs: u64,
    now: u64,
) -> StoreResult<Attempt> {
    let [address, subject] = store.keys.guess(guess);
    let mut conn = store.backend.conn();
    let wait: i64 = store
        .backend
        .bounded(
            store
                .scripts
                .reserve_attempt
                .key(address)
                .key(subject)
                .arg(now)
                .arg(window_secs.min(MAX_TIME))
                .arg(limit)
                .invoke_async(&mut conn),
        )
        .await?;
    Ok(match u64::try_from(wait) {
        Ok(secs) if secs > 0 => Attempt::Throttled {
            retry_after_secs: secs,
        },
        _ => Attempt::Reserved,
    })
}

pub(super) async fn release_attempt(
    store: &RedisStore,
    guess: &Guess<'_>,
    how: Release,
    now: u64,
) -> StoreResult<()> {
    let [address, subject] = store.keys.guess(guess);
    let how = match how {
        Release::Success => "success",
        Release::NotEvaluated => "not_evaluated",
    };
    let mut conn = store.backend.conn();
    let _: i64 = store
        .backend
        .bounded(
            store
                .scripts
                .release_attempt
                .key(address)
                .key(subject)
                .arg(now)
                .arg(how)
                .invoke_async(&mut conn),
        )
        .await?;
    Ok(())
}

pub(super) async fn admit_attempt(
    store: &RedisStore,
    guess: &Guess<'_>,
    limit: u32,
    window_secs: u64,
    now: u64,
    issued: Option<StatelessIssue<'_>>,
) -> StoreResult<Admission> {
    let [address, subject] = store.keys.guess(guess);
    let mut conn = store.backend.conn();
    // A script may touch one hash slot only: in a cluster the API's count (another slot than the
    // guess's counters) is a call of its own, made once the attempt is admitted.
    let count_apart = matches!(conn, Conn::Cluster(_));
    let mut call = store.scripts.admit_attempt.key(address);
    call.key(subject)
        .arg(now)
        .arg(window_secs.min(MAX_TIME))
        .arg(limit);
    if let Some(issued) = issued.filter(|_| !count_apart) {
        let [count, last] = Keys::stateless_fields(issued.client_id);
        call.key(store.keys.stateless(issued.api_id))
            .arg(count)
            .arg(last)
            .arg(issued.issued_at)
            .arg(STATELESS_COUNT_KEEP_SECS);
    }
    let wait: i64 = store.backend.bounded(call.invoke_async(&mut conn)).await?;
    if let Ok(secs) = u64::try_from(wait)
        && secs > 0
    {
        return Ok(Admission::Throttled {
            retry_after_secs: secs,
        });
    }
    if let Some(issued) = issued.filter(|_| count_apart)
        && let Err(err) = super::sessions::count_stateless(
            store,
            issued.api_id,
            issued.client_id,
            issued.issued_at,
        )
        .await
    {
        // The attempt is admitted and the token valid without its count (see `Store::admit_attempt`).
        tracing::warn!(error = %err, api = %issued.api_id, client = %issued.client_id, "could not count a stateless token");
    }
    Ok(Admission::Admitted)
}
