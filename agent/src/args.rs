//! Command-line arguments (clap derive); [`crate::cli`] runs them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

use flotilla_proto::telemetry;

use crate::local::MigrateOptions;
use crate::model;
use crate::steps::drain::OnBlocked;
use crate::steps::surge_scale::Surge;
use crate::steps::{parse_duration, StepError};
use crate::uplink::{self, UplinkError, Uri};

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
