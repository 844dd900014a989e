//! The `tollgate` binary as operators run it: JSON logs on stderr, one access line per request without
//! query strings or credentials, SIGTERM → drain and exit 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const SECRET: &str = "binary-test-client-secret";

#[tokio::test]
async fn json_access_logs_never_contain_credentials_and_sigterm_exits_cleanly() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    // Replace the test default log level with JSON at info.
    let yaml = std::fs::read_to_string(config.gateway_yaml())
        .unwrap()
        .replace("log: { level: warn }", "log: { level: info, format: json }");
    config.write("gateway.yaml", &yaml);
    let hash = tollgate::secrets::hash_secret(SECRET).unwrap();
    config.api(
        "movies",
        &format!(
            "listen_path: /movies/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: oauth2, query: access_token }}\noauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n    - client_id: svc\n      secret_hash: \"{hash}\"\n      grant_types: [client_credentials]\n      scopes: [read]\n",
            upstream.url()
        ),
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["run", "--config"])
        .arg(config.gateway_yaml())
        .env_remove("TOLLGATE_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start tollgate");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway logs its address");
        let value: serde_json::Value = serde_json::from_str(&line).expect("every log line is JSON");
        lines.push(line);
        if value["message"] == "proxy listening" {
            break value["addr"].as_str().unwrap().to_string();
        }
    };
    let base = format!("http://{addr}");

    let token_response = send(
        http::Request::post(format!("{base}/movies/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                "grant_type=client_credentials&client_id=svc&client_secret={SECRET}"
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(token_response.status, 200, "{}", token_response.text());
    let token = token_response.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let by_query = get(&format!("{base}/movies/x?access_token={token}&page=2")).await;
    assert_eq!(by_query.status, 200);
    assert_eq!(
        upstream.last().target,
        "/x?page=2",
        "the credential is stripped from the query"
    );
    let by_header = get_with(
        &format!("{base}/movies/y"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(by_header.status, 200);

    // Refused credentials stay out of the logs too: a forged token, a wrong client secret.
    let forged = format!("{token}x");
    let refused = get_with(
        &format!("{base}/movies/z"),
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(refused.status, 401);
    let refused = get(&format!(
        "{base}/movies/z?access_token=not-a-token-{SECRET}"
    ))
    .await;
    assert_eq!(refused.status, 401);
    let wrong_secret = send(
        http::Request::post(format!("{base}/movies/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                "grant_type=client_credentials&client_id=svc&client_secret=guessed-secret-42",
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(wrong_secret.status, 401);

    // SIGTERM: drain and exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "tollgate exited with {exit:?}");
    // The reader ends at EOF on stderr, that is once the process is gone: only then is every line in.
    reader.join().expect("log reader");
    lines.extend(rx.try_iter());

    let access: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v["message"] == "request")
        .collect();
    let paths: Vec<&str> = access.iter().filter_map(|v| v["path"].as_str()).collect();
    assert!(paths.contains(&"/movies/x"), "{paths:?}");
    assert!(paths.contains(&"/movies/y"), "{paths:?}");
    let x = access.iter().find(|v| v["path"] == "/movies/x").unwrap();
    assert_eq!(x["api"], "movies");
    assert_eq!(x["status"], 200);
    assert!(x["latency_ms"].is_number() && x["upstream_latency_ms"].is_number());
    let all = lines.join("\n");
    assert!(!all.contains(&token), "an access token reached the logs");
    assert!(!all.contains(SECRET), "a client secret reached the logs");
    assert!(!all.contains(&forged), "a refused token reached the logs");
    assert!(
        !all.contains("guessed-secret-42"),
        "a wrong secret reached the logs"
    );
    assert!(
        all.contains("/movies/z"),
        "the refused requests are logged: {all}"
    );
    assert!(!all.contains("page=2"), "query strings are not logged");
    assert!(all.contains("shutting down"));
    // The wrong secret is a security event: routable by its `security` field, naming the client and
    // the address, never the secret.
    let event = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["security"] == "client_auth_failed")
        .unwrap_or_else(|| panic!("no client_auth_failed security event in {all}"));
    assert_eq!(event["client"], "svc", "{event}");
    assert_eq!(event["address"], "127.0.0.1", "{event}");
    assert_eq!(event["level"], "WARN", "{event}");
}
