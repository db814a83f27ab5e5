//! Managed keys through the UKO v4 API (spec §2 #22–#35, §3.4, §4.3, §7.3, §7.8; decisions.md §1–§2).

use chrono::{DateTime, Duration, NaiveDate};
use keyplane_core::lifecycle::LifecyclePolicy;
use keyplane_testkit::{PUBLIC_URL, TestApp, TestResponse};
use serde_json::{Value, json};

const KEYS: &str = "/api/v4/managed_keys";
const TEMPLATES: &str = "/api/v4/templates";

fn kpath(id: &str) -> String {
    format!("{KEYS}/{id}")
}

/// A vault with one internal keystore in group `prod`, and two AES-256 templates on that
/// group: `T-ACTIVE` (keys start active) and `T-PRE` (keys start pre-active).
struct Fx {
    app: TestApp,
    vault: String,
    keystore: String,
}

async fn fx() -> Fx {
    fx_with(TestApp::new().await).await
}

async fn fx_with(app: TestApp) -> Fx {
    let vault = app.vault("keys-vault").await;
    let keystore = app.internal_keystore(&vault, "ks-prod", &["prod"]).await;
    app.template(&vault, "T-ACTIVE", "aes", "256", "active", "prod")
        .await;
    app.template(&vault, "T-PRE", "aes", "256", "pre_activation", "prod")
        .await;
    Fx {
        app,
        vault,
        keystore,
    }
}

fn policy(grace: Duration, rotation: Duration) -> LifecyclePolicy {
    LifecyclePolicy {
        destroy_grace_period: grace,
        rotation_min_interval: rotation,
    }
}

fn template_body(
    vault: &str,
    name: &str,
    algorithm: &str,
    size: &str,
    state: &str,
    group: &str,
) -> Value {
    json!({
        "vault": { "id": vault }, "name": name,
        "key": { "algorithm": algorithm, "size": size, "state": state },
        "keystores": [{ "type": "ibm_cloud_kms", "group": group }]
    })
}

async fn create_template(app: &TestApp, body: Value) -> String {
    app.post(TEMPLATES, body).await.expect(201).id()
}

impl Fx {
    async fn active(&self, label: &str) -> TestResponse {
        self.app
            .key(&self.vault, "T-ACTIVE", label)
            .await
            .expect(201)
    }

    async fn pre(&self, label: &str) -> TestResponse {
        self.app.key(&self.vault, "T-PRE", label).await.expect(201)
    }

    /// A key brought into `state` through the API; returns its id.
    async fn key_in(&self, label: &str, state: &str) -> String {
        match state {
            "pre_activation" => self.pre(label).await.id(),
            "active" => self.active(label).await.id(),
            "deactivated" => {
                let id = self.active(label).await.id();
                act(&self.app, &id, "deactivate").await.expect(200);
                id
            }
            "destroyed" => {
                let id = self.pre(label).await.id();
                act(&self.app, &id, "destroy").await.expect(200);
                id
            }
            other => panic!("no recipe for state {other}"),
        }
    }
}

/// A lifecycle action with the key's current ETag.
async fn act(app: &TestApp, id: &str, action: &str) -> TestResponse {
    app.with_etag("POST", &kpath(id), &format!("/{action}"), None)
        .await
}

async fn get_key(app: &TestApp, id: &str) -> TestResponse {
    app.get(&kpath(id)).await.expect(200)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn labels(list: &Value) -> Vec<String> {
    list["managed_keys"]
        .as_array()
        .expect("managed_keys array")
        .iter()
        .map(|k| k["label"].as_str().expect("label").to_owned())
        .collect()
}

/// Labels of `GET /managed_keys?query`, in response order; checks `total_count` agrees.
async fn list_labels(app: &TestApp, query: &str) -> Vec<String> {
    let r = app.get(&format!("{KEYS}?{query}")).await;
    assert_eq!(r.status.as_u16(), 200, "?{query}: {}", r.body);
    let got = labels(&r.body);
    assert_eq!(
        r.body["total_count"].as_i64(),
        Some(got.len() as i64),
        "total_count of ?{query}: {}",
        r.body
    );
    got
}

async fn sorted_labels(app: &TestApp, query: &str) -> Vec<String> {
    let mut v = list_labels(app, query).await;
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn date(v: &Value) -> NaiveDate {
    let s = v.as_str().unwrap_or_else(|| panic!("date string: {v}"));
    NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").expect("YYYY-MM-DD")
}

fn status0(body: &Value) -> &Value {
    &body["status_in_keystores"][0]
}

#[track_caller]
fn assert_status(entry: &Value, status: &str, flag: &str, detail: &str) {
    assert_eq!(entry["status"], status, "{entry}");
    assert_eq!(entry["keystore_sync_flag"], flag, "{entry}");
    assert_eq!(entry["keystore_sync_flag_detail"], detail, "{entry}");
}

#[track_caller]
fn assert_conflict(r: &TestResponse, code: &str) {
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    assert_eq!(r.code(), code, "{}", r.body);
    assert_eq!(r.body["status_code"], 409, "{}", r.body);
}

// ---- create ----

#[tokio::test]
async fn create_active_key_installs_it_in_the_internal_keystore() {
    let f = fx().await;
    let r = f.active("payments-key").await;
    let b = &r.body;
    let id = r.id();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{b}");
    assert_eq!(b["state"], "active");
    assert_eq!(b["label"], "payments-key");
    assert_eq!(b["algorithm"], "aes");
    assert_eq!(b["size"], json!("256"));
    assert_eq!(b["version"], 1);
    assert_eq!(b["vault"]["id"], f.vault.as_str());
    assert_eq!(b["template"]["name"], "T-ACTIVE");
    assert_eq!(b["aligned"], true);

    let patterns = b["verification_patterns"].as_array().expect("patterns");
    assert_eq!(patterns.len(), 1, "{b}");
    assert_eq!(patterns[0]["method"], "ENC-ZERO");
    let kcv = patterns[0]["value"].as_str().expect("value");
    assert!(is_hex(kcv, 6), "a 3-byte KCV in hex: {kcv}");

    let statuses = b["status_in_keystores"].as_array().expect("statuses");
    assert_eq!(statuses.len(), 1, "{b}");
    let s = &statuses[0];
    assert_status(s, "active", "ok", "active_key_is_active_in_keystore");
    assert_eq!(s["keystore"]["id"], f.keystore.as_str());
    assert_eq!(s["keystore"]["type"], "ibm_cloud_kms");
    let native = s["key_id_in_keystore"]
        .as_str()
        .expect("key_id_in_keystore");
    assert!(!native.is_empty(), "{s}");

    assert_eq!(
        b["referenced_keystores"],
        json!([{
            "id": f.keystore, "name": "ks-prod", "type": "ibm_cloud_kms",
            "href": format!("{PUBLIC_URL}/api/v4/keystores/{}", f.keystore)
        }])
    );
    assert_eq!(b["instances"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(b["instances"][0]["keystore"]["group"], "prod");
    assert_eq!(b["instances"][0]["keystore"]["type"], "ibm_cloud_kms");

    let href = b["href"].as_str().expect("href");
    assert_eq!(href, format!("{PUBLIC_URL}/api/v4/managed_keys/{id}"));
    let location = r
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location header");
    assert_eq!(location, href);
    let etag = r.etag();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "strong quoted ETag: {etag:?}"
    );

    // Reading it back gives the same key and ETag.
    let g = get_key(&f.app, &id).await;
    assert_eq!(g.etag(), etag);
    assert_eq!(g.body["state"], "active");
    assert_eq!(g.body["verification_patterns"], b["verification_patterns"]);
    assert_eq!(g.body["status_in_keystores"], b["status_in_keystores"]);
    assert_eq!(g.body["referenced_keystores"], b["referenced_keystores"]);
}

#[tokio::test]
async fn create_pre_active_key_installs_nothing() {
    let f = fx().await;
    let r = f.pre("later-key").await;
    let b = &r.body;
    assert_eq!(b["state"], "pre_activation");
    assert_eq!(b["verification_patterns"], json!([]), "{b}");
    assert_eq!(b["status_in_keystores"].as_array().map(Vec::len), Some(1));
    let s = status0(b);
    assert_status(
        s,
        "not_present",
        "ok",
        "pre_active_key_is_not_present_in_keystore",
    );
    assert!(
        s.get("key_id_in_keystore").is_none_or(Value::is_null),
        "{s}"
    );
    assert_eq!(b["referenced_keystores"][0]["id"], f.keystore.as_str());

    let g = get_key(&f.app, &r.id()).await;
    assert_eq!(g.body["state"], "pre_activation");
    assert_eq!(g.body["verification_patterns"], json!([]));
}

#[tokio::test]
async fn every_algorithm_and_size_generates_material_with_its_verification_method() {
    let f = fx().await;
    let cases = [
        ("aes", "128", "ENC-ZERO", 6),
        ("aes", "192", "ENC-ZERO", 6),
        ("aes", "256", "ENC-ZERO", 6),
        ("hmac", "256", "MAC-ZERO", 6),
        ("hmac", "384", "MAC-ZERO", 6),
        ("hmac", "512", "MAC-ZERO", 6),
        ("ec", "256", "PUB-HASH-SHA-256", 64),
        ("ec", "384", "PUB-HASH-SHA-256", 64),
        ("ec", "521", "PUB-HASH-SHA-256", 64),
        ("rsa", "2048", "PUB-HASH-SHA-256", 64),
    ];
    let mut seen = Vec::new();
    for (algorithm, size, method, hex_len) in cases {
        let name = format!("T-{algorithm}-{size}");
        let label = format!("{algorithm}-{size}");
        f.app
            .template(&f.vault, &name, algorithm, size, "active", "prod")
            .await;
        let r = f.app.key(&f.vault, &name, &label).await;
        assert_eq!(r.status.as_u16(), 201, "{algorithm} {size}: {}", r.body);
        let b = &r.body;
        assert_eq!(b["algorithm"], algorithm, "{b}");
        assert_eq!(b["size"], json!(size), "{b}");
        assert_eq!(b["state"], "active", "{b}");
        let p = &b["verification_patterns"];
        assert_eq!(
            p.as_array().map(Vec::len),
            Some(1),
            "{algorithm} {size}: {b}"
        );
        assert_eq!(p[0]["method"], method, "{algorithm} {size}: {b}");
        let value = p[0]["value"].as_str().expect("value");
        assert!(is_hex(value, hex_len), "{algorithm} {size}: {value}");
        assert_status(
            status0(b),
            "active",
            "ok",
            "active_key_is_active_in_keystore",
        );
        seen.push(value.to_owned());
    }
    // Every key got its own material.
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "{seen:?}");
}

#[tokio::test]
async fn create_validates_its_inputs() {
    let f = fx().await;
    let r = f
        .app
        .post(KEYS, json!({ "vault": { "id": f.vault }, "label": "x1" }))
        .await
        .expect(400);
    assert_eq!(r.code(), "missing_field");
    assert_eq!(r.target(), "template_name");
    let r = f
        .app
        .post(KEYS, json!({ "template_name": "T-ACTIVE", "label": "x1" }))
        .await
        .expect(400);
    assert_eq!(r.target(), "vault.id", "{}", r.body);
    let r = f
        .app
        .key(&f.vault, "T-ACTIVE", "bad*label")
        .await
        .expect(400);
    assert_eq!(r.target(), "label", "{}", r.body);
    let list = f
        .app
        .get(&format!(
            "{KEYS}?state=pre_activation,active,deactivated,destroyed"
        ))
        .await
        .expect(200);
    assert_eq!(list.body["total_count"], 0, "nothing stored: {}", list.body);
}

#[tokio::test]
async fn unknown_template_is_400_and_archived_template_is_409() {
    let f = fx().await;
    let r = f.app.key(&f.vault, "NO-SUCH", "k1").await.expect(400);
    assert_eq!(r.target(), "template_name", "{}", r.body);

    let t = f
        .app
        .template(&f.vault, "T-OLD", "aes", "256", "active", "prod")
        .await;
    f.app
        .with_etag("POST", &format!("{TEMPLATES}/{t}"), "/archive", None)
        .await
        .expect(200);
    let r = f.app.key(&f.vault, "T-OLD", "k2").await;
    assert_conflict(&r, "template_archived");
    assert_eq!(
        list_labels(&f.app, "state=pre_activation,active,deactivated,destroyed").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn duplicate_label_in_a_vault_is_409() {
    let f = fx().await;
    f.active("dup").await;
    let r = f.app.key(&f.vault, "T-PRE", "dup").await;
    assert_conflict(&r, "duplicate_name");
    assert_eq!(list_labels(&f.app, "").await, strs(&["dup"]));

    // Another vault may use the same label.
    let other = f.app.vault("other-vault").await;
    f.app
        .template(&other, "T-ACTIVE", "aes", "256", "active", "prod")
        .await;
    f.app.key(&other, "T-ACTIVE", "dup").await.expect(201);
}

#[tokio::test]
async fn legacy_tags_in_the_create_body_are_kept() {
    let f = fx().await;
    let r = f
        .app
        .post(
            KEYS,
            json!({
                "vault": { "id": f.vault }, "template_name": "T-ACTIVE", "label": "tagged",
                "description": "with tags",
                "tags": [{ "name": "team", "value": "payments" }, { "name": "cost", "value": "42" }]
            }),
        )
        .await
        .expect(201);
    let expected =
        json!([{ "name": "team", "value": "payments" }, { "name": "cost", "value": "42" }]);
    assert_eq!(r.body["tags"], expected);
    assert_eq!(r.body["description"], "with tags");
    assert_eq!(get_key(&f.app, &r.id()).await.body["tags"], expected);
}

#[tokio::test]
async fn legacy_uko_vault_header_must_name_the_resources_vault() {
    let f = fx().await;
    let other = f.app.vault("elsewhere").await;
    let body =
        json!({ "vault": { "id": f.vault }, "template_name": "T-ACTIVE", "label": "legacy" });

    let r = f
        .app
        .call("POST", KEYS, Some(body.clone()), &[("UKO-Vault", &other)])
        .await
        .expect(400);
    assert_eq!(r.target(), "UKO-Vault", "{}", r.body);
    assert_eq!(r.body["errors"][0]["target"]["type"], "header");
    assert_eq!(list_labels(&f.app, "").await, Vec::<String>::new());

    let r = f
        .app
        .call("POST", KEYS, Some(body), &[("UKO-Vault", &f.vault)])
        .await
        .expect(201);
    let id = r.id();

    f.app
        .call("GET", &kpath(&id), None, &[("UKO-Vault", &f.vault)])
        .await
        .expect(200);
    let r = f
        .app
        .call("GET", &kpath(&id), None, &[("UKO-Vault", &other)])
        .await
        .expect(400);
    assert_eq!(r.target(), "UKO-Vault", "{}", r.body);
    // The id with a character percent-encoded names the same key (its handler decodes it): the
    // header is checked against it too (it was skipped, and the key served).
    let encoded = format!("%{:02X}{}", id.as_bytes()[0], &id[1..]);
    let r = f
        .app
        .call("GET", &kpath(&encoded), None, &[("UKO-Vault", &other)])
        .await
        .expect(400);
    assert_eq!(r.target(), "UKO-Vault", "{}", r.body);
}

// ---- lifecycle ----

#[tokio::test]
async fn allowed_transitions_walk_the_state_machine() {
    let f = fx().await;
    let id = f.pre("walker").await.id();

    // pre_activation -> active: material generated and installed.
    let r = act(&f.app, &id, "activate").await.expect(200);
    assert_eq!(r.body["state"], "active");
    let patterns = r.body["verification_patterns"].clone();
    assert_eq!(patterns[0]["method"], "ENC-ZERO", "{}", r.body);
    assert_status(
        status0(&r.body),
        "active",
        "ok",
        "active_key_is_active_in_keystore",
    );
    let etag = r.etag();
    assert!(!etag.is_empty());
    assert_eq!(
        get_key(&f.app, &id).await.etag(),
        etag,
        "action returns the new ETag"
    );

    // active -> deactivated
    let r = act(&f.app, &id, "deactivate").await.expect(200);
    assert_eq!(r.body["state"], "deactivated");
    assert_status(
        status0(&r.body),
        "not_active",
        "ok",
        "deactivated_key_is_deactivated_in_keystore",
    );
    assert_ne!(r.etag(), etag);

    // deactivated -> active (reactivate): same material.
    let r = act(&f.app, &id, "activate").await.expect(200);
    assert_eq!(r.body["state"], "active");
    assert_eq!(r.body["verification_patterns"], patterns);
    assert_status(
        status0(&r.body),
        "active",
        "ok",
        "active_key_is_active_in_keystore",
    );

    // active -> deactivated -> destroyed (zero grace period in tests)
    act(&f.app, &id, "deactivate").await.expect(200);
    let r = act(&f.app, &id, "destroy").await.expect(200);
    assert_eq!(r.body["state"], "destroyed");
    assert_status(
        status0(&r.body),
        "not_present",
        "ok",
        "destroyed_key_is_not_present_in_keystore",
    );
    assert_eq!(get_key(&f.app, &id).await.body["state"], "destroyed");

    // destroyed -> DELETE: gone.
    let r = f
        .app
        .with_etag("DELETE", &kpath(&id), "", None)
        .await
        .expect(204);
    assert!(r.body.is_null(), "no body on 204: {}", r.body);
    let r = f.app.get(&kpath(&id)).await.expect(404);
    assert_eq!(r.code(), "not_found");
}

#[tokio::test]
async fn pre_active_key_can_be_destroyed_directly() {
    let f = fx().await;
    let id = f.pre("never-used").await.id();
    let r = act(&f.app, &id, "destroy").await.expect(200);
    assert_eq!(r.body["state"], "destroyed");
    assert_eq!(get_key(&f.app, &id).await.body["state"], "destroyed");
    f.app
        .with_etag("DELETE", &kpath(&id), "", None)
        .await
        .expect(204);
    f.app.get(&kpath(&id)).await.expect(404);
}

#[tokio::test]
async fn refused_transitions_are_409_and_change_nothing() {
    let f = fx().await;
    // (state, action) pairs the state machine refuses; "delete" is DELETE, "update" is PATCH.
    let refused = [
        ("pre_activation", "deactivate"),
        ("pre_activation", "rotate"),
        ("pre_activation", "delete"),
        ("active", "activate"),
        ("active", "destroy"),
        ("active", "delete"),
        ("deactivated", "deactivate"),
        ("deactivated", "rotate"),
        ("deactivated", "delete"),
        ("destroyed", "activate"),
        ("destroyed", "deactivate"),
        ("destroyed", "destroy"),
        ("destroyed", "rotate"),
        ("destroyed", "update"),
    ];
    for (i, (state, action)) in refused.into_iter().enumerate() {
        let id = f.key_in(&format!("k{i}"), state).await;
        let before = get_key(&f.app, &id).await;
        let r = match action {
            "delete" => f.app.with_etag("DELETE", &kpath(&id), "", None).await,
            "update" => {
                f.app
                    .with_etag(
                        "PATCH",
                        &kpath(&id),
                        "",
                        Some(json!({ "description": "changed" })),
                    )
                    .await
            }
            a => act(&f.app, &id, a).await,
        };
        assert_eq!(
            r.status.as_u16(),
            409,
            "{action} from {state} must be refused: {}",
            r.body
        );
        assert_eq!(
            r.code(),
            "invalid_state_transition",
            "{action} from {state}: {}",
            r.body
        );
        let after = get_key(&f.app, &id).await;
        assert_eq!(after.body["state"], state, "{action} from {state}");
        assert_eq!(after.body["version"], before.body["version"]);
        assert_eq!(after.body["description"], before.body["description"]);
        assert_eq!(after.etag(), before.etag(), "{action} from {state} wrote");
    }
}

#[tokio::test]
async fn lifecycle_actions_need_a_current_if_match() {
    let f = fx().await;
    let r = f.active("guarded").await;
    let id = r.id();
    let etag = r.etag();
    let path = format!("{}/deactivate", kpath(&id));

    let r = f.app.call("POST", &path, None, &[]).await.expect(428);
    assert_eq!(r.code(), "precondition_required");
    let r = f
        .app
        .call("POST", &path, None, &[("if-match", "\"r99-00000000\"")])
        .await
        .expect(412);
    assert_eq!(r.code(), "etag_mismatch");
    assert_eq!(get_key(&f.app, &id).await.body["state"], "active");

    let r = f
        .app
        .call("POST", &path, None, &[("if-match", &etag)])
        .await
        .expect(200);
    assert_eq!(r.body["state"], "deactivated");
    // The ETag read before the change is now stale.
    let r = f
        .app
        .call(
            "POST",
            &format!("{}/activate", kpath(&id)),
            None,
            &[("if-match", &etag)],
        )
        .await
        .expect(412);
    assert_eq!(r.code(), "etag_mismatch");
    assert_eq!(get_key(&f.app, &id).await.body["state"], "deactivated");
}

#[tokio::test]
async fn destroy_waits_for_the_grace_period_after_deactivation() {
    let f = fx_with(TestApp::with_policy(policy(Duration::hours(4), Duration::zero())).await).await;
    let id = f.active("cooling").await.id();
    act(&f.app, &id, "deactivate").await.expect(200);

    let r = act(&f.app, &id, "destroy").await;
    assert_conflict(&r, "invalid_state_transition");
    let message = r.body["errors"][0]["message"].as_str().expect("message");
    let wait = message
        .split("try again in ")
        .nth(1)
        .unwrap_or_else(|| panic!("the message says how long to wait: {message}"));
    let (h, m) = wait
        .split_once("h ")
        .unwrap_or_else(|| panic!("hours and minutes: {message}"));
    let minutes: i64 = h.trim().parse::<i64>().expect("hours") * 60
        + m.trim_end_matches(|c: char| !c.is_ascii_digit())
            .get(..2)
            .and_then(|s| s.parse::<i64>().ok())
            .expect("minutes");
    assert!(
        (239..=240).contains(&minutes),
        "about 4 hours left: {message}"
    );
    assert_eq!(get_key(&f.app, &id).await.body["state"], "deactivated");

    // The grace period applies to deactivated keys only.
    let pre = f.pre("unused").await.id();
    act(&f.app, &pre, "destroy").await.expect(200);
}

// ---- rotation ----

#[tokio::test]
async fn rotation_creates_a_new_version() {
    let f = fx().await;
    let created = f.active("rotating").await;
    let id = created.id();
    assert!(created.body.get("rotated_at").is_none_or(Value::is_null));
    let old = created.body["verification_patterns"][0]["value"]
        .as_str()
        .expect("pattern")
        .to_owned();

    let r = act(&f.app, &id, "rotate").await.expect(200);
    let b = &r.body;
    assert_eq!(b["state"], "active");
    assert_eq!(b["version"], 2);
    let rotated_at = b["rotated_at"].as_str().expect("rotated_at set");
    assert!(
        DateTime::parse_from_rfc3339(rotated_at).is_ok(),
        "{rotated_at}"
    );
    let new = b["verification_patterns"][0]["value"]
        .as_str()
        .expect("pattern")
        .to_owned();
    assert_eq!(b["verification_patterns"][0]["method"], "ENC-ZERO");
    assert_ne!(new, old, "new material after rotation");
    assert_status(
        status0(b),
        "active",
        "ok",
        "active_key_is_active_in_keystore",
    );

    let g = get_key(&f.app, &id).await;
    assert_eq!(g.body["version"], 2);
    assert_eq!(g.body["rotated_at"], b["rotated_at"]);

    let v = f
        .app
        .get(&format!("{}/versions", kpath(&id)))
        .await
        .expect(200);
    assert_eq!(v.body["total_count"], 2, "{}", v.body);
    let versions = v.body["managed_keys"].as_array().expect("managed_keys");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 2, "newest first");
    assert_eq!(versions[1]["version"], 1);
    assert_eq!(
        versions[0]["verification_patterns"][0]["value"],
        new.as_str()
    );
    assert_eq!(
        versions[1]["verification_patterns"][0]["value"],
        old.as_str()
    );
    // Without deactivate_on_rotation the older version keeps its state.
    assert_eq!(versions[0]["state"], "active");
    assert_eq!(versions[1]["state"], "active");
}

#[tokio::test]
async fn rotation_deactivates_older_versions_when_the_template_says_so() {
    let f = fx().await;
    let mut body = template_body(&f.vault, "T-ROTATE", "aes", "256", "active", "prod");
    body["key"]["deactivate_on_rotation"] = json!(true);
    create_template(&f.app, body).await;
    let r = f
        .app
        .key(&f.vault, "T-ROTATE", "rot-deact")
        .await
        .expect(201);
    assert_eq!(r.body["deactivate_on_rotation"], true);
    let id = r.id();

    act(&f.app, &id, "rotate").await.expect(200);
    let v = f
        .app
        .get(&format!("{}/versions", kpath(&id)))
        .await
        .expect(200);
    let versions = v.body["managed_keys"].as_array().expect("managed_keys");
    assert_eq!(versions.len(), 2, "{}", v.body);
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(versions[0]["state"], "active");
    assert_eq!(versions[1]["version"], 1);
    assert_eq!(versions[1]["state"], "deactivated");
    // The key itself stays active.
    assert_eq!(get_key(&f.app, &id).await.body["state"], "active");

    let only_old = f
        .app
        .get(&format!("{}/versions?state=deactivated", kpath(&id)))
        .await
        .expect(200);
    assert_eq!(only_old.body["total_count"], 1, "{}", only_old.body);
    assert_eq!(only_old.body["managed_keys"][0]["version"], 1);
}

#[tokio::test]
async fn a_second_rotation_within_the_interval_is_409() {
    let f = fx_with(TestApp::with_policy(policy(Duration::zero(), Duration::hours(1))).await).await;
    let id = f.active("hourly").await.id();
    act(&f.app, &id, "rotate").await.expect(200);
    let r = act(&f.app, &id, "rotate").await;
    assert_conflict(&r, "invalid_state_transition");
    let message = r.body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("try again in"), "{message}");
    let g = get_key(&f.app, &id).await;
    assert_eq!(g.body["version"], 2);
    assert_eq!(g.body["state"], "active");
}

// ---- PATCH ----

#[tokio::test]
async fn patch_needs_if_match_and_a_current_etag() {
    let f = fx().await;
    let r = f.active("patched").await;
    let id = r.id();
    let etag = r.etag();

    let r = f
        .app
        .call(
            "PATCH",
            &kpath(&id),
            Some(json!({ "description": "x" })),
            &[],
        )
        .await
        .expect(428);
    assert_eq!(r.code(), "precondition_required");

    let r = f
        .app
        .call(
            "PATCH",
            &kpath(&id),
            Some(json!({ "description": "first" })),
            &[("if-match", &etag)],
        )
        .await
        .expect(200);
    assert_ne!(r.etag(), etag, "a write changes the ETag");

    let r = f
        .app
        .call(
            "PATCH",
            &kpath(&id),
            Some(json!({ "description": "second" })),
            &[("if-match", &etag)],
        )
        .await
        .expect(412);
    assert_eq!(r.code(), "etag_mismatch");
    assert_eq!(get_key(&f.app, &id).await.body["description"], "first");
}

#[tokio::test]
async fn patch_changes_label_description_dates_and_tags() {
    let f = fx().await;
    let id = f.active("alpha").await.id();
    assert_eq!(
        get_key(&f.app, &id).await.body["instances"][0]["label_in_keystore"],
        "alpha"
    );
    let r = f
        .app
        .with_etag(
            "PATCH",
            &kpath(&id),
            "",
            Some(json!({
                "label": "alpha2",
                "description": "yearly",
                "activation_date": "2030-01-01",
                "expiration_date": "2031-06-30",
                "tags": [{ "name": "team", "value": "payments" }]
            })),
        )
        .await
        .expect(200);
    let check = |b: &Value| {
        assert_eq!(b["label"], "alpha2", "{b}");
        assert_eq!(b["description"], "yearly", "{b}");
        assert_eq!(b["activation_date"], "2030-01-01", "{b}");
        assert_eq!(b["expiration_date"], "2031-06-30", "{b}");
        assert_eq!(
            b["tags"],
            json!([{ "name": "team", "value": "payments" }]),
            "{b}"
        );
        assert_eq!(b["state"], "active", "PATCH never changes the state: {b}");
        // The rename reaches the keystore copy.
        assert_eq!(b["instances"][0]["label_in_keystore"], "alpha2", "{b}");
    };
    check(&r.body);
    check(&get_key(&f.app, &id).await.body);
    // The label is findable under its new name only.
    assert_eq!(list_labels(&f.app, "label=alpha2").await, strs(&["alpha2"]));
    assert!(list_labels(&f.app, "label=alpha").await.is_empty());
}

#[tokio::test]
async fn patch_rejects_bad_dates() {
    let f = fx().await;
    let id = f.active("dated").await.id();
    let before = get_key(&f.app, &id).await;
    let cases = [
        (
            json!({ "activation_date": "2030-02-30" }),
            "activation_date",
        ),
        (
            json!({ "activation_date": "01-01-2030" }),
            "activation_date",
        ),
        (json!({ "expiration_date": "tomorrow" }), "expiration_date"),
        (
            json!({ "activation_date": "2030-06-01", "expiration_date": "2030-05-31" }),
            "expiration_date",
        ),
    ];
    for (patch, target) in cases {
        let r = f
            .app
            .with_etag("PATCH", &kpath(&id), "", Some(patch.clone()))
            .await
            .expect(400);
        assert_eq!(r.target(), target, "{patch}: {}", r.body);
    }
    let after = get_key(&f.app, &id).await;
    assert_eq!(after.etag(), before.etag(), "nothing stored");
    assert_eq!(
        after.body["activation_date"],
        before.body["activation_date"]
    );
    assert_eq!(
        after.body["expiration_date"],
        before.body["expiration_date"]
    );
}

// ---- naming schemes ----

async fn named_template(f: &Fx, name: &str, scheme: &str, state: &str) {
    let mut body = template_body(&f.vault, name, "aes", "256", state, "prod");
    body["naming_scheme"] = json!(scheme);
    create_template(&f.app, body).await;
}

#[tokio::test]
async fn naming_scheme_splits_the_label_into_label_tags() {
    let f = fx().await;
    named_template(&f, "T-NAMED", "<APP>-<ENV>", "active").await;
    let r = f
        .app
        .key(&f.vault, "T-NAMED", "billing-prod")
        .await
        .expect(201);
    let expected =
        json!([{ "name": "APP", "value": "billing" }, { "name": "ENV", "value": "prod" }]);
    assert_eq!(r.body["label"], "billing-prod");
    assert_eq!(r.body["label_tags"], expected);
    let id = r.id();
    assert_eq!(get_key(&f.app, &id).await.body["label_tags"], expected);

    // A key named from a scheme cannot be renamed.
    let p = f
        .app
        .with_etag(
            "PATCH",
            &kpath(&id),
            "",
            Some(json!({ "label": "payroll-prod" })),
        )
        .await
        .expect(400);
    assert_eq!(p.target(), "label", "{}", p.body);
    assert_eq!(get_key(&f.app, &id).await.body["label"], "billing-prod");
    // Other fields still change.
    f.app
        .with_etag(
            "PATCH",
            &kpath(&id),
            "",
            Some(json!({ "description": "ok" })),
        )
        .await
        .expect(200);
}

#[tokio::test]
async fn a_label_not_matching_the_scheme_is_400() {
    let f = fx().await;
    named_template(&f, "T-NAMED", "<APP>-<ENV>", "active").await;
    for label in ["billing", "billing-", "b-prod", "billing-prod-extra!"] {
        let r = f.app.key(&f.vault, "T-NAMED", label).await;
        assert_eq!(r.status.as_u16(), 400, "{label}: {}", r.body);
        assert_eq!(r.target(), "label", "{label}: {}", r.body);
    }
    assert!(list_labels(&f.app, "").await.is_empty());
}

#[tokio::test]
async fn no_label_with_custom_placeholders_is_400_naming_them() {
    let f = fx().await;
    named_template(&f, "T-NAMED", "<APP>-<ENV>", "active").await;
    let r = f
        .app
        .post(
            KEYS,
            json!({ "vault": { "id": f.vault }, "template_name": "T-NAMED" }),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "label", "{}", r.body);
    let message = r.body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("APP") && message.contains("ENV"),
        "names the missing placeholders: {message}"
    );
}

#[tokio::test]
async fn system_placeholders_generate_the_label_and_block_rotation() {
    let f = fx().await;
    named_template(&f, "T-DATED", "KEY-<yyyy>-<mm>", "active").await;
    let before = chrono::Utc::now().date_naive();
    let r = f
        .app
        .post(
            KEYS,
            json!({ "vault": { "id": f.vault }, "template_name": "T-DATED" }),
        )
        .await
        .expect(201);
    let after = chrono::Utc::now().date_naive();
    let label = r.body["label"]
        .as_str()
        .expect("generated label")
        .to_owned();
    let expect = |d: NaiveDate| d.format("KEY-%Y-%m").to_string();
    assert!(
        label == expect(before) || label == expect(after),
        "label from the creation date: {label}"
    );
    let tags = r.body["label_tags"].as_array().expect("label_tags");
    let tag = |n: &str| {
        tags.iter()
            .find(|t| t["name"] == n)
            .and_then(|t| t["value"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(format!("KEY-{}-{}", tag("yyyy"), tag("mm")), label);

    // Labels with date placeholders cannot be rotated.
    let id = r.id();
    let r = act(&f.app, &id, "rotate").await;
    assert_conflict(&r, "invalid_state_transition");
    assert_eq!(get_key(&f.app, &id).await.body["version"], 1);
}

// ---- status in keystores, sync ----

#[tokio::test]
async fn status_in_keystores_follows_deactivation_and_sync_reports_it() {
    let f = fx().await;
    let id = f.active("observed").await.id();
    let s = f
        .app
        .get(&format!("{}/status_in_keystores", kpath(&id)))
        .await
        .expect(200);
    assert_status(
        status0(&s.body),
        "active",
        "ok",
        "active_key_is_active_in_keystore",
    );

    act(&f.app, &id, "deactivate").await.expect(200);
    let s = f
        .app
        .get(&format!("{}/status_in_keystores", kpath(&id)))
        .await
        .expect(200);
    let list = s.body["status_in_keystores"].as_array().expect("list");
    assert_eq!(list.len(), 1, "{}", s.body);
    assert_eq!(list[0]["keystore"]["id"], f.keystore.as_str());
    assert_status(
        &list[0],
        "not_active",
        "ok",
        "deactivated_key_is_deactivated_in_keystore",
    );

    let sync_path = format!("{}/sync_status_in_keystores", kpath(&id));
    let r = f.app.call("POST", &sync_path, None, &[]).await.expect(428);
    assert_eq!(r.code(), "precondition_required");
    let r = f
        .app
        .with_etag("POST", &kpath(&id), "/sync_status_in_keystores", None)
        .await
        .expect(200);
    let list = r.body["status_in_keystores"].as_array().expect("list");
    assert_eq!(list.len(), 1, "{}", r.body);
    assert_eq!(list[0]["keystore"]["id"], f.keystore.as_str());
    assert_status(
        &list[0],
        "not_active",
        "ok",
        "deactivated_key_is_deactivated_in_keystore",
    );
    // Sync never changes the managed state.
    assert_eq!(get_key(&f.app, &id).await.body["state"], "deactivated");
}

#[tokio::test]
async fn status_of_an_unknown_key_is_404() {
    let f = fx().await;
    let missing = uuid::Uuid::new_v4().to_string();
    let r = f
        .app
        .get(&format!("{}/status_in_keystores", kpath(&missing)))
        .await
        .expect(404);
    assert_eq!(r.code(), "not_found");
}

// ---- update_from_template ----

#[tokio::test]
async fn update_from_template_moves_the_key_to_the_new_group() {
    let app = TestApp::new().await;
    let vault = app.vault("realign").await;
    let ks1 = app.internal_keystore(&vault, "ks-one", &["g1"]).await;
    let ks2 = app.internal_keystore(&vault, "ks-two", &["g2"]).await;
    let t = app
        .template(&vault, "T-MOVE", "aes", "256", "active", "g1")
        .await;
    let created = app.key(&vault, "T-MOVE", "mover").await.expect(201);
    let id = created.id();
    assert_eq!(created.body["aligned"], true);
    assert_eq!(created.body["referenced_keystores"][0]["id"], ks1.as_str());

    app.with_etag(
        "PATCH",
        &format!("{TEMPLATES}/{t}"),
        "",
        Some(json!({ "keystores": [{ "type": "ibm_cloud_kms", "group": "g2" }] })),
    )
    .await
    .expect(200);

    let before = get_key(&app, &id).await;
    assert_eq!(before.body["aligned"], false, "{}", before.body);
    let refs = before.body["referenced_keystores"]
        .as_array()
        .expect("refs");
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0]["id"], ks1.as_str());

    // dry_run shows the outcome and stores nothing.
    let dry = app
        .call(
            "POST",
            &format!("{}/update_from_template?dry_run=true", kpath(&id)),
            None,
            &[("if-match", &before.etag())],
        )
        .await
        .expect(200);
    assert_eq!(
        dry.body["referenced_keystores"][0]["id"],
        ks2.as_str(),
        "{}",
        dry.body
    );
    let still = get_key(&app, &id).await;
    assert_eq!(still.etag(), before.etag(), "dry run wrote");
    assert_eq!(still.body["aligned"], false);
    assert_eq!(
        still.body["referenced_keystores"],
        before.body["referenced_keystores"]
    );
    assert_eq!(
        still.body["status_in_keystores"],
        before.body["status_in_keystores"]
    );
    assert_eq!(still.body["instances"], before.body["instances"]);

    // For real.
    let r = app
        .with_etag("POST", &kpath(&id), "/update_from_template", None)
        .await
        .expect(200);
    let check = |b: &Value| {
        let refs = b["referenced_keystores"].as_array().expect("refs");
        assert_eq!(refs.len(), 1, "{b}");
        assert_eq!(refs[0]["id"], ks2.as_str(), "{b}");
        assert_eq!(b["aligned"], true, "{b}");
        assert_eq!(b["instances"][0]["keystore"]["group"], "g2", "{b}");
        let s = b["status_in_keystores"]
            .as_array()
            .expect("statuses")
            .iter()
            .find(|s| s["keystore"]["id"] == ks2.as_str())
            .unwrap_or_else(|| panic!("status for the new keystore: {b}"));
        assert_status(s, "active", "ok", "active_key_is_active_in_keystore");
    };
    check(&r.body);
    check(&get_key(&app, &id).await.body);
    assert_eq!(
        list_labels(&app, "referenced_keystores[].name=ks-two").await,
        strs(&["mover"])
    );
    assert!(
        list_labels(&app, "referenced_keystores[].name=ks-one")
            .await
            .is_empty()
    );
}

// ---- lists ----

struct ListFx {
    app: TestApp,
    v1: String,
    v2: String,
    hmac_template: String,
    /// label -> key body at creation (or after deactivation)
    keys: std::collections::BTreeMap<String, Value>,
}

/// v1 (keystore ks-one, group g1): alpha (AES-A, aes 256 active), bravo (AES-B, aes 128 active,
/// activation +10 days, expiration +2 years), charlie (HMAC-C, hmac 512 pre-active),
/// delta (AES-A, deactivated). v2 (keystore ks-two, group g2): echo (AES-V2, aes 192 active).
async fn list_fx() -> ListFx {
    let app = TestApp::new().await;
    let v1 = app.vault("list-one").await;
    let v2 = app.vault("list-two").await;
    app.internal_keystore(&v1, "ks-one", &["g1"]).await;
    app.internal_keystore(&v2, "ks-two", &["g2"]).await;
    let with_dates =
        |vault: &str, name: &str, alg: &str, size: &str, state: &str, g: &str, a: &str, e: &str| {
            let mut b = template_body(vault, name, alg, size, state, g);
            b["key"]["activation_date"] = json!(a);
            b["key"]["expiration_date"] = json!(e);
            b
        };
    create_template(
        &app,
        with_dates(&v1, "AES-A", "aes", "256", "active", "g1", "P0D", "P1Y"),
    )
    .await;
    create_template(
        &app,
        with_dates(&v1, "AES-B", "aes", "128", "active", "g1", "P10D", "P2Y"),
    )
    .await;
    let hmac_template = create_template(
        &app,
        with_dates(
            &v1,
            "HMAC-C",
            "hmac",
            "512",
            "pre_activation",
            "g1",
            "P0D",
            "P1Y",
        ),
    )
    .await;
    create_template(
        &app,
        with_dates(&v2, "AES-V2", "aes", "192", "active", "g2", "P0D", "P1Y"),
    )
    .await;

    let mut keys = std::collections::BTreeMap::new();
    for (vault, template, label) in [
        (&v1, "AES-A", "alpha"),
        (&v1, "AES-B", "bravo"),
        (&v1, "HMAC-C", "charlie"),
        (&v1, "AES-A", "delta"),
        (&v2, "AES-V2", "echo"),
    ] {
        let r = app.key(vault, template, label).await.expect(201);
        keys.insert(label.to_owned(), r.body);
    }
    let delta = keys["delta"]["id"].as_str().expect("id").to_owned();
    let r = act(&app, &delta, "deactivate").await.expect(200);
    keys.insert("delta".into(), r.body);
    ListFx {
        app,
        v1,
        v2,
        hmac_template,
        keys,
    }
}

impl ListFx {
    fn day(&self, label: &str, field: &str) -> NaiveDate {
        date(&self.keys[label][field])
    }
}

#[tokio::test]
async fn list_default_state_filter_and_state_filter() {
    let f = list_fx().await;
    let app = &f.app;
    assert_eq!(
        sorted_labels(app, "").await,
        strs(&["alpha", "bravo", "charlie", "echo"]),
        "deactivated keys are hidden by default"
    );
    assert_eq!(
        sorted_labels(app, "state=deactivated").await,
        strs(&["delta"])
    );
    assert_eq!(
        sorted_labels(app, "state=active,deactivated").await,
        strs(&["alpha", "bravo", "delta", "echo"])
    );
    assert_eq!(
        sorted_labels(app, "state=pre_activation&state=deactivated").await,
        strs(&["charlie", "delta"]),
        "repeated parameters"
    );
    let r = app.get(&format!("{KEYS}?state=sleeping")).await.expect(400);
    assert_eq!(r.target(), "state");

    // Lists carry the cached status of every key.
    let list = app.get(&format!("{KEYS}?label=alpha")).await.expect(200);
    assert_status(
        status0(&list.body["managed_keys"][0]),
        "active",
        "ok",
        "active_key_is_active_in_keystore",
    );
}

#[tokio::test]
async fn list_pages_across_states_and_vaults_keep_the_order_of_last_change() {
    let f = list_fx().await;
    let app = &f.app;
    // The order every page must follow, from the keys themselves: last change, then id.
    let mut all: Vec<(String, String, String)> = Vec::new();
    for body in f.keys.values() {
        let key = app
            .get(&kpath(body["id"].as_str().unwrap()))
            .await
            .expect(200);
        all.push((
            key.body["updated_at"].as_str().unwrap().to_owned(),
            key.body["id"].as_str().unwrap().to_owned(),
            key.body["label"].as_str().unwrap().to_owned(),
        ));
    }
    all.sort();
    let ordered = |descending: bool, keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut labels: Vec<String> = all
            .iter()
            .filter(|(_, _, l)| keep(l))
            .map(|(_, _, l)| l.clone())
            .collect();
        if descending {
            labels.reverse();
        }
        labels
    };
    let both_vaults = format!("vault.id={}&vault.id={}", f.v1, f.v2);
    for (query, descending, keep) in [
        ("", true, &(|l: &str| l != "delta") as &dyn Fn(&str) -> bool),
        ("state=active,deactivated", true, &|l: &str| l != "charlie"),
        ("sort=updated_at", false, &|l: &str| l != "delta"),
        (
            &*format!("{both_vaults}&state=pre_activation,active,deactivated"),
            true,
            &|_: &str| true,
        ),
        (
            &*format!("vault.id={}&state=active,deactivated", f.v1),
            true,
            &|l: &str| ["alpha", "bravo", "delta"].contains(&l),
        ),
    ] {
        let expected = ordered(descending, keep);
        // One page, and the same walked two keys at a time.
        let sep = if query.is_empty() { "" } else { "&" };
        let whole = app
            .get(&format!("{KEYS}?{query}{sep}limit=100"))
            .await
            .expect(200);
        assert_eq!(whole.body["total_count"], expected.len(), "{query}");
        let mut walked = Vec::new();
        for offset in (0..expected.len() + 2).step_by(2) {
            let page = app
                .get(&format!("{KEYS}?{query}{sep}limit=2&offset={offset}"))
                .await
                .expect(200);
            assert_eq!(
                page.body["total_count"],
                expected.len(),
                "{query} at {offset}"
            );
            walked.extend(labels(&page.body));
        }
        assert_eq!(walked, expected, "{query}");
    }
    // In label order, whether the page walks the label index (most keys match) or sorts the
    // few that match.
    for (query, expected) in [
        ("sort=label", strs(&["alpha", "bravo", "charlie", "echo"])),
        (
            "sort=-label&state=active",
            strs(&["echo", "bravo", "alpha"]),
        ),
        ("sort=label&state=deactivated", strs(&["delta"])),
        (
            &*format!("sort=label&vault.id={}&state=active,deactivated", f.v1),
            strs(&["alpha", "bravo", "delta"]),
        ),
    ] {
        assert_eq!(list_labels(app, query).await, expected, "{query}");
    }
}

#[tokio::test]
async fn list_filters_on_algorithm_label_vault_and_size() {
    let f = list_fx().await;
    let app = &f.app;
    assert_eq!(
        sorted_labels(app, "algorithm=hmac").await,
        strs(&["charlie"])
    );
    assert_eq!(
        sorted_labels(app, "algorithm=aes").await,
        strs(&["alpha", "bravo", "echo"])
    );
    assert_eq!(sorted_labels(app, "label=bravo").await, strs(&["bravo"]));
    assert!(sorted_labels(app, "label=zulu").await.is_empty());
    assert_eq!(
        sorted_labels(app, &format!("vault.id={}", f.v2)).await,
        strs(&["echo"])
    );
    assert_eq!(
        sorted_labels(app, &format!("vault.id={},{}", f.v1, f.v2)).await,
        strs(&["alpha", "bravo", "charlie", "echo"])
    );
    let r = app.get(&format!("{KEYS}?vault.id=nope")).await.expect(400);
    assert_eq!(r.target(), "vault.id");

    assert_eq!(sorted_labels(app, "size=128").await, strs(&["bravo"]));
    assert_eq!(
        sorted_labels(app, "size_min=192").await,
        strs(&["alpha", "charlie", "echo"])
    );
    assert_eq!(
        sorted_labels(app, "size_max=192").await,
        strs(&["bravo", "echo"])
    );
    assert_eq!(
        sorted_labels(app, "size_min=129&size_max=256").await,
        strs(&["alpha", "echo"])
    );
    // Overlapping bounds all apply (they were refused with 400, though the document allows
    // them).
    assert_eq!(
        sorted_labels(app, "size=128&size_min=100").await,
        sorted_labels(app, "size=128").await
    );
    assert!(sorted_labels(app, "size=128&size_min=200").await.is_empty());
}

#[tokio::test]
async fn list_filters_on_dates() {
    let f = list_fx().await;
    let app = &f.app;
    let bravo_activation = f.day("bravo", "activation_date");
    let echo_activation = f.day("echo", "activation_date");
    assert!(bravo_activation > echo_activation);
    assert_eq!(
        sorted_labels(app, &format!("activation_date={bravo_activation}")).await,
        strs(&["bravo"])
    );
    assert_eq!(
        sorted_labels(app, &format!("activation_date_min={bravo_activation}")).await,
        strs(&["bravo"])
    );
    assert_eq!(
        sorted_labels(app, &format!("activation_date_max={echo_activation}")).await,
        strs(&["alpha", "charlie", "echo"])
    );
    assert_eq!(
        sorted_labels(
            app,
            &format!("activation_date={bravo_activation}&activation_date_min={bravo_activation}")
        )
        .await,
        strs(&["bravo"])
    );

    // expiration_date filters the deactivation date; both names work.
    let bravo_expiration = f.day("bravo", "expiration_date");
    let alpha_expiration = f.day("alpha", "expiration_date");
    let echo_expiration = f.day("echo", "expiration_date");
    assert_eq!(
        sorted_labels(app, &format!("expiration_date={bravo_expiration}")).await,
        strs(&["bravo"])
    );
    assert_eq!(
        sorted_labels(app, &format!("deactivation_date={bravo_expiration}")).await,
        strs(&["bravo"])
    );
    assert_eq!(
        sorted_labels(app, &format!("deactivation_date_min={bravo_expiration}")).await,
        strs(&["bravo"])
    );
    assert_eq!(
        sorted_labels(app, &format!("expiration_date_max={echo_expiration}")).await,
        strs(&["alpha", "charlie", "echo"])
    );
    // Both names together: both filters apply to the one date.
    assert_eq!(
        sorted_labels(
            app,
            &format!("expiration_date={alpha_expiration}&deactivation_date_min={alpha_expiration}")
        )
        .await,
        sorted_labels(app, &format!("deactivation_date={alpha_expiration}")).await
    );
    assert!(
        sorted_labels(
            app,
            &format!("expiration_date={alpha_expiration}&deactivation_date={bravo_expiration}")
        )
        .await
        .is_empty()
    );
    let r = app
        .get(&format!("{KEYS}?expiration_date=2030-13-01"))
        .await
        .expect(400);
    assert_eq!(r.target(), "expiration_date");

    // created_at: whole days.
    let first = f.day("alpha", "created_at");
    let last = f.day("echo", "created_at");
    assert_eq!(
        sorted_labels(
            app,
            &format!("created_at_min={first}&created_at_max={last}")
        )
        .await,
        strs(&["alpha", "bravo", "charlie", "echo"])
    );
    if first == last {
        assert_eq!(
            sorted_labels(app, &format!("created_at={first}")).await,
            strs(&["alpha", "bravo", "charlie", "echo"])
        );
    }
    let day_before = first.pred_opt().expect("date");
    let day_after = last.succ_opt().expect("date");
    assert!(
        sorted_labels(app, &format!("created_at_max={day_before}"))
            .await
            .is_empty()
    );
    assert!(
        sorted_labels(app, &format!("created_at_min={day_after}"))
            .await
            .is_empty()
    );
    let r = app
        .get(&format!("{KEYS}?created_at=yesterday"))
        .await
        .expect(400);
    assert_eq!(r.target(), "created_at");
}

/// A list filtered on one date (with or without states and vaults) takes its total from the
/// per-day counts the store keeps: they must agree with the keys themselves through creation,
/// activation, rotation, deactivation, destruction and deletion.
#[tokio::test]
async fn date_filtered_totals_agree_with_the_keys_through_the_lifecycle() {
    let f = fx().await;
    let app = &f.app;
    let activated = f.pre("day-activated").await.id();
    let rotated = f.active("day-rotated").await.id();
    f.key_in("day-deactivated", "deactivated").await;
    let deleted = f.key_in("day-deleted", "destroyed").await;
    f.key_in("day-destroyed", "destroyed").await;
    f.active("day-untouched").await;
    act(app, &activated, "activate").await.expect(200);
    act(app, &rotated, "rotate").await.expect(200);
    app.with_etag("DELETE", &kpath(&deleted), "", None)
        .await
        .expect(204);

    let today = chrono::Utc::now().date_naive();
    let yesterday = today.pred_opt().expect("date");
    let tomorrow = today.succ_opt().expect("date");
    let fields = [
        "activation_date",
        "expiration_date",
        "deactivation_date",
        "created_at",
        "updated_at",
        "rotated_at",
    ];
    let states = [
        String::new(),
        "&state=active".into(),
        "&state=deactivated,destroyed".into(),
        "&state=pre_activation,active,deactivated,destroyed".into(),
        format!("&vault.id={}", f.vault),
    ];
    for field in fields {
        for bound in [
            format!("{field}_min={yesterday}"),
            format!("{field}_min={tomorrow}"),
            format!("{field}_max={today}"),
            format!("{field}_max={yesterday}"),
            format!("{field}_min={yesterday}&{field}_max={tomorrow}"),
        ] {
            for also in &states {
                // `list_labels` checks that `total_count` is the number of keys listed.
                list_labels(app, &format!("limit=200&{bound}{also}")).await;
            }
        }
    }
    let everything = "limit=200&state=pre_activation,active,deactivated,destroyed";
    assert_eq!(
        sorted_labels(app, &format!("{everything}&created_at_min={yesterday}")).await,
        strs(&[
            "day-activated",
            "day-deactivated",
            "day-destroyed",
            "day-rotated",
            "day-untouched"
        ]),
        "the deleted key is gone from the counts"
    );
    assert_eq!(
        sorted_labels(app, &format!("{everything}&rotated_at_min={yesterday}")).await,
        strs(&["day-rotated"])
    );
}

#[tokio::test]
async fn list_filters_on_template_and_keystores() {
    let f = list_fx().await;
    let app = &f.app;
    assert_eq!(
        sorted_labels(app, "template.name=AES").await,
        strs(&["alpha", "bravo", "echo"])
    );
    assert_eq!(
        sorted_labels(app, "template.name=AES-B").await,
        strs(&["bravo"])
    );
    assert_eq!(
        sorted_labels(app, "template.name=HM").await,
        strs(&["charlie"])
    );
    assert!(
        sorted_labels(app, "template.name=MAC").await.is_empty(),
        "template.name is a prefix, not a substring"
    );
    assert_eq!(
        sorted_labels(app, &format!("template.id={}", f.hmac_template)).await,
        strs(&["charlie"])
    );

    assert_eq!(
        sorted_labels(app, "referenced_keystores[].type=ibm_cloud_kms").await,
        strs(&["alpha", "bravo", "charlie", "echo"])
    );
    assert!(
        sorted_labels(app, "referenced_keystores[].type=aws_kms")
            .await
            .is_empty()
    );
    assert_eq!(
        sorted_labels(app, "referenced_keystores[].name=ks-two").await,
        strs(&["echo"])
    );
    assert_eq!(
        sorted_labels(app, "referenced_keystores[].name=ks-one,ks-two").await,
        strs(&["alpha", "bravo", "charlie", "echo"])
    );
    assert!(
        sorted_labels(app, "referenced_keystores[].name=ks-three")
            .await
            .is_empty()
    );
    assert_eq!(
        sorted_labels(app, "instances[].keystore.type=ibm_cloud_kms").await,
        strs(&["alpha", "bravo", "charlie", "echo"])
    );
    assert!(
        sorted_labels(app, "instances[].keystore.type=google_kms")
            .await
            .is_empty()
    );
    // Both filters together apply both (they were refused with 400, though the document
    // allows them).
    assert_eq!(
        sorted_labels(
            app,
            "referenced_keystores[].type=ibm_cloud_kms&instances[].keystore.type=ibm_cloud_kms"
        )
        .await,
        strs(&["alpha", "bravo", "charlie", "echo"])
    );
    assert!(
        sorted_labels(
            app,
            "referenced_keystores[].type=ibm_cloud_kms&instances[].keystore.type=google_kms"
        )
        .await
        .is_empty()
    );
}

#[tokio::test]
async fn list_sorts_by_label() {
    let f = list_fx().await;
    assert_eq!(
        list_labels(&f.app, "sort=label").await,
        strs(&["alpha", "bravo", "charlie", "echo"])
    );
    assert_eq!(
        list_labels(&f.app, "sort=-label").await,
        strs(&["echo", "charlie", "bravo", "alpha"])
    );
    let r = f.app.get(&format!("{KEYS}?sort=colour")).await.expect(400);
    assert_eq!(r.target(), "sort");
}

fn href_of(v: &Value) -> String {
    v["href"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn list_pages_carry_offset_links() {
    let f = fx().await;
    for l in ["k1", "k2", "k3", "k4", "k5"] {
        f.active(l).await;
    }
    let page = |q: &'static str| {
        let app = &f.app;
        async move { app.get(&format!("{KEYS}?{q}")).await.expect(200) }
    };

    let p1 = page("sort=label&limit=2").await;
    assert_eq!(p1.body["total_count"], 5);
    assert_eq!(p1.body["limit"], 2);
    assert_eq!(p1.body["offset"], 0);
    assert_eq!(labels(&p1.body), strs(&["k1", "k2"]));
    assert!(p1.body.get("previous").is_none(), "{}", p1.body);
    let next = href_of(&p1.body["next"]);
    assert!(next.contains("offset=2"), "{next}");
    assert!(next.contains("limit=2"), "{next}");
    assert!(next.contains("sort=label"), "filters kept: {next}");
    assert!(
        href_of(&p1.body["first"]).contains("offset=0"),
        "{}",
        p1.body
    );
    assert!(
        href_of(&p1.body["last"]).contains("offset=4"),
        "{}",
        p1.body
    );

    // Following next.href gives the second page.
    let rel = next.strip_prefix(PUBLIC_URL).unwrap_or(&next).to_owned();
    let p2 = f.app.get(&rel).await.expect(200);
    assert_eq!(labels(&p2.body), strs(&["k3", "k4"]));
    assert!(href_of(&p2.body["next"]).contains("offset=4"));
    assert!(href_of(&p2.body["previous"]).contains("offset=0"));

    let p3 = page("sort=label&limit=2&offset=4").await;
    assert_eq!(labels(&p3.body), strs(&["k5"]));
    assert_eq!(p3.body["total_count"], 5);
    assert!(p3.body.get("next").is_none(), "last page: {}", p3.body);
    assert!(
        href_of(&p3.body["previous"]).contains("offset=2"),
        "{}",
        p3.body
    );

    let beyond = page("sort=label&limit=2&offset=10").await;
    assert_eq!(labels(&beyond.body), Vec::<String>::new());
    assert_eq!(beyond.body["total_count"], 5);
}

#[tokio::test]
async fn associated_resources_of_an_internal_key_are_an_empty_list() {
    let f = fx().await;
    let id = f.active("lonely").await.id();
    let r = f
        .app
        .get(&format!("{}/associated_resources", kpath(&id)))
        .await
        .expect(200);
    assert_eq!(r.body["total_count"], 0, "{}", r.body);
    assert_eq!(r.body["associated_resources"], json!([]));
    assert_eq!(r.body["limit"], 20);
    assert_eq!(r.body["offset"], 0);
    assert!(href_of(&r.body["first"]).contains("offset=0"), "{}", r.body);
    assert!(r.body.get("next").is_none());

    let missing = uuid::Uuid::new_v4().to_string();
    let r = f
        .app
        .get(&format!("{}/associated_resources", kpath(&missing)))
        .await
        .expect(404);
    assert_eq!(r.code(), "not_found");
}

// ---- further rules ----

#[tokio::test]
async fn legacy_uko_vault_header_is_checked_on_every_per_key_call() {
    // decisions.md §1: a UKO-Vault header naming another vault than the resource's is 400.
    // Spec §2: legacy clients sent it on every managed-key call but the top-level list.
    let f = fx().await;
    let other = f.app.vault("elsewhere").await;
    let calls: [(&str, &str); 12] = [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/versions"),
        ("GET", "/status_in_keystores"),
        ("GET", "/associated_resources"),
        ("POST", "/update_from_template"),
        ("POST", "/deactivate"),
        ("POST", "/rotate"),
        ("POST", "/sync_status_in_keystores"),
        ("POST", "/activate"),
        ("POST", "/destroy"),
    ];
    let mut accepted = Vec::new();
    for (i, (method, suffix)) in calls.into_iter().enumerate() {
        // A fresh key per call: activate and destroy need a deactivated key, the others an active one.
        let state = if matches!(suffix, "/activate" | "/destroy") {
            "deactivated"
        } else {
            "active"
        };
        let id = f.key_in(&format!("legacy-{i}"), state).await;
        let before = get_key(&f.app, &id).await;
        let body = (method == "PATCH").then(|| json!({ "description": "from a legacy client" }));
        let r = f
            .app
            .call(
                method,
                &format!("{}{suffix}", kpath(&id)),
                body,
                &[("if-match", &before.etag()), ("UKO-Vault", &other)],
            )
            .await;
        let after = get_key(&f.app, &id).await;
        if r.status.as_u16() != 400 || r.target() != "UKO-Vault" || after.etag() != before.etag() {
            accepted.push(format!(
                "{method} …{suffix} -> {} (state {} -> {})",
                r.status, before.body["state"], after.body["state"]
            ));
        }
    }
    assert!(
        accepted.is_empty(),
        "calls that accepted a UKO-Vault header naming another vault: {accepted:#?}"
    );

    // With the right vault the same calls work.
    let id = f.active("legacy-ok").await.id();
    let r = f
        .app
        .call(
            "POST",
            &format!("{}/deactivate", kpath(&id)),
            None,
            &[("if-match", "*"), ("UKO-Vault", &f.vault)],
        )
        .await
        .expect(200);
    assert_eq!(r.body["state"], "deactivated");
}

#[tokio::test]
async fn deactivating_a_rotated_key_deactivates_every_version() {
    // Spec §7.3: deactivate disables the key in every keystore; no version of a deactivated key
    // is usable, so none may be listed as active.
    let f = fx().await;
    let id = f.active("rotated-then-off").await.id();
    act(&f.app, &id, "rotate").await.expect(200);
    act(&f.app, &id, "deactivate").await.expect(200);
    let v = f
        .app
        .get(&format!("{}/versions", kpath(&id)))
        .await
        .expect(200);
    let states: Vec<(Value, Value)> = v.body["managed_keys"]
        .as_array()
        .expect("managed_keys")
        .iter()
        .map(|k| (k["version"].clone(), k["state"].clone()))
        .collect();
    assert_eq!(states.len(), 2, "{}", v.body);
    assert!(
        states.iter().all(|(_, s)| s == "deactivated"),
        "versions of a deactivated key: {states:?}"
    );
    let active = f
        .app
        .get(&format!("{}/versions?state=active", kpath(&id)))
        .await
        .expect(200);
    assert_eq!(active.body["total_count"], 0, "{}", active.body);
}

#[tokio::test]
async fn destroy_removes_the_copy_left_in_a_keystore_the_key_moved_away_from() {
    // Spec §7.2: a keystore that leaves a key's distribution keeps a deactivated copy "until the
    // key is destroyed"; spec §3.4: destroyed keys are never installed in a keystore.
    let app = TestApp::new().await;
    let vault = app.vault("moved").await;
    let ks1 = app.internal_keystore(&vault, "ks-one", &["g1"]).await;
    let ks2 = app.internal_keystore(&vault, "ks-two", &["g2"]).await;
    let t = app
        .template(&vault, "T-MOVE", "aes", "256", "active", "g1")
        .await;
    let id = app.key(&vault, "T-MOVE", "mover").await.expect(201).id();
    app.with_etag(
        "PATCH",
        &format!("{TEMPLATES}/{t}"),
        "",
        Some(json!({ "keystores": [{ "type": "ibm_cloud_kms", "group": "g2" }] })),
    )
    .await
    .expect(200);
    app.with_etag("POST", &kpath(&id), "/update_from_template", None)
        .await
        .expect(200);
    act(&app, &id, "deactivate").await.expect(200);
    act(&app, &id, "destroy").await.expect(200);

    let every_state = "state=pre_activation,active,deactivated,destroyed";
    for ks in [&ks2, &ks1] {
        let r = app
            .get(&format!(
                "/api/v4/keystores/{ks}/managed_keys?{every_state}"
            ))
            .await
            .expect(200);
        assert_eq!(
            r.body["total_count"], 0,
            "keystore {ks} still holds the destroyed key: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn sync_keeps_the_state_in_every_state() {
    let f = fx().await;
    for (i, state) in ["pre_activation", "active", "deactivated", "destroyed"]
        .into_iter()
        .enumerate()
    {
        let id = f.key_in(&format!("s{i}"), state).await;
        let r = f
            .app
            .with_etag("POST", &kpath(&id), "/sync_status_in_keystores", None)
            .await;
        assert_eq!(r.status.as_u16(), 200, "sync in {state}: {}", r.body);
        assert!(r.body["status_in_keystores"].is_array(), "{}", r.body);
        assert_eq!(get_key(&f.app, &id).await.body["state"], state);
    }
}

#[tokio::test]
async fn patch_label_must_be_valid_and_unique_in_the_vault() {
    let f = fx().await;
    let a = f.active("first").await.id();
    f.active("second").await;
    let r = f
        .app
        .with_etag("PATCH", &kpath(&a), "", Some(json!({ "label": "second" })))
        .await;
    assert_conflict(&r, "duplicate_name");
    let r = f
        .app
        .with_etag(
            "PATCH",
            &kpath(&a),
            "",
            Some(json!({ "label": "bad*label" })),
        )
        .await
        .expect(400);
    assert_eq!(r.target(), "label");
    assert_eq!(get_key(&f.app, &a).await.body["label"], "first");
}

#[tokio::test]
async fn keys_use_templates_and_keystores_of_their_own_vault_only() {
    let f = fx().await;
    // Same group name in another vault, with its own keystore and template.
    let other = f.app.vault("neighbour").await;
    let foreign_ks = f.app.internal_keystore(&other, "ks-prod", &["prod"]).await;
    f.app
        .template(&other, "T-FOREIGN", "aes", "256", "active", "prod")
        .await;

    let r = f
        .app
        .key(&f.vault, "T-FOREIGN", "borrowed")
        .await
        .expect(400);
    assert_eq!(r.target(), "template_name", "{}", r.body);

    let r = f.active("home").await;
    let refs: Vec<&str> = r.body["referenced_keystores"]
        .as_array()
        .expect("refs")
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(refs, [f.keystore.as_str()], "never {foreign_ks}");
    let created = r.body["created_at"].as_str().expect("created_at");
    assert!(
        created.ends_with('Z') && created.len() == "2025-01-01T00:00:00.000Z".len(),
        "RFC 3339 UTC with milliseconds: {created}"
    );
}

#[tokio::test]
async fn update_from_template_needs_if_match_and_an_unarchived_template() {
    let f = fx().await;
    let id = f.active("realigned").await.id();
    let path = format!("{}/update_from_template", kpath(&id));
    let r = f.app.call("POST", &path, None, &[]).await.expect(428);
    assert_eq!(r.code(), "precondition_required");

    let t = f.app.get(&kpath(&id)).await.body["template"]["id"]
        .as_str()
        .expect("template id")
        .to_owned();
    f.app
        .with_etag("POST", &format!("{TEMPLATES}/{t}"), "/archive", None)
        .await
        .expect(200);
    let r = act(&f.app, &id, "update_from_template").await;
    assert_conflict(&r, "template_archived");

    // A destroyed key cannot be realigned either.
    f.app
        .with_etag("POST", &format!("{TEMPLATES}/{t}"), "/unarchive", None)
        .await
        .expect(200);
    let gone = f.key_in("gone", "destroyed").await;
    let r = act(&f.app, &gone, "update_from_template").await;
    assert_conflict(&r, "invalid_state_transition");
}
