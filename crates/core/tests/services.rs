//! Core's services on their own, without HTTP: what each operation decides for a caller, over
//! the real store (SQLite, or PostgreSQL when the suite runs on it) and key hierarchy.

use std::sync::Arc;

use keyplane_core::Error;
use keyplane_core::authz::{Caller, Grants, Role};
use keyplane_core::etag::IfMatch;
use keyplane_core::lifecycle::LifecyclePolicy;
use keyplane_core::model::*;
use keyplane_core::query::{KeyQuery, KeystoreQuery, VaultQuery};
use keyplane_core::service::{
    Decided, KeyPropertiesInput, Keyplane, NewKey, NewKeystore, NewTemplate, NewVault,
};
use keyplane_crypto::{KeyHierarchy, SealMode};
use uuid::Uuid;

struct World {
    kp: Keyplane,
    admin: Caller,
    mine: Uuid,
    other: Uuid,
}

fn caller(name: &str, policies: &[(Role, Option<Uuid>)]) -> Caller {
    Caller::new(
        Actor(name.to_owned()),
        Arc::new(Grants::from_policies(policies)),
    )
}

async fn world() -> World {
    let store = keyplane_store::open_scratch_store().await.unwrap();
    let engine = KeyHierarchy::start(store.clone(), SealMode::Ephemeral)
        .await
        .unwrap();
    let kp = Keyplane::new(
        store,
        engine,
        LifecyclePolicy {
            destroy_grace_period: chrono::Duration::zero(),
            rotation_min_interval: chrono::Duration::zero(),
        },
    );
    let admin = Caller::administrator(Actor("admin".into()));
    let mut vaults = Vec::new();
    for name in ["mine", "other"] {
        let vault = kp
            .create_vault(
                &admin,
                NewVault {
                    name: Some(name.into()),
                    ..NewVault::default()
                },
            )
            .await
            .unwrap()
            .vault
            .id;
        kp.create_keystore(
            &admin,
            NewKeystore {
                vault_id: Some(vault),
                keystore_type: Some(KeystoreType::IbmCloudKms),
                ibm_variant: Some(IbmVariant::Internal),
                name: Some(format!("ks-{name}")),
                groups: Some(vec!["g".into()]),
                ..NewKeystore::default()
            },
            false,
        )
        .await
        .unwrap();
        kp.create_template(
            &admin,
            NewTemplate {
                vault_id: Some(vault),
                name: Some("T1".into()),
                key: Some(KeyPropertiesInput {
                    algorithm: Some(Algorithm::Aes),
                    size: Some(256),
                    state: Some(InitialKeyState::Active),
                    ..KeyPropertiesInput::default()
                }),
                keystores: Some(vec![TemplateKeystore {
                    keystore_type: KeystoreType::IbmCloudKms,
                    group: "g".into(),
                    naming_scheme: None,
                    properties: KeystoreKeyProperties::default(),
                }]),
                ..NewTemplate::default()
            },
        )
        .await
        .unwrap();
        vaults.push(vault);
    }
    World {
        kp,
        admin,
        mine: vaults[0],
        other: vaults[1],
    }
}

fn new_key(vault: Uuid, label: &str) -> NewKey {
    NewKey {
        template_name: Some("T1".into()),
        vault_id: Some(vault),
        label: Some(label.into()),
        ..NewKey::default()
    }
}

#[tokio::test]
async fn a_resource_in_a_hidden_vault_does_not_exist_for_the_caller() {
    let w = world().await;
    let key =
        w.kp.create_key(&w.admin, new_key(w.other, "secret"))
            .await
            .unwrap();
    let custodian = caller("custodian", &[(Role::KeyCustodianCreator, Some(w.mine))]);
    // Reading, acting on or creating in the other vault: as if nothing were there.
    let read = w.kp.get_key(&custodian, key.id).await.unwrap_err();
    assert!(matches!(read, Error::NotFound { .. }), "{read:?}");
    let created =
        w.kp.create_key(&custodian, new_key(w.other, "intruder"))
            .await
            .unwrap_err();
    assert!(created.to_string().contains("does not exist"), "{created}");
    // In its own vault: what its role allows, and 403 for what it does not.
    w.kp.create_key(&custodian, new_key(w.mine, "own"))
        .await
        .unwrap();
    let reader = caller("reader", &[(Role::Reader, Some(w.mine))]);
    let refused =
        w.kp.create_key(&reader, new_key(w.mine, "not-mine-to-make"))
            .await
            .unwrap_err();
    assert!(matches!(refused, Error::Forbidden), "{refused:?}");
    // Nothing was created where it was refused.
    let all = w.kp.list_keys(&w.admin, KeyQuery::default()).await.unwrap();
    let labels: Vec<&str> = all.items.iter().map(|k| k.label.as_str()).collect();
    assert!(!labels.contains(&"intruder") && !labels.contains(&"not-mine-to-make"));
}

#[tokio::test]
async fn lists_show_only_the_vaults_a_caller_may_list() {
    let w = world().await;
    let manager = caller("manager", &[(Role::Manager, Some(w.mine))]);
    let page =
        w.kp.list_vaults(&manager, VaultQuery::default())
            .await
            .unwrap();
    assert_eq!(page.total_count, 1);
    assert_eq!(page.items[0].vault.id, w.mine);
    // Asking for the other vault by id gives an empty list, not its contents.
    let narrowed =
        w.kp.list_vaults(
            &manager,
            VaultQuery {
                ids: vec![w.other],
                ..VaultQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(narrowed.total_count, 0);
    // A reader may not list at all.
    let reader = caller("reader", &[(Role::Reader, Some(w.mine))]);
    assert!(matches!(
        w.kp.list_vaults(&reader, VaultQuery::default()).await,
        Err(Error::Forbidden)
    ));
}

#[tokio::test]
async fn dual_control_is_decided_by_the_operation_and_needs_a_second_identity() {
    let w = world().await;
    w.kp.set_dual_control(&w.admin, w.mine, true).await.unwrap();
    let alice = caller("alice", &[(Role::VaultAdministrator, Some(w.mine))]);
    let alice_by_certificate = caller("cert:alice", &[(Role::VaultAdministrator, Some(w.mine))]);
    let bob = caller("bob", &[(Role::VaultAdministrator, Some(w.mine))]);
    // Only an administrator switches dual control: a vault administrator could otherwise turn
    // it off and act alone.
    assert!(matches!(
        w.kp.set_dual_control(&alice, w.mine, false).await,
        Err(Error::Forbidden)
    ));
    let key =
        w.kp.create_key(&w.admin, new_key(w.mine, "guarded"))
            .await
            .unwrap();
    // Changes carry the ETag read; `*` matches any.
    let any = IfMatch::parse("*");
    let key =
        w.kp.deactivate_key(&w.admin, key.id, Some(&any))
            .await
            .unwrap();
    let approval = match w.kp.destroy_key(&alice, key.id, Some(&any)).await {
        Err(e) => panic!("{e}"),
        Ok(Decided::Done(_)) => panic!("destroyed without a second person"),
        Ok(Decided::Requested(approval)) => approval,
    };
    assert_eq!(
        w.kp.get_key(&w.admin, key.id).await.unwrap().state,
        KeyState::Deactivated
    );
    // The requester, whichever way it signs in, cannot approve.
    for same in [&alice, &alice_by_certificate] {
        let refused = w.kp.approve(same, approval.id).await.unwrap_err();
        assert!(
            refused.to_string().contains("second, different"),
            "{refused}"
        );
    }
    let (decided, destroyed) = w.kp.approve(&bob, approval.id).await.unwrap();
    assert_eq!(decided.state, ApprovalState::Approved);
    assert_eq!(destroyed.unwrap().state, KeyState::Destroyed);
}

#[tokio::test]
async fn a_key_moves_only_along_its_lifecycle_and_holds_its_keystore_until_destroyed() {
    let w = world().await;
    let any = IfMatch::parse("*");
    let key =
        w.kp.create_key(&w.admin, new_key(w.mine, "lifecycle"))
            .await
            .unwrap();
    assert_eq!(key.state, KeyState::Active);
    let keystore =
        w.kp.list_keystores(
            &w.admin,
            KeystoreQuery {
                vault_ids: vec![w.mine],
                ..KeystoreQuery::default()
            },
        )
        .await
        .unwrap()
        .items
        .remove(0);
    let disconnect = || {
        w.kp.delete_keystore(
            &w.admin,
            keystore.id,
            Some(&any),
            KeystoreDeleteMode::Restrict,
        )
    };
    // The seed's rule: an active key keeps its keystore connected.
    let refused = disconnect().await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("only pre-active or destroyed keys may remain"),
        "{refused}"
    );
    // Only a destroyed key can be removed; a refused step changes nothing.
    let kept =
        w.kp.delete_key(&w.admin, key.id, Some(&any))
            .await
            .unwrap_err();
    assert!(matches!(kept, Error::Conflict { .. }), "{kept:?}");
    let unchanged = w.kp.get_key(&w.admin, key.id).await.unwrap();
    assert_eq!(
        (unchanged.state, unchanged.revision),
        (KeyState::Active, key.revision)
    );
    w.kp.deactivate_key(&w.admin, key.id, Some(&any))
        .await
        .unwrap();
    assert!(matches!(
        w.kp.destroy_key(&w.admin, key.id, Some(&any)).await,
        Ok(Decided::Done(ref k)) if k.state == KeyState::Destroyed
    ));
    // A destroyed key has no material left to open.
    let versions = w.kp.store().key_versions(key.id).await.unwrap();
    assert!(!versions.is_empty(), "a destroyed key keeps its versions");
    for v in versions {
        assert!(
            w.kp.store()
                .sealed_material(key.id, v.version)
                .await
                .unwrap()
                .is_none()
        );
    }
    disconnect().await.unwrap();
    assert!(matches!(
        w.kp.delete_key(&w.admin, key.id, Some(&any)).await,
        Ok(Decided::Done(()))
    ));
    assert!(matches!(
        w.kp.get_key(&w.admin, key.id).await,
        Err(Error::NotFound { .. })
    ));
}
