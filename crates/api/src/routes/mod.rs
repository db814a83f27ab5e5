//! One module per UKO resource; each handler is one operation of the endpoint catalogue.

mod access;
mod approvals;
mod audit_events;
mod key_protect;
pub(crate) use key_protect::{
    DataPlaneAction, DataPlaneCall, MAX_KEY_PROTECT_LIMIT, MAX_KEY_REF_LEN, serve_data_plane_call,
};
mod key_protect_policies;
mod key_protect_rings;
mod keystores;
mod managed_keys;
mod system;
mod templates;
mod vaults;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::wire;

pub(crate) fn api(doc: utoipa::openapi::OpenApi) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(doc)
        .routes(routes!(vaults::list, vaults::create))
        .routes(routes!(vaults::get, vaults::update, vaults::delete))
        .routes(routes!(templates::list, templates::create))
        .routes(routes!(
            templates::get,
            templates::update,
            templates::delete
        ))
        .routes(routes!(templates::archive))
        .routes(routes!(templates::unarchive))
        .routes(routes!(templates::expose))
        .routes(routes!(keystores::list, keystores::create))
        .routes(routes!(
            keystores::get,
            keystores::update,
            keystores::delete
        ))
        .routes(routes!(keystores::status))
        .routes(routes!(keystores::tasks))
        .routes(routes!(keystores::managed_keys))
        .routes(routes!(keystores::associated_resources))
        .routes(routes!(managed_keys::list, managed_keys::create))
        .routes(routes!(managed_keys::adopt))
        .routes(routes!(
            managed_keys::get,
            managed_keys::update,
            managed_keys::delete
        ))
        .routes(routes!(managed_keys::versions))
        .routes(routes!(managed_keys::status_in_keystores))
        .routes(routes!(managed_keys::update_from_template))
        .routes(routes!(managed_keys::activate))
        .routes(routes!(managed_keys::deactivate))
        .routes(routes!(managed_keys::destroy))
        .routes(routes!(managed_keys::sync))
        .routes(routes!(managed_keys::rotate))
        .routes(routes!(managed_keys::compromise))
        .routes(routes!(managed_keys::associated_resources))
        .routes(routes!(key_protect::list, key_protect::create))
        .routes(routes!(
            key_protect::get,
            key_protect::delete,
            key_protect_rings::patch_key
        ))
        .routes(routes!(key_protect::metadata))
        .routes(routes!(key_protect_rings::key_rings))
        .routes(routes!(
            key_protect_rings::create_key_ring,
            key_protect_rings::delete_key_ring
        ))
        .routes(routes!(
            key_protect_policies::get_key_policies,
            key_protect_policies::put_key_policies
        ))
        .routes(routes!(
            key_protect_policies::get_instance_policies,
            key_protect_policies::put_instance_policies
        ))
        .routes(routes!(key_protect::set_for_deletion))
        .routes(routes!(key_protect::unset_for_deletion))
        .routes(routes!(key_protect::purge))
        .routes(routes!(key_protect::restore))
        .routes(routes!(key_protect::versions))
        .routes(routes!(
            key_protect::create_alias,
            key_protect::delete_alias
        ))
        .routes(routes!(key_protect::enable))
        .routes(routes!(key_protect::disable))
        .routes(routes!(key_protect::rotate))
        .routes(routes!(
            key_protect::create_import_token,
            key_protect::retrieve_import_token
        ))
        .routes(routes!(key_protect::wrap))
        .routes(routes!(key_protect::unwrap))
        .routes(routes!(key_protect::rewrap))
        .routes(routes!(key_protect::wrap_batch))
        .routes(routes!(key_protect::unwrap_batch))
        .routes(routes!(system::seal_status))
        .routes(routes!(system::unseal))
        .routes(routes!(system::seal))
        .routes(routes!(system::rotate_master_key))
        .routes(routes!(system::metrics))
        .routes(routes!(audit_events::list))
        .routes(routes!(audit_events::verification))
        .routes(routes!(access::list_principals, access::create_principal))
        .routes(routes!(access::get_principal, access::delete_principal))
        .routes(routes!(access::list_api_keys, access::create_api_key))
        .routes(routes!(access::rotate_api_key))
        .routes(routes!(access::revoke_api_key))
        .routes(routes!(access::list_policies, access::create_policy))
        .routes(routes!(access::delete_policy))
        .routes(routes!(
            approvals::get_dual_control,
            approvals::set_dual_control
        ))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::get))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::reject))
}

pub(crate) use access::token as identity_token;
pub(crate) use approvals::pending as approval_pending;
pub(crate) use system::metrics_answer;

/// Liveness and the seal: 200 when keys can be used, 503 while sealed. Of several nodes on one
/// database, each answers for itself: which are sealed, and which one runs scheduled work.
pub(crate) async fn health(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    let seal = s.keyplane.seal_status();
    let leader = s.keyplane.is_leader();
    if seal.sealed {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "sealed", "sealed": true, "seal_type": seal.seal_type, "leader": leader })),
        )
            .into_response()
    } else {
        Json(serde_json::json!({ "status": "ok", "sealed": false, "seal_type": seal.seal_type, "leader": leader }))
            .into_response()
    }
}

/// Readiness, for load balancers and orchestrators: 200 when this node can serve, else 503 with
/// the reasons (the store does not answer, migrations are not done, sealed). No credentials:
/// it says nothing secret.
pub(crate) async fn ready(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    let reasons = s.keyplane.readiness().await;
    if reasons.is_empty() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not_ready", "reasons": reasons })),
        )
            .into_response()
    }
}

/// A single resource with its `ETag` (and `Location` when created).
pub(crate) fn resource<T: Serialize>(
    status: StatusCode,
    body: &T,
    revision: i64,
    id: Uuid,
    location: Option<&str>,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&wire::etag_of(revision, id)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(header::LOCATION, l);
    }
    response
}

/// The associated-resource list: only IBM Cloud KMS registrations produce entries, and no
/// connector reads them yet, so it is an empty page (with the paging and sort still checked).
pub(crate) fn no_associated_resources(
    s: &AppState,
    path: &str,
    q: &[(String, String)],
) -> crate::error::ApiResult<Json<crate::params::ListBody<serde_json::Value>>> {
    let p = crate::params::Params::new(q);
    let paging = p.paging()?;
    keyplane_core::query::parse_sort(
        p.get("sort"),
        keyplane_core::query::ASSOCIATED_RESOURCE_SORT_FIELDS,
        "name",
    )?;
    Ok(Json(crate::params::envelope(
        &s.links,
        path,
        q,
        paging,
        0,
        "associated_resources",
        Vec::new(),
    )))
}
