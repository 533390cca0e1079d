//! The stock kubectl binary against the simulator, doing what an SRE does on a real cluster.

mod common;

use std::time::Duration;

use common::{fleet, kubectl_async};
use flotilla_sim::object::Object;
use flotilla_sim::resources::Kind;

const NG_OLD: &str = "alpha.eksctl.io/nodegroup-name=ng-old";

fn pods_by_node(f: &flotilla_sim::fleet::Fleet, ns: &str, app: &str) -> Vec<(String, String, bool)> {
    let store = f.cluster("sim-1").expect("sim-1").lock();
    let pods = store
        .list(Kind::Pod, Some(ns))
        .filter_map(|e| match e.obj.as_ref() {
            Object::Pod(p)
                if p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app"))
                    .map(String::as_str)
                    == Some(app) =>
            {
                Some((
                    p.metadata.name.clone().unwrap_or_default(),
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    p.metadata.deletion_timestamp.is_some(),
                ))
            }
            _ => None,
        })
        .collect();
    pods
}

fn node_of(f: &flotilla_sim::fleet::Fleet, ns: &str, pod_prefix: &str) -> String {
    let store = f.cluster("sim-1").expect("sim-1").lock();
    let node = store
        .list(Kind::Pod, Some(ns))
        .find(|e| e.obj.name().starts_with(pod_prefix) && e.obj.meta().deletion_timestamp.is_none())
        .and_then(|e| match e.obj.as_ref() {
            Object::Pod(p) => p.spec.as_ref().and_then(|s| s.node_name.clone()),
            _ => None,
        });
    node.expect("pod is scheduled")
}

fn node_names(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_by_nodegroup_label() {
    let (_f, dir) = fleet(1).await;
    let out = kubectl_async(&dir, "sim-1", &["get", "nodes", "-l", NG_OLD]).await;
    assert!(out.ok, "{out:?}");
    let names = node_names(&out.stdout);
    assert_eq!(names.len(), 4, "{}", out.stdout);
    assert!(
        out.stdout.lines().skip(1).all(|l| l.contains(" Ready ")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("v1.33"), "{}", out.stdout);
    let none = kubectl_async(
        &dir,
        "sim-1",
        &["get", "nodes", "-l", "alpha.eksctl.io/nodegroup-name=ng-new"],
    )
    .await;
    assert!(none.ok && none.stdout.is_empty(), "{none:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taint_then_scale_places_new_pods_on_untainted_nodes_only() {
    let (f, dir) = fleet(1).await;
    let out = kubectl_async(&dir, "sim-1", &["get", "nodes", "-l", NG_OLD]).await;
    let names = node_names(&out.stdout);
    let (tainted, free) = names.split_at(2);
    let mut args = vec!["taint", "nodes"];
    args.extend(tainted.iter().map(String::as_str));
    args.push("flotilla=migrating:NoSchedule");
    let out = kubectl_async(&dir, "sim-1", &args).await;
    assert!(out.ok, "{out:?}");
    let before: Vec<String> = pods_by_node(&f, "shop", "web").into_iter().map(|p| p.0).collect();
    let out = kubectl_async(
        &dir,
        "sim-1",
        &["scale", "deployment", "web", "--replicas=8", "-n", "shop"],
    )
    .await;
    assert!(out.ok, "{out:?}");
    assert!(out.stdout.contains("deployment.apps/web scaled"), "{out:?}");
    let out = kubectl_async(
        &dir,
        "sim-1",
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=30s",
        ],
    )
    .await;
    assert!(out.ok, "{out:?}");
    assert!(out.stdout.contains("successfully rolled out"), "{out:?}");
    let pods = pods_by_node(&f, "shop", "web");
    let new: Vec<_> = pods.iter().filter(|p| !before.contains(&p.0)).collect();
    assert_eq!(new.len(), 4, "{pods:?}");
    for (name, node, _) in new {
        assert!(
            free.contains(node),
            "new pod {name} landed on tainted node {node}"
        );
    }
    // The replica set shows the new size.
    let rs = kubectl_async(&dir, "sim-1", &["get", "rs", "-n", "shop"]).await;
    assert!(rs.ok, "{rs:?}");
    let web = rs
        .stdout
        .lines()
        .find(|l| l.starts_with("web-"))
        .expect("web replica set listed");
    let cols: Vec<&str> = web.split_whitespace().collect();
    assert_eq!(&cols[1..4], &["8", "8", "8"], "{}", rs.stdout);
    assert!(rs.stdout.starts_with("NAME"), "{}", rs.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon() {
    let (f, dir) = fleet(1).await;
    let node = node_of(&f, "shop", "web-");
    let out = kubectl_async(&dir, "sim-1", &["cordon", &node]).await;
    assert!(out.ok && out.stdout.contains("cordoned"), "{out:?}");
    let get = kubectl_async(&dir, "sim-1", &["get", "node", &node]).await;
    assert!(get.stdout.contains("Ready,SchedulingDisabled"), "{get:?}");
    let json = kubectl_async(
        &dir,
        "sim-1",
        &["get", "node", &node, "-o", "jsonpath={.spec.unschedulable}"],
    )
    .await;
    assert_eq!(json.stdout, "true", "{json:?}");
    let out = kubectl_async(&dir, "sim-1", &["uncordon", &node]).await;
    assert!(out.ok && out.stdout.contains("uncordoned"), "{out:?}");
    let get = kubectl_async(&dir, "sim-1", &["get", "node", &node]).await;
    assert!(!get.stdout.contains("SchedulingDisabled"), "{get:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_follows_a_template_change() {
    let (_f, dir) = fleet(1).await;
    let out = kubectl_async(
        &dir,
        "sim-1",
        &[
            "set",
            "image",
            "deployment/api",
            "api=public.ecr.aws/nginx/nginx:1.28",
            "-n",
            "shop",
        ],
    )
    .await;
    assert!(out.ok, "{out:?}");
    let out = kubectl_async(
        &dir,
        "sim-1",
        &[
            "rollout",
            "status",
            "deployment/api",
            "-n",
            "shop",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(out.ok, "{out:?}");
    assert!(
        out.stdout.contains("deployment \"api\" successfully rolled out"),
        "{out:?}"
    );
    let rs = kubectl_async(
        &dir,
        "sim-1",
        &[
            "get",
            "rs",
            "-n",
            "shop",
            "-l",
            "app=api",
            "-o",
            "jsonpath={range .items[*]}{.spec.replicas} {end}",
        ],
    )
    .await;
    let mut sizes: Vec<&str> = rs.stdout.split_whitespace().collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec!["0", "3"],
        "old replica set scaled to 0, new to 3: {rs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_needs_force_for_the_standalone_pod_then_completes() {
    let (f, dir) = fleet(1).await;
    let node = node_of(&f, "shop", "debug-shell");
    // If `cache` shares the node, its PDB (minAvailable 1 of 1) would block the drain: cordon
    // the node and scale `cache` to 2 (the new pod lands elsewhere), so the PDB lets one go.
    if node_of(&f, "shop", "cache-") == node {
        assert!(kubectl_async(&dir, "sim-1", &["cordon", node.as_str()]).await.ok);
        let out = kubectl_async(
            &dir,
            "sim-1",
            &["-n", "shop", "scale", "deployment/cache", "--replicas=2"],
        )
        .await;
        assert!(out.ok, "{out:?}");
    }
    let args = [
        "drain",
        node.as_str(),
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ];
    let out = kubectl_async(&dir, "sim-1", &args).await;
    assert!(
        !out.ok,
        "drain without --force must refuse the unmanaged pod: {out:?}"
    );
    assert!(
        out.stderr
            .contains("cannot delete Pods that declare no controller"),
        "{out:?}"
    );
    assert!(out.stderr.contains("shop/debug-shell"), "{out:?}");
    let mut forced = args.to_vec();
    forced.push("--force");
    let out = kubectl_async(&dir, "sim-1", &forced).await;
    assert!(out.ok, "{out:?}");
    assert!(out.stdout.contains(&format!("node/{node} drained")), "{out:?}");
    // Nothing evictable is left on the node; DaemonSet pods stay.
    let store = f.cluster("sim-1").expect("sim-1").lock();
    let left: Vec<String> = store
        .list(Kind::Pod, None)
        .filter(|e| match e.obj.as_ref() {
            Object::Pod(p) => p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()),
            _ => false,
        })
        .filter(|e| {
            !e.obj
                .meta()
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.kind == "DaemonSet")
        })
        .map(|e| e.obj.name().to_string())
        .collect();
    assert!(left.is_empty(), "pods left on drained node: {left:?}");
    let stats = store.stats().stats().clone();
    drop(store);
    assert_eq!(stats.pdb_violations, 0, "{stats:?}");
    assert!(stats.evictions_allowed > 0, "{stats:?}");
    for (name, d) in &stats.deployments {
        if let (Some(start), Some(min)) = (d.available_at_start, d.min_available) {
            // A drain without surge may dip, but never below what the PDBs allow.
            assert!(min >= start - 1, "{name} fell from {start} to {min}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_blocked_by_pdb_fails_at_timeout() {
    let (f, dir) = fleet(1).await;
    let node = node_of(&f, "shop", "cache-");
    let out = kubectl_async(
        &dir,
        "sim-1",
        &[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--force",
            "--timeout=12s",
        ],
    )
    .await;
    assert!(!out.ok, "{out:?}");
    assert!(
        out.stderr
            .contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("will retry after 5s"),
        "kubectl retried: {out:?}"
    );
    assert!(out.stderr.contains("cache-"), "{out:?}");
    assert!(
        out.stderr.contains("global timeout reached: 12s") || out.stderr.contains("timeout"),
        "{out:?}"
    );
    // The PDB that blocked is the one kubectl shows with no allowed disruptions.
    let pdb = kubectl_async(&dir, "sim-1", &["get", "pdb", "cache", "-n", "shop"]).await;
    let row = pdb.stdout.lines().nth(1).unwrap_or_default().to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(3), Some(&"0"), "{}", pdb.stdout);
    // The node stays cordoned; the cache pod still runs there.
    let get = kubectl_async(&dir, "sim-1", &["get", "node", &node]).await;
    assert!(get.stdout.contains("SchedulingDisabled"), "{get:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(node_of(&f, "shop", "cache-"), node);
    let stats = f.cluster("sim-1").expect("sim-1").lock().stats().stats().clone();
    assert!(stats.evictions_refused >= 2, "{stats:?}");
    assert_eq!(stats.pdb_violations, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_server_side_columns() {
    let (_f, dir) = fleet(1).await;
    let out = kubectl_async(&dir, "sim-1", &["get", "deploy", "-n", "shop"]).await;
    assert!(out.ok, "{out:?}");
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{}",
        out.stdout
    );
    let web = out
        .stdout
        .lines()
        .find(|l| l.starts_with("web "))
        .expect("web listed");
    assert!(web.contains("4/4"), "{}", out.stdout);
    let pdb = kubectl_async(&dir, "sim-1", &["get", "pdb", "-A"]).await;
    assert!(
        pdb.stdout.contains("MIN AVAILABLE") && pdb.stdout.contains("ALLOWED DISRUPTIONS"),
        "{pdb:?}"
    );
    let hpa = kubectl_async(&dir, "sim-1", &["get", "hpa", "-n", "shop"]).await;
    assert!(hpa.stdout.contains("Deployment/worker"), "{hpa:?}");
    let pods = kubectl_async(&dir, "sim-1", &["get", "pods", "-n", "kube-system", "-o", "wide"]).await;
    assert!(
        pods.stdout.contains("aws-node-") && pods.stdout.contains("Running"),
        "{pods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_raw_metrics_counts_the_deprecated_apis_clients_call() {
    let scenario = flotilla_sim::scenario::Scenario::from_yaml(
        r#"
eks:
  deprecatedApiRequests:
    - {api: /apis/resource.k8s.io/v1beta1/resourceclaims, removedRelease: "1.34"}
    - {api: /apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas/status, removedRelease: "1.36"}
"#,
        "deprecated.yaml",
    )
    .expect("scenario");
    let (f, dir) = common::fleet_with(scenario, 1, Default::default()).await;
    let out = kubectl_async(&dir, "sim-1", &["get", "--raw", "/metrics"]).await;
    assert!(out.ok, "{out:?}");
    let samples: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("apiserver_requested_deprecated_apis{"))
        .collect();
    assert_eq!(samples.len(), 2, "{}", out.stdout);
    assert!(samples.iter().any(|l| l.contains(r#"group="resource.k8s.io",removed_release="1.34",resource="resourceclaims",subresource="",version="v1beta1"} 1"#)), "{samples:?}");
    // The 1.34 control plane no longer serves resource.k8s.io/v1beta1: only the other is counted.
    f.cluster("sim-1").expect("sim-1").set_minor("34");
    let out = kubectl_async(&dir, "sim-1", &["get", "--raw", "/metrics"]).await;
    assert!(out.ok, "{out:?}");
    assert!(!out.stdout.contains("resourceclaims"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(r#"resource="flowschemas",subresource="status""#),
        "{}",
        out.stdout
    );
}
