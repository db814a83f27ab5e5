//! Request pacing under a provider's published quota: calls of one kind are spread so that no
//! window ever holds more than the quota allows, however many tasks run at once. A quota given
//! per minute may be drawn in a burst (a generic cell rate: at most `burst` calls at once, then
//! one per interval), so a few calls go at once and a flood is spread.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paces one kind of call at `per_second`.
pub(crate) struct Pace {
    interval: Duration,
    /// How far ahead of its theoretical time a call may go: `(burst - 1)` intervals.
    tolerance: Duration,
    next_free: Mutex<Option<Instant>>,
}

impl Pace {
    pub(crate) fn per_second(per_second: f64) -> Self {
        Self::with_burst(per_second, 1)
    }

    /// `per_second` on average, up to `burst` calls at once. In any window of `t` seconds at
    /// most `burst + per_second × t` calls go.
    pub(crate) fn with_burst(per_second: f64, burst: u32) -> Self {
        let interval = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            next_free: Mutex::new(None),
        }
    }

    /// Books the next free slot at or after `now`.
    fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        let theoretical = next.map_or(now, |n| n.max(now));
        let slot = theoretical
            .checked_sub(self.tolerance)
            .map_or(now, |early| early.max(now));
        *next = Some(theoretical + self.interval);
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

    #[test]
    fn a_burst_goes_at_once_and_the_rest_is_spread() {
        // 60 a minute, 30 at once: at most 60 in any minute.
        let pace = Pace::with_burst(0.5, 30);
        let start = Instant::now();
        let slots: Vec<Instant> = (0..100).map(|_| pace.reserve(start)).collect();
        assert!(slots[..30].iter().all(|s| *s == start));
        assert_eq!(slots[30] - start, Duration::from_secs(2));
        for window in slots.windows(61) {
            assert!(window[60] - window[0] >= Duration::from_secs(60));
        }
    }
}
