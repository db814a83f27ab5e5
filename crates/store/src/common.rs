//! What both engines keep alike: the JSON documents they store for templates and keys (the same
//! text in both, so a deployment moves from one to the other row for row), which key filters
//! their kept counts answer, and the audit chain's hash.

use aws_lc_rs::digest;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use keyplane_core::audit::{AuditEvent, GENESIS_HASH};
use keyplane_core::model::*;
use keyplane_core::ports::AuditChainReport;
use keyplane_core::query::{KeyQuery, Paging, Range};

/// Template fields kept as one JSON document (never filtered on).
#[derive(Serialize, Deserialize)]
pub(crate) struct TemplateDoc {
    pub key: KeyProperties,
    pub keystores: Vec<TemplateKeystore>,
    pub description: String,
}

impl TemplateDoc {
    pub fn of(t: &Template) -> Self {
        Self {
            key: t.key.clone(),
            keystores: t.keystores.clone(),
            description: t.description.clone(),
        }
    }
}

/// Managed-key fields kept as one JSON document (never filtered on in SQL).
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyDoc {
    pub description: String,
    pub template_version: i64,
    pub verification_patterns: Vec<VerificationPattern>,
    pub label_tags: Vec<Tag>,
    pub tags: Vec<Tag>,
    pub instances: Vec<KeyInstance>,
    pub deactivate_on_rotation: bool,
    pub managing_systems: Vec<ManagingSystem>,
    pub deactivated_at: Option<DateTime<Utc>>,
    pub label_from_scheme: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_interval: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivate_on_expiration: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_after_deactivation: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub adopted_versions: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl KeyDoc {
    pub fn of(k: &ManagedKey) -> Self {
        Self {
            description: k.description.clone(),
            template_version: k.template_version,
            verification_patterns: k.verification_patterns.clone(),
            label_tags: k.label_tags.clone(),
            tags: k.tags.clone(),
            instances: k.instances.clone(),
            deactivate_on_rotation: k.deactivate_on_rotation,
            managing_systems: k.managing_systems.clone(),
            deactivated_at: k.deactivated_at,
            label_from_scheme: k.label_from_scheme,
            rotation_interval: k.rotation_interval.clone(),
            deactivate_on_expiration: k.deactivate_on_expiration,
            destroy_after_deactivation: k.destroy_after_deactivation.clone(),
            adopted_versions: k.adopted_versions,
        }
    }
}

/// A key list is read by walking the index of its order when at least this share (1 in N) of
/// all keys matches: about N index entries are read per key kept, against sorting every match.
pub(crate) const WALK_WHEN_ONE_IN: i64 = 8;

/// Whether a key query filters on nothing but what `key_counts` keeps: vaults, states,
/// algorithms, sizes and templates.
pub(crate) fn filters_only_counted(q: &KeyQuery) -> bool {
    let bare = KeyQuery {
        vault_ids: Vec::new(),
        states: Vec::new(),
        algorithms: Vec::new(),
        size: Range::default(),
        template_ids: Vec::new(),
        template_name_prefix: None,
        template_types: Vec::new(),
        sort: Vec::new(),
        paging: Paging::default(),
        ..q.clone()
    };
    bare == KeyQuery::default()
}

/// The one date a key query filters on, as `key_day_counts` names it, with its range of days,
/// when it filters on nothing else but vaults and states: its total is then summed from those
/// day rows.
pub(crate) fn day_counted(q: &KeyQuery) -> Option<(&'static str, Range<NaiveDate>)> {
    let dates = [
        ("activation_date", &q.activation_date),
        ("expiration_date", &q.deactivation_date),
        ("created_at", &q.created_at),
        ("updated_at", &q.updated_at),
        ("rotated_at", &q.rotated_at),
    ];
    let mut set = dates
        .into_iter()
        .filter(|(_, r)| r.min.is_some() || r.max.is_some());
    let (field, range) = set.next()?;
    if set.next().is_some() {
        return None;
    }
    let bare = KeyQuery {
        vault_ids: Vec::new(),
        states: Vec::new(),
        activation_date: Range::default(),
        deactivation_date: Range::default(),
        created_at: Range::default(),
        updated_at: Range::default(),
        rotated_at: Range::default(),
        sort: Vec::new(),
        paging: Paging::default(),
        ..q.clone()
    };
    (bare == KeyQuery::default()).then_some((field, *range))
}

/// Whether a key query filters on nothing but states and vaults.
pub(crate) fn filters_only_state_and_vault(q: &KeyQuery) -> bool {
    let bare = KeyQuery {
        vault_ids: Vec::new(),
        states: Vec::new(),
        sort: Vec::new(),
        paging: Paging::default(),
        ..q.clone()
    };
    bare == KeyQuery::default()
}

/// An event's hash, over the one before it (`prev_hash` is part of what is hashed).
pub(crate) fn hash_of(event: &AuditEvent) -> String {
    hex::encode(digest::digest(&digest::SHA256, &event.hashed_bytes()).as_ref())
}

/// Walks the audit chain in sequence order, one stored event at a time.
pub(crate) struct ChainCheck {
    prev: String,
    expected_seq: i64,
    events: u64,
}

impl ChainCheck {
    pub(crate) fn new() -> Self {
        Self {
            prev: GENESIS_HASH.to_owned(),
            expected_seq: 1,
            events: 0,
        }
    }

    /// The next stored event (or, when it cannot be read, its sequence number); the report as
    /// soon as the chain breaks there.
    pub(crate) fn next(
        &mut self,
        event: std::result::Result<AuditEvent, i64>,
    ) -> Option<AuditChainReport> {
        let broken = |at, why| Some(AuditChainReport::broken(self.events, at, why));
        let event = match event {
            Ok(e) => e,
            Err(seq) => return broken(seq, "the event cannot be read"),
        };
        if event.seq != self.expected_seq {
            return broken(self.expected_seq, "the event is missing");
        }
        if event.prev_hash != self.prev {
            return broken(
                event.seq,
                "prev_hash does not match the previous event's hash",
            );
        }
        if hash_of(&event) != event.hash {
            return broken(event.seq, "the event's content does not match its hash");
        }
        self.prev = event.hash;
        self.expected_seq += 1;
        self.events += 1;
        None
    }

    /// The report of a chain read to its end without a break.
    pub(crate) fn finish(self) -> AuditChainReport {
        AuditChainReport {
            events: self.events,
            first_broken: None,
            reason: None,
            head: self.prev,
        }
    }
}

/// Active or deactivated keys whose record names a schedule but whose next due time is not
/// indexed (written by a release before the index). Both engines keep the record as JSON text.
pub(crate) const UNINDEXED_SCHEDULES: &str = r#"SELECT id FROM managed_keys
    WHERE next_scheduled_at IS NULL AND state IN ('active', 'deactivated')
      AND (doc LIKE '%"rotation_interval"%' OR doc LIKE '%"deactivate_on_expiration"%'
           OR doc LIKE '%"destroy_after_deactivation"%')"#;
