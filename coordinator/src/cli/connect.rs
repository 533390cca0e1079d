//! The mTLS channel to the coordinator (tonic `Channel` with `ClientTlsConfig`, ring) for an
//! operator identity in the TLS directory, and the mapping of gRPC statuses to clear errors.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_proto::fleet::v1::fleet_client::FleetClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::error::CliError;
use crate::ca::{self, Role, CA_CERT};

/// The largest answer the CLI accepts.
const MAX_MESSAGE: usize = 256 << 20;

/// How long to wait for the TCP connection and TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to connect (the global flags).
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `https://HOST:PORT`.
    pub coordinator: Option<String>,
    /// Directory with `ca.pem` and `operator-NAME.pem` / `-key.pem`.
    pub tls_dir: Option<PathBuf>,
    /// The operator identity (file stem `operator-NAME`).
    pub identity: Option<String>,
}

/// A connected Fleet client and what is needed to explain its errors.
#[derive(Debug, Clone)]
pub struct Client {
    /// The generated Fleet client.
    pub fleet: FleetClient<Channel>,
    url: String,
    identity: String,
    cert: PathBuf,
    role: Option<Role>,
}

/// The files one identity needs, checked to exist and be readable.
struct Files {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    cert_path: PathBuf,
}

fn read_file(path: &Path, tls_dir: &Path, identity: &str) -> Result<Vec<u8>, CliError> {
    let missing = |reason: String| CliError::MissingCert {
        path: path.to_owned(),
        tls_dir: tls_dir.to_owned(),
        identity: identity.to_owned(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) if bytes.is_empty() => Err(missing("the file is empty".into())),
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing("no such file".into())),
        Err(e) => Err(missing(format!("cannot read it: {e}"))),
    }
}

impl Target {
    fn require(&self) -> Result<(&str, &Path, &str), CliError> {
        let url = self
            .coordinator
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                CliError::Usage(
                    "no coordinator given; pass --coordinator https://HOST:PORT or set FLOTILLA_COORDINATOR"
                        .into(),
                )
            })?;
        let dir = self.tls_dir.as_deref().ok_or_else(|| {
            CliError::Usage(
                "no TLS directory given; pass --tls-dir DIR (holding ca.pem and operator-NAME.pem) or set \
                 FLOTILLA_TLS_DIR"
                    .into(),
            )
        })?;
        let identity = self.identity.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
            CliError::Usage(
                "no identity given; pass --identity NAME (uses DIR/operator-NAME.pem) or set FLOTILLA_IDENTITY"
                    .into(),
            )
        })?;
        Ok((url, dir, identity))
    }

    fn files(dir: &Path, identity: &str) -> Result<Files, CliError> {
        let stem = format!("operator-{identity}");
        let cert_path = dir.join(format!("{stem}.pem"));
        Ok(Files {
            ca: read_file(&dir.join(CA_CERT), dir, identity)?,
            cert: read_file(&cert_path, dir, identity)?,
            key: read_file(&dir.join(format!("{stem}-key.pem")), dir, identity)?,
            cert_path,
        })
    }

    /// Checks the flags and files, then connects (TCP, TLS with the client certificate, HTTP/2).
    pub async fn connect(&self) -> Result<Client, CliError> {
        let (url, dir, identity) = self.require()?;
        let endpoint = endpoint(url)?;
        let files = Self::files(dir, identity)?;
        // The role, read from our own certificate, explains a PermissionDenied.
        let role = CertificateDer::from_pem_slice(&files.cert)
            .ok()
            .and_then(|der| ca::identity_of(&der).ok())
            .and_then(|id| match id {
                ca::Identity::Operator { role, .. } => Some(role),
                ca::Identity::Agent { .. } => None,
            });
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&files.ca))
            .identity(Identity::from_pem(&files.cert, &files.key));
        let endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| CliError::Usage(format!("TLS setup for {url}: {}", chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect())
            .await
            .map_err(|_| CliError::Unreachable {
                url: url.to_owned(),
                detail: format!("no answer within {}s", (CONNECT_TIMEOUT * 2).as_secs()),
            })?
            .map_err(|e| CliError::Unreachable {
                url: url.to_owned(),
                detail: chain(&e),
            })?;
        tracing::debug!(coordinator = url, identity, "connected");
        Ok(Client {
            // A fleet's ListClusters answer outgrows tonic's 4 MiB default (10,000 clusters with
            // their inventories are ~6 MiB).
            fleet: FleetClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
            url: url.to_owned(),
            identity: identity.to_owned(),
            cert: files.cert_path,
            role,
        })
    }
}

/// Parses the coordinator URL; only `https://` (mTLS) is accepted.
fn endpoint(url: &str) -> Result<Endpoint, CliError> {
    let bad = |why: &str| {
        CliError::Usage(format!(
            "--coordinator `{url}` {why}; write https://HOST:PORT, e.g. https://coordinator.example.com:7443"
        ))
    };
    if !url.starts_with("https://") {
        return Err(bad("is not an https:// URL (the coordinator speaks only mTLS)"));
    }
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|_| bad("is not a valid URL"))?;
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(endpoint)
}

/// An error and its sources, joined: `transport error: tcp connect error: Connection refused`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

impl Client {
    /// The coordinator's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Turns a gRPC status into an error that says what to do.
    pub fn status(&self, status: Status) -> CliError {
        let msg = status.message().to_owned();
        let message = match status.code() {
            Code::NotFound | Code::AlreadyExists => msg,
            Code::InvalidArgument => format!("the coordinator refused the request: {msg}"),
            Code::FailedPrecondition | Code::Aborted => format!("the coordinator cannot do that now: {msg}"),
            Code::PermissionDenied => {
                let role = match self.role {
                    Some(Role::Viewer) => format!(
                        "identity `{}` has the viewer role, which may only read (list, get, watch); use an identity \
                         with the operator role (`flotilla-coordinator ca issue --operator NAME --role operator`)",
                        self.identity
                    ),
                    Some(Role::Operator) => format!("identity `{}` has the operator role", self.identity),
                    None => format!("identity `{}` ({})", self.identity, self.cert.display()),
                };
                format!("permission denied: {role} (coordinator: {msg})")
            }
            Code::Unauthenticated => format!(
                "the coordinator did not accept identity `{}` ({}): {msg}; check that the certificate was issued \
                 by the coordinator's CA and has not expired",
                self.identity,
                self.cert.display()
            ),
            Code::Unavailable | Code::Unknown if looks_like_transport(&status) => {
                let mut detail = chain(&status);
                if detail.contains("alert") || detail.contains("certificate") {
                    detail.push_str(&format!(
                        " (the TLS handshake failed: is {} issued by the coordinator's CA?)",
                        self.cert.display()
                    ));
                }
                return CliError::Unreachable {
                    url: self.url.clone(),
                    detail,
                };
            }
            Code::Unimplemented => format!("the coordinator at {} does not support this: {msg}", self.url),
            Code::DeadlineExceeded => format!("the coordinator did not answer in time: {msg}"),
            code => format!("the coordinator answered {code:?}: {msg}"),
        };
        CliError::Server {
            code: status.code(),
            message,
        }
    }
}

/// Whether a status comes from the connection rather than from the server's handler.
fn looks_like_transport(status: &Status) -> bool {
    status.code() == Code::Unavailable || status.source().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(endpoint("https://127.0.0.1:7443").is_ok());
        assert!(endpoint("https://coordinator.example.com:7443").is_ok());
        let err = endpoint("http://127.0.0.1:7443").unwrap_err().to_string();
        assert!(err.contains("is not an https:// URL"), "{err}");
        let err = endpoint("127.0.0.1:7443").unwrap_err().to_string();
        assert!(err.contains("write https://HOST:PORT"), "{err}");
    }

    #[tokio::test]
    async fn missing_flags_and_files_are_usage_errors() {
        let err = Target::default().connect().await.unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("FLOTILLA_COORDINATOR"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let target = Target {
            coordinator: Some("https://127.0.0.1:1".into()),
            tls_dir: Some(dir.path().to_owned()),
            identity: Some("alice".into()),
        };
        let err = target.connect().await.unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}/ca.pem: no such file", dir.path().display())),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "flotilla-coordinator ca issue --dir {} --operator alice --role operator",
                dir.path().display()
            )),
            "{text}"
        );
    }
}
