//! Signing in with an API key (exchanged at `/identity/token`, as IAM clients do) or a bearer
//! token such as the one `keyplane serve` prints at first start; signing out.

use std::net::SocketAddr;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::api::{self, Call};
use crate::session::{self, LOGIN_COOKIE, SESSION_COOKIE, random_token, same_secret, set_cookie};
use crate::{Chrome, Console, PageResult, render_status};

/// A session signed in with a bearer token (not an API key) lasts at most this long.
const BEARER_SESSION: Duration = Duration::from_secs(8 * 3600);
/// The sign-in form's double-submit token is good for this long.
const LOGIN_FORM_SECONDS: u64 = 30 * 60;

#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct LoginPage {
    chrome: Chrome,
    message: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    expired: Option<String>,
}

fn page(status: StatusCode, message: Option<String>, secure: bool) -> PageResult {
    let token = random_token();
    let mut response = render_status(
        status,
        &LoginPage {
            chrome: Chrome {
                section: "login",
                csrf: token.clone(),
                flash: None,
            },
            message,
        },
    )?;
    if let Ok(v) = set_cookie(LOGIN_COOKIE, &token, secure, Some(LOGIN_FORM_SECONDS)).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

pub(crate) async fn form(
    State(console): State<Console>,
    Query(q): Query<LoginQuery>,
) -> PageResult {
    let message = q
        .expired
        .map(|_| "Your session has ended. Sign in again.".to_owned());
    page(StatusCode::OK, message, console.0.secure)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    credential: String,
}

pub(crate) async fn submit(
    State(console): State<Console>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let secure = console.0.secure;
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(&form.csrf, expected) {
        return page(
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired. Try again.".into()),
            secure,
        );
    }
    let credential = Zeroizing::new(form.credential);
    let credential = credential.trim();
    if credential.is_empty() {
        return page(
            StatusCode::BAD_REQUEST,
            Some("Enter an API key or an access token.".into()),
            secure,
        );
    }
    let client = client.map(|c| c.0.0);
    let Some((bearer, lifetime)) = sign_in(&console, credential, client).await else {
        return page(
            StatusCode::UNAUTHORIZED,
            Some("That API key or token was not accepted.".into()),
            secure,
        );
    };
    let id = console.0.sessions.open(bearer, lifetime);
    let mut response = Redirect::to("/ui/keystores").into_response();
    for cookie in [
        set_cookie(SESSION_COOKIE, &id, secure, None),
        set_cookie(LOGIN_COOKIE, "", secure, Some(0)),
    ] {
        if let Ok(v) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

/// An API key is exchanged for an access token; anything else must itself be a bearer token the
/// API accepts.
async fn sign_in(
    console: &Console,
    credential: &str,
    client: Option<SocketAddr>,
) -> Option<(Zeroizing<String>, Duration)> {
    let api = &console.0.api;
    let form = serde_urlencoded::to_string([
        ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
        ("apikey", credential),
    ])
    .ok()?;
    let mut exchange = Call::new(Method::POST, "/identity/token");
    exchange.form = Some(form);
    exchange.client = client;
    if let Ok(answer) = api::send(api, exchange).await
        && let Some(token) = answer.body["access_token"].as_str()
    {
        let seconds = answer.body["expires_in"].as_u64().unwrap_or(3600);
        return Some((
            Zeroizing::new(token.to_owned()),
            Duration::from_secs(seconds),
        ));
    }
    let mut probe = Call::new(Method::GET, "/api/v4/vaults?limit=1");
    probe.bearer = Some(credential);
    probe.client = client;
    // A 403 still means the token was recognised: the caller may lack the right to list.
    let recognised = match api::send(api, probe).await {
        Ok(_) => true,
        Err(p) => p.status == StatusCode::FORBIDDEN,
    };
    recognised.then(|| (Zeroizing::new(credential.to_owned()), BEARER_SESSION))
}

pub(crate) async fn logout(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<crate::CsrfOnly>,
) -> Response {
    if let Some(session) = console.0.sessions.find(&headers)
        && same_secret(&form.csrf, &session.csrf)
    {
        console.0.sessions.close(&session.id);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(v) = set_cookie(SESSION_COOKIE, "", console.0.secure, Some(0)).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}
