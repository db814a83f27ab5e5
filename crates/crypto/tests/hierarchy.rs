//! The key hierarchy over a real store: adoption of databases sealed before vault keys existed,
//! refusal of another seal mode or seal key, rotation leaving one master key.

use std::sync::Arc;

use keyplane_core::model::{Actor, Algorithm, Stamps, Vault};
use keyplane_core::ports::{MaterialBinding, MaterialEngine, Store};
use keyplane_crypto::{KeyHierarchy, KeyKind, MasterKey, SealMode, generate_key};
use keyplane_store::{Durability, SqliteStore};
use uuid::Uuid;

async fn store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(&dir.join("db.sqlite"), Durability::Normal)
            .await
            .unwrap(),
    )
}

async fn vault(store: &dyn Store) -> Uuid {
    let id = Uuid::now_v7();
    store
        .insert_vault(&Vault {
            id,
            name: format!("v-{id}"),
            description: String::new(),
            recovery_key_label: None,
            stamps: Stamps::new(&Actor("t".into()), chrono::Utc::now()),
            revision: 1,
        })
        .await
        .unwrap();
    id
}

/// Writes a dev seal key file (mode 0600) and returns the key in it.
fn write_dev_key(path: &std::path::Path) -> MasterKey {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    std::fs::write(path, format!("{}\n", hex::encode(bytes))).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    MasterKey::from_bytes(&bytes).unwrap()
}

fn dev(dir: &std::path::Path) -> SealMode {
    SealMode::Dev {
        key_file: dir.join("master.key"),
    }
}

/// Material sealed directly under the key a dev seal file holds (as releases before vault keys
/// did) still opens: that key is adopted as the first master key and as every old vault's key.
#[tokio::test]
async fn a_database_from_before_vault_keys_is_adopted_without_resealing() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = write_dev_key(&dir.path().join("master.key"));
    let store = store(dir.path()).await;
    let old_vault = vault(store.as_ref()).await;
    store
        .put_setting("master_key_check_value", &legacy.key_check_value())
        .await
        .unwrap();
    let binding = MaterialBinding {
        vault_id: old_vault,
        key_id: Uuid::now_v7(),
        version: 1,
    };
    let generated = generate_key(KeyKind::Aes { bits: 256 }).unwrap();
    let sealed = legacy
        .seal(generated.material.expose(), &binding.aad())
        .unwrap();

    let engine = KeyHierarchy::start(store.clone(), dev(dir.path()))
        .await
        .unwrap();
    engine.open_vault(old_vault).await.unwrap();
    let old = keyplane_core::model::SealedMaterial {
        version: 1,
        sealed,
        verification_patterns: vec![],
    };
    let patterns = engine.verify(Algorithm::Aes, 256, &binding, &old).unwrap();
    assert_eq!(patterns[0].value, generated.verification_patterns[0].value);
    assert_eq!(store.root_keys().await.unwrap().len(), 1);

    // A vault made now gets a key of its own; after a rotation the old material still opens.
    let new_vault = vault(store.as_ref()).await;
    engine.open_vault(new_vault).await.unwrap();
    let report = engine.rotate_master_key().await.unwrap();
    assert!(report.previous_master_key_id.starts_with("legacy-"));
    assert_eq!(report.vault_keys_rewrapped, 2);
    assert_eq!(store.root_keys().await.unwrap().len(), 1);
    drop(engine);
    let engine = KeyHierarchy::start(store.clone(), dev(dir.path()))
        .await
        .unwrap();
    engine.open_vault(old_vault).await.unwrap();
    assert_eq!(
        engine.verify(Algorithm::Aes, 256, &binding, &old).unwrap()[0].value,
        generated.verification_patterns[0].value
    );
}

/// A database remembers its seal: another mode, or another seal key, opens nothing.
#[tokio::test]
async fn another_seal_mode_or_seal_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let engine = KeyHierarchy::start(store.clone(), dev(dir.path()))
        .await
        .unwrap();
    let v = vault(store.as_ref()).await;
    engine.open_vault(v).await.unwrap();
    drop(engine);
    let other_mode = KeyHierarchy::start(
        store.clone(),
        SealMode::Passphrase {
            sealed_file: dir.path().join("master.sealed"),
            passphrase: Some(zeroize::Zeroizing::new("a long enough passphrase".into())),
        },
    )
    .await
    .err()
    .unwrap();
    assert!(
        other_mode.to_string().contains("KEYPLANE_SEAL=dev"),
        "{other_mode}"
    );
    write_dev_key(&dir.path().join("master.key"));
    let wrong_key = KeyHierarchy::start(store.clone(), dev(dir.path()))
        .await
        .err()
        .unwrap();
    assert!(
        wrong_key.to_string().contains("does not open"),
        "{wrong_key}"
    );
}

/// A data-plane call that read a key's material before the key was destroyed, and opens it only
/// after, is served, but leaves nothing of the destroyed material in memory.
#[tokio::test]
async fn material_opened_after_a_destroy_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let engine = KeyHierarchy::start(store.clone(), SealMode::Ephemeral)
        .await
        .unwrap();
    let vault_id = vault(store.as_ref()).await;
    engine.open_vault(vault_id).await.unwrap();
    let binding = MaterialBinding {
        vault_id,
        key_id: Uuid::now_v7(),
        version: 1,
    };
    let material = engine.generate(Algorithm::Aes, 256, &binding).unwrap();
    engine
        .encrypt_with(&binding, &material, &[b"data key"], b"")
        .unwrap();
    assert!(engine.holds_opened_material(binding.key_id));
    // The destroy forgets it; the late call still holds the sealed material it read before.
    engine.forget_material(binding.key_id);
    assert!(!engine.holds_opened_material(binding.key_id));
    let late = engine
        .encrypt_with(&binding, &material, &[b"data key"], b"")
        .unwrap();
    assert_eq!(late.len(), 1);
    assert!(
        !engine.holds_opened_material(binding.key_id),
        "the destroyed material came back into memory"
    );
}
