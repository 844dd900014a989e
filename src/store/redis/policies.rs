//! Stored policies (created through the admin API): one hash, read through; every write bumps the
//! policy epoch on every node.

use super::*;

pub(super) async fn put_policy(
    store: &RedisStore,
    policy: &StoredPolicy,
    mode: PolicyWrite,
) -> StoreResult<bool> {
    let json = RedisStore::to_json(policy)?;
    let mode = match mode {
        PolicyWrite::Create => "create",
        PolicyWrite::Replace => "replace",
    };
    store.write_policy(mode, &policy.id, &json).await
}

pub(super) async fn get_policy(store: &RedisStore, id: &str) -> StoreResult<Option<StoredPolicy>> {
    let mut conn = store.backend.conn();
    let raw: Option<String> = store
        .backend
        .bounded(
            redis::cmd("HGET")
                .arg(store.keys.policies())
                .arg(id)
                .query_async(&mut conn),
        )
        .await?;
    raw.as_deref().map(RedisStore::parse_policy).transpose()
}

pub(super) async fn list_policies(store: &RedisStore) -> StoreResult<Vec<StoredPolicy>> {
    let mut conn = store.backend.conn();
    let raws: Vec<String> = store
        .backend
        .bounded(
            redis::cmd("HVALS")
                .arg(store.keys.policies())
                .query_async(&mut conn),
        )
        .await?;
    let mut policies = raws
        .iter()
        .map(|raw| RedisStore::parse_policy(raw))
        .collect::<StoreResult<Vec<_>>>()?;
    policies.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(policies)
}
