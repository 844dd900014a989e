//! The gateway's log lines of one test, captured for assertions (what is logged, and what never is).
//!
//! A thread-local subscriber (`tracing::subscriber::set_default`) at TRACE: with the default
//! current-thread test runtime the gateway's tasks run on the test's thread, so the capture holds
//! this test's lines only, even while other tests of the binary run in parallel. Lines logged on
//! other threads (spawn_blocking, a multi-thread runtime's workers) are not captured: use it from
//! `#[tokio::test]` without a flavor.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// Every line logged on this thread while it lives.
pub struct CapturedLogs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing, at every level, as JSON lines (one object per event, its fields included).
pub fn capture_logs() -> CapturedLogs {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(lines.clone());
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    CapturedLogs {
        lines,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl CapturedLogs {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The captured events as JSON objects.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The first event whose `fields.message` is `message`.
    pub fn find(&self, message: &str) -> Option<serde_json::Value> {
        self.events()
            .into_iter()
            .find(|event| event["fields"]["message"] == message)
    }
}
