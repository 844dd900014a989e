//! The admin API (DESIGN §6): a separate listener, every route behind the admin secret.

pub mod metrics;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::error::{GatewayError, json_response};
use crate::gateway::Gateway;
use crate::http_util::{Body, full};
use crate::server::ConnInfo;

pub async fn handle(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    _conn: ConnInfo,
) -> Response<Body> {
    match route(&gateway, req).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn route(gateway: &Gateway, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    authorize(gateway, &req)?;
    let path = req.uri().path().trim_end_matches('/');
    match (req.method(), path) {
        (&Method::GET, "/health") => Ok(health(gateway)),
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(full(Bytes::from(gateway.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(response)
        }
        (&Method::GET, "/apis") => Ok(apis(gateway)),
        (&Method::POST, "/reload") => Ok(reload(gateway).await),
        (_, "/health" | "/metrics" | "/apis" | "/reload") => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    }
}

/// `Authorization: Bearer <admin secret>`, compared in constant time.
fn authorize<B>(gateway: &Gateway, req: &Request<B>) -> Result<(), GatewayError> {
    let Some(admin) = &gateway.settings().admin else {
        return Err(GatewayError::NotFound);
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), admin.secret.as_bytes()) {
        Ok(())
    } else {
        Err(GatewayError::AdminUnauthorized)
    }
}

/// Compares without an early exit on the first differing byte, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Hashing first makes the comparison length-independent too.
    let a = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a);
    let b = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn health(gateway: &Gateway) -> Response<Body> {
    let storage = match gateway.settings().storage {
        crate::config::StorageConfig::Memory => "memory",
        crate::config::StorageConfig::Redis(_) => "redis",
    };
    let (status, text) = if gateway.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else {
        (StatusCode::OK, "ok")
    };
    json_response(
        status,
        &serde_json::json!({"status": text, "storage": {"backend": storage, "status": "ok"}}),
    )
}

fn apis(gateway: &Gateway) -> Response<Body> {
    let runtime = gateway.runtime();
    let list: Vec<serde_json::Value> = runtime
        .config
        .apis
        .iter()
        .map(|api| {
            let upstream = match &api.upstream.target {
                crate::config::UpstreamTarget::Url { uri, path_prefix } => {
                    format!("{}://{}{}", uri.scheme_str().unwrap_or("http"), uri.authority().map(|a| a.as_str()).unwrap_or(""), path_prefix)
                }
                crate::config::UpstreamTarget::Mock(_) => "mock".to_string(),
            };
            serde_json::json!({
                "id": api.id,
                "name": api.name,
                "listen_path": api.listen_path,
                "upstream": upstream,
                "auth": match api.auth.kind { crate::config::AuthType::OAuth2 => "oauth2", crate::config::AuthType::None => "none" },
                "oauth": api.oauth.is_some(),
                "file": api.file.display().to_string(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &serde_json::json!({ "apis": list }))
}

async fn reload(gateway: &Gateway) -> Response<Body> {
    match gateway.reload().await {
        Ok(count) => json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "apis": count}),
        ),
        Err(errors) => {
            let problems: Vec<String> = errors.0.iter().map(|p| p.to_string()).collect();
            json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({
                    "error": "invalid_configuration",
                    "error_description": "the new configuration was refused; the running one stays",
                    "problems": problems,
                }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq(
            b"secret-secret-secret",
            b"secret-secret-secret"
        ));
        assert!(!constant_time_eq(
            b"secret-secret-secret",
            b"secret-secret-secreT"
        ));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
