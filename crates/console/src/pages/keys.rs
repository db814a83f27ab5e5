//! Managed keys: a filtered list, creating a key from a template, and a key's details with its
//! distribution per keystore, its versions and the lifecycle actions (confirmed where they
//! cannot be undone).

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Form, Router};
use keyplane_core::etag::etag;
use keyplane_core::model::{
    KeyState, KeyStatusInKeystore, ManagedKey, Template as KeyTemplate, TemplateState, VaultView,
};
use keyplane_core::operation::{Operation, catalog};
use keyplane_core::query::KeyQuery;
use keyplane_core::service::{Decided, NewKey};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{Paging, filter_text, if_match, link_query, sorted_by, window};
use crate::{Chrome, Console, PageError, PageResult, Problem, User, render, render_status, target};

const PAGE_SIZE: u64 = 25;
/// Longest label and name a filter takes, as the API's list query bounds them.
const MAX_LABEL: usize = 255;
const MAX_NAME: usize = 100;

pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/ui/keys", get(list))
        .route("/ui/keys/new", get(create_form).post(create))
        .route("/ui/keys/{id}", get(details))
        .route("/ui/keys/{id}/{action}", post(act))
}

/// The lifecycle actions: the operation each runs, its button and its confirmation question.
struct Action {
    name: &'static str,
    button: &'static str,
    operation: Operation,
    confirm: Option<&'static str>,
    done: &'static str,
}

fn actions() -> [Action; 8] {
    [
        Action {
            name: "activate",
            button: "Activate",
            operation: catalog::KEY_ACTIVATE,
            confirm: None,
            done: "The key is active and is being distributed to its keystores.",
        },
        Action {
            name: "sync",
            button: "Sync keystores",
            operation: catalog::KEY_SYNC,
            confirm: None,
            done: "The key's keystores were checked and brought in line.",
        },
        Action {
            name: "update_from_template",
            button: "Update from template",
            operation: catalog::KEY_UPDATE_FROM_TEMPLATE,
            confirm: None,
            done: "The key now follows its template's keystores.",
        },
        Action {
            name: "rotate",
            button: "Rotate",
            operation: catalog::KEY_ROTATE,
            confirm: Some(
                "Rotate this key? A new version is made and distributed; earlier versions stay for \
                 decryption.",
            ),
            done: "The key was rotated.",
        },
        Action {
            name: "deactivate",
            button: "Deactivate",
            operation: catalog::KEY_DEACTIVATE,
            confirm: Some(
                "Deactivate this key? Workloads can no longer encrypt with it; it stays available \
                 for decryption.",
            ),
            done: "The key was deactivated.",
        },
        Action {
            name: "compromise",
            button: "Mark compromised",
            operation: catalog::KEY_COMPROMISE,
            confirm: Some("Mark this key compromised? This cannot be undone."),
            done: "The key was marked compromised.",
        },
        Action {
            name: "destroy",
            button: "Destroy",
            operation: catalog::KEY_DESTROY,
            confirm: Some(
                "Destroy this key? Its material is erased here and in every keystore. Data \
                 encrypted under it can never be decrypted again.",
            ),
            done: "The key was destroyed.",
        },
        Action {
            name: "remove",
            button: "Remove",
            operation: catalog::KEY_DELETE,
            confirm: Some(
                "Remove this destroyed key's record? It leaves the key list; the audit trail keeps its history.",
            ),
            done: "The key was removed.",
        },
    ]
}

/// The actions a key in `state` is offered: its lifecycle's, as core's state machine allows
/// them, and the upkeep of its keystores while it is in use (core still decides).
fn offered(state: KeyState) -> Vec<&'static str> {
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
    keys: Vec<ManagedKey>,
    paging: Paging,
    filters: Filters,
    vaults: Vec<VaultView>,
    states: [(&'static str, &'static str); 6],
}

/// The list's query: the filters as the key list's store reads them, newest change first.
fn key_query(f: &Filters) -> Result<KeyQuery, PageError> {
    let bad = |what: &str| {
        PageError::Api(Box::new(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("The {what} filter is not one the console offers."),
        )))
    };
    let states = match f.state.as_str() {
        "any" => KeyState::ALL.to_vec(),
        "" => vec![KeyState::PreActivation, KeyState::Active],
        one => vec![KeyState::parse(one).ok_or_else(|| bad("state"))?],
    };
    let vault_ids = if f.vault.is_empty() {
        Vec::new()
    } else {
        vec![Uuid::parse_str(&f.vault).map_err(|_| bad("vault"))?]
    };
    Ok(KeyQuery {
        states,
        vault_ids,
        label: filter_text("label", &f.label, MAX_LABEL)?,
        template_name_prefix: filter_text("template", &f.template, MAX_NAME)?,
        referenced_keystore_names: filter_text("keystore", &f.keystore, MAX_NAME)?
            .into_iter()
            .collect(),
        sort: sorted_by("updated_at", true),
        paging: window(PAGE_SIZE as u32, f.offset)?,
        ..KeyQuery::default()
    })
}

pub(crate) async fn list(user: User, Query(f): Query<Filters>) -> PageResult {
    let query = key_query(&f)?;
    let page = user
        .read(
            &catalog::KEY_LIST,
            None,
            user.keyplane().list_keys(user.caller(), query),
        )
        .await?;
    let vaults = super::vault_choices(&user).await?;
    let links = link_query(&[
        ("state", &f.state),
        ("vault", &f.vault),
        ("template", &f.template),
        ("keystore", &f.keystore),
        ("label", &f.label),
    ]);
    render(&KeysPage {
        chrome: user.chrome("keys"),
        keys: page.items,
        paging: Paging::new(f.offset, PAGE_SIZE, page.total_count, links),
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
    key: ManagedKey,
    etag: String,
    versions: Vec<ManagedKey>,
    placements: Vec<KeyStatusInKeystore>,
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
    id: Uuid,
    confirm: &str,
    error: Option<String>,
) -> Result<KeyPage, PageError> {
    let (kp, caller) = (user.keyplane(), user.caller());
    let key = user
        .read(
            &catalog::KEY_READ,
            target("managed_keys", id),
            kp.get_key(caller, id),
        )
        .await?;
    // Older versions are usually deactivated: every state is shown.
    let every_state = KeyQuery {
        states: KeyState::ALL.to_vec(),
        ..KeyQuery::default()
    };
    let versions = user
        .read(
            &catalog::KEY_VERSIONS,
            target("managed_keys", id),
            kp.key_versions(caller, id, &every_state),
        )
        .await
        .map(|page| page.items)
        .unwrap_or_default();
    let placements = user
        .read(
            &catalog::KEY_STATUS_IN_KEYSTORES,
            target("managed_keys", id),
            kp.key_status_in_keystores(caller, id),
        )
        .await
        .unwrap_or_default();
    let all = actions();
    let buttons = offered(key.state)
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
        etag: etag(key.revision, key.id),
        key,
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
    render(&key_page(&user, id, &q.confirm, None).await?)
}

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etag: String,
}

/// What an action came to: done, or a request waiting for a second custodian.
enum Outcome {
    Done,
    Awaiting,
}

fn done<T>(_: T) -> Outcome {
    Outcome::Done
}

fn decided<T>(d: Decided<T>) -> Outcome {
    match d {
        Decided::Done(_) => Outcome::Done,
        Decided::Requested(_) => Outcome::Awaiting,
    }
}

/// Runs `action` on key `id`, under the precondition the page's ETag states.
async fn run(user: &User, action: &Action, id: Uuid, etag: &str) -> Result<Outcome, Problem> {
    let (kp, caller) = (user.keyplane(), user.caller());
    let tag = if_match(etag);
    let m = Some(&tag);
    let request = json!({ "action": action.name });
    let op = &action.operation;
    let t = || target("managed_keys", id);
    match action.name {
        "activate" => user
            .change(op, 200, t(), request, kp.activate_key(caller, id, m))
            .await
            .map(done),
        "deactivate" => user
            .change(op, 200, t(), request, kp.deactivate_key(caller, id, m))
            .await
            .map(done),
        "rotate" => user
            .change(op, 200, t(), request, kp.rotate_key(caller, id, m))
            .await
            .map(done),
        "compromise" => user
            .change(op, 200, t(), request, kp.compromise_key(caller, id, m))
            .await
            .map(done),
        "sync" => user
            .change(op, 200, t(), request, kp.sync_key(caller, id, m))
            .await
            .map(done),
        "update_from_template" => user
            .change(
                op,
                200,
                t(),
                request,
                kp.update_key_from_template(caller, id, m, false),
            )
            .await
            .map(done),
        "destroy" => user
            .change(
                op,
                200,
                t(),
                request,
                Box::pin(kp.destroy_key(caller, id, m)),
            )
            .await
            .map(decided),
        "remove" => user
            .change(op, 204, t(), request, kp.delete_key(caller, id, m))
            .await
            .map(decided),
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "There is no such action.",
        )),
    }
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
    match run(&user, action, id, &form.etag).await {
        Ok(Outcome::Awaiting) => Ok(user.done(
            &format!("/ui/keys/{id}"),
            "The action waits for a second custodian's approval.",
        )),
        Ok(Outcome::Done) if action.name == "remove" => Ok(user.done("/ui/keys", action.done)),
        Ok(Outcome::Done) => Ok(user.done(&format!("/ui/keys/{id}"), action.done)),
        Err(problem) => render_status(
            problem.status,
            &key_page(&user, id, "", Some(problem.message)).await?,
        ),
    }
}

#[derive(Template)]
#[template(path = "key_form.html")]
pub(crate) struct CreatePage {
    chrome: Chrome,
    templates: Vec<KeyTemplate>,
    template: String,
    label: String,
    description: String,
    error: Option<String>,
}

async fn template_choices(user: &User) -> Result<Vec<KeyTemplate>, PageError> {
    let page = super::templates::by_name(user, 100, 0).await?;
    Ok(page
        .items
        .into_iter()
        .filter(|t| t.state != TemplateState::Archived)
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
    let chosen = templates.iter().find(|t| t.id.to_string() == form.template);
    let label = Some(form.label.trim().to_owned()).filter(|l| !l.is_empty());
    let request = json!({
        "template_name": chosen.map(|t| t.name.as_str()),
        "vault": { "id": chosen.map(|t| t.vault.id) },
        "label": label,
        "description": form.description.trim(),
    });
    // The choice is checked inside the recorded call: a refused form is in the trail too.
    let outcome = user
        .change(&catalog::KEY_CREATE, 201, None, request, async {
            let t = chosen.ok_or_else(|| {
                keyplane_core::Error::invalid_field("template_name", "choose a template")
            })?;
            let input = NewKey {
                template_name: Some(t.name.clone()),
                vault_id: Some(t.vault.id),
                label,
                description: Some(form.description.trim().to_owned()),
                tags: None,
            };
            user.keyplane().create_key(user.caller(), input).await
        })
        .await;
    match outcome {
        Ok(created) => Ok(user.done(
            &format!("/ui/keys/{}", created.id),
            format!("Key {} created.", created.label),
        )),
        Err(problem) => render_status(
            problem.status,
            &CreatePage {
                chrome: user.chrome("keys"),
                templates,
                template: form.template,
                label: form.label,
                description: form.description,
                error: Some(problem.message),
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
        for state in KeyState::ALL {
            for name in offered(*state) {
                assert!(all.iter().any(|a| a.name == name), "{name}");
            }
        }
        // Only destroyed keys can be removed, as the API rules.
        assert!(!offered(KeyState::PreActivation).contains(&"remove"));
        assert!(offered(KeyState::Destroyed).contains(&"remove"));
        assert_eq!(
            offered(KeyState::PreActivation),
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
