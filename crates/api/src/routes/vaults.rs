use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::resource;
use crate::error::{ApiResult, ErrorBody};
use crate::export;
use crate::extract::{IfMatch, JsonBody, PathId, RawQuery};
use crate::params::{self, Params};
use crate::wire::{self, VaultBody, VaultOut, VaultPatchBody};
use crate::{AppState, Caller};

const PATH: &str = "/api/v4/vaults";

/// List vaults.
#[utoipa::path(get, path = "/api/v4/vaults", tag = "vaults",
    params(("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query), ("sort" = Option<String>, Query),
           ("name" = Option<String>, Query), ("description" = Option<String>, Query)),
    responses((status = 200, description = "VaultList", body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
    RawQuery(q): RawQuery,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let query = params::vault_query(&Params::new(&q))?;
    if let Some(format) = export::requested(&headers, export::Entity::Vault)? {
        let read = export::reader(query, move |query| {
            let (s, caller) = (s.clone(), caller.clone());
            async move {
                let page = s.keyplane.list_vaults(&caller, query).await?;
                export::page_of(
                    page.items.iter().map(|x| wire::vault(&s.links, x)),
                    page.total_count,
                )
            }
        });
        return export::answer(format, export::Entity::Vault, read).await;
    }
    let paging = query.paging;
    let page = s.keyplane.list_vaults(&caller, query).await?;
    let items = page
        .items
        .iter()
        .map(|v| wire::vault(&s.links, v))
        .collect::<Vec<_>>();
    Ok(export::varied(
        Json(params::envelope(
            &s.links,
            PATH,
            &q,
            paging,
            page.total_count,
            "vaults",
            items,
        ))
        .into_response(),
    ))
}

/// Create a vault.
#[utoipa::path(post, path = "/api/v4/vaults", tag = "vaults", request_body = VaultBody,
    responses((status = 201, body = VaultOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Caller(actor): Caller,
    JsonBody(body): JsonBody<VaultBody>,
) -> ApiResult<Response> {
    let v = s.keyplane.create_vault(&actor, body.into_new()).await?;
    let out = wire::vault(&s.links, &v);
    let href = out.href.clone();
    Ok(resource(
        StatusCode::CREATED,
        &out,
        v.vault.revision,
        v.vault.id,
        Some(&href),
    ))
}

/// Get a vault.
#[utoipa::path(get, path = "/api/v4/vaults/{id}", tag = "vaults", params(("id" = String, Path)),
    responses((status = 200, body = VaultOut), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let v = s.keyplane.get_vault(&caller, id).await?;
    Ok(resource(
        StatusCode::OK,
        &wire::vault(&s.links, &v),
        v.vault.revision,
        id,
        None,
    ))
}

/// Update a vault.
#[utoipa::path(patch, path = "/api/v4/vaults/{id}", tag = "vaults", request_body = VaultPatchBody,
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = VaultOut), (status = 400, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    JsonBody(body): JsonBody<VaultPatchBody>,
) -> ApiResult<Response> {
    let v = s
        .keyplane
        .update_vault(&actor, id, m.as_ref(), body.into_patch())
        .await?;
    Ok(resource(
        StatusCode::OK,
        &wire::vault(&s.links, &v),
        v.vault.revision,
        id,
        None,
    ))
}

/// Delete an empty vault (its archived templates go with it).
#[utoipa::path(delete, path = "/api/v4/vaults/{id}", tag = "vaults",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 204), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
) -> ApiResult<Response> {
    s.keyplane.delete_vault(&caller, id, m.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
