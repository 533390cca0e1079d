//! The agent against the simulator, through real kube-rs: whole local migrations, each step's
//! marks in the cluster, blocked PodDisruptionBudgets under every escalation policy, and an agent
//! killed in the middle of SurgeScale and of Drain.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::cluster::{
    Cluster, DeploymentPatch, EventNote, Eviction, HpaPatch, KubeCluster, Result as CResult, WatchStream,
};
use flotilla_agent::local::{self, MigrateOptions, Outcome, RollbackState};
use flotilla_agent::model;
use flotilla_agent::steps::drain::{self, OnBlocked};
use flotilla_agent::steps::{
    restore_scale, surge_scale, taint, verify_ready, wait_nodes_ready, NoProgress, Step, StepError, StepKind,
};
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::{
    IntOrPercent, NodeGroupSpec, NodeGroupType, PdbSpec, Scenario, TaintEffect, TaintSpec,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};

/// Taint keeping the workloads off `ng-new` until the fleet has settled (then removed), so the
/// migration starts with everything on `ng-old`, as after CreateManagedNodegroup.
const NOT_YET: &str = "flotilla.test/not-yet";

/// The default scenario plus a managed group `ng-new` of 4 nodes (Ready and empty once started).
fn scenario() -> Scenario {
    let mut s = Scenario::default_scenario();
    let mut new = s.node_groups[0].clone();
    new.name = "ng-new".into();
    new.kind = NodeGroupType::Managed;
    new.taints = vec![TaintSpec {
        key: NOT_YET.into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    }];
    s.node_groups.push(NodeGroupSpec { ..new });
    s
}

/// As [`scenario`], with `cache`'s PodDisruptionBudget at `maxUnavailable: 0` (never allows one).
fn stuck_scenario() -> Scenario {
    let mut s = scenario();
    let cache = s
        .deployments
        .iter_mut()
        .find(|d| d.name == "cache")
        .expect("cache");
    cache.pdb = Some(PdbSpec {
        max_unavailable: Some(IntOrPercent::Int(0)),
        ..Default::default()
    });
    s
}

struct Sim {
    fleet: Fleet,
    dir: tempfile::TempDir,
    cluster: KubeCluster,
    client: kube::Client,
}

async fn start(s: Scenario) -> Sim {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::start_scenario(&s, 1, FleetOptions::default())
        .await
        .expect("fleet starts");
    fleet.write_files(dir.path()).expect("files");
    fleet
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("settles");
    let path = dir.path().join("kubeconfig-sim-1.yaml");
    let (cluster, name) = local::connect(Some(&path), None).await.expect("connect");
    assert_eq!(name, "sim-1");
    let client = cluster.client().clone();
    let nodes: Api<Node> = Api::all(client.clone());
    for mut n in nodes
        .list(&ListParams::default().labels("eks.amazonaws.com/nodegroup=ng-new"))
        .await
        .expect("nodes")
        .items
    {
        if let Some(t) = n.spec.as_mut().and_then(|s| s.taints.as_mut()) {
            t.retain(|t| t.key != NOT_YET);
        }
        nodes
            .replace(model::name(&n.metadata), &Default::default(), &n)
            .await
            .expect("untaint ng-new");
    }
    let sim = Sim {
        fleet,
        dir,
        cluster,
        client,
    };
    assert!(sim.evictable_on("ng-new").await.is_empty(), "ng-new starts empty");
    sim
}

impl Sim {
    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig-sim-1.yaml")
    }

    fn stats(&self) -> flotilla_sim::stats::ClusterStats {
        self.fleet
            .cluster("sim-1")
            .expect("sim-1")
            .lock()
            .stats()
            .stats()
            .clone()
    }

    async fn nodes(&self, group: &str) -> Vec<Node> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let sel = format!(
            "{}={group}",
            if group == "ng-old" {
                model::SELF_MANAGED_LABEL
            } else {
                model::MANAGED_LABEL
            }
        );
        nodes
            .list(&ListParams::default().labels(&sel))
            .await
            .expect("nodes")
            .items
    }

    /// Pods on `group`'s nodes that a drain would move (not DaemonSet or mirror pods).
    async fn evictable_on(&self, group: &str) -> Vec<String> {
        let names: Vec<String> = self
            .nodes(group)
            .await
            .iter()
            .map(|n| model::name(&n.metadata).to_string())
            .collect();
        let pods: Api<Pod> = Api::all(self.client.clone());
        pods.list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .into_iter()
            .filter(|p| model::pod_node(p).is_some_and(|n| names.iter().any(|x| x == n)))
            .filter(|p| model::controller_of(&p.metadata).is_none_or(|o| o.kind != "DaemonSet"))
            .filter(|p| model::annotation(&p.metadata, model::MIRROR_POD_ANNOTATION).is_none())
            .map(|p| model::key(&p.metadata))
            .collect()
    }

    async fn deployments(&self) -> BTreeMap<String, Deployment> {
        let api: Api<Deployment> = Api::all(self.client.clone());
        api.list(&ListParams::default())
            .await
            .expect("deployments")
            .items
            .into_iter()
            .map(|d| (model::key(&d.metadata), d))
            .collect()
    }

    async fn hpa(&self, ns: &str, name: &str) -> HorizontalPodAutoscaler {
        Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .expect("hpa")
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        let api: Api<Event> = Api::all(self.client.clone());
        api.list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// No PDB violated, no Deployment ever below the available count it started with.
    fn assert_zero_downtime(&self) {
        let stats = self.stats();
        assert_eq!(stats.pdb_violations, 0, "violations: {:?}", stats.violations);
        for (name, d) in &stats.deployments {
            let (Some(start), Some(min)) = (d.available_at_start, d.min_available) else {
                continue;
            };
            assert!(min >= start, "{name} went down to {min} available from {start}");
        }
    }
}

const ORIGINAL: [(&str, i32); 6] = [
    ("kube-system/aws-load-balancer-controller", 2),
    ("kube-system/coredns", 2),
    ("shop/api", 3),
    ("shop/cache", 1),
    ("shop/web", 4),
    ("shop/worker", 2),
];

fn options() -> MigrateOptions {
    MigrateOptions {
        force: true,
        node_timeout: Duration::from_secs(60),
        verify_timeout: Duration::from_secs(60),
        nodes_ready_timeout: Duration::from_secs(30),
        ..MigrateOptions::new("ng-old", "ng-new")
    }
}

async fn assert_restored(sim: &Sim) {
    let deployments = sim.deployments().await;
    for (name, replicas) in ORIGINAL {
        let d = &deployments[name];
        assert_eq!(model::deployment_replicas(d), replicas, "{name} replicas");
        assert_eq!(
            model::annotation(&d.metadata, model::ORIGINAL_REPLICAS_ANNOTATION),
            None,
            "{name}"
        );
        assert_eq!(
            model::annotation(&d.metadata, model::SURGE_REPLICAS_ANNOTATION),
            None,
            "{name}"
        );
    }
    let hpa = sim.hpa("shop", "worker").await;
    let spec = hpa.spec.expect("spec");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    assert_eq!(
        model::annotation(&hpa.metadata, model::ORIGINAL_MIN_REPLICAS_ANNOTATION),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_migration_moves_everything_with_zero_downtime() {
    let sim = start(scenario()).await;
    let report = local::migrate(&sim.cluster, "sim-1", &options(), &NoProgress).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.render_text());
    assert_eq!(report.exit_code(), 0);
    assert!(
        sim.evictable_on("ng-old").await.is_empty(),
        "{:?}",
        sim.evictable_on("ng-old").await
    );
    assert_restored(&sim).await;
    sim.assert_zero_downtime();
    let drain = report.drain().expect("drain ran");
    assert_eq!(drain.drained.len(), 4);
    assert!(drain.forced.is_empty());
    // Every old node stays tainted, labelled and cordoned for the node group's removal.
    for n in sim.nodes("ng-old").await {
        let spec = n.spec.clone().unwrap_or_default();
        assert_eq!(spec.unschedulable, Some(true));
        assert!(spec
            .taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == model::DEFAULT_TAINT_KEY && t.effect == "NoSchedule"));
        assert_eq!(model::label(&n.metadata, model::EXCLUDE_LB_LABEL), Some("true"));
    }
    // Events on the nodes and Deployments touched.
    // Events on the nodes and Deployments each step touched, about exactly those objects.
    let old: std::collections::BTreeSet<String> = sim
        .nodes("ng-old")
        .await
        .iter()
        .map(|n| model::name(&n.metadata).to_string())
        .collect();
    let surged: std::collections::BTreeSet<String> = ORIGINAL.iter().map(|(n, _)| n.to_string()).collect();
    for (reason, kind, want) in [
        ("FlotillaTainted", "Node", &old),
        ("FlotillaDraining", "Node", &old),
        ("FlotillaDrained", "Node", &old),
        ("FlotillaSurgeScaled", "Deployment", &surged),
        ("FlotillaScaleRestored", "Deployment", &surged),
    ] {
        let events = sim.events(reason).await;
        let about: std::collections::BTreeSet<String> = events
            .iter()
            .map(|e| {
                let o = &e.involved_object;
                assert_eq!(o.kind.as_deref(), Some(kind), "{reason}");
                assert!(o.uid.is_some(), "{reason} names the object's uid");
                match o.namespace.as_deref() {
                    Some(ns) if kind == "Deployment" => {
                        format!("{ns}/{}", o.name.as_deref().unwrap_or_default())
                    }
                    _ => o.name.clone().unwrap_or_default(),
                }
            })
            .collect();
        assert_eq!(events.len(), want.len(), "{reason}: one per object");
        assert_eq!(&about, want, "{reason}");
        assert!(events.iter().all(|e| e.type_.as_deref() == Some("Normal")
            && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("flotilla-agent")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_leaves_its_marks_in_the_cluster() {
    let sim = start(scenario()).await;
    let c = &sim.cluster;
    let run = |step: Step| async move { step.run(c, "sim-1", &NoProgress).await };

    run(Step::WaitNodesReady(wait_nodes_ready::Params::new(
        "ng-new",
        4,
        Duration::from_secs(30),
    )))
    .await
    .expect("nodes ready");

    run(Step::Taint(taint::Params::new("ng-old")))
        .await
        .expect("taint");
    for n in sim.nodes("ng-old").await {
        let taints = n.spec.clone().and_then(|s| s.taints).unwrap_or_default();
        assert_eq!(
            taints
                .iter()
                .filter(|t| t.key == "flotilla.io/migrating" && t.effect == "NoSchedule")
                .count(),
            1
        );
        assert_eq!(
            model::label(
                &n.metadata,
                "node.kubernetes.io/exclude-from-external-load-balancers"
            ),
            Some("true")
        );
        assert_eq!(
            model::annotation(&n.metadata, model::ADDED_LABELS_ANNOTATION),
            Some(model::EXCLUDE_LB_LABEL)
        );
        assert_ne!(
            n.spec.and_then(|s| s.unschedulable),
            Some(true),
            "Taint does not cordon"
        );
    }
    for n in sim.nodes("ng-new").await {
        assert!(n
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .all(|t| t.key != model::DEFAULT_TAINT_KEY));
    }

    run(Step::SurgeScale(surge_scale::Params::new(
        "ng-old",
        "ng-new",
        Default::default(),
    )))
    .await
    .expect("surge");
    let deployments = sim.deployments().await;
    for (name, replicas) in ORIGINAL {
        let d = &deployments[name];
        let original = replicas.to_string();
        let target = (replicas * 2).to_string();
        assert_eq!(
            model::annotation(&d.metadata, model::ORIGINAL_REPLICAS_ANNOTATION),
            Some(original.as_str()),
            "{name}"
        );
        assert_eq!(
            model::annotation(&d.metadata, model::SURGE_REPLICAS_ANNOTATION),
            Some(target.as_str()),
            "{name}"
        );
    }
    assert_eq!(model::deployment_replicas(&deployments["shop/web"]), 8);
    // worker is HPA-owned: raised through the HPA (minReplicas 4), originals on the HPA.
    let hpa = sim.hpa("shop", "worker").await;
    let spec = hpa.spec.clone().expect("spec");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(4), 6));
    assert_eq!(
        model::annotation(&hpa.metadata, model::ORIGINAL_MIN_REPLICAS_ANNOTATION),
        Some("2")
    );
    assert_eq!(
        model::annotation(&hpa.metadata, model::ORIGINAL_MAX_REPLICAS_ANNOTATION),
        Some("6")
    );

    let verified = run(Step::VerifyReady(verify_ready::Params::new(
        "ng-old",
        "ng-new",
        Duration::from_secs(60),
    )))
    .await
    .expect("verify");
    let flotilla_agent::steps::StepOutput::VerifyReady(v) = verified else {
        panic!("verify output")
    };
    assert_eq!(v.deployments.len(), 6);
    assert!(
        v.deployments
            .iter()
            .all(|d| d.available >= d.target && d.ready_on_new >= d.target / 2),
        "{:?}",
        v.deployments
    );

    let params = drain::Params {
        force: true,
        node_timeout: Duration::from_secs(60),
        ..drain::Params::new("ng-old")
    };
    run(Step::Drain(params)).await.expect("drain");
    assert!(sim.evictable_on("ng-old").await.is_empty());
    for n in sim.nodes("ng-old").await {
        assert_eq!(n.spec.and_then(|s| s.unschedulable), Some(true));
        assert_eq!(
            model::annotation(&n.metadata, model::CORDONED_ANNOTATION),
            Some("true")
        );
    }
    // Annotations survive the drain (the originals must outlive an agent restart).
    assert_eq!(
        model::annotation(
            &sim.deployments().await["shop/web"].metadata,
            model::ORIGINAL_REPLICAS_ANNOTATION
        ),
        Some("4")
    );

    run(Step::RestoreScale(restore_scale::Params::default()))
        .await
        .expect("restore");
    assert_restored(&sim).await;
    sim.assert_zero_downtime();

    let inv = run(Step::Inventory).await.expect("inventory");
    let flotilla_agent::steps::StepOutput::Inventory(inv) = inv else {
        panic!("inventory")
    };
    assert!(inv.version.starts_with("v1.33"), "{}", inv.version);
    let groups: Vec<(&str, model::GroupKind, u32)> = inv
        .node_groups
        .iter()
        .map(|g| (g.name.as_str(), g.kind, g.nodes))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("ng-new", model::GroupKind::Managed, 4),
            ("ng-old", model::GroupKind::SelfManaged, 4)
        ]
    );
    let old_schedulable = inv
        .nodes
        .iter()
        .filter(|n| n.group.as_deref() == Some("ng-old") && n.schedulable)
        .count();
    assert_eq!(old_schedulable, 0);
    run(Step::Postflight(flotilla_agent::steps::postflight::Params {
        minor: "1.33".into(),
    }))
    .await
    .expect("postflight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_never_allows_fails_naming_pod_and_pdb() {
    let sim = start(stuck_scenario()).await;
    // --no-rollback: the cluster stays as the drain left it, for a re-run.
    let opts = MigrateOptions {
        node_timeout: Duration::from_secs(4),
        rollback: false,
        ..options()
    };
    let report = local::migrate(&sim.cluster, "sim-1", &opts, &NoProgress).await;
    let Outcome::Failed {
        step,
        error,
        rollback,
    } = &report.outcome
    else {
        panic!("{}", report.render_text())
    };
    assert_eq!(*step, StepKind::Drain);
    assert_eq!(*rollback, RollbackState::Kept);
    assert_eq!(error.code, "DRAIN_BLOCKED");
    let StepError::DrainBlocked { blockers, .. } = &error.error else {
        panic!("{error:?}")
    };
    assert_eq!(blockers.len(), 1, "{blockers:?}");
    assert!(blockers[0].pod.starts_with("shop/cache-"), "{:?}", blockers[0]);
    assert_eq!(blockers[0].pdbs, vec!["shop/cache".to_string()]);
    assert!(
        error
            .message
            .contains("blocked by PodDisruptionBudget (shop/cache)"),
        "{}",
        error.message
    );
    assert_eq!(report.exit_code(), 1);
    // Paced, not hammered: a few probes, not one 429 per poll.
    assert!(
        sim.stats().evictions_refused <= 6,
        "refused {}",
        sim.stats().evictions_refused
    );
    assert!(!sim.events("FlotillaDrainBlocked").await.is_empty());
    sim.assert_zero_downtime();
    // The surge is still in place for a re-run.
    assert_eq!(
        model::deployment_replicas(&sim.deployments().await["shop/web"]),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_node_leaves_the_blocked_node_cordoned_and_reports_it() {
    let sim = start(stuck_scenario()).await;
    let opts = MigrateOptions {
        node_timeout: Duration::from_secs(4),
        on_blocked: OnBlocked::SkipNode,
        ..options()
    };
    let report = local::migrate(&sim.cluster, "sim-1", &opts, &NoProgress).await;
    let Outcome::Partial { skipped_nodes } = &report.outcome else {
        panic!("{}", report.render_text())
    };
    assert_eq!(skipped_nodes.len(), 1);
    assert_eq!(report.exit_code(), 3);
    let left = sim.evictable_on("ng-old").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("shop/cache-"));
    let node = sim
        .nodes("ng-old")
        .await
        .into_iter()
        .find(|n| model::name(&n.metadata) == skipped_nodes[0])
        .expect("node");
    assert_eq!(node.spec.and_then(|s| s.unschedulable), Some(true));
    let drain = report.drain().expect("drain");
    assert_eq!(drain.drained.len(), 3);
    assert_eq!(drain.skipped[0].blockers[0].pdbs, vec!["shop/cache".to_string()]);
    assert!(
        report.render_text().contains("WARNING: node"),
        "{}",
        report.render_text()
    );
    assert_eq!(sim.events("FlotillaDrainSkipped").await.len(), 1);
    sim.assert_zero_downtime();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_after_deletes_despite_the_budget_and_records_it() {
    let sim = start(stuck_scenario()).await;
    let opts = MigrateOptions {
        node_timeout: Duration::from_secs(30),
        on_blocked: OnBlocked::ForceAfter(Duration::from_secs(2)),
        restore_step_timeout: Duration::from_secs(3),
        ..options()
    };
    let report = local::migrate(&sim.cluster, "sim-1", &opts, &NoProgress).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.render_text());
    let drain = report.drain().expect("drain");
    assert_eq!(drain.forced.len(), 1, "{:?}", drain.forced);
    assert!(drain.forced[0].pod.starts_with("shop/cache-"));
    assert_eq!(drain.forced[0].pdbs, vec!["shop/cache".to_string()]);
    assert!(drain.forced[0].blocked_for >= Duration::from_secs(2));
    assert!(sim.evictable_on("ng-old").await.is_empty());
    let events = sim.events("FlotillaForcedDeletion").await;
    assert!(events.len() >= 2, "on the node and the pod: {events:?}");
    assert!(events.iter().all(|e| e.type_.as_deref() == Some("Warning")));
    assert!(report
        .render_text()
        .contains("deleted despite PodDisruptionBudget shop/cache"));
    assert_restored(&sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_mid_drain_the_migration_is_rolled_back() {
    let sim = start(scenario()).await;
    // An operator's Ctrl-C once the drain has evicted a few pods.
    let stop = tokio_util::sync::CancellationToken::new();
    let fleet_cluster = Arc::clone(sim.fleet.cluster("sim-1").expect("sim-1"));
    let interrupt = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while fleet_cluster.lock().stats().stats().evictions_allowed < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.cancel();
        })
    };
    let report = local::migrate_until(&sim.cluster, "sim-1", &options(), &NoProgress, &stop).await;
    interrupt.abort();
    let Outcome::Failed {
        step,
        error,
        rollback,
    } = &report.outcome
    else {
        panic!("{}", report.render_text())
    };
    assert_eq!(*step, StepKind::Drain, "{}", report.render_text());
    assert_eq!(error.code, "CANCELLED");
    assert_eq!(*rollback, RollbackState::Done, "{}", report.render_text());
    let rolled = report.rollback().expect("rollback output");
    assert_eq!(rolled.nodes.len(), 4, "{rolled:?}");
    assert_eq!(rolled.restored.deployments.len(), ORIGINAL.len());
    assert!(
        report
            .render_text()
            .contains("Rolled back: 4 node(s) untainted and uncordoned"),
        "{}",
        report.render_text()
    );
    // The old nodes take pods again: no taint, label, cordon or Flotilla annotation left.
    for n in sim.nodes("ng-old").await {
        let spec = n.spec.clone().unwrap_or_default();
        assert_ne!(spec.unschedulable, Some(true), "{:?}", n.metadata.name);
        assert!(spec
            .taints
            .unwrap_or_default()
            .iter()
            .all(|t| t.key != model::DEFAULT_TAINT_KEY));
        assert_eq!(model::label(&n.metadata, model::EXCLUDE_LB_LABEL), None);
        assert_eq!(model::annotation(&n.metadata, model::CORDONED_ANNOTATION), None);
        assert_eq!(
            model::annotation(&n.metadata, model::ADDED_LABELS_ANNOTATION),
            None
        );
    }
    assert_restored(&sim).await;
    sim.assert_zero_downtime();
    assert_eq!(sim.events("FlotillaRolledBack").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_the_new_nodes_do_not_admit_is_refused_naming_each_deployment_and_why() {
    // ng-new is dedicated (taint dedicated=infra:NoSchedule) and no workload tolerates it.
    let mut s = scenario();
    s.node_groups[1].taints.push(TaintSpec {
        key: "dedicated".into(),
        value: "infra".into(),
        effect: TaintEffect::NoSchedule,
    });
    let sim = start(s).await;
    let report = local::migrate(&sim.cluster, "sim-1", &options(), &NoProgress).await;
    let Outcome::Failed {
        step,
        error,
        rollback,
    } = &report.outcome
    else {
        panic!("{}", report.render_text())
    };
    // The group's own taint does not keep WaitNodesReady waiting; SurgeScale refuses.
    assert_eq!(*step, StepKind::SurgeScale, "{}", report.render_text());
    assert_eq!(error.code, "INSUFFICIENT_CAPACITY");
    assert_eq!(*rollback, RollbackState::Done);
    let StepError::InsufficientCapacity { unplaced, .. } = &error.error else {
        panic!("{error:?}")
    };
    let named: Vec<&str> = unplaced.iter().filter_map(|u| u.split(' ').next()).collect();
    for d in ["shop/api", "shop/cache", "shop/web", "shop/worker"] {
        assert!(named.contains(&d), "{d} named in {unplaced:?}");
    }
    assert!(
        unplaced
            .iter()
            .all(|u| u.contains("4 node(s): taint dedicated=infra:NoSchedule not tolerated")),
        "{unplaced:?}"
    );
    // Nothing was scaled or annotated.
    assert_restored(&sim).await;
    assert!(sim.events("FlotillaSurgeScaled").await.is_empty());

    // Without the taint, a required node affinity no new node matches names only its Deployment.
    let nodes: Api<Node> = Api::all(sim.client.clone());
    for mut n in sim.nodes("ng-new").await {
        if let Some(t) = n.spec.as_mut().and_then(|s| s.taints.as_mut()) {
            t.retain(|t| t.key != "dedicated");
        }
        nodes
            .replace(model::name(&n.metadata), &Default::default(), &n)
            .await
            .expect("untaint ng-new");
    }
    let api: Api<Deployment> = Api::namespaced(sim.client.clone(), "shop");
    let affinity = serde_json::json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}
    ]}}}}}}});
    api.patch(
        "api",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&affinity),
    )
    .await
    .expect("patch api");
    taint::run(&sim.cluster, &taint::Params::new("ng-old"), &NoProgress)
        .await
        .expect("taint");
    let err = surge_scale::run(
        &sim.cluster,
        &surge_scale::Params::new("ng-old", "ng-new", Default::default()),
        &NoProgress,
    )
    .await
    .unwrap_err();
    let StepError::InsufficientCapacity { unplaced, .. } = &err else {
        panic!("{err:?}")
    };
    // 3 surge pods, and the rollout's first new pod, already Pending for the same reason.
    assert_eq!(
        unplaced,
        &vec![
            "shop/api (4 pod(s)): no node of ng-new admits its pods (4 node(s): required node affinity \
             (kubernetes.io/os In (windows)) not matched)"
                .to_string()
        ]
    );
    assert_eq!(
        model::deployment_replicas(&sim.deployments().await["shop/web"]),
        4
    );
}

/// The `flotilla-agent local migrate` binary against the simulator, as a child process.
fn migrate_binary(sim: &Sim) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla-agent"));
    c.args([
        "local",
        "migrate",
        "--from",
        "ng-old",
        "--to",
        "ng-new",
        "--force",
        "--node-timeout",
        "1m",
        "-o",
        "json",
        "--kubeconfig",
    ])
    .arg(sim.kubeconfig())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true);
    c
}

/// Runs the binary until `when` holds of the simulator's store, then SIGKILLs it.
async fn kill_when(sim: &Sim, when: impl Fn(&flotilla_sim::store::Store) -> bool) {
    let mut child = migrate_binary(sim).spawn().expect("agent starts");
    let cluster = Arc::clone(sim.fleet.cluster("sim-1").expect("sim-1"));
    tokio::time::timeout(Duration::from_secs(60), async {
        while !when(&cluster.lock()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the moment to kill comes");
    child.kill().await.expect("SIGKILL");
}

/// `namespace/name` → (replicas, recorded original) of every Deployment, from the store.
fn scale_marks(store: &flotilla_sim::store::Store) -> BTreeMap<String, (i32, Option<String>)> {
    store
        .list(flotilla_sim::resources::Kind::Deployment, None)
        .filter_map(|e| match e.obj.as_ref() {
            flotilla_sim::object::Object::Deployment(d) => Some((
                model::key(&d.metadata),
                (
                    model::deployment_replicas(d),
                    model::annotation(&d.metadata, model::ORIGINAL_REPLICAS_ANNOTATION).map(str::to_string),
                ),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_mid_surge_and_mid_drain_resumes_to_the_same_end() {
    let sim = start(scenario()).await;
    let cluster = Arc::clone(sim.fleet.cluster("sim-1").expect("sim-1"));
    // 30 ms on every API call widens the moments to kill into.
    let slow = flotilla_sim::controllers::Behaviour {
        api_latency: Duration::from_millis(30),
        ..cluster.behaviour()
    };
    cluster.set_behaviour(slow);

    // SIGKILL once SurgeScale has recorded its first original, before it has scaled everything.
    kill_when(&sim, |store| {
        scale_marks(store)
            .values()
            .any(|(_, original)| original.is_some())
    })
    .await;
    let marks = scale_marks(&cluster.lock());
    let scaled = marks
        .iter()
        .filter(|(k, (replicas, _))| ORIGINAL.iter().any(|(n, r)| n == k && r != replicas))
        .count();
    assert!(scaled < ORIGINAL.len(), "killed mid-SurgeScale: {marks:?}");

    // Run again; SIGKILL once the drain has evicted a few pods.
    kill_when(&sim, |store| store.stats().stats().evictions_allowed >= 4).await;
    assert!(
        !sim.evictable_on("ng-old").await.is_empty(),
        "killed before the drain ended"
    );
    for (name, replicas) in ORIGINAL {
        let original = replicas.to_string();
        assert_eq!(
            scale_marks(&cluster.lock())[name].1.as_deref(),
            Some(original.as_str()),
            "{name}: the original survives both kills"
        );
    }

    // And once more, to the end, at full speed.
    let fast = flotilla_sim::controllers::Behaviour {
        api_latency: Duration::ZERO,
        ..cluster.behaviour()
    };
    cluster.set_behaviour(fast);
    let out = migrate_binary(&sim).output().await.expect("agent runs");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    let surged: BTreeMap<String, i64> = doc["steps"][2]["output"]["output"]["deployments"]
        .as_array()
        .expect("SurgeScale output")
        .iter()
        .map(|d| {
            (
                d["deployment"].as_str().unwrap_or_default().to_string(),
                d["original"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    let want: BTreeMap<String, i64> = ORIGINAL
        .iter()
        .map(|(n, r)| (n.to_string(), i64::from(*r)))
        .collect();
    assert_eq!(
        surged, want,
        "the re-run aims at the originals recorded before the kills"
    );
    assert!(sim.evictable_on("ng-old").await.is_empty());
    assert_restored(&sim).await;
    sim.assert_zero_downtime();
}

/// A [`Cluster`] that forwards to the real one and hangs forever at the n-th write: an agent
/// killed at that point (the test drops the future).
struct Killable<'a> {
    inner: &'a KubeCluster,
    writes: AtomicUsize,
    hang_after: usize,
}

impl Killable<'_> {
    async fn gate(&self) {
        if self.writes.fetch_add(1, Ordering::SeqCst) >= self.hang_after {
            std::future::pending::<()>().await;
        }
    }
}

impl Cluster for Killable<'_> {
    async fn version(&self) -> CResult<String> {
        self.inner.version().await
    }
    async fn api_server_metrics(&self) -> CResult<String> {
        self.inner.api_server_metrics().await
    }
    async fn nodes(&self) -> CResult<Vec<Node>> {
        self.inner.nodes().await
    }
    async fn node(&self, name: &str) -> CResult<Node> {
        self.inner.node(name).await
    }
    async fn replace_node(&self, node: &Node) -> CResult<Node> {
        self.gate().await;
        self.inner.replace_node(node).await
    }
    async fn pods(&self, node: Option<&str>) -> CResult<Vec<Pod>> {
        self.inner.pods(node).await
    }
    async fn deployments(&self) -> CResult<Vec<Deployment>> {
        self.inner.deployments().await
    }
    async fn replica_sets(&self) -> CResult<Vec<ReplicaSet>> {
        self.inner.replica_sets().await
    }
    async fn daemon_sets(&self, namespace: &str) -> CResult<Vec<DaemonSet>> {
        self.inner.daemon_sets(namespace).await
    }
    async fn patch_deployment(&self, ns: &str, name: &str, patch: &DeploymentPatch) -> CResult<Deployment> {
        self.gate().await;
        self.inner.patch_deployment(ns, name, patch).await
    }
    async fn hpas(&self) -> CResult<Vec<HorizontalPodAutoscaler>> {
        self.inner.hpas().await
    }
    async fn patch_hpa(&self, ns: &str, name: &str, patch: &HpaPatch) -> CResult<HorizontalPodAutoscaler> {
        self.gate().await;
        self.inner.patch_hpa(ns, name, patch).await
    }
    async fn pdbs(&self) -> CResult<Vec<PodDisruptionBudget>> {
        self.inner.pdbs().await
    }
    fn watch_pods(&self, node: Option<&str>) -> WatchStream<Pod> {
        self.inner.watch_pods(node)
    }
    fn watch_pdbs(&self) -> WatchStream<PodDisruptionBudget> {
        self.inner.watch_pdbs()
    }
    async fn evict(&self, ns: &str, name: &str) -> CResult<Eviction> {
        self.gate().await;
        self.inner.evict(ns, name).await
    }
    async fn delete_pod(&self, ns: &str, name: &str) -> CResult<()> {
        self.gate().await;
        self.inner.delete_pod(ns, name).await
    }
    async fn record_event(&self, event: &EventNote) -> CResult<()> {
        self.inner.record_event(event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_surge_and_mid_drain_then_rerun_ends_the_same() {
    let sim = start(scenario()).await;
    let c = &sim.cluster;
    taint::run(c, &taint::Params::new("ng-old"), &NoProgress)
        .await
        .expect("taint");
    let surge = surge_scale::Params::new("ng-old", "ng-new", Default::default());

    // Killed after 3 writes (originals of some Deployments recorded, nothing scaled yet), then
    // after 9 (some scaled): each time the re-run ends as one clean run would.
    for hang_after in [3, 9] {
        let killable = Killable {
            inner: c,
            writes: AtomicUsize::new(0),
            hang_after,
        };
        let killed = tokio::time::timeout(
            Duration::from_secs(5),
            surge_scale::run(&killable, &surge, &NoProgress),
        )
        .await;
        assert!(
            killed.is_err(),
            "SurgeScale should be stuck at write {hang_after}"
        );
    }
    let out = surge_scale::run(c, &surge, &NoProgress)
        .await
        .expect("surge re-run");
    let got: BTreeMap<String, (i32, i32)> = out
        .deployments
        .iter()
        .map(|s| (s.deployment.clone(), (s.original, s.target)))
        .collect();
    let want: BTreeMap<String, (i32, i32)> = ORIGINAL
        .iter()
        .map(|(n, r)| (n.to_string(), (*r, r * 2)))
        .collect();
    assert_eq!(got, want, "originals intact after kills");
    let hpa = sim.hpa("shop", "worker").await;
    assert_eq!(
        model::annotation(&hpa.metadata, model::ORIGINAL_MIN_REPLICAS_ANNOTATION),
        Some("2")
    );
    verify_ready::run(
        c,
        &verify_ready::Params::new("ng-old", "ng-new", Duration::from_secs(60)),
        &NoProgress,
    )
    .await
    .expect("verify");

    // Drain: aborted (task dropped) once a few pods have been evicted, then run again.
    let params = drain::Params {
        force: true,
        node_timeout: Duration::from_secs(60),
        ..drain::Params::new("ng-old")
    };
    let task = {
        let cluster = sim.cluster.clone();
        let params = params.clone();
        tokio::spawn(async move { drain::run(&cluster, &params, &NoProgress).await })
    };
    let fleet_cluster = Arc::clone(sim.fleet.cluster("sim-1").expect("sim-1"));
    tokio::time::timeout(Duration::from_secs(30), async {
        while fleet_cluster.lock().stats().stats().evictions_allowed < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("evictions start");
    task.abort();
    assert!(
        task.await.is_err_and(|e| e.is_cancelled()),
        "drain was killed mid-way"
    );
    assert!(
        !sim.evictable_on("ng-old").await.is_empty(),
        "the kill came before the drain ended"
    );
    // And once more at a write boundary, through the killable wrapper.
    let killable = Killable {
        inner: c,
        writes: AtomicUsize::new(0),
        hang_after: 2,
    };
    assert!(tokio::time::timeout(
        Duration::from_secs(5),
        drain::run(&killable, &params, &NoProgress)
    )
    .await
    .is_err());

    let out = drain::run(c, &params, &NoProgress).await.expect("drain re-run");
    assert_eq!(out.drained.len(), 4);
    assert!(sim.evictable_on("ng-old").await.is_empty());
    let deployments = sim.deployments().await;
    for (name, replicas) in ORIGINAL {
        let original = replicas.to_string();
        assert_eq!(
            model::annotation(&deployments[name].metadata, model::ORIGINAL_REPLICAS_ANNOTATION),
            Some(original.as_str()),
            "{name}"
        );
    }
    restore_scale::run(c, &restore_scale::Params::default(), &NoProgress)
        .await
        .expect("restore");
    assert_restored(&sim).await;
    sim.assert_zero_downtime();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_rejects_a_missing_group_then_migrates() {
    let sim = start(scenario()).await;
    let kubeconfig = sim.kubeconfig();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-agent"))
                .args(&args)
                .output()
                .expect("binary runs")
        })
    };
    let args = |to: &str| -> Vec<String> {
        [
            "local",
            "migrate",
            "--from",
            "ng-old",
            "--to",
            to,
            "--force",
            "--node-timeout",
            "1m",
            "-o",
            "json",
            "--kubeconfig",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([kubeconfig.display().to_string()])
        .collect()
    };
    let out = run(args("ng-typo")).await.expect("join");
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(doc["outcome"]["status"], "rejected");
    let msg = doc["outcome"]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("ng-typo") && msg.contains("ng-new (managed)"),
        "{msg}"
    );
    assert!(sim.events("FlotillaTainted").await.is_empty(), "nothing changed");

    let bad = run(vec![
        "local".into(),
        "migrate".into(),
        "--from".into(),
        "ng-old".into(),
        "--to".into(),
        "ng-new".into(),
        "--on-blocked".into(),
        "later".into(),
    ])
    .await
    .expect("join");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("force-after=DURATION"));

    let out = run(args("ng-new")).await.expect("join");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["outcome"]["status"], "succeeded");
    assert_eq!(doc["steps"].as_array().map(Vec::len), Some(6));
    assert!(sim.evictable_on("ng-old").await.is_empty());
    assert_restored(&sim).await;
    sim.assert_zero_downtime();
}
