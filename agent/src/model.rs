//! Pure views over k8s-openapi objects that every step shares: node groups, readiness, ownership,
//! label selectors, resource quantities and the annotations in which steps remember their work.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use serde::Serialize;

/// Label eksctl puts on the nodes of a self-managed node group.
pub const SELF_MANAGED_LABEL: &str = "alpha.eksctl.io/nodegroup-name";
/// Label EKS puts on the nodes of a managed node group.
pub const MANAGED_LABEL: &str = "eks.amazonaws.com/nodegroup";
/// Label that takes a node out of external load balancers while it is being migrated.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Default key of the `NoSchedule` taint put on old nodes.
pub const DEFAULT_TAINT_KEY: &str = "flotilla.io/migrating";

/// Annotation on a node: the labels Flotilla added (comma separated), so a rollback removes only those.
pub const ADDED_LABELS_ANNOTATION: &str = "flotilla.io/added-labels";
/// Annotation on a node: Flotilla cordoned it (a rollback uncordons only such nodes).
pub const CORDONED_ANNOTATION: &str = "flotilla.io/cordoned";
/// Annotation on a Deployment: its replica count before the surge.
pub const ORIGINAL_REPLICAS_ANNOTATION: &str = "flotilla.io/original-replicas";
/// Annotation on a Deployment: the replica count the surge aims at.
pub const SURGE_REPLICAS_ANNOTATION: &str = "flotilla.io/surge-replicas";
/// Annotation on a HorizontalPodAutoscaler: its `minReplicas` before the surge.
pub const ORIGINAL_MIN_REPLICAS_ANNOTATION: &str = "flotilla.io/original-min-replicas";
/// Annotation on a HorizontalPodAutoscaler: its `maxReplicas` before the surge.
pub const ORIGINAL_MAX_REPLICAS_ANNOTATION: &str = "flotilla.io/original-max-replicas";
/// Annotation kubelets put on mirror (static) pods.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Whether a node group is run by EKS or by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupKind {
    /// Nodes labelled `alpha.eksctl.io/nodegroup-name`.
    SelfManaged,
    /// Nodes labelled `eks.amazonaws.com/nodegroup`.
    Managed,
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupKind::SelfManaged => "self-managed",
            GroupKind::Managed => "managed",
        })
    }
}

/// `namespace/name`, the way kubectl names namespaced objects.
pub fn key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The object's name, or `""`.
pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// The object's namespace, or `""`.
pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// One annotation's value.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// One label's value.
pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

/// The node group a node belongs to, by the labels EKS and eksctl set (managed wins if both).
pub fn node_group(node: &Node) -> Option<(GroupKind, &str)> {
    if let Some(g) = label(&node.metadata, MANAGED_LABEL) {
        return Some((GroupKind::Managed, g));
    }
    label(&node.metadata, SELF_MANAGED_LABEL).map(|g| (GroupKind::SelfManaged, g))
}

/// Whether the node is in the named group (managed or self-managed).
pub fn in_group(node: &Node, group: &str) -> bool {
    node_group(node).is_some_and(|(_, g)| g == group)
}

/// The node's `Ready` condition is `True`.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a taint is one the node's own state puts (`node.kubernetes.io/not-ready`,
/// `…/unreachable`, `…/unschedulable`, the pressure taints,
/// `node.cloudprovider.kubernetes.io/uninitialized`), as opposed to one its group was given on
/// purpose, which the pods' tolerations decide about (see [`crate::placement`]).
pub fn condition_taint(key: &str) -> bool {
    key.starts_with("node.kubernetes.io/") || key.starts_with("node.cloudprovider.kubernetes.io/")
}

/// Why a node cannot take new pods, or `None` if it can: not Ready, cordoned, or a `NoSchedule`
/// or `NoExecute` taint of the node's own state ([`condition_taint`]). Taints a node group is
/// given on purpose do not make its nodes unschedulable; which pods tolerate them is
/// [`crate::placement`]'s question.
pub fn node_unschedulable_reason(node: &Node) -> Option<String> {
    if !node_ready(node) {
        return Some("not Ready".into());
    }
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return Some("cordoned".into());
    }
    let taints = spec.and_then(|s| s.taints.as_ref()).into_iter().flatten();
    let hard: Vec<String> = taints
        .filter(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && condition_taint(&t.key))
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    if hard.is_empty() {
        None
    } else {
        Some(format!("tainted {}", hard.join(", ")))
    }
}

/// The kubelet version a node reports (`v1.33.4`), or `""`.
pub fn kubelet_version(node: &Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.as_str())
        .unwrap_or_default()
}

/// `major.minor` of a version string such as `v1.33.4-eks-1234` or `1.33`.
pub fn minor_of(version: &str) -> Option<String> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor_digits: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    let minor: u32 = minor_digits.parse().ok()?;
    Some(format!("{major}.{minor}"))
}

/// The pod's node, if bound.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// The pod is being deleted.
pub fn terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// The pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's phase (`Pending` if unknown).
pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The pod has finished (`Succeeded` or `Failed`).
pub fn pod_finished(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// The scheduler's `PodScheduled=False` message, if the pod could not be placed.
pub fn unschedulable_message(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .map(|c| {
                    c.message
                        .as_deref()
                        .or(c.reason.as_deref())
                        .unwrap_or("Unschedulable")
                })
        })
}

/// The owner reference marked `controller: true`.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|o| o.controller == Some(true)))
}

/// Maps pods to the Deployment that owns them (pod → ReplicaSet → Deployment), by owner references.
#[derive(Debug, Default, Clone)]
pub struct Owners {
    /// `namespace/replicaset` → Deployment name.
    rs_to_deploy: BTreeMap<String, String>,
}

impl Owners {
    /// Builds the index from the cluster's ReplicaSets.
    pub fn new(replica_sets: &[ReplicaSet]) -> Owners {
        let rs_to_deploy = replica_sets
            .iter()
            .filter_map(|rs| {
                let owner = controller_of(&rs.metadata).filter(|o| o.kind == "Deployment")?;
                Some((key(&rs.metadata), owner.name.clone()))
            })
            .collect();
        Owners { rs_to_deploy }
    }

    /// `namespace/deployment` owning the pod, if any.
    pub fn deployment_of(&self, pod: &Pod) -> Option<String> {
        let owner = controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet")?;
        let ns = namespace(&pod.metadata);
        self.rs_to_deploy
            .get(&format!("{ns}/{}", owner.name))
            .map(|d| format!("{ns}/{d}"))
    }
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions; an empty selector
/// matches everything).
pub fn selector_matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|g| values.contains(g)),
            "NotIn" => got.is_none_or(|g| !values.contains(g)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// The Deployment's desired replicas (`spec.replicas`, default 1).
pub fn deployment_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The Deployment's available replicas from its status.
pub fn deployment_available(d: &Deployment) -> i32 {
    d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// CPU (millicores), memory (bytes) and pod slots: what the capacity check adds up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Millicores.
    pub cpu_millis: i64,
    /// Bytes.
    pub memory_bytes: i64,
    /// Pod count.
    pub pods: i64,
}

impl Resources {
    /// Whether `self` fits into `free` in every dimension.
    pub fn fits(&self, free: &Resources) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_bytes <= free.memory_bytes && self.pods <= free.pods
    }

    /// Component-wise sum.
    pub fn plus(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_bytes: self.memory_bytes + o.memory_bytes,
            pods: self.pods + o.pods,
        }
    }

    /// Negative components raised to zero (a node over-committed has nothing free).
    pub fn max_zero(&self) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.max(0),
            memory_bytes: self.memory_bytes.max(0),
            pods: self.pods.max(0),
        }
    }

    /// Component-wise difference.
    pub fn minus(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis - o.cpu_millis,
            memory_bytes: self.memory_bytes - o.memory_bytes,
            pods: self.pods - o.pods,
        }
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpu {}m, memory {}Mi, {} pods",
            self.cpu_millis,
            self.memory_bytes / (1024 * 1024),
            self.pods
        )
    }
}

/// Parses a Kubernetes quantity into an integer in `scale` units: `scale = 1000` gives millis
/// (`"250m"` → 250, `"2"` → 2000), `scale = 1` gives whole units (`"1Gi"` → 1073741824).
pub fn parse_quantity(q: &str, scale: i64) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let value: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some((value * mult * scale as f64).ceil() as i64)
}

/// Allocatable resources of a node.
pub fn node_allocatable(node: &Node) -> Resources {
    let alloc = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let get = |k: &str, scale: i64| {
        alloc
            .and_then(|a| a.get(k))
            .and_then(|q| parse_quantity(&q.0, scale))
    };
    Resources {
        cpu_millis: get("cpu", 1000).unwrap_or(0),
        memory_bytes: get("memory", 1).unwrap_or(0),
        pods: get("pods", 1).unwrap_or(110),
    }
}

/// Requests of one pod spec (sum over containers; init containers by their maximum), one pod slot.
pub fn pod_requests(spec: &k8s_openapi::api::core::v1::PodSpec) -> Resources {
    let req = |c: &k8s_openapi::api::core::v1::Container, k: &str, scale: i64| {
        c.resources
            .as_ref()
            .and_then(|r| {
                r.requests
                    .as_ref()
                    .and_then(|m| m.get(k))
                    .or(r.limits.as_ref().and_then(|m| m.get(k)))
            })
            .and_then(|q| parse_quantity(&q.0, scale))
            .unwrap_or(0)
    };
    let mut cpu: i64 = spec.containers.iter().map(|c| req(c, "cpu", 1000)).sum();
    let mut mem: i64 = spec.containers.iter().map(|c| req(c, "memory", 1)).sum();
    for c in spec.init_containers.iter().flatten() {
        cpu = cpu.max(req(c, "cpu", 1000));
        mem = mem.max(req(c, "memory", 1));
    }
    Resources {
        cpu_millis: cpu,
        memory_bytes: mem,
        pods: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("250m", 1000), Some(250));
        assert_eq!(parse_quantity("2", 1000), Some(2000));
        assert_eq!(parse_quantity("1.5", 1000), Some(1500));
        assert_eq!(parse_quantity("1Gi", 1), Some(1 << 30));
        assert_eq!(parse_quantity("128Mi", 1), Some(128 << 20));
        assert_eq!(parse_quantity("1G", 1), Some(1_000_000_000));
        assert_eq!(parse_quantity("1e3", 1), Some(1000));
        assert_eq!(parse_quantity("110", 1), Some(110));
        assert_eq!(parse_quantity("12x", 1), None);
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["front".into(), "edge".into()]),
            }]),
        };
        assert!(selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "edge")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "back")]))
        ));
        assert!(!selector_matches(&sel, Some(&labels(&[("tier", "front")]))));
        assert!(selector_matches(&LabelSelector::default(), None));
        let not_exists = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "canary".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&not_exists, Some(&labels(&[("app", "web")]))));
        assert!(!selector_matches(&not_exists, Some(&labels(&[("canary", "1")]))));
    }

    #[test]
    fn minors_come_from_any_version_spelling() {
        assert_eq!(minor_of("v1.33.4-eks-1234").as_deref(), Some("1.33"));
        assert_eq!(minor_of("1.34").as_deref(), Some("1.34"));
        assert_eq!(minor_of("v1.35+"), Some("1.35".into()));
        assert_eq!(minor_of("garbage"), None);
    }
}
