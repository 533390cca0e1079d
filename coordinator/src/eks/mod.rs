//! The coordinator's seam to EKS and Auto Scaling: the [`Eks`] trait the migration and upgrade steps
//! drive (create the managed node group, remove the self-managed group's ASG, upgrade the control
//! plane, node groups and add-ons, read upgrade insights), its domain types, and the polling
//! helpers that wait with backoff.
//!
//! [`aws`] is the one real implementation (aws-sdk-eks + aws-sdk-autoscaling); `fake` is an
//! in-memory stand-in for unit tests.

pub mod aws;
#[cfg(test)]
pub mod fake;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A `Result` with [`EksError`].
pub type Result<T, E = EksError> = std::result::Result<T, E>;

/// AWS error codes that mean "slow down" or "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "ServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// What went wrong talking to EKS or Auto Scaling, or waiting on them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EksError {
    /// The service answered with an error: the AWS error code and message are kept as sent.
    #[error("{operation} ({resource}): {code}: {message}")]
    Api {
        /// The SDK operation, e.g. `DescribeCluster`.
        operation: &'static str,
        /// What the call was about, e.g. `cluster sim-1` or `nodegroup sim-1/ng-new`.
        resource: String,
        /// The AWS error code, e.g. `ResourceNotFoundException`.
        code: String,
        /// The AWS error message.
        message: String,
        /// The HTTP status, when there was a response.
        status: Option<u16>,
    },
    /// No answer: connection, timeout or an unreadable response.
    #[error("{operation} ({resource}): transport error: {message}")]
    Transport {
        /// The SDK operation.
        operation: &'static str,
        /// What the call was about.
        resource: String,
        /// The error chain, rendered.
        message: String,
    },
    /// A node group template failed validation; `field` is its EKS name (`scalingConfig.minSize`).
    #[error("invalid node group template: {field}: {reason}")]
    InvalidTemplate {
        /// The offending field, in CreateNodegroup's names.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// More than one Auto Scaling group carries a self-managed node group's tags.
    #[error(
        "{count} Auto Scaling groups are tagged as node group {nodegroup} of cluster {cluster}: {names}"
    )]
    AmbiguousAsg {
        /// The cluster.
        cluster: String,
        /// The self-managed node group.
        nodegroup: String,
        /// How many groups matched.
        count: usize,
        /// Their names, comma-separated.
        names: String,
    },
    /// A waited-for resource reached a state it cannot leave toward the one wanted.
    #[error("{what} ended {status}: {detail}")]
    Failed {
        /// What was waited on, e.g. `update 1234 of cluster sim-1`.
        what: String,
        /// The terminal state, e.g. `Failed` or `CREATE_FAILED`.
        status: String,
        /// The errors or health issues EKS reported.
        detail: String,
    },
    /// The deadline passed before the wanted state was seen.
    #[error("timed out after {waited:?} waiting for {what} (last seen: {last})")]
    Timeout {
        /// What was waited on.
        what: String,
        /// How long the wait lasted.
        waited: Duration,
        /// The last state or error seen.
        last: String,
    },
    /// The configuration cannot be used (bad region, endpoint, …).
    #[error("invalid EKS configuration: {0}")]
    Config(String),
    /// A feature this build does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl EksError {
    /// Whether trying the same call again later may succeed: throttling, 5xx, transport errors.
    pub fn retryable(&self) -> bool {
        match self {
            EksError::Api { code, status, .. } => {
                RETRYABLE_CODES.contains(&code.as_str()) || status.is_some_and(|s| s == 429 || s >= 500)
            }
            EksError::Transport { .. } => true,
            _ => false,
        }
    }

    /// Whether the service said the operation is not there or not allowed for this caller (an
    /// API a region does not offer, an unknown operation, access denied) — as opposed to a
    /// missing resource or a failure.
    pub fn is_unavailable_operation(&self) -> bool {
        match self {
            EksError::Api { code, status, .. } => {
                matches!(
                    code.as_str(),
                    "UnknownOperationException"
                        | "UnsupportedOperationException"
                        | "UnsupportedOperation"
                        | "InvalidAction"
                        | "AccessDeniedException"
                        | "AccessDenied"
                ) || (*status == Some(404) && !self.is_not_found())
            }
            _ => false,
        }
    }

    /// Whether the service said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, EksError::Api { code, .. }
            if code == "ResourceNotFoundException" || code == "NotFoundException")
    }

    /// The AWS error code, for service errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            EksError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A short, stable label for metrics (`not_found` apart from other API errors, so expected
    /// lookups of absent resources do not look like failures).
    pub fn metric_label(&self) -> &'static str {
        match self {
            EksError::Api { .. } if self.is_not_found() => "not_found",
            EksError::Api { .. } if self.retryable() => "api_retryable",
            EksError::Api { .. } => "api",
            EksError::Transport { .. } => "transport",
            EksError::InvalidTemplate { .. } => "invalid_template",
            EksError::AmbiguousAsg { .. } => "ambiguous_asg",
            EksError::Failed { .. } => "failed",
            EksError::Timeout { .. } => "timeout",
            EksError::Config(_) => "config",
            EksError::Unsupported(_) => "unsupported",
        }
    }
}

// === Domain types ===

/// A cluster's control plane, as DescribeCluster reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The EKS cluster name.
    pub name: String,
    /// The Kubernetes `major.minor`, e.g. `1.33`.
    pub version: String,
    /// `ACTIVE`, `UPDATING`, `CREATING`, …
    pub status: String,
}

/// A managed node group's lifecycle status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodegroupStatus {
    /// `CREATING`.
    Creating,
    /// `ACTIVE`.
    Active,
    /// `UPDATING`.
    Updating,
    /// `DELETING`.
    Deleting,
    /// `CREATE_FAILED`.
    CreateFailed,
    /// `DELETE_FAILED`.
    DeleteFailed,
    /// `DEGRADED`.
    Degraded,
    /// A value this build does not know.
    Other(String),
}

impl NodegroupStatus {
    /// From the EKS wire value.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "CREATING" => Self::Creating,
            "ACTIVE" => Self::Active,
            "UPDATING" => Self::Updating,
            "DELETING" => Self::Deleting,
            "CREATE_FAILED" => Self::CreateFailed,
            "DELETE_FAILED" => Self::DeleteFailed,
            "DEGRADED" => Self::Degraded,
            other => Self::Other(other.to_string()),
        }
    }

    /// The EKS wire value.
    pub fn as_wire(&self) -> &str {
        match self {
            Self::Creating => "CREATING",
            Self::Active => "ACTIVE",
            Self::Updating => "UPDATING",
            Self::Deleting => "DELETING",
            Self::CreateFailed => "CREATE_FAILED",
            Self::DeleteFailed => "DELETE_FAILED",
            Self::Degraded => "DEGRADED",
            Self::Other(s) => s,
        }
    }

    /// Whether the group will not move on by itself (a failure state).
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::CreateFailed | Self::DeleteFailed)
    }
}

impl fmt::Display for NodegroupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_wire())
    }
}

/// A managed node group, as DescribeNodegroup reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodegroup {
    /// The node group name.
    pub name: String,
    /// Its status.
    pub status: NodegroupStatus,
    /// Its Kubernetes `major.minor`.
    pub version: Option<String>,
    /// The AMI release version.
    pub release_version: Option<String>,
    /// Desired node count.
    pub desired_size: Option<i32>,
    /// Minimum node count.
    pub min_size: Option<i32>,
    /// Maximum node count.
    pub max_size: Option<i32>,
    /// Health issues, rendered `code: message`.
    pub health_issues: Vec<String>,
    /// How many nodes an update may replace at once (`None` when EKS reports none).
    pub update_config: Option<UpdateConfig>,
}

impl Nodegroup {
    /// Nodes an update takes down at once: `maxUnavailable`, or `maxUnavailablePercentage` of the
    /// desired size rounded up, at least 1 (EKS's default is 1).
    pub fn max_unavailable_nodes(&self) -> u32 {
        let desired = u32::try_from(self.desired_size.unwrap_or(0)).unwrap_or(0);
        let n = match self.update_config {
            Some(UpdateConfig {
                max_unavailable: Some(n),
                ..
            }) => u32::try_from(n).unwrap_or(1),
            Some(UpdateConfig {
                max_unavailable_percentage: Some(p),
                ..
            }) => (desired * u32::try_from(p).unwrap_or(0)).div_ceil(100),
            _ => 1,
        };
        n.max(1)
    }

    /// `maxUnavailable N` or `maxUnavailablePercentage P%`, as configured (`default (1)` when
    /// unset), for messages.
    pub fn update_config_text(&self) -> String {
        match self.update_config {
            Some(UpdateConfig {
                max_unavailable: Some(n),
                ..
            }) => format!("maxUnavailable {n}"),
            Some(UpdateConfig {
                max_unavailable_percentage: Some(p),
                ..
            }) => format!("maxUnavailablePercentage {p}%"),
            _ => "maxUnavailable default (1)".to_string(),
        }
    }
}

/// What an EKS update is about: DescribeUpdate and ListUpdates take the node group or add-on name
/// for updates that are not the control plane's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateSubject<'a> {
    /// The control plane (UpdateClusterVersion, UpdateClusterConfig).
    Cluster,
    /// A managed node group.
    Nodegroup(&'a str),
    /// A managed add-on.
    Addon(&'a str),
}

impl UpdateSubject<'_> {
    /// The node group, if this is a node group's update.
    pub fn nodegroup(&self) -> Option<&str> {
        match self {
            UpdateSubject::Nodegroup(n) => Some(n),
            _ => None,
        }
    }

    /// The add-on, if this is an add-on's update.
    pub fn addon(&self) -> Option<&str> {
        match self {
            UpdateSubject::Addon(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for UpdateSubject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateSubject::Cluster => f.write_str("control plane"),
            UpdateSubject::Nodegroup(n) => write!(f, "nodegroup {n}"),
            UpdateSubject::Addon(a) => write!(f, "add-on {a}"),
        }
    }
}

/// One error of a failed (or failing) update, as DescribeUpdate reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateErrorDetail {
    /// The EKS error code, e.g. `PodEvictionFailure`, `NodeCreationFailure`.
    pub code: String,
    /// The EKS error message.
    pub message: String,
    /// What it is about: node names, instance ids, `namespace/pod` of pods EKS could not evict.
    pub resource_ids: Vec<String>,
}

impl fmt::Display for UpdateErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if !self.resource_ids.is_empty() {
            write!(f, " (resources: {})", self.resource_ids.join(", "))?;
        }
        Ok(())
    }
}

/// An EKS update's status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateStatus {
    /// `InProgress`.
    InProgress,
    /// `Successful`.
    Successful,
    /// `Failed`.
    Failed,
    /// `Cancelled`.
    Cancelled,
    /// A value this build does not know.
    Other(String),
}

impl UpdateStatus {
    /// From the EKS wire value.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "InProgress" => Self::InProgress,
            "Successful" => Self::Successful,
            "Failed" => Self::Failed,
            "Cancelled" => Self::Cancelled,
            other => Self::Other(other.to_string()),
        }
    }

    /// The EKS wire value.
    pub fn as_wire(&self) -> &str {
        match self {
            Self::InProgress => "InProgress",
            Self::Successful => "Successful",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_wire())
    }
}

/// An EKS update (UpdateClusterVersion, UpdateNodegroupVersion), as DescribeUpdate reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The update id.
    pub id: String,
    /// Its status.
    pub status: UpdateStatus,
    /// Its type, e.g. `VersionUpdate`.
    pub kind: Option<String>,
    /// Errors EKS reported, rendered `code: message`.
    pub errors: Vec<String>,
    /// The same errors with the resources EKS named.
    pub error_details: Vec<UpdateErrorDetail>,
    /// Its parameters as `(type, value)`, e.g. `("Version", "1.34")`, `("AddonVersion", …)`.
    pub params: Vec<(String, String)>,
}

impl Update {
    /// The value of parameter `kind` (`Version`, `ReleaseVersion`, `AddonVersion`, …).
    pub fn param(&self, kind: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| v.as_str())
    }
}

// === Add-ons ===

/// A managed add-on's lifecycle status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AddonStatus {
    /// `CREATING`.
    Creating,
    /// `ACTIVE`.
    Active,
    /// `CREATE_FAILED`.
    CreateFailed,
    /// `UPDATING`.
    Updating,
    /// `DELETING`.
    Deleting,
    /// `DELETE_FAILED`.
    DeleteFailed,
    /// `DEGRADED`.
    Degraded,
    /// `UPDATE_FAILED`.
    UpdateFailed,
    /// A value this build does not know.
    Other(String),
}

impl AddonStatus {
    /// From the EKS wire value.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "CREATING" => Self::Creating,
            "ACTIVE" => Self::Active,
            "CREATE_FAILED" => Self::CreateFailed,
            "UPDATING" => Self::Updating,
            "DELETING" => Self::Deleting,
            "DELETE_FAILED" => Self::DeleteFailed,
            "DEGRADED" => Self::Degraded,
            "UPDATE_FAILED" => Self::UpdateFailed,
            other => Self::Other(other.to_string()),
        }
    }

    /// The EKS wire value.
    pub fn as_wire(&self) -> &str {
        match self {
            Self::Creating => "CREATING",
            Self::Active => "ACTIVE",
            Self::CreateFailed => "CREATE_FAILED",
            Self::Updating => "UPDATING",
            Self::Deleting => "DELETING",
            Self::DeleteFailed => "DELETE_FAILED",
            Self::Degraded => "DEGRADED",
            Self::UpdateFailed => "UPDATE_FAILED",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for AddonStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_wire())
    }
}

/// A managed add-on, as DescribeAddon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addon {
    /// The add-on name, e.g. `coredns`.
    pub name: String,
    /// Its version, e.g. `v1.11.4-eksbuild.2`.
    pub version: String,
    /// Its status.
    pub status: AddonStatus,
    /// Health issues, rendered `code: message`.
    pub health_issues: Vec<String>,
}

/// The versions of an add-on that run on one Kubernetes minor (DescribeAddonVersions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddonVersions {
    /// The add-on.
    pub addon: String,
    /// The Kubernetes `major.minor` asked about.
    pub kubernetes_version: String,
    /// The version EKS installs by default on that minor, if it names one.
    pub default_version: Option<String>,
    /// Every version compatible with that minor, as EKS lists them (newest first).
    pub versions: Vec<String>,
}

// === Insights ===

/// An insight's status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InsightStatus {
    /// `PASSING`.
    Passing,
    /// `WARNING`.
    Warning,
    /// `ERROR`: EKS refuses UpdateClusterVersion (without `force`) while an upgrade-readiness
    /// insight for the target version is in error.
    Error,
    /// `UNKNOWN`.
    Unknown,
    /// A value this build does not know.
    Other(String),
}

impl InsightStatus {
    /// From the EKS wire value.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "PASSING" => Self::Passing,
            "WARNING" => Self::Warning,
            "ERROR" => Self::Error,
            "UNKNOWN" => Self::Unknown,
            other => Self::Other(other.to_string()),
        }
    }

    /// The EKS wire value.
    pub fn as_wire(&self) -> &str {
        match self {
            Self::Passing => "PASSING",
            Self::Warning => "WARNING",
            Self::Error => "ERROR",
            Self::Unknown => "UNKNOWN",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for InsightStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_wire())
    }
}

/// One upgrade insight, as ListInsights summarises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insight {
    /// Its id (for DescribeInsight).
    pub id: String,
    /// Its name, e.g. `Deprecated APIs removed in Kubernetes v1.34`.
    pub name: String,
    /// `UPGRADE_READINESS`, `MISCONFIGURATION`, …
    pub category: String,
    /// The Kubernetes `major.minor` it is about.
    pub kubernetes_version: Option<String>,
    /// Its status.
    pub status: InsightStatus,
    /// Why it has that status.
    pub reason: String,
    /// What it checks.
    pub description: String,
}

impl Insight {
    /// Whether this insight is about deprecated Kubernetes APIs (DescribeInsight then lists the
    /// API paths in use).
    pub fn is_deprecated_apis(&self) -> bool {
        self.name.to_ascii_lowercase().contains("deprecated api")
    }
}

/// What ListInsights gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Insights {
    /// The insights (possibly none).
    Listed(Vec<Insight>),
    /// The API is not available here (a region or partition without it, or the caller may not
    /// use it): upgrade readiness is unknown, not failed.
    Unavailable {
        /// The error EKS gave, for the report.
        reason: String,
    },
}

/// One deprecated API in use, from an insight's details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprecatedApiUse {
    /// The API path in use, e.g. `/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas`.
    pub usage: String,
    /// Its replacement.
    pub replaced_with: Option<String>,
    /// The Kubernetes version that stops serving it.
    pub stop_serving_version: Option<String>,
    /// The clients using it, rendered `user-agent (N requests in 30 days)`.
    pub clients: Vec<String>,
}

/// One insight with its details (DescribeInsight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsightDetail {
    /// The summary.
    pub insight: Insight,
    /// What to do about it.
    pub recommendation: String,
    /// For deprecated-API insights: the APIs in use.
    pub deprecations: Vec<DeprecatedApiUse>,
    /// Kubernetes resources it names that are not passing, rendered `uri: status: reason`.
    pub resources: Vec<String>,
}

/// A self-managed node group's Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgInfo {
    /// The Auto Scaling group name.
    pub name: String,
    /// Minimum size.
    pub min_size: i32,
    /// Maximum size.
    pub max_size: i32,
    /// Desired capacity.
    pub desired_capacity: i32,
    /// Instances currently in the group (any lifecycle state).
    pub instances: usize,
    /// The subnets it launches into (`VPCZoneIdentifier`), in order.
    pub subnets: Vec<String>,
}

/// Sizes for [`Eks::scale_asg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgSize {
    /// Desired capacity.
    pub desired: i32,
    /// Minimum size.
    pub min: i32,
    /// Maximum size.
    pub max: i32,
}

// === Node group template ===

/// A managed node group to create, in CreateNodegroup's field names (so a rollout's YAML reads like
/// the EKS API reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodegroupTemplate {
    /// The node group name (1–63 letters, digits, `-`, `_`; starts with a letter or digit).
    pub nodegroup_name: String,
    /// Instance types; the first is the primary.
    pub instance_types: Vec<String>,
    /// Node counts.
    pub scaling_config: ScalingConfig,
    /// Subnet ids the nodes go in.
    pub subnets: Vec<String>,
    /// The IAM role ARN the nodes run as.
    pub node_role: String,
    /// Kubernetes labels on the nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes taints on the nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// The AMI type, e.g. `AL2023_x86_64_STANDARD`; EKS picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_type: Option<String>,
    /// `ON_DEMAND` (default), `SPOT` or `CAPACITY_BLOCK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_type: Option<String>,
    /// How many nodes an update may take down at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
}

/// A node group's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingConfig {
    /// Minimum node count.
    pub min_size: i32,
    /// Maximum node count.
    pub max_size: i32,
    /// Desired node count.
    pub desired_size: i32,
}

/// A taint EKS puts on a managed group's nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// The taint key.
    pub key: String,
    /// The taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The effect.
    pub effect: TaintEffect,
}

/// A taint effect, in EKS's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaintEffect {
    /// `NO_SCHEDULE`.
    NoSchedule,
    /// `NO_EXECUTE`.
    NoExecute,
    /// `PREFER_NO_SCHEDULE`.
    PreferNoSchedule,
}

/// A node group's update configuration: exactly one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateConfig {
    /// Nodes unavailable at once during an update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<i32>,
    /// Percentage of nodes unavailable at once during an update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable_percentage: Option<i32>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> EksError {
    EksError::InvalidTemplate {
        field: field.into(),
        reason: reason.into(),
    }
}

impl NodegroupTemplate {
    /// Checks what EKS would reject, naming the field: name shape, non-empty instance types and
    /// subnets, `minSize <= desiredSize <= maxSize`, node role ARN, taints, capacity type and
    /// update configuration.
    pub fn validate(&self) -> Result<()> {
        let n = &self.nodegroup_name;
        let name_ok = (1..=63).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !name_ok {
            return Err(invalid(
                "nodegroupName",
                format!("{n:?} must be 1-63 letters, digits, '-' or '_', starting with a letter or digit"),
            ));
        }
        if self.instance_types.is_empty() {
            return Err(invalid("instanceTypes", "at least one instance type is required"));
        }
        if let Some(i) = self.instance_types.iter().position(|t| t.trim().is_empty()) {
            return Err(invalid(format!("instanceTypes[{i}]"), "must not be empty"));
        }
        let s = &self.scaling_config;
        if s.min_size < 0 {
            return Err(invalid("scalingConfig.minSize", "must be 0 or more"));
        }
        if s.max_size < 1 {
            return Err(invalid("scalingConfig.maxSize", "must be 1 or more"));
        }
        if s.min_size > s.max_size {
            return Err(invalid(
                "scalingConfig.minSize",
                format!("{} is greater than maxSize {}", s.min_size, s.max_size),
            ));
        }
        if s.desired_size < s.min_size || s.desired_size > s.max_size {
            return Err(invalid(
                "scalingConfig.desiredSize",
                format!(
                    "{} is outside minSize {} .. maxSize {}",
                    s.desired_size, s.min_size, s.max_size
                ),
            ));
        }
        if self.subnets.is_empty() {
            return Err(invalid("subnets", "at least one subnet is required"));
        }
        if let Some(i) = self.subnets.iter().position(|t| t.trim().is_empty()) {
            return Err(invalid(format!("subnets[{i}]"), "must not be empty"));
        }
        if !self.node_role.starts_with("arn:") {
            return Err(invalid(
                "nodeRole",
                format!("{:?} is not an IAM role ARN", self.node_role),
            ));
        }
        if let Some(k) = self.labels.keys().find(|k| k.is_empty() || k.len() > 317) {
            return Err(invalid(
                format!("labels.{k}"),
                "label key must be 1-317 characters",
            ));
        }
        if self.taints.len() > 50 {
            return Err(invalid("taints", "at most 50 taints"));
        }
        if let Some(i) = self.taints.iter().position(|t| t.key.is_empty()) {
            return Err(invalid(format!("taints[{i}].key"), "must not be empty"));
        }
        if let Some(c) = &self.capacity_type {
            if !["ON_DEMAND", "SPOT", "CAPACITY_BLOCK"].contains(&c.as_str()) {
                return Err(invalid(
                    "capacityType",
                    format!("{c:?} is not ON_DEMAND, SPOT or CAPACITY_BLOCK"),
                ));
            }
        }
        if let Some(a) = &self.ami_type {
            if a.trim().is_empty() {
                return Err(invalid("amiType", "must not be empty when set"));
            }
        }
        if let Some(u) = &self.update_config {
            match (u.max_unavailable, u.max_unavailable_percentage) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        "updateConfig",
                        "set exactly one of maxUnavailable and maxUnavailablePercentage",
                    ))
                }
                (Some(n), None) if !(1..=100).contains(&n) => {
                    return Err(invalid("updateConfig.maxUnavailable", "must be 1..=100"))
                }
                (None, Some(p)) if !(1..=100).contains(&p) => {
                    return Err(invalid(
                        "updateConfig.maxUnavailablePercentage",
                        "must be 1..=100",
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

// === The trait ===

/// One cluster's EKS control plane and Auto Scaling groups, as the coordinator's steps need them.
/// An implementation is bound to one cluster (its region, credentials and EKS name).
pub trait Eks: Send + Sync {
    /// The EKS cluster name this handle is bound to.
    fn cluster_name(&self) -> &str;

    /// DescribeCluster: version and status.
    fn describe_cluster(&self) -> impl Future<Output = Result<ClusterInfo>> + Send;

    /// ListNodegroups: the managed node group names (all pages).
    fn list_nodegroups(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// DescribeNodegroup.
    fn describe_nodegroup(&self, name: &str) -> impl Future<Output = Result<Nodegroup>> + Send;

    /// CreateNodegroup from a template (validated first); returns the new group (`CREATING`).
    fn create_nodegroup(
        &self,
        template: &NodegroupTemplate,
    ) -> impl Future<Output = Result<Nodegroup>> + Send;

    /// DeleteNodegroup.
    fn delete_nodegroup(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// UpdateClusterVersion to `version` (`major.minor`); returns the update to poll.
    fn update_cluster_version(&self, version: &str) -> impl Future<Output = Result<Update>> + Send;

    /// UpdateNodegroupVersion (to the cluster's version when `version` is `None`); `force` lets
    /// EKS go on past pods whose PodDisruptionBudget blocks eviction.
    fn update_nodegroup_version(
        &self,
        nodegroup: &str,
        version: Option<&str>,
        force: bool,
    ) -> impl Future<Output = Result<Update>> + Send;

    /// DescribeUpdate: a cluster update, or a node group's when `nodegroup` is set.
    fn describe_update(
        &self,
        update_id: &str,
        nodegroup: Option<&str>,
    ) -> impl Future<Output = Result<Update>> + Send {
        let subject = nodegroup.map_or(UpdateSubject::Cluster, UpdateSubject::Nodegroup);
        self.describe_update_of(update_id, subject)
    }

    /// DescribeUpdate of the control plane's, a node group's or an add-on's update.
    fn describe_update_of(
        &self,
        update_id: &str,
        subject: UpdateSubject<'_>,
    ) -> impl Future<Output = Result<Update>> + Send;

    /// ListUpdates: the ids of every update of `subject` (all pages), in the order EKS gives.
    fn list_updates(&self, subject: UpdateSubject<'_>) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// ListAddons: the managed add-on names (all pages).
    fn list_addons(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// DescribeAddon: version and status.
    fn describe_addon(&self, name: &str) -> impl Future<Output = Result<Addon>> + Send;

    /// DescribeAddonVersions for one add-on and Kubernetes `major.minor`: the default version
    /// there and every compatible one.
    fn describe_addon_versions(
        &self,
        addon: &str,
        kubernetes_version: &str,
    ) -> impl Future<Output = Result<AddonVersions>> + Send;

    /// DescribeClusterVersions (all pages): the Kubernetes `major.minor` versions EKS offers in
    /// this cluster's region.
    fn describe_cluster_versions(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// UpdateAddon to `version`, keeping configuration changed on the cluster
    /// (`resolveConflicts: PRESERVE`); returns the update to poll.
    fn update_addon(&self, addon: &str, version: &str) -> impl Future<Output = Result<Update>> + Send;

    /// ListInsights of the `UPGRADE_READINESS` category (all pages), for one Kubernetes
    /// `major.minor` when given. An API the region does not offer (or the caller may not use) is
    /// [`Insights::Unavailable`], not an error.
    fn list_insights(
        &self,
        kubernetes_version: Option<&str>,
    ) -> impl Future<Output = Result<Insights>> + Send;

    /// DescribeInsight: an insight with its details (deprecated APIs in use, resources).
    fn describe_insight(&self, id: &str) -> impl Future<Output = Result<InsightDetail>> + Send;

    /// The Auto Scaling group of self-managed node group `nodegroup`: the one tagged
    /// `alpha.eksctl.io/nodegroup-name=<nodegroup>` and `kubernetes.io/cluster/<cluster>=owned`.
    /// `None` when there is none; [`EksError::AmbiguousAsg`] when there are several.
    fn find_self_managed_asg(&self, nodegroup: &str) -> impl Future<Output = Result<Option<AsgInfo>>> + Send;

    /// UpdateAutoScalingGroup: set desired, min and max.
    fn scale_asg(&self, asg: &str, size: AsgSize) -> impl Future<Output = Result<()>> + Send;

    /// DeleteAutoScalingGroup; `force` terminates instances still in it.
    fn delete_asg(&self, asg: &str, force: bool) -> impl Future<Output = Result<()>> + Send;
}

// === Waiting ===

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The cap on any one delay.
    pub max: Duration,
    /// Growth per attempt (2.0 doubles).
    pub factor: f64,
    /// Fraction of each delay that is randomised away (0.0 none, 1.0 "full jitter").
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(60),
            factor: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before poll `attempt + 1` (attempt 0 is the first retry), given a random number
    /// `r` in `[0, 1)`: `min(max, initial * factor^attempt)`, less up to `jitter` of it.
    pub fn delay(&self, attempt: u32, r: f64) -> Duration {
        let exp = self.factor.max(1.0).powi(attempt.min(64) as i32);
        let base = self.initial.as_secs_f64() * exp;
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * r.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * (1.0 - jitter)).max(0.0))
    }
}

/// How [`wait_nodegroup`] and [`wait_update`] poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitOptions {
    /// The delays between polls.
    pub backoff: Backoff,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            backoff: Backoff::default(),
            timeout: Duration::from_secs(45 * 60),
        }
    }
}

/// What one poll decided.
enum Poll<T> {
    Done(T),
    Pending(String),
}

/// Polls `check` until it is done, fails hard, or the deadline passes. Retryable errors are
/// tolerated (and remembered as the last thing seen); others end the wait.
async fn poll_until<T, F, Fut>(what: &str, opts: &WaitOptions, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + opts.timeout;
    let mut attempt = 0u32;
    loop {
        let last = match check().await {
            Ok(Poll::Done(v)) => return Ok(v),
            Ok(Poll::Pending(seen)) => seen,
            Err(e) if e.retryable() => {
                tracing::debug!(%what, error = %e, "retryable error while waiting");
                e.to_string()
            }
            Err(e) => return Err(e),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(EksError::Timeout {
                what: what.to_string(),
                waited: now - start,
                last,
            });
        }
        let delay = opts.backoff.delay(attempt, rand::random::<f64>());
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay.min(deadline - now)).await;
    }
}

/// Waits until node group `name` has status `want`. A failure status (`CREATE_FAILED`,
/// `DELETE_FAILED`) other than `want` ends the wait with [`EksError::Failed`].
pub async fn wait_nodegroup<E: Eks + ?Sized>(
    eks: &E,
    name: &str,
    want: NodegroupStatus,
    opts: &WaitOptions,
) -> Result<Nodegroup> {
    let what = format!("nodegroup {}/{name} to be {want}", eks.cluster_name());
    poll_until(&what, opts, || async {
        let ng = eks.describe_nodegroup(name).await?;
        if ng.status == want {
            Ok(Poll::Done(ng))
        } else if ng.status.is_failed() {
            Err(EksError::Failed {
                what: format!("nodegroup {}/{name}", eks.cluster_name()),
                status: ng.status.to_string(),
                detail: ng.health_issues.join("; "),
            })
        } else {
            Ok(Poll::Pending(ng.status.to_string()))
        }
    })
    .await
}

/// Waits until node group `name` is gone (DescribeNodegroup answers not found).
pub async fn wait_nodegroup_deleted<E: Eks + ?Sized>(eks: &E, name: &str, opts: &WaitOptions) -> Result<()> {
    let what = format!("nodegroup {}/{name} to be deleted", eks.cluster_name());
    poll_until(&what, opts, || async {
        match eks.describe_nodegroup(name).await {
            Err(e) if e.is_not_found() => Ok(Poll::Done(())),
            Err(e) => Err(e),
            Ok(ng) if ng.status == NodegroupStatus::DeleteFailed => Err(EksError::Failed {
                what: format!("nodegroup {}/{name}", eks.cluster_name()),
                status: ng.status.to_string(),
                detail: ng.health_issues.join("; "),
            }),
            Ok(ng) => Ok(Poll::Pending(ng.status.to_string())),
        }
    })
    .await
}

/// Waits until update `id` (of the cluster, or of `nodegroup`) is `Successful`; `Failed` or
/// `Cancelled` end the wait with [`EksError::Failed`] carrying EKS's errors.
pub async fn wait_update<E: Eks + ?Sized>(
    eks: &E,
    id: &str,
    nodegroup: Option<&str>,
    opts: &WaitOptions,
) -> Result<Update> {
    let subject = nodegroup.map_or(UpdateSubject::Cluster, UpdateSubject::Nodegroup);
    wait_update_of(eks, id, subject, opts).await
}

/// Waits until update `id` of `subject` ends: `Successful` is returned; `Failed` or `Cancelled`
/// end the wait with [`EksError::Failed`] carrying EKS's errors (call
/// [`Eks::describe_update_of`] for the resources they name).
pub async fn wait_update_of<E: Eks + ?Sized>(
    eks: &E,
    id: &str,
    target: UpdateSubject<'_>,
    opts: &WaitOptions,
) -> Result<Update> {
    let subject = match target {
        UpdateSubject::Cluster => format!("update {id} of cluster {}", eks.cluster_name()),
        UpdateSubject::Nodegroup(ng) => format!("update {id} of nodegroup {}/{ng}", eks.cluster_name()),
        UpdateSubject::Addon(a) => format!("update {id} of add-on {}/{a}", eks.cluster_name()),
    };
    poll_until(&subject, opts, || async {
        let u = eks.describe_update_of(id, target).await?;
        match u.status {
            UpdateStatus::Successful => Ok(Poll::Done(u)),
            UpdateStatus::Failed | UpdateStatus::Cancelled => Err(EksError::Failed {
                what: subject.clone(),
                status: u.status.to_string(),
                detail: u.errors.join("; "),
            }),
            ref s => Ok(Poll::Pending(s.to_string())),
        }
    })
    .await
}

/// Waits until add-on `name` has status `want`. `CREATE_FAILED`, `UPDATE_FAILED` and
/// `DELETE_FAILED` (other than `want`) end the wait with [`EksError::Failed`].
pub async fn wait_addon<E: Eks + ?Sized>(
    eks: &E,
    name: &str,
    want: AddonStatus,
    opts: &WaitOptions,
) -> Result<Addon> {
    let what = format!("add-on {}/{name} to be {want}", eks.cluster_name());
    poll_until(&what, opts, || async {
        let a = eks.describe_addon(name).await?;
        if a.status == want {
            Ok(Poll::Done(a))
        } else if matches!(
            a.status,
            AddonStatus::CreateFailed | AddonStatus::UpdateFailed | AddonStatus::DeleteFailed
        ) {
            Err(EksError::Failed {
                what: format!("add-on {}/{name}", eks.cluster_name()),
                status: a.status.to_string(),
                detail: a.health_issues.join("; "),
            })
        } else {
            Ok(Poll::Pending(a.status.to_string()))
        }
    })
    .await
}

#[cfg(test)]
mod tests;
