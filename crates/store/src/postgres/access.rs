//! Principals and their API keys.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::authz::{Policy, Role};
use keyplane_core::error::{Error, Result};
use keyplane_core::model::{
    ApiKey, Approval, ApprovalAction, ApprovalState, Page, Principal, PrincipalKind,
};
use keyplane_core::ports::{AccessRecords, ApiToken};
use keyplane_core::query::Paging;

use super::rows::{col, enum_col, opt_ts_col, ts, ts_col, uuid_col};
use super::{Params, PostgresStore, all, db_err, exec, one, write_err, writes};

pub(crate) const PRINCIPAL_COLUMNS: &str = "id, name, kind, description, created_at, created_by";
pub(crate) const KEY_COLUMNS: &str = "id, principal_id, name, key_hash, created_at, revoked_at";

/// Runs a statement whose unique-constraint failure is a duplicate name of `resource`.
async fn exec_named(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    resource: &str,
    name: &str,
) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(db_err)?;
    c.execute(&stmt, params)
        .await
        .map_err(|e| write_err(e, resource, name))
}

pub(crate) fn principal_from_row(r: &Row) -> Result<Principal> {
    Ok(Principal {
        id: uuid_col(r, "id")?,
        name: col(r, "name")?,
        kind: enum_col(r, "kind", PrincipalKind::parse)?,
        description: col(r, "description")?,
        created_at: ts_col(r, "created_at")?,
        created_by: col(r, "created_by")?,
    })
}

pub(crate) fn key_from_row(r: &Row) -> Result<ApiKey> {
    Ok(ApiKey {
        id: uuid_col(r, "id")?,
        principal_id: uuid_col(r, "principal_id")?,
        name: col(r, "name")?,
        key_hash: col(r, "key_hash")?,
        created_at: ts_col(r, "created_at")?,
        revoked_at: opt_ts_col(r, "revoked_at")?,
    })
}

pub(crate) async fn insert_principal(c: &impl GenericClient, p: &Principal) -> Result<()> {
    exec_named(
        c,
        "INSERT INTO principals (id, name, kind, description, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &p.id,
            &p.name,
            &p.kind.as_str(),
            &p.description,
            &ts(&p.created_at),
            &p.created_by,
        ],
        "the principal name",
        &p.name,
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_principal(c: &impl GenericClient, id: Uuid) -> Result<()> {
    exec(c, "DELETE FROM api_keys WHERE principal_id = $1", &[&id]).await?;
    exec(c, "DELETE FROM policies WHERE principal_id = $1", &[&id]).await?;
    let rows = exec(c, "DELETE FROM principals WHERE id = $1", &[&id]).await?;
    if rows == 0 {
        return Err(Error::not_found("principal", id));
    }
    Ok(())
}

pub(crate) async fn insert_api_key(c: &impl GenericClient, k: &ApiKey) -> Result<()> {
    exec(
        c,
        "INSERT INTO api_keys (id, principal_id, name, key_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        &[
            &k.id,
            &k.principal_id,
            &k.name,
            &k.key_hash,
            &ts(&k.created_at),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn revoke_api_key(
    c: &impl GenericClient,
    id: Uuid,
    replacement: Option<&ApiKey>,
) -> Result<()> {
    let rows = exec(
        c,
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        &[&ts(&chrono::Utc::now()), &id],
    )
    .await?;
    if rows == 0 {
        return Err(Error::not_found("active API key", id));
    }
    if let Some(k) = replacement {
        insert_api_key(c, k).await?;
    }
    Ok(())
}

pub(crate) async fn list_principals(
    c: &impl GenericClient,
    paging: Paging,
) -> Result<Page<Principal>> {
    let total_count = one(c, "SELECT COUNT(*) AS n FROM principals", &[], |r| {
        col::<i64>(r, "n")
    })
    .await?
    .unwrap_or(0);
    let limit = i64::from(paging.limit);
    let offset = i64::try_from(paging.offset).unwrap_or(i64::MAX);
    let items = all(
        c,
        &format!("SELECT {PRINCIPAL_COLUMNS} FROM principals ORDER BY name LIMIT $1 OFFSET $2"),
        &[&limit, &offset],
        principal_from_row,
    )
    .await?;
    Ok(Page { items, total_count })
}

pub(crate) const POLICY_COLUMNS: &str = "id, principal_id, role, vault_id, created_at, created_by";

pub(crate) fn policy_from_row(r: &Row) -> Result<Policy> {
    Ok(Policy {
        id: uuid_col(r, "id")?,
        principal_id: uuid_col(r, "principal_id")?,
        role: enum_col(r, "role", Role::parse)?,
        vault_id: col(r, "vault_id")?,
        created_at: ts_col(r, "created_at")?,
        created_by: col(r, "created_by")?,
    })
}

pub(crate) async fn insert_policy(c: &impl GenericClient, p: &Policy) -> Result<()> {
    exec_named(
        c,
        "INSERT INTO policies (id, principal_id, role, vault_id, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &p.id,
            &p.principal_id,
            &p.role.as_str(),
            &p.vault_id,
            &ts(&p.created_at),
            &p.created_by,
        ],
        "the policy",
        p.role.as_str(),
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_policy(c: &impl GenericClient, id: Uuid) -> Result<()> {
    let rows = exec(c, "DELETE FROM policies WHERE id = $1", &[&id]).await?;
    if rows == 0 {
        return Err(Error::not_found("policy", id));
    }
    Ok(())
}

pub(crate) const APPROVAL_COLUMNS: &str = "id, vault_id, action, key_id, requested_by, requested_at, expires_at, state, decided_by, decided_at";

pub(crate) fn approval_from_row(r: &Row) -> Result<Approval> {
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

pub(crate) async fn insert_approval(c: &impl GenericClient, a: &Approval) -> Result<()> {
    exec(
        c,
        &format!(
            "INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)"
        ),
        &[
            &a.id,
            &a.vault_id,
            &a.action.as_str(),
            &a.key_id,
            &a.requested_by,
            &ts(&a.requested_at),
            &ts(&a.expires_at),
            &a.state.as_str(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn decide_approval(c: &impl GenericClient, a: &Approval) -> Result<()> {
    let rows = exec(
        c,
        "UPDATE approvals SET state = $1, decided_by = $2, decided_at = $3 WHERE id = $4 AND state = 'pending'",
        &[
            &a.state.as_str(),
            &a.decided_by,
            &a.decided_at.as_ref().map(ts),
            &a.id,
        ],
    )
    .await?;
    if rows == 0 {
        return Err(Error::conflict(
            keyplane_core::ErrorCode::InvalidStateTransition,
            "the approval was decided meanwhile",
        ));
    }
    Ok(())
}

pub(crate) async fn reopen_approval(c: &impl GenericClient, id: Uuid) -> Result<()> {
    exec(
        c,
        "UPDATE approvals SET state = 'pending', decided_by = NULL, decided_at = NULL WHERE id = $1 AND state = 'approved'",
        &[&id],
    )
    .await?;
    Ok(())
}

fn token_from_row(r: &Row) -> Result<ApiToken> {
    Ok(ApiToken {
        id: uuid_col(r, "id")?,
        name: col(r, "name")?,
        token_hash: col(r, "token_hash")?,
    })
}

#[async_trait]
impl AccessRecords for PostgresStore {
    async fn insert_api_token(&self, token: &ApiToken) -> Result<()> {
        let token = token.clone();
        self.write(Box::new(move |c| {
            Box::pin(async move { writes::insert_api_token(c, &token).await })
        }))
        .await
    }

    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let c = self.reader().await?;
        one(
            &c,
            "SELECT id, name, token_hash FROM api_tokens WHERE token_hash = $1",
            &[&token_hash],
            token_from_row,
        )
        .await
    }

    async fn count_api_tokens(&self) -> Result<i64> {
        let c = self.reader().await?;
        Ok(one(&c, "SELECT COUNT(*) AS n FROM api_tokens", &[], |r| {
            col::<i64>(r, "n")
        })
        .await?
        .unwrap_or(0))
    }

    async fn insert_principal(&self, principal: &Principal) -> Result<()> {
        let principal = principal.clone();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { insert_principal(c, &principal).await })
        }))
        .await
    }

    async fn get_principal(&self, id: Uuid) -> Result<Option<Principal>> {
        let c = self.reader().await?;
        one(
            &c,
            &format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE id = $1"),
            &[&id],
            principal_from_row,
        )
        .await
    }

    async fn find_principal(&self, name: &str) -> Result<Option<Principal>> {
        let c = self.reader().await?;
        one(
            &c,
            &format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE name = $1"),
            &[&name],
            principal_from_row,
        )
        .await
    }

    async fn list_principals(&self, paging: Paging) -> Result<Page<Principal>> {
        let c = self.reader().await?;
        list_principals(&c, paging).await
    }

    async fn delete_principal(&self, id: Uuid) -> Result<()> {
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { delete_principal(c, id).await })
        }))
        .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        let key = key.clone();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { insert_api_key(c, &key).await })
        }))
        .await
    }

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        let c = self.reader().await?;
        one(
            &c,
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            &[&id],
            key_from_row,
        )
        .await
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let c = self.reader().await?;
        one(
            &c,
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"),
            &[&key_hash],
            key_from_row,
        )
        .await
    }

    async fn list_api_keys(&self, principal_id: Uuid) -> Result<Vec<ApiKey>> {
        let c = self.reader().await?;
        all(
            &c,
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE principal_id = $1 ORDER BY created_at, id"
            ),
            &[&principal_id],
            key_from_row,
        )
        .await
    }

    async fn revoke_api_key(&self, revoke: Uuid, replacement: Option<&ApiKey>) -> Result<()> {
        let replacement = replacement.cloned();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { revoke_api_key(c, revoke, replacement.as_ref()).await })
        }))
        .await
    }

    async fn insert_policy(&self, policy: &Policy) -> Result<()> {
        let policy = policy.clone();
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { insert_policy(c, &policy).await })
        }))
        .await
    }

    async fn delete_policy(&self, id: Uuid) -> Result<()> {
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { delete_policy(c, id).await })
        }))
        .await
    }

    async fn list_policies(&self, principal_id: Option<Uuid>) -> Result<Vec<Policy>> {
        let c = self.reader().await?;
        match principal_id {
            Some(p) => {
                all(
                    &c,
                    &format!(
                        "SELECT {POLICY_COLUMNS} FROM policies WHERE principal_id = $1 ORDER BY created_at, id"
                    ),
                    &[&p],
                    policy_from_row,
                )
                .await
            }
            None => {
                all(
                    &c,
                    &format!("SELECT {POLICY_COLUMNS} FROM policies ORDER BY created_at, id"),
                    &[],
                    policy_from_row,
                )
                .await
            }
        }
    }

    async fn dual_control(&self, vault_id: Uuid) -> Result<bool> {
        let c = self.reader().await?;
        let found = one(
            &c,
            "SELECT vault_id FROM dual_control_vaults WHERE vault_id = $1",
            &[&vault_id],
            |_| Ok(()),
        )
        .await?;
        Ok(found.is_some())
    }

    async fn set_dual_control(&self, vault_id: Uuid, enabled: bool) -> Result<()> {
        audit_trail::note_target("vaults", vault_id, Some(vault_id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move {
                let sql = if enabled {
                    "INSERT INTO dual_control_vaults (vault_id) VALUES ($1) ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM dual_control_vaults WHERE vault_id = $1"
                };
                exec(c, sql, &[&vault_id]).await?;
                Ok(())
            })
        }))
        .await
    }

    async fn insert_approval(&self, approval: &Approval) -> Result<()> {
        let approval = approval.clone();
        audit_trail::note_target("approvals", approval.id, Some(approval.vault_id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { insert_approval(c, &approval).await })
        }))
        .await
    }

    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>> {
        let c = self.reader().await?;
        one(
            &c,
            &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"),
            &[&id],
            approval_from_row,
        )
        .await
    }

    async fn list_approvals(&self, vault_ids: &[Uuid]) -> Result<Vec<Approval>> {
        let c = self.reader().await?;
        if vault_ids.is_empty() {
            return all(
                &c,
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals ORDER BY requested_at DESC, id DESC LIMIT 1000"
                ),
                &[],
                approval_from_row,
            )
            .await;
        }
        let ids = vault_ids.to_vec();
        all(
            &c,
            &format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE vault_id = ANY($1) ORDER BY requested_at DESC, id DESC LIMIT 1000"
            ),
            &[&ids],
            approval_from_row,
        )
        .await
    }

    async fn decide_approval(&self, approval: &Approval) -> Result<()> {
        let approval = approval.clone();
        self.write(Box::new(move |c| {
            Box::pin(async move { decide_approval(c, &approval).await })
        }))
        .await
    }

    async fn reopen_approval(&self, id: Uuid) -> Result<()> {
        self.write(Box::new(move |c| {
            Box::pin(async move { reopen_approval(c, id).await })
        }))
        .await
    }
}
