//! Rows read on every data-plane call (a key's usage context, a keystore), kept in memory until
//! the next commit.
//!
//! Every entry is tagged with the writer's commit generation read *before* the row was read; an
//! entry is served only while no commit has happened since. Any commit (of any table) therefore
//! invalidates the whole cache at once, which is cheap because writes are rare next to data-plane
//! reads, and never serves a row older than the last acknowledged write: the writer bumps the
//! generation before it answers the caller whose write committed.
//!
//! On SQLite only this process writes its database (one writer thread), so its generation sees
//! every change. On PostgreSQL other nodes write too: their commits reach this node's generation
//! through the database's notifications (see the PostgreSQL engine's `changes`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Counts the writer's commits.
#[derive(Clone, Default)]
pub(crate) struct Generation(Arc<AtomicU64>);

impl Generation {
    pub(crate) fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Called after every commit (and rollback: harmless), before the writers are answered.
    pub(crate) fn advance(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

pub(crate) struct ReadCache<K, V> {
    generation: Generation,
    entries: RwLock<HashMap<K, (u64, V)>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    pub(crate) fn new(generation: Generation, capacity: usize) -> Self {
        Self {
            generation,
            entries: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// The cached value, or `read`'s (cached when present).
    pub(crate) fn get_or_read<E>(
        &self,
        key: K,
        read: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E> {
        let seen = self.generation.current();
        if let Some(value) = self.cached(&key, seen) {
            return Ok(Some(value));
        }
        let value = read()?;
        self.remember(key, seen, &value);
        Ok(value)
    }

    /// Like [`ReadCache::get_or_read`], for a read that awaits.
    pub(crate) async fn get_or_read_async<E, F>(
        &self,
        key: K,
        read: impl FnOnce() -> F,
    ) -> Result<Option<V>, E>
    where
        F: std::future::Future<Output = Result<Option<V>, E>>,
    {
        let seen = self.generation.current();
        if let Some(value) = self.cached(&key, seen) {
            return Ok(Some(value));
        }
        let value = read().await?;
        self.remember(key, seen, &value);
        Ok(value)
    }

    fn cached(&self, key: &K, seen: u64) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(tag, _)| *tag == seen)
            .map(|(_, value)| value.clone())
    }

    /// Keeps a value read while the generation was `seen`.
    fn remember(&self, key: K, seen: u64, value: &Option<V>) {
        let Some(value) = value else {
            return;
        };
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            let now = self.generation.current();
            entries.retain(|_, (tag, _)| *tag == now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (seen, value.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: &str) -> Result<Option<String>, ()> {
        Ok(Some(value.to_owned()))
    }

    #[test]
    fn a_commit_invalidates_every_entry() {
        let generation = Generation::default();
        let cache = ReadCache::new(generation.clone(), 10);
        assert_eq!(cache.get_or_read(1, || read("old")), Ok(Some("old".into())));
        assert_eq!(cache.get_or_read(1, || read("new")), Ok(Some("old".into())));
        generation.advance();
        assert_eq!(cache.get_or_read(1, || read("new")), Ok(Some("new".into())));
    }

    #[test]
    fn a_row_read_across_a_commit_is_not_served_afterwards() {
        let generation = Generation::default();
        let cache = ReadCache::new(generation.clone(), 10);
        // The row is read, then a commit lands before it is stored: its tag is already stale.
        let value = cache.get_or_read(1, || {
            generation.advance();
            read("read during a commit")
        });
        assert_eq!(value, Ok(Some("read during a commit".into())));
        assert_eq!(
            cache.get_or_read(1, || read("after")),
            Ok(Some("after".into()))
        );
    }

    #[test]
    fn absent_rows_are_not_cached_and_the_size_is_bounded() {
        let cache = ReadCache::new(Generation::default(), 2);
        assert_eq!(cache.get_or_read(1, || Ok::<_, ()>(None)), Ok(None));
        assert_eq!(cache.get_or_read(1, || read("now")), Ok(Some("now".into())));
        for k in 2..10 {
            cache.get_or_read(k, || read("x")).ok();
        }
        assert!(cache.entries.read().unwrap().len() <= 2);
    }
}
