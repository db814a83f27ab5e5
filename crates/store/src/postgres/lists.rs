//! List queries: filters of spec §3 turned into SQL, counted and paged.
//!
//! Orders are the SQLite engine's: text columns compare bytewise (collation "C"), uuids in the
//! order of their text, and a missing date sorts before every date (`NULLS FIRST` ascending).

use std::collections::HashMap;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::query::*;

use crate::common::{
    WALK_WHEN_ONE_IN, day_counted, filters_only_counted, filters_only_state_and_vault,
};

use super::rows::{
    KEY_SELECT, KEYSTORE_SELECT, TEMPLATE_SELECT, VAULT_SELECT, corrupt, key_from_row,
    keystore_from_row, template_from_row, vault_from_row,
};
use super::{all, all_once, one_once};

/// A bound value of a dynamically built statement.
type Param = Box<dyn ToSql + Sync + Send>;

/// A WHERE clause with its bound values, applied to both the count and the page.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    binds: Vec<Param>,
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The wire spellings of values, for a text column.
fn texts<T: ToString>(values: &[T]) -> Vec<String> {
    values.iter().map(ToString::to_string).collect()
}

/// Midnight (UTC) starting a day: timestamps are filtered by whole days.
fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// A view of bound values as statement parameters.
fn params(binds: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    binds
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// LIMIT and OFFSET of a page.
fn limit_offset(paging: Paging) -> (i64, i64) {
    (
        i64::from(paging.limit),
        i64::try_from(paging.offset).unwrap_or(i64::MAX),
    )
}

fn total_from_row(r: &Row) -> Result<i64> {
    r.try_get("total").map_err(|_| corrupt("total"))
}

fn id_from_row(r: &Row) -> Result<Uuid> {
    r.try_get("id").map_err(|_| corrupt("id"))
}

impl Filter {
    /// Binds a value; its placeholder.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.binds.push(Box::new(value));
        format!("${}", self.binds.len())
    }

    fn raw(&mut self, clause: impl Into<String>) {
        self.clauses.push(clause.into());
    }

    fn eq(&mut self, column: &str, value: impl ToSql + Sync + Send + 'static) {
        let p = self.bind(value);
        self.clauses.push(format!("{column} = {p}"));
    }

    /// Starts with `value`. SQLite's LIKE ignores the case of ASCII letters, as ILIKE does
    /// under collation "C" (and of no other letter, as there).
    fn prefix(&mut self, column: &str, value: &str) {
        let p = self.bind(format!("{}%", like_escape(value)));
        self.clauses.push(format!("{column} ILIKE {p} ESCAPE '\\'"));
    }

    fn contains(&mut self, column: &str, value: &str) {
        let p = self.bind(format!("%{}%", like_escape(value)));
        self.clauses.push(format!("{column} ILIKE {p} ESCAPE '\\'"));
    }

    /// A clause over a list of values bound as one array; `template` receives its placeholder.
    fn any_of<T>(&mut self, values: Vec<T>, template: impl Fn(&str) -> String)
    where
        Vec<T>: ToSql + Sync + Send + 'static,
    {
        if values.is_empty() {
            return;
        }
        let p = self.bind(values);
        self.clauses.push(template(&p));
    }

    /// `column` is one of `values`; a single value is an equality, which any index on the
    /// column serves in its order.
    fn one_of<T>(&mut self, column: &str, mut values: Vec<T>)
    where
        T: ToSql + Sync + Send + 'static,
        Vec<T>: ToSql + Sync + Send + 'static,
    {
        if values.len() == 1
            && let Some(only) = values.pop()
        {
            self.eq(column, only);
            return;
        }
        self.any_of(values, |p| format!("{column} = ANY({p})"));
    }

    /// Every clause so far stays a filter, never an index condition.
    fn keep_from_planner(&mut self) {
        for clause in &mut self.clauses {
            *clause = format!("({clause}) IS TRUE");
        }
    }

    fn int_range(&mut self, column: &str, range: &Range<u32>) {
        if let Some(min) = range.min {
            let p = self.bind(i64::from(min));
            self.clauses.push(format!("{column} >= {p}"));
        }
        if let Some(max) = range.max {
            let p = self.bind(i64::from(max));
            self.clauses.push(format!("{column} <= {p}"));
        }
    }

    /// A date column.
    fn date_range(&mut self, column: &str, range: &Range<NaiveDate>) {
        if let Some(min) = range.min {
            let p = self.bind(min);
            self.clauses.push(format!("{column} >= {p}"));
        }
        if let Some(max) = range.max {
            let p = self.bind(max);
            self.clauses.push(format!("{column} <= {p}"));
        }
    }

    /// A timestamp column filtered by whole days (UTC).
    fn day_range(&mut self, column: &str, range: &Range<NaiveDate>) {
        if let Some(min) = range.min {
            let p = self.bind(day_start(min));
            self.clauses.push(format!("{column} >= {p}"));
        }
        if let Some(max) = range.max {
            let next = max.checked_add_days(Days::new(1)).unwrap_or(max);
            let p = self.bind(day_start(next));
            self.clauses.push(format!("{column} < {p}"));
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// `SELECT <aggregate> FROM <from> WHERE …` as one number.
    async fn count(&self, c: &impl GenericClient, aggregate: &str, from: &str) -> Result<i64> {
        let sql = format!("SELECT {aggregate} AS total FROM {from}{}", self.sql());
        let total = one_once(c, &sql, &params(&self.binds), total_from_row).await?;
        Ok(total.unwrap_or(0))
    }

    /// The ids of one page, from `from` (`k` being the keys).
    async fn page_ids(
        &self,
        c: &impl GenericClient,
        from: &str,
        order: &str,
        paging: Paging,
    ) -> Result<Vec<Uuid>> {
        let n = self.binds.len();
        let sql = format!(
            "SELECT k.id FROM {from}{} ORDER BY {order} LIMIT ${} OFFSET ${}",
            self.sql(),
            n + 1,
            n + 2
        );
        let (limit, offset) = limit_offset(paging);
        let mut ps = params(&self.binds);
        ps.push(&limit);
        ps.push(&offset);
        all_once(c, &sql, &ps, id_from_row).await
    }

    /// One page of rows, mapped.
    async fn rows<T>(
        &self,
        c: &impl GenericClient,
        select: &str,
        order: &str,
        paging: Paging,
        map: fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.binds.len();
        let sql = format!(
            "{select}{} ORDER BY {order} LIMIT ${} OFFSET ${}",
            self.sql(),
            n + 1,
            n + 2
        );
        let (limit, offset) = limit_offset(paging);
        let mut ps = params(&self.binds);
        ps.push(&limit);
        ps.push(&offset);
        all_once(c, &sql, &ps, map).await
    }

    /// The total count (`COUNT(*)` over `from`) and one page of rows, read together.
    async fn page<T>(
        &self,
        c: &impl GenericClient,
        select: &str,
        from: &str,
        order: &str,
        paging: Paging,
        map: fn(&Row) -> Result<T>,
    ) -> Result<Page<T>> {
        let (total_count, items) = futures::try_join!(
            self.count(c, "COUNT(*)", from),
            self.rows(c, select, order, paging, map)
        )?;
        Ok(Page { items, total_count })
    }
}

/// Columns that may be NULL among those sorted on: SQLite sorts NULL first, PostgreSQL last.
const NULLABLE_SORT_COLUMNS: &[&str] = &["k.activation_date", "k.expiration_date"];

/// ORDER BY for the requested keys; ties are broken by id in the direction of the last key, so
/// an index on (…, sort column, id) serves the whole order.
fn order_by(sort: &[SortKey], column: impl Fn(&str) -> &'static str, id: &str) -> String {
    let direction = |descending: bool| if descending { "DESC" } else { "ASC" };
    let mut parts: Vec<String> = sort
        .iter()
        .map(|k| {
            let c = column(k.field);
            let nulls = match (NULLABLE_SORT_COLUMNS.contains(&c), k.descending) {
                (false, _) => "",
                (true, false) => " NULLS FIRST",
                (true, true) => " NULLS LAST",
            };
            format!("{c} {}{nulls}", direction(k.descending))
        })
        .collect();
    let last_descending = sort.last().is_some_and(|k| k.descending);
    parts.push(format!("{id} {}", direction(last_descending)));
    parts.join(", ")
}

/// Some string of the JSON array `array` (a jsonb expression) is one of the text array bound at
/// `p` (SQLite: `EXISTS (SELECT 1 FROM json_each(array) WHERE value IN (…))`).
fn json_has_any(array: &str, p: &str) -> String {
    format!("({array}) ?| {p}")
}

pub(crate) async fn vaults(c: &impl GenericClient, q: &VaultQuery) -> Result<Page<VaultView>> {
    let mut f = Filter::default();
    f.one_of("v.id", q.ids.clone());
    if let Some(p) = &q.name_prefix {
        f.prefix("v.name", p);
    }
    if let Some(d) = &q.description_contains {
        f.contains("v.description", d);
    }
    let order = order_by(
        &q.sort,
        |field| match field {
            "name" => "v.name",
            "created_at" => "v.created_at",
            "id" => "v.id",
            _ => "v.updated_at",
        },
        "v.id",
    );
    f.page(
        c,
        VAULT_SELECT,
        "vaults v",
        &order,
        q.paging,
        vault_from_row,
    )
    .await
}

pub(crate) async fn templates(c: &impl GenericClient, q: &TemplateQuery) -> Result<Page<Template>> {
    let mut f = Filter::default();
    if let Some(p) = &q.name_prefix {
        f.prefix("t.name", p);
    }
    if let Some(s) = &q.naming_scheme_contains {
        f.contains("t.naming_scheme", s);
    }
    f.one_of("t.vault_id", q.vault_ids.clone());
    f.one_of("t.algorithm", texts(&q.algorithms));
    f.int_range("t.size", &q.size);
    f.one_of("t.keystore_type", texts(&q.keystore_types));
    f.one_of("t.keystore_group", q.keystore_groups.clone());
    f.day_range("t.created_at", &q.created_at);
    f.day_range("t.updated_at", &q.updated_at);
    f.any_of(texts(&q.types), |p| json_has_any("t.types::jsonb", p));
    f.one_of("t.state", texts(&q.states));
    f.any_of(texts(&q.managing_systems), |p| {
        json_has_any("t.managing_systems::jsonb", p)
    });
    let order = order_by(
        &q.sort,
        |field| match field {
            "name" => "t.name",
            "created_at" => "t.created_at",
            "version" => "t.version",
            "vault.id" => "t.vault_id",
            "id" => "t.id",
            _ => "t.updated_at",
        },
        "t.id",
    );
    f.page(
        c,
        TEMPLATE_SELECT,
        "templates t",
        &order,
        q.paging,
        template_from_row,
    )
    .await
}

pub(crate) async fn keystores(c: &impl GenericClient, q: &KeystoreQuery) -> Result<Page<Keystore>> {
    let mut f = Filter::default();
    f.one_of("ks.type", texts(&q.types));
    if let Some(n) = &q.name_contains {
        f.contains("ks.name", n);
    }
    if let Some(d) = &q.description_contains {
        f.contains("ks.description", d);
    }
    f.any_of(q.groups.clone(), |p| json_has_any("ks.groups::jsonb", p));
    f.one_of("ks.vault_id", q.vault_ids.clone());
    f.one_of("ks.location", q.locations.clone());
    let order = order_by(
        &q.sort,
        |field| match field {
            "name" => "ks.name",
            "created_at" => "ks.created_at",
            "vault.id" => "ks.vault_id",
            "type" => "ks.type",
            "id" => "ks.id",
            _ => "ks.updated_at",
        },
        "ks.id",
    );
    f.page(
        c,
        KEYSTORE_SELECT,
        "keystores ks",
        &order,
        q.paging,
        keystore_from_row,
    )
    .await
}

/// Keys summed from the counts kept by the trigger on `managed_keys`.
const COUNTED: &str = "COALESCE(SUM(n), 0)::BIGINT";

pub(crate) async fn keys(c: &impl GenericClient, q: &KeyQuery) -> Result<Page<ManagedKey>> {
    // Totals from the counts kept by the trigger, where the filters allow: no row counting.
    let counted = if filters_only_counted(q) {
        Some(counted_filter(q).count(c, COUNTED, "key_counts").await?)
    } else if let Some((field, days)) = day_counted(q) {
        let mut counted = Filter::default();
        counted.eq("field", field.to_owned());
        counted.date_range("day", &days);
        counted.one_of("vault_id", q.vault_ids.clone());
        counted.one_of("state", texts(&q.states));
        Some(counted.count(c, COUNTED, "key_day_counts").await?)
    } else {
        None
    };
    // With an indexed order and a filter most keys pass, the page comes from walking that
    // order's index: the filter's clauses are kept from the planner (`(…) IS TRUE` is no
    // index condition), which would otherwise read every match through their indexes and sort
    // it whenever its statistics are behind (as after a bulk load). The exact counts decide.
    let walk_order = match (counted, q.sort.as_slice()) {
        // Every documented sort has its `(column, id)` index.
        (Some(matching), [only]) if KEY_SORT_FIELDS.contains(&only.field) => {
            let all_keys = Filter::default().count(c, COUNTED, "key_counts").await?;
            matching.saturating_mul(WALK_WHEN_ONE_IN) >= all_keys
        }
        _ => false,
    };
    let mut f = Filter::default();
    f.one_of("k.vault_id", q.vault_ids.clone());
    f.one_of("k.algorithm", texts(&q.algorithms));
    f.one_of("k.state", texts(&q.states));
    f.int_range("k.size", &q.size);
    f.one_of("k.template_id", q.template_ids.clone());
    template_filters(&mut f, q, "k.template_id");
    f.date_range("k.activation_date", &q.activation_date);
    f.date_range("k.expiration_date", &q.deactivation_date);
    f.day_range("k.created_at", &q.created_at);
    f.day_range("k.updated_at", &q.updated_at);
    f.day_range("k.rotated_at", &q.rotated_at);
    if walk_order {
        f.keep_from_planner();
    }
    if let KeyScope::InKeystore(id) = q.scope {
        let p = f.bind(id);
        f.raw(format!(
            "k.id IN (SELECT managed_key_id FROM internal_copies WHERE keystore_id = {p})"
        ));
    }
    if let Some(l) = &q.label {
        f.eq("k.label", l.clone());
    }
    f.any_of(texts(&q.referenced_keystore_types), |p| {
        format!(
            "EXISTS (SELECT 1 FROM key_targets kt
             WHERE kt.key_id = k.id AND NOT kt.removed AND kt.keystore_type = ANY({p}))"
        )
    });
    f.any_of(q.referenced_keystore_names.clone(), |p| {
        format!(
            "EXISTS (SELECT 1 FROM key_targets kt JOIN keystores ks ON ks.id = kt.keystore_id
             WHERE kt.key_id = k.id AND NOT kt.removed AND ks.name = ANY({p}))"
        )
    });
    f.one_of(
        "k.instance_keystore_type",
        texts(&q.instance_keystore_types),
    );
    f.any_of(texts(&q.managing_systems), |p| {
        json_has_any("k.doc::jsonb -> 'managing_systems'", p)
    });
    let order = order_by(
        &q.sort,
        |field| match field {
            "label" => "k.label",
            "algorithm" => "k.algorithm",
            "state" => "k.state",
            "activation_date" => "k.activation_date",
            "deactivation_date" | "expiration_date" => "k.expiration_date",
            "created_at" => "k.created_at",
            "size" => "k.size",
            "vault.id" => "k.vault_id",
            "version" => "k.version",
            "id" => "k.id",
            _ => "k.updated_at",
        },
        "k.id",
    );
    let total = async {
        match counted {
            Some(n) => Ok(n),
            None => f.count(c, "COUNT(*)", "managed_keys k").await,
        }
    };
    let ids = async {
        match merged_by_state(c, q).await? {
            Some(ids) => Ok(ids),
            None => f.page_ids(c, "managed_keys k", &order, q.paging).await,
        }
    };
    let (total_count, ids) = futures::try_join!(total, ids)?;
    Ok(Page {
        items: keys_in_order(c, &ids).await?,
        total_count,
    })
}

/// The key filters `key_counts` can answer, on its own columns.
fn counted_filter(q: &KeyQuery) -> Filter {
    let mut counted = Filter::default();
    counted.one_of("vault_id", q.vault_ids.clone());
    counted.one_of("state", texts(&q.states));
    counted.one_of("algorithm", texts(&q.algorithms));
    counted.int_range("size", &q.size);
    counted.one_of("template_id", q.template_ids.clone());
    template_filters(&mut counted, q, "template_id");
    counted
}

/// Most index ranges (vault and state pairs) a page is merged from; beyond, the page is sorted.
const MAX_MERGED_RANGES: usize = 64;

/// A page of keys filtered on states (and vaults) only, in the order of their last change, merged
/// from each (vault, state) range of the `(vault_id, state, updated_at, id)` and `(state,
/// updated_at, id)` indexes, which hold their keys in that order: each range gives at most
/// `offset + limit` ids and no key outside them is read. `None` where that does not apply; a
/// single range is served by its index directly.
async fn merged_by_state(c: &impl GenericClient, q: &KeyQuery) -> Result<Option<Vec<Uuid>>> {
    let [
        SortKey {
            field: "updated_at",
            descending,
        },
    ] = q.sort.as_slice()
    else {
        return Ok(None);
    };
    let vaults: Vec<Option<Uuid>> = if q.vault_ids.is_empty() {
        vec![None]
    } else {
        q.vault_ids.iter().copied().map(Some).collect()
    };
    let ranges = vaults.len() * q.states.len();
    if !filters_only_state_and_vault(q) || !(2..=MAX_MERGED_RANGES).contains(&ranges) {
        return Ok(None);
    }
    let direction = if *descending { "DESC" } else { "ASC" };
    let (limit, offset) = limit_offset(q.paging);
    let reach = limit.saturating_add(offset);
    let mut f = Filter::default();
    let mut branches = Vec::with_capacity(ranges);
    for vault in &vaults {
        for state in &q.states {
            let in_vault = match vault {
                Some(v) => format!("vault_id = {} AND ", f.bind(*v)),
                None => String::new(),
            };
            let state = f.bind(state.as_str().to_owned());
            let reach = f.bind(reach);
            branches.push(format!(
                "(SELECT id, updated_at FROM managed_keys WHERE {in_vault}state = {state}
                 ORDER BY updated_at {direction}, id {direction} LIMIT {reach})"
            ));
        }
    }
    let limit = f.bind(limit);
    let offset = f.bind(offset);
    let sql = format!(
        "SELECT id FROM ({}) AS ranges
         ORDER BY updated_at {direction}, id {direction} LIMIT {limit} OFFSET {offset}",
        branches.join(" UNION ALL ")
    );
    all_once(c, &sql, &params(&f.binds), id_from_row)
        .await
        .map(Some)
}

/// Whole keys for a page of ids, in the page's order. Read after the page is chosen, so the
/// statuses each key carries are read for its keys only, never for every key sorted.
async fn keys_in_order(c: &impl GenericClient, ids: &[Uuid]) -> Result<Vec<ManagedKey>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys = all(
        c,
        &format!("{KEY_SELECT} WHERE k.id = ANY($1)"),
        &[&ids],
        key_from_row,
    )
    .await?;
    let position: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    keys.sort_by_key(|k| position.get(&k.id).copied());
    Ok(keys)
}

/// Filters on the key's template (its name's prefix, its types), on `column` naming it.
fn template_filters(f: &mut Filter, q: &KeyQuery, column: &str) {
    if let Some(prefix) = &q.template_name_prefix {
        let p = f.bind(format!("{}%", like_escape(prefix)));
        f.raw(format!(
            "{column} IN (SELECT id FROM templates WHERE name ILIKE {p} ESCAPE '\\')"
        ));
    }
    f.any_of(texts(&q.template_types), |p| {
        format!(
            "{column} IN (SELECT t.id FROM templates t WHERE {})",
            json_has_any("t.types::jsonb", p)
        )
    });
}
