//! A real KMIP server for tests: PyKMIP's (the `pykmip-server` named by `KEYPLANE_TEST_PYKMIP`,
//! else on the PATH), with a CA, server and client certificates made here. PyKMIP's TLS 1.2
//! offers only CBC suites with RSA keys, which rustls does not speak: every key is EC P-256.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use tokio::process::{Child, Command};

/// A client identity: certificate and private key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// One object a KMIP server holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipObject {
    pub id: String,
    /// PyKMIP's state name: `ACTIVE`, `DEACTIVATED`, `COMPROMISED`, …
    pub state: String,
    /// PyKMIP's class: `SymmetricKey`, `PrivateKey`, `PublicKey` (`-` when Get refuses).
    pub kind: String,
    /// The key material in hex.
    pub material: Option<String>,
}

/// A CA that issues test certificates.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, common_name: &str, server: bool) -> anyhow::Result<Identity> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if server {
            params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate (clientAuth) whose common name PyKMIP takes as the caller.
    pub fn client(&self, common_name: &str) -> anyhow::Result<Identity> {
        self.issue(common_name, false)
    }
}

/// A PyKMIP server on a free loopback port, its own database and policy directory, requiring
/// client certificates from its CA.
pub struct PyKmip {
    child: Child,
    pub port: u16,
    pub ca: Authority,
    /// A client identity the server accepts.
    pub client: Identity,
    dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    std::env::var_os("KEYPLANE_TEST_PYKMIP")
        .map(PathBuf::from)
        .unwrap_or_else(|| "pykmip-server".into())
}

impl PyKmip {
    pub async fn start() -> anyhow::Result<Self> {
        let ca = Authority::new("keyplane test KMIP CA")?;
        let server = ca.issue("127.0.0.1", true)?;
        let client = ca.client("keyplane")?;
        let dir = tempfile::tempdir()?;
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.cert_pem())?;
        std::fs::write(path("server.pem"), &server.cert_pem)?;
        std::fs::write(path("server.key"), &server.key_pem)?;
        std::fs::create_dir(path("policies"))?;
        // The free port can be taken between choosing it and PyKMIP binding it.
        for _ in 0..3 {
            let port = crate::peers::free_port()?;
            let mut child = start_server(dir.path(), port)?;
            if wait_until_listening(&mut child, port).await? {
                return Ok(Self {
                    child,
                    port,
                    ca,
                    client,
                    dir,
                });
            }
        }
        bail!("PyKMIP did not start; its log: {}", log_of(dir.path()))
    }

    /// What the server logged (for a failing test's message).
    pub fn log(&self) -> String {
        log_of(self.dir.path())
    }

    /// Runs a PyKMIP client script as `identity` against this server: `script` gets a
    /// connected `client` (kmip.pie.client.ProxyKmipClient), and `connect()` for more, and
    /// prints what the test reads.
    pub async fn client_script(&self, identity: &Identity, script: &str) -> anyhow::Result<String> {
        let dir = tempfile::tempdir()?;
        let cert = dir.path().join("client.pem");
        let key = dir.path().join("client.key");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&cert, &identity.cert_pem)?;
        std::fs::write(&key, &identity.key_pem)?;
        std::fs::write(&ca, self.ca.cert_pem())?;
        let python = binary()
            .parent()
            .map(|bin| bin.join("python"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| "python3".into());
        let program = format!(
            "import sys\nfrom kmip.pie.client import ProxyKmipClient\nfrom kmip import enums\n\
             def connect():\n\
             \x20   c = ProxyKmipClient(hostname='127.0.0.1', port={port}, cert={cert:?}, key={key:?}, ca={ca:?}, ssl_version='PROTOCOL_TLS', config_file='/dev/null')\n\
             \x20   c.open()\n\
             \x20   return c\n\
             client = connect()\n{script}\nclient.close()\n",
            port = self.port,
            cert = cert.display().to_string(),
            key = key.display().to_string(),
            ca = ca.display().to_string(),
        );
        let out = Command::new(python)
            .args(["-c", &program])
            .output()
            .await
            .context("running a PyKMIP client")?;
        if !out.status.success() {
            bail!(
                "the PyKMIP client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The objects named `name`, as PyKMIP's own client (the server's client identity) reads
    /// them, oldest first: id, state and key material in hex (`None` when Get refuses).
    pub async fn objects(&self, name: &str) -> anyhow::Result<Vec<KmipObject>> {
        let out = self
            .client_script(
                &self.client,
                &format!(
                    "from kmip.core.factories.attributes import AttributeFactory\n\
                     ids = client.locate(attributes=[AttributeFactory().create_attribute(enums.AttributeType.NAME, {name:?})])\n\
                     for i in sorted(ids, key=int):\n\
                     \x20   state = client.get_attributes(i, ['State'])[1][0].attribute_value.value.name\n\
                     \x20   try:\n\
                     \x20       got = client.get(i)\n\
                     \x20       kind, material = type(got).__name__, got.value.hex()\n\
                     \x20   except Exception:\n\
                     \x20       kind, material = '-', '-'\n\
                     \x20   print(i, state, kind, material)"
                ),
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                Some(KmipObject {
                    id: parts.next()?.to_owned(),
                    state: parts.next()?.to_owned(),
                    kind: parts.next()?.to_owned(),
                    material: parts.next().filter(|m| *m != "-").map(str::to_owned),
                })
            })
            .collect())
    }

    /// Stops the server, keeping its objects: calls to it fail until [`PyKmip::resume`].
    pub async fn pause(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts the server again on its port, with the objects it held.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.child = start_server(self.dir.path(), self.port)?;
        if !wait_until_listening(&mut self.child, self.port).await? {
            bail!("PyKMIP did not start again; its log: {}", self.log());
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn start_server(dir: &Path, port: u16) -> anyhow::Result<Child> {
    let path = |name: &str| dir.join(name).display().to_string();
    let binary = binary();
    // Every setting in a private file: PyKMIP reads /etc/pykmip otherwise, and a file it is
    // given must hold them all.
    let config = format!(
        "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\n\
         ca_path={}\nauth_suite=TLS1.2\npolicy_path={}\nenable_tls_client_auth=True\n\
         logging_level=INFO\ndatabase_path={}\n",
        path("server.pem"),
        path("server.key"),
        path("ca.pem"),
        path("policies"),
        path("pykmip.db"),
    );
    std::fs::write(dir.join("server.conf"), config)?;
    Command::new(&binary)
        .args(["-f", &path("server.conf"), "-l", &path("server.log")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting PyKMIP ({}); scripts/test.sh installs it (PyPI pykmip)",
                binary.display()
            )
        })
}

/// Whether the server listens (false: it exited).
async fn wait_until_listening(child: &mut Child, port: u16) -> anyhow::Result<bool> {
    // Up to a minute: several test binaries start peers at once on a small machine.
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(true);
        }
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("PyKMIP did not listen on port {port} within a minute")
}

fn log_of(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
