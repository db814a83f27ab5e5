//! Key templates.

use async_trait::async_trait;
use rusqlite::params;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::*;

use super::SqliteStore;
use super::rows::*;
use super::{lists, one, writes};

#[async_trait]
impl TemplateRecords for SqliteStore {
    async fn insert_template(&self, t: &Template) -> Result<()> {
        let t = t.clone();
        audit_trail::note_target("templates", t.id, Some(t.vault.id));
        self.audited_write(move |c| writes::write_template(c, &t, None))
            .await
    }

    async fn get_template(&self, id: Uuid) -> Result<Option<Template>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("{TEMPLATE_SELECT} WHERE t.id = ?"),
                [id.to_string()],
                template_from_row,
            )
        })
    }

    async fn find_template(&self, vault_id: Uuid, name: &str) -> Result<Option<Template>> {
        self.reader.with(|c| {
            one(
                c,
                &format!("{TEMPLATE_SELECT_UNCOUNTED} WHERE t.vault_id = ? AND t.name = ?"),
                params![vault_id.to_string(), name],
                template_from_row,
            )
        })
    }

    async fn update_template(&self, t: &Template, read_revision: i64) -> Result<()> {
        let t = t.clone();
        audit_trail::note_target("templates", t.id, Some(t.vault.id));
        self.audited_write(move |c| writes::write_template(c, &t, Some(read_revision)))
            .await
    }

    async fn delete_template(&self, id: Uuid, read_revision: i64) -> Result<()> {
        let vault = self.owning_vault("templates", id);
        audit_trail::note_target("templates", id, vault);
        self.audited_write(move |c| writes::delete_template(c, id, read_revision))
            .await
    }

    async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>> {
        self.reader.with(|c| lists::templates(c, q))
    }
}
