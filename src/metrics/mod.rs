//! Prometheus metrics, kept in atomics so the proxy path never takes a lock to count.
//!
//! Per-API counters live in an `ApiMetrics` that the routing table holds directly, so counting a
//! request is a few atomic adds; the registry map is only touched on reload and on scrape.
//!
//! Beside `oauth` and `auth`: reads the counters the authorization server keeps (`TokenStats`,
//! `VerifierStats`); nothing below `proxy` imports it.

pub mod recent;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::GrantType;
use crate::oauth::server::TokenStats;
use crate::secrets::VerifierStats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status classes we count individually; anything else lands in `other`.
const STATUSES: [u16; 16] = [
    200, 201, 204, 301, 302, 303, 304, 307, 400, 401, 403, 404, 413, 429, 500, 502,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

#[derive(Debug, Default)]
pub struct ApiMetrics {
    by_status: [AtomicU64; STATUSES.len()],
    other_status: Mutex<BTreeMap<u16, u64>>,
    pub latency: Histogram,
    pub upstream_latency: Histogram,
    /// The last 15 minutes, for `GET /stats` and the admin UI.
    pub recent: recent::Recent,
}

impl ApiMetrics {
    pub fn count(&self, status: u16) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                self.by_status[i].fetch_add(1, Relaxed);
            }
            None => {
                if let Ok(mut other) = self.other_status.lock() {
                    *other.entry(status).or_default() += 1;
                }
            }
        }
    }

    fn statuses(&self) -> BTreeMap<u16, u64> {
        let mut all: BTreeMap<u16, u64> = self
            .other_status
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        for (status, counter) in STATUSES.iter().zip(&self.by_status) {
            let n = counter.load(Relaxed);
            if n > 0 {
                all.insert(*status, n);
            }
        }
        all
    }
}

/// Why the gateway itself refused a request (docs/design.md §6 `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    NoCredential,
    InvalidToken,
    Scope,
    RateLimit,
    Quota,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::NoCredential => "no_credential",
            Rejection::InvalidToken => "invalid_token",
            Rejection::Scope => "insufficient_scope",
            Rejection::RateLimit => "rate_limit",
            Rejection::Quota => "quota",
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    apis: Mutex<BTreeMap<String, Arc<ApiMetrics>>>,
    /// Requests that matched no API (404) or were refused before routing (400).
    pub unrouted: ApiMetrics,
    rejections: Mutex<BTreeMap<(String, Rejection), u64>>,
    /// The secret-verification pool and the guessing throttles (kept by the authorization server).
    secrets: Arc<VerifierStats>,
    /// Connections closed at accept because their address had `max_connections_per_ip` open.
    connections_refused_per_ip: AtomicU64,
    /// Token event notifications dropped on a full queue (kept by the notifier).
    notifications_dropped: Arc<AtomicU64>,
    /// Stateless tokens, capped sessions and limited token requests (kept by the token endpoint).
    tokens: Arc<TokenStats>,
}

impl Metrics {
    /// Metrics that also report the authorization server's verification pool and throttles, and the
    /// notifications it dropped.
    pub fn with_auth_stats(
        secrets: Arc<VerifierStats>,
        notifications_dropped: Arc<AtomicU64>,
        tokens: Arc<TokenStats>,
    ) -> Metrics {
        Metrics {
            secrets,
            notifications_dropped,
            tokens,
            ..Metrics::default()
        }
    }

    /// The counters of one API; the same object across reloads, so counts survive them.
    pub fn api(&self, id: &str) -> Arc<ApiMetrics> {
        match self.apis.lock() {
            Ok(mut apis) => apis.entry(id.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    pub fn connection_refused_per_ip(&self) {
        self.connections_refused_per_ip.fetch_add(1, Relaxed);
    }

    pub fn reject(&self, api: &str, why: Rejection) {
        if matches!(why, Rejection::RateLimit | Rejection::Quota) {
            self.api(api).recent.refused(crate::clock::now());
        }
        if let Ok(mut rejections) = self.rejections.lock() {
            *rejections.entry((api.to_string(), why)).or_default() += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let apis: Vec<(String, Arc<ApiMetrics>)> = self
            .apis
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let everything = apis
            .iter()
            .map(|(id, m)| (id.as_str(), m.as_ref()))
            .chain(std::iter::once(("", &self.unrouted)));

        out.push_str("# HELP tollgate_requests_total Requests answered, by API and status.\n");
        out.push_str("# TYPE tollgate_requests_total counter\n");
        let mut latency = String::new();
        let mut upstream = String::new();
        for (id, m) in everything {
            let api = escape(id);
            for (status, n) in m.statuses() {
                let _ = writeln!(
                    out,
                    "tollgate_requests_total{{api=\"{api}\",status=\"{status}\"}} {n}"
                );
            }
            let labels = format!("api=\"{api}\"");
            m.latency
                .render(&mut latency, "tollgate_request_duration_seconds", &labels);
            m.upstream_latency
                .render(&mut upstream, "tollgate_upstream_duration_seconds", &labels);
        }
        out.push_str(
            "# HELP tollgate_request_duration_seconds Time from request to response head.\n",
        );
        out.push_str("# TYPE tollgate_request_duration_seconds histogram\n");
        out.push_str(&latency);
        out.push_str(
            "# HELP tollgate_upstream_duration_seconds Time the upstream took to answer.\n",
        );
        out.push_str("# TYPE tollgate_upstream_duration_seconds histogram\n");
        out.push_str(&upstream);

        out.push_str(
            "# HELP tollgate_rejected_total Requests refused by the gateway, by reason.\n",
        );
        out.push_str("# TYPE tollgate_rejected_total counter\n");
        if let Ok(rejections) = self.rejections.lock() {
            for ((api, why), n) in rejections.iter() {
                let _ = writeln!(
                    out,
                    "tollgate_rejected_total{{api=\"{}\",reason=\"{}\"}} {n}",
                    escape(api),
                    why.label()
                );
            }
        }
        self.render_secrets(&mut out);
        out.push_str(
            "# HELP tollgate_connections_refused_total Connections closed at accept, by reason.\n",
        );
        out.push_str("# TYPE tollgate_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "tollgate_connections_refused_total{{reason=\"per_ip\"}} {}",
            self.connections_refused_per_ip.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_notifications_dropped_total Token event notifications dropped because the queue was full.\n\
             # TYPE tollgate_notifications_dropped_total counter\n\
             tollgate_notifications_dropped_total {}",
            self.notifications_dropped.load(Relaxed)
        );
        out
    }
}

impl Metrics {
    fn render_secrets(&self, out: &mut String) {
        let s = &self.secrets;
        let _ = write!(
            out,
            "# HELP tollgate_secret_verifications_total argon2 verifications run (client secrets, passwords).\n\
             # TYPE tollgate_secret_verifications_total counter\n\
             tollgate_secret_verifications_total {}\n\
             # HELP tollgate_secret_verifications_rejected_total Callers answered 503 because every verification permit was taken and the queue was full.\n\
             # TYPE tollgate_secret_verifications_rejected_total counter\n\
             tollgate_secret_verifications_rejected_total {}\n\
             # HELP tollgate_guesses_throttled_total Logins and client authentications refused (429) by the failure limits, before any verification.\n\
             # TYPE tollgate_guesses_throttled_total counter\n\
             tollgate_guesses_throttled_total{{kind=\"login\"}} {}\n\
             tollgate_guesses_throttled_total{{kind=\"client\"}} {}\n",
            s.verifications.load(Relaxed),
            s.busy.load(Relaxed),
            s.throttled_logins.load(Relaxed),
            s.throttled_clients.load(Relaxed),
        );
        let t = &self.tokens;
        let _ = write!(
            out,
            "# HELP tollgate_stateless_tokens_issued_total Access tokens issued without stored state (client_credentials, grants without a refresh token).\n\
             # TYPE tollgate_stateless_tokens_issued_total counter\n\
             tollgate_stateless_tokens_issued_total {}\n\
             # HELP tollgate_sessions_capped_total Sessions ended because their user began more than oauth.max_sessions_per_user with one client.\n\
             # TYPE tollgate_sessions_capped_total counter\n\
             tollgate_sessions_capped_total {}\n\
             # HELP tollgate_token_requests_limited_total Token requests refused (429) by oauth.token_rate_limit.\n\
             # TYPE tollgate_token_requests_limited_total counter\n\
             tollgate_token_requests_limited_total {}\n",
            t.stateless_issued.load(Relaxed),
            t.sessions_capped.load(Relaxed),
            t.token_requests_limited.load(Relaxed),
        );
        out.push_str(
            "# HELP tollgate_tokens_issued_total Access tokens issued, by grant.\n\
             # TYPE tollgate_tokens_issued_total counter\n",
        );
        for (grant, n) in GrantType::ALL.iter().zip(&t.issued) {
            let _ = writeln!(
                out,
                "tollgate_tokens_issued_total{{kind=\"{}\"}} {}",
                grant.as_str(),
                n.load(Relaxed)
            );
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histograms() {
        let tokens = Arc::new(TokenStats::default());
        let metrics = Metrics::with_auth_stats(Arc::default(), Arc::default(), tokens.clone());
        let api = metrics.api("movies");
        api.count(200);
        api.count(200);
        api.count(418);
        api.latency.observe(Duration::from_millis(3));
        metrics.reject("movies", Rejection::RateLimit);
        tokens.count_issued(GrantType::ClientCredentials);
        metrics.connection_refused_per_ip();
        let text = metrics.render();
        assert!(text.contains("tollgate_requests_total{api=\"movies\",status=\"200\"} 2"));
        assert!(text.contains("tollgate_requests_total{api=\"movies\",status=\"418\"} 1"));
        assert!(
            text.contains(
                "tollgate_request_duration_seconds_bucket{api=\"movies\",le=\"0.005\"} 1"
            )
        );
        assert!(text.contains("tollgate_request_duration_seconds_count{api=\"movies\"} 1"));
        assert!(text.contains("tollgate_rejected_total{api=\"movies\",reason=\"rate_limit\"} 1"));
        assert!(text.contains("tollgate_tokens_issued_total{kind=\"client_credentials\"} 1"));
        assert!(text.contains("tollgate_tokens_issued_total{kind=\"password\"} 0"));
        assert!(text.contains("tollgate_connections_refused_total{reason=\"per_ip\"} 1"));
    }

    #[test]
    fn renders_the_secret_verification_counters() {
        let stats = Arc::new(VerifierStats::default());
        let dropped = Arc::new(AtomicU64::new(4));
        let tokens = Arc::new(TokenStats::default());
        let metrics = Metrics::with_auth_stats(stats.clone(), dropped, tokens.clone());
        tokens.sessions_capped.fetch_add(5, Relaxed);
        tokens.stateless_issued.fetch_add(6, Relaxed);
        stats.verifications.fetch_add(7, Relaxed);
        stats.busy.fetch_add(3, Relaxed);
        stats.throttled_clients.fetch_add(2, Relaxed);
        let text = metrics.render();
        assert!(
            text.contains("\ntollgate_secret_verifications_total 7\n"),
            "{text}"
        );
        assert!(text.contains("\ntollgate_secret_verifications_rejected_total 3\n"));
        assert!(text.contains("tollgate_guesses_throttled_total{kind=\"login\"} 0\n"));
        assert!(text.contains("tollgate_guesses_throttled_total{kind=\"client\"} 2\n"));
        assert!(text.contains("\ntollgate_notifications_dropped_total 4\n"));
        assert!(text.contains("\ntollgate_sessions_capped_total 5\n"));
        assert!(text.contains("\ntollgate_stateless_tokens_issued_total 6\n"));
        assert!(text.contains("\ntollgate_token_requests_limited_total 0\n"));
    }

    #[test]
    fn the_same_api_keeps_its_counters() {
        let metrics = Metrics::default();
        metrics.api("a").count(200);
        metrics.api("a").count(200);
        assert!(
            metrics
                .render()
                .contains("tollgate_requests_total{api=\"a\",status=\"200\"} 2")
        );
    }
}
