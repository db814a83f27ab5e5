//! The one error type of the domain. Only the API layer turns it into HTTP.

/// Where a validation error points: a body field, a query parameter or a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Field,
    Parameter,
    Header,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Field => "field",
            Self::Parameter => "parameter",
            Self::Header => "header",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub name: String,
}

/// Machine codes of the error catalogue (decisions.md §1). Always snake_case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MissingField,
    InvalidField,
    InvalidQueryParameter,
    InvalidHeader,
    NotFound,
    DuplicateName,
    InvalidStateTransition,
    KeyNotActive,
    KeystoreNotEmpty,
    VaultNotEmpty,
    TemplateInUse,
    TemplateArchived,
    /// The operation needs key material Keyplane does not hold (an adopted key).
    MaterialNotHeld,
    /// A keystore copy named for adoption is missing or is not the key it is said to be.
    CopyNotProven,
    EtagMismatch,
    PreconditionRequired,
    Unauthorized,
    Forbidden,
    KeystoreUnreachable,
    KeystoreRejected,
    PayloadTooLarge,
    UnsupportedMediaType,
    NotAcceptable,
    RateLimited,
    Sealed,
    DatabaseUnavailable,
    RouteNotFound,
    MethodNotAllowed,
    RequestTimeout,
    InternalError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::InvalidQueryParameter => "invalid_query_parameter",
            Self::InvalidHeader => "invalid_header",
            Self::NotFound => "not_found",
            Self::DuplicateName => "duplicate_name",
            Self::InvalidStateTransition => "invalid_state_transition",
            Self::KeyNotActive => "key_not_active",
            Self::KeystoreNotEmpty => "keystore_not_empty",
            Self::VaultNotEmpty => "vault_not_empty",
            Self::TemplateInUse => "template_in_use",
            Self::TemplateArchived => "template_archived",
            Self::MaterialNotHeld => "material_not_held",
            Self::CopyNotProven => "copy_not_proven",
            Self::EtagMismatch => "etag_mismatch",
            Self::PreconditionRequired => "precondition_required",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::KeystoreUnreachable => "keystore_unreachable",
            Self::KeystoreRejected => "keystore_rejected",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotAcceptable => "not_acceptable",
            Self::RateLimited => "rate_limited",
            Self::Sealed => "sealed",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::InternalError => "internal_error",
        }
    }
}

/// A domain error. Messages are written for people and never carry secrets, SQL or key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bad input: 400.
    #[error("{message}")]
    Invalid {
        code: ErrorCode,
        message: String,
        target: Option<Target>,
    },
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's roles do not allow the operation: 403.
    #[error("your roles do not allow this operation")]
    Forbidden,
    /// 404.
    #[error("{resource} '{id}' was not found")]
    NotFound { resource: &'static str, id: String },
    /// A state or name conflict: 409. `params` name what blocks (for example key ids and labels).
    #[error("{message}")]
    Conflict {
        code: ErrorCode,
        message: String,
        params: Vec<String>,
    },
    /// 428.
    #[error(
        "the If-Match header is required for this operation; read the resource first and send its ETag"
    )]
    PreconditionRequired,
    /// 412.
    #[error("the resource has changed since it was read (ETag mismatch); read it again and retry")]
    EtagMismatch,
    /// A keystore the operation depends on cannot do its part: 424. Nothing was changed.
    #[error("{0}")]
    KeystoreUnavailable(String),
    /// The call ran out of time: 408. What a store committed before stays committed.
    #[error("the request took longer than allowed and was stopped")]
    TimedOut,
    /// 503.
    #[error("keyplane is sealed; unseal it before using keys")]
    Sealed,
    /// The database cannot be reached (restarting, connections cut): 503. Nothing was changed
    /// unless the message says the outcome is unknown.
    #[error("{0}")]
    StoreUnavailable(String),
    /// 500. The message is logged, the client sees a generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status this error answers with on every wire, and records in the audit trail.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid { .. } => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden => 403,
            Self::NotFound { .. } => 404,
            Self::Conflict { .. } => 409,
            Self::EtagMismatch => 412,
            Self::KeystoreUnavailable(_) => 424,
            Self::TimedOut => 408,
            Self::PreconditionRequired => 428,
            Self::Internal(_) => 500,
            Self::Sealed => 503,
            Self::StoreUnavailable(_) => 503,
        }
    }

    pub fn missing_field(name: &str) -> Self {
        Self::Invalid {
            code: ErrorCode::MissingField,
            message: format!("the {name} field is required"),
            target: Some(Target {
                kind: TargetKind::Field,
                name: name.to_owned(),
            }),
        }
    }

    pub fn invalid_field(name: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code: ErrorCode::InvalidField,
            message: message.into(),
            target: Some(Target {
                kind: TargetKind::Field,
                name: name.to_owned(),
            }),
        }
    }

    pub fn invalid_parameter(name: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code: ErrorCode::InvalidQueryParameter,
            message: message.into(),
            target: Some(Target {
                kind: TargetKind::Parameter,
                name: name.to_owned(),
            }),
        }
    }

    pub fn invalid_header(name: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code: ErrorCode::InvalidHeader,
            message: message.into(),
            target: Some(Target {
                kind: TargetKind::Header,
                name: name.to_owned(),
            }),
        }
    }

    pub fn not_found(resource: &'static str, id: impl std::fmt::Display) -> Self {
        Self::NotFound {
            resource,
            id: id.to_string(),
        }
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
            params: Vec::new(),
        }
    }

    pub fn invalid_transition(message: impl Into<String>) -> Self {
        Self::conflict(ErrorCode::InvalidStateTransition, message)
    }

    /// `what` names the kind of name and its scope, e.g. "the template name (unique per vault)".
    pub fn duplicate_name(what: &str, name: &str) -> Self {
        Self::Conflict {
            code: ErrorCode::DuplicateName,
            message: format!("{what} '{name}' is already in use"),
            params: vec![name.to_owned()],
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// Names the item of a batch a field error is about (`field` alone for a batch of one).
    pub fn within_index(self, field: &str, i: usize, len: usize) -> Self {
        match self {
            Self::Invalid {
                code,
                message,
                target:
                    Some(Target {
                        kind: TargetKind::Field,
                        ..
                    }),
            } => Self::Invalid {
                code,
                message,
                target: Some(Target {
                    kind: TargetKind::Field,
                    name: indexed_field(field, i, len),
                }),
            },
            other => other,
        }
    }

    /// Prefixes the field path of a field error, so nested validation names the full path.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Self::Invalid {
                code,
                message,
                target: Some(Target { kind, name }),
            } if kind == TargetKind::Field => Self::Invalid {
                code,
                message,
                target: Some(Target {
                    kind,
                    name: format!("{prefix}.{name}"),
                }),
            },
            other => other,
        }
    }
}

/// `field` for a single item, `fields[i]` for item `i` of a batch.
pub fn indexed_field(field: &str, i: usize, len: usize) -> String {
    if len == 1 {
        field.to_owned()
    } else {
        format!("{field}s[{i}]")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
