//! Keyplane's own system endpoints (not in UKO): the seal, unseal and master key rotation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::Error;
use keyplane_core::ports::{MasterKeyRotation, SealStatus, UnsealSecret};
use keyplane_core::service::{MetricsReader, OperationalView};
use serde::Deserialize;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::{AppState, Caller};

/// One unseal secret: a Shamir share (`key`), the `passphrase`, or the PKCS#11 `pin`. The dev
/// seal takes an empty object.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(max_properties = 1)]
pub(crate) struct UnsealBody {
    key: Option<String>,
    passphrase: Option<String>,
    pin: Option<String>,
}

impl UnsealBody {
    fn into_secret(self) -> Result<UnsealSecret, Error> {
        match (self.key, self.passphrase, self.pin) {
            (Some(k), None, None) => Ok(UnsealSecret::Share(Zeroizing::new(k))),
            (None, Some(p), None) => Ok(UnsealSecret::Passphrase(Zeroizing::new(p))),
            (None, None, Some(p)) => Ok(UnsealSecret::Pin(Zeroizing::new(p))),
            (None, None, None) => Ok(UnsealSecret::Nothing),
            _ => Err(Error::invalid_field(
                "key",
                "send one of key, passphrase or pin",
            )),
        }
    }
}

fn status_response(status: &SealStatus) -> Response {
    (StatusCode::OK, Json(status)).into_response()
}

/// The seal status: whether keys can be used, and unseal progress.
#[utoipa::path(get, path = "/api/v4/system/seal_status", tag = "system",
    responses((status = 200, description = "SealStatus", body = Object)))]
pub(crate) async fn seal_status(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Response> {
    Ok(status_response(&s.keyplane.read_seal_status(&caller)?))
}

/// Submit one unseal secret. A wrong or repeated share is refused and changes nothing.
#[utoipa::path(post, path = "/api/v4/system/unseal", tag = "system", request_body = UnsealBody,
    responses((status = 200, description = "SealStatus", body = Object), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn unseal(
    State(s): State<AppState>,
    Caller(actor): Caller,
    JsonBody(body): JsonBody<UnsealBody>,
) -> ApiResult<Response> {
    let status = s.keyplane.unseal(&actor, body.into_secret()).await?;
    Ok(status_response(&status))
}

/// Seal now: every key in memory is forgotten and key operations answer 503 until an unseal.
#[utoipa::path(post, path = "/api/v4/system/seal", tag = "system",
    responses((status = 200, description = "SealStatus", body = Object)))]
pub(crate) async fn seal(State(s): State<AppState>, Caller(actor): Caller) -> ApiResult<Response> {
    Ok(status_response(&s.keyplane.seal(&actor)?))
}

/// Rotate the master key: every vault key is rewrapped under a new one, online.
#[utoipa::path(post, path = "/api/v4/system/rotate_master_key", tag = "system",
    responses((status = 200, description = "MasterKeyRotation", body = Object), (status = 503, body = ErrorBody)))]
pub(crate) async fn rotate_master_key(
    State(s): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<MasterKeyRotation>> {
    Ok(Json(s.keyplane.rotate_master_key(&actor).await?))
}

/// The metrics, in the OpenMetrics text format Prometheus reads: calls by route and status with
/// their latency, distribution tasks and keystore health, keys by state, the seal, the audit
/// chain, the key pool and the database pool. For administrators (a separate listener,
/// `KEYPLANE_METRICS_LISTEN`, serves them without authentication).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Response> {
    let view = s
        .keyplane
        .operational_view(MetricsReader::Caller(&caller))
        .await?;
    Ok(metrics_answer(&s.metrics, &view))
}

pub(crate) fn metrics_answer(metrics: &crate::Metrics, view: &OperationalView) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::METRICS_CONTENT_TYPE,
        )],
        metrics.render(view),
    )
        .into_response()
}
