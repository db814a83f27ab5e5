//! What an API operation means, whatever wire carries it: its audit action, whether it reads,
//! changes or uses keys, how severe its event is, whether its request body may be recorded and
//! whether it answers while sealed. The edge resolves each call to one operation once; core
//! knows no URL. Who may call it is decided by the core service the operation calls, on the
//! resource it loads (`authz`).

/// What a call does to the estate, which decides when it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads; recorded only when it fails or is denied.
    Reads,
    /// Changes state; always recorded, with the write when there is one.
    Changes,
    /// Uses key material (the data plane); changes nothing, recorded when it fails, is denied
    /// or uses a key that is out of service.
    UsesKeys,
}

/// Severity as the Activity Tracker assigns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Normal,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The severity of an answer with `status` to an operation of this severity: 401, 403 and
    /// server failures are critical, refusals of a request's content warnings, whatever the
    /// operation.
    pub fn answered(self, status: u16) -> Self {
        match status {
            401 | 403 | 500 | 503 | 507 => Self::Critical,
            400 | 409 | 424 | 502 | 504 | 505 => Self::Warning,
            _ => self,
        }
    }
}

/// One operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// `keyplane.<resource>.<verb>`, after UKO's Activity Tracker actions.
    pub action: &'static str,
    pub effect: Effect,
    /// The severity of its event when it succeeds.
    pub severity: Severity,
    /// Its request body (and query) never reach an event: secrets, data keys, API keys.
    pub withholds_body: bool,
    /// It passes admission while the engine is sealed (the seal's own operations: status, unseal,
    /// seal, master key rotation, which answers `sealed` itself): every other operation
    /// uses keys or reveals key metadata.
    pub while_sealed: bool,
}

impl Operation {
    pub const fn reads(action: &'static str) -> Self {
        Self {
            action,
            effect: Effect::Reads,
            severity: Severity::Normal,
            withholds_body: false,
            while_sealed: false,
        }
    }

    pub const fn changes(action: &'static str, severity: Severity) -> Self {
        Self {
            action,
            effect: Effect::Changes,
            severity,
            withholds_body: false,
            while_sealed: false,
        }
    }

    /// A data-plane call: it uses a key's material and its bodies carry data keys.
    pub const fn uses_keys(action: &'static str) -> Self {
        Self {
            action,
            effect: Effect::UsesKeys,
            severity: Severity::Normal,
            withholds_body: true,
            while_sealed: false,
        }
    }

    pub const fn withholding_body(self) -> Self {
        Self {
            withholds_body: true,
            ..self
        }
    }

    pub const fn answering_while_sealed(self) -> Self {
        Self {
            while_sealed: true,
            ..self
        }
    }

    pub fn changes_state(&self) -> bool {
        self.effect == Effect::Changes
    }
}

/// Operations by name: the API's table routes its paths to them and the console runs them, so
/// a call means the same through either.
pub mod catalog {
    use super::Operation;
    use super::Severity::{Critical, Normal, Warning};

    const KEY_WRITE: Operation = Operation::changes("keyplane.managed-keys.write", Warning);
    const KEY_READING: Operation = Operation::reads("keyplane.managed-keys.read");
    /// `GET /api/v4/vaults`.
    pub const VAULT_LIST: Operation = Operation::reads("keyplane.vaults.list");
    /// `POST /api/v4/vaults`.
    pub const VAULT_CREATE: Operation = Operation::changes("keyplane.vaults.write", Normal);
    /// `GET /api/v4/vaults/{id}`.
    pub const VAULT_READ: Operation = Operation::reads("keyplane.vaults.read");
    /// `PATCH /api/v4/vaults/{id}`.
    pub const VAULT_UPDATE: Operation = Operation::changes("keyplane.vaults.write", Normal);
    /// `DELETE /api/v4/vaults/{id}`.
    pub const VAULT_DELETE: Operation = Operation::changes("keyplane.vaults.delete", Critical);
    /// `GET /api/v4/vaults/{id}/dual_control`.
    pub const DUAL_CONTROL_READ: Operation = Operation::reads("keyplane.vaults.read");
    /// `PUT /api/v4/vaults/{id}/dual_control`.
    pub const DUAL_CONTROL_SET: Operation = Operation::changes("keyplane.vaults.write", Normal);
    /// `GET /api/v4/templates`.
    pub const TEMPLATE_LIST: Operation = Operation::reads("keyplane.key-templates.list");
    /// `POST /api/v4/templates`.
    pub const TEMPLATE_CREATE: Operation =
        Operation::changes("keyplane.key-templates.write", Normal);
    /// `GET /api/v4/templates/{id}`.
    pub const TEMPLATE_READ: Operation = Operation::reads("keyplane.key-templates.read");
    /// `PATCH /api/v4/templates/{id}`.
    pub const TEMPLATE_UPDATE: Operation =
        Operation::changes("keyplane.key-templates.write", Normal);
    /// `DELETE /api/v4/templates/{id}`.
    pub const TEMPLATE_DELETE: Operation =
        Operation::changes("keyplane.key-templates.delete", Normal);
    /// `POST /api/v4/templates/{id}/archive`.
    pub const TEMPLATE_ARCHIVE: Operation =
        Operation::changes("keyplane.key-templates.write", Normal);
    /// `POST /api/v4/templates/{id}/unarchive`.
    pub const TEMPLATE_UNARCHIVE: Operation =
        Operation::changes("keyplane.key-templates.write", Normal);
    /// `POST /api/v4/templates/{id}/expose`.
    pub const TEMPLATE_EXPOSE: Operation =
        Operation::changes("keyplane.key-templates.write", Normal);
    /// `GET /api/v4/keystores`.
    pub const KEYSTORE_LIST: Operation = Operation::reads("keyplane.target-keystores.list");
    /// `POST /api/v4/keystores`.
    pub const KEYSTORE_CREATE: Operation =
        Operation::changes("keyplane.target-keystores.write", Normal);
    /// `GET /api/v4/keystores/{id}`.
    pub const KEYSTORE_READ: Operation = Operation::reads("keyplane.target-keystores.read");
    /// `PATCH /api/v4/keystores/{id}`.
    pub const KEYSTORE_UPDATE: Operation =
        Operation::changes("keyplane.target-keystores.write", Normal);
    /// `DELETE /api/v4/keystores/{id}`.
    pub const KEYSTORE_DELETE: Operation =
        Operation::changes("keyplane.target-keystores.delete", Critical);
    /// `GET /api/v4/keystores/{id}/status`.
    pub const KEYSTORE_STATUS: Operation = Operation::reads("keyplane.target-keystores.read");
    /// `GET /api/v4/keystores/{id}/tasks`.
    pub const KEYSTORE_TASKS: Operation = Operation::reads("keyplane.target-keystores.read");
    /// `GET /api/v4/keystores/{id}/managed_keys`.
    pub const KEYSTORE_KEYS: Operation = Operation::reads("keyplane.target-keystores.read");
    /// `GET /api/v4/keystores/{id}/associated_resources`.
    pub const KEYSTORE_ASSOCIATED: Operation = Operation::reads("keyplane.target-keystores.read");
    /// `GET /api/v4/managed_keys`.
    pub const KEY_LIST: Operation = Operation::reads("keyplane.managed-keys.list");
    /// `POST /api/v4/managed_keys`.
    pub const KEY_CREATE: Operation = KEY_WRITE;
    /// `POST /api/v4/managed_keys/adopt`: a key recorded by reference to its keystore copies.
    pub const KEY_ADOPT: Operation = Operation::changes("keyplane.managed-keys.adopt", Critical);
    /// `GET /api/v4/managed_keys/{id}`.
    pub const KEY_READ: Operation = KEY_READING;
    /// `PATCH /api/v4/managed_keys/{id}`.
    pub const KEY_UPDATE: Operation = KEY_WRITE;
    /// `DELETE /api/v4/managed_keys/{id}`.
    pub const KEY_DELETE: Operation = Operation::changes("keyplane.managed-keys.delete", Critical);
    /// `GET /api/v4/managed_keys/{id}/versions`.
    pub const KEY_VERSIONS: Operation = KEY_READING;
    /// `GET /api/v4/managed_keys/{id}/status_in_keystores`.
    pub const KEY_STATUS_IN_KEYSTORES: Operation = KEY_READING;
    /// `POST /api/v4/managed_keys/{id}/sync_status_in_keystores`.
    pub const KEY_SYNC: Operation = KEY_WRITE;
    /// `POST /api/v4/managed_keys/{id}/update_from_template`.
    pub const KEY_UPDATE_FROM_TEMPLATE: Operation = KEY_WRITE;
    /// `POST /api/v4/managed_keys/{id}/activate`.
    pub const KEY_ACTIVATE: Operation = KEY_WRITE;
    /// `POST /api/v4/managed_keys/{id}/deactivate`.
    pub const KEY_DEACTIVATE: Operation = KEY_WRITE;
    /// `POST /api/v4/managed_keys/{id}/destroy`.
    pub const KEY_DESTROY: Operation = Operation::changes("keyplane.managed-keys.write", Critical);
    /// `POST /api/v4/managed_keys/{id}/rotate`.
    pub const KEY_ROTATE: Operation = KEY_WRITE;
    /// `POST /api/v4/managed_keys/{id}/compromise`.
    pub const KEY_COMPROMISE: Operation = KEY_WRITE;
    /// `GET /api/v4/managed_keys/{id}/associated_resources`.
    pub const KEY_ASSOCIATED: Operation = KEY_READING;
    /// `GET /api/v4/approvals`.
    pub const APPROVAL_LIST: Operation = Operation::reads("keyplane.approvals.list");
    /// `GET /api/v4/approvals/{id}`.
    pub const APPROVAL_READ: Operation = Operation::reads("keyplane.approvals.read");
    /// `POST /api/v4/approvals/{id}/approve`.
    pub const APPROVAL_APPROVE: Operation =
        Operation::changes("keyplane.approvals.write", Critical);
    /// `POST /api/v4/approvals/{id}/reject`.
    pub const APPROVAL_REJECT: Operation = Operation::changes("keyplane.approvals.write", Normal);
    /// `GET /api/v4/audit_events`.
    pub const AUDIT_LIST: Operation = Operation::reads("keyplane.audit-events.list");
    /// `GET /api/v4/audit_events/verification`.
    pub const AUDIT_VERIFY: Operation = Operation::reads("keyplane.audit-events.read");
    /// `POST /identity/token`, and a sign-in to the console: a credential checked.
    pub const SIGN_IN: Operation =
        Operation::changes("keyplane.identity.token", Normal).withholding_body();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_raise_severity_and_successes_keep_the_operations() {
        let destroy = Operation::changes("keyplane.managed-keys.write", Severity::Critical);
        assert_eq!(destroy.severity.answered(200), Severity::Critical);
        let list = Operation::reads("keyplane.vaults.list");
        assert_eq!(list.severity.answered(200), Severity::Normal);
        assert_eq!(list.severity.answered(401), Severity::Critical);
        assert_eq!(list.severity.answered(409), Severity::Warning);
        assert_eq!(list.severity.answered(404), Severity::Normal);
    }
}
