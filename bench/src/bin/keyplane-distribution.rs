//! Distribution throughput: `--keys` active keys created at once, distributed to a real OpenBao
//! behind a proxy that holds every request `--latency-ms`, with `--concurrency` calls in flight
//! per keystore. Compares the time until OpenBao holds every key with the minimum that the
//! concurrency allows: keys × remote calls per key × latency ÷ concurrency.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use keyplane_testkit::peers::{Fault, FaultProxy, OpenBao};
use keyplane_testkit::process::Server;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value = "target/release/keyplane")]
    binary: PathBuf,
}

const TOKEN: &str = "bench-token-0123456789abcdef";
const ROOT: &str = "bench-root-token";

async fn transit_count(bao: &OpenBao) -> anyhow::Result<usize> {
    let listed = bao.call("LIST", "transit/keys", None).await;
    Ok(listed.map_or(0, |v| {
        v["data"]["keys"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|k| !k.as_str().unwrap_or("/").ends_with('/'))
                .count()
        })
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bao = OpenBao::start(ROOT).await?;
    let proxy = FaultProxy::start(&bao.address).await?;
    let dir = tempfile::tempdir()?;
    let concurrency = args.concurrency.to_string();
    let server = Server::start(
        &args.binary,
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_LOG", "warn"),
            ("KEYPLANE_RATE_LIMIT", "0"),
            ("KEYPLANE_KEYSTORE_CONCURRENCY", &concurrency),
        ],
    )
    .await?;
    let c = server.client();
    let vault = c.post("/api/v4/vaults", &json!({"name": "bench"})).await?;
    let vault = vault.body["id"].as_str().unwrap_or_default().to_owned();
    let ks = c
        .post(
            "/api/v4/keystores",
            &json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao", "groups": ["bao"],
                    "hashicorp_address": proxy.address, "hashicorp_token": ROOT}),
        )
        .await?;
    anyhow::ensure!(ks.status == 201, "keystore: {}", ks.body);
    c.post(
        "/api/v4/templates",
        &json!({"vault": {"id": vault}, "name": "T1",
                "key": {"algorithm": "aes", "size": "256", "state": "active"},
                "keystores": [{"type": "hashicorp_vault", "group": "bao"}]}),
    )
    .await?;
    proxy.set(Fault::Latency(Duration::from_millis(args.latency_ms)));
    let before = proxy.forwarded();
    let started = Instant::now();
    for i in 0..args.keys {
        let r = c
            .post(
                "/api/v4/managed_keys",
                &json!({"vault": {"id": vault}, "template_name": "T1", "label": format!("k{i}")}),
            )
            .await?;
        anyhow::ensure!(r.status == 201, "key: {}", r.body);
    }
    let created = started.elapsed();
    while transit_count(&bao).await? < args.keys {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "distribution did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let calls = proxy.forwarded() - before;
    let calls_per_key = calls as f64 / args.keys as f64;
    let minimum = calls_per_key * args.keys as f64 * args.latency_ms as f64
        / 1000.0
        / args.concurrency as f64;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({
            "workload": "distribution",
            "keys": args.keys,
            "latency_ms": args.latency_ms,
            "concurrency": args.concurrency,
            "seconds": elapsed.as_secs_f64(),
            "create_seconds": created.as_secs_f64(),
            "remote_calls": calls,
            "calls_per_key": calls_per_key,
            "minimum_seconds": minimum,
            "ratio_to_minimum": elapsed.as_secs_f64() / minimum,
            "max_in_flight": proxy.max_in_flight(),
        })
    )?;
    drop(out);
    bao.stop().await;
    Ok(())
}
