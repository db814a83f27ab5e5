//! Running Keyplane for real, through the binary: metrics on the API listener (administrators
//! only) and on a separate unauthenticated listener, read back with a Prometheus text parser.

mod common;

use common::*;
use futures::StreamExt as _;
use keyplane_testkit::process::Server;
use serde_json::json;

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

    // The deployment's counts are read at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
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
    let url = postgres_schema().await;
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

    // A vault put under dual control after its schedule was set: the key is deactivated on
    // time, but never destroyed by the scheduler, nor is destruction asked for in its name.
    let (guarded_vault, _) = setup(&c, "active", "aes", "256").await;
    let r = c
        .post(
            "/api/v4/templates",
            &json!({"vault": {"id": guarded_vault}, "name": "EXPIRING", "keystores": [entry],
                    "key": {"algorithm": "aes", "size": "256", "state": "active",
                            "deactivate_on_expiration": true, "destroy_after_deactivation": "PT2S"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let guarded = create_key_from(&c, &guarded_vault, "EXPIRING", "guarded-1").await;
    let r = c
        .send(
            "PUT",
            &format!("/api/v4/vaults/{guarded_vault}/dual_control"),
            Some(&json!({"enabled": true})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let path = format!("/api/v4/managed_keys/{}", id(&guarded));
    let current = c.get(&path).await.unwrap();
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
    eventually("deactivation under dual control", || async {
        let k = c.get(&path).await.unwrap().body;
        (k["state"] == "deactivated", k)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(c.get(&path).await.unwrap().body["state"], "deactivated");
    let approvals = c.get("/api/v4/approvals").await.unwrap();
    assert_eq!(approvals.status, 200, "{}", approvals.body);
    assert_eq!(approvals.body["approvals"], json!([]), "{}", approvals.body);
    assert!(server.terminate().await.unwrap());
}

/// A list's export, as a client asking with `accept` gets it: (status, content type, bytes).
async fn export(
    c: &keyplane_testkit::process::Client,
    path: &str,
    accept: &str,
) -> (u16, String, Vec<u8>) {
    let r = c
        .http
        .get(format!("{}{path}", c.base))
        .bearer_auth(&c.token)
        .header("Accept", accept)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, r.bytes().await.unwrap().to_vec())
}

/// The one file of a zip export.
fn unzip(bytes: &[u8]) -> (String, Vec<u8>) {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(archive.len(), 1);
    let mut file = archive.by_index(0).unwrap();
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut content).unwrap();
    (file.name().to_owned(), content)
}

#[tokio::test]
async fn list_exports_hold_exactly_the_filtered_items_past_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_SQLITE_SYNCHRONOUS", "normal"),
            ("KEYPLANE_RATE_LIMIT", "0"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    let (vault, _) = setup(&c, "active", "aes", "256").await;
    let (other_vault, _) = setup(&c, "active", "aes", "256").await;
    // More than one page (1,000) of active keys, one deactivated key and a key in another vault.
    let labels: Vec<String> = (0..1003).map(|i| format!("bulk-{i:04}")).collect();
    futures::stream::iter(labels.iter())
        .for_each_concurrent(8, |label| {
            let (c, vault) = (c.clone(), vault.clone());
            async move {
                create_key(&c, &vault, label).await;
            }
        })
        .await;
    let odd = create_key(&c, &vault, "odd-key").await;
    let odd_path = format!("/api/v4/managed_keys/{}", id(&odd));
    let read = c.get(&odd_path).await.unwrap();
    let r = c
        .send(
            "PATCH",
            &odd_path,
            Some(&json!({"description": "=1+2"})),
            Some(&read.etag),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.with_etag("POST", &odd_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    create_key(&c, &other_vault, "elsewhere").await;

    let filtered = format!("/api/v4/managed_keys?vault.id={vault}&state=active&limit=5");
    let mut expected = std::collections::BTreeSet::new();
    for offset in [0, 1000] {
        let page = c
            .get(&format!(
                "/api/v4/managed_keys?vault.id={vault}&state=active&limit=1000&offset={offset}"
            ))
            .await
            .unwrap();
        expected.extend(page.body["managed_keys"].as_array().unwrap().iter().map(id));
    }
    assert_eq!(expected.len(), 1003);

    // CSV: a header, then one row per filtered key, whatever the limit asked.
    let (status, content_type, csv) = export(&c, &filtered, "text/csv").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/csv; charset=utf-8");
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "id");
    assert_eq!(&headers[1], "label");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let ids: std::collections::BTreeSet<String> = rows.iter().map(|r| r[0].to_owned()).collect();
    assert_eq!(rows.len(), 1003);
    assert_eq!(ids, expected);
    assert!(
        rows.iter()
            .all(|r| &r[2] == "active" && &r[6] == vault.as_str())
    );

    // The same CSV in a zip, by either name UKO gives it.
    for accept in [
        "application/zip",
        "application/vnd.ibm.uko.managed-key-list.v4.1.csv+zip",
    ] {
        let (status, content_type, zipped) = export(&c, &filtered, accept).await;
        assert_eq!((status, content_type.as_str()), (200, "application/zip"));
        let (name, content) = unzip(&zipped);
        assert_eq!(name, "managed-key-list.csv");
        assert_eq!(content, csv);
    }
    // JSON in a zip: the list's items, all of them.
    let (status, _, zipped) = export(
        &c,
        &filtered,
        "application/vnd.ibm.uko.managed-key-list.v4.1.json+zip",
    )
    .await;
    assert_eq!(status, 200);
    let (name, content) = unzip(&zipped);
    assert_eq!(name, "managed-key-list.json");
    let list: serde_json::Value = serde_json::from_slice(&content).unwrap();
    assert_eq!(list["total_count"], 1003);
    let listed: std::collections::BTreeSet<String> = list["managed_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(listed, expected);

    // A cell a spreadsheet would run as a formula is defused; other lists export too.
    let (_, _, deactivated) = export(
        &c,
        &format!("/api/v4/managed_keys?vault.id={vault}&state=deactivated"),
        "text/csv",
    )
    .await;
    let text = String::from_utf8(deactivated).unwrap();
    assert!(text.contains(",'=1+2,"), "{text}");
    for (path, header) in [
        ("/api/v4/vaults", "id,name,description"),
        ("/api/v4/templates", "id,name,vault.id"),
        ("/api/v4/keystores", "id,name,type"),
    ] {
        let (status, _, body) = export(&c, path, "text/csv").await;
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(header), "{text}");
        assert_eq!(text.lines().count(), 3, "a header and two rows: {text}");
    }

    // Another list's UKO type is 406 in the API's error body; other types get the JSON list, as
    // before exports; a bad filter is still 400.
    let (status, content_type, _) = export(&c, &filtered, "text/html").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let (status, _, body) = export(
        &c,
        &filtered,
        "application/vnd.ibm.uko.vault-list.v4.1.csv+zip",
    )
    .await;
    assert_eq!(status, 406);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errors"][0]["code"], "not_acceptable");
    let (status, _, _) = export(&c, "/api/v4/managed_keys?state=bogus", "text/csv").await;
    assert_eq!(status, 400);

    // A caller sees in an export only what it may list.
    let apikey = principal_with_api_key(
        &c,
        "export-manager",
        "service",
        &[("manager", Some(other_vault.as_str()))],
    )
    .await;
    let reader = keyplane_testkit::process::Client {
        token: access_token(&server, &apikey).await,
        ..c.clone()
    };
    let (status, _, body) = export(&reader, "/api/v4/managed_keys", "text/csv").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("elsewhere"));
    // A caller with no role anywhere gets the API's refusal, not an empty file.
    let apikey = principal_with_api_key(&c, "export-nobody", "service", &[]).await;
    let nobody = keyplane_testkit::process::Client {
        token: access_token(&server, &apikey).await,
        ..c.clone()
    };
    let (status, content_type, body) = export(&nobody, "/api/v4/managed_keys", "text/csv").await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(content_type.starts_with("application/json"));
    // HEAD answers as GET would, without the body.
    let r = c
        .http
        .head(format!("{}{filtered}", c.base))
        .bearer_auth(&c.token)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[reqwest::header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    assert!(r.bytes().await.unwrap().is_empty());
    assert!(server.terminate().await.unwrap());
}

#[tokio::test]
async fn a_sqlite_backup_taken_during_writes_restores_every_acknowledged_write() {
    a_backup_taken_during_writes_restores_every_acknowledged_write_under_the_same_seal(None).await;
}

/// A PostgreSQL deployment's backup is the same kind of file: restored here into SQLite.
#[tokio::test]
async fn a_postgres_backup_taken_during_writes_restores_every_acknowledged_write() {
    let url = postgres_schema().await;
    a_backup_taken_during_writes_restores_every_acknowledged_write_under_the_same_seal(Some(&url))
        .await;
}

async fn a_backup_taken_during_writes_restores_every_acknowledged_write_under_the_same_seal(
    database: Option<&str>,
) {
    const PASSPHRASE: &str = "backups open with the seal they were taken under";
    let live = tempfile::tempdir().unwrap();
    let seal = [
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_SEAL", "passphrase"),
        ("KEYPLANE_SEAL_PASSPHRASE", PASSPHRASE),
    ];
    let mut env = seal.to_vec();
    if let Some(url) = database {
        env.push(("KEYPLANE_DATABASE_URL", url));
    }
    let server = Server::start(&binary(), live.path(), &env).await.unwrap();
    let c = server.client();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "kept-through-backup").await;
    let (plaintext, ciphertext) = wrap_new(&c, &keystore, &key_ref(&key)).await;

    // A burst of writes, each recorded once acknowledged, running through the backup.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, acknowledged, stop) = (c.clone(), acknowledged.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("burst-{i:05}");
                let r = c
                    .post("/api/v4/vaults", &json!({"name": name}))
                    .await
                    .unwrap();
                assert_eq!(r.status, 201, "{}", r.body);
                acknowledged.lock().unwrap().push(name);
                i += 1;
            }
        })
    };
    while acknowledged.lock().unwrap().len() < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before_backup = acknowledged.lock().unwrap().clone();
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("keyplane-backup.sqlite");
    let data_dir = live.path().to_str().unwrap();
    let source = match database {
        Some(url) => ["--database-url", url],
        None => ["--data-dir", data_dir],
    };
    let take_backup = async || {
        admin(
            &[
                "backup",
                source[0],
                source[1],
                "--to",
                backup.to_str().unwrap(),
            ],
            None,
            "",
        )
        .await
    };
    let taken = take_backup().await;
    assert!(taken.success, "{}{}", taken.stdout, taken.stderr);
    assert!(
        taken.stdout.contains("audit chain intact"),
        "{}",
        taken.stdout
    );
    let during = acknowledged.lock().unwrap().len();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        during > before_backup.len(),
        "writes went on during the backup"
    );
    assert!(server.terminate().await.unwrap());
    // Only its owner reads the backup; an existing file is never overwritten.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = take_backup().await;
    assert!(!again.success);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    // Restored into an empty directory, checked; a non-empty one is refused.
    let restored_dir = tempfile::tempdir().unwrap();
    let target = restored_dir.path().join("restored");
    let restore_into = async || {
        admin(
            &[
                "restore",
                "--from",
                backup.to_str().unwrap(),
                "--data-dir",
                target.to_str().unwrap(),
            ],
            None,
            "",
        )
        .await
    };
    let restored = restore_into().await;
    assert!(restored.success, "{}{}", restored.stdout, restored.stderr);
    assert!(restored.stdout.contains("restored"));
    let refused = restore_into().await;
    assert!(!refused.success);
    assert!(refused.stderr.contains("not empty"), "{}", refused.stderr);
    // The same file restores into an empty PostgreSQL database too.
    if let Some(url) = database {
        let fresh = keyplane_store::new_postgres_schema(url.split('?').next().unwrap())
            .await
            .unwrap();
        let into_postgres = admin(
            &[
                "restore",
                "--from",
                backup.to_str().unwrap(),
                "--database-url",
                &fresh,
            ],
            None,
            "",
        )
        .await;
        assert!(
            into_postgres.success && into_postgres.stdout.contains("audit chain intact"),
            "{}{}",
            into_postgres.stdout,
            into_postgres.stderr
        );
    }

    // The restored deployment opens with the same passphrase and holds every acknowledged write.
    let server = Server::start(&binary(), &target, &seal).await.unwrap();
    let c = server.client();
    let mut names = std::collections::BTreeSet::new();
    let mut offset = 0;
    loop {
        let page = c
            .get(&format!("/api/v4/vaults?limit=1000&offset={offset}"))
            .await
            .unwrap();
        let items = page.body["vaults"].as_array().unwrap().clone();
        names.extend(items.iter().map(|v| v["name"].as_str().unwrap().to_owned()));
        if items.len() < 1000 {
            break;
        }
        offset += 1000;
    }
    for name in &before_backup {
        assert!(
            names.contains(name),
            "{name} was acknowledged before the backup began"
        );
    }
    let chain = c.get("/api/v4/audit_events/verification").await.unwrap();
    assert_eq!(chain.body["intact"], true, "{}", chain.body);
    assert_eq!(
        unwrap_ok(&c, &keystore, &key_ref(&key), &ciphertext).await,
        plaintext
    );
    assert!(server.terminate().await.unwrap());
}

/// Under a service manager the first admin token goes to a private file, not to the log.
#[tokio::test]
async fn the_first_admin_token_can_go_to_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("first-admin-token");
    let server = Server::start(
        &binary(),
        &dir.path().join("data"),
        &[("KEYPLANE_ADMIN_TOKEN_FILE", token_file.to_str().unwrap())],
    )
    .await
    .unwrap();
    assert!(server.token.is_empty(), "the token is not printed");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let c = keyplane_testkit::process::Client {
        token: token.clone(),
        ..server.client()
    };
    assert_eq!(c.get("/api/v4/vaults").await.unwrap().status, 200);
    let log = std::fs::read_to_string(
        dir.path()
            .join("data")
            .join(keyplane_testkit::process::SERVER_LOG),
    )
    .unwrap();
    assert!(!log.contains(&token));
    assert!(server.terminate().await.unwrap());
}
