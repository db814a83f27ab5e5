//! TLS to the database: a PostgreSQL server of the test's own (this machine's PostgreSQL
//! binaries, a fresh cluster that accepts TLS connections only, with a certificate from a CA the
//! test makes) is reached with `sslmode=verify-full`; a foreign CA, a name the certificate does
//! not carry and the modes that check nothing are refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyplane_core::ports::{Store, VaultRecords};
use keyplane_store::{PostgresOptions, PostgresStore};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn postgres_bin() -> PathBuf {
    let version = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed here")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .next()
        .expect("a PostgreSQL version");
    version.join("bin")
}

fn as_postgres(program: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

fn give_to_postgres(path: &Path) {
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A running private cluster; stopped when dropped.
struct Cluster {
    server: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_cluster(ca: &CertifiedIssuer<'static, KeyPair>) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "database");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.path().join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(
        dir.path().join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    give_to_postgres(dir.path());
    let bin = postgres_bin();
    let init = as_postgres(&bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(init.success(), "initdb failed");
    // TLS or nothing: a plain connection finds no rule that lets it in.
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
    )
    .unwrap();
    give_to_postgres(&data);
    let port = free_port();
    let server = as_postgres(&bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir.path())
        .args(["-c", "listen_addresses=localhost", "-c", "ssl=on"])
        .arg("-c")
        .arg(format!(
            "ssl_cert_file={}",
            dir.path().join("server.crt").display()
        ))
        .arg("-c")
        .arg(format!(
            "ssl_key_file={}",
            dir.path().join("server.key").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut cluster = Cluster {
        server,
        port,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return cluster;
        }
        if let Ok(Some(status)) = cluster.server.try_wait() {
            panic!("the test's PostgreSQL exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the test's PostgreSQL did not start");
}

#[tokio::test]
async fn the_database_is_reached_over_verified_tls_only() {
    let ca = authority("Database CA");
    let foreign = authority("Someone else's CA");
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.pem");
    let foreign_file = files.path().join("foreign.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&foreign_file, foreign.pem()).unwrap();
    let cluster = start_cluster(&ca);
    let url = |host: &str, query: &str| {
        format!(
            "postgres://postgres@{host}:{}/postgres?{query}",
            cluster.port
        )
    };
    let verify = |ca: &Path| format!("sslmode=verify-full&sslrootcert={}", ca.display());

    let store = PostgresStore::open(
        &url("localhost", &verify(&ca_file)),
        PostgresOptions::default(),
    )
    .await
    .expect("verify-full with the right CA and name connects");
    store.ping().await.unwrap();
    assert!(store.vault_ids().await.unwrap().is_empty());
    store.close().await;

    let refused = [
        (url("localhost", &verify(&foreign_file)), "a foreign CA"),
        (
            url("127.0.0.1", &verify(&ca_file)),
            "a name the certificate lacks",
        ),
        (url("localhost", "sslmode=disable"), "no TLS"),
        (
            url("localhost", "sslmode=require"),
            "TLS that checks nothing",
        ),
    ];
    for (url, why) in refused {
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            PostgresStore::open(&url, PostgresOptions::default()),
        )
        .await
        .expect("refused in time");
        assert!(outcome.is_err(), "connected despite {why}");
    }
    let weak = PostgresStore::open(
        &url("localhost", "sslmode=require"),
        PostgresOptions::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(weak.to_string().contains("verify-full"), "{weak}");
}
