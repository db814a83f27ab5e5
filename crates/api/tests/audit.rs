//! The audit trail: what each kind of call records, redaction, and the hash chain.

use keyplane_testkit::{TestApp, TestResponse};
use serde_json::{Value, json};

const CANARY: &str = "CANARY-secret-value-7f3a9c";

async fn events(app: &TestApp) -> Vec<Value> {
    let r = app.get("/api/v4/audit_events?limit=1000").await.expect(200);
    r.body["audit_events"].as_array().unwrap().clone()
}

async fn last_event(app: &TestApp) -> Value {
    events(app).await.pop().expect("an event")
}

fn trace(r: &TestResponse) -> String {
    r.headers["x-correlation-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn changes_failures_and_denials_are_recorded_with_their_context() {
    let app = TestApp::new().await;
    let created = app
        .post("/api/v4/vaults", json!({ "name": "audited" }))
        .await
        .expect(201);
    let vault = created.id();
    let e = last_event(&app).await;
    assert_eq!(e["action"], "keyplane.vaults.write");
    assert_eq!(e["outcome"], "success");
    assert_eq!(e["status"], 201);
    assert_eq!(e["initiator"], "tester");
    assert_eq!(e["target"], format!("vaults/{vault}"));
    assert_eq!(e["vault_id"], vault.as_str());
    assert_eq!(e["correlation_id"], trace(&created));
    assert_eq!(e["request"]["body"]["name"], "audited");

    // Reads are not recorded.
    let before = events(&app).await.len();
    app.get(&format!("/api/v4/vaults/{vault}"))
        .await
        .expect(200);
    app.get("/api/v4/vaults").await.expect(200);
    assert_eq!(events(&app).await.len(), before);

    // A refused change: recorded as a failure, and the change's own event is not there.
    let refused = app
        .call(
            "PATCH",
            &format!("/api/v4/vaults/{vault}"),
            Some(json!({ "name": "renamed" })),
            &[("if-match", "\"stale\"")],
        )
        .await;
    assert!(refused.status.as_u16() >= 400);
    let e = last_event(&app).await;
    assert_eq!(e["outcome"], "failure");
    assert_eq!(e["status"], refused.status.as_u16());
    assert_eq!(e["severity"], "normal");
    assert_eq!(events(&app).await.len(), before + 1);

    // A call without a valid token: denied, critical, anonymous.
    let denied = app
        .send(
            axum::http::Request::builder()
                .method("DELETE")
                .uri(format!("/api/v4/vaults/{vault}"))
                .header("authorization", "Bearer wrong-token")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .expect(401);
    let e = last_event(&app).await;
    assert_eq!(
        (
            e["outcome"].as_str(),
            e["initiator"].as_str(),
            e["severity"].as_str()
        ),
        (Some("denied"), Some("anonymous"), Some("critical"))
    );
    assert_eq!(e["correlation_id"], trace(&denied));

    // A delete: critical.
    app.with_etag("DELETE", &format!("/api/v4/vaults/{vault}"), "", None)
        .await
        .expect(204);
    let e = last_event(&app).await;
    assert_eq!(
        (
            e["action"].as_str(),
            e["severity"].as_str(),
            e["status"].as_u64()
        ),
        (Some("keyplane.vaults.delete"), Some("critical"), Some(204))
    );

    let report = app.store.verify_audit_chain().await.unwrap();
    assert_eq!(report.first_broken, None);
    assert_eq!(report.events, events(&app).await.len() as u64);
}

#[tokio::test]
async fn secrets_never_reach_an_event() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.post(
        "/api/v4/keystores",
        json!({
            "type": "aws_kms", "vault": { "id": vault }, "name": "aws", "groups": ["cloud"],
            "aws_region": "eu_central_1", "aws_access_key_id": "AKIAEXAMPLE",
            "aws_secret_access_key": CANARY
        }),
    )
    .await
    .expect(201);
    let e = last_event(&app).await;
    assert_eq!(e["action"], "keyplane.target-keystores.write");
    assert_eq!(e["request"]["body"]["aws_secret_access_key"], "[redacted]");
    let all = app.get("/api/v4/audit_events").await.body.to_string();
    assert!(!all.contains(CANARY));
    // Unseal secrets are not even summarised.
    // (Refused: the server is not sealed.)
    app.post("/api/v4/system/unseal", json!({ "passphrase": CANARY }))
        .await
        .expect(409);
    let e = last_event(&app).await;
    assert_eq!(e["action"], "keyplane.system.unseal");
    assert!(e["request"].get("body").is_none());
    assert!(
        !app.get("/api/v4/audit_events")
            .await
            .body
            .to_string()
            .contains(CANARY)
    );
}

#[tokio::test]
async fn data_plane_calls_are_recorded_only_when_they_fail_or_use_a_key_out_of_service() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    let keystore = app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let key = app.key(&vault, "T1", "k").await.expect(201);
    let key_ref = key.body["status_in_keystores"][0]["key_id_in_keystore"]
        .as_str()
        .unwrap()
        .to_owned();
    let action = |verb: &str, body: Value| {
        let path = format!("/api/v2/keys/{key_ref}/actions/{verb}");
        let keystore = keystore.clone();
        let app = &app;
        async move {
            app.call(
                "POST",
                &path,
                Some(body),
                &[("bluemix-instance", &keystore)],
            )
            .await
        }
    };
    let before = events(&app).await.len();
    let wrapped = action("wrap", json!({})).await.expect(200);
    action(
        "unwrap",
        json!({ "ciphertext": wrapped.body["ciphertext"] }),
    )
    .await
    .expect(200);
    assert_eq!(
        events(&app).await.len(),
        before,
        "routine use is not recorded"
    );

    app.with_etag(
        "POST",
        &format!("/api/v4/managed_keys/{}", key.id()),
        "/deactivate",
        None,
    )
    .await
    .expect(200);
    let e = last_event(&app).await;
    assert_eq!(e["action"], "keyplane.managed-keys.write");
    assert_eq!(e["target"], format!("managed_keys/{}", key.id()));

    action(
        "unwrap",
        json!({ "ciphertext": wrapped.body["ciphertext"] }),
    )
    .await
    .expect(200);
    let e = last_event(&app).await;
    assert_eq!(
        (e["action"].as_str(), e["outcome"].as_str()),
        (Some("keyplane.data-plane.unwrap"), Some("success"))
    );
    assert_eq!(e["target"], format!("managed_keys/{}", key.id()));
    assert!(
        e["request"].get("body").is_none(),
        "no ciphertext in events"
    );
    action("wrap", json!({})).await.expect(409);
    let e = last_event(&app).await;
    assert_eq!(
        (
            e["action"].as_str(),
            e["outcome"].as_str(),
            e["status"].as_u64()
        ),
        (Some("keyplane.data-plane.wrap"), Some("failure"), Some(409))
    );
}

#[tokio::test]
async fn events_list_filters_and_pages() {
    let app = TestApp::new().await;
    for name in ["a", "b", "c"] {
        app.vault(name).await;
    }
    app.post("/api/v4/vaults", json!({ "name": "a" }))
        .await
        .expect(409);
    let r = app
        .get("/api/v4/audit_events?outcome=failure")
        .await
        .expect(200);
    assert_eq!(r.body["total_count"], 1);
    let r = app
        .get("/api/v4/audit_events?action=keyplane.vaults.write&limit=2")
        .await
        .expect(200);
    assert_eq!(r.body["total_count"], 4);
    assert_eq!(r.body["audit_events"].as_array().unwrap().len(), 2);
    assert!(
        r.body["next"]["href"]
            .as_str()
            .unwrap()
            .contains("offset=2")
    );
    let seq = r.body["audit_events"][1]["seq"].as_i64().unwrap();
    let after = app
        .get(&format!("/api/v4/audit_events?after_seq={seq}"))
        .await
        .expect(200);
    assert_eq!(after.body["audit_events"][0]["seq"], seq + 1);
    // Unfiltered, the total is the chain's length after the sequence number given (and never
    // below zero past its end).
    let everything = app.get("/api/v4/audit_events?limit=1000").await.expect(200);
    let listed = everything.body["audit_events"].as_array().unwrap().len() as i64;
    assert_eq!(everything.body["total_count"], listed);
    assert_eq!(after.body["total_count"], listed - seq);
    assert_eq!(
        after.body["total_count"],
        after.body["audit_events"].as_array().unwrap().len()
    );
    let beyond = app
        .get(&format!("/api/v4/audit_events?after_seq={}", listed + 50))
        .await
        .expect(200);
    assert_eq!(beyond.body["total_count"], 0);
    let r = app
        .get("/api/v4/audit_events?outcome=maybe")
        .await
        .expect(400);
    assert_eq!(r.target(), "outcome");
    app.get("/api/v4/audit_events?since=yesterday")
        .await
        .expect(400);
}

#[tokio::test]
async fn destroying_a_key_is_a_critical_event() {
    let app = TestApp::new().await;
    let vault = app.vault("v").await;
    app.internal_keystore(&vault, "internal", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "pre_activation", "g")
        .await;
    let key = app.key(&vault, "T1", "k").await.expect(201).id();
    app.with_etag(
        "POST",
        &format!("/api/v4/managed_keys/{key}"),
        "/destroy",
        None,
    )
    .await
    .expect(200);
    let e = last_event(&app).await;
    assert_eq!(
        (e["action"].as_str(), e["severity"].as_str()),
        (Some("keyplane.managed-keys.write"), Some("critical"))
    );
}

/// A flood of denied calls from one caller is recorded up to a bound a minute, then counted into
/// one summary; the recorded query strings are cut to a fixed size.
#[tokio::test]
async fn a_flood_of_denials_is_bounded_and_summarised() {
    let app = TestApp::new().await;
    app.add_caller("mallory-token", "mallory", &[]);
    let before = events(&app).await.len();
    let query = "x".repeat(16 * 1024);
    let calls = 200;
    for _ in 0..calls {
        app.call_as(
            "mallory-token",
            "GET",
            &format!("/api/v4/audit_events?label={query}"),
            None,
            &[],
        )
        .await
        .expect(403);
    }
    let recorded: Vec<Value> = events(&app).await.split_off(before);
    let bound = keyplane_core::audit::denials::EVENTS_PER_WINDOW as usize;
    assert_eq!(recorded.len(), bound, "one event each up to the bound");
    for e in &recorded {
        assert_eq!(e["initiator"], "mallory");
        assert_eq!(e["outcome"], "denied");
        let kept = e["request"]["query"].as_str().unwrap();
        assert!(
            kept.len() <= keyplane_core::audit::MAX_RECORDED_QUERY + 64,
            "{} bytes kept",
            kept.len()
        );
        assert!(kept.contains("truncated"), "says it was cut");
    }
    // The rest is one summary event with the count, written when the window ends (here: at
    // shutdown).
    app.keyplane.close_denial_windows().await;
    let summary = last_event(&app).await;
    assert_eq!(summary["action"], "keyplane.audit.denials-summarised");
    assert_eq!(summary["initiator"], "mallory");
    assert_eq!(summary["status"], 403);
    assert_eq!(summary["request"]["denied_calls"], calls - bound);
    assert_eq!(events(&app).await.len(), before + bound + 1);
    // The chain still verifies.
    let report = app.store.verify_audit_chain().await.unwrap();
    assert!(report.first_broken.is_none(), "{report:?}");
}

/// The event written with a change records the status the call answered with: 201 for every
/// create (API keys, policies, Key Protect keys and import tokens too), 202 for a request under
/// dual control.
#[tokio::test]
async fn events_record_the_status_the_call_answered() {
    let app = TestApp::new().await;
    let vault = app.vault("statuses").await;
    let keystore = app.internal_keystore(&vault, "ks", &["g"]).await;
    app.template(&vault, "T1", "aes", "256", "active", "g")
        .await;
    let principal = app
        .post("/api/v4/access/principals", json!({"name": "p1"}))
        .await
        .expect(201)
        .id();
    let mut answers = vec![
        app.post(
            &format!("/api/v4/access/principals/{principal}/api_keys"),
            json!({}),
        )
        .await,
        app.post(
            "/api/v4/access/policies",
            json!({"principal": {"id": principal}, "role": "reader"}),
        )
        .await,
    ];
    let api_key = answers[0].id();
    answers.push(
        app.post(
            &format!("/api/v4/access/api_keys/{api_key}/rotate"),
            json!({}),
        )
        .await,
    );
    let instance = [("bluemix-instance", keystore.as_str())];
    answers.push(
        app.call(
            "POST",
            "/api/v2/keys",
            Some(json!({"resources": [{"name": "kp-key", "extractable": false}]})),
            &instance,
        )
        .await,
    );
    answers.push(
        app.call("POST", "/api/v2/import_token", Some(json!({})), &instance)
            .await,
    );
    app.require_dual_control(&vault).await;
    let key = app.key(&vault, "T1", "guarded").await.expect(201).id();
    let path = format!("/api/v4/managed_keys/{key}");
    app.with_etag("POST", &path, "/deactivate", None)
        .await
        .expect(200);
    answers.push(app.with_etag("POST", &path, "/destroy", None).await);
    let all = events(&app).await;
    for answer in answers {
        let status = answer.status.as_u16();
        assert!(status == 201 || status == 202, "{status} {}", answer.body);
        let correlation = trace(&answer);
        let recorded: Vec<&Value> = all
            .iter()
            .filter(|e| e["correlation_id"] == correlation.as_str())
            .collect();
        assert_eq!(recorded.len(), 1, "one event for {correlation}");
        assert_eq!(recorded[0]["status"], status, "{}", recorded[0]);
    }
}

/// `after_seq` is a position in the chain: a negative one is refused, not read as "from the start".
#[tokio::test]
async fn a_negative_position_in_the_chain_is_refused() {
    let app = TestApp::new().await;
    let r = app
        .get("/api/v4/audit_events?after_seq=-1")
        .await
        .expect(400);
    assert_eq!(r.target(), "after_seq");
    app.get("/api/v4/audit_events?after_seq=0")
        .await
        .expect(200);
}
