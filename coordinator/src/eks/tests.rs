//! Template validation, backoff arithmetic, and the waits against [`FakeEks`] with paused time.

use std::time::Duration;

use super::fake::FakeEks;
use super::*;

fn template() -> NodegroupTemplate {
    serde_json::from_value(serde_json::json!({
        "nodegroupName": "ng-new",
        "instanceTypes": ["m5.large"],
        "scalingConfig": {"minSize": 1, "maxSize": 4, "desiredSize": 2},
        "subnets": ["subnet-0a"],
        "nodeRole": "arn:aws:iam::111122223333:role/node",
        "labels": {"team": "payments"},
        "taints": [{"key": "dedicated", "value": "payments", "effect": "NO_SCHEDULE"}],
        "capacityType": "ON_DEMAND",
        "updateConfig": {"maxUnavailable": 1}
    }))
    .expect("template parses")
}

fn fast() -> WaitOptions {
    WaitOptions {
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            factor: 2.0,
            jitter: 0.0,
        },
        timeout: Duration::from_secs(60),
    }
}

fn throttled() -> EksError {
    EksError::Api {
        operation: "DescribeNodegroup",
        resource: "nodegroup c/ng".into(),
        code: "ThrottlingException".into(),
        message: "Rate exceeded".into(),
        status: Some(429),
    }
}

#[test]
fn template_round_trips_and_validates() {
    let t = template();
    t.validate().expect("valid");
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["scalingConfig"]["desiredSize"], 2);
    assert_eq!(v["taints"][0]["effect"], "NO_SCHEDULE");
    let e = serde_json::from_value::<NodegroupTemplate>(serde_json::json!({
        "nodegroupName": "x", "instanceTypes": [], "scalingConfig": {"minSize":0,"maxSize":1,"desiredSize":0},
        "subnets": [], "nodeRole": "arn:x", "diskSize": 20
    }))
    .unwrap_err();
    assert!(e.to_string().contains("diskSize"), "{e}");
}

#[test]
fn validate_names_the_field() {
    let field = |f: fn(&mut NodegroupTemplate)| {
        let mut t = template();
        f(&mut t);
        match t.validate() {
            Err(EksError::InvalidTemplate { field, .. }) => field,
            other => panic!("expected InvalidTemplate, got {other:?}"),
        }
    };
    assert_eq!(field(|t| t.nodegroup_name = "-bad".into()), "nodegroupName");
    assert_eq!(field(|t| t.nodegroup_name = "a".repeat(64)), "nodegroupName");
    assert_eq!(field(|t| t.instance_types.clear()), "instanceTypes");
    assert_eq!(
        field(|t| t.scaling_config.desired_size = 9),
        "scalingConfig.desiredSize"
    );
    assert_eq!(field(|t| t.scaling_config.min_size = 5), "scalingConfig.minSize");
    assert_eq!(field(|t| t.scaling_config.max_size = 0), "scalingConfig.maxSize");
    assert_eq!(field(|t| t.subnets.clear()), "subnets");
    assert_eq!(field(|t| t.node_role = "node".into()), "nodeRole");
    assert_eq!(field(|t| t.taints[0].key.clear()), "taints[0].key");
    assert_eq!(field(|t| t.capacity_type = Some("CHEAP".into())), "capacityType");
    assert_eq!(
        field(|t| t.update_config = Some(UpdateConfig {
            max_unavailable: Some(1),
            max_unavailable_percentage: Some(10)
        })),
        "updateConfig"
    );
    assert_eq!(
        field(|t| t.update_config = Some(UpdateConfig {
            max_unavailable: Some(0),
            max_unavailable_percentage: None
        })),
        "updateConfig.maxUnavailable"
    );
}

#[test]
fn retryable_classifies_codes_and_statuses() {
    assert!(throttled().retryable());
    let api = |code: &str, status| EksError::Api {
        operation: "DescribeCluster",
        resource: "cluster c".into(),
        code: code.into(),
        message: String::new(),
        status,
    };
    assert!(api("Throttling", Some(400)).retryable());
    assert!(api("ServerException", Some(500)).retryable());
    assert!(api("Whatever", Some(503)).retryable());
    assert!(!api("ResourceNotFoundException", Some(404)).retryable());
    assert!(api("ResourceNotFoundException", Some(404)).is_not_found());
    assert!(!api("InvalidParameterException", Some(400)).retryable());
    assert!(EksError::Transport {
        operation: "DescribeCluster",
        resource: "cluster c".into(),
        message: "connection refused".into()
    }
    .retryable());
    assert!(!EksError::Unsupported("x".into()).retryable());
}

#[test]
fn backoff_grows_caps_and_jitters() {
    let b = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(10),
        factor: 2.0,
        jitter: 0.5,
    };
    assert_eq!(b.delay(0, 0.0), Duration::from_secs(1));
    assert_eq!(b.delay(1, 0.0), Duration::from_secs(2));
    assert_eq!(b.delay(3, 0.0), Duration::from_secs(8));
    assert_eq!(b.delay(4, 0.0), Duration::from_secs(10));
    assert_eq!(b.delay(1000, 0.0), Duration::from_secs(10));
    // Jitter takes away up to half.
    assert_eq!(b.delay(4, 1.0), Duration::from_secs(5));
    assert_eq!(b.delay(4, 0.5), Duration::from_secs_f64(7.5));
    // Out-of-range inputs are clamped, not trusted.
    assert_eq!(b.delay(0, 7.0), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn wait_nodegroup_polls_with_backoff_until_active() {
    let eks = FakeEks::new("c", "1.33");
    eks.with_state(|s| s.polls = 4);
    eks.create_nodegroup(&template()).await.unwrap();
    let start = tokio::time::Instant::now();
    let ng = wait_nodegroup(&eks, "ng-new", NodegroupStatus::Active, &fast())
        .await
        .expect("active");
    assert_eq!(ng.status, NodegroupStatus::Active);
    // Four CREATING polls, then ACTIVE: sleeps of 1 + 2 + 4 + 8 (capped) seconds.
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    let describes = eks
        .calls()
        .iter()
        .filter(|c| c.starts_with("DescribeNodegroup"))
        .count();
    assert_eq!(describes, 5);
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_ridden_through_and_others_end_the_wait() {
    let eks = FakeEks::new("c", "1.33");
    eks.add_nodegroup("ng", [NodegroupStatus::Creating, NodegroupStatus::Active]);
    eks.fail_next(throttled());
    eks.fail_next(throttled());
    let ng = wait_nodegroup(&eks, "ng", NodegroupStatus::Active, &fast())
        .await
        .expect("throttling is retried");
    assert_eq!(ng.status, NodegroupStatus::Active);

    let e = wait_nodegroup(&eks, "nope", NodegroupStatus::Active, &fast())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("c/nope"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn failure_status_ends_the_wait_with_health_issues() {
    let eks = FakeEks::new("c", "1.33");
    eks.add_nodegroup("ng", [NodegroupStatus::Creating, NodegroupStatus::CreateFailed]);
    eks.with_state(|s| {
        if let Some(ng) = s.nodegroups.get_mut("ng") {
            ng.nodegroup.health_issues = vec!["NodeCreationFailure: instances failed to join".into()];
        }
    });
    let e = wait_nodegroup(&eks, "ng", NodegroupStatus::Active, &fast())
        .await
        .unwrap_err();
    match e {
        EksError::Failed { status, detail, .. } => {
            assert_eq!(status, "CREATE_FAILED");
            assert!(detail.contains("NodeCreationFailure"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_ends_the_wait_with_the_last_state() {
    let eks = FakeEks::new("c", "1.33");
    eks.add_nodegroup("ng", [NodegroupStatus::Creating]);
    let start = tokio::time::Instant::now();
    let e = wait_nodegroup(&eks, "ng", NodegroupStatus::Active, &fast())
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(60),
        "never sleeps past the deadline"
    );
    match e {
        EksError::Timeout { last, waited, .. } => {
            assert_eq!(last, "CREATING");
            assert_eq!(waited, Duration::from_secs(60));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn wait_update_reaches_successful_and_moves_the_version() {
    let eks = FakeEks::new("c", "1.33");
    let u = eks.update_cluster_version("1.34").await.unwrap();
    assert_eq!(u.status, UpdateStatus::InProgress);
    assert_eq!(eks.describe_cluster().await.unwrap().status, "UPDATING");
    let done = wait_update(&eks, &u.id, None, &fast()).await.unwrap();
    assert_eq!(done.status, UpdateStatus::Successful);
    let c = eks.describe_cluster().await.unwrap();
    assert_eq!((c.version.as_str(), c.status.as_str()), ("1.34", "ACTIVE"));
}

#[tokio::test(start_paused = true)]
async fn failed_update_carries_eks_errors() {
    let eks = FakeEks::new("c", "1.33");
    eks.add_update("u-1", [UpdateStatus::InProgress, UpdateStatus::Failed]);
    eks.with_state(|s| {
        if let Some(u) = s.updates.get_mut("u-1") {
            u.update.errors = vec!["PodEvictionFailure: PDB blocks eviction".into()];
        }
    });
    let e = wait_update(&eks, "u-1", Some("ng"), &fast()).await.unwrap_err();
    assert!(!e.retryable());
    let s = e.to_string();
    assert!(
        s.contains("u-1") && s.contains("Failed") && s.contains("PodEvictionFailure"),
        "{s}"
    );
}

#[tokio::test(start_paused = true)]
async fn nodegroup_delete_and_asg_lifecycle_on_the_fake() {
    let eks = FakeEks::new("c", "1.33");
    eks.add_nodegroup("ng", [NodegroupStatus::Active]);
    eks.delete_nodegroup("ng").await.unwrap();
    wait_nodegroup_deleted(&eks, "ng", &fast()).await.unwrap();
    assert!(eks.list_nodegroups().await.unwrap().is_empty());

    eks.add_self_managed_asg(
        "asg-old",
        "ng-old",
        AsgSize {
            desired: 4,
            min: 1,
            max: 8,
        },
    );
    let a = eks.find_self_managed_asg("ng-old").await.unwrap().expect("found");
    assert_eq!((a.name.as_str(), a.desired_capacity), ("asg-old", 4));
    assert!(eks.find_self_managed_asg("other").await.unwrap().is_none());
    let e = eks.delete_asg("asg-old", false).await.unwrap_err();
    assert_eq!(e.code(), Some("ResourceInUse"));
    eks.scale_asg(
        "asg-old",
        AsgSize {
            desired: 0,
            min: 0,
            max: 0,
        },
    )
    .await
    .unwrap();
    eks.delete_asg("asg-old", false).await.unwrap();
    eks.add_self_managed_asg(
        "a1",
        "dup",
        AsgSize {
            desired: 1,
            min: 1,
            max: 1,
        },
    );
    eks.add_self_managed_asg(
        "a2",
        "dup",
        AsgSize {
            desired: 1,
            min: 1,
            max: 1,
        },
    );
    assert!(matches!(
        eks.find_self_managed_asg("dup").await,
        Err(EksError::AmbiguousAsg { count: 2, .. })
    ));
}

/// The IAM policy shipped for the coordinator (`deploy/iam/flotilla-coordinator-policy.json`)
/// allows every EKS and Auto Scaling call [`aws::AwsEks`] makes, and nothing it does not make.
#[test]
fn the_shipped_iam_policy_allows_exactly_the_calls_the_code_makes() {
    let source = include_str!("aws.rs");
    let mut called = std::collections::BTreeSet::new();
    for (client, service) in [(".eks", "eks"), (".asg", "autoscaling")] {
        // `self.eks.describe_cluster()` and `self\n    .eks\n    .describe_cluster()`.
        let flat: String = source.split_whitespace().collect();
        for (i, _) in flat.match_indices(&format!("{client}.")) {
            let rest = &flat[i + client.len() + 1..];
            let op: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if op.is_empty() || !rest[op.len()..].starts_with('(') {
                continue;
            }
            let pascal: String = op
                .split('_')
                .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
                .collect();
            called.insert(format!("{service}:{pascal}"));
        }
    }
    let policy: serde_json::Value = serde_json::from_str(include_str!(
        "../../../deploy/iam/flotilla-coordinator-policy.json"
    ))
    .expect("the policy is JSON");
    let allowed: std::collections::BTreeSet<String> = policy["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|s| match &s["Action"] {
            serde_json::Value::String(a) => vec![a.clone()],
            serde_json::Value::Array(a) => a.iter().filter_map(|a| a.as_str().map(str::to_string)).collect(),
            _ => vec![],
        })
        .filter(|a| !a.starts_with("iam:"))
        .collect();
    assert!(called.len() >= 19, "the scan found the calls: {called:?}");
    assert_eq!(called, allowed, "calls in aws.rs vs the policy's actions");
}
