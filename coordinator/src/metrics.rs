//! The coordinator's Prometheus metrics, served on `--metrics-listen ADDR` at `/metrics`
//! (`flotilla_proto::telemetry::serve_metrics(addr, metrics.registry().clone(), shutdown)`).
//!
//! One [`CoordinatorMetrics`] per process, cheap to clone (handles share the registry). Each
//! handle's documentation says where the coordinator bumps it:
//!
//! | metric | bumped by |
//! |---|---|
//! | `flotilla_coordinator_connected_agents` | [`CoordinatorMetrics::agent_connected`] in the gateway's `Connect` once `Hello` is accepted; the guard lowers it when the session ends |
//! | `flotilla_coordinator_operations{state}` | [`CoordinatorMetrics::operation_moved`] where the engine commits a transition that changes an operation's stored state, and once per operation loaded at start (or [`CoordinatorMetrics::set_operations`] from counts) |
//! | `flotilla_coordinator_rollouts{state}` | [`CoordinatorMetrics::rollout_moved`] where a rollout's state changes, and once per rollout loaded at start (or [`CoordinatorMetrics::set_rollouts`] from counts) |
//! | `flotilla_coordinator_steps_total{kind,runner,result}`, `flotilla_coordinator_step_duration_seconds{kind,runner}` | [`CoordinatorMetrics::step_finished`] when the engine records a step attempt's end (coordinator steps and agent `StepResult`s alike) |
//! | `flotilla_coordinator_eks_errors_total{operation,kind}` | [`crate::eks::aws::AwsEks`] itself, once given [`CoordinatorMetrics::eks_errors`] through `AwsEks::with_metrics` |
//! | `flotilla_coordinator_grpc_requests_total{method,code}` | [`GrpcMetricsLayer`] on the tonic server (`Server::builder().layer(metrics.grpc_layer())`) |

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use prost::Message as _;

use crate::eks::EksError;
use crate::plan::{Runner, Step};
use crate::rollout::RolloutState;
use crate::store::OperationState;

/// Buckets of step durations, in seconds: from a taint (a second) to a node group upgrade
/// (an hour or more).
const STEP_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// Every rollout state, in label order (each shown at 0 until used).
const ROLLOUT_STATES: [RolloutState; 9] = [
    RolloutState::Pending,
    RolloutState::Running,
    RolloutState::WaitingForApproval,
    RolloutState::Soaking,
    RolloutState::Succeeded,
    RolloutState::Failed,
    RolloutState::Skipped,
    RolloutState::Paused,
    RolloutState::Cancelled,
];

/// Every operation state, in label order.
const OPERATION_STATES: [OperationState; 6] = [
    OperationState::Pending,
    OperationState::Running,
    OperationState::RollingBack,
    OperationState::Succeeded,
    OperationState::Failed,
    OperationState::Cancelled,
];

/// The coordinator's metrics and the registry serving them.
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    registry: Registry,
    connected_agents: IntGauge,
    operations: IntGaugeVec,
    rollouts: IntGaugeVec,
    steps: IntCounterVec,
    step_duration: HistogramVec,
    eks_errors: EksErrorCounter,
    grpc: GrpcMetricsLayer,
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Names, labels and buckets are constants: a failure is a programming error the unit tests
    // catch.
    r.unwrap_or_else(|e| panic!("coordinator metric definition: {e}"))
}

impl CoordinatorMetrics {
    /// Every coordinator metric, registered in a new registry (with
    /// `flotilla_coordinator_build_info`).
    pub fn new() -> CoordinatorMetrics {
        let registry = Registry::new();
        let connected_agents = must(IntGauge::new(
            "flotilla_coordinator_connected_agents",
            "Agents with a live session.",
        ));
        let operations = must(IntGaugeVec::new(
            Opts::new("flotilla_coordinator_operations", "Cluster operations by state."),
            &["state"],
        ));
        let rollouts = must(IntGaugeVec::new(
            Opts::new("flotilla_coordinator_rollouts", "Rollouts by state."),
            &["state"],
        ));
        let steps = must(IntCounterVec::new(
            Opts::new(
                "flotilla_coordinator_steps_total",
                "Step attempts that ended, by step, who ran it and result (succeeded, failed).",
            ),
            &["kind", "runner", "result"],
        ));
        let step_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "flotilla_coordinator_step_duration_seconds",
                "How long step attempts took, from start to recorded end, by step and who ran it.",
            )
            .buckets(STEP_BUCKETS.to_vec()),
            &["kind", "runner"],
        ));
        let eks_errors = must(IntCounterVec::new(
            Opts::new(
                "flotilla_coordinator_eks_errors_total",
                "Failed EKS and Auto Scaling calls (after the SDK's retries), by operation and kind.",
            ),
            &["operation", "kind"],
        ));
        let grpc = must(IntCounterVec::new(
            Opts::new(
                "flotilla_coordinator_grpc_requests_total",
                "gRPC calls served, by method and status code.",
            ),
            &["method", "code"],
        ));
        let build = must(IntGaugeVec::new(
            Opts::new(
                "flotilla_coordinator_build_info",
                "The coordinator's version (always 1).",
            ),
            &["version"],
        ));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for c in [
            Box::new(connected_agents.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(operations.clone()),
            Box::new(rollouts.clone()),
            Box::new(steps.clone()),
            Box::new(step_duration.clone()),
            Box::new(eks_errors.clone()),
            Box::new(grpc.clone()),
            Box::new(build),
        ] {
            must(registry.register(c));
        }
        for s in OPERATION_STATES {
            operations.with_label_values(&[operation_state_label(s)]).set(0);
        }
        for s in ROLLOUT_STATES {
            rollouts.with_label_values(&[rollout_state_label(s)]).set(0);
        }
        CoordinatorMetrics {
            registry,
            connected_agents,
            operations,
            rollouts,
            steps,
            step_duration,
            eks_errors: EksErrorCounter(eks_errors),
            grpc: GrpcMetricsLayer {
                requests: grpc,
                known: Arc::new(known_methods()),
            },
        }
    }

    /// The registry to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// An agent's session is up: call in the gateway's `Connect` once `Hello` is accepted, and
    /// keep the guard for the session's lifetime (dropping it lowers
    /// `flotilla_coordinator_connected_agents`).
    pub fn agent_connected(&self) -> ConnectedAgent {
        self.connected_agents.inc();
        ConnectedAgent(self.connected_agents.clone())
    }

    /// Sets `flotilla_coordinator_operations{state}` from the store's counts. Call after every
    /// operation state change and at start. States missing from `counts` are set to 0.
    pub fn set_operations(&self, counts: impl IntoIterator<Item = (OperationState, i64)>) {
        let mut all = [0i64; OPERATION_STATES.len()];
        for (state, n) in counts {
            if let Some(i) = OPERATION_STATES.iter().position(|s| *s == state) {
                all[i] += n;
            }
        }
        for (state, n) in OPERATION_STATES.iter().zip(all) {
            self.operations
                .with_label_values(&[operation_state_label(*state)])
                .set(n);
        }
    }

    /// One operation entered `to` (from `from`, or new / resumed when `None`): call where the
    /// engine commits a transition that changes the stored state, and once per operation loaded
    /// at start. Cheaper than [`CoordinatorMetrics::set_operations`] on a large fleet.
    pub fn operation_moved(&self, from: Option<OperationState>, to: OperationState) {
        if from == Some(to) {
            return;
        }
        if let Some(from) = from {
            self.operations
                .with_label_values(&[operation_state_label(from)])
                .dec();
        }
        self.operations
            .with_label_values(&[operation_state_label(to)])
            .inc();
    }

    /// One rollout entered state `to` from `from` (`None`: created, or loaded at start).
    pub fn rollout_moved(&self, from: Option<RolloutState>, to: RolloutState) {
        if from == Some(to) {
            return;
        }
        if let Some(from) = from {
            self.rollouts
                .with_label_values(&[rollout_state_label(from)])
                .dec();
        }
        self.rollouts.with_label_values(&[rollout_state_label(to)]).inc();
    }

    /// Sets `flotilla_coordinator_rollouts{state}` from the rollouts' counts by state. States
    /// missing from `counts` are set to 0.
    pub fn set_rollouts(&self, counts: impl IntoIterator<Item = (RolloutState, i64)>) {
        let mut all = [0i64; ROLLOUT_STATES.len()];
        for (state, n) in counts {
            if let Some(i) = ROLLOUT_STATES.iter().position(|s| *s == state) {
                all[i] += n;
            }
        }
        for (state, n) in ROLLOUT_STATES.iter().zip(all) {
            self.rollouts
                .with_label_values(&[rollout_state_label(*state)])
                .set(n);
        }
    }

    /// A step attempt ended after `took` (from its recorded start): call where the engine
    /// records a coordinator step's end or an agent's `StepResult` (once per attempt, not per
    /// re-sent result).
    pub fn step_finished(&self, step: Step, succeeded: bool, took: Duration) {
        let (kind, runner) = (step_label(step), runner_label(step.runner()));
        let result = if succeeded { "succeeded" } else { "failed" };
        self.steps.with_label_values(&[kind, runner, result]).inc();
        self.step_duration
            .with_label_values(&[kind, runner])
            .observe(took.as_secs_f64());
    }

    /// The counter `AwsEks::with_metrics` takes: every failed EKS or Auto Scaling call is counted
    /// there, by operation and [`EksError::metric_label`].
    pub fn eks_errors(&self) -> EksErrorCounter {
        self.eks_errors.clone()
    }

    /// The tower layer counting gRPC calls: `Server::builder().layer(metrics.grpc_layer())`.
    pub fn grpc_layer(&self) -> GrpcMetricsLayer {
        self.grpc.clone()
    }
}

/// Holds `flotilla_coordinator_connected_agents` up by one while alive.
#[derive(Debug)]
#[must_use = "the agent counts as connected only while the guard lives"]
pub struct ConnectedAgent(IntGauge);

impl Drop for ConnectedAgent {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `flotilla_coordinator_eks_errors_total{operation, kind}`.
#[derive(Clone, Debug)]
pub struct EksErrorCounter(IntCounterVec);

impl EksErrorCounter {
    /// Counts one failed call of `operation` (`DescribeCluster`, …).
    pub fn count(&self, operation: &str, error: &EksError) {
        self.0.with_label_values(&[operation, error.metric_label()]).inc();
    }
}

/// An operation state as a label: `pending`, `running`, `rolling_back`, …
pub fn operation_state_label(s: OperationState) -> &'static str {
    match s {
        OperationState::Pending => "pending",
        OperationState::Running => "running",
        OperationState::RollingBack => "rolling_back",
        OperationState::Succeeded => "succeeded",
        OperationState::Failed => "failed",
        OperationState::Cancelled => "cancelled",
    }
}

/// A rollout state as a label: `pending`, `waiting_for_approval`, `soaking`, …
pub fn rollout_state_label(s: RolloutState) -> &'static str {
    match s {
        RolloutState::Pending => "pending",
        RolloutState::Running => "running",
        RolloutState::WaitingForApproval => "waiting_for_approval",
        RolloutState::Soaking => "soaking",
        RolloutState::Succeeded => "succeeded",
        RolloutState::Failed => "failed",
        RolloutState::Skipped => "skipped",
        RolloutState::Paused => "paused",
        RolloutState::Cancelled => "cancelled",
    }
}

/// Who ran a step, as a label: `coordinator` or `agent`.
pub fn runner_label(r: Runner) -> &'static str {
    match r {
        Runner::Coordinator => "coordinator",
        Runner::Agent => "agent",
    }
}

/// A step as a label: `create_managed_nodegroup`, `drain`, `upgrade_control_plane`, …
pub fn step_label(s: Step) -> &'static str {
    match s {
        Step::CreateManagedNodegroup => "create_managed_nodegroup",
        Step::WaitNodesReady => "wait_nodes_ready",
        Step::Taint => "taint",
        Step::SurgeScale => "surge_scale",
        Step::VerifyReady => "verify_ready",
        Step::Drain => "drain",
        Step::RemoveSelfManagedNodegroup => "remove_self_managed_nodegroup",
        Step::RestoreScale => "restore_scale",
        Step::Rollback => "rollback",
        Step::DeleteManagedNodegroup => "delete_managed_nodegroup",
        Step::Inventory => "inventory",
        Step::Preflight => "preflight",
        Step::UpgradeControlPlane => "upgrade_control_plane",
        Step::UpgradeNodegroups => "upgrade_nodegroups",
        Step::UpgradeAddons => "upgrade_addons",
        Step::Postflight => "postflight",
    }
}

// === gRPC requests ===

/// Method paths worth a label of their own: every `flotilla.fleet.v1` method, gRPC health and
/// reflection. Anything else is counted as `other`, so unknown paths cannot grow the label set.
fn known_methods() -> HashSet<String> {
    let mut known: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Ok(fds) = prost_types::FileDescriptorSet::decode(flotilla_proto::FILE_DESCRIPTOR_SET) {
        for file in fds.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    known.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    known
}

/// A tower layer for the tonic server counting every call in
/// `flotilla_coordinator_grpc_requests_total{method, code}`: the code is the response's
/// `grpc-status` (from the headers of a trailers-only answer, else the trailers at the end of the
/// body); `Cancelled` when the client went away before it; `Unknown` when a body ended without one.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    requests: IntCounterVec,
    known: Arc<HashSet<String>>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the server's routes.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body + Unpin,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let method = if self.layer.known.contains(path) {
            path.to_string()
        } else {
            "other".to_string()
        };
        let mut record = Record {
            requests: self.layer.requests.clone(),
            method,
            done: false,
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            let resp = match call.await {
                Ok(resp) => resp,
                Err(e) => {
                    record.count("Internal");
                    return Err(e);
                }
            };
            if let Some(code) = resp.headers().get("grpc-status") {
                record.status(code);
            }
            Ok(resp.map(|inner| MeteredBody { inner, record }))
        })
    }
}

/// Counts one call once.
#[derive(Debug)]
struct Record {
    requests: IntCounterVec,
    method: String,
    done: bool,
}

impl Record {
    fn status(&mut self, value: &http::HeaderValue) {
        let code = tonic::Code::from_bytes(value.as_bytes());
        self.count(code_label(code));
    }

    fn count(&mut self, code: &str) {
        if !self.done {
            self.done = true;
            self.requests.with_label_values(&[&self.method, code]).inc();
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        // The body was dropped before its status: the client cancelled (or the connection broke).
        self.count("Cancelled");
    }
}

/// A gRPC status code as a label: `OK`, `NotFound`, `PermissionDenied`, …
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A response body that counts its call when the trailers carrying `grpc-status` go by.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    record: Record,
}

impl<B: http_body::Body + Unpin> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    this.record.status(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.record.count("Internal"),
            Poll::Ready(None) => this.record.count("Unknown"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
