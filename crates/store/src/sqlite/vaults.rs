//! Vaults.

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::*;

use super::SqliteStore;
use super::rows::*;
use super::writer::sql_err;
use super::{all, lists, one, writes};

#[async_trait]
impl VaultRecords for SqliteStore {
    async fn insert_vault(&self, v: &Vault) -> Result<()> {
        let v = v.clone();
        audit_trail::note_target("vaults", v.id, Some(v.id));
        self.audited_write(move |c| writes::insert_vault(c, &v))
            .await
    }

    async fn get_vault(&self, id: Uuid) -> Result<Option<VaultView>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("{VAULT_SELECT} WHERE v.id = ?"),
                [id.to_string()],
                vault_from_row,
            )
        })
    }

    async fn vault_ref(&self, id: Uuid) -> Result<Option<VaultRef>> {
        let name = self.reader.with(|c| {
            c.query_row(
                "SELECT name FROM vaults WHERE id = ?",
                [id.to_string()],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(sql_err)
        })?;
        Ok(name.map(|name| VaultRef { id, name }))
    }

    async fn update_vault(&self, v: &Vault, read_revision: i64) -> Result<()> {
        let v = v.clone();
        audit_trail::note_target("vaults", v.id, Some(v.id));
        self.audited_write(move |c| writes::update_vault(c, &v, read_revision))
            .await
    }

    async fn delete_vault(&self, id: Uuid, read_revision: i64) -> Result<()> {
        audit_trail::note_target("vaults", id, Some(id));
        self.audited_write(move |c| writes::delete_vault(c, id, read_revision))
            .await
    }

    async fn list_vaults(&self, q: &VaultQuery) -> Result<Page<VaultView>> {
        self.reader.with(|c| lists::vaults(c, q))
    }

    async fn vault_ids(&self) -> Result<Vec<Uuid>> {
        self.reader
            .with(|c| all(c, "SELECT id FROM vaults", [], |r| uuid_col(r, "id")))
    }
}
