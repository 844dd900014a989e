//! `GET /stats?window=...`: the last minutes of traffic per API, from the ring buffers that
//! `metrics::recent` keeps (the admin UI's overview renders the same document).

use serde_json::{Value, json};

use crate::clock::now as unix_now;
use crate::error::GatewayError;
use crate::metrics::recent::{MAX_WINDOW_SECS, SLOT_SECS, parse_window};
use crate::proxy::gateway::Gateway;

/// `GET /stats[?window=15m]`: every API of the running configuration (in config order), then the
/// requests that matched no API, each with the window's totals and its 10-second series.
pub(crate) fn response(
    gateway: &Gateway,
    query: Option<&str>,
) -> Result<http::Response<crate::http_util::Body>, GatewayError> {
    let window = window_param(query)?;
    Ok(crate::error::json_response(
        http::StatusCode::OK,
        &report(gateway, unix_now(), window),
    ))
}

/// The body of `GET /stats` at `now` (the admin UI renders the same document).
pub(crate) fn report(gateway: &Gateway, now: u64, window_secs: u64) -> Value {
    let runtime = gateway.runtime();
    let apis: Vec<Value> = runtime
        .config
        .apis
        .iter()
        .map(|api| {
            let mut v = gateway
                .metrics
                .api(&api.id)
                .recent
                .snapshot(now, window_secs)
                .json();
            v["api"] = api.id.clone().into();
            v
        })
        .collect();
    json!({
        "window_secs": window_secs,
        "slot_secs": SLOT_SECS,
        "now": now,
        "apis": apis,
        "unrouted": gateway.metrics.unrouted.recent.snapshot(now, window_secs).json(),
    })
}

/// The optional `window` query parameter (default 15m); any other parameter is refused, naming it.
pub(crate) fn window_param(query: Option<&str>) -> Result<u64, GatewayError> {
    let mut window = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "window" if window.is_none() => {
                window = Some(parse_window(&value).map_err(GatewayError::InvalidInput)?);
            }
            "window" => {
                return Err(GatewayError::InvalidInput(
                    "window: given more than once".to_owned(),
                ));
            }
            other => {
                return Err(GatewayError::InvalidInput(format!(
                    "{other}: unknown query parameter (only `window` is accepted)"
                )));
            }
        }
    }
    Ok(window.unwrap_or(MAX_WINDOW_SECS))
}
