//! Shared test harness: a config folder, a real upstream, a gateway started through the library on
//! 127.0.0.1:0, and small HTTP helpers. Each test reads as the scenario it checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_SECRET: &str = "test-admin-secret-0123456789";

/// A temporary folder holding gateway.yaml and api-definitions/.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// gateway.yaml with test defaults; `extra` is appended (top-level YAML keys).
    pub fn new(extra: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("api-definitions")).expect("mkdir");
        let cfg = ConfigDir { dir };
        cfg.write(
            "gateway.yaml",
            &format!(
                "listen: 127.0.0.1:0\n\
                 public_url: http://127.0.0.1:8080\n\
                 admin: {{ listen: 127.0.0.1:0, secret: {ADMIN_SECRET} }}\n\
                 signing: {{ key_file: keys/signing.pem, generate: true }}\n\
                 log: {{ level: warn }}\n{extra}"
            ),
        );
        cfg
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn gateway_yaml(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub fn write(&self, name: &str, content: &str) {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, content).expect("write config file");
    }

    /// users.yaml with the one user `alice`: `password` (hashed once per test binary) and `scopes`
    /// (a YAML list). gateway.yaml must name it (`users: users.yaml`).
    pub fn alice(&self, password: &'static str, scopes: &str) {
        let hash = oauth::hashed(password);
        self.write(
            "users.yaml",
            &format!("- username: alice\n  password_hash: \"{hash}\"\n  scopes: {scopes}\n"),
        );
    }

    /// Writes `api-definitions/<id>.yaml`.
    pub fn api(&self, id: &str, yaml: &str) {
        self.write(&format!("api-definitions/{id}.yaml"), yaml);
    }

    pub fn remove_api(&self, id: &str) {
        let _ = std::fs::remove_file(self.dir.path().join(format!("api-definitions/{id}.yaml")));
    }

    /// A copy of every file of `self` (gateway.yaml, users, API definitions, the generated signing
    /// key): what an operator gives every node of a cluster.
    pub fn same_files(&self) -> ConfigDir {
        let to = ConfigDir::new("");
        copy_tree(self.path(), to.path());
        to
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read config dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A minimal API definition without auth, forwarding to `upstream`.
pub fn open_api(listen_path: &str, upstream: &str) -> String {
    format!(
        "listen_path: {listen_path}\nupstream: {{ url: \"{upstream}\" }}\nauth: {{ type: none }}\n"
    )
}

/// The gateway, running in the test's runtime.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: ConfigDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), tollgate::RunError>>>,
}

impl TestGateway {
    pub async fn start(config: ConfigDir) -> TestGateway {
        Self::try_start(config)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e}"))
    }

    /// Starts with `options`, e.g. a manual clock for the rate limiter.
    pub async fn start_with(config: ConfigDir, options: tollgate::RunOptions) -> TestGateway {
        Self::try_start_with(config, options)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e}"))
    }

    pub async fn try_start(config: ConfigDir) -> Result<TestGateway, String> {
        Self::try_start_with(config, tollgate::RunOptions::default()).await
    }

    pub async fn try_start_with(
        config: ConfigDir,
        options: tollgate::RunOptions,
    ) -> Result<TestGateway, String> {
        init_test_log();
        let loaded = tollgate::Config::load(&config.gateway_yaml()).map_err(|e| e.to_string())?;
        let listeners = tollgate::Listeners {
            proxy: TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?,
            admin: Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        let addr = listeners.proxy_addr().map_err(|e| e.to_string())?;
        let admin = listeners.admin_addr().ok_or("no admin address")?;
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(tollgate::run_with(
            loaded,
            listeners,
            async move {
                let _ = rx.await;
            },
            options,
        ));
        Ok(TestGateway {
            addr,
            admin,
            config,
            shutdown: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Sends the shutdown signal without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("gateway task").expect("gateway run");
        }
    }

    pub async fn join(&mut self) -> Result<(), tollgate::RunError> {
        match self.handle.take() {
            Some(handle) => handle.await.expect("gateway task"),
            None => Ok(()),
        }
    }

    pub async fn admin_post(&self, path: &str) -> TestResponse {
        send(
            Request::post(self.admin_url(path))
                .header("authorization", format!("Bearer {ADMIN_SECRET}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    }

    pub async fn admin_get(&self, path: &str) -> TestResponse {
        send(
            Request::get(self.admin_url(path))
                .header("authorization", format!("Bearer {ADMIN_SECRET}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    }
}

impl TestGateway {
    /// An admin request with the admin secret and, when given, a JSON body.
    pub async fn admin_send(
        &self,
        method: &str,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> TestResponse {
        let mut req = Request::builder()
            .method(method)
            .uri(self.admin_url(path))
            .header("authorization", format!("Bearer {ADMIN_SECRET}"));
        let body = match json {
            Some(value) => {
                req = req.header("content-type", "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        send(req.body(Full::new(body)).unwrap()).await
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub async fn send(req: Request<Full<Bytes>>) -> TestResponse {
    let response = client().request(req).await.expect("request failed");
    collect(response).await
}

pub async fn collect(response: Response<Incoming>) -> TestResponse {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> TestResponse {
    send(Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::new(Bytes::new())).unwrap()).await
}

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real HTTP upstream on 127.0.0.1:0 that records every request and answers
/// `200 {"upstream":"ok","path":...}`. Paths ending in `/slow` wait 2 s before answering;
/// `X-Test-Delay-Ms: N` waits N ms; `X-Test-Response-Connection` sets hop-by-hop headers on the answer.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        async move { Ok::<_, hyper::Error>(upstream_answer(req, record).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn upstream_answer(
    req: Request<Incoming>,
    record: Arc<Mutex<Vec<Seen>>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    record.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let delay = parts
        .headers
        .get("x-test-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::json!({"upstream": "ok", "path": target, "body_len": body.len()}).to_string(),
    )));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if parts.headers.contains_key("x-test-response-connection") {
        let h = response.headers_mut();
        h.insert("connection", "x-upstream-private".parse().unwrap());
        h.insert("x-upstream-private", "secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-upstream-public", "yes".parse().unwrap());
    }
    response
}

/// An upstream that announces a 1000-byte body, sends 10 bytes and closes the connection.
pub async fn resetting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                let _ = stream.flush().await;
                // Dropping the stream closes it mid-body.
            });
        }
    });
    addr
}

/// A port on which nothing listens (bound then closed).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// Writes raw bytes on a new connection and reads until the gateway closes it or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Status codes of every response in a raw HTTP/1.1 byte stream, in order.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// How long a change may take to reach another node (or a background task) before a test calls it lost.
/// Not a speed claim: a loaded CI machine may take a while; how fast changes travel is a benchmark.
pub const PROPAGATION: Duration = Duration::from_secs(10);

/// Polls `check` until it returns true or `limit` passes; for effects that happen in the background
/// (file-watch reload). Returns whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// How long a "never a hang" test waits before it calls the wait a hang: far above anything the
/// gateway's own bounds allow (they are set to fractions of a second in those tests), so a loaded
/// CI machine never fails it by slowness, while a real hang fails instead of holding the suite.
pub const HANG: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`HANG`].
pub async fn never_hangs<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(HANG, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {HANG:?}, a hang"),
    }
}

/// A listening socket that completes no further TCP handshake: its accept queue is full (backlog 0,
/// filled by connections that are never accepted), so the kernel drops new SYNs and a connect to it
/// waits until the connecting side gives up. Keep the value alive while it is needed.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _queued: Vec<TcpStream>,
}

impl BlackHole {
    pub async fn start() -> BlackHole {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut queued = Vec::new();
        // Fill the queue: a connect that does not complete within a second found it full.
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(err)) => panic!("connect to the black hole: {err}"),
                Err(_) => {
                    return BlackHole {
                        addr,
                        _listener: listener,
                        _queued: queued,
                    };
                }
            }
        }
        panic!("the accept queue of {addr} never filled");
    }
}

pub fn header_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub mod logs;
pub mod oauth;
pub mod redis;

/// The gateway's logs in test output, opt-in: `TOLLGATE_TEST_LOG=debug cargo test --test proxy` (any
/// level from trace to error). Off by default so that a passing run stays quiet; libtest captures the
/// lines per test and shows them only for a failing one.
fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(level) = std::env::var("TOLLGATE_TEST_LOG") else {
            return;
        };
        let level: tracing_subscriber::filter::LevelFilter = level
            .parse()
            .unwrap_or(tracing_subscriber::filter::LevelFilter::DEBUG);
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_test_writer()
            .try_init();
    });
}
