//! Agent sessions benchmark (prints a table; not a timed test): N synthetic agents — in-process
//! tonic clients, each with its own agent certificate over real mTLS on loopback — open their
//! `AgentGateway.Connect` session with a Hello carrying a default-scenario-sized inventory, then
//! heartbeat every 10 s, against ONE `flotilla-coordinator serve` child process (release build)
//! whose clusters file lists all N clusters. Measured on the coordinator alone, from
//! /proc/<pid>/status (VmRSS, VmHWM) and /proc/<pid>/stat (utime + stime): start-up, memory
//! after start, with every session open and at peak; CPU seconds per wall second while the
//! sessions only heartbeat, and while an operator client issues ListClusters / GetCluster in a
//! loop (their p50 and p99 latency: one page of ListClusters, every page of it, GetCluster). Also: time until every session is open (and per-session
//! p50/p99), sessions lost, and whether `flotilla clusters list` copes with the fleet.
//!
//! `cargo bench -p flotilla-tests --bench sessions [-- --sessions 1000,10000 --steady 30 --query 20]`

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flotilla_coordinator::ca::{self, CreateOptions, Identity, Validity};
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::agent_gateway_client::AgentGatewayClient;
use flotilla_tests::coordinator::{CoordinatorProc, ServeConfig};
use prost::Message;
use rand::Rng;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

const HEARTBEAT: Duration = Duration::from_secs(10);
/// Sessions being opened at once.
const CONNECT_CONCURRENCY: usize = 256;
const RSS_TARGET_MIB: f64 = 1024.0;
const P99_TARGET_MS: f64 = 50.0;

struct Args {
    sessions: Vec<usize>,
    steady: Duration,
    query: Duration,
}

fn args() -> anyhow::Result<Args> {
    let raw: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        raw.iter()
            .position(|a| a == name)
            .and_then(|i| raw.get(i + 1))
            .cloned()
    };
    let sessions = match value("--sessions") {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .with_context(|| format!("--sessions {list}: write e.g. 1000,10000"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => vec![1_000, 10_000],
    };
    let secs = |name: &str, default: u64| -> anyhow::Result<Duration> {
        match value(name) {
            Some(v) => Ok(Duration::from_secs(
                v.parse()
                    .with_context(|| format!("{name} {v}: write whole seconds"))?,
            )),
            None => Ok(Duration::from_secs(default)),
        }
    };
    Ok(Args {
        sessions,
        steady: secs("--steady", 30)?,
        query: secs("--query", 20)?,
    })
}

// === /proc ===

/// A field of /proc/<pid>/status in MiB (`VmRSS:`, `VmHWM:`).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: state is field 3; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks_per_second
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The soft limit on open files of this process (children inherit it).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// === Set-up ===

fn cluster_name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// A CA with the operator `bench` and an agent certificate per cluster (issued on two threads).
fn make_pki(dir: &Path, n: usize) -> anyhow::Result<()> {
    ca::create(dir, &CreateOptions::default()).context("ca init")?;
    let validity = Validity::days(7);
    ca::issue(dir, &Identity::operator("bench", "operator")?, validity).context("operator cert")?;
    let threads = 2;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> anyhow::Result<()> {
                    for i in (t..n).step_by(threads) {
                        ca::issue(dir, &Identity::agent(&cluster_name(i))?, validity)
                            .with_context(|| format!("agent cert {i}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a cert thread panicked"))?)
    })
}

fn clusters_file(n: usize) -> String {
    let mut yaml = String::with_capacity(n * 120);
    yaml.push_str("clusters:\n");
    for i in 0..n {
        let env = ["dev", "staging", "prod"][i % 3];
        let _ = write!(
            yaml,
            "  - name: {c}\n    region: us-west-2\n    eksClusterName: {c}\n    labels: {{env: {env}}}\n",
            c = cluster_name(i)
        );
    }
    yaml
}

/// An inventory the size of the simulator's default scenario: one self-managed group of four
/// nodes, six Deployments, one PodDisruptionBudget that allows no disruption.
fn inventory(i: usize) -> pb::Inventory {
    let kubelet = "v1.33.5-eks-3025e55".to_string();
    let nodes = (0..4)
        .map(|n| pb::Node {
            name: format!(
                "ip-10-{}-{}-{}.us-west-2.compute.internal",
                i % 250,
                i / 250 % 250,
                10 + n
            ),
            group: Some("ng-old".into()),
            group_kind: pb::NodeGroupKind::SelfManaged as i32,
            kubelet_version: kubelet.clone(),
            ready: true,
            schedulable: true,
        })
        .collect();
    let deployments = [
        ("shop/web", 4, None),
        ("shop/api", 3, None),
        ("shop/worker", 2, Some("shop/worker")),
        ("shop/cache", 1, None),
        ("kube-system/coredns", 2, None),
        ("kube-system/aws-load-balancer-controller", 2, None),
    ]
    .into_iter()
    .map(|(name, replicas, hpa)| pb::Deployment {
        name: name.into(),
        replicas,
        available: replicas,
        hpa: hpa.map(str::to_string),
    })
    .collect();
    pb::Inventory {
        addon_workloads: [
            ("coredns", "eks/coredns:v1.11.4-eksbuild.2"),
            ("kube-proxy", "eks/kube-proxy:v1.33.5-minimal-eksbuild.1"),
            ("vpc-cni", "amazon-k8s-cni:v1.20.4-eksbuild.1"),
        ]
        .into_iter()
        .map(|(addon, image)| pb::AddonWorkload {
            addon: addon.into(),
            image: format!("602401143452.dkr.ecr.us-west-2.amazonaws.com/{image}"),
        })
        .collect(),
        addon_workloads_reported: true,
        deprecated_api_scan: Some(pb::DeprecatedApiScan::default()),
        version: "1.33".into(),
        node_groups: vec![pb::NodeGroup {
            name: "ng-old".into(),
            kind: pb::NodeGroupKind::SelfManaged as i32,
            node_count: 4,
            ready_count: 4,
            kubelet_versions: vec![kubelet],
        }],
        nodes,
        deployments,
        blocking_pdbs: vec![pb::PodDisruptionBudget {
            name: "shop/cache".into(),
            expected: 1,
            healthy: 1,
            desired: 1,
        }],
    }
}

fn agent_message(m: pb::agent_message::Message) -> pb::AgentMessage {
    pb::AgentMessage { message: Some(m) }
}

fn now_ts() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// One synthetic agent: connect (TCP, TLS with its certificate, HTTP/2), open the session with
/// Hello, report the time that took, then heartbeat every 10 s (first beat at a random offset,
/// as agents started at different times would) until `stop`; counts a session that ends early.
async fn agent(
    i: usize,
    endpoint: Endpoint,
    permits: Arc<Semaphore>,
    opened: mpsc::UnboundedSender<Result<Duration, String>>,
    lost: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let cluster = cluster_name(i);
    let started;
    let (tx, mut inbound) = {
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
                let (tx, rx) = mpsc::channel(8);
                tx.send(agent_message(pb::agent_message::Message::Hello(pb::Hello {
                    cluster_id: cluster.clone(),
                    agent_version: "0.1.0-bench".into(),
                    inventory: Some(inventory(i)),
                    running: Vec::new(),
                })))
                .await
                .map_err(|e| format!("queue Hello: {e}"))?;
                let response = AgentGatewayClient::new(channel)
                    .connect(ReceiverStream::new(rx))
                    .await
                    .map_err(|s| format!("Connect: {s}"))?;
                Ok::<_, String>((tx, response.into_inner()))
            }
            .await;
            match result {
                Ok(session) => break session,
                Err(e) if attempt >= 5 => {
                    let _ = opened.send(Err(format!("{cluster}: {e}")));
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
            }
        }
    };
    let _ = opened.send(Ok(started.elapsed()));
    let offset = Duration::from_millis(rand::rng().random_range(0..HEARTBEAT.as_millis() as u64));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + offset, HEARTBEAT);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = beat.tick() => {
                let hb = agent_message(pb::agent_message::Message::Heartbeat(pb::Heartbeat {
                    sent_at: Some(now_ts()),
                    running_steps: 0,
                }));
                if tx.send(hb).await.is_err() {
                    lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            m = inbound.message() => match m {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    if !*stop.borrow() {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
            },
        }
    }
}

// === Measuring ===

#[derive(Debug, Default, Clone)]
struct Latencies {
    ms: Vec<f64>,
    errors: u64,
}

impl Latencies {
    fn pct(&self, p: usize) -> f64 {
        let mut v = self.ms.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[(v.len() * p / 100).min(v.len() - 1)]
    }
}

#[derive(Debug, Default)]
struct Row {
    sessions: usize,
    certs_s: f64,
    start_s: f64,
    rss_start_mib: f64,
    connect_all_s: f64,
    connect: Latencies,
    connect_failed: usize,
    rss_connected_mib: f64,
    cpu_idle: f64,
    cpu_query: f64,
    /// ListClusters, one page (the default page size).
    list: Latencies,
    list_bytes: usize,
    /// ListClusters, every page (the whole fleet), and how many pages that took.
    list_all: Latencies,
    list_pages: usize,
    get: Latencies,
    peak_mib: f64,
    rss_end_mib: f64,
    lost: u64,
    cli_list: String,
}

/// Every cluster, following `next_page_token`; and how many pages that took.
async fn list_all(
    fleet: &mut pb::fleet_client::FleetClient<tonic::transport::Channel>,
) -> anyhow::Result<(Vec<pb::Cluster>, usize)> {
    let (mut clusters, mut pages, mut page_token) = (Vec::new(), 0, String::new());
    loop {
        let page = fleet
            .list_clusters(pb::ListClustersRequest {
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        pages += 1;
        clusters.extend(page.clusters);
        if page.next_page_token.is_empty() {
            return Ok((clusters, pages));
        }
        page_token = page.next_page_token;
    }
}

async fn run(n: usize, args: &Args, ticks: f64) -> anyhow::Result<Row> {
    let mut row = Row {
        sessions: n,
        ..Row::default()
    };
    let tmp = tempfile::Builder::new()
        .prefix("flotilla-bench-sessions-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    let tls = dir.join("tls");

    eprintln!("[{n}] issuing {n} agent certificates");
    let t = Instant::now();
    {
        let tls = tls.clone();
        tokio::task::spawn_blocking(move || make_pki(&tls, n)).await??;
    }
    row.certs_s = t.elapsed().as_secs_f64();
    let clusters = dir.join("clusters.yaml");
    std::fs::write(&clusters, clusters_file(n))?;

    eprintln!("[{n}] starting the coordinator");
    let t = Instant::now();
    let mut coordinator = CoordinatorProc::start(ServeConfig {
        tls_dir: tls.clone(),
        data_dir: dir.join("data"),
        clusters,
        heartbeat_seconds: HEARTBEAT.as_secs(),
        log_dir: dir.join("logs"),
        log_filter: "warn".into(),
        extra_args: Vec::new(),
        env: Vec::new(),
    })
    .await?;
    row.start_s = t.elapsed().as_secs_f64();
    let pid = coordinator.proc.pid();
    row.rss_start_mib = status_mib(pid, "VmRSS:");

    // Every agent's TLS configuration (its own certificate), built before the clock starts.
    let ca_pem = std::fs::read_to_string(tls.join("ca.pem"))?;
    let url = coordinator.url();
    let mut endpoints = Vec::with_capacity(n);
    for i in 0..n {
        let stem = format!("agent-{}", cluster_name(i));
        let cert = std::fs::read_to_string(tls.join(format!("{stem}.pem")))?;
        let key = std::fs::read_to_string(tls.join(format!("{stem}-key.pem")))?;
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .identity(TlsIdentity::from_pem(cert, key))
            .domain_name("localhost");
        endpoints.push(
            Endpoint::from_shared(url.clone())?
                .tls_config(config)?
                .connect_timeout(Duration::from_secs(30)),
        );
    }

    eprintln!("[{n}] opening {n} sessions");
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let lost = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let t = Instant::now();
    let mut agents = tokio::task::JoinSet::new();
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        agents.spawn(agent(
            i,
            endpoint,
            permits.clone(),
            opened_tx.clone(),
            lost.clone(),
            stop_rx.clone(),
        ));
    }
    drop(opened_tx);
    let mut first_error = None;
    for _ in 0..n {
        match opened_rx.recv().await {
            Some(Ok(d)) => row.connect.ms.push(d.as_secs_f64() * 1e3),
            Some(Err(e)) => {
                row.connect_failed += 1;
                first_error.get_or_insert(e);
            }
            None => break,
        }
    }
    row.connect_all_s = t.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        eprintln!("[{n}] {} sessions failed to open; first: {e}", row.connect_failed);
    }

    // The coordinator agrees: every cluster connected.
    let mut fleet = coordinator.fleet("bench").await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (clusters, pages) = list_all(&mut fleet).await?;
        row.list_pages = pages;
        let connected = clusters.iter().filter(|c| c.connected).count();
        if connected == n - row.connect_failed {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {connected} of {n} clusters show connected");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    row.rss_connected_mib = status_mib(pid, "VmRSS:");

    eprintln!("[{n}] heartbeats only, {}s", args.steady.as_secs());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, t0) = (cpu_seconds(pid, ticks), Instant::now());
    tokio::time::sleep(args.steady).await;
    row.cpu_idle = (cpu_seconds(pid, ticks) - c0) / t0.elapsed().as_secs_f64();

    eprintln!(
        "[{n}] ListClusters / GetCluster in a loop, {}s",
        args.query.as_secs()
    );
    let (c0, t0) = (cpu_seconds(pid, ticks), Instant::now());
    let (third, two_thirds) = (args.query / 3, args.query * 2 / 3);
    while t0.elapsed() < third {
        let t = Instant::now();
        match fleet.list_clusters(pb::ListClustersRequest::default()).await {
            Ok(page) => {
                row.list.ms.push(t.elapsed().as_secs_f64() * 1e3);
                row.list_bytes = page.get_ref().encoded_len();
            }
            Err(_) => row.list.errors += 1,
        }
    }
    while t0.elapsed() < two_thirds {
        let t = Instant::now();
        match list_all(&mut fleet).await {
            Ok(_) => row.list_all.ms.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => row.list_all.errors += 1,
        }
    }
    while t0.elapsed() < args.query {
        let id = cluster_name(rand::rng().random_range(0..n));
        let t = Instant::now();
        match fleet.get_cluster(pb::GetClusterRequest { cluster_id: id }).await {
            Ok(_) => row.get.ms.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => row.get.errors += 1,
        }
    }
    row.cpu_query = (cpu_seconds(pid, ticks) - c0) / t0.elapsed().as_secs_f64();

    // The CLI against the same fleet (its default message size limits included).
    let cli = flotilla_tests::cli::Cli::new(url, &tls, "bench");
    let t = Instant::now();
    let out = cli.run(&["clusters", "list", "-o", "json"]).await?;
    row.cli_list = if out.code == Some(0) {
        format!("ok, {:.2}s", t.elapsed().as_secs_f64())
    } else {
        let first = out.stderr.lines().next().unwrap_or_default();
        format!(
            "exit {:?}: {}",
            out.code,
            first.chars().take(120).collect::<String>()
        )
    };

    row.peak_mib = status_mib(pid, "VmHWM:");
    row.rss_end_mib = status_mib(pid, "VmRSS:");
    row.lost = lost.load(Ordering::Relaxed);

    let _ = stop_tx.send(true);
    coordinator.proc.terminate(Duration::from_secs(20)).await?;
    agents.shutdown().await;
    Ok(row)
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut line = |label: &str, f: &dyn Fn(&Row) -> String| {
        let _ = write!(out, "| {label:<44} |");
        for r in rows {
            let _ = write!(out, " {:>22} |", f(r));
        }
        out.push('\n');
    };
    line("sessions", &|r| r.sessions.to_string());
    line("agent certificates issued (s)", &|r| format!("{:.1}", r.certs_s));
    line("coordinator start, until listening (s)", &|r| {
        format!("{:.2}", r.start_s)
    });
    line("RSS after start (MiB)", &|r| format!("{:.0}", r.rss_start_mib));
    line("connect: all sessions open (s)", &|r| {
        format!("{:.2}", r.connect_all_s)
    });
    line("connect: one session p50 / p99 (ms)", &|r| {
        format!("{:.0} / {:.0}", r.connect.pct(50), r.connect.pct(99))
    });
    line("sessions that failed to open", &|r| r.connect_failed.to_string());
    line("RSS with every session open (MiB)", &|r| {
        format!("{:.0}", r.rss_connected_mib)
    });
    line("RSS per session (KiB)", &|r| {
        format!(
            "{:.0}",
            (r.rss_connected_mib - r.rss_start_mib) * 1024.0 / r.sessions.max(1) as f64
        )
    });
    line("CPU s / wall s, heartbeats only", &|r| {
        format!("{:.3}", r.cpu_idle)
    });
    line("CPU s / wall s, heartbeats + status loop", &|r| {
        format!("{:.3}", r.cpu_query)
    });
    line("ListClusters, one page: p50 / p99 (ms)", &|r| {
        format!("{:.1} / {:.1}", r.list.pct(50), r.list.pct(99))
    });
    line("  calls (errors), page KiB", &|r| {
        format!("{} ({}), {}", r.list.ms.len(), r.list.errors, r.list_bytes / 1024)
    });
    line("ListClusters, every page: p50 / p99 (ms)", &|r| {
        format!("{:.1} / {:.1}", r.list_all.pct(50), r.list_all.pct(99))
    });
    line("  walks (errors), pages a walk", &|r| {
        format!(
            "{} ({}), {}",
            r.list_all.ms.len(),
            r.list_all.errors,
            r.list_pages
        )
    });
    line("GetCluster p50 / p99 (ms)", &|r| {
        format!("{:.2} / {:.2}", r.get.pct(50), r.get.pct(99))
    });
    line("GetCluster calls (errors)", &|r| {
        format!("{} ({})", r.get.ms.len(), r.get.errors)
    });
    line("peak RSS, VmHWM (MiB)", &|r| format!("{:.0}", r.peak_mib));
    line("RSS at the end (MiB)", &|r| format!("{:.0}", r.rss_end_mib));
    line("sessions lost while streaming", &|r| r.lost.to_string());
    line("`flotilla clusters list -o json`", &|r| r.cli_list.clone());
    out
}

fn verdicts(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.sessions >= 10_000) {
        let ok = |b: bool| if b { "met" } else { "MISSED" };
        let _ = writeln!(
            out,
            "{} sessions: peak RSS {:.0} MiB (target < {RSS_TARGET_MIB:.0}): {}; GetCluster p99 {:.2} ms, \
             ListClusters (a page of 1,000) p99 {:.1} ms (target < {P99_TARGET_MS:.0}): {} / {}",
            r.sessions,
            r.peak_mib,
            ok(r.peak_mib < RSS_TARGET_MIB),
            r.get.pct(99),
            r.list.pct(99),
            ok(r.get.pct(99) < P99_TARGET_MS),
            ok(r.list.pct(99) < P99_TARGET_MS),
        );
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let largest = args.sessions.iter().copied().max().unwrap_or(0) as u64;
    let limit = open_files_limit();
    if limit < largest + 1024 {
        bail!(
            "open files limit {limit} is below {} for {largest} sessions (one socket each here and in the \
             coordinator); raise it with `ulimit -n {}` (the hard limit is `ulimit -Hn`)",
            largest + 1024,
            largest + 4096
        );
    }
    let ticks = clock_ticks();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let rows = runtime.block_on(async {
        let bins = flotilla_tests::bins::bins()?;
        eprintln!("coordinator binary: {}", bins.coordinator.display());
        let mut rows = Vec::new();
        for &n in &args.sessions {
            rows.push(run(n, &args, ticks).await?);
        }
        Ok::<_, anyhow::Error>(rows)
    })?;
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    writeln!(
        out,
        "\nAgent sessions against one coordinator process ({machine} CPUs; heartbeat {}s; heartbeats-only window {}s, status loop {}s)\n",
        HEARTBEAT.as_secs(),
        args.steady.as_secs(),
        args.query.as_secs()
    )?;
    write!(out, "{}", table(&rows))?;
    writeln!(out)?;
    write!(out, "{}", verdicts(&rows))?;
    Ok(())
}
