//! Node group effects of the simulated EKS API, seen through kube-rs: CreateNodegroup registers
//! Ready nodes, UpdateNodegroupVersion replaces nodes through the Eviction API (PDBs honoured,
//! `PodEvictionFailure` unless `force`), DeleteNodegroup drains and removes them. These need the
//! simulator's controllers (node lifecycle, scheduler, kubelet, workloads, disruption).

mod eks_common;

use std::time::Duration;

use aws_sdk_eks::types::{NodegroupScalingConfig, Taint, TaintEffect, UpdateStatus};
use eks_common::*;
use flotilla_sim::scenario::Scenario;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::Api;

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn group(nodes: &Api<Node>, ng: &str) -> Vec<Node> {
    nodes
        .list(&ListParams::default().labels(&format!("eks.amazonaws.com/nodegroup={ng}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

async fn wait_update(eks: &aws_sdk_eks::Client, ng: &str, id: &str, secs: u64) -> aws_sdk_eks::types::Update {
    eventually(Duration::from_secs(secs), "node group update to end", || {
        let (eks, id, ng) = (eks.clone(), id.to_string(), ng.to_string());
        async move {
            let u = eks
                .describe_update()
                .name("sim-1")
                .update_id(id)
                .nodegroup_name(ng)
                .send()
                .await
                .ok()?
                .update?;
            (u.status() != Some(&UpdateStatus::InProgress)).then_some(u)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_nodegroup_registers_ready_labelled_nodes() {
    let (fleet, dir) = start(&Scenario::default_scenario(), 1).await;
    let eks = eks(&fleet).await;
    let ng = eks
        .create_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-new")
        .subnets("subnet-0a")
        .node_role("arn:aws:iam::111122223333:role/node")
        .instance_types("m5.large")
        .scaling_config(
            NodegroupScalingConfig::builder()
                .min_size(1)
                .max_size(4)
                .desired_size(2)
                .build(),
        )
        .labels("team", "payments")
        .taints(
            Taint::builder()
                .key("dedicated")
                .value("payments")
                .effect(TaintEffect::NoSchedule)
                .build(),
        )
        .send()
        .await
        .expect("create")
        .nodegroup
        .unwrap();
    assert_eq!(ng.status().map(|s| s.as_str()), Some("CREATING"));
    eventually(Duration::from_secs(20), "ng-new ACTIVE", || {
        let eks = eks.clone();
        async move {
            let ng = eks
                .describe_nodegroup()
                .cluster_name("sim-1")
                .nodegroup_name("ng-new")
                .send()
                .await
                .ok()?
                .nodegroup?;
            (ng.status().map(|s| s.as_str()) == Some("ACTIVE")).then_some(())
        }
    })
    .await;
    let nodes: Api<Node> = Api::all(kube(&dir, "sim-1").await);
    let got = group(&nodes, "ng-new").await;
    assert_eq!(got.len(), 2);
    for n in &got {
        assert!(ready(n), "{:?} not Ready", n.metadata.name);
        let labels = n.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
        assert_eq!(
            labels.get("node.kubernetes.io/instance-type").map(String::as_str),
            Some("m5.large")
        );
        let taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        assert!(
            taints
                .iter()
                .any(|t| t.key == "dedicated" && t.effect == "NoSchedule"),
            "{taints:?}"
        );
        assert_eq!(
            n.status.as_ref().unwrap().capacity.as_ref().unwrap()["pods"].0,
            "29"
        );
    }
    let asgs = asg(&fleet)
        .await
        .describe_auto_scaling_groups()
        .send()
        .await
        .unwrap();
    assert!(asgs.auto_scaling_groups().iter().any(|g| g
        .tags()
        .iter()
        .any(|t| t.key() == Some("eks:nodegroup-name") && t.value() == Some("ng-new"))
        && g.instances().len() == 2));
    fleet.shutdown().await;
}

const MANAGED: &str = r#"
kubernetesVersion: "1.34"
nodeGroups:
  - {name: ng-m, type: managed, nodes: 3, kubeletVersion: "1.33"}
namespaces: [shop]
deployments:
  - {name: web, namespace: shop, replicas: 3, cpu: 100m, pdb: {maxUnavailable: 1}}
daemonSets: []
pods: []
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodegroup_update_replaces_every_node_through_evictions() {
    let (fleet, dir) = start(&scenario(MANAGED), 1).await;
    fleet
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("settled");
    let eks = eks(&fleet).await;
    let nodes: Api<Node> = Api::all(kube(&dir, "sim-1").await);
    let before: Vec<String> = group(&nodes, "ng-m")
        .await
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(before.len(), 3);

    let u = eks
        .update_nodegroup_version()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .version("1.34")
        .send()
        .await
        .expect("update")
        .update
        .unwrap();
    let ng = eks
        .describe_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .send()
        .await
        .unwrap()
        .nodegroup
        .unwrap();
    assert_eq!(ng.status().map(|s| s.as_str()), Some("UPDATING"));
    let e = eks
        .update_nodegroup_version()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .version("1.34")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.as_service_error().map(|s| s.is_resource_in_use_exception()),
        Some(true)
    );
    let u = wait_update(&eks, "ng-m", u.id().unwrap(), 60).await;
    assert_eq!(u.status(), Some(&UpdateStatus::Successful), "{:?}", u.errors());

    let after = group(&nodes, "ng-m").await;
    assert_eq!(after.len(), 3);
    for n in &after {
        assert!(
            !before.contains(n.metadata.name.as_ref().unwrap()),
            "old node {:?} still there",
            n.metadata.name
        );
        let kubelet = &n
            .status
            .as_ref()
            .unwrap()
            .node_info
            .as_ref()
            .unwrap()
            .kubelet_version;
        assert!(kubelet.starts_with("v1.34."), "{kubelet}");
    }
    let ng = eks
        .describe_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .send()
        .await
        .unwrap()
        .nodegroup
        .unwrap();
    assert_eq!(
        (ng.version(), ng.status().map(|s| s.as_str())),
        (Some("1.34"), Some("ACTIVE"))
    );
    fleet
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("web available again");
    let d: Api<Deployment> = Api::namespaced(kube(&dir, "sim-1").await, "shop");
    assert_eq!(
        d.get("web").await.unwrap().status.unwrap().available_replicas,
        Some(3)
    );
    fleet.shutdown().await;
}

const BLOCKED: &str = r#"
kubernetesVersion: "1.33"
nodeGroups:
  - {name: ng-m, type: managed, nodes: 2}
namespaces: [shop]
deployments:
  - {name: cache, namespace: shop, replicas: 1, cpu: 100m, pdb: {minAvailable: 1}}
daemonSets: []
pods: []
eks:
  timing: {evictionTimeout: 1s}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_that_never_allows_fails_with_pod_eviction_failure_unless_forced() {
    let (fleet, dir) = start(&scenario(BLOCKED), 1).await;
    fleet
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("settled");
    let eks = eks(&fleet).await;
    let u = eks
        .update_nodegroup_version()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .send()
        .await
        .expect("update")
        .update
        .unwrap();
    let u = wait_update(&eks, "ng-m", u.id().unwrap(), 60).await;
    assert_eq!(u.status(), Some(&UpdateStatus::Failed));
    let err = &u.errors()[0];
    assert_eq!(err.error_code().map(|c| c.as_str()), Some("PodEvictionFailure"));
    let pods: Api<Pod> = Api::namespaced(kube(&dir, "sim-1").await, "shop");
    assert_eq!(
        pods.list(&ListParams::default().labels("app=cache"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let u = eks
        .update_nodegroup_version()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .force(true)
        .send()
        .await
        .expect("forced")
        .update
        .unwrap();
    let u = wait_update(&eks, "ng-m", u.id().unwrap(), 60).await;
    assert_eq!(u.status(), Some(&UpdateStatus::Successful), "{:?}", u.errors());
    let nodes: Api<Node> = Api::all(kube(&dir, "sim-1").await);
    eventually(Duration::from_secs(20), "2 nodes in ng-m", || {
        let nodes = nodes.clone();
        async move { (group(&nodes, "ng-m").await.len() == 2).then_some(()) }
    })
    .await;
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_nodegroup_drains_and_removes_its_nodes() {
    let yaml = r#"
nodeGroups:
  - {name: ng-old, nodes: 2}
  - {name: ng-m, type: managed, nodes: 2}
namespaces: [shop]
deployments:
  - {name: web, namespace: shop, replicas: 2, cpu: 100m, pdb: {maxUnavailable: 1}}
daemonSets: []
pods: []
"#;
    let (fleet, dir) = start(&scenario(yaml), 1).await;
    fleet
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("settled");
    let eks = eks(&fleet).await;
    let ng = eks
        .delete_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .send()
        .await
        .expect("delete")
        .nodegroup
        .unwrap();
    assert_eq!(ng.status().map(|s| s.as_str()), Some("DELETING"));
    eventually(Duration::from_secs(30), "ng-m gone", || {
        let eks = eks.clone();
        async move {
            eks.describe_nodegroup()
                .cluster_name("sim-1")
                .nodegroup_name("ng-m")
                .send()
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    let nodes: Api<Node> = Api::all(kube(&dir, "sim-1").await);
    assert!(group(&nodes, "ng-m").await.is_empty());
    fleet
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("web rescheduled");
    fleet.shutdown().await;
}
