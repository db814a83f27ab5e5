//! The HTTP side shared by REST connectors: a client trusting the keystore's CA (or the
//! system's roots), bounded timeouts, and classification of failures.

use std::sync::Arc;
use std::time::Duration;

use keyplane_core::connector::{FailureKind, RemoteFailure};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A remote call that has not answered after this long is treated as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest error text taken from a remote answer into a message.
const MAX_REMOTE_MESSAGE: usize = 300;

/// The roots a keystore's server certificate is checked against: `ca_pem` when given, else the
/// system's.
pub(crate) fn roots(ca_pem: Option<&str>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem.filter(|p| !p.trim().is_empty()) {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA certificate holds no certificate".into());
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A broken system certificate is skipped, not fatal.
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// A client for one keystore: `ca_pem` replaces the system's roots when given.
pub(crate) fn client(ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let roots = roots(ca_pem)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client setup: {e}"))
}

/// The DER inside a PEM public key; `what` names the key in the error.
pub(crate) fn pem_to_der(pem: &str, what: &str) -> Result<Vec<u8>, RemoteFailure> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| {
            RemoteFailure::new(
                FailureKind::Rejected,
                format!("{what} is not a PEM public key"),
            )
        })
}

/// A failure to get any answer.
pub(crate) fn transport_failure(target: &str, e: &reqwest::Error) -> RemoteFailure {
    let what = if e.is_timeout() {
        "did not answer in time"
    } else if e.is_connect() {
        "refused or could not be reached"
    } else {
        "could not be reached"
    };
    // reqwest's display may hold the URL (never a secret here) but not headers.
    RemoteFailure::new(
        FailureKind::Unreachable,
        format!("{target} {what} ({})", without_url(e)),
    )
}

fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// The failure an HTTP error status stands for; `what` says what was attempted.
pub(crate) fn status_failure(status: u16, what: &str, remote_message: &str) -> RemoteFailure {
    let mut detail: String = remote_message.chars().take(MAX_REMOTE_MESSAGE).collect();
    if detail.is_empty() {
        detail = format!("HTTP {status}");
    } else {
        detail = format!("HTTP {status}: {detail}");
    }
    let kind = match status {
        401 => FailureKind::BadCredentials,
        403 => FailureKind::MissingPermission,
        429 => FailureKind::Throttled,
        500..=599 => FailureKind::Transient,
        _ => FailureKind::Rejected,
    };
    RemoteFailure::new(kind, format!("{what}: {detail}"))
}

/// Largest answer read from a cloud provider's REST API (a key, a page of versions or a token
/// is a few kilobytes).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// An answer's JSON body, read up to [`MAX_ANSWER_BYTES`] (`null` when it is not JSON).
pub(crate) async fn read_json(
    mut response: reqwest::Response,
    target: &str,
) -> Result<serde_json::Value, RemoteFailure> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_failure(target, &e))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(RemoteFailure::new(
                FailureKind::Rejected,
                format!("{target} answered with more than {MAX_ANSWER_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// Whether `url` is on this machine (a local test double may speak plain HTTP there).
pub(crate) fn is_local(url: &reqwest::Url) -> bool {
    url.host()
        .is_some_and(|h| keyplane_core::distribution::is_local_host(&h))
}

/// Refuses an endpoint that secrets or tokens go to unless it is https or on this machine.
pub(crate) fn check_endpoint(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.scheme() != "https" && !is_local(&parsed) {
        return Err("must be an https URL (credentials and tokens go there)".into());
    }
    Ok(())
}

/// A refusal by the target (or of what it answered) that retrying will not change.
pub(crate) fn rejected(message: impl Into<String>) -> RemoteFailure {
    RemoteFailure::new(FailureKind::Rejected, message)
}

/// The `error.message` of a cloud provider's error body (Azure's and Google's), or an OAuth
/// token endpoint's `error_description`.
pub(crate) fn error_message(body: &serde_json::Value) -> String {
    body["error"]["message"]
        .as_str()
        .or_else(|| body["error_description"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Tokens are renewed this long before they expire.
const TOKEN_EXPIRY_MARGIN: std::time::Duration = std::time::Duration::from_secs(120);

/// A bearer token from an OAuth token endpoint, reused until shortly before it expires.
pub(crate) struct AccessToken {
    value: String,
    renew_at: std::time::Instant,
}

impl AccessToken {
    /// The token an endpoint's answer carries (`access_token`, `expires_in`, at most a day);
    /// `issuer` names the endpoint in the error.
    pub(crate) fn from_answer(
        body: &serde_json::Value,
        issuer: &str,
    ) -> Result<Self, RemoteFailure> {
        let value = body["access_token"]
            .as_str()
            .ok_or_else(|| rejected(format!("{issuer} returned no access token")))?
            .to_owned();
        let lifetime =
            std::time::Duration::from_secs(body["expires_in"].as_u64().unwrap_or(600).min(86_400));
        Ok(Self {
            value,
            renew_at: std::time::Instant::now() + lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN),
        })
    }

    /// The token itself (freshly received: used even when it is due for renewal soon).
    pub(crate) fn value(&self) -> &str {
        &self.value
    }

    /// The token, while it is not due for renewal.
    pub(crate) fn current(&self) -> Option<&str> {
        (std::time::Instant::now() < self.renew_at).then_some(self.value.as_str())
    }
}
