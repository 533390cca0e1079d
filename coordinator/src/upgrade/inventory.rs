//! What the upgrade needs from the agent's `Inventory` step, in the coordinator's own types (the
//! engine converts the proto `Inventory` into [`AgentInventory`] at the edge).

use serde::{Deserialize, Serialize};

/// How a node group is run, as the agent tells it from node labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GroupKind {
    /// Nodes labelled `alpha.eksctl.io/nodegroup-name` (an Auto Scaling group; not upgraded by
    /// EKS — migrate it first).
    SelfManaged,
    /// Nodes labelled `eks.amazonaws.com/nodegroup`.
    Managed,
}

/// The cluster as the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInventory {
    /// The API server's version, e.g. `v1.33.4-eks-1234567`.
    pub api_server_version: String,
    /// Node groups, summarised from their nodes' labels.
    pub node_groups: Vec<InventoryNodeGroup>,
    /// Every node.
    pub nodes: Vec<InventoryNode>,
    /// PodDisruptionBudgets that allow no disruption right now (with pods to protect).
    pub blocking_pdbs: Vec<InventoryPdb>,
    /// The kube-system add-on workloads (`coredns`, `kube-proxy`, `aws-node`) and their images,
    /// when the agent reports them; `None` when the inventory does not carry them (then a
    /// self-managed add-on's version is not checked, and the report says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addon_workloads: Option<Vec<AddonWorkload>>,
    /// The agent's own deprecated-API check (the API server's `apiserver_requested_deprecated_apis`);
    /// `None` from an agent that does not make it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_apis: Option<DeprecatedApiScan>,
}

/// What the agent's deprecated-API check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeprecatedApiScan {
    /// The API server's `/metrics` was read: the deprecated APIs clients called since that API
    /// server instance started.
    Checked(Vec<DeprecatedApi>),
    /// It could not be read: why.
    Unavailable(String),
}

/// One deprecated API a client called, as the API server's metric labels it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeprecatedApi {
    /// API group (`""` for the core group).
    pub group: String,
    /// Version, e.g. `v1beta1`.
    pub version: String,
    /// Resource, e.g. `flowschemas`.
    pub resource: String,
    /// Subresource, or `""`.
    pub subresource: String,
    /// The release that stops serving it, e.g. `1.32`; `""` when none is scheduled.
    pub removed_release: String,
}

impl DeprecatedApi {
    /// `/apis/<group>/<version>/<resource>[/<subresource>]` (`/api/v1/…` for the core group).
    pub fn path(&self) -> String {
        let mut p = if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.resource)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.resource)
        };
        if !self.subresource.is_empty() {
            p.push('/');
            p.push_str(&self.subresource);
        }
        p
    }
}

/// One node group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryNodeGroup {
    /// The group's name (the label's value).
    pub name: String,
    /// Managed or self-managed.
    pub kind: GroupKind,
    /// Nodes in the group.
    pub nodes: u32,
    /// Nodes Ready.
    pub ready: u32,
    /// Distinct kubelet versions of its nodes, e.g. `v1.33.4`.
    pub kubelet_versions: Vec<String>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryNode {
    /// Node name.
    pub name: String,
    /// Its node group, if labelled.
    pub group: Option<String>,
    /// The kubelet's version, e.g. `v1.33.4`.
    pub kubelet_version: String,
    /// `Ready=True`.
    pub ready: bool,
}

/// A PodDisruptionBudget that allows no disruption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryPdb {
    /// `namespace/name`.
    pub name: String,
    /// Pods it covers.
    pub expected: i32,
    /// Healthy pods.
    pub healthy: i32,
    /// Healthy pods it requires.
    pub desired: i32,
}

/// A kube-system workload an EKS add-on may also manage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonWorkload {
    /// The add-on it is: `coredns`, `kube-proxy` or `vpc-cni`.
    pub addon: String,
    /// Its first container's image.
    pub image: String,
}
