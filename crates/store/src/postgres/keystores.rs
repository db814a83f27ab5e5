//! Keystores and the import tokens internal ones offer.

use async_trait::async_trait;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::*;

use super::PostgresStore;
use super::rows::*;
use super::{all, import_tokens, lists, one, writes};

#[async_trait]
impl KeystoreRecords for PostgresStore {
    async fn insert_keystore(&self, k: &Keystore) -> Result<()> {
        let k = k.clone();
        audit_trail::note_target("keystores", k.id, Some(k.vault.id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::write_keystore(c, &k, None).await })
        }))
        .await
    }

    async fn import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>> {
        let c = self.reader().await?;
        import_tokens::get(&c, keystore_id).await
    }

    async fn save_import_token(&self, token: &ImportToken) -> Result<()> {
        let token = token.clone();
        self.write(Box::new(move |c| {
            Box::pin(async move { import_tokens::save(c, &token).await })
        }))
        .await
    }

    async fn retrieve_import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>> {
        let now = chrono::Utc::now();
        self.write_returning(move |c| {
            Box::pin(async move { import_tokens::retrieve(c, keystore_id, &now).await })
        })
        .await
    }

    async fn get_keystore(&self, id: Uuid) -> Result<Option<Keystore>> {
        self.keystores
            .get_or_read_async(id, || async {
                let c = self.reader().await?;
                one(
                    &c,
                    &format!("{KEYSTORE_SELECT} WHERE ks.id = $1"),
                    &[&id],
                    keystore_from_row,
                )
                .await
            })
            .await
    }

    async fn update_keystore(&self, k: &Keystore, read_revision: i64) -> Result<()> {
        let k = k.clone();
        audit_trail::note_target("keystores", k.id, Some(k.vault.id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::write_keystore(c, &k, Some(read_revision)).await })
        }))
        .await
    }

    async fn list_keystores(&self, q: &KeystoreQuery) -> Result<Page<Keystore>> {
        let c = self.reader().await?;
        lists::keystores(&c, q).await
    }

    async fn vault_keystores(&self, vault_id: Uuid) -> Result<Vec<Keystore>> {
        let listed = self
            .vault_keystores
            .get_or_read_async(vault_id, || async {
                let c = self.reader().await?;
                all(
                    &c,
                    &format!(
                        "{KEYSTORE_SELECT} WHERE ks.vault_id = $1 ORDER BY ks.created_at, ks.id"
                    ),
                    &[&vault_id],
                    keystore_from_row,
                )
                .await
                .map(Some)
            })
            .await?;
        Ok(listed.unwrap_or_default())
    }

    async fn delete_keystore(
        &self,
        id: Uuid,
        read_revision: i64,
        changes: &[(ManagedKey, i64)],
    ) -> Result<()> {
        let changes = changes.to_vec();
        let vault = self.owning_vault("keystores", id).await;
        audit_trail::note_target("keystores", id, vault);
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::delete_keystore(c, id, read_revision, &changes).await })
        }))
        .await
    }
}
