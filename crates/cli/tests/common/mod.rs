//! Helpers shared by the end-to-end test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use keyplane_crypto::{MasterKey, RootKey, SoftwareRootKey};
use keyplane_testkit::process::{Client, Server};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use uuid::Uuid;

pub const TOKEN: &str = "e2e-bootstrap-token-0123456789";

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keyplane"))
}

pub async fn start(dir: &Path) -> Server {
    Server::start(
        &binary(),
        dir,
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DESTROY_GRACE_PERIOD", "0s"),
        ],
    )
    .await
    .expect("server starts")
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

pub async fn setup(
    c: &Client,
    template_state: &str,
    algorithm: &str,
    size: &str,
) -> (String, String) {
    let vault = c
        .post(
            "/api/v4/vaults",
            &json!({"name": format!("v-{}", Uuid::new_v4())}),
        )
        .await
        .unwrap();
    assert_eq!(vault.status, 201);
    let vault_id = id(&vault.body);
    let ks = c
        .post(
            "/api/v4/keystores",
            &json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": vault_id}, "name": "internal-1", "groups": ["prod"]}),
        )
        .await
        .unwrap();
    assert_eq!(ks.status, 201, "{}", ks.body);
    let t = c
        .post(
            "/api/v4/templates",
            &json!({"vault": {"id": vault_id}, "name": "T1",
                    "key": {"algorithm": algorithm, "size": size, "state": template_state},
                    "keystores": [{"type": "ibm_cloud_kms", "group": "prod"}]}),
        )
        .await
        .unwrap();
    assert_eq!(t.status, 201, "{}", t.body);
    (vault_id, id(&ks.body))
}

pub async fn create_key(c: &Client, vault: &str, label: &str) -> Value {
    create_key_from(c, vault, "T1", label).await
}

/// Creates key `label` from template `template`; the created key.
pub async fn create_key_from(c: &Client, vault: &str, template: &str, label: &str) -> Value {
    let k = c
        .post(
            "/api/v4/managed_keys",
            &json!({"vault": {"id": vault}, "template_name": template, "label": label}),
        )
        .await
        .unwrap();
    assert_eq!(k.status, 201, "{}", k.body);
    k.body
}

/// Posts template `name`: keys of `algorithm` and `size`, active on creation, for the keystores
/// of `entry` (a template's keystore entry: type, group and key properties).
pub async fn post_template(
    c: &Client,
    vault: &str,
    name: &str,
    (algorithm, size): (&str, &str),
    entry: Value,
) -> keyplane_testkit::process::Reply {
    c.post(
        "/api/v4/templates",
        &json!({"vault": {"id": vault}, "name": name,
                "key": {"algorithm": algorithm, "size": size, "state": "active"},
                "keystores": [entry]}),
    )
    .await
    .unwrap()
}

/// The key's statuses in its keystores, read live from them.
pub async fn live_statuses(c: &Client, key_id: &str) -> Value {
    let r = c
        .get(&format!(
            "/api/v4/managed_keys/{key_id}/status_in_keystores"
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The database files and the server's log.
pub fn data_files(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("keyplane.sqlite") || name == keyplane_testkit::process::SERVER_LOG
        })
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect()
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn db(dir: &Path) -> Connection {
    Connection::open_with_flags(
        dir.join("keyplane.sqlite"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

/// The `id_in_keystore` of a key's copy in its (single) internal keystore.
pub fn key_ref(key: &Value) -> String {
    key["status_in_keystores"][0]["key_id_in_keystore"]
        .as_str()
        .expect("key_id_in_keystore")
        .to_owned()
}

/// `POST /api/v2/keys/{key_ref}/actions/{action}` in keystore `keystore`.
pub async fn data_plane(
    c: &Client,
    keystore: &str,
    key_ref: &str,
    action: &str,
    body: &Value,
) -> (u16, Value) {
    let r = c
        .http
        .post(format!("{}/api/v2/keys/{key_ref}/actions/{action}", c.base))
        .bearer_auth(&c.token)
        .header("bluemix-instance", keystore)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Wraps a fresh data key; returns (plaintext, ciphertext), both base64.
pub async fn wrap_new(c: &Client, keystore: &str, key_ref: &str) -> (String, String) {
    let (status, body) = data_plane(c, keystore, key_ref, "wrap", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    (
        body["plaintext"].as_str().unwrap().to_owned(),
        body["ciphertext"].as_str().unwrap().to_owned(),
    )
}

/// Unwraps a ciphertext and returns the plaintext (base64).
pub async fn unwrap_ok(c: &Client, keystore: &str, key_ref: &str, ciphertext: &str) -> String {
    let (status, body) = data_plane(
        c,
        keystore,
        key_ref,
        "unwrap",
        &json!({ "ciphertext": ciphertext }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["plaintext"].as_str().unwrap().to_owned()
}

pub fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// What `keyplane admin …` printed.
pub struct AdminRun {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `keyplane admin <args>` against `server` (when given), feeding `stdin`.
pub async fn admin(args: &[&str], server: Option<&Server>, stdin: &str) -> AdminRun {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    keyplane(&all, server, stdin).await
}

/// Runs `keyplane <args>` against `server` (when given), feeding `stdin`.
pub async fn keyplane(args: &[&str], server: Option<&Server>, stdin: &str) -> AdminRun {
    keyplane_with(args, server, stdin, &[]).await
}

/// Like [`keyplane`], with extra environment.
pub async fn keyplane_with(
    args: &[&str],
    server: Option<&Server>,
    stdin: &str,
    env: &[(&str, &str)],
) -> AdminRun {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = tokio::process::Command::new(binary());
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(server) = server {
        cmd.env("KEYPLANE_URL", &server.base)
            .env("KEYPLANE_TOKEN", &server.token);
    }
    let mut child = cmd.spawn().expect("spawn keyplane admin");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    AdminRun {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A vault's key, opened the way the server does: dev seal key file → master key (sealed in
/// the database) → vault key (wrapped under the master key).
pub fn vault_key(dir: &Path, conn: &Connection, vault_id: &str) -> keyplane_crypto::SecretBytes {
    let hex_text = std::fs::read_to_string(dir.join("master.key")).unwrap();
    let seal_key = MasterKey::from_bytes(&hex::decode(hex_text.trim()).unwrap()).unwrap();
    let (root_id, wrapped): (String, Vec<u8>) = conn
        .query_row(
            "SELECT root_id, wrapped FROM vault_keys WHERE vault_id = ?",
            [vault_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let sealed_root: Vec<u8> = conn
        .query_row(
            "SELECT sealed FROM root_keys WHERE id = ?",
            [&root_id],
            |r| r.get(0),
        )
        .unwrap();
    let root = SoftwareRootKey::open_sealed(root_id, &sealed_root, &seal_key).unwrap();
    root.unwrap(
        &wrapped,
        format!("keyplane-vault-key:v1:{vault_id}").as_bytes(),
    )
    .unwrap()
}

/// A key's material (version 1), opened through the key hierarchy, checked against the key's
/// verification pattern.
pub fn open_material(dir: &Path, key: &Value) -> keyplane_crypto::SecretBytes {
    open_material_version(dir, key, 1)
}

/// One version of a key's material, opened with the dev seal's files.
pub fn open_material_version(
    dir: &Path,
    key: &Value,
    version: u32,
) -> keyplane_crypto::SecretBytes {
    let conn = db(dir);
    let vault_id = key["vault"]["id"].as_str().unwrap();
    let vault_key = MasterKey::from_bytes(vault_key(dir, &conn, vault_id).expose()).unwrap();
    let sealed: Vec<u8> = conn
        .query_row(
            "SELECT sealed FROM key_material WHERE key_id = ? AND version = ?",
            rusqlite::params![id(key), version],
            |r| r.get(0),
        )
        .unwrap();
    let binding = keyplane_core::ports::MaterialBinding {
        vault_id: Uuid::parse_str(vault_id).unwrap(),
        key_id: Uuid::parse_str(&id(key)).unwrap(),
        version,
    };
    vault_key
        .open(&sealed, &binding.aad())
        .expect("material opens with its binding")
}

/// A principal named `name` holding `roles` (each on one vault, or on all with `None`), and a
/// fresh API key of it.
pub async fn principal_with_api_key(
    c: &Client,
    name: &str,
    kind: &str,
    roles: &[(&str, Option<&str>)],
) -> String {
    let principal = c
        .post(
            "/api/v4/access/principals",
            &json!({"name": name, "kind": kind}),
        )
        .await
        .unwrap();
    assert_eq!(principal.status, 201, "{}", principal.body);
    let principal = id(&principal.body);
    for (role, vault) in roles {
        let mut policy = json!({"principal": {"id": principal}, "role": role});
        if let Some(v) = vault {
            policy["vault"] = json!({ "id": v });
        }
        let p = c.post("/api/v4/access/policies", &policy).await.unwrap();
        assert_eq!(p.status, 201, "{}", p.body);
    }
    let key = c
        .post(
            &format!("/api/v4/access/principals/{principal}/api_keys"),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(key.status, 201, "{}", key.body);
    key.body["apikey"].as_str().unwrap().to_owned()
}

/// A vault with a fresh name.
pub async fn new_vault(c: &Client) -> String {
    let r = c
        .post(
            "/api/v4/vaults",
            &json!({"name": format!("v-{}", Uuid::new_v4())}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    id(&r.body)
}

/// Connects a keystore (`body` is the whole create request); the connection must be accepted.
pub async fn connect_keystore(c: &Client, body: &Value) -> String {
    let r = c.post("/api/v4/keystores", body).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    id(&r.body)
}

/// Template `T1`: AES-256 keys, active at once, distributed to `keystore_type` keystores of `group`.
pub async fn active_aes_template(c: &Client, vault: &str, keystore_type: &str, group: &str) {
    let t = post_template(
        c,
        vault,
        "T1",
        ("aes", "256"),
        json!({"type": keystore_type, "group": group}),
    )
    .await;
    assert_eq!(t.status, 201, "{}", t.body);
}

/// The key's status entry for `keystore`, once `done` holds (within 60 s).
pub async fn wait_status(
    c: &Client,
    key: &str,
    keystore: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let k = c.get(&format!("/api/v4/managed_keys/{key}")).await.unwrap();
        if let Some(entry) = k.body["status_in_keystores"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["keystore"]["id"] == keystore))
        {
            if done(entry) {
                return entry.clone();
            }
            last = entry.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("status never reached: last {last}");
}

/// A transit key of OpenBao, as it reports it; `None` when there is none of that name.
pub async fn transit_key(bao: &keyplane_testkit::peers::OpenBao, name: &str) -> Option<Value> {
    bao.call("GET", &format!("transit/keys/{name}"), None)
        .await
        .ok()
}

/// The names of every transit key OpenBao holds, sorted.
pub async fn transit_names(bao: &keyplane_testkit::peers::OpenBao) -> Vec<String> {
    let listed = bao.call("LIST", "transit/keys", None).await.unwrap();
    let mut names: Vec<String> = listed["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str())
        .filter(|k| !k.ends_with('/'))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Opens AES-256-GCM `iv ‖ ciphertext ‖ tag` (no AAD) with managed material: what a remote
/// keystore sealed with its copy of the key.
pub fn open_gcm(material: &[u8], sealed: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).unwrap());
    let (iv, rest) = sealed.split_at(12);
    let mut buf = rest.to_vec();
    key.open_in_place(
        Nonce::try_assume_unique_for_key(iv).unwrap(),
        Aad::empty(),
        &mut buf,
    )
    .expect("the managed material opens what the keystore sealed")
    .to_vec()
}

/// Seals `plaintext` with managed material as AES-256-GCM `iv ‖ ciphertext ‖ tag` (no AAD), for
/// a remote keystore's copy to open.
pub fn seal_gcm(material: &[u8], plaintext: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).unwrap());
    let iv = [7u8; 12];
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buf)
        .unwrap();
    [iv.to_vec(), buf].concat()
}

/// Disconnects keystore `keystore` in `mode` (`restrict`, `disconnect`, `deactivate`,
/// `destroy`), with its current ETag.
pub async fn disconnect_keystore(
    c: &Client,
    keystore: &str,
    mode: &str,
) -> keyplane_testkit::process::Reply {
    c.with_etag(
        "DELETE",
        &format!("/api/v4/keystores/{keystore}"),
        &format!("?mode={mode}"),
    )
    .await
    .unwrap()
}

/// Asks for a sync of the key in every keystore it targets.
pub async fn sync(c: &Client, key_id: &str) {
    let r = c
        .with_etag(
            "POST",
            &format!("/api/v4/managed_keys/{key_id}"),
            "/sync_status_in_keystores",
        )
        .await
        .unwrap();
    assert!(r.status == 200 || r.status == 202, "{}", r.body);
}

/// The key's status entry for `keystore` once it is active there and in sync.
pub async fn wait_in_sync(c: &Client, key_id: &str, keystore: &str) -> Value {
    wait_status(c, key_id, keystore, |s| {
        s["status"] == "active" && s["keystore_sync_flag"] == "ok"
    })
    .await
}

/// The seed's rule: key `key_id`, active, blocks a restricted disconnect of `keystore`, and
/// the refusal names it.
pub async fn assert_restrict_refused(c: &Client, keystore: &str, key_id: &str) {
    let refused = disconnect_keystore(c, keystore, "restrict").await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["code"], "keystore_not_empty");
    assert!(
        refused.body.to_string().contains(key_id),
        "{}",
        refused.body
    );
}

/// Asks to change connection field `field` of keystore `keystore` to `value`, and expects a
/// 400 naming the field (it identifies the keystore: locked once connected).
pub async fn assert_field_locked(c: &Client, keystore: &str, field: &str, value: &str) {
    let etag = c
        .get(&format!("/api/v4/keystores/{keystore}"))
        .await
        .unwrap()
        .etag;
    let r = c
        .send(
            "PATCH",
            &format!("/api/v4/keystores/{keystore}"),
            Some(&json!({ field: value })),
            Some(&etag),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{field}: {}", r.body);
    assert!(r.body.to_string().contains(field), "{}", r.body);
}

/// Keystore `keystore`'s health, checked now: `(health_status, message)`.
pub async fn keystore_health(c: &Client, keystore: &str) -> (String, String) {
    let r = c
        .get(&format!("/api/v4/keystores/{keystore}/status"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    (
        r.body["health_status"].as_str().unwrap().to_owned(),
        r.body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// An access token for an API key, from `POST /identity/token` as IBM's clients ask for one.
pub async fn access_token(server: &Server, apikey: &str) -> String {
    let r = keyplane_testkit::http_client()
        .post(format!("{}/identity/token", server.base))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", apikey),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A PostgreSQL schema of its own in the database `KEYPLANE_TEST_POSTGRES` names (the test
/// command makes one); the URL of a database whose tables live there.
pub async fn postgres_schema() -> String {
    let database = std::env::var("KEYPLANE_TEST_POSTGRES").expect(
        "KEYPLANE_TEST_POSTGRES must name a PostgreSQL database (scripts/test.sh makes one)",
    );
    keyplane_store::new_postgres_schema(&database)
        .await
        .unwrap()
}

/// One sample of the metrics: its name, labels and value (a histogram's buckets are samples
/// of their own, named `…_bucket` with an `le` label).
#[derive(Debug, serde::Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::HashMap<String, String>,
    pub value: f64,
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
pub async fn scrape(http: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Vec<Sample>) {
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
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

/// A KMS client of the LocalStack the test command starts, in `region` (regions keep tests
/// apart on the shared LocalStack).
pub fn kms_in(region: &'static str) -> aws_sdk_kms::Client {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(keyplane_testkit::peers::localstack())
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// `text` encrypted by OpenBao's transit key `name`: its ciphertext (`vault:vN:…`).
pub async fn bao_encrypt(bao: &keyplane_testkit::peers::OpenBao, name: &str, text: &str) -> String {
    let r = bao
        .call(
            "POST",
            &format!("transit/encrypt/{name}"),
            Some(json!({"plaintext": base64::engine::general_purpose::STANDARD.encode(text)})),
        )
        .await
        .unwrap();
    r["data"]["ciphertext"].as_str().unwrap().to_owned()
}
