//! `UpgradeAddons`: every EKS managed add-on (vpc-cni, coredns, kube-proxy, …) to the default
//! version DescribeAddonVersions gives for the new minor (UpdateAddon, polled, then `ACTIVE`); a
//! version already compatible and not older than the default is kept. Self-managed `coredns` and
//! `kube-proxy` (in the agent's inventory, not EKS add-ons) lagging the new minor's default are
//! reported, not changed.

use std::cmp::Ordering;

use serde::Serialize;
use tracing::Instrument;

use super::version::{compare_addon_versions, image_tag};
use super::{
    find_in_progress, is_in_use, report, wait_for_end, AgentInventory, Issued, MinorVersion, Progress,
    RunMode, StepReport, UpgradeError, UpgradeOptions,
};
use crate::eks::{wait_addon, Addon, AddonStatus, Eks, EksError, UpdateStatus, UpdateSubject};
use crate::plan::Step;

/// Add-ons whose self-managed deployments lagging the new minor are reported.
const SELF_MANAGED_CHECKED: [&str; 2] = ["coredns", "kube-proxy"];

/// What happened to one managed add-on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AddonOutcome {
    /// Updated by this attempt.
    Updated,
    /// An update was already in progress; it was waited on.
    Resumed,
    /// Its version already runs on the new minor and is not older than the default: kept.
    AlreadyCurrent,
    /// EKS lists no version of it for the new minor: left as it is.
    NoVersionForTarget,
}

/// One managed add-on's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonResult {
    /// The add-on.
    pub name: String,
    /// Its version before.
    pub from: String,
    /// Its version now.
    pub to: String,
    /// The update waited on.
    pub update_id: Option<String>,
    /// What happened.
    pub outcome: AddonOutcome,
}

/// A self-managed add-on whose version is older than the new minor's EKS default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaggingAddon {
    /// `coredns` or `kube-proxy`.
    pub addon: String,
    /// Its image.
    pub image: String,
    /// Its version (the image tag).
    pub version: String,
    /// The EKS default for the new minor.
    pub expected: String,
}

/// The self-managed add-on check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SelfManagedAddons {
    /// Checked against the agent's inventory.
    Checked {
        /// Lagging the new minor.
        lagging: Vec<LaggingAddon>,
        /// Self-managed and up to date.
        current: Vec<String>,
    },
    /// Not checked, and why.
    NotChecked {
        /// Why.
        reason: String,
    },
}

/// What `UpgradeAddons` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonsUpgrade {
    /// The target minor.
    pub target: MinorVersion,
    /// Every managed add-on, in name order.
    pub addons: Vec<AddonResult>,
    /// Self-managed coredns / kube-proxy.
    pub self_managed: SelfManagedAddons,
}

impl StepReport for AddonsUpgrade {
    fn summary(&self) -> String {
        let updated = self
            .addons
            .iter()
            .filter(|a| matches!(a.outcome, AddonOutcome::Updated | AddonOutcome::Resumed))
            .count();
        let mut s = format!(
            "{updated} of {} managed add-ons updated for {}",
            self.addons.len(),
            self.target
        );
        match &self.self_managed {
            SelfManagedAddons::Checked { lagging, .. } if !lagging.is_empty() => {
                let names: Vec<String> = lagging
                    .iter()
                    .map(|l| format!("{} {} (EKS default {})", l.addon, l.version, l.expected))
                    .collect();
                s.push_str(&format!("; self-managed lagging: {}", names.join(", ")));
            }
            SelfManagedAddons::NotChecked { reason } => {
                s.push_str(&format!("; self-managed add-ons not checked: {reason}"));
            }
            SelfManagedAddons::Checked { .. } => {}
        }
        s
    }
}

/// Moves every managed add-on to the default version for `target` (the control plane must be
/// there already) and checks the self-managed ones in `inventory`.
pub async fn upgrade_addons<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    inventory: Option<&AgentInventory>,
    mode: RunMode,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<AddonsUpgrade, UpgradeError> {
    let span = tracing::info_span!("upgrade_step", cluster = %eks.cluster_name(), step = %Step::UpgradeAddons, %target);
    run(eks, target, inventory, mode, opts, progress)
        .instrument(span)
        .await
}

async fn run<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    inventory: Option<&AgentInventory>,
    mode: RunMode,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<AddonsUpgrade, UpgradeError> {
    let step = Step::UpgradeAddons;
    let cluster = eks.describe_cluster().await?;
    if MinorVersion::of_kubernetes(&cluster.version) != Some(target) {
        return Err(UpgradeError::VersionSkew {
            subject: format!("control plane of {}", eks.cluster_name()),
            found: cluster.version,
            expected: format!(
                "add-ons follow the control plane: UpgradeControlPlane to {target} must succeed first"
            ),
        });
    }
    let mut names = eks.list_addons().await?;
    names.sort();
    let total = names.len();
    let mut addons = Vec::with_capacity(total);
    for (i, name) in names.iter().enumerate() {
        let n = i + 1;
        let r = one(eks, name, target, mode, opts, progress, n, total)
            .instrument(tracing::info_span!("addon", addon = %name))
            .await?;
        report(
            progress,
            step,
            n,
            total,
            format!("add-on {n}/{total} {name}: {} ({:?})", r.to, r.outcome),
        );
        addons.push(r);
    }
    let self_managed = self_managed(eks, target, &names, inventory).await?;
    Ok(AddonsUpgrade {
        target,
        addons,
        self_managed,
    })
}

/// The version `addon` at `current` should move to on `target`, or `None` to keep it.
async fn wanted<E: Eks + ?Sized>(
    eks: &E,
    addon: &Addon,
    target: MinorVersion,
) -> Result<Option<String>, UpgradeError> {
    let v = eks
        .describe_addon_versions(&addon.name, &target.to_string())
        .await?;
    let Some(default) = v.default_version.clone().or_else(|| v.versions.first().cloned()) else {
        return Ok(None);
    };
    let compatible = v.versions.contains(&addon.version);
    let not_older = matches!(
        compare_addon_versions(&addon.version, &default),
        Some(Ordering::Equal | Ordering::Greater)
    ) || addon.version == default;
    if compatible && not_older {
        Ok(Some(addon.version.clone()))
    } else {
        Ok(Some(default))
    }
}

#[allow(clippy::too_many_arguments)]
async fn one<E: Eks + ?Sized>(
    eks: &E,
    name: &str,
    target: MinorVersion,
    mode: RunMode,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
    n: usize,
    total: usize,
) -> Result<AddonResult, UpgradeError> {
    let step = Step::UpgradeAddons;
    let subject = UpdateSubject::Addon(name);
    let mut addon = eks.describe_addon(name).await?;
    let from = addon.version.clone();
    let mut resumed_id = None;
    if mode == RunMode::Recheck || addon.status == AddonStatus::Updating {
        if let Some(u) = find_in_progress(eks, subject, |_| true).await? {
            report(
                progress,
                step,
                n - 1,
                total,
                format!(
                    "add-on {n}/{total} {name}: waiting for update {} already in progress",
                    u.id
                ),
            );
            let end = wait_for_end(eks, &u.id, subject, opts, None).await?;
            if end.status != UpdateStatus::Successful {
                tracing::warn!(update_id = %end.id, status = %end.status, "earlier add-on update did not succeed; deciding again");
            }
            resumed_id = Some(end.id);
            addon = wait_settled(eks, name, opts).await?;
        }
    }
    let Some(want) = wanted(eks, &addon, target).await? else {
        return Ok(AddonResult {
            name: name.to_string(),
            from,
            to: addon.version,
            update_id: None,
            outcome: AddonOutcome::NoVersionForTarget,
        });
    };
    if want == addon.version {
        let outcome = if resumed_id.is_some() && addon.version != from {
            AddonOutcome::Resumed
        } else {
            AddonOutcome::AlreadyCurrent
        };
        if addon.status != AddonStatus::Active {
            addon = wait_settled(eks, name, opts).await?;
        }
        return Ok(AddonResult {
            name: name.to_string(),
            from,
            to: addon.version,
            update_id: resumed_id.filter(|_| outcome == AddonOutcome::Resumed),
            outcome,
        });
    }
    let issued = Issued::now(format!("addon {name}"), 1);
    let update = match eks.update_addon(name, &want).await {
        Ok(u) => u,
        Err(e) if is_in_use(&e) => {
            return Err(UpgradeError::Busy {
                subject: format!("add-on {name}"),
                message: e.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    report(
        progress,
        step,
        n - 1,
        total,
        format!(
            "add-on {n}/{total} {name}: updating {} → {want} (update {})",
            addon.version, update.id
        ),
    );
    let end = wait_for_end(eks, &update.id, subject, opts, Some(&issued)).await?;
    if end.status != UpdateStatus::Successful {
        return Err(UpgradeError::AddonUpdateFailed {
            addon: name.to_string(),
            update_id: end.id,
            version: want,
            status: end.status.to_string(),
            errors: end.error_details,
        });
    }
    let after = wait_settled(eks, name, opts).await?;
    Ok(AddonResult {
        name: name.to_string(),
        from,
        to: after.version,
        update_id: Some(end.id),
        outcome: AddonOutcome::Updated,
    })
}

/// Waits for the add-on to be `ACTIVE`.
async fn wait_settled<E: Eks + ?Sized>(
    eks: &E,
    name: &str,
    opts: &UpgradeOptions,
) -> Result<Addon, UpgradeError> {
    match wait_addon(eks, name, AddonStatus::Active, &opts.wait).await {
        Ok(a) => Ok(a),
        Err(EksError::Failed { status, detail, .. }) => Err(UpgradeError::AddonNotActive {
            addon: name.to_string(),
            detail: format!("{status}: {detail}"),
        }),
        Err(EksError::Timeout { last, .. }) => Err(UpgradeError::AddonNotActive {
            addon: name.to_string(),
            detail: format!("still {last}"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Self-managed coredns / kube-proxy from the agent's inventory against the EKS default for
/// `target`.
async fn self_managed<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    managed: &[String],
    inventory: Option<&AgentInventory>,
) -> Result<SelfManagedAddons, UpgradeError> {
    let Some(inventory) = inventory else {
        return Ok(SelfManagedAddons::NotChecked {
            reason: "no agent inventory was given".into(),
        });
    };
    let Some(workloads) = &inventory.addon_workloads else {
        return Ok(SelfManagedAddons::NotChecked {
            reason: "the agent's inventory does not report kube-system add-on images".into(),
        });
    };
    let mut lagging = Vec::new();
    let mut current = Vec::new();
    for w in workloads {
        if !SELF_MANAGED_CHECKED.contains(&w.addon.as_str()) || managed.contains(&w.addon) {
            continue;
        }
        let Some(version) = image_tag(&w.image) else {
            lagging.push(LaggingAddon {
                addon: w.addon.clone(),
                image: w.image.clone(),
                version: "untagged".into(),
                expected: "a tagged image".into(),
            });
            continue;
        };
        let versions = eks.describe_addon_versions(&w.addon, &target.to_string()).await?;
        let Some(expected) = versions.default_version else {
            continue;
        };
        let behind = matches!(compare_addon_versions(version, &expected), Some(Ordering::Less));
        if behind {
            lagging.push(LaggingAddon {
                addon: w.addon.clone(),
                image: w.image.clone(),
                version: version.to_string(),
                expected,
            });
        } else {
            current.push(w.addon.clone());
        }
    }
    if !lagging.is_empty() {
        tracing::warn!(lagging = ?lagging.iter().map(|l| &l.addon).collect::<Vec<_>>(), "self-managed add-ons lag the new minor");
    }
    Ok(SelfManagedAddons::Checked { lagging, current })
}
