//! Unit and property-style tests of the state machine driving the upgrade plan: order, retries,
//! resume as a re-check, and cancel stopping after the step in flight.

use std::time::Duration;

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::plan::{Plan, Runner, Step, UPGRADE};

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid timestamp")
}

fn at(secs: u64) -> Timestamp {
    t0().checked_add(Duration::from_secs(secs)).expect("in range")
}

fn start() -> Event {
    Event::Start { plan: Plan::Upgrade }
}

fn cancel() -> Event {
    Event::Cancel {
        delete_new_group: false,
    }
}

fn ok(step: Step, attempt: u32) -> Event {
    Event::StepSucceeded {
        step,
        attempt,
        outputs: StepOutputs {
            summary: format!("{step} done"),
            ..StepOutputs::default()
        },
    }
}

fn fail(step: Step, attempt: u32, retryable: bool) -> Event {
    Event::StepFailed {
        step,
        attempt,
        code: if retryable { "EKS_API" } else { "PREFLIGHT_BLOCKED" }.into(),
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

/// Drives a fresh upgrade until `step` is running (attempt 1).
fn run_until(step: Step) -> OperationState {
    let (mut s, _) = next(&OperationState::Pending, &start(), t0());
    for (i, st) in UPGRADE.iter().enumerate() {
        if *st == step {
            return s;
        }
        s = next(&s, &ok(*st, 1), at(i as u64 + 1)).0;
    }
    panic!("{step} is not an upgrade step");
}

fn roundtrip(s: &OperationState) -> OperationState {
    let json = serde_json::to_string(s).expect("serialise");
    serde_json::from_str(&json).expect("deserialise")
}

// === order ===

#[test]
fn upgrade_runs_its_steps_in_order_on_their_runners() {
    let (mut s, actions) = next(&OperationState::Pending, &start(), t0());
    assert_eq!(issued(&actions), [fresh(Step::Inventory, 1)]);
    assert!(has_record(&actions, "upgrade started: Inventory"));
    for (i, step) in UPGRADE.iter().enumerate() {
        let now = at(10 * (i as u64 + 1));
        let (n, actions) = next(&s, &ok(*step, 1), now);
        assert!(matches!(
            actions.first(),
            Some(Action::SaveOutputs { step: st, attempt: 1, .. }) if st == step
        ));
        match UPGRADE.get(i + 1) {
            Some(following) => {
                assert_eq!(n, running(*following, 1, now));
                assert_eq!(issued(&actions), [fresh(*following, 1)]);
            }
            None => {
                assert_eq!(n, OperationState::Succeeded);
                assert!(issued(&actions).is_empty());
                assert!(has_record(&actions, "upgrade succeeded"));
            }
        }
        s = n;
    }
    // Agent steps become RunStep, coordinator steps run here.
    assert!(matches!(
        issued(&next(&run_until(Step::Postflight), &Event::Resume, at(99)).1)[..],
        [Action::ResendRunStep {
            step: Step::Postflight,
            attempt: 1
        }]
    ));
}

#[test]
fn a_preflight_blocker_fails_before_anything_changes() {
    let s = run_until(Step::Preflight);
    let (f, actions) = next(&s, &fail(Step::Preflight, 1, false), at(50));
    assert!(matches!(
        &f,
        OperationState::Failed { step: Step::Preflight, error } if error.code == "PREFLIGHT_BLOCKED"
    ));
    assert!(has_record(&actions, "not retryable"));
    // Nothing else is ever issued.
    assert!(issued(&actions).is_empty());
    for e in [Event::Tick, Event::Resume, ok(Step::UpgradeControlPlane, 1)] {
        assert_eq!(next(&f, &e, at(60)), (f.clone(), vec![]));
    }
}

// === retries ===

#[test]
fn each_step_retries_within_its_policy_then_fails() {
    for step in UPGRADE {
        let policy = step.retry_policy();
        let mut s = run_until(step);
        let mut now = at(100);
        for attempt in 1..policy.max_attempts {
            let (w, _) = next(&s, &fail(step, attempt, true), now);
            let until = now.checked_add(policy.backoff(attempt)).expect("in range");
            assert!(matches!(
                &w,
                OperationState::WaitingRetry { step: st, attempt: a, until: u, .. }
                    if *st == step && *a == attempt + 1 && *u == until
            ));
            let (r, actions) = next(&w, &Event::Tick, until);
            assert_eq!(r, running(step, attempt + 1, until));
            // A retried coordinator step is a fresh attempt: the step function itself looks
            // at what EKS already has before issuing anything.
            assert_eq!(issued(&actions), [fresh(step, attempt + 1)]);
            s = r;
            now = until;
        }
        let (f, actions) = next(&s, &fail(step, policy.max_attempts, true), now);
        assert!(
            matches!(&f, OperationState::Failed { step: st, .. } if *st == step),
            "{step}: {f:?}"
        );
        assert!(has_record(&actions, "out of attempts"));
    }
}

// === resume ===

#[test]
fn resume_rechecks_coordinator_steps_and_resends_agent_steps() {
    for step in UPGRADE {
        let s = run_until(step);
        let stored = roundtrip(&s);
        assert_eq!(stored, s);
        let (n, actions) = next(&stored, &Event::Resume, at(500));
        assert_eq!(n, s, "{step}");
        assert_eq!(issued(&actions), [again(step, 1)], "{step}");
    }
    // A control-plane upgrade whose update id was never recorded: Resume re-checks it, and its
    // result moves the upgrade on as usual.
    let s = run_until(Step::UpgradeControlPlane);
    let (s, actions) = next(&roundtrip(&s), &Event::Resume, at(1));
    assert_eq!(
        issued(&actions),
        [Action::RunCoordinatorStep {
            step: Step::UpgradeControlPlane,
            attempt: 1,
            mode: RunMode::Recheck
        }]
    );
    let (s, actions) = next(&s, &ok(Step::UpgradeControlPlane, 1), at(2));
    assert_eq!(issued(&actions), [fresh(Step::UpgradeNodegroups, 1)]);
    assert_eq!(s, running(Step::UpgradeNodegroups, 1, at(2)));
}

// === cancel ===

#[test]
fn cancel_during_an_agent_step_cancels_it_and_stops() {
    for step in [Step::Inventory, Step::Postflight] {
        let s = run_until(step);
        let (n, actions) = next(&s, &cancel(), at(300));
        assert_eq!(n, OperationState::Cancelled, "{step}");
        assert_eq!(issued(&actions), [Action::CancelAgentStep { step, attempt: 1 }]);
        assert!(has_record(&actions, "cancelled during"));
        // The agent's late result of the cancelled attempt changes nothing.
        for e in [ok(step, 1), fail(step, 1, false)] {
            assert_eq!(next(&n, &e, at(301)), (n.clone(), vec![]));
        }
    }
}

#[test]
fn cancel_during_a_coordinator_step_waits_for_it_then_stops() {
    for step in [
        Step::Preflight,
        Step::UpgradeControlPlane,
        Step::UpgradeNodegroups,
        Step::UpgradeAddons,
    ] {
        let s = run_until(step);
        let (c, actions) = next(&s, &cancel(), at(300));
        let OperationState::Cancelling {
            step: st, attempt: 1, ..
        } = c
        else {
            panic!("{step}: expected Cancelling, got {c:?}");
        };
        assert_eq!(st, step);
        assert!(issued(&actions).is_empty(), "an EKS update is not stopped");
        assert!(has_record(&actions, "cannot be stopped or rolled back"));
        assert_eq!(c.in_flight(), Some((step, 1)));
        assert!(!c.is_terminal());

        // Restart while cancelling: the step is re-checked, not abandoned.
        let (r, actions) = next(&roundtrip(&c), &Event::Resume, at(301));
        assert_eq!(r, c);
        assert_eq!(issued(&actions), [again(step, 1)]);
        // A second cancel is refused; ticks do nothing; stale results are ignored.
        let (r, actions) = next(&c, &cancel(), at(302));
        assert_eq!(r, c);
        assert!(has_record(&actions, "cancel refused"));
        assert_eq!(next(&c, &Event::Tick, at(303)), (c.clone(), vec![]));
        assert_eq!(next(&c, &ok(step, 2), at(303)), (c.clone(), vec![]));

        // Success: outputs kept, no next step, Cancelled.
        let (end, actions) = next(&c, &ok(step, 1), at(304));
        assert_eq!(end, OperationState::Cancelled);
        assert!(matches!(
            actions.first(),
            Some(Action::SaveOutputs { step: s, .. }) if *s == step
        ));
        assert!(issued(&actions).is_empty());
        assert!(has_record(&actions, "upgrade cancelled before"));

        // Failure (even retryable): recorded, not retried, Cancelled.
        let (end, actions) = next(&c, &fail(step, 1, true), at(304));
        assert_eq!(end, OperationState::Cancelled);
        assert!(issued(&actions).is_empty());
        assert!(has_record(&actions, "not retried"));
    }
}

#[test]
fn cancel_while_waiting_to_retry_or_pending_stops_at_once() {
    let s = run_until(Step::UpgradeNodegroups);
    let (w, _) = next(&s, &fail(Step::UpgradeNodegroups, 1, true), at(10));
    let (n, actions) = next(&w, &cancel(), at(11));
    assert_eq!(n, OperationState::Cancelled);
    assert!(issued(&actions).is_empty());
    assert!(has_record(&actions, "attempt 2 not run"));
    // The retry never starts.
    assert_eq!(next(&n, &Event::Tick, at(100_000)), (n.clone(), vec![]));

    let (n, actions) = next(&OperationState::Pending, &cancel(), t0());
    assert_eq!(n, OperationState::Cancelled);
    assert!(issued(&actions).is_empty());
}

#[test]
fn cancel_after_the_end_or_a_failure_is_refused_and_nothing_rolls_back() {
    let s = run_until(Step::UpgradeControlPlane);
    let (f, _) = next(&s, &fail(Step::UpgradeControlPlane, 1, false), at(10));
    for done in [f, OperationState::Succeeded, OperationState::Cancelled] {
        let (n, actions) = next(&done, &cancel(), at(20));
        assert_eq!(n, done);
        assert!(has_record(&actions, "cancel refused"));
        assert!(issued(&actions).is_empty());
    }
}

// === property-style ===

/// Random event sequences over the upgrade plan: steps complete in order and each once, nothing
/// is issued after a cancel except the re-check of the step in flight, only coordinator steps are
/// ever `Cancelling`, no migration step or rollback is ever issued, and restarts change nothing.
#[test]
fn random_upgrade_sequences_keep_invariants() {
    let mut ends = std::collections::BTreeMap::<&'static str, u32>::new();
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state = OperationState::Pending;
        let mut now = t0();
        let mut completed: Vec<Step> = Vec::new();
        let mut cancelled = false;
        for _ in 0..300 {
            now = now
                .checked_add(Duration::from_secs(rng.random_range(0..600)))
                .expect("in range");
            let event = random_event(&mut rng, &state);
            let before = roundtrip(&state);
            assert_eq!(before, state, "seed {seed}");
            let (after, actions) = next(&before, &event, now);
            let ctx = format!("seed {seed}: {before:?} --{event:?}--> {after:?} {actions:?}");

            // Completion only via the success of the step that was current.
            let cur = |s: &OperationState| match s {
                OperationState::Running { step, .. } | OperationState::WaitingRetry { step, .. } => {
                    Some(*step)
                }
                _ => None,
            };
            if let (Some(b), a) = (cur(&before), &after) {
                let moved_on = cur(a).is_some_and(|x| x != b) || *a == OperationState::Succeeded;
                if moved_on {
                    assert!(
                        matches!(&event, Event::StepSucceeded { step, .. } if *step == b),
                        "{ctx}"
                    );
                    assert_eq!(cur(a), b.next(), "{ctx}");
                    completed.push(b);
                }
            }
            assert_eq!(completed[..], UPGRADE[..completed.len()], "{ctx}");

            for a in &actions {
                let (step, attempt) = match a {
                    Action::SendRunStep { step, attempt }
                    | Action::ResendRunStep { step, attempt }
                    | Action::RunCoordinatorStep { step, attempt, .. } => (*step, *attempt),
                    Action::CancelAgentStep { step, .. } => {
                        assert_eq!(step.runner(), Runner::Agent, "{ctx}");
                        continue;
                    }
                    _ => continue,
                };
                assert_eq!(step.plan(), Plan::Upgrade, "{ctx}");
                assert_eq!(after.in_flight(), Some((step, attempt)), "{ctx}");
                assert!(attempt <= step.retry_policy().max_attempts, "{ctx}");
                if cancelled {
                    // After a cancel, only the re-check of what was in flight.
                    assert!(matches!(event, Event::Resume), "{ctx}");
                    assert!(matches!(before, OperationState::Cancelling { .. }), "{ctx}");
                }
            }
            if let OperationState::Cancelling { step, .. } = &after {
                assert_eq!(step.runner(), Runner::Coordinator, "{ctx}");
            }
            assert!(
                !matches!(
                    after,
                    OperationState::RollingBack { .. } | OperationState::RolledBack { .. }
                ),
                "{ctx}"
            );
            if matches!(event, Event::Cancel { .. }) && !before.is_terminal() {
                cancelled = true;
                assert!(
                    matches!(
                        after,
                        OperationState::Cancelled | OperationState::Cancelling { .. }
                    ),
                    "{ctx}"
                );
            }
            if before.is_terminal() {
                assert_eq!(before, after, "{ctx}");
                assert!(issued(&actions).is_empty(), "{ctx}");
            }
            state = after;
            if state.is_terminal() && rng.random_bool(0.3) {
                break;
            }
        }
        let end = match state {
            OperationState::Succeeded => "succeeded",
            OperationState::Failed { .. } => "failed",
            OperationState::Cancelled => "cancelled",
            _ => "unfinished",
        };
        *ends.entry(end).or_default() += 1;
    }
    for end in ["succeeded", "failed", "cancelled"] {
        assert!(
            ends.get(end).copied().unwrap_or(0) > 0,
            "{end} never reached: {ends:?}"
        );
    }
}

fn random_event(rng: &mut StdRng, state: &OperationState) -> Event {
    let any_step = |rng: &mut StdRng| UPGRADE[rng.random_range(0..UPGRADE.len())];
    match rng.random_range(0..100) {
        0..=49 => match state.in_flight() {
            Some((step, attempt)) => match rng.random_range(0..10) {
                0..=6 => ok(step, attempt),
                7..=8 => fail(step, attempt, true),
                _ => fail(step, attempt, false),
            },
            None => Event::Tick,
        },
        50..=59 => {
            let step = any_step(rng);
            let attempt = rng.random_range(1..5);
            if rng.random_bool(0.5) {
                ok(step, attempt)
            } else {
                fail(step, attempt, true)
            }
        }
        60..=74 => Event::Tick,
        75..=77 => cancel(),
        78..=87 => Event::Resume,
        88..=91 => Event::AgentDisconnected,
        92..=95 => Event::AgentReconnected,
        _ => start(),
    }
}

#[test]
fn halt_lets_the_step_in_flight_finish_then_stops() {
    let halt = Event::Halt {
        delete_new_group: false,
    };
    // An agent step (Inventory) is not cancelled: it finishes, then the upgrade stops.
    let (s, _) = next(&OperationState::Pending, &start(), at(0));
    let (s, actions) = next(&s, &halt, at(1));
    assert!(
        matches!(
            s,
            OperationState::Cancelling {
                step: Step::Inventory,
                attempt: 1,
                ..
            }
        ),
        "{s:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::CancelAgentStep { .. })),
        "{actions:?}"
    );
    // A reconnected agent gets the step again.
    let (s2, actions) = next(&s, &Event::AgentReconnected, at(2));
    assert_eq!(s2, s);
    assert_eq!(
        actions,
        vec![Action::ResendRunStep {
            step: Step::Inventory,
            attempt: 1
        }]
    );
    let (s, actions) = next(&s, &ok(Step::Inventory, 1), at(3));
    assert_eq!(s, OperationState::Cancelled);
    assert!(actions.iter().any(|a| matches!(a, Action::SaveOutputs { .. })));
    // A waiting retry is not run.
    let waiting = OperationState::WaitingRetry {
        step: Step::UpgradeControlPlane,
        attempt: 2,
        until: at(100),
        last_error: StepFailure {
            attempt: 1,
            code: "EKS_API".into(),
            retryable: true,
            message: "throttled".into(),
        },
    };
    let (s, _) = next(&waiting, &halt, at(5));
    assert_eq!(s, OperationState::Cancelled);
    // Halting before the start ends the operation without running anything.
    let (s, actions) = next(&OperationState::Pending, &halt, at(0));
    assert_eq!(s, OperationState::Cancelled);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::SendRunStep { .. } | Action::RunCoordinatorStep { .. })));
}

#[test]
fn halt_rolls_a_migration_back_before_the_drain_and_lets_it_finish_after() {
    let halt = Event::Halt {
        delete_new_group: true,
    };
    let taint = running(Step::Taint, 1, at(0));
    let (s, actions) = next(&taint, &halt, at(1));
    assert!(
        matches!(
            s,
            OperationState::RollingBack {
                from_step: Step::Taint,
                delete_new_group: true,
                ..
            }
        ),
        "{s:?}"
    );
    assert!(
        actions.contains(&Action::CancelAgentStep {
            step: Step::Taint,
            attempt: 1
        }),
        "{actions:?}"
    );
    let restore = running(Step::RestoreScale, 1, at(0));
    let (s, actions) = next(&restore, &halt, at(1));
    assert_eq!(s, restore);
    assert!(
        matches!(&actions[..], [Action::RecordEvent { message }] if message.contains("runs to its end")),
        "{actions:?}"
    );
}
