//! What a migration did so far, kept between runs: a rerun skips it, an interrupted run resumes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) source: String,
    /// Source id → target id, per kind.
    #[serde(default)]
    pub(super) vaults: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) keystores: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) templates: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) keys: BTreeMap<String, String>,
    /// Source key id → the successor key made for it.
    #[serde(default)]
    pub(super) successors: BTreeMap<String, String>,
}

impl State {
    pub(super) fn load(path: &Path, source: &str) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let state: Self = serde_json::from_str(&text)
                    .with_context(|| format!("the state file {}", path.display()))?;
                if state.source != source {
                    bail!(
                        "the state file {} is of a migration from {}, not {source}; give another --state",
                        path.display(),
                        state.source
                    );
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                source: source.to_owned(),
                ..Self::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written whole to a new file of its own (never one an attacker placed there), synced,
    /// then renamed over the old: a kill leaves one or the other.
    pub(super) fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(self)?)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}
