//! The connection to Redis (one node, or a cluster) that the store and the limiter share: every call
//! bounded by `storage.redis.timeout`, and a single-node connection that nobody answers on replaced by
//! a fresh one.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Client, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisError, RedisFuture,
    RedisResult, Value,
};

use crate::config::RedisConfig;
use crate::error::{StoreError, StoreResult};

/// Consecutive timed-out calls after which the single-node connection is replaced.
pub const REBUILD_AFTER_TIMEOUTS: u32 = 3;
/// ... but not more often than this.
const REBUILD_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// One Redis or a cluster, behind the crate's connection trait so commands and scripts run on either.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection shared by the store and the limiter, with the per-call time bound.
pub struct Backend {
    conn: RwLock<Conn>,
    /// What a replacement single-node connection is built from (`None` for a cluster, whose client
    /// manages its node connections itself).
    rebuild: Option<(Client, ConnectionManagerConfig)>,
    timeout: Duration,
    timeouts_in_a_row: AtomicU32,
    last_rebuild: RwLock<Option<Instant>>,
}

impl Backend {
    /// Connects (fails if Redis does not answer within `startup`) and returns the backend and the
    /// clients the subscriber may use (one per node it may subscribe on).
    pub async fn connect(
        cfg: &RedisConfig,
        startup: Duration,
    ) -> Result<(Arc<Backend>, Vec<Client>), StoreError> {
        let unavailable = |what: &str, err: RedisError| {
            StoreError::Unavailable(format!("redis: {what}: {}", describe(&err)))
        };
        let connect_timeout = cfg.timeout.max(Duration::from_secs(1));
        if cfg.cluster.is_empty() {
            let url = cfg.url.as_deref().ok_or_else(|| {
                StoreError::Unavailable("redis: storage.redis.url is not set".into())
            })?;
            let info = url
                .into_connection_info()
                .map_err(|e| unavailable("invalid storage.redis.url", e))?;
            let client = Client::open(info.clone()).map_err(|e| unavailable("invalid url", e))?;
            let manager_cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(cfg.timeout))
                .set_number_of_retries(3)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            let manager = tokio::time::timeout(
                startup,
                ConnectionManager::new_with_config(client.clone(), manager_cfg.clone()),
            )
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("redis: no connection within {startup:?}"))
            })?
            .map_err(|e| unavailable("cannot connect", e))?;
            let subscriber = Client::open(resp3(info)).map_err(|e| unavailable("url", e))?;
            let backend = Backend::new(
                Conn::Single(manager),
                Some((client, manager_cfg)),
                cfg.timeout,
            );
            Ok((backend, vec![subscriber]))
        } else {
            let nodes: Vec<String> = cfg.cluster.iter().map(|n| node_url(n)).collect();
            let client = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(connect_timeout)
                .response_timeout(cfg.timeout)
                .build()
                .map_err(|e| unavailable("invalid storage.redis.cluster", e))?;
            let conn = tokio::time::timeout(startup, client.get_async_connection())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "redis cluster: no connection within {startup:?}"
                    ))
                })?
                .map_err(|e| unavailable("cannot connect to the cluster", e))?;
            let mut subscribers = Vec::new();
            for node in &nodes {
                let info = node
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| unavailable("invalid cluster node", e))?;
                subscribers.push(Client::open(resp3(info)).map_err(|e| unavailable("node", e))?);
            }
            Ok((
                Backend::new(Conn::Cluster(conn), None, cfg.timeout),
                subscribers,
            ))
        }
    }

    pub fn new(
        conn: Conn,
        rebuild: Option<(Client, ConnectionManagerConfig)>,
        timeout: Duration,
    ) -> Arc<Backend> {
        Arc::new(Backend {
            conn: RwLock::new(conn),
            rebuild,
            timeout,
            timeouts_in_a_row: AtomicU32::new(0),
            last_rebuild: RwLock::new(None),
        })
    }

    /// A handle on the connection (cheap: both kinds are reference-counted).
    pub fn conn(&self) -> Conn {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one Redis call within `storage.redis.timeout`; every failure is `Unavailable` except a
    /// record a script found corrupt.
    pub async fn bounded<T>(&self, call: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(err)) => {
                if err.is_timeout() {
                    self.note_timeout();
                } else {
                    self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                }
                Err(store_error(&err))
            }
            Err(_) => {
                self.note_timeout();
                Err(StoreError::Unavailable(format!(
                    "redis did not answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    /// Calls that keep timing out without an error mean a connection nobody answers on (the peer
    /// vanished without a reset): the connection manager would wait on it forever, so replace it.
    fn note_timeout(&self) {
        let in_a_row = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row < REBUILD_AFTER_TIMEOUTS {
            return;
        }
        let Some((client, manager_cfg)) = &self.rebuild else {
            return;
        };
        {
            let mut last = self
                .last_rebuild
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < REBUILD_MIN_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        match ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone()) {
            Ok(manager) => {
                *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Conn::Single(manager);
                tracing::warn!(
                    "redis: calls keep timing out; replaced the connection with a new one"
                );
            }
            Err(err) => {
                tracing::warn!(error = %describe(&err), "redis: could not replace the connection")
            }
        }
    }
}

/// The same connection settings over RESP3, which the subscriber needs (push messages on a
/// multiplexed connection).
fn resp3(info: redis::ConnectionInfo) -> redis::ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

/// Cluster seed nodes may be given as `host:port`.
fn node_url(node: &str) -> String {
    if node.contains("://") {
        node.to_string()
    } else {
        format!("redis://{node}")
    }
}

/// An error's text without anything a URL could have carried (the crate never prints passwords).
pub fn describe(err: &RedisError) -> String {
    err.to_string()
}

/// A Redis error as the store reports it: a record a script refused as corrupt (`TGCORRUPT`), or the
/// backend unavailable.
pub fn store_error(err: &RedisError) -> StoreError {
    if err.code() == Some("TGCORRUPT") {
        StoreError::Corrupt(describe(err))
    } else {
        StoreError::Unavailable(format!("redis: {}", describe(err)))
    }
}
