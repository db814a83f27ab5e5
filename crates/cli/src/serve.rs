//! `keyplane serve`: opens the store and the key hierarchy (unsealing it when the seal mode
//! allows), makes sure an admin token exists, and serves the API until SIGINT or SIGTERM.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, bail};
use keyplane_api::HttpSettings;
use keyplane_core::lifecycle::LifecyclePolicy;
use keyplane_core::ports::{ApiToken, Store};
use keyplane_core::service::Keyplane;
use keyplane_crypto::pkcs11::Pkcs11Config;
use keyplane_crypto::{KeyHierarchy, SealMode, new_token, token_digest};
use keyplane_store::{Durability, PostgresOptions, PostgresStore, SqliteStore};
use uuid::Uuid;

use crate::config::{Config, Seal};
use crate::tls;

/// Prints to standard output: the lines operators and scripts read (address, first token).
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn ensure_admin_token(
    store: &dyn Store,
    bootstrap: Option<&str>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(token) = bootstrap {
        if token.len() < 16 {
            bail!("KEYPLANE_BOOTSTRAP_TOKEN must be at least 16 characters long");
        }
        if store.find_api_token(&token_digest(token)).await?.is_none() {
            store
                .insert_api_token(&ApiToken {
                    id: Uuid::new_v4(),
                    name: format!("admin-{}", &Uuid::new_v4().simple().to_string()[..8]),
                    token_hash: token_digest(token),
                })
                .await?;
            tracing::info!("bootstrap admin token registered");
        }
        return Ok(());
    }
    if store.count_api_tokens().await? == 0 {
        let token = new_token().context("generating the admin token")?;
        // Written before it is registered: a token that cannot be handed over is never made.
        if let Some(path) = token_file {
            write_private(path, &format!("{token}\n"))
                .with_context(|| format!("writing the admin token to {}", path.display()))?;
        }
        let registered = store
            .insert_api_token(&ApiToken {
                id: Uuid::new_v4(),
                name: "admin".into(),
                token_hash: token_digest(&token),
            })
            .await;
        if let Err(e) = registered {
            if let Some(path) = token_file {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
        match token_file {
            Some(path) => announce(&format!(
                "admin token written to {} (read it once, store it, then delete the file)",
                path.display()
            )),
            None => announce(&format!("admin token (shown once, store it now): {token}")),
        }
    }
    Ok(())
}

/// Creates `path` with `text`, readable by its owner only; an existing file is refused.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// Registers the shutdown signals now, so a signal that arrives right after the "listening" line
/// is handled rather than killing the process; the returned future completes on the first one.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    let (mut term, mut interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! { _ = term.recv() => {}, _ = interrupt.recv() => {} }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing requests in flight");
    })
}

fn seal_mode(config: &Config) -> SealMode {
    match &config.seal {
        Seal::Dev => {
            let warning = "DEV SEAL: the seal key is a plain file in the data directory; anyone who can read it can \
                           decrypt every key. Use it for development only.";
            tracing::warn!("{warning}");
            eprintln!("WARNING: {warning}");
            SealMode::Dev {
                key_file: config.data_dir.join("master.key"),
            }
        }
        Seal::Passphrase(passphrase) => SealMode::Passphrase {
            sealed_file: config.data_dir.join("master.sealed"),
            passphrase: passphrase.clone(),
        },
        Seal::Shamir => SealMode::Shamir,
        Seal::Pkcs11 { module, token, pin } => SealMode::Pkcs11(Pkcs11Config {
            module: module.clone(),
            token_label: token.clone(),
            pin: pin.clone(),
        }),
    }
}

/// Where a command finds the database: PostgreSQL when a URL is given, else SQLite in the data
/// directory.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[arg(long, env = "KEYPLANE_DATA_DIR", default_value = "keyplane-data")]
    pub data_dir: std::path::PathBuf,
    /// PostgreSQL database (`postgres://…`), as the server's KEYPLANE_DATABASE_URL.
    #[arg(long, env = "KEYPLANE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// Opens an existing database (a command on a deployment never creates one).
    pub async fn open_existing(&self) -> anyhow::Result<Arc<dyn Store>> {
        if self.database_url.is_none() && !self.data_dir.join("keyplane.sqlite").exists() {
            anyhow::bail!("no database in {}", self.data_dir.display());
        }
        open_store(&self.data_dir, true, self.database_url.as_deref()).await
    }
}

/// Opens the deployment's database: PostgreSQL when `database_url` names one, else SQLite in
/// the data directory (created owner-only when absent).
pub async fn open_store(
    data_dir: &std::path::Path,
    durable: bool,
    database_url: Option<&str>,
) -> anyhow::Result<Arc<dyn Store>> {
    open_store_with(data_dir, durable, database_url, PostgresOptions::default()).await
}

/// [`open_store`] with the PostgreSQL engine's options.
pub async fn open_store_with(
    data_dir: &std::path::Path,
    durable: bool,
    database_url: Option<&str>,
    options: PostgresOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = database_url {
        let store = PostgresStore::open(url, options)
            .await
            .context("opening the PostgreSQL database")?;
        return Ok(Arc::new(store));
    }
    // Only the server's own user may enter the data directory: it holds the database and, with
    // the dev seal, the seal key.
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        dir.mode(0o700);
        dir.create(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting data directory {}", data_dir.display()))?;
    }
    #[cfg(not(unix))]
    dir.create(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let store = SqliteStore::open(
        &data_dir.join("keyplane.sqlite"),
        if durable {
            Durability::Full
        } else {
            Durability::Normal
        },
    )
    .await
    .context("opening the database")?;
    Ok(Arc::new(store))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = open_store_with(
        &config.data_dir,
        config.durable,
        config.database_url.as_deref(),
        PostgresOptions {
            task_lease: config.task_lease,
            ..PostgresOptions::default()
        },
    )
    .await?;
    let dyn_store: Arc<dyn Store> = store.clone();
    // The seal first: a database started with the wrong seal gets no token.
    let engine = KeyHierarchy::start(dyn_store.clone(), seal_mode(&config))
        .await
        .context("opening the key hierarchy")?;
    ensure_admin_token(
        store.as_ref(),
        config.bootstrap_token.as_deref(),
        config.admin_token_file.as_deref(),
    )
    .await?;

    let policy = LifecyclePolicy {
        destroy_grace_period: chrono::Duration::from_std(config.destroy_grace_period)?,
        rotation_min_interval: chrono::Duration::from_std(config.rotation_min_interval)?,
    };
    let keyplane = Keyplane::new(dyn_store.clone(), engine.clone(), policy)
        .with_connectors(Arc::new(keyplane_connectors::BuiltIn {
            pkcs11_modules: config.pkcs11_keystore_modules.clone(),
        }))
        .with_distribution_policy(config.distribution.clone())
        .with_call_rate(config.rate_limit)
        .with_key_pool(config.rsa_pool.clone())
        .with_schedule_policy(config.schedules);
    tokio::spawn(keyplane.clone().run_leadership());
    tokio::spawn(keyplane.clone().run_key_pool());
    tokio::spawn(keyplane.clone().run_distribution());
    tokio::spawn(keyplane.clone().run_schedules());
    tokio::spawn(keyplane.clone().run_denial_summaries());
    if !config.drift_interval.is_zero() {
        tokio::spawn(keyplane.clone().run_drift_checks(config.drift_interval));
    }
    if let Some(path) = config.audit_file.clone() {
        let keyplane = keyplane.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::audit_stream::run(keyplane, path).await {
                tracing::error!(error = %e, "the audit stream stopped");
            }
        });
    }
    // Read before binding: a bad certificate stops the start with a clear error.
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let bound = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{bound}"));
    let auth: Arc<dyn keyplane_api::Authenticator> =
        Arc::new(crate::tokens::Tokens::new(keyplane.clone())?);
    let metrics = Arc::new(keyplane_api::Metrics::new(config.record_metrics));
    if let Some(address) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the metrics listener {address}"))?;
        announce(&format!(
            "metrics on http://{}/metrics",
            listener.local_addr()?
        ));
        let app = keyplane_api::metrics_app(keyplane.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let app = keyplane_api::app(
        keyplane.clone(),
        auth.clone(),
        &HttpSettings {
            public_url,
            request_timeout: config.request_timeout,
            metrics,
        },
    );
    // The console calls the same services, signing users in with the same authenticator.
    let app = app.merge(keyplane_console::router(
        keyplane.clone(),
        auth,
        keyplane_console::ConsoleSettings {
            secure_cookies: tls.is_some(),
            request_timeout: config.request_timeout,
        },
    ));
    let seal = engine.status();
    if seal.sealed {
        let how = match seal.threshold {
            Some(n) => format!("{n} custodians' shares"),
            None => format!("the {} secret", seal.seal_type),
        };
        announce(&format!(
            "keyplane is sealed: unseal it with {how} (keyplane admin unseal)"
        ));
    }
    let shutdown = shutdown_signal()?;
    announce(&format!("keyplane listening on {scheme}://{bound}"));
    match tls {
        Some(tls) => tls::serve(listener, app, tls, shutdown).await?,
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await?;
        }
    }
    keyplane.close_denial_windows().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
