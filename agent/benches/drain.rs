//! Drain benchmark (prints a table; not a timed test): 50 old nodes, 1,000 pods in 40
//! Deployments with PodDisruptionBudgets (maxUnavailable 10%), readiness 2 s, termination 2 s.
//! Wall time of Flotilla's drain (the `flotilla-agent local drain` binary, so its peak RSS is its
//! own) against `kubectl drain -l … --ignore-daemonsets --delete-emptydir-data` and against the
//! lower limit the budgets impose; PDB violations and availability from the simulator's stats.
//!
//! `cargo bench -p flotilla-agent --bench drain` (add `-- --no-kubectl` to skip the slow kubectl run).

use std::collections::BTreeMap;
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
    (START + READINESS) * (waves() - 1) + TERMINATION
}

/// Disruptions each budget allows at the surged size: `maxUnavailable` of 2 × REPLICAS, rounded up.
fn per_wave() -> u32 {
    (2 * REPLICAS * MAX_UNAVAILABLE_PCT).div_ceil(100)
}

/// Waves of evictions each Deployment needs to move its pods off the old nodes.
fn waves() -> u32 {
    REPLICAS.div_ceil(per_wave())
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
    timeline: Timeline,
}

/// What the simulator did during one drain, time-stamped from its own change feed (in this
/// process, so no client sees it late): where the wall time went.
#[derive(Debug, Default)]
struct Timeline {
    /// An old node's pod got its deletion timestamp (evicted), per Deployment (`app` label).
    evictions: Vec<(Duration, String)>,
    /// A pod on a new node became Ready, per Deployment.
    ready: Vec<(Duration, String)>,
    /// A budget's `disruptionsAllowed` went up, per budget (named as its Deployment).
    room: Vec<(Duration, String)>,
    /// An old node's pod was deleted (termination over).
    gone: Vec<Duration>,
    /// Changes the recorder missed (it fell behind the feed); the figures are then partial.
    lagged: u64,
}

fn app_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("app"))
        .cloned()
        .unwrap_or_default()
}

/// Records the simulator's changes from now until `stop` is set, on its own thread (so that it
/// keeps up with the feed however busy the runtime serving the simulator is).
fn record(
    cluster: std::sync::Arc<flotilla_sim::cluster::Cluster>,
    t0: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Timeline> {
    use flotilla_sim::object::Object;
    use flotilla_sim::store::EventType;
    use tokio::sync::broadcast::error::RecvError;
    let (mut rx, old): (_, std::collections::HashSet<String>) = {
        let store = cluster.lock();
        let old = store
            .list(flotilla_sim::resources::Kind::Node, None)
            .filter_map(|e| match e.obj.as_ref() {
                Object::Node(n) if flotilla_agent::model::in_group(n, "ng-old") => n.metadata.name.clone(),
                _ => None,
            })
            .collect();
        (store.subscribe(), old)
    };
    std::thread::spawn(move || {
        let mut t = Timeline::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("recorder runtime");
        loop {
            // Wait for a change, looking at `stop` now and then.
            let next =
                rt.block_on(async { tokio::time::timeout(Duration::from_millis(50), rx.recv()).await });
            let c = match next {
                Ok(Ok(c)) => c,
                Ok(Err(RecvError::Lagged(n))) => {
                    t.lagged += n;
                    continue;
                }
                Ok(Err(RecvError::Closed)) => return t,
                Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => return t,
                Err(_) => continue,
            };
            let at = t0.elapsed();
            match (c.entry.obj.as_ref(), c.prev.as_deref()) {
                (Object::Pod(p), prev) => {
                    let node = flotilla_agent::model::pod_node(p).unwrap_or_default();
                    let prev = match prev {
                        Some(Object::Pod(q)) => Some(q),
                        _ => None,
                    };
                    if old.contains(node) {
                        if c.ty == EventType::Deleted {
                            t.gone.push(at);
                        } else if p.metadata.deletion_timestamp.is_some()
                            && prev.is_some_and(|q| q.metadata.deletion_timestamp.is_none())
                        {
                            t.evictions.push((at, app_of(&p.metadata)));
                        }
                    } else if !node.is_empty()
                        && c.ty != EventType::Deleted
                        && flotilla_agent::model::pod_ready(p)
                        && !prev.is_some_and(flotilla_agent::model::pod_ready)
                    {
                        t.ready.push((at, app_of(&p.metadata)));
                    }
                }
                (Object::PodDisruptionBudget(b), Some(Object::PodDisruptionBudget(prev))) => {
                    let allowed = |x: &k8s_openapi::api::policy::v1::PodDisruptionBudget| {
                        x.status.as_ref().map_or(0, |s| s.disruptions_allowed)
                    };
                    if allowed(b) > allowed(prev) {
                        t.room.push((at, b.metadata.name.clone().unwrap_or_default()));
                    }
                }
                _ => {}
            }
        }
    })
}

fn quantile(mut v: Vec<Duration>, q: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// Per Deployment: its evictions, its replacements becoming Ready, its budget rising.
type Times = (Vec<Duration>, Vec<Duration>, Vec<Duration>);

impl Timeline {
    /// Lines saying where the wall time went, against the ideal the lower limit assumes.
    fn breakdown(&self, wall: Duration) -> Vec<String> {
        let mut by_app: BTreeMap<&str, Times> = BTreeMap::new();
        for (at, app) in &self.evictions {
            by_app.entry(app).or_default().0.push(*at);
        }
        for (at, app) in &self.ready {
            by_app.entry(app).or_default().1.push(*at);
        }
        for (at, app) in &self.room {
            by_app.entry(app).or_default().2.push(*at);
        }
        let (mut spans, mut to_ready, mut to_room, mut reaction) = (vec![], vec![], vec![], vec![]);
        for (ev, ready, room) in by_app.values() {
            let (Some(first), Some(last)) = (ev.iter().min(), ev.iter().max()) else {
                continue;
            };
            spans.push(*last - *first);
            let mut ev = ev.clone();
            ev.sort();
            // Replacements that became Ready after the drain's first eviction, in order: the k-th
            // answers the k-th eviction.
            let mut ready: Vec<Duration> = ready.iter().copied().filter(|r| r > first).collect();
            ready.sort();
            for (e, r) in ev.iter().zip(&ready) {
                to_ready.push(r.saturating_sub(*e));
                if let Some(x) = room.iter().filter(|x| *x >= r).min() {
                    to_room.push(*x - *r);
                }
            }
            // Evictions after the first wave: how long after the budget last rose.
            for e in ev.iter().filter(|e| **e > *first + Duration::from_millis(500)) {
                if let Some(x) = room.iter().filter(|x| *x <= e).max() {
                    reaction.push(*e - *x);
                }
            }
        }
        let first = self.evictions.iter().map(|(t, _)| *t).min();
        let last = self.evictions.iter().map(|(t, _)| *t).max();
        let gone = self.gone.iter().max().copied();
        let mut out = vec![
            format!(
                "start: process spawned -> first eviction {}",
                secs(first)
            ),
            format!(
                "per Deployment, first -> last eviction: median {}, max {} (ideal {:.1} s = {} waves of start + readiness)",
                secs(quantile(spans.clone(), 0.5)),
                secs(quantile(spans, 1.0)),
                ((START + READINESS) * (waves() - 1)).as_secs_f64(),
                waves() - 1
            ),
            format!(
                "  simulator: eviction -> replacement Ready median {}, p90 {} (ideal {} ms: start + readiness)",
                ms(quantile(to_ready.clone(), 0.5)),
                ms(quantile(to_ready, 0.9)),
                (START + READINESS).as_millis()
            ),
            format!(
                "  simulator: replacement Ready -> budget allows one more median {}, p90 {}",
                ms(quantile(to_room.clone(), 0.5)),
                ms(quantile(to_room, 0.9))
            ),
            format!(
                "  agent: budget allows one more -> eviction reaches the server median {}, p90 {}",
                ms(quantile(reaction.clone(), 0.5)),
                ms(quantile(reaction, 0.9))
            ),
            format!(
                "end: last eviction -> last old pod gone {} (ideal {:.1} s termination; the simulator rounds deletion timestamps to the second, so a pod goes 1.5-2.5 s after its eviction); -> process exit {}",
                secs(last.zip(gone).map(|(l, g)| g.saturating_sub(l))),
                TERMINATION.as_secs_f64(),
                secs(gone.map(|g| wall.saturating_sub(g)))
            ),
        ];
        if self.lagged > 0 {
            out.push(format!(
                "(the recorder missed {} simulator changes; figures are partial)",
                self.lagged
            ));
        }
        out
    }
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
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = record(
        std::sync::Arc::clone(p.fleet.cluster("sim-1").expect("sim-1")),
        t,
        std::sync::Arc::clone(&stop),
    );
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
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let wall = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let timeline = recorder.join().expect("recorder");
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
        timeline,
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
        if label.starts_with("flotilla (all") {
            for line in r.timeline.breakdown(r.wall) {
                let _ = writeln!(out, "    {line}");
            }
        } else if label.starts_with("flotilla (default") {
            // Bound by the nodes drained at once rather than by the budgets: each node's last
            // pods still take their termination to go before the next node starts.
            let rounds = OLD_NODES.div_ceil(5);
            let _ = writeln!(
                out,
                "    bound by 5 nodes at once: {rounds} rounds, each at least the {:.1} s termination (>= {:.1} s)",
                TERMINATION.as_secs_f64(),
                (TERMINATION * rounds).as_secs_f64()
            );
        }
    }
    let _ = writeln!(
        out,
        "\nThe lower limit: each Deployment has {REPLICAS} pods on the old nodes; surged to {}, its budget allows {} \
         disruptions at a time, so it needs {} waves. A wave's replacements must start ({} ms) and become Ready \
         ({} ms) before the budget allows the next, and the last wave's pods still take their termination \
         ({} ms) to go: ({} - 1) x {} ms + {} ms = {:.1} s. It counts no API, controller, scheduler or process \
         time at all (the rows' wall time starts when the agent's process is spawned), so no drain reaches it; \
         the lines under each Flotilla row say where the rest went.",
        2 * REPLICAS,
        per_wave(),
        waves(),
        START.as_millis(),
        READINESS.as_millis(),
        TERMINATION.as_millis(),
        waves(),
        (START + READINESS).as_millis(),
        TERMINATION.as_millis(),
        limit.as_secs_f64()
    );
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
