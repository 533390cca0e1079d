//! `UpgradeControlPlane`: UpdateClusterVersion to the target minor, polled with DescribeUpdate to
//! `Successful` or `Failed`. Idempotent: a control plane already at the target is done; an update
//! to the target already in progress (after a restart, or a retry) is adopted and waited on.

use serde::Serialize;
use tracing::Instrument;

use super::{
    find_in_progress, is_in_use, report, wait_for_end, Issued, MinorVersion, Progress, RunMode, StepReport,
    UpgradeError, UpgradeOptions,
};
use crate::eks::{Eks, UpdateStatus, UpdateSubject};
use crate::plan::Step;

/// What `UpgradeControlPlane` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneUpgrade {
    /// The version before (as EKS reported it when the step started).
    pub from: MinorVersion,
    /// The version now.
    pub to: MinorVersion,
    /// The update waited on (`None` when the control plane was already at the target).
    pub update_id: Option<String>,
    /// The update was already in progress and was adopted, not issued by this attempt.
    pub resumed: bool,
}

impl StepReport for ControlPlaneUpgrade {
    fn summary(&self) -> String {
        match (&self.update_id, self.resumed) {
            (None, _) => format!("control plane already at {}", self.to),
            (Some(id), false) => format!("control plane {} → {} (update {id})", self.from, self.to),
            (Some(id), true) => format!(
                "control plane {} → {} (update {id}, in progress before this attempt)",
                self.from, self.to
            ),
        }
    }
}

/// Upgrades the control plane to `target` (exactly one minor above it) and waits for the
/// update's end. In [`RunMode::Recheck`], or when the cluster is `UPDATING`, an update to
/// `target` already in progress is waited on instead of issuing another.
pub async fn upgrade_control_plane<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    mode: RunMode,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<ControlPlaneUpgrade, UpgradeError> {
    let span = tracing::info_span!("upgrade_step", cluster = %eks.cluster_name(), step = %Step::UpgradeControlPlane, %target, ?mode);
    run(eks, target, mode, opts, progress).instrument(span).await
}

async fn run<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    mode: RunMode,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<ControlPlaneUpgrade, UpgradeError> {
    let step = Step::UpgradeControlPlane;
    let cluster = eks.describe_cluster().await?;
    let current = MinorVersion::of_kubernetes(&cluster.version).ok_or_else(|| UpgradeError::VersionSkew {
        subject: format!("control plane of {}", eks.cluster_name()),
        found: format!("{:?}", cluster.version),
        expected: "EKS reported no readable Kubernetes version".into(),
    })?;
    let updating = cluster.status == "UPDATING";
    if current == target && !updating {
        report(progress, step, 1, 1, format!("control plane already at {target}"));
        return Ok(ControlPlaneUpgrade {
            from: current,
            to: target,
            update_id: None,
            resumed: false,
        });
    }
    if current != target && current.next() != target {
        return Err(UpgradeError::VersionSkew {
            subject: format!("control plane of {}", eks.cluster_name()),
            found: current.to_string(),
            expected: format!(
                "an upgrade to {target} needs it at {} (EKS moves one minor at a time)",
                target.prev().map_or_else(|| "?".into(), |p| p.to_string())
            ),
        });
    }
    let to_target = |u: &crate::eks::Update| {
        u.kind.as_deref().is_none_or(|k| k == "VersionUpdate")
            && u.param("Version")
                .is_none_or(|v| MinorVersion::of_kubernetes(v) == Some(target))
    };
    let mut adopted = None;
    if mode == RunMode::Recheck || updating {
        adopted = find_in_progress(eks, UpdateSubject::Cluster, to_target).await?;
    }
    let resumed = adopted.is_some();
    let issued = Issued::now("control-plane", 1);
    let (update, issued) = match adopted {
        Some(u) => {
            tracing::info!(update_id = %u.id, "adopting the control-plane update already in progress");
            (u, None)
        }
        None if current == target => {
            // At the target, but another kind of update is running: let it end, then done.
            return Err(UpgradeError::Busy {
                subject: format!("control plane of {}", eks.cluster_name()),
                message: format!(
                    "it is {} with an update that is not a version update",
                    cluster.status
                ),
            });
        }
        None => match eks.update_cluster_version(&target.to_string()).await {
            Ok(u) => (u, Some(issued)),
            Err(e) if is_in_use(&e) => {
                match find_in_progress(eks, UpdateSubject::Cluster, to_target).await? {
                    Some(u) => (u, None),
                    None => {
                        return Err(UpgradeError::Busy {
                            subject: format!("control plane of {}", eks.cluster_name()),
                            message: e.to_string(),
                        })
                    }
                }
            }
            Err(e) => return Err(e.into()),
        },
    };
    report(
        progress,
        step,
        0,
        1,
        format!(
            "control plane {current} → {target}: update {} in progress",
            update.id
        ),
    );
    let end = wait_for_end(eks, &update.id, UpdateSubject::Cluster, opts, issued.as_ref()).await?;
    if end.status != UpdateStatus::Successful {
        return Err(UpgradeError::ControlPlaneUpdateFailed {
            update_id: end.id,
            target,
            status: end.status.to_string(),
            errors: end.error_details,
        });
    }
    let after = eks.describe_cluster().await?;
    let now = MinorVersion::of_kubernetes(&after.version);
    if now != Some(target) {
        return Err(UpgradeError::VersionSkew {
            subject: format!("control plane of {}", eks.cluster_name()),
            found: after.version,
            expected: format!(
                "update {} ended Successful but the control plane is not at {target}",
                end.id
            ),
        });
    }
    report(progress, step, 1, 1, format!("control plane at {target}"));
    Ok(ControlPlaneUpgrade {
        from: if resumed && current == target {
            target.prev().unwrap_or(current)
        } else {
            current
        },
        to: target,
        update_id: Some(end.id),
        resumed,
    })
}
