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

/// Cuts what follows the last complete line of `path`: a line a crash left half-written. Its event
/// is streamed again, whole, after it.
fn cut_partial_line(path: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    // Back from the end, a chunk at a time, to the last newline.
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        tracing::warn!(
            path = %path.display(),
            bytes = len - keep,
            "the audit stream ended in a partial line (an earlier crash): it is cut and its event written again"
        );
        file.set_len(keep)?;
        file.sync_data()?;
    }
    Ok(())
}

/// Appends new events to `path` until the process ends.
pub async fn run(keyplane: Keyplane, path: PathBuf) -> anyhow::Result<()> {
    cut_partial_line(&path)?;
    let mut after = last_streamed(&path)?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        // The trail names callers, keys and addresses: for its owner only, like the database.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("opening the audit stream {}", path.display()))?;
    // The stream is the node's own reader of its trail.
    let node = keyplane_core::authz::Caller::administrator(keyplane_core::model::Actor(
        "keyplane-audit-stream".into(),
    ));
    loop {
        let page = keyplane
            .list_audit_events(&node, &AuditQuery::after(after))
            .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_last_line_is_cut_and_its_event_streamed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let whole = "{\"seq\":1}\n{\"seq\":2}\n";
        std::fs::write(&path, format!("{whole}{{\"seq\":3,\"act")).unwrap();
        cut_partial_line(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        assert_eq!(last_streamed(&path).unwrap(), 2, "event 3 is written again");
        // Complete files, empty ones and missing ones are left as they are.
        cut_partial_line(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        std::fs::write(&path, "{\"seq\":1").unwrap();
        cut_partial_line(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        cut_partial_line(&dir.path().join("missing")).unwrap();
    }
}
