//! The `flotilla` CLI as a process: one command line run to its end, with its exit code and
//! output.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::bins::bins;
use crate::{Error, Result};

/// Who runs the CLI and against which coordinator (its global flags).
#[derive(Debug, Clone)]
pub struct Cli {
    /// `--coordinator`.
    pub coordinator: String,
    /// `--tls-dir`.
    pub tls_dir: PathBuf,
    /// `--identity`.
    pub identity: String,
}

/// A finished CLI run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command line, for messages.
    pub args: Vec<String>,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output as one JSON document (`-o json` of a non-watching command).
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).map_err(|e| self.parse_error(e))
    }

    /// Standard output as JSON lines (`-o json` of a watch: one object per line).
    pub fn json_lines(&self) -> Result<Vec<serde_json::Value>> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| self.parse_error(e)))
            .collect()
    }

    fn parse_error(&self, e: serde_json::Error) -> Error {
        Error::Parse {
            what: format!("the output of flotilla {}", self.args.join(" ")),
            detail: format!(
                "{e}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout, self.stderr
            ),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flotilla {} exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Cli {
    /// The CLI for `coordinator` as `identity` with the certificates in `tls_dir`.
    pub fn new(coordinator: impl Into<String>, tls_dir: &Path, identity: &str) -> Cli {
        Cli {
            coordinator: coordinator.into(),
            tls_dir: tls_dir.to_path_buf(),
            identity: identity.to_string(),
        }
    }

    /// The same CLI as another identity.
    pub fn as_identity(&self, identity: &str) -> Cli {
        Cli {
            identity: identity.to_string(),
            ..self.clone()
        }
    }

    /// Runs `flotilla --coordinator … --tls-dir … --identity … <args>` to its end.
    pub async fn run(&self, args: &[&str]) -> Result<Run> {
        let mut cmd = Command::new(&bins()?.cli);
        cmd.arg("--coordinator")
            .arg(&self.coordinator)
            .arg("--tls-dir")
            .arg(&self.tls_dir)
            .arg("--identity")
            .arg(&self.identity)
            .args(args)
            .env_remove("FLOTILLA_OUTPUT")
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(Error::io(format!("running flotilla {}", args.join(" "))))?;
        Ok(Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
