//! Authorization codes, sessions (with the per-user cap), refresh tokens and their rotation, and the
//! counts of stateless tokens.

use super::*;

pub(super) async fn put_code(
    store: &RedisStore,
    code_hash: &str,
    code: &AuthCode,
) -> StoreResult<()> {
    let json = RedisStore::to_json(code)?;
    let mut conn = store.backend.conn();
    store
        .backend
        .bounded(
            redis::cmd("SET")
                .arg(store.keys.code(code_hash))
                .arg(json)
                .arg("EXAT")
                .arg(clamp_time(code.expires_at))
                .exec_async(&mut conn),
        )
        .await
}

pub(super) async fn take_code(
    store: &RedisStore,
    code_hash: &str,
    now: u64,
) -> StoreResult<CodeTake> {
    let mut conn = store.backend.conn();
    let reply: Vec<String> = store
        .backend
        .bounded(
            store
                .scripts
                .take_code
                .key(store.keys.code(code_hash))
                .arg(now)
                .invoke_async(&mut conn),
        )
        .await?;
    match reply.as_slice() {
        [status] if status == "unknown" => Ok(CodeTake::Unknown),
        [status, sid] if status == "used" => Ok(CodeTake::AlreadyUsed { sid: sid.clone() }),
        [status, json] if status == "fresh" => serde_json::from_str(json)
            .map(CodeTake::Fresh)
            .map_err(|e| corrupt("authorization code", e)),
        _ => Err(StoreError::Corrupt(
            "unexpected reply from the take_code script".into(),
        )),
    }
}

pub(super) async fn put_session(
    store: &RedisStore,
    session: &Session,
    max_per_user: u32,
) -> StoreResult<Vec<String>> {
    let json = RedisStore::to_json(session)?;
    let mut conn = store.backend.conn();
    let ended: Vec<String> = store
        .backend
        .bounded(
            store
                .scripts
                .put_session
                .key(store.keys.session(&session.sid))
                .arg(&store.keys.tokens)
                .arg(&session.sid)
                .arg(json)
                .arg(clamp_time(session.expires_at))
                .arg(now_secs())
                .arg(&session.api_id)
                .arg(&session.client_id)
                .arg(session.username.as_deref().unwrap_or(""))
                .arg(max_per_user.max(1))
                .arg(&store.keys.channel)
                .invoke_async(&mut conn),
        )
        .await?;
    // The script published the revocations; this node applies its own at once, as `revoke` does.
    // Their `until` is at most the session lifetime, which a revocation set entry may outlive
    // harmlessly: the message from the script carries the exact one.
    for sid in &ended {
        store
            .shared
            .revoke_locally(RevocationKind::Sid, sid, clamp_time(session.expires_at));
    }
    Ok(ended)
}

pub(super) async fn get_session(store: &RedisStore, sid: &str) -> StoreResult<Option<Session>> {
    let mut conn = store.backend.conn();
    let raw: Option<String> = store
        .backend
        .bounded(
            redis::cmd("GET")
                .arg(store.keys.session(sid))
                .query_async(&mut conn),
        )
        .await?;
    raw.as_deref().map(RedisStore::parse_session).transpose()
}

pub(super) async fn client_sessions(
    store: &RedisStore,
    api_id: &str,
    client_id: &str,
    now: u64,
) -> StoreResult<Vec<Session>> {
    let index = store.keys.client_sessions(api_id, client_id);
    let mut conn = store.backend.conn();
    let raws: Vec<Option<String>> = store
        .backend
        .bounded(async {
            let sids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&index)
                .arg(format!("({now}"))
                .arg("+inf")
                .query_async(&mut conn)
                .await?;
            if sids.is_empty() {
                return Ok(Vec::new());
            }
            let mut mget = redis::cmd("MGET");
            for sid in &sids {
                mget.arg(store.keys.session(sid));
            }
            mget.query_async(&mut conn).await
        })
        .await?;
    let mut live = Vec::new();
    for raw in raws.into_iter().flatten() {
        let session = RedisStore::parse_session(&raw)?;
        if session.api_id == api_id
            && session.client_id == client_id
            && now < session.expires_at
            && !store.shared.sid_revoked(&session.sid, now)
        {
            live.push(session);
        }
    }
    live.sort_by(|a, b| (a.created_at, &a.sid).cmp(&(b.created_at, &b.sid)));
    Ok(live)
}

pub(super) async fn put_refresh(
    store: &RedisStore,
    token_hash: &str,
    token: &RefreshToken,
) -> StoreResult<()> {
    let json = RedisStore::to_json(token)?;
    let mut conn = store.backend.conn();
    let _stored: i64 = store
        .backend
        .bounded(
            store
                .scripts
                .put_refresh
                .key(store.keys.refresh(token_hash))
                .arg(&store.keys.tokens)
                .arg(token_hash)
                .arg(json)
                .arg(&token.sid)
                .arg(optional_time(token.expires_at))
                .arg(now_secs())
                .arg(NEVER_EXPIRING_REFRESH_KEEP_SECS)
                .invoke_async(&mut conn),
        )
        .await?;
    Ok(())
}

pub(super) async fn get_refresh(
    store: &RedisStore,
    token_hash: &str,
    now: u64,
) -> StoreResult<Option<RefreshToken>> {
    let mut conn = store.backend.conn();
    let raw: Option<String> = store
        .backend
        .bounded(
            redis::cmd("GET")
                .arg(store.keys.refresh(token_hash))
                .query_async(&mut conn),
        )
        .await?;
    let Some(token) = raw.as_deref().map(parse_refresh).transpose()?.flatten() else {
        return Ok(None);
    };
    if token.expires_at.is_some_and(|exp| now >= exp) || store.shared.sid_revoked(&token.sid, now) {
        return Ok(None);
    }
    Ok(Some(token))
}

pub(super) async fn rotate_refresh(
    store: &RedisStore,
    old_hash: &str,
    new_hash: &str,
    new: &RefreshToken,
    now: u64,
) -> StoreResult<Rotation> {
    let json = RedisStore::to_json(new)?;
    let mut conn = store.backend.conn();
    let reply: Vec<String> = store
        .backend
        .bounded(
            store
                .scripts
                .rotate_refresh
                .key(store.keys.refresh(old_hash))
                .key(store.keys.refresh(new_hash))
                .arg(&store.keys.tokens)
                .arg(&store.keys.channel)
                .arg(now)
                .arg(old_hash)
                .arg(new_hash)
                .arg(json)
                .arg(&new.sid)
                .arg(optional_time(new.expires_at))
                .arg(ROTATED_NEVER_EXPIRING_KEEP_SECS)
                .arg(NEVER_EXPIRING_REFRESH_KEEP_SECS)
                .invoke_async(&mut conn),
        )
        .await?;
    match reply.as_slice() {
        [status] if status == "invalid" => Ok(Rotation::Invalid),
        [status, sid, until] if status == "reused" => {
            let until = until
                .parse::<u64>()
                .map_err(|e| corrupt("rotate_refresh reply", e))?;
            store.shared.revoke_locally(RevocationKind::Sid, sid, until);
            Ok(Rotation::Reused { sid: sid.clone() })
        }
        [status, json] if status == "rotated" => match parse_refresh(json)? {
            Some(old) => Ok(Rotation::Rotated(old)),
            None => Err(StoreError::Corrupt(
                "rotated a refresh token tombstone".into(),
            )),
        },
        _ => Err(StoreError::Corrupt(
            "unexpected reply from the rotate_refresh script".into(),
        )),
    }
}

pub(super) async fn count_stateless(
    store: &RedisStore,
    api_id: &str,
    client_id: &str,
    now: u64,
) -> StoreResult<()> {
    let key = store.keys.stateless(api_id);
    let [count, last] = Keys::stateless_fields(client_id);
    let mut conn = store.backend.conn();
    // One hash per API (one slot), so the two writes are one atomic round trip in a cluster too.
    let _: () = store
        .backend
        .bounded(
            redis::pipe()
                .atomic()
                .hincr(&key, count, 1)
                .ignore()
                .hset(&key, last, now)
                .ignore()
                .expire(&key, STATELESS_COUNT_KEEP_SECS)
                .ignore()
                .query_async(&mut conn),
        )
        .await?;
    Ok(())
}

pub(super) async fn stateless_count(
    store: &RedisStore,
    api_id: &str,
    client_id: &str,
) -> StoreResult<StatelessCount> {
    let mut conn = store.backend.conn();
    let (issued, last): (Option<u64>, Option<u64>) = store
        .backend
        .bounded(
            redis::cmd("HMGET")
                .arg(store.keys.stateless(api_id))
                .arg(&Keys::stateless_fields(client_id))
                .query_async(&mut conn),
        )
        .await?;
    Ok(StatelessCount {
        issued: issued.unwrap_or(0),
        last_issued_at: last,
    })
}
