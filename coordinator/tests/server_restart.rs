//! The real `flotilla-coordinator serve` binary, SIGKILLed three times during one migration —
//! while it creates the managed node group, with SurgeScale sent, and in the middle of the drain —
//! and restarted on the same data dir each time: the operation resumes (a re-check of the EKS
//! step, the agent steps sent again with the same attempt) and completes with no step skipped or
//! repeated, as its event log shows. Finally SIGTERM stops it gracefully.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::agent::{self, AgentSession};
use common::*;
use flotilla_coordinator::eks::aws::AwsEks;
use flotilla_coordinator::eks::Eks;
use flotilla_proto::fleet::v1 as pb;

/// A running `serve` child and the address it printed.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

fn serve(pki: &Pki, data: &Path, clusters: &Path, log: &Path) -> Serve {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-coordinator"))
        .args(["serve", "--listen", "127.0.0.1:0", "--heartbeat-seconds", "2"])
        .arg("--data-dir")
        .arg(data)
        .arg("--tls-dir")
        .arg(&pki.dir)
        .arg("--clusters")
        .arg(clusters)
        .env("RUST_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", "AKIDFLOTILLASIM")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let addr = line
        .trim()
        .strip_prefix("flotilla-coordinator listening on ")
        .unwrap_or_else(|| {
            panic!(
                "unexpected first line {line:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .parse()
        .expect("address");
    Serve { child, addr }
}

impl Serve {
    fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_three_times_the_migration_still_completes_once() {
    let sim = start_fleet(1).await;
    let pki = Pki::new(&["sim-1"]);
    let kube = agent::kube(&sim, &pki.path("sim"), "sim-1").await;
    let clusters = clusters_file(&sim, &["sim-1"], &["dev"]);
    let clusters_path = pki.path("clusters.yaml");
    std::fs::write(&clusters_path, clusters_yaml(&clusters)).unwrap();
    let (data, log) = (pki.path("data"), pki.path("coordinator.log"));
    let eks = AwsEks::connect_with(&clusters.clusters[0].eks(), eks_options())
        .await
        .unwrap();
    let inventory = agent::hello_inventory(&kube).await;

    let mut coord = serve(&pki, &data, &clusters_path, &log);
    let op = start_migration(&mut operator(coord.addr, &pki), "sim-1", "ng-new").await;
    let id = op.id.clone();

    // Kill 1: CreateNodegroup was issued (the group exists in EKS), its end not yet recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while eks.describe_nodegroup("ng-new").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "CreateNodegroup never issued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    coord.sigkill();
    coord = serve(&pki, &data, &clusters_path, &log);

    let mut session = AgentSession::open(
        channel(coord.addr, &pki, "agent-sim-1"),
        "sim-1",
        Some(inventory.clone()),
    )
    .await
    .expect("session");
    let mut killed_at_surge = false;
    let mut killed_in_drain = false;
    loop {
        let run = session.next_run_step().await;
        assert_eq!(run.operation_id, id);
        if run.step_id == "SurgeScale" && !killed_at_surge {
            // Kill 2: SurgeScale was sent (and persisted as in flight) but not run.
            killed_at_surge = true;
            session.cut();
            coord.sigkill();
            coord = serve(&pki, &data, &clusters_path, &log);
            session = AgentSession::open(
                channel(coord.addr, &pki, "agent-sim-1"),
                "sim-1",
                Some(inventory.clone()),
            )
            .await
            .expect("reconnect");
            let again = session.next_run_step().await;
            assert_eq!(again, run, "the same step and attempt comes again");
        }
        let result = if run.step_id == "Drain" && !killed_in_drain {
            // Kill 3: in the middle of the drain. The agent keeps draining; the restarted
            // coordinator sends the same Drain again, which the agent recognises as running.
            killed_in_drain = true;
            let (k, r) = (kube.clone(), run.clone());
            let sender = session.sender();
            let drain = tokio::spawn(async move { agent::execute(&k, "sim-1", &r, sender).await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            session.cut();
            coord.sigkill();
            coord = serve(&pki, &data, &clusters_path, &log);
            session = AgentSession::open(
                channel(coord.addr, &pki, "agent-sim-1"),
                "sim-1",
                Some(inventory.clone()),
            )
            .await
            .expect("reconnect");
            let again = session.next_run_step().await;
            assert_eq!(again, run, "the drain in flight is sent again, same attempt");
            drain.await.expect("drain task")
        } else {
            agent::execute(&kube, "sim-1", &run, session.sender()).await
        };
        assert!(
            matches!(result.outcome, Some(pb::step_result::Outcome::Ok(_))),
            "{} failed: {result:?}",
            run.step_id
        );
        session.result_acked(result).await;
        if run.step_id == "RestoreScale" {
            break;
        }
    }
    let mut fleet = operator(coord.addr, &pki);
    let done = wait_operation(&mut fleet, &id, 120, |o| is_final(o.state)).await;
    assert_eq!(done.state, pb::OperationState::Succeeded as i32, "{done:#?}");
    let create = done
        .steps
        .iter()
        .find(|s| s.step_id == "CreateManagedNodegroup")
        .unwrap();
    assert!(
        create.detail.contains("already existed"),
        "re-checked, not re-created: {create:?}"
    );

    // No step skipped, none repeated: each succeeded once, in order, each on attempt 1.
    let lines = log_lines(&mut fleet, &id).await;
    let mut last = 0;
    for step in [
        "CreateManagedNodegroup",
        "WaitNodesReady",
        "Taint",
        "SurgeScale",
        "VerifyReady",
        "Drain",
        "RemoveSelfManagedNodegroup",
        "RestoreScale",
    ] {
        let needle = format!("{step} succeeded (attempt 1)");
        assert_eq!(count(&lines, &needle), 1, "{needle}: {lines:#?}");
        let at = lines.iter().position(|l| l.contains(&needle)).unwrap();
        assert!(at >= last, "{step} out of order: {lines:#?}");
        last = at;
    }
    assert_eq!(count(&lines, "coordinator restarted; resuming"), 3, "{lines:#?}");
    assert_eq!(count(&lines, "failed"), 0, "{lines:#?}");
    assert_eq!(eks.find_self_managed_asg("ng-old").await.unwrap(), None);
    let stats = sim.cluster("sim-1").unwrap().lock().stats().stats().clone();
    assert_eq!(stats.pdb_violations, 0, "{:?}", stats.violations);

    // SIGTERM: a graceful stop, exit status 0.
    session.cut();
    let status = Command::new("kill")
        .args(["-TERM", &coord.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || coord.child.wait())
        .await
        .unwrap()
        .expect("wait");
    assert!(
        exit.success(),
        "serve exited {exit:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    sim.shutdown().await;
}
