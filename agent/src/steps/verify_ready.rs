//! `VerifyReady`: every surged Deployment (those carrying the surge annotation) reaches its
//! target available replicas, with the added pods Ready on the new group's nodes. On timeout,
//! each short Deployment is named with why (Pending/unschedulable, not Ready, elsewhere).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use tokio::time::Instant;

use super::{Progress, ProgressSink, Shortfall, StepError, StepKind};
use crate::cluster::Cluster;
use crate::model::{self, Owners};

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The old node group.
    pub from: String,
    /// The new node group, where the added pods must run.
    pub to: String,
    /// How long to wait.
    pub timeout: Duration,
    /// How often to look.
    pub poll: Duration,
}

impl Params {
    /// Verifies the surge from `from` onto `to` within `timeout`, looking every 500 ms.
    pub fn new(from: &str, to: &str, timeout: Duration) -> Params {
        Params {
            from: from.into(),
            to: to.into(),
            timeout,
            poll: Duration::from_millis(500),
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), StepError> {
        if self.from.trim().is_empty() || self.to.trim().is_empty() {
            return Err(StepError::invalid(
                "from/to",
                "empty; name both node groups, e.g. --from ng-old --to ng-new",
            ));
        }
        if self.poll.is_zero() {
            return Err(StepError::invalid("poll", "must be above zero, e.g. 500ms"));
        }
        Ok(())
    }
}

/// One Deployment's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// `namespace/name`.
    pub deployment: String,
    /// Available replicas wanted.
    pub target: i32,
    /// Available replicas.
    pub available: i32,
    /// Ready pods on the new group's nodes.
    pub ready_on_new: i32,
}

/// What the step found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Every surged Deployment.
    pub deployments: Vec<Verified>,
}

/// Checks each surged Deployment (pure): those at target, and the shortfalls with reasons.
pub fn check(
    deployments: &[Deployment],
    pods: &[Pod],
    owners: &Owners,
    old_nodes: &BTreeSet<String>,
    new_nodes: &BTreeSet<String>,
    to: &str,
) -> (Vec<Verified>, Vec<Shortfall>) {
    let mut by_deploy: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in pods.iter().filter(|p| !model::terminating(&p.metadata)) {
        if let Some(d) = owners.deployment_of(p) {
            by_deploy.entry(d).or_default().push(p);
        }
    }
    let mut ok = Vec::new();
    let mut short = Vec::new();
    for d in deployments {
        let Some(target) = model::annotation(&d.metadata, model::SURGE_REPLICAS_ANNOTATION)
            .and_then(|v| v.parse::<i32>().ok())
        else {
            continue;
        };
        let original = model::annotation(&d.metadata, model::ORIGINAL_REPLICAS_ANNOTATION)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        let key = model::key(&d.metadata);
        let mine = by_deploy.get(&key).map(Vec::as_slice).unwrap_or_default();
        let on = |p: &&Pod, set: &BTreeSet<String>| model::pod_node(p).is_some_and(|n| set.contains(n));
        let ready_on_new = mine
            .iter()
            .filter(|p| on(p, new_nodes) && model::pod_ready(p))
            .count() as i32;
        let available = model::deployment_available(d);
        let v = Verified {
            deployment: key.clone(),
            target,
            available,
            ready_on_new,
        };
        let need_new = (target - original).max(0);
        if available >= target && ready_on_new >= need_new {
            ok.push(v);
            continue;
        }
        let pending: Vec<&&Pod> = mine.iter().filter(|p| model::pod_node(p).is_none()).collect();
        let not_ready = mine
            .iter()
            .filter(|p| model::pod_node(p).is_some() && !model::pod_ready(p))
            .count();
        let elsewhere = mine
            .iter()
            .filter(|p| model::pod_node(p).is_some() && !on(p, new_nodes) && !on(p, old_nodes))
            .count();
        let mut why = Vec::new();
        if !pending.is_empty() {
            let msg = pending
                .iter()
                .find_map(|p| model::unschedulable_message(p))
                .unwrap_or("not yet scheduled");
            why.push(format!("{} Pending/unschedulable ({msg})", pending.len()));
        }
        if not_ready > 0 {
            why.push(format!("{not_ready} not Ready"));
        }
        if elsewhere > 0 {
            why.push(format!("{elsewhere} on nodes outside {to}"));
        }
        if ready_on_new < need_new {
            why.push(format!("{ready_on_new} of {need_new} added pods Ready on {to}"));
        }
        if (mine.len() as i32) < target {
            why.push(format!("{} of {target} pods created", mine.len()));
        }
        if why.is_empty() {
            why.push("status not yet updated".into());
        }
        short.push(Shortfall {
            deployment: key,
            want: target,
            available,
            reason: why.join(", "),
        });
    }
    (ok, short)
}

/// Waits until every surged Deployment is at target on the new nodes.
pub async fn run<C: Cluster>(
    cluster: &C,
    p: &Params,
    progress: &dyn ProgressSink,
) -> Result<Output, StepError> {
    let start = Instant::now();
    loop {
        let nodes = cluster.nodes().await?;
        let old: BTreeSet<String> = nodes
            .iter()
            .filter(|n| model::in_group(n, &p.from))
            .map(|n| model::name(&n.metadata).to_string())
            .collect();
        let new: BTreeSet<String> = nodes
            .iter()
            .filter(|n| model::in_group(n, &p.to))
            .map(|n| model::name(&n.metadata).to_string())
            .collect();
        if new.is_empty() {
            return Err(crate::inventory::not_found(&nodes, &p.to));
        }
        let deployments = cluster.deployments().await?;
        let owners = Owners::new(&cluster.replica_sets().await?);
        let pods = cluster.pods(None).await?;
        let (ok, short) = check(&deployments, &pods, &owners, &old, &new, &p.to);
        let total = (ok.len() + short.len()) as u64;
        let msg = match short.first() {
            None => format!("{} of {total} Deployments ready", ok.len()),
            Some(s) => format!("{} of {total} Deployments ready; waiting for {s}", ok.len()),
        };
        progress.report(Progress::new(StepKind::VerifyReady, ok.len() as u64, total, msg));
        if short.is_empty() {
            return Ok(Output { deployments: ok });
        }
        let waited = start.elapsed();
        if waited >= p.timeout {
            return Err(StepError::DeploymentsNotReady { short, waited });
        }
        tokio::time::sleep(p.poll.min(p.timeout - waited)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::GroupKind;
    use crate::steps::{surge_scale, NoProgress};

    fn cluster() -> FakeCluster {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 4000, 20);
        fake.add_deployment("shop", "web", 2, 100);
        fake.add_deployment("shop", "slow", 2, 100);
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 4000, 20);
        crate::cluster::fake::taint_node(&fake, "old-1", model::DEFAULT_TAINT_KEY);
        fake
    }

    #[tokio::test]
    async fn surged_deployments_on_new_nodes_pass() {
        let fake = cluster();
        surge_scale::run(
            &fake,
            &surge_scale::Params::new("ng-old", "ng-new", Default::default()),
            &NoProgress,
        )
        .await
        .expect("surge");
        let out = run(
            &fake,
            &Params::new("ng-old", "ng-new", Duration::from_secs(5)),
            &NoProgress,
        )
        .await
        .expect("verify");
        assert_eq!(out.deployments.len(), 2);
        assert!(out
            .deployments
            .iter()
            .all(|v| v.available == 4 && v.ready_on_new == 2));
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_names_each_short_deployment_and_why() {
        let fake = cluster();
        fake.state().never_ready.insert("shop/slow".into());
        surge_scale::run(
            &fake,
            &surge_scale::Params::new("ng-old", "ng-new", Default::default()),
            &NoProgress,
        )
        .await
        .expect("surge");
        let err = run(
            &fake,
            &Params::new("ng-old", "ng-new", Duration::from_secs(10)),
            &NoProgress,
        )
        .await
        .unwrap_err();
        match err {
            StepError::DeploymentsNotReady { short, .. } => {
                assert_eq!(short.len(), 1);
                assert_eq!(short[0].deployment, "shop/slow");
                assert!(short[0].reason.contains("2 not Ready"), "{}", short[0].reason);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_are_reported_as_pending() {
        let fake = cluster();
        // Cordon the only new node: the surge pods stay Pending.
        crate::cluster::fake::cordon_node(&fake, "new-1");
        let mut p = surge_scale::Params::new("ng-old", "ng-new", Default::default());
        p.always.clear();
        // The capacity check would refuse; annotate and scale by hand as a surge would.
        for d in ["web", "slow"] {
            let mut patch = crate::cluster::DeploymentPatch {
                replicas: Some(4),
                ..Default::default()
            };
            patch
                .annotations
                .insert(model::ORIGINAL_REPLICAS_ANNOTATION.into(), Some("2".into()));
            patch
                .annotations
                .insert(model::SURGE_REPLICAS_ANNOTATION.into(), Some("4".into()));
            crate::cluster::Cluster::patch_deployment(&fake, "shop", d, &patch)
                .await
                .expect("patch");
        }
        let err = run(
            &fake,
            &Params::new("ng-old", "ng-new", Duration::from_secs(3)),
            &NoProgress,
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("shop/web 2/4 available: 2 Pending/unschedulable"),
            "{text}"
        );
    }
}
