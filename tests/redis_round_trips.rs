//! What a token costs Redis, counted by Redis itself: a gateway started through the library on
//! 127.0.0.1:0 with the Redis store, a `redis-server` the harness starts on a free port, and a
//! `MONITOR` connection that sees every command the gateway sends (and every command its scripts
//! run, tagged `lua`). Counts, not timings: they are the same on a busy machine.

mod common;

use common::oauth::*;
use common::redis::{RedisServer, unique_prefix};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const SERVICE_SECRET: &str = "service-secret-0123456789";
/// Tokens counted after the first two: the first verifies the secret with argon2 (and fills the
/// verified-secret cache), the second is the first from the cache; each loads its scripts.
const TOKENS: usize = 200;
const WARM_UP: usize = 2;

/// One API issuing client_credentials tokens to `service`, nothing else (no rate limit, no quota:
/// the limiter would add calls of its own).
fn config(redis: &RedisServer, prefix: &str, upstream: &str) -> ConfigDir {
    let [service] = hashes([SERVICE_SECRET]);
    let config = ConfigDir::new(&redis.storage_yaml(prefix, "2s"));
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{upstream}" }}
auth: {{ type: oauth2 }}
oauth:
  grant_types: [client_credentials]
  scopes: [read]
  clients:
    - client_id: service
      secret_hash: "{service}"
      grant_types: [client_credentials]
      scopes: [read]
"#
        ),
    );
    config
}

/// A `MONITOR` connection: every command Redis runs, one line each, in order.
struct Monitor {
    lines: Lines<BufReader<OwnedReadHalf>>,
    /// Kept open while reading: closing it would end the connection.
    _write: OwnedWriteHalf,
    /// Where the markers are sent from, connected before `MONITOR` began so that its own set-up
    /// commands are not seen.
    marker: ::redis::aio::MultiplexedConnection,
}

/// The commands seen between two points, as their clients sent them.
#[derive(Debug, Default)]
struct Seen {
    /// Requests a client waited for: each command, except that a `MULTI` … `EXEC` block (sent as
    /// one pipeline) counts once.
    round_trips: usize,
    /// Every command run, those of scripts and transactions included.
    commands: usize,
    /// The names of the round trips, for messages.
    names: Vec<String>,
}

impl Monitor {
    async fn start(redis: &RedisServer) -> Monitor {
        let marker = redis.connection().await;
        let stream = TcpStream::connect(("127.0.0.1", redis.port()))
            .await
            .expect("connect to redis");
        let (read, mut write) = stream.into_split();
        write.write_all(b"MONITOR\r\n").await.expect("MONITOR");
        let mut lines = BufReader::new(read).lines();
        let ok = lines.next_line().await.expect("read").expect("reply");
        assert_eq!(ok, "+OK");
        Monitor {
            lines,
            _write: write,
            marker,
        }
    }

    /// Sends `ECHO <marker>` from another connection and returns what Redis ran before it. The
    /// subscriber's keep-alive `PING`s are left out.
    async fn until_marker(&mut self, marker: &str) -> Seen {
        let _: String = ::redis::cmd("ECHO")
            .arg(marker)
            .query_async(&mut self.marker)
            .await
            .expect("ECHO");
        let mut seen = Seen::default();
        let mut in_multi = false;
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .expect("read MONITOR")
                .expect("MONITOR ended");
            // `+<time> [<db> <client address, or lua>] "<COMMAND>" "<arg>" ...`
            let (source, command) = line
                .split_once('[')
                .and_then(|(_, rest)| rest.split_once("] "))
                .unwrap_or_else(|| panic!("unexpected MONITOR line {line}"));
            let name = command
                .split('"')
                .nth(1)
                .unwrap_or_default()
                .to_ascii_uppercase();
            if name == "ECHO" && command.contains(marker) {
                return seen;
            }
            if name == "PING" {
                continue;
            }
            seen.commands += 1;
            if source.ends_with(" lua") {
                continue;
            }
            match name.as_str() {
                "MULTI" => {
                    in_multi = true;
                    seen.round_trips += 1;
                    seen.names.push(name);
                }
                "EXEC" => in_multi = false,
                _ if in_multi => {}
                _ => {
                    seen.round_trips += 1;
                    seen.names.push(name);
                }
            }
        }
    }
}

/// docs/benchmarks.md "Token state": a client_credentials token whose secret is in the
/// verified-secret cache costs one round trip to Redis: the guessing throttle's admission and the
/// token's count are one script (it was three: reserve, release, and a `MULTI` for the count).
#[tokio::test]
async fn a_client_credentials_token_costs_one_redis_round_trip() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let prefix = unique_prefix();
    let gw = TestGateway::start(config(&redis, &prefix, &upstream.url())).await;
    let token_url = gw.url("/movies/oauth/token");
    let mut monitor = Monitor::start(&redis).await;
    client_credentials_burst(&token_url, "service", SERVICE_SECRET, WARM_UP, 1).await;
    monitor.until_marker("warm").await;

    client_credentials_burst(&token_url, "service", SERVICE_SECRET, TOKENS, 1).await;
    let seen = monitor.until_marker("burst").await;

    eprintln!(
        "{TOKENS} tokens: {} round trips ({:.2} per token), {} commands ({:.2} per token)",
        seen.round_trips,
        seen.round_trips as f64 / TOKENS as f64,
        seen.commands,
        seen.commands as f64 / TOKENS as f64,
    );
    assert!(
        seen.round_trips <= TOKENS,
        "{} round trips to Redis for {TOKENS} tokens: {:?}",
        seen.round_trips,
        summary(&seen.names)
    );
    // And every one of them counted its token.
    let listed = gw.admin_get("/apis/movies/clients/service/sessions").await;
    assert_eq!(
        listed.json()["stateless"]["issued"],
        (TOKENS + WARM_UP) as u64
    );
}

/// The introspection endpoint authenticates its caller the same way: with a cached secret, one round
/// trip (the admission, nothing to release; it was two), and an access token is checked locally.
#[tokio::test]
async fn introspection_with_a_cached_secret_costs_one_redis_round_trip() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let prefix = unique_prefix();
    let gw = TestGateway::start(config(&redis, &prefix, &upstream.url())).await;
    let auth = basic("service", SERVICE_SECRET);
    let issued = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&auth),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let token = issued.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let introspect = async || {
        let answer = post_form(
            &gw.url("/movies/oauth/introspect"),
            Some(&auth),
            &[("token", &token)],
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["active"], true);
    };
    let mut monitor = Monitor::start(&redis).await;
    // The first call from the cache loads the admission's script.
    introspect().await;
    monitor.until_marker("warm").await;

    const CALLS: usize = 50;
    for _ in 0..CALLS {
        introspect().await;
    }
    let seen = monitor.until_marker("calls").await;
    eprintln!(
        "{CALLS} introspections: {} round trips, {} commands",
        seen.round_trips, seen.commands
    );
    assert!(
        seen.round_trips <= CALLS,
        "{} round trips to Redis for {CALLS} introspections: {:?}",
        seen.round_trips,
        summary(&seen.names)
    );
}

/// Command names with their counts, in order of first appearance.
fn summary(names: &[String]) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for name in names {
        match counts.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name.clone(), 1)),
        }
    }
    counts
}
