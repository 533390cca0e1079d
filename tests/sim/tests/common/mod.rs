//! Shared set-up for the simulator's integration tests: an in-process fleet on loopback.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;

/// A fleet of `n` default clusters, settled (every Deployment available), with files in a temp dir.
pub async fn fleet(n: usize) -> (Fleet, tempfile::TempDir) {
    fleet_with(Scenario::default_scenario(), n, FleetOptions::default()).await
}

/// A fleet from a scenario, settled.
pub async fn fleet_with(scenario: Scenario, n: usize, opts: FleetOptions) -> (Fleet, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::start_scenario(&scenario, n, opts)
        .await
        .expect("fleet starts");
    fleet.write_files(dir.path()).expect("files written");
    fleet
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("fleet settles");
    (fleet, dir)
}

/// A kube-rs client for one cluster, from the kubeconfig the fleet wrote.
pub async fn client(dir: &tempfile::TempDir, cluster: &str) -> kube::Client {
    let path = dir.path().join(format!("kubeconfig-{cluster}.yaml"));
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    // kube-rs retries 429/503/504 by default; these tests look at the server's own answers.
    cfg.default_retry = false;
    kube::Client::try_from(cfg).expect("client")
}

/// Output of one kubectl run.
#[derive(Debug)]
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the stock kubectl against a cluster of the fleet (blocking; call from spawn_blocking).
pub fn kubectl(dir: &std::path::Path, cluster: &str, args: &[&str]) -> Out {
    let kubeconfig = dir.join(format!("kubeconfig-{cluster}.yaml"));
    let cache: PathBuf = dir.join("kube-cache");
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .output()
        .expect("kubectl runs (scripts/test.sh makes sure it is installed)");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs kubectl off the async runtime.
pub async fn kubectl_async(dir: &tempfile::TempDir, cluster: &str, args: &[&str]) -> Out {
    let dir = dir.path().to_path_buf();
    let cluster = cluster.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&dir, &cluster, &refs)
    })
    .await
    .expect("kubectl task")
}

/// A plain HTTP/1.1 request to the fleet's statistics endpoint: (status code, body).
pub fn stats_http(stats_url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = stats_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to stats endpoint");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, body)
}
