//! The rollout runner: one task per unfinished rollout owns its state machine
//! ([`crate::rollout::state`]), turns operator commands, operation changes, agent
//! (dis)connections and deadlines into events, persists the new state (compare-and-swap) with its
//! log lines, and only then acts — ensures operations exist through the [`Engine`] (with the
//! machine's operation ids), cancels them, or halts them.
//!
//! - **Batching.** After an input the task waits [`COMMIT_WINDOW`] (not for operator commands),
//!   then applies everything queued before one write: a burst of operation changes (or a tick
//!   that moves many clusters) costs one store write per rollout. The write holds only the
//!   clusters that changed ([`Store::commit_rollout`]). Nothing is written when the machine did
//!   not change.
//! - **Ensure.** `StartOperation` creates the operation with the machine's id unless it exists;
//!   an existing one is reported started, and, if it already ended, finished. A cluster busy with
//!   an operation the rollout did not start fails with `CLUSTER_BUSY`; a cluster whose operation
//!   cannot be planned (its parameters do not fit it) fails with `INVALID_PARAMETERS`.
//! - **Outcomes.** An operation's end maps to the machine's [`Outcome`]: succeeded; failed with
//!   its step, code and reason; cancelled or rolled back — `Halted` when the rollout had asked it
//!   to halt, `Cancelled` otherwise.
//! - **Restart.** [`Rollouts::resume_all`] reloads every unfinished rollout and sends
//!   [`Event::Restarted`] (the machine re-issues what was in flight; ensure makes that safe),
//!   then marks the clusters whose agents are not connected (yet) as disconnected.
//! - **Watchers** get every committed state ([`Rollouts::subscribe`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flotilla_proto::telemetry;
use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{record, Engine, EngineError, Update};
use crate::config::ClustersFile;
use crate::eks::Eks;
use crate::fleet;
use crate::operation::OperationState as Machine;
use crate::params::UpgradeParams;
use crate::rollout::convert::migration_to_proto;
use crate::rollout::state::Stop;
use crate::rollout::{
    Action, ClusterFacts, ClusterInventory, CommandError, Event, OperationWork, Outcome, Phase, Rollout,
    RolloutSpec,
};
use crate::sessions::Sessions;
use crate::store::{NewRolloutEvent, OperationRecord, RolloutRecord, Store, StoreError};
use crate::upgrade::MinorVersion;

/// Errors from the rollouts API.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such rollout.
    #[error("rollout {0} not found")]
    NotFound(String),
    /// The command cannot be applied in the rollout's current state.
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The coordinator is shutting down.
    #[error("the coordinator is shutting down")]
    Stopped,
}

/// One input to a rollout's task.
enum Input {
    /// A machine event (operation changes, agents, ticks).
    Event(Event),
    /// An operator command: checked against the current state, applied, persisted, answered.
    Command {
        event: Event,
        reply: oneshot::Sender<Result<RolloutRecord, RolloutError>>,
    },
    /// A changed operation of this rollout.
    Operation(Arc<OperationRecord>),
    /// Updates were missed: re-read every running operation.
    Resync,
}

/// How long a rollout's task waits after an input (other than an operator command) for more to
/// arrive before it applies and writes them together. Bounds the writes of a busy rollout to
/// about 1 / COMMIT_WINDOW per second, whatever the fleet's size, at the price of reacting up
/// to this much later.
pub const COMMIT_WINDOW: Duration = Duration::from_millis(50);

/// How many rollouts that ended are kept in memory for reads ([`Rollouts::get`]).
const FINISHED_KEPT: usize = 8;

struct Inner<E> {
    engine: Engine<E>,
    clusters: Arc<ClustersFile>,
    actors: Mutex<HashMap<String, mpsc::UnboundedSender<Input>>>,
    /// The last committed state of every rollout a task runs (what the store holds), so reads
    /// need not decode it from the store.
    latest: Mutex<HashMap<String, Arc<RolloutRecord>>>,
    /// The last few rollouts that ended in this process, newest last: operators and dashboards
    /// keep reading a rollout that just ended, and decoding a big one from the store each time
    /// costs milliseconds.
    finished: Mutex<VecDeque<Arc<RolloutRecord>>>,
    updates: broadcast::Sender<Arc<RolloutRecord>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
}

/// The rollout runner; cheap to clone (one shared state).
pub struct Rollouts<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Rollouts<E> {
    fn clone(&self) -> Self {
        Rollouts {
            inner: self.inner.clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new rollout id: sortable by creation time, then random.
pub fn new_rollout_id(now: Timestamp) -> String {
    format!(
        "ro-{:013}-{:06x}",
        now.as_millisecond().max(0),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// Runs a store call off the async threads.
async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    super::blocking(store, f).await
}

/// What the machine needs to know about a cluster's inventory.
fn cluster_inventory(inv: &flotilla_proto::fleet::v1::Inventory) -> ClusterInventory {
    ClusterInventory {
        version: inv.version.clone(),
        self_managed_nodegroups: inv
            .node_groups
            .iter()
            .filter(|g| g.kind == flotilla_proto::fleet::v1::NodeGroupKind::SelfManaged as i32)
            .map(|g| g.name.clone())
            .collect(),
    }
}

/// How an operation that ended ended, as the rollout machine takes it; `None` while it runs.
/// `halted`: the rollout asked it to halt (a cancelled end is then `Halted`).
pub fn outcome_of(r: &OperationRecord, halted: bool) -> Option<Outcome> {
    match r.machine.as_ref()? {
        Machine::Succeeded => Some(Outcome::Succeeded),
        Machine::Failed { step, error } => Some(Outcome::Failed {
            step: step.to_string(),
            code: Some(error.code.clone()),
            reason: format!("{}: {}", error.code, error.message),
        }),
        Machine::Cancelled | Machine::RolledBack { .. } if halted => Some(Outcome::Halted),
        Machine::Cancelled | Machine::RolledBack { .. } => Some(Outcome::Cancelled),
        _ => None,
    }
}

impl<E: Eks + 'static> Rollouts<E> {
    /// The runner over the engine and the configured clusters. Call [`Rollouts::resume_all`] once
    /// the engine has resumed its operations.
    pub fn new(engine: Engine<E>, clusters: Arc<ClustersFile>) -> Self {
        let (updates, _) = broadcast::channel(1024);
        let (shutdown, _) = watch::channel(false);
        let r = Rollouts {
            inner: Arc::new(Inner {
                engine,
                clusters,
                actors: Mutex::default(),
                latest: Mutex::default(),
                finished: Mutex::default(),
                updates,
                shutdown,
                tasks: Mutex::new(JoinSet::new()),
            }),
        };
        let router = r.clone();
        let updates = r.inner.engine.subscribe();
        r.spawn_task(router.route(updates));
        r
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.inner.engine.store()
    }

    fn sessions(&self) -> &Arc<Sessions> {
        self.inner.engine.sessions()
    }

    /// Every committed rollout state from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RolloutRecord>> {
        self.inner.updates.subscribe()
    }

    /// What the machine knows of every configured cluster now: labels, agent, inventory.
    pub fn cluster_facts(&self) -> Vec<ClusterFacts> {
        self.inner
            .clusters
            .clusters
            .iter()
            .map(|c| {
                let info = self.sessions().info(&c.name);
                ClusterFacts {
                    name: c.name.clone(),
                    labels: c
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<BTreeMap<_, _>>(),
                    connected: info.connected,
                    last_seen: info.last_seen,
                    inventory: info.inventory.as_deref().map(cluster_inventory),
                }
            })
            .collect()
    }

    /// Stores a new rollout of `spec` and starts it over the fleet as it is now.
    pub async fn create(&self, spec: RolloutSpec, created_by: String) -> Result<RolloutRecord, RolloutError> {
        let now = Timestamp::now();
        let rollout = Rollout::new(new_rollout_id(now), spec, created_by, now);
        let rec = RolloutRecord {
            rollout,
            updated_at: now,
            version: 0,
            traceparent: telemetry::traceparent(&tracing::Span::current()),
        };
        let created = blocking(self.store(), move |s| s.create_rollout(&rec)).await?;
        self.inner
            .engine
            .metrics()
            .rollout_moved(None, created.rollout.state());
        tracing::info!(rollout = %created.rollout.id, name = %created.rollout.spec.name, created_by = %created.rollout.created_by, "rollout created");
        let facts = self.cluster_facts();
        self.command_on(created, Event::Start { clusters: facts }).await
    }

    /// The rollout `id`: its last committed state.
    pub async fn get(&self, id: &str) -> Result<Arc<RolloutRecord>, RolloutError> {
        if let Some(r) = lock(&self.inner.latest).get(id) {
            return Ok(r.clone());
        }
        if let Some(r) = lock(&self.inner.finished).iter().find(|r| r.rollout.id == id) {
            return Ok(r.clone());
        }
        let key = id.to_string();
        blocking(self.store(), move |s| s.get_rollout(&key))
            .await?
            .map(Arc::new)
            .ok_or_else(|| RolloutError::NotFound(id.to_string()))
    }

    /// Every rollout, ordered by id (oldest first).
    pub async fn list(&self) -> Result<Vec<RolloutRecord>, RolloutError> {
        Ok(blocking(self.store(), |s| s.list_rollouts()).await?)
    }

    /// Applies an operator command (pause, resume, cancel, approve) once [`Rollout::check`]
    /// allows it; answers with the committed state.
    pub async fn command(&self, id: &str, event: Event) -> Result<RolloutRecord, RolloutError> {
        let record = RolloutRecord::clone(&*self.get(id).await?);
        if record.rollout.is_final() {
            // Nothing runs it; the check explains (or the command is a repeat that took effect).
            record.rollout.check(&event, Timestamp::now())?;
            return Ok(record);
        }
        self.command_on(record, event).await
    }

    async fn command_on(&self, record: RolloutRecord, event: Event) -> Result<RolloutRecord, RolloutError> {
        let (reply, rx) = oneshot::channel();
        self.send(record, Input::Command { event, reply });
        rx.await.unwrap_or(Err(RolloutError::Stopped))
    }

    /// Reloads every unfinished rollout and continues it ([`Event::Restarted`]). Returns how many.
    pub async fn resume_all(&self) -> Result<usize, RolloutError> {
        let all = self.list().await?;
        let metrics = self.inner.engine.metrics();
        for record in &all {
            metrics.rollout_moved(None, record.rollout.state());
        }
        let mut n = 0;
        for record in all.into_iter().filter(|r| !r.rollout.is_final()) {
            tracing::info!(rollout = %record.rollout.id, state = %record.rollout.state(), "resuming rollout");
            let away: Vec<String> = record
                .rollout
                .clusters()
                .map(|(_, c)| c.name.clone())
                .filter(|c| !self.sessions().info(c).connected)
                .collect();
            let id = record.rollout.id.clone();
            // Stored, but the coordinator stopped before its start was committed: start it now
            // (`Start` is ignored by a rollout that has started).
            let never_started = record.rollout.phase == Phase::Pending;
            self.send(record, Input::Event(Event::Restarted));
            if never_started {
                let clusters = self.cluster_facts();
                self.to_rollout(&id, Input::Event(Event::Start { clusters }));
            }
            for cluster in away {
                self.to_rollout(&id, Input::Event(Event::AgentDisconnected { cluster }));
            }
            n += 1;
        }
        Ok(n)
    }

    /// Stops every rollout task (their state is persisted; a restart resumes them).
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.inner.tasks);
        while tasks.try_join_next().is_some() {}
        if !*self.inner.shutdown.borrow() {
            tasks.spawn(task);
        }
    }

    fn to_rollout(&self, id: &str, input: Input) {
        if let Some(tx) = lock(&self.inner.actors).get(id) {
            let _ = tx.send(input);
        }
    }

    fn to_all(&self, input: impl Fn() -> Input) {
        for tx in lock(&self.inner.actors).values() {
            let _ = tx.send(input());
        }
    }

    /// Queues `input` for the rollout's task, starting one (from `record`) if it has none.
    fn send(&self, record: RolloutRecord, input: Input) {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut actors = lock(&self.inner.actors);
            if let Some(a) = actors.get(&record.rollout.id) {
                let _ = a.send(input);
                return;
            }
            let _ = tx.send(input);
            actors.insert(record.rollout.id.clone(), tx.clone());
        }
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!("rollout", rollout = %record.rollout.id);
        // Under the CreateRollout call's span, also when resumed after a restart: one trace.
        if let Some(tp) = &record.traceparent {
            telemetry::set_parent(&span, telemetry::extract_traceparent(tp));
        }
        let worker = Worker {
            rollouts: self.clone(),
            rollout_id: record.rollout.id.clone(),
            created_by: record.rollout.created_by.clone(),
            tx: tx.clone(),
        };
        self.spawn_task(worker.run(work_rx).instrument(span.clone()));
        let actor = Actor {
            rollouts: self.clone(),
            record,
            work: work_tx,
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

    /// Forwards the engine's updates to the rollouts they concern.
    async fn route(self, mut updates: broadcast::Receiver<Update>) {
        loop {
            match updates.recv().await {
                Ok(Update::Changed(op)) => {
                    if let Some(id) = op.rollout_id.clone() {
                        self.to_rollout(&id, Input::Operation(op));
                    }
                }
                Ok(Update::AgentConnected { cluster }) => {
                    let inventory = self
                        .sessions()
                        .info(&cluster)
                        .inventory
                        .as_deref()
                        .map(cluster_inventory);
                    self.to_all(|| {
                        Input::Event(Event::AgentConnected {
                            cluster: cluster.clone(),
                            inventory: inventory.clone(),
                        })
                    });
                }
                Ok(Update::AgentDisconnected { cluster }) => {
                    self.to_all(|| {
                        Input::Event(Event::AgentDisconnected {
                            cluster: cluster.clone(),
                        })
                    });
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "rollout runner fell behind the engine; re-reading running operations"
                    );
                    self.to_all(|| Input::Resync);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// One rollout's task: the only writer of its record.
struct Actor<E> {
    rollouts: Rollouts<E>,
    record: RolloutRecord,
    /// The actions to perform, in order, by this rollout's worker.
    work: mpsc::UnboundedSender<Action>,
}

impl<E: Eks + 'static> Actor<E> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        // Start from the stored record if a previous task of this rollout committed after ours
        // was read.
        let id = self.record.rollout.id.clone();
        if let Ok(Some(stored)) = blocking(self.rollouts.store(), move |s| s.get_rollout(&id)).await {
            if stored.version > self.record.version {
                self.record = stored;
            }
        }
        self.share();
        loop {
            let deadline = self.record.rollout.next_deadline();
            let first = tokio::select! {
                i = rx.recv() => match i {
                    Some(i) => i,
                    None => break,
                },
                _ = sleep_until(deadline) => Input::Event(Event::Tick),
            };
            if !matches!(first, Input::Command { .. }) {
                // Let what comes with it arrive: one write for the lot.
                tokio::time::sleep(COMMIT_WINDOW).await;
            }
            let mut batch = vec![first];
            while let Ok(i) = rx.try_recv() {
                batch.push(i);
            }
            self.handle(batch).await;
            if self.record.rollout.is_final() {
                let mut actors = lock(&self.rollouts.inner.actors);
                if rx.is_empty() {
                    actors.remove(&self.record.rollout.id);
                    // Kept among the few just finished; read from the store once it drops out.
                    let last = lock(&self.rollouts.inner.latest).remove(&self.record.rollout.id);
                    let mut finished = lock(&self.rollouts.inner.finished);
                    finished.retain(|r| r.rollout.id != self.record.rollout.id);
                    finished.push_back(last.unwrap_or_else(|| Arc::new(self.record.clone())));
                    while finished.len() > FINISHED_KEPT {
                        finished.pop_front();
                    }
                    break;
                }
            }
        }
    }

    /// Publishes the current record as the rollout's last committed state.
    fn share(&self) -> Arc<RolloutRecord> {
        let shared = Arc::new(self.record.clone());
        lock(&self.rollouts.inner.latest).insert(self.record.rollout.id.clone(), shared.clone());
        shared
    }

    async fn handle(&mut self, batch: Vec<Input>) {
        let now = Timestamp::now();
        let before = self.record.rollout.clone();
        let mut rollout = before.clone();
        let mut actions = Vec::new();
        let mut replies = Vec::new();
        for input in batch {
            let events = match input {
                Input::Event(e) => vec![e],
                // Judged against the state as it is now, with this batch applied so far.
                Input::Operation(op) => operation_events(&rollout, &op),
                Input::Resync => resync(self.rollouts.store(), &rollout).await,
                Input::Command { event, reply } => {
                    if let Err(e) = rollout.check(&event, now) {
                        let _ = reply.send(Err(e.into()));
                        continue;
                    }
                    replies.push(reply);
                    vec![event]
                }
            };
            for event in &events {
                actions.extend(rollout.apply(event, now));
            }
        }
        let lines: Vec<NewRolloutEvent> = actions
            .iter()
            .filter_map(|a| match a {
                Action::RecordEvent { cluster, message } => Some(NewRolloutEvent {
                    at: now,
                    cluster: cluster.clone(),
                    message: message.clone(),
                }),
                _ => None,
            })
            .collect();
        // Clusters are shared copy-on-write with `before`: this compares one pointer per cluster
        // that did not change, and the store writes only those that did.
        if rollout != before {
            let prev = self.record.clone();
            let committed = blocking(self.rollouts.store(), move |s| {
                s.commit_rollout(&prev, &rollout, now, &lines)
            })
            .await;
            match committed {
                Ok((rec, _)) => {
                    self.rollouts
                        .inner
                        .engine
                        .metrics()
                        .rollout_moved(Some(before.state()), rec.rollout.state());
                    self.record = rec;
                    let shared = self.share();
                    let _ = self.rollouts.inner.updates.send(shared);
                }
                Err(e) => {
                    // Nothing is done: commands are answered with the error; operation changes
                    // are re-read at the next resync.
                    tracing::error!(error = %e, "could not persist the rollout's transition; not acting on it");
                    let id = before.id.clone();
                    if let Ok(Some(stored)) =
                        blocking(self.rollouts.store(), move |s| s.get_rollout(&id)).await
                    {
                        self.record = stored;
                        self.share();
                    }
                    let msg = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(RolloutError::Store(StoreError::backend(
                            std::io::Error::other(msg.clone()),
                        ))));
                    }
                    return;
                }
            }
        }
        for a in actions {
            match a {
                Action::RecordEvent { cluster, message } => {
                    tracing::info!(cluster = cluster.as_deref().unwrap_or(""), "{message}");
                }
                other => {
                    let _ = self.work.send(other);
                }
            }
        }
        for reply in replies {
            let _ = reply.send(Ok(self.record.clone()));
        }
    }
}

/// The events an operation change means for the machine in state `rollout`.
fn operation_events(rollout: &Rollout, op: &OperationRecord) -> Vec<Event> {
    let cluster = &op.cluster;
    let Some((k, i)) = rollout.find(cluster) else {
        return Vec::new();
    };
    let c = &rollout.stages[k].clusters[i];
    let Some(current) = c.operation.as_ref().filter(|o| o.id == op.id && o.running) else {
        return Vec::new();
    };
    let halted = current.stop == Some(Stop::Halt);
    if let Some(outcome) = outcome_of(op, halted) {
        return vec![Event::OperationFinished {
            cluster: cluster.clone(),
            operation_id: op.id.clone(),
            outcome,
        }];
    }
    match op.machine.as_ref().and_then(Machine::in_flight) {
        Some((step, _)) if c.step.as_deref() != Some(step.to_string().as_str()) => vec![Event::StepChanged {
            cluster: cluster.clone(),
            operation_id: op.id.clone(),
            step: step.to_string(),
        }],
        _ => Vec::new(),
    }
}

/// Re-reads every running operation of `rollout` (after missed updates).
async fn resync(store: &Arc<dyn Store>, rollout: &Rollout) -> Vec<Event> {
    let ids: Vec<String> = rollout
        .clusters()
        .filter_map(|(_, c)| c.operation.as_ref().filter(|o| o.running).map(|o| o.id.clone()))
        .collect();
    let ops = blocking(store, move |s| {
        ids.iter()
            .map(|id| s.get_operation(id))
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    match ops {
        Ok(ops) => ops
            .iter()
            .flatten()
            .flat_map(|op| operation_events(rollout, op))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot re-read the rollout's operations");
            Vec::new()
        }
    }
}

/// Sleeps until `deadline` (forever when there is none).
async fn sleep_until(deadline: Option<Timestamp>) {
    match deadline {
        Some(t) => {
            let ms = t
                .as_millisecond()
                .saturating_sub(Timestamp::now().as_millisecond())
                .max(0);
            // A little past the deadline, so the machine sees it reached.
            tokio::time::sleep(Duration::from_millis(ms as u64 + 5)).await;
        }
        None => std::future::pending().await,
    }
}

/// Performs one rollout's actions in order, reporting back as events.
struct Worker<E> {
    rollouts: Rollouts<E>,
    rollout_id: String,
    created_by: String,
    tx: mpsc::UnboundedSender<Input>,
}

impl<E: Eks + 'static> Worker<E> {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Action>) {
        while let Some(action) = rx.recv().await {
            match action {
                Action::StartOperation {
                    cluster,
                    operation_id,
                    work,
                } => self.ensure(cluster, operation_id, work).await,
                Action::CancelOperation {
                    cluster,
                    operation_id,
                } => self.stop(cluster, operation_id, Stop::Cancel),
                Action::HaltOperation {
                    cluster,
                    operation_id,
                } => self.stop(cluster, operation_id, Stop::Halt),
                Action::RecordEvent { .. } => {}
            }
        }
    }

    /// Delivers a cancel or halt to an operation, in the background so other clusters' actions
    /// do not wait. An operation that does not exist (its start failed) is reported cancelled; a
    /// delivery the store could not take is retried (0.5 s doubling to 30 s) until it lands or
    /// the coordinator stops, so the rollout never waits on an operation that was not told.
    fn stop(&self, cluster: String, operation_id: String, stop: Stop) {
        let engine = self.rollouts.inner.engine.clone();
        let tx = self.tx.clone();
        let reason = match stop {
            Stop::Cancel => format!("rollout {} cancelled", self.rollout_id),
            Stop::Halt => format!("rollout {} halted", self.rollout_id),
        };
        self.rollouts.spawn_task(async move {
            let mut wait = Duration::from_millis(500);
            loop {
                let delivered = match stop {
                    Stop::Cancel => engine.cancel(&operation_id, &reason).await,
                    Stop::Halt => engine.halt(&operation_id, &reason).await,
                };
                match delivered {
                    Ok(_) | Err(EngineError::Stopped) => return,
                    Err(EngineError::CancelRefused { reason, .. }) => {
                        tracing::info!(%cluster, operation = %operation_id, %reason, "cancel refused; the operation runs to its end");
                        return;
                    }
                    Err(EngineError::NotFound(_)) => {
                        let _ = tx.send(Input::Event(Event::OperationFinished {
                            cluster,
                            operation_id,
                            outcome: Outcome::Cancelled,
                        }));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%cluster, operation = %operation_id, error = %e, ?stop, retry_in = ?wait, "stop not delivered; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }

    fn report(&self, event: Event) {
        let _ = self.tx.send(Input::Event(event));
    }

    fn failed(&self, cluster: &str, operation_id: &str, code: &str, reason: String) {
        tracing::warn!(%cluster, operation = %operation_id, code, "{reason}");
        self.report(Event::OperationFinished {
            cluster: cluster.to_string(),
            operation_id: operation_id.to_string(),
            outcome: Outcome::Failed {
                step: "StartOperation".into(),
                code: Some(code.to_string()),
                reason: format!("{code}: {reason}"),
            },
        });
    }

    /// Ensures operation `operation_id` exists on `cluster` (creating it unless it does) and
    /// reports it started, and finished if it already ended.
    async fn ensure(&self, cluster: String, operation_id: String, work: OperationWork) {
        let engine = &self.rollouts.inner.engine;
        let existing = {
            let id = operation_id.clone();
            blocking(engine.store(), move |s| s.get_operation(&id)).await
        };
        let existing = match existing {
            Ok(e) => e,
            Err(e) => {
                self.failed(&cluster, &operation_id, "STORE", e.to_string());
                return;
            }
        };
        let record = match existing {
            Some(r) => r,
            None => {
                let planned = match self.plan(&cluster, &operation_id, &work) {
                    Ok(r) => r,
                    Err(reason) => {
                        self.failed(&cluster, &operation_id, "INVALID_PARAMETERS", reason);
                        return;
                    }
                };
                match engine.start(planned).await {
                    Ok(r) => r,
                    Err(EngineError::Busy { operation, .. }) => {
                        self.failed(
                            &cluster,
                            &operation_id,
                            "CLUSTER_BUSY",
                            format!(
                                "cluster {cluster} is busy with operation {operation}, which this rollout did not start; let it end (or cancel it), then create a new rollout for this cluster"
                            ),
                        );
                        return;
                    }
                    Err(EngineError::Stopped) => return,
                    Err(EngineError::Store(StoreError::Exists(_))) => {
                        let id = operation_id.clone();
                        match blocking(engine.store(), move |s| s.get_operation(&id)).await {
                            Ok(Some(r)) => r,
                            _ => return,
                        }
                    }
                    Err(e) => {
                        self.failed(&cluster, &operation_id, "START_FAILED", e.to_string());
                        return;
                    }
                }
            }
        };
        self.report(Event::OperationStarted {
            cluster: cluster.clone(),
            operation_id: operation_id.clone(),
        });
        // Its end (or its current step) comes from the record as it is now; later changes
        // arrive from the engine's updates.
        let _ = self.tx.send(Input::Operation(Arc::new(record)));
    }

    /// The operation record for `work`, with the machine's id.
    fn plan(
        &self,
        cluster: &str,
        operation_id: &str,
        work: &OperationWork,
    ) -> Result<OperationRecord, String> {
        let now = Timestamp::now();
        match work {
            OperationWork::Migration(spec) => fleet::plan_migration(
                self.rollouts.sessions(),
                cluster,
                &migration_to_proto(spec),
                operation_id.to_string(),
                self.created_by.clone(),
                Some(self.rollout_id.clone()),
            )
            .map_err(|s| s.message().to_string()),
            OperationWork::Upgrade {
                from,
                to,
                force,
                goal,
            } => {
                let params = UpgradeParams {
                    from: MinorVersion::new(from.major, from.minor),
                    target: MinorVersion::new(to.major, to.minor),
                    force: *force,
                    goal: (goal != to).then(|| MinorVersion::new(goal.major, goal.minor)),
                };
                Ok(record::new_upgrade(
                    operation_id.to_string(),
                    cluster,
                    &params,
                    self.created_by.clone(),
                    Some(self.rollout_id.clone()),
                    now,
                ))
            }
        }
    }
}
