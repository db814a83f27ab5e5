//! List queries: filters of spec §3 turned into SQL, counted and paged.

use chrono::{Days, NaiveDate};
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteRow;

use keyplane_core::error::Result;
use keyplane_core::model::*;
use keyplane_core::query::*;

use super::db_err;
use super::rows::*;

enum Bind {
    Text(String),
    Int(i64),
}

/// A WHERE clause with its bound values, applied to both the count and the page.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    binds: Vec<Bind>,
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
        self.binds.push(Bind::Text(value.into()));
    }

    fn prefix(&mut self, column: &str, value: &str) {
        self.clauses.push(format!("{column} LIKE ? ESCAPE '\\'"));
        self.binds
            .push(Bind::Text(format!("{}%", like_escape(value))));
    }

    fn contains(&mut self, column: &str, value: &str) {
        self.clauses.push(format!("{column} LIKE ? ESCAPE '\\'"));
        self.binds
            .push(Bind::Text(format!("%{}%", like_escape(value))));
    }

    /// `column IN (…)` over text values; `template` receives the placeholder list for subqueries.
    fn any_of<T: ToString>(&mut self, values: &[T], template: impl Fn(&str) -> String) {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(",");
        self.clauses.push(template(&marks));
        self.binds
            .extend(values.iter().map(|v| Bind::Text(v.to_string())));
    }

    fn one_of<T: ToString>(&mut self, column: &str, values: &[T]) {
        self.any_of(values, |m| format!("{column} IN ({m})"));
    }

    fn int_range(&mut self, column: &str, range: &Range<u32>) {
        if let Some(min) = range.min {
            self.clauses.push(format!("{column} >= ?"));
            self.binds.push(Bind::Int(i64::from(min)));
        }
        if let Some(max) = range.max {
            self.clauses.push(format!("{column} <= ?"));
            self.binds.push(Bind::Int(i64::from(max)));
        }
    }

    /// A date column (`YYYY-MM-DD`).
    fn date_range(&mut self, column: &str, range: &Range<NaiveDate>) {
        if let Some(min) = range.min {
            self.clauses.push(format!("{column} >= ?"));
            self.binds.push(Bind::Text(min.to_string()));
        }
        if let Some(max) = range.max {
            self.clauses.push(format!("{column} <= ?"));
            self.binds.push(Bind::Text(max.to_string()));
        }
    }

    /// A timestamp column filtered by whole days.
    fn day_range(&mut self, column: &str, range: &Range<NaiveDate>) {
        if let Some(min) = range.min {
            self.clauses.push(format!("{column} >= ?"));
            self.binds.push(Bind::Text(min.to_string()));
        }
        if let Some(max) = range.max {
            let next = max.checked_add_days(Days::new(1)).unwrap_or(max);
            self.clauses.push(format!("{column} < ?"));
            self.binds.push(Bind::Text(next.to_string()));
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    async fn page(
        &self,
        pool: &SqlitePool,
        select: &str,
        count_from: &str,
        order: &str,
        paging: Paging,
    ) -> Result<(Vec<SqliteRow>, i64)> {
        let where_sql = self.sql();
        let count_sql = format!("SELECT COUNT(*) FROM {count_from}{where_sql}");
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        for b in &self.binds {
            count = match b {
                Bind::Text(s) => count.bind(s),
                Bind::Int(i) => count.bind(i),
            };
        }
        let total = count.fetch_one(pool).await.map_err(db_err)?;
        let page_sql = format!("{select}{where_sql} ORDER BY {order} LIMIT ? OFFSET ?");
        let mut query = sqlx::query(&page_sql);
        for b in &self.binds {
            query = match b {
                Bind::Text(s) => query.bind(s),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query
            .bind(i64::from(paging.limit))
            .bind(i64::try_from(paging.offset).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
        Ok((rows, total))
    }
}

fn order_by(sort: &[SortKey], column: impl Fn(&str) -> &'static str, id: &str) -> String {
    let mut parts: Vec<String> = sort
        .iter()
        .map(|k| {
            format!(
                "{} {}",
                column(k.field),
                if k.descending { "DESC" } else { "ASC" }
            )
        })
        .collect();
    parts.push(format!("{id} ASC"));
    parts.join(", ")
}

pub(crate) async fn vaults(pool: &SqlitePool, q: &VaultQuery) -> Result<Page<VaultView>> {
    let mut f = Filter::default();
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
    let (rows, total_count) = f
        .page(pool, VAULT_SELECT, "vaults v", &order, q.paging)
        .await?;
    Ok(Page {
        items: rows.iter().map(vault_from_row).collect::<Result<_>>()?,
        total_count,
    })
}

pub(crate) async fn templates(pool: &SqlitePool, q: &TemplateQuery) -> Result<Page<Template>> {
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
    let (rows, total_count) = f
        .page(pool, TEMPLATE_SELECT, "templates t", &order, q.paging)
        .await?;
    Ok(Page {
        items: rows.iter().map(template_from_row).collect::<Result<_>>()?,
        total_count,
    })
}

pub(crate) async fn keystores(pool: &SqlitePool, q: &KeystoreQuery) -> Result<Page<Keystore>> {
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
    let (rows, total_count) = f
        .page(pool, KEYSTORE_SELECT, "keystores ks", &order, q.paging)
        .await?;
    Ok(Page {
        items: rows.iter().map(keystore_from_row).collect::<Result<_>>()?,
        total_count,
    })
}

pub(crate) async fn keys(pool: &SqlitePool, q: &KeyQuery) -> Result<Page<ManagedKey>> {
    let mut f = Filter::default();
    if let KeyScope::InKeystore(id) = q.scope {
        f.raw("k.id IN (SELECT managed_key_id FROM internal_copies WHERE keystore_id = ?)");
        f.binds.push(Bind::Text(id.to_string()));
    }
    f.one_of("k.vault_id", &q.vault_ids);
    f.one_of("k.algorithm", &q.algorithms);
    f.one_of("k.state", &q.states);
    if let Some(l) = &q.label {
        f.eq("k.label", l.clone());
    }
    f.date_range("k.activation_date", &q.activation_date);
    f.date_range("k.expiration_date", &q.deactivation_date);
    f.day_range("k.created_at", &q.created_at);
    f.day_range("k.updated_at", &q.updated_at);
    f.day_range("k.rotated_at", &q.rotated_at);
    f.int_range("k.size", &q.size);
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
    if let Some(p) = &q.template_name_prefix {
        f.prefix("t.name", p);
    }
    f.one_of("k.template_id", &q.template_ids);
    f.any_of(&q.template_types, |m| {
        format!("EXISTS (SELECT 1 FROM json_each(t.types) WHERE value IN ({m}))")
    });
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
    let (rows, total_count) = f
        .page(
            pool,
            KEY_SELECT,
            "managed_keys k JOIN templates t ON t.id = k.template_id",
            &order,
            q.paging,
        )
        .await?;
    Ok(Page {
        items: rows.iter().map(key_from_row).collect::<Result<_>>()?,
        total_count,
    })
}
