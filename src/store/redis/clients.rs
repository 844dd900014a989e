//! Dynamic clients: one hash per API, cached per node and invalidated through the subscription.

use super::*;

pub(super) async fn put_client(store: &RedisStore, client: &StoredClient) -> StoreResult<()> {
    let json = RedisStore::to_json(client)?;
    let mut conn = store.backend.conn();
    let _: i64 = store
        .backend
        .bounded(
            store
                .scripts
                .client
                .key(store.keys.clients(&client.api_id))
                .arg(&client.client_id)
                .arg(json)
                .arg(&store.keys.channel)
                .arg(client_event(&client.api_id, &client.client_id))
                .invoke_async(&mut conn),
        )
        .await?;
    store
        .shared
        .invalidate_client(&client.api_id, &client.client_id);
    Ok(())
}

pub(super) async fn get_client(
    store: &RedisStore,
    api_id: &str,
    client_id: &str,
) -> StoreResult<Option<StoredClient>> {
    if let Some(client) = store.shared.cached_client(api_id, client_id) {
        return Ok(Some(client));
    }
    let generation = store.shared.client_generation.load(Ordering::Acquire);
    let mut conn = store.backend.conn();
    let raw: Option<String> = store
        .backend
        .bounded(
            redis::cmd("HGET")
                .arg(store.keys.clients(api_id))
                .arg(client_id)
                .query_async(&mut conn),
        )
        .await?;
    let client = raw.as_deref().map(RedisStore::parse_client).transpose()?;
    if let Some(client) = &client {
        store.shared.cache_client(generation, client);
    }
    Ok(client)
}

pub(super) async fn list_clients(
    store: &RedisStore,
    api_id: &str,
) -> StoreResult<Vec<StoredClient>> {
    let mut conn = store.backend.conn();
    let raws: Vec<String> = store
        .backend
        .bounded(
            redis::cmd("HVALS")
                .arg(store.keys.clients(api_id))
                .query_async(&mut conn),
        )
        .await?;
    let mut clients = raws
        .iter()
        .map(|raw| RedisStore::parse_client(raw))
        .collect::<StoreResult<Vec<_>>>()?;
    clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok(clients)
}

pub(super) async fn delete_client(
    store: &RedisStore,
    api_id: &str,
    client_id: &str,
) -> StoreResult<bool> {
    let mut conn = store.backend.conn();
    let deleted: i64 = store
        .backend
        .bounded(
            store
                .scripts
                .client
                .key(store.keys.clients(api_id))
                .arg(client_id)
                .arg("")
                .arg(&store.keys.channel)
                .arg(client_event(api_id, client_id))
                .invoke_async(&mut conn),
        )
        .await?;
    store.shared.invalidate_client(api_id, client_id);
    let _: i64 = store
        .backend
        .bounded(
            redis::cmd("HDEL")
                .arg(store.keys.stateless(api_id))
                .arg(&Keys::stateless_fields(client_id))
                .query_async(&mut conn),
        )
        .await?;
    Ok(deleted > 0)
}
