//! `UpgradeNodegroups`: every managed node group to the control plane's new minor with
//! UpdateNodegroupVersion, one group after another, each polled to its end. EKS replaces nodes
//! as the group's `updateConfig` allows (its `maxUnavailable` is honoured, not changed);
//! `force` only when the rollout says so. A `PodEvictionFailure` is reported with what EKS named.

use serde::Serialize;
use tracing::Instrument;

use super::{
    find_in_progress, is_in_use, report, wait_for_end, Issued, MinorVersion, Progress, RunMode, StepReport,
    UpgradeError, UpgradeOptions,
};
use crate::eks::{Eks, Nodegroup, NodegroupStatus, Update, UpdateStatus, UpdateSubject};
use crate::plan::Step;

/// What happened to one node group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NodegroupOutcome {
    /// Updated by this attempt.
    Updated,
    /// An update to the target was already in progress; it was waited on.
    Resumed,
    /// Already at the target.
    AlreadyAtTarget,
}

/// One node group's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodegroupResult {
    /// The node group.
    pub name: String,
    /// Its version before.
    pub from: Option<String>,
    /// Its version now.
    pub to: MinorVersion,
    /// The update waited on.
    pub update_id: Option<String>,
    /// What happened.
    pub outcome: NodegroupOutcome,
    /// Its update configuration, e.g. `maxUnavailable 1`.
    pub update_config: String,
}

/// What `UpgradeNodegroups` did, group by group, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodegroupsUpgrade {
    /// The target.
    pub target: MinorVersion,
    /// Every managed node group.
    pub groups: Vec<NodegroupResult>,
}

impl StepReport for NodegroupsUpgrade {
    fn summary(&self) -> String {
        let updated = self
            .groups
            .iter()
            .filter(|g| g.outcome != NodegroupOutcome::AlreadyAtTarget)
            .count();
        format!(
            "{updated} of {} managed node groups updated to {}",
            self.groups.len(),
            self.target
        )
    }
}

/// Updates every managed node group to `target` (the control plane must be there already), one
/// after another. In [`RunMode::Recheck`], or for a group EKS shows `UPDATING`, an update to the
/// target in progress is waited on instead of issuing another; any other update in progress is
/// waited out first.
pub async fn upgrade_nodegroups<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    mode: RunMode,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<NodegroupsUpgrade, UpgradeError> {
    let span = tracing::info_span!("upgrade_step", cluster = %eks.cluster_name(), step = %Step::UpgradeNodegroups, %target, force = opts.force);
    run(eks, target, mode, opts, progress).instrument(span).await
}

async fn run<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    mode: RunMode,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<NodegroupsUpgrade, UpgradeError> {
    let step = Step::UpgradeNodegroups;
    let cluster = eks.describe_cluster().await?;
    if MinorVersion::of_kubernetes(&cluster.version) != Some(target) {
        return Err(UpgradeError::VersionSkew {
            subject: format!("control plane of {}", eks.cluster_name()),
            found: cluster.version,
            expected: format!(
                "node groups follow the control plane: UpgradeControlPlane to {target} must succeed first"
            ),
        });
    }
    let mut names = eks.list_nodegroups().await?;
    names.sort();
    let total = names.len();
    let mut groups = Vec::with_capacity(total);
    for (i, name) in names.iter().enumerate() {
        let n = i + 1;
        let ng = eks.describe_nodegroup(name).await?;
        let result = one(eks, &ng, target, mode, opts, progress, n, total)
            .instrument(tracing::info_span!("nodegroup", nodegroup = %name))
            .await?;
        report(
            progress,
            step,
            n,
            total,
            format!(
                "nodegroup {n}/{total} {name}: at {target} ({})",
                match result.outcome {
                    NodegroupOutcome::AlreadyAtTarget => "already",
                    NodegroupOutcome::Updated => "updated",
                    NodegroupOutcome::Resumed => "updated, resumed",
                }
            ),
        );
        groups.push(result);
    }
    if total == 0 {
        report(progress, step, 0, 0, "no managed node groups".into());
    }
    Ok(NodegroupsUpgrade { target, groups })
}

#[allow(clippy::too_many_arguments)]
async fn one<E: Eks + ?Sized>(
    eks: &E,
    ng: &Nodegroup,
    target: MinorVersion,
    mode: RunMode,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
    n: usize,
    total: usize,
) -> Result<NodegroupResult, UpgradeError> {
    let step = Step::UpgradeNodegroups;
    let name = ng.name.as_str();
    let subject = UpdateSubject::Nodegroup(name);
    let version = ng.version.as_deref().and_then(MinorVersion::of_kubernetes);
    let result = |outcome, update_id| NodegroupResult {
        name: name.to_string(),
        from: ng.version.clone(),
        to: target,
        update_id,
        outcome,
        update_config: ng.update_config_text(),
    };
    if version == Some(target) && ng.status == NodegroupStatus::Active {
        return Ok(result(NodegroupOutcome::AlreadyAtTarget, None));
    }
    match ng.status {
        NodegroupStatus::Active | NodegroupStatus::Updating | NodegroupStatus::Degraded => {}
        ref other => {
            return Err(UpgradeError::NodegroupNotActive {
                nodegroup: name.to_string(),
                status: other.to_string(),
                detail: ng.health_issues.join("; "),
            })
        }
    }
    let to_target = |u: &Update| {
        u.kind.as_deref().is_none_or(|k| k == "VersionUpdate")
            && u.param("Version")
                .is_none_or(|v| MinorVersion::of_kubernetes(v) == Some(target))
    };
    let mut adopted = None;
    if mode == RunMode::Recheck || ng.status == NodegroupStatus::Updating {
        if let Some(u) = find_in_progress(eks, subject, |_| true).await? {
            if to_target(&u) {
                adopted = Some(u);
            } else {
                // Another update (a config change, an AMI release) holds the group: let it end.
                report(
                    progress,
                    step,
                    n - 1,
                    total,
                    format!(
                        "nodegroup {n}/{total} {name}: waiting for update {} already in progress",
                        u.id
                    ),
                );
                let _ = wait_for_end(eks, &u.id, subject, opts, None).await?;
                let again = eks.describe_nodegroup(name).await?;
                if again.version.as_deref().and_then(MinorVersion::of_kubernetes) == Some(target) {
                    return Ok(result(NodegroupOutcome::AlreadyAtTarget, None));
                }
            }
        }
    }
    let outcome = if adopted.is_some() {
        NodegroupOutcome::Resumed
    } else {
        NodegroupOutcome::Updated
    };
    // EKS replaces the group's nodes in batches of maxUnavailable.
    let batches = u32::try_from(ng.desired_size.unwrap_or(1).max(1))
        .unwrap_or(1)
        .div_ceil(ng.max_unavailable_nodes().max(1));
    let issued = Issued::now("nodegroup-batch", batches);
    let (update, issued) = match adopted {
        Some(u) => (u, None),
        None => match eks
            .update_nodegroup_version(name, Some(&target.to_string()), opts.force)
            .await
        {
            Ok(u) => (u, Some(issued)),
            Err(e) if is_in_use(&e) => match find_in_progress(eks, subject, to_target).await? {
                Some(u) => (u, None),
                None => {
                    return Err(UpgradeError::Busy {
                        subject: format!("nodegroup {name}"),
                        message: e.to_string(),
                    })
                }
            },
            Err(e) => return Err(e.into()),
        },
    };
    report(
        progress,
        step,
        n - 1,
        total,
        format!(
            "nodegroup {n}/{total} {name}: updating {} → {target} ({}, {} nodes at a time{}; update {})",
            ng.version.as_deref().unwrap_or("?"),
            ng.update_config_text(),
            ng.max_unavailable_nodes(),
            if opts.force { ", force" } else { "" },
            update.id
        ),
    );
    let end = wait_for_end(eks, &update.id, subject, opts, issued.as_ref()).await?;
    if end.status != UpdateStatus::Successful {
        if let Some(e) = end.error_details.iter().find(|e| e.code == "PodEvictionFailure") {
            return Err(UpgradeError::PodEvictionFailure {
                nodegroup: name.to_string(),
                update_id: end.id.clone(),
                message: e.message.clone(),
                resource_ids: e.resource_ids.clone(),
            });
        }
        return Err(UpgradeError::NodegroupUpdateFailed {
            nodegroup: name.to_string(),
            update_id: end.id,
            status: end.status.to_string(),
            errors: end.error_details,
        });
    }
    Ok(result(outcome, Some(end.id)))
}
