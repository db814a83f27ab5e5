//! Adoption (`spec/decisions.md` §5): a key whose material lives only in external keystores,
//! brought under Keyplane's governance by reference. Each copy is proven at its keystore before
//! anything is recorded; the key is recorded with its versions (without material) and its
//! copies in one write.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{Keyplane, distributor, now};
use crate::authz::{Caller, Permission};
use crate::connector::RemoteKey;
use crate::distribution;
use crate::error::{Error, ErrorCode, Result};
use crate::model::*;
use crate::naming::{NamingContext, NamingScheme};
use crate::ports::{AdoptedVersion, ExternalCopy, KeyWrite};
use crate::validate;

/// Verification patterns an adopted key may bring, and their sizes.
const MAX_PATTERNS: usize = 8;
const MAX_PATTERN_TEXT: usize = 512;

fn check_patterns(patterns: &[VerificationPattern]) -> Result<()> {
    if patterns.len() > MAX_PATTERNS {
        return Err(Error::invalid_field(
            "verification_patterns",
            format!("at most {MAX_PATTERNS} verification patterns"),
        ));
    }
    let printable = |t: &str| {
        !t.is_empty() && t.len() <= MAX_PATTERN_TEXT && t.chars().all(|c| c.is_ascii_graphic())
    };
    if patterns
        .iter()
        .any(|p| !printable(&p.method) || !printable(&p.value))
    {
        return Err(Error::invalid_field(
            "verification_patterns",
            format!(
                "a verification pattern's method and value are 1 to {MAX_PATTERN_TEXT} printable ASCII characters"
            ),
        ));
    }
    Ok(())
}

/// A keystore's own id for a key, in the form the keystore type gives them: it becomes part of
/// the paths connectors call, so nothing in it may step outside the key it names.
fn check_remote_id(field: &str, keystore_type: KeystoreType, id: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    let valid = match keystore_type {
        // A transit key name, an Azure key name: one path segment.
        KeystoreType::HashicorpVault | KeystoreType::AzureKeyVault => {
            id.chars().all(plain) && id != "." && id != ".."
        }
        // Key ids, ARNs and resource names: segments of those characters and ':'.
        _ => {
            id.chars().all(|c| plain(c) || c == '/' || c == ':')
                && id
                    .split('/')
                    .all(|s| !s.is_empty() && s != "." && s != "..")
        }
    };
    if id.is_empty() || id.len() > 512 || !valid {
        return Err(Error::invalid_field(
            field,
            format!("'{id}' is not a {keystore_type} keystore's id for a key"),
        ));
    }
    Ok(())
}

/// Versions an adopted key may bring (a key rotated daily for a decade stays under it).
pub const MAX_ADOPTED_VERSIONS: u32 = 4096;
/// Copies one adoption may name.
pub const MAX_ADOPTED_COPIES: usize = 16;

/// A key to adopt, as its source describes it.
#[derive(Debug, Clone)]
pub struct AdoptKey {
    /// The id to keep (the source's) when no key has it; a new one is given otherwise.
    pub id: Option<Uuid>,
    /// The id the source knows the key by, which keystores' marks name; `id` when absent.
    pub source_id: Option<Uuid>,
    pub vault_id: Uuid,
    pub template_name: String,
    pub label: String,
    pub description: String,
    pub tags: Vec<Tag>,
    pub label_tags: Vec<Tag>,
    pub state: KeyState,
    pub algorithm: Algorithm,
    pub size: u32,
    /// The key's current version; versions 1 to it are adopted.
    pub version: u32,
    /// States of earlier versions, where the source tells them; others take the key's state.
    pub version_states: Vec<(u32, KeyState)>,
    pub verification_patterns: Vec<VerificationPattern>,
    pub activation_date: Option<NaiveDate>,
    pub expiration_date: Option<NaiveDate>,
    pub created_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub deactivated_at: Option<DateTime<Utc>>,
    pub copies: Vec<CopyToAdopt>,
}

/// A copy the source says a keystore holds.
#[derive(Debug, Clone)]
pub struct CopyToAdopt {
    pub keystore_id: Uuid,
    pub key_id_in_keystore: String,
    /// Its name there (alias, transit name); the key's label fitted to the keystore when absent.
    pub label_in_keystore: Option<String>,
}

impl Keyplane {
    /// Adopts a key: proves every copy at its keystore, then records the key, its versions and
    /// its copies in one write. Nothing is recorded when any copy fails its proof.
    pub async fn adopt_key(&self, caller: &Caller, input: AdoptKey) -> Result<ManagedKey> {
        // Adoption creates a key and links it into keystores.
        let vault = self
            .target_vault(caller, Permission::KeyCreate, input.vault_id)
            .await?;
        self.target_vault(caller, Permission::KeyDistribute, input.vault_id)
            .await?;
        validate::key_label(&input.label)?;
        validate::description("description", &input.description)?;
        validate::tags("tags", &input.tags)?;
        validate::tags("label_tags", &input.label_tags)?;
        validate::template_name("template_name", &input.template_name)?;
        if input.version == 0 || input.version > MAX_ADOPTED_VERSIONS {
            return Err(Error::invalid_field(
                "version",
                format!("version must be between 1 and {MAX_ADOPTED_VERSIONS}"),
            ));
        }
        if input.copies.len() > MAX_ADOPTED_COPIES {
            return Err(Error::invalid_field(
                "copies",
                format!("at most {MAX_ADOPTED_COPIES} copies can be adopted with a key"),
            ));
        }
        match input.state {
            KeyState::PreActivation => {
                return Err(Error::invalid_field(
                    "state",
                    "a pre-active key has no copy in any keystore, so there is nothing to adopt; \
                     create it anew in Keyplane",
                ));
            }
            s if s.lives_in_keystores() && input.copies.is_empty() => {
                return Err(Error::invalid_field(
                    "copies",
                    format!(
                        "a {s} key is adopted through its copies: name at least one keystore copy"
                    ),
                ));
            }
            s if !s.lives_in_keystores() && !input.copies.is_empty() => {
                return Err(Error::invalid_field(
                    "copies",
                    format!("a {s} key has no copies to adopt"),
                ));
            }
            _ => {}
        }
        if let (Some(a), Some(e)) = (input.activation_date, input.expiration_date)
            && e < a
        {
            return Err(Error::invalid_field(
                "expiration_date",
                "expiration_date must not be before activation_date",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (version, state) in &input.version_states {
            if *version == 0 || *version > input.version {
                return Err(Error::invalid_field(
                    "versions",
                    format!(
                        "version {version} is not one of the key's 1 to {}",
                        input.version
                    ),
                ));
            }
            if !seen.insert(*version) {
                return Err(Error::invalid_field(
                    "versions",
                    format!("version {version} is given twice"),
                ));
            }
            if *state == KeyState::PreActivation {
                return Err(Error::invalid_field(
                    "versions",
                    format!("version {version} cannot be pre-active in a key that was in use"),
                ));
            }
        }
        check_patterns(&input.verification_patterns)?;
        // Dates are history: none is later than now. Schedules count from them, so a date in
        // the future would hold a rotation back, and one that says "deactivated" of a key in
        // use would start its destruction clock.
        let at = now();
        for (field, value) in [
            ("created_at", input.created_at),
            ("rotated_at", input.rotated_at),
            ("deactivated_at", input.deactivated_at),
        ] {
            if value.is_some_and(|v| v > at) {
                return Err(Error::invalid_field(
                    field,
                    format!("{field} must not be later than now"),
                ));
            }
        }
        if input.deactivated_at.is_some() && input.state == KeyState::Active {
            return Err(Error::invalid_field(
                "deactivated_at",
                "an active key has no deactivation date",
            ));
        }
        let template = self
            .store
            .find_template(input.vault_id, &input.template_name)
            .await?
            .ok_or_else(|| {
                Error::invalid_field(
                    "template_name",
                    format!(
                        "no template named '{}' exists in vault '{}'",
                        input.template_name, vault.name
                    ),
                )
            })?;
        // An archived template takes no new keys, but an adopted key is not new: the source
        // made it before archiving its template.
        if (input.algorithm, input.size) != (template.key.algorithm, template.key.size) {
            return Err(Error::invalid_field(
                "algorithm",
                format!(
                    "the key is {} {} but template '{}' makes {} {} keys",
                    input.algorithm,
                    input.size,
                    template.name,
                    template.key.algorithm,
                    template.key.size
                ),
            ));
        }
        // The source's id where it is free; another key's id is never taken over. Adopting the
        // same copies twice is refused when they are recorded (one remote key, one managed key).
        let id = match input.id {
            Some(id) if self.store.get_managed_key(id).await?.is_none() => id,
            _ => new_id(),
        };
        // The template's schedules act on the key from now on: adopting it orders them, which
        // takes the rights to their actions, as setting them on a key does.
        self.check_schedule_change(
            caller,
            input.vault_id,
            &KeySchedule::default(),
            &template.key.schedule,
            "template.key.",
        )
        .await?;
        let (label_tags, label_from_scheme) = match &template.naming_scheme {
            Some(raw) => {
                let scheme =
                    NamingScheme::parse(raw).map_err(|e| Error::internal(e.to_string()))?;
                let ctx = NamingContext {
                    created: input.created_at.unwrap_or(at).date_naive(),
                    expiration: input.expiration_date,
                };
                let tags = scheme.match_label(&input.label, &ctx).map_err(|e| {
                    Error::invalid_field(
                        "label",
                        format!(
                            "label '{}' does not follow template '{}''s naming scheme: {e}",
                            input.label, template.name
                        ),
                    )
                })?;
                (super::keys::tags_of(tags), true)
            }
            None => (input.label_tags.clone(), false),
        };
        let entry = template.keystore();
        let vault_keystores = self.store.vault_keystores(input.vault_id).await?;
        let reached = distribution::resolve_targets(entry, &vault_keystores);
        let mut targets: Vec<Keystore> = Vec::with_capacity(input.copies.len());
        for (i, copy) in input.copies.iter().enumerate() {
            let field = format!("copies[{i}].keystore.id");
            let Some(keystore) = reached.iter().find(|k| k.id == copy.keystore_id) else {
                return Err(Error::invalid_field(
                    &field,
                    format!(
                        "keystore '{}' is not one template '{}' reaches in vault '{}' (its type \
                         and group)",
                        copy.keystore_id, template.name, vault.name
                    ),
                ));
            };
            check_remote_id(
                &format!("copies[{i}].key_id_in_keystore"),
                keystore.keystore_type,
                &copy.key_id_in_keystore,
            )?;
            if let Some(label) = &copy.label_in_keystore
                && (label.is_empty()
                    || *label != distribution::label_in_keystore(label, keystore.keystore_type))
            {
                return Err(Error::invalid_field(
                    &format!("copies[{i}].label_in_keystore"),
                    format!(
                        "'{label}' is not a name a {} keystore gives a key",
                        keystore.keystore_type
                    ),
                ));
            }
            if keystore.is_internal() || !self.has_connector(keystore.keystore_type) {
                return Err(Error::invalid_field(
                    &field,
                    format!(
                        "keystore '{}' is not an external keystore Keyplane reaches; only copies \
                         in those can be adopted",
                        keystore.name
                    ),
                ));
            }
            if targets.iter().any(|t| t.id == keystore.id) {
                return Err(Error::invalid_field(
                    &field,
                    format!("keystore '{}' is named twice", keystore.name),
                ));
            }
            targets.push((*keystore).clone());
        }
        let marked_as = input.source_id.or(input.id).unwrap_or(id);
        // A copy marked as a key Keyplane has is that key's, whoever names it.
        let marked_key_exists =
            marked_as != id && self.store.get_managed_key(marked_as).await?.is_some();
        let label_in_keystore = |keystore: &Keystore, copy: &CopyToAdopt| {
            copy.label_in_keystore.clone().unwrap_or_else(|| {
                distribution::label_in_keystore(&input.label, keystore.keystore_type)
            })
        };
        // Proven before anything is written: a copy missing, or not the key the source says,
        // keeps the whole key out.
        let mut statuses = Vec::with_capacity(targets.len());
        let mut copies = Vec::with_capacity(targets.len());
        for (keystore, copy) in targets.iter().zip(&input.copies) {
            let remote = self
                .prove_adopted_copy(
                    keystore,
                    copy,
                    &label_in_keystore(keystore, copy),
                    (id, marked_as, marked_key_exists),
                    input.state,
                )
                .await?;
            // What the key's state makes it there; the proof checked the keystore agrees where it
            // keeps a state of its own.
            let enabled = input.state == KeyState::Active;
            statuses.push(distributor::observed_status(
                input.state,
                &keystore.reference(),
                Some(&remote),
                Some(enabled),
            ));
            copies.push(ExternalCopy {
                keystore_id: keystore.id,
                managed_key_id: id,
                remote_id: Some(remote.remote_id.clone()),
                label: label_in_keystore(keystore, copy),
                installed_version: input.version,
                enabled,
            });
        }
        let instance_label = input.copies.first().zip(targets.first()).map_or_else(
            || distribution::label_in_keystore(&input.label, entry.keystore_type),
            |(copy, keystore)| label_in_keystore(keystore, copy),
        );
        let created_at = input.created_at.unwrap_or(at).min(at);
        let mut stamps = Stamps::new(&caller.actor, at);
        stamps.created_at = created_at;
        let key = ManagedKey {
            id,
            vault,
            template: template.reference(),
            template_version: template.version,
            version: input.version,
            label: input.label,
            description: input.description,
            state: input.state,
            algorithm: input.algorithm,
            size: input.size,
            verification_patterns: input.verification_patterns.clone(),
            activation_date: input.activation_date,
            expiration_date: input.expiration_date,
            label_tags,
            tags: input.tags,
            instances: vec![KeyInstance {
                id: new_id(),
                label_in_keystore: instance_label,
                instance_type: template.key.algorithm.instance_type(),
                keystore_type: entry.keystore_type,
                group: entry.group.clone(),
                properties: entry.properties.clone(),
            }],
            status_in_keystores: statuses,
            deactivate_on_rotation: template.key.deactivate_on_rotation,
            managing_systems: template.managing_systems.clone(),
            rotated_at: input.rotated_at,
            deactivated_at: input.deactivated_at.or_else(|| {
                matches!(input.state, KeyState::Deactivated | KeyState::Compromised).then_some(at)
            }),
            label_from_scheme,
            rotation_interval: template.key.schedule.rotation_interval.clone(),
            deactivate_on_expiration: template.key.schedule.deactivate_on_expiration,
            destroy_after_deactivation: template.key.schedule.destroy_after_deactivation.clone(),
            adopted_versions: input.version,
            stamps,
            revision: 1,
        };
        let adopted_versions = (1..=input.version)
            .map(|version| AdoptedVersion {
                version,
                state: input
                    .version_states
                    .iter()
                    .find(|(v, _)| *v == version)
                    .map_or(input.state, |(_, s)| *s),
                verification_patterns: if version == input.version {
                    input.verification_patterns.clone()
                } else {
                    Vec::new()
                },
                created_at: if version == 1 {
                    created_at
                } else {
                    input.rotated_at.unwrap_or(created_at).min(at)
                },
            })
            .collect();
        // Recorded in one order, so concurrent adoptions on several nodes take their locks alike.
        copies.sort_by(|a, b| (a.keystore_id, &a.remote_id).cmp(&(b.keystore_id, &b.remote_id)));
        let write = KeyWrite {
            // The worker confirms each copy's state as it does for every key.
            converge_in: targets.iter().map(|t| t.id).collect(),
            adopted_versions,
            adopted_copies: copies,
            ..KeyWrite::default()
        };
        self.store.save_managed_key(&key, None, &write).await?;
        if !write.converge_in.is_empty() {
            self.distribution_queued();
        }
        Ok(key)
    }

    /// Reads the copy at its keystore and checks it is the key the source says: it exists under
    /// that id, its state fits the key's, and a mark the keystore keeps names the source's key.
    async fn prove_adopted_copy(
        &self,
        keystore: &Keystore,
        copy: &CopyToAdopt,
        label: &str,
        (key_id, marked_as, marked_key_exists): (Uuid, Uuid, bool),
        state: KeyState,
    ) -> Result<RemoteKey> {
        let unproven = |why: String| Error::Conflict {
            code: ErrorCode::CopyNotProven,
            message: format!(
                "the copy '{}' in keystore '{}' was not adopted: {why}; nothing was recorded",
                copy.key_id_in_keystore, keystore.name
            ),
            params: vec![keystore.id.to_string(), copy.key_id_in_keystore.clone()],
        };
        let connector = self
            .connector(keystore)
            .await?
            .ok_or_else(|| Error::internal("no connector for an external keystore"))?;
        let remote = connector
            .find(Some(&copy.key_id_in_keystore), &copy.key_id_in_keystore)
            .await
            .map_err(|f| {
                Error::KeystoreUnavailable(format!(
                    "keystore '{}' could not be read to prove copy '{}': {f}; nothing was recorded",
                    keystore.name, copy.key_id_in_keystore
                ))
            })?
            .ok_or_else(|| {
                unproven("the keystore holds no such key (absent, or pending deletion)".into())
            })?;
        // Transit keeps no disabled state: every copy there reads as enabled.
        let has_states = keystore.keystore_type != KeystoreType::HashicorpVault;
        if state == KeyState::Active && !remote.enabled {
            return Err(unproven(
                "it is disabled there while the key is active".into(),
            ));
        }
        if has_states && state != KeyState::Active && remote.enabled {
            return Err(unproven(format!(
                "it is enabled there while the key is {state}"
            )));
        }
        let unreadable = |f: crate::connector::RemoteFailure| {
            Error::KeystoreUnavailable(format!(
                "keystore '{}' could not be read to prove copy '{}': {f}; nothing was recorded",
                keystore.name, copy.key_id_in_keystore
            ))
        };
        if let Some(mark) = connector.mark(&remote).await.map_err(unreadable)? {
            let expected = marked_as.to_string();
            if mark != expected {
                return Err(unproven(format!(
                    "the keystore marks it as managed key '{mark}', not '{expected}'"
                )));
            }
            if marked_key_exists {
                return Err(unproven(
                    "the keystore marks it as a key this Keyplane already governs".into(),
                ));
            }
        }
        // Rotations and reinstalls address the copy by this name (an AWS alias, a transit
        // name): it must name this very key.
        match connector.find(None, label).await.map_err(unreadable)? {
            Some(named) if named.remote_id == remote.remote_id => {}
            Some(named) => {
                return Err(unproven(format!(
                    "its name there, '{label}', names another key ('{}')",
                    named.remote_id
                )));
            }
            None => {
                return Err(unproven(format!(
                    "its name there, '{label}', names no key; give the copy's label_in_keystore"
                )));
            }
        }
        if let Some(why) = connector
            .cannot_govern(&remote, key_id)
            .await
            .map_err(unreadable)?
        {
            return Err(unproven(why));
        }
        Ok(remote)
    }

    /// Refuses a keystore delete in `destroy` mode that would destroy the last copy of an adopted
    /// key still in use: Keyplane holds no material to make it again.
    pub(crate) async fn refuse_destroying_last_copies(
        &self,
        keystore: &Keystore,
        targeting: &[ManagedKey],
    ) -> Result<()> {
        let mut blocking = Vec::new();
        for key in targeting
            .iter()
            .filter(|k| k.adopted_versions > 0 && k.state.lives_in_keystores())
        {
            let copies = self.store.external_copies_of_key(key.id).await?;
            if copies.iter().all(|c| c.keystore_id == keystore.id) {
                blocking.push(format!("{} ({}, {})", key.id, key.label, key.state));
            }
        }
        if blocking.is_empty() {
            return Ok(());
        }
        Err(Error::Conflict {
            code: ErrorCode::MaterialNotHeld,
            message: format!(
                "keystore '{}' holds the only copy of adopted key(s) {}: destroying it would \
                 destroy material Keyplane does not hold. Destroy those keys first, or use \
                 mode=deactivate or mode=disconnect",
                keystore.name,
                blocking.join(", ")
            ),
            params: blocking,
        })
    }

    /// Refuses to reach keystores without a copy of an adopted key: Keyplane does not hold the
    /// material it would have to send there.
    pub(crate) async fn refuse_unheld_targets(
        &self,
        key: &ManagedKey,
        targets: &[Keystore],
    ) -> Result<()> {
        if key.material() == KeyMaterial::Held || !key.state.lives_in_keystores() {
            return Ok(());
        }
        let copies = self.store.external_copies_of_key(key.id).await?;
        let missing: Vec<&str> = targets
            .iter()
            .filter(|t| !copies.iter().any(|c| c.keystore_id == t.id))
            .map(|t| t.name.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::Conflict {
            code: ErrorCode::MaterialNotHeld,
            message: format!(
                "key '{}' was adopted: Keyplane does not hold the material of its version {}, so \
                 it cannot be distributed to keystore(s) '{}'; rotate the key to give it a \
                 version Keyplane holds, which then distributes",
                key.label,
                key.version,
                missing.join("', '")
            ),
            params: missing.into_iter().map(str::to_owned).collect(),
        })
    }
}
