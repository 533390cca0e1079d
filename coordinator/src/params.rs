//! What an operation was asked to do, as stored in its record (`OperationRecord::params`): the
//! migration's parameters with every default filled in, or an upgrade's one-minor hop ([`Params`]
//! by kind), checked before anything is written.
//! Field names in errors are the API's (`nodegroup.scalingConfig.desiredSize`), relative to
//! `work.migration`.

use std::time::Duration;

use flotilla_proto::limits::{MAX_DRAIN_CONCURRENCY, MAX_SURGE_COUNT, MAX_SURGE_PERCENT, MAX_WAIT};
use serde::{Deserialize, Serialize};

use crate::eks::{EksError, NodegroupTemplate};
use crate::upgrade::MinorVersion;

/// The taint key put on the old nodes unless the operation names another.
pub const DEFAULT_TAINT_KEY: &str = "flotilla.io/migrating";
/// Nodes drained at once unless the operation says otherwise.
pub const DEFAULT_DRAIN_CONCURRENCY: u32 = 5;
/// How long the new nodes and the surged Deployments may take to be ready, by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long one node may take to drain, by default.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Why an empty `nodegroup.nodeRole` is refused.
pub const NODE_ROLE_REQUIRED: &str =
    "empty; the IAM role of a self-managed node group cannot be read from the EKS \
     or Auto Scaling API, so name the new nodes' role ARN (arn:aws:iam::ACCOUNT:role/NAME)";

/// A bad parameter: the field (relative to `work.migration`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    /// The field, in the API's camelCase names, e.g. `nodegroup.scalingConfig.desiredSize`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ParamError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How much each Deployment is surged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surge {
    /// A share of the current replicas: 100 doubles each Deployment.
    Percent(u32),
    /// A fixed number of extra pods per Deployment.
    Count(u32),
}

/// What the drain does with pods a PodDisruptionBudget keeps blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBlocked {
    /// Fail the step when a node is not empty by the per-node timeout.
    Fail,
    /// Delete a pod despite its PDB once it has been blocked this long.
    ForceAfter(Duration),
    /// Leave the node cordoned, report it, and go on.
    SkipNode,
}

/// One minor-version upgrade's parameters, as stored (`work.upgrade`, checked: `target` is
/// `from` + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeParams {
    /// The minor the cluster was at when the operation was planned.
    pub from: MinorVersion,
    /// The minor it goes to (`from` + 1: EKS upgrades one minor at a time).
    pub target: MinorVersion,
    /// Pass `force` to UpdateNodegroupVersion (PodDisruptionBudgets do not stop the node group
    /// update; preflight reports blocking budgets as warnings).
    pub force: bool,
    /// Where the hops this one is part of end (a rollout's target), when past `target`:
    /// preflight checks that EKS offers it before the first hop changes anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<MinorVersion>,
}

/// An operation's stored parameters, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Params {
    /// A migration.
    Migration(Box<MigrationParams>),
    /// A one-minor upgrade.
    Upgrade(UpgradeParams),
}

impl Params {
    /// The migration's parameters, if this is one.
    pub fn migration(&self) -> Option<&MigrationParams> {
        match self {
            Params::Migration(p) => Some(p),
            Params::Upgrade(_) => None,
        }
    }

    /// The upgrade's parameters, if this is one.
    pub fn upgrade(&self) -> Option<&UpgradeParams> {
        match self {
            Params::Upgrade(p) => Some(p),
            Params::Migration(_) => None,
        }
    }
}

/// A migration's parameters, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationParams {
    /// The self-managed group to replace.
    pub from_nodegroup: String,
    /// The managed group to create. `subnets` may be empty: they are then taken from the old
    /// group's Auto Scaling group when the node group is created.
    pub nodegroup: NodegroupTemplate,
    /// Taint key put on the old nodes.
    pub taint_key: String,
    /// How much to surge each Deployment.
    pub surge: Surge,
    /// How long to wait for the new nodes, and for the surged Deployments.
    pub ready_timeout: Duration,
    /// Nodes drained at once.
    pub drain_concurrency: u32,
    /// How long one node may take to drain.
    pub node_timeout: Duration,
    /// What the drain does with blocked pods.
    pub on_blocked: OnBlocked,
    /// Evict pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// Evict pods no controller manages.
    pub force: bool,
    /// On a rollback, also delete the new managed group.
    pub delete_nodegroup_on_rollback: bool,
}

impl MigrationParams {
    /// Checks every parameter, naming the first bad field.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.from_nodegroup.trim().is_empty() {
            return Err(ParamError::new(
                "fromNodegroup",
                "empty; name the self-managed node group to replace, e.g. ng-old",
            ));
        }
        if self.nodegroup.node_role.trim().is_empty() {
            return Err(ParamError::new("nodegroup.nodeRole", NODE_ROLE_REQUIRED));
        }
        // Empty subnets are filled from the old group later; check the rest as EKS would.
        let mut t = self.nodegroup.clone();
        if t.subnets.is_empty() {
            t.subnets = vec!["subnet-of-the-old-group".into()];
        }
        t.validate().map_err(|e| match e {
            EksError::InvalidTemplate { field, reason } => {
                ParamError::new(format!("nodegroup.{field}"), reason)
            }
            other => ParamError::new("nodegroup", other.to_string()),
        })?;
        if self.nodegroup.nodegroup_name == self.from_nodegroup {
            return Err(ParamError::new(
                "nodegroup.nodegroupName",
                format!(
                    "{:?} is also fromNodegroup; name the new managed group differently",
                    self.from_nodegroup
                ),
            ));
        }
        check_taint_key(&self.taint_key)?;
        match self.surge {
            Surge::Percent(0) | Surge::Count(0) => {
                return Err(ParamError::new(
                    "surge",
                    "adds no pods; use e.g. surgePercent: 100",
                ))
            }
            Surge::Percent(p) if p > MAX_SURGE_PERCENT => {
                return Err(ParamError::new(
                    "surgePercent",
                    format!("{p} is above {MAX_SURGE_PERCENT}%; use a smaller share"),
                ))
            }
            Surge::Count(n) if n > MAX_SURGE_COUNT => {
                return Err(ParamError::new(
                    "surgeCount",
                    format!("{n} pods is above {MAX_SURGE_COUNT}; use a smaller count"),
                ))
            }
            _ => {}
        }
        check_wait("readyTimeout", self.ready_timeout)?;
        if !(1..=MAX_DRAIN_CONCURRENCY).contains(&self.drain_concurrency) {
            return Err(ParamError::new(
                "drainConcurrency",
                format!(
                    "{} is out of range; use 1 to {MAX_DRAIN_CONCURRENCY} nodes at once",
                    self.drain_concurrency
                ),
            ));
        }
        check_wait("nodeTimeout", self.node_timeout)?;
        if let OnBlocked::ForceAfter(d) = self.on_blocked {
            if d.is_zero() || d >= self.node_timeout {
                return Err(ParamError::new(
                    "onBlocked.forceAfter",
                    format!(
                        "{}s must be above zero and shorter than nodeTimeout ({}s), or the node times out first",
                        d.as_secs(),
                        self.node_timeout.as_secs()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A timeout the agent will accept: above zero and at most [`MAX_WAIT`].
fn check_wait(field: &str, d: Duration) -> Result<(), ParamError> {
    if d.is_zero() {
        return Err(ParamError::new(field, "must be above zero, e.g. 10m"));
    }
    if d > MAX_WAIT {
        return Err(ParamError::new(
            field,
            format!(
                "{}s is longer than the 7 days ({}s) a step may wait; use e.g. 10m",
                d.as_secs(),
                MAX_WAIT.as_secs()
            ),
        ));
    }
    Ok(())
}

/// A Kubernetes qualified name (`[prefix/]name`), as taint keys are.
fn check_taint_key(key: &str) -> Result<(), ParamError> {
    crate::selector::validate_key(key).map_err(|m| {
        ParamError::new(
            "taintKey",
            format!(
                "{key:?} is not a valid taint key: {m}; use a qualified name such as {DEFAULT_TAINT_KEY}"
            ),
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn params() -> MigrationParams {
        MigrationParams {
            from_nodegroup: "ng-old".into(),
            nodegroup: serde_json::from_value(serde_json::json!({
                "nodegroupName": "ng-new",
                "instanceTypes": ["m5.large"],
                "scalingConfig": {"minSize": 1, "maxSize": 4, "desiredSize": 3},
                "subnets": [],
                "nodeRole": "arn:aws:iam::111122223333:role/node",
            }))
            .unwrap(),
            taint_key: DEFAULT_TAINT_KEY.into(),
            surge: Surge::Percent(100),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            drain_concurrency: DEFAULT_DRAIN_CONCURRENCY,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            on_blocked: OnBlocked::Fail,
            delete_emptydir_data: true,
            force: false,
            delete_nodegroup_on_rollback: false,
        }
    }

    #[test]
    fn defaults_are_valid_and_empty_subnets_allowed() {
        assert_eq!(params().validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let field = |f: &dyn Fn(&mut MigrationParams)| {
            let mut p = params();
            f(&mut p);
            p.validate().unwrap_err().field
        };
        assert_eq!(
            field(&|p| p.nodegroup.scaling_config.desired_size = 9),
            "nodegroup.scalingConfig.desiredSize"
        );
        assert_eq!(field(&|p| p.nodegroup.node_role.clear()), "nodegroup.nodeRole");
        assert_eq!(field(&|p| p.from_nodegroup.clear()), "fromNodegroup");
        assert_eq!(
            field(&|p| p.nodegroup.nodegroup_name = "ng-old".into()),
            "nodegroup.nodegroupName"
        );
        assert_eq!(field(&|p| p.taint_key = "bad key".into()), "taintKey");
        // A prefix label must start and end with a letter or digit, as Kubernetes says.
        assert_eq!(field(&|p| p.taint_key = "-x.io/k".into()), "taintKey");
        assert_eq!(field(&|p| p.surge = Surge::Count(0)), "surge");
        // u32::MAX would wrap to -1 as an i32 replica delta: refused long before that.
        assert_eq!(field(&|p| p.surge = Surge::Count(u32::MAX)), "surgeCount");
        assert_eq!(field(&|p| p.surge = Surge::Percent(1001)), "surgePercent");
        assert_eq!(
            field(&|p| p.node_timeout = MAX_WAIT + Duration::from_secs(1)),
            "nodeTimeout"
        );
        assert_eq!(
            field(&|p| p.ready_timeout = Duration::from_secs(u64::MAX)),
            "readyTimeout"
        );
        assert_eq!(field(&|p| p.drain_concurrency = 0), "drainConcurrency");
        assert_eq!(
            field(&|p| p.on_blocked = OnBlocked::ForceAfter(Duration::from_secs(3600))),
            "onBlocked.forceAfter"
        );
    }
}
