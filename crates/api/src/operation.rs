//! Every operation of the API, resolved once per call at the edge from its method and path: what
//! it means to core (`keyplane_core::operation::Operation`: audit action, effect, severity,
//! withheld bodies, whether it answers while sealed), what it answers on success (read from the
//! OpenAPI document, the contract), its error dialect, the resource its `{id}` names and whether
//! the data plane's fast path serves it. Everything after the edge reads the resolved operation;
//! nothing downstream looks at the path again.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::Method;
use keyplane_core::operation::{Operation, Severity, catalog};
use uuid::Uuid;

use crate::routes::DataPlaneAction;

/// Which error body a call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// UKO's `{trace, status_code, errors}`.
    Uko,
    /// Key Protect's `{metadata, resources}`, on `/api/v2`.
    KeyProtect,
}

/// What the `{id}` of a route names, for the legacy `UKO-Vault` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Template,
    Keystore,
    ManagedKey,
}

/// One routed operation.
#[derive(Debug)]
pub(crate) struct Routed {
    /// The route template it was resolved by (`/api/v4/vaults/{id}`).
    pub template: &'static str,
    pub meaning: Operation,
    /// Its success status: the lowest documented 2xx but 202, which only a request awaiting
    /// approval answers (and that writes no change of its own).
    pub success: u16,
    pub dialect: Dialect,
    pub owner: Option<Owner>,
    pub data_plane: Option<DataPlaneAction>,
    /// Its metric series, made at its first call (what most calls record is then one atomic
    /// add and one histogram observation, no label lookup).
    pub series: std::sync::OnceLock<crate::metrics::RouteSeries>,
}

/// A call's operation, with the `{id}` its path carried when that is a UUID, read as the
/// handler reads it (percent-decoded; an id in no form of one names nothing, and its handler
/// answers it). Put in the request by the edge.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub operation: Arc<Routed>,
    pub id: Option<Uuid>,
    /// The id was written plainly, with nothing percent-encoded.
    pub plain_id: bool,
}

/// The operations, by method, in a path router.
pub(crate) struct Operations {
    get: matchit::Router<Arc<Routed>>,
    post: matchit::Router<Arc<Routed>>,
    put: matchit::Router<Arc<Routed>>,
    patch: matchit::Router<Arc<Routed>>,
    delete: matchit::Router<Arc<Routed>>,
    /// A path no operation has (404, 405): it only needs the dialect of its family.
    unknown_uko: Arc<Routed>,
    unknown_key_protect: Arc<Routed>,
}

struct Entry {
    method: Method,
    path: &'static str,
    meaning: Operation,
    owner: Option<Owner>,
    data_plane: Option<DataPlaneAction>,
}

fn entry(method: Method, path: &'static str, meaning: Operation) -> Entry {
    Entry {
        method,
        path,
        meaning,
        owner: None,
        data_plane: None,
    }
}

impl Entry {
    fn owned_by(self, owner: Owner) -> Self {
        Self {
            owner: Some(owner),
            ..self
        }
    }

    fn fast(self, action: DataPlaneAction) -> Self {
        Self {
            data_plane: Some(action),
            ..self
        }
    }
}

const KEY_PROTECT: &str = "/api/v2/";

/// The action of a call to a path no operation has.
const UNKNOWN: &str = "keyplane.api.unknown";

impl Routed {
    /// Whether this is an operation of the table, not the stand-in for an unknown path.
    pub(crate) fn is_known(&self) -> bool {
        self.meaning.action != UNKNOWN
    }
}

/// Every operation the server routes. A test holds it to the OpenAPI document both ways.
fn table() -> Vec<Entry> {
    use Method as M;
    use Operation as O;
    use Owner::*;
    use Severity::*;
    let read = O::reads;
    let write = |action| O::changes(action, Normal);
    let kp = |action| O::changes(action, Warning).withholding_body();
    let data = |action| O::uses_keys(action);
    vec![
        // Vaults and dual control.
        entry(M::GET, "/api/v4/vaults", catalog::VAULT_LIST),
        entry(M::POST, "/api/v4/vaults", catalog::VAULT_CREATE),
        entry(M::GET, "/api/v4/vaults/{id}", catalog::VAULT_READ),
        entry(M::PATCH, "/api/v4/vaults/{id}", catalog::VAULT_UPDATE),
        entry(M::DELETE, "/api/v4/vaults/{id}", catalog::VAULT_DELETE),
        entry(
            M::GET,
            "/api/v4/vaults/{id}/dual_control",
            catalog::DUAL_CONTROL_READ,
        ),
        entry(
            M::PUT,
            "/api/v4/vaults/{id}/dual_control",
            catalog::DUAL_CONTROL_SET,
        ),
        // Templates.
        entry(M::GET, "/api/v4/templates", catalog::TEMPLATE_LIST),
        entry(M::POST, "/api/v4/templates", catalog::TEMPLATE_CREATE),
        entry(M::GET, "/api/v4/templates/{id}", catalog::TEMPLATE_READ).owned_by(Template),
        entry(M::PATCH, "/api/v4/templates/{id}", catalog::TEMPLATE_UPDATE).owned_by(Template),
        entry(
            M::DELETE,
            "/api/v4/templates/{id}",
            catalog::TEMPLATE_DELETE,
        )
        .owned_by(Template),
        entry(
            M::POST,
            "/api/v4/templates/{id}/archive",
            catalog::TEMPLATE_ARCHIVE,
        )
        .owned_by(Template),
        entry(
            M::POST,
            "/api/v4/templates/{id}/unarchive",
            catalog::TEMPLATE_UNARCHIVE,
        )
        .owned_by(Template),
        entry(
            M::POST,
            "/api/v4/templates/{id}/expose",
            catalog::TEMPLATE_EXPOSE,
        )
        .owned_by(Template),
        // Keystores.
        entry(M::GET, "/api/v4/keystores", catalog::KEYSTORE_LIST),
        entry(M::POST, "/api/v4/keystores", catalog::KEYSTORE_CREATE),
        entry(M::GET, "/api/v4/keystores/{id}", catalog::KEYSTORE_READ).owned_by(Keystore),
        entry(M::PATCH, "/api/v4/keystores/{id}", catalog::KEYSTORE_UPDATE).owned_by(Keystore),
        entry(
            M::DELETE,
            "/api/v4/keystores/{id}",
            catalog::KEYSTORE_DELETE,
        )
        .owned_by(Keystore),
        entry(
            M::GET,
            "/api/v4/keystores/{id}/status",
            catalog::KEYSTORE_STATUS,
        )
        .owned_by(Keystore),
        entry(
            M::GET,
            "/api/v4/keystores/{id}/tasks",
            catalog::KEYSTORE_TASKS,
        )
        .owned_by(Keystore),
        entry(
            M::GET,
            "/api/v4/keystores/{id}/managed_keys",
            catalog::KEYSTORE_KEYS,
        )
        .owned_by(Keystore),
        entry(
            M::GET,
            "/api/v4/keystores/{id}/associated_resources",
            catalog::KEYSTORE_ASSOCIATED,
        )
        .owned_by(Keystore),
        // Managed keys.
        entry(M::GET, "/api/v4/managed_keys", catalog::KEY_LIST),
        entry(M::POST, "/api/v4/managed_keys", catalog::KEY_CREATE),
        entry(M::POST, "/api/v4/managed_keys/adopt", catalog::KEY_ADOPT),
        entry(M::GET, "/api/v4/managed_keys/{id}", catalog::KEY_READ).owned_by(ManagedKey),
        entry(M::PATCH, "/api/v4/managed_keys/{id}", catalog::KEY_UPDATE).owned_by(ManagedKey),
        entry(M::DELETE, "/api/v4/managed_keys/{id}", catalog::KEY_DELETE).owned_by(ManagedKey),
        entry(
            M::GET,
            "/api/v4/managed_keys/{id}/versions",
            catalog::KEY_VERSIONS,
        )
        .owned_by(ManagedKey),
        entry(
            M::GET,
            "/api/v4/managed_keys/{id}/status_in_keystores",
            catalog::KEY_STATUS_IN_KEYSTORES,
        )
        .owned_by(ManagedKey),
        entry(
            M::POST,
            "/api/v4/managed_keys/{id}/sync_status_in_keystores",
            catalog::KEY_SYNC,
        )
        .owned_by(ManagedKey),
        entry(
            M::POST,
            "/api/v4/managed_keys/{id}/update_from_template",
            catalog::KEY_UPDATE_FROM_TEMPLATE,
        )
        .owned_by(ManagedKey),
        entry(
            M::POST,
            "/api/v4/managed_keys/{id}/activate",
            catalog::KEY_ACTIVATE,
        )
        .owned_by(ManagedKey),
        entry(
            M::POST,
            "/api/v4/managed_keys/{id}/deactivate",
            catalog::KEY_DEACTIVATE,
        )
        .owned_by(ManagedKey),
        entry(
            M::POST,
            "/api/v4/managed_keys/{id}/destroy",
            catalog::KEY_DESTROY,
        )
        .owned_by(ManagedKey),
        entry(
            M::POST,
            "/api/v4/managed_keys/{id}/rotate",
            catalog::KEY_ROTATE,
        )
        .owned_by(ManagedKey),
        entry(
            M::POST,
            "/api/v4/managed_keys/{id}/compromise",
            catalog::KEY_COMPROMISE,
        )
        .owned_by(ManagedKey),
        entry(
            M::GET,
            "/api/v4/managed_keys/{id}/associated_resources",
            catalog::KEY_ASSOCIATED,
        )
        .owned_by(ManagedKey),
        // Approvals: approving carries out a destroy or a removal.
        entry(M::GET, "/api/v4/approvals", catalog::APPROVAL_LIST),
        entry(M::GET, "/api/v4/approvals/{id}", catalog::APPROVAL_READ),
        entry(
            M::POST,
            "/api/v4/approvals/{id}/approve",
            catalog::APPROVAL_APPROVE,
        ),
        entry(
            M::POST,
            "/api/v4/approvals/{id}/reject",
            catalog::APPROVAL_REJECT,
        ),
        // Audit.
        entry(M::GET, "/api/v4/audit_events", catalog::AUDIT_LIST),
        entry(
            M::GET,
            "/api/v4/audit_events/verification",
            catalog::AUDIT_VERIFY,
        ),
        // Access.
        entry(
            M::POST,
            "/api/v4/access/principals",
            write("keyplane.access.principals.write"),
        ),
        entry(
            M::GET,
            "/api/v4/access/principals",
            read("keyplane.access.principals.read"),
        ),
        entry(
            M::GET,
            "/api/v4/access/principals/{id}",
            read("keyplane.access.principals.read"),
        ),
        entry(
            M::DELETE,
            "/api/v4/access/principals/{id}",
            write("keyplane.access.principals.delete"),
        ),
        entry(
            M::POST,
            "/api/v4/access/principals/{id}/api_keys",
            write("keyplane.access.api-keys.write"),
        ),
        entry(
            M::GET,
            "/api/v4/access/principals/{id}/api_keys",
            read("keyplane.access.api-keys.read"),
        ),
        entry(
            M::POST,
            "/api/v4/access/api_keys/{id}/rotate",
            write("keyplane.access.api-keys.write"),
        ),
        entry(
            M::DELETE,
            "/api/v4/access/api_keys/{id}",
            write("keyplane.access.api-keys.delete"),
        ),
        entry(
            M::POST,
            "/api/v4/access/policies",
            write("keyplane.access.policies.write"),
        ),
        entry(
            M::GET,
            "/api/v4/access/policies",
            read("keyplane.access.policies.read"),
        ),
        entry(
            M::DELETE,
            "/api/v4/access/policies/{id}",
            write("keyplane.access.policies.delete"),
        ),
        // The seal: its bodies carry unseal secrets.
        entry(
            M::GET,
            "/api/v4/system/seal_status",
            read("keyplane.system.seal-status")
                .withholding_body()
                .answering_while_sealed(),
        ),
        entry(
            M::POST,
            "/api/v4/system/unseal",
            O::changes("keyplane.system.unseal", Warning)
                .withholding_body()
                .answering_while_sealed(),
        ),
        entry(
            M::POST,
            "/api/v4/system/seal",
            O::changes("keyplane.system.seal", Warning)
                .withholding_body()
                .answering_while_sealed(),
        ),
        entry(
            M::POST,
            "/api/v4/system/rotate_master_key",
            O::changes("keyplane.system.rotate-master-key", Warning)
                .withholding_body()
                .answering_while_sealed(),
        ),
        entry(
            M::GET,
            "/api/v4/openapi.json",
            read("keyplane.openapi.read"),
        ),
        // Readable while sealed: the seal's state is one of the metrics.
        entry(
            M::GET,
            "/metrics",
            read("keyplane.system.metrics").answering_while_sealed(),
        ),
        // Key Protect: key management changes managed keys; the data plane uses them.
        entry(M::GET, "/api/v2/keys", data("keyplane.data-plane.read")),
        entry(M::POST, "/api/v2/keys", kp("keyplane.key-protect.create")),
        entry(
            M::GET,
            "/api/v2/keys/{id}",
            data("keyplane.data-plane.read"),
        ),
        entry(
            M::DELETE,
            "/api/v2/keys/{id}",
            O::changes("keyplane.key-protect.delete", Critical).withholding_body(),
        ),
        entry(
            M::GET,
            "/api/v2/keys/{id}/metadata",
            data("keyplane.data-plane.read"),
        ),
        entry(
            M::PATCH,
            "/api/v2/keys/{id}",
            kp("keyplane.key-protect.move-key"),
        ),
        entry(
            M::GET,
            "/api/v2/key_rings",
            data("keyplane.data-plane.read"),
        ),
        entry(
            M::POST,
            "/api/v2/key_rings/{id}",
            kp("keyplane.key-protect.create-key-ring"),
        ),
        entry(
            M::DELETE,
            "/api/v2/key_rings/{id}",
            kp("keyplane.key-protect.delete-key-ring"),
        ),
        entry(
            M::GET,
            "/api/v2/keys/{id}/policies",
            data("keyplane.data-plane.read"),
        ),
        entry(
            M::PUT,
            "/api/v2/keys/{id}/policies",
            kp("keyplane.key-protect.set-key-policy"),
        ),
        entry(
            M::GET,
            "/api/v2/instance/policies",
            data("keyplane.data-plane.read"),
        ),
        // The instance's dual-authorization delete is the vault's dual control.
        entry(
            M::PUT,
            "/api/v2/instance/policies",
            O::changes("keyplane.key-protect.set-instance-policy", Critical).withholding_body(),
        ),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/setKeyForDeletion",
            O::changes("keyplane.key-protect.set-key-for-deletion", Critical).withholding_body(),
        ),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/unsetKeyForDeletion",
            kp("keyplane.key-protect.unset-key-for-deletion"),
        ),
        entry(
            M::DELETE,
            "/api/v2/keys/{id}/purge",
            O::changes("keyplane.key-protect.purge", Critical).withholding_body(),
        ),
        entry(
            M::POST,
            "/api/v2/keys/{id}/restore",
            kp("keyplane.key-protect.restore"),
        ),
        entry(
            M::GET,
            "/api/v2/keys/{id}/versions",
            data("keyplane.data-plane.read"),
        ),
        entry(
            M::POST,
            "/api/v2/keys/{id}/aliases/{alias}",
            kp("keyplane.key-protect.create-alias"),
        ),
        entry(
            M::DELETE,
            "/api/v2/keys/{id}/aliases/{alias}",
            kp("keyplane.key-protect.delete-alias"),
        ),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/wrap",
            data("keyplane.data-plane.wrap"),
        )
        .fast(DataPlaneAction::Wrap),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/unwrap",
            data("keyplane.data-plane.unwrap"),
        )
        .fast(DataPlaneAction::Unwrap),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/rewrap",
            data("keyplane.data-plane.rewrap"),
        )
        .fast(DataPlaneAction::Rewrap),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/wrap_batch",
            data("keyplane.data-plane.wrap_batch"),
        )
        .fast(DataPlaneAction::WrapBatch),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/unwrap_batch",
            data("keyplane.data-plane.unwrap_batch"),
        )
        .fast(DataPlaneAction::UnwrapBatch),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/enable",
            kp("keyplane.key-protect.enable"),
        ),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/disable",
            kp("keyplane.key-protect.disable"),
        ),
        entry(
            M::POST,
            "/api/v2/keys/{id}/actions/rotate",
            kp("keyplane.key-protect.rotate"),
        ),
        entry(
            M::POST,
            "/api/v2/import_token",
            kp("keyplane.key-protect.create-import-token"),
        ),
        entry(
            M::GET,
            "/api/v2/import_token",
            read("keyplane.key-protect.read-import-token").withholding_body(),
        ),
        // Outside the API: the token exchange (its body is an API key) and liveness.
        entry(M::POST, "/identity/token", catalog::SIGN_IN),
        entry(M::GET, "/health", read("keyplane.health.read")),
        entry(M::GET, "/ready", read("keyplane.ready.read")),
    ]
}

impl Operations {
    /// The table, with each operation's success status from the document.
    pub(crate) fn from_document(doc: &utoipa::openapi::OpenApi) -> Self {
        let mut by_method: HashMap<Method, matchit::Router<Arc<Routed>>> = HashMap::new();
        for e in table() {
            let success = documented(doc, &e.method, e.path)
                .map(|operation| {
                    operation
                        .responses
                        .responses
                        .keys()
                        .filter_map(|status| status.parse::<u16>().ok())
                        .filter(|status| (200..300).contains(status) && *status != 202)
                        .min()
                        .unwrap_or(200)
                })
                .unwrap_or(200);
            let routed = Arc::new(Routed {
                template: e.path,
                meaning: e.meaning,
                success,
                dialect: dialect_of(e.path),
                owner: e.owner,
                data_plane: e.data_plane,
                series: std::sync::OnceLock::new(),
            });
            by_method
                .entry(e.method.clone())
                .or_default()
                .insert(e.path, routed)
                .unwrap_or_else(|err| panic!("operation {} {}: {err}", e.method, e.path));
        }
        let unknown = |dialect| {
            Arc::new(Routed {
                template: "",
                meaning: Operation::reads(UNKNOWN),
                success: 200,
                dialect,
                owner: None,
                data_plane: None,
                series: std::sync::OnceLock::new(),
            })
        };
        let mut take = |method: Method| by_method.remove(&method).unwrap_or_default();
        Self {
            get: take(Method::GET),
            post: take(Method::POST),
            put: take(Method::PUT),
            patch: take(Method::PATCH),
            delete: take(Method::DELETE),
            unknown_uko: unknown(Dialect::Uko),
            unknown_key_protect: unknown(Dialect::KeyProtect),
        }
    }

    /// The operation a call is, or the unknown operation of its path's family. HEAD is GET.
    pub(crate) fn resolve(&self, method: &Method, path: &str) -> Resolved {
        let router = match *method {
            Method::POST => Some(&self.post),
            Method::GET | Method::HEAD => Some(&self.get),
            Method::PUT => Some(&self.put),
            Method::PATCH => Some(&self.patch),
            Method::DELETE => Some(&self.delete),
            _ => None,
        };
        if let Some(found) = router.and_then(|router| router.at(path).ok()) {
            let raw = found.params.get("id");
            let plain_id = raw.is_some_and(|raw| !raw.contains('%'));
            let id = raw.and_then(|raw| {
                if plain_id {
                    Uuid::try_parse(raw).ok()
                } else {
                    let decoded = percent_encoding::percent_decode_str(raw)
                        .decode_utf8()
                        .ok()?;
                    Uuid::try_parse(&decoded).ok()
                }
            });
            return Resolved {
                operation: found.value.clone(),
                id,
                plain_id,
            };
        }
        let operation = match dialect_of(path) {
            Dialect::Uko => self.unknown_uko.clone(),
            Dialect::KeyProtect => self.unknown_key_protect.clone(),
        };
        Resolved {
            operation,
            id: None,
            plain_id: false,
        }
    }
}

fn dialect_of(path: &str) -> Dialect {
    if path.starts_with(KEY_PROTECT) {
        Dialect::KeyProtect
    } else {
        Dialect::Uko
    }
}

fn documented<'a>(
    doc: &'a utoipa::openapi::OpenApi,
    method: &Method,
    path: &str,
) -> Option<&'a utoipa::openapi::path::Operation> {
    let item = doc.paths.paths.get(path)?;
    match *method {
        Method::GET => item.get.as_ref(),
        Method::POST => item.post.as_ref(),
        Method::PUT => item.put.as_ref(),
        Method::PATCH => item.patch.as_ref(),
        Method::DELETE => item.delete.as_ref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations() -> Operations {
        Operations::from_document(&crate::openapi())
    }

    #[test]
    fn every_documented_operation_is_described_and_nothing_else() {
        let doc = crate::openapi();
        let described: Vec<(Method, &str)> =
            table().into_iter().map(|e| (e.method, e.path)).collect();
        for (path, item) in &doc.paths.paths {
            for (method, operation) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ] {
                if operation.is_some() {
                    assert!(
                        described.contains(&(method.clone(), path.as_str())),
                        "{method} {path} is documented but has no operation"
                    );
                }
            }
        }
        for (method, path) in described {
            let outside_the_document = [
                "/identity/token",
                "/health",
                "/ready",
                "/api/v4/openapi.json",
            ];
            assert!(
                outside_the_document.contains(&path) || documented(&doc, &method, path).is_some(),
                "{method} {path} is described but not documented"
            );
        }
    }

    #[test]
    fn calls_resolve_to_their_operation_once() {
        let ops = operations();
        let resolve = |method: Method, path: &str| ops.resolve(&method, path);
        let id = Uuid::new_v4();
        let destroy = resolve(Method::POST, &format!("/api/v4/managed_keys/{id}/destroy"));
        assert_eq!(
            destroy.operation.meaning.action,
            "keyplane.managed-keys.write"
        );
        assert_eq!(destroy.operation.meaning.severity, Severity::Critical);
        assert_eq!(destroy.operation.owner, Some(Owner::ManagedKey));
        assert_eq!(destroy.id, Some(id));
        // An id that is no UUID names nothing.
        let odd = resolve(Method::GET, "/api/v4/managed_keys/abc");
        assert_eq!(odd.id, None);
        // An id read as its handler reads it, percent-decoded.
        let hex = id.to_string();
        let encoded = resolve(
            Method::GET,
            &format!(
                "/api/v4/managed_keys/%{:02X}{}",
                hex.as_bytes()[0],
                &hex[1..]
            ),
        );
        assert_eq!((encoded.id, encoded.plain_id), (Some(id), false));
        assert_eq!(odd.operation.owner, Some(Owner::ManagedKey));
        let rotate = resolve(Method::POST, "/api/v4/managed_keys/abc/rotate");
        assert_eq!(rotate.operation.meaning.severity, Severity::Warning);
        assert_eq!(rotate.operation.success, 200);
        assert_eq!(
            resolve(Method::POST, "/api/v4/vaults").operation.success,
            201
        );
        assert_eq!(
            resolve(Method::DELETE, "/api/v4/vaults/x")
                .operation
                .success,
            204
        );
        assert_eq!(
            resolve(Method::POST, "/api/v4/access/principals/x/api_keys")
                .operation
                .success,
            201
        );
        assert_eq!(
            resolve(Method::POST, "/api/v2/import_token")
                .operation
                .success,
            201
        );
        let approve = resolve(Method::POST, "/api/v4/approvals/x/approve");
        assert_eq!(approve.operation.meaning.severity, Severity::Critical);
        let wrap = resolve(Method::POST, "/api/v2/keys/k/actions/wrap");
        assert_eq!(wrap.operation.meaning.action, "keyplane.data-plane.wrap");
        assert!(wrap.operation.meaning.withholds_body);
        assert_eq!(wrap.operation.dialect, Dialect::KeyProtect);
        assert!(wrap.operation.data_plane.is_some());
        // HEAD is GET; unknown paths keep their family's dialect.
        let head = resolve(Method::HEAD, "/api/v4/vaults");
        assert_eq!(head.operation.meaning.action, "keyplane.vaults.list");
        assert_eq!(
            resolve(Method::GET, "/api/v2/nothing").operation.dialect,
            Dialect::KeyProtect
        );
        assert_eq!(
            resolve(Method::PUT, "/api/v4/vaults")
                .operation
                .meaning
                .action,
            "keyplane.api.unknown"
        );
        let unseal = resolve(Method::POST, "/api/v4/system/unseal");
        assert!(unseal.operation.meaning.while_sealed && unseal.operation.meaning.withholds_body);
        assert!(!destroy.operation.meaning.while_sealed);
    }
}
