//! Who a credential belongs to. The binary decides how tokens are stored and signed and
//! implements [`Authenticator`]; every edge that signs callers in (the API, the console) asks
//! it, and they share one throttle on failed API-key exchanges per address and one call rate
//! per caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::authz::{Caller, Grants};
use crate::model::Actor;

/// An access token issued for an API key (the IAM token endpoint's answer).
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub access_token: String,
    /// Seconds it stays valid.
    pub expires_in: u64,
    /// When it expires, in seconds since the epoch.
    pub expiration: i64,
}

/// Who a bearer token belongs to, and what its roles allow.
#[derive(Debug, Clone)]
pub struct Identity {
    pub actor: Actor,
    pub grants: Arc<Grants>,
}

impl Identity {
    /// A caller with every permission (an admin token).
    pub fn administrator(actor: Actor) -> Self {
        let Caller { actor, grants } = Caller::administrator(actor);
        Self { actor, grants }
    }

    /// The caller core's operations take.
    pub fn into_caller(self) -> Caller {
        Caller::new(self.actor, self.grants)
    }
}

/// Checks bearer tokens and issues them.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller a token belongs to, or `None` for an unknown, expired or revoked token.
    async fn authenticate(&self, bearer: &str) -> crate::Result<Option<Identity>>;

    /// A new API key: the key, shown once, and the digest that is stored.
    fn mint_api_key(&self) -> crate::Result<(zeroize::Zeroizing<String>, String)>;

    /// Exchanges an API key for a signed, short-lived access token; `None` for a key that is
    /// unknown or revoked.
    async fn exchange_api_key(&self, apikey: &str) -> crate::Result<Option<AccessToken>>;
}

/// Failed API-key exchanges allowed per client address and window before it must wait.
pub const MAX_FAILED_EXCHANGES: u32 = 10;
pub const FAILED_EXCHANGE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; the oldest windows go first.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Failed API-key exchanges per client address, whichever edge they came through: guessing
/// keys is bounded per address, not per door.
#[derive(Default)]
pub struct FailedExchanges {
    by_address: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailedExchanges {
    /// Whether `address` may try an API key now; `Err` holds how long to wait.
    pub fn admit(&self, address: Option<IpAddr>) -> Result<(), Duration> {
        let Some(address) = address else {
            return Ok(());
        };
        let failures = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
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
    pub fn failed(&self, address: Option<IpAddr>) {
        let Some(address) = address else {
            return;
        };
        let mut failures = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
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

/// Calls per caller and second (twice that in a burst), whichever edge they come through.
#[derive(Default)]
pub struct CallRate {
    calls: Option<DefaultKeyedRateLimiter<String>>,
}

impl CallRate {
    /// `per_second` calls per caller; 0 for no limit.
    pub fn new(per_second: u32) -> Self {
        Self {
            calls: NonZeroU32::new(per_second).map(|rate| {
                let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
                RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
            }),
        }
    }

    /// Counts one call of `caller`; `Err` holds how long to wait.
    pub fn admit(&self, caller: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.calls else {
            return Ok(());
        };
        // Keyed by name; the map is bounded by the number of principals and admin tokens.
        limiter
            .check_key(&caller.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_limited_separately() {
        let rate = CallRate::new(1);
        assert!(rate.admit("a").is_ok());
        assert!(rate.admit("a").is_ok(), "a burst of twice the rate");
        let wait = rate.admit("a").unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(rate.admit("b").is_ok(), "another caller is not affected");
        assert!(CallRate::new(0).admit("a").is_ok());
    }

    #[test]
    fn failed_exchanges_are_bounded_per_address() {
        let failures = FailedExchanges::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..MAX_FAILED_EXCHANGES {
            assert!(failures.admit(Some(ip)).is_ok());
            failures.failed(Some(ip));
        }
        assert!(failures.admit(Some(ip)).is_err());
        assert!(failures.admit(Some("192.0.2.8".parse().unwrap())).is_ok());
    }
}
