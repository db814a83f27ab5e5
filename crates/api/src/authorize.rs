//! Authorisation of every call against the caller's roles (spec §8.1). A resource in a vault where
//! the caller holds no role does not exist for it (404); one it can see but may not act on is
//! 403. Lists are narrowed to the vaults where the caller may list.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use keyplane_core::ErrorCode;
use keyplane_core::authz::{Grants, Permission, Visible};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// The vaults a list may show, set for list calls of callers scoped to some vaults.
#[derive(Debug, Clone)]
pub struct ListScope(pub Option<Visible>);

impl<S: Send + Sync> FromRequestParts<S> for ListScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(parts.extensions.get::<Visible>().cloned()))
    }
}

impl ListScope {
    /// Narrows a vault-id filter to the visible vaults; when nothing visible matches, the filter
    /// names the nil id, which no vault has, so the list comes back empty.
    pub fn narrow(&self, vault_ids: &mut Vec<Uuid>) {
        if let Some(visible) = &self.0 {
            *vault_ids = visible
                .narrow(vault_ids)
                .unwrap_or_else(|| vec![Uuid::nil()]);
        }
    }
}

/// What a call needs.
enum Need {
    /// A permission outside any vault (roles held on every vault).
    Global(Permission),
    /// A permission in a vault.
    InVault(Permission, Uuid),
    /// A list, narrowed to the vaults where the caller may list.
    List,
    /// A Key Protect call on the keystore `bluemix-instance` names, in that keystore's vault.
    InKeystore(Permission, Uuid, Uuid),
    /// A create whose vault is in the body.
    InBodyVault(Permission),
    /// Nothing to check here (an unknown path answers its own 404; a bad id its own 400).
    Nothing,
}

fn not_found(resource: &'static str, id: Uuid) -> Response {
    ApiError::from(keyplane_core::Error::not_found(resource, id)).into_response()
}

fn forbidden() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        "your roles do not allow this operation",
    )
    .into_response()
}

/// The vault of a resource named in the path, or the response to give when it cannot be seen.
async fn resource_vault(
    state: &AppState,
    collection: &str,
    id: Uuid,
) -> Option<(Uuid, Option<keyplane_core::model::KeyState>)> {
    let kp = &state.keyplane;
    match collection {
        "vaults" => kp.get_vault(id).await.ok().map(|v| (v.vault.id, None)),
        "templates" => kp.get_template(id).await.ok().map(|t| (t.vault.id, None)),
        "keystores" => kp.get_keystore(id).await.ok().map(|k| (k.vault.id, None)),
        "managed_keys" => kp
            .get_key(id)
            .await
            .ok()
            .map(|k| (k.vault.id, Some(k.state))),
        _ => None,
    }
}

fn singular(collection: &str) -> &'static str {
    match collection {
        "vaults" => "vault",
        "templates" => "template",
        "keystores" => "keystore",
        "approvals" => "approval",
        _ => "managed key",
    }
}

/// What a Key Protect call needs in the keystore's vault: use for the data plane and reads, the
/// managed lifecycle permission for what changes a key.
fn key_protect_permission(method: &Method, path: &str) -> Permission {
    let action = path
        .rsplit_once("/actions/")
        .map(|(_, action)| action.trim_end_matches('/'));
    match (method, action) {
        (&Method::POST, Some("enable")) => Permission::KeyActivate,
        (&Method::POST, Some("disable")) => Permission::KeyDeactivate,
        (&Method::POST, Some("rotate")) => Permission::KeyRotate,
        (&Method::POST, Some(_)) => Permission::KeyUse,
        (&Method::DELETE, _) => Permission::KeyDestroyDeactivated,
        (&Method::GET, _) if !path.starts_with("/api/v2/import_token") => Permission::KeyUse,
        _ => Permission::KeyCreate,
    }
}

/// What the call needs; computed from owned parts (a request body is not `Sync`, so the request
/// itself is not held across the lookups).
async fn need(state: &AppState, method: &Method, path: &str, instance: Option<Uuid>) -> Need {
    if path.starts_with("/api/v2/") {
        return match instance {
            Some(id) => match state.keyplane.get_keystore(id).await {
                Ok(k) => Need::InKeystore(key_protect_permission(method, path), id, k.vault.id),
                Err(_) => Need::Nothing,
            },
            None => Need::Nothing,
        };
    }
    let Some(rest) = path.strip_prefix("/api/v4/") else {
        return Need::Nothing;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let collection = segments[0];
    if ["access", "system", "audit_events"].contains(&collection) {
        return Need::Global(Permission::Administer);
    }
    if collection == "approvals" {
        return approval_need(state, method, &segments).await;
    }
    if !["vaults", "templates", "keystores", "managed_keys"].contains(&collection) {
        return Need::Nothing;
    }
    let Some(id) = segments.get(1) else {
        return match *method {
            Method::GET => Need::List,
            Method::POST if collection == "vaults" => Need::Global(Permission::VaultWrite),
            Method::POST => Need::InBodyVault(match collection {
                "templates" => Permission::TemplateWrite,
                "keystores" => Permission::KeystoreWrite,
                _ => Permission::KeyCreate,
            }),
            _ => Need::Nothing,
        };
    };
    // The handler reads the id decoded (`%30` is `0`); anything that is not a plain UUID here is
    // refused rather than let through unchecked.
    let Ok(id) = Uuid::parse_str(id) else {
        return Need::Global(Permission::Administer);
    };
    let action = segments.get(2).copied();
    let Some((vault, key_state)) = resource_vault(state, collection, id).await else {
        return Need::Nothing;
    };
    let permission = match (collection, method, action) {
        (_, &Method::GET, Some("managed_keys")) => Permission::List,
        (_, &Method::GET, _) => Permission::Read,
        ("vaults", &Method::DELETE, None) => Permission::VaultDelete,
        // Dual control guards destroys against a single vault administrator: only a global
        // administrator may switch it.
        ("vaults", _, Some("dual_control")) => Permission::Administer,
        ("vaults", _, _) => Permission::VaultWrite,
        ("templates", &Method::DELETE, None) => Permission::TemplateDelete,
        ("templates", _, _) => Permission::TemplateWrite,
        ("keystores", &Method::DELETE, None) => Permission::KeystoreDelete,
        ("keystores", _, _) => Permission::KeystoreWrite,
        (_, &Method::DELETE, None) => Permission::KeyRemove,
        (_, &Method::PATCH, None) => Permission::KeyEdit,
        // An action this table does not know is refused to all but administrators: no path
        // escapes authorisation by being new.
        (_, _, Some(action)) => key_state
            .and_then(|s| Permission::for_key_action(action, s))
            .unwrap_or(Permission::Administer),
        _ => Permission::Administer,
    };
    Need::InVault(permission, vault)
}

/// A dual-control request is read by whoever can read its vault, and decided by whoever may do
/// what it asks.
async fn approval_need(state: &AppState, method: &Method, segments: &[&str]) -> Need {
    let Some(id) = segments.get(1) else {
        return if *method == Method::GET {
            Need::List
        } else {
            Need::Nothing
        };
    };
    let Ok(id) = Uuid::parse_str(id) else {
        return Need::Global(Permission::Administer);
    };
    let Ok(approval) = state.keyplane.get_approval(id).await else {
        return Need::Nothing;
    };
    if *method == Method::GET {
        return Need::InVault(Permission::Read, approval.vault_id);
    }
    let permission = match approval.action {
        keyplane_core::model::ApprovalAction::RemoveKey => Permission::KeyRemove,
        keyplane_core::model::ApprovalAction::DestroyKey => {
            match state.keyplane.get_key(approval.key_id).await {
                Ok(k) => Permission::for_key_action("destroy", k.state)
                    .unwrap_or(Permission::KeyDestroyDeactivated),
                Err(_) => return Need::Nothing,
            }
        }
    };
    Need::InVault(permission, approval.vault_id)
}

/// The vault named by a create's body (`vault.id`), leaving the body readable by the handler.
/// A body that is not one JSON value naming a vault by its UUID is refused here: what this step
/// cannot read, it cannot check, so it lets nothing through.
async fn body_vault(req: Request) -> Result<(Request, Uuid), Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, crate::extract::MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "the request body is too large",
            )
            .into_response()
        })?;
    let value = crate::extract::parse_json::<serde_json::Value>(&bytes)
        .map_err(IntoResponse::into_response)?;
    let vault = value
        .get("vault")
        .and_then(|v| v.get("id"))
        .ok_or_else(|| {
            ApiError::from(keyplane_core::Error::missing_field("vault.id")).into_response()
        })?
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| {
            ApiError::from(keyplane_core::Error::invalid_field(
                "vault.id",
                "vault.id must be a vault UUID",
            ))
            .into_response()
        })?;
    Ok((Request::from_parts(parts, Body::from(bytes)), vault))
}

/// The request, let through (a create's body read and put back), or the refusal to answer with.
pub(crate) async fn check(
    state: &AppState,
    grants: &Grants,
    mut req: Request,
) -> Result<Request, Response> {
    if grants.is_administrator() {
        return Ok(req);
    }
    // HEAD is GET without the body: it needs what GET needs, and sees what GET sees.
    let method = match req.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    let path = req.uri().path().to_owned();
    let instance = req
        .headers()
        .get("bluemix-instance")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v.trim()).ok());
    match need(state, &method, &path, instance).await {
        Need::Nothing => {}
        Need::Global(permission) => {
            if !grants.allows(permission, None) {
                return Err(forbidden());
            }
        }
        Need::InVault(permission, vault) => {
            if !grants.sees(vault) {
                let mut segments = path.trim_start_matches("/api/v4/").split('/');
                let collection = segments.next().unwrap_or("");
                let id = segments
                    .next()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .unwrap_or(vault);
                return Err(not_found(singular(collection), id));
            }
            if !grants.allows(permission, Some(vault)) {
                return Err(forbidden());
            }
        }
        Need::InKeystore(permission, keystore, vault) => {
            if !grants.sees(vault) {
                return Err(
                    ApiError::from(keyplane_core::service::unknown_instance(keystore))
                        .into_response(),
                );
            }
            if !grants.allows(permission, Some(vault)) {
                return Err(forbidden());
            }
        }
        Need::List => {
            let visible = grants.visible(Permission::List);
            if visible == Visible::Only(Vec::new()) {
                return Err(forbidden());
            }
            req.extensions_mut().insert(visible);
        }
        Need::InBodyVault(permission) => {
            let (rebuilt, vault) = body_vault(req).await?;
            req = rebuilt;
            if !grants.allows(permission, Some(vault)) {
                return Err(if grants.sees(vault) {
                    forbidden()
                } else {
                    // The same answer as for a vault that does not exist.
                    ApiError::from(keyplane_core::Error::invalid_field(
                        "vault.id",
                        format!("vault '{vault}' does not exist"),
                    ))
                    .into_response()
                });
            }
        }
    }
    Ok(req)
}
