//! Node lifecycle: the kubelet's node status (Ready and pressure conditions, capacity) and the
//! node lifecycle controller's taints (`not-ready`, `unschedulable`) and NoExecute taint eviction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Pod, PodCondition, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{record_event, update_if_changed, Ctx, Next};
use crate::api::{self, DeleteOptions};
use crate::object::Object;
use crate::resources::Kind;
use crate::store::Store;

/// Taint key of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint key of a node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint key of a cordoned node (`spec.unschedulable`).
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

const NOT_READY_MESSAGE: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

/// `t + d`, saturating at the end of time.
pub(crate) fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// `t + secs` seconds (negative allowed), saturating.
pub(crate) fn plus_secs(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(secs))
        .unwrap_or(if secs < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

/// Whether the node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    ready_condition(node).is_some_and(|c| c.status == "True")
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// When the node last became Ready (its Ready condition's transition time), if it is Ready.
pub(crate) fn node_ready_since(node: &Node) -> Option<Timestamp> {
    let c = ready_condition(node)?;
    (c.status == "True").then(|| {
        c.last_transition_time
            .as_ref()
            .or(node.metadata.creation_timestamp.as_ref())
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
    })
}

/// One toleration against one taint, as `Toleration.ToleratesTaint` decides.
pub fn toleration_tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of the tolerations tolerates the taint.
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| toleration_tolerates(t, taint))
}

/// When the pod was bound to its node: the PodScheduled condition's transition time, else its
/// creation time.
pub(crate) fn bound_at(pod: &Pod) -> Timestamp {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// Sets a pod condition as `podutil.UpdatePodCondition` does: a new transition time only when
/// the status changes. Returns whether anything changed.
pub(crate) fn update_pod_condition(
    conds: &mut Vec<PodCondition>,
    mut cond: PodCondition,
    now: Timestamp,
) -> bool {
    cond.last_transition_time = Some(Time(now));
    match conds.iter_mut().find(|c| c.type_ == cond.type_) {
        None => {
            conds.push(cond);
            true
        }
        Some(old) => {
            if old.status == cond.status {
                cond.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != cond;
            *old = cond;
            changed
        }
    }
}

/// A node condition the kubelet reports.
fn node_condition(type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stable fake private address for a node without one.
fn node_ip(name: &str) -> String {
    let h = fnv(name);
    format!("192.168.{}.{}", (h >> 8) % 256, 1 + (h % 254))
}

/// The node's InternalIP (or a stable fake one when it reports none).
pub(crate) fn node_internal_ip(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .unwrap_or_else(|| node_ip(node.metadata.name.as_deref().unwrap_or("")))
}

/// What the kubelet reports about itself when the node object has nothing yet.
fn fill_kubelet_status(name: &str, status: &mut NodeStatus, version: &str) {
    if status.capacity.is_none() {
        let cap: BTreeMap<String, Quantity> = [
            ("cpu", "2"),
            ("ephemeral-storage", "20959212Ki"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("memory", "8039692Ki"),
            ("pods", "110"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
        status.capacity = Some(cap);
    }
    if status.allocatable.is_none() {
        status.allocatable = status.capacity.clone();
    }
    if status.addresses.is_none() {
        status.addresses = Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip(name),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]);
    }
    if status.node_info.is_none() {
        let id = format!("{:016x}{:016x}", fnv(name), fnv(&format!("{name}/machine")));
        status.node_info = Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: id.clone(),
            container_runtime_version: "containerd://1.7.27".into(),
            kernel_version: "6.1.134-152.225.amzn2023.x86_64".into(),
            kube_proxy_version: String::new(),
            kubelet_version: format!("v{version}.0"),
            machine_id: id.clone(),
            operating_system: "linux".into(),
            os_image: "Amazon Linux 2023.7.20250512".into(),
            system_uuid: id,
            swap: None,
        });
    }
}

/// Brings the node's Ready condition to `ready`, adding the pressure conditions a kubelet
/// reports; returns whether Ready changed status.
fn set_conditions(status: &mut NodeStatus, ready: bool, now: Timestamp) -> bool {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    for (ty, reason, msg) in [
        (
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ] {
        if !conds.iter().any(|c| c.type_ == ty) {
            let at = conds
                .iter()
                .position(|c| c.type_ == "Ready")
                .unwrap_or(conds.len());
            conds.insert(at, node_condition(ty, "False", reason, msg, now));
        }
    }
    let (st, reason, msg) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        ("False", "KubeletNotReady", NOT_READY_MESSAGE)
    };
    match conds.iter_mut().find(|c| c.type_ == "Ready") {
        None => {
            conds.push(node_condition("Ready", st, reason, msg, now));
            true
        }
        Some(c) => {
            let flipped = c.status != st;
            if flipped || c.reason.as_deref() != Some(reason) || c.message.as_deref() != Some(msg) {
                c.status = st.into();
                c.reason = Some(reason.into());
                c.message = Some(msg.into());
                c.last_heartbeat_time = Some(Time(now));
                if flipped {
                    c.last_transition_time = Some(Time(now));
                }
            }
            flipped
        }
    }
}

/// Adds or removes the controller-managed taints; returns whether the unschedulable taint changed.
fn set_taints(node: &mut Node, ready: bool, now: Timestamp) -> Option<bool> {
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let spec = node.spec.get_or_insert_with(Default::default);
    let mut taints = spec.taints.take().unwrap_or_default();
    let had_cordon = taints
        .iter()
        .any(|t| t.key == TAINT_UNSCHEDULABLE && t.effect == "NoSchedule");
    taints.retain(|t| {
        let managed = (ready && (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE))
            || (t.key == TAINT_UNSCHEDULABLE && t.effect == "NoSchedule" && !unschedulable);
        !managed
    });
    let mut want: Vec<(&str, &str)> = Vec::new();
    if !ready {
        want.push((TAINT_NOT_READY, "NoSchedule"));
        want.push((TAINT_NOT_READY, "NoExecute"));
    }
    if unschedulable {
        want.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    for (key, effect) in want {
        if !taints.iter().any(|t| t.key == key && t.effect == effect) {
            taints.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                // Spec times are whole seconds so that they survive a client's round trip.
                time_added: (effect == "NoExecute").then(|| api::time(now)),
            });
        }
    }
    spec.taints = (!taints.is_empty()).then_some(taints);
    (had_cordon != unschedulable).then_some(unschedulable)
}

/// One pass of the node lifecycle controller and the kubelets' node status.
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    let mut next = Next::default();
    let b = ctx.behaviour;
    let nodes: Vec<Arc<Object>> = store.list(Kind::Node, None).map(|e| e.obj.clone()).collect();
    let mut no_execute = false;
    for obj in &nodes {
        let Object::Node(node) = obj.as_ref() else {
            continue;
        };
        let name = node.metadata.name.clone().unwrap_or_default();
        let created = node.metadata.creation_timestamp.as_ref().map_or(ctx.now, |t| t.0);
        let ready_at = plus(created, b.node_ready_delay);
        let forced = b.not_ready_nodes.contains(&name);
        let ready = !forced && ctx.now >= ready_at;
        if !forced && !ready {
            next.at(ready_at);
        }
        let mut want = node.clone();
        let first = ready_condition(node).is_none();
        let status = want.status.get_or_insert_with(Default::default);
        fill_kubelet_status(&name, status, ctx.version);
        let flipped = set_conditions(status, ready, ctx.now);
        let cordon = set_taints(&mut want, ready, ctx.now);
        no_execute |= want
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.effect == "NoExecute"));
        if !update_if_changed(store, Object::Node(want)) {
            continue;
        }
        let Some(after) = store.get_obj(Kind::Node, "", &name) else {
            continue;
        };
        if first {
            let msg = format!("Node {name} event: Registered Node {name} in Controller");
            record_event(
                store,
                ctx.now,
                &after,
                "Normal",
                "RegisteredNode",
                &msg,
                "node-controller",
            );
        }
        if flipped && ready {
            let msg = format!("Node {name} status is now: NodeReady");
            record_event(store, ctx.now, &after, "Normal", "NodeReady", &msg, "kubelet");
        } else if flipped && !first {
            let msg = format!("Node {name} status is now: NodeNotReady");
            record_event(
                store,
                ctx.now,
                &after,
                "Normal",
                "NodeNotReady",
                &msg,
                "node-controller",
            );
        }
        if let Some(cordoned) = cordon {
            let what = if cordoned {
                "NodeNotSchedulable"
            } else {
                "NodeSchedulable"
            };
            let msg = format!("Node {name} status is now: {what}");
            record_event(store, ctx.now, &after, "Normal", what, &msg, "kubelet");
        }
    }
    if no_execute {
        taint_eviction(store, ctx, &mut next);
    }
    next
}

/// The taint eviction controller: deletes pods that do not tolerate a NoExecute taint of their
/// node, at once or when their `tolerationSeconds` run out.
fn taint_eviction(store: &mut Store, ctx: &Ctx, next: &mut Next) {
    let mut tainted: HashMap<String, Vec<Taint>> = HashMap::new();
    for e in store.list(Kind::Node, None) {
        if let Object::Node(n) = e.obj.as_ref() {
            let taints: Vec<Taint> = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .map(|t| t.iter().filter(|t| t.effect == "NoExecute").cloned().collect())
                .unwrap_or_default();
            if !taints.is_empty() {
                tainted.insert(n.metadata.name.clone().unwrap_or_default(), taints);
            }
        }
    }
    let mut doomed = Vec::new();
    for e in store.list(Kind::Pod, None) {
        let Object::Pod(pod) = e.obj.as_ref() else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(taints) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| tainted.get(n))
        else {
            continue;
        };
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        // GetMatchingTolerations: the first toleration of each taint, or none tolerates it.
        let mut used = Vec::new();
        let mut all = true;
        for taint in taints {
            match tolerations.iter().find(|t| toleration_tolerates(t, taint)) {
                Some(t) => used.push(t),
                None => all = false,
            }
        }
        let when = if !all {
            Some(ctx.now)
        } else {
            // getMinTolerationTime: unset seconds tolerate forever; <= 0 means now.
            let min = used.iter().filter_map(|t| t.toleration_seconds).min();
            min.map(|secs| {
                let since = taints
                    .iter()
                    .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
                    .min()
                    .unwrap_or(ctx.now);
                plus_secs(since.max(bound_at(pod)), secs.max(0))
            })
        };
        match when {
            Some(t) if t <= ctx.now => doomed.push(e.obj.clone()),
            Some(t) => next.at(t),
            None => {}
        }
    }
    for obj in doomed {
        let Object::Pod(mut pod) = (*obj).clone() else {
            continue;
        };
        let (ns, name) = (obj.namespace().to_string(), obj.name().to_string());
        let status = pod.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        update_pod_condition(
            conds,
            PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByTaintManager".into()),
                message: Some("Taint manager: deleting due to NoExecute taint".into()),
                ..Default::default()
            },
            ctx.now,
        );
        update_if_changed(store, Object::Pod(pod));
        let msg = format!("Marking for deletion Pod {ns}/{name}");
        record_event(
            store,
            ctx.now,
            &obj,
            "Normal",
            "TaintManagerEviction",
            &msg,
            "taint-eviction-controller",
        );
        // The pod may be gone already; nothing else to do then.
        let _ = api::delete(store, ctx.now, Kind::Pod, &ns, &name, &DeleteOptions::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::Behaviour;
    use k8s_openapi::api::core::v1::{Container, NodeSpec, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn store() -> Store {
        Store::new(1000, tokio::sync::broadcast::channel(16).0)
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn add_node(store: &mut Store, name: &str, at: Timestamp) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            ..Default::default()
        };
        crate::controllers::create(store, at, Object::Node(node));
    }

    fn node(store: &Store, name: &str) -> Node {
        match store.get_obj(Kind::Node, "", name).as_deref() {
            Some(Object::Node(n)) => n.clone(),
            _ => panic!("no node {name}"),
        }
    }

    fn taint_keys(n: &Node) -> Vec<String> {
        n.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|t| t.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect())
            .unwrap_or_default()
    }

    fn run(store: &mut Store, b: &Behaviour, now: Timestamp) -> Next {
        reconcile(
            store,
            &Ctx {
                now,
                behaviour: b,
                version: "1.33",
            },
        )
    }

    #[test]
    fn new_node_is_not_ready_then_ready() {
        let mut s = store();
        let b = Behaviour::default();
        add_node(&mut s, "n1", t(0));
        let next = run(&mut s, &b, t(0));
        let n = node(&s, "n1");
        assert!(!node_ready(&n));
        assert_eq!(
            taint_keys(&n),
            vec![
                format!("{TAINT_NOT_READY}:NoSchedule"),
                format!("{TAINT_NOT_READY}:NoExecute")
            ]
        );
        assert_eq!(next.0, Some(t(1)));
        assert!(n
            .status
            .as_ref()
            .unwrap()
            .allocatable
            .as_ref()
            .unwrap()
            .contains_key("pods"));
        let rv = s.rv();
        run(&mut s, &b, t(0));
        assert_eq!(s.rv(), rv, "an idle pass writes nothing");
        run(&mut s, &b, t(1));
        let n = node(&s, "n1");
        assert!(node_ready(&n));
        assert!(taint_keys(&n).is_empty());
        let ready = ready_condition(&n).unwrap();
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        let rv = s.rv();
        run(&mut s, &b, t(50));
        assert_eq!(s.rv(), rv, "heartbeats do not move every pass");
    }

    #[test]
    fn forced_not_ready_and_cordon() {
        let mut s = store();
        let b = Behaviour {
            not_ready_nodes: vec!["bad".into()],
            ..Default::default()
        };
        add_node(&mut s, "bad", t(0));
        add_node(&mut s, "good", t(0));
        run(&mut s, &b, t(10));
        assert!(!node_ready(&node(&s, "bad")));
        assert_eq!(
            ready_condition(&node(&s, "bad")).unwrap().reason.as_deref(),
            Some("KubeletNotReady")
        );
        assert!(node_ready(&node(&s, "good")));
        let mut n = node(&s, "good");
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        s.replace(Object::Node(n));
        run(&mut s, &b, t(11));
        assert_eq!(
            taint_keys(&node(&s, "good")),
            vec![format!("{TAINT_UNSCHEDULABLE}:NoSchedule")]
        );
        let mut n = node(&s, "good");
        n.spec.as_mut().unwrap().unschedulable = None;
        s.replace(Object::Node(n));
        run(&mut s, &b, t(12));
        assert!(taint_keys(&node(&s, "good")).is_empty());
    }

    #[test]
    fn no_execute_eviction_respects_toleration_seconds() {
        let mut s = store();
        let b = Behaviour {
            not_ready_nodes: vec!["bad".into()],
            ..Default::default()
        };
        add_node(&mut s, "bad", t(0));
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("bad".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        crate::controllers::create(&mut s, t(0), Object::Pod(pod));
        let next = run(&mut s, &b, t(0));
        // Default tolerations: 300 s for not-ready.
        assert_eq!(next.0, Some(t(300)));
        run(&mut s, &b, t(299));
        let p = s.get_obj(Kind::Pod, "shop", "p").unwrap();
        assert!(p.meta().deletion_timestamp.is_none());
        run(&mut s, &b, t(300));
        let p = s.get_obj(Kind::Pod, "shop", "p").unwrap();
        assert!(
            p.meta().deletion_timestamp.is_some(),
            "evicted after tolerationSeconds"
        );
    }
}
