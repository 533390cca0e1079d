//! flotilla-tests: end-to-end tests, benchmarks and the one-command demo, which run Flotilla's
//! binaries and clients against the simulated fleet.
//!
//! # Layout
//!
//! - [`demo`]: the demo (`flotilla-demo`, `src/bin/flotilla-demo.rs`) as a library, which the
//!   end-to-end tests in `tests/` reuse.
//! - This library is the harness the tests and benchmarks share: [`bins`] builds and finds the
//!   workspace's binaries (`flotilla-sim`, `flotilla-coordinator`, `flotilla-agent`, `flotilla`);
//!   [`process`] runs one as a child with its output captured; [`proxy`] is a TCP proxy that can
//!   cut every stream through it; [`sim`], [`coordinator`], [`agent`] and [`cli`] start and drive
//!   the four programs the way an operator would.
//! - `tests/e2e_*.rs`: one cluster migrated end to end across separate processes (simulator,
//!   coordinator, agent, CLI); the coordinator SIGKILLed and restarted; the agent killed and its
//!   stream cut; the CLI's errors; `e2e_rollout_restart.rs`: a three-stage migration rollout over
//!   three clusters (an agent process each) with the coordinator SIGKILLed while a stage runs;
//!   `e2e_telemetry.rs`: both processes' OTLP spans as one trace (to a receiver in the test),
//!   their `/metrics` and JSON logs. `tests/helm_charts.rs`: the Helm charts through Helm itself.
//! - `benches/sessions.rs`: thousands of agent sessions against one coordinator process (RSS,
//!   CPU, connect time, status latency); `benches/rollout.rs`: an upgrade rollout over 1,000
//!   simulated clusters in three stages against one coordinator process (wall time versus the
//!   lower limit the delays allow, coordinator CPU and peak RSS, GetRollout / WatchRollout latency);
//!   `benches/sim.rs`: the simulator's own costs.

pub mod agent;
pub mod bins;
pub mod cli;
pub mod coordinator;
pub mod demo;
pub mod http;
pub mod process;
pub mod proxy;
pub mod sim;
pub mod world;

use std::path::PathBuf;

/// Everything the harness can fail with; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `cargo build` of the workspace's binaries failed.
    #[error("building the binaries with `{command}` failed:\n{output}")]
    Build {
        /// The command line.
        command: String,
        /// Its output (stderr).
        output: String,
    },
    /// A binary is not where the build should have put it.
    #[error("{}: not found after the build; set FLOTILLA_BIN_DIR to a directory holding the binaries", .0.display())]
    MissingBinary(PathBuf),
    /// A child process did not do what was expected in time, or exited.
    #[error("{process}: {what}\n--- last output ---\n{tail}")]
    Process {
        /// The process's name.
        process: String,
        /// What went wrong.
        what: String,
        /// Its last lines of output.
        tail: String,
    },
    /// A document (endpoints.json, a JSON answer, a log line) did not have the expected shape.
    #[error("{what}: {detail}")]
    Parse {
        /// What was parsed.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// An HTTP exchange with the simulator's statistics endpoint failed.
    #[error("{method} {url}: {detail}")]
    Http {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// Building a client (kube, AWS, gRPC) failed.
    #[error("{what}: {detail}")]
    Client {
        /// Which client.
        what: String,
        /// Why.
        detail: String,
    },
}

impl Error {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
