//! Request extractors that fail with UKO error bodies: JSON bodies, ids, `If-Match`, queries.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use keyplane_core::error::{Error, ErrorCode};
use keyplane_core::etag::IfMatch as CoreIfMatch;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// Largest request body accepted (413 above it).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body: `Content-Type: application/json` (415 otherwise), at most 1 MiB (413), parsed
/// with the failing field named in the error's target.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_json_bytes(req, MediaType::Required).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A Key Protect body, as IBM's clients send it: JSON with or without a `Content-Type` (the Go
/// client sends none), `None` when the body is empty or `null` (what clients send for an
/// action without arguments). Only the media type is lenient: a body that is there must still
/// be exactly one JSON object.
pub struct KeyProtectBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for KeyProtectBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_json_bytes(req, MediaType::MayBeAbsent).await?;
        let text = bytes.trim_ascii();
        if text.is_empty() || text == b"null" {
            return Ok(KeyProtectBody(None));
        }
        parse_json(&bytes).map(|v| KeyProtectBody(Some(v)))
    }
}

/// Whether a body must say it is JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaType {
    Required,
    MayBeAbsent,
}

/// A body's bytes, at most 1 MiB (413), when its media type is JSON (`application/json` or any
/// `application/…+json`, such as Key Protect's `application/vnd.ibm.kms.key+json`); 415
/// otherwise.
async fn read_json_bytes(
    req: Request,
    media_type: MediaType,
) -> Result<axum::body::Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    let json = match content_type {
        None => media_type == MediaType::MayBeAbsent,
        Some(value) => {
            let mime = value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        }
    };
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the request body must be JSON sent with Content-Type: application/json",
        ));
    }
    // The limit is applied here, not left to a layer: the data plane's calls reach their
    // handlers without the router's layers.
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if e.into_inner().is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidField,
                    "the request body could not be read",
                )
            }
        })
}

/// Parses a body that must be exactly one JSON value: bytes after it (other than white space)
/// are refused, so no two readers of one body can disagree on what it says.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object: serde would also fill a struct from an array, by position.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::from(Error::Invalid {
            code: ErrorCode::InvalidField,
            message: "the request body must be a JSON object".into(),
            target: None,
        }));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = inner.to_string();
        // serde's own words, minus its line/column suffix, are clear enough and carry no secrets
        // beyond what the caller sent; values of secret fields are strings and never echoed.
        let detail = detail
            .split(" at line ")
            .next()
            .unwrap_or(&detail)
            .to_owned();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::from(Error::Invalid {
                code: ErrorCode::InvalidField,
                message: format!("the request body is not valid JSON for this operation: {detail}"),
                target: None,
            })
        } else {
            ApiError::from(Error::invalid_field(&path, format!("{path}: {detail}")))
        }
    })?;
    de.end().map_err(|_| {
        ApiError::from(Error::Invalid {
            code: ErrorCode::InvalidField,
            message: "the request body must be exactly one JSON value: bytes follow it".into(),
            target: None,
        })
    })?;
    Ok(value)
}

/// The `{id}` path segment as a UUID (400 naming the parameter otherwise).
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    ApiError::from(Error::invalid_parameter(
                        "id",
                        "the path has no resource id",
                    ))
                })?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| Error::invalid_parameter("id", format!("'{raw}' is not a UUID")).into())
    }
}

/// The optional `If-Match` header; services turn its absence into 428.
pub struct IfMatch(pub Option<CoreIfMatch>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get(header::IF_MATCH) {
            None => Ok(IfMatch(None)),
            Some(v) => v
                .to_str()
                .map(|s| IfMatch(Some(CoreIfMatch::parse(s))))
                .map_err(|_| {
                    Error::invalid_header("If-Match", "If-Match is not valid text").into()
                }),
        }
    }
}

/// The raw query string as ordered pairs; list endpoints parse it into typed queries.
pub struct RawQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        refuse_invalid_utf8(q)?;
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map(RawQuery)
            .map_err(|_| Error::invalid_parameter("query", "the query string is malformed").into())
    }
}

/// Refuses a query whose names or values decode to bytes that are not UTF-8: decoding would
/// replace them (`%ff` becoming U+FFFD), so a filter would match other text than was sent.
fn refuse_invalid_utf8(query: &str) -> Result<(), ApiError> {
    let decodes = |raw: &str| {
        percent_encoding::percent_decode_str(&raw.replace('+', " "))
            .decode_utf8()
            .is_ok()
    };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !decodes(name) || !decodes(value) {
            let shown = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            return Err(Error::invalid_parameter(
                &shown,
                format!(
                    "query parameter '{}' is not valid UTF-8 once decoded",
                    shown.escape_debug()
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The legacy `UKO-Vault` header (API ≤ 4.7): accepted, and checked against the resource's vault.
pub struct LegacyVault(pub Option<Uuid>);

impl<S: Send + Sync> FromRequestParts<S> for LegacyVault {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get("uko-vault") {
            None => Ok(LegacyVault(None)),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| Uuid::parse_str(s.trim()).ok())
                .map(|id| LegacyVault(Some(id)))
                .ok_or_else(|| {
                    Error::invalid_header("UKO-Vault", "UKO-Vault must be a vault UUID").into()
                }),
        }
    }
}

impl LegacyVault {
    /// 400 when the header names a vault other than the resource's.
    pub fn check(&self, resource_vault: Uuid) -> Result<(), ApiError> {
        match self.0 {
            Some(v) if v != resource_vault => Err(Error::invalid_header(
                "UKO-Vault",
                format!(
                    "UKO-Vault names vault {v}, but the resource belongs to vault {resource_vault}"
                ),
            )
            .into()),
            _ => Ok(()),
        }
    }
}

/// A whole number however JSON writes it: `600` and `600.0` are the same number, and JSON
/// Schema's `integer` takes both. Anything with a fraction, or out of the field's range, is
/// refused with the field's name.
pub(crate) fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    // Beyond 2^53 a float no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let whole = if let Some(n) = number.as_u64() {
        T::try_from(n).ok()
    } else if let Some(n) = number.as_i64() {
        T::try_from(n).ok()
    } else {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
            .and_then(|f| {
                if f >= 0.0 {
                    T::try_from(f as u64).ok()
                } else {
                    T::try_from(f as i64).ok()
                }
            })
    };
    whole
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number in range")))
}
