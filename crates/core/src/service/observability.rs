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
/// showed it, and the operational view last read for the metrics.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    seen: Mutex<HashMap<Uuid, HealthStatus>>,
    /// The last view read, and when.
    view: tokio::sync::Mutex<Option<(std::time::Instant, OperationalView)>>,
}

/// How long a view read for the metrics is served again.
const VIEW_REUSED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl Observations {
    pub(crate) fn note(&self, keystore: Uuid, health: HealthStatus) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(keystore, health);
    }

    fn seen(&self) -> Vec<(Uuid, HealthStatus)> {
        let board = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        board.iter().map(|(id, h)| (*id, *h)).collect()
    }
}

impl Keyplane {
    /// The operational counts for the metrics, to administrators or the metrics listener.
    pub async fn operational_view(&self, reader: MetricsReader<'_>) -> Result<OperationalView> {
        if let MetricsReader::Caller(caller) = reader {
            caller.require(Permission::Administer)?;
        }
        // One read at a time, reused for a second: scrapes, however many, cost the database
        // at most one read a second.
        let mut cached = self.observed.view.lock().await;
        if let Some((at, view)) = cached.as_ref()
            && at.elapsed() < VIEW_REUSED_FOR
        {
            return Ok(view.clone());
        }
        let view = self.read_operational_view().await?;
        *cached = Some((std::time::Instant::now(), view.clone()));
        Ok(view)
    }

    async fn read_operational_view(&self) -> Result<OperationalView> {
        let counts = self.store.operational_counts().await?;
        let mut keystores = Vec::new();
        for (id, health) in self.observed.seen() {
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
