//! Unit and property-style tests of the migration state machine.

use std::time::Duration;

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::state::OLD_GROUP_NOT_EMPTY;
use super::*;
use crate::plan::{Plan, Runner, Step, MIGRATION};

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid timestamp")
}

fn at(secs: u64) -> Timestamp {
    t0().checked_add(Duration::from_secs(secs)).expect("in range")
}

fn ok(step: Step, attempt: u32) -> Event {
    let evictable_pods_left = (step == Step::Drain).then_some(0);
    Event::StepSucceeded {
        step,
        attempt,
        outputs: StepOutputs {
            summary: format!("{step} done"),
            evictable_pods_left,
            detail: None,
        },
    }
}

fn fail(step: Step, attempt: u32, retryable: bool) -> Event {
    Event::StepFailed {
        step,
        attempt,
        code: if retryable {
            "DRAIN_BLOCKED"
        } else {
            "DRAIN_REFUSED"
        }
        .into(),
        retryable,
        message: "boom".into(),
    }
}

fn running(step: Step, attempt: u32, started_at: Timestamp) -> OperationState {
    OperationState::Running {
        step,
        attempt,
        started_at,
    }
}

/// The actions that (re-)issue a step, without the records.
fn issued(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::RecordEvent { .. } | Action::SaveOutputs { .. }))
        .cloned()
        .collect()
}

fn has_record(actions: &[Action], needle: &str) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::RecordEvent { message } if message.contains(needle)))
}

fn fresh(step: Step, attempt: u32) -> Action {
    match step.runner() {
        Runner::Agent => Action::SendRunStep { step, attempt },
        Runner::Coordinator => Action::RunCoordinatorStep {
            step,
            attempt,
            mode: RunMode::Fresh,
        },
    }
}

fn again(step: Step, attempt: u32) -> Action {
    match step.runner() {
        Runner::Agent => Action::ResendRunStep { step, attempt },
        Runner::Coordinator => Action::RunCoordinatorStep {
            step,
            attempt,
            mode: RunMode::Recheck,
        },
    }
}

/// Drives a fresh migration until `step` is running (attempt 1).
fn run_until(step: Step) -> OperationState {
    let (mut s, _) = next(
        &OperationState::Pending,
        &Event::Start {
            plan: Plan::Migration,
        },
        t0(),
    );
    for (i, st) in MIGRATION.iter().enumerate() {
        if *st == step {
            return s;
        }
        s = next(&s, &ok(*st, 1), at(i as u64 + 1)).0;
    }
    panic!("{step} is not a forward step");
}

fn roundtrip(s: &OperationState) -> OperationState {
    let json = serde_json::to_string(s).expect("serialise");
    serde_json::from_str(&json).expect("deserialise")
}

// === happy path ===

#[test]
fn happy_path_step_by_step() {
    let (mut s, actions) = next(
        &OperationState::Pending,
        &Event::Start {
            plan: Plan::Migration,
        },
        t0(),
    );
    assert_eq!(issued(&actions), [fresh(Step::CreateManagedNodegroup, 1)]);
    assert_eq!(s, running(Step::CreateManagedNodegroup, 1, t0()));

    for (i, step) in MIGRATION.iter().enumerate() {
        let now = at(10 * (i as u64 + 1));
        let (n, actions) = next(&s, &ok(*step, 1), now);
        assert!(matches!(
            actions.first(),
            Some(Action::SaveOutputs { step: st, attempt: 1, .. }) if st == step
        ));
        match step.next() {
            Some(following) => {
                assert_eq!(n, running(following, 1, now));
                assert_eq!(issued(&actions), [fresh(following, 1)]);
            }
            None => {
                assert_eq!(n, OperationState::Succeeded);
                assert!(issued(&actions).is_empty());
                assert!(has_record(&actions, "migration succeeded"));
            }
        }
        s = n;
    }
    assert!(s.is_terminal());
}

#[test]
fn runner_of_each_step_gets_the_right_action() {
    for step in MIGRATION {
        let s = run_until(step);
        let (_, actions) = next(&s, &Event::Resume, at(100));
        match step.runner() {
            Runner::Coordinator => assert!(matches!(
                issued(&actions)[..],
                [Action::RunCoordinatorStep { .. }]
            )),
            Runner::Agent => assert!(matches!(issued(&actions)[..], [Action::ResendRunStep { .. }])),
        }
    }
}

#[test]
fn step_started_is_recorded_only_for_the_current_attempt() {
    let s = run_until(Step::Taint);
    let (n, a) = next(
        &s,
        &Event::StepStarted {
            step: Step::Taint,
            attempt: 1,
        },
        at(50),
    );
    assert_eq!(n, s);
    assert!(has_record(&a, "Taint started"));
    let (n, a) = next(
        &s,
        &Event::StepStarted {
            step: Step::Taint,
            attempt: 2,
        },
        at(50),
    );
    assert_eq!(n, s);
    assert!(a.is_empty());
}

#[test]
fn start_twice_is_ignored() {
    let s = run_until(Step::Taint);
    assert_eq!(
        next(
            &s,
            &Event::Start {
                plan: Plan::Migration
            },
            at(99)
        ),
        (s.clone(), vec![])
    );
}

// === dedup ===

#[test]
fn duplicate_result_is_ignored() {
    let s = run_until(Step::WaitNodesReady);
    let (s2, _) = next(&s, &ok(Step::WaitNodesReady, 1), at(100));
    assert_eq!(s2, running(Step::Taint, 1, at(100)));
    // The agent re-sends until acked: the same result again changes nothing.
    for e in [ok(Step::WaitNodesReady, 1), fail(Step::WaitNodesReady, 1, true)] {
        assert_eq!(next(&s2, &e, at(101)), (s2.clone(), vec![]));
    }
}

#[test]
fn stale_attempt_and_other_step_results_are_ignored() {
    let s = run_until(Step::SurgeScale);
    let (w, _) = next(&s, &fail(Step::SurgeScale, 1, true), at(100));
    let (s2, _) = next(&w, &Event::Tick, at(1000));
    assert_eq!(s2, running(Step::SurgeScale, 2, at(1000)));
    for e in [
        ok(Step::SurgeScale, 1),
        fail(Step::SurgeScale, 1, false),
        ok(Step::SurgeScale, 3),
        ok(Step::Taint, 2),
        ok(Step::VerifyReady, 2),
        ok(Step::Rollback, 1),
    ] {
        assert_eq!(next(&s2, &e, at(1001)), (s2.clone(), vec![]), "{e:?}");
    }
    // Nothing is accepted while waiting either.
    for e in [ok(Step::SurgeScale, 1), ok(Step::SurgeScale, 2)] {
        assert_eq!(next(&w, &e, at(101)), (w.clone(), vec![]));
    }
}

#[test]
fn terminal_states_ignore_results() {
    for s in [
        OperationState::Succeeded,
        OperationState::Cancelled,
        OperationState::RolledBack {
            from_step: Step::Drain,
        },
    ] {
        for e in [
            ok(Step::RestoreScale, 1),
            Event::Tick,
            Event::Resume,
            Event::Start {
                plan: Plan::Migration,
            },
        ] {
            assert_eq!(next(&s, &e, at(1)), (s.clone(), vec![]));
        }
    }
}

// === retries ===

#[test]
fn retry_with_backoff_then_fail_after_max_attempts() {
    let policy = Step::Drain.retry_policy();
    let mut s = run_until(Step::Drain);
    let mut now = at(100);
    for attempt in 1..policy.max_attempts {
        let (w, actions) = next(&s, &fail(Step::Drain, attempt, true), now);
        let until = now.checked_add(policy.backoff(attempt)).expect("in range");
        assert!(matches!(
            &w,
            OperationState::WaitingRetry { step: Step::Drain, attempt: a, until: u, .. }
                if *a == attempt + 1 && *u == until
        ));
        assert!(issued(&actions).is_empty());
        assert!(has_record(&actions, "retrying at"));
        // Not before the backoff elapses.
        let early = until.checked_sub(Duration::from_secs(1)).expect("in range");
        assert_eq!(next(&w, &Event::Tick, early), (w.clone(), vec![]));
        let (r, actions) = next(&w, &Event::Tick, until);
        assert_eq!(r, running(Step::Drain, attempt + 1, until));
        assert_eq!(issued(&actions), [fresh(Step::Drain, attempt + 1)]);
        s = r;
        now = until.checked_add(Duration::from_secs(5)).expect("in range");
    }
    let (f, actions) = next(&s, &fail(Step::Drain, policy.max_attempts, true), now);
    assert!(matches!(
        &f,
        OperationState::Failed { step: Step::Drain, error } if error.attempt == policy.max_attempts
    ));
    assert!(has_record(&actions, "out of attempts"));
    assert!(issued(&actions).is_empty());
}

#[test]
fn backoff_grows() {
    let s = run_until(Step::Drain);
    let (w, _) = next(&s, &fail(Step::Drain, 1, true), at(0));
    let (r, _) = next(&w, &Event::Tick, at(60));
    let (w2, _) = next(&r, &fail(Step::Drain, 2, true), at(60));
    let OperationState::WaitingRetry { until, .. } = w2 else {
        panic!("expected WaitingRetry, got {w2:?}");
    };
    assert_eq!(until, at(60 + 120));
}

#[test]
fn non_retryable_failure_fails_at_once() {
    let s = run_until(Step::CreateManagedNodegroup);
    let (f, actions) = next(&s, &fail(Step::CreateManagedNodegroup, 1, false), at(5));
    assert!(matches!(
        f,
        OperationState::Failed {
            step: Step::CreateManagedNodegroup,
            ..
        }
    ));
    assert!(has_record(&actions, "not retryable"));
}

#[test]
fn drain_that_leaves_pods_is_not_success() {
    let s = run_until(Step::Drain);
    for left in [Some(3), None] {
        let e = Event::StepSucceeded {
            step: Step::Drain,
            attempt: 1,
            outputs: StepOutputs {
                evictable_pods_left: left,
                ..StepOutputs::default()
            },
        };
        let (w, actions) = next(&s, &e, at(10));
        assert!(matches!(
            &w,
            OperationState::WaitingRetry { step: Step::Drain, attempt: 2, last_error, .. }
                if last_error.code == OLD_GROUP_NOT_EMPTY
        ));
        assert!(!issued(&actions).iter().any(|a| matches!(
            a,
            Action::RunCoordinatorStep {
                step: Step::RemoveSelfManagedNodegroup,
                ..
            }
        )));
    }
}

#[test]
fn remove_self_managed_only_after_empty_drain() {
    let s = run_until(Step::Drain);
    let (n, actions) = next(&s, &ok(Step::Drain, 1), at(10));
    assert_eq!(n, running(Step::RemoveSelfManagedNodegroup, 1, at(10)));
    assert_eq!(issued(&actions), [fresh(Step::RemoveSelfManagedNodegroup, 1)]);
}

// === cancel ===

/// Runs the rollback to its end, checking each issued step.
fn finish_rollback(mut s: OperationState, expected: &[Step]) -> OperationState {
    for (i, step) in expected.iter().enumerate() {
        assert!(
            matches!(&s, OperationState::RollingBack { step: st, attempt: 1, retry_at: None, .. } if st == step),
            "expected {step} in flight, got {s:?}"
        );
        let (n, actions) = next(&s, &ok(*step, 1), at(500 + i as u64));
        if let Some(following) = expected.get(i + 1) {
            assert_eq!(issued(&actions), [fresh(*following, 1)]);
        } else {
            assert!(issued(&actions).is_empty());
        }
        s = n;
    }
    s
}

#[test]
fn cancel_at_each_running_step() {
    for step in MIGRATION {
        for delete in [false, true] {
            let s = run_until(step);
            let (n, actions) = next(
                &s,
                &Event::Cancel {
                    delete_new_group: delete,
                },
                at(400),
            );
            if step.can_roll_back_from() {
                let plan = Step::rollback_plan(step, delete);
                let mut expected = Vec::new();
                if step.runner() == Runner::Agent {
                    expected.push(Action::CancelAgentStep { step, attempt: 1 });
                }
                if let Some(first) = plan.first() {
                    expected.push(fresh(*first, 1));
                }
                assert_eq!(issued(&actions), expected, "{step} delete={delete}");
                if step >= Step::Taint {
                    assert_eq!(plan.first(), Some(&Step::Rollback));
                }
                let end = finish_rollback(n, &plan);
                assert_eq!(end, OperationState::RolledBack { from_step: step });
            } else {
                // After the drain: refused, recorded, nothing changes, the migration goes on.
                assert_eq!(n, s, "{step}");
                assert!(has_record(&actions, "cancel refused"));
                assert!(issued(&actions).is_empty());
                let mut cur = n;
                let mut st = Some(step);
                while let Some(x) = st {
                    cur = next(&cur, &ok(x, 1), at(600)).0;
                    st = x.next();
                }
                assert_eq!(cur, OperationState::Succeeded);
            }
        }
    }
}

#[test]
fn cancel_while_waiting_to_retry() {
    let s = run_until(Step::Taint);
    let (w, _) = next(&s, &fail(Step::Taint, 1, true), at(10));
    let (n, actions) = next(
        &w,
        &Event::Cancel {
            delete_new_group: true,
        },
        at(11),
    );
    // No attempt is in flight: nothing to cancel on the agent.
    assert_eq!(
        issued(&actions),
        [fresh(Step::Rollback, 1)],
        "no CancelAgentStep while waiting"
    );
    let end = finish_rollback(n, &[Step::Rollback, Step::DeleteManagedNodegroup]);
    assert_eq!(
        end,
        OperationState::RolledBack {
            from_step: Step::Taint
        }
    );

    let s = run_until(Step::RestoreScale);
    let (w, _) = next(&s, &fail(Step::RestoreScale, 1, true), at(10));
    let (n, actions) = next(
        &w,
        &Event::Cancel {
            delete_new_group: true,
        },
        at(11),
    );
    assert_eq!(n, w);
    assert!(has_record(&actions, "cancel refused"));
}

#[test]
fn cancel_pending_cancels() {
    let (n, actions) = next(
        &OperationState::Pending,
        &Event::Cancel {
            delete_new_group: true,
        },
        t0(),
    );
    assert_eq!(n, OperationState::Cancelled);
    assert!(issued(&actions).is_empty());
}

#[test]
fn cancel_after_failure_rolls_back_only_before_drain_ends() {
    let s = run_until(Step::VerifyReady);
    let (f, _) = next(&s, &fail(Step::VerifyReady, 1, false), at(5));
    let (n, actions) = next(
        &f,
        &Event::Cancel {
            delete_new_group: false,
        },
        at(6),
    );
    assert_eq!(issued(&actions), [fresh(Step::Rollback, 1)]);
    assert_eq!(
        finish_rollback(n, &[Step::Rollback]),
        OperationState::RolledBack {
            from_step: Step::VerifyReady
        }
    );

    let s = run_until(Step::RemoveSelfManagedNodegroup);
    let (f, _) = next(&s, &fail(Step::RemoveSelfManagedNodegroup, 1, false), at(5));
    let (n, actions) = next(
        &f,
        &Event::Cancel {
            delete_new_group: false,
        },
        at(6),
    );
    assert_eq!(n, f);
    assert!(has_record(&actions, "cancel refused"));
}

#[test]
fn cancel_during_rollback_or_after_end_is_refused() {
    let s = run_until(Step::Drain);
    let (rb, _) = next(
        &s,
        &Event::Cancel {
            delete_new_group: false,
        },
        at(5),
    );
    let (n, actions) = next(
        &rb,
        &Event::Cancel {
            delete_new_group: true,
        },
        at(6),
    );
    assert_eq!(n, rb);
    assert!(has_record(&actions, "already rolling back"));
    for s in [OperationState::Succeeded, OperationState::Cancelled] {
        let (n, actions) = next(
            &s,
            &Event::Cancel {
                delete_new_group: true,
            },
            at(6),
        );
        assert_eq!(n, s);
        assert!(has_record(&actions, "cancel refused"));
    }
}

#[test]
fn rollback_step_retries_then_fails() {
    let s = run_until(Step::SurgeScale);
    let (mut rb, _) = next(
        &s,
        &Event::Cancel {
            delete_new_group: false,
        },
        at(0),
    );
    let max = Step::Rollback.retry_policy().max_attempts;
    let mut now = at(1);
    for attempt in 1..max {
        let (w, actions) = next(&rb, &fail(Step::Rollback, attempt, true), now);
        assert!(issued(&actions).is_empty());
        let OperationState::RollingBack {
            retry_at: Some(until),
            attempt: a,
            ..
        } = w
        else {
            panic!("expected a rollback retry, got {w:?}");
        };
        assert_eq!(a, attempt + 1);
        // Stale result of the failed attempt while waiting: ignored.
        assert_eq!(next(&w, &ok(Step::Rollback, attempt), now), (w.clone(), vec![]));
        let (r, actions) = next(&w, &Event::Tick, until);
        assert_eq!(issued(&actions), [fresh(Step::Rollback, attempt + 1)]);
        rb = r;
        now = until;
    }
    let (f, _) = next(&rb, &fail(Step::Rollback, max, true), now);
    assert!(matches!(
        f,
        OperationState::Failed {
            step: Step::Rollback,
            ..
        }
    ));
    // A failed rollback cannot be cancelled again.
    let (n, _) = next(
        &f,
        &Event::Cancel {
            delete_new_group: true,
        },
        now,
    );
    assert_eq!(n, f);
}

// === restart and reconnect ===

/// One state of every kind, with the action Resume must give.
fn resume_cases() -> Vec<(OperationState, Vec<Action>)> {
    let mut cases = vec![(OperationState::Pending, vec![])];
    for step in MIGRATION {
        cases.push((running(step, 2, at(10)), vec![again(step, 2)]));
        let w = OperationState::WaitingRetry {
            step,
            attempt: 2,
            until: at(1_000_000),
            last_error: StepFailure {
                attempt: 1,
                code: "X".into(),
                retryable: true,
                message: String::new(),
            },
        };
        cases.push((w, vec![]));
        let due = OperationState::WaitingRetry {
            step,
            attempt: 3,
            until: at(10),
            last_error: StepFailure {
                attempt: 2,
                code: "X".into(),
                retryable: true,
                message: String::new(),
            },
        };
        cases.push((due, vec![fresh(step, 3)]));
    }
    for step in [Step::Rollback, Step::DeleteManagedNodegroup] {
        let rb = |retry_at| OperationState::RollingBack {
            from_step: Step::Drain,
            delete_new_group: true,
            step,
            attempt: 2,
            started_at: at(5),
            retry_at,
        };
        cases.push((rb(None), vec![again(step, 2)]));
        cases.push((rb(Some(at(1_000_000))), vec![]));
        cases.push((rb(Some(at(10))), vec![fresh(step, 2)]));
    }
    for s in [
        OperationState::Succeeded,
        OperationState::Cancelled,
        OperationState::RolledBack {
            from_step: Step::Taint,
        },
        OperationState::Failed {
            step: Step::Drain,
            error: StepFailure {
                attempt: 5,
                code: "DRAIN_BLOCKED".into(),
                retryable: true,
                message: "pdb".into(),
            },
        },
    ] {
        cases.push((s, vec![]));
    }
    cases
}

#[test]
fn resume_after_crash_at_every_state() {
    let now = at(100);
    for (state, expected) in resume_cases() {
        // The stored form survives a restart unchanged.
        let stored = roundtrip(&state);
        assert_eq!(stored, state);
        let (n, actions) = next(&stored, &Event::Resume, now);
        assert_eq!(issued(&actions), expected, "resume from {state:?}");
        // In-flight work keeps its step and attempt: nothing skipped, nothing new.
        if let Some((step, attempt)) = state.in_flight() {
            assert_eq!(n.in_flight(), Some((step, attempt)));
            assert_eq!(n, state);
        }
        // A second crash right after gives the same action again (for in-flight states), and
        // never moves to another step.
        let (n2, actions2) = next(&roundtrip(&n), &Event::Resume, now);
        if state.in_flight().is_some() {
            assert_eq!((n2, issued(&actions2)), (n, expected));
        } else if expected.is_empty() {
            assert_eq!(n2, state);
        }
    }
}

#[test]
fn resume_then_result_continues_normally() {
    // Crash after Create was issued: re-check, then its result moves on to the agent steps.
    let s = run_until(Step::CreateManagedNodegroup);
    let (s, actions) = next(&roundtrip(&s), &Event::Resume, at(1));
    assert_eq!(issued(&actions), [again(Step::CreateManagedNodegroup, 1)]);
    let (s, actions) = next(&s, &ok(Step::CreateManagedNodegroup, 1), at(2));
    assert_eq!(issued(&actions), [fresh(Step::WaitNodesReady, 1)]);
    assert_eq!(s, running(Step::WaitNodesReady, 1, at(2)));
}

#[test]
fn agent_reconnect_resends_in_flight_agent_step() {
    let s = run_until(Step::VerifyReady);
    let (n, actions) = next(&s, &Event::AgentDisconnected, at(1));
    assert_eq!(n, s);
    assert!(issued(&actions).is_empty());
    let (n, actions) = next(&s, &Event::AgentReconnected, at(2));
    assert_eq!(n, s);
    assert_eq!(
        issued(&actions),
        [Action::ResendRunStep {
            step: Step::VerifyReady,
            attempt: 1
        }]
    );
    // A coordinator step does not care about the agent.
    let s = run_until(Step::RemoveSelfManagedNodegroup);
    assert_eq!(next(&s, &Event::AgentReconnected, at(2)), (s.clone(), vec![]));
    // Nor does a wait.
    let s = run_until(Step::Drain);
    let (w, _) = next(&s, &fail(Step::Drain, 1, true), at(3));
    assert_eq!(next(&w, &Event::AgentReconnected, at(4)), (w.clone(), vec![]));
}

#[test]
fn serde_forms_are_stable() {
    let s = running(Step::Drain, 2, t0());
    let json = serde_json::to_string(&s).expect("serialise");
    assert!(json.contains(r#""state":"Running""#), "{json}");
    assert!(json.contains(r#""step":"Drain""#), "{json}");
    for (state, _) in resume_cases() {
        assert_eq!(roundtrip(&state), state);
    }
    let e = Event::Cancel {
        delete_new_group: true,
    };
    let back: Event = serde_json::from_str(&serde_json::to_string(&e).expect("ser")).expect("de");
    assert_eq!(back, e);
}

// === property-style ===

/// Checks invariants while driving random event sequences: steps complete in order, the drain
/// never starts before VerifyReady succeeded, RemoveSelfManagedNodegroup never before the drain
/// succeeded, no rollback after the drain, attempts within policy, and restarts change nothing.
#[test]
fn random_event_sequences_keep_invariants() {
    let mut ends = std::collections::BTreeMap::<&'static str, u32>::new();
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state = OperationState::Pending;
        let mut now = t0();
        let mut completed: Vec<Step> = Vec::new();
        let mut last_result: Option<Event> = None;

        for _ in 0..400 {
            now = now
                .checked_add(Duration::from_secs(rng.random_range(0..400)))
                .expect("in range");
            let event = random_event(&mut rng, &state, &last_result);
            if matches!(event, Event::StepSucceeded { .. } | Event::StepFailed { .. }) {
                last_result = Some(event.clone());
            }
            // A crash: the state goes through its stored form.
            let before = if matches!(event, Event::Resume) {
                let stored = roundtrip(&state);
                assert_eq!(stored, state, "seed {seed}");
                stored
            } else {
                state.clone()
            };
            let (after, actions) = next(&before, &event, now);

            check_transition(seed, &before, &event, &after, &actions, &mut completed);
            state = after;
            if state.is_terminal() && rng.random_bool(0.2) {
                break;
            }
        }
        let end = match state {
            OperationState::Succeeded => "succeeded",
            OperationState::Failed { .. } => "failed",
            OperationState::RolledBack { .. } => "rolled back",
            OperationState::Cancelled => "cancelled",
            _ => "unfinished",
        };
        *ends.entry(end).or_default() += 1;
    }
    // The generator reaches every ending.
    for end in ["succeeded", "failed", "rolled back", "cancelled"] {
        assert!(
            ends.get(end).copied().unwrap_or(0) > 0,
            "{end} never reached: {ends:?}"
        );
    }
}

fn random_event(rng: &mut StdRng, state: &OperationState, last: &Option<Event>) -> Event {
    let any_step = |rng: &mut StdRng| {
        let all = [
            Step::CreateManagedNodegroup,
            Step::WaitNodesReady,
            Step::Taint,
            Step::SurgeScale,
            Step::VerifyReady,
            Step::Drain,
            Step::RemoveSelfManagedNodegroup,
            Step::RestoreScale,
            Step::Rollback,
            Step::DeleteManagedNodegroup,
        ];
        all[rng.random_range(0..all.len())]
    };
    match rng.random_range(0..100) {
        // A result for what is in flight (most of the time).
        0..=44 => match state.in_flight() {
            Some((step, attempt)) => match rng.random_range(0..10) {
                0..=6 => {
                    let mut e = ok(step, attempt);
                    if step == Step::Drain && rng.random_bool(0.2) {
                        e = Event::StepSucceeded {
                            step,
                            attempt,
                            outputs: StepOutputs {
                                evictable_pods_left: Some(2),
                                ..StepOutputs::default()
                            },
                        };
                    }
                    e
                }
                7..=8 => fail(step, attempt, true),
                _ => fail(step, attempt, false),
            },
            None => Event::Tick,
        },
        45..=54 => last.clone().unwrap_or(Event::Tick),
        55..=62 => {
            let step = any_step(rng);
            let attempt = rng.random_range(1..6);
            if rng.random_bool(0.5) {
                ok(step, attempt)
            } else {
                fail(step, attempt, rng.random_bool(0.5))
            }
        }
        63..=74 => Event::Tick,
        75..=77 => Event::Cancel {
            delete_new_group: rng.random_bool(0.5),
        },
        78..=85 => Event::Resume,
        86..=89 => Event::AgentDisconnected,
        90..=93 => Event::AgentReconnected,
        94..=96 => {
            let step = any_step(rng);
            Event::StepStarted {
                step,
                attempt: rng.random_range(1..4),
            }
        }
        _ => Event::Start {
            plan: Plan::Migration,
        },
    }
}

/// The forward step a state is on, if any.
fn forward_step(s: &OperationState) -> Option<Step> {
    match s {
        OperationState::Running { step, .. } | OperationState::WaitingRetry { step, .. } => Some(*step),
        _ => None,
    }
}

fn check_transition(
    seed: u64,
    before: &OperationState,
    event: &Event,
    after: &OperationState,
    actions: &[Action],
    completed: &mut Vec<Step>,
) {
    let ctx = format!("seed {seed}: {before:?} --{event:?}--> {after:?} {actions:?}");

    // Completion is only ever the forward step that was current, via its success.
    let completed_now = match (forward_step(before), forward_step(after), after) {
        (Some(b), Some(a), _) if a != b => Some(b),
        (Some(b), None, OperationState::Succeeded) => Some(b),
        _ => None,
    };
    if let Some(step) = completed_now {
        assert!(
            matches!(event, Event::StepSucceeded { step: s, .. } if *s == step),
            "{ctx}"
        );
        assert_eq!(forward_step(after), step.next(), "a step was skipped: {ctx}");
        completed.push(step);
    }
    // Steps complete in order, each once.
    assert_eq!(completed[..], MIGRATION[..completed.len()], "{ctx}");

    // Whatever is issued is the step now in flight, and its predecessors are done.
    for a in actions {
        let (step, attempt) = match a {
            Action::SendRunStep { step, attempt }
            | Action::ResendRunStep { step, attempt }
            | Action::RunCoordinatorStep { step, attempt, .. } => (*step, *attempt),
            _ => continue,
        };
        assert_eq!(after.in_flight(), Some((step, attempt)), "{ctx}");
        assert!(
            attempt >= 1 && attempt <= step.retry_policy().max_attempts,
            "{ctx}"
        );
        if let Some(i) = step.index() {
            assert_eq!(completed[..], MIGRATION[..i], "{step} issued out of order: {ctx}");
        }
        if step == Step::Drain {
            assert!(completed.contains(&Step::VerifyReady), "{ctx}");
        }
        if step == Step::RemoveSelfManagedNodegroup {
            assert!(completed.contains(&Step::Drain), "{ctx}");
        }
        if step.is_rollback() {
            assert!(!completed.contains(&Step::Drain), "rollback after drain: {ctx}");
        }
        // Fresh sends only for a new attempt; a Resume only re-sends what was in flight.
        if matches!(event, Event::Resume) {
            if let Some(prev) = before.in_flight() {
                assert_eq!(prev, (step, attempt), "{ctx}");
                assert!(
                    matches!(
                        a,
                        Action::ResendRunStep { .. }
                            | Action::RunCoordinatorStep {
                                mode: RunMode::Recheck,
                                ..
                            }
                    ),
                    "{ctx}"
                );
            }
        }
    }
    if let OperationState::RollingBack { .. } = after {
        assert!(!completed.contains(&Step::Drain), "{ctx}");
    }
    // Attempts stay within policy.
    match after {
        OperationState::Running { step, attempt, .. }
        | OperationState::WaitingRetry { step, attempt, .. }
        | OperationState::RollingBack { step, attempt, .. } => {
            assert!(
                *attempt >= 1 && *attempt <= step.retry_policy().max_attempts,
                "{ctx}"
            );
        }
        _ => {}
    }
    // Over means over.
    if before.is_terminal() {
        assert!(
            issued(actions).is_empty() || matches!(before, OperationState::Failed { .. }),
            "{ctx}"
        );
        if !matches!(before, OperationState::Failed { .. }) {
            assert_eq!(before, after, "{ctx}");
        }
    }
    // Stale results never change anything.
    if let Event::StepSucceeded { step, attempt, .. } | Event::StepFailed { step, attempt, .. } = event {
        if before.in_flight() != Some((*step, *attempt)) {
            assert_eq!(before, after, "{ctx}");
            assert!(actions.is_empty(), "{ctx}");
        }
    }
    assert_eq!(&roundtrip(after), after, "{ctx}");
}
