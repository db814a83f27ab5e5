//! Key templates: list, create, edit, archive and unarchive, and delete (which core refuses
//! while keys use the template).

use askama::Template;
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use axum::{Form, Router};
use keyplane_core::Error;
use keyplane_core::etag::etag;
use keyplane_core::model::{
    Algorithm, InitialKeyState, KeystoreKeyProperties, KeystoreType, Page, Template as KeyTemplate,
    TemplateKeystore, VaultView,
};
use keyplane_core::operation::catalog;
use keyplane_core::query::TemplateQuery;
use keyplane_core::service::{
    KeyPropertiesInput, NewTemplate, TemplateKeystorePatch, TemplatePatch,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Paging, if_match, sorted_by, vault_choices, window};
use crate::{Chrome, Console, PageResult, User, render, render_status, target};

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
    templates: Vec<KeyTemplate>,
    paging: Paging,
    /// A pending confirmation: (template id, template name, its ETag as shown, action,
    /// question).
    confirm: Option<(String, String, String, &'static str, &'static str)>,
}

pub(crate) fn keystore_groups(t: &KeyTemplate) -> String {
    t.keystores
        .iter()
        .map(|k| format!("{} ({})", k.group, k.keystore_type))
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

/// The templates the user may see, by name, `limit` from `offset`.
pub(crate) async fn by_name(
    user: &User,
    limit: u32,
    offset: u64,
) -> Result<Page<KeyTemplate>, crate::PageError> {
    let query = TemplateQuery {
        sort: sorted_by("name", false),
        paging: window(limit, offset)?,
        ..TemplateQuery::default()
    };
    user.read(
        &catalog::TEMPLATE_LIST,
        None,
        user.keyplane().list_templates(user.caller(), query),
    )
    .await
}

pub(crate) async fn list(user: User, Query(q): Query<ListQuery>) -> PageResult {
    let page = by_name(&user, PAGE_SIZE as u32, q.offset).await?;
    let confirm = match confirmation(&q.confirm) {
        Some((action, text)) if !q.id.is_empty() => {
            let id = crate::page_id(&q.id)?;
            let t = read_template(&user, id).await?;
            let tag = etag(t.revision, id);
            Some((id.to_string(), t.name, tag, action, text))
        }
        _ => None,
    };
    render(&TemplatesPage {
        chrome: user.chrome("templates"),
        paging: Paging::new(q.offset, PAGE_SIZE, page.total_count, String::new()),
        templates: page.items,
        confirm,
    })
}

async fn read_template(user: &User, id: Uuid) -> Result<KeyTemplate, crate::PageError> {
    user.read(
        &catalog::TEMPLATE_READ,
        target("templates", id),
        user.keyplane().get_template(user.caller(), id),
    )
    .await
}

pub(crate) async fn act(
    user: User,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<crate::ConfirmForm>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    user.check_csrf(&form.csrf)?;
    // The template as the page showed it: changed since, nothing is done.
    let tag = if_match(&form.etag);
    let (kp, caller, m) = (user.keyplane(), user.caller(), Some(&tag));
    let request = json!({ "action": action });
    let t = || target("templates", id);
    let done = |_| ();
    let (outcome, done_text) = match action.as_str() {
        "archive" => (
            user.change(
                &catalog::TEMPLATE_ARCHIVE,
                200,
                t(),
                request,
                kp.archive_template(caller, id, m),
            )
            .await
            .map(done),
            "The template was archived.",
        ),
        "unarchive" => (
            user.change(
                &catalog::TEMPLATE_UNARCHIVE,
                200,
                t(),
                request,
                kp.unarchive_template(caller, id, m),
            )
            .await
            .map(done),
            "The template was unarchived.",
        ),
        "delete" => (
            user.change(
                &catalog::TEMPLATE_DELETE,
                204,
                t(),
                request,
                kp.delete_template(caller, id, m),
            )
            .await,
            "The template was deleted.",
        ),
        _ => return Ok(user.failed("/ui/templates", "There is no such action.")),
    };
    match outcome {
        Ok(()) => Ok(user.done("/ui/templates", done_text)),
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
    vaults: Vec<VaultView>,
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

    /// The filled keystore rows, typed.
    fn keystores(&self) -> Result<Vec<TemplateKeystore>, Error> {
        self.rows()
            .into_iter()
            .filter(|r| !r.group.trim().is_empty())
            .map(|r| {
                Ok(TemplateKeystore {
                    keystore_type: KeystoreType::parse(&r.keystore_type).ok_or_else(|| {
                        Error::invalid_field(
                            "keystores.type",
                            format!("keystores.type must be one of {}", KeystoreType::allowed()),
                        )
                    })?,
                    group: r.group.trim().to_owned(),
                    naming_scheme: None,
                    properties: KeystoreKeyProperties::default(),
                })
            })
            .collect()
    }

    fn naming_scheme(&self) -> Option<String> {
        Some(self.naming_scheme.trim().to_owned()).filter(|s| !s.is_empty())
    }

    /// What the user asked, as the trail records it.
    fn recorded(&self, creating: bool) -> Value {
        let mut body = json!({
            "name": self.name.trim(),
            "description": self.description.trim(),
            "naming_scheme": self.naming_scheme(),
            "keystores": self.rows().iter()
                .filter(|r| !r.group.trim().is_empty())
                .map(|r| json!({ "type": r.keystore_type, "group": r.group.trim() }))
                .collect::<Vec<_>>(),
        });
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

    fn new_template(&self) -> Result<NewTemplate, Error> {
        let vault_id = Uuid::parse_str(&self.vault)
            .map_err(|_| Error::invalid_field("vault.id", "choose a vault"))?;
        let algorithm = Algorithm::parse(&self.algorithm).ok_or_else(|| {
            Error::invalid_field(
                "key.algorithm",
                format!("key.algorithm must be one of {}", Algorithm::allowed()),
            )
        })?;
        let size = self.size.trim().parse::<u32>().map_err(|_| {
            Error::invalid_field("key.size", "key.size must be a whole number of bits")
        })?;
        let state = InitialKeyState::parse(&self.key_state).ok_or_else(|| {
            Error::invalid_field(
                "key.state",
                format!("key.state must be one of {}", InitialKeyState::allowed()),
            )
        })?;
        Ok(NewTemplate {
            vault_id: Some(vault_id),
            name: Some(self.name.trim().to_owned()),
            description: Some(self.description.trim().to_owned()),
            naming_scheme: self.naming_scheme(),
            key: Some(KeyPropertiesInput {
                algorithm: Some(algorithm),
                size: Some(size),
                activation_date: None,
                expiration_date: None,
                state: Some(state),
                ..KeyPropertiesInput::default()
            }),
            keystores: Some(self.keystores()?),
            ..NewTemplate::default()
        })
    }

    fn patch(&self) -> Result<TemplatePatch, Error> {
        let keystores = self
            .keystores()?
            .into_iter()
            .map(|k| TemplateKeystorePatch {
                keystore_type: Some(k.keystore_type),
                group: Some(k.group),
                naming_scheme: None,
                properties: k.properties,
            })
            .collect();
        Ok(TemplatePatch {
            name: Some(self.name.trim().to_owned()),
            description: Some(self.description.trim().to_owned()),
            naming_scheme: self.naming_scheme(),
            key: None,
            keystores: Some(keystores),
        })
    }
}

fn rows_of(template: Option<&KeyTemplate>) -> Vec<KeystoreRow> {
    let mut rows: Vec<KeystoreRow> = template
        .map(|t| t.keystores.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|k| KeystoreRow {
            keystore_type: k.keystore_type.as_str().to_owned(),
            group: k.group.clone(),
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
        vault: vaults
            .first()
            .map(|v| v.vault.id.to_string())
            .unwrap_or_default(),
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
        rows: rows_of(None),
        values,
        error: None,
    })
}

pub(crate) async fn create(user: User, Form(form): Form<TemplateForm>) -> PageResult {
    user.check_csrf(&form.csrf)?;
    // The form is read inside the recorded call: a refused form is in the trail too.
    let created = user
        .change(
            &catalog::TEMPLATE_CREATE,
            201,
            None,
            form.recorded(true),
            async {
                let input = form.new_template()?;
                user.keyplane().create_template(user.caller(), input).await
            },
        )
        .await;
    match created {
        Ok(t) => Ok(user.done("/ui/templates", format!("Template {} created.", t.name))),
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
    let t = read_template(&user, id).await?;
    let values = TemplateForm {
        vault: t.vault.id.to_string(),
        name: t.name.clone(),
        description: t.description.clone(),
        naming_scheme: t.naming_scheme.clone().unwrap_or_default(),
        algorithm: t.key.algorithm.as_str().to_owned(),
        size: t.key.size.to_string(),
        key_state: t.key.state.as_str().to_owned(),
        ..TemplateForm::default()
    };
    render(&FormPage {
        chrome: user.chrome("templates"),
        editing: Some((id.to_string(), etag(t.revision, id))),
        vaults: Vec::new(),
        algorithms: ALGORITHMS,
        keystore_types: KEYSTORE_TYPES,
        rows: rows_of(Some(&t)),
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
    let tag = if_match(&form.etag);
    let updated = user
        .change(
            &catalog::TEMPLATE_UPDATE,
            200,
            target("templates", id),
            form.recorded(false),
            async {
                let patch = form.patch()?;
                user.keyplane()
                    .update_template(user.caller(), id, Some(&tag), patch)
                    .await
            },
        )
        .await;
    match updated {
        Ok(_) => Ok(user.done("/ui/templates", "The template was updated.")),
        Err(problem) => render_status(
            problem.status,
            &FormPage {
                chrome: user.chrome("templates"),
                editing: Some((id.to_string(), form.etag.clone())),
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
    fn a_new_template_carries_key_properties_and_only_filled_keystore_rows() {
        let form = TemplateForm {
            vault: Uuid::now_v7().to_string(),
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
        let input = form.new_template().unwrap();
        assert_eq!(input.name.as_deref(), Some("t"));
        assert_eq!(input.key.as_ref().unwrap().size, Some(256));
        let keystores = input.keystores.unwrap();
        assert_eq!(keystores.len(), 1);
        assert_eq!(keystores[0].keystore_type, KeystoreType::IbmCloudKms);
        assert_eq!(keystores[0].group, "prod");
        assert!(form.patch().unwrap().key.is_none());
    }

    #[test]
    fn a_bad_size_or_type_is_refused_naming_the_field() {
        let form = TemplateForm {
            vault: Uuid::now_v7().to_string(),
            algorithm: "aes".into(),
            size: "big".into(),
            key_state: "active".into(),
            ..TemplateForm::default()
        };
        let e = form.new_template().unwrap_err();
        assert!(e.to_string().contains("key.size"), "{e}");
        let form = TemplateForm {
            type_1: "nonsense".into(),
            group_1: "g".into(),
            ..form
        };
        assert!(form.patch().is_err());
    }
}
