//! The wire protocol end to end: every step kind survives encode/decode, an in-process
//! `AgentGateway` acks a result over a real HTTP/2 connection, and the descriptor set names both
//! services with every element documented.

use std::collections::HashSet;
use std::time::Duration;

use flotilla_proto::fleet::v1::agent_gateway_client::AgentGatewayClient;
use flotilla_proto::fleet::v1::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use flotilla_proto::fleet::v1::{
    agent_message, coordinator_message, on_blocked, run_step, step_error, step_output, step_result,
    surge_scale_params, Ack, AgentMessage, Blocker, CoordinatorMessage, DrainOutput, DrainParams, Hello,
    Inventory, InventoryParams, NodeGroup, NodeGroupKind, OnBlocked, PostflightParams, RestoreScaleParams,
    RollbackParams, RunStep, StepError, StepOutput, StepResult, SurgeScaleParams, TaintParams,
    VerifyReadyParams, WaitNodesReadyParams,
};
use flotilla_proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

fn secs(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: s, nanos: 0 })
}

fn run_step(step: run_step::Step) -> RunStep {
    RunStep {
        operation_id: "op-1".into(),
        step_id: "s-1".into(),
        attempt: 2,
        step: Some(step),
        trace_context: traceparent("00f067aa0ba902b7"),
    }
}

/// A W3C trace context naming span `span_id` of one fixed trace.
fn traceparent(span_id: &str) -> std::collections::HashMap<String, String> {
    [(
        "traceparent".to_string(),
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span_id}-01"),
    )]
    .into()
}

/// One `RunStep` per agent step kind, parameters filled in.
fn every_step() -> Vec<run_step::Step> {
    use run_step::Step;
    vec![
        Step::Inventory(InventoryParams {}),
        Step::WaitNodesReady(WaitNodesReadyParams {
            group: "ng-new".into(),
            count: 3,
            timeout: secs(600),
            poll: secs(5),
        }),
        Step::Taint(TaintParams {
            group: "ng-old".into(),
            taint_key: "flotilla.io/migrating".into(),
        }),
        Step::SurgeScale(SurgeScaleParams {
            from: "ng-old".into(),
            to: "ng-new".into(),
            surge: Some(surge_scale_params::Surge::Percent(100)),
            always: vec!["kube-system/coredns".into()],
        }),
        Step::VerifyReady(VerifyReadyParams {
            from: "ng-old".into(),
            to: "ng-new".into(),
            timeout: secs(900),
            poll: secs(5),
        }),
        Step::Drain(DrainParams {
            group: "ng-old".into(),
            concurrency: 2,
            node_timeout: secs(600),
            on_blocked: Some(OnBlocked {
                policy: Some(on_blocked::Policy::ForceAfter(prost_types::Duration {
                    seconds: 300,
                    nanos: 0,
                })),
            }),
            delete_emptydir_data: true,
            force: false,
            poll: secs(2),
            max_in_flight: 8,
        }),
        Step::RestoreScale(RestoreScaleParams {
            keep_if_pods_on: Some("ng-old".into()),
            step_timeout: secs(120),
            poll: secs(2),
        }),
        Step::Rollback(RollbackParams {
            group: "ng-old".into(),
            taint_key: "flotilla.io/migrating".into(),
        }),
        Step::Postflight(PostflightParams { minor: "1.34".into() }),
    ]
}

#[test]
fn every_step_kind_round_trips() {
    let steps = every_step();
    assert_eq!(steps.len(), 9, "one RunStep per agent step kind");
    for policy in [
        on_blocked::Policy::Fail(on_blocked::Fail {}),
        on_blocked::Policy::SkipNode(on_blocked::SkipNode {}),
    ] {
        let msg = OnBlocked { policy: Some(policy) };
        assert_eq!(OnBlocked::decode(msg.encode_to_vec().as_slice()).unwrap(), msg);
    }
    for step in steps {
        let msg = CoordinatorMessage {
            message: Some(coordinator_message::Message::RunStep(run_step(step))),
        };
        let bytes = msg.encode_to_vec();
        let back = CoordinatorMessage::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, msg);
    }
}

/// `RunStep` as a peer built before `trace_context` (field 40) sees it.
#[derive(Clone, PartialEq, prost::Message)]
struct RunStepBeforeTraceContext {
    #[prost(string, tag = "1")]
    operation_id: String,
    #[prost(string, tag = "2")]
    step_id: String,
    #[prost(uint32, tag = "3")]
    attempt: u32,
}

#[test]
fn trace_context_is_invisible_to_older_peers() {
    let new = run_step(run_step::Step::Inventory(InventoryParams {}));
    assert!(!new.trace_context.is_empty());
    let old = RunStepBeforeTraceContext::decode(new.encode_to_vec().as_slice()).expect("old peers decode");
    assert_eq!(
        (old.operation_id.as_str(), old.step_id.as_str(), old.attempt),
        ("op-1", "s-1", 2)
    );
    let back = RunStep::decode(old.encode_to_vec().as_slice()).expect("new peers decode old messages");
    assert!(back.trace_context.is_empty());
    assert_eq!(back.operation_id, "op-1");
}

#[test]
fn step_results_round_trip_with_outputs_and_typed_errors() {
    let blocker = Blocker {
        pod: "shop/web-1".into(),
        node: "ip-10-0-1-1".into(),
        pdbs: vec!["shop/web".into()],
        reason: "blocked by PodDisruptionBudget".into(),
        blocked_for: secs(42),
    };
    let ok = StepResult {
        operation_id: "op-1".into(),
        step_id: "drain".into(),
        attempt: 1,
        finished_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        outcome: Some(step_result::Outcome::Ok(StepOutput {
            output: Some(step_output::Output::Drain(DrainOutput {
                drained: vec!["ip-10-0-1-1".into()],
                evicted: 12,
                refusals: 3,
                elapsed: secs(95),
                ..Default::default()
            })),
        })),
        trace_context: traceparent("a3ce929d0e0e4736"),
    };
    let err = StepResult {
        outcome: Some(step_result::Outcome::Error(StepError {
            code: step_error::Code::DrainBlocked as i32,
            message: "node ip-10-0-1-1 not drained after 600s".into(),
            retryable: true,
            blockers: vec![blocker],
            detail: Some(step_error::Detail::DrainBlocked(step_error::DrainBlocked {
                node: "ip-10-0-1-1".into(),
                waited: secs(600),
            })),
        })),
        ..ok.clone()
    };
    for result in [ok, err] {
        let msg = AgentMessage {
            message: Some(agent_message::Message::Result(result)),
        };
        assert_eq!(AgentMessage::decode(msg.encode_to_vec().as_slice()).unwrap(), msg);
    }
}

#[test]
fn error_codes_are_the_agents_stable_codes() {
    use step_error::Code;
    let names: Vec<&str> = [
        Code::InvalidParameter,
        Code::NodeGroupNotFound,
        Code::NodesNotReady,
        Code::InsufficientCapacity,
        Code::DeploymentsNotReady,
        Code::DrainRefused,
        Code::DrainBlocked,
        Code::PostflightFailed,
        Code::KubernetesApi,
    ]
    .iter()
    .map(|c| c.as_str_name())
    .collect();
    // `agent/src/steps/error.rs`, `StepError::code()`.
    assert_eq!(
        names,
        [
            "INVALID_PARAMETER",
            "NODE_GROUP_NOT_FOUND",
            "NODES_NOT_READY",
            "INSUFFICIENT_CAPACITY",
            "DEPLOYMENTS_NOT_READY",
            "DRAIN_REFUSED",
            "DRAIN_BLOCKED",
            "POSTFLIGHT_FAILED",
            "KUBERNETES_API",
        ]
    );
    assert_eq!(Code::from_str_name("DRAIN_BLOCKED"), Some(Code::DrainBlocked));
}

// === In-process gateway ===

/// Acks every result; reports each `Hello`'s cluster id on `hellos`.
struct AckingGateway {
    hellos: mpsc::UnboundedSender<String>,
}

#[tonic::async_trait]
impl AgentGateway for AckingGateway {
    type ConnectStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let hellos = self.hellos.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = inbound.next().await {
                match msg.message {
                    Some(agent_message::Message::Hello(hello)) => {
                        let _ = hellos.send(hello.cluster_id);
                    }
                    Some(agent_message::Message::Result(r)) => {
                        let ack = Ack {
                            operation_id: r.operation_id,
                            step_id: r.step_id,
                            attempt: r.attempt,
                        };
                        let out = CoordinatorMessage {
                            message: Some(coordinator_message::Message::Ack(ack)),
                        };
                        if tx.send(Ok(out)).await.is_err() {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tokio::test]
async fn gateway_acks_a_step_result() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hellos_tx, mut hellos) = mpsc::unbounded_channel();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentGatewayServer::new(AckingGateway { hellos: hellos_tx }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AgentGatewayClient::new(channel);

    let (tx, rx) = mpsc::channel(4);
    let hello = Hello {
        cluster_id: "dev-eu-1".into(),
        agent_version: "0.1.0".into(),
        inventory: Some(Inventory {
            version: "v1.33.4-eks-1".into(),
            node_groups: vec![NodeGroup {
                name: "ng-old".into(),
                kind: NodeGroupKind::SelfManaged as i32,
                node_count: 3,
                ready_count: 3,
                kubelet_versions: vec!["v1.33.4".into()],
            }],
            ..Default::default()
        }),
        running: Vec::new(),
    };
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Hello(hello)),
    })
    .await
    .unwrap();
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let result = StepResult {
        operation_id: "op-7".into(),
        step_id: "taint".into(),
        attempt: 3,
        finished_at: None,
        outcome: Some(step_result::Outcome::Ok(StepOutput {
            output: Some(step_output::Output::Taint(Default::default())),
        })),
        trace_context: Default::default(),
    };
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Result(result)),
    })
    .await
    .unwrap();

    let reply = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an ack within 10s")
        .unwrap()
        .expect("stream open");
    assert_eq!(
        reply.message,
        Some(coordinator_message::Message::Ack(Ack {
            operation_id: "op-7".into(),
            step_id: "taint".into(),
            attempt: 3,
        }))
    );
    assert_eq!(hellos.recv().await.as_deref(), Some("dev-eu-1"));
    server.abort();
}

// === Descriptor set ===

#[test]
fn descriptor_set_names_both_services() {
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let services: HashSet<String> = fds
        .file
        .iter()
        .filter(|f| f.package() == "flotilla.fleet.v1")
        .flat_map(|f| f.service.iter().map(|s| format!("{}.{}", f.package(), s.name())))
        .collect();
    assert!(
        services.contains("flotilla.fleet.v1.AgentGateway"),
        "{services:?}"
    );
    assert!(services.contains("flotilla.fleet.v1.Fleet"), "{services:?}");
    // Reflection needs the imported well-known types too.
    assert!(fds
        .file
        .iter()
        .any(|f| f.name() == "google/protobuf/timestamp.proto"));
}

/// Every message, field, oneof, enum, value, service and method carries a leading comment.
#[test]
fn every_element_is_documented() {
    use prost_types::{DescriptorProto, EnumDescriptorProto};

    fn check_enum(
        e: &EnumDescriptorProto,
        path: Vec<i32>,
        name: String,
        documented: &HashSet<Vec<i32>>,
        missing: &mut Vec<String>,
    ) {
        if !documented.contains(&path) {
            missing.push(name.clone());
        }
        for (i, v) in e.value.iter().enumerate() {
            let mut p = path.clone();
            p.extend([2, i as i32]);
            if !documented.contains(&p) {
                missing.push(format!("{name}.{}", v.name()));
            }
        }
    }

    fn check_message(
        m: &DescriptorProto,
        path: Vec<i32>,
        name: String,
        documented: &HashSet<Vec<i32>>,
        missing: &mut Vec<String>,
    ) {
        if !documented.contains(&path) {
            missing.push(name.clone());
        }
        let child = |kind: i32, i: usize| {
            let mut p = path.clone();
            p.extend([kind, i as i32]);
            p
        };
        for (i, f) in m.field.iter().enumerate() {
            if !documented.contains(&child(2, i)) {
                missing.push(format!("{name}.{}", f.name()));
            }
        }
        for (i, o) in m.oneof_decl.iter().enumerate() {
            // proto3 `optional` fields sit in synthetic oneofs.
            let synthetic = m
                .field
                .iter()
                .any(|f| f.oneof_index == Some(i as i32) && f.proto3_optional());
            if !synthetic && !documented.contains(&child(8, i)) {
                missing.push(format!("{name}.{} (oneof)", o.name()));
            }
        }
        for (i, n) in m.nested_type.iter().enumerate() {
            // Map entries are synthetic.
            if n.options.as_ref().and_then(|o| o.map_entry) != Some(true) {
                check_message(
                    n,
                    child(3, i),
                    format!("{name}.{}", n.name()),
                    documented,
                    missing,
                );
            }
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            check_enum(
                e,
                child(4, i),
                format!("{name}.{}", e.name()),
                documented,
                missing,
            );
        }
    }

    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut missing = Vec::new();
    let mut files = 0;
    for file in fds.file.iter().filter(|f| f.package() == "flotilla.fleet.v1") {
        files += 1;
        let documented: HashSet<Vec<i32>> = file
            .source_code_info
            .as_ref()
            .expect("source info")
            .location
            .iter()
            .filter(|l| !l.leading_comments().trim().is_empty())
            .map(|l| l.path.clone())
            .collect();
        for (i, m) in file.message_type.iter().enumerate() {
            check_message(
                m,
                vec![4, i as i32],
                m.name().to_string(),
                &documented,
                &mut missing,
            );
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            check_enum(
                e,
                vec![5, i as i32],
                e.name().to_string(),
                &documented,
                &mut missing,
            );
        }
        for (i, s) in file.service.iter().enumerate() {
            if !documented.contains(&vec![6, i as i32]) {
                missing.push(s.name().to_string());
            }
            for (j, method) in s.method.iter().enumerate() {
                if !documented.contains(&vec![6, i as i32, 2, j as i32]) {
                    missing.push(format!("{}.{}", s.name(), method.name()));
                }
            }
        }
    }
    assert_eq!(files, 4);
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}
