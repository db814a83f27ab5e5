//! Key Protect's key and instance policies: a key's rotation policy is its `rotation_interval`;
//! dual-authorization delete, for the instance and each key, is the vault's dual control.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyplane_core::Error;
use keyplane_core::service::KeyProtectPolicies;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::key_protect::{Instance, KeyRef};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{KeyProtectBody, RawQuery};
use crate::params::Params;
use crate::wire::time;
use crate::{AppState, Caller};

const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";

/// The policies Keyplane maps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Rotation,
    DualAuthDelete,
}

/// `?policy=`: one policy, or (absent) every mapped one. Key Protect's other policies have no
/// counterpart here and are refused as such.
fn policy_asked(q: &Params, key_level: bool) -> Result<Option<Policy>, ApiError> {
    match q.get("policy") {
        None => Ok(None),
        Some("dualAuthDelete") => Ok(Some(Policy::DualAuthDelete)),
        Some("rotation") if key_level => Ok(Some(Policy::Rotation)),
        Some(other) => Err(Error::NotFound {
            resource: "policy",
            id: format!(
                "'{}': Keyplane maps only {} here",
                other.escape_debug(),
                if key_level {
                    "rotation and dualAuthDelete"
                } else {
                    "dualAuthDelete (the vault's dual control)"
                }
            ),
        }
        .into()),
    }
}

fn key_policies(p: &KeyProtectPolicies, only: Option<Policy>) -> Value {
    let key = &p.installed.key;
    let id_in_keystore = p.installed.copy.key_id_in_keystore;
    let resource = |policy: &str, body: Value| {
        let mut r = json!({
            "type": POLICY_TYPE,
            "id": Uuid::new_v5(&id_in_keystore, policy.as_bytes()).to_string(),
            "crn": format!(
                "crn:v1:keyplane:private:kms:local:a/{}:{}:policy:{}",
                key.vault.id,
                p.installed.copy.keystore_id,
                Uuid::new_v5(&id_in_keystore, policy.as_bytes())
            ),
            "createdBy": key.stamps.created_by,
            "creationDate": time(&key.stamps.created_at),
            "updatedBy": key.stamps.updated_by,
            "lastUpdateDate": time(&key.stamps.updated_at),
        });
        r[policy] = body;
        r
    };
    let mut resources = Vec::new();
    if only.is_none_or(|o| o == Policy::Rotation) {
        let mut rotation = json!({ "enabled": p.rotation_interval.is_some() });
        if let Some(months) = p.rotation_months() {
            rotation["interval_month"] = json!(months);
        }
        resources.push(resource("rotation", rotation));
    }
    if only.is_none_or(|o| o == Policy::DualAuthDelete) {
        resources.push(resource(
            "dualAuthDelete",
            json!({ "enabled": p.dual_auth_delete }),
        ));
    }
    json!({
        "metadata": { "collectionType": POLICY_TYPE, "collectionTotal": resources.len() },
        "resources": resources,
    })
}

/// A key's policies (Key Protect `GET /api/v2/keys/{id}/policies`).
#[utoipa::path(get, path = "/api/v2/keys/{id}/policies", tag = "key_protect",
    params(("id" = String, Path, description = "the key's id, alias or name"), ("bluemix-instance" = String, Header),
        ("policy" = Option<String>, Query, description = "rotation or dualAuthDelete")),
    responses((status = 200, description = "policy collection", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_key_policies(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let only = policy_asked(&Params::new(&q), true)?;
    let policies = s
        .keyplane
        .key_protect_policies(&caller, keystore, &key)
        .await?;
    Ok(Json(key_policies(&policies, only)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotationPolicy {
    /// `false` clears the key's rotation interval.
    enabled: Option<bool>,
    /// Months between rotations, 1 to 12.
    #[serde(default, deserialize_with = "crate::extract::whole_number")]
    #[schema(minimum = 1, maximum = 12)]
    interval_month: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnabledPolicy {
    enabled: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyPolicyResource {
    /// `application/vnd.ibm.kms.policy+json`.
    #[serde(rename = "type")]
    #[allow(dead_code)]
    resource_type: Option<String>,
    rotation: Option<RotationPolicy>,
    #[serde(rename = "dualAuthDelete")]
    dual_auth_delete: Option<EnabledPolicy>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyPoliciesRequest {
    /// The collection header Key Protect clients send; read for nothing.
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde::de::IgnoredAny>,
    #[schema(min_items = 1, max_items = 1)]
    resources: Vec<KeyPolicyResource>,
}

/// Set a key's policies (Key Protect `PUT /api/v2/keys/{id}/policies`): rotation sets the key's
/// rotation interval in months; dualAuthDelete is the vault's dual control, accepted as it is.
#[utoipa::path(put, path = "/api/v2/keys/{id}/policies", tag = "key_protect", request_body = KeyPoliciesRequest,
    params(("id" = String, Path, description = "the key's id, alias or name"), ("bluemix-instance" = String, Header),
        ("policy" = Option<String>, Query, description = "rotation or dualAuthDelete")),
    responses((status = 200, description = "policy collection", body = Object), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn put_key_policies(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    KeyRef(key): KeyRef,
    RawQuery(q): RawQuery,
    KeyProtectBody(body): KeyProtectBody<KeyPoliciesRequest>,
) -> ApiResult<Json<Value>> {
    let only = policy_asked(&Params::new(&q), true)?;
    let body = body.ok_or_else(|| Error::missing_field("resources"))?;
    let [resource] = <[KeyPolicyResource; 1]>::try_from(body.resources)
        .map_err(|_| Error::invalid_field("resources", "resources holds exactly one policy"))?;
    let (given, policies) = match (resource.rotation, resource.dual_auth_delete, only) {
        (Some(r), None, None | Some(Policy::Rotation)) => {
            let months = match (r.enabled.unwrap_or(true), r.interval_month) {
                (false, _) => None,
                (true, Some(m)) => Some(m),
                (true, None) => {
                    return Err(Error::missing_field("resources[0].rotation.interval_month").into());
                }
            };
            let set = s
                .keyplane
                .key_protect_set_rotation_policy(&caller, keystore, &key, months)
                .await?;
            (Policy::Rotation, set)
        }
        (None, Some(d), None | Some(Policy::DualAuthDelete)) => {
            let set = s
                .keyplane
                .key_protect_set_dual_auth_delete_policy(&caller, keystore, &key, d.enabled)
                .await?;
            (Policy::DualAuthDelete, set)
        }
        (None, None, _) => {
            return Err(Error::missing_field("resources[0].rotation").into());
        }
        _ => {
            return Err(Error::invalid_field(
                "resources[0]",
                "a policy is set alone, and is the one ?policy= names",
            )
            .into());
        }
    };
    Ok(Json(key_policies(&policies, Some(given))))
}

fn instance_policies(enabled: bool, stamps: &keyplane_core::model::Stamps) -> Value {
    json!({
        "metadata": { "collectionType": POLICY_TYPE, "collectionTotal": 1 },
        "resources": [{
            "policy_type": "dualAuthDelete",
            "policy_data": { "enabled": enabled },
            "createdBy": stamps.created_by,
            "creationDate": time(&stamps.created_at),
            "updatedBy": stamps.updated_by,
            "lastUpdated": time(&stamps.updated_at),
        }],
    })
}

/// The instance's policies (Key Protect `GET /api/v2/instance/policies`): dualAuthDelete, the
/// vault's dual control.
#[utoipa::path(get, path = "/api/v2/instance/policies", tag = "key_protect",
    params(("bluemix-instance" = String, Header), ("policy" = Option<String>, Query, description = "dualAuthDelete")),
    responses((status = 200, description = "policy collection", body = Object), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_instance_policies(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    policy_asked(&Params::new(&q), false)?;
    let (keystore, enabled) = s
        .keyplane
        .key_protect_instance_dual_auth_delete(&caller, keystore)
        .await?;
    Ok(Json(instance_policies(enabled, &keystore.stamps)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstancePolicyResource {
    /// Only `dualAuthDelete` is mapped.
    #[schema(pattern = "^dualAuthDelete$")]
    policy_type: String,
    policy_data: EnabledPolicy,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstancePoliciesRequest {
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde::de::IgnoredAny>,
    #[schema(min_items = 1, max_items = 1)]
    resources: Vec<InstancePolicyResource>,
}

/// Set the instance's dualAuthDelete policy (Key Protect `PUT /api/v2/instance/policies`): the
/// vault's dual control, switched by an administrator of the vault.
#[utoipa::path(put, path = "/api/v2/instance/policies", tag = "key_protect", request_body = InstancePoliciesRequest,
    params(("bluemix-instance" = String, Header), ("policy" = Option<String>, Query, description = "dualAuthDelete")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn put_instance_policies(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Instance(keystore): Instance,
    RawQuery(q): RawQuery,
    KeyProtectBody(body): KeyProtectBody<InstancePoliciesRequest>,
) -> ApiResult<StatusCode> {
    policy_asked(&Params::new(&q), false)?;
    let body = body.ok_or_else(|| Error::missing_field("resources"))?;
    let [resource] = <[InstancePolicyResource; 1]>::try_from(body.resources)
        .map_err(|_| Error::invalid_field("resources", "resources holds exactly one policy"))?;
    if resource.policy_type != "dualAuthDelete" {
        return Err(Error::invalid_field(
            "resources[0].policy_type",
            format!(
                "policy_type '{}' has no counterpart here: only dualAuthDelete (the vault's dual \
                 control) is mapped",
                resource.policy_type.escape_debug()
            ),
        )
        .into());
    }
    s.keyplane
        .key_protect_set_instance_dual_auth_delete(&caller, keystore, resource.policy_data.enabled)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
