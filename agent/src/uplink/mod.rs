//! The agent's session with the coordinator (`AgentGateway.Connect`): the agent dials out over
//! mTLS, says `Hello` (cluster, version, inventory, steps still running), heartbeats, runs the
//! `RunStep`s it is sent, streams their progress and re-sends each result until acked.
//!
//! # Layout
//!
//! - [`session`]: dial, `Hello`, the message loop, reconnects with backoff.
//! - [`runner`]: dedup by (operation, step, attempt), step tasks, cancellation, progress throttle.
//! - [`outbox`]: results waiting for their ack (and recently acked ones, to answer repeats).
//! - [`convert`]: protobuf ⇄ steps; [`tls`]: the certificate files; [`backoff`]: reconnect delays.
//!
//! # Embedding
//!
//! [`run`] is the whole agent minus the CLI: one call per cluster. It spawns no threads and
//! holds one TLS connection plus a few small tasks per agent (one per running step), so a demo
//! or benchmark can run a thousand agents on one runtime.

pub mod backoff;
pub mod convert;
pub mod outbox;
pub mod runner;
pub mod session;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

pub use self::backoff::BackoffConfig;
pub use self::tls::TlsIdentity;
/// The shutdown signal [`run`] takes (re-exported so embedders need no tokio-util dependency).
pub use tokio_util::sync::CancellationToken;
pub use tonic::transport::Uri;

use crate::cluster::KubeCluster;
use crate::metrics::AgentMetrics;

/// The agent's version as `Hello` reports it.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Default interval at which unacked results are sent again.
pub const DEFAULT_RESEND: Duration = Duration::from_secs(5);
/// Default minimum interval between two progress reports of one step (at most 2 per second).
pub const DEFAULT_PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Default bound on dialling (TCP and TLS) and on the coordinator's answer to `Connect`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keepalive: a PING this often, the connection given up if unanswered for
/// [`KEEPALIVE_TIMEOUT`], so a coordinator that vanished is noticed without waiting on TCP.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the uplink could not start (session failures are retried, never returned).
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// Certificate files are missing from the TLS directory.
    #[error(
        "{}: missing {}; create the agent's files on the coordinator's CA directory with \
         `flotilla-coordinator ca issue --dir DIR --agent {cluster}` (ca.pem comes from \
         `flotilla-coordinator ca init --dir DIR`) and copy ca.pem, agent-{cluster}.pem and \
         agent-{cluster}-key.pem into {}",
        dir.display(),
        missing.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", "),
        dir.display()
    )]
    MissingTlsFiles {
        /// The TLS directory (`--tls-dir`).
        dir: PathBuf,
        /// The cluster the files are for.
        cluster: String,
        /// Each missing file.
        missing: Vec<PathBuf>,
    },
    /// A certificate or key file cannot be used.
    #[error("{path}: {message}")]
    Tls {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The agent certificate names another cluster.
    #[error(
        "{path} names {found}, not spiffe://flotilla/agent/{cluster}; use the certificate issued \
         with `flotilla-coordinator ca issue --agent {cluster}`, or pass the --cluster it was issued for"
    )]
    WrongIdentity {
        /// The certificate file.
        path: String,
        /// The cluster asked for (`--cluster`).
        cluster: String,
        /// The identities the certificate carries.
        found: String,
    },
    /// The coordinator URL cannot be dialled with mTLS.
    #[error("--coordinator `{url}`: {message}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong and how to write it.
        message: String,
    },
    /// The cluster name is not usable.
    #[error("--cluster `{name}`: {message}")]
    InvalidCluster {
        /// The name given.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of range.
    #[error("{field}: {message}")]
    InvalidSetting {
        /// The setting (as the CLI flag names it).
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Everything one agent's uplink needs.
#[derive(Clone)]
pub struct UplinkConfig {
    /// The coordinator's gateway, `https://HOST:PORT`.
    pub coordinator: Uri,
    /// The cluster's id: the name in the agent's certificate and in `Hello`.
    pub cluster: String,
    /// CA, certificate and key.
    pub tls: TlsIdentity,
    /// Where `tls` came from, for error messages (`--tls-dir`, or `in-memory`).
    pub tls_source: String,
    /// The cluster's Kubernetes API. Build it with `default_retry = false` (see
    /// [`KubeCluster::new`]).
    pub kube: kube::Client,
    /// Heartbeat interval (default 10 s).
    pub heartbeat: Duration,
    /// Unacked results are sent again this often (default 5 s), and on every reconnect.
    pub resend: Duration,
    /// Minimum interval between two progress reports of one step (default 500 ms).
    pub progress_every: Duration,
    /// Reconnect backoff (full jitter, cap 30 s).
    pub backoff: BackoffConfig,
    /// Bound on dialling and on the coordinator's answer to `Connect` (default 10 s).
    pub connect_timeout: Duration,
    /// The name the coordinator's certificate must carry; default: the URL's host.
    pub server_name: Option<String>,
    /// How long shutdown waits for running steps to reach a safe point (default 10 s).
    pub shutdown_grace: Duration,
    /// Where steps, evictions and the session's state are counted ([`UplinkConfig::new`] makes
    /// a fresh set; give every agent of one process the same one, and serve its registry).
    pub metrics: AgentMetrics,
}

impl std::fmt::Debug for UplinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkConfig")
            .field("coordinator", &self.coordinator)
            .field("cluster", &self.cluster)
            .field("tls_source", &self.tls_source)
            .field("heartbeat", &self.heartbeat)
            .field("resend", &self.resend)
            .field("progress_every", &self.progress_every)
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UplinkConfig {
    /// The defaults for one cluster: heartbeat 10 s, resend 5 s, progress at most 2/s,
    /// backoff 0.5 s doubling to 30 s with full jitter, connect timeout 10 s.
    pub fn new(
        coordinator: Uri,
        cluster: impl Into<String>,
        tls: TlsIdentity,
        kube: kube::Client,
    ) -> UplinkConfig {
        UplinkConfig {
            coordinator,
            cluster: cluster.into(),
            tls,
            tls_source: "in-memory".into(),
            kube,
            heartbeat: DEFAULT_HEARTBEAT,
            resend: DEFAULT_RESEND,
            progress_every: DEFAULT_PROGRESS_EVERY,
            backoff: BackoffConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            server_name: None,
            shutdown_grace: Duration::from_secs(10),
            metrics: AgentMetrics::new(),
        }
    }

    /// Checks the settings and builds the endpoint every session dials (the TLS configuration
    /// is built once and shared by every reconnect).
    pub fn endpoint(&self) -> Result<Endpoint, UplinkError> {
        check_cluster(&self.cluster)?;
        for (field, d) in [
            ("--heartbeat", self.heartbeat),
            ("resend", self.resend),
            ("connect_timeout", self.connect_timeout),
            ("backoff.max", self.backoff.max),
        ] {
            if d.is_zero() {
                return Err(UplinkError::InvalidSetting {
                    field,
                    message: "must be above zero, e.g. 10s".into(),
                });
            }
            if d > crate::steps::MAX_WAIT {
                return Err(UplinkError::InvalidSetting {
                    field,
                    message: "is longer than 7 days; use e.g. 10s".into(),
                });
            }
        }
        check_coordinator(&self.coordinator.to_string(), &self.coordinator)?;
        self.tls.check(&self.cluster, &self.tls_source)?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.tls.ca_pem))
            .identity(Identity::from_pem(&self.tls.cert_pem, &self.tls.key_pem))
            .timeout(self.connect_timeout);
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        Endpoint::from(self.coordinator.clone())
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tls_config(tls)
            .map_err(|e| UplinkError::Tls {
                path: self.tls_source.clone(),
                message: format!("cannot build the TLS configuration: {}", error_chain(&e)),
            })
    }
}

/// Parses `--coordinator`: an `https://HOST:PORT` URL.
pub fn parse_coordinator(url: &str) -> Result<Uri, UplinkError> {
    let uri: Uri = url.parse().map_err(|e| UplinkError::InvalidUrl {
        url: url.to_string(),
        message: format!("{e}; write it as https://HOST:PORT"),
    })?;
    check_coordinator(url, &uri)?;
    Ok(uri)
}

/// The coordinator is dialled with mTLS: `https` and a host are required.
fn check_coordinator(url: &str, uri: &Uri) -> Result<(), UplinkError> {
    let invalid = |message: &str| UplinkError::InvalidUrl {
        url: url.to_string(),
        message: message.to_string(),
    };
    if uri.scheme_str() != Some("https") {
        return Err(invalid(
            "the agent dials with mTLS only; write it as https://HOST:PORT",
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("names no host; write it as https://HOST:PORT"));
    }
    Ok(())
}

/// A cluster name is a DNS-1123 label, as `ca issue --agent` requires.
fn check_cluster(name: &str) -> Result<(), UplinkError> {
    let bad = |message: &str| {
        UplinkError::InvalidCluster {
        name: name.to_string(),
        message: format!("{message}; use the name the agent certificate was issued for (1-63 lowercase letters, digits or '-')"),
    }
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1 to 63 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(bad("is not a DNS-1123 label"));
    }
    Ok(())
}

/// An error with its sources, `: `-separated (tonic's transport errors hide the cause).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Runs the agent's uplink until `shutdown` is cancelled: dials the coordinator, keeps the
/// session up (reconnecting with backoff), runs the steps it is sent against `config.kube`.
///
/// Returns an error only for a configuration that can never work (bad URL, unusable
/// certificates); a coordinator that is down or refuses is retried. On shutdown, running steps
/// stop at their next await point without a result (steps are idempotent and resumable: the
/// coordinator runs the attempt again when the agent is back) and the stream is closed.
pub async fn run(config: UplinkConfig, shutdown: CancellationToken) -> Result<(), UplinkError> {
    let endpoint = config.endpoint()?;
    let cluster = Arc::new(KubeCluster::new(config.kube.clone()));
    session::run(session::Settings::from(&config), endpoint, cluster, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_urls_must_be_https_with_a_host() {
        assert!(parse_coordinator("https://127.0.0.1:8443").is_ok());
        assert!(parse_coordinator("https://coordinator.example.com").is_ok());
        let err = parse_coordinator("http://127.0.0.1:8443")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--coordinator") && err.contains("https://HOST:PORT"),
            "{err}"
        );
        let err = parse_coordinator("not a url").unwrap_err().to_string();
        assert!(err.contains("`not a url`"), "{err}");
        assert!(parse_coordinator("127.0.0.1:8443").is_err());
    }

    #[test]
    fn cluster_names_are_dns_labels() {
        assert!(check_cluster("prod-eu-1").is_ok());
        for bad in ["", "Prod", "-a", "a_b", &"x".repeat(64)] {
            let err = check_cluster(bad).unwrap_err().to_string();
            assert!(err.contains("--cluster"), "{err}");
        }
    }

    #[test]
    fn missing_files_are_named_with_the_command_that_makes_them() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ca.pem"), "x").expect("write");
        let err = TlsIdentity::from_dir(dir.path(), "sim-1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent-sim-1.pem"), "{err}");
        assert!(err.contains("agent-sim-1-key.pem"), "{err}");
        assert!(!err.contains("`ca.pem`") && !err.contains("/ca.pem`"), "{err}");
        assert!(
            err.contains("flotilla-coordinator ca issue --dir DIR --agent sim-1"),
            "{err}"
        );
    }
}
