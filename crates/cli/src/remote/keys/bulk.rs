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
    // A bar on a terminal; plain progress lines otherwise (logs, CI).
    let bar = std::io::stderr().is_terminal().then(|| {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} keys {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    });
    let step = (total / 10).max(1);
    let mut created = Vec::new();
    let mut failed = Vec::new();
    let mut results = futures::stream::iter(rows)
        .map(|row| async move {
            let outcome = client.post("/api/v4/managed_keys", &row.body).await;
            (row, outcome)
        })
        .buffer_unordered(parallel.clamp(1, 64));
    let mut done = 0u64;
    while let Some((row, outcome)) = results.next().await {
        done += 1;
        match outcome {
            Ok(reply) => created.push(reply.body),
            Err(e) => failed.push(format!(
                "line {} ({}): {e}",
                row.line,
                row.body["label"].as_str().unwrap_or_default()
            )),
        }
        match &bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{} failed", failed.len()));
            }
            None if done.is_multiple_of(step) || done == total => {
                eprintln!("{done}/{total} keys, {} failed", failed.len());
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
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
