//! Listeners: accept loop, TLS, connection limits, read and idle timeouts and graceful shutdown.
//!
//! One accept loop serves both the proxy and the admin listener; what differs is the handler. A
//! semaphore bounds the number of open connections (new ones wait in the kernel's backlog) and, because
//! every connection holds a permit until it closes, it also tells shutdown when the last one is gone.
//! A per-address cap below it keeps one address from holding every permit.
//!
//! May import: `config`, `http_util`. Knows nothing of routes: `lib.rs` hands it a handler per listener.

mod gate;
mod idle;
mod per_ip;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::http_util::Body;
use gate::Gated;
use idle::{Activity, IdleLimits, TrackedBody, idle_for};
use per_ip::PerIp;

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
}

impl ServerLimits {
    pub fn from_config(limits: &crate::config::Limits) -> ServerLimits {
        ServerLimits {
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
            shutdown_grace: limits.shutdown_grace,
        }
    }
}

/// After a connection is asked to close (idle, slow head or shutdown), how long it may linger with no
/// request in progress before it is dropped. h2's graceful close waits for the client to acknowledge a
/// PING, which a hostile client never does, and hyper keeps reading a half-sent HTTP/1 head; no request
/// was in progress, so nothing is lost by cutting either.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets in-flight requests finish
/// for up to `shutdown_grace`, and returns. `refused` is called for every connection closed at accept
/// because its address already had `max_connections_per_ip` open.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    handler: H,
    refused: impl Fn() + Send + Sync + 'static,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let per_ip = PerIp::new(limits.max_connections_per_ip.max(1));
    let builder = Arc::new(connection_builder(&limits));
    // Turned true when the grace period is over: every connection still open is dropped then, so
    // that returning from here really means no connection is served any more (the tasks are
    // detached; without this, an embedding program would keep serving after `run` returned).
    let (force_close, closing) = watch::channel(false);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // Checked after the global permit was taken, so an address can hold at most its cap of
        // permits and the rest stay available to everyone else. Refused: closed at once (the permit
        // goes back when the loop comes round).
        let Some(slot) = per_ip.try_acquire(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: too many open from this address");
            refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let stop = Stop {
            shutdown: shutdown.clone(),
            force: closing.clone(),
        };
        tokio::spawn(async move {
            serve_connection(stream, peer, tls, builder, limits, handler, stop).await;
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    // Every open connection holds a permit; getting all of them back means every connection closed.
    let drained =
        tokio::time::timeout(limits.shutdown_grace, permits.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "shutdown grace period over; closing the remaining connections"
        );
        let _ = force_close.send(true);
        // Each task drops its connection at its next poll; this only waits for them to do so.
        let _ = tokio::time::timeout(FORCED_CLOSE_WAIT, permits.acquire_many(max as u32)).await;
    }
}

/// How long the connections cut at the end of the grace period get to drop their sockets.
const FORCED_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Completes once `stop` turns true (or its sender is gone). The borrowed value is dropped inside, so
/// callers stay `Send`.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn connection_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own HTTP/1 header read timeout is off: it armed and dropped a boxed timer for every
    // request head. The connection's idle supervisor (`idle`) enforces `header_read_timeout` with the
    // one timer it already has. (hyper would otherwise apply its default of 30 s, as a timer is set.)
    // The read buffer is what bounds an HTTP/1 head: a head that does not fit gets 431. hyper refuses
    // a buffer under 8 KiB, which the config loader enforces. A head with more than 100 fields gets
    // 431 too: that is hyper's own limit (`DEFAULT_MAX_HEADERS`), documented as ours and held by
    // `tests/hostile_connections.rs`. It is deliberately not passed to `max_headers`: given any value,
    // even 100, hyper sizes its parse arrays at run time and fills 2 × 100 slots for every request
    // head (≈ 1,700 instructions a request; docs/benchmarks.md), where its default uses fixed,
    // uninitialised arrays.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

async fn serve_connection<H, Fut>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ServerLimits,
    handler: H,
    mut stop: Stop,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let info = ConnInfo {
        peer,
        tls: tls.is_some(),
    };
    let activity = Activity::new();
    let counted = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        // Counted from here until hyper drops the response body (see `idle`).
        let guard = counted.start();
        if req.version() == hyper::Version::HTTP_2 {
            counted.saw_http2();
        }
        let response = handler(req, info);
        async move {
            let response = response.await.map(|body| TrackedBody::new(body, guard));
            Ok::<_, Infallible>(response)
        }
    });
    let idle = Idle {
        activity,
        limits: IdleLimits {
            idle: limits.idle_timeout,
            head: limits.header_read_timeout,
        },
    };
    match tls {
        Some(acceptor) => {
            // Boxed: a TLS connection's state (the rustls session and a copy of the builder) makes this
            // branch several kilobytes larger than the plain one, and a task is allocated at the size
            // of its largest branch: inline, every plain-HTTP connection would pay for TLS.
            Box::pin(async move {
                // A client that never finishes the handshake is cut off like one that never sends headers.
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => handshake,
                    _ = stopped(&mut stop.force) => return,
                };
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let builder = (*builder).clone();
                // ALPN already chose the protocol; don't sniff the first bytes for it.
                let builder = if h2 {
                    builder.http2_only()
                } else {
                    builder.http1_only()
                };
                drive(
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service),
                    stop,
                    idle,
                )
                .await;
            })
            .await;
        }
        None => {
            // The auto builder sniffs the first bytes to tell HTTP/1 from HTTP/2 prior knowledge, and
            // hyper's header timer only starts after that; bound the wait for the first byte here.
            let mut first = [0u8; 1];
            let peeked = tokio::select! {
                peeked = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)) => peeked,
                _ = stopped(&mut stop.force) => return,
            };
            match peeked {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            drive(
                builder.serve_connection_with_upgrades(TokioIo::new(stream), service),
                stop,
                idle,
            )
            .await;
        }
    }
}

/// The two signals every connection watches: the gateway is shutting down (finish the request in
/// flight, then close), and the shutdown grace period is over (drop the connection now).
struct Stop {
    shutdown: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
}

/// What `drive` needs to close a connection nobody uses.
struct Idle {
    activity: Arc<Activity>,
    limits: IdleLimits,
}

/// Why `drive` stopped serving a connection as usual.
enum Signal {
    Shutdown,
    Idle,
    Force,
}

/// Runs one connection; on shutdown asks it to finish the request in flight and close; when no request
/// was in progress for its period (`idle::IdleLimits`: `idle_timeout`, and `header_read_timeout` for
/// an HTTP/1 head), asks it to close (HTTP/2: GOAWAY); in both cases drops it if it lingers without a
/// request in progress; at the end of the shutdown grace period drops it. The signals are watched
/// through [`Gated`] futures, so the connection's many wake-ups per request do not poll them.
async fn drive<C>(conn: C, mut stop: Stop, idle: Idle)
where
    C: GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let signal = {
        let signals = Gated::new(async {
            tokio::select! {
                _ = stopped(&mut stop.force) => Signal::Force,
                _ = stopped(&mut stop.shutdown) => Signal::Shutdown,
                _ = idle_for(&idle.activity, idle.limits) => Signal::Idle,
            }
        });
        match race(conn.as_mut(), signals).await {
            Ok(result) => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            Err(signal) => signal,
        }
    };
    if let Signal::Force = signal {
        return;
    }
    if let Signal::Idle = signal {
        tracing::debug!("closing an idle connection");
    }
    // HTTP/1 closes once the request in progress (if any) is answered; HTTP/2 sends GOAWAY and serves
    // the streams it has. A connection that lingers with no request in progress (a client that never
    // acknowledges GOAWAY, or an HTTP/1 head still half read: hyper only closes an idle connection
    // at once) is dropped after `IDLE_CLOSE_GRACE`; nothing it could lose was started.
    conn.as_mut().start_graceful_shutdown();
    let grace = IdleLimits::fixed(IDLE_CLOSE_GRACE.min(idle.limits.idle).min(idle.limits.head));
    let lingering = Gated::new(async {
        tokio::select! {
            _ = stopped(&mut stop.force) => {}
            _ = idle_for(&idle.activity, grace) => {}
        }
    });
    let result = race(conn.as_mut(), lingering).await;
    if let Ok(Err(err)) = result {
        tracing::debug!(error = %err, "connection ended with an error during shutdown");
    }
}

/// Polls `signal` first (one atomic swap when it is [`Gated`] and was not woken), then the connection.
async fn race<C, S>(mut conn: std::pin::Pin<&mut C>, signal: S) -> Result<C::Output, S::Output>
where
    C: Future,
    S: Future,
{
    let mut signal = std::pin::pin!(signal);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(why) = signal.as_mut().poll(cx) {
            return std::task::Poll::Ready(Err(why));
        }
        conn.as_mut().poll(cx).map(Ok)
    })
    .await
}

/// The two connection types hyper-util gives us, seen through the one operation shutdown needs.
trait GracefulConnection:
    Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>
{
    fn start_graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

/// With upgrades: an HTTP/1 connection answered with 101 hands its socket over (WebSocket tunnels,
/// `proxy::tunnel`) and this future completes.
impl<I, S, E, B> GracefulConnection for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn start_graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
