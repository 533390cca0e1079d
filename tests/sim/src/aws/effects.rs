//! The timed effects of EKS and Auto Scaling operations on the simulated clusters, one tokio task
//! per operation: control-plane updates change the served version, node groups launch nodes that
//! register and turn Ready (through the node lifecycle controller), node group updates replace
//! nodes as EKS does (surge, taint, evict through the Eviction API honouring PDBs, terminate),
//! deletions drain and remove nodes, scale-in terminates instances.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tracing::{debug, info, warn};

use super::{catalog, Aws, ErrorDetail, Member, UpdateTarget, AMI_LABEL};
use crate::api::{self, DeleteOptions, Target};
use crate::controllers;
use crate::eviction;
use crate::object::Object;
use crate::resources::Kind;
use crate::scenario::{build_node, KubeVersion};
use crate::store::Store;

/// The taint EKS puts on nodes of the old AMI during a node group update.
pub const UPDATE_TAINT_KEY: &str = "eks.amazonaws.com/nodegroup";
/// Its value.
pub const UPDATE_TAINT_VALUE: &str = "unschedulable";
const POLL: Duration = Duration::from_millis(50);

/// Runs `fut` as its own task until it ends or the fleet shuts down.
pub fn spawn(aws: &Aws, fut: impl Future<Output = ()> + Send + 'static) {
    let mut shutdown = aws.shutdown();
    tokio::spawn(async move {
        tokio::select! {
            _ = fut => {}
            _ = shutdown.wait_for(|v| *v) => {}
        }
    });
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn finish_update(aws: &Aws, cluster: &str, id: &str, status: &'static str, errors: Vec<ErrorDetail>) {
    let mut st = aws.lock();
    if let Some(u) = st.clusters.get_mut(cluster).and_then(|c| c.update_mut(id)) {
        u.status = status;
        u.errors = errors;
    }
}

/// UpdateClusterVersion: after the delay the control plane serves the new minor (or the update
/// fails, by the scenario's fault).
pub async fn cluster_update(aws: Arc<Aws>, cluster: String, id: String) {
    let (delay, fail, target) = {
        let st = aws.lock();
        let Some(c) = st.clusters.get(&cluster) else {
            return;
        };
        let target = c
            .updates
            .iter()
            .find(|u| u.id == id)
            .and_then(|u| u.params.iter().find(|(t, _)| t == "Version"))
            .and_then(|(_, v)| KubeVersion::parse(v).ok())
            .map_or(c.minor, KubeVersion::minor);
        (
            c.timing.control_plane_update,
            c.faults.fail_control_plane_update,
            target,
        )
    };
    sleep(delay).await;
    if fail {
        if let Some(c) = aws.lock().clusters.get_mut(&cluster) {
            c.status = "ACTIVE";
        }
        finish_update(
            &aws,
            &cluster,
            &id,
            "Failed",
            vec![ErrorDetail {
                code: "Unknown".into(),
                message: "The control plane update failed (injected by the scenario's eks.faults.failControlPlaneUpdate).".into(),
                resource_ids: vec![cluster.clone()],
            }],
        );
        info!(%cluster, "control-plane update failed (scenario fault)");
        return;
    }
    {
        let mut st = aws.lock();
        if let Some(c) = st.clusters.get_mut(&cluster) {
            c.minor = target;
            c.status = "ACTIVE";
        }
    }
    if let Some(c) = aws.cluster(&cluster) {
        c.set_minor(&target.to_string());
    }
    finish_update(&aws, &cluster, &id, "Successful", Vec::new());
    info!(%cluster, version = %format!("1.{target}"), "control plane updated");
}

/// Launches `count` instances into group `ng`: nodes registered NotReady (the node lifecycle
/// controller turns them Ready after `timing.nodeReadyDelay`). Returns their node names.
pub fn launch(aws: &Aws, cluster: &str, ng: &str, count: u32) -> Vec<String> {
    if count == 0 {
        return Vec::new();
    }
    let mut st = aws.lock();
    let Some(c) = st.clusters.get_mut(cluster) else {
        return Vec::new();
    };
    let region = c.region.clone();
    let Some(g) = c.groups.get_mut(ng) else {
        return Vec::new();
    };
    let now = Timestamp::now();
    let mut nodes = Vec::new();
    for _ in 0..count {
        let index = g.next_index;
        g.next_index += 1;
        let mut node = build_node(
            &g.spec,
            cluster,
            &region,
            index,
            &format!("1.{}", g.minor),
            false,
            now,
        );
        if g.managed.is_some() {
            node.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(AMI_LABEL.into(), g.ami.clone());
        }
        let obj = Object::Node(node);
        let Some((instance_id, zone, _)) = super::instance_of(&obj) else {
            continue;
        };
        g.members.push(Member {
            node: obj.name().to_string(),
            instance_id,
            zone,
            minor: g.minor,
            ami: g.ami.clone(),
            terminating: false,
        });
        nodes.push(obj);
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name().to_string()).collect();
    if let Some(k) = aws.cluster(cluster) {
        k.write(|store| {
            for n in nodes {
                controllers::create(store, now, n);
            }
        });
    }
    debug!(%cluster, group = %ng, ?names, "instances launched");
    names
}

fn node_ready(store: &Store, name: &str) -> bool {
    match store.get_obj(Kind::Node, "", name).as_deref() {
        Some(Object::Node(n)) => n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        _ => false,
    }
}

/// Whether every node in `names` is Ready.
pub fn all_ready(aws: &Aws, cluster: &str, names: &[String]) -> bool {
    aws.cluster(cluster).is_some_and(|c| {
        let store = c.lock();
        names.iter().all(|n| node_ready(&store, n))
    })
}

/// Waits until every node in `names` is Ready; false at the deadline.
async fn wait_ready(aws: &Aws, cluster: &str, names: &[String], timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if all_ready(aws, cluster, names) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

/// Pods a drain must move off a node: bound to it, not terminating, not finished, not owned by a
/// DaemonSet, not mirror pods.
fn evictable(pod: &Pod, nodes: &[String]) -> bool {
    let on = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some_and(|n| nodes.contains(n));
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet");
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    on && !terminating && !daemon && !mirror && phase != "Succeeded" && phase != "Failed"
}

/// Pods still on `nodes` that a drain waits for (evictable or terminating, DaemonSets aside).
fn remaining(store: &Store, nodes: &[String]) -> usize {
    store
        .list(Kind::Pod, None)
        .filter(|e| match e.obj.as_ref() {
            Object::Pod(p) => {
                let on = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| nodes.contains(n));
                let daemon = p
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "DaemonSet");
                on && !daemon
            }
            _ => false,
        })
        .count()
}

fn set_unschedulable(store: &mut Store, node: &str, on: bool) {
    if let Some(Object::Node(mut n)) = store.get_obj(Kind::Node, "", node).map(|o| (*o).clone()) {
        let spec = n.spec.get_or_insert_with(Default::default);
        spec.unschedulable = on.then_some(true);
        controllers::update_if_changed(store, Object::Node(n));
    }
}

fn set_update_taint(store: &mut Store, node: &str, on: bool) {
    if let Some(Object::Node(mut n)) = store.get_obj(Kind::Node, "", node).map(|o| (*o).clone()) {
        let spec = n.spec.get_or_insert_with(Default::default);
        let mut taints = spec.taints.take().unwrap_or_default();
        taints.retain(|t| !(t.key == UPDATE_TAINT_KEY && t.effect == "NoSchedule"));
        if on {
            taints.push(Taint {
                key: UPDATE_TAINT_KEY.into(),
                value: Some(UPDATE_TAINT_VALUE.into()),
                effect: "NoSchedule".into(),
                time_added: None,
            });
        }
        spec.taints = (!taints.is_empty()).then_some(taints);
        controllers::update_if_changed(store, Object::Node(Node { ..n }));
    }
}

/// Drains `nodes`: cordons them and evicts their pods through the Eviction API (PDBs honoured),
/// retrying refusals every `retry` until `timeout`. Then, with `force`, deletes what is left;
/// without, fails naming the pods that could not be evicted.
pub async fn drain(
    aws: &Aws,
    cluster: &str,
    nodes: &[String],
    timeout: Duration,
    retry: Duration,
    force: bool,
) -> Result<(), Vec<String>> {
    let Some(k) = aws.cluster(cluster).cloned() else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let refused: Vec<String> = k.write(|store| {
            let now = Timestamp::now();
            for n in nodes {
                set_unschedulable(store, n, true);
            }
            let pods: Vec<(String, String)> = store
                .list(Kind::Pod, None)
                .filter_map(|e| match e.obj.as_ref() {
                    Object::Pod(p) if evictable(p, nodes) => Some((e.obj.namespace().to_string(), e.obj.name().to_string())),
                    _ => None,
                })
                .collect();
            let mut refused = Vec::new();
            for (ns, name) in pods {
                let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}});
                match eviction::evict(store, now, &ns, &name, &body, false) {
                    Ok(o) if o.allowed => {}
                    Ok(_) => refused.push(format!("{ns}/{name}")),
                    Err(e) if e.code == 404 => {}
                    Err(e) => {
                        debug!(pod = %name, error = ?e.status(), "eviction error");
                        refused.push(format!("{ns}/{name}"));
                    }
                }
            }
            refused
        });
        let left = aws.cluster(cluster).map_or(0, |c| remaining(&c.lock(), nodes));
        if refused.is_empty() && left == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            if refused.is_empty() {
                // Only terminating pods are left: the kubelet finishes them; go on.
                return Ok(());
            }
            if force {
                k.write(|store| {
                    let now = Timestamp::now();
                    for p in &refused {
                        if let Some((ns, name)) = p.split_once('/') {
                            let _ = api::delete(store, now, Kind::Pod, ns, name, &DeleteOptions::default());
                        }
                    }
                });
                warn!(%cluster, pods = ?refused, "eviction timed out; pods deleted (force)");
                return Ok(());
            }
            return Err(refused);
        }
        sleep(retry.min(Duration::from_secs(5)).max(POLL)).await;
    }
}

/// Terminates instances: removes their nodes and every pod bound to them (as the pod garbage
/// collector does once a node is gone), and the members from their group.
pub fn remove_nodes(aws: &Aws, cluster: &str, ng: &str, nodes: &[String]) {
    {
        let mut st = aws.lock();
        if let Some(g) = st.clusters.get_mut(cluster).and_then(|c| c.groups.get_mut(ng)) {
            g.members.retain(|m| !nodes.contains(&m.node));
        }
    }
    if let Some(k) = aws.cluster(cluster) {
        k.write(|store| {
            let now = Timestamp::now();
            let bound: Vec<(String, String)> = store
                .list(Kind::Pod, None)
                .filter_map(|e| match e.obj.as_ref() {
                    Object::Pod(p)
                        if p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_ref())
                            .is_some_and(|n| nodes.contains(n)) =>
                    {
                        Some((e.obj.namespace().to_string(), e.obj.name().to_string()))
                    }
                    _ => None,
                })
                .collect();
            let gone = DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            for (ns, name) in bound {
                if api::delete(store, now, Kind::Pod, &ns, &name, &gone).is_err() {
                    store.remove(Kind::Pod, &ns, &name);
                }
            }
            for n in nodes {
                store.remove(Kind::Node, "", n);
            }
        });
    }
    info!(%cluster, group = %ng, ?nodes, "instances terminated");
}

fn set_ng_status(aws: &Aws, cluster: &str, ng: &str, status: &'static str) {
    let mut st = aws.lock();
    if let Some(g) = st.clusters.get_mut(cluster).and_then(|c| c.groups.get_mut(ng)) {
        g.busy = false;
        if let Some(m) = g.managed.as_mut() {
            m.status = status;
            m.modified_at = Timestamp::now();
        }
    }
}

/// CreateNodegroup: instances launch after the delay, register, and the group turns ACTIVE when
/// all are Ready (CREATE_FAILED with `NodeCreationFailure` if they do not join in time).
pub async fn nodegroup_create(aws: Arc<Aws>, cluster: String, ng: String) {
    let Some((timing, desired)) = aws
        .lock()
        .clusters
        .get(&cluster)
        .and_then(|c| c.groups.get(&ng).map(|g| (c.timing, g.desired)))
    else {
        return;
    };
    sleep(timing.nodegroup_create).await;
    let still_creating = |aws: &Aws| {
        aws.lock()
            .clusters
            .get(&cluster)
            .and_then(|c| c.groups.get(&ng))
            .and_then(|g| g.managed.as_ref())
            .is_some_and(|m| m.status == "CREATING")
    };
    if !still_creating(&aws) {
        return;
    }
    let names = launch(&aws, &cluster, &ng, desired);
    let ok = wait_ready(&aws, &cluster, &names, timing.node_join_timeout).await;
    if !still_creating(&aws) {
        return;
    }
    if ok {
        set_ng_status(&aws, &cluster, &ng, "ACTIVE");
        info!(%cluster, group = %ng, nodes = names.len(), "node group ACTIVE");
        return;
    }
    let mut st = aws.lock();
    if let Some(g) = st.clusters.get_mut(&cluster).and_then(|c| c.groups.get_mut(&ng)) {
        let ids: Vec<String> = g.members.iter().map(|m| m.instance_id.clone()).collect();
        g.busy = false;
        if let Some(m) = g.managed.as_mut() {
            m.status = "CREATE_FAILED";
            m.health.push(ErrorDetail {
                code: "NodeCreationFailure".into(),
                message: "Instances failed to join the kubernetes cluster".into(),
                resource_ids: ids,
            });
        }
    }
}

/// DeleteNodegroup: nodes drained (PDBs honoured until the eviction timeout, then pods deleted),
/// terminated, then the group is gone.
pub async fn nodegroup_delete(aws: Arc<Aws>, cluster: String, ng: String) {
    let Some((timing, nodes)) = aws.lock().clusters.get(&cluster).and_then(|c| {
        c.groups.get(&ng).map(|g| {
            (
                c.timing,
                g.members.iter().map(|m| m.node.clone()).collect::<Vec<_>>(),
            )
        })
    }) else {
        return;
    };
    let _ = drain(
        &aws,
        &cluster,
        &nodes,
        timing.eviction_timeout,
        timing.eviction_retry,
        true,
    )
    .await;
    sleep(timing.nodegroup_delete).await;
    remove_nodes(&aws, &cluster, &ng, &nodes);
    let mut st = aws.lock();
    if let Some(c) = st.clusters.get_mut(&cluster) {
        c.groups.remove(&ng);
        c.updates
            .retain(|u| u.target != UpdateTarget::Nodegroup(ng.clone()));
    }
    info!(%cluster, group = %ng, "node group deleted");
}

/// How many nodes a managed group replaces at once (`updateConfig`), at least 1.
fn batch_size(aws: &Aws, cluster: &str, ng: &str) -> usize {
    let st = aws.lock();
    let Some(g) = st.clusters.get(cluster).and_then(|c| c.groups.get(ng)) else {
        return 1;
    };
    let m = g.managed.as_ref();
    let n = match (
        m.and_then(|m| m.max_unavailable),
        m.and_then(|m| m.max_unavailable_percentage),
    ) {
        (Some(n), _) => n,
        (None, Some(p)) => (g.desired * p).div_ceil(100),
        _ => 1,
    };
    n.max(1) as usize
}

/// UpdateNodegroupVersion: per batch of `updateConfig.maxUnavailable` old nodes, surge as many
/// new ones and wait for them Ready, taint the old nodes `eks.amazonaws.com/nodegroup=
/// unschedulable:NoSchedule`, drain the batch through the Eviction API and terminate it. An
/// eviction still refused after the eviction timeout fails the update with `PodEvictionFailure`
/// unless `force`.
pub async fn nodegroup_update(
    aws: Arc<Aws>,
    cluster: String,
    ng: String,
    id: String,
    minor: u32,
    force: bool,
) {
    let Some((timing, fail, old_minor, old_ami, old_kubelet)) =
        aws.lock().clusters.get(&cluster).and_then(|c| {
            c.groups.get(&ng).map(|g| {
                (
                    c.timing,
                    c.faults.fail_nodegroup_updates.contains(&ng),
                    g.minor,
                    g.ami.clone(),
                    g.spec.kubelet_version,
                )
            })
        })
    else {
        return;
    };
    let release = super::release_version(minor);
    let target_ami = super::ami_for(&cluster, &ng, &release);
    let fail_with = |aws: &Aws, code: &str, message: String, ids: Vec<String>| {
        {
            let mut st = aws.lock();
            if let Some(g) = st.clusters.get_mut(&cluster).and_then(|c| c.groups.get_mut(&ng)) {
                g.minor = old_minor;
                g.ami = old_ami.clone();
                g.spec.kubelet_version = old_kubelet;
            }
        }
        set_ng_status(aws, &cluster, &ng, "ACTIVE");
        finish_update(
            aws,
            &cluster,
            &id,
            "Failed",
            vec![ErrorDetail {
                code: code.into(),
                message,
                resource_ids: ids,
            }],
        );
        warn!(%cluster, group = %ng, %code, "node group update failed");
    };
    if fail {
        sleep(timing.node_replacement).await;
        let ids: Vec<String> = vec![format!("i-0{}", super::hex_from(&[&cluster, &ng, &id], 16))];
        fail_with(&aws, "NodeCreationFailure", "Instances failed to join the kubernetes cluster (injected by the scenario's eks.faults.failNodegroupUpdates)".into(), ids);
        return;
    }
    {
        let mut st = aws.lock();
        if let Some(g) = st.clusters.get_mut(&cluster).and_then(|c| c.groups.get_mut(&ng)) {
            g.minor = minor;
            g.ami = target_ami.clone();
            g.spec.kubelet_version = Some(KubeVersion::new(minor));
        }
    }
    let batch = batch_size(&aws, &cluster, &ng);
    let mut tainted = false;
    loop {
        let old: Vec<String> = {
            let st = aws.lock();
            st.clusters
                .get(&cluster)
                .and_then(|c| c.groups.get(&ng))
                .map(|g| {
                    g.live()
                        .filter(|m| m.ami != target_ami)
                        .map(|m| m.node.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        if old.is_empty() {
            break;
        }
        let k = batch.min(old.len());
        let new = launch(&aws, &cluster, &ng, k as u32);
        if !wait_ready(&aws, &cluster, &new, timing.node_join_timeout).await {
            let ids = instance_ids(&aws, &cluster, &ng, &new);
            remove_nodes(&aws, &cluster, &ng, &new);
            fail_with(
                &aws,
                "NodeCreationFailure",
                "Instances failed to join the kubernetes cluster".into(),
                ids,
            );
            untaint(&aws, &cluster, &old);
            return;
        }
        if !tainted {
            if let Some(kc) = aws.cluster(&cluster) {
                kc.write(|store| old.iter().for_each(|n| set_update_taint(store, n, true)));
            }
            tainted = true;
        }
        let victims: Vec<String> = old.iter().take(k).cloned().collect();
        match drain(
            &aws,
            &cluster,
            &victims,
            timing.eviction_timeout,
            timing.eviction_retry,
            force,
        )
        .await
        {
            Ok(()) => {
                sleep(timing.node_replacement).await;
                remove_nodes(&aws, &cluster, &ng, &victims);
            }
            Err(pods) => {
                if let Some(kc) = aws.cluster(&cluster) {
                    kc.write(|store| victims.iter().for_each(|n| set_unschedulable(store, n, false)));
                }
                untaint(&aws, &cluster, &old);
                let mut ids = victims.clone();
                ids.extend(pods);
                fail_with(
                    &aws,
                    "PodEvictionFailure",
                    format!("Reached max retries while trying to evict pods from nodes in node group {ng}"),
                    ids,
                );
                return;
            }
        }
    }
    // Nodes beyond the desired size (left by an earlier failed update) go, drained.
    let extra: Vec<String> = {
        let st = aws.lock();
        st.clusters
            .get(&cluster)
            .and_then(|c| c.groups.get(&ng))
            .map(|g| {
                let live: Vec<&Member> = g.live().collect();
                live.iter()
                    .skip(g.desired as usize)
                    .map(|m| m.node.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    if !extra.is_empty()
        && drain(
            &aws,
            &cluster,
            &extra,
            timing.eviction_timeout,
            timing.eviction_retry,
            force,
        )
        .await
        .is_ok()
    {
        remove_nodes(&aws, &cluster, &ng, &extra);
    }
    {
        let mut st = aws.lock();
        if let Some(g) = st.clusters.get_mut(&cluster).and_then(|c| c.groups.get_mut(&ng)) {
            if let Some(m) = g.managed.as_mut() {
                m.version = minor;
                m.release_version = release;
            }
        }
    }
    set_ng_status(&aws, &cluster, &ng, "ACTIVE");
    finish_update(&aws, &cluster, &id, "Successful", Vec::new());
    info!(%cluster, group = %ng, version = %format!("1.{minor}"), "node group updated");
}

fn instance_ids(aws: &Aws, cluster: &str, ng: &str, nodes: &[String]) -> Vec<String> {
    let st = aws.lock();
    st.clusters
        .get(cluster)
        .and_then(|c| c.groups.get(ng))
        .map(|g| {
            g.members
                .iter()
                .filter(|m| nodes.contains(&m.node))
                .map(|m| m.instance_id.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn untaint(aws: &Aws, cluster: &str, nodes: &[String]) {
    if let Some(kc) = aws.cluster(cluster) {
        kc.write(|store| nodes.iter().for_each(|n| set_update_taint(store, n, false)));
    }
}

/// UpdateAddon: after the delay the add-on is at the new version and its kube-system workload
/// runs the new image (or the update fails, by the scenario's fault).
pub async fn addon_update(
    aws: Arc<Aws>,
    cluster: String,
    addon: String,
    id: String,
    role: Option<String>,
    config: Option<String>,
) {
    let Some((delay, fail, version, region)) = aws.lock().clusters.get(&cluster).map(|c| {
        let v = c
            .updates
            .iter()
            .find(|u| u.id == id)
            .and_then(|u| u.params.iter().find(|(t, _)| t == "AddonVersion"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        (
            c.timing.addon_update,
            c.faults.fail_addon_updates.contains(&addon),
            v,
            c.region.clone(),
        )
    }) else {
        return;
    };
    sleep(delay).await;
    {
        let mut st = aws.lock();
        let Some(a) = st
            .clusters
            .get_mut(&cluster)
            .and_then(|c| c.addons.get_mut(&addon))
        else {
            return;
        };
        a.status = "ACTIVE";
        a.modified_at = Timestamp::now();
        if !fail {
            a.version = version.clone();
            if role.is_some() {
                a.service_account_role_arn = role;
            }
            if config.is_some() {
                a.configuration_values = config;
            }
        }
    }
    if fail {
        finish_update(
            &aws,
            &cluster,
            &id,
            "Failed",
            vec![ErrorDetail {
                code: "ConfigurationConflict".into(),
                message: "Conflicts found when trying to apply. Will not continue due to resolve conflicts mode. (injected by the scenario's eks.faults.failAddonUpdates)".into(),
                resource_ids: Vec::new(),
            }],
        );
        return;
    }
    if let (Some(image), Some((daemon, name)), Some(kc)) = (
        catalog::image(&addon, &version, &region),
        catalog::workload(&addon),
        aws.cluster(&cluster),
    ) {
        let kind = if daemon { Kind::DaemonSet } else { Kind::Deployment };
        kc.write(|store| {
            let Some(obj) = store.get_obj(kind, "kube-system", name) else {
                return;
            };
            let mut body = obj.to_json();
            if let Some(c) = body.pointer_mut("/spec/template/spec/containers/0/image") {
                *c = json!(image);
                if let Err(e) = api::replace(store, kind, "kube-system", name, body, Target::Main, false) {
                    warn!(%cluster, %addon, error = ?e.status(), "add-on workload not updated");
                }
            }
        });
    }
    finish_update(&aws, &cluster, &id, "Successful", Vec::new());
    info!(%cluster, %addon, %version, "add-on updated");
}

/// Scale-in / termination: after the instance shutdown delay, removes the nodes. Managed node
/// groups drain first (EKS's scale-in lifecycle hook); self-managed instances just go, taking
/// their pods with them.
pub async fn terminate(aws: Arc<Aws>, cluster: String, ng: String, nodes: Vec<String>, drain_first: bool) {
    let Some(timing) = aws.lock().clusters.get(&cluster).map(|c| c.timing) else {
        return;
    };
    if drain_first {
        let _ = drain(
            &aws,
            &cluster,
            &nodes,
            timing.eviction_timeout,
            timing.eviction_retry,
            true,
        )
        .await;
    }
    sleep(timing.node_replacement).await;
    remove_nodes(&aws, &cluster, &ng, &nodes);
}
