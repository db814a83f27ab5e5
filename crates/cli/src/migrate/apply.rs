//! The run's writes on the target, in order: vaults, keystores, templates, adopted keys, and
//! successors for keys that cannot move. Each is an ordinary API call; the state file is written
//! after each object.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use keyplane_client::{Client, ClientError};
use serde_json::{Value, json};

use super::mapping::{Mapping, keystore_body};
use super::plan::{Action, Plan, Step, copies_of};
use super::source::Estate;
use super::state::State;
use super::text;

/// A run in progress: what it writes to, and what it could not do.
pub(super) struct Apply<'a> {
    pub(super) target: &'a Client,
    pub(super) estate: &'a Estate,
    pub(super) plan: &'a Plan,
    pub(super) mapping: &'a Mapping,
    pub(super) state: &'a mut State,
    pub(super) state_path: &'a Path,
    /// Objects whose creation failed, in words.
    pub(super) failures: Vec<String>,
    /// Keys not adopted, by source id, with the target's reason.
    pub(super) refused: BTreeMap<String, String>,
}

impl Apply<'_> {
    fn noted(&self) -> anyhow::Result<()> {
        self.state.save(self.state_path)
    }

    pub(super) async fn vaults(&mut self) -> anyhow::Result<()> {
        for vault in &self.estate.vaults {
            let id = text(vault, "/id");
            if let Some(existing) = self.plan.existing("vault", id) {
                self.state.vaults.insert(id.to_owned(), existing);
                continue;
            }
            let mut body = json!({
                "name": text(vault, "/name"),
                "description": text(vault, "/description"),
            });
            if !text(vault, "/recovery_key_label").is_empty() {
                body["recovery_key_label"] = vault["recovery_key_label"].clone();
            }
            let created = self.target.post("/api/v4/vaults", &body).await?;
            self.state
                .vaults
                .insert(id.to_owned(), text(&created.body, "/id").to_owned());
            self.noted()?;
        }
        self.noted()
    }

    pub(super) async fn keystores(&mut self) -> anyhow::Result<()> {
        for (step, keystore) in self.plan.keystores.iter().zip(&self.estate.keystores) {
            match step.action {
                Action::Exists => {
                    if let Some(t) = &step.target_id {
                        self.state
                            .keystores
                            .insert(step.source_id.clone(), t.clone());
                    }
                    continue;
                }
                Action::Create => {}
                _ => continue,
            }
            let vault = self
                .state
                .vaults
                .get(text(keystore, "/vault/id"))
                .with_context(|| format!("keystore '{}': its vault was not migrated", step.name))?;
            let body = keystore_body(keystore, self.mapping.of(keystore), vault)?;
            match self.target.post("/api/v4/keystores", &body).await {
                Ok(reply) => {
                    self.state
                        .keystores
                        .insert(step.source_id.clone(), text(&reply.body, "/id").to_owned());
                    self.noted()?;
                }
                Err(e) => self.failures.push(format!("keystore '{}': {e}", step.name)),
            }
        }
        self.noted()
    }

    pub(super) async fn templates(&mut self) -> anyhow::Result<()> {
        for template in &self.estate.templates {
            let id = text(template, "/id");
            let name = text(template, "/name");
            if let Some(existing) = self.plan.existing("template", id) {
                self.state.templates.insert(id.to_owned(), existing);
                continue;
            }
            let Some(vault) = self.state.vaults.get(text(template, "/vault/id")) else {
                self.failures
                    .push(format!("template '{name}': its vault was not migrated"));
                continue;
            };
            match self
                .target
                .post("/api/v4/templates", &template_body(template, vault))
                .await
            {
                Ok(reply) => {
                    self.state
                        .templates
                        .insert(id.to_owned(), text(&reply.body, "/id").to_owned());
                    self.noted()?;
                }
                Err(e) => self.failures.push(format!("template '{name}': {e}")),
            }
        }
        self.noted()
    }

    /// Adopts each key the plan adopts; the target proves its copies, and a key it refuses is
    /// noted with the reason.
    pub(super) async fn keys(&mut self) -> anyhow::Result<()> {
        for (step, key) in self.plan.keys.iter().zip(&self.estate.keys) {
            match step.action {
                Action::Exists => {
                    if let Some(t) = &step.target_id {
                        self.state.keys.insert(step.source_id.clone(), t.clone());
                    }
                    continue;
                }
                Action::Adopt => {}
                _ => continue,
            }
            let Some(vault) = self.state.vaults.get(text(key, "/vault/id")) else {
                self.refused
                    .insert(step.source_id.clone(), "its vault was not migrated".into());
                continue;
            };
            let copies = adopted_copies(self.estate, self.state, key, &self.plan.keystores);
            let body = adoption_body(
                key,
                vault,
                &copies,
                self.estate.versions.get(&step.source_id),
            );
            match self.target.post("/api/v4/managed_keys/adopt", &body).await {
                Ok(reply) => {
                    self.state
                        .keys
                        .insert(step.source_id.clone(), text(&reply.body, "/id").to_owned());
                    self.noted()?;
                }
                Err(e @ ClientError::Api { .. }) => {
                    // Adopted under another id by a run that died before noting it: that key
                    // governs these copies now, and is this one when it has its label and vault.
                    match self.adopted_earlier(&e, key, vault).await? {
                        Some(id) => {
                            self.state.keys.insert(step.source_id.clone(), id);
                            self.noted()?;
                        }
                        None => {
                            self.refused.insert(step.source_id.clone(), e.to_string());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.noted()
    }

    /// The key that already governs a refused adoption's copies, when it is the same key.
    async fn adopted_earlier(
        &self,
        refusal: &ClientError,
        key: &Value,
        vault: &str,
    ) -> anyhow::Result<Option<String>> {
        let ClientError::Api { code, body, .. } = refusal else {
            return Ok(None);
        };
        let first = &body["errors"][0];
        let governed = code == "copy_not_proven"
            && text(first, "/message").contains("already governed by managed key");
        let Some(holder) = first["message_params"][0].as_str().filter(|_| governed) else {
            return Ok(None);
        };
        let found = match self
            .target
            .get(&format!("/api/v4/managed_keys/{holder}"))
            .await
        {
            Ok(reply) => reply.body,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let same = text(&found, "/vault/id") == vault && found["label"] == key["label"];
        Ok(same.then(|| holder.to_owned()))
    }

    /// A successor key, from the migrated template, for each key that cannot move and whose
    /// template is named (or `all`).
    pub(super) async fn successors(&mut self, templates: &[String]) -> anyhow::Result<()> {
        for (step, key) in self.plan.keys.iter().zip(&self.estate.keys) {
            if step.action != Action::CannotMove
                || self.state.successors.contains_key(&step.source_id)
            {
                continue;
            }
            let template = text(key, "/template/name");
            if !templates.iter().any(|t| t == "all" || t == template) {
                continue;
            }
            let Some(vault) = self.state.vaults.get(text(key, "/vault/id")) else {
                continue;
            };
            let body = json!({
                "template_name": template,
                "vault": {"id": vault},
                "label": text(key, "/label"),
                "description": format!("successor of {} ({})", text(key, "/label"), step.source_id),
            });
            match self.target.post("/api/v4/managed_keys", &body).await {
                Ok(reply) => {
                    self.state
                        .successors
                        .insert(step.source_id.clone(), text(&reply.body, "/id").to_owned());
                    self.noted()?;
                }
                Err(e) => self
                    .failures
                    .push(format!("successor of key '{}': {e}", step.name)),
            }
        }
        Ok(())
    }
}

/// The adoption body's copies: each in the keystore it was migrated to.
/// The id Keyplane's connector knows a key by, from the form a UKO server may show it in: an
/// Azure key's name from its URL (`https://{vault}/keys/{name}/{version}`), a Cloud KMS key's
/// id from its resource name (`projects/…/cryptoKeys/{id}[/cryptoKeyVersions/…]`). Others
/// (AWS key ids and ARNs, transit names, Key Protect ids) are used as they are.
fn keystore_key_id(keystore_type: &str, shown: &str) -> String {
    let after = |marker: &str| {
        shown
            .split_once(marker)
            .and_then(|(_, rest)| rest.split('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match keystore_type {
        "azure_key_vault" => after("/keys/"),
        "google_kms" => after("cryptoKeys/"),
        _ => None,
    }
    .unwrap_or_else(|| shown.to_owned())
}

fn adopted_copies(estate: &Estate, state: &State, key: &Value, keystores: &[Step]) -> Vec<Value> {
    // A destroyed key is kept as a record: whatever its keystores still show is not adopted.
    if text(key, "/state").starts_with("destroyed") {
        return Vec::new();
    }
    copies_of(estate, key, keystores)
        .into_iter()
        .filter_map(|(step, status)| {
            let target = state.keystores.get(&step.source_id)?;
            let label = key
                .pointer("/instances/0/label_in_keystore")
                .and_then(Value::as_str);
            let keystore_type = estate
                .keystores
                .iter()
                .find(|k| text(k, "/id") == step.source_id)
                .map_or("", |k| text(k, "/type"));
            let mut copy = json!({
                "keystore": {"id": target},
                "key_id_in_keystore": keystore_key_id(keystore_type, text(&status, "/key_id_in_keystore")),
            });
            if let Some(l) = label {
                copy["label_in_keystore"] = json!(l);
            }
            Some(copy)
        })
        .collect()
}

fn template_body(template: &Value, vault: &str) -> Value {
    let mut body = json!({
        "vault": {"id": vault},
        "name": template["name"],
        "description": template["description"],
        "type": template["type"],
        "key": template["key"],
        "keystores": template["keystores"],
    });
    for field in ["naming_scheme", "managing_systems", "state"] {
        if !template[field].is_null() {
            body[field] = template[field].clone();
        }
    }
    body
}

fn adoption_body(
    key: &Value,
    vault: &str,
    copies: &[Value],
    versions: Option<&Vec<Value>>,
) -> Value {
    let mut body = json!({
        "id": key["id"],
        "vault": {"id": vault},
        "template_name": key.pointer("/template/name"),
        "label": key["label"],
        "description": key["description"],
        "state": key["state"],
        "algorithm": key["algorithm"],
        "size": key["size"],
        "version": key["version"].as_u64().unwrap_or(1),
        "copies": copies,
    });
    for field in [
        "tags",
        "label_tags",
        "verification_patterns",
        "activation_date",
        "expiration_date",
        "created_at",
        "rotated_at",
    ] {
        if !key[field].is_null() {
            body[field] = key[field].clone();
        }
    }
    if let Some(list) = versions {
        let current = key["version"].as_u64().unwrap_or(1);
        body["versions"] = list
            .iter()
            .filter(|v| v["version"].as_u64() != Some(current))
            .map(|v| json!({"version": v["version"], "state": v["state"]}))
            .collect();
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adoption_body_carries_the_key_and_its_earlier_versions() {
        let key = json!({"id": "k", "label": "l", "description": "", "state": "active",
                         "algorithm": "aes", "size": "256", "version": 2,
                         "template": {"name": "T"}, "tags": [], "expiration_date": null});
        let versions = vec![
            json!({"version": 2, "state": "active"}),
            json!({"version": 1, "state": "deactivated"}),
        ];
        let body = adoption_body(&key, "v", &[], Some(&versions));
        assert_eq!(
            body["versions"],
            json!([{"version": 1, "state": "deactivated"}])
        );
        assert_eq!(body["template_name"], "T");
        assert!(body.get("expiration_date").is_none());
    }

    #[test]
    fn keystore_ids_are_read_as_the_connectors_know_them() {
        assert_eq!(
            keystore_key_id(
                "azure_key_vault",
                "https://v.vault.azure.net/keys/orders/0a1b2c"
            ),
            "orders"
        );
        assert_eq!(
            keystore_key_id(
                "google_kms",
                "projects/p/locations/l/keyRings/r/cryptoKeys/orders/cryptoKeyVersions/3"
            ),
            "orders"
        );
        assert_eq!(keystore_key_id("google_kms", "orders"), "orders");
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(keystore_key_id("aws_kms", arn), arn);
    }
}
