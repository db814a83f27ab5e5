use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::model::KeystoreDeleteMode;

use super::resource;
use crate::error::{ApiResult, ErrorBody};
use crate::export;
use crate::extract::{IfMatch, JsonBody, LegacyVault, PathId, RawQuery};
use crate::params::{self, Params};
use crate::wire::{self, KeystoreBody, KeystoreOut, KeystorePatchBody, KeystoreStatusOut};
use crate::{AppState, Caller, Trace};

const PATH: &str = "/api/v4/keystores";

/// List keystores.
#[utoipa::path(get, path = "/api/v4/keystores", tag = "keystores",
    params(("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query), ("sort" = Option<String>, Query),
           ("type" = Option<String>, Query), ("name" = Option<String>, Query), ("description" = Option<String>, Query),
           ("group" = Option<String>, Query), ("groups[]" = Option<String>, Query), ("vault.id" = Option<String>, Query),
           ("location" = Option<String>, Query)),
    responses((status = 200, description = "KeystoreList", body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
    RawQuery(q): RawQuery,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let query = params::keystore_query(&Params::new(&q))?;
    if let Some(format) = export::requested(&headers, export::Entity::Keystore)? {
        let read = export::reader(query, move |query| {
            let (s, caller) = (s.clone(), caller.clone());
            async move {
                let page = s.keyplane.list_keystores(&caller, query).await?;
                export::page_of(
                    page.items.iter().map(|x| wire::keystore(&s.links, x)),
                    page.total_count,
                )
            }
        });
        return export::answer(format, export::Entity::Keystore, read).await;
    }
    let paging = query.paging;
    let page = s.keyplane.list_keystores(&caller, query).await?;
    let items = page
        .items
        .iter()
        .map(|k| wire::keystore(&s.links, k))
        .collect::<Vec<_>>();
    Ok(export::varied(
        Json(params::envelope(
            &s.links,
            PATH,
            &q,
            paging,
            page.total_count,
            "keystores",
            items,
        ))
        .into_response(),
    ))
}

/// Create (connect) a keystore; `dry_run=true` validates without saving (200).
#[utoipa::path(post, path = "/api/v4/keystores", tag = "keystores", request_body = KeystoreBody,
    params(("dry_run" = Option<bool>, Query)),
    responses((status = 201, body = KeystoreOut), (status = 200, description = "dry run", body = KeystoreOut),
              (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 424, description = "the connection test could not reach the keystore, or it failed on its side", body = ErrorBody)))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Caller(actor): Caller,
    legacy: LegacyVault,
    RawQuery(q): RawQuery,
    JsonBody(body): JsonBody<KeystoreBody>,
) -> ApiResult<Response> {
    let dry_run = Params::new(&q).bool("dry_run")?;
    let input = body.into_new()?;
    if let Some(v) = input.vault_id {
        legacy.check(v)?;
    }
    let k = s.keyplane.create_keystore(&actor, input, dry_run).await?;
    let out = wire::keystore(&s.links, &k);
    if dry_run {
        return Ok((StatusCode::OK, Json(out)).into_response());
    }
    let href = out.href.clone();
    Ok(resource(
        StatusCode::CREATED,
        &out,
        k.revision,
        k.id,
        Some(&href),
    ))
}

/// Get a keystore (secrets are never returned).
#[utoipa::path(get, path = "/api/v4/keystores/{id}", tag = "keystores", params(("id" = String, Path)),
    responses((status = 200, body = KeystoreOut), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let k = s.keyplane.get_keystore(&caller, id).await?;
    Ok(resource(
        StatusCode::OK,
        &wire::keystore(&s.links, &k),
        k.revision,
        id,
        None,
    ))
}

/// Update a keystore's connection; identifying fields are locked.
#[utoipa::path(patch, path = "/api/v4/keystores/{id}", tag = "keystores", request_body = KeystorePatchBody,
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = KeystoreOut), (status = 400, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody),
              (status = 424, description = "the connection test could not reach the keystore, or it failed on its side", body = ErrorBody)))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    JsonBody(body): JsonBody<KeystorePatchBody>,
) -> ApiResult<Response> {
    let k = s
        .keyplane
        .update_keystore(&actor, id, m.as_ref(), body.into_patch()?)
        .await?;
    Ok(resource(
        StatusCode::OK,
        &wire::keystore(&s.links, &k),
        k.revision,
        id,
        None,
    ))
}

/// Delete (disconnect) a keystore; `mode` = restrict (default), disconnect, deactivate or destroy.
#[utoipa::path(delete, path = "/api/v4/keystores/{id}", tag = "keystores",
    params(("id" = String, Path), ("If-Match" = String, Header), ("mode" = Option<String>, Query)),
    responses((status = 204), (status = 409, description = "keys block the disconnect", body = ErrorBody),
              (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mode = match Params::new(&q).get("mode") {
        None => KeystoreDeleteMode::Restrict,
        Some(v) => KeystoreDeleteMode::parse(v).ok_or_else(|| {
            keyplane_core::Error::invalid_parameter(
                "mode",
                format!(
                    "mode '{v}' is not one of: {}",
                    KeystoreDeleteMode::allowed()
                ),
            )
        })?,
    };
    s.keyplane
        .delete_keystore(&caller, id, m.as_ref(), mode)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Health of a keystore's connection.
#[utoipa::path(get, path = "/api/v4/keystores/{id}/status", tag = "keystores", params(("id" = String, Path)),
    responses((status = 200, body = KeystoreStatusOut), (status = 404, body = ErrorBody)))]
pub(crate) async fn status(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Json<KeystoreStatusOut>> {
    Ok(Json(wire::keystore_status(
        &s.keyplane.keystore_status(&caller, id).await?,
    )))
}

/// Recent distribution tasks of a keystore, newest first (an extension): what is pending, being
/// retried (with the last error and the next attempt) or given up.
#[utoipa::path(get, path = "/api/v4/keystores/{id}/tasks", tag = "keystores", params(("id" = String, Path)),
    responses((status = 200, description = "DistributionTaskList", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn tasks(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Json<serde_json::Value>> {
    let tasks = s.keyplane.keystore_tasks(&caller, id).await?;
    Ok(Json(serde_json::json!({
        "total_count": tasks.len(),
        "tasks": tasks,
    })))
}

/// Managed keys installed in a keystore.
#[utoipa::path(get, path = "/api/v4/keystores/{id}/managed_keys", tag = "keystores", params(("id" = String, Path)),
    responses((status = 200, description = "ManagedKeyList", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn managed_keys(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
    Trace(trace): Trace,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let query = params::key_query(&Params::new(&q), true)?;
    if let Some(format) = export::requested(&headers, export::Entity::ManagedKey)? {
        let read = export::reader(query, move |query| {
            let (s, caller, trace) = (s.clone(), caller.clone(), trace.clone());
            async move {
                let page = s.keyplane.list_keystore_keys(&caller, id, query).await?;
                export::page_of(
                    page.items
                        .iter()
                        .map(|x| wire::managed_key(&s.links, x, &trace)),
                    page.total_count,
                )
            }
        });
        return export::answer(format, export::Entity::ManagedKey, read).await;
    }
    let paging = query.paging;
    let page = s.keyplane.list_keystore_keys(&caller, id, query).await?;
    let items = page
        .items
        .iter()
        .map(|k| wire::managed_key(&s.links, k, &trace))
        .collect::<Vec<_>>();
    let path = format!("{PATH}/{id}/managed_keys");
    Ok(export::varied(
        Json(params::envelope(
            &s.links,
            &path,
            &q,
            paging,
            page.total_count,
            "managed_keys",
            items,
        ))
        .into_response(),
    ))
}

/// Resources associated with a keystore's keys (only IBM Cloud KMS registrations produce any).
#[utoipa::path(get, path = "/api/v4/keystores/{id}/associated_resources", tag = "keystores", params(("id" = String, Path)),
    responses((status = 200, description = "AssociatedResourceList", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn associated_resources(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<params::ListBody<serde_json::Value>>> {
    s.keyplane.get_keystore(&caller, id).await?;
    super::no_associated_resources(&s, &format!("{PATH}/{id}/associated_resources"), &q)
}
