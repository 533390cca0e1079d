//! Simulator benchmark: resident memory of a 1,000-cluster fleet and of one 200-node / 5,000-pod
//! cluster, and list, watch and eviction throughput through kube-rs over loopback. Each phase runs
//! in its own process (this binary re-executed) so memory figures do not mix. Prints a table.
//!
//! `cargo bench -p flotilla-tests --bench sim [-- --clusters 1000 --nodes 200 --pods 5000]`

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams, ListParams, WatchEvent, WatchParams};
use serde_json::{json, Value};

use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::object::Object;
use flotilla_sim::resources::Kind;
use flotilla_sim::scenario::Scenario;

const RSS_TARGET_MIB: f64 = 2048.0;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (VmRSS, VmHWM) of this process in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn client(fleet: &Fleet, dir: &tempfile::TempDir, cluster: &str) -> anyhow::Result<kube::Client> {
    fleet.write_files(dir.path())?;
    let kc = kube::config::Kubeconfig::read_from(dir.path().join(format!("kubeconfig-{cluster}.yaml")))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

async fn phase_fleet(clusters: usize) -> anyhow::Result<Value> {
    let t = Instant::now();
    let fleet =
        Fleet::start_scenario(&Scenario::default_scenario(), clusters, FleetOptions::default()).await?;
    fleet.wait_settled(Duration::from_secs(600)).await?;
    let settle = t.elapsed();
    let pods: usize = fleet.clusters().iter().map(|c| c.lock().count(Kind::Pod)).sum();
    // Let allocator and history settle, then read memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, hwm) = memory_mib();
    fleet.shutdown().await;
    Ok(
        json!({"clusters": clusters, "pods": pods, "settle_s": settle.as_secs_f64(), "rss_mib": rss, "peak_mib": hwm}),
    )
}

fn big_scenario(nodes: usize, pods: usize) -> anyhow::Result<Scenario> {
    // Two DaemonSets put a pod on every node; Deployments of 100 replicas make up the rest.
    let ds_pods = 2 * nodes;
    let deployments = pods.saturating_sub(ds_pods) / 100;
    let mut yaml = format!(
        "kubernetesVersion: \"1.33\"\nnodeGroups:\n  - {{name: ng-old, nodes: {nodes}, capacity: {{pods: 110, cpu: \"16\", memory: 64Gi}}}}\nnamespaces: [bench]\npods: []\ndaemonSets:\n  - {{name: aws-node, namespace: kube-system}}\n  - {{name: kube-proxy, namespace: kube-system}}\ndeployments:\n"
    );
    for i in 0..deployments {
        let pdb = if i % 2 == 0 {
            ", pdb: {maxUnavailable: \"10%\"}"
        } else {
            ""
        };
        yaml.push_str(&format!(
            "  - {{name: app-{i}, namespace: bench, replicas: 100, cpu: 10m{pdb}}}\n"
        ));
    }
    Ok(Scenario::from_yaml(&yaml, "bench.yaml")?)
}

async fn phase_big(nodes: usize, pods: usize) -> anyhow::Result<Value> {
    let scenario = big_scenario(nodes, pods)?;
    let t = Instant::now();
    let fleet = Fleet::start_scenario(
        &scenario,
        1,
        FleetOptions {
            watch_history: 20_000,
            ..Default::default()
        },
    )
    .await?;
    fleet.wait_settled(Duration::from_secs(900)).await?;
    let settle = t.elapsed();
    let cluster = fleet.cluster("sim-1").context("sim-1")?.clone();
    let pod_count = cluster.lock().count(Kind::Pod);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, hwm) = memory_mib();
    let dir = tempfile::tempdir()?;
    let c = client(&fleet, &dir, "sim-1").await?;
    let api: Api<Pod> = Api::all(c.clone());

    // List: every pod in one response, then in pages of 500 as kube-rs' watcher pages.
    let rounds = 10;
    let t = Instant::now();
    for _ in 0..rounds {
        let l = api.list(&ListParams::default()).await?;
        anyhow::ensure!(
            l.items.len() == pod_count,
            "list returned {} of {pod_count}",
            l.items.len()
        );
    }
    let list_full = t.elapsed().as_secs_f64() / rounds as f64;
    let t = Instant::now();
    let mut paged = 0;
    for _ in 0..rounds {
        let mut lp = ListParams::default().limit(500);
        loop {
            let page = api.list(&lp).await?;
            paged += page.items.len();
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
    }
    let list_paged = t.elapsed().as_secs_f64() / rounds as f64;
    anyhow::ensure!(paged == pod_count * rounds, "paged lists returned {paged}");

    // Watch: 10 watchers; every pod gets a label change (one MODIFIED each); time until every
    // watcher has all of them.
    let watchers = 10;
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("rv")?;
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let api = api.clone();
        let rv = rv.clone();
        let want = pod_count;
        let s = api.watch(&WatchParams::default().timeout(290), &rv).await?;
        tasks.push(tokio::spawn(async move {
            let mut s = std::pin::pin!(s);
            let mut seen = 0usize;
            while let Some(ev) = s.next().await {
                if let Ok(WatchEvent::Modified(p)) = ev {
                    if p.metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key("bench-touch"))
                    {
                        seen += 1;
                        if seen == want {
                            return Ok::<_, anyhow::Error>(Instant::now());
                        }
                    }
                }
            }
            bail!("watch ended after {seen} of {want} events")
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    cluster.write(|s| {
        let pods: Vec<Object> = s.list(Kind::Pod, None).map(|e| (*e.obj).clone()).collect();
        for mut p in pods {
            p.meta_mut()
                .labels
                .get_or_insert_with(Default::default)
                .insert("bench-touch".into(), "1".into());
            s.replace(p);
        }
    });
    let mut last = t;
    for task in tasks {
        last = last.max(task.await??);
    }
    let watch_s = (last - t).as_secs_f64();
    let watch_rate = (watchers * pod_count) as f64 / watch_s;

    // Evictions: 1,000 pods of Deployments without a PDB, 32 at a time.
    let victims: Vec<(String, String)> = {
        let store = cluster.lock();
        store
            .list(Kind::Pod, Some("bench"))
            .filter(|e| {
                e.obj.name().starts_with("app-")
                    && e.obj
                        .name()
                        .split('-')
                        .nth(1)
                        .and_then(|n| n.parse::<usize>().ok())
                        .is_some_and(|n| n % 2 == 1)
            })
            .take(1000)
            .map(|e| (e.obj.namespace().to_string(), e.obj.name().to_string()))
            .collect()
    };
    let n_evict = victims.len();
    let t = Instant::now();
    let results: Vec<Result<(), kube::Error>> = futures::stream::iter(victims)
        .map(|(ns, name)| {
            let api: Api<Pod> = Api::namespaced(c.clone(), &ns);
            async move { api.evict(&name, &EvictParams::default()).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let evict_s = t.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let stats = serde_json::to_value(cluster.lock().stats().stats())?;
    let (_, hwm_after) = memory_mib();
    let _ = Arc::strong_count(&cluster);
    fleet.shutdown().await;
    Ok(json!({
        "nodes": nodes, "pods": pod_count, "settle_s": settle.as_secs_f64(), "rss_mib": rss, "peak_mib": hwm, "peak_after_mib": hwm_after,
        "list_full_s": list_full, "list_paged_s": list_paged,
        "watchers": watchers, "watch_events_per_s": watch_rate, "watch_s": watch_s,
        "evictions": n_evict, "evictions_failed": failed, "evictions_per_s": n_evict as f64 / evict_s,
        "pdb_violations": stats["pdb_violations"],
    }))
}

fn run_phase(phase: &str, extra: &[String]) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).arg("--phase").arg(phase).args(extra).output()?;
    if !out.status.success() {
        bail!("phase {phase} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&line).with_context(|| format!("phase {phase} printed {line:?}"))
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let clusters = arg("--clusters", 1000);
    let nodes = arg("--nodes", 200);
    let pods = arg("--pods", 5000);
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let v = match args.get(i + 1).map(String::as_str) {
            Some("fleet") => rt.block_on(phase_fleet(clusters))?,
            Some("big") => rt.block_on(phase_big(nodes, pods))?,
            other => bail!("unknown phase {other:?}"),
        };
        println!("{v}");
        return Ok(());
    }
    let extra = vec![
        "--clusters".into(),
        clusters.to_string(),
        "--nodes".into(),
        nodes.to_string(),
        "--pods".into(),
        pods.to_string(),
    ];
    let fleet = run_phase("fleet", &extra)?;
    let big = run_phase("big", &extra)?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let verdict = |mib: f64| if mib < RSS_TARGET_MIB { "ok" } else { "OVER" };
    println!("flotilla-sim benchmark (one process per row group; loopback; kube-rs client)\n");
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| {} default clusters ({} pods): settle time | {:.1} s | |",
        clusters,
        fleet["pods"],
        f(&fleet, "settle_s")
    );
    println!(
        "| {} default clusters: RSS / peak | {:.0} / {:.0} MiB | < {RSS_TARGET_MIB:.0} MiB: {} |",
        clusters,
        f(&fleet, "rss_mib"),
        f(&fleet, "peak_mib"),
        verdict(f(&fleet, "peak_mib"))
    );
    println!(
        "| 1 cluster, {} nodes / {} pods: settle time | {:.1} s | |",
        nodes,
        big["pods"],
        f(&big, "settle_s")
    );
    println!("| 1 cluster, {} nodes / {} pods: RSS / peak at settle | {:.0} / {:.0} MiB | < {RSS_TARGET_MIB:.0} MiB: {} |", nodes, big["pods"], f(&big, "rss_mib"), f(&big, "peak_mib"), verdict(f(&big, "peak_mib")));
    println!(
        "| list all {} pods (one response) | {:.1} ms ({:.0} pods/s) | |",
        big["pods"],
        f(&big, "list_full_s") * 1e3,
        f(&big, "pods") / f(&big, "list_full_s")
    );
    println!(
        "| list all pods in pages of 500 | {:.1} ms ({:.0} pods/s) | |",
        f(&big, "list_paged_s") * 1e3,
        f(&big, "pods") / f(&big, "list_paged_s")
    );
    println!(
        "| watch fan-out: {} watchers x {} MODIFIED | {:.0} events/s delivered ({:.2} s) | |",
        big["watchers"],
        big["pods"],
        f(&big, "watch_events_per_s"),
        f(&big, "watch_s")
    );
    println!(
        "| evictions (no PDB, 32 in flight) | {:.0} evictions/s ({} done, {} failed) | |",
        f(&big, "evictions_per_s"),
        big["evictions"],
        big["evictions_failed"]
    );
    println!(
        "| peak RSS after the throughput runs | {:.0} MiB | |",
        f(&big, "peak_after_mib")
    );
    println!("| PDB violations | {} | 0 |", big["pdb_violations"]);
    Ok(())
}
