//! Output of the CLI: serde views of the Fleet messages (camelCase fields, names instead of enum
//! numbers, RFC 3339 times) printed as JSON or YAML, and aligned tables with human durations and
//! ages for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use flotilla_proto::fleet::v1 as pb;
use jiff::Timestamp;
use serde::Serialize;

/// How results are printed (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON (watches: one object per line).
    Json,
    /// YAML (watches: one document per event).
    Yaml,
}

/// Prints `view` as JSON or YAML, or as the table `table` draws.
pub fn render<T: Serialize>(format: Format, view: &T, table: impl FnOnce() -> String) -> String {
    match format {
        Format::Table => table(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(view).expect("views serialize");
            s.push('\n');
            s
        }
        Format::Yaml => serde_yaml::to_string(view).expect("views serialize"),
    }
}

// === Names ===

/// The name of an operation state, e.g. `RollingBack`.
pub fn operation_state(state: i32) -> &'static str {
    use pb::OperationState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Unspecified => "Unknown",
        S::Pending => "Pending",
        S::Running => "Running",
        S::RollingBack => "RollingBack",
        S::Succeeded => "Succeeded",
        S::Failed => "Failed",
        S::RolledBack => "RolledBack",
        S::Cancelled => "Cancelled",
    }
}

/// Whether an operation in `state` has ended.
pub fn operation_ended(state: i32) -> bool {
    use pb::OperationState as S;
    matches!(
        S::try_from(state),
        Ok(S::Succeeded | S::Failed | S::RolledBack | S::Cancelled)
    )
}

/// The name of a rollout, stage or cluster state, e.g. `WaitingForApproval`.
pub fn rollout_state(state: i32) -> &'static str {
    use pb::RolloutState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Unspecified => "Unknown",
        S::Pending => "Pending",
        S::Running => "Running",
        S::WaitingForApproval => "WaitingForApproval",
        S::Soaking => "Soaking",
        S::Succeeded => "Succeeded",
        S::Failed => "Failed",
        S::Skipped => "Skipped",
        S::Paused => "Paused",
        S::Cancelled => "Cancelled",
    }
}

/// Whether a rollout in `state` has ended.
pub fn rollout_ended(state: i32) -> bool {
    use pb::RolloutState as S;
    matches!(S::try_from(state), Ok(S::Succeeded | S::Failed | S::Cancelled))
}

/// The name of a step state.
pub fn step_state(state: i32) -> &'static str {
    use pb::StepState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Unspecified => "Unknown",
        S::Pending => "Pending",
        S::Running => "Running",
        S::Succeeded => "Succeeded",
        S::Failed => "Failed",
        S::Skipped => "Skipped",
        S::Cancelled => "Cancelled",
    }
}

/// The name of an operation step, e.g. `CreateManagedNodegroup`; empty when unspecified.
pub fn step_kind(kind: i32) -> &'static str {
    use pb::OperationStepKind as K;
    match K::try_from(kind).unwrap_or(K::Unspecified) {
        K::Unspecified => "",
        K::Inventory => "Inventory",
        K::CreateManagedNodegroup => "CreateManagedNodegroup",
        K::WaitNodesReady => "WaitNodesReady",
        K::Taint => "Taint",
        K::SurgeScale => "SurgeScale",
        K::VerifyReady => "VerifyReady",
        K::Drain => "Drain",
        K::RemoveSelfManagedNodegroup => "RemoveSelfManagedNodegroup",
        K::RestoreScale => "RestoreScale",
        K::Rollback => "Rollback",
        K::DeleteManagedNodegroup => "DeleteManagedNodegroup",
        K::Preflight => "Preflight",
        K::UpgradeControlPlane => "UpgradeControlPlane",
        K::UpgradeNodegroups => "UpgradeNodegroups",
        K::UpgradeAddons => "UpgradeAddons",
        K::Postflight => "Postflight",
    }
}

fn group_kind(kind: i32) -> &'static str {
    match pb::NodeGroupKind::try_from(kind) {
        Ok(pb::NodeGroupKind::SelfManaged) => "self-managed",
        Ok(pb::NodeGroupKind::Managed) => "managed",
        _ => "unknown",
    }
}

fn work_kind(work: Option<&pb::Work>) -> &'static str {
    match work.and_then(|w| w.kind.as_ref()) {
        Some(pb::work::Kind::Migration(_)) => "migration",
        Some(pb::work::Kind::Upgrade(_)) => "upgrade",
        None => "unknown",
    }
}

// === Times ===

fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<Timestamp> {
    let ts = ts?;
    Timestamp::new(ts.seconds, ts.nanos).ok()
}

fn rfc3339(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    timestamp(ts).map(|t| t.to_string())
}

fn seconds(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// A duration for people: `45s`, `3m12s`, `1h05m`, `2d03h`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// How long ago `ts` was, for people (`-` if unset).
pub fn age(ts: Option<&prost_types::Timestamp>, now: Timestamp) -> String {
    match timestamp(ts) {
        Some(t) => human_duration(now.duration_since(t).as_secs_f64()),
        None => "-".to_owned(),
    }
}

/// The time between two timestamps (the second defaulting to `now`), for people.
fn span(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
    now: Timestamp,
) -> Option<f64> {
    let from = timestamp(from)?;
    let to = timestamp(to).unwrap_or(now);
    Some(to.duration_since(from).as_secs_f64().max(0.0))
}

// === Tables ===

/// Columns aligned on the widest cell; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, one line per row.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

// === Cluster views ===

/// A cluster as printed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// The cluster's id.
    pub id: String,
    /// The EKS cluster name.
    pub eks_name: String,
    /// The AWS region.
    pub region: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Whether its agent is connected.
    pub connected: bool,
    /// The agent's version.
    pub agent_version: String,
    /// When the agent was last heard from (RFC 3339).
    pub last_seen: Option<String>,
    /// The API server's version from the last inventory.
    pub version: String,
    /// Node groups.
    pub node_groups: Vec<NodeGroupView>,
    /// The operation running on it.
    pub current_operation: Option<String>,
    /// Nodes (from the last inventory).
    pub nodes: Vec<NodeView>,
    /// Deployments (from the last inventory).
    pub deployments: Vec<DeploymentView>,
    /// PodDisruptionBudgets that allow no disruption now.
    pub blocking_pdbs: Vec<PdbView>,
}

/// One node group.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupView {
    /// Its name.
    pub name: String,
    /// `managed` or `self-managed`.
    pub kind: &'static str,
    /// Nodes.
    pub nodes: u32,
    /// Nodes Ready.
    pub ready: u32,
    /// Kubelet versions.
    pub kubelet_versions: Vec<String>,
}

/// One node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Its group.
    pub group: Option<String>,
    /// Kubelet version.
    pub kubelet_version: String,
    /// Ready.
    pub ready: bool,
    /// Ready, not cordoned, not tainted.
    pub schedulable: bool,
}

/// One Deployment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    /// `namespace/name`.
    pub name: String,
    /// Replicas wanted.
    pub replicas: i32,
    /// Replicas available.
    pub available: i32,
    /// Its HPA.
    pub hpa: Option<String>,
}

/// One PodDisruptionBudget.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PdbView {
    /// `namespace/name`.
    pub name: String,
    /// Pods covered.
    pub expected: i32,
    /// Healthy pods.
    pub healthy: i32,
    /// Healthy pods required.
    pub desired: i32,
}

impl From<&pb::Cluster> for ClusterView {
    fn from(c: &pb::Cluster) -> Self {
        let inv = c.inventory.clone().unwrap_or_default();
        ClusterView {
            id: c.id.clone(),
            eks_name: c.eks_name.clone(),
            region: c.region.clone(),
            labels: c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            connected: c.connected,
            agent_version: c.agent_version.clone(),
            last_seen: rfc3339(c.last_seen.as_ref()),
            version: inv.version,
            node_groups: inv
                .node_groups
                .iter()
                .map(|g| NodeGroupView {
                    name: g.name.clone(),
                    kind: group_kind(g.kind),
                    nodes: g.node_count,
                    ready: g.ready_count,
                    kubelet_versions: g.kubelet_versions.clone(),
                })
                .collect(),
            current_operation: c.current_operation_id.clone(),
            nodes: inv
                .nodes
                .iter()
                .map(|n| NodeView {
                    name: n.name.clone(),
                    group: n.group.clone(),
                    kubelet_version: n.kubelet_version.clone(),
                    ready: n.ready,
                    schedulable: n.schedulable,
                })
                .collect(),
            deployments: inv
                .deployments
                .iter()
                .map(|d| DeploymentView {
                    name: d.name.clone(),
                    replicas: d.replicas,
                    available: d.available,
                    hpa: d.hpa.clone(),
                })
                .collect(),
            blocking_pdbs: inv
                .blocking_pdbs
                .iter()
                .map(|p| PdbView {
                    name: p.name.clone(),
                    expected: p.expected,
                    healthy: p.healthy,
                    desired: p.desired,
                })
                .collect(),
        }
    }
}

/// `clusters list` as JSON/YAML.
#[derive(Debug, Serialize)]
pub struct ClusterList {
    /// The clusters.
    pub clusters: Vec<ClusterView>,
}

fn groups_text(groups: &[NodeGroupView]) -> String {
    if groups.is_empty() {
        return "-".to_owned();
    }
    groups
        .iter()
        .map(|g| {
            let kind = if g.kind == "managed" { "managed" } else { "self" };
            format!("{}({kind},{})", g.name, g.nodes)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `clusters list` table.
pub fn clusters_table(clusters: &[pb::Cluster], now: Timestamp) -> String {
    let mut t = Table::new(&[
        "NAME",
        "REGION",
        "VERSION",
        "AGENT",
        "LAST SEEN",
        "NODE GROUPS",
        "OPERATION",
        "LABELS",
    ]);
    for c in clusters {
        let v = ClusterView::from(c);
        t.row(vec![
            v.id.clone(),
            or_dash(&v.region),
            or_dash(&v.version),
            if v.connected { "connected" } else { "disconnected" }.to_owned(),
            match c.last_seen {
                Some(_) => format!("{} ago", age(c.last_seen.as_ref(), now)),
                None => "never".to_owned(),
            },
            groups_text(&v.node_groups),
            v.current_operation.clone().unwrap_or_else(|| "-".to_owned()),
            labels_text(&v.labels),
        ]);
    }
    if clusters.is_empty() {
        return "No clusters.\n".to_owned();
    }
    t.render()
}

/// The `clusters get` text.
pub fn cluster_detail(c: &pb::Cluster, now: Timestamp) -> String {
    let v = ClusterView::from(c);
    let mut out = String::new();
    let last_seen = match c.last_seen.as_ref() {
        Some(_) => format!(
            "{} ago ({})",
            age(c.last_seen.as_ref(), now),
            v.last_seen.clone().unwrap_or_default()
        ),
        None => "never".to_owned(),
    };
    let _ = writeln!(out, "Name:           {}", v.id);
    let _ = writeln!(
        out,
        "EKS cluster:    {} ({})",
        or_dash(&v.eks_name),
        or_dash(&v.region)
    );
    let _ = writeln!(out, "Version:        {}", or_dash(&v.version));
    let _ = writeln!(
        out,
        "Agent:          {}{}",
        if v.connected { "connected" } else { "disconnected" },
        if v.agent_version.is_empty() {
            String::new()
        } else {
            format!(", version {}", v.agent_version)
        }
    );
    let _ = writeln!(out, "Last seen:      {last_seen}");
    let _ = writeln!(out, "Labels:         {}", labels_text(&v.labels));
    let _ = writeln!(
        out,
        "Operation:      {}",
        v.current_operation.as_deref().unwrap_or("none running")
    );
    let _ = writeln!(
        out,
        "Nodes:          {} ({} Ready)",
        v.nodes.len(),
        v.nodes.iter().filter(|n| n.ready).count()
    );
    let _ = writeln!(
        out,
        "Deployments:    {} ({} fully available)",
        v.deployments.len(),
        v.deployments.iter().filter(|d| d.available >= d.replicas).count()
    );
    out.push_str("\nNode groups:\n");
    if v.node_groups.is_empty() {
        out.push_str("  none reported\n");
    } else {
        let mut t = Table::new(&["NAME", "KIND", "NODES", "READY", "KUBELET"]);
        for g in &v.node_groups {
            t.row(vec![
                g.name.clone(),
                g.kind.to_owned(),
                g.nodes.to_string(),
                g.ready.to_string(),
                or_dash(&g.kubelet_versions.join(",")),
            ]);
        }
        indent(&mut out, &t.render());
    }
    if !v.blocking_pdbs.is_empty() {
        out.push_str("\nPodDisruptionBudgets allowing no disruption (a drain would wait on them):\n");
        let mut t = Table::new(&["PDB", "HEALTHY", "REQUIRED", "PODS"]);
        for p in &v.blocking_pdbs {
            t.row(vec![
                p.name.clone(),
                p.healthy.to_string(),
                p.desired.to_string(),
                p.expected.to_string(),
            ]);
        }
        indent(&mut out, &t.render());
    }
    out
}

fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

// === Work views ===

/// What an operation or rollout does, as printed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkView {
    /// A migration.
    Migration(MigrationView),
    /// An upgrade.
    Upgrade(UpgradeView),
    /// The server sent no work.
    Unknown,
}

/// Migration parameters.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationView {
    /// The group replaced (empty: the only self-managed one).
    pub from_nodegroup: String,
    /// The managed group created.
    pub nodegroup_template: Option<TemplateView>,
    /// `100%` or a count; `None`: the default.
    pub surge: Option<String>,
    /// `fail`, `skip-node` or `force-after=…`; `None`: the default.
    pub on_blocked: Option<String>,
    /// Taint key (empty: the default).
    pub taint_key: String,
    /// Nodes drained at once (0: the default).
    pub drain_concurrency: u32,
    /// Per-node drain timeout, seconds.
    pub node_timeout_seconds: Option<f64>,
    /// Ready timeout, seconds.
    pub ready_timeout_seconds: Option<f64>,
    /// Evict pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// Evict unmanaged pods.
    pub force: bool,
    /// Delete the new group on rollback.
    pub delete_nodegroup_on_rollback: bool,
}

/// A node group template, in EKS field names.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    /// `nodegroupName`.
    pub nodegroup_name: String,
    /// `instanceTypes`.
    pub instance_types: Vec<String>,
    /// `scalingConfig` as (minSize, maxSize, desiredSize).
    pub scaling_config: Option<BTreeMap<&'static str, i32>>,
    /// `subnets`.
    pub subnets: Vec<String>,
    /// `nodeRole`.
    pub node_role: String,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `taints` as `key=value:EFFECT`.
    pub taints: Vec<String>,
    /// `amiType`.
    pub ami_type: String,
    /// `capacityType`.
    pub capacity_type: String,
}

/// Upgrade parameters.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeView {
    /// The target minor.
    pub target_version: String,
    /// Force managed group updates past PDBs.
    pub force: bool,
    /// Migrate self-managed groups first.
    pub migrate_self_managed: bool,
    /// That migration's parameters.
    pub migration: Option<MigrationView>,
}

/// A duration as `force-after=` writes it.
fn duration_text(d: &prost_types::Duration) -> String {
    let s = d.seconds;
    if s % 3600 == 0 && s > 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl From<&pb::MigrationParams> for MigrationView {
    fn from(m: &pb::MigrationParams) -> Self {
        use pb::on_blocked::Policy;
        MigrationView {
            from_nodegroup: m.from_nodegroup.clone(),
            nodegroup_template: m.nodegroup.as_ref().map(|t| TemplateView {
                nodegroup_name: t.nodegroup_name.clone(),
                instance_types: t.instance_types.clone(),
                scaling_config: t.scaling_config.map(|s| {
                    BTreeMap::from([
                        ("minSize", s.min_size),
                        ("maxSize", s.max_size),
                        ("desiredSize", s.desired_size),
                    ])
                }),
                subnets: t.subnets.clone(),
                node_role: t.node_role.clone(),
                labels: t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                taints: t
                    .taints
                    .iter()
                    .map(|t| format!("{}={}:{}", t.key, t.value, t.effect))
                    .collect(),
                ami_type: t.ami_type.clone(),
                capacity_type: t.capacity_type.clone(),
            }),
            surge: m.surge.map(|s| match s {
                pb::migration_params::Surge::SurgePercent(p) => format!("{p}%"),
                pb::migration_params::Surge::SurgeCount(n) => n.to_string(),
            }),
            on_blocked: m
                .on_blocked
                .as_ref()
                .and_then(|o| o.policy.as_ref())
                .map(|p| match p {
                    Policy::Fail(_) => "fail".to_owned(),
                    Policy::SkipNode(_) => "skip-node".to_owned(),
                    Policy::ForceAfter(d) => format!("force-after={}", duration_text(d)),
                }),
            taint_key: m.taint_key.clone(),
            drain_concurrency: m.drain_concurrency,
            node_timeout_seconds: seconds(m.node_timeout.as_ref()),
            ready_timeout_seconds: seconds(m.ready_timeout.as_ref()),
            delete_emptydir_data: m.delete_emptydir_data,
            force: m.force,
            delete_nodegroup_on_rollback: m.delete_nodegroup_on_rollback,
        }
    }
}

impl From<Option<&pb::Work>> for WorkView {
    fn from(w: Option<&pb::Work>) -> Self {
        match w.and_then(|w| w.kind.as_ref()) {
            Some(pb::work::Kind::Migration(m)) => WorkView::Migration(m.into()),
            Some(pb::work::Kind::Upgrade(u)) => WorkView::Upgrade(UpgradeView {
                target_version: u.target_version.clone(),
                force: u.force,
                migrate_self_managed: u.migrate_self_managed,
                migration: u.migration.as_ref().map(Into::into),
            }),
            None => WorkView::Unknown,
        }
    }
}

/// One line saying what the work does.
pub fn work_summary(w: Option<&pb::Work>) -> String {
    match w.and_then(|w| w.kind.as_ref()) {
        Some(pb::work::Kind::Migration(m)) => {
            let to = m.nodegroup.as_ref().map_or("?", |t| t.nodegroup_name.as_str());
            let from = if m.from_nodegroup.is_empty() {
                "the self-managed group"
            } else {
                m.from_nodegroup.as_str()
            };
            format!("migrate {from} -> {to} (managed)")
        }
        Some(pb::work::Kind::Upgrade(u)) => {
            let mut s = format!("upgrade to {}", u.target_version);
            if u.force {
                s.push_str(" (force)");
            }
            if u.migrate_self_managed {
                s.push_str(", migrating self-managed groups first");
            }
            s
        }
        None => "unknown work".to_owned(),
    }
}

// === Steps, progress, errors ===

/// A pod holding a step up.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlockerView {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// `namespace/name` of the PDBs refusing its eviction.
    pub pdbs: Vec<String>,
    /// Why.
    pub reason: String,
    /// For how long, seconds.
    pub blocked_for_seconds: Option<f64>,
}

impl From<&pb::Blocker> for BlockerView {
    fn from(b: &pb::Blocker) -> Self {
        let (namespace, pod) = match b.pod.split_once('/') {
            Some((ns, pod)) => (ns.to_owned(), pod.to_owned()),
            None => (String::new(), b.pod.clone()),
        };
        BlockerView {
            namespace,
            pod,
            node: b.node.clone(),
            pdbs: b.pdbs.clone(),
            reason: b.reason.clone(),
            blocked_for_seconds: seconds(b.blocked_for.as_ref()),
        }
    }
}

/// One line per blocker: `pod web-1 in shop on node-a: blocked by PodDisruptionBudget (PDB shop/web) for 2m00s`.
pub fn blocker_line(b: &BlockerView) -> String {
    let mut s = format!("pod {} in namespace {}", b.pod, or_dash(&b.namespace));
    if !b.node.is_empty() {
        let _ = write!(s, " on {}", b.node);
    }
    let _ = write!(s, ": {}", or_dash(&b.reason));
    if !b.pdbs.is_empty() {
        let _ = write!(s, " (PDB {})", b.pdbs.join(", "));
    }
    if let Some(secs) = b.blocked_for_seconds {
        let _ = write!(s, " for {}", human_duration(secs));
    }
    s
}

/// The latest progress of a step.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
    /// The agent's message.
    pub message: String,
    /// Pods holding it up.
    pub blockers: Vec<BlockerView>,
}

impl From<&pb::StepProgress> for ProgressView {
    fn from(p: &pb::StepProgress) -> Self {
        ProgressView {
            done: p.done,
            total: p.total,
            message: p.message.clone(),
            blockers: p.blockers.iter().map(Into::into).collect(),
        }
    }
}

/// `12/40 pods evicted` or the message alone.
pub fn progress_text(p: &ProgressView) -> String {
    match (p.total, p.message.is_empty()) {
        (0, _) => p.message.clone(),
        (_, true) => format!("{}/{}", p.done, p.total),
        (_, false) => format!("{}/{} {}", p.done, p.total, p.message),
    }
}

/// Why a step failed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorView {
    /// The stable code, e.g. `DRAIN_BLOCKED`.
    pub code: String,
    /// The message.
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
    /// Pods holding the step up.
    pub blockers: Vec<BlockerView>,
}

impl From<&pb::StepError> for ErrorView {
    fn from(e: &pb::StepError) -> Self {
        ErrorView {
            code: pb::step_error::Code::try_from(e.code)
                .map(|c| c.as_str_name().to_owned())
                .unwrap_or_else(|_| e.code.to_string()),
            message: e.message.clone(),
            retryable: e.retryable,
            blockers: e.blockers.iter().map(Into::into).collect(),
        }
    }
}

/// One line saying what a step did.
pub fn output_summary(o: &pb::StepOutput) -> String {
    use pb::step_output::Output;
    match o.output.as_ref() {
        Some(Output::Inventory(i)) => format!(
            "version {}, {} nodes, {} deployments",
            or_dash(&i.version),
            i.nodes.len(),
            i.deployments.len()
        ),
        Some(Output::WaitNodesReady(w)) => format!("{} nodes ready in {}", w.ready.len(), w.group),
        Some(Output::Taint(t)) => format!("tainted {} nodes ({} changed)", t.nodes.len(), t.changed.len()),
        Some(Output::SurgeScale(s)) => format!("surged {} deployments", s.deployments.len()),
        Some(Output::VerifyReady(v)) => format!("{} deployments ready", v.deployments.len()),
        Some(Output::Drain(d)) => {
            let mut s = format!(
                "drained {} nodes, evicted {} pods, {} refusals retried",
                d.drained.len(),
                d.evicted,
                d.refusals
            );
            if !d.skipped.is_empty() {
                let _ = write!(s, ", skipped {} nodes", d.skipped.len());
            }
            if !d.forced.is_empty() {
                let _ = write!(s, ", force-deleted {} pods", d.forced.len());
            }
            s
        }
        Some(Output::RestoreScale(r)) => {
            let mut s = format!("restored {} deployments", r.deployments.len());
            if !r.kept.is_empty() {
                let _ = write!(s, ", kept {} surged", r.kept.len());
            }
            s
        }
        Some(Output::Rollback(r)) => format!(
            "rolled back {} nodes, restored {} deployments",
            r.nodes.len(),
            r.restored.as_ref().map_or(0, |r| r.deployments.len())
        ),
        Some(Output::Postflight(p)) => format!(
            "version {}, {} nodes and {} deployments checked",
            p.version, p.nodes, p.deployments
        ),
        None => String::new(),
    }
}

/// One step of an operation, as printed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// The step's id.
    pub id: String,
    /// Its kind, e.g. `Drain`.
    pub kind: &'static str,
    /// The upgrade hop it belongs to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hop: String,
    /// Its state.
    pub state: &'static str,
    /// The current or last attempt.
    pub attempt: u32,
    /// When it started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How long it ran (so far), seconds.
    pub seconds: Option<f64>,
    /// Its latest progress.
    pub progress: Option<ProgressView>,
    /// What it did.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<ErrorView>,
    /// A coordinator step's outcome.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl StepView {
    /// The view of `s`; `now` ends a running step's time.
    pub fn new(s: &pb::OperationStep, now: Timestamp) -> Self {
        StepView {
            id: s.step_id.clone(),
            kind: step_kind(s.kind),
            hop: s.hop.clone(),
            state: step_state(s.state),
            attempt: s.attempt,
            started_at: rfc3339(s.started_at.as_ref()),
            finished_at: rfc3339(s.finished_at.as_ref()),
            seconds: span(s.started_at.as_ref(), s.finished_at.as_ref(), now),
            progress: s.progress.as_ref().map(Into::into),
            output: s.output.as_ref().map(output_summary).filter(|o| !o.is_empty()),
            error: s.error.as_ref().map(Into::into),
            detail: s.detail.clone(),
        }
    }

    /// One line of what it did, is doing or why it failed.
    pub fn note(&self) -> String {
        if let Some(e) = &self.error {
            return format!("{}: {}", e.code, e.message);
        }
        if self.state == "Running" {
            if let Some(p) = &self.progress {
                return progress_text(p);
            }
        }
        if let Some(o) = &self.output {
            return o.clone();
        }
        self.detail.clone()
    }
}

// === Operation views ===

/// An operation as printed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationView {
    /// The id.
    pub id: String,
    /// The cluster.
    pub cluster_id: String,
    /// `migration` or `upgrade`.
    pub kind: &'static str,
    /// The parameters.
    pub work: WorkView,
    /// Its state.
    pub state: &'static str,
    /// The rollout that started it.
    pub rollout_id: Option<String>,
    /// Who started it.
    pub created_by: String,
    /// When it was accepted.
    pub created_at: Option<String>,
    /// When its first step started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Its run time (so far), seconds.
    pub seconds: Option<f64>,
    /// For a failed operation: what failed and why.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failure: String,
    /// Its steps, in order.
    pub steps: Vec<StepView>,
}

impl OperationView {
    /// The view of `o`; `now` ends a running operation's time.
    pub fn new(o: &pb::Operation, now: Timestamp) -> Self {
        OperationView {
            id: o.id.clone(),
            cluster_id: o.cluster_id.clone(),
            kind: work_kind(o.work.as_ref()),
            work: o.work.as_ref().into(),
            state: operation_state(o.state),
            rollout_id: o.rollout_id.clone(),
            created_by: o.created_by.clone(),
            created_at: rfc3339(o.created_at.as_ref()),
            started_at: rfc3339(o.started_at.as_ref()),
            finished_at: rfc3339(o.finished_at.as_ref()),
            seconds: span(o.started_at.as_ref(), o.finished_at.as_ref(), now),
            failure: o.failure.clone(),
            steps: o.steps.iter().map(|s| StepView::new(s, now)).collect(),
        }
    }
}

/// `operations list` as JSON/YAML.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationList {
    /// The operations, newest first.
    pub operations: Vec<OperationView>,
    /// The token of the next page, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// The step running now (or the failed one) of an operation.
fn current_step(o: &pb::Operation) -> String {
    let running = o
        .steps
        .iter()
        .find(|s| s.state == pb::StepState::Running as i32)
        .or_else(|| o.steps.iter().find(|s| s.state == pb::StepState::Failed as i32));
    running.map_or("-".to_owned(), |s| step_kind(s.kind).to_owned())
}

/// The `operations list` table.
pub fn operations_table(ops: &[pb::Operation], now: Timestamp) -> String {
    if ops.is_empty() {
        return "No operations.\n".to_owned();
    }
    let mut t = Table::new(&[
        "ID", "CLUSTER", "KIND", "STATE", "STEP", "AGE", "DURATION", "ROLLOUT",
    ]);
    for o in ops {
        t.row(vec![
            o.id.clone(),
            o.cluster_id.clone(),
            work_kind(o.work.as_ref()).to_owned(),
            operation_state(o.state).to_owned(),
            current_step(o),
            age(o.created_at.as_ref(), now),
            span(o.started_at.as_ref(), o.finished_at.as_ref(), now).map_or("-".to_owned(), human_duration),
            o.rollout_id.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    t.render()
}

/// The `operations get` text (also the summary after a watch).
pub fn operation_detail(o: &pb::Operation, now: Timestamp) -> String {
    let v = OperationView::new(o, now);
    let mut out = String::new();
    let _ = writeln!(out, "Operation:   {}", v.id);
    let _ = writeln!(out, "Cluster:     {}", v.cluster_id);
    let _ = writeln!(out, "Work:        {}", work_summary(o.work.as_ref()));
    let _ = writeln!(out, "State:       {}", v.state);
    if let Some(r) = &v.rollout_id {
        let _ = writeln!(out, "Rollout:     {r}");
    }
    let _ = writeln!(
        out,
        "Created:     {} ago by {}",
        age(o.created_at.as_ref(), now),
        or_dash(&v.created_by)
    );
    if let Some(secs) = v.seconds {
        let label = if v.finished_at.is_some() {
            "Took:"
        } else {
            "Running:"
        };
        let _ = writeln!(out, "{label:<13}{}", human_duration(secs));
    }
    if !v.failure.is_empty() {
        let _ = writeln!(out, "Failure:     {}", v.failure);
    }
    if !v.steps.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["STEP", "STATE", "ATTEMPT", "DURATION", "DETAIL"]);
        for s in &v.steps {
            let name = if s.hop.is_empty() {
                s.kind.to_owned()
            } else {
                format!("{} ({})", s.kind, s.hop)
            };
            t.row(vec![
                name,
                s.state.to_owned(),
                if s.attempt == 0 {
                    "-".to_owned()
                } else {
                    s.attempt.to_string()
                },
                s.seconds.map_or("-".to_owned(), human_duration),
                or_dash(&s.note()),
            ]);
        }
        out.push_str(&t.render());
        let blockers: Vec<&BlockerView> = v
            .steps
            .iter()
            .flat_map(|s| {
                let from_error = s.error.iter().flat_map(|e| e.blockers.iter());
                let from_progress = s
                    .progress
                    .iter()
                    .filter(|_| s.state == "Running")
                    .flat_map(|p| p.blockers.iter());
                from_error.chain(from_progress)
            })
            .collect();
        if !blockers.is_empty() {
            out.push_str("\nBlocked by:\n");
            for b in blockers {
                let _ = writeln!(out, "  {}", blocker_line(b));
            }
        }
    }
    out
}

// === Rollout views ===

/// A rollout as printed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// `migration` or `upgrade`.
    pub kind: &'static str,
    /// The parameters.
    pub work: WorkView,
    /// Its state.
    pub state: &'static str,
    /// Why it is paused, failed or cancelled.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Its stages.
    pub stages: Vec<StageView>,
}

/// One stage as printed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageView {
    /// Position, from 0.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Label selector.
    pub selector: String,
    /// Clusters at once.
    pub max_parallel: u32,
    /// Clusters at once as a percentage of the stage's clusters (0: `max_parallel` applies).
    pub max_parallel_percent: u32,
    /// Soak after the stage, seconds.
    pub soak_seconds: Option<f64>,
    /// Failures that halt the rollout.
    pub max_failures: u32,
    /// Whether it waits for approval.
    pub require_approval: bool,
    /// Its state.
    pub state: &'static str,
    /// Failed clusters so far.
    pub failures: u32,
    /// Who approved it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub approved_by: String,
    /// When it began.
    pub started_at: Option<String>,
    /// When its soak ends.
    pub soak_until: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Its clusters.
    pub clusters: Vec<ClusterStateView>,
}

/// One cluster's part in a rollout, as printed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStateView {
    /// The cluster.
    pub cluster_id: String,
    /// Its state.
    pub state: &'static str,
    /// Its operation.
    pub operation_id: Option<String>,
    /// The step running now.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub current_step: &'static str,
    /// That step's progress.
    pub progress: Option<ProgressView>,
    /// The step that failed.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub failed_step: &'static str,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The typed error of a failed agent step.
    pub error: Option<ErrorView>,
    /// When its operation started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
}

impl From<&pb::ClusterState> for ClusterStateView {
    fn from(c: &pb::ClusterState) -> Self {
        ClusterStateView {
            cluster_id: c.cluster_id.clone(),
            state: rollout_state(c.state),
            operation_id: c.operation_id.clone(),
            current_step: step_kind(c.current_step),
            progress: c.progress.as_ref().map(Into::into),
            failed_step: step_kind(c.failed_step),
            reason: c.reason.clone(),
            error: c.error.as_ref().map(Into::into),
            started_at: rfc3339(c.started_at.as_ref()),
            finished_at: rfc3339(c.finished_at.as_ref()),
        }
    }
}

impl From<&pb::Stage> for StageView {
    fn from(s: &pb::Stage) -> Self {
        let spec = s.spec.clone().unwrap_or_default();
        StageView {
            index: s.index,
            name: spec.name,
            selector: spec.selector,
            max_parallel: spec.max_parallel,
            max_parallel_percent: spec.max_parallel_percent,
            soak_seconds: seconds(spec.soak.as_ref()),
            max_failures: spec.max_failures,
            require_approval: spec.require_approval,
            state: rollout_state(s.state),
            failures: s.failures,
            approved_by: s.approved_by.clone(),
            started_at: rfc3339(s.started_at.as_ref()),
            soak_until: rfc3339(s.soak_until.as_ref()),
            finished_at: rfc3339(s.finished_at.as_ref()),
            clusters: s.clusters.iter().map(Into::into).collect(),
        }
    }
}

impl From<&pb::Rollout> for RolloutView {
    fn from(r: &pb::Rollout) -> Self {
        RolloutView {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: work_kind(r.work.as_ref()),
            work: r.work.as_ref().into(),
            state: rollout_state(r.state),
            reason: r.reason.clone(),
            created_by: r.created_by.clone(),
            created_at: rfc3339(r.created_at.as_ref()),
            finished_at: rfc3339(r.finished_at.as_ref()),
            stages: r.stages.iter().map(Into::into).collect(),
        }
    }
}

/// `rollout list` as JSON/YAML.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutList {
    /// The rollouts, newest first.
    pub rollouts: Vec<RolloutView>,
    /// The token of the next page, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

fn cluster_ended(state: i32) -> bool {
    use pb::RolloutState as S;
    matches!(
        S::try_from(state),
        Ok(S::Succeeded | S::Failed | S::Skipped | S::Cancelled)
    )
}

/// `done/total` clusters of a stage (or rollout).
fn clusters_done<'a>(clusters: impl Iterator<Item = &'a pb::ClusterState>) -> (usize, usize) {
    clusters.fold((0, 0), |(done, total), c| {
        (done + usize::from(cluster_ended(c.state)), total + 1)
    })
}

/// The `rollout list` table.
pub fn rollouts_table(rollouts: &[pb::Rollout], now: Timestamp) -> String {
    if rollouts.is_empty() {
        return "No rollouts.\n".to_owned();
    }
    let mut t = Table::new(&["ID", "NAME", "KIND", "STATE", "STAGE", "CLUSTERS", "AGE"]);
    for r in rollouts {
        let (done, total) = clusters_done(r.stages.iter().flat_map(|s| s.clusters.iter()));
        let stage = r
            .stages
            .iter()
            .find(|s| {
                !rollout_ended(s.state)
                    && s.state != pb::RolloutState::Pending as i32
                    && s.state != pb::RolloutState::Skipped as i32
            })
            .or_else(|| {
                r.stages
                    .iter()
                    .find(|s| s.state == pb::RolloutState::Pending as i32)
            });
        t.row(vec![
            r.id.clone(),
            r.name.clone(),
            work_kind(r.work.as_ref()).to_owned(),
            rollout_state(r.state).to_owned(),
            stage.map_or("-".to_owned(), |s| {
                format!(
                    "{}/{} {}",
                    s.index + 1,
                    r.stages.len(),
                    s.spec.as_ref().map_or("", |sp| sp.name.as_str())
                )
            }),
            format!("{done}/{total} done"),
            age(r.created_at.as_ref(), now),
        ]);
    }
    t.render()
}

/// The `rollout get` text (also the summary after a watch).
pub fn rollout_detail(r: &pb::Rollout, now: Timestamp) -> String {
    let v = RolloutView::from(r);
    let mut out = String::new();
    let _ = writeln!(out, "Rollout:   {} ({})", v.id, v.name);
    let _ = writeln!(out, "Work:      {}", work_summary(r.work.as_ref()));
    let _ = writeln!(out, "State:     {}", v.state);
    if !v.reason.is_empty() {
        let _ = writeln!(out, "Reason:    {}", v.reason);
    }
    let _ = writeln!(
        out,
        "Created:   {} ago by {}",
        age(r.created_at.as_ref(), now),
        or_dash(&v.created_by)
    );
    out.push('\n');
    let mut t = Table::new(&[
        "#", "STAGE", "SELECTOR", "STATE", "CLUSTERS", "PARALLEL", "FAILURES", "SOAK", "APPROVAL",
    ]);
    for (s, raw) in v.stages.iter().zip(&r.stages) {
        let (done, total) = clusters_done(raw.clusters.iter());
        let soak = match (s.soak_seconds, raw.soak_until.as_ref()) {
            (Some(secs), Some(until)) if s.state == "Soaking" => {
                let left = timestamp(Some(until)).map_or(0.0, |u| u.duration_since(now).as_secs_f64());
                format!("{} ({} left)", human_duration(secs), human_duration(left))
            }
            (Some(secs), _) => human_duration(secs),
            (None, _) => "-".to_owned(),
        };
        let approval = match (s.require_approval, s.approved_by.as_str()) {
            (false, _) => "-".to_owned(),
            (true, "") => "required".to_owned(),
            (true, by) => format!("approved by {by}"),
        };
        t.row(vec![
            s.index.to_string(),
            s.name.clone(),
            or_dash(&s.selector),
            s.state.to_owned(),
            format!("{done}/{total}"),
            if s.max_parallel_percent > 0 {
                format!("{}%", s.max_parallel_percent)
            } else if s.max_parallel == 0 {
                "1".to_owned()
            } else {
                s.max_parallel.to_string()
            },
            format!(
                "{}/{}",
                s.failures,
                if s.max_failures == 0 { 1 } else { s.max_failures }
            ),
            soak,
            approval,
        ]);
    }
    out.push_str(&t.render());
    let clusters: Vec<(&StageView, &ClusterStateView)> = v
        .stages
        .iter()
        .flat_map(|s| s.clusters.iter().map(move |c| (s, c)))
        .collect();
    if !clusters.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["STAGE", "CLUSTER", "STATE", "STEP", "DETAIL"]);
        let mut blockers = Vec::new();
        for (s, c) in clusters {
            let step = if !c.failed_step.is_empty() {
                c.failed_step
            } else {
                c.current_step
            };
            let detail = if let Some(e) = &c.error {
                format!("{}: {}", e.code, e.message)
            } else if !c.reason.is_empty() {
                c.reason.clone()
            } else if c.state == "Running" {
                c.progress.as_ref().map(progress_text).unwrap_or_default()
            } else {
                String::new()
            };
            t.row(vec![
                s.name.clone(),
                c.cluster_id.clone(),
                c.state.to_owned(),
                or_dash(step),
                or_dash(&detail),
            ]);
            let running = c.state == "Running";
            for b in c.error.iter().flat_map(|e| e.blockers.iter()).chain(
                c.progress
                    .iter()
                    .filter(|_| running)
                    .flat_map(|p| p.blockers.iter()),
            ) {
                blockers.push(format!("{}: {}", c.cluster_id, blocker_line(b)));
            }
        }
        out.push_str(&t.render());
        if !blockers.is_empty() {
            out.push_str("\nBlocked by:\n");
            for b in blockers {
                let _ = writeln!(out, "  {b}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
