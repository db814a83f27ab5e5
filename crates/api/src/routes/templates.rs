use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::resource;
use crate::error::{ApiResult, ErrorBody};
use crate::export;
use crate::extract::{IfMatch, JsonBody, LegacyVault, PathId, RawQuery};
use crate::params::{self, Params};
use crate::wire::{self, TemplateBody, TemplateOut, TemplatePatchBody};
use crate::{AppState, Caller};

const PATH: &str = "/api/v4/templates";

/// List key templates.
#[utoipa::path(get, path = "/api/v4/templates", tag = "templates",
    params(("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query), ("sort" = Option<String>, Query),
           ("name" = Option<String>, Query), ("naming_scheme" = Option<String>, Query), ("vault.id" = Option<String>, Query),
           ("key.algorithm" = Option<String>, Query), ("key.size" = Option<String>, Query), ("key.size_min" = Option<String>, Query),
           ("key.size_max" = Option<String>, Query), ("keystores[].type" = Option<String>, Query),
           ("keystores[].group" = Option<String>, Query), ("created_at" = Option<String>, Query),
           ("created_at_min" = Option<String>, Query), ("created_at_max" = Option<String>, Query),
           ("updated_at" = Option<String>, Query), ("updated_at_min" = Option<String>, Query),
           ("updated_at_max" = Option<String>, Query), ("type[]" = Option<String>, Query), ("state" = Option<String>, Query),
           ("managing_systems" = Option<String>, Query)),
    responses((status = 200, description = "TemplateList", body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
    RawQuery(q): RawQuery,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let query = params::template_query(&Params::new(&q))?;
    if let Some(format) = export::requested(&headers, export::Entity::KeyTemplate)? {
        let read = export::reader(query, move |query| {
            let (s, caller) = (s.clone(), caller.clone());
            async move {
                let page = s.keyplane.list_templates(&caller, query).await?;
                export::page_of(
                    page.items.iter().map(|x| wire::template(&s.links, x)),
                    page.total_count,
                )
            }
        });
        return export::answer(format, export::Entity::KeyTemplate, read).await;
    }
    let paging = query.paging;
    let page = s.keyplane.list_templates(&caller, query).await?;
    let items = page
        .items
        .iter()
        .map(|t| wire::template(&s.links, t))
        .collect::<Vec<_>>();
    Ok(export::varied(
        Json(params::envelope(
            &s.links,
            PATH,
            &q,
            paging,
            page.total_count,
            "templates",
            items,
        ))
        .into_response(),
    ))
}

/// Create a key template.
#[utoipa::path(post, path = "/api/v4/templates", tag = "templates", request_body = TemplateBody,
    responses((status = 201, body = TemplateOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Caller(actor): Caller,
    legacy: LegacyVault,
    JsonBody(body): JsonBody<TemplateBody>,
) -> ApiResult<Response> {
    let input = body.into_new()?;
    if let Some(v) = input.vault_id {
        legacy.check(v)?;
    }
    let t = s.keyplane.create_template(&actor, input).await?;
    let out = wire::template(&s.links, &t);
    let href = out.href.clone();
    Ok(resource(
        StatusCode::CREATED,
        &out,
        t.revision,
        t.id,
        Some(&href),
    ))
}

/// Get a key template.
#[utoipa::path(get, path = "/api/v4/templates/{id}", tag = "templates", params(("id" = String, Path)),
    responses((status = 200, body = TemplateOut), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let t = s.keyplane.get_template(&caller, id).await?;
    Ok(resource(
        StatusCode::OK,
        &wire::template(&s.links, &t),
        t.revision,
        id,
        None,
    ))
}

/// Update a key template; naming scheme, algorithm, size and keystore type are immutable.
#[utoipa::path(patch, path = "/api/v4/templates/{id}", tag = "templates", request_body = TemplatePatchBody,
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = TemplateOut), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
    JsonBody(body): JsonBody<TemplatePatchBody>,
) -> ApiResult<Response> {
    let t = s
        .keyplane
        .update_template(&actor, id, m.as_ref(), body.into_patch()?)
        .await?;
    Ok(resource(
        StatusCode::OK,
        &wire::template(&s.links, &t),
        t.revision,
        id,
        None,
    ))
}

/// Delete a key template no key was created from.
#[utoipa::path(delete, path = "/api/v4/templates/{id}", tag = "templates",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 204), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
) -> ApiResult<Response> {
    s.keyplane.delete_template(&caller, id, m.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Archive a key template: no new keys from it, existing keys keep working.
#[utoipa::path(post, path = "/api/v4/templates/{id}/archive", tag = "templates",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = TemplateOut), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn archive(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
) -> ApiResult<Response> {
    let t = s.keyplane.archive_template(&actor, id, m.as_ref()).await?;
    Ok(resource(
        StatusCode::OK,
        &wire::template(&s.links, &t),
        t.revision,
        id,
        None,
    ))
}

/// Unarchive a key template.
#[utoipa::path(post, path = "/api/v4/templates/{id}/unarchive", tag = "templates",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = TemplateOut), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn unarchive(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
) -> ApiResult<Response> {
    let t = s
        .keyplane
        .unarchive_template(&actor, id, m.as_ref())
        .await?;
    Ok(resource(
        StatusCode::OK,
        &wire::template(&s.links, &t),
        t.revision,
        id,
        None,
    ))
}

/// Expose a shadow template as a regular one.
#[utoipa::path(post, path = "/api/v4/templates/{id}/expose", tag = "templates",
    params(("id" = String, Path), ("If-Match" = String, Header)),
    responses((status = 200, body = TemplateOut), (status = 409, body = ErrorBody), (status = 428, body = ErrorBody)))]
pub(crate) async fn expose(
    State(s): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId,
    IfMatch(m): IfMatch,
) -> ApiResult<Response> {
    let t = s.keyplane.expose_template(&actor, id, m.as_ref()).await?;
    Ok(resource(
        StatusCode::OK,
        &wire::template(&s.links, &t),
        t.revision,
        id,
        None,
    ))
}
