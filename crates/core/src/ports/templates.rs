//! Key templates.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;
use crate::query::*;

/// Key templates.
#[async_trait]
pub trait TemplateRecords: Send + Sync + 'static {
    async fn insert_template(&self, template: &Template) -> Result<()>;

    async fn get_template(&self, id: Uuid) -> Result<Option<Template>>;

    /// The template a key is created from. `keys_count` is not computed here (left at 0): key
    /// creation does not need it, and counting would cost a scan per key.
    async fn find_template(&self, vault_id: Uuid, name: &str) -> Result<Option<Template>>;

    async fn update_template(&self, template: &Template, read_revision: i64) -> Result<()>;

    /// Deletes a template no key references; `Conflict` otherwise.
    async fn delete_template(&self, id: Uuid, read_revision: i64) -> Result<()>;

    async fn list_templates(&self, query: &TemplateQuery) -> Result<Page<Template>>;
}
