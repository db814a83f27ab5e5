//! `keyplane key create-bulk`: many keys from a CSV file, a few at a time, with progress.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use keyplane_client::Client;
use serde_json::{Value, json};

use crate::remote::Output;

/// Most rows one file may hold.
const MAX_ROWS: usize = 100_000;

struct Row {
    line: usize,
    body: Value,
}

fn read_rows(file: &Path, vault: &str, template: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let mut reader =
        csv::Reader::from_path(file).with_context(|| format!("reading {}", file.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let label = column("label").context("the CSV file has no 'label' column")?;
    let (template_col, description_col) = (column("template"), column("description"));
    if template_col.is_none() && template.is_none() {
        anyhow::bail!("give --template, or a 'template' column in the CSV file");
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("line {} of the CSV file", i + 2))?;
        let get = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim);
        let template = get(template_col)
            .filter(|t| !t.is_empty())
            .or(template)
            .context(format!("line {}: no template", i + 2))?;
        let mut body = json!({"vault": {"id": vault}, "template_name": template,
                              "label": get(Some(label)).unwrap_or_default()});
        if let Some(d) = get(description_col).filter(|d| !d.is_empty()) {
            body["description"] = json!(d);
        }
        rows.push(Row { line: i + 2, body });
        if rows.len() > MAX_ROWS {
            anyhow::bail!("the CSV file has more than {MAX_ROWS} rows");
        }
    }
    Ok(rows)
}

/// Progress of many calls: a bar on a terminal, plain lines every tenth otherwise (logs, CI).
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    failed: u64,
    noun: &'static str,
}

impl Progress {
    pub fn new(total: u64, noun: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {noun} {{msg}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            )
        });
        Self {
            bar,
            total,
            done: 0,
            failed: 0,
            noun,
        }
    }

    pub fn step(&mut self, ok: bool) {
        self.done += 1;
        if !ok {
            self.failed += 1;
        }
        let every = (self.total / 10).max(1);
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.done);
                bar.set_message(format!("{} failed", self.failed));
            }
            None if self.done.is_multiple_of(every) || self.done == self.total => {
                eprintln!(
                    "{}/{} {}, {} failed",
                    self.done, self.total, self.noun, self.failed
                );
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}

/// Creates every row's key, `parallel` at a time. Failures are listed at the end and make the
/// command fail; the keys that were created stay.
pub async fn create(
    client: &Client,
    output: Output,
    file: &Path,
    vault: &str,
    template: Option<&str>,
    parallel: usize,
) -> anyhow::Result<()> {
    let rows = read_rows(file, vault, template)?;
    let total = rows.len() as u64;
    let mut progress = Progress::new(total, "keys");
    let mut created = Vec::new();
    let mut failed = Vec::new();
    let mut results = futures::stream::iter(rows)
        .map(|row| async move {
            let outcome = client.post("/api/v4/managed_keys", &row.body).await;
            (row, outcome)
        })
        .buffer_unordered(parallel.clamp(1, 64));
    while let Some((row, outcome)) = results.next().await {
        progress.step(outcome.is_ok());
        match outcome {
            Ok(reply) => created.push(reply.body),
            Err(e) => failed.push(format!(
                "line {} ({}): {e}",
                row.line,
                row.body["label"].as_str().unwrap_or_default()
            )),
        }
    }
    progress.finish();
    if !crate::remote::print_data(output, &created) {
        let _ = writeln!(
            std::io::stdout().lock(),
            "created {} of {total} keys",
            created.len()
        );
    }
    if failed.is_empty() {
        return Ok(());
    }
    for f in &failed {
        eprintln!("{f}");
    }
    anyhow::bail!("{} of {total} keys were not created", failed.len())
}

/// Syncs every key listed at `list_path` (a vault's or a keystore's keys), `parallel` at a time.
pub async fn sync_all(
    client: &Client,
    output: Output,
    list_path: &str,
    parallel: usize,
) -> anyhow::Result<()> {
    let keys = client.list_all(list_path, "managed_keys").await?;
    let ids: Vec<String> = keys
        .iter()
        .filter_map(|k| k["id"].as_str().map(str::to_owned))
        .collect();
    let total = ids.len() as u64;
    let mut progress = Progress::new(total, "keys synced");
    let mut failed = Vec::new();
    let mut synced = Vec::new();
    let mut results = futures::stream::iter(ids)
        .map(|id| async move {
            let outcome = client
                .act(
                    reqwest::Method::POST,
                    &format!("/api/v4/managed_keys/{id}"),
                    "/sync_status_in_keystores",
                    None,
                    None,
                )
                .await;
            (id, outcome)
        })
        .buffer_unordered(parallel.clamp(1, 64));
    while let Some((id, outcome)) = results.next().await {
        progress.step(outcome.is_ok());
        match outcome {
            Ok(_) => synced.push(json!({ "id": id })),
            Err(e) => failed.push(format!("{id}: {e}")),
        }
    }
    progress.finish();
    if !crate::remote::print_data(output, &synced) {
        let _ = writeln!(
            std::io::stdout().lock(),
            "synced {} of {total} keys",
            synced.len()
        );
    }
    if failed.is_empty() {
        return Ok(());
    }
    for f in &failed {
        eprintln!("{f}");
    }
    anyhow::bail!("{} of {total} keys were not synced", failed.len())
}
