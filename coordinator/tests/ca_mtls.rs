//! Cross-process test: the real `flotilla-coordinator ca init` / `ca issue` binary writes a CA and
//! certificates, then mTLS handshakes over 127.0.0.1 accept the CA's clients and refuse the rest.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use flotilla_coordinator::ca::{self, tls, Identity, Role, Validity};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Runs the binary and returns its stdout and stderr; panics with both if it fails and `ok` is set.
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-coordinator"))
        .args(args)
        .output()
        .expect("spawn binary");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    (out.status.success(), stdout, stderr)
}

fn run_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(args);
    assert!(ok, "{args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// One handshake: the server's view (the client's identity, or the error), after the client tried
/// to exchange a byte.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<Identity, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
        let certs = conn.peer_certificates().ok_or("no peer certificate")?;
        let identity = ca::identity_of(&certs[0]).map_err(|e| e.to_string())?;
        tls.write_all(b"k").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(identity)
    });
    let client_side = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok::<_, std::io::Error>(())
    };
    let client_result = client_side.await;
    let server_result = server_task.await.unwrap();
    // Whatever the server decided, the client must agree.
    assert_eq!(
        server_result.is_ok(),
        client_result.is_ok(),
        "server {server_result:?}, client {client_result:?}"
    );
    server_result
}

fn copy(from: &Path, to: &Path, names: &[&str]) {
    for name in names {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[tokio::test]
async fn mtls_accepts_the_cas_clients_and_refuses_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let d = dir.to_str().unwrap();

    let out = run_ok(&["ca", "init", "--dir", d, "--san", "coord.example.com"]);
    assert!(
        out.contains("ca.pem") && out.contains("coordinator-key.pem"),
        "{out}"
    );
    run_ok(&["ca", "issue", "--dir", d, "--agent", "prod-eu-1"]);
    run_ok(&[
        "ca",
        "issue",
        "--dir",
        d,
        "--operator",
        "alice",
        "--role",
        "viewer",
        "--days",
        "7",
    ]);

    // The CLI refuses to overwrite, and explains bad names with the flag.
    let (ok, _, err) = run(&["ca", "init", "--dir", d]);
    assert!(
        !ok && err.contains("ca.pem") && err.contains("refusing to overwrite"),
        "{err}"
    );
    let (ok, _, err) = run(&["ca", "issue", "--dir", d, "--agent", "Prod_EU"]);
    assert!(
        !ok && err.contains("--agent") && err.contains("DNS-1123"),
        "{err}"
    );
    let (ok, _, err) = run(&["ca", "issue", "--dir", d, "--operator", "bob", "--role", "admin"]);
    assert!(!ok && err.contains("--role"), "{err}");
    let (ok, _, err) = run(&["ca", "issue", "--dir", d, "--operator", "bob"]);
    assert!(!ok && err.contains("--role"), "{err}");

    let server = tls::server_config(&dir).unwrap();

    // Accepted: an agent certificate, and the server sees its cluster.
    let id = handshake(
        server.clone(),
        tls::client_config(&dir, "agent-prod-eu-1").unwrap(),
    )
    .await;
    assert_eq!(
        id,
        Ok(Identity::Agent {
            cluster: "prod-eu-1".into()
        })
    );
    let id = handshake(
        server.clone(),
        tls::client_config(&dir, "operator-alice").unwrap(),
    )
    .await;
    assert_eq!(
        id,
        Ok(Identity::Operator {
            name: "alice".into(),
            role: Role::Viewer
        })
    );

    // Refused: no client certificate.
    let no_cert = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(tls::root_store(&dir).unwrap())
        .with_no_client_auth();
    let err = handshake(server.clone(), Arc::new(no_cert)).await.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // Refused: a certificate from another CA (the client still trusts our server).
    let other = tmp.path().join("other");
    let o = other.to_str().unwrap();
    run_ok(&["ca", "init", "--dir", o]);
    run_ok(&["ca", "issue", "--dir", o, "--agent", "prod-eu-1"]);
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    copy(&dir, &mixed, &["ca.pem"]);
    copy(
        &other,
        &mixed,
        &["agent-prod-eu-1.pem", "agent-prod-eu-1-key.pem"],
    );
    let err = handshake(
        server.clone(),
        tls::client_config(&mixed, "agent-prod-eu-1").unwrap(),
    )
    .await
    .unwrap_err();
    // Both CAs are named "Flotilla CA", so webpki finds the name but not the signature.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );

    // Refused: an expired certificate from our CA (back-dated through the library).
    let day = time::Duration::days(1);
    let now = time::OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - day * 2,
        not_after: now - day,
    };
    ca::issue(&dir, &Identity::agent("stale").unwrap(), expired).unwrap();
    let err = handshake(server, tls::client_config(&dir, "agent-stale").unwrap())
        .await
        .unwrap_err();
    assert!(err.contains("expired"), "{err}");
}
