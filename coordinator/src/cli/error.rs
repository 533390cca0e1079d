//! The CLI's errors and the exit code each maps to: 2 for usage and input errors (caught before any
//! call), 3 for connection and server errors. (Exit code 1, a watched operation or rollout that
//! failed, is an outcome, not an error: see [`super::Outcome`].)

use std::path::PathBuf;

use super::spec::SpecError;

/// Exit code of a successful run.
pub const EXIT_OK: u8 = 0;
/// Exit code when the watched operation or rollout failed, was rolled back or cancelled.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of usage and input errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of connection and server errors.
pub const EXIT_SERVER: u8 = 3;

/// Everything that can stop a `flotilla` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag is missing or wrong (beyond what clap checks).
    #[error("{0}")]
    Usage(String),
    /// A template or rollout spec file is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A certificate or key file for the chosen identity is missing or unreadable.
    #[error(
        "{}: {reason}; issue it with `flotilla-coordinator ca issue --dir {} --operator {identity} --role operator` \
         (or `--role viewer` for read-only use), or pass the right --tls-dir / --identity",
        .path.display(), .tls_dir.display()
    )]
    MissingCert {
        /// The missing file.
        path: PathBuf,
        /// The TLS directory searched.
        tls_dir: PathBuf,
        /// The identity asked for.
        identity: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The coordinator could not be reached (TCP, TLS handshake, HTTP/2).
    #[error(
        "cannot reach the coordinator at {url}: {detail}; check that `flotilla-coordinator serve` runs there, \
         that the host and port are right, and that its certificate was issued for that host \
         (`ca init --san HOST`) by the CA in --tls-dir"
    )]
    Unreachable {
        /// The coordinator URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The coordinator answered with an error status.
    #[error("{message}")]
    Server {
        /// The gRPC code.
        code: tonic::Code,
        /// The explanation shown to the operator (the server's message, with advice).
        message: String,
    },
    /// A watch ended before the operation or rollout did.
    #[error("{0}")]
    WatchEnded(String),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Spec(_) | CliError::MissingCert { .. } => EXIT_USAGE,
            CliError::Server {
                code: tonic::Code::InvalidArgument,
                ..
            } => EXIT_USAGE,
            CliError::Unreachable { .. }
            | CliError::Server { .. }
            | CliError::WatchEnded(_)
            | CliError::Output(_) => EXIT_SERVER,
        }
    }
}
