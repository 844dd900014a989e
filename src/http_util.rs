//! Body type and small helpers shared by every handler.
//!
//! At the bottom (beside `config`): imports nothing of the crate. Its errors (`BodyError`, `FormError`)
//! are its own; `error/mod.rs` maps them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, combinators::BoxBody};
use hyper::body::Frame;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response tollgate sends: either bytes it made itself or an upstream's stream.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body. `Empty` has no size, so boxing it allocates nothing (a `Full` of no bytes would).
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body that waited longer than its bound for the next chunk.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
pub struct BodyStalled(pub Duration);

pin_project_lite::pin_project! {
    /// Bounds every wait for the next frame of `inner` to `timeout`; past it the body yields
    /// [`BodyStalled`]. The clock runs only while the reader is waiting: it starts when a frame is asked
    /// for and does not come at once, and stops when one arrives, so a slow reader (a client with
    /// backpressure, a hyper client waiting for the upstream to accept bytes) never counts against the
    /// writer, and a trickle of one byte every `timeout - ε` goes through: this bounds stalls, not the
    /// total time.
    ///
    /// The timer is made at the first wait, not before: most bodies never wait (a `GET`'s is empty, a
    /// small answer is often there at the first ask), and a tokio timer costs a clock read, a handle
    /// clone, and a lock each to enter and leave the timer wheel. Once made it stays registered between
    /// waits, where moving its deadline later is one atomic operation. It is boxed so that the upstream
    /// call can hand over the timer that bounded its wait for the answer's head
    /// ([`ReadTimeout::with_timer`]): one timer per request for both waits.
    pub struct ReadTimeout<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        timeout: Duration,
        waiting: bool,
        // Mirrors `waiting` for an observer elsewhere (see `ReadTimeout::observed`).
        probe: Option<Arc<AtomicBool>>,
    }
}

/// Tells whether a [`ReadTimeout`] body is waiting for its writer right now.
#[derive(Clone)]
pub struct WaitProbe(Option<Arc<AtomicBool>>);

impl WaitProbe {
    /// The probe of a body that had ended before it was read (no body at all): it never waits.
    pub fn never() -> WaitProbe {
        WaitProbe(None)
    }

    pub fn waiting(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}

impl<B> ReadTimeout<B> {
    pub fn new(inner: B, timeout: Duration) -> ReadTimeout<B> {
        ReadTimeout {
            inner,
            sleep: None,
            timeout,
            waiting: false,
            probe: None,
        }
    }

    /// The same, reusing `timer` (whatever its deadline: it is set anew at the first wait).
    pub fn with_timer(
        inner: B,
        timeout: Duration,
        timer: Pin<Box<tokio::time::Sleep>>,
    ) -> ReadTimeout<B> {
        ReadTimeout {
            sleep: Some(timer),
            ..ReadTimeout::new(inner, timeout)
        }
    }

    /// The same body, plus a probe that tells whether the reader is waiting for the writer: when
    /// the upstream timeout fires while the proxy waits for the client's body, the client stalled,
    /// not the upstream.
    pub fn observed(mut self) -> (ReadTimeout<B>, WaitProbe) {
        let flag = Arc::new(AtomicBool::new(false));
        self.probe = Some(flag.clone());
        (self, WaitProbe(Some(flag)))
    }
}

impl<B> hyper::body::Body for ReadTimeout<B>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if *this.waiting {
                *this.waiting = false;
                if let Some(probe) = this.probe {
                    probe.store(false, Ordering::Relaxed);
                }
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !*this.waiting {
            *this.waiting = true;
            if let Some(probe) = this.probe {
                probe.store(true, Ordering::Relaxed);
            }
            let deadline = tokio::time::Instant::now() + *this.timeout;
            match this.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match this.sleep.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(BodyStalled(*this.timeout).into()))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The request's body with every wait for its next chunk bounded by `timeout`
/// (`limits.body_read_timeout`).
pub fn timed_body<B>(req: Request<B>, timeout: Duration) -> (http::request::Parts, ReadTimeout<B>) {
    let (parts, body) = req.into_parts();
    (parts, ReadTimeout::new(body, timeout))
}

/// Reads a whole request body of at most `limit` bytes, each wait for the next chunk bounded by
/// `timeout` (`limits.body_read_timeout`). Every handler that needs a body in memory goes through here,
/// so size and time bounds and their answers (413, 408 + close, 400 + close) are the same everywhere.
pub async fn read_body<B>(
    req: Request<B>,
    limit: usize,
    timeout: Duration,
) -> Result<(http::request::Parts, Bytes), BodyError>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = timed_body(req, timeout);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(err) => Err(body_error(&*err, limit as u64)),
    }
}

/// Why a request body could not be read; `error/mod.rs` turns each into its answer (413, 408, 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than `limit` bytes.
    TooLarge { limit: u64 },
    /// The client stopped sending for longer than `limits.body_read_timeout`.
    Stalled,
    /// Anything else: a broken chunk encoding, a reset.
    Unreadable,
}

/// What a failed request-body read means for the client.
pub fn body_error(err: &(dyn std::error::Error + 'static), limit: u64) -> BodyError {
    if caused_by::<LengthLimitError>(err) {
        BodyError::TooLarge { limit }
    } else if caused_by::<BodyStalled>(err) {
        BodyError::Stalled
    } else {
        BodyError::Unreadable
    }
}

/// Whether `E` is `err` or anywhere in its chain of sources.
pub fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Form bodies (the OAuth endpoints, the login form, the admin UI) are small; anything larger is not a
/// real client.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Why a form body was refused; `error/mod.rs` answers each (400 `invalid_request`, or as [`BodyError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// The body is not `application/x-www-form-urlencoded`.
    NotAForm,
    /// A parameter appears twice (RFC 6749 §3.1: refused, never "last one wins").
    Repeated(String),
    Body(BodyError),
}

impl FormError {
    /// The sentence a client is told.
    pub fn description(&self) -> String {
        match self {
            FormError::NotAForm => "the body must be application/x-www-form-urlencoded".to_string(),
            FormError::Repeated(name) => format!("the {name} parameter is repeated"),
            FormError::Body(_) => "the request body could not be read".to_string(),
        }
    }
}

/// Reads an `application/x-www-form-urlencoded` body of at most [`MAX_FORM_BYTES`] into a map; repeated
/// parameters are refused (RFC 6749 §3.1).
pub async fn read_form<B>(
    req: Request<B>,
    timeout: Duration,
) -> Result<(http::HeaderMap, HashMap<String, String>), FormError>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(FormError::NotAForm);
    }
    let (parts, bytes) = read_body(req, MAX_FORM_BYTES, timeout)
        .await
        .map_err(FormError::Body)?;
    let form = parse_pairs(&bytes)?;
    Ok((parts.headers, form))
}

/// Form-urlencoded pairs into a map, refusing a repeated name.
pub fn parse_pairs(bytes: &[u8]) -> Result<HashMap<String, String>, FormError> {
    let mut form = HashMap::new();
    let mut add = |name: &str, value: &str| {
        if form.insert(name.to_owned(), value.to_owned()).is_some() {
            return Err(FormError::Repeated(name.to_owned()));
        }
        Ok(())
    };
    // Most bodies decode to themselves: no `%`, no `+`, valid UTF-8 (a token, a grant type, an
    // id). Then splitting is all there is to do, and form_urlencoded's byte-at-a-time decoding and
    // lossy UTF-8 pass (≈ 14,000 instructions for an introspected token: docs/benchmarks.md) are
    // skipped; the pairs are exactly those form_urlencoded would give.
    if !bytes.iter().any(|&b| b == b'%' || b == b'+')
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        for pair in text.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            add(name, value)?;
        }
    } else {
        for (name, value) in form_urlencoded::parse(bytes) {
            add(&name, &value)?;
        }
    }
    Ok(form)
}

static X_RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset`, on a success and on a `429` alike. The names are
/// constants: given as strings, each would be parsed, validated and copied on every response.
pub fn set_rate_limit_headers(
    headers: &mut http::HeaderMap,
    limit: u64,
    remaining: u64,
    reset_secs: u64,
) {
    headers.insert(&X_RATELIMIT_LIMIT, limit.into());
    headers.insert(&X_RATELIMIT_REMAINING, remaining.into());
    headers.insert(&X_RATELIMIT_RESET, reset_secs.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_that_need_no_decoding_come_out_as_form_urlencoded_gives_them() {
        let bodies: [&[u8]; 10] = [
            b"grant_type=client_credentials&scope=read",
            b"token=eyJhbGciOiJFUzI1NiJ9.e30.c2ln&&token_type_hint=access_token&",
            b"a=b=c&flag&=empty-name&x=",
            b"scope=read+write&note=caf%C3%A9",
            b"bad=%FF%FE&ok=1",
            b"raw=\xff",
            b"",
            b"&&&",
            b"one=1",
            b"sp=a b",
        ];
        for body in bodies {
            let ours = parse_pairs(body);
            let mut theirs = HashMap::new();
            let mut repeated = false;
            for (name, value) in form_urlencoded::parse(body) {
                repeated |= theirs
                    .insert(name.into_owned(), value.into_owned())
                    .is_some();
            }
            match ours {
                Ok(ours) => assert!(!repeated && ours == theirs, "{body:?}"),
                Err(_) => assert!(repeated, "{body:?}"),
            }
        }
        assert!(matches!(
            parse_pairs(b"a=1&a=2"),
            Err(FormError::Repeated(name)) if name == "a"
        ));
    }

    /// A client body: the given chunks, then silence forever (a client that stopped sending).
    struct Stalling(Vec<&'static [u8]>);

    impl hyper::body::Body for Stalling {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0.is_empty() {
                return Poll::Pending;
            }
            let chunk = self.0.remove(0);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk)))))
        }
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_408_and_a_long_one_a_413() {
        let stalled = read_body(
            Request::new(Stalling(vec![b"abc"])),
            64,
            Duration::from_millis(20),
        );
        let err = tokio::time::timeout(Duration::from_secs(10), stalled)
            .await
            .expect("the stalled body was waited for forever")
            .unwrap_err();
        assert_eq!(err, BodyError::Stalled);

        let long = read_body(
            Request::new(Stalling(vec![b"0123456789"])),
            4,
            Duration::from_secs(10),
        );
        let err = long.await.unwrap_err();
        assert_eq!(err, BodyError::TooLarge { limit: 4 });
    }
}
