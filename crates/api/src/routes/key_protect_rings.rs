//! Key Protect's key rings in an internal keystore, and moving a key between them.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use keyplane_core::Error;
use keyplane_core::ports::KeyRing;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::key_protect::{Instance, KeyRef, collection, resources_of};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{KeyProtectBody, RawQuery};
use crate::params::Params;
use crate::wire::time;
use crate::{AppState, Caller};

fn ring_resource(r: &KeyRing) -> Value {
    json!({
        "id": r.id,
        "creationDate": time(&r.created_at),
        "createdBy": r.created_by,
    })
}

fn ring_collection(rings: &[KeyRing]) -> Value {
    json!({
        "metadata": {
            "collectionType": "application/vnd.ibm.kms.key_ring+json",
            "collectionTotal": rings.len(),
        },
        "resources": rings.iter().map(ring_resource).collect::<Vec<_>>(),
    })
}

/// The instance's key rings, `default` first (Key Protect `GET /api/v2/key_rings`).
#[utoipa::path(get, path = "/api/v2/key_rings", tag = "key_protect",
    params(("bluemix-instance" = String, Header)),
    responses((status = 200, description = "key ring collection", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn key_rings(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
) -> ApiResult<Json<Value>> {
    let rings = s.keyplane.key_protect_key_rings(&caller, keystore).await?;
    Ok(Json(ring_collection(&rings)))
}

/// A key ring's id in the path.
pub(crate) struct KeyRingPath(String);

impl<S: Send + Sync> FromRequestParts<S> for KeyRingPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    ApiError::from(Error::invalid_parameter(
                        "key_ring_id",
                        "the path names no key ring",
                    ))
                })?;
        keyplane_core::service::check_key_ring("key_ring_id", &id).map_err(|_| {
            Error::invalid_parameter(
                "key_ring_id",
                "a key ring's id is 2 to 100 letters, digits and '-'",
            )
        })?;
        Ok(Self(id))
    }
}

/// Create a key ring (Key Protect `POST /api/v2/key_rings/{key-ring-id}`).
#[utoipa::path(post, path = "/api/v2/key_rings/{id}", tag = "key_protect",
    params(("id" = String, Path, description = "the key ring's id"), ("bluemix-instance" = String, Header)),
    responses((status = 201, description = "key ring collection of one", body = Object), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn create_key_ring(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRingPath(id): KeyRingPath,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let ring = s
        .keyplane
        .key_protect_create_key_ring(&caller, keystore, &id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ring_collection(std::slice::from_ref(&ring))),
    ))
}

/// Delete a key ring (Key Protect `DELETE /api/v2/key_rings/{key-ring-id}`): refused while it
/// holds a key; `force=true` moves the deleted keys it still names to `default`.
#[utoipa::path(delete, path = "/api/v2/key_rings/{id}", tag = "key_protect",
    params(("id" = String, Path, description = "the key ring's id"), ("bluemix-instance" = String, Header), ("force" = Option<bool>, Query)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_key_ring(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRingPath(id): KeyRingPath,
    RawQuery(q): RawQuery,
) -> ApiResult<StatusCode> {
    let force = match Params::new(&q).get("force") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(Error::invalid_parameter("force", "force is true or false").into());
        }
    };
    s.keyplane
        .key_protect_delete_key_ring(&caller, keystore, &id, force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KeyPatchBody {
    /// The key ring the key moves to.
    #[serde(rename = "keyRingID")]
    #[schema(pattern = "^[A-Za-z0-9-]{2,100}$")]
    key_ring_id: String,
}

/// Move a key to another key ring (Key Protect `PATCH /api/v2/keys/{id}`, `keyRingID` being the
/// only field it patches).
#[utoipa::path(patch, path = "/api/v2/keys/{id}", tag = "key_protect", request_body = KeyPatchBody,
    params(("id" = String, Path, description = "the key's id, alias or name"), ("bluemix-instance" = String, Header)),
    responses((status = 200, description = "key collection of one", body = Object), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn patch_key(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    KeyProtectBody(body): KeyProtectBody<KeyPatchBody>,
) -> ApiResult<Json<Value>> {
    let body = body.ok_or_else(|| Error::missing_field("keyRingID"))?;
    let moved = s
        .keyplane
        .key_protect_move_key(&caller, keystore, &key, &body.key_ring_id)
        .await?;
    Ok(Json(collection(
        1,
        resources_of(&s, &caller, keystore, std::slice::from_ref(&moved)).await?,
    )))
}
