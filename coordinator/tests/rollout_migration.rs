//! Migration rollouts through the Fleet API (tonic over mTLS on 127.0.0.1), the coordinator
//! in-process, real agents (`flotilla_agent::uplink::run`) against a simulated fleet: three
//! stages with pause, resume and an approval gate, watched from start to end, with no
//! PodDisruptionBudget violated; and a cancelled rollout.

mod common;

use std::time::Duration;

use common::rollout::{self as ro, RolloutEnv};
use common::{migration, viewer};
use flotilla_proto::fleet::v1 as pb;
use flotilla_sim::scenario::Scenario;
use futures::StreamExt;
use pb::RolloutState as S;
use tonic::Code;

fn work() -> pb::Work {
    pb::Work {
        kind: Some(pb::work::Kind::Migration(migration("ng-managed"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_stages_with_pause_and_approval_migrate_six_clusters_without_pdb_violations() {
    let env = RolloutEnv::start(&Scenario::default_scenario(), 6, &["dev", "staging", "prod"]).await;
    let mut fleet = env.fleet();

    // Bad specs are refused naming the field; viewers may not create.
    let mut bad = pb::CreateRolloutRequest {
        name: "migrate".into(),
        work: Some(work()),
        stages: vec![ro::stage("dev", "env in dev", 1)],
        ..Default::default()
    };
    let e = fleet.create_rollout(bad.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("stages[0].selector"), "{}", e.message());
    // A selector typo selects nothing: refused, with the labels there are.
    bad.stages = vec![ro::stage("dev", "env=dve", 1)];
    let e = fleet.create_rollout(bad.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("select none of the 6 clusters") && e.message().contains("env=dev, env=prod"),
        "{}",
        e.message()
    );
    bad.stages = vec![ro::stage("dev", "env=dev", 1)];
    let e = viewer(env.addr, &env.pki).create_rollout(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let mut prod = ro::stage("prod", "env=prod", 2);
    prod.require_approval = true;
    let mut staging = ro::stage("staging", "env=staging", 1);
    staging.soak = Some(prost_types::Duration { seconds: 1, nanos: 0 });
    let created = ro::create(
        &mut fleet,
        pb::CreateRolloutRequest {
            name: "migrate-fleet".into(),
            work: Some(work()),
            stages: vec![ro::stage("dev", "env=dev", 2), staging, prod],
            ..Default::default()
        },
    )
    .await;
    let id = created.id.clone();
    assert!(id.starts_with("ro-"), "{id}");
    let names: Vec<Vec<&str>> = created
        .stages
        .iter()
        .map(|s| s.clusters.iter().map(|c| c.cluster_id.as_str()).collect())
        .collect();
    assert_eq!(
        names,
        [["sim-1", "sim-4"], ["sim-2", "sim-5"], ["sim-3", "sim-6"]]
    );

    // Watch it from the start, in the background.
    let mut watch = fleet
        .watch_rollout(pb::WatchRolloutRequest {
            rollout_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let watcher = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = watch.next().await {
            events.push(e.expect("watch event"));
        }
        events
    });

    // Pause: dev's running clusters finish, staging does not begin.
    let paused = fleet
        .pause_rollout(pb::PauseRolloutRequest {
            rollout_id: id.clone(),
            reason: "checking dashboards".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ro::is(&paused, S::Paused), "{}", ro::describe(&paused));
    assert!(paused.reason.contains("checking dashboards"), "{}", paused.reason);
    let r = ro::wait_for(&mut fleet, &id, Duration::from_secs(240), "dev to finish", |r| {
        r.stages[0]
            .clusters
            .iter()
            .all(|c| c.state == S::Succeeded as i32)
    })
    .await;
    assert!(ro::is(&r, S::Paused), "{}", ro::describe(&r));
    assert!(
        r.stages[1].clusters.iter().all(|c| c.operation_id.is_none()),
        "{}",
        ro::describe(&r)
    );
    fleet
        .resume_rollout(pb::ResumeRolloutRequest {
            rollout_id: id.clone(),
        })
        .await
        .unwrap();

    // Staging runs (one at a time), soaks, then prod waits at its gate.
    let r = ro::wait_for(&mut fleet, &id, Duration::from_secs(300), "the prod gate", |r| {
        ro::is(r, S::WaitingForApproval)
    })
    .await;
    assert_eq!(
        r.stages[2].state,
        S::WaitingForApproval as i32,
        "{}",
        ro::describe(&r)
    );
    assert!(r.stages[2].clusters.iter().all(|c| c.operation_id.is_none()));
    let e = fleet
        .approve_stage(pb::ApproveStageRequest {
            rollout_id: id.clone(),
            stage_index: 0,
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("does not require approval"),
        "{}",
        e.message()
    );
    let approved = fleet
        .approve_stage(pb::ApproveStageRequest {
            rollout_id: id.clone(),
            stage_index: 2,
            comment: "dashboards green".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        approved.stages[2].approved_by.contains("alice"),
        "{:?}",
        approved.stages[2]
    );

    let done = ro::wait_for(&mut fleet, &id, Duration::from_secs(300), "the end", |r| {
        !ro::is(r, S::Running) && !ro::is(r, S::WaitingForApproval) && !ro::is(r, S::Soaking)
    })
    .await;
    assert!(ro::is(&done, S::Succeeded), "{}", ro::describe(&done));
    for c in ro::clusters(&done) {
        assert_eq!(c.state, S::Succeeded as i32, "{c:?}");
        let op = fleet
            .get_operation(pb::GetOperationRequest {
                operation_id: c.operation_id.clone().expect("operation"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(op.state, pb::OperationState::Succeeded as i32, "{op:?}");
        assert_eq!(op.rollout_id.as_deref(), Some(id.as_str()));
        assert_eq!(env.pdb_violations(&c.cluster_id), 0, "{}", c.cluster_id);
    }
    let listed = fleet
        .list_rollouts(pb::ListRolloutsRequest {
            states: vec![S::Succeeded as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rollouts.len(), 1);

    // The watch: a snapshot, then changes with gapless sequence numbers, ending Succeeded.
    let events = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watch ends with the rollout")
        .unwrap();
    assert!(
        matches!(events[0].event, Some(pb::rollout_event::Event::Snapshot(_))),
        "{:?}",
        events[0]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.sequence, i as u64 + 1);
    }
    assert!(events.iter().any(
        |e| matches!(&e.event, Some(pb::rollout_event::Event::State(s)) if *s == S::WaitingForApproval as i32)
    ));
    assert!(
        matches!(events.last().unwrap().event, Some(pb::rollout_event::Event::State(s)) if s == S::Succeeded as i32),
        "{:?}",
        events.last()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_rollout_rolls_back_its_running_cluster_and_starts_no_other() {
    let env = RolloutEnv::start(&Scenario::default_scenario(), 2, &["dev"]).await;
    let mut fleet = env.fleet();
    let created = ro::create(
        &mut fleet,
        pb::CreateRolloutRequest {
            name: "migrate-then-cancel".into(),
            work: Some(work()),
            stages: vec![ro::stage("all", "", 1)],
            ..Default::default()
        },
    )
    .await;
    let id = created.id;
    // Cancel once the first cluster's migration is under way (before its drain).
    let r = ro::wait_for(&mut fleet, &id, Duration::from_secs(120), "sim-1 to run", |r| {
        ro::clusters(r)
            .iter()
            .any(|c| c.cluster_id == "sim-1" && c.current_step != 0)
    })
    .await;
    assert!(ro::is(&r, S::Running), "{}", ro::describe(&r));
    let cancelling = fleet
        .cancel_rollout(pb::CancelRolloutRequest {
            rollout_id: id.clone(),
            reason: "wrong template".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        cancelling.reason.contains("wrong template"),
        "{}",
        cancelling.reason
    );
    let done = ro::wait_for(
        &mut fleet,
        &id,
        Duration::from_secs(180),
        "the cancel to end",
        |r| ro::is(r, S::Cancelled),
    )
    .await;
    let cs = ro::clusters(&done);
    let sim2 = cs.iter().find(|c| c.cluster_id == "sim-2").unwrap();
    assert_eq!(sim2.state, S::Cancelled as i32, "{}", ro::describe(&done));
    assert!(sim2.operation_id.is_none(), "{}", ro::describe(&done));
    let sim1 = cs.iter().find(|c| c.cluster_id == "sim-1").unwrap();
    let op = fleet
        .get_operation(pb::GetOperationRequest {
            operation_id: sim1.operation_id.clone().unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    // Before its drain ended the migration rolls back; after it, it runs to its end.
    assert!(
        [
            pb::OperationState::RolledBack as i32,
            pb::OperationState::Succeeded as i32
        ]
        .contains(&op.state),
        "{op:?}"
    );
    assert_eq!(env.pdb_violations("sim-1"), 0);
    // A finished rollout refuses more commands.
    let e = fleet
        .resume_rollout(pb::ResumeRolloutRequest { rollout_id: id })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    env.stop().await;
}
