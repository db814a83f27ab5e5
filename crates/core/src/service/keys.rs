use chrono::NaiveDate;
use uuid::Uuid;

use super::approvals::Decided;
use super::{Keyplane, distributor, now};
use crate::authz::{Caller, Permission};
use crate::distribution;
use crate::error::{Error, ErrorCode, Result};
use crate::etag::{self, IfMatch};
use crate::lifecycle::{self, KeyAction, KeyFacts};
use crate::model::*;
use crate::naming::{NamingContext, NamingError, NamingScheme};
use crate::ports::{ImportedMaterial, KeyWrite, MaterialBinding};
use crate::query::KeyQuery;
use crate::validate::{self, DateDuration};

#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub template_name: Option<String>,
    pub vault_id: Option<Uuid>,
    pub label: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub label: Option<String>,
    pub activation_date: Option<String>,
    pub expiration_date: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<Tag>>,
    /// An ISO-8601 duration; empty clears it.
    pub rotation_interval: Option<String>,
    pub deactivate_on_expiration: Option<bool>,
    /// An ISO-8601 duration; empty clears it.
    pub destroy_after_deactivation: Option<String>,
}

fn naming_error(e: NamingError) -> Error {
    match e {
        NamingError::MissingPlaceholders(names) => Error::Invalid {
            code: ErrorCode::MissingField,
            message: format!(
                "the label is required: the template's naming scheme needs values for {}",
                names.join(", ")
            ),
            target: Some(crate::error::Target {
                kind: crate::error::TargetKind::Field,
                name: "label".to_owned(),
            }),
        },
        other => Error::invalid_field("label", other.to_string()),
    }
}

pub(super) fn tags_of(pairs: Vec<(String, String)>) -> Vec<Tag> {
    pairs
        .into_iter()
        .map(|(name, value)| Tag { name, value })
        .collect()
}

pub(super) fn facts(key: &ManagedKey, template_scheme: Option<&str>) -> KeyFacts {
    KeyFacts {
        state: key.state,
        deactivated_at: key.deactivated_at,
        rotated_at: key.rotated_at,
        created_at: key.stamps.created_at,
        label_uses_system_placeholders: key.label_from_scheme
            && template_scheme
                .and_then(|s| NamingScheme::parse(s).ok())
                .is_some_and(|s| s.uses_system_placeholders()),
    }
}

/// Whether an internal keystore should hold the key, and enabled or not, in a managed state.
fn desired_copy(state: KeyState, present: bool) -> Option<bool> {
    match state {
        KeyState::PreActivation | KeyState::Destroyed | KeyState::DestroyedCompromised => None,
        KeyState::Active => Some(true),
        KeyState::Deactivated | KeyState::Compromised => present.then_some(false),
    }
}

/// What a create adds to a plain [`NewKey`]: material the caller supplied, and for Key Protect the
/// key active at once, with its ring and aliases in its internal keystore.
#[derive(Default)]
pub(super) struct CreateExtras<'a> {
    pub supplied: Option<&'a ImportedMaterial<'a>>,
    pub active: bool,
    pub key_protect: Option<crate::ports::KeyProtectPlacement>,
}

impl Keyplane {
    /// A key, whoever asks (for the services' own use).
    pub(crate) async fn load_key(&self, id: Uuid) -> Result<ManagedKey> {
        self.store
            .get_managed_key(id)
            .await?
            .ok_or_else(|| Error::not_found("managed key", id))
    }

    /// Refuses `permission` on `key` to a caller without it; a key in a vault hidden from the
    /// caller does not exist.
    pub(crate) fn check_key(
        caller: &Caller,
        permission: Permission,
        key: &ManagedKey,
    ) -> Result<()> {
        caller.require_in(permission, key.vault.id, || {
            Error::not_found("managed key", key.id)
        })
    }

    /// A key the caller may act on with `permission`.
    async fn key_for(
        &self,
        caller: &Caller,
        permission: Permission,
        id: Uuid,
    ) -> Result<ManagedKey> {
        let key = self.load_key(id).await?;
        Self::check_key(caller, permission, &key)?;
        Ok(key)
    }

    pub async fn get_key(&self, caller: &Caller, id: Uuid) -> Result<ManagedKey> {
        self.key_for(caller, Permission::Read, id).await
    }

    /// Keys in the vaults the caller may list, within the query's filters.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        mut query: KeyQuery,
    ) -> Result<Page<ManagedKey>> {
        caller.narrow_listing(&mut query.vault_ids)?;
        self.store.list_managed_keys(&query).await
    }

    pub async fn create_key(&self, caller: &Caller, input: NewKey) -> Result<ManagedKey> {
        self.create_key_with(caller, input, CreateExtras::default())
            .await
    }

    /// Creates a key; with supplied material it is imported, and then (or when asked) the key
    /// starts active, whatever the template's initial state.
    pub(super) async fn create_key_with(
        &self,
        caller: &Caller,
        input: NewKey,
        extras: CreateExtras<'_>,
    ) -> Result<ManagedKey> {
        let supplied = extras.supplied;
        let vault_id = input
            .vault_id
            .ok_or_else(|| Error::missing_field("vault.id"))?;
        let vault = self
            .target_vault(caller, Permission::KeyCreate, vault_id)
            .await?;
        let template_name = input
            .template_name
            .ok_or_else(|| Error::missing_field("template_name"))?;
        validate::template_name("template_name", &template_name)?;
        let description = input.description.unwrap_or_default();
        validate::description("description", &description)?;
        let tags = input.tags.unwrap_or_default();
        validate::tags("tags", &tags)?;
        if let Some(l) = &input.label {
            validate::key_label(l)?;
        }
        let template = self
            .store
            .find_template(vault_id, &template_name)
            .await?
            .ok_or_else(|| {
                Error::invalid_field(
                    "template_name",
                    format!(
                        "no template named '{template_name}' exists in vault '{}'",
                        vault.name
                    ),
                )
            })?;
        if template.state == TemplateState::Archived {
            return Err(Error::conflict(
                ErrorCode::TemplateArchived,
                format!(
                    "template '{template_name}' is archived; no new keys can be created from it"
                ),
            ));
        }
        let created = now();
        let today = created.date_naive();
        let activation_date =
            DateDuration::parse("key.activation_date", &template.key.activation_date)?.after(today);
        let expiration_date =
            DateDuration::parse("key.expiration_date", &template.key.expiration_date)?.after(today);
        let ctx = NamingContext {
            created: today,
            expiration: expiration_date,
        };
        let (label, label_tags, label_from_scheme) = match (&template.naming_scheme, input.label) {
            (Some(raw), label) => {
                let scheme =
                    NamingScheme::parse(raw).map_err(|e| Error::internal(e.to_string()))?;
                match label {
                    Some(l) => {
                        let tags = scheme.match_label(&l, &ctx).map_err(naming_error)?;
                        (l, tags_of(tags), true)
                    }
                    None => {
                        let (l, tags) = scheme.generate_label(&ctx).map_err(naming_error)?;
                        (l, tags_of(tags), true)
                    }
                }
            }
            (None, Some(l)) => (l, Vec::new(), false),
            (None, None) => return Err(Error::missing_field("label")),
        };
        validate::key_label(&label)?;
        let entry = template.keystore();
        let label_in_keystore = match &entry.naming_scheme {
            Some(raw) => NamingScheme::parse(raw)
                .ok()
                .and_then(|s| s.generate_label(&ctx).ok())
                .map_or_else(|| label.clone(), |(l, _)| l),
            None => label.clone(),
        };
        let mut key = ManagedKey {
            id: new_id(),
            vault,
            template: template.reference(),
            template_version: template.version,
            version: 1,
            label,
            description,
            state: KeyState::PreActivation,
            algorithm: template.key.algorithm,
            size: template.key.size,
            verification_patterns: Vec::new(),
            activation_date,
            expiration_date,
            label_tags,
            tags,
            instances: vec![KeyInstance {
                id: new_id(),
                label_in_keystore: distribution::label_in_keystore(
                    &label_in_keystore,
                    entry.keystore_type,
                ),
                instance_type: template.key.algorithm.instance_type(),
                keystore_type: entry.keystore_type,
                group: entry.group.clone(),
                properties: entry.properties.clone(),
            }],
            status_in_keystores: Vec::new(),
            deactivate_on_rotation: template.key.deactivate_on_rotation,
            managing_systems: template.managing_systems.clone(),
            rotated_at: None,
            deactivated_at: None,
            label_from_scheme,
            rotation_interval: template.key.schedule.rotation_interval.clone(),
            deactivate_on_expiration: template.key.schedule.deactivate_on_expiration,
            destroy_after_deactivation: template.key.schedule.destroy_after_deactivation.clone(),
            adopted_versions: 0,
            stamps: Stamps::new(&caller.actor, created),
            revision: 1,
        };
        let targets = self.store.vault_keystores(vault_id).await?;
        let targets: Vec<Keystore> = distribution::resolve_targets(entry, &targets)
            .into_iter()
            .cloned()
            .collect();
        for target in &targets {
            distribution::check_placement(target, key.algorithm)?;
        }
        let mut write = KeyWrite {
            key_protect: extras.key_protect,
            ..KeyWrite::default()
        };
        if template.key.state == InitialKeyState::Active || supplied.is_some() || extras.active {
            key.state = KeyState::Active;
            self.add_material(&mut key, &mut write, supplied).await?;
        }
        self.distribute(&mut key, &targets, &[], &mut write);
        self.save_key(&key, None, &write).await?;
        // The record as saved is what a read would return.
        Ok(key)
    }

    /// Generates (or imports, when `supplied`) the material of `key.version` and records its
    /// verification patterns.
    async fn add_material(
        &self,
        key: &mut ManagedKey,
        write: &mut KeyWrite,
        supplied: Option<&ImportedMaterial<'_>>,
    ) -> Result<()> {
        self.engine.open_vault(key.vault.id).await?;
        let binding = MaterialBinding {
            vault_id: key.vault.id,
            key_id: key.id,
            version: key.version,
        };
        if let Some(imported) = supplied {
            let material =
                self.engine
                    .import_material(key.algorithm, key.size, &binding, imported)?;
            key.verification_patterns = material.verification_patterns.clone();
            write.new_material.push(material);
            write.imported = true;
            return Ok(());
        }
        let material = match self.take_pooled(key.algorithm, key.size, &binding).await? {
            Some(m) => m,
            None => {
                // RSA generation takes up to a second: kept off the async workers.
                let engine = self.engine.clone();
                let (algorithm, size) = (key.algorithm, key.size);
                tokio::task::spawn_blocking(move || engine.generate(algorithm, size, &binding))
                    .await
                    .map_err(|e| Error::internal(format!("key generation task: {e}")))??
            }
        };
        key.verification_patterns = material.verification_patterns.clone();
        write.new_material.push(material);
        Ok(())
    }

    /// Brings every internal target keystore in line with the managed state and records the
    /// resulting status of every target. External targets get an honest error status.
    fn distribute(
        &self,
        key: &mut ManagedKey,
        targets: &[Keystore],
        copies: &[InternalCopy],
        write: &mut KeyWrite,
    ) {
        let removed: Vec<KeyStatusInKeystore> = key
            .status_in_keystores
            .iter()
            .filter(|s| s.removed && !targets.iter().any(|t| t.id == s.keystore.id))
            .cloned()
            .collect();
        let mut statuses = Vec::with_capacity(targets.len() + removed.len());
        for target in targets {
            let reference = target.reference();
            if !target.is_internal() {
                if self.has_connector(target.keystore_type) {
                    // The worker converges it and records what it then holds; until then the
                    // last observation stands (or "not present" for a new target).
                    write.converge_in.push(target.id);
                    statuses.push(
                        key.status_in_keystores
                            .iter()
                            .find(|s| s.keystore.id == target.id && !s.removed)
                            .cloned()
                            .unwrap_or_else(|| {
                                distributor::observed_status(key.state, &reference, None, None)
                            }),
                    );
                } else {
                    statuses.push(distribution::unreachable_status(&reference));
                }
                continue;
            }
            let existing = copies.iter().find(|c| c.keystore_id == target.id);
            let after = match desired_copy(key.state, existing.is_some()) {
                None => {
                    if existing.is_some() {
                        write.remove_copies_from.push(target.id);
                    }
                    None
                }
                Some(enabled) => {
                    let copy = InternalCopy {
                        keystore_id: target.id,
                        managed_key_id: key.id,
                        key_id_in_keystore: existing.map_or_else(new_id, |c| c.key_id_in_keystore),
                        label: key.instances[0].label_in_keystore.clone(),
                        enabled,
                        version: key.version,
                        key_ring: existing.map_or_else(
                            || crate::ports::DEFAULT_KEY_RING.to_owned(),
                            |c| c.key_ring.clone(),
                        ),
                    };
                    if existing != Some(&copy) {
                        write.upsert_copies.push(copy.clone());
                    }
                    Some(copy)
                }
            };
            statuses.push(distribution::internal_status(
                key,
                &reference,
                after.as_ref(),
            ));
        }
        // Copies in keystores the key no longer targets stay disabled until the key is destroyed.
        for stray in copies
            .iter()
            .filter(|c| !targets.iter().any(|t| t.id == c.keystore_id))
        {
            match desired_copy(key.state, true) {
                None => write.remove_copies_from.push(stray.keystore_id),
                Some(_) if stray.enabled => write.upsert_copies.push(InternalCopy {
                    enabled: false,
                    ..stray.clone()
                }),
                Some(_) => {}
            }
        }
        statuses.extend(removed);
        key.status_in_keystores = statuses;
    }

    /// Saves a key with its write; queued distribution wakes the worker once committed.
    async fn save_key(
        &self,
        key: &ManagedKey,
        read_revision: Option<i64>,
        write: &KeyWrite,
    ) -> Result<()> {
        self.store
            .save_managed_key(key, read_revision, write)
            .await?;
        if !write.converge_in.is_empty() {
            self.distribution_queued();
        }
        Ok(())
    }

    /// Queues a convergence in every external keystore holding a copy of the key, including
    /// those it no longer targets (it left the template's group): such a copy stays disabled,
    /// and follows the key when it is destroyed.
    async fn converge_held_copies(&self, key_id: Uuid, write: &mut KeyWrite) -> Result<()> {
        for copy in self.store.external_copies_of_key(key_id).await? {
            if !write.converge_in.contains(&copy.keystore_id) {
                write.converge_in.push(copy.keystore_id);
            }
        }
        Ok(())
    }

    /// The keystores a key targets now: its current ones that still exist.
    async fn current_targets(&self, key: &ManagedKey) -> Result<Vec<Keystore>> {
        let all = self.store.vault_keystores(key.vault.id).await?;
        Ok(all
            .into_iter()
            .filter(|k| key.referenced_keystores().any(|r| r.id == k.id))
            .collect())
    }

    async fn apply(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        action: KeyAction,
    ) -> Result<ManagedKey> {
        self.apply_with(caller, id, if_match, action, None).await
    }

    /// Applies a lifecycle action; a rotation with `supplied` material imports it as the new
    /// version.
    pub(super) async fn apply_with(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        action: KeyAction,
        supplied: Option<&ImportedMaterial<'_>>,
    ) -> Result<ManagedKey> {
        let key = self.load_key(id).await?;
        // Decided on the key as loaded: what a destroy needs depends on its state.
        Self::check_key(caller, Permission::for_lifecycle(action, key.state), &key)?;
        self.carry_out_on(caller, key, if_match, action, supplied)
            .await
    }

    /// Carries out a lifecycle action that is part of an operation already authorised (a Key
    /// Protect create activates; its delete deactivates on the way to the destroy).
    pub(super) async fn carry_out(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        action: KeyAction,
        supplied: Option<&ImportedMaterial<'_>>,
    ) -> Result<ManagedKey> {
        let key = self.load_key(id).await?;
        self.carry_out_on(caller, key, if_match, action, supplied)
            .await
    }

    async fn carry_out_on(
        &self,
        caller: &Caller,
        mut key: ManagedKey,
        if_match: Option<&IfMatch>,
        action: KeyAction,
        supplied: Option<&ImportedMaterial<'_>>,
    ) -> Result<ManagedKey> {
        let id = key.id;
        etag::check(if_match, key.revision, id)?;
        let template = self.store.get_template(key.template.id).await?;
        let at = now();
        let next = lifecycle::transition(
            &facts(
                &key,
                template.as_ref().and_then(|t| t.naming_scheme.as_deref()),
            ),
            action,
            &self.policy,
            at,
        )?;
        let read_revision = key.revision;
        let mut write = KeyWrite::default();
        match action {
            KeyAction::Activate => {
                // An adopted key's material is its copies': nothing is made for it here.
                if key.verification_patterns.is_empty() && key.material() == KeyMaterial::Held {
                    self.add_material(&mut key, &mut write, None).await?;
                }
                key.deactivated_at = None;
            }
            KeyAction::Deactivate | KeyAction::Compromise => {
                if key.deactivated_at.is_none() || action == KeyAction::Deactivate {
                    key.deactivated_at = Some(at);
                }
                // The key is out of use as a whole: older versions still active follow it.
                for v in self.store.key_versions(id).await? {
                    if v.version != key.version && v.state == KeyState::Active {
                        write.version_states.push((v.version, next));
                    }
                }
            }
            KeyAction::Destroy => write.erase_material = true,
            KeyAction::Rotate => {
                if key.deactivate_on_rotation {
                    write
                        .version_states
                        .push((key.version, KeyState::Deactivated));
                }
                key.version += 1;
                key.rotated_at = Some(at);
                self.add_material(&mut key, &mut write, supplied).await?;
            }
            KeyAction::Remove | KeyAction::Edit => {}
        }
        key.state = next;
        key.stamps.touch(&caller.actor, at);
        key.revision += 1;
        let targets = self.current_targets(&key).await?;
        let copies = self.store.internal_copies_of_key(id).await?;
        self.distribute(&mut key, &targets, &copies, &mut write);
        self.converge_held_copies(id, &mut write).await?;
        self.save_key(&key, Some(read_revision), &write).await?;
        if write.erase_material {
            self.engine.forget_material(id);
        }
        Ok(key)
    }

    pub async fn activate_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<ManagedKey> {
        self.apply(caller, id, if_match, KeyAction::Activate).await
    }

    pub async fn deactivate_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<ManagedKey> {
        self.apply(caller, id, if_match, KeyAction::Deactivate)
            .await
    }

    /// Destroys a key, or, in a vault under dual control, records the request for a second
    /// person to approve.
    pub async fn destroy_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<Decided<ManagedKey>> {
        let key = self.load_key(id).await?;
        Self::check_key(
            caller,
            Permission::for_lifecycle(KeyAction::Destroy, key.state),
            &key,
        )?;
        if let Some(approval) = self
            .request_approval(caller, &key, if_match, ApprovalAction::DestroyKey, 202)
            .await?
        {
            return Ok(Decided::Requested(approval));
        }
        self.apply(caller, id, if_match, KeyAction::Destroy)
            .await
            .map(Decided::Done)
    }

    pub async fn rotate_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<ManagedKey> {
        self.apply(caller, id, if_match, KeyAction::Rotate).await
    }

    pub async fn compromise_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<ManagedKey> {
        self.apply(caller, id, if_match, KeyAction::Compromise)
            .await
    }

    pub async fn update_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        patch: KeyPatch,
    ) -> Result<ManagedKey> {
        let mut key = self.key_for(caller, Permission::KeyEdit, id).await?;
        etag::check(if_match, key.revision, id)?;
        lifecycle::transition(&facts(&key, None), KeyAction::Edit, &self.policy, now())?;
        let read_revision = key.revision;
        if let Some(label) = patch.label.filter(|l| *l != key.label) {
            if key.label_from_scheme {
                return Err(Error::invalid_field(
                    "label",
                    "the label was built from the template's naming scheme and cannot be changed",
                ));
            }
            validate::key_label(&label)?;
            for instance in &mut key.instances {
                instance.label_in_keystore =
                    distribution::label_in_keystore(&label, instance.keystore_type);
            }
            key.label = label;
        }
        if let Some(d) = patch.description {
            validate::description("description", &d)?;
            key.description = d;
        }
        let parse_date = |field: &str, v: &str| -> Result<Option<NaiveDate>> {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::date(field, v, false).map(Some)
            }
        };
        if let Some(d) = &patch.activation_date {
            key.activation_date = parse_date("activation_date", d)?;
        }
        if let Some(d) = &patch.expiration_date {
            key.expiration_date = parse_date("expiration_date", d)?;
        }
        if let (Some(a), Some(e)) = (key.activation_date, key.expiration_date)
            && e < a
        {
            return Err(Error::invalid_field(
                "expiration_date",
                "expiration_date must not be before activation_date",
            ));
        }
        if let Some(tags) = patch.tags {
            validate::tags("tags", &tags)?;
            key.tags = tags;
        }
        let cleared = |text: String| Some(text).filter(|t| !t.is_empty());
        let before = KeySchedule {
            rotation_interval: key.rotation_interval.clone(),
            deactivate_on_expiration: key.deactivate_on_expiration,
            destroy_after_deactivation: key.destroy_after_deactivation.clone(),
        };
        let mut schedule = before.clone();
        if let Some(interval) = patch.rotation_interval {
            schedule.rotation_interval = cleared(interval);
        }
        if let Some(on) = patch.deactivate_on_expiration {
            schedule.deactivate_on_expiration = on;
        }
        if let Some(after) = patch.destroy_after_deactivation {
            schedule.destroy_after_deactivation = cleared(after);
        }
        self.check_schedule_change(caller, key.vault.id, &before, &schedule, "")
            .await?;
        key.rotation_interval = schedule.rotation_interval;
        key.deactivate_on_expiration = schedule.deactivate_on_expiration;
        key.destroy_after_deactivation = schedule.destroy_after_deactivation;
        key.stamps.touch(&caller.actor, now());
        key.revision += 1;
        let targets = self.current_targets(&key).await?;
        let copies = self.store.internal_copies_of_key(id).await?;
        let mut write = KeyWrite::default();
        // A rename reaches the copies the internal keystores hold.
        self.distribute(&mut key, &targets, &copies, &mut write);
        self.save_key(&key, Some(read_revision), &write).await?;
        Ok(key)
    }

    /// Removes a destroyed key from its vault, or, under dual control, records the request.
    pub async fn delete_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<Decided<()>> {
        let key = self.key_for(caller, Permission::KeyRemove, id).await?;
        if let Some(approval) = self
            .request_approval(caller, &key, if_match, ApprovalAction::RemoveKey, 202)
            .await?
        {
            return Ok(Decided::Requested(approval));
        }
        self.remove_key(caller, id, if_match)
            .await
            .map(Decided::Done)
    }

    /// Removes a destroyed key, dual control aside (an approved request).
    pub(super) async fn remove_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<()> {
        let key = self.key_for(caller, Permission::KeyRemove, id).await?;
        etag::check(if_match, key.revision, id)?;
        lifecycle::transition(&facts(&key, None), KeyAction::Remove, &self.policy, now())?;
        self.store.delete_managed_key(id, key.revision).await
    }

    /// Reads what every target keystore holds (no change).
    pub async fn key_status_in_keystores(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<Vec<KeyStatusInKeystore>> {
        let key = self.key_for(caller, Permission::Read, id).await?;
        let targets = self.current_targets(&key).await?;
        let copies = self.store.internal_copies_of_key(id).await?;
        // Compare the managed state with what is held, without fixing anything.
        let mut statuses = Vec::new();
        for target in &targets {
            let reference = target.reference();
            statuses.push(if target.is_internal() {
                distribution::internal_status(
                    &key,
                    &reference,
                    copies.iter().find(|c| c.keystore_id == target.id),
                )
            } else {
                self.read_external_status(&key, target).await
            });
        }
        statuses.extend(
            key.status_in_keystores
                .iter()
                .filter(|s| s.removed)
                .cloned(),
        );
        Ok(statuses)
    }

    /// Pushes the managed state to every target keystore; removed keystores are dropped.
    pub async fn sync_key(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> Result<Vec<KeyStatusInKeystore>> {
        let mut key = self.key_for(caller, Permission::KeyDistribute, id).await?;
        etag::check(if_match, key.revision, id)?;
        let read_revision = key.revision;
        key.status_in_keystores.retain(|s| !s.removed);
        let mut targets = self.current_targets(&key).await?;
        // A keystore the template's group reaches and the key does not (one reconnected under a
        // new id, one added to the group) is synced too: a copy found there is re-linked.
        if let Some(template) = self.store.get_template(key.template.id).await?
            && key.state.lives_in_keystores()
        {
            let all = self.store.vault_keystores(key.vault.id).await?;
            for reached in distribution::resolve_targets(template.keystore(), &all) {
                if !targets.iter().any(|t| t.id == reached.id) {
                    targets.push(reached.clone());
                }
            }
        }
        self.refuse_unheld_targets(&key, &targets).await?;
        let copies = self.store.internal_copies_of_key(id).await?;
        let mut write = KeyWrite::default();
        self.distribute(&mut key, &targets, &copies, &mut write);
        key.stamps.touch(&caller.actor, now());
        key.revision += 1;
        self.save_key(&key, Some(read_revision), &write).await?;
        Ok(key.status_in_keystores)
    }

    /// Re-resolves the key's targets from its template: installs where the group now reaches,
    /// and takes copies out of keystores that left it. `dry_run` returns the would-be key.
    pub async fn update_key_from_template(
        &self,
        caller: &Caller,
        id: Uuid,
        if_match: Option<&IfMatch>,
        dry_run: bool,
    ) -> Result<ManagedKey> {
        let mut key = self.key_for(caller, Permission::KeyDistribute, id).await?;
        etag::check(if_match, key.revision, id)?;
        let template = self
            .store
            .get_template(key.template.id)
            .await?
            .ok_or_else(|| Error::not_found("template", key.template.id))?;
        if template.state == TemplateState::Archived {
            return Err(Error::conflict(
                ErrorCode::TemplateArchived,
                format!(
                    "template '{}' is archived; its keys cannot be realigned",
                    template.name
                ),
            ));
        }
        if !matches!(
            key.state,
            KeyState::Active | KeyState::Deactivated | KeyState::PreActivation
        ) {
            return Err(Error::invalid_transition(format!(
                "cannot update a key in state {} from its template",
                key.state
            )));
        }
        let read_revision = key.revision;
        // Realigning copies the template's schedules onto the key: changing them takes the
        // rights to their actions, as a key's PATCH does.
        let before = KeySchedule {
            rotation_interval: key.rotation_interval.clone(),
            deactivate_on_expiration: key.deactivate_on_expiration,
            destroy_after_deactivation: key.destroy_after_deactivation.clone(),
        };
        self.check_schedule_change(
            caller,
            key.vault.id,
            &before,
            &template.key.schedule,
            "template.key.",
        )
        .await?;
        let entry = template.keystore();
        let all = self.store.vault_keystores(key.vault.id).await?;
        let targets: Vec<Keystore> = distribution::resolve_targets(entry, &all)
            .into_iter()
            .cloned()
            .collect();
        self.refuse_unheld_targets(&key, &targets).await?;
        let copies = self.store.internal_copies_of_key(id).await?;
        let mut write = KeyWrite::default();
        key.status_in_keystores.retain(|s| s.removed);
        key.instances[0].group = entry.group.clone();
        key.instances[0].properties = entry.properties.clone();
        key.deactivate_on_rotation = template.key.deactivate_on_rotation;
        key.rotation_interval = template.key.schedule.rotation_interval.clone();
        key.deactivate_on_expiration = template.key.schedule.deactivate_on_expiration;
        key.destroy_after_deactivation = template.key.schedule.destroy_after_deactivation.clone();
        key.template.name = template.name.clone();
        key.template_version = template.version;
        self.distribute(&mut key, &targets, &copies, &mut write);
        self.converge_held_copies(id, &mut write).await?;
        if dry_run {
            return Ok(key);
        }
        key.stamps.touch(&caller.actor, now());
        key.revision += 1;
        self.save_key(&key, Some(read_revision), &write).await?;
        Ok(key)
    }

    /// Every version of the key as a key body, newest first, filtered like a key list.
    pub async fn key_versions(
        &self,
        caller: &Caller,
        id: Uuid,
        query: &KeyQuery,
    ) -> Result<Page<ManagedKey>> {
        let key = self.key_for(caller, Permission::Read, id).await?;
        let versions = self.store.key_versions(id).await?;
        let mut items: Vec<ManagedKey> = versions
            .into_iter()
            .map(|v| {
                let mut k = key.clone();
                if v.version != key.version {
                    k.state = v.state;
                    k.verification_patterns = v.verification_patterns;
                    k.rotated_at = None;
                }
                k.version = v.version;
                k
            })
            .filter(|k| query.matches(k))
            .collect();
        items.sort_by_key(|k| std::cmp::Reverse(k.version));
        let total_count = items.len() as i64;
        let start = usize::try_from(query.paging.offset)
            .unwrap_or(usize::MAX)
            .min(items.len());
        let items = items
            .into_iter()
            .skip(start)
            .take(query.paging.limit as usize)
            .collect();
        Ok(Page { items, total_count })
    }
}
