//! The agent as a process: `flotilla-agent --coordinator URL --cluster NAME --tls-dir D
//! --kubeconfig FILE`, logging JSON lines (with the step's span fields) so tests can tell which
//! step it started, finished or re-sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::bins::bins;
use crate::process::{Proc, Stream};
use crate::Result;

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `--coordinator` (`https://127.0.0.1:PORT`).
    pub coordinator: String,
    /// `--cluster`.
    pub cluster: String,
    /// `--tls-dir`.
    pub tls_dir: PathBuf,
    /// `--kubeconfig`.
    pub kubeconfig: PathBuf,
    /// Where logs go (`agent.log`, `agent-2.log`, …).
    pub log_dir: PathBuf,
    /// Extra flags (e.g. `--metrics-listen 127.0.0.1:0`).
    pub extra_args: Vec<String>,
    /// Extra environment variables (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub env: Vec<(String, String)>,
}

/// A running agent.
#[derive(Debug)]
pub struct AgentProc {
    /// The process.
    pub proc: Proc,
}

impl AgentProc {
    /// Starts the agent (the `n`th start names its log `agent-n`), without waiting.
    pub fn start(config: &AgentConfig, n: u32) -> Result<AgentProc> {
        let name = if n <= 1 {
            "agent".to_string()
        } else {
            format!("agent-{n}")
        };
        AgentProc::start_named(config, &name)
    }

    /// Starts the agent with its log named `name` (`<log_dir>/<name>.log`), without waiting.
    pub fn start_named(config: &AgentConfig, name: &str) -> Result<AgentProc> {
        let mut cmd = Command::new(&bins()?.agent);
        cmd.arg("--coordinator")
            .arg(&config.coordinator)
            .arg("--cluster")
            .arg(&config.cluster)
            .arg("--tls-dir")
            .arg(&config.tls_dir)
            .arg("--kubeconfig")
            .arg(&config.kubeconfig)
            .args(["--log", "info", "--log-format", "json"])
            .args(&config.extra_args)
            .envs(config.env.iter().map(|(k, v)| (k, v)));
        Ok(AgentProc {
            proc: Proc::spawn(name, cmd, &config.log_dir)?,
        })
    }

    /// Waits for a log line that `matches` (as parsed JSON), from line index `from` on.
    pub async fn wait_log(
        &mut self,
        from: usize,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<(usize, Value)> {
        let (i, line) = self
            .proc
            .wait_line_from(from, Stream::Stderr, what, timeout, |l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| matches(&v))
            })
            .await?;
        Ok((i, serde_json::from_str(&line).unwrap_or(Value::Null)))
    }

    /// Every JSON log line so far.
    pub fn logs(&self) -> Vec<Value> {
        json_lines(&self.proc)
    }
}

/// The JSON lines of a process's stderr.
pub fn json_lines(proc: &Proc) -> Vec<Value> {
    proc.lines()
        .iter()
        .filter(|l| l.stream == Stream::Stderr)
        .filter_map(|l| serde_json::from_str(&l.text).ok())
        .collect()
}

/// A JSON log line's message.
pub fn message(line: &Value) -> &str {
    line.pointer("/fields/message")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A field of a JSON log line: the event's own, else the innermost span's that has it.
pub fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(v) = line.get("fields").and_then(|f| f.get(name)) {
        return Some(v);
    }
    if let Some(v) = line.get("span").and_then(|s| s.get(name)) {
        return Some(v);
    }
    line.get("spans")
        .and_then(Value::as_array)
        .and_then(|spans| spans.iter().rev().find_map(|s| s.get(name)))
}

/// A field as text (strings as they are, other values in JSON).
pub fn field_str(line: &Value, name: &str) -> String {
    match field(line, name) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// The kubeconfig path of `cluster` in a simulator `--out` directory.
pub fn kubeconfig(sim_dir: &Path, cluster: &str) -> PathBuf {
    sim_dir.join(format!("kubeconfig-{cluster}.yaml"))
}
