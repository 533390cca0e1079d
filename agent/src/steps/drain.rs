//! `Drain`: cordon the old nodes, then evict through the Eviction API, as `kubectl drain` does
//! (DaemonSet and mirror pods skipped, emptyDir pods only when allowed, unmanaged pods only with
//! force) but several nodes at once, with evictions issued in parallel and paced by each
//! PodDisruptionBudget's `disruptionsAllowed` instead of hammering 429s. A per-node timeout and
//! an escalation policy (`fail`, `force-after`, `skip-node`) decide what happens to blocked pods.
//!
//! [`plan`] is pure (evict what, skip what, why); [`schedule`] decides, from the plan, the
//! budgets and what is already under way, what to send now; [`run`] keeps the pods on the
//! draining nodes and the budgets current through watches and schedules again on every change,
//! so an eviction goes out as soon as a budget allows it and a node is done as soon as its last
//! pod is gone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::str::FromStr;
use std::time::Duration;

use flotilla_proto::limits::MAX_DRAIN_CONCURRENCY;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
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
use crate::cluster::{Cluster, ClusterError, EventNote, EventType, Eviction, ObjectRef, Watched};
use crate::{events, inventory, model};

/// What to do with pods a PodDisruptionBudget keeps blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBlocked {
    /// Fail the step when a node is not empty by the per-node timeout (the default).
    #[default]
    Fail,
    /// Delete a pod despite its PDB once it has been blocked this long — with none of its
    /// budgets letting any eviction through meanwhile (recorded loudly).
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
    /// Longest wait without news: timers (backoff, timeouts, probes) and progress are looked at
    /// at least this often. Evictions themselves follow the watches, not this interval.
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
            poll: Duration::from_secs(1),
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
        if self.concurrency == 0 || self.concurrency > MAX_DRAIN_CONCURRENCY as usize {
            return Err(StepError::invalid(
                "drain-concurrency",
                format!(
                    "{} is out of range; use 1 to {MAX_DRAIN_CONCURRENCY} nodes at once",
                    self.concurrency
                ),
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

    /// The planned pods by reference, as [`schedule`] takes them.
    pub fn refs(&self) -> Vec<&PlannedPod> {
        self.pods.iter().collect()
    }
}

/// Decides, per pod, evict/wait/skip/refuse, as kubectl's drain filters do (pure).
pub fn plan(snapshot: &Snapshot, params: &Params) -> DrainPlan {
    let mut pods: Vec<PlannedPod> = snapshot
        .pods
        .iter()
        .map(|pod| plan_pod(pod, &snapshot.pdbs, params))
        .collect();
    pods.sort_by(|a, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
    DrainPlan { pods }
}

/// Decides what to do with one pod, given the PodDisruptionBudgets (pure).
pub fn plan_pod<'a>(
    pod: &Pod,
    pdbs: impl IntoIterator<Item = &'a PodDisruptionBudget>,
    params: &Params,
) -> PlannedPod {
    let meta = &pod.metadata;
    let ns = model::namespace(meta);
    let pdbs = pdbs
        .into_iter()
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
            "not managed by a controller (ReplicaSet, Job, StatefulSet, …); delete it with --force".into(),
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

/// Pacing state across passes: retries, and the budget this drain has used that the
/// budgets' status may not show yet.
#[derive(Debug, Default)]
pub struct Pacing {
    /// Per pod `namespace/name`.
    pub pods: BTreeMap<String, PodTrack>,
    /// Per PDB, when an eviction of one of its pods was last sent.
    pub probes: BTreeMap<String, Instant>,
    /// Per PDB, when the server last granted an eviction of one of its pods (progress: a pod is
    /// only blocked for as long as none of its budgets has let anything through).
    pub granted: BTreeMap<String, Instant>,
    /// Pods with a call in flight.
    pub in_flight: BTreeSet<String>,
    /// Pods evicted (or deleted) by this drain that the watch does not yet show terminating.
    pub evicted: BTreeSet<String>,
    /// Per PDB: evictions that take one of its disruptions (in flight: `None`; granted: when)
    /// and that its status has not been seen to count yet.
    pub spent: BTreeMap<String, BTreeMap<String, Option<Instant>>>,
    /// Per PDB: pods seen in its `status.disruptedPods` (the API server's record of a granted
    /// eviction), with when, so a grant seen before its answer is not counted twice.
    pub disrupted_seen: BTreeMap<String, BTreeMap<String, Instant>>,
}

/// How long a budget at zero goes without a real eviction attempt (in case its status is stale).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a granted eviction is counted against its budget when the budget's status is never
/// seen to record it (a re-listed watch, or a server that does not fill `disruptedPods`).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a pod seen in a budget's `disruptedPods` is remembered.
const DISRUPTED_MEMORY: Duration = Duration::from_secs(60);

impl Pacing {
    /// Records what a budget's status says about granted evictions (call on every change seen).
    pub fn saw_pdb(&mut self, pdb: &PodDisruptionBudget, now: Instant) {
        let key = model::key(&pdb.metadata);
        let ns = model::namespace(&pdb.metadata);
        let disrupted = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref());
        if let Some(d) = disrupted.filter(|d| !d.is_empty()) {
            let seen = self.disrupted_seen.entry(key.clone()).or_default();
            for pod in d.keys() {
                seen.entry(format!("{ns}/{pod}")).or_insert(now);
            }
        }
        self.confirm(now);
    }

    /// Forgets budget use that the budgets' status now shows, or that is past [`CONFIRM_TIMEOUT`].
    pub fn confirm(&mut self, now: Instant) {
        for seen in self.disrupted_seen.values_mut() {
            seen.retain(|_, t| now.duration_since(*t) < DISRUPTED_MEMORY);
        }
        self.disrupted_seen.retain(|_, s| !s.is_empty());
        let seen = &self.disrupted_seen;
        for (pdb, pods) in self.spent.iter_mut() {
            pods.retain(|pod, granted| {
                let recorded = seen.get(pdb).is_some_and(|s| s.contains_key(pod));
                let expired = granted.is_some_and(|t| now.duration_since(t) >= CONFIRM_TIMEOUT);
                !recorded && !expired
            });
        }
        self.spent.retain(|_, p| !p.is_empty());
    }

    /// Budget this drain has used from `pdb` that its status does not show yet.
    pub fn unconfirmed(&self, pdb: &str) -> i32 {
        self.spent.get(pdb).map_or(0, |p| p.len() as i32)
    }

    /// Since when `pod` (covered by `pdbs`) has been blocked with none of its budgets granting
    /// anything, if it is blocked.
    pub fn blocked_since(&self, pod: &str, pdbs: &[String]) -> Option<Instant> {
        let first = self.pods.get(pod)?.first_blocked?;
        let progress = pdbs.iter().filter_map(|b| self.granted.get(b)).max().copied();
        Some(progress.map_or(first, |g| g.max(first)))
    }

    /// The server granted `pod`'s eviction, taking a disruption from each of `spends`.
    pub fn grant(&mut self, pod: &str, spends: &[String], now: Instant) {
        self.in_flight.remove(pod);
        self.pods.remove(pod);
        self.evicted.insert(pod.to_string());
        for b in spends {
            self.granted.insert(b.clone(), now);
            if let Some(e) = self.spent.get_mut(b).and_then(|s| s.get_mut(pod)) {
                *e = Some(now);
            }
        }
        self.confirm(now);
    }

    /// A call about `pod` ended without taking anything from a budget.
    pub fn release(&mut self, pod: &str) {
        self.in_flight.remove(pod);
        for pods in self.spent.values_mut() {
            pods.remove(pod);
        }
        self.spent.retain(|_, p| !p.is_empty());
    }
}

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
        /// The budgets it takes a disruption from (none for a pod that is not Ready: such
        /// evictions take nothing from a budget).
        spends: Vec<String>,
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

impl Call {
    /// The pod the call is about.
    pub fn pod(&self) -> &str {
        match self {
            Call::Evict { pod, .. } | Call::ForceDelete { pod, .. } => pod,
        }
    }
}

/// Decides what to send now (pure apart from the pacing state): evictions within each PDB's
/// `disruptionsAllowed` less what this drain has used that the status does not show yet,
/// forced deletions past `force-after`; marks the rest blocked. At most
/// `params.max_in_flight` calls are outstanding. `pods` is the plan (see [`DrainPlan::refs`]).
pub fn schedule<'a>(
    pods: &[&PlannedPod],
    pdbs: impl IntoIterator<Item = &'a PodDisruptionBudget>,
    active: &BTreeSet<String>,
    params: &Params,
    pacing: &mut Pacing,
    now: Instant,
) -> Vec<Call> {
    pacing.confirm(now);
    let status: HashMap<String, i32> = pdbs
        .into_iter()
        .map(|b| {
            (
                model::key(&b.metadata),
                b.status.as_ref().map_or(0, |s| s.disruptions_allowed),
            )
        })
        .collect();
    let mut budget: HashMap<&str, i32> = status
        .iter()
        .map(|(k, n)| (k.as_str(), n - pacing.unconfirmed(k)))
        .collect();
    let mut calls = Vec::new();
    if !pacing.pods.is_empty() || !pacing.evicted.is_empty() {
        let evictable: HashSet<&str> = pods
            .iter()
            .filter(|p| p.action == Action::Evict)
            .map(|p| p.pod.as_str())
            .collect();
        // Pods gone from the plan, and evicted pods the watch now shows terminating or gone,
        // need no more care.
        pacing.pods.retain(|k, _| evictable.contains(k.as_str()));
        pacing.evicted.retain(|k| evictable.contains(k.as_str()));
    }
    for p in pods
        .iter()
        .filter(|p| p.action == Action::Evict && active.contains(&p.node))
    {
        if pacing.in_flight.len() >= params.max_in_flight {
            break;
        }
        if pacing.in_flight.contains(&p.pod) || pacing.evicted.contains(&p.pod) {
            continue;
        }
        if let (OnBlocked::ForceAfter(after), Some(since)) =
            (params.on_blocked, pacing.blocked_since(&p.pod, &p.pdbs))
        {
            if now.duration_since(since) >= after {
                let pdbs = pacing
                    .pods
                    .get(&p.pod)
                    .map(|t| t.pdbs.clone())
                    .unwrap_or_default();
                pacing.in_flight.insert(p.pod.clone());
                calls.push(Call::ForceDelete {
                    pod: p.pod.clone(),
                    node: p.node.clone(),
                    pdbs,
                    blocked_for: now.duration_since(since),
                });
                continue;
            }
        }
        if pacing
            .pods
            .get(&p.pod)
            .and_then(|t| t.next_try)
            .is_some_and(|t| now < t)
        {
            continue;
        }
        // Pods that are not Ready take nothing from a budget: the server decides, at once.
        let exhausted = |b: &String| budget.get(b.as_str()).copied().unwrap_or(0) <= 0;
        if p.ready && p.pdbs.iter().any(exhausted) {
            // Probe a budget its status says is at zero, at most once per interval, in case
            // the status is stale; never one this drain is spending itself.
            let probe_due = p.pdbs.iter().filter(|b| exhausted(b)).all(|b| {
                status.get(b).copied().unwrap_or(0) <= 0
                    && pacing.unconfirmed(b) == 0
                    && pacing
                        .probes
                        .get(b)
                        .is_none_or(|t| now.duration_since(*t) >= PROBE_INTERVAL)
            });
            if !probe_due {
                let blocking: Vec<String> = p.pdbs.iter().filter(|b| exhausted(b)).cloned().collect();
                let track = pacing.pods.entry(p.pod.clone()).or_default();
                track.first_blocked.get_or_insert(now);
                if track.pdbs != blocking {
                    track.pdbs = blocking;
                }
                if track.reason.is_empty() {
                    track.reason = "blocked by PodDisruptionBudget".into();
                }
                continue;
            }
        }
        let spends = if p.ready { p.pdbs.clone() } else { Vec::new() };
        for b in &spends {
            if let Some(n) = budget.get_mut(b.as_str()) {
                *n -= 1;
            }
            pacing
                .spent
                .entry(b.clone())
                .or_default()
                .insert(p.pod.clone(), None);
        }
        for b in &p.pdbs {
            pacing.probes.insert(b.clone(), now);
        }
        pacing.in_flight.insert(p.pod.clone());
        calls.push(Call::Evict {
            pod: p.pod.clone(),
            node: p.node.clone(),
            spends,
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

/// Why a pod is left when its budgets are spent by evictions of this drain still under way.
const WAITING: &str = "waiting for its PodDisruptionBudget (evictions under way)";

/// Each pod left on `node` and what holds it.
fn blockers_on(pods: &[&PlannedPod], node: &str, pacing: &Pacing, now: Instant) -> Vec<Blocker> {
    pods.iter()
        .filter(|p| p.node == node && matches!(p.action, Action::Evict | Action::Wait))
        .map(|p| {
            let track = pacing.pods.get(&p.pod);
            let since = pacing.blocked_since(&p.pod, &p.pdbs);
            let (reason, pdbs, for_) = match (&p.action, track, since) {
                (Action::Wait, _, _) => ("terminating".to_string(), Vec::new(), Duration::ZERO),
                // Its budgets are at zero only through this drain's own evictions, which their
                // status does not show yet: it is next in line, not blocked.
                (_, Some(t), Some(_))
                    if !t.pdbs.is_empty() && t.pdbs.iter().all(|b| pacing.unconfirmed(b) > 0) =>
                {
                    (WAITING.to_string(), t.pdbs.clone(), Duration::ZERO)
                }
                (_, Some(t), Some(since)) => (t.reason.clone(), t.pdbs.clone(), now.duration_since(since)),
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

/// The pods of one node the drain follows, as its watch shows them.
#[derive(Debug, Default)]
struct NodePods {
    /// The watch has delivered its first list.
    listed: bool,
    /// By `namespace/name`: the pod and what to do with it.
    pods: BTreeMap<String, (Pod, PlannedPod)>,
}

/// What the drain knows of the cluster, kept current by watches.
#[derive(Debug, Default)]
struct View {
    /// The nodes followed: those being drained, and with one watch of every pod, those queued.
    nodes: BTreeMap<String, NodePods>,
    pdbs: BTreeMap<String, PodDisruptionBudget>,
    pdbs_listed: bool,
}

impl View {
    fn plan_pod(&self, pod: Pod, params: &Params) -> (String, (Pod, PlannedPod)) {
        let planned = plan_pod(&pod, self.pdbs.values(), params);
        (planned.pod.clone(), (pod, planned))
    }

    /// Starts following `node` (its pods arrive with the next list).
    fn follow(&mut self, node: &str) {
        self.nodes.entry(node.to_string()).or_default();
    }

    /// A change from the watch of `node`'s pods, or (`None`) from the watch of every pod.
    fn apply_pod(&mut self, node: Option<&str>, change: Watched<Pod>, params: &Params) {
        let Some(node) = node else {
            // One watch of every pod: hand each change to the node it is about.
            match change {
                Watched::Listed(pods) => {
                    let mut by_node: BTreeMap<String, Vec<Pod>> =
                        self.nodes.keys().map(|n| (n.clone(), Vec::new())).collect();
                    for pod in pods {
                        if let Some(list) = model::pod_node(&pod).and_then(|n| by_node.get_mut(n)) {
                            list.push(pod);
                        }
                    }
                    for (n, pods) in by_node {
                        self.apply_pod(Some(&n), Watched::Listed(pods), params);
                    }
                }
                Watched::Applied(pod) | Watched::Deleted(pod) if model::pod_node(&pod).is_none() => {
                    let _ = pod; // not bound to a node yet: no drained node's concern
                }
                Watched::Applied(pod) => {
                    let n = model::pod_node(&pod).unwrap_or_default().to_string();
                    self.apply_pod(Some(&n), Watched::Applied(pod), params);
                }
                Watched::Deleted(pod) => {
                    let n = model::pod_node(&pod).unwrap_or_default().to_string();
                    self.apply_pod(Some(&n), Watched::Deleted(pod), params);
                }
            }
            return;
        };
        if !self.nodes.contains_key(node) {
            return; // a node not followed, or already done
        }
        match change {
            Watched::Listed(pods) => {
                let planned: BTreeMap<String, (Pod, PlannedPod)> =
                    pods.into_iter().map(|p| self.plan_pod(p, params)).collect();
                let n = self.nodes.entry(node.to_string()).or_default();
                n.pods = planned;
                n.listed = true;
            }
            Watched::Applied(pod) => {
                let here = model::pod_node(&pod) == Some(node);
                let (key, entry) = self.plan_pod(pod, params);
                let n = self.nodes.entry(node.to_string()).or_default();
                if here {
                    n.pods.insert(key, entry);
                } else {
                    n.pods.remove(&key);
                }
            }
            Watched::Deleted(pod) => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.pods.remove(&model::key(&pod.metadata));
                }
            }
        }
    }

    fn apply_pdb(&mut self, change: Watched<PodDisruptionBudget>, params: &Params, pacing: &mut Pacing) {
        let now = Instant::now();
        let selector = |b: &PodDisruptionBudget| b.spec.as_ref().and_then(|s| s.selector.clone());
        // Whether budgets came, went or changed selectors: which pods they cover changes.
        let reshaped = match change {
            Watched::Listed(all) => {
                for b in &all {
                    pacing.saw_pdb(b, now);
                }
                let before: BTreeMap<String, _> =
                    self.pdbs.iter().map(|(k, b)| (k.clone(), selector(b))).collect();
                self.pdbs = all.into_iter().map(|b| (model::key(&b.metadata), b)).collect();
                self.pdbs_listed = true;
                let after: BTreeMap<String, _> =
                    self.pdbs.iter().map(|(k, b)| (k.clone(), selector(b))).collect();
                before != after
            }
            Watched::Applied(b) => {
                if let Some(st) = b.status.as_ref() {
                    tracing::trace!(pdb = %model::key(&b.metadata), allowed = st.disruptions_allowed, healthy = st.current_healthy, disrupted = st.disrupted_pods.as_ref().map_or(0, |d| d.len()), "budget");
                }
                pacing.saw_pdb(&b, now);
                let key = model::key(&b.metadata);
                let reshaped = self
                    .pdbs
                    .get(&key)
                    .is_none_or(|old| selector(old) != selector(&b));
                self.pdbs.insert(key, b);
                reshaped
            }
            Watched::Deleted(b) => self.pdbs.remove(&model::key(&b.metadata)).is_some(),
        };
        if reshaped {
            let pdbs: Vec<&PodDisruptionBudget> = self.pdbs.values().collect();
            for n in self.nodes.values_mut() {
                for (pod, planned) in n.pods.values_mut() {
                    *planned = plan_pod(pod, pdbs.iter().copied(), params);
                }
            }
        }
    }

    /// The plan over the pods of the listed nodes among `active`, by node then name.
    fn planned<T>(&self, active: &BTreeMap<String, T>) -> Vec<&PlannedPod> {
        self.nodes
            .iter()
            .filter(|(name, n)| n.listed && active.contains_key(*name))
            .flat_map(|(_, n)| n.pods.values().map(|(_, planned)| planned))
            .collect()
    }

    fn pod(&self, node: &str, key: &str) -> Option<&Pod> {
        self.nodes.get(node)?.pods.get(key).map(|(p, _)| p)
    }
}

enum CallResult {
    Evicted,
    Gone,
    Blocked(Vec<String>),
    Failed(ClusterError),
    Forced,
}

async fn send<C: Cluster>(cluster: &C, call: Call) -> (Call, CallResult) {
    let pod = call.pod().to_string();
    tracing::trace!(pod = %pod, "evict sent");
    let (ns, name) = pod.split_once('/').unwrap_or(("", &pod));
    let result = match &call {
        Call::Evict { .. } => match cluster.evict(ns, name).await {
            Ok(Eviction::Evicted) => CallResult::Evicted,
            Ok(Eviction::Gone) => CallResult::Gone,
            Ok(Eviction::Blocked { pdbs, .. }) => {
                CallResult::Blocked(pdbs.into_iter().map(|b| format!("{ns}/{b}")).collect())
            }
            Err(e) => CallResult::Failed(e),
        },
        Call::ForceDelete { .. } => match cluster.delete_pod(ns, name).await {
            Ok(()) => CallResult::Forced,
            Err(e) => CallResult::Failed(e),
        },
    };
    tracing::trace!(pod = %pod, ok = matches!(result, CallResult::Evicted), "evict answered");
    (call, result)
}

struct Active {
    node: Node,
    started: Instant,
    /// The task forwarding the node's own pod watch, if it has one.
    watch: Option<tokio::task::AbortHandle>,
}

/// How often progress is reported at most while evictions are under way.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The drain's state between events.
struct Drain<'a, C> {
    cluster: &'a C,
    p: &'a Params,
    progress: &'a dyn ProgressSink,
    view: View,
    pacing: Pacing,
    queue: VecDeque<Node>,
    active: BTreeMap<String, Active>,
    out: Output,
    /// Evictable pods seen so far (the progress total).
    seen: BTreeSet<String>,
    /// Evictable pods per node at the start (for nodes still queued).
    queued_pods: BTreeMap<String, u64>,
    /// Events to record (sent beside the drain, not waited for).
    notes: Vec<EventNote>,
    /// Pods being deleted despite their budget, as Events name them (the pod may be gone from
    /// the view by the time the deletion is answered).
    forcing: BTreeMap<String, ObjectRef>,
    last_report: Option<Instant>,
}

impl<C: Cluster> Drain<'_, C> {
    fn warn(&mut self, regarding: ObjectRef, reason: &str, message: String) {
        self.notes
            .push(events::note(regarding, EventType::Warning, reason, message));
    }

    /// Cordons nodes from the queue up to the bound and starts watching their pods.
    async fn admit(&mut self, feeds: &mut Feeds) -> Result<(), StepError> {
        let mut admitted = Vec::new();
        while self.active.len() + admitted.len() < self.p.concurrency {
            let Some(node) = self.queue.pop_front() else { break };
            admitted.push(node);
        }
        let cluster = self.cluster;
        // The pods' watches start listing while the nodes are cordoned; nothing is evicted
        // before a node is cordoned (it is not active before).
        let watches: Vec<_> = admitted
            .iter()
            .map(|node| {
                let name = model::name(&node.metadata);
                self.view.follow(name);
                feeds.watch_node(cluster, name)
            })
            .collect();
        let cordons =
            futures::future::join_all(admitted.iter().map(|node| modify_node(cluster, node, cordon))).await;
        for ((node, cordoned), watch) in admitted.into_iter().zip(cordons).zip(watches) {
            if cordoned? {
                let msg = "Flotilla migration: cordoned; evicting pods";
                let note = events::note(ObjectRef::node(&node), EventType::Normal, "FlotillaDraining", msg);
                self.notes.push(note);
            }
            let name = model::name(&node.metadata).to_string();
            tracing::info!(node = %name, "draining");
            self.active.insert(
                name,
                Active {
                    node,
                    started: Instant::now(),
                    watch,
                },
            );
        }
        Ok(())
    }

    /// Takes one answer: counts it, spends or frees budget, schedules a retry.
    fn answered(&mut self, call: Call, result: CallResult) -> Result<(), StepError> {
        let now = Instant::now();
        let pod = call.pod().to_string();
        match result {
            CallResult::Evicted => {
                let spends = match &call {
                    Call::Evict { spends, .. } => spends.as_slice(),
                    Call::ForceDelete { .. } => &[],
                };
                self.pacing.grant(&pod, spends, now);
                self.out.evicted += 1;
                self.progress
                    .observe(Observation::Eviction(EvictionOutcome::Allowed));
            }
            CallResult::Gone => {
                self.pacing.release(&pod);
                self.pacing.pods.remove(&pod);
                self.pacing.evicted.insert(pod);
            }
            CallResult::Forced => {
                self.pacing.release(&pod);
                self.pacing.pods.remove(&pod);
                self.pacing.evicted.insert(pod.clone());
                self.progress
                    .observe(Observation::Eviction(EvictionOutcome::ForcedDelete));
                let Call::ForceDelete {
                    pod,
                    node,
                    pdbs,
                    blocked_for,
                } = call
                else {
                    return Ok(());
                };
                let f = ForcedDeletion {
                    pod,
                    node,
                    pdbs,
                    blocked_for,
                };
                tracing::warn!(pod = %f.pod, node = %f.node, pdbs = ?f.pdbs, "deleted despite PodDisruptionBudget");
                let msg = format!(
                    "Flotilla migration: pod {} deleted despite PodDisruptionBudget {} after being blocked for {} (on-blocked=force-after)",
                    f.pod,
                    f.pdbs.join(", "),
                    format_duration(f.blocked_for)
                );
                if let Some(a) = self.active.get(&f.node) {
                    let node = ObjectRef::node(&a.node);
                    self.warn(node, "FlotillaForcedDeletion", msg.clone());
                }
                if let Some(pod) = self.forcing.remove(&f.pod) {
                    self.warn(pod, "FlotillaForcedDeletion", msg);
                }
                self.out.forced.push(f);
            }
            CallResult::Blocked(named) => {
                tracing::debug!(pod = %pod, pdbs = ?named, "eviction refused (429)");
                self.pacing.release(&pod);
                self.out.refusals += 1;
                let planned_pdbs = match &call {
                    Call::Evict { node, .. } => self
                        .view
                        .nodes
                        .get(node)
                        .and_then(|n| n.pods.get(&pod))
                        .map(|(_, planned)| planned.pdbs.clone())
                        .unwrap_or_default(),
                    Call::ForceDelete { pdbs, .. } => pdbs.clone(),
                };
                let track = self.pacing.pods.entry(pod).or_default();
                track.first_blocked.get_or_insert(now);
                track.attempts += 1;
                let jitter = rand::rng().random_range(0.5..1.5);
                track.next_try = Some(now + backoff(track.attempts, jitter));
                track.pdbs = if named.is_empty() { planned_pdbs } else { named };
                self.progress
                    .observe(Observation::Eviction(EvictionOutcome::Refused429 {
                        pdbs: track.pdbs.clone(),
                    }));
                track.reason = "blocked by PodDisruptionBudget".into();
            }
            CallResult::Failed(e) => {
                self.pacing.release(&pod);
                self.progress
                    .observe(Observation::Eviction(EvictionOutcome::Error));
                let track = self.pacing.pods.entry(pod).or_default();
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
        Ok(())
    }

    /// Looks at the view: finished and timed-out nodes, progress; returns the calls to send.
    fn react(&mut self) -> Result<Vec<Call>, StepError> {
        if !self.view.pdbs_listed {
            return Ok(Vec::new());
        }
        let now = Instant::now();
        // Pods left per node (to evict or terminating); refusals; new pods for the total.
        let mut left: BTreeMap<String, u64> = BTreeMap::new();
        {
            let pl = self.view.planned(&self.active);
            let refused: Vec<RefusedPod> = pl
                .iter()
                .filter_map(|p| match &p.action {
                    Action::Refuse(r) => Some(RefusedPod {
                        pod: p.pod.clone(),
                        node: p.node.clone(),
                        reason: r.clone(),
                    }),
                    _ => None,
                })
                .collect();
            if !refused.is_empty() {
                return Err(StepError::DrainRefused { refused });
            }
            for x in &pl {
                if x.action == Action::Evict && !self.seen.contains(&x.pod) {
                    self.seen.insert(x.pod.clone());
                }
                if matches!(x.action, Action::Evict | Action::Wait) {
                    match left.get_mut(x.node.as_str()) {
                        Some(n) => *n += 1,
                        None => {
                            left.insert(x.node.clone(), 1);
                        }
                    }
                }
            }
        }

        // Nodes whose watch has listed them and that have nothing left are done.
        let done: Vec<String> = self
            .active
            .keys()
            .filter(|n| self.view.nodes.get(*n).is_some_and(|v| v.listed))
            .filter(|n| !left.contains_key(n.as_str()))
            .cloned()
            .collect();
        let mut finished = Vec::new();
        for n in done {
            if let Some(a) = self.active.remove(&n) {
                if let Some(w) = a.watch {
                    w.abort();
                }
                self.view.nodes.remove(&n);
                let took = a.started.elapsed();
                tracing::info!(node = %n, secs = took.as_secs_f64(), "drained");
                self.progress.observe(Observation::NodeDrain {
                    outcome: NodeDrainOutcome::Drained,
                    took,
                });
                finished.push(a.node);
                self.out.drained.push(n);
            }
        }
        for node in &finished {
            let msg = "Flotilla migration: no evictable pods left";
            let note = events::note(ObjectRef::node(node), EventType::Normal, "FlotillaDrained", msg);
            self.notes.push(note);
        }

        // Per-node timeouts.
        let timed_out: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| now.duration_since(a.started) >= self.p.node_timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for n in timed_out {
            let blockers = blockers_on(&self.view.planned(&self.active), &n, &self.pacing, now);
            let Some(a) = self.active.remove(&n) else { continue };
            if let Some(w) = &a.watch {
                w.abort();
            }
            self.view.nodes.remove(&n);
            left.remove(&n);
            let waited = now.duration_since(a.started);
            let list: Vec<String> = blockers.iter().take(10).map(ToString::to_string).collect();
            self.progress.observe(Observation::NodeDrain {
                outcome: match self.p.on_blocked {
                    OnBlocked::SkipNode => NodeDrainOutcome::Skipped,
                    OnBlocked::Fail | OnBlocked::ForceAfter(_) => NodeDrainOutcome::Blocked,
                },
                took: waited,
            });
            match self.p.on_blocked {
                OnBlocked::SkipNode => {
                    tracing::warn!(node = %n, pods = blockers.len(), "skipping node: not drained in time");
                    let msg = format!(
                        "Flotilla migration: not drained after {}; left cordoned: {}",
                        format_duration(waited),
                        list.join("; ")
                    );
                    self.warn(ObjectRef::node(&a.node), "FlotillaDrainSkipped", msg);
                    self.out.skipped.push(SkippedNode { node: n, blockers });
                }
                OnBlocked::Fail | OnBlocked::ForceAfter(_) => {
                    let msg = format!(
                        "Flotilla migration: not drained after {}: {}",
                        format_duration(waited),
                        list.join("; ")
                    );
                    self.warn(ObjectRef::node(&a.node), "FlotillaDrainBlocked", msg);
                    return Err(StepError::DrainBlocked {
                        node: n,
                        blockers,
                        waited,
                    });
                }
            }
        }

        let still: BTreeSet<String> = self.active.keys().cloned().collect();
        let pl = self.view.planned(&self.active);
        let calls = schedule(
            &pl,
            self.view.pdbs.values(),
            &still,
            self.p,
            &mut self.pacing,
            now,
        );
        for c in &calls {
            if let Call::ForceDelete { pod, node, .. } = c {
                if let Some(r) = self.view.pod(node, pod).map(ObjectRef::pod) {
                    self.forcing.insert(pod.clone(), r);
                }
            }
        }
        let due = !calls.is_empty()
            || self
                .last_report
                .is_none_or(|t| now.duration_since(t) >= PROGRESS_EVERY);
        if due {
            let blockers: Vec<Blocker> = still
                .iter()
                .flat_map(|n| blockers_on(&pl, n, &self.pacing, now))
                .filter(|b| !matches!(b.reason.as_str(), "eviction pending" | "terminating" | WAITING))
                .collect();
            drop(pl);
            self.report(left.values().sum(), blockers, now);
        }
        Ok(calls)
    }

    /// Reports progress: pods moved of those seen, what is left, what blocks.
    fn report(&mut self, remaining: u64, blockers: Vec<Blocker>, now: Instant) {
        self.last_report = Some(now);
        let queued: u64 = self
            .queue
            .iter()
            .filter_map(|n| self.queued_pods.get(model::name(&n.metadata)))
            .sum();
        let left_behind: u64 = self.out.skipped.iter().map(|s| s.blockers.len() as u64).sum();
        let total = self.seen.len() as u64;
        let left = remaining + queued + left_behind;
        let msg = format!(
            "{remaining} pod(s) left on {} node(s) draining, {} queued; {} drained, {} skipped",
            self.active.len(),
            self.queue.len(),
            self.out.drained.len(),
            self.out.skipped.len(),
        );
        self.progress.report(Progress {
            step: StepKind::Drain,
            done: total.saturating_sub(left),
            total: total.max(left),
            message: msg,
            blockers,
        });
    }

    /// When something is next due without news: a retry, a probe, a timeout, a force-after, a
    /// budget use to forget; at the latest `poll` from now.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + self.p.poll;
        let mut at = |t: Instant| {
            if t > now && t < wake {
                wake = t;
            }
        };
        for a in self.active.values() {
            at(a.started + self.p.node_timeout);
        }
        for (pod, t) in &self.pacing.pods {
            if let Some(n) = t.next_try {
                at(n);
            }
            if let (OnBlocked::ForceAfter(d), Some(since)) =
                (self.p.on_blocked, self.pacing.blocked_since(pod, &t.pdbs))
            {
                at(since + d);
            }
        }
        for t in self.pacing.probes.values() {
            at(*t + PROBE_INTERVAL);
        }
        for t in self.pacing.spent.values().flat_map(|p| p.values()).flatten() {
            at(*t + CONFIRM_TIMEOUT);
        }
        wake
    }
}

/// A pod watch's change, tagged with its node (`None`: the watch of every pod).
type PodChange = (Option<String>, crate::cluster::Result<Watched<Pod>>);

/// Above this many nodes drained at once, the drain watches every pod in the cluster (keeping
/// only the drained nodes') instead of each node's pods: every watch is a connection of its own
/// (kube-rs speaks HTTP/1.1) and one more watcher the API server feeds each change to.
pub const WATCH_PER_NODE_UP_TO: usize = 8;

/// The watches, each read by its own task (decoding happens there, beside the drain), their
/// changes sent on to the drain: budgets on one channel, pods on another, so a budget change
/// never waits behind a burst of pod changes. Dropping it stops every watch.
struct Feeds {
    tasks: tokio::task::JoinSet<()>,
    pods_tx: tokio::sync::mpsc::Sender<PodChange>,
    pods: tokio::sync::mpsc::Receiver<PodChange>,
    pdbs: tokio::sync::mpsc::Receiver<crate::cluster::Result<Watched<PodDisruptionBudget>>>,
    /// One watch of every pod instead of one per node.
    whole_cluster: bool,
}

/// Changes buffered per channel before a watch waits for the drain to catch up.
const FEED_BUFFER: usize = 8192;

impl Feeds {
    /// Starts the budgets' watch, and with `whole_cluster` the watch of every pod (of which only
    /// pods bound to one of `group` are passed on).
    fn new<C: Cluster>(cluster: &C, whole_cluster: bool, group: &[String]) -> Feeds {
        let mut tasks = tokio::task::JoinSet::new();
        let (pdbs_tx, pdbs) = tokio::sync::mpsc::channel(FEED_BUFFER);
        let mut pdb_watch = cluster.watch_pdbs();
        tasks.spawn(async move {
            while let Some(change) = pdb_watch.next().await {
                if pdbs_tx.send(change).await.is_err() {
                    return;
                }
            }
        });
        let (pods_tx, pods) = tokio::sync::mpsc::channel(FEED_BUFFER);
        let mut feeds = Feeds {
            tasks,
            pods_tx,
            pods,
            pdbs,
            whole_cluster,
        };
        if whole_cluster {
            let group: HashSet<String> = group.iter().cloned().collect();
            let ours = move |p: &Pod| model::pod_node(p).is_some_and(|n| group.contains(n));
            let watch = cluster.watch_pods(None).filter_map(move |change| {
                let change = match change {
                    Ok(Watched::Listed(mut all)) => {
                        all.retain(&ours);
                        Some(Ok(Watched::Listed(all)))
                    }
                    Ok(Watched::Applied(p) | Watched::Deleted(p)) if !ours(&p) => None,
                    other => Some(other),
                };
                futures::future::ready(change)
            });
            feeds.forward(watch.boxed(), None);
        }
        feeds
    }

    /// Reads `watch` in a task of its own, sending its changes on tagged with `node`.
    fn forward(
        &mut self,
        mut watch: crate::cluster::WatchStream<Pod>,
        node: Option<String>,
    ) -> tokio::task::AbortHandle {
        let tx = self.pods_tx.clone();
        // Forget watches already stopped.
        while self.tasks.try_join_next().is_some() {}
        self.tasks.spawn(async move {
            while let Some(change) = watch.next().await {
                if tx.send((node.clone(), change)).await.is_err() {
                    return;
                }
            }
        })
    }

    /// Starts watching the pods of `node`, unless every pod is watched already; abort the
    /// handle to stop.
    fn watch_node<C: Cluster>(&mut self, cluster: &C, node: &str) -> Option<tokio::task::AbortHandle> {
        if self.whole_cluster {
            return None;
        }
        Some(self.forward(cluster.watch_pods(Some(node)), Some(node.to_string())))
    }
}

/// Pod changes taken in at most before the drain decides again (budget changes and answers are
/// always all taken in first).
const POD_BATCH: usize = 256;

/// A watch error: fatal unless retrying may help (the watch goes on by itself).
fn watch_error(e: ClusterError) -> Result<(), StepError> {
    if e.is_transient() {
        tracing::warn!(error = %e, "watch failed; it resumes by itself");
        Ok(())
    } else {
        Err(e.into())
    }
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

    let whole_cluster = p.concurrency > WATCH_PER_NODE_UP_TO;
    let mut feeds = Feeds::new(cluster, whole_cluster, &names);
    let mut view = View::default();

    // Refuse up front, before cordoning anything, if some pod needs a flag.
    let first = snapshot(cluster, &names).await?;
    let first_plan = plan(&first, p);
    if whole_cluster {
        // With one watch of every pod, every node is followed from the start, seeded with
        // these lists until the watch's own arrives, so no node waits for the whole cluster's.
        let mut by_node: BTreeMap<&str, Vec<Pod>> = names.iter().map(|n| (n.as_str(), Vec::new())).collect();
        for pod in first.pods {
            if let Some(list) = model::pod_node(&pod).and_then(|n| by_node.get_mut(n)) {
                list.push(pod);
            }
        }
        for (n, pods) in by_node {
            view.follow(n);
            view.apply_pod(Some(n), Watched::Listed(pods), p);
        }
    }
    let refused = first_plan.refused();
    if !refused.is_empty() {
        return Err(StepError::DrainRefused { refused });
    }
    let skipped_pods = first_plan
        .pods
        .iter()
        .filter(|x| matches!(x.action, Action::Skip(_)))
        .count() as u64;
    let seen = first_plan
        .pods
        .iter()
        .filter(|x| matches!(x.action, Action::Evict | Action::Wait))
        .map(|x| x.pod.clone())
        .collect();
    let mut queued_pods: BTreeMap<String, u64> = BTreeMap::new();
    for x in first_plan
        .pods
        .iter()
        .filter(|x| matches!(x.action, Action::Evict | Action::Wait))
    {
        *queued_pods.entry(x.node.clone()).or_default() += 1;
    }
    let mut d = Drain {
        cluster,
        p,
        progress,
        view,
        pacing: Pacing::default(),
        queue: nodes.into_iter().collect(),
        active: BTreeMap::new(),
        out: Output {
            drained: Vec::new(),
            skipped: Vec::new(),
            evicted: 0,
            forced: Vec::new(),
            skipped_pods,
            refusals: 0,
            elapsed: Duration::ZERO,
        },
        seen,
        queued_pods,
        notes: Vec::new(),
        forcing: BTreeMap::new(),
        last_report: None,
    };
    let mut calls = FuturesUnordered::new();
    // Events go out beside the drain; they are best effort and never hold it up.
    let mut side = FuturesUnordered::new();
    let pdbs_ended = || -> StepError {
        ClusterError::Transport {
            what: "watch poddisruptionbudgets".into(),
            message: "the watch ended".into(),
        }
        .into()
    };

    let result: Result<(), StepError> = async {
        let mut news: u64 = 0;
        loop {
            d.admit(&mut feeds).await?;
            let t = Instant::now();
            let sent = d.react()?;
            tracing::trace!(
                news,
                calls = sent.len(),
                in_flight = calls.len(),
                react_us = t.elapsed().as_micros() as u64,
                "drain pass"
            );
            news = 0;
            for call in sent {
                calls.push(send(cluster, call));
            }
            for note in d.notes.drain(..) {
                side.push(events::send(cluster, note));
            }
            if d.active.is_empty() && d.queue.is_empty() {
                return Ok(());
            }

            // Wait for news — a budget change, an answer, a pod change — or the next timer.
            let wake = d.next_wake(Instant::now());
            tokio::select! {
                biased;
                change = feeds.pdbs.recv() => match change {
                    Some(Ok(change)) => d.view.apply_pdb(change, p, &mut d.pacing),
                    Some(Err(e)) => watch_error(e)?,
                    None => return Err(pdbs_ended()),
                },
                Some((call, result)) = calls.next(), if !calls.is_empty() => d.answered(call, result)?,
                Some((node, change)) = feeds.pods.recv() => match change {
                    Ok(change) => d.view.apply_pod(node.as_deref(), change, p),
                    Err(e) => watch_error(e)?,
                },
                Some(()) = side.next(), if !side.is_empty() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            news += 1;
            // Take in what else is already there before deciding again: every budget change
            // and answer, pod changes up to a batch.
            let mut pods_taken = 0;
            loop {
                let mut any = false;
                loop {
                    match feeds.pdbs.try_recv() {
                        Ok(Ok(change)) => d.view.apply_pdb(change, p, &mut d.pacing),
                        Ok(Err(e)) => watch_error(e)?,
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return Err(pdbs_ended()),
                    }
                    any = true;
                    news += 1;
                }
                while let Some(Some((call, result))) = calls.next().now_or_never() {
                    d.answered(call, result)?;
                    any = true;
                    news += 1;
                }
                while pods_taken < POD_BATCH {
                    let Ok((node, change)) = feeds.pods.try_recv() else {
                        break;
                    };
                    match change {
                        Ok(change) => d.view.apply_pod(node.as_deref(), change, p),
                        Err(e) => watch_error(e)?,
                    }
                    pods_taken += 1;
                    any = true;
                    news += 1;
                }
                while let Some(Some(())) = side.next().now_or_never() {}
                if !any || pods_taken >= POD_BATCH {
                    break;
                }
            }
        }
    }
    .await;
    // Events still on their way (a drained node, a blocked node's reason) are sent before
    // the step answers.
    for note in d.notes.drain(..) {
        side.push(events::send(cluster, note));
    }
    while side.next().await.is_some() {}
    result?;
    d.report(0, Vec::new(), Instant::now());
    let mut out = d.out;
    out.elapsed = start.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests;
