//! The floor of the load comparison (shared/BENCHMARKS.md, docs/benchmarks.md): a minimal hyper
//! reverse proxy built from the same hyper and hyper-util versions as tollgate (Cargo.lock), with no
//! features at all — what any hyper-based proxy costs on this machine. tollgate's own overhead is
//! what it costs above this. Not part of the gateway; `benches/load/run.sh` builds and runs it:
//!
//! ```text
//! cargo build --release --example floor_proxy
//! target/release/examples/floor_proxy LISTEN UPSTREAM [PREFIX]
//! target/release/examples/floor_proxy 127.0.0.1:8081 127.0.0.1:9000 /bench
//! ```
//!
//! A request for `PREFIX/x` goes to `http://UPSTREAM/x` (like nginx's `proxy_pass .../;` and
//! tollgate's `strip_listen_path`) through hyper-util's pooled legacy client, on tokio's default
//! multi-thread runtime: the same building blocks tollgate uses, nothing else.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: floor_proxy LISTEN UPSTREAM [PREFIX]");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse()?;
    // Read for the whole process: leaked once instead of cloned per request.
    let upstream: &'static str = Box::leak(upstream.into_boxed_str());
    let prefix: &'static str = Box::leak(args.next().unwrap_or_default().into_boxed_str());
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                forward(client.clone(), upstream, prefix, req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: &str,
    prefix: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let path = path.strip_prefix(prefix).unwrap_or(path);
    let Ok(uri) = format!("http://{upstream}{path}").parse::<Uri>() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *req.uri_mut() = uri;
    Ok(match client.request(req).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
}
