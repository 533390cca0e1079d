//! Command-line arguments of `flotilla-coordinator` and what each subcommand does.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flotilla_coordinator::ca::{self, CreateOptions, Identity, Validity, Written};
use flotilla_coordinator::config::ClustersFile;
use flotilla_coordinator::server::{Coordinator, ServeOptions};
use flotilla_proto::telemetry;

/// The Flotilla coordinator.
#[derive(Debug, Parser)]
#[command(name = "flotilla-coordinator", version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the certificate authority behind mTLS.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Serve the Fleet API and the agents' gateway over mTLS (until SIGINT or SIGTERM).
    Serve(ServeArgs),
}

/// `serve` flags; each also as a FLOTILLA_* environment variable.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, env = "FLOTILLA_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// The store's directory (sled); created if missing.
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    data_dir: PathBuf,
    /// Directory with ca.pem, coordinator.pem and coordinator-key.pem (`ca init`).
    #[arg(long, env = "FLOTILLA_TLS_DIR")]
    tls_dir: PathBuf,
    /// The clusters file (YAML: `clusters: [{name, region, eksClusterName, ...}]`).
    #[arg(long, env = "FLOTILLA_CLUSTERS")]
    clusters: PathBuf,
    /// The agents' heartbeat interval in seconds; a session silent for three is dropped.
    #[arg(long, env = "FLOTILLA_HEARTBEAT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    heartbeat_seconds: u64,
    /// Log line format: `text`, or `json` (one JSON object a line, with the span fields
    /// rollout, cluster, operation, step, attempt).
    #[arg(long, env = "FLOTILLA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Shorthand for `--log-format json`.
    #[arg(long)]
    log_json: bool,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `flotilla_coordinator=debug`
    /// [default: $RUST_LOG, else `info`].
    #[arg(long, env = "FLOTILLA_LOG")]
    log: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 0.0.0.0:9090 [default: not served].
    #[arg(long, env = "FLOTILLA_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// How log lines are written (to stderr); the same names as the agent's `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the enclosing spans' fields.
    Json,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create the CA (ca.pem, ca-key.pem) and the coordinator's server certificate
    /// (coordinator.pem, coordinator-key.pem) in --dir. Never overwrites an existing CA.
    Init {
        /// Directory for the CA and certificates (created with mode 0700 if missing).
        #[arg(long, env = "FLOTILLA_CA_DIR")]
        dir: PathBuf,
        /// Extra DNS name or IP address for the server certificate (repeatable); `localhost` and
        /// `127.0.0.1` are always included.
        #[arg(long = "san", value_name = "HOST")]
        sans: Vec<String>,
        /// Validity of the server certificate, in days.
        #[arg(long, default_value_t = ca::DEFAULT_LEAF_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Validity of the CA certificate, in days.
        #[arg(long, default_value_t = ca::DEFAULT_CA_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        ca_days: u32,
    },
    /// Issue a client certificate for an agent (--agent CLUSTER) or an operator
    /// (--operator NAME --role viewer|operator), signed by the CA in --dir.
    #[command(group(clap::ArgGroup::new("subject").required(true).args(["agent", "operator"])))]
    Issue {
        /// Directory holding the CA; the certificate is written there too.
        #[arg(long, env = "FLOTILLA_CA_DIR")]
        dir: PathBuf,
        /// Issue an agent certificate for this cluster (writes agent-CLUSTER.pem, -key.pem).
        #[arg(long, value_name = "CLUSTER")]
        agent: Option<String>,
        /// Issue an operator certificate for this name (writes operator-NAME.pem, -key.pem).
        #[arg(long, value_name = "NAME", requires = "role")]
        operator: Option<String>,
        /// The operator's role: `viewer` may query, `operator` may also create and steer rollouts.
        #[arg(long, requires = "operator", value_parser = ["viewer", "operator"])]
        role: Option<String>,
        /// Validity of the certificate, in days.
        #[arg(long, default_value_t = ca::DEFAULT_LEAF_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
}

impl Args {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let Self { command } = self;
        match command {
            Command::Serve(args) => serve(args),
            Command::Ca(CaCommand::Init {
                dir,
                sans,
                days,
                ca_days,
            }) => {
                let opts = CreateOptions {
                    sans,
                    ca_validity: Validity::days(ca_days),
                    server_validity: Validity::days(days),
                };
                let (ca_files, server_files) = ca::create(&dir, &opts).context("could not create the CA")?;
                report(&[ca_files, server_files])
            }
            Command::Ca(CaCommand::Issue {
                dir,
                agent,
                operator,
                role,
                days,
            }) => {
                let identity = match (agent, operator) {
                    (Some(cluster), _) => Identity::agent(&cluster)?,
                    (None, Some(name)) => Identity::operator(&name, role.as_deref().unwrap_or_default())?,
                    (None, None) => anyhow::bail!("pass --agent CLUSTER or --operator NAME --role ROLE"),
                };
                let files = ca::issue(&dir, &identity, Validity::days(days))
                    .with_context(|| format!("could not issue a certificate for {}", identity.uri()))?;
                report(&[files])
            }
        }
    }
}

/// Runs the coordinator until SIGINT or SIGTERM, then stops it gracefully.
fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        listen,
        data_dir,
        tls_dir,
        clusters,
        heartbeat_seconds,
        log_format,
        log_json,
        log,
        metrics_listen,
    } = args;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    // The OTLP exporter's channel lives on the runtime.
    let format = if log_json || log_format == LogFormat::Json {
        telemetry::LogFormat::Json
    } else {
        telemetry::LogFormat::Text
    };
    let telemetry = {
        let _rt = runtime.enter();
        telemetry::init(
            "flotilla-coordinator",
            format,
            &telemetry::log_filter(log.as_deref(), "info"),
        )?
    };
    let clusters = ClustersFile::load(&clusters)?;
    let served = runtime.block_on(async move {
        let mut opts = ServeOptions::new(listen, data_dir, tls_dir, clusters);
        opts.heartbeat_interval = Duration::from_secs(heartbeat_seconds);
        let stop_metrics = telemetry::CancellationToken::new();
        if let Some(addr) = metrics_listen {
            telemetry::serve_metrics(addr, opts.metrics.registry().clone(), stop_metrics.clone()).await?;
        }
        let _stop_metrics = stop_metrics.drop_guard();
        let handle = Coordinator::start(opts)
            .await
            .context("could not start the coordinator")?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "flotilla-coordinator listening on {}", handle.local_addr())?;
            out.flush()?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("could not watch SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
        handle.shutdown().await.context("shutting down")
    });
    // Export the spans still buffered (the runtime still drives the exporter's channel).
    telemetry.shutdown();
    served
}

/// Lists the files written, one a line.
fn report(written: &[Written]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for files in written {
        writeln!(out, "wrote {}", files.cert.display())?;
        writeln!(out, "wrote {}", files.key.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn serve_args(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let base = [
            "flotilla-coordinator",
            "serve",
            "--data-dir",
            "d",
            "--tls-dir",
            "t",
            "--clusters",
            "c.yaml",
        ];
        let args = Args::try_parse_from(base.iter().chain(extra))?;
        match args.command {
            Command::Serve(s) => Ok(s),
            Command::Ca(_) => panic!("serve parses as serve"),
        }
    }

    #[test]
    fn log_format_takes_the_agents_names() {
        let s = serve_args(&["--log-format", "json", "--metrics-listen", "127.0.0.1:0"]).expect("parse");
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(!s.log_json);
        assert_eq!(s.metrics_listen, Some("127.0.0.1:0".parse().expect("addr")));
        let s = serve_args(&["--log-json"]).expect("parse");
        assert!(s.log_json, "the shorthand still works");
        let err = serve_args(&["--log-format", "yaml"]).unwrap_err().to_string();
        assert!(
            err.contains("--log-format") && err.contains("text") && err.contains("json"),
            "{err}"
        );
    }
}
