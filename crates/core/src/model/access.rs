//! Identities that call the API and their API keys.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A user or a service (automation) that calls the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    Service,
}

impl PrincipalKind {
    pub const ALL: [Self; 2] = [Self::User, Self::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub id: Uuid,
    pub name: String,
    pub kind: PrincipalKind,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// An API key as stored: the key itself is only ever shown once, at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub principal_id: Uuid,
    pub name: String,
    #[serde(skip)]
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}
