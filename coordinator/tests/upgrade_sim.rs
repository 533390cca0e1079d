//! The coordinator's upgrade steps with the real [`AwsEks`] (aws-sdk-eks over loopback) against
//! flotilla-sim's EKS, and the agent's real inventory and postflight (kube-rs) against the same
//! simulated cluster: a 1.33 cluster upgraded to 1.34 step by step, preflight blockers (deprecated
//! APIs still called among them), a failed control-plane update, PodEvictionFailure without and
//! with `force`, and a restart that adopts the update already in progress.

use std::sync::Mutex;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_eks::config::{Credentials, SharedCredentialsProvider};
use flotilla_agent::cluster::kube::KubeCluster;
use flotilla_coordinator::eks::aws::{AwsEks, ConnectOptions, EksClusterConfig};
use flotilla_coordinator::eks::{Backoff, Eks, UpdateSubject, WaitOptions};
use flotilla_coordinator::plan::Step;
use flotilla_coordinator::upgrade::{
    preflight, upgrade_addons, upgrade_control_plane, upgrade_nodegroups, AddonOutcome, AgentInventory,
    InsightsCheck, MinorVersion, NoProgress, NodegroupOutcome, ProgressUpdate, RunMode, SelfManagedAddons,
    StepReport, UpgradeError, UpgradeOptions,
};
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;

const V33: MinorVersion = MinorVersion::new(1, 33);
const V34: MinorVersion = MinorVersion::new(1, 34);
const V35: MinorVersion = MinorVersion::new(1, 35);

/// A 1.33 cluster with one managed node group of three nodes and a web app whose budget lets
/// one pod go at a time; the default EKS add-ons.
const UPGRADABLE: &str = r#"
kubernetesVersion: "1.33"
nodeGroups:
  - {name: ng-a, type: managed, nodes: 3, instanceType: m5.xlarge, capacity: {pods: 30, cpu: "4", memory: 16Gi}}
namespaces: [shop]
deployments:
  - {name: web, namespace: shop, replicas: 3, cpu: 100m, memory: 128Mi, pdb: {maxUnavailable: 1}}
pods: []
"#;

struct Sim {
    fleet: Fleet,
    _dir: tempfile::TempDir,
    eks: AwsEks,
    kube: KubeCluster,
}

async fn start(yaml: &str) -> Sim {
    let scenario = Scenario::from_yaml(yaml, "test.yaml").expect("scenario");
    let fleet = Fleet::start_scenario(&scenario, 1, FleetOptions::default())
        .await
        .expect("fleet starts");
    let dir = tempfile::tempdir().expect("temp dir");
    fleet.write_files(dir.path()).expect("files");
    fleet
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("settles");
    let (kube, name) = flotilla_agent::local::connect(Some(&dir.path().join("kubeconfig-sim-1.yaml")), None)
        .await
        .expect("kube connects");
    assert_eq!(name, "sim-1");
    let url = fleet.aws_url.clone().expect("fleet serves AWS");
    let cfg = EksClusterConfig {
        region: fleet.aws().expect("aws").region.clone(),
        eks_cluster_name: "sim-1".into(),
        role_arn: None,
        eks_endpoint_url: Some(url.clone()),
        autoscaling_endpoint_url: Some(url),
    };
    let eks = AwsEks::connect_with(
        &cfg,
        ConnectOptions {
            retry: RetryConfig::standard()
                .with_max_attempts(8)
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
        },
    )
    .await
    .expect("eks connects");
    Sim {
        fleet,
        _dir: dir,
        eks,
        kube,
    }
}

fn options(force: bool) -> UpgradeOptions {
    UpgradeOptions {
        force,
        wait: WaitOptions {
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(300),
                factor: 2.0,
                jitter: 0.2,
            },
            // A failure bound, not a timing assertion.
            timeout: Duration::from_secs(120),
        },
        durations: None,
        goal: None,
    }
}

/// The agent's inventory (kube-rs against the simulated cluster), through the wire as the
/// engine receives the agent's `Inventory` step output.
async fn inventory(sim: &Sim) -> AgentInventory {
    let inv = flotilla_agent::inventory::collect(&sim.kube)
        .await
        .expect("agent inventory");
    let wire = flotilla_agent::uplink::convert::inventory_to_proto(&inv);
    flotilla_coordinator::convert::agent_inventory(&wire)
}

fn pdb_violations(sim: &Sim) -> u64 {
    sim.fleet.stats()["clusters"]["sim-1"]["pdb_violations"]
        .as_u64()
        .expect("pdb_violations in stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_33_cluster_is_upgraded_to_1_34_step_by_step() {
    let sim = start(UPGRADABLE).await;
    let opts = options(false);
    let seen = Mutex::new(Vec::<ProgressUpdate>::new());
    let progress = |u: &ProgressUpdate| seen.lock().unwrap().push(u.clone());

    // Inventory + Preflight.
    let inv = inventory(&sim).await;
    let report = preflight(&sim.eks, V34, &inv, &opts, &progress)
        .await
        .expect("nothing blocks");
    assert!(report.blockers.is_empty(), "{:?}", report.blockers);
    assert!(!report.continuing);
    assert_eq!(report.nodegroups.len(), 1);
    assert_eq!(report.nodegroups[0].agent_nodes, Some((3, 3)));
    assert_eq!(report.nodegroups[0].max_unavailable_nodes, 1);
    assert!(matches!(report.insights, InsightsCheck::Checked { .. }));
    assert!(report.outputs().detail.is_some());

    // UpgradeControlPlane.
    let cp = upgrade_control_plane(&sim.eks, V34, RunMode::Fresh, &opts, &progress)
        .await
        .expect("control plane upgraded");
    assert_eq!((cp.from, cp.to, cp.resumed), (V33, V34, false));
    assert!(cp.update_id.is_some());
    assert_eq!(sim.eks.describe_cluster().await.unwrap().version, "1.34");
    // Running it again changes nothing.
    let again = upgrade_control_plane(&sim.eks, V34, RunMode::Fresh, &opts, &NoProgress)
        .await
        .expect("idempotent");
    assert_eq!(again.update_id, None);
    assert_eq!(
        sim.eks.list_updates(UpdateSubject::Cluster).await.unwrap().len(),
        1
    );

    // UpgradeNodegroups.
    let ngs = upgrade_nodegroups(&sim.eks, V34, RunMode::Fresh, &opts, &progress)
        .await
        .expect("node groups upgraded");
    assert_eq!(ngs.groups.len(), 1);
    assert_eq!(ngs.groups[0].outcome, NodegroupOutcome::Updated);
    assert_eq!(ngs.groups[0].update_config, "maxUnavailable 1");
    let ng = sim.eks.describe_nodegroup("ng-a").await.unwrap();
    assert_eq!(ng.version.as_deref(), Some("1.34"));

    // UpgradeAddons: coredns and kube-proxy move to 1.34's defaults; vpc-cni's is the same.
    let addons = upgrade_addons(&sim.eks, V34, Some(&inv), RunMode::Fresh, &opts, &progress)
        .await
        .expect("add-ons upgraded");
    let by = |n: &str| addons.addons.iter().find(|a| a.name == n).expect(n).clone();
    assert_eq!(by("coredns").outcome, AddonOutcome::Updated);
    assert_eq!(by("coredns").to, "v1.12.3-eksbuild.1");
    assert_eq!(by("kube-proxy").outcome, AddonOutcome::Updated);
    assert!(
        by("kube-proxy").to.starts_with("v1.34."),
        "{:?}",
        by("kube-proxy")
    );
    assert_eq!(by("vpc-cni").outcome, AddonOutcome::AlreadyCurrent);
    for a in ["coredns", "kube-proxy", "vpc-cni"] {
        let d = sim.eks.describe_addon(a).await.unwrap();
        assert_eq!(d.status.as_wire(), "ACTIVE", "{a}");
    }
    // All three are EKS managed add-ons here: none is checked as self-managed.
    assert_eq!(
        addons.self_managed,
        SelfManagedAddons::Checked {
            lagging: vec![],
            current: vec![]
        }
    );

    // Postflight (the agent's step): every kubelet at 1.34, every Deployment available.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let post = loop {
        let r = flotilla_agent::steps::postflight::run(
            &sim.kube,
            &flotilla_agent::steps::postflight::Params { minor: "1.34".into() },
            &flotilla_agent::steps::NoProgress,
        )
        .await;
        match r {
            Ok(out) => break out,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "postflight not yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("postflight: {e}"),
        }
    };
    assert_eq!(post.nodes, 3);
    let inv = inventory(&sim).await;
    assert!(
        inv.nodes.iter().all(|n| n.kubelet_version.starts_with("v1.34.")),
        "{:?}",
        inv.nodes
    );
    assert_eq!(pdb_violations(&sim), 0, "node replacement honoured the budget");

    // Progress named the step and the group.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|p| p.step == Step::UpgradeNodegroups
        && p.message.starts_with("nodegroup 1/1 ng-a: updating 1.33 → 1.34")));
    assert!(seen.iter().any(|p| p.step == Step::UpgradeControlPlane));
    assert!(seen.iter().any(|p| p.step == Step::UpgradeAddons && p.total == 3));
    sim.fleet.shutdown().await;
}

/// A 1.33 cluster with everything preflight must refuse: a self-managed group, a managed group
/// a minor behind, a budget that allows no disruption, and deprecated APIs removed in 1.34.
/// As [`UPGRADABLE`], but no EKS managed add-on: coredns, kube-proxy and aws-node are the
/// cluster's own (self-managed) Deployment and DaemonSets.
const SELF_MANAGED_ADDONS: &str = r#"
kubernetesVersion: "1.33"
nodeGroups:
  - {name: ng-a, type: managed, nodes: 1, instanceType: m5.xlarge, capacity: {pods: 30, cpu: "4", memory: 16Gi}}
namespaces: [shop]
deployments:
  - {name: web, namespace: shop, replicas: 1, cpu: 100m, memory: 128Mi}
  - {name: coredns, namespace: kube-system, replicas: 1, cpu: 100m, memory: 70Mi}
pods: []
eks:
  addons: []
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_addons_lagging_the_new_minor_are_reported_from_the_agents_inventory() {
    let sim = start(SELF_MANAGED_ADDONS).await;
    let opts = options(false);
    assert!(sim.eks.list_addons().await.unwrap().is_empty());
    // The agent reads the images from kube-system (kube-rs), the wire carries them.
    let inv = inventory(&sim).await;
    let workloads = inv
        .addon_workloads
        .clone()
        .expect("the agent reports add-on workloads");
    let image = |addon: &str| {
        workloads
            .iter()
            .find(|w| w.addon == addon)
            .unwrap_or_else(|| panic!("{addon} in {workloads:?}"))
            .image
            .clone()
    };
    assert!(
        image("coredns").ends_with("/eks/coredns:v1.11.4-eksbuild.2"),
        "{}",
        image("coredns")
    );
    assert!(
        image("kube-proxy").contains("/eks/kube-proxy:v1.33."),
        "{}",
        image("kube-proxy")
    );
    assert!(
        image("vpc-cni").contains("amazon-k8s-cni:"),
        "{}",
        image("vpc-cni")
    );

    upgrade_control_plane(&sim.eks, V34, RunMode::Fresh, &opts, &NoProgress)
        .await
        .expect("control plane upgraded");
    let addons = upgrade_addons(&sim.eks, V34, Some(&inv), RunMode::Fresh, &opts, &NoProgress)
        .await
        .expect("nothing to update, the lagging ones reported");
    assert!(addons.addons.is_empty(), "{:?}", addons.addons);
    let SelfManagedAddons::Checked { lagging, current } = &addons.self_managed else {
        panic!("not checked: {:?}", addons.self_managed);
    };
    let mut names: Vec<&str> = lagging.iter().map(|l| l.addon.as_str()).collect();
    names.sort();
    assert_eq!(names, ["coredns", "kube-proxy"], "{lagging:?}");
    let coredns = lagging.iter().find(|l| l.addon == "coredns").unwrap();
    assert_eq!(coredns.version, "v1.11.4-eksbuild.2");
    assert_eq!(coredns.expected, "v1.12.3-eksbuild.1");
    // vpc-cni is not among the add-ons checked when self-managed (coredns and kube-proxy are).
    assert!(current.is_empty(), "{current:?}");
    let summary = addons.summary();
    assert!(summary.contains("self-managed lagging: coredns"), "{summary}");
    // Reporting changes nothing in the cluster.
    let again = inventory(&sim).await;
    assert_eq!(again.addon_workloads, inv.addon_workloads);
}

const BLOCKED: &str = r#"
kubernetesVersion: "1.33"
nodeGroups:
  - {name: ng-old, type: self-managed, nodes: 2, instanceType: m5.xlarge}
  - {name: ng-a, type: managed, nodes: 2, instanceType: m5.xlarge, kubeletVersion: "1.32"}
namespaces: [shop]
deployments:
  - {name: cache, namespace: shop, replicas: 1, cpu: 100m, memory: 128Mi, pdb: {minAvailable: 1}}
pods: []
eks:
  insights:
    - name: Deprecated APIs removed in Kubernetes v1.34
      status: ERROR
      deprecatedApis:
        - usage: /apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas
          replacedWith: /apis/flowcontrol.apiserver.k8s.io/v1/flowschemas
          stopServingVersion: "1.32"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_every_blocker_and_changes_nothing() {
    let sim = start(BLOCKED).await;
    let inv = inventory(&sim).await;
    let e = preflight(&sim.eks, V34, &inv, &options(false), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "PREFLIGHT_BLOCKED");
    assert!(!e.retryable());
    let UpgradeError::PreflightBlocked(report) = &e else {
        panic!("{e:?}")
    };
    let has = |code: &str, subject: &str, needle: &str| {
        report
            .blockers
            .iter()
            .any(|b| b.code == code && b.subject == subject && b.reason.contains(needle))
    };
    assert!(has("VERSION_SKEW", "nodegroup ng-a", "at 1.32"), "{e}");
    assert!(
        has("SELF_MANAGED_NODEGROUP", "nodegroup ng-old", "migrate it"),
        "{e}"
    );
    assert!(
        has("PDB_ZERO_DISRUPTIONS", "pdb shop/cache", "allows 0 disruptions"),
        "{e}"
    );
    assert!(
        has(
            "DEPRECATED_API",
            "insight Deprecated APIs removed in Kubernetes v1.34",
            "/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas → /apis/flowcontrol.apiserver.k8s.io/v1/flowschemas"
        ),
        "{e}"
    );
    // The message carries every blocker, by name.
    let msg = e.to_string();
    for needle in ["ng-a", "ng-old", "shop/cache", "Deprecated APIs"] {
        assert!(msg.contains(needle), "{needle} in {msg}");
    }
    // The simulator's computed kubelet-skew insight is a warning, not a blocker.
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.subject == "insight Kubelet version skew"),
        "{:?}",
        report.warnings
    );

    // With force, the budget is a warning; the rest still block.
    let e = preflight(&sim.eks, V34, &inv, &options(true), &NoProgress)
        .await
        .unwrap_err();
    let UpgradeError::PreflightBlocked(forced) = &e else {
        panic!("{e:?}")
    };
    assert!(forced.blockers.iter().all(|b| b.code != "PDB_ZERO_DISRUPTIONS"));
    assert!(forced.warnings.iter().any(|w| w.code == "PDB_ZERO_DISRUPTIONS"));

    // Two minors at once is refused.
    let e = preflight(&sim.eks, V35, &inv, &options(false), &NoProgress)
        .await
        .unwrap_err();
    let UpgradeError::PreflightBlocked(two) = &e else {
        panic!("{e:?}")
    };
    assert!(
        two.blockers
            .iter()
            .any(|b| b.code == "TARGET_NOT_NEXT_MINOR" && b.reason.contains("upgrade to 1.34 first")),
        "{e}"
    );

    // Nothing changed.
    assert_eq!(sim.eks.describe_cluster().await.unwrap().version, "1.33");
    assert!(sim
        .eks
        .list_updates(UpdateSubject::Cluster)
        .await
        .unwrap()
        .is_empty());
    assert!(sim
        .eks
        .list_updates(UpdateSubject::Nodegroup("ng-a"))
        .await
        .unwrap()
        .is_empty());
    sim.fleet.shutdown().await;
}

/// [`UPGRADABLE`] with clients still calling deprecated APIs: one that 1.34 removes, one removed
/// later.
fn deprecated_calls() -> String {
    format!(
        "{UPGRADABLE}eks:\n  deprecatedApiRequests:\n    \
         - {{api: /apis/resource.k8s.io/v1beta1/resourceclaims, removedRelease: \"1.34\", replacedWith: /apis/resource.k8s.io/v1/resourceclaims, userAgent: dra-driver/v0.4.1}}\n    \
         - {{api: /apis/storage.k8s.io/v1beta1/volumeattributesclasses, removedRelease: \"1.37\"}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_apis_still_called_block_from_the_agents_metric_and_the_insight() {
    let sim = start(&deprecated_calls()).await;
    let inv = inventory(&sim).await;
    let e = preflight(&sim.eks, V34, &inv, &options(false), &NoProgress)
        .await
        .unwrap_err();
    let UpgradeError::PreflightBlocked(report) = &e else {
        panic!("{e:?}")
    };
    let codes: Vec<(&str, &str)> = report
        .blockers
        .iter()
        .map(|b| (b.code, b.subject.as_str()))
        .collect();
    // The agent's own check (kube-rs reading the API server's /metrics) and EKS's insight agree.
    assert_eq!(
        codes,
        [
            (
                "DEPRECATED_API",
                "insight Deprecated APIs removed in Kubernetes v1.34"
            ),
            (
                "DEPRECATED_API",
                "api /apis/resource.k8s.io/v1beta1/resourceclaims"
            ),
        ],
        "{e}"
    );
    assert!(
        report.blockers[0]
            .reason
            .contains("/apis/resource.k8s.io/v1beta1/resourceclaims → /apis/resource.k8s.io/v1/resourceclaims (removed in 1.34) used by dra-driver/v0.4.1"),
        "{}",
        report.blockers[0].reason
    );
    assert!(report.blockers[1].reason.contains("removed in 1.34"));
    assert!(
        report.warnings.iter().any(|w| w.code == "DEPRECATED_API"
            && w.subject == "api /apis/storage.k8s.io/v1beta1/volumeattributesclasses"
            && w.reason.contains("removed in 1.37")),
        "{:?}",
        report.warnings
    );
    assert_eq!(sim.eks.describe_cluster().await.unwrap().version, "1.33");
    sim.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_control_plane_update_is_reported_with_its_reason() {
    let sim = start(UPGRADABLE).await;
    {
        let aws = sim.fleet.aws().expect("aws");
        let mut st = aws.lock();
        st.clusters
            .get_mut("sim-1")
            .expect("sim-1")
            .faults
            .fail_control_plane_update = true;
    }
    let e = upgrade_control_plane(&sim.eks, V34, RunMode::Fresh, &options(false), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "CONTROL_PLANE_UPDATE_FAILED", "{e}");
    assert!(!e.retryable());
    let UpgradeError::ControlPlaneUpdateFailed {
        status,
        errors,
        target,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((status.as_str(), *target), ("Failed", V34));
    assert!(
        errors
            .iter()
            .any(|d| d.message.contains("failControlPlaneUpdate")),
        "{errors:?}"
    );
    assert!(e.to_string().contains("injected"), "{e}");
    let c = sim.eks.describe_cluster().await.unwrap();
    assert_eq!((c.version.as_str(), c.status.as_str()), ("1.33", "ACTIVE"));
    // Node groups refuse to run ahead of the control plane.
    let e = upgrade_nodegroups(&sim.eks, V34, RunMode::Fresh, &options(false), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "VERSION_SKEW", "{e}");
    sim.fleet.shutdown().await;
}

/// One managed group whose only `cache` pod is guarded by a budget that never allows eviction.
const STUCK: &str = r#"
kubernetesVersion: "1.33"
nodeGroups:
  - {name: ng-a, type: managed, nodes: 2, instanceType: m5.xlarge}
namespaces: [shop]
deployments:
  - {name: cache, namespace: shop, replicas: 1, cpu: 100m, memory: 128Mi, pdb: {minAvailable: 1}}
pods: []
eks:
  timing: {evictionTimeout: 1s}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_eviction_failure_without_force_then_force_succeeds() {
    let sim = start(STUCK).await;
    upgrade_control_plane(&sim.eks, V34, RunMode::Fresh, &options(false), &NoProgress)
        .await
        .expect("control plane");

    let e = upgrade_nodegroups(&sim.eks, V34, RunMode::Fresh, &options(false), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "POD_EVICTION_FAILURE", "{e}");
    assert!(!e.retryable());
    let UpgradeError::PodEvictionFailure {
        nodegroup,
        message,
        resource_ids,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(nodegroup, "ng-a");
    assert!(message.contains("evict"), "{message}");
    assert!(
        resource_ids.iter().any(|r| r.starts_with("shop/cache-")),
        "the blocking pod is named: {resource_ids:?}"
    );
    let ng = sim.eks.describe_nodegroup("ng-a").await.unwrap();
    assert_eq!(ng.version.as_deref(), Some("1.33"));

    let done = upgrade_nodegroups(&sim.eks, V34, RunMode::Fresh, &options(true), &NoProgress)
        .await
        .expect("force goes past the budget");
    assert_eq!(done.groups[0].outcome, NodegroupOutcome::Updated);
    let ng = sim.eks.describe_nodegroup("ng-a").await.unwrap();
    assert_eq!(ng.version.as_deref(), Some("1.34"));
    sim.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_step_adopts_the_update_in_progress() {
    let sim = start(UPGRADABLE).await;
    // The coordinator issued UpdateClusterVersion and died before recording the update id.
    let issued = sim.eks.update_cluster_version("1.34").await.expect("issued");
    let cp = upgrade_control_plane(&sim.eks, V34, RunMode::Recheck, &options(false), &NoProgress)
        .await
        .expect("re-checked");
    assert!(cp.resumed);
    assert_eq!(cp.update_id.as_deref(), Some(issued.id.as_str()));
    let ids = sim.eks.list_updates(UpdateSubject::Cluster).await.unwrap();
    assert_eq!(ids.len(), 1, "no second UpdateClusterVersion: {ids:?}");
    assert_eq!(ids[0], issued.id);

    // The same for a node group update.
    let ng_update = sim
        .eks
        .update_nodegroup_version("ng-a", Some("1.34"), false)
        .await
        .expect("issued");
    let ngs = upgrade_nodegroups(&sim.eks, V34, RunMode::Recheck, &options(false), &NoProgress)
        .await
        .expect("re-checked");
    assert_eq!(ngs.groups[0].outcome, NodegroupOutcome::Resumed);
    assert_eq!(ngs.groups[0].update_id.as_deref(), Some(ng_update.id.as_str()));
    assert_eq!(
        sim.eks
            .list_updates(UpdateSubject::Nodegroup("ng-a"))
            .await
            .unwrap()
            .len(),
        1
    );
    sim.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_reads_addons_insights_and_update_details() {
    let sim = start(BLOCKED).await;
    let mut addons = sim.eks.list_addons().await.unwrap();
    addons.sort();
    assert_eq!(addons, ["coredns", "kube-proxy", "vpc-cni"]);
    let coredns = sim.eks.describe_addon("coredns").await.unwrap();
    assert_eq!(coredns.version, "v1.11.4-eksbuild.2");
    let v = sim.eks.describe_addon_versions("coredns", "1.34").await.unwrap();
    assert_eq!(v.default_version.as_deref(), Some("v1.12.3-eksbuild.1"));
    assert!(v.versions.contains(&"v1.11.4-eksbuild.2".to_string()), "{v:?}");
    let e = sim.eks.describe_addon("nope").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let ng = sim.eks.describe_nodegroup("ng-a").await.unwrap();
    assert_eq!(ng.version.as_deref(), Some("1.32"));
    assert_eq!(ng.max_unavailable_nodes(), 1);

    let flotilla_coordinator::eks::Insights::Listed(list) =
        sim.eks.list_insights(Some("1.34")).await.unwrap()
    else {
        panic!("the simulator serves ListInsights");
    };
    let dep = list
        .iter()
        .find(|i| i.is_deprecated_apis())
        .expect("deprecated API insight");
    assert_eq!(dep.status.as_wire(), "ERROR");
    assert_eq!(dep.kubernetes_version.as_deref(), Some("1.34"));
    let d = sim.eks.describe_insight(&dep.id).await.unwrap();
    assert_eq!(
        d.deprecations[0].usage,
        "/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas"
    );
    assert!(!d.deprecations[0].clients.is_empty());
    // Other versions' insights are filtered out.
    let flotilla_coordinator::eks::Insights::Listed(none) =
        sim.eks.list_insights(Some("1.30")).await.unwrap()
    else {
        panic!("listed");
    };
    assert!(none.is_empty(), "{none:?}");

    // EKS itself refuses the control-plane update while a node group lags.
    let e = upgrade_control_plane(&sim.eks, V34, RunMode::Fresh, &options(false), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "EKS_API", "{e}");
    assert!(e.to_string().contains("InvalidParameterException"), "{e}");
    sim.fleet.shutdown().await;
}
