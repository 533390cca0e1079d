//! The agent's coordinator session over real mTLS gRPC: a test-side `AgentGateway` (tonic,
//! certificates made here with rcgen) on 127.0.0.1 drives `uplink::run` against a simulated
//! cluster through kube-rs. Hello and its inventory, steps run once per (operation, step,
//! attempt), results re-sent across cut streams until acked, CancelStep on a blocked drain,
//! reconnect backoff while the coordinator is down, and the binary's start-up refusals and
//! clean exit on SIGTERM.

mod support;

use std::time::Duration;

use flotilla_agent::model;
use flotilla_agent::uplink::{self, BackoffConfig, TlsIdentity, UplinkConfig, UplinkError};
use flotilla_proto::fleet::v1 as pb;
use pb::agent_message::Message as Up;
use pb::coordinator_message::Message as Down;
use support::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

// === The agent under test ===

struct Agent {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), UplinkError>>,
}

impl Agent {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("the uplink stops within the bound")
            .expect("task")
            .expect("uplink ran");
    }
}

/// Short intervals so the tests see heartbeats, re-sends and reconnects quickly.
fn config(url: &str, certs: &Certs, kube: kube::Client) -> UplinkConfig {
    let tls = TlsIdentity::from_dir(certs.dir.path(), CLUSTER).expect("tls files");
    UplinkConfig {
        heartbeat: Duration::from_millis(200),
        resend: Duration::from_millis(300),
        progress_every: Duration::from_millis(100),
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            healthy_after: Duration::from_secs(60),
        },
        tls_source: certs.dir.path().display().to_string(),
        ..UplinkConfig::new(uplink::parse_coordinator(url).expect("url"), CLUSTER, tls, kube)
    }
}

fn start(config: UplinkConfig) -> Agent {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(uplink::run(config, shutdown.clone()));
    Agent { shutdown, task }
}

// === Tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_carries_the_inventory_and_a_step_runs_once_per_attempt() {
    let sim = sim(scenario()).await;
    let certs = certs();
    let mut coord = coordinator(&certs).await;
    let agent = start(config(&coord.url, &certs, sim.client.clone()));
    let mut conn = coord.conn().await;

    let hello = conn.hello.clone();
    assert_eq!(hello.cluster_id, CLUSTER);
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(hello.running.is_empty());
    let inv = hello.inventory.expect("Hello carries the inventory");
    assert!(inv.version.starts_with("v1.33"), "{}", inv.version);
    let group = |name: &str| {
        inv.node_groups
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("{name} in {:?}", inv.node_groups))
            .clone()
    };
    assert_eq!(group("ng-old").kind, pb::NodeGroupKind::SelfManaged as i32);
    assert_eq!(group("ng-old").node_count, 4);
    assert_eq!(group("ng-new").kind, pb::NodeGroupKind::Managed as i32);
    assert_eq!(inv.nodes.len(), 8);
    assert!(inv.deployments.iter().any(|d| d.name == "shop/web"));

    // The same RunStep twice: one run.
    conn.run_step("op-1", "taint", 1, taint()).await;
    conn.run_step("op-1", "taint", 1, taint()).await;
    let first = conn.result().await;
    assert_eq!(
        (first.operation_id.as_str(), first.step_id.as_str(), first.attempt),
        ("op-1", "taint", 1)
    );
    let pb::step_output::Output::Taint(t) = ok_output(&first) else {
        panic!("taint output")
    };
    assert_eq!(t.nodes.len(), 4);
    assert_eq!(t.changed.len(), 4, "the first run taints every node");
    for n in sim.old_nodes().await {
        let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        assert!(taints
            .iter()
            .any(|t| t.key == model::DEFAULT_TAINT_KEY && t.effect == "NoSchedule"));
    }
    // Once more after it finished: the stored result (same finish time), not a new run.
    conn.run_step("op-1", "taint", 1, taint()).await;
    let others = conn.barrier("op-barrier-1").await;
    assert!(!others.is_empty(), "the repeated RunStep is answered");
    for r in &others {
        assert_eq!(r, &first, "every answer for attempt 1 is the stored result");
    }
    assert_eq!(sim.events("FlotillaTainted").await, 4, "tainted by one run");

    // After the ack a repeat still gets the stored result.
    conn.ack(&first).await;
    conn.run_step("op-1", "taint", 1, taint()).await;
    let after_ack = conn.barrier("op-barrier-2").await;
    assert!(after_ack.iter().all(|r| r == &first), "{after_ack:?}");
    assert!(after_ack.iter().any(|r| r.attempt == 1));

    // A new attempt runs again, and finds nothing left to change (the step is idempotent).
    conn.run_step("op-1", "taint", 2, taint()).await;
    let second = conn.result().await;
    assert_eq!(second.attempt, 2);
    let pb::step_output::Output::Taint(t) = ok_output(&second) else {
        panic!("taint output")
    };
    assert!(t.changed.is_empty(), "{t:?}");
    assert!(
        conn.heartbeats.iter().all(|h| h.sent_at.is_some()),
        "heartbeats carry their time"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_result_survives_cut_streams_until_acked() {
    let sim = sim(scenario()).await;
    let certs = certs();
    let mut coord = coordinator(&certs).await;
    let agent = start(config(&coord.url, &certs, sim.client.clone()));

    // Session 1: the migration's steps before the drain, each acked; then the drain starts,
    // reports progress, and the stream is cut mid-drain.
    let mut conn = coord.conn().await;
    let surge = conn
        .run_and_ack(
            "op-2",
            "surge",
            pb::run_step::Step::SurgeScale(pb::SurgeScaleParams {
                from: "ng-old".into(),
                to: "ng-new".into(),
                surge: Some(pb::surge_scale_params::Surge::Percent(100)),
                always: vec![],
            }),
        )
        .await;
    let pb::step_output::Output::SurgeScale(s) = ok_output(&surge) else {
        panic!("surge output")
    };
    assert!(
        s.deployments
            .iter()
            .any(|d| d.deployment == "shop/cache" && d.target == 2),
        "{s:?}"
    );
    let verify = conn
        .run_and_ack(
            "op-2",
            "verify",
            pb::run_step::Step::VerifyReady(pb::VerifyReadyParams {
                from: "ng-old".into(),
                to: "ng-new".into(),
                timeout: Some(prost_types::Duration {
                    seconds: 120,
                    nanos: 0,
                }),
                poll: None,
            }),
        )
        .await;
    let pb::step_output::Output::VerifyReady(v) = ok_output(&verify) else {
        panic!("verify output")
    };
    assert_eq!(v.deployments.len(), s.deployments.len());
    conn.progress.clear();
    conn.run_step("op-2", "drain", 1, drain(120)).await;
    while conn.progress.is_empty() {
        if let Up::Result(r) = conn.next().await {
            panic!("the drain ended before any progress: {r:?}");
        }
    }
    assert_eq!(conn.progress[0].kind, pb::StepKind::Drain as i32);
    assert_eq!(conn.progress[0].operation_id, "op-2");
    drop(conn);

    // Session 2: the drain is still running on the agent; the coordinator sends it again, as
    // after a restart, and the agent does not start it a second time. The result arrives.
    let mut conn = coord.conn().await;
    let drain_key = running("op-2", "drain", 1);
    let result = if conn.hello.running.is_empty() {
        // The drain finished while the agent was reconnecting: its result comes right after Hello.
        conn.result().await
    } else {
        assert_eq!(conn.hello.running, vec![drain_key.clone()]);
        conn.run_step("op-2", "drain", 1, drain(120)).await;
        let r = conn.result().await;
        assert!(
            conn.heartbeats.iter().all(|h| h.running_steps <= 1),
            "never two drains: {:?}",
            conn.heartbeats
        );
        r
    };
    assert_eq!((result.operation_id.as_str(), result.attempt), ("op-2", 1));
    let pb::step_output::Output::Drain(d) = ok_output(&result) else {
        panic!("drain output")
    };
    assert_eq!(d.drained.len(), 4, "{d:?}");
    assert!(sim.evictable_on_old().await.is_empty());
    drop(conn);

    // Session 3: not acked, so the result comes again on connect and then periodically.
    let mut conn = coord.conn().await;
    assert!(conn.hello.running.is_empty());
    assert_eq!(conn.result().await, result, "re-sent on reconnect");
    assert_eq!(conn.result().await, result, "re-sent periodically");
    conn.ack(&result).await;
    let before = conn.barrier("op-barrier-3").await;
    assert!(before.iter().all(|r| r == &result));
    let after = conn.results_until_heartbeats(6).await;
    assert!(
        after.iter().all(|r| r.operation_id != "op-2"),
        "re-sent after its ack: {after:?}"
    );
    drop(conn);

    // Session 4: nothing left to re-send.
    let mut conn = coord.conn().await;
    let first = conn.results_until_heartbeats(1).await;
    assert!(first.iter().all(|r| r.operation_id != "op-2"), "{first:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_step_stops_a_blocked_drain_with_a_cancelled_result() {
    let sim = sim(stuck_scenario()).await;
    let certs = certs();
    let mut coord = coordinator(&certs).await;
    let agent = start(config(&coord.url, &certs, sim.client.clone()));
    let mut conn = coord.conn().await;
    conn.run_step("op-3", "drain", 1, drain(600)).await;

    // Progress names the blocked pod and the budget that blocks it.
    let blocker = loop {
        if let Up::Result(r) = conn.next().await {
            panic!("the drain ended although shop/cache can never be evicted: {r:?}");
        }
        // Other pods may be reported while they wait their turn; cache's budget never allows.
        if let Some(b) = conn
            .progress
            .last()
            .and_then(|p| p.blockers.iter().find(|b| b.pod.starts_with("shop/cache-")))
        {
            break b.clone();
        }
    };
    assert!(blocker.pod.starts_with("shop/cache-"), "{blocker:?}");
    assert_eq!(blocker.pdbs, vec!["shop/cache".to_string()]);
    assert!(!blocker.node.is_empty());

    // Cut while blocked: the new Hello lists the drain as running.
    drop(conn);
    let mut conn = coord.conn().await;
    assert_eq!(conn.hello.running, vec![running("op-3", "drain", 1)]);
    while conn.heartbeats.is_empty() {
        if let Up::Result(r) = conn.next().await {
            panic!("no result expected yet: {r:?}");
        }
    }
    assert_eq!(conn.heartbeats[0].running_steps, 1);

    conn.send(Down::CancelStep(pb::CancelStep {
        operation_id: "op-3".into(),
        step_id: "drain".into(),
        attempt: 1,
        reason: "operator aborted the migration".into(),
    }))
    .await;
    let result = conn.result().await;
    assert_eq!(result.operation_id, "op-3");
    let e = error_of(&result);
    assert_eq!(e.code, pb::step_error::Code::Cancelled as i32);
    assert!(e.retryable);
    assert!(
        e.message.contains("operator aborted the migration"),
        "{}",
        e.message
    );
    assert_eq!(
        e.detail,
        Some(pb::step_error::Detail::Cancelled(pb::step_error::Cancelled {
            reason: "operator aborted the migration".into()
        }))
    );
    conn.ack(&result).await;
    let n = conn.heartbeats.len();
    conn.results_until_heartbeats(1).await;
    assert_eq!(conn.heartbeats[n].running_steps, 0, "the drain stopped");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_dialling_until_the_coordinator_is_up() {
    let certs = certs();
    // No Kubernetes API behind this client: Hello then goes without an inventory.
    let mut kube_config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
    kube_config.default_retry = false;
    let kube = kube::Client::try_from(kube_config).expect("client");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let agent = start(config(&url, &certs, kube));

    // The coordinator is "down": connections are closed before the TLS handshake.
    let mut refused = 0;
    while refused < 4 {
        let (sock, _) = tokio::time::timeout(BOUND, listener.accept())
            .await
            .expect("the agent dials again within the bound")
            .expect("accept");
        drop(sock);
        refused += 1;
    }
    // Up now, on the same address: the agent's next attempt gets through.
    let mut coord = serve_on(listener, &certs);
    let conn = coord.conn().await;
    assert_eq!(conn.hello.cluster_id, CLUSTER);
    assert!(conn.hello.inventory.is_none(), "no Kubernetes API, no inventory");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_refuses_a_certificate_for_another_cluster_and_plain_http() {
    let certs = certs();
    let kube = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().expect("url")))
        .expect("client");
    let mut c = config("https://127.0.0.1:1", &certs, kube.clone());
    c.tls = TlsIdentity::from_pem(
        std::fs::read_to_string(certs.dir.path().join("ca.pem")).expect("ca"),
        std::fs::read_to_string(certs.dir.path().join("agent-other.pem")).expect("cert"),
        std::fs::read_to_string(certs.dir.path().join("agent-other-key.pem")).expect("key"),
    );
    let err = uplink::run(c, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("spiffe://flotilla/agent/other"), "{err}");
    assert!(err.contains("ca issue --agent sim-1"), "{err}");

    let mut c = config("https://127.0.0.1:1", &certs, kube);
    c.coordinator = "http://127.0.0.1:1".parse().expect("uri");
    let err = uplink::run(c, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("https://HOST:PORT"), "{err}");
}

// === The binary ===

fn agent_bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-agent"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOTILLA_") {
            c.env_remove(k);
        }
    }
    c
}

/// Exit code and stderr.
fn run_bin(c: &mut std::process::Command) -> (i32, String) {
    let (code, _, stderr) = run_bin_out(c);
    (code, stderr)
}

/// Exit code, stdout and stderr.
fn run_bin_out(c: &mut std::process::Command) -> (i32, String, String) {
    let out = c.output().expect("flotilla-agent runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_binary_names_missing_certificate_files_and_the_command_that_makes_them() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, stderr) = run_bin(agent_bin().args([
        "--coordinator",
        "https://127.0.0.1:1",
        "--cluster",
        "prod-eu-1",
        "--tls-dir",
        dir.path().to_str().expect("utf-8"),
    ]));
    assert_eq!(code, 2, "{stderr}");
    let path = |f: &str| dir.path().join(f).display().to_string();
    for f in ["ca.pem", "agent-prod-eu-1.pem", "agent-prod-eu-1-key.pem"] {
        assert!(stderr.contains(&path(f)), "{f} not named: {stderr}");
    }
    assert!(
        stderr.contains("flotilla-coordinator ca issue --dir DIR --agent prod-eu-1"),
        "{stderr}"
    );

    // The same through FLOTILLA_* variables, with only the key missing.
    let certs = certs();
    std::fs::remove_file(certs.dir.path().join(format!("agent-{CLUSTER}-key.pem"))).expect("rm");
    let (code, stderr) = run_bin(
        agent_bin()
            .env("FLOTILLA_COORDINATOR", "https://127.0.0.1:1")
            .env("FLOTILLA_CLUSTER", CLUSTER)
            .env("FLOTILLA_TLS_DIR", certs.dir.path()),
    );
    assert_eq!(code, 2, "{stderr}");
    let key = certs.dir.path().join(format!("agent-{CLUSTER}-key.pem"));
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    assert!(
        !stderr.contains(&format!("`{}`", certs.dir.path().join("ca.pem").display())),
        "{stderr}"
    );
}

#[test]
fn the_binary_refuses_bad_urls_and_missing_flags() {
    let (code, stderr) = run_bin(agent_bin().args([
        "--coordinator",
        "http://127.0.0.1:1",
        "--cluster",
        "a",
        "--tls-dir",
        "/nonexistent",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--coordinator") && stderr.contains("https://HOST:PORT"),
        "{stderr}"
    );
    let (code, stderr) = run_bin(agent_bin().args(["--cluster", "a"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--coordinator") && stderr.contains("--tls-dir"),
        "{stderr}"
    );
    // `local` commands need none of the agent's flags (a bad minor is refused before any
    // cluster is contacted).
    let (code, stdout, stderr) = run_bin_out(agent_bin().args(["local", "postflight", "--minor", "one"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stdout.contains("INVALID_PARAMETER") && stdout.contains("1.34"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_connects_and_exits_cleanly_on_sigterm() {
    let sim = sim(scenario()).await;
    let certs = certs();
    let mut coord = coordinator(&certs).await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla-agent"))
        .args([
            "--coordinator",
            &coord.url,
            "--cluster",
            CLUSTER,
            "--heartbeat",
            "200ms",
            "--log-format",
            "json",
        ])
        .arg("--tls-dir")
        .arg(certs.dir.path())
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut conn = coord.conn().await;
    assert!(conn.hello.inventory.is_some());
    conn.results_until_heartbeats(2).await;
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::time::timeout(BOUND, child.wait_with_output())
        .await
        .expect("exits within the bound")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "connected to the coordinator"
                && l["span"]["cluster"] == CLUSTER),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["signal"] == "SIGTERM"),
        "{stderr}"
    );
}
