//! The audit middleware: opens each request's audit scope and records what no store write did —
//! failed and denied calls, and data-plane calls with keys out of service.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use keyplane_core::audit::denials::DenialSource;
use keyplane_core::audit::{self, AuditScope, PendingEvent};

use crate::AppState;
use crate::error::ApiError;
use crate::operation::Routed;

/// Runs `call` inside the request's audit scope, then records what no store write did.
pub(crate) async fn record<F, Fut>(
    state: &AppState,
    routed: &Routed,
    trace: String,
    req: Request,
    call: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let (operation, success_status) = (routed.meaning, routed.success);
    let method = req.method().clone();
    // A clone of the URI shares its bytes: the path is only copied out if an event is written.
    let uri = req.uri().clone();
    let path = uri.path();
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let changes_state = operation.changes_state();
    let (req, body) = if !changes_state || operation.withholds_body {
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
        if let Some(query) = uri.query().filter(|_| !operation.withholds_body) {
            request["query"] =
                serde_json::Value::String(audit::truncated(query, audit::MAX_RECORDED_QUERY));
        }
        if let Some(body) = body {
            request["body"] = body;
        }
        request
    };
    // Most calls that change nothing are not recorded: their event is described only if needed.
    let request = if changes_state {
        describe(body)
    } else {
        serde_json::Value::Null
    };
    let scope = AuditScope::new(PendingEvent {
        action: operation.action,
        severity: operation.severity,
        initiator: "anonymous".into(),
        target: None,
        vault_id: None,
        correlation_id: trace,
        source,
        request,
        success_status,
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
