//! An in-test Fleet server for the CLI tests: real tonic over mTLS on 127.0.0.1 with certificates
//! from `coordinator::ca`, serving fixed clusters and scripted operation and rollout streams, and
//! recording what the CLI sent. Mutations need the operator role, as on the real coordinator.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};

use flotilla_coordinator::ca::{self, CreateOptions, Identity, Role, Validity};
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::fleet_server::{Fleet, FleetServer};
use tokio_stream::Stream;
use tonic::transport::{Certificate, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the CLI sent, for asserts.
#[derive(Debug, Default)]
pub struct Recorded {
    /// StartOperation requests.
    pub started: Vec<pb::StartOperationRequest>,
    /// CreateRollout requests.
    pub created: Vec<pb::CreateRolloutRequest>,
    /// ApproveStage requests.
    pub approved: Vec<pb::ApproveStageRequest>,
    /// CancelOperation requests.
    pub cancelled: Vec<pb::CancelOperationRequest>,
    /// ListClusters selectors.
    pub selectors: Vec<String>,
    /// WatchOperation requests.
    pub watches: Vec<pb::WatchOperationRequest>,
}

/// The fake Fleet service.
#[derive(Clone, Default)]
pub struct FakeFleet {
    /// What was sent.
    pub recorded: Arc<Mutex<Recorded>>,
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A fixed "now" the fixtures are relative to.
pub const T0: i64 = 1_750_000_000;

fn cluster(id: &str, env: &str, connected: bool) -> pb::Cluster {
    pb::Cluster {
        id: id.into(),
        eks_name: format!("{id}-eks"),
        region: "eu-west-1".into(),
        labels: HashMap::from([("env".into(), env.into()), ("team".into(), "payments".into())]),
        connected,
        agent_version: "0.1.0".into(),
        last_seen: ts(T0),
        inventory: Some(pb::Inventory {
            addon_workloads: Vec::new(),
            addon_workloads_reported: false,
            version: "v1.33.4-eks-1".into(),
            node_groups: vec![pb::NodeGroup {
                name: "ng-old".into(),
                kind: pb::NodeGroupKind::SelfManaged as i32,
                node_count: 3,
                ready_count: 3,
                kubelet_versions: vec!["v1.33.4".into()],
            }],
            ..Default::default()
        }),
        current_operation_id: None,
    }
}

/// The clusters the fake knows.
pub fn clusters() -> Vec<pb::Cluster> {
    vec![
        cluster("dev-1", "dev", true),
        cluster("dev-2", "dev", true),
        cluster("dev-3", "dev", false),
        cluster("fail-1", "staging", true),
        cluster("prod-1", "prod", true),
    ]
}

/// `k=v` terms ANDed (enough for the tests).
fn matches(c: &pb::Cluster, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => c.labels.get(k.trim()).map(String::as_str) == Some(v.trim()),
            None => c.labels.contains_key(term.trim()),
        })
}

fn step(id: &str, kind: pb::OperationStepKind, state: pb::StepState) -> pb::OperationStep {
    pb::OperationStep {
        step_id: id.into(),
        kind: kind as i32,
        state: state as i32,
        attempt: u32::from(state != pb::StepState::Pending),
        ..Default::default()
    }
}

/// A blocker the scripts report.
pub fn blocker() -> pb::Blocker {
    pb::Blocker {
        pod: "shop/web-7d9f".into(),
        node: "ip-10-0-1-1".into(),
        pdbs: vec!["shop/web-pdb".into()],
        reason: "blocked by PodDisruptionBudget".into(),
        blocked_for: Some(prost_types::Duration {
            seconds: 90,
            nanos: 0,
        }),
    }
}

/// The operation on `cluster`: `op-<cluster>`, pending with its planned steps.
fn planned(cluster: &str, work: Option<pb::Work>) -> pb::Operation {
    use pb::OperationStepKind as K;
    use pb::StepState as S;
    pb::Operation {
        id: format!("op-{cluster}"),
        cluster_id: cluster.into(),
        work,
        state: pb::OperationState::Pending as i32,
        steps: vec![
            step("1", K::CreateManagedNodegroup, S::Pending),
            step("2", K::Taint, S::Pending),
            step("3", K::Drain, S::Pending),
        ],
        created_by: "operator:alice".into(),
        created_at: ts(T0),
        ..Default::default()
    }
}

/// The operation as it ends: `fail-1`'s drain fails, every other succeeds.
fn finished(cluster: &str) -> pb::Operation {
    use pb::OperationStepKind as K;
    use pb::StepState as S;
    let mut op = planned(cluster, Some(migration_work()));
    op.started_at = ts(T0 + 1);
    op.finished_at = ts(T0 + 100);
    for s in &mut op.steps {
        s.state = S::Succeeded as i32;
        s.attempt = 1;
        s.started_at = ts(T0 + 1);
        s.finished_at = ts(T0 + 30);
    }
    if cluster == "fail-1" {
        op.state = pb::OperationState::Failed as i32;
        let drain = op.steps.iter_mut().find(|s| s.kind == K::Drain as i32).unwrap();
        drain.state = S::Failed as i32;
        drain.error = Some(drain_error());
        op.failure = "Drain: DRAIN_BLOCKED: node ip-10-0-1-1 not empty after 10m".into();
    } else {
        op.state = pb::OperationState::Succeeded as i32;
    }
    op
}

fn drain_error() -> pb::StepError {
    pb::StepError {
        code: pb::step_error::Code::DrainBlocked as i32,
        message: "node ip-10-0-1-1 not empty after 10m".into(),
        retryable: false,
        blockers: vec![blocker()],
        detail: None,
    }
}

fn migration_work() -> pb::Work {
    pb::Work {
        kind: Some(pb::work::Kind::Migration(pb::MigrationParams {
            from_nodegroup: "ng-old".into(),
            nodegroup: Some(pb::NodegroupTemplate {
                nodegroup_name: "ng-managed".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

/// The events of a watch of `op-<cluster>`.
fn operation_events(cluster: &str) -> Vec<pb::OperationEvent> {
    use pb::operation_event::Event;
    use pb::OperationStepKind as K;
    use pb::StepState as S;
    let id = format!("op-{cluster}");
    let mut running = planned(cluster, Some(migration_work()));
    running.state = pb::OperationState::Running as i32;
    running.steps[0].state = S::Succeeded as i32;
    let ev = |sequence: u64, event: Event| pb::OperationEvent {
        operation_id: id.clone(),
        sequence,
        at: ts(T0 + sequence as i64),
        event: Some(event),
    };
    let mut drain_running = step("3", K::Drain, S::Running);
    drain_running.started_at = ts(T0 + 3);
    let mut drain_end = drain_running.clone();
    drain_end.finished_at = ts(T0 + 50);
    let (end_state, drain_end) = if cluster == "fail-1" {
        drain_end.state = S::Failed as i32;
        drain_end.error = Some(drain_error());
        (pb::OperationState::Failed, drain_end)
    } else {
        drain_end.state = S::Succeeded as i32;
        (pb::OperationState::Succeeded, drain_end)
    };
    vec![
        ev(1, Event::Snapshot(running)),
        ev(
            1,
            Event::Log(pb::LogLine {
                step_id: "2".into(),
                message: "taint started".into(),
            }),
        ),
        ev(1, Event::Step(step("2", K::Taint, S::Succeeded))),
        ev(1, Event::Step(drain_running)),
        ev(
            1,
            Event::Progress(pb::StepProgress {
                trace_context: Default::default(),
                operation_id: id.clone(),
                step_id: "3".into(),
                attempt: 1,
                kind: pb::StepKind::Drain as i32,
                done: 5,
                total: 10,
                message: "pods evicted".into(),
                blockers: vec![blocker()],
                at: ts(T0 + 10),
            }),
        ),
        ev(1, Event::Step(drain_end)),
        ev(1, Event::State(end_state as i32)),
    ]
}

fn rollout_from(req: &pb::CreateRolloutRequest) -> pb::Rollout {
    let all = clusters();
    let mut taken = std::collections::HashSet::new();
    let stages = req
        .stages
        .iter()
        .enumerate()
        .map(|(i, spec)| pb::Stage {
            index: i as u32,
            spec: Some(spec.clone()),
            state: pb::RolloutState::Pending as i32,
            clusters: all
                .iter()
                .filter(|c| matches(c, &spec.selector) && taken.insert(c.id.clone()))
                .map(|c| pb::ClusterState {
                    cluster_id: c.id.clone(),
                    state: pb::RolloutState::Pending as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    pb::Rollout {
        id: "ro-1".into(),
        name: req.name.clone(),
        work: req.work.clone(),
        state: if req.start_paused {
            pb::RolloutState::Paused as i32
        } else {
            pb::RolloutState::Running as i32
        },
        stages,
        created_by: "operator:alice".into(),
        created_at: ts(T0),
        ..Default::default()
    }
}

/// The rollout every Get/Watch serves: `dev` ran two clusters, `prod` is being approved.
pub fn fixed_rollout() -> pb::Rollout {
    rollout_from(&pb::CreateRolloutRequest {
        name: "migrate-fleet".into(),
        work: Some(migration_work()),
        stages: vec![
            pb::StageSpec {
                name: "dev".into(),
                selector: "env=dev".into(),
                max_parallel: 2,
                ..Default::default()
            },
            pb::StageSpec {
                name: "prod".into(),
                selector: "env=prod".into(),
                max_parallel: 1,
                require_approval: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    })
}

fn rollout_events(id: &str) -> Vec<pb::RolloutEvent> {
    use pb::rollout_event::Event;
    use pb::RolloutState as R;
    let r = fixed_rollout();
    let fail = id == "ro-fail";
    let ev = |sequence: u64, event: Event| pb::RolloutEvent {
        rollout_id: id.into(),
        sequence,
        at: ts(T0 + sequence as i64),
        event: Some(event),
    };
    let cs = |cluster: &str, state: R| pb::ClusterState {
        cluster_id: cluster.into(),
        state: state as i32,
        operation_id: Some(format!("op-{cluster}")),
        ..Default::default()
    };
    let mut running = cs("dev-1", R::Running);
    running.current_step = pb::OperationStepKind::Drain as i32;
    running.progress = Some(pb::StepProgress {
        done: 3,
        total: 10,
        message: "pods evicted".into(),
        blockers: vec![blocker()],
        ..Default::default()
    });
    let mut dev2 = cs("dev-2", R::Succeeded);
    if fail {
        dev2.state = R::Failed as i32;
        dev2.failed_step = pb::OperationStepKind::Drain as i32;
        dev2.error = Some(drain_error());
        dev2.reason = "Drain failed".into();
    }
    let mut stage0 = r.stages[0].clone();
    stage0.state = R::Succeeded as i32;
    stage0.clusters.clear();
    let mut stage1 = r.stages[1].clone();
    stage1.state = R::WaitingForApproval as i32;
    stage1.clusters.clear();
    let mut events = vec![
        ev(1, Event::Snapshot(r)),
        ev(2, Event::Cluster(running)),
        ev(3, Event::Cluster(cs("dev-1", R::Succeeded))),
        ev(4, Event::Cluster(dev2)),
        ev(5, Event::Cluster(cs("dev-3", R::Skipped))),
        ev(6, Event::Stage(stage0)),
    ];
    if fail {
        events.push(ev(7, Event::State(R::Failed as i32)));
    } else {
        events.push(ev(7, Event::Stage(stage1)));
        events.push(ev(8, Event::Cluster(cs("prod-1", R::Succeeded))));
        events.push(ev(9, Event::State(R::Succeeded as i32)));
    }
    events
}

fn final_rollout(id: &str) -> pb::Rollout {
    let mut r = fixed_rollout();
    r.id = id.into();
    let fail = id == "ro-fail";
    for s in &mut r.stages {
        s.state = pb::RolloutState::Succeeded as i32;
        for c in &mut s.clusters {
            c.state = pb::RolloutState::Succeeded as i32;
        }
    }
    r.state = if fail {
        r.reason = "stage dev reached its failure limit (1)".into();
        pb::RolloutState::Failed as i32
    } else {
        pb::RolloutState::Succeeded as i32
    };
    r
}

/// Refuses a mutation from a viewer, as the coordinator does.
fn require_operator<T>(req: &Request<T>, method: &str) -> Result<(), Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    match ca::identity_of(&certs[0]) {
        Ok(Identity::Operator {
            role: Role::Operator, ..
        }) => Ok(()),
        Ok(Identity::Operator { name, role }) => Err(Status::permission_denied(format!(
            "{method}: operator {name} has role {role}, which may only read"
        ))),
        Ok(other) => Err(Status::permission_denied(format!(
            "{method}: {} may not",
            other.uri()
        ))),
        Err(e) => Err(Status::unauthenticated(e.to_string())),
    }
}

fn stream<T: Send + 'static>(items: Vec<T>) -> EventStream<T> {
    Box::pin(tokio_stream::iter(items.into_iter().map(Ok)))
}

#[tonic::async_trait]
impl Fleet for FakeFleet {
    async fn list_clusters(
        &self,
        req: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        // One cluster a page, so the CLI must follow `next_page_token` to list them all.
        let req = req.into_inner();
        let selector = req.label_selector;
        self.recorded.lock().unwrap().selectors.push(selector.clone());
        let mut clusters: Vec<pb::Cluster> = clusters()
            .into_iter()
            .filter(|c| matches(c, &selector) && c.id > req.page_token)
            .collect();
        let next_page_token = if clusters.len() > 1 {
            clusters.truncate(1);
            clusters[0].id.clone()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListClustersResponse {
            clusters,
            next_page_token,
        }))
    }

    async fn get_cluster(
        &self,
        req: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let id = req.into_inner().cluster_id;
        clusters()
            .into_iter()
            .find(|c| c.id == id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("cluster_id: cluster {id:?} not found")))
    }

    async fn start_operation(
        &self,
        req: Request<pb::StartOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        require_operator(&req, "StartOperation")?;
        let req = req.into_inner();
        self.recorded.lock().unwrap().started.push(req.clone());
        if !clusters().iter().any(|c| c.id == req.cluster_id) {
            return Err(Status::not_found(format!(
                "cluster_id: cluster {:?} not found",
                req.cluster_id
            )));
        }
        if let Some(pb::work::Kind::Upgrade(_)) = req.work.as_ref().and_then(|w| w.kind.as_ref()) {
            return Err(Status::unimplemented(
                "work.upgrade: upgrades are not supported yet",
            ));
        }
        Ok(Response::new(planned(&req.cluster_id, req.work)))
    }

    async fn get_operation(
        &self,
        req: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let id = req.into_inner().operation_id;
        match id.strip_prefix("op-") {
            Some(cluster) if clusters().iter().any(|c| c.id == cluster) => {
                Ok(Response::new(finished(cluster)))
            }
            _ => Err(Status::not_found(format!(
                "operation_id: operation {id:?} not found"
            ))),
        }
    }

    async fn list_operations(
        &self,
        req: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let req = req.into_inner();
        let operations = ["dev-1", "fail-1"]
            .into_iter()
            .filter(|c| req.cluster_id.is_empty() || req.cluster_id == *c)
            .map(finished)
            .collect();
        Ok(Response::new(pb::ListOperationsResponse {
            operations,
            next_page_token: String::new(),
        }))
    }

    type WatchOperationStream = EventStream<pb::OperationEvent>;

    async fn watch_operation(
        &self,
        req: Request<pb::WatchOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        let req = req.into_inner();
        self.recorded.lock().unwrap().watches.push(req.clone());
        let id = req.operation_id;
        match id.strip_prefix("op-") {
            Some(cluster) if clusters().iter().any(|c| c.id == cluster) => {
                Ok(Response::new(stream(operation_events(cluster))))
            }
            _ => Err(Status::not_found(format!(
                "operation_id: operation {id:?} not found"
            ))),
        }
    }

    async fn cancel_operation(
        &self,
        req: Request<pb::CancelOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        require_operator(&req, "CancelOperation")?;
        let req = req.into_inner();
        self.recorded.lock().unwrap().cancelled.push(req.clone());
        let cluster = req.operation_id.trim_start_matches("op-").to_owned();
        let mut op = planned(&cluster, Some(migration_work()));
        op.state = pb::OperationState::RollingBack as i32;
        Ok(Response::new(op))
    }

    async fn create_rollout(
        &self,
        req: Request<pb::CreateRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        require_operator(&req, "CreateRollout")?;
        let req = req.into_inner();
        self.recorded.lock().unwrap().created.push(req.clone());
        Ok(Response::new(rollout_from(&req)))
    }

    async fn get_rollout(
        &self,
        req: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let id = req.into_inner().rollout_id;
        match id.as_str() {
            "ro-1" | "ro-fail" => Ok(Response::new(final_rollout(&id))),
            _ => Err(Status::not_found(format!("rollout_id: rollout {id:?} not found"))),
        }
    }

    async fn list_rollouts(
        &self,
        _req: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: vec![final_rollout("ro-1"), final_rollout("ro-fail")],
            next_page_token: "page-2".into(),
        }))
    }

    type WatchRolloutStream = EventStream<pb::RolloutEvent>;

    async fn watch_rollout(
        &self,
        req: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        let id = req.into_inner().rollout_id;
        match id.as_str() {
            "ro-1" | "ro-fail" => Ok(Response::new(stream(rollout_events(&id)))),
            _ => Err(Status::not_found(format!("rollout_id: rollout {id:?} not found"))),
        }
    }

    async fn pause_rollout(
        &self,
        req: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        require_operator(&req, "PauseRollout")?;
        let mut r = fixed_rollout();
        r.state = pb::RolloutState::Paused as i32;
        r.reason = req.into_inner().reason;
        Ok(Response::new(r))
    }

    async fn resume_rollout(
        &self,
        req: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        require_operator(&req, "ResumeRollout")?;
        Ok(Response::new(fixed_rollout()))
    }

    async fn cancel_rollout(
        &self,
        req: Request<pb::CancelRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        require_operator(&req, "CancelRollout")?;
        let mut r = fixed_rollout();
        r.state = pb::RolloutState::Cancelled as i32;
        Ok(Response::new(r))
    }

    async fn approve_stage(
        &self,
        req: Request<pb::ApproveStageRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        require_operator(&req, "ApproveStage")?;
        let req = req.into_inner();
        self.recorded.lock().unwrap().approved.push(req.clone());
        let mut r = fixed_rollout();
        if let Some(s) = r.stages.iter_mut().find(|s| s.index == req.stage_index) {
            s.approved_by = "operator:alice".into();
        }
        Ok(Response::new(r))
    }
}

/// A running fake coordinator and the TLS directory with its CA and operator certificates.
pub struct Harness {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Holds ca.pem, operator-alice.pem (operator) and operator-bob.pem (viewer).
    pub tls: tempfile::TempDir,
    /// What the CLI sent.
    pub recorded: Arc<Mutex<Recorded>>,
    /// A scratch directory for input files.
    pub work: tempfile::TempDir,
}

/// The result of one `flotilla` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Harness {
    /// Creates the CA and identities and serves the fake on 127.0.0.1.
    pub async fn start() -> Harness {
        let tls = tempfile::tempdir().unwrap();
        ca::create(tls.path(), &CreateOptions::default()).unwrap();
        ca::issue(
            tls.path(),
            &Identity::operator("alice", "operator").unwrap(),
            Validity::days(1),
        )
        .unwrap();
        ca::issue(
            tls.path(),
            &Identity::operator("bob", "viewer").unwrap(),
            Validity::days(1),
        )
        .unwrap();
        let read = |name: &str| std::fs::read(tls.path().join(name)).unwrap();
        let server_tls = ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                read("coordinator.pem"),
                read("coordinator-key.pem"),
            ))
            .client_ca_root(Certificate::from_pem(read("ca.pem")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let fake = FakeFleet::default();
        let recorded = fake.recorded.clone();
        let server = Server::builder()
            .tls_config(server_tls)
            .unwrap()
            .add_service(FleetServer::new(fake));
        tokio::spawn(async move {
            server
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        Harness {
            url: format!("https://127.0.0.1:{}", addr.port()),
            tls,
            recorded,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes an input file in the scratch directory.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `flotilla` as `identity` with `args` (connection flags through FLOTILLA_* variables).
    pub async fn run(&self, identity: &str, args: &[&str]) -> Run {
        self.run_env(
            &[
                ("FLOTILLA_COORDINATOR", self.url.as_str()),
                ("FLOTILLA_TLS_DIR", self.tls.path().to_str().unwrap()),
                ("FLOTILLA_IDENTITY", identity),
            ],
            args,
        )
        .await
    }

    /// Runs `flotilla` with exactly these FLOTILLA_* variables.
    pub async fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        run_flotilla(env, args).await
    }

    /// The TLS directory.
    pub fn tls_dir(&self) -> &Path {
        self.tls.path()
    }
}

/// Runs the real binary (off the async runtime, which serves the fake meanwhile).
pub async fn run_flotilla(env: &[(&str, &str)], args: &[&str]) -> Run {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        for var in [
            "FLOTILLA_COORDINATOR",
            "FLOTILLA_TLS_DIR",
            "FLOTILLA_IDENTITY",
            "FLOTILLA_OUTPUT",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run flotilla");
        let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                pipe.read_to_string(&mut text).unwrap();
                text
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        // A failure bound only: a hung CLI fails the test instead of hanging it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("flotilla {args:?} did not finish within 120s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    })
    .await
    .unwrap()
}
