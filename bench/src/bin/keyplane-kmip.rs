//! Distribution to a KMIP server (PyKMIP): `--keys` active AES-256 keys created through the API
//! and distributed to a `kmip` keystore with `--concurrency` calls in flight, against the same
//! server doing only what a bare client must — Locate by name (no duplicates), Register and
//! Activate of as many keys, on as many connections, by PyKMIP's own client. Prints both times
//! and their ratio.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

#[path = "../distribution.rs"]
mod distribution;
use keyplane_testkit::kmip::PyKmip;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 500)]
    keys: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value = "target/release/keyplane")]
    binary: PathBuf,
}

/// How many active keys the server holds.
async fn active_keys(kmip: &PyKmip) -> anyhow::Result<usize> {
    let out = kmip
        .client_script(
            &kmip.client,
            "from kmip.core.factories.attributes import AttributeFactory\n\
             f = AttributeFactory()\n\
             print(len(client.locate(attributes=[f.create_attribute(enums.AttributeType.STATE, enums.State.ACTIVE)])))",
        )
        .await?;
    Ok(out.trim().parse()?)
}

/// Waits until the server holds `count` active keys, looking every 2 s from one connection
/// (PyKMIP's Locate reads every object it holds: looking more often slows the server down).
async fn until_active(kmip: &PyKmip, count: usize) -> anyhow::Result<()> {
    let out = kmip
        .client_script(
            &kmip.client,
            &format!(
                "import time\n\
                 from kmip.core.factories.attributes import AttributeFactory\n\
                 f = AttributeFactory()\n\
                 active = [f.create_attribute(enums.AttributeType.STATE, enums.State.ACTIVE)]\n\
                 deadline = time.time() + 900\n\
                 while len(client.locate(attributes=active)) < {count} and time.time() < deadline:\n\
                 \x20   time.sleep(2)\n\
                 print(time.time())"
            ),
        )
        .await?;
    drop(out);
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds PyKMIP's own client takes to install `keys` AES-256 keys as any client that must
/// not make duplicates does — Locate by name, Register, Activate — on `connections`
/// connections.
async fn bare_client_seconds(
    kmip: &PyKmip,
    keys: usize,
    connections: usize,
) -> anyhow::Result<f64> {
    let out = kmip
        .client_script(
            &kmip.client,
            &format!(
                "import os, threading, time\n\
                 from kmip.pie import objects\n\
                 from kmip.core.factories.attributes import AttributeFactory\n\
                 f = AttributeFactory()\n\
                 def work(first):\n\
                 \x20   c = connect()\n\
                 \x20   for i in range(first, {keys}, {connections}):\n\
                 \x20       c.locate(attributes=[f.create_attribute(enums.AttributeType.NAME, 'bare-%d' % i)])\n\
                 \x20       uid = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, os.urandom(32), name='bare-%d' % i))\n\
                 \x20       c.activate(uid)\n\
                 \x20   c.close()\n\
                 threads = [threading.Thread(target=work, args=(n,)) for n in range({connections})]\n\
                 started = time.monotonic()\n\
                 for t in threads: t.start()\n\
                 for t in threads: t.join()\n\
                 print(time.monotonic() - started)"
            ),
        )
        .await?;
    Ok(out.trim().parse()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Each side on a fresh server: PyKMIP's Locate slows down as the objects it holds grow.
    let bare_server = PyKmip::start().await?;
    let bare = bare_client_seconds(&bare_server, args.keys, args.concurrency).await?;
    bare_server.stop().await;
    let kmip = PyKmip::start().await?;
    let baseline = active_keys(&kmip).await?;

    let dir = tempfile::tempdir()?;
    let (server, vault) =
        distribution::server_with_vault(&args.binary, dir.path(), args.concurrency).await?;
    let c = server.client();
    let ks = distribution::keystore_with_template(
        &c,
        &vault,
        json!({"type": "kmip", "name": "kmip", "groups": ["kmip"],
               "kmip_host": "127.0.0.1", "kmip_port": kmip.port,
               "kmip_ca_cert": kmip.ca.cert_pem(),
               "kmip_client_cert": kmip.client.cert_pem,
               "kmip_client_key": kmip.client.key_pem}),
    )
    .await?;
    let started = unix_now();
    let clock = Instant::now();
    distribution::create_keys(&c, &vault, args.keys).await?;
    let created = clock.elapsed();
    until_active(&kmip, baseline + args.keys).await?;
    anyhow::ensure!(
        active_keys(&kmip).await? >= baseline + args.keys,
        "distribution did not finish"
    );
    // When the last distribution task finished, by the server's own record.
    let tasks = c.get(&format!("/api/v4/keystores/{ks}/tasks")).await?;
    let mut last = started;
    for task in tasks.body["tasks"].as_array().into_iter().flatten() {
        anyhow::ensure!(task["state"] == "done", "task not done: {task}");
        anyhow::ensure!(task["attempts"].as_u64() == Some(1), "task retried: {task}");
        let at = humantime::parse_rfc3339_weak(task["updated_at"].as_str().unwrap_or_default())?
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        last = last.max(at);
    }
    let elapsed = last - started;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({
            "workload": "kmip_distribution",
            "keys": args.keys,
            "concurrency": args.concurrency,
            "seconds": elapsed,
            "create_seconds": created.as_secs_f64(),
            "keys_per_second": args.keys as f64 / elapsed,
            "bare_client_seconds": bare,
            "ratio_to_bare_client": elapsed / bare,
        })
    )?;
    drop(out);
    kmip.stop().await;
    Ok(())
}
