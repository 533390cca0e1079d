//! The local runner: a whole migration (WaitNodesReady, Taint, SurgeScale, VerifyReady, Drain,
//! RestoreScale) on the current kubeconfig context, with live progress bars and a summary.
//! Arguments and node groups are checked before anything in the cluster changes; a failure or an
//! interrupt before the drain completes is rolled back (untaint, uncordon, restore scale).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cluster::{Cluster, KubeCluster};
use crate::error::Error;
use crate::inventory;
use crate::steps::drain::{self, OnBlocked};
use crate::steps::error::secs;
use crate::steps::surge_scale::{self, Surge};
use crate::steps::{
    format_duration, restore_scale, rollback, taint, verify_ready, wait_nodes_ready, Progress, ProgressSink,
    Step, StepError, StepKind, StepOutput,
};

/// Everything `local migrate` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateOptions {
    /// The self-managed node group to leave.
    pub from: String,
    /// The managed node group to move to.
    pub to: String,
    /// How much to surge.
    pub surge: Surge,
    /// Nodes drained at once.
    pub drain_concurrency: usize,
    /// How long one node may take to drain.
    pub node_timeout: Duration,
    /// What to do with pods a PDB keeps blocking.
    pub on_blocked: OnBlocked,
    /// Also remove pods no controller manages.
    pub force: bool,
    /// Evict pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// Key of the taint on old nodes.
    pub taint_key: String,
    /// How many new nodes must be Ready (`None`: all the group has now, at least one).
    pub min_new_nodes: Option<u32>,
    /// How long to wait for the new nodes.
    pub nodes_ready_timeout: Duration,
    /// How long to wait for the surge to be available.
    pub verify_timeout: Duration,
    /// Longest wait of the drain without news from its watches (timers and progress).
    pub drain_poll: Duration,
    /// How long RestoreScale waits for a budget to allow the next scale-in step.
    pub restore_step_timeout: Duration,
    /// When a step fails (or the run is interrupted) before the drain has completed, run
    /// Rollback: untaint, uncordon and restore the recorded scale (`--no-rollback` turns it off).
    pub rollback: bool,
}

impl MigrateOptions {
    /// The defaults (`--surge 100% --drain-concurrency 5 --node-timeout 10m --on-blocked fail`).
    pub fn new(from: &str, to: &str) -> MigrateOptions {
        MigrateOptions {
            from: from.into(),
            to: to.into(),
            surge: Surge::default(),
            drain_concurrency: 5,
            node_timeout: Duration::from_secs(600),
            on_blocked: OnBlocked::Fail,
            force: false,
            delete_emptydir_data: true,
            taint_key: crate::model::DEFAULT_TAINT_KEY.into(),
            min_new_nodes: None,
            nodes_ready_timeout: Duration::from_secs(600),
            verify_timeout: Duration::from_secs(600),
            drain_poll: Duration::from_secs(1),
            restore_step_timeout: Duration::from_secs(120),
            rollback: true,
        }
    }

    /// The steps of the migration, in order, for `new_nodes` nodes in the target group.
    pub fn steps(&self, new_nodes: u32) -> Vec<Step> {
        let count = self.min_new_nodes.unwrap_or(new_nodes).max(1);
        vec![
            Step::WaitNodesReady(wait_nodes_ready::Params::new(
                &self.to,
                count,
                self.nodes_ready_timeout,
            )),
            Step::Taint(taint::Params {
                group: self.from.clone(),
                taint_key: self.taint_key.clone(),
            }),
            Step::SurgeScale(surge_scale::Params::new(&self.from, &self.to, self.surge)),
            Step::VerifyReady(verify_ready::Params::new(
                &self.from,
                &self.to,
                self.verify_timeout,
            )),
            Step::Drain(drain::Params {
                concurrency: self.drain_concurrency,
                node_timeout: self.node_timeout,
                on_blocked: self.on_blocked,
                force: self.force,
                delete_emptydir_data: self.delete_emptydir_data,
                poll: self.drain_poll,
                ..drain::Params::new(&self.from)
            }),
            // Deployments with pods still on the old nodes (skipped ones) keep their surge.
            Step::RestoreScale(restore_scale::Params {
                keep_if_pods_on: Some(self.from.clone()),
                step_timeout: self.restore_step_timeout,
                ..Default::default()
            }),
        ]
    }
}

/// Checks every parameter and both node groups without changing anything; returns how many
/// nodes the target group has.
pub async fn preflight<C: Cluster>(cluster: &C, opts: &MigrateOptions) -> Result<u32, StepError> {
    if opts.from.trim().is_empty() {
        return Err(StepError::invalid(
            "from",
            "empty; name the self-managed node group to leave, e.g. --from ng-old",
        ));
    }
    if opts.to.trim().is_empty() {
        return Err(StepError::invalid(
            "to",
            "empty; name the managed node group to move to, e.g. --to ng-new",
        ));
    }
    if opts.from == opts.to {
        return Err(StepError::invalid(
            "to",
            format!("`{}` is also --from; migrate to a different node group", opts.to),
        ));
    }
    for step in opts.steps(1) {
        step.validate()?;
    }
    let nodes = cluster.nodes().await?;
    inventory::group_nodes(&nodes, &opts.from)?;
    let new = inventory::group_nodes(&nodes, &opts.to)?;
    if let Some(min) = opts.min_new_nodes {
        if min as usize > new.len() {
            tracing::info!(group = %opts.to, have = new.len(), want = min, "waiting for more nodes than the group has now");
        }
    }
    Ok(new.len() as u32)
}

/// A step's error as reports carry it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorReport {
    /// Stable code ([`StepError::code`]).
    pub code: &'static str,
    /// The message.
    pub message: String,
    /// Whether running again may succeed.
    pub retryable: bool,
    /// The typed error's details.
    #[serde(skip)]
    pub error: StepError,
}

impl From<StepError> for ErrorReport {
    fn from(e: StepError) -> ErrorReport {
        ErrorReport {
            code: e.code(),
            message: e.to_string(),
            retryable: e.retryable(),
            error: e,
        }
    }
}

/// One step as it ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// Which step.
    pub step: StepKind,
    /// How long it took.
    #[serde(with = "secs")]
    pub elapsed: Duration,
    /// What it did, if it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<StepOutput>,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

/// How the migration ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    /// Every step succeeded and every old node is drained.
    Succeeded,
    /// Every step succeeded, but nodes were skipped (`--on-blocked skip-node`) and still hold pods.
    Partial {
        /// The skipped nodes.
        skipped_nodes: Vec<String>,
    },
    /// The arguments or node groups were wrong; nothing was changed.
    Rejected {
        /// Why.
        error: ErrorReport,
    },
    /// A step failed (or the run was interrupted: error `CANCELLED`).
    Failed {
        /// The failed step.
        step: StepKind,
        /// Why.
        error: ErrorReport,
        /// Whether the migration was rolled back (the Rollback step's record says what it did).
        rollback: RollbackState,
    },
}

/// What became of a failed migration's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackState {
    /// The failure came before anything changed (WaitNodesReady).
    NotNeeded,
    /// Rolled back: old nodes untainted, unlabelled and uncordoned, scale restored.
    Done,
    /// The rollback itself failed; run `flotilla-agent local rollback` to finish it.
    Failed,
    /// Left as it was, to be resumed by running the migration again (`--no-rollback`, or a
    /// failure after the drain completed, when the old nodes are empty and the rest is
    /// RestoreScale's).
    Kept,
}

/// What `local migrate` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationReport {
    /// The kubeconfig context (or server).
    pub cluster: String,
    /// Old group.
    pub from: String,
    /// New group.
    pub to: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Each step that ran.
    pub steps: Vec<StepRecord>,
    /// Wall time.
    #[serde(with = "secs")]
    pub elapsed: Duration,
}

impl MigrationReport {
    /// The process exit code: 0 succeeded, 1 a step failed, 2 rejected arguments, 3 nodes skipped.
    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            Outcome::Succeeded => 0,
            Outcome::Failed { .. } => 1,
            Outcome::Rejected { .. } => 2,
            Outcome::Partial { .. } => 3,
        }
    }

    /// The rollback's output, if one ran and succeeded.
    pub fn rollback(&self) -> Option<&rollback::Output> {
        self.steps.iter().find_map(|s| match &s.output {
            Some(StepOutput::Rollback(r)) => Some(r),
            _ => None,
        })
    }

    /// The drain's output, if it ran.
    pub fn drain(&self) -> Option<&drain::Output> {
        self.steps.iter().find_map(|s| match &s.output {
            Some(StepOutput::Drain(d)) => Some(d),
            _ => None,
        })
    }

    /// A human-readable summary.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let head = match &self.outcome {
            Outcome::Succeeded => "succeeded".to_string(),
            Outcome::Partial { skipped_nodes } => {
                format!("finished with {} node(s) skipped", skipped_nodes.len())
            }
            Outcome::Rejected { .. } => "rejected before any change".to_string(),
            Outcome::Failed {
                step,
                rollback: RollbackState::Done,
                ..
            } => format!("FAILED at {step}, rolled back"),
            Outcome::Failed { step, .. } => format!("FAILED at {step}"),
        };
        out.push_str(&format!(
            "Migration {} -> {} on {}: {head} in {}\n",
            self.from,
            self.to,
            self.cluster,
            format_duration(self.elapsed)
        ));
        for s in &self.steps {
            let status = if s.error.is_some() { "failed" } else { "ok" };
            let detail = match (&s.output, &s.error) {
                (_, Some(e)) => e.message.clone(),
                (Some(o), None) => summarize(o),
                (None, None) => String::new(),
            };
            out.push_str(&format!(
                "  {:<15} {:<6} {:>8}  {detail}\n",
                s.step.to_string(),
                status,
                format_duration(s.elapsed)
            ));
        }
        if let Some(d) = self.drain() {
            for f in &d.forced {
                out.push_str(&format!(
                    "  WARNING: {} on {} deleted despite PodDisruptionBudget {} (blocked {})\n",
                    f.pod,
                    f.node,
                    f.pdbs.join(", "),
                    format_duration(f.blocked_for)
                ));
            }
            for n in &d.skipped {
                out.push_str(&format!(
                    "  WARNING: node {} skipped, left cordoned with {} pod(s):\n",
                    n.node,
                    n.blockers.len()
                ));
                for b in &n.blockers {
                    out.push_str(&format!("    {b}\n"));
                }
            }
        }
        match &self.outcome {
            Outcome::Rejected { error } => out.push_str(&format!("  error: {}\n", error.message)),
            Outcome::Failed {
                step,
                error,
                rollback,
            } => {
                out.push_str(&format!("  error [{}]: {}\n", error.code, error.message));
                match rollback {
                    RollbackState::Done => {
                        if let Some(r) = self.rollback() {
                            out.push_str(&format!("  Rolled back: {}\n", rolled_back(r)));
                        }
                        out.push_str(&format!(
                            "  The old nodes take pods again; the new group `{}` is left in place. Fix the cause and run the migration again.\n",
                            self.to
                        ));
                    }
                    RollbackState::Failed => out.push_str(&format!(
                        "  The rollback failed too; run `flotilla-agent local rollback --from {}` to finish it.\n",
                        self.from
                    )),
                    RollbackState::Kept if *step <= StepKind::Drain => out.push_str(&format!(
                        "  Run the same command again to resume, or `flotilla-agent local rollback --from {}` to undo.\n",
                        self.from
                    )),
                    RollbackState::Kept => out.push_str(
                        "  The old nodes are drained; run the same command again to finish.\n",
                    ),
                    RollbackState::NotNeeded => {
                        out.push_str("  Nothing in the cluster was changed.\n")
                    }
                }
            }
            _ => {}
        }
        out
    }
}

/// What a rollback did, in one line.
fn rolled_back(r: &rollback::Output) -> String {
    let nodes = if r.nodes.is_empty() {
        "no node needed changing".to_string()
    } else {
        format!(
            "{} node(s) untainted and uncordoned ({})",
            r.nodes.len(),
            r.nodes.join(", ")
        )
    };
    let deployments: Vec<String> = r
        .restored
        .deployments
        .iter()
        .map(|d| format!("{} to {}", d.deployment, d.replicas))
        .collect();
    let scale = if deployments.is_empty() {
        "no scale to restore".to_string()
    } else {
        format!(
            "{} Deployment(s) restored ({})",
            deployments.len(),
            deployments.join(", ")
        )
    };
    let hpas = if r.restored.hpas.is_empty() {
        String::new()
    } else {
        format!(", HPA(s) {}", r.restored.hpas.join(", "))
    };
    format!("{nodes}; {scale}{hpas}")
}

fn summarize(o: &StepOutput) -> String {
    match o {
        StepOutput::Inventory(i) => format!("{} nodes, {} deployments", i.nodes.len(), i.deployments.len()),
        StepOutput::WaitNodesReady(w) => format!("{} node(s) of {} Ready", w.ready.len(), w.group),
        StepOutput::Taint(t) => format!("{} node(s) tainted ({} changed)", t.nodes.len(), t.changed.len()),
        StepOutput::SurgeScale(s) => {
            let list: Vec<String> = s
                .deployments
                .iter()
                .map(|d| format!("{} {}->{}", d.deployment, d.original, d.target))
                .collect();
            format!("{} deployment(s): {}", s.deployments.len(), list.join(", "))
        }
        StepOutput::VerifyReady(v) => {
            format!("{} deployment(s) available on the new nodes", v.deployments.len())
        }
        StepOutput::Drain(d) => format!(
            "{} node(s) drained, {} skipped; {} pod(s) evicted, {} forced, {} 429s",
            d.drained.len(),
            d.skipped.len(),
            d.evicted,
            d.forced.len(),
            d.refusals
        ),
        StepOutput::RestoreScale(r) => {
            let kept = if r.kept.is_empty() {
                String::new()
            } else {
                format!("; kept surged (pods left on old nodes): {}", r.kept.join(", "))
            };
            format!(
                "{} deployment(s), {} HPA(s) restored{kept}",
                r.deployments.len(),
                r.hpas.len()
            )
        }
        StepOutput::Rollback(r) => rolled_back(r),
        StepOutput::Postflight(p) => format!("{} nodes and {} deployments fine", p.nodes, p.deployments),
    }
}

/// Runs the whole migration; never panics on cluster trouble — the report says what happened.
pub async fn migrate<C: Cluster>(
    cluster: &C,
    cluster_name: &str,
    opts: &MigrateOptions,
    progress: &dyn ProgressSink,
) -> MigrationReport {
    migrate_until(cluster, cluster_name, opts, progress, &CancellationToken::new()).await
}

/// As [`migrate`], stopping when `stop` is cancelled (SIGINT, SIGTERM): the running step stops at
/// its next await point and counts as failed (`CANCELLED`), then the rollback runs as after any
/// failure (it is not stopped by `stop`).
pub async fn migrate_until<C: Cluster>(
    cluster: &C,
    cluster_name: &str,
    opts: &MigrateOptions,
    progress: &dyn ProgressSink,
    stop: &CancellationToken,
) -> MigrationReport {
    let span = tracing::info_span!("migration", cluster = %cluster_name, from = %opts.from, to = %opts.to);
    migrate_inner(cluster, cluster_name, opts, progress, stop)
        .instrument(span)
        .await
}

async fn migrate_inner<C: Cluster>(
    cluster: &C,
    cluster_name: &str,
    opts: &MigrateOptions,
    progress: &dyn ProgressSink,
    stop: &CancellationToken,
) -> MigrationReport {
    let start = Instant::now();
    let mut report = MigrationReport {
        cluster: cluster_name.to_string(),
        from: opts.from.clone(),
        to: opts.to.clone(),
        outcome: Outcome::Succeeded,
        steps: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let new_nodes = match preflight(cluster, opts).await {
        Ok(n) => n,
        Err(e) => {
            report.outcome = Outcome::Rejected { error: e.into() };
            report.elapsed = start.elapsed();
            return report;
        }
    };
    for step in opts.steps(new_nodes) {
        let t = Instant::now();
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => Err(StepError::Cancelled {
                reason: "the migration was interrupted".into(),
            }),
            r = step.run(cluster, cluster_name, progress) => r,
        };
        let elapsed = t.elapsed();
        match result {
            Ok(output) => {
                if let StepOutput::Drain(d) = &output {
                    if !d.skipped.is_empty() {
                        report.outcome = Outcome::Partial {
                            skipped_nodes: d.skipped.iter().map(|s| s.node.clone()).collect(),
                        };
                    }
                }
                report.steps.push(StepRecord {
                    step: step.kind(),
                    elapsed,
                    output: Some(output),
                    error: None,
                });
            }
            Err(e) => {
                tracing::error!(step = %step.kind(), error = %e, "step failed");
                let error = ErrorReport::from(e);
                report.steps.push(StepRecord {
                    step: step.kind(),
                    elapsed,
                    output: None,
                    error: Some(error.clone()),
                });
                let rollback = if step.kind() < StepKind::Taint {
                    RollbackState::NotNeeded
                } else if !opts.rollback || step.kind() > StepKind::Drain {
                    RollbackState::Kept
                } else {
                    roll_back(cluster, cluster_name, opts, progress, &mut report).await
                };
                report.outcome = Outcome::Failed {
                    step: step.kind(),
                    error,
                    rollback,
                };
                break;
            }
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// Runs Rollback after a failure before the drain completed, recording it in the report.
async fn roll_back<C: Cluster>(
    cluster: &C,
    cluster_name: &str,
    opts: &MigrateOptions,
    progress: &dyn ProgressSink,
    report: &mut MigrationReport,
) -> RollbackState {
    tracing::warn!("rolling back: untaint, uncordon, restore scale");
    let step = Step::Rollback(rollback::Params {
        group: opts.from.clone(),
        taint_key: opts.taint_key.clone(),
    });
    let t = Instant::now();
    let result = step.run(cluster, cluster_name, progress).await;
    let (state, output, error) = match result {
        Ok(o) => (RollbackState::Done, Some(o), None),
        Err(e) => {
            tracing::error!(error = %e, "rollback failed");
            (RollbackState::Failed, None, Some(ErrorReport::from(e)))
        }
    };
    report.steps.push(StepRecord {
        step: StepKind::Rollback,
        elapsed: t.elapsed(),
        output,
        error,
    });
    state
}

/// Connects with the given kubeconfig (or the inferred one: `$KUBECONFIG`, `~/.kube/config`,
/// in-cluster), returning the cluster and a name for it (the context, else the server).
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<(KubeCluster, String), Error> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let (config, name) = match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
                path: shown.clone(),
                message: format!("{e}; check the file exists and is a kubeconfig"),
            })?;
            let name = context
                .map(str::to_string)
                .or_else(|| kc.current_context.clone())
                .unwrap_or_else(|| shown.clone());
            let config = kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Kubeconfig {
                    path: shown,
                    message: e.to_string(),
                })?;
            (config, name)
        }
        None => {
            let config = match context {
                Some(_) => kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| Error::Kubeconfig {
                        path: "default".into(),
                        message: e.to_string(),
                    })?,
                None => kube::Config::infer().await.map_err(|e| Error::Kubeconfig {
                    path: "default".into(),
                    message: format!("{e}; pass --kubeconfig FILE or set KUBECONFIG"),
                })?,
            };
            let name = context
                .map(str::to_string)
                .unwrap_or_else(|| config.cluster_url.to_string());
            (config, name)
        }
    };
    let mut config = config;
    config.default_retry = false;
    let client = kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))?;
    Ok((KubeCluster::new(client), name))
}

/// Live progress on the terminal: one bar per step, the drain's blockers by name.
pub struct ProgressUi {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<StepKind, ProgressBar>>,
}

impl std::fmt::Debug for ProgressUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressUi").finish_non_exhaustive()
    }
}

impl ProgressUi {
    /// Bars on stderr (drawn only when it is a terminal), or none at all when `hidden`.
    pub fn new(hidden: bool) -> ProgressUi {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        ProgressUi {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(BTreeMap::new()),
        }
    }

    /// Marks every bar finished (call when the run ends).
    pub fn finish(&self) {
        for bar in self.bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

impl ProgressSink for ProgressUi {
    fn report(&self, p: Progress) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(p.step).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(p.total.max(1)));
            let style = ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {pos:>5}/{len:<5} {elapsed:>4} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(p.step.to_string());
            bar
        });
        bar.set_length(p.total.max(1));
        bar.set_position(p.done);
        let mut msg = p.message.clone();
        if !p.blockers.is_empty() {
            let shown: Vec<String> = p
                .blockers
                .iter()
                .take(3)
                .map(|b| {
                    if b.pdbs.is_empty() {
                        b.pod.clone()
                    } else {
                        format!("{} ({})", b.pod, b.pdbs.join(","))
                    }
                })
                .collect();
            let more = if p.blockers.len() > 3 {
                format!(" +{}", p.blockers.len() - 3)
            } else {
                String::new()
            };
            msg.push_str(&format!("; blocked: {}{more}", shown.join(", ")));
        }
        bar.set_message(msg);
        if p.total > 0 && p.done >= p.total && p.blockers.is_empty() && p.step != StepKind::Drain {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::{self, GroupKind};
    use crate::steps::NoProgress;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn cluster() -> FakeCluster {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 8000, 30);
        fake.add_node("old-2", "ng-old", GroupKind::SelfManaged, 8000, 30);
        fake.add_deployment("shop", "web", 3, 100);
        fake.add_deployment("shop", "api", 2, 100);
        fake.add_deployment("kube-system", "coredns", 2, 100);
        fake.add_pdb("shop", "web", "web", Some(IntOrString::Int(2)), None);
        fake.add_hpa("shop", "api", 2, 5);
        fake.add_daemon_pod("kube-system", "aws-node", "old-1");
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 8000, 30);
        fake.add_node("new-2", "ng-new", GroupKind::Managed, 8000, 30);
        fake
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_migration_moves_everything_and_restores_scale() {
        let fake = cluster();
        let report = migrate(
            &fake,
            "fake",
            &MigrateOptions::new("ng-old", "ng-new"),
            &NoProgress,
        )
        .await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.render_text());
        assert_eq!(report.exit_code(), 0);
        let kinds: Vec<StepKind> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            kinds,
            vec![
                StepKind::WaitNodesReady,
                StepKind::Taint,
                StepKind::SurgeScale,
                StepKind::VerifyReady,
                StepKind::Drain,
                StepKind::RestoreScale
            ]
        );
        let st = fake.state();
        let on_old = st
            .pods
            .values()
            .filter(|p| model::pod_node(p).is_some_and(|n| n.starts_with("old-")))
            .filter(|p| model::controller_of(&p.metadata).is_none_or(|o| o.kind != "DaemonSet"))
            .count();
        assert_eq!(on_old, 0);
        assert_eq!(model::deployment_replicas(&st.deployments["shop/web"]), 3);
        assert_eq!(model::deployment_replicas(&st.deployments["shop/api"]), 2);
        assert_eq!(
            st.hpas["shop/api"].spec.as_ref().and_then(|s| s.min_replicas),
            Some(2)
        );
        assert!(
            st.min_available["shop/web"] >= 3,
            "web never below its start: {:?}",
            st.min_available
        );
        let text = report.render_text();
        assert!(
            text.contains("Migration ng-old -> ng-new on fake: succeeded"),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["outcome"]["status"], "succeeded");
        assert_eq!(json["steps"][4]["output"]["step"], "Drain");
    }

    /// Everything a migration may change: replicas, annotations, HPA bounds, node taints, labels
    /// and cordons.
    fn marks(fake: &FakeCluster) -> Vec<String> {
        let st = fake.state();
        let mut out: Vec<String> = st
            .deployments
            .iter()
            .map(|(k, d)| {
                format!(
                    "{k} {} {:?}",
                    model::deployment_replicas(d),
                    d.metadata.annotations.clone().unwrap_or_default()
                )
            })
            .collect();
        out.extend(st.hpas.iter().map(|(k, h)| {
            format!(
                "{k} {:?} {:?}",
                h.spec.as_ref().map(|s| (s.min_replicas, s.max_replicas)),
                h.metadata.annotations.clone().unwrap_or_default()
            )
        }));
        out.extend(st.nodes.iter().map(|(k, n)| {
            let spec = n.spec.clone().unwrap_or_default();
            format!(
                "{k} {:?} {:?} {:?} {:?}",
                spec.taints.unwrap_or_default(),
                spec.unschedulable.filter(|u| *u),
                n.metadata.labels,
                n.metadata.annotations.clone().unwrap_or_default()
            )
        }));
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_before_the_drain_ends_is_rolled_back() {
        let fake = cluster();
        let before = marks(&fake);
        // web's new pods never become Ready: VerifyReady fails after the surge.
        fake.state().never_ready.insert("shop/web".into());
        let opts = MigrateOptions {
            verify_timeout: Duration::from_secs(10),
            ..MigrateOptions::new("ng-old", "ng-new")
        };
        let report = migrate(&fake, "fake", &opts, &NoProgress).await;
        let Outcome::Failed {
            step,
            rollback,
            error,
        } = &report.outcome
        else {
            panic!("{}", report.render_text())
        };
        assert_eq!((*step, *rollback), (StepKind::VerifyReady, RollbackState::Done));
        assert_eq!(error.code, "DEPLOYMENTS_NOT_READY");
        assert_eq!(report.exit_code(), 1);
        let kinds: Vec<StepKind> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            kinds,
            vec![
                StepKind::WaitNodesReady,
                StepKind::Taint,
                StepKind::SurgeScale,
                StepKind::VerifyReady,
                StepKind::Rollback
            ]
        );
        assert_eq!(marks(&fake), before, "everything as before the migration");
        let r = report.rollback().expect("rollback output");
        assert_eq!(r.nodes, vec!["old-1".to_string(), "old-2".to_string()]);
        assert_eq!(r.restored.deployments.len(), 3);
        let text = report.render_text();
        assert!(text.contains("FAILED at VerifyReady, rolled back"), "{text}");
        assert!(
            text.contains("Rolled back: 2 node(s) untainted and uncordoned (old-1, old-2)")
                && text.contains("shop/web to 3"),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["outcome"]["rollback"], "done");
        assert_eq!(json["steps"][4]["step"], "Rollback");
        assert!(fake
            .state()
            .events
            .iter()
            .any(|e| e.reason == "FlotillaRolledBack"));
    }

    #[tokio::test(start_paused = true)]
    async fn no_rollback_leaves_the_changes_for_a_rerun() {
        let fake = cluster();
        fake.state().never_ready.insert("shop/web".into());
        let opts = MigrateOptions {
            verify_timeout: Duration::from_secs(10),
            rollback: false,
            ..MigrateOptions::new("ng-old", "ng-new")
        };
        let report = migrate(&fake, "fake", &opts, &NoProgress).await;
        assert!(
            matches!(
                report.outcome,
                Outcome::Failed {
                    rollback: RollbackState::Kept,
                    ..
                }
            ),
            "{}",
            report.render_text()
        );
        assert!(report.rollback().is_none());
        let st = fake.state();
        assert_eq!(model::deployment_replicas(&st.deployments["shop/web"]), 6);
        assert!(st.nodes["old-1"]
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == model::DEFAULT_TAINT_KEY)));
        drop(st);
        assert!(report
            .render_text()
            .contains("Run the same command again to resume"));
    }

    /// Cancels a token when a step reports progress (an operator's Ctrl-C at that moment).
    struct InterruptAt {
        step: StepKind,
        stop: CancellationToken,
    }

    impl ProgressSink for InterruptAt {
        fn report(&self, p: Progress) {
            if p.step == self.step {
                self.stop.cancel();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupt_is_rolled_back_and_a_failure_before_any_change_needs_none() {
        let fake = cluster();
        let before = marks(&fake);
        let stop = CancellationToken::new();
        let sink = InterruptAt {
            step: StepKind::SurgeScale,
            stop: stop.clone(),
        };
        let opts = MigrateOptions::new("ng-old", "ng-new");
        let report = migrate_until(&fake, "fake", &opts, &sink, &stop).await;
        let Outcome::Failed {
            step,
            error,
            rollback,
        } = &report.outcome
        else {
            panic!("{}", report.render_text())
        };
        assert!(
            *step >= StepKind::SurgeScale && *step <= StepKind::VerifyReady,
            "{step}"
        );
        assert_eq!(error.code, "CANCELLED");
        assert_eq!(*rollback, RollbackState::Done);
        assert_eq!(marks(&fake), before, "everything as before the migration");

        // Interrupted while waiting for the new nodes: nothing changed, nothing to roll back.
        let fake = cluster();
        crate::cluster::fake::cordon_node(&fake, "new-1");
        let stop = CancellationToken::new();
        let sink = InterruptAt {
            step: StepKind::WaitNodesReady,
            stop: stop.clone(),
        };
        let report = migrate_until(&fake, "fake", &opts, &sink, &stop).await;
        assert!(
            matches!(
                report.outcome,
                Outcome::Failed {
                    step: StepKind::WaitNodesReady,
                    rollback: RollbackState::NotNeeded,
                    ..
                }
            ),
            "{}",
            report.render_text()
        );
        assert!(report
            .render_text()
            .contains("Nothing in the cluster was changed"));
        assert_eq!(fake.state().writes, 0);
    }

    #[tokio::test]
    async fn bad_arguments_and_missing_groups_change_nothing() {
        let fake = cluster();
        let report = migrate(
            &fake,
            "fake",
            &MigrateOptions::new("ng-old", "ng-typo"),
            &NoProgress,
        )
        .await;
        assert_eq!(report.exit_code(), 2);
        let text = report.render_text();
        assert!(
            text.contains("node group `ng-typo` not found") && text.contains("ng-new (managed)"),
            "{text}"
        );
        let same = migrate(
            &fake,
            "fake",
            &MigrateOptions::new("ng-old", "ng-old"),
            &NoProgress,
        )
        .await;
        assert!(
            same.render_text().contains("invalid parameter `to`"),
            "{}",
            same.render_text()
        );
        let mut opts = MigrateOptions::new("ng-old", "ng-new");
        opts.drain_concurrency = 0;
        let zero = migrate(&fake, "fake", &opts, &NoProgress).await;
        assert!(
            zero.render_text().contains("drain-concurrency"),
            "{}",
            zero.render_text()
        );
        assert_eq!(fake.state().writes, 0);
        assert!(report.steps.is_empty());
    }
}
