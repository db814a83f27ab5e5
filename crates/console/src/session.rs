//! Console sessions: a random id in an HttpOnly, SameSite=Strict cookie names a server-side
//! session holding the signed-in user's bearer token and the session's CSRF token. The token
//! never reaches the browser.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use zeroize::Zeroizing;

pub(crate) const SESSION_COOKIE: &str = "keyplane_session";
/// Double-submit cookie guarding the sign-in form, which comes before any session.
pub(crate) const LOGIN_COOKIE: &str = "keyplane_login";
/// A session ends after this long without a request, or when its token expires.
const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// More sessions than this and the oldest idle ones are dropped first.
const MAX_SESSIONS: usize = 10_000;

/// A notice shown once, on the next page.
#[derive(Clone)]
pub(crate) struct Flash {
    pub error: bool,
    pub text: String,
}

struct Session {
    bearer: Zeroizing<String>,
    csrf: String,
    expires: Instant,
    last_seen: Instant,
    flash: Option<Flash>,
}

/// What a request of a signed-in user carries.
#[derive(Clone)]
pub(crate) struct SignedIn {
    pub id: String,
    pub bearer: Zeroizing<String>,
    pub csrf: String,
}

#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// 256 random bits, hex: session ids and CSRF tokens.
pub(crate) fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value scoped to the console; `max_age` 0 removes the cookie.
pub(crate) fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

impl Sessions {
    /// Opens a session for `bearer`, valid until the token expires (or idles out).
    pub fn open(&self, bearer: Zeroizing<String>, lifetime: Duration) -> String {
        let now = Instant::now();
        let id = random_token();
        let mut all = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| s.expires > now && now.duration_since(s.last_seen) < IDLE_LIMIT);
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert(
            id.clone(),
            Session {
                bearer,
                csrf: random_token(),
                expires: now + lifetime,
                last_seen: now,
                flash: None,
            },
        );
        id
    }

    /// The live session the request's cookie names, if any.
    pub fn find(&self, headers: &HeaderMap) -> Option<SignedIn> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let now = Instant::now();
        let mut all = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let live = all
            .get(id)
            .is_some_and(|s| s.expires > now && now.duration_since(s.last_seen) < IDLE_LIMIT);
        if !live {
            all.remove(id);
            return None;
        }
        let session = all.get_mut(id)?;
        session.last_seen = now;
        Some(SignedIn {
            id: id.to_owned(),
            bearer: session.bearer.clone(),
            csrf: session.csrf.clone(),
        })
    }

    pub fn close(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub fn flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self
            .by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            s.flash = Some(flash);
        }
    }

    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
            .and_then(|s| s.flash.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only() {
        let sessions = Sessions::default();
        let id = sessions.open(Zeroizing::new("t".into()), Duration::from_secs(60));
        let found = sessions
            .find(&with_cookie(&format!("other=1; {SESSION_COOKIE}={id}")))
            .expect("session");
        assert_eq!(found.bearer.as_str(), "t");
        assert!(
            sessions
                .find(&with_cookie(&format!("{SESSION_COOKIE}=nope")))
                .is_none()
        );
        sessions.close(&id);
        assert!(
            sessions
                .find(&with_cookie(&format!("{SESSION_COOKIE}={id}")))
                .is_none()
        );
    }

    #[test]
    fn an_expired_session_is_gone() {
        let sessions = Sessions::default();
        let id = sessions.open(Zeroizing::new("t".into()), Duration::ZERO);
        assert!(
            sessions
                .find(&with_cookie(&format!("{SESSION_COOKIE}={id}")))
                .is_none()
        );
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let c = set_cookie(SESSION_COOKIE, "abc", true, None);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "abc", false, None).contains("Secure"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abcd", "abcd"));
        assert!(!same_secret("abcd", "abce"));
        assert!(!same_secret("abc", "abcd"));
    }
}
