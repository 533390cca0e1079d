//! The simulated EKS API through the real aws-sdk-eks client: shapes, errors, faults, and the
//! effects that need no controllers (served version, add-on images).

mod eks_common;

use std::time::Duration;

use aws_sdk_eks::error::ProvideErrorMetadata;
use aws_sdk_eks::types::{InsightStatusValue, UpdateStatus};
use eks_common::*;
use flotilla_sim::scenario::Scenario;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::Value;

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_eks::error::SdkError<E>) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .unwrap_or("<not a service error>")
        .to_string()
}

#[tokio::test]
async fn clusters_list_and_describe_with_endpoints_file() {
    let (fleet, dir) = start(&Scenario::default_scenario(), 2).await;
    let eks = eks(&fleet).await;
    let list = eks.list_clusters().send().await.expect("list");
    assert_eq!(list.clusters(), ["sim-1", "sim-2"]);
    let page = eks.list_clusters().max_results(1).send().await.expect("page");
    assert_eq!(page.clusters(), ["sim-1"]);
    let next = eks
        .list_clusters()
        .max_results(1)
        .next_token(page.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(next.clusters(), ["sim-2"]);
    assert!(next.next_token().is_none());

    let c = eks
        .describe_cluster()
        .name("sim-1")
        .send()
        .await
        .expect("describe")
        .cluster
        .expect("cluster");
    assert_eq!(c.version(), Some("1.33"));
    assert_eq!(c.status().map(|s| s.as_str()), Some("ACTIVE"));
    assert_eq!(c.endpoint(), Some(fleet.cluster_url("sim-1").as_str()));
    assert!(c.arn().unwrap().starts_with("arn:aws:eks:us-west-2:"));
    assert!(c
        .certificate_authority()
        .and_then(|a| a.data())
        .is_some_and(|d| !d.is_empty()));
    assert!(c.created_at().is_some());

    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("endpoints.json")).unwrap()).unwrap();
    assert_eq!(doc["region"], "us-west-2");
    assert_eq!(doc["eks_endpoint"], fleet.aws_url.clone().unwrap());
    assert_eq!(doc["autoscaling_endpoint"], fleet.aws_url.clone().unwrap());
    assert_eq!(doc["clusters"][1]["eks_cluster_name"], "sim-2");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_real_shapes() {
    let (fleet, _dir) = start(&Scenario::default_scenario(), 1).await;
    let eks = eks(&fleet).await;
    let e = eks.describe_cluster().name("nope").send().await.unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    assert!(e.into_service_error().is_resource_not_found_exception());
    let e = eks
        .describe_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let e = eks.list_clusters().max_results(0).send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidParameterException");

    // On the wire: status, x-amzn-ErrorType and the JSON body.
    let a = auth("eks", "us-west-2");
    let (status, headers, body) = raw(&fleet, "GET", "/clusters/nope", &[("Authorization", &a)], "");
    assert_eq!(status, 404);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-amzn-errortype" && v == "ResourceNotFoundException"),
        "{headers:?}"
    );
    assert!(headers.iter().any(|(k, _)| k == "x-amzn-requestid"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"clusterName": "nope", "message": "No cluster found for name: nope."})
    );

    let (status, headers, body) = raw(
        &fleet,
        "POST",
        "/clusters/sim-1/updates",
        &[("Authorization", &a), ("Content-Type", "application/json")],
        "{not json",
    );
    assert_eq!(status, 400);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "x-amzn-errortype" && v == "BadRequestException"));
    assert!(body.contains("message"));

    let (status, headers, _) = raw(&fleet, "GET", "/clusters", &[], "");
    assert_eq!(status, 403);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "x-amzn-errortype" && v == "MissingAuthenticationTokenException"));
    let (status, _, body) = raw(
        &fleet,
        "GET",
        "/clusters",
        &[("Authorization", &auth("eks", "eu-west-1"))],
        "",
    );
    assert_eq!(status, 403);
    assert!(body.contains("eu-west-1"));
    let (status, headers, _) = raw(&fleet, "GET", "/no/such/thing", &[("Authorization", &a)], "");
    assert_eq!(status, 404);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "x-amzn-errortype" && v == "UnknownOperationException"));
    fleet.shutdown().await;
}

#[tokio::test]
async fn control_plane_update_serves_the_new_minor() {
    let (fleet, dir) = start(&Scenario::default_scenario(), 1).await;
    let eks = eks(&fleet).await;
    let e = eks
        .update_cluster_version()
        .name("sim-1")
        .version("1.35")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterException");
    assert!(e
        .into_service_error()
        .message()
        .unwrap()
        .contains("Unsupported Kubernetes minor version update from 1.33 to 1.35"));

    let u = eks
        .update_cluster_version()
        .name("sim-1")
        .version("1.34")
        .send()
        .await
        .expect("update")
        .update
        .unwrap();
    assert_eq!(u.status(), Some(&UpdateStatus::InProgress));
    assert_eq!(u.r#type().map(|t| t.as_str()), Some("VersionUpdate"));
    let e = eks
        .update_cluster_version()
        .name("sim-1")
        .version("1.34")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    let c = eks
        .describe_cluster()
        .name("sim-1")
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(c.status().map(|s| s.as_str()), Some("UPDATING"));

    let id = u.id().unwrap().to_string();
    eventually(Duration::from_secs(10), "update Successful", || {
        let (eks, id) = (eks.clone(), id.clone());
        async move {
            let u = eks
                .describe_update()
                .name("sim-1")
                .update_id(id)
                .send()
                .await
                .ok()?
                .update?;
            (u.status() == Some(&UpdateStatus::Successful)).then_some(())
        }
    })
    .await;
    let ids = eks.list_updates().name("sim-1").send().await.unwrap();
    assert_eq!(ids.update_ids(), std::slice::from_ref(&id));
    let c = eks
        .describe_cluster()
        .name("sim-1")
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(
        (c.version(), c.status().map(|s| s.as_str())),
        (Some("1.34"), Some("ACTIVE"))
    );
    let v = kube(&dir, "sim-1")
        .await
        .apiserver_version()
        .await
        .expect("version");
    assert_eq!(v.minor, "34");
    let e = eks
        .describe_update()
        .name("sim-1")
        .update_id("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    fleet.shutdown().await;
}

#[tokio::test]
async fn throttling_fault_answers_throttling() {
    let s = scenario("eks:\n  faults:\n    throttleRate: 1.0\n");
    let (fleet, _dir) = start(&s, 1).await;
    let e = eks(&fleet)
        .await
        .describe_cluster()
        .name("sim-1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ThrottlingException");
    let a = asg(&fleet).await;
    let e = a.describe_auto_scaling_groups().send().await.unwrap_err();
    assert_eq!(e.as_service_error().and_then(|s| s.code()), Some("Throttling"));
    fleet.shutdown().await;
}

#[tokio::test]
async fn insights_block_an_upgrade_unless_forced() {
    let s = scenario(
        r#"
eks:
  insights:
    - name: Deprecated APIs removed in Kubernetes v1.34
      status: ERROR
      deprecatedApis:
        - usage: /apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas
          replacedWith: /apis/flowcontrol.apiserver.k8s.io/v1/flowschemas
          stopServingVersion: "1.32"
"#,
    );
    let (fleet, _dir) = start(&s, 1).await;
    let eks = eks(&fleet).await;
    let list = eks
        .list_insights()
        .cluster_name("sim-1")
        .send()
        .await
        .expect("insights");
    let names: Vec<&str> = list.insights().iter().filter_map(|i| i.name()).collect();
    assert!(names.contains(&"Kubelet version skew"), "{names:?}");
    let dep = list
        .insights()
        .iter()
        .find(|i| i.name() == Some("Deprecated APIs removed in Kubernetes v1.34"))
        .unwrap();
    assert_eq!(
        dep.insight_status().and_then(|s| s.status()),
        Some(&InsightStatusValue::Error)
    );
    assert_eq!(dep.kubernetes_version(), Some("1.34"));
    let skew = list
        .insights()
        .iter()
        .find(|i| i.name() == Some("Kubelet version skew"))
        .unwrap();
    assert_eq!(
        skew.insight_status().and_then(|s| s.status()),
        Some(&InsightStatusValue::Passing)
    );
    let detail = eks
        .describe_insight()
        .cluster_name("sim-1")
        .id(dep.id().unwrap())
        .send()
        .await
        .unwrap()
        .insight
        .unwrap();
    let d = &detail.category_specific_summary().unwrap().deprecation_details()[0];
    assert_eq!(
        d.usage(),
        Some("/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas")
    );
    let errors = eks
        .list_insights()
        .cluster_name("sim-1")
        .filter(
            aws_sdk_eks::types::InsightsFilter::builder()
                .statuses(InsightStatusValue::Error)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(errors.insights().len(), 1);

    let e = eks
        .update_cluster_version()
        .name("sim-1")
        .version("1.34")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidStateException");
    let u = eks
        .update_cluster_version()
        .name("sim-1")
        .version("1.34")
        .force(true)
        .send()
        .await
        .expect("forced")
        .update
        .unwrap();
    assert_eq!(u.status(), Some(&UpdateStatus::InProgress));
    fleet.shutdown().await;
}

#[tokio::test]
async fn addons_versions_and_update_changes_the_image() {
    let (fleet, dir) = start(&Scenario::default_scenario(), 1).await;
    let eks = eks(&fleet).await;
    let addons = eks.list_addons().cluster_name("sim-1").send().await.unwrap();
    assert_eq!(addons.addons(), ["coredns", "kube-proxy", "vpc-cni"]);
    let coredns = eks
        .describe_addon()
        .cluster_name("sim-1")
        .addon_name("coredns")
        .send()
        .await
        .unwrap()
        .addon
        .unwrap();
    assert_eq!(coredns.addon_version(), Some("v1.11.4-eksbuild.2"));

    let v = eks
        .describe_addon_versions()
        .kubernetes_version("1.34")
        .addon_name("coredns")
        .send()
        .await
        .unwrap();
    let info = &v.addons()[0];
    let default: Vec<&str> = info
        .addon_versions()
        .iter()
        .filter(|v| v.compatibilities().iter().any(|c| c.default_version()))
        .filter_map(|v| v.addon_version())
        .collect();
    assert_eq!(default, ["v1.12.3-eksbuild.1"]);

    // The versions a cluster can run, newest first, paged like the real API.
    let all = eks.describe_cluster_versions().send().await.unwrap();
    let offered: Vec<&str> = all
        .cluster_versions()
        .iter()
        .filter_map(|v| v.cluster_version())
        .collect();
    assert_eq!(offered, ["1.35", "1.34", "1.33"]);
    let first = eks
        .describe_cluster_versions()
        .max_results(1)
        .send()
        .await
        .unwrap();
    assert_eq!(first.cluster_versions().len(), 1);
    let rest = eks
        .describe_cluster_versions()
        .next_token(first.next_token().expect("a next page"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.cluster_versions().len(), 2);
    let default = eks
        .describe_cluster_versions()
        .default_only(true)
        .send()
        .await
        .unwrap();
    assert_eq!(default.cluster_versions()[0].cluster_version(), Some("1.34"));
    let one = eks
        .describe_cluster_versions()
        .cluster_versions("1.40")
        .send()
        .await
        .unwrap();
    assert!(one.cluster_versions().is_empty());

    let e = eks
        .update_addon()
        .cluster_name("sim-1")
        .addon_name("coredns")
        .addon_version("v1.12.4-eksbuild.1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterException");
    let e = eks
        .update_addon()
        .cluster_name("sim-1")
        .addon_name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");

    let u = eks
        .update_addon()
        .cluster_name("sim-1")
        .addon_name("coredns")
        .addon_version("v1.12.3-eksbuild.1")
        .resolve_conflicts(aws_sdk_eks::types::ResolveConflicts::Overwrite)
        .send()
        .await
        .expect("update addon")
        .update
        .unwrap();
    assert_eq!(u.r#type().map(|t| t.as_str()), Some("AddonUpdate"));
    let e = eks
        .update_addon()
        .cluster_name("sim-1")
        .addon_name("coredns")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    // An add-on update is only found with its addonName, as on EKS.
    let e = eks
        .describe_update()
        .name("sim-1")
        .update_id(u.id().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let id = u.id().unwrap().to_string();
    eventually(Duration::from_secs(10), "add-on update Successful", || {
        let (eks, id) = (eks.clone(), id.clone());
        async move {
            let u = eks
                .describe_update()
                .name("sim-1")
                .update_id(id)
                .addon_name("coredns")
                .send()
                .await
                .ok()?
                .update?;
            (u.status() == Some(&UpdateStatus::Successful)).then_some(())
        }
    })
    .await;
    let coredns = eks
        .describe_addon()
        .cluster_name("sim-1")
        .addon_name("coredns")
        .send()
        .await
        .unwrap()
        .addon
        .unwrap();
    assert_eq!(coredns.addon_version(), Some("v1.12.3-eksbuild.1"));
    let d: Api<Deployment> = Api::namespaced(kube(&dir, "sim-1").await, "kube-system");
    let image = d
        .get("coredns")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap();
    assert!(image.ends_with("/eks/coredns:v1.12.3-eksbuild.1"), "{image}");
    fleet.shutdown().await;
}

#[tokio::test]
async fn nodegroup_validation_errors() {
    let s = scenario(
        r#"
kubernetesVersion: "1.34"
nodeGroups:
  - {name: ng-m, type: managed, nodes: 1, kubeletVersion: "1.33"}
"#,
    );
    let (fleet, _dir) = start(&s, 1).await;
    let eks = eks(&fleet).await;
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
        (Some("1.33"), Some("ACTIVE"))
    );
    assert_eq!(ng.resources().unwrap().auto_scaling_groups().len(), 1);
    // A node group newer than its control plane.
    let e = eks
        .update_nodegroup_version()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .version("1.35")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterException");
    // The control plane cannot move while a managed group lags.
    let e = eks
        .update_cluster_version()
        .name("sim-1")
        .version("1.35")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterException");
    assert!(e
        .into_service_error()
        .message()
        .unwrap()
        .contains("Nodegroups ng-m must be updated to match cluster version 1.34"));
    let e = eks
        .create_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-m")
        .subnets("subnet-1")
        .node_role("arn:aws:iam::111122223333:role/n")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    let e = eks
        .create_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-x")
        .subnets("subnet-1")
        .node_role("arn:aws:iam::111122223333:role/n")
        .scaling_config(
            aws_sdk_eks::types::NodegroupScalingConfig::builder()
                .min_size(3)
                .max_size(2)
                .desired_size(2)
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterException");
    let e = eks
        .create_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-x")
        .subnets("subnet-1")
        .node_role("arn:aws:iam::111122223333:role/n")
        .version("1.35")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterException");
    let list = eks.list_nodegroups().cluster_name("sim-1").send().await.unwrap();
    assert_eq!(list.nodegroups(), ["ng-m"]);
    fleet.shutdown().await;
}

#[tokio::test]
async fn stuck_creating_fault_stays_creating() {
    let s = scenario("eks:\n  faults:\n    stuckCreating: [ng-stuck]\n");
    let (fleet, _dir) = start(&s, 1).await;
    let eks = eks(&fleet).await;
    let ng = eks
        .create_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-stuck")
        .subnets("subnet-1")
        .node_role("arn:aws:iam::111122223333:role/n")
        .send()
        .await
        .unwrap()
        .nodegroup
        .unwrap();
    assert_eq!(ng.status().map(|s| s.as_str()), Some("CREATING"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ng = eks
        .describe_nodegroup()
        .cluster_name("sim-1")
        .nodegroup_name("ng-stuck")
        .send()
        .await
        .unwrap()
        .nodegroup
        .unwrap();
    assert_eq!(ng.status().map(|s| s.as_str()), Some("CREATING"));
    fleet.shutdown().await;
}

#[tokio::test]
async fn failed_control_plane_update_fault() {
    let s = scenario("eks:\n  faults:\n    failControlPlaneUpdate: true\n");
    let (fleet, dir) = start(&s, 1).await;
    let eks = eks(&fleet).await;
    let u = eks
        .update_cluster_version()
        .name("sim-1")
        .version("1.34")
        .send()
        .await
        .unwrap()
        .update
        .unwrap();
    let id = u.id().unwrap().to_string();
    let u = eventually(Duration::from_secs(10), "update ends", || {
        let (eks, id) = (eks.clone(), id.clone());
        async move {
            let u = eks
                .describe_update()
                .name("sim-1")
                .update_id(id)
                .send()
                .await
                .ok()?
                .update?;
            (u.status() != Some(&UpdateStatus::InProgress)).then_some(u)
        }
    })
    .await;
    assert_eq!(u.status(), Some(&UpdateStatus::Failed));
    assert!(!u.errors().is_empty());
    assert_eq!(
        kube(&dir, "sim-1").await.apiserver_version().await.unwrap().minor,
        "33"
    );
    fleet.shutdown().await;
}
