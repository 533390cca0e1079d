//! The engine drives every operation through the state machine ([`crate::operation`]): one task
//! ("actor") per unfinished operation owns its state, turns results, ticks, cancels and agent
//! (re)connections into events, persists each transition with its log lines in one write, and
//! only then acts — sends `RunStep` to the cluster's agent, runs coordinator steps against EKS as
//! spawned tasks whose outcome comes back as an event, and acks the agent's result.
//!
//! On start every unfinished operation in the store is resumed ([`Engine::resume_all`]). Live
//! step progress is kept in memory and, with every committed change and log line, broadcast to
//! watchers ([`Engine::subscribe`]).

pub mod eks_steps;
pub mod record;
pub mod rollouts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::telemetry;
use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use crate::convert;
use crate::eks::Eks;
use crate::metrics::CoordinatorMetrics;
use crate::operation::{self, Action, Event, OperationState as Machine, RunMode};
use crate::params::{MigrationParams, Params};
use crate::plan::{Runner, Step};
use crate::sessions::Sessions;
use crate::store::{EventRecord, NewEvent, OperationKind, OperationRecord, Store, StoreError};
use crate::upgrade::{ProgressUpdate, UpdateDurations};

pub use eks_steps::EksWaits;

/// How the engine runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineOptions {
    /// The longest an operation waiting to retry sleeps before it looks at the clock again: it
    /// gets [`Event::Tick`] when its retry is due, or after this long if that comes first (a
    /// wall-clock step is then noticed). An operation with no retry due gets no ticks.
    pub tick: Duration,
    /// How coordinator steps wait on EKS and Auto Scaling.
    pub waits: EksWaits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            tick: Duration::from_secs(1),
            waits: EksWaits::default(),
        }
    }
}

/// Errors from the engine's operations API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such operation.
    #[error("operation {0} not found")]
    NotFound(String),
    /// The cluster already has an unfinished operation.
    #[error(
        "cluster {cluster} already has operation {operation} in progress; wait for it to end or cancel it"
    )]
    Busy {
        /// The cluster.
        cluster: String,
        /// Its unfinished operation.
        operation: String,
    },
    /// The state machine refused to cancel (the drain has ended, or it is over).
    #[error("operation {id} cannot be cancelled: {reason}")]
    CancelRefused {
        /// The operation.
        id: String,
        /// Why, as recorded in its log.
        reason: String,
    },
    /// The engine is shutting down.
    #[error("the coordinator is shutting down")]
    Stopped,
}

/// Why an agent's message about an operation was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The operation belongs to another cluster than the agent's.
    #[error("operation {operation} belongs to cluster {owner}, not to {cluster}")]
    OtherCluster {
        /// The operation.
        operation: String,
        /// Its cluster.
        owner: String,
        /// The agent's cluster.
        cluster: String,
    },
    /// The message is malformed.
    #[error(transparent)]
    Bad(#[from] convert::BadResult),
}

/// Something watchers may want to know.
#[derive(Debug, Clone)]
pub enum Update {
    /// A line was appended to an operation's log.
    Logged {
        /// The operation.
        operation: String,
        /// The stored line.
        event: EventRecord,
    },
    /// An operation's record changed (after its log lines were broadcast).
    Changed(Arc<OperationRecord>),
    /// A cluster's agent connected (its session's inventory is current).
    AgentConnected {
        /// The cluster.
        cluster: String,
    },
    /// A cluster's agent disconnected.
    AgentDisconnected {
        /// The cluster.
        cluster: String,
    },
    /// A running agent step reported progress.
    Progress {
        /// The operation.
        operation: String,
        /// The report.
        progress: pb::StepProgress,
    },
}

/// One input to an operation's actor.
struct Input {
    event: Event,
    /// Ack this result to the agent once the transition is persisted.
    ack: Option<pb::Ack>,
    /// The agent's typed error of a failed result, wire-encoded.
    error_detail: Option<String>,
    /// A line to log with the transition (e.g. "coordinator restarted").
    note: Option<String>,
    reply: Option<oneshot::Sender<Result<OperationRecord, EngineError>>>,
}

impl Input {
    fn event(event: Event) -> Self {
        Input {
            event,
            ack: None,
            error_detail: None,
            note: None,
            reply: None,
        }
    }
}

/// A running actor, as the engine sees it.
struct ActorEntry {
    cluster: String,
    tx: mpsc::UnboundedSender<Input>,
    /// The (step id, attempt) in flight, for accepting progress reports.
    in_flight: Option<(String, u32)>,
}

struct Inner<E> {
    store: Arc<dyn Store>,
    eks: HashMap<String, Arc<E>>,
    sessions: Arc<Sessions>,
    options: EngineOptions,
    metrics: CoordinatorMetrics,
    actors: Mutex<HashMap<String, ActorEntry>>,
    progress: Mutex<HashMap<String, pb::StepProgress>>,
    updates: broadcast::Sender<Update>,
    /// Serialises StartOperation so that two starts on one cluster cannot both pass the check.
    starting: tokio::sync::Mutex<()>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    /// What EKS updates have taken across the fleet (paces the polls of the next ones).
    durations: Arc<UpdateDurations>,
}

/// The engine; cheap to clone (one shared state).
pub struct Engine<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Engine<E> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

/// Runs a store call off the async threads (sled flushes block).
async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::backend(std::io::Error::other(format!(
            "store task failed: {e}"
        )))),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new operation id: sortable by creation time, then random.
pub fn new_operation_id(now: Timestamp) -> String {
    format!(
        "op-{:013}-{:06x}",
        now.as_millisecond().max(0),
        rand::random::<u32>() & 0xff_ffff
    )
}

impl<E: Eks + 'static> Engine<E> {
    /// An engine over `store`, with one EKS handle per configured cluster.
    pub fn new(
        store: Arc<dyn Store>,
        eks: HashMap<String, Arc<E>>,
        sessions: Arc<Sessions>,
        options: EngineOptions,
    ) -> Self {
        Self::with_metrics(store, eks, sessions, options, CoordinatorMetrics::new())
    }

    /// As [`Engine::new`], counting operations by state and step durations in `metrics`.
    pub fn with_metrics(
        store: Arc<dyn Store>,
        eks: HashMap<String, Arc<E>>,
        sessions: Arc<Sessions>,
        options: EngineOptions,
        metrics: CoordinatorMetrics,
    ) -> Self {
        let (updates, _) = broadcast::channel(4096);
        let (shutdown, _) = watch::channel(false);
        Engine {
            inner: Arc::new(Inner {
                store,
                eks,
                sessions,
                options,
                metrics,
                actors: Mutex::default(),
                progress: Mutex::default(),
                updates,
                starting: tokio::sync::Mutex::new(()),
                shutdown,
                tasks: Mutex::new(JoinSet::new()),
                durations: Arc::default(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Every committed change, log line and progress report from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.inner.updates.subscribe()
    }

    /// The latest progress of the operation's running agent step.
    pub fn live_progress(&self, operation: &str) -> Option<pb::StepProgress> {
        lock(&self.inner.progress).get(operation).cloned()
    }

    /// The unfinished operation of `cluster`, if any.
    pub fn current_operation(&self, cluster: &str) -> Option<String> {
        lock(&self.inner.actors)
            .iter()
            .filter(|(_, a)| a.cluster == cluster)
            .map(|(id, _)| id.clone())
            .min()
    }

    /// The unfinished operation of every busy cluster (one lock, for listing many clusters).
    pub fn current_operations(&self) -> HashMap<String, String> {
        let mut out: HashMap<String, String> = HashMap::new();
        for (id, a) in lock(&self.inner.actors).iter() {
            let e = out.entry(a.cluster.clone()).or_insert_with(|| id.clone());
            if id < e {
                *e = id.clone();
            }
        }
        out
    }

    /// Loads every unfinished operation and resumes it: [`Event::Resume`] re-issues what was in
    /// flight (agent steps with the same attempt, coordinator steps as a re-check); a pending one
    /// is started. Returns how many were resumed.
    pub async fn resume_all(&self) -> Result<usize, EngineError> {
        let ops = blocking(&self.inner.store, |s| s.list_operations(None)).await?;
        let mut n = 0;
        for op in ops {
            self.inner.metrics.operation_moved(None, op.state);
            let machine = op.machine.clone().unwrap_or(Machine::Pending);
            if machine.is_terminal() {
                continue;
            }
            let (event, note) = match machine {
                Machine::Pending => (
                    Event::Start {
                        plan: record::plan_of(&op),
                    },
                    "coordinator restarted; starting".to_string(),
                ),
                ref m => (
                    Event::Resume,
                    format!("coordinator restarted; resuming ({})", describe(m)),
                ),
            };
            tracing::info!(operation = %op.id, cluster = %op.cluster, state = %describe(&machine), "resuming operation");
            self.spawn_actor(
                op,
                Input {
                    note: Some(note),
                    ..Input::event(event)
                },
            );
            n += 1;
        }
        Ok(n)
    }

    /// Stores a new operation (refused if its cluster has one unfinished) and starts it.
    pub async fn start(&self, record: OperationRecord) -> Result<OperationRecord, EngineError> {
        let _guard = self.inner.starting.lock().await;
        if let Some(operation) = self.current_operation(&record.cluster) {
            return Err(EngineError::Busy {
                cluster: record.cluster.clone(),
                operation,
            });
        }
        let rec = record.clone();
        let created = blocking(&self.inner.store, move |s| s.create_operation(&rec)).await?;
        self.inner.metrics.operation_moved(None, created.state);
        tracing::info!(operation = %created.id, cluster = %created.cluster, created_by = %created.created_by, "operation created");
        let (reply, rx) = oneshot::channel();
        let plan = record::plan_of(&created);
        self.spawn_actor(
            created,
            Input {
                reply: Some(reply),
                ..Input::event(Event::Start { plan })
            },
        );
        drop(_guard);
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Cancels the operation: rolls back if the drain has not ended, else refuses.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<OperationRecord, EngineError> {
        let Some(record) = ({
            let id = id.to_string();
            blocking(&self.inner.store, move |s| s.get_operation(&id)).await?
        }) else {
            return Err(EngineError::NotFound(id.to_string()));
        };
        let delete_new_group = match record.kind {
            OperationKind::Migration => serde_json::from_value::<MigrationParams>(record.params.clone())
                .map(|p| p.delete_nodegroup_on_rollback)
                .unwrap_or(false),
            OperationKind::Upgrade => false,
        };
        let (reply, rx) = oneshot::channel();
        let input = Input {
            note: (!reason.is_empty()).then(|| format!("cancel requested: {reason}")),
            reply: Some(reply),
            ..Input::event(Event::Cancel { delete_new_group })
        };
        self.dispatch(record, input);
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Halts the operation (a rollout stopping at its failure budget): an upgrade finishes the
    /// step in flight and stops; a migration rolls back before its drain ended and runs to its end
    /// after it (see [`crate::operation::state`], "Halt"). Over operations are left as they are.
    pub async fn halt(&self, id: &str, reason: &str) -> Result<OperationRecord, EngineError> {
        let Some(record) = ({
            let id = id.to_string();
            blocking(&self.inner.store, move |s| s.get_operation(&id)).await?
        }) else {
            return Err(EngineError::NotFound(id.to_string()));
        };
        if record.machine.as_ref().is_some_and(Machine::is_terminal) {
            return Ok(record);
        }
        let delete_new_group = record::params_of(&record)
            .and_then(|p| p.migration().map(|m| m.delete_nodegroup_on_rollback))
            .unwrap_or(false);
        let (reply, rx) = oneshot::channel();
        let input = Input {
            note: (!reason.is_empty()).then(|| format!("halt requested: {reason}")),
            reply: Some(reply),
            ..Input::event(Event::Halt { delete_new_group })
        };
        self.dispatch(record, input);
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// The EKS handle of a configured cluster.
    pub fn eks(&self, cluster: &str) -> Option<Arc<E>> {
        self.inner.eks.get(cluster).cloned()
    }

    /// The coordinator's metrics (operations, steps; the gateway counts agents in them).
    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.inner.metrics
    }

    /// The agents' sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.inner.sessions
    }

    /// An agent's result for one of its cluster's operations: applied (once), then acked.
    pub async fn deliver_result(&self, cluster: &str, result: pb::StepResult) -> Result<(), DeliverError> {
        let ack = pb::Ack {
            operation_id: result.operation_id.clone(),
            step_id: result.step_id.clone(),
            attempt: result.attempt,
        };
        let id = result.operation_id.clone();
        let record = {
            let id = id.clone();
            blocking(&self.inner.store, move |s| s.get_operation(&id)).await
        };
        let record = match record {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!(%cluster, operation = %id, step = %result.step_id, "result for an unknown operation; acked and dropped");
                self.send_ack(cluster, ack);
                return Ok(());
            }
            Err(e) => {
                // Not acked: the agent re-sends it.
                tracing::error!(%cluster, operation = %id, error = %e, "cannot read the operation; result not acked");
                return Ok(());
            }
        };
        if record.cluster != cluster {
            return Err(DeliverError::OtherCluster {
                operation: id,
                owner: record.cluster,
                cluster: cluster.to_string(),
            });
        }
        let Some(step) = record::step_of(&record, &result.step_id) else {
            tracing::warn!(%cluster, operation = %id, step = %result.step_id, "result for an unknown step; acked and dropped");
            self.send_ack(cluster, ack);
            return Ok(());
        };
        let (event, error_detail) = convert::result_event(step, &result)?;
        // A fresh inventory (an upgrade's first step) is the cluster's inventory from now on.
        if let Some(pb::step_result::Outcome::Ok(pb::StepOutput {
            output: Some(pb::step_output::Output::Inventory(inv)),
        })) = &result.outcome
        {
            self.inner.sessions.set_inventory(cluster, inv.clone());
        }
        self.dispatch(
            record,
            Input {
                ack: Some(ack),
                error_detail,
                ..Input::event(event)
            },
        );
        Ok(())
    }

    /// An agent's progress report: kept as the step's live progress and broadcast, if it is about
    /// the attempt in flight.
    pub fn progress(&self, cluster: &str, progress: pb::StepProgress) -> Result<(), DeliverError> {
        let id = progress.operation_id.clone();
        let accepted = {
            let actors = lock(&self.inner.actors);
            match actors.get(&id) {
                Some(a) if a.cluster != cluster => {
                    return Err(DeliverError::OtherCluster {
                        operation: id,
                        owner: a.cluster.clone(),
                        cluster: cluster.to_string(),
                    })
                }
                Some(a) => a
                    .in_flight
                    .as_ref()
                    .is_some_and(|(s, n)| *s == progress.step_id && *n == progress.attempt),
                None => false,
            }
        };
        if accepted {
            lock(&self.inner.progress).insert(id.clone(), progress.clone());
            let _ = self.inner.updates.send(Update::Progress {
                operation: id,
                progress,
            });
        }
        Ok(())
    }

    /// A coordinator step's progress report: kept as the operation's live progress and broadcast,
    /// if (step, attempt) is still the one in flight.
    fn coordinator_progress(&self, operation: &str, step: Step, attempt: u32, update: &ProgressUpdate) {
        let step_id = record::step_id(step);
        let current = lock(&self.inner.actors)
            .get(operation)
            .and_then(|a| a.in_flight.clone())
            .is_some_and(|(s, n)| s == step_id && n == attempt);
        if !current {
            return;
        }
        let progress = pb::StepProgress {
            trace_context: Default::default(),
            operation_id: operation.to_string(),
            step_id,
            attempt,
            kind: pb::StepKind::Unspecified as i32,
            done: update.done,
            total: update.total,
            message: update.message.clone(),
            blockers: Vec::new(),
            at: Some(convert::ts(Timestamp::now())),
        };
        lock(&self.inner.progress).insert(operation.to_string(), progress.clone());
        let _ = self.inner.updates.send(Update::Progress {
            operation: operation.to_string(),
            progress,
        });
    }

    /// The cluster's agent (re)connected: its in-flight steps are sent again.
    pub fn agent_connected(&self, cluster: &str) {
        self.to_cluster(cluster, Event::AgentReconnected);
        let _ = self.inner.updates.send(Update::AgentConnected {
            cluster: cluster.to_string(),
        });
    }

    /// The cluster's agent disconnected.
    pub fn agent_disconnected(&self, cluster: &str) {
        self.to_cluster(cluster, Event::AgentDisconnected);
        let _ = self.inner.updates.send(Update::AgentDisconnected {
            cluster: cluster.to_string(),
        });
    }

    /// Stops every actor and running coordinator step (their state is persisted; a restart
    /// resumes them) and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    /// Spawns a task the engine stops at shutdown (finished ones are reaped here).
    fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) -> AbortHandle {
        let mut tasks = lock(&self.inner.tasks);
        while tasks.try_join_next().is_some() {}
        if *self.inner.shutdown.borrow() {
            // Shutting down: do not start anything new.
            return tasks.spawn(async {});
        }
        tasks.spawn(task)
    }

    fn to_cluster(&self, cluster: &str, event: Event) {
        for a in lock(&self.inner.actors).values().filter(|a| a.cluster == cluster) {
            let _ = a.tx.send(Input::event(event.clone()));
        }
    }

    fn send_ack(&self, cluster: &str, ack: pb::Ack) {
        send_ack(&self.inner.sessions, cluster, ack);
    }

    /// Sends `input` to the operation's actor, starting one if it has none. An operation that is
    /// over and cannot change (anything but a cancel of a failed one) is answered here.
    fn dispatch(&self, record: OperationRecord, input: Input) {
        self.spawn_actor(record, input);
    }

    /// Queues `first` for the actor of `record`, starting the actor if it has none. Inputs are
    /// queued under the actors lock, so an actor that finds its queue empty under that lock may
    /// leave without losing one.
    fn spawn_actor(&self, record: OperationRecord, first: Input) {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut actors = lock(&self.inner.actors);
            if let Some(a) = actors.get(&record.id) {
                let _ = a.tx.send(first);
                return;
            }
            let _ = tx.send(first);
            actors.insert(
                record.id.clone(),
                ActorEntry {
                    cluster: record.cluster.clone(),
                    tx: tx.clone(),
                    in_flight: None,
                },
            );
        }
        let machine = record.machine.clone().unwrap_or(Machine::Pending);
        let params = record::params_of(&record);
        // Under the span that created it: its rollout's, or the gRPC call's (StartOperation).
        let span = tracing::info_span!(
            "operation",
            cluster = %record.cluster,
            operation = %record.id,
            rollout = tracing::field::Empty,
        );
        if let Some(rollout) = &record.rollout_id {
            span.record("rollout", rollout.as_str());
        }
        // The same trace in every actor of the operation, also after a restart.
        if let Some(tp) = &record.traceparent {
            telemetry::set_parent(&span, telemetry::extract_traceparent(tp));
        }
        let actor = Actor {
            engine: self.clone(),
            cluster: record.cluster.clone(),
            machine,
            params,
            record,
            tx: tx.clone(),
            coordinator_task: None,
            agent_step_span: None,
        };
        let mut shutdown = self.inner.shutdown.subscribe();
        self.spawn_task(
            async move {
                tokio::select! {
                    _ = actor.run(rx) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            }
            .instrument(span),
        );
    }
}

fn send_ack(sessions: &Sessions, cluster: &str, ack: pb::Ack) {
    let msg = pb::CoordinatorMessage {
        message: Some(pb::coordinator_message::Message::Ack(ack)),
    };
    // Without a session the agent re-sends the result after reconnecting; it is acked then.
    let _ = sessions.send(cluster, msg);
}

/// A short description of a machine state, for log lines.
fn describe(m: &Machine) -> String {
    match m {
        Machine::Pending => "pending".into(),
        Machine::Running { step, attempt, .. } => format!("{step} attempt {attempt} in flight"),
        Machine::WaitingRetry {
            step, attempt, until, ..
        } => format!("{step} attempt {attempt} due at {until}"),
        Machine::RollingBack { step, attempt, .. } => format!("rolling back: {step} attempt {attempt}"),
        Machine::Cancelling { step, attempt, .. } => {
            format!("cancelling: {step} attempt {attempt} finishing")
        }
        Machine::Succeeded => "succeeded".into(),
        Machine::Failed { step, .. } => format!("failed at {step}"),
        Machine::Cancelled => "cancelled".into(),
        Machine::RolledBack { .. } => "rolled back".into(),
    }
}

/// The step a transition concerns, for its log lines.
fn step_of_transition(event: &Event, m: &Machine) -> Option<Step> {
    match event {
        Event::StepStarted { step, .. }
        | Event::StepSucceeded { step, .. }
        | Event::StepFailed { step, .. } => Some(*step),
        _ => match m {
            Machine::Running { step, .. }
            | Machine::WaitingRetry { step, .. }
            | Machine::RollingBack { step, .. }
            | Machine::Cancelling { step, .. }
            | Machine::Failed { step, .. } => Some(*step),
            _ => None,
        },
    }
}

/// One operation's actor: the only writer of its record.
struct Actor<E> {
    engine: Engine<E>,
    cluster: String,
    record: OperationRecord,
    machine: Machine,
    params: Option<Params>,
    tx: mpsc::UnboundedSender<Input>,
    /// The coordinator step running as a task, with its attempt.
    coordinator_task: Option<(Step, u32, AbortHandle)>,
    /// The span of the agent step attempt in flight: open from its first `RunStep` until it is
    /// no longer in flight; the agent's step span is its child (through `RunStep.trace_context`).
    agent_step_span: Option<(Step, u32, tracing::Span)>,
}

impl<E: Eks + 'static> Actor<E> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        // The record this actor was started with may be older than the store's (a previous
        // actor of the operation committed after it was read): start from the stored one.
        let id = self.record.id.clone();
        if let Ok(Some(stored)) = blocking(&self.engine.inner.store, move |s| s.get_operation(&id)).await {
            if stored.version > self.record.version {
                self.machine = stored.machine.clone().unwrap_or(Machine::Pending);
                self.record = stored;
            }
        }
        let tick = self.engine.inner.options.tick;
        loop {
            // Ticks only start retries whose wait is over: none while no retry is due (a fleet's
            // worth of idle operations would otherwise wake for nothing), and one when it is.
            let due = self.machine.next_deadline().map(|at| {
                let left = at.duration_since(Timestamp::now());
                std::time::Duration::try_from(left).unwrap_or_default().min(tick)
            });
            let input = tokio::select! {
                i = rx.recv() => match i {
                    Some(i) => i,
                    None => break,
                },
                _ = tokio::time::sleep(due.unwrap_or_default()), if due.is_some() => Input::event(Event::Tick),
            };
            self.handle(input).await;
            if self.machine.is_terminal() {
                // Leave only when nothing else is queued: inputs are sent under the same lock.
                let mut actors = lock(&self.engine.inner.actors);
                if rx.is_empty() {
                    actors.remove(&self.record.id);
                    break;
                }
            }
        }
        if let Some((_, _, task)) = self.coordinator_task.take() {
            task.abort();
        }
        lock(&self.engine.inner.progress).remove(&self.record.id);
    }

    /// The one place the state machine runs.
    fn transition(&self, event: &Event, now: Timestamp) -> (Machine, Vec<Action>) {
        operation::next(&self.machine, event, now)
    }

    async fn handle(&mut self, input: Input) {
        let now = Timestamp::now();
        let (next, actions) = self.transition(&input.event, now);
        let refused_cancel = matches!(input.event, Event::Cancel { .. }) && next == self.machine;
        if next != self.machine || !actions.is_empty() || input.note.is_some() {
            let step = step_of_transition(&input.event, &next).map(record::step_id);
            let mut lines: Vec<NewEvent> = Vec::new();
            if let Some(note) = &input.note {
                lines.push(NewEvent {
                    at: now,
                    step: step.clone(),
                    message: note.clone(),
                });
            }
            lines.extend(actions.iter().filter_map(|a| match a {
                Action::RecordEvent { message } => Some(NewEvent {
                    at: now,
                    step: step.clone(),
                    message: message.clone(),
                }),
                _ => None,
            }));
            let (id, version) = (self.record.id.clone(), self.record.version);
            let (m, ev, acts, detail) = (
                next.clone(),
                input.event.clone(),
                actions.clone(),
                input.error_detail.clone(),
            );
            let committed = blocking(&self.engine.inner.store, move |s| {
                s.commit(
                    &id,
                    version,
                    &mut |r| record::sync(r, &m, &ev, &acts, detail.as_deref(), now),
                    &lines,
                )
            })
            .await;
            match committed {
                Ok((rec, logged)) => {
                    let metrics = &self.engine.inner.metrics;
                    metrics.operation_moved(Some(self.record.state), rec.state);
                    if let Event::StepSucceeded { step, .. } | Event::StepFailed { step, .. } = &input.event {
                        let id = record::step_id(*step);
                        if let Some(s) = rec.steps.iter().find(|s| s.id == id) {
                            if let (Some(start), Some(end)) = (s.started_at, s.finished_at) {
                                let took = end.duration_since(start).unsigned_abs();
                                let ok = matches!(input.event, Event::StepSucceeded { .. });
                                metrics.step_finished(*step, ok, took);
                            }
                        }
                    }
                    self.record = rec;
                    self.machine = next;
                    let inner = &self.engine.inner;
                    for event in logged {
                        tracing::info!(
                            step = event.step.as_deref().unwrap_or(""),
                            seq = event.seq,
                            "{}",
                            event.message
                        );
                        let _ = inner.updates.send(Update::Logged {
                            operation: self.record.id.clone(),
                            event,
                        });
                    }
                    let _ = inner.updates.send(Update::Changed(Arc::new(self.record.clone())));
                }
                Err(e) => {
                    // Nothing was persisted, so nothing is done and nothing acked: the agent
                    // re-sends, ticks and cancels can be tried again.
                    tracing::error!(error = %e, event = ?input.event, "could not persist the transition; not acting on it");
                    if let StoreError::Conflict { .. } = e {
                        // Another writer got there first (it should not happen: this actor is the
                        // only one); continue from what is stored.
                        let id = self.record.id.clone();
                        if let Ok(Some(stored)) =
                            blocking(&self.engine.inner.store, move |s| s.get_operation(&id)).await
                        {
                            self.machine = stored.machine.clone().unwrap_or(Machine::Pending);
                            self.record = stored;
                        }
                    }
                    if let Some(reply) = input.reply {
                        let _ = reply.send(Err(e.into()));
                    }
                    return;
                }
            }
        }
        self.publish_in_flight();
        for action in actions.iter() {
            self.act(action).await;
        }
        if let Some(ack) = input.ack {
            send_ack(&self.engine.inner.sessions, &self.cluster, ack);
        }
        if let Some(reply) = input.reply {
            let answer = if refused_cancel {
                let reason = actions
                    .iter()
                    .find_map(|a| match a {
                        Action::RecordEvent { message } => Some(message.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "the state machine refused".into());
                Err(EngineError::CancelRefused {
                    id: self.record.id.clone(),
                    reason,
                })
            } else {
                Ok(self.record.clone())
            };
            let _ = reply.send(answer);
        }
    }

    /// Shares the attempt in flight (for progress), drops stale progress and aborts a
    /// coordinator task whose attempt is no longer the one in flight.
    fn publish_in_flight(&mut self) {
        let in_flight = self.machine.in_flight();
        let inner = &self.engine.inner;
        if let Some(a) = lock(&inner.actors).get_mut(&self.record.id) {
            a.in_flight = in_flight.map(|(s, n)| (record::step_id(s), n));
        }
        {
            let mut progress = lock(&inner.progress);
            let stale = progress.get(&self.record.id).is_some_and(|p| {
                in_flight.is_none_or(|(s, n)| p.step_id != record::step_id(s) || p.attempt != n)
            });
            if stale {
                progress.remove(&self.record.id);
            }
        }
        if let Some((step, attempt, _)) = &self.agent_step_span {
            if in_flight != Some((*step, *attempt)) {
                // Closes the span: the attempt ended (or was given up).
                self.agent_step_span = None;
            }
        }
        if let Some((step, attempt, task)) = &self.coordinator_task {
            if in_flight != Some((*step, *attempt)) {
                tracing::info!(%step, attempt, "coordinator step no longer in flight; stopping it");
                task.abort();
                self.coordinator_task = None;
            }
        }
    }

    /// Performs one action, after the transition that produced it was persisted.
    async fn act(&mut self, action: &Action) {
        match action {
            Action::RunCoordinatorStep { step, attempt, mode } => {
                self.run_coordinator_step(*step, *attempt, *mode)
            }
            Action::SendRunStep { step, attempt } | Action::ResendRunStep { step, attempt } => {
                self.send_run_step(*step, *attempt).await
            }
            Action::CancelAgentStep { step, attempt } => {
                let msg = pb::CoordinatorMessage {
                    message: Some(pb::coordinator_message::Message::CancelStep(pb::CancelStep {
                        operation_id: self.record.id.clone(),
                        step_id: record::step_id(*step),
                        attempt: *attempt,
                        reason: "operation cancelled; rolling back".into(),
                    })),
                };
                let _ = self.engine.inner.sessions.send(&self.cluster, msg);
            }
            // Persisted with the transition.
            Action::SaveOutputs { .. } | Action::RecordEvent { .. } => {}
        }
    }

    /// The span of agent step (`step`, `attempt`): the open one if it is that attempt's, else a
    /// new child of the operation's span.
    fn agent_step_span(&mut self, step: Step, attempt: u32) -> tracing::Span {
        match &self.agent_step_span {
            Some((s, a, span)) if (*s, *a) == (step, attempt) => span.clone(),
            _ => {
                let span = tracing::info_span!("step", %step, attempt, runner = "agent");
                self.agent_step_span = Some((step, attempt, span.clone()));
                span
            }
        }
    }

    async fn send_run_step(&mut self, step: Step, attempt: u32) {
        let span = self.agent_step_span(step, attempt);
        self.send_run_step_in(step, attempt).instrument(span).await
    }

    /// Sends the `RunStep` from inside the step's span, so its `trace_context` names that span.
    async fn send_run_step_in(&mut self, step: Step, attempt: u32) {
        let Some(run) = self
            .params
            .as_ref()
            .and_then(|p| convert::run_step(&self.record.id, step, attempt, p))
        else {
            self.fail_here(
                step,
                attempt,
                "BAD_PARAMETERS",
                "the operation's stored parameters cannot be read; it cannot continue",
            )
            .await;
            return;
        };
        let msg = pb::CoordinatorMessage {
            message: Some(pb::coordinator_message::Message::RunStep(run)),
        };
        if self.engine.inner.sessions.send(&self.cluster, msg) {
            tracing::info!(%step, attempt, "RunStep sent to the agent");
        } else {
            tracing::info!(%step, attempt, "no agent connected; the step is sent when it connects");
            let line = NewEvent {
                at: Timestamp::now(),
                step: Some(record::step_id(step)),
                message: format!(
                    "{step} (attempt {attempt}) waits for the agent of cluster {} to connect",
                    self.cluster
                ),
            };
            let id = self.record.id.clone();
            if let Ok(event) = blocking(&self.engine.inner.store, move |s| s.append_event(&id, line)).await {
                let _ = self.engine.inner.updates.send(Update::Logged {
                    operation: self.record.id.clone(),
                    event,
                });
            }
        }
    }

    /// Reports a failure of (step, attempt) found by the engine itself, as an event.
    async fn fail_here(&mut self, step: Step, attempt: u32, code: &str, message: &str) {
        tracing::error!(%step, attempt, code, "{message}");
        let _ = self.tx.send(Input::event(Event::StepFailed {
            step,
            attempt,
            code: code.into(),
            retryable: false,
            message: message.into(),
        }));
    }

    fn run_coordinator_step(&mut self, step: Step, attempt: u32, mode: RunMode) {
        debug_assert_eq!(step.runner(), Runner::Coordinator);
        if let Some((s, a, task)) = &self.coordinator_task {
            if (*s, *a) == (step, attempt) && !task.is_finished() {
                return;
            }
            task.abort();
        }
        let tx = self.tx.clone();
        let eks = self.engine.inner.eks.get(&self.cluster).cloned();
        let params = self.params.clone();
        let waits = self.engine.inner.options.waits;
        let durations = self.engine.inner.durations.clone();
        let cluster = self.cluster.clone();
        // Preflight and the add-ons read what the agent's Inventory step reported.
        let inventory = convert::inventory_of(&self.record);
        let engine = self.engine.clone();
        let operation = self.record.id.clone();
        let span = tracing::info_span!("step", %step, attempt, runner = "coordinator", ?mode);
        let task = self.engine.spawn_task(
            async move {
                let progress = move |u: &ProgressUpdate| engine.coordinator_progress(&operation, step, attempt, u);
                let outcome = match (eks, params) {
                    (Some(eks), Some(params)) => {
                        let input = eks_steps::StepInput {
                            params: &params,
                            inventory: inventory.as_ref(),
                            progress: &progress,
                            durations: Some(durations),
                        };
                        eks_steps::run(eks.as_ref(), step, mode, &input, &waits).await
                    }
                    (None, _) => Err(eks_steps::Failure {
                        code: "CLUSTER_NOT_CONFIGURED".into(),
                        retryable: false,
                        message: format!(
                            "cluster {cluster} is not in the coordinator's clusters file, so its EKS API cannot be called; add it back and restart"
                        ),
                    }),
                    (_, None) => Err(eks_steps::Failure {
                        code: "BAD_PARAMETERS".into(),
                        retryable: false,
                        message: "the operation's stored parameters cannot be read".into(),
                    }),
                };
                let event = match outcome {
                    Ok(outputs) => {
                        tracing::info!(summary = %outputs.summary, "coordinator step succeeded");
                        Event::StepSucceeded {
                            step,
                            attempt,
                            outputs,
                        }
                    }
                    Err(f) => {
                        tracing::warn!(code = %f.code, retryable = f.retryable, "coordinator step failed: {}", f.message);
                        Event::StepFailed {
                            step,
                            attempt,
                            code: f.code,
                            retryable: f.retryable,
                            message: f.message,
                        }
                    }
                };
                let _ = tx.send(Input::event(event));
            }
            .instrument(span),
        );
        self.coordinator_task = Some((step, attempt, task));
    }
}

#[cfg(test)]
mod tests;
