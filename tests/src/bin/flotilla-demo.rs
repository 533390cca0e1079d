//! `flotilla-demo`: the README's first command. A simulated EKS fleet, a coordinator and one agent
//! per cluster in this process; a migration rollout and an upgrade rollout to 1.35 in three
//! stages, shown live; a summary per cluster. Exit codes: 0 all good, 1 the summary names a
//! problem, 2 bad arguments, 3 the demo could not run, 130 interrupted.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use flotilla_coordinator::cli::{Io, LiveTarget};
use flotilla_tests::demo::{self, Demo, DemoOptions};

/// How the summary is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables for people; progress on stdout too.
    Table,
    /// The summary as JSON on stdout; progress on stderr.
    Json,
}

/// Runs Flotilla end to end on a simulated fleet: migrate every cluster's self-managed node group
/// to an EKS managed one, then upgrade Kubernetes 1.33 → 1.35, in stages dev → staging → prod.
#[derive(Debug, Parser)]
#[command(name = "flotilla-demo", version)]
struct Args {
    /// Simulated clusters (1 to 1000), a third each labelled env=dev, env=staging, env=prod.
    #[arg(long, value_name = "N", default_value_t = demo::DEFAULT_CLUSTERS as u64,
          value_parser = clap::value_parser!(u64).range(1..=demo::MAX_CLUSTERS as u64))]
    clusters: u64,
    /// `table` for people, or `json`: the summary as JSON on stdout, progress on stderr.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Leave the fleet, coordinator and agents running after the summary (until Ctrl-C) and
    /// print how to point the `flotilla` CLI, kubectl and the AWS CLI at them.
    #[arg(long)]
    keep: bool,
    /// Multiplies the simulator's delays (pods, nodes, EKS updates): 0.5 runs twice as fast, 4
    /// slower (0.1 to 100).
    #[arg(long, value_name = "FACTOR", default_value_t = demo::DEFAULT_TIME_SCALE)]
    time_scale: f64,
    /// Soak after each stage but the last, e.g. `3s`, `1m`, `0s`.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_soak)]
    soak: Duration,
    /// Keep the CA, data dir, kubeconfigs and rollout specs in DIR (default: a temporary
    /// directory removed at the end).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Log filter for stderr (`warn`, `info`, `flotilla_coordinator=debug`, …); RUST_LOG also works.
    #[arg(long, value_name = "FILTER", env = "RUST_LOG", default_value = "error")]
    log: String,
}

fn parse_soak(s: &str) -> Result<Duration, String> {
    if matches!(s.trim(), "0" | "0s") {
        return Ok(Duration::ZERO);
    }
    let d = flotilla_coordinator::cli::spec::parse_duration(s)?;
    Ok(Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        let _ = writeln!(std::io::stderr(), "--log {:?}: {e}; using `error`", args.log);
        tracing_subscriber::EnvFilter::new("error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flotilla-demo: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flotilla-demo: {e:#}");
            ExitCode::from(3)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = DemoOptions {
        clusters: args.clusters as usize,
        time_scale: args.time_scale,
        soak: args.soak,
        work_dir: args.dir.clone(),
    };
    if let Err(e) = opts.validate() {
        let _ = writeln!(std::io::stderr(), "flotilla-demo: {e}");
        return Ok(ExitCode::from(2));
    }
    // Progress goes where the summary does not: stdout for tables, stderr next to JSON.
    let mut io = match args.output {
        Output::Table => Io {
            live: std::io::stdout().is_terminal(),
            live_target: LiveTarget::Stdout,
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
        },
        Output::Json => Io {
            live: std::io::stderr().is_terminal(),
            live_target: LiveTarget::Stderr,
            out: Box::new(std::io::stderr()),
            err: Box::new(std::io::stderr()),
        },
    };

    // Demo errors print as themselves: their messages already carry their causes.
    let mut demo = tokio::select! {
        started = Demo::start(opts, &mut io) => match started {
            Ok(demo) => demo,
            Err(e) => {
                let _ = writeln!(io.err, "flotilla-demo: starting the demo: {e}");
                return Ok(ExitCode::from(3));
            }
        },
        _ = tokio::signal::ctrl_c() => {
            let _ = writeln!(io.err, "interrupted while starting");
            return Ok(ExitCode::from(130));
        }
    };
    let result = tokio::select! {
        r = demo.run(&mut io) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let summary = match result {
        Some(Ok(summary)) => summary,
        Some(Err(e)) => {
            let _ = writeln!(io.err, "flotilla-demo: running the rollouts: {e}");
            demo.shutdown().await;
            return Ok(ExitCode::from(3));
        }
        None => {
            let _ = writeln!(
                io.err,
                "\ninterrupted; stopping the agents, the coordinator and the fleet"
            );
            demo.shutdown().await;
            return Ok(ExitCode::from(130));
        }
    };

    let mut stdout = std::io::stdout();
    match args.output {
        Output::Table => {
            writeln!(stdout, "\n== summary ==")?;
            write!(stdout, "{}", summary.table())?;
        }
        Output::Json => {
            writeln!(stdout, "{}", serde_json::to_string_pretty(&summary)?)?;
        }
    }
    stdout.flush()?;

    if args.keep {
        write!(io.out, "\n{}", demo.keep_hint())?;
        io.out.flush()?;
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        writeln!(io.err, "\nstopping the agents, the coordinator and the fleet")?;
    }
    demo.shutdown().await;
    Ok(if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
