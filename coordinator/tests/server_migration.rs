//! One cluster migrated through the coordinator in-process: the EKS steps against the simulator's
//! EKS and Auto Scaling APIs, the agent steps run by a test-side agent (the agent's real steps on
//! kube-rs) over AgentGateway with mTLS. The stream is cut while a step is in flight (the
//! reconnected agent gets the same RunStep again) and after a result was acked (the re-sent result
//! is acked again and applied once, as the event log shows).

mod common;

use std::time::Duration;

use common::agent::{self, AgentSession};
use common::*;
use flotilla_coordinator::eks::aws::AwsEks;
use flotilla_coordinator::eks::{Eks, NodegroupStatus};
use flotilla_proto::fleet::v1 as pb;
use futures::StreamExt;

const FORWARD: [&str; 8] = [
    "CreateManagedNodegroup",
    "WaitNodesReady",
    "Taint",
    "SurgeScale",
    "VerifyReady",
    "Drain",
    "RemoveSelfManagedNodegroup",
    "RestoreScale",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_runs_end_to_end_and_survives_cut_streams() {
    let sim = start_fleet(1).await;
    let pki = Pki::new(&["sim-1"]);
    let kube = agent::kube(&sim, &pki.path("sim"), "sim-1").await;
    let clusters = clusters_file(&sim, &["sim-1"], &["dev"]);
    let coord = start_coordinator(&pki, &pki.path("data"), clusters.clone()).await;
    let addr = coord.local_addr();
    let mut fleet = operator(addr, &pki);
    let agent_channel = || channel(addr, &pki, "agent-sim-1");

    // The agent connects with its inventory; the cluster shows it.
    let inventory = agent::hello_inventory(&kube).await;
    let mut session = AgentSession::open(agent_channel(), "sim-1", Some(inventory.clone()))
        .await
        .expect("session");
    let c = fleet
        .get_cluster(pb::GetClusterRequest {
            cluster_id: "sim-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        c.connected && c.agent_version == "0.1.0-test" && c.last_seen.is_some(),
        "{c:?}"
    );
    assert!(c
        .inventory
        .unwrap()
        .node_groups
        .iter()
        .any(|g| g.name == "ng-old"));

    // fromNodegroup left empty: the cluster's only self-managed group, from the inventory.
    let mut params = migration("ng-new");
    params.from_nodegroup.clear();
    let op = fleet
        .start_operation(pb::StartOperationRequest {
            cluster_id: "sim-1".into(),
            work: Some(pb::Work {
                kind: Some(pb::work::Kind::Migration(params)),
            }),
            dry_run: false,
        })
        .await
        .expect("start")
        .into_inner();
    let Some(pb::work::Kind::Migration(m)) = op.work.as_ref().and_then(|w| w.kind.clone()) else {
        panic!("work: {op:?}")
    };
    assert_eq!(m.from_nodegroup, "ng-old");
    let id = op.id.clone();

    // A watcher from the start: snapshot, then step changes, progress and the final state.
    let mut watch = fleet
        .watch_operation(pb::WatchOperationRequest {
            operation_id: id.clone(),
            since_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let watcher = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(Ok(ev)) = watch.next().await {
            events.push(ev);
        }
        events
    });

    let mut cut_in_flight = false;
    let mut resent_after_ack = false;
    loop {
        let run = session.next_run_step().await;
        assert_eq!(run.operation_id, id);
        if run.step_id == "WaitNodesReady" {
            // Step 1 went through the simulated EKS API: the managed group exists and is ACTIVE.
            let eks = AwsEks::connect_with(&clusters.clusters[0].eks(), eks_options())
                .await
                .unwrap();
            let ng = eks.describe_nodegroup("ng-new").await.expect("ng-new exists");
            assert_eq!(ng.status, NodegroupStatus::Active);
        }
        if run.step_id == "Taint" && !cut_in_flight {
            // The stream is cut before the agent ran the step: after reconnecting, the same
            // RunStep (same attempt) comes again.
            cut_in_flight = true;
            session.cut();
            session = AgentSession::open(agent_channel(), "sim-1", Some(inventory.clone()))
                .await
                .expect("reconnect");
            let again = session.next_run_step().await;
            assert_eq!((again.step_id.as_str(), again.attempt), ("Taint", run.attempt));
            assert_eq!(again, run);
        }
        let result = agent::execute(&kube, "sim-1", &run, session.sender()).await;
        assert!(
            matches!(result.outcome, Some(pb::step_result::Outcome::Ok(_))),
            "{} failed: {result:?}",
            run.step_id
        );
        session.result_acked(result.clone()).await;
        if run.step_id == "SurgeScale" && !resent_after_ack {
            // The ack is lost with the stream: the agent re-sends the result on its next session
            // (twice, even); it is acked again and applied once.
            resent_after_ack = true;
            session.cut();
            session = AgentSession::open(agent_channel(), "sim-1", Some(inventory.clone()))
                .await
                .expect("reconnect");
            session.result_acked(result.clone()).await;
            session.result_acked(result).await;
        }
        if run.step_id == "RestoreScale" {
            break;
        }
    }
    let done = wait_operation(&mut fleet, &id, 120, |o| is_final(o.state)).await;
    assert_eq!(done.state, pb::OperationState::Succeeded as i32, "{done:#?}");
    assert!(done
        .steps
        .iter()
        .all(|s| s.state == pb::StepState::Succeeded as i32));
    let drain = done.steps.iter().find(|s| s.step_id == "Drain").unwrap();
    assert!(matches!(
        drain.output.as_ref().and_then(|o| o.output.as_ref()),
        Some(pb::step_output::Output::Drain(d)) if d.skipped.is_empty() && !d.drained.is_empty()
    ));
    assert!(done.started_at.is_some() && done.finished_at.is_some());

    // The event log: every step succeeded exactly once, in order; nothing ran twice.
    let lines = log_lines(&mut fleet, &id).await;
    let mut last = 0;
    for step in FORWARD {
        let needle = format!("{step} succeeded (attempt 1)");
        assert_eq!(count(&lines, &needle), 1, "{needle}: {lines:#?}");
        let at = lines.iter().position(|l| l.contains(&needle)).unwrap();
        assert!(at >= last, "{step} out of order: {lines:#?}");
        last = at;
    }
    assert_eq!(count(&lines, "failed"), 0, "{lines:#?}");

    // The old group's Auto Scaling group is gone; the workloads run on the new nodes.
    let eks = AwsEks::connect_with(&clusters.clusters[0].eks(), eks_options())
        .await
        .unwrap();
    assert_eq!(eks.find_self_managed_asg("ng-old").await.unwrap(), None);
    let stats = sim.cluster("sim-1").unwrap().lock().stats().stats().clone();
    assert_eq!(stats.pdb_violations, 0, "{:?}", stats.violations);

    // The watcher saw the snapshot first, progress, step changes, and ended on Succeeded.
    let events = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watch ends with the operation")
        .unwrap();
    assert!(matches!(
        events.first().and_then(|e| e.event.as_ref()),
        Some(pb::operation_event::Event::Snapshot(_))
    ));
    let has = |f: &dyn Fn(&pb::operation_event::Event) -> bool| {
        events.iter().any(|e| e.event.as_ref().is_some_and(f))
    };
    assert!(
        has(&|e| matches!(e, pb::operation_event::Event::Progress(_))),
        "no progress seen"
    );
    assert!(has(
        &|e| matches!(e, pb::operation_event::Event::Step(s) if s.step_id == "Drain" && s.state == pb::StepState::Succeeded as i32)
    ));
    assert!(has(
        &|e| matches!(e, pb::operation_event::Event::Log(l) if l.message.contains("migration succeeded"))
    ));
    assert!(matches!(
        events.last().and_then(|e| e.event.as_ref()),
        Some(pb::operation_event::Event::State(s)) if *s == pb::OperationState::Succeeded as i32
    ));
    // Log sequence numbers have no gaps.
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| matches!(e.event, Some(pb::operation_event::Event::Log(_))))
        .map(|e| e.sequence)
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // The cluster is free, and a watch from a later sequence replays only what follows.
    let c = fleet
        .get_cluster(pb::GetClusterRequest {
            cluster_id: "sim-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.current_operation_id, None);
    let mut tail = fleet
        .watch_operation(pb::WatchOperationRequest {
            operation_id: id.clone(),
            since_sequence: seqs[seqs.len() - 2],
        })
        .await
        .unwrap()
        .into_inner();
    let mut logs = 0;
    while let Some(Ok(ev)) = tail.next().await {
        if matches!(ev.event, Some(pb::operation_event::Event::Log(_))) {
            logs += 1;
        }
    }
    assert_eq!(logs, 1);

    session.cut();
    coord.shutdown().await.expect("clean shutdown");
    sim.shutdown().await;
}
