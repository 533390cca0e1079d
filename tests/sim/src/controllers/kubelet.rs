//! The kubelets: each bound pod on a Ready node is acknowledged (ContainerCreating), started after
//! `pod_start_delay`, made Ready after its readiness delay, and on deletion stopped and removed
//! after `min(termination, grace period)`. Pods on a node that is not Ready are marked not ready
//! (the node lifecycle controller's `MarkPodsNotReady`) and make no progress.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::nodelifecycle::{
    bound_at, node_internal_ip, node_ready_since, plus, plus_secs, update_pod_condition,
};
use super::{record_event, update_if_changed, Ctx, Next};
use crate::object::Object;
use crate::resources::Kind;
use crate::store::Store;

/// The conditions the kubelet owns, in the order it writes them.
const KUBELET_CONDITIONS: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
];

/// Whether the pod's Ready condition is True (`podutil.IsPodReady`).
pub fn pod_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

fn condition<'a>(pod: &'a Pod, ty: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
}

fn cond_status<'a>(pod: &'a Pod, ty: &str) -> Option<&'a str> {
    condition(pod, ty).map(|c| c.status.as_str())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn fnv(s: &str, seed: u64) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// 64 stable hex digits derived from `s` (container and image ids).
fn hex64(s: &str) -> String {
    (0..4u64)
        .map(|i| format!("{:016x}", fnv(s, i.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
        .collect()
}

/// A stable fake pod IP.
fn pod_ip(pod: &Pod) -> String {
    let key = pod.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        )
    });
    let h = fnv(&key, 0);
    format!("10.{}.{}.{}", (h >> 16) % 256, (h >> 8) % 256, 1 + h % 254)
}

fn image_id(image: &str) -> String {
    let repo = match image.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => image,
    };
    format!("{repo}@sha256:{}", hex64(image))
}

/// The `namespace/deployment` owning the pod through its ReplicaSet, if any.
fn deployment_of(
    store: &Store,
    pod: &Pod,
    cache: &mut HashMap<(String, String), Option<String>>,
) -> Option<String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let rs = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == "ReplicaSet")?;
    let key = (ns, rs.name.clone());
    if let Some(hit) = cache.get(&key) {
        return hit.clone();
    }
    let from_rs = store.get_obj(Kind::ReplicaSet, &key.0, &key.1).and_then(|o| {
        o.meta()
            .owner_references
            .as_ref()?
            .iter()
            .find(|r| r.controller == Some(true) && r.kind == "Deployment")
            .map(|r| r.name.clone())
    });
    // Without the ReplicaSet, its name less the template hash names the Deployment.
    let dep = from_rs.or_else(|| {
        let hash = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"));
        match hash {
            Some(h) => key.1.strip_suffix(&format!("-{h}")).map(str::to_string),
            None => None,
        }
    });
    cache.insert(key, dep.clone());
    dep
}

/// What the kubelet knows of a node.
struct NodeView {
    ready_since: Option<Timestamp>,
    ip: String,
}

/// The target state of a live pod on a Ready node.
struct Want {
    ack: Timestamp,
    running: bool,
    started_at: Timestamp,
    containers_ready: bool,
    /// Reason and message of a Ready condition that is False.
    unready: Option<(&'static str, String)>,
}

fn unready_names(pod: &Pod) -> String {
    let mut names: Vec<&str> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    names.sort_unstable();
    format!("containers with unready status: [{}]", names.join(" "))
}

/// The readiness gates' verdict: `None` when all are True, else the kubelet's message.
fn gates_unready(pod: &Pod) -> Option<String> {
    let gates = pod.spec.as_ref()?.readiness_gates.as_ref()?;
    let msgs: Vec<String> = gates
        .iter()
        .filter_map(|g| match condition(pod, &g.condition_type) {
            None => Some(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                g.condition_type
            )),
            Some(c) if c.status != "True" => Some(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                g.condition_type, c.status
            )),
            Some(_) => None,
        })
        .collect();
    (!msgs.is_empty()).then(|| msgs.join(", "))
}

fn running_started_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| {
            c.state
                .as_ref()?
                .running
                .as_ref()?
                .started_at
                .as_ref()
                .map(|t| t.0)
        })
}

/// Whether the stored status already says what `want` says (a cheap check before building it).
fn status_matches(pod: &Pod, want: &Want) -> bool {
    let Some(st) = pod.status.as_ref() else {
        return false;
    };
    let mut found: [Option<&PodCondition>; 4] = [None; 4];
    for c in st.conditions.iter().flatten() {
        if let Some(i) = KUBELET_CONDITIONS.iter().position(|t| *t == c.type_) {
            found[i] = Some(c);
        }
    }
    let is = |i: usize, b: bool| found[i].is_some_and(|c| c.status == if b { "True" } else { "False" });
    let n = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let cs = st.container_statuses.as_deref().unwrap_or(&[]);
    st.phase.as_deref() == Some(if want.running { "Running" } else { "Pending" })
        && st.start_time.is_some()
        && st.host_ip.is_some()
        && st.pod_ip.is_some() == want.running
        && is(0, want.running)
        && found[1].is_some()
        && is(2, want.unready.is_none())
        && found[2].and_then(|c| c.reason.as_deref()) == want.unready.as_ref().map(|u| u.0)
        && is(3, want.containers_ready)
        && cs.len() == n
        && cs.iter().all(|c| {
            c.ready == want.containers_ready
                && c.state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some() == want.running)
        })
}

fn pod_condition(ty: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: ty.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok).then(|| reason.map(str::to_string)).flatten(),
        message: (!ok).then_some(message).flatten(),
        ..Default::default()
    }
}

/// Puts the kubelet's conditions first, in its order, then PodScheduled, then the rest as they were.
fn order_conditions(conds: &mut [PodCondition]) {
    let rank = |c: &PodCondition| {
        KUBELET_CONDITIONS
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(KUBELET_CONDITIONS.len() + usize::from(c.type_ != "PodScheduled"))
    };
    conds.sort_by_key(rank);
}

/// The full status the kubelet reports for a live pod on a Ready node.
fn build_status(pod: &Pod, node: &NodeView, want: &Want, now: Timestamp) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut st = pod.status.clone().unwrap_or_default();
    st.phase = Some(if want.running { "Running" } else { "Pending" }.into());
    st.start_time = Some(Time(want.ack));
    st.host_ip = Some(node.ip.clone());
    st.host_ips = Some(vec![HostIP { ip: node.ip.clone() }]);
    if want.running {
        let ip = if spec.host_network == Some(true) {
            node.ip.clone()
        } else {
            pod_ip(pod)
        };
        st.pod_ip = Some(ip.clone());
        st.pod_ips = Some(vec![PodIP { ip }]);
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let has_init = spec.init_containers.as_ref().is_some_and(|i| !i.is_empty());
    let mut statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let state = if want.running {
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(want.started_at)),
                    }),
                    ..Default::default()
                }
            } else {
                let reason = if has_init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                };
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: None,
                    }),
                    ..Default::default()
                }
            };
            ContainerStatus {
                name: c.name.clone(),
                image_id: if want.running {
                    image_id(&image)
                } else {
                    String::new()
                },
                container_id: want
                    .running
                    .then(|| format!("containerd://{}", hex64(&format!("{uid}/{}", c.name)))),
                image,
                ready: want.containers_ready,
                restart_count: 0,
                started: Some(want.running),
                state: Some(state),
                ..Default::default()
            }
        })
        .collect();
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    st.container_statuses = Some(statuses);
    if has_init {
        let inits = spec.init_containers.iter().flatten().map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let state = if want.running {
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 0,
                        reason: Some("Completed".into()),
                        started_at: Some(Time(want.ack)),
                        finished_at: Some(Time(want.started_at)),
                        container_id: Some(format!("containerd://{}", hex64(&format!("{uid}/{}", c.name)))),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("PodInitializing".into()),
                        message: None,
                    }),
                    ..Default::default()
                }
            };
            ContainerStatus {
                name: c.name.clone(),
                image_id: if want.running {
                    image_id(&image)
                } else {
                    String::new()
                },
                container_id: want
                    .running
                    .then(|| format!("containerd://{}", hex64(&format!("{uid}/{}", c.name)))),
                image,
                ready: want.running,
                restart_count: 0,
                started: Some(false),
                state: Some(state),
                ..Default::default()
            }
        });
        st.init_container_statuses = Some(inits.collect());
    }
    let mut conds = st.conditions.take().unwrap_or_default();
    let unready_msg = unready_names(pod);
    let initialized = want.running || !has_init;
    let incomplete = || {
        let names: Vec<&str> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        format!("containers with incomplete status: [{}]", names.join(" "))
    };
    let ready = want.unready.is_none();
    for c in [
        pod_condition("PodReadyToStartContainers", want.running, None, None),
        pod_condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            Some(incomplete()),
        ),
        pod_condition(
            "Ready",
            ready,
            want.unready.as_ref().map(|u| u.0),
            want.unready.as_ref().map(|u| u.1.clone()),
        ),
        pod_condition(
            "ContainersReady",
            want.containers_ready,
            Some("ContainersNotReady"),
            Some(unready_msg),
        ),
    ] {
        update_pod_condition(&mut conds, c, now);
    }
    // The kubelet also reports PodScheduled (pods created bound never passed the scheduler).
    let scheduled = pod_condition("PodScheduled", true, None, None);
    update_pod_condition(&mut conds, scheduled, now);
    order_conditions(&mut conds);
    st.conditions = Some(conds);
    st
}

/// Events of containers starting, as the kubelet records them.
fn record_start(store: &mut Store, now: Timestamp, obj: &Object, pod: &Pod) {
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let image = c.image.as_deref().unwrap_or("");
        record_event(
            store,
            now,
            obj,
            "Normal",
            "Pulled",
            &format!("Container image \"{image}\" already present on machine"),
            "kubelet",
        );
        record_event(
            store,
            now,
            obj,
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
            "kubelet",
        );
        record_event(
            store,
            now,
            obj,
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
            "kubelet",
        );
    }
}

/// `MarkPodsNotReady`: a pod on a node that is not Ready loses its Ready condition.
fn mark_not_ready(store: &mut Store, now: Timestamp, pod: &Pod) {
    let Some(ready) = condition(pod, "Ready").filter(|c| c.status == "True") else {
        return;
    };
    let mut cond = ready.clone();
    cond.status = "False".into();
    let mut p = pod.clone();
    let status = p.status.get_or_insert_with(Default::default);
    update_pod_condition(status.conditions.get_or_insert_with(Vec::new), cond, now);
    if update_if_changed(store, Object::Pod(p)) {
        let (ns, name) = (
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or(""),
        );
        if let Some(after) = store.get_obj(Kind::Pod, ns, name) {
            record_event(
                store,
                now,
                &after,
                "Warning",
                "NodeNotReady",
                "Node is not ready",
                "node-controller",
            );
        }
    }
}

/// A terminating pod on a Ready node: not ready at once, gone when its containers have exited.
fn terminate(
    store: &mut Store,
    ctx: &Ctx,
    pod: &Pod,
    killing: &mut Option<HashSet<String>>,
    next: &mut Next,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let deadline = pod.metadata.deletion_timestamp.as_ref().map_or(ctx.now, |t| t.0);
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0);
    let began = plus_secs(deadline, -grace);
    let exit = ctx
        .behaviour
        .termination
        .min(Duration::from_secs(grace.unsigned_abs()));
    let terminal = matches!(phase(pod), "Succeeded" | "Failed");
    let gone_at = if terminal { began } else { plus(began, exit) };
    if ctx.now >= gone_at {
        if pod.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()) {
            store.remove(Kind::Pod, &ns, &name);
        }
        return;
    }
    next.at(gone_at);
    let cs = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let running: Vec<String> = cs
        .iter()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .map(|c| c.name.clone())
        .collect();
    let stale = cond_status(pod, "Ready") == Some("True")
        || cond_status(pod, "ContainersReady") == Some("True")
        || cs.iter().any(|c| c.ready);
    if stale {
        let mut p = pod.clone();
        let msg = unready_names(pod);
        let status = p.status.get_or_insert_with(Default::default);
        for c in status.container_statuses.iter_mut().flatten() {
            c.ready = false;
        }
        let conds = status.conditions.get_or_insert_with(Vec::new);
        for ty in ["Ready", "ContainersReady"] {
            if conds.iter().any(|c| c.type_ == ty) {
                let c = pod_condition(ty, false, Some("ContainersNotReady"), Some(msg.clone()));
                update_pod_condition(conds, c, ctx.now);
            }
        }
        update_if_changed(store, Object::Pod(p));
    }
    if running.is_empty() {
        return;
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let seen = killing.get_or_insert_with(|| {
        store
            .list(Kind::Event, None)
            .filter_map(|e| match e.obj.as_ref() {
                Object::Event(ev) if ev.reason.as_deref() == Some("Killing") => {
                    ev.involved_object.uid.clone()
                }
                _ => None,
            })
            .collect()
    });
    if seen.insert(uid) {
        if let Some(obj) = store.get_obj(Kind::Pod, &ns, &name) {
            for c in running {
                record_event(
                    store,
                    ctx.now,
                    &obj,
                    "Normal",
                    "Killing",
                    &format!("Stopping container {c}"),
                    "kubelet",
                );
            }
        }
    }
}

/// One pass of every node's kubelet.
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    let mut next = Next::default();
    let b = ctx.behaviour;
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut nodes: Vec<NodeView> = Vec::new();
    for e in store.list(Kind::Node, None) {
        if let Object::Node(n) = e.obj.as_ref() {
            index.insert(n.metadata.name.clone().unwrap_or_default(), nodes.len());
            nodes.push(NodeView {
                ready_since: node_ready_since(n),
                ip: node_internal_ip(n),
            });
        }
    }
    let pods: Vec<(Arc<Object>, usize)> = store
        .list(Kind::Pod, None)
        .filter_map(|e| match e.obj.as_ref() {
            Object::Pod(p) => {
                let node = p.spec.as_ref()?.node_name.as_deref()?;
                index.get(node).map(|&i| (e.obj.clone(), i))
            }
            _ => None,
        })
        .collect();
    let per_deployment = !b.never_ready.is_empty() || !b.readiness_overrides.is_empty();
    let mut deployments = HashMap::new();
    let mut killing = None;
    for (obj, i) in pods {
        let Object::Pod(pod) = obj.as_ref() else { continue };
        let node = &nodes[i];
        let Some(ready_since) = node.ready_since else {
            mark_not_ready(store, ctx.now, pod);
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            terminate(store, ctx, pod, &mut killing, &mut next);
            continue;
        }
        if matches!(phase(pod), "Succeeded" | "Failed") {
            continue;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let ack = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(|| bound_at(pod).max(ready_since), |t| t.0);
        let run_at = plus(ack, b.pod_start_delay);
        let running = phase(pod) == "Running" || ctx.now >= run_at;
        if !running {
            next.at(run_at);
        }
        let started_at = running_started_at(pod).unwrap_or(run_at);
        let dep = if per_deployment {
            deployment_of(store, pod, &mut deployments)
        } else {
            None
        };
        let key = dep.map(|d| (ns.to_string(), d));
        let never = key.as_ref().is_some_and(|k| b.never_ready.contains(k));
        let delay = key
            .as_ref()
            .and_then(|k| b.readiness_overrides.get(k))
            .copied()
            .unwrap_or(b.readiness_delay);
        let ready_at = plus(started_at, delay);
        // The never-ready fault keeps pods from *becoming* Ready; one already Ready stays so.
        let containers_ready = running && ((!never && ctx.now >= ready_at) || (never && pod_ready(pod)));
        if running && !never && !containers_ready {
            next.at(ready_at);
        }
        let unready = if !containers_ready {
            Some(("ContainersNotReady", unready_names(pod)))
        } else {
            gates_unready(pod).map(|m| ("ReadinessGatesNotReady", m))
        };
        let want = Want {
            ack,
            running,
            started_at,
            containers_ready,
            unready,
        };
        if status_matches(pod, &want) {
            continue;
        }
        let was_running = phase(pod) == "Running";
        let mut p = pod.clone();
        p.status = Some(build_status(pod, node, &want, ctx.now));
        if update_if_changed(store, Object::Pod(p)) && want.running && !was_running {
            let name = pod.metadata.name.as_deref().unwrap_or("");
            if let Some(after) = store.get_obj(Kind::Pod, ns, name) {
                if let Object::Pod(ap) = after.as_ref() {
                    record_start(store, ctx.now, &after, ap);
                }
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::{nodelifecycle, Behaviour};
    use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn store() -> Store {
        Store::new(1000, tokio::sync::broadcast::channel(16).0)
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + ms).unwrap()
    }

    /// A Ready node "n" (ready since t(0)) and a pod of Deployment `web` bound to it at t(0).
    fn setup(s: &mut Store, b: &Behaviour) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            ..Default::default()
        };
        crate::controllers::create(s, t(-5000), Object::Node(node));
        nodelifecycle::reconcile(
            s,
            &Ctx {
                now: t(0),
                behaviour: b,
                version: "1.33",
            },
        );
        let rs = k8s_openapi::api::apps::v1::ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("shop".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: "dep-uid".into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        crate::controllers::create(s, t(0), Object::ReplicaSet(rs));
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-abc-1".into()),
                namespace: Some("shop".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "web-abc".into(),
                    uid: "rs-uid".into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n".into()),
                containers: vec![Container {
                    name: "web".into(),
                    image: Some("nginx:1.27".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        crate::controllers::create(s, t(0), Object::Pod(pod));
    }

    fn pod(s: &Store) -> Option<Pod> {
        match s.get_obj(Kind::Pod, "shop", "web-abc-1").as_deref() {
            Some(Object::Pod(p)) => Some(p.clone()),
            _ => None,
        }
    }

    fn run(s: &mut Store, b: &Behaviour, now: Timestamp) -> Next {
        reconcile(
            s,
            &Ctx {
                now,
                behaviour: b,
                version: "1.33",
            },
        )
    }

    #[test]
    fn timeline_running_then_ready() {
        let mut s = store();
        let b = Behaviour::default();
        setup(&mut s, &b);
        let next = run(&mut s, &b, t(0));
        let p = pod(&s).unwrap();
        assert_eq!(phase(&p), "Pending");
        let cs = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(next.0, Some(t(100)));
        run(&mut s, &b, t(99));
        assert_eq!(phase(&pod(&s).unwrap()), "Pending");
        let next = run(&mut s, &b, t(100));
        let p = pod(&s).unwrap();
        assert_eq!(phase(&p), "Running");
        assert!(!pod_ready(&p));
        let st = p.status.as_ref().unwrap();
        assert!(st.pod_ip.is_some() && st.host_ip.is_some() && st.start_time.is_some());
        let types: Vec<&str> = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert!(cs.state.as_ref().unwrap().running.is_some());
        assert!(!cs.ready);
        assert_eq!(next.0, Some(t(400)));
        run(&mut s, &b, t(399));
        assert!(!pod_ready(&pod(&s).unwrap()));
        run(&mut s, &b, t(400));
        let p = pod(&s).unwrap();
        assert!(pod_ready(&p));
        assert!(p.status.unwrap().container_statuses.unwrap()[0].ready);
        let rv = s.rv();
        assert_eq!(run(&mut s, &b, t(5000)).0, None);
        assert_eq!(s.rv(), rv, "a settled pod is not rewritten");
    }

    #[test]
    fn readiness_override_and_never_ready() {
        let mut s = store();
        let mut b = Behaviour::default();
        b.readiness_overrides
            .insert(("shop".into(), "web".into()), Duration::from_secs(2));
        setup(&mut s, &b);
        run(&mut s, &b, t(0));
        assert_eq!(run(&mut s, &b, t(100)).0, Some(t(2100)));
        run(&mut s, &b, t(2000));
        assert!(!pod_ready(&pod(&s).unwrap()));
        run(&mut s, &b, t(2100));
        assert!(pod_ready(&pod(&s).unwrap()));

        let mut s = store();
        let b = Behaviour {
            never_ready: vec![("shop".into(), "web".into())],
            ..Default::default()
        };
        setup(&mut s, &b);
        run(&mut s, &b, t(0));
        run(&mut s, &b, t(100));
        assert_eq!(run(&mut s, &b, t(60_000)).0, None);
        let p = pod(&s).unwrap();
        assert_eq!(phase(&p), "Running");
        assert!(!pod_ready(&p));
        assert_eq!(
            condition(&p, "Ready").unwrap().message.as_deref(),
            Some("containers with unready status: [web]")
        );
    }

    #[test]
    fn termination_takes_min_of_termination_and_grace() {
        for (grace, expect_ms) in [(30, 500), (0, 0)] {
            let mut s = store();
            let b = Behaviour::default();
            setup(&mut s, &b);
            for ms in [0, 100, 400] {
                run(&mut s, &b, t(ms));
            }
            assert!(pod_ready(&pod(&s).unwrap()));
            // Deletion at t(1000) with the given grace: the deadline is 1000 ms + grace.
            let mut p = pod(&s).unwrap();
            p.metadata.deletion_timestamp = Some(Time(t(1000 + grace * 1000)));
            p.metadata.deletion_grace_period_seconds = Some(grace);
            s.replace(Object::Pod(p));
            if expect_ms > 0 {
                let next = run(&mut s, &b, t(1000));
                assert!(!pod_ready(&pod(&s).unwrap()), "not ready at once");
                let killing: Vec<String> = s
                    .list(Kind::Event, None)
                    .filter_map(|e| match e.obj.as_ref() {
                        Object::Event(ev) if ev.reason.as_deref() == Some("Killing") => ev.message.clone(),
                        _ => None,
                    })
                    .collect();
                assert_eq!(killing, vec!["Stopping container web".to_string()]);
                assert_eq!(next.0, Some(t(1000 + expect_ms)));
                let rv = s.rv();
                run(&mut s, &b, t(1000 + expect_ms - 1));
                assert_eq!(s.rv(), rv, "no rewrites while terminating");
                assert!(pod(&s).is_some());
            }
            run(&mut s, &b, t(1000 + expect_ms));
            assert!(pod(&s).is_none(), "removed after min(termination, grace)");
        }
    }

    #[test]
    fn not_ready_node_marks_pods_not_ready_and_stalls() {
        let mut s = store();
        let b = Behaviour::default();
        setup(&mut s, &b);
        for ms in [0, 100, 400] {
            run(&mut s, &b, t(ms));
        }
        assert!(pod_ready(&pod(&s).unwrap()));
        let sick = Behaviour {
            not_ready_nodes: vec!["n".into()],
            ..Default::default()
        };
        nodelifecycle::reconcile(
            &mut s,
            &Ctx {
                now: t(1000),
                behaviour: &sick,
                version: "1.33",
            },
        );
        run(&mut s, &sick, t(1000));
        assert!(!pod_ready(&pod(&s).unwrap()));
        let rv = s.rv();
        run(&mut s, &sick, t(2000));
        assert_eq!(s.rv(), rv);
        nodelifecycle::reconcile(
            &mut s,
            &Ctx {
                now: t(3000),
                behaviour: &b,
                version: "1.33",
            },
        );
        run(&mut s, &b, t(3000));
        assert!(pod_ready(&pod(&s).unwrap()), "ready again once the node is");
    }
}
