//! Connecting: the URL, TLS and the pool.
//!
//! `tokio-postgres` knows `sslmode` disable, prefer and require, and verifies nothing itself.
//! Keyplane takes `sslmode` and `sslrootcert` off the URL and decides: `disable` (or no
//! `sslmode`) connects in the clear, `verify-full` connects over rustls, checking the server's
//! certificate against `sslrootcert` (a PEM file) or, without one, the system's roots, and its
//! name against the host. The modes that encrypt without checking who answers (`prefer`,
//! `require`, `verify-ca`) are refused: a key manager does not send its database password to
//! whoever answers.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use keyplane_core::error::{Error, Result};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// How a node uses its database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connections in the pool (readers and writers together).
    pub pool_size: usize,
    /// Writers committing this node's writes in groups.
    pub writers: usize,
    /// How long a distribution task claimed by a node that stopped stays with it before another
    /// node takes it over.
    pub task_lease: std::time::Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            writers: 2,
            task_lease: std::time::Duration::from_secs(60),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Tls {
    Off,
    VerifyFull { root_cert: Option<String> },
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_field("database_url", message)
}

/// Splits the TLS parameters Keyplane handles itself off a `postgres://` URL.
fn split_tls(url: &str) -> Result<(String, Tls)> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            "the database URL must start with postgres:// or postgresql://",
        ));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut root_cert) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| invalid(format!("the URL parameter {name} is not UTF-8")))?
            .into_owned();
        match name {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root_cert = Some(value),
            _ => kept.push(pair),
        }
    }
    let tls = match mode.as_deref() {
        None | Some("disable") => {
            if root_cert.is_some() {
                return Err(invalid(
                    "sslrootcert is given but TLS is not: add sslmode=verify-full",
                ));
            }
            Tls::Off
        }
        Some("verify-full") => Tls::VerifyFull { root_cert },
        Some(other @ ("allow" | "prefer" | "require" | "verify-ca")) => {
            return Err(invalid(format!(
                "sslmode={other} does not check the server's name; use sslmode=verify-full (with sslrootcert=CA file) or sslmode=disable"
            )));
        }
        Some(other) => {
            return Err(invalid(format!(
                "sslmode '{other}' is not one of disable, verify-full"
            )));
        }
    };
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, tls))
}

fn rustls_config(root_cert: Option<&str>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                invalid(format!(
                    "reading the database CA file (sslrootcert) {path}: {e}"
                ))
            })?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert
                    .map_err(|e| invalid(format!("the database CA file {path} is not PEM: {e}")))?;
                roots.add(cert).map_err(|e| {
                    invalid(format!(
                        "the database CA file {path} holds a bad certificate: {e}"
                    ))
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(invalid(format!(
                    "the database CA file {path} holds no certificate"
                )));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS to the database: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Where the database is and how to reach it.
#[derive(Clone)]
pub(crate) struct Target {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let (url, tls) = split_tls(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| invalid(format!("the database URL is not valid: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A peer gone without a word (cut network) is noticed within about half a minute.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("keyplane");
        }
        // A node that stops mid-transaction (cut off, frozen) must not hold the audit chain's
        // lock, or any row, for long: the server ends such a session, and a write waits at most
        // this long for a lock before it is answered 503.
        let limits = "-c idle_in_transaction_session_timeout=30000 -c lock_timeout=15000";
        let options = match config.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {limits}"),
            _ => limits.to_owned(),
        };
        config.options(&options);
        let tls = match tls {
            Tls::Off => None,
            Tls::VerifyFull { root_cert } => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                rustls_config(root_cert.as_deref())?,
            )),
        };
        Ok(Self { config, tls })
    }

    /// The pool of connections to the database.
    pub(crate) fn pool(&self, options: &PostgresOptions) -> Result<Pool> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            None => {
                Manager::from_config(self.config.clone(), tokio_postgres::NoTls, manager_config)
            }
            Some(tls) => Manager::from_config(self.config.clone(), tls.clone(), manager_config),
        };
        Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(super::writer::CONNECTION_WAIT))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::internal(format!("building the database pool: {e}")))
    }

    /// A connection of its own (not pooled) whose notifications arrive on the returned channel;
    /// the channel closes when the connection ends.
    pub(crate) async fn listening_connection(
        &self,
    ) -> Result<(
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    )> {
        let (sender, notifications) = tokio::sync::mpsc::unbounded_channel();
        let client = match &self.tls {
            None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(super::db_err)?;
                tokio::spawn(forward_notifications(connection, sender));
                client
            }
            Some(tls) => {
                let (client, connection) = self
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(super::db_err)?;
                tokio::spawn(forward_notifications(connection, sender));
                client
            }
        };
        Ok((client, notifications))
    }
}

/// Drives a connection, passing its notifications on, until it ends.
async fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    sender: tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(Ok(message)) = messages.next().await {
        if let tokio_postgres::AsyncMessage::Notification(n) = message
            && sender.send(n).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_modes_are_read_off_the_url() {
        let (url, tls) = split_tls(
            "postgres://u@db/k?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@db/k?application_name=x");
        assert_eq!(
            tls,
            Tls::VerifyFull {
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        assert_eq!(split_tls("postgres://u@db/k").unwrap().1, Tls::Off);
        for weak in ["prefer", "require", "verify-ca", "allow"] {
            let e = split_tls(&format!("postgres://db/k?sslmode={weak}")).unwrap_err();
            assert!(e.to_string().contains("verify-full"), "{e}");
        }
        assert!(split_tls("mysql://db/k").is_err());
        assert!(split_tls("postgres://db/k?sslrootcert=/ca.pem").is_err());
    }
}
