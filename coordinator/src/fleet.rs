//! The `Fleet` gRPC service operators and tools call: clusters (with their agents' sessions and
//! inventories), and per-cluster operations — start (everything validated before anything is
//! written), get, list, watch (stored log lines, then live step changes and progress) and cancel.
//! Viewers may read; only role `operator` may start or cancel. Rollout calls answer Unimplemented
//! until the rollout scheduler fills them in.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::fleet_server::Fleet;
use futures::Stream;
use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{self, Access};
use crate::config::ClustersFile;
use crate::convert;
use crate::eks::Eks;
use crate::engine::{new_operation_id, record, Engine, EngineError, Update};
use crate::params::MigrationParams;
use crate::selector::Selector;
use crate::sessions::Sessions;
use crate::store::{EventRecord, OperationRecord, Store, StoreError};

/// Default and largest `page_size` of ListOperations.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The `Fleet` service.
pub struct FleetService<E> {
    engine: Engine<E>,
    sessions: Arc<Sessions>,
    clusters: Arc<ClustersFile>,
}

impl<E: Eks + 'static> FleetService<E> {
    /// The service over the engine, the agents' sessions and the configured clusters.
    pub fn new(engine: Engine<E>, sessions: Arc<Sessions>, clusters: Arc<ClustersFile>) -> Self {
        FleetService {
            engine,
            sessions,
            clusters,
        }
    }

    fn cluster_proto(&self, name: &str) -> Option<pb::Cluster> {
        let c = self.clusters.get(name)?;
        Some(convert::cluster(
            c,
            &self.sessions.info(name),
            self.engine.current_operation(name),
        ))
    }

    fn unknown_cluster(&self, field: &str, name: &str) -> Status {
        let known: Vec<&str> = self
            .clusters
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .take(20)
            .collect();
        Status::not_found(format!(
            "{field}: cluster {name:?} not found; known clusters: {}",
            if known.is_empty() {
                "none (the clusters file lists none)".to_string()
            } else {
                known.join(", ")
            }
        ))
    }

    async fn get_record(&self, id: &str) -> Result<OperationRecord, Status> {
        if id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "operation_id: empty; pass an operation id (op-…)",
            ));
        }
        let store = self.engine.store().clone();
        let key = id.to_string();
        match read(store, move |s| s.get_operation(&key)).await? {
            Some(r) => Ok(r),
            None => Err(Status::not_found(format!(
                "operation_id: operation {id:?} not found"
            ))),
        }
    }

    fn operation_proto(&self, r: &OperationRecord) -> pb::Operation {
        convert::operation(r, self.engine.live_progress(&r.id).as_ref())
    }

    /// Builds (without storing) the migration of `cluster` that `params` asks for, checking every
    /// field; errors name it under `work.migration`.
    pub fn plan_migration(
        &self,
        cluster: &str,
        params: &pb::MigrationParams,
        created_by: String,
        rollout_id: Option<String>,
    ) -> Result<OperationRecord, Status> {
        let bad = |e: crate::params::ParamError| {
            Status::invalid_argument(format!("work.migration.{}: {}", e.field, e.message))
        };
        let mut p: MigrationParams = convert::migration_params(params).map_err(bad)?;
        let inventory = self.sessions.info(cluster).inventory;
        let self_managed: Vec<&str> = inventory
            .iter()
            .flat_map(|i| i.node_groups.iter())
            .filter(|g| g.kind == pb::NodeGroupKind::SelfManaged as i32)
            .map(|g| g.name.as_str())
            .collect();
        if p.from_nodegroup.is_empty() {
            p.from_nodegroup = match (&inventory, self_managed.as_slice()) {
                (Some(_), [one]) => one.to_string(),
                (None, _) => {
                    return Err(Status::invalid_argument(format!(
                        "work.migration.fromNodegroup: empty, and cluster {cluster}'s agent has not reported an inventory to pick its only self-managed group from; name the group"
                    )))
                }
                (Some(_), groups) => {
                    return Err(Status::invalid_argument(format!(
                        "work.migration.fromNodegroup: empty, and cluster {cluster} has {} self-managed node groups ({}); name one",
                        groups.len(),
                        groups.join(", ")
                    )))
                }
            };
        } else if inventory.is_some() && !self_managed.contains(&p.from_nodegroup.as_str()) {
            return Err(Status::invalid_argument(format!(
                "work.migration.fromNodegroup: cluster {cluster} has no self-managed node group {:?} (its agent reports: {})",
                p.from_nodegroup,
                if self_managed.is_empty() {
                    "none".to_string()
                } else {
                    self_managed.join(", ")
                }
            )));
        }
        p.validate().map_err(bad)?;
        let now = Timestamp::now();
        Ok(record::new_migration(
            new_operation_id(now),
            cluster,
            &p,
            created_by,
            rollout_id,
            now,
        ))
    }
}

/// A store read off the async threads, as a gRPC status on failure.
async fn read<T: Send + 'static>(
    store: Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store read failed");
            Err(Status::internal(format!("store: {e}")))
        }
        Err(e) => Err(Status::internal(format!("store task: {e}"))),
    }
}

/// The engine's errors as gRPC statuses.
pub fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::NotFound(id) => Status::not_found(format!("operation_id: operation {id:?} not found")),
        e @ (EngineError::Busy { .. } | EngineError::CancelRefused { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        EngineError::Stopped => Status::unavailable("the coordinator is shutting down; retry"),
        EngineError::Store(e) => {
            tracing::error!(error = %e, "store failed");
            Status::internal(format!("store: {e}"))
        }
    }
}

type Watch = Pin<Box<dyn Stream<Item = Result<pb::OperationEvent, Status>> + Send>>;
type RolloutWatch = Pin<Box<dyn Stream<Item = Result<pb::RolloutEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<E: Eks + 'static> Fleet for FleetService<E> {
    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        auth::operator(&request, "Fleet/ListClusters", Access::Read)?;
        let selector = Selector::parse(&request.get_ref().label_selector)
            .map_err(|e| Status::invalid_argument(format!("label_selector: {e}")))?;
        let mut busy = self.engine.current_operations();
        let mut clusters: Vec<pb::Cluster> = self
            .clusters
            .clusters
            .iter()
            .filter(|c| selector.matches(&c.labels))
            .map(|c| convert::cluster(c, &self.sessions.info(&c.name), busy.remove(&c.name)))
            .collect();
        clusters.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(pb::ListClustersResponse { clusters }))
    }

    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        auth::operator(&request, "Fleet/GetCluster", Access::Read)?;
        let id = &request.get_ref().cluster_id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("cluster_id: empty; pass a cluster name"));
        }
        self.cluster_proto(id)
            .map(Response::new)
            .ok_or_else(|| self.unknown_cluster("cluster_id", id))
    }

    async fn start_operation(
        &self,
        request: Request<pb::StartOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = auth::operator(&request, "Fleet/StartOperation", Access::Mutate)?;
        let req = request.into_inner();
        if req.cluster_id.trim().is_empty() {
            return Err(Status::invalid_argument("cluster_id: empty; pass a cluster name"));
        }
        if self.clusters.get(&req.cluster_id).is_none() {
            return Err(self.unknown_cluster("cluster_id", &req.cluster_id));
        }
        let record = match req.work.and_then(|w| w.kind) {
            None => {
                return Err(Status::invalid_argument(
                    "work: missing; set work.migration (or work.upgrade) with its parameters",
                ))
            }
            Some(pb::work::Kind::Upgrade(_)) => {
                return Err(Status::unimplemented(
                    "work.upgrade: Kubernetes upgrades are not available in this coordinator yet; only migrations can be started",
                ))
            }
            Some(pb::work::Kind::Migration(m)) => {
                self.plan_migration(&req.cluster_id, &m, caller.uri(), None)?
            }
        };
        if let Some(op) = self.engine.current_operation(&req.cluster_id) {
            return Err(Status::failed_precondition(format!(
                "cluster {} already has operation {op} in progress; wait for it to end or cancel it",
                req.cluster_id
            )));
        }
        if req.dry_run {
            return Ok(Response::new(self.operation_proto(&record)));
        }
        let started = self.engine.start(record).await.map_err(engine_status)?;
        Ok(Response::new(self.operation_proto(&started)))
    }

    async fn get_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        auth::operator(&request, "Fleet/GetOperation", Access::Read)?;
        let r = self.get_record(&request.get_ref().operation_id).await?;
        Ok(Response::new(self.operation_proto(&r)))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        auth::operator(&request, "Fleet/ListOperations", Access::Read)?;
        let req = request.into_inner();
        let cluster = (!req.cluster_id.is_empty()).then_some(req.cluster_id.clone());
        if let Some(c) = &cluster {
            if self.clusters.get(c).is_none() {
                return Err(self.unknown_cluster("cluster_id", c));
            }
        }
        if !req.page_token.is_empty() && !req.page_token.starts_with("op-") {
            return Err(Status::invalid_argument(
                "page_token: not a token from a previous ListOperations response",
            ));
        }
        let page = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let store = self.engine.store().clone();
        let mut ops = read(store, move |s| s.list_operations(cluster.as_deref())).await?;
        ops.retain(|o| req.rollout_id.is_empty() || o.rollout_id.as_deref() == Some(req.rollout_id.as_str()));
        // Ids sort by creation time: newest first.
        ops.sort_by(|a, b| b.id.cmp(&a.id));
        if !req.page_token.is_empty() {
            ops.retain(|o| o.id.as_str() < req.page_token.as_str());
        }
        let next_page_token = if ops.len() > page {
            ops.truncate(page);
            ops.last().map(|o| o.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListOperationsResponse {
            operations: ops.iter().map(|o| self.operation_proto(o)).collect(),
            next_page_token,
        }))
    }

    type WatchOperationStream = Watch;

    async fn watch_operation(
        &self,
        request: Request<pb::WatchOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        auth::operator(&request, "Fleet/WatchOperation", Access::Read)?;
        let req = request.into_inner();
        // Subscribe before reading, so nothing committed in between is missed.
        let updates = self.engine.subscribe();
        let record = self.get_record(&req.operation_id).await?;
        let store = self.engine.store().clone();
        let id = record.id.clone();
        let events = read(store, move |s| s.list_events(&id, 0)).await?;
        let (tx, rx) = mpsc::channel(256);
        let watcher = Watcher {
            engine: self.engine.clone(),
            id: record.id.clone(),
            last: 0,
            steps: BTreeMap::new(),
            state: pb::OperationState::Unspecified,
            tx,
        };
        tokio::spawn(watcher.run(record, events, req.since_sequence, updates));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_operation(
        &self,
        request: Request<pb::CancelOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = auth::operator(&request, "Fleet/CancelOperation", Access::Mutate)?;
        let req = request.into_inner();
        let record = self.get_record(&req.operation_id).await?;
        let reason = if req.reason.is_empty() {
            format!("by {}", caller.uri())
        } else {
            format!("{} (by {})", req.reason, caller.uri())
        };
        let r = self
            .engine
            .cancel(&record.id, &reason)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(self.operation_proto(&r)))
    }

    // === Rollouts: the rollout scheduler (coordinator/src/rollout) fills these in. ===

    async fn create_rollout(
        &self,
        request: Request<pb::CreateRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        auth::operator(&request, "Fleet/CreateRollout", Access::Mutate)?;
        Err(rollouts_not_yet())
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        auth::operator(&request, "Fleet/GetRollout", Access::Read)?;
        Err(rollouts_not_yet())
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        auth::operator(&request, "Fleet/ListRollouts", Access::Read)?;
        Err(rollouts_not_yet())
    }

    type WatchRolloutStream = RolloutWatch;

    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        auth::operator(&request, "Fleet/WatchRollout", Access::Read)?;
        Err(rollouts_not_yet())
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        auth::operator(&request, "Fleet/PauseRollout", Access::Mutate)?;
        Err(rollouts_not_yet())
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        auth::operator(&request, "Fleet/ResumeRollout", Access::Mutate)?;
        Err(rollouts_not_yet())
    }

    async fn cancel_rollout(
        &self,
        request: Request<pb::CancelRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        auth::operator(&request, "Fleet/CancelRollout", Access::Mutate)?;
        Err(rollouts_not_yet())
    }

    async fn approve_stage(
        &self,
        request: Request<pb::ApproveStageRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        auth::operator(&request, "Fleet/ApproveStage", Access::Mutate)?;
        Err(rollouts_not_yet())
    }
}

fn rollouts_not_yet() -> Status {
    Status::unimplemented("rollouts: not yet")
}

/// One WatchOperation stream.
struct Watcher<E> {
    engine: Engine<E>,
    id: String,
    /// The last log sequence number sent (or skipped as before `since_sequence`).
    last: u64,
    /// What was last sent per step: (state, attempt, error), to send only changes.
    steps: BTreeMap<String, (i32, u32, Option<String>)>,
    state: pb::OperationState,
    tx: mpsc::Sender<Result<pb::OperationEvent, Status>>,
}

fn terminal(s: pb::OperationState) -> bool {
    matches!(
        s,
        pb::OperationState::Succeeded
            | pb::OperationState::Failed
            | pb::OperationState::Cancelled
            | pb::OperationState::RolledBack
    )
}

impl<E: Eks + 'static> Watcher<E> {
    async fn send(&self, event: pb::operation_event::Event) -> bool {
        let e = pb::OperationEvent {
            operation_id: self.id.clone(),
            sequence: self.last,
            at: Some(convert::ts(Timestamp::now())),
            event: Some(event),
        };
        self.tx.send(Ok(e)).await.is_ok()
    }

    async fn log(&mut self, e: &EventRecord) -> bool {
        if e.seq <= self.last {
            return true;
        }
        self.last = e.seq;
        let ev = pb::OperationEvent {
            operation_id: self.id.clone(),
            sequence: e.seq,
            at: Some(convert::ts(e.at)),
            event: Some(pb::operation_event::Event::Log(pb::LogLine {
                step_id: e.step.clone().unwrap_or_default(),
                message: e.message.clone(),
            })),
        };
        self.tx.send(Ok(ev)).await.is_ok()
    }

    /// Sends the whole operation and remembers it as the baseline for changes.
    async fn snapshot(&mut self, r: &OperationRecord) -> bool {
        let op = convert::operation(r, self.engine.live_progress(&r.id).as_ref());
        self.steps = op
            .steps
            .iter()
            .map(|s| {
                (
                    s.step_id.clone(),
                    (s.state, s.attempt, s.error.as_ref().map(|e| e.message.clone())),
                )
            })
            .collect();
        self.state = op.state();
        self.send(pb::operation_event::Event::Snapshot(op)).await
    }

    /// Sends the steps and the state that changed since the last snapshot or change.
    async fn changed(&mut self, r: &OperationRecord) -> bool {
        let op = convert::operation(r, self.engine.live_progress(&r.id).as_ref());
        for s in &op.steps {
            let now = (s.state, s.attempt, s.error.as_ref().map(|e| e.message.clone()));
            if self.steps.get(&s.step_id) != Some(&now) {
                self.steps.insert(s.step_id.clone(), now);
                if !self.send(pb::operation_event::Event::Step(s.clone())).await {
                    return false;
                }
            }
        }
        if op.state() != self.state {
            self.state = op.state();
            return self.send(pb::operation_event::Event::State(op.state)).await;
        }
        true
    }

    async fn run(
        mut self,
        record: OperationRecord,
        events: Vec<EventRecord>,
        since: u64,
        mut updates: broadcast::Receiver<Update>,
    ) {
        let latest = events.last().map_or(0, |e| e.seq);
        self.last = latest;
        if !self.snapshot(&record).await {
            return;
        }
        self.last = since.min(latest);
        for e in &events {
            if !self.log(e).await {
                return;
            }
        }
        self.last = latest;
        if terminal(self.state) {
            let _ = self
                .send(pb::operation_event::Event::State(self.state as i32))
                .await;
            return;
        }
        loop {
            let ok = match updates.recv().await {
                Ok(Update::Logged { operation, event }) if operation == self.id => self.log(&event).await,
                Ok(Update::Changed(r)) if r.id == self.id => {
                    let ok = self.changed(&r).await;
                    if terminal(self.state) {
                        return;
                    }
                    ok
                }
                Ok(Update::Progress { operation, progress }) if operation == self.id => {
                    self.send(pb::operation_event::Event::Progress(progress)).await
                }
                Ok(_) => true,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(operation = %self.id, missed = n, "watcher fell behind; catching up from the store");
                    self.catch_up().await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !ok {
                return;
            }
        }
    }

    /// After missing live updates: the stored lines after the last one sent, then a snapshot.
    async fn catch_up(&mut self) -> bool {
        let store = self.engine.store().clone();
        let (id, since) = (self.id.clone(), self.last);
        let Ok(events) = read(store.clone(), move |s| s.list_events(&id, since)).await else {
            return false;
        };
        for e in &events {
            if !self.log(e).await {
                return false;
            }
        }
        let id = self.id.clone();
        match read(store, move |s| s.get_operation(&id)).await {
            Ok(Some(r)) => self.snapshot(&r).await && !terminal(self.state),
            _ => false,
        }
    }
}
