//! The plan: what will be created, adopted, skipped or cannot move, and why, decided from the
//! source's estate, the mapping, the state file and what Keyplane already holds.

use std::collections::BTreeMap;

use keyplane_client::Client;
use keyplane_core::keystore_types;
use keyplane_core::model::{IbmVariant, KeystoreType};
use serde::Serialize;
use serde_json::{Value, json};

use super::mapping::{Mapping, test_connection};
use super::source::Estate;
use super::state::State;
use super::{is_internal, text};
use crate::remote::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Action {
    Create,
    Adopt,
    /// Already in Keyplane (done by an earlier run, or there before).
    Exists,
    Skip,
    CannotMove,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Step {
    pub(super) kind: &'static str,
    pub(super) source_id: String,
    pub(super) name: String,
    pub(super) action: Action,
    /// Why, for anything but a plain create or adopt.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(super) reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) target_id: Option<String>,
}

/// What Keyplane holds already, read once from the target.
pub(super) struct Present {
    pub(super) vaults: Vec<Value>,
    pub(super) templates: Vec<Value>,
    pub(super) keystores: Vec<Value>,
}

pub(super) async fn read_present(target: &Client) -> anyhow::Result<Present> {
    Ok(Present {
        vaults: target
            .list_all("/api/v4/vaults?limit=1000", "vaults")
            .await?,
        templates: target
            .list_all("/api/v4/templates?limit=1000", "templates")
            .await?,
        keystores: target
            .list_all("/api/v4/keystores?limit=1000", "keystores")
            .await?,
    })
}

pub(super) struct Planner<'a> {
    pub(super) estate: &'a Estate,
    pub(super) mapping: &'a Mapping,
    pub(super) state: &'a State,
    pub(super) present: &'a Present,
}

impl Planner<'_> {
    pub(super) fn vault_target(&self, source_id: &str) -> Option<String> {
        if let Some(id) = self.state.vaults.get(source_id) {
            return Some(id.clone());
        }
        let name = self
            .estate
            .vaults
            .iter()
            .find(|v| text(v, "/id") == source_id)
            .map(|v| text(v, "/name"))?;
        self.present
            .vaults
            .iter()
            .find(|v| text(v, "/name") == name)
            .map(|v| text(v, "/id").to_owned())
    }

    /// The same name in the same (migrated) vault.
    pub(super) fn in_vault_target(&self, kind: &str, item: &Value) -> Option<String> {
        let (done, list) = match kind {
            "keystore" => (&self.state.keystores, &self.present.keystores),
            _ => (&self.state.templates, &self.present.templates),
        };
        if let Some(id) = done.get(text(item, "/id")) {
            return Some(id.clone());
        }
        let vault = self.vault_target(text(item, "/vault/id"))?;
        list.iter()
            .find(|t| text(t, "/vault/id") == vault && text(t, "/name") == text(item, "/name"))
            .map(|t| text(t, "/id").to_owned())
    }

    pub(super) fn keystore_step(&self, keystore: &Value) -> Step {
        let mut step = Step {
            kind: "keystore",
            source_id: text(keystore, "/id").to_owned(),
            name: text(keystore, "/name").to_owned(),
            action: Action::Create,
            reason: String::new(),
            target_id: None,
        };
        if let Some(id) = self.in_vault_target("keystore", keystore) {
            step.action = Action::Exists;
            step.target_id = Some(id);
        } else if self.mapping.of(keystore).is_some_and(|m| m.skip) {
            step.action = Action::Skip;
            step.reason = "skipped by the mapping file".into();
        } else if is_internal(keystore) {
            step.reason =
                "a new, empty internal keystore: the source's keys there cannot move".into();
        } else if let Some(missing) = self.missing_secrets(keystore) {
            step.action = Action::Skip;
            step.reason = format!(
                "the mapping file supplies no {missing} (the source does not show secrets)"
            );
        }
        step
    }

    /// The secret connection fields the source masks, the keystore needs, and the mapping does
    /// not supply.
    fn missing_secrets(&self, keystore: &Value) -> Option<String> {
        let mapped = |name: &str| {
            self.mapping
                .of(keystore)
                .is_some_and(|m| m.secrets.contains_key(name))
        };
        let Some(keystore_type) = KeystoreType::parse(text(keystore, "/type")) else {
            return Some("connection for an unknown keystore type".into());
        };
        let variant = IbmVariant::parse(text(keystore, "/ibm_variant"));
        // Either a token or an AppRole secret opens OpenBao/Vault.
        if keystore_type == KeystoreType::HashicorpVault {
            return (!mapped("hashicorp_token") && !mapped("hashicorp_approle_secret_id"))
                .then(|| "hashicorp_token or hashicorp_approle_secret_id".into());
        }
        let missing: Vec<&str> = keystore_types::connection_fields(keystore_type, variant)
            .iter()
            .filter(|spec| spec.secret && spec.required && !mapped(spec.name))
            .map(|spec| spec.name)
            .collect();
        (!missing.is_empty()).then(|| missing.join(", "))
    }

    pub(super) fn key_step(
        &self,
        key: &Value,
        keystores: &[Step],
        present_keys: &[String],
    ) -> Step {
        let id = text(key, "/id").to_owned();
        let mut step = Step {
            kind: "managed_key",
            source_id: id.clone(),
            name: text(key, "/label").to_owned(),
            action: Action::Adopt,
            reason: String::new(),
            target_id: None,
        };
        if let Some(done) = self.state.keys.get(&id) {
            step.action = Action::Exists;
            step.target_id = Some(done.clone());
            return step;
        }
        if present_keys.contains(&id) {
            step.action = Action::Exists;
            step.target_id = Some(id);
            return step;
        }
        let state = text(key, "/state");
        let copies = copies_of(self.estate, key, keystores);
        match state {
            "pre_activation" => {
                step.action = Action::CannotMove;
                step.reason = "pre-active: its material exists only in the source".into();
            }
            "destroyed" | "destroyed_compromised" => {
                step.reason = "destroyed: its record is kept, with no copies".into();
            }
            _ if copies.is_empty() => {
                step.action = Action::CannotMove;
                let internal = key["status_in_keystores"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| {
                        self.estate
                            .keystores
                            .iter()
                            .any(|k| text(k, "/id") == text(s, "/keystore/id") && is_internal(k))
                    });
                step.reason = if internal {
                    "its material stays in the source's internal keystore (HSM)".into()
                } else {
                    "no copy in a keystore that is migrated".into()
                };
            }
            _ => {
                step.reason = format!(
                    "{} cop{} proven at adoption: {}",
                    copies.len(),
                    if copies.len() == 1 { "y" } else { "ies" },
                    copies
                        .iter()
                        .map(|(k, s)| format!("{} in {}", text(s, "/key_id_in_keystore"), k.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        step
    }
}

/// The copies a key can be adopted through: in migrated external keystores, with an id there.
pub(super) fn copies_of(estate: &Estate, key: &Value, keystores: &[Step]) -> Vec<(Step, Value)> {
    let mut out = Vec::new();
    for status in key["status_in_keystores"].as_array().into_iter().flatten() {
        let remote = text(status, "/key_id_in_keystore");
        if remote.is_empty() || text(status, "/status") == "not_present" {
            continue;
        }
        let source = text(status, "/keystore/id");
        let Some(keystore) = estate.keystores.iter().find(|k| text(k, "/id") == source) else {
            continue;
        };
        if is_internal(keystore) {
            continue;
        }
        if let Some(step) = keystores
            .iter()
            .find(|s| s.source_id == source && s.action != Action::Skip)
        {
            out.push((step.clone(), status.clone()));
        }
    }
    out
}

/// Per template with keys that cannot move: how many, and the offer.
pub(super) fn successor_offers(estate: &Estate, keys: &[Step]) -> Vec<String> {
    let mut per_template: BTreeMap<String, usize> = BTreeMap::new();
    for (step, key) in keys.iter().zip(&estate.keys) {
        if step.action == Action::CannotMove {
            *per_template
                .entry(text(key, "/template/name").to_owned())
                .or_default() += 1;
        }
    }
    per_template
        .into_iter()
        .map(|(template, n)| {
            format!(
                "template '{template}': {n} key(s) cannot move. --create-successors '{template}' \
                 creates a successor for each in Keyplane; data encrypted under an old key is \
                 re-wrapped by unwrapping it at the source and wrapping it under the successor \
                 (see docs/MIGRATION.md)"
            )
        })
        .collect()
}

/// Everything the run will do, per object, in the order it does it.
pub(super) struct Plan {
    /// Vaults, keystores, templates and keys, as printed.
    pub(super) steps: Vec<Step>,
    /// One per source keystore, in the estate's order.
    pub(super) keystores: Vec<Step>,
    /// One per source key, in the estate's order.
    pub(super) keys: Vec<Step>,
    /// Per template with keys that cannot move, the offer of successors.
    pub(super) offers: Vec<String>,
}

impl Plan {
    pub(super) async fn make(
        estate: &Estate,
        mapping: &Mapping,
        state: &State,
        target: &Client,
    ) -> anyhow::Result<Self> {
        let present = read_present(target).await?;
        // Keys keep their ids: one Keyplane already has (adopted by a run that died before it
        // noted it) is there.
        let mut present_keys = Vec::new();
        for key in &estate.keys {
            let id = text(key, "/id");
            if state.keys.contains_key(id) {
                continue;
            }
            match target.get(&format!("/api/v4/managed_keys/{id}")).await {
                // The same key only when it has the label: a key that took the id is another.
                Ok(found) if found.body["label"] == key["label"] => {
                    present_keys.push(id.to_owned())
                }
                Ok(_) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let planner = Planner {
            estate,
            mapping,
            state,
            present: &present,
        };
        let created_unless = |kind: &'static str, item: &Value, target_id: Option<String>| Step {
            kind,
            source_id: text(item, "/id").to_owned(),
            name: text(item, "/name").to_owned(),
            action: if target_id.is_some() {
                Action::Exists
            } else {
                Action::Create
            },
            reason: String::new(),
            target_id,
        };
        let mut steps: Vec<Step> = estate
            .vaults
            .iter()
            .map(|v| created_unless("vault", v, planner.vault_target(text(v, "/id"))))
            .collect();
        let keystores: Vec<Step> = estate
            .keystores
            .iter()
            .map(|k| planner.keystore_step(k))
            .collect();
        steps.extend(keystores.iter().cloned());
        steps.extend(
            estate
                .templates
                .iter()
                .map(|t| created_unless("template", t, planner.in_vault_target("template", t))),
        );
        let keys: Vec<Step> = estate
            .keys
            .iter()
            .map(|k| planner.key_step(k, &keystores, &present_keys))
            .collect();
        steps.extend(keys.iter().cloned());
        let offers = successor_offers(estate, &keys);
        Ok(Self {
            steps,
            keystores,
            keys,
            offers,
        })
    }

    /// The Keyplane object a vault or template already is, when the plan found one.
    pub(super) fn existing(&self, kind: &str, source_id: &str) -> Option<String> {
        self.steps
            .iter()
            .find(|s| s.kind == kind && s.source_id == source_id)
            .and_then(|s| s.target_id.clone())
    }

    /// Connects, from here, to every external keystore the run will create; the failures.
    pub(super) async fn test_connections(&self, estate: &Estate, mapping: &Mapping) -> Vec<String> {
        let mut failures = Vec::new();
        for (step, keystore) in self.keystores.iter().zip(&estate.keystores) {
            if step.action != Action::Create || is_internal(keystore) {
                continue;
            }
            if let Err(e) = test_connection(keystore, mapping.of(keystore)).await {
                failures.push(format!("keystore '{}': {e:#}", step.name));
            }
        }
        failures
    }

    /// The plan as a table, or as JSON or YAML.
    pub(super) fn print(&self, output: Output, unreachable: &[String]) {
        let items: Vec<Value> = self
            .steps
            .iter()
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .collect();
        let whole = json!({"plan": items, "successor_offers": self.offers,
                           "connection_failures": unreachable});
        let notes: Vec<String> = self
            .offers
            .iter()
            .cloned()
            .chain(
                unreachable
                    .iter()
                    .map(|f| format!("connection failed: {f}")),
            )
            .collect();
        super::print_rows(
            output,
            &whole,
            &items,
            &[
                ("KIND", "/kind"),
                ("NAME", "/name"),
                ("SOURCE ID", "/source_id"),
                ("ACTION", "/action"),
                ("WHY", "/reason"),
            ],
            &notes,
        );
    }
}
