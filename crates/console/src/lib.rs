//! The web console at `/ui`: server-rendered pages for key custodians.
//!
//! Every page reads and acts through the API router, called in process with the signed-in user's
//! bearer token, so each permission check, lifecycle rule and audit event is the API's own; the
//! console only renders. Pages work without JavaScript; `console.js` only makes confirmation
//! dialogs modal.

mod api;
mod pages;
mod session;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use api::{Answer, Call, Problem};
use session::{Flash, Sessions, SignedIn};

/// Forms are small: a connection's fields at most.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub struct ConsoleSettings {
    /// Served over TLS: cookies get `Secure`.
    pub secure_cookies: bool,
}

#[derive(Clone)]
pub(crate) struct Console(Arc<Inner>);

pub(crate) struct Inner {
    api: Router,
    sessions: Sessions,
    secure: bool,
}

/// The console's routes, served beside `api` (the whole API application).
pub fn router(api: Router, settings: ConsoleSettings) -> Router {
    let console = Console(Arc::new(Inner {
        api,
        sessions: Sessions::default(),
        secure: settings.secure_cookies,
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

/// A signed-in user's request: its session and the browser's address.
pub(crate) struct User {
    console: Console,
    session: SignedIn,
    client: Option<SocketAddr>,
}

impl FromRequestParts<Console> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        match console.0.sessions.find(&parts.headers) {
            Some(session) => Ok(User {
                console: console.clone(),
                session,
                client,
            }),
            None => Err(Redirect::to("/ui/login").into_response()),
        }
    }
}

/// What every page's frame shows: the section, the CSRF token for its forms, a notice.
pub(crate) struct Chrome {
    pub section: &'static str,
    pub csrf: String,
    pub flash: Option<Flash>,
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
    fn call<'a>(&'a self, method: Method, path: &'a str) -> Call<'a> {
        let mut call = Call::new(method, path);
        call.bearer = Some(self.session.bearer.as_str());
        call.client = self.client;
        call
    }

    pub async fn get(&self, path: &str) -> Result<Answer, PageError> {
        Ok(api::send(&self.console.0.api, self.call(Method::GET, path)).await?)
    }

    /// A change; a 401 still signs the user out, other problems come back to the page.
    pub async fn change(
        &self,
        method: Method,
        path: &str,
        json: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Result<Answer, Problem>, PageError> {
        let mut call = self.call(method, path);
        call.json = json;
        call.if_match = if_match;
        match api::send(&self.console.0.api, call).await {
            Err(p) if p.status == StatusCode::UNAUTHORIZED => Err(PageError::SignedOut),
            other => Ok(other),
        }
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
                "csrf",
                "This form has expired or did not come from the console. Reload the page and try \
                 again.",
            ))))
        }
    }
}

/// A resource id from a console path, as the UUID it must be (the console's 404 page
/// otherwise): only its canonical form is ever put into an API path.
pub(crate) fn page_id(raw: &str) -> Result<String, PageError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| no_such_page())
}

fn no_such_page() -> PageError {
    PageError::Api(Box::new(Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "There is no such page.",
    )))
}

/// Any other path under `/ui`: the console's own 404 page, with its protective headers.
async fn unknown_page() -> Response {
    no_such_page().into_response()
}

/// A form that carries nothing but its CSRF token.
#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(crate) fn render(page: &impl askama::Template) -> PageResult {
    Ok(Html(page.render()?).into_response())
}

pub(crate) fn render_status(status: StatusCode, page: &impl askama::Template) -> PageResult {
    Ok((status, Html(page.render()?)).into_response())
}
