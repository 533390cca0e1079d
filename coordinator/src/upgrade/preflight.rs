//! `Preflight`: before anything changes, check the cluster against EKS and the agent's inventory
//! and name every blocker with its reason — control plane and every node group on the same minor,
//! the target exactly one minor above, no self-managed group left (migrate it first), no
//! PodDisruptionBudget that allows zero disruptions (unless `force`), no upgrade insight in
//! `ERROR` for the target (deprecated APIs named), no deprecated API the target removes still
//! called (the agent reads the API server's `apiserver_requested_deprecated_apis`), and room for
//! node replacement. An insights API or metric that is not available is reported as unknown, not
//! as a failure.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use tracing::Instrument;

use super::{
    report, AgentInventory, DeprecatedApiScan, GroupKind, MinorVersion, Progress, StepReport, UpgradeError,
    UpgradeOptions,
};
use crate::eks::{Eks, Insight, InsightStatus, Insights, Nodegroup, NodegroupStatus};
use crate::plan::Step;

/// One finding: a blocker or a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code, e.g. `VERSION_SKEW`, `PDB_ZERO_DISRUPTIONS`, `INSIGHT_ERROR`.
    pub code: &'static str,
    /// What it is about: `nodegroup ng-a`, `pdb shop/cache`, `insight Deprecated APIs …`.
    pub subject: String,
    /// Why, and what to do.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.subject, self.code, self.reason)
    }
}

/// One managed node group as preflight saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodegroupCheck {
    /// The node group.
    pub name: String,
    /// Its version (EKS).
    pub version: Option<String>,
    /// Its status (EKS).
    pub status: String,
    /// Desired size (EKS).
    pub desired: Option<i32>,
    /// Its update configuration, e.g. `maxUnavailable 1`.
    pub update_config: String,
    /// Nodes EKS may take down at once.
    pub max_unavailable_nodes: u32,
    /// Its nodes as the agent sees them: (Ready, all).
    pub agent_nodes: Option<(u32, u32)>,
}

/// What the EKS upgrade insights said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum InsightsCheck {
    /// Listed: the insights that are not `PASSING`.
    Checked {
        /// Insights for the target in `ERROR`, `WARNING` or `UNKNOWN`.
        not_passing: Vec<Insight>,
    },
    /// Not available (region, permissions): readiness for the target is unknown.
    Unknown {
        /// The error EKS gave.
        reason: String,
    },
    /// Not asked: the control plane is already at the target.
    NotNeeded,
}

/// Everything preflight checked. With blockers it is returned inside
/// [`UpgradeError::PreflightBlocked`]; without, as the step's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreflightReport {
    /// The EKS cluster.
    pub cluster: String,
    /// The control plane's version.
    pub control_plane: String,
    /// The target.
    pub target: MinorVersion,
    /// The control plane is already at the target (a hop that an earlier operation began): the
    /// upgrade goes on with node groups and add-ons.
    pub continuing: bool,
    /// Managed node groups.
    pub nodegroups: Vec<NodegroupCheck>,
    /// EKS upgrade insights.
    pub insights: InsightsCheck,
    /// What stops the upgrade.
    pub blockers: Vec<Finding>,
    /// What does not stop it but an operator should know.
    pub warnings: Vec<Finding>,
}

impl PreflightReport {
    /// The blockers, one per `; `.
    pub fn blockers_text(&self) -> String {
        self.blockers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn block(&mut self, code: &'static str, subject: impl Into<String>, reason: impl Into<String>) {
        self.blockers.push(Finding {
            code,
            subject: subject.into(),
            reason: reason.into(),
        });
    }

    fn warn(&mut self, code: &'static str, subject: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(Finding {
            code,
            subject: subject.into(),
            reason: reason.into(),
        });
    }
}

impl StepReport for PreflightReport {
    fn summary(&self) -> String {
        let mut s = format!(
            "preflight for {} → {}: {} node groups, {} blockers, {} warnings",
            self.control_plane,
            self.target,
            self.nodegroups.len(),
            self.blockers.len(),
            self.warnings.len()
        );
        if !self.warnings.is_empty() {
            let w: Vec<String> = self.warnings.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" ({})", w.join("; ")));
        }
        s
    }
}

/// Checks the cluster before an upgrade to `target`. Returns the report when nothing blocks;
/// [`UpgradeError::PreflightBlocked`] with the same report when something does; other errors
/// when EKS could not be read (retryable ones are worth retrying).
pub async fn preflight<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    inventory: &AgentInventory,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<PreflightReport, UpgradeError> {
    let span =
        tracing::info_span!("upgrade_step", cluster = %eks.cluster_name(), step = %Step::Preflight, %target);
    run(eks, target, inventory, opts, progress).instrument(span).await
}

/// Blocks a target (or the goal of the hops) that EKS does not offer in the cluster's region
/// (DescribeClusterVersions): a typo such as 1.40 for 1.34 stops here, before any hop changes
/// anything. When the API cannot be used (an IAM policy without eks:DescribeClusterVersions, a
/// region without it) the check is a warning and UpdateClusterVersion has the last word.
async fn check_offered<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    goal: Option<MinorVersion>,
    r: &mut PreflightReport,
) -> Result<(), UpgradeError> {
    let offered = match eks.describe_cluster_versions().await {
        Ok(v) => v,
        Err(e) if e.is_unavailable_operation() => {
            r.warn(
                "VERSIONS_UNCHECKED",
                "EKS versions",
                format!(
                    "could not list the versions EKS offers ({e}); the target is not checked against them"
                ),
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let have: Vec<MinorVersion> = offered
        .iter()
        .filter_map(|v| MinorVersion::parse(v).ok())
        .collect();
    for (what, v) in [("target", Some(target)), ("rollout target", goal)] {
        let Some(v) = v else { continue };
        if !have.contains(&v) {
            r.block(
                "TARGET_NOT_OFFERED",
                format!("{what} {v}"),
                format!(
                    "EKS offers Kubernetes {} in this region (DescribeClusterVersions), not {v}; pick one of those",
                    if offered.is_empty() { "no version".to_string() } else { offered.join(", ") }
                ),
            );
        }
    }
    Ok(())
}

async fn run<E: Eks + ?Sized>(
    eks: &E,
    target: MinorVersion,
    inventory: &AgentInventory,
    opts: &UpgradeOptions,
    progress: &dyn Progress,
) -> Result<PreflightReport, UpgradeError> {
    let step = Step::Preflight;
    const CHECKS: usize = 4;
    report(progress, step, 0, CHECKS, "control plane".into());
    let cluster = eks.describe_cluster().await?;
    let cp = MinorVersion::of_kubernetes(&cluster.version);
    let mut r = PreflightReport {
        cluster: eks.cluster_name().to_string(),
        control_plane: cluster.version.clone(),
        target,
        continuing: cp == Some(target),
        nodegroups: Vec::new(),
        insights: InsightsCheck::NotNeeded,
        blockers: Vec::new(),
        warnings: Vec::new(),
    };
    let cp_subject = format!("control plane {}", eks.cluster_name());
    // The minors node groups and kubelets may be on: the control plane's; when continuing a hop,
    // the one before it too.
    let allowed: Vec<MinorVersion> = match cp {
        None => {
            r.block(
                "VERSION_UNKNOWN",
                &cp_subject,
                format!(
                    "EKS reports version {:?}, which is not a Kubernetes version",
                    cluster.version
                ),
            );
            Vec::new()
        }
        Some(cp) if cp == target => {
            r.warn(
                "CONTINUING",
                &cp_subject,
                format!("already at {target} (an earlier upgrade operation got this far); node groups and add-ons follow"),
            );
            [target.prev(), Some(target)].into_iter().flatten().collect()
        }
        Some(cp) if cp.next() == target => vec![cp],
        Some(cp) if target < cp => {
            r.block(
                "TARGET_NOT_NEXT_MINOR",
                &cp_subject,
                format!("target {target} is older than the control plane's {cp}; EKS cannot downgrade"),
            );
            vec![cp]
        }
        Some(cp) => {
            r.block(
                "TARGET_NOT_NEXT_MINOR",
                &cp_subject,
                format!(
                    "target {target} is not the next minor after {cp}; EKS upgrades one minor at a time: upgrade to {} first (a rollout chains the hops)",
                    cp.next()
                ),
            );
            vec![cp]
        }
    };
    check_offered(eks, target, opts.goal, &mut r).await?;
    if cluster.status != "ACTIVE" {
        r.block(
            "CONTROL_PLANE_NOT_ACTIVE",
            &cp_subject,
            format!("status is {}; wait for ACTIVE", cluster.status),
        );
    }
    let allowed_text = allowed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" or ");

    // The agent looks at the same cluster.
    if let (Some(cp), Some(api)) = (cp, MinorVersion::of_kubernetes(&inventory.api_server_version)) {
        if cp != api {
            r.block(
                "AGENT_MISMATCH",
                "agent inventory",
                format!(
                    "the agent's API server is {} but EKS says {} is at {cp}: is the agent registered for this cluster?",
                    inventory.api_server_version,
                    eks.cluster_name()
                ),
            );
        }
    }

    // Managed node groups (EKS).
    report(progress, step, 1, CHECKS, "node groups".into());
    let mut names = eks.list_nodegroups().await?;
    names.sort();
    let mut groups = Vec::with_capacity(names.len());
    for name in &names {
        groups.push(eks.describe_nodegroup(name).await?);
    }
    let mut needs_update = false;
    for ng in &groups {
        check_nodegroup(&mut r, ng, &allowed, &allowed_text, target, inventory);
        needs_update |= ng.version.as_deref().and_then(MinorVersion::of_kubernetes) != Some(target);
    }

    // The agent's view: self-managed groups, kubelets, nodes in no group, PDBs.
    report(progress, step, 2, CHECKS, "agent inventory".into());
    check_inventory(
        &mut r,
        inventory,
        &names,
        &allowed,
        &allowed_text,
        target,
        opts,
        needs_update,
    );

    // EKS upgrade insights for the target.
    report(progress, step, 3, CHECKS, "upgrade insights".into());
    if !r.continuing {
        check_insights(eks, &mut r, target).await?;
        check_requested_apis(&mut r, inventory, target);
    }
    report(
        progress,
        step,
        CHECKS,
        CHECKS,
        format!("{} blockers, {} warnings", r.blockers.len(), r.warnings.len()),
    );
    for b in &r.blockers {
        tracing::warn!(code = b.code, subject = %b.subject, reason = %b.reason, "preflight blocker");
    }
    if r.blockers.is_empty() {
        Ok(r)
    } else {
        Err(UpgradeError::PreflightBlocked(Box::new(r)))
    }
}

fn check_nodegroup(
    r: &mut PreflightReport,
    ng: &Nodegroup,
    allowed: &[MinorVersion],
    allowed_text: &str,
    target: MinorVersion,
    inventory: &AgentInventory,
) {
    let subject = format!("nodegroup {}", ng.name);
    let version = ng.version.as_deref().and_then(MinorVersion::of_kubernetes);
    match version {
        Some(v) if allowed.contains(&v) => {}
        Some(v) => r.block(
            "VERSION_SKEW",
            &subject,
            format!(
                "at {v} while the control plane is at {}: every node group must be on the control plane's minor ({allowed_text}) before the next hop; upgrade it first",
                r.control_plane
            ),
        ),
        None => r.block(
            "VERSION_UNKNOWN",
            &subject,
            format!("EKS reports no readable version ({:?})", ng.version),
        ),
    }
    match ng.status {
        NodegroupStatus::Active => {}
        NodegroupStatus::Degraded => r.warn(
            "NODEGROUP_DEGRADED",
            &subject,
            format!("DEGRADED: {}", ng.health_issues.join("; ")),
        ),
        ref s => r.block(
            "NODEGROUP_NOT_ACTIVE",
            &subject,
            format!(
                "status is {s}{}; an update needs it ACTIVE",
                if ng.health_issues.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", ng.health_issues.join("; "))
                }
            ),
        ),
    }
    let agent = inventory
        .node_groups
        .iter()
        .find(|g| g.kind == GroupKind::Managed && g.name == ng.name);
    let max_unavailable = ng.max_unavailable_nodes();
    let desired = u32::try_from(ng.desired_size.unwrap_or(0)).unwrap_or(0);
    if version != Some(target) {
        // Capacity for node replacement: EKS surges new nodes, then cordons and drains up to
        // maxUnavailable old ones at once.
        if desired >= 2 && max_unavailable >= desired {
            r.block(
                "CAPACITY",
                &subject,
                format!(
                    "{} lets EKS drain all {desired} nodes at once, evicting every pod on the group together; set updateConfig.maxUnavailable to at most {} (UpdateNodegroupConfig)",
                    ng.update_config_text(),
                    desired - 1
                ),
            );
        }
        match agent {
            Some(g) if g.ready < g.nodes => r.warn(
                "CAPACITY",
                &subject,
                format!(
                    "{} of {} nodes are not Ready: replacement starts short of capacity",
                    g.nodes - g.ready,
                    g.nodes
                ),
            ),
            None if desired > 0 => r.warn(
                "CAPACITY",
                &subject,
                format!(
                    "EKS wants {desired} nodes but the agent sees none labelled eks.amazonaws.com/nodegroup={}",
                    ng.name
                ),
            ),
            _ => {}
        }
    }
    r.nodegroups.push(NodegroupCheck {
        name: ng.name.clone(),
        version: ng.version.clone(),
        status: ng.status.to_string(),
        desired: ng.desired_size,
        update_config: ng.update_config_text(),
        max_unavailable_nodes: max_unavailable,
        agent_nodes: agent.map(|g| (g.ready, g.nodes)),
    });
}

#[allow(clippy::too_many_arguments)]
fn check_inventory(
    r: &mut PreflightReport,
    inventory: &AgentInventory,
    managed: &[String],
    allowed: &[MinorVersion],
    allowed_text: &str,
    target: MinorVersion,
    opts: &UpgradeOptions,
    needs_update: bool,
) {
    for g in &inventory.node_groups {
        let subject = format!("nodegroup {}", g.name);
        match g.kind {
            GroupKind::SelfManaged => r.block(
                "SELF_MANAGED_NODEGROUP",
                &subject,
                format!(
                    "self-managed ({} nodes, kubelet {}): EKS does not upgrade it; migrate it to a managed node group first (a migration operation)",
                    g.nodes,
                    g.kubelet_versions.join(", ")
                ),
            ),
            GroupKind::Managed if !managed.contains(&g.name) => r.warn(
                "UNKNOWN_NODEGROUP",
                &subject,
                format!(
                    "the agent sees {} nodes labelled as managed group {} but EKS lists no such group",
                    g.nodes, g.name
                ),
            ),
            GroupKind::Managed => {
                let off: Vec<&String> = g
                    .kubelet_versions
                    .iter()
                    .filter(|k| {
                        MinorVersion::of_kubernetes(k).is_none_or(|m| !allowed.contains(&m))
                    })
                    .collect();
                if !off.is_empty() && !allowed.is_empty() {
                    r.block(
                        "VERSION_SKEW",
                        &subject,
                        format!(
                            "kubelets at {} while the control plane is at {}: every node must be on {allowed_text} before the next hop",
                            off.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                            r.control_plane
                        ),
                    );
                }
            }
        }
    }
    // Nodes in no node group (Karpenter, Fargate, hand-joined): not upgraded by this operation.
    let loose: Vec<_> = inventory.nodes.iter().filter(|n| n.group.is_none()).collect();
    if !loose.is_empty() {
        let too_old: Vec<String> = loose
            .iter()
            .filter(|n| {
                MinorVersion::of_kubernetes(&n.kubelet_version)
                    .is_some_and(|k| k.major == target.major && k.minor + 3 < target.minor)
            })
            .map(|n| format!("{} ({})", n.name, n.kubelet_version))
            .collect();
        if !too_old.is_empty() {
            r.block(
                "KUBELET_SKEW",
                "nodes in no node group",
                format!(
                    "kubelets more than 3 minors behind {target} after the upgrade: {}; replace them first",
                    too_old.join(", ")
                ),
            );
        }
        let names: BTreeSet<&str> = loose.iter().map(|n| n.name.as_str()).collect();
        r.warn(
            "UNGROUPED_NODES",
            "nodes in no node group",
            format!(
                "{} nodes ({}) are in no node group (Karpenter, Fargate or unmanaged): this upgrade does not replace them",
                names.len(),
                names.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if needs_update {
        for p in &inventory.blocking_pdbs {
            let subject = format!("pdb {}", p.name);
            let why = format!(
                "allows 0 disruptions ({} healthy, {} required, {} pods)",
                p.healthy, p.desired, p.expected
            );
            if opts.force {
                r.warn(
                    "PDB_ZERO_DISRUPTIONS",
                    &subject,
                    format!("{why}: with force, EKS deletes its pods when eviction keeps failing"),
                );
            } else {
                r.block(
                    "PDB_ZERO_DISRUPTIONS",
                    &subject,
                    format!("{why}: node replacement would fail with PodEvictionFailure; scale the workload up or relax the budget, or upgrade with force"),
                );
            }
        }
    }
}

/// The agent's own check: deprecated APIs clients called that the target no longer serves.
fn check_requested_apis(r: &mut PreflightReport, inventory: &AgentInventory, target: MinorVersion) {
    const SUBJECT: &str = "agent deprecated-API check";
    let apis = match &inventory.deprecated_apis {
        None => {
            r.warn(
                "DEPRECATED_API_CHECK_UNAVAILABLE",
                SUBJECT,
                "the agent did not report the API server's requested deprecated APIs (an older agent); only EKS upgrade insights were checked",
            );
            return;
        }
        Some(DeprecatedApiScan::Unavailable(why)) => {
            r.warn(
                "DEPRECATED_API_CHECK_UNAVAILABLE",
                SUBJECT,
                format!("not made, only EKS upgrade insights were checked: {why}"),
            );
            return;
        }
        Some(DeprecatedApiScan::Checked(apis)) => apis,
    };
    for a in apis {
        let Some(removed) = MinorVersion::of_kubernetes(&a.removed_release) else {
            continue;
        };
        let subject = format!("api {}", a.path());
        let seen = "clients called it since this API server instance started (apiserver_requested_deprecated_apis; the audit log names them)";
        if removed <= target {
            r.block(
                "DEPRECATED_API",
                subject,
                format!("{target} no longer serves it (removed in {removed}) and {seen}: move them to a served version first, or their calls fail after the upgrade"),
            );
        } else {
            r.warn(
                "DEPRECATED_API",
                subject,
                format!("removed in {removed}, after this hop; {seen}"),
            );
        }
    }
}

async fn check_insights<E: Eks + ?Sized>(
    eks: &E,
    r: &mut PreflightReport,
    target: MinorVersion,
) -> Result<(), UpgradeError> {
    let listed = match eks.list_insights(Some(&target.to_string())).await? {
        Insights::Listed(l) => l,
        Insights::Unavailable { reason } => {
            r.warn(
                "INSIGHTS_UNAVAILABLE",
                "EKS upgrade insights",
                format!("not available, readiness for {target} (deprecated APIs, add-on compatibility) unknown: {reason}"),
            );
            r.insights = InsightsCheck::Unknown { reason };
            return Ok(());
        }
    };
    let mut not_passing = Vec::new();
    for i in listed {
        if i.status == InsightStatus::Passing {
            continue;
        }
        let subject = format!("insight {}", i.name);
        let mut reason = format!("{}: {}", i.status, i.reason);
        if i.is_deprecated_apis() || i.status == InsightStatus::Error {
            let d = eks.describe_insight(&i.id).await?;
            if !d.deprecations.is_empty() {
                let apis: Vec<String> = d
                    .deprecations
                    .iter()
                    .map(|a| {
                        let mut s = a.usage.clone();
                        if let Some(w) = &a.replaced_with {
                            s.push_str(&format!(" → {w}"));
                        }
                        if let Some(v) = &a.stop_serving_version {
                            s.push_str(&format!(" (removed in {v})"));
                        }
                        if !a.clients.is_empty() {
                            s.push_str(&format!(" used by {}", a.clients.join(", ")));
                        }
                        s
                    })
                    .collect();
                reason.push_str(&format!("; deprecated APIs in use: {}", apis.join("; ")));
            }
            if !d.resources.is_empty() {
                reason.push_str(&format!("; resources: {}", d.resources.join("; ")));
            }
            if !d.recommendation.is_empty() && i.status == InsightStatus::Error {
                reason.push_str(&format!("; {}", d.recommendation));
            }
        }
        match i.status {
            InsightStatus::Error => r.block(
                if i.is_deprecated_apis() {
                    "DEPRECATED_API"
                } else {
                    "INSIGHT_ERROR"
                },
                &subject,
                reason,
            ),
            _ => r.warn(
                if i.is_deprecated_apis() {
                    "DEPRECATED_API"
                } else {
                    "INSIGHT_WARNING"
                },
                &subject,
                reason,
            ),
        }
        not_passing.push(i);
    }
    r.insights = InsightsCheck::Checked { not_passing };
    Ok(())
}
