//! Keystores: the list with a Details side panel, connect wizards per type with "Test
//! connection", editing a connection, and the Disconnect flow with its "Disconnect keystore"
//! confirmation. A refused disconnect names the keys that block it, linked.

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Form, Router};
use keyplane_core::keystore_types::{FieldKind, FieldSpec, connection_fields};
use keyplane_core::model::{IbmVariant, KeystoreType};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Paging, vault_choices};
use crate::api::{Problem, with_query};
use crate::view::{Text, state_label};
use crate::{Chrome, Console, PageError, PageResult, User, render, render_status};

const PAGE_SIZE: u64 = 25;

pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/ui/keystores", get(list))
        .route("/ui/keystores/new", get(connect_form).post(connect))
        .route("/ui/keystores/{id}/edit", get(edit_form).post(edit))
        .route("/ui/keystores/{id}/disconnect", post(disconnect))
}

/// The kinds a user picks from: a keystore type, and for IBM Cloud KMS its variant.
const KINDS: &[(&str, &str)] = &[
    ("internal", "Internal keystore (this Keyplane)"),
    ("aws_kms", "AWS Key Management Service"),
    ("azure_key_vault", "Azure Key Vault"),
    ("google_kms", "Google Cloud KMS"),
    ("key_protect", "IBM Key Protect"),
    ("hpcs", "IBM Hyper Protect Crypto Services"),
    ("hashicorp_vault", "HashiCorp Vault / OpenBao transit"),
    ("kmip", "KMIP server"),
    ("pkcs11", "PKCS#11 HSM"),
];

fn wire_kind(kind: &str) -> Option<(KeystoreType, Option<IbmVariant>)> {
    match kind {
        "internal" | "key_protect" | "hpcs" => {
            Some((KeystoreType::IbmCloudKms, Some(IbmVariant::parse(kind)?)))
        }
        other => KeystoreType::parse(other).map(|t| (t, None)),
    }
}

fn kind_of(keystore: &Value) -> String {
    match keystore.t("/ibm_variant") {
        v if !v.is_empty() => v,
        _ => keystore.t("/type"),
    }
}

fn kind_label(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("Keystore", |(_, label)| label)
}

/// A row of the list: the keystore with its health and key count.
pub(crate) struct Row {
    item: Value,
    kind: &'static str,
    health: String,
    keys: String,
}

/// A key that keeps a keystore from being disconnected.
pub(crate) struct Blocking {
    id: String,
    label: String,
    state: String,
}

impl Blocking {
    fn state_label(&self) -> &'static str {
        state_label(&self.state)
    }

    /// What takes it out of the way: deactivate an active key, destroy a deactivated one.
    fn way_out(&self) -> &'static str {
        if self.state == "active" {
            "Deactivate it"
        } else {
            "Destroy it"
        }
    }
}

pub(crate) struct Panel {
    item: Value,
    etag: String,
    kind: &'static str,
    health: Value,
    keys: String,
    connection: Vec<(String, String)>,
    confirm: bool,
    refusal: Option<String>,
    blocking: Vec<Blocking>,
}

#[derive(Template)]
#[template(path = "keystores.html")]
pub(crate) struct KeystoresPage {
    chrome: Chrome,
    rows: Vec<Row>,
    paging: Paging,
    panel: Option<Panel>,
    filter_type: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    selected: String,
    #[serde(default)]
    confirm: String,
    #[serde(default, rename = "type")]
    keystore_type: String,
    #[serde(default)]
    offset: u64,
}

async fn health_and_count(user: &User, id: &str) -> (Value, String) {
    let health = user
        .get(&format!("/api/v4/keystores/{id}/status"))
        .await
        .map(|a| a.body)
        .unwrap_or_else(|_| json!({"health_status": "unknown", "message": "not known"}));
    let keys = user
        .get(&format!("/api/v4/keystores/{id}/managed_keys?limit=1"))
        .await
        .map(|a| a.body.t("/total_count"))
        .unwrap_or_default();
    (health, keys)
}

async fn page(
    user: &User,
    q: &ListQuery,
    panel: Option<Panel>,
) -> Result<KeystoresPage, PageError> {
    let path = with_query(
        &format!("/api/v4/keystores?limit={PAGE_SIZE}&offset={}", q.offset),
        &[("type", q.keystore_type.as_str())],
    );
    let answer = user.get(&path).await?;
    let mut rows = Vec::new();
    for item in answer.body.items("/keystores") {
        let (health, keys) = health_and_count(user, &item.t("/id")).await;
        rows.push(Row {
            kind: kind_label(&kind_of(&item)),
            health: health.t("/health_status"),
            keys,
            item,
        });
    }
    let total = answer.body["total_count"].as_u64().unwrap_or(0);
    let query = with_query("", &[("type", q.keystore_type.as_str())]);
    Ok(KeystoresPage {
        chrome: user.chrome("keystores"),
        rows,
        paging: Paging::new(
            q.offset,
            PAGE_SIZE,
            total,
            query.trim_start_matches('?').to_owned(),
        ),
        panel,
        filter_type: q.keystore_type.clone(),
    })
}

async fn panel(user: &User, id: &str, confirm: bool) -> Result<Panel, PageError> {
    let answer = user.get(&format!("/api/v4/keystores/{id}")).await?;
    let item = answer.body;
    let (health, keys) = health_and_count(user, id).await;
    let kind = kind_of(&item);
    let connection = wire_kind(&kind)
        .map(|(t, v)| connection_fields(t, v))
        .unwrap_or_default()
        .iter()
        .filter(|f| !f.secret)
        .map(|f| (f.name.to_owned(), item.t(&format!("/{}", f.name))))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    Ok(Panel {
        etag: answer.etag.unwrap_or_default(),
        kind: kind_label(&kind),
        health,
        keys,
        connection,
        confirm,
        refusal: None,
        blocking: Vec::new(),
        item,
    })
}

pub(crate) async fn list(user: User, Query(q): Query<ListQuery>) -> PageResult {
    let panel = if q.selected.is_empty() {
        None
    } else {
        Some(panel(&user, &q.selected, q.confirm == "disconnect").await?)
    };
    render(&page(&user, &q, panel).await?)
}

#[derive(Deserialize)]
pub(crate) struct DisconnectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    mode: String,
}

/// The refused disconnect's keys, from the error's `message_params` (`id (label, state)`).
fn blocking_keys(problem: &Problem) -> Vec<Blocking> {
    if problem.code != "keystore_not_empty" {
        return Vec::new();
    }
    problem.body["errors"][0]["message_params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|entry| {
            let (id, rest) = entry.split_once(' ').unwrap_or((entry, ""));
            let inner = rest.trim_start_matches('(').trim_end_matches(')');
            let (label, state) = inner.rsplit_once(", ").unwrap_or((inner, ""));
            Blocking {
                id: id.to_owned(),
                label: label.to_owned(),
                state: state.to_owned(),
            }
        })
        .collect()
}

pub(crate) async fn disconnect(
    user: User,
    Path(id): Path<String>,
    Form(form): Form<DisconnectForm>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    user.check_csrf(&form.csrf)?;
    let mode = if form.mode.is_empty() {
        "restrict"
    } else {
        form.mode.as_str()
    };
    let path = with_query(&format!("/api/v4/keystores/{id}"), &[("mode", mode)]);
    match user
        .change(Method::DELETE, &path, None, Some(&form.etag))
        .await?
    {
        Ok(_) => Ok(user.done("/ui/keystores", "The keystore was disconnected.")),
        Err(problem) => {
            let mut shown = panel(&user, &id, false).await?;
            shown.blocking = blocking_keys(&problem);
            shown.refusal = Some(problem.message.clone());
            let q = ListQuery {
                selected: id,
                ..ListQuery::default()
            };
            render_status(problem.status, &page(&user, &q, Some(shown)).await?)
        }
    }
}

/// A connection field on a form.
pub(crate) struct Field {
    name: &'static str,
    required: bool,
    secret: bool,
    locked: bool,
    multiline: bool,
    choices: Vec<&'static str>,
    value: String,
}

impl Field {
    fn of(spec: &FieldSpec, value: String) -> Self {
        Field {
            name: spec.name,
            required: spec.required,
            secret: spec.secret,
            locked: spec.locked,
            multiline: spec.kind == FieldKind::Pem,
            choices: match spec.kind {
                FieldKind::OneOf(choices) => choices.to_vec(),
                FieldKind::Bool => vec!["false", "true"],
                _ => Vec::new(),
            },
            value,
        }
    }

    fn label(&self) -> String {
        self.name.replace('_', " ")
    }
}

#[derive(Template)]
#[template(path = "keystore_form.html")]
pub(crate) struct ConnectPage {
    chrome: Chrome,
    kinds: &'static [(&'static str, &'static str)],
    kind: String,
    kind_label: &'static str,
    /// Editing an existing keystore (its id and ETag), or connecting a new one.
    editing: Option<(String, String)>,
    vaults: Vec<Value>,
    vault: String,
    name: String,
    description: String,
    groups: String,
    fields: Vec<Field>,
    error: Option<String>,
    tested: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct KindQuery {
    #[serde(default)]
    kind: String,
}

/// The kind's connection fields, filled from `values` (secrets are never filled in).
fn fields_for(kind: &str, values: &Value) -> Vec<Field> {
    wire_kind(kind)
        .map(|(t, v)| connection_fields(t, v))
        .unwrap_or_default()
        .iter()
        .map(|spec| {
            let value = if spec.secret {
                String::new()
            } else {
                values.t(&format!("/{}", spec.name))
            };
            Field::of(spec, value)
        })
        .collect()
}

pub(crate) async fn connect_form(user: User, Query(q): Query<KindQuery>) -> PageResult {
    let vaults = vault_choices(&user).await?;
    render(&ConnectPage {
        chrome: user.chrome("keystores"),
        kinds: KINDS,
        kind_label: kind_label(&q.kind),
        fields: fields_for(&q.kind, &Value::Null),
        kind: if wire_kind(&q.kind).is_some() {
            q.kind
        } else {
            String::new()
        },
        editing: None,
        vault: vaults.first().map(|v| v.t("/id")).unwrap_or_default(),
        vaults,
        name: String::new(),
        description: String::new(),
        groups: String::new(),
        error: None,
        tested: None,
    })
}

/// The posted form: fixed fields by name, connection fields as `field.<name>`.
struct Posted {
    csrf: String,
    intent: String,
    etag: String,
    vault: String,
    name: String,
    description: String,
    groups: String,
    fields: Map<String, Value>,
}

fn posted(pairs: Vec<(String, String)>) -> Posted {
    let mut p = Posted {
        csrf: String::new(),
        intent: String::new(),
        etag: String::new(),
        vault: String::new(),
        name: String::new(),
        description: String::new(),
        groups: String::new(),
        fields: Map::new(),
    };
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => p.csrf = v,
            "intent" => p.intent = v,
            "etag" => p.etag = v,
            "vault" => p.vault = v,
            "name" => p.name = v,
            "description" => p.description = v,
            "groups" => p.groups = v,
            other => {
                if let Some(field) = other.strip_prefix("field.") {
                    p.fields.insert(field.to_owned(), Value::String(v));
                }
            }
        }
    }
    p
}

/// The API body: groups split on commas, booleans as booleans, empty optional fields left out
/// (and secrets left out when editing, so the stored ones stay).
fn connection_body(kind: &str, p: &Posted, editing: bool) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("name".into(), json!(p.name.trim()));
    body.insert("description".into(), json!(p.description.trim()));
    let groups: Vec<&str> = p
        .groups
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    body.insert("groups".into(), json!(groups));
    for spec in wire_kind(kind)
        .map(|(t, v)| connection_fields(t, v))
        .unwrap_or_default()
    {
        let Some(value) = p.fields.get(spec.name).and_then(Value::as_str) else {
            continue;
        };
        if value.is_empty() || (editing && spec.locked) {
            continue;
        }
        let value = match spec.kind {
            FieldKind::Bool => Value::Bool(value == "true"),
            _ => Value::String(value.to_owned()),
        };
        body.insert(spec.name.to_owned(), value);
    }
    body
}

pub(crate) async fn connect(
    user: User,
    Query(q): Query<KindQuery>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let p = posted(pairs);
    user.check_csrf(&p.csrf)?;
    let Some((keystore_type, variant)) = wire_kind(&q.kind) else {
        return Ok(user.failed("/ui/keystores/new", "Choose a keystore type."));
    };
    let mut body = connection_body(&q.kind, &p, false);
    body.insert("type".into(), json!(keystore_type.as_str()));
    if let Some(v) = variant {
        body.insert("ibm_variant".into(), json!(v.as_str()));
    }
    body.insert("vault".into(), json!({ "id": p.vault }));
    let testing = p.intent == "test";
    let path = if testing {
        "/api/v4/keystores?dry_run=true"
    } else {
        "/api/v4/keystores"
    };
    let outcome = user
        .change(Method::POST, path, Some(&Value::Object(body)), None)
        .await?;
    let (status, error, tested) = match outcome {
        Ok(_) if testing => (
            StatusCode::OK,
            None,
            Some("The connection works: Keyplane reached the keystore with these settings.".into()),
        ),
        Ok(created) => {
            let id = created.body.t("/id");
            return Ok(user.done(
                &format!("/ui/keystores?selected={id}"),
                format!("Keystore {} connected.", created.body.t("/name")),
            ));
        }
        Err(problem) => (problem.status, Some(problem.message), None),
    };
    let vaults = vault_choices(&user).await?;
    render_status(
        status,
        &ConnectPage {
            chrome: user.chrome("keystores"),
            kinds: KINDS,
            kind_label: kind_label(&q.kind),
            fields: fields_for(&q.kind, &Value::Object(p.fields.clone())),
            kind: q.kind,
            editing: None,
            vaults,
            vault: p.vault,
            name: p.name,
            description: p.description,
            groups: p.groups,
            error,
            tested,
        },
    )
}

pub(crate) async fn edit_form(user: User, Path(id): Path<String>) -> PageResult {
    let id = crate::page_id(&id)?;
    let answer = user.get(&format!("/api/v4/keystores/{id}")).await?;
    let item = answer.body;
    let kind = kind_of(&item);
    render(&ConnectPage {
        chrome: user.chrome("keystores"),
        kinds: KINDS,
        kind_label: kind_label(&kind),
        fields: fields_for(&kind, &item),
        editing: Some((id, answer.etag.unwrap_or_default())),
        vaults: Vec::new(),
        vault: item.t("/vault/id"),
        name: item.t("/name"),
        description: item.t("/description"),
        groups: item.t("/groups"),
        kind,
        error: None,
        tested: None,
    })
}

pub(crate) async fn edit(
    user: User,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    let p = posted(pairs);
    user.check_csrf(&p.csrf)?;
    let current = user.get(&format!("/api/v4/keystores/{id}")).await?;
    let kind = kind_of(&current.body);
    let body = Value::Object(connection_body(&kind, &p, true));
    let path = format!("/api/v4/keystores/{id}");
    match user
        .change(Method::PATCH, &path, Some(&body), Some(&p.etag))
        .await?
    {
        Ok(_) => Ok(user.done(
            &format!("/ui/keystores?selected={id}"),
            "The connection was updated.",
        )),
        Err(problem) => render_status(
            problem.status,
            &ConnectPage {
                chrome: user.chrome("keystores"),
                kinds: KINDS,
                kind_label: kind_label(&kind),
                fields: fields_for(&kind, &Value::Object(p.fields.clone())),
                editing: Some((id, p.etag)),
                vaults: Vec::new(),
                vault: p.vault,
                name: p.name,
                description: p.description,
                groups: p.groups,
                kind,
                error: Some(problem.message),
                tested: None,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_kind_maps_to_a_wire_type() {
        for (kind, _) in KINDS {
            assert!(wire_kind(kind).is_some(), "{kind}");
        }
        assert!(wire_kind("nonsense").is_none());
    }

    #[test]
    fn a_refusal_names_its_blocking_keys() {
        let mut problem = Problem::new(StatusCode::CONFLICT, "keystore_not_empty", "keys remain");
        problem.body = json!({"errors": [{"message_params": ["k1 (payroll, active)", "k2 (a, b, deactivated)"]}]});
        let keys = blocking_keys(&problem);
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].id.as_str(), keys[0].label.as_str()),
            ("k1", "payroll")
        );
        assert_eq!(keys[0].way_out(), "Deactivate it");
        assert_eq!(
            (keys[1].label.as_str(), keys[1].state.as_str()),
            ("a, b", "deactivated")
        );
        assert_eq!(keys[1].way_out(), "Destroy it");
    }

    #[test]
    fn a_connection_body_splits_groups_and_types_booleans() {
        let p = posted(vec![
            ("name".into(), " kp ".into()),
            ("groups".into(), "a, b,,".into()),
            ("field.kmip_host".into(), "h".into()),
            ("field.kmip_port".into(), "".into()),
        ]);
        let body = connection_body("kmip", &p, false);
        assert_eq!(body["name"], "kp");
        assert_eq!(body["groups"], json!(["a", "b"]));
        assert!(!body.contains_key("kmip_port"));
    }
}
