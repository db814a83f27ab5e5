//! Dual control: in a vault that asks for it, destroying or removing a key waits for a second,
//! different principal's approval.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// What waits for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalAction {
    DestroyKey,
    RemoveKey,
}

impl ApprovalAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DestroyKey => "destroy_key",
            Self::RemoveKey => "remove_key",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::DestroyKey, Self::RemoveKey]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Rejected]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub id: Uuid,
    pub vault_id: Uuid,
    pub action: ApprovalAction,
    pub key_id: Uuid,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl Approval {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.state == ApprovalState::Pending && now >= self.expires_at
    }
}
