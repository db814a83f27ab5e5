//! Principals, API keys and tokens, policies, dual control and approvals.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;

/// A hashed API token that may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub token_hash: String,
}

/// Principals, API keys and tokens, policies, dual control and approvals.
#[async_trait]
pub trait AccessRecords: Send + Sync + 'static {
    async fn insert_api_token(&self, token: &ApiToken) -> Result<()>;

    async fn find_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>>;

    async fn count_api_tokens(&self) -> Result<i64>;

    /// 409 `duplicate_name` when the name is taken.
    async fn insert_principal(&self, principal: &Principal) -> Result<()>;

    async fn get_principal(&self, id: Uuid) -> Result<Option<Principal>>;

    async fn find_principal(&self, name: &str) -> Result<Option<Principal>>;

    async fn list_principals(&self, paging: crate::query::Paging) -> Result<Page<Principal>>;

    /// Deletes a principal and every API key it has.
    async fn delete_principal(&self, id: Uuid) -> Result<()>;

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()>;

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKey>>;

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>>;

    async fn list_api_keys(&self, principal_id: Uuid) -> Result<Vec<ApiKey>>;

    /// Revokes `revoke` (still active) and, in the same transaction, adds `replacement`.
    async fn revoke_api_key(&self, revoke: Uuid, replacement: Option<&ApiKey>) -> Result<()>;

    /// 409 `duplicate_name` when the principal already has that role there.
    async fn insert_policy(&self, policy: &crate::authz::Policy) -> Result<()>;

    async fn delete_policy(&self, id: Uuid) -> Result<()>;

    async fn dual_control(&self, vault_id: Uuid) -> Result<bool>;

    async fn set_dual_control(&self, vault_id: Uuid, enabled: bool) -> Result<()>;

    async fn insert_approval(&self, approval: &Approval) -> Result<()>;

    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>>;

    /// Approvals in these vaults (empty: all), newest first.
    async fn list_approvals(&self, vault_ids: &[Uuid]) -> Result<Vec<Approval>>;

    /// Records a decision on a pending approval; `EtagMismatch`-like conflict when it was
    /// decided meanwhile.
    async fn decide_approval(&self, approval: &Approval) -> Result<()>;

    /// Puts an approval claimed for approving back to pending (its action could not be carried
    /// out); nothing when it is no longer approved.
    async fn reopen_approval(&self, id: Uuid) -> Result<()>;

    /// Policies of one principal, or of all.
    async fn list_policies(&self, principal_id: Option<Uuid>) -> Result<Vec<crate::authz::Policy>>;
}
