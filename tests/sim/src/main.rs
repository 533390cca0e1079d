//! `flotilla-sim`: serves a simulated EKS fleet on loopback until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;

/// A simulated Amazon EKS fleet for kubectl, kube-rs and Flotilla.
#[derive(Parser)]
#[command(name = "flotilla-sim", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start N clusters, write their kubeconfigs and endpoints.json, print `ready`, serve.
    Serve {
        /// How many clusters (`sim-1` … `sim-N`).
        #[arg(long, default_value_t = 3)]
        clusters: usize,
        /// Folder for `kubeconfig-<cluster>.yaml`, `ca.pem` and `endpoints.json`.
        #[arg(long)]
        out: PathBuf,
        /// API listener, loopback only (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Statistics listener (plain HTTP).
        #[arg(long, default_value = "127.0.0.1:0")]
        stats_listen: SocketAddr,
        /// Simulated EKS and Auto Scaling listener (plain HTTP; SDKs take it as `endpoint_url`).
        #[arg(long, default_value = "127.0.0.1:0")]
        aws_listen: SocketAddr,
        /// Multiplies every delay of the scenario (its `timing.timeScale`, for every cluster);
        /// 0.1 runs ten times faster.
        #[arg(long)]
        time_scale: Option<f64>,
        /// A YAML scenario (default: the built-in one; see tests/sim/scenarios/example.yaml).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Past changes kept per kind and cluster for resuming watches.
        #[arg(long, default_value_t = 1000)]
        watch_history: usize,
        /// Log filter (RUST_LOG syntax).
        #[arg(long, env = "RUST_LOG", default_value = "info")]
        log: String,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(Args { command }: Args) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            clusters,
            out,
            listen,
            stats_listen,
            aws_listen,
            time_scale,
            scenario,
            watch_history,
            log,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_new(&log).context("--log")?)
                .with_writer(std::io::stderr)
                .init();
            for (flag, addr) in [
                ("--listen", listen),
                ("--stats-listen", stats_listen),
                ("--aws-listen", aws_listen),
            ] {
                anyhow::ensure!(
                    addr.ip().is_loopback(),
                    "{flag} {addr}: the simulator serves on loopback only; use 127.0.0.1:PORT"
                );
            }
            anyhow::ensure!(clusters >= 1, "--clusters {clusters}: give at least 1");
            let mut scenario = match &scenario {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("--scenario {}", path.display()))?;
                    Scenario::from_yaml(&text, &path.display().to_string())?
                }
                None => Scenario::default_scenario(),
            };
            if let Some(scale) = time_scale {
                scenario.timing.time_scale = scale;
                for o in scenario.overrides.values_mut() {
                    if let Some(t) = o.timing.as_mut() {
                        t.time_scale = scale;
                    }
                }
                scenario.validate().context("--time-scale")?;
            }
            let fleet = Fleet::start_scenario(
                &scenario,
                clusters,
                FleetOptions {
                    listen,
                    stats_listen,
                    watch_history,
                    aws_listen,
                },
            )
            .await?;
            let endpoints = fleet.write_files(&out)?;
            tracing::info!(endpoints = %endpoints.display(), server = %fleet.server_url, stats = %fleet.stats_url, aws = fleet.aws_url.as_deref().unwrap_or(""), "serving");
            #[allow(clippy::print_stdout)]
            {
                println!("ready");
            }
            wait_for_signal().await?;
            fleet.shutdown().await;
            Ok(())
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("SIGINT handler")?,
        _ = term.recv() => {}
    }
    Ok(())
}
