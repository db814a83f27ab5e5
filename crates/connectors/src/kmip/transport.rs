//! KMIP's transport: TTLV messages over TLS with client certificates (KMIP's mutual TLS
//! profile), on rustls. Connections are kept between calls and reused one call at a time; at
//! most [`MAX_CONNECTIONS`] are open to a server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyplane_core::connector::{FailureKind, RemoteFailure, RemoteResult};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

use super::ttlv;

/// Connections open to one server at most (and so calls in flight).
pub const MAX_CONNECTIONS: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole exchange: connection, handshake, request and answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A kept connection unused for longer is closed rather than reused: servers drop idle ones.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// The TLS side of a keystore's connection settings.
pub struct TlsSettings<'a> {
    pub ca_cert: Option<&'a str>,
    pub client_cert: Option<&'a str>,
    pub client_key: Option<&'a str>,
}

pub struct Transport {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    /// Connections kept for the next call, with when they were last used.
    idle: Mutex<Vec<(TlsStream<TcpStream>, Instant)>>,
    slots: Semaphore,
}

/// Why the settings cannot make a TLS client: the field to blame and why.
pub type SettingsError = (&'static str, String);

impl Transport {
    pub fn new(host: &str, port: u16, tls: &TlsSettings<'_>) -> Result<Self, SettingsError> {
        let roots = crate::http::roots(tls.ca_cert).map_err(|e| ("kmip_ca_cert", e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ("kmip_host", format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
        let config = match (tls.client_cert, tls.client_key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| ("kmip_client_cert", "is not a PEM certificate".to_owned()))?;
                if chain.is_empty() {
                    return Err(("kmip_client_cert", "holds no certificate".into()));
                }
                // The parse error could quote the key: it is not passed on.
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
                    (
                        "kmip_client_key",
                        "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned(),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    (
                        "kmip_client_key",
                        format!("does not go with kmip_client_cert: {e}"),
                    )
                })?
            }
            // Key material goes to a KMIP server in the clear inside TLS: only to a server that
            // knows whom it talks to.
            (None, _) => {
                return Err((
                    "kmip_client_cert",
                    "is required: keyplane sends key material to KMIP servers only over mutual TLS"
                        .into(),
                ));
            }
            (Some(_), None) => return Err(("kmip_client_key", "is required".into())),
        };
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| {
            (
                "kmip_host",
                "is not a host name or an IP address".to_owned(),
            )
        })?;
        Ok(Self {
            host: host.to_owned(),
            port,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(MAX_CONNECTIONS),
        })
    }

    fn target(&self) -> String {
        format!("the KMIP server at {}:{}", self.host, self.port)
    }

    async fn connect(&self) -> RemoteResult<TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| unreachable(format!("{} did not answer", self.target())))?
        .map_err(|e| unreachable(format!("{}: {e}", self.target())))?;
        let _ = tcp.set_nodelay(true);
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| self.tls_failure(&e))
    }

    /// A TLS failure in words an operator can act on: our trust in the server, or the
    /// server's in our certificate.
    fn tls_failure(&self, e: &std::io::Error) -> RemoteFailure {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::InvalidCertificate(why)) => {
                use rustls::CertificateError as C;
                let remedy = match why {
                    C::NotValidForName | C::NotValidForNameContext { .. } => {
                        "it does not name kmip_host"
                    }
                    C::Expired | C::ExpiredContext { .. } => "it has expired",
                    C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet",
                    C::Revoked => "it is revoked",
                    _ => "kmip_ca_cert must hold the CA that issued it",
                };
                RemoteFailure::new(
                    FailureKind::Rejected,
                    format!(
                        "{}'s certificate is not trusted ({why:?}): {remedy}",
                        self.target()
                    ),
                )
            }
            Some(rustls::Error::AlertReceived(alert)) => {
                use rustls::AlertDescription as A;
                match alert {
                    A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateUnknown
                    | A::CertificateRequired
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::AccessDenied
                    | A::DecryptError => RemoteFailure::new(
                        FailureKind::BadCredentials,
                        format!(
                            "{} refused keyplane's client certificate (TLS alert {alert:?}); kmip_client_cert must be one the server trusts",
                            self.target()
                        ),
                    ),
                    other => unreachable(format!(
                        "{} ended the TLS session (alert {other:?})",
                        self.target()
                    )),
                }
            }
            Some(other) => unreachable(format!("{}: TLS failed: {other}", self.target())),
            None => unreachable(format!("{}: {e}", self.target())),
        }
    }

    /// Sends one request and reads its answer, which `check` reads: the connection is kept
    /// for another call only when `check` accepts the answer (one that does not match the
    /// request may leave the connection out of step). The whole call, waiting for a connection
    /// included, has [`CALL_TIMEOUT`]. A request that may change something is sent once: a
    /// kept connection found closed is replaced only for `idempotent` requests, as the server
    /// may have acted before closing. `request` is zeroized by the caller; the answer (which
    /// may hold a key) is zeroized when dropped.
    pub async fn exchange<T>(
        &self,
        request: &[u8],
        idempotent: bool,
        check: impl FnOnce(&[u8]) -> RemoteResult<T>,
    ) -> RemoteResult<T> {
        tokio::time::timeout(
            CALL_TIMEOUT,
            self.exchange_untimed(request, idempotent, check),
        )
        .await
        .map_err(|_| {
            unreachable(format!(
                "{} did not answer within {} s",
                self.target(),
                CALL_TIMEOUT.as_secs()
            ))
        })?
    }

    async fn exchange_untimed<T>(
        &self,
        request: &[u8],
        idempotent: bool,
        check: impl FnOnce(&[u8]) -> RemoteResult<T>,
    ) -> RemoteResult<T> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| unreachable("the KMIP transport is closed"))?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|(_, since)| since.elapsed() < MAX_IDLE);
            idle.pop().map(|(stream, _)| stream)
        };
        let (stream, answer) = match reused {
            Some(stream) => match self.send_on(stream, request).await {
                Ok(done) => done,
                Err(Exchange::Closed) if idempotent => self.send_on_fresh(request).await?,
                Err(Exchange::Closed) => {
                    return Err(unreachable(format!(
                        "{} closed a kept connection before answering; the request may have been carried out, and is not sent again",
                        self.target()
                    )));
                }
                Err(Exchange::Failed(f)) => return Err(f),
            },
            None => self.send_on_fresh(request).await?,
        };
        let value = check(&answer)?;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((stream, Instant::now()));
        Ok(value)
    }

    async fn send_on_fresh(
        &self,
        request: &[u8],
    ) -> RemoteResult<(TlsStream<TcpStream>, Zeroizing<Vec<u8>>)> {
        let stream = self.connect().await?;
        match self.send_on(stream, request).await {
            Ok(done) => Ok(done),
            Err(Exchange::Closed) => Err(unreachable(format!(
                "{} closed the connection without an answer (a server that does not accept keyplane's client certificate may do so)",
                self.target()
            ))),
            Err(Exchange::Failed(f)) => Err(f),
        }
    }

    async fn send_on(
        &self,
        mut stream: TlsStream<TcpStream>,
        request: &[u8],
    ) -> Result<(TlsStream<TcpStream>, Zeroizing<Vec<u8>>), Exchange> {
        let io = async {
            stream.write_all(request).await?;
            stream.flush().await?;
            let mut header = [0u8; 8];
            stream.read_exact(&mut header).await?;
            Ok::<_, std::io::Error>(header)
        };
        let header = match io.await {
            // Closed or reset before any answer: the connection was gone.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Err(Exchange::Closed);
            }
            Err(e) => return Err(Exchange::Failed(self.tls_failure(&e))),
            Ok(header) => header,
        };
        let length = ttlv::message_length(&header).map_err(|e| {
            Exchange::Failed(RemoteFailure::new(
                FailureKind::Transient,
                format!("{} answered what is not KMIP: {e}", self.target()),
            ))
        })?;
        let mut message = Zeroizing::new(vec![0u8; length]);
        message[..8].copy_from_slice(&header);
        stream
            .read_exact(&mut message[8..])
            .await
            .map_err(|e| Exchange::Failed(self.tls_failure(&e)))?;
        Ok((stream, message))
    }
}

enum Exchange {
    /// The connection was closed before an answer began.
    Closed,
    Failed(RemoteFailure),
}

fn unreachable(message: impl Into<String>) -> RemoteFailure {
    RemoteFailure::new(FailureKind::Unreachable, message)
}
