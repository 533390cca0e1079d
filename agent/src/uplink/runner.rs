//! The steps the coordinator asked for: `RunStep`s deduplicated by (operation, step, attempt),
//! each run as a task with its own cancellation token, its progress throttled (at most one
//! report per interval, the last one always sent), and its result kept in the [`Outbox`] until
//! acked. Plain state plus tasks: the session feeds it coordinator messages and task events and
//! sends what it returns; nothing here touches the network.
//!
//! Each attempt runs in a `run_step` span (cluster, operation, step, attempt, kind) whose
//! OpenTelemetry parent is the coordinator's span named by the `RunStep`'s `trace_context`; the
//! attempt's progress and result carry the step span's own context back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::telemetry::{self, TraceContext};
use pb::agent_message::Message as Up;
use pb::coordinator_message::Message as Down;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::convert;
use super::outbox::{Outbox, StepKey};
use crate::cluster::Cluster;
use crate::metrics::AgentMetrics;
use crate::steps::{Observation, Progress, ProgressSink, Step, StepError, StepKind, StepOutput};

/// What a step task tells the runner.
#[derive(Debug)]
pub enum Event {
    /// The step reported progress (already throttled).
    Progress {
        /// The attempt.
        key: StepKey,
        /// The report.
        progress: Progress,
        /// When the step made it.
        at: SystemTime,
    },
    /// The step ended: its outcome, or `None` if its token was cancelled first.
    Finished {
        /// The attempt.
        key: StepKey,
        /// The step's outcome; `None` when it was stopped.
        outcome: Option<Result<StepOutput, StepError>>,
        /// When it ended.
        at: SystemTime,
    },
}

/// One step attempt in flight.
#[derive(Debug)]
struct Running {
    kind: StepKind,
    cancel: CancellationToken,
    /// Set when the coordinator (or a newer attempt) stopped it: the result says cancelled.
    /// A step stopped by the agent's own shutdown has none and sends no result; the
    /// coordinator runs the attempt again once the agent is back (steps are idempotent).
    cancel_reason: Option<String>,
    /// The last progress sent, re-sent after a reconnect.
    last_progress: Option<pb::StepProgress>,
    /// When the attempt started.
    started: Instant,
    /// What its progress and result carry: the step span's trace context, or (when this agent
    /// does not trace) the `RunStep`'s, passed through.
    trace_context: TraceContext,
}

/// The agent's steps: running ones, finished results, and the tasks running them.
pub struct Runner<C> {
    cluster: Arc<C>,
    cluster_name: Arc<str>,
    progress_every: Duration,
    /// Parent of every step's token: cancelled when the agent shuts down.
    shutdown: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
    running: BTreeMap<StepKey, Running>,
    outbox: Outbox,
    tasks: TaskTracker,
    metrics: AgentMetrics,
}

impl<C> std::fmt::Debug for Runner<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("cluster", &self.cluster_name)
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .field("unacked", &self.outbox.unacked_len())
            .finish_non_exhaustive()
    }
}

fn up(message: Up) -> pb::AgentMessage {
    pb::AgentMessage {
        message: Some(message),
    }
}

impl<C: Cluster + 'static> Runner<C> {
    /// A runner for `cluster` (named `cluster_name` in spans); step tasks report on `events`;
    /// steps and what they observe are counted in `metrics`.
    pub fn new(
        cluster: Arc<C>,
        cluster_name: &str,
        progress_every: Duration,
        shutdown: CancellationToken,
        events: mpsc::UnboundedSender<Event>,
        metrics: AgentMetrics,
    ) -> Runner<C> {
        Runner {
            cluster,
            cluster_name: Arc::from(cluster_name),
            progress_every,
            shutdown,
            events,
            running: BTreeMap::new(),
            outbox: Outbox::new(),
            tasks: TaskTracker::new(),
            metrics,
        }
    }

    /// Handles one coordinator message; returns what to send back.
    pub fn on_message(&mut self, message: pb::CoordinatorMessage, now: Instant) -> Vec<pb::AgentMessage> {
        match message.message {
            Some(Down::RunStep(m)) => self.on_run_step(m, now),
            Some(Down::CancelStep(m)) => self.on_cancel(m, now),
            Some(Down::Ack(m)) => {
                let key = StepKey::of_ack(&m);
                if self.outbox.ack(&key) {
                    tracing::debug!(step = %key, "result acked");
                }
                Vec::new()
            }
            None => {
                tracing::warn!("coordinator message without content ignored");
                Vec::new()
            }
        }
    }

    /// `RunStep`: start the attempt unless it is running (nothing to do) or finished (its result
    /// again). A newer attempt of the same step stops older ones; an older one than what ran is
    /// answered as cancelled without running.
    fn on_run_step(&mut self, m: pb::RunStep, now: Instant) -> Vec<pb::AgentMessage> {
        let key = StepKey::of_run(&m);
        if self.running.contains_key(&key) {
            tracing::debug!(step = %key, "already running; not started again");
            return Vec::new();
        }
        if let Some(result) = self.outbox.get(&key).cloned() {
            tracing::debug!(step = %key, "already finished; result sent again");
            self.outbox.mark_sent(&key, now);
            return vec![up(Up::Result(result))];
        }
        if let Some(newer) = self.newer_attempt(&key) {
            let reason = format!("attempt {newer} of this step has run since");
            return self.finish_now(&key, Err(StepError::Cancelled { reason }), m.trace_context, now);
        }
        for (old, r) in self.running.iter_mut() {
            if old.same_step(&key) && old.attempt < key.attempt {
                tracing::info!(step = %old, newer = key.attempt, "older attempt stopped");
                r.cancel_reason = Some(format!("superseded by attempt {}", key.attempt));
                r.cancel.cancel();
            }
        }
        match convert::step_from_proto(m.step) {
            Ok(step) => {
                self.spawn(key, step, m.trace_context, now);
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(step = %key, error = %e, "RunStep refused");
                self.finish_now(&key, Err(e), m.trace_context, now)
            }
        }
    }

    /// The highest attempt of the same step above `key`'s that is running or has a result.
    fn newer_attempt(&self, key: &StepKey) -> Option<u32> {
        let running = self
            .running
            .keys()
            .filter(|k| k.same_step(key) && k.attempt > key.attempt)
            .map(|k| k.attempt)
            .max();
        running.max(self.outbox.newest_attempt_after(key))
    }

    /// `CancelStep`: stop the attempt if it runs (its result follows as usual); a finished
    /// attempt's result is sent again; an attempt this agent never ran is answered cancelled,
    /// so the coordinator is not left waiting for it.
    fn on_cancel(&mut self, m: pb::CancelStep, now: Instant) -> Vec<pb::AgentMessage> {
        let key = StepKey::of_cancel(&m);
        let reason = if m.reason.is_empty() {
            "cancelled by the coordinator".to_string()
        } else {
            m.reason
        };
        if let Some(r) = self.running.get_mut(&key) {
            tracing::info!(step = %key, %reason, "cancelling");
            r.cancel_reason.get_or_insert(reason);
            r.cancel.cancel();
            return Vec::new();
        }
        if let Some(result) = self.outbox.get(&key).cloned() {
            self.outbox.mark_sent(&key, now);
            return vec![up(Up::Result(result))];
        }
        tracing::info!(step = %key, "cancel for an attempt not running here; answered cancelled");
        let reason = format!("{reason} (the attempt was not running on this agent)");
        self.finish_now(
            &key,
            Err(StepError::Cancelled { reason }),
            TraceContext::new(),
            now,
        )
    }

    /// Records an attempt's outcome without running it; returns the result to send (carrying
    /// the `RunStep`'s trace context, when it came with one).
    fn finish_now(
        &mut self,
        key: &StepKey,
        outcome: Result<StepOutput, StepError>,
        trace_context: TraceContext,
        now: Instant,
    ) -> Vec<pb::AgentMessage> {
        let mut result = convert::result_to_proto(
            &key.operation_id,
            &key.step_id,
            key.attempt,
            &outcome,
            SystemTime::now(),
        );
        result.trace_context = trace_context;
        self.outbox.insert(result.clone());
        self.outbox.mark_sent(key, now);
        vec![up(Up::Result(result))]
    }

    fn spawn(&mut self, key: StepKey, step: Step, remote: TraceContext, now: Instant) {
        let kind = step.kind();
        let cancel = self.shutdown.child_token();
        // A root in `tracing` (steps outlive sessions); in OpenTelemetry a child of the
        // coordinator's span that sent it, when the RunStep names one, else a trace of its own.
        let span = tracing::info_span!(
            parent: None,
            "run_step",
            cluster = %self.cluster_name,
            operation = %key.operation_id,
            step = %key.step_id,
            attempt = key.attempt,
            kind = %kind,
        );
        telemetry::set_parent(&span, telemetry::extract(&remote));
        let own = telemetry::inject(&span);
        let trace_context = if own.is_empty() { remote } else { own };
        span.in_scope(|| tracing::info!("step started"));
        self.metrics.step_started();
        let task = StepTask {
            cluster: self.cluster.clone(),
            cluster_name: self.cluster_name.clone(),
            key: key.clone(),
            step,
            cancel: cancel.clone(),
            events: self.events.clone(),
            every: self.progress_every,
            metrics: self.metrics.clone(),
        };
        self.tasks.spawn(task.run().instrument(span));
        self.running.insert(
            key,
            Running {
                kind,
                cancel,
                cancel_reason: None,
                last_progress: None,
                started: now,
                trace_context,
            },
        );
    }

    /// Handles a step task's event; returns what to send.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Vec<pb::AgentMessage> {
        match event {
            Event::Progress { key, progress, at } => {
                let Some(r) = self.running.get_mut(&key) else {
                    return Vec::new();
                };
                let mut p =
                    convert::progress_to_proto(&key.operation_id, &key.step_id, key.attempt, &progress, at);
                p.trace_context = r.trace_context.clone();
                r.last_progress = Some(p.clone());
                vec![up(Up::Progress(p))]
            }
            Event::Finished { key, outcome, at } => {
                let Some(r) = self.running.remove(&key) else {
                    return Vec::new();
                };
                let took = now.saturating_duration_since(r.started);
                let outcome = match (outcome, r.cancel_reason) {
                    (Some(outcome), _) => outcome,
                    (None, Some(reason)) => Err(StepError::Cancelled { reason }),
                    (None, None) => {
                        self.metrics.step_ended(r.kind, took, None);
                        tracing::info!(step = %key, kind = %r.kind, "stopped for shutdown; no result sent");
                        return Vec::new();
                    }
                };
                self.metrics
                    .step_ended(r.kind, took, Some(outcome.as_ref().map(|_| ())));
                match &outcome {
                    Ok(_) => tracing::info!(step = %key, kind = %r.kind, "step succeeded"),
                    Err(e) => {
                        tracing::warn!(step = %key, kind = %r.kind, code = e.code(), error = %e, "step failed")
                    }
                }
                let mut result =
                    convert::result_to_proto(&key.operation_id, &key.step_id, key.attempt, &outcome, at);
                result.trace_context = r.trace_context;
                self.outbox.insert(result.clone());
                self.outbox.mark_sent(&key, now);
                vec![up(Up::Result(result))]
            }
        }
    }

    /// The attempts running now, for `Hello`.
    pub fn running(&self) -> Vec<pb::RunningStep> {
        self.running
            .keys()
            .map(|k| pb::RunningStep {
                operation_id: k.operation_id.clone(),
                step_id: k.step_id.clone(),
                attempt: k.attempt,
            })
            .collect()
    }

    /// What a new session sends after `Hello`: the last progress of each running step and every
    /// unacked result.
    pub fn on_connect(&mut self, now: Instant) -> Vec<pb::AgentMessage> {
        let progress = self
            .running
            .values()
            .filter_map(|r| r.last_progress.clone())
            .map(|p| up(Up::Progress(p)));
        let mut out: Vec<pb::AgentMessage> = progress.collect();
        out.extend(
            self.outbox
                .all_unacked(now)
                .into_iter()
                .map(|r| up(Up::Result(r))),
        );
        out
    }

    /// Unacked results not sent within `every`.
    pub fn due(&mut self, now: Instant, every: Duration) -> Vec<pb::AgentMessage> {
        self.outbox
            .due(now, every)
            .into_iter()
            .map(|r| up(Up::Result(r)))
            .collect()
    }

    /// A heartbeat.
    pub fn heartbeat(&self) -> pb::AgentMessage {
        up(Up::Heartbeat(pb::Heartbeat {
            sent_at: Some(convert::timestamp(SystemTime::now())),
            running_steps: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
        }))
    }

    /// Steps running now.
    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// Results waiting for an ack.
    pub fn unacked_len(&self) -> usize {
        self.outbox.unacked_len()
    }

    /// Stops every step (each at its next await point) and waits up to `grace` for their tasks.
    /// Returns whether all ended in time.
    pub async fn shutdown(&mut self, grace: Duration) -> bool {
        for r in self.running.values() {
            r.cancel.cancel();
        }
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// Where a step task's progress goes: the newest report, picked up by the forwarder; what the
/// step observes goes straight to the metrics.
struct LatestProgress {
    latest: watch::Sender<Option<(Progress, SystemTime)>>,
    metrics: AgentMetrics,
}

impl ProgressSink for LatestProgress {
    fn report(&self, progress: Progress) {
        self.latest.send_replace(Some((progress, SystemTime::now())));
    }

    fn observe(&self, observation: Observation) {
        self.metrics.observe(&observation);
    }
}

/// One step attempt, run as its own task.
struct StepTask<C> {
    cluster: Arc<C>,
    cluster_name: Arc<str>,
    key: StepKey,
    step: Step,
    cancel: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
    every: Duration,
    metrics: AgentMetrics,
}

impl<C: Cluster + 'static> StepTask<C> {
    async fn run(self) {
        let (tx, mut rx) = watch::channel(None);
        let sink = LatestProgress {
            latest: tx,
            metrics: self.metrics.clone(),
        };
        let forward = {
            let (events, key, every) = (&self.events, &self.key, self.every);
            let rx = &mut rx;
            async move {
                loop {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    let latest = rx.borrow_and_update().clone();
                    if let Some((progress, at)) = latest {
                        let _ = events.send(Event::Progress {
                            key: key.clone(),
                            progress,
                            at,
                        });
                    }
                    tokio::time::sleep(every).await;
                }
            }
        };
        let outcome = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            r = self.step.run(&*self.cluster, &self.cluster_name, &sink) => Some(r),
            _ = forward => None,
        };
        // The last report always goes out, before the result.
        if rx.has_changed().unwrap_or(false) {
            if let Some((progress, at)) = rx.borrow_and_update().clone() {
                let _ = self.events.send(Event::Progress {
                    key: self.key.clone(),
                    progress,
                    at,
                });
            }
        }
        if outcome.is_none() {
            tracing::info!("step stopped at an await point");
        }
        let _ = self.events.send(Event::Finished {
            key: self.key,
            outcome,
            at: SystemTime::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::GroupKind;

    fn run_step(op: &str, attempt: u32, step: pb::run_step::Step) -> pb::CoordinatorMessage {
        pb::CoordinatorMessage {
            message: Some(Down::RunStep(pb::RunStep {
                operation_id: op.into(),
                step_id: "s".into(),
                attempt,
                step: Some(step),
                trace_context: TraceContext::new(),
            })),
        }
    }

    fn taint() -> pb::run_step::Step {
        pb::run_step::Step::Taint(pb::TaintParams {
            group: "ng-old".into(),
            taint_key: String::new(),
        })
    }

    /// A WaitNodesReady that never ends (the group has no Ready nodes and the timeout is long).
    fn wait_forever() -> pb::run_step::Step {
        pb::run_step::Step::WaitNodesReady(pb::WaitNodesReadyParams {
            group: "ng-new".into(),
            count: 5,
            timeout: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            poll: None,
        })
    }

    fn cluster() -> Arc<FakeCluster> {
        let c = FakeCluster::new();
        for i in 0..2 {
            c.add_node(&format!("old-{i}"), "ng-old", GroupKind::SelfManaged, 4000, 110);
        }
        c.add_node("new-0", "ng-new", GroupKind::Managed, 4000, 110);
        Arc::new(c)
    }

    fn runner(
        cluster: Arc<FakeCluster>,
    ) -> (
        Runner<FakeCluster>,
        mpsc::UnboundedReceiver<Event>,
        CancellationToken,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let r = Runner::new(
            cluster,
            "fake",
            Duration::from_millis(10),
            shutdown.clone(),
            tx,
            AgentMetrics::new(),
        );
        (r, rx, shutdown)
    }

    fn results(out: &[pb::AgentMessage]) -> Vec<pb::StepResult> {
        out.iter()
            .filter_map(|m| match &m.message {
                Some(Up::Result(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Feeds task events to the runner until a result comes out.
    async fn next_result(
        r: &mut Runner<FakeCluster>,
        rx: &mut mpsc::UnboundedReceiver<Event>,
    ) -> pb::StepResult {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("an event within 30s")
                .expect("open");
            if let Some(res) = results(&r.on_event(ev, Instant::now())).pop() {
                return res;
            }
        }
    }

    fn error_code(r: &pb::StepResult) -> Option<pb::step_error::Code> {
        match &r.outcome {
            Some(pb::step_result::Outcome::Error(e)) => pb::step_error::Code::try_from(e.code).ok(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_repeated_run_step_runs_once_and_gets_the_stored_result() {
        let c = cluster();
        let (mut r, mut rx, _s) = runner(c.clone());
        let now = Instant::now();
        assert!(r.on_message(run_step("op", 1, taint()), now).is_empty());
        assert!(
            r.on_message(run_step("op", 1, taint()), now).is_empty(),
            "running: nothing again"
        );
        assert_eq!(r.running().len(), 1);
        let first = next_result(&mut r, &mut rx).await;
        assert!(
            matches!(first.outcome, Some(pb::step_result::Outcome::Ok(_))),
            "{first:?}"
        );
        let again = results(&r.on_message(run_step("op", 1, taint()), now));
        assert_eq!(again, vec![first.clone()], "the stored result, not a new run");
        assert_eq!(r.running_len(), 0);
        // Acked results still answer a repeated RunStep.
        r.on_message(
            pb::CoordinatorMessage {
                message: Some(Down::Ack(pb::Ack {
                    operation_id: "op".into(),
                    step_id: "s".into(),
                    attempt: 1,
                })),
            },
            now,
        );
        assert_eq!(r.unacked_len(), 0);
        assert_eq!(
            results(&r.on_message(run_step("op", 1, taint()), now)),
            vec![first]
        );
        assert_eq!(r.running_len(), 0);
        // The taint was written once per node: a second run would find nothing to change, but
        // there was no second run to find out.
        assert_eq!(
            c.state()
                .events
                .iter()
                .filter(|e| e.reason == "FlotillaTainted")
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn cancel_stops_a_running_step_with_a_cancelled_result() {
        let (mut r, mut rx, _s) = runner(cluster());
        let now = Instant::now();
        r.on_message(run_step("op", 1, wait_forever()), now);
        let hb = r.heartbeat();
        assert!(matches!(
            hb.message,
            Some(Up::Heartbeat(pb::Heartbeat { running_steps: 1, .. }))
        ));
        let cancel = pb::CoordinatorMessage {
            message: Some(Down::CancelStep(pb::CancelStep {
                operation_id: "op".into(),
                step_id: "s".into(),
                attempt: 1,
                reason: "operator cancelled".into(),
            })),
        };
        assert!(
            r.on_message(cancel.clone(), now).is_empty(),
            "the result follows from the task"
        );
        let res = next_result(&mut r, &mut rx).await;
        assert_eq!(error_code(&res), Some(pb::step_error::Code::Cancelled));
        let Some(pb::step_result::Outcome::Error(e)) = &res.outcome else {
            panic!("error")
        };
        assert!(e.message.contains("operator cancelled"), "{}", e.message);
        // Cancelling again re-sends the same result.
        assert_eq!(results(&r.on_message(cancel, now)), vec![res]);
    }

    #[tokio::test]
    async fn cancel_of_an_unknown_attempt_is_answered_and_sticks() {
        let (mut r, _rx, _s) = runner(cluster());
        let now = Instant::now();
        let out = r.on_message(
            pb::CoordinatorMessage {
                message: Some(Down::CancelStep(pb::CancelStep {
                    operation_id: "op".into(),
                    step_id: "s".into(),
                    attempt: 3,
                    reason: String::new(),
                })),
            },
            now,
        );
        let res = results(&out);
        assert_eq!(res.len(), 1);
        assert_eq!(error_code(&res[0]), Some(pb::step_error::Code::Cancelled));
        // The same attempt is not started afterwards.
        assert_eq!(results(&r.on_message(run_step("op", 3, taint()), now)), res);
        assert_eq!(r.running_len(), 0);
    }

    #[tokio::test]
    async fn a_newer_attempt_supersedes_an_older_one() {
        let (mut r, mut rx, _s) = runner(cluster());
        let now = Instant::now();
        r.on_message(run_step("op", 1, wait_forever()), now);
        r.on_message(run_step("op", 2, wait_forever()), now);
        let res = next_result(&mut r, &mut rx).await;
        assert_eq!(res.attempt, 1);
        assert_eq!(error_code(&res), Some(pb::step_error::Code::Cancelled));
        assert_eq!(r.running().iter().map(|s| s.attempt).collect::<Vec<_>>(), vec![2]);
        // A stale attempt is answered without running.
        let stale = results(&r.on_message(run_step("op", 1, wait_forever()), now));
        assert_eq!(stale.len(), 1, "attempt 1 already has its result");
        assert!(r.shutdown(Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn a_run_step_without_a_step_is_refused_with_the_field() {
        let (mut r, _rx, _s) = runner(cluster());
        let out = r.on_message(
            pb::CoordinatorMessage {
                message: Some(Down::RunStep(pb::RunStep {
                    operation_id: "op".into(),
                    step_id: "s".into(),
                    attempt: 1,
                    step: None,
                    trace_context: TraceContext::new(),
                })),
            },
            Instant::now(),
        );
        let res = results(&out);
        assert_eq!(error_code(&res[0]), Some(pb::step_error::Code::InvalidParameter));
    }

    #[tokio::test]
    async fn shutdown_stops_steps_without_results() {
        let (mut r, mut rx, shutdown) = runner(cluster());
        r.on_message(run_step("op", 1, wait_forever()), Instant::now());
        shutdown.cancel();
        assert!(r.shutdown(Duration::from_secs(10)).await, "the task ends");
        while let Ok(ev) = rx.try_recv() {
            assert!(results(&r.on_event(ev, Instant::now())).is_empty());
        }
        assert_eq!(r.running_len(), 0);
        assert_eq!(r.unacked_len(), 0);
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn traced_run_step(op: &str, step: pb::run_step::Step) -> pb::CoordinatorMessage {
        let mut m = run_step(op, 1, step);
        if let Some(Down::RunStep(rs)) = &mut m.message {
            rs.trace_context = [("traceparent".to_string(), PARENT.to_string())].into();
        }
        m
    }

    #[tokio::test]
    async fn results_carry_the_step_span_under_the_coordinators_trace() {
        // Not tracing here: the coordinator's context comes back as it was sent.
        let (mut r, mut rx, _s) = runner(cluster());
        r.on_message(traced_run_step("op-1", taint()), Instant::now());
        let res = next_result(&mut r, &mut rx).await;
        assert_eq!(
            res.trace_context.get("traceparent").map(String::as_str),
            Some(PARENT)
        );

        // Tracing: the step span is a child of the coordinator's, and results and progress
        // name the step span.
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let _traced = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))),
        );
        r.on_message(traced_run_step("op-2", wait_forever()), Instant::now());
        let progress = loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("progress within 30s")
                .expect("open");
            if let Some(Up::Progress(p)) = r
                .on_event(ev, Instant::now())
                .into_iter()
                .next()
                .and_then(|m| m.message)
            {
                break p;
            }
        };
        let header = progress.trace_context["traceparent"].clone();
        assert!(
            header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{header}"
        );
        assert!(
            !header.contains("00f067aa0ba902b7"),
            "the step's own span id: {header}"
        );
        r.on_message(
            pb::CoordinatorMessage {
                message: Some(Down::CancelStep(pb::CancelStep {
                    operation_id: "op-2".into(),
                    step_id: "s".into(),
                    attempt: 1,
                    reason: String::new(),
                })),
            },
            Instant::now(),
        );
        let res = next_result(&mut r, &mut rx).await;
        assert_eq!(res.trace_context["traceparent"], header);
    }

    #[tokio::test]
    async fn steps_are_counted_by_kind_and_result() {
        let c = cluster();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let metrics = AgentMetrics::new();
        let mut r = Runner::new(
            c,
            "fake",
            Duration::from_millis(10),
            CancellationToken::new(),
            tx,
            metrics.clone(),
        );
        r.on_message(run_step("op", 1, taint()), Instant::now());
        next_result(&mut r, &mut rx).await;
        let text = flotilla_proto::telemetry::metrics::encode(metrics.registry());
        assert!(
            text.contains("flotilla_agent_steps_total{kind=\"taint\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_step_duration_seconds_count{kind=\"taint\"} 1"),
            "{text}"
        );
        assert!(text.contains("flotilla_agent_steps_running 0"), "{text}");
    }

    #[tokio::test]
    async fn progress_is_forwarded_and_kept_for_a_reconnect() {
        let (mut r, mut rx, _s) = runner(cluster());
        let now = Instant::now();
        r.on_message(run_step("op", 1, wait_forever()), now);
        let progress = loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("progress within 30s")
                .expect("open");
            let out = r.on_event(ev, now);
            if let Some(Up::Progress(p)) = out.into_iter().next().and_then(|m| m.message) {
                break p;
            }
        };
        assert_eq!(progress.kind, pb::StepKind::WaitNodesReady as i32);
        let again = r.on_connect(now);
        assert!(matches!(&again[0].message, Some(Up::Progress(p)) if p.operation_id == "op"));
    }
}
