//! The `flotilla` operator CLI: a client of the coordinator's Fleet gRPC API over mTLS.
//!
//! # Layout
//!
//! - [`args`]: the command line (clap).
//! - [`connect`]: the mTLS channel for an operator identity; gRPC statuses turned into advice.
//! - [`spec`]: node group templates and rollout specs (YAML), checked before any call.
//! - [`render`]: serde views, tables, JSON and YAML.
//! - [`watch`]: following an operation or rollout live, line by line, or as JSON lines.
//! - [`commands`]: what each subcommand calls and prints.
//! - [`error`]: errors and exit codes (0 ok, 1 the watched work failed, 2 usage or input,
//!   3 connection or server).

pub mod args;
pub mod commands;
pub mod connect;
pub mod error;
pub mod render;
pub mod spec;
pub mod watch;

use std::io::{IsTerminal, Write};

pub use args::Cli;
pub use error::CliError;

/// Where a command writes: results to `out`, notes and hints to `err`.
pub struct Io {
    /// Results (tables, JSON, YAML, watch events).
    pub out: Box<dyn Write + Send>,
    /// Notes, hints and reconnect messages.
    pub err: Box<dyn Write + Send>,
    /// Whether `out` is a terminal (live progress bars instead of lines).
    pub live: bool,
    /// Where live progress bars are drawn: stdout (the CLI), or stderr for a caller whose stdout
    /// carries a machine-readable result (the demo's `--output json`).
    pub live_target: LiveTarget,
}

/// The stream live progress bars are drawn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LiveTarget {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

impl LiveTarget {
    /// The indicatif draw target.
    pub(crate) fn draw_target(self) -> indicatif::ProgressDrawTarget {
        match self {
            LiveTarget::Stdout => indicatif::ProgressDrawTarget::stdout(),
            LiveTarget::Stderr => indicatif::ProgressDrawTarget::stderr(),
        }
    }
}

impl Io {
    /// The process's stdout and stderr.
    pub fn stdio() -> Self {
        Io {
            live: std::io::stdout().is_terminal(),
            live_target: LiveTarget::Stdout,
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
        }
    }
}

/// How a command that did not fail to run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (and the watched work, if any, succeeded).
    Done,
    /// The watched operation or rollout failed, was rolled back or cancelled.
    Failed,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => error::EXIT_OK,
            Outcome::Failed => error::EXIT_FAILED,
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli, io: &mut Io) -> Result<Outcome, CliError> {
    commands::run(cli, io).await
}
