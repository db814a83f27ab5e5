//! Server configuration: flags, then environment, then an optional TOML file, then defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "KEYPLANE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the database and the dev seal's master key file.
    #[arg(long, env = "KEYPLANE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// First admin token, instead of a generated one (automation).
    #[arg(long, env = "KEYPLANE_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// Base URL of hrefs and Location headers.
    #[arg(long, env = "KEYPLANE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Wait between deactivating and destroying a key (e.g. 4h, 0s).
    #[arg(long, env = "KEYPLANE_DESTROY_GRACE_PERIOD")]
    pub destroy_grace_period: Option<String>,
    /// Minimum time between two rotations of a key (e.g. 1h).
    #[arg(long, env = "KEYPLANE_ROTATION_MIN_INTERVAL")]
    pub rotation_min_interval: Option<String>,
    /// Longest a request may take before 408.
    #[arg(long, env = "KEYPLANE_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// PostgreSQL database shared by every node (`postgres://user@host/db?sslmode=verify-full&sslrootcert=ca.pem`);
    /// without it, SQLite in the data directory.
    #[arg(long, env = "KEYPLANE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// On PostgreSQL, how long a distribution task claimed by a node that stopped stays with it
    /// before another node takes it over (e.g. 60s, the default).
    #[arg(long, env = "KEYPLANE_TASK_LEASE")]
    pub task_lease: Option<String>,
    /// SQLite durability: `full` (fsync every commit, default) or `normal`.
    #[arg(long, env = "KEYPLANE_SQLITE_SYNCHRONOUS")]
    pub sqlite_synchronous: Option<String>,
    /// Seal mode: `dev` (key file), `passphrase` (Argon2id), `shamir` (custodians' shares) or
    /// `pkcs11` (master key inside a token).
    #[arg(long, env = "KEYPLANE_SEAL")]
    pub seal: Option<String>,
    /// Passphrase of the `passphrase` seal (or use --seal-passphrase-file).
    #[arg(long, env = "KEYPLANE_SEAL_PASSPHRASE", hide_env_values = true)]
    pub seal_passphrase: Option<String>,
    /// File holding the passphrase of the `passphrase` seal (trailing newline ignored).
    #[arg(long, env = "KEYPLANE_SEAL_PASSPHRASE_FILE")]
    pub seal_passphrase_file: Option<PathBuf>,
    /// PKCS#11 module (shared library) of the `pkcs11` seal.
    #[arg(long, env = "KEYPLANE_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// Label of the token holding the master key (default `keyplane`).
    #[arg(long, env = "KEYPLANE_PKCS11_TOKEN")]
    pub pkcs11_token: Option<String>,
    /// User PIN of the token (or use --pkcs11-pin-file).
    #[arg(long, env = "KEYPLANE_PKCS11_PIN", hide_env_values = true)]
    pub pkcs11_pin: Option<String>,
    /// File holding the token's user PIN (trailing newline ignored).
    #[arg(long, env = "KEYPLANE_PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// PKCS#11 modules `pkcs11` keystores may load, as a list separated by `:` (none by default:
    /// a keystore names its module, and only a module the operator allows here is loaded).
    #[arg(long, env = "KEYPLANE_PKCS11_KEYSTORE_MODULES")]
    pub pkcs11_keystore_modules: Option<String>,
    /// Pre-generated RSA key pairs to keep ready, as SIZE:COUNT pairs (e.g. `3072:4,4096:2`;
    /// `0` for none).
    #[arg(long, env = "KEYPLANE_RSA_POOL")]
    pub rsa_pool: Option<String>,
    /// Remote calls in flight at once per external keystore (default 8): keep it within the
    /// provider's quota.
    #[arg(long, env = "KEYPLANE_KEYSTORE_CONCURRENCY")]
    pub keystore_concurrency: Option<usize>,
    /// First wait before a distribution task is retried (doubles per attempt, with jitter,
    /// up to 5m; default 500ms).
    #[arg(long, env = "KEYPLANE_DISTRIBUTION_BACKOFF")]
    pub distribution_backoff: Option<String>,
    /// How often external keystores are pinged and their copies compared with the managed
    /// state (default 5m; `0s` turns it off).
    #[arg(long, env = "KEYPLANE_DRIFT_INTERVAL")]
    pub drift_interval: Option<String>,
    /// PEM certificate chain of the server: serve HTTPS (with --tls-key).
    #[arg(long, env = "KEYPLANE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the server certificate.
    #[arg(long, env = "KEYPLANE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates of accepted client certificates (mutual TLS); a caller with such a
    /// certificate and no bearer token acts as `cert:<common name>`.
    #[arg(long, env = "KEYPLANE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (TLS ends in front of Keyplane).
    #[arg(long, env = "KEYPLANE_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Calls per second each caller (principal or token) may make, twice that in a burst; 0 for
    /// no limit.
    #[arg(long, env = "KEYPLANE_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Also append every audit event to this file, as JSON lines, once committed.
    #[arg(long, env = "KEYPLANE_AUDIT_FILE")]
    pub audit_file: Option<PathBuf>,
    /// Where the first admin token, made at the first start, is written (a new file readable
    /// by its owner only) instead of standard output, which a service manager keeps in its log.
    #[arg(long, env = "KEYPLANE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// A second address serving `GET /metrics` without authentication, for a Prometheus
    /// scraper on a private network (on the API listener, /metrics takes an administrator).
    #[arg(long, env = "KEYPLANE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// `off` records no calls in the metrics (the deployment's counts are still served).
    #[arg(long, env = "KEYPLANE_METRICS")]
    pub metrics: Option<String>,
    /// How often the scheduler looks for keys whose schedules are due (e.g. 30s, the default).
    #[arg(long, env = "KEYPLANE_SCHEDULE_EVERY")]
    pub schedule_every: Option<String>,
    /// The shortest schedule interval templates and keys may set (default 1d; shorter only
    /// for tests and trials).
    #[arg(long, env = "KEYPLANE_SCHEDULE_MIN_INTERVAL")]
    pub schedule_min_interval: Option<String>,
    /// TOML file with any of the settings above (snake_case keys).
    #[arg(long, env = "KEYPLANE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    metrics: Option<String>,
    admin_token_file: Option<PathBuf>,
    schedule_every: Option<String>,
    schedule_min_interval: Option<String>,
    data_dir: Option<PathBuf>,
    public_url: Option<String>,
    destroy_grace_period: Option<String>,
    rotation_min_interval: Option<String>,
    request_timeout: Option<String>,
    database_url: Option<String>,
    task_lease: Option<String>,
    sqlite_synchronous: Option<String>,
    seal: Option<String>,
    seal_passphrase_file: Option<PathBuf>,
    pkcs11_module: Option<PathBuf>,
    pkcs11_token: Option<String>,
    pkcs11_pin_file: Option<PathBuf>,
    pkcs11_keystore_modules: Option<Vec<PathBuf>>,
    rsa_pool: Option<String>,
    keystore_concurrency: Option<usize>,
    distribution_backoff: Option<String>,
    drift_interval: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    insecure_http: Option<bool>,
    rate_limit: Option<u32>,
    audit_file: Option<PathBuf>,
}

/// How the master key is kept.
pub enum Seal {
    /// A plain key file in the data directory.
    Dev,
    /// Sealed under a key derived from this passphrase; without one the node starts sealed
    /// and is unsealed through the API.
    Passphrase(Option<zeroize::Zeroizing<String>>),
    /// Split into custodians' shares; starts sealed.
    Shamir,
    /// The master key lives in a PKCS#11 token.
    Pkcs11 {
        module: PathBuf,
        token: String,
        pin: zeroize::Zeroizing<String>,
    },
}

/// A secret given directly or as a file (trailing newline ignored).
fn secret(
    direct: Option<String>,
    file: Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    Ok(match (direct, file) {
        (Some(p), _) => Some(zeroize::Zeroizing::new(p)),
        (None, Some(path)) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the {what} file {}", path.display()))?,
            );
            Some(zeroize::Zeroizing::new(
                text.trim_end_matches(['\n', '\r']).to_owned(),
            ))
        }
        (None, None) => None,
    })
}

pub struct Config {
    pub listen: SocketAddr,
    /// `None`: the first admin token is printed.
    pub admin_token_file: Option<PathBuf>,
    /// `None`: metrics only on the API listener, for administrators.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether calls are recorded in the metrics.
    pub record_metrics: bool,
    pub schedules: keyplane_core::service::SchedulePolicy,
    pub data_dir: PathBuf,
    pub bootstrap_token: Option<String>,
    /// `None`: derived from the bound address.
    pub public_url: Option<String>,
    pub destroy_grace_period: Duration,
    pub rotation_min_interval: Duration,
    pub request_timeout: Duration,
    pub durable: bool,
    /// `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    pub task_lease: Duration,
    pub seal: Seal,
    pub rsa_pool: keyplane_core::service::KeyPoolPolicy,
    pub distribution: keyplane_core::service::DistributionPolicy,
    /// Zero: no drift checks.
    pub drift_interval: Duration,
    /// `None`: plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    pub rate_limit: u32,
    pub audit_file: Option<PathBuf>,
    /// The PKCS#11 modules `pkcs11` keystores may load.
    pub pkcs11_keystore_modules: Vec<PathBuf>,
}

/// Far above what one client of a key manager needs; a runaway or hostile client is held back.
const DEFAULT_RATE_LIMIT: u32 = 10_000;

/// Enough pre-generated pairs for a burst of RSA activations, refilled in the background.
const DEFAULT_RSA_POOL: &str = "3072:4,4096:2";

fn duration(name: &str, value: Option<String>, default: &str) -> anyhow::Result<Duration> {
    let raw = value.unwrap_or_else(|| default.to_owned());
    humantime::parse_duration(raw.trim())
        .with_context(|| format!("{name} '{raw}' is not a duration such as 4h, 30m or 0s"))
}

fn distribution_policy(
    concurrency: Option<usize>,
    backoff: Option<String>,
) -> anyhow::Result<keyplane_core::service::DistributionPolicy> {
    let defaults = keyplane_core::service::DistributionPolicy::default();
    let per_keystore_concurrency = concurrency.unwrap_or(defaults.per_keystore_concurrency);
    anyhow::ensure!(
        (1..=256).contains(&per_keystore_concurrency),
        "KEYPLANE_KEYSTORE_CONCURRENCY must be 1 to 256"
    );
    Ok(keyplane_core::service::DistributionPolicy {
        per_keystore_concurrency,
        first_backoff: duration("distribution backoff", backoff, "500ms")?,
        ..defaults
    })
}

impl Config {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let file: FileConfig = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
        };
        let seal = match args.seal.or(file.seal).as_deref().unwrap_or("dev") {
            "dev" => Seal::Dev,
            // Without a passphrase the node starts sealed and waits for `keyplane admin unseal`.
            "passphrase" => Seal::Passphrase(secret(
                args.seal_passphrase,
                args.seal_passphrase_file.or(file.seal_passphrase_file),
                "seal passphrase",
            )?),
            "shamir" => Seal::Shamir,
            "pkcs11" => Seal::Pkcs11 {
                module: args.pkcs11_module.or(file.pkcs11_module).context(
                    "the pkcs11 seal needs KEYPLANE_PKCS11_MODULE (the token's PKCS#11 library)",
                )?,
                token: args
                    .pkcs11_token
                    .or(file.pkcs11_token)
                    .unwrap_or_else(|| "keyplane".into()),
                pin: secret(
                    args.pkcs11_pin,
                    args.pkcs11_pin_file.or(file.pkcs11_pin_file),
                    "PKCS#11 PIN",
                )?
                .context("the pkcs11 seal needs KEYPLANE_PKCS11_PIN or KEYPLANE_PKCS11_PIN_FILE")?,
            },
            other => bail!("seal mode '{other}' is unknown; use dev, passphrase, shamir or pkcs11"),
        };
        let durable = match args
            .sqlite_synchronous
            .or(file.sqlite_synchronous)
            .as_deref()
        {
            None | Some("full") => true,
            Some("normal") => false,
            Some(other) => bail!("sqlite_synchronous '{other}' must be 'full' or 'normal'"),
        };
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_client_ca.or(file.tls_client_ca),
        ) {
            (Some(cert), Some(key), client_ca) => Some(crate::tls::TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None, None) => None,
            (None, None, Some(_)) => {
                bail!("a client CA needs TLS: set KEYPLANE_TLS_CERT and KEYPLANE_TLS_KEY too")
            }
            _ => bail!("TLS needs both KEYPLANE_TLS_CERT and KEYPLANE_TLS_KEY"),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        if tls.is_none() {
            crate::tls::check_plain_http(
                listen,
                args.insecure_http || file.insecure_http.unwrap_or(false),
            )?;
        }
        let task_lease = duration("task lease", args.task_lease.or(file.task_lease), "60s")?;
        if task_lease < Duration::from_secs(1) {
            bail!("the task lease must be at least 1s: a live node renews it every half second");
        }
        let pkcs11_keystore_modules: Vec<PathBuf> = match args.pkcs11_keystore_modules.clone() {
            Some(list) => std::env::split_paths(&list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            None => file.pkcs11_keystore_modules.clone().unwrap_or_default(),
        };
        // A bare name would be looked up on the loader's search path: only full paths.
        if let Some(relative) = pkcs11_keystore_modules.iter().find(|p| !p.is_absolute()) {
            bail!(
                "KEYPLANE_PKCS11_KEYSTORE_MODULES: '{}' is not an absolute path",
                relative.display()
            );
        }
        let public_url = args.public_url.or(file.public_url);
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("public URL '{u}' must start with http:// or https://");
        }
        Ok(Self {
            listen,
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            admin_token_file: args.admin_token_file.or(file.admin_token_file),
            schedules: keyplane_core::service::SchedulePolicy {
                every: duration(
                    "schedule period",
                    args.schedule_every.or(file.schedule_every),
                    "30s",
                )?
                .max(Duration::from_millis(100)),
                min_interval: chrono::Duration::from_std(duration(
                    "schedule minimum interval",
                    args.schedule_min_interval.or(file.schedule_min_interval),
                    "1d",
                )?)?,
                ..Default::default()
            },
            record_metrics: match args.metrics.or(file.metrics).as_deref().map(str::trim) {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => bail!("KEYPLANE_METRICS '{other}' is not on or off"),
            },
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("keyplane-data")),
            bootstrap_token: args.bootstrap_token.filter(|t| !t.is_empty()),
            public_url,
            destroy_grace_period: duration(
                "destroy grace period",
                args.destroy_grace_period.or(file.destroy_grace_period),
                "4h",
            )?,
            rotation_min_interval: duration(
                "rotation minimum interval",
                args.rotation_min_interval.or(file.rotation_min_interval),
                "1h",
            )?,
            request_timeout: duration(
                "request timeout",
                args.request_timeout.or(file.request_timeout),
                "30s",
            )?,
            durable,
            database_url: args
                .database_url
                .or(file.database_url)
                .filter(|u| !u.is_empty()),
            task_lease,
            seal,
            rsa_pool: keyplane_core::service::KeyPoolPolicy::parse_rsa(
                args.rsa_pool
                    .or(file.rsa_pool)
                    .as_deref()
                    .unwrap_or(DEFAULT_RSA_POOL),
            )
            .map_err(|e| anyhow::anyhow!("KEYPLANE_RSA_POOL: {e}"))?,
            drift_interval: duration(
                "drift interval",
                args.drift_interval.or(file.drift_interval),
                "5m",
            )?,
            distribution: distribution_policy(
                args.keystore_concurrency.or(file.keystore_concurrency),
                args.distribution_backoff.or(file.distribution_backoff),
            )?,
            tls,
            rate_limit: args
                .rate_limit
                .or(file.rate_limit)
                .unwrap_or(DEFAULT_RATE_LIMIT),
            audit_file: args.audit_file.or(file.audit_file),
            pkcs11_keystore_modules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file_values() {
        let c = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.destroy_grace_period, Duration::from_secs(4 * 3600));
        assert_eq!(c.rotation_min_interval, Duration::from_secs(3600));
        let dir = std::env::temp_dir().join(format!("kp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\ndestroy_grace_period = \"0s\"\n",
        )
        .unwrap();
        let c = Config::resolve(ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.destroy_grace_period, Duration::ZERO);
        let c = Config::resolve(ServeArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen.port(), 7000, "flags win over the file");
        std::fs::write(&file, "bogus = 1\n").unwrap();
        assert!(
            Config::resolve(ServeArgs {
                config: Some(file),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Config::resolve(ServeArgs {
                seal: Some("vault".into()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Config::resolve(ServeArgs {
                seal: Some("pkcs11".into()),
                pkcs11_module: Some("/lib/p11.so".into()),
                ..Default::default()
            })
            .is_err(),
            "the pkcs11 seal needs a PIN"
        );
        assert!(
            Config::resolve(ServeArgs {
                listen: Some("0.0.0.0:8080".parse().unwrap()),
                ..Default::default()
            })
            .is_err(),
            "plain HTTP beyond loopback needs --insecure-http"
        );
        assert!(
            Config::resolve(ServeArgs {
                listen: Some("0.0.0.0:8080".parse().unwrap()),
                insecure_http: true,
                ..Default::default()
            })
            .is_ok()
        );
        assert!(
            Config::resolve(ServeArgs {
                tls_cert: Some("/c.pem".into()),
                ..Default::default()
            })
            .is_err(),
            "a certificate needs its key"
        );
        assert!(
            Config::resolve(ServeArgs {
                rsa_pool: Some("1024:1".into()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            matches!(
                Config::resolve(ServeArgs {
                    seal: Some("passphrase".into()),
                    ..Default::default()
                })
                .unwrap()
                .seal,
                Seal::Passphrase(None)
            ),
            "without a passphrase the node starts sealed"
        );
        let secret = dir.join("passphrase");
        std::fs::write(&secret, "from a file 12345\n").unwrap();
        let c = Config::resolve(ServeArgs {
            seal: Some("passphrase".into()),
            seal_passphrase_file: Some(secret),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(&c.seal, Seal::Passphrase(Some(p)) if p.as_str() == "from a file 12345"));
        assert!(
            Config::resolve(ServeArgs {
                destroy_grace_period: Some("soon".into()),
                ..Default::default()
            })
            .is_err()
        );
    }
}
