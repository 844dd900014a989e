//! Token event notifications (Tyk's `notifications`) over real sockets: signed deliveries to a
//! receiver, and the bounds that hold when the receiver hangs.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::oauth::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SERVICE_SECRET: &str = "service-secret-0123456789";
const HOOK_SECRET: &str = "hook-secret-0123456789";

fn service_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tollgate::secrets::hash_secret(SERVICE_SECRET).expect("hash"))
}

async fn gateway(hook_url: &str) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{}" }}
auth: {{ type: oauth2 }}
oauth:
  grant_types: [client_credentials]
  scopes: [read]
  notifications: {{ url: "{hook_url}", shared_secret: {HOOK_SECRET} }}
  clients:
    - client_id: service
      secret_hash: "{}"
      grant_types: [client_credentials]
      scopes: [read]
"#,
            upstream.url(),
            service_hash()
        ),
    );
    (TestGateway::start(config).await, upstream)
}

async fn issue_token(gw: &TestGateway) -> TestResponse {
    post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await
}

/// One received notification: its signature header and body.
#[derive(Debug, Clone)]
struct Delivery {
    signature: String,
    body: Vec<u8>,
}

/// A receiver that answers 200 to every POST and records what it got.
async fn answering_receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                    };
                    let length: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    let body = buf[end + 4..end + 4 + length].to_vec();
                    buf.drain(..end + 4 + length);
                    record.lock().unwrap().push(Delivery {
                        signature: header("x-tollgate-signature").unwrap_or_default(),
                        body,
                    });
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (format!("http://{addr}/hook"), seen)
}

/// A receiver that accepts connections and never answers; counts how many are open at most.
async fn hanging_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let most_seen = most.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let open = open.clone();
            tokio::spawn(async move {
                // Read (and ignore) until the gateway gives up and closes.
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (format!("http://{addr}/hook"), most_seen)
}

#[tokio::test]
async fn a_new_token_is_notified_with_a_verifiable_signature() {
    let (url, seen) = answering_receiver().await;
    let (gw, _upstream) = gateway(&url).await;
    let issued = issue_token(&gw).await;
    assert_eq!(issued.status, 200, "{}", issued.text());

    assert!(
        eventually(Duration::from_secs(10), || async {
            !seen.lock().unwrap().is_empty()
        })
        .await,
        "no notification arrived"
    );
    let delivery = seen.lock().unwrap()[0].clone();
    assert_eq!(
        delivery.signature,
        tollgate::oauth::notify::signature(HOOK_SECRET, &delivery.body)
    );
    let event: serde_json::Value = serde_json::from_slice(&delivery.body).expect("json");
    assert_eq!(event["notification_type"], "new");
    assert_eq!(event["client_id"], "service");
    assert_eq!(event["new_oauth_token"], issued.json()["access_token"]);
}

#[tokio::test]
async fn a_hanging_receiver_holds_a_bounded_number_of_deliveries_and_the_rest_are_dropped() {
    let (url, most_open) = hanging_receiver().await;
    let (gw, _upstream) = gateway(&url).await;
    // 64 deliveries in flight + 1,024 queued, then more: some must be dropped.
    let gw = Arc::new(gw);
    let mut batch = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let gw = gw.clone();
        batch.spawn(async move {
            for _ in 0..80 {
                let issued = issue_token(&gw).await;
                assert_eq!(issued.status, 200, "{}", issued.text());
            }
        });
    }
    while let Some(done) = batch.join_next().await {
        done.expect("token requests");
    }

    let metrics = gw.admin_get("/metrics").await.text();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_notifications_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tollgate_notifications_dropped_total in /metrics");
    // 1,280 events; at most 64 + 1,024 (+ the one the sender task holds) can be kept.
    assert!(dropped >= 1280 - 64 - 1024 - 1, "dropped {dropped}");
    assert!(
        most_open.load(Ordering::SeqCst) <= 64,
        "{} connections open at the receiver",
        most_open.load(Ordering::SeqCst)
    );
    // Token issuance never waited on the receiver, and the gateway still answers.
    assert_eq!(issue_token(&gw).await.status, 200);
}
