//! The store interfaces' contract, run unchanged on every engine: SQLite by default, PostgreSQL
//! when `KEYPLANE_TEST_DATABASE_URL` names a database (each test in a schema of its own).
//! What the services build on these interfaces is tested through core and the API, on both
//! engines too; this suite pins what every engine must do the same way.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use keyplane_core::Error;
use keyplane_core::audit::AuditEvent;
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_core::query::{Paging, VaultQuery};

async fn store() -> Arc<dyn Store> {
    keyplane_store::open_scratch_store().await.expect("store")
}

/// Now, as stores keep it (milliseconds).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn vault(name: &str) -> Vault {
    let at = now();
    Vault {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        description: "for the conformance suite".into(),
        recovery_key_label: None,
        stamps: Stamps {
            created_at: at,
            updated_at: at,
            created_by: "tester".into(),
            updated_by: "tester".into(),
        },
        revision: 1,
    }
}

fn event(action: &str, vault_id: Option<Uuid>) -> AuditEvent {
    AuditEvent {
        seq: 0,
        id: Uuid::now_v7(),
        at: now(),
        action: action.to_owned(),
        outcome: "success".into(),
        status: 200,
        severity: "normal".into(),
        initiator: "tester".into(),
        target: None,
        vault_id,
        correlation_id: Uuid::new_v4().to_string(),
        source: Some("127.0.0.1".into()),
        request: serde_json::json!({"method": "POST", "path": "/x"}),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

#[tokio::test]
async fn a_migrated_store_is_at_the_schema_this_build_knows() {
    let s = store().await;
    s.ping().await.unwrap();
    let (current, known) = s.schema_versions().await.unwrap();
    assert!(known > 0);
    assert_eq!(current, known);
}

#[tokio::test]
async fn settings_are_kept_and_the_first_insert_wins() {
    let s = store().await;
    assert_eq!(s.get_setting("a").await.unwrap(), None);
    s.put_setting("a", "1").await.unwrap();
    s.put_setting("a", "2").await.unwrap();
    assert_eq!(s.get_setting("a").await.unwrap().as_deref(), Some("2"));
    assert_eq!(s.insert_setting("b", "first").await.unwrap(), "first");
    assert_eq!(s.insert_setting("b", "second").await.unwrap(), "first");
    assert_eq!(s.get_setting("b").await.unwrap().as_deref(), Some("first"));
}

#[tokio::test]
async fn a_vault_reads_back_as_written_and_names_are_unique() {
    let s = store().await;
    let v = vault("payments");
    s.insert_vault(&v).await.unwrap();
    let read = s.get_vault(v.id).await.unwrap().expect("vault");
    assert_eq!(read.vault, v);
    assert_eq!(
        (
            read.keys_count,
            read.key_templates_count,
            read.keystores_count
        ),
        (0, 0, 0)
    );
    let again = s.insert_vault(&vault("payments")).await.unwrap_err();
    assert_eq!(again.status(), 409, "{again}");
    assert_eq!(s.vault_ref(v.id).await.unwrap().unwrap().name, "payments");
    assert!(s.get_vault(Uuid::new_v4()).await.unwrap().is_none());
}

#[tokio::test]
async fn updates_and_deletes_hold_to_the_revision_read() {
    let s = store().await;
    let mut v = vault("etag");
    s.insert_vault(&v).await.unwrap();
    v.description = "changed".into();
    v.revision = 2;
    assert!(matches!(
        s.update_vault(&v, 7).await.unwrap_err(),
        Error::EtagMismatch
    ));
    s.update_vault(&v, 1).await.unwrap();
    assert_eq!(s.get_vault(v.id).await.unwrap().unwrap().vault, v);
    assert!(matches!(
        s.delete_vault(v.id, 1).await.unwrap_err(),
        Error::EtagMismatch
    ));
    s.delete_vault(v.id, 2).await.unwrap();
    assert!(s.get_vault(v.id).await.unwrap().is_none());
}

/// Two writers updating one resource with the same revision: exactly one wins.
#[tokio::test]
async fn concurrent_updates_with_one_revision_let_exactly_one_win() {
    let s = store().await;
    let v = vault("race");
    s.insert_vault(&v).await.unwrap();
    let mut tries = Vec::new();
    for i in 0..8 {
        let (s, mut v) = (s.clone(), v.clone());
        tries.push(tokio::spawn(async move {
            v.description = format!("writer {i}");
            v.revision = 2;
            s.update_vault(&v, 1).await
        }));
    }
    let mut won = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(Error::EtagMismatch) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(s.get_vault(v.id).await.unwrap().unwrap().vault.revision, 2);
}

#[tokio::test]
async fn vault_lists_page_in_name_order_with_their_total() {
    let s = store().await;
    for name in ["delta", "alpha", "Charlie", "bravo"] {
        s.insert_vault(&vault(name)).await.unwrap();
    }
    let q = VaultQuery {
        paging: Paging {
            limit: 2,
            offset: 1,
        },
        ..VaultQuery::default()
    };
    let page = s.list_vaults(&q).await.unwrap();
    assert_eq!(page.total_count, 4);
    assert_eq!(page.items.len(), 2);
    assert_eq!(s.vault_ids().await.unwrap().len(), 4);
}

#[tokio::test]
async fn the_audit_chain_stays_one_chain_under_concurrent_appends() {
    let s = store().await;
    let mut appends = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        appends.push(tokio::spawn(async move {
            s.append_audit_event(event(&format!("keyplane.test.{}", i % 3), None))
                .await
        }));
    }
    for a in appends {
        a.await.unwrap().unwrap();
    }
    let report = s.verify_audit_chain().await.unwrap();
    assert_eq!(report.events, 40);
    assert_eq!(report.first_broken, None, "{:?}", report.reason);
    let all = s.list_audit_events(&AuditQuery::after(0)).await.unwrap();
    assert_eq!(all.total_count, 40);
    let seqs: Vec<i64> = all.items.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "numbered without gaps");
    assert!(
        all.items.windows(2).all(|w| w[1].prev_hash == w[0].hash),
        "each links to the one before"
    );
    assert_eq!(report.head, all.items[39].hash);
    let after = s.list_audit_events(&AuditQuery::after(35)).await.unwrap();
    assert_eq!(after.total_count, 5);
    assert_eq!(after.items[0].seq, 36);
    // What was appended reads back as it was hashed.
    assert_eq!(all.items[0].request["path"], "/x");
    assert_eq!(all.items[0].source.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn api_tokens_are_found_by_digest_only() {
    let s = store().await;
    assert_eq!(s.count_api_tokens().await.unwrap(), 0);
    let token = ApiToken {
        id: Uuid::new_v4(),
        name: "admin".into(),
        token_hash: "ab".repeat(32),
    };
    s.insert_api_token(&token).await.unwrap();
    assert_eq!(s.count_api_tokens().await.unwrap(), 1);
    let found = s.find_api_token(&"ab".repeat(32)).await.unwrap().unwrap();
    assert_eq!((found.id, found.name), (token.id, token.name));
    assert!(s.find_api_token(&"cd".repeat(32)).await.unwrap().is_none());
}

#[tokio::test]
async fn the_scheduler_lease_is_held_and_renewed_under_one_term() {
    let s = store().await;
    let lease = std::time::Duration::from_secs(5);
    let term = s.lead(lease).await.unwrap().expect("a lone node leads");
    assert_eq!(
        s.lead(lease).await.unwrap(),
        Some(term),
        "renewal keeps the term"
    );
}
