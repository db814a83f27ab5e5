//! `keyplane migrate from-uko` end to end: a second Keyplane plays the source UKO (the same
//! wire), with keys really distributed to OpenBao and LocalStack. The target adopts them by
//! reference and then governs the very same remote keys.

mod common;

use std::path::Path;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use keyplane_testkit::peers::OpenBao;
use keyplane_testkit::process::{Client, Server};
use serde_json::{Value, json};
use uuid::Uuid;

/// This test's own region: LocalStack is shared, regions keep tests apart.
const REGION: &str = "eu-central-1";
const ROOT: &str = "migration-root-token";

fn kms() -> aws_sdk_kms::Client {
    kms_in(REGION)
}

async fn kms_state(key: &str) -> KeyState {
    kms()
        .describe_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_state()
        .unwrap()
        .clone()
}

async fn bao_decrypt(bao: &OpenBao, name: &str, ciphertext: &str) -> String {
    let r = bao
        .call(
            "POST",
            &format!("transit/decrypt/{name}"),
            Some(json!({"ciphertext": ciphertext})),
        )
        .await
        .unwrap();
    String::from_utf8(
        B64.decode(r["data"]["plaintext"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Posts `path` with its current ETag; the answer.
async fn act(c: &Client, key: &str, action: &str) -> keyplane_testkit::process::Reply {
    c.with_etag(
        "POST",
        &format!("/api/v4/managed_keys/{key}"),
        &format!("/{action}"),
    )
    .await
    .unwrap()
}

/// Runs the migration against `target`, reading `source` with `apikey`.
async fn migrate(target: &Server, source: &Server, dir: &Path, extra: &[&str]) -> AdminRun {
    let key_file = dir.join("source.key");
    let state = dir.join("state.json");
    let mapping = dir.join("mapping.toml");
    let mut args = vec![
        "migrate",
        "from-uko",
        "--source-url",
        &source.base,
        "--iam-url",
        &source.base,
        "--source-api-key-file",
        key_file.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    keyplane_with(&args, Some(target), "", &[("MIGRATION_BAO_TOKEN", ROOT)]).await
}

/// What the target holds, as ids with their last change: equal snapshots, nothing changed.
async fn snapshot(c: &Client) -> Vec<String> {
    let mut all = Vec::new();
    for (path, collection) in [
        ("/api/v4/vaults?limit=1000", "vaults"),
        ("/api/v4/keystores?limit=1000", "keystores"),
        ("/api/v4/templates?limit=1000", "templates"),
        (
            "/api/v4/managed_keys?limit=1000&state=pre_activation,active,deactivated,compromised,destroyed,destroyed_compromised",
            "managed_keys",
        ),
    ] {
        let r = c.get(path).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        for item in r.body[collection].as_array().unwrap() {
            all.push(format!(
                "{collection} {} {} {}",
                item["id"], item["updated_at"], item["version"]
            ));
        }
    }
    all.sort();
    all
}

/// A node that lets keys rotate again at once (the adopted key was rotated at the source just
/// before), on SQLite or on the PostgreSQL database `database`.
async fn start_node(dir: &Path, database: Option<&str>) -> Server {
    let mut env = vec![
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_DESTROY_GRACE_PERIOD", "0s"),
        ("KEYPLANE_ROTATION_MIN_INTERVAL", "0s"),
    ];
    if let Some(url) = database {
        env.push(("KEYPLANE_DATABASE_URL", url));
    }
    Server::start(&binary(), dir, &env)
        .await
        .expect("server starts")
}

/// An adoption the target refuses as `copy_not_proven`, saying `why`.
async fn refused_adoption(t: &Client, body: &Value, why: &str) {
    let r = t.post("/api/v4/managed_keys/adopt", body).await.unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["errors"][0]["code"], "copy_not_proven", "{}", r.body);
    let message = r.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(why), "{}", r.body);
}

fn report_entry<'a>(report: &'a Value, source_id: &str) -> &'a Value {
    report["report"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["source_id"] == source_id)
        .unwrap_or_else(|| panic!("no report entry for {source_id}: {report}"))
}

#[tokio::test]
async fn a_uko_estate_moves_in_and_its_keys_keep_working() {
    let bao = OpenBao::start(ROOT).await.unwrap();
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // The source on SQLite, the target on PostgreSQL: both engines record adoptions.
    let source = start_node(source_dir.path(), None).await;
    let target = start_node(target_dir.path(), Some(&postgres_schema().await)).await;
    let s = source.client();
    let t = target.client();

    // The source estate: one vault, OpenBao, AWS KMS and an internal keystore, a template each.
    let vault_name = format!("payments-{}", &Uuid::new_v4().to_string()[..8]);
    let vault = s
        .post(
            "/api/v4/vaults",
            &json!({"name": vault_name, "description": "card data"}),
        )
        .await
        .unwrap();
    assert_eq!(vault.status, 201, "{}", vault.body);
    let vault = id(&vault.body);
    let bao_ks = connect_keystore(
        &s,
        &json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao", "groups": ["bao"],
                "hashicorp_address": bao.address, "hashicorp_token": ROOT}),
    )
    .await;
    let aws_ks = connect_keystore(
        &s,
        &json!({"type": "aws_kms", "vault": {"id": vault}, "name": "aws", "groups": ["aws"],
                "aws_region": REGION.replace('-', "_"), "aws_access_key_id": "test",
                "aws_secret_access_key": "test", "aws_endpoint": keyplane_testkit::peers::localstack()}),
    )
    .await;
    connect_keystore(
        &s,
        &json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": vault},
                "name": "hsm", "groups": ["hsm"]}),
    )
    .await;
    for (name, keystore_type, group) in [
        ("T-bao", "hashicorp_vault", "bao"),
        ("T-aws", "aws_kms", "aws"),
        ("T-hsm", "ibm_cloud_kms", "hsm"),
    ] {
        let r = post_template(
            &s,
            &vault,
            name,
            ("aes", "256"),
            json!({"type": keystore_type, "group": group}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let suffix = &Uuid::new_v4().to_string()[..8];
    let label = |name: &str| format!("{name}-{suffix}");
    let active = id(&create_key_from(&s, &vault, "T-bao", &label("orders")).await);
    let resting = id(&create_key_from(&s, &vault, "T-bao", &label("archive")).await);
    let rotated = id(&create_key_from(&s, &vault, "T-bao", &label("ledger")).await);
    let vanished = id(&create_key_from(&s, &vault, "T-bao", &label("vanished")).await);
    let gone = id(&create_key_from(&s, &vault, "T-bao", &label("retired")).await);
    let cloud = id(&create_key_from(&s, &vault, "T-aws", &label("cloud")).await);
    let tampered = id(&create_key_from(&s, &vault, "T-aws", &label("tampered")).await);
    let in_hsm = id(&create_key_from(&s, &vault, "T-hsm", &label("mainframe")).await);
    for key in [&active, &resting, &rotated, &vanished, &gone] {
        wait_status(&s, key, &bao_ks, |e| e["status"] == "active").await;
    }
    for key in [&cloud, &tampered] {
        wait_status(&s, key, &aws_ks, |e| e["status"] == "active").await;
    }
    assert_eq!(act(&s, &resting, "deactivate").await.status, 200);
    assert_eq!(act(&s, &rotated, "rotate").await.status, 200);
    wait_status(&s, &rotated, &bao_ks, |_| true).await;
    for _ in 0..100 {
        if transit_key(&bao, &label("ledger")).await.unwrap()["data"]["latest_version"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(act(&s, &gone, "deactivate").await.status, 200);
    assert_eq!(act(&s, &gone, "destroy").await.status, 200);
    wait_status(&s, &gone, &bao_ks, |e| e["status"] == "not_present").await;

    // Data encrypted by the remote copies before the move.
    let ledger_v2 = bao_encrypt(&bao, &label("ledger"), "ledger entry").await;
    let orders_secret = bao_encrypt(&bao, &label("orders"), "order 1").await;
    let cloud_kms_key =
        wait_status(&s, &cloud, &aws_ks, |e| e["status"] == "active").await["key_id_in_keystore"]
            .as_str()
            .unwrap()
            .to_owned();
    let cloud_blob = kms()
        .encrypt()
        .key_id(&cloud_kms_key)
        .plaintext(Blob::new(&b"cloud secret"[..]))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    // Two copies are not what the source says: one disabled behind its back, one deleted.
    let tampered_kms_key =
        wait_status(&s, &tampered, &aws_ks, |_| true).await["key_id_in_keystore"]
            .as_str()
            .unwrap()
            .to_owned();
    kms()
        .disable_key()
        .key_id(&tampered_kms_key)
        .send()
        .await
        .unwrap();
    bao.call(
        "POST",
        &format!("transit/keys/{}/config", label("vanished")),
        Some(json!({"deletion_allowed": true})),
    )
    .await
    .unwrap();
    bao.call(
        "DELETE",
        &format!("transit/keys/{}", label("vanished")),
        None,
    )
    .await
    .unwrap();

    // The source is read with an API key exchanged at its IAM endpoint; secrets come from the
    // mapping file (environment and file), never from the command line.
    let apikey = principal_with_api_key(&s, "migrator", "service", &[("manager", None)]).await;
    std::fs::write(work.path().join("source.key"), &apikey).unwrap();
    std::fs::write(work.path().join("aws.secret"), "test\n").unwrap();
    std::fs::write(
        work.path().join("mapping.toml"),
        format!(
            "[keystores.bao]\nsecrets = {{ hashicorp_token = {{ env = \"MIGRATION_BAO_TOKEN\" }} }}\n\
             [keystores.aws]\nsecrets = {{ aws_access_key_id = {{ file = \"{0}\" }}, \
             aws_secret_access_key = {{ file = \"{0}\" }} }}\n",
            work.path().join("aws.secret").display()
        ),
    )
    .unwrap();

    // Dry run: the full plan, as JSON and as a table, and nothing written.
    let before = snapshot(&t).await;
    let plan = migrate(
        &target,
        &source,
        work.path(),
        &["--dry-run", "--output", "json"],
    )
    .await;
    assert!(plan.success, "{}\n{}", plan.stdout, plan.stderr);
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let action = |source_id: &str| {
        plan["plan"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source_id"] == source_id)
            .unwrap_or_else(|| panic!("{source_id} not planned: {plan}"))["action"]
            .clone()
    };
    assert_eq!(action(&vault), "create");
    assert_eq!(action(&bao_ks), "create");
    for key in [&active, &resting, &rotated, &cloud, &gone] {
        assert_eq!(action(key), "adopt", "{plan}");
    }
    assert_eq!(action(&in_hsm), "cannot_move");
    assert!(
        plan["successor_offers"][0]
            .as_str()
            .unwrap()
            .contains("T-hsm"),
        "{plan}"
    );
    assert_eq!(plan["connection_failures"], json!([]));
    let table = migrate(&target, &source, work.path(), &["--dry-run"]).await;
    assert!(table.success, "{}", table.stderr);
    assert!(
        table.stdout.contains("ACTION") && table.stdout.contains("cannot_move"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("internal keystore"),
        "{}",
        table.stdout
    );
    assert_eq!(snapshot(&t).await, before, "a dry run writes nothing");
    assert!(!work.path().join("state.json").exists());

    // A run killed mid-way, then resumed.
    let state_file = work.path().join("state.json");
    let mut child = tokio::process::Command::new(binary())
        .args([
            "migrate",
            "from-uko",
            "--source-url",
            &source.base,
            "--iam-url",
            &source.base,
            "--source-api-key-file",
            work.path().join("source.key").to_str().unwrap(),
            "--mapping",
            work.path().join("mapping.toml").to_str().unwrap(),
            "--state",
            state_file.to_str().unwrap(),
        ])
        .env("KEYPLANE_URL", &target.base)
        .env("KEYPLANE_TOKEN", &target.token)
        .env("MIGRATION_BAO_TOKEN", ROOT)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut adopted_when_killed = 0;
    for _ in 0..3000 {
        if let Ok(text) = std::fs::read_to_string(&state_file)
            && let Ok(state) = serde_json::from_str::<Value>(&text)
            && let Some(keys) = state["keys"].as_object()
            && !keys.is_empty()
        {
            child.start_kill().unwrap();
            adopted_when_killed = keys.len();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.wait().await.unwrap();
    // Killed part-way: some keys adopted, not all five that can be.
    assert!(
        (1..5).contains(&adopted_when_killed),
        "killed after {adopted_when_killed} adoptions"
    );
    let report_file = work.path().join("report.json");
    let resumed = migrate(
        &target,
        &source,
        work.path(),
        &[
            "--output",
            "json",
            "--report",
            report_file.to_str().unwrap(),
            "--create-successors",
            "T-hsm",
        ],
    )
    .await;
    // Two copies could not be proven: the run says so and exits with "refused".
    assert_eq!(
        resumed.code,
        Some(6),
        "{}\n{}",
        resumed.stdout,
        resumed.stderr
    );
    let report: Value = serde_json::from_str(&resumed.stdout).unwrap();
    assert_eq!(
        report,
        serde_json::from_slice::<Value>(&std::fs::read(&report_file).unwrap()).unwrap()
    );
    for key in [
        &active, &resting, &rotated, &cloud, &gone, &vault, &bao_ks, &aws_ks,
    ] {
        assert_eq!(report_entry(&report, key)["result"], "migrated", "{report}");
    }
    for (key, result, why) in [
        (&tampered, "not_migrated", "disabled there"),
        (&vanished, "not_migrated", "holds no such key"),
        (&in_hsm, "cannot_move", "successor key"),
    ] {
        let entry = report_entry(&report, key);
        assert_eq!(entry["result"], result, "{entry}");
        assert!(entry["detail"].as_str().unwrap().contains(why), "{entry}");
    }

    // The target shows the estate: same names, same key ids, material external.
    let vaults = t.get("/api/v4/vaults").await.unwrap().body;
    let target_vault = vaults["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vault_name.as_str())
        .expect("the vault moved")
        .clone();
    assert_eq!(target_vault["description"], "card data");
    let templates = t.get("/api/v4/templates").await.unwrap().body;
    assert_eq!(templates["total_count"], 3, "{templates}");
    let keystores = t.get("/api/v4/keystores").await.unwrap().body;
    assert_eq!(keystores["total_count"], 3, "{keystores}");
    let target_bao = keystores["keystores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "bao")
        .map(id)
        .unwrap();
    let target_aws = keystores["keystores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "aws")
        .map(id)
        .unwrap();
    for (key, state) in [
        (&active, "active"),
        (&resting, "deactivated"),
        (&rotated, "active"),
        (&cloud, "active"),
        (&gone, "destroyed"),
    ] {
        let k = t.get(&format!("/api/v4/managed_keys/{key}")).await.unwrap();
        assert_eq!(k.status, 200, "{}", k.body);
        assert_eq!(k.body["state"], state);
        assert_eq!(k.body["material"], "external");
        assert_eq!(k.body["vault"]["id"], target_vault["id"]);
    }
    assert_eq!(
        t.get(&format!("/api/v4/managed_keys/{rotated}"))
            .await
            .unwrap()
            .body["version"],
        2
    );
    for key in [&tampered, &vanished, &in_hsm] {
        assert_eq!(
            t.get(&format!("/api/v4/managed_keys/{key}"))
                .await
                .unwrap()
                .status,
            404
        );
    }
    let orders = wait_in_sync(&t, &active, &target_bao).await;
    assert_eq!(orders["key_id_in_keystore"], label("orders"));
    wait_in_sync(&t, &cloud, &target_aws).await;

    // A second run changes nothing.
    let settled = snapshot(&t).await;
    let again = migrate(&target, &source, work.path(), &["--output", "json"]).await;
    assert_eq!(again.code, Some(6), "{}", again.stderr);
    assert_eq!(snapshot(&t).await, settled);

    // A remote key is governed by one managed key: adopting a copy again, under another id, is
    // refused whether the keystore marks its keys (AWS tags) or not (transit names).
    let adopt_again =
        |keystore: &str, remote: &str, label_in_keystore: &str, source_id: Option<&str>| {
            let template = if keystore == target_aws.as_str() {
                "T-aws"
            } else {
                "T-bao"
            };
            let mut body = json!({
                "vault": {"id": target_vault["id"]}, "template_name": template,
                "label": format!("again-{}", Uuid::new_v4()), "state": "active",
                "algorithm": "aes", "size": "256", "version": 1,
                "copies": [{"keystore": {"id": keystore}, "key_id_in_keystore": remote,
                            "label_in_keystore": label_in_keystore}],
            });
            if let Some(s) = source_id {
                body["source_id"] = json!(s);
            }
            body
        };
    refused_adoption(
        &t,
        &adopt_again(&target_bao, &label("ledger"), &label("ledger"), None),
        "already governed",
    )
    .await;
    refused_adoption(
        &t,
        &adopt_again(&target_aws, &cloud_kms_key, &label("cloud"), Some(&cloud)),
        "this Keyplane already governs",
    )
    .await;
    // A copy whose name there (the alias a rotation would move) names another key is refused.
    kms()
        .enable_key()
        .key_id(&tampered_kms_key)
        .send()
        .await
        .unwrap();
    refused_adoption(
        &t,
        &adopt_again(
            &target_aws,
            &tampered_kms_key,
            &label("cloud"),
            Some(&tampered),
        ),
        "names another key",
    )
    .await;
    // Copies Keyplane could not govern are refused: a transit key OpenBao generated (no version
    // could be imported into it), and a KMS key no alias names (a rotation moves the alias).
    bao.call(
        "POST",
        "transit/keys/generated-here",
        Some(json!({"type": "aes256-gcm96"})),
    )
    .await
    .unwrap();
    refused_adoption(
        &t,
        &adopt_again(&target_bao, "generated-here", "generated-here", None),
        "generated",
    )
    .await;
    let unnamed = kms().create_key().send().await.unwrap();
    let unnamed = unnamed.key_metadata().unwrap().key_id().to_owned();
    refused_adoption(
        &t,
        &adopt_again(&target_aws, &unnamed, "nobody-names-this", None),
        "names no key",
    )
    .await;

    // Destroying a keystore that holds an adopted key's only copy is refused: Keyplane could not
    // make that material again.
    let refused = disconnect_keystore(&t, &target_aws, "destroy").await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["code"], "material_not_held");
    assert!(
        refused.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&label("cloud"))
    );
    assert_eq!(kms_state(&cloud_kms_key).await, KeyState::Enabled);

    // Data encrypted before the move still decrypts through the same keystores.
    assert_eq!(
        bao_decrypt(&bao, &label("orders"), &orders_secret).await,
        "order 1"
    );
    let clear = kms()
        .decrypt()
        .ciphertext_blob(cloud_blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(clear.plaintext().unwrap().as_ref(), b"cloud secret");

    // Refused: what needs material Keyplane does not hold, naming why.
    connect_keystore(
        &t,
        &json!({"type": "hashicorp_vault", "vault": {"id": target_vault["id"]}, "name": "bao-2",
                "groups": ["bao"], "hashicorp_address": bao.address, "hashicorp_token": ROOT}),
    )
    .await;
    for action in ["sync_status_in_keystores", "update_from_template"] {
        let refused = act(&t, &active, action).await;
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert_eq!(refused.body["errors"][0]["code"], "material_not_held");
        assert!(
            refused.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("bao-2"),
            "{}",
            refused.body
        );
    }
    // The seed's rule holds for adopted keys: an active one keeps its keystore connected.
    assert_restrict_refused(&t, &target_bao, &active).await;

    // Deactivate, reactivate and destroy reach the same remote keys.
    assert_eq!(act(&t, &cloud, "deactivate").await.status, 200);
    wait_status(&t, &cloud, &target_aws, |e| e["status"] == "not_active").await;
    assert_eq!(kms_state(&cloud_kms_key).await, KeyState::Disabled);
    assert_eq!(act(&t, &cloud, "activate").await.status, 200);
    wait_status(&t, &cloud, &target_aws, |e| e["status"] == "active").await;
    assert_eq!(kms_state(&cloud_kms_key).await, KeyState::Enabled);
    let clear = kms()
        .decrypt()
        .ciphertext_blob(cloud_blob)
        .send()
        .await
        .unwrap();
    assert_eq!(clear.plaintext().unwrap().as_ref(), b"cloud secret");
    assert_eq!(act(&t, &cloud, "deactivate").await.status, 200);
    let destroyed = act(&t, &cloud, "destroy").await;
    assert_eq!(destroyed.status, 200, "{}", destroyed.body);
    wait_status(&t, &cloud, &target_aws, |e| e["status"] == "not_present").await;
    assert_eq!(kms_state(&cloud_kms_key).await, KeyState::PendingDeletion);

    // A rotation makes a version Keyplane holds, which distributes; the adopted versions still
    // decrypt what they encrypted.
    let r = act(&t, &rotated, "rotate").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 3);
    assert_eq!(r.body["material"], "held");
    let mut latest = Value::Null;
    for _ in 0..300 {
        latest =
            transit_key(&bao, &label("ledger")).await.unwrap()["data"]["latest_version"].clone();
        if latest == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(latest, 3, "the new version reached OpenBao");
    assert_eq!(
        bao_decrypt(&bao, &label("ledger"), &ledger_v2).await,
        "ledger entry"
    );
    let fresh = bao_encrypt(&bao, &label("ledger"), "after rotation").await;
    assert!(fresh.starts_with("vault:v3:"), "{fresh}");
    let versions = t
        .get(&format!("/api/v4/managed_keys/{rotated}/versions"))
        .await
        .unwrap()
        .body;
    let materials: Vec<_> = versions["managed_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].clone(), v["material"].clone()))
        .collect();
    assert_eq!(
        materials,
        vec![
            (json!(3), json!("held")),
            (json!(2), json!("external")),
            (json!(1), json!("external"))
        ]
    );

    // Destroying an adopted key on the target removes the remote key.
    assert_eq!(act(&t, &active, "deactivate").await.status, 200);
    assert_eq!(act(&t, &active, "destroy").await.status, 200);
    wait_status(&t, &active, &target_bao, |e| e["status"] == "not_present").await;
    assert!(transit_key(&bao, &label("orders")).await.is_none());

    // Once their adopted versions are destroyed with them, `destroy` mode takes the copies:
    // here the keys go first, then the keystore.
    let r = disconnect_keystore(&t, &target_bao, "destroy").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(transit_key(&bao, &label("archive")).await.is_some());
    for key in [&resting, &rotated] {
        if key == &rotated {
            assert_eq!(act(&t, key, "deactivate").await.status, 200);
        }
        let r = act(&t, key, "destroy").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = disconnect_keystore(&t, &target_bao, "destroy").await;
    assert_eq!(r.status, 204, "{}", r.body);
    for name in ["archive", "ledger"] {
        let mut gone = false;
        for _ in 0..100 {
            if transit_key(&bao, &label(name)).await.is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "{name} was destroyed in OpenBao");
    }

    // The adoptions are audited on the target as operations of their own.
    let events = t
        .get("/api/v4/audit_events?action=keyplane.managed-keys.adopt&limit=100")
        .await
        .unwrap()
        .body;
    assert!(events["total_count"].as_u64().unwrap_or(0) >= 5, "{events}");
    bao.stop().await;
}
