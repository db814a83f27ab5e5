//! What an operator watches: the counts behind the metrics, and each keystore's health as
//! this node last saw it.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::authz::{Caller, Permission};
use crate::error::Result;
use crate::model::{HealthStatus, KeystoreType};
use crate::ports::OperationalCounts;

use super::Keyplane;

/// Who reads the metrics: a caller of the API, which must be an administrator, or the separate
/// metrics listener, which the operator opened without authentication on an address of their
/// choosing.
#[derive(Debug, Clone, Copy)]
pub enum MetricsReader<'a> {
    Caller(&'a Caller),
    MetricsListener,
}

/// The counts and states behind the metrics, read at one moment.
#[derive(Debug, Clone)]
pub struct OperationalView {
    pub counts: OperationalCounts,
    pub sealed: bool,
    /// External keystores this node has talked to, with what their last answer said.
    pub keystores: Vec<KeystoreHealth>,
    pub read_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct KeystoreHealth {
    pub id: Uuid,
    pub name: String,
    pub keystore_type: KeystoreType,
    pub health: HealthStatus,
}

/// Each external keystore's health as its last call (a distribution task, a status check)
/// showed it.
#[derive(Debug, Default)]
pub(crate) struct HealthBoard(Mutex<HashMap<Uuid, HealthStatus>>);

impl HealthBoard {
    pub(crate) fn note(&self, keystore: Uuid, health: HealthStatus) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(keystore, health);
    }

    fn seen(&self) -> Vec<(Uuid, HealthStatus)> {
        let board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        board.iter().map(|(id, h)| (*id, *h)).collect()
    }
}

impl Keyplane {
    /// The operational counts for the metrics, to administrators or the metrics listener.
    pub async fn operational_view(&self, reader: MetricsReader<'_>) -> Result<OperationalView> {
        if let MetricsReader::Caller(caller) = reader {
            caller.require(Permission::Administer)?;
        }
        let counts = self.store.operational_counts().await?;
        let mut keystores = Vec::new();
        for (id, health) in self.health.seen() {
            // A keystore deleted since drops out.
            if let Some(k) = self.store.get_keystore(id).await? {
                keystores.push(KeystoreHealth {
                    id,
                    name: k.name,
                    keystore_type: k.keystore_type,
                    health,
                });
            }
        }
        keystores.sort_by_key(|k| k.id);
        Ok(OperationalView {
            counts,
            sealed: self.engine.is_sealed(),
            keystores,
            read_at: Utc::now(),
        })
    }
}
