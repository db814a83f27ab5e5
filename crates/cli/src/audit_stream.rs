//! Streams the audit trail to a file as JSON lines, following the chain: events are appended
//! once committed, in order, and the stream resumes after the last event the file holds.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use keyplane_core::ports::AuditQuery;
use keyplane_core::service::Keyplane;

/// How often the stream looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The position of the last event in `path` (0 for a missing or empty file).
fn last_streamed(path: &Path) -> anyhow::Result<i64> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut last = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(seq) = event["seq"].as_i64()
        {
            last = seq;
        }
    }
    Ok(last)
}

/// Appends new events to `path` until the process ends.
pub async fn run(keyplane: Keyplane, path: PathBuf) -> anyhow::Result<()> {
    let mut after = last_streamed(&path)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening the audit stream {}", path.display()))?;
    loop {
        let page = keyplane.list_audit_events(&AuditQuery::after(after)).await;
        match page {
            Ok(page) if !page.items.is_empty() => {
                let mut lines = Vec::new();
                for event in &page.items {
                    serde_json::to_writer(&mut lines, event)?;
                    lines.push(b'\n');
                }
                file.write_all(&lines)?;
                file.sync_data()?;
                after = page.items.last().map_or(after, |e| e.seq);
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the audit trail for the stream failed"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
