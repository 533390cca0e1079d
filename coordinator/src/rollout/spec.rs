//! A validated rollout spec, built from the wire's `CreateRolloutRequest`: the work (a migration
//! with its node group template and drain policy, or an upgrade to a `1.NN` target), the overall
//! selector, the ordered stages and the disconnected-agent timeout. Every refusal names the field
//! as the YAML spec spells it (`stages[1].maxConcurrency`) and says how to fix it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::selector::{validate_key, Selector};
use crate::eks::{EksError, NodegroupTemplate, ScalingConfig, Taint, TaintEffect, UpdateConfig};

/// How long a cluster whose turn has come waits for its disconnected agent, unless the spec says.
pub const DEFAULT_AGENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The taint key put on old nodes during a migration unless the spec names one.
pub const DEFAULT_TAINT_KEY: &str = "flotilla.io/migrating";

/// A refused spec: the field (YAML path) and what is wrong with it, including the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field as the YAML spec names it, e.g. `stages[1].maxConcurrency`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn bad<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError {
        field: field.into(),
        message: message.into(),
    })
}

/// A Kubernetes `major.minor` version (`1.34`); stored and shown as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinorVersion {
    /// The major version (1).
    pub major: u32,
    /// The minor version.
    pub minor: u32,
}

impl MinorVersion {
    /// Parses a target as a rollout spec writes it: exactly `1.NN` (no patch, no `v`).
    pub fn parse_target(text: &str) -> Result<Self, String> {
        let fix = "write the Kubernetes minor version as `1.NN`, e.g. `1.35`";
        let Some((major, minor)) = text.split_once('.') else {
            return Err(format!("{text:?} is not a version; {fix}"));
        };
        let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.chars().all(|c| c.is_ascii_digit());
        if !digits(major) || !digits(minor) || (minor.len() > 1 && minor.starts_with('0')) {
            return Err(format!("{text:?} is not a version; {fix}"));
        }
        if major != "1" {
            return Err(format!("{text:?}: only Kubernetes 1.x exists; {fix}"));
        }
        let minor = minor
            .parse()
            .map_err(|_| format!("{text:?} is not a version; {fix}"))?;
        Ok(Self { major: 1, minor })
    }

    /// Reads a version as clusters report it: `1.33`, `v1.33.4`, `1.33.5-eks-0a1b2c`, `1.33+`.
    pub fn parse_reported(text: &str) -> Option<Self> {
        let t = text.trim().trim_start_matches('v');
        let mut parts = t.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor: String = parts.next()?.chars().take_while(|c| c.is_ascii_digit()).collect();
        Some(Self {
            major,
            minor: minor.parse().ok()?,
        })
    }

    /// The next minor (`1.34` → `1.35`).
    pub fn next(self) -> Self {
        Self {
            major: self.major,
            minor: self.minor.saturating_add(1),
        }
    }
}

impl fmt::Display for MinorVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for MinorVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_reported(s).ok_or_else(|| format!("{s:?} is not a Kubernetes version"))
    }
}

impl Serialize for MinorVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MinorVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated rollout spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// The human name.
    pub name: String,
    /// What each cluster gets.
    pub work: Work,
    /// Clusters must match it as well as their stage's selector; empty: all clusters.
    pub selector: Selector,
    /// The stages, in order (at least one); a cluster belongs to the first that selects it.
    pub stages: Vec<StageSpec>,
    /// How long a cluster whose turn has come waits for its disconnected agent before it fails.
    pub agent_disconnect_timeout: Duration,
    /// The rollout starts paused.
    pub start_paused: bool,
}

/// The kind of work a rollout does on each cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Move workloads off a self-managed node group onto a new managed one.
    Migration(MigrationSpec),
    /// Upgrade Kubernetes to a target minor, one minor per operation.
    Upgrade(UpgradeSpec),
}

/// A migration's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationSpec {
    /// The self-managed group to replace; `None`: the cluster's only self-managed group.
    pub from_nodegroup: Option<String>,
    /// The managed group to create. Empty `subnets` mean "those of the group being replaced"
    /// (filled in per cluster); everything else passed [`NodegroupTemplate::validate`].
    pub nodegroup: NodegroupTemplate,
    /// Taint key put on the old nodes.
    pub taint_key: String,
    /// How much each Deployment is surged.
    pub surge: Surge,
    /// How long to wait for new nodes and surged Deployments; `None`: the step's default.
    pub ready_timeout: Option<Duration>,
    /// Nodes drained at once; `None`: the step's default.
    pub drain_concurrency: Option<u32>,
    /// How long one node may take to drain; `None`: the step's default.
    pub node_timeout: Option<Duration>,
    /// What the drain does with pods a PDB keeps blocking.
    pub on_blocked: OnBlocked,
    /// Evict pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// Evict pods no controller manages.
    pub force: bool,
    /// On a rollback, also delete the new managed group.
    pub delete_nodegroup_on_rollback: bool,
}

/// How much a Deployment is surged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surge {
    /// A share of its replicas (100 doubles it).
    Percent(u32),
    /// Extra pods.
    Count(u32),
}

/// What the drain does with pods a PodDisruptionBudget keeps blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBlocked {
    /// Fail the step (the default).
    Fail,
    /// Delete the pod despite its PDB once blocked this long.
    ForceAfter(Duration),
    /// Leave the node cordoned and go on.
    SkipNode,
}

/// An upgrade's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeSpec {
    /// The target minor.
    pub target: MinorVersion,
    /// Pass `force` to UpdateNodegroupVersion.
    pub force: bool,
    /// Migrate self-managed groups first (with `migration`); otherwise they fail the preflight.
    pub migrate_self_managed: bool,
    /// The migration to run first; set exactly when `migrate_self_managed` is.
    pub migration: Option<MigrationSpec>,
}

/// How one stage runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Unique name within the rollout, e.g. `prod`.
    pub name: String,
    /// Which clusters it covers (those no earlier stage took).
    pub selector: Selector,
    /// How many of its clusters run at once.
    pub max_concurrency: Concurrency,
    /// Wait after its clusters are done before the next stage begins.
    pub soak: Duration,
    /// Failed clusters that halt the rollout (at least 1).
    pub max_failures: u32,
    /// The stage waits for an approval before it begins.
    pub require_approval: bool,
}

/// A stage's concurrency: a count, or a share of its clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// At most this many (at least 1).
    Count(u32),
    /// This percentage (1-100) of the stage's clusters, rounded up, at least 1.
    Percent(u32),
}

impl Concurrency {
    /// How many clusters of a stage with `stage_size` clusters may run at once (at least 1).
    pub fn limit(self, stage_size: usize) -> usize {
        match self {
            Concurrency::Count(n) => (n as usize).max(1),
            Concurrency::Percent(p) => (stage_size * p as usize).div_ceil(100).max(1),
        }
    }
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Concurrency::Count(n) => write!(f, "{n}"),
            Concurrency::Percent(p) => write!(f, "{p}%"),
        }
    }
}

// === from the wire ===

impl RolloutSpec {
    /// Validates a `CreateRolloutRequest`. Defaults: `maxConcurrency` 1, `maxFailures` 1 (the
    /// first failure halts), `soak` 0, `agentDisconnectTimeout` 30 minutes, surge 100%.
    pub fn from_proto(req: &pb::CreateRolloutRequest) -> Result<Self, SpecError> {
        let name = req.name.trim();
        if name.is_empty() {
            return bad("name", "required: give the rollout a name, e.g. `upgrade-1.35`");
        }
        if name.chars().count() > 128 || name.chars().any(char::is_control) {
            return bad("name", "must be at most 128 printable characters");
        }
        let work = work_from_proto(req.work.as_ref(), "work")?;
        let selector = parse_selector(&req.selector, "selector")?;
        if req.stages.is_empty() {
            return bad(
                "stages",
                "at least one stage is required, e.g. `- name: all` with `selector: \"\"`",
            );
        }
        let mut seen = HashSet::new();
        let mut stages = Vec::with_capacity(req.stages.len());
        for (i, s) in req.stages.iter().enumerate() {
            let stage = stage_from_proto(s, i)?;
            if !seen.insert(stage.name.clone()) {
                return bad(
                    format!("stages[{i}].name"),
                    format!(
                        "{:?} is used by an earlier stage; stage names must be unique",
                        stage.name
                    ),
                );
            }
            stages.push(stage);
        }
        // A cluster goes to the first stage that selects it: after a select-all stage, none is
        // left for the next ones.
        if let Some(i) = stages[..stages.len() - 1]
            .iter()
            .position(|s| s.selector.is_empty())
        {
            return bad(
                format!("stages[{i}].selector"),
                format!(
                    "empty, so stage {:?} takes every cluster and the stages after it get none; give it a \
                     selector (e.g. env=dev) or make it the last stage",
                    stages[i].name
                ),
            );
        }
        let agent_disconnect_timeout = match &req.agent_disconnect_timeout {
            None => DEFAULT_AGENT_DISCONNECT_TIMEOUT,
            Some(d) => {
                let d = duration(d, "agentDisconnectTimeout")?;
                if d.is_zero() {
                    return bad(
                        "agentDisconnectTimeout",
                        "must be positive, e.g. `30m`; leave it out for the default (30m)",
                    );
                }
                d
            }
        };
        Ok(Self {
            name: name.to_string(),
            work,
            selector,
            stages,
            agent_disconnect_timeout,
            start_paused: req.start_paused,
        })
    }
}

fn parse_selector(text: &str, field: &str) -> Result<Selector, SpecError> {
    Selector::parse(text).map_err(|e| SpecError {
        field: field.to_string(),
        message: format!("{text:?} {e}; use Kubernetes label-selector syntax, e.g. `env=prod,tier in (a,b)`"),
    })
}

fn stage_from_proto(s: &pb::StageSpec, i: usize) -> Result<StageSpec, SpecError> {
    let f = |name: &str| format!("stages[{i}].{name}");
    let name = s.name.trim();
    let name_ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !name_ok {
        return bad(
            f("name"),
            format!(
                "{name:?} must be 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit, \
                 e.g. `prod`"
            ),
        );
    }
    let selector = parse_selector(&s.selector, &f("selector"))?;
    let max_concurrency = match (s.max_parallel, s.max_parallel_percent) {
        (0, 0) => Concurrency::Count(1),
        (n, 0) => Concurrency::Count(n),
        (0, p) if p <= 100 => Concurrency::Percent(p),
        (0, p) => {
            return bad(
                f("maxConcurrency"),
                format!("{p}% is more than 100%; give a percentage from 1% to 100%, or a count"),
            )
        }
        (n, p) => {
            return bad(
                f("maxConcurrency"),
                format!("both a count ({n}) and a percentage ({p}%) are set; give one of them"),
            )
        }
    };
    let soak = match &s.soak {
        None => Duration::ZERO,
        Some(d) => duration(d, &f("soak"))?,
    };
    Ok(StageSpec {
        name: name.to_string(),
        selector,
        max_concurrency,
        soak,
        max_failures: s.max_failures.max(1),
        require_approval: s.require_approval,
    })
}

/// The longest duration a rollout spec takes (30 days; step timeouts are bounded further, by
/// [`flotilla_proto::limits::MAX_WAIT`]).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A wire duration as a `std` one; negative, malformed or longer than [`MAX_DURATION`] ones are
/// refused.
fn duration(d: &prost_types::Duration, field: &str) -> Result<Duration, SpecError> {
    if d.seconds < 0 || d.nanos < 0 {
        return bad(field, "must not be negative, e.g. `10m`");
    }
    if d.seconds as u64 > MAX_DURATION.as_secs() {
        return bad(
            field,
            format!(
                "{}s is longer than 30 days ({}s); for a longer wait, pause the rollout and resume it later",
                d.seconds,
                MAX_DURATION.as_secs()
            ),
        );
    }
    if d.nanos >= 1_000_000_000 {
        return bad(
            field,
            "nanos must be below one second; carry whole seconds into `seconds`",
        );
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn positive(d: Option<&prost_types::Duration>, field: &str) -> Result<Option<Duration>, SpecError> {
    match d {
        None => Ok(None),
        Some(d) => {
            let d = duration(d, field)?;
            if d.is_zero() {
                return bad(field, "must be positive; leave it out for the step's default");
            }
            Ok(Some(d))
        }
    }
}

/// Validates a wire `Work` (also usable for a single operation's `StartOperation`); `field` is
/// its path (`work`).
pub fn work_from_proto(work: Option<&pb::Work>, field: &str) -> Result<Work, SpecError> {
    match work.and_then(|w| w.kind.as_ref()) {
        None => bad(
            field,
            "required: set `migration` (with its `nodegroup` template) or `upgrade` (with `targetVersion`)",
        ),
        Some(pb::work::Kind::Migration(m)) => Ok(Work::Migration(migration_from_proto(
            m,
            &format!("{field}.migration"),
        )?)),
        Some(pb::work::Kind::Upgrade(u)) => {
            let f = |name: &str| format!("{field}.upgrade.{name}");
            let target =
                MinorVersion::parse_target(u.target_version.trim()).map_err(|message| SpecError {
                    field: f("targetVersion"),
                    message,
                })?;
            let migration =
                match (&u.migration, u.migrate_self_managed) {
                    (Some(m), true) => Some(migration_from_proto(m, &f("migration"))?),
                    (None, true) => {
                        return bad(
                            f("migration"),
                            "required when migrateSelfManaged is true: give the managed node group \
                         template to migrate self-managed groups onto",
                        )
                    }
                    (Some(_), false) => return bad(
                        f("migration"),
                        "is set but migrateSelfManaged is false: set migrateSelfManaged: true to use it, \
                         or remove it",
                    ),
                    (None, false) => None,
                };
            Ok(Work::Upgrade(UpgradeSpec {
                target,
                force: u.force,
                migrate_self_managed: u.migrate_self_managed,
                migration,
            }))
        }
    }
}

fn migration_from_proto(m: &pb::MigrationParams, field: &str) -> Result<MigrationSpec, SpecError> {
    let f = |name: &str| format!("{field}.{name}");
    let from = m.from_nodegroup.trim();
    let from_nodegroup = if from.is_empty() {
        None
    } else {
        let ok = from.len() <= 255
            && from
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return bad(
                f("fromNodegroup"),
                format!("{from:?} is not a node group name (letters, digits, '-', '_', '.')"),
            );
        }
        Some(from.to_string())
    };
    let Some(ng) = &m.nodegroup else {
        return bad(
            f("nodegroup"),
            "required: the managed node group to create (nodegroupName, instanceTypes, scalingConfig, ...)",
        );
    };
    let nodegroup = template_from_proto(ng, &f("nodegroup"))?;
    let taint_key = match m.taint_key.trim() {
        "" => DEFAULT_TAINT_KEY.to_string(),
        k => {
            validate_key(k).map_err(|why| SpecError {
                field: f("taintKey"),
                message: format!("{k:?} is not a valid taint key: {why}"),
            })?;
            k.to_string()
        }
    };
    let surge = match m.surge {
        None => Surge::Percent(100),
        Some(pb::migration_params::Surge::SurgePercent(0)) => {
            return bad(f("surgePercent"), "must be 1 or more (leave it out for 100%)")
        }
        Some(pb::migration_params::Surge::SurgePercent(p)) if p > 1000 => {
            return bad(
                f("surgePercent"),
                format!("{p}% is more than 1000%; use a smaller surge"),
            )
        }
        Some(pb::migration_params::Surge::SurgePercent(p)) => Surge::Percent(p),
        Some(pb::migration_params::Surge::SurgeCount(0)) => {
            return bad(
                f("surgeCount"),
                "must be 1 or more (leave it out for a 100% surge)",
            )
        }
        Some(pb::migration_params::Surge::SurgeCount(n)) => Surge::Count(n),
    };
    let on_blocked = match m.on_blocked.and_then(|o| o.policy) {
        None | Some(pb::on_blocked::Policy::Fail(_)) => OnBlocked::Fail,
        Some(pb::on_blocked::Policy::SkipNode(_)) => OnBlocked::SkipNode,
        Some(pb::on_blocked::Policy::ForceAfter(d)) => {
            match positive(Some(&d), &f("onBlocked.forceAfter"))? {
                Some(d) => OnBlocked::ForceAfter(d),
                None => OnBlocked::Fail,
            }
        }
    };
    let spec = MigrationSpec {
        from_nodegroup,
        nodegroup,
        taint_key,
        surge,
        ready_timeout: positive(m.ready_timeout.as_ref(), &f("readyTimeout"))?,
        drain_concurrency: (m.drain_concurrency > 0).then_some(m.drain_concurrency),
        node_timeout: positive(m.node_timeout.as_ref(), &f("nodeTimeout"))?,
        on_blocked,
        delete_emptydir_data: m.delete_emptydir_data,
        force: m.force,
        delete_nodegroup_on_rollback: m.delete_nodegroup_on_rollback,
    };
    // The rules each cluster's operation is checked by when its turn comes, applied now, so a
    // spec every cluster would refuse is refused before anything starts.
    let mut params = crate::convert::migration_params(&crate::rollout::convert::migration_to_proto(&spec))
        .map_err(|e| SpecError {
            field: f(&e.field),
            message: e.message,
        })?;
    if params.from_nodegroup.is_empty() {
        // Resolved per cluster (its only self-managed group); a stand-in no group can be named.
        params.from_nodegroup = "(the cluster's only self-managed group)".into();
    }
    params.validate().map_err(|e| SpecError {
        field: f(&e.field),
        message: e.message,
    })?;
    Ok(spec)
}

/// Converts and validates a node group template; `field` is its path. Empty `subnets` are
/// allowed (inherited per cluster from the group being replaced); an empty `nodeRole` is refused
/// ([`crate::params::NODE_ROLE_REQUIRED`]).
fn template_from_proto(t: &pb::NodegroupTemplate, field: &str) -> Result<NodegroupTemplate, SpecError> {
    let Some(sc) = &t.scaling_config else {
        return bad(
            format!("{field}.scalingConfig"),
            "required: give minSize, maxSize and desiredSize",
        );
    };
    let mut taints = Vec::with_capacity(t.taints.len());
    for (i, taint) in t.taints.iter().enumerate() {
        let effect = match taint.effect.as_str() {
            "NO_SCHEDULE" => TaintEffect::NoSchedule,
            "NO_EXECUTE" => TaintEffect::NoExecute,
            "PREFER_NO_SCHEDULE" => TaintEffect::PreferNoSchedule,
            other => {
                return bad(
                    format!("{field}.taints[{i}].effect"),
                    format!("{other:?} is not NO_SCHEDULE, NO_EXECUTE or PREFER_NO_SCHEDULE"),
                )
            }
        };
        taints.push(Taint {
            key: taint.key.clone(),
            value: (!taint.value.is_empty()).then(|| taint.value.clone()),
            effect,
        });
    }
    let template = NodegroupTemplate {
        nodegroup_name: t.nodegroup_name.clone(),
        instance_types: t.instance_types.clone(),
        scaling_config: ScalingConfig {
            min_size: sc.min_size,
            max_size: sc.max_size,
            desired_size: sc.desired_size,
        },
        subnets: t.subnets.clone(),
        node_role: t.node_role.clone(),
        labels: t
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        taints,
        ami_type: (!t.ami_type.is_empty()).then(|| t.ami_type.clone()),
        capacity_type: (!t.capacity_type.is_empty()).then(|| t.capacity_type.clone()),
        update_config: t.update_config.map(|u| UpdateConfig {
            max_unavailable: u.max_unavailable,
            max_unavailable_percentage: u.max_unavailable_percentage,
        }),
    };
    // Inherited subnets get a stand-in so the rest is checked by the one validator EKS calls use.
    let mut check = template.clone();
    if check.subnets.is_empty() {
        check.subnets = vec!["inherited-from-replaced-group".into()];
    }
    if check.node_role.is_empty() {
        return bad(format!("{field}.nodeRole"), crate::params::NODE_ROLE_REQUIRED);
    }
    check.validate().map_err(|e| match e {
        EksError::InvalidTemplate { field: f, reason } => SpecError {
            field: format!("{field}.{f}"),
            message: reason,
        },
        other => SpecError {
            field: field.to_string(),
            message: other.to_string(),
        },
    })?;
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> pb::NodegroupTemplate {
        pb::NodegroupTemplate {
            nodegroup_name: "ng-new".into(),
            instance_types: vec!["m6i.large".into()],
            scaling_config: Some(pb::NodegroupScalingConfig {
                min_size: 2,
                max_size: 6,
                desired_size: 3,
            }),
            node_role: "arn:aws:iam::111122223333:role/nodes".into(),
            ..Default::default()
        }
    }

    fn migration() -> pb::MigrationParams {
        pb::MigrationParams {
            nodegroup: Some(template()),
            ..Default::default()
        }
    }

    /// Sets `r`'s work to [`migration`] as `edit` leaves it.
    fn with_migration(r: &mut pb::CreateRolloutRequest, edit: impl FnOnce(&mut pb::MigrationParams)) {
        let mut m = migration();
        edit(&mut m);
        r.work = Some(pb::Work {
            kind: Some(pb::work::Kind::Migration(m)),
        });
    }

    fn upgrade(target: &str) -> pb::Work {
        pb::Work {
            kind: Some(pb::work::Kind::Upgrade(pb::UpgradeParams {
                target_version: target.into(),
                ..Default::default()
            })),
        }
    }

    fn stage(name: &str, selector: &str) -> pb::StageSpec {
        pb::StageSpec {
            name: name.into(),
            selector: selector.into(),
            ..Default::default()
        }
    }

    fn request() -> pb::CreateRolloutRequest {
        pb::CreateRolloutRequest {
            name: "upgrade-1.35".into(),
            work: Some(upgrade("1.35")),
            stages: vec![stage("dev", "env=dev"), stage("prod", "env=prod")],
            ..Default::default()
        }
    }

    fn refused(req: &pb::CreateRolloutRequest) -> SpecError {
        RolloutSpec::from_proto(req).expect_err("must be refused")
    }

    #[test]
    fn defaults_are_filled_in() {
        let spec = RolloutSpec::from_proto(&request()).expect("valid");
        assert_eq!(spec.name, "upgrade-1.35");
        assert!(spec.selector.is_empty());
        assert_eq!(spec.agent_disconnect_timeout, DEFAULT_AGENT_DISCONNECT_TIMEOUT);
        let s = &spec.stages[0];
        assert_eq!(s.max_concurrency, Concurrency::Count(1));
        assert_eq!(s.max_failures, 1);
        assert_eq!(s.soak, Duration::ZERO);
        match spec.work {
            Work::Upgrade(u) => {
                assert_eq!(u.target, MinorVersion { major: 1, minor: 35 });
                assert!(u.migration.is_none());
            }
            Work::Migration(_) => panic!("an upgrade"),
        }
    }

    #[test]
    fn full_migration_spec() {
        let mut m = migration();
        m.from_nodegroup = "ng-old".into();
        m.taint_key = "example.com/moving".into();
        m.surge = Some(pb::migration_params::Surge::SurgeCount(2));
        m.ready_timeout = Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        });
        m.on_blocked = Some(pb::OnBlocked {
            policy: Some(pb::on_blocked::Policy::ForceAfter(prost_types::Duration {
                seconds: 300,
                nanos: 0,
            })),
        });
        m.drain_concurrency = 3;
        let mut req = request();
        req.work = Some(pb::Work {
            kind: Some(pb::work::Kind::Migration(m)),
        });
        req.selector = "team=web".into();
        req.stages[1].max_parallel_percent = 25;
        req.stages[1].soak = Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        });
        req.stages[1].max_failures = 3;
        req.stages[1].require_approval = true;
        req.agent_disconnect_timeout = Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        });
        let spec = RolloutSpec::from_proto(&req).expect("valid");
        let Work::Migration(m) = &spec.work else {
            panic!("a migration")
        };
        assert_eq!(m.from_nodegroup.as_deref(), Some("ng-old"));
        assert_eq!(m.surge, Surge::Count(2));
        assert_eq!(m.on_blocked, OnBlocked::ForceAfter(Duration::from_secs(300)));
        assert_eq!(m.drain_concurrency, Some(3));
        assert!(m.nodegroup.subnets.is_empty(), "subnets are inherited");
        let p = &spec.stages[1];
        assert_eq!(p.max_concurrency, Concurrency::Percent(25));
        assert_eq!(p.soak, Duration::from_secs(3600));
        assert_eq!((p.max_failures, p.require_approval), (3, true));
        assert_eq!(spec.agent_disconnect_timeout, Duration::from_secs(60));
        assert_eq!(spec.selector.to_string(), "team=web");
        let json = serde_json::to_string(&spec).expect("serialise");
        assert_eq!(
            serde_json::from_str::<RolloutSpec>(&json).expect("deserialise"),
            spec
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        type Edit = fn(&mut pb::CreateRolloutRequest);
        let cases: Vec<(Edit, &str, &str)> = vec![
            (|r| r.name = " ".into(), "name", "required"),
            (|r| r.work = None, "work", "set `migration`"),
            (
                |r| r.work = Some(upgrade("1.35.2")),
                "work.upgrade.targetVersion",
                "1.NN",
            ),
            (
                |r| r.work = Some(upgrade("v1.35")),
                "work.upgrade.targetVersion",
                "1.NN",
            ),
            (
                |r| r.work = Some(upgrade("2.1")),
                "work.upgrade.targetVersion",
                "only Kubernetes 1.x",
            ),
            (
                |r| r.work = Some(upgrade("1.035")),
                "work.upgrade.targetVersion",
                "1.NN",
            ),
            (
                |r| {
                    r.work = Some(pb::Work {
                        kind: Some(pb::work::Kind::Upgrade(pb::UpgradeParams {
                            target_version: "1.35".into(),
                            migrate_self_managed: true,
                            ..Default::default()
                        })),
                    })
                },
                "work.upgrade.migration",
                "required when migrateSelfManaged",
            ),
            (
                |r| {
                    let mut m = migration();
                    if let Some(t) = m.nodegroup.as_mut() {
                        t.scaling_config = Some(pb::NodegroupScalingConfig {
                            min_size: 5,
                            max_size: 3,
                            desired_size: 4,
                        });
                    }
                    r.work = Some(pb::Work {
                        kind: Some(pb::work::Kind::Upgrade(pb::UpgradeParams {
                            target_version: "1.35".into(),
                            migrate_self_managed: true,
                            migration: Some(m),
                            ..Default::default()
                        })),
                    })
                },
                "work.upgrade.migration.nodegroup.scalingConfig.minSize",
                "greater than maxSize",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        m.nodegroup = None;
                    })
                },
                "work.migration.nodegroup",
                "required",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        if let Some(t) = m.nodegroup.as_mut() {
                            t.node_role = "role/nodes".into();
                        }
                    })
                },
                "work.migration.nodegroup.nodeRole",
                "not an IAM role ARN",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        if let Some(t) = m.nodegroup.as_mut() {
                            t.node_role.clear();
                        }
                    })
                },
                "work.migration.nodegroup.nodeRole",
                "name the new nodes' role ARN",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        m.surge = Some(pb::migration_params::Surge::SurgeCount(u32::MAX));
                    })
                },
                "work.migration.surgeCount",
                "above 1000",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        m.drain_concurrency = 500;
                    })
                },
                "work.migration.drainConcurrency",
                "1 to 100",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        m.from_nodegroup = "ng-new".into();
                    })
                },
                "work.migration.nodegroup.nodegroupName",
                "also fromNodegroup",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        m.node_timeout = Some(prost_types::Duration {
                            seconds: 8 * 24 * 3600,
                            nanos: 0,
                        });
                    })
                },
                "work.migration.nodeTimeout",
                "7 days",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        m.node_timeout = Some(prost_types::Duration {
                            seconds: 60,
                            nanos: 0,
                        });
                        m.on_blocked = Some(pb::OnBlocked {
                            policy: Some(pb::on_blocked::Policy::ForceAfter(prost_types::Duration {
                                seconds: 120,
                                nanos: 0,
                            })),
                        });
                    })
                },
                "work.migration.onBlocked.forceAfter",
                "shorter than nodeTimeout",
            ),
            (
                |r| {
                    r.stages[0].soak = Some(prost_types::Duration {
                        seconds: i64::MAX,
                        nanos: 0,
                    })
                },
                "stages[0].soak",
                "30 days",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        m.surge = Some(pb::migration_params::Surge::SurgePercent(0));
                    })
                },
                "work.migration.surgePercent",
                "1 or more",
            ),
            (
                |r| {
                    with_migration(r, |m| {
                        m.taint_key = "bad key".into();
                    })
                },
                "work.migration.taintKey",
                "not a valid taint key",
            ),
            (|r| r.selector = "env in".into(), "selector", "expected '('"),
            (|r| r.stages.clear(), "stages", "at least one stage"),
            (
                |r| r.stages[0].selector = String::new(),
                "stages[0].selector",
                "the stages after it get none",
            ),
            (|r| r.stages[1].name = "dev".into(), "stages[1].name", "unique"),
            (|r| r.stages[0].name = "".into(), "stages[0].name", "1-63"),
            (
                |r| r.stages[1].selector = "env=,".into(),
                "stages[1].selector",
                "position 6",
            ),
            (
                |r| r.stages[1].max_parallel_percent = 101,
                "stages[1].maxConcurrency",
                "1% to 100%",
            ),
            (
                |r| {
                    r.stages[1].max_parallel = 2;
                    r.stages[1].max_parallel_percent = 10;
                },
                "stages[1].maxConcurrency",
                "give one of them",
            ),
            (
                |r| {
                    r.stages[0].soak = Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    })
                },
                "stages[0].soak",
                "negative",
            ),
            (
                |r| r.agent_disconnect_timeout = Some(prost_types::Duration::default()),
                "agentDisconnectTimeout",
                "positive",
            ),
        ];
        for (edit, field, needle) in cases {
            let mut req = request();
            edit(&mut req);
            let e = refused(&req);
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
    }

    #[test]
    fn concurrency_limits_round_up() {
        assert_eq!(Concurrency::Count(0).limit(10), 1);
        assert_eq!(Concurrency::Count(5).limit(2), 5);
        assert_eq!(Concurrency::Percent(25).limit(10), 3);
        assert_eq!(Concurrency::Percent(10).limit(3), 1);
        assert_eq!(Concurrency::Percent(100).limit(7), 7);
        assert_eq!(Concurrency::Percent(50).limit(0), 1);
    }

    #[test]
    fn versions() {
        let v = |s| MinorVersion::parse_reported(s);
        assert_eq!(v("1.33"), Some(MinorVersion { major: 1, minor: 33 }));
        assert_eq!(
            v("v1.33.4-eks-0a1b2c"),
            Some(MinorVersion { major: 1, minor: 33 })
        );
        assert_eq!(v("1.30+"), Some(MinorVersion { major: 1, minor: 30 }));
        assert_eq!(v("banana"), None);
        assert_eq!(v("1"), None);
        let t = MinorVersion::parse_target("1.34").expect("valid");
        assert_eq!(t.next().to_string(), "1.35");
        assert_eq!(serde_json::to_string(&t).expect("serialise"), "\"1.34\"");
        assert!(MinorVersion::parse_target("1.").is_err());
        assert!(MinorVersion::parse_target("1.x").is_err());
    }
}
