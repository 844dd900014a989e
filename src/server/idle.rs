//! Idle connections: closed after `limits.idle_timeout` without a request in progress.
//!
//! hyper 1 has no idle timeout of its own. For HTTP/1 its header read timer happens to start when a
//! keep-alive connection goes idle (it waits for the next head from that moment), so there the smaller
//! of `header_read_timeout` and `idle_timeout` applies; for HTTP/2 nothing closes a connection without
//! streams: a client that sends the preface and SETTINGS, or answers the server's PINGs, holds a
//! connection slot forever.
//!
//! Watching the socket for traffic would not tell an idle HTTP/2 connection from a busy one (PINGs and
//! SETTINGS are traffic), so the count that matters is requests in progress, kept by the service: a
//! request starts when hyper hands it to the service and ends when its response body is dropped
//! (fully sent, or abandoned by a client that went away). When the count has stayed at 0 for
//! `idle_timeout` the connection is asked to shut down gracefully: HTTP/1 closes at once (no request
//! is in progress), HTTP/2 sends GOAWAY. The count lives in a `watch` channel so the connection task
//! sleeps until it changes instead of polling.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;

use crate::http_util::{Body, BoxError};

/// Requests in progress on one connection.
#[derive(Clone)]
pub struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    pub fn new() -> (InFlight, watch::Receiver<usize>) {
        let (tx, rx) = watch::channel(0);
        (InFlight(Arc::new(tx)), rx)
    }

    /// Counts a request until the returned guard is dropped.
    pub fn start(&self) -> RequestGuard {
        self.0.send_modify(|n| *n += 1);
        RequestGuard(self.0.clone())
    }
}

pub struct RequestGuard(Arc<watch::Sender<usize>>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request counted until hyper is done with it.
pub struct TrackedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl TrackedBody {
    pub fn new(inner: Body, guard: RequestGuard) -> TrackedBody {
        TrackedBody {
            inner,
            _guard: guard,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Completes once no request has been in progress for `timeout` without a break. Never completes if
/// the counting side is gone (the connection is finishing anyway).
pub async fn idle_for(requests: &mut watch::Receiver<usize>, timeout: Duration) {
    loop {
        if requests.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        match tokio::time::timeout(timeout, requests.changed()).await {
            // Nothing changed for the whole period, and the count was 0 at its start.
            Err(_) => return,
            // A request came (and maybe went): start over.
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_only_after_a_period_without_requests() {
        let (in_flight, mut rx) = InFlight::new();
        let guard = in_flight.start();
        let period = Duration::from_millis(20);
        let idle = tokio::time::timeout(Duration::from_millis(300), idle_for(&mut rx, period));
        assert!(idle.await.is_err(), "idle while a request was in progress");
        drop(guard);
        let idle = tokio::time::timeout(Duration::from_secs(10), idle_for(&mut rx, period));
        assert!(
            idle.await.is_ok(),
            "never idle after the last request ended"
        );
    }
}
