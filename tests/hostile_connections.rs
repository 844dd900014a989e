//! Hostile connections over real sockets (issue 9): stalled bodies, idle connections, one address
//! holding every slot, stalled upstream bodies, oversized and trickled heads. Every test configures
//! short timeouts; durations in assertions are only generous upper bounds that detect a hang.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Far longer than any timeout configured here: reaching it means the gateway never acted.
const HANG: Duration = Duration::from_secs(10);

async fn movies_gateway(limits: &str) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new(&format!("limits: {{ {limits} }}\n"));
    config.api("movies", &open_api("/movies/", &upstream.url()));
    (TestGateway::start(config).await, upstream)
}

/// A gateway with an OAuth API (`/movies/oauth/token`) and an open one (`/open/`).
async fn oauth_gateway(limits: &str) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new(&format!("limits: {{ {limits} }}\n"));
    let hash = tollgate::secrets::hash_secret("service-secret-0123456789").expect("hash");
    config.api(
        "movies",
        &format!(
            "listen_path: /movies/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: oauth2 }}\n\
             oauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n\
             \x20   - client_id: service\n      secret_hash: \"{hash}\"\n      grant_types: [client_credentials]\n      scopes: [read]\n",
            upstream.url()
        ),
    );
    (TestGateway::start(config).await, upstream)
}

/// Connects from a chosen loopback address (Linux routes all of 127/8 to lo).
async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse::<IpAddr>().expect("ip"), 0))?;
    socket.connect(to).await
}

/// Reads until the peer closes (or resets) the connection; `None` if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Reads one response head (up to the blank line) from a connection that stays open.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(HANG, stream.read(&mut byte)).await {
            Ok(Ok(1)) => out.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const TOKEN_HEADERS: &[u8] = b"POST /movies/oauth/token HTTP/1.1\r\nHost: x\r\n\
    Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n";

#[tokio::test]
async fn stalled_token_request_bodies_cannot_hold_every_connection_slot() {
    // The attack of issue 9: as many connections as there are slots send a token request's headers
    // and never its body. `max_connections_per_ip` is unset, so it defaults to half the slots (25).
    // The body timeout is long enough that all 50 connect before the first stall is cut off.
    let (gw, _upstream) =
        oauth_gateway("max_connections: 50, body_read_timeout: 2s, header_read_timeout: 5s").await;
    let mut attackers = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        // A connection refused at accept may already be closed: the write error is part of the answer.
        let _ = stream.write_all(TOKEN_HEADERS).await;
        attackers.push(stream);
    }

    // Another address is served while the attacker holds everything it can.
    let mut other = connect_from("127.0.0.2", gw.addr).await.unwrap();
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let health = read_until_closed(&mut other, HANG).await.expect(
        "/health from another address got no answer while stalled token requests were open",
    );
    let health = String::from_utf8_lossy(&health);
    assert_eq!(statuses(&health), vec![200], "{health}");

    // Past its cap the attacker's connections were closed at accept; the others got 408 and were
    // closed once their bodies stalled.
    let (mut timed_out, mut refused) = (0, 0);
    for mut stream in attackers {
        let answer = read_until_closed(&mut stream, HANG)
            .await
            .expect("a stalled token request kept its connection");
        let answer = String::from_utf8_lossy(&answer);
        if answer.is_empty() {
            refused += 1;
            continue;
        }
        assert_eq!(statuses(&answer), vec![408], "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        timed_out += 1;
    }
    assert!(
        timed_out <= 25,
        "{timed_out} connections of one address were served"
    );
    assert_eq!(timed_out + refused, 50);

    // And once the stalls are cut off, the attacker's own address is served again.
    let health = raw_exchange_once(
        gw.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&health), vec![200], "{health}");
}

#[tokio::test]
async fn every_oauth_endpoint_that_reads_a_body_answers_a_stall_with_408() {
    let (gw, _upstream) = oauth_gateway("body_read_timeout: 300ms").await;
    for endpoint in ["token", "revoke", "introspect", "authorize"] {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /movies/oauth/{endpoint} HTTP/1.1\r\nHost: x\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken="
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream, HANG)
            .await
            .unwrap_or_else(|| panic!("oauth/{endpoint} kept a stalled body's connection open"));
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(statuses(&answer), vec![408], "oauth/{endpoint}: {answer}");
    }
}

/// One request on a fresh connection; reads until the gateway closes it.
async fn raw_exchange_once(addr: SocketAddr, request: &[u8]) -> String {
    raw_exchange(addr, request, HANG).await
}

#[tokio::test]
async fn a_second_address_is_served_while_the_first_holds_its_cap() {
    let (gw, _upstream) = oauth_gateway(
        "max_connections: 20, max_connections_per_ip: 5, body_read_timeout: 60s, header_read_timeout: 60s",
    )
    .await;
    // 127.0.0.1 tries to take every one of the 20 slots with stalled token requests.
    let mut attempts = Vec::new();
    for _ in 0..20 {
        let mut stream = connect_from("127.0.0.1", gw.addr).await.unwrap();
        // A refused connection is closed at accept: this write may fail.
        let _ = stream.write_all(TOKEN_HEADERS).await;
        attempts.push(stream);
    }
    // Once the gateway has counted 15 refusals, those 15 are closed already; the rest are held.
    let counted = eventually(HANG, || async {
        gw.admin_get("/metrics")
            .await
            .text()
            .contains("tollgate_connections_refused_total{reason=\"per_ip\"} 15")
    })
    .await;
    assert!(counted, "15 refusals were not counted in /metrics");
    let mut held = Vec::new();
    for mut stream in attempts {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut [0u8; 64])).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(_)) => panic!("a stalled request got an answer"),
            Err(_) => held.push(stream),
        }
    }
    assert_eq!(held.len(), 5, "127.0.0.1 holds exactly its cap");

    // Another address is served at once, on the proxy listener.
    let mut other = connect_from("127.0.0.2", gw.addr).await.unwrap();
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut other, HANG)
        .await
        .expect("127.0.0.2 was not served");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(statuses(&answer), vec![200], "{answer}");

    // Closing one held connection gives 127.0.0.1 a slot back.
    drop(held.pop());
    let answer = tokio::time::timeout(HANG, async {
        loop {
            let answer = raw_exchange(
                gw.addr,
                b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                HANG,
            )
            .await;
            if !answer.is_empty() {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("127.0.0.1 never got its slot back");
    assert_eq!(statuses(&answer), vec![200], "{answer}");
}

/// Sends the head of a 100-byte upload and its first 10 bytes, then nothing; everything the gateway
/// answers until it closes the connection.
async fn stalled_upload(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /movies/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nfirst ten.",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, HANG)
        .await
        .expect("the connection stayed open with a stalled body");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_stalled_request_body_on_the_proxy_path_gets_408_and_is_closed() {
    let (gw, upstream) = movies_gateway("body_read_timeout: 300ms").await;
    let answer = stalled_upload(gw.addr).await;
    assert_eq!(statuses(&answer), vec![408], "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // The upstream got the head, then its request was aborted: its body read failed (the test
    // upstream records a failed body as empty) instead of waiting for the rest.
    assert!(
        eventually(HANG, || async { upstream.count() == 1 }).await,
        "the upstream request was left hanging"
    );
    assert!(upstream.last().body.is_empty(), "{:?}", upstream.last());
    // The gateway keeps serving.
    assert_eq!(get(&gw.url("/movies/after")).await.status, 200);
}

#[tokio::test]
async fn a_stalled_request_body_is_408_even_when_the_upstream_timeout_ends_first() {
    // The upstream timeout also covers sending the body; when it ends while the gateway is waiting
    // for the client's next bytes, the client stalled: 408, not 504.
    let (gw, _upstream) = movies_gateway("body_read_timeout: 30s, upstream_timeout: 300ms").await;
    let answer = stalled_upload(gw.addr).await;
    assert_eq!(statuses(&answer), vec![408], "{answer}");
}

#[tokio::test]
async fn a_trickled_body_is_not_a_stalled_one() {
    // One byte every 100 ms with 300 ms allowed between reads: slow, never stalled.
    let (gw, upstream) = movies_gateway("body_read_timeout: 300ms").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /movies/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for byte in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let answer = read_until_closed(&mut stream, HANG)
        .await
        .expect("no answer");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(statuses(&answer), vec![200], "{answer}");
    assert_eq!(upstream.last().body.as_ref(), b"0123456789");
}

#[tokio::test]
async fn a_stalled_admin_api_body_gets_408() {
    let (gw, _upstream) = oauth_gateway("body_read_timeout: 300ms").await;
    let mut stream = TcpStream::connect(gw.admin).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /apis/movies/clients HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_SECRET}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"client_id\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, HANG)
        .await
        .expect("the admin connection stayed open with a stalled body");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(statuses(&answer), vec![408], "{answer}");
}

/// An upstream that sends a response head and part of the body, then keeps the connection open and
/// silent.
async fn stalling_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.read(&mut [0u8; 4096]).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_secs(600)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stalled_upstream_body_aborts_the_client_response() {
    let upstream = Upstream::start().await;
    let stalling = stalling_upstream().await;
    let config = ConfigDir::new("limits: { upstream_timeout: 500ms }\n");
    config.api("stall", &open_api("/stall/", &format!("http://{stalling}")));
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let gw = TestGateway::start(config).await;

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /stall/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, HANG)
        .await
        .expect("the client's connection stayed open while the upstream body stalled");
    let answer = String::from_utf8_lossy(&answer);
    // The head and the first bytes went through; then the response was cut short, not completed.
    assert_eq!(statuses(&answer), vec![200], "{answer}");
    assert!(answer.ends_with("0123456789"), "{answer}");
    // The gateway keeps serving.
    assert_eq!(get(&gw.url("/movies/after")).await.status, 200);
}

/// A keep-alive connection to a gateway with `limits` that has been answered once (200).
async fn answered_once(limits: &str) -> (TestGateway, Upstream, TcpStream) {
    let (gw, upstream) = movies_gateway(limits).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /movies/a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (gw, upstream, stream)
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    // header_read_timeout is long so that only idle_timeout can close the connection.
    let (_gw, _upstream, mut stream) =
        answered_once("idle_timeout: 300ms, header_read_timeout: 30s").await;
    assert!(
        read_until_closed(&mut stream, HANG).await.is_some(),
        "the idle keep-alive connection stayed open"
    );
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// The frame types in a stream of raw HTTP/2 frames (server preface included).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = bytes.get(9 + len..).unwrap_or_default();
    }
    types
}

/// An h2c connection that sends the preface and SETTINGS and nothing else, to a gateway with
/// `limits`: it must get GOAWAY and be closed; `why` says what it would mean if it stayed open.
async fn h2c_without_requests_gets_goaway(limits: &str, why: &str) {
    let (gw, _upstream) = movies_gateway(limits).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    stream.write_all(H2_EMPTY_SETTINGS).await.unwrap();
    let frames = read_until_closed(&mut stream, HANG).await.expect(why);
    const GOAWAY: u8 = 7;
    assert!(
        frame_types(&frames).contains(&GOAWAY),
        "closed without GOAWAY: frame types {:?}",
        frame_types(&frames)
    );
}

#[tokio::test]
async fn an_idle_h2c_connection_gets_goaway_and_is_closed() {
    h2c_without_requests_gets_goaway(
        "idle_timeout: 300ms, header_read_timeout: 30s",
        "a connection with only the preface and SETTINGS stayed open",
    )
    .await;
}

#[tokio::test]
async fn an_h2c_connection_that_never_sends_a_request_is_closed_after_header_read_timeout() {
    // idle_timeout is long: only the first-request bound can close this connection in time.
    h2c_without_requests_gets_goaway(
        "idle_timeout: 60s, header_read_timeout: 300ms",
        "an HTTP/2 connection without a request held its slot past header_read_timeout",
    )
    .await;
}

#[tokio::test]
async fn a_keep_alive_connection_waiting_for_its_next_head_is_closed_after_header_read_timeout() {
    let (_gw, _upstream, mut stream) =
        answered_once("idle_timeout: 60s, header_read_timeout: 300ms").await;
    // Half of the next head, then nothing.
    stream
        .write_all(b"GET /movies/b HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut stream, HANG).await.is_some(),
        "a half-sent second head held the connection past header_read_timeout"
    );
}

#[tokio::test]
async fn a_head_over_max_header_bytes_gets_431() {
    let (gw, upstream) = movies_gateway("max_header_bytes: 16384").await;
    // A head that starts like HTTP/2's preface (`P`, as in POST) is read further before hyper knows
    // the protocol (server/mod.rs): the limit holds on both kinds.
    for method in ["GET", "POST"] {
        let big = format!(
            "{method} /movies/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "a".repeat(20_000)
        );
        let answer = raw_exchange(gw.addr, big.as_bytes(), HANG).await;
        assert_eq!(statuses(&answer).first(), Some(&431), "{method}: {answer}");

        // Just under the limit is fine.
        let fits = format!(
            "{method} /movies/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "a".repeat(12_000)
        );
        let answer = raw_exchange(gw.addr, fits.as_bytes(), HANG).await;
        assert_eq!(statuses(&answer), vec![200], "{method}: {answer}");
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn more_than_100_header_fields_get_431() {
    // A mock upstream: the limit under test is the gateway's, not a real upstream's (which would see
    // the forwarding headers the gateway adds on top).
    let config = ConfigDir::new("");
    config.api(
        "hello",
        "listen_path: /hello/\nupstream:\n  mock: { status: 200, body: hi }\nauth: { type: none }\n",
    );
    let gw = TestGateway::start(config).await;
    // Both kinds of first byte, as above.
    for method in ["GET", "POST"] {
        let head = |fields: usize| {
            let mut head =
                format!("{method} /hello/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
            for i in 0..fields {
                head.push_str(&format!("X-Field-{i}: v\r\n"));
            }
            head + "\r\n"
        };
        // Host and Connection plus 99 more: 101 fields.
        let answer = raw_exchange(gw.addr, head(99).as_bytes(), HANG).await;
        assert_eq!(statuses(&answer).first(), Some(&431), "{method}: {answer}");
        // Exactly 100 is allowed.
        let answer = raw_exchange(gw.addr, head(98).as_bytes(), HANG).await;
        assert_eq!(statuses(&answer), vec![200], "{method}: {answer}");
    }
}

#[tokio::test]
async fn a_head_trickled_one_byte_at_a_time_is_cut_off() {
    // Every byte arrives well within any per-read bound; the whole head never does within
    // header_read_timeout. The gateway must not wait for it.
    let (gw, upstream) = movies_gateway("header_read_timeout: 500ms").await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let head = format!(
            "GET /movies/a HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n",
            "a".repeat(400)
        );
        for byte in head.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    });
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(HANG, read.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the trickling client was not cut off");
    writer.abort();
    assert!(upstream.seen().is_empty());
}

/// An HTTP/2 (prior knowledge) connection to the gateway.
async fn h2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn an_h2_header_list_over_max_header_bytes_gets_431() {
    let (gw, upstream) = movies_gateway("max_header_bytes: 16384").await;
    let mut sender = h2_client(gw.addr).await;
    let req = http::Request::get(gw.url("/movies/a"))
        .header("x-big", "a".repeat(20_000))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 431);
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_stalled_upstream_body_resets_the_h2_stream() {
    use http_body_util::BodyExt;
    let stalling = stalling_upstream().await;
    let config = ConfigDir::new("limits: { upstream_timeout: 500ms }\n");
    config.api("stall", &open_api("/stall/", &format!("http://{stalling}")));
    let gw = TestGateway::start(config).await;
    let mut sender = h2_client(gw.addr).await;
    let req = http::Request::get(gw.url("/stall/x"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(HANG, response.into_body().collect())
        .await
        .expect("the h2 response body hung with its upstream");
    assert!(body.is_err(), "the cut-short body ended as if complete");
}
