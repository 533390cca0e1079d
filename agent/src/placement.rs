//! Where a pod may run, as the scheduler's filters decide it before counting resources: the node
//! is Ready and not cordoned, the pod tolerates every `NoSchedule`/`NoExecute` taint, its
//! `nodeSelector` matches the node's labels, and its required node affinity matches (pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelector, NodeSelectorRequirement, PodSpec, Taint, Toleration};

use crate::model;

/// What a pod asks of its node (from a pod spec or a Deployment's template).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// `spec.nodeSelector`: labels the node must carry.
    pub node_selector: BTreeMap<String, String>,
    /// `spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required: Option<NodeSelector>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
}

impl Placement {
    /// What `spec` asks of its node.
    pub fn of(spec: &PodSpec) -> Placement {
        Placement {
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required: spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone()),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
        }
    }

    /// Why the pod cannot be placed on `node` (resources aside), or `None` if it can.
    pub fn refusal(&self, node: &Node) -> Option<String> {
        if !model::node_ready(node) {
            return Some("not Ready".into());
        }
        let spec = node.spec.as_ref();
        if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
            return Some("cordoned".into());
        }
        let taints = spec.and_then(|s| s.taints.as_deref()).unwrap_or_default();
        if let Some(t) = taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|t| !tolerates(&self.tolerations, t))
        {
            return Some(format!("taint {} not tolerated", taint_text(t)));
        }
        let labels = node.metadata.labels.as_ref();
        if let Some((k, v)) = self
            .node_selector
            .iter()
            .find(|(k, v)| labels.and_then(|l| l.get(*k)) != Some(*v))
        {
            return Some(format!("nodeSelector {k}={v} not matched"));
        }
        if let Some(required) = &self.required {
            if !required.node_selector_terms.iter().any(|t| {
                let exprs = t.match_expressions.as_deref().unwrap_or_default();
                let fields = t.match_fields.as_deref().unwrap_or_default();
                // An empty term matches no node.
                (!exprs.is_empty() || !fields.is_empty())
                    && exprs.iter().all(|r| label_requirement(r, node))
                    && fields.iter().all(|r| field_requirement(r, node))
            }) {
                return Some(format!(
                    "required node affinity ({}) not matched",
                    affinity_text(required)
                ));
            }
        }
        None
    }
}

/// `key=value:Effect`, as kubectl prints a taint.
pub fn taint_text(t: &Taint) -> String {
    match t.value.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => format!("{}={v}:{}", t.key, t.effect),
        None => format!("{}:{}", t.key, t.effect),
    }
}

/// Whether any of `tolerations` tolerates `taint` (`ToleratesTaint`): same effect or none given;
/// `Exists` with the same key or no key at all; `Equal` (the default) with key and value equal.
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect = t.effect.as_deref().unwrap_or_default();
        if !effect.is_empty() && effect != taint.effect {
            return false;
        }
        let key = t.key.as_deref().unwrap_or_default();
        match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => key.is_empty() || key == taint.key,
            "Equal" | "" => {
                key == taint.key
                    && t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
            }
            _ => false,
        }
    })
}

/// One `matchExpressions` requirement against the node's labels.
fn label_requirement(r: &NodeSelectorRequirement, node: &Node) -> bool {
    let got = model::label(&node.metadata, &r.key);
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.trim().parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => got.is_some_and(|g| values.iter().any(|v| v == g)),
        "NotIn" => got.is_none_or(|g| !values.iter().any(|v| v == g)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        "Gt" => {
            matches!((got.and_then(number), values.first().and_then(|v| number(v))), (Some(g), Some(v)) if g > v)
        }
        "Lt" => {
            matches!((got.and_then(number), values.first().and_then(|v| number(v))), (Some(g), Some(v)) if g < v)
        }
        _ => false,
    }
}

/// One `matchFields` requirement (only `metadata.name` exists, with `In` and `NotIn`).
fn field_requirement(r: &NodeSelectorRequirement, node: &Node) -> bool {
    if r.key != "metadata.name" {
        return false;
    }
    let name = model::name(&node.metadata);
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => values.iter().any(|v| v == name),
        "NotIn" => !values.iter().any(|v| v == name),
        _ => false,
    }
}

/// The terms of a required node affinity, short: `zone In (a, b) or disktype Exists`.
fn affinity_text(s: &NodeSelector) -> String {
    let req = |r: &NodeSelectorRequirement| {
        let values = r.values.as_deref().unwrap_or_default();
        if values.is_empty() {
            format!("{} {}", r.key, r.operator)
        } else {
            format!("{} {} ({})", r.key, r.operator, values.join(", "))
        }
    };
    s.node_selector_terms
        .iter()
        .map(|t| {
            t.match_expressions
                .iter()
                .flatten()
                .chain(t.match_fields.iter().flatten())
                .map(req)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeCondition, NodeSelectorTerm, NodeSpec, NodeStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn toleration(key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some(op.into()),
            value: value.map(str::to_string),
            effect: effect.map(str::to_string),
            ..Default::default()
        }
    }

    fn requirement(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn tolerations_match_as_the_scheduler_matches_them() {
        let gpu = taint("nvidia.com/gpu", Some("true"), "NoSchedule");
        assert!(tolerates(
            &[toleration(Some("nvidia.com/gpu"), "Exists", None, None)],
            &gpu
        ));
        assert!(tolerates(&[toleration(None, "Exists", None, None)], &gpu));
        assert!(tolerates(
            &[toleration(
                Some("nvidia.com/gpu"),
                "Equal",
                Some("true"),
                Some("NoSchedule")
            )],
            &gpu
        ));
        assert!(!tolerates(
            &[toleration(Some("nvidia.com/gpu"), "Equal", Some("false"), None)],
            &gpu
        ));
        assert!(!tolerates(
            &[toleration(
                Some("nvidia.com/gpu"),
                "Exists",
                None,
                Some("NoExecute")
            )],
            &gpu
        ));
        assert!(!tolerates(&[], &gpu));
    }

    #[test]
    fn refusals_name_the_filter_that_refuses() {
        let n = node(
            "ip-10-0-1-1",
            &[
                ("kubernetes.io/arch", "amd64"),
                ("topology.kubernetes.io/zone", "us-west-2a"),
            ],
            vec![
                taint("dedicated", Some("batch"), "NoSchedule"),
                taint("soft", None, "PreferNoSchedule"),
            ],
        );
        let mut p = Placement::default();
        assert_eq!(
            p.refusal(&n).as_deref(),
            Some("taint dedicated=batch:NoSchedule not tolerated")
        );
        p.tolerations = vec![toleration(Some("dedicated"), "Equal", Some("batch"), None)];
        assert_eq!(p.refusal(&n), None, "PreferNoSchedule does not filter");
        p.node_selector = [("kubernetes.io/arch".to_string(), "arm64".to_string())].into();
        assert_eq!(
            p.refusal(&n).as_deref(),
            Some("nodeSelector kubernetes.io/arch=arm64 not matched")
        );
        p.node_selector = [("kubernetes.io/arch".to_string(), "amd64".to_string())].into();
        assert_eq!(p.refusal(&n), None);
        p.required = Some(NodeSelector {
            node_selector_terms: vec![
                NodeSelectorTerm {
                    match_expressions: Some(vec![requirement(
                        "topology.kubernetes.io/zone",
                        "In",
                        &["us-west-2b", "us-west-2c"],
                    )]),
                    match_fields: None,
                },
                NodeSelectorTerm {
                    match_expressions: Some(vec![requirement("disktype", "Exists", &[])]),
                    match_fields: None,
                },
            ],
        });
        assert_eq!(
            p.refusal(&n).as_deref(),
            Some(
                "required node affinity (topology.kubernetes.io/zone In (us-west-2b, us-west-2c) or disktype Exists) not matched"
            )
        );
        // Either term suffices; matchFields match the node's name.
        p.required = Some(NodeSelector {
            node_selector_terms: vec![
                NodeSelectorTerm::default(),
                NodeSelectorTerm {
                    match_expressions: None,
                    match_fields: Some(vec![requirement("metadata.name", "In", &["ip-10-0-1-1"])]),
                },
            ],
        });
        assert_eq!(p.refusal(&n), None);
        let mut cordoned = n.clone();
        cordoned.spec.as_mut().expect("spec").unschedulable = Some(true);
        assert_eq!(p.refusal(&cordoned).as_deref(), Some("cordoned"));
    }

    #[test]
    fn numeric_and_negative_operators_follow_the_api() {
        let n = node("n", &[("cpus", "16"), ("tier", "gold")], Vec::new());
        assert!(label_requirement(&requirement("cpus", "Gt", &["8"]), &n));
        assert!(!label_requirement(&requirement("cpus", "Lt", &["8"]), &n));
        assert!(label_requirement(&requirement("tier", "NotIn", &["silver"]), &n));
        assert!(label_requirement(&requirement("absent", "NotIn", &["x"]), &n));
        assert!(label_requirement(&requirement("absent", "DoesNotExist", &[]), &n));
        assert!(!label_requirement(&requirement("tier", "Gt", &["1"]), &n));
        let spec = PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm::default()],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            Placement::of(&spec).refusal(&n).is_some(),
            "an empty term matches no node"
        );
    }
}
