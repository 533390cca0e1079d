//! One program run as a child process: stdout and stderr captured line by line (kept in memory
//! and appended to `<log dir>/<name>.log`), waited on for a line, killed with SIGKILL or stopped
//! with SIGTERM. Dropping a [`Proc`] kills the child, so a failing test leaves nothing running.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::{Error, Result};

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error (where the programs log).
    Stderr,
}

/// One captured line.
#[derive(Debug, Clone)]
pub struct Line {
    /// Where it came from.
    pub stream: Stream,
    /// The text, without the newline.
    pub text: String,
}

/// A running child process and its output so far.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    pid: u32,
    lines: Arc<Mutex<Vec<Line>>>,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` (stdin closed, output captured) as `name`; the log goes to
    /// `<log_dir>/<name>.log` (appended, so restarts under one name share a file).
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Proc> {
        std::fs::create_dir_all(log_dir).map_err(Error::io(format!("creating {}", log_dir.display())))?;
        let log = log_dir.join(format!("{name}.log"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(Error::io(format!("starting {name} ({cmd:?})")))?;
        let pid = child.id().unwrap_or_default();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let file = Arc::new(Mutex::new(file));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(capture(out, Stream::Stdout, lines.clone(), file.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(capture(err, Stream::Stderr, lines.clone(), file));
        }
        Ok(Proc {
            name: name.to_string(),
            child,
            pid,
            lines,
            log,
            exited: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its output is logged.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many lines so far (a mark for [`Proc::wait_line_from`]).
    pub fn line_count(&self) -> usize {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An error about this process, with its last lines.
    pub fn error(&self, what: impl Into<String>) -> Error {
        Error::Process {
            process: format!("{} (pid {}, log {})", self.name, self.pid, self.log.display()),
            what: what.into(),
            tail: self.tail(40),
        }
    }

    /// Whether it has exited (and how).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits for a line of `stream` that `matches`, among every line so far and those to come;
    /// fails when the process exits first or after `timeout`.
    pub async fn wait_line(
        &mut self,
        stream: Stream,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait_line_from(0, stream, what, timeout, matches)
            .await
            .map(|(_, l)| l)
    }

    /// As [`Proc::wait_line`], among lines from index `from` on; returns the index and the line.
    pub async fn wait_line_from(
        &mut self,
        from: usize,
        stream: Stream,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<(usize, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next = from;
        loop {
            {
                let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
                for (i, l) in lines.iter().enumerate().skip(next) {
                    if l.stream == stream && matches(&l.text) {
                        return Ok((i, l.text.clone()));
                    }
                }
                next = next.max(lines.len());
            }
            if let Some(status) = self.try_exited() {
                // Let the readers take the last lines, then look once more.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let lines = self.lines();
                if let Some((i, l)) = lines
                    .iter()
                    .enumerate()
                    .skip(next)
                    .find(|(_, l)| l.stream == stream && matches(&l.text))
                {
                    return Ok((i, l.text.clone()));
                }
                return Err(self.error(format!("exited ({status}) before {what}")));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.error(format!("no {what} within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then reap.
    pub async fn kill(&mut self) -> Result<()> {
        if self.try_exited().is_none() {
            self.child
                .kill()
                .await
                .map_err(Error::io(format!("killing {} (pid {})", self.name, self.pid)))?;
            self.exited = self.child.try_wait().ok().flatten();
        }
        Ok(())
    }

    /// SIGTERM; SIGKILL if it has not exited after `grace`. Returns how it exited.
    pub async fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.try_exited() {
            return Ok(Some(s));
        }
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map_err(Error::io(format!(
                "sending SIGTERM to {} (pid {})",
                self.name, self.pid
            )))?;
        if sent.success() {
            if let Ok(Ok(status)) = tokio::time::timeout(grace, self.child.wait()).await {
                self.exited = Some(status);
                return Ok(Some(status));
            }
        }
        self.kill().await?;
        Ok(None)
    }

    /// Waits for the process to exit by itself (bounded by `timeout`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.try_exited() {
            return Ok(s);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exited = Some(status);
                Ok(status)
            }
            Ok(Err(e)) => Err(self.error(format!("waiting for it to exit: {e}"))),
            Err(_) => Err(self.error(format!("still running after {timeout:?}"))),
        }
    }
}

async fn capture(
    out: impl AsyncRead + Unpin,
    stream: Stream,
    lines: Arc<Mutex<Vec<Line>>>,
    file: Arc<Mutex<std::fs::File>>,
) {
    let mut reader = BufReader::new(out).lines();
    while let Ok(Some(text)) = reader.next_line().await {
        {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            let tag = match stream {
                Stream::Stdout => "out",
                Stream::Stderr => "err",
            };
            let _ = writeln!(f, "[{tag}] {text}");
        }
        lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Line { stream, text });
    }
}
