//! Idle connections and slow request heads: closed after a period without a request in progress.
//!
//! hyper 1 has no idle timeout of its own, and its HTTP/1 header read timer costs a boxed timer,
//! registered in tokio's timer wheel and removed again, for every request head (≈ 870 instructions a
//! request: docs/benchmarks.md). Both bounds are kept here instead, by one timer per connection:
//!
//! - **HTTP/1**: a head must arrive within `header_read_timeout` of the connection opening or of the
//!   previous response ending, and a connection is idle after `idle_timeout`; the smaller applies
//!   (as it did when hyper's header timer, which starts when a keep-alive connection begins waiting,
//!   did the first part). A request is "in progress" from the moment hyper has parsed its whole head,
//!   so time without one is exactly time spent waiting for a head: trickled bytes do not extend it.
//! - **HTTP/2**: nothing closes a connection without streams in hyper: a client that sends the
//!   preface and SETTINGS, or answers the server's PINGs, would hold a connection slot forever. Until
//!   its first request the HTTP/1 rule applies (a new connection has `header_read_timeout` to send
//!   one), then `idle_timeout`.
//!
//! Watching the socket for traffic would not tell an idle HTTP/2 connection from a busy one (PINGs and
//! SETTINGS are traffic), so the count that matters is requests in progress, kept by the service: a
//! request starts when hyper hands it to the service and ends when its response body is dropped
//! (fully sent, or abandoned by a client that went away). When the count has stayed at 0 for the
//! period the connection is asked to shut down gracefully: HTTP/1 closes at once when no head is half
//! read, HTTP/2 sends GOAWAY; one that lingers is dropped shortly after (`server::drive`).
//!
//! The count and the time the last request ended are two atomics that nobody is woken for: a request
//! costs two atomic adds and one clock read. Only the connection's idle timer looks at them, when it
//! fires, and sets itself again for the moment the connection could next be idle. (A `watch` channel
//! that woke the connection's task on every request start and end, and a timer set anew after each,
//! cost about 3,400 instructions per request: docs/benchmarks.md.)

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use crate::http_util::{Body, BoxError};

/// Requests in progress on one connection, and when the last one ended.
pub struct Activity {
    in_flight: AtomicUsize,
    /// Microseconds after `opened` at which the last request ended (0: none has yet).
    last_end_micros: AtomicU64,
    opened: Instant,
    /// An HTTP/2 request has been seen: from then on, only `idle_timeout` applies.
    http2: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_end_micros: AtomicU64::new(0),
            opened: Instant::now(),
            http2: AtomicBool::new(false),
        })
    }

    /// Records that the connection carries HTTP/2 (called for each HTTP/2 request; a relaxed store).
    pub fn saw_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Counts a request until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Since when no request has been in progress; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        // Acquire pairs with the guard's Release: a count of 0 comes with the end time of the request
        // that brought it there.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let micros = self.last_end_micros.load(Ordering::Relaxed);
        Some(self.opened + Duration::from_micros(micros))
    }
}

pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let micros = u64::try_from(activity.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
        // `fetch_max`: with requests ending on several threads (HTTP/2), the latest end wins.
        activity
            .last_end_micros
            .fetch_max(micros, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Release);
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

/// How long a connection may go without a request in progress before it is closed.
#[derive(Debug, Clone, Copy)]
pub struct IdleLimits {
    /// `limits.idle_timeout`.
    pub idle: Duration,
    /// `limits.header_read_timeout`: the longest wait for an HTTP/1 head (and for the first request
    /// of any connection).
    pub head: Duration,
}

impl IdleLimits {
    /// The same period whatever the protocol (the grace after an idle close).
    pub fn fixed(period: Duration) -> IdleLimits {
        IdleLimits {
            idle: period,
            head: period,
        }
    }

    fn period(&self, activity: &Activity) -> Duration {
        if activity.http2.load(Ordering::Relaxed) {
            self.idle
        } else {
            self.idle.min(self.head)
        }
    }
}

/// Completes once no request has been in progress for the connection's period ([`IdleLimits`])
/// without a break, counted from now at the earliest. One timer, set again only when it fires too
/// early. The period is read again at each wake-up, so a connection found to be HTTP/2 gets the
/// longer one from then on.
pub async fn idle_for(activity: &Activity, limits: IdleLimits) {
    let started = Instant::now();
    let mut deadline = started + limits.period(activity);
    loop {
        tokio::time::sleep_until(deadline).await;
        let now = Instant::now();
        let period = limits.period(activity);
        match activity.idle_since() {
            // Busy: the earliest it can be idle long enough is a whole period from now.
            None => deadline = now + period,
            Some(since) => {
                let due = since.max(started) + period;
                if due <= now {
                    return;
                }
                deadline = due;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_only_after_a_period_without_requests() {
        let activity = Activity::new();
        let guard = activity.start();
        let period = IdleLimits::fixed(Duration::from_millis(20));
        let idle = tokio::time::timeout(Duration::from_millis(300), idle_for(&activity, period));
        assert!(idle.await.is_err(), "idle while a request was in progress");
        drop(guard);
        let idle = tokio::time::timeout(Duration::from_secs(10), idle_for(&activity, period));
        assert!(
            idle.await.is_ok(),
            "never idle after the last request ended"
        );
    }

    #[test]
    fn http1_waits_for_the_smaller_bound_and_http2_after_a_request_for_the_idle_timeout() {
        let limits = IdleLimits {
            idle: Duration::from_secs(60),
            head: Duration::from_secs(10),
        };
        let activity = Activity::new();
        assert_eq!(limits.period(&activity), Duration::from_secs(10));
        activity.saw_http2();
        assert_eq!(limits.period(&activity), Duration::from_secs(60));
        let short_idle = IdleLimits {
            idle: Duration::from_secs(5),
            head: Duration::from_secs(10),
        };
        assert_eq!(short_idle.period(&Activity::new()), Duration::from_secs(5));
    }

    #[test]
    fn a_request_that_ends_moves_the_idle_start() {
        let activity = Activity::new();
        assert_eq!(activity.idle_since(), Some(activity.opened));
        let guard = activity.start();
        assert_eq!(activity.idle_since(), None, "a request is in progress");
        std::thread::sleep(Duration::from_millis(2));
        drop(guard);
        let since = activity.idle_since().expect("no request in progress");
        assert!(
            since > activity.opened,
            "the end of the request is when idleness starts"
        );
    }
}
