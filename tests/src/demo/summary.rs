//! The demo's result: per cluster its state in each rollout, the version and node groups its own
//! API reports at the end, every step with its duration (from `GetOperation`), and the simulator's
//! zero-downtime figures per phase — the lowest available replicas of any Deployment against its
//! count when the phase began, and PodDisruptionBudget violations; per rollout its end state.
//! Printed as tables for people or as JSON (`--output json`), and checked against the bar the
//! design sets (every rollout and cluster succeeded, no PDB violation, no Deployment below its
//! starting available count during the migration).

use std::collections::BTreeMap;

use flotilla_coordinator::cli::render::{self, Table};
use flotilla_proto::fleet::v1 as pb;
use flotilla_sim::stats::ClusterStats;
use jiff::Timestamp;
use serde::Serialize;

/// (operation, hop, step name): the key steps are grouped under in the step-times table.
type StepKey = (String, String, String);
/// (seconds, cluster, whether it succeeded) of one cluster's run of a step.
type StepTime = (f64, String, bool);

/// The kind of a phase and of the rollout that ran it.
pub const MIGRATION: &str = "migration";
/// See [`MIGRATION`].
pub const UPGRADE: &str = "upgrade";

/// The whole result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Every cluster, in fleet order.
    pub clusters: Vec<ClusterSummary>,
    /// The rollouts, in the order they ran.
    pub rollouts: Vec<RolloutSummary>,
    /// The demo's wall time, seconds (start of the fleet to the end of the last rollout).
    pub seconds: f64,
    /// Whether the run met the bar: see [`Summary::problems`].
    pub ok: bool,
    /// What fell short of the bar, one line each.
    pub problems: Vec<String>,
}

/// One rollout as it ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    /// The rollout's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `migration` or `upgrade`.
    pub kind: String,
    /// Its final state, e.g. `Succeeded`.
    pub status: String,
    /// Why it failed or was cancelled.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Creation to end, seconds.
    pub seconds: Option<f64>,
}

/// One cluster at the end.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    /// The cluster's name.
    pub name: String,
    /// Its `env` label.
    pub env: String,
    /// `Succeeded` when it succeeded in every rollout; else its state in the first rollout where
    /// it did not (`Failed`, `Cancelled`, …, or `NotRun`).
    pub status: String,
    /// Why it did not succeed (the rollout, the step and the reason).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The Kubernetes `major.minor` its API server reports at the end.
    pub version: String,
    /// Its node groups at the end, from its nodes' labels.
    pub node_groups: Vec<NodeGroupSummary>,
    /// PodDisruptionBudget violations over both phases (must be 0).
    pub pdb_violations: u64,
    /// The lowest available replicas any Deployment reached, over its count when the phase
    /// began; the lowest over both phases (`null` when nothing was measured).
    pub min_available_ratio: Option<f64>,
    /// The figures of each phase.
    pub availability: Vec<PhaseFigures>,
    /// Its operations, one per rollout.
    pub operations: Vec<OperationSummary>,
    /// Every step of every operation, in order.
    pub steps: Vec<StepSummary>,
}

/// One node group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupSummary {
    /// Its name.
    pub name: String,
    /// `managed` or `self-managed`.
    pub kind: String,
    /// Its nodes.
    pub nodes: u32,
    /// Of which Ready.
    pub ready: u32,
    /// Its kubelets' versions.
    pub kubelet_versions: Vec<String>,
}

/// One operation of a cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSummary {
    /// The operation's id.
    pub id: String,
    /// `migration` or `upgrade`.
    pub kind: String,
    /// For an upgrade, its minor hop, e.g. `1.34`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hop: String,
    /// Its final state.
    pub status: String,
    /// First step's start to end, seconds.
    pub seconds: Option<f64>,
}

/// One step of an operation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSummary {
    /// The step, e.g. `Drain`.
    pub name: String,
    /// The operation it belongs to: `migration` or `upgrade`.
    pub operation: String,
    /// For an upgrade, the minor hop, e.g. `1.34`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hop: String,
    /// Its state, e.g. `Succeeded`.
    pub status: String,
    /// How long it ran, seconds (0 for a step that never started).
    pub seconds: f64,
    /// Attempts made.
    pub attempts: u32,
}

/// The simulator's zero-downtime figures of one cluster over one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhaseFigures {
    /// `migration` or `upgrade`.
    pub phase: String,
    /// The lowest `min_available / available_at_start` over the cluster's Deployments.
    pub min_available_ratio: Option<f64>,
    /// The Deployment with that ratio (`namespace/name`), with its lowest and starting counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lowest: Option<LowestDeployment>,
    /// Deletions that took a PodDisruptionBudget below its desired healthy pods.
    pub pdb_violations: u64,
    /// Evictions the API allowed.
    pub evictions: u64,
    /// Evictions refused (429) — the budget doing its job.
    pub evictions_refused: u64,
}

/// The Deployment that came closest to downtime.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LowestDeployment {
    /// `namespace/name`.
    pub deployment: String,
    /// Its lowest available replicas.
    pub min_available: i64,
    /// Its available replicas when the phase began.
    pub available_at_start: i64,
}

// === Building ===

impl PhaseFigures {
    /// The figures of `stats`, measured since the phase's start. Deployments without a baseline
    /// (never fully available) or with none available at the start are left out.
    pub fn from_stats(phase: &str, stats: &ClusterStats) -> PhaseFigures {
        let mut lowest: Option<(f64, LowestDeployment)> = None;
        for (name, d) in &stats.deployments {
            let (Some(min), Some(start)) = (d.min_available, d.available_at_start) else {
                continue;
            };
            if start <= 0 {
                continue;
            }
            let ratio = min as f64 / start as f64;
            if lowest.as_ref().is_none_or(|(r, _)| ratio < *r) {
                lowest = Some((
                    ratio,
                    LowestDeployment {
                        deployment: name.clone(),
                        min_available: min,
                        available_at_start: start,
                    },
                ));
            }
        }
        PhaseFigures {
            phase: phase.to_string(),
            min_available_ratio: lowest.as_ref().map(|(r, _)| *r),
            lowest: lowest.map(|(_, d)| d),
            pdb_violations: stats.pdb_violations,
            evictions: stats.evictions_allowed,
            evictions_refused: stats.evictions_refused,
        }
    }
}

/// `major.minor` of a Kubernetes version string: `v1.35.2-eks-1a2b3c` → `1.35`.
pub fn minor_version(version: &str) -> String {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(['.', '-', '+']);
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) if !major.is_empty() && !minor.is_empty() => format!("{major}.{minor}"),
        _ => version.to_string(),
    }
}

/// A rollout's one-cluster state and the cluster's operation in it.
#[derive(Debug, Clone, Default)]
pub struct ClusterInRollout {
    /// `migration` or `upgrade`.
    pub kind: String,
    /// The cluster's state in the rollout (`None`: the rollout did not run, or did not list it).
    pub state: Option<pb::ClusterState>,
    /// Its operations in the rollout, oldest first (an upgrade runs one per minor hop).
    pub operations: Vec<pb::Operation>,
}

/// The cluster's status over its rollouts, and the reason when it is not `Succeeded`.
pub fn cluster_status(parts: &[ClusterInRollout]) -> (String, String) {
    for p in parts {
        let Some(state) = &p.state else {
            return ("NotRun".into(), format!("{}: the rollout did not run", p.kind));
        };
        if state.state == pb::RolloutState::Succeeded as i32 {
            continue;
        }
        let mut reason = p.kind.clone();
        let step = render::step_kind(state.failed_step);
        if !step.is_empty() {
            reason.push_str(&format!(" failed at {step}"));
        }
        if let Some(e) = &state.error {
            reason.push_str(&format!(": {}: {}", e.code, e.message));
        } else if !state.reason.is_empty() {
            reason.push_str(&format!(": {}", state.reason));
        } else if let Some(op) = p.operations.last().filter(|o| !o.failure.is_empty()) {
            reason.push_str(&format!(": {}", op.failure));
        }
        return (render::rollout_state(state.state).to_string(), reason);
    }
    ("Succeeded".into(), String::new())
}

fn seconds_between(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
    now: Timestamp,
) -> Option<f64> {
    let ts = |t: &prost_types::Timestamp| Timestamp::new(t.seconds, t.nanos).ok();
    let from = ts(from?)?;
    let to = to.and_then(ts).unwrap_or(now);
    Some(round3(to.duration_since(from).as_secs_f64().max(0.0)))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The steps of one operation.
pub fn steps_of(kind: &str, op: &pb::Operation, now: Timestamp) -> Vec<StepSummary> {
    op.steps
        .iter()
        .map(|s| StepSummary {
            name: render::step_kind(s.kind).to_string(),
            operation: kind.to_string(),
            hop: s.hop.clone(),
            status: render::step_state(s.state).to_string(),
            seconds: seconds_between(s.started_at.as_ref(), s.finished_at.as_ref(), now).unwrap_or(0.0),
            attempts: s.attempt,
        })
        .collect()
}

/// What the cluster's own API reports at the end (see [`flotilla_agent::inventory`]).
#[derive(Debug, Clone, Default)]
pub struct FinalState {
    /// `major.minor`, or why it could not be read.
    pub version: String,
    /// Node groups.
    pub node_groups: Vec<NodeGroupSummary>,
}

impl ClusterSummary {
    /// Assembles one cluster's summary.
    pub fn build(
        name: &str,
        env: &str,
        parts: &[ClusterInRollout],
        end: FinalState,
        availability: Vec<PhaseFigures>,
        now: Timestamp,
    ) -> ClusterSummary {
        let (status, reason) = cluster_status(parts);
        let mut operations = Vec::new();
        let mut steps = Vec::new();
        for p in parts {
            for op in &p.operations {
                operations.push(OperationSummary {
                    id: op.id.clone(),
                    kind: p.kind.clone(),
                    hop: op
                        .steps
                        .iter()
                        .find(|s| !s.hop.is_empty())
                        .map(|s| s.hop.clone())
                        .unwrap_or_default(),
                    status: render::operation_state(op.state).to_string(),
                    seconds: seconds_between(op.started_at.as_ref(), op.finished_at.as_ref(), now),
                });
                steps.extend(steps_of(&p.kind, op, now));
            }
        }
        let min_available_ratio = availability
            .iter()
            .filter_map(|f| f.min_available_ratio)
            .reduce(f64::min);
        ClusterSummary {
            name: name.to_string(),
            env: env.to_string(),
            status,
            reason,
            version: end.version,
            node_groups: end.node_groups,
            pdb_violations: availability.iter().map(|f| f.pdb_violations).sum(),
            min_available_ratio,
            availability,
            operations,
            steps,
        }
    }

    fn phase(&self, phase: &str) -> Option<&PhaseFigures> {
        self.availability.iter().find(|f| f.phase == phase)
    }
}

impl RolloutSummary {
    /// One rollout as it ended.
    pub fn new(kind: &str, r: &pb::Rollout, now: Timestamp) -> RolloutSummary {
        RolloutSummary {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: kind.to_string(),
            status: render::rollout_state(r.state).to_string(),
            reason: r.reason.clone(),
            seconds: seconds_between(r.created_at.as_ref(), r.finished_at.as_ref(), now),
        }
    }
}

impl Summary {
    /// The summary, checked: `ok` and `problems` are filled in.
    pub fn new(
        clusters: Vec<ClusterSummary>,
        rollouts: Vec<RolloutSummary>,
        seconds: f64,
        target_version: &str,
    ) -> Summary {
        let mut s = Summary {
            clusters,
            rollouts,
            seconds: round3(seconds),
            ok: false,
            problems: Vec::new(),
        };
        s.problems = s.check(target_version);
        s.ok = s.problems.is_empty();
        s
    }

    /// What falls short of the bar: a rollout or cluster that did not succeed, a cluster not at
    /// the target version or with a self-managed group left, any PodDisruptionBudget violation,
    /// and any Deployment below its starting available count during the migration (the design's
    /// zero-downtime promise for steps 1–8). During the upgrade EKS replaces nodes one at a time
    /// and evicts within the budgets, so availability may dip there; that is reported, not
    /// failed.
    fn check(&self, target_version: &str) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rollouts {
            if r.status != "Succeeded" {
                let why = if r.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.reason)
                };
                out.push(format!("rollout {} ({}) ended {}{why}", r.id, r.kind, r.status));
            }
        }
        for c in &self.clusters {
            if c.status != "Succeeded" {
                out.push(format!("{}: {} — {}", c.name, c.status, c.reason));
            } else if c.version != target_version {
                out.push(format!(
                    "{}: at {} after the upgrade to {target_version}",
                    c.name, c.version
                ));
            }
            let self_managed: Vec<&str> = c
                .node_groups
                .iter()
                .filter(|g| g.kind == "self-managed")
                .map(|g| g.name.as_str())
                .collect();
            if c.status == "Succeeded" && !self_managed.is_empty() {
                out.push(format!(
                    "{}: self-managed node group(s) left: {}",
                    c.name,
                    self_managed.join(", ")
                ));
            }
            if c.pdb_violations > 0 {
                out.push(format!(
                    "{}: {} PodDisruptionBudget violation(s)",
                    c.name, c.pdb_violations
                ));
            }
            if let Some(f) = c.phase(MIGRATION) {
                if let (Some(r), Some(l)) = (f.min_available_ratio, &f.lowest) {
                    if r < 1.0 {
                        out.push(format!(
                            "{}: {} went down to {} of {} available replicas during the migration",
                            c.name, l.deployment, l.min_available, l.available_at_start
                        ));
                    }
                }
            }
        }
        out
    }

    /// Tables for people: clusters, steps over the fleet, rollouts, and the verdict.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut t = Table::new(&[
            "CLUSTER",
            "ENV",
            "STATUS",
            "VERSION",
            "NODE GROUPS",
            "MIGRATION",
            "UPGRADE",
            "LOWEST AVAILABLE (MIGRATION / UPGRADE)",
            "PDB VIOLATIONS",
        ]);
        for c in &self.clusters {
            let groups = c
                .node_groups
                .iter()
                .map(|g| format!("{} ({}, {}/{} Ready)", g.name, g.kind, g.ready, g.nodes))
                .collect::<Vec<_>>()
                .join(", ");
            // The time of the kind's operations (an upgrade has one per hop).
            let op_time = |kind: &str| {
                let times: Vec<f64> = c
                    .operations
                    .iter()
                    .filter(|o| o.kind == kind)
                    .filter_map(|o| o.seconds)
                    .collect();
                if times.is_empty() {
                    "-".to_string()
                } else {
                    secs(times.iter().sum())
                }
            };
            let ratio = |phase: &str| {
                c.phase(phase)
                    .and_then(|f| f.min_available_ratio)
                    .map_or_else(|| "-".to_string(), percent)
            };
            let mut lowest = format!("{} / {}", ratio(MIGRATION), ratio(UPGRADE));
            let worst = c
                .availability
                .iter()
                .filter(|f| f.min_available_ratio.is_some_and(|r| r < 1.0))
                .min_by(|a, b| {
                    a.min_available_ratio
                        .partial_cmp(&b.min_available_ratio)
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            if let Some(l) = worst.and_then(|f| f.lowest.as_ref()) {
                lowest.push_str(&format!(
                    " ({} {}/{})",
                    l.deployment, l.min_available, l.available_at_start
                ));
            }
            let mut status = c.status.clone();
            if !c.reason.is_empty() {
                status.push_str(&format!(" ({})", c.reason));
            }
            t.row(vec![
                c.name.clone(),
                c.env.clone(),
                status,
                c.version.clone(),
                if groups.is_empty() { "-".into() } else { groups },
                op_time(MIGRATION),
                op_time(UPGRADE),
                lowest,
                c.pdb_violations.to_string(),
            ]);
        }
        out.push_str(&t.render());

        out.push_str("\nSteps over the fleet (every step of every cluster: --output json):\n");
        out.push_str(&self.steps_table());

        out.push('\n');
        let mut t = Table::new(&["ROLLOUT", "NAME", "KIND", "STATUS", "DURATION"]);
        for r in &self.rollouts {
            let mut status = r.status.clone();
            if !r.reason.is_empty() {
                status.push_str(&format!(" ({})", r.reason));
            }
            t.row(vec![
                r.id.clone(),
                r.name.clone(),
                r.kind.clone(),
                status,
                r.seconds.map_or_else(|| "-".to_string(), secs),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
        out.push_str(&self.verdict());
        out.push('\n');
        out
    }

    /// Per step (and hop): how many clusters it succeeded on, the median and the slowest time.
    fn steps_table(&self) -> String {
        // Keyed by first appearance, so the order is the plan's.
        let mut order: Vec<StepKey> = Vec::new();
        let mut times: BTreeMap<StepKey, Vec<StepTime>> = BTreeMap::new();
        for c in &self.clusters {
            for s in &c.steps {
                let key = (s.operation.clone(), s.hop.clone(), s.name.clone());
                if !times.contains_key(&key) {
                    order.push(key.clone());
                }
                times
                    .entry(key)
                    .or_default()
                    .push((s.seconds, c.name.clone(), s.status == "Succeeded"));
            }
        }
        let mut t = Table::new(&["OPERATION", "HOP", "STEP", "SUCCEEDED", "MEDIAN", "SLOWEST"]);
        for key in order {
            let mut v = times.remove(&key).unwrap_or_default();
            let ok = v.iter().filter(|(_, _, ok)| *ok).count();
            let total = v.len();
            v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
            let median = v.get(v.len() / 2).map_or(0.0, |x| x.0);
            let slowest = v
                .last()
                .map_or_else(|| "-".to_string(), |(s, c, _)| format!("{} ({c})", secs(*s)));
            let (operation, hop, name) = key;
            t.row(vec![
                operation,
                if hop.is_empty() { "-".into() } else { hop },
                name,
                format!("{ok}/{total}"),
                secs(median),
                slowest,
            ]);
        }
        t.render()
    }

    /// One paragraph: all good, or what went wrong.
    pub fn verdict(&self) -> String {
        let n = self.clusters.len();
        let violations: u64 = self.clusters.iter().map(|c| c.pdb_violations).sum();
        let evictions: u64 = self
            .clusters
            .iter()
            .flat_map(|c| c.availability.iter())
            .map(|f| f.evictions)
            .sum();
        let refused: u64 = self
            .clusters
            .iter()
            .flat_map(|c| c.availability.iter())
            .map(|f| f.evictions_refused)
            .sum();
        let upgrade_low = self
            .clusters
            .iter()
            .filter_map(|c| c.phase(UPGRADE).map(|f| (c, f)))
            .filter_map(|(c, f)| f.min_available_ratio.map(|r| (r, c, f)))
            .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let mut out = format!(
            "{evictions} eviction(s) through the Eviction API, {refused} refused by a PodDisruptionBudget and \
             retried, {violations} PodDisruptionBudget violation(s) in {}.\n",
            secs(self.seconds)
        );
        if let Some((r, c, f)) = upgrade_low {
            let who = f
                .lowest
                .as_ref()
                .map(|l| {
                    format!(
                        " ({} on {}: {} of {})",
                        l.deployment, c.name, l.min_available, l.available_at_start
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "Lowest availability during the upgrade: {}{who}. EKS's node group update evicts pods node by \
                 node within their PodDisruptionBudgets, so a Deployment may run below its count meanwhile, by \
                 as much as its budget allows.\n",
                percent(r)
            ));
        }
        let mut down: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in &self.clusters {
            for f in &c.availability {
                if let Some(l) = f.lowest.as_ref().filter(|l| l.min_available == 0) {
                    down.entry(l.deployment.as_str())
                        .or_default()
                        .push(c.name.as_str());
                }
            }
        }
        for (deployment, clusters) in down {
            out.push_str(&format!(
                "{deployment} had no available replica for a while on {} cluster(s) ({}): it needs a \
                 PodDisruptionBudget (e.g. minAvailable: 1) for EKS to keep one running.\n",
                clusters.len(),
                clusters.join(", ")
            ));
        }
        if self.ok {
            out.push_str(&format!(
                "OK: {n} cluster(s) migrated to managed node groups and upgraded; no Deployment went below its \
                 starting available replicas during the migration, and no budget was broken.\n"
            ));
        } else {
            out.push_str(&format!("NOT OK ({} problem(s)):\n", self.problems.len()));
            for p in &self.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        out
    }
}

/// `0.8s`, `12.3s`, `3m12s`.
fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        render::human_duration(s)
    }
}

/// `100%`, `75%`.
fn percent(r: f64) -> String {
    format!("{:.0}%", r * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_sim::stats::DeploymentStats;

    fn stats(deps: &[(&str, Option<i64>, Option<i64>)], violations: u64) -> ClusterStats {
        ClusterStats {
            pdb_violations: violations,
            evictions_allowed: 7,
            deployments: deps
                .iter()
                .map(|(n, min, start)| {
                    (
                        n.to_string(),
                        DeploymentStats {
                            replicas: start.unwrap_or(0) as i32,
                            available: start.unwrap_or(0),
                            available_at_start: *start,
                            min_available: *min,
                        },
                    )
                })
                .collect(),
            ..ClusterStats::default()
        }
    }

    #[test]
    fn the_lowest_ratio_names_its_deployment() {
        let f = PhaseFigures::from_stats(
            UPGRADE,
            &stats(
                &[
                    ("shop/web", Some(3), Some(4)),
                    ("shop/cache", Some(1), Some(2)),
                    ("shop/new", None, None),
                    ("shop/zero", Some(0), Some(0)),
                ],
                0,
            ),
        );
        assert_eq!(f.min_available_ratio, Some(0.5));
        assert_eq!(
            f.lowest,
            Some(LowestDeployment {
                deployment: "shop/cache".into(),
                min_available: 1,
                available_at_start: 2
            })
        );
        assert_eq!(f.evictions, 7);
        let none = PhaseFigures::from_stats(MIGRATION, &stats(&[("a/b", None, None)], 0));
        assert_eq!((none.min_available_ratio, none.lowest), (None, None));
    }

    #[test]
    fn versions_are_cut_to_the_minor() {
        assert_eq!(minor_version("v1.35.2-eks-1a2b3c"), "1.35");
        assert_eq!(minor_version("1.33"), "1.33");
        assert_eq!(minor_version("v1.34.0+k3s1"), "1.34");
        assert_eq!(minor_version("garbage"), "garbage");
    }

    fn state(s: pb::RolloutState) -> pb::ClusterState {
        pb::ClusterState {
            cluster_id: "sim-1".into(),
            state: s as i32,
            ..Default::default()
        }
    }

    fn cluster(
        parts: &[ClusterInRollout],
        groups: &[(&str, &str)],
        version: &str,
        figures: Vec<PhaseFigures>,
    ) -> ClusterSummary {
        ClusterSummary::build(
            "sim-1",
            "dev",
            parts,
            FinalState {
                version: version.into(),
                node_groups: groups
                    .iter()
                    .map(|(n, k)| NodeGroupSummary {
                        name: n.to_string(),
                        kind: k.to_string(),
                        nodes: 4,
                        ready: 4,
                        kubelet_versions: vec!["v1.35.0".into()],
                    })
                    .collect(),
            },
            figures,
            Timestamp::now(),
        )
    }

    fn part(kind: &str, s: pb::RolloutState) -> ClusterInRollout {
        ClusterInRollout {
            kind: kind.into(),
            state: Some(state(s)),
            operations: vec![pb::Operation {
                id: format!("op-{kind}"),
                state: pb::OperationState::Succeeded as i32,
                steps: vec![pb::OperationStep {
                    step_id: "s".into(),
                    kind: pb::OperationStepKind::Drain as i32,
                    state: pb::StepState::Succeeded as i32,
                    attempt: 1,
                    started_at: Some(prost_types::Timestamp {
                        seconds: 100,
                        nanos: 0,
                    }),
                    finished_at: Some(prost_types::Timestamp {
                        seconds: 102,
                        nanos: 500_000_000,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn figures(phase: &str, ratio: f64, violations: u64) -> PhaseFigures {
        PhaseFigures {
            phase: phase.into(),
            min_available_ratio: Some(ratio),
            lowest: Some(LowestDeployment {
                deployment: "shop/web".into(),
                min_available: (4.0 * ratio) as i64,
                available_at_start: 4,
            }),
            pdb_violations: violations,
            evictions: 10,
            evictions_refused: 2,
        }
    }

    #[test]
    fn a_clean_run_is_ok_and_its_json_has_the_promised_fields() {
        let c = cluster(
            &[
                part(MIGRATION, pb::RolloutState::Succeeded),
                part(UPGRADE, pb::RolloutState::Succeeded),
            ],
            &[("ng-managed", "managed")],
            "1.35",
            vec![figures(MIGRATION, 1.0, 0), figures(UPGRADE, 0.75, 0)],
        );
        assert_eq!(c.status, "Succeeded");
        assert_eq!(c.min_available_ratio, Some(0.75));
        assert_eq!(c.steps.len(), 2);
        assert_eq!(c.steps[0].seconds, 2.5);
        let rollout = pb::Rollout {
            id: "r-1".into(),
            state: pb::RolloutState::Succeeded as i32,
            ..Default::default()
        };
        let s = Summary::new(
            vec![c],
            vec![RolloutSummary::new(MIGRATION, &rollout, Timestamp::now())],
            90.0,
            "1.35",
        );
        assert!(s.ok, "{:?}", s.problems);
        let v = serde_json::to_value(&s).unwrap();
        let c = &v["clusters"][0];
        for field in [
            "name",
            "status",
            "version",
            "pdbViolations",
            "minAvailableRatio",
            "steps",
        ] {
            assert!(!c[field].is_null(), "{field} missing: {c}");
        }
        for field in ["name", "status", "seconds"] {
            assert!(!c["steps"][0][field].is_null(), "steps[].{field} missing: {c}");
        }
        for field in ["id", "kind", "status"] {
            assert!(
                !v["rollouts"][0][field].is_null(),
                "rollouts[].{field} missing: {v}"
            );
        }
        let table = s.table();
        assert!(table.contains("OK: 1 cluster(s)"), "{table}");
        assert!(table.contains("100% / 75% (shop/web 3/4)"), "{table}");
    }

    #[test]
    fn shortfalls_are_named() {
        let mut failed = part(UPGRADE, pb::RolloutState::Failed);
        if let Some(st) = failed.state.as_mut() {
            st.failed_step = pb::OperationStepKind::Preflight as i32;
            st.reason = "pdb shop/cache [PDB_ZERO_DISRUPTIONS]".into();
        }
        let c = cluster(
            &[part(MIGRATION, pb::RolloutState::Succeeded), failed],
            &[("ng-managed", "managed")],
            "1.33",
            vec![figures(MIGRATION, 0.75, 1)],
        );
        assert_eq!(c.status, "Failed");
        assert_eq!(
            c.reason,
            "upgrade failed at Preflight: pdb shop/cache [PDB_ZERO_DISRUPTIONS]"
        );
        let s = Summary::new(vec![c], Vec::new(), 1.0, "1.35");
        assert!(!s.ok);
        let text = s.problems.join("\n");
        assert!(
            text.contains("sim-1: Failed — upgrade failed at Preflight"),
            "{text}"
        );
        assert!(text.contains("1 PodDisruptionBudget violation"), "{text}");
        assert!(
            text.contains("shop/web went down to 3 of 4 available replicas during the migration"),
            "{text}"
        );

        let left = cluster(
            &[part(MIGRATION, pb::RolloutState::Succeeded)],
            &[("ng-old", "self-managed")],
            "1.35",
            Vec::new(),
        );
        let s = Summary::new(vec![left], Vec::new(), 1.0, "1.35");
        assert!(
            s.problems
                .iter()
                .any(|p| p.contains("self-managed node group(s) left: ng-old")),
            "{:?}",
            s.problems
        );

        let not_run = cluster(
            &[ClusterInRollout {
                kind: UPGRADE.into(),
                ..Default::default()
            }],
            &[],
            "1.33",
            Vec::new(),
        );
        assert_eq!(not_run.status, "NotRun");
    }
}
