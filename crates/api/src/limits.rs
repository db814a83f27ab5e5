//! Abuse limits: a call rate per caller. Failed API-key exchanges are throttled per address in
//! core (`authn::FailedExchanges`), shared with the console's sign-in.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keyplane_core::ErrorCode;

use crate::error::ApiError;

pub(crate) struct Limits {
    calls: Option<DefaultKeyedRateLimiter<String>>,
}

impl Limits {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            calls: NonZeroU32::new(per_second).map(|rate| {
                let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
                RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
            }),
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
    fn callers_are_limited_separately() {
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
    }
}
