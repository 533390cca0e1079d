//! The `Fleet` gRPC service operators and tools call: clusters (with their agents' sessions and
//! inventories), and per-cluster operations — start (everything validated before anything is
//! written), get, list, watch (stored log lines, then live step changes and progress) and cancel.
//! Rollouts over the fleet ([`crate::engine::rollouts`]): create (the spec validated, the clusters
//! from the clusters file and the agents' inventories), get, list, watch (a snapshot, then every
//! change until the rollout ends), pause, resume, cancel and approve a stage.
//! Viewers may read; only role `operator` may start, steer or cancel.

use std::collections::{BTreeMap, BTreeSet};
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
use crate::config::{ClusterConfig, ClustersFile};
use crate::convert;
use crate::eks::Eks;
use crate::engine::rollouts::{RolloutError, Rollouts};
use crate::engine::{new_operation_id, record, Engine, EngineError, Update};
use crate::params::{MigrationParams, UpgradeParams};
use crate::rollout::convert as rollout_convert;
use crate::rollout::{Event as RolloutEvent, RolloutSpec, Work};
use crate::selector::Selector;
use crate::sessions::Sessions;
use crate::store::RolloutRecord;
use crate::store::{EventRecord, OperationRecord, Store, StoreError};
use crate::upgrade::MinorVersion;

/// Default and largest `page_size` of ListOperations.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Default and largest `page_size` of ListClusters.
const DEFAULT_CLUSTER_PAGE: usize = 1000;
const MAX_CLUSTER_PAGE: usize = 5000;

/// The `Fleet` service.
pub struct FleetService<E> {
    engine: Engine<E>,
    rollouts: Rollouts<E>,
    sessions: Arc<Sessions>,
    clusters: Arc<ClustersFile>,
}

impl<E: Eks + 'static> FleetService<E> {
    /// The service over the engine, the rollout runner, the agents' sessions and the configured
    /// clusters.
    pub fn new(
        engine: Engine<E>,
        rollouts: Rollouts<E>,
        sessions: Arc<Sessions>,
        clusters: Arc<ClustersFile>,
    ) -> Self {
        FleetService {
            engine,
            rollouts,
            sessions,
            clusters,
        }
    }

    /// A rollout on the wire, with each running cluster's live step progress.
    fn rollout_proto(&self, r: &RolloutRecord) -> pb::Rollout {
        rollout_with_progress(&self.engine, r)
    }

    async fn rollout_command(&self, id: &str, event: RolloutEvent) -> Result<Response<pb::Rollout>, Status> {
        if id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "rollout_id: empty; pass a rollout id (ro-…)",
            ));
        }
        let r = self.rollouts.command(id, event).await.map_err(rollout_status)?;
        Ok(Response::new(self.rollout_proto(&r)))
    }

    /// The clusters of the clusters file `spec` would run on: its selector and a stage's match.
    fn selected<'a>(&'a self, spec: &'a RolloutSpec) -> impl Iterator<Item = &'a ClusterConfig> + 'a {
        self.clusters.clusters.iter().filter(|c| {
            spec.selector.matches(&c.labels) && spec.stages.iter().any(|s| s.selector.matches(&c.labels))
        })
    }

    /// Refuses a rollout that would select none of the clusters in the clusters file (a typo in a
    /// selector would otherwise "succeed" having done nothing).
    fn check_selects_some_cluster(&self, spec: &RolloutSpec) -> Result<(), Status> {
        if self.selected(spec).next().is_some() {
            return Ok(());
        }
        let all = &self.clusters.clusters;
        let labels: BTreeSet<String> = all
            .iter()
            .flat_map(|c| c.labels.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let labels: Vec<String> = labels.into_iter().take(20).collect();
        Err(Status::invalid_argument(format!(
            "selector: the rollout's selector ({:?}) and its stages' select none of the {} clusters in the \
             clusters file (labels there: {}); fix the selectors",
            spec.selector.to_string(),
            all.len(),
            if labels.is_empty() {
                "none".to_string()
            } else {
                labels.join(", ")
            }
        )))
    }

    /// Refuses an upgrade rollout to a version EKS does not offer (DescribeClusterVersions, asked
    /// once per region of the selected clusters, answers cached): a typo (1.3, 1.40) is refused
    /// here rather than skipping every cluster or failing each at its preflight. When EKS does not
    /// answer, each cluster's preflight checks the target.
    async fn check_target_offered(&self, spec: &RolloutSpec) -> Result<(), Status> {
        let Work::Upgrade(u) = &spec.work else {
            return Ok(());
        };
        let target = u.target.to_string();
        let mut regions = BTreeSet::new();
        for c in self.selected(spec) {
            if !regions.insert(c.region.as_str()) {
                continue;
            }
            let Some(eks) = self.engine.eks(&c.name) else {
                continue;
            };
            match eks.describe_cluster_versions().await {
                Ok(offered) if !offered.contains(&target) => {
                    return Err(Status::invalid_argument(format!(
                        "work.upgrade.targetVersion: EKS offers Kubernetes {} in {} (DescribeClusterVersions), not {target}; pick one of those",
                        offered.join(", "),
                        c.region
                    )))
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(region = %c.region, error = %e, "could not list the versions EKS offers; each cluster's preflight checks the target")
                }
            }
        }
        Ok(())
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
        let now = Timestamp::now();
        plan_migration(
            &self.sessions,
            cluster,
            params,
            new_operation_id(now),
            created_by,
            rollout_id,
        )
    }

    /// Builds (without storing) the one-minor upgrade of `cluster` that `params` asks for: the
    /// target must be the cluster's minor + 1 (its control plane's version from EKS, or the
    /// agent's inventory when EKS cannot be asked); errors name `work.upgrade.*`.
    pub async fn plan_upgrade(
        &self,
        cluster: &str,
        params: &pb::UpgradeParams,
        created_by: String,
    ) -> Result<OperationRecord, Status> {
        let field = "work.upgrade.targetVersion";
        let target = MinorVersion::parse(&params.target_version)
            .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
        if params.migrate_self_managed {
            return Err(Status::invalid_argument(
                "work.upgrade.migrateSelfManaged: one operation is one upgrade hop; start the migration as its own operation first, or create a rollout (which migrates, then chains the hops)",
            ));
        }
        let from_eks = match self.engine.eks(cluster) {
            Some(eks) => match eks.describe_cluster().await {
                Ok(c) => MinorVersion::of_kubernetes(&c.version),
                Err(e) => {
                    tracing::warn!(%cluster, error = %e, "DescribeCluster failed; using the agent's inventory for the current version");
                    None
                }
            },
            None => None,
        };
        let from_agent = || {
            self.sessions
                .info(cluster)
                .inventory
                .and_then(|i| MinorVersion::of_kubernetes(&i.version))
        };
        let Some(current) = from_eks.or_else(from_agent) else {
            return Err(Status::unavailable(format!(
                "cluster {cluster}: its Kubernetes version is unknown (EKS DescribeCluster failed and its agent has not reported an inventory); retry once either answers"
            )));
        };
        if target != current.next() {
            let why = if target == current {
                format!("cluster {cluster} is already at {current}")
            } else {
                format!("cluster {cluster} is at {current}")
            };
            return Err(Status::invalid_argument(format!(
                "{field}: {why}; EKS upgrades one minor at a time, so the target must be {} (to go further, create a rollout with targetVersion {}: it chains the hops)",
                current.next(),
                params.target_version
            )));
        }
        let now = Timestamp::now();
        let p = UpgradeParams {
            from: current,
            target,
            force: params.force,
            goal: None,
        };
        Ok(record::new_upgrade(
            new_operation_id(now),
            cluster,
            &p,
            created_by,
            None,
            now,
        ))
    }
}

/// Builds (without storing) operation `id`, the migration of `cluster` that `params` asks for:
/// defaults filled in, an empty `fromNodegroup` resolved from the agent's inventory (its only
/// self-managed group), every field checked; errors name it under `work.migration`.
pub fn plan_migration(
    sessions: &Sessions,
    cluster: &str,
    params: &pb::MigrationParams,
    id: String,
    created_by: String,
    rollout_id: Option<String>,
) -> Result<OperationRecord, Status> {
    let bad = |e: crate::params::ParamError| {
        Status::invalid_argument(format!("work.migration.{}: {}", e.field, e.message))
    };
    let mut p: MigrationParams = convert::migration_params(params).map_err(bad)?;
    let inventory = sessions.info(cluster).inventory;
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
        id, cluster, &p, created_by, rollout_id, now,
    ))
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
        let text = &request.get_ref().label_selector;
        let selector = Selector::parse(text)
            .map_err(|e| Status::invalid_argument(format!("label_selector: {text:?} {e}")))?;
        let req = request.get_ref();
        let page = match req.page_size as usize {
            0 => DEFAULT_CLUSTER_PAGE,
            n => n.min(MAX_CLUSTER_PAGE),
        };
        let after = req.page_token.as_str();
        // Sort the (cheap) configuration entries first, and build the page's clusters only.
        let mut matching: Vec<&crate::config::ClusterConfig> = self
            .clusters
            .clusters
            .iter()
            .filter(|c| c.name.as_str() > after && selector.matches(&c.labels))
            .collect();
        matching.sort_by(|a, b| a.name.cmp(&b.name));
        let next_page_token = match matching.get(page) {
            Some(_) => matching[page - 1].name.clone(),
            None => String::new(),
        };
        matching.truncate(page);
        let mut busy = self.engine.current_operations();
        let clusters = matching
            .into_iter()
            .map(|c| convert::cluster(c, &self.sessions.info(&c.name), busy.remove(&c.name)))
            .collect();
        Ok(Response::new(pb::ListClustersResponse {
            clusters,
            next_page_token,
        }))
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
            Some(pb::work::Kind::Upgrade(u)) => self.plan_upgrade(&req.cluster_id, &u, caller.uri()).await?,
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
        // Operation ids: `op-…`, or `ro-…/cluster/n` for a rollout's operations.
        if !req.page_token.is_empty()
            && !req.page_token.starts_with("op-")
            && !req.page_token.starts_with("ro-")
        {
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

    // === Rollouts ===

    async fn create_rollout(
        &self,
        request: Request<pb::CreateRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let caller = auth::operator(&request, "Fleet/CreateRollout", Access::Mutate)?;
        let req = request.into_inner();
        let spec = RolloutSpec::from_proto(&req).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check_selects_some_cluster(&spec)?;
        self.check_target_offered(&spec).await?;
        let r = self
            .rollouts
            .create(spec, caller.uri())
            .await
            .map_err(rollout_status)?;
        Ok(Response::new(self.rollout_proto(&r)))
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        auth::operator(&request, "Fleet/GetRollout", Access::Read)?;
        let id = &request.get_ref().rollout_id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "rollout_id: empty; pass a rollout id (ro-…)",
            ));
        }
        let r = self.rollouts.get(id).await.map_err(rollout_status)?;
        Ok(Response::new(self.rollout_proto(&r)))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        auth::operator(&request, "Fleet/ListRollouts", Access::Read)?;
        let req = request.into_inner();
        let mut states = Vec::new();
        for (i, s) in req.states.iter().enumerate() {
            match rollout_convert::state_from_proto(*s) {
                Some(st) => states.push(st),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "states[{i}]: {s} is not a rollout state; use PENDING, RUNNING, WAITING_FOR_APPROVAL, SOAKING, SUCCEEDED, FAILED, SKIPPED, PAUSED or CANCELLED"
                    )))
                }
            }
        }
        if !req.page_token.is_empty() && !req.page_token.starts_with("ro-") {
            return Err(Status::invalid_argument(
                "page_token: not a token from a previous ListRollouts response",
            ));
        }
        let page = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut all = self.rollouts.list().await.map_err(rollout_status)?;
        all.retain(|r| states.is_empty() || states.contains(&r.rollout.state()));
        // Ids sort by creation time: newest first.
        all.sort_by(|a, b| b.rollout.id.cmp(&a.rollout.id));
        if !req.page_token.is_empty() {
            all.retain(|r| r.rollout.id.as_str() < req.page_token.as_str());
        }
        let next_page_token = if all.len() > page {
            all.truncate(page);
            all.last().map(|r| r.rollout.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: all.iter().map(|r| self.rollout_proto(r)).collect(),
            next_page_token,
        }))
    }

    type WatchRolloutStream = RolloutWatch;

    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        auth::operator(&request, "Fleet/WatchRollout", Access::Read)?;
        let id = request.into_inner().rollout_id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "rollout_id: empty; pass a rollout id (ro-…)",
            ));
        }
        // Subscribe before reading, so nothing committed in between is missed.
        let updates = self.rollouts.subscribe();
        let record = self.rollouts.get(&id).await.map_err(rollout_status)?;
        let (tx, rx) = mpsc::channel(256);
        let watcher = RolloutWatcher {
            rollouts: self.rollouts.clone(),
            engine: self.engine.clone(),
            id,
            sequence: 0,
            tx,
        };
        tokio::spawn(watcher.run(record, updates));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let caller = auth::operator(&request, "Fleet/PauseRollout", Access::Mutate)?;
        let req = request.into_inner();
        let reason = with_caller(&req.reason, &caller.uri());
        self.rollout_command(&req.rollout_id, RolloutEvent::Pause { reason })
            .await
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        auth::operator(&request, "Fleet/ResumeRollout", Access::Mutate)?;
        let req = request.into_inner();
        self.rollout_command(&req.rollout_id, RolloutEvent::Resume).await
    }

    async fn cancel_rollout(
        &self,
        request: Request<pb::CancelRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let caller = auth::operator(&request, "Fleet/CancelRollout", Access::Mutate)?;
        let req = request.into_inner();
        let reason = with_caller(&req.reason, &caller.uri());
        self.rollout_command(&req.rollout_id, RolloutEvent::Cancel { reason })
            .await
    }

    async fn approve_stage(
        &self,
        request: Request<pb::ApproveStageRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let caller = auth::operator(&request, "Fleet/ApproveStage", Access::Mutate)?;
        let req = request.into_inner();
        let event = RolloutEvent::Approve {
            stage: req.stage_index as usize,
            by: caller.uri(),
            comment: req.comment,
        };
        self.rollout_command(&req.rollout_id, event).await
    }
}

/// `reason (by caller)`, or `by caller` without a reason.
fn with_caller(reason: &str, caller: &str) -> String {
    if reason.trim().is_empty() {
        format!("by {caller}")
    } else {
        format!("{reason} (by {caller})")
    }
}

/// The rollout runner's errors as gRPC statuses.
pub fn rollout_status(e: RolloutError) -> Status {
    match e {
        RolloutError::NotFound(id) => Status::not_found(format!("rollout_id: rollout {id:?} not found")),
        RolloutError::Refused(e) => Status::failed_precondition(e.to_string()),
        RolloutError::Stopped => Status::unavailable("the coordinator is shutting down; retry"),
        RolloutError::Store(e) => {
            tracing::error!(error = %e, "store failed");
            Status::internal(format!("store: {e}"))
        }
    }
}

/// One WatchRollout stream: a snapshot, then the changes of every committed state, until the
/// rollout ends.
/// A rollout on the wire, with each running cluster's live step progress: what GetRollout
/// answers and WatchRollout's snapshot carries.
fn rollout_with_progress<E: Eks + 'static>(engine: &Engine<E>, r: &RolloutRecord) -> pb::Rollout {
    let mut p = rollout_convert::rollout_to_proto(&r.rollout);
    for c in p.stages.iter_mut().flat_map(|s| s.clusters.iter_mut()) {
        if let Some(op) = c
            .operation_id
            .as_ref()
            .filter(|_| c.state == pb::RolloutState::Running as i32)
        {
            c.progress = engine.live_progress(op);
        }
    }
    p
}

struct RolloutWatcher<E> {
    rollouts: Rollouts<E>,
    engine: Engine<E>,
    id: String,
    sequence: u64,
    tx: mpsc::Sender<Result<pb::RolloutEvent, Status>>,
}

impl<E: Eks + 'static> RolloutWatcher<E> {
    async fn send(&mut self, event: pb::rollout_event::Event) -> bool {
        self.sequence += 1;
        let e = pb::RolloutEvent {
            rollout_id: self.id.clone(),
            sequence: self.sequence,
            at: Some(convert::ts(Timestamp::now())),
            event: Some(event),
        };
        self.tx.send(Ok(e)).await.is_ok()
    }

    async fn snapshot(&mut self, r: &RolloutRecord) -> bool {
        let p = rollout_with_progress(&self.engine, r);
        self.send(pb::rollout_event::Event::Snapshot(p)).await
    }

    async fn run(mut self, record: Arc<RolloutRecord>, mut updates: broadcast::Receiver<Arc<RolloutRecord>>) {
        if !self.snapshot(&record).await {
            return;
        }
        if record.rollout.is_final() {
            let state = rollout_convert::state_to_proto(record.rollout.state()) as i32;
            let _ = self.send(pb::rollout_event::Event::State(state)).await;
            return;
        }
        let mut last = record;
        loop {
            let next = match updates.recv().await {
                Ok(r) if r.rollout.id == self.id => r,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(rollout = %self.id, missed = n, "rollout watcher fell behind; sending a snapshot");
                    let Ok(r) = self.rollouts.get(&self.id).await else {
                        return;
                    };
                    if !self.snapshot(&r).await || r.rollout.is_final() {
                        return;
                    }
                    last = r;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if next.version <= last.version {
                continue;
            }
            for change in rollout_convert::changes(&last.rollout, &next.rollout) {
                if !self.send(change).await {
                    return;
                }
            }
            if next.rollout.is_final() {
                return;
            }
            last = next;
        }
    }
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
