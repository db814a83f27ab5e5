//! Keystores and the import tokens internal ones offer.

use async_trait::async_trait;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::*;

use super::SqliteStore;
use super::rows::*;
use super::{all, import_tokens, lists, one, writes};

#[async_trait]
impl KeystoreRecords for SqliteStore {
    async fn insert_keystore(&self, k: &Keystore) -> Result<()> {
        let k = k.clone();
        audit_trail::note_target("keystores", k.id, Some(k.vault.id));
        self.audited_write(move |c| writes::write_keystore(c, &k, None))
            .await
    }

    async fn import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>> {
        self.reader.with(|c| import_tokens::get(c, keystore_id))
    }

    async fn save_import_token(&self, token: &ImportToken) -> Result<()> {
        let token = token.clone();
        self.writer
            .write(move |c| import_tokens::save(c, &token))
            .await
    }

    async fn retrieve_import_token(&self, keystore_id: Uuid) -> Result<Option<ImportToken>> {
        let now = chrono::Utc::now();
        self.writer
            .write_returning(move |c| import_tokens::retrieve(c, keystore_id, &now))
            .await
    }

    async fn get_keystore(&self, id: Uuid) -> Result<Option<Keystore>> {
        self.keystores.get_or_read(id, || {
            self.reader.with(|c| {
                one(
                    c,
                    &format!("{KEYSTORE_SELECT} WHERE ks.id = ?"),
                    [id.to_string()],
                    keystore_from_row,
                )
            })
        })
    }

    async fn update_keystore(&self, k: &Keystore, read_revision: i64) -> Result<()> {
        let k = k.clone();
        audit_trail::note_target("keystores", k.id, Some(k.vault.id));
        self.audited_write(move |c| writes::write_keystore(c, &k, Some(read_revision)))
            .await
    }

    async fn list_keystores(&self, q: &KeystoreQuery) -> Result<Page<Keystore>> {
        self.reader.with(|c| lists::keystores(c, q))
    }

    async fn vault_keystores(&self, vault_id: Uuid) -> Result<Vec<Keystore>> {
        self.reader.with(|c| {
            all(
                c,
                &format!("{KEYSTORE_SELECT} WHERE ks.vault_id = ? ORDER BY ks.created_at, ks.id"),
                [vault_id.to_string()],
                keystore_from_row,
            )
        })
    }

    async fn delete_keystore(
        &self,
        id: Uuid,
        read_revision: i64,
        changes: &[(ManagedKey, i64)],
    ) -> Result<()> {
        let changes = changes.to_vec();
        let vault = self.owning_vault("keystores", id);
        audit_trail::note_target("keystores", id, vault);
        self.audited_write(move |c| writes::delete_keystore(c, id, read_revision, &changes))
            .await
    }
}
