//! List queries: paging, sorting and the filters of spec §3, as typed values.

use chrono::NaiveDate;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::*;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: u32,
    pub offset: u64,
}

impl Default for Paging {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// One sort key, already checked against the resource's sortable fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: &'static str,
    pub descending: bool,
}

/// Parses `sort` (comma-joined, `-` for descending) against the fields a resource allows.
pub fn parse_sort(
    raw: Option<&str>,
    allowed: &[&'static str],
    default: &str,
) -> Result<Vec<SortKey>> {
    let raw = raw.filter(|s| !s.is_empty()).unwrap_or(default);
    let mut keys = Vec::new();
    for item in raw.split(',') {
        let (descending, name) = match item.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let field = allowed.iter().find(|f| **f == name).ok_or_else(|| {
            Error::invalid_parameter(
                "sort",
                format!(
                    "cannot sort by '{name}'; sortable fields are: {}",
                    allowed.join(", ")
                ),
            )
        })?;
        keys.push(SortKey { field, descending });
    }
    Ok(keys)
}

pub const VAULT_SORT_FIELDS: &[&str] = &["name", "created_at", "updated_at", "id"];
pub const TEMPLATE_SORT_FIELDS: &[&str] = &[
    "name",
    "created_at",
    "updated_at",
    "version",
    "vault.id",
    "id",
];
pub const KEYSTORE_SORT_FIELDS: &[&str] =
    &["name", "created_at", "updated_at", "vault.id", "type", "id"];
pub const KEY_SORT_FIELDS: &[&str] = &[
    "label",
    "algorithm",
    "state",
    "activation_date",
    "deactivation_date",
    "expiration_date",
    "created_at",
    "updated_at",
    "size",
    "vault.id",
    "version",
    "id",
];
pub const ASSOCIATED_RESOURCE_SORT_FIELDS: &[&str] = &["name", "id"];

/// Inclusive range filter; an exact value is `min == max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range<T> {
    pub min: Option<T>,
    pub max: Option<T>,
}

impl<T: PartialOrd + Copy> Range<T> {
    pub fn contains(&self, value: Option<T>) -> bool {
        if self.min.is_none() && self.max.is_none() {
            return true;
        }
        let Some(v) = value else { return false };
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }

    /// What both ranges hold: every bound of each applies (a range left empty matches nothing).
    pub fn and(self, other: Self) -> Self {
        let pick = |a: Option<T>, b: Option<T>, higher: bool| match (a, b) {
            (Some(a), Some(b)) => Some(if (a > b) == higher { a } else { b }),
            (a, b) => a.or(b),
        };
        Self {
            min: pick(self.min, other.min, true),
            max: pick(self.max, other.max, false),
        }
    }

    pub fn is_set(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultQuery {
    /// Only these vaults (empty: any).
    pub ids: Vec<Uuid>,
    pub name_prefix: Option<String>,
    pub description_contains: Option<String>,
    pub sort: Vec<SortKey>,
    pub paging: Paging,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateQuery {
    pub name_prefix: Option<String>,
    pub naming_scheme_contains: Option<String>,
    pub vault_ids: Vec<Uuid>,
    pub algorithms: Vec<Algorithm>,
    pub size: Range<u32>,
    pub keystore_types: Vec<KeystoreType>,
    pub keystore_groups: Vec<String>,
    pub created_at: Range<NaiveDate>,
    pub updated_at: Range<NaiveDate>,
    pub types: Vec<TemplateType>,
    pub states: Vec<TemplateState>,
    pub managing_systems: Vec<ManagingSystem>,
    pub sort: Vec<SortKey>,
    pub paging: Paging,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeystoreQuery {
    pub types: Vec<KeystoreType>,
    pub name_contains: Option<String>,
    pub description_contains: Option<String>,
    pub groups: Vec<String>,
    pub vault_ids: Vec<Uuid>,
    pub locations: Vec<String>,
    pub sort: Vec<SortKey>,
    pub paging: Paging,
}

/// Which collection of keys a key query reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyScope {
    #[default]
    All,
    /// Keys installed in one keystore (`/keystores/{id}/managed_keys`).
    InKeystore(Uuid),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyQuery {
    pub scope: KeyScope,
    pub vault_ids: Vec<Uuid>,
    pub algorithms: Vec<Algorithm>,
    pub states: Vec<KeyState>,
    pub label: Option<String>,
    pub activation_date: Range<NaiveDate>,
    pub deactivation_date: Range<NaiveDate>,
    pub created_at: Range<NaiveDate>,
    pub updated_at: Range<NaiveDate>,
    pub rotated_at: Range<NaiveDate>,
    pub size: Range<u32>,
    pub referenced_keystore_types: Vec<KeystoreType>,
    pub referenced_keystore_names: Vec<String>,
    pub instance_keystore_types: Vec<KeystoreType>,
    pub template_name_prefix: Option<String>,
    pub template_ids: Vec<Uuid>,
    pub template_types: Vec<TemplateType>,
    pub managing_systems: Vec<ManagingSystem>,
    pub sort: Vec<SortKey>,
    pub paging: Paging,
}

fn any_or<T: PartialEq>(wanted: &[T], value: &T) -> bool {
    wanted.is_empty() || wanted.contains(value)
}

impl KeyQuery {
    /// The same filter applied to a key already in memory (used for the versions of one key,
    /// which are few; the store evaluates lists of keys itself).
    pub fn matches(&self, key: &ManagedKey) -> bool {
        let referenced: Vec<&KeystoreRef> = key.referenced_keystores().collect();
        any_or(&self.vault_ids, &key.vault.id)
            && any_or(&self.algorithms, &key.algorithm)
            && any_or(&self.states, &key.state)
            && self.label.as_ref().is_none_or(|l| *l == key.label)
            && self.activation_date.contains(key.activation_date)
            && self.deactivation_date.contains(key.expiration_date)
            && self
                .created_at
                .contains(Some(key.stamps.created_at.date_naive()))
            && self
                .updated_at
                .contains(Some(key.stamps.updated_at.date_naive()))
            && self
                .rotated_at
                .contains(key.rotated_at.map(|t| t.date_naive()))
            && self.size.contains(Some(key.size))
            && (self.referenced_keystore_types.is_empty()
                || referenced
                    .iter()
                    .any(|r| self.referenced_keystore_types.contains(&r.keystore_type)))
            && (self.referenced_keystore_names.is_empty()
                || referenced
                    .iter()
                    .any(|r| self.referenced_keystore_names.contains(&r.name)))
            && (self.instance_keystore_types.is_empty()
                || key
                    .instances
                    .iter()
                    .any(|i| self.instance_keystore_types.contains(&i.keystore_type)))
            && self
                .template_name_prefix
                .as_ref()
                .is_none_or(|p| key.template.name.starts_with(p.as_str()))
            && any_or(&self.template_ids, &key.template.id)
            && (self.template_types.is_empty()
                || key
                    .template
                    .types
                    .iter()
                    .any(|t| self.template_types.contains(t)))
            && (self.managing_systems.is_empty()
                || key
                    .managing_systems
                    .iter()
                    .any(|m| self.managing_systems.contains(m)))
    }
}
