//! Managed keys: a filtered list, creating a key from a template, and a key's details with its
//! distribution per keystore, its versions and the lifecycle actions (confirmed where they
//! cannot be undone).

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Paging;
use crate::api::with_query;
use crate::view::Text;
use crate::{Chrome, Console, PageError, PageResult, User, render, render_status};

const PAGE_SIZE: u64 = 25;
const ALL_STATES: &str = "pre_activation,active,deactivated,destroyed,compromised";

pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/ui/keys", get(list))
        .route("/ui/keys/new", get(create_form).post(create))
        .route("/ui/keys/{id}", get(details))
        .route("/ui/keys/{id}/{action}", post(act))
}

/// The lifecycle actions: (action, button, API method and path suffix, confirmation question).
struct Action {
    name: &'static str,
    button: &'static str,
    method: Method,
    suffix: &'static str,
    confirm: Option<&'static str>,
    done: &'static str,
}

fn actions() -> [Action; 8] {
    [
        Action {
            name: "activate",
            button: "Activate",
            method: Method::POST,
            suffix: "/activate",
            confirm: None,
            done: "The key is active and is being distributed to its keystores.",
        },
        Action {
            name: "sync",
            button: "Sync keystores",
            method: Method::POST,
            suffix: "/sync_status_in_keystores",
            confirm: None,
            done: "The key's keystores were checked and brought in line.",
        },
        Action {
            name: "update_from_template",
            button: "Update from template",
            method: Method::POST,
            suffix: "/update_from_template",
            confirm: None,
            done: "The key now follows its template's keystores.",
        },
        Action {
            name: "rotate",
            button: "Rotate",
            method: Method::POST,
            suffix: "/rotate",
            confirm: Some(
                "Rotate this key? A new version is made and distributed; earlier versions stay for \
                 decryption.",
            ),
            done: "The key was rotated.",
        },
        Action {
            name: "deactivate",
            button: "Deactivate",
            method: Method::POST,
            suffix: "/deactivate",
            confirm: Some(
                "Deactivate this key? Workloads can no longer encrypt with it; it stays available \
                 for decryption.",
            ),
            done: "The key was deactivated.",
        },
        Action {
            name: "compromise",
            button: "Mark compromised",
            method: Method::POST,
            suffix: "/compromise",
            confirm: Some("Mark this key compromised? This cannot be undone."),
            done: "The key was marked compromised.",
        },
        Action {
            name: "destroy",
            button: "Destroy",
            method: Method::POST,
            suffix: "/destroy",
            confirm: Some(
                "Destroy this key? Its material is erased here and in every keystore. Data \
                 encrypted under it can never be decrypted again.",
            ),
            done: "The key was destroyed.",
        },
        Action {
            name: "remove",
            button: "Remove",
            method: Method::DELETE,
            suffix: "",
            confirm: Some("Remove this key's record? Only a pre-active or destroyed key can go."),
            done: "The key was removed.",
        },
    ]
}

/// The actions a key in `state` is offered: its lifecycle's, as core's state machine allows
/// them, and the upkeep of its keystores while it is in use (the API still decides).
fn offered(state: &str) -> Vec<&'static str> {
    use keyplane_core::model::KeyState;
    let Some(state) = KeyState::parse(state) else {
        return Vec::new();
    };
    let mut names: Vec<&'static str> = keyplane_core::lifecycle::actions_for(state)
        .into_iter()
        .map(|a| a.name())
        .collect();
    match state {
        KeyState::Active => names.extend(["sync", "update_from_template"]),
        KeyState::Deactivated => names.push("sync"),
        _ => {}
    }
    actions()
        .iter()
        .map(|a| a.name)
        .filter(|name| names.contains(name))
        .collect()
}

#[derive(Deserialize, Default)]
pub(crate) struct Filters {
    #[serde(default)]
    state: String,
    #[serde(default)]
    vault: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    keystore: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    offset: u64,
}

#[derive(Template)]
#[template(path = "keys.html")]
pub(crate) struct KeysPage {
    chrome: Chrome,
    keys: Vec<Value>,
    paging: Paging,
    filters: Filters,
    vaults: Vec<Value>,
    states: [(&'static str, &'static str); 6],
}

pub(crate) async fn list(user: User, Query(f): Query<Filters>) -> PageResult {
    let state = if f.state == "any" {
        ALL_STATES
    } else {
        f.state.as_str()
    };
    let path = with_query(
        &format!(
            "/api/v4/managed_keys?limit={PAGE_SIZE}&offset={}&sort=-updated_at",
            f.offset
        ),
        &[
            ("state", state),
            ("vault.id", &f.vault),
            ("template.name", &f.template),
            ("referenced_keystores[].name", &f.keystore),
            ("label", &f.label),
        ],
    );
    let answer = user.get(&path).await?;
    let vaults = super::vault_choices(&user).await?;
    let query = with_query(
        "",
        &[
            ("state", &f.state),
            ("vault", &f.vault),
            ("template", &f.template),
            ("keystore", &f.keystore),
            ("label", &f.label),
        ],
    );
    render(&KeysPage {
        chrome: user.chrome("keys"),
        keys: answer.body.items("/managed_keys"),
        paging: Paging::new(
            f.offset,
            PAGE_SIZE,
            answer.body["total_count"].as_u64().unwrap_or(0),
            query.trim_start_matches('?').to_owned(),
        ),
        filters: f,
        vaults,
        states: [
            ("", "Pre-active and active"),
            ("pre_activation", "Pre-active"),
            ("active", "Active"),
            ("deactivated", "Deactivated"),
            ("destroyed", "Destroyed"),
            ("any", "Any state"),
        ],
    })
}

#[derive(Template)]
#[template(path = "key.html")]
pub(crate) struct KeyPage {
    chrome: Chrome,
    key: Value,
    etag: String,
    versions: Vec<Value>,
    placements: Vec<Value>,
    buttons: Vec<(&'static str, &'static str, bool)>,
    confirm: Option<(&'static str, &'static str, &'static str)>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct DetailsQuery {
    #[serde(default)]
    confirm: String,
}

async fn key_page(
    user: &User,
    id: &str,
    confirm: &str,
    error: Option<String>,
) -> Result<KeyPage, PageError> {
    let answer = user.get(&format!("/api/v4/managed_keys/{id}")).await?;
    let key = answer.body;
    let versions = user
        .get(&format!("/api/v4/managed_keys/{id}/versions"))
        .await
        .map(|a| a.body.items("/managed_keys"))
        .unwrap_or_default();
    let placements = user
        .get(&format!("/api/v4/managed_keys/{id}/status_in_keystores"))
        .await
        .map(|a| a.body.items("/status_in_keystores"))
        .unwrap_or_default();
    let state = key.t("/state");
    let all = actions();
    let buttons = offered(&state)
        .iter()
        .filter_map(|name| all.iter().find(|a| a.name == *name))
        .map(|a| (a.name, a.button, a.confirm.is_some()))
        .collect();
    let confirm = all
        .iter()
        .find(|a| a.name == confirm)
        .and_then(|a| a.confirm.map(|question| (a.name, a.button, question)));
    Ok(KeyPage {
        chrome: user.chrome("keys"),
        key,
        etag: answer.etag.unwrap_or_default(),
        versions,
        placements,
        buttons,
        confirm,
        error,
    })
}

pub(crate) async fn details(
    user: User,
    Path(id): Path<String>,
    Query(q): Query<DetailsQuery>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    render(&key_page(&user, &id, &q.confirm, None).await?)
}

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etag: String,
}

pub(crate) async fn act(
    user: User,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    let id = crate::page_id(&id)?;
    user.check_csrf(&form.csrf)?;
    let all = actions();
    let Some(action) = all.iter().find(|a| a.name == action) else {
        return Ok(user.failed(&format!("/ui/keys/{id}"), "There is no such action."));
    };
    let path = format!("/api/v4/managed_keys/{id}{}", action.suffix);
    match user
        .change(action.method.clone(), &path, None, Some(&form.etag))
        .await?
    {
        Ok(_) if action.name == "remove" => Ok(user.done("/ui/keys", action.done)),
        Ok(answer) if answer.status == StatusCode::ACCEPTED => Ok(user.done(
            &format!("/ui/keys/{id}"),
            "The action waits for a second custodian's approval.",
        )),
        Ok(_) => Ok(user.done(&format!("/ui/keys/{id}"), action.done)),
        Err(problem) => render_status(
            problem.status,
            &key_page(&user, &id, "", Some(problem.message)).await?,
        ),
    }
}

#[derive(Template)]
#[template(path = "key_form.html")]
pub(crate) struct CreatePage {
    chrome: Chrome,
    templates: Vec<Value>,
    template: String,
    label: String,
    description: String,
    error: Option<String>,
}

async fn template_choices(user: &User) -> Result<Vec<Value>, PageError> {
    Ok(user
        .get("/api/v4/templates?limit=100&sort=name")
        .await?
        .body
        .items("/templates")
        .into_iter()
        .filter(|t| t.t("/state") != "archived")
        .collect())
}

#[derive(Deserialize, Default)]
pub(crate) struct CreateQuery {
    #[serde(default)]
    template: String,
}

pub(crate) async fn create_form(user: User, Query(q): Query<CreateQuery>) -> PageResult {
    render(&CreatePage {
        chrome: user.chrome("keys"),
        templates: template_choices(&user).await?,
        template: q.template,
        label: String::new(),
        description: String::new(),
        error: None,
    })
}

#[derive(Deserialize)]
pub(crate) struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    description: String,
}

pub(crate) async fn create(user: User, Form(form): Form<CreateForm>) -> PageResult {
    user.check_csrf(&form.csrf)?;
    let templates = template_choices(&user).await?;
    let chosen = templates.iter().find(|t| t.t("/id") == form.template);
    let outcome = match chosen {
        None => Err((StatusCode::BAD_REQUEST, "Choose a template.".to_owned())),
        Some(t) => {
            let mut body = json!({
                "template_name": t.t("/name"),
                "vault": { "id": t.t("/vault/id") },
                "description": form.description.trim(),
            });
            if !form.label.trim().is_empty() {
                body["label"] = json!(form.label.trim());
            }
            user.change(Method::POST, "/api/v4/managed_keys", Some(&body), None)
                .await?
                .map_err(|p| (p.status, p.message))
        }
    };
    match outcome {
        Ok(created) => Ok(user.done(
            &format!("/ui/keys/{}", created.body.t("/id")),
            format!("Key {} created.", created.body.t("/label")),
        )),
        Err((status, message)) => render_status(
            status,
            &CreatePage {
                chrome: user.chrome("keys"),
                templates,
                template: form.template,
                label: form.label,
                description: form.description,
                error: Some(message),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_action_exists_and_irreversible_ones_ask_first() {
        let all = actions();
        for state in [
            "pre_activation",
            "active",
            "deactivated",
            "destroyed",
            "compromised",
        ] {
            for name in offered(state) {
                assert!(all.iter().any(|a| a.name == name), "{name}");
            }
        }
        // Only destroyed keys can be removed, as the API rules.
        assert!(!offered("pre_activation").contains(&"remove"));
        assert!(offered("destroyed").contains(&"remove"));
        assert_eq!(
            offered("pre_activation"),
            ["activate", "compromise", "destroy"]
        );
        for name in ["destroy", "remove", "deactivate", "compromise", "rotate"] {
            assert!(
                all.iter()
                    .find(|a| a.name == name)
                    .unwrap()
                    .confirm
                    .is_some()
            );
        }
    }
}
