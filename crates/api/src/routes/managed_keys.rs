use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::authz::Caller as Who;
use keyplane_core::etag::IfMatch as CoreIfMatch;
use keyplane_core::model::ManagedKey;
use keyplane_core::service::Decided;
use uuid::Uuid;

use super::resource;
use crate::error::{ApiResult, ErrorBody};
use crate::export;
use crate::extract::{IfMatch, JsonBody, LegacyVault, PathId, RawQuery};
use crate::params::{self, Params};
use crate::wire::{
    self, KeyAdoptBody, KeyCreateBody, KeyUpdateBody, ManagedKeyOut, StatusInKeystoresOut,
};
use crate::{AppState, Caller, Trace};

const PATH: &str = "/api/v4/managed_keys";

fn key_response(s: &AppState, k: &ManagedKey, trace: &str, status: StatusCode) -> Response {
    let out = wire::managed_key(&s.links, k, trace);
    let location = (status == StatusCode::CREATED).then(|| out.href.clone());
    resource(status, &out, k.revision, k.id, location.as_deref())
}

/// List managed keys (default state filter: pre_activation,active).
#[utoipa::path(get, path = "/api/v4/managed_keys", tag = "managed_keys",
    params(("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query), ("sort" = Option<String>, Query),
           ("vault.id" = Option<String>, Query), ("algorithm" = Option<String>, Query), ("state" = Option<String>, Query),
           ("label" = Option<String>, Query), ("activation_date" = Option<String>, Query),
           ("activation_date_min" = Option<String>, Query), ("activation_date_max" = Option<String>, Query),
           ("deactivation_date" = Option<String>, Query), ("deactivation_date_min" = Option<String>, Query),
           ("deactivation_date_max" = Option<String>, Query), ("expiration_date" = Option<String>, Query),
           ("expiration_date_min" = Option<String>, Query), ("expiration_date_max" = Option<String>, Query),
           ("created_at" = Option<String>, Query), ("created_at_min" = Option<String>, Query),
           ("created_at_max" = Option<String>, Query), ("updated_at" = Option<String>, Query),
           ("updated_at_min" = Option<String>, Query), ("updated_at_max" = Option<String>, Query),
           ("rotated_at_min" = Option<String>, Query), ("rotated_at_max" = Option<String>, Query),
           ("size" = Option<String>, Query), ("size_min" = Option<String>, Query), ("size_max" = Option<String>, Query),
           ("referenced_keystores[].type" = Option<String>, Query), ("referenced_keystores[].name" = Option<String>, Query),
           ("instances[].keystore.type" = Option<String>, Query), ("template.name" = Option<String>, Query),
           ("template.id" = Option<String>, Query), ("template.type[]" = Option<String>, Query),
           ("managing_systems" = Option<String>, Query)),
    responses((status = 200, description = "ManagedKeyList", body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
    RawQuery(q): RawQuery,
    Trace(trace): Trace,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let query = params::key_query(&Params::new(&q), true)?;
    if let Some(format) = export::requested(&headers, export::Entity::ManagedKey)? {
        let read = export::reader(query, move |query| {
            let (s, caller, trace) = (s.clone(), caller.clone(), trace.clone());
            async move {
                let page = s.keyplane.list_keys(&caller, query).await?;
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
    let page = s.keyplane.list_keys(&caller, query).await?;
    let items = page
        .items
        .iter()
        .map(|k| wire::managed_key(&s.links, k, &trace))
        .collect::<Vec<_>>();
    Ok(export::varied(
        Json(params::envelope(
            &s.links,
            PATH,
            &q,
            paging,
            page.total_count,
            "managed_keys",
            items,
        ))
        .into_response(),
    ))
}

/// Create a managed key from a template.
#[utoipa::path(post, path = "/api/v4/managed_keys", tag = "managed_keys", request_body = KeyCreateBody,
    responses((status = 201, body = ManagedKeyOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Caller(actor): Caller,
    legacy: LegacyVault,
    Trace(trace): Trace,
    JsonBody(body): JsonBody<KeyCreateBody>,
) -> ApiResult<Response> {
    let input = body.into_new()?;
    if let Some(v) = input.vault_id {
        legacy.check(v)?;
    }
    let k = s.keyplane.create_key(&actor, input).await?;
    Ok(key_response(&s, &k, &trace, StatusCode::CREATED))
}

/// Extension: adopt a key whose material only external keystores hold (migration). Each copy is
/// proven at its keystore first; the key answers `"material": "external"`.
#[utoipa::path(post, path = "/api/v4/managed_keys/adopt", tag = "managed_keys", request_body = KeyAdoptBody,
    responses((status = 201, body = ManagedKeyOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 424, body = ErrorBody)))]
pub(crate) async fn adopt(
    State(s): State<AppState>,
    Caller(actor): Caller,
    Trace(trace): Trace,
    JsonBody(body): JsonBody<KeyAdoptBody>,
) -> ApiResult<Response> {
    let k = s.keyplane.adopt_key(&actor, body.into_adoption()?).await?;
    Ok(key_response(&s, &k, &trace, StatusCode::CREATED))
}

/// Get a managed key.
#[utoipa::path(get, path = "/api/v4/managed_keys/{id}", tag = "managed_keys", params(("id" = String, Path)),
    responses((status = 200, body = ManagedKeyOut), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    Trace(trace): Trace,
) -> ApiResult<Response> {
    let k = s.keyplane.get_key(&caller, id).await?;
    Ok(key_response(&s, &k, &trace, StatusCode::OK))
}

/// Update a managed key's label, dates, description or tags.
#[utoipa::path(patch, path = "/api/v4/managed_keys/{id}", tag = "managed_keys", request_body = KeyUpdateBody,
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = ManagedKeyOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    Trace(trace): Trace,
    JsonBody(body): JsonBody<KeyUpdateBody>,
) -> ApiResult<Response> {
    let k = s
        .keyplane
        .update_key(&actor, id, m.as_ref(), body.into_patch())
        .await?;
    Ok(key_response(&s, &k, &trace, StatusCode::OK))
}

/// Remove a destroyed key from its vault.
#[utoipa::path(delete, path = "/api/v4/managed_keys/{id}", tag = "managed_keys",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 204), (status = 202, description = "Under dual control: the request, awaiting a second person's approval (Location names it)", body = Object),
              (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    Caller(actor): Caller,
) -> ApiResult<Response> {
    match s.keyplane.delete_key(&actor, id, m.as_ref()).await? {
        Decided::Requested(approval) => Ok(super::approval_pending(&s, &approval)),
        Decided::Done(()) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Every version of a key, newest first.
#[utoipa::path(get, path = "/api/v4/managed_keys/{id}/versions", tag = "managed_keys", params(("id" = String, Path)),
    responses((status = 200, description = "ManagedKeyList", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn versions(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
    Trace(trace): Trace,
) -> ApiResult<Json<params::ListBody<ManagedKeyOut>>> {
    // Older versions are usually deactivated: no default state filter here.
    let query = params::key_query(&Params::new(&q), false)?;
    let page = s.keyplane.key_versions(&caller, id, &query).await?;
    let items = page
        .items
        .iter()
        .map(|k| wire::managed_key(&s.links, k, &trace))
        .collect::<Vec<_>>();
    let path = format!("{PATH}/{id}/versions");
    Ok(Json(params::envelope(
        &s.links,
        &path,
        &q,
        query.paging,
        page.total_count,
        "managed_keys",
        items,
    )))
}

fn statuses(
    s: &AppState,
    list: &[keyplane_core::model::KeyStatusInKeystore],
    trace: &str,
) -> StatusInKeystoresOut {
    StatusInKeystoresOut {
        status_in_keystores: list
            .iter()
            .map(|x| wire::status_in_keystore(&s.links, x, trace))
            .collect(),
    }
}

/// What each target keystore holds, compared with the managed state (no change).
#[utoipa::path(get, path = "/api/v4/managed_keys/{id}/status_in_keystores", tag = "managed_keys", params(("id" = String, Path)),
    responses((status = 200, body = StatusInKeystoresOut), (status = 404, body = ErrorBody)))]
pub(crate) async fn status_in_keystores(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    Trace(trace): Trace,
) -> ApiResult<Json<StatusInKeystoresOut>> {
    let list = s.keyplane.key_status_in_keystores(&caller, id).await?;
    Ok(Json(statuses(&s, &list, &trace)))
}

/// Push the managed state to every target keystore.
#[utoipa::path(post, path = "/api/v4/managed_keys/{id}/sync_status_in_keystores", tag = "managed_keys",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = StatusInKeystoresOut), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn sync(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    Trace(trace): Trace,
) -> ApiResult<Json<StatusInKeystoresOut>> {
    let list = s.keyplane.sync_key(&actor, id, m.as_ref()).await?;
    Ok(Json(statuses(&s, &list, &trace)))
}

/// Realign a key with its template's current distribution; `dry_run` shows the result only.
#[utoipa::path(post, path = "/api/v4/managed_keys/{id}/update_from_template", tag = "managed_keys",
    params(("id" = String, Path), ("If-Match" = String, Header), ("dry_run" = Option<bool>, Query)),
    responses((status = 200, body = ManagedKeyOut), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn update_from_template(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    RawQuery(q): RawQuery,
    Trace(trace): Trace,
) -> ApiResult<Response> {
    let dry_run = Params::new(&q).bool("dry_run")?;
    let k = s
        .keyplane
        .update_key_from_template(&actor, id, m.as_ref(), dry_run)
        .await?;
    Ok(key_response(&s, &k, &trace, StatusCode::OK))
}

type Action = for<'a> fn(
    &'a keyplane_core::service::Keyplane,
    &'a Who,
    Uuid,
    Option<&'a CoreIfMatch>,
) -> futures::future::BoxFuture<'a, keyplane_core::Result<ManagedKey>>;

async fn lifecycle(
    s: AppState,
    actor: Who,
    id: Uuid,
    m: Option<CoreIfMatch>,
    trace: String,
    action: Action,
) -> ApiResult<Response> {
    let k = action(&s.keyplane, &actor, id, m.as_ref()).await?;
    Ok(key_response(&s, &k, &trace, StatusCode::OK))
}

/// Activate a pre-active or deactivated key.
#[utoipa::path(post, path = "/api/v4/managed_keys/{id}/activate", tag = "managed_keys",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = ManagedKeyOut), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn activate(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    Trace(t): Trace,
) -> ApiResult<Response> {
    lifecycle(s, a, id, m, t, |k, a, id, m| {
        Box::pin(k.activate_key(a, id, m))
    })
    .await
}

/// Deactivate an active key.
#[utoipa::path(post, path = "/api/v4/managed_keys/{id}/deactivate", tag = "managed_keys",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = ManagedKeyOut), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn deactivate(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    Trace(t): Trace,
) -> ApiResult<Response> {
    lifecycle(s, a, id, m, t, |k, a, id, m| {
        Box::pin(k.deactivate_key(a, id, m))
    })
    .await
}

/// Destroy a pre-active key, or a deactivated one after the grace period.
#[utoipa::path(post, path = "/api/v4/managed_keys/{id}/destroy", tag = "managed_keys",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = ManagedKeyOut), (status = 202, description = "Under dual control: the request, awaiting a second person's approval (Location names it)", body = Object), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn destroy(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    Trace(t): Trace,
) -> ApiResult<Response> {
    match s.keyplane.destroy_key(&a, id, m.as_ref()).await? {
        Decided::Requested(approval) => Ok(super::approval_pending(&s, &approval)),
        Decided::Done(k) => Ok(key_response(&s, &k, &t, StatusCode::OK)),
    }
}

/// Rotate an active key: new material, version + 1.
#[utoipa::path(post, path = "/api/v4/managed_keys/{id}/rotate", tag = "managed_keys",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = ManagedKeyOut), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn rotate(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    Trace(t): Trace,
) -> ApiResult<Response> {
    lifecycle(s, a, id, m, t, |k, a, id, m| {
        Box::pin(k.rotate_key(a, id, m))
    })
    .await
}

/// Extension: mark a key compromised; its copies are deactivated.
#[utoipa::path(post, path = "/api/v4/managed_keys/{id}/compromise", tag = "managed_keys",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = ManagedKeyOut), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn compromise(
    State(s): State<AppState>,
    Caller(a): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    Trace(t): Trace,
) -> ApiResult<Response> {
    lifecycle(s, a, id, m, t, |k, a, id, m| {
        Box::pin(k.compromise_key(a, id, m))
    })
    .await
}

/// Resources associated with a key (only IBM Cloud KMS registrations produce any).
#[utoipa::path(get, path = "/api/v4/managed_keys/{id}/associated_resources", tag = "managed_keys", params(("id" = String, Path)),
    responses((status = 200, description = "AssociatedResourceList", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn associated_resources(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<params::ListBody<serde_json::Value>>> {
    s.keyplane.get_key(&caller, id).await?;
    super::no_associated_resources(&s, &format!("{PATH}/{id}/associated_resources"), &q)
}
