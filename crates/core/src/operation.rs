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
