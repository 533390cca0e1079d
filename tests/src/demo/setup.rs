//! The demo's running pieces, in one process and all on 127.0.0.1: the simulated fleet (Kubernetes,
//! EKS and Auto Scaling APIs), a fresh CA with the coordinator's, every agent's and the operator's
//! certificates, the clusters file, the coordinator on a fresh data dir, and one agent per cluster
//! dialling it over mTLS with a kube-rs client of its simulated cluster. Started in that order,
//! stopped in the reverse one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_sdk_eks::config::{Credentials, SharedCredentialsProvider};
use flotilla_agent::uplink::{self, CancellationToken, TlsIdentity, UplinkConfig, UplinkError};
use flotilla_coordinator::ca::{self, CreateOptions, Identity, Validity};
use flotilla_coordinator::cli::connect::{Client, Target};
use flotilla_coordinator::config::{ClusterConfig, ClustersFile};
use flotilla_coordinator::eks::aws::ConnectOptions;
use flotilla_coordinator::eks::{Backoff, WaitOptions};
use flotilla_coordinator::engine::{EksWaits, EngineOptions};
use flotilla_coordinator::server::{Coordinator, CoordinatorHandle, ServeOptions};
use flotilla_proto::fleet::v1 as pb;
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::stats::ClusterStats;
use tokio::task::JoinHandle;

use super::spec::{self, env_of};
use super::{DemoError, DemoOptions};

/// The operator identity the demo's Fleet client uses (`operator-demo.pem`, role `operator`).
pub const OPERATOR: &str = "demo";
/// How often agents heartbeat (the coordinator drops a session silent for three of these).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Failure bound on the simulated clusters settling after start.
const SETTLE_BOUND: Duration = Duration::from_secs(120);

/// One simulated cluster as the demo knows it.
#[derive(Clone)]
pub struct DemoCluster {
    /// Its name: `sim-N`, the name in its agent's certificate and the EKS cluster name.
    pub name: String,
    /// Its `env` label.
    pub env: &'static str,
    /// A kube-rs client of its API (`default_retry = false`, as the agent wants it).
    pub kube: kube::Client,
}

/// Everything the demo started.
pub struct Stack {
    /// The work directory: `tls/`, `data/`, `sim/`, `clusters.yaml` and the rollout specs.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The simulated fleet.
    pub fleet: Fleet,
    /// The coordinator.
    pub coordinator: CoordinatorHandle,
    /// The clusters, in order (`sim-1` …).
    pub clusters: Vec<DemoCluster>,
    agents: Vec<(String, JoinHandle<Result<(), UplinkError>>)>,
    stop_agents: CancellationToken,
}

/// The simulator's dummy credentials (it checks SigV4 signatures, not keys) and short retries
/// (also what the rollout benchmark's coordinator process uses).
pub fn eks_options() -> ConnectOptions {
    ConnectOptions {
        retry: RetryConfig::standard()
            .with_max_attempts(8)
            .with_initial_backoff(Duration::from_millis(50))
            .with_max_backoff(Duration::from_millis(500)),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "AKIDFLOTILLADEMO",
            "not-a-secret",
            None,
            None,
            "flotilla-demo",
        ))),
        ..ConnectOptions::default()
    }
}

/// Short EKS polls (and retry-clock checks) for the simulator's second-scale delays; the timeouts only bound
/// failures (also what the rollout benchmark's coordinator process uses).
pub fn engine_options() -> EngineOptions {
    let wait = WaitOptions {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
            jitter: 0.2,
        },
        timeout: Duration::from_secs(15 * 60),
    };
    EngineOptions {
        tick: Duration::from_millis(200),
        waits: EksWaits {
            nodegroup: wait,
            asg: wait,
            update: wait,
        },
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `what` took `since` until now, for the progress lines.
fn took(since: Instant) -> String {
    format!("{:.1}s", since.elapsed().as_secs_f64())
}

impl Stack {
    /// Starts everything and waits until every agent is connected; progress lines go to `say`.
    pub async fn start(opts: &DemoOptions, say: &mut dyn Write) -> Result<Stack, DemoError> {
        let (dir, tmp) = match &opts.work_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io_error(d))?;
                (d.clone(), None)
            }
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("flotilla-demo-")
                    .tempdir()
                    .map_err(io_error(&std::env::temp_dir()))?;
                (tmp.path().to_owned(), Some(tmp))
            }
        };
        let n = opts.clusters;

        // The simulated fleet.
        let t = Instant::now();
        writeln!(
            say,
            "starting {n} simulated EKS cluster(s): Kubernetes {}, self-managed node group {} (4 nodes), \
             a shop app with PodDisruptionBudgets, EKS add-ons vpc-cni, coredns, kube-proxy",
            spec::START_VERSION,
            spec::OLD_NODEGROUP
        )?;
        let scenario = spec::scenario(opts.time_scale);
        let fleet = Fleet::start_scenario(&scenario, n, FleetOptions::default()).await?;
        fleet.wait_settled(SETTLE_BOUND).await?;
        let sim_dir = dir.join("sim");
        fleet.write_files(&sim_dir)?;
        let aws_url = fleet.aws_url.clone().ok_or_else(|| {
            DemoError::Setup("the simulated fleet serves no EKS API (not started from a scenario)".into())
        })?;
        let region = scenario.region.clone();
        writeln!(
            say,
            "  fleet ready in {}: Kubernetes APIs at {}/clusters/NAME, EKS and Auto Scaling at {aws_url}",
            took(t),
            fleet.server_url
        )?;

        let names: Vec<String> = fleet.clusters().iter().map(|c| c.name.clone()).collect();
        let clusters_file = ClustersFile {
            clusters: names
                .iter()
                .enumerate()
                .map(|(i, name)| ClusterConfig {
                    name: name.clone(),
                    region: region.clone(),
                    eks_cluster_name: name.clone(),
                    role_arn: None,
                    eks_endpoint_url: Some(aws_url.clone()),
                    autoscaling_endpoint_url: Some(aws_url.clone()),
                    labels: [("env".to_string(), env_of(i, n).to_string())].into(),
                })
                .collect(),
        };
        let clusters_path = dir.join("clusters.yaml");
        let yaml = serde_yaml::to_string(&clusters_file)
            .map_err(|e| DemoError::Setup(format!("clusters file: {e}")))?;
        std::fs::write(&clusters_path, yaml).map_err(io_error(&clusters_path))?;

        // A fresh CA: the coordinator's server certificate, one per agent, one operator.
        let t = Instant::now();
        let tls_dir = dir.join("tls");
        let validity = Validity::days(7);
        ca::create(&tls_dir, &CreateOptions::default())?;
        ca::issue(&tls_dir, &Identity::operator(OPERATOR, "operator")?, validity)?;
        for name in &names {
            ca::issue(&tls_dir, &Identity::agent(name)?, validity)?;
        }
        writeln!(
            say,
            "  CA and certificates in {}: coordinator, {n} agent(s), operator `{OPERATOR}` ({})",
            tls_dir.display(),
            took(t)
        )?;

        // The coordinator.
        let data_dir = dir.join("data");
        let mut serve = ServeOptions::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir.clone(),
            tls_dir.clone(),
            clusters_file,
        );
        serve.heartbeat_interval = HEARTBEAT;
        serve.engine = engine_options();
        serve.eks = eks_options();
        let coordinator = Coordinator::start(serve).await?;
        let url = format!("https://{}", coordinator.local_addr());
        writeln!(
            say,
            "  coordinator listening on {url} (data {}, clusters {})",
            data_dir.display(),
            clusters_path.display()
        )?;

        // One agent per cluster.
        let t = Instant::now();
        let coordinator_uri = uplink::parse_coordinator(&url)?;
        let stop_agents = CancellationToken::new();
        let mut clusters = Vec::with_capacity(n);
        let mut agents = Vec::with_capacity(n);
        for (i, name) in names.iter().enumerate() {
            let kube = kube_client(&fleet, name).await?;
            let tls = TlsIdentity::from_dir(&tls_dir, name)?;
            let mut config = UplinkConfig::new(coordinator_uri.clone(), name.clone(), tls, kube.clone());
            config.heartbeat = HEARTBEAT;
            config.tls_source = tls_dir.display().to_string();
            let stop = stop_agents.child_token();
            agents.push((name.clone(), tokio::spawn(uplink::run(config, stop))));
            clusters.push(DemoCluster {
                name: name.clone(),
                env: env_of(i, n),
                kube,
            });
        }
        let mut stack = Stack {
            dir,
            _tmp: tmp,
            fleet,
            coordinator,
            clusters,
            agents,
            stop_agents,
        };
        if let Err(e) = stack.wait_connected().await {
            stack.shutdown().await;
            return Err(e);
        }
        writeln!(say, "  {n} agent(s) connected over mTLS in {}", took(t))?;
        Ok(stack)
    }

    /// Waits until the coordinator lists every cluster as connected; an agent that stopped (a
    /// configuration it can never work with) fails the wait with its error.
    async fn wait_connected(&mut self) -> Result<(), DemoError> {
        let mut client = self.client().await?;
        let bound = Duration::from_secs(60) + Duration::from_millis(100) * self.clusters.len() as u32;
        let deadline = Instant::now() + bound;
        loop {
            if let Some(i) = self.agents.iter().position(|(_, h)| h.is_finished()) {
                let (cluster, handle) = self.agents.swap_remove(i);
                return Err(match handle.await {
                    Ok(Err(source)) => DemoError::Agent { cluster, source },
                    Ok(Ok(())) => DemoError::Setup(format!("the agent of {cluster} stopped at start")),
                    Err(e) => DemoError::Setup(format!("the agent of {cluster} panicked: {e}")),
                });
            }
            let list = client
                .fleet
                .list_clusters(pb::ListClustersRequest::default())
                .await
                .map_err(|s| DemoError::api("ListClusters", client.status(s)))?
                .into_inner();
            let waiting: Vec<&str> = list
                .clusters
                .iter()
                .filter(|c| !c.connected)
                .map(|c| c.id.as_str())
                .collect();
            if waiting.is_empty() && list.clusters.len() == self.clusters.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let shown = waiting.iter().take(10).copied().collect::<Vec<_>>().join(", ");
                return Err(DemoError::Timeout(format!(
                    "{} agent(s) not connected after {}s: {shown}",
                    waiting.len(),
                    bound.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The coordinator's URL.
    pub fn coordinator_url(&self) -> String {
        format!("https://{}", self.coordinator.local_addr())
    }

    /// The CA directory (also holds the operator's certificate).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// A Fleet client over mTLS as the operator, connected the way the `flotilla` CLI connects.
    pub async fn client(&self) -> Result<Client, DemoError> {
        let target = Target {
            coordinator: Some(self.coordinator_url()),
            tls_dir: Some(self.tls_dir()),
            identity: Some(OPERATOR.to_string()),
        };
        target.connect().await.map_err(|e| DemoError::api("connect", e))
    }

    /// Starts measuring afresh on every cluster: counters to zero, each Deployment's baseline =
    /// its available replicas now.
    pub fn reset_stats(&self) {
        for c in self.fleet.clusters() {
            c.lock().stats_mut().reset();
        }
    }

    /// The simulator's zero-downtime statistics of one cluster since the last reset.
    pub fn stats(&self, cluster: &str) -> ClusterStats {
        self.fleet
            .cluster(cluster)
            .map(|c| c.lock().stats().stats().clone())
            .unwrap_or_default()
    }

    /// Stops the agents (running steps stop at a safe point), then the coordinator (state
    /// flushed), then the simulated fleet.
    pub async fn shutdown(self) {
        self.stop_agents.cancel();
        for (cluster, handle) in self.agents {
            match tokio::time::timeout(Duration::from_secs(15), handle).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(cluster, error = %e, "agent ended with an error"),
                Ok(Err(e)) => tracing::warn!(cluster, error = %e, "agent task failed"),
                Err(_) => tracing::warn!(cluster, "agent did not stop within 15s"),
            }
        }
        if let Err(e) = self.coordinator.shutdown().await {
            tracing::warn!(error = %e, "coordinator shutdown");
        }
        self.fleet.shutdown().await;
    }
}

/// A kube-rs client of one simulated cluster from its kubeconfig, without kube's own retries (the
/// agent paces evictions' 429s itself).
async fn kube_client(fleet: &Fleet, name: &str) -> Result<kube::Client, DemoError> {
    let err = |message: String| DemoError::Kube {
        cluster: name.to_string(),
        message,
    };
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&fleet.kubeconfig(name))
        .map_err(|e| err(format!("kubeconfig: {e}")))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(format!("kubeconfig: {e}")))?;
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| err(format!("client: {e}")))
}
