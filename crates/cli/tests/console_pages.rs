//! The web console over plain HTTP, as a browser without JavaScript sees it: sign-in, the
//! session cookie, CSRF protection, the API's own permission checks and error messages.

mod common;

use common::{TOKEN, create_key, id, principal_with_api_key, setup, start};
use keyplane_testkit::process::Server;
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE, X_FRAME_OPTIONS,
};

fn browser() -> reqwest::Client {
    let _ = keyplane_testkit::http_client();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` among a response's `Set-Cookie` headers, with its attributes.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap()
}

/// The `value` of the first hidden `csrf` input of a page.
fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// Submits the sign-in form with `credential` as `kind`, sending `cookies` beside the form's own.
async fn submit_sign_in(
    server: &Server,
    http: &reqwest::Client,
    credential: &str,
    kind: &str,
    cookies: &str,
) -> reqwest::Response {
    let form = http
        .get(format!("{}/ui/login", server.base))
        .send()
        .await
        .unwrap();
    let login_cookie = cookie_value(&set_cookie(&form, "keyplane_login").expect("login cookie"));
    let csrf = csrf_of(&form.text().await.unwrap());
    http.post(format!("{}/ui/login", server.base))
        .header(COOKIE, format!("{cookies}keyplane_login={login_cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("credential", credential),
            ("kind", kind),
        ])
        .send()
        .await
        .unwrap()
}

/// Signs in with `credential` (the admin token as a token, anything else as an API key);
/// returns the session cookie header value.
async fn sign_in(server: &Server, http: &reqwest::Client, credential: &str) -> String {
    let kind = if credential == TOKEN {
        "token"
    } else {
        "api_key"
    };
    let answer = submit_sign_in(server, http, credential, kind, "").await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&answer, "keyplane_session").expect("session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    // Plain HTTP here: Secure would keep the browser from sending it back.
    assert!(!session.contains("Secure"), "{session}");
    format!("keyplane_session={}", cookie_value(&session))
}

async fn page(server: &Server, http: &reqwest::Client, session: &str, path: &str) -> String {
    let r = http
        .get(format!("{}{path}", server.base))
        .header(COOKIE, session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn signing_in_needs_a_valid_credential_and_the_form_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = browser();

    let signed_out = http
        .get(format!("{}/ui/keystores", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_out.headers()[LOCATION], "/ui/login");

    // Without the sign-in form's token, nothing is even tried.
    let forged = http
        .post(format!("{}/ui/login", server.base))
        .form(&[("csrf", "x"), ("credential", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "keyplane_session").is_none());

    let form = http
        .get(format!("{}/ui/login", server.base))
        .send()
        .await
        .unwrap();
    let login_cookie = cookie_value(&set_cookie(&form, "keyplane_login").unwrap());
    let csrf = csrf_of(&form.text().await.unwrap());
    let wrong = http
        .post(format!("{}/ui/login", server.base))
        .header(COOKIE, format!("keyplane_login={login_cookie}"))
        .form(&[("csrf", csrf.as_str()), ("credential", "no-such-key")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&wrong, "keyplane_session").is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("API key was not accepted")
    );

    // The admin token works, and so does an API key; each page carries protective headers.
    let session = sign_in(&server, &http, TOKEN).await;
    let apikey =
        principal_with_api_key(&server.client(), "manager-1", "user", &[("manager", None)]).await;
    let reader = sign_in(&server, &http, &apikey).await;
    for s in [&session, &reader] {
        let r = http
            .get(format!("{}/ui/keystores", server.base))
            .header(COOKIE, s.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[X_FRAME_OPTIONS], "DENY");
        assert!(
            r.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
    // Signing out ends the session on the server.
    let html = page(&server, &http, &session, "/ui/vaults").await;
    let out = http
        .post(format!("{}/ui/logout", server.base))
        .header(COOKIE, session.as_str())
        .form(&[("csrf", csrf_of(&html).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = http
        .get(format!("{}/ui/vaults", server.base))
        .header(COOKIE, session.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);

    // A sign-out without the form's token still ends the session on the server.
    let session = sign_in(&server, &http, TOKEN).await;
    http.post(format!("{}/ui/logout", server.base))
        .header(COOKIE, session.as_str())
        .form(&[("csrf", "not-the-token")])
        .send()
        .await
        .unwrap();
    let replayed = http
        .get(format!("{}/ui/vaults", server.base))
        .header(COOKIE, session.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(
        replayed.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
    // Signing in again ends the session the browser had.
    let first = sign_in(&server, &http, TOKEN).await;
    let again = submit_sign_in(&server, &http, TOKEN, "token", &format!("{first}; ")).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let stale = http
        .get(format!("{}/ui/vaults", server.base))
        .header(COOKIE, first.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        StatusCode::SEE_OTHER,
        "the first session ended"
    );

    // Token sign-ins are never tried as API keys: many of them leave API-key sign-in open.
    for _ in 0..12 {
        sign_in(&server, &http, TOKEN).await;
    }
    let reader = sign_in(&server, &http, &apikey).await;
    page(&server, &http, &reader, "/ui/vaults").await;
    // Refused API keys are throttled, and the page says so with 429.
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        let refused = submit_sign_in(&server, &http, "kp-no-such-key", "api_key", "").await;
        last = refused.status();
        if last == StatusCode::TOO_MANY_REQUESTS {
            assert!(refused.headers().contains_key("retry-after"));
            assert!(refused.text().await.unwrap().contains("Too many API keys"));
            break;
        }
        assert_eq!(last, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);

    // Unknown console paths and ids that are not UUIDs get the console's own 404 page, with its
    // protective headers.
    let admin = sign_in(&server, &http, TOKEN).await;
    for path in [
        "/ui/no-such-page",
        "/ui/keys/a%20b",
        "/ui/keystores/..%2Fvaults/edit",
    ] {
        let r = http
            .get(format!("{}{path}", server.base))
            .header(COOKIE, admin.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.headers()[X_FRAME_OPTIONS], "DENY", "{path}");
        assert!(
            r.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_form_without_its_token_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = browser();
    let session = sign_in(&server, &http, TOKEN).await;

    let forged = http
        .post(format!("{}/ui/vaults/new", server.base))
        .header(COOKIE, session.as_str())
        .form(&[("csrf", "forged"), ("name", "evil")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("did not come from the console")
    );
    let vaults = server
        .client()
        .get("/api/v4/vaults?name=evil")
        .await
        .unwrap();
    assert_eq!(vaults.body["total_count"], 0, "{}", vaults.body);

    let html = page(&server, &http, &session, "/ui/vaults/new").await;
    let made = http
        .post(format!("{}/ui/vaults/new", server.base))
        .header(COOKIE, session.as_str())
        .form(&[("csrf", csrf_of(&html).as_str()), ("name", "finance")])
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let listed = page(&server, &http, &session, "/ui/vaults").await;
    assert!(listed.contains("Vault finance created."), "{listed}");
    assert!(listed.contains(">finance</a>"), "{listed}");
}

#[tokio::test]
async fn the_api_decides_what_a_user_may_do_and_its_message_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = browser();
    let apikey =
        principal_with_api_key(&server.client(), "reader-2", "user", &[("reader", None)]).await;
    let reader = sign_in(&server, &http, &apikey).await;
    let html = page(&server, &http, &reader, "/ui/vaults/new").await;
    let denied = http
        .post(format!("{}/ui/vaults/new", server.base))
        .header(COOKIE, reader.as_str())
        .form(&[("csrf", csrf_of(&html).as_str()), ("name", "not-mine")])
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body = denied.text().await.unwrap();
    assert!(
        body.contains(r#"class="flash error" role="alert""#),
        "{body}"
    );
    let vaults = server
        .client()
        .get("/api/v4/vaults?name=not-mine")
        .await
        .unwrap();
    assert_eq!(vaults.body["total_count"], 0);

    // Bad input is the API's 400, its message on the form, and the typed values kept.
    let admin = sign_in(&server, &http, TOKEN).await;
    let html = page(&server, &http, &admin, "/ui/vaults/new").await;
    let bad = http
        .post(format!("{}/ui/vaults/new", server.base))
        .header(COOKIE, admin.as_str())
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("name", ""),
            ("description", "kept"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body = bad.text().await.unwrap();
    assert!(body.contains("name"), "{body}");
    assert!(body.contains(r#"value="kept""#), "{body}");
}

#[tokio::test]
async fn the_audit_page_shows_events_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = browser();
    let c = server.client();
    let refused = c
        .post("/api/v4/vaults", &serde_json::json!({"name": ""}))
        .await
        .unwrap();
    assert_eq!(refused.status, 400);
    let made = c
        .post("/api/v4/vaults", &serde_json::json!({"name": "ok"}))
        .await
        .unwrap();
    assert_eq!(made.status, 201);
    let session = sign_in(&server, &http, TOKEN).await;
    let html = page(&server, &http, &session, "/ui/audit").await;
    assert!(html.contains("Chain verified"), "{html}");
    assert!(html.contains("success</span> 201"), "{html}");
    let failures = page(&server, &http, &session, "/ui/audit?outcome=failure").await;
    assert!(failures.contains("failure</span> 400"), "{failures}");
    assert!(!failures.contains("success</span>"), "{failures}");
}

/// The `value` of the first hidden `etag` input of a page.
fn etag_in(html: &str) -> String {
    let marker = r#"name="etag" value=""#;
    let start = html.find(marker).expect("an ETag field") + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
}

/// Posts the confirmation form of the page at `form_page`, with the CSRF token and the ETag of
/// what it showed.
async fn confirm(
    server: &Server,
    http: &reqwest::Client,
    session: &str,
    form_page: &str,
    action: &str,
) -> reqwest::Response {
    let html = page(server, http, session, form_page).await;
    let (csrf, etag) = (csrf_of(&html), etag_in(&html));
    http.post(format!("{}{action}", server.base))
        .header(COOKIE, session)
        .form(&[("csrf", csrf.as_str()), ("etag", etag.as_str())])
        .send()
        .await
        .unwrap()
}

/// Posts a console form with the CSRF token of the page at `form_page`.
async fn submit(
    server: &Server,
    http: &reqwest::Client,
    session: &str,
    form_page: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let html = page(server, http, session, form_page).await;
    let csrf = csrf_of(&html);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    http.post(format!("{}{action}", server.base))
        .header(COOKIE, session)
        .form(&form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn guards_refuse_with_the_apis_reason_and_edits_keep_etags() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    create_key(&c, &vault, "in-use").await;
    let template = c.get("/api/v4/templates?name=T1").await.unwrap();
    let template = id(&template.body["templates"][0]);
    let http = browser();
    let session = sign_in(&server, &http, TOKEN).await;

    // A vault with keys and a template in use are not deleted; the notice says why.
    let refused = confirm(
        &server,
        &http,
        &session,
        &format!("/ui/vaults?delete={vault}"),
        &format!("/ui/vaults/{vault}/delete"),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    let listed = page(&server, &http, &session, "/ui/vaults").await;
    assert!(listed.contains(r#"class="flash error""#), "{listed}");
    assert_eq!(
        c.get(&format!("/api/v4/vaults/{vault}"))
            .await
            .unwrap()
            .status,
        200
    );
    confirm(
        &server,
        &http,
        &session,
        &format!("/ui/templates?confirm=delete&id={template}"),
        &format!("/ui/templates/{template}/delete"),
    )
    .await;
    let listed = page(&server, &http, &session, "/ui/templates").await;
    assert!(listed.contains(r#"class="flash error""#), "{listed}");
    assert_eq!(
        c.get(&format!("/api/v4/templates/{template}"))
            .await
            .unwrap()
            .status,
        200
    );

    // Archive, then unarchive.
    confirm(
        &server,
        &http,
        &session,
        &format!("/ui/templates?confirm=archive&id={template}"),
        &format!("/ui/templates/{template}/archive"),
    )
    .await;
    let t = c
        .get(&format!("/api/v4/templates/{template}"))
        .await
        .unwrap();
    assert_eq!(t.body["state"], "archived", "{}", t.body);
    confirm(
        &server,
        &http,
        &session,
        "/ui/templates",
        &format!("/ui/templates/{template}/unarchive"),
    )
    .await;
    let t = c
        .get(&format!("/api/v4/templates/{template}"))
        .await
        .unwrap();
    assert_eq!(t.body["state"], "unarchived", "{}", t.body);

    // Edits carry the ETag read with the form: a stale one is refused and nothing changes.
    let edit = page(
        &server,
        &http,
        &session,
        &format!("/ui/keystores/{keystore}/edit"),
    )
    .await;
    assert!(edit.contains(r#"name="etag""#), "{edit}");
    let stale = submit(
        &server,
        &http,
        &session,
        &format!("/ui/keystores/{keystore}/edit"),
        &format!("/ui/keystores/{keystore}/edit"),
        &[
            ("etag", "\"stale\""),
            ("name", "renamed"),
            ("groups", "prod"),
        ],
    )
    .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let k = c
        .get(&format!("/api/v4/keystores/{keystore}"))
        .await
        .unwrap();
    assert_eq!(k.body["name"], "internal-1");
    let etag = k.etag.clone();
    let saved = submit(
        &server,
        &http,
        &session,
        &format!("/ui/keystores/{keystore}/edit"),
        &format!("/ui/keystores/{keystore}/edit"),
        &[
            ("etag", etag.as_str()),
            ("name", "renamed"),
            ("groups", "prod, eu"),
        ],
    )
    .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let k = c
        .get(&format!("/api/v4/keystores/{keystore}"))
        .await
        .unwrap();
    assert_eq!(k.body["name"], "renamed");
    assert_eq!(k.body["groups"], serde_json::json!(["prod", "eu"]));
}

#[tokio::test]
async fn a_refused_key_creation_answers_with_the_apis_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    setup(&c, "active", "aes", "256").await;
    let template = c.get("/api/v4/templates?name=T1").await.unwrap();
    let template = id(&template.body["templates"][0]);
    // A manager reads and lists, but may not create keys.
    let apikey = principal_with_api_key(&c, "manager-2", "user", &[("manager", None)]).await;
    let http = browser();
    let manager = sign_in(&server, &http, &apikey).await;
    let denied = submit(
        &server,
        &http,
        &manager,
        "/ui/keys/new",
        "/ui/keys/new",
        &[("template", template.as_str()), ("label", "not-allowed")],
    )
    .await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body = denied.text().await.unwrap();
    assert!(body.contains(r#"value="not-allowed""#), "{body}");
    let keys = c
        .get("/api/v4/managed_keys?label=not-allowed")
        .await
        .unwrap();
    assert_eq!(keys.body["total_count"], 0, "{}", keys.body);
}

/// The audit events of `action`, as the API lists them.
async fn events_of(c: &keyplane_testkit::process::Client, action: &str) -> Vec<serde_json::Value> {
    let events = c
        .get(&format!("/api/v4/audit_events?action={action}&limit=100"))
        .await
        .unwrap();
    events.body["audit_events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_console_removes_nothing_core_keeps_and_records_what_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, _) = setup(&c, "pre_activation", "aes", "256").await;
    let key = id(&create_key(&c, &vault, "waiting").await);
    let http = browser();
    let session = sign_in(&server, &http, TOKEN).await;

    // A pre-active key is offered no Remove, and a forged one is refused: the key stays.
    let details = page(&server, &http, &session, &format!("/ui/keys/{key}")).await;
    assert!(!details.contains("/remove"), "{details}");
    let forged = submit(
        &server,
        &http,
        &session,
        &format!("/ui/keys/{key}"),
        &format!("/ui/keys/{key}/remove"),
        &[(
            "etag",
            c.get(&format!("/api/v4/managed_keys/{key}"))
                .await
                .unwrap()
                .etag
                .as_str(),
        )],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::CONFLICT);
    let kept = c.get(&format!("/api/v4/managed_keys/{key}")).await.unwrap();
    assert_eq!(kept.status, 200);
    assert_eq!(kept.body["state"], "pre_activation");
    // The refusal is in the trail as the API's own call would be, naming the console.
    let refused = events_of(&c, "keyplane.managed-keys.delete").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["outcome"], "failure");
    assert_eq!(refused[0]["status"], 409);
    assert_eq!(refused[0]["request"]["via"], "console");

    // Destroyed through the console, the key can go; each change is one event, with the key.
    for action in ["destroy", "remove"] {
        let etag = c
            .get(&format!("/api/v4/managed_keys/{key}"))
            .await
            .unwrap()
            .etag;
        let done = submit(
            &server,
            &http,
            &session,
            &format!("/ui/keys/{key}"),
            &format!("/ui/keys/{key}/{action}"),
            &[("etag", etag.as_str())],
        )
        .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER, "{action}");
    }
    assert_eq!(
        c.get(&format!("/api/v4/managed_keys/{key}"))
            .await
            .unwrap()
            .status,
        404
    );
    let removed = events_of(&c, "keyplane.managed-keys.delete").await;
    let success = removed
        .iter()
        .find(|e| e["outcome"] == "success")
        .expect("the removal is recorded");
    assert_eq!(success["status"], 204);
    assert_eq!(success["target"], format!("managed_keys/{key}"));
    assert_eq!(success["request"]["via"], "console");
}

#[tokio::test]
async fn a_changed_policy_applies_to_a_signed_in_user_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let apikey =
        principal_with_api_key(&c, "custodian-3", "user", &[("administrator", None)]).await;
    let http = browser();
    let session = sign_in(&server, &http, &apikey).await;
    page(&server, &http, &session, "/ui/vaults").await;

    // Its only policy goes: the same session is refused on its next page, and the refusal is
    // recorded as a denial of that user.
    let policies = c.get("/api/v4/access/policies").await.unwrap();
    let principals = c.get("/api/v4/access/principals").await.unwrap();
    let principal = principals.body["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "custodian-3")
        .map(id)
        .unwrap();
    let policy = policies.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["principal_id"].as_str() == Some(principal.as_str()))
        .map(id)
        .expect("the principal's policy");
    let removed = c
        .send(
            "DELETE",
            &format!("/api/v4/access/policies/{policy}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(removed.status, 204);
    let refused = http
        .get(format!("{}/ui/vaults", server.base))
        .header(COOKIE, session.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let denied = events_of(&c, "keyplane.vaults.list").await;
    assert!(
        denied
            .iter()
            .any(|e| e["outcome"] == "denied" && e["initiator"] == "custodian-3"),
        "{denied:?}"
    );
}

#[tokio::test]
async fn refused_forms_sign_ins_and_odd_queries_answer_as_the_api_would() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = common::new_vault(&c).await;
    let http = browser();

    // A refused API key is one failed exchange in the trail, as at the token endpoint.
    let refused = submit_sign_in(&server, &http, "not-a-key", "api_key", "").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let exchanges = events_of(&c, "keyplane.identity.token").await;
    assert!(
        exchanges
            .iter()
            .any(|e| e["outcome"] == "failure" && e["status"] == 400),
        "{exchanges:?}"
    );

    // A form core refuses is recorded as the API records a refused body.
    let session = sign_in(&server, &http, TOKEN).await;
    let bad = submit(
        &server,
        &http,
        &session,
        "/ui/templates/new",
        "/ui/templates/new",
        &[
            ("vault", vault.as_str()),
            ("name", "T-bad"),
            ("algorithm", "aes"),
            ("size", "big"),
            ("key_state", "active"),
            ("type_1", "ibm_cloud_kms"),
            ("group_1", "prod"),
        ],
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("key.size"));
    let writes = events_of(&c, "keyplane.key-templates.write").await;
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["outcome"], "failure");
    assert_eq!(writes[0]["request"]["via"], "console");
    assert_eq!(writes[0]["request"]["body"]["name"], "T-bad");

    // Queries out of range are refused, never a server error.
    for (path, status) in [
        (
            "/ui/audit?offset=18446744073709551615",
            StatusCode::NOT_FOUND,
        ),
        (
            "/ui/keys?offset=18446744073709551615",
            StatusCode::NOT_FOUND,
        ),
        ("/ui/vaults?offset=9223372036854775807", StatusCode::OK),
    ] {
        let r = http
            .get(format!("{}{path}", server.base))
            .header(COOKIE, session.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    let long = "x".repeat(300);
    let r = http
        .get(format!("{}/ui/keys?label={long}", server.base))
        .header(COOKIE, session.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_connect_wizard_offers_the_cloud_keystores_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = common::new_vault(&c).await;
    let http = browser();
    let session = sign_in(&server, &http, TOKEN).await;

    let wizard = page(&server, &http, &session, "/ui/keystores/new").await;
    for kind in ["Azure Key Vault", "Google Cloud KMS"] {
        assert!(wizard.contains(kind), "{kind}");
    }
    let azure = page(
        &server,
        &http,
        &session,
        "/ui/keystores/new?kind=azure_key_vault",
    )
    .await;
    for field in [
        "azure_tenant",
        "azure_service_principal_client_id",
        "azure_service_principal_password",
        "azure_vault_url",
    ] {
        assert!(
            azure.contains(&format!("name=\"field.{field}\"")),
            "{field}"
        );
    }
    let google_form = page(
        &server,
        &http,
        &session,
        "/ui/keystores/new?kind=google_kms",
    )
    .await;
    for field in [
        "google_credentials",
        "google_location",
        "google_key_ring",
        "google_kms_endpoint",
    ] {
        assert!(
            google_form.contains(&format!("name=\"field.{field}\"")),
            "{field}"
        );
    }

    // The service-account JSON pasted into its (single-line) field connects the keystore.
    let kms = keyplane_testkit::google::GoogleKms::start("console-prod")
        .await
        .unwrap();
    let pasted = kms.credentials.replace('\n', "");
    let connected = submit(
        &server,
        &http,
        &session,
        "/ui/keystores/new?kind=google_kms",
        "/ui/keystores/new?kind=google_kms",
        &[
            ("vault", vault.as_str()),
            ("name", "google"),
            ("groups", "google"),
            ("intent", "connect"),
            ("field.google_credentials", pasted.as_str()),
            ("field.google_location", "us-east1"),
            ("field.google_key_ring", "console-ring"),
            ("field.google_kms_endpoint", kms.endpoint.as_str()),
            ("field.google_token_url", kms.token_url.as_str()),
        ],
    )
    .await;
    assert_eq!(connected.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        kms.key_rings(),
        ["projects/console-prod/locations/us-east1/keyRings/console-ring"]
    );
    let listed = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(listed.body["keystores"][0]["type"], "google_kms");
    assert!(!listed.body.to_string().contains("PRIVATE KEY"));
}

#[tokio::test]
async fn the_connect_wizard_connects_a_kmip_server_with_pasted_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = common::new_vault(&c).await;
    let http = browser();
    let session = sign_in(&server, &http, TOKEN).await;
    let kmip = keyplane_testkit::kmip::PyKmip::start().await.unwrap();

    let form = page(&server, &http, &session, "/ui/keystores/new?kind=kmip").await;
    // Certificates and the key are pasted into text areas; the key is never shown back.
    for field in ["kmip_ca_cert", "kmip_client_cert", "kmip_client_key"] {
        assert!(
            form.contains(&format!(
                "<textarea id=\"field-{field}\" name=\"field.{field}\""
            )),
            "{field}"
        );
    }
    let port = kmip.port.to_string();
    let ca = kmip.ca.cert_pem();
    let form_with = async |intent: &str, ca_cert: &str| {
        submit(
            &server,
            &http,
            &session,
            "/ui/keystores/new?kind=kmip",
            "/ui/keystores/new?kind=kmip",
            &[
                ("vault", vault.as_str()),
                ("name", "kmip"),
                ("groups", "kmip"),
                ("intent", intent),
                ("field.kmip_host", "127.0.0.1"),
                ("field.kmip_port", port.as_str()),
                ("field.kmip_ca_cert", ca_cert),
                ("field.kmip_client_cert", kmip.client.cert_pem.as_str()),
                ("field.kmip_client_key", kmip.client.key_pem.as_str()),
            ],
        )
        .await
    };
    // A failed test (the client's own certificate given as the CA) shows why and does not
    // show the pasted key back.
    let failed = form_with("test", &kmip.client.cert_pem)
        .await
        .text()
        .await
        .unwrap();
    assert!(failed.contains("not trusted"), "{failed}");
    assert!(!failed.contains("PRIVATE KEY"));
    let connected = form_with("connect", &ca).await;
    assert_eq!(connected.status(), StatusCode::SEE_OTHER);
    let listed = c
        .get(&format!("/api/v4/keystores?vault.id={vault}"))
        .await
        .unwrap();
    assert_eq!(listed.body["keystores"][0]["type"], "kmip");
    assert!(!listed.body.to_string().contains("PRIVATE KEY"));
    let shown = page(
        &server,
        &http,
        &session,
        &format!(
            "/ui/keystores?selected={}",
            listed.body["keystores"][0]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert!(!shown.contains("PRIVATE KEY"));
    kmip.stop().await;
}
