//! Vaults.

use async_trait::async_trait;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::*;

use super::PostgresStore;
use super::rows::*;
use super::{all, lists, one, writes};

#[async_trait]
impl VaultRecords for PostgresStore {
    async fn insert_vault(&self, v: &Vault) -> Result<()> {
        let v = v.clone();
        audit_trail::note_target("vaults", v.id, Some(v.id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::insert_vault(c, &v).await })
        }))
        .await
    }

    async fn get_vault(&self, id: Uuid) -> Result<Option<VaultView>> {
        let c = self.reader().await?;
        one(
            &c,
            &format!("{VAULT_SELECT} WHERE v.id = $1"),
            &[&id],
            vault_from_row,
        )
        .await
    }

    async fn vault_ref(&self, id: Uuid) -> Result<Option<VaultRef>> {
        self.vault_refs
            .get_or_read_async(id, || async {
                let c = self.reader().await?;
                let name = one(&c, "SELECT name FROM vaults WHERE id = $1", &[&id], |r| {
                    col::<String>(r, "name")
                })
                .await?;
                Ok(name.map(|name| VaultRef { id, name }))
            })
            .await
    }

    async fn update_vault(&self, v: &Vault, read_revision: i64) -> Result<()> {
        let v = v.clone();
        audit_trail::note_target("vaults", v.id, Some(v.id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::update_vault(c, &v, read_revision).await })
        }))
        .await
    }

    async fn delete_vault(&self, id: Uuid, read_revision: i64) -> Result<()> {
        audit_trail::note_target("vaults", id, Some(id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::delete_vault(c, id, read_revision).await })
        }))
        .await
    }

    async fn list_vaults(&self, q: &VaultQuery) -> Result<Page<VaultView>> {
        let c = self.reader().await?;
        lists::vaults(&c, q).await
    }

    async fn vault_ids(&self) -> Result<Vec<Uuid>> {
        let c = self.reader().await?;
        all(&c, "SELECT id FROM vaults", &[], |r| uuid_col(r, "id")).await
    }
}
