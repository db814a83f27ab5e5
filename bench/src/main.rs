//! `keyplane-load`: a small closed-loop HTTP/1.1 load generator for Keyplane's API. Each
//! connection sends one request at a time over keep-alive; latencies are recorded per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Further nodes of the same deployment: the measured connections are spread over `--url`
    /// and these in turn (the workload is set up through `--url`).
    #[arg(long = "also-url")]
    also_urls: Vec<String>,
    #[arg(long, env = "KEYPLANE_TOKEN")]
    token: String,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long each measured run lasts.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// The token the measured calls carry (default: `--token`, which also sets the workload up),
    /// e.g. an application's access token.
    #[arg(long)]
    call_token: Option<String>,
    /// The name the workload is reported under (default: its own).
    #[arg(long)]
    label: Option<String>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Clone)]
enum Workload {
    /// GET /managed_keys/{id} of one key.
    GetKey,
    /// GET each `path` (a list; `{vault}` is the seeded vault's id) in turn after seeding `keys`
    /// active keys; reported as `list-active`, or as `list <path>` when paths are given.
    ListActive {
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        #[arg(long = "path")]
        paths: Vec<String>,
        /// Connections that seed the keys (the measured calls use `--connections`).
        #[arg(long, default_value_t = 16)]
        seed_connections: usize,
    },
    /// POST /managed_keys from a template whose keys are active at once (AES-256, internal keystore).
    CreateActivate,
    /// Key Protect wrap of a 32-byte data key under an internal AES-256 key.
    Wrap,
    /// Key Protect unwrap of a wrapped 32-byte data key.
    Unwrap,
    /// The same JSON + base64 + AES-GCM work on a bare endpoint (`keyplane-bare`): the HTTP ceiling.
    BareWrap,
    /// OpenBao / Vault transit encrypt of a 32-byte value (`--token` is the Vault token).
    BaoEncrypt {
        #[arg(long, default_value = "bench")]
        key: String,
    },
    /// `wrap_batch` generating `batch` 256-bit data keys per request; reports data keys per second.
    WrapBatch {
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    token: String,
    /// The `bluemix-instance` header for data-plane calls.
    instance: Option<String>,
}

impl Conn {
    async fn open(url: &str, token: &str) -> anyhow::Result<Self> {
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&host)
            .await
            .with_context(|| format!("connecting {host}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self {
            sender,
            host,
            token: token.to_owned(),
            instance: None,
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(i) = &self.instance {
            req = req.header("bluemix-instance", i);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        self.sender.ready().await?;
        let resp = self.sender.send_request(req.body(body)?).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        expect: u16,
    ) -> anyhow::Result<Value> {
        let (status, bytes) = self.send(method, path, body).await?;
        if status != expect {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// A vault with an internal keystore and an active AES-256 template: (vault id, keystore id).
async fn setup(c: &mut Conn) -> anyhow::Result<(String, String)> {
    let suffix = std::process::id().to_string() + &Instant::now().elapsed().as_nanos().to_string();
    let vault = c
        .json(
            "POST",
            "/api/v4/vaults",
            Some(&json!({"name": format!("bench-{suffix}")})),
            201,
        )
        .await?;
    let vault_id = vault["id"].as_str().context("vault id")?.to_owned();
    let keystore = c.json(
        "POST",
        "/api/v4/keystores",
        Some(&json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": vault_id}, "name": "bench", "groups": ["bench"]})),
        201,
    )
    .await?;
    let keystore_id = keystore["id"].as_str().context("keystore id")?.to_owned();
    c.json(
        "POST",
        "/api/v4/templates",
        Some(&json!({"vault": {"id": vault_id}, "name": "BENCH", "key": {"algorithm": "aes", "size": "256", "state": "active"},
                     "keystores": [{"type": "ibm_cloud_kms", "group": "bench"}]})),
        201,
    )
    .await?;
    Ok((vault_id, keystore_id))
}

/// Creates a key in the bench vault and answers its id in the internal keystore.
async fn installed_key_ref(c: &mut Conn, vault: &str, run_id: u128) -> anyhow::Result<String> {
    let key = c
        .json(
            "POST",
            "/api/v4/managed_keys",
            Some(&create_body(vault, run_id, 0)),
            201,
        )
        .await?;
    Ok(key["status_in_keystores"][0]["key_id_in_keystore"]
        .as_str()
        .context("key id in keystore")?
        .to_owned())
}

struct Outcome {
    latencies_us: Vec<u32>,
    errors: u64,
}

/// Runs `connections` closed loops for `duration`; `request(i)` gives each request.
async fn run<F>(
    args: &Args,
    instance: Option<&str>,
    duration: Duration,
    request: F,
) -> anyhow::Result<(f64, Outcome)>
where
    F: Fn(u64) -> (&'static str, String, Option<Value>) + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    let urls: Vec<&String> = std::iter::once(&args.url).chain(&args.also_urls).collect();
    for n in 0..args.connections {
        let token = args.call_token.as_deref().unwrap_or(&args.token);
        let mut conn = Conn::open(urls[n % urls.len()], token).await?;
        conn.instance = instance.map(str::to_owned);
        let request = request.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome {
                latencies_us: Vec::with_capacity(100_000),
                errors: 0,
            };
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let (method, path, body) = request(i);
                let t = Instant::now();
                match conn.send(method, &path, body.as_ref()).await {
                    Ok((s, _)) if s < 300 => out
                        .latencies_us
                        .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                    _ => out.errors += 1,
                }
            }
            out
        }));
    }
    let mut all = Outcome {
        latencies_us: Vec::new(),
        errors: 0,
    };
    for t in tasks {
        let o = t.await?;
        all.latencies_us.extend(o.latencies_us);
        all.errors += o.errors;
    }
    let secs = start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    Ok((secs, all))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// `--label`, when given.
static LABEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn report(name: &str, secs: f64, o: &Outcome) {
    let name = LABEL.get().map_or(name, String::as_str);
    let n = o.latencies_us.len();
    let line = json!({
        "workload": name,
        "ok": n,
        "errors": o.errors,
        "seconds": (secs * 100.0).round() / 100.0,
        "per_second": (n as f64 / secs).round(),
        "p50_ms": percentile(&o.latencies_us, 0.50),
        "p99_ms": percentile(&o.latencies_us, 0.99),
        "max_ms": percentile(&o.latencies_us, 1.0),
    });
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
}

fn create_body(vault: &str, run: u128, i: u64) -> Value {
    json!({"vault": {"id": vault}, "template_name": "BENCH", "label": format!("k-{run}-{i}")})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(label) = &args.label {
        let _ = LABEL.set(label.clone());
    }
    let duration: Duration = args.duration.into();
    let mut c = Conn::open(&args.url, &args.token).await?;
    let data_key = json!({"plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="});
    match args.workload.clone() {
        Workload::BareWrap => {
            let (secs, o) = run(&args, None, duration, move |_| {
                ("POST", "/wrap".into(), Some(data_key.clone()))
            })
            .await?;
            report("bare-wrap", secs, &o);
            return Ok(());
        }
        Workload::BaoEncrypt { key } => {
            let path = format!("/v1/transit/encrypt/{key}");
            let (secs, o) = run(&args, None, duration, move |_| {
                ("POST", path.clone(), Some(data_key.clone()))
            })
            .await?;
            report("openbao-transit-encrypt", secs, &o);
            return Ok(());
        }
        _ => {}
    }
    let (vault, keystore) = setup(&mut c).await?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    match args.workload.clone() {
        Workload::GetKey => {
            let key = c
                .json(
                    "POST",
                    "/api/v4/managed_keys",
                    Some(&create_body(&vault, run_id, 0)),
                    201,
                )
                .await?;
            let path = format!(
                "/api/v4/managed_keys/{}",
                key["id"].as_str().context("key id")?
            );
            let (secs, o) =
                run(&args, None, duration, move |_| ("GET", path.clone(), None)).await?;
            report("get-key", secs, &o);
        }
        Workload::Wrap | Workload::Unwrap => {
            let key_ref = installed_key_ref(&mut c, &vault, run_id).await?;
            let wrap_path = format!("/api/v2/keys/{key_ref}/actions/wrap");
            let (name, path, body) = if matches!(args.workload, Workload::Wrap) {
                ("wrap", wrap_path, data_key)
            } else {
                c.instance = Some(keystore.clone());
                let wrapped = c.json("POST", &wrap_path, Some(&data_key), 200).await?;
                let body = json!({"ciphertext": wrapped["ciphertext"]});
                (
                    "unwrap",
                    format!("/api/v2/keys/{key_ref}/actions/unwrap"),
                    body,
                )
            };
            let (secs, o) = run(&args, Some(&keystore), duration, move |_| {
                ("POST", path.clone(), Some(body.clone()))
            })
            .await?;
            report(name, secs, &o);
        }
        Workload::WrapBatch { batch } => {
            let key_ref = installed_key_ref(&mut c, &vault, run_id).await?;
            let path = format!("/api/v2/keys/{key_ref}/actions/wrap_batch");
            let body = json!({ "count": batch });
            let (secs, o) = run(&args, Some(&keystore), duration, move |_| {
                ("POST", path.clone(), Some(body.clone()))
            })
            .await?;
            report(&format!("wrap-batch-{batch}"), secs, &o);
            // Every request carried `batch` data keys.
            let line = json!({
                "workload": format!("wrap-batch-{batch}-data-keys"),
                "per_second": ((o.latencies_us.len() * batch) as f64 / secs).round(),
            });
            let mut out = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
        }
        Workload::BareWrap | Workload::BaoEncrypt { .. } => unreachable!("handled before setup"),
        Workload::CreateActivate => {
            let v = vault.clone();
            let (secs, o) = run(&args, None, duration, move |i| {
                (
                    "POST",
                    "/api/v4/managed_keys".into(),
                    Some(create_body(&v, run_id, i)),
                )
            })
            .await?;
            report("create-activate", secs, &o);
        }
        Workload::ListActive {
            keys,
            paths,
            seed_connections,
        } => {
            let seeding = Args {
                connections: seed_connections,
                ..args.clone()
            };
            let v = vault.clone();
            // Seed with the same closed loop until enough keys exist.
            let mut seeded = 0u64;
            let mut round = 0u128;
            while seeded < keys {
                round += 1;
                let (_, o) = run(&seeding, None, Duration::from_secs(5), {
                    let v = v.clone();
                    move |i| {
                        (
                            "POST",
                            "/api/v4/managed_keys".into(),
                            Some(create_body(&v, run_id + round, i)),
                        )
                    }
                })
                .await?;
                seeded += o.latencies_us.len() as u64;
                eprintln!("seeded {seeded} keys");
            }
            let named = !paths.is_empty();
            let paths = if named {
                paths
            } else {
                vec!["/api/v4/managed_keys?limit=100&state=active".to_owned()]
            };
            for path in paths {
                let concrete = path.replace("{vault}", &v);
                let (secs, o) = run(&args, None, duration, move |_| {
                    ("GET", concrete.clone(), None)
                })
                .await?;
                if named {
                    report(&format!("list {path}"), secs, &o);
                } else {
                    report("list-active", secs, &o);
                }
            }
        }
    }
    Ok(())
}
