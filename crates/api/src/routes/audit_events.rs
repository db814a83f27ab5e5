//! The audit trail, for auditors (Keyplane's own endpoint).

use axum::Json;
use axum::extract::State;
use keyplane_core::audit::AuditEvent;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::RawQuery;
use crate::params::{self, Params};
use crate::{AppState, Caller};

const PATH: &str = "/api/v4/audit_events";

/// List audit events, oldest first.
#[utoipa::path(get, path = "/api/v4/audit_events", tag = "audit",
    params(("limit" = Option<u32>, Query), ("offset" = Option<u64>, Query), ("after_seq" = Option<i64>, Query),
           ("action" = Option<String>, Query), ("outcome" = Option<String>, Query),
           ("initiator" = Option<String>, Query), ("vault.id" = Option<String>, Query),
           ("since" = Option<String>, Query), ("until" = Option<String>, Query)),
    responses((status = 200, description = "AuditEventList", body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<params::ListBody<AuditEvent>>> {
    let query = params::audit_query(&Params::new(&q))?;
    let page = s.keyplane.list_audit_events(&caller, &query).await?;
    Ok(Json(params::envelope(
        &s.links,
        PATH,
        &q,
        query.paging,
        page.total_count,
        "audit_events",
        page.items,
    )))
}

/// Walks the whole audit chain (an extension): whether every event links to the one before it
/// and matches its hash, and where the first one that does not is.
#[utoipa::path(get, path = "/api/v4/audit_events/verification", tag = "audit",
    responses((status = 200, description = "AuditChainVerification", body = Object)))]
pub(crate) async fn verification(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<serde_json::Value>> {
    let report = s.keyplane.verify_audit_chain(&caller).await?;
    Ok(Json(serde_json::json!({
        "intact": report.first_broken.is_none(),
        "events": report.events,
        "first_broken": report.first_broken,
        "reason": report.reason,
        "head": report.head,
    })))
}
