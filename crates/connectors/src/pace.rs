//! Request pacing under a provider's published quota: calls of one kind are spread so that no
//! second ever holds more than the quota allows, however many tasks run at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paces one kind of call at `per_second`.
pub(crate) struct Pace {
    interval: Duration,
    next_free: Mutex<Option<Instant>>,
}

impl Pace {
    pub(crate) fn per_second(per_second: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second.max(0.001)),
            next_free: Mutex::new(None),
        }
    }

    /// Books the next free slot at or after `now`.
    fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + self.interval);
        slot
    }

    /// Waits for this call's slot.
    pub(crate) async fn ready(&self) {
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_spread_to_the_quota() {
        let pace = Pace::per_second(5.0);
        let start = Instant::now();
        // Twelve callers at once: one slot every 200 ms, so at most 5 in any second.
        let slots: Vec<Instant> = (0..12).map(|_| pace.reserve(start)).collect();
        for (i, slot) in slots.iter().enumerate() {
            assert_eq!(*slot - start, Duration::from_millis(200) * i as u32);
        }
        for window in slots.windows(6) {
            assert!(window[5] - window[0] >= Duration::from_secs(1));
        }
        // After a quiet spell a call goes at once.
        let later = start + Duration::from_secs(60);
        assert_eq!(pace.reserve(later), later);
    }
}
