//! Hot reload triggers: SIGHUP and changes to the configuration files.
//!
//! Changes are found by polling a fingerprint (name, size, modification time) of gateway.yaml, users,
//! policies and every file in the API definitions folder once a second. Polling is deliberate: inotify
//! misses the symlink swaps Kubernetes ConfigMaps and many deploy tools use, and a stat() per file per
//! second costs nothing next to serving traffic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::proxy::gateway::Gateway;

const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub async fn watch(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let mut last = fingerprint(&gateway);
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            _ = crate::server::stopped(&mut stop) => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading configuration");
                let _ = gateway.reload().await;
                last = fingerprint(&gateway);
            }
            _ = ticker.tick() => {
                let now = fingerprint(&gateway);
                if now != last {
                    last = now;
                    tracing::info!("configuration files changed: reloading");
                    // Errors are logged by reload(); the running configuration stays.
                    let _ = gateway.reload().await;
                }
            }
        }
    }
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(gateway: &Gateway) -> Fingerprint {
    let settings = gateway.settings();
    let mut files: Vec<PathBuf> = vec![gateway.config.source.clone()];
    files.extend(settings.users_file.clone());
    files.extend(settings.policies_file.clone());
    if let Ok(entries) = std::fs::read_dir(&settings.api_definitions) {
        files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    files.sort();
    files.into_iter().map(|path| stat(&path)).collect()
}

fn stat(path: &Path) -> (PathBuf, u64, Option<SystemTime>) {
    match std::fs::metadata(path) {
        Ok(meta) => (path.to_path_buf(), meta.len(), meta.modified().ok()),
        Err(_) => (path.to_path_buf(), 0, None),
    }
}
