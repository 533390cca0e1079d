//! The coordinator's certificate authority: `ca init` creates it, `ca issue` signs agent and operator
//! certificates. An agent's certificate names its cluster and an operator's carries a role, both as a
//! SAN URI (`spiffe://flotilla/...`) that [`identity_of`] reads back from a peer certificate.

pub mod tls;

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The CA certificate, `<dir>/ca.pem`.
pub const CA_CERT: &str = "ca.pem";
/// The CA private key, `<dir>/ca-key.pem` (mode 0600).
pub const CA_KEY: &str = "ca-key.pem";
/// File stem of the coordinator's server certificate (`coordinator.pem`, `coordinator-key.pem`).
pub const COORDINATOR_STEM: &str = "coordinator";
/// Default validity of leaf certificates, in days.
pub const DEFAULT_LEAF_DAYS: u32 = 365;
/// Default validity of the CA certificate, in days (10 years).
pub const DEFAULT_CA_DAYS: u32 = 3650;

/// Every Flotilla identity URI starts with this.
const URI_PREFIX: &str = "spiffe://flotilla/";
/// Leeway for clocks that run slightly behind the issuer's.
const BACKDATE: Duration = Duration::minutes(5);
/// Mode of private key files, set when the file is created.
const KEY_MODE: u32 = 0o600;
/// Mode of certificate files.
const CERT_MODE: u32 = 0o644;

/// Errors from creating the CA, issuing certificates and reading identities.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A name given on the command line is not a DNS-1123 label.
    #[error(
        "invalid {flag} `{value}`: {reason}; use a DNS-1123 label (1-63 lowercase letters, digits \
         or '-', starting and ending with a letter or digit), e.g. `prod-eu-1`"
    )]
    InvalidName {
        /// The flag that carried the name, e.g. `--agent`.
        flag: &'static str,
        /// The rejected value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `--role` is neither `viewer` nor `operator`.
    #[error(
        "invalid --role `{0}`: use `viewer` (may query) or `operator` (may also create and steer rollouts)"
    )]
    InvalidRole(String),
    /// A `--san` value is neither an IP address nor a DNS name.
    #[error("invalid --san `{0}`: use a DNS name (e.g. `coordinator.example.com`) or an IP address")]
    InvalidSan(String),
    /// A file that would be written already exists.
    #[error("`{}` already exists; refusing to overwrite it (move it away, or use another --dir)", .0.display())]
    AlreadyExists(PathBuf),
    /// The CA has not been created in this directory.
    #[error("no CA in `{}` (`{}` is missing); run `flotilla-coordinator ca init --dir {}` first", .dir.display(), CA_CERT, .dir.display())]
    NoCa {
        /// The directory that was searched.
        dir: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// rcgen failed to generate a key, load the CA or sign a certificate.
    #[error("{context}: {source}")]
    Cert {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A peer certificate could not be parsed as X.509.
    #[error("peer certificate is not valid X.509: {0}")]
    BadCertificate(String),
    /// A peer certificate carries no (or more than one) Flotilla identity URI.
    #[error("peer certificate carries {0}")]
    NoIdentity(String),
}

// === Identity ===

/// A role carried by an operator certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// May query the fleet.
    Viewer,
    /// May also create and steer rollouts.
    Operator,
}

impl Role {
    /// The role as written in `--role` and in the SAN URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, CaError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            other => Err(CaError::InvalidRole(other.to_owned())),
        }
    }
}

/// Who a client certificate speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An in-cluster agent; the coordinator accepts from it only messages about this cluster.
    Agent {
        /// The cluster the agent runs in.
        cluster: String,
    },
    /// A person or tool using the operator CLI.
    Operator {
        /// The operator's name.
        name: String,
        /// What the operator may do.
        role: Role,
    },
}

impl Identity {
    /// An agent identity, checking `cluster` as the value of `--agent`.
    pub fn agent(cluster: &str) -> Result<Self, CaError> {
        validate_label("--agent", cluster)?;
        Ok(Identity::Agent {
            cluster: cluster.to_owned(),
        })
    }

    /// An operator identity, checking `name` as the value of `--operator` and `role` as `--role`.
    pub fn operator(name: &str, role: &str) -> Result<Self, CaError> {
        validate_label("--operator", name)?;
        Ok(Identity::Operator {
            name: name.to_owned(),
            role: role.parse()?,
        })
    }

    /// The SAN URI naming this identity, e.g. `spiffe://flotilla/agent/prod-eu-1`.
    pub fn uri(&self) -> String {
        match self {
            Identity::Agent { cluster } => format!("{URI_PREFIX}agent/{cluster}"),
            Identity::Operator { name, role } => format!("{URI_PREFIX}operator/{role}/{name}"),
        }
    }

    /// The certificate's common name, e.g. `agent:prod-eu-1`.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Agent { cluster } => format!("agent:{cluster}"),
            Identity::Operator { name, .. } => format!("operator:{name}"),
        }
    }

    /// The stem of the files the certificate is written to, e.g. `agent-prod-eu-1`.
    pub fn file_stem(&self) -> String {
        match self {
            Identity::Agent { cluster } => format!("agent-{cluster}"),
            Identity::Operator { name, .. } => format!("operator-{name}"),
        }
    }

    /// Parses a Flotilla SAN URI; `None` if `uri` is not one.
    fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["agent", cluster] => Identity::agent(cluster).ok(),
            ["operator", role, name] => Identity::operator(name, role).ok(),
            _ => None,
        }
    }
}

/// Reads the Flotilla identity from a peer's end-entity certificate (DER).
///
/// The certificate must carry exactly one `spiffe://flotilla/...` SAN URI. This does not verify the
/// certificate: call it only on certificates the TLS handshake has already checked against the CA.
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| CaError::BadCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::BadCertificate(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CaError::NoIdentity(format!("no `{URI_PREFIX}` SAN URI"))),
        [uri] => Identity::from_uri(uri)
            .ok_or_else(|| CaError::NoIdentity(format!("an unrecognised identity URI `{uri}`"))),
        _ => Err(CaError::NoIdentity(format!(
            "{} identity URIs; expected one",
            uris.len()
        ))),
    }
}

// === Validity ===

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from a few minutes ago (clock skew) until `days` days from now.
    pub fn days(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - BACKDATE,
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

// === Create and issue ===

/// What `ca init` creates besides the CA.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Extra SANs for the coordinator's server certificate (DNS names or IP addresses), added to
    /// `localhost` and `127.0.0.1`.
    pub sans: Vec<String>,
    /// Validity of the CA certificate.
    pub ca_validity: Validity,
    /// Validity of the coordinator's server certificate.
    pub server_validity: Validity,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            sans: Vec::new(),
            ca_validity: Validity::days(DEFAULT_CA_DAYS),
            server_validity: Validity::days(DEFAULT_LEAF_DAYS),
        }
    }
}

/// Files written for one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl Written {
    fn in_dir(dir: &Path, stem: &str) -> Self {
        Written {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        }
    }
}

/// Creates a CA in `dir` (`ca.pem`, `ca-key.pem`) and the coordinator's server certificate
/// (`coordinator.pem`, `coordinator-key.pem`). Refuses to overwrite any of them.
///
/// Returns the CA's files and then the server's.
pub fn create(dir: &Path, opts: &CreateOptions) -> Result<(Written, Written), CaError> {
    let ca_files = Written {
        cert: dir.join(CA_CERT),
        key: dir.join(CA_KEY),
    };
    let server_files = Written::in_dir(dir, COORDINATOR_STEM);
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for san in &opts.sans {
        validate_san(san)?;
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    refuse_existing(&[
        &ca_files.cert,
        &ca_files.key,
        &server_files.cert,
        &server_files.key,
    ])?;

    let mut params = CertificateParams::default();
    params.distinguished_name = dn("Flotilla CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, opts.ca_validity);
    let ca_key = generate_key()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(params, ca_key).map_err(cert_err("signing the CA certificate"))?;

    let mut params = CertificateParams::new(sans).map_err(cert_err("building the server certificate"))?;
    params.distinguished_name = dn("coordinator");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (cert_pem, key_pem) = sign_leaf(params, opts.server_validity, &ca)?;

    create_dir(dir)?;
    write_new(&ca_files.key, &ca_key_pem, KEY_MODE)?;
    write_new(&ca_files.cert, &ca.pem(), CERT_MODE)?;
    write_new(&server_files.key, &key_pem, KEY_MODE)?;
    write_new(&server_files.cert, &cert_pem, CERT_MODE)?;
    Ok((ca_files, server_files))
}

/// Issues a client certificate for `identity`, signed by the CA in `dir`, and writes it as
/// `<dir>/<stem>.pem` and `<dir>/<stem>-key.pem` (see [`Identity::file_stem`]). Refuses to overwrite.
pub fn issue(dir: &Path, identity: &Identity, validity: Validity) -> Result<Written, CaError> {
    let files = Written::in_dir(dir, &identity.file_stem());
    refuse_existing(&[&files.cert, &files.key])?;
    let ca_cert_path = dir.join(CA_CERT);
    if !ca_cert_path.exists() {
        return Err(CaError::NoCa { dir: dir.to_owned() });
    }
    let ca_pem = read(&ca_cert_path)?;
    let ca_key_pem = read(&dir.join(CA_KEY))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(cert_err("reading the CA key"))?;
    let ca = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(cert_err("reading the CA certificate"))?;

    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&identity.common_name());
    let uri = identity.uri();
    params.subject_alt_names = vec![SanType::URI(
        uri.as_str()
            .try_into()
            .map_err(cert_err("building the identity URI"))?,
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (cert_pem, key_pem) = sign_leaf(params, validity, &ca)?;

    write_new(&files.key, &key_pem, KEY_MODE)?;
    write_new(&files.cert, &cert_pem, CERT_MODE)?;
    Ok(files)
}

/// Signs a leaf certificate with a fresh ECDSA P-256 key; returns (certificate, key) as PEM.
fn sign_leaf(
    mut params: CertificateParams,
    validity: Validity,
    ca: &Issuer<'_, KeyPair>,
) -> Result<(String, String), CaError> {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity);
    let key = generate_key()?;
    let cert = params
        .signed_by(&key, ca)
        .map_err(cert_err("signing the certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn generate_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err("generating a P-256 key"))
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Flotilla");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn cert_err(context: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Cert {
        context: context.to_owned(),
        source,
    }
}

// === Validation ===

/// Checks that `value` is a DNS-1123 label; errors name `flag`.
fn validate_label(flag: &'static str, value: &str) -> Result<(), CaError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("it may contain only lowercase letters, digits and '-'")
    } else if value.starts_with('-') || value.ends_with('-') {
        Some("it must start and end with a letter or digit")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CaError::InvalidName {
            flag,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks that `san` is an IP address or a DNS name (labels of letters, digits and '-').
fn validate_san(san: &str) -> Result<(), CaError> {
    if san.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if san.len() <= 253 && san.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(CaError::InvalidSan(san.to_owned()))
    }
}

// === Files ===

fn refuse_existing(paths: &[&Path]) -> Result<(), CaError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(CaError::AlreadyExists(p.to_path_buf())),
        None => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CaError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Creates `path` with `mode` (never replacing an existing file) and writes `contents`.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::AlreadyExists => CaError::AlreadyExists(path.to_owned()),
        _ => CaError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
