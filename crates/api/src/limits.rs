//! Refusals of abuse limits. The limits themselves are core's (`authn::CallRate` per caller,
//! `authn::FailedExchanges` per address), shared with the console.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyplane_core::ErrorCode;

use crate::error::ApiError;

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
