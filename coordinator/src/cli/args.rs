//! The `flotilla` command line (clap derive): global connection and output flags, and one
//! subcommand per Fleet API use.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flotilla_proto::fleet::v1 as pb;

use super::render::Format;
use super::spec;

/// Operate an EKS fleet through the Flotilla coordinator: clusters, migrations, upgrades and
/// staged rollouts.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, propagate_version = true)]
pub struct Cli {
    /// The coordinator, as https://HOST:PORT.
    #[arg(long, global = true, env = "FLOTILLA_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    /// Directory with ca.pem and the identity's operator-NAME.pem and operator-NAME-key.pem.
    #[arg(long, global = true, env = "FLOTILLA_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The operator identity: uses DIR/operator-NAME.pem and DIR/operator-NAME-key.pem.
    #[arg(long, global = true, env = "FLOTILLA_IDENTITY", value_name = "NAME")]
    pub identity: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, env = "FLOTILLA_OUTPUT", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clusters the coordinator knows, with their inventory.
    #[command(subcommand, visible_alias = "cluster")]
    Clusters(ClustersCommand),
    /// Migrate one cluster from a self-managed node group to a new EKS managed node group.
    Migrate(MigrateArgs),
    /// Upgrade one cluster's Kubernetes minor version (control plane, node groups, add-ons).
    Upgrade(UpgradeArgs),
    /// Per-cluster operations (migrations and upgrades).
    #[command(subcommand, visible_alias = "operation", alias = "ops")]
    Operations(OperationsCommand),
    /// Fleet rollouts: one kind of work over many clusters, in staged waves.
    #[command(subcommand, alias = "rollouts")]
    Rollout(RolloutCommand),
}

/// `flotilla clusters ...`
#[derive(Debug, Subcommand)]
pub enum ClustersCommand {
    /// List clusters.
    #[command(visible_alias = "ls")]
    List {
        /// Only clusters whose labels match this selector, e.g. `env=prod,team!=data`.
        #[arg(short = 'l', long = "selector", value_name = "SELECTOR", value_parser = selector)]
        selector: Option<String>,
    },
    /// Show one cluster: version, node groups, agent, current operation.
    Get {
        /// The cluster's name.
        name: String,
    },
}

fn selector(s: &str) -> Result<String, String> {
    spec::check_selector(s).map(|()| s.to_owned())
}

/// How the drain moves pods and what it does when blocked.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// How much to surge each Deployment: a percentage (`100%`) or extra pods (`2`). Default 100%.
    #[arg(long, value_name = "100%|N", value_parser = spec::parse_surge)]
    pub surge: Option<spec::Surge>,
    /// What the drain does with pods a PodDisruptionBudget keeps blocking: `fail` (default),
    /// `force-after=DURATION` or `skip-node`.
    #[arg(long, value_name = "POLICY", value_parser = spec::parse_on_blocked)]
    pub on_blocked: Option<pb::OnBlocked>,
    /// Also evict pods no controller manages (as `kubectl drain --force`).
    #[arg(long)]
    pub force: bool,
    /// Evict pods with emptyDir volumes (their data is lost).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Nodes drained at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub drain_concurrency: Option<u32>,
    /// How long one node may take to drain, e.g. `15m`.
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration)]
    pub node_timeout: Option<prost_types::Duration>,
    /// How long to wait for the new nodes and for the surged Deployments, e.g. `10m`.
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration)]
    pub ready_timeout: Option<prost_types::Duration>,
    /// Taint key put on the old nodes (default `flotilla.io/migrating`).
    #[arg(long, value_name = "KEY")]
    pub taint_key: Option<String>,
    /// If the migration is rolled back (cancelled before the drain ends), also delete the new group.
    #[arg(long)]
    pub delete_nodegroup_on_rollback: bool,
}

/// `flotilla migrate ...`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The cluster.
    pub cluster: String,
    /// The self-managed node group to replace (default: the cluster's only one).
    #[arg(long = "from", value_name = "NODEGROUP")]
    pub from: Option<String>,
    /// The managed node group to create: YAML in EKS CreateNodegroup field names.
    #[arg(long, value_name = "FILE")]
    pub nodegroup_template: PathBuf,
    /// Drain settings.
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Follow the operation until it ends (exit 1 if it fails).
    #[arg(long)]
    pub wait: bool,
    /// Only show the planned steps; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `flotilla upgrade ...`
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The cluster.
    pub cluster: String,
    /// The target minor version: the cluster's minor + 1, e.g. `1.34` (EKS upgrades one minor at
    /// a time; a rollout chains hops, and migrates self-managed groups first when asked).
    #[arg(long, value_name = "VERSION", value_parser = spec::parse_version)]
    pub to: String,
    /// Pass `force` to UpdateNodegroupVersion (managed groups update even past PodDisruptionBudgets).
    #[arg(long)]
    pub force: bool,
    /// Follow the operation until it ends (exit 1 if it fails).
    #[arg(long)]
    pub wait: bool,
    /// Only show the planned steps; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `flotilla operations ...`
#[derive(Debug, Subcommand)]
pub enum OperationsCommand {
    /// Show one operation and its steps.
    Get {
        /// The operation's id.
        id: String,
    },
    /// List operations, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// Only this cluster's.
        #[arg(long, value_name = "CLUSTER")]
        cluster: Option<String>,
        /// Only this rollout's.
        #[arg(long, value_name = "ROLLOUT")]
        rollout: Option<String>,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue from a previous listing's next page token.
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
    },
    /// Follow an operation until it ends (exit 1 if it fails).
    Watch {
        /// The operation's id.
        id: String,
    },
    /// Cancel an operation; before the drain completes it is rolled back.
    Cancel {
        /// The operation's id.
        id: String,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Rollout states, for `rollout list --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Not started.
    Pending,
    /// Running.
    Running,
    /// Waiting at an approval gate.
    WaitingForApproval,
    /// Soaking after a stage.
    Soaking,
    /// Done.
    Succeeded,
    /// Failed.
    Failed,
    /// Paused.
    Paused,
    /// Cancelled.
    Cancelled,
}

impl StateArg {
    /// The wire value.
    pub fn to_proto(self) -> pb::RolloutState {
        use pb::RolloutState as S;
        match self {
            StateArg::Pending => S::Pending,
            StateArg::Running => S::Running,
            StateArg::WaitingForApproval => S::WaitingForApproval,
            StateArg::Soaking => S::Soaking,
            StateArg::Succeeded => S::Succeeded,
            StateArg::Failed => S::Failed,
            StateArg::Paused => S::Paused,
            StateArg::Cancelled => S::Cancelled,
        }
    }
}

/// `flotilla rollout ...`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Create (and start) a rollout from a YAML spec.
    Create {
        /// The rollout spec (YAML).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Create it paused (inspect the selected clusters, then `rollout resume`).
        #[arg(long)]
        paused: bool,
        /// Follow the rollout until it ends (exit 1 if it fails).
        #[arg(long)]
        wait: bool,
    },
    /// Show one rollout: stages, clusters, failures.
    Get {
        /// The rollout's id.
        id: String,
    },
    /// List rollouts, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// Only rollouts in these states (repeatable).
        #[arg(long, value_enum, value_name = "STATE")]
        state: Vec<StateArg>,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue from a previous listing's next page token.
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
    },
    /// Follow a rollout until it ends (exit 1 if it fails).
    Watch {
        /// The rollout's id.
        id: String,
    },
    /// Start no new cluster; running operations finish.
    Pause {
        /// The rollout's id.
        id: String,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Continue a paused rollout.
    Resume {
        /// The rollout's id.
        id: String,
    },
    /// Start no new cluster and cancel running operations.
    Cancel {
        /// The rollout's id.
        id: String,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a stage waiting for approval begin.
    Approve {
        /// The rollout's id.
        id: String,
        /// The stage, by name or index (from 0).
        stage: String,
        /// A note recorded with the approval.
        #[arg(long)]
        comment: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("flotilla").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = parse(&[
            "clusters",
            "list",
            "-l",
            "env=prod",
            "--coordinator",
            "https://c:7443",
            "--tls-dir",
            "/tls",
            "--identity",
            "alice",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.coordinator.as_deref(), Some("https://c:7443"));
        assert_eq!(cli.tls_dir, Some(PathBuf::from("/tls")));
        assert_eq!(cli.identity.as_deref(), Some("alice"));
        assert_eq!(cli.output, Format::Json);
        match cli.command {
            Command::Clusters(ClustersCommand::List { selector }) => {
                assert_eq!(selector.as_deref(), Some("env=prod"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn migrate_flags() {
        let cli = parse(&[
            "migrate",
            "prod-1",
            "--from",
            "ng-old",
            "--nodegroup-template",
            "ng.yaml",
            "--surge",
            "50%",
            "--on-blocked",
            "force-after=10m",
            "--force",
            "--delete-emptydir-data",
            "--drain-concurrency",
            "3",
            "--node-timeout",
            "15m",
            "--ready-timeout",
            "90s",
            "--taint-key",
            "example.com/moving",
            "--delete-nodegroup-on-rollback",
            "--wait",
        ])
        .unwrap();
        let Command::Migrate(m) = cli.command else {
            panic!()
        };
        assert_eq!(m.cluster, "prod-1");
        assert_eq!(m.from.as_deref(), Some("ng-old"));
        assert_eq!(m.drain.surge, Some(spec::Surge::Percent(50)));
        assert!(matches!(
            m.drain.on_blocked.unwrap().policy,
            Some(pb::on_blocked::Policy::ForceAfter(prost_types::Duration {
                seconds: 600,
                ..
            }))
        ));
        assert!(
            m.drain.force && m.drain.delete_emptydir_data && m.drain.delete_nodegroup_on_rollback && m.wait
        );
        assert_eq!(m.drain.drain_concurrency, Some(3));
        assert_eq!(m.drain.node_timeout.unwrap().seconds, 900);
        assert_eq!(m.drain.ready_timeout.unwrap().seconds, 90);
        assert_eq!(m.drain.taint_key.as_deref(), Some("example.com/moving"));
    }

    #[test]
    fn bad_values_are_usage_errors_with_the_fix() {
        let err = parse(&["migrate", "c", "--nodegroup-template", "f", "--surge", "lots"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("write a percentage such as `100%`"),
            "{err}"
        );
        let err = parse(&[
            "migrate",
            "c",
            "--nodegroup-template",
            "f",
            "--on-blocked",
            "wait",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("force-after=DURATION"), "{err}");
        let err = parse(&[
            "migrate",
            "c",
            "--nodegroup-template",
            "f",
            "--node-timeout",
            "15",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("has no unit"), "{err}");
        let err = parse(&["migrate", "c"]).unwrap_err();
        assert!(err.to_string().contains("--nodegroup-template"), "{err}");
        let err = parse(&["upgrade", "c", "--to", "v1.34"]).unwrap_err();
        assert!(err.to_string().contains("write MAJOR.MINOR"), "{err}");
        let err = parse(&["clusters", "list", "-l", "env:prod"]).unwrap_err();
        assert!(err.to_string().contains("has an invalid key"), "{err}");
        let err = parse(&["-o", "xml", "clusters", "list"]).unwrap_err();
        assert!(err.to_string().contains("table, json, yaml"), "{err}");
    }

    #[test]
    fn operations_and_rollout_subcommands() {
        let cli = parse(&["operations", "list", "--cluster", "c1", "--limit", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Operations(OperationsCommand::List { cluster: Some(ref c), limit: Some(5), .. }) if c == "c1"
        ));
        let cli = parse(&["ops", "cancel", "op-1", "--reason", "wrong group"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Operations(OperationsCommand::Cancel { .. })
        ));
        let cli = parse(&["rollout", "create", "-f", "spec.yaml", "--wait"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rollout(RolloutCommand::Create {
                wait: true,
                paused: false,
                ..
            })
        ));
        let cli = parse(&["rollout", "approve", "ro-1", "prod", "--comment", "go"]).unwrap();
        assert!(
            matches!(cli.command, Command::Rollout(RolloutCommand::Approve { ref stage, .. }) if stage == "prod")
        );
        let cli = parse(&[
            "rollout",
            "list",
            "--state",
            "running",
            "--state",
            "waiting-for-approval",
        ])
        .unwrap();
        let Command::Rollout(RolloutCommand::List { state, .. }) = cli.command else {
            panic!()
        };
        assert_eq!(state, [StateArg::Running, StateArg::WaitingForApproval]);
        for sub in ["get", "watch", "pause", "resume", "cancel"] {
            parse(&["rollout", sub, "ro-1"]).unwrap_or_else(|e| panic!("{sub}: {e}"));
        }
    }
}
