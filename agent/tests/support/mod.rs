//! What the agent's end-to-end tests share: certificates made with rcgen, a test-side
//! `AgentGateway` (tonic, mTLS) on 127.0.0.1 that hands each agent session to the test, a
//! simulated cluster (flotilla-sim) with an empty managed group `ng-new`, and step builders.
#![allow(dead_code)] // Each test binary uses its own part.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_agent::local;
use flotilla_agent::model;
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::{
    IntOrPercent, NodeGroupSpec, NodeGroupType, PdbSpec, Scenario, TaintEffect, TaintSpec,
};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use pb::agent_message::Message as Up;
use pb::coordinator_message::Message as Down;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// Failure bound on anything the tests wait for (never a measure of speed).
pub const BOUND: Duration = Duration::from_secs(180);
/// The simulated cluster the agent under test serves.
pub const CLUSTER: &str = "sim-1";

// === Certificates ===

/// A CA, the gateway's server certificate and an agent certificate, made with rcgen; the agent's
/// files are written as `flotilla-coordinator ca` lays them out.
pub struct Certs {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub dir: tempfile::TempDir,
}

/// An agent certificate for `cluster` (SAN `spiffe://flotilla/agent/<cluster>`) signed by `ca`:
/// its PEM and its key's PEM.
pub fn issue_agent(ca: &CertifiedIssuer<'_, KeyPair>, cluster: &str) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("agent:{cluster}"));
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://flotilla/agent/{cluster}")
            .as_str()
            .try_into()
            .expect("uri"),
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).expect("agent cert");
    (cert.pem(), key.serialize_pem())
}

/// A fresh CA with the gateway's certificate (localhost, 127.0.0.1) and agent certificates for
/// [`CLUSTER`] and `other`, written to a temporary directory.
pub fn certs() -> Certs {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Flotilla test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");

    let server_key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = params.signed_by(&server_key, &ca).expect("server cert");

    let (agent_cert, agent_key) = issue_agent(&ca, CLUSTER);
    let (other_cert, other_key) = issue_agent(&ca, "other");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.path().join(format!("agent-{CLUSTER}.pem")), agent_cert).expect("write");
    std::fs::write(dir.path().join(format!("agent-{CLUSTER}-key.pem")), agent_key).expect("write");
    std::fs::write(dir.path().join("agent-other.pem"), other_cert).expect("write");
    std::fs::write(dir.path().join("agent-other-key.pem"), other_key).expect("write");
    Certs {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        dir,
    }
}

// === The test gateway ===

/// One agent session as the gateway sees it.
pub struct Conn {
    /// The cluster named by the agent's client certificate.
    pub peer_cluster: String,
    pub hello: pb::Hello,
    pub inbound: Streaming<pb::AgentMessage>,
    pub tx: mpsc::Sender<Result<pb::CoordinatorMessage, Status>>,
    pub progress: Vec<pb::StepProgress>,
    pub heartbeats: Vec<pb::Heartbeat>,
    /// The W3C `traceparent` the `Connect` call's metadata carried, if any.
    pub connect_traceparent: Option<String>,
}

impl Conn {
    /// The next message of any kind.
    pub async fn next(&mut self) -> Up {
        let m = tokio::time::timeout(BOUND, self.inbound.message())
            .await
            .expect("a message within the bound")
            .expect("stream healthy")
            .expect("stream open");
        let m = m.message.expect("message set");
        match &m {
            Up::Progress(p) => self.progress.push(p.clone()),
            Up::Heartbeat(h) => self.heartbeats.push(*h),
            _ => {}
        }
        m
    }

    /// The next result (progress and heartbeats are recorded on the way).
    pub async fn result(&mut self) -> pb::StepResult {
        loop {
            match self.next().await {
                Up::Result(r) => return r,
                Up::Hello(_) => panic!("a second Hello on one stream"),
                _ => {}
            }
        }
    }

    /// The results that arrive before `n` more heartbeats have.
    pub async fn results_until_heartbeats(&mut self, n: usize) -> Vec<pb::StepResult> {
        let target = self.heartbeats.len() + n;
        let mut out = Vec::new();
        while self.heartbeats.len() < target {
            if let Up::Result(r) = self.next().await {
                out.push(r);
            }
        }
        out
    }

    /// Sends one message down to the agent.
    pub async fn send(&self, m: Down) {
        self.tx
            .send(Ok(pb::CoordinatorMessage { message: Some(m) }))
            .await
            .expect("the agent's stream is open");
    }

    /// Sends `RunStep` for attempt `attempt` of `op`'s step `step_id`.
    pub async fn run_step(&self, op: &str, step_id: &str, attempt: u32, step: pb::run_step::Step) {
        self.send(Down::RunStep(pb::RunStep {
            operation_id: op.into(),
            step_id: step_id.into(),
            attempt,
            step: Some(step),
            trace_context: Default::default(),
        }))
        .await;
    }

    /// Acknowledges the result `r` (the agent then stops re-sending it).
    pub async fn ack(&self, r: &pb::StepResult) {
        self.send(Down::Ack(pb::Ack {
            operation_id: r.operation_id.clone(),
            step_id: r.step_id.clone(),
            attempt: r.attempt,
        }))
        .await;
    }

    /// Runs a step as attempt 1, waits for its result and acks it.
    pub async fn run_and_ack(&mut self, op: &str, step_id: &str, step: pb::run_step::Step) -> pb::StepResult {
        self.run_step(op, step_id, 1, step).await;
        loop {
            let r = self.result().await;
            if r.operation_id == op && r.step_id == step_id {
                self.ack(&r).await;
                return r;
            }
        }
    }

    /// Runs a quick Inventory step and waits for its result (then acks it): every message sent
    /// before it has been handled by the agent, and every result queued before it has arrived.
    /// Returns the results that came in before it.
    pub async fn barrier(&mut self, op: &str) -> Vec<pb::StepResult> {
        self.run_step(
            op,
            "inventory",
            1,
            pb::run_step::Step::Inventory(pb::InventoryParams {}),
        )
        .await;
        let mut before = Vec::new();
        loop {
            let r = self.result().await;
            if r.operation_id == op {
                self.ack(&r).await;
                return before;
            }
            before.push(r);
        }
    }
}

/// The gateway: checks the client certificate against `Hello`, then hands each session to the
/// test.
pub struct Gateway {
    pub conns: mpsc::UnboundedSender<Conn>,
}

/// The cluster an agent certificate names (its `spiffe://flotilla/agent/<cluster>` URI SAN).
pub fn cluster_of(cert: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => {
            u.strip_prefix("spiffe://flotilla/agent/").map(str::to_string)
        }
        _ => None,
    })
}

#[tonic::async_trait]
impl AgentGateway for Gateway {
    type ConnectStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let peer_cluster = certs
            .first()
            .and_then(|c| cluster_of(c.as_ref()))
            .ok_or_else(|| Status::unauthenticated("not an agent certificate"))?;
        let connect_traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::AgentMessage {
                message: Some(Up::Hello(h)),
            }) => h,
            other => {
                return Err(Status::invalid_argument(format!(
                    "expected Hello first, got {other:?}"
                )))
            }
        };
        if hello.cluster_id != peer_cluster {
            return Err(Status::permission_denied("Hello names another cluster"));
        }
        let (tx, rx) = mpsc::channel(64);
        let _ = self.conns.send(Conn {
            peer_cluster,
            hello,
            inbound,
            tx,
            progress: Vec::new(),
            heartbeats: Vec::new(),
            connect_traceparent,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A test gateway: each agent session arrives on `conns`; agents dial `url`.
pub struct Coordinator {
    pub conns: mpsc::UnboundedReceiver<Conn>,
    pub url: String,
    pub server: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    /// The next session (after the agent's `Hello` was checked).
    pub async fn conn(&mut self) -> Conn {
        let c = tokio::time::timeout(BOUND, self.conns.recv())
            .await
            .expect("an agent session within the bound")
            .expect("gateway running");
        assert_eq!(c.peer_cluster, CLUSTER);
        c
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves the test gateway over mTLS on `listener`.
pub fn serve_on(listener: TcpListener, certs: &Certs) -> Coordinator {
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let (tx, conns) = mpsc::unbounded_channel();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&certs.server_cert, &certs.server_key))
        .client_ca_root(Certificate::from_pem(&certs.ca));
    let router = Server::builder()
        .tls_config(tls)
        .expect("server tls")
        .add_service(AgentGatewayServer::new(Gateway { conns: tx }));
    let server = tokio::spawn(async move {
        router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("gateway serves");
    });
    Coordinator { conns, url, server }
}

/// The test gateway on a free loopback port.
pub async fn coordinator(certs: &Certs) -> Coordinator {
    serve_on(TcpListener::bind("127.0.0.1:0").await.expect("bind"), certs)
}

// === The simulated cluster ===

/// Taint keeping workloads off `ng-new` until the fleet settled (then removed).
pub const NOT_YET: &str = "flotilla.test/not-yet";

/// The default scenario plus a managed group `ng-new` of 4 nodes, Ready and empty once started.
pub fn scenario() -> Scenario {
    let mut s = Scenario::default_scenario();
    let mut new = s.node_groups[0].clone();
    new.name = "ng-new".into();
    new.kind = NodeGroupType::Managed;
    new.taints = vec![TaintSpec {
        key: NOT_YET.into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    }];
    s.node_groups.push(NodeGroupSpec { ..new });
    s
}

/// As [`scenario`], with `shop/cache`'s PodDisruptionBudget at `maxUnavailable: 0`.
pub fn stuck_scenario() -> Scenario {
    let mut s = scenario();
    let cache = s
        .deployments
        .iter_mut()
        .find(|d| d.name == "cache")
        .expect("cache");
    cache.pdb = Some(PdbSpec {
        max_unavailable: Some(IntOrPercent::Int(0)),
        ..Default::default()
    });
    s
}

/// One simulated cluster (scenario `s`) with a kubeconfig and a kube-rs client for it; dropping
/// it stops the simulator.
pub struct Sim {
    pub _fleet: Fleet,
    pub _dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
}

/// Starts one simulated cluster of `s` and waits until it has settled.
pub async fn sim(s: Scenario) -> Sim {
    let dir = tempfile::tempdir().expect("dir");
    let fleet = Fleet::start_scenario(&s, 1, FleetOptions::default())
        .await
        .expect("fleet starts");
    fleet.write_files(dir.path()).expect("files");
    fleet
        .wait_settled(Duration::from_secs(60))
        .await
        .expect("settles");
    let kubeconfig = dir.path().join(format!("kubeconfig-{CLUSTER}.yaml"));
    let (cluster, _) = local::connect(Some(&kubeconfig), None).await.expect("connect");
    let client = cluster.client().clone();
    let nodes: Api<Node> = Api::all(client.clone());
    for mut n in nodes
        .list(&ListParams::default().labels("eks.amazonaws.com/nodegroup=ng-new"))
        .await
        .expect("nodes")
        .items
    {
        if let Some(t) = n.spec.as_mut().and_then(|s| s.taints.as_mut()) {
            t.retain(|t| t.key != NOT_YET);
        }
        nodes
            .replace(model::name(&n.metadata), &Default::default(), &n)
            .await
            .expect("untaint ng-new");
    }
    Sim {
        _fleet: fleet,
        _dir: dir,
        kubeconfig,
        client,
    }
}

impl Sim {
    /// The nodes of the self-managed group `ng-old`.
    pub async fn old_nodes(&self) -> Vec<Node> {
        Api::<Node>::all(self.client.clone())
            .list(&ListParams::default().labels(&format!("{}=ng-old", model::SELF_MANAGED_LABEL)))
            .await
            .expect("nodes")
            .items
    }

    /// Pods on ng-old a drain would move (not DaemonSet or mirror pods).
    pub async fn evictable_on_old(&self) -> Vec<String> {
        let names: Vec<String> = self
            .old_nodes()
            .await
            .iter()
            .map(|n| model::name(&n.metadata).to_string())
            .collect();
        Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .into_iter()
            .filter(|p| model::pod_node(p).is_some_and(|n| names.iter().any(|x| x == n)))
            .filter(|p| model::controller_of(&p.metadata).is_none_or(|o| o.kind != "DaemonSet"))
            .filter(|p| model::annotation(&p.metadata, model::MIRROR_POD_ANNOTATION).is_none())
            .map(|p| model::key(&p.metadata))
            .collect()
    }

    /// How many Kubernetes Events have reason `reason`.
    pub async fn events(&self, reason: &str) -> usize {
        Api::<Event>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .count()
    }
}

/// A Taint step on `ng-old` (the default taint key).
pub fn taint() -> pb::run_step::Step {
    pb::run_step::Step::Taint(pb::TaintParams {
        group: "ng-old".into(),
        taint_key: String::new(),
    })
}

/// A Drain step on `ng-old`, 4 nodes at once, each given `node_timeout_s` seconds.
pub fn drain(node_timeout_s: i64) -> pb::run_step::Step {
    pb::run_step::Step::Drain(pb::DrainParams {
        group: "ng-old".into(),
        concurrency: 4,
        node_timeout: Some(prost_types::Duration {
            seconds: node_timeout_s,
            nanos: 0,
        }),
        on_blocked: None,
        delete_emptydir_data: true,
        force: true,
        poll: None,
        max_in_flight: 0,
    })
}

/// The output of a successful result (panics on an error).
pub fn ok_output(r: &pb::StepResult) -> pb::step_output::Output {
    match &r.outcome {
        Some(pb::step_result::Outcome::Ok(pb::StepOutput { output: Some(o) })) => o.clone(),
        other => panic!("expected success, got {other:?}"),
    }
}

/// The error of a failed result (panics on a success).
pub fn error_of(r: &pb::StepResult) -> pb::StepError {
    match &r.outcome {
        Some(pb::step_result::Outcome::Error(e)) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A `RunningStep` entry (as a Hello lists them).
pub fn running(op: &str, step: &str, attempt: u32) -> pb::RunningStep {
    pb::RunningStep {
        operation_id: op.into(),
        step_id: step.into(),
        attempt,
    }
}
