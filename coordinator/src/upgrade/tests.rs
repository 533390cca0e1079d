//! The upgrade steps against [`FakeEks`] with paused time: what the simulator cannot show
//! (insights unavailable, throttling, capacity and skew findings, busy subjects, add-on
//! decisions, self-managed add-ons), and re-checks that never issue a second update.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::eks::fake::FakeEks;
use crate::eks::{
    AddonStatus, Backoff, Insight, InsightDetail, InsightStatus, NodegroupStatus, UpdateConfig,
    UpdateErrorDetail,
};

const V33: MinorVersion = MinorVersion::new(1, 33);
const V34: MinorVersion = MinorVersion::new(1, 34);

fn opts(force: bool) -> UpgradeOptions {
    UpgradeOptions {
        force,
        wait: WaitOptions {
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(5),
                factor: 2.0,
                jitter: 0.0,
            },
            timeout: Duration::from_secs(600),
        },
        durations: None,
        goal: None,
    }
}

/// A 1.33 cluster with managed groups `ng-a` and `ng-b` (2 nodes each, maxUnavailable 1) and
/// add-ons, whose agent sees the same.
fn cluster() -> (FakeEks, AgentInventory) {
    let eks = FakeEks::new("c1", "1.33");
    eks.add_nodegroup("ng-a", []);
    eks.add_nodegroup("ng-b", []);
    eks.add_addon("coredns", "v1.11.4-eksbuild.2");
    eks.add_addon("vpc-cni", "v1.20.4-eksbuild.1");
    eks.set_addon_versions("coredns", "1.34", &["v1.12.3-eksbuild.1", "v1.11.4-eksbuild.2"]);
    eks.set_addon_versions("vpc-cni", "1.34", &["v1.20.4-eksbuild.1"]);
    eks.set_addon_versions("kube-proxy", "1.34", &["v1.34.1-eksbuild.1"]);
    eks.set_addon_versions("coredns", "1.33", &["v1.11.4-eksbuild.2"]);
    let group = |name: &str| InventoryNodeGroup {
        name: name.into(),
        kind: GroupKind::Managed,
        nodes: 2,
        ready: 2,
        kubelet_versions: vec!["v1.33.5".into()],
    };
    let node = |name: &str, group: &str| InventoryNode {
        name: name.into(),
        group: Some(group.into()),
        kubelet_version: "v1.33.5".into(),
        ready: true,
    };
    let inv = AgentInventory {
        api_server_version: "v1.33.5-eks-1234567".into(),
        node_groups: vec![group("ng-a"), group("ng-b")],
        nodes: vec![
            node("a1", "ng-a"),
            node("a2", "ng-a"),
            node("b1", "ng-b"),
            node("b2", "ng-b"),
        ],
        blocking_pdbs: Vec::new(),
        addon_workloads: None,
        deprecated_apis: Some(DeprecatedApiScan::Checked(Vec::new())),
    };
    (eks, inv)
}

fn throttled(op: &'static str) -> EksError {
    EksError::Api {
        operation: op,
        resource: "cluster c1".into(),
        code: "ThrottlingException".into(),
        message: "Rate exceeded".into(),
        status: Some(429),
    }
}

fn blocked(e: UpgradeError) -> PreflightReport {
    match e {
        UpgradeError::PreflightBlocked(r) => *r,
        other => panic!("expected PreflightBlocked, got {other:?}"),
    }
}

fn count(eks: &FakeEks, prefix: &str) -> usize {
    eks.calls().iter().filter(|c| c.starts_with(prefix)).count()
}

// === preflight ===

#[tokio::test(start_paused = true)]
async fn preflight_passes_a_clean_cluster_and_reports_it() {
    let (eks, inv) = cluster();
    let r = preflight(&eks, V34, &inv, &opts(false), &NoProgress)
        .await
        .expect("clean");
    assert_eq!(r.nodegroups.len(), 2);
    assert_eq!(r.insights, InsightsCheck::Checked { not_passing: vec![] });
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let out = r.outputs();
    assert!(out.summary.contains("0 blockers"), "{}", out.summary);
    let json: serde_json::Value = serde_json::from_str(out.detail.as_deref().unwrap()).unwrap();
    assert_eq!(json["target"], "1.34");
    assert!(eks.calls().iter().all(|c| !c.starts_with("Update")), "read-only");
}

#[tokio::test(start_paused = true)]
async fn a_target_eks_does_not_offer_blocks_before_the_first_hop() {
    let (eks, inv) = cluster();
    eks.with_state(|s| s.cluster_versions = Some(Ok(vec!["1.35".into(), "1.34".into(), "1.33".into()])));
    // The hop to 1.34 is offered; the rollout's 1.40 is not.
    let with_goal = UpgradeOptions {
        goal: Some(MinorVersion::new(1, 40)),
        ..opts(false)
    };
    let Err(UpgradeError::PreflightBlocked(r)) = preflight(&eks, V34, &inv, &with_goal, &NoProgress).await
    else {
        panic!("blocked")
    };
    assert_eq!(r.blockers.len(), 1, "{:?}", r.blockers);
    let b = &r.blockers[0];
    assert_eq!(
        (b.code, b.subject.as_str()),
        ("TARGET_NOT_OFFERED", "rollout target 1.40")
    );
    assert!(b.reason.contains("1.35, 1.34, 1.33"), "{}", b.reason);
    assert!(eks.calls().iter().all(|c| !c.starts_with("Update")), "read-only");
    // Nor is a hop past what EKS has.
    eks.with_state(|s| s.cluster_versions = Some(Ok(vec!["1.33".into()])));
    let Err(UpgradeError::PreflightBlocked(r)) = preflight(&eks, V34, &inv, &opts(false), &NoProgress).await
    else {
        panic!("blocked")
    };
    assert_eq!(r.blockers[0].subject, "target 1.34");
    // Without eks:DescribeClusterVersions the check is a warning, not a blocker.
    eks.with_state(|s| {
        s.cluster_versions = Some(Err(EksError::Api {
            operation: "DescribeClusterVersions",
            resource: "Kubernetes versions".into(),
            code: "AccessDeniedException".into(),
            message: "not authorized".into(),
            status: Some(403),
        }))
    });
    let r = preflight(&eks, V34, &inv, &with_goal, &NoProgress)
        .await
        .expect("not blocked by a denied API");
    assert!(
        r.warnings.iter().any(|w| w.code == "VERSIONS_UNCHECKED"),
        "{:?}",
        r.warnings
    );
}

#[tokio::test(start_paused = true)]
async fn unavailable_insights_are_unknown_not_fatal() {
    let (eks, inv) = cluster();
    eks.with_state(|s| {
        s.insights_unavailable = Some("ListInsights (cluster c1): UnknownOperationException".into())
    });
    let r = preflight(&eks, V34, &inv, &opts(false), &NoProgress)
        .await
        .expect("not blocked by a missing API");
    assert!(
        matches!(r.insights, InsightsCheck::Unknown { ref reason } if reason.contains("UnknownOperation"))
    );
    assert!(r.warnings.iter().any(|w| w.code == "INSIGHTS_UNAVAILABLE"));

    // The classification AwsEks uses: unknown operation / denied / 404 other than not-found.
    let api = |code: &str, status| EksError::Api {
        operation: "ListInsights",
        resource: "cluster c1".into(),
        code: code.into(),
        message: String::new(),
        status: Some(status),
    };
    assert!(api("UnknownOperationException", 404).is_unavailable_operation());
    assert!(api("AccessDeniedException", 403).is_unavailable_operation());
    assert!(!api("ResourceNotFoundException", 404).is_unavailable_operation());
    assert!(!api("ThrottlingException", 429).is_unavailable_operation());
}

#[tokio::test(start_paused = true)]
async fn insight_errors_block_and_warnings_do_not() {
    let (eks, inv) = cluster();
    let insight = |id: &str, name: &str, status| InsightDetail {
        insight: Insight {
            id: id.into(),
            name: name.into(),
            category: "UPGRADE_READINESS".into(),
            kubernetes_version: Some("1.34".into()),
            status,
            reason: "Deprecated API usage detected within last 30 days.".into(),
            description: String::new(),
        },
        recommendation: "Update manifests.".into(),
        deprecations: vec![crate::eks::DeprecatedApiUse {
            usage: "/apis/batch/v1beta1/cronjobs".into(),
            replaced_with: Some("/apis/batch/v1/cronjobs".into()),
            stop_serving_version: Some("1.25".into()),
            clients: vec!["helm/3 (4 requests in 30 days)".into()],
        }],
        resources: Vec::new(),
    };
    eks.with_state(|s| {
        s.insights = vec![
            insight(
                "i1",
                "Deprecated APIs removed in Kubernetes v1.34",
                InsightStatus::Error,
            ),
            insight(
                "i2",
                "Deprecated APIs removed in Kubernetes v1.35",
                InsightStatus::Warning,
            ),
            insight("i3", "Cluster health issues", InsightStatus::Passing),
        ];
        s.insights[1].insight.kubernetes_version = Some("1.34".into());
    });
    let r = blocked(
        preflight(&eks, V34, &inv, &opts(false), &NoProgress)
            .await
            .unwrap_err(),
    );
    assert_eq!(r.blockers.len(), 1, "{:?}", r.blockers);
    let b = &r.blockers[0];
    assert_eq!(b.code, "DEPRECATED_API");
    assert!(
        b.reason
            .contains("/apis/batch/v1beta1/cronjobs → /apis/batch/v1/cronjobs"),
        "{b}"
    );
    assert!(b.reason.contains("helm/3"), "{b}");
    assert!(r.warnings.iter().any(|w| w.subject.contains("v1.35")));
    let InsightsCheck::Checked { not_passing } = &r.insights else {
        panic!("{:?}", r.insights)
    };
    assert_eq!(not_passing.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn deprecated_apis_the_agent_saw_called_block_when_the_target_removes_them() {
    let (eks, mut inv) = cluster();
    let api = |group: &str, version: &str, resource: &str, removed: &str| DeprecatedApi {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        subresource: String::new(),
        removed_release: removed.into(),
    };
    inv.deprecated_apis = Some(DeprecatedApiScan::Checked(vec![
        api("resource.k8s.io", "v1beta1", "resourceclaims", "1.34"),
        api("storage.k8s.io", "v1beta1", "volumeattributesclasses", "1.37"),
        api("", "v1", "componentstatuses", ""),
    ]));
    let r = blocked(
        preflight(&eks, V34, &inv, &opts(false), &NoProgress)
            .await
            .unwrap_err(),
    );
    assert_eq!(r.blockers.len(), 1, "{:?}", r.blockers);
    let b = &r.blockers[0];
    assert_eq!(
        (b.code, b.subject.as_str()),
        (
            "DEPRECATED_API",
            "api /apis/resource.k8s.io/v1beta1/resourceclaims"
        )
    );
    assert!(b.reason.contains("removed in 1.34"), "{}", b.reason);
    // Removed later: a warning; no removal scheduled: nothing.
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert_eq!(
        r.warnings[0].subject,
        "api /apis/storage.k8s.io/v1beta1/volumeattributesclasses"
    );
    assert!(r.warnings[0].reason.contains("removed in 1.37"));

    // A check the agent could not make warns with its reason; one it never made says so.
    inv.deprecated_apis = Some(DeprecatedApiScan::Unavailable("GET /metrics is forbidden".into()));
    let r = preflight(&eks, V34, &inv, &opts(false), &NoProgress)
        .await
        .expect("not a blocker");
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].code, "DEPRECATED_API_CHECK_UNAVAILABLE");
    assert!(r.warnings[0].reason.contains("forbidden"));
    inv.deprecated_apis = None;
    let r = preflight(&eks, V34, &inv, &opts(false), &NoProgress)
        .await
        .expect("not a blocker");
    assert!(r.warnings[0].reason.contains("older agent"), "{:?}", r.warnings);
}

#[tokio::test(start_paused = true)]
async fn capacity_skew_and_agent_findings() {
    let (eks, mut inv) = cluster();
    // ng-a may lose both its nodes at once.
    eks.with_state(|s| {
        s.nodegroups.get_mut("ng-a").unwrap().nodegroup.update_config = Some(UpdateConfig {
            max_unavailable: None,
            max_unavailable_percentage: Some(100),
        })
    });
    // One ng-b node is NotReady; a Karpenter node is four minors behind 1.34; a PDB blocks.
    inv.node_groups[1].ready = 1;
    inv.nodes.push(InventoryNode {
        name: "karpenter-1".into(),
        group: None,
        kubelet_version: "v1.30.2".into(),
        ready: true,
    });
    inv.blocking_pdbs.push(InventoryPdb {
        name: "shop/cache".into(),
        expected: 1,
        healthy: 1,
        desired: 1,
    });
    let r = blocked(
        preflight(&eks, V34, &inv, &opts(false), &NoProgress)
            .await
            .unwrap_err(),
    );
    let codes: Vec<(&str, &str)> = r.blockers.iter().map(|b| (b.code, b.subject.as_str())).collect();
    assert!(codes.contains(&("CAPACITY", "nodegroup ng-a")), "{codes:?}");
    assert!(
        codes.contains(&("KUBELET_SKEW", "nodes in no node group")),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("PDB_ZERO_DISRUPTIONS", "pdb shop/cache")),
        "{codes:?}"
    );
    assert!(r
        .warnings
        .iter()
        .any(|w| w.code == "CAPACITY" && w.subject == "nodegroup ng-b" && w.reason.contains("1 of 2")));
    assert!(r.warnings.iter().any(|w| w.code == "UNGROUPED_NODES"));
    let capacity = r.blockers.iter().find(|b| b.code == "CAPACITY").unwrap();
    assert!(
        capacity.reason.contains("maxUnavailablePercentage 100%"),
        "{capacity}"
    );
    assert!(capacity.reason.contains("at most 1"), "{capacity}");

    // An agent in another cluster, and a group not ACTIVE.
    let (eks, mut inv) = cluster();
    inv.api_server_version = "v1.31.0-eks-1".into();
    eks.with_state(|s| s.nodegroups.get_mut("ng-b").unwrap().nodegroup.status = NodegroupStatus::Updating);
    let r = blocked(
        preflight(&eks, V34, &inv, &opts(false), &NoProgress)
            .await
            .unwrap_err(),
    );
    assert!(r.blockers.iter().any(|b| b.code == "AGENT_MISMATCH"));
    assert!(r
        .blockers
        .iter()
        .any(|b| b.code == "NODEGROUP_NOT_ACTIVE" && b.subject == "nodegroup ng-b"));
}

#[tokio::test(start_paused = true)]
async fn a_hop_begun_earlier_continues() {
    let (eks, mut inv) = cluster();
    // The control plane reached 1.34 in an earlier operation; ng-a too; ng-b did not.
    eks.with_state(|s| {
        s.version = "1.34".into();
        s.nodegroups.get_mut("ng-a").unwrap().nodegroup.version = Some("1.34".into());
    });
    inv.api_server_version = "v1.34.1-eks-1".into();
    let r = preflight(&eks, V34, &inv, &opts(false), &NoProgress)
        .await
        .expect("a begun hop continues");
    assert!(r.continuing);
    assert_eq!(r.insights, InsightsCheck::NotNeeded);
    assert!(r.warnings.iter().any(|w| w.code == "CONTINUING"));
    assert_eq!(count(&eks, "ListInsights"), 0);
    // The next hop from here is refused until ng-b follows.
    let r = blocked(
        preflight(&eks, MinorVersion::new(1, 35), &inv, &opts(false), &NoProgress)
            .await
            .unwrap_err(),
    );
    assert!(r
        .blockers
        .iter()
        .any(|b| b.code == "VERSION_SKEW" && b.subject == "nodegroup ng-b"));
}

#[tokio::test(start_paused = true)]
async fn eks_errors_are_typed_and_throttling_is_retryable() {
    let (eks, inv) = cluster();
    eks.fail_next(throttled("DescribeCluster"));
    let e = preflight(&eks, V34, &inv, &opts(false), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.retryable()), ("EKS_API", true), "{e}");
    let e = UpgradeError::Eks(EksError::Timeout {
        what: "x".into(),
        waited: Duration::from_secs(1),
        last: "InProgress".into(),
    });
    assert_eq!((e.code(), e.retryable()), ("EKS_TIMEOUT", true));
    assert_eq!(
        MinorVersion::parse("1.3x").unwrap_err().code(),
        "INVALID_PARAMETER"
    );
}

// === control plane ===

#[tokio::test(start_paused = true)]
async fn polls_are_paced_by_what_such_updates_took_across_the_fleet() {
    let durations = Arc::new(UpdateDurations::default());
    let paced = UpgradeOptions {
        durations: Some(durations.clone()),
        ..opts(false)
    };
    // Until three updates have ended, polls follow the backoff: 0 s, 1 s, 3 s (the third sees
    // the end), and each end is learnt.
    for _ in 0..3 {
        let (eks, _) = cluster();
        let t = tokio::time::Instant::now();
        upgrade_control_plane(&eks, V34, RunMode::Fresh, &paced, &NoProgress)
            .await
            .expect("upgraded");
        assert_eq!(count(&eks, "DescribeUpdate"), 3);
        assert_eq!(t.elapsed(), Duration::from_secs(3));
    }
    assert_eq!(durations.low("control-plane"), Some(Duration::from_secs(3)));
    // Then: one early look at 1 s, none again before one backoff step (1 s) short of 3 s, then
    // the backoff.
    let (eks, _) = cluster();
    eks.with_state(|s| s.polls = 1);
    let t = tokio::time::Instant::now();
    upgrade_control_plane(&eks, V34, RunMode::Fresh, &paced, &NoProgress)
        .await
        .expect("upgraded");
    assert_eq!(count(&eks, "DescribeUpdate"), 2);
    assert_eq!(t.elapsed(), Duration::from_secs(2));

    // A quick failure is still seen at the early look.
    let (eks, _) = cluster();
    eks.with_state(|s| {
        s.polls = 0;
        s.update_failures.insert(
            "cluster".into(),
            vec![UpdateErrorDetail {
                code: "InsufficientFreeAddresses".into(),
                message: "the subnets have too few free addresses".into(),
                resource_ids: Vec::new(),
            }],
        );
    });
    for _ in 0..32 {
        durations.record("control-plane", Duration::from_secs(600));
    }
    assert_eq!(durations.low("control-plane"), Some(Duration::from_secs(600)));
    let t = tokio::time::Instant::now();
    let e = upgrade_control_plane(&eks, V34, RunMode::Fresh, &paced, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "CONTROL_PLANE_UPDATE_FAILED", "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // An adopted update (begun before this attempt) is neither paced nor learnt from.
    let before = durations.low("control-plane");
    let (eks, _) = cluster();
    eks.update_cluster_version("1.34").await.unwrap();
    upgrade_control_plane(&eks, V34, RunMode::Recheck, &paced, &NoProgress)
        .await
        .expect("adopted");
    assert_eq!(durations.low("control-plane"), before);
}

#[tokio::test(start_paused = true)]
async fn control_plane_recheck_adopts_the_update_in_flight() {
    let (eks, _) = cluster();
    let issued = eks.update_cluster_version("1.34").await.unwrap();
    let cp = upgrade_control_plane(&eks, V34, RunMode::Recheck, &opts(false), &NoProgress)
        .await
        .expect("adopted");
    assert!(cp.resumed);
    assert_eq!(cp.update_id.as_deref(), Some(issued.id.as_str()));
    assert_eq!((cp.from, cp.to), (V33, V34));
    assert_eq!(count(&eks, "UpdateClusterVersion"), 1);

    // Fresh mode, but a racing UpdateClusterVersion: ResourceInUse leads to the same adoption.
    let (eks, _) = cluster();
    let issued = eks.update_cluster_version("1.34").await.unwrap();
    eks.with_state(|s| s.status = "ACTIVE".into());
    let cp = upgrade_control_plane(&eks, V34, RunMode::Fresh, &opts(false), &NoProgress)
        .await
        .expect("adopted after ResourceInUse");
    assert_eq!(cp.update_id.as_deref(), Some(issued.id.as_str()));

    // Recheck with nothing in progress issues it once.
    let (eks, _) = cluster();
    let cp = upgrade_control_plane(&eks, V34, RunMode::Recheck, &opts(false), &NoProgress)
        .await
        .expect("issued");
    assert!(!cp.resumed);
    assert_eq!(count(&eks, "UpdateClusterVersion"), 1);
    assert_eq!(
        cp.outputs().summary,
        format!("control plane 1.33 → 1.34 (update {})", cp.update_id.unwrap())
    );
}

#[tokio::test(start_paused = true)]
async fn control_plane_refuses_skipping_a_minor() {
    let (eks, _) = cluster();
    let e = upgrade_control_plane(
        &eks,
        MinorVersion::new(1, 35),
        RunMode::Fresh,
        &opts(false),
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "VERSION_SKEW");
    assert!(e.to_string().contains("needs it at 1.34"), "{e}");
    assert_eq!(count(&eks, "UpdateClusterVersion"), 0);
}

// === node groups ===

#[tokio::test(start_paused = true)]
async fn node_groups_go_one_after_another_with_progress() {
    let (eks, _) = cluster();
    eks.with_state(|s| s.version = "1.34".into());
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |u: &ProgressUpdate| seen.lock().unwrap().push(u.message.clone());
    let out = upgrade_nodegroups(&eks, V34, RunMode::Fresh, &opts(false), &progress)
        .await
        .expect("upgraded");
    assert_eq!(out.groups.len(), 2);
    assert!(out.groups.iter().all(|g| g.outcome == NodegroupOutcome::Updated));
    // One group's update ends before the next one's starts.
    let calls: Vec<String> = eks
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("UpdateNodegroupVersion") || c.starts_with("DescribeNodegroup"))
        .collect();
    let a = calls
        .iter()
        .position(|c| c.starts_with("UpdateNodegroupVersion ng-a"))
        .unwrap();
    let b_describe = calls.iter().position(|c| c == "DescribeNodegroup ng-b").unwrap();
    assert!(a < b_describe, "{calls:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|m| m.starts_with("nodegroup 2/2 ng-b: updating 1.33 → 1.34 (maxUnavailable 1")),
        "{seen:?}"
    );
    // Again: nothing to do.
    let again = upgrade_nodegroups(&eks, V34, RunMode::Recheck, &opts(false), &NoProgress)
        .await
        .unwrap();
    assert!(again
        .groups
        .iter()
        .all(|g| g.outcome == NodegroupOutcome::AlreadyAtTarget));
    assert_eq!(count(&eks, "UpdateNodegroupVersion"), 2);
}

#[tokio::test(start_paused = true)]
async fn node_group_failures_are_typed() {
    let (eks, _) = cluster();
    eks.with_state(|s| {
        s.version = "1.34".into();
        s.update_failures.insert(
            "nodegroup/ng-a".into(),
            vec![UpdateErrorDetail {
                code: "NodeCreationFailure".into(),
                message: "Instances failed to join the kubernetes cluster".into(),
                resource_ids: vec!["i-0abc".into()],
            }],
        );
    });
    let e = upgrade_nodegroups(&eks, V34, RunMode::Fresh, &opts(true), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NODEGROUP_UPDATE_FAILED");
    assert!(
        e.to_string().contains("NodeCreationFailure") && e.to_string().contains("i-0abc"),
        "{e}"
    );
    assert!(eks
        .calls()
        .iter()
        .any(|c| c == "UpdateNodegroupVersion ng-a 1.34 force=true"));
    // ng-b was not touched after ng-a failed.
    assert!(!eks
        .calls()
        .iter()
        .any(|c| c.starts_with("UpdateNodegroupVersion ng-b")));

    let (eks, _) = cluster();
    eks.with_state(|s| {
        s.nodegroups.get_mut("ng-a").unwrap().nodegroup.status = NodegroupStatus::CreateFailed
    });
    eks.with_state(|s| s.version = "1.34".into());
    let e = upgrade_nodegroups(&eks, V34, RunMode::Fresh, &opts(false), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.retryable()), ("NODEGROUP_NOT_ACTIVE", false));
}

// === add-ons ===

#[tokio::test(start_paused = true)]
async fn add_ons_move_to_the_default_and_keep_newer_compatible_ones() {
    let (eks, mut inv) = cluster();
    eks.with_state(|s| s.version = "1.34".into());
    // vpc-cni is already at the default; a newer compatible coredns would be kept.
    eks.set_addon_versions(
        "coredns",
        "1.34",
        &["v1.12.3-eksbuild.1", "v1.12.4-eksbuild.1", "v1.11.4-eksbuild.2"],
    );
    inv.addon_workloads = Some(vec![AddonWorkload {
        addon: "kube-proxy".into(),
        image: "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/kube-proxy:v1.33.5-minimal-eksbuild.1"
            .into(),
    }]);
    let out = upgrade_addons(&eks, V34, Some(&inv), RunMode::Fresh, &opts(false), &NoProgress)
        .await
        .expect("add-ons");
    let coredns = out.addons.iter().find(|a| a.name == "coredns").unwrap();
    assert_eq!(
        (coredns.outcome.clone(), coredns.to.as_str()),
        (AddonOutcome::Updated, "v1.12.3-eksbuild.1")
    );
    let cni = out.addons.iter().find(|a| a.name == "vpc-cni").unwrap();
    assert_eq!(cni.outcome, AddonOutcome::AlreadyCurrent);
    let SelfManagedAddons::Checked { lagging, .. } = &out.self_managed else {
        panic!("{:?}", out.self_managed)
    };
    assert_eq!(lagging.len(), 1);
    assert_eq!(lagging[0].addon, "kube-proxy");
    assert_eq!(lagging[0].expected, "v1.34.1-eksbuild.1");
    assert!(
        out.summary().contains("self-managed lagging: kube-proxy v1.33.5"),
        "{}",
        out.summary()
    );

    // A newer, compatible version stays.
    eks.with_state(|s| s.addons.get_mut("coredns").unwrap().addon.version = "v1.12.4-eksbuild.1".into());
    let out = upgrade_addons(&eks, V34, None, RunMode::Recheck, &opts(false), &NoProgress)
        .await
        .unwrap();
    let coredns = out.addons.iter().find(|a| a.name == "coredns").unwrap();
    assert_eq!(coredns.outcome, AddonOutcome::AlreadyCurrent);
    assert!(matches!(out.self_managed, SelfManagedAddons::NotChecked { .. }));
    assert_eq!(count(&eks, "UpdateAddon"), 1);
}

#[tokio::test(start_paused = true)]
async fn add_on_failures_and_stuck_statuses_are_typed() {
    let (eks, _) = cluster();
    eks.with_state(|s| {
        s.version = "1.34".into();
        s.update_failures.insert(
            "addon/coredns".into(),
            vec![UpdateErrorDetail {
                code: "ConfigurationConflict".into(),
                message: "Conflicts found".into(),
                resource_ids: vec![],
            }],
        );
    });
    let e = upgrade_addons(&eks, V34, None, RunMode::Fresh, &opts(false), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ADDON_UPDATE_FAILED");
    assert!(e.to_string().contains("ConfigurationConflict"), "{e}");

    let (eks, _) = cluster();
    eks.with_state(|s| {
        s.version = "1.34".into();
        s.addons.get_mut("vpc-cni").unwrap().addon.status = AddonStatus::Degraded;
    });
    let mut short = opts(false);
    short.wait.timeout = Duration::from_secs(30);
    let e = upgrade_addons(&eks, V34, None, RunMode::Fresh, &short, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.retryable()), ("ADDON_NOT_ACTIVE", true), "{e}");
}
