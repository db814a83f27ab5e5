//! Vaults: list, create, edit, and delete (which core refuses while the vault holds keys,
//! templates or keystores).

use askama::Template;
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use axum::{Form, Router};
use keyplane_core::etag::etag;
use keyplane_core::model::{Page, VaultView};
use keyplane_core::operation::catalog;
use keyplane_core::query::VaultQuery;
use keyplane_core::service::{NewVault, VaultPatch};
use serde::Deserialize;
use serde_json::json;

use super::{Paging, if_match, sorted_by, window};
use uuid::Uuid;

use crate::{Chrome, Console, PageError, PageResult, User, render, render_status, target};

const PAGE_SIZE: u64 = 25;

pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/ui/vaults", get(list))
        .route("/ui/vaults/new", get(create_form).post(create))
        .route("/ui/vaults/{id}/edit", get(edit_form).post(edit))
        .route("/ui/vaults/{id}/delete", post(delete))
}

#[derive(Template)]
#[template(path = "vaults.html")]
pub(crate) struct VaultsPage {
    chrome: Chrome,
    vaults: Vec<VaultView>,
    paging: Paging,
    /// A pending delete confirmation: (vault id, vault name, its ETag as shown).
    confirm: Option<(String, String, String)>,
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    delete: String,
}

/// The vaults the user may see, by name, `limit` from `offset`.
pub(crate) async fn by_name(
    user: &User,
    limit: u32,
    offset: u64,
) -> Result<Page<VaultView>, PageError> {
    let query = VaultQuery {
        sort: sorted_by("name", false),
        paging: window(limit, offset)?,
        ..VaultQuery::default()
    };
    user.read(
        &catalog::VAULT_LIST,
        None,
        user.keyplane().list_vaults(user.caller(), query),
    )
    .await
}

async fn read_vault(user: &User, id: Uuid) -> Result<VaultView, PageError> {
    user.read(
        &catalog::VAULT_READ,
        target("vaults", id),
        user.keyplane().get_vault(user.caller(), id),
    )
    .await
}

pub(crate) async fn list(user: User, Query(q): Query<ListQuery>) -> PageResult {
    let page = by_name(&user, PAGE_SIZE as u32, q.offset).await?;
    let confirm = if q.delete.is_empty() {
        None
    } else {
        let id = crate::page_id(&q.delete)?;
        let view = read_vault(&user, id).await?;
        let tag = etag(view.vault.revision, id);
        Some((id.to_string(), view.vault.name, tag))
    };
    render(&VaultsPage {
        chrome: user.chrome("vaults"),
        vaults: page.items,
        paging: Paging::new(q.offset, PAGE_SIZE, page.total_count, String::new()),
        confirm,
    })
}

pub(crate) async fn delete(
    user: User,
    Path(id): Path<String>,
    Form(form): Form<crate::ConfirmForm>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    user.check_csrf(&form.csrf)?;
    // The vault as the confirmation showed it: changed since, it is not deleted.
    let tag = if_match(&form.etag);
    let deleted = user
        .change(
            &catalog::VAULT_DELETE,
            204,
            target("vaults", id),
            json!({}),
            user.keyplane().delete_vault(user.caller(), id, Some(&tag)),
        )
        .await;
    match deleted {
        Ok(()) => Ok(user.done("/ui/vaults", "The vault was deleted.")),
        Err(problem) => Ok(user.failed("/ui/vaults", problem.message)),
    }
}

#[derive(Template)]
#[template(path = "vault_form.html")]
pub(crate) struct FormPage {
    chrome: Chrome,
    /// The vault being edited (id, ETag), or none for a new one.
    editing: Option<(String, String)>,
    name: String,
    description: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct VaultForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

impl VaultForm {
    fn recorded(&self) -> serde_json::Value {
        json!({ "name": self.name.trim(), "description": self.description.trim() })
    }
}

pub(crate) async fn create_form(user: User) -> PageResult {
    render(&FormPage {
        chrome: user.chrome("vaults"),
        editing: None,
        name: String::new(),
        description: String::new(),
        error: None,
    })
}

pub(crate) async fn create(user: User, Form(form): Form<VaultForm>) -> PageResult {
    user.check_csrf(&form.csrf)?;
    let input = NewVault {
        name: Some(form.name.trim().to_owned()),
        description: Some(form.description.trim().to_owned()),
        recovery_key_label: None,
    };
    let created = user
        .change(
            &catalog::VAULT_CREATE,
            201,
            None,
            form.recorded(),
            user.keyplane().create_vault(user.caller(), input),
        )
        .await;
    match created {
        Ok(view) => Ok(user.done("/ui/vaults", format!("Vault {} created.", view.vault.name))),
        Err(problem) => render_status(
            problem.status,
            &FormPage {
                chrome: user.chrome("vaults"),
                editing: None,
                name: form.name,
                description: form.description,
                error: Some(problem.message),
            },
        ),
    }
}

pub(crate) async fn edit_form(user: User, Path(id): Path<String>) -> PageResult {
    let id = crate::page_id(&id)?;
    let view = read_vault(&user, id).await?;
    render(&FormPage {
        chrome: user.chrome("vaults"),
        editing: Some((id.to_string(), etag(view.vault.revision, id))),
        name: view.vault.name,
        description: view.vault.description,
        error: None,
    })
}

pub(crate) async fn edit(
    user: User,
    Path(id): Path<String>,
    Form(form): Form<VaultForm>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    user.check_csrf(&form.csrf)?;
    let patch = VaultPatch {
        name: Some(form.name.trim().to_owned()),
        description: Some(form.description.trim().to_owned()),
        recovery_key_label: None,
    };
    let tag = if_match(&form.etag);
    let updated = user
        .change(
            &catalog::VAULT_UPDATE,
            200,
            target("vaults", id),
            form.recorded(),
            user.keyplane()
                .update_vault(user.caller(), id, Some(&tag), patch),
        )
        .await;
    match updated {
        Ok(_) => Ok(user.done("/ui/vaults", "The vault was updated.")),
        Err(problem) => render_status(
            problem.status,
            &FormPage {
                chrome: user.chrome("vaults"),
                editing: Some((id.to_string(), form.etag)),
                name: form.name,
                description: form.description,
                error: Some(problem.message),
            },
        ),
    }
}
