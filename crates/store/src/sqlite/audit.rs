//! The audit chain in SQLite: append (hash over the previous event), list, verify.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use crate::common::{ChainCheck, hash_of};
use keyplane_core::audit::{AuditEvent, GENESIS_HASH};
use keyplane_core::error::Result;
use keyplane_core::model::Page;
use keyplane_core::ports::AuditRecords;
use keyplane_core::ports::{AuditChainReport, AuditQuery};

use super::SqliteStore;
use super::rows::{col, ts, ts_col, uuid_col};
use super::writer::sql_err;

/// Appends `event` after the newest one, linking and hashing it.
pub(crate) fn append(conn: &Connection, mut event: AuditEvent) -> Result<()> {
    let last: Option<(i64, String)> = super::one(
        conn,
        "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((col(r, "seq")?, col(r, "hash")?)),
    )?;
    let (seq, prev_hash) = last.map_or((1, GENESIS_HASH.to_owned()), |(s, h)| (s + 1, h));
    event.seq = seq;
    event.prev_hash = prev_hash;
    event.hash = hash_of(&event);
    conn.prepare_cached(
        "INSERT INTO audit_events (seq, id, at, action, outcome, status, severity, initiator, target, vault_id,
                                   correlation_id, source, request, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            event.seq,
            event.id.to_string(),
            ts(&event.at),
            event.action,
            event.outcome,
            event.status,
            event.severity,
            event.initiator,
            event.target,
            event.vault_id.map(|v| v.to_string()),
            event.correlation_id,
            event.source,
            event.request.to_string(),
            event.prev_hash,
            event.hash,
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

fn event_from_row(r: &rusqlite::Row<'_>) -> Result<AuditEvent> {
    let vault: Option<String> = col(r, "vault_id")?;
    let request: String = col(r, "request")?;
    Ok(AuditEvent {
        seq: col(r, "seq")?,
        id: uuid_col(r, "id")?,
        at: ts_col(r, "at")?,
        action: col(r, "action")?,
        outcome: col(r, "outcome")?,
        status: col(r, "status")?,
        severity: col(r, "severity")?,
        initiator: col(r, "initiator")?,
        target: col(r, "target")?,
        vault_id: vault
            .map(|v| uuid::Uuid::parse_str(&v))
            .transpose()
            .map_err(|_| super::rows::corrupt("vault_id"))?,
        correlation_id: col(r, "correlation_id")?,
        source: col(r, "source")?,
        request: serde_json::from_str(&request).map_err(|_| super::rows::corrupt("request"))?,
        prev_hash: col(r, "prev_hash")?,
        hash: col(r, "hash")?,
    })
}

const COLUMNS: &str = "seq, id, at, action, outcome, status, severity, initiator, target, vault_id, correlation_id, source, request, prev_hash, hash";

/// Events matching `q`, oldest first.
pub(crate) fn list(conn: &Connection, q: &AuditQuery) -> Result<Page<AuditEvent>> {
    let mut filters = vec!["seq > ?1".to_owned()];
    let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(q.after_seq)];
    let mut add = |sql: &str, value: Box<dyn rusqlite::ToSql>| {
        values.push(value);
        filters.push(sql.replace('?', &format!("?{}", values.len())));
    };
    if let Some(a) = &q.action {
        add("action = ?", Box::new(a.clone()));
    }
    if let Some(o) = &q.outcome {
        add("outcome = ?", Box::new(o.clone()));
    }
    if let Some(i) = &q.initiator {
        add("initiator = ?", Box::new(i.clone()));
    }
    if let Some(v) = q.vault_id {
        add("vault_id = ?", Box::new(v.to_string()));
    }
    if let Some(t) = q.since {
        add("at >= ?", Box::new(ts(&t)));
    }
    if let Some(t) = q.until {
        add("at < ?", Box::new(ts(&t)));
    }
    let filter = filters.join(" AND ");
    let params = rusqlite::params_from_iter(values.iter().map(|v| v.as_ref()));
    // Unfiltered, the chain's own numbering counts it: sequence numbers run from 1 without a
    // gap (`verify` holds the chain to it).
    let count = if filters.len() == 1 {
        "SELECT MAX(COALESCE((SELECT seq FROM audit_events ORDER BY seq DESC LIMIT 1), 0) - ?1, 0)"
            .to_owned()
    } else {
        format!("SELECT COUNT(*) FROM audit_events WHERE {filter}")
    };
    let total_count: i64 = conn
        .query_row(&count, params.clone(), |r| r.get(0))
        .map_err(sql_err)?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE {filter} ORDER BY seq LIMIT {} OFFSET {}",
            q.paging.limit, q.paging.offset
        ))
        .map_err(sql_err)?;
    let mut rows = stmt.query(params).map_err(sql_err)?;
    let mut items = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        items.push(event_from_row(row)?);
    }
    Ok(Page { items, total_count })
}

/// Walks the whole chain: each event must link to the one before and hash to what it says.
pub(crate) fn verify(conn: &Connection) -> Result<AuditChainReport> {
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM audit_events ORDER BY seq"))
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut check = ChainCheck::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let event = match event_from_row(row) {
            Ok(e) => Ok(e),
            Err(_) => Err(col(row, "seq")?),
        };
        if let Some(broken) = check.next(event) {
            return Ok(broken);
        }
    }
    Ok(check.finish())
}

#[async_trait]
impl AuditRecords for SqliteStore {
    async fn append_audit_event(&self, event: AuditEvent) -> Result<()> {
        self.writer.write(move |c| append(c, event)).await
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Page<AuditEvent>> {
        self.reader.with(|c| list(c, query))
    }

    async fn verify_audit_chain(&self) -> Result<AuditChainReport> {
        self.reader.with(verify)
    }
}
