//! Rollout benchmark (prints a table; not a timed test): an upgrade rollout over N simulated EKS
//! clusters (default 1,000) in three stages (`env=dev`, `env=staging`, `env=prod`, a third each),
//! `maxConcurrency` 100, the simulator's `fast` delays, against ONE coordinator process.
//!
//! - **Processes.** This binary holds the simulated fleet (Kubernetes, EKS and Auto Scaling APIs
//!   on loopback) and one real agent (`flotilla_agent::uplink`, mTLS, kube-rs) per cluster, as
//!   the demo does. The coordinator runs alone in a child process: this binary re-executed with
//!   `FLOTILLA_BENCH_ROLE=coordinator`, which starts `flotilla_coordinator::server::Coordinator`
//!   (the library `flotilla-coordinator serve` runs) with the demo's engine timings (EKS polls
//!   from 100 ms to 1 s; the binary's default, 5–60 s, is for real EKS) and
//!   info logs to a file. Its CPU time (utime + stime) and peak RSS (VmHWM) come from
//!   /proc/<pid>, so they hold the coordinator and nothing else.
//! - **Lower limit.** What the simulated delays force on one cluster, per minor hop: the control
//!   plane update, then per managed node group `ceil(nodes / maxUnavailable)` replacement batches
//!   of (new node Ready + node replacement), then each add-on whose default version changes
//!   (UpdateAddon, one after another as the plan runs them). Pod start, readiness, eviction and
//!   termination, the agent's steps and every poll interval count as zero. A stage of `n`
//!   clusters takes at least `ceil(n / maxConcurrency)` such cluster times; the rollout at least
//!   the sum over stages plus the soaks between them.
//! - **Latency.** While the rollout runs, separate clients on their own connections sample
//!   GetRollout (every 100 ms), open a WatchRollout until its first event (every 500 ms), and keep
//!   one WatchRollout open, timing each event from the server's `at` stamp to its arrival. Their
//!   cost on the coordinator is measured apart: they go on alone for 10 s after the rollout ends.
//!
//! Knobs (environment): `FLOTILLA_BENCH_CLUSTERS` (1000), `FLOTILLA_BENCH_MAX_CONCURRENCY` (100),
//! `FLOTILLA_BENCH_TARGET` ("1.34"; "1.35" is two hops), `FLOTILLA_BENCH_NODES` (managed nodes per
//! cluster, 2), `FLOTILLA_BENCH_SOAK` (seconds after each stage but the last, 5); `FLOTILLA_BENCH_KEEP` keeps the
//! work directory (the coordinator's log, the clusters file, the CA).
//!
//! `FLOTILLA_BENCH_CLUSTERS=30 cargo bench -p flotilla-tests --bench rollout`

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use flotilla_agent::uplink::{self, CancellationToken, TlsIdentity, UplinkConfig};
use flotilla_coordinator::ca::{self, CreateOptions, Identity, Validity};
use flotilla_coordinator::cli::connect::{Client, Target};
use flotilla_coordinator::config::{ClusterConfig, ClustersFile};
use flotilla_coordinator::server::{Coordinator, ServeOptions};
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::telemetry;
use flotilla_sim::aws::catalog;
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;
use flotilla_tests::demo::{setup, spec::env_of};

const OPERATOR: &str = "bench";
const HEARTBEAT: Duration = Duration::from_secs(10);
const ROLE_ENV: &str = "FLOTILLA_BENCH_ROLE";
const LISTENING: &str = "bench-coordinator listening on ";
/// Add-ons the scenario installs (the simulator's default set).
const ADDONS: [&str; 3] = ["vpc-cni", "coredns", "kube-proxy"];
/// How long the samplers go on alone after the rollout ends (their own cost on the coordinator).
const SAMPLERS_ONLY: Duration = Duration::from_secs(10);
/// The target of the coordinator's overhead, as a share of wall time.
const OVERHEAD_TARGET: f64 = 0.01;

struct Knobs {
    clusters: usize,
    max_concurrency: usize,
    target: String,
    nodes: u32,
    soak: Duration,
}

fn knobs() -> anyhow::Result<Knobs> {
    fn env<T: std::str::FromStr>(name: &str, default: T, hint: &str) -> anyhow::Result<T> {
        match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}={v}: {hint}")),
            Err(_) => Ok(default),
        }
    }
    let k = Knobs {
        clusters: env("FLOTILLA_BENCH_CLUSTERS", 1000, "give a count, e.g. 30")?,
        max_concurrency: env("FLOTILLA_BENCH_MAX_CONCURRENCY", 100, "give a count, e.g. 100")?,
        target: env("FLOTILLA_BENCH_TARGET", "1.34".to_string(), "give 1.34 or 1.35")?,
        nodes: env("FLOTILLA_BENCH_NODES", 2, "give a node count, e.g. 2")?,
        soak: Duration::from_secs(env("FLOTILLA_BENCH_SOAK", 5, "give whole seconds, e.g. 5")?),
    };
    if !(3..=flotilla_tests::demo::MAX_CLUSTERS).contains(&k.clusters) {
        bail!(
            "FLOTILLA_BENCH_CLUSTERS={}: give 3 to {} (a third per stage)",
            k.clusters,
            flotilla_tests::demo::MAX_CLUSTERS
        );
    }
    if k.max_concurrency == 0 || k.nodes == 0 {
        bail!("FLOTILLA_BENCH_MAX_CONCURRENCY and FLOTILLA_BENCH_NODES must be at least 1");
    }
    if !["1.34", "1.35"].contains(&k.target.as_str()) {
        bail!(
            "FLOTILLA_BENCH_TARGET={}: give 1.34 or 1.35 (clusters start at 1.33)",
            k.target
        );
    }
    Ok(k)
}

// === The coordinator process ===

/// `FLOTILLA_BENCH_ROLE=coordinator`: serve until stdin closes or SIGTERM.
fn coordinator_main() -> anyhow::Result<()> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let data = PathBuf::from(var("FLOTILLA_BENCH_DATA_DIR")?);
    let tls = PathBuf::from(var("FLOTILLA_BENCH_TLS_DIR")?);
    let clusters = ClustersFile::load(Path::new(&var("FLOTILLA_BENCH_CLUSTERS_FILE")?))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let guard = {
        let _rt = runtime.enter();
        telemetry::init(
            "flotilla-coordinator",
            telemetry::LogFormat::Text,
            &telemetry::log_filter(None, "info"),
        )?
    };
    let served = runtime.block_on(async move {
        let mut opts = ServeOptions::new("127.0.0.1:0".parse().expect("address"), data, tls, clusters);
        opts.heartbeat_interval = HEARTBEAT;
        opts.engine = setup::engine_options();
        opts.eks = setup::eks_options();
        let handle = Coordinator::start(opts).await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{LISTENING}{}", handle.local_addr())?;
            out.flush()?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        handle.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    });
    guard.shutdown();
    served
}

struct CoordinatorChild {
    child: Child,
    url: String,
}

fn spawn_coordinator(dir: &Path, clusters_file: &Path) -> anyhow::Result<CoordinatorChild> {
    let log = std::fs::File::create(dir.join("coordinator.log"))?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(ROLE_ENV, "coordinator")
        .env("FLOTILLA_BENCH_DATA_DIR", dir.join("data"))
        .env("FLOTILLA_BENCH_TLS_DIR", dir.join("tls"))
        .env("FLOTILLA_BENCH_CLUSTERS_FILE", clusters_file)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting the coordinator process")?;
    let stdout = child.stdout.take().context("coordinator stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix(LISTENING) else {
        let _ = child.kill();
        bail!(
            "the coordinator process did not start (said {line:?}); see {}",
            dir.join("coordinator.log").display()
        );
    };
    Ok(CoordinatorChild {
        url: format!("https://{addr}"),
        child,
    })
}

// === /proc ===

fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// utime + stime of `pid` in seconds (`self` for this process).
fn cpu_seconds(pid: &str, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// === The fleet ===

/// Every cluster: Kubernetes 1.33, one EKS managed node group `ng-main` of `nodes` nodes, a web
/// Deployment and coredns (2 replicas each, PDB maxUnavailable 1), the default DaemonSets and
/// managed add-ons, `fast` delays.
fn scenario(nodes: u32) -> anyhow::Result<Scenario> {
    let yaml = format!(
        "kubernetesVersion: \"1.33\"\n\
         timing: {{preset: fast}}\n\
         nodeGroups:\n\
         \x20 - {{name: ng-main, type: managed, nodes: {nodes}}}\n\
         namespaces: [shop]\n\
         deployments:\n\
         \x20 - {{name: web, namespace: shop, replicas: 2, cpu: 100m, memory: 128Mi, pdb: {{maxUnavailable: 1}}}}\n\
         \x20 - {{name: coredns, namespace: kube-system, replicas: 2, cpu: 100m, memory: 70Mi, pdb: {{maxUnavailable: 1}}}}\n\
         pods: []\n"
    );
    Ok(Scenario::from_yaml(&yaml, "bench scenario")?)
}

fn rollout_yaml(k: &Knobs) -> String {
    // No soak after the last stage: nothing follows it.
    let soak = if k.soak.is_zero() {
        String::new()
    } else {
        format!(", soak: {}s", k.soak.as_secs())
    };
    format!(
        "name: bench-upgrade-{t}\n\
         work:\n\
         \x20 upgrade:\n\
         \x20   targetVersion: \"{t}\"\n\
         stages:\n\
         \x20 - {{name: dev, selector: env=dev, maxConcurrency: {m}{soak}}}\n\
         \x20 - {{name: staging, selector: env=staging, maxConcurrency: {m}{soak}}}\n\
         \x20 - {{name: prod, selector: env=prod, maxConcurrency: {m}}}\n",
        t = k.target,
        m = k.max_concurrency,
    )
}

/// The lower limit and how it was computed.
struct Limit {
    seconds: f64,
    per_cluster: f64,
    explain: Vec<String>,
}

fn lower_limit(k: &Knobs, scenario: &Scenario, stage_sizes: &[usize]) -> Limit {
    let c = scenario.for_cluster("sim-1");
    let eks = c.eks_timing();
    let node_ready = c.timing().node_ready_delay.as_secs_f64();
    let start = 33u32;
    let target: u32 = k.target.trim_start_matches("1.").parse().unwrap_or(34);
    let cp = eks.control_plane_update.as_secs_f64();
    // The managed group has no updateConfig: EKS (and the simulator) replace one node at a time.
    let batches = f64::from(k.nodes);
    let replace = node_ready + eks.node_replacement.as_secs_f64();
    let addon = eks.addon_update.as_secs_f64();
    let mut per_cluster = 0.0;
    let mut hops = Vec::new();
    for minor in start..target {
        let moved = ADDONS
            .iter()
            .filter(|a| catalog::default_version(a, minor) != catalog::default_version(a, minor + 1))
            .count();
        let hop = cp + batches * replace + moved as f64 * addon;
        per_cluster += hop;
        hops.push(format!(
            "1.{minor}→1.{}: {cp:.1} + {batches:.0}×({node_ready:.1} + {:.1}) + {moved}×{addon:.1} = {hop:.1}s",
            minor + 1,
            eks.node_replacement.as_secs_f64()
        ));
    }
    let waves: Vec<usize> = stage_sizes
        .iter()
        .map(|n| n.div_ceil(k.max_concurrency))
        .collect();
    let soaks = k.soak.as_secs_f64() * (stage_sizes.len().saturating_sub(1)) as f64;
    let seconds = waves.iter().sum::<usize>() as f64 * per_cluster + soaks;
    let explain = vec![
        "lower limit = Σ_stages ceil(clusters / maxConcurrency) × T_cluster + soaks between stages".to_string(),
        "T_cluster per hop = control-plane update + node batches × (node Ready + node replacement) + changed add-ons × add-on update".to_string(),
        format!("  {}", hops.join("; ")),
        format!(
            "  waves per stage {:?} (clusters {:?}, maxConcurrency {}), soaks {soaks:.0}s → {seconds:.1}s",
            waves, stage_sizes, k.max_concurrency
        ),
        "  pod start/readiness, evictions and termination, the agent's Inventory/Postflight and all polling count as zero".to_string(),
    ];
    Limit {
        seconds,
        per_cluster,
        explain,
    }
}

// === Latency sampling ===

#[derive(Default)]
struct Latencies {
    ms: Vec<f64>,
    errors: u64,
}

impl Latencies {
    fn pct(&self, p: usize) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v[(v.len() * p / 100).min(v.len() - 1)]
    }
    fn cell(&self) -> String {
        format!(
            "{:.1} / {:.1} ms (n={}, errors {})",
            self.pct(50),
            self.pct(99),
            self.ms.len(),
            self.errors
        )
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn is_final(state: i32) -> bool {
    [
        pb::RolloutState::Succeeded,
        pb::RolloutState::Failed,
        pb::RolloutState::Cancelled,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

async fn sample_get(mut client: Client, id: String, stop: Arc<AtomicBool>, out: Arc<Mutex<Latencies>>) {
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let r = client
            .fleet
            .get_rollout(pb::GetRolloutRequest {
                rollout_id: id.clone(),
            })
            .await;
        {
            let mut l = out.lock().expect("lock");
            match r {
                Ok(_) => l.ms.push(ms_since(t)),
                Err(_) => l.errors += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sample_watch_open(
    mut client: Client,
    id: String,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Latencies>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let first = async {
            let mut s = client
                .fleet
                .watch_rollout(pb::WatchRolloutRequest {
                    rollout_id: id.clone(),
                })
                .await?
                .into_inner();
            s.message().await
        }
        .await;
        {
            let mut l = out.lock().expect("lock");
            match first {
                Ok(Some(_)) => l.ms.push(ms_since(t)),
                _ => l.errors += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follows the rollout with one WatchRollout (reopened if it ends early), timing each event from
/// its `at` stamp; returns when the rollout is final.
async fn follow(mut client: Client, id: String, out: Arc<Mutex<Latencies>>) -> anyhow::Result<()> {
    loop {
        let mut stream = client
            .fleet
            .watch_rollout(pb::WatchRolloutRequest {
                rollout_id: id.clone(),
            })
            .await?
            .into_inner();
        while let Some(e) = stream.message().await? {
            if let Some(at) = e.at {
                let at =
                    SystemTime::UNIX_EPOCH + Duration::new(at.seconds.max(0) as u64, at.nanos.max(0) as u32);
                let delay = SystemTime::now()
                    .duration_since(at)
                    .unwrap_or_default()
                    .as_secs_f64();
                out.lock().expect("lock").ms.push(delay * 1e3);
            }
            let state = match &e.event {
                Some(pb::rollout_event::Event::State(s)) => Some(*s),
                Some(pb::rollout_event::Event::Snapshot(r)) => Some(r.state),
                _ => None,
            };
            if state.is_some_and(is_final) {
                return Ok(());
            }
        }
        out.lock().expect("lock").errors += 1;
    }
}

// === The run ===

struct Report {
    clusters: usize,
    stage_sizes: Vec<usize>,
    setup_s: f64,
    wall_s: f64,
    server_wall_s: f64,
    limit: Limit,
    cpu_rollout_s: f64,
    cpu_total_s: f64,
    rss_start_mib: f64,
    peak_mib: f64,
    bench_cpu_s: f64,
    samplers_cpu_per_s: f64,
    get: Latencies,
    watch_open: Latencies,
    watch_event: Latencies,
    outcome: String,
    succeeded: usize,
    at_target: usize,
    pdb_violations: u64,
    load: String,
    log_lines: usize,
    /// EKS and Auto Scaling calls during the rollout, by shape.
    aws_calls: Vec<(String, u64)>,
    /// TCP connections the coordinator opened to the simulated AWS APIs during the rollout.
    aws_connections: u64,
}

async fn connect(url: &str, tls: &Path) -> anyhow::Result<Client> {
    Target {
        coordinator: Some(url.to_string()),
        tls_dir: Some(tls.to_path_buf()),
        identity: Some(OPERATOR.to_string()),
    }
    .connect()
    .await
    .map_err(|e| anyhow::anyhow!("connect: {e}"))
}

async fn run(k: &Knobs, ticks: f64) -> anyhow::Result<Report> {
    let t_setup = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("flotilla-bench-rollout-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    let n = k.clusters;

    eprintln!("[{n}] starting {n} simulated clusters");
    let scenario = scenario(k.nodes)?;
    let fleet = Fleet::start_scenario(&scenario, n, FleetOptions::default()).await?;
    fleet
        .wait_settled(Duration::from_secs(60) + Duration::from_millis(200) * n as u32)
        .await?;
    let aws_url = fleet.aws_url.clone().context("the fleet serves no EKS API")?;
    let names: Vec<String> = fleet.clusters().iter().map(|c| c.name.clone()).collect();
    let file = ClustersFile {
        clusters: names
            .iter()
            .enumerate()
            .map(|(i, name)| ClusterConfig {
                name: name.clone(),
                region: scenario.region.clone(),
                eks_cluster_name: name.clone(),
                role_arn: None,
                eks_endpoint_url: Some(aws_url.clone()),
                autoscaling_endpoint_url: Some(aws_url.clone()),
                labels: [("env".to_string(), env_of(i, n).to_string())].into(),
            })
            .collect(),
    };
    let clusters_path = dir.join("clusters.yaml");
    std::fs::write(&clusters_path, serde_yaml::to_string(&file)?)?;
    let mut stage_sizes = [0usize; 3];
    for i in 0..n {
        let e = env_of(i, n);
        stage_sizes[["dev", "staging", "prod"]
            .iter()
            .position(|x| *x == e)
            .unwrap_or(2)] += 1;
    }

    eprintln!("[{n}] issuing certificates");
    let tls = dir.join("tls");
    {
        let tls = tls.clone();
        let names = names.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let validity = Validity::days(7);
            ca::create(&tls, &CreateOptions::default())?;
            ca::issue(&tls, &Identity::operator(OPERATOR, "operator")?, validity)?;
            for name in &names {
                ca::issue(&tls, &Identity::agent(name)?, validity)?;
            }
            Ok(())
        })
        .await??;
    }

    eprintln!("[{n}] starting the coordinator process");
    let mut coord = spawn_coordinator(&dir, &clusters_path)?;
    let pid = coord.child.id();
    let result = async {
        let rss_start_mib = status_mib(pid, "VmRSS:");
        eprintln!("[{n}] starting {n} agents");
        let uri = uplink::parse_coordinator(&coord.url)?;
        let stop_agents = CancellationToken::new();
        let mut agents = Vec::with_capacity(n);
        for name in &names {
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&fleet.kubeconfig(name))?;
            let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
            config.default_retry = false;
            let kube = kube::Client::try_from(config)?;
            let mut up = UplinkConfig::new(
                uri.clone(),
                name.clone(),
                TlsIdentity::from_dir(&tls, name)?,
                kube,
            );
            up.heartbeat = HEARTBEAT;
            agents.push(tokio::spawn(uplink::run(up, stop_agents.child_token())));
        }
        let mut client = connect(&coord.url, &tls).await?;
        let deadline = Instant::now() + Duration::from_secs(120) + Duration::from_millis(100) * n as u32;
        loop {
            let list = client
                .fleet
                .list_clusters(pb::ListClustersRequest::default())
                .await?
                .into_inner();
            let connected = list.clusters.iter().filter(|c| c.connected).count();
            if connected == n {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {connected} of {n} agents connected");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let setup_s = t_setup.elapsed().as_secs_f64();

        let yaml = rollout_yaml(k);
        let plan = flotilla_coordinator::cli::spec::parse_rollout(Path::new("bench-rollout.yaml"), &yaml)?;
        for c in fleet.clusters() {
            c.lock().stats_mut().reset();
        }
        eprintln!("[{n}] rollout: {}", yaml.replace('\n', " | "));
        let aws = fleet.aws().context("the fleet serves no EKS API")?;
        let calls0 = aws.calls();
        let connections0 = aws.connections();
        let (cpu0, bench_cpu0) = (cpu_seconds(&pid.to_string(), ticks), cpu_seconds("self", ticks));
        let t0 = Instant::now();
        let created = client.fleet.create_rollout(plan.request).await?.into_inner();
        let id = created.id.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let get = Arc::new(Mutex::new(Latencies::default()));
        let watch_open = Arc::new(Mutex::new(Latencies::default()));
        let watch_event = Arc::new(Mutex::new(Latencies::default()));
        let samplers = [
            tokio::spawn(sample_get(
                connect(&coord.url, &tls).await?,
                id.clone(),
                stop.clone(),
                get.clone(),
            )),
            tokio::spawn(sample_watch_open(
                connect(&coord.url, &tls).await?,
                id.clone(),
                stop.clone(),
                watch_open.clone(),
            )),
        ];
        let bound = Duration::from_secs(600) + Duration::from_secs(2) * n as u32;
        tokio::time::timeout(
            bound,
            follow(connect(&coord.url, &tls).await?, id.clone(), watch_event.clone()),
        )
        .await
        .with_context(|| format!("the rollout did not end within {bound:?}"))??;
        let wall_s = t0.elapsed().as_secs_f64();
        let cpu_rollout_s = cpu_seconds(&pid.to_string(), ticks) - cpu0;
        let mut aws_calls: Vec<(String, u64)> = aws
            .calls()
            .into_iter()
            .map(|(shape, n)| {
                let before = calls0.get(&shape).copied().unwrap_or(0);
                (shape, n - before)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        aws_calls.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let aws_connections = aws.connections() - connections0;
        let bench_cpu_s = cpu_seconds("self", ticks) - bench_cpu0;
        let load = load_average();
        // The samplers' own cost: the same calls for a while longer, the rollout now over.
        let (c1, t1) = (cpu_seconds(&pid.to_string(), ticks), Instant::now());
        tokio::time::sleep(SAMPLERS_ONLY).await;
        let samplers_cpu_per_s = (cpu_seconds(&pid.to_string(), ticks) - c1) / t1.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for s in samplers {
            let _ = s.await;
        }

        let ended = client
            .fleet
            .get_rollout(pb::GetRolloutRequest { rollout_id: id })
            .await?
            .into_inner();
        let secs = |t: &Option<prost_types::Timestamp>| {
            t.as_ref()
                .map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
        };
        let server_wall_s = secs(&ended.finished_at) - secs(&ended.created_at);
        let all: Vec<&pb::ClusterState> = ended.stages.iter().flat_map(|s| s.clusters.iter()).collect();
        let succeeded = all
            .iter()
            .filter(|c| c.state == pb::RolloutState::Succeeded as i32)
            .count();
        let mut at_target = 0;
        let mut pdb_violations = 0;
        for c in fleet.clusters() {
            let guard = c.lock();
            pdb_violations += guard.stats().stats().pdb_violations;
        }
        for name in &names {
            let cp = aws.lock().clusters.get(name).map(|c| format!("1.{}", c.minor));
            if cp.as_deref() == Some(k.target.as_str()) {
                at_target += 1;
            }
        }
        let outcome = format!(
            "{}{}",
            flotilla_coordinator::cli::render::rollout_state(ended.state),
            if ended.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", ended.reason)
            }
        );
        let peak_mib = status_mib(pid, "VmHWM:");
        let cpu_total_s = cpu_seconds(&pid.to_string(), ticks);

        stop_agents.cancel();
        for a in agents {
            let _ = tokio::time::timeout(Duration::from_secs(15), a).await;
        }
        let report = Report {
            clusters: n,
            stage_sizes: stage_sizes.to_vec(),
            setup_s,
            wall_s,
            server_wall_s,
            limit: lower_limit(k, &scenario, &stage_sizes),
            cpu_rollout_s,
            cpu_total_s,
            rss_start_mib,
            peak_mib,
            bench_cpu_s,
            samplers_cpu_per_s,
            get: std::mem::take(&mut get.lock().expect("lock")),
            watch_open: std::mem::take(&mut watch_open.lock().expect("lock")),
            watch_event: std::mem::take(&mut watch_event.lock().expect("lock")),
            outcome,
            succeeded,
            at_target,
            pdb_violations,
            load,
            log_lines: 0,
            aws_calls,
            aws_connections,
        };
        Ok(report)
    }
    .await;
    // SIGTERM: the coordinator flushes sled and exits.
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = tokio::task::spawn_blocking(move || coord.child.wait()).await;
    fleet.shutdown().await;
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            let kept = tmp.keep();
            eprintln!(
                "failed; the coordinator's log is kept in {}/coordinator.log",
                kept.display()
            );
            return Err(e);
        }
    };
    report.log_lines = std::fs::read_to_string(dir.join("coordinator.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    if std::env::var_os("FLOTILLA_BENCH_KEEP").is_some() {
        eprintln!("kept {}", tmp.keep().display());
    }
    Ok(report)
}

fn table(r: &Report, k: &Knobs) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "| {label:<54} | {value:<46} |");
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    line(
        "clusters (dev / staging / prod)",
        format!("{} ({:?})", r.clusters, r.stage_sizes),
    );
    line(
        "work",
        format!(
            "upgrade 1.33 → {}, maxConcurrency {}, soak {}s",
            k.target,
            k.max_concurrency,
            k.soak.as_secs()
        ),
    );
    line(
        "set-up: fleet, certs, coordinator, agents (s)",
        format!("{:.1}", r.setup_s),
    );
    line("outcome", r.outcome.clone());
    line(
        "clusters Succeeded / control plane at target",
        format!("{} / {}", r.succeeded, r.at_target),
    );
    line("PDB violations (all clusters)", r.pdb_violations.to_string());
    line(
        "wall time, CreateRollout → final event (s)",
        format!("{:.1}", r.wall_s),
    );
    line(
        "wall time, server created_at → finished_at (s)",
        format!("{:.1}", r.server_wall_s),
    );
    line(
        "lower limit from the simulated delays (s)",
        format!("{:.1} (T_cluster {:.1}s)", r.limit.seconds, r.limit.per_cluster),
    );
    line("wall / lower limit", format!("{:.2}", r.wall_s / r.limit.seconds));
    line(
        "coordinator CPU during the rollout (s)",
        format!("{:.2}", r.cpu_rollout_s),
    );
    line(
        "coordinator CPU / wall (target < 1%)",
        format!(
            "{:.2}% ({})",
            100.0 * r.cpu_rollout_s / r.wall_s,
            if r.cpu_rollout_s / r.wall_s < OVERHEAD_TARGET {
                "met"
            } else {
                "MISSED"
            }
        ),
    );
    line(
        "coordinator CPU / s, samplers alone after the end",
        format!(
            "{:.3} (≈ {:.1}s of the rollout's CPU)",
            r.samplers_cpu_per_s,
            r.samplers_cpu_per_s * r.wall_s
        ),
    );
    line(
        "coordinator CPU since start, incl. set-up (s)",
        format!("{:.2}", r.cpu_total_s),
    );
    line(
        "coordinator RSS after start / peak VmHWM (MiB)",
        format!("{:.0} / {:.0}", r.rss_start_mib, r.peak_mib),
    );
    line("coordinator log lines (info)", r.log_lines.to_string());
    let per_cluster = |n: u64| n as f64 / r.clusters as f64;
    line(
        "EKS + Auto Scaling calls per cluster (all)",
        format!("{:.1}", per_cluster(r.aws_calls.iter().map(|(_, n)| n).sum())),
    );
    for (shape, n) in &r.aws_calls {
        line(&format!("  {shape}"), format!("{:.2}", per_cluster(*n)));
    }
    line(
        "AWS API connections opened by the coordinator",
        r.aws_connections.to_string(),
    );
    line("GetRollout p50 / p99 (every 100 ms)", r.get.cell());
    line(
        "WatchRollout open → snapshot p50 / p99 (every 500 ms)",
        r.watch_open.cell(),
    );
    line(
        "WatchRollout event `at` → received p50 / p99",
        r.watch_event.cell(),
    );
    line(
        "sim + agents + clients process CPU during rollout (s)",
        format!("{:.1}", r.bench_cpu_s),
    );
    line(
        "load average at the end (1/5/15 min)",
        format!("{} on {cpus} CPUs", r.load),
    );
    out
}

fn main() -> anyhow::Result<()> {
    if std::env::var(ROLE_ENV).as_deref() == Ok("coordinator") {
        return coordinator_main();
    }
    let k = knobs()?;
    let ticks = clock_ticks();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(&k, ticks))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nUpgrade rollout over simulated EKS clusters against one coordinator process (fast delays)\n"
    )?;
    write!(out, "{}", table(&report, &k))?;
    writeln!(out, "\nLower limit:")?;
    for l in &report.limit.explain {
        writeln!(out, "  {l}")?;
    }
    writeln!(
        out,
        "\nNotes: the coordinator is its own process (this binary re-executed; the flotilla-coordinator library's \
         Coordinator with 100 ms–1 s EKS polls, info logs to a file); its CPU and RSS are from \
         /proc/<pid>. The simulator, the {} agents (real uplinks over mTLS, kube-rs) and the sampling clients share \
         the other process and the same CPUs; the machine is shared with other work (see the load average).",
        report.clusters
    )?;
    Ok(())
}
