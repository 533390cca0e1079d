//! The kube-scheduler's default profile as far as the simulated workloads need it: the
//! NodeUnschedulable, TaintToleration, NodeAffinity and NodeResourcesFit filters, least-allocated
//! scoring with spreading of a controller's pods, binding, and the real `FailedScheduling` texts.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodCondition, PodSpec, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;

use super::nodelifecycle::{tolerates, update_pod_condition, TAINT_UNSCHEDULABLE};
use super::{record_event, update_if_changed, Ctx, Next};
use crate::object::Object;
use crate::resources::Kind;
use crate::store::Store;

/// The only scheduler simulated.
pub const SCHEDULER_NAME: &str = "default-scheduler";

const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
const REASON_CONFLICT: &str = "pod affinity terms conflict";
const REASON_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const REASON_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
const NO_NODES: &str = "no nodes available to schedule pods";
/// Requests assumed for scoring when a container sets none (`DefaultMilliCPURequest`).
const DEFAULT_MILLI_CPU: i64 = 100;
/// `DefaultMemoryRequest`: 200 MiB.
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Reads a Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1e3`, `2G`) as a number of units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '+' || c == '-') && i == 0)))
        .map_or(q.len(), |(i, _)| i);
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// A quantity in thousandths, rounded up as `Quantity.MilliValue` does.
pub fn milli(q: &Quantity) -> i64 {
    parse_quantity(&q.0).map_or(0, |v| (v * 1000.0).ceil() as i64)
}

/// A quantity in whole units, rounded up as `Quantity.Value` does.
pub fn units(q: &Quantity) -> i64 {
    parse_quantity(&q.0).map_or(0, |v| v.ceil() as i64)
}

/// What a pod asks of a node: CPU in millicores and memory in bytes, as requested, and with the
/// scheduler's defaults for containers that request nothing (for scoring).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Requested millicores.
    pub cpu: i64,
    /// Requested bytes.
    pub memory: i64,
    /// Millicores with 100m for containers that request none.
    pub nonzero_cpu: i64,
    /// Bytes with 200Mi for containers that request none.
    pub nonzero_memory: i64,
}

impl Requests {
    fn add(&mut self, o: Requests) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.nonzero_cpu += o.nonzero_cpu;
        self.nonzero_memory += o.nonzero_memory;
    }

    fn max(&mut self, o: Requests) {
        self.cpu = self.cpu.max(o.cpu);
        self.memory = self.memory.max(o.memory);
        self.nonzero_cpu = self.nonzero_cpu.max(o.nonzero_cpu);
        self.nonzero_memory = self.nonzero_memory.max(o.nonzero_memory);
    }

    fn of_container(c: &Container) -> Requests {
        let res = c.resources.as_ref();
        // A container with only limits is defaulted to request its limits.
        let get = |name: &str| {
            res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(name)))
                .or_else(|| res.and_then(|r| r.limits.as_ref().and_then(|m| m.get(name))))
        };
        let cpu = get("cpu").map(milli);
        let memory = get("memory").map(units);
        Requests {
            cpu: cpu.unwrap_or(0),
            memory: memory.unwrap_or(0),
            nonzero_cpu: cpu.unwrap_or(DEFAULT_MILLI_CPU),
            nonzero_memory: memory.unwrap_or(DEFAULT_MEMORY),
        }
    }

    /// A pod's effective requests: its containers and sidecars, or its largest init container
    /// (with the sidecars started before it) if larger, plus its overhead.
    pub fn of_pod(spec: &PodSpec) -> Requests {
        let mut total = Requests::default();
        for c in &spec.containers {
            total.add(Requests::of_container(c));
        }
        let mut sidecars = Requests::default();
        let mut init_max = Requests::default();
        for c in spec.init_containers.iter().flatten() {
            let r = Requests::of_container(c);
            if c.restart_policy.as_deref() == Some("Always") {
                sidecars.add(r);
                total.add(r);
            } else {
                let mut during = sidecars;
                during.add(r);
                init_max.max(during);
            }
        }
        total.max(init_max);
        if let Some(o) = &spec.overhead {
            let cpu = o.get("cpu").map_or(0, milli);
            let memory = o.get("memory").map_or(0, units);
            total.add(Requests {
                cpu,
                memory,
                nonzero_cpu: cpu,
                nonzero_memory: memory,
            });
        }
        total
    }
}

/// The scheduler's view of one node: what it offers and what its pods already take.
struct NodeInfo {
    obj: Arc<Object>,
    name: String,
    alloc_cpu: i64,
    alloc_memory: i64,
    alloc_pods: i64,
    requested: Requests,
    pods: i64,
    /// Non-terminating pods per controller uid, for spreading.
    owners: HashMap<String, u32>,
}

impl NodeInfo {
    fn node(&self) -> Option<&Node> {
        match self.obj.as_ref() {
            Object::Node(n) => Some(n),
            _ => None,
        }
    }

    fn assume(&mut self, pod: &Pod, req: Requests) {
        self.requested.add(req);
        self.pods += 1;
        if pod.metadata.deletion_timestamp.is_none() {
            if let Some(uid) = controller_uid(pod) {
                *self.owners.entry(uid.to_string()).or_default() += 1;
            }
        }
    }
}

/// Why a node was filtered out: its reasons, and whether preemption could not help.
struct Rejection {
    reasons: Vec<String>,
    unresolvable: bool,
}

fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether the default scheduler should place this pod.
fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec.scheduler_name.as_deref().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && pod.metadata.deletion_timestamp.is_none()
        && !terminal(pod)
}

/// Every node with the pods already assigned to it.
fn snapshot(store: &Store) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = store
        .list(Kind::Node, None)
        .filter_map(|e| {
            let Object::Node(n) = e.obj.as_ref() else {
                return None;
            };
            let alloc = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
            let get = |k: &str| alloc.and_then(|a| a.get(k));
            Some(NodeInfo {
                obj: e.obj.clone(),
                name: n.metadata.name.clone().unwrap_or_default(),
                alloc_cpu: get("cpu").map_or(0, milli),
                alloc_memory: get("memory").map_or(0, units),
                alloc_pods: get("pods").map_or(0, units),
                requested: Requests::default(),
                pods: 0,
                owners: HashMap::new(),
            })
        })
        .collect();
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    for e in store.list(Kind::Pod, None) {
        let Object::Pod(pod) = e.obj.as_ref() else {
            continue;
        };
        let Some(spec) = pod.spec.as_ref() else { continue };
        let Some(&i) = spec.node_name.as_ref().and_then(|n| index.get(n)) else {
            continue;
        };
        if terminal(pod) {
            continue;
        }
        nodes[i].assume(pod, Requests::of_pod(spec));
    }
    nodes
}

fn expr_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(|v| v.parse::<i64>().ok()), values) else {
                return false;
            };
            let Ok(bound) = bound.parse::<i64>() else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// One required node selector term: label expressions and `metadata.name` fields, ANDed; an
/// empty or invalid term matches nothing.
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    let name = node.metadata.name.as_deref().unwrap_or("");
    exprs
        .iter()
        .all(|r| expr_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && expr_matches(r, Some(name))
        })
}

/// The NodeAffinity filter (`nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)`): the node
/// selector and any required node affinity term match. The DaemonSet controller asks it too.
pub(crate) fn affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    if let Some(sel) = &spec.node_selector {
        let labels = node.metadata.labels.as_ref();
        if !sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
            return false;
        }
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
    {
        Some(req) => req.node_selector_terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

/// NodeAffinity's PreFilter: the node names that `metadata.name In` fields restrict the pod to,
/// when every term names some.
fn prefilter_node_names(spec: &PodSpec) -> Option<HashSet<String>> {
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    if terms.is_empty() {
        return None;
    }
    let mut names: HashSet<String> = HashSet::new();
    for t in terms {
        let mut term_names: Option<HashSet<String>> = None;
        for r in t.match_fields.iter().flatten() {
            if r.key == "metadata.name" && r.operator == "In" {
                let s: HashSet<String> = r.values.iter().flatten().cloned().collect();
                term_names = Some(match term_names {
                    None => s,
                    Some(prev) => prev.intersection(&s).cloned().collect(),
                });
            }
        }
        names.extend(term_names?);
    }
    Some(names)
}

/// Runs the filter plugins in the default profile's order; the first failing plugin decides.
fn filter(n: &NodeInfo, spec: &PodSpec, req: Requests) -> Result<(), Rejection> {
    let Some(node) = n.node() else {
        return Err(Rejection {
            reasons: vec!["node not found".into()],
            unresolvable: true,
        });
    };
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let unresolvable = |r: String| {
        Err(Rejection {
            reasons: vec![r],
            unresolvable: true,
        })
    };
    // NodeUnschedulable
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        let cordon = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerates(tolerations, &cordon) {
            return unresolvable(REASON_UNSCHEDULABLE.into());
        }
    }
    // TaintToleration
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    if let Some(t) = taints
        .iter()
        .find(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(tolerations, t))
    {
        return unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        ));
    }
    // NodeAffinity
    if !affinity_matches(spec, node) {
        return unresolvable(REASON_AFFINITY.into());
    }
    // NodeResourcesFit
    let mut reasons = Vec::new();
    let mut unresolvable = false;
    if n.pods + 1 > n.alloc_pods {
        reasons.push("Too many pods".to_string());
    }
    if req.cpu > 0 && req.cpu > n.alloc_cpu - n.requested.cpu {
        reasons.push("Insufficient cpu".to_string());
        unresolvable |= req.cpu > n.alloc_cpu;
    }
    if req.memory > 0 && req.memory > n.alloc_memory - n.requested.memory {
        reasons.push("Insufficient memory".to_string());
        unresolvable |= req.memory > n.alloc_memory;
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            reasons,
            unresolvable,
        })
    }
}

/// LeastAllocated over CPU and memory (0..=100), with the scheduler's non-zero requests.
fn least_allocated(n: &NodeInfo, req: Requests) -> i64 {
    let score = |alloc: i64, used: i64| {
        if alloc <= 0 || used > alloc {
            0
        } else {
            (alloc - used) * 100 / alloc
        }
    };
    (score(n.alloc_cpu, n.requested.nonzero_cpu + req.nonzero_cpu)
        + score(n.alloc_memory, n.requested.nonzero_memory + req.nonzero_memory))
        / 2
}

/// `"<count> <reason>"` entries, sorted as strings and joined, as `FitError.Error` writes them.
fn histogram(reasons: &BTreeMap<String, usize>) -> String {
    let mut v: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
    v.sort();
    v.join(", ")
}

/// Picks a node for the pod, or says why none fits in the scheduler's words.
fn place(nodes: &[NodeInfo], pod: &Pod, spec: &PodSpec, req: Requests) -> Result<usize, String> {
    let total = nodes.len();
    if total == 0 {
        return Err(NO_NODES.into());
    }
    let head = format!("0/{total} nodes are available:");
    let preempt = |resolvable: usize| {
        if spec.preemption_policy.as_deref() == Some("Never") {
            return "preemption: not eligible due to preemptionPolicy=Never.".to_string();
        }
        let mut h = BTreeMap::new();
        if resolvable > 0 {
            h.insert(REASON_NO_VICTIMS.to_string(), resolvable);
        }
        if total > resolvable {
            h.insert(REASON_NOT_HELPFUL.to_string(), total - resolvable);
        }
        format!("preemption: {head} {}.", histogram(&h))
    };
    let allowed = prefilter_node_names(spec);
    if allowed.as_ref().is_some_and(HashSet::is_empty) {
        return Err(format!("{head} {REASON_CONFLICT}. {}", preempt(0)));
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut resolvable = 0;
    let mut absent = 0;
    let owner = controller_uid(pod);
    let mut best: Option<(usize, (u32, Reverse<i64>))> = None;
    for (i, n) in nodes.iter().enumerate() {
        if allowed.as_ref().is_some_and(|a| !a.contains(&n.name)) {
            absent += 1;
            continue;
        }
        match filter(n, spec, req) {
            Ok(()) => {
                let spread = owner.and_then(|o| n.owners.get(o)).copied().unwrap_or(0);
                let key = (spread, Reverse(least_allocated(n, req)));
                // Nodes come in name order, so the first best wins ties by name.
                if best.as_ref().is_none_or(|(_, k)| key < *k) {
                    best = Some((i, key));
                }
            }
            Err(r) => {
                if !r.unresolvable {
                    resolvable += 1;
                }
                for reason in r.reasons {
                    *reasons.entry(reason).or_default() += 1;
                }
            }
        }
    }
    if let Some((i, _)) = best {
        return Ok(i);
    }
    if absent > 0 {
        *reasons
            .entry("node(s) didn't satisfy plugin(s) [NodeAffinity]".into())
            .or_default() += absent;
    }
    Err(format!("{head} {}. {}", histogram(&reasons), preempt(resolvable)))
}

/// The scheduling queue's order: higher priority first, then older pods.
fn queue_key(pod: &Pod) -> (Reverse<i32>, Option<Timestamp>, String, String) {
    (
        Reverse(pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)),
        pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn set_scheduled_condition(store: &mut Store, now: Timestamp, pod: &Pod, cond: PodCondition) -> bool {
    let mut p = pod.clone();
    let status = p.status.get_or_insert_with(Default::default);
    if !update_pod_condition(status.conditions.get_or_insert_with(Vec::new), cond, now) {
        return false;
    }
    update_if_changed(store, Object::Pod(p))
}

/// One scheduling pass: every pod waiting for a node gets one, or an Unschedulable condition.
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    let mut pending: Vec<Arc<Object>> = store
        .list(Kind::Pod, None)
        .filter(|e| matches!(e.obj.as_ref(), Object::Pod(p) if wants_scheduling(p)))
        .map(|e| e.obj.clone())
        .collect();
    if pending.is_empty() {
        return Next::default();
    }
    pending.sort_by_cached_key(|o| match o.as_ref() {
        Object::Pod(p) => queue_key(p),
        _ => (Reverse(0), None, String::new(), String::new()),
    });
    let mut nodes = snapshot(store);
    // Verdicts of pods that fit nowhere, per controller: a sibling with the same constraints
    // fits nowhere either, as binding only takes capacity away within a pass.
    let mut failed: HashMap<&str, (&PodSpec, Requests, String)> = HashMap::new();
    for obj in &pending {
        let Object::Pod(pod) = obj.as_ref() else { continue };
        let Some(spec) = pod.spec.as_ref() else { continue };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        if spec.scheduling_gates.as_ref().is_some_and(|g| !g.is_empty()) {
            let cond = PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("SchedulingGated".into()),
                message: Some("Scheduling is blocked due to non-empty scheduling gates".into()),
                ..Default::default()
            };
            set_scheduled_condition(store, ctx.now, pod, cond);
            continue;
        }
        let req = Requests::of_pod(spec);
        let owner = controller_uid(pod);
        let known = owner.and_then(|o| failed.get(o)).and_then(|(other, r, msg)| {
            (*r == req
                && other.tolerations == spec.tolerations
                && other.node_selector == spec.node_selector
                && other.affinity == spec.affinity
                && other.preemption_policy == spec.preemption_policy)
                .then(|| msg.clone())
        });
        let verdict = match known {
            Some(msg) => Err(msg),
            None => place(&nodes, pod, spec, req),
        };
        if let (Err(msg), Some(o)) = (&verdict, owner) {
            failed.entry(o).or_insert_with(|| (spec, req, msg.clone()));
        }
        match verdict {
            Ok(i) => {
                let node_name = nodes[i].name.clone();
                let mut p = pod.clone();
                if let Some(s) = p.spec.as_mut() {
                    s.node_name = Some(node_name.clone());
                }
                let status = p.status.get_or_insert_with(Default::default);
                status.nominated_node_name = None;
                let cond = PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    ..Default::default()
                };
                update_pod_condition(status.conditions.get_or_insert_with(Vec::new), cond, ctx.now);
                nodes[i].assume(&p, req);
                if update_if_changed(store, Object::Pod(p)) {
                    if let Some(after) = store.get_obj(Kind::Pod, ns, name) {
                        let msg = format!("Successfully assigned {ns}/{name} to {node_name}");
                        record_event(
                            store,
                            ctx.now,
                            &after,
                            "Normal",
                            "Scheduled",
                            &msg,
                            SCHEDULER_NAME,
                        );
                    }
                }
            }
            Err(msg) => {
                let cond = PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some(msg.clone()),
                    ..Default::default()
                };
                if set_scheduled_condition(store, ctx.now, pod, cond) {
                    if let Some(after) = store.get_obj(Kind::Pod, ns, name) {
                        record_event(
                            store,
                            ctx.now,
                            &after,
                            "Warning",
                            "FailedScheduling",
                            &msg,
                            SCHEDULER_NAME,
                        );
                    }
                }
            }
        }
    }
    Next::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::Behaviour;
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelector, NodeSpec, NodeStatus, ResourceRequirements, Toleration,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn store() -> Store {
        Store::new(1000, tokio::sync::broadcast::channel(16).0)
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    fn node(name: &str, pods: &str, taints: Vec<Taint>, unschedulable: bool) -> Object {
        let alloc: BTreeMap<String, Quantity> = [("cpu", "4"), ("memory", "16Gi"), ("pods", pods)]
            .into_iter()
            .map(|(k, v)| (k.into(), q(v)))
            .collect();
        Object::Node(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then_some(taints),
                unschedulable: unschedulable.then_some(true),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(alloc.clone()),
                capacity: Some(alloc),
                ..Default::default()
            }),
        })
    }

    fn pod(name: &str, cpu: Option<&str>, owner: Option<&str>) -> Object {
        let resources = cpu.map(|c| ResourceRequirements {
            requests: Some([("cpu".to_string(), q(c))].into_iter().collect()),
            ..Default::default()
        });
        let p = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                owner_references: owner.map(|o| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: o.into(),
                        uid: format!("uid-{o}"),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some("nginx:1.27".into()),
                    resources,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        Object::Pod(p)
    }

    fn add(s: &mut Store, o: Object) {
        crate::controllers::create(s, t(0), o);
    }

    fn get_pod(s: &Store, name: &str) -> Pod {
        match s.get_obj(Kind::Pod, "shop", name).as_deref() {
            Some(Object::Pod(p)) => p.clone(),
            _ => panic!("no pod {name}"),
        }
    }

    fn node_of(s: &Store, name: &str) -> Option<String> {
        get_pod(s, name).spec.and_then(|s| s.node_name)
    }

    fn scheduled(p: &Pod) -> PodCondition {
        p.status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .unwrap()
            .clone()
    }

    fn run(s: &mut Store, now: Timestamp) {
        let b = Behaviour::default();
        reconcile(
            s,
            &Ctx {
                now,
                behaviour: &b,
                version: "1.33",
            },
        );
    }

    fn events(s: &Store, reason: &str) -> Vec<String> {
        s.list(Kind::Event, None)
            .filter_map(|e| match e.obj.as_ref() {
                Object::Event(ev) if ev.reason.as_deref() == Some(reason) => ev.message.clone(),
                _ => None,
            })
            .collect()
    }

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(milli(&q("100m")), 100);
        assert_eq!(milli(&q("1.5")), 1500);
        assert_eq!(units(&q("128Mi")), 128 * 1024 * 1024);
        assert_eq!(units(&q("1e3")), 1000);
        assert_eq!(units(&q("2G")), 2_000_000_000);
        assert_eq!(parse_quantity("abc"), None);
    }

    #[test]
    fn binds_and_spreads_by_owner() {
        let mut s = store();
        add(&mut s, node("a", "110", vec![], false));
        add(&mut s, node("b", "110", vec![], false));
        add(&mut s, pod("web-1", Some("100m"), Some("rs")));
        add(&mut s, pod("web-2", Some("100m"), Some("rs")));
        run(&mut s, t(1));
        let (n1, n2) = (node_of(&s, "web-1").unwrap(), node_of(&s, "web-2").unwrap());
        assert_ne!(n1, n2, "pods of one ReplicaSet spread over nodes");
        assert_eq!(scheduled(&get_pod(&s, "web-1")).status, "True");
        assert!(events(&s, "Scheduled").contains(&format!("Successfully assigned shop/web-1 to {n1}")));
        let rv = s.rv();
        run(&mut s, t(2));
        assert_eq!(s.rv(), rv, "nothing to do, nothing written");
    }

    #[test]
    fn tainted_and_cordoned_nodes_get_no_new_pods() {
        let mut s = store();
        for n in ["a", "b"] {
            add(
                &mut s,
                node(n, "110", vec![taint("flotilla.io/migrating")], false),
            );
        }
        for n in ["c", "d", "e", "f"] {
            add(&mut s, node(n, "110", vec![taint(TAINT_UNSCHEDULABLE)], true));
        }
        add(&mut s, pod("web-1", None, None));
        run(&mut s, t(1));
        let p = get_pod(&s, "web-1");
        assert_eq!(p.spec.as_ref().unwrap().node_name, None);
        let c = scheduled(&p);
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
        let msg = "0/6 nodes are available: 2 node(s) had untolerated taint {flotilla.io/migrating: }, 4 node(s) were unschedulable. preemption: 0/6 nodes are available: 6 Preemption is not helpful for scheduling.";
        assert_eq!(c.message.as_deref(), Some(msg));
        assert_eq!(events(&s, "FailedScheduling"), vec![msg.to_string()]);
        let rv = s.rv();
        run(&mut s, t(5));
        assert_eq!(s.rv(), rv, "an unchanged verdict is not rewritten");
        // A tolerating pod fits on the tainted nodes.
        let mut tolerant = pod("agent", None, None);
        if let Object::Pod(p) = &mut tolerant {
            p.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]);
        }
        add(&mut s, tolerant);
        run(&mut s, t(6));
        assert!(node_of(&s, "agent").is_some());
    }

    #[test]
    fn capacity_limits_pods_per_node() {
        let mut s = store();
        add(&mut s, node("small", "30", vec![], false));
        for i in 0..31 {
            add(&mut s, pod(&format!("p-{i:02}"), None, None));
        }
        run(&mut s, t(1));
        let bound = (0..31)
            .filter(|i| node_of(&s, &format!("p-{i:02}")).is_some())
            .count();
        assert_eq!(bound, 30);
        let last = get_pod(&s, "p-30");
        assert_eq!(
            scheduled(&last).message.as_deref(),
            Some("0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
        );
    }

    #[test]
    fn cpu_requests_count_until_pods_are_gone() {
        let mut s = store();
        add(&mut s, node("a", "110", vec![], false));
        add(&mut s, pod("big-1", Some("3"), None));
        add(&mut s, pod("big-2", Some("3"), None));
        run(&mut s, t(1));
        assert!(node_of(&s, "big-1").is_some());
        assert!(node_of(&s, "big-2").is_none());
        assert!(scheduled(&get_pod(&s, "big-2"))
            .message
            .unwrap()
            .contains("1 Insufficient cpu"));
        // Terminating still counts.
        let mut p = get_pod(&s, "big-1");
        p.metadata.deletion_timestamp = Some(crate::api::time(t(30)));
        s.replace(Object::Pod(p));
        run(&mut s, t(2));
        assert!(node_of(&s, "big-2").is_none());
        s.remove(Kind::Pod, "shop", "big-1");
        run(&mut s, t(3));
        assert_eq!(node_of(&s, "big-2").as_deref(), Some("a"));
    }

    #[test]
    fn daemonset_pod_binds_to_its_node_by_match_fields() {
        let mut s = store();
        for n in ["a", "b", "c"] {
            add(&mut s, node(n, "110", vec![], false));
        }
        let mut ds = pod("agent-x", None, None);
        if let Object::Pod(p) = &mut ds {
            p.spec.as_mut().unwrap().affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_fields: Some(vec![NodeSelectorRequirement {
                                key: "metadata.name".into(),
                                operator: "In".into(),
                                values: Some(vec!["c".into()]),
                            }]),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        add(&mut s, ds);
        run(&mut s, t(1));
        assert_eq!(node_of(&s, "agent-x").as_deref(), Some("c"));
    }

    #[test]
    fn daemonset_pod_for_a_tainted_node_waits() {
        let mut s = store();
        for n in ["a", "b"] {
            add(&mut s, node(n, "110", vec![], false));
        }
        add(
            &mut s,
            node("c", "110", vec![taint("node.kubernetes.io/not-ready")], false),
        );
        let mut ds = pod("agent-c", None, None);
        if let Object::Pod(p) = &mut ds {
            p.spec.as_mut().unwrap().affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_fields: Some(vec![NodeSelectorRequirement {
                                key: "metadata.name".into(),
                                operator: "In".into(),
                                values: Some(vec!["c".into()]),
                            }]),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        add(&mut s, ds);
        run(&mut s, t(1));
        assert_eq!(
            scheduled(&get_pod(&s, "agent-c")).message.as_deref(),
            Some("0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
        );
    }

    #[test]
    fn node_selector_and_no_nodes() {
        let mut s = store();
        let mut p = pod("picky", None, None);
        if let Object::Pod(p) = &mut p {
            p.spec.as_mut().unwrap().node_selector = Some([("pool".to_string(), "blue".to_string())].into());
        }
        add(&mut s, p);
        run(&mut s, t(1));
        assert_eq!(
            scheduled(&get_pod(&s, "picky")).message.as_deref(),
            Some(NO_NODES)
        );
        add(&mut s, node("a", "110", vec![], false));
        run(&mut s, t(2));
        assert_eq!(
            scheduled(&get_pod(&s, "picky")).message.as_deref(),
            Some("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")
        );
        let mut n = match s.get_obj(Kind::Node, "", "a").as_deref() {
            Some(Object::Node(n)) => n.clone(),
            _ => unreachable!(),
        };
        n.metadata.labels = Some([("pool".to_string(), "blue".to_string())].into());
        s.replace(Object::Node(n));
        run(&mut s, t(3));
        assert_eq!(node_of(&s, "picky").as_deref(), Some("a"));
    }
}
