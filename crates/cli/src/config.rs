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
    /// SQLite durability: `full` (fsync every commit, default) or `normal`.
    #[arg(long, env = "KEYPLANE_SQLITE_SYNCHRONOUS")]
    pub sqlite_synchronous: Option<String>,
    /// Seal mode: `dev` (key file) or `passphrase` (Argon2id).
    #[arg(long, env = "KEYPLANE_SEAL")]
    pub seal: Option<String>,
    /// Passphrase of the `passphrase` seal (or use --seal-passphrase-file).
    #[arg(long, env = "KEYPLANE_SEAL_PASSPHRASE", hide_env_values = true)]
    pub seal_passphrase: Option<String>,
    /// File holding the passphrase of the `passphrase` seal (trailing newline ignored).
    #[arg(long, env = "KEYPLANE_SEAL_PASSPHRASE_FILE")]
    pub seal_passphrase_file: Option<PathBuf>,
    /// TOML file with any of the settings above (snake_case keys).
    #[arg(long, env = "KEYPLANE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    public_url: Option<String>,
    destroy_grace_period: Option<String>,
    rotation_min_interval: Option<String>,
    request_timeout: Option<String>,
    sqlite_synchronous: Option<String>,
    seal: Option<String>,
    seal_passphrase_file: Option<PathBuf>,
}

/// How the master key is kept.
pub enum Seal {
    /// A plain key file in the data directory.
    Dev,
    /// Sealed under a key derived from this passphrase.
    Passphrase(zeroize::Zeroizing<String>),
}

pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub bootstrap_token: Option<String>,
    /// `None`: derived from the bound address.
    pub public_url: Option<String>,
    pub destroy_grace_period: Duration,
    pub rotation_min_interval: Duration,
    pub request_timeout: Duration,
    pub durable: bool,
    pub seal: Seal,
}

fn duration(name: &str, value: Option<String>, default: &str) -> anyhow::Result<Duration> {
    let raw = value.unwrap_or_else(|| default.to_owned());
    humantime::parse_duration(raw.trim())
        .with_context(|| format!("{name} '{raw}' is not a duration such as 4h, 30m or 0s"))
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
            "passphrase" => {
                let from_file = args.seal_passphrase_file.or(file.seal_passphrase_file);
                let passphrase = match (args.seal_passphrase, from_file) {
                    (Some(p), _) => p,
                    (None, Some(path)) => std::fs::read_to_string(&path)
                        .with_context(|| {
                            format!("reading the seal passphrase file {}", path.display())
                        })?
                        .trim_end_matches(['\n', '\r'])
                        .to_owned(),
                    (None, None) => bail!(
                        "the passphrase seal needs KEYPLANE_SEAL_PASSPHRASE or KEYPLANE_SEAL_PASSPHRASE_FILE"
                    ),
                };
                Seal::Passphrase(zeroize::Zeroizing::new(passphrase))
            }
            other => bail!(
                "seal mode '{other}' is not available in this version; use 'dev' or 'passphrase'"
            ),
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
        let public_url = args.public_url.or(file.public_url);
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("public URL '{u}' must start with http:// or https://");
        }
        Ok(Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
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
            seal,
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
                seal: Some("shamir".into()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Config::resolve(ServeArgs {
                seal: Some("passphrase".into()),
                ..Default::default()
            })
            .is_err(),
            "the passphrase seal needs a passphrase"
        );
        let secret = dir.join("passphrase");
        std::fs::write(&secret, "from a file 12345\n").unwrap();
        let c = Config::resolve(ServeArgs {
            seal: Some("passphrase".into()),
            seal_passphrase_file: Some(secret),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(&c.seal, Seal::Passphrase(p) if p.as_str() == "from a file 12345"));
        assert!(
            Config::resolve(ServeArgs {
                destroy_grace_period: Some("soon".into()),
                ..Default::default()
            })
            .is_err()
        );
    }
}
