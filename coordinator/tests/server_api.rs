//! The coordinator in-process, called by real tonic clients over mTLS on 127.0.0.1: every
//! security refusal with its gRPC status (no certificate, another CA, expired, an agent speaking
//! for another cluster, a viewer mutating, an agent calling Fleet), malformed and unknown inputs
//! answered InvalidArgument / NotFound naming the field, and the health and reflection services.

mod common;

use std::time::Duration;

use common::agent::AgentSession;
use common::*;
use flotilla_coordinator::ca::{self, CreateOptions, Identity, Validity};
use flotilla_coordinator::config::{ClusterConfig, ClustersFile};
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::fleet_client::FleetClient;
use tonic::Code;

/// Clusters whose EKS endpoint is nothing (these tests never reach EKS successfully).
fn offline_clusters() -> ClustersFile {
    let c = |name: &str, env: &str| ClusterConfig {
        name: name.into(),
        region: "us-west-2".into(),
        eks_cluster_name: name.into(),
        role_arn: None,
        eks_endpoint_url: Some("http://127.0.0.1:9".into()),
        autoscaling_endpoint_url: Some("http://127.0.0.1:9".into()),
        labels: [("env".to_string(), env.to_string())].into(),
    };
    ClustersFile {
        clusters: vec![c("sim-1", "prod"), c("sim-2", "dev"), c("sim-3", "prod")],
    }
}

fn assert_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needles: &[&str]) {
    let s = r.expect_err("the call must be refused");
    assert_eq!(s.code(), code, "{s:?}");
    for n in needles {
        assert!(s.message().contains(n), "{n:?} not in {:?}", s.message());
    }
}

/// A connection the TLS handshake refused: with TLS 1.3 the client learns it when the server
/// closes the connection or sends its alert, which tonic reports as Unavailable, Cancelled or
/// Unknown with a transport error as the source — never an answer from a handler.
fn assert_refused_at_handshake<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
    let s = r.expect_err("the handshake must be refused");
    assert!(
        matches!(s.code(), Code::Unavailable | Code::Cancelled | Code::Unknown),
        "{s:?}"
    );
    let source = std::error::Error::source(&s).and_then(|e| e.downcast_ref::<tonic::transport::Error>());
    assert!(source.is_some(), "not a transport error: {s:?}");
}

fn list() -> pb::ListClustersRequest {
    pb::ListClustersRequest::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_refusals_each_get_their_status() {
    let pki = Pki::new(&["sim-1", "sim-2", "sim-9"]);
    let coord = start_coordinator(&pki, &pki.path("data"), offline_clusters()).await;
    let addr = coord.local_addr();

    // Accepted: an operator and a viewer may read.
    let listed = operator(addr, &pki)
        .list_clusters(list())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.clusters.len(), 3);
    viewer(addr, &pki)
        .list_clusters(list())
        .await
        .expect("viewers read");

    // No client certificate: the TLS handshake is refused, the call never reaches a handler.
    let no_cert = channel_with(addr, client_tls(&pki.dir, &pki.dir, None));
    let r = FleetClient::new(no_cert).list_clusters(list()).await;
    assert_refused_at_handshake(r);

    // A certificate from another CA (the client still trusts our server).
    let other = pki.path("other");
    ca::create(&other, &CreateOptions::default()).unwrap();
    ca::issue(
        &other,
        &Identity::operator("mallory", "operator").unwrap(),
        Validity::days(1),
    )
    .unwrap();
    let foreign = channel_with(addr, client_tls(&pki.dir, &other, Some("operator-mallory")));
    let r = FleetClient::new(foreign).list_clusters(list()).await;
    assert_refused_at_handshake(r);

    // An expired certificate from our CA (rcgen with a past not_after).
    let day = time::Duration::days(1);
    let now = time::OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - day * 3,
        not_after: now - day,
    };
    ca::issue(
        &pki.dir,
        &Identity::operator("stale", "operator").unwrap(),
        expired,
    )
    .unwrap();
    let r = FleetClient::new(channel(addr, &pki, "operator-stale"))
        .list_clusters(list())
        .await;
    assert_refused_at_handshake(r);

    // A viewer may not mutate.
    let r = viewer(addr, &pki)
        .start_operation(pb::StartOperationRequest {
            cluster_id: "sim-1".into(),
            work: Some(pb::Work {
                kind: Some(pb::work::Kind::Migration(migration("ng-new"))),
            }),
            dry_run: false,
        })
        .await;
    assert_status(r, Code::PermissionDenied, &["victor", "viewer"]);
    let r = viewer(addr, &pki)
        .cancel_operation(pb::CancelOperationRequest {
            operation_id: "op-1".into(),
            reason: String::new(),
        })
        .await;
    assert_status(r, Code::PermissionDenied, &["viewer"]);

    // An agent may not call Fleet; an operator may not open an agent session.
    let r = FleetClient::new(channel(addr, &pki, "agent-sim-1"))
        .list_clusters(list())
        .await;
    assert_status(r, Code::PermissionDenied, &["sim-1", "Fleet"]);
    let r = AgentSession::open(channel(addr, &pki, "operator-alice"), "sim-1", None).await;
    assert_status(r.map(|_| ()), Code::PermissionDenied, &["not an agent"]);

    // An agent speaking for another cluster, and one whose cluster is not configured.
    let r = AgentSession::open(channel(addr, &pki, "agent-sim-1"), "sim-2", None).await;
    assert_status(r.map(|_| ()), Code::PermissionDenied, &["sim-2", "sim-1"]);
    let r = AgentSession::open(channel(addr, &pki, "agent-sim-9"), "sim-9", None).await;
    assert_status(r.map(|_| ()), Code::NotFound, &["sim-9", "clusters file"]);

    // An agent reporting about another cluster's operation: the session ends, refused.
    let op = start_migration(&mut operator(addr, &pki), "sim-2", "ng-new").await;
    let mut s = AgentSession::open(channel(addr, &pki, "agent-sim-1"), "sim-1", None)
        .await
        .expect("own cluster accepted");
    s.send(pb::agent_message::Message::Result(pb::StepResult {
        trace_context: Default::default(),
        operation_id: op.id.clone(),
        step_id: "Taint".into(),
        attempt: 1,
        finished_at: None,
        outcome: Some(pb::step_result::Outcome::Ok(pb::StepOutput::default())),
    }))
    .await;
    let end = loop {
        match s.recv().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert_status(end, Code::PermissionDenied, &[&op.id, "sim-2"]);
    // The other cluster's operation did not move.
    let got = operator(addr, &pki)
        .get_operation(pb::GetOperationRequest {
            operation_id: op.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got
        .steps
        .iter()
        .all(|s| s.step_id != "Taint" || s.state == pb::StepState::Pending as i32));

    coord.shutdown().await.expect("clean shutdown");
}

fn start_req(cluster: &str, work: Option<pb::work::Kind>) -> pb::StartOperationRequest {
    pb::StartOperationRequest {
        cluster_id: cluster.into(),
        work: work.map(|kind| pb::Work { kind: Some(kind) }),
        dry_run: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_unknown_inputs_name_the_field() {
    let pki = Pki::new(&["sim-1"]);
    let coord = start_coordinator(&pki, &pki.path("data"), offline_clusters()).await;
    let addr = coord.local_addr();
    let mut fleet = operator(addr, &pki);

    // Clusters.
    let r = fleet
        .get_cluster(pb::GetClusterRequest {
            cluster_id: "nope".into(),
        })
        .await;
    assert_status(r, Code::NotFound, &["cluster_id", "nope", "sim-1"]);
    let r = fleet
        .get_cluster(pb::GetClusterRequest {
            cluster_id: String::new(),
        })
        .await;
    assert_status(r, Code::InvalidArgument, &["cluster_id"]);
    let c = fleet
        .get_cluster(pb::GetClusterRequest {
            cluster_id: "sim-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (c.id.as_str(), c.region.as_str(), c.connected),
        ("sim-1", "us-west-2", false)
    );
    let r = fleet
        .list_clusters(pb::ListClustersRequest {
            label_selector: "env in prod".into(),
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, &["label_selector"]);
    let ids = |sel: &str| {
        let mut f = fleet.clone();
        let sel = sel.to_string();
        async move {
            f.list_clusters(pb::ListClustersRequest {
                label_selector: sel,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .clusters
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("env=prod").await, ["sim-1", "sim-3"]);
    assert_eq!(ids("env!=prod").await, ["sim-2"]);
    assert_eq!(ids("env notin (prod),env").await, ["sim-2"]);
    assert_eq!(ids("!env").await, Vec::<String>::new());
    // Pages: one cluster a page, each token the last id shown, the last page without one.
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = fleet
            .list_clusters(pb::ListClustersRequest {
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.clusters.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, [["sim-1"], ["sim-2"], ["sim-3"]]);

    // StartOperation: everything is checked before anything is written.
    let r = fleet
        .start_operation(start_req("nope", Some(pb::work::Kind::Migration(migration("n")))))
        .await;
    assert_status(r, Code::NotFound, &["cluster_id", "nope"]);
    let r = fleet.start_operation(start_req("sim-1", None)).await;
    assert_status(r, Code::InvalidArgument, &["work"]);
    let mut too_many = migration("ng-new");
    too_many
        .nodegroup
        .as_mut()
        .unwrap()
        .scaling_config
        .as_mut()
        .unwrap()
        .desired_size = 99;
    let r = fleet
        .start_operation(start_req("sim-1", Some(pb::work::Kind::Migration(too_many))))
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        &["work.migration.nodegroup.scalingConfig.desiredSize", "99"],
    );
    let mut no_role = migration("ng-new");
    no_role.nodegroup.as_mut().unwrap().node_role.clear();
    let r = fleet
        .start_operation(start_req("sim-1", Some(pb::work::Kind::Migration(no_role))))
        .await;
    assert_status(r, Code::InvalidArgument, &["work.migration.nodegroup.nodeRole"]);
    let mut bad_taint = migration("ng-new");
    bad_taint.taint_key = "not a key".into();
    let r = fleet
        .start_operation(start_req("sim-1", Some(pb::work::Kind::Migration(bad_taint))))
        .await;
    assert_status(r, Code::InvalidArgument, &["work.migration.taintKey"]);
    let mut no_from = migration("ng-new");
    no_from.from_nodegroup.clear();
    let r = fleet
        .start_operation(start_req("sim-1", Some(pb::work::Kind::Migration(no_from))))
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        &["work.migration.fromNodegroup", "inventory"],
    );
    let r = fleet
        .start_operation(start_req(
            "sim-1",
            Some(pb::work::Kind::Upgrade(pb::UpgradeParams::default())),
        ))
        .await;
    assert_status(r, Code::InvalidArgument, &["work.upgrade.targetVersion"]);
    let r = fleet
        .start_operation(start_req(
            "sim-1",
            Some(pb::work::Kind::Upgrade(pb::UpgradeParams {
                target_version: "1.40".into(),
                ..Default::default()
            })),
        ))
        .await;
    // This cluster's EKS endpoint is dead and no agent reported: the current version, needed to
    // check the hop, is unknown, and the refusal says so instead of guessing.
    assert_status(r, Code::Unavailable, &["sim-1", "version is unknown"]);
    let none = fleet
        .list_operations(pb::ListOperationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(none.operations.is_empty(), "nothing was written: {none:?}");

    // A dry run plans without storing.
    let mut dry = start_req("sim-1", Some(pb::work::Kind::Migration(migration("ng-new"))));
    dry.dry_run = true;
    let planned = fleet.start_operation(dry).await.unwrap().into_inner();
    assert_eq!(planned.steps.len(), 8);
    assert_eq!(planned.state, pb::OperationState::Pending as i32);
    let r = fleet
        .get_operation(pb::GetOperationRequest {
            operation_id: planned.id.clone(),
        })
        .await;
    assert_status(r, Code::NotFound, &["operation_id"]);

    // One operation per cluster at a time.
    let first = start_migration(&mut fleet, "sim-1", "ng-new").await;
    assert_eq!(first.created_by, "spiffe://flotilla/operator/operator/alice");
    let r = fleet
        .start_operation(start_req(
            "sim-1",
            Some(pb::work::Kind::Migration(migration("ng-2"))),
        ))
        .await;
    assert_status(r, Code::FailedPrecondition, &[&first.id, "sim-1"]);

    // Operations: unknown ids and clusters, bad page tokens.
    let r = fleet
        .get_operation(pb::GetOperationRequest {
            operation_id: "op-404".into(),
        })
        .await;
    assert_status(r, Code::NotFound, &["operation_id", "op-404"]);
    let r = fleet
        .get_operation(pb::GetOperationRequest {
            operation_id: String::new(),
        })
        .await;
    assert_status(r, Code::InvalidArgument, &["operation_id"]);
    let r = fleet
        .list_operations(pb::ListOperationsRequest {
            cluster_id: "nope".into(),
            ..Default::default()
        })
        .await;
    assert_status(r, Code::NotFound, &["cluster_id", "nope"]);
    let r = fleet
        .list_operations(pb::ListOperationsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, &["page_token"]);
    let listed = fleet
        .list_operations(pb::ListOperationsRequest {
            cluster_id: "sim-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.operations.len(), 1);
    let r = fleet
        .watch_operation(pb::WatchOperationRequest {
            operation_id: "op-404".into(),
            since_sequence: 0,
        })
        .await;
    assert_status(r, Code::NotFound, &["op-404"]);

    // Cancel during CreateManagedNodegroup: nothing on the cluster to undo; a second cancel is
    // refused as the operation is over.
    let cancelled = fleet
        .cancel_operation(pb::CancelOperationRequest {
            operation_id: first.id.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, pb::OperationState::RolledBack as i32);
    let r = fleet
        .cancel_operation(pb::CancelOperationRequest {
            operation_id: first.id.clone(),
            reason: String::new(),
        })
        .await;
    assert_status(r, Code::FailedPrecondition, &["cannot be cancelled", "over"]);
    let lines = log_lines(&mut fleet, &first.id).await;
    assert_eq!(count(&lines, "cancel requested: test"), 1, "{lines:#?}");
    assert_eq!(count(&lines, "cancel refused"), 1, "{lines:#?}");
    // The cluster is free again.
    let c = fleet
        .get_cluster(pb::GetClusterRequest {
            cluster_id: "sim-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.current_operation_id, None);

    // No rollout yet; an unknown one is named.
    let r = fleet
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(r.rollouts.is_empty());
    let r = fleet
        .get_rollout(pb::GetRolloutRequest {
            rollout_id: "ro-nope".into(),
        })
        .await;
    assert_status(r, Code::NotFound, &["rollout_id", "ro-nope"]);

    // An agent session must open with Hello.
    let mut client = flotilla_proto::fleet::v1::agent_gateway_client::AgentGatewayClient::new(channel(
        addr,
        &pki,
        "agent-sim-1",
    ));
    let beat = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Heartbeat(pb::Heartbeat::default())),
    };
    let r = client.connect(tokio_stream::iter(vec![beat])).await;
    assert_status(r.map(|_| ()), Code::InvalidArgument, &["hello"]);

    coord.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_disconnected_after_three_heartbeat_intervals() {
    let pki = Pki::new(&["sim-1"]);
    let coord = start_coordinator(&pki, &pki.path("data"), offline_clusters()).await;
    let addr = coord.local_addr();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AgentMessage {
        message: Some(pb::agent_message::Message::Hello(pb::Hello {
            cluster_id: "sim-1".into(),
            agent_version: "0.0.1".into(),
            inventory: None,
            running: Vec::new(),
        })),
    })
    .await
    .unwrap();
    let mut client = flotilla_proto::fleet::v1::agent_gateway_client::AgentGatewayClient::new(channel(
        addr,
        &pki,
        "agent-sim-1",
    ));
    let mut inbound = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session opens")
        .into_inner();
    let mut fleet = viewer(addr, &pki);
    let connected = |fleet: &mut FleetClient<tonic::transport::Channel>| {
        let mut f = fleet.clone();
        async move {
            f.get_cluster(pb::GetClusterRequest {
                cluster_id: "sim-1".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .connected
        }
    };
    assert!(connected(&mut fleet).await);
    // The stream stays open (the sender is held) but nothing more is sent: the coordinator ends
    // the session after 3 × the 2 s heartbeat interval. The bound below only catches a hang.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the silent session was never ended");
    assert!(!connected(&mut fleet).await);
    let c = fleet
        .get_cluster(pb::GetClusterRequest {
            cluster_id: "sim-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.agent_version, "0.0.1");
    assert!(c.last_seen.is_some());
    drop(tx);
    coord.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let pki = Pki::new(&[]);
    let coord = start_coordinator(&pki, &pki.path("data"), offline_clusters()).await;
    let ch = channel(coord.local_addr(), &pki, "operator-victor");
    let mut health = HealthClient::new(ch.clone());
    for service in ["", "flotilla.fleet.v1.Fleet", "flotilla.fleet.v1.AgentGateway"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut reflection = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("answer in time")
        .expect("answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "flotilla.fleet.v1.Fleet",
        "flotilla.fleet.v1.AgentGateway",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    coord.shutdown().await.expect("clean shutdown");
}
