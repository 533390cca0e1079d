//! Tests of event folding and of the line/JSON forms of watch events.

use flotilla_proto::fleet::v1 as pb;
use jiff::Timestamp;

use super::*;

fn step(id: &str, kind: pb::OperationStepKind, state: pb::StepState) -> pb::OperationStep {
    pb::OperationStep {
        step_id: id.into(),
        kind: kind as i32,
        state: state as i32,
        attempt: 1,
        ..Default::default()
    }
}

fn op() -> pb::Operation {
    pb::Operation {
        id: "op-1".into(),
        cluster_id: "c1".into(),
        state: pb::OperationState::Running as i32,
        steps: vec![
            step("1", pb::OperationStepKind::Taint, pb::StepState::Succeeded),
            step("2", pb::OperationStepKind::Drain, pb::StepState::Running),
        ],
        ..Default::default()
    }
}

fn ev(sequence: u64, event: pb::operation_event::Event) -> pb::OperationEvent {
    pb::OperationEvent {
        operation_id: "op-1".into(),
        sequence,
        at: Some(prost_types::Timestamp {
            seconds: 1_750_000_000,
            nanos: 0,
        }),
        event: Some(event),
    }
}

fn progress(done: u64, blockers: Vec<pb::Blocker>) -> pb::StepProgress {
    pb::StepProgress {
        operation_id: "op-1".into(),
        step_id: "2".into(),
        done,
        total: 10,
        message: "pods evicted".into(),
        blockers,
        ..Default::default()
    }
}

#[test]
fn operation_events_fold_into_the_operation() {
    use pb::operation_event::Event;
    let mut t = OperationTracker::default();
    assert!(t.apply(&ev(1, Event::Snapshot(op()))));
    assert!(t.apply(&ev(2, Event::Progress(progress(4, vec![])))));
    assert_eq!(
        t.operation.as_ref().unwrap().steps[1]
            .progress
            .as_ref()
            .unwrap()
            .done,
        4
    );
    // A step event without progress keeps the last report while the step runs.
    let mut retried = step("2", pb::OperationStepKind::Drain, pb::StepState::Running);
    retried.attempt = 2;
    assert!(t.apply(&ev(3, Event::Step(retried))));
    let s = &t.operation.as_ref().unwrap().steps[1];
    assert_eq!((s.attempt, s.progress.as_ref().unwrap().done), (2, 4));
    // A new step (e.g. a rollback) is appended.
    assert!(t.apply(&ev(
        4,
        Event::Step(step("9", pb::OperationStepKind::Rollback, pb::StepState::Pending))
    )));
    assert_eq!(t.operation.as_ref().unwrap().steps.len(), 3);
    assert!(!t.ended());
    // Log lines are shown once: a reconnect replays none already seen.
    let log = |seq| {
        ev(
            seq,
            Event::Log(pb::LogLine {
                step_id: "2".into(),
                message: "attempt 2 started".into(),
            }),
        )
    };
    assert!(t.apply(&log(5)));
    assert_eq!(t.last_log, 5);
    assert!(!t.apply(&log(5)) && !t.apply(&log(3)));
    assert!(t.apply(&log(6)));
    assert!(t.apply(&ev(6, Event::State(pb::OperationState::Failed as i32))));
    assert!(t.ended());
    let lines = operation_event_lines(&log(6), t.operation.as_ref().unwrap(), Timestamp::now());
    assert_eq!(lines, ["15:06:40 [Drain] attempt 2 started"]);
}

#[test]
fn operation_lines_name_steps_progress_and_blockers() {
    use pb::operation_event::Event;
    let mut t = OperationTracker::default();
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    let snapshot = ev(1, Event::Snapshot(op()));
    t.apply(&snapshot);
    let lines = operation_event_lines(&snapshot, t.operation.as_ref().unwrap(), now);
    assert_eq!(
        lines,
        ["15:06:40 operation op-1 on c1: Running — unknown work, step Drain"]
    );
    let blocker = pb::Blocker {
        pod: "shop/web-1".into(),
        node: "n1".into(),
        pdbs: vec!["shop/web".into()],
        reason: "blocked by PodDisruptionBudget".into(),
        blocked_for: None,
    };
    let p = ev(2, Event::Progress(progress(4, vec![blocker])));
    t.apply(&p);
    let lines = operation_event_lines(&p, t.operation.as_ref().unwrap(), now);
    assert_eq!(
        lines,
        [
            "15:06:40 Drain: 4/10 pods evicted",
            "15:06:40   blocked: pod web-1 in namespace shop on n1: blocked by PodDisruptionBudget (PDB shop/web)",
        ]
    );
    let mut failed = step("2", pb::OperationStepKind::Drain, pb::StepState::Failed);
    failed.error = Some(pb::StepError {
        code: pb::step_error::Code::DrainBlocked as i32,
        message: "node n1 not empty".into(),
        ..Default::default()
    });
    let f = ev(3, Event::Step(failed));
    t.apply(&f);
    let lines = operation_event_lines(&f, t.operation.as_ref().unwrap(), now);
    assert_eq!(
        lines,
        ["15:06:40 Drain: Failed — DRAIN_BLOCKED: node n1 not empty"]
    );
    let s = ev(4, Event::State(pb::OperationState::Failed as i32));
    t.apply(&s);
    assert_eq!(
        operation_event_lines(&s, t.operation.as_ref().unwrap(), now),
        ["15:06:40 operation op-1: Failed"]
    );
}

#[test]
fn operation_objects_are_tagged_json_lines() {
    use pb::operation_event::Event;
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    let o = op();
    let obj = operation_event_object(&ev(2, Event::Progress(progress(4, vec![]))), &o, now).unwrap();
    let mut buf = Vec::new();
    write_object(&mut buf, Format::Json, &obj).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "progress");
    assert_eq!(v["operationId"], "op-1");
    assert_eq!(v["step"], "Drain");
    assert_eq!(v["progress"]["done"], 4);
    assert_eq!(v["at"], "2025-06-15T15:06:40Z");
    let mut buf = Vec::new();
    write_object(&mut buf, Format::Yaml, &obj).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.starts_with("---\ntype: progress\n"), "{text}");
}

fn cluster(id: &str, state: pb::RolloutState) -> pb::ClusterState {
    pb::ClusterState {
        cluster_id: id.into(),
        state: state as i32,
        ..Default::default()
    }
}

fn rollout() -> pb::Rollout {
    pb::Rollout {
        id: "ro-1".into(),
        name: "fleet".into(),
        state: pb::RolloutState::Running as i32,
        stages: vec![
            pb::Stage {
                index: 0,
                spec: Some(pb::StageSpec {
                    name: "dev".into(),
                    ..Default::default()
                }),
                state: pb::RolloutState::Running as i32,
                clusters: vec![
                    cluster("d1", pb::RolloutState::Running),
                    cluster("d2", pb::RolloutState::Pending),
                ],
                ..Default::default()
            },
            pb::Stage {
                index: 1,
                spec: Some(pb::StageSpec {
                    name: "prod".into(),
                    require_approval: true,
                    ..Default::default()
                }),
                state: pb::RolloutState::Pending as i32,
                clusters: vec![cluster("p1", pb::RolloutState::Pending)],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn rev(sequence: u64, event: pb::rollout_event::Event) -> pb::RolloutEvent {
    pb::RolloutEvent {
        rollout_id: "ro-1".into(),
        sequence,
        at: Some(prost_types::Timestamp {
            seconds: 1_750_000_000,
            nanos: 0,
        }),
        event: Some(event),
    }
}

#[test]
fn rollout_events_fold_into_the_rollout() {
    use pb::rollout_event::Event;
    let mut t = RolloutTracker::default();
    t.apply(&rev(1, Event::Snapshot(rollout())));
    let mut d1 = cluster("d1", pb::RolloutState::Failed);
    d1.failed_step = pb::OperationStepKind::Drain as i32;
    t.apply(&rev(2, Event::Cluster(d1)));
    assert_eq!(
        t.rollout.as_ref().unwrap().stages[0].clusters[0].state,
        pb::RolloutState::Failed as i32
    );
    // A stage event without clusters keeps the clusters known.
    let mut stage = rollout().stages[1].clone();
    stage.clusters.clear();
    stage.state = pb::RolloutState::WaitingForApproval as i32;
    t.apply(&rev(3, Event::Stage(stage)));
    let r = t.rollout.as_ref().unwrap();
    assert_eq!(r.stages[1].clusters.len(), 1);
    assert_eq!(r.stages[1].state, pb::RolloutState::WaitingForApproval as i32);
    let lines = rollout_event_lines(&rev(3, Event::Stage(r.stages[1].clone())), r, Timestamp::now());
    assert_eq!(
        lines,
        ["15:06:40 stage prod: WaitingForApproval: run `flotilla rollout approve ro-1 prod`"]
    );
    assert!(!t.ended());
    assert!(t.apply(&rev(4, Event::State(pb::RolloutState::Failed as i32))));
    assert!(t.ended());
}

#[test]
fn cluster_lines_show_step_progress_and_error() {
    let mut c = cluster("d1", pb::RolloutState::Running);
    c.current_step = pb::OperationStepKind::Drain as i32;
    c.progress = Some(progress(3, vec![]));
    assert_eq!(cluster_line(&c), "d1 Running Drain 3/10 pods evicted");
    c.state = pb::RolloutState::Failed as i32;
    c.failed_step = pb::OperationStepKind::Drain as i32;
    c.reason = "Drain failed after 3 attempts".into();
    assert_eq!(
        cluster_line(&c),
        "d1 Failed Drain — Drain failed after 3 attempts"
    );
}
