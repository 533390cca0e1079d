//! rustls configurations for mTLS between the coordinator and its agents and operators, built from
//! the files `ca init` / `ca issue` write. Always uses the ring provider, passed explicitly, so no
//! process-wide default provider is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{CA_CERT, COORDINATOR_STEM};

/// ALPN protocol offered and accepted: gRPC runs over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{}: {source}; create it with `flotilla-coordinator ca init` / `ca issue`", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The CA certificate could not be used as a trust anchor.
    #[error("{}: not a usable CA certificate: {source}", .path.display())]
    Anchor {
        /// The CA certificate file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rustls::Error,
    },
    /// rustls rejected the configuration (e.g. the key does not match the certificate).
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("building the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The ring crypto provider every Flotilla TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The coordinator's server configuration: presents `<dir>/coordinator.pem` and requires a client
/// certificate signed by `<dir>/ca.pem`. Offers ALPN `h2`.
pub fn server_config(dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let roots = Arc::new(root_store(dir)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?;
    let (chain, key) = identity_files(dir, COORDINATOR_STEM)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting `<dir>/ca.pem` and presenting `<dir>/<stem>.pem` with
/// `<dir>/<stem>-key.pem` (e.g. `stem` = `agent-prod-eu-1`). Offers ALPN `h2`.
pub fn client_config(dir: &Path, stem: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let (chain, key) = identity_files(dir, stem)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(dir)?)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Trust anchors: the certificates in `<dir>/ca.pem`.
pub fn root_store(dir: &Path) -> Result<RootCertStore, TlsError> {
    let path = dir.join(CA_CERT);
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&path)? {
        roots.add(cert).map_err(|source| TlsError::Anchor {
            path: path.clone(),
            source,
        })?;
    }
    Ok(roots)
}

fn identity_files(
    dir: &Path,
    stem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certs(&dir.join(format!("{stem}.pem")))?;
    let key_path = dir.join(format!("{stem}-key.pem"));
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|source| TlsError::Pem {
        path: key_path,
        source,
    })?;
    Ok((chain, key))
}

/// All certificates in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(pem_err(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}
