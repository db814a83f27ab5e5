//! Key templates.

use async_trait::async_trait;
use uuid::Uuid;

use keyplane_core::audit as audit_trail;
use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::*;

use super::PostgresStore;
use super::rows::*;
use super::{lists, one, writes};

#[async_trait]
impl TemplateRecords for PostgresStore {
    async fn insert_template(&self, t: &Template) -> Result<()> {
        let t = t.clone();
        audit_trail::note_target("templates", t.id, Some(t.vault.id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::write_template(c, &t, None).await })
        }))
        .await
    }

    async fn get_template(&self, id: Uuid) -> Result<Option<Template>> {
        let c = self.reader().await?;
        one(
            &c,
            &format!("{TEMPLATE_SELECT} WHERE t.id = $1"),
            &[&id],
            template_from_row,
        )
        .await
    }

    async fn find_template(&self, vault_id: Uuid, name: &str) -> Result<Option<Template>> {
        self.templates_by_name
            .get_or_read_async((vault_id, name.to_owned()), || async {
                let c = self.reader().await?;
                one(
                    &c,
                    &format!("{TEMPLATE_SELECT_UNCOUNTED} WHERE t.vault_id = $1 AND t.name = $2"),
                    &[&vault_id, &name],
                    template_from_row,
                )
                .await
            })
            .await
    }

    async fn update_template(&self, t: &Template, read_revision: i64) -> Result<()> {
        let t = t.clone();
        audit_trail::note_target("templates", t.id, Some(t.vault.id));
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::write_template(c, &t, Some(read_revision)).await })
        }))
        .await
    }

    async fn delete_template(&self, id: Uuid, read_revision: i64) -> Result<()> {
        let vault = self.owning_vault("templates", id).await;
        audit_trail::note_target("templates", id, vault);
        self.audited_write(Box::new(move |c| {
            Box::pin(async move { writes::delete_template(c, id, read_revision).await })
        }))
        .await
    }

    async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>> {
        let c = self.reader().await?;
        lists::templates(&c, q).await
    }
}
