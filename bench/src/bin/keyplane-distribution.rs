//! Distribution throughput: `--keys` active keys created at once, distributed to a real OpenBao
//! behind a proxy that holds every request `--latency-ms`, with `--concurrency` calls in flight
//! per keystore. Compares the time until OpenBao holds every key with the minimum that the
//! concurrency allows: keys × remote calls per key × latency ÷ concurrency.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "../distribution.rs"]
mod distribution;
use keyplane_testkit::peers::{Fault, FaultProxy, OpenBao};
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
    let (server, vault) =
        distribution::server_with_vault(&args.binary, dir.path(), args.concurrency).await?;
    let c = server.client();
    distribution::keystore_with_template(
        &c,
        &vault,
        json!({"type": "hashicorp_vault", "name": "bao", "groups": ["bao"],
               "hashicorp_address": proxy.address, "hashicorp_token": ROOT}),
    )
    .await?;
    proxy.set(Fault::Latency(Duration::from_millis(args.latency_ms)));
    let before = proxy.forwarded();
    let started = Instant::now();
    distribution::create_keys(&c, &vault, args.keys).await?;
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
