//! The web console at `/ui`: server-rendered pages for key custodians.
//!
//! Every page reads and acts through core's services, as the signed-in user's caller and with
//! core's typed requests, each call one operation of `operation::catalog` run in its audit scope
//! (`Keyplane::recorded`): each permission check, lifecycle rule and audit event is the one the
//! API applies to the same operation; the console only renders. Pages work without JavaScript;
//! `console.js` only makes confirmation dialogs modal.

mod pages;
mod session;
mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keyplane_core::audit::Target;
use keyplane_core::authn::Authenticator;
use keyplane_core::authz::Caller;
use keyplane_core::operation::Operation;
use keyplane_core::service::{Keyplane, Origin};
use serde::Deserialize;
use serde_json::Value;

use session::{Flash, Sessions, SignedIn};

/// Forms are small: a connection's fields at most.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub struct ConsoleSettings {
    /// Served over TLS: cookies get `Secure`.
    pub secure_cookies: bool,
    /// How long each call a page makes may take, as the API's calls.
    pub request_timeout: std::time::Duration,
}

#[derive(Clone)]
pub(crate) struct Console(Arc<Inner>);

pub(crate) struct Inner {
    keyplane: Keyplane,
    auth: Arc<dyn Authenticator>,
    sessions: Sessions,
    secure: bool,
    request_timeout: std::time::Duration,
}

/// The console's routes, over the node's services and the authenticator its API uses.
pub fn router(
    keyplane: Keyplane,
    auth: Arc<dyn Authenticator>,
    settings: ConsoleSettings,
) -> Router {
    let console = Console(Arc::new(Inner {
        keyplane,
        auth,
        sessions: Sessions::default(),
        secure: settings.secure_cookies,
        request_timeout: settings.request_timeout,
    }));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/keystores") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/keystores") }))
        .route("/ui/static/console.css", get(stylesheet))
        .route("/ui/static/console.js", get(script))
        .route(
            "/ui/login",
            get(pages::login::form).post(pages::login::submit),
        )
        .route("/ui/logout", post(pages::login::logout))
        .merge(pages::keystores::routes())
        .merge(pages::keys::routes())
        .merge(pages::templates::routes())
        .merge(pages::vaults::routes())
        .route("/ui/audit", get(pages::audit::list))
        .route("/ui/{*rest}", axum::routing::any(unknown_page))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(protect))
        .with_state(console)
}

async fn stylesheet() -> Response {
    static_file("text/css", include_str!("../static/console.css"))
}

async fn script() -> Response {
    static_file("text/javascript", include_str!("../static/console.js"))
}

fn static_file(kind: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        text,
    )
        .into_response()
}

/// Headers that keep the console's pages out of frames, caches and other origins' scripts.
async fn protect(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A signed-in user's request: its session, the caller its token names now, the browser's
/// address and the request's correlation id.
pub(crate) struct User {
    console: Console,
    session: SignedIn,
    caller: Caller,
    client: Option<SocketAddr>,
    correlation_id: String,
}

impl FromRequestParts<Console> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let Some(session) = console.0.sessions.find(&parts.headers) else {
            return Err(Redirect::to("/ui/login").into_response());
        };
        // The token is checked on every request, so a revoked key or changed policy applies at
        // once; a token no longer accepted ends the session.
        match console.0.auth.authenticate(&session.bearer).await {
            Ok(Some(identity)) => {
                // A page counts as one call against the caller's rate, shared with the API.
                if let Err(wait) = console.0.keyplane.call_rate().admit(&identity.actor.0) {
                    return Err(too_many(wait));
                }
                Ok(User {
                    console: console.clone(),
                    session,
                    caller: identity.into_caller(),
                    client,
                    correlation_id: session::random_token()[..32].to_owned(),
                })
            }
            Ok(None) => {
                console.0.sessions.close(&session.id);
                Err(PageError::SignedOut.into_response())
            }
            Err(e) => Err(PageError::Api(Box::new(Problem::from(e))).into_response()),
        }
    }
}

/// 429 with `Retry-After`: the caller is over its call rate.
fn too_many(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = PageError::Api(Box::new(Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "You are making calls faster than your call rate allows. Wait a moment and reload.",
    )))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// What every page's frame shows: the section, the CSRF token for its forms, a notice.
pub(crate) struct Chrome {
    pub section: &'static str,
    pub csrf: String,
    pub flash: Option<Flash>,
}

/// Why core refused an operation, as the user is told it.
#[derive(Debug)]
pub(crate) struct Problem {
    pub status: StatusCode,
    pub message: String,
    /// Core's error, for pages that show more of it (the keys blocking a disconnect).
    pub cause: Option<keyplane_core::Error>,
}

impl Problem {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Problem {
            status,
            message: message.into(),
            cause: None,
        }
    }
}

impl From<keyplane_core::Error> for Problem {
    fn from(e: keyplane_core::Error) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &e {
            keyplane_core::Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "An internal error occurred; the server log has the details.".to_owned()
            }
            keyplane_core::Error::Invalid {
                target: Some(target),
                ..
            } => format!("{e} ({})", target.name),
            _ => e.to_string(),
        };
        Problem {
            status,
            message,
            cause: Some(e),
        }
    }
}

/// Why a page could not be shown.
pub(crate) enum PageError {
    /// The session's token is no longer accepted.
    SignedOut,
    Api(Box<Problem>),
    Render,
}

impl From<Problem> for PageError {
    fn from(p: Problem) -> Self {
        if p.status == StatusCode::UNAUTHORIZED {
            PageError::SignedOut
        } else {
            PageError::Api(Box::new(p))
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        tracing::error!(error = %e, "a console page failed to render");
        PageError::Render
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignedOut => Redirect::to("/ui/login?expired=1").into_response(),
            PageError::Api(p) => {
                let page = pages::ErrorPage {
                    chrome: Chrome {
                        section: "",
                        csrf: String::new(),
                        flash: None,
                    },
                    status: p.status.as_u16(),
                    message: p.message,
                };
                match askama::Template::render(&page) {
                    Ok(html) => (p.status, Html(html)).into_response(),
                    Err(_) => (p.status, "the console could not show this error").into_response(),
                }
            }
            PageError::Render => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the console could not render this page",
            )
                .into_response(),
        }
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

impl User {
    pub fn keyplane(&self) -> &Keyplane {
        &self.console.0.keyplane
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The call's origin; `request` is what the user asked (null for reads).
    fn origin(&self, target: Option<Target>, request: Value) -> Origin {
        let request = if request.is_null() {
            serde_json::json!({ "via": "console" })
        } else {
            serde_json::json!({ "via": "console", "body": request })
        };
        Origin {
            initiator: self.caller.actor.0.clone(),
            correlation_id: self.correlation_id.clone(),
            source: self.client.map(|c| c.ip()),
            target,
            request,
            deadline: Some(self.console.0.request_timeout),
        }
    }

    /// Reads through `operation` (of `target`, when it reads one resource); a refusal is the
    /// page's answer.
    pub async fn read<T>(
        &self,
        operation: &Operation,
        target: Option<Target>,
        call: impl Future<Output = keyplane_core::Result<T>>,
    ) -> Result<T, PageError> {
        self.keyplane()
            .recorded(operation, 200, self.origin(target, Value::Null), call)
            .await
            .map_err(|e| PageError::from(Problem::from(e)))
    }

    /// A change through `operation` (of `target`, when it changes one resource), recorded with
    /// `request` (what the user asked, as the trail shows it); a refusal comes back to the
    /// page, to be shown on it. Everything the change needs checked is checked inside `call`,
    /// so a refusal of the form is recorded as the API records a refused body.
    pub async fn change<T>(
        &self,
        operation: &Operation,
        success_status: u16,
        target: Option<Target>,
        request: Value,
        call: impl Future<Output = keyplane_core::Result<T>>,
    ) -> Result<T, Problem> {
        self.keyplane()
            .recorded(
                operation,
                success_status,
                self.origin(target, request),
                call,
            )
            .await
            .map_err(Problem::from)
    }

    /// The page frame; takes the pending notice.
    pub fn chrome(&self, section: &'static str) -> Chrome {
        Chrome {
            section,
            csrf: self.session.csrf.clone(),
            flash: self.console.0.sessions.take_flash(&self.session.id),
        }
    }

    /// Redirects to `to`, with a notice for the next page.
    pub fn done(&self, to: &str, text: impl Into<String>) -> Response {
        self.console.0.sessions.flash(
            &self.session.id,
            Flash {
                error: false,
                text: text.into(),
            },
        );
        Redirect::to(to).into_response()
    }

    pub fn failed(&self, to: &str, text: impl Into<String>) -> Response {
        self.console.0.sessions.flash(
            &self.session.id,
            Flash {
                error: true,
                text: text.into(),
            },
        );
        Redirect::to(to).into_response()
    }

    /// Accepts a form only with this session's CSRF token.
    pub fn check_csrf(&self, sent: &str) -> Result<(), PageError> {
        if session::same_secret(sent, &self.session.csrf) {
            Ok(())
        } else {
            Err(PageError::Api(Box::new(Problem::new(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from the console. Reload the page and try \
                 again.",
            ))))
        }
    }
}

/// A resource id from a console path, as the UUID it must be (the console's 404 page
/// otherwise).
pub(crate) fn page_id(raw: &str) -> Result<uuid::Uuid, PageError> {
    uuid::Uuid::parse_str(raw).map_err(|_| no_such_page())
}

pub(crate) fn no_such_page() -> PageError {
    PageError::Api(Box::new(Problem::new(
        StatusCode::NOT_FOUND,
        "There is no such page.",
    )))
}

/// Any other path under `/ui`: the console's own 404 page, with its protective headers.
async fn unknown_page() -> Response {
    no_such_page().into_response()
}

/// A form that carries its CSRF token and the ETag of what the page showed.
#[derive(Deserialize)]
pub(crate) struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etag: String,
}

/// The resource a call names, as the trail names it.
pub(crate) fn target(resource: &'static str, id: uuid::Uuid) -> Option<Target> {
    Some(Target { resource, id })
}

pub(crate) fn render(page: &impl askama::Template) -> PageResult {
    Ok(Html(page.render()?).into_response())
}

pub(crate) fn render_status(status: StatusCode, page: &impl askama::Template) -> PageResult {
    Ok((status, Html(page.render()?)).into_response())
}
