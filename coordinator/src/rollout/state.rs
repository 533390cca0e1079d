//! The rollout state machine: a serde struct stored verbatim, and one pure transition function
//! `next(state, event, now) -> (state, actions)` ([`Rollout::apply`] in place). No I/O, no clock.
//!
//! # Contract with the caller (the engine)
//!
//! 1. **Persist before acting.** Write the returned state to the store, then perform the actions
//!    in order. A crash between the two is healed by [`Event::Restarted`], which re-issues every
//!    operation in flight ([`Action::StartOperation`] with the same id) and every pending stop.
//! 2. **Operation ids are decided here** (`{rollout}/{cluster}/{n}`, see [`operation_id`]).
//!    `StartOperation` means *ensure*: create the operation with that id unless it exists; if it
//!    exists and is over, report its outcome with [`Event::OperationFinished`]. So a replayed or
//!    re-issued start never runs the work twice.
//! 3. **Results are matched by operation id.** [`Event::OperationFinished`] (and the other
//!    operation events) for an id that is not the cluster's operation in flight change nothing:
//!    replays after a crash are harmless.
//! 4. **Tick.** Send [`Event::Tick`] at [`Rollout::next_deadline`] (soak ends, disconnected-agent
//!    timeouts) or periodically; every event also moves the rollout as far as it can go.
//!
//! # Scheduling
//!
//! At [`Event::Start`] each cluster joins the first stage whose selector (and the rollout's
//! selector) matches it. Stages run in order. A stage begins once the previous one is done and
//! soaked and, if it requires approval, once approved. Within it, clusters start in name order, at
//! most `maxConcurrency` at a time; a cluster's work is planned when its turn comes, from its last
//! inventory: a migration, or (upgrade) an optional migration of its self-managed group and then
//! one operation per minor hop. A cluster whose agent is disconnected when its turn comes waits
//! (others take the slot) and fails after the spec's `agentDisconnectTimeout`. When a stage's
//! failed clusters reach `maxFailures` the rollout halts: nothing new starts, running operations
//! are told to stop after their current step ([`Action::HaltOperation`]), and the rollout is
//! Failed once they have stopped. Pause stops new clusters and stages (running ones go on);
//! cancel starts nothing more and cancels the running operations.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::spec::{MigrationSpec, MinorVersion, RolloutSpec, Work};

/// Rollout, stage and per-cluster states as operators see them (the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RolloutState {
    /// Not started.
    Pending,
    /// Work is running (also while a halted or cancelled rollout waits for operations to stop).
    Running,
    /// A stage's approval gate is closed.
    WaitingForApproval,
    /// A stage is done; waiting out its soak before the next.
    Soaking,
    /// Done.
    Succeeded,
    /// Failed (see the reason and the failed clusters).
    Failed,
    /// Not run (see the reason).
    Skipped,
    /// Paused by an operator.
    Paused,
    /// Cancelled by an operator.
    Cancelled,
}

impl RolloutState {
    /// Whether nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RolloutState::Succeeded | RolloutState::Failed | RolloutState::Skipped | RolloutState::Cancelled
        )
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

// === inputs ===

/// What the rollout needs to know about one cluster of the fleet at [`Event::Start`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// The cluster's id.
    pub name: String,
    /// Its labels (what selectors match).
    pub labels: BTreeMap<String, String>,
    /// Whether its agent is connected now.
    pub connected: bool,
    /// When its agent was last heard from (the start of a disconnection).
    pub last_seen: Option<Timestamp>,
    /// Its last inventory, if its agent ever reported one.
    pub inventory: Option<ClusterInventory>,
}

/// The parts of an agent's inventory that planning needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInventory {
    /// The API server's version as reported (`v1.33.4-eks-1234567`).
    pub version: String,
    /// Names of its self-managed node groups.
    pub self_managed_nodegroups: Vec<String>,
}

/// How an operation started by the rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every step succeeded.
    Succeeded,
    /// A step failed for good.
    Failed {
        /// The failed step, as the plan names it (`Drain`).
        step: String,
        /// The stable error code, if any (`DRAIN_BLOCKED`).
        code: Option<String>,
        /// Why, in one line.
        reason: String,
    },
    /// Cancelled (and rolled back where it could be).
    Cancelled,
    /// Stopped after its current step on [`Action::HaltOperation`].
    Halted,
}

/// Something that happened to a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Begin: assign the fleet's clusters to stages and start the first. Ignored once started.
    Start {
        /// Every cluster the coordinator knows.
        clusters: Vec<ClusterFacts>,
    },
    /// The engine created (or found) the operation of an [`Action::StartOperation`].
    OperationStarted {
        /// The cluster.
        cluster: String,
        /// The operation.
        operation_id: String,
    },
    /// A cluster's operation moved to another step (shown as the cluster's current step).
    StepChanged {
        /// The cluster.
        cluster: String,
        /// The operation.
        operation_id: String,
        /// The step now running, as the plan names it.
        step: String,
    },
    /// A cluster's operation ended.
    OperationFinished {
        /// The cluster.
        cluster: String,
        /// The operation.
        operation_id: String,
        /// How it ended.
        outcome: Outcome,
    },
    /// A cluster's agent connected (with its inventory, if it sent one).
    AgentConnected {
        /// The cluster.
        cluster: String,
        /// Its fresh inventory.
        inventory: Option<ClusterInventory>,
    },
    /// A cluster's agent disconnected.
    AgentDisconnected {
        /// The cluster.
        cluster: String,
    },
    /// Time passed: end soaks, time out clusters waiting for their agent.
    Tick,
    /// The operator pauses: no new cluster or stage starts; running operations go on.
    Pause {
        /// Why (shown as the rollout's reason).
        reason: String,
    },
    /// The operator resumes a paused rollout.
    Resume,
    /// The operator cancels: nothing new starts, running operations are cancelled.
    Cancel {
        /// Why (shown as the rollout's reason).
        reason: String,
    },
    /// The operator opens a stage's approval gate.
    Approve {
        /// The stage's index.
        stage: usize,
        /// Who approved (the caller's certificate subject).
        by: String,
        /// A note.
        comment: String,
    },
    /// The coordinator restarted with this state on disk: re-issue what is in flight.
    Restarted,
}

// === outputs ===

/// The work of one operation the rollout starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationWork {
    /// A migration with these parameters.
    Migration(Box<MigrationSpec>),
    /// One minor-version hop.
    Upgrade {
        /// The version the cluster is at.
        from: MinorVersion,
        /// The version it goes to (`from` + 1).
        to: MinorVersion,
        /// Pass `force` to UpdateNodegroupVersion.
        force: bool,
        /// The rollout's target, where the hops end (preflight checks EKS offers it).
        goal: MinorVersion,
    },
}

/// What the caller must do after persisting the new state, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Ensure the operation `operation_id` exists on `cluster` and runs (create it with that id
    /// unless it exists; if it already ended, report its outcome), then send
    /// [`Event::OperationStarted`].
    StartOperation {
        /// The cluster.
        cluster: String,
        /// The id to create it with.
        operation_id: String,
        /// What it does.
        work: OperationWork,
    },
    /// Cancel the operation (a migration before its drain ends rolls back).
    CancelOperation {
        /// The cluster.
        cluster: String,
        /// The operation.
        operation_id: String,
    },
    /// Let the operation finish the step in flight safely, then stop it (outcome `Halted`).
    HaltOperation {
        /// The cluster.
        cluster: String,
        /// The operation.
        operation_id: String,
    },
    /// Append a line to the rollout's event log.
    RecordEvent {
        /// The cluster it concerns, if any.
        cluster: Option<String>,
        /// The line.
        message: String,
    },
}

// === state ===

/// A rollout: its spec and where every stage and cluster stands. Stored verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The rollout's id (part of its operations' ids).
    pub id: String,
    /// What it does and how.
    pub spec: RolloutSpec,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Where it is as a whole.
    pub phase: Phase,
    /// Set while paused by an operator.
    pub paused: Option<Pause>,
    /// One per spec stage, same order.
    pub stages: Vec<StageRun>,
    /// Clusters the rollout's selector matched but no stage did (Skipped).
    pub unstaged: Vec<Arc<ClusterRun>>,
}

/// Where a rollout is as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase")]
pub enum Phase {
    /// Created; [`Event::Start`] not yet applied.
    Pending,
    /// Stages are progressing (see the stages, and [`Rollout::paused`]).
    Active,
    /// A stage reached its failure limit; waiting for running operations to stop.
    Halting {
        /// Why it halted.
        reason: String,
    },
    /// Cancelled; waiting for running operations to end.
    Cancelling {
        /// Why.
        reason: String,
    },
    /// Every cluster succeeded or was skipped.
    Succeeded,
    /// Halted, or some cluster failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Cancelled by an operator.
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// An operator's pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Since when.
    pub since: Timestamp,
    /// Why.
    pub reason: String,
}

/// An opened approval gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub by: String,
    /// Their note.
    pub comment: String,
    /// When.
    pub at: Timestamp,
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageStatus {
    /// Not reached.
    Pending,
    /// Reached; its gate is closed.
    WaitingForApproval,
    /// Its clusters are being worked on.
    Running,
    /// Its clusters are done; waiting until `soak_until`.
    Soaking,
    /// Done (its failures stayed under the limit).
    Succeeded,
    /// Its failures reached `maxFailures`; the rollout halted here.
    Failed,
    /// Not run: no cluster, or the rollout halted before it.
    Skipped,
    /// The rollout was cancelled before or during it.
    Cancelled,
}

/// One stage of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRun {
    /// Where it is.
    pub status: StageStatus,
    /// Its clusters, by name. Shared copy-on-write ([`Arc::make_mut`]): a copy of the rollout
    /// shares every cluster, and a transition copies only the clusters it changes, so the
    /// clusters that changed between two states are the ones no longer shared
    /// ([`Rollout::changed_clusters`]).
    pub clusters: Vec<Arc<ClusterRun>>,
    /// Its approval, once given.
    pub approval: Option<Approval>,
    /// When it began running.
    pub started_at: Option<Timestamp>,
    /// When its last cluster finished (or it was skipped, failed or cancelled).
    pub finished_at: Option<Timestamp>,
    /// While soaking: when the soak ends.
    pub soak_until: Option<Timestamp>,
    /// Why it was skipped, failed or cancelled.
    pub reason: Option<String>,
}

/// Where a cluster is within the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterStatus {
    /// Its turn has not come, or it waits for its agent.
    Pending,
    /// Its operations are running (or it waits for its agent between two of them).
    Running,
    /// All its operations succeeded, or there was nothing to do.
    Succeeded,
    /// An operation failed, or it could not start.
    Failed,
    /// Not run (see the reason).
    Skipped,
    /// Stopped by a cancel or a halt.
    Cancelled,
}

impl ClusterStatus {
    /// Whether the cluster is done with this rollout.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ClusterStatus::Pending | ClusterStatus::Running)
    }
}

/// One operation a cluster's plan calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlannedOp {
    /// A migration of its self-managed group.
    Migration,
    /// One minor hop.
    Upgrade {
        /// From this version.
        from: MinorVersion,
        /// To this one.
        to: MinorVersion,
    },
}

impl fmt::Display for PlannedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlannedOp::Migration => f.write_str("migration"),
            PlannedOp::Upgrade { from, to } => write!(f, "upgrade {from} -> {to}"),
        }
    }
}

/// Why a cluster is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stop {
    /// The rollout halted: finish the current step, then stop.
    Halt,
    /// The rollout was cancelled: cancel (roll back).
    Cancel,
}

/// A cluster's current or last operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRef {
    /// Its id.
    pub id: String,
    /// Which entry of the plan it is.
    pub index: usize,
    /// Whether it is still running (no outcome yet).
    pub running: bool,
    /// Whether the engine confirmed it started.
    pub confirmed: bool,
    /// A stop sent to it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
}

/// Why a cluster failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The step that failed (`None`: the cluster never got to a step, e.g. its agent stayed away).
    pub step: Option<String>,
    /// The stable error code, if any.
    pub code: Option<String>,
    /// Why, in one line.
    pub reason: String,
}

/// One cluster's part in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRun {
    /// The cluster's id.
    pub name: String,
    /// Where it is.
    pub status: ClusterStatus,
    /// Its operations in order, planned when its turn came.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedOp>,
    /// How many of them succeeded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub done: usize,
    /// Its current (running) or last operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationRef>,
    /// The step its running operation is at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Why it waits, was skipped, cancelled or succeeded without work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When its first operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it reached its final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Whether its agent is connected.
    pub connected: bool,
    /// Since when its agent has been away (while disconnected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_since: Option<Timestamp>,
    /// When its turn came (or its next operation was due) while its agent was away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// Its last inventory (kept only until its work is planned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<ClusterInventory>,
}

/// Why an operator command cannot be applied now (the API answers with it; [`next`] itself
/// ignores such commands).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The rollout is over.
    #[error("rollout {id} is already {state}; create a new rollout to do more")]
    Over {
        /// The rollout.
        id: String,
        /// Its final state.
        state: RolloutState,
    },
    /// The rollout is halting or being cancelled.
    #[error("rollout {id} is {what}; wait for its running operations to stop")]
    Stopping {
        /// The rollout.
        id: String,
        /// `halting` or `being cancelled`.
        what: &'static str,
    },
    /// No stage with that index.
    #[error("rollout {id} has no stage {index}; its stages are 0..{count}")]
    NoSuchStage {
        /// The rollout.
        id: String,
        /// The index asked for.
        index: usize,
        /// How many stages it has.
        count: usize,
    },
    /// The stage has no approval gate.
    #[error("stage {index} ({name}) of rollout {id} does not require approval")]
    NoApprovalNeeded {
        /// The rollout.
        id: String,
        /// The stage.
        index: usize,
        /// Its name.
        name: String,
    },
    /// The stage is not at its gate.
    #[error(
        "stage {index} ({name}) of rollout {id} is {state:?}, not waiting for approval; approve it once \
         the stages before it are done"
    )]
    NotWaiting {
        /// The rollout.
        id: String,
        /// The stage.
        index: usize,
        /// Its name.
        name: String,
        /// Its status.
        state: StageStatus,
    },
}

/// The failure code of a cluster whose agent stayed away past the spec's timeout.
pub const AGENT_DISCONNECTED: &str = "AGENT_DISCONNECTED";

/// The id of the `index`-th (0-based) operation of `cluster` in rollout `rollout`.
pub fn operation_id(rollout: &str, cluster: &str, index: usize) -> String {
    format!("{rollout}/{cluster}/{}", index + 1)
}

// === impl Rollout ===

impl Rollout {
    /// A new rollout, not yet started (apply [`Event::Start`] next).
    pub fn new(
        id: impl Into<String>,
        spec: RolloutSpec,
        created_by: impl Into<String>,
        now: Timestamp,
    ) -> Self {
        let stages = spec
            .stages
            .iter()
            .map(|_| StageRun {
                status: StageStatus::Pending,
                clusters: Vec::new(),
                approval: None,
                started_at: None,
                finished_at: None,
                soak_until: None,
                reason: None,
            })
            .collect();
        Self {
            id: id.into(),
            spec,
            created_by: created_by.into(),
            created_at: now,
            started_at: None,
            finished_at: None,
            phase: Phase::Pending,
            paused: None,
            stages,
            unstaged: Vec::new(),
        }
    }

    /// The rollout's state as operators see it.
    pub fn state(&self) -> RolloutState {
        match &self.phase {
            Phase::Pending => RolloutState::Pending,
            Phase::Halting { .. } | Phase::Cancelling { .. } => RolloutState::Running,
            Phase::Succeeded => RolloutState::Succeeded,
            Phase::Failed { .. } => RolloutState::Failed,
            Phase::Cancelled { .. } => RolloutState::Cancelled,
            Phase::Active if self.paused.is_some() => RolloutState::Paused,
            Phase::Active => match self.current_stage().map(|k| self.stages[k].status) {
                Some(StageStatus::WaitingForApproval) => RolloutState::WaitingForApproval,
                Some(StageStatus::Soaking) => RolloutState::Soaking,
                _ => RolloutState::Running,
            },
        }
    }

    /// Why it is paused, halting, failed or cancelled, in one line.
    pub fn reason(&self) -> Option<String> {
        match &self.phase {
            Phase::Halting { reason } => Some(format!(
                "halting ({reason}); waiting for {} running operations to stop",
                self.running_operations()
            )),
            Phase::Cancelling { reason } => Some(format!(
                "cancelling ({reason}); waiting for {} running operations to end",
                self.running_operations()
            )),
            Phase::Failed { reason } | Phase::Cancelled { reason } => Some(reason.clone()),
            Phase::Active | Phase::Pending => self.paused.as_ref().map(|p| format!("paused: {}", p.reason)),
            Phase::Succeeded => None,
        }
    }

    /// A stage's state as operators see it.
    pub fn stage_state(&self, index: usize) -> RolloutState {
        let Some(stage) = self.stages.get(index) else {
            return RolloutState::Pending;
        };
        match stage.status {
            StageStatus::Pending => RolloutState::Pending,
            StageStatus::WaitingForApproval => RolloutState::WaitingForApproval,
            StageStatus::Running if self.paused.is_some() && self.phase == Phase::Active => {
                RolloutState::Paused
            }
            StageStatus::Running => RolloutState::Running,
            StageStatus::Soaking => RolloutState::Soaking,
            StageStatus::Succeeded => RolloutState::Succeeded,
            StageStatus::Failed => RolloutState::Failed,
            StageStatus::Skipped => RolloutState::Skipped,
            StageStatus::Cancelled => RolloutState::Cancelled,
        }
    }

    /// A cluster's state as operators see it (`stage`: its stage's index; `None` for unstaged).
    pub fn cluster_state(&self, stage: Option<usize>, cluster: &ClusterRun) -> RolloutState {
        match cluster.status {
            ClusterStatus::Pending => match stage.and_then(|k| self.stages.get(k)).map(|s| s.status) {
                Some(StageStatus::WaitingForApproval) => RolloutState::WaitingForApproval,
                Some(StageStatus::Running) if self.paused.is_some() && self.phase == Phase::Active => {
                    RolloutState::Paused
                }
                _ => RolloutState::Pending,
            },
            ClusterStatus::Running => RolloutState::Running,
            ClusterStatus::Succeeded => RolloutState::Succeeded,
            ClusterStatus::Failed => RolloutState::Failed,
            ClusterStatus::Skipped => RolloutState::Skipped,
            ClusterStatus::Cancelled => RolloutState::Cancelled,
        }
    }

    /// Whether nothing more will happen.
    pub fn is_final(&self) -> bool {
        matches!(
            self.phase,
            Phase::Succeeded | Phase::Failed { .. } | Phase::Cancelled { .. }
        )
    }

    /// The first stage that is not done (succeeded or skipped).
    pub fn current_stage(&self) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| !matches!(s.status, StageStatus::Succeeded | StageStatus::Skipped))
    }

    /// Failed clusters of stage `index`.
    pub fn stage_failures(&self, index: usize) -> usize {
        self.stages.get(index).map_or(0, |s| {
            s.clusters
                .iter()
                .filter(|c| c.status == ClusterStatus::Failed)
                .count()
        })
    }

    /// How many of stage `index`'s clusters may run at once.
    pub fn stage_limit(&self, index: usize) -> usize {
        let size = self.stages.get(index).map_or(0, |s| s.clusters.len());
        self.spec
            .stages
            .get(index)
            .map_or(1, |s| s.max_concurrency.limit(size))
    }

    /// Operations running now (outcome not yet reported).
    pub fn running_operations(&self) -> usize {
        self.clusters()
            .filter(|(_, c)| c.operation.as_ref().is_some_and(|o| o.running))
            .count()
    }

    /// Every staged cluster with its stage index.
    pub fn clusters(&self) -> impl Iterator<Item = (usize, &ClusterRun)> {
        self.stages
            .iter()
            .enumerate()
            .flat_map(|(k, s)| s.clusters.iter().map(move |c| (k, &**c)))
    }

    /// The clusters of `self` that differ from `before` (a state it was derived from), with
    /// their place: stage index (`None`: unstaged) and index in it. Clusters still shared with
    /// `before` are skipped without comparing them, so this costs what changed, plus a pointer
    /// comparison per cluster.
    pub fn changed_clusters<'a>(
        &'a self,
        before: &'a Rollout,
    ) -> impl Iterator<Item = (Option<usize>, usize, &'a ClusterRun)> + 'a {
        fn diff<'a>(
            slot: Option<usize>,
            now: &'a [Arc<ClusterRun>],
            was: &'a [Arc<ClusterRun>],
        ) -> impl Iterator<Item = (Option<usize>, usize, &'a ClusterRun)> + 'a {
            now.iter().enumerate().filter_map(move |(i, c)| {
                let same = was.get(i).is_some_and(|w| Arc::ptr_eq(w, c) || **w == **c);
                (!same).then_some((slot, i, &**c))
            })
        }
        let empty: &[Arc<ClusterRun>] = &[];
        self.stages
            .iter()
            .enumerate()
            .flat_map(move |(k, s)| {
                let was = before.stages.get(k).map_or(empty, |b| b.clusters.as_slice());
                diff(Some(k), &s.clusters, was)
            })
            .chain(diff(None, &self.unstaged, &before.unstaged))
    }

    /// The stage and cluster `name`, if it is part of a stage.
    pub fn find(&self, name: &str) -> Option<(usize, usize)> {
        self.stages.iter().enumerate().find_map(|(k, s)| {
            s.clusters
                .binary_search_by(|c| c.name.as_str().cmp(name))
                .ok()
                .map(|i| (k, i))
        })
    }

    /// When the rollout next needs a [`Event::Tick`]: a soak ending or a disconnected cluster
    /// timing out. `None`: nothing is timed.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.is_final() {
            return None;
        }
        let timeout = self.spec.agent_disconnect_timeout;
        let soaks = self.stages.iter().filter_map(|s| match s.status {
            StageStatus::Soaking => s.soak_until,
            _ => None,
        });
        let waits = self
            .clusters()
            .filter(|(_, c)| !c.status.is_terminal() && !c.connected)
            .filter_map(|(_, c)| c.waiting_since.map(|t| add(t, timeout)));
        soaks.chain(waits).min()
    }

    /// Whether an operator command can be applied at `now`; the API refuses with the error.
    /// Repeating a command that already took effect (pause, resume, cancel, approve) is fine.
    pub fn check(&self, event: &Event, now: Timestamp) -> Result<(), CommandError> {
        if let Event::Approve { .. } = event {
            // A soak that ended by `now` opens the next gate, as the approval itself would see.
            let mut current = self.clone();
            current.apply(&Event::Tick, now);
            return current.check_now(event);
        }
        self.check_now(event)
    }

    fn check_now(&self, event: &Event) -> Result<(), CommandError> {
        let id = self.id.clone();
        let over = || {
            Err(CommandError::Over {
                id: id.clone(),
                state: self.state(),
            })
        };
        match event {
            Event::Pause { .. } | Event::Resume | Event::Approve { .. } => match &self.phase {
                _ if self.is_final() => over(),
                Phase::Halting { .. } => Err(CommandError::Stopping {
                    id: id.clone(),
                    what: "halting",
                }),
                Phase::Cancelling { .. } => Err(CommandError::Stopping {
                    id: id.clone(),
                    what: "being cancelled",
                }),
                _ => match event {
                    Event::Approve { stage, .. } => self.check_approve(*stage),
                    _ => Ok(()),
                },
            },
            Event::Cancel { .. } if self.is_final() => over(),
            _ => Ok(()),
        }
    }

    fn check_approve(&self, index: usize) -> Result<(), CommandError> {
        let Some(stage) = self.stages.get(index) else {
            return Err(CommandError::NoSuchStage {
                id: self.id.clone(),
                index,
                count: self.stages.len(),
            });
        };
        let name = self.spec.stages[index].name.clone();
        if !self.spec.stages[index].require_approval {
            return Err(CommandError::NoApprovalNeeded {
                id: self.id.clone(),
                index,
                name,
            });
        }
        if stage.approval.is_some() || stage.status == StageStatus::WaitingForApproval {
            return Ok(());
        }
        Err(CommandError::NotWaiting {
            id: self.id.clone(),
            index,
            name,
            state: stage.status,
        })
    }

    /// Applies `event` in place and returns the actions to perform after persisting.
    pub fn apply(&mut self, event: &Event, now: Timestamp) -> Vec<Action> {
        let mut cx = Cx {
            now,
            actions: Vec::new(),
        };
        match event {
            Event::Start { clusters } => self.start(clusters, &mut cx),
            Event::OperationStarted {
                cluster,
                operation_id,
            } => {
                let unconfirmed = |c: &ClusterRun| c.operation.as_ref().is_some_and(|o| !o.confirmed);
                if let Some(c) = self.running_op_mut(cluster, operation_id, unconfirmed) {
                    if let Some(op) = c.operation.as_mut() {
                        op.confirmed = true;
                        cx.record(Some(cluster), format!("operation {operation_id} started"));
                    }
                }
            }
            Event::StepChanged {
                cluster,
                operation_id,
                step,
            } => {
                let other_step = |c: &ClusterRun| c.step.as_deref() != Some(step.as_str());
                if let Some(c) = self.running_op_mut(cluster, operation_id, other_step) {
                    c.step = Some(step.clone());
                }
            }
            Event::OperationFinished {
                cluster,
                operation_id,
                outcome,
            } => self.finished(cluster, operation_id, outcome, &mut cx),
            Event::AgentConnected { cluster, inventory } => {
                if let Some((k, i)) = self.find(cluster) {
                    let seen = &self.stages[k].clusters[i];
                    // Only a cluster still waiting for its turn plans from its inventory.
                    let replan = inventory.is_some()
                        && seen.status == ClusterStatus::Pending
                        && seen.inventory != *inventory;
                    if !seen.connected || replan {
                        let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
                        if !c.connected {
                            c.connected = true;
                            c.disconnected_since = None;
                            if c.waiting_since.take().is_some() {
                                cx.record(Some(cluster), "agent connected; no longer waiting");
                                if c.status == ClusterStatus::Pending {
                                    c.reason = None;
                                }
                            }
                        }
                        if replan {
                            c.inventory.clone_from(inventory);
                        }
                    }
                }
            }
            Event::AgentDisconnected { cluster } => {
                if let Some((k, i)) = self
                    .find(cluster)
                    .filter(|&(k, i)| self.stages[k].clusters[i].connected)
                {
                    let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
                    c.connected = false;
                    c.disconnected_since = Some(now);
                }
            }
            Event::Tick => {}
            Event::Pause { reason } => self.pause(reason, &mut cx),
            Event::Resume => {
                let open = matches!(self.phase, Phase::Pending | Phase::Active);
                if open && self.paused.take().is_some() {
                    cx.record(None, "resumed");
                }
            }
            Event::Cancel { reason } => self.cancel(reason, &mut cx),
            Event::Approve { stage, by, comment } => {
                // Bring time-driven gates up to `now` first: a soak that just ended opens the
                // next stage's approval gate, which this approval may be for.
                self.advance(&mut cx);
                let ok = self.phase == Phase::Active
                    && self
                        .stages
                        .get(*stage)
                        .is_some_and(|s| s.status == StageStatus::WaitingForApproval && s.approval.is_none());
                if ok {
                    self.stages[*stage].approval = Some(Approval {
                        by: by.clone(),
                        comment: comment.clone(),
                        at: now,
                    });
                    let name = &self.spec.stages[*stage].name;
                    cx.record(None, format!("stage {name} approved by {by}"));
                }
            }
            Event::Restarted => self.restarted(&mut cx),
        }
        self.advance(&mut cx);
        cx.actions
    }

    // --- events ---

    fn start(&mut self, facts: &[ClusterFacts], cx: &mut Cx) {
        if self.phase != Phase::Pending {
            return;
        }
        let mut facts: Vec<&ClusterFacts> = facts.iter().collect();
        facts.sort_by(|a, b| a.name.cmp(&b.name));
        facts.dedup_by(|a, b| a.name == b.name);
        for f in facts {
            if !self.spec.selector.matches(&f.labels) {
                continue;
            }
            let stage = self
                .spec
                .stages
                .iter()
                .position(|s| s.selector.matches(&f.labels));
            let mut run = ClusterRun {
                name: f.name.clone(),
                status: ClusterStatus::Pending,
                plan: Vec::new(),
                done: 0,
                operation: None,
                step: None,
                failure: None,
                reason: None,
                started_at: None,
                finished_at: None,
                connected: f.connected,
                disconnected_since: (!f.connected).then(|| f.last_seen.unwrap_or(cx.now)),
                waiting_since: None,
                inventory: f.inventory.clone(),
            };
            match stage {
                Some(k) => self.stages[k].clusters.push(Arc::new(run)),
                None if !self.spec.selector.is_empty() => {
                    run.status = ClusterStatus::Skipped;
                    run.reason = Some(format!(
                        "matched the rollout selector {} but no stage's selector",
                        self.spec.selector
                    ));
                    run.finished_at = Some(cx.now);
                    self.unstaged.push(Arc::new(run));
                }
                None => {}
            }
        }
        self.phase = Phase::Active;
        self.started_at = Some(cx.now);
        let counts = self
            .spec
            .stages
            .iter()
            .zip(&self.stages)
            .map(|(spec, run)| format!("{}: {}", spec.name, run.clusters.len()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut msg = format!("rollout started ({counts})");
        if !self.unstaged.is_empty() {
            msg.push_str(&format!("; {} matched no stage", self.unstaged.len()));
        }
        cx.record(None, msg);
        if self.spec.start_paused {
            self.paused = Some(Pause {
                since: cx.now,
                reason: "created paused".into(),
            });
            cx.record(None, "paused: created paused");
        }
    }

    fn pause(&mut self, reason: &str, cx: &mut Cx) {
        if !matches!(self.phase, Phase::Pending | Phase::Active) || self.paused.is_some() {
            return;
        }
        self.paused = Some(Pause {
            since: cx.now,
            reason: reason.to_string(),
        });
        // Clusters waiting for their turn are no longer at it; their wait restarts on resume.
        for stage in &mut self.stages {
            for c in &mut stage.clusters {
                if c.status == ClusterStatus::Pending && c.waiting_since.is_some() {
                    let c = Arc::make_mut(c);
                    c.waiting_since = None;
                    c.reason = None;
                }
            }
        }
        cx.record(None, format!("paused: {reason}"));
    }

    fn cancel(&mut self, reason: &str, cx: &mut Cx) {
        match &self.phase {
            Phase::Pending => {
                self.phase = Phase::Cancelled {
                    reason: reason.to_string(),
                };
                self.finished_at = Some(cx.now);
                for s in &mut self.stages {
                    s.status = StageStatus::Cancelled;
                    s.reason = Some("the rollout was cancelled before it started".into());
                }
                cx.record(None, format!("cancelled before it started: {reason}"));
                return;
            }
            Phase::Active | Phase::Halting { .. } => {}
            _ => return,
        }
        self.phase = Phase::Cancelling {
            reason: reason.to_string(),
        };
        self.paused = None;
        cx.record(None, format!("cancelling: {reason}"));
        let now = cx.now;
        for stage in &mut self.stages {
            for c in &mut stage.clusters {
                if !matches!(c.status, ClusterStatus::Pending | ClusterStatus::Running) {
                    continue;
                }
                let c = Arc::make_mut(c);
                match c.status {
                    ClusterStatus::Pending => finish(
                        c,
                        ClusterStatus::Cancelled,
                        "the rollout was cancelled before it started",
                        now,
                        cx,
                    ),
                    ClusterStatus::Running => match c.operation.as_mut() {
                        Some(op) if op.running => {
                            if op.stop != Some(Stop::Cancel) {
                                op.stop = Some(Stop::Cancel);
                                cx.actions.push(Action::CancelOperation {
                                    cluster: c.name.clone(),
                                    operation_id: op.id.clone(),
                                });
                            }
                        }
                        _ => finish(
                            c,
                            ClusterStatus::Cancelled,
                            "the rollout was cancelled between two of its operations",
                            now,
                            cx,
                        ),
                    },
                    _ => {}
                }
            }
            match stage.status {
                StageStatus::Pending | StageStatus::WaitingForApproval | StageStatus::Soaking => {
                    stage.status = StageStatus::Cancelled;
                    stage.reason = Some(format!("the rollout was cancelled: {reason}"));
                    stage.finished_at.get_or_insert(now);
                }
                _ => {}
            }
        }
    }

    fn restarted(&mut self, cx: &mut Cx) {
        cx.record(None, "coordinator restarted; re-issuing what was in flight");
        for (_, c) in self.clusters() {
            let Some(op) = c.operation.as_ref().filter(|o| o.running) else {
                continue;
            };
            if let Some(work) = c.plan.get(op.index).and_then(|p| self.work_for(p)) {
                cx.actions.push(Action::StartOperation {
                    cluster: c.name.clone(),
                    operation_id: op.id.clone(),
                    work,
                });
            }
            let (cluster, operation_id) = (c.name.clone(), op.id.clone());
            match op.stop {
                Some(Stop::Halt) => cx.actions.push(Action::HaltOperation {
                    cluster,
                    operation_id,
                }),
                Some(Stop::Cancel) => cx.actions.push(Action::CancelOperation {
                    cluster,
                    operation_id,
                }),
                None => {}
            }
        }
    }

    fn finished(&mut self, cluster: &str, operation_id: &str, outcome: &Outcome, cx: &mut Cx) {
        let Some((k, i)) = self.find(cluster) else {
            return;
        };
        let stopping = matches!(self.phase, Phase::Halting { .. } | Phase::Cancelling { .. });
        let now = cx.now;
        {
            let seen = &self.stages[k].clusters[i];
            if !seen
                .operation
                .as_ref()
                .is_some_and(|o| o.running && o.id == operation_id)
            {
                return;
            }
            let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
            let Some(op) = c.operation.as_mut() else {
                return;
            };
            op.running = false;
            let (index, stop) = (op.index, op.stop);
            let what = c
                .plan
                .get(index)
                .map_or_else(|| "operation".to_string(), |p| p.to_string());
            c.step = None;
            let plan_len = c.plan.len();
            match outcome {
                Outcome::Succeeded => {
                    c.done = index + 1;
                    cx.record(Some(cluster), format!("{what} ({operation_id}) succeeded"));
                    if c.done >= plan_len {
                        finish(c, ClusterStatus::Succeeded, "", now, cx);
                    } else if stop.is_some() || stopping {
                        let next = c.plan[c.done];
                        let why = match stop {
                            Some(Stop::Cancel) => "the rollout was cancelled",
                            _ => "the rollout halted",
                        };
                        finish(
                            c,
                            ClusterStatus::Cancelled,
                            &format!("{why} before {next}"),
                            now,
                            cx,
                        );
                    }
                }
                Outcome::Failed { step, code, reason } => {
                    c.failure = Some(Failure {
                        step: Some(step.clone()),
                        code: code.clone(),
                        reason: reason.clone(),
                    });
                    let line = format!("{what} failed at {step}: {reason}");
                    finish(c, ClusterStatus::Failed, &line, now, cx);
                }
                Outcome::Cancelled => {
                    let why = if stop == Some(Stop::Cancel) {
                        format!("{what} cancelled with the rollout")
                    } else {
                        format!("{what} was cancelled outside the rollout")
                    };
                    finish(c, ClusterStatus::Cancelled, &why, now, cx);
                }
                Outcome::Halted => {
                    let why = if stop == Some(Stop::Halt) {
                        format!("{what} stopped after its current step: the rollout halted")
                    } else {
                        format!("{what} was halted outside the rollout")
                    };
                    finish(c, ClusterStatus::Cancelled, &why, now, cx);
                }
            }
        }
        // A running cluster between two operations continues in `advance` (after any failure
        // of this transition is settled).
        if self.stages[k].clusters[i].status == ClusterStatus::Failed {
            self.check_budget(k, cx);
        }
    }

    // --- scheduling ---

    /// Moves the rollout as far as the current state allows: stage gates, starts, soaks,
    /// timeouts, and the end.
    fn advance(&mut self, cx: &mut Cx) {
        loop {
            match &self.phase {
                Phase::Active => {}
                Phase::Halting { reason } | Phase::Cancelling { reason } => {
                    if self.running_operations() == 0 {
                        self.conclude_stopped(reason.clone(), cx);
                    }
                    return;
                }
                _ => return,
            }
            let Some(k) = self.current_stage() else {
                self.conclude(cx);
                return;
            };
            let name = self.spec.stages[k].name.clone();
            let paused = self.paused.is_some();
            let stage = &mut self.stages[k];
            match stage.status {
                StageStatus::Pending if stage.clusters.is_empty() => {
                    stage.status = StageStatus::Skipped;
                    stage.reason = Some("no cluster matched its selector".into());
                    stage.finished_at = Some(cx.now);
                    cx.record(
                        None,
                        format!("stage {name} skipped: no cluster matched its selector"),
                    );
                }
                StageStatus::Pending if self.spec.stages[k].require_approval => {
                    stage.status = StageStatus::WaitingForApproval;
                    cx.record(None, format!("stage {name} waits for approval"));
                    return;
                }
                StageStatus::Pending | StageStatus::WaitingForApproval => {
                    let gate_open = !self.spec.stages[k].require_approval || stage.approval.is_some();
                    if paused || !gate_open {
                        return;
                    }
                    stage.status = StageStatus::Running;
                    stage.started_at = Some(cx.now);
                    let (n, limit) = (stage.clusters.len(), self.stage_limit(k));
                    cx.record(
                        None,
                        format!("stage {name} started: {n} clusters, at most {limit} at once"),
                    );
                }
                StageStatus::Running => {
                    self.run_stage(k, cx);
                    if self.phase != Phase::Active {
                        continue;
                    }
                    let has_next = k + 1 < self.stages.len();
                    let stage = &mut self.stages[k];
                    if !stage.clusters.iter().all(|c| c.status.is_terminal()) {
                        return;
                    }
                    stage.finished_at = Some(cx.now);
                    let ran = stage.clusters.iter().any(|c| c.operation.is_some());
                    let soak = self.spec.stages[k].soak;
                    if ran && !soak.is_zero() && has_next {
                        let until = add(cx.now, soak);
                        stage.status = StageStatus::Soaking;
                        stage.soak_until = Some(until);
                        cx.record(None, format!("stage {name} done; soaking until {until}"));
                    } else {
                        stage.status = StageStatus::Succeeded;
                        cx.record(None, format!("stage {name} done"));
                    }
                }
                StageStatus::Soaking => {
                    if stage.soak_until.is_some_and(|t| cx.now < t) {
                        return;
                    }
                    stage.status = StageStatus::Succeeded;
                    cx.record(None, format!("stage {name} soaked"));
                }
                StageStatus::Succeeded
                | StageStatus::Skipped
                | StageStatus::Failed
                | StageStatus::Cancelled => return,
            }
        }
    }

    /// Within the running stage `k`, in this order: time out clusters waiting for their agent;
    /// admit pending clusters into free slots (unless paused), finishing at once those with
    /// nothing to do or that cannot be planned; then start the next operation of every running
    /// cluster between two operations, and the first of every admitted one. Failures (which may
    /// halt the rollout) are all settled before anything starts, so a transition never starts an
    /// operation only to halt it.
    fn run_stage(&mut self, k: usize, cx: &mut Cx) {
        let timeout = self.spec.agent_disconnect_timeout;
        let now = cx.now;
        for i in 0..self.stages[k].clusters.len() {
            let seen = &self.stages[k].clusters[i];
            if seen.status.is_terminal() || seen.connected {
                continue;
            }
            let Some(since) = seen.waiting_since.filter(|t| now >= add(*t, timeout)) else {
                continue;
            };
            let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
            let away = c.disconnected_since.unwrap_or(since);
            c.failure = Some(Failure {
                step: None,
                code: Some(AGENT_DISCONNECTED.into()),
                reason: format!(
                    "agent disconnected since {away}; waited {} for it",
                    human(timeout)
                ),
            });
            let line = format!(
                "agent disconnected since {away}; gave up after {}",
                human(timeout)
            );
            finish(c, ClusterStatus::Failed, &line, now, cx);
            if self.check_budget(k, cx) {
                return;
            }
        }

        let mut admitted = Vec::new();
        if self.paused.is_none() {
            let limit = self.stage_limit(k);
            let mut running = self.stages[k]
                .clusters
                .iter()
                .filter(|c| c.status == ClusterStatus::Running)
                .count();
            for i in 0..self.stages[k].clusters.len() {
                if running >= limit {
                    break;
                }
                let seen = &self.stages[k].clusters[i];
                if seen.status != ClusterStatus::Pending {
                    continue;
                }
                if !seen.connected {
                    if seen.waiting_since.is_none() {
                        let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
                        let away = c.disconnected_since.unwrap_or(now);
                        c.waiting_since = Some(now);
                        c.reason = Some(format!("agent disconnected since {away}"));
                        let line = format!(
                            "its turn came but its agent is disconnected since {away}; waiting up to {}",
                            human(timeout)
                        );
                        cx.record(Some(&c.name), line);
                    }
                    continue;
                }
                match plan(&self.spec.work, seen.inventory.as_ref()) {
                    Ok(ops) => {
                        running += 1;
                        admitted.push((i, ops));
                    }
                    Err((status, reason)) => {
                        let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
                        if status == ClusterStatus::Failed {
                            c.failure = Some(Failure {
                                step: None,
                                code: None,
                                reason: reason.clone(),
                            });
                        }
                        finish(c, status, &reason, now, cx);
                        if status == ClusterStatus::Failed && self.check_budget(k, cx) {
                            return;
                        }
                    }
                }
            }
        }

        for i in 0..self.stages[k].clusters.len() {
            let c = &self.stages[k].clusters[i];
            let between_ops =
                c.status == ClusterStatus::Running && !c.operation.as_ref().is_some_and(|o| o.running);
            if between_ops && self.phase == Phase::Active {
                self.start_next(k, i, cx);
            }
        }
        for (i, ops) in admitted {
            if self.phase != Phase::Active {
                return;
            }
            let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
            let list = ops.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
            c.plan = ops;
            c.done = 0;
            c.inventory = None;
            c.status = ClusterStatus::Running;
            c.started_at = Some(now);
            c.reason = None;
            cx.record(Some(&c.name), format!("planned: {list}"));
            self.start_next(k, i, cx);
        }
    }

    /// Starts the next planned operation of a running cluster, or makes it wait for its agent.
    fn start_next(&mut self, k: usize, i: usize, cx: &mut Cx) {
        let id = self.id.clone();
        let now = cx.now;
        let work = {
            let c = &self.stages[k].clusters[i];
            c.plan.get(c.done).map(|p| (*p, self.work_for(p)))
        };
        let Some((planned, work)) = work else {
            let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
            finish(c, ClusterStatus::Succeeded, "", now, cx);
            return;
        };
        let Some(work) = work else {
            let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
            c.failure = Some(Failure {
                step: None,
                code: None,
                reason: format!("the rollout has no parameters for its {planned}"),
            });
            let line = format!("cannot run {planned}: the rollout has no parameters for it");
            finish(c, ClusterStatus::Failed, &line, now, cx);
            self.check_budget(k, cx);
            return;
        };
        let seen = &self.stages[k].clusters[i];
        if !seen.connected {
            if seen.waiting_since.is_none() {
                let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
                let away = c.disconnected_since.unwrap_or(now);
                c.waiting_since = Some(now);
                c.reason = Some(format!("agent disconnected since {away}; {planned} waits for it"));
                cx.record(
                    Some(&c.name),
                    format!("{planned} waits for its agent (disconnected since {away})"),
                );
            }
            return;
        }
        let c = Arc::make_mut(&mut self.stages[k].clusters[i]);
        let index = c.done;
        let op_id = operation_id(&id, &c.name, index);
        c.operation = Some(OperationRef {
            id: op_id.clone(),
            index,
            running: true,
            confirmed: false,
            stop: None,
        });
        c.waiting_since = None;
        c.reason = None;
        c.step = None;
        cx.record(Some(&c.name), format!("starting {planned} ({op_id})"));
        cx.actions.push(Action::StartOperation {
            cluster: c.name.clone(),
            operation_id: op_id,
            work,
        });
    }

    /// Halts the rollout if stage `k`'s failures reached its limit; returns whether it did.
    fn check_budget(&mut self, k: usize, cx: &mut Cx) -> bool {
        if self.phase != Phase::Active {
            return false;
        }
        let failed = self.stage_failures(k);
        let max = self.spec.stages[k].max_failures as usize;
        if failed < max {
            return false;
        }
        let name = self.spec.stages[k].name.clone();
        let names: Vec<&str> = self.stages[k]
            .clusters
            .iter()
            .filter(|c| c.status == ClusterStatus::Failed)
            .map(|c| c.name.as_str())
            .collect();
        let reason = format!(
            "stage {name} reached maxFailures {max}: {failed} failed ({})",
            list(&names)
        );
        self.halt(k, reason, cx);
        true
    }

    fn halt(&mut self, k: usize, reason: String, cx: &mut Cx) {
        cx.record(None, format!("halting: {reason}"));
        self.phase = Phase::Halting {
            reason: reason.clone(),
        };
        self.paused = None;
        let now = cx.now;
        for (j, stage) in self.stages.iter_mut().enumerate() {
            for c in &mut stage.clusters {
                if !matches!(c.status, ClusterStatus::Pending | ClusterStatus::Running) {
                    continue;
                }
                let c = Arc::make_mut(c);
                match c.status {
                    ClusterStatus::Pending => finish(
                        c,
                        ClusterStatus::Skipped,
                        &format!("not started: the rollout halted ({reason})"),
                        now,
                        cx,
                    ),
                    ClusterStatus::Running => match c.operation.as_mut() {
                        Some(op) if op.running => {
                            if op.stop.is_none() {
                                op.stop = Some(Stop::Halt);
                                cx.actions.push(Action::HaltOperation {
                                    cluster: c.name.clone(),
                                    operation_id: op.id.clone(),
                                });
                            }
                        }
                        _ => finish(
                            c,
                            ClusterStatus::Cancelled,
                            "the rollout halted between two of its operations",
                            now,
                            cx,
                        ),
                    },
                    _ => {}
                }
            }
            if j == k {
                stage.status = StageStatus::Failed;
                stage.reason = Some(reason.clone());
                stage.finished_at = Some(now);
            } else if j > k {
                stage.status = StageStatus::Skipped;
                stage.reason = Some(format!("the rollout halted at stage {k}"));
                stage.finished_at = Some(now);
            }
        }
    }

    /// Halting or cancelling and nothing runs any more: the final state.
    fn conclude_stopped(&mut self, reason: String, cx: &mut Cx) {
        let now = cx.now;
        for stage in &mut self.stages {
            if stage.status == StageStatus::Running {
                stage.status = StageStatus::Cancelled;
                stage.reason = Some(format!("the rollout was cancelled: {reason}"));
                stage.finished_at = Some(now);
            }
        }
        self.finished_at = Some(now);
        if matches!(self.phase, Phase::Halting { .. }) {
            cx.record(None, format!("failed: {reason}"));
            self.phase = Phase::Failed { reason };
        } else {
            cx.record(None, format!("cancelled: {reason}"));
            self.phase = Phase::Cancelled { reason };
        }
    }

    /// Every stage is done: succeeded if every cluster succeeded or was skipped.
    fn conclude(&mut self, cx: &mut Cx) {
        self.finished_at = Some(cx.now);
        let total = self.clusters().count();
        let failed: Vec<&str> = self
            .clusters()
            .filter(|(_, c)| c.status == ClusterStatus::Failed)
            .map(|(_, c)| c.name.as_str())
            .collect();
        let cancelled: Vec<&str> = self
            .clusters()
            .filter(|(_, c)| c.status == ClusterStatus::Cancelled)
            .map(|(_, c)| c.name.as_str())
            .collect();
        if failed.is_empty() && cancelled.is_empty() {
            cx.record(None, format!("succeeded: {total} clusters"));
            self.phase = Phase::Succeeded;
            return;
        }
        let mut parts = Vec::new();
        if !failed.is_empty() {
            parts.push(format!(
                "{} of {total} clusters failed ({})",
                failed.len(),
                list(&failed)
            ));
        }
        if !cancelled.is_empty() {
            parts.push(format!(
                "{} had their operation cancelled outside the rollout ({})",
                cancelled.len(),
                list(&cancelled)
            ));
        }
        let reason = format!("every stage ran, but {}", parts.join("; "));
        cx.record(None, format!("failed: {reason}"));
        self.phase = Phase::Failed { reason };
    }

    // --- helpers ---

    /// The cluster running operation `operation_id`, to change, if `changes` says the event
    /// changes it (so a cluster that stays as it is stays shared).
    fn running_op_mut(
        &mut self,
        cluster: &str,
        operation_id: &str,
        changes: impl Fn(&ClusterRun) -> bool,
    ) -> Option<&mut ClusterRun> {
        let (k, i) = self.find(cluster)?;
        let c = &mut self.stages[k].clusters[i];
        (c.operation
            .as_ref()
            .is_some_and(|o| o.running && o.id == operation_id)
            && changes(c))
        .then(|| Arc::make_mut(c))
    }

    /// The parameters of a planned operation.
    pub fn work_for(&self, planned: &PlannedOp) -> Option<OperationWork> {
        match (planned, &self.spec.work) {
            (PlannedOp::Migration, Work::Migration(m)) => Some(OperationWork::Migration(Box::new(m.clone()))),
            (PlannedOp::Migration, Work::Upgrade(u)) => {
                u.migration.clone().map(|m| OperationWork::Migration(Box::new(m)))
            }
            (PlannedOp::Upgrade { from, to }, Work::Upgrade(u)) => Some(OperationWork::Upgrade {
                from: *from,
                to: *to,
                force: u.force,
                goal: u.target,
            }),
            (PlannedOp::Upgrade { .. }, Work::Migration(_)) => None,
        }
    }
}

/// The pure transition function: the new state and the actions to perform after persisting it.
pub fn next(state: &Rollout, event: &Event, now: Timestamp) -> (Rollout, Vec<Action>) {
    let mut s = state.clone();
    let actions = s.apply(event, now);
    (s, actions)
}

/// A cluster's operations when its turn comes, or why it has none (its final status and reason).
pub fn plan(
    work: &Work,
    inventory: Option<&ClusterInventory>,
) -> Result<Vec<PlannedOp>, (ClusterStatus, String)> {
    match work {
        Work::Migration(m) => match inventory {
            // Nothing known: let the migration's own checks decide.
            None => Ok(vec![PlannedOp::Migration]),
            Some(inv) => match migration_needed(m, inv)? {
                true => Ok(vec![PlannedOp::Migration]),
                false => Err((
                    ClusterStatus::Skipped,
                    match &m.from_nodegroup {
                        Some(from) => format!(
                            "no self-managed node group {from} (self-managed: {})",
                            names_or_none(&inv.self_managed_nodegroups)
                        ),
                        None => "no self-managed node group left to migrate".into(),
                    },
                )),
            },
        },
        Work::Upgrade(u) => {
            let Some(inv) = inventory else {
                return Err((
                    ClusterStatus::Failed,
                    "its version is unknown: its agent has not reported an inventory yet".into(),
                ));
            };
            let Some(current) = MinorVersion::parse_reported(&inv.version) else {
                return Err((
                    ClusterStatus::Failed,
                    format!("cannot read its version {:?}", inv.version),
                ));
            };
            if current == u.target {
                return Err((ClusterStatus::Succeeded, format!("already at {}", u.target)));
            }
            if current > u.target {
                return Err((
                    ClusterStatus::Skipped,
                    format!("at {current}, newer than the target {}", u.target),
                ));
            }
            if current.major != u.target.major {
                return Err((
                    ClusterStatus::Failed,
                    format!("cannot upgrade across major versions ({current} to {})", u.target),
                ));
            }
            let mut ops = Vec::new();
            if u.migrate_self_managed {
                if let Some(m) = &u.migration {
                    if migration_needed(m, inv)? {
                        ops.push(PlannedOp::Migration);
                    }
                }
            }
            let mut from = current;
            while from < u.target {
                let to = from.next();
                ops.push(PlannedOp::Upgrade { from, to });
                from = to;
            }
            Ok(ops)
        }
    }
}

/// Whether a migration has a group to move on this cluster; an error when it cannot tell which.
fn migration_needed(m: &MigrationSpec, inv: &ClusterInventory) -> Result<bool, (ClusterStatus, String)> {
    let groups = &inv.self_managed_nodegroups;
    match &m.from_nodegroup {
        Some(from) => Ok(groups.contains(from)),
        None if groups.len() > 1 => Err((
            ClusterStatus::Failed,
            format!(
                "{} self-managed node groups ({}): set fromNodegroup to the one to migrate",
                groups.len(),
                groups.join(", ")
            ),
        )),
        None => Ok(!groups.is_empty()),
    }
}

// === small helpers ===

/// The actions of one transition, and its time.
struct Cx {
    now: Timestamp,
    actions: Vec<Action>,
}

impl Cx {
    fn record(&mut self, cluster: Option<&str>, message: impl Into<String>) {
        self.actions.push(Action::RecordEvent {
            cluster: cluster.map(str::to_string),
            message: message.into(),
        });
    }
}

/// Puts a cluster in a final state.
fn finish(c: &mut ClusterRun, status: ClusterStatus, reason: &str, now: Timestamp, cx: &mut Cx) {
    c.status = status;
    c.inventory = None;
    c.reason = (!reason.is_empty()).then(|| reason.to_string());
    c.finished_at = Some(now);
    c.waiting_since = None;
    c.step = None;
    let line = match (status, reason) {
        (ClusterStatus::Succeeded, "") => "succeeded".to_string(),
        (s, "") => format!("{s:?}").to_lowercase(),
        (s, r) => format!("{}: {r}", format!("{s:?}").to_lowercase()),
    };
    cx.record(Some(&c.name), line);
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `now + d`, saturating.
fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// `90s` → `1m30s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// At most five names, then a count.
fn list(names: &[&str]) -> String {
    if names.len() <= 5 {
        names.join(", ")
    } else {
        format!("{}, and {} more", names[..5].join(", "), names.len() - 5)
    }
}

fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
