//! A real `redis-server` for tests: started on a free port of 127.0.0.1 (never the machine's own
//! Redis on 6379), without persistence, stopped when dropped, and also when the test process dies
//! without running destructors (a small shell watchdog kills it once its stdin closes).
//! `stop()` / `restart()` (same port, empty again) and `signal("STOP" | "CONT")` serve the fault tests;
//! `RedisCluster` starts three masters. The integration tests use it as `common::redis`, the crate's
//! unit tests (`src/redis/mod.rs`, used by the store and the limiter) include this same file, so there is one harness.
//!
//! ```ignore
//! let redis = RedisServer::start();
//! let prefix = redis::unique_prefix();
//! let config = ConfigDir::new(&redis.storage_yaml(&prefix, "250ms"));
//! ```
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Runs redis-server under a small shell that kills it as soon as its stdin closes: when the
/// server is dropped, and also when the test process dies without running destructors.
const WATCHDOG: &str = r#""$0" "$@" & pid=$!
read _ignored
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit 0"#;

pub struct RedisServer {
    port: u16,
    child: Option<(Child, ChildStdin)>,
    pid: u32,
    extra_args: Vec<String>,
}

pub fn redis_server_binary() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
        .expect("redis-server is not on PATH (install it: apt-get install redis-server)")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Sends one command (inline protocol) and returns the raw reply.
pub fn raw_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new(), free_port)
    }

    fn start_with(extra_args: Vec<String>, port: impl Fn() -> u16) -> RedisServer {
        for _ in 0..5 {
            let mut server = RedisServer {
                port: port(),
                child: None,
                pid: 0,
                extra_args: extra_args.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server");
    }

    /// A server shared by the tests of this process (they use unique key prefixes); it lives until
    /// the process exits (the watchdog stops it then).
    pub fn shared() -> Arc<RedisServer> {
        static SHARED: OnceLock<Mutex<Option<Arc<RedisServer>>>> = OnceLock::new();
        let mut slot = SHARED
            .get_or_init(|| Mutex::new(None))
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert_with(|| Arc::new(RedisServer::start()))
            .clone()
    }

    fn spawn(&mut self) -> bool {
        let marker = format!("tollgate-test-{}-{}.rdb", std::process::id(), self.port);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(redis_server_binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .args(["--dbfilename", &marker])
            .args(&self.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh (redis-server watchdog)");
        let stdin = child.stdin.take().expect("watchdog stdin");
        self.child = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // Ours, not some other process that took the port: the marker must match.
            if let Ok(reply) = raw_command(self.port, "CONFIG GET dbfilename")
                && reply.contains(&marker)
            {
                self.pid = self.pid();
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The redis-server process id (for SIGSTOP / SIGCONT fault tests).
    pub fn pid(&self) -> u32 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        stream.write_all(b"INFO server\r\n").expect("write");
        let mut reply = String::new();
        let mut buf = [0u8; 4096];
        while !reply.contains("process_id:") || !reply.ends_with("\r\n") {
            let n = stream.read(&mut buf).expect("read");
            assert!(n > 0, "INFO server: connection closed");
            reply.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        reply
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .expect("process_id in INFO server")
    }

    /// Sends a signal to redis-server (`STOP` freezes it: connections stay open, nothing answers;
    /// `CONT` thaws it).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Freezes redis-server (SIGSTOP) until the returned guard is dropped (SIGCONT). The guard thaws it
    /// also when a test fails while it is frozen, so a failed assertion never leaves the server (shared
    /// by the other tests of the binary) stopped and the rest of the run hanging on it.
    pub fn freeze(&self) -> Frozen<'_> {
        self.signal("STOP");
        Frozen(self)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (its clients see the connection close) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-master Redis Cluster on free ports (slots split three ways), for the cluster tests.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    config_files: Vec<PathBuf>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        for file in &self.config_files {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        // The cluster bus listens on port + 10000: pick ports where both are free.
        let port = || loop {
            let port = free_port();
            if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                return port;
            }
        };
        let config_files: Vec<PathBuf> = (0..3)
            .map(|i| {
                std::env::temp_dir().join(format!(
                    "tollgate-test-nodes-{i}-{}.conf",
                    unique_prefix().trim_end_matches(':')
                ))
            })
            .collect();
        let nodes: Vec<RedisServer> = config_files
            .iter()
            .map(|conf| {
                RedisServer::start_with(
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        conf.to_string_lossy().into_owned(),
                    ],
                    port,
                )
            })
            .collect();
        let per_node = 16384 / nodes.len();
        for (i, node) in nodes.iter().enumerate() {
            let first = i * per_node;
            let last = if i + 1 == nodes.len() {
                16383
            } else {
                first + per_node - 1
            };
            let slots: Vec<String> = (first..=last).map(|s| s.to_string()).collect();
            let reply = raw_command(node.port, &format!("CLUSTER ADDSLOTS {}", slots.join(" ")))
                .expect("CLUSTER ADDSLOTS");
            assert!(reply.starts_with("+OK"), "CLUSTER ADDSLOTS: {reply}");
        }
        for node in &nodes[1..] {
            let reply = raw_command(
                nodes[0].port,
                &format!("CLUSTER MEET 127.0.0.1 {}", node.port),
            )
            .expect("CLUSTER MEET");
            assert!(reply.starts_with("+OK"), "CLUSTER MEET: {reply}");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes.iter().all(|node| {
            raw_command(node.port, "CLUSTER INFO")
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        }) {
            assert!(Instant::now() < deadline, "the test cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster {
            nodes,
            config_files,
        }
    }

    /// The nodes as `host:port` seeds for `storage.redis.cluster`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }
}

/// A key prefix no other test (of any process) uses, so tests may share a server.
pub fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "tg{}-{nanos}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Inspecting what the gateway stored.
impl RedisServer {
    /// A `storage:` block for gateway.yaml (to pass to `ConfigDir::new`).
    pub fn storage_yaml(&self, key_prefix: &str, timeout: &str) -> String {
        format!(
            "storage:\n  backend: redis\n  redis:\n    url: {}\n    key_prefix: \"{key_prefix}\"\n    timeout: {timeout}\n",
            self.url()
        )
    }

    /// A connection for inspecting what the gateway stored.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }

    /// Every key under `prefix` with its TTL in seconds (-1: none).
    pub async fn keys_and_ttls(&self, prefix: &str) -> Vec<(String, i64)> {
        let mut conn = self.connection().await;
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut out = Vec::new();
        for key in keys {
            let ttl: i64 = redis::cmd("TTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("TTL");
            out.push((key, ttl));
        }
        out.sort();
        out
    }

    /// Keys under `prefix` without a TTL, dynamic clients (`<prefix>clients:*`) and stored policies
    /// (`<prefix>policies`) aside (docs/design.md §7): must be empty.
    pub async fn keys_without_ttl(&self, prefix: &str) -> Vec<String> {
        let clients = format!("{prefix}clients:");
        let policies = format!("{prefix}policies");
        self.keys_and_ttls(prefix)
            .await
            .into_iter()
            .filter(|(key, ttl)| *ttl < 0 && !key.starts_with(&clients) && *key != policies)
            .map(|(key, _)| key)
            .collect()
    }

    /// Everything stored under `prefix` (each key with its type and all its values, members and
    /// fields) as text, to search for secrets that must not be there.
    pub async fn dump(&self, prefix: &str) -> String {
        let mut conn = self.connection().await;
        let mut out = String::new();
        for (key, _) in self.keys_and_ttls(prefix).await {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("TYPE");
            let read = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).clone(),
                "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
                "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                _ => continue,
            };
            let values: Vec<String> = match kind.as_str() {
                "string" => vec![read.query_async(&mut conn).await.expect("GET")],
                _ => read.query_async(&mut conn).await.expect("read"),
            };
            out.push_str(&format!("{key} {kind} {}\n", values.join(" ")));
        }
        out
    }
}

/// A frozen redis-server; thawed on drop. See [`RedisServer::freeze`].
pub struct Frozen<'a>(&'a RedisServer);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        // Not `signal`: a failing assertion inside a drop during a panic would abort the process.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.0.pid.to_string())
            .status();
    }
}
