//! The operation record's coarse view (`state`, and per step: state, attempts, started/finished,
//! error, outputs), kept in sync with the state machine's state after every transition, so
//! readers (the API, the CLI) never interpret the machine themselves.

use jiff::Timestamp;

use crate::operation::{Action, Event, OperationState as Machine};
use crate::params::{MigrationParams, Params, UpgradeParams};
use crate::plan::{Plan, Step, MIGRATION, UPGRADE};
use crate::store::{OperationKind, OperationRecord, OperationState, StepRecord, StepState};

/// The id of `step` within its operation (also what the agent's `RunStep.step_id` carries).
pub fn step_id(step: Step) -> String {
    step.to_string()
}

/// The step a record's step id names, if any.
pub fn step_of(record: &OperationRecord, id: &str) -> Option<Step> {
    record
        .steps
        .iter()
        .find(|s| s.id == id)
        .and_then(|s| serde_json::from_value(serde_json::Value::String(s.kind.clone())).ok())
}

/// The plan an operation record runs.
pub fn plan_of(r: &OperationRecord) -> Plan {
    match r.kind {
        OperationKind::Migration => Plan::Migration,
        OperationKind::Upgrade => Plan::Upgrade,
    }
}

/// A new migration of `cluster`: every forward step pending, the machine at `Pending`; in the
/// trace of the current span.
pub fn new_migration(
    id: String,
    cluster: &str,
    params: &MigrationParams,
    created_by: String,
    rollout_id: Option<String>,
    now: Timestamp,
) -> OperationRecord {
    let params = serde_json::to_value(params).unwrap_or_default();
    new_record(
        id,
        cluster,
        OperationKind::Migration,
        params,
        &MIGRATION,
        created_by,
        rollout_id,
        now,
    )
}

/// A new one-minor upgrade of `cluster` (`params.from` → `params.target`): every step of the
/// upgrade plan pending, the machine at `Pending`; in the trace of the current span.
pub fn new_upgrade(
    id: String,
    cluster: &str,
    params: &UpgradeParams,
    created_by: String,
    rollout_id: Option<String>,
    now: Timestamp,
) -> OperationRecord {
    let params = serde_json::to_value(params).unwrap_or_default();
    new_record(
        id,
        cluster,
        OperationKind::Upgrade,
        params,
        &UPGRADE,
        created_by,
        rollout_id,
        now,
    )
}

/// A new operation of `kind` with `steps` pending, in the trace of the current span.
#[allow(clippy::too_many_arguments)]
fn new_record(
    id: String,
    cluster: &str,
    kind: OperationKind,
    params: serde_json::Value,
    steps: &[Step],
    created_by: String,
    rollout_id: Option<String>,
    now: Timestamp,
) -> OperationRecord {
    OperationRecord {
        id,
        cluster: cluster.to_string(),
        kind,
        params,
        state: OperationState::Pending,
        steps: steps.iter().map(|s| pending_step(*s)).collect(),
        machine: Some(Machine::Pending),
        rollout_id,
        created_by,
        traceparent: flotilla_proto::telemetry::traceparent(&tracing::Span::current()),
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        version: 0,
    }
}

/// The record's stored parameters, read by its kind (`None` if they cannot be read).
pub fn params_of(r: &OperationRecord) -> Option<Params> {
    match r.kind {
        OperationKind::Migration => serde_json::from_value(r.params.clone())
            .ok()
            .map(Params::Migration),
        OperationKind::Upgrade => serde_json::from_value(r.params.clone()).ok().map(Params::Upgrade),
    }
}

fn pending_step(step: Step) -> StepRecord {
    StepRecord {
        id: step_id(step),
        kind: step.to_string(),
        state: StepState::Pending,
        attempts: 0,
        started_at: None,
        finished_at: None,
        error: None,
        error_code: None,
        error_detail: None,
        outputs: serde_json::Value::Null,
    }
}

/// The step record of `step`, appended (pending) if the plan did not list it (rollback steps).
fn step_mut(r: &mut OperationRecord, step: Step) -> &mut StepRecord {
    let id = step_id(step);
    let i = match r.steps.iter().position(|s| s.id == id) {
        Some(i) => i,
        None => {
            r.steps.push(pending_step(step));
            r.steps.len() - 1
        }
    };
    &mut r.steps[i]
}

/// Marks every still-pending forward step of the record's plan from `from` on (every one when
/// `from` is `None`) skipped.
fn skip_rest(r: &mut OperationRecord, from: Option<Step>, now: Timestamp) {
    let start = from.and_then(Step::index).unwrap_or(0);
    for step in plan_of(r).steps().iter().skip(start) {
        let s = step_mut(r, *step);
        if s.state == StepState::Pending {
            s.state = StepState::Skipped;
            s.finished_at = Some(now);
        }
    }
}

/// Brings `r` in line with `machine` after a transition triggered by `event` that produced
/// `actions`; `error_detail` is the agent's typed error (wire-encoded) of a failed result.
pub fn sync(
    r: &mut OperationRecord,
    machine: &Machine,
    event: &Event,
    actions: &[Action],
    error_detail: Option<&str>,
    now: Timestamp,
) {
    r.machine = Some(machine.clone());
    r.updated_at = now;
    for a in actions {
        if let Action::SaveOutputs {
            step,
            attempt,
            outputs,
        } = a
        {
            let s = step_mut(r, *step);
            s.state = StepState::Succeeded;
            s.attempts = *attempt;
            s.finished_at = Some(now);
            s.error = None;
            s.error_code = None;
            s.error_detail = None;
            s.outputs = serde_json::to_value(outputs).unwrap_or_default();
        }
    }
    // A failure of the attempt in flight (the machine moved on from it): keep its error.
    if let Event::StepFailed {
        step, code, message, ..
    } = event
    {
        let s = step_mut(r, *step);
        s.error = Some(message.clone());
        s.error_code = Some(code.clone());
        s.error_detail = error_detail.map(str::to_string);
    }
    match machine {
        Machine::Pending => r.state = OperationState::Pending,
        Machine::Running {
            step,
            attempt,
            started_at,
        } => {
            r.state = OperationState::Running;
            r.started_at.get_or_insert(*started_at);
            let s = step_mut(r, *step);
            if s.state != StepState::Running || s.attempts != *attempt {
                s.started_at = Some(*started_at);
            }
            s.state = StepState::Running;
            s.attempts = *attempt;
            s.finished_at = None;
        }
        Machine::WaitingRetry {
            step,
            attempt,
            last_error,
            ..
        } => {
            r.state = OperationState::Running;
            let s = step_mut(r, *step);
            s.state = StepState::Running;
            s.attempts = attempt.saturating_sub(1);
            s.error = Some(last_error.message.clone());
            s.error_code = Some(last_error.code.clone());
        }
        Machine::RollingBack {
            from_step,
            step,
            attempt,
            started_at,
            retry_at,
            delete_new_group,
        } => {
            r.state = OperationState::RollingBack;
            let from = step_mut(r, *from_step);
            if matches!(from.state, StepState::Running | StepState::Pending) {
                from.state = StepState::Cancelled;
                from.finished_at = Some(now);
            }
            skip_rest(r, from_step.next(), now);
            for rb in Step::rollback_plan(*from_step, *delete_new_group) {
                step_mut(r, rb);
            }
            let s = step_mut(r, *step);
            let current = if retry_at.is_some() {
                attempt.saturating_sub(1)
            } else {
                *attempt
            };
            if retry_at.is_none() && (s.state != StepState::Running || s.attempts != current) {
                s.started_at = Some(*started_at);
            }
            s.state = StepState::Running;
            s.attempts = current;
            s.finished_at = None;
        }
        Machine::Cancelling {
            step,
            attempt,
            started_at,
        } => {
            // The step in flight runs to its end; nothing after it will.
            r.state = OperationState::Running;
            let s = step_mut(r, *step);
            if s.state != StepState::Running || s.attempts != *attempt {
                s.started_at = Some(*started_at);
            }
            s.state = StepState::Running;
            s.attempts = *attempt;
            s.finished_at = None;
        }
        Machine::Succeeded => {
            r.state = OperationState::Succeeded;
            r.finished_at.get_or_insert(now);
        }
        Machine::Failed { step, error } => {
            r.state = OperationState::Failed;
            r.finished_at.get_or_insert(now);
            let s = step_mut(r, *step);
            s.state = StepState::Failed;
            s.attempts = error.attempt;
            s.finished_at = Some(now);
            s.error = Some(error.message.clone());
            s.error_code = Some(error.code.clone());
        }
        Machine::Cancelled => {
            r.state = OperationState::Cancelled;
            r.finished_at.get_or_insert(now);
            // An agent step stopped by the cancel (or a retry that will not run).
            for s in r.steps.iter_mut().filter(|s| s.state == StepState::Running) {
                s.state = StepState::Cancelled;
                s.finished_at = Some(now);
            }
            skip_rest(r, None, now);
        }
        Machine::RolledBack { from_step } => {
            r.state = OperationState::Cancelled;
            r.finished_at = Some(now);
            let from = step_mut(r, *from_step);
            if matches!(from.state, StepState::Running | StepState::Pending) {
                from.state = StepState::Cancelled;
                from.finished_at = Some(now);
            }
            skip_rest(r, from_step.next(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::{next, StepOutputs};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn params() -> MigrationParams {
        serde_json::from_value(serde_json::json!({
            "from_nodegroup": "ng-old",
            "nodegroup": {
                "nodegroupName": "ng-new", "instanceTypes": ["m5.large"],
                "scalingConfig": {"minSize": 1, "maxSize": 3, "desiredSize": 2},
                "subnets": [], "nodeRole": "arn:aws:iam::1:role/n"
            },
            "taint_key": "flotilla.io/migrating", "surge": {"percent": 100},
            "ready_timeout": {"secs": 600, "nanos": 0}, "drain_concurrency": 5,
            "node_timeout": {"secs": 600, "nanos": 0}, "on_blocked": "fail",
            "delete_emptydir_data": true, "force": false, "delete_nodegroup_on_rollback": true
        }))
        .unwrap()
    }

    /// Drives the machine and the record together, as the engine does.
    fn drive(r: &mut OperationRecord, event: Event, at: Timestamp) {
        let m = r.machine.clone().unwrap();
        let (m2, actions) = next(&m, &event, at);
        sync(r, &m2, &event, &actions, Some("wire"), at);
    }

    fn states(r: &OperationRecord) -> Vec<(String, StepState, u32)> {
        r.steps
            .iter()
            .map(|s| (s.id.clone(), s.state, s.attempts))
            .collect()
    }

    #[test]
    fn steps_follow_the_machine_through_a_retry_and_success() {
        let mut r = new_migration("op-1".into(), "c", &params(), "me".into(), None, t(0));
        assert_eq!(step_of(&r, "Drain"), Some(Step::Drain));
        assert_eq!(step_of(&r, "Nope"), None);
        drive(
            &mut r,
            Event::Start {
                plan: Plan::Migration,
            },
            t(1),
        );
        assert_eq!(r.state, OperationState::Running);
        assert_eq!(r.started_at, Some(t(1)));
        assert_eq!(r.steps[0].state, StepState::Running);
        let ok = |step, attempt| Event::StepSucceeded {
            step,
            attempt,
            outputs: StepOutputs {
                summary: "done".into(),
                evictable_pods_left: (step == Step::Drain).then_some(0),
                detail: None,
            },
        };
        drive(&mut r, ok(Step::CreateManagedNodegroup, 1), t(2));
        assert_eq!(r.steps[0].state, StepState::Succeeded);
        assert_eq!(r.steps[0].outputs["summary"], "done");
        assert_eq!((r.steps[1].state, r.steps[1].attempts), (StepState::Running, 1));
        drive(
            &mut r,
            Event::StepFailed {
                step: Step::WaitNodesReady,
                attempt: 1,
                code: "NODES_NOT_READY".into(),
                retryable: true,
                message: "2 of 3".into(),
            },
            t(3),
        );
        let s = &r.steps[1];
        assert_eq!((s.state, s.attempts), (StepState::Running, 1));
        assert_eq!(s.error_code.as_deref(), Some("NODES_NOT_READY"));
        assert_eq!(s.error_detail.as_deref(), Some("wire"));
        drive(&mut r, Event::Tick, t(10_000));
        assert_eq!(r.steps[1].attempts, 2);
        for (i, step) in MIGRATION.iter().enumerate().skip(1) {
            let attempt = if i == 1 { 2 } else { 1 };
            drive(&mut r, ok(*step, attempt), t(10_001 + i as i64));
        }
        assert_eq!(r.state, OperationState::Succeeded);
        assert!(r.finished_at.is_some());
        assert!(r.steps.iter().all(|s| s.state == StepState::Succeeded));
        assert!(r.steps[1].error.is_none());
    }

    #[test]
    fn cancel_during_taint_rolls_back_and_skips_the_rest() {
        let mut r = new_migration("op-1".into(), "c", &params(), "me".into(), None, t(0));
        drive(
            &mut r,
            Event::Start {
                plan: Plan::Migration,
            },
            t(1),
        );
        let ok = |step| Event::StepSucceeded {
            step,
            attempt: 1,
            outputs: StepOutputs::default(),
        };
        drive(&mut r, ok(Step::CreateManagedNodegroup), t(2));
        drive(&mut r, ok(Step::WaitNodesReady), t(3));
        drive(
            &mut r,
            Event::Cancel {
                delete_new_group: true,
            },
            t(4),
        );
        assert_eq!(r.state, OperationState::RollingBack);
        let st = states(&r);
        assert_eq!(st[2], ("Taint".into(), StepState::Cancelled, 1));
        assert!(st[3..8].iter().all(|s| s.1 == StepState::Skipped), "{st:?}");
        assert_eq!(st[8], ("Rollback".into(), StepState::Running, 1));
        assert_eq!(st[9], ("DeleteManagedNodegroup".into(), StepState::Pending, 0));
        drive(&mut r, ok(Step::Rollback), t(5));
        drive(&mut r, ok(Step::DeleteManagedNodegroup), t(6));
        assert_eq!(r.state, OperationState::Cancelled);
        assert!(matches!(r.machine, Some(Machine::RolledBack { .. })));
        assert_eq!(r.steps[9].state, StepState::Succeeded);
    }
}
