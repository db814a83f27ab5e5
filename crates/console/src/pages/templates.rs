//! Key templates: list, create, edit, archive and unarchive, and delete (which the API refuses
//! while keys use the template).

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::Method;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Paging, vault_choices};
use crate::view::Text;
use crate::{Chrome, Console, PageResult, User, render, render_status};

const PAGE_SIZE: u64 = 25;
/// Keystore rows on the template form.
const KEYSTORE_ROWS: usize = 3;
const ALGORITHMS: &[&str] = &["aes", "rsa", "ec", "hmac", "des", "dilithium"];
const KEYSTORE_TYPES: &[&str] = &[
    "ibm_cloud_kms",
    "aws_kms",
    "azure_key_vault",
    "google_kms",
    "hashicorp_vault",
    "kmip",
    "pkcs11",
];

pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/ui/templates", get(list))
        .route("/ui/templates/new", get(create_form).post(create))
        .route("/ui/templates/{id}/edit", get(edit_form).post(edit))
        .route("/ui/templates/{id}/{action}", post(act))
}

#[derive(Template)]
#[template(path = "templates.html")]
pub(crate) struct TemplatesPage {
    chrome: Chrome,
    templates: Vec<Value>,
    paging: Paging,
    /// A pending confirmation: (template id, template name, action, question).
    confirm: Option<(String, String, &'static str, &'static str)>,
}

pub(crate) fn keystore_groups(t: &Value) -> String {
    t.items("/keystores")
        .iter()
        .map(|k| format!("{} ({})", k.t("/group"), k.t("/type")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The actions that ask first: (action, question).
fn confirmation(action: &str) -> Option<(&'static str, &'static str)> {
    match action {
        "delete" => Some((
            "delete",
            "Delete this template? Keys made from it must be removed first.",
        )),
        "archive" => Some((
            "archive",
            "Archive this template? No new keys can be made from it until it is unarchived.",
        )),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    id: String,
}

pub(crate) async fn list(user: User, Query(q): Query<ListQuery>) -> PageResult {
    let answer = user
        .get(&format!(
            "/api/v4/templates?limit={PAGE_SIZE}&offset={}&sort=name",
            q.offset
        ))
        .await?;
    let templates = answer.body.items("/templates");
    let confirm = match confirmation(&q.confirm) {
        Some((action, text)) if !q.id.is_empty() => {
            let name = user
                .get(&format!("/api/v4/templates/{}", q.id))
                .await?
                .body
                .t("/name");
            Some((q.id.clone(), name, action, text))
        }
        _ => None,
    };
    render(&TemplatesPage {
        chrome: user.chrome("templates"),
        paging: Paging::new(
            q.offset,
            PAGE_SIZE,
            answer.body["total_count"].as_u64().unwrap_or(0),
            String::new(),
        ),
        templates,
        confirm,
    })
}

pub(crate) async fn act(
    user: User,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<crate::CsrfOnly>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    user.check_csrf(&form.csrf)?;
    let (method, path, done) = match action.as_str() {
        "archive" => (
            Method::POST,
            format!("/api/v4/templates/{id}/archive"),
            "The template was archived.",
        ),
        "unarchive" => (
            Method::POST,
            format!("/api/v4/templates/{id}/unarchive"),
            "The template was unarchived.",
        ),
        "delete" => (
            Method::DELETE,
            format!("/api/v4/templates/{id}"),
            "The template was deleted.",
        ),
        _ => return Ok(user.failed("/ui/templates", "There is no such action.")),
    };
    // The change applies to the template as it is now: read its ETag, then act with it.
    let current = user.get(&format!("/api/v4/templates/{id}")).await?;
    match user
        .change(method, &path, None, current.etag.as_deref())
        .await?
    {
        Ok(_) => Ok(user.done("/ui/templates", done)),
        Err(problem) => Ok(user.failed("/ui/templates", problem.message)),
    }
}

/// One keystore row of the form: the keystore type and the group it distributes to.
pub(crate) struct KeystoreRow {
    keystore_type: String,
    group: String,
}

#[derive(Template)]
#[template(path = "template_form.html")]
pub(crate) struct FormPage {
    chrome: Chrome,
    /// The template being edited (id, ETag), or none for a new one.
    editing: Option<(String, String)>,
    vaults: Vec<Value>,
    algorithms: &'static [&'static str],
    keystore_types: &'static [&'static str],
    values: TemplateForm,
    rows: Vec<KeystoreRow>,
    error: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
pub(crate) struct TemplateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    vault: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    naming_scheme: String,
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    key_state: String,
    #[serde(default)]
    type_1: String,
    #[serde(default)]
    group_1: String,
    #[serde(default)]
    type_2: String,
    #[serde(default)]
    group_2: String,
    #[serde(default)]
    type_3: String,
    #[serde(default)]
    group_3: String,
}

impl TemplateForm {
    fn rows(&self) -> Vec<KeystoreRow> {
        [
            (&self.type_1, &self.group_1),
            (&self.type_2, &self.group_2),
            (&self.type_3, &self.group_3),
        ]
        .into_iter()
        .map(|(t, g)| KeystoreRow {
            keystore_type: t.clone(),
            group: g.clone(),
        })
        .collect()
    }

    fn keystores(&self) -> Value {
        Value::Array(
            self.rows()
                .into_iter()
                .filter(|r| !r.group.trim().is_empty())
                .map(|r| json!({ "type": r.keystore_type, "group": r.group.trim() }))
                .collect(),
        )
    }

    fn body(&self, creating: bool) -> Value {
        let mut body = json!({
            "name": self.name.trim(),
            "description": self.description.trim(),
            "keystores": self.keystores(),
        });
        if !self.naming_scheme.trim().is_empty() {
            body["naming_scheme"] = json!(self.naming_scheme.trim());
        }
        if creating {
            body["vault"] = json!({ "id": self.vault });
            body["key"] = json!({
                "algorithm": self.algorithm,
                "size": self.size.trim(),
                "state": self.key_state,
            });
        }
        body
    }
}

fn rows_of(template: &Value) -> Vec<KeystoreRow> {
    let mut rows: Vec<KeystoreRow> = template
        .items("/keystores")
        .iter()
        .map(|k| KeystoreRow {
            keystore_type: k.t("/type"),
            group: k.t("/group"),
        })
        .collect();
    while rows.len() < KEYSTORE_ROWS {
        rows.push(KeystoreRow {
            keystore_type: "ibm_cloud_kms".into(),
            group: String::new(),
        });
    }
    rows
}

pub(crate) async fn create_form(user: User) -> PageResult {
    let vaults = vault_choices(&user).await?;
    let values = TemplateForm {
        vault: vaults.first().map(|v| v.t("/id")).unwrap_or_default(),
        algorithm: "aes".into(),
        size: "256".into(),
        key_state: "active".into(),
        ..TemplateForm::default()
    };
    render(&FormPage {
        chrome: user.chrome("templates"),
        editing: None,
        vaults,
        algorithms: ALGORITHMS,
        keystore_types: KEYSTORE_TYPES,
        rows: rows_of(&Value::Null),
        values,
        error: None,
    })
}

pub(crate) async fn create(user: User, Form(form): Form<TemplateForm>) -> PageResult {
    user.check_csrf(&form.csrf)?;
    let body = form.body(true);
    match user
        .change(Method::POST, "/api/v4/templates", Some(&body), None)
        .await?
    {
        Ok(created) => Ok(user.done(
            "/ui/templates",
            format!("Template {} created.", created.body.t("/name")),
        )),
        Err(problem) => render_status(
            problem.status,
            &FormPage {
                chrome: user.chrome("templates"),
                editing: None,
                vaults: vault_choices(&user).await?,
                algorithms: ALGORITHMS,
                keystore_types: KEYSTORE_TYPES,
                rows: form.rows(),
                values: form,
                error: Some(problem.message),
            },
        ),
    }
}

pub(crate) async fn edit_form(user: User, Path(id): Path<String>) -> PageResult {
    let id = crate::page_id(&id)?;
    let answer = user.get(&format!("/api/v4/templates/{id}")).await?;
    let t = answer.body;
    let values = TemplateForm {
        vault: t.t("/vault/id"),
        name: t.t("/name"),
        description: t.t("/description"),
        naming_scheme: t.t("/naming_scheme"),
        algorithm: t.t("/key/algorithm"),
        size: t.t("/key/size"),
        key_state: t.t("/key/state"),
        ..TemplateForm::default()
    };
    render(&FormPage {
        chrome: user.chrome("templates"),
        editing: Some((id, answer.etag.unwrap_or_default())),
        vaults: Vec::new(),
        algorithms: ALGORITHMS,
        keystore_types: KEYSTORE_TYPES,
        rows: rows_of(&t),
        values,
        error: None,
    })
}

pub(crate) async fn edit(
    user: User,
    Path(id): Path<String>,
    Form(form): Form<TemplateForm>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    user.check_csrf(&form.csrf)?;
    let body = form.body(false);
    let path = format!("/api/v4/templates/{id}");
    match user
        .change(Method::PATCH, &path, Some(&body), Some(&form.etag))
        .await?
    {
        Ok(_) => Ok(user.done("/ui/templates", "The template was updated.")),
        Err(problem) => render_status(
            problem.status,
            &FormPage {
                chrome: user.chrome("templates"),
                editing: Some((id, form.etag.clone())),
                vaults: Vec::new(),
                algorithms: ALGORITHMS,
                keystore_types: KEYSTORE_TYPES,
                rows: form.rows(),
                values: form,
                error: Some(problem.message),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_template_body_carries_key_properties_and_only_filled_keystore_rows() {
        let form = TemplateForm {
            vault: "v".into(),
            name: " t ".into(),
            algorithm: "aes".into(),
            size: "256".into(),
            key_state: "active".into(),
            type_1: "ibm_cloud_kms".into(),
            group_1: "prod".into(),
            type_2: "aws_kms".into(),
            group_2: " ".into(),
            ..TemplateForm::default()
        };
        let body = form.body(true);
        assert_eq!(body["name"], "t");
        assert_eq!(body["key"]["size"], "256");
        assert_eq!(
            body["keystores"],
            json!([{"type": "ibm_cloud_kms", "group": "prod"}])
        );
        assert!(form.body(false).get("key").is_none());
    }
}
