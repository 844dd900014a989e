//! The running gateway: settings fixed at start, the hot-reloadable runtime behind an `ArcSwap`, metrics.
//!
//! A request loads the current `Runtime` once and uses it to the end, so a reload in the middle of a
//! request never mixes two configurations. Reload builds a complete new `Runtime` first and swaps it in
//! only when everything validated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::admin::metrics::{ApiMetrics, Metrics};
use crate::auth::policy::ClientPolicies;
use crate::config::{ApiDef, Config, ConfigErrors, ConfigProblem, GatewaySettings, RuntimeConfig};
use crate::limits::Limiter;
use crate::oauth::AuthServer;
use crate::proxy::forward::UpstreamClient;
use crate::proxy::path::Router;

/// One routed API with everything the request path needs next to it.
#[derive(Debug)]
pub struct ApiRoute {
    pub def: Arc<ApiDef>,
    pub metrics: Arc<ApiMetrics>,
}

/// Everything a reload replaces, swapped as one unit.
pub struct Runtime {
    pub config: Arc<RuntimeConfig>,
    pub router: Router<ApiRoute>,
    pub client: UpstreamClient,
}

pub struct Gateway {
    pub config: Config,
    /// The authorization server of every API with an `oauth` block (keys, store, notifications).
    pub auth: AuthServer,
    runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    /// Rate limits and quotas (per API and per session).
    pub limiter: Arc<dyn Limiter>,
    pub client_policies: ClientPolicies,
    draining: AtomicBool,
    /// Serialises reloads so two triggers (file change and SIGHUP) cannot interleave.
    reload_lock: tokio::sync::Mutex<()>,
}

impl Gateway {
    pub fn new(config: Config, auth: AuthServer, limiter: Arc<dyn Limiter>) -> Arc<Gateway> {
        let metrics = Metrics::default();
        let runtime = Runtime::build(config.runtime.clone(), &metrics);
        Arc::new(Gateway {
            config,
            auth,
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            limiter,
            client_policies: ClientPolicies::new(),
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &GatewaySettings {
        &self.config.gateway
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Reads every file again; on any problem the running configuration stays and the problems are
    /// returned (and logged) for the caller to report.
    pub async fn reload(&self) -> Result<usize, ConfigErrors> {
        let _guard = self.reload_lock.lock().await;
        let config = self.config.clone();
        // File reads and argon2 parsing are blocking work; keep them off the async workers.
        let loaded = tokio::task::spawn_blocking(move || config.load_runtime())
            .await
            .unwrap_or_else(|_| {
                Err(ConfigErrors(vec![ConfigProblem::new(
                    &self.config.source,
                    "",
                    "the reload task failed",
                )]))
            });
        match loaded {
            Ok(new_config) => {
                let count = new_config.apis.len();
                self.runtime
                    .store(Arc::new(Runtime::build(new_config, &self.metrics)));
                tracing::info!(apis = count, "configuration reloaded");
                Ok(count)
            }
            Err(errors) => {
                for problem in &errors.0 {
                    tracing::error!(problem = %problem, "reload refused; keeping the running configuration");
                }
                Err(errors)
            }
        }
    }

    /// `/health` on both listeners: 503 while shutting down or when the store does not answer.
    pub async fn health(&self) -> (http::StatusCode, serde_json::Value) {
        let backend = match self.config.gateway.storage {
            crate::config::StorageConfig::Memory => "memory",
            crate::config::StorageConfig::Redis(_) => "redis",
        };
        let storage = match self.auth.store.ping().await {
            Ok(()) => serde_json::json!({"backend": backend, "status": "ok"}),
            Err(err) => {
                serde_json::json!({"backend": backend, "status": "unavailable", "error": err.to_string()})
            }
        };
        let storage_ok = storage["status"] == "ok";
        if self.is_draining() {
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "unavailable", "reason": "shutting down", "storage": storage}),
            )
        } else if !storage_ok {
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "unavailable", "reason": "storage unreachable", "storage": storage}),
            )
        } else {
            (
                http::StatusCode::OK,
                serde_json::json!({"status": "ok", "storage": storage}),
            )
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl Runtime {
    fn build(config: Arc<RuntimeConfig>, metrics: &Metrics) -> Runtime {
        let routes: Vec<(String, Arc<ApiRoute>)> = config
            .apis
            .iter()
            .map(|def| {
                let route = ApiRoute {
                    def: def.clone(),
                    metrics: metrics.api(&def.id),
                };
                (def.listen_path.clone(), Arc::new(route))
            })
            .collect();
        let router = Router::new(routes.iter().map(|(lp, r)| (lp.as_str(), r.clone())));
        let client = UpstreamClient::new(&config.limits);
        Runtime {
            config,
            router,
            client,
        }
    }
}
