//! Dual control (Keyplane's own): the per-vault switch, and the requests waiting for a second
//! principal.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyplane_core::model::Approval;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{JsonBody, PathId};
use crate::{AppState, Caller, Trace};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DualControlBody {
    /// Read as `Option` so that its absence is the API's own `missing_field`, but required.
    #[schema(required, nullable = false, value_type = bool)]
    enabled: Option<bool>,
}

/// The answer to a destroy or remove that now waits for approval: 202 and where to find it.
pub(crate) fn pending(s: &AppState, approval: &Approval) -> Response {
    let href = format!("{}/api/v4/approvals/{}", s.links.base, approval.id);
    let mut response = (StatusCode::ACCEPTED, Json(approval)).into_response();
    if let Ok(v) = HeaderValue::from_str(&href) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Whether destroying or removing keys in the vault needs a second principal.
#[utoipa::path(get, path = "/api/v4/vaults/{id}/dual_control", tag = "approvals",
    params(("id" = String, Path)),
    responses((status = 200, description = "{enabled}", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_dual_control(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Json<serde_json::Value>> {
    let enabled = s.keyplane.dual_control(&caller, id).await?;
    Ok(Json(serde_json::json!({ "enabled": enabled })))
}

/// Turn dual control on or off for a vault.
#[utoipa::path(put, path = "/api/v4/vaults/{id}/dual_control", tag = "approvals",
    params(("id" = String, Path)), request_body = DualControlBody,
    responses((status = 200, description = "{enabled}", body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_dual_control(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    JsonBody(body): JsonBody<DualControlBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let enabled = body
        .enabled
        .ok_or_else(|| keyplane_core::Error::missing_field("enabled"))?;
    s.keyplane.set_dual_control(&caller, id, enabled).await?;
    Ok(Json(serde_json::json!({ "enabled": enabled })))
}

/// Requests waiting for (or decided by) a second principal, newest first.
#[utoipa::path(get, path = "/api/v4/approvals", tag = "approvals",
    responses((status = 200, description = "{approvals}", body = Object)))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<serde_json::Value>> {
    let approvals = s.keyplane.list_approvals(&caller, Vec::new()).await?;
    Ok(Json(serde_json::json!({ "approvals": approvals })))
}

/// One request.
#[utoipa::path(get, path = "/api/v4/approvals/{id}", tag = "approvals",
    params(("id" = String, Path)),
    responses((status = 200, description = "Approval", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Approval>> {
    Ok(Json(s.keyplane.get_approval(&caller, id).await?))
}

/// Approve a request (not one's own) and carry out its action.
#[utoipa::path(post, path = "/api/v4/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path)),
    responses((status = 200, description = "{approval, managed_key}", body = Object), (status = 409, body = ErrorBody)))]
pub(crate) async fn approve(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    Trace(trace): Trace,
) -> ApiResult<Json<serde_json::Value>> {
    let (approval, key) = s.keyplane.approve(&actor, id).await?;
    let key = key.map(|k| crate::wire::managed_key(&s.links, &k, &trace));
    Ok(Json(
        serde_json::json!({ "approval": approval, "managed_key": key }),
    ))
}

/// Reject a request; nothing is done.
#[utoipa::path(post, path = "/api/v4/approvals/{id}/reject", tag = "approvals",
    params(("id" = String, Path)),
    responses((status = 200, description = "Approval", body = Object), (status = 409, body = ErrorBody)))]
pub(crate) async fn reject(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Approval>> {
    Ok(Json(s.keyplane.reject(&actor, id).await?))
}
