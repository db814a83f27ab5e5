//! Vaults: list, create, edit, and delete (which the API refuses while the vault holds keys,
//! templates or keystores).

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::Method;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Paging;
use crate::view::Text;
use crate::{Chrome, Console, PageResult, User, render, render_status};

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
    vaults: Vec<Value>,
    paging: Paging,
    /// A pending delete confirmation: (vault id, vault name).
    confirm: Option<(String, String)>,
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    delete: String,
}

pub(crate) async fn list(user: User, Query(q): Query<ListQuery>) -> PageResult {
    let answer = user
        .get(&format!(
            "/api/v4/vaults?limit={PAGE_SIZE}&offset={}&sort=name",
            q.offset
        ))
        .await?;
    let confirm = if q.delete.is_empty() {
        None
    } else {
        let name = user
            .get(&format!("/api/v4/vaults/{}", q.delete))
            .await?
            .body
            .t("/name");
        Some((q.delete.clone(), name))
    };
    render(&VaultsPage {
        chrome: user.chrome("vaults"),
        vaults: answer.body.items("/vaults"),
        paging: Paging::new(
            q.offset,
            PAGE_SIZE,
            answer.body["total_count"].as_u64().unwrap_or(0),
            String::new(),
        ),
        confirm,
    })
}

pub(crate) async fn delete(
    user: User,
    Path(id): Path<String>,
    Form(form): Form<crate::CsrfOnly>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    user.check_csrf(&form.csrf)?;
    let path = format!("/api/v4/vaults/{id}");
    let current = user.get(&path).await?;
    match user
        .change(Method::DELETE, &path, None, current.etag.as_deref())
        .await?
    {
        Ok(_) => Ok(user.done("/ui/vaults", "The vault was deleted.")),
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
    fn body(&self) -> Value {
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
    match user
        .change(Method::POST, "/api/v4/vaults", Some(&form.body()), None)
        .await?
    {
        Ok(created) => Ok(user.done(
            "/ui/vaults",
            format!("Vault {} created.", created.body.t("/name")),
        )),
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
    let answer = user.get(&format!("/api/v4/vaults/{id}")).await?;
    render(&FormPage {
        chrome: user.chrome("vaults"),
        name: answer.body.t("/name"),
        description: answer.body.t("/description"),
        editing: Some((id, answer.etag.unwrap_or_default())),
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
    let path = format!("/api/v4/vaults/{id}");
    match user
        .change(Method::PATCH, &path, Some(&form.body()), Some(&form.etag))
        .await?
    {
        Ok(_) => Ok(user.done("/ui/vaults", "The vault was updated.")),
        Err(problem) => render_status(
            problem.status,
            &FormPage {
                chrome: user.chrome("vaults"),
                editing: Some((id, form.etag)),
                name: form.name,
                description: form.description,
                error: Some(problem.message),
            },
        ),
    }
}
