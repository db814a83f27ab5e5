//! The audit trail: one event per state-changing call, per denied call, and per data-plane call
//! with a key that is not active. Stores append events to a hash chain — a successful change's
//! event in the same transaction as the change.
//!
//! The API layer opens an [`AuditScope`] around each request; a store writing inside that scope
//! takes the scope's event and appends it with the write ([`take_for_write`]). What no write took
//! (failures, denials, reads of note) the API layer appends on its own afterwards.

pub mod denials;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keystore_types::is_secret_field;

/// One audit event as stored. `hash` covers every other field, `prev_hash` included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: i64,
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// `keyplane.<resource>.<verb>`, e.g. `keyplane.managed-keys.write`.
    pub action: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    pub status: u16,
    /// `normal`, `warning` or `critical`.
    pub severity: String,
    pub initiator: String,
    /// `<resource>/<id>` when known.
    pub target: Option<String>,
    pub vault_id: Option<Uuid>,
    pub correlation_id: String,
    /// The client's address.
    pub source: Option<String>,
    /// Method, path and the body with secrets replaced by `[redacted]`.
    pub request: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of the chain before its first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEvent {
    /// The bytes the event's hash covers: the event as JSON with `hash` empty.
    pub fn hashed_bytes(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.hash = String::new();
        serde_json::to_vec(&copy).unwrap_or_default()
    }
}

/// What a call changes or uses: `<resource>/<id>` once written out.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub resource: &'static str,
    pub id: Uuid,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.resource, self.id)
    }
}

/// What a request's event says before it is written. Kept cheap to build, as every call opens
/// one and most calls are never recorded: text is written out only when the event is.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub action: &'static str,
    /// The severity of the operation's event when it succeeds (refusals raise it).
    pub severity: crate::operation::Severity,
    pub initiator: String,
    pub target: Option<Target>,
    pub vault_id: Option<Uuid>,
    pub correlation_id: String,
    pub source: Option<std::net::IpAddr>,
    pub request: serde_json::Value,
    /// The status a success answers with (the event written with the change carries it).
    pub success_status: u16,
}

impl PendingEvent {
    /// The event, finished (chain fields are filled in by the store).
    pub fn finish(self, outcome: &str, status: u16) -> AuditEvent {
        let severity = self.severity.answered(status).as_str().to_owned();
        AuditEvent {
            seq: 0,
            id: Uuid::now_v7(),
            // Milliseconds: what stores keep, so the hash covers exactly what is read back.
            at: Utc::now().trunc_subsecs(3),
            action: self.action.to_owned(),
            outcome: outcome.to_owned(),
            status,
            severity,
            initiator: self.initiator,
            target: self.target.map(|t| t.to_string()),
            vault_id: self.vault_id,
            correlation_id: self.correlation_id,
            source: self.source.map(|ip| ip.to_string()),
            request: self.request,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

/// Field names whose values never reach an event, whatever resource they belong to.
const ALWAYS_REDACTED: &[&str] = &[
    "password",
    "passphrase",
    "pin",
    "api_key",
    "apikey",
    "token",
    "plaintext",
    "plaintexts",
    "ciphertext",
    "ciphertexts",
];

/// Longest query string an event keeps, in bytes.
pub const MAX_RECORDED_QUERY: usize = 1024;
/// Longest request body an event keeps, as JSON text, in bytes.
pub const MAX_RECORDED_BODY: usize = 4096;

/// `text` cut to at most `max` bytes (on a character boundary), saying how long it was.
pub fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated: {} bytes in all]", &text[..end], text.len())
}

/// A redacted body as an event keeps it: whole when small, else the start of its JSON text.
pub fn bounded_body(body: serde_json::Value) -> serde_json::Value {
    let text = body.to_string();
    if text.len() <= MAX_RECORDED_BODY {
        return body;
    }
    serde_json::Value::String(truncated(&text, MAX_RECORDED_BODY))
}

/// A request body with every secret replaced by `[redacted]`.
pub fn redact(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let secret = is_secret_field(k)
                    || ALWAYS_REDACTED.contains(&k.as_str())
                    || k.contains("secret")
                    || k.contains("password");
                let v = if secret {
                    serde_json::Value::String("[redacted]".into())
                } else {
                    redact(v)
                };
                (k.clone(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(items) => items.iter().map(redact).collect(),
        other => other.clone(),
    }
}

#[derive(Debug, Default)]
struct ScopeState {
    pending: Option<PendingEvent>,
    written: bool,
    noteworthy: bool,
    /// The caller was authenticated and named.
    named: bool,
}

/// The audit context of one request.
#[derive(Debug, Default)]
pub struct AuditScope {
    state: Mutex<ScopeState>,
}

impl AuditScope {
    pub fn new(pending: PendingEvent) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ScopeState {
                pending: Some(pending),
                written: false,
                noteworthy: false,
                named: false,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ScopeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names the caller once authenticated.
    pub fn set_initiator(&self, initiator: &str) {
        let mut state = self.state();
        state.named = true;
        if let Some(p) = state.pending.as_mut() {
            p.initiator = initiator.to_owned();
        }
    }

    /// Who made the call, once authenticated.
    pub fn initiator(&self) -> Option<String> {
        let state = self.state();
        state
            .pending
            .as_ref()
            .filter(|_| state.named)
            .map(|p| p.initiator.clone())
    }

    /// Whether the caller was authenticated (and named) before the call ended.
    pub fn named(&self) -> bool {
        self.state().named
    }

    /// Whether a store wrote the event with a change.
    pub fn written(&self) -> bool {
        self.state().written
    }

    /// Whether the call must be recorded even though it changed nothing.
    pub fn noteworthy(&self) -> bool {
        self.state().noteworthy
    }

    /// The event as it stands, to be written by the API layer.
    pub fn pending(&self) -> Option<PendingEvent> {
        self.state().pending.clone()
    }
}

tokio::task_local! {
    static SCOPE: Arc<AuditScope>;
}

/// Runs `f` with `scope` as the request's audit scope.
pub async fn in_scope<F: std::future::Future>(scope: Arc<AuditScope>, f: F) -> F::Output {
    SCOPE.scope(scope, f).await
}

/// Names the caller of the request, once authenticated.
pub fn name_initiator(initiator: &str) {
    let _ = SCOPE.try_with(|scope| scope.set_initiator(initiator));
}

/// Adds the request's body, as its event records it (read once the caller is authenticated).
pub fn attach_body(body: serde_json::Value) {
    let _ = SCOPE.try_with(|scope| {
        if let Some(p) = scope.state().pending.as_mut()
            && let Some(request) = p.request.as_object_mut()
        {
            request.insert("body".into(), body);
        }
    });
}

/// Names what a store write changes (called by stores before they write).
pub fn note_target(resource: &'static str, id: Uuid, vault_id: Option<Uuid>) {
    let _ = SCOPE.try_with(|scope| {
        let mut state = scope.state();
        if state.written {
            return;
        }
        if let Some(p) = state.pending.as_mut() {
            p.target = Some(Target { resource, id });
            if vault_id.is_some() {
                p.vault_id = vault_id;
            }
        }
    });
}

/// The request's success event, for a store to append in the transaction of its write; `None`
/// outside a scope or once taken. If that transaction fails, the event goes with it and the
/// API layer records the failure.
pub fn take_for_write() -> Option<AuditEvent> {
    SCOPE
        .try_with(|scope| {
            let mut state = scope.state();
            if state.written {
                return None;
            }
            let pending = state.pending.clone()?;
            state.written = true;
            let status = pending.success_status;
            Some(pending.finish("success", status))
        })
        .ok()
        .flatten()
}

/// Sets the status the request's success answers with, where the operation decides it: a
/// request that awaits approval answers 202, not the operation's usual success.
pub fn answers_with(status: u16) {
    let _ = SCOPE.try_with(|scope| {
        if let Some(p) = scope.state().pending.as_mut() {
            p.success_status = status;
        }
    });
}

/// Asks for the request to be recorded although it changes nothing (e.g. a data-plane call with
/// a deactivated key).
pub fn mark_noteworthy() {
    let _ = SCOPE.try_with(|scope| scope.state().noteworthy = true);
}

/// Forgets that the event was written (its transaction failed).
pub fn write_failed() {
    let _ = SCOPE.try_with(|scope| scope.state().written = false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let body = json!({
            "name": "aws",
            "aws_access_key_id": "AKIA",
            "aws_secret_access_key": "s3cr3t",
            "nested": [{"azure_service_principal_password": "p", "passphrase": "x", "ok": 1}],
        });
        let r = redact(&body);
        assert_eq!(r["aws_secret_access_key"], "[redacted]");
        assert_eq!(
            r["nested"][0]["azure_service_principal_password"],
            "[redacted]"
        );
        assert_eq!(r["nested"][0]["passphrase"], "[redacted]");
        assert_eq!(r["nested"][0]["ok"], 1);
        assert_eq!(r["name"], "aws");
        assert!(!r.to_string().contains("s3cr3t"));
    }
}
