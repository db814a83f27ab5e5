//! Identities and API keys (Keyplane's own `/api/v4/access` resources), and the IAM-compatible
//! token endpoint that turns an API key into an access token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use keyplane_core::model::{ApiKey, Principal};
use keyplane_core::service::NewPrincipal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{JsonBody, PathId, RawQuery};
use crate::params::{self, Params};
use crate::wire::IdRef;
use crate::{AppState, Caller};

const PRINCIPALS: &str = "/api/v4/access/principals";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrincipalBody {
    #[schema(required, nullable = false, value_type = String, pattern = "^[A-Za-z0-9._@-]{1,100}$")]
    name: Option<String>,
    /// `user` (default) or `service`.
    #[schema(value_type = Option<crate::schema::PrincipalKindName>)]
    kind: Option<String>,
    #[schema(max_length = 255)]
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeyBody {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,100}$")]
    name: Option<String>,
}

/// An API key as created: the only time the key itself is shown.
#[derive(Serialize, ToSchema)]
pub(crate) struct NewApiKeyOut {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    key: ApiKey,
    apikey: String,
}

/// 201 with a new key: the one answer that carries the key itself.
fn new_api_key(key: ApiKey, secret: &str) -> Response {
    (
        StatusCode::CREATED,
        Json(NewApiKeyOut {
            key,
            apikey: secret.to_owned(),
        }),
    )
        .into_response()
}

/// Create a principal.
#[utoipa::path(post, path = "/api/v4/access/principals", tag = "access", request_body = PrincipalBody,
    responses((status = 201, description = "Principal", body = Object), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_principal(
    State(s): State<AppState>,
    Caller(actor): Caller,
    JsonBody(body): JsonBody<PrincipalBody>,
) -> ApiResult<Response> {
    let p = s
        .keyplane
        .create_principal(
            &actor,
            NewPrincipal {
                name: body.name,
                kind: body.kind,
                description: body.description,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

/// List principals.
#[utoipa::path(get, path = "/api/v4/access/principals", tag = "access",
    params(("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query)),
    responses((status = 200, description = "PrincipalList", body = Object)))]
pub(crate) async fn list_principals(
    State(s): State<AppState>,
    Caller(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<params::ListBody<Principal>>> {
    let paging = Params::new(&q).paging()?;
    let page = s.keyplane.list_principals(&caller, paging).await?;
    Ok(Json(params::envelope(
        &s.links,
        PRINCIPALS,
        &q,
        paging,
        page.total_count,
        "principals",
        page.items,
    )))
}

/// Get a principal.
#[utoipa::path(get, path = "/api/v4/access/principals/{id}", tag = "access",
    params(("id" = String, Path)),
    responses((status = 200, description = "Principal", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_principal(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Principal>> {
    Ok(Json(s.keyplane.get_principal(&caller, id).await?))
}

/// Delete a principal and every API key it has.
#[utoipa::path(delete, path = "/api/v4/access/principals/{id}", tag = "access",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_principal(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    s.keyplane.delete_principal(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an API key for a principal; the key is in this answer only.
#[utoipa::path(post, path = "/api/v4/access/principals/{id}/api_keys", tag = "access",
    params(("id" = String, Path)), request_body = ApiKeyBody,
    responses((status = 201, body = NewApiKeyOut), (status = 404, body = ErrorBody)))]
pub(crate) async fn create_api_key(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(principal): PathId,
    JsonBody(body): JsonBody<ApiKeyBody>,
) -> ApiResult<Response> {
    let (secret, digest) = s.auth.mint_api_key()?;
    let key = s
        .keyplane
        .create_api_key(&caller, principal, body.name, digest)
        .await?;
    Ok(new_api_key(key, &secret))
}

/// A principal's API keys (never the keys themselves).
#[utoipa::path(get, path = "/api/v4/access/principals/{id}/api_keys", tag = "access",
    params(("id" = String, Path)),
    responses((status = 200, description = "ApiKeyList", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_api_keys(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(principal): PathId,
) -> ApiResult<Json<serde_json::Value>> {
    let keys = s.keyplane.list_api_keys(&caller, principal).await?;
    Ok(Json(serde_json::json!({ "api_keys": keys })))
}

/// Replace an API key with a new one; the old one stops working at once.
#[utoipa::path(post, path = "/api/v4/access/api_keys/{id}/rotate", tag = "access",
    params(("id" = String, Path)),
    responses((status = 201, body = NewApiKeyOut), (status = 404, body = ErrorBody)))]
pub(crate) async fn rotate_api_key(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let (secret, digest) = s.auth.mint_api_key()?;
    let key = s.keyplane.rotate_api_key(&caller, id, digest).await?;
    Ok(new_api_key(key, &secret))
}

/// Revoke an API key: it, and every access token issued for it, stop working at once.
#[utoipa::path(delete, path = "/api/v4/access/api_keys/{id}", tag = "access",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_api_key(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    s.keyplane.revoke_api_key(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    apikey: Option<String>,
}

const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// IAM's error shape, which the IBM SDKs' authenticator reads.
fn iam_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "errorCode": code, "errorMessage": message })),
    )
        .into_response()
}

/// `POST /identity/token`: an API key for a signed access token, as IBM Cloud IAM does it.
pub(crate) async fn token(
    State(s): State<AppState>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let address = client.map(|c| c.0.0.ip());
    if let Err(retry_after) = s.keyplane.failed_exchanges().admit(address) {
        return crate::limits::too_many(
            retry_after,
            "too many failed API key exchanges from this address; wait and try again",
        );
    }
    let Ok(Form(form)) = form else {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0109E",
            "send grant_type and apikey as application/x-www-form-urlencoded",
        );
    };
    if form.grant_type.as_deref() != Some(APIKEY_GRANT) {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0109E",
            &format!("grant_type must be {APIKEY_GRANT}"),
        );
    }
    let unknown_key = || {
        s.keyplane.failed_exchanges().failed(address);
        iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0415E",
            "Provided API key could not be found.",
        )
    };
    let Some(apikey) = form.apikey.filter(|k| !k.is_empty() && k.len() <= 512) else {
        return unknown_key();
    };
    match s.auth.exchange_api_key(&apikey).await {
        Ok(Some(t)) => Json(serde_json::json!({
            "access_token": t.access_token,
            "refresh_token": "not_supported",
            "token_type": "Bearer",
            "expires_in": t.expires_in,
            "expiration": t.expiration,
        }))
        .into_response(),
        Ok(None) => unknown_key(),
        Err(keyplane_core::Error::Sealed) => iam_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "sealed",
            "keyplane is sealed; unseal it before issuing tokens",
        ),
        Err(e) => {
            tracing::error!(error = %e, "issuing an access token failed");
            iam_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the token could not be issued",
            )
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyBody {
    #[schema(required, nullable = false, value_type = IdRef)]
    principal: Option<IdRef>,
    #[schema(required, nullable = false, value_type = crate::schema::RoleName)]
    role: Option<String>,
    /// The vault the role is granted on; absent: every vault.
    vault: Option<IdRef>,
}

fn id_field(r: Option<IdRef>, field: &str) -> Result<Option<uuid::Uuid>, keyplane_core::Error> {
    r.and_then(|r| r.id)
        .map(|s| {
            uuid::Uuid::parse_str(&s).map_err(|_| {
                keyplane_core::Error::invalid_field(field, format!("{field} must be a UUID"))
            })
        })
        .transpose()
}

/// Grant a role to a principal, on every vault or on one.
#[utoipa::path(post, path = "/api/v4/access/policies", tag = "access", request_body = PolicyBody,
    responses((status = 201, description = "Policy", body = Object), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_policy(
    State(s): State<AppState>,
    Caller(actor): Caller,
    JsonBody(body): JsonBody<PolicyBody>,
) -> ApiResult<Response> {
    let principal = id_field(body.principal, "principal.id")?;
    let vault = id_field(body.vault, "vault.id")?;
    let policy = s
        .keyplane
        .create_policy(&actor, principal, body.role, vault)
        .await?;
    Ok((StatusCode::CREATED, Json(policy)).into_response())
}

/// List policies, of every principal or of one (`principal.id`).
#[utoipa::path(get, path = "/api/v4/access/policies", tag = "access",
    params(("principal.id" = Option<String>, Query)),
    responses((status = 200, description = "PolicyList", body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_policies(
    State(s): State<AppState>,
    Caller(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<serde_json::Value>> {
    let principal = Params::new(&q)
        .get("principal.id")
        .map(|v| {
            uuid::Uuid::parse_str(v).map_err(|_| {
                keyplane_core::Error::invalid_parameter(
                    "principal.id",
                    "principal.id must be a UUID",
                )
            })
        })
        .transpose()?;
    let policies = s.keyplane.list_policies(&caller, principal).await?;
    Ok(Json(serde_json::json!({ "policies": policies })))
}

/// Withdraw a policy; it stops applying at once.
#[utoipa::path(delete, path = "/api/v4/access/policies/{id}", tag = "access",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_policy(
    State(s): State<AppState>,
    Caller(caller): Caller,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    s.keyplane.delete_policy(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
