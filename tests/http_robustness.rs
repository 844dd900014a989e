//! HTTP robustness over raw sockets: smuggling variants, Host rules, slow clients, connection limit, TLS.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

async fn movies_gateway(extra: &str) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new(extra);
    config.api("movies", &open_api("/movies/", &upstream.url()));
    (TestGateway::start(config).await, upstream)
}

/// Sends `raw` and returns the statuses the client got and the requests the upstream saw.
async fn smuggle(raw: &[u8]) -> (Vec<u16>, Vec<Seen>, String) {
    let (gw, upstream) = movies_gateway("").await;
    let answer = raw_exchange(gw.addr, raw, WAIT).await;
    // Give a forwarded request time to be recorded before reading what the upstream saw.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (statuses(&answer), upstream.seen(), answer)
}

#[tokio::test]
async fn content_length_with_transfer_encoding_never_smuggles() {
    let (statuses, seen, raw) = smuggle(
        b"POST /movies/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /movies/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_only_the_framed_request_passed(&statuses, &seen, &raw);
}

/// With both Content-Length and Transfer-Encoding, hyper lets chunked win, drops Content-Length and
/// closes the connection after the response (RFC 9112 §6.1). Either that or a 400 is acceptable; what
/// must never happen is the hidden second request reaching the upstream.
fn assert_only_the_framed_request_passed(statuses: &[u16], seen: &[Seen], raw: &str) {
    assert!(
        statuses.len() <= 1,
        "the smuggled request got an answer: {raw}"
    );
    assert!(
        seen.iter().all(|s| !s.target.contains("smuggled")),
        "the smuggled request reached the upstream: {seen:?}"
    );
    match statuses.first() {
        Some(400) => assert!(seen.is_empty()),
        Some(200) => {
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].target, "/a");
            assert!(seen[0].body.is_empty(), "the chunked body was empty");
        }
        other => panic!("unexpected answer {other:?}: {raw}"),
    }
}

#[tokio::test]
async fn transfer_encoding_before_content_length_never_smuggles() {
    let (statuses, seen, raw) = smuggle(
        b"POST /movies/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n\
          0\r\n\r\nGET /movies/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_only_the_framed_request_passed(&statuses, &seen, &raw);
}

#[tokio::test]
async fn chunked_not_last_is_refused() {
    let (statuses, seen, raw) = smuggle(
        b"POST /movies/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(statuses.first(), Some(&400), "{raw}");
    assert!(seen.is_empty(), "upstream saw {seen:?}");
}

#[tokio::test]
async fn signed_content_length_is_refused() {
    let (statuses, seen, raw) =
        smuggle(b"POST /movies/a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello").await;
    assert_eq!(statuses.first(), Some(&400), "{raw}");
    assert!(seen.is_empty(), "upstream saw {seen:?}");
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let (statuses, seen, raw) =
        smuggle(b"POST /movies/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!").await;
    assert_eq!(statuses.first(), Some(&400), "{raw}");
    assert!(seen.is_empty(), "upstream saw {seen:?}");
}

#[tokio::test]
async fn obs_fold_is_refused() {
    let (statuses, seen, raw) = smuggle(
        b"GET /movies/a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses.first(), Some(&400), "{raw}");
    assert!(seen.is_empty(), "upstream saw {seen:?}");
}

/// hyper 1 reads a bare LF as a line ending (httparse has no option to refuse it, and refusing it in
/// front of hyper would take a second HTTP parser, itself a source of disagreement). What matters is
/// that the gateway is the only parser of the client's bytes and sends the upstream its own CRLF
/// framing: a request hidden behind a bare LF is either a body or a request the gateway routed and
/// answered itself, never one only the upstream sees.
#[tokio::test]
async fn bare_lf_never_smuggles_a_request() {
    // A front end that does not end lines at a bare LF reads `X-Pad: a\nContent-Length: 42` as one
    // header, no body, and the bytes after the head as a second request. The gateway reads a
    // Content-Length of 42: those bytes are the body of /a. Then a real second request follows on
    // the same connection: it is answered as the second request, so the gateway's framing and the
    // client's agree again right after the body, and nothing in between became a request.
    let hidden = b"GET /movies/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(hidden.len(), 42);
    let mut raw =
        b"GET /movies/a HTTP/1.1\r\nHost: x\r\nX-Pad: a\nContent-Length: 42\r\n\r\n".to_vec();
    raw.extend_from_slice(hidden);
    raw.extend_from_slice(b"GET /movies/second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (statuses, seen, answer) = smuggle(&raw).await;
    assert_eq!(statuses, vec![200, 200], "{answer}");
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets,
        vec!["/a", "/second"],
        "the upstream saw other requests than the client sent: {seen:?}"
    );
    assert_eq!(
        seen[0].body.as_ref(),
        hidden,
        "the hidden request arrived as a body"
    );
    assert!(seen[1].body.is_empty());
}

#[tokio::test]
async fn bare_lf_heads_are_routed_and_answered_by_the_gateway() {
    // Two heads ended by bare LFs: the gateway reads two requests, routes each and answers each, so the
    // second is not hidden from it; the upstream sees exactly the requests the client got answers for.
    let (statuses, seen, answer) = smuggle(
        b"GET /movies/a HTTP/1.1\nHost: x\n\nGET /movies/second HTTP/1.1\nHost: x\nConnection: close\n\n",
    )
    .await;
    assert_eq!(statuses, vec![200, 200], "{answer}");
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, vec!["/a", "/second"]);
}

#[tokio::test]
async fn pipelined_requests_reach_the_upstream_exactly_as_sent() {
    let (statuses, seen, raw) = smuggle(
        b"POST /movies/one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /movies/two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses, vec![200, 200], "{raw}");
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, vec!["/one", "/two"]);
    assert_eq!(seen[0].body.as_ref(), b"hello");
}

#[tokio::test]
async fn missing_host_is_refused() {
    let (statuses, seen, raw) =
        smuggle(b"GET /movies/a HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(statuses.first(), Some(&400), "{raw}");
    assert!(seen.is_empty());
}

#[tokio::test]
async fn duplicate_host_is_refused() {
    let (statuses, seen, raw) = smuggle(
        b"GET /movies/a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses.first(), Some(&400), "{raw}");
    assert!(seen.is_empty());
}

/// A slowloris client: it keeps sending header bytes, one every 50 ms, and never ends the head.
/// `header_read_timeout` bounds the whole head, not the wait for the next byte, so the gateway closes
/// the connection (possibly after a 408) while the bytes still come; the upstream sees nothing.
#[tokio::test]
async fn a_client_sending_headers_slowly_is_cut_off() {
    let (gw, upstream) = movies_gateway("limits: { header_read_timeout: 500ms }\n").await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        write
            .write_all(b"GET /movies/a HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        let mut sent = 0u64;
        // Until the gateway closes the connection (a write then fails).
        while write.write_all(b"a").await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    });
    let mut buf = Vec::new();
    never_hangs(
        "a connection trickling its head past header_read_timeout",
        read.read_to_end(&mut buf),
    )
    .await
    .ok();
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // The writer notices the closed connection at its next writes (a reset), and stops.
    let sent = never_hangs("the trickling writer", trickle).await.unwrap();
    assert!(sent > 0, "no byte was trickled");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_silent_client_is_cut_off() {
    let (gw, _upstream) = movies_gateway("limits: { header_read_timeout: 500ms }\n").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = Vec::new();
    never_hangs(
        "an idle connection past header_read_timeout",
        stream.read_to_end(&mut buf),
    )
    .await
    .ok();
}

#[tokio::test]
async fn connections_over_the_limit_wait_and_the_process_stays_up() {
    let (gw, upstream) = movies_gateway("limits: { max_connections: 1 }\n").await;
    // The first connection holds the only slot (keep-alive, one request done).
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"GET /movies/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // A second connection is accepted by the kernel but not served while the first is open.
    let addr = gw.addr;
    let second = tokio::spawn(async move {
        raw_exchange(
            addr,
            b"GET /movies/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second connection was served beyond the limit"
    );
    assert_eq!(upstream.count(), 1);

    // Closing the first frees the slot; the waiting connection is served.
    drop(first);
    let answer = second.await.unwrap();
    assert_eq!(statuses(&answer), vec![200], "{answer}");
    assert_eq!(upstream.count(), 2);
}
