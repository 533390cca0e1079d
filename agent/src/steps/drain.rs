//! `Drain`: cordon the old nodes, then evict through the Eviction API, as `kubectl drain` does
//! (DaemonSet and mirror pods skipped, emptyDir pods only when allowed, unmanaged pods only with
//! force) but several nodes at once, with evictions issued in parallel and paced by each
//! PodDisruptionBudget's `disruptionsAllowed` instead of hammering 429s. A per-node timeout and
//! an escalation policy (`fail`, `force-after`, `skip-node`) decide what happens to blocked pods.
//!
//! [`plan`] is pure (evict what, skip what, why); [`schedule`] decides, from the plan, the
//! budgets and what was tried before, what to send now; [`run`] loops over both against a
//! [`Cluster`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

use super::error::secs;
use super::{
    format_duration, modify_node, parse_duration, Blocker, EvictionOutcome, NodeDrainOutcome, Observation,
    Progress, ProgressSink, RefusedPod, StepError, StepKind,
};
use crate::cluster::{Cluster, ClusterError, Eviction, ObjectRef};
use crate::{events, inventory, model};

/// What to do with pods a PodDisruptionBudget keeps blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBlocked {
    /// Fail the step when a node is not empty by the per-node timeout (the default).
    #[default]
    Fail,
    /// Delete a pod despite its PDB once it has been blocked this long (recorded loudly).
    ForceAfter(Duration),
    /// Leave the node cordoned, report it, and go on with the other nodes.
    SkipNode,
}

impl FromStr for OnBlocked {
    type Err = StepError;

    fn from_str(s: &str) -> Result<OnBlocked, StepError> {
        let s = s.trim();
        match s {
            "fail" => Ok(OnBlocked::Fail),
            "skip-node" => Ok(OnBlocked::SkipNode),
            _ => match s.strip_prefix("force-after=").or_else(|| s.strip_prefix("force-after ")) {
                Some(d) => Ok(OnBlocked::ForceAfter(parse_duration("on-blocked", d)?)),
                None => Err(StepError::invalid(
                    "on-blocked",
                    format!("`{s}` is not a policy; use fail, skip-node or force-after=DURATION (e.g. force-after=5m)"),
                )),
            },
        }
    }
}

impl std::fmt::Display for OnBlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OnBlocked::Fail => f.write_str("fail"),
            OnBlocked::SkipNode => f.write_str("skip-node"),
            OnBlocked::ForceAfter(d) => write!(f, "force-after={}", format_duration(*d)),
        }
    }
}

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The node group to drain.
    pub group: String,
    /// Nodes drained at once.
    pub concurrency: usize,
    /// How long one node may take.
    pub node_timeout: Duration,
    /// What to do with blocked pods.
    pub on_blocked: OnBlocked,
    /// Evict pods with emptyDir volumes (their data is lost), as `--delete-emptydir-data`.
    pub delete_emptydir_data: bool,
    /// Also evict pods no controller manages, as `kubectl drain --force`.
    pub force: bool,
    /// How often to look again.
    pub poll: Duration,
    /// Eviction calls in flight at once.
    pub max_in_flight: usize,
}

impl Params {
    /// Drains `group` with the defaults: 5 nodes at once, 10 minutes per node, `fail`,
    /// emptyDir pods allowed, unmanaged pods refused.
    pub fn new(group: &str) -> Params {
        Params {
            group: group.into(),
            concurrency: 5,
            node_timeout: Duration::from_secs(600),
            on_blocked: OnBlocked::Fail,
            delete_emptydir_data: true,
            force: false,
            poll: Duration::from_millis(200),
            max_in_flight: 128,
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), StepError> {
        if self.group.trim().is_empty() {
            return Err(StepError::invalid(
                "from",
                "empty; name the node group to drain, e.g. ng-old",
            ));
        }
        if self.concurrency == 0 || self.concurrency > 100 {
            return Err(StepError::invalid(
                "drain-concurrency",
                format!("{} is out of range; use 1 to 100 nodes at once", self.concurrency),
            ));
        }
        if self.node_timeout.is_zero() {
            return Err(StepError::invalid("node-timeout", "must be above zero, e.g. 10m"));
        }
        if let OnBlocked::ForceAfter(d) = self.on_blocked {
            if d >= self.node_timeout {
                return Err(StepError::invalid(
                    "on-blocked",
                    format!(
                        "force-after={} is not shorter than --node-timeout {}; the node would time out first",
                        format_duration(d),
                        format_duration(self.node_timeout)
                    ),
                ));
            }
        }
        if self.poll.is_zero() || self.max_in_flight == 0 {
            return Err(StepError::invalid(
                "poll",
                "poll interval and in-flight evictions must be above zero",
            ));
        }
        Ok(())
    }
}

/// What [`plan`] reads: the pods on the nodes being drained, and the PodDisruptionBudgets.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Pods bound to the nodes being drained.
    pub pods: Vec<Pod>,
    /// Every PodDisruptionBudget, with status.
    pub pdbs: Vec<PodDisruptionBudget>,
}

/// Why a pod stays where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SkipReason {
    /// Its DaemonSet would put it back (kubectl `--ignore-daemonsets`).
    DaemonSet,
    /// A static pod's mirror; the kubelet owns it.
    Mirror,
}

/// What to do with one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Evict it.
    Evict,
    /// It is being deleted; wait for it to go.
    Wait,
    /// Leave it.
    Skip(SkipReason),
    /// Refuse to drain without a flag (the reason names the flag).
    Refuse(String),
}

/// One pod in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPod {
    /// `namespace/name`.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// What to do.
    pub action: Action,
    /// `namespace/name` of every PodDisruptionBudget that covers it.
    pub pdbs: Vec<String>,
    /// Ready (PDBs count it as healthy).
    pub ready: bool,
}

/// The plan: every pod on the nodes and what to do with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrainPlan {
    /// Pods, ordered by node then name.
    pub pods: Vec<PlannedPod>,
}

impl DrainPlan {
    /// Pods refused without a flag.
    pub fn refused(&self) -> Vec<RefusedPod> {
        self.pods
            .iter()
            .filter_map(|p| match &p.action {
                Action::Refuse(r) => Some(RefusedPod {
                    pod: p.pod.clone(),
                    node: p.node.clone(),
                    reason: r.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Pods still to leave `node` (to evict, or terminating).
    pub fn remaining_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PlannedPod> + 'a {
        self.pods
            .iter()
            .filter(move |p| p.node == node && matches!(p.action, Action::Evict | Action::Wait))
    }
}

/// Decides, per pod, evict/wait/skip/refuse, as kubectl's drain filters do (pure).
pub fn plan(snapshot: &Snapshot, params: &Params) -> DrainPlan {
    let mut pods: Vec<PlannedPod> = snapshot
        .pods
        .iter()
        .map(|pod| {
            let meta = &pod.metadata;
            let ns = model::namespace(meta);
            let pdbs = snapshot
                .pdbs
                .iter()
                .filter(|b| model::namespace(&b.metadata) == ns)
                .filter(|b| {
                    b.spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|sel| model::selector_matches(sel, meta.labels.as_ref()))
                })
                .map(|b| model::key(&b.metadata))
                .collect();
            let controller = model::controller_of(meta);
            let action = if model::terminating(meta) {
                Action::Wait
            } else if controller.is_some_and(|o| o.kind == "DaemonSet") {
                Action::Skip(SkipReason::DaemonSet)
            } else if model::annotation(meta, model::MIRROR_POD_ANNOTATION).is_some() {
                Action::Skip(SkipReason::Mirror)
            } else if model::pod_finished(pod) {
                Action::Evict
            } else if !params.delete_emptydir_data && has_empty_dir(pod) {
                Action::Refuse("uses emptyDir local storage; allow with --delete-emptydir-data".into())
            } else if controller.is_none() && !params.force {
                Action::Refuse(
                    "not managed by a controller (ReplicaSet, Job, StatefulSet, …); delete it with --force"
                        .into(),
                )
            } else {
                Action::Evict
            };
            PlannedPod {
                pod: model::key(meta),
                node: model::pod_node(pod).unwrap_or_default().to_string(),
                action,
                pdbs,
                ready: model::pod_ready(pod),
            }
        })
        .collect();
    pods.sort_by(|a, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
    DrainPlan { pods }
}

fn has_empty_dir(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()))
}

/// What the drain remembers about one pod between passes (only retry pacing; everything that
/// must survive a restart is in the cluster).
#[derive(Debug, Clone, Default)]
pub struct PodTrack {
    /// When it was first found blocked.
    pub first_blocked: Option<Instant>,
    /// Not before this instant.
    pub next_try: Option<Instant>,
    /// Refusals and failures so far (drives the backoff).
    pub attempts: u32,
    /// Transient API errors so far.
    pub errors: u32,
    /// Budgets that blocked it last.
    pub pdbs: Vec<String>,
    /// Why it is blocked.
    pub reason: String,
}

/// Pacing state across passes.
#[derive(Debug, Default)]
pub struct Pacing {
    /// Per pod `namespace/name`.
    pub pods: BTreeMap<String, PodTrack>,
    /// Per PDB, when an eviction of one of its pods was last sent.
    pub probes: BTreeMap<String, Instant>,
}

/// How long a budget at zero goes without a real eviction attempt (in case its status is stale).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Backoff after `attempts` refusals: 250 ms doubling to 5 s, with ±50% jitter.
pub fn backoff(attempts: u32, jitter: f64) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1u32 << attempts.saturating_sub(1).min(5));
    base.min(Duration::from_secs(5)).mul_f64(jitter.clamp(0.5, 1.5))
}

/// One call to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Evict through the Eviction API.
    Evict {
        /// `namespace/name`.
        pod: String,
        /// Its node.
        node: String,
    },
    /// Delete despite the PDB (escalation `force-after`).
    ForceDelete {
        /// `namespace/name`.
        pod: String,
        /// Its node.
        node: String,
        /// The budgets it was blocked by.
        pdbs: Vec<String>,
        /// For how long.
        blocked_for: Duration,
    },
}

/// Decides what to send now (pure apart from the pacing state): evictions within each PDB's
/// remaining `disruptionsAllowed`, forced deletions past `force-after`; marks the rest blocked.
pub fn schedule(
    plan: &DrainPlan,
    pdbs: &[PodDisruptionBudget],
    active: &BTreeSet<String>,
    params: &Params,
    pacing: &mut Pacing,
    now: Instant,
) -> Vec<Call> {
    let status: BTreeMap<String, i32> = pdbs
        .iter()
        .map(|b| {
            (
                model::key(&b.metadata),
                b.status.as_ref().map_or(0, |s| s.disruptions_allowed),
            )
        })
        .collect();
    let mut budget = status.clone();
    let mut calls = Vec::new();
    let live: BTreeSet<&str> = plan.pods.iter().map(|p| p.pod.as_str()).collect();
    pacing.pods.retain(|k, _| live.contains(k.as_str()));
    for p in plan
        .pods
        .iter()
        .filter(|p| p.action == Action::Evict && active.contains(&p.node))
    {
        let track = pacing.pods.entry(p.pod.clone()).or_default();
        if let (OnBlocked::ForceAfter(after), Some(since)) = (params.on_blocked, track.first_blocked) {
            if now.duration_since(since) >= after {
                calls.push(Call::ForceDelete {
                    pod: p.pod.clone(),
                    node: p.node.clone(),
                    pdbs: track.pdbs.clone(),
                    blocked_for: now.duration_since(since),
                });
                continue;
            }
        }
        if track.next_try.is_some_and(|t| now < t) {
            continue;
        }
        let exhausted: Vec<String> = p
            .pdbs
            .iter()
            .filter(|b| budget.get(*b).copied().unwrap_or(0) <= 0)
            .cloned()
            .collect();
        // Unready pods do not count against a budget's healthy pods: let the server decide.
        if p.ready && !exhausted.is_empty() {
            // Probe a budget its status says is at zero, at most once per interval, in case the
            // status is stale; never one we just spent ourselves.
            let probe_due = exhausted.iter().all(|b| {
                status.get(b).copied().unwrap_or(0) <= 0
                    && pacing
                        .probes
                        .get(b)
                        .is_none_or(|t| now.duration_since(*t) >= PROBE_INTERVAL)
            });
            if !probe_due {
                track.first_blocked.get_or_insert(now);
                track.pdbs = exhausted;
                track.reason = "blocked by PodDisruptionBudget".into();
                continue;
            }
        }
        for b in &p.pdbs {
            if let Some(n) = budget.get_mut(b) {
                *n -= 1;
            }
            pacing.probes.insert(b.clone(), now);
        }
        calls.push(Call::Evict {
            pod: p.pod.clone(),
            node: p.node.clone(),
        });
    }
    calls
}

/// A pod deleted despite its PodDisruptionBudget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForcedDeletion {
    /// `namespace/name`.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// The budgets it was blocked by.
    pub pdbs: Vec<String>,
    /// How long it had been blocked.
    #[serde(with = "secs")]
    pub blocked_for: Duration,
}

/// A node left cordoned and not drained (escalation `skip-node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedNode {
    /// The node.
    pub node: String,
    /// The pods left and what blocks them.
    pub blockers: Vec<Blocker>,
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Nodes now empty of evictable pods.
    pub drained: Vec<String>,
    /// Nodes left cordoned with pods on them (`skip-node`).
    pub skipped: Vec<SkippedNode>,
    /// Pods evicted by this run.
    pub evicted: u64,
    /// Pods deleted despite their PDB (`force-after`).
    pub forced: Vec<ForcedDeletion>,
    /// DaemonSet and mirror pods left in place.
    pub skipped_pods: u64,
    /// Evictions refused with 429 (and retried).
    pub refusals: u64,
    /// Wall time.
    #[serde(with = "secs")]
    pub elapsed: Duration,
}

/// Cordons a node (recording that Flotilla did); returns whether it changed.
pub fn cordon(node: &mut Node) -> bool {
    let spec = node.spec.get_or_insert_with(Default::default);
    if spec.unschedulable == Some(true) {
        return false;
    }
    spec.unschedulable = Some(true);
    node.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(model::CORDONED_ANNOTATION.into(), "true".into());
    true
}

struct Active {
    node: Node,
    started: Instant,
}

fn blockers_on(plan: &DrainPlan, node: &str, pacing: &Pacing, now: Instant) -> Vec<Blocker> {
    plan.remaining_on(node)
        .map(|p| {
            let track = pacing.pods.get(&p.pod);
            let (reason, pdbs, for_) = match (&p.action, track) {
                (Action::Wait, _) => ("terminating".to_string(), Vec::new(), Duration::ZERO),
                (_, Some(t)) if t.first_blocked.is_some() => (
                    t.reason.clone(),
                    t.pdbs.clone(),
                    t.first_blocked.map_or(Duration::ZERO, |s| now.duration_since(s)),
                ),
                _ => ("eviction pending".to_string(), Vec::new(), Duration::ZERO),
            };
            Blocker {
                pod: p.pod.clone(),
                node: p.node.clone(),
                pdbs,
                reason,
                for_,
            }
        })
        .collect()
}

async fn snapshot<C: Cluster>(cluster: &C, nodes: &[String]) -> Result<Snapshot, StepError> {
    let lists = futures::future::join_all(nodes.iter().map(|n| cluster.pods(Some(n)))).await;
    let mut pods = Vec::new();
    for l in lists {
        pods.extend(l?);
    }
    Ok(Snapshot {
        pods,
        pdbs: cluster.pdbs().await?,
    })
}

enum CallResult {
    Evicted,
    Blocked(Vec<String>),
    Failed(ClusterError),
    Forced(ForcedDeletion),
}

/// Cordons and drains the group's nodes.
pub async fn run<C: Cluster>(
    cluster: &C,
    p: &Params,
    progress: &dyn ProgressSink,
) -> Result<Output, StepError> {
    let start = Instant::now();
    let nodes = inventory::group_nodes(&cluster.nodes().await?, &p.group)?;
    let names: Vec<String> = nodes
        .iter()
        .map(|n| model::name(&n.metadata).to_string())
        .collect();

    // Refuse up front, before cordoning anything, if some pod needs a flag.
    let first = snapshot(cluster, &names).await?;
    let first_plan = plan(&first, p);
    let refused = first_plan.refused();
    if !refused.is_empty() {
        return Err(StepError::DrainRefused { refused });
    }
    let mut total = first_plan
        .pods
        .iter()
        .filter(|x| matches!(x.action, Action::Evict | Action::Wait))
        .count() as u64;
    let skipped_pods = first_plan
        .pods
        .iter()
        .filter(|x| matches!(x.action, Action::Skip(_)))
        .count() as u64;

    let mut queue: VecDeque<Node> = nodes.into_iter().collect();
    let mut active: BTreeMap<String, Active> = BTreeMap::new();
    let mut pacing = Pacing::default();
    let mut out = Output {
        drained: Vec::new(),
        skipped: Vec::new(),
        evicted: 0,
        forced: Vec::new(),
        skipped_pods,
        refusals: 0,
        elapsed: Duration::ZERO,
    };
    let mut seen: BTreeSet<String> = first_plan
        .pods
        .iter()
        .filter(|x| x.action == Action::Evict)
        .map(|x| x.pod.clone())
        .collect();

    loop {
        // Admit nodes up to the bound, cordoning them concurrently.
        let mut admitted = Vec::new();
        while active.len() + admitted.len() < p.concurrency {
            let Some(node) = queue.pop_front() else { break };
            admitted.push(node);
        }
        let cordons = futures::future::join_all(admitted.iter().map(|node| async move {
            if modify_node(cluster, node, cordon).await? {
                let msg = "Flotilla migration: cordoned; evicting pods";
                events::normal(cluster, ObjectRef::node(node), "FlotillaDraining", msg).await;
            }
            Ok::<_, StepError>(())
        }))
        .await;
        for (node, cordoned) in admitted.into_iter().zip(cordons) {
            cordoned?;
            let name = model::name(&node.metadata).to_string();
            tracing::info!(node = %name, "draining");
            active.insert(
                name,
                Active {
                    node,
                    started: Instant::now(),
                },
            );
        }
        let active_names: Vec<String> = active.keys().cloned().collect();
        let pass = Instant::now();
        let snap = snapshot(cluster, &active_names).await?;
        let read = pass.elapsed();
        let pl = plan(&snap, p);
        let refused = pl.refused();
        if !refused.is_empty() {
            return Err(StepError::DrainRefused { refused });
        }
        for x in pl.pods.iter().filter(|x| x.action == Action::Evict) {
            if seen.insert(x.pod.clone()) {
                total += 1;
            }
        }
        let now = Instant::now();

        // Nodes with nothing left are done.
        let done: Vec<String> = active_names
            .iter()
            .filter(|n| pl.remaining_on(n).next().is_none())
            .cloned()
            .collect();
        for n in done {
            if let Some(a) = active.remove(&n) {
                let took = a.started.elapsed();
                tracing::info!(node = %n, secs = took.as_secs_f64(), "drained");
                progress.observe(Observation::NodeDrain {
                    outcome: NodeDrainOutcome::Drained,
                    took,
                });
                events::normal(
                    cluster,
                    ObjectRef::node(&a.node),
                    "FlotillaDrained",
                    "Flotilla migration: no evictable pods left",
                )
                .await;
                out.drained.push(n);
            }
        }

        // Per-node timeouts.
        let timed_out: Vec<String> = active
            .iter()
            .filter(|(_, a)| now.duration_since(a.started) >= p.node_timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for n in timed_out {
            let blockers = blockers_on(&pl, &n, &pacing, now);
            let Some(a) = active.remove(&n) else { continue };
            let waited = now.duration_since(a.started);
            progress.observe(Observation::NodeDrain {
                outcome: match p.on_blocked {
                    OnBlocked::SkipNode => NodeDrainOutcome::Skipped,
                    OnBlocked::Fail | OnBlocked::ForceAfter(_) => NodeDrainOutcome::Blocked,
                },
                took: waited,
            });
            let list: Vec<String> = blockers.iter().take(10).map(ToString::to_string).collect();
            match p.on_blocked {
                OnBlocked::SkipNode => {
                    tracing::warn!(node = %n, pods = blockers.len(), "skipping node: not drained in time");
                    let msg = format!(
                        "Flotilla migration: not drained after {}; left cordoned: {}",
                        format_duration(waited),
                        list.join("; ")
                    );
                    events::warning(cluster, ObjectRef::node(&a.node), "FlotillaDrainSkipped", msg).await;
                    out.skipped.push(SkippedNode { node: n, blockers });
                }
                OnBlocked::Fail | OnBlocked::ForceAfter(_) => {
                    let msg = format!(
                        "Flotilla migration: not drained after {}: {}",
                        format_duration(waited),
                        list.join("; ")
                    );
                    events::warning(cluster, ObjectRef::node(&a.node), "FlotillaDrainBlocked", msg).await;
                    return Err(StepError::DrainBlocked {
                        node: n,
                        blockers,
                        waited,
                    });
                }
            }
        }

        let still: BTreeSet<String> = active.keys().cloned().collect();
        let calls = schedule(&pl, &snap.pdbs, &still, p, &mut pacing, now);
        let results: Vec<(String, CallResult)> = futures::stream::iter(calls)
            .map(|call| async move {
                match call {
                    Call::Evict { pod, .. } => {
                        let (ns, name) = pod.split_once('/').unwrap_or(("", &pod));
                        let r = match cluster.evict(ns, name).await {
                            Ok(Eviction::Evicted | Eviction::Gone) => CallResult::Evicted,
                            Ok(Eviction::Blocked { pdbs, .. }) => {
                                CallResult::Blocked(pdbs.into_iter().map(|b| format!("{ns}/{b}")).collect())
                            }
                            Err(e) => CallResult::Failed(e),
                        };
                        (pod, r)
                    }
                    Call::ForceDelete {
                        pod,
                        node,
                        pdbs,
                        blocked_for,
                    } => {
                        let (ns, name) = pod.split_once('/').unwrap_or(("", &pod));
                        let r = match cluster.delete_pod(ns, name).await {
                            Ok(()) => CallResult::Forced(ForcedDeletion {
                                pod: pod.clone(),
                                node,
                                pdbs,
                                blocked_for,
                            }),
                            Err(e) => CallResult::Failed(e),
                        };
                        (pod, r)
                    }
                }
            })
            .buffer_unordered(p.max_in_flight)
            .collect()
            .await;
        tracing::debug!(
            read_ms = read.as_millis() as u64,
            pass_ms = pass.elapsed().as_millis() as u64,
            pods = snap.pods.len(),
            results = results.len(),
            "drain pass"
        );
        let plan_pdbs: BTreeMap<&str, &Vec<String>> =
            pl.pods.iter().map(|x| (x.pod.as_str(), &x.pdbs)).collect();
        for (pod, r) in results {
            match r {
                CallResult::Evicted => {
                    progress.observe(Observation::Eviction(EvictionOutcome::Allowed));
                    out.evicted += 1;
                    pacing.pods.remove(&pod);
                }
                CallResult::Forced(f) => {
                    progress.observe(Observation::Eviction(EvictionOutcome::ForcedDelete));
                    tracing::warn!(pod = %f.pod, node = %f.node, pdbs = ?f.pdbs, "deleted despite PodDisruptionBudget");
                    let msg = format!(
                        "Flotilla migration: pod {} deleted despite PodDisruptionBudget {} after being blocked for {} (on-blocked=force-after)",
                        f.pod,
                        f.pdbs.join(", "),
                        format_duration(f.blocked_for)
                    );
                    if let Some(a) = active.get(&f.node) {
                        events::warning(
                            cluster,
                            ObjectRef::node(&a.node),
                            "FlotillaForcedDeletion",
                            msg.clone(),
                        )
                        .await;
                    }
                    if let Some(pod_obj) = snap.pods.iter().find(|x| model::key(&x.metadata) == f.pod) {
                        events::warning(cluster, ObjectRef::pod(pod_obj), "FlotillaForcedDeletion", msg)
                            .await;
                    }
                    pacing.pods.remove(&pod);
                    out.forced.push(f);
                }
                CallResult::Blocked(named) => {
                    out.refusals += 1;
                    let track = pacing.pods.entry(pod.clone()).or_default();
                    track.first_blocked.get_or_insert(now);
                    track.attempts += 1;
                    let jitter = rand::rng().random_range(0.5..1.5);
                    track.next_try = Some(now + backoff(track.attempts, jitter));
                    track.pdbs = if named.is_empty() {
                        plan_pdbs
                            .get(pod.as_str())
                            .map(|v| v.to_vec())
                            .unwrap_or_default()
                    } else {
                        named
                    };
                    track.reason = "blocked by PodDisruptionBudget".into();
                    progress.observe(Observation::Eviction(EvictionOutcome::Refused429 {
                        pdbs: track.pdbs.clone(),
                    }));
                }
                CallResult::Failed(e) => {
                    progress.observe(Observation::Eviction(EvictionOutcome::Error));
                    let track = pacing.pods.entry(pod.clone()).or_default();
                    track.errors += 1;
                    if !e.is_transient() || track.errors > 10 {
                        return Err(e.into());
                    }
                    track.first_blocked.get_or_insert(now);
                    track.attempts += 1;
                    let jitter = rand::rng().random_range(0.5..1.5);
                    track.next_try = Some(now + backoff(track.attempts, jitter));
                    track.reason = format!("eviction failing: {e}");
                }
            }
        }

        let remaining: u64 = active.keys().map(|n| pl.remaining_on(n).count() as u64).sum();
        let blockers: Vec<Blocker> = active
            .keys()
            .flat_map(|n| blockers_on(&pl, n, &pacing, now))
            .filter(|b| b.reason != "eviction pending" && b.reason != "terminating")
            .collect();
        let moved = out.evicted + out.forced.len() as u64;
        let msg = format!(
            "{remaining} pod(s) left on {} node(s) draining, {} queued; {} drained, {} skipped",
            active.len(),
            queue.len(),
            out.drained.len(),
            out.skipped.len(),
        );
        progress.report(Progress {
            step: StepKind::Drain,
            done: moved.min(total),
            total: total.max(moved),
            message: msg,
            blockers,
        });

        if active.is_empty() && queue.is_empty() {
            out.elapsed = start.elapsed();
            return Ok(out);
        }
        tokio::time::sleep(p.poll).await;
    }
}

#[cfg(test)]
mod tests;
