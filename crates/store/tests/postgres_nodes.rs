//! Several nodes on one PostgreSQL database, as stores: each test opens two or three
//! `PostgresStore`s on one schema of its own in the database `KEYPLANE_TEST_POSTGRES` names
//! (the test command makes one per run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use keyplane_core::Error;
use keyplane_core::audit::AuditEvent;
use keyplane_core::model::*;
use keyplane_core::ports::*;
use keyplane_store::{PostgresOptions, PostgresStore};

fn database() -> String {
    std::env::var("KEYPLANE_TEST_POSTGRES").expect(
        "KEYPLANE_TEST_POSTGRES must name a PostgreSQL database (scripts/test.sh makes one)",
    )
}

async fn node(url: &str) -> Arc<PostgresStore> {
    Arc::new(
        PostgresStore::open(url, PostgresOptions::default())
            .await
            .expect("node"),
    )
}

/// Two nodes on a fresh schema.
async fn two_nodes() -> (Arc<PostgresStore>, Arc<PostgresStore>) {
    let url = keyplane_store::new_postgres_schema(&database())
        .await
        .unwrap();
    (node(&url).await, node(&url).await)
}

fn vault(name: &str) -> Vault {
    let at = Utc::now().trunc_subsecs(3);
    Vault {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        description: String::new(),
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

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        seq: 0,
        id: Uuid::now_v7(),
        at: Utc::now().trunc_subsecs(3),
        action: format!("keyplane.test.{n}"),
        outcome: "success".into(),
        status: 200,
        severity: "normal".into(),
        initiator: "tester".into(),
        target: None,
        vault_id: None,
        correlation_id: n.to_string(),
        source: None,
        request: serde_json::json!({}),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

#[tokio::test]
async fn nodes_starting_together_migrate_once_and_all_open() {
    let url = keyplane_store::new_postgres_schema(&database())
        .await
        .unwrap();
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::open(&url, PostgresOptions::default()).await })
        })
        .collect();
    let mut nodes = Vec::new();
    for s in starts {
        nodes.push(s.await.unwrap().expect("every node opens"));
    }
    nodes[0].insert_vault(&vault("v")).await.unwrap();
    assert_eq!(nodes[2].vault_ids().await.unwrap().len(), 1);
}

#[tokio::test]
async fn one_node_leads_and_the_lease_moves_when_its_holder_stops_renewing() {
    let (a, b) = two_nodes().await;
    let lease = Duration::from_millis(800);
    let term = a.lead(lease).await.unwrap().expect("the first node leads");
    assert_eq!(b.lead(lease).await.unwrap(), None, "one leader at a time");
    assert_eq!(a.lead(lease).await.unwrap(), Some(term));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let next = b.lead(lease).await.unwrap().expect("the lease moved");
    assert!(
        next > term,
        "a new holder gets a higher term: {next} after {term}"
    );
    assert_eq!(
        a.lead(lease).await.unwrap(),
        None,
        "the old holder is fenced off"
    );
}

#[tokio::test]
async fn a_commit_on_one_node_reaches_the_others_within_a_second() {
    let (a, b) = two_nodes().await;
    // Listening starts in the background: let it settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        let seen = b.commit_generation();
        let committed = Instant::now();
        a.put_setting("round", &round.to_string()).await.unwrap();
        while b.commit_generation() == seen {
            assert!(
                committed.elapsed() < Duration::from_secs(1),
                "node b did not hear of node a's commit within a second"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What key creation reads (here a vault's name) is cached apart from key writes; a change on
/// another node still reaches this node's cache within a second, and this node's own change at
/// once.
#[tokio::test]
async fn a_vault_renamed_on_one_node_is_read_renamed_on_the_others_within_a_second() {
    let (a, b) = two_nodes().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut v = vault("before");
    a.insert_vault(&v).await.unwrap();
    assert_eq!(a.vault_ref(v.id).await.unwrap().unwrap().name, "before");
    for (round, (writer, reader)) in [(b.clone(), a.clone()), (a.clone(), b.clone())]
        .into_iter()
        .enumerate()
    {
        assert_eq!(reader.vault_ref(v.id).await.unwrap().unwrap().name, v.name);
        let read_revision = v.revision;
        v.name = format!("renamed-{round}");
        v.revision += 1;
        writer.update_vault(&v, read_revision).await.unwrap();
        assert_eq!(
            writer.vault_ref(v.id).await.unwrap().unwrap().name,
            v.name,
            "the writing node reads its own change at once"
        );
        let renamed = Instant::now();
        while reader.vault_ref(v.id).await.unwrap().unwrap().name != v.name {
            assert!(
                renamed.elapsed() < Duration::from_secs(1),
                "the other node still reads the old name after a second"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn one_audit_chain_whatever_node_writes() {
    let (a, b) = two_nodes().await;
    let mut appends = Vec::new();
    for n in 0..60 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        appends.push(tokio::spawn(async move {
            node.append_audit_event(event(n)).await
        }));
    }
    for x in appends {
        x.await.unwrap().unwrap();
    }
    for node in [&a, &b] {
        let report = node.verify_audit_chain().await.unwrap();
        assert_eq!(report.events, 60);
        assert_eq!(report.first_broken, None, "{:?}", report.reason);
    }
}

#[tokio::test]
async fn an_etag_holds_across_nodes() {
    let (a, b) = two_nodes().await;
    let v = vault("shared");
    a.insert_vault(&v).await.unwrap();
    let mut tries = Vec::new();
    for (i, node) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let mut v = v.clone();
        tries.push(tokio::spawn(async move {
            v.description = format!("node write {i}");
            v.revision = 2;
            node.update_vault(&v, 1).await
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
    assert_eq!(won, 1, "exactly one update with the same ETag wins");
}

/// A retry recorded while another node queues a newer task for the same key and keystore (its
/// transaction still open as the retry is written) gives way to that task: the outcome is
/// recorded without error and one task waits.
#[tokio::test]
async fn a_retry_gives_way_to_a_task_another_node_queues_meanwhile() {
    let url = keyplane_store::new_postgres_schema(&database())
        .await
        .unwrap();
    let a = node(&url).await;
    let (mut other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (keystore, key) = (Uuid::new_v4(), Uuid::new_v4());
    let queue = "INSERT INTO keystore_tasks (id, keystore_id, managed_key_id, state, next_attempt_at, created_at, updated_at)
                 VALUES ($1, $2, $3, 'pending', now(), now(), now())";
    other
        .execute(queue, &[&Uuid::new_v4(), &keystore, &key])
        .await
        .unwrap();
    let claimed = a.claim_tasks(10, Utc::now()).await.unwrap();
    assert_eq!(claimed.len(), 1);

    let newer = Uuid::new_v4();
    let queuing = other.transaction().await.unwrap();
    queuing
        .execute(queue, &[&newer, &keystore, &key])
        .await
        .unwrap();
    let retry = TaskResult {
        outcome: TaskOutcome::Retry {
            at: Utc::now(),
            error: "keystore unavailable".into(),
        },
        copy: None,
        status: None,
    };
    let finishing = {
        let (a, task) = (a.clone(), claimed[0].clone());
        tokio::spawn(async move { a.finish_task(&task, retry).await })
    };
    // The retry now waits on the newer task's uncommitted row.
    tokio::time::sleep(Duration::from_millis(300)).await;
    queuing.commit().await.unwrap();
    finishing
        .await
        .unwrap()
        .expect("the retry gives way instead of failing");
    let left: Vec<(Uuid, String)> = other
        .query("SELECT id, state FROM keystore_tasks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, vec![(newer, "pending".to_owned())]);
}
