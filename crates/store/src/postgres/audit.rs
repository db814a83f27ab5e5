//! The audit chain in PostgreSQL: append (hash over the previous event), list, verify.
//!
//! Appends run under a transaction-scoped advisory lock, held until the appending group
//! commits: whatever node appends, sequence numbers and hashes are assigned one group at a time,
//! each over the chain's end as committed.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use futures::TryStreamExt;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::common::{ChainCheck, hash_of};
use keyplane_core::audit::{AuditEvent, GENESIS_HASH};
use keyplane_core::error::Result;
use keyplane_core::model::Page;
use keyplane_core::ports::{AuditChainReport, AuditQuery, AuditRecords};

use super::rows::{col, corrupt, ts, ts_col, uuid_col};
use super::writer::{Conn, Touches};
use super::{PostgresStore, all_once, db_err, one_once};

/// The advisory lock key appends run under ("keyaudit" in ASCII, as an integer).
const AUDIT_CHAIN_LOCK: i64 = 0x6b65_7961_7564_6974;

/// A group's events in one statement, one array per column.
const INSERT: &str = "INSERT INTO audit_events (seq, id, at, action, outcome, status, severity, initiator, target, vault_id,
                                   correlation_id, source, request, prev_hash, hash)
     SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::bigint[],
                          $7::text[], $8::text[], $9::text[], $10::uuid[], $11::text[], $12::text[], $13::text[],
                          $14::text[], $15::text[])";

/// Appends `events`, in order, after the newest one, linking and hashing each. Runs inside the
/// group's transaction, after its writes: the chain stays locked until the group commits.
pub(crate) async fn append_all(c: &Conn, mut events: Vec<AuditEvent>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let lock = c
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await
        .map_err(db_err)?;
    let end = c
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .await
        .map_err(db_err)?;
    // Sent together: the server takes the lock, then reads the chain's end as committed.
    let (_, last) = futures::future::try_join(
        c.execute(&lock, &[&AUDIT_CHAIN_LOCK]),
        c.query_opt(&end, &[]),
    )
    .await
    .map_err(db_err)?;
    let last: Option<(i64, String)> = last
        .map(|r| Ok::<_, keyplane_core::Error>((col(&r, "seq")?, col(&r, "hash")?)))
        .transpose()?;
    let (mut seq, mut prev_hash) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
    for event in &mut events {
        seq += 1;
        event.seq = seq;
        event.prev_hash = prev_hash;
        event.hash = hash_of(event);
        prev_hash = event.hash.clone();
    }
    let column = |f: fn(&AuditEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
    let ats: Vec<chrono::DateTime<chrono::Utc>> = events.iter().map(|e| ts(&e.at)).collect();
    let statuses: Vec<i64> = events.iter().map(|e| i64::from(e.status)).collect();
    let targets: Vec<Option<String>> = events.iter().map(|e| e.target.clone()).collect();
    let vaults: Vec<Option<uuid::Uuid>> = events.iter().map(|e| e.vault_id).collect();
    let sources: Vec<Option<String>> = events.iter().map(|e| e.source.clone()).collect();
    let (actions, outcomes, severities, initiators) = (
        column(|e| e.action.clone()),
        column(|e| e.outcome.clone()),
        column(|e| e.severity.clone()),
        column(|e| e.initiator.clone()),
    );
    let (correlations, requests, prev_hashes, hashes) = (
        column(|e| e.correlation_id.clone()),
        column(|e| e.request.to_string()),
        column(|e| e.prev_hash.clone()),
        column(|e| e.hash.clone()),
    );
    let insert = c.prepare_cached(INSERT).await.map_err(db_err)?;
    c.execute(
        &insert,
        &[
            &seqs,
            &ids,
            &ats,
            &actions,
            &outcomes,
            &statuses,
            &severities,
            &initiators,
            &targets,
            &vaults,
            &correlations,
            &sources,
            &requests,
            &prev_hashes,
            &hashes,
        ],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

fn event_from_row(r: &Row) -> Result<AuditEvent> {
    let request: &str = col(r, "request")?;
    let status: i64 = col(r, "status")?;
    Ok(AuditEvent {
        seq: col(r, "seq")?,
        id: uuid_col(r, "id")?,
        at: ts_col(r, "at")?,
        action: col(r, "action")?,
        outcome: col(r, "outcome")?,
        status: u16::try_from(status).map_err(|_| corrupt("status"))?,
        severity: col(r, "severity")?,
        initiator: col(r, "initiator")?,
        target: col(r, "target")?,
        vault_id: col(r, "vault_id")?,
        correlation_id: col(r, "correlation_id")?,
        source: col(r, "source")?,
        request: serde_json::from_str(request).map_err(|_| corrupt("request"))?,
        prev_hash: col(r, "prev_hash")?,
        hash: col(r, "hash")?,
    })
}

const COLUMNS: &str = "seq, id, at, action, outcome, status, severity, initiator, target, vault_id, correlation_id, source, request, prev_hash, hash";

/// Events matching `q`, oldest first.
pub(crate) async fn list(c: &impl GenericClient, q: &AuditQuery) -> Result<Page<AuditEvent>> {
    let mut filters = vec!["seq > $1".to_owned()];
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(q.after_seq)];
    let mut add = |sql: &str, value: Box<dyn ToSql + Sync + Send>| {
        values.push(value);
        filters.push(format!("{sql} ${}", values.len()));
    };
    if let Some(a) = &q.action {
        add("action =", Box::new(a.clone()));
    }
    if let Some(o) = &q.outcome {
        add("outcome =", Box::new(o.clone()));
    }
    if let Some(i) = &q.initiator {
        add("initiator =", Box::new(i.clone()));
    }
    if let Some(v) = q.vault_id {
        add("vault_id =", Box::new(v));
    }
    if let Some(t) = q.since {
        add("at >=", Box::new(ts(&t)));
    }
    if let Some(t) = q.until {
        add("at <", Box::new(ts(&t)));
    }
    let filter = filters.join(" AND ");
    // Unfiltered, the chain's own numbering counts it: sequence numbers run from 1 without a
    // gap (`verify` holds the chain to it).
    let count = if filters.len() == 1 {
        "SELECT GREATEST(COALESCE((SELECT seq FROM audit_events ORDER BY seq DESC LIMIT 1), 0) - $1, 0) AS n"
            .to_owned()
    } else {
        format!("SELECT COUNT(*) AS n FROM audit_events WHERE {filter}")
    };
    let limit = i64::from(q.paging.limit);
    let offset = i64::try_from(q.paging.offset).unwrap_or(i64::MAX);
    let mut params: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let total_count = one_once(c, &count, &params, |r| col::<i64>(r, "n"))
        .await?
        .unwrap_or(0);
    params.push(&limit);
    params.push(&offset);
    let items = all_once(
        c,
        &format!(
            "SELECT {COLUMNS} FROM audit_events WHERE {filter} ORDER BY seq LIMIT ${} OFFSET ${}",
            params.len() - 1,
            params.len()
        ),
        &params,
        event_from_row,
    )
    .await?;
    Ok(Page { items, total_count })
}

/// Walks the whole chain: each event must link to the one before and hash to what it says.
pub(crate) async fn verify(c: &impl GenericClient) -> Result<AuditChainReport> {
    let stmt = c
        .prepare_cached(&format!("SELECT {COLUMNS} FROM audit_events ORDER BY seq"))
        .await
        .map_err(db_err)?;
    // Streamed: the chain is read in one snapshot without holding it all in memory.
    let rows = c
        .query_raw(&stmt, std::iter::empty::<&(dyn ToSql + Sync)>())
        .await
        .map_err(db_err)?;
    let mut rows = std::pin::pin!(rows);
    let mut check = ChainCheck::new();
    while let Some(row) = rows.try_next().await.map_err(db_err)? {
        let event = match event_from_row(&row) {
            Ok(e) => Ok(e),
            Err(_) => Err(col(&row, "seq")?),
        };
        if let Some(broken) = check.next(event) {
            return Ok(broken);
        }
    }
    Ok(check.finish())
}

#[async_trait]
impl AuditRecords for PostgresStore {
    async fn append_audit_event(&self, event: AuditEvent) -> Result<()> {
        // Appended by the writer with its group's events, in the order they were queued.
        self.writer
            .submit(
                Box::new(|_| Box::pin(async { Ok(()) })),
                Some(event),
                Touches::KeysOnly,
            )
            .await
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Page<AuditEvent>> {
        let c = self.reader().await?;
        list(&c, query).await
    }

    async fn verify_audit_chain(&self) -> Result<AuditChainReport> {
        let c = self.reader().await?;
        verify(&c).await
    }
}
