//! `StepError`: why a step failed, typed so the coordinator can act on it; it maps 1:1 onto the
//! typed error the wire protocol will carry (see [`StepError::code`]).

use std::time::Duration;

use serde::Serialize;

use crate::cluster::ClusterError;
use crate::model::Resources;

/// A pod that holds a drain up, and what holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// `namespace/pod`.
    pub pod: String,
    /// The node it runs on.
    pub node: String,
    /// `namespace/pdb` of every PodDisruptionBudget refusing its eviction (empty if none).
    pub pdbs: Vec<String>,
    /// Short reason: `blocked by PodDisruptionBudget`, `terminating`, `eviction failing: …`.
    pub reason: String,
    /// How long it has been blocked.
    #[serde(with = "secs")]
    pub for_: Duration,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}: {}", self.pod, self.node, self.reason)?;
        if !self.pdbs.is_empty() {
            write!(f, " ({})", self.pdbs.join(", "))?;
        }
        Ok(())
    }
}

/// A node that did not become Ready and schedulable, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeIssue {
    /// Node name.
    pub node: String,
    /// `not Ready`, `cordoned`, `tainted …`.
    pub reason: String,
}

/// A Deployment short of its target, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    /// `namespace/name`.
    pub deployment: String,
    /// Available replicas wanted.
    pub want: i32,
    /// Available replicas now.
    pub available: i32,
    /// Why: `2 Pending (0/3 nodes are available: …)`, `1 not Ready`, `1 on a node outside ng-new`.
    pub reason: String,
}

/// A pod the drain refuses to remove without a flag, as `kubectl drain` refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedPod {
    /// `namespace/pod`.
    pub pod: String,
    /// The node it runs on.
    pub node: String,
    /// Why, with the flag that overrides it.
    pub reason: String,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// A parameter is wrong; nothing was changed.
    #[error("invalid parameter `{field}`: {message}")]
    InvalidParameter {
        /// The parameter (as the CLI flag names it).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// No node carries the group's label; nothing was changed.
    #[error("node group `{group}` not found (no node labelled {labels}); known groups: {known}")]
    NodeGroupNotFound {
        /// The group asked for.
        group: String,
        /// The labels looked at.
        labels: String,
        /// Groups present in the cluster, comma separated.
        known: String,
    },
    /// Too few of the group's nodes became Ready and schedulable in time.
    #[error("node group `{group}`: {ready} of {want} nodes Ready and schedulable after {}s{}", waited.as_secs(), list(not_ready))]
    NodesNotReady {
        /// The group.
        group: String,
        /// Nodes wanted.
        want: u32,
        /// Nodes Ready and schedulable.
        ready: u32,
        /// Those that are not, and why.
        not_ready: Vec<NodeIssue>,
        /// How long the step waited.
        waited: Duration,
    },
    /// The new nodes cannot hold the surge; nothing was scaled.
    #[error("node group `{group}` cannot fit the surge: needs {needed}, has {free} free; would not fit: {}", unplaced.join(", "))]
    InsufficientCapacity {
        /// The target group.
        group: String,
        /// What the extra pods request in total.
        needed: Resources,
        /// What the group's nodes have free.
        free: Resources,
        /// `namespace/deployment` of pods that found no room (first-fit).
        unplaced: Vec<String>,
    },
    /// Scaled Deployments did not reach their target in time.
    #[error("{} Deployment(s) short of their target after {}s{}", short.len(), waited.as_secs(), list(short))]
    DeploymentsNotReady {
        /// Each short Deployment.
        short: Vec<Shortfall>,
        /// How long the step waited.
        waited: Duration,
    },
    /// Pods on the nodes need a flag before the drain may remove them; nothing was evicted.
    #[error("cannot drain: {} pod(s) need a flag to be removed{}", refused.len(), list(refused))]
    DrainRefused {
        /// Each refused pod.
        refused: Vec<RefusedPod>,
    },
    /// A node did not empty within the per-node timeout (escalation `fail`).
    #[error("node {node} not drained after {}s: {} pod(s) left{}", waited.as_secs(), blockers.len(), list(blockers))]
    DrainBlocked {
        /// The node.
        node: String,
        /// The pods left and what blocks each.
        blockers: Vec<Blocker>,
        /// How long the node was drained.
        waited: Duration,
    },
    /// Postflight found nodes at the wrong version or unavailable Deployments.
    #[error("postflight: {}", problems.join("; "))]
    PostflightFailed {
        /// Each problem, one line each.
        problems: Vec<String>,
    },
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Cluster(#[from] ClusterError),
    /// The step was stopped before it ended (the coordinator's `CancelStep`). Steps stop only at
    /// await points and are idempotent, so running the step again resumes where it stood.
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why, as the canceller gave it.
        reason: String,
    },
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = items.iter().take(20).map(ToString::to_string).collect();
    let more = if items.len() > 20 {
        format!("; … {} more", items.len() - 20)
    } else {
        String::new()
    };
    format!(": {}{more}", shown.join("; "))
}

impl std::fmt::Display for NodeIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.node, self.reason)
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} available: {}",
            self.deployment, self.available, self.want, self.reason
        )
    }
}

impl std::fmt::Display for RefusedPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}: {}", self.pod, self.node, self.reason)
    }
}

impl StepError {
    /// The error's stable code, as the wire protocol and metrics name it.
    pub fn code(&self) -> &'static str {
        match self {
            StepError::InvalidParameter { .. } => "INVALID_PARAMETER",
            StepError::NodeGroupNotFound { .. } => "NODE_GROUP_NOT_FOUND",
            StepError::NodesNotReady { .. } => "NODES_NOT_READY",
            StepError::InsufficientCapacity { .. } => "INSUFFICIENT_CAPACITY",
            StepError::DeploymentsNotReady { .. } => "DEPLOYMENTS_NOT_READY",
            StepError::DrainRefused { .. } => "DRAIN_REFUSED",
            StepError::DrainBlocked { .. } => "DRAIN_BLOCKED",
            StepError::PostflightFailed { .. } => "POSTFLIGHT_FAILED",
            StepError::Cluster(_) => "KUBERNETES_API",
            StepError::Cancelled { .. } => "CANCELLED",
        }
    }

    /// Whether running the step again, unchanged, may succeed (timeouts and API trouble).
    pub fn retryable(&self) -> bool {
        match self {
            StepError::InvalidParameter { .. }
            | StepError::NodeGroupNotFound { .. }
            | StepError::DrainRefused { .. }
            | StepError::InsufficientCapacity { .. } => false,
            StepError::NodesNotReady { .. }
            | StepError::DeploymentsNotReady { .. }
            | StepError::DrainBlocked { .. }
            | StepError::PostflightFailed { .. }
            | StepError::Cancelled { .. } => true,
            StepError::Cluster(e) => e.is_transient(),
        }
    }

    /// Shorthand for [`StepError::InvalidParameter`].
    pub fn invalid(field: &str, message: impl Into<String>) -> StepError {
        StepError::InvalidParameter {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Serialises durations as (fractional) seconds.
pub(crate) mod secs {
    use std::time::Duration;

    /// Serialises `d` as seconds.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}
