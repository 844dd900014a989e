//! The guessing throttles: failed attempts per address and per (subject, address), reserved before a
//! secret is verified and released after.

use super::*;

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
