//! The transit connector against a real OpenBao: what holds when two callers act on one key.

use keyplane_connectors::hashicorp_vault::{Credentials, HashicorpVault, Settings};
use keyplane_core::connector::{Connector, RemoteKey};
use keyplane_testkit::peers::OpenBao;
use serde_json::json;

const ROOT: &str = "vault-keystore-root";

/// Two destroys of one key at once (the key's own task and a keystore delete in `destroy` mode)
/// both succeed: the one that finds the key already deleted has nothing left to do.
#[tokio::test]
async fn a_key_destroyed_twice_at_once_is_destroyed_once_without_error() {
    let bao = OpenBao::start(ROOT).await.unwrap();
    let transit = HashicorpVault::new(Settings {
        address: bao.address.clone(),
        credentials: Credentials::Token(ROOT.into()),
        mount: "transit".into(),
        namespace: None,
        ca_cert: None,
    })
    .unwrap();
    for i in 0..8 {
        let name = format!("twice-{i}");
        bao.call(
            "POST",
            &format!("transit/keys/{name}"),
            Some(json!({"type": "aes256-gcm96"})),
        )
        .await
        .unwrap();
        let remote = RemoteKey {
            remote_id: name.clone(),
            enabled: true,
            version: 1,
        };
        let (first, second) = tokio::join!(transit.destroy(&remote), transit.destroy(&remote));
        assert_eq!((first, second), (Ok(()), Ok(())), "{name}");
        assert!(transit.find(Some(&name), &name).await.unwrap().is_none());
    }
    bao.stop().await;
}
