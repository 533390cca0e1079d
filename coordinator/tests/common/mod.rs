//! Shared test fixtures: a CA with agent, operator and viewer certificates; the simulated fleet and
//! a clusters file pointing at its EKS and Auto Scaling endpoints; the coordinator in-process;
//! tonic clients over mTLS; and a test-side agent that speaks AgentGateway and runs the agent's
//! real steps (flotilla-agent over kube-rs) against the simulated cluster.

#![allow(dead_code)]

pub mod agent;
pub mod rollout;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_eks::config::{Credentials, SharedCredentialsProvider};
use flotilla_coordinator::ca::{self, CreateOptions, Identity, Validity};
use flotilla_coordinator::config::{ClusterConfig, ClustersFile};
use flotilla_coordinator::eks::aws::ConnectOptions;
use flotilla_coordinator::eks::{Backoff, WaitOptions};
use flotilla_coordinator::engine::{EksWaits, EngineOptions};
use flotilla_coordinator::server::{Coordinator, CoordinatorHandle, ServeOptions};
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::fleet_client::FleetClient;
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

/// The certificates every test uses, in one CA directory.
pub struct Pki {
    /// Keeps the directory alive.
    pub tmp: tempfile::TempDir,
    /// The CA directory.
    pub dir: PathBuf,
}

impl Pki {
    /// A CA with `operator-alice` (operator), `operator-victor` (viewer) and an agent
    /// certificate per cluster in `clusters`.
    pub fn new(clusters: &[&str]) -> Pki {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("tls");
        ca::create(&dir, &CreateOptions::default()).expect("ca init");
        let v = Validity::days(30);
        ca::issue(&dir, &Identity::operator("alice", "operator").unwrap(), v).unwrap();
        ca::issue(&dir, &Identity::operator("victor", "viewer").unwrap(), v).unwrap();
        for c in clusters {
            ca::issue(&dir, &Identity::agent(c).unwrap(), v).unwrap();
        }
        Pki { tmp, dir }
    }

    /// A scratch directory next to the CA.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// The default scenario's fleet of `n` clusters (`sim-1` …), settled.
pub async fn start_fleet(n: usize) -> Fleet {
    let fleet = Fleet::start_scenario(&Scenario::default_scenario(), n, FleetOptions::default())
        .await
        .expect("fleet starts");
    fleet
        .wait_settled(Duration::from_secs(60))
        .await
        .expect("fleet settles");
    fleet
}

/// A clusters file for the fleet's clusters, with labels `env` from `envs` (cycled).
pub fn clusters_file(fleet: &Fleet, names: &[&str], envs: &[&str]) -> ClustersFile {
    let url = fleet.aws_url.clone().expect("fleet serves AWS");
    let region = fleet.aws().expect("aws").region.clone();
    ClustersFile {
        clusters: names
            .iter()
            .enumerate()
            .map(|(i, n)| ClusterConfig {
                name: n.to_string(),
                region: region.clone(),
                eks_cluster_name: n.to_string(),
                role_arn: None,
                eks_endpoint_url: Some(url.clone()),
                autoscaling_endpoint_url: Some(url.clone()),
                labels: [("env".to_string(), envs[i % envs.len()].to_string())].into(),
            })
            .collect(),
    }
}

/// The same clusters file as YAML (for the binary).
pub fn clusters_yaml(file: &ClustersFile) -> String {
    serde_yaml::to_string(file).expect("yaml")
}

/// The simulator's dummy credentials and short SDK retries.
pub fn eks_options() -> ConnectOptions {
    ConnectOptions {
        retry: RetryConfig::standard()
            .with_max_attempts(8)
            .with_initial_backoff(Duration::from_millis(20))
            .with_max_backoff(Duration::from_millis(200)),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "AKIDFLOTILLASIM",
            "not-a-secret",
            None,
            None,
            "flotilla-coordinator-tests",
        ))),
        ..ConnectOptions::default()
    }
}

/// Short polls for the simulator; timeouts only bound failures.
pub fn engine_options() -> EngineOptions {
    let w = WaitOptions {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            factor: 2.0,
            jitter: 0.2,
        },
        timeout: Duration::from_secs(180),
    };
    EngineOptions {
        tick: Duration::from_millis(200),
        waits: EksWaits {
            nodegroup: w,
            asg: w,
            update: w,
        },
    }
}

/// Starts the coordinator in-process on 127.0.0.1.
pub async fn start_coordinator(pki: &Pki, data: &Path, clusters: ClustersFile) -> CoordinatorHandle {
    let mut opts = ServeOptions::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        data.to_path_buf(),
        pki.dir.clone(),
        clusters,
    );
    opts.heartbeat_interval = Duration::from_secs(2);
    opts.engine = engine_options();
    opts.eks = eks_options();
    Coordinator::start(opts).await.expect("coordinator starts")
}

/// TLS for a client presenting `<dir>/<stem>.pem` (or no certificate), trusting `<ca_dir>/ca.pem`.
pub fn client_tls(ca_dir: &Path, cert_dir: &Path, stem: Option<&str>) -> ClientTlsConfig {
    let ca = std::fs::read_to_string(ca_dir.join("ca.pem")).expect("ca.pem");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(stem) = stem {
        let cert = std::fs::read_to_string(cert_dir.join(format!("{stem}.pem"))).expect("cert");
        let key = std::fs::read_to_string(cert_dir.join(format!("{stem}-key.pem"))).expect("key");
        tls = tls.identity(TlsIdentity::from_pem(cert, key));
    }
    tls
}

/// A channel to the coordinator at `addr` as `stem` (a file stem in the CA dir, e.g.
/// `operator-alice`), created lazily (handshake failures surface on the first call).
pub fn channel_with(addr: SocketAddr, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// A channel as one of the CA's identities.
pub fn channel(addr: SocketAddr, pki: &Pki, stem: &str) -> Channel {
    channel_with(addr, client_tls(&pki.dir, &pki.dir, Some(stem)))
}

/// A Fleet client as operator `alice`.
pub fn operator(addr: SocketAddr, pki: &Pki) -> FleetClient<Channel> {
    FleetClient::new(channel(addr, pki, "operator-alice"))
}

/// A Fleet client as viewer `victor`.
pub fn viewer(addr: SocketAddr, pki: &Pki) -> FleetClient<Channel> {
    FleetClient::new(channel(addr, pki, "operator-victor"))
}

/// Migration parameters for the default scenario: ng-old → a managed group of 4 nodes, with the
/// subnets left for the coordinator to take from the old group.
pub fn migration(ng: &str) -> pb::MigrationParams {
    pb::MigrationParams {
        from_nodegroup: "ng-old".into(),
        nodegroup: Some(pb::NodegroupTemplate {
            nodegroup_name: ng.into(),
            instance_types: vec!["m5.xlarge".into()],
            scaling_config: Some(pb::NodegroupScalingConfig {
                min_size: 4,
                max_size: 8,
                desired_size: 4,
            }),
            node_role: "arn:aws:iam::111122223333:role/eks-node".into(),
            ..Default::default()
        }),
        drain_concurrency: 2,
        node_timeout: Some(prost_types::Duration {
            seconds: 120,
            nanos: 0,
        }),
        ready_timeout: Some(prost_types::Duration {
            seconds: 180,
            nanos: 0,
        }),
        delete_emptydir_data: true,
        force: true,
        ..Default::default()
    }
}

/// Starts a migration of `cluster` as operator alice.
pub async fn start_migration(fleet: &mut FleetClient<Channel>, cluster: &str, ng: &str) -> pb::Operation {
    fleet
        .start_operation(pb::StartOperationRequest {
            cluster_id: cluster.into(),
            work: Some(pb::Work {
                kind: Some(pb::work::Kind::Migration(migration(ng))),
            }),
            dry_run: false,
        })
        .await
        .expect("start operation")
        .into_inner()
}

/// Polls GetOperation until `done` holds (or fails after `secs`).
pub async fn wait_operation(
    fleet: &mut FleetClient<Channel>,
    id: &str,
    secs: u64,
    done: impl Fn(&pb::Operation) -> bool,
) -> pb::Operation {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let op = fleet
            .get_operation(pb::GetOperationRequest {
                operation_id: id.into(),
            })
            .await
            .expect("get operation")
            .into_inner();
        if done(&op) {
            return op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {id} did not get there in {secs}s: {op:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stored log lines of an operation (messages), oldest first, through WatchOperation.
pub async fn log_lines(fleet: &mut FleetClient<Channel>, id: &str) -> Vec<String> {
    use futures::StreamExt;
    let mut stream = fleet
        .watch_operation(pb::WatchOperationRequest {
            operation_id: id.into(),
            since_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut lines = Vec::new();
    let mut seen_snapshot = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
        let ev = ev.expect("watch event");
        match ev.event {
            Some(pb::operation_event::Event::Snapshot(_)) => seen_snapshot = true,
            Some(pb::operation_event::Event::Log(l)) => lines.push(l.message),
            Some(pb::operation_event::Event::State(s)) if is_final(s) => break,
            _ => {}
        }
    }
    assert!(seen_snapshot, "a watch starts with a snapshot");
    lines
}

/// Whether an operation state is final.
pub fn is_final(state: i32) -> bool {
    matches!(
        pb::OperationState::try_from(state),
        Ok(pb::OperationState::Succeeded
            | pb::OperationState::Failed
            | pb::OperationState::Cancelled
            | pb::OperationState::RolledBack)
    )
}

/// How many lines contain `needle`.
pub fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}
