//! The one-command demo (`cargo run --release --bin flotilla-demo`) as a library, so the
//! end-to-end tests run exactly what the README's first command runs.
//!
//! In one process, all on 127.0.0.1: a simulated fleet of EKS clusters (Kubernetes 1.33, each with
//! the self-managed node group `ng-old`), a fresh CA, the coordinator on a fresh data dir, one
//! agent per cluster over mTLS; then, through a Fleet gRPC client over mTLS as an operator, a
//! migration rollout (`ng-old` → an EKS managed node group) and an upgrade rollout to 1.35, each
//! in three stages (dev, staging, prod) and followed live; then a summary per cluster.
//!
//! # Layout
//!
//! - [`spec`]: the clusters' scenario, their `env` labels, the two rollout specs.
//! - [`setup`]: starting and stopping the fleet, the CA, the coordinator and the agents.
//! - [`rollouts`]: creating a rollout and following it with the CLI's live display.
//! - [`summary`]: the per-cluster result, as tables or JSON, checked against the design's bar.

pub mod rollouts;
pub mod setup;
pub mod spec;
pub mod summary;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flotilla_agent::cluster::KubeCluster;
use flotilla_agent::model::GroupKind;
use flotilla_coordinator::cli::connect::Client;
use flotilla_coordinator::cli::spec::RolloutPlan;
use flotilla_coordinator::cli::{CliError, Io};
use flotilla_proto::fleet::v1 as pb;
use jiff::Timestamp;

use self::setup::Stack;
use self::summary::{
    ClusterInRollout, ClusterSummary, FinalState, NodeGroupSummary, PhaseFigures, RolloutSummary, Summary,
    MIGRATION, UPGRADE,
};

/// Most simulated clusters the demo starts.
pub const MAX_CLUSTERS: usize = 1000;
/// Clusters by default.
pub const DEFAULT_CLUSTERS: usize = 12;
/// The simulator's `fast` delays times this by default: quick, yet slow enough to watch.
pub const DEFAULT_TIME_SCALE: f64 = 0.75;
/// The soak after each stage but the last, by default.
pub const DEFAULT_SOAK: Duration = Duration::from_secs(3);

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An option is out of range.
    #[error("{field}: {message}")]
    InvalidOption {
        /// The option, as the command line spells it (`--clusters`).
        field: &'static str,
        /// What is wrong and what to give instead.
        message: String,
    },
    /// The simulated fleet failed to start or settle.
    #[error("simulated fleet: {0}")]
    Sim(#[from] flotilla_sim::error::SimError),
    /// Creating the CA or a certificate failed.
    #[error("certificates: {0}")]
    Ca(#[from] flotilla_coordinator::ca::CaError),
    /// The coordinator failed to start.
    #[error("coordinator: {0}")]
    Coordinator(#[from] flotilla_coordinator::server::ServerError),
    /// An agent cannot start with its configuration.
    #[error("agent of {cluster}: {source}")]
    Agent {
        /// The cluster.
        cluster: String,
        /// Why.
        #[source]
        source: flotilla_agent::uplink::UplinkError,
    },
    /// An agent configuration that is not tied to a cluster yet (the coordinator URL).
    #[error("agent: {0}")]
    Uplink(#[from] flotilla_agent::uplink::UplinkError),
    /// A cluster's Kubernetes client could not be built.
    #[error("Kubernetes client of {cluster}: {message}")]
    Kube {
        /// The cluster.
        cluster: String,
        /// What failed.
        message: String,
    },
    /// A Fleet API call failed (the message says what to do, as the CLI's does).
    #[error("{call}: {source}")]
    Api {
        /// The call, e.g. `CreateRollout`.
        call: &'static str,
        /// The error.
        #[source]
        source: CliError,
    },
    /// A rollout spec the demo wrote was refused by the CLI's parser.
    #[error("rollout spec: {0}")]
    Spec(#[from] flotilla_coordinator::cli::spec::SpecError),
    /// Something did not happen within its bound.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Setting up failed otherwise.
    #[error("{0}")]
    Setup(String),
    /// Writing progress or a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file (or `-` for the progress stream).
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl From<std::io::Error> for DemoError {
    fn from(source: std::io::Error) -> Self {
        DemoError::Io {
            path: PathBuf::from("-"),
            source,
        }
    }
}

impl DemoError {
    /// A failed Fleet API call.
    pub fn api(call: &'static str, source: CliError) -> DemoError {
        DemoError::Api { call, source }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated clusters, 1 to [`MAX_CLUSTERS`]; a third each `env=dev`, `staging`, `prod`.
    pub clusters: usize,
    /// The simulator's `fast` delays are multiplied by this (0.1 to 100).
    pub time_scale: f64,
    /// The soak after each stage but the last.
    pub soak: Duration,
    /// Where the CA, the data dir, the kubeconfigs and the specs go; `None`: a temporary
    /// directory removed at the end.
    pub work_dir: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            clusters: DEFAULT_CLUSTERS,
            time_scale: DEFAULT_TIME_SCALE,
            soak: DEFAULT_SOAK,
            work_dir: None,
        }
    }
}

impl DemoOptions {
    /// Checks every option, naming the flag and the range.
    pub fn validate(&self) -> Result<(), DemoError> {
        if !(1..=MAX_CLUSTERS).contains(&self.clusters) {
            return Err(DemoError::InvalidOption {
                field: "--clusters",
                message: format!(
                    "{} is out of range; give 1 to {MAX_CLUSTERS} simulated clusters",
                    self.clusters
                ),
            });
        }
        if !(self.time_scale.is_finite() && (0.1..=100.0).contains(&self.time_scale)) {
            return Err(DemoError::InvalidOption {
                field: "--time-scale",
                message: format!(
                    "{} is out of range; give 0.1 (ten times faster) to 100",
                    self.time_scale
                ),
            });
        }
        if self.soak > Duration::from_secs(3600) {
            return Err(DemoError::InvalidOption {
                field: "--soak",
                message: "is above an hour; give e.g. 5s".into(),
            });
        }
        Ok(())
    }
}

/// A started demo: the fleet, coordinator and agents are up.
pub struct Demo {
    stack: Stack,
    opts: DemoOptions,
    started: Instant,
}

impl Demo {
    /// Validates the options and starts everything; progress lines go to `io.out`.
    pub async fn start(opts: DemoOptions, io: &mut Io) -> Result<Demo, DemoError> {
        opts.validate()?;
        let started = Instant::now();
        let stack = Stack::start(&opts, &mut *io.out).await?;
        Ok(Demo { stack, opts, started })
    }

    /// The running pieces (for tests that look closer).
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// Runs the migration rollout, then (if it succeeded) the upgrade rollout, each followed live
    /// on `io`; then gathers the summary.
    pub async fn run(&mut self, io: &mut Io) -> Result<Summary, DemoError> {
        let n = self.opts.clusters;
        let counts = spec::env_counts(n);
        let stage_counts: Vec<usize> = counts.iter().copied().filter(|c| *c > 0).collect();
        let mut client = self.stack.client().await?;

        let migrate_path = self.stack.dir.join("migrate.yaml");
        let upgrade_path = self.stack.dir.join("upgrade.yaml");
        let migrate_yaml = spec::migration_yaml(counts, self.opts.soak);
        let upgrade_yaml = spec::upgrade_yaml(counts, self.opts.soak);
        for (path, text) in [(&migrate_path, &migrate_yaml), (&upgrade_path, &upgrade_yaml)] {
            std::fs::write(path, text).map_err(|source| DemoError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let migrate = spec::parse(&migrate_path, &migrate_yaml)?;
        let upgrade = spec::parse(&upgrade_path, &upgrade_yaml)?;

        let mut rollouts: Vec<(&'static str, pb::Rollout)> = Vec::new();
        let mut figures: Vec<Vec<PhaseFigures>> = vec![Vec::new(); n];
        let phases: [(&'static str, &RolloutPlan, &str); 2] =
            [(MIGRATION, &migrate, "1/2"), (UPGRADE, &upgrade, "2/2")];
        for (kind, plan, nth) in phases {
            if let Some((_, previous)) = rollouts.last() {
                if previous.state != pb::RolloutState::Succeeded as i32 {
                    writeln!(
                        io.out,
                        "\nskipping the {kind} rollout: the {} rollout ended {}",
                        rollouts.last().map_or("", |(k, _)| *k),
                        flotilla_coordinator::cli::render::rollout_state(previous.state)
                    )?;
                    break;
                }
            }
            writeln!(io.out, "\n== {nth}: {kind} ==")?;
            self.stack.reset_stats();
            let ended = rollouts::run(&mut client, plan, &stage_counts, io).await?;
            for (i, c) in self.stack.clusters.iter().enumerate() {
                figures[i].push(PhaseFigures::from_stats(kind, &self.stack.stats(&c.name)));
            }
            rollouts.push((kind, ended));
        }
        let summary = self.summarize(&mut client, &rollouts, figures).await?;
        Ok(summary)
    }

    /// Builds the summary: rollouts as they ended, each cluster's operations (GetOperation), its
    /// final version and node groups (its own API), its phase figures.
    async fn summarize(
        &self,
        client: &mut Client,
        rollouts: &[(&'static str, pb::Rollout)],
        figures: Vec<Vec<PhaseFigures>>,
    ) -> Result<Summary, DemoError> {
        let now = Timestamp::now();
        let seconds = self.started.elapsed().as_secs_f64();
        let mut clusters = Vec::with_capacity(self.stack.clusters.len());
        for (c, figures) in self.stack.clusters.iter().zip(figures) {
            let mut parts = Vec::new();
            for kind in [MIGRATION, UPGRADE] {
                let rollout = rollouts.iter().find(|(k, _)| *k == kind).map(|(_, r)| r);
                let state = rollout.and_then(|r| {
                    r.stages
                        .iter()
                        .flat_map(|s| s.clusters.iter())
                        .find(|x| x.cluster_id == c.name)
                        .cloned()
                });
                let operations = match rollout {
                    Some(r) => operations_of(client, &c.name, &r.id).await?,
                    None => Vec::new(),
                };
                parts.push(ClusterInRollout {
                    kind: kind.to_string(),
                    state,
                    operations,
                });
            }
            let end = final_state(&c.kube).await;
            clusters.push(ClusterSummary::build(&c.name, c.env, &parts, end, figures, now));
        }
        let rollouts = rollouts
            .iter()
            .map(|(kind, r)| RolloutSummary::new(kind, r, now))
            .collect();
        Ok(Summary::new(clusters, rollouts, seconds, spec::TARGET_VERSION))
    }

    /// How to look at the still-running demo with the `flotilla` CLI, kubectl, curl and the AWS CLI.
    pub fn keep_hint(&self) -> String {
        let dir = &self.stack.dir;
        let aws = self.stack.fleet.aws_url.clone().unwrap_or_default();
        format!(
            "Everything keeps running until Ctrl-C. Point the tools at it:\n\
             \x20 export FLOTILLA_COORDINATOR={url} FLOTILLA_TLS_DIR={tls} FLOTILLA_IDENTITY={op}\n\
             \x20 cargo run --bin flotilla -- clusters list\n\
             \x20 cargo run --bin flotilla -- rollout list\n\
             \x20 cargo run --bin flotilla -- operations list\n\
             \x20 export KUBECONFIG={dir}/sim/kubeconfig-sim-1.yaml\n\
             \x20 kubectl get nodes -L eks.amazonaws.com/nodegroup,alpha.eksctl.io/nodegroup-name\n\
             \x20 kubectl get deploy,pdb -A\n\
             \x20 curl -s {stats}        # evictions, PDB violations, availability per cluster\n\
             \x20 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION={region} \\\n\
             \x20   aws eks list-nodegroups --cluster-name sim-1 --endpoint-url {aws}\n\
             The rollout specs the demo ran: {dir}/migrate.yaml, {dir}/upgrade.yaml \
             (`flotilla rollout create -f FILE`); the clusters file: {dir}/clusters.yaml.\n",
            url = self.stack.coordinator_url(),
            tls = self.stack.tls_dir().display(),
            op = setup::OPERATOR,
            dir = dir.display(),
            stats = self.stack.fleet.stats_url,
            region = self.stack.fleet.aws().map_or("us-west-2", |a| a.region.as_str()),
        )
    }

    /// Stops the agents, the coordinator and the fleet; removes the temporary directory.
    pub async fn shutdown(self) {
        self.stack.shutdown().await;
    }
}

/// The operations a rollout ran on a cluster, oldest first (`ListOperations`, every page).
async fn operations_of(
    client: &mut Client,
    cluster: &str,
    rollout: &str,
) -> Result<Vec<pb::Operation>, DemoError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .fleet
            .list_operations(pb::ListOperationsRequest {
                cluster_id: cluster.to_string(),
                rollout_id: rollout.to_string(),
                page_size: 0,
                page_token,
            })
            .await
            .map_err(|s| DemoError::api("ListOperations", client.status(s)))?
            .into_inner();
        out.extend(page.operations);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    // Newest first on the wire; ids sort by creation time.
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The version and node groups the cluster's own API reports (the agent's inventory code, run
/// here against the same simulated cluster).
async fn final_state(kube: &kube::Client) -> FinalState {
    match flotilla_agent::inventory::collect(&KubeCluster::new(kube.clone())).await {
        Ok(inv) => FinalState {
            version: summary::minor_version(&inv.version),
            node_groups: inv
                .node_groups
                .iter()
                .map(|g| NodeGroupSummary {
                    name: g.name.clone(),
                    kind: match g.kind {
                        GroupKind::Managed => "managed",
                        GroupKind::SelfManaged => "self-managed",
                    }
                    .to_string(),
                    nodes: g.nodes,
                    ready: g.ready,
                    kubelet_versions: g.kubelet_versions.clone(),
                })
                .collect(),
        },
        Err(e) => FinalState {
            version: format!("unknown ({e})"),
            node_groups: Vec::new(),
        },
    }
}

/// Starts the demo, runs both rollouts, shuts everything down, and returns the summary.
pub async fn run(opts: DemoOptions, io: &mut Io) -> Result<Summary, DemoError> {
    let mut demo = Demo::start(opts, io).await?;
    let result = demo.run(io).await;
    demo.shutdown().await;
    result
}
