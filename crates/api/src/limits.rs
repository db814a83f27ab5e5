//! Abuse limits: a call rate per caller, and throttling of failed API-key exchanges per client
//! address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keyplane_core::ErrorCode;

use crate::error::ApiError;

/// Failed API-key exchanges allowed per client address and window before it must wait.
const MAX_FAILED_EXCHANGES: u32 = 10;
const FAILED_EXCHANGE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; the oldest windows go first.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

pub(crate) struct Limits {
    calls: Option<DefaultKeyedRateLimiter<String>>,
    failed_exchanges: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Limits {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            calls: NonZeroU32::new(per_second).map(|rate| {
                let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
                RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
            }),
            failed_exchanges: Mutex::default(),
        }
    }

    /// Counts one call of `caller`; `Err` holds how long to wait.
    pub(crate) fn admit_call(&self, caller: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.calls else {
            return Ok(());
        };
        // Keyed by name; the map is bounded by the number of principals and admin tokens.
        limiter
            .check_key(&caller.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Whether `address` may try an API key now; `Err` holds how long to wait.
    pub(crate) fn admit_exchange(&self, address: Option<IpAddr>) -> Result<(), Duration> {
        let Some(address) = address else {
            return Ok(());
        };
        let failures = self
            .failed_exchanges
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match failures.get(&address) {
            Some((count, since))
                if *count >= MAX_FAILED_EXCHANGES && since.elapsed() < FAILED_EXCHANGE_WINDOW =>
            {
                Err(FAILED_EXCHANGE_WINDOW - since.elapsed())
            }
            _ => Ok(()),
        }
    }

    /// Records a failed API-key exchange from `address`.
    pub(crate) fn exchange_failed(&self, address: Option<IpAddr>) {
        let Some(address) = address else {
            return;
        };
        let mut failures = self
            .failed_exchanges
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, (_, since)| since.elapsed() < FAILED_EXCHANGE_WINDOW);
        }
        let entry = failures.entry(address).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILED_EXCHANGE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// 429 with `Retry-After` (whole seconds, at least one).
pub(crate) fn too_many(retry_after: Duration, message: &str) -> Response {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        message,
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_limited_separately_and_failed_exchanges_per_address() {
        let limits = Limits::new(1);
        assert!(limits.admit_call("a").is_ok());
        assert!(limits.admit_call("a").is_ok(), "a burst of twice the rate");
        let wait = limits.admit_call("a").unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(
            limits.admit_call("b").is_ok(),
            "another caller is not affected"
        );
        assert!(Limits::new(0).admit_call("a").is_ok());

        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..MAX_FAILED_EXCHANGES {
            assert!(limits.admit_exchange(Some(ip)).is_ok());
            limits.exchange_failed(Some(ip));
        }
        assert!(limits.admit_exchange(Some(ip)).is_err());
        assert!(
            limits
                .admit_exchange(Some("192.0.2.8".parse().unwrap()))
                .is_ok()
        );
    }
}
