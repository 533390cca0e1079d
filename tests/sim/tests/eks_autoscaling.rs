//! The simulated Auto Scaling API through the real aws-sdk-autoscaling client: every node group
//! is backed by an ASG; scaling and terminating remove nodes from the cluster, seen via kube-rs.

mod eks_common;

use std::time::Duration;

use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use aws_sdk_autoscaling::types::Filter;
use eks_common::*;
use flotilla_sim::scenario::Scenario;
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::Api;

async fn group_nodes(nodes: &Api<Node>) -> usize {
    nodes
        .list(&ListParams::default().labels("alpha.eksctl.io/nodegroup-name=ng-old"))
        .await
        .map(|l| l.items.len())
        .unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_group_is_an_asg_that_scales_terminates_and_deletes() {
    let (fleet, dir) = start(&Scenario::default_scenario(), 1).await;
    let asg = asg(&fleet).await;
    let nodes: Api<Node> = Api::all(kube(&dir, "sim-1").await);

    let out = asg
        .describe_auto_scaling_groups()
        .filters(
            Filter::builder()
                .name("tag:alpha.eksctl.io/nodegroup-name")
                .values("ng-old")
                .build(),
        )
        .send()
        .await
        .expect("describe");
    assert_eq!(out.auto_scaling_groups().len(), 1);
    let g = &out.auto_scaling_groups()[0];
    let name = g.auto_scaling_group_name().unwrap().to_string();
    assert!(
        name.starts_with("eksctl-sim-1-nodegroup-ng-old-NodeGroup-"),
        "{name}"
    );
    assert_eq!(
        (g.min_size(), g.max_size(), g.desired_capacity()),
        (Some(1), Some(8), Some(4))
    );
    let tags: Vec<(&str, &str)> = g
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert!(
        tags.contains(&("kubernetes.io/cluster/sim-1", "owned")),
        "{tags:?}"
    );
    assert!(tags.contains(&("alpha.eksctl.io/nodegroup-name", "ng-old")));
    assert_eq!(g.instances().len(), 4);
    assert!(g
        .instances()
        .iter()
        .all(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService")));
    let by_name = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.auto_scaling_groups().len(), 1);
    let none = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("nope")
        .send()
        .await
        .unwrap();
    assert!(none.auto_scaling_groups().is_empty());

    // Errors.
    let e = asg
        .update_auto_scaling_group()
        .auto_scaling_group_name("nope")
        .desired_capacity(1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.as_service_error().and_then(|s| s.code()),
        Some("ValidationError")
    );
    let e = asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .desired_capacity(20)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.as_service_error().and_then(|s| s.code()),
        Some("ValidationError")
    );
    let e = asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.as_service_error().and_then(|s| s.code()), Some("ResourceInUse"));

    // Scale in: two nodes go (with their pods).
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .min_size(0)
        .desired_capacity(2)
        .send()
        .await
        .expect("scale in");
    eventually(Duration::from_secs(10), "2 ng-old nodes", || {
        let nodes = nodes.clone();
        async move { (group_nodes(&nodes).await == 2).then_some(()) }
    })
    .await;

    // Terminate one instance, shrinking the group.
    let g = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&name)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .clone();
    let live: Vec<String> = g
        .instances()
        .iter()
        .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
        .filter_map(|i| i.instance_id().map(String::from))
        .collect();
    assert_eq!(live.len(), 2);
    let act = asg
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&live[0])
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("terminate")
        .activity
        .unwrap();
    assert_eq!(act.auto_scaling_group_name(), Some(name.as_str()));
    assert!(act
        .cause()
        .unwrap()
        .contains("shrinking the capacity from 2 to 1"));
    eventually(Duration::from_secs(10), "1 ng-old node", || {
        let nodes = nodes.clone();
        async move { (group_nodes(&nodes).await == 1).then_some(()) }
    })
    .await;
    let e = asg
        .terminate_instance_in_auto_scaling_group()
        .instance_id("i-0000")
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.as_service_error().and_then(|s| s.code()),
        Some("ValidationError")
    );

    // Force delete: the group and its nodes go.
    asg.delete_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .force_delete(true)
        .send()
        .await
        .expect("delete");
    eventually(Duration::from_secs(10), "ASG gone", || {
        let (asg, name) = (asg.clone(), name.clone());
        async move {
            let out = asg
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(name)
                .send()
                .await
                .ok()?;
            out.auto_scaling_groups().is_empty().then_some(())
        }
    })
    .await;
    assert_eq!(group_nodes(&nodes).await, 0);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asg_errors_are_query_protocol_xml() {
    let (fleet, _dir) = start(&Scenario::default_scenario(), 1).await;
    let a = auth("autoscaling", "us-west-2");
    let headers = [
        ("Authorization", a.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (status, _, body) = raw(
        &fleet,
        "POST",
        "/",
        &headers,
        "Action=DeleteAutoScalingGroup&Version=2011-01-01&AutoScalingGroupName=nope",
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("<ErrorResponse")
            && body.contains("<Code>ValidationError</Code>")
            && body.contains("<Type>Sender</Type>"),
        "{body}"
    );
    let (status, _, body) = raw(
        &fleet,
        "POST",
        "/",
        &headers,
        "Action=CreateLaunchConfiguration&Version=2011-01-01",
    );
    assert_eq!(status, 400);
    assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
    let (status, _, body) = raw(
        &fleet,
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "Action=DescribeAutoScalingGroups",
    );
    assert_eq!(status, 403);
    assert!(body.contains("MissingAuthenticationToken"), "{body}");
    fleet.shutdown().await;
}
