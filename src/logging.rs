//! Logs to stderr through `tracing`: human-readable text or one JSON object per line.
//!
//! Access-log lines (one per request, target `tollgate::access`) are collected in a buffer and written
//! in batches: at most [`FLUSH_EVERY`] after they were logged, when the buffer is full, before any other
//! line, and when the [`LogGuard`] is dropped at exit. Writing each one straight to the unbuffered
//! stderr cost one `write` system call per request. Every other line (start, shutdown, warnings,
//! errors) is written at once, after whatever access lines are waiting, so the order of lines is the
//! order of events and nothing but access lines is ever delayed.

use std::io::{self, BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::Metadata;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat};

/// The target of the per-request access-log line (see `proxy::handle`).
pub const ACCESS_TARGET: &str = "tollgate::access";
/// The target of security events (failed and throttled authentications, token reuse, revocations of
/// every token of a client, sessions ended by the cap). Each carries a `security` field naming the
/// event, so that a log pipeline can route them (the target itself is not printed); the list is in
/// docs/security.md. They never carry a secret, a token or a username typed at a failed login.
pub const SECURITY_TARGET: &str = "tollgate::security";
/// The longest an access line waits in the buffer (the buffer also flushes when full).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// About 150 access lines: a few `write` calls per second at tens of thousands of requests.
const BUFFER_BYTES: usize = 32 * 1024;

/// Installs the global subscriber. `TOLLGATE_LOG` (trace…error) overrides the configured level.
/// Keep the returned guard until the process ends: dropping it writes out buffered access lines.
pub fn init(config: &LogConfig) -> LogGuard {
    let level = std::env::var("TOLLGATE_LOG").unwrap_or_else(|_| config.level.clone());
    let level: LevelFilter = level.parse().unwrap_or(LevelFilter::INFO);
    let writer = StderrWriter::new();
    let builder = tracing_subscriber::fmt()
        .with_writer(writer.clone())
        .with_max_level(level)
        .with_target(false);
    // A second init (tests starting several gateways) keeps the first subscriber.
    let installed = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .is_ok();
    if installed {
        writer.start_flushing();
    }
    LogGuard { writer }
}

/// Writes out the buffered access lines when dropped (at the end of `main`, also when unwinding).
#[must_use = "dropping the guard at once would leave access lines only to the periodic flush"]
pub struct LogGuard {
    writer: StderrWriter,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.writer.flush();
    }
}

/// stderr behind one buffer shared by every thread; lines are appended whole, under the lock.
#[derive(Clone)]
pub struct StderrWriter {
    out: Arc<Mutex<BufWriter<Stderr>>>,
}

impl StderrWriter {
    fn new() -> StderrWriter {
        StderrWriter {
            out: Arc::new(Mutex::new(BufWriter::with_capacity(
                BUFFER_BYTES,
                io::stderr(),
            ))),
        }
    }

    fn flush(&self) {
        // A poisoned lock only means a panic while appending; the buffer is still worth writing.
        let _ = self
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }

    /// A thread that writes out waiting access lines every [`FLUSH_EVERY`], for as long as the
    /// process runs (the subscriber it serves is global and never uninstalled).
    fn start_flushing(&self) {
        let writer = self.clone();
        let started = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    writer.flush();
                }
            });
        if let Err(err) = started {
            // Without the thread, lines are written as they come instead of waiting for a flush
            // that would only happen when the buffer fills.
            eprintln!("tollgate: cannot start the log flush thread ({err}); logging unbuffered");
            if let Ok(mut out) = self.out.lock() {
                let _ = out.flush();
                *out = BufWriter::with_capacity(0, io::stderr());
            }
        }
    }
}

impl<'a> MakeWriter<'a> for StderrWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            out: &self.out,
            immediate: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            out: &self.out,
            immediate: meta.target() != ACCESS_TARGET,
        }
    }
}

/// One log line on its way to stderr.
pub struct LineWriter<'a> {
    out: &'a Mutex<BufWriter<Stderr>>,
    /// Written out at once (with the access lines before it) rather than left in the buffer.
    immediate: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(buf)?;
        if self.immediate {
            out.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}
