//! End-to-end: HTTPS and mutual TLS through the real binary, called with curl as any client
//! would; plain HTTP beyond loopback is refused.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use keyplane_testkit::process::Server;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::Value;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, pem: &str) {
        std::fs::write(self.path(name), pem).unwrap();
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    pki: &Pki,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    cn: &str,
    sans: &[&str],
) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    pki.write(&format!("{name}.pem"), &cert.pem());
    pki.write(&format!("{name}.key"), &key.serialize_pem());
}

/// A CA with a server certificate for 127.0.0.1 and a client certificate, and a foreign CA with
/// a client certificate of its own.
fn pki() -> Pki {
    let pki = Pki {
        dir: tempfile::tempdir().unwrap(),
    };
    let ca = certificate_authority("Keyplane test CA");
    pki.write("ca.pem", &ca.pem());
    leaf(&pki, &ca, "server", "keyplane", &["127.0.0.1", "localhost"]);
    leaf(&pki, &ca, "client", "automation-1", &[]);
    let foreign = certificate_authority("Someone else's CA");
    leaf(&pki, &foreign, "foreign", "intruder", &[]);
    pki
}

/// curl with the test CA; returns (HTTP status, body) or None when no HTTP exchange happened.
fn curl(url: &str, ca: &Path, extra: &[&str]) -> Option<(u16, Value)> {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs (scripts/test.sh installs curl)");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((
        code.trim().parse().ok()?,
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

#[tokio::test]
async fn https_and_client_certificates() {
    let pki = pki();
    let data = tempfile::tempdir().unwrap();
    let (cert, key, client_ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let server = Server::start(
        &binary(),
        data.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_TLS_CERT", cert.to_str().unwrap()),
            ("KEYPLANE_TLS_KEY", key.to_str().unwrap()),
            ("KEYPLANE_TLS_CLIENT_CA", client_ca.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let url = |path: &str| format!("{}{path}", server.base);
    let bearer = format!("Authorization: Bearer {TOKEN}");

    // A bearer token over HTTPS.
    let (status, body) = curl(&url("/api/v4/vaults"), &client_ca, &["-H", &bearer]).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["vaults"].is_array());
    // No credentials at all.
    let (status, _) = curl(&url("/api/v4/vaults"), &client_ca, &[]).unwrap();
    assert_eq!(status, 401);

    // A client certificate from the configured CA names a principal, whose policies apply.
    let (status, principal) = curl(
        &url("/api/v4/access/principals"),
        &client_ca,
        &[
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"name": "automation-1", "kind": "service"}"#,
        ],
    )
    .unwrap();
    assert_eq!(status, 201, "{principal}");
    let grant = format!(
        r#"{{"principal": {{"id": "{}"}}, "role": "vault_administrator"}}"#,
        principal["id"].as_str().unwrap()
    );
    let (status, _) = curl(
        &url("/api/v4/access/policies"),
        &client_ca,
        &[
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "-d",
            &grant,
        ],
    )
    .unwrap();
    assert_eq!(status, 201);
    let (client_pem, client_key) = (
        pki.path("client.pem").display().to_string(),
        pki.path("client.key").display().to_string(),
    );
    let client = [
        "--cert",
        client_pem.as_str(),
        "--key",
        client_key.as_str(),
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name": "from-a-certificate"}"#,
    ];
    let (status, body) = curl(&url("/api/v4/vaults"), &client_ca, &client).unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created_by"], "cert:automation-1");

    // A certificate from another CA: the handshake fails.
    let (foreign_pem, foreign_key) = (
        pki.path("foreign.pem").display().to_string(),
        pki.path("foreign.key").display().to_string(),
    );
    let foreign = [
        "--cert",
        foreign_pem.as_str(),
        "--key",
        foreign_key.as_str(),
    ];
    assert!(curl(&url("/api/v4/vaults"), &client_ca, &foreign).is_none());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = server.base.replace("https://", "http://");
    assert!(
        curl(
            &format!("{plain}/api/v4/vaults"),
            &client_ca,
            &["-H", &bearer]
        )
        .is_none_or(|(status, _)| status == 0)
    );
    assert!(server.terminate().await.unwrap());
}

#[tokio::test]
async fn plain_http_beyond_loopback_is_refused_unless_asked_for() {
    let data = tempfile::tempdir().unwrap();
    let refused = Server::start(
        &binary(),
        data.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_LISTEN", "0.0.0.0:0"),
        ],
    )
    .await;
    assert!(refused.is_err());
    let log =
        std::fs::read_to_string(data.path().join(keyplane_testkit::process::SERVER_LOG)).unwrap();
    assert!(log.contains("--insecure-http"), "{log}");
    let server = Server::start(
        &binary(),
        data.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_LISTEN", "0.0.0.0:0"),
            ("KEYPLANE_INSECURE_HTTP", "true"),
        ],
    )
    .await
    .unwrap();
    assert!(server.terminate().await.unwrap());
}

/// curl's response headers and body for `args` (over HTTPS with the test CA).
fn curl_raw(ca: &Path, args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "-D", "-", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_console_over_https_sets_secure_cookies() {
    let pki = pki();
    let data = tempfile::tempdir().unwrap();
    let ca = pki.path("ca.pem");
    let server = Server::start(
        &binary(),
        data.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            (
                "KEYPLANE_TLS_CERT",
                pki.path("server.pem").to_str().unwrap(),
            ),
            ("KEYPLANE_TLS_KEY", pki.path("server.key").to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    let login = format!("{}/ui/login", server.base);
    let (head, body) = curl_raw(&ca, &[&login]);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: keyplane_login="))
        .expect("login cookie")
        .to_owned();
    assert!(cookie.contains("; secure"), "{cookie}");
    let login_token = cookie.split(';').next().unwrap().to_owned();
    let marker = r#"name="csrf" value=""#;
    let csrf = body[body.find(marker).unwrap() + marker.len()..]
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let (head, _) = curl_raw(
        &ca,
        &[
            "-b",
            &format!("keyplane_login={login_token}"),
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            &format!("credential={TOKEN}"),
            "--data-urlencode",
            "kind=token",
            &login,
        ],
    );
    let session = head
        .lines()
        .find(|l| l.starts_with("set-cookie: keyplane_session="))
        .expect("session cookie");
    assert!(session.contains("; secure"), "{session}");
    assert!(session.contains("httponly"), "{session}");
    assert!(session.contains("samesite=strict"), "{session}");
}
