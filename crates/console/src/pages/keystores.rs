//! Keystores: the list with a Details side panel, connect wizards per type with "Test
//! connection", editing a connection, and the Disconnect flow with its "Disconnect keystore"
//! confirmation. A refused disconnect names the keys that block it, linked.

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Form, Router};
use keyplane_core::etag::etag;
use keyplane_core::keystore_types::{FieldKind, FieldSpec, connection_fields};
use keyplane_core::model::{
    IbmVariant, Keystore, KeystoreDeleteMode, KeystoreStatus, KeystoreType, VaultView,
};
use keyplane_core::operation::catalog;
use keyplane_core::query::{KeyQuery, KeystoreQuery};
use keyplane_core::service::{KeystorePatch, NewKeystore};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Paging, if_match, link_query, vault_choices, window};
use crate::view::state_label;
use crate::{Chrome, Console, PageError, PageResult, Problem, User, render, render_status, target};

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

fn kind_of(keystore: &Keystore) -> String {
    match keystore.ibm_variant {
        Some(v) => v.as_str().to_owned(),
        None => keystore.keystore_type.as_str().to_owned(),
    }
}

/// A non-secret connection field as text (secrets are never read back).
fn connection_text(keystore: &Keystore, field: &str) -> String {
    match keystore.connection.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
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
    item: Keystore,
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
    item: Keystore,
    etag: String,
    kind: &'static str,
    health: Health,
    keys: String,
    connection: Vec<(String, String)>,
    confirm: bool,
    refusal: Option<String>,
    blocking: Vec<Blocking>,
}

/// A keystore's health as the panel shows it.
pub(crate) struct Health {
    status: String,
    message: String,
    last_heartbeat: String,
}

impl Health {
    fn of(status: Option<KeystoreStatus>) -> Self {
        match status {
            Some(s) => Health {
                status: s.health_status.as_str().to_owned(),
                message: s.message,
                last_heartbeat: s
                    .last_heartbeat
                    .as_ref()
                    .map(crate::view::when)
                    .unwrap_or_default(),
            },
            None => Health {
                status: "unknown".into(),
                message: "not known".into(),
                last_heartbeat: String::new(),
            },
        }
    }
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

async fn health_and_count(user: &User, id: Uuid) -> (Health, String) {
    let (kp, caller) = (user.keyplane(), user.caller());
    let health = user
        .read(
            &catalog::KEYSTORE_STATUS,
            target("keystores", id),
            kp.keystore_status(caller, id),
        )
        .await
        .ok();
    let one = KeyQuery {
        paging: window(1, 0).unwrap_or_default(),
        ..KeyQuery::default()
    };
    let keys = user
        .read(
            &catalog::KEYSTORE_KEYS,
            target("keystores", id),
            kp.list_keystore_keys(caller, id, one),
        )
        .await
        .map(|page| page.total_count.to_string())
        .unwrap_or_default();
    (Health::of(health), keys)
}

async fn page(
    user: &User,
    q: &ListQuery,
    panel: Option<Panel>,
) -> Result<KeystoresPage, PageError> {
    let types = if q.keystore_type.is_empty() {
        Vec::new()
    } else {
        vec![KeystoreType::parse(&q.keystore_type).ok_or_else(|| {
            PageError::Api(Box::new(Problem::new(
                StatusCode::BAD_REQUEST,
                "There is no such keystore type.",
            )))
        })?]
    };
    let query = KeystoreQuery {
        types,
        paging: window(PAGE_SIZE as u32, q.offset)?,
        ..KeystoreQuery::default()
    };
    let listed = user
        .read(
            &catalog::KEYSTORE_LIST,
            None,
            user.keyplane().list_keystores(user.caller(), query),
        )
        .await?;
    let mut rows = Vec::new();
    for item in listed.items {
        let (health, keys) = health_and_count(user, item.id).await;
        rows.push(Row {
            kind: kind_label(&kind_of(&item)),
            health: health.status,
            keys,
            item,
        });
    }
    let links = link_query(&[("type", q.keystore_type.as_str())]);
    Ok(KeystoresPage {
        chrome: user.chrome("keystores"),
        rows,
        paging: Paging::new(q.offset, PAGE_SIZE, listed.total_count, links),
        panel,
        filter_type: q.keystore_type.clone(),
    })
}

async fn read_keystore(user: &User, id: Uuid) -> Result<Keystore, PageError> {
    user.read(
        &catalog::KEYSTORE_READ,
        target("keystores", id),
        user.keyplane().get_keystore(user.caller(), id),
    )
    .await
}

async fn panel(user: &User, id: Uuid, confirm: bool) -> Result<Panel, PageError> {
    let item = read_keystore(user, id).await?;
    let (health, keys) = health_and_count(user, id).await;
    let kind = kind_of(&item);
    let connection = wire_kind(&kind)
        .map(|(t, v)| connection_fields(t, v))
        .unwrap_or_default()
        .iter()
        .filter(|f| !f.secret)
        .map(|f| (f.name.to_owned(), connection_text(&item, f.name)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    Ok(Panel {
        etag: etag(item.revision, item.id),
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
        let id = crate::page_id(&q.selected)?;
        Some(panel(&user, id, q.confirm == "disconnect").await?)
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

/// The refused disconnect's keys, from the conflict's params (`id (label, state)`).
fn blocking_keys(problem: &Problem) -> Vec<Blocking> {
    let Some(keyplane_core::Error::Conflict {
        code: keyplane_core::ErrorCode::KeystoreNotEmpty,
        params,
        ..
    }) = &problem.cause
    else {
        return Vec::new();
    };
    params
        .iter()
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
    let tag = if_match(&form.etag);
    // The mode is read inside the recorded call: a refused one is in the trail too.
    let outcome = user
        .change(
            &catalog::KEYSTORE_DELETE,
            204,
            target("keystores", id),
            json!({ "mode": mode }),
            async {
                let mode = KeystoreDeleteMode::parse(mode).ok_or_else(|| {
                    keyplane_core::Error::invalid_parameter(
                        "mode",
                        format!("mode must be one of {}", KeystoreDeleteMode::allowed()),
                    )
                })?;
                user.keyplane()
                    .delete_keystore(user.caller(), id, Some(&tag), mode)
                    .await
            },
        )
        .await;
    match outcome {
        Ok(()) => Ok(user.done("/ui/keystores", "The keystore was disconnected.")),
        Err(problem) => {
            let mut shown = panel(&user, id, false).await?;
            shown.blocking = blocking_keys(&problem);
            shown.refusal = Some(problem.message.clone());
            let q = ListQuery {
                selected: id.to_string(),
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
    vaults: Vec<VaultView>,
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

/// The kind's connection fields, filled by `value_of` (secrets are never filled in).
fn fields_for(kind: &str, value_of: impl Fn(&str) -> String) -> Vec<Field> {
    wire_kind(kind)
        .map(|(t, v)| connection_fields(t, v))
        .unwrap_or_default()
        .iter()
        .map(|spec| {
            let value = if spec.secret {
                String::new()
            } else {
                value_of(spec.name)
            };
            Field::of(spec, value)
        })
        .collect()
}

/// A posted connection field's value.
fn posted_value(fields: &Map<String, Value>, name: &str) -> String {
    fields
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub(crate) async fn connect_form(user: User, Query(q): Query<KindQuery>) -> PageResult {
    let vaults = vault_choices(&user).await?;
    render(&ConnectPage {
        chrome: user.chrome("keystores"),
        kinds: KINDS,
        kind_label: kind_label(&q.kind),
        fields: fields_for(&q.kind, |_| String::new()),
        kind: if wire_kind(&q.kind).is_some() {
            q.kind
        } else {
            String::new()
        },
        editing: None,
        vault: vaults
            .first()
            .map(|v| v.vault.id.to_string())
            .unwrap_or_default(),
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

/// The groups, split on commas.
fn groups(p: &Posted) -> Vec<String> {
    p.groups
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The connection fields: booleans as booleans, empty optional fields left out (and locked
/// fields when editing, so the stored ones stay; secrets left empty stay as stored too).
fn connection(kind: &str, p: &Posted, editing: bool) -> Map<String, Value> {
    let mut fields = Map::new();
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
        fields.insert(spec.name.to_owned(), value);
    }
    fields
}

/// What the user asked, as the trail records it (secret fields are redacted there).
fn recorded(p: &Posted, connection: &Map<String, Value>) -> Value {
    let mut body = connection.clone();
    body.insert("name".into(), json!(p.name.trim()));
    body.insert("description".into(), json!(p.description.trim()));
    body.insert("groups".into(), json!(groups(p)));
    Value::Object(body)
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
    let fields = connection(&q.kind, &p, false);
    let testing = p.intent == "test";
    let mut request = recorded(&p, &fields);
    request["type"] = json!(keystore_type.as_str());
    request["vault"] = json!({ "id": p.vault });
    if testing {
        request["dry_run"] = json!(true);
    }
    // A test creates nothing: it answers 200, as the API's dry run does.
    let success = if testing { 200 } else { 201 };
    let outcome = user
        .change(&catalog::KEYSTORE_CREATE, success, None, request, async {
            let vault_id = Uuid::parse_str(&p.vault)
                .map_err(|_| keyplane_core::Error::invalid_field("vault.id", "choose a vault"))?;
            let input = NewKeystore {
                vault_id: Some(vault_id),
                keystore_type: Some(keystore_type),
                ibm_variant: variant,
                name: Some(p.name.trim().to_owned()),
                description: Some(p.description.trim().to_owned()),
                groups: Some(groups(&p)),
                location: None,
                tls_proxy: None,
                connection: fields,
            };
            user.keyplane()
                .create_keystore(user.caller(), input, testing)
                .await
        })
        .await;
    let (status, error, tested) = match outcome {
        Ok(_) if testing => (
            StatusCode::OK,
            None,
            Some("The connection works: Keyplane reached the keystore with these settings.".into()),
        ),
        Ok(created) => {
            return Ok(user.done(
                &format!("/ui/keystores?selected={}", created.id),
                format!("Keystore {} connected.", created.name),
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
            fields: fields_for(&q.kind, |name| posted_value(&p.fields, name)),
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
    let item = read_keystore(&user, id).await?;
    let kind = kind_of(&item);
    render(&ConnectPage {
        chrome: user.chrome("keystores"),
        kinds: KINDS,
        kind_label: kind_label(&kind),
        fields: fields_for(&kind, |name| connection_text(&item, name)),
        editing: Some((id.to_string(), etag(item.revision, id))),
        vaults: Vec::new(),
        vault: item.vault.id.to_string(),
        name: item.name.clone(),
        description: item.description.clone(),
        groups: item.groups.join(", "),
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
    // What was posted, as the trail records it (secrets redacted there); the keystore is read
    // inside the recorded call, so an update of one that is not there is recorded as such.
    let request = recorded(&p, &p.fields);
    let tag = if_match(&p.etag);
    let mut kind = String::new();
    let updated = user
        .change(
            &catalog::KEYSTORE_UPDATE,
            200,
            target("keystores", id),
            request,
            async {
                let (kp, caller) = (user.keyplane(), user.caller());
                let current = kp.get_keystore(caller, id).await?;
                kind = kind_of(&current);
                let patch = KeystorePatch {
                    name: Some(p.name.trim().to_owned()),
                    description: Some(p.description.trim().to_owned()),
                    groups: Some(groups(&p)),
                    location: None,
                    tls_proxy: None,
                    connection: connection(&kind, &p, true),
                };
                kp.update_keystore(caller, id, Some(&tag), patch).await
            },
        )
        .await;
    if let Err(problem) = &updated
        && kind.is_empty()
    {
        // The keystore could not be read: there is no form to show again.
        return Err(crate::PageError::Api(Box::new(Problem::new(
            problem.status,
            problem.message.clone(),
        ))));
    }
    match updated {
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
                fields: fields_for(&kind, |name| posted_value(&p.fields, name)),
                editing: Some((id.to_string(), p.etag.clone())),
                vaults: Vec::new(),
                vault: p.vault.clone(),
                name: p.name.clone(),
                description: p.description.clone(),
                groups: p.groups.clone(),
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
        let problem = Problem::from(keyplane_core::Error::Conflict {
            code: keyplane_core::ErrorCode::KeystoreNotEmpty,
            message: "keys remain".into(),
            params: vec![
                "k1 (payroll, active)".into(),
                "k2 (a, b, deactivated)".into(),
            ],
        });
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
    fn a_connection_splits_groups_and_leaves_out_empty_fields() {
        let p = posted(vec![
            ("name".into(), " kp ".into()),
            ("groups".into(), "a, b,,".into()),
            ("field.kmip_host".into(), "h".into()),
            ("field.kmip_port".into(), "".into()),
        ]);
        assert_eq!(groups(&p), ["a", "b"]);
        let fields = connection("kmip", &p, false);
        assert_eq!(fields["kmip_host"], "h");
        assert!(!fields.contains_key("kmip_port"));
        assert_eq!(recorded(&p, &fields)["name"], "kp");
    }
}
