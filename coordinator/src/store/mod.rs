//! The coordinator's durable store: clusters, operations with each step's state and attempts, and an
//! append-only, bounded event log per operation; rollouts (the state machine's [`Rollout`]; a
//! transition writes what changed) with an event log per rollout. Every transition is written (and flushed) before it is
//! acted on, so a coordinator killed at any moment resumes from what it last acknowledged.
//!
//! [`Store`] is the trait domain logic sees; [`sled::SledStore`] is the one real implementation and
//! `fake::MemStore` an in-memory one for unit tests of other modules.

#[cfg(test)]
pub mod fake;
pub mod sled;

#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[cfg(test)]
pub use self::fake::MemStore;
pub use self::sled::SledStore;
use crate::rollout::Rollout;

/// The on-disk layout version. Bump it when a stored type changes incompatibly; an older or newer data
/// dir is then refused with [`StoreError::Schema`] instead of being misread.
///
/// History: 1 — first layout; 2 — operations carry the state machine's state (`machine`), the
/// rollout and caller that started them, start and finish times; steps carry the typed error; rollouts and rollout event logs;
/// 3 — a rollout's clusters are stored one per key beside it (a version-2 store is migrated on open).
pub const SCHEMA_VERSION: u32 = 3;

/// How many events are kept per operation (and per rollout) unless configured otherwise; older ones
/// are dropped.
pub const DEFAULT_EVENT_RETENTION: u64 = 1000;

/// A cluster the coordinator knows about, keyed by [`ClusterRecord::name`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Flotilla's name for the cluster; also the identity in its agent's certificate.
    pub name: String,
    /// AWS region of the EKS cluster.
    pub region: String,
    /// The cluster's name in the EKS API.
    pub eks_cluster_name: String,
    /// Labels that rollout stages select on (`env=prod`, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether an agent session is currently open (advisory; recomputed when agents reconnect).
    #[serde(default)]
    pub connected: bool,
    /// When the cluster's agent was last heard from.
    #[serde(default)]
    pub last_seen: Option<Timestamp>,
}

/// What an operation does to its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Self-managed node group onto an EKS managed node group.
    Migration,
    /// One Kubernetes minor-version hop: control plane, node groups, add-ons.
    Upgrade,
}

/// Where an operation stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Accepted, no step started yet.
    Pending,
    /// A step is running or about to.
    Running,
    /// Rolling back after an abort or a failure before the point of no return.
    RollingBack,
    /// Every step succeeded.
    Succeeded,
    /// A step failed; see that step's `error`.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl OperationState {
    /// Whether the operation is finished (nothing left to run on restart).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Where one step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Started (written before the step is sent/run); on restart, re-run it (steps are idempotent).
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Not run, on purpose (for example a rollback made it moot).
    Skipped,
    /// Stopped while running (the operation was cancelled and rolled back).
    Cancelled,
}

/// One step of an operation, with its state and attempt count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step id, unique within the operation.
    pub id: String,
    /// Step kind as the plan names it (`CreateManagedNodegroup`, `Drain`, ...).
    pub kind: String,
    /// Current state.
    pub state: StepState,
    /// How many times the step has been started.
    #[serde(default)]
    pub attempts: u32,
    /// When the latest attempt started.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When the step last finished (succeeded, failed or skipped).
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    /// The error of the latest failed attempt.
    #[serde(default)]
    pub error: Option<String>,
    /// The stable code of that error (`DRAIN_BLOCKED`, `EKS_API`, ...).
    #[serde(default)]
    pub error_code: Option<String>,
    /// That error as the agent sent it, when an agent step failed: the protobuf `StepError`,
    /// base64-encoded, so the API can return it whole (blockers and details included).
    #[serde(default)]
    pub error_detail: Option<String>,
    /// Outputs a later step needs (for example recorded replica counts), as the step defines them.
    #[serde(default)]
    pub outputs: serde_json::Value,
}

/// One operation on one cluster, keyed by [`OperationRecord::id`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Operation id, unique across the store.
    pub id: String,
    /// The cluster it runs on ([`ClusterRecord::name`]).
    pub cluster: String,
    /// What it does.
    pub kind: OperationKind,
    /// Its parameters (template, target version, surge, ...), as the planner defines them.
    #[serde(default)]
    pub params: serde_json::Value,
    /// Overall state.
    pub state: OperationState,
    /// The planned steps, in order.
    pub steps: Vec<StepRecord>,
    /// The state machine's state ([`crate::operation::OperationState`]), the source of truth the
    /// engine resumes from; `state` and `steps` are kept in sync with it for display.
    #[serde(default)]
    pub machine: Option<crate::operation::OperationState>,
    /// The rollout that started it, if any.
    #[serde(default)]
    pub rollout_id: Option<String>,
    /// Who started it: the caller's identity URI (`spiffe://flotilla/operator/operator/alice`).
    #[serde(default)]
    pub created_by: String,
    /// The W3C `traceparent` of the span it was created under (the `StartOperation` call's, or
    /// its rollout's), so its spans stay in that trace after a coordinator restart; `None` when
    /// traces are not exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When its first step started.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When it reached a final state.
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    /// When it last changed (set by the caller, who owns the clock).
    pub updated_at: Timestamp,
    /// Optimistic-concurrency counter: 1 on create, +1 on every [`Store::update_operation`]. Set by
    /// the store; whatever a caller puts here is ignored.
    #[serde(default)]
    pub version: u64,
}

/// An event to append to an operation's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When it happened.
    pub at: Timestamp,
    /// The step it concerns, if any.
    pub step: Option<String>,
    /// What happened, briefly.
    pub message: String,
}

/// A stored event: a [`NewEvent`] with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Per-operation sequence number: 1, 2, 3, ... without gaps, never reused (also not after old events
    /// are dropped by retention or the store is reopened).
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// The step it concerns, if any.
    pub step: Option<String>,
    /// What happened, briefly.
    pub message: String,
}

/// A rollout as stored, keyed by its id (`rollout.id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The rollout: spec, stages, clusters, as the state machine left it.
    pub rollout: Rollout,
    /// When it last changed (set by the caller, who owns the clock).
    pub updated_at: Timestamp,
    /// Optimistic-concurrency counter: 1 on create, +1 on every [`Store::update_rollout`]. Set by the
    /// store; whatever a caller puts here is ignored.
    #[serde(default)]
    pub version: u64,
    /// The W3C `traceparent` of the span it was created under (the `CreateRollout` call's): a
    /// resumed rollout's span joins the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An event to append to a rollout's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRolloutEvent {
    /// When it happened.
    pub at: Timestamp,
    /// The cluster it concerns, if any.
    pub cluster: Option<String>,
    /// What happened, briefly.
    pub message: String,
}

/// A stored rollout event: a [`NewRolloutEvent`] with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEventRecord {
    /// Per-rollout sequence number: 1, 2, 3, ... without gaps, never reused.
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// The cluster it concerns, if any.
    pub cluster: Option<String>,
    /// What happened, briefly.
    pub message: String,
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The underlying database failed (I/O, corruption).
    #[error("store backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored value could not be encoded or decoded.
    #[error("cannot encode or decode stored {what}")]
    Codec {
        /// What was being encoded or decoded (`operation op-1`, ...).
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The data dir was written by a different schema version.
    #[error(
        "store at {} has schema version {found}, this coordinator expects {expected}: run a coordinator \
         release that matches the data, or move the directory aside to start with an empty store",
        dir.display()
    )]
    Schema {
        /// The data dir.
        dir: PathBuf,
        /// The version found on disk (0: data without a version key).
        found: u32,
        /// [`SCHEMA_VERSION`].
        expected: u32,
    },
    /// [`Store::create_operation`] with an id that is already taken.
    #[error("operation {0} already exists")]
    Exists(String),
    /// No operation with this id.
    #[error("operation {0} not found")]
    NotFound(String),
    /// [`Store::update_operation`] lost a race: the record is no longer at the expected version.
    #[error("operation {id} changed concurrently: expected version {expected}, found {found}")]
    Conflict {
        /// Operation id.
        id: String,
        /// The version the caller read.
        expected: u64,
        /// The version now stored.
        found: u64,
    },
    /// [`Store::create_rollout`] with an id that is already taken.
    #[error("rollout {0} already exists")]
    RolloutExists(String),
    /// No rollout with this id.
    #[error("rollout {0} not found")]
    RolloutNotFound(String),
    /// [`Store::update_rollout`] lost a race: the record is no longer at the expected version.
    #[error("rollout {id} changed concurrently: expected version {expected}, found {found}")]
    RolloutConflict {
        /// Rollout id.
        id: String,
        /// The version the caller read.
        expected: u64,
        /// The version now stored.
        found: u64,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Durable state of the coordinator. Every method that writes returns only after the write is durable
/// (flushed), so whatever it acknowledged survives a crash.
pub trait Store: Send + Sync {
    /// Inserts or replaces clusters, in one durable write.
    fn put_clusters(&self, clusters: &[ClusterRecord]) -> Result<()>;
    /// The cluster named `name`, if known.
    fn get_cluster(&self, name: &str) -> Result<Option<ClusterRecord>>;
    /// Every cluster, ordered by name.
    fn list_clusters(&self) -> Result<Vec<ClusterRecord>>;

    /// Stores a new operation at version 1 and returns it; [`StoreError::Exists`] if the id is taken.
    fn create_operation(&self, op: &OperationRecord) -> Result<OperationRecord>;
    /// The operation `id`, if any.
    fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>>;
    /// Every operation, or those of one cluster, ordered by id.
    fn list_operations(&self, cluster: Option<&str>) -> Result<Vec<OperationRecord>>;
    /// Compare-and-swap: applies `f` to the operation if it is still at `expected_version`, stores it at
    /// `expected_version + 1` and returns it. [`StoreError::Conflict`] if another writer got there first
    /// (re-read and retry), [`StoreError::NotFound`] if there is no such operation. `f` may not change
    /// `id`, `cluster` or `version` (those are restored).
    fn update_operation(
        &self,
        id: &str,
        expected_version: u64,
        f: &mut dyn FnMut(&mut OperationRecord),
    ) -> Result<OperationRecord>;

    /// [`Store::update_operation`] and [`Store::append_event`] for each of `events`, in one atomic
    /// write: either the new record and all its events are durable, or none of them. This is how a
    /// state transition and the log lines that describe it are persisted before they are acted on.
    fn commit(
        &self,
        id: &str,
        expected_version: u64,
        f: &mut dyn FnMut(&mut OperationRecord),
        events: &[NewEvent],
    ) -> Result<(OperationRecord, Vec<EventRecord>)>;

    /// Appends an event to the operation's log with the next sequence number, dropping the oldest
    /// events beyond the retention bound. [`StoreError::NotFound`] if there is no such operation.
    fn append_event(&self, operation: &str, event: NewEvent) -> Result<EventRecord>;
    /// The operation's retained events with `seq > since`, oldest first.
    fn list_events(&self, operation: &str, since: u64) -> Result<Vec<EventRecord>>;

    /// Makes every earlier write durable (writes already do; this is for shutdown paths).
    fn flush(&self) -> Result<()>;

    /// Stores a new rollout at version 1 and returns it; [`StoreError::RolloutExists`] if the id is
    /// taken.
    fn create_rollout(&self, rollout: &RolloutRecord) -> Result<RolloutRecord>;
    /// The rollout `id`, if any.
    fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>>;
    /// Every rollout, ordered by id.
    fn list_rollouts(&self) -> Result<Vec<RolloutRecord>>;
    /// Compare-and-swap, as [`Store::update_operation`]: applies `f` if the rollout is still at
    /// `expected_version`, stores it at `expected_version + 1` and returns it;
    /// [`StoreError::RolloutConflict`] or [`StoreError::RolloutNotFound`] otherwise. `f` may not
    /// change the rollout's id or the version (those are restored).
    fn update_rollout(
        &self,
        id: &str,
        expected_version: u64,
        f: &mut dyn FnMut(&mut RolloutRecord),
    ) -> Result<RolloutRecord> {
        let current = self
            .get_rollout(id)?
            .ok_or_else(|| StoreError::RolloutNotFound(id.to_owned()))?;
        let next = apply_rollout_update(&current, expected_version, f)?;
        Ok(self
            .commit_rollout(&current, &next.rollout, next.updated_at, &[])?
            .0)
    }

    /// One transition of a rollout, in one durable write: stores `next` (changed at
    /// `updated_at`) at `prev.version + 1` if the stored rollout is still at `prev.version`, and
    /// appends `events` to its log; returns the new record and the events as stored.
    /// [`StoreError::RolloutConflict`] or [`StoreError::RolloutNotFound`] otherwise.
    ///
    /// `prev` is the record the caller read (or last committed); a store may write only what
    /// differs from it ([`Rollout::changed_clusters`]), so its cost follows the change, not the
    /// fleet. `next`'s id must be `prev`'s.
    fn commit_rollout(
        &self,
        prev: &RolloutRecord,
        next: &Rollout,
        updated_at: Timestamp,
        events: &[NewRolloutEvent],
    ) -> Result<(RolloutRecord, Vec<RolloutEventRecord>)>;

    /// Appends events to the rollout's log in order, with the next sequence numbers, in one durable
    /// write, dropping the oldest beyond the retention bound. [`StoreError::RolloutNotFound`] if
    /// there is no such rollout.
    fn append_rollout_events(
        &self,
        rollout: &str,
        events: &[NewRolloutEvent],
    ) -> Result<Vec<RolloutEventRecord>>;
    /// The rollout's retained events with `seq > since`, oldest first.
    fn list_rollout_events(&self, rollout: &str, since: u64) -> Result<Vec<RolloutEventRecord>>;
}

/// Applies an update closure, keeping the fields the store owns.
fn apply_update(
    current: &OperationRecord,
    expected_version: u64,
    f: &mut dyn FnMut(&mut OperationRecord),
) -> Result<OperationRecord> {
    if current.version != expected_version {
        return Err(StoreError::Conflict {
            id: current.id.clone(),
            expected: expected_version,
            found: current.version,
        });
    }
    let mut next = current.clone();
    f(&mut next);
    next.id.clone_from(&current.id);
    next.cluster.clone_from(&current.cluster);
    next.version = expected_version + 1;
    Ok(next)
}

/// The record a [`Store::commit_rollout`] of `next` over `prev` stores.
fn committed(prev: &RolloutRecord, next: &Rollout, updated_at: Timestamp) -> RolloutRecord {
    let mut rollout = next.clone();
    rollout.id.clone_from(&prev.rollout.id);
    RolloutRecord {
        rollout,
        updated_at,
        version: prev.version + 1,
        traceparent: prev.traceparent.clone(),
    }
}

/// Applies a rollout update closure, keeping the fields the store owns.
fn apply_rollout_update(
    current: &RolloutRecord,
    expected_version: u64,
    f: &mut dyn FnMut(&mut RolloutRecord),
) -> Result<RolloutRecord> {
    if current.version != expected_version {
        return Err(StoreError::RolloutConflict {
            id: current.rollout.id.clone(),
            expected: expected_version,
            found: current.version,
        });
    }
    let mut next = current.clone();
    f(&mut next);
    next.rollout.id.clone_from(&current.rollout.id);
    next.version = expected_version + 1;
    Ok(next)
}
