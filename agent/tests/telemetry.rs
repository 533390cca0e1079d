//! Observability of the real `flotilla-agent` binary, run as a child process against a
//! test-side `AgentGateway` and a simulated cluster: the spans it exports over OTLP to a
//! receiver the test runs (the collector's gRPC `TraceService` from opentelemetry-proto) join the
//! trace the coordinator's `RunStep` names, its results name its step span, and its `/metrics`
//! count the steps, evictions and node drains it did. Its JSON logs carry the step's fields.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flotilla_proto::fleet::v1 as pb;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use pb::coordinator_message::Message as Down;
use support::*;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

// === The OTLP receiver ===

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
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
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                out.push(Received {
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
                                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
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
async fn receiver(r: Receiver) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("receiver serves");
    });
    (url, task)
}

// === The agent binary ===

/// The agent's stderr, one parsed JSON log line at a time.
struct Logs {
    lines: mpsc::UnboundedReceiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Logs {
    /// Waits for a line whose `fields.message` is `message`.
    async fn wait_for(&mut self, message: &str) -> serde_json::Value {
        if let Some(l) = self.seen.iter().find(|l| l["fields"]["message"] == message) {
            return l.clone();
        }
        loop {
            let l = tokio::time::timeout(BOUND, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("`{message}` logged within the bound: {:?}", self.seen))
                .unwrap_or_else(|| panic!("the agent ended before logging `{message}`: {:?}", self.seen));
            self.seen.push(l.clone());
            if l["fields"]["message"] == message {
                return l;
            }
        }
    }

    /// Every line logged until the agent closed stderr.
    async fn rest(mut self) -> Vec<serde_json::Value> {
        while let Ok(Some(l)) = tokio::time::timeout(BOUND, self.lines.recv()).await {
            self.seen.push(l);
        }
        self.seen
    }
}

fn spawn_agent(coord: &Coordinator, certs: &Certs, sim: &Sim, otlp: &str) -> (tokio::process::Child, Logs) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla-agent"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOTILLA_") || k.starts_with("OTEL_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args([
            "--coordinator",
            &coord.url,
            "--cluster",
            CLUSTER,
            "--heartbeat",
            "200ms",
            "--log-format",
            "json",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-dir")
        .arg(certs.dir.path())
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        // Export batches quickly (the shutdown flush sends the rest anyway).
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn flotilla-agent");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut r = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(l)) = r.next_line().await {
            let v = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    (
        child,
        Logs {
            lines,
            seen: Vec::new(),
        },
    )
}

/// `GET /metrics` with hyper's client.
async fn scrape(addr: SocketAddr) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), http::StatusCode::OK);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(body.to_vec()).expect("utf-8")
}

/// The value of the sample named exactly `series` (name and labels).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in:\n{metrics}"))
}

/// `(trace id, span id)` of a `traceparent` value.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

/// The coordinator's side of the trace, as the test chose it.
const TRACE: &str = "5ca1ab1e0f1071117ace000000c0ffee";
const COORDINATOR_SPAN: &str = "00f067aa0ba902b7";

fn traced(op: &str, step_id: &str, step: pb::run_step::Step) -> Down {
    Down::RunStep(pb::RunStep {
        operation_id: op.into(),
        step_id: step_id.into(),
        attempt: 1,
        step: Some(step),
        trace_context: [(
            "traceparent".to_string(),
            format!("00-{TRACE}-{COORDINATOR_SPAN}-01"),
        )]
        .into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_spans_join_the_coordinators_trace_and_its_metrics_count_the_work() {
    let spans = Receiver::default();
    let (otlp, _receiver) = receiver(spans.clone()).await;
    let sim = sim(scenario()).await;
    let certs = certs();
    let mut coord = coordinator(&certs).await;
    let (child, mut logs) = spawn_agent(&coord, &certs, &sim, &otlp);
    let metrics_addr: SocketAddr = logs.wait_for("serving metrics").await["fields"]["addr"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("socket address");

    // The session's Connect call names the agent's session span.
    let mut conn = coord.conn().await;
    let session = conn
        .connect_traceparent
        .clone()
        .expect("Connect carries a traceparent");
    let (session_trace, session_span) = ids(&session);
    assert_ne!(session_trace, TRACE);

    // A step sent under the coordinator's trace: the result names the agent's step span in it.
    conn.send(traced("op-t", "taint", taint())).await;
    let taint_result = conn.result().await;
    ok_output(&taint_result);
    conn.ack(&taint_result).await;
    let (trace, taint_span) = ids(&taint_result.trace_context["traceparent"]);
    assert_eq!(trace, TRACE);
    assert_ne!(taint_span, COORDINATOR_SPAN);

    // The migration's steps up to a drain, so evictions happen; the drain's progress carries
    // its span.
    let surge = pb::run_step::Step::SurgeScale(pb::SurgeScaleParams {
        from: "ng-old".into(),
        to: "ng-new".into(),
        surge: Some(pb::surge_scale_params::Surge::Percent(100)),
        always: vec![],
    });
    let verify = pb::run_step::Step::VerifyReady(pb::VerifyReadyParams {
        from: "ng-old".into(),
        to: "ng-new".into(),
        timeout: Some(prost_types::Duration {
            seconds: 120,
            nanos: 0,
        }),
        poll: None,
    });
    for (step_id, step) in [("surge", surge), ("verify", verify)] {
        conn.send(traced("op-t", step_id, step)).await;
        let r = conn.result().await;
        ok_output(&r);
        conn.ack(&r).await;
    }
    conn.progress.clear();
    conn.send(traced("op-t", "drain", drain(120))).await;
    let drain_result = conn.result().await;
    conn.ack(&drain_result).await;
    let pb::step_output::Output::Drain(drained) = ok_output(&drain_result) else {
        panic!("drain output")
    };
    assert_eq!(drained.drained.len(), 4, "{drained:?}");
    assert!(drained.evicted > 0);
    let (_, drain_span) = ids(&drain_result.trace_context["traceparent"]);
    assert!(!conn.progress.is_empty());
    for p in &conn.progress {
        assert_eq!(
            p.trace_context["traceparent"],
            drain_result.trace_context["traceparent"]
        );
    }

    // The metrics count what ran.
    let m = scrape(metrics_addr).await;
    assert!(
        m.contains("# TYPE flotilla_agent_step_duration_seconds histogram"),
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"flotilla_agent_steps_total{kind="taint",result="ok"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"flotilla_agent_steps_total{kind="surge_scale",result="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"flotilla_agent_steps_total{kind="verify_ready",result="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&m, r#"flotilla_agent_steps_total{kind="drain",result="ok"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"flotilla_agent_step_duration_seconds_count{kind="taint"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"flotilla_agent_step_duration_seconds_count{kind="drain"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"flotilla_agent_step_duration_seconds_bucket{kind="drain",le="+Inf"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&m, r#"flotilla_agent_evictions_total{result="allowed"}"#),
        drained.evicted as f64,
        "one allowed eviction per pod the drain reports evicted"
    );
    assert_eq!(
        sample(&m, r#"flotilla_agent_evictions_total{result="refused_429"}"#),
        drained.refusals as f64
    );
    assert_eq!(
        sample(
            &m,
            r#"flotilla_agent_node_drain_duration_seconds_count{result="drained"}"#
        ),
        4.0
    );
    assert_eq!(sample(&m, "flotilla_agent_session_connected"), 1.0);
    assert_eq!(sample(&m, "flotilla_agent_steps_running"), 0.0);

    // SIGTERM: the agent flushes its spans before it exits.
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = tokio::time::timeout(BOUND, child.wait_with_output())
        .await
        .expect("exits within the bound")
        .expect("wait")
        .status;
    let lines = logs.rest().await;
    assert_eq!(status.code(), Some(0), "{lines:#?}");

    // Logs: the step's lines carry its span fields.
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "step started"
            && l["span"]["name"] == "run_step"
            && l["span"]["cluster"] == CLUSTER
            && l["span"]["operation"] == "op-t"
            && l["span"]["step"] == "drain"
            && l["span"]["attempt"] == 1),
        "{lines:#?}"
    );

    // Spans: both steps under the coordinator's trace, as its children, with their fields; the
    // session span is the one the Connect call named.
    let got = spans.spans.lock().expect("spans").clone();
    let find = |span_id: &str| {
        got.iter()
            .find(|s| s.span_id == span_id)
            .unwrap_or_else(|| panic!("span {span_id} not exported: {got:#?}"))
            .clone()
    };
    for (span_id, step) in [(&taint_span, "taint"), (&drain_span, "drain")] {
        let s = find(span_id);
        assert_eq!(s.name, "run_step");
        assert_eq!(s.service, "flotilla-agent");
        assert_eq!(s.trace_id, TRACE);
        assert_eq!(s.parent_span_id, COORDINATOR_SPAN);
        assert_eq!(s.attributes["cluster"], CLUSTER);
        assert_eq!(s.attributes["operation"], "op-t");
        assert_eq!(s.attributes["step"], step);
        assert_eq!(s.attributes["attempt"], "1");
        // The step's own work is a child span in the same trace.
        assert!(
            got.iter()
                .any(|c| c.parent_span_id == *span_id && c.trace_id == TRACE && c.name == "step"),
            "{got:#?}"
        );
    }
    let s = find(&session_span);
    assert_eq!(
        (s.name.as_str(), s.trace_id.as_str()),
        ("session", session_trace.as_str())
    );
    assert_eq!(s.attributes["cluster"], CLUSTER);
}
