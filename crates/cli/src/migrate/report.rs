//! The verification report: each source object against what Keyplane now shows, field by field.

use std::collections::BTreeMap;

use keyplane_client::Client;
use serde::Serialize;
use serde_json::{Value, json};

use keyplane_core::keystore_types;

use super::mapping::Mapping;
use super::plan::{Action, Plan};
use super::source::Estate;
use super::state::State;
use super::text;
use crate::remote::Output;

/// What the run did, per object, for the report.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Outcome {
    pub(super) kind: &'static str,
    pub(super) source_id: String,
    pub(super) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) target_id: Option<String>,
    /// `migrated`, `differs`, `not_migrated`, `cannot_move`, `skipped`.
    pub(super) result: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(super) detail: String,
}

pub(super) fn print(output: Output, report: &[Outcome], offers: &[String]) {
    let items: Vec<Value> = report
        .iter()
        .map(|o| serde_json::to_value(o).unwrap_or_default())
        .collect();
    super::print_rows(
        output,
        &json!({"report": items, "successor_offers": offers}),
        &items,
        &[
            ("KIND", "/kind"),
            ("NAME", "/name"),
            ("SOURCE ID", "/source_id"),
            ("TARGET ID", "/target_id"),
            ("RESULT", "/result"),
            ("DETAIL", "/detail"),
        ],
        offers,
    );
}

fn differences(source: &Value, target: &Value, fields: &[&str]) -> Vec<String> {
    fields
        .iter()
        .filter(|f| {
            let (a, b) = (source.pointer(f), target.pointer(f));
            // Sizes travel as text or number; null and absent are alike.
            let norm = |v: Option<&Value>| match v {
                None | Some(Value::Null) => Value::Null,
                Some(Value::Number(n)) => Value::String(n.to_string()),
                Some(v) => v.clone(),
            };
            norm(a) != norm(b)
        })
        .map(|f| f.trim_start_matches('/').replace('/', "."))
        .collect()
}

pub(super) async fn verify(
    target: &Client,
    estate: &Estate,
    state: &State,
    plan: &Plan,
    mapping: &Mapping,
    refused: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<Outcome>> {
    let (keys, keystores) = (&plan.keys, &plan.keystores);
    let mut report = Vec::new();
    for vault in &estate.vaults {
        report.push(
            compare(
                target,
                "vault",
                vault,
                state.vaults.get(text(vault, "/id")),
                "/api/v4/vaults",
                &["/name", "/description"],
            )
            .await?,
        );
    }
    for (step, keystore) in keystores.iter().zip(&estate.keystores) {
        // The connection too, as far as it shows: a keystore found by name must reach the same
        // place, unless the mapping says it is reached otherwise from here.
        let overridden = mapping.of(keystore).map(|m| &m.set);
        let mut fields: Vec<String> = ["/name", "/type", "/groups", "/description"]
            .map(str::to_owned)
            .to_vec();
        fields.extend(
            keystore
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, _)| name)
                .filter(|name| {
                    keystore_types::is_connection_field(name)
                        && !keystore_types::is_secret_field(name)
                        && !overridden.is_some_and(|set| set.contains_key(*name))
                })
                .map(|name| format!("/{name}")),
        );
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let mut outcome = compare(
            target,
            "keystore",
            keystore,
            state.keystores.get(text(keystore, "/id")),
            "/api/v4/keystores",
            &fields,
        )
        .await?;
        if step.action == Action::Skip {
            outcome.result = "skipped";
            outcome.detail = step.reason.clone();
        }
        report.push(outcome);
    }
    for template in &estate.templates {
        report.push(
            compare(
                target,
                "template",
                template,
                state.templates.get(text(template, "/id")),
                "/api/v4/templates",
                &[
                    "/name",
                    "/naming_scheme",
                    "/type",
                    "/state",
                    "/key/algorithm",
                    "/key/size",
                    "/keystores/0/type",
                    "/keystores/0/group",
                    "/keystores/0/naming_scheme",
                ],
            )
            .await?,
        );
    }
    for (step, key) in keys.iter().zip(&estate.keys) {
        let mut outcome = compare(
            target,
            "managed_key",
            key,
            state.keys.get(text(key, "/id")),
            "/api/v4/managed_keys",
            &[
                "/label",
                "/state",
                "/version",
                "/algorithm",
                "/size",
                "/activation_date",
                "/expiration_date",
                "/template/name",
            ],
        )
        .await?;
        if step.action == Action::CannotMove {
            outcome.result = "cannot_move";
            outcome.detail = step.reason.clone();
            if let Some(successor) = state.successors.get(&step.source_id) {
                outcome.detail = format!("{}; successor key {successor}", step.reason);
            }
        } else if let Some(why) = refused.get(&step.source_id) {
            outcome.detail = why.clone();
        }
        report.push(outcome);
    }
    Ok(report)
}

/// One source object against the Keyplane object it became.
async fn compare(
    target: &Client,
    kind: &'static str,
    source: &Value,
    done: Option<&String>,
    path: &str,
    fields: &[&str],
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        kind,
        source_id: text(source, "/id").to_owned(),
        name: text(
            source,
            if kind == "managed_key" {
                "/label"
            } else {
                "/name"
            },
        )
        .to_owned(),
        target_id: done.cloned(),
        result: "migrated",
        detail: String::new(),
    };
    let Some(id) = done else {
        outcome.result = "not_migrated";
        return Ok(outcome);
    };
    match target.get(&format!("{path}/{id}")).await {
        Ok(reply) => {
            let differs = differences(source, &reply.body, fields);
            if !differs.is_empty() {
                outcome.result = "differs";
                outcome.detail = format!("differs in {}", differs.join(", "));
            }
        }
        Err(e) if e.status() == Some(404) => {
            outcome.result = "not_migrated";
            outcome.detail = "recorded as done, but Keyplane has no such object".into();
        }
        Err(e) => return Err(e.into()),
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_fields_and_ignore_how_a_size_is_written() {
        let source =
            json!({"label": "a", "size": "256", "state": "active", "template": {"name": "T"}});
        let target =
            json!({"label": "a", "size": 256, "state": "deactivated", "template": {"name": "U"}});
        assert_eq!(
            differences(
                &source,
                &target,
                &["/label", "/size", "/state", "/template/name"]
            ),
            vec!["state", "template.name"]
        );
    }
}
