//! Inventory: the cluster's Kubernetes version, node groups (self-managed by
//! `alpha.eksctl.io/nodegroup-name`, managed by `eks.amazonaws.com/nodegroup`), nodes with kubelet
//! version and readiness, Deployments, PDBs that currently allow zero disruptions, and the
//! deprecated APIs clients still call.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::deprecated_apis::{self, DeprecatedApiScan};
use crate::model::{self, GroupKind};
use crate::steps::StepError;

/// What the agent reports about its cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inventory {
    /// The API server's version (`v1.33.4-eks-…`).
    pub version: String,
    /// Node groups, by name.
    pub node_groups: Vec<NodeGroup>,
    /// Every node.
    pub nodes: Vec<NodeInfo>,
    /// Every Deployment.
    pub deployments: Vec<DeploymentInfo>,
    /// PodDisruptionBudgets that allow no disruption right now (a drain would wait on them).
    pub blocking_pdbs: Vec<PdbInfo>,
    /// The kube-system workloads EKS add-ons may also manage, with their images (`None` when
    /// the inventory was built without reading them).
    pub addon_workloads: Option<Vec<AddonWorkload>>,
    /// The deprecated APIs clients called, from the API server's `/metrics` (`None` when the
    /// inventory was built without reading them).
    pub deprecated_apis: Option<DeprecatedApiScan>,
}

/// A kube-system workload an EKS add-on may also manage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddonWorkload {
    /// The add-on: `coredns`, `kube-proxy` or `vpc-cni`.
    pub addon: String,
    /// Its first container's image.
    pub image: String,
}

/// The namespace EKS add-ons run in.
pub const ADDON_NAMESPACE: &str = "kube-system";

/// The add-on whose workload is kube-system's Deployment of the same name.
const DEPLOYMENT_ADDON: &str = "coredns";
/// (add-on, kube-system DaemonSet) for the add-ons run as DaemonSets.
const DAEMON_SET_ADDONS: [(&str, &str); 2] = [("kube-proxy", "kube-proxy"), ("vpc-cni", "aws-node")];

/// One node group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeGroup {
    /// The group's name.
    pub name: String,
    /// Managed or self-managed.
    pub kind: GroupKind,
    /// Nodes in the group.
    pub nodes: u32,
    /// Nodes Ready.
    pub ready: u32,
    /// Distinct kubelet versions, sorted.
    pub kubelet_versions: Vec<String>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Its group, if labelled.
    pub group: Option<String>,
    /// The group's kind, if labelled.
    pub group_kind: Option<GroupKind>,
    /// `v1.33.4`.
    pub kubelet_version: String,
    /// `Ready=True`.
    pub ready: bool,
    /// Ready, not cordoned, no `NoSchedule`/`NoExecute` taint.
    pub schedulable: bool,
}

/// One Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentInfo {
    /// `namespace/name`.
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `namespace/name` of the HPA scaling it, if any.
    pub hpa: Option<String>,
}

/// One PodDisruptionBudget's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PdbInfo {
    /// `namespace/name`.
    pub name: String,
    /// Pods it covers.
    pub expected: i32,
    /// Healthy pods.
    pub healthy: i32,
    /// Healthy pods it requires.
    pub desired: i32,
}

/// Reads the cluster and builds its [`Inventory`].
pub async fn collect<C: Cluster>(cluster: &C) -> Result<Inventory, StepError> {
    let version = cluster.version().await?;
    let nodes = cluster.nodes().await?;
    let deployments = cluster.deployments().await?;
    let hpas = cluster.hpas().await?;
    let pdbs = cluster.pdbs().await?;
    let daemon_sets = cluster.daemon_sets(ADDON_NAMESPACE).await?;
    let mut inventory = build(version, &nodes, &deployments, &hpas, &pdbs);
    inventory.addon_workloads = Some(addon_workloads(&deployments, &daemon_sets));
    inventory.deprecated_apis = Some(deprecated_apis::scan(cluster).await);
    Ok(inventory)
}

/// The images of kube-system's `coredns` Deployment and `kube-proxy` / `aws-node` DaemonSets
/// (those present), for the upgrade's check of self-managed add-ons.
pub fn addon_workloads(deployments: &[Deployment], daemon_sets: &[DaemonSet]) -> Vec<AddonWorkload> {
    fn image(template: Option<&PodTemplateSpec>) -> Option<String> {
        let spec = template?.spec.as_ref()?;
        spec.containers.first()?.image.clone()
    }
    let in_kube_system = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, name: &str| {
        meta.namespace.as_deref() == Some(ADDON_NAMESPACE) && meta.name.as_deref() == Some(name)
    };
    let workload = |addon: &str, image: Option<String>| {
        image.map(|image| AddonWorkload {
            addon: addon.to_string(),
            image,
        })
    };
    let coredns = deployments
        .iter()
        .find(|d| in_kube_system(&d.metadata, DEPLOYMENT_ADDON))
        .and_then(|d| workload(DEPLOYMENT_ADDON, image(d.spec.as_ref().map(|s| &s.template))));
    let daemon_sets = DAEMON_SET_ADDONS.iter().filter_map(|&(addon, name)| {
        let d = daemon_sets.iter().find(|d| in_kube_system(&d.metadata, name))?;
        workload(addon, image(d.spec.as_ref().map(|s| &s.template)))
    });
    coredns.into_iter().chain(daemon_sets).collect()
}

/// Builds an [`Inventory`] from objects already read.
pub fn build(
    version: String,
    nodes: &[Node],
    deployments: &[Deployment],
    hpas: &[HorizontalPodAutoscaler],
    pdbs: &[PodDisruptionBudget],
) -> Inventory {
    let node_infos: Vec<NodeInfo> = nodes
        .iter()
        .map(|n| {
            let group = model::node_group(n);
            NodeInfo {
                name: model::name(&n.metadata).to_string(),
                group: group.map(|(_, g)| g.to_string()),
                group_kind: group.map(|(k, _)| k),
                kubelet_version: model::kubelet_version(n).to_string(),
                ready: model::node_ready(n),
                schedulable: model::node_unschedulable_reason(n).is_none(),
            }
        })
        .collect();
    let mut groups: BTreeMap<(String, GroupKind), NodeGroup> = BTreeMap::new();
    for n in &node_infos {
        let (Some(g), Some(k)) = (&n.group, n.group_kind) else {
            continue;
        };
        let entry = groups.entry((g.clone(), k)).or_insert_with(|| NodeGroup {
            name: g.clone(),
            kind: k,
            nodes: 0,
            ready: 0,
            kubelet_versions: Vec::new(),
        });
        entry.nodes += 1;
        entry.ready += u32::from(n.ready);
        if !entry.kubelet_versions.contains(&n.kubelet_version) {
            entry.kubelet_versions.push(n.kubelet_version.clone());
            entry.kubelet_versions.sort();
        }
    }
    let hpa_of = hpa_targets(hpas);
    let deployments = deployments
        .iter()
        .map(|d| {
            let name = model::key(&d.metadata);
            DeploymentInfo {
                hpa: hpa_of.get(&name).cloned(),
                name,
                replicas: model::deployment_replicas(d),
                available: model::deployment_available(d),
            }
        })
        .collect();
    let blocking_pdbs = pdbs
        .iter()
        .filter_map(|p| {
            let st = p.status.as_ref()?;
            (st.disruptions_allowed == 0 && st.expected_pods > 0).then(|| PdbInfo {
                name: model::key(&p.metadata),
                expected: st.expected_pods,
                healthy: st.current_healthy,
                desired: st.desired_healthy,
            })
        })
        .collect();
    Inventory {
        version,
        node_groups: groups.into_values().collect(),
        nodes: node_infos,
        deployments,
        blocking_pdbs,
        addon_workloads: None,
        deprecated_apis: None,
    }
}

/// `namespace/deployment` → `namespace/hpa` for every HPA that scales a Deployment.
pub fn hpa_targets(hpas: &[HorizontalPodAutoscaler]) -> BTreeMap<String, String> {
    hpas.iter()
        .filter_map(|h| {
            let target = &h.spec.as_ref()?.scale_target_ref;
            (target.kind == "Deployment").then(|| {
                let ns = model::namespace(&h.metadata);
                (format!("{ns}/{}", target.name), model::key(&h.metadata))
            })
        })
        .collect()
}

/// The nodes of a group, or [`StepError::NodeGroupNotFound`] naming the groups that exist.
pub fn group_nodes(nodes: &[Node], group: &str) -> Result<Vec<Node>, StepError> {
    let found: Vec<Node> = nodes
        .iter()
        .filter(|n| model::in_group(n, group))
        .cloned()
        .collect();
    if found.is_empty() {
        return Err(not_found(nodes, group));
    }
    Ok(found)
}

/// The error for a group no node belongs to.
pub fn not_found(nodes: &[Node], group: &str) -> StepError {
    let mut known: Vec<String> = nodes
        .iter()
        .filter_map(model::node_group)
        .map(|(k, g)| format!("{g} ({k})"))
        .collect();
    known.sort();
    known.dedup();
    StepError::NodeGroupNotFound {
        group: group.to_string(),
        labels: format!(
            "{}={group} or {}={group}",
            model::SELF_MANAGED_LABEL,
            model::MANAGED_LABEL
        ),
        known: if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[tokio::test]
    async fn inventory_reports_groups_versions_and_blocking_pdbs() {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 4000, 20);
        fake.add_node("old-2", "ng-old", GroupKind::SelfManaged, 4000, 20);
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 4000, 20);
        fake.add_deployment("shop", "web", 2, 100);
        fake.add_deployment("shop", "cache", 1, 100);
        fake.add_pdb("shop", "cache", "cache", Some(IntOrString::Int(1)), None);
        fake.add_pdb("shop", "web", "web", Some(IntOrString::Int(1)), None);
        fake.add_hpa("shop", "web", 2, 5);
        let inv = collect(&fake).await.expect("inventory");
        assert_eq!(inv.version, "v1.33.4");
        assert_eq!(inv.node_groups.len(), 2);
        let old = inv
            .node_groups
            .iter()
            .find(|g| g.name == "ng-old")
            .expect("ng-old");
        assert_eq!((old.kind, old.nodes, old.ready), (GroupKind::SelfManaged, 2, 2));
        assert_eq!(old.kubelet_versions, vec!["v1.33.4".to_string()]);
        let new = inv
            .node_groups
            .iter()
            .find(|g| g.name == "ng-new")
            .expect("ng-new");
        assert_eq!(new.kind, GroupKind::Managed);
        assert_eq!(
            inv.blocking_pdbs
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            vec!["shop/cache"]
        );
        let web = inv
            .deployments
            .iter()
            .find(|d| d.name == "shop/web")
            .expect("web");
        assert_eq!(
            (web.replicas, web.available, web.hpa.as_deref()),
            (2, 2, Some("shop/web"))
        );
        // Read, and none found: reported as looked for, not as unknown.
        assert_eq!(inv.addon_workloads, Some(vec![]));
    }

    #[test]
    fn addon_workloads_are_the_kube_system_images_by_add_on() {
        use k8s_openapi::api::apps::v1::{DaemonSetSpec, DeploymentSpec};
        use k8s_openapi::api::core::v1::{Container, PodSpec};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let meta = |ns: &str, name: &str| ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        };
        let template = |image: &str| PodTemplateSpec {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let deployment = |ns: &str, name: &str, image: &str| Deployment {
            metadata: meta(ns, name),
            spec: Some(DeploymentSpec {
                template: template(image),
                ..Default::default()
            }),
            ..Default::default()
        };
        let daemon_set = |ns: &str, name: &str, image: &str| DaemonSet {
            metadata: meta(ns, name),
            spec: Some(DaemonSetSpec {
                template: template(image),
                ..Default::default()
            }),
            ..Default::default()
        };
        let found = addon_workloads(
            &[
                deployment("shop", "coredns", "not/this:v0"),
                deployment("kube-system", "coredns", "ecr/eks/coredns:v1.11.4-eksbuild.2"),
            ],
            &[
                daemon_set(
                    "kube-system",
                    "kube-proxy",
                    "ecr/eks/kube-proxy:v1.33.5-minimal-eksbuild.1",
                ),
                daemon_set("kube-system", "other", "x:y"),
            ],
        );
        let pairs: Vec<(&str, &str)> = found
            .iter()
            .map(|w| (w.addon.as_str(), w.image.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("coredns", "ecr/eks/coredns:v1.11.4-eksbuild.2"),
                ("kube-proxy", "ecr/eks/kube-proxy:v1.33.5-minimal-eksbuild.1"),
            ]
        );
    }

    #[test]
    fn a_missing_group_names_the_groups_that_exist() {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 4000, 20);
        let nodes: Vec<Node> = fake.state().nodes.values().cloned().collect();
        let err = group_nodes(&nodes, "ng-nope").unwrap_err().to_string();
        assert!(
            err.contains("ng-nope") && err.contains("ng-old (self-managed)"),
            "{err}"
        );
    }
}
