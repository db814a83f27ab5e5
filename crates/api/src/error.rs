//! The one mapping from domain errors to HTTP status and the UKO error body (spec §1.8).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::error::{Error, ErrorCode, Target};
use serde::Serialize;
use utoipa::ToSchema;

/// An error on its way out; the correlation middleware renders it with the request's trace id.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub params: Vec<String>,
    pub target: Option<Target>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            params: Vec::new(),
            target: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid { code, target, .. } => Self {
                target,
                ..Self::new(StatusCode::BAD_REQUEST, code, message)
            },
            Error::Unauthorized(_) => {
                Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
            }
            Error::Forbidden => Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message),
            Error::NotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
            }
            Error::Conflict { code, params, .. } => Self {
                params,
                ..Self::new(StatusCode::CONFLICT, code, message)
            },
            Error::PreconditionRequired => Self {
                target: Some(Target {
                    kind: keyplane_core::error::TargetKind::Header,
                    name: "If-Match".into(),
                }),
                ..Self::new(
                    StatusCode::PRECONDITION_REQUIRED,
                    ErrorCode::PreconditionRequired,
                    message,
                )
            },
            Error::EtagMismatch => Self {
                target: Some(Target {
                    kind: keyplane_core::error::TargetKind::Header,
                    name: "If-Match".into(),
                }),
                ..Self::new(
                    StatusCode::PRECONDITION_FAILED,
                    ErrorCode::EtagMismatch,
                    message,
                )
            },
            Error::KeystoreUnavailable(_) => Self::new(
                StatusCode::FAILED_DEPENDENCY,
                ErrorCode::KeystoreUnreachable,
                message,
            ),
            Error::TimedOut => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::RequestTimeout,
                message,
            ),
            Error::Sealed => Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Sealed, message),
            Error::StoreUnavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::DatabaseUnavailable,
                message,
            ),
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::InternalError,
                    "an internal error occurred; the server log has the details under this trace id",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorTarget {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorItem {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more_info: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub message_params: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<ErrorTarget>,
}

/// `ApiError` of the UKO API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub status_code: u16,
    pub trace: String,
    pub errors: Vec<ErrorItem>,
}

impl ApiError {
    pub fn body(&self, trace: &str) -> ErrorBody {
        ErrorBody {
            status_code: self.status.as_u16(),
            trace: trace.to_owned(),
            errors: vec![ErrorItem {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
                more_info: None,
                message_params: self.params.clone(),
                target: self.target.as_ref().map(|t| ErrorTarget {
                    kind: t.kind.as_str().to_owned(),
                    name: t.name.clone(),
                }),
            }],
        }
    }
}

/// The Key Protect media type of error bodies.
const KEY_PROTECT_ERROR: &str = "application/vnd.ibm.kms.error+json";

/// The error body of the Key Protect API (`/api/v2`), as its clients parse it: a one-item
/// collection whose `errorMsg` starts with the status text, with the details in `reasons`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyProtectErrorBody {
    pub metadata: KeyProtectCollection,
    pub resources: Vec<KeyProtectError>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyProtectCollection {
    pub collection_type: String,
    pub collection_total: u32,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyProtectError {
    pub error_msg: String,
    pub reasons: Vec<KeyProtectReason>,
    pub correlation_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyProtectReason {
    pub code: String,
    pub message: String,
    pub status: u16,
    pub more_info: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<ErrorTarget>,
}

impl ApiError {
    pub fn key_protect_body(&self, trace: &str) -> KeyProtectErrorBody {
        KeyProtectErrorBody {
            metadata: KeyProtectCollection {
                collection_type: KEY_PROTECT_ERROR.to_owned(),
                collection_total: 1,
            },
            resources: vec![KeyProtectError {
                error_msg: format!(
                    "{}: {}",
                    self.status.canonical_reason().unwrap_or("Error"),
                    self.message
                ),
                reasons: vec![KeyProtectReason {
                    code: self.code.as_str().to_owned(),
                    message: self.message.clone(),
                    status: self.status.as_u16(),
                    more_info: String::new(),
                    target: self.target.as_ref().map(|t| ErrorTarget {
                        kind: t.kind.as_str().to_owned(),
                        name: t.name.clone(),
                    }),
                }],
                correlation_id: trace.to_owned(),
            }],
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
