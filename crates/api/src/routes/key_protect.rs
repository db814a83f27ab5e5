//! The Key Protect v2 subset that applications use for envelope encryption, served by internal
//! keystores: `bluemix-instance` names the keystore, `{id}` is the key's `key_id_in_keystore`.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyplane_core::Error;
use keyplane_core::model::KeyState;
use keyplane_core::model::KeyVersion;
use keyplane_core::ports::KeyAlias;
use keyplane_core::service::{
    ImportTokenView, InstalledKey, KeyProtectRef, NewKeyProtectKey, SuppliedMaterial,
    check_key_ring,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{KeyProtectBody, RawQuery};
use crate::params::Params;
use crate::wire::time;
use crate::{AppState, Caller};

/// The `bluemix-instance` header: the internal keystore addressed.
pub(crate) struct Instance(pub(crate) Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Instance {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts
            .headers
            .get("bluemix-instance")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match raw {
            None => Err(Error::invalid_header(
                "bluemix-instance",
                "the bluemix-instance header naming the keystore is required",
            )
            .into()),
            Some(v) => {
                let instance = Uuid::parse_str(v).map(Instance).map_err(|_| {
                    ApiError::from(Error::invalid_header(
                        "bluemix-instance",
                        format!("bluemix-instance '{v}' is not a keystore id"),
                    ))
                })?;
                key_ring_of(&parts.headers)?;
                Ok(instance)
            }
        }
    }
}

const KEY_RING_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-kms-key-ring");

/// `X-Kms-Key-Ring`: the key ring a call's key is in (or a list's keys are, or a new key goes
/// to), when the client names one.
fn key_ring_of(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(&KEY_RING_HEADER) else {
        return Ok(None);
    };
    let ring = value.to_str().map(str::trim).unwrap_or_default();
    check_key_ring("X-Kms-Key-Ring", ring).map_err(|_| {
        Error::invalid_header(
            "X-Kms-Key-Ring",
            "X-Kms-Key-Ring names a key ring: 2 to 100 letters, digits and '-'",
        )
    })?;
    Ok(Some(ring.to_owned()))
}

/// The key ring `X-Kms-Key-Ring` names, if any.
pub(crate) struct KeyRingHeader(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for KeyRingHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        key_ring_of(&parts.headers).map(KeyRingHeader)
    }
}

fn decode(field: &str, value: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    B64.decode(value)
        .map(Zeroizing::new)
        .map_err(|_| Error::invalid_field(field, format!("{field} must be base64")).into())
}

/// Decodes every base64 item of a batch, naming the bad one (`fields[i]`).
fn decode_all(field: &str, items: &[String]) -> Result<Vec<Zeroizing<Vec<u8>>>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            decode(
                &keyplane_core::error::indexed_field(field, i, items.len()),
                item,
            )
        })
        .collect()
}

/// A key version's id: stable, derived from the key's id in the keystore and the version number.
fn version_id(key: Uuid, version: u32) -> String {
    // Every data-plane answer names the version: the ids are kept rather than hashed again.
    const KEPT: usize = 10_000;
    static KNOWN: LazyLock<RwLock<HashMap<(Uuid, u32), String>>> = LazyLock::new(Default::default);
    if let Some(id) = KNOWN
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(key, version))
    {
        return id.clone();
    }
    let id = Uuid::new_v5(&key, version.to_string().as_bytes()).to_string();
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    if known.len() >= KEPT {
        known.clear();
    }
    known.insert((key, version), id.clone());
    id
}

/// A data-plane call the application's edge serves on its fast path (`crate::Front`): the
/// operation it resolved and the key its path names.
#[derive(Clone, Copy)]
pub(crate) struct DataPlaneCall {
    pub action: DataPlaneAction,
    pub key: Uuid,
}

/// The data-plane operations the fast path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataPlaneAction {
    Wrap,
    Unwrap,
    Rewrap,
    WrapBatch,
    UnwrapBatch,
}

/// Answers a data-plane call with its handler, extracting its arguments as the router would.
pub(crate) async fn serve_data_plane_call(
    state: AppState,
    call: DataPlaneCall,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::extract::FromRequest as _;
    use axum::response::IntoResponse as _;

    async fn with_body<T, Fut, R>(
        req: axum::extract::Request,
        handler: impl FnOnce(KeyProtectBody<T>) -> Fut,
    ) -> axum::response::Response
    where
        T: serde::de::DeserializeOwned,
        Fut: std::future::Future<Output = ApiResult<R>>,
        R: axum::response::IntoResponse,
    {
        match KeyProtectBody::<T>::from_request(req, &()).await {
            Ok(body) => handler(body).await.into_response(),
            Err(refusal) => refusal.into_response(),
        }
    }

    let (mut parts, body) = req.into_parts();
    let instance = match Instance::from_request_parts(&mut parts, &()).await {
        Ok(instance) => instance,
        Err(refusal) => return refusal.into_response(),
    };
    let caller = match Caller::from_request_parts(&mut parts, &()).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let req = axum::extract::Request::from_parts(parts, body);
    let (s, key) = (State(state), KeyId(call.key));
    match call.action {
        DataPlaneAction::Wrap => with_body(req, |b| wrap(s, caller, instance, key, b)).await,
        DataPlaneAction::Unwrap => with_body(req, |b| unwrap(s, caller, instance, key, b)).await,
        DataPlaneAction::Rewrap => with_body(req, |b| rewrap(s, caller, instance, key, b)).await,
        DataPlaneAction::WrapBatch => {
            with_body(req, |b| wrap_batch(s, caller, instance, key, b)).await
        }
        DataPlaneAction::UnwrapBatch => {
            with_body(req, |b| unwrap_batch(s, caller, instance, key, b)).await
        }
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct WrapRequest {
    /// Base64 data key; a 256-bit one is generated when absent.
    plaintext: Option<String>,
    #[serde(default)]
    aad: Vec<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CiphertextRequest {
    #[schema(required = true, nullable = false, value_type = String)]
    ciphertext: Option<String>,
    #[serde(default)]
    aad: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct VersionRef {
    id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WrapResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
    ciphertext: String,
    key_version: VersionRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    rewrapped_key_version: Option<VersionRef>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UnwrapResponse {
    plaintext: String,
    key_version: VersionRef,
    /// The data key wrapped under the key's newest version, when it was wrapped under an
    /// older one (Key Protect's answer after a rotation); `rewrappedKeyVersion` names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rewrapped_key_version: Option<VersionRef>,
}

fn ciphertext_of(body: &CiphertextRequest) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let c = body
        .ciphertext
        .as_deref()
        .ok_or_else(|| Error::missing_field("ciphertext"))?;
    decode("ciphertext", c)
}

/// Wrap a data key (Key Protect `wrap`).
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/wrap", tag = "key_protect", request_body = Option<WrapRequest>,
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 200, body = WrapResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn wrap(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyId(id): KeyId,
    KeyProtectBody(body): KeyProtectBody<WrapRequest>,
) -> ApiResult<Json<WrapResponse>> {
    let body = body.unwrap_or_default();
    let plaintext = body
        .plaintext
        .as_deref()
        .map(|p| decode("plaintext", p))
        .transpose()?;
    let w = s
        .keyplane
        .wrap_data_key(&caller, keystore, id, plaintext, &body.aad)
        .await?;
    Ok(Json(WrapResponse {
        plaintext: w.generated.as_ref().map(|p| B64.encode(p.as_slice())),
        ciphertext: B64.encode(&w.ciphertext),
        key_version: VersionRef {
            id: version_id(id, w.key_version),
        },
        rewrapped_key_version: None,
    }))
}

/// Unwrap a data key (Key Protect `unwrap`); deactivated keys still unwrap.
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/unwrap", tag = "key_protect", request_body = CiphertextRequest,
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 200, body = UnwrapResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn unwrap(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyId(id): KeyId,
    KeyProtectBody(body): KeyProtectBody<CiphertextRequest>,
) -> ApiResult<Json<UnwrapResponse>> {
    let body = body.unwrap_or_default();
    let u = s
        .keyplane
        .unwrap_data_key(&caller, keystore, id, &ciphertext_of(&body)?, &body.aad)
        .await?;
    Ok(Json(UnwrapResponse {
        plaintext: B64.encode(u.plaintext.as_slice()),
        key_version: VersionRef {
            id: version_id(id, u.key_version),
        },
        rewrapped_key_version: u.rewrapped.is_some().then(|| VersionRef {
            id: version_id(id, u.current_version),
        }),
        ciphertext: u.rewrapped.map(|c| B64.encode(c)),
    }))
}

/// Rewrap a data key under the key's newest version (Key Protect `rewrap`).
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/rewrap", tag = "key_protect", request_body = CiphertextRequest,
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 200, body = WrapResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rewrap(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyId(id): KeyId,
    KeyProtectBody(body): KeyProtectBody<CiphertextRequest>,
) -> ApiResult<Json<WrapResponse>> {
    let body = body.unwrap_or_default();
    let w = s
        .keyplane
        .rewrap_data_key(&caller, keystore, id, &ciphertext_of(&body)?, &body.aad)
        .await?;
    Ok(Json(WrapResponse {
        plaintext: None,
        ciphertext: B64.encode(&w.ciphertext),
        key_version: VersionRef {
            id: version_id(id, w.key_version),
        },
        rewrapped_key_version: w.previous_version.map(|v| VersionRef {
            id: version_id(id, v),
        }),
    }))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct WrapBatchRequest {
    /// Base64 data keys to wrap (or `count`, not both).
    plaintexts: Option<Vec<String>>,
    /// How many fresh 256-bit data keys to generate and wrap (or `plaintexts`, not both).
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    count: Option<usize>,
    #[serde(default)]
    aad: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct WrappedItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
    ciphertext: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WrapBatchResponse {
    key_version: VersionRef,
    results: Vec<WrappedItem>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnwrapBatchRequest {
    #[serde(default)]
    ciphertexts: Vec<String>,
    #[serde(default)]
    aad: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UnwrapBatchResponse {
    results: Vec<UnwrapResponse>,
}

/// Extension: wrap many data keys in one request (given ones, `count` generated ones, or both).
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/wrap_batch", tag = "key_protect", request_body = WrapBatchRequest,
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 200, body = WrapBatchResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn wrap_batch(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyId(id): KeyId,
    KeyProtectBody(body): KeyProtectBody<WrapBatchRequest>,
) -> ApiResult<Json<WrapBatchResponse>> {
    let body = body.unwrap_or_default();
    let (given, count) = match (&body.plaintexts, body.count) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid_field(
                "count",
                "give either plaintexts (data keys to wrap) or count (data keys to generate), not both",
            )
            .into());
        }
        (plaintexts, count) => (
            decode_all("plaintext", plaintexts.as_deref().unwrap_or_default())?,
            count.unwrap_or(0),
        ),
    };
    let wrapped = s
        .keyplane
        .wrap_data_keys(&caller, keystore, id, given, count, &body.aad)
        .await?;
    let version = wrapped.first().map_or(0, |w| w.key_version);
    Ok(Json(WrapBatchResponse {
        key_version: VersionRef {
            id: version_id(id, version),
        },
        results: wrapped
            .iter()
            .map(|w| WrappedItem {
                plaintext: w.generated.as_ref().map(|p| B64.encode(p.as_slice())),
                ciphertext: B64.encode(&w.ciphertext),
            })
            .collect(),
    }))
}

/// Extension: unwrap many data keys in one request.
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/unwrap_batch", tag = "key_protect", request_body = UnwrapBatchRequest,
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 200, body = UnwrapBatchResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn unwrap_batch(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyId(id): KeyId,
    KeyProtectBody(body): KeyProtectBody<UnwrapBatchRequest>,
) -> ApiResult<Json<UnwrapBatchResponse>> {
    let body = body.unwrap_or_default();
    let raw = decode_all("ciphertext", &body.ciphertexts)?;
    let items: Vec<&[u8]> = raw.iter().map(|c| c.as_slice()).collect();
    let opened = s
        .keyplane
        .unwrap_data_keys(&caller, keystore, id, &items, &body.aad)
        .await?;
    Ok(Json(UnwrapBatchResponse {
        results: opened
            .iter()
            .map(|u| UnwrapResponse {
                plaintext: B64.encode(u.plaintext.as_slice()),
                key_version: VersionRef {
                    id: version_id(id, u.key_version),
                },
                ciphertext: None,
                rewrapped_key_version: None,
            })
            .collect(),
    }))
}

/// NIST SP 800-57 state numbers, as Key Protect reports them.
fn state_number(state: KeyState) -> u8 {
    match state {
        KeyState::PreActivation => 0,
        KeyState::Active => 1,
        KeyState::Deactivated | KeyState::Compromised => 3,
        KeyState::Destroyed | KeyState::DestroyedCompromised => 5,
    }
}

/// What Key Protect says of a key beyond the key itself.
pub(crate) struct Facts<'a> {
    aliases: &'a [KeyAlias],
    /// Its current material was imported.
    imported: bool,
    /// Its vault's dual control.
    dual_auth_delete: bool,
}

/// A key as Key Protect describes it: named as it was given, with its aliases.
pub(crate) fn key_resource(k: &InstalledKey, facts: &Facts<'_>) -> Value {
    let id = k.copy.key_id_in_keystore;
    let destroyed = matches!(
        k.key.state,
        KeyState::Destroyed | KeyState::DestroyedCompromised
    );
    let mut resource = json!({
        "type": "application/vnd.ibm.kms.key+json",
        "id": id.to_string(),
        "name": k.key.label,
        "aliases": facts.aliases.iter().map(|a| a.alias.as_str()).collect::<Vec<_>>(),
        "description": k.key.description,
        "state": state_number(k.key.state),
        "extractable": false,
        "imported": facts.imported,
        "keyRingID": k.copy.key_ring,
        "crn": crn(k.copy.keystore_id, k.key.vault.id, id),
        "algorithmType": "AES",
        "algorithmBitSize": 256,
        "algorithmMetadata": { "bitLength": "256", "mode": "GCM" },
        "createdBy": k.key.stamps.created_by,
        "creationDate": time(&k.key.stamps.created_at),
        "lastUpdateDate": time(&k.key.stamps.updated_at),
        "keyVersion": {
            "id": version_id(id, k.key.version),
            "creationDate": time(&k.key.rotated_at.unwrap_or(k.key.stamps.created_at)),
        },
        "dualAuthDelete": { "enabled": facts.dual_auth_delete },
        "deleted": destroyed,
    });
    if let Some(rotated) = &k.key.rotated_at {
        resource["lastRotateDate"] = json!(time(rotated));
    }
    if destroyed {
        resource["deletionDate"] = json!(time(&k.key.stamps.updated_at));
        resource["deletedBy"] = json!(k.key.stamps.updated_by);
    }
    resource
}

/// A key's CRN, in IBM Cloud's form: the service `kms`, the vault as the account, the keystore as
/// the instance.
fn crn(instance: Uuid, vault: Uuid, key: Uuid) -> String {
    format!("crn:v1:keyplane:private:kms:local:a/{vault}:{instance}:key:{key}")
}

pub(crate) fn collection(total: i64, resources: Vec<Value>) -> Value {
    json!({
        "metadata": { "collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": total },
        "resources": resources,
    })
}

/// Key Protect's page of keys: up to 5,000, 200 when not given.
pub(crate) const MAX_KEY_PROTECT_LIMIT: u32 = 5000;
const DEFAULT_KEY_PROTECT_LIMIT: u32 = 200;

fn key_protect_paging(q: &Params) -> Result<keyplane_core::query::Paging, ApiError> {
    let limit = match q.get("limit") {
        None => DEFAULT_KEY_PROTECT_LIMIT,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_KEY_PROTECT_LIMIT).contains(n))
            .ok_or_else(|| {
                Error::invalid_parameter(
                    "limit",
                    format!("limit must be an integer between 1 and {MAX_KEY_PROTECT_LIMIT}"),
                )
            })?,
    };
    let offset = q.paging_offset()?;
    Ok(keyplane_core::query::Paging { limit, offset })
}

/// Keys installed in the keystore (Key Protect `GET /api/v2/keys`).
#[utoipa::path(get, path = "/api/v2/keys", tag = "key_protect",
    params(("bluemix-instance" = String, Header), ("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query)),
    responses((status = 200, description = "key collection", body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRingHeader(ring): KeyRingHeader,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let paging = key_protect_paging(&Params::new(&q))?;
    let page = s
        .keyplane
        .installed_keys(&caller, keystore, ring.as_deref(), paging)
        .await?;
    let resources = resources_of(&s, &caller, keystore, &page.items).await?;
    Ok(Json(collection(page.total_count, resources)))
}

/// One installed key's metadata, by id or alias (Key Protect `GET /api/v2/keys/{id}`).
#[utoipa::path(get, path = "/api/v2/keys/{id}", tag = "key_protect",
    params(("id" = String, Path, description = "the key's id or alias"), ("bluemix-instance" = String, Header)),
    responses((status = 200, description = "key collection of one", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
) -> ApiResult<Json<Value>> {
    Ok(Json(described(&s, &caller, keystore, &key).await?))
}

/// One key's metadata as a collection of one, by id or alias.
async fn described(
    s: &AppState,
    caller: &keyplane_core::authz::Caller,
    keystore: Uuid,
    key: &KeyProtectRef,
) -> ApiResult<Value> {
    let k = s.keyplane.key_protect_key(caller, keystore, key).await?;
    Ok(collection(
        1,
        resources_of(s, caller, keystore, std::slice::from_ref(&k)).await?,
    ))
}

/// Keys with what Key Protect says of them, read for the whole page at once.
pub(crate) async fn resources_of(
    s: &AppState,
    caller: &keyplane_core::authz::Caller,
    keystore: Uuid,
    keys: &[InstalledKey],
) -> ApiResult<Vec<Value>> {
    let dual_auth_delete = s
        .keyplane
        .key_protect_dual_auth_delete(caller, keystore)
        .await?;
    let (aliases, imported) = s.keyplane.key_protect_facts(keystore, keys).await?;
    Ok(keys
        .iter()
        .map(|k| {
            key_resource(
                k,
                &Facts {
                    aliases: aliases
                        .get(&k.copy.key_id_in_keystore)
                        .map_or(&[], Vec::as_slice),
                    imported: imported.contains(&k.key.id),
                    dual_auth_delete,
                },
            )
        })
        .collect())
}

/// A key's metadata without its material (Key Protect `GET /api/v2/keys/{id}/metadata`); keys
/// here never answer with material, so it is what `GET /api/v2/keys/{id}` answers.
#[utoipa::path(get, path = "/api/v2/keys/{id}/metadata", tag = "key_protect",
    params(("id" = String, Path, description = "the key's id or alias"), ("bluemix-instance" = String, Header)),
    responses((status = 200, description = "key collection of one", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn metadata(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
) -> ApiResult<Json<Value>> {
    Ok(Json(described(&s, &caller, keystore, &key).await?))
}

/// A key's versions, newest first (Key Protect `GET /api/v2/keys/{id}/versions`).
#[utoipa::path(get, path = "/api/v2/keys/{id}/versions", tag = "key_protect",
    params(("id" = String, Path, description = "the key's id or alias"), ("bluemix-instance" = String, Header),
        ("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query)),
    responses((status = 200, description = "key version collection", body = Object), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn versions(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let paging = key_protect_paging(&Params::new(&q))?;
    let (k, mut all) = s
        .keyplane
        .key_protect_versions(&caller, keystore, &key)
        .await?;
    all.sort_by_key(|v| std::cmp::Reverse(v.version));
    let total = all.len();
    let id = k.copy.key_id_in_keystore;
    let resources: Vec<Value> = all
        .iter()
        .skip(usize::try_from(paging.offset).unwrap_or(usize::MAX))
        .take(paging.limit as usize)
        .map(|v: &KeyVersion| {
            json!({
                "id": version_id(id, v.version),
                "creationDate": time(&v.created_at),
            })
        })
        .collect();
    Ok(Json(json!({
        "metadata": {
            "collectionType": "application/vnd.ibm.kms.key.version+json",
            "collectionTotal": total,
        },
        "resources": resources,
    })))
}

/// A key's id or alias and an alias, in the path.
pub(crate) struct AliasPath {
    key: KeyProtectRef,
    alias: String,
}

impl<S: Send + Sync> FromRequestParts<S> for AliasPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path((key, alias)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    ApiError::from(Error::invalid_parameter("alias", "the path names no alias"))
                })?;
        check_path_reference("id", &key)?;
        check_path_reference("alias", &alias)?;
        let key_ring = key_ring_of(&parts.headers)?;
        Ok(Self {
            key: KeyProtectRef { key, key_ring },
            alias,
        })
    }
}

/// Give a key an alias (Key Protect `POST /api/v2/keys/{id}/aliases/{alias}`).
#[utoipa::path(post, path = "/api/v2/keys/{id}/aliases/{alias}", tag = "key_protect",
    params(("id" = String, Path, description = "the key's id or alias"), ("alias" = String, Path),
        ("bluemix-instance" = String, Header)),
    responses((status = 201, description = "alias collection of one", body = Object), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_alias(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    path: AliasPath,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let a = s
        .keyplane
        .key_protect_add_alias(&caller, keystore, &path.key, &path.alias)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "metadata": {
                "collectionType": "application/vnd.ibm.kms.alias+json",
                "collectionTotal": 1,
            },
            "resources": [{
                "keyId": a.key_id_in_keystore.to_string(),
                "alias": a.alias,
                "createdBy": a.created_by,
                "creationDate": time(&a.created_at),
            }],
        })),
    ))
}

/// Take an alias from a key (Key Protect `DELETE /api/v2/keys/{id}/aliases/{alias}`).
#[utoipa::path(delete, path = "/api/v2/keys/{id}/aliases/{alias}", tag = "key_protect",
    params(("id" = String, Path, description = "the key's id or alias"), ("alias" = String, Path),
        ("bluemix-instance" = String, Header)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_alias(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    path: AliasPath,
) -> ApiResult<StatusCode> {
    s.keyplane
        .key_protect_remove_alias(&caller, keystore, &path.key, &path.alias)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key a data-plane call names, by its id or an alias (resolved in the keystore the
/// `bluemix-instance` header names, for the caller, as a lookup by alias is).
pub(crate) struct KeyId(Uuid);

impl FromRequestParts<AppState> for KeyId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let KeyRef(raw) = KeyRef::from_request_parts(parts, state).await?;
        // By id, the key is the one the id names: the data plane's fast path reads no ring.
        if let Ok(id) = Uuid::parse_str(&raw.key) {
            return Ok(KeyId(id));
        }
        let Instance(keystore) = Instance::from_request_parts(parts, state).await?;
        let Caller(caller) = Caller::from_request_parts(parts, state).await?;
        let installed = state
            .keyplane
            .key_protect_key(&caller, keystore, &raw)
            .await?;
        Ok(KeyId(installed.copy.key_id_in_keystore))
    }
}

/// A key's id, alias or name in the path, with the key ring `X-Kms-Key-Ring` names.
pub(crate) struct KeyRef(pub(crate) KeyProtectRef);

/// Longest id or alias accepted in a path.
pub(crate) const MAX_KEY_REF_LEN: usize = 128;

impl<S: Send + Sync> FromRequestParts<S> for KeyRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    ApiError::from(Error::invalid_parameter("id", "the path has no key id"))
                })?;
        check_path_reference("id", &raw)?;
        Ok(Self(KeyProtectRef {
            key: raw,
            key_ring: key_ring_of(&parts.headers)?,
        }))
    }
}

/// A key's id, alias or name, or an alias, in a path: 1 to its bound of printable characters.
fn check_path_reference(name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty()
        || value.chars().count() > MAX_KEY_REF_LEN
        || value.chars().any(char::is_control)
    {
        return Err(Error::invalid_parameter(
            name,
            format!("{name} is 1 to {MAX_KEY_REF_LEN} printable characters"),
        )
        .into());
    }
    Ok(())
}

/// The key-material fields Key Protect's create and rotate take.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MaterialFields {
    /// Base64 key material; encrypted under the import token when `encryptedNonce` is given.
    payload: Option<String>,
    /// `RSAES_OAEP_SHA_256` (default) or `RSAES_OAEP_SHA_1`.
    encryption_algorithm: Option<String>,
    encrypted_nonce: Option<String>,
    iv: Option<String>,
}

/// Decoded material fields, kept until the service has used them.
struct DecodedMaterial {
    payload: Option<Zeroizing<Vec<u8>>>,
    oaep_sha256: bool,
    nonce: Option<(Vec<u8>, Vec<u8>)>,
}

impl DecodedMaterial {
    fn decode(f: &MaterialFields) -> Result<Self, ApiError> {
        let payload = f
            .payload
            .as_deref()
            .map(|p| decode("payload", p))
            .transpose()?;
        let oaep_sha256 = match f.encryption_algorithm.as_deref() {
            None | Some("RSAES_OAEP_SHA_256") => true,
            Some("RSAES_OAEP_SHA_1") => false,
            Some(other) => {
                return Err(Error::invalid_field(
                    "encryptionAlgorithm",
                    format!(
                        "encryptionAlgorithm '{}' is not supported: use RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1",
                        other.escape_debug()
                    ),
                )
                .into());
            }
        };
        let nonce = match (&f.encrypted_nonce, &f.iv) {
            (None, None) => None,
            (Some(n), Some(iv)) => Some((
                decode("iv", iv)?.to_vec(),
                decode("encryptedNonce", n)?.to_vec(),
            )),
            (Some(_), None) => return Err(Error::missing_field("iv").into()),
            (None, Some(_)) => return Err(Error::missing_field("encryptedNonce").into()),
        };
        if nonce.is_some() && payload.is_none() {
            return Err(Error::missing_field("payload").into());
        }
        Ok(Self {
            payload,
            oaep_sha256,
            nonce,
        })
    }

    fn supplied(&self) -> SuppliedMaterial<'_> {
        match (&self.payload, &self.nonce) {
            (None, _) => SuppliedMaterial::Generate,
            (Some(p), None) => SuppliedMaterial::Plain(p),
            (Some(p), Some((iv, encrypted_nonce))) => SuppliedMaterial::UnderImportToken {
                oaep_sha256: self.oaep_sha256,
                payload: p,
                iv,
                encrypted_nonce,
            },
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NewKeyResource {
    name: Option<String>,
    description: Option<String>,
    /// Only `false` (root keys) is supported.
    extractable: Option<bool>,
    /// Up to five aliases, unique in the keystore.
    #[serde(default)]
    aliases: Vec<String>,
    /// The resource type Key Protect clients send (`application/vnd.ibm.kms.key+json`).
    #[serde(rename = "type")]
    #[allow(dead_code)]
    resource_type: Option<String>,
    #[serde(flatten)]
    material: MaterialFields,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKeyRequest {
    /// The collection header Key Protect clients send; read for nothing.
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde::de::IgnoredAny>,
    resources: Vec<NewKeyResource>,
}

/// Create or import a root key (Key Protect `POST /api/v2/keys`). It becomes a managed key of the
/// keystore's vault, under the template that installs AES-256 keys into this keystore.
#[utoipa::path(post, path = "/api/v2/keys", tag = "key_protect", request_body = NewKeyRequest,
    params(("bluemix-instance" = String, Header)),
    responses((status = 201, description = "key collection of one", body = Object), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRingHeader(ring): KeyRingHeader,
    Caller(actor): Caller,
    KeyProtectBody(body): KeyProtectBody<NewKeyRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = body.ok_or_else(|| Error::missing_field("resources"))?;
    let [resource] = <[NewKeyResource; 1]>::try_from(body.resources).map_err(|_| {
        Error::invalid_field("resources", "resources holds exactly one key to create")
    })?;
    if resource.extractable != Some(false) {
        return Err(Error::invalid_field(
            "resources[0].extractable",
            "only root keys (extractable: false) can be created in this keystore",
        )
        .into());
    }
    let name = resource
        .name
        .ok_or_else(|| Error::missing_field("resources[0].name"))?;
    let material = DecodedMaterial::decode(&resource.material)?;
    let k = s
        .keyplane
        .key_protect_create(
            &actor,
            keystore,
            ring.as_deref(),
            NewKeyProtectKey {
                name,
                description: resource.description,
                aliases: &resource.aliases,
            },
            &material.supplied(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(collection(
            1,
            resources_of(&s, &actor, keystore, std::slice::from_ref(&k)).await?,
        )),
    ))
}

/// Enable a key (Key Protect `enable`): the managed key is activated.
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/enable", tag = "key_protect",
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn enable(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    Caller(actor): Caller,
) -> ApiResult<StatusCode> {
    s.keyplane
        .key_protect_set_enabled(&actor, keystore, &key, true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disable a key (Key Protect `disable`): the managed key is deactivated.
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/disable", tag = "key_protect",
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn disable(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    Caller(actor): Caller,
) -> ApiResult<StatusCode> {
    s.keyplane
        .key_protect_set_enabled(&actor, keystore, &key, false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a key (Key Protect `rotate`): a new version, generated or from the payload.
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/rotate", tag = "key_protect", request_body = Option<MaterialFields>,
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rotate(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    Caller(actor): Caller,
    KeyProtectBody(fields): KeyProtectBody<MaterialFields>,
) -> ApiResult<StatusCode> {
    let fields = fields.unwrap_or_default();
    let material = DecodedMaterial::decode(&fields)?;
    s.keyplane
        .key_protect_rotate(&actor, keystore, &key, &material.supplied())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a key (Key Protect `DELETE`): the managed key is deactivated and destroyed. With
/// `Prefer: return=representation` the answer is the deleted key (200), else nothing (204).
#[utoipa::path(delete, path = "/api/v2/keys/{id}", tag = "key_protect",
    params(("id" = String, Path), ("bluemix-instance" = String, Header), ("Prefer" = Option<String>, Header)),
    responses((status = 200, description = "key collection of one: the deleted key", body = Object), (status = 204),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    Caller(actor): Caller,
    headers: axum::http::HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    let representation = prefers_representation(&headers);
    if !representation {
        // The event written with the change records the answer given.
        keyplane_core::audit::answers_with(StatusCode::NO_CONTENT.as_u16());
    }
    // Whether its material was imported is read before it is erased.
    let imported = if representation {
        let before = s.keyplane.key_protect_key(&actor, keystore, &key).await?;
        let (_, imported) = s
            .keyplane
            .key_protect_facts(keystore, std::slice::from_ref(&before))
            .await?;
        imported.contains(&before.key.id)
    } else {
        false
    };
    let deleted = s
        .keyplane
        .key_protect_delete(&actor, keystore, &key)
        .await?;
    if !representation {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // A deleted key's aliases and material went with it.
    let facts = Facts {
        aliases: &[],
        imported,
        dual_auth_delete: s
            .keyplane
            .key_protect_dual_auth_delete(&actor, keystore)
            .await?,
    };
    Ok(Json(collection(1, vec![key_resource(&deleted, &facts)])).into_response())
}

/// Set a key for deletion (Key Protect `setKeyForDeletion`): under dual control, the first
/// principal's request to destroy it; a second principal's delete approves it.
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/setKeyForDeletion", tag = "key_protect",
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn set_for_deletion(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    Caller(actor): Caller,
) -> ApiResult<StatusCode> {
    s.keyplane
        .key_protect_set_for_deletion(&actor, keystore, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Withdraw a key's setting for deletion (Key Protect `unsetKeyForDeletion`): the pending
/// request to destroy it is rejected.
#[utoipa::path(post, path = "/api/v2/keys/{id}/actions/unsetKeyForDeletion", tag = "key_protect",
    params(("id" = String, Path), ("bluemix-instance" = String, Header)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn unset_for_deletion(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    Caller(actor): Caller,
) -> ApiResult<StatusCode> {
    s.keyplane
        .key_protect_unset_for_deletion(&actor, keystore, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Purge a deleted key (Key Protect `DELETE /keys/{id}/purge`): the destroyed managed key is
/// removed from its vault; the answer is the key as it was last kept.
#[utoipa::path(delete, path = "/api/v2/keys/{id}/purge", tag = "key_protect",
    params(("id" = String, Path, description = "the deleted key's id"), ("bluemix-instance" = String, Header)),
    responses((status = 200, description = "key collection of one: the purged key", body = Object),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn purge(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    Caller(actor): Caller,
) -> ApiResult<Json<Value>> {
    let purged = s.keyplane.key_protect_purge(&actor, keystore, &key).await?;
    let facts = Facts {
        aliases: &[],
        imported: false,
        dual_auth_delete: false,
    };
    Ok(Json(collection(1, vec![key_resource(&purged, &facts)])))
}

/// Restore a deleted key (Key Protect `POST /keys/{id}/restore`): a destroyed key's material is
/// erased here, so this always answers why it cannot be done (409), or 404.
#[utoipa::path(post, path = "/api/v2/keys/{id}/restore", tag = "key_protect",
    params(("id" = String, Path, description = "the deleted key's id"), ("bluemix-instance" = String, Header)),
    responses((status = 201, description = "never: a destroyed key's material is gone", body = Object),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn restore(
    State(s): State<AppState>,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    Caller(actor): Caller,
) -> ApiResult<StatusCode> {
    s.keyplane
        .key_protect_restore(&actor, keystore, &key)
        .await?;
    Ok(StatusCode::CREATED)
}

/// Whether the client asked for the resource in the answer (`Prefer: return=representation`;
/// `return=minimal`, or nothing, asks for none).
fn prefers_representation(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim().eq_ignore_ascii_case("return=representation"))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NewImportToken {
    /// Seconds the token lives (default 600).
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    expiration: Option<i64>,
    /// How often it may be retrieved (default 1).
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    max_allowed_retrievals: Option<u32>,
}

/// An import token as Key Protect shows it. Its id names the token of this keystore created at
/// that moment (a keystore holds one token at a time).
fn import_token_body(keystore: Uuid, t: &ImportTokenView) -> Value {
    let id = Uuid::new_v5(
        &keystore,
        t.created_at.timestamp_millis().to_string().as_bytes(),
    );
    let mut body = json!({
        "id": id.to_string(),
        "creationDate": time(&t.created_at),
        "expirationDate": time(&t.expires_at),
        "maxAllowedRetrievals": t.max_retrievals,
        "remainingRetrievals": t.remaining_retrievals,
    });
    if let (Some(der), Some(nonce)) = (&t.public_key_der, &t.nonce) {
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        );
        body["payload"] = json!(B64.encode(pem));
        body["nonce"] = json!(B64.encode(nonce));
    }
    body
}

/// Create the keystore's import token (Key Protect `POST /api/v2/import_token`), replacing any
/// earlier one.
#[utoipa::path(post, path = "/api/v2/import_token", tag = "key_protect", request_body = Option<NewImportToken>,
    params(("bluemix-instance" = String, Header)),
    responses((status = 201, description = "the token's metadata", body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn create_import_token(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyProtectBody(body): KeyProtectBody<NewImportToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = body.unwrap_or_default();
    let token = s
        .keyplane
        .create_import_token(
            &caller,
            keystore,
            body.expiration.unwrap_or(600),
            body.max_allowed_retrievals.unwrap_or(1),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(import_token_body(keystore, &token)),
    ))
}

/// Retrieve the import token: its public key (base64 PEM) and nonce.
#[utoipa::path(get, path = "/api/v2/import_token", tag = "key_protect",
    params(("bluemix-instance" = String, Header)),
    responses((status = 200, description = "the token with payload and nonce", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn retrieve_import_token(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
) -> ApiResult<Json<Value>> {
    let token = s.keyplane.retrieve_import_token(&caller, keystore).await?;
    Ok(Json(import_token_body(keystore, &token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_stay_what_they_were_when_kept() {
        let key = Uuid::parse_str("1b4e28ba-2fa1-11d2-883f-0016d3cca427").unwrap();
        // The derivation clients have stored ids of: UUIDv5 of the version number under the key.
        let derived = Uuid::new_v5(&key, b"3").to_string();
        assert_eq!(version_id(key, 3), derived, "first computed");
        assert_eq!(version_id(key, 3), derived, "then kept");
        assert_ne!(version_id(key, 4), derived);
    }
}
