//! A test-side agent: an AgentGateway session over mTLS that the test drives message by message,
//! and an executor that runs a `RunStep` with the agent's real steps (flotilla-agent on kube-rs)
//! against a simulated cluster, answering with a well-formed `StepResult`.

use std::collections::VecDeque;
use std::time::Duration;

use flotilla_agent::cluster::KubeCluster;
use flotilla_agent::inventory::Inventory as AgentInventory;
use flotilla_agent::model::GroupKind;
use flotilla_agent::steps::{
    drain, restore_scale, surge_scale, taint, verify_ready, wait_nodes_ready, Blocker, Progress, Step,
    StepKind, StepOutput,
};
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

fn d(x: Option<prost_types::Duration>, default: Duration) -> Duration {
    x.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .unwrap_or(default)
}

fn pd(x: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: x.as_secs() as i64,
        nanos: x.subsec_nanos() as i32,
    }
}

/// The agent step a RunStep asks for.
pub fn to_step(run: &pb::RunStep) -> Step {
    use pb::run_step::Step as S;
    match run.step.clone().expect("RunStep carries a step") {
        S::WaitNodesReady(p) => Step::WaitNodesReady(wait_nodes_ready::Params {
            group: p.group,
            count: p.count,
            timeout: d(p.timeout, Duration::from_secs(600)),
            poll: d(p.poll, Duration::from_secs(1)),
        }),
        S::Taint(p) => Step::Taint(taint::Params {
            group: p.group,
            taint_key: p.taint_key,
        }),
        S::SurgeScale(p) => Step::SurgeScale(surge_scale::Params {
            from: p.from,
            to: p.to,
            surge: match p.surge {
                Some(pb::surge_scale_params::Surge::Count(n)) => surge_scale::Surge::Count(n),
                Some(pb::surge_scale_params::Surge::Percent(n)) => surge_scale::Surge::Percent(n),
                None => surge_scale::Surge::Percent(100),
            },
            always: p.always,
        }),
        S::VerifyReady(p) => Step::VerifyReady(verify_ready::Params {
            from: p.from,
            to: p.to,
            timeout: d(p.timeout, Duration::from_secs(600)),
            poll: d(p.poll, Duration::from_millis(500)),
        }),
        S::Drain(p) => Step::Drain(drain::Params {
            group: p.group,
            concurrency: p.concurrency as usize,
            node_timeout: d(p.node_timeout, Duration::from_secs(600)),
            on_blocked: match p.on_blocked.and_then(|o| o.policy) {
                Some(pb::on_blocked::Policy::SkipNode(_)) => drain::OnBlocked::SkipNode,
                Some(pb::on_blocked::Policy::ForceAfter(x)) => {
                    drain::OnBlocked::ForceAfter(d(Some(x), Duration::ZERO))
                }
                _ => drain::OnBlocked::Fail,
            },
            delete_emptydir_data: p.delete_emptydir_data,
            force: p.force,
            poll: d(p.poll, Duration::from_millis(200)),
            max_in_flight: p.max_in_flight.max(1) as usize,
        }),
        S::RestoreScale(p) => Step::RestoreScale(restore_scale::Params {
            keep_if_pods_on: p.keep_if_pods_on,
            step_timeout: d(p.step_timeout, Duration::from_secs(120)),
            poll: d(p.poll, Duration::from_millis(200)),
        }),
        S::Rollback(p) => Step::Rollback(taint::Params {
            group: p.group,
            taint_key: p.taint_key,
        }),
        other => panic!("the test agent does not run {other:?}"),
    }
}

fn blocker(b: &Blocker) -> pb::Blocker {
    pb::Blocker {
        pod: b.pod.clone(),
        node: b.node.clone(),
        pdbs: b.pdbs.clone(),
        reason: b.reason.clone(),
        blocked_for: Some(pd(b.for_)),
    }
}

/// An agent step's output on the wire.
pub fn to_output(o: StepOutput) -> pb::StepOutput {
    use pb::step_output::Output as O;
    let restored = |r: restore_scale::Output| pb::RestoreScaleOutput {
        deployments: r
            .deployments
            .into_iter()
            .map(|x| pb::Restored {
                deployment: x.deployment,
                replicas: x.replicas,
                hpa: x.hpa,
                steps: x.steps,
                past_budget: x.past_budget,
            })
            .collect(),
        hpas: r.hpas,
        kept: r.kept,
    };
    let output = match o {
        StepOutput::WaitNodesReady(o) => O::WaitNodesReady(pb::WaitNodesReadyOutput {
            group: o.group,
            ready: o.ready,
        }),
        StepOutput::Taint(o) => O::Taint(pb::TaintOutput {
            nodes: o.nodes,
            changed: o.changed,
        }),
        StepOutput::SurgeScale(o) => O::SurgeScale(pb::SurgeScaleOutput {
            deployments: o
                .deployments
                .into_iter()
                .map(|s| pb::Surged {
                    deployment: s.deployment,
                    original: s.original,
                    target: s.target,
                    hpa: s.hpa,
                    changed: s.changed,
                })
                .collect(),
        }),
        StepOutput::VerifyReady(o) => O::VerifyReady(pb::VerifyReadyOutput {
            deployments: o
                .deployments
                .into_iter()
                .map(|v| pb::Verified {
                    deployment: v.deployment,
                    target: v.target,
                    available: v.available,
                    ready_on_new: v.ready_on_new,
                })
                .collect(),
        }),
        StepOutput::Drain(o) => O::Drain(pb::DrainOutput {
            drained: o.drained,
            skipped: o
                .skipped
                .iter()
                .map(|s| pb::SkippedNode {
                    node: s.node.clone(),
                    blockers: s.blockers.iter().map(blocker).collect(),
                })
                .collect(),
            evicted: o.evicted,
            forced: o
                .forced
                .iter()
                .map(|f| pb::ForcedDeletion {
                    pod: f.pod.clone(),
                    node: f.node.clone(),
                    pdbs: f.pdbs.clone(),
                    blocked_for: Some(pd(f.blocked_for)),
                })
                .collect(),
            skipped_pods: o.skipped_pods,
            refusals: o.refusals,
            elapsed: Some(pd(o.elapsed)),
        }),
        StepOutput::RestoreScale(o) => O::RestoreScale(restored(o)),
        StepOutput::Rollback(o) => O::Rollback(pb::RollbackOutput {
            nodes: o.nodes,
            restored: Some(restored(o.restored)),
        }),
        other => panic!("unexpected output {other:?}"),
    };
    pb::StepOutput { output: Some(output) }
}

fn kind(k: StepKind) -> pb::StepKind {
    match k {
        StepKind::Inventory => pb::StepKind::Inventory,
        StepKind::WaitNodesReady => pb::StepKind::WaitNodesReady,
        StepKind::Taint => pb::StepKind::Taint,
        StepKind::SurgeScale => pb::StepKind::SurgeScale,
        StepKind::VerifyReady => pb::StepKind::VerifyReady,
        StepKind::Drain => pb::StepKind::Drain,
        StepKind::RestoreScale => pb::StepKind::RestoreScale,
        StepKind::Rollback => pb::StepKind::Rollback,
        StepKind::Postflight => pb::StepKind::Postflight,
    }
}

/// Runs `run` with the agent's real step against `cluster`, streaming progress on `progress`.
pub async fn execute(
    cluster: &KubeCluster,
    name: &str,
    run: &pb::RunStep,
    progress: mpsc::Sender<pb::AgentMessage>,
) -> pb::StepResult {
    let step = to_step(run);
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let (op, step_id, attempt) = (run.operation_id.clone(), run.step_id.clone(), run.attempt);
    let forward = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let m = msg(pb::agent_message::Message::Progress(pb::StepProgress {
                operation_id: op.clone(),
                step_id: step_id.clone(),
                attempt,
                kind: kind(p.step) as i32,
                done: p.done,
                total: p.total,
                message: p.message,
                blockers: p.blockers.iter().map(blocker).collect(),
                at: None,
                trace_context: Default::default(),
            }));
            let _ = progress.try_send(m);
        }
    });
    let outcome = step.run(cluster, name, &tx).await;
    drop(tx);
    let _ = forward.await;
    pb::StepResult {
        operation_id: run.operation_id.clone(),
        step_id: run.step_id.clone(),
        attempt: run.attempt,
        finished_at: None,
        trace_context: Default::default(),
        outcome: Some(match outcome {
            Ok(o) => pb::step_result::Outcome::Ok(to_output(o)),
            Err(e) => pb::step_result::Outcome::Error(pb::StepError {
                code: pb::step_error::Code::from_str_name(e.code())
                    .unwrap_or(pb::step_error::Code::Unspecified) as i32,
                message: e.to_string(),
                retryable: e.retryable(),
                ..Default::default()
            }),
        }),
    }
}

/// The node groups of an agent inventory, on the wire (enough for the coordinator's checks).
pub fn inventory(inv: &AgentInventory) -> pb::Inventory {
    pb::Inventory {
        version: inv.version.clone(),
        node_groups: inv
            .node_groups
            .iter()
            .map(|g| pb::NodeGroup {
                name: g.name.clone(),
                kind: match g.kind {
                    GroupKind::SelfManaged => pb::NodeGroupKind::SelfManaged,
                    GroupKind::Managed => pb::NodeGroupKind::Managed,
                } as i32,
                node_count: g.nodes,
                ready_count: g.ready,
                kubelet_versions: g.kubelet_versions.clone(),
            })
            .collect(),
        ..Default::default()
    }
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
    inventory(&inv)
}
