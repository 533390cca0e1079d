//! The coordinator as a process: its CA made with `flotilla-coordinator ca init | issue`, then
//! `flotilla-coordinator serve` started (it prints `flotilla-coordinator listening on ADDR`),
//! SIGKILLed, and restarted on the same address and data directory; and a Fleet gRPC client over
//! mTLS as one of the CA's operator identities.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_proto::fleet::v1::fleet_client::FleetClient;
use tokio::process::Command;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::bins::bins;
use crate::process::{Proc, Stream};
use crate::{Error, Result};

/// The operator identity with the `operator` role every harness CA has.
pub const OPERATOR: &str = "alice";
/// The identity with the `viewer` role.
pub const VIEWER: &str = "victor";

/// A CA directory made by the coordinator binary: `ca.pem`, `coordinator.pem`, an agent
/// certificate per cluster, and the operator identities [`OPERATOR`] and [`VIEWER`].
#[derive(Debug, Clone)]
pub struct Pki {
    /// The directory (`--tls-dir` for all three programs).
    pub dir: PathBuf,
}

impl Pki {
    /// Runs `ca init` and the `ca issue`s into `dir`.
    pub async fn create(dir: &Path, agents: &[&str]) -> Result<Pki> {
        let run = |args: Vec<String>| async move {
            let out = Command::new(&bins()?.coordinator)
                .args(["ca"])
                .args(&args)
                .output()
                .await
                .map_err(Error::io("running flotilla-coordinator ca"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(Error::Process {
                    process: format!("flotilla-coordinator ca {}", args.join(" ")),
                    what: format!("failed ({})", out.status),
                    tail: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
        };
        let d = dir.display().to_string();
        run(vec!["init".into(), "--dir".into(), d.clone()]).await?;
        for (name, role) in [(OPERATOR, "operator"), (VIEWER, "viewer")] {
            run(vec![
                "issue".into(),
                "--dir".into(),
                d.clone(),
                "--operator".into(),
                name.into(),
                "--role".into(),
                role.into(),
            ])
            .await?;
        }
        for a in agents {
            run(vec![
                "issue".into(),
                "--dir".into(),
                d.clone(),
                "--agent".into(),
                a.to_string(),
            ])
            .await?;
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
        })
    }
}

/// How to run `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `--tls-dir`.
    pub tls_dir: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--clusters`.
    pub clusters: PathBuf,
    /// `--heartbeat-seconds`.
    pub heartbeat_seconds: u64,
    /// Where logs go (`coordinator.log`).
    pub log_dir: PathBuf,
    /// The log filter (`RUST_LOG`).
    pub log_filter: String,
    /// Extra `serve` flags (e.g. `--metrics-listen 127.0.0.1:0`).
    pub extra_args: Vec<String>,
    /// Extra environment variables (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub env: Vec<(String, String)>,
}

/// A running `flotilla-coordinator serve` (JSON logs on stderr).
#[derive(Debug)]
pub struct CoordinatorProc {
    /// The process.
    pub proc: Proc,
    /// The address it listens on (kept across restarts).
    pub addr: SocketAddr,
    config: ServeConfig,
    starts: u32,
}

impl CoordinatorProc {
    /// Starts `serve --listen 127.0.0.1:0` and waits for the address it prints.
    pub async fn start(config: ServeConfig) -> Result<CoordinatorProc> {
        let (proc, addr) = serve(&config, "127.0.0.1:0".parse().expect("address"), 0).await?;
        Ok(CoordinatorProc {
            proc,
            addr,
            config,
            starts: 1,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// SIGKILL: no shutdown of any kind.
    pub async fn kill(&mut self) -> Result<()> {
        self.proc.kill().await
    }

    /// Starts it again on the same address and data directory (after [`CoordinatorProc::kill`]);
    /// the old process's lines stay in its log file.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.kill().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match serve(&self.config, self.addr, self.starts).await {
                Ok((proc, _)) => {
                    self.proc = proc;
                    self.starts += 1;
                    return Ok(());
                }
                // The port may still be held for a moment; anything else is final.
                Err(e) if tokio::time::Instant::now() < deadline && e.to_string().contains("in use") => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A Fleet client as `identity` (a name in the CA directory, e.g. [`OPERATOR`]).
    pub async fn fleet(&self, identity: &str) -> Result<FleetClient<Channel>> {
        let channel = channel(self.addr, &self.config.tls_dir, &format!("operator-{identity}")).await?;
        Ok(FleetClient::new(channel).max_decoding_message_size(usize::MAX))
    }
}

async fn serve(config: &ServeConfig, listen: SocketAddr, starts: u32) -> Result<(Proc, SocketAddr)> {
    let mut cmd = Command::new(&bins()?.coordinator);
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--data-dir")
        .arg(&config.data_dir)
        .arg("--tls-dir")
        .arg(&config.tls_dir)
        .arg("--clusters")
        .arg(&config.clusters)
        .arg("--heartbeat-seconds")
        .arg(config.heartbeat_seconds.to_string())
        .args(["--log-format", "json"])
        .args(&config.extra_args)
        .env("RUST_LOG", &config.log_filter)
        // The standard credential chain finds these; the clusters file points at the simulator.
        .env("AWS_ACCESS_KEY_ID", "AKIDFLOTILLAE2E")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .envs(config.env.iter().map(|(k, v)| (k, v)));
    let name = if starts == 0 {
        "coordinator".to_string()
    } else {
        format!("coordinator-{}", starts + 1)
    };
    let mut proc = Proc::spawn(&name, cmd, &config.log_dir)?;
    const PREFIX: &str = "flotilla-coordinator listening on ";
    let line = proc
        .wait_line(
            Stream::Stdout,
            "the listening address",
            Duration::from_secs(600),
            |l| l.starts_with(PREFIX),
        )
        .await?;
    let addr = line[PREFIX.len()..].trim().parse().map_err(|e| Error::Parse {
        what: "the coordinator's listening line".into(),
        detail: format!("{line:?}: {e}"),
    })?;
    Ok((proc, addr))
}

/// An mTLS channel to the coordinator at `addr` as `<tls_dir>/<stem>.pem`, trusting
/// `<tls_dir>/ca.pem`; connected before it is returned.
pub async fn channel(addr: SocketAddr, tls_dir: &Path, stem: &str) -> Result<Channel> {
    let read = |name: String| {
        let p = tls_dir.join(name);
        std::fs::read_to_string(&p).map_err(Error::io(format!("reading {}", p.display())))
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())?))
        .identity(Identity::from_pem(
            read(format!("{stem}.pem"))?,
            read(format!("{stem}-key.pem"))?,
        ))
        .domain_name("localhost");
    let err = |e: tonic::transport::Error| Error::Client {
        what: format!("gRPC channel to {addr} as {stem}"),
        detail: format!("{e:?}"),
    };
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(err)?
        .tls_config(tls)
        .map_err(err)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(err)
}
