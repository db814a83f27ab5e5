//! Principals and their API keys.

use keyplane_core::authz::{Policy, Role};
use keyplane_core::error::{Error, Result};
use keyplane_core::model::{ApiKey, Page, Principal, PrincipalKind};
use keyplane_core::query::Paging;
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::rows::{col, enum_col, opt_ts_col, ts, ts_col, uuid_col};
use super::writer::{sql_err, write_err};

pub(crate) const PRINCIPAL_COLUMNS: &str = "id, name, kind, description, created_at, created_by";
pub(crate) const KEY_COLUMNS: &str = "id, principal_id, name, key_hash, created_at, revoked_at";

pub(crate) fn principal_from_row(r: &rusqlite::Row<'_>) -> Result<Principal> {
    Ok(Principal {
        id: uuid_col(r, "id")?,
        name: col(r, "name")?,
        kind: enum_col(r, "kind", PrincipalKind::parse)?,
        description: col(r, "description")?,
        created_at: ts_col(r, "created_at")?,
        created_by: col(r, "created_by")?,
    })
}

pub(crate) fn key_from_row(r: &rusqlite::Row<'_>) -> Result<ApiKey> {
    Ok(ApiKey {
        id: uuid_col(r, "id")?,
        principal_id: uuid_col(r, "principal_id")?,
        name: col(r, "name")?,
        key_hash: col(r, "key_hash")?,
        created_at: ts_col(r, "created_at")?,
        revoked_at: opt_ts_col(r, "revoked_at")?,
    })
}

pub(crate) fn insert_principal(conn: &Connection, p: &Principal) -> Result<()> {
    conn.execute(
        "INSERT INTO principals (id, name, kind, description, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
        params![
            p.id.to_string(),
            p.name,
            p.kind.as_str(),
            p.description,
            ts(&p.created_at),
            p.created_by
        ],
    )
    .map_err(|e| write_err(e, "the principal name", &p.name))?;
    Ok(())
}

pub(crate) fn delete_principal(conn: &Connection, id: Uuid) -> Result<()> {
    let key = id.to_string();
    conn.execute("DELETE FROM api_keys WHERE principal_id = ?", [&key])
        .map_err(sql_err)?;
    conn.execute("DELETE FROM policies WHERE principal_id = ?", [&key])
        .map_err(sql_err)?;
    let rows = conn
        .execute("DELETE FROM principals WHERE id = ?", [&key])
        .map_err(sql_err)?;
    if rows == 0 {
        return Err(Error::not_found("principal", id));
    }
    Ok(())
}

pub(crate) fn insert_api_key(conn: &Connection, k: &ApiKey) -> Result<()> {
    conn.execute(
        "INSERT INTO api_keys (id, principal_id, name, key_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL)",
        params![
            k.id.to_string(),
            k.principal_id.to_string(),
            k.name,
            k.key_hash,
            ts(&k.created_at)
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn revoke_api_key(
    conn: &Connection,
    id: Uuid,
    replacement: Option<&ApiKey>,
) -> Result<()> {
    let rows = conn
        .execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            params![ts(&chrono::Utc::now()), id.to_string()],
        )
        .map_err(sql_err)?;
    if rows == 0 {
        return Err(Error::not_found("active API key", id));
    }
    if let Some(k) = replacement {
        insert_api_key(conn, k)?;
    }
    Ok(())
}

pub(crate) fn list_principals(conn: &Connection, paging: Paging) -> Result<Page<Principal>> {
    let total_count: i64 = conn
        .query_row("SELECT COUNT(*) FROM principals", [], |r| r.get(0))
        .map_err(sql_err)?;
    let items = super::all(
        conn,
        &format!(
            "SELECT {PRINCIPAL_COLUMNS} FROM principals ORDER BY name LIMIT {} OFFSET {}",
            paging.limit, paging.offset
        ),
        [],
        principal_from_row,
    )?;
    Ok(Page { items, total_count })
}

pub(crate) const POLICY_COLUMNS: &str = "id, principal_id, role, vault_id, created_at, created_by";

pub(crate) fn policy_from_row(r: &rusqlite::Row<'_>) -> Result<Policy> {
    let vault: Option<String> = col(r, "vault_id")?;
    Ok(Policy {
        id: uuid_col(r, "id")?,
        principal_id: uuid_col(r, "principal_id")?,
        role: enum_col(r, "role", Role::parse)?,
        vault_id: vault
            .map(|v| Uuid::parse_str(&v))
            .transpose()
            .map_err(|_| super::rows::corrupt("vault_id"))?,
        created_at: ts_col(r, "created_at")?,
        created_by: col(r, "created_by")?,
    })
}

pub(crate) fn insert_policy(conn: &Connection, p: &Policy) -> Result<()> {
    conn.execute(
        "INSERT INTO policies (id, principal_id, role, vault_id, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
        params![
            p.id.to_string(),
            p.principal_id.to_string(),
            p.role.as_str(),
            p.vault_id.map(|v| v.to_string()),
            ts(&p.created_at),
            p.created_by
        ],
    )
    .map_err(|e| write_err(e, "the policy", p.role.as_str()))?;
    Ok(())
}

pub(crate) fn delete_policy(conn: &Connection, id: Uuid) -> Result<()> {
    let rows = conn
        .execute("DELETE FROM policies WHERE id = ?", [id.to_string()])
        .map_err(sql_err)?;
    if rows == 0 {
        return Err(Error::not_found("policy", id));
    }
    Ok(())
}

pub(crate) const APPROVAL_COLUMNS: &str = "id, vault_id, action, key_id, requested_by, requested_at, expires_at, state, decided_by, decided_at";

pub(crate) fn approval_from_row(r: &rusqlite::Row<'_>) -> Result<keyplane_core::model::Approval> {
    use keyplane_core::model::{Approval, ApprovalAction, ApprovalState};
    Ok(Approval {
        id: uuid_col(r, "id")?,
        vault_id: uuid_col(r, "vault_id")?,
        action: enum_col(r, "action", ApprovalAction::parse)?,
        key_id: uuid_col(r, "key_id")?,
        requested_by: col(r, "requested_by")?,
        requested_at: ts_col(r, "requested_at")?,
        expires_at: ts_col(r, "expires_at")?,
        state: enum_col(r, "state", ApprovalState::parse)?,
        decided_by: col(r, "decided_by")?,
        decided_at: opt_ts_col(r, "decided_at")?,
    })
}

pub(crate) fn insert_approval(conn: &Connection, a: &keyplane_core::model::Approval) -> Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)"
        ),
        params![
            a.id.to_string(),
            a.vault_id.to_string(),
            a.action.as_str(),
            a.key_id.to_string(),
            a.requested_by,
            ts(&a.requested_at),
            ts(&a.expires_at),
            a.state.as_str()
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn decide_approval(conn: &Connection, a: &keyplane_core::model::Approval) -> Result<()> {
    let rows = conn
        .execute(
            "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ? WHERE id = ? AND state = 'pending'",
            params![
                a.state.as_str(),
                a.decided_by,
                a.decided_at.as_ref().map(ts),
                a.id.to_string()
            ],
        )
        .map_err(sql_err)?;
    if rows == 0 {
        return Err(Error::conflict(
            keyplane_core::ErrorCode::InvalidStateTransition,
            "the approval was decided meanwhile",
        ));
    }
    Ok(())
}

pub(crate) fn reopen_approval(conn: &Connection, id: Uuid) -> Result<()> {
    conn.execute(
        "UPDATE approvals SET state = 'pending', decided_by = NULL, decided_at = NULL WHERE id = ? AND state = 'approved'",
        params![id.to_string()],
    )
    .map_err(sql_err)?;
    Ok(())
}
