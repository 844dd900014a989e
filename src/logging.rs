//! Logs to stderr through `tracing`: human-readable text or one JSON object per line.

use tracing_subscriber::filter::LevelFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `TOLLGATE_LOG` (trace…error) overrides the configured level.
pub fn init(config: &LogConfig) {
    let level = std::env::var("TOLLGATE_LOG").unwrap_or_else(|_| config.level.clone());
    let level: LevelFilter = level.parse().unwrap_or(LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    // A second init (tests starting several gateways) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
