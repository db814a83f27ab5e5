//! The audit middleware: opens each request's audit scope, bounds the call by its deadline, and
//! records what no store write did — failed, denied and timed-out calls, and data-plane calls
//! with keys out of service.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::audit::denials::DenialSource;
use keyplane_core::audit::{self, AuditScope, PendingEvent};

use crate::AppState;
use crate::error::ApiError;
use crate::operation::Routed;

/// The access log's target: one line per API call (`KEYPLANE_LOG=keyplane::access=off` turns
/// it off). It names the route, never the path's query or body.
pub(crate) const ACCESS_LOG: &str = "keyplane::access";

/// Runs `call` inside the request's audit scope, within the request's deadline, then records
/// what no store write did. A change's body is added to its event once the caller is
/// authenticated (`read_body`), so what anyone can send unauthenticated never reaches the trail.
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
    let started = std::time::Instant::now();
    // The access log's line, when it is on (a cheap check of the log's filter).
    let access_log = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
        .then(|| (trace.clone(), method.clone()));
    let describe = || {
        let mut request = serde_json::json!({ "method": method.as_str(), "path": path });
        // A withheld body's path may carry secrets in its query too (an API key in a token URL).
        if let Some(query) = uri.query().filter(|_| !operation.withholds_body) {
            request["query"] =
                serde_json::Value::String(audit::truncated(query, audit::MAX_RECORDED_QUERY));
        }
        request
    };
    // Most calls that change nothing are not recorded: their event is described only if needed.
    let request = if changes_state {
        describe()
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
    // The deadline bounds the call inside its scope, so a change cut off is still recorded.
    let response = tokio::time::timeout(
        state.request_timeout,
        audit::in_scope(scope.clone(), call(req)),
    )
    .await
    .unwrap_or_else(|_| StatusCode::REQUEST_TIMEOUT.into_response());
    let status = response.status().as_u16();
    if let Some((correlation_id, method)) = access_log {
        let caller = scope.initiator();
        tracing::info!(
            target: ACCESS_LOG,
            correlation_id,
            method = method.as_str(),
            route = routed.template,
            operation = operation.action,
            caller = caller.as_deref().unwrap_or("anonymous"),
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "call answered"
        );
    }
    let outcome = match status {
        // Throttled calls are not recorded one by one: an event each would let a flood of calls
        // become a flood of writes.
        429 => None,
        // A call that ran out of time before anyone was authenticated changed nothing and names
        // no one; recording it would let anyone write to the trail by stalling.
        408 if !scope.named() => None,
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
        if !changes_state {
            pending.request = describe();
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

/// Reads the body of a change whose operation lets it be recorded and adds its summary (secrets
/// redacted, size bounded) to the call's event; the request goes on with the same bytes. Called
/// once the caller is authenticated.
pub(crate) async fn read_body(routed: &Routed, req: Request) -> Result<Request, Response> {
    if !routed.meaning.changes_state() || routed.meaning.withholds_body {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, crate::extract::MAX_BODY_BYTES).await else {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            keyplane_core::ErrorCode::PayloadTooLarge,
            format!(
                "the request body is larger than {} bytes",
                crate::extract::MAX_BODY_BYTES
            ),
        )
        .into_response());
    };
    let summary = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map(|v| audit::bounded_body(audit::redact(&v)))
        .unwrap_or_else(|_| serde_json::json!(format!("{} bytes, not JSON", bytes.len())));
    audit::attach_body(summary);
    Ok(Request::from_parts(parts, Body::from(bytes)))
}
