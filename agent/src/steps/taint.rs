//! `Taint`: the old group's nodes get a `NoSchedule` taint (key configurable, default
//! `flotilla.io/migrating`) and `node.kubernetes.io/exclude-from-external-load-balancers=true`.
//! Existing pods keep serving. A label Flotilla adds is recorded on the node, so a rollback
//! removes only what Flotilla added.

use k8s_openapi::api::core::v1::{Node, Taint};
use serde::Serialize;

use super::{modify_node, Progress, ProgressSink, StepError, StepKind};
use crate::cluster::{Cluster, ObjectRef};
use crate::{events, inventory, model};

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The old (self-managed) node group.
    pub group: String,
    /// The taint's key.
    pub taint_key: String,
}

impl Params {
    /// Taints `group` with the default key.
    pub fn new(group: &str) -> Params {
        Params {
            group: group.into(),
            taint_key: model::DEFAULT_TAINT_KEY.into(),
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), StepError> {
        if self.group.trim().is_empty() {
            return Err(StepError::invalid(
                "from",
                "empty; name the old node group, e.g. ng-old",
            ));
        }
        validate_taint_key(&self.taint_key)
    }
}

/// Checks a taint key is a Kubernetes qualified name (`[prefix/]name`).
pub fn validate_taint_key(key: &str) -> Result<(), StepError> {
    let bad = |why: &str| {
        StepError::invalid(
            "taint-key",
            format!(
                "`{key}` {why}; use a qualified name such as {}",
                model::DEFAULT_TAINT_KEY
            ),
        )
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(bad(
            "has an invalid name part (1-63 letters, digits, '-', '_', '.'; alphanumeric at both ends)",
        ));
    }
    if let Some(p) = prefix {
        let prefix_ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !prefix_ok {
            return Err(bad("has an invalid prefix (a lower-case DNS subdomain)"));
        }
    }
    Ok(())
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Every node of the group.
    pub nodes: Vec<String>,
    /// Nodes this run changed (empty on a re-run).
    pub changed: Vec<String>,
}

/// Adds the taint and the label where missing; returns whether anything changed.
pub fn apply(node: &mut Node, taint_key: &str) -> bool {
    let mut changed = false;
    let taints = node
        .spec
        .get_or_insert_with(Default::default)
        .taints
        .get_or_insert_with(Vec::new);
    if !taints
        .iter()
        .any(|t| t.key == taint_key && t.effect == "NoSchedule")
    {
        taints.push(Taint {
            key: taint_key.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        changed = true;
    }
    let labels = node.metadata.labels.get_or_insert_with(Default::default);
    if !labels.contains_key(model::EXCLUDE_LB_LABEL) {
        labels.insert(model::EXCLUDE_LB_LABEL.into(), "true".into());
        let annotations = node.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(
            model::ADDED_LABELS_ANNOTATION.into(),
            model::EXCLUDE_LB_LABEL.into(),
        );
        changed = true;
    }
    changed
}

/// Removes the taint and the labels Flotilla added; returns whether anything changed.
pub fn remove(node: &mut Node, taint_key: &str) -> bool {
    let mut changed = false;
    if let Some(taints) = node.spec.as_mut().and_then(|s| s.taints.as_mut()) {
        let before = taints.len();
        taints.retain(|t| !(t.key == taint_key && t.effect == "NoSchedule"));
        changed |= taints.len() != before;
    }
    let added = node
        .metadata
        .annotations
        .as_mut()
        .and_then(|a| a.remove(model::ADDED_LABELS_ANNOTATION));
    if let Some(added) = added {
        changed = true;
        if let Some(labels) = node.metadata.labels.as_mut() {
            for l in added.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                labels.remove(l);
            }
        }
    }
    changed
}

/// Taints and labels every node of the group.
pub async fn run<C: Cluster>(
    cluster: &C,
    p: &Params,
    progress: &dyn ProgressSink,
) -> Result<Output, StepError> {
    let nodes = inventory::group_nodes(&cluster.nodes().await?, &p.group)?;
    let total = nodes.len() as u64;
    let mut changed = Vec::new();
    let mut all = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let name = model::name(&node.metadata).to_string();
        if modify_node(cluster, node, |n| apply(n, &p.taint_key)).await? {
            tracing::info!(node = %name, "tainted");
            let msg = format!(
                "Flotilla migration: taint {}:NoSchedule and label {}=true",
                p.taint_key,
                model::EXCLUDE_LB_LABEL
            );
            events::normal(cluster, ObjectRef::node(node), "FlotillaTainted", msg).await;
            changed.push(name.clone());
        }
        all.push(name);
        progress.report(Progress::new(
            StepKind::Taint,
            i as u64 + 1,
            total,
            format!("{} of {total} nodes tainted", i + 1),
        ));
    }
    Ok(Output { nodes: all, changed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::GroupKind;
    use crate::steps::NoProgress;

    #[tokio::test]
    async fn taints_and_labels_once_and_records_what_it_added() {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 4000, 20);
        fake.add_node("old-2", "ng-old", GroupKind::SelfManaged, 4000, 20);
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 4000, 20);
        // old-2 already carried the load-balancer label: a rollback must leave it.
        fake.state()
            .nodes
            .get_mut("old-2")
            .and_then(|n| n.metadata.labels.as_mut())
            .map(|l| l.insert(model::EXCLUDE_LB_LABEL.into(), "true".into()));
        let out = run(&fake, &Params::new("ng-old"), &NoProgress)
            .await
            .expect("taint");
        assert_eq!(out.changed, vec!["old-1".to_string(), "old-2".to_string()]);
        let again = run(&fake, &Params::new("ng-old"), &NoProgress)
            .await
            .expect("taint again");
        assert!(again.changed.is_empty(), "re-run changes nothing");
        let st = fake.state();
        for name in ["old-1", "old-2"] {
            let n = &st.nodes[name];
            let taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
            assert_eq!(
                taints
                    .iter()
                    .filter(|t| t.key == model::DEFAULT_TAINT_KEY && t.effect == "NoSchedule")
                    .count(),
                1
            );
            assert_eq!(model::label(&n.metadata, model::EXCLUDE_LB_LABEL), Some("true"));
        }
        assert_eq!(
            model::annotation(&st.nodes["old-1"].metadata, model::ADDED_LABELS_ANNOTATION),
            Some(model::EXCLUDE_LB_LABEL)
        );
        assert_eq!(
            model::annotation(&st.nodes["old-2"].metadata, model::ADDED_LABELS_ANNOTATION),
            None
        );
        assert!(st.nodes["new-1"]
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none());
        assert_eq!(
            st.events.iter().filter(|e| e.reason == "FlotillaTainted").count(),
            2
        );
    }

    #[test]
    fn remove_undoes_only_what_apply_added() {
        let mut node = Node::default();
        node.metadata.labels = Some([("keep".to_string(), "1".to_string())].into_iter().collect());
        assert!(apply(&mut node, "flotilla.io/migrating"));
        assert!(!apply(&mut node, "flotilla.io/migrating"));
        assert!(remove(&mut node, "flotilla.io/migrating"));
        assert!(!remove(&mut node, "flotilla.io/migrating"));
        assert_eq!(node.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        assert!(node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.is_empty()));
    }

    #[test]
    fn taint_keys_are_checked() {
        assert!(validate_taint_key("flotilla.io/migrating").is_ok());
        assert!(validate_taint_key("migrating").is_ok());
        let err = validate_taint_key("Bad_Prefix/x").unwrap_err().to_string();
        assert!(err.contains("taint-key") && err.contains("prefix"), "{err}");
        assert!(validate_taint_key("a/-x").is_err());
        assert!(validate_taint_key("").is_err());
    }

    #[tokio::test]
    async fn a_missing_group_is_an_error_before_any_change() {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 4000, 20);
        let err = run(&fake, &Params::new("ng-typo"), &NoProgress)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "NODE_GROUP_NOT_FOUND");
        assert_eq!(fake.state().writes, 0);
    }
}
