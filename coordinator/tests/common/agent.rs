//! A test-side agent: an AgentGateway session over mTLS that the test drives message by message,
//! and an executor that runs a `RunStep` with the agent's real steps (flotilla-agent on kube-rs)
//! against a simulated cluster, answering with a well-formed `StepResult`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use flotilla_agent::cluster::KubeCluster;
use flotilla_agent::steps::Progress;
use flotilla_agent::uplink::convert;
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::agent_gateway_client::AgentGatewayClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// How long a test waits for the coordinator's next message before failing.
const WAIT: Duration = Duration::from_secs(120);

/// One open session.
pub struct AgentSession {
    out: mpsc::Sender<pb::AgentMessage>,
    inbound: Streaming<pb::CoordinatorMessage>,
    buffered: VecDeque<pb::CoordinatorMessage>,
    heartbeat: JoinHandle<()>,
}

fn msg(m: pb::agent_message::Message) -> pb::AgentMessage {
    pb::AgentMessage { message: Some(m) }
}

impl AgentSession {
    /// Opens a session over `channel`, saying Hello for `hello_cluster` with `inventory`, and
    /// heartbeats every 500 ms.
    pub async fn open(
        channel: Channel,
        hello_cluster: &str,
        inventory: Option<pb::Inventory>,
    ) -> Result<AgentSession, Status> {
        let (out, rx) = mpsc::channel(64);
        out.send(msg(pb::agent_message::Message::Hello(pb::Hello {
            cluster_id: hello_cluster.into(),
            agent_version: "0.1.0-test".into(),
            inventory,
            running: Vec::new(),
        })))
        .await
        .expect("queue hello");
        let mut client = AgentGatewayClient::new(channel);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.metadata_mut().insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let inbound = client.connect(req).await?.into_inner();
        let hb = out.clone();
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let beat = msg(pb::agent_message::Message::Heartbeat(pb::Heartbeat {
                    sent_at: None,
                    running_steps: 0,
                }));
                if hb.send(beat).await.is_err() {
                    return;
                }
            }
        });
        Ok(AgentSession {
            out,
            inbound,
            buffered: VecDeque::new(),
            heartbeat,
        })
    }

    /// A sender for messages on this session (results, progress).
    pub fn sender(&self) -> mpsc::Sender<pb::AgentMessage> {
        self.out.clone()
    }

    /// Sends one message.
    pub async fn send(&self, m: pb::agent_message::Message) {
        self.out.send(msg(m)).await.expect("session open");
    }

    /// The next message from the coordinator; `Err` if the stream ended with a status.
    pub async fn recv(&mut self) -> Result<Option<pb::CoordinatorMessage>, Status> {
        if let Some(m) = self.buffered.pop_front() {
            return Ok(Some(m));
        }
        match tokio::time::timeout(WAIT, self.inbound.message()).await {
            Ok(r) => r,
            Err(_) => panic!("no message from the coordinator in {WAIT:?}"),
        }
    }

    /// Waits for a message matching `pick`, keeping the others for later.
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&pb::CoordinatorMessage) -> Option<T>) -> T {
        if let Some(i) = self.buffered.iter().position(|m| pick(m).is_some()) {
            let m = self.buffered.remove(i).expect("index");
            return pick(&m).expect("picked");
        }
        loop {
            let m = match tokio::time::timeout(WAIT, self.inbound.message()).await {
                Ok(Ok(Some(m))) => m,
                other => panic!("session ended while waiting: {other:?}"),
            };
            if let Some(t) = pick(&m) {
                return t;
            }
            self.buffered.push_back(m);
        }
    }

    /// The next RunStep.
    pub async fn next_run_step(&mut self) -> pb::RunStep {
        self.wait_for(|m| match &m.message {
            Some(pb::coordinator_message::Message::RunStep(r)) => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the Ack of (operation, step, attempt).
    pub async fn wait_ack(&mut self, op: &str, step: &str, attempt: u32) {
        self.wait_for(|m| match &m.message {
            Some(pb::coordinator_message::Message::Ack(a))
                if a.operation_id == op && a.step_id == step && a.attempt == attempt =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }

    /// Sends a result and waits for its Ack.
    pub async fn result_acked(&mut self, r: pb::StepResult) {
        let (op, step, attempt) = (r.operation_id.clone(), r.step_id.clone(), r.attempt);
        self.send(pb::agent_message::Message::Result(r)).await;
        self.wait_ack(&op, &step, attempt).await;
    }

    /// Cuts the stream (as a dropped connection would).
    pub fn cut(self) {
        self.heartbeat.abort();
        drop(self.out);
        drop(self.inbound);
    }
}

/// Runs `run` with the agent's real step against `cluster`, streaming progress on `progress`;
/// parameters and results go through the agent's own wire conversion.
pub async fn execute(
    cluster: &KubeCluster,
    name: &str,
    run: &pb::RunStep,
    progress: mpsc::Sender<pb::AgentMessage>,
) -> pb::StepResult {
    let step = convert::step_from_proto(run.step.clone()).expect("the coordinator sent a valid step");
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let (op, step_id, attempt) = (run.operation_id.clone(), run.step_id.clone(), run.attempt);
    let forward = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let m = msg(pb::agent_message::Message::Progress(convert::progress_to_proto(
                &op,
                &step_id,
                attempt,
                &p,
                SystemTime::now(),
            )));
            let _ = progress.try_send(m);
        }
    });
    let outcome = step.run(cluster, name, &tx).await;
    drop(tx);
    let _ = forward.await;
    convert::result_to_proto(
        &run.operation_id,
        &run.step_id,
        run.attempt,
        &outcome,
        SystemTime::now(),
    )
}

/// Connects kube-rs to the simulated cluster `name` (its kubeconfig written into `dir`).
pub async fn kube(fleet: &flotilla_sim::fleet::Fleet, dir: &std::path::Path, name: &str) -> KubeCluster {
    fleet.write_files(dir).expect("sim files");
    let path = dir.join(format!("kubeconfig-{name}.yaml"));
    let (cluster, _) = flotilla_agent::local::connect(Some(&path), None)
        .await
        .expect("kube connect");
    cluster
}

/// The cluster's inventory as the agent reports it in Hello.
pub async fn hello_inventory(cluster: &KubeCluster) -> pb::Inventory {
    let inv = flotilla_agent::inventory::collect(cluster)
        .await
        .expect("inventory");
    convert::inventory_to_proto(&inv)
}
