//! One test's fleet across processes: the simulator, a CA, the coordinator (with the simulator's
//! EKS endpoints and the asked-for labels in its clusters file), optionally a TCP proxy between
//! agent and coordinator, the agent of the first cluster (optionally of every cluster), and the CLI
//! as the operator. Everything lives in one temporary
//! directory, kept (and named on stderr) when the test panics, or when `FLOTILLA_E2E_KEEP` is set,
//! so its logs can be read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::{AgentConfig, AgentProc};
use crate::cli::Cli;
use crate::coordinator::{CoordinatorProc, Pki, ServeConfig, OPERATOR};
use crate::proxy::Proxy;
use crate::sim::Sim;
use crate::{Error, Result};

/// What to start.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// Simulated clusters (`sim-1` …).
    pub clusters: usize,
    /// Extra `flotilla-sim serve` flags.
    pub sim_args: Vec<String>,
    /// Put a cuttable proxy between the agent and the coordinator.
    pub proxy: bool,
    /// Start the agent of `sim-1`.
    pub agent: bool,
    /// Also start an agent for every other cluster (`sim-2` …; logs `agent-sim-2` …), dialling
    /// the coordinator directly.
    pub all_agents: bool,
    /// Labels per cluster in the coordinator's clusters file (`labels[0]` for `sim-1`).
    pub labels: Vec<BTreeMap<String, String>>,
    /// Extra `flotilla-coordinator serve` flags.
    pub coordinator_args: Vec<String>,
    /// Extra environment variables of the coordinator.
    pub coordinator_env: Vec<(String, String)>,
    /// Extra `flotilla-agent` flags.
    pub agent_args: Vec<String>,
    /// Extra environment variables of the agent.
    pub agent_env: Vec<(String, String)>,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            clusters: 1,
            sim_args: Vec::new(),
            proxy: false,
            agent: true,
            all_agents: false,
            labels: Vec::new(),
            coordinator_args: Vec::new(),
            coordinator_env: Vec::new(),
            agent_args: Vec::new(),
            agent_env: Vec::new(),
        }
    }
}

/// The running fleet of one test.
#[derive(Debug)]
pub struct World {
    /// The simulator.
    pub sim: Sim,
    /// The CA directory.
    pub pki: Pki,
    /// The coordinator.
    pub coordinator: CoordinatorProc,
    /// The proxy the agent dials, if asked for.
    pub proxy: Option<Proxy>,
    /// The agent of `sim-1`, if running.
    pub agent: Option<AgentProc>,
    /// The agents of the other clusters (`sim-2` …), with [`WorldOptions::all_agents`].
    pub other_agents: Vec<(String, AgentProc)>,
    /// The CLI as the operator identity.
    pub cli: Cli,
    agent_config: AgentConfig,
    agent_starts: u32,
    dir: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl World {
    /// Starts everything `opts` asks for, in a new temporary directory named after `test`.
    pub async fn start(test: &str, opts: WorldOptions) -> Result<World> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("flotilla-{test}-"))
            .tempdir()
            .map_err(Error::io("creating the test directory"))?;
        let dir = tmp.path().to_path_buf();
        let logs = dir.join("logs");
        let sim_args: Vec<&str> = opts.sim_args.iter().map(String::as_str).collect();
        let sim = Sim::start(&dir, opts.clusters, &sim_args).await?;
        let names: Vec<String> = sim.endpoints.clusters.iter().map(|c| c.name.clone()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let pki = Pki::create(&dir.join("tls"), &refs).await?;
        let clusters = dir.join("clusters.yaml");
        std::fs::write(&clusters, sim.clusters_file_with_labels(&opts.labels))
            .map_err(Error::io(format!("writing {}", clusters.display())))?;
        let coordinator = CoordinatorProc::start(ServeConfig {
            tls_dir: pki.dir.clone(),
            data_dir: dir.join("data"),
            clusters,
            heartbeat_seconds: 10,
            log_dir: logs.clone(),
            log_filter: "info".into(),
            extra_args: opts.coordinator_args.clone(),
            env: opts.coordinator_env.clone(),
        })
        .await?;
        let proxy = if opts.proxy {
            Some(Proxy::start(coordinator.addr).await?)
        } else {
            None
        };
        let agent_url = match &proxy {
            Some(p) => format!("https://{}", p.addr()),
            None => coordinator.url(),
        };
        let cluster = names.first().cloned().unwrap_or_else(|| "sim-1".to_string());
        let agent_config = AgentConfig {
            coordinator: agent_url,
            kubeconfig: sim.cluster(&cluster)?.kubeconfig.clone(),
            cluster,
            tls_dir: pki.dir.clone(),
            log_dir: logs,
            extra_args: opts.agent_args.clone(),
            env: opts.agent_env.clone(),
        };
        let cli = Cli::new(coordinator.url(), &pki.dir, OPERATOR);
        let mut world = World {
            sim,
            pki,
            coordinator,
            proxy,
            agent: None,
            other_agents: Vec::new(),
            cli,
            agent_config,
            agent_starts: 0,
            dir,
            tmp: Some(tmp),
        };
        if opts.agent {
            world.start_agent()?;
        }
        if opts.all_agents {
            for cluster in names.into_iter().skip(1) {
                let config = AgentConfig {
                    coordinator: world.coordinator.url(),
                    kubeconfig: world.sim.cluster(&cluster)?.kubeconfig.clone(),
                    cluster: cluster.clone(),
                    tls_dir: world.pki.dir.clone(),
                    log_dir: world.dir.join("logs"),
                    extra_args: world.agent_config.extra_args.clone(),
                    env: world.agent_config.env.clone(),
                };
                let agent = AgentProc::start_named(&config, &format!("agent-{cluster}"))?;
                world.other_agents.push((cluster, agent));
            }
        }
        Ok(world)
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts (another) agent process for `sim-1`.
    pub fn start_agent(&mut self) -> Result<()> {
        self.agent_starts += 1;
        self.agent = Some(AgentProc::start(&self.agent_config, self.agent_starts)?);
        Ok(())
    }

    /// The running agent (an error if none).
    pub fn agent_mut(&mut self) -> Result<&mut AgentProc> {
        self.agent.as_mut().ok_or_else(|| Error::Parse {
            what: "the world".into(),
            detail: "no agent is running".into(),
        })
    }

    /// SIGKILLs the agent (its process is kept, for its logs).
    pub async fn kill_agent(&mut self) -> Result<()> {
        self.agent_mut()?.proc.kill().await
    }

    /// Waits until `flotilla clusters list -o json` shows `cluster` connected (or not).
    pub async fn wait_connected(&self, cluster: &str, connected: bool, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let run = self.cli.run(&["clusters", "list", "-o", "json"]).await?;
            let now = run.json().ok().and_then(|v| {
                v.get("clusters")?
                    .as_array()?
                    .iter()
                    .find(|c| c.get("id").and_then(|i| i.as_str()) == Some(cluster))?
                    .get("connected")?
                    .as_bool()
            });
            if now == Some(connected) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Process {
                    process: "flotilla clusters list".into(),
                    what: format!("{cluster} not connected={connected} within {timeout:?}"),
                    tail: run.to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("FLOTILLA_E2E_KEEP").is_some() {
            if let Some(tmp) = self.tmp.take() {
                let kept = tmp.keep();
                eprintln!(
                    "test failed; its processes' logs are kept in {}/logs",
                    kept.display()
                );
            }
        }
    }
}
