//! What the end-to-end tests share: the node group template, the cluster's state before a
//! migration, the checks that a migration ended as it should (EKS, Auto Scaling, Kubernetes and the
//! simulator's availability statistics), and the operation's steps and event log over gRPC.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::fleet_client::FleetClient;
use flotilla_tests::sim::Sim;
use flotilla_tests::world::World;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;
use tonic::transport::Channel;

/// The cluster every test migrates.
pub const CLUSTER: &str = "sim-1";
/// The self-managed group of the default scenario.
pub const OLD_GROUP: &str = "ng-old";
/// The managed group the template creates.
pub const NEW_GROUP: &str = "ng-new";
/// Node label of self-managed (eksctl) groups.
pub const SELF_MANAGED_LABEL: &str = "alpha.eksctl.io/nodegroup-name";
/// Node label of EKS managed groups.
pub const MANAGED_LABEL: &str = "eks.amazonaws.com/nodegroup";

/// The forward steps of a migration, in order.
pub const MIGRATION_STEPS: [&str; 8] = [
    "CreateManagedNodegroup",
    "WaitNodesReady",
    "Taint",
    "SurgeScale",
    "VerifyReady",
    "Drain",
    "RemoveSelfManagedNodegroup",
    "RestoreScale",
];

/// Writes the managed node group template (EKS CreateNodegroup field names) into `dir`.
pub fn write_template(dir: &Path) -> PathBuf {
    let path = dir.join("ng-new.yaml");
    std::fs::write(
        &path,
        format!(
            "# The managed group replacing ng-old.\nnodegroupName: {NEW_GROUP}\ninstanceTypes: [m5.xlarge]\n\
             scalingConfig:\n  minSize: 4\n  maxSize: 8\n  desiredSize: 4\n\
             nodeRole: arn:aws:iam::111122223333:role/eks-node\nlabels:\n  team: platform\n"
        ),
    )
    .expect("write the template");
    path
}

/// `flotilla migrate` arguments for the default scenario (its standalone pod needs `--force`,
/// its `worker` Deployment `--delete-emptydir-data`).
pub fn migrate_args<'a>(template: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "migrate",
        CLUSTER,
        "--from",
        OLD_GROUP,
        "--nodegroup-template",
        template,
        "--force",
        "--delete-emptydir-data",
        "--drain-concurrency",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

/// Starts the default scenario's migration (`flotilla migrate -o json`, not waiting for it) and
/// returns its operation id.
pub async fn start_migration(world: &World) -> String {
    let template = write_template(world.dir());
    let run = world
        .cli
        .run(&migrate_args(template.to_str().expect("utf-8"), &["-o", "json"]))
        .await
        .expect("flotilla migrate");
    assert_eq!(run.code, Some(0), "{run}");
    let id = text(&run.json().expect("json"), "/id").to_string();
    assert!(!id.is_empty(), "{run}");
    id
}

/// `flotilla rollout create -f SPEC -o json`, checked; the rollout's id.
pub async fn create_rollout(world: &World, spec: &Path) -> String {
    let run = world
        .cli
        .run(&[
            "rollout",
            "create",
            "-f",
            spec.to_str().expect("utf-8 path"),
            "-o",
            "json",
        ])
        .await
        .expect("flotilla rollout create");
    assert_eq!(run.code, Some(0), "{run}");
    let id = text(&run.json().expect("json"), "/id").to_string();
    assert!(id.starts_with("ro-"), "{run}");
    id
}

/// The cluster before the migration.
#[derive(Debug, Clone)]
pub struct Before {
    /// The cluster.
    pub cluster: String,
    /// `namespace/name` → `spec.replicas`.
    pub replicas: BTreeMap<String, i32>,
    /// `namespace/name` of an HPA → `minReplicas`.
    pub hpa_min: BTreeMap<String, i32>,
    /// The old group's Auto Scaling group.
    pub old_asg: String,
}

fn key(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Waits until every Deployment of [`CLUSTER`] is fully available in the simulator's statistics,
/// then resets them (the baseline every later dip is measured against), and records the
/// replicas, HPA minimums and the old group's Auto Scaling group.
pub async fn settle_and_record(sim: &Sim) -> Before {
    settle_and_record_all(sim, &[CLUSTER]).await.remove(0)
}

/// [`settle_and_record`] for several clusters: every one settled, then the statistics of all
/// reset once, then each recorded.
pub async fn settle_and_record_all(sim: &Sim, clusters: &[&str]) -> Vec<Before> {
    for cluster in clusters {
        wait_settled(sim, cluster).await;
    }
    sim.reset_stats().await.expect("reset stats");
    let mut out = Vec::new();
    for cluster in clusters {
        out.push(record(sim, cluster).await);
    }
    out
}

/// Waits until every Deployment of `cluster` is fully available in the simulator's statistics.
async fn wait_settled(sim: &Sim, cluster: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let stats = sim.cluster_stats(cluster).await.expect("stats");
        let deployments = stats["deployments"].as_object().cloned().unwrap_or_default();
        let settled = !deployments.is_empty()
            && deployments.values().all(|d| {
                d["available"].as_i64() == d["replicas"].as_i64() && !d["available_at_start"].is_null()
            });
        if settled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the simulated cluster did not settle: {stats:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The replicas, HPA minimums and old Auto Scaling group of `cluster`.
async fn record(sim: &Sim, cluster: &str) -> Before {
    let kube = sim.kube(cluster).await.expect("kube client");
    let deployments = Api::<Deployment>::all(kube.clone())
        .list(&ListParams::default())
        .await
        .expect("list deployments");
    let replicas = deployments
        .items
        .iter()
        .map(|d| {
            (
                key(&d.metadata),
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            )
        })
        .collect();
    let hpas = Api::<HorizontalPodAutoscaler>::all(kube)
        .list(&ListParams::default())
        .await
        .expect("list HPAs");
    let hpa_min = hpas
        .items
        .iter()
        .map(|h| {
            (
                key(&h.metadata),
                h.spec.as_ref().and_then(|s| s.min_replicas).unwrap_or(1),
            )
        })
        .collect();
    let groups = asg_names(sim).await;
    let old_asg = groups
        .iter()
        .find(|n| n.contains(&format!("eksctl-{cluster}-nodegroup-{OLD_GROUP}")))
        .unwrap_or_else(|| panic!("no Auto Scaling group for {OLD_GROUP} among {groups:?}"))
        .clone();
    Before {
        cluster: cluster.to_string(),
        replicas,
        hpa_min,
        old_asg,
    }
}

/// Every Auto Scaling group's name, through aws-sdk-autoscaling.
pub async fn asg_names(sim: &Sim) -> Vec<String> {
    let asg = sim.autoscaling().await;
    let out = asg
        .describe_auto_scaling_groups()
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    out.auto_scaling_groups()
        .iter()
        .map(|g| g.auto_scaling_group_name().unwrap_or_default().to_string())
        .collect()
}

/// The managed node groups of [`CLUSTER`], through aws-sdk-eks.
pub async fn managed_groups(sim: &Sim) -> Vec<String> {
    managed_groups_of(sim, CLUSTER).await
}

/// The managed node groups of `cluster`, through aws-sdk-eks.
pub async fn managed_groups_of(sim: &Sim, cluster: &str) -> Vec<String> {
    sim.eks()
        .await
        .list_nodegroups()
        .cluster_name(cluster)
        .send()
        .await
        .expect("ListNodegroups")
        .nodegroups()
        .to_vec()
}

/// Checks the cluster after a successful migration: the managed group ACTIVE in EKS, the old
/// Auto Scaling group and nodes gone, every workload pod on the new group's nodes, replicas and
/// HPA minimums as before, no PodDisruptionBudget violated and no Deployment ever below its
/// available count of the start.
pub async fn check_migrated(sim: &Sim, before: &Before) {
    let cluster = before.cluster.as_str();
    // EKS: the managed group exists and is ACTIVE, as the EKS API reports it.
    let ng = sim
        .eks()
        .await
        .describe_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(NEW_GROUP)
        .send()
        .await
        .expect("DescribeNodegroup ng-new");
    let ng = ng.nodegroup().expect("nodegroup");
    assert_eq!(
        ng.status().map(|s| s.as_str()),
        Some("ACTIVE"),
        "managed group: {ng:?}"
    );
    assert_eq!(
        ng.scaling_config().and_then(|s| s.desired_size()),
        Some(4),
        "{ng:?}"
    );

    // Auto Scaling: the old group is gone.
    let groups = asg_names(sim).await;
    assert!(
        !groups.contains(&before.old_asg),
        "the old Auto Scaling group {} is still there: {groups:?}",
        before.old_asg
    );

    let kube = sim.kube(cluster).await.expect("kube client");
    // Kubernetes: no node of the old group is left (terminations may still be finishing).
    let nodes_api = Api::<Node>::all(kube.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let new_nodes = loop {
        let nodes = nodes_api.list(&ListParams::default()).await.expect("list nodes");
        let label = |n: &Node, l: &str| n.metadata.labels.as_ref().and_then(|m| m.get(l)).cloned();
        let old: Vec<String> = nodes
            .items
            .iter()
            .filter(|n| label(n, SELF_MANAGED_LABEL).as_deref() == Some(OLD_GROUP))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let new: Vec<String> = nodes
            .items
            .iter()
            .filter(|n| label(n, MANAGED_LABEL).as_deref() == Some(NEW_GROUP))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        if old.is_empty() {
            assert_eq!(new.len(), 4, "new group's nodes: {new:?}");
            break new;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old nodes still registered: {old:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Every pod but DaemonSets' runs on a new node.
    let pods = Api::<Pod>::all(kube.clone())
        .list(&ListParams::default())
        .await
        .expect("list pods");
    let mut workload_pods = 0;
    for p in &pods.items {
        let owner = p
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| o.kind.as_str());
        if owner == Some("DaemonSet") || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        workload_pods += 1;
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            new_nodes.contains(&node),
            "pod {} runs on {node:?}, not on a node of {NEW_GROUP} ({new_nodes:?})",
            key(&p.metadata)
        );
    }
    assert!(workload_pods > 0, "no workload pods at all: {pods:?}");

    // Replicas and HPA minimums back to what they were.
    let deployments = Api::<Deployment>::all(kube.clone())
        .list(&ListParams::default())
        .await
        .expect("list deployments");
    let now: BTreeMap<String, i32> = deployments
        .items
        .iter()
        .map(|d| {
            (
                key(&d.metadata),
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            )
        })
        .collect();
    assert_eq!(now, before.replicas, "replicas after the migration");
    let hpas = Api::<HorizontalPodAutoscaler>::all(kube)
        .list(&ListParams::default())
        .await
        .expect("list HPAs");
    let hpa_min: BTreeMap<String, i32> = hpas
        .items
        .iter()
        .map(|h| {
            (
                key(&h.metadata),
                h.spec.as_ref().and_then(|s| s.min_replicas).unwrap_or(1),
            )
        })
        .collect();
    assert_eq!(hpa_min, before.hpa_min, "HPA minReplicas after the migration");

    // Zero downtime, as the simulator measured it on every pod change.
    let stats = sim.cluster_stats(cluster).await.expect("stats");
    assert_eq!(
        stats["pdb_violations"], 0,
        "PDB violations: {:#}",
        stats["violations"]
    );
    assert!(
        stats["evictions_allowed"].as_u64().unwrap_or(0) > 0,
        "no eviction was counted: {stats:#}"
    );
    let deployments = stats["deployments"].as_object().expect("deployments");
    for (name, d) in deployments {
        let start = d["available_at_start"].as_i64().expect("baseline");
        let min = d["min_available"].as_i64().expect("min");
        assert!(
            min >= start,
            "{name} dipped to {min} available replicas (it had {start}): {d}"
        );
    }
}

/// Polls GetOperation until `done` holds; panics after `timeout` with the operation.
pub async fn wait_operation(
    fleet: &mut FleetClient<Channel>,
    id: &str,
    timeout: Duration,
    done: impl Fn(&pb::Operation) -> bool,
) -> pb::Operation {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match fleet
            .get_operation(pb::GetOperationRequest {
                operation_id: id.into(),
            })
            .await
        {
            Ok(op) => {
                let op = op.into_inner();
                if done(&op) {
                    return op;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "operation {id} did not get there within {timeout:?}: {op:#?}"
                );
            }
            Err(status) => assert!(
                tokio::time::Instant::now() < deadline,
                "GetOperation {id} failing after {timeout:?}: {status}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the operation has ended.
pub fn ended(op: &pb::Operation) -> bool {
    matches!(
        pb::OperationState::try_from(op.state),
        Ok(pb::OperationState::Succeeded
            | pb::OperationState::Failed
            | pb::OperationState::Cancelled
            | pb::OperationState::RolledBack)
    )
}

/// The step of `op` with this id.
pub fn step<'a>(op: &'a pb::Operation, id: &str) -> &'a pb::OperationStep {
    op.steps
        .iter()
        .find(|s| s.step_id == id)
        .unwrap_or_else(|| panic!("no step {id} in {op:#?}"))
}

/// Whether step `id` of `op` is running.
pub fn running(op: &pb::Operation, id: &str) -> bool {
    step(op, id).state == pb::StepState::Running as i32
}

/// The operation's stored event log, oldest first: (step id, message), read with
/// WatchOperation from sequence 0 (the watch of an ended operation closes after the replay).
pub async fn event_log(fleet: &mut FleetClient<Channel>, id: &str) -> Vec<(String, String)> {
    let mut stream = fleet
        .watch_operation(pb::WatchOperationRequest {
            operation_id: id.into(),
            since_sequence: 0,
        })
        .await
        .expect("WatchOperation")
        .into_inner();
    let mut lines = Vec::new();
    let mut last = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the watch of an ended operation ends")
    {
        let ev = ev.expect("watch event");
        if let Some(pb::operation_event::Event::Log(l)) = ev.event {
            assert_eq!(ev.sequence, last + 1, "event log sequence has a gap");
            last = ev.sequence;
            lines.push((l.step_id, l.message));
        }
    }
    lines
}

/// How many log lines say exactly `needle` somewhere.
pub fn count(log: &[(String, String)], needle: &str) -> usize {
    log.iter().filter(|(_, m)| m.contains(needle)).count()
}

/// Checks the operation's record and log: every forward step succeeded, at attempt 1, and the log
/// records each success exactly once.
pub async fn check_steps_once(fleet: &mut FleetClient<Channel>, op: &pb::Operation) -> Vec<(String, String)> {
    assert_eq!(
        op.state,
        pb::OperationState::Succeeded as i32,
        "operation: {op:#?}"
    );
    for id in MIGRATION_STEPS {
        let s = step(op, id);
        assert_eq!(s.state, pb::StepState::Succeeded as i32, "step {id}: {s:#?}");
        assert_eq!(s.attempt, 1, "step {id} ran more than one attempt: {s:#?}");
    }
    let log = event_log(fleet, &op.id).await;
    let text = log
        .iter()
        .map(|(s, m)| format!("[{s}] {m}"))
        .collect::<Vec<_>>()
        .join("\n");
    for id in MIGRATION_STEPS {
        assert_eq!(
            count(&log, &format!("{id} succeeded (attempt 1)")),
            1,
            "{id}'s success is not logged exactly once:\n{text}"
        );
        assert_eq!(
            count(&log, &format!("{id} succeeded (attempt 2)")) + count(&log, &format!("retrying {id}")),
            0,
            "{id} was retried:\n{text}"
        );
    }
    log
}

/// A JSON value's field as text.
pub fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}
