//! The authorization endpoint (being written).

use http::{Request, Response};
use hyper::body::Incoming;

use crate::config::ApiDef;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Runtime};
use crate::http_util::Body;
use crate::server::ConnInfo;

pub async fn handle(
    _gateway: &Gateway,
    _runtime: &Runtime,
    _api: &ApiDef,
    _req: Request<Incoming>,
    _conn: ConnInfo,
) -> Result<Response<Body>, GatewayError> {
    Err(GatewayError::NotFound)
}
