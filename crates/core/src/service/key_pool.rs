//! The pool of pre-generated key pairs. RSA-3072/4096 generation takes a quarter to a whole
//! second; a bounded pool, refilled in the background and sealed like all material, keeps the
//! activation of RSA keys fast.

use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Algorithm, SealedMaterial};
use crate::ports::MaterialBinding;

use super::Keyplane;

/// The most pooled keys of one kind: the pool is a cache, not a stockpile.
pub const MAX_POOL_TARGET: u32 = 256;
/// How often the refill checks the pool when nothing wakes it.
const REFILL_INTERVAL: Duration = Duration::from_secs(60);
/// How long the refill waits after a failure (for example while sealed), or while another
/// node leads.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How many pre-generated keys to keep, per algorithm and size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPoolPolicy {
    pub targets: Vec<(Algorithm, u32, u32)>,
}

impl KeyPoolPolicy {
    /// Parses `3072:8,4096:4` (RSA sizes and how many of each to keep); empty or `0` is none.
    pub fn parse_rsa(text: &str) -> std::result::Result<Self, String> {
        let mut targets = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty() && *i != "0")
        {
            let (size, count) = item
                .split_once(':')
                .ok_or_else(|| format!("'{item}' is not SIZE:COUNT"))?;
            let size: u32 = size
                .parse()
                .map_err(|_| format!("'{size}' is not an RSA key size"))?;
            if !matches!(size, 2048 | 3072 | 4096) {
                return Err(format!(
                    "RSA pools hold 2048, 3072 or 4096-bit keys, not {size}"
                ));
            }
            let count: u32 = count
                .parse()
                .map_err(|_| format!("'{count}' is not a count"))?;
            if count > MAX_POOL_TARGET {
                return Err(format!(
                    "a pool keeps at most {MAX_POOL_TARGET} keys of a size"
                ));
            }
            targets.push((Algorithm::Rsa, size, count));
        }
        Ok(Self { targets })
    }

    fn target(&self, algorithm: Algorithm, size: u32) -> u32 {
        self.targets
            .iter()
            .find(|(a, s, _)| *a == algorithm && *s == size)
            .map_or(0, |(_, _, n)| *n)
    }
}

#[derive(Default)]
pub(super) struct KeyPool {
    policy: KeyPoolPolicy,
    wake: Notify,
}

impl Keyplane {
    /// Keeps pre-generated keys as `policy` says; run [`Keyplane::run_key_pool`] to fill it.
    #[must_use]
    pub fn with_key_pool(mut self, policy: KeyPoolPolicy) -> Self {
        self.key_pool = std::sync::Arc::new(KeyPool {
            policy,
            wake: Notify::new(),
        });
        self
    }

    /// A pooled key resealed as `binding`'s material, when the pool has one of that kind.
    pub(super) async fn take_pooled(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
    ) -> Result<Option<SealedMaterial>> {
        if self.key_pool.policy.target(algorithm, size) == 0 {
            return Ok(None);
        }
        self.engine.open_vault(Uuid::nil()).await?;
        let Some(pooled) = self.store.take_pooled_key(algorithm, size).await? else {
            self.key_pool.wake.notify_one();
            return Ok(None);
        };
        self.key_pool.wake.notify_one();
        self.engine.adopt_pooled(&pooled, binding).map(Some)
    }

    /// Tops every pool up to its target; returns how many keys were added.
    pub async fn refill_key_pool(&self) -> Result<usize> {
        let mut added = 0;
        for &(algorithm, size, target) in &self.key_pool.policy.targets {
            while self.store.pooled_key_count(algorithm, size).await? < u64::from(target) {
                self.engine.open_vault(Uuid::nil()).await?;
                let engine = self.engine.clone();
                let pooled =
                    tokio::task::spawn_blocking(move || engine.generate_pooled(algorithm, size))
                        .await
                        .map_err(|e| Error::internal(format!("key pool task: {e}")))??;
                self.store.add_pooled_key(&pooled).await?;
                added += 1;
            }
        }
        Ok(added)
    }

    /// Refills the pool forever: when a pooled key is taken, and every minute.
    pub async fn run_key_pool(self) {
        if self.key_pool.policy.targets.iter().all(|(_, _, n)| *n == 0) {
            return;
        }
        loop {
            // One node refills the deployment's pool: the leader.
            let leading = self.leader_term().await.is_some();
            let refill = if leading {
                self.refill_key_pool().await
            } else {
                Ok(0)
            };
            let pause = match refill {
                // Not the leader now (or not yet: at start the lease may still be being taken):
                // asked again soon, so a node that becomes leader fills the pool at once rather
                // than a refill interval later.
                Ok(_) if !leading => RETRY_AFTER,
                Ok(added) => {
                    if added > 0 {
                        tracing::debug!(added, "key pool refilled");
                    }
                    REFILL_INTERVAL
                }
                Err(Error::Sealed) => RETRY_AFTER,
                Err(e) => {
                    tracing::warn!(error = %e, "key pool refill failed");
                    RETRY_AFTER
                }
            };
            tokio::select! {
                () = self.key_pool.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_targets_parse() {
        assert_eq!(KeyPoolPolicy::parse_rsa("").unwrap().targets, vec![]);
        assert_eq!(KeyPoolPolicy::parse_rsa("0").unwrap().targets, vec![]);
        assert_eq!(
            KeyPoolPolicy::parse_rsa("3072:8, 4096:2").unwrap().targets,
            vec![(Algorithm::Rsa, 3072, 8), (Algorithm::Rsa, 4096, 2)]
        );
        assert!(KeyPoolPolicy::parse_rsa("1024:4").is_err());
        assert!(KeyPoolPolicy::parse_rsa("3072").is_err());
        assert!(KeyPoolPolicy::parse_rsa("3072:100000").is_err());
    }
}
