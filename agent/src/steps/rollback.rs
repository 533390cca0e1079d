//! `Rollback`, for an abort before the drain ends: the old nodes are untainted, the labels
//! Flotilla added removed, the nodes Flotilla cordoned uncordoned, and the scale restored.

use serde::Serialize;

use super::{modify_node, restore_scale, taint, Progress, ProgressSink, StepError, StepKind};
use crate::cluster::{Cluster, ObjectRef};
use crate::{events, inventory, model};

/// Parameters: the old node group and the taint key the migration used — the same as `Taint`'s,
/// since a rollback undoes exactly what that step did.
pub use super::taint::Params;

/// What the step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Nodes this run changed.
    pub nodes: Vec<String>,
    /// The scale restored.
    pub restored: restore_scale::Output,
}

/// Uncordons a node Flotilla cordoned; returns whether it changed.
pub fn uncordon(node: &mut k8s_openapi::api::core::v1::Node) -> bool {
    let ours = node
        .metadata
        .annotations
        .as_mut()
        .and_then(|a| a.remove(model::CORDONED_ANNOTATION))
        .is_some();
    if ours {
        if let Some(spec) = node.spec.as_mut() {
            spec.unschedulable = None;
        }
    }
    ours
}

/// Undoes taint, cordon and surge.
pub async fn run<C: Cluster>(
    cluster: &C,
    p: &Params,
    progress: &dyn ProgressSink,
) -> Result<Output, StepError> {
    let nodes = inventory::group_nodes(&cluster.nodes().await?, &p.group)?;
    let total = nodes.len() as u64;
    let mut changed = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let key = p.taint_key.clone();
        let wrote = modify_node(cluster, node, move |n| {
            let a = taint::remove(n, &key);
            let b = uncordon(n);
            a || b
        })
        .await?;
        if wrote {
            let name = model::name(&node.metadata).to_string();
            tracing::info!(node = %name, "rolled back");
            events::normal(
                cluster,
                ObjectRef::node(node),
                "FlotillaRolledBack",
                "Flotilla migration rolled back: taint, label and cordon removed",
            )
            .await;
            changed.push(name);
        }
        progress.report(Progress::new(
            StepKind::Rollback,
            i as u64 + 1,
            total,
            format!("{} of {total} nodes rolled back", i + 1),
        ));
    }
    let restored = restore_scale::run(cluster, &restore_scale::Params::default(), progress).await?;
    Ok(Output {
        nodes: changed,
        restored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::GroupKind;
    use crate::steps::{drain, surge_scale, NoProgress};

    #[tokio::test]
    async fn undoes_taint_label_cordon_and_surge() {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 8000, 30);
        fake.add_node("old-2", "ng-old", GroupKind::SelfManaged, 8000, 30);
        fake.add_deployment("shop", "web", 2, 100);
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 8000, 30);
        // old-2 was cordoned by someone else before the migration: it stays cordoned.
        crate::cluster::fake::cordon_node(&fake, "old-2");
        let before: Vec<_> = fake
            .state()
            .nodes
            .values()
            .map(|n| (n.metadata.labels.clone(), n.metadata.annotations.clone()))
            .collect();
        taint::run(&fake, &taint::Params::new("ng-old"), &NoProgress)
            .await
            .expect("taint");
        surge_scale::run(
            &fake,
            &surge_scale::Params::new("ng-old", "ng-new", Default::default()),
            &NoProgress,
        )
        .await
        .expect("surge");
        let n = fake.state().nodes["old-1"].clone();
        modify_node(&fake, &n, drain::cordon).await.expect("cordon");
        let out = run(&fake, &Params::new("ng-old"), &NoProgress)
            .await
            .expect("rollback");
        assert_eq!(out.nodes, vec!["old-1".to_string(), "old-2".to_string()]);
        assert_eq!(out.restored.deployments.len(), 1);
        let st = fake.state();
        let after: Vec<_> = st
            .nodes
            .values()
            .map(|n| {
                (
                    n.metadata.labels.clone(),
                    n.metadata.annotations.clone().filter(|a| !a.is_empty()),
                )
            })
            .collect();
        assert_eq!(before, after);
        assert_eq!(
            st.nodes["old-1"].spec.as_ref().and_then(|s| s.unschedulable),
            None
        );
        assert_eq!(
            st.nodes["old-2"].spec.as_ref().and_then(|s| s.unschedulable),
            Some(true)
        );
        assert!(st.nodes.values().all(|n| n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none_or(|t| t.is_empty())));
        assert_eq!(model::deployment_replicas(&st.deployments["shop/web"]), 2);
    }
}
