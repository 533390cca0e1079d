//! `WaitNodesReady`: the target group's nodes are Ready and schedulable — at least `count` of
//! them — within the timeout. Reads only, so it is trivially idempotent.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{NodeIssue, Progress, ProgressSink, StepError, StepKind};
use crate::cluster::Cluster;
use crate::model;

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The node group (managed or self-managed) to wait for.
    pub group: String,
    /// How many of its nodes must be Ready and schedulable.
    pub count: u32,
    /// How long to wait.
    pub timeout: Duration,
    /// How often to look.
    pub poll: Duration,
}

impl Params {
    /// Waits for `count` nodes of `group` for up to `timeout`, looking every second.
    pub fn new(group: &str, count: u32, timeout: Duration) -> Params {
        Params {
            group: group.to_string(),
            count,
            timeout,
            poll: Duration::from_secs(1),
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), StepError> {
        if self.group.trim().is_empty() {
            return Err(StepError::invalid(
                "group",
                "empty; name the node group to wait for, e.g. ng-new",
            ));
        }
        if self.count == 0 {
            return Err(StepError::invalid("count", "must be at least 1 node"));
        }
        if self.poll.is_zero() {
            return Err(StepError::invalid("poll", "must be above zero, e.g. 1s"));
        }
        Ok(())
    }
}

/// What the step found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The group.
    pub group: String,
    /// Its Ready and schedulable nodes.
    pub ready: Vec<String>,
}

/// Waits until the group has `count` Ready and schedulable nodes.
pub async fn run<C: Cluster>(
    cluster: &C,
    p: &Params,
    progress: &dyn ProgressSink,
) -> Result<Output, StepError> {
    let start = Instant::now();
    loop {
        let nodes = cluster.nodes().await?;
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for n in nodes.iter().filter(|n| model::in_group(n, &p.group)) {
            let name = model::name(&n.metadata).to_string();
            match model::node_unschedulable_reason(n) {
                None => ready.push(name),
                Some(reason) => not_ready.push(NodeIssue { node: name, reason }),
            }
        }
        let msg = format!(
            "{} of {} nodes of {} Ready and schedulable",
            ready.len(),
            p.count,
            p.group
        );
        progress.report(Progress::new(
            StepKind::WaitNodesReady,
            ready.len().min(p.count as usize) as u64,
            u64::from(p.count),
            msg,
        ));
        if ready.len() >= p.count as usize {
            tracing::info!(group = %p.group, ready = ready.len(), "nodes ready");
            return Ok(Output {
                group: p.group.clone(),
                ready,
            });
        }
        let waited = start.elapsed();
        if waited >= p.timeout {
            return Err(StepError::NodesNotReady {
                group: p.group.clone(),
                want: p.count,
                ready: ready.len() as u32,
                not_ready,
                waited,
            });
        }
        tokio::time::sleep(p.poll.min(p.timeout - waited)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::GroupKind;
    use crate::steps::NoProgress;

    #[tokio::test]
    async fn ready_nodes_pass() {
        let fake = FakeCluster::new();
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 4000, 20);
        fake.add_node("new-2", "ng-new", GroupKind::Managed, 4000, 20);
        let out = run(
            &fake,
            &Params::new("ng-new", 2, Duration::from_secs(5)),
            &NoProgress,
        )
        .await
        .expect("ready");
        assert_eq!(out.ready, vec!["new-1".to_string(), "new-2".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cordoned_node_times_out_with_its_reason() {
        let fake = FakeCluster::new();
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 4000, 20);
        fake.add_node("new-2", "ng-new", GroupKind::Managed, 4000, 20);
        crate::cluster::fake::cordon_node(&fake, "new-2");
        let err = run(
            &fake,
            &Params::new("ng-new", 2, Duration::from_secs(30)),
            &NoProgress,
        )
        .await
        .unwrap_err();
        match err {
            StepError::NodesNotReady {
                ready,
                not_ready,
                waited,
                ..
            } => {
                assert_eq!(ready, 1);
                assert_eq!(
                    not_ready,
                    vec![NodeIssue {
                        node: "new-2".into(),
                        reason: "cordoned".into()
                    }]
                );
                assert!(waited >= Duration::from_secs(30));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_taint_is_not_a_reason_to_wait_but_a_node_condition_taint_is() {
        let fake = FakeCluster::new();
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 4000, 20);
        fake.add_node("new-2", "ng-new", GroupKind::Managed, 4000, 20);
        // The group is dedicated on purpose: its pods' tolerations decide, not this step.
        crate::cluster::fake::taint_node(&fake, "new-1", "dedicated");
        // new-2's kubelet has not initialised it yet.
        crate::cluster::fake::taint_node(&fake, "new-2", "node.cloudprovider.kubernetes.io/uninitialized");
        let err = run(
            &fake,
            &Params::new("ng-new", 2, Duration::from_secs(5)),
            &NoProgress,
        )
        .await
        .unwrap_err();
        let StepError::NodesNotReady { ready, not_ready, .. } = err else {
            panic!("unexpected {err:?}")
        };
        assert_eq!(ready, 1);
        assert_eq!(
            not_ready,
            vec![NodeIssue {
                node: "new-2".into(),
                reason: "tainted node.cloudprovider.kubernetes.io/uninitialized:NoSchedule".into()
            }]
        );
    }

    #[test]
    fn zero_count_is_refused() {
        let err = Params::new("ng-new", 0, Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert_eq!(err.code(), "INVALID_PARAMETER");
        assert!(err.to_string().contains("count"));
    }
}
