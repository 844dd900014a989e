//! A real `redis-server` for integration tests: started on a free port of 127.0.0.1 (never the
//! machine's own Redis on 6379), without persistence, stopped when dropped, and also when the test
//! process dies without running destructors (a small shell watchdog kills it once its stdin closes).
//! `stop()` / `restart()` (same port, empty again) and `signal("STOP" | "CONT")` serve the fault tests.
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
use std::time::{Duration, Instant};

/// Runs redis-server (`$0`) with the given arguments and kills it as soon as stdin closes.
const WATCHDOG: &str = r#""$0" "$@" & pid=$!
read _ignored
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit 0"#;

pub struct RedisServer {
    port: u16,
    child: Option<(Child, ChildStdin)>,
    pid: u32,
}

/// The redis-server binary on PATH.
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

/// Sends one command (inline protocol) and returns the first chunk of the raw reply.
pub fn raw_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
                pid: 0,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server");
    }

    fn spawn(&mut self) -> bool {
        // A marker only this server has, so we never mistake another process on the port for ours.
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
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh (redis-server watchdog)");
        let stdin = child.stdin.take().expect("watchdog stdin");
        self.child = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(reply) = raw_command(self.port, "CONFIG GET dbfilename")
                && reply.contains(&marker)
            {
                self.pid = self.query_pid();
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    fn query_pid(&self) -> u32 {
        let reply = raw_command(self.port, "INFO server").expect("INFO server");
        reply
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .expect("process_id in INFO server")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A `storage:` block for gateway.yaml (to pass to `ConfigDir::new`).
    pub fn storage_yaml(&self, key_prefix: &str, timeout: &str) -> String {
        format!(
            "storage:\n  backend: redis\n  redis:\n    url: {}\n    key_prefix: \"{key_prefix}\"\n    timeout: {timeout}\n",
            self.url()
        )
    }

    /// Stops the server (clients see their connections close) and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port. Nothing was persisted: it comes back empty.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal to redis-server: `STOP` freezes it (connections stay open, nothing answers),
    /// `CONT` thaws it.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
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
    /// (`<prefix>policies`) aside (DESIGN §7): must be empty.
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
