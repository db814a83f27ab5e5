//! Use cases: each public method is one operation of the API, applying the domain rules and
//! persisting through the ports.

mod access;
mod adoption;
mod approvals;
mod audit_events;
mod dataplane;
mod distributor;
mod key_pool;
mod key_protect;
mod key_protect_deletion;
mod key_protect_policies;
mod key_protect_rings;
mod keys;
mod keystores;
mod leadership;
mod observability;
mod schedules;
mod system;
mod templates;
mod vaults;

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

use crate::connector::Connectors;
use crate::lifecycle::LifecyclePolicy;
use crate::ports::{MaterialEngine, Store};

pub use access::{MAX_PRINCIPAL_DESCRIPTION, NewPrincipal};
pub use adoption::{AdoptKey, CopyToAdopt, MAX_ADOPTED_COPIES, MAX_ADOPTED_VERSIONS};
pub use approvals::{APPROVAL_TTL, Decided};
pub use audit_events::Origin;
pub use dataplane::{
    DataKeyUnwrap, DataKeyWrap, InstalledKey, MAX_BATCH, MAX_DATA_KEY_BYTES, UsageContext,
    unknown_instance, wrapped_probe,
};
pub use distributor::DistributionPolicy;
pub use key_pool::KeyPoolPolicy;
pub use key_protect::{
    ALIAS_PATTERN, ImportTokenView, KeyProtectRef, MAX_ALIASES_PER_KEY,
    MAX_IMPORT_TOKEN_RETRIEVALS, MAX_IMPORT_TOKEN_SECONDS, NewKeyProtectKey, SuppliedMaterial,
    check_alias,
};
pub use key_protect_policies::{KeyProtectPolicies, ROTATION_MONTHS};
pub use key_protect_rings::{KEY_RING_PATTERN, MAX_KEY_RINGS, check_key_ring};
pub use keys::{KeyPatch, NewKey};
pub use keystores::{KeystorePatch, NewKeystore};
pub use leadership::LEADER_LEASE;
pub use observability::{KeystoreHealth, MetricsReader, OperationalView};
pub use schedules::{SCHEDULER, SchedulePolicy};
pub use templates::{
    KeyPropertiesInput, KeyPropertiesPatch, NewTemplate, TemplateKeystorePatch, TemplatePatch,
};
pub use vaults::{NewVault, VaultPatch};

/// The services of one keyplane node.
#[derive(Clone)]
pub struct Keyplane {
    store: Arc<dyn Store>,
    engine: Arc<dyn MaterialEngine>,
    policy: LifecyclePolicy,
    key_pool: Arc<key_pool::KeyPool>,
    /// Builds connectors to external keystores; without them external keystores are stored only.
    connectors: Option<Arc<dyn Connectors>>,
    distribution: Arc<distributor::Distribution>,
    /// Denied calls per source, bounded before they reach the trail.
    denials: Arc<crate::audit::denials::DenialLedger>,
    /// Failed API-key exchanges per address, for every edge that signs callers in.
    failed_exchanges: Arc<crate::authn::FailedExchanges>,
    /// Calls per caller and second, for every edge.
    call_rate: Arc<crate::authn::CallRate>,
    /// Whether this node runs scheduled work.
    leadership: Arc<leadership::Leadership>,
    /// External keystores' health as this node last saw it, and the last operational view.
    observed: Arc<observability::Observations>,
    /// How the scheduler runs.
    schedules: SchedulePolicy,
}

impl Keyplane {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<dyn MaterialEngine>,
        policy: LifecyclePolicy,
    ) -> Self {
        Self {
            store,
            engine,
            policy,
            key_pool: Arc::default(),
            connectors: None,
            distribution: Arc::default(),
            denials: Arc::default(),
            failed_exchanges: Arc::default(),
            call_rate: Arc::default(),
            leadership: Arc::default(),
            observed: Arc::default(),
            schedules: SchedulePolicy::default(),
        }
    }

    /// Paces distribution to external keystores; run [`Keyplane::run_distribution`] to start it.
    #[must_use]
    pub fn with_distribution_policy(mut self, policy: DistributionPolicy) -> Self {
        self.distribution = Arc::new(distributor::Distribution::new(policy));
        self
    }

    /// Connects external keystores through `connectors`.
    #[must_use]
    pub fn with_connectors(mut self, connectors: Arc<dyn Connectors>) -> Self {
        self.connectors = Some(connectors);
        self
    }

    /// Limits each caller to `per_second` calls (twice that in a burst) on every edge; 0 for
    /// no limit.
    #[must_use]
    pub fn with_call_rate(mut self, per_second: u32) -> Self {
        self.call_rate = Arc::new(crate::authn::CallRate::new(per_second));
        self
    }

    /// The call rate per caller, shared by every edge.
    pub fn call_rate(&self) -> &crate::authn::CallRate {
        &self.call_rate
    }

    /// The throttle on failed API-key exchanges, shared by every edge.
    pub fn failed_exchanges(&self) -> &crate::authn::FailedExchanges {
        &self.failed_exchanges
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn policy(&self) -> &LifecyclePolicy {
        &self.policy
    }

    /// The engine holding the seal: key operations are refused while it is sealed.
    pub fn engine(&self) -> &Arc<dyn MaterialEngine> {
        &self.engine
    }
}

impl Keyplane {
    /// The vault a new resource goes into, where the caller must be allowed `permission`. A
    /// missing vault is a bad `vault.id`, not a 404, and so is one hidden from the caller.
    pub(crate) async fn target_vault(
        &self,
        caller: &crate::authz::Caller,
        permission: crate::authz::Permission,
        vault_id: uuid::Uuid,
    ) -> crate::Result<crate::model::VaultRef> {
        let missing = || {
            crate::Error::invalid_field("vault.id", format!("vault '{vault_id}' does not exist"))
        };
        caller.require_in(permission, vault_id, missing)?;
        self.store.vault_ref(vault_id).await?.ok_or_else(missing)
    }
}

/// Timestamps are kept at millisecond precision, as they are emitted.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Applies `Some` values of a patch.
pub(crate) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
