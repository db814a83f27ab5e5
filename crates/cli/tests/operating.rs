//! Running Keyplane for real, through the binary: metrics on the API listener (administrators
//! only) and on a separate unauthenticated listener, read back with a Prometheus text parser.

mod common;

use common::*;
use keyplane_testkit::process::Server;
use serde_json::json;

/// One sample of the metrics: its name, labels and value (a histogram's buckets are samples
/// of their own, named `…_bucket` with an `le` label).
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::HashMap<String, String>,
    value: f64,
}

/// The Prometheus project's own OpenMetrics parser (its Python client), which refuses any
/// text that is not well-formed OpenMetrics.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = [{"name": s.name, "labels": s.labels, "value": s.value}
           for family in text_string_to_metric_families(sys.stdin.read()) for s in family.samples]
print(json.dumps(samples))
"#;

/// The metrics as a scraper reads them: (status, samples).
async fn scrape(http: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Vec<Sample>) {
    let mut req = http.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    if status != 200 {
        return (status, Vec::new());
    }
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let text = r.text().await.unwrap();
    // The Python of the client libraries' virtualenv (scripts/test.sh) has the parser.
    let python = std::env::var("KEYPLANE_TEST_KP_PYTHON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/clients-venv/bin/python"
        )
        .into()
    });
    let mut child = tokio::process::Command::new(python)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut child.stdin.take().unwrap(), text.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the metrics do not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    (200, serde_json::from_slice(&out.stdout).unwrap())
}

/// The value of the sample `name` whose labels include every pair of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[tokio::test]
async fn metrics_count_calls_and_show_the_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = keyplane_testkit::peers::free_port().unwrap();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_METRICS_LISTEN", &metrics_address),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    let http = reqwest::Client::new();
    let api_metrics = format!("{}/metrics", server.base);
    let open_metrics = format!("http://{metrics_address}/metrics");

    let (status, before) = scrape(&http, &api_metrics, Some(TOKEN)).await;
    assert_eq!(status, 200, "an administrator reads the metrics");
    let list_route = [
        ("method", "GET"),
        ("route", "/api/v4/vaults"),
        ("status", "200"),
    ];
    let listed_before = value(&before, "keyplane_http_requests_total", &list_route).unwrap_or(0.0);

    // Calls move the counters: three lists, two keys created, a wrap and a failed unwrap.
    for _ in 0..3 {
        assert_eq!(c.get("/api/v4/vaults").await.unwrap().status, 200);
    }
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "metered-1").await;
    create_key(&c, &vault, "metered-2").await;
    let key_ref = key_ref(&key);
    let (_, ciphertext) = wrap_new(&c, &keystore, &key_ref).await;
    let (status, _) = data_plane(
        &c,
        &keystore,
        &key_ref,
        "unwrap",
        &json!({ "ciphertext": "bm90IGEgY2lwaGVydGV4dA==" }),
    )
    .await;
    assert_eq!(status, 400);
    assert!(!ciphertext.is_empty());

    let (status, after) = scrape(&http, &open_metrics, None).await;
    assert_eq!(
        status, 200,
        "the metrics listener answers without credentials"
    );
    assert_eq!(
        value(&after, "keyplane_http_requests_total", &list_route),
        Some(listed_before + 3.0)
    );
    let wrap = [
        ("method", "POST"),
        ("route", "/api/v2/keys/{id}/actions/wrap"),
    ];
    assert_eq!(
        value(
            &after,
            "keyplane_http_requests_total",
            &[wrap[0], wrap[1], ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after,
            "keyplane_http_requests_total",
            &[
                ("route", "/api/v2/keys/{id}/actions/unwrap"),
                ("status", "400")
            ]
        ),
        Some(1.0)
    );
    // The latency histogram counted the wrap, in seconds.
    assert_eq!(
        value(
            &after,
            "keyplane_http_request_duration_seconds_bucket",
            &[wrap[1], ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &after,
            "keyplane_http_request_duration_seconds_sum",
            &[wrap[1]]
        )
        .is_some_and(|s| s > 0.0 && s < 30.0)
    );
    // What the deployment holds.
    assert_eq!(
        value(&after, "keyplane_managed_keys", &[("state", "active")]),
        Some(2.0)
    );
    assert_eq!(value(&after, "keyplane_sealed", &[]), Some(0.0));
    let chain = value(&after, "keyplane_audit_events", &[]).unwrap();
    let verified = c.get("/api/v4/audit_events/verification").await.unwrap();
    assert!(chain >= 5.0 && chain <= verified.body["events"].as_f64().unwrap_or(f64::MAX));
    assert!(value(&after, "keyplane_database_connections_max", &[]).unwrap() >= 1.0);

    // On the API listener, only administrators read them; the refusal is the API's error body.
    let apikey = principal_with_api_key(
        &c,
        "metrics-reader",
        "service",
        &[("reader", Some(vault.as_str()))],
    )
    .await;
    let reader = access_token(&server, &apikey).await;
    let (status, _) = scrape(&http, &api_metrics, Some(&reader)).await;
    assert_eq!(status, 403);
    let (status, _) = scrape(&http, &api_metrics, None).await;
    assert_eq!(status, 401);
    // The metrics listener serves nothing else.
    let r = http
        .get(format!("http://{metrics_address}/api/v4/vaults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http.post(&open_metrics).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

/// Polls `check` every 200 ms for up to 20 s; the last value it saw.
async fn eventually<F, Fut>(what: &str, mut check: F) -> serde_json::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, serde_json::Value)>,
{
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        let (done, seen) = check().await;
        if done {
            return seen;
        }
        last = seen;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{what} did not happen: {last}");
}

#[tokio::test]
async fn schedules_run_on_sqlite() {
    schedules_rotate_deactivate_and_destroy_keys_as_the_scheduler(None).await;
}

/// On PostgreSQL the leader runs them (one node here; `nodes.rs` tests the leader's election).
#[tokio::test]
async fn schedules_run_on_postgres() {
    let database = std::env::var("KEYPLANE_TEST_POSTGRES").expect(
        "KEYPLANE_TEST_POSTGRES must name a PostgreSQL database (scripts/test.sh makes one)",
    );
    let url = keyplane_store::new_postgres_schema(&database)
        .await
        .unwrap();
    schedules_rotate_deactivate_and_destroy_keys_as_the_scheduler(Some(&url)).await;
}

async fn schedules_rotate_deactivate_and_destroy_keys_as_the_scheduler(database: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_SCHEDULE_EVERY", "200ms"),
        ("KEYPLANE_SCHEDULE_MIN_INTERVAL", "1s"),
        ("KEYPLANE_ROTATION_MIN_INTERVAL", "0s"),
        ("KEYPLANE_DESTROY_GRACE_PERIOD", "1s"),
    ];
    if let Some(url) = database {
        env.push(("KEYPLANE_DATABASE_URL", url));
    }
    let server = Server::start(&binary(), dir.path(), &env).await.unwrap();
    let c = server.client();
    let (vault, _) = setup(&c, "active", "aes", "256").await;
    let entry = json!({"type": "ibm_cloud_kms", "group": "prod"});
    let template = |name: &str, key: serde_json::Value| json!({"vault": {"id": vault}, "name": name, "key": key, "keystores": [entry]});

    // Bad schedules are refused, naming the field, and create nothing.
    for (key, field) in [
        (
            json!({"rotation_interval": "PT0S"}),
            "key.rotation_interval",
        ),
        (
            json!({"rotation_interval": "every day"}),
            "key.rotation_interval",
        ),
        (
            json!({"rotation_interval": "PT0.5S"}),
            "key.rotation_interval",
        ),
        // Never sooner than the destroy grace period (1 s here).
        (
            json!({"destroy_after_deactivation": "P"}),
            "key.destroy_after_deactivation",
        ),
    ] {
        let mut body = json!({"algorithm": "aes", "size": "256", "state": "active"});
        body.as_object_mut()
            .unwrap()
            .extend(key.as_object().unwrap().clone());
        let r = c
            .post("/api/v4/templates", &template("BAD", body))
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["errors"][0]["target"]["name"], field, "{}", r.body);
    }
    assert_eq!(
        c.get("/api/v4/templates?name=BAD").await.unwrap().body["total_count"],
        0
    );

    // A template rotating its keys every second: its keys get new versions by themselves.
    let r = c
        .post(
            "/api/v4/templates",
            &template(
                "ROTATING",
                json!({"algorithm": "aes", "size": "256", "state": "active", "rotation_interval": "PT1S"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["key"]["rotation_interval"], "PT1S");
    let rotating = [
        create_key_from(&c, &vault, "ROTATING", "rotating-1").await,
        create_key_from(&c, &vault, "ROTATING", "rotating-2").await,
    ];
    assert_eq!(rotating[0]["rotation_interval"], "PT1S");
    assert_eq!(rotating[0]["next_scheduled_action"]["action"], "rotate");
    for key in &rotating {
        let path = format!("/api/v4/managed_keys/{}", id(key));
        eventually("two scheduled rotations", || async {
            let k = c.get(&path).await.unwrap().body;
            (k["version"].as_u64().unwrap_or(0) >= 2, k)
        })
        .await;
    }
    // Each rotation is the ordinary operation, audited with initiator `scheduler`.
    let events = c
        .get("/api/v4/audit_events?initiator=scheduler&limit=100")
        .await
        .unwrap()
        .body;
    let events = events["audit_events"].as_array().unwrap();
    for key in &rotating {
        assert!(
            events.iter().any(|e| e["outcome"] == "success"
                && e["initiator"] == "scheduler"
                && e.to_string().contains(&id(key))),
            "{events:?}"
        );
    }
    // A key whose schedule is cleared is rotated no more.
    let path = format!("/api/v4/managed_keys/{}", id(&rotating[0]));
    let current = c.get(&path).await.unwrap();
    let r = c
        .send(
            "PATCH",
            &path,
            Some(&json!({"rotation_interval": ""})),
            Some(&current.etag),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("next_scheduled_action").is_none(), "{}", r.body);
    let version = r.body["version"].as_u64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(c.get(&path).await.unwrap().body["version"], version);

    // A key deactivated as its expiration date begins, then destroyed two seconds later.
    let r = c
        .post(
            "/api/v4/templates",
            &template(
                "EXPIRING",
                json!({"algorithm": "aes", "size": "256", "state": "active",
                       "deactivate_on_expiration": true, "destroy_after_deactivation": "PT2S"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let expiring = create_key_from(&c, &vault, "EXPIRING", "expiring-1").await;
    assert_eq!(expiring["deactivate_on_expiration"], true);
    assert_eq!(expiring["destroy_after_deactivation"], "PT2S");
    let path = format!("/api/v4/managed_keys/{}", id(&expiring));
    let today = chrono::Utc::now().date_naive().to_string();
    let current = c.get(&path).await.unwrap();
    assert!(current.body.get("expiration_warning").is_none());
    let r = c
        .send(
            "PATCH",
            &path,
            Some(&json!({"expiration_date": today})),
            Some(&current.etag),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let deactivated = eventually("deactivation on expiration", || async {
        let k = c.get(&path).await.unwrap().body;
        (k["state"] != "active", k)
    })
    .await;
    assert_eq!(deactivated["state"], "deactivated", "{deactivated}");
    let destroyed = eventually("destruction after deactivation", || async {
        let k = c.get(&path).await.unwrap().body;
        (k["state"] == "destroyed", k)
    })
    .await;
    assert!(destroyed.get("next_scheduled_action").is_none());
    let events = c
        .get("/api/v4/audit_events?initiator=scheduler&limit=200")
        .await
        .unwrap()
        .body;
    let on_expiring = events["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains(&id(&expiring)))
        .count();
    assert_eq!(on_expiring, 2, "a deactivation and a destruction: {events}");
    assert!(server.terminate().await.unwrap());
}
