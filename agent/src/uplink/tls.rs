//! The agent's mTLS material: the coordinator's CA and the agent's own certificate and key, as
//! `flotilla-coordinator ca init` / `ca issue --agent CLUSTER` write them (`D/ca.pem`,
//! `D/agent-CLUSTER.pem`, `D/agent-CLUSTER-key.pem`). Checked when loaded — files present, PEM
//! readable, the certificate naming this cluster — so a mistake is reported before dialling.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::UplinkError;

/// The CA certificate's file name.
pub const CA_FILE: &str = "ca.pem";
/// Prefix of every Flotilla identity URI.
const URI_PREFIX: &str = "spiffe://flotilla/";

/// The agent certificate's file name for `cluster` (`agent-CLUSTER.pem`).
pub fn cert_file(cluster: &str) -> String {
    format!("agent-{cluster}.pem")
}

/// The agent key's file name for `cluster` (`agent-CLUSTER-key.pem`).
pub fn key_file(cluster: &str) -> String {
    format!("agent-{cluster}-key.pem")
}

/// The PEM texts the agent dials with.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The coordinator's CA certificate(s): the only roots the agent trusts.
    pub ca_pem: String,
    /// The agent's certificate (chain), naming its cluster as `spiffe://flotilla/agent/CLUSTER`.
    pub cert_pem: String,
    /// The agent's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// PEM texts held in memory (e.g. an in-process demo that issued them itself).
    pub fn from_pem(
        ca_pem: impl Into<String>,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> TlsIdentity {
        TlsIdentity {
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// Reads `dir/ca.pem`, `dir/agent-CLUSTER.pem` and `dir/agent-CLUSTER-key.pem`. Every
    /// missing file is named, with the command that creates it.
    pub fn from_dir(dir: &Path, cluster: &str) -> Result<TlsIdentity, UplinkError> {
        let files = [
            (dir.join(CA_FILE), "the coordinator's CA certificate"),
            (dir.join(cert_file(cluster)), "the agent's certificate"),
            (dir.join(key_file(cluster)), "the agent's private key"),
        ];
        let missing: Vec<PathBuf> = files
            .iter()
            .filter(|(p, _)| !p.is_file())
            .map(|(p, _)| p.clone())
            .collect();
        if !missing.is_empty() {
            return Err(UplinkError::MissingTlsFiles {
                dir: dir.to_path_buf(),
                cluster: cluster.to_string(),
                missing,
            });
        }
        let read = |(path, what): &(PathBuf, &str)| {
            std::fs::read_to_string(path).map_err(|e| UplinkError::Tls {
                path: path.display().to_string(),
                message: format!("cannot read {what}: {e}"),
            })
        };
        Ok(TlsIdentity {
            ca_pem: read(&files[0])?,
            cert_pem: read(&files[1])?,
            key_pem: read(&files[2])?,
        })
    }

    /// Checks the PEM texts parse and that the certificate names `cluster`; `source` names where
    /// they came from in errors (a directory, or `in-memory`).
    pub fn check(&self, cluster: &str, source: &str) -> Result<(), UplinkError> {
        let bad = |file: &str, message: String| UplinkError::Tls {
            path: format!("{source}/{file}"),
            message,
        };
        let certs = |pem: &str, file: &str| -> Result<Vec<CertificateDer<'static>>, UplinkError> {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(file, format!("not a PEM certificate: {e}")))?;
            if certs.is_empty() {
                return Err(bad(file, "holds no CERTIFICATE block".into()));
            }
            Ok(certs)
        };
        certs(&self.ca_pem, CA_FILE)?;
        let chain = certs(&self.cert_pem, &cert_file(cluster))?;
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| bad(&key_file(cluster), format!("not a PEM private key: {e}")))?;
        let named = identity_uris(&chain[0]).map_err(|e| bad(&cert_file(cluster), e))?;
        let want = format!("{URI_PREFIX}agent/{cluster}");
        if !named.contains(&want) {
            let found = if named.is_empty() {
                "no spiffe://flotilla/ identity".to_string()
            } else {
                named.join(", ")
            };
            return Err(UplinkError::WrongIdentity {
                path: format!("{source}/{}", cert_file(cluster)),
                cluster: cluster.to_string(),
                found,
            });
        }
        Ok(())
    }
}

/// The `spiffe://flotilla/...` SAN URIs of a certificate.
fn identity_uris(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?;
    Ok(san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => {
                Some(uri.to_string())
            }
            _ => None,
        })
        .collect())
}
