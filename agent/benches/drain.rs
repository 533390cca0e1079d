//! Drain benchmark (prints a table; not a timed test): 50 old nodes, 1,000 pods in 40
//! Deployments with PodDisruptionBudgets (maxUnavailable 10%), readiness 2 s, termination 2 s.
//! Wall time of Flotilla's drain (the `flotilla-agent local drain` binary, so its peak RSS is its
//! own) against `kubectl drain -l … --ignore-daemonsets --delete-emptydir-data` and against the
//! lower limit the budgets impose; PDB violations and availability from the simulator's stats.
//!
//! `cargo bench -p flotilla-agent --bench drain` (add `-- --no-kubectl` to skip the slow kubectl run).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_agent::cluster::KubeCluster;
use flotilla_agent::local;
use flotilla_agent::steps::{surge_scale, taint, verify_ready, NoProgress};
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

const OLD_NODES: u32 = 50;
const DEPLOYMENTS: u32 = 40;
const REPLICAS: u32 = 25;
const START: Duration = Duration::from_millis(100);
const READINESS: Duration = Duration::from_secs(2);
const TERMINATION: Duration = Duration::from_secs(2);
const MAX_UNAVAILABLE_PCT: u32 = 10;
const NOT_YET: &str = "flotilla.test/not-yet";

fn scenario() -> Scenario {
    let mut y = String::new();
    y.push_str("kubernetesVersion: \"1.33\"\n");
    y.push_str(&format!(
        "timing: {{preset: fast, podStartDelay: {}ms, podReadinessDelay: {}ms, terminationSeconds: {}ms, nodeReadyDelay: 1s}}\n",
        START.as_millis(),
        READINESS.as_millis(),
        TERMINATION.as_millis()
    ));
    y.push_str("nodeGroups:\n");
    y.push_str(&format!("  - {{name: ng-old, type: self-managed, nodes: {OLD_NODES}, capacity: {{pods: 30, cpu: \"8\", memory: 32Gi}}}}\n"));
    y.push_str(&format!(
        "  - {{name: ng-new, type: managed, nodes: {OLD_NODES}, capacity: {{pods: 58, cpu: \"8\", memory: 32Gi}}, taints: [{{key: {NOT_YET}, effect: NoSchedule}}]}}\n"
    ));
    y.push_str("namespaces: [bench]\npods: []\nfaults: {}\ndeployments:\n");
    for i in 0..DEPLOYMENTS {
        y.push_str(&format!(
            "  - {{name: app-{i:02}, namespace: bench, replicas: {REPLICAS}, cpu: 10m, memory: 16Mi, terminationGracePeriodSeconds: {}, pdb: {{maxUnavailable: \"{MAX_UNAVAILABLE_PCT}%\"}}}}\n",
            TERMINATION.as_secs()
        ));
    }
    Scenario::from_yaml(&y, "bench.yaml").unwrap_or_else(|e| panic!("bench scenario: {e}"))
}

/// The fastest any drain can be: per Deployment, `n` old pods, `k` disruptions allowed at the
/// surged size; a wave of `k` evictions waits for its replacements (start + readiness) before the
/// next, and the last wave's pods still take the termination time to go.
fn lower_limit() -> Duration {
    let surged = 2 * REPLICAS;
    let k = (surged * MAX_UNAVAILABLE_PCT).div_ceil(100);
    let waves = REPLICAS.div_ceil(k);
    (START + READINESS) * (waves - 1) + TERMINATION
}

struct Prepared {
    fleet: Fleet,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

async fn prepare() -> Prepared {
    let t = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::start_scenario(&scenario(), 1, FleetOptions::default())
        .await
        .expect("fleet");
    fleet.write_files(dir.path()).expect("files");
    fleet
        .wait_settled(Duration::from_secs(300))
        .await
        .expect("settled");
    let kubeconfig = dir.path().join("kubeconfig-sim-1.yaml");
    let (cluster, _) = local::connect(Some(&kubeconfig), None).await.expect("connect");
    untaint_new(&cluster).await;
    taint::run(&cluster, &taint::Params::new("ng-old"), &NoProgress)
        .await
        .expect("taint");
    surge_scale::run(
        &cluster,
        &surge_scale::Params::new("ng-old", "ng-new", Default::default()),
        &NoProgress,
    )
    .await
    .expect("surge");
    verify_ready::run(
        &cluster,
        &verify_ready::Params::new("ng-old", "ng-new", Duration::from_secs(300)),
        &NoProgress,
    )
    .await
    .expect("verify");
    fleet
        .wait_settled(Duration::from_secs(120))
        .await
        .expect("settled after surge");
    eprintln!(
        "  prepared (settle, taint, surge, verify) in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Prepared {
        fleet,
        _dir: dir,
        kubeconfig,
    }
}

async fn untaint_new(cluster: &KubeCluster) {
    let nodes: Api<Node> = Api::all(cluster.client().clone());
    for mut n in nodes
        .list(&ListParams::default().labels("eks.amazonaws.com/nodegroup=ng-new"))
        .await
        .expect("nodes")
        .items
    {
        if let Some(t) = n.spec.as_mut().and_then(|s| s.taints.as_mut()) {
            t.retain(|t| t.key != NOT_YET);
        }
        let name = n.metadata.name.clone().unwrap_or_default();
        nodes
            .replace(&name, &Default::default(), &n)
            .await
            .expect("untaint");
    }
}

struct Run {
    wall: Duration,
    ok: bool,
    peak_rss_kib: Option<u64>,
    violations: u64,
    below_start: Vec<String>,
    evictions_refused: u64,
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn timed(p: &Prepared, mut cmd: Command) -> Run {
    let t = Instant::now();
    let log = std::env::var("BENCH_LOG").ok();
    let stderr = match &log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file"),
        ),
        None => Stdio::piped(),
    };
    let mut child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().expect("spawn");
    let pid = child.id();
    let mut peak = None;
    let status = loop {
        if let Some(v) = vm_hwm(pid) {
            peak = Some(peak.map_or(v, |p: u64| p.max(v)));
        }
        match child.try_wait().expect("wait") {
            Some(s) => break s,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let wall = t.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        eprintln!(
            "  command failed ({status}): {}",
            err.lines().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    let stats = p
        .fleet
        .cluster("sim-1")
        .expect("sim-1")
        .lock()
        .stats()
        .stats()
        .clone();
    let below_start = stats
        .deployments
        .iter()
        .filter(|(_, d)| matches!((d.available_at_start, d.min_available), (Some(s), Some(m)) if m < s))
        .map(|(n, _)| n.clone())
        .collect();
    Run {
        wall,
        ok: status.success(),
        peak_rss_kib: peak,
        violations: stats.pdb_violations,
        below_start,
        evictions_refused: stats.evictions_refused,
    }
}

fn flotilla(p: &Prepared, concurrency: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla-agent"));
    if let Ok(filter) = std::env::var("BENCH_AGENT_LOG") {
        c.args(["--log", &filter]);
    }
    c.args([
        "local",
        "drain",
        "--from",
        "ng-old",
        "--drain-concurrency",
        &concurrency.to_string(),
        "-o",
        "json",
    ])
    .arg("--kubeconfig")
    .arg(&p.kubeconfig);
    c
}

fn kubectl(p: &Prepared) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(&p.kubeconfig).args([
        "drain",
        "-l",
        "alpha.eksctl.io/nodegroup-name=ng-old",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
    ]);
    c
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let skip_kubectl = quick || std::env::args().any(|a| a == "--no-kubectl");
    let limit = lower_limit();
    let mut rows: Vec<(String, Run)> = Vec::new();
    for (label, concurrency) in [
        ("flotilla (all 50 nodes at once)", 50usize),
        ("flotilla (default, 5 nodes at once)", 5),
    ] {
        if quick && concurrency != 50 {
            continue;
        }
        eprintln!("{label}:");
        let p = prepare().await;
        let run = timed(&p, flotilla(&p, concurrency)).await;
        eprintln!("  drained in {:.1}s", run.wall.as_secs_f64());
        rows.push((label.to_string(), run));
        p.fleet.shutdown().await;
    }
    if !skip_kubectl {
        eprintln!("kubectl drain:");
        let p = prepare().await;
        let run = timed(&p, kubectl(&p)).await;
        eprintln!("  drained in {:.1}s", run.wall.as_secs_f64());
        rows.push((
            "kubectl drain -l … --ignore-daemonsets --delete-emptydir-data".into(),
            run,
        ));
        p.fleet.shutdown().await;
    }

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nDrain: {OLD_NODES} old nodes, {} pods in {DEPLOYMENTS} Deployments (PDB maxUnavailable {MAX_UNAVAILABLE_PCT}%), surge 100%, readiness {}s, termination grace {}s\n",
        DEPLOYMENTS * REPLICAS,
        READINESS.as_secs(),
        TERMINATION.as_secs()
    );
    let _ = writeln!(
        out,
        "{:<62} {:>9} {:>9} {:>6} {:>11} {:>6} {:>10}",
        "", "wall", "vs limit", "ok", "PDB viol.", "429s", "peak RSS"
    );
    let _ = writeln!(
        out,
        "{:<62} {:>8.1}s {:>8.2}x",
        "computed lower limit",
        limit.as_secs_f64(),
        1.0
    );
    for (label, r) in &rows {
        let rss = r
            .peak_rss_kib
            .map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let rss = if label.starts_with("kubectl") {
            format!("({rss})")
        } else {
            rss
        };
        let _ = writeln!(
            out,
            "{:<62} {:>8.1}s {:>8.2}x {:>6} {:>11} {:>6} {:>10}",
            label,
            r.wall.as_secs_f64(),
            r.wall.as_secs_f64() / limit.as_secs_f64(),
            if r.ok { "yes" } else { "NO" },
            r.violations,
            r.evictions_refused,
            rss
        );
        if !r.below_start.is_empty() {
            let _ = writeln!(
                out,
                "    below starting availability: {}",
                r.below_start.join(", ")
            );
        }
    }
    if let (Some((_, f)), Some((_, k))) = (rows.first(), rows.iter().find(|(l, _)| l.starts_with("kubectl")))
    {
        let speedup = k.wall.as_secs_f64() / f.wall.as_secs_f64();
        let _ = writeln!(
            out,
            "\nflotilla vs kubectl: {speedup:.1}x faster (target >= 5x); vs limit {:.2}x (target <= 1.2x)",
            f.wall.as_secs_f64() / limit.as_secs_f64()
        );
    }
}
