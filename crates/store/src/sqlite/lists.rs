//! List queries: filters of spec §3 turned into SQL, counted and paged.

use chrono::{Days, NaiveDate};
use rusqlite::Connection;
use rusqlite::types::Value;

use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::query::*;

use crate::common::{
    WALK_WHEN_ONE_IN, day_counted, filters_only_counted, filters_only_state_and_vault,
};

use super::all;
use super::rows::*;
use super::writer::sql_err;

/// A WHERE clause with its bound values, applied to both the count and the page.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    binds: Vec<Value>,
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Filter {
    fn raw(&mut self, clause: impl Into<String>) {
        self.clauses.push(clause.into());
    }

    fn eq(&mut self, column: &str, value: impl Into<String>) {
        self.clauses.push(format!("{column} = ?"));
        self.binds.push(Value::Text(value.into()));
    }

    fn prefix(&mut self, column: &str, value: &str) {
        self.clauses.push(format!("{column} LIKE ? ESCAPE '\\'"));
        self.binds
            .push(Value::Text(format!("{}%", like_escape(value))));
    }

    fn contains(&mut self, column: &str, value: &str) {
        self.clauses.push(format!("{column} LIKE ? ESCAPE '\\'"));
        self.binds
            .push(Value::Text(format!("%{}%", like_escape(value))));
    }

    /// `column IN (…)` over text values; `template` receives the placeholder list for subqueries.
    fn any_of<T: ToString>(&mut self, values: &[T], template: impl Fn(&str) -> String) {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(",");
        self.clauses.push(template(&marks));
        self.binds
            .extend(values.iter().map(|v| Value::Text(v.to_string())));
    }

    fn one_of<T: ToString>(&mut self, column: &str, values: &[T]) {
        self.any_of(values, |m| format!("{column} IN ({m})"));
    }

    fn int_range(&mut self, column: &str, range: &Range<u32>) {
        if let Some(min) = range.min {
            self.clauses.push(format!("{column} >= ?"));
            self.binds.push(Value::Integer(i64::from(min)));
        }
        if let Some(max) = range.max {
            self.clauses.push(format!("{column} <= ?"));
            self.binds.push(Value::Integer(i64::from(max)));
        }
    }

    /// A date column (`YYYY-MM-DD`).
    fn date_range(&mut self, column: &str, range: &Range<NaiveDate>) {
        if let Some(min) = range.min {
            self.clauses.push(format!("{column} >= ?"));
            self.binds.push(Value::Text(min.to_string()));
        }
        if let Some(max) = range.max {
            self.clauses.push(format!("{column} <= ?"));
            self.binds.push(Value::Text(max.to_string()));
        }
    }

    /// A timestamp column filtered by whole days.
    fn day_range(&mut self, column: &str, range: &Range<NaiveDate>) {
        if let Some(min) = range.min {
            self.clauses.push(format!("{column} >= ?"));
            self.binds.push(Value::Text(min.to_string()));
        }
        if let Some(max) = range.max {
            let next = max.checked_add_days(Days::new(1)).unwrap_or(max);
            self.clauses.push(format!("{column} < ?"));
            self.binds.push(Value::Text(next.to_string()));
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The total count and one page of rows, mapped.
    /// `SELECT <aggregate> FROM <from> WHERE …` as one number.
    fn count(&self, conn: &Connection, aggregate: &str, from: &str) -> Result<i64> {
        conn.prepare_cached(&format!("SELECT {aggregate} FROM {from}{}", self.sql()))
            .and_then(|mut s| {
                s.query_row(rusqlite::params_from_iter(self.binds.iter()), |r| r.get(0))
            })
            .map_err(sql_err)
    }

    /// The ids of one page, from `from` (`k` being the keys).
    fn page_ids(
        &self,
        conn: &Connection,
        from: &str,
        order: &str,
        paging: Paging,
    ) -> Result<Vec<String>> {
        let mut binds = self.binds.clone();
        binds.push(Value::Integer(i64::from(paging.limit)));
        binds.push(Value::Integer(
            i64::try_from(paging.offset).unwrap_or(i64::MAX),
        ));
        conn.prepare_cached(&format!(
            "SELECT k.id FROM {from}{} ORDER BY {order} LIMIT ? OFFSET ?",
            self.sql()
        ))
        .and_then(|mut st| {
            st.query_map(rusqlite::params_from_iter(binds.iter()), |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(sql_err)
    }

    fn page<T>(
        &self,
        conn: &Connection,
        select: &str,
        total_count: i64,
        order: &str,
        paging: Paging,
        map: fn(&rusqlite::Row<'_>) -> Result<T>,
    ) -> Result<Page<T>> {
        let where_sql = self.sql();
        let mut binds = self.binds.clone();
        binds.push(Value::Integer(i64::from(paging.limit)));
        binds.push(Value::Integer(
            i64::try_from(paging.offset).unwrap_or(i64::MAX),
        ));
        let items = all(
            conn,
            &format!("{select}{where_sql} ORDER BY {order} LIMIT ? OFFSET ?"),
            rusqlite::params_from_iter(binds.iter()),
            map,
        )?;
        Ok(Page { items, total_count })
    }
}

/// ORDER BY for the requested keys; ties are broken by id in the direction of the last key, so
/// an index on (…, sort column, id) serves the whole order.
fn order_by(sort: &[SortKey], column: impl Fn(&str) -> &'static str, id: &str) -> String {
    let direction = |descending: bool| if descending { "DESC" } else { "ASC" };
    let mut parts: Vec<String> = sort
        .iter()
        .map(|k| format!("{} {}", column(k.field), direction(k.descending)))
        .collect();
    let last_descending = sort.last().is_some_and(|k| k.descending);
    parts.push(format!("{id} {}", direction(last_descending)));
    parts.join(", ")
}

pub(crate) fn vaults(conn: &Connection, q: &VaultQuery) -> Result<Page<VaultView>> {
    let mut f = Filter::default();
    f.one_of("v.id", &q.ids);
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
        conn,
        VAULT_SELECT,
        f.count(conn, "COUNT(*)", "vaults v")?,
        &order,
        q.paging,
        vault_from_row,
    )
}

pub(crate) fn templates(conn: &Connection, q: &TemplateQuery) -> Result<Page<Template>> {
    let mut f = Filter::default();
    if let Some(p) = &q.name_prefix {
        f.prefix("t.name", p);
    }
    if let Some(s) = &q.naming_scheme_contains {
        f.contains("t.naming_scheme", s);
    }
    f.one_of("t.vault_id", &q.vault_ids);
    f.one_of("t.algorithm", &q.algorithms);
    f.int_range("t.size", &q.size);
    f.one_of("t.keystore_type", &q.keystore_types);
    f.one_of("t.keystore_group", &q.keystore_groups);
    f.day_range("t.created_at", &q.created_at);
    f.day_range("t.updated_at", &q.updated_at);
    f.any_of(&q.types, |m| {
        format!("EXISTS (SELECT 1 FROM json_each(t.types) WHERE value IN ({m}))")
    });
    f.one_of("t.state", &q.states);
    f.any_of(&q.managing_systems, |m| {
        format!("EXISTS (SELECT 1 FROM json_each(t.managing_systems) WHERE value IN ({m}))")
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
        conn,
        TEMPLATE_SELECT,
        f.count(conn, "COUNT(*)", "templates t")?,
        &order,
        q.paging,
        template_from_row,
    )
}

pub(crate) fn keystores(conn: &Connection, q: &KeystoreQuery) -> Result<Page<Keystore>> {
    let mut f = Filter::default();
    f.one_of("ks.type", &q.types);
    if let Some(n) = &q.name_contains {
        f.contains("ks.name", n);
    }
    if let Some(d) = &q.description_contains {
        f.contains("ks.description", d);
    }
    f.any_of(&q.groups, |m| {
        format!("EXISTS (SELECT 1 FROM json_each(ks.groups) WHERE value IN ({m}))")
    });
    f.one_of("ks.vault_id", &q.vault_ids);
    f.one_of("ks.location", &q.locations);
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
        conn,
        KEYSTORE_SELECT,
        f.count(conn, "COUNT(*)", "keystores ks")?,
        &order,
        q.paging,
        keystore_from_row,
    )
}

pub(crate) fn keys(conn: &Connection, q: &KeyQuery) -> Result<Page<ManagedKey>> {
    // Totals from the counts kept by triggers, where the filters allow: no row counting.
    let counted = if filters_only_counted(q) {
        let mut counted = Filter::default();
        counted.one_of("vault_id", &q.vault_ids);
        counted.one_of("state", &q.states);
        counted.one_of("algorithm", &q.algorithms);
        counted.int_range("size", &q.size);
        counted.one_of("template_id", &q.template_ids);
        template_filters(&mut counted, q, "template_id");
        Some(counted.count(conn, "COALESCE(SUM(n), 0)", "key_counts")?)
    } else if let Some((field, days)) = day_counted(q) {
        let mut counted = Filter::default();
        counted.eq("field", field.to_owned());
        counted.date_range("day", &days);
        counted.one_of("vault_id", &q.vault_ids);
        counted.one_of("state", &q.states);
        Some(counted.count(conn, "COALESCE(SUM(n), 0)", "key_day_counts")?)
    } else {
        None
    };
    // With an indexed order and a filter most keys pass, the page comes from walking that
    // order's index: the filter's own indexes are kept from the planner (`+column`), which
    // would otherwise read every match through them and sort it. The exact counts decide.
    let walk_order = match (counted, q.sort.as_slice()) {
        // Every documented sort has its `(column, id)` index.
        (Some(matching), [only]) if KEY_SORT_FIELDS.contains(&only.field) => {
            let all_keys = Filter::default().count(conn, "COALESCE(SUM(n), 0)", "key_counts")?;
            matching.saturating_mul(WALK_WHEN_ONE_IN) >= all_keys
        }
        _ => false,
    };
    let planned = |column: &'static str| -> String {
        if walk_order {
            format!("+{column}")
        } else {
            column.to_owned()
        }
    };
    let mut f = Filter::default();
    if let KeyScope::InKeystore(id) = q.scope {
        f.raw("k.id IN (SELECT managed_key_id FROM internal_copies WHERE keystore_id = ?)");
        f.binds.push(Value::Text(id.to_string()));
    }
    f.one_of(&planned("k.vault_id"), &q.vault_ids);
    f.one_of(&planned("k.algorithm"), &q.algorithms);
    f.one_of(&planned("k.state"), &q.states);
    if let Some(l) = &q.label {
        f.eq("k.label", l.clone());
    }
    f.date_range(&planned("k.activation_date"), &q.activation_date);
    f.date_range(&planned("k.expiration_date"), &q.deactivation_date);
    f.day_range(&planned("k.created_at"), &q.created_at);
    f.day_range(&planned("k.updated_at"), &q.updated_at);
    f.day_range(&planned("k.rotated_at"), &q.rotated_at);
    f.int_range(&planned("k.size"), &q.size);
    f.any_of(&q.referenced_keystore_types, |m| {
        format!("EXISTS (SELECT 1 FROM key_targets kt WHERE kt.key_id = k.id AND kt.removed = 0 AND kt.keystore_type IN ({m}))")
    });
    f.any_of(&q.referenced_keystore_names, |m| {
        format!(
            "EXISTS (SELECT 1 FROM key_targets kt JOIN keystores ks ON ks.id = kt.keystore_id
             WHERE kt.key_id = k.id AND kt.removed = 0 AND ks.name IN ({m}))"
        )
    });
    f.one_of("k.instance_keystore_type", &q.instance_keystore_types);
    f.one_of(&planned("k.template_id"), &q.template_ids);
    template_filters(&mut f, q, &planned("k.template_id"));
    f.any_of(&q.managing_systems, |m| {
        format!(
            "EXISTS (SELECT 1 FROM json_each(k.doc, '$.managing_systems') WHERE value IN ({m}))"
        )
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
    let total = match counted {
        Some(total) => total,
        None => f.count(conn, "COUNT(*)", "managed_keys k")?,
    };
    // A date range few keys fall in: its own index finds them, where the planner (which keeps
    // no statistics here) would walk the order's index past every key looking for them.
    let from = match day_counted(q) {
        Some((field, _)) if !walk_order => {
            format!("managed_keys k INDEXED BY {}", date_index(field))
        }
        _ => "managed_keys k".to_owned(),
    };
    let ids = match merged_by_state(conn, q)? {
        Some(ids) => ids,
        None => f.page_ids(conn, &from, &order, q.paging)?,
    };
    Ok(Page {
        items: keys_in_order(conn, &ids)?,
        total_count: total,
    })
}

/// The index holding keys in the order of a date `key_day_counts` names.
fn date_index(field: &str) -> &'static str {
    match field {
        "activation_date" => "managed_keys_activation",
        "expiration_date" => "managed_keys_expiration",
        "created_at" => "managed_keys_created",
        "rotated_at" => "managed_keys_rotated",
        _ => "managed_keys_updated",
    }
}

/// Most index ranges (vault and state pairs) a page is merged from; beyond, the page is sorted.
const MAX_MERGED_RANGES: usize = 64;

/// A page of keys filtered on states (and vaults) only, in the order of their last change, merged
/// from each (vault, state) range of the `(vault_id, state, updated_at, id)` and `(state,
/// updated_at, id)` indexes, which hold their keys in that order: each range gives at most
/// `offset + limit` ids and no key outside them is read. `None` where that does not apply; a
/// single range is served by its index directly.
fn merged_by_state(conn: &Connection, q: &KeyQuery) -> Result<Option<Vec<String>>> {
    let [
        SortKey {
            field: "updated_at",
            descending,
        },
    ] = q.sort.as_slice()
    else {
        return Ok(None);
    };
    let vaults: Vec<Option<String>> = if q.vault_ids.is_empty() {
        vec![None]
    } else {
        q.vault_ids.iter().map(|v| Some(v.to_string())).collect()
    };
    let ranges = vaults.len() * q.states.len();
    if !filters_only_state_and_vault(q) || !(2..=MAX_MERGED_RANGES).contains(&ranges) {
        return Ok(None);
    }
    let direction = if *descending { "DESC" } else { "ASC" };
    let reach = i64::from(q.paging.limit)
        .saturating_add(i64::try_from(q.paging.offset).unwrap_or(i64::MAX));
    let mut branches = Vec::with_capacity(ranges);
    let mut binds = Vec::with_capacity(ranges * 3 + 2);
    for vault in &vaults {
        for state in &q.states {
            let in_vault = match vault {
                Some(v) => {
                    binds.push(Value::Text(v.clone()));
                    "vault_id = ? AND "
                }
                None => "",
            };
            binds.push(Value::Text(state.as_str().to_owned()));
            binds.push(Value::Integer(reach));
            branches.push(format!(
                "SELECT * FROM (SELECT id, updated_at FROM managed_keys WHERE {in_vault}state = ?
                 ORDER BY updated_at {direction}, id {direction} LIMIT ?)"
            ));
        }
    }
    binds.push(Value::Integer(i64::from(q.paging.limit)));
    binds.push(Value::Integer(
        i64::try_from(q.paging.offset).unwrap_or(i64::MAX),
    ));
    let sql = format!(
        "SELECT id FROM ({}) ORDER BY updated_at {direction}, id {direction} LIMIT ? OFFSET ?",
        branches.join(" UNION ALL ")
    );
    conn.prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(rusqlite::params_from_iter(binds.iter()), |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map(Some)
        .map_err(sql_err)
}

/// Whole keys for a page of ids, in the page's order. Read after the page is chosen, so the
/// statuses each key carries are read for its keys only, never for every key sorted.
fn keys_in_order(conn: &Connection, ids: &[String]) -> Result<Vec<ManagedKey>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; ids.len()].join(",");
    let mut keys = all(
        conn,
        &format!("{KEY_SELECT} WHERE k.id IN ({marks})"),
        rusqlite::params_from_iter(ids.iter()),
        key_from_row,
    )?;
    let position: std::collections::HashMap<String, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect();
    keys.sort_by_key(|k| position.get(&k.id.to_string()).copied());
    Ok(keys)
}

/// Filters on the key's template (its name's prefix, its types), on `column` naming it.
fn template_filters(f: &mut Filter, q: &KeyQuery, column: &str) {
    if let Some(p) = &q.template_name_prefix {
        f.raw(format!(
            "{column} IN (SELECT id FROM templates WHERE name LIKE ? ESCAPE '\\')"
        ));
        f.binds.push(Value::Text(format!("{}%", like_escape(p))));
    }
    f.any_of(&q.template_types, |m| {
        format!(
            "{column} IN (SELECT t.id FROM templates t
               WHERE EXISTS (SELECT 1 FROM json_each(t.types) WHERE value IN ({m})))"
        )
    });
}
