//! Calls into the API router, in process: the console's only way to read or change anything.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

/// Largest API answer the console reads (a page of 100 items is far below it).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

pub(crate) struct Answer {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub body: Value,
}

/// An API error, as its UKO error body tells it.
#[derive(Debug)]
pub(crate) struct Problem {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub body: Value,
    /// Seconds to wait, from a 429's `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Problem {
            status,
            code: code.to_owned(),
            message: message.into(),
            body: Value::Null,
            retry_after: None,
        }
    }

    fn from_answer(status: StatusCode, body: Value) -> Self {
        let first = &body["errors"][0];
        let code = first["code"]
            .as_str()
            .or_else(|| body["errorCode"].as_str())
            .unwrap_or("error")
            .to_owned();
        let mut message = first["message"]
            .as_str()
            .or_else(|| body["errorMessage"].as_str())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("the request failed"))
            .to_owned();
        if let Some(target) = first["target"]["name"].as_str() {
            message = format!("{message} ({target})");
        }
        Problem {
            status,
            code,
            message,
            body,
            retry_after: None,
        }
    }
}

/// One request to the API.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub bearer: Option<&'a str>,
    pub json: Option<&'a Value>,
    pub form: Option<String>,
    pub if_match: Option<&'a str>,
    pub client: Option<SocketAddr>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, path: &'a str) -> Self {
        Call {
            method,
            path,
            bearer: None,
            json: None,
            form: None,
            if_match: None,
            client: None,
        }
    }
}

pub(crate) async fn send(api: &Router, call: Call<'_>) -> Result<Answer, Problem> {
    let internal =
        |message: &str| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message);
    let mut builder = Request::builder().method(call.method).uri(call.path);
    if let Some(bearer) = call.bearer {
        let mut value = HeaderValue::from_str(&format!("Bearer {bearer}"))
            .map_err(|_| internal("the session's token cannot be sent"))?;
        value.set_sensitive(true);
        builder = builder.header(header::AUTHORIZATION, value);
    }
    if let Some(tag) = call.if_match {
        builder = builder.header(header::IF_MATCH, tag);
    }
    let body = match (call.json, call.form) {
        (Some(json), _) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        (None, Some(form)) => {
            builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form)
        }
        (None, None) => Body::empty(),
    };
    let mut request = builder
        .body(body)
        .map_err(|_| internal("the console built a bad request"))?;
    if let Some(client) = call.client {
        // The API's audit and rate limits see the browser's address, not the console's.
        request.extensions_mut().insert(ConnectInfo(client));
    }
    let response = match api.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|_| internal("the API's answer could not be read"))?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    if status.is_client_error() || status.is_server_error() {
        let mut problem = Problem::from_answer(status, body);
        problem.retry_after = retry_after;
        return Err(problem);
    }
    Ok(Answer { status, etag, body })
}

/// `path?k=v&…` with the non-empty values, form-encoded.
pub(crate) fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    if pairs.is_empty() {
        return path.to_owned();
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_keep_only_set_values_and_encode_them() {
        assert_eq!(
            with_query(
                "/k",
                &[("state", "active"), ("label", "a b&c"), ("vault.id", "")]
            ),
            "/k?state=active&label=a+b%26c"
        );
        assert_eq!(with_query("/k?limit=5", &[("x", "1")]), "/k?limit=5&x=1");
        assert_eq!(with_query("/k", &[]), "/k");
    }

    #[test]
    fn a_problem_reads_the_uko_error_body() {
        let p = Problem::from_answer(
            StatusCode::CONFLICT,
            serde_json::json!({"errors": [{"code": "keystore_not_empty", "message": "keys remain",
                "target": {"type": "field", "name": "id"}}]}),
        );
        assert_eq!(p.code, "keystore_not_empty");
        assert_eq!(p.message, "keys remain (id)");
    }
}
