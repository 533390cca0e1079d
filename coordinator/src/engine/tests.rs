//! Engine tests on the in-memory store and the fake EKS: results acked after persisting and
//! duplicates acked without effect, a failed operation cancelled into a rollback, progress
//! accepted only for the attempt in flight and the agent's own cluster, and a resume after a
//! restart re-sending the step in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use jiff::Timestamp;
use tokio::sync::mpsc;

use super::*;
use crate::eks::fake::FakeEks;
use crate::eks::{AsgSize, Backoff, WaitOptions};
use crate::sessions::{Opened, Outbound};
use crate::store::MemStore;

fn options() -> EngineOptions {
    let w = WaitOptions {
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            factor: 2.0,
            jitter: 0.0,
        },
        timeout: Duration::from_secs(10),
    };
    EngineOptions {
        tick: Duration::from_millis(20),
        waits: EksWaits {
            nodegroup: w,
            asg: w,
            update: w,
        },
    }
}

fn engine(store: Arc<MemStore>, sessions: Arc<Sessions>) -> (Engine<FakeEks>, Arc<FakeEks>) {
    let eks = Arc::new(FakeEks::new("c", "1.33"));
    eks.add_self_managed_asg(
        "asg-old",
        "ng-old",
        AsgSize {
            desired: 3,
            min: 3,
            max: 3,
        },
    );
    let map = HashMap::from([("c".to_string(), eks.clone())]);
    (Engine::new(store, map, sessions, options()), eks)
}

fn migration() -> OperationRecord {
    let mut p = crate::params::tests::params();
    p.delete_nodegroup_on_rollback = true;
    let now = Timestamp::now();
    record::new_migration(new_operation_id(now), "c", &p, "test".into(), None, now)
}

/// The next message for the agent, within a failure bound.
async fn next(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> pb::coordinator_message::Message {
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message in time")
        .expect("session open")
        .expect("not an error");
    m.message.expect("message")
}

async fn run_step(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> pb::RunStep {
    loop {
        if let pb::coordinator_message::Message::RunStep(r) = next(rx).await {
            return r;
        }
    }
}

async fn ack(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> pb::Ack {
    loop {
        if let pb::coordinator_message::Message::Ack(a) = next(rx).await {
            return a;
        }
    }
}

fn failed(run: &pb::RunStep) -> pb::StepResult {
    pb::StepResult {
        operation_id: run.operation_id.clone(),
        step_id: run.step_id.clone(),
        attempt: run.attempt,
        finished_at: None,
        trace_context: Default::default(),
        outcome: Some(pb::step_result::Outcome::Error(pb::StepError {
            code: pb::step_error::Code::NodeGroupNotFound as i32,
            message: "node group `ng-new` not found".into(),
            retryable: false,
            ..Default::default()
        })),
    }
}

async fn wait_state(store: &MemStore, id: &str, want: impl Fn(&OperationRecord) -> bool) -> OperationRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = store.get_operation(id).unwrap().unwrap();
        if want(&r) {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "never got there: {r:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_is_acked_once_persisted_and_a_failed_operation_cancels_into_a_rollback() {
    let (store, sessions) = (Arc::new(MemStore::default()), Arc::new(Sessions::new()));
    let (engine, eks) = engine(store.clone(), sessions.clone());
    let Opened { mut rx, .. } = sessions.open("c", "test", None);
    let op = engine.start(migration()).await.expect("started");
    assert_eq!(engine.current_operation("c"), Some(op.id.clone()));

    // CreateManagedNodegroup ran against the fake (subnets from the old group's ASG).
    let run = run_step(&mut rx).await;
    assert_eq!((run.step_id.as_str(), run.attempt), ("WaitNodesReady", 1));
    assert!(eks.calls().iter().any(|c| c == "CreateNodegroup ng-new"));

    // Progress for the attempt in flight is kept; from another cluster it is refused.
    let progress = pb::StepProgress {
        operation_id: op.id.clone(),
        step_id: run.step_id.clone(),
        attempt: 1,
        done: 1,
        total: 4,
        ..Default::default()
    };
    engine.progress("c", progress.clone()).unwrap();
    assert_eq!(engine.live_progress(&op.id).map(|p| p.done), Some(1));
    assert!(matches!(
        engine.progress("other", progress),
        Err(DeliverError::OtherCluster { .. })
    ));

    // A non-retryable failure: persisted, then acked; the operation fails.
    engine.deliver_result("c", failed(&run)).await.unwrap();
    let a = ack(&mut rx).await;
    assert_eq!((a.step_id.as_str(), a.attempt), ("WaitNodesReady", 1));
    let r = wait_state(&store, &op.id, |r| {
        r.state == crate::store::OperationState::Failed
    })
    .await;
    let step = r.steps.iter().find(|s| s.id == "WaitNodesReady").unwrap();
    assert_eq!(step.error_code.as_deref(), Some("NODE_GROUP_NOT_FOUND"));
    assert!(step.error_detail.is_some());
    assert_eq!(engine.live_progress(&op.id), None);
    let wait = tokio::time::Instant::now() + Duration::from_secs(10);
    while engine.current_operation("c").is_some() {
        assert!(
            tokio::time::Instant::now() < wait,
            "the failed operation still holds the cluster"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The same result again (the agent missed the ack): acked, nothing changes.
    let version = r.version;
    engine.deliver_result("c", failed(&run)).await.unwrap();
    ack(&mut rx).await;
    assert_eq!(store.get_operation(&op.id).unwrap().unwrap().version, version);

    // Cancelling the failed migration rolls back: the new group is deleted.
    let cancelled = engine.cancel(&op.id, "test").await.expect("cancel accepted");
    assert_eq!(cancelled.state, crate::store::OperationState::RollingBack);
    let r = wait_state(&store, &op.id, |r| {
        r.machine.as_ref().is_some_and(|m| m.is_terminal())
    })
    .await;
    assert!(matches!(r.machine, Some(Machine::RolledBack { .. })), "{r:#?}");
    assert!(eks.calls().iter().any(|c| c == "DeleteNodegroup ng-new"));
    let refused = engine.cancel(&op.id, "").await.unwrap_err();
    assert!(matches!(refused, EngineError::CancelRefused { .. }), "{refused}");
    let lines: Vec<String> = store
        .list_events(&op.id, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("WaitNodesReady failed"))
            .count(),
        1,
        "{lines:#?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_resends_the_step_in_flight() {
    let (store, sessions) = (Arc::new(MemStore::default()), Arc::new(Sessions::new()));
    let (first, _) = engine(store.clone(), sessions.clone());
    let Opened { mut rx, .. } = sessions.open("c", "test", None);
    let op = first.start(migration()).await.unwrap();
    let sent = run_step(&mut rx).await;
    first.shutdown().await;

    // A new engine on the same store: the step in flight comes again, same attempt.
    let sessions = Arc::new(Sessions::new());
    let Opened { mut rx, .. } = sessions.open("c", "test", None);
    let (second, eks) = engine(store.clone(), sessions.clone());
    assert_eq!(second.resume_all().await.unwrap(), 1);
    let again = run_step(&mut rx).await;
    assert_eq!(again, sent);
    assert!(eks.calls().is_empty(), "nothing re-run on EKS: {:?}", eks.calls());
    let lines: Vec<String> = store
        .list_events(&op.id, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("coordinator restarted; resuming")),
        "{lines:#?}"
    );
    second.shutdown().await;
}

/// Real time: the operation's deadlines are wall-clock timestamps, which paused tokio time does
/// not move. Inventory backs off 10 s after its first failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_issued_when_its_backoff_ends_without_periodic_ticks() {
    let (store, sessions) = (Arc::new(MemStore::default()), Arc::new(Sessions::new()));
    let eks = Arc::new(FakeEks::new("c", "1.33"));
    // A tick far longer than the retry's backoff: only the operation's own deadline can start
    // the retry in time.
    let opts = EngineOptions {
        tick: Duration::from_secs(3600),
        ..options()
    };
    let engine = Engine::new(
        store.clone(),
        HashMap::from([("c".to_string(), eks)]),
        sessions.clone(),
        opts,
    );
    let Opened { mut rx, .. } = sessions.open("c", "test", None);
    let params = crate::params::UpgradeParams {
        from: crate::upgrade::MinorVersion::new(1, 33),
        target: crate::upgrade::MinorVersion::new(1, 34),
        force: false,
        goal: None,
    };
    let now = Timestamp::now();
    let op = record::new_upgrade(new_operation_id(now), "c", &params, "test".into(), None, now);
    let op = engine.start(op).await.expect("started");
    let run = run_step(&mut rx).await;
    assert_eq!((run.step_id.as_str(), run.attempt), ("Inventory", 1));
    let mut result = failed(&run);
    if let Some(pb::step_result::Outcome::Error(e)) = result.outcome.as_mut() {
        e.retryable = true;
    }
    let failed_at = tokio::time::Instant::now();
    engine.deliver_result("c", result).await.unwrap();
    ack(&mut rx).await;
    wait_state(&store, &op.id, |r| {
        matches!(r.machine, Some(Machine::WaitingRetry { attempt: 2, .. }))
    })
    .await;
    let retry = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = rx.recv().await.expect("session open").expect("not an error");
            if let Some(pb::coordinator_message::Message::RunStep(r)) = m.message {
                return r;
            }
        }
    })
    .await
    .expect("the retry is issued once its backoff ends");
    assert_eq!((retry.step_id.as_str(), retry.attempt), ("Inventory", 2));
    let waited = failed_at.elapsed();
    assert!(waited >= Duration::from_secs(10), "retried after {waited:?}");
}
