//! The running gateway: settings fixed at start, the hot-reloadable runtime behind an `ArcSwap`, metrics.
//!
//! A request loads the current `Runtime` once and uses it to the end, so a reload in the middle of a
//! request never mixes two configurations. Reload builds a complete new `Runtime` first and swaps it in
//! only when everything validated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::admin::metrics::{ApiMetrics, Metrics};
use crate::config::{
    ApiDef, Config, ConfigErrors, ConfigProblem, GatewaySettings, RuntimeConfig, UpstreamTarget,
};
use crate::limits::Limiter;
use crate::oauth::AuthServer;
use crate::proxy::forward::UpstreamClient;
use crate::proxy::path::Router;
use crate::proxy::tunnel::Tunnels;
use crate::proxy::upstream::Balancer;

/// One routed API with everything the request path needs next to it.
#[derive(Debug)]
pub struct ApiRoute {
    pub def: Arc<ApiDef>,
    pub metrics: Arc<ApiMetrics>,
    /// The targets and their health; `None` for a mock.
    pub upstream: Option<Balancer>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.targets.iter().map(|t| &t.name))
            .finish()
    }
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
    draining: AtomicBool,
    /// Serialises reloads so two triggers (file change and SIGHUP) cannot interleave.
    reload_lock: tokio::sync::Mutex<()>,
    /// Turns true at shutdown; background tasks of the runtime (health probes) end on it.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Open WebSocket tunnels, bounded by `limits.max_connections` (taken at start).
    pub tunnels: Tunnels,
    /// The admin web UI's signed-in sessions and sign-in throttle.
    pub(crate) admin_ui: crate::admin::ui::UiState,
}

impl Gateway {
    pub fn new(config: Config, auth: AuthServer, limiter: Arc<dyn Limiter>) -> Arc<Gateway> {
        let metrics = Metrics::with_auth_stats(
            auth.verifier.stats.clone(),
            auth.notifier.dropped_counter(),
            auth.stats.clone(),
        );
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let tunnels = Tunnels::new(config.runtime.limits.max_connections);
        let admin_ui = crate::admin::ui::UiState::new(
            config
                .gateway
                .admin
                .as_ref()
                .map_or(crate::config::DEFAULT_UI_IDLE_TIMEOUT, |a| {
                    a.ui_idle_timeout
                }),
        );
        let runtime = Runtime::build(
            config.runtime.clone(),
            &metrics,
            None,
            &shutdown.subscribe(),
        );
        Arc::new(Gateway {
            config,
            auth,
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            limiter,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            shutdown,
            tunnels,
            admin_ui,
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
                let policies = new_config.policies.clone();
                // The running configuration lends its targets' health state to the new one.
                let previous = self.runtime.load_full();
                let runtime = Runtime::build(
                    new_config,
                    &self.metrics,
                    Some(&previous),
                    &self.shutdown.subscribe(),
                );
                self.runtime.store(Arc::new(runtime));
                tracing::info!(apis = count, "configuration reloaded");
                self.warn_shadowed_policies(&policies).await;
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

    /// Warns about stored policies that a policy of the same id in policies.yaml now hides (the admin
    /// API refuses such ids, but the file may gain one later). The file policy is the one that applies;
    /// the stored one stays until the file's is removed. Best effort: a store that does not answer
    /// only costs the warning.
    pub async fn warn_shadowed_policies(&self, file_policies: &[crate::config::Policy]) {
        if file_policies.is_empty() {
            return;
        }
        match self.auth.store.list_policies().await {
            Ok(stored) => {
                for policy in stored
                    .iter()
                    .filter(|s| file_policies.iter().any(|f| f.id == s.id))
                {
                    tracing::warn!(
                        policy = %policy.id,
                        "policies.yaml defines a policy with the id of a stored one; the file's applies"
                    );
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "could not look for stored policies shadowed by policies.yaml")
            }
        }
    }

    /// `/health` on both listeners: 503 while shutting down or when the store does not answer.
    /// `/health` on both listeners: 200 when the gateway serves and its storage answers, otherwise 503
    /// with `Retry-After` so that load balancers take the node out and probe again. The storage error
    /// text is only shown on the admin listener (`detail`): the public one does not describe internals.
    pub async fn health_response(&self, detail: bool) -> http::Response<crate::http_util::Body> {
        let backend = match self.config.gateway.storage {
            crate::config::StorageConfig::Memory => "memory",
            crate::config::StorageConfig::Redis(_) => "redis",
        };
        let mut storage = serde_json::json!({"backend": backend, "status": "ok"});
        if let Err(err) = self.auth.store.ping().await {
            storage["status"] = "unavailable".into();
            if detail {
                storage["error"] = err.to_string().into();
            }
        }
        let reason = if self.is_draining() {
            Some("shutting down")
        } else if storage["status"] != "ok" {
            Some("storage unreachable")
        } else {
            None
        };
        let Some(reason) = reason else {
            return crate::error::json_response(
                http::StatusCode::OK,
                &serde_json::json!({"status": "ok", "storage": storage}),
            );
        };
        let mut response = crate::error::json_response(
            http::StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "unavailable", "reason": reason, "storage": storage}),
        );
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        response
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
    }

    /// Turns true when the gateway starts shutting down.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl Runtime {
    fn build(
        config: Arc<RuntimeConfig>,
        metrics: &Metrics,
        previous: Option<&Runtime>,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Runtime {
        let client = UpstreamClient::new(&config.limits);
        let routes: Vec<(String, Arc<ApiRoute>)> = config
            .apis
            .iter()
            .map(|def| {
                let upstream = match &def.upstream.target {
                    UpstreamTarget::Targets(targets) => {
                        let before = previous
                            .and_then(|p| p.route_by_id(&def.id))
                            .and_then(|r| r.upstream.as_ref());
                        Some(Balancer::build(
                            &def.upstream,
                            targets,
                            &client,
                            before,
                            shutdown,
                        ))
                    }
                    UpstreamTarget::Mock(_) => None,
                };
                let route = ApiRoute {
                    def: def.clone(),
                    metrics: metrics.api(&def.id),
                    upstream,
                };
                (def.listen_path.clone(), Arc::new(route))
            })
            .collect();
        let router = Router::new(routes.iter().map(|(lp, r)| (lp.as_str(), r.clone())));
        Runtime {
            config,
            router,
            client,
        }
    }

    /// The route of the API with this id (the admin API, and a reload looking for the state to keep).
    pub fn route_by_id(&self, id: &str) -> Option<&Arc<ApiRoute>> {
        self.router.values().find(|r| r.def.id == id)
    }
}
