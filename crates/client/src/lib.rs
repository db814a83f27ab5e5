//! A client of a Keyplane server: the UKO v4 API and Keyplane's own endpoints, over HTTPS (or
//! HTTP on loopback). It signs in with a bearer token or exchanges an API key for one, reads
//! ETags for the caller, follows paging, and turns error bodies into [`ClientError`]s.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most items `list_all` gathers: a guard against a server that pages forever.
const MAX_LIST_ITEMS: usize = 1_000_000;

/// How the client proves who it is.
pub enum Credential {
    /// A bearer token used as is.
    Token(String),
    /// An API key, exchanged at `POST /identity/token` for an access token.
    ApiKey(String),
}

pub struct Settings {
    /// The server's base URL, e.g. `https://keyplane.example:8443`.
    pub url: String,
    pub credential: Credential,
    /// PEM certificates trusted instead of the system's roots.
    pub ca_cert_pem: Option<String>,
    /// Where an API key is exchanged (`{iam_url}/identity/token`): IBM Cloud IAM for a UKO
    /// server; the server itself when `None`.
    pub iam_url: Option<String>,
}

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// The field, parameter or header the error names.
        target: Option<String>,
        /// The whole error body.
        body: Box<Value>,
    },
    #[error("could not reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code (`keystore_not_empty`, `etag_mismatch`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// One answer: status, ETag (when the resource has one) and JSON body (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Value,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    bearer: String,
}

fn http_client(ca_cert_pem: Option<&str>) -> Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_cert_pem.filter(|p| !p.trim().is_empty()) {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| {
                    ClientError::Setup(format!("the CA certificate is not PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    ClientError::Setup(format!("the CA certificate is not usable: {e}"))
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A broken system certificate is skipped, not fatal.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ClientError::Setup(format!("HTTP client setup: {e}")))
}

/// The error a non-success answer stands for: UKO's `errors[0]`, Key Protect's
/// `resources[0].reasons[0]`, or IAM's `errorMessage`.
fn api_error(status: u16, body: Value) -> ClientError {
    let first = if body.get("errors").is_some() {
        &body["errors"][0]
    } else if body.get("resources").is_some() {
        &body["resources"][0]["reasons"][0]
    } else {
        &body
    };
    let code = first["code"]
        .as_str()
        .or_else(|| body["errorCode"].as_str())
        .unwrap_or("unknown")
        .to_owned();
    let message = first["message"]
        .as_str()
        .or_else(|| body["errorMessage"].as_str())
        .map_or_else(
            || format!("the server answered HTTP {status}"),
            str::to_owned,
        );
    let target = first["target"]["name"].as_str().map(str::to_owned);
    ClientError::Api {
        status,
        code,
        message,
        target,
        body: Box::new(body),
    }
}

impl Client {
    /// A client of the server at `settings.url`; an API key is exchanged for a token now.
    pub async fn connect(settings: Settings) -> Result<Self> {
        let http = http_client(settings.ca_cert_pem.as_deref())?;
        let base = settings.url.trim_end_matches('/').to_owned();
        let bearer = match settings.credential {
            Credential::Token(token) => token,
            Credential::ApiKey(key) => {
                let iam = settings
                    .iam_url
                    .as_deref()
                    .map_or(base.as_str(), |u| u.trim_end_matches('/'));
                let url = format!("{iam}/identity/token");
                let response = http
                    .post(&url)
                    .header("Accept", "application/json")
                    .form(&[("grant_type", APIKEY_GRANT), ("apikey", key.as_str())])
                    .send()
                    .await
                    .map_err(|e| unreachable(&url, &e))?;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if status != 200 {
                    return Err(api_error(status, body));
                }
                body["access_token"]
                    .as_str()
                    .ok_or_else(|| ClientError::Setup("the server issued no access token".into()))?
                    .to_owned()
            }
        };
        Ok(Self { http, base, bearer })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one request; `if_match` goes in `If-Match`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.bearer)
            .header("Accept", "application/json");
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request.send().await.map_err(|e| unreachable(&url, &e))?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.map_err(|e| unreachable(&url, &e))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !(200..300).contains(&status) {
            return Err(api_error(status, body));
        }
        Ok(Reply { status, etag, body })
    }

    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(Method::POST, path, Some(body), None).await
    }

    /// Acts on a resource that needs `If-Match`: with `if_match` when given (pinned by the
    /// caller), otherwise with the ETag read from `resource` just before.
    pub async fn act(
        &self,
        method: Method,
        resource: &str,
        suffix: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply> {
        let etag = match if_match {
            Some(tag) => tag.to_owned(),
            None => self.get(resource).await?.etag.ok_or_else(|| {
                ClientError::Setup(format!("{resource} was read without an ETag"))
            })?,
        };
        self.send(method, &format!("{resource}{suffix}"), body, Some(&etag))
            .await
    }

    /// Every item of a paged list: `path` (with its filters) is read page after page through
    /// the `next` links; `collection` names the array in each page.
    pub async fn list_all(&self, path: &str, collection: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(page_path) = next.take() {
            let page = self.get(&page_path).await?.body;
            if let Some(list) = page[collection].as_array() {
                items.extend(list.iter().cloned());
            }
            if items.len() >= MAX_LIST_ITEMS {
                break;
            }
            next = page["next"]["href"]
                .as_str()
                .and_then(|href| href.find("/api/").map(|at| href[at..].to_owned()));
        }
        Ok(items)
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> ClientError {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    ClientError::Unreachable {
        url: url.to_owned(),
        detail,
    }
}
