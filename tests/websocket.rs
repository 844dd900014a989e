//! WebSockets through the gateway with a real client (tokio-tungstenite): the upgrade is
//! authenticated and its credential stripped, messages are echoed both ways, an idle tunnel is closed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::oauth::basic;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &str = "client-secret-0123456789";

/// A WebSocket echo server; records the `Authorization` header of every handshake it accepted.
// The handshake callback's signature is tungstenite's; its error type is large by its design.
#[allow(clippy::result_large_err)]
async fn echo_upstream() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let callback =
                    |req: &tungstenite::handshake::server::Request,
                     response: tungstenite::handshake::server::Response| {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        record.lock().unwrap().push(auth);
                        Ok(response)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        if ws.send(message).await.is_err() {
                            return;
                        }
                    } else if message.is_close() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

async fn start(extra: &str) -> (TestGateway, Arc<Mutex<Vec<Option<String>>>>) {
    let (upstream, seen) = echo_upstream().await;
    let hash = tollgate::secrets::hash_secret(SECRET).expect("hash");
    let config = ConfigDir::new(extra);
    config.api(
        "chat",
        &format!(
            "listen_path: /chat/\n\
             upstream: {{ url: \"{upstream}\", websockets: true }}\n\
             oauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n    - {{ client_id: svc, secret_hash: \"{hash}\", grant_types: [client_credentials], scopes: [read] }}\n"
        ),
    );
    (TestGateway::start(config).await, seen)
}

async fn token(gw: &TestGateway) -> String {
    let response = send(
        Request::post(gw.url("/chat/oauth/token"))
            .header("authorization", basic("svc", SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(
                b"grant_type=client_credentials",
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["access_token"].as_str().unwrap().to_owned()
}

fn ws_request(gw: &TestGateway, token: Option<&str>) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{}/chat/room", gw.addr)
        .into_client_request()
        .expect("request");
    if let Some(token) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    req
}

async fn tunnels_open(gw: &TestGateway) -> String {
    gw.admin_get("/metrics")
        .await
        .text()
        .lines()
        .find(|l| l.starts_with("tollgate_tunnels_open "))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn messages_are_echoed_through_the_gateway_and_the_token_stays_behind() {
    let (gw, seen) = start("").await;
    let token = token(&gw).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(ws_request(&gw, Some(&token)))
        .await
        .expect("upgrade through the gateway");
    assert_eq!(response.status(), 101);

    for text in ["hello", "second message", &"x".repeat(100_000)] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("an echo")
            .expect("open")
            .expect("a message");
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), &[0u8, 1, 2, 255]);
    assert_eq!(tunnels_open(&gw).await, "tollgate_tunnels_open 1");
    // The upgrade request reached the upstream without the client's credential.
    assert_eq!(seen.lock().unwrap().as_slice(), &[None]);

    ws.close(None).await.expect("close");
    assert!(
        eventually(Duration::from_secs(20), || async {
            tunnels_open(&gw).await == "tollgate_tunnels_open 0"
        })
        .await,
        "the tunnel stayed open after the close"
    );
}

#[tokio::test]
async fn an_upgrade_without_a_token_is_refused_before_the_upstream() {
    let (gw, seen) = start("").await;
    let err = tokio_tungstenite::connect_async(ws_request(&gw, None))
        .await
        .expect_err("an upgrade without a token");
    let tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err:?}");
    };
    assert_eq!(response.status(), 401);
    assert!(
        response
            .headers()
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer realm=\"chat\""))
    );
    assert!(seen.lock().unwrap().is_empty());

    let err = tokio_tungstenite::connect_async(ws_request(&gw, Some("not-a-token")))
        .await
        .expect_err("an upgrade with a bad token");
    let tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err:?}");
    };
    assert_eq!(response.status(), 401);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
    let (gw, _) = start("limits: { tunnel_idle_timeout: 500ms }\n").await;
    let token = token(&gw).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&gw, Some(&token)))
        .await
        .expect("upgrade");
    // Traffic keeps it open past the timeout...
    for _ in 0..4 {
        ws.send(Message::text("keep")).await.expect("send");
        assert!(ws.next().await.unwrap().is_ok());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...silence closes it: the stream ends (with or without a close frame).
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the idle tunnel was not closed");
    assert!(
        eventually(Duration::from_secs(20), || async {
            tunnels_open(&gw).await == "tollgate_tunnels_open 0"
        })
        .await
    );
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_after_the_grace_period() {
    let (mut gw, _) = start("limits: { shutdown_grace: 1s }\n").await;
    let token = token(&gw).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&gw, Some(&token)))
        .await
        .expect("upgrade");
    ws.send(Message::text("before")).await.expect("send");
    assert!(ws.next().await.unwrap().is_ok());

    gw.begin_shutdown();
    // The tunnel is closed by the gateway (the client never closes it), and the gateway stops.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel outlived the shutdown");
    let stopped = tokio::time::timeout(Duration::from_secs(20), gw.join()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}
