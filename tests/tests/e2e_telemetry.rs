//! Telemetry across real processes: the coordinator and the agent export their spans over OTLP
//! to a receiver the test runs (the collector's gRPC `TraceService` from opentelemetry-proto),
//! one migration runs through the `flotilla` CLI, and the test checks that both processes' spans
//! form one trace (operation → step on the coordinator, the agent's step under the
//! coordinator's step), that both `/metrics` endpoints count the work, and that
//! `--log-format json` lines carry the operation's fields. Also: a rollout's span parents its
//! operation's, and an operation and a rollout stay in their trace when the coordinator is
//! SIGKILLed and restarted.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use flotilla_proto::fleet::v1 as pb;
use flotilla_tests::agent::{field_str, json_lines, message};
use flotilla_tests::coordinator::OPERATOR;
use flotilla_tests::process::{Proc, Stream};
use flotilla_tests::world::{World, WorldOptions};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Failure bound for anything the test waits on.
const BOUND: Duration = Duration::from_secs(60);
const COORDINATOR: &str = "flotilla-coordinator";
const AGENT: &str = "flotilla-agent";

// === The OTLP receiver ===

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn any_text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.spans.lock().expect("spans");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| any_text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                out.push(Span {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                any_text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on 127.0.0.1; returns its endpoint URL.
async fn start_receiver(r: Receiver) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("receiver serves");
    });
    url
}

// === Metrics and logs ===

/// The address a process logged as `serving metrics` (JSON log field `addr`).
async fn metrics_addr(proc: &mut Proc) -> SocketAddr {
    let line = proc
        .wait_line(Stream::Stderr, "the `serving metrics` line", BOUND, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| message(&v) == "serving metrics")
        })
        .await
        .expect("metrics served");
    let v: Value = serde_json::from_str(&line).expect("json");
    field_str(&v, "addr").parse().expect("a socket address")
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = flotilla_tests::http::request("GET", &format!("http://{addr}/metrics"), None)
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample named exactly `series` (name and labels), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every sample of metric `name` whose labels contain all of `labels`.
fn sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let ok = (rest.is_empty() || rest.starts_with('{')) && labels.iter().all(|x| rest.contains(x));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// How the test starts its one migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// `flotilla migrate CLUSTER ... --wait`.
    Migrate,
    /// `flotilla rollout create -f SPEC --wait`, one stage with the one cluster.
    Rollout,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrate_command_is_one_trace_across_coordinator_and_agent_and_both_count_it() {
    one_migration(How::Migrate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollouts_migration_is_one_trace_under_its_rollout_span() {
    one_migration(How::Rollout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_stays_in_its_trace_across_a_coordinator_restart() {
    stays_in_its_trace_across_a_restart(How::Migrate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_stays_in_its_trace_across_a_coordinator_restart() {
    stays_in_its_trace_across_a_restart(How::Rollout).await;
}

/// Starts a migration (`how`), SIGKILLs the coordinator while the drain runs, restarts it, and
/// checks that the agent's steps before and after, the restarted operation and (for a rollout)
/// the resumed rollout are all in the trace the first process started.
async fn stays_in_its_trace_across_a_restart(how: How) {
    let receiver = Receiver::default();
    let otlp = start_receiver(receiver.clone()).await;
    let otel_env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), otlp),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
    ];
    let mut world = World::start(
        match how {
            How::Migrate => "telemetry-restart",
            How::Rollout => "telemetry-rollout-restart",
        },
        WorldOptions {
            coordinator_env: otel_env.clone(),
            agent_env: otel_env,
            ..WorldOptions::default()
        },
    )
    .await
    .expect("world starts");
    world
        .wait_connected(CLUSTER, true, BOUND)
        .await
        .expect("the agent connects");
    // Slow Kubernetes API calls keep the drain running while the coordinator dies.
    world
        .sim
        .set_faults(CLUSTER, &serde_json::json!({"apiLatency": "150ms"}))
        .await
        .expect("set faults");
    let (op, rollout) = match how {
        How::Migrate => (start_migration(&world).await, String::new()),
        How::Rollout => {
            let template = write_template(world.dir());
            let spec = rollout_spec(world.dir(), template.to_str().expect("utf-8 path"));
            let rollout = create_rollout(&world, &spec).await;
            let mut fleet = world.coordinator.fleet(OPERATOR).await.expect("fleet client");
            let deadline = tokio::time::Instant::now() + BOUND;
            let op = loop {
                let ops = fleet
                    .list_operations(pb::ListOperationsRequest {
                        rollout_id: rollout.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("list operations")
                    .into_inner()
                    .operations;
                if let Some(o) = ops.into_iter().next() {
                    break o.id;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no operation for {rollout}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            (op, rollout)
        }
    };

    // SIGKILL once the drain is sent (nothing flushed), then the same coordinator again.
    world
        .coordinator
        .proc
        .wait_line(
            Stream::Stderr,
            "the Drain RunStep",
            Duration::from_secs(300),
            |l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| {
                    message(&v) == "RunStep sent to the agent" && field_str(&v, "step") == "Drain"
                })
            },
        )
        .await
        .expect("the drain is sent");
    world.coordinator.kill().await.expect("SIGKILL");
    world
        .coordinator
        .restart()
        .await
        .expect("the coordinator restarts");
    world
        .sim
        .set_faults(CLUSTER, &serde_json::json!({}))
        .await
        .expect("clear faults");
    let mut fleet = world.coordinator.fleet(OPERATOR).await.expect("fleet client");
    let ended_op = wait_operation(&mut fleet, &op, Duration::from_secs(300), ended).await;
    assert_eq!(
        ended_op.state,
        pb::OperationState::Succeeded as i32,
        "{ended_op:?}"
    );
    if how == How::Rollout {
        let run = world
            .cli
            .run(&["rollout", "watch", &rollout, "-o", "json"])
            .await
            .expect("flotilla rollout watch");
        assert_eq!(run.code, Some(0), "the rollout succeeds: {run}");
    }

    let agent = &mut world.agent_mut().expect("agent").proc;
    agent.terminate(BOUND).await.expect("agent stops");
    world
        .coordinator
        .proc
        .terminate(BOUND)
        .await
        .expect("coordinator stops");
    let deadline = tokio::time::Instant::now() + BOUND;
    let spans = loop {
        let spans = receiver.spans();
        let done = spans.iter().any(|s| {
            s.service == AGENT
                && s.name == "run_step"
                && s.attr("operation") == op
                && s.attr("step") == "RestoreScale"
        }) && spans
            .iter()
            .any(|s| s.service == COORDINATOR && s.name == "operation" && s.attr("operation") == op)
            && (how == How::Migrate
                || spans.iter().any(|s| {
                    s.service == COORDINATOR && s.name == "rollout" && s.attr("rollout") == rollout
                }));
        if done {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans missing: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The agent's steps before the kill (WaitNodesReady) and after it (RestoreScale), and the
    // restarted coordinator's operation span, are all in one trace: the one the first process
    // started (its operation span, open at the kill, is lost with it; the restarted one is a
    // child of the StartOperation call's span, as the first was).
    let first = spans
        .iter()
        .find(|s| {
            s.service == AGENT
                && s.name == "run_step"
                && s.attr("operation") == op
                && s.attr("step") == "WaitNodesReady"
        })
        .unwrap_or_else(|| panic!("no WaitNodesReady span: {spans:#?}"));
    let trace = first.trace_id.clone();
    let agent_steps: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == AGENT && s.name == "run_step" && s.attr("operation") == op)
        .collect();
    for step in ["WaitNodesReady", "Drain", "RestoreScale"] {
        assert!(
            agent_steps.iter().any(|s| s.attr("step") == step),
            "no agent span for {step}: {agent_steps:#?}"
        );
    }
    for s in &agent_steps {
        assert_eq!(s.trace_id, trace, "{s:#?}");
    }
    let operations: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == COORDINATOR && s.name == "operation" && s.attr("operation") == op)
        .collect();
    for s in &operations {
        assert_eq!(s.trace_id, trace, "{s:#?}");
        assert!(!s.parent_span_id.is_empty(), "a root: {s:#?}");
    }
    // The resumed rollout's span (the first process's, open at the kill, is lost) is a child of
    // the CreateRollout call's span, as the first was: the same trace.
    let rollouts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == COORDINATOR && s.name == "rollout" && s.attr("rollout") == rollout)
        .collect();
    for s in &rollouts {
        assert_eq!(s.trace_id, trace, "{s:#?}");
        assert!(!s.parent_span_id.is_empty(), "a root: {s:#?}");
    }
    eprintln!(
        "restart ({how:?}): {} spans in the trace ({} agent run_step, {} coordinator operation, {} rollout)",
        spans.iter().filter(|s| s.trace_id == trace).count(),
        agent_steps.len(),
        operations.len(),
        rollouts.len()
    );
}

/// The rollout spec of [`How::Rollout`]: the migration `migrate_args` asks for, in one stage.
fn rollout_spec(dir: &std::path::Path, template: &str) -> std::path::PathBuf {
    let path = dir.join("rollout.yaml");
    std::fs::write(
        &path,
        format!(
            "name: telemetry\nwork:\n  migration:\n    fromNodegroup: {OLD_GROUP}\n    \
             nodegroupTemplateFile: {template}\n    force: true\n    deleteEmptydirData: true\n    \
             drainConcurrency: 2\nstages:\n  - {{name: all, selector: \"\"}}\n"
        ),
    )
    .expect("write the rollout spec");
    path
}

async fn one_migration(how: How) {
    let started = Instant::now();
    let receiver = Receiver::default();
    let otlp = start_receiver(receiver.clone()).await;
    let otel_env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), otlp.clone()),
        // Export batches quickly (the shutdown flush sends the rest anyway).
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
    ];
    let metrics_flag = vec!["--metrics-listen".to_string(), "127.0.0.1:0".to_string()];
    let name = match how {
        How::Migrate => "telemetry-migrate",
        How::Rollout => "telemetry-rollout",
    };
    let mut world = World::start(
        name,
        WorldOptions {
            coordinator_args: metrics_flag.clone(),
            coordinator_env: otel_env.clone(),
            agent_args: metrics_flag,
            agent_env: otel_env,
            ..WorldOptions::default()
        },
    )
    .await
    .expect("world starts");
    let coordinator_metrics = metrics_addr(&mut world.coordinator.proc).await;
    let agent_metrics = metrics_addr(&mut world.agent_mut().expect("agent").proc).await;
    world
        .wait_connected(CLUSTER, true, BOUND)
        .await
        .expect("the agent connects");

    // While the agent runs, the coordinator counts its session.
    let m = scrape(coordinator_metrics).await;
    assert_eq!(
        sample(&m, "flotilla_coordinator_connected_agents"),
        Some(1.0),
        "{m}"
    );

    // One migration through the CLI, to success.
    let template = write_template(world.dir());
    let template = template.to_str().expect("utf-8 path");
    let run = match how {
        How::Migrate => {
            world
                .cli
                .run(&migrate_args(template, &["--wait", "-o", "json"]))
                .await
        }
        How::Rollout => {
            let spec = rollout_spec(world.dir(), template);
            let spec = spec.to_str().expect("utf-8 path");
            world
                .cli
                .run(&["rollout", "create", "-f", spec, "--wait", "-o", "json"])
                .await
        }
    }
    .expect("the CLI runs");
    assert_eq!(run.code, Some(0), "{run}");
    let list = world
        .cli
        .run(&["operations", "list", "--cluster", CLUSTER, "-o", "json"])
        .await
        .expect("operations list");
    assert_eq!(list.code, Some(0), "{list}");
    let ops = list.json().expect("json");
    assert_eq!(ops["operations"].as_array().map(Vec::len), Some(1), "{list}");
    let op = text(&ops, "/operations/0/id").to_string();
    let rollout = text(&ops, "/operations/0/rolloutId").to_string();
    assert_eq!(rollout.is_empty(), how == How::Migrate, "{list}");

    // The coordinator's metrics: the operation (and rollout) succeeded, every step's duration
    // observed, the CLI's gRPC calls counted.
    let m = scrape(coordinator_metrics).await;
    assert_eq!(
        sample(&m, "flotilla_coordinator_connected_agents"),
        Some(1.0),
        "{m}"
    );
    let succeeded = sample(&m, r#"flotilla_coordinator_operations{state="succeeded"}"#);
    assert!(succeeded.unwrap_or(0.0) >= 1.0, "{m}");
    let rollouts = sample(&m, r#"flotilla_coordinator_rollouts{state="succeeded"}"#);
    let expected_rollouts = if how == How::Rollout { 1.0 } else { 0.0 };
    assert_eq!(rollouts, Some(expected_rollouts), "{m}");
    for (kind, runner) in [
        ("create_managed_nodegroup", "coordinator"),
        ("drain", "agent"),
        ("remove_self_managed_nodegroup", "coordinator"),
        ("restore_scale", "agent"),
    ] {
        let n = sum(
            &m,
            "flotilla_coordinator_step_duration_seconds_count",
            &[&format!("kind=\"{kind}\""), &format!("runner=\"{runner}\"")],
        );
        assert!(n >= 1.0, "{kind} by {runner} not timed:\n{m}");
    }
    let steps_ok = sum(&m, "flotilla_coordinator_steps_total", &[r#"result="succeeded""#]);
    assert!(steps_ok >= MIGRATION_STEPS.len() as f64, "{m}");
    let method = match how {
        How::Migrate => r#"method="/flotilla.fleet.v1.Fleet/StartOperation""#,
        How::Rollout => r#"method="/flotilla.fleet.v1.Fleet/CreateRollout""#,
    };
    let calls = sum(
        &m,
        "flotilla_coordinator_grpc_requests_total",
        &[method, r#"code="OK""#],
    );
    assert!(calls >= 1.0, "{m}");
    assert!(
        sum(&m, "flotilla_coordinator_grpc_requests_total", &[]) >= 2.0,
        "{m}"
    );

    // The agent's metrics: the drain's evictions.
    let am = scrape(agent_metrics).await;
    let evicted = sample(&am, r#"flotilla_agent_evictions_total{result="allowed"}"#);
    assert!(evicted.unwrap_or(0.0) >= 1.0, "{am}");
    let drains = sample(&am, r#"flotilla_agent_steps_total{kind="drain",result="ok"}"#);
    assert_eq!(drains, Some(1.0), "{am}");

    // Stop both (SIGTERM: each flushes its spans), agent first.
    let agent = &mut world.agent_mut().expect("agent").proc;
    let agent_exit = agent.terminate(BOUND).await.expect("agent stops");
    assert!(
        agent_exit.is_some_and(|s| s.success()),
        "agent exit: {agent_exit:?}"
    );
    let coordinator_exit = world
        .coordinator
        .proc
        .terminate(BOUND)
        .await
        .expect("coordinator stops");
    assert!(
        coordinator_exit.is_some_and(|s| s.success()),
        "coordinator exit: {coordinator_exit:?}"
    );

    // The spans: wait until the operation's spans from both services are in.
    let deadline = tokio::time::Instant::now() + BOUND;
    let spans = loop {
        let spans = receiver.spans();
        let has = |service: &str, name: &str| {
            spans
                .iter()
                .any(|s| s.service == service && s.name == name && s.attr("operation") == op)
        };
        if has(COORDINATOR, "operation") && has(AGENT, "run_step") {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no operation span from both services within {BOUND:?}: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let operation = spans
        .iter()
        .find(|s| s.service == COORDINATOR && s.name == "operation" && s.attr("operation") == op)
        .expect("the operation span");
    assert_eq!(operation.attr("cluster"), CLUSTER, "{operation:#?}");
    assert_eq!(operation.attr("rollout"), rollout, "{operation:#?}");
    let trace = operation.trace_id.clone();
    if how == How::Rollout {
        // The rollout's span is the operation's parent, in the same trace.
        let parent = by_id
            .get(operation.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("the operation's parent was not exported: {operation:#?}"));
        assert_eq!(
            (
                parent.service.as_str(),
                parent.name.as_str(),
                parent.attr("rollout")
            ),
            (COORDINATOR, "rollout", rollout.as_str()),
            "{parent:#?}"
        );
        assert_eq!(parent.trace_id, trace);
    }

    // Every coordinator step span of the operation: a child of the operation span, with its
    // step and attempt.
    let coordinator_steps: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == COORDINATOR && s.name == "step" && s.parent_span_id == operation.span_id)
        .collect();
    let mut stepped: Vec<&str> = coordinator_steps.iter().map(|s| s.attr("step")).collect();
    stepped.sort_unstable();
    stepped.dedup();
    let mut expected = MIGRATION_STEPS.to_vec();
    expected.sort_unstable();
    assert_eq!(
        stepped, expected,
        "coordinator step spans: {coordinator_steps:#?}"
    );
    for s in &coordinator_steps {
        assert_eq!(s.trace_id, trace);
        assert_eq!(s.attr("attempt"), "1", "{s:#?}");
    }

    // The agent's step spans: in the operation's trace, each a child of the coordinator's span
    // of the same step.
    let agent_steps: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == AGENT && s.name == "run_step" && s.attr("operation") == op)
        .collect();
    let agent_step_names: Vec<&str> = agent_steps.iter().map(|s| s.attr("step")).collect();
    for step in [
        "WaitNodesReady",
        "Taint",
        "SurgeScale",
        "VerifyReady",
        "Drain",
        "RestoreScale",
    ] {
        assert!(
            agent_step_names.contains(&step),
            "no agent span for {step}: {agent_steps:#?}"
        );
    }
    for s in &agent_steps {
        assert_eq!(s.trace_id, trace, "agent span in another trace: {s:#?}");
        assert_eq!(s.attr("cluster"), CLUSTER);
        let parent = by_id
            .get(s.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("the parent of {s:#?} was not exported"));
        assert_eq!(
            (
                parent.service.as_str(),
                parent.name.as_str(),
                parent.attr("step"),
                parent.attr("attempt")
            ),
            (COORDINATOR, "step", s.attr("step"), s.attr("attempt")),
            "agent span {s:#?} under {parent:#?}"
        );
        assert_eq!(parent.parent_span_id, operation.span_id);
    }
    let count = |service: &str| spans.iter().filter(|s| s.service == service).count();
    let in_trace = |service: &str| {
        spans
            .iter()
            .filter(|s| s.service == service && s.trace_id == trace)
            .count()
    };
    eprintln!(
        "{how:?}: spans received: coordinator {} ({} in the operation's trace), agent {} ({} in \
         it); coordinator step spans {}, agent run_step spans {}; test took {:.1} s",
        count(COORDINATOR),
        in_trace(COORDINATOR),
        count(AGENT),
        in_trace(AGENT),
        coordinator_steps.len(),
        agent_steps.len(),
        started.elapsed().as_secs_f64()
    );

    // The coordinator's `--log-format json` lines: every line is JSON, and the operation's lines
    // carry the cluster, operation, rollout and step from their spans.
    let coordinator_lines = json_lines(&world.coordinator.proc);
    let stderr_lines = world
        .coordinator
        .proc
        .lines()
        .iter()
        .filter(|l| l.stream == Stream::Stderr)
        .count();
    assert_eq!(coordinator_lines.len(), stderr_lines, "a stderr line is not JSON");
    let step_lines: Vec<&Value> = coordinator_lines
        .iter()
        .filter(|l| field_str(l, "operation") == op && field_str(l, "cluster") == CLUSTER)
        .collect();
    assert!(
        !step_lines.is_empty(),
        "no line carries the operation: {coordinator_lines:#?}"
    );
    // The lines logged inside the operation's span name its rollout (or none) from that span.
    let in_operation: Vec<&&Value> = step_lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "operation" && s["operation"] == op))
        })
        .collect();
    assert!(
        !in_operation.is_empty(),
        "no line in the operation's span: {step_lines:#?}"
    );
    assert!(
        in_operation.iter().all(|l| field_str(l, "rollout") == rollout),
        "a line without its rollout {rollout:?}: {in_operation:#?}"
    );
    assert!(
        step_lines
            .iter()
            .any(|l| message(l) == "RunStep sent to the agent" && field_str(l, "step") == "Drain"),
        "no RunStep line for Drain with its fields: {step_lines:#?}"
    );
    assert!(
        step_lines
            .iter()
            .any(|l| message(l) == "coordinator step succeeded"
                && field_str(l, "step") == "CreateManagedNodegroup"),
        "no coordinator step line with its fields: {step_lines:#?}"
    );
}
