//! A subscription to one channel on its own RESP3 connection (push messages on a multiplexed
//! connection), kept honest by pings: a subscriber that stops hearing from a dead connection would
//! otherwise wait forever. What a message means is the subscriber's business (`store::redis`).

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::conn::describe;

pub struct Subscription {
    conn: MultiplexedConnection,
    push: mpsc::UnboundedReceiver<PushInfo>,
    /// Bound on connecting, on SUBSCRIBE and on each ping's answer.
    timeout: Duration,
}

/// Connects with `client` (a RESP3 client) and subscribes to `channel`, each step bounded by `timeout`.
/// Messages published from now on wait in the subscription until [`Subscription::listen`].
pub async fn subscribe(
    client: &Client,
    channel: &str,
    timeout: Duration,
) -> Result<Subscription, String> {
    let (push_tx, push) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_push_sender(push_tx)
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = tokio::time::timeout(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| "subscriber: no connection in time".to_string())?
    .map_err(|e| format!("subscriber: {}", describe(&e)))?;
    tokio::time::timeout(timeout, conn.subscribe(channel))
        .await
        .map_err(|_| "subscriber: SUBSCRIBE not answered in time".to_string())?
        .map_err(|e| format!("subscriber: SUBSCRIBE: {}", describe(&e)))?;
    Ok(Subscription {
        conn,
        push,
        timeout,
    })
}

impl Subscription {
    /// Hands every message's payload to `apply` until the subscription is lost: a disconnection, an
    /// unsubscribe, or a ping (every `ping_every`) not answered within the subscription's timeout.
    pub async fn listen(mut self, ping_every: Duration, mut apply: impl FnMut(&[u8])) {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = self.push.recv() => {
                    let Some(message) = message else { return };
                    match message.kind {
                        PushKind::Message => {
                            if let Some(Value::BulkString(payload)) = message.data.last() {
                                apply(payload);
                            }
                        }
                        PushKind::Disconnection | PushKind::Unsubscribe => return,
                        _ => {}
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(
                        self.timeout,
                        ::redis::cmd("PING").query_async::<Value>(&mut self.conn),
                    )
                    .await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}
