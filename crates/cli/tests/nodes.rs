//! Several nodes: three real `keyplane` processes on one PostgreSQL database (a schema of its
//! own in the database `KEYPLANE_TEST_POSTGRES` names), distributing to a real OpenBao.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keyplane_testkit::peers::{Fault, FaultProxy, OpenBao};
use keyplane_testkit::process::{Client, Server};
use serde_json::{Value, json};

const ROOT: &str = "nodes-root-token";
const PASSPHRASE: &str = "three nodes share one sealed master key";

fn database() -> String {
    std::env::var("KEYPLANE_TEST_POSTGRES").expect(
        "KEYPLANE_TEST_POSTGRES must name a PostgreSQL database (scripts/test.sh makes one)",
    )
}

async fn start_node(dir: &std::path::Path, url: &str, passphrase: Option<&str>) -> Server {
    let mut env = vec![
        ("KEYPLANE_DATABASE_URL", url),
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_SEAL", "passphrase"),
        ("KEYPLANE_TASK_LEASE", "2s"),
        ("KEYPLANE_KEYSTORE_CONCURRENCY", "4"),
        ("KEYPLANE_DISTRIBUTION_BACKOFF", "100ms"),
        ("KEYPLANE_DESTROY_GRACE_PERIOD", "0s"),
    ];
    if let Some(p) = passphrase {
        env.push(("KEYPLANE_SEAL_PASSPHRASE", p));
    }
    Server::start(&binary(), dir, &env)
        .await
        .expect("node starts")
}

async fn health(c: &Client) -> (u16, Value) {
    let r = c.get("/health").await.unwrap();
    (r.status, r.body)
}

/// The index of the one node that reports leading, once exactly one does (within 15 s).
async fn leader(nodes: &[&Client]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut leading = Vec::new();
        for (i, c) in nodes.iter().enumerate() {
            if health(c).await.1["leader"] == true {
                leading.push(i);
            }
        }
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(Instant::now() < deadline, "leaders: {leading:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The exchange IBM's IAM authenticator makes: API key for access token.
async fn exchange(base: &str, apikey: &str) -> (u16, Value) {
    let r = keyplane_testkit::http_client()
        .post(format!("{base}/identity/token"))
        .header("Authorization", "Basic Yng6Yng=")
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", apikey),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn three_nodes_share_keys_tasks_leadership_and_the_audit_chain() {
    let url = keyplane_store::new_postgres_schema(&database())
        .await
        .unwrap();
    let bao = OpenBao::start(ROOT).await.unwrap();
    let proxy = FaultProxy::start(&bao.address).await.unwrap();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // The first node makes the schema, the admin token and the sealed master key; the others
    // open the same ones.
    let first = start_node(dirs[0].path(), &url, Some(PASSPHRASE)).await;
    let (second, third) = tokio::join!(
        start_node(dirs[1].path(), &url, Some(PASSPHRASE)),
        start_node(dirs[2].path(), &url, Some(PASSPHRASE)),
    );
    let mut nodes = vec![Some(first), Some(second), Some(third)];
    let clients: Vec<Client> = nodes.iter().flatten().map(Server::client).collect();

    // Calls spread across nodes: each sees what the others made.
    let vault = new_vault(&clients[0]).await;
    let internal = connect_keystore(
        &clients[1],
        &json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": vault},
                "name": "internal-1", "groups": ["prod"]}),
    )
    .await;
    let bao_ks = connect_keystore(
        &clients[2],
        &json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao", "groups": ["bao"],
                "hashicorp_address": proxy.address, "hashicorp_token": ROOT}),
    )
    .await;
    active_aes_template(&clients[0], &vault, "hashicorp_vault", "bao").await;
    let wrapping = clients[1]
        .post(
            "/api/v4/templates",
            &json!({"vault": {"id": vault}, "name": "W",
                    "key": {"algorithm": "aes", "size": "256", "state": "active"},
                    "keystores": [{"type": "ibm_cloud_kms", "group": "prod"}]}),
        )
        .await
        .unwrap();
    assert_eq!(wrapping.status, 201, "{}", wrapping.body);

    // A key wrapped on one node unwraps on the others.
    let root = clients[2]
        .post(
            "/api/v4/managed_keys",
            &json!({"vault": {"id": vault}, "template_name": "W", "label": "root-key"}),
        )
        .await
        .unwrap();
    assert_eq!(root.status, 201, "{}", root.body);
    let root_ref = key_ref(&root.body);
    let (plain, ciphertext) = wrap_new(&clients[0], &internal, &root_ref).await;
    for c in &clients[1..] {
        assert_eq!(unwrap_ok(c, &internal, &root_ref, &ciphertext).await, plain);
    }

    // The master key rotated through one node: a vault made afterwards through another goes
    // under the new master key, and the third opens it.
    let rotated = admin(&["rotate-master-key"], nodes[0].as_ref(), "").await;
    assert!(rotated.success, "{}{}", rotated.stdout, rotated.stderr);
    let later = new_vault(&clients[1]).await;
    let later_ks = connect_keystore(
        &clients[1],
        &json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": later},
                "name": "internal-2", "groups": ["prod"]}),
    )
    .await;
    let t = clients[1]
        .post(
            "/api/v4/templates",
            &json!({"vault": {"id": later}, "name": "W",
                    "key": {"algorithm": "aes", "size": "256", "state": "active"},
                    "keystores": [{"type": "ibm_cloud_kms", "group": "prod"}]}),
        )
        .await
        .unwrap();
    assert_eq!(t.status, 201, "{}", t.body);
    let after = clients[1]
        .post(
            "/api/v4/managed_keys",
            &json!({"vault": {"id": later}, "template_name": "W", "label": "after-rotation"}),
        )
        .await
        .unwrap();
    assert_eq!(after.status, 201, "{}", after.body);
    let (plain, ciphertext) = wrap_new(&clients[1], &later_ks, &key_ref(&after.body)).await;
    assert_eq!(
        unwrap_ok(&clients[2], &later_ks, &key_ref(&after.body), &ciphertext).await,
        plain
    );

    // An API key revoked on one node is refused by the others within a second.
    let apikey =
        principal_with_api_key(&clients[0], "deployer", "service", &[("reader", None)]).await;
    let (status, token) = exchange(&clients[1].base, &apikey).await;
    assert_eq!(status, 200, "{token}");
    let caller = Client {
        token: token["access_token"].as_str().unwrap().to_owned(),
        ..clients[2].clone()
    };
    let readable = format!("/api/v4/vaults/{vault}");
    assert_eq!(caller.get(&readable).await.unwrap().status, 200);
    let keys = clients[0]
        .get("/api/v4/access/principals?limit=100")
        .await
        .unwrap();
    let principal = keys.body["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "deployer")
        .map(id)
        .unwrap();
    let listed = clients[0]
        .get(&format!("/api/v4/access/principals/{principal}/api_keys"))
        .await
        .unwrap();
    let key_id = id(&listed.body["api_keys"][0]);
    let revoked = clients[1]
        .send(
            "DELETE",
            &format!("/api/v4/access/api_keys/{key_id}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(revoked.status, 204);
    let revoked_at = Instant::now();
    loop {
        let status = caller.get(&readable).await.unwrap().status;
        if status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "a revoked key's token still works on another node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(exchange(&clients[0].base, &apikey).await.0, 400);

    // Hundreds of keys for OpenBao, made through the leader; it is killed while distributing.
    let all: Vec<&Client> = clients.iter().collect();
    let was_leader = leader(&all).await;
    proxy.set(Fault::Latency(Duration::from_millis(150)));
    let mut keys = Vec::new();
    for i in 0..240 {
        keys.push(create_key(&clients[was_leader], &vault, &format!("node-{i}")).await);
    }
    let partial = transit_names(&bao).await.len();
    nodes[was_leader].take().unwrap().kill().await;
    assert!(
        partial < keys.len(),
        "the kill came too late to test anything ({partial} done)"
    );
    let survivors: Vec<&Client> = (0..3)
        .filter(|i| *i != was_leader)
        .map(|i| &clients[i])
        .collect();
    // Another node leads once the dead one's lease ends.
    let moved = leader(&survivors).await;
    let watcher = survivors[moved];
    for key in &keys {
        wait_status(watcher, &id(key), &bao_ks, |s| s["status"] == "active").await;
    }
    // Every key once, and each remote key made once (one version).
    let names = transit_names(&bao).await;
    assert_eq!(names.len(), keys.len(), "every key once");
    for name in &names {
        let remote = transit_key(&bao, name).await.unwrap();
        assert_eq!(
            remote["data"]["latest_version"], 1,
            "{name} installed twice"
        );
    }
    let tasks = watcher
        .get(&format!("/api/v4/keystores/{bao_ks}/tasks"))
        .await
        .unwrap();
    assert!(
        tasks.body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "done"),
        "{}",
        tasks.body
    );

    // A node started without its passphrase stays sealed and says so, the others serve.
    let sealed = start_node(dirs[3].path(), &url, None).await;
    let (status, body) = health(&sealed.client()).await;
    assert_eq!((status, body["sealed"].clone()), (503, json!(true)));
    assert_eq!(
        sealed.client().get("/api/v4/vaults").await.unwrap().status,
        503
    );
    for c in &survivors {
        assert_eq!(health(c).await.0, 200);
        assert_eq!(c.get("/api/v4/vaults").await.unwrap().status, 200);
    }
    assert!(sealed.terminate().await.unwrap());

    // One chain, whatever node wrote each event, the killed one included.
    for node in nodes.into_iter().flatten() {
        assert!(node.terminate().await.unwrap());
    }
    let verified = keyplane(&["audit", "verify", "--database-url", &url], None, "").await;
    assert!(verified.success, "{}{}", verified.stdout, verified.stderr);
    assert!(verified.stdout.contains("audit chain intact"));
    bao.stop().await;
}
