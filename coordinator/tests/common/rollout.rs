//! Rollout fixtures: a simulated fleet, the coordinator in-process (restartable on the same
//! address and data dir), and one real agent per cluster (`flotilla_agent::uplink::run`,
//! in-process, over mTLS on 127.0.0.1) — and the Fleet calls the rollout tests make.

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_agent::uplink::{self, BackoffConfig, CancellationToken, TlsIdentity, UplinkConfig};
use flotilla_coordinator::config::ClustersFile;
use flotilla_coordinator::server::{Coordinator, CoordinatorHandle, ServeOptions};
use flotilla_coordinator::store::{SledStore, Store};
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::fleet_client::FleetClient;
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::{clusters_file, eks_options, engine_options, operator, Pki};

/// A fleet under test: simulator, CA, coordinator and agents.
pub struct RolloutEnv {
    /// The simulated fleet.
    pub sim: Fleet,
    /// The CA.
    pub pki: Pki,
    /// The clusters file the coordinator serves.
    pub clusters: ClustersFile,
    /// The running coordinator.
    pub coord: Option<CoordinatorHandle>,
    /// The coordinator's address (kept across restarts).
    pub addr: SocketAddr,
    agents: Vec<(CancellationToken, JoinHandle<Result<(), uplink::UplinkError>>)>,
}

impl RolloutEnv {
    /// `n` clusters (`sim-1` …) of `scenario`, labelled `env` from `envs` (cycled), the
    /// coordinator, and an agent per cluster, connected.
    pub async fn start(scenario: &Scenario, n: usize, envs: &[&str]) -> RolloutEnv {
        let sim = Fleet::start_scenario(scenario, n, FleetOptions::default())
            .await
            .expect("fleet starts");
        sim.wait_settled(Duration::from_secs(60))
            .await
            .expect("fleet settles");
        let names: Vec<String> = (1..=n).map(|i| format!("sim-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let pki = Pki::new(&refs);
        let clusters = clusters_file(&sim, &refs, envs);
        let coord = start(&pki, SocketAddr::from(([127, 0, 0, 1], 0)), clusters.clone()).await;
        let addr = coord.local_addr();
        let mut env = RolloutEnv {
            sim,
            pki,
            clusters,
            coord: Some(coord),
            addr,
            agents: Vec::new(),
        };
        env.start_agents().await;
        env.wait_connected().await;
        env
    }

    /// A Fleet client as operator `alice`.
    pub fn fleet(&self) -> FleetClient<Channel> {
        operator(self.addr, &self.pki)
    }

    /// One agent per cluster, each its own `uplink::run` on this runtime.
    async fn start_agents(&mut self) {
        let dir = self.pki.path("sim");
        self.sim.write_files(&dir).expect("sim files");
        for c in &self.clusters.clusters {
            let (kube, _) =
                flotilla_agent::local::connect(Some(&dir.join(format!("kubeconfig-{}.yaml", c.name))), None)
                    .await
                    .expect("kube connects");
            let tls = TlsIdentity::from_dir(&self.pki.dir, &c.name).expect("agent tls files");
            let config = UplinkConfig {
                heartbeat: Duration::from_millis(500),
                resend: Duration::from_millis(500),
                progress_every: Duration::from_millis(200),
                backoff: BackoffConfig {
                    initial: Duration::from_millis(50),
                    max: Duration::from_millis(500),
                    healthy_after: Duration::from_secs(60),
                },
                server_name: Some("localhost".into()),
                ..UplinkConfig::new(
                    uplink::parse_coordinator(&format!("https://{}", self.addr)).expect("url"),
                    c.name.clone(),
                    tls,
                    kube.client().clone(),
                )
            };
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(uplink::run(config, shutdown.clone()));
            self.agents.push((shutdown, task));
        }
    }

    /// Waits until every cluster's agent is connected with an inventory.
    pub async fn wait_connected(&self) {
        let mut fleet = self.fleet();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let list = fleet
                .list_clusters(pb::ListClustersRequest::default())
                .await
                .map(|r| r.into_inner().clusters)
                .unwrap_or_default();
            if list.len() == self.clusters.clusters.len()
                && list.iter().all(|c| c.connected && c.inventory.is_some())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agents did not all connect: {:?}",
                list.iter().map(|c| (&c.id, c.connected)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the coordinator gracefully and starts it again on the same address and data dir.
    pub async fn restart_coordinator(&mut self) {
        self.restart_coordinator_with_store(|_| {}).await;
    }

    /// As [`RolloutEnv::restart_coordinator`], calling `edit` on its store while it is stopped
    /// (to leave what a crash at some point would have left).
    pub async fn restart_coordinator_with_store(&mut self, edit: impl FnOnce(&SledStore)) {
        let coord = self.coord.take().expect("coordinator running");
        coord.shutdown().await.expect("clean shutdown");
        {
            let store =
                SledStore::open(&self.pki.path("data")).expect("the stopped coordinator's store opens");
            edit(&store);
            store.flush().expect("flushed");
        }
        let coord = start(&self.pki, self.addr, self.clusters.clone()).await;
        assert_eq!(coord.local_addr(), self.addr);
        self.coord = Some(coord);
    }

    /// PDB violations the simulator counted on `cluster`.
    pub fn pdb_violations(&self, cluster: &str) -> u64 {
        self.sim.stats()["clusters"][cluster]["pdb_violations"]
            .as_u64()
            .expect("pdb_violations in stats")
    }

    /// The control plane's version of `cluster` as the agent last reported it.
    pub async fn version(&self, cluster: &str) -> String {
        self.fleet()
            .get_cluster(pb::GetClusterRequest {
                cluster_id: cluster.into(),
            })
            .await
            .expect("get cluster")
            .into_inner()
            .inventory
            .map(|i| i.version)
            .unwrap_or_default()
    }

    /// Stops the agents and the coordinator.
    pub async fn stop(mut self) {
        for (token, _) in &self.agents {
            token.cancel();
        }
        for (_, task) in self.agents.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        if let Some(c) = self.coord.take() {
            let _ = c.shutdown().await;
        }
    }
}

/// The coordinator on `listen` (port 0: any), data in the CA's scratch `data` dir.
async fn start(pki: &Pki, listen: SocketAddr, clusters: ClustersFile) -> CoordinatorHandle {
    let mut opts = ServeOptions::new(listen, pki.path("data"), pki.dir.clone(), clusters);
    opts.heartbeat_interval = Duration::from_secs(2);
    opts.engine = engine_options();
    opts.eks = eks_options();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Coordinator::start(opts.clone()).await {
            Ok(c) => return c,
            // The old listener may take a moment to be released after a restart.
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("coordinator start: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("coordinator starts: {e}"),
        }
    }
}

/// A stage.
pub fn stage(name: &str, selector: &str, max_parallel: u32) -> pb::StageSpec {
    pb::StageSpec {
        name: name.into(),
        selector: selector.into(),
        max_parallel,
        ..Default::default()
    }
}

/// Creates a rollout.
pub async fn create(fleet: &mut FleetClient<Channel>, req: pb::CreateRolloutRequest) -> pb::Rollout {
    fleet
        .create_rollout(req)
        .await
        .unwrap_or_else(|s| panic!("create rollout: {s:?}"))
        .into_inner()
}

/// The rollout now.
pub async fn get(fleet: &mut FleetClient<Channel>, id: &str) -> pb::Rollout {
    fleet
        .get_rollout(pb::GetRolloutRequest {
            rollout_id: id.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("get rollout: {s:?}"))
        .into_inner()
}

/// Polls the rollout until `done` holds (`timeout` only bounds a failure).
pub async fn wait_for(
    fleet: &mut FleetClient<Channel>,
    id: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&pb::Rollout) -> bool,
) -> pb::Rollout {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(r) = fleet
            .get_rollout(pb::GetRolloutRequest {
                rollout_id: id.into(),
            })
            .await
        {
            let r = r.into_inner();
            if done(&r) {
                return r;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "rollout {id}: gave up waiting for {what}; it is:\n{}",
                    describe(&r)
                );
            }
        } else if tokio::time::Instant::now() >= deadline {
            panic!("rollout {id}: gave up waiting for {what}; GetRollout fails");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the rollout is in `state`.
pub fn is(r: &pb::Rollout, state: pb::RolloutState) -> bool {
    r.state == state as i32
}

/// Every cluster of every stage.
pub fn clusters(r: &pb::Rollout) -> Vec<&pb::ClusterState> {
    r.stages.iter().flat_map(|s| s.clusters.iter()).collect()
}

/// The rollout, one line per stage and cluster, for failure messages.
pub fn describe(r: &pb::Rollout) -> String {
    let name = |s: i32| {
        pb::RolloutState::try_from(s)
            .map(|s| s.as_str_name())
            .unwrap_or("?")
    };
    let mut out = format!("{} {} reason={:?}\n", r.id, name(r.state), r.reason);
    for s in &r.stages {
        let spec = s.spec.clone().unwrap_or_default();
        out.push_str(&format!("  stage {} {} {}\n", s.index, spec.name, name(s.state)));
        for c in &s.clusters {
            out.push_str(&format!(
                "    {} {} op={:?} step={} reason={:?}\n",
                c.cluster_id,
                name(c.state),
                c.operation_id,
                c.current_step,
                c.reason
            ));
        }
    }
    out
}
