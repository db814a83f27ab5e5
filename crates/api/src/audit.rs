//! The audit middleware: opens each request's audit scope and records what no store write did —
//! failed and denied calls, and data-plane calls with keys out of service.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use keyplane_core::audit::denials::DenialSource;
use keyplane_core::audit::{self, AuditScope, PendingEvent};

use crate::error::ApiError;
use crate::{AppState, Trace};

/// `keyplane.<resource>.<verb>` for a call, after UKO's Activity Tracker actions.
pub fn action_for(method: &Method, path: &str) -> String {
    if path == "/identity/token" {
        return "keyplane.identity.token".into();
    }
    let mut segments = path.trim_start_matches('/').split('/');
    let (api, resource) = (segments.next(), {
        segments.next();
        segments.next().unwrap_or("")
    });
    let rest: Vec<&str> = segments.collect();
    if api == Some("api") && path.starts_with("/api/v2/") {
        let verb = rest.last().copied().filter(|_| rest.len() >= 2);
        if !is_data_plane(method, path) {
            // Key management through the Key Protect API: it changes managed keys.
            let verb = match (method, verb) {
                (_, Some(action)) => action,
                (&Method::DELETE, None) => "delete",
                _ if resource == "import_token" => "create-import-token",
                _ => "create",
            };
            return format!("keyplane.key-protect.{verb}");
        }
        return format!(
            "keyplane.data-plane.{}",
            verb.unwrap_or(if *method == Method::GET {
                "read"
            } else {
                "call"
            })
        );
    }
    let resource = match resource {
        "managed_keys" => "managed-keys",
        "keystores" => "target-keystores",
        "templates" => "key-templates",
        "vaults" => "vaults",
        "system" => {
            return format!(
                "keyplane.system.{}",
                rest.first().unwrap_or(&"status").replace('_', "-")
            );
        }
        "audit_events" => "audit-events",
        "access" => {
            let what = rest.first().copied().unwrap_or("principals");
            let what = if rest.contains(&"api_keys") || what == "api_keys" {
                "api-keys"
            } else if what == "policies" {
                "policies"
            } else {
                "principals"
            };
            let verb = match *method {
                Method::GET => "read",
                Method::DELETE => "delete",
                _ => "write",
            };
            return format!("keyplane.access.{what}.{verb}");
        }
        other => other,
    };
    let verb = match *method {
        Method::GET if rest.is_empty() => "list",
        Method::GET => "read",
        Method::DELETE => "delete",
        _ => "write",
    };
    format!("keyplane.{resource}.{verb}")
}

/// Key Protect calls that use keys or read them, and change nothing.
fn is_data_plane(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v2/") else {
        return false;
    };
    if *method == Method::GET || *method == Method::HEAD {
        return !rest.starts_with("import_token");
    }
    rest.rsplit_once('/').is_some_and(|(head, action)| {
        head.ends_with("/actions")
            && matches!(
                action,
                "wrap" | "unwrap" | "rewrap" | "wrap_batch" | "unwrap_batch"
            )
    })
}

/// Request bodies that never reach an event at all: unseal secrets, data keys, API keys.
fn body_withheld(path: &str) -> bool {
    path.starts_with("/api/v2/") || path.starts_with("/api/v4/system/") || path == "/identity/token"
}

/// Runs `call` inside the request's audit scope, then records what no store write did.
pub(crate) async fn record<F, Fut>(state: &AppState, req: Request, call: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let method = req.method().clone();
    let req_route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // A clone of the URI shares its bytes: the path is only copied out if an event is written.
    let uri = req.uri().clone();
    let path = uri.path();
    let trace = req
        .extensions()
        .get::<Trace>()
        .map(|t| t.0.clone())
        .unwrap_or_default();
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let reading = method == Method::GET || method == Method::HEAD;
    // Data-plane calls change no state: recorded only when they fail or use a key out of service.
    let changes_state = !reading && !is_data_plane(&method, path);
    let (req, body) = if reading || body_withheld(path) {
        (req, None)
    } else {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, crate::extract::MAX_BODY_BYTES).await {
            Ok(bytes) => {
                let summary = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map(|v| audit::bounded_body(audit::redact(&v)))
                    .unwrap_or_else(|_| {
                        serde_json::json!(format!("{} bytes, not JSON", bytes.len()))
                    });
                (Request::from_parts(parts, Body::from(bytes)), Some(summary))
            }
            Err(_) => {
                return ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    keyplane_core::ErrorCode::PayloadTooLarge,
                    format!(
                        "the request body is larger than {} bytes",
                        crate::extract::MAX_BODY_BYTES
                    ),
                )
                .into_response();
            }
        }
    };
    let describe = |body: Option<serde_json::Value>| {
        let mut request = serde_json::json!({ "method": method.as_str(), "path": path });
        // A withheld body's path may carry secrets in its query too (an API key in a token URL).
        if let Some(query) = uri.query().filter(|_| !body_withheld(path)) {
            request["query"] =
                serde_json::Value::String(audit::truncated(query, audit::MAX_RECORDED_QUERY));
        }
        if let Some(body) = body {
            request["body"] = body;
        }
        request
    };
    // Most calls that change nothing are not recorded: their event is described only if needed.
    let (action, request) = if changes_state {
        (action_for(&method, path), describe(body))
    } else {
        (String::new(), serde_json::Value::Null)
    };
    let scope = AuditScope::new(PendingEvent {
        action,
        initiator: "anonymous".into(),
        target: None,
        vault_id: None,
        correlation_id: trace,
        source,
        request,
        success_status: state
            .operations
            .success_status(&method, req_route.as_deref()),
    });
    let response = audit::in_scope(scope.clone(), call(req)).await;
    let status = response.status().as_u16();
    let outcome = match status {
        // Throttled calls are not recorded one by one: an event each would let a flood of calls
        // become a flood of writes.
        429 => None,
        401 | 403 => Some("denied"),
        400.. => Some("failure"),
        // Changes are recorded by the write that made them; what changed nothing is recorded
        // when it is of note (a non-GET that wrote nothing, a key out of service in use).
        _ if changes_state && !scope.written() => Some("success"),
        _ if scope.noteworthy() => Some("success"),
        _ => None,
    };
    // The pending event is copied out only for a call that is recorded.
    let recorded = outcome.and_then(|o| scope.pending().map(|p| (o, p)));
    if let Some((outcome, mut pending)) = recorded {
        if status == 401 {
            // Anyone can send an unauthenticated call: its event keeps no body.
            pending.request = describe(None);
        }
        if !changes_state {
            pending.action = action_for(&method, path);
            pending.request = describe(None);
        }
        if outcome == "denied" {
            // A flood of denials from one source is recorded up to a bound, then counted.
            let source = if status == 401 {
                DenialSource::Address(pending.source)
            } else {
                DenialSource::Caller(pending.initiator.clone())
            };
            state.keyplane.record_denial(source, pending, status).await;
            return response;
        }
        let event = pending.finish(outcome, status);
        if let Err(e) = state.keyplane.record_audit_event(event).await {
            tracing::error!(error = %e, "an audit event could not be recorded");
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_activity_tracker_names() {
        let cases = [
            (
                Method::POST,
                "/api/v4/managed_keys",
                "keyplane.managed-keys.write",
            ),
            (
                Method::POST,
                "/api/v4/managed_keys/x/destroy",
                "keyplane.managed-keys.write",
            ),
            (
                Method::DELETE,
                "/api/v4/keystores/x",
                "keyplane.target-keystores.delete",
            ),
            (
                Method::PATCH,
                "/api/v4/templates/x",
                "keyplane.key-templates.write",
            ),
            (Method::GET, "/api/v4/vaults", "keyplane.vaults.list"),
            (Method::GET, "/api/v4/vaults/x", "keyplane.vaults.read"),
            (
                Method::POST,
                "/api/v4/system/rotate_master_key",
                "keyplane.system.rotate-master-key",
            ),
            (
                Method::POST,
                "/api/v2/keys/x/actions/unwrap",
                "keyplane.data-plane.unwrap",
            ),
        ];
        for (method, path, action) in cases {
            assert_eq!(action_for(&method, path), action, "{method} {path}");
        }
        let operations = crate::operation::Operations::from_document(&crate::openapi());
        let status = |method: Method, route: &str| operations.success_status(&method, Some(route));
        assert_eq!(status(Method::POST, "/api/v4/vaults"), 201);
        assert_eq!(
            status(Method::POST, "/api/v4/access/principals/{id}/api_keys"),
            201
        );
        assert_eq!(status(Method::POST, "/api/v2/import_token"), 201);
        assert_eq!(
            status(Method::POST, "/api/v4/managed_keys/{id}/rotate"),
            200
        );
        assert_eq!(status(Method::DELETE, "/api/v4/managed_keys/{id}"), 204);
        assert_eq!(status(Method::DELETE, "/api/v4/vaults/{id}"), 204);
    }
}
