//! tollgate: an API gateway with a built-in OAuth 2.0 authorization server.
//!
//! `main.rs` only parses arguments; everything else is here so that tests can start a complete
//! gateway on `127.0.0.1:0` with [`run`].
//!
//! The layers, top to bottom (docs/architecture.md; `scripts/check-layers.sh` checks them in CI):
//! `lib` → `admin` → `proxy` → {`oauth`, `auth`, `limits`, `metrics`} → {`policy`, `store`} →
//! {`token`, `redis`, `server`, `error`, `html`} → {`config`, `http_util`, `secrets`, `logging`, `clock`}.
//! This file is where they are wired together: storage and the limiter that goes with it, the
//! authorization server, the gateway, the listeners.

pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod html;
pub mod http_util;
pub mod import;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod proxy;
pub mod redis;
pub mod reload;
pub mod secrets;
pub mod server;
pub mod store;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use proxy::gateway::Gateway;

/// The sockets the gateway serves; bound by the caller so tests can use port 0 and read the address.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses named in the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let proxy = TcpListener::bind(config.gateway.listen).await?;
        let admin = match &config.gateway.admin {
            Some(admin) => Some(TcpListener::bind(admin.listen).await?),
            None => None,
        };
        Ok(Listeners { proxy, admin })
    }

    pub fn proxy_addr(&self) -> std::io::Result<SocketAddr> {
        self.proxy.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tls(#[from] server::tls::TlsError),
    #[error(transparent)]
    Keys(#[from] token::keys::KeyError),
    /// The store could not be opened (Redis unreachable at start, or its revocation set unreadable).
    #[error(transparent)]
    Storage(#[from] store::StoreError),
    /// The task that loads (or generates) the signing keys did not finish: it panicked or was cancelled.
    #[error("the signing-key loading task did not finish")]
    KeyTask,
}

/// What [`run_with`] takes besides the configuration: things a test may replace.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The clock the in-process rate limiter counts periods on (`storage: memory`). A test passes
    /// [`clock::Clock::manual`] and advances it instead of sleeping through a period. The Redis
    /// limiter counts on Redis's clock and does not use it.
    pub clock: clock::Clock,
}

/// Opens the configured store and the rate limiter that goes with it (Redis: counted in the same
/// Redis, over the same connection).
async fn open_storage(
    config: &config::StorageConfig,
    clock: clock::Clock,
) -> Result<(Arc<dyn store::Store>, Arc<dyn limits::Limiter>), RunError> {
    match config {
        config::StorageConfig::Memory => Ok((
            Arc::new(store::memory::MemoryStore::new()),
            Arc::new(limits::memory::MemoryLimiter::with_clock(clock)),
        )),
        config::StorageConfig::Redis(redis) => {
            let store = store::redis::RedisStore::connect(redis).await?;
            let limiter = Arc::new(limits::redis::RedisLimiter::new(
                store.backend(),
                store.key_prefix(),
            ));
            Ok((store, limiter))
        }
    }
}

/// Runs the gateway until `shutdown` completes, then drains in-flight requests for up to
/// `limits.shutdown_grace` and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    run_with(config, listeners, shutdown, RunOptions::default()).await
}

/// [`run`], with [`RunOptions`].
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: RunOptions,
) -> Result<(), RunError> {
    // Several parts of rustls need a process-wide provider; installing twice is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls = match &config.gateway.tls {
        Some(files) => Some(server::tls::acceptor(files)?),
        None => None,
    };
    for warning in config.warnings() {
        tracing::warn!(problem = %warning, "configuration loads, but check this");
    }
    let signing = config.gateway.signing.clone();
    // Loading may generate a key (RSA generation takes a while): keep it off the async workers.
    let keys = tokio::task::spawn_blocking(move || token::keys::KeySet::load(&signing))
        .await
        .map_err(|_| RunError::KeyTask)??;
    let (store, limiter) = open_storage(&config.gateway.storage, options.clock).await?;
    let auth = oauth::AuthServer::new(
        keys,
        store,
        limiter.clone(),
        &config.gateway.public_url,
        oauth::notify::Notifier::start(),
        // Taken at start (like max_connections): the pool bounds memory for the process's lifetime.
        config.runtime.limits.secret_verifications,
    );
    let gateway = Gateway::new(config, auth, limiter);
    let limits = gateway.runtime().config.limits.clone();
    let server_limits = server::ServerLimits::from_config(&limits);
    if limits.max_connections_per_ip >= limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            max_connections_per_ip = limits.max_connections_per_ip,
            "limits.max_connections_per_ip is not below limits.max_connections: one address can take every connection slot"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);

    if let Ok(addr) = listeners.proxy.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "proxy listening");
    }
    for api in &gateway.runtime().config.apis {
        tracing::info!(api = %api.id, listen_path = %api.listen_path, upstream = %describe_upstream(api), "API loaded");
    }
    gateway
        .warn_shadowed_policies(&gateway.runtime().config.policies)
        .await;

    let mut tasks = tokio::task::JoinSet::new();
    {
        let gw = gateway.clone();
        let handler = move |req, conn| proxy::handle(gw.clone(), req, conn);
        let counted = gateway.clone();
        tasks.spawn(server::serve(
            listeners.proxy,
            tls,
            server_limits,
            handler,
            move || counted.metrics.connection_refused_per_ip(),
            stop_rx.clone(),
        ));
    }
    if let Some(listener) = listeners.admin {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin API listening");
        }
        if gateway
            .settings()
            .admin
            .as_ref()
            .is_some_and(|admin| admin.secret == config::SAMPLE_ADMIN_SECRET)
        {
            // Config loading refuses the sample secret anywhere but loopback; here it only warns.
            tracing::warn!(
                "the admin API uses the quick-start sample secret from the README; set TOLLGATE_ADMIN_SECRET"
            );
        }
        let admin = Arc::new(admin::Admin::new(gateway.clone()));
        let handler = move |req, conn| admin::handle(admin.clone(), req, conn);
        let counted = gateway.clone();
        tasks.spawn(server::serve(
            listener,
            None,
            server_limits,
            handler,
            move || counted.metrics.connection_refused_per_ip(),
            stop_rx.clone(),
        ));
    }
    let watcher = tokio::spawn(reload::watch(gateway.clone(), stop_rx.clone()));

    shutdown.await;
    tracing::info!(grace = ?limits.shutdown_grace, "shutting down: no new connections, draining in-flight requests");
    gateway.start_draining();
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // WebSocket tunnels are detached from their connections; they close at the latest
    // shutdown_grace after the signal, which started before the listeners drained.
    gateway.tunnels.drained(limits.shutdown_grace).await;
    // Unused leased tokens and quota units go back to Redis for the other nodes (docs/design.md §9e);
    // bounded, so an unreachable Redis cannot hold the shutdown.
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), gateway.limiter.release()).await;
    watcher.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The upstream as one string: its URL, several targets' URLs joined by `, `, or `mock`.
pub(crate) fn describe_upstream(api: &config::ApiDef) -> String {
    match &api.upstream.target {
        config::UpstreamTarget::Targets(targets) => targets
            .iter()
            .map(config::TargetDef::name)
            .collect::<Vec<_>>()
            .join(", "),
        config::UpstreamTarget::Mock(_) => "mock".to_string(),
    }
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
