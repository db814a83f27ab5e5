//! The distribution worker: takes convergence tasks from the outbox and brings each key's copy in
//! an external keystore to the key's managed state. Remote calls run outside any transaction,
//! at most `per_keystore_concurrency` at a time per keystore, with exponential backoff and jitter
//! on retryable failures and a retry budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use super::Keyplane;
use crate::connector::{
    Connector, FailureKind, KeyToInstall, MaterialExport, ProbeCiphertext, RemoteFailure,
    RemoteKey, TransferWrapping,
};
use crate::distribution::{self, Observation};
use crate::error::{Error, ErrorCode, Result};
use crate::model::*;
use crate::ports::{ExternalCopy, KeystoreTask, MaterialBinding, TaskOutcome, TaskResult};

/// How the worker paces itself.
#[derive(Debug, Clone)]
pub struct DistributionPolicy {
    /// Remote calls in flight per keystore.
    pub per_keystore_concurrency: usize,
    /// Attempts before a task is given up (a sync queues it again).
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for DistributionPolicy {
    fn default() -> Self {
        Self {
            per_keystore_concurrency: 8,
            max_attempts: 12,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Tasks claimed per round.
const CLAIM_BATCH: usize = 256;
/// How often due retries are looked for when nothing wakes the worker.
const IDLE_POLL: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(crate) struct Distribution {
    policy: DistributionPolicy,
    wake: Notify,
    limits: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
    /// Connectors by keystore, with the keystore revision they were built from.
    connectors: Mutex<HashMap<Uuid, RevisionedConnector>>,
}

/// A connector and the keystore revision it was built from.
type RevisionedConnector = (i64, Arc<dyn Connector>);

impl Distribution {
    pub(crate) fn new(policy: DistributionPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    pub(crate) fn cached_connector(&self, keystore: &Keystore) -> Option<Arc<dyn Connector>> {
        self.connectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&keystore.id)
            .filter(|(revision, _)| *revision == keystore.revision)
            .map(|(_, c)| c.clone())
    }

    pub(crate) fn cache_connector(&self, keystore: &Keystore, connector: Arc<dyn Connector>) {
        self.connectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(keystore.id, (keystore.revision, connector));
    }

    fn limit(&self, keystore_id: Uuid) -> Arc<Semaphore> {
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(keystore_id)
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.policy.per_keystore_concurrency.max(1)))
            })
            .clone()
    }

    /// Exponential backoff with "full jitter" over the upper half: attempt n waits between
    /// half and all of `first · 2ⁿ`, capped.
    fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .policy
            .first_backoff
            .saturating_mul(1u32 << attempts.min(20))
            .min(self.policy.max_backoff);
        // Random bits from a v4 UUID: no extra dependency for a jitter factor.
        let jitter = f64::from((Uuid::new_v4().as_u128() & 0xffff) as u16) / f64::from(u16::MAX);
        exp.mul_f64(0.5 + jitter / 2.0)
    }
}

/// The material engine's sealed format: this byte, the GCM nonce, ciphertext and tag.
pub(crate) const ENGINE_SEALED_FORMAT: u8 = 1;
const GCM_NONCE_LEN: usize = 12;

/// One key version's material, wrapped for the target by the material engine.
struct VersionExport<'a> {
    keyplane: &'a Keyplane,
    binding: MaterialBinding,
    material: SealedMaterial,
    /// Where the material goes: only a KMIP server takes it unwrapped (over mutual TLS).
    keystore_type: KeystoreType,
}

#[async_trait]
impl MaterialExport for VersionExport<'_> {
    async fn wrapped_for(&self, wrapping: &TransferWrapping) -> Result<Vec<u8>> {
        if *wrapping == TransferWrapping::ClearOverMutualTls
            && self.keystore_type != KeystoreType::Kmip
        {
            return Err(Error::internal(format!(
                "a {} keystore asked for key material unwrapped; only KMIP keystores take it so",
                self.keystore_type
            )));
        }
        self.keyplane
            .engine
            .open_vault(self.binding.vault_id)
            .await?;
        self.keyplane
            .engine
            .wrap_for_transfer(&self.binding, &self.material, wrapping)
    }

    async fn opens_probe(&self, probe: &ProbeCiphertext, expected: &[u8]) -> bool {
        if self
            .keyplane
            .engine
            .open_vault(self.binding.vault_id)
            .await
            .is_err()
        {
            return false;
        }
        // The engine's sealed format is a format byte ahead of the same GCM layout.
        let mut framed = Vec::with_capacity(probe.sealed.len() + 1);
        framed.push(ENGINE_SEALED_FORMAT);
        framed.extend_from_slice(&probe.sealed);
        matches!(
            self.keyplane.engine.decrypt_with(&self.binding, &self.material, &[&framed], &probe.aad),
            Ok(opened) if opened.first().and_then(Option::as_ref).is_some_and(|p| p.as_slice() == expected)
        )
    }

    async fn public_key_der(&self) -> Result<Option<Vec<u8>>> {
        self.keyplane
            .engine
            .open_vault(self.binding.vault_id)
            .await?;
        self.keyplane
            .engine
            .public_key_of(&self.binding, &self.material)
    }

    async fn encrypt_nonce(&self, nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        self.keyplane
            .engine
            .open_vault(self.binding.vault_id)
            .await?;
        let sealed = self
            .keyplane
            .engine
            .encrypt_with(&self.binding, &self.material, &[nonce], b"")?
            .pop()
            .ok_or_else(|| Error::internal("no ciphertext for the nonce"))?;
        // Format byte ‖ 12-byte GCM nonce ‖ ciphertext ‖ tag.
        match sealed.split_first() {
            Some((&ENGINE_SEALED_FORMAT, rest)) if rest.len() > GCM_NONCE_LEN => {
                let (iv, ciphertext) = rest.split_at(GCM_NONCE_LEN);
                Ok((iv.to_vec(), ciphertext.to_vec()))
            }
            _ => Err(Error::internal("unexpected sealed format")),
        }
    }
}

/// The material of an adopted key's version, which only its copies hold: nothing can be wrapped
/// or proven with it here.
struct NotHeld;

#[async_trait]
impl MaterialExport for NotHeld {
    async fn wrapped_for(&self, _wrapping: &TransferWrapping) -> Result<Vec<u8>> {
        Err(not_held())
    }

    async fn opens_probe(&self, _probe: &ProbeCiphertext, _expected: &[u8]) -> bool {
        false
    }

    async fn encrypt_nonce(&self, _nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        Err(not_held())
    }

    async fn public_key_der(&self) -> Result<Option<Vec<u8>>> {
        Err(not_held())
    }
}

fn not_held() -> Error {
    Error::conflict(
        ErrorCode::MaterialNotHeld,
        "this version of the key was adopted: Keyplane does not hold its material",
    )
}

/// The copy a keystore should hold: `None` none, `Some(enabled)` one in that state.
fn desired(state: KeyState, targeted: bool, held: bool) -> Option<bool> {
    match state {
        KeyState::PreActivation | KeyState::Destroyed | KeyState::DestroyedCompromised => None,
        // A keystore the key no longer targets keeps a disabled copy until the key is destroyed.
        KeyState::Active if targeted => Some(true),
        KeyState::Active | KeyState::Deactivated if targeted || held => Some(false),
        // A compromised key goes nowhere new: only a copy already there is kept, disabled.
        KeyState::Compromised if held => Some(false),
        _ => None,
    }
}

fn failed_status(keystore: &KeystoreRef, failure: &RemoteFailure) -> KeyStatusInKeystore {
    let code = if failure.kind.is_retryable() {
        ErrorCode::KeystoreUnreachable
    } else {
        ErrorCode::KeystoreRejected
    };
    distribution::error_status(keystore, code, failure.to_string())
}

/// The status of a key against what a keystore was seen to hold.
pub(crate) fn observed_status(
    state: KeyState,
    keystore: &KeystoreRef,
    remote: Option<&RemoteKey>,
    recorded_enabled: Option<bool>,
) -> KeyStatusInKeystore {
    let seen = match remote {
        None => Observation::NotPresent,
        // A target without a disabled state (transit) holds what keyplane set, as recorded.
        Some(r) if r.enabled && recorded_enabled != Some(false) => Observation::Enabled,
        Some(_) => Observation::Disabled,
    };
    let (status, flag, detail) = distribution::compare(state, seen);
    KeyStatusInKeystore {
        keystore: keystore.clone(),
        status,
        keystore_sync_flag: flag,
        keystore_sync_flag_detail: detail,
        error: None,
        key_id_in_keystore: remote.map(|r| r.remote_id.clone()),
        detail_in_keystore: None,
        removed: false,
    }
}

/// A failure worth recording against the task, with what the status should show.
struct Attempt {
    copy: Option<Option<ExternalCopy>>,
    status: KeyStatusInKeystore,
}

impl Keyplane {
    /// Wakes the worker: tasks were queued.
    pub(crate) fn distribution_queued(&self) {
        self.distribution.wake.notify_one();
    }

    /// Runs the worker until the process ends. Tasks a stopped process left running are
    /// queued again first.
    pub async fn run_distribution(self) {
        match self.store.requeue_interrupted_tasks().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "resuming interrupted distribution tasks"),
            Err(e) => tracing::warn!(error = %e, "could not resume interrupted distribution tasks"),
        }
        loop {
            if self.engine.is_sealed() {
                // Claiming nothing still renews the leases of tasks already running here, so
                // sealing this node does not hand them to another node mid-flight.
                let _ = self.store.claim_tasks(0, Utc::now()).await;
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            let tasks = match self.store.claim_tasks(CLAIM_BATCH, Utc::now()).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming distribution tasks failed");
                    Vec::new()
                }
            };
            if tasks.is_empty() {
                // Woken by this node's writes, another node's, or the poll for due retries.
                tokio::select! {
                    () = self.distribution.wake.notified() => {}
                    () = self.store.tasks_queued_elsewhere() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            for task in tasks {
                let worker = self.clone();
                tokio::spawn(async move { worker.run_task(task).await });
            }
        }
    }

    async fn run_task(&self, task: KeystoreTask) {
        let limit = self.distribution.limit(task.keystore_id);
        let outcome = {
            // Held for the remote work only: recording the outcome frees the slot first.
            let Ok(_permit) = limit.acquire().await else {
                return;
            };
            self.converge(&task).await
        };
        self.observed.note(
            task.keystore_id,
            match &outcome {
                Ok(_) => HealthStatus::Ok,
                // A refusal of one request is an answer: the keystore itself is up.
                Err((failure, _)) if failure.kind == FailureKind::Rejected => HealthStatus::Ok,
                Err((failure, _)) => failure.kind.health(),
            },
        );
        let result = match outcome {
            Ok(attempt) => TaskResult {
                outcome: TaskOutcome::Done,
                copy: attempt.copy,
                status: Some(attempt.status),
            },
            Err((failure, status)) => {
                let attempts = task.attempts + 1;
                let outcome = if failure.kind.is_retryable()
                    && attempts < self.distribution.policy.max_attempts
                {
                    let wait = self.distribution.backoff(task.attempts);
                    TaskOutcome::Retry {
                        at: Utc::now()
                            + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero()),
                        error: failure.to_string(),
                    }
                } else {
                    TaskOutcome::Failed {
                        error: failure.to_string(),
                    }
                };
                TaskResult {
                    outcome,
                    copy: None,
                    status,
                }
            }
        };
        if let Err(e) = self.store.finish_task(&task, result).await {
            // The task stays running in the store and is resumed at the next start.
            tracing::error!(error = %e, task = %task.id, "recording a distribution task failed");
        }
    }

    /// One attempt. On failure the status to record comes with it (when the key still exists).
    async fn converge(
        &self,
        task: &KeystoreTask,
    ) -> std::result::Result<Attempt, (RemoteFailure, Option<KeyStatusInKeystore>)> {
        let local = |e: Error| {
            (
                RemoteFailure::new(FailureKind::Transient, format!("keyplane: {e}")),
                None,
            )
        };
        let keystore = self
            .store
            .get_keystore(task.keystore_id)
            .await
            .map_err(local)?;
        let key = self
            .store
            .get_managed_key(task.managed_key_id)
            .await
            .map_err(local)?;
        let (Some(keystore), Some(key)) = (keystore, key) else {
            // Deleted since: nothing left to converge.
            return Err((
                RemoteFailure::new(
                    FailureKind::Rejected,
                    "the key or keystore no longer exists",
                ),
                None,
            ));
        };
        let reference = keystore.reference();
        let with_status = |f: RemoteFailure| {
            let status = failed_status(&reference, &f);
            (f, Some(status))
        };
        let connector = match self.connector(&keystore).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(with_status(RemoteFailure::new(
                    FailureKind::Rejected,
                    distribution::connector_unavailable_message(keystore.keystore_type),
                )));
            }
            Err(e) => {
                return Err(with_status(RemoteFailure::new(
                    FailureKind::Rejected,
                    e.to_string(),
                )));
            }
        };
        let attempt = self
            .converge_with(connector.as_ref(), &keystore, &key)
            .await
            .map_err(with_status)?;
        Ok(attempt)
    }

    async fn converge_with(
        &self,
        connector: &dyn Connector,
        keystore: &Keystore,
        key: &ManagedKey,
    ) -> std::result::Result<Attempt, RemoteFailure> {
        let local = |e: Error| RemoteFailure::new(FailureKind::Transient, format!("keyplane: {e}"));
        let reference = keystore.reference();
        let recorded = self
            .store
            .external_copy(keystore.id, key.id)
            .await
            .map_err(local)?;
        let label = recorded.as_ref().map_or_else(
            || distribution::label_in_keystore(&key.label, keystore.keystore_type),
            |c| c.label.clone(),
        );
        let mut found = connector
            .find_copy(
                recorded.as_ref().and_then(|c| c.remote_id.as_deref()),
                &label,
                key.id,
            )
            .await?;
        let mut recorded = recorded;
        // Recorded before an install that may never have happened (it failed, or died): what
        // holds the name now may be someone else's.
        let planned = recorded.as_ref().is_some_and(|c| c.remote_id.is_none());
        let mut disowned = false;
        if let Some(remote) = &found
            && (recorded.is_none() || planned)
        {
            // A copy keyplane has no record of (a reconnected keystore): adopted only when the
            // remote proves it holds this very key. One it planned: unless the target's own
            // proof says it is another key.
            let own = self
                .is_own_copy(
                    connector,
                    key,
                    remote,
                    &label,
                    keystore.keystore_type,
                    planned,
                )
                .await?;
            if !own && !key.state.lives_in_keystores() {
                // Nothing of this key is there: what holds the name is left alone, and the
                // plan of an install that never happened is dropped.
                disowned = true;
            } else if !own {
                return Err(RemoteFailure::new(
                    FailureKind::Rejected,
                    format!(
                        "keystore '{}' already holds a key named '{label}' that is not this key; \
                         rename the key or remove that one",
                        keystore.name
                    ),
                ));
            }
            if recorded.is_none() && !disowned {
                recorded = Some(ExternalCopy {
                    keystore_id: keystore.id,
                    managed_key_id: key.id,
                    remote_id: Some(remote.remote_id.clone()),
                    label: label.clone(),
                    installed_version: key.version,
                    enabled: remote.enabled,
                });
            }
        }
        if disowned {
            found = None;
        }
        let targeted = key
            .status_in_keystores
            .iter()
            .any(|s| s.keystore.id == keystore.id && !s.removed);
        let want = desired(key.state, targeted, found.is_some());
        let mut removal_detail = None;
        let (remote, copy) = match (want, found) {
            (None, Some(remote)) => {
                connector.destroy(&remote).await?;
                // What the target keeps meanwhile is said, not an error.
                removal_detail = connector.pending_removal(&remote).await.unwrap_or(None);
                (None, Some(None))
            }
            (None, None) => (None, recorded.as_ref().map(|_| None)),
            (Some(_), None) if key.material() == KeyMaterial::External => {
                return Err(RemoteFailure::new(
                    FailureKind::Rejected,
                    format!(
                        "material_not_held: keystore '{}' holds no copy of this adopted key and                          Keyplane does not hold its material to install one",
                        keystore.name
                    ),
                ));
            }
            (Some(enabled), found) => {
                let material: Box<dyn MaterialExport + '_> = match key.material() {
                    KeyMaterial::Held => {
                        Box::new(self.export_of(key, keystore.keystore_type).await?)
                    }
                    KeyMaterial::External => Box::new(NotHeld),
                };
                let install = KeyToInstall {
                    key_id: key.id,
                    enabled,
                    label: &label,
                    algorithm: key.algorithm,
                    size: key.size,
                    version: key.version,
                    material: material.as_ref(),
                    properties: properties_for(key, keystore.keystore_type),
                };
                let mut installed_version = recorded.as_ref().map_or(0, |c| c.installed_version);
                // What keyplane last set there; a copy installed now is in the state its install
                // reports.
                let mut recorded_enabled = recorded.as_ref().map(|c| c.enabled);
                let mut installed_now = false;
                let mut remote = match found {
                    Some(r) => r,
                    None => {
                        // Recorded first: if this attempt dies mid-install, the next one adopts
                        // what it left instead of refusing a key of that name.
                        let planned = ExternalCopy {
                            keystore_id: keystore.id,
                            managed_key_id: key.id,
                            remote_id: None,
                            label: label.clone(),
                            installed_version: key.version,
                            enabled,
                        };
                        self.store
                            .save_external_copy(&planned)
                            .await
                            .map_err(local)?;
                        installed_version = key.version;
                        let installed = connector.install(&install).await?;
                        recorded_enabled = Some(installed.enabled);
                        installed_now = true;
                        installed
                    }
                };
                if installed_version < key.version && key.state != KeyState::Compromised {
                    // A copy that is not to be usable is disabled before a new version joins
                    // it, so that the new version is never usable there either. A compromised
                    // key's newer material goes nowhere.
                    if !enabled && remote.enabled {
                        remote = connector.set_enabled(&remote, false).await?;
                    }
                    remote = connector.rotate(&remote, &install).await?;
                    installed_version = key.version;
                }
                // A copy installed now reports its state; one that is not to be usable is
                // still disabled everywhere, for what an earlier attempt may have left.
                if installed_now && !enabled {
                    recorded_enabled = None;
                }
                if remote.enabled != enabled || recorded_enabled != Some(enabled) {
                    remote = if enabled {
                        connector.enable(&remote, &install).await?
                    } else {
                        connector.set_enabled(&remote, false).await?
                    };
                }
                if key.state == KeyState::Compromised {
                    remote = connector.mark_compromised(&remote).await?;
                }
                let copy = ExternalCopy {
                    keystore_id: keystore.id,
                    managed_key_id: key.id,
                    remote_id: Some(remote.remote_id.clone()),
                    label: label.clone(),
                    installed_version,
                    enabled,
                };
                (Some(remote), Some(Some(copy)))
            }
        };
        let enabled_now = match &copy {
            Some(Some(c)) => Some(c.enabled),
            _ => recorded.as_ref().map(|c| c.enabled),
        };
        let mut status = observed_status(key.state, &reference, remote.as_ref(), enabled_now);
        status.detail_in_keystore = removal_detail;
        Ok(Attempt { status, copy })
    }

    /// Every `every`, pings each external keystore and compares what it holds with the managed
    /// state, recording drift (`out_of_sync`) on the keys without waiting for a manual sync.
    pub async fn run_drift_checks(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            // One node checks for the deployment: the leader.
            if self.engine.is_sealed() || self.leader_term().await.is_none() {
                continue;
            }
            if let Err(e) = self.check_drift().await {
                tracing::warn!(error = %e, "drift check failed");
            }
        }
    }

    async fn check_drift(&self) -> Result<()> {
        let mut query = crate::query::KeystoreQuery::default();
        loop {
            let page = self.store.list_keystores(&query).await?;
            let count = page.items.len();
            for keystore in page.items {
                if keystore.is_internal() || !self.has_connector(keystore.keystore_type) {
                    continue;
                }
                for key in self.store.keys_targeting_keystore(keystore.id).await? {
                    let Some(stored) = key
                        .status_in_keystores
                        .iter()
                        .find(|s| s.keystore.id == keystore.id && !s.removed)
                    else {
                        continue;
                    };
                    let seen = self.read_external_status(&key, &keystore).await;
                    if seen != *stored {
                        self.store.record_observed_status(key.id, &seen).await?;
                    }
                }
            }
            if count < query.paging.limit as usize {
                return Ok(());
            }
            query.paging.offset += u64::from(query.paging.limit);
        }
    }

    /// The key's newest version, ready to be wrapped for a target.
    async fn export_of(
        &self,
        key: &ManagedKey,
        keystore_type: KeystoreType,
    ) -> std::result::Result<VersionExport<'_>, RemoteFailure> {
        let material = self
            .store
            .sealed_material(key.id, key.version)
            .await
            .map_err(|e| RemoteFailure::new(FailureKind::Transient, format!("keyplane: {e}")))?
            // Erased by a destroy that committed after the key was read: the destroy's own
            // task supersedes this retry.
            .ok_or_else(|| {
                RemoteFailure::new(
                    FailureKind::Transient,
                    format!("version {} of the key has no material", key.version),
                )
            })?;
        Ok(VersionExport {
            keyplane: self,
            binding: MaterialBinding {
                vault_id: key.vault.id,
                key_id: key.id,
                version: key.version,
            },
            material,
            keystore_type,
        })
    }

    /// Whether a remote key is this key: the target proves it its own way, or it encrypts a
    /// fresh probe that the managed material opens. Keys that cannot be proven (no material left,
    /// not AES-256 where only the probe exists) are never adopted.
    async fn is_own_copy(
        &self,
        connector: &dyn Connector,
        key: &ManagedKey,
        remote: &RemoteKey,
        label: &str,
        keystore_type: KeystoreType,
        planned: bool,
    ) -> std::result::Result<bool, RemoteFailure> {
        if key.material() == KeyMaterial::External {
            // An adopted key's copies were proven and recorded when it was adopted; a copy found
            // anywhere else cannot be proven without the material.
            return Ok(false);
        }
        if !key.state.lives_in_keystores() {
            // No material to prove with: a planned copy is trusted unless the target's own mark
            // says it is another key's (or no key's); an unknown one is not adopted.
            return Ok(planned && connector.is_labelled_for(remote, key.id).await? != Some(false));
        }
        let export = self.export_of(key, keystore_type).await?;
        let install = KeyToInstall {
            key_id: key.id,
            enabled: key.state == KeyState::Active,
            label,
            algorithm: key.algorithm,
            size: key.size,
            version: key.version,
            material: &export,
            properties: properties_for(key, keystore_type),
        };
        if let Some(proven) = connector.prove_copy(remote, &install).await? {
            return Ok(proven);
        }
        if planned {
            // Most likely what an interrupted install of this key left; the target has no proof
            // to the contrary.
            return Ok(true);
        }
        if key.algorithm != Algorithm::Aes || key.size != 256 {
            return Ok(false);
        }
        if !remote.enabled && key.state == KeyState::Compromised {
            // A target may have to enable a disabled copy to encrypt the probe: a compromised
            // key's copy is never made usable, not even for a moment.
            return Err(RemoteFailure::new(
                FailureKind::Rejected,
                format!(
                    "a disabled key named '{label}' is there; the key is compromised, so that copy is not enabled even to prove it is this key's, and it is not re-linked"
                ),
            ));
        }
        let probe = Uuid::new_v4().into_bytes();
        let Some(sealed) = connector.encrypt_probe(remote, &probe).await? else {
            return Ok(false);
        };
        Ok(export.opens_probe(&sealed, &probe).await)
    }

    /// What an external keystore holds for a key, read now.
    pub(crate) async fn read_external_status(
        &self,
        key: &ManagedKey,
        keystore: &Keystore,
    ) -> KeyStatusInKeystore {
        let reference = keystore.reference();
        let connector = match self.connector(keystore).await {
            Ok(Some(c)) => c,
            _ => return distribution::unreachable_status(&reference),
        };
        let recorded = match self.store.external_copy(keystore.id, key.id).await {
            Ok(r) => r,
            Err(e) => {
                return failed_status(
                    &reference,
                    &RemoteFailure::new(FailureKind::Transient, e.to_string()),
                );
            }
        };
        let label = recorded.as_ref().map_or_else(
            || distribution::label_in_keystore(&key.label, keystore.keystore_type),
            |c| c.label.clone(),
        );
        match connector
            .find_copy(
                recorded.as_ref().and_then(|c| c.remote_id.as_deref()),
                &label,
                key.id,
            )
            .await
        {
            // A key of that name keyplane never recorded is not this key's copy.
            Ok(found) => observed_status(
                key.state,
                &reference,
                found.as_ref().filter(|_| recorded.is_some()),
                recorded.as_ref().map(|c| c.enabled),
            ),
            Err(f) => failed_status(&reference, &f),
        }
    }

    pub(crate) fn has_connector(&self, keystore_type: KeystoreType) -> bool {
        self.connectors
            .as_ref()
            .is_some_and(|c| c.supports(keystore_type))
    }

    /// Recent distribution tasks of a keystore.
    pub async fn keystore_tasks(
        &self,
        caller: &crate::authz::Caller,
        id: Uuid,
    ) -> Result<Vec<crate::ports::TaskView>> {
        self.keystore_for(caller, crate::authz::Permission::Read, id)
            .await?;
        self.store.keystore_tasks(id, 100).await
    }
}

/// A key's properties for keystores of `keystore_type` (from the template entry its instance
/// was built from); none when it has no such instance.
fn properties_for(key: &ManagedKey, keystore_type: KeystoreType) -> &KeystoreKeyProperties {
    static NONE: std::sync::LazyLock<KeystoreKeyProperties> =
        std::sync::LazyLock::new(KeystoreKeyProperties::default);
    key.instances
        .iter()
        .find(|i| i.keystore_type == keystore_type)
        .map_or(&NONE, |i| &i.properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let d = Distribution::default();
        let first = d.backoff(0);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        let late = d.backoff(30);
        assert!(late <= Duration::from_secs(300) && late >= Duration::from_secs(150));
    }

    #[test]
    fn what_a_keystore_should_hold() {
        assert_eq!(desired(KeyState::Active, true, false), Some(true));
        assert_eq!(desired(KeyState::Active, false, false), None);
        assert_eq!(desired(KeyState::Active, false, true), Some(false));
        assert_eq!(desired(KeyState::Deactivated, true, false), Some(false));
        assert_eq!(desired(KeyState::Destroyed, true, true), None);
        assert_eq!(desired(KeyState::PreActivation, true, false), None);
        // A compromised key's material goes nowhere new; a copy already there stays disabled.
        assert_eq!(desired(KeyState::Compromised, true, false), None);
        assert_eq!(desired(KeyState::Compromised, true, true), Some(false));
    }
}
