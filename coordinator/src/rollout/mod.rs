//! Fleet rollouts (DESIGN.md "Fleet rollouts"): one kind of work over the clusters a label
//! selector picks, in ordered stages with concurrency limits, soak times, failure budgets and
//! approval gates; pausable, resumable, cancellable, and stored so it survives a restart.
//!
//! - [`selector`]: Kubernetes label selectors (parse, match): [`crate::selector`], re-exported.
//! - [`spec`]: the validated [`RolloutSpec`] built from `CreateRolloutRequest`.
//! - [`state`]: the pure state machine ([`Rollout`], [`next`], [`Event`], [`Action`]).
//! - [`convert`]: rollout state to the wire's `Rollout`, `Stage` and `ClusterState`.

pub mod convert;
pub mod spec;
pub mod state;

pub use crate::selector;
pub use selector::{Selector, SelectorError};
pub use spec::{
    Concurrency, MigrationSpec, MinorVersion, RolloutSpec, SpecError, StageSpec, UpgradeSpec, Work,
};
pub use state::{
    next, operation_id, Action, ClusterFacts, ClusterInventory, ClusterRun, ClusterStatus, CommandError,
    Event, OperationWork, Outcome, Phase, PlannedOp, Rollout, RolloutState, StageRun, StageStatus,
};

#[cfg(test)]
mod tests;
