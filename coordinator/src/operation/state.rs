//! The operation state machine: a serde enum stored verbatim, and one pure transition function
//! `next(state, event, now) -> (state, actions)` that drives either plan — a migration or a
//! one-minor upgrade. No I/O, no clock: time is passed in.
//!
//! The plan is chosen by [`Event::Start`]; from then on every state names its step, and the step
//! names its plan ([`Step::plan`]), so the stored state is all the machine needs.
//!
//! # Contract with the caller
//!
//! 1. **Persist before acting.** The caller writes the returned state to its store (sled) and
//!    only then performs the returned actions, in order. A crash between the two is healed by
//!    [`Event::Resume`], which re-issues whatever was in flight: agent steps with the *same*
//!    attempt (the agent deduplicates by operation, step and attempt), coordinator steps as a
//!    re-check ([`RunMode::Recheck`]) of the world rather than a blind re-issue.
//! 2. **Deliver every result, ack every result.** A `StepResult` is re-sent by the agent until
//!    acked; the caller persists the new state, then acks. Results whose (step, attempt) is not
//!    the one in flight — duplicates, late results of an earlier attempt — leave the state
//!    unchanged and yield no action, so acking them is always safe.
//! 3. **Tick.** The caller sends [`Event::Tick`] when [`OperationState::next_deadline`] comes due
//!    (or periodically); it starts retries whose backoff has elapsed.
//!
//! # Cancel
//!
//! - **Migration.** Cancel before the drain ends rolls back (the agent's `Rollback`, then
//!   optionally `DeleteManagedNodegroup`); cancel after the drain is refused with a recorded event
//!   and the migration continues (DESIGN.md: "abort before step 6 completes = roll back").
//! - **Upgrade.** Nothing can be rolled back (EKS cannot take a control plane back a minor), so
//!   cancel stops the operation after the step in flight: an agent step (read-only `Inventory`,
//!   `Postflight`) is cancelled on the agent and the operation is [`OperationState::Cancelled`] at
//!   once; a coordinator step (an EKS update that cannot be stopped) runs to its end in
//!   [`OperationState::Cancelling`], its result is recorded, and then the operation is
//!   `Cancelled`. A retry that was waiting is simply not run. Every cancel is recorded.
//!
//! # Halt
//!
//! [`Event::Halt`] is what a rollout sends when it stops at its failure budget: "finish the step
//! in flight safely, then stop".
//!
//! - **Upgrade.** The step in flight — agent or coordinator — runs to its end in
//!   [`OperationState::Cancelling`] (its result recorded), then the operation is `Cancelled`; a
//!   waiting retry is not run.
//! - **Migration, before the drain ended.** Stopping between two steps would leave old nodes
//!   tainted and Deployments surged, so a halt is a cancel: the agent step in flight stops at its
//!   next safe point and the migration rolls back (untaint, uncordon, restore scale; the new
//!   group is deleted when the migration asked for that on rollback).
//! - **Migration, after the drain.** Past the point of no return the safe end is the end: the
//!   halt is recorded and the migration runs to completion (old group removed, scale restored).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::plan::{Plan, Runner, Step};

/// Error code used when the drain reports success but the old group still has evictable pods.
pub const OLD_GROUP_NOT_EMPTY: &str = "OLD_GROUP_NOT_EMPTY";

/// Why a step attempt failed, as reported (agent codes are `StepError::code()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// Stable error code, e.g. `DRAIN_BLOCKED`.
    pub code: String,
    /// Whether running the step again, unchanged, may succeed.
    pub retryable: bool,
    /// Human-readable detail.
    pub message: String,
}

/// What a successful step reported that the coordinator needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutputs {
    /// Short human-readable summary.
    pub summary: String,
    /// For `Drain`: evictable pods still on the old group. `RemoveSelfManagedNodegroup` runs
    /// only when this is `Some(0)`.
    pub evictable_pods_left: Option<u64>,
    /// Step-specific data the caller stores as is (JSON), e.g. the replica counts recorded by
    /// `SurgeScale` for `RestoreScale`.
    pub detail: Option<String>,
}

/// Where an operation is. Stored verbatim; every variant is a resumable point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum OperationState {
    /// Created, not started.
    Pending,
    /// A forward step's attempt is in flight.
    Running {
        /// The step.
        step: Step,
        /// The attempt in flight (1-based).
        attempt: u32,
        /// When this attempt was issued.
        started_at: Timestamp,
    },
    /// A forward step failed retryably; attempt `attempt` runs at `until`.
    WaitingRetry {
        /// The step.
        step: Step,
        /// The attempt to run next.
        attempt: u32,
        /// When to run it.
        until: Timestamp,
        /// Why the previous attempt failed.
        last_error: StepFailure,
    },
    /// Cancelled before the drain ended: running the rollback steps.
    RollingBack {
        /// The forward step that was current when the migration was cancelled.
        from_step: Step,
        /// Whether the rollback also deletes the new managed group.
        delete_new_group: bool,
        /// The rollback step.
        step: Step,
        /// Its attempt: in flight, or (with `retry_at`) the next one.
        attempt: u32,
        /// When the attempt in flight was issued.
        started_at: Timestamp,
        /// Set while waiting to retry: the attempt runs at this time.
        retry_at: Option<Timestamp>,
    },
    /// An upgrade was cancelled while a coordinator step was in flight: that step runs to its end
    /// (its result is accepted and recorded), then the operation is `Cancelled`.
    Cancelling {
        /// The step in flight.
        step: Step,
        /// Its attempt.
        attempt: u32,
        /// When the attempt was issued.
        started_at: Timestamp,
    },
    /// Every step of the plan done.
    Succeeded,
    /// A step failed for good. A failure before the drain ended can still be cancelled, which
    /// rolls back.
    Failed {
        /// The step that failed.
        step: Step,
        /// Its last failure.
        error: StepFailure,
    },
    /// Cancelled: before it started (nothing was done), or an upgrade stopped after the step that
    /// was in flight (the event log says which steps ran).
    Cancelled,
    /// Cancelled and rolled back.
    RolledBack {
        /// The forward step that was current when the migration was cancelled.
        from_step: Step,
    },
}

/// Something that happened to an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Start the operation with the first step of `plan`.
    Start {
        /// Migration or upgrade.
        plan: Plan,
    },
    /// The runner acknowledged it started (step, attempt).
    StepStarted {
        /// The step.
        step: Step,
        /// The attempt.
        attempt: u32,
    },
    /// (step, attempt) succeeded.
    StepSucceeded {
        /// The step.
        step: Step,
        /// The attempt.
        attempt: u32,
        /// What it reported.
        outputs: StepOutputs,
    },
    /// (step, attempt) failed.
    StepFailed {
        /// The step.
        step: Step,
        /// The attempt.
        attempt: u32,
        /// Stable error code (`StepError::code()` for agent steps).
        code: String,
        /// `StepError::retryable()` for agent steps.
        retryable: bool,
        /// Human-readable detail.
        message: String,
    },
    /// Time passed; start retries that are due.
    Tick,
    /// The operator cancels.
    Cancel {
        /// Migration: whether the rollback also deletes the new managed group (ignored by an
        /// upgrade).
        delete_new_group: bool,
    },
    /// A rollout halts: finish the step in flight safely, then stop (see the module docs).
    Halt {
        /// Migration: whether the rollback also deletes the new managed group.
        delete_new_group: bool,
    },
    /// The cluster's agent stream closed.
    AgentDisconnected,
    /// The cluster's agent stream is back.
    AgentReconnected,
    /// The coordinator restarted with this state on disk.
    Resume,
}

/// How a coordinator step is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunMode {
    /// A new attempt: issue it.
    Fresh,
    /// The attempt may already have been issued (restart): look first, issue only what is
    /// missing (e.g. create the node group only if it does not exist).
    Recheck,
}

/// What the caller must do after persisting the new state, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Run a coordinator step (EKS / Auto Scaling) and report its result as an event.
    RunCoordinatorStep {
        /// The step.
        step: Step,
        /// The attempt.
        attempt: u32,
        /// Issue, or re-check first.
        mode: RunMode,
    },
    /// Send the agent a `RunStep` for a new attempt.
    SendRunStep {
        /// The step.
        step: Step,
        /// The attempt.
        attempt: u32,
    },
    /// Send the agent the `RunStep` of an attempt it may already have (after a restart or a
    /// reconnect); it deduplicates by attempt and re-sends the result if it has one.
    ResendRunStep {
        /// The step.
        step: Step,
        /// The attempt.
        attempt: u32,
    },
    /// Ask the agent to stop (step, attempt): sent before a migration's rollback step, or when an
    /// upgrade is cancelled during an agent step.
    CancelAgentStep {
        /// The step.
        step: Step,
        /// The attempt.
        attempt: u32,
    },
    /// Store what (step, attempt) reported.
    SaveOutputs {
        /// The step.
        step: Step,
        /// The attempt.
        attempt: u32,
        /// What it reported.
        outputs: StepOutputs,
    },
    /// Append a line to the operation's event log.
    RecordEvent {
        /// The line.
        message: String,
    },
}

// === impl OperationState ===

impl OperationState {
    /// Whether the operation is over (no further step will run).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            OperationState::Succeeded
                | OperationState::Failed { .. }
                | OperationState::Cancelled
                | OperationState::RolledBack { .. }
        )
    }

    /// When this state next needs [`Event::Tick`]: the time its retry waits for. `None` when
    /// only other events move it.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        match self {
            OperationState::WaitingRetry { until, .. } => Some(*until),
            OperationState::RollingBack { retry_at, .. } => *retry_at,
            _ => None,
        }
    }

    /// The (step, attempt) in flight, if any: the only pair whose results are accepted.
    pub fn in_flight(&self) -> Option<(Step, u32)> {
        match self {
            OperationState::Running { step, attempt, .. } => Some((*step, *attempt)),
            OperationState::RollingBack {
                step,
                attempt,
                retry_at: None,
                ..
            } => Some((*step, *attempt)),
            OperationState::Cancelling { step, attempt, .. } => Some((*step, *attempt)),
            _ => None,
        }
    }

    /// Short name, for event messages.
    fn name(&self) -> &'static str {
        match self {
            OperationState::Pending => "pending",
            OperationState::Running { .. } => "running",
            OperationState::WaitingRetry { .. } => "waiting to retry",
            OperationState::RollingBack { .. } => "rolling back",
            OperationState::Cancelling { .. } => "cancelling",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed { .. } => "failed",
            OperationState::Cancelled => "cancelled",
            OperationState::RolledBack { .. } => "rolled back",
        }
    }
}

// === transition ===

/// The one transition function. The caller persists the returned state, then performs the
/// returned actions in order (see the module docs).
pub fn next(state: &OperationState, event: &Event, now: Timestamp) -> (OperationState, Vec<Action>) {
    use OperationState as S;
    match state {
        S::Pending => match event {
            Event::Start { plan } => {
                let step = plan.first();
                let actions = vec![
                    record(format!("{plan} started: {step} (attempt 1)")),
                    issue(step, 1, Issue::Fresh),
                ];
                (running(step, 1, now), actions)
            }
            Event::Cancel { .. } => (S::Cancelled, vec![record("cancelled before start")]),
            Event::Halt { .. } => (S::Cancelled, vec![record("halted before start")]),
            _ => unchanged(state),
        },
        S::Running { step, attempt, .. } => on_running(state, *step, *attempt, event, now),
        S::WaitingRetry {
            step, attempt, until, ..
        } => on_waiting(state, *step, *attempt, *until, event, now),
        S::RollingBack {
            from_step,
            delete_new_group,
            step,
            attempt,
            started_at,
            retry_at,
        } => {
            let rb = Rollback {
                from_step: *from_step,
                delete_new_group: *delete_new_group,
                step: *step,
                attempt: *attempt,
                started_at: *started_at,
                retry_at: *retry_at,
            };
            on_rolling_back(state, rb, event, now)
        }
        S::Cancelling { step, attempt, .. } => on_cancelling(state, *step, *attempt, event),
        S::Failed { step, .. } => match event {
            Event::Cancel { delete_new_group } if step.can_roll_back_from() => {
                begin_rollback(*step, *delete_new_group, now, Vec::new())
            }
            Event::Cancel { .. } => refuse_cancel(state, "the operation already failed"),
            _ => unchanged(state),
        },
        S::Succeeded | S::Cancelled | S::RolledBack { .. } => match event {
            Event::Cancel { .. } => refuse_cancel(state, "the operation is over"),
            _ => unchanged(state),
        },
    }
}

/// A forward step's attempt is in flight.
fn on_running(
    state: &OperationState,
    step: Step,
    attempt: u32,
    event: &Event,
    now: Timestamp,
) -> (OperationState, Vec<Action>) {
    let current = |s: &Step, a: &u32| *s == step && *a == attempt;
    match event {
        Event::StepStarted { step: s, attempt: a } if current(s, a) => (
            state.clone(),
            vec![record(format!("{step} started (attempt {attempt})"))],
        ),
        Event::StepSucceeded {
            step: s,
            attempt: a,
            outputs,
        } if current(s, a) => {
            if step == Step::Drain && outputs.evictable_pods_left != Some(0) {
                let left = outputs
                    .evictable_pods_left
                    .map_or_else(|| "an unknown number of".to_string(), |n| n.to_string());
                let failure = StepFailure {
                    attempt,
                    code: OLD_GROUP_NOT_EMPTY.to_string(),
                    retryable: true,
                    message: format!("drain ended with {left} evictable pods on the old group"),
                };
                return forward_failure(step, failure, now);
            }
            let mut actions = vec![Action::SaveOutputs {
                step,
                attempt,
                outputs: outputs.clone(),
            }];
            match step.next() {
                Some(next_step) => {
                    actions.push(record(format!(
                        "{step} succeeded (attempt {attempt}); starting {next_step}"
                    )));
                    actions.push(issue(next_step, 1, Issue::Fresh));
                    (running(next_step, 1, now), actions)
                }
                None => {
                    actions.push(record(format!(
                        "{step} succeeded (attempt {attempt}); {} succeeded",
                        step.plan()
                    )));
                    (OperationState::Succeeded, actions)
                }
            }
        }
        Event::StepFailed {
            step: s,
            attempt: a,
            code,
            retryable,
            message,
        } if current(s, a) => forward_failure(
            step,
            StepFailure {
                attempt,
                code: code.clone(),
                retryable: *retryable,
                message: message.clone(),
            },
            now,
        ),
        Event::Halt { .. } if step.plan() == Plan::Upgrade => (
            OperationState::Cancelling {
                step,
                attempt,
                started_at: match state {
                    OperationState::Running { started_at, .. } => *started_at,
                    _ => now,
                },
            },
            vec![record(format!(
                "halt requested during {step} (attempt {attempt}); {step} runs to its end, then the upgrade stops"
            ))],
        ),
        Event::Halt { delete_new_group } => {
            if step.can_roll_back_from() {
                let mut actions = vec![record(format!(
                    "halt requested during {step}; a migration cannot stop half-way, so it rolls back"
                ))];
                if step.runner() == Runner::Agent {
                    actions.push(Action::CancelAgentStep { step, attempt });
                }
                begin_rollback(step, *delete_new_group, now, actions)
            } else {
                (
                    state.clone(),
                    vec![record(format!(
                        "halt requested during {step}: the drain has ended, so the migration runs to its end (old group removed, scale restored)"
                    ))],
                )
            }
        }
        Event::Cancel { .. } if step.plan() == Plan::Upgrade => {
            if step.runner() == Runner::Agent {
                (
                    OperationState::Cancelled,
                    vec![
                        Action::CancelAgentStep { step, attempt },
                        record(format!(
                            "cancelled during {step} (attempt {attempt}); the agent step is cancelled, no later step runs"
                        )),
                    ],
                )
            } else {
                (
                    OperationState::Cancelling {
                        step,
                        attempt,
                        started_at: match state {
                            OperationState::Running { started_at, .. } => *started_at,
                            _ => now,
                        },
                    },
                    vec![record(format!(
                        "cancel requested during {step} (attempt {attempt}); an EKS update cannot be stopped or rolled back, so the upgrade stops when {step} ends"
                    ))],
                )
            }
        }
        Event::Cancel { delete_new_group } => {
            if step.can_roll_back_from() {
                let mut actions = Vec::new();
                if step.runner() == Runner::Agent {
                    actions.push(Action::CancelAgentStep { step, attempt });
                }
                begin_rollback(step, *delete_new_group, now, actions)
            } else {
                refuse_cancel(state, "the drain has ended; the migration cannot be rolled back")
            }
        }
        Event::Resume => (state.clone(), vec![issue(step, attempt, Issue::Again)]),
        Event::AgentReconnected if step.runner() == Runner::Agent => {
            (state.clone(), vec![Action::ResendRunStep { step, attempt }])
        }
        Event::AgentDisconnected if step.runner() == Runner::Agent => (
            state.clone(),
            vec![record(format!(
                "agent disconnected during {step} (attempt {attempt}); waiting for it"
            ))],
        ),
        _ => unchanged(state),
    }
}

/// A forward step waits for its next attempt.
fn on_waiting(
    state: &OperationState,
    step: Step,
    attempt: u32,
    until: Timestamp,
    event: &Event,
    now: Timestamp,
) -> (OperationState, Vec<Action>) {
    match event {
        // The attempt was never issued (it is issued together with the move to Running), so
        // even after a restart it is a fresh one.
        Event::Tick | Event::Resume if now >= until => (
            running(step, attempt, now),
            vec![
                record(format!("retrying {step} (attempt {attempt})")),
                issue(step, attempt, Issue::Fresh),
            ],
        ),
        Event::Cancel { .. } | Event::Halt { .. } if step.plan() == Plan::Upgrade => (
            OperationState::Cancelled,
            vec![record(format!(
                "{} while waiting to retry {step} (attempt {attempt} not run); no later step runs",
                if matches!(event, Event::Halt { .. }) { "halted" } else { "cancelled" }
            ))],
        ),
        Event::Halt { delete_new_group } if step.can_roll_back_from() => begin_rollback(
            step,
            *delete_new_group,
            now,
            vec![record(format!(
                "halted while waiting to retry {step}; a migration cannot stop half-way, so it rolls back"
            ))],
        ),
        Event::Halt { .. } => (
            state.clone(),
            vec![record(format!(
                "halt requested while waiting to retry {step}: the drain has ended, so the migration runs to its end"
            ))],
        ),
        Event::Cancel { delete_new_group } if step.can_roll_back_from() => {
            begin_rollback(step, *delete_new_group, now, Vec::new())
        }
        Event::Cancel { .. } => {
            refuse_cancel(state, "the drain has ended; the migration cannot be rolled back")
        }
        _ => unchanged(state),
    }
}

/// An upgrade was cancelled during a coordinator step: wait for that step's result, record it,
/// and stop.
fn on_cancelling(
    state: &OperationState,
    step: Step,
    attempt: u32,
    event: &Event,
) -> (OperationState, Vec<Action>) {
    let current = |s: &Step, a: &u32| *s == step && *a == attempt;
    match event {
        Event::StepSucceeded {
            step: s,
            attempt: a,
            outputs,
        } if current(s, a) => (
            OperationState::Cancelled,
            vec![
                Action::SaveOutputs {
                    step,
                    attempt,
                    outputs: outputs.clone(),
                },
                record(format!(
                    "{step} succeeded (attempt {attempt}); {} cancelled before {}",
                    step.plan(),
                    step.next()
                        .map_or_else(|| "its end".to_string(), |n| n.to_string())
                )),
            ],
        ),
        Event::StepFailed {
            step: s,
            attempt: a,
            code,
            message,
            ..
        } if current(s, a) => (
            OperationState::Cancelled,
            vec![record(format!(
                "{step} failed (attempt {attempt}): {code}: {message}; not retried, {} cancelled",
                step.plan()
            ))],
        ),
        Event::StepStarted { step: s, attempt: a } if current(s, a) => (
            state.clone(),
            vec![record(format!("{step} started (attempt {attempt})"))],
        ),
        Event::Cancel { .. } => refuse_cancel(state, "it is already stopping after the step in flight"),
        Event::Resume => (state.clone(), vec![issue(step, attempt, Issue::Again)]),
        // A halted agent step runs on: send it again to a reconnected agent.
        Event::AgentReconnected if step.runner() == Runner::Agent => {
            (state.clone(), vec![Action::ResendRunStep { step, attempt }])
        }
        _ => unchanged(state),
    }
}

/// The fields of [`OperationState::RollingBack`].
#[derive(Clone, Copy)]
struct Rollback {
    from_step: Step,
    delete_new_group: bool,
    step: Step,
    attempt: u32,
    started_at: Timestamp,
    retry_at: Option<Timestamp>,
}

impl Rollback {
    fn state(self) -> OperationState {
        OperationState::RollingBack {
            from_step: self.from_step,
            delete_new_group: self.delete_new_group,
            step: self.step,
            attempt: self.attempt,
            started_at: self.started_at,
            retry_at: self.retry_at,
        }
    }
}

/// Rolling back.
fn on_rolling_back(
    state: &OperationState,
    rb: Rollback,
    event: &Event,
    now: Timestamp,
) -> (OperationState, Vec<Action>) {
    let (step, attempt) = (rb.step, rb.attempt);
    if let Event::Cancel { .. } = event {
        return refuse_cancel(state, "it is already rolling back");
    }
    if let Some(until) = rb.retry_at {
        return match event {
            Event::Tick | Event::Resume if now >= until => {
                let rb = Rollback {
                    started_at: now,
                    retry_at: None,
                    ..rb
                };
                (
                    rb.state(),
                    vec![
                        record(format!("retrying {step} (attempt {attempt})")),
                        issue(step, attempt, Issue::Fresh),
                    ],
                )
            }
            _ => unchanged(state),
        };
    }
    let current = |s: &Step, a: &u32| *s == step && *a == attempt;
    match event {
        Event::StepStarted { step: s, attempt: a } if current(s, a) => (
            state.clone(),
            vec![record(format!("{step} started (attempt {attempt})"))],
        ),
        Event::StepSucceeded {
            step: s,
            attempt: a,
            outputs,
        } if current(s, a) => {
            let mut actions = vec![Action::SaveOutputs {
                step,
                attempt,
                outputs: outputs.clone(),
            }];
            let plan = Step::rollback_plan(rb.from_step, rb.delete_new_group);
            let following = plan
                .iter()
                .position(|p| *p == step)
                .and_then(|i| plan.get(i + 1).copied());
            match following {
                Some(next_step) => {
                    actions.push(record(format!(
                        "{step} succeeded (attempt {attempt}); starting {next_step}"
                    )));
                    actions.push(issue(next_step, 1, Issue::Fresh));
                    let rb = Rollback {
                        step: next_step,
                        attempt: 1,
                        started_at: now,
                        retry_at: None,
                        ..rb
                    };
                    (rb.state(), actions)
                }
                None => {
                    actions.push(record(format!(
                        "{step} succeeded (attempt {attempt}); migration rolled back"
                    )));
                    (
                        OperationState::RolledBack {
                            from_step: rb.from_step,
                        },
                        actions,
                    )
                }
            }
        }
        Event::StepFailed {
            step: s,
            attempt: a,
            code,
            retryable,
            message,
        } if current(s, a) => {
            let failure = StepFailure {
                attempt,
                code: code.clone(),
                retryable: *retryable,
                message: message.clone(),
            };
            let policy = step.retry_policy();
            if failure.retryable && policy.allows_after(attempt) {
                let until = add(now, policy.backoff(attempt));
                let msg = failed_message(step, &failure, Some(until));
                let rb = Rollback {
                    attempt: attempt + 1,
                    retry_at: Some(until),
                    ..rb
                };
                (rb.state(), vec![record(msg)])
            } else {
                let msg = failed_message(step, &failure, None);
                (OperationState::Failed { step, error: failure }, vec![record(msg)])
            }
        }
        Event::Resume => (state.clone(), vec![issue(step, attempt, Issue::Again)]),
        Event::AgentReconnected if step.runner() == Runner::Agent => {
            (state.clone(), vec![Action::ResendRunStep { step, attempt }])
        }
        _ => unchanged(state),
    }
}

// === helpers ===

/// A forward step's attempt failed: retry after the policy's backoff, or fail for good.
fn forward_failure(step: Step, failure: StepFailure, now: Timestamp) -> (OperationState, Vec<Action>) {
    let policy = step.retry_policy();
    if failure.retryable && policy.allows_after(failure.attempt) {
        let until = add(now, policy.backoff(failure.attempt));
        let msg = failed_message(step, &failure, Some(until));
        (
            OperationState::WaitingRetry {
                step,
                attempt: failure.attempt + 1,
                until,
                last_error: failure,
            },
            vec![record(msg)],
        )
    } else {
        let msg = failed_message(step, &failure, None);
        (OperationState::Failed { step, error: failure }, vec![record(msg)])
    }
}

/// Starts the rollback of a migration abandoned at `from` (after `actions`, e.g. a cancel of
/// the agent step in flight).
fn begin_rollback(
    from: Step,
    delete_new_group: bool,
    now: Timestamp,
    mut actions: Vec<Action>,
) -> (OperationState, Vec<Action>) {
    let plan = Step::rollback_plan(from, delete_new_group);
    match plan.first() {
        Some(&first) => {
            actions.push(record(format!(
                "cancelled during {from}; rolling back: {}",
                plan.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            )));
            actions.push(issue(first, 1, Issue::Fresh));
            let rb = Rollback {
                from_step: from,
                delete_new_group,
                step: first,
                attempt: 1,
                started_at: now,
                retry_at: None,
            };
            (rb.state(), actions)
        }
        None => {
            actions.push(record(format!(
                "cancelled during {from}; nothing on the cluster to roll back"
            )));
            (OperationState::RolledBack { from_step: from }, actions)
        }
    }
}

fn refuse_cancel(state: &OperationState, why: &str) -> (OperationState, Vec<Action>) {
    (
        state.clone(),
        vec![record(format!("cancel refused ({}): {why}", state.name()))],
    )
}

fn failed_message(step: Step, f: &StepFailure, retry_at: Option<Timestamp>) -> String {
    let max = step.retry_policy().max_attempts;
    let head = format!(
        "{step} failed (attempt {}/{max}): {}: {}",
        f.attempt, f.code, f.message
    );
    match retry_at {
        Some(t) => format!("{head}; retrying at {t}"),
        None if f.retryable => format!("{head}; out of attempts"),
        None => format!("{head}; not retryable"),
    }
}

fn running(step: Step, attempt: u32, now: Timestamp) -> OperationState {
    OperationState::Running {
        step,
        attempt,
        started_at: now,
    }
}

fn unchanged(state: &OperationState) -> (OperationState, Vec<Action>) {
    (state.clone(), Vec::new())
}

fn record(message: impl Into<String>) -> Action {
    Action::RecordEvent {
        message: message.into(),
    }
}

/// Whether an attempt is new or may have been issued before a restart.
#[derive(Clone, Copy)]
enum Issue {
    Fresh,
    Again,
}

/// The action that runs (step, attempt) on its runner.
fn issue(step: Step, attempt: u32, how: Issue) -> Action {
    match (step.runner(), how) {
        (Runner::Agent, Issue::Fresh) => Action::SendRunStep { step, attempt },
        (Runner::Agent, Issue::Again) => Action::ResendRunStep { step, attempt },
        (Runner::Coordinator, Issue::Fresh) => Action::RunCoordinatorStep {
            step,
            attempt,
            mode: RunMode::Fresh,
        },
        (Runner::Coordinator, Issue::Again) => Action::RunCoordinatorStep {
            step,
            attempt,
            mode: RunMode::Recheck,
        },
    }
}

/// `now + d`, saturating at the largest timestamp.
fn add(now: Timestamp, d: std::time::Duration) -> Timestamp {
    now.checked_add(d).unwrap_or(Timestamp::MAX)
}
