//! The agent's steps — each idempotent and resumable, with typed parameters, progress and typed
//! errors — and the one enum that dispatches them. What a step must remember lives in the
//! cluster (annotations, labels, taints), so a killed step run again ends as if it ran once.

pub mod drain;
pub mod error;
pub mod postflight;
pub mod restore_scale;
pub mod rollback;
pub mod surge_scale;
pub mod taint;
pub mod verify_ready;
pub mod wait_nodes_ready;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;
use tracing::Instrument;

use crate::cluster::{Cluster, ClusterError};
use crate::inventory::{self, Inventory};
pub use error::{Blocker, NodeIssue, RefusedPod, Shortfall, StepError};
pub use flotilla_proto::limits::MAX_WAIT;

/// Which step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum StepKind {
    /// Report versions, node groups, Deployments and blocking PDBs.
    Inventory,
    /// Wait for a node group's nodes to be Ready and schedulable.
    WaitNodesReady,
    /// Taint and label the old nodes.
    Taint,
    /// Scale Deployments up so new pods land on the new nodes.
    SurgeScale,
    /// Wait for the surged Deployments to be available on the new nodes.
    VerifyReady,
    /// Cordon and drain the old nodes through the Eviction API.
    Drain,
    /// Scale back to the recorded replicas.
    RestoreScale,
    /// Undo taint, cordon and surge (abort before the drain ends).
    Rollback,
    /// Check kubelet versions and Deployment availability.
    Postflight,
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One progress report of a running step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// The step reporting.
    pub step: StepKind,
    /// Units done (nodes, Deployments, pods — the message says which).
    pub done: u64,
    /// Units in all.
    pub total: u64,
    /// Short message.
    pub message: String,
    /// Pods holding the step up right now, with what blocks them.
    pub blockers: Vec<Blocker>,
}

impl Progress {
    /// A report without blockers.
    pub fn new(step: StepKind, done: u64, total: u64, message: impl Into<String>) -> Progress {
        Progress {
            step,
            done,
            total,
            message: message.into(),
            blockers: Vec::new(),
        }
    }
}

/// What a step saw that is counted rather than shown: the agent turns these into metrics
/// (`crate::metrics`); local runs ignore them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// One eviction (or forced deletion) call's answer.
    Eviction(EvictionOutcome),
    /// One node's drain ended.
    NodeDrain {
        /// How it ended.
        outcome: NodeDrainOutcome,
        /// From its cordon to the end.
        took: Duration,
    },
}

/// The answer to one eviction call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionOutcome {
    /// The pod is being deleted (or was gone already).
    Allowed,
    /// A PodDisruptionBudget refused (HTTP 429).
    Refused429 {
        /// The refusing budgets as `namespace/name`, when known.
        pdbs: Vec<String>,
    },
    /// The call failed otherwise (retried while transient).
    Error,
    /// Deleted despite its budget (`on-blocked force-after`).
    ForcedDelete,
}

/// How one node's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeDrainOutcome {
    /// No evictable pods left.
    Drained,
    /// Timed out and left cordoned (`on-blocked skip-node`).
    Skipped,
    /// Timed out; the step fails.
    Blocked,
}

/// Where steps send their progress.
pub trait ProgressSink: Send + Sync {
    /// Takes one report; must not block.
    fn report(&self, progress: Progress);

    /// Takes one observation (for metrics); must not block. Ignored unless overridden.
    fn observe(&self, _observation: Observation) {}
}

/// Discards progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _progress: Progress) {}
}

impl ProgressSink for tokio::sync::mpsc::UnboundedSender<Progress> {
    fn report(&self, progress: Progress) {
        let _ = self.send(progress);
    }
}

impl ProgressSink for std::sync::Mutex<Vec<Progress>> {
    fn report(&self, progress: Progress) {
        self.lock().unwrap_or_else(|p| p.into_inner()).push(progress);
    }
}

/// A step with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// See [`crate::inventory`].
    Inventory,
    /// See [`wait_nodes_ready`].
    WaitNodesReady(wait_nodes_ready::Params),
    /// See [`taint`].
    Taint(taint::Params),
    /// See [`surge_scale`].
    SurgeScale(surge_scale::Params),
    /// See [`verify_ready`].
    VerifyReady(verify_ready::Params),
    /// See [`drain`].
    Drain(drain::Params),
    /// See [`restore_scale`].
    RestoreScale(restore_scale::Params),
    /// See [`rollback`].
    Rollback(rollback::Params),
    /// See [`postflight`].
    Postflight(postflight::Params),
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", content = "output")]
pub enum StepOutput {
    /// See [`Inventory`].
    Inventory(Inventory),
    /// See [`wait_nodes_ready::Output`].
    WaitNodesReady(wait_nodes_ready::Output),
    /// See [`taint::Output`].
    Taint(taint::Output),
    /// See [`surge_scale::Output`].
    SurgeScale(surge_scale::Output),
    /// See [`verify_ready::Output`].
    VerifyReady(verify_ready::Output),
    /// See [`drain::Output`].
    Drain(drain::Output),
    /// See [`restore_scale::Output`].
    RestoreScale(restore_scale::Output),
    /// See [`rollback::Output`].
    Rollback(rollback::Output),
    /// See [`postflight::Output`].
    Postflight(postflight::Output),
}

impl Step {
    /// Which step this is.
    pub fn kind(&self) -> StepKind {
        match self {
            Step::Inventory => StepKind::Inventory,
            Step::WaitNodesReady(_) => StepKind::WaitNodesReady,
            Step::Taint(_) => StepKind::Taint,
            Step::SurgeScale(_) => StepKind::SurgeScale,
            Step::VerifyReady(_) => StepKind::VerifyReady,
            Step::Drain(_) => StepKind::Drain,
            Step::RestoreScale(_) => StepKind::RestoreScale,
            Step::Rollback(_) => StepKind::Rollback,
            Step::Postflight(_) => StepKind::Postflight,
        }
    }

    /// Checks the parameters without touching the cluster.
    pub fn validate(&self) -> Result<(), StepError> {
        match self {
            Step::Inventory => Ok(()),
            Step::RestoreScale(p) => p.validate(),
            Step::WaitNodesReady(p) => p.validate(),
            Step::Taint(p) => p.validate(),
            Step::SurgeScale(p) => p.validate(),
            Step::VerifyReady(p) => p.validate(),
            Step::Drain(p) => p.validate(),
            Step::Rollback(p) => p.validate(),
            Step::Postflight(p) => p.validate(),
        }
    }

    /// Runs the step on `cluster` (named `cluster_name` in spans), reporting to `progress`.
    pub async fn run<C: Cluster>(
        &self,
        cluster: &C,
        cluster_name: &str,
        progress: &dyn ProgressSink,
    ) -> Result<StepOutput, StepError> {
        let span = tracing::info_span!("step", cluster = %cluster_name, step = %self.kind());
        async move {
            self.validate()?;
            let out = match self {
                Step::Inventory => StepOutput::Inventory(inventory::collect(cluster).await?),
                Step::WaitNodesReady(p) => {
                    StepOutput::WaitNodesReady(wait_nodes_ready::run(cluster, p, progress).await?)
                }
                Step::Taint(p) => StepOutput::Taint(taint::run(cluster, p, progress).await?),
                Step::SurgeScale(p) => StepOutput::SurgeScale(surge_scale::run(cluster, p, progress).await?),
                Step::VerifyReady(p) => {
                    StepOutput::VerifyReady(verify_ready::run(cluster, p, progress).await?)
                }
                Step::Drain(p) => StepOutput::Drain(drain::run(cluster, p, progress).await?),
                Step::RestoreScale(p) => {
                    StepOutput::RestoreScale(restore_scale::run(cluster, p, progress).await?)
                }
                Step::Rollback(p) => StepOutput::Rollback(rollback::run(cluster, p, progress).await?),
                Step::Postflight(p) => StepOutput::Postflight(postflight::run(cluster, p, progress).await?),
            };
            tracing::info!("step done");
            Ok(out)
        }
        .instrument(span)
        .await
    }
}

/// Read-modify-write of one node: `change` edits the node and says whether it changed anything;
/// stale writes (409) are retried on a fresh read. Returns whether the node was written.
pub(crate) async fn modify_node<C: Cluster>(
    cluster: &C,
    node: &Node,
    change: impl Fn(&mut Node) -> bool,
) -> Result<bool, StepError> {
    let name = crate::model::name(&node.metadata).to_string();
    let mut current = node.clone();
    let mut attempt = 0;
    loop {
        let mut next = current.clone();
        if !change(&mut next) {
            return Ok(false);
        }
        match cluster.replace_node(&next).await {
            Ok(_) => return Ok(true),
            Err(ClusterError::Conflict { .. }) if attempt < 10 => {
                attempt += 1;
                current = cluster.node(&name).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Parses a duration such as `10m`, `90s`, `1h30m` or `500ms`, at most [`MAX_WAIT`].
pub fn parse_duration(field: &str, s: &str) -> Result<Duration, StepError> {
    let bad = || {
        StepError::invalid(
            field,
            format!("`{s}` is not a duration; write a number with a unit, e.g. 90s, 10m, 1h30m"),
        )
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(bad()),
        };
        total = Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| total.checked_add(d))
            .filter(|t| *t <= MAX_WAIT)
            .ok_or_else(|| {
                StepError::invalid(
                    field,
                    format!(
                        "`{s}` is longer than the {} (7 days) a step may wait; use a shorter duration",
                        format_duration(MAX_WAIT)
                    ),
                )
            })?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it (`1m30s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_name_the_field_when_wrong() {
        assert_eq!(parse_duration("t", "10m").ok(), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("t", "1h30m").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("t", "500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("t", "1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        let err = parse_duration("--node-timeout", "10").unwrap_err().to_string();
        assert!(err.contains("--node-timeout") && err.contains("10m"), "{err}");
        assert!(parse_duration("t", "m").is_err());
        assert!(parse_duration("t", "5 minutes").is_err());
        // Past 7 days, and past what a Duration holds: refused with the field, never a panic.
        assert_eq!(parse_duration("t", "168h").ok(), Some(MAX_WAIT));
        for long in ["168h1s", "99999999999999999999999h", "2562047788015215h"] {
            let err = parse_duration("--node-timeout", long).unwrap_err().to_string();
            assert!(err.contains("--node-timeout") && err.contains("7 days"), "{err}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
