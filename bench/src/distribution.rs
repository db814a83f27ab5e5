//! What the distribution benchmarks share: a server whose keystores take `concurrency` calls at
//! once, a vault, a keystore, and a template of active AES-256 keys for it.

use std::path::Path;

use keyplane_testkit::process::{Client, Server};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token-0123456789abcdef";

/// The server, and a vault in it.
pub async fn server_with_vault(
    binary: &Path,
    dir: &Path,
    concurrency: usize,
) -> anyhow::Result<(Server, String)> {
    let concurrency = concurrency.to_string();
    let server = Server::start(
        binary,
        dir,
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_LOG", "warn"),
            ("KEYPLANE_RATE_LIMIT", "0"),
            ("KEYPLANE_KEYSTORE_CONCURRENCY", &concurrency),
        ],
    )
    .await?;
    let vault = server
        .client()
        .post("/api/v4/vaults", &json!({"name": "bench"}))
        .await?;
    let vault = vault.body["id"].as_str().unwrap_or_default().to_owned();
    Ok((server, vault))
}

/// Connects keystore `connection` (type, name, group and fields) and makes template `T1` of
/// active AES-256 keys for its type and group; the keystore's id.
pub async fn keystore_with_template(
    c: &Client,
    vault: &str,
    mut connection: Value,
) -> anyhow::Result<String> {
    connection["vault"] = json!({"id": vault});
    let ks = c.post("/api/v4/keystores", &connection).await?;
    anyhow::ensure!(ks.status == 201, "keystore: {}", ks.body);
    let t = c
        .post(
            "/api/v4/templates",
            &json!({"vault": {"id": vault}, "name": "T1",
                    "key": {"algorithm": "aes", "size": "256", "state": "active"},
                    "keystores": [{"type": connection["type"], "group": connection["groups"][0]}]}),
        )
        .await?;
    anyhow::ensure!(t.status == 201, "template: {}", t.body);
    Ok(ks.body["id"].as_str().unwrap_or_default().to_owned())
}

/// Creates `keys` keys of template `T1`, labelled `k0`, `k1`, …, one after the other.
pub async fn create_keys(c: &Client, vault: &str, keys: usize) -> anyhow::Result<()> {
    for i in 0..keys {
        let r = c
            .post(
                "/api/v4/managed_keys",
                &json!({"vault": {"id": vault}, "template_name": "T1", "label": format!("k{i}")}),
            )
            .await?;
        anyhow::ensure!(r.status == 201, "key: {}", r.body);
    }
    Ok(())
}
