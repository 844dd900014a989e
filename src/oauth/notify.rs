//! Token event notifications (Tyk's `notifications`): a JSON POST after each new, refreshed or revoked
//! token, signed with HMAC-SHA256 of the API's `shared_secret` so receivers can verify it.
//!
//! Sending happens on a background task with a timeout and a few retries; a slow or failing receiver
//! never delays a token response. Both the queue (`QUEUE` notifications) and the deliveries in flight
//! (`IN_FLIGHT`) are bounded: a receiver that hangs costs at most `IN_FLIGHT` tasks, and a full queue
//! drops notifications (counted in `/metrics` as `tollgate_notifications_dropped_total`) rather than
//! growing without bound. The bodies carry tokens, so receivers must be `https://` (config loading
//! allows plain `http://` for loopback hosts only).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use crate::config::ApiDef;

use crate::secrets;

pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";
const QUEUE: usize = 1024;
/// Deliveries in flight at once; the rest wait in the queue.
const IN_FLIGHT: usize = 64;
const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notification {
    pub notification_type: &'static str,
    pub api_id: String,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_oauth_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_code: Option<String>,
}

struct Job {
    url: String,
    secret: String,
    body: Vec<u8>,
}

#[derive(Clone)]
pub struct Notifier {
    queue: Option<mpsc::Sender<Job>>,
    dropped: Arc<AtomicU64>,
}

impl Notifier {
    /// Starts the sender task (needs a Tokio runtime).
    pub fn start() -> Notifier {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(rx));
        Notifier {
            queue: Some(tx),
            dropped: Arc::default(),
        }
    }

    /// A notifier that sends nothing (for flows tested without a runtime).
    pub fn disabled() -> Notifier {
        Notifier {
            queue: None,
            dropped: Arc::default(),
        }
    }

    /// Notifications dropped because the queue was full, since start (rendered by `/metrics`).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Queues a notification if the API has a receiver configured; never waits.
    pub fn send(&self, api: &ApiDef, notification: Notification) {
        let (Some(queue), Some(target)) = (
            &self.queue,
            api.oauth.as_ref().and_then(|o| o.notifications.as_ref()),
        ) else {
            return;
        };
        let Ok(body) = serde_json::to_vec(&notification) else {
            return;
        };
        let job = Job {
            url: target.url.clone(),
            secret: target.shared_secret.clone(),
            body,
        };
        if queue.try_send(job).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(api = %api.id, "notification queue full; notification dropped");
        }
    }
}

/// `sha256=<hex HMAC-SHA256(shared_secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        secrets::hmac_sha256_hex(secret.as_bytes(), body)
    )
}

async fn deliver(mut rx: mpsc::Receiver<Job>) {
    let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(builder) => builder.https_or_http().enable_http1().build(),
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .build(),
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(job) = rx.recv().await {
        // Waiting here leaves further notifications in the bounded queue.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        // Each job on its own task: one slow receiver does not hold up the others.
        tokio::spawn(async move {
            let _permit = permit;
            let signature = signature(&job.secret, &job.body);
            let body = Bytes::from(job.body);
            for attempt in 1..=ATTEMPTS {
                let Ok(request) = Request::post(&job.url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, &signature)
                    .body(Full::new(body.clone()))
                else {
                    tracing::warn!("notification URL is not usable");
                    return;
                };
                match tokio::time::timeout(TIMEOUT, client.request(request)).await {
                    Ok(Ok(response)) if response.status().is_success() => {
                        let _ = response.into_body().collect().await;
                        return;
                    }
                    Ok(Ok(response)) => {
                        tracing::warn!(status = %response.status(), attempt, "notification refused by the receiver");
                    }
                    Ok(Err(err)) => tracing::warn!(error = %err, attempt, "notification failed"),
                    Err(_) => tracing::warn!(attempt, "notification timed out"),
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        });
    }
}
