//! Listeners: accept loop, TLS, connection limit, header read timeout and graceful shutdown.
//!
//! One accept loop serves both the proxy and the admin listener; what differs is the handler. A
//! semaphore bounds the number of open connections (new ones wait in the kernel's backlog) and, because
//! every connection holds a permit until it closes, it also tells shutdown when the last one is gone.

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

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets in-flight requests finish
/// for up to `shutdown_grace`, and returns.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let builder = Arc::new(connection_builder(limits.header_read_timeout));
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
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, tls, builder, limits, handler, shutdown).await;
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
    }
}

/// Completes once `stop` turns true (or its sender is gone). The borrowed value is dropped inside, so
/// callers stay `Send`.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn connection_builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper only enforces the header read timeout when it has a timer.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

async fn serve_connection<H, Fut>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ServerLimits,
    handler: H,
    shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let info = ConnInfo {
        peer,
        tls: tls.is_some(),
    };
    let service = service_fn(move |req| {
        let response = handler(req, info);
        async move { Ok::<_, Infallible>(response.await) }
    });
    match tls {
        Some(acceptor) => {
            // Boxed: a TLS connection's state (the rustls session and a copy of the builder) makes this
            // branch several kilobytes larger than the plain one, and a task is allocated at the size
            // of its largest branch: inline, every plain-HTTP connection would pay for TLS.
            Box::pin(async move {
                // A client that never finishes the handshake is cut off like one that never sends headers.
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await;
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
                    builder.serve_connection(TokioIo::new(stream), service),
                    shutdown,
                )
                .await;
            })
            .await;
        }
        None => {
            // The auto builder sniffs the first bytes to tell HTTP/1 from HTTP/2 prior knowledge, and
            // hyper's header timer only starts after that; bound the wait for the first byte here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            drive(
                builder.serve_connection(TokioIo::new(stream), service),
                shutdown,
            )
            .await;
        }
    }
}

/// Runs one connection; on shutdown asks it to finish the request in flight and close.
async fn drive<C>(conn: C, mut shutdown: watch::Receiver<bool>)
where
    C: GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            return;
        }
        _ = stopped(&mut shutdown) => {}
    }
    conn.as_mut().start_graceful_shutdown();
    if let Err(err) = conn.await {
        tracing::debug!(error = %err, "connection ended with an error during shutdown");
    }
}

/// The two connection types hyper-util gives us, seen through the one operation shutdown needs.
trait GracefulConnection:
    Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>
{
    fn start_graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConnection for auto::Connection<'_, I, S, E>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn start_graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
