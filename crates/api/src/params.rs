//! Query parameters of list endpoints (spec §3): comma-joined or repeated arrays, ranges whose
//! exact and min/max forms exclude each other, paging and sorting; plus the list envelope.

use chrono::NaiveDate;
use keyplane_core::error::{Error, Result};
use keyplane_core::model::*;
use keyplane_core::query::*;
use keyplane_core::validate;
use serde::Serialize;
use uuid::Uuid;

use crate::wire::{Href, Links};

pub struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    pub fn new(pairs: &'a [(String, String)]) -> Self {
        Self { pairs }
    }

    /// The last value given for a scalar parameter.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str, max: usize) -> Result<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.is_empty() || v.chars().count() > max => Err(Error::invalid_parameter(
                name,
                format!("{name} must be 1 to {max} characters long"),
            )),
            Some(v) => Ok(Some(v.to_owned())),
        }
    }

    /// Every value of an array parameter: repeated, comma-joined, or both.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Refuses a parameter sent empty (`state=`): a filter on nothing is a mistake, not "any".
    fn refuse_empty(&self, name: &str, what: &str) -> Result<()> {
        if self
            .pairs
            .iter()
            .any(|(k, v)| k == name && v.split(',').all(|item| item.trim().is_empty()))
        {
            return Err(Error::invalid_parameter(
                name,
                format!("{name} must name {what}, not be empty"),
            ));
        }
        Ok(())
    }

    fn enums<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Option<T>,
        allowed: fn() -> String,
    ) -> Result<Vec<T>> {
        self.refuse_empty(name, &format!("one or more of {}", allowed()))?;
        self.list(name)
            .iter()
            .map(|v| {
                parse(v).ok_or_else(|| {
                    Error::invalid_parameter(name, format!("'{v}' is not one of: {}", allowed()))
                })
            })
            .collect()
    }

    fn uuids(&self, name: &str) -> Result<Vec<Uuid>> {
        self.refuse_empty(name, "one or more UUIDs")?;
        self.list(name)
            .iter()
            .map(|v| {
                Uuid::parse_str(v)
                    .map_err(|_| Error::invalid_parameter(name, format!("'{v}' is not a UUID")))
            })
            .collect()
    }

    fn date(&self, name: &str) -> Result<Option<NaiveDate>> {
        self.get(name)
            .map(|v| validate::date(name, v, true))
            .transpose()
    }

    /// `base` (exact), `base_min` and `base_max`, all applied.
    fn date_range(&self, base: &str) -> Result<Range<NaiveDate>> {
        let exact = self.date(base)?;
        let min = self.date(&format!("{base}_min"))?;
        let max = self.date(&format!("{base}_max"))?;
        Ok(range(exact, min, max))
    }

    fn size(&self, name: &str) -> Result<Option<u32>> {
        self.get(name)
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    Error::invalid_parameter(name, format!("{name} must be a whole number"))
                })
            })
            .transpose()
    }

    fn size_range(&self, base: &str) -> Result<Range<u32>> {
        Ok(range(
            self.size(base)?,
            self.size(&format!("{base}_min"))?,
            self.size(&format!("{base}_max"))?,
        ))
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(Error::invalid_parameter(
                name,
                format!("{name} must be true or false, not '{v}'"),
            )),
        }
    }

    pub fn paging(&self) -> Result<Paging> {
        let limit = match self.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(Error::invalid_parameter(
                        "limit",
                        format!("limit must be between 1 and {MAX_LIMIT}"),
                    ));
                }
            },
        };
        Ok(Paging {
            limit,
            offset: self.paging_offset()?,
        })
    }

    /// `offset`: a whole number a store can count to, 0 when absent.
    pub fn paging_offset(&self) -> Result<u64> {
        match self.get("offset") {
            None => Ok(0),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|o| *o <= i64::MAX as u64)
                .ok_or_else(|| {
                    Error::invalid_parameter("offset", "offset must be a whole number, 0 or more")
                }),
        }
    }

    pub fn sort(&self, allowed: &[&'static str]) -> Result<Vec<SortKey>> {
        if let Some(raw) = self.get("sort") {
            static ITEM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
                regex::Regex::new(r"^-?[a-z0-9_.\[\],-]+$").expect("static regex")
            });
            if !ITEM.is_match(raw) {
                return Err(Error::invalid_parameter(
                    "sort",
                    "sort must be a comma-joined list of field names, '-' for descending",
                ));
            }
        }
        parse_sort(self.get("sort"), allowed, "-updated_at")
    }
}

/// Every bound given applies: `size=256&size_min=128` is the keys of size 256; bounds that
/// leave nothing between them match nothing (the document cannot say which combinations are
/// sensible, so none is refused).
fn range<T: Copy + PartialOrd>(exact: Option<T>, min: Option<T>, max: Option<T>) -> Range<T> {
    Range {
        min: exact,
        max: exact,
    }
    .and(Range { min, max })
}

pub fn vault_query(p: &Params) -> Result<VaultQuery> {
    Ok(VaultQuery {
        ids: Vec::new(),
        name_prefix: p.text("name", 100)?,
        description_contains: p.text("description", 200)?,
        sort: p.sort(VAULT_SORT_FIELDS)?,
        paging: p.paging()?,
    })
}

pub fn template_query(p: &Params) -> Result<TemplateQuery> {
    Ok(TemplateQuery {
        name_prefix: p.text("name", 100)?,
        naming_scheme_contains: p.text("naming_scheme", 255)?,
        vault_ids: p.uuids("vault.id")?,
        algorithms: p.enums("key.algorithm", Algorithm::parse, Algorithm::allowed)?,
        size: p.size_range("key.size")?,
        keystore_types: p.enums(
            "keystores[].type",
            KeystoreType::parse,
            KeystoreType::allowed,
        )?,
        keystore_groups: p.list("keystores[].group"),
        created_at: p.date_range("created_at")?,
        updated_at: p.date_range("updated_at")?,
        types: p.enums("type[]", TemplateType::parse, TemplateType::allowed)?,
        states: p.enums("state", TemplateState::parse, TemplateState::allowed)?,
        managing_systems: p.enums(
            "managing_systems",
            ManagingSystem::parse,
            ManagingSystem::allowed,
        )?,
        sort: p.sort(TEMPLATE_SORT_FIELDS)?,
        paging: p.paging()?,
    })
}

pub fn keystore_query(p: &Params) -> Result<KeystoreQuery> {
    // `group` (API 4.7) and `groups[]` name groups alike: a keystore in any of them matches.
    let groups: Vec<String> = p
        .list("group")
        .into_iter()
        .chain(p.list("groups[]"))
        .collect();
    Ok(KeystoreQuery {
        types: p.enums("type", KeystoreType::parse, KeystoreType::allowed)?,
        name_contains: p.text("name", 100)?,
        description_contains: p.text("description", 200)?,
        groups,
        vault_ids: p.uuids("vault.id")?,
        locations: p.list("location"),
        sort: p.sort(KEYSTORE_SORT_FIELDS)?,
        paging: p.paging()?,
    })
}

/// Managed-key filters; with no `state` given, lists show pre-active and active keys.
pub fn key_query(p: &Params, default_states: bool) -> Result<KeyQuery> {
    let deactivation = p.date_range("deactivation_date")?;
    let expiration = p.date_range("expiration_date")?;
    // Two names of the same date (UKO renamed it): both filters apply to it.
    let deactivation = deactivation.and(expiration);
    let referenced_types = p.enums(
        "referenced_keystores[].type",
        KeystoreType::parse,
        KeystoreType::allowed,
    )?;
    let instance_types = p.enums(
        "instances[].keystore.type",
        KeystoreType::parse,
        KeystoreType::allowed,
    )?;
    let mut states = p.enums("state", KeyState::parse, KeyState::allowed)?;
    if states.is_empty() && default_states {
        states = vec![KeyState::PreActivation, KeyState::Active];
    }
    let rotated_min = p
        .get("rotated_at_min")
        .map(|v| day_of(v, "rotated_at_min"))
        .transpose()?;
    let rotated_max = p
        .get("rotated_at_max")
        .map(|v| day_of(v, "rotated_at_max"))
        .transpose()?;
    Ok(KeyQuery {
        scope: KeyScope::All,
        vault_ids: p.uuids("vault.id")?,
        algorithms: p.enums("algorithm", Algorithm::parse, Algorithm::allowed)?,
        states,
        label: p.text("label", 255)?,
        activation_date: p.date_range("activation_date")?,
        deactivation_date: deactivation,
        created_at: p.date_range("created_at")?,
        updated_at: p.date_range("updated_at")?,
        rotated_at: range(None, rotated_min, rotated_max),
        size: p.size_range("size")?,
        referenced_keystore_types: referenced_types,
        referenced_keystore_names: p.list("referenced_keystores[].name"),
        instance_keystore_types: instance_types,
        template_name_prefix: p.text("template.name", 100)?,
        template_ids: p.uuids("template.id")?,
        template_types: p.enums(
            "template.type[]",
            TemplateType::parse,
            TemplateType::allowed,
        )?,
        managing_systems: p.enums(
            "managing_systems",
            ManagingSystem::parse,
            ManagingSystem::allowed,
        )?,
        sort: p.sort(KEY_SORT_FIELDS)?,
        paging: p.paging()?,
    })
}

/// `rotated_at_*` take a date or a date-time; only the day counts.
fn day_of(v: &str, name: &str) -> Result<NaiveDate> {
    validate::date(name, v.get(..10).unwrap_or(v), true)
}

/// The list envelope with navigation links that carry `offset=` (SDK pagers read it); the
/// items are serialized as they are, under the endpoint's collection name.
pub struct ListBody<T> {
    total_count: i64,
    paging: Paging,
    first: Href,
    last: Href,
    previous: Option<Href>,
    next: Option<Href>,
    collection: &'static str,
    items: Vec<T>,
}

impl<T: Serialize> Serialize for ListBody<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("total_count", &self.total_count)?;
        map.serialize_entry("limit", &self.paging.limit)?;
        map.serialize_entry("offset", &self.paging.offset)?;
        map.serialize_entry("first", &self.first)?;
        map.serialize_entry("last", &self.last)?;
        if let Some(p) = &self.previous {
            map.serialize_entry("previous", p)?;
        }
        if let Some(n) = &self.next {
            map.serialize_entry("next", n)?;
        }
        map.serialize_entry(self.collection, &self.items)?;
        map.end()
    }
}

fn timestamp(p: &Params, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    p.get(name)
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    Error::invalid_parameter(name, format!("'{v}' is not an RFC 3339 timestamp"))
                })
        })
        .transpose()
}

/// Filters of `GET /api/v4/audit_events`.
pub fn audit_query(p: &Params) -> Result<keyplane_core::ports::AuditQuery> {
    const OUTCOMES: &[&str] = &["success", "failure", "denied"];
    let outcome = p.text("outcome", 16)?;
    if let Some(o) = &outcome
        && !OUTCOMES.contains(&o.as_str())
    {
        return Err(Error::invalid_parameter(
            "outcome",
            format!("'{o}' is not one of: {}", OUTCOMES.join(", ")),
        ));
    }
    let after_seq = p
        .get("after_seq")
        .map(|v| {
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                Error::invalid_parameter("after_seq", "after_seq must be a whole number, 0 or more")
            })
        })
        .transpose()?
        .unwrap_or(0);
    Ok(keyplane_core::ports::AuditQuery {
        paging: p.paging()?,
        after_seq,
        action: p.text("action", 128)?,
        outcome,
        initiator: p.text("initiator", 256)?,
        vault_id: p.uuids("vault.id")?.into_iter().next(),
        since: timestamp(p, "since")?,
        until: timestamp(p, "until")?,
    })
}

pub fn envelope<T>(
    links: &Links,
    path: &str,
    pairs: &[(String, String)],
    paging: Paging,
    total: i64,
    collection: &'static str,
    items: Vec<T>,
) -> ListBody<T> {
    let kept: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "limit" && k != "offset")
        .cloned()
        .collect();
    let href = |offset: u64| {
        let mut q = kept.clone();
        q.push(("limit".into(), paging.limit.to_string()));
        q.push(("offset".into(), offset.to_string()));
        let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
        Href {
            href: format!("{}{path}?{qs}", links.base),
        }
    };
    let limit = u64::from(paging.limit);
    let total_u = u64::try_from(total).unwrap_or(0);
    let last = if total_u == 0 {
        0
    } else {
        (total_u - 1) / limit * limit
    };
    ListBody {
        total_count: total,
        paging,
        first: href(0),
        last: href(last),
        previous: (paging.offset > 0).then(|| href(paging.offset.saturating_sub(limit))),
        next: (paging.offset + limit < total_u).then(|| href(paging.offset + limit)),
        collection,
        items,
    }
}
