//! Principals and their API keys.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::authz::{Policy, Role};
use keyplane_core::error::{Error, Result};
use keyplane_core::model::{ApiKey, Approval, Page, Principal, PrincipalKind};
use keyplane_core::ports::{AccessRecords, ApiToken};
use keyplane_core::query::Paging;

use super::SqliteStore;
use super::rows::{col, enum_col, opt_ts_col, ts, ts_col, uuid_col};
use super::writer::{sql_err, write_err};
use super::{all, one, writes};

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

fn token_from_row(r: &rusqlite::Row<'_>) -> Result<ApiToken> {
    Ok(ApiToken {
        id: uuid_col(r, "id")?,
        name: col(r, "name")?,
        token_hash: col(r, "token_hash")?,
    })
}

#[async_trait]
impl AccessRecords for SqliteStore {
    async fn insert_api_token(&self, token: &ApiToken) -> Result<()> {
        let token = token.clone();
        self.writer
            .write(move |c| writes::insert_api_token(c, &token))
            .await
    }

    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT id, name, token_hash FROM api_tokens WHERE token_hash = ?",
                [token_hash],
                token_from_row,
            )
        })
    }

    async fn count_api_tokens(&self) -> Result<i64> {
        self.reader.with(|c| {
            c.query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0))
                .map_err(sql_err)
        })
    }

    async fn insert_principal(&self, principal: &Principal) -> Result<()> {
        let principal = principal.clone();
        self.audited_write(move |c| insert_principal(c, &principal))
            .await
    }

    async fn get_principal(&self, id: Uuid) -> Result<Option<Principal>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("SELECT {} FROM principals WHERE id = ?", PRINCIPAL_COLUMNS),
                [id.to_string()],
                principal_from_row,
            )
        })
    }

    async fn find_principal(&self, name: &str) -> Result<Option<Principal>> {
        self.reader.with(|c| {
            one(
                c,
                &format!(
                    "SELECT {} FROM principals WHERE name = ?",
                    PRINCIPAL_COLUMNS
                ),
                [name],
                principal_from_row,
            )
        })
    }

    async fn list_principals(&self, paging: Paging) -> Result<Page<Principal>> {
        self.reader.with(|c| list_principals(c, paging))
    }

    async fn delete_principal(&self, id: Uuid) -> Result<()> {
        self.audited_write(move |c| delete_principal(c, id)).await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        let key = key.clone();
        self.audited_write(move |c| insert_api_key(c, &key)).await
    }

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("SELECT {} FROM api_keys WHERE id = ?", KEY_COLUMNS),
                [id.to_string()],
                key_from_row,
            )
        })
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("SELECT {} FROM api_keys WHERE key_hash = ?", KEY_COLUMNS),
                [key_hash],
                key_from_row,
            )
        })
    }

    async fn list_api_keys(&self, principal_id: Uuid) -> Result<Vec<ApiKey>> {
        self.reader.with(|c| {
            all(
                c,
                &format!(
                    "SELECT {} FROM api_keys WHERE principal_id = ? ORDER BY created_at, id",
                    KEY_COLUMNS
                ),
                [principal_id.to_string()],
                key_from_row,
            )
        })
    }

    async fn revoke_api_key(&self, revoke: Uuid, replacement: Option<&ApiKey>) -> Result<()> {
        let replacement = replacement.cloned();
        self.audited_write(move |c| revoke_api_key(c, revoke, replacement.as_ref()))
            .await
    }

    async fn insert_policy(&self, policy: &keyplane_core::authz::Policy) -> Result<()> {
        let policy = policy.clone();
        self.audited_write(move |c| insert_policy(c, &policy)).await
    }

    async fn delete_policy(&self, id: Uuid) -> Result<()> {
        self.audited_write(move |c| delete_policy(c, id)).await
    }

    async fn list_policies(
        &self,
        principal_id: Option<Uuid>,
    ) -> Result<Vec<keyplane_core::authz::Policy>> {
        self.reader.with(|c| match principal_id {
            Some(p) => all(
                c,
                &format!(
                    "SELECT {} FROM policies WHERE principal_id = ? ORDER BY created_at, id",
                    POLICY_COLUMNS
                ),
                [p.to_string()],
                policy_from_row,
            ),
            None => all(
                c,
                &format!(
                    "SELECT {} FROM policies ORDER BY created_at, id",
                    POLICY_COLUMNS
                ),
                [],
                policy_from_row,
            ),
        })
    }

    async fn dual_control(&self, vault_id: Uuid) -> Result<bool> {
        self.reader.with(|c| {
            one(
                c,
                "SELECT vault_id FROM dual_control_vaults WHERE vault_id = ?",
                [vault_id.to_string()],
                |_| Ok(()),
            )
            .map(|found| found.is_some())
        })
    }

    async fn set_dual_control(&self, vault_id: Uuid, enabled: bool) -> Result<()> {
        audit_trail::note_target("vaults", vault_id, Some(vault_id));
        self.audited_write(move |c| {
            let sql = if enabled {
                "INSERT INTO dual_control_vaults (vault_id) VALUES (?) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM dual_control_vaults WHERE vault_id = ?"
            };
            c.execute(sql, [vault_id.to_string()]).map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn insert_approval(&self, approval: &Approval) -> Result<()> {
        let approval = approval.clone();
        audit_trail::note_target("approvals", approval.id, Some(approval.vault_id));
        self.audited_write(move |c| insert_approval(c, &approval))
            .await
    }

    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("SELECT {} FROM approvals WHERE id = ?", APPROVAL_COLUMNS),
                [id.to_string()],
                approval_from_row,
            )
        })
    }

    async fn list_approvals(&self, vault_ids: &[Uuid]) -> Result<Vec<Approval>> {
        let filter = if vault_ids.is_empty() {
            String::new()
        } else {
            format!(
                "WHERE vault_id IN ({})",
                vec!["?"; vault_ids.len()].join(", ")
            )
        };
        let ids: Vec<String> = vault_ids.iter().map(Uuid::to_string).collect();
        self.reader.with(|c| {
            all(
                c,
                &format!(
                    "SELECT {} FROM approvals {filter} ORDER BY requested_at DESC, id DESC LIMIT 1000",
                    APPROVAL_COLUMNS
                ),
                rusqlite::params_from_iter(ids.iter()),
                approval_from_row,
            )
        })
    }

    async fn decide_approval(&self, approval: &Approval) -> Result<()> {
        let approval = approval.clone();
        self.writer
            .write(move |c| decide_approval(c, &approval))
            .await
    }

    async fn reopen_approval(&self, id: Uuid) -> Result<()> {
        self.writer.write(move |c| reopen_approval(c, id)).await
    }
}
