//! The coordinator's [`AwsEks`] against flotilla-sim's EKS and Auto Scaling APIs: the real
//! aws-sdk clients over loopback, exercising create-and-wait, the self-managed ASG removal, a
//! control-plane upgrade, throttling retried through, error mapping, and DescribeAddonVersions
//! answers shared by the clusters of one connector.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_eks::config::{Credentials, SharedCredentialsProvider};
use flotilla_coordinator::eks::aws::{AwsConnector, AwsEks, ConnectOptions, EksClusterConfig};
use flotilla_coordinator::eks::{
    wait_nodegroup, wait_update, AsgSize, Backoff, Eks, EksError, NodegroupStatus, NodegroupTemplate,
    UpdateStatus, WaitOptions,
};
use flotilla_coordinator::metrics::CoordinatorMetrics;
use flotilla_sim::fleet::Fleet;
use flotilla_sim::resources::Kind;
use flotilla_sim::scenario::Scenario;
use serde_json::Value;

async fn start(scenario: &Scenario) -> Fleet {
    Fleet::start_scenario(scenario, 1, Default::default())
        .await
        .expect("fleet starts")
}

fn config(fleet: &Fleet, cluster: &str) -> EksClusterConfig {
    let url = fleet.aws_url.clone().expect("fleet serves AWS");
    EksClusterConfig {
        region: fleet.aws().expect("aws").region.clone(),
        eks_cluster_name: cluster.into(),
        role_arn: None,
        eks_endpoint_url: Some(url.clone()),
        autoscaling_endpoint_url: Some(url),
    }
}

/// Standard retries with short backoffs, and the simulator's dummy credentials.
fn options() -> ConnectOptions {
    ConnectOptions {
        retry: RetryConfig::standard()
            .with_max_attempts(12)
            .with_initial_backoff(Duration::from_millis(10))
            .with_max_backoff(Duration::from_millis(100)),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "AKIDFLOTILLASIM",
            "not-a-secret",
            None,
            None,
            "flotilla-coordinator-tests",
        ))),
        ..ConnectOptions::default()
    }
}

async fn connect(fleet: &Fleet, cluster: &str) -> AwsEks {
    AwsEks::connect_with(&config(fleet, cluster), options())
        .await
        .expect("connects")
}

fn waits(timeout_secs: u64) -> WaitOptions {
    WaitOptions {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            factor: 2.0,
            jitter: 0.2,
        },
        timeout: Duration::from_secs(timeout_secs),
    }
}

/// Ready nodes carrying `label=value`, read from the simulator's store.
fn ready_nodes(fleet: &Fleet, cluster: &str, label: &str, value: &str) -> usize {
    let c = fleet.cluster(cluster).expect("cluster");
    let store = c.lock();
    store
        .list(Kind::Node, None)
        .filter_map(|e| serde_json::from_slice::<Value>(&e.json).ok())
        .filter(|n| n["metadata"]["labels"][label] == value)
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .count()
}

fn template() -> NodegroupTemplate {
    serde_json::from_value(serde_json::json!({
        "nodegroupName": "ng-new",
        "instanceTypes": ["m5.large"],
        "scalingConfig": {"minSize": 1, "maxSize": 4, "desiredSize": 3},
        "subnets": ["subnet-0a"],
        "nodeRole": "arn:aws:iam::111122223333:role/node",
        "labels": {"team": "payments"},
        "taints": [{"key": "dedicated", "value": "payments", "effect": "NO_SCHEDULE"}],
        "updateConfig": {"maxUnavailablePercentage": 33}
    }))
    .expect("template")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_and_create_nodegroup_until_active() {
    let fleet = start(&Scenario::default_scenario()).await;
    let eks = connect(&fleet, "sim-1").await;
    let c = eks.describe_cluster().await.expect("describe");
    assert_eq!(
        (c.name.as_str(), c.version.as_str(), c.status.as_str()),
        ("sim-1", "1.33", "ACTIVE")
    );

    let ng = eks.create_nodegroup(&template()).await.expect("create");
    assert_eq!(ng.status, NodegroupStatus::Creating);
    assert_eq!(ng.desired_size, Some(3));
    let ng = wait_nodegroup(&eks, "ng-new", NodegroupStatus::Active, &waits(30))
        .await
        .expect("ACTIVE");
    assert_eq!(ng.version.as_deref(), Some("1.33"));
    assert!(eks
        .list_nodegroups()
        .await
        .unwrap()
        .contains(&"ng-new".to_string()));
    // ACTIVE means the nodes registered; give kubelets a moment to report Ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ready_nodes(&fleet, "sim-1", "eks.amazonaws.com/nodegroup", "ng-new") < 3 {
        assert!(tokio::time::Instant::now() < deadline, "ng-new nodes not Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready_nodes(&fleet, "sim-1", "team", "payments"), 3);

    // Creating it again is an API error with the AWS code, not retried.
    let e = eks.create_nodegroup(&template()).await.unwrap_err();
    assert_eq!(e.code(), Some("ResourceInUseException"), "{e}");
    assert!(!e.retryable());
    // A bad template never reaches the API.
    let mut bad = template();
    bad.scaling_config.desired_size = 9;
    assert!(matches!(
        eks.create_nodegroup(&bad).await,
        Err(EksError::InvalidTemplate { field, .. }) if field == "scalingConfig.desiredSize"
    ));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_asg_found_by_tags_scaled_to_zero_and_deleted() {
    let fleet = start(&Scenario::default_scenario()).await;
    let eks = connect(&fleet, "sim-1").await;
    let asg = eks
        .find_self_managed_asg("ng-old")
        .await
        .expect("lookup")
        .expect("ng-old has an ASG");
    assert!(
        asg.name.starts_with("eksctl-sim-1-nodegroup-ng-old-"),
        "{}",
        asg.name
    );
    assert_eq!(
        (asg.min_size, asg.max_size, asg.desired_capacity, asg.instances),
        (1, 8, 4, 4)
    );
    assert!(eks.find_self_managed_asg("ng-none").await.unwrap().is_none());

    // Not empty yet: delete without force is refused with the AWS code.
    let e = eks.delete_asg(&asg.name, false).await.unwrap_err();
    assert_eq!(e.code(), Some("ResourceInUse"), "{e}");

    eks.scale_asg(
        &asg.name,
        AsgSize {
            desired: 0,
            min: 0,
            max: 0,
        },
    )
    .await
    .expect("scale to 0");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = eks
            .find_self_managed_asg("ng-old")
            .await
            .unwrap()
            .expect("still there");
        if now.instances == 0 {
            assert_eq!(now.desired_capacity, 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ASG did not empty: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready_nodes(&fleet, "sim-1", "alpha.eksctl.io/nodegroup-name", "ng-old"),
        0
    );
    eks.delete_asg(&asg.name, false).await.expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while eks.find_self_managed_asg("ng-old").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "ASG not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_upgrade_waits_successful() {
    let fleet = start(&Scenario::default_scenario()).await;
    let eks = connect(&fleet, "sim-1").await;
    let e = eks.update_cluster_version("1.35").await.unwrap_err();
    assert_eq!(e.code(), Some("InvalidParameterException"), "{e}");
    assert!(e.to_string().contains("1.33 to 1.35"), "{e}");

    let u = eks.update_cluster_version("1.34").await.expect("update");
    assert_eq!(u.status, UpdateStatus::InProgress);
    assert_eq!(u.kind.as_deref(), Some("VersionUpdate"));
    let done = wait_update(&eks, &u.id, None, &waits(30))
        .await
        .expect("Successful");
    assert_eq!(done.status, UpdateStatus::Successful);
    let c = eks.describe_cluster().await.unwrap();
    assert_eq!((c.version.as_str(), c.status.as_str()), ("1.34", "ACTIVE"));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_through() {
    let s = Scenario::from_yaml("eks:\n  faults:\n    throttleRate: 0.3\n", "test.yaml").expect("scenario");
    let fleet = start(&s).await;
    let eks = connect(&fleet, "sim-1").await;
    for _ in 0..10 {
        let c = eks.describe_cluster().await.expect("retried through throttling");
        assert_eq!(c.version, "1.33");
        assert!(eks
            .find_self_managed_asg("ng-old")
            .await
            .expect("asg lookup")
            .is_some());
    }

    // With retries off, the same fault surfaces as a retryable EksError with the AWS code.
    let no_retry = AwsEks::connect_with(
        &config(&fleet, "sim-1"),
        ConnectOptions {
            retry: RetryConfig::disabled(),
            ..options()
        },
    )
    .await
    .unwrap();
    let mut seen = None;
    for _ in 0..200 {
        if let Err(e) = no_retry.describe_cluster().await {
            seen = Some(e);
            break;
        }
    }
    let e = seen.expect("at a 30% rate, some call is throttled");
    assert_eq!(e.code(), Some("ThrottlingException"), "{e}");
    assert!(e.retryable());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cluster_is_a_non_retryable_error_naming_it() {
    let fleet = start(&Scenario::default_scenario()).await;
    let metrics = CoordinatorMetrics::new();
    let eks = connect(&fleet, "nope").await.with_metrics(metrics.eks_errors());
    let e = eks.describe_cluster().await.unwrap_err();
    assert!(!e.retryable());
    assert!(e.is_not_found());
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let s = e.to_string();
    assert!(
        s.contains("cluster nope") && s.contains("No cluster found for name: nope."),
        "{s}"
    );
    let e = wait_nodegroup(&eks, "ng", NodegroupStatus::Active, &waits(5))
        .await
        .unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("nope/ng"), "{e}");
    let errors = |operation: &str, kind: &str| {
        let series =
            format!("flotilla_coordinator_eks_errors_total{{kind=\"{kind}\",operation=\"{operation}\"}} ");
        flotilla_proto::telemetry::metrics::encode(metrics.registry())
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse::<f64>().ok())
    };
    assert_eq!(errors("DescribeCluster", "not_found"), Some(1.0));
    assert_eq!(
        errors("DescribeNodegroup", "not_found"),
        Some(1.0),
        "the wait stops at the first"
    );

    // Nothing listening: a transport error, retryable.
    let mut cfg = config(&fleet, "sim-1");
    fleet.shutdown().await;
    cfg.eks_endpoint_url = Some("http://127.0.0.1:9".into());
    let dead = AwsEks::connect_with(
        &cfg,
        ConnectOptions {
            retry: RetryConfig::disabled(),
            ..options()
        },
    )
    .await
    .unwrap()
    .with_metrics(metrics.eks_errors());
    let e = dead.describe_cluster().await.unwrap_err();
    assert!(matches!(e, EksError::Transport { .. }), "{e:?}");
    assert!(e.retryable());
    assert_eq!(errors("DescribeCluster", "transport"), Some(1.0));
}

#[tokio::test]
async fn role_arn_config_builds_an_assume_role_client() {
    let cfg: EksClusterConfig = serde_json::from_str(
        r#"{"region":"us-west-2","eksClusterName":"prod-1","roleArn":"arn:aws:iam::111122223333:role/flotilla","eksEndpointUrl":"http://127.0.0.1:9"}"#,
    )
    .expect("config");
    let eks = AwsEks::connect_with(
        &cfg,
        ConnectOptions {
            retry: RetryConfig::disabled(),
            ..options()
        },
    )
    .await
    .expect("client builds; STS is only called on first use");
    assert_eq!(eks.cluster_name(), "prod-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addon_versions_are_asked_once_for_every_cluster_of_a_connector() {
    let fleet = Fleet::start_scenario(&Scenario::default_scenario(), 3, Default::default())
        .await
        .expect("fleet starts");
    let aws = fleet.aws().expect("aws");
    let asked = || {
        aws.calls()
            .get("GET /addons/supported-versions")
            .copied()
            .unwrap_or(0)
    };
    let mut connector = AwsConnector::new(options());
    let mut answers = Vec::new();
    for c in ["sim-1", "sim-2", "sim-3"] {
        let eks = connector.connect(&config(&fleet, c)).await.expect("connects");
        for _ in 0..2 {
            answers.push(
                eks.describe_addon_versions("coredns", "1.34")
                    .await
                    .expect("versions"),
            );
        }
    }
    assert_eq!(asked(), 1, "{:?}", aws.calls());
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    assert!(answers[0].default_version.is_some(), "{:?}", answers[0]);
    // Another add-on or minor is another question; a client of its own asks again.
    connector
        .connect(&config(&fleet, "sim-1"))
        .await
        .expect("connects")
        .describe_addon_versions("coredns", "1.35")
        .await
        .expect("versions");
    assert_eq!(asked(), 2);
    connect(&fleet, "sim-1")
        .await
        .describe_addon_versions("coredns", "1.34")
        .await
        .expect("versions");
    assert_eq!(asked(), 3);
    fleet.shutdown().await;
}
