//! The UKO v4 REST API over `keyplane_core` services: routes, wire shapes, auth, errors, OpenAPI.

mod audit;
pub mod authorize;
pub mod error;
pub mod extract;
mod limits;
pub mod params;
mod routes;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use keyplane_core::ErrorCode;
use keyplane_core::model::Actor;
use keyplane_core::service::Keyplane;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::wire::Links;

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
    pub grants: keyplane_core::authz::Grants,
}

/// Checks bearer tokens and issues them; the binary decides how tokens are stored and signed.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller a token belongs to, or `None` for an unknown, expired or revoked token.
    async fn authenticate(&self, bearer: &str) -> keyplane_core::Result<Option<Identity>>;

    /// A new API key: the key, shown once, and the digest that is stored.
    fn mint_api_key(&self) -> keyplane_core::Result<(zeroize::Zeroizing<String>, String)>;

    /// Exchanges an API key for a signed, short-lived access token; `None` for a key that is
    /// unknown or revoked.
    async fn exchange_api_key(&self, apikey: &str) -> keyplane_core::Result<Option<AccessToken>>;
}

/// What every handler and middleware shares. The router clones its state for each request and
/// each middleware layer: one `Arc` keeps that to a single reference-count change.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub keyplane: Keyplane,
    pub links: Links,
    pub auth: Arc<dyn Authenticator>,
    limits: limits::Limits,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Base of absolute hrefs and `Location` (e.g. `http://127.0.0.1:8080`).
    pub public_url: String,
    pub request_timeout: Duration,
    /// Calls per second each caller may make (twice that in a burst); 0 for no limit.
    pub rate_limit: u32,
}

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The request's correlation id, echoed as `X-Correlation-ID` and as `trace` in error bodies.
#[derive(Debug, Clone)]
pub struct Trace(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Trace {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts
            .extensions
            .get::<Trace>()
            .cloned()
            .unwrap_or_else(|| Trace(String::new())))
    }
}

/// The common name of a client certificate verified by the TLS layer (mutual TLS). A call that
/// carries one and no bearer token is made as `cert:<common name>`.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub String);

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "authentication is required",
                )
            })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyplane", description = "Key orchestration over the UKO v4 wire contract."),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of every routed operation.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api(ApiDoc::openapi()).split_for_parts().1
}

/// The whole HTTP application.
pub fn app(keyplane: Keyplane, auth: Arc<dyn Authenticator>, settings: &HttpSettings) -> Router {
    let state = AppState(Arc::new(Shared {
        keyplane,
        links: Links {
            base: settings.public_url.trim_end_matches('/').to_owned(),
        },
        auth,
        limits: limits::Limits::new(settings.rate_limit),
    }));
    let (api, doc) = routes::api(ApiDoc::openapi()).split_for_parts();
    let doc = Arc::new(doc);
    let api = api
        .route(
            "/api/v4/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        // One layer of three: each `route_layer` would box its middleware around every route.
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(state.clone(), audit::record))
                .layer(middleware::from_fn_with_state(state.clone(), authenticate))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    legacy_vault_header,
                )),
        );
    // The token endpoint takes an API key, not a bearer token: outside authentication, audited.
    let identity = Router::new()
        .route(
            "/identity/token",
            axum::routing::post(routes::identity_token),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), audit::record));
    let routes = Router::new()
        .merge(api)
        .merge(identity)
        .route("/health", axum::routing::get(routes::health))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    // What every request passes through wraps the router once. `Router::layer` would wrap each
    // route instead, boxing every layer per route and cloning the boxes on every request.
    let every_request = tower::ServiceBuilder::new()
        .layer(middleware::from_fn(correlate))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .service(routes);
    Router::new().fallback_service(every_request)
}

async fn fallback() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::RouteNotFound,
        "no such API path",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this method is not allowed on this path",
    )
}

async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 4096);
    let unauthorized = |message: &str| {
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
            .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    let Some(token) = bearer else {
        let Some(cert) = req.extensions().get::<ClientCertificate>().cloned() else {
            return unauthorized("send an Authorization: Bearer <token> header");
        };
        // A certificate's common name names a principal, whose policies apply.
        let grants = match state.keyplane.principal_named(&cert.0).await {
            Ok(Some(p)) => match state.keyplane.grants_of(p.id).await {
                Ok(g) => g,
                Err(e) => return ApiError::from(e).into_response(),
            },
            Ok(None) => keyplane_core::authz::Grants::default(),
            Err(e) => return ApiError::from(e).into_response(),
        };
        let identity = Identity {
            actor: Actor(format!("cert:{}", cert.0)),
            grants,
        };
        return admit(&state, req, next, identity).await;
    };
    match state.auth.authenticate(token).await {
        Ok(Some(identity)) => admit(&state, req, next, identity).await,
        Ok(None) => unauthorized("the bearer token is not valid"),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Lets an authenticated caller through, named in the audit scope, within its call rate, and as
/// far as its roles allow (`authorize`). While sealed only the system endpoints (seal status,
/// unseal) answer; everything else is a key operation or reveals key metadata.
async fn admit(state: &AppState, mut req: Request, next: Next, identity: Identity) -> Response {
    let actor = identity.actor.clone();
    audit::set_initiator(&req, &actor.0);
    if let Err(retry_after) = state.limits.admit_call(&actor.0) {
        return limits::too_many(retry_after, "this caller is over its call rate");
    }
    if state.keyplane.is_sealed() && !req.uri().path().starts_with("/api/v4/system/") {
        return ApiError::from(keyplane_core::Error::Sealed).into_response();
    }
    req.extensions_mut().insert(actor);
    authorize::check(state, &identity.grants, req, next).await
}

/// API ≤ 4.7 clients send `UKO-Vault` on every per-resource call: it must name the resource's
/// vault (400 otherwise). Creates check it against the body's vault in their handlers.
async fn legacy_vault_header(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(header) = req.headers().get("uko-vault") else {
        return next.run(req).await;
    };
    let Some(claimed) = header
        .to_str()
        .ok()
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
    else {
        return ApiError::from(keyplane_core::Error::invalid_header(
            "UKO-Vault",
            "UKO-Vault must be a vault UUID",
        ))
        .into_response();
    };
    let mut segments = req.uri().path().trim_start_matches("/api/v4/").split('/');
    let (collection, id) = (
        segments.next(),
        segments.next().and_then(|s| uuid::Uuid::parse_str(s).ok()),
    );
    let kp = &state.keyplane;
    let owner = match (collection, id) {
        (Some("templates"), Some(id)) => kp.get_template(id).await.map(|t| t.vault.id).ok(),
        (Some("keystores"), Some(id)) => kp.get_keystore(id).await.map(|k| k.vault.id).ok(),
        (Some("managed_keys"), Some(id)) => kp.get_key(id).await.map(|k| k.vault.id).ok(),
        _ => None,
    };
    match owner {
        Some(vault) => match (extract::LegacyVault(Some(claimed))).check(vault) {
            Ok(()) => next.run(req).await,
            Err(e) => e.into_response(),
        },
        // Unknown resources answer their own 404 in the handler.
        None => next.run(req).await,
    }
}

fn acceptable_correlation_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// Gives every request a correlation id and renders every error with it as the UKO error body.
async fn correlate(mut req: Request, next: Next) -> Response {
    let trace = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_correlation_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(Trace(trace.clone()));
    let key_protect = req.uri().path().starts_with("/api/v2/");
    let mut response = next.run(req).await;
    let error = response.extensions_mut().remove::<ApiError>().or_else(|| {
        // Errors produced by layers below the routes (timeout, body limit, media type).
        let status = response.status();
        let code = match status {
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            _ => return None,
        };
        Some(ApiError::new(
            status,
            code,
            status.canonical_reason().unwrap_or("request failed"),
        ))
    });
    if let Some(error) = error {
        let headers = std::mem::take(response.headers_mut());
        response = if key_protect {
            (error.status, axum::Json(error.key_protect_body(&trace))).into_response()
        } else {
            (error.status, axum::Json(error.body(&trace))).into_response()
        };
        for (name, value) in headers.iter() {
            if name == header::WWW_AUTHENTICATE
                || name == header::ALLOW
                || name == header::RETRY_AFTER
            {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&trace) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(CORRELATION_HEADER), v);
    }
    response
}
