//! Traffic management over real sockets: several targets, balancing, health, retries
//! (docs/design.md §9b).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An upstream that answers every request with its own name (`/health` included) and counts what it
/// served, and that can be stopped (listener and open connections gone) and started again on the
/// same port.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Target {
    async fn start(name: &'static str) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut target = Target {
            name,
            addr,
            served: Arc::default(),
            probes: Arc::default(),
            task: None,
        };
        target.serve(listener);
        target
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, served, probes) = (self.name, self.served.clone(), self.probes.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the accept task drops it and closes them all.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (served, probes) = (served.clone(), probes.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (served, probes) = (served.clone(), probes.clone());
                        async move {
                            if req.uri().path() == "/health" {
                                probes.fetch_add(1, Ordering::SeqCst);
                            } else {
                                served.fetch_add(1, Ordering::SeqCst);
                            }
                            let _ = req.into_body().collect().await;
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(name))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn restart(&mut self) {
        // The port was ours a moment ago; the listener sets SO_REUSEADDR, so rebinding works even
        // with connections of the old one in TIME_WAIT.
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.serve(listener);
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn gateway(id: &str, yaml: &str) -> TestGateway {
    let config = ConfigDir::new("");
    config.api(id, yaml);
    TestGateway::start(config).await
}

fn targets_yaml(targets: &[(&Target, u32)]) -> String {
    targets
        .iter()
        .map(|(t, w)| format!("    - {{ url: \"{}\", weight: {w} }}\n", t.url()))
        .collect()
}

/// The `targets` entry of `GET /apis/{id}/targets` for the target at `url`.
async fn target_state(gw: &TestGateway, api: &str, url: &str) -> serde_json::Value {
    let response = gw.admin_get(&format!("/apis/{api}/targets")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["targets"]
        .as_array()
        .and_then(|list| list.iter().find(|t| t["url"] == url).cloned())
        .unwrap_or_else(|| panic!("{url} not listed: {}", response.text()))
}

#[tokio::test]
async fn requests_are_spread_by_weight() {
    let a = Target::start("a").await;
    let b = Target::start("b").await;
    let gw = gateway(
        "weighted",
        &format!(
            "listen_path: /w/\nauth: {{ type: none }}\nupstream:\n  targets:\n{}",
            targets_yaml(&[(&a, 1), (&b, 3)])
        ),
    )
    .await;

    for _ in 0..1000 {
        assert_eq!(get(&gw.url("/w/x")).await.status, 200);
    }
    // Weights 1:3 → 250 and 750; smooth round robin is exact, allow a few percent anyway.
    assert!((230..=270).contains(&a.served()), "a served {}", a.served());
    assert!((730..=770).contains(&b.served()), "b served {}", b.served());
    assert_eq!(a.served() + b.served(), 1000);
}

#[tokio::test]
async fn a_stopped_target_costs_gets_nothing_is_ejected_and_comes_back() {
    let a = Target::start("a").await;
    let mut b = Target::start("b").await;
    let gw = gateway(
        "pair",
        &format!(
            "listen_path: /p/\nauth: {{ type: none }}\nupstream:\n  targets:\n{}  retries: 1\n  health_check:\n    active: {{ path: /health, interval: 200ms, timeout: 200ms, healthy_after: 1, unhealthy_after: 1 }}\n    passive: {{ unhealthy_after: 1, eject_for: 1s }}\n",
            targets_yaml(&[(&a, 1), (&b, 1)])
        ),
    )
    .await;
    let b_url = b.url();

    // Both serve.
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/p/x")).await.status, 200);
    }
    assert!(b.served() > 0);

    // b goes away mid-run: every GET still succeeds (retried on a), and b is taken out.
    b.stop();
    for i in 0..200 {
        let response = get(&gw.url("/p/x")).await;
        assert_eq!(
            response.status,
            200,
            "request {i} after b stopped: {}",
            response.text()
        );
        assert_eq!(response.text(), "a");
    }
    let state = target_state(&gw, "pair", &b_url).await;
    assert_eq!(state["healthy"], false, "{state}");
    assert!(state["ejections"].as_u64() >= Some(1), "{state}");
    let metrics = gw.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(&format!(
            "tollgate_upstream_target_healthy{{api=\"pair\",target=\"{b_url}\"}} 0"
        )),
        "{metrics}"
    );

    // b returns: the active check brings it back and it gets requests again.
    b.restart().await;
    let back = eventually(Duration::from_secs(20), || async {
        target_state(&gw, "pair", &b_url).await["healthy"] == true
    })
    .await;
    assert!(back, "b was not taken back");
    let before = b.served();
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/p/x")).await.status, 200);
    }
    assert!(b.served() > before, "b got no request after it returned");
}

#[tokio::test]
async fn consistent_hashing_keeps_a_key_on_its_target_and_a_removal_moves_only_its_keys() {
    let a = Target::start("a").await;
    let b = Target::start("b").await;
    let c = Target::start("c").await;
    let api = |targets: &[(&Target, u32)]| {
        format!(
            "listen_path: /h/\nauth: {{ type: none }}\nupstream:\n  balance: hash\n  hash_on: {{ header: X-Tenant }}\n  targets:\n{}",
            targets_yaml(targets)
        )
    };
    let gw = gateway("hashed", &api(&[(&a, 1), (&b, 1), (&c, 1)])).await;

    let tenant_target = |tenant: String| {
        let url = gw.url("/h/x");
        async move {
            let response = get_with(&url, &[("x-tenant", &tenant)]).await;
            assert_eq!(response.status, 200);
            response.text()
        }
    };
    let mut placed: HashMap<String, String> = HashMap::new();
    for t in 0..60 {
        let tenant = format!("tenant-{t}");
        let first = tenant_target(tenant.clone()).await;
        for _ in 0..3 {
            assert_eq!(tenant_target(tenant.clone()).await, first, "{tenant} moved");
        }
        placed.insert(tenant, first);
    }
    let used: std::collections::HashSet<&String> = placed.values().collect();
    assert_eq!(used.len(), 3, "every target gets some tenants: {placed:?}");

    // c is removed from the configuration: its tenants move, nobody else's.
    gw.config.api("hashed", &api(&[(&a, 1), (&b, 1)]));
    assert_eq!(gw.admin_post("/reload").await.status, 200);
    for (tenant, before) in &placed {
        let now = tenant_target(tenant.clone()).await;
        if before == "c" {
            assert_ne!(now, "c");
        } else {
            assert_eq!(&now, before, "{tenant} moved although its target stayed");
        }
    }
}

#[tokio::test]
async fn no_healthy_target_is_503_with_retry_after() {
    let down = closed_port().await;
    let gw = gateway(
        "dead",
        &format!(
            "listen_path: /d/\nauth: {{ type: none }}\nupstream:\n  url: http://{down}\n  health_check:\n    passive: {{ unhealthy_after: 1, eject_for: 30s }}\n"
        ),
    )
    .await;

    // The failure that ejects the only target is still the upstream's: 502.
    assert_eq!(get(&gw.url("/d/x")).await.status, 502);
    let response = get(&gw.url("/d/x")).await;
    assert_eq!(response.status, 503);
    let retry_after: u64 = response
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(
        response.json(),
        serde_json::json!({"error": "temporarily_unavailable", "error_description": "no healthy upstream target; retry later"})
    );
}

/// Accepts a connection, reads the request head, and closes without answering: a reset after the
/// request reached the target.
async fn swallowing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<AtomicUsize> = Arc::default();
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = stream.read(&mut buf).await
                    && n > 0
                {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_post_that_reached_a_target_is_never_sent_again_but_a_refused_connect_is_retried() {
    let good = Target::start("good").await;
    let (swallower, swallowed) = swallowing_upstream().await;
    let refused = closed_port().await;
    let config = ConfigDir::new("");
    // Round robin starts with the first target: each API's first request meets the bad one first.
    config.api(
        "reset",
        &format!(
            "listen_path: /r/\nauth: {{ type: none }}\nupstream:\n  targets:\n    - {{ url: \"http://{swallower}\" }}\n    - {{ url: \"{}\" }}\n  retries: 1\n",
            good.url()
        ),
    );
    config.api(
        "refused",
        &format!(
            "listen_path: /c/\nauth: {{ type: none }}\nupstream:\n  targets:\n    - {{ url: \"http://{refused}\" }}\n    - {{ url: \"{}\" }}\n  retries: 1\n",
            good.url()
        ),
    );
    let gw = TestGateway::start(config).await;
    let post = |url: String| async move {
        send(
            Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
                .unwrap(),
        )
        .await
    };

    // The POST reached the swallowing target, which reset: not sent again, 502.
    let response = post(gw.url("/r/orders")).await;
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(swallowed.load(Ordering::SeqCst), 1);
    assert_eq!(good.served(), 0, "the POST was sent a second time");

    // A GET meeting the same target is retried on the good one.
    let before = swallowed.load(Ordering::SeqCst);
    let mut answered = 0;
    for _ in 0..4 {
        let response = get(&gw.url("/r/orders")).await;
        assert_eq!(response.status, 200, "{}", response.text());
        answered += 1;
    }
    assert_eq!(answered, 4);
    assert!(
        swallowed.load(Ordering::SeqCst) > before,
        "no GET met the resetting target"
    );

    // A refused connection sent nothing: the POST goes to the other target, body intact.
    let served = good.served();
    for _ in 0..4 {
        let response = post(gw.url("/c/orders")).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.text(), "good");
    }
    assert_eq!(good.served(), served + 4);
}

#[tokio::test]
async fn a_reload_keeps_the_health_of_unchanged_targets_and_stops_probing_removed_ones() {
    let a = Target::start("a").await;
    let b = Target::start("b").await;
    let down = closed_port().await;
    let api = |targets: String| {
        format!(
            "listen_path: /k/\nauth: {{ type: none }}\nupstream:\n  targets:\n{targets}  health_check:\n    active: {{ path: /health, interval: 100ms, timeout: 100ms, healthy_after: 1, unhealthy_after: 1 }}\n"
        )
    };
    let down_line = format!("    - {{ url: \"http://{down}\" }}\n");
    let gw = gateway(
        "kept",
        &api(format!("{}{down_line}", targets_yaml(&[(&a, 1), (&b, 1)]))),
    )
    .await;
    let down_url = format!("http://{down}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            target_state(&gw, "kept", &down_url).await["healthy"] == false
        })
        .await,
        "the closed port was never found down"
    );

    // A reload that changes only a weight: the down target stays down without a new probe round.
    gw.config.api(
        "kept",
        &api(format!("{}{down_line}", targets_yaml(&[(&a, 2), (&b, 1)]))),
    );
    assert_eq!(gw.admin_post("/reload").await.status, 200);
    let state = target_state(&gw, "kept", &down_url).await;
    assert_eq!(state["healthy"], false, "{state}");
    assert_eq!(state["ejections"], 1, "{state}");

    // b removed: its probe task ends.
    gw.config.api("kept", &api(targets_yaml(&[(&a, 1)])));
    assert_eq!(gw.admin_post("/reload").await.status, 200);
    let probes = b.probes.load(Ordering::SeqCst);
    let a_probes = a.probes.load(Ordering::SeqCst);
    // a keeps being probed (five more rounds at least) while b is not probed again.
    assert!(
        eventually(Duration::from_secs(20), || async {
            a.probes.load(Ordering::SeqCst) >= a_probes + 5
        })
        .await
    );
    assert!(
        b.probes.load(Ordering::SeqCst) <= probes + 1,
        "b was still probed after its removal"
    );
}
