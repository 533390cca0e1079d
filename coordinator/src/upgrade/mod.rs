//! The coordinator's side of a one-minor Kubernetes upgrade (DESIGN.md "Upgrade, step by step"):
//! one plain async function per coordinator step of [`crate::plan::UPGRADE`], over any
//! [`Eks`] and small inputs, returning a typed output or an [`UpgradeError`] with a stable
//! [`code`](UpgradeError::code) and [`retryable`](UpgradeError::retryable) — what the engine turns
//! into `Event::StepSucceeded` / `Event::StepFailed`.
//!
//! - [`preflight`]: versions, insights, PDBs, capacity; every blocker named before anything
//!   changes ([`UpgradeError::PreflightBlocked`]).
//! - [`upgrade_control_plane`]: UpdateClusterVersion, polled to `Successful`/`Failed`.
//! - [`upgrade_nodegroups`]: UpdateNodegroupVersion per managed group, one after another.
//! - [`upgrade_addons`]: each managed add-on to the new minor's default version; lagging
//!   self-managed `coredns`/`kube-proxy` reported.
//!
//! Every step is idempotent and, in [`RunMode::Recheck`] (after a restart) or when EKS shows the
//! subject `UPDATING`, first looks for the update already in progress (ListUpdates,
//! DescribeUpdate) and waits on it rather than issuing another. Progress goes to a [`Progress`]
//! (e.g. "nodegroup 2/3 ng-b: updating").

mod addons;
mod control_plane;
pub mod inventory;
mod nodegroups;
pub mod pace;
mod preflight;
pub mod version;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::eks::{
    wait_update_of, Eks, EksError, Update, UpdateErrorDetail, UpdateStatus, UpdateSubject, WaitOptions,
};
use crate::operation::StepOutputs;
use crate::plan::Step;

pub use addons::{upgrade_addons, AddonOutcome, AddonResult, AddonsUpgrade, LaggingAddon, SelfManagedAddons};
pub use control_plane::{upgrade_control_plane, ControlPlaneUpgrade};
pub use inventory::{
    AddonWorkload, AgentInventory, DeprecatedApi, DeprecatedApiScan, GroupKind, InventoryNode,
    InventoryNodeGroup, InventoryPdb,
};
pub use nodegroups::{upgrade_nodegroups, NodegroupOutcome, NodegroupResult, NodegroupsUpgrade};
pub use pace::{learn, pace_issued, Issued, UpdateDurations};
pub use preflight::{preflight, Finding, InsightsCheck, NodegroupCheck, PreflightReport};
pub use version::MinorVersion;

pub use crate::operation::RunMode;

/// What went wrong in an upgrade step. [`code`](Self::code) is stable (it is what operators,
/// rollouts and the CLI see); [`retryable`](Self::retryable) says whether running the step again
/// unchanged may succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpgradeError {
    /// A version string could not be read.
    #[error("invalid Kubernetes version {value:?}: {reason}")]
    InvalidVersion {
        /// What was given.
        value: String,
        /// Why it is invalid and how to write it.
        reason: String,
    },
    /// Preflight found blockers; nothing was changed.
    #[error("preflight blocked the upgrade to {}: {}", .0.target, .0.blockers_text())]
    PreflightBlocked(Box<PreflightReport>),
    /// The cluster is not where this step can start (e.g. node groups before the control plane).
    #[error("{subject} is at {found}; {expected}")]
    VersionSkew {
        /// What is at the wrong version.
        subject: String,
        /// Its version.
        found: String,
        /// What the step needs, and what to do.
        expected: String,
    },
    /// EKS is busy with another update of the subject that is not ours; try again later.
    #[error("{subject} is busy: {message}")]
    Busy {
        /// The control plane, node group or add-on.
        subject: String,
        /// What EKS said.
        message: String,
    },
    /// The control-plane update ended `Failed` (the control plane stays at its version).
    #[error("control-plane update {update_id} to {target} ended {status}: {}", errors_text(.errors))]
    ControlPlaneUpdateFailed {
        /// The update.
        update_id: String,
        /// The version it was to reach.
        target: MinorVersion,
        /// `Failed` or `Cancelled`.
        status: String,
        /// EKS's errors.
        errors: Vec<UpdateErrorDetail>,
    },
    /// A node group update could not evict pods (a PodDisruptionBudget kept refusing); EKS gave
    /// up and left the group on its version. Upgrade with `force`, or fix the budget.
    #[error("nodegroup {nodegroup}: update {update_id} failed with PodEvictionFailure: {message}{}", resources_text(.resource_ids))]
    PodEvictionFailure {
        /// The node group.
        nodegroup: String,
        /// The update.
        update_id: String,
        /// EKS's message.
        message: String,
        /// The resources EKS named (nodes, and `namespace/pod` of the pods it could not evict).
        resource_ids: Vec<String>,
    },
    /// A node group update ended `Failed` for another reason (e.g. `NodeCreationFailure`).
    #[error("nodegroup {nodegroup}: update {update_id} ended {status}: {}", errors_text(.errors))]
    NodegroupUpdateFailed {
        /// The node group.
        nodegroup: String,
        /// The update.
        update_id: String,
        /// `Failed` or `Cancelled`.
        status: String,
        /// EKS's errors.
        errors: Vec<UpdateErrorDetail>,
    },
    /// A node group is in a state an update cannot start from.
    #[error("nodegroup {nodegroup} is {status}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    NodegroupNotActive {
        /// The node group.
        nodegroup: String,
        /// Its status.
        status: String,
        /// Its health issues.
        detail: String,
    },
    /// An add-on update ended `Failed`.
    #[error("add-on {addon}: update {update_id} to {version} ended {status}: {}", errors_text(.errors))]
    AddonUpdateFailed {
        /// The add-on.
        addon: String,
        /// The update.
        update_id: String,
        /// The version it was to reach.
        version: String,
        /// `Failed` or `Cancelled`.
        status: String,
        /// EKS's errors.
        errors: Vec<UpdateErrorDetail>,
    },
    /// An add-on did not become `ACTIVE` after its update.
    #[error("add-on {addon} is not ACTIVE after its update: {detail}")]
    AddonNotActive {
        /// The add-on.
        addon: String,
        /// What was seen.
        detail: String,
    },
    /// An EKS call or wait failed.
    #[error(transparent)]
    Eks(#[from] EksError),
}

fn errors_text(errors: &[UpdateErrorDetail]) -> String {
    if errors.is_empty() {
        "EKS gave no error detail".into()
    } else {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn resources_text(ids: &[String]) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        format!(" (resources: {})", ids.join(", "))
    }
}

impl UpgradeError {
    /// A short, stable code, e.g. `PREFLIGHT_BLOCKED`, `POD_EVICTION_FAILURE`.
    pub fn code(&self) -> &'static str {
        match self {
            UpgradeError::InvalidVersion { .. } => "INVALID_PARAMETER",
            UpgradeError::PreflightBlocked(_) => "PREFLIGHT_BLOCKED",
            UpgradeError::VersionSkew { .. } => "VERSION_SKEW",
            UpgradeError::Busy { .. } => "EKS_BUSY",
            UpgradeError::ControlPlaneUpdateFailed { .. } => "CONTROL_PLANE_UPDATE_FAILED",
            UpgradeError::PodEvictionFailure { .. } => "POD_EVICTION_FAILURE",
            UpgradeError::NodegroupUpdateFailed { .. } => "NODEGROUP_UPDATE_FAILED",
            UpgradeError::NodegroupNotActive { .. } => "NODEGROUP_NOT_ACTIVE",
            UpgradeError::AddonUpdateFailed { .. } => "ADDON_UPDATE_FAILED",
            UpgradeError::AddonNotActive { .. } => "ADDON_NOT_ACTIVE",
            UpgradeError::Eks(EksError::Timeout { .. }) => "EKS_TIMEOUT",
            UpgradeError::Eks(EksError::Api { .. } | EksError::Transport { .. }) => "EKS_API",
            UpgradeError::Eks(EksError::Failed { .. }) => "EKS_FAILED",
            UpgradeError::Eks(_) => "EKS_CONFIG",
        }
    }

    /// Whether running the step again, unchanged, may succeed: throttling, transport errors,
    /// waits that timed out (the step re-checks what is in progress), a busy subject, a group
    /// or add-on still settling. Blockers and failed updates need a person (or `force`).
    pub fn retryable(&self) -> bool {
        match self {
            UpgradeError::Busy { .. } | UpgradeError::AddonNotActive { .. } => true,
            UpgradeError::NodegroupNotActive { status, .. } => {
                !matches!(status.as_str(), "CREATE_FAILED" | "DELETE_FAILED")
            }
            UpgradeError::Eks(EksError::Timeout { .. }) => true,
            UpgradeError::Eks(e) => e.retryable(),
            _ => false,
        }
    }
}

// === progress ===

/// One progress report of a running upgrade step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressUpdate {
    /// The step reporting.
    pub step: Step,
    /// Units done (node groups, add-ons, checks — the message says which).
    pub done: u64,
    /// Units in all.
    pub total: u64,
    /// Short message, e.g. `nodegroup 2/3 ng-b: updating 1.33 → 1.34 (maxUnavailable 1)`.
    pub message: String,
}

/// Where a step's progress goes (the engine shows it as the operation's progress). Closures
/// `Fn(&ProgressUpdate)` are progress sinks.
pub trait Progress: Send + Sync {
    /// A new report.
    fn report(&self, update: &ProgressUpdate);
}

impl<F: Fn(&ProgressUpdate) + Send + Sync> Progress for F {
    fn report(&self, update: &ProgressUpdate) {
        self(update)
    }
}

/// A [`Progress`] that drops every report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _: &ProgressUpdate) {}
}

fn report(progress: &dyn Progress, step: Step, done: usize, total: usize, message: String) {
    // Every poll reports; at info level that would be most of the log. Steps log their start and end.
    tracing::debug!(%step, done, total, %message, "progress");
    progress.report(&ProgressUpdate {
        step,
        done: done as u64,
        total: total as u64,
        message,
    });
}

// === options ===

/// How the upgrade steps behave.
#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    /// Node group updates go on past pods whose PodDisruptionBudget refuses eviction
    /// (UpdateNodegroupVersion `force`); only when the rollout says so. Preflight then reports
    /// zero-disruption budgets as warnings instead of blockers.
    pub force: bool,
    /// How EKS updates are polled (the control plane takes tens of minutes on real EKS).
    pub wait: WaitOptions,
    /// What updates have taken across the fleet, to pace the polls of the next ones; `None`
    /// polls on the backoff alone.
    pub durations: Option<Arc<UpdateDurations>>,
    /// Where the hops this one is part of end, when past this hop's target: preflight checks
    /// that EKS offers it too, so a rollout to a version EKS does not have stops before its
    /// first hop.
    pub goal: Option<MinorVersion>,
}

impl Default for UpgradeOptions {
    fn default() -> Self {
        UpgradeOptions {
            force: false,
            wait: WaitOptions {
                timeout: std::time::Duration::from_secs(90 * 60),
                ..WaitOptions::default()
            },
            durations: None,
            goal: None,
        }
    }
}

// === outputs ===

/// A step result the engine stores: a one-line summary, and the result itself as JSON.
pub trait StepReport: Serialize {
    /// One line for the event log and the CLI.
    fn summary(&self) -> String;

    /// The step's outputs (`detail` is this value as JSON).
    fn outputs(&self) -> StepOutputs {
        StepOutputs {
            summary: self.summary(),
            evictable_pods_left: None,
            detail: serde_json::to_string(self).ok(),
        }
    }
}

// === shared helpers ===

/// The most recent update of `subject` that is `InProgress` and satisfies `want`: what a step
/// adopts instead of issuing a new one after a restart.
async fn find_in_progress<E: Eks + ?Sized>(
    eks: &E,
    subject: UpdateSubject<'_>,
    want: impl Fn(&Update) -> bool,
) -> Result<Option<Update>, UpgradeError> {
    let ids = eks.list_updates(subject).await?;
    for id in ids.iter().rev() {
        let u = eks.describe_update_of(id, subject).await?;
        if u.status == UpdateStatus::InProgress && want(&u) {
            return Ok(Some(u));
        }
    }
    Ok(None)
}

/// Waits for update `id` of `subject`; a `Failed`/`Cancelled` end is returned as the final
/// [`Update`] (with EKS's error details) for the caller to turn into its typed error. An update
/// this step `issued` has its polls paced by [`UpgradeOptions::durations`] and, when it
/// succeeds, adds its duration to them.
async fn wait_for_end<E: Eks + ?Sized>(
    eks: &E,
    id: &str,
    subject: UpdateSubject<'_>,
    opts: &UpgradeOptions,
    issued: Option<&Issued>,
) -> Result<Update, UpgradeError> {
    let durations = opts.durations.as_deref();
    let look = || async {
        let u = eks.describe_update_of(id, subject).await?;
        Ok((u.status != UpdateStatus::InProgress).then_some(u))
    };
    let end = match pace_issued(durations, issued, &opts.wait, look).await? {
        Some(end) => end,
        None => match wait_update_of(eks, id, subject, &opts.wait).await {
            Ok(u) => u,
            Err(EksError::Failed { .. }) => return Ok(eks.describe_update_of(id, subject).await?),
            Err(e) => return Err(e.into()),
        },
    };
    if end.status == UpdateStatus::Successful {
        learn(durations, issued);
    }
    Ok(end)
}

/// Whether `e` is EKS saying another update of the subject is in progress.
fn is_in_use(e: &EksError) -> bool {
    e.code() == Some("ResourceInUseException")
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupKind::SelfManaged => "self-managed",
            GroupKind::Managed => "managed",
        })
    }
}

#[cfg(test)]
mod tests;
