//! Signing in with an API key (exchanged for an access token, as the IAM token endpoint does,
//! under the same throttle per address) or a bearer token such as the one `keyplane serve`
//! prints at first start; signing out. Each sign-in is recorded as the token endpoint's calls are.

use std::net::SocketAddr;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use zeroize::Zeroizing;

use keyplane_core::operation::catalog;
use keyplane_core::service::Origin;

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
    /// What the credential is: `api_key` or `token`. Each is tried only as what it is, so a
    /// token never counts as a failed API-key exchange.
    #[serde(default)]
    kind: String,
}

/// What a sign-in credential is, as the user said.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CredentialKind {
    ApiKey,
    Token,
}

/// Why a sign-in was refused.
enum Refusal {
    NotAccepted,
    TooManyAttempts(u64),
    Sealed,
}

/// Longest credential tried, as the API bounds them: an API key, or a bearer token.
const MAX_API_KEY: usize = 512;
const MAX_TOKEN: usize = 4096;

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
    let kind = match form.kind.as_str() {
        "" | "api_key" => CredentialKind::ApiKey,
        "token" => CredentialKind::Token,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                Some("Say whether you sign in with an API key or an access token.".into()),
                secure,
            );
        }
    };
    if credential.is_empty() {
        return page(
            StatusCode::BAD_REQUEST,
            Some("Enter an API key or an access token.".into()),
            secure,
        );
    }
    // Signing in again ends the session this browser had, on the server too.
    if let Some(previous) = console.0.sessions.find(&headers) {
        console.0.sessions.close(&previous.id);
    }
    let client = client.map(|c| c.0.0);
    let (bearer, lifetime) = match sign_in(&console, kind, credential, client).await {
        Ok(signed_in) => signed_in,
        Err(Refusal::NotAccepted) => {
            let what = match kind {
                CredentialKind::ApiKey => "That API key was not accepted.",
                CredentialKind::Token => "That access token was not accepted.",
            };
            return page(StatusCode::UNAUTHORIZED, Some(what.into()), secure);
        }
        Err(Refusal::Sealed) => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Keyplane is sealed: no one can sign in until it is unsealed.".into()),
                secure,
            );
        }
        Err(Refusal::TooManyAttempts(seconds)) => {
            let mut response = page(
                StatusCode::TOO_MANY_REQUESTS,
                Some(format!(
                    "Too many API keys were refused from this address: try again in {seconds} seconds."
                )),
                secure,
            )?;
            if let Ok(v) = seconds.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(response);
        }
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

/// An API key is exchanged for an access token; a token must itself be a bearer token the
/// authenticator accepts.
async fn sign_in(
    console: &Console,
    kind: CredentialKind,
    credential: &str,
    client: Option<SocketAddr>,
) -> Result<(Zeroizing<String>, Duration), Refusal> {
    let (keyplane, auth) = (&console.0.keyplane, &console.0.auth);
    let address = client.map(|c| c.ip());
    if kind == CredentialKind::ApiKey
        && let Err(wait) = keyplane.failed_exchanges().admit(address)
    {
        return Err(Refusal::TooManyAttempts(wait.as_secs().max(1)));
    }
    let origin = Origin {
        initiator: "anonymous".into(),
        correlation_id: session::random_token()[..32].to_owned(),
        source: address,
        target: None,
        request: serde_json::Value::Null,
        deadline: Some(console.0.request_timeout),
    };
    // Refused as the API refuses them: an API key as an unknown key (400, a failure, each one
    // recorded, as the token endpoint records it), a token as unauthenticated (401, a denial).
    let not_accepted = || match kind {
        CredentialKind::ApiKey => {
            keyplane_core::Error::invalid_field("apikey", "the API key was not accepted")
        }
        CredentialKind::Token => {
            keyplane_core::Error::Unauthorized("the access token was not accepted".into())
        }
    };
    let max = match kind {
        CredentialKind::ApiKey => MAX_API_KEY,
        CredentialKind::Token => MAX_TOKEN,
    };
    let checked = keyplane.recorded(&catalog::SIGN_IN, 200, origin, async {
        if credential.len() > max {
            return Err(not_accepted());
        }
        let signed_in = match kind {
            CredentialKind::ApiKey => auth.exchange_api_key(credential).await?.map(|t| {
                (
                    Zeroizing::new(t.access_token),
                    Duration::from_secs(t.expires_in),
                )
            }),
            CredentialKind::Token => auth
                .authenticate(credential)
                .await?
                .map(|_| (Zeroizing::new(credential.to_owned()), BEARER_SESSION)),
        };
        let signed_in = signed_in.ok_or_else(not_accepted)?;
        if let Some(identity) = auth.authenticate(&signed_in.0).await? {
            keyplane_core::audit::name_initiator(&identity.actor.0);
        }
        Ok(signed_in)
    });
    match checked.await {
        Ok(signed_in) => Ok(signed_in),
        Err(keyplane_core::Error::Sealed) => Err(Refusal::Sealed),
        Err(keyplane_core::Error::Invalid { .. } | keyplane_core::Error::Unauthorized(_)) => {
            if kind == CredentialKind::ApiKey {
                keyplane.failed_exchanges().failed(address);
            }
            Err(Refusal::NotAccepted)
        }
        Err(e) => {
            tracing::warn!(error = %e, "a console sign-in could not be checked");
            Err(Refusal::NotAccepted)
        }
    }
}

/// Signing out ends the session on the server whatever the form carried (its CSRF token is not
/// needed): ending a session harms no one, and a cookie only cleared in the browser could still
/// be replayed.
pub(crate) async fn logout(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(session) = console.0.sessions.find(&headers) {
        console.0.sessions.close(&session.id);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(v) = set_cookie(SESSION_COOKIE, "", console.0.secure, Some(0)).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}
