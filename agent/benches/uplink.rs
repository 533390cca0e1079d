//! Uplink benchmark (prints a table; not a timed test): N agents (default 1,000; set
//! `FLOTILLA_BENCH_AGENTS`) run in ONE child process, each with its own certificate and mTLS
//! session, against a counting `AgentGateway` in this process; every agent collects its
//! `Hello` inventory from one shared simulated cluster. Measured on the child alone: time until
//! every `Hello` arrived (and p50/p99 per agent), RSS, CPU while heartbeating every 10 s, and
//! the time to exit on SIGTERM.
//!
//! `cargo bench -p flotilla-agent --bench uplink` (`FLOTILLA_BENCH_NO_INVENTORY=1`: no Kubernetes
//! API behind the agents, so `Hello` goes without inventory and only the sessions are measured).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_agent::local;
use flotilla_agent::uplink::{self, TlsIdentity, UplinkConfig};
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

const HEARTBEAT: Duration = Duration::from_secs(10);
const STEADY: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(&args[2..]);
        return;
    }
    let agents: usize = std::env::var("FLOTILLA_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let inventory = std::env::var("FLOTILLA_BENCH_NO_INVENTORY").is_err();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(parent(agents, inventory));
}

// === The gateway (this process) ===

#[derive(Default)]
struct Counts {
    hellos: Mutex<Vec<Instant>>,
    with_inventory: AtomicU64,
    heartbeats: AtomicU64,
}

struct Gateway {
    counts: Arc<Counts>,
}

#[tonic::async_trait]
impl AgentGateway for Gateway {
    type ConnectStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let Some(pb::AgentMessage {
            message: Some(pb::agent_message::Message::Hello(hello)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument("Hello first"));
        };
        if hello.inventory.is_some() {
            self.counts.with_inventory.fetch_add(1, Ordering::Relaxed);
        }
        self.counts.hellos.lock().expect("lock").push(Instant::now());
        let (tx, rx) = mpsc::channel(4);
        let counts = self.counts.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if matches!(m.message, Some(pb::agent_message::Message::Heartbeat(_))) {
                    counts.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(tx);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// CA, server certificate, and one agent certificate per cluster, written as `ca issue` does.
fn certificates(dir: &Path, agents: usize) -> (String, String, String) {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = params.signed_by(&server_key, &ca).expect("server");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for i in 0..agents {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://flotilla/agent/{}", name(i))
                .as_str()
                .try_into()
                .expect("uri"),
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca).expect("agent");
        std::fs::write(dir.join(format!("agent-{}.pem", name(i))), cert.pem()).expect("write");
        std::fs::write(
            dir.join(format!("agent-{}-key.pem", name(i))),
            key.serialize_pem(),
        )
        .expect("write");
    }
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

/// (RSS KiB, CPU ticks) of a process.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses) come fields 3.. (state first); utime and stime
    // are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(14) + field(15);
    (rss, ticks)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn parent(agents: usize, inventory: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let fleet = Fleet::start_scenario(&Scenario::default_scenario(), 1, FleetOptions::default())
        .await
        .expect("fleet");
    fleet.write_files(dir.path()).expect("files");
    fleet
        .wait_settled(Duration::from_secs(60))
        .await
        .expect("settled");
    let kubeconfig = dir.path().join("kubeconfig-sim-1.yaml");
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir(&tls_dir).expect("tls dir");
    let made = Instant::now();
    let (ca, server_cert, server_key) = certificates(&tls_dir, agents);
    eprintln!("{agents} certificates in {:.1}s", made.elapsed().as_secs_f64());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let counts = Arc::new(Counts::default());
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(server_cert, server_key))
        .client_ca_root(Certificate::from_pem(ca));
    let router = Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(AgentGatewayServer::new(Gateway {
            counts: counts.clone(),
        }));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));

    let exe = std::env::current_exe().expect("exe");
    let started = Instant::now();
    let mut child = std::process::Command::new(exe)
        .arg("child")
        .arg(&url)
        .arg(&tls_dir)
        .arg(if inventory {
            kubeconfig.as_os_str()
        } else {
            std::ffi::OsStr::new("none")
        })
        .arg(agents.to_string())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("child");
    let pid = child.id();
    let bound = Instant::now() + Duration::from_secs(600);
    while counts.hellos.lock().expect("lock").len() < agents {
        assert!(
            Instant::now() < bound,
            "not every agent connected within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_connected = started.elapsed();
    let mut per_agent: Vec<Duration> = counts
        .hellos
        .lock()
        .expect("lock")
        .iter()
        .map(|t| t.duration_since(started))
        .collect();
    per_agent.sort();
    let (rss_connected, _) = usage(pid);

    // Steady state: heartbeats only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, cpu0) = usage(pid);
    let beats0 = counts.heartbeats.load(Ordering::Relaxed);
    tokio::time::sleep(STEADY).await;
    let (rss_steady, cpu1) = usage(pid);
    let beats = counts.heartbeats.load(Ordering::Relaxed) - beats0;
    let cpu_pct = (cpu1 - cpu0) as f64 / clock_ticks() / STEADY.as_secs_f64() * 100.0;

    let stopping = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    let stopped = stopping.elapsed();

    let mut table = format!(
        "\nuplink: {agents} agents in one process (mTLS, one session each), heartbeat {}s, inventory {}\n",
        HEARTBEAT.as_secs(),
        if inventory {
            "from one simulated cluster"
        } else {
            "none"
        }
    );
    let mut row = |k: &str, v: String| table.push_str(&format!("{k:<44} {v:>12}\n"));
    row("measure", "value".into());
    row(
        "all Hellos received (from process start)",
        format!("{:.2}s", all_connected.as_secs_f64()),
    );
    row(
        "per-agent Hello p50",
        format!("{:.2}s", percentile(&per_agent, 0.5).as_secs_f64()),
    );
    row(
        "per-agent Hello p99",
        format!("{:.2}s", percentile(&per_agent, 0.99).as_secs_f64()),
    );
    row(
        "Hellos with inventory",
        format!("{}", counts.with_inventory.load(Ordering::Relaxed)),
    );
    row("RSS when all connected", format!("{} MiB", rss_connected / 1024));
    row("RSS after 30 s steady", format!("{} MiB", rss_steady / 1024));
    row(
        "RSS per agent",
        format!("{} KiB", rss_steady / agents.max(1) as u64),
    );
    row("CPU while heartbeating (% of one core)", format!("{cpu_pct:.2}%"));
    row("heartbeats received in 30 s", format!("{beats}"));
    row(
        "exit on SIGTERM",
        format!("{:.2}s ({status})", stopped.as_secs_f64()),
    );
    let mut out = std::io::stdout().lock();
    out.write_all(table.as_bytes()).expect("stdout");
}

// === The agents (child process) ===

fn child(args: &[String]) {
    let [url, tls_dir, kubeconfig, agents] = args else {
        panic!("child URL TLS_DIR KUBECONFIG AGENTS");
    };
    let agents: usize = agents.parse().expect("agents");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let kube = if kubeconfig == "none" {
            // No Kubernetes API: Hello goes without inventory (isolates the session's own cost).
            let mut config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
            config.default_retry = false;
            kube::Client::try_from(config).expect("client")
        } else {
            let (cluster, _) = local::connect(Some(&PathBuf::from(kubeconfig)), None)
                .await
                .expect("kube");
            cluster.client().clone()
        };
        let coordinator = uplink::parse_coordinator(url).expect("url");
        let shutdown = CancellationToken::new();
        // One set of metrics for the process, as an embedder running many agents would.
        let metrics = flotilla_agent::metrics::AgentMetrics::new();
        let mut tasks = Vec::with_capacity(agents);
        for i in 0..agents {
            let tls = TlsIdentity::from_dir(Path::new(tls_dir), &name(i)).expect("tls");
            let config = UplinkConfig {
                heartbeat: HEARTBEAT,
                metrics: metrics.clone(),
                ..UplinkConfig::new(coordinator.clone(), name(i), tls, kube.clone())
            };
            tasks.push(tokio::spawn(uplink::run(config, shutdown.clone())));
        }
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
        term.recv().await;
        shutdown.cancel();
        for t in tasks {
            t.await.expect("task").expect("uplink");
        }
    });
}
