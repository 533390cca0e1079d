//! Command-line arguments (clap derive) and what each command does.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use flotilla_proto::telemetry;

use crate::error::Error;
use crate::local::{self, MigrateOptions, ProgressUi};
use crate::metrics::AgentMetrics;
use crate::model;
use crate::steps::drain::{self, OnBlocked};
use crate::steps::surge_scale::Surge;
use crate::steps::{parse_duration, postflight, rollback, NoProgress, ProgressSink, Step, StepError};
use crate::uplink::{self, TlsIdentity, UplinkConfig, UplinkError, Uri};

/// The Flotilla agent: the in-cluster half of Flotilla's EKS migrations and upgrades.
///
/// Without a command it runs the agent: dial the coordinator over mTLS, report the cluster's
/// inventory and run the steps the coordinator sends. Every flag can also be set through the
/// `FLOTILLA_*` environment variable named in its help.
#[derive(Debug, Parser)]
#[command(name = "flotilla-agent", version, about, subcommand_negates_reqs = true)]
pub struct Args {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `flotilla_agent=debug`
    /// [default: `info` for the agent, `warn` for `local` commands].
    #[arg(long, env = "FLOTILLA_LOG", global = true)]
    pub log: Option<String>,
    /// Log line format.
    #[arg(
        long,
        env = "FLOTILLA_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// The agent's connection to the coordinator (when no command is given).
    #[command(flatten)]
    pub agent: AgentArgs,
    /// A command instead of running the agent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with span fields (cluster, operation, step, attempt).
    Json,
}

impl From<LogFormat> for telemetry::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => telemetry::LogFormat::Text,
            LogFormat::Json => telemetry::LogFormat::Json,
        }
    }
}

/// Flags of the agent itself (`flotilla-agent --coordinator URL --cluster NAME --tls-dir D`).
#[derive(Debug, Clone, ClapArgs)]
pub struct AgentArgs {
    /// The coordinator's agent gateway, e.g. https://flotilla.example.com:8443.
    #[arg(long, env = "FLOTILLA_COORDINATOR", required = true, value_parser = coordinator_url)]
    pub coordinator: Option<Uri>,
    /// This cluster's name: the one the agent certificate was issued for.
    #[arg(long, env = "FLOTILLA_CLUSTER", required = true)]
    pub cluster: Option<String>,
    /// Directory holding ca.pem, agent-CLUSTER.pem and agent-CLUSTER-key.pem.
    #[arg(long, env = "FLOTILLA_TLS_DIR", required = true)]
    pub tls_dir: Option<PathBuf>,
    /// Kubeconfig file [default: the in-cluster service account, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, env = "FLOTILLA_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Heartbeat interval.
    #[arg(long, env = "FLOTILLA_HEARTBEAT", default_value = "10s", value_parser = duration)]
    pub heartbeat: Duration,
    /// The name the coordinator's certificate carries [default: the URL's host].
    #[arg(long, env = "FLOTILLA_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 0.0.0.0:9090 [default: not served].
    #[arg(long, env = "FLOTILLA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run steps directly against a cluster from a kubeconfig, without a coordinator.
    #[command(subcommand)]
    Local(LocalCommand),
}

/// `local` commands.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Move every workload from a self-managed node group to a managed one, without downtime:
    /// WaitNodesReady, Taint, SurgeScale, VerifyReady, Drain, RestoreScale.
    Migrate(MigrateArgs),
    /// Only the Drain step: cordon a node group and evict its pods (PDBs paced, nodes in parallel).
    Drain(DrainArgs),
    /// Undo a migration aborted before its drain ended: untaint, uncordon, restore scale.
    Rollback(RollbackArgs),
    /// Report versions, node groups, Deployments and PDBs that allow no disruption.
    Inventory(CommonArgs),
    /// Check every kubelet is at a minor and every Deployment is available.
    Postflight(PostflightArgs),
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Progress bars and a human summary.
    Text,
    /// One JSON document on stdout, no bars.
    Json,
}

/// Connection and output flags every `local` command takes.
#[derive(Debug, Clone, ClapArgs)]
pub struct CommonArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Output,
}

/// The message of a parameter error (clap already names the flag).
fn message(e: StepError) -> String {
    match e {
        StepError::InvalidParameter { message, .. } => message,
        other => other.to_string(),
    }
}

fn coordinator_url(s: &str) -> Result<Uri, String> {
    uplink::parse_coordinator(s).map_err(|e| match e {
        UplinkError::InvalidUrl { message, .. } => format!("`{s}`: {message}"),
        other => other.to_string(),
    })
}

fn surge(s: &str) -> Result<Surge, String> {
    s.parse().map_err(message)
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration("duration", s).map_err(message)
}

fn on_blocked(s: &str) -> Result<OnBlocked, String> {
    s.parse().map_err(message)
}

/// `local migrate` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct MigrateArgs {
    /// The self-managed node group to leave (label alpha.eksctl.io/nodegroup-name).
    #[arg(long)]
    pub from: String,
    /// The managed node group to move to (label eks.amazonaws.com/nodegroup).
    #[arg(long)]
    pub to: String,
    /// Extra replicas per Deployment during the move: a share (100%) or a count (2).
    #[arg(long, default_value = "100%", value_parser = surge)]
    pub surge: Surge,
    /// Nodes drained at once.
    #[arg(long, default_value_t = 5)]
    pub drain_concurrency: usize,
    /// How long one node may take to drain.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub node_timeout: Duration,
    /// Pods a PodDisruptionBudget keeps blocking: fail, force-after=DURATION, or skip-node.
    #[arg(long, default_value = "fail", value_parser = on_blocked)]
    pub on_blocked: OnBlocked,
    /// Also delete pods no controller manages (as kubectl drain --force).
    #[arg(long)]
    pub force: bool,
    /// Evict pods using emptyDir volumes (their data is lost).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub delete_emptydir_data: bool,
    /// Key of the NoSchedule taint put on the old nodes.
    #[arg(long, default_value = model::DEFAULT_TAINT_KEY)]
    pub taint_key: String,
    /// How many new nodes must be Ready (default: all the group has now).
    #[arg(long)]
    pub min_new_nodes: Option<u32>,
    /// How long to wait for the new nodes to be Ready.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub nodes_ready_timeout: Duration,
    /// How long to wait for the surged Deployments to be available.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub verify_timeout: Duration,
    /// How long scale-in may wait for a PodDisruptionBudget to allow its next step.
    #[arg(long, default_value = "2m", value_parser = duration)]
    pub restore_step_timeout: Duration,
    /// On a failure or interrupt before the drain completes, leave the cluster as it stands
    /// (resume by running the migration again) instead of rolling back.
    #[arg(long)]
    pub no_rollback: bool,
    /// Connection and output.
    #[command(flatten)]
    pub common: CommonArgs,
}

impl MigrateArgs {
    /// The runner's options.
    pub fn options(&self) -> MigrateOptions {
        MigrateOptions {
            surge: self.surge,
            drain_concurrency: self.drain_concurrency,
            node_timeout: self.node_timeout,
            on_blocked: self.on_blocked,
            force: self.force,
            delete_emptydir_data: self.delete_emptydir_data,
            taint_key: self.taint_key.clone(),
            min_new_nodes: self.min_new_nodes,
            nodes_ready_timeout: self.nodes_ready_timeout,
            verify_timeout: self.verify_timeout,
            restore_step_timeout: self.restore_step_timeout,
            rollback: !self.no_rollback,
            ..MigrateOptions::new(&self.from, &self.to)
        }
    }
}

/// `local drain` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct DrainArgs {
    /// The node group to drain.
    #[arg(long)]
    pub from: String,
    /// Nodes drained at once.
    #[arg(long, default_value_t = 5)]
    pub drain_concurrency: usize,
    /// How long one node may take to drain.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub node_timeout: Duration,
    /// Pods a PodDisruptionBudget keeps blocking: fail, force-after=DURATION, or skip-node.
    #[arg(long, default_value = "fail", value_parser = on_blocked)]
    pub on_blocked: OnBlocked,
    /// Also delete pods no controller manages (as kubectl drain --force).
    #[arg(long)]
    pub force: bool,
    /// Evict pods using emptyDir volumes (their data is lost).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub delete_emptydir_data: bool,
    /// Connection and output.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `local rollback` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct RollbackArgs {
    /// The self-managed node group the migration left.
    #[arg(long)]
    pub from: String,
    /// Key of the taint the migration used.
    #[arg(long, default_value = model::DEFAULT_TAINT_KEY)]
    pub taint_key: String,
    /// Connection and output.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `local postflight` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct PostflightArgs {
    /// The minor every kubelet must run, e.g. 1.34.
    #[arg(long)]
    pub minor: String,
    /// Connection and output.
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Serialize)]
struct SingleStep<'a> {
    cluster: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<crate::steps::StepOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<local::ErrorReport>,
}

impl Args {
    /// The log filter: `--log` (or `FLOTILLA_LOG`), else `RUST_LOG`, else `info` for the agent
    /// and `warn` for `local` commands.
    pub fn log_filter(&self) -> String {
        let default = match self.command {
            None => "info",
            Some(_) => "warn",
        };
        telemetry::log_filter(self.log.as_deref(), default)
    }

    /// Runs the command (or the agent); returns the process exit code.
    pub async fn run(self) -> Result<ExitCode, Error> {
        let Args {
            log: _,
            log_format: _,
            agent,
            command,
        } = self;
        let Some(command) = command else {
            agent.run().await?;
            return Ok(ExitCode::SUCCESS);
        };
        match command {
            Command::Local(LocalCommand::Migrate(m)) => {
                let (cluster, name) =
                    local::connect(m.common.kubeconfig.as_deref(), m.common.context.as_deref()).await?;
                let json = m.common.output == Output::Json;
                let ui = ProgressUi::new(json);
                // SIGINT/SIGTERM stops the migration (rolled back unless --no-rollback); a second
                // one stops the rollback too.
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(cancel_on_signal(stop.clone()));
                let from = m.from.clone();
                let second = stop.clone();
                tokio::spawn(async move {
                    second.cancelled().await;
                    if tokio::signal::ctrl_c().await.is_ok() {
                        eprintln!(
                            "interrupted again: stopped; run `flotilla-agent local rollback --from {from}` to finish the rollback"
                        );
                        std::process::exit(130);
                    }
                });
                let report = local::migrate_until(&cluster, &name, &m.options(), &ui, &stop).await;
                ui.finish();
                let mut stdout = std::io::stdout().lock();
                if json {
                    serde_json::to_writer_pretty(&mut stdout, &report).map_err(std::io::Error::other)?;
                    writeln!(stdout)?;
                } else {
                    write!(stdout, "{}", report.render_text())?;
                }
                Ok(ExitCode::from(report.exit_code()))
            }
            Command::Local(LocalCommand::Drain(d)) => {
                let params = drain::Params {
                    concurrency: d.drain_concurrency,
                    node_timeout: d.node_timeout,
                    on_blocked: d.on_blocked,
                    force: d.force,
                    delete_emptydir_data: d.delete_emptydir_data,
                    ..drain::Params::new(&d.from)
                };
                single(Step::Drain(params), &d.common).await
            }
            Command::Local(LocalCommand::Rollback(r)) => {
                let step = Step::Rollback(rollback::Params {
                    group: r.from.clone(),
                    taint_key: r.taint_key.clone(),
                });
                single(step, &r.common).await
            }
            Command::Local(LocalCommand::Inventory(c)) => single(Step::Inventory, &c).await,
            Command::Local(LocalCommand::Postflight(p)) => {
                single(
                    Step::Postflight(postflight::Params {
                        minor: p.minor.clone(),
                    }),
                    &p.common,
                )
                .await
            }
        }
    }
}

impl AgentArgs {
    /// Runs the agent until SIGINT or SIGTERM. Certificates and URL are checked before the
    /// Kubernetes configuration is read. On a signal, running steps stop at their next await
    /// point without a result (they are idempotent and resumable; the coordinator runs the
    /// attempt again once an agent is back) and the session is closed.
    pub async fn run(self) -> Result<(), Error> {
        let AgentArgs {
            coordinator,
            cluster,
            tls_dir,
            kubeconfig,
            heartbeat,
            tls_server_name,
            metrics_listen,
        } = self;
        let required = |field: &'static str| UplinkError::InvalidSetting {
            field,
            message: "required; pass it or set its FLOTILLA_* variable".into(),
        };
        let coordinator = coordinator.ok_or_else(|| required("--coordinator"))?;
        let cluster = cluster.ok_or_else(|| required("--cluster"))?;
        let tls_dir = tls_dir.ok_or_else(|| required("--tls-dir"))?;
        let tls = TlsIdentity::from_dir(&tls_dir, &cluster)?;
        let source = tls_dir.display().to_string();
        tls.check(&cluster, &source)?;
        let kube = kube_client(kubeconfig.as_deref()).await?;
        let metrics = AgentMetrics::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = match metrics_listen {
            Some(addr) => {
                Some(telemetry::serve_metrics(addr, metrics.registry().clone(), shutdown.clone()).await?)
            }
            None => None,
        };
        let config = UplinkConfig {
            heartbeat,
            server_name: tls_server_name,
            tls_source: source,
            metrics,
            ..UplinkConfig::new(coordinator, cluster, tls, kube)
        };
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let result = uplink::run(config, shutdown.clone()).await;
        shutdown.cancel();
        if let Some(server) = server {
            server.stopped().await;
        }
        result?;
        Ok(())
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the agent");
            None
        }
    };
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot watch SIGINT");
                return;
            }
            tracing::info!(signal = "SIGINT", "shutting down");
        }
        _ = terminated => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
    token.cancel();
}

/// The agent's Kubernetes client: `--kubeconfig` if given, else the in-cluster service account,
/// else the usual kubeconfig search. Built with `default_retry = false` (the steps pace and
/// retry their own calls).
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, Error> {
    let mut config = match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
                path: shown.clone(),
                message: format!("{e}; check --kubeconfig names a readable kubeconfig"),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| Error::Kubeconfig {
                    path: shown,
                    message: e.to_string(),
                })?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => kube::Config::infer().await.map_err(|e| Error::Kubeconfig {
                path: "default".into(),
                message: format!(
                    "not running in a pod ({in_cluster}) and no kubeconfig found ({e}); pass --kubeconfig FILE"
                ),
            })?,
        },
    };
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

async fn single(step: Step, common: &CommonArgs) -> Result<ExitCode, Error> {
    let json = common.output == Output::Json;
    if let Err(e) = step.validate() {
        return print_single("-", Err(e), json);
    }
    let (cluster, name) = local::connect(common.kubeconfig.as_deref(), common.context.as_deref()).await?;
    let ui = ProgressUi::new(json);
    let sink: &dyn ProgressSink = if json { &NoProgress } else { &ui };
    let result = step.run(&cluster, &name, sink).await;
    ui.finish();
    print_single(&name, result, json)
}

fn print_single(
    name: &str,
    result: Result<crate::steps::StepOutput, StepError>,
    json: bool,
) -> Result<ExitCode, Error> {
    let mut stdout = std::io::stdout().lock();
    let code = match &result {
        Ok(crate::steps::StepOutput::Drain(d)) if !d.skipped.is_empty() => 3,
        Ok(_) => 0,
        Err(StepError::InvalidParameter { .. } | StepError::NodeGroupNotFound { .. }) => 2,
        Err(_) => 1,
    };
    let doc = match result {
        Ok(output) => SingleStep {
            cluster: name,
            ok: true,
            output: Some(output),
            error: None,
        },
        Err(e) => SingleStep {
            cluster: name,
            ok: false,
            output: None,
            error: Some(e.into()),
        },
    };
    if json || doc.ok {
        serde_json::to_writer_pretty(&mut stdout, &doc).map_err(std::io::Error::other)?;
        writeln!(stdout)?;
    } else if let Some(e) = &doc.error {
        writeln!(stdout, "error [{}]: {}", e.code, e.message)?;
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_flags_parse_with_defaults() {
        let a = Args::try_parse_from([
            "flotilla-agent",
            "local",
            "migrate",
            "--from",
            "ng-old",
            "--to",
            "ng-new",
        ])
        .expect("parse");
        let Some(Command::Local(LocalCommand::Migrate(m))) = a.command else {
            panic!("migrate")
        };
        let o = m.options();
        assert_eq!(o, MigrateOptions::new("ng-old", "ng-new"));
        let a = Args::try_parse_from([
            "flotilla-agent",
            "local",
            "migrate",
            "--from",
            "a",
            "--to",
            "b",
            "--surge",
            "50%",
            "--drain-concurrency",
            "3",
            "--node-timeout",
            "2m",
            "--on-blocked",
            "force-after=30s",
            "--force",
            "--no-rollback",
            "-o",
            "json",
        ])
        .expect("parse");
        let Some(Command::Local(LocalCommand::Migrate(m))) = a.command else {
            panic!("migrate")
        };
        assert!(!m.options().rollback);
        assert_eq!(m.surge, Surge::Percent(50));
        assert_eq!(m.on_blocked, OnBlocked::ForceAfter(Duration::from_secs(30)));
        assert_eq!(m.node_timeout, Duration::from_secs(120));
        assert!(m.force);
        assert_eq!(m.common.output, Output::Json);
    }

    #[test]
    fn metrics_listen_takes_a_socket_address() {
        let base = [
            "flotilla-agent",
            "--coordinator",
            "https://c:1",
            "--cluster",
            "a",
            "--tls-dir",
            "d",
        ];
        let a = Args::try_parse_from(base).expect("parse");
        assert_eq!(a.agent.metrics_listen, None, "off unless asked");
        let a = Args::try_parse_from(base.iter().copied().chain(["--metrics-listen", "0.0.0.0:9090"]))
            .expect("parse");
        assert_eq!(
            a.agent.metrics_listen,
            Some("0.0.0.0:9090".parse().expect("addr"))
        );
        let err = Args::try_parse_from(base.iter().copied().chain(["--metrics-listen", "9090"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--metrics-listen"), "{err}");
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_fix() {
        let err = Args::try_parse_from([
            "flotilla-agent",
            "local",
            "migrate",
            "--from",
            "a",
            "--to",
            "b",
            "--on-blocked",
            "panic",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--on-blocked") && err.contains("force-after=DURATION"),
            "{err}"
        );
        let err = Args::try_parse_from([
            "flotilla-agent",
            "local",
            "migrate",
            "--from",
            "a",
            "--to",
            "b",
            "--node-timeout",
            "ten",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--node-timeout") && err.contains("10m"), "{err}");
        let err = Args::try_parse_from([
            "flotilla-agent",
            "local",
            "migrate",
            "--from",
            "a",
            "--to",
            "b",
            "--surge",
            "0%",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--surge"), "{err}");
        assert!(Args::try_parse_from(["flotilla-agent", "local", "migrate", "--from", "a"]).is_err());
    }
}
