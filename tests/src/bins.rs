//! The workspace's binaries for cross-process tests: built once per test process with
//! `cargo build --bins` into the same target directory and profile as the running test or bench
//! (so an up-to-date build costs a second), or taken as they are from `FLOTILLA_BIN_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{Error, Result};

/// The packages whose binaries the tests run.
const PACKAGES: [&str; 3] = ["flotilla-sim", "flotilla-coordinator", "flotilla-agent"];

/// Paths of the four binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `flotilla-sim`: the simulated EKS fleet.
    pub sim: PathBuf,
    /// `flotilla-coordinator`: `serve`, `ca init`, `ca issue`.
    pub coordinator: PathBuf,
    /// `flotilla-agent`.
    pub agent: PathBuf,
    /// `flotilla`: the operator CLI.
    pub cli: PathBuf,
}

static BINS: OnceLock<std::result::Result<Bins, String>> = OnceLock::new();

/// The binaries, built on first use (once per process; cargo's own lock orders concurrent test
/// processes). `FLOTILLA_BIN_DIR=DIR` skips the build and uses `DIR/<binary>`.
pub fn bins() -> Result<&'static Bins> {
    BINS.get_or_init(|| locate().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Build {
            command: "cargo build --bins".into(),
            output: e.clone(),
        })
}

fn locate() -> Result<Bins> {
    let dir = match std::env::var_os("FLOTILLA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => build()?,
    };
    let bin = |name: &str| {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::MissingBinary(p))
        }
    };
    Ok(Bins {
        sim: bin("flotilla-sim")?,
        coordinator: bin("flotilla-coordinator")?,
        agent: bin("flotilla-agent")?,
        cli: bin("flotilla")?,
    })
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds the binaries next to the running executable: a test or bench binary lives in
/// `<target>/<profile>/deps/`, the binaries go to `<target>/<profile>/`.
fn build() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(Error::io("finding the running test binary"))?;
    let profile_dir = exe
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .ok_or_else(|| Error::Parse {
            what: "the test binary's path".into(),
            detail: format!(
                "{} is not in <target>/<profile>/deps; set FLOTILLA_BIN_DIR to the binaries' directory",
                exe.display()
            ),
        })?
        .to_path_buf();
    let target_dir = profile_dir.parent().unwrap_or(&profile_dir).to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root()).arg("build").arg("--bins");
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--target-dir").arg(&target_dir);
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(Error::io(format!("running {command}")))?;
    if !out.status.success() {
        return Err(Error::Build {
            command,
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(profile_dir)
}
