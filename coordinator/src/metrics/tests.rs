//! The coordinator's metrics: gauges and counters by label, and the gRPC layer counting real
//! tonic calls over loopback by method and status code.

use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::agent_gateway_client::AgentGatewayClient;
use flotilla_proto::fleet::v1::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use flotilla_proto::fleet::v1::fleet_client::FleetClient;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::*;

fn text(m: &CoordinatorMetrics) -> String {
    flotilla_proto::telemetry::metrics::encode(m.registry())
}

/// The value of the sample named exactly `series`, if present.
fn sample(m: &CoordinatorMetrics, series: &str) -> Option<f64> {
    text(m)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn gauges_and_counters_carry_their_labels() {
    let m = CoordinatorMetrics::new();
    let t = text(&m);
    assert!(
        t.contains("flotilla_coordinator_operations{state=\"rolling_back\"} 0"),
        "{t}"
    );
    assert!(
        t.contains("flotilla_coordinator_rollouts{state=\"waiting_for_approval\"} 0"),
        "{t}"
    );

    let a = m.agent_connected();
    let b = m.agent_connected();
    assert_eq!(sample(&m, "flotilla_coordinator_connected_agents"), Some(2.0));
    drop(a);
    assert_eq!(sample(&m, "flotilla_coordinator_connected_agents"), Some(1.0));
    drop(b);

    m.set_operations([(OperationState::Running, 3), (OperationState::Succeeded, 7)]);
    m.set_operations([(OperationState::Running, 2), (OperationState::Failed, 1)]);
    let op = |s: &str| sample(&m, &format!("flotilla_coordinator_operations{{state=\"{s}\"}}"));
    assert_eq!(op("running"), Some(2.0));
    assert_eq!(op("failed"), Some(1.0));
    assert_eq!(op("succeeded"), Some(0.0), "absent from the new counts: 0");

    m.set_rollouts([(RolloutState::Running, 1), (RolloutState::Paused, 2)]);
    m.set_rollouts([(RolloutState::Soaking, 1)]);
    let ro = |s: &str| sample(&m, &format!("flotilla_coordinator_rollouts{{state=\"{s}\"}}"));
    assert_eq!(ro("soaking"), Some(1.0));
    assert_eq!(ro("running"), Some(0.0));
    assert_eq!(ro("paused"), Some(0.0));

    m.operation_moved(None, OperationState::Pending);
    m.operation_moved(Some(OperationState::Pending), OperationState::Running);
    m.operation_moved(Some(OperationState::Running), OperationState::Running);
    assert_eq!(op("running"), Some(3.0));
    assert_eq!(op("pending"), Some(0.0));
    m.rollout_moved(None, RolloutState::Running);
    m.rollout_moved(Some(RolloutState::Running), RolloutState::Paused);
    assert_eq!(ro("paused"), Some(1.0));
    assert_eq!(ro("running"), Some(0.0));

    m.step_finished(Step::Drain, true, Duration::from_secs(400));
    m.step_finished(Step::UpgradeControlPlane, false, Duration::from_secs(20));
    let t = text(&m);
    for line in [
        "flotilla_coordinator_steps_total{kind=\"drain\",result=\"succeeded\",runner=\"agent\"} 1",
        "flotilla_coordinator_steps_total{kind=\"upgrade_control_plane\",result=\"failed\",runner=\"coordinator\"} 1",
        "flotilla_coordinator_step_duration_seconds_bucket{kind=\"drain\",runner=\"agent\",le=\"600\"} 1",
        "flotilla_coordinator_step_duration_seconds_bucket{kind=\"drain\",runner=\"agent\",le=\"300\"} 0",
    ] {
        assert!(t.contains(line), "{line} missing from:\n{t}");
    }

    let eks = m.eks_errors();
    eks.count(
        "DescribeCluster",
        &EksError::Api {
            operation: "DescribeCluster",
            resource: "cluster a".into(),
            code: "ThrottlingException".into(),
            message: String::new(),
            status: Some(400),
        },
    );
    assert_eq!(
        sample(
            &m,
            "flotilla_coordinator_eks_errors_total{kind=\"api_retryable\",operation=\"DescribeCluster\"}"
        ),
        Some(1.0)
    );
    assert!(text(&m).contains("flotilla_coordinator_build_info{version=\""));
}

#[test]
fn every_fleet_and_gateway_method_is_known() {
    let known = known_methods();
    assert!(known.contains("/flotilla.fleet.v1.AgentGateway/Connect"));
    assert!(known.contains("/flotilla.fleet.v1.Fleet/ListClusters"));
    assert!(known.contains("/flotilla.fleet.v1.Fleet/CreateRollout"));
    assert!(known.contains("/grpc.health.v1.Health/Check"));
}

// === The gRPC layer over a real server ===

/// Answers `Connect` as the `x-test` request header says: `deny` refuses, `abort` fails the
/// stream after one message, `hang` never ends it, anything else ends it cleanly.
struct Gateway;

#[tonic::async_trait]
impl AgentGateway for Gateway {
    type ConnectStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mode = request
            .metadata()
            .get("x-test")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let ack = pb::CoordinatorMessage {
            message: Some(pb::coordinator_message::Message::Ack(pb::Ack::default())),
        };
        match mode.as_str() {
            "deny" => return Err(Status::permission_denied("not this cluster")),
            "abort" => {
                let _ = tx.send(Ok(ack)).await;
                let _ = tx.send(Err(Status::aborted("session replaced"))).await;
            }
            "hang" => {
                let _ = tx.send(Ok(ack)).await;
                tokio::spawn(async move {
                    tx.closed().await;
                });
            }
            _ => {
                let _ = tx.send(Ok(ack)).await;
            }
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve(m: &CoordinatorMetrics) -> tonic::transport::Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = tonic::transport::Server::builder()
        .layer(m.grpc_layer())
        .add_service(AgentGatewayServer::new(Gateway));
    tokio::spawn(async move {
        router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("serves");
    });
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

fn connect_request(mode: &str) -> Request<tokio_stream::Iter<std::vec::IntoIter<pb::AgentMessage>>> {
    let mut r = Request::new(tokio_stream::iter(vec![pb::AgentMessage::default()]));
    r.metadata_mut().insert("x-test", mode.parse().expect("ascii"));
    r
}

/// Reads a response stream to its end; returns the final status code.
async fn drain_stream(mut s: Streaming<pb::CoordinatorMessage>) -> tonic::Code {
    loop {
        match s.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return tonic::Code::Ok,
            Err(status) => return status.code(),
        }
    }
}

const CONNECT: &str = "/flotilla.fleet.v1.AgentGateway/Connect";

/// Waits (bounded) until `series` reads `want`.
async fn eventually(m: &CoordinatorMetrics, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sample(m, series) != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} not {want} within the bound:\n{}",
            text(m)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn grpc_calls_are_counted_by_method_and_code() {
    let m = CoordinatorMetrics::new();
    let channel = serve(&m).await;
    let mut client = AgentGatewayClient::new(channel.clone());
    let series = |code: &str| {
        format!("flotilla_coordinator_grpc_requests_total{{code=\"{code}\",method=\"{CONNECT}\"}}")
    };

    // Refused before any message: the status is in the response headers.
    let err = client.connect(connect_request("deny")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    eventually(&m, &series("PermissionDenied"), 1.0).await;

    // Ended cleanly, and failed mid-stream: the status is in the trailers.
    let ok = client
        .connect(connect_request("ok"))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(drain_stream(ok).await, tonic::Code::Ok);
    eventually(&m, &series("OK"), 1.0).await;
    let aborted = client
        .connect(connect_request("abort"))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(drain_stream(aborted).await, tonic::Code::Aborted);
    eventually(&m, &series("Aborted"), 1.0).await;

    // The client walks away from a stream that never ends.
    let mut hung = client
        .connect(connect_request("hang"))
        .await
        .expect("accepted")
        .into_inner();
    hung.message().await.expect("first message").expect("open");
    drop(hung);
    eventually(&m, &series("Cancelled"), 1.0).await;

    // A service this server does not have: Unimplemented, under its own (known) method.
    let err = FleetClient::new(channel.clone())
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    eventually(
        &m,
        "flotilla_coordinator_grpc_requests_total{code=\"Unimplemented\",method=\"/flotilla.fleet.v1.Fleet/ListClusters\"}",
        1.0,
    )
    .await;

    // A path no service defines is counted as `other`, not under its own label.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let err = grpc
        .unary::<pb::Ack, pb::Ack, _>(
            Request::new(pb::Ack::default()),
            http::uri::PathAndQuery::from_static("/made.Up/Path"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    eventually(
        &m,
        "flotilla_coordinator_grpc_requests_total{code=\"Unimplemented\",method=\"other\"}",
        1.0,
    )
    .await;
    assert!(!text(&m).contains("made.Up"));
}
