//! WebSocket tunnels (docs/design.md §9b, `upstream.websockets`): an HTTP/1.1 `Upgrade: websocket` request goes
//! through the whole lifecycle like any other (authenticated, scope-checked, rate-limited, its
//! credential stripped); when the upstream answers 101, the two connections are joined and bytes are
//! relayed both ways until either side closes, nothing moves for `limits.tunnel_idle_timeout`, or the
//! gateway shuts down and `limits.shutdown_grace` has passed.
//!
//! Bounds: at most `limits.max_connections` tunnels at once (the connection they came on gives its
//! slot back when it is upgraded, so tunnels have their own); a tunnel holds two 8 KiB buffers; every
//! write waits at most the idle timeout.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::server::stopped;

const BUFFER: usize = 8 * 1024;

/// Whether `req` asks for a WebSocket upgrade over HTTP/1.1 (RFC 6455 §4.1): GET, `Connection`
/// naming `upgrade`, `Upgrade: websocket`. HTTP/2 WebSockets (RFC 8441) are not offered.
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Puts back the two headers hop-by-hop removal took from an upgrade request or its 101 answer.
pub fn restore_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// The open tunnels of the process, and their bound.
pub struct Tunnels {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Tunnels {
    pub fn new(max: usize) -> Tunnels {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Tunnels {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot for one more tunnel, or `None` when `max` are open.
    pub fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Waits until every tunnel has closed (they close at the latest `shutdown_grace` after the
    /// shutdown signal), or `limit` has passed.
    pub async fn drained(&self, limit: Duration) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(limit, self.slots.acquire_many(all)).await;
    }
}

/// Everything a tunnel needs once the upstream said 101.
pub struct TunnelSettings {
    pub idle: Duration,
    pub grace: Duration,
    pub shutdown: watch::Receiver<bool>,
    pub api: String,
}

/// Joins the client's and the upstream's connections once both are handed over, in a task of its
/// own; `slot` is given back when the tunnel ends.
pub fn spawn(
    client: OnUpgrade,
    upstream: OnUpgrade,
    slot: OwnedSemaphorePermit,
    settings: TunnelSettings,
) {
    tokio::spawn(async move {
        let _slot = slot;
        let (client, upstream) = tokio::join!(client, upstream);
        let (client, upstream) = match (client, upstream) {
            (Ok(c), Ok(u)) => (TokioIo::new(c), TokioIo::new(u)),
            (Err(err), _) | (_, Err(err)) => {
                tracing::debug!(api = %settings.api, error = %err, "WebSocket upgrade failed");
                return;
            }
        };
        let end = relay(
            client,
            upstream,
            settings.idle,
            settings.grace,
            settings.shutdown,
        )
        .await;
        tracing::debug!(api = %settings.api, end = ?end, "WebSocket tunnel closed");
    });
}

/// Why a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// One side closed its connection; the other was told (its write half shut down).
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// The gateway shut down and the grace period passed.
    Shutdown,
    /// A read or write failed.
    Error,
}

/// Relays bytes both ways until either side closes, nothing moves for `idle`, or `grace` after
/// `shutdown` turns true.
pub async fn relay<A, B>(
    a: A,
    b: B,
    idle: Duration,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> End
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let mut a_buf = vec![0u8; BUFFER];
    let mut b_buf = vec![0u8; BUFFER];
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let last_call = async {
        stopped(&mut shutdown).await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(last_call);
    loop {
        tokio::select! {
            read = a_read.read(&mut a_buf) => match read {
                // One side closing ends the tunnel (RFC 6455 §7: the close handshake is done by
                // then, or the peer is gone); the other side is told by a shutdown of its write half.
                Ok(0) | Err(_) => {
                    let _ = b_write.shutdown().await;
                    return End::Closed;
                }
                Ok(n) => {
                    if !write(&mut b_write, &a_buf[..n], idle).await {
                        return End::Error;
                    }
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                }
            },
            read = b_read.read(&mut b_buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = a_write.shutdown().await;
                    return End::Closed;
                }
                Ok(n) => {
                    if !write(&mut a_write, &b_buf[..n], idle).await {
                        return End::Error;
                    }
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                }
            },
            _ = &mut idle_timer => return End::Idle,
            _ = &mut last_call => return End::Shutdown,
        }
    }
}

/// A write that a peer not reading cannot hold up for longer than `limit`.
async fn write<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8], limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, async {
            to.write_all(bytes).await?;
            to.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}

/// A 101 from the upstream is the only answer that opens a tunnel.
pub fn is_switching(status: StatusCode) -> bool {
    status == StatusCode::SWITCHING_PROTOCOLS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_until_one_side_closes() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let (_tx, rx) = watch::channel(false);
        let relay = tokio::spawn(relay(
            client,
            upstream,
            Duration::from_secs(60),
            Duration::from_secs(60),
            rx,
        ));
        client_peer.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        upstream_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        upstream_peer.write_all(b"pong").await.unwrap();
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        drop(upstream_peer);
        assert_eq!(relay.await.unwrap(), End::Closed);
        // The client was told: its side reads the end of the stream.
        assert_eq!(client_peer.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_silent_tunnel_ends_after_the_idle_timeout_and_shutdown_after_the_grace() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let (_tx, rx) = watch::channel(false);
        let end = relay(
            client,
            upstream,
            Duration::from_millis(50),
            Duration::from_secs(600),
            rx,
        )
        .await;
        assert_eq!(end, End::Idle);

        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let (tx, rx) = watch::channel(false);
        let relay = tokio::spawn(relay(
            client,
            upstream,
            Duration::from_secs(600),
            Duration::from_millis(50),
            rx,
        ));
        tx.send_replace(true);
        assert_eq!(relay.await.unwrap(), End::Shutdown);
    }

    #[test]
    fn only_http11_get_with_both_headers_is_an_upgrade() {
        let upgrade = |method: Method, connection: &str, upgrade: &str| {
            let req = Request::builder()
                .method(method)
                .header("connection", connection)
                .header("upgrade", upgrade)
                .body(())
                .unwrap();
            is_websocket_upgrade(&req)
        };
        assert!(upgrade(Method::GET, "Upgrade", "websocket"));
        assert!(upgrade(Method::GET, "keep-alive, upgrade", "WebSocket"));
        assert!(!upgrade(Method::POST, "upgrade", "websocket"));
        assert!(!upgrade(Method::GET, "keep-alive", "websocket"));
        assert!(!upgrade(Method::GET, "upgrade", "h2c"));
    }
}
