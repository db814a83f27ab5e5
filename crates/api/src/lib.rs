//! The UKO v4 REST API over `keyplane_core` services: routes, wire shapes, auth, errors, OpenAPI.

mod audit;
mod contract;
pub mod error;
mod export;
pub mod extract;
mod limits;
mod metrics;
mod operation;
pub mod params;
mod routes;
mod schema;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use keyplane_core::ErrorCode;
use keyplane_core::model::Actor;
use keyplane_core::service::Keyplane;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::operation::{Dialect, Owner};
use crate::wire::Links;

pub use keyplane_core::authn::{AccessToken, Authenticator, Identity};
pub use metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};

/// What every handler and middleware shares. The router clones its state for each request and
/// each middleware layer: one `Arc` keeps that to a single reference-count change.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub keyplane: Keyplane,
    pub links: Links,
    pub auth: Arc<dyn Authenticator>,
    operations: operation::Operations,
    /// How long a call may take, body included; the audit scope enforces it.
    request_timeout: Duration,
    pub metrics: Arc<Metrics>,
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
    /// Where the edge records every call; shared with a separate metrics listener.
    pub metrics: Arc<Metrics>,
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

/// The authenticated caller, as core's operations take it: who it is and what its roles allow.
#[derive(Debug, Clone)]
pub struct Caller(pub keyplane_core::authz::Caller);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<keyplane_core::authz::Caller>()
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

/// The OpenAPI document of every routed operation, with what every operation can answer.
pub fn openapi() -> utoipa::openapi::OpenApi {
    document(routes::api(ApiDoc::openapi()).split_for_parts().1)
}

/// Completes the routes' document with the answers common to every operation (applied once the
/// routes have added their paths).
fn document(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    utoipa::Modify::modify(&contract::CommonAnswers, &mut doc);
    doc
}

/// The whole HTTP application.
pub fn app(keyplane: Keyplane, auth: Arc<dyn Authenticator>, settings: &HttpSettings) -> Router {
    let state = AppState(Arc::new(Shared {
        keyplane,
        links: Links {
            base: settings.public_url.trim_end_matches('/').to_owned(),
        },
        auth,
        operations: operation::Operations::from_document(&openapi()),
        request_timeout: settings.request_timeout,
        metrics: settings.metrics.clone(),
    }));
    let (api, doc) = routes::api(ApiDoc::openapi()).split_for_parts();
    let doc = Arc::new(document(doc));
    let api = api
        .route(
            "/api/v4/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), gate));
    // The token endpoint takes an API key, not a bearer token: outside authentication, audited.
    let identity = Router::new()
        .route(
            "/identity/token",
            axum::routing::post(routes::identity_token),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            |State(state): State<AppState>, mut req: Request, next: Next| async move {
                match take_resolved(&mut req) {
                    Some(resolved) => {
                        let trace = trace_of(&req);
                        audit::record(&state, &resolved.operation, trace, req, |req| next.run(req))
                            .await
                    }
                    None => unresolved(),
                }
            },
        ));
    let routes = Router::new()
        .merge(api)
        .merge(identity)
        .route("/health", axum::routing::get(routes::health))
        .route("/ready", axum::routing::get(routes::ready))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    // What every request passes through wraps the router once. `Router::layer` would wrap each
    // route instead, boxing every layer per route and cloning the boxes on every request.
    let routed = tower::ServiceBuilder::new()
        .map_response(|response: Response<_>| response.into_response())
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .service(routes);
    Router::new().fallback_service(Front { state, routed })
}

/// The metrics listener's application (`KEYPLANE_METRICS_LISTEN`): `GET /metrics` without
/// authentication, nothing else. It records nothing itself; the API listener's calls are counted.
pub fn metrics_app(keyplane: Keyplane, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let (keyplane, metrics) = (keyplane.clone(), metrics.clone());
                async move {
                    match keyplane
                        .operational_view(keyplane_core::service::MetricsReader::MetricsListener)
                        .await
                    {
                        Ok(view) => routes::metrics_answer(&metrics, &view),
                        Err(e) => ApiError::from(e).into_response(),
                    }
                }
            }),
        )
        .fallback(fallback)
        // A scraper that stalls is cut off; the view itself is read once a second at most.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
}

async fn fallback(uri: axum::http::Uri) -> ApiError {
    let message = if uri.path().starts_with("/api/v2/") {
        "Keyplane does not serve this Key Protect call; docs/API.md lists the ones it serves"
    } else {
        "no such API path"
    };
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::RouteNotFound, message)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this method is not allowed on this path",
    )
}

/// What every routed API call passes through, in one middleware (each layer of its own would
/// box and clone the stack below it on every call).
async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match take_resolved(&mut req) {
        Some(resolved) => {
            let trace = trace_of(&req);
            guarded(&state, &resolved, trace, req, |req| next.run(req)).await
        }
        None => unresolved(),
    }
}

/// The operation the edge resolved for a routed call. Every call is resolved at the edge, and
/// the router must have matched the very route the edge resolved; a call where they differ is
/// refused, not served under another operation's audit and seal rules.
fn take_resolved(req: &mut Request) -> Option<operation::Resolved> {
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    req.extensions_mut()
        .remove::<operation::Resolved>()
        .filter(|resolved| {
            resolved.operation.is_known() && matched.as_deref() == Some(resolved.operation.template)
        })
}

/// The correlation id the edge gave a routed call.
fn trace_of(req: &Request) -> String {
    req.extensions()
        .get::<Trace>()
        .map(|t| t.0.clone())
        .unwrap_or_default()
}

fn unresolved() -> Response {
    ApiError::from(keyplane_core::Error::internal(
        "a call reached no operation",
    ))
    .into_response()
}

/// Runs `handler` on the request once it is let through, inside the request's audit scope:
/// authentication; admission (call rate, seal, roles); the legacy vault header.
async fn guarded<F, Fut>(
    state: &AppState,
    resolved: &operation::Resolved,
    trace: String,
    req: Request,
    handler: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    audit::record(state, &resolved.operation, trace, req, |req| async {
        // Parts of the request, not the request: its body is not `Sync`.
        let certificate = req.extensions().get::<ClientCertificate>();
        let identity = match authenticate(state, req.headers(), certificate).await {
            Ok(identity) => identity,
            Err(refusal) => return refusal,
        };
        let mut req = req;
        if let Some(refusal) = admit(
            state,
            &mut req,
            identity,
            resolved.operation.meaning.while_sealed,
        ) {
            return refusal;
        }
        let Some(caller) = req.extensions().get::<keyplane_core::authz::Caller>() else {
            return ApiError::from(keyplane_core::Error::internal("no caller")).into_response();
        };
        if let Err(refusal) = legacy_vault_header(state, caller, req.headers(), resolved).await {
            return refusal;
        }
        match audit::read_body(&resolved.operation, req).await {
            Ok(req) => handler(req).await,
            Err(refusal) => refusal,
        }
    })
    .await
}

async fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    certificate: Option<&ClientCertificate>,
) -> Result<Identity, Response> {
    let bearer = headers
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
        let Some(cert) = certificate else {
            return Err(unauthorized("send an Authorization: Bearer <token> header"));
        };
        // A certificate's common name names a principal, whose policies apply.
        let grants = match state.keyplane.principal_named(&cert.0).await {
            Ok(Some(p)) => state
                .keyplane
                .grants_of(p.id)
                .await
                .map_err(|e| ApiError::from(e).into_response())?,
            Ok(None) => keyplane_core::authz::Grants::default(),
            Err(e) => return Err(ApiError::from(e).into_response()),
        };
        return Ok(Identity {
            actor: Actor(format!("cert:{}", cert.0)),
            grants: Arc::new(grants),
        });
    };
    match state.auth.authenticate(token).await {
        Ok(Some(identity)) => Ok(identity),
        Ok(None) => Err(unauthorized("the bearer token is not valid")),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// Lets an authenticated caller through, named in the audit scope, within its call rate. While
/// sealed only the seal's own operations pass (`while_sealed`: seal status, unseal, seal,
/// master key rotation); everything else is a key
/// operation or reveals key metadata. What the caller may do is decided by each operation, in
/// core, on the caller this puts in the request.
fn admit(
    state: &AppState,
    req: &mut Request,
    identity: Identity,
    while_sealed: bool,
) -> Option<Response> {
    keyplane_core::audit::name_initiator(&identity.actor.0);
    if let Err(retry_after) = state.keyplane.call_rate().admit(&identity.actor.0) {
        return Some(limits::too_many(
            retry_after,
            "this caller is over its call rate",
        ));
    }
    if state.keyplane.is_sealed() && !while_sealed {
        return Some(ApiError::from(keyplane_core::Error::Sealed).into_response());
    }
    let Identity { actor, grants } = identity;
    req.extensions_mut()
        .insert(keyplane_core::authz::Caller::new(actor, grants));
    None
}

/// API ≤ 4.7 clients send `UKO-Vault` on every per-resource call: it must name the resource's
/// vault (400 otherwise). Creates check it against the body's vault in their handlers.
async fn legacy_vault_header(
    state: &AppState,
    caller: &keyplane_core::authz::Caller,
    headers: &axum::http::HeaderMap,
    resolved: &operation::Resolved,
) -> Result<(), Response> {
    let Some(header) = headers.get("uko-vault") else {
        return Ok(());
    };
    let Some(claimed) = header
        .to_str()
        .ok()
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
    else {
        return Err(ApiError::from(keyplane_core::Error::invalid_header(
            "UKO-Vault",
            "UKO-Vault must be a vault UUID",
        ))
        .into_response());
    };
    let kp = &state.keyplane;
    let owner = match (resolved.operation.owner, resolved.id) {
        (Some(Owner::Template), Some(id)) => {
            kp.get_template(caller, id).await.map(|t| t.vault.id).ok()
        }
        (Some(Owner::Keystore), Some(id)) => {
            kp.get_keystore(caller, id).await.map(|k| k.vault.id).ok()
        }
        (Some(Owner::ManagedKey), Some(id)) => {
            kp.get_key(caller, id).await.map(|k| k.vault.id).ok()
        }
        _ => None,
    };
    match owner {
        Some(vault) => extract::LegacyVault(Some(claimed))
            .check(vault)
            .map_err(IntoResponse::into_response),
        // Unknown (or hidden) resources answer their own 404 in the handler.
        None => Ok(()),
    }
}

fn acceptable_correlation_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// Key Protect's correlation header, which its clients send (`Correlation-Id`).
const KEY_PROTECT_CORRELATION_HEADER: HeaderName = HeaderName::from_static("correlation-id");
const CORRELATION: HeaderName = HeaderName::from_static(CORRELATION_HEADER);

/// The correlation id the client sent, when it is a sensible one, or a new one; and whether it
/// came in Key Protect's own `Correlation-Id` (read first on its API, and echoed in it).
fn correlation_id(req: &Request, dialect: Dialect) -> (String, bool) {
    let sent = |name: &HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable_correlation_id(v))
    };
    if dialect == Dialect::KeyProtect
        && let Some(id) = sent(&KEY_PROTECT_CORRELATION_HEADER)
    {
        return (id.to_owned(), true);
    }
    let id = sent(&CORRELATION).map_or_else(new_correlation_id, str::to_owned);
    (id, false)
}

/// A new correlation id, a random UUID written straight into its text (formatting through
/// `Display` cost about as much again as the rest of the edge).
fn new_correlation_id() -> String {
    let mut text = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// Renders an error answer as the UKO error body (the Key Protect one on its API), naming the
/// correlation id, which every answer echoes.
fn with_correlation(
    mut response: Response,
    trace: &str,
    dialect: Dialect,
    key_protect_header: bool,
) -> Response {
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
        response = if dialect == Dialect::KeyProtect {
            (error.status, axum::Json(error.key_protect_body(trace))).into_response()
        } else {
            (error.status, axum::Json(error.body(trace))).into_response()
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
    if let Ok(v) = HeaderValue::from_str(trace) {
        if key_protect_header {
            response
                .headers_mut()
                .insert(KEY_PROTECT_CORRELATION_HEADER, v.clone());
        }
        response.headers_mut().insert(CORRELATION, v);
    }
    response
}

/// The edge of the application, which every call passes: it resolves the call's operation
/// once, gives it a correlation id, and renders its errors in the operation's dialect. Behind
/// it the router serves every call — through `gate`, in the audit scope (which holds the
/// call's deadline), after authentication and admission — except the data plane's key operations (`wrap`, `unwrap`…),
/// which the edge hands to their handlers through the same `guarded` steps without the
/// router: its routes and layers box and clone themselves on every call, a large part of the
/// cost of a call this small.
#[derive(Clone)]
struct Front<R> {
    state: AppState,
    routed: R,
}

impl<R> tower::Service<Request> for Front<R>
where
    R: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    R::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.routed.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let resolved = self
            .state
            .operations
            .resolve(req.method(), req.uri().path());
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let operation = resolved.operation.clone();
        let dialect = resolved.operation.dialect;
        let fast = fast_path(&req, &resolved);
        let (trace, key_protect_header) = correlation_id(&req, dialect);
        // The data plane's calls get what the router's get from the request's extensions
        // directly (an insert each is a noticeable part of a call this small).
        let metrics = self.state.metrics.clone();
        let next = match fast {
            Some(call) => Onward::DataPlane(self.state.clone(), call, resolved, trace.clone(), req),
            None => {
                req.extensions_mut().insert(Trace(trace.clone()));
                req.extensions_mut().insert(resolved);
                Onward::Router(self.routed.call(req))
            }
        };
        // One boxed future per call: the data plane's calls are small enough for a second one
        // to show.
        Box::pin(async move {
            let response = match next {
                Onward::DataPlane(state, call, resolved, trace, req) => {
                    guarded(&state, &resolved, trace, req, |req| {
                        routes::serve_data_plane_call(state.clone(), call, req)
                    })
                    .await
                }
                Onward::Router(routed) => match routed.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
            };
            let response = with_correlation(response, &trace, dialect, key_protect_header);
            metrics.observe(
                &operation,
                &method,
                response.status().as_u16(),
                started.elapsed(),
            );
            Ok(response)
        })
    }
}

/// Where the edge sends a call. It lives inside the call's one boxed future, so its size is
/// allocated once either way.
#[allow(clippy::large_enum_variant)]
enum Onward<F> {
    DataPlane(
        AppState,
        routes::DataPlaneCall,
        operation::Resolved,
        String,
        Request,
    ),
    Router(F),
}

/// The data-plane call the edge serves itself: a key operation of the data plane, sent as is
/// (a compressed body takes the router, which inflates it) to a key named by a plain UUID (any
/// other spelling takes the router, which answers it the same way).
fn fast_path(req: &Request, resolved: &operation::Resolved) -> Option<routes::DataPlaneCall> {
    let action = resolved.operation.data_plane?;
    if req.method() != axum::http::Method::POST
        || req.headers().contains_key(header::CONTENT_ENCODING)
    {
        return None;
    }
    Some(routes::DataPlaneCall {
        action,
        key: resolved.id.filter(|_| resolved.plain_id)?,
    })
}
