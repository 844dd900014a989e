//! Forwarding to an upstream: pooled keep-alive client, streamed bodies both ways, timeouts.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Limits, MockResponse};
use crate::error::{GatewayError, UpstreamCause};
use crate::http_util::{
    Body, BodyStalled, ReadTimeout, WaitProbe, body_error, caused_by, empty, full, timed_body,
};
use crate::proxy::headers::strip_hop_by_hop;

/// Idle keep-alive connections kept per upstream (scheme, host, port). A burst over N client
/// connections opens up to N upstream connections; beyond this many, a connection that finishes is
/// closed instead of parked, so memory and file descriptors go back to what steady traffic needs. The
/// nginx reference of the benchmarks keeps 64 (`keepalive 64`).
const POOL_MAX_IDLE_PER_HOST: usize = 64;
/// How long an idle upstream connection is kept (hyper-util's default is 90 s). Shorter means the
/// connections of a burst are given back sooner; a request that finds its pooled connection closed
/// by the upstream meanwhile is retried on a new one by the client (`retry_canceled_requests`).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A keep-alive connection pool to every upstream, HTTP/1.1 or HTTP/2 (ALPN over TLS).
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// Kept so that [`UpstreamClient::new_pool`] shares the TLS configuration (the CA roots are read
    /// once per configuration, not once per target).
    connector: HttpsConnector<HttpConnector>,
    default_timeout: Duration,
    max_body_bytes: u64,
    /// Longest wait between two chunks of the client's request body (`limits.body_read_timeout`).
    body_read_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(limits: &Limits) -> UpstreamClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(limits.upstream_connect_timeout));
        let https = match HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(err) => {
                // A container without a CA bundle can still reach plain-HTTP upstreams.
                tracing::warn!(error = %err, "no system CA certificates; HTTPS upstreams will fail verification");
                HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            }
        }
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
        UpstreamClient {
            client: pooled_client(https.clone()),
            connector: https,
            default_timeout: limits.upstream_timeout,
            max_body_bytes: limits.max_body_bytes,
            body_read_timeout: limits.body_read_timeout,
        }
    }

    /// The same settings with a connection pool of its own: one per upstream target, so that the
    /// idle connections kept for one target never count against another's.
    pub fn new_pool(&self) -> UpstreamClient {
        UpstreamClient {
            client: pooled_client(self.connector.clone()),
            ..self.clone()
        }
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// Sends `req` (headers already rewritten) to `uri`, waiting at most `timeout` for the response head
    /// and for each chunk of the response body. The request body is streamed with the listener's
    /// `body_read_timeout` between two chunks: a client that stalls mid-body aborts the upstream
    /// request (hyper drops the upstream connection) and gets 408 unless the upstream answered first.
    /// Returns the response with hop-by-hop headers removed and the time the upstream took.
    pub async fn send(
        &self,
        req: Request<Incoming>,
        uri: Uri,
        timeout: Option<Duration>,
        api: &str,
    ) -> Result<(Response<Body>, Duration), GatewayError> {
        let (req, client_body) = self.prepare(req)?;
        self.attempt(req, uri, timeout, &client_body, api, ())
            .await
            .map_err(|failure| failure.error)
    }

    /// Wraps the client's body once for every attempt: its size limit, and the bound on each wait
    /// for its next chunk. 413 at once when the client announces more than the limit. The probe
    /// tells, when an attempt runs out of time, whether the client's body was what it waited for.
    pub fn prepare(
        &self,
        req: Request<Incoming>,
    ) -> Result<(Request<Body>, WaitProbe), GatewayError> {
        let limit = self.max_body_bytes;
        // Refuse early when the client announces too much; `Limited` catches the streamed case.
        if let Some(length) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && length > limit
        {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        // No body at all (a `GET`'s, or `Content-Length: 0`): nothing to time, limit or watch, and
        // the three wrappers, their allocations and the probe's would be spent on nothing.
        if hyper::body::Body::is_end_stream(req.body()) {
            let (parts, _) = req.into_parts();
            return Ok((Request::from_parts(parts, empty()), WaitProbe::never()));
        }
        let (parts, body) = timed_body(req, self.body_read_timeout);
        let (body, client_body) = body.observed();
        let body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .map_err(Into::into)
            .boxed();
        Ok((Request::from_parts(parts, body), client_body))
    }

    /// One attempt at one upstream: waits at most `timeout` for the response head and for each chunk
    /// of the response body. `guard` lives as long as the response body (the target's in-flight
    /// count). On failure, says whether the upstream could not even be connected to, so that the
    /// caller knows no byte of the request left. `api` names the upstream in the log line and in the
    /// client's error body (the API id, never the target's address: docs/design.md §5 bodies are for
    /// clients).
    ///
    /// Not an `async fn`: the request is handed to the client before the future is made, so the
    /// future holds only what the wait needs (about 150 bytes, not the 860 an `async fn` keeping
    /// the moved-from request and URI took). Every caller's future, and hyper's per-request copy of
    /// the whole handler future, is that much smaller (docs/benchmarks.md).
    pub fn attempt<'a, G: Send + Sync + Unpin + 'static>(
        &'a self,
        mut req: Request<Body>,
        uri: Uri,
        timeout: Option<Duration>,
        client_body: &'a WaitProbe,
        api: &'a str,
        guard: G,
    ) -> impl Future<Output = Result<(Response<Body>, Duration), Failure>> + Send + 'a {
        // For the warning below (a reference count, not a copy).
        let authority = uri.authority().cloned();
        *req.uri_mut() = uri;
        // The upstream connection decides its own version (ALPN); the client maps HTTP/1.1 onto h2.
        *req.version_mut() = Version::HTTP_11;
        let started = Instant::now();
        let timeout = timeout.unwrap_or(self.default_timeout);
        // One timer bounds the wait for the head and then, handed to the body, every wait for the
        // body's next chunk (`ReadTimeout::with_timer`): entering tokio's timer wheel once a request
        // instead of twice. Boxed, so it can move into the body while registered.
        let mut timer = Box::pin(tokio::time::sleep_until(
            tokio::time::Instant::from_std(started) + timeout,
        ));
        let mut request = self.client.request(req);
        async move {
            let result = std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = Pin::new(&mut request).poll(cx) {
                    return Poll::Ready(Ok(result));
                }
                timer.as_mut().poll(cx).map(Err)
            })
            .await;
            let upstream_latency = started.elapsed();
            let response = match result {
                // Out of time while waiting for the client's next body bytes: the client stalled (the two
                // timeouts are equal by default and this one started first).
                Err(_) if client_body.waiting() => {
                    return Err(Failure::client(GatewayError::RequestTimeout));
                }
                Err(_) => {
                    tracing::warn!(
                        api,
                        upstream = %authority.as_ref().map(|a| a.as_str()).unwrap_or(""),
                        ?timeout,
                        "upstream sent no response head in time"
                    );
                    return Err(Failure::client(GatewayError::GatewayTimeout {
                        api: api.to_owned(),
                        cause: UpstreamCause::NoAnswer,
                    }));
                }
                Ok(Err(err)) => {
                    // The client's body failed first (too large, stalled, reset): its fault, its answer.
                    if caused_by::<LengthLimitError>(&err) || caused_by::<BodyStalled>(&err) {
                        return Err(Failure::client(
                            body_error(&err, self.max_body_bytes).into(),
                        ));
                    }
                    let cause = UpstreamCause::of(&err);
                    tracing::warn!(
                        api,
                        upstream = %authority.as_ref().map(|a| a.as_str()).unwrap_or(""),
                        cause = cause.as_str(),
                        error = %error_chain(&err),
                        "upstream request failed"
                    );
                    let api = api.to_owned();
                    return Err(Failure {
                        error: match cause {
                            UpstreamCause::ConnectTimeout => {
                                GatewayError::GatewayTimeout { api, cause }
                            }
                            _ => GatewayError::BadGateway { api, cause },
                        },
                        upstream: Some(if err.is_connect() {
                            UpstreamFault::Connect
                        } else {
                            UpstreamFault::Reset
                        }),
                    });
                }
                Ok(Ok(response)) => response,
            };
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            // An upstream reset or stall mid-body surfaces as a body error, which makes hyper abort the
            // client's response (HTTP/1: connection closed; h2: RST_STREAM) instead of pretending it ended
            // cleanly. The same bound as the head applies to every wait for the next chunk.
            let body = Guarded {
                inner: ReadTimeout::with_timer(body, timeout, timer),
                _guard: guard,
            }
            .boxed();
            Ok((Response::from_parts(parts, body), upstream_latency))
        }
    }
}

impl UpstreamClient {
    /// An active health probe: `GET uri` answered 2xx or 3xx within `timeout`. A failure is the
    /// probe's result, not an incident: nothing is logged here (the state change is, by the caller).
    pub async fn probe(&self, uri: &Uri, timeout: Duration) -> bool {
        let mut req = Request::new(crate::http_util::empty());
        *req.uri_mut() = uri.clone();
        let attempt = async {
            let Ok(response) = self.client.request(req).await else {
                return false;
            };
            let ok = response.status().is_success() || response.status().is_redirection();
            // Read (a bounded amount of) the body so the connection can be kept for the next probe.
            let mut body = response.into_body();
            let mut read = 0usize;
            while read < 64 * 1024 {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            ok
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(false)
    }
}

fn pooled_client(
    connector: HttpsConnector<HttpConnector>,
) -> Client<HttpsConnector<HttpConnector>, Body> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // Without a timer hyper-util never evicts idle connections: the timeout above would only
        // be looked at on checkout, and a burst's connections would stay open (and hold their
        // buffers) until the upstream closed them.
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// A failed attempt: the answer for the client, and what went wrong at the upstream when it was
/// the upstream (for passive health checks and retries).
#[derive(Debug)]
pub struct Failure {
    pub error: GatewayError,
    pub upstream: Option<UpstreamFault>,
}

impl Failure {
    fn client(error: GatewayError) -> Failure {
        Failure {
            error,
            upstream: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFault {
    /// No connection could be made (refused, unreachable, connect timeout): nothing was sent.
    Connect,
    /// The connection failed after it was made and before a response head arrived: the request, or
    /// part of it, may have reached the target.
    Reset,
}

pin_project_lite::pin_project! {
    /// A response body that holds `guard` until hyper drops it (sent, or the client went away).
    struct Guarded<B, G> {
        #[pin]
        inner: B,
        _guard: G,
    }
}

impl<B: hyper::body::Body, G> hyper::body::Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Builds the upstream URI from the API's base and the already-computed path and query.
/// `base`'s scheme and authority with `path_and_query` (taken as it is: no copy).
pub fn upstream_uri(base: &Uri, path_and_query: String) -> Result<Uri, GatewayError> {
    let path_and_query = PathAndQuery::try_from(path_and_query)
        .map_err(|_| GatewayError::BadRequest("invalid request target"))?;
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| GatewayError::Internal)
}

pub fn mock_response(mock: &MockResponse) -> Response<Body> {
    let mut response = Response::new(full(mock.body.clone()));
    *response.status_mut() = mock.status;
    *response.headers_mut() = mock.headers.clone();
    if !response.headers().contains_key(header::CONTENT_TYPE) && !mock.body.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        out.push_str(": ");
        out.push_str(&e.to_string());
        current = e.source();
    }
    out
}

/// A request body that can be offered to several attempts as long as none has started reading it:
/// the body waits in a shared slot and the first attempt that reads a frame takes it for good. So a
/// retry after a connect error finds the body untouched, and a body that began to stream is never
/// sent twice (no byte of it is buffered for a retry).
pub struct Replayable {
    /// `None` for an empty body, which is made again for every attempt after the first.
    slot: Option<std::sync::Arc<std::sync::Mutex<Option<Body>>>>,
    /// The empty body itself, for the first attempt (no new allocation on the common path).
    first_empty: Option<Body>,
}

impl Replayable {
    pub fn new(body: Body) -> Replayable {
        use hyper::body::Body as _;
        if body.is_end_stream() {
            return Replayable {
                slot: None,
                first_empty: Some(body),
            };
        }
        Replayable {
            slot: Some(std::sync::Arc::new(std::sync::Mutex::new(Some(body)))),
            first_empty: None,
        }
    }

    /// The body for the next attempt.
    pub fn take(&mut self) -> Body {
        match &self.slot {
            None => self
                .first_empty
                .take()
                .unwrap_or_else(crate::http_util::empty),
            Some(slot) => SlotBody {
                slot: slot.clone(),
                taken: None,
            }
            .boxed(),
        }
    }

    /// Whether no attempt has read from the body yet.
    pub fn intact(&self) -> bool {
        match &self.slot {
            None => true,
            Some(slot) => slot.lock().is_ok_and(|body| body.is_some()),
        }
    }
}

struct SlotBody {
    slot: std::sync::Arc<std::sync::Mutex<Option<Body>>>,
    taken: Option<Body>,
}

impl SlotBody {
    fn peek<T>(&self, f: impl FnOnce(&Body) -> T) -> Option<T> {
        match &self.taken {
            Some(body) => Some(f(body)),
            None => self.slot.lock().ok()?.as_ref().map(f),
        }
    }
}

impl hyper::body::Body for SlotBody {
    type Data = bytes::Bytes;
    type Error = crate::http_util::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.taken.is_none() {
            let body = self.slot.lock().ok().and_then(|mut slot| slot.take());
            match body {
                Some(body) => self.taken = Some(body),
                None => {
                    return std::task::Poll::Ready(Some(Err(
                        "the request body was already sent to another target".into(),
                    )));
                }
            }
        }
        match self.taken.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.peek(|b| b.is_end_stream()).unwrap_or(false)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.peek(|b| b.size_hint()).unwrap_or_default()
    }
}
