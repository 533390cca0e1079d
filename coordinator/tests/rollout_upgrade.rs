//! Upgrade rollouts through the Fleet API (tonic over mTLS on 127.0.0.1), the coordinator
//! in-process, real agents (`flotilla_agent::uplink::run`) against simulated EKS clusters: a
//! 1.33 → 1.35 rollout (two hops per cluster) that survives a coordinator restart mid-way; a
//! single-cluster upgrade started with StartOperation; a cluster whose control-plane update
//! fails, halting the rollout at its failure budget with the step and the reason; and an upgrade
//! rollout with `migrateSelfManaged` that moves each cluster off its self-managed group first.

mod common;

use std::time::Duration;

use common::rollout::{self as ro, RolloutEnv};
use common::{migration, wait_operation};
use flotilla_coordinator::eks::Eks;
use flotilla_coordinator::rollout::{Rollout, RolloutSpec};
use flotilla_coordinator::store::{RolloutRecord, Store};
use flotilla_proto::fleet::v1 as pb;
use flotilla_sim::scenario::Scenario;
use pb::RolloutState as S;

/// 1.33 clusters with one managed node group and a web app whose budget lets one pod go at a
/// time; the default EKS add-ons.
const UPGRADABLE: &str = r#"
kubernetesVersion: "1.33"
nodeGroups:
  - {name: ng-a, type: managed, nodes: 2, instanceType: m5.xlarge, capacity: {pods: 30, cpu: "4", memory: 16Gi}}
namespaces: [shop]
deployments:
  - {name: web, namespace: shop, replicas: 2, cpu: 100m, memory: 128Mi, pdb: {maxUnavailable: 1}}
pods: []
"#;

fn upgrade(target: &str) -> pb::Work {
    pb::Work {
        kind: Some(pb::work::Kind::Upgrade(pb::UpgradeParams {
            target_version: target.into(),
            ..Default::default()
        })),
    }
}

/// The operations rollout `id` started on `cluster`.
async fn rollout_operations(
    fleet: &mut flotilla_proto::fleet::v1::fleet_client::FleetClient<tonic::transport::Channel>,
    id: &str,
    cluster: &str,
) -> Vec<pb::Operation> {
    fleet
        .list_operations(pb::ListOperationsRequest {
            cluster_id: cluster.into(),
            rollout_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .operations
}

async fn eks_version(env: &RolloutEnv, cluster: &str) -> String {
    let eks = env
        .coord
        .as_ref()
        .unwrap()
        .engine()
        .eks(cluster)
        .expect("configured cluster");
    eks.describe_cluster().await.expect("describe").version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_rollout_takes_two_hops_and_survives_a_coordinator_restart() {
    let scenario = Scenario::from_yaml(UPGRADABLE, "upgradable.yaml").unwrap();
    let mut env = RolloutEnv::start(&scenario, 2, &["dev"]).await;
    let mut fleet = env.fleet();

    // One hop at a time through StartOperation; a rollout chains them.
    let e = fleet
        .start_operation(pb::StartOperationRequest {
            cluster_id: "sim-1".into(),
            work: Some(upgrade("1.35")),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("work.upgrade.targetVersion") && e.message().contains("1.34"),
        "{}",
        e.message()
    );

    let created = ro::create(
        &mut fleet,
        pb::CreateRolloutRequest {
            name: "to-1.35".into(),
            work: Some(upgrade("1.35")),
            stages: vec![ro::stage("all", "env=dev", 1)],
            ..Default::default()
        },
    )
    .await;
    let id = created.id;
    // Restart while the first cluster is in its second hop's... or any step: mid-rollout.
    ro::wait_for(
        &mut fleet,
        &id,
        Duration::from_secs(240),
        "sim-1 to be upgrading",
        |r| {
            ro::clusters(r).iter().any(|c| {
                c.cluster_id == "sim-1" && c.current_step == pb::OperationStepKind::UpgradeNodegroups as i32
            })
        },
    )
    .await;
    env.restart_coordinator().await;
    let mut fleet = env.fleet();
    env.wait_connected().await;
    let done = ro::wait_for(&mut fleet, &id, Duration::from_secs(300), "the end", |r| {
        ro::is(r, S::Succeeded) || ro::is(r, S::Failed) || ro::is(r, S::Cancelled)
    })
    .await;
    assert!(ro::is(&done, S::Succeeded), "{}", ro::describe(&done));
    for c in ["sim-1", "sim-2"] {
        assert_eq!(eks_version(&env, c).await, "1.35", "{c}");
        assert_eq!(env.pdb_violations(c), 0, "{c}");
        let ops = rollout_operations(&mut fleet, &id, c).await;
        // Exactly one operation per hop, each run once.
        let mut hops: Vec<String> = ops
            .iter()
            .map(|o| {
                assert_eq!(o.state, pb::OperationState::Succeeded as i32, "{o:?}");
                o.steps[0].hop.clone()
            })
            .collect();
        hops.sort();
        assert_eq!(hops, ["1.34", "1.35"], "{c}");
    }
    env.stop().await;
}

/// A target EKS does not offer (the simulator offers 1.33-1.35), past the newest or a typo below
/// every cluster, is refused by CreateRollout, naming the field and what EKS offers. (Each hop's
/// preflight checks the same, for when EKS could not be asked here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_rollout_to_a_version_eks_does_not_offer_is_refused() {
    let scenario = Scenario::from_yaml(UPGRADABLE, "upgradable.yaml").unwrap();
    let env = RolloutEnv::start(&scenario, 1, &["dev"]).await;
    let mut fleet = env.fleet();
    for target in ["1.36", "1.3"] {
        let e = fleet
            .create_rollout(pb::CreateRolloutRequest {
                name: format!("to-{target}"),
                work: Some(upgrade(target)),
                stages: vec![ro::stage("all", "env=dev", 1)],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("work.upgrade.targetVersion")
                && e.message().contains("EKS offers Kubernetes 1.35, 1.34, 1.33"),
            "{}",
            e.message()
        );
    }
    let listed = fleet
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.rollouts.is_empty(),
        "nothing stored: {:?}",
        listed.rollouts
    );
    assert_eq!(eks_version(&env, "sim-1").await, "1.33");
    env.stop().await;
}

/// A crash between storing a new rollout and committing its start leaves it Pending in the store:
/// the restarted coordinator starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_stored_but_not_started_before_a_crash_starts_after_the_restart() {
    let scenario = Scenario::from_yaml(UPGRADABLE, "upgradable.yaml").unwrap();
    let mut env = RolloutEnv::start(&scenario, 1, &["dev"]).await;
    let spec = RolloutSpec::from_proto(&pb::CreateRolloutRequest {
        name: "stored-only".into(),
        work: Some(upgrade("1.34")),
        stages: vec![ro::stage("all", "env=dev", 1)],
        ..Default::default()
    })
    .expect("a valid spec");
    let now = jiff::Timestamp::now();
    let id = "ro-stored-only".to_string();
    let record = RolloutRecord {
        rollout: Rollout::new(id.clone(), spec, "alice", now),
        updated_at: now,
        version: 0,
        traceparent: None,
    };
    env.restart_coordinator_with_store(|store| {
        store.create_rollout(&record).expect("stored");
    })
    .await;
    let mut fleet = env.fleet();
    let done = ro::wait_for(&mut fleet, &id, Duration::from_secs(240), "the end", |r| {
        ro::is(r, S::Succeeded) || ro::is(r, S::Failed) || ro::is(r, S::Cancelled)
    })
    .await;
    assert!(ro::is(&done, S::Succeeded), "{}", ro::describe(&done));
    assert_eq!(eks_version(&env, "sim-1").await, "1.34");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_control_plane_update_halts_the_rollout_with_its_step_and_reason() {
    let yaml = format!(
        "{UPGRADABLE}overrides:\n  sim-2:\n    eks:\n      faults: {{failControlPlaneUpdate: true}}\n"
    );
    let scenario = Scenario::from_yaml(&yaml, "failing.yaml").unwrap();
    let env = RolloutEnv::start(&scenario, 3, &["dev", "dev", "prod"]).await;
    let mut fleet = env.fleet();

    // A single upgrade through StartOperation: the agent's inventory and postflight, the
    // coordinator's EKS steps with progress.
    let op = fleet
        .start_operation(pb::StartOperationRequest {
            cluster_id: "sim-3".into(),
            work: Some(upgrade("1.34")),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<i32> = op.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            pb::OperationStepKind::Inventory as i32,
            pb::OperationStepKind::Preflight as i32,
            pb::OperationStepKind::UpgradeControlPlane as i32,
            pb::OperationStepKind::UpgradeNodegroups as i32,
            pb::OperationStepKind::UpgradeAddons as i32,
            pb::OperationStepKind::Postflight as i32,
        ]
    );
    let op = wait_operation(&mut fleet, &op.id, 180, |o| common::is_final(o.state)).await;
    assert_eq!(op.state, pb::OperationState::Succeeded as i32, "{op:#?}");
    assert!(op.steps.iter().all(|s| s.hop == "1.34"));
    assert_eq!(eks_version(&env, "sim-3").await, "1.34");

    // sim-1 and sim-2 (the rollout's selector leaves sim-3 out) run together; sim-2's control
    // plane fails; the first failure halts the rollout, so sim-1 stops after its step in flight
    // (or finishes).
    let created = ro::create(
        &mut fleet,
        pb::CreateRolloutRequest {
            name: "to-1.34".into(),
            work: Some(upgrade("1.34")),
            selector: "env=dev".into(),
            stages: vec![ro::stage("all", "", 2)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(created.selector, "env=dev");
    assert_eq!(ro::clusters(&created).len(), 2, "{}", ro::describe(&created));
    let id = created.id;
    let done = ro::wait_for(&mut fleet, &id, Duration::from_secs(240), "the halt", |r| {
        ro::is(r, S::Failed) || ro::is(r, S::Succeeded)
    })
    .await;
    assert!(ro::is(&done, S::Failed), "{}", ro::describe(&done));
    let cs = ro::clusters(&done);
    let failed = cs.iter().find(|c| c.cluster_id == "sim-2").unwrap();
    assert_eq!(failed.state, S::Failed as i32, "{}", ro::describe(&done));
    assert_eq!(
        failed.failed_step,
        pb::OperationStepKind::UpgradeControlPlane as i32,
        "{failed:?}"
    );
    assert!(
        failed.reason.contains("CONTROL_PLANE_UPDATE_FAILED"),
        "{failed:?}"
    );
    assert!(!done.reason.is_empty(), "{}", ro::describe(&done));
    let sim1 = cs.iter().find(|c| c.cluster_id == "sim-1").unwrap();
    assert!(
        [S::Succeeded as i32, S::Cancelled as i32].contains(&sim1.state),
        "{}",
        ro::describe(&done)
    );
    env.stop().await;
}

/// 1.33 clusters whose workloads run on the self-managed `ng-old` (a budget lets one web pod go
/// at a time): an upgrade must migrate them to a managed group first.
const SELF_MANAGED: &str = r#"
kubernetesVersion: "1.33"
nodeGroups:
  - {name: ng-old, type: self-managed, nodes: 3, instanceType: m5.xlarge, capacity: {pods: 30, cpu: "4", memory: 16Gi}}
namespaces: [shop]
deployments:
  - {name: web, namespace: shop, replicas: 3, cpu: 100m, memory: 128Mi, pdb: {maxUnavailable: 1}}
pods: []
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_rollout_with_migrate_self_managed_migrates_each_cluster_then_upgrades_it() {
    let scenario = Scenario::from_yaml(SELF_MANAGED, "self-managed.yaml").unwrap();
    let env = RolloutEnv::start(&scenario, 2, &["dev"]).await;
    let mut fleet = env.fleet();
    let work = |migrate: bool| pb::Work {
        kind: Some(pb::work::Kind::Upgrade(pb::UpgradeParams {
            target_version: "1.34".into(),
            migrate_self_managed: migrate,
            migration: migrate.then(|| migration("ng-managed")),
            ..Default::default()
        })),
    };

    // Without it, the self-managed group stops the cluster in preflight, before anything changes.
    let op = fleet
        .start_operation(pb::StartOperationRequest {
            cluster_id: "sim-1".into(),
            work: Some(work(false)),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    let op = wait_operation(&mut fleet, &op.id, 180, |o| common::is_final(o.state)).await;
    assert_eq!(op.state, pb::OperationState::Failed as i32, "{op:#?}");
    let preflight = op
        .steps
        .iter()
        .find(|s| s.kind == pb::OperationStepKind::Preflight as i32)
        .unwrap();
    assert!(
        format!("{preflight:?}").contains("SELF_MANAGED_NODEGROUP"),
        "{preflight:#?}"
    );
    assert_eq!(eks_version(&env, "sim-1").await, "1.33");

    let created = ro::create(
        &mut fleet,
        pb::CreateRolloutRequest {
            name: "migrate-then-1.34".into(),
            work: Some(work(true)),
            stages: vec![ro::stage("all", "env=dev", 2)],
            ..Default::default()
        },
    )
    .await;
    let id = created.id;
    let done = ro::wait_for(&mut fleet, &id, Duration::from_secs(300), "the end", |r| {
        ro::is(r, S::Succeeded) || ro::is(r, S::Failed) || ro::is(r, S::Cancelled)
    })
    .await;
    assert!(ro::is(&done, S::Succeeded), "{}", ro::describe(&done));
    for c in ["sim-1", "sim-2"] {
        assert_eq!(eks_version(&env, c).await, "1.34", "{c}");
        assert_eq!(env.pdb_violations(c), 0, "{c}");
        // The old group is gone; the managed group that replaced it was upgraded with the cluster.
        let eks = env.coord.as_ref().unwrap().engine().eks(c).unwrap();
        assert_eq!(eks.list_nodegroups().await.unwrap(), ["ng-managed"], "{c}");
        let ng = eks.describe_nodegroup("ng-managed").await.unwrap();
        assert_eq!(ng.version.as_deref(), Some("1.34"), "{c}: {ng:?}");
        // One migration, then one upgrade hop, in that order, each once.
        let mut ops = rollout_operations(&mut fleet, &id, c).await;
        ops.sort_by_key(|o| o.created_at.as_ref().map(|t| (t.seconds, t.nanos)));
        let kinds: Vec<&str> = ops
            .iter()
            .map(|o| {
                assert_eq!(o.state, pb::OperationState::Succeeded as i32, "{o:?}");
                match o.work.as_ref().and_then(|w| w.kind.as_ref()) {
                    Some(pb::work::Kind::Migration(_)) => "migration",
                    Some(pb::work::Kind::Upgrade(_)) => "upgrade",
                    None => "none",
                }
            })
            .collect();
        assert_eq!(kinds, ["migration", "upgrade"], "{c}: {ops:#?}");
    }
    env.stop().await;
}
