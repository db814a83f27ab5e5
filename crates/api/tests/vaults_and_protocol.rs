//! Vaults (spec §2 #1–#5, §3.1, §4.1, §6, §7.4) and the cross-cutting protocol (spec §1;
//! decisions.md §1): auth, correlation ids, error bodies, body handling, OpenAPI vs router.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::Request;
use keyplane_testkit::{PUBLIC_URL, TEST_TOKEN, TestApp, TestResponse};
use serde_json::{Value, json};

const VAULTS: &str = "/api/v4/vaults";

fn vpath(id: &str) -> String {
    format!("{VAULTS}/{id}")
}

fn header(r: &TestResponse, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A request exactly as given: no implicit Authorization or Content-Type.
async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> TestResponse {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.send(req.body(Body::from(body)).expect("request")).await
}

fn bearer() -> String {
    format!("Bearer {TEST_TOKEN}")
}

/// The UKO error body: status repeated, trace = X-Correlation-ID, one error with code and message.
#[track_caller]
fn assert_error(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["status_code"], status, "{}", r.body);
    assert_eq!(r.code(), code, "{}", r.body);
    let message = r.body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "a message: {}", r.body);
    let correlation = header(r, "x-correlation-id");
    assert!(
        !correlation.is_empty(),
        "X-Correlation-ID on every response"
    );
    assert_eq!(
        r.body["trace"],
        correlation.as_str(),
        "trace = X-Correlation-ID"
    );
}

fn names(list: &Value) -> Vec<String> {
    list["vaults"]
        .as_array()
        .expect("vaults array")
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_owned())
        .collect()
}

async fn list_names(app: &TestApp, query: &str) -> Vec<String> {
    let r = app.get(&format!("{VAULTS}?{query}")).await;
    assert_eq!(r.status.as_u16(), 200, "?{query}: {}", r.body);
    let got = names(&r.body);
    assert_eq!(
        r.body["total_count"].as_i64(),
        Some(got.len() as i64),
        "total_count of ?{query}: {}",
        r.body
    );
    got
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

// ---- vault CRUD ----

#[tokio::test]
async fn vault_create_get_patch_delete() {
    let app = TestApp::new().await;
    let r = app
        .post(
            VAULTS,
            json!({ "name": "Payments", "description": "card keys", "recovery_key_label": "TEKMF.AES.RECOVERY.00001" }),
        )
        .await
        .expect(201);
    let id = r.id();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{}", r.body);
    assert_eq!(r.body["name"], "Payments");
    assert_eq!(r.body["description"], "card keys");
    assert_eq!(r.body["recovery_key_label"], "TEKMF.AES.RECOVERY.00001");
    assert_eq!(r.body["keys_count"], 0);
    assert_eq!(r.body["key_templates_count"], 0);
    assert_eq!(r.body["keystores_count"], 0);
    let href = format!("{PUBLIC_URL}/api/v4/vaults/{id}");
    assert_eq!(r.body["href"], href.as_str());
    assert_eq!(header(&r, "location"), href);
    let etag = r.etag();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag:?}");

    let g = app.get(&vpath(&id)).await.expect(200);
    assert_eq!(g.etag(), etag);
    assert_eq!(g.body["name"], "Payments");
    assert!(
        g.body["created_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );

    // PATCH needs If-Match.
    let r = app
        .call("PATCH", &vpath(&id), Some(json!({ "name": "Cards" })), &[])
        .await;
    assert_error(&r, 428, "precondition_required");
    let r = app
        .call(
            "PATCH",
            &vpath(&id),
            Some(json!({ "name": "Cards" })),
            &[("if-match", "\"r42-deadbeef\"")],
        )
        .await;
    assert_error(&r, 412, "etag_mismatch");
    assert_eq!(app.get(&vpath(&id)).await.body["name"], "Payments");

    let p = app
        .call(
            "PATCH",
            &vpath(&id),
            Some(json!({ "name": "Cards", "description": "renamed" })),
            &[("if-match", &etag)],
        )
        .await
        .expect(200);
    assert_eq!(p.body["name"], "Cards");
    assert_eq!(p.body["description"], "renamed");
    assert_eq!(p.body["recovery_key_label"], "TEKMF.AES.RECOVERY.00001");
    let etag2 = p.etag();
    assert_ne!(etag2, etag, "PATCH bumps the ETag");
    let g = app.get(&vpath(&id)).await.expect(200);
    assert_eq!(g.etag(), etag2);
    assert_eq!(g.body["name"], "Cards");
    assert_eq!(g.body["description"], "renamed");

    // The old ETag is stale now.
    let r = app
        .call(
            "PATCH",
            &vpath(&id),
            Some(json!({ "description": "again" })),
            &[("if-match", &etag)],
        )
        .await;
    assert_error(&r, 412, "etag_mismatch");

    let r = app.call("DELETE", &vpath(&id), None, &[]).await;
    assert_error(&r, 428, "precondition_required");
    let r = app
        .call("DELETE", &vpath(&id), None, &[("if-match", &etag)])
        .await;
    assert_error(&r, 412, "etag_mismatch");
    let d = app
        .call("DELETE", &vpath(&id), None, &[("if-match", &etag2)])
        .await
        .expect(204);
    assert!(d.body.is_null());
    let r = app.get(&vpath(&id)).await;
    assert_error(&r, 404, "not_found");
}

#[tokio::test]
async fn etags_change_on_every_write_and_accept_weak_and_star() {
    let app = TestApp::new().await;
    let r = app
        .post(VAULTS, json!({ "name": "etags" }))
        .await
        .expect(201);
    let id = r.id();
    let e1 = r.etag();
    let weak = format!("W/{e1}");
    let e2 = app
        .call(
            "PATCH",
            &vpath(&id),
            Some(json!({ "description": "one" })),
            &[("if-match", &weak)],
        )
        .await
        .expect(200)
        .etag();
    let e3 = app
        .call(
            "PATCH",
            &vpath(&id),
            Some(json!({ "description": "two" })),
            &[("if-match", "*")],
        )
        .await
        .expect(200)
        .etag();
    assert!(e1 != e2 && e2 != e3 && e1 != e3, "{e1} {e2} {e3}");
    assert_eq!(app.get(&vpath(&id)).await.body["description"], "two");
}

#[tokio::test]
async fn vault_counts_its_contents() {
    let app = TestApp::new().await;
    let vault = app.vault("counted").await;
    app.internal_keystore(&vault, "ks-a", &["g1"]).await;
    app.template(&vault, "T-A", "aes", "256", "active", "g1")
        .await;
    app.key(&vault, "T-A", "key-a").await.expect(201);
    let g = app.get(&vpath(&vault)).await.expect(200);
    assert_eq!(g.body["keys_count"], 1, "{}", g.body);
    assert_eq!(g.body["key_templates_count"], 1, "{}", g.body);
    assert_eq!(g.body["keystores_count"], 1, "{}", g.body);
    // Lists carry the counts too.
    let l = app.get(VAULTS).await.expect(200);
    assert_eq!(l.body["vaults"][0]["keys_count"], 1, "{}", l.body);
    // Another vault is not affected.
    let other = app.vault("empty").await;
    let g = app.get(&vpath(&other)).await.expect(200);
    assert_eq!(g.body["keys_count"], 0);
    assert_eq!(g.body["keystores_count"], 0);
}

#[tokio::test]
async fn vault_validation_names_the_field() {
    let app = TestApp::new().await;
    let cases = [
        (json!({ "name": " leading-space" }), "name"),
        (json!({ "name": "a".repeat(101) }), "name"),
        (json!({ "name": "" }), "name"),
        (json!({ "name": "bad*char" }), "name"),
        (
            json!({ "name": "ok", "description": "d".repeat(201) }),
            "description",
        ),
    ];
    for (body, target) in cases {
        let r = app.post(VAULTS, body.clone()).await;
        assert_error(&r, 400, "invalid_field");
        assert_eq!(r.target(), target, "{body}: {}", r.body);
        assert_eq!(r.body["errors"][0]["target"]["type"], "field");
    }
    let r = app.post(VAULTS, json!({ "description": "no name" })).await;
    assert_error(&r, 400, "missing_field");
    assert_eq!(r.target(), "name");
    assert_eq!(list_names(&app, "").await, Vec::<String>::new());

    // The limits themselves are fine.
    app.post(
        VAULTS,
        json!({ "name": "a".repeat(100), "description": "d".repeat(200) }),
    )
    .await
    .expect(201);
    app.post(VAULTS, json!({ "name": "#1 vault's keys_-!$%@" }))
        .await
        .expect(201);

    // PATCH validates the same way.
    let id = app.vault("patchable").await;
    for (body, target) in [
        (json!({ "name": " x" }), "name"),
        (json!({ "description": "d".repeat(201) }), "description"),
    ] {
        let r = app.with_etag("PATCH", &vpath(&id), "", Some(body)).await;
        assert_error(&r, 400, "invalid_field");
        assert_eq!(r.target(), target, "{}", r.body);
    }
    assert_eq!(app.get(&vpath(&id)).await.body["name"], "patchable");
}

#[tokio::test]
async fn duplicate_vault_name_is_409() {
    let app = TestApp::new().await;
    app.vault("unique").await;
    let r = app.post(VAULTS, json!({ "name": "unique" })).await;
    assert_error(&r, 409, "duplicate_name");
    let other = app.vault("second").await;
    let r = app
        .with_etag(
            "PATCH",
            &vpath(&other),
            "",
            Some(json!({ "name": "unique" })),
        )
        .await;
    assert_error(&r, 409, "duplicate_name");
    assert_eq!(
        {
            let mut n = list_names(&app, "").await;
            n.sort();
            n
        },
        strs(&["second", "unique"])
    );
}

// ---- vault delete guard ----

async fn delete_vault(app: &TestApp, id: &str) -> TestResponse {
    app.with_etag("DELETE", &vpath(id), "", None).await
}

#[tokio::test]
async fn a_vault_with_a_keystore_cannot_be_deleted() {
    let app = TestApp::new().await;
    let vault = app.vault("with-keystore").await;
    let ks = app.internal_keystore(&vault, "ks", &["g"]).await;
    let r = delete_vault(&app, &vault).await;
    assert_error(&r, 409, "vault_not_empty");
    app.get(&vpath(&vault)).await.expect(200);

    app.with_etag("DELETE", &format!("/api/v4/keystores/{ks}"), "", None)
        .await
        .expect(204);
    delete_vault(&app, &vault).await.expect(204);
    app.get(&vpath(&vault)).await.expect(404);
}

#[tokio::test]
async fn a_vault_with_a_key_cannot_be_deleted_even_when_its_template_is_archived() {
    let app = TestApp::new().await;
    let vault = app.vault("with-key").await;
    let t = app
        .template(&vault, "T-K", "aes", "256", "pre_activation", "nowhere")
        .await;
    let key = app.key(&vault, "T-K", "blocking").await.expect(201).id();
    let tpath = format!("/api/v4/templates/{t}");
    app.with_etag("POST", &tpath, "/archive", None)
        .await
        .expect(200);

    let r = delete_vault(&app, &vault).await;
    assert_error(&r, 409, "vault_not_empty");

    // A destroyed key still blocks: it is removed only by DELETE.
    let kpath = format!("/api/v4/managed_keys/{key}");
    app.with_etag("POST", &kpath, "/destroy", None)
        .await
        .expect(200);
    let r = delete_vault(&app, &vault).await;
    assert_error(&r, 409, "vault_not_empty");

    app.with_etag("DELETE", &kpath, "", None).await.expect(204);
    delete_vault(&app, &vault).await.expect(204);
    app.get(&vpath(&vault)).await.expect(404);
    // The archived template went with the vault.
    let r = app.get(&tpath).await;
    assert_error(&r, 404, "not_found");
}

#[tokio::test]
async fn unarchived_templates_block_and_archived_ones_go_with_the_vault() {
    let app = TestApp::new().await;
    let vault = app.vault("with-templates").await;
    let t1 = app
        .template(&vault, "T-ONE", "aes", "256", "active", "g")
        .await;
    let t2 = app
        .template(&vault, "T-TWO", "hmac", "256", "active", "g")
        .await;
    let p1 = format!("/api/v4/templates/{t1}");
    let p2 = format!("/api/v4/templates/{t2}");
    app.with_etag("POST", &p1, "/archive", None)
        .await
        .expect(200);

    let r = delete_vault(&app, &vault).await;
    assert_error(&r, 409, "vault_not_empty");
    app.get(&p1).await.expect(200);
    app.get(&p2).await.expect(200);

    app.with_etag("POST", &p2, "/archive", None)
        .await
        .expect(200);
    delete_vault(&app, &vault).await.expect(204);
    app.get(&vpath(&vault)).await.expect(404);
    assert_error(&app.get(&p1).await, 404, "not_found");
    assert_error(&app.get(&p2).await, 404, "not_found");
    let l = app.get("/api/v4/templates").await.expect(200);
    assert_eq!(l.body["total_count"], 0, "{}", l.body);
}

// ---- vault lists ----

async fn list_fixture(app: &TestApp) {
    for (name, description) in [
        ("payments", "Card payments keys"),
        ("payroll", "Salary"),
        ("repay", "Refunds of payments"),
        ("hr", "People"),
    ] {
        app.post(VAULTS, json!({ "name": name, "description": description }))
            .await
            .expect(201);
    }
}

#[tokio::test]
async fn vault_list_filters_and_sorts() {
    let app = TestApp::new().await;
    list_fixture(&app).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(list_names(&app, "name=pay").await),
        strs(&["payments", "payroll"]),
        "name is a prefix"
    );
    assert_eq!(list_names(&app, "name=payr").await, strs(&["payroll"]));
    assert_eq!(
        sorted(list_names(&app, "description=payments").await),
        strs(&["payments", "repay"]),
        "description is contained"
    );
    assert!(list_names(&app, "name=zzz").await.is_empty());
    // LIKE wildcards are taken literally.
    assert!(list_names(&app, "name=%25").await.is_empty());
    assert!(list_names(&app, "name=_").await.is_empty());
    assert!(list_names(&app, "description=%25").await.is_empty());
    assert_eq!(
        list_names(&app, "sort=name").await,
        strs(&["hr", "payments", "payroll", "repay"])
    );
    assert_eq!(
        list_names(&app, "sort=-name").await,
        strs(&["repay", "payroll", "payments", "hr"])
    );
    assert_eq!(
        list_names(&app, "name=pay&sort=-name").await,
        strs(&["payroll", "payments"])
    );
    let r = app.get(&format!("{VAULTS}?sort=colour")).await;
    assert_error(&r, 400, "invalid_query_parameter");
    assert_eq!(r.target(), "sort");
    let r = app.get(&format!("{VAULTS}?name={}", "n".repeat(101))).await;
    assert_error(&r, 400, "invalid_query_parameter");
    assert_eq!(r.target(), "name");
}

#[tokio::test]
async fn vault_list_limit_and_offset_are_checked() {
    let app = TestApp::new().await;
    list_fixture(&app).await;
    for (query, target) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-5", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
    ] {
        let r = app.get(&format!("{VAULTS}?{query}")).await;
        assert_error(&r, 400, "invalid_query_parameter");
        assert_eq!(r.target(), target, "?{query}: {}", r.body);
        assert_eq!(r.body["errors"][0]["target"]["type"], "parameter");
    }
    let r = app.get(&format!("{VAULTS}?limit=1000")).await.expect(200);
    assert_eq!(r.body["limit"], 1000);
    assert_eq!(r.body["total_count"], 4);
    let r = app.get(VAULTS).await.expect(200);
    assert_eq!(r.body["limit"], 20, "default limit");
    assert_eq!(r.body["offset"], 0);
}

#[tokio::test]
async fn vault_list_pages() {
    let app = TestApp::new().await;
    list_fixture(&app).await;
    app.vault("zeta").await;
    let p1 = app
        .get(&format!("{VAULTS}?sort=name&limit=2"))
        .await
        .expect(200);
    assert_eq!(p1.body["total_count"], 5);
    assert_eq!(names(&p1.body), strs(&["hr", "payments"]));
    assert!(p1.body.get("previous").is_none(), "{}", p1.body);
    let next = p1.body["next"]["href"].as_str().expect("next").to_owned();
    assert!(next.contains("offset=2"), "{next}");
    assert!(next.starts_with(PUBLIC_URL), "absolute href: {next}");
    let last = p1.body["last"]["href"].as_str().unwrap_or_default();
    assert!(last.contains("offset=4"), "{last}");

    let p2 = app
        .get(next.strip_prefix(PUBLIC_URL).expect("absolute"))
        .await
        .expect(200);
    assert_eq!(names(&p2.body), strs(&["payroll", "repay"]));

    let p3 = app
        .get(&format!("{VAULTS}?sort=name&limit=2&offset=4"))
        .await
        .expect(200);
    assert_eq!(names(&p3.body), strs(&["zeta"]));
    assert!(p3.body.get("next").is_none(), "last page: {}", p3.body);
    let prev = p3.body["previous"]["href"].as_str().expect("previous");
    assert!(prev.contains("offset=2"), "{prev}");
}

// ---- protocol: auth ----

#[tokio::test]
async fn missing_or_wrong_credentials_are_401_with_an_error_body() {
    let app = TestApp::new().await;
    let cases: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", "Bearer wrong-token")],
        &[("authorization", "Basic dXNlcjpwYXNz")],
        &[("authorization", "Bearer ")],
    ];
    for headers in cases {
        let r = raw(&app, "GET", VAULTS, headers, Vec::new()).await;
        assert_error(&r, 401, "unauthorized");
        let challenge = header(&r, "www-authenticate");
        assert!(
            challenge.starts_with("Bearer"),
            "{headers:?}: {challenge:?}"
        );
    }
    // Writes are refused too, and nothing is stored.
    let r = raw(
        &app,
        "POST",
        VAULTS,
        &[("content-type", "application/json")],
        br#"{"name":"sneaky"}"#.to_vec(),
    )
    .await;
    assert_error(&r, 401, "unauthorized");
    assert!(list_names(&app, "").await.is_empty());

    // The right token works.
    let auth = bearer();
    raw(&app, "GET", VAULTS, &[("authorization", &auth)], Vec::new())
        .await
        .expect(200);
}

#[tokio::test]
async fn health_and_readiness_need_no_auth() {
    let app = TestApp::new().await;
    let r = raw(&app, "GET", "/health", &[], Vec::new())
        .await
        .expect(200);
    assert_eq!(r.body["status"], "ok", "{}", r.body);
    let r = raw(&app, "GET", "/ready", &[], Vec::new())
        .await
        .expect(200);
    assert_eq!(r.body["status"], "ready", "{}", r.body);
    // Only GET: a probe cannot change anything.
    raw(&app, "POST", "/ready", &[], Vec::new())
        .await
        .expect(405);
}

// ---- protocol: correlation ----

#[tokio::test]
async fn correlation_id_is_on_every_response_and_in_every_error() {
    let app = TestApp::new().await;
    let ok = app.get(VAULTS).await.expect(200);
    let generated = header(&ok, "x-correlation-id");
    assert!(!generated.is_empty());
    let other = header(&app.get(VAULTS).await, "x-correlation-id");
    assert_ne!(generated, other, "one id per request");

    let missing = vpath(&uuid::Uuid::new_v4().to_string());
    assert_error(&app.get(&missing).await, 404, "not_found");
    assert_error(
        &app.get("/api/v4/nothing-here").await,
        404,
        "route_not_found",
    );
    assert_error(
        &app.post(VAULTS, json!({ "name": " x" })).await,
        400,
        "invalid_field",
    );

    // A client-supplied id is echoed, on success and in error bodies.
    let r = app
        .call(
            "GET",
            VAULTS,
            None,
            &[("x-correlation-id", "client-trace-42")],
        )
        .await
        .expect(200);
    assert_eq!(header(&r, "x-correlation-id"), "client-trace-42");
    let r = app
        .call(
            "GET",
            &missing,
            None,
            &[("x-correlation-id", "client-trace-43")],
        )
        .await;
    assert_error(&r, 404, "not_found");
    assert_eq!(r.body["trace"], "client-trace-43");
    let r = raw(
        &app,
        "GET",
        VAULTS,
        &[("x-correlation-id", "client-trace-44")],
        Vec::new(),
    )
    .await;
    assert_error(&r, 401, "unauthorized");
    assert_eq!(r.body["trace"], "client-trace-44");

    // An unusable client value (control characters, too long) is replaced, never echoed.
    for bad in ["bad value\twith tab", &"a".repeat(200)] {
        let r = app
            .call("GET", &missing, None, &[("x-correlation-id", bad)])
            .await;
        assert_error(&r, 404, "not_found");
        assert_ne!(header(&r, "x-correlation-id"), bad);
    }
}

// ---- protocol: routing and bodies ----

#[tokio::test]
async fn unknown_path_is_404_route_not_found() {
    let app = TestApp::new().await;
    for path in ["/api/v4/widgets", "/api/v5/vaults", "/nothing"] {
        let r = app.get(path).await;
        assert_error(&r, 404, "route_not_found");
    }
}

#[tokio::test]
async fn wrong_method_is_405_with_an_error_body() {
    let app = TestApp::new().await;
    let id = uuid::Uuid::new_v4().to_string();
    for (method, path) in [
        ("PUT", VAULTS.to_owned()),
        ("DELETE", VAULTS.to_owned()),
        ("POST", vpath(&id)),
        ("GET", format!("/api/v4/managed_keys/{id}/activate")),
    ] {
        let r = app.call(method, &path, None, &[]).await;
        assert_eq!(r.status.as_u16(), 405, "{method} {path}: {}", r.body);
        assert_error(&r, 405, "method_not_allowed");
    }
}

#[tokio::test]
async fn bodies_over_one_mib_are_413() {
    let app = TestApp::new().await;
    let body = json!({ "name": "big", "description": "d".repeat(1024 * 1024 + 16) });
    let r = app.post(VAULTS, body).await;
    assert_error(&r, 413, "payload_too_large");
    assert!(list_names(&app, "").await.is_empty());
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let app = TestApp::new().await;
    let auth = bearer();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let r = raw(
            &app,
            "POST",
            VAULTS,
            &headers,
            br#"{"name":"typed"}"#.to_vec(),
        )
        .await;
        assert_error(&r, 415, "unsupported_media_type");
    }
    assert!(list_names(&app, "").await.is_empty());
    // application/json with a charset is JSON.
    let r = raw(
        &app,
        "POST",
        VAULTS,
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json; charset=utf-8"),
        ],
        br#"{"name":"typed"}"#.to_vec(),
    )
    .await;
    r.expect(201);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::new().await;
    let auth = bearer();
    for body in [&b"{\"name\": "[..], b"not json", b"[1,2", b""] {
        let r = raw(
            &app,
            "POST",
            VAULTS,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            body.to_vec(),
        )
        .await;
        assert_eq!(
            r.status.as_u16(),
            400,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            r.body
        );
        assert_eq!(r.body["status_code"], 400);
        assert!(!r.code().is_empty(), "{}", r.body);
        assert_eq!(r.body["trace"], header(&r, "x-correlation-id").as_str());
    }
    assert!(list_names(&app, "").await.is_empty());
}

#[tokio::test]
async fn wrong_json_type_names_the_field() {
    let app = TestApp::new().await;
    let r = app.post(VAULTS, json!({ "name": 5 })).await;
    assert_error(&r, 400, "invalid_field");
    assert_eq!(r.target(), "name", "{}", r.body);
    let r = app
        .post(
            VAULTS,
            json!({ "name": "ok", "description": ["not", "text"] }),
        )
        .await;
    assert_error(&r, 400, "invalid_field");
    assert_eq!(r.target(), "description", "{}", r.body);
    let vault = app.vault("typed").await;
    let r = app
        .post(
            "/api/v4/managed_keys",
            json!({ "vault": { "id": vault }, "template_name": "T", "label": { "x": 1 } }),
        )
        .await;
    assert_error(&r, 400, "invalid_field");
    assert_eq!(r.target(), "label", "{}", r.body);
}

/// An unknown body field is 400 naming it, and changes nothing; the fields UKO clients of older
/// API versions send (`tags`, the CLI's `keystore_type`) are still accepted.
#[tokio::test]
async fn unknown_body_fields_are_refused_by_name() {
    let app = TestApp::new().await;
    let r = app
        .post(VAULTS, json!({ "name": "strict", "colour": "blue" }))
        .await;
    assert_error(&r, 400, "invalid_field");
    assert_eq!(r.target(), "colour");
    assert_eq!(list_names(&app, "").await, Vec::<String>::new());

    let vault = app.vault("strict").await;
    let keystore = app.internal_keystore(&vault, "ks", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let key = app.key(&vault, "T1", "strict-key").await.expect(201);
    let key_path = format!("/api/v4/managed_keys/{}", key.id());
    let before = app.get(&key_path).await.expect(200).etag();
    let r = app
        .with_etag(
            "PATCH",
            &key_path,
            "",
            Some(json!({ "descripton": "typo" })),
        )
        .await;
    assert_error(&r, 400, "invalid_field");
    assert!(r.message().contains("descripton"), "{}", r.body);
    assert_eq!(
        app.get(&key_path).await.expect(200).etag(),
        before,
        "no new revision"
    );

    // Nested objects too.
    let r = app
        .post(
            "/api/v4/templates",
            json!({ "vault": { "id": vault }, "name": "T2",
                    "key": { "algorithm": "aes", "size": "256", "state": "active", "colour": 1 },
                    "keystores": [{ "type": "ibm_cloud_kms", "group": "g" }] }),
        )
        .await;
    assert_error(&r, 400, "invalid_field");
    assert!(r.message().contains("colour"), "{}", r.body);
    let r = app
        .post(
            "/api/v4/keystores",
            json!({ "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": { "id": vault },
                    "name": "ks2", "colour": "blue" }),
        )
        .await;
    assert_error(&r, 400, "invalid_field");
    assert_eq!(r.target(), "colour");

    // A change names only what can change: a template's vault or state are its creation's.
    let template = app
        .get(&format!("/api/v4/templates?vault.id={vault}&name=T1"))
        .await
        .expect(200)
        .body["templates"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for field in [
        json!({ "vault": { "id": vault } }),
        json!({ "state": "archived" }),
    ] {
        let r = app
            .with_etag(
                "PATCH",
                &format!("/api/v4/templates/{template}"),
                "",
                Some(field),
            )
            .await;
        assert_error(&r, 400, "invalid_field");
    }

    // Legacy fields.
    app.post(
        "/api/v4/managed_keys",
        json!({ "vault": { "id": vault }, "template_name": "T1", "label": "tagged",
                "tags": [{ "name": "team", "value": "payments" }] }),
    )
    .await
    .expect(201);
    app.with_etag(
        "PATCH",
        &format!("/api/v4/keystores/{keystore}"),
        "",
        Some(json!({ "keystore_type": "ibm_cloud_kms", "description": "from the IBM CLI" })),
    )
    .await
    .expect(200);
}

/// Free text refuses control characters other than tab and newline.
#[tokio::test]
async fn free_text_refuses_control_characters() {
    let app = TestApp::new().await;
    for bad in ["nul\u{0}here", "esc\u{1b}[31mred", "bell\u{7}", "del\u{7f}"] {
        let r = app
            .post(VAULTS, json!({ "name": "ctl", "description": bad }))
            .await;
        assert_error(&r, 400, "invalid_field");
        assert_eq!(r.target(), "description");
    }
    assert_eq!(list_names(&app, "").await, Vec::<String>::new());
    app.post(
        VAULTS,
        json!({ "name": "ctl", "description": "two lines\n\tindented" }),
    )
    .await
    .expect(201);
}

/// A query whose decoded bytes are not UTF-8 is refused rather than matched as U+FFFD.
#[tokio::test]
async fn a_query_that_is_not_utf8_is_refused() {
    let app = TestApp::new().await;
    for query in ["name=%ff", "%ff=1", "name=%c3%28"] {
        let r = app.get(&format!("{VAULTS}?{query}")).await;
        assert_error(&r, 400, "invalid_query_parameter");
    }
    app.get(&format!("{VAULTS}?name=%c3%a9t%c3%a9"))
        .await
        .expect(200);
}

// ---- OpenAPI ----

/// Spec §2: the 35 operations of UKO v4.
const CATALOGUE: [(&str, &str); 35] = [
    ("GET", "/api/v4/vaults"),
    ("POST", "/api/v4/vaults"),
    ("GET", "/api/v4/vaults/{id}"),
    ("PATCH", "/api/v4/vaults/{id}"),
    ("DELETE", "/api/v4/vaults/{id}"),
    ("GET", "/api/v4/templates"),
    ("POST", "/api/v4/templates"),
    ("GET", "/api/v4/templates/{id}"),
    ("PATCH", "/api/v4/templates/{id}"),
    ("DELETE", "/api/v4/templates/{id}"),
    ("POST", "/api/v4/templates/{id}/archive"),
    ("POST", "/api/v4/templates/{id}/unarchive"),
    ("POST", "/api/v4/templates/{id}/expose"),
    ("GET", "/api/v4/keystores"),
    ("POST", "/api/v4/keystores"),
    ("GET", "/api/v4/keystores/{id}"),
    ("PATCH", "/api/v4/keystores/{id}"),
    ("DELETE", "/api/v4/keystores/{id}"),
    ("GET", "/api/v4/keystores/{id}/status"),
    ("GET", "/api/v4/keystores/{id}/managed_keys"),
    ("GET", "/api/v4/keystores/{id}/associated_resources"),
    ("GET", "/api/v4/managed_keys"),
    ("POST", "/api/v4/managed_keys"),
    ("GET", "/api/v4/managed_keys/{id}"),
    ("PATCH", "/api/v4/managed_keys/{id}"),
    ("DELETE", "/api/v4/managed_keys/{id}"),
    ("GET", "/api/v4/managed_keys/{id}/versions"),
    ("GET", "/api/v4/managed_keys/{id}/status_in_keystores"),
    ("POST", "/api/v4/managed_keys/{id}/update_from_template"),
    ("POST", "/api/v4/managed_keys/{id}/activate"),
    ("POST", "/api/v4/managed_keys/{id}/deactivate"),
    ("POST", "/api/v4/managed_keys/{id}/destroy"),
    ("POST", "/api/v4/managed_keys/{id}/sync_status_in_keystores"),
    ("POST", "/api/v4/managed_keys/{id}/rotate"),
    ("GET", "/api/v4/managed_keys/{id}/associated_resources"),
];

async fn openapi(app: &TestApp) -> Value {
    app.get("/api/v4/openapi.json").await.expect(200).body
}

#[tokio::test]
async fn openapi_document_is_served() {
    let app = TestApp::new().await;
    let doc = openapi(&app).await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "OpenAPI 3.1: {version}");
    assert!(doc["info"]["title"].as_str().is_some(), "{}", doc["info"]);
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    assert!(
        doc["components"]["securitySchemes"]
            .as_object()
            .is_some_and(|s| !s.is_empty()),
        "bearer security scheme documented"
    );
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if item.get(method).is_some() {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn openapi_documents_the_whole_catalogue() {
    let app = TestApp::new().await;
    let ops = documented(&openapi(&app).await);
    let missing: Vec<_> = CATALOGUE
        .iter()
        .filter(|(m, p)| !ops.contains(&((*m).to_owned(), (*p).to_owned())))
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented catalogue operations: {missing:?}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::new().await;
    let ops = documented(&openapi(&app).await);
    assert!(ops.len() >= CATALOGUE.len(), "{ops:?}");
    let mut unrouted = Vec::new();
    for (method, path) in &ops {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{alias}", "an-alias");
        assert!(
            !concrete.contains('{'),
            "unexpected path parameter in {path}"
        );
        let body = matches!(method.as_str(), "POST" | "PATCH" | "PUT").then(|| json!({}));
        let r = app.call(method, &concrete, body, &[]).await;
        let status = r.status.as_u16();
        if (status == 404 && r.code() == "route_not_found") || status == 405 {
            unrouted.push(format!("{method} {path} -> {status} {}", r.body));
        }
    }
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:#?}"
    );

    // The probe does tell a missing route apart.
    let id = uuid::Uuid::new_v4();
    let r = app
        .call(
            "POST",
            &format!("/api/v4/managed_keys/{id}/teleport"),
            None,
            &[],
        )
        .await;
    assert_error(&r, 404, "route_not_found");
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_408_with_the_error_body() {
    let app = TestApp::with_request_timeout(std::time::Duration::from_millis(200)).await;
    // A body that never arrives keeps the request open past the timeout.
    let stalled = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v4/vaults")
        .header(
            "authorization",
            format!("Bearer {}", keyplane_testkit::TEST_TOKEN),
        )
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(stalled))
        .unwrap();
    let r = app.send(req).await.expect(408);
    assert_eq!(r.code(), "request_timeout");
    assert_eq!(
        r.body["trace"],
        r.headers["x-correlation-id"].to_str().unwrap()
    );
    assert_eq!(
        app.get("/api/v4/vaults").await.expect(200).body["total_count"],
        0
    );
    // The change cut off is in the trail, as a failure of the caller who sent it.
    let events = app
        .get("/api/v4/audit_events?action=keyplane.vaults.write")
        .await
        .expect(200);
    let events = events.body["audit_events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "failure");
    assert_eq!(events[0]["status"], 408);
    assert_ne!(events[0]["initiator"], "anonymous");
    assert_eq!(events[0]["correlation_id"], r.body["trace"]);

    // Without a caller, a stalled body is never read: the call is refused at once, and its
    // denial keeps no body.
    let stalled = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v4/vaults")
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(stalled))
        .unwrap();
    app.send(req).await.expect(401);
    let events = app
        .get("/api/v4/audit_events?action=keyplane.vaults.write&outcome=denied")
        .await
        .expect(200);
    let denial = &events.body["audit_events"][0];
    assert_eq!(denial["status"], 401, "{}", events.body);
    assert!(denial["request"].get("body").is_none(), "{denial}");
}

#[tokio::test]
async fn gzip_request_bodies_are_accepted() {
    use std::io::Write;
    let app = TestApp::new().await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"name":"compressed"}"#).unwrap();
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v4/vaults")
        .header(
            "authorization",
            format!("Bearer {}", keyplane_testkit::TEST_TOKEN),
        )
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(axum::body::Body::from(gz.finish().unwrap()))
        .unwrap();
    let r = app.send(req).await.expect(201);
    assert_eq!(r.body["name"], "compressed");
}

/// A filter sent empty is refused: a filter on nothing is a mistake, not "any".
#[tokio::test]
async fn an_empty_filter_is_refused() {
    let app = TestApp::new().await;
    for query in ["state=", "vault.id=", "algorithm=,", "template.id="] {
        let r = app.get(&format!("/api/v4/managed_keys?{query}")).await;
        assert_error(&r, 400, "invalid_query_parameter");
    }
    app.get("/api/v4/managed_keys?state=active,deactivated")
        .await
        .expect(200);
}
