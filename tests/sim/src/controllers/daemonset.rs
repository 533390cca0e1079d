//! The DaemonSet controller (`pkg/controller/daemon`): one pod per eligible node (node selector,
//! required node affinity and NoSchedule/NoExecute taints checked against the template plus the
//! standard DaemonSet tolerations), created unbound with a `metadata.name` node affinity for the
//! scheduler to honour; RollingUpdate (maxUnavailable/maxSurge) of out-of-date pods; and status.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::replicaset::{
    available_at, claim_pods, compute_hash, controller_ref, create_pod, delete_pod, emit, emit_once,
    is_pod_available, is_pod_ready, is_pod_terminal, namespace_active, node_name, non_zero,
    pod_from_template, pod_phase, selector_is_empty, PodDeletion, PodIndex, PodRef,
};
use super::scheduler::affinity_matches;
use super::{update_if_changed, Ctx, Next};
use crate::object::Object;
use crate::resources::Kind;
use crate::selector::LabelSelector;
use crate::store::Store;

const COMPONENT: &str = "daemonset-controller";
/// Most pods one DaemonSet creates or deletes in one pass.
const BURST_REPLICAS: usize = 250;
/// The label carrying the template hash (the ControllerRevision's).
pub const REVISION_HASH: &str = "controller-revision-hash";
/// The label carrying the template generation.
pub const TEMPLATE_GENERATION: &str = "pod-template-generation";
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// Reconciles every DaemonSet once. Wants to run again when a ready daemon pod becomes
/// available (`minReadySeconds`).
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    let mut next = Next::default();
    let sets: Vec<Arc<Object>> = store.list(Kind::DaemonSet, None).map(|e| e.obj.clone()).collect();
    if sets.is_empty() {
        return next;
    }
    let nodes: Vec<Node> = store
        .list(Kind::Node, None)
        .filter_map(|e| match e.obj.as_ref() {
            Object::Node(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let pods = PodIndex::build(store);
    for obj in &sets {
        if let Object::DaemonSet(ds) = obj.as_ref() {
            sync_daemon_set(store, ctx.now, ds, &nodes, &pods, &mut next);
        }
    }
    next
}

fn sync_daemon_set(
    store: &mut Store,
    now: Timestamp,
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &PodIndex,
    next: &mut Next,
) {
    if ds.metadata.deletion_timestamp.is_some() {
        return;
    }
    let Some(spec) = ds.spec.as_ref() else { return };
    let Some(uid) = ds.metadata.uid.as_deref() else {
        return;
    };
    let ns = ds.metadata.namespace.as_deref().unwrap_or("");
    if selector_is_empty(&spec.selector) {
        let obj = Object::DaemonSet(ds.clone());
        emit_once(
            store,
            now,
            &obj,
            "Warning",
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.",
            COMPONENT,
        );
        return;
    }
    let Ok(selector) = LabelSelector::from_k8s(&spec.selector) else {
        return;
    };
    let hash = compute_hash(&spec.template, ds.status.as_ref().and_then(|s| s.collision_count));
    let generation = template_generation(ds);
    let candidates = pods.owned(uid).iter().chain(pods.orphans(ns));
    let mut claimed = claim_pods(
        store,
        Kind::DaemonSet,
        &ds.metadata,
        &spec.selector,
        &selector,
        candidates,
    );
    let mut sync = Sync {
        store,
        now,
        ds,
        hash,
        generation,
        nodes,
    };
    let changed = sync.manage(&mut claimed);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if !changed && rolling {
        sync.rolling_update(&mut claimed);
    }
    sync.update_status(&claimed, next);
}

/// `GetTemplateGeneration`: the deprecated annotation if set, else the object's generation (the
/// simulated API server does not maintain the annotation; both change with the template).
fn template_generation(ds: &DaemonSet) -> Option<i64> {
    match ds
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION))
    {
        Some(v) => v.parse().ok(),
        None => ds.metadata.generation,
    }
}

/// `util.GetTargetNodeName`: the bound node, else the node of a `metadata.name In [node]`
/// required node affinity term.
pub(crate) fn target_node_name(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    for term in terms {
        for req in term.match_fields.iter().flatten() {
            if req.key == "metadata.name" && req.operator == "In" {
                return match req.values.as_deref() {
                    Some([one]) => Some(one.clone()),
                    _ => None,
                };
            }
        }
    }
    None
}

/// `Toleration.ToleratesTaint`.
pub(crate) fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// `AddOrUpdateDaemonPodTolerations`: the tolerations every daemon pod gets.
pub(crate) fn daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    let mut standard = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        standard.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    for (key, effect) in standard {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        // MatchToleration: same key, operator, value and effect; replaced unless identical.
        let same = |o: &Toleration| {
            o.key == t.key
                && o.operator == t.operator
                && o.value.as_deref().unwrap_or("").is_empty()
                && o.effect == t.effect
        };
        match tolerations.iter().position(same) {
            Some(i) => tolerations[i] = t,
            None => tolerations.push(t),
        }
    }
    tolerations
}

/// `NodeShouldRunDaemonPod`: (should run, should continue running).
pub(crate) fn node_should_run(node: &Node, ds: &DaemonSet) -> (bool, bool) {
    let default = PodSpec::default();
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap_or(&default);
    let name = node.metadata.name.as_deref().unwrap_or("");
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    if !affinity_matches(spec, node) {
        return (false, false);
    }
    let tolerations = daemon_tolerations(spec);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let untolerated = |effects: &[&str]| {
        taints
            .iter()
            .filter(|t| effects.contains(&t.effect.as_str()))
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(&["NoExecute"]));
    }
    (true, true)
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: pins the pod to `node` through a required
/// `metadata.name` match (replacing any required terms).
fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
        match_expressions: None,
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    match na.required_during_scheduling_ignored_during_execution.as_mut() {
        Some(sel) => sel.node_selector_terms = vec![term],
        None => {
            na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
                node_selector_terms: vec![term],
            })
        }
    }
    affinity
}

/// `podByCreationTimestampAndPhase`: scheduled first, then oldest, then by name.
fn by_creation_and_phase(a: &Pod, b: &Pod) -> Ordering {
    let (sa, sb) = (!node_name(a).is_empty(), !node_name(b).is_empty());
    if sa != sb {
        return if sa { Ordering::Less } else { Ordering::Greater };
    }
    let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
    ta.cmp(&tb).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

fn scaled_up(v: &IntOrString, total: i32) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => match s.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) {
            Some(p) => (p * f64::from(total) / 100.0).ceil() as i32,
            None => s.trim().parse().unwrap_or(0),
        },
    }
}

/// One DaemonSet's sync.
struct Sync<'a> {
    store: &'a mut Store,
    now: Timestamp,
    ds: &'a DaemonSet,
    hash: String,
    generation: Option<i64>,
    nodes: &'a [Node],
}

impl Sync<'_> {
    fn name(&self) -> &str {
        self.ds.metadata.name.as_deref().unwrap_or("")
    }

    fn ns(&self) -> &str {
        self.ds.metadata.namespace.as_deref().unwrap_or("")
    }

    fn min_ready(&self) -> i32 {
        self.ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn rolling_params(&self) -> (IntOrString, IntOrString) {
        let ru = self
            .ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref());
        (
            ru.and_then(|r| r.max_surge.clone())
                .unwrap_or(IntOrString::Int(0)),
            ru.and_then(|r| r.max_unavailable.clone())
                .unwrap_or(IntOrString::Int(1)),
        )
    }

    fn allows_surge(&self) -> bool {
        let rolling = self
            .ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        rolling && scaled_up(&self.rolling_params().0, 1) != 0
    }

    /// `IsPodUpdated`: the pod carries the current template generation or hash.
    fn is_updated(&self, pod: &Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        let generation_matches = self
            .generation
            .is_some_and(|g| labels.and_then(|l| l.get(TEMPLATE_GENERATION)) == Some(&g.to_string()));
        let hash_matches =
            !self.hash.is_empty() && labels.and_then(|l| l.get(REVISION_HASH)) == Some(&self.hash);
        generation_matches || hash_matches
    }

    fn event(&mut self, type_: &str, reason: &str, message: &str) {
        let obj = Object::DaemonSet(self.ds.clone());
        emit(self.store, self.now, &obj, type_, reason, message, COMPONENT);
    }

    /// Pods by target node name; `include_deleted_terminal` keeps terminal pods being deleted.
    fn by_node<'p>(
        &self,
        pods: &'p [PodRef],
        include_deleted_terminal: bool,
    ) -> BTreeMap<String, Vec<&'p Pod>> {
        let mut map: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for pod in pods {
            if !include_deleted_terminal && is_pod_terminal(pod) && pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            if let Some(node) = target_node_name(pod) {
                map.entry(node).or_default().push(&**pod);
            }
        }
        map
    }

    /// `manage`: creates missing daemon pods, deletes failed, surplus and misplaced ones.
    /// Returns whether it changed anything.
    fn manage(&mut self, pods: &mut Vec<PodRef>) -> bool {
        let by_node = self.by_node(pods, true);
        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<(String, Option<i64>)> = Vec::new();
        let mut failed: Vec<(String, String)> = Vec::new();
        let surge = self.allows_surge();
        for node in self.nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let (should_run, should_continue) = node_should_run(node, self.ds);
            let on = by_node.get(&name);
            if should_run && on.is_none() {
                create_on.push(name);
            } else if should_continue {
                let mut running: Vec<&Pod> = Vec::new();
                for pod in on.into_iter().flatten() {
                    if pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    match pod_phase(pod) {
                        "Failed" => {
                            failed.push((pod_name.clone(), name.clone()));
                            delete.push((pod_name, None));
                        }
                        "Succeeded" => delete.push((pod_name, None)),
                        _ => running.push(pod),
                    }
                }
                running.sort_by(|a, b| by_creation_and_phase(a, b));
                if !surge {
                    delete.extend(
                        running
                            .iter()
                            .skip(1)
                            .map(|p| (p.metadata.name.clone().unwrap_or_default(), None)),
                    );
                } else {
                    // Keep the oldest new pod, and the oldest old one only while the new one is
                    // not yet available and the old one is ready.
                    let (mut oldest_new, mut oldest_old): (Option<&Pod>, Option<&Pod>) = (None, None);
                    for pod in running {
                        let new = pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH))
                            == Some(&self.hash);
                        let slot = if new { &mut oldest_new } else { &mut oldest_old };
                        if slot.is_none() {
                            *slot = Some(pod);
                        } else {
                            delete.push((pod.metadata.name.clone().unwrap_or_default(), None));
                        }
                    }
                    if let (Some(n), Some(o)) = (oldest_new, oldest_old) {
                        if !is_pod_ready(o) || is_pod_available(n, self.min_ready(), self.now) {
                            delete.push((o.metadata.name.clone().unwrap_or_default(), None));
                        }
                    }
                }
            } else if let Some(on) = on {
                delete.extend(
                    on.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .map(|p| (p.metadata.name.clone().unwrap_or_default(), None)),
                );
            }
        }
        // Pods for nodes that no longer exist: unscheduled ones are deleted here (the scheduler
        // could never bind them); bound ones are force-deleted as the pod GC would.
        let known: HashSet<&str> = self
            .nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        for (node, on) in &by_node {
            if known.contains(node.as_str()) {
                continue;
            }
            for pod in on {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if node_name(pod).is_empty() {
                    if pod.metadata.deletion_timestamp.is_none() {
                        delete.push((name, None));
                    }
                } else {
                    delete.push((name, Some(0)));
                }
            }
        }
        for (pod, node) in failed {
            let ns = self.ns().to_string();
            self.event(
                "Warning",
                "FailedDaemonPod",
                &format!("Found failed daemon pod {ns}/{pod} on node {node}, will try to kill it"),
            );
        }
        let changed = !create_on.is_empty() || !delete.is_empty();
        self.sync_nodes(pods, delete, create_on);
        changed
    }

    /// `syncNodes`: creates pinned pods for `create_on`, deletes `delete`.
    fn sync_nodes(
        &mut self,
        pods: &mut Vec<PodRef>,
        delete: Vec<(String, Option<i64>)>,
        create_on: Vec<String>,
    ) {
        let ns = self.ns().to_string();
        if !create_on.is_empty() && namespace_active(self.store, &ns) {
            let Some(spec) = self.ds.spec.as_ref() else { return };
            // `CreatePodTemplate`: DaemonSet tolerations, generation and hash labels.
            let mut template: PodTemplateSpec = spec.template.clone();
            let pod_spec = template.spec.get_or_insert_with(Default::default);
            pod_spec.tolerations = Some(daemon_tolerations(pod_spec));
            let labels = template
                .metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(BTreeMap::new);
            if let Some(g) = self.generation {
                labels.insert(TEMPLATE_GENERATION.into(), g.to_string());
            }
            labels.insert(REVISION_HASH.into(), self.hash.clone());
            let cref = controller_ref(Kind::DaemonSet, &self.ds.metadata);
            for node in create_on.iter().take(BURST_REPLICAS) {
                let mut t = template.clone();
                if let Some(s) = t.spec.as_mut() {
                    s.affinity = Some(pin_to_node(s.affinity.take(), node));
                }
                let pod = pod_from_template(&t, self.name(), &ns, cref.clone());
                match create_pod(self.store, self.now, pod) {
                    Some(created) => {
                        let name = created.metadata.name.clone().unwrap_or_default();
                        self.event("Normal", "SuccessfulCreate", &format!("Created pod: {name}"));
                        pods.push(PodRef::owned(created));
                    }
                    None => {
                        self.event("Warning", "FailedCreate", "Error creating: pods already exist");
                        break;
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        for (name, grace) in delete.into_iter().take(BURST_REPLICAS) {
            if !seen.insert(name.clone()) {
                continue;
            }
            match delete_pod(self.store, self.now, &ns, &name, grace) {
                PodDeletion::Gone => pods.retain(|p| p.metadata.name.as_deref() != Some(name.as_str())),
                PodDeletion::Terminating(p) => {
                    if let Some(slot) = pods
                        .iter_mut()
                        .find(|x| x.metadata.name.as_deref() == Some(name.as_str()))
                    {
                        *slot = PodRef::owned(*p);
                    }
                }
                PodDeletion::Failed => continue,
            }
            self.event("Normal", "SuccessfulDelete", &format!("Deleted pod: {name}"));
        }
    }

    /// `findUpdatedPodsOnNode`: the node's new and old pod, or `None` when it has several of one.
    fn updated_on_node<'p>(&self, on: &[&'p Pod]) -> Option<(Option<&'p Pod>, Option<&'p Pod>)> {
        let (mut new, mut old) = (None, None);
        for pod in on.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let slot = if self.is_updated(pod) { &mut new } else { &mut old };
            if slot.is_some() {
                return None;
            }
            *slot = Some(*pod);
        }
        Some((new, old))
    }

    /// `rollingUpdate`: replaces out-of-date pods within maxUnavailable, or surges new ones
    /// within maxSurge.
    fn rolling_update(&mut self, pods: &mut Vec<PodRef>) {
        let snapshot = pods.clone();
        let by_node = self.by_node(&snapshot, false);
        let desired = self
            .nodes
            .iter()
            .filter(|n| node_should_run(n, self.ds).0)
            .count() as i32;
        let (surge, unavailable) = self.rolling_params();
        let max_surge = scaled_up(&surge, desired);
        let mut max_unavailable = scaled_up(&unavailable, desired);
        if desired > 0 && max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let (min_ready, now) = (self.min_ready(), self.now);
        let available = |p: &Pod| is_pod_available(p, min_ready, now);
        let name_of = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        if max_surge == 0 {
            let mut num_unavailable = 0;
            let mut allowed: Vec<String> = Vec::new();
            let mut candidates: Vec<String> = Vec::new();
            for on in by_node.values() {
                match self.updated_on_node(on) {
                    None | Some((None, None)) | Some((Some(_), Some(_))) => num_unavailable += 1,
                    Some((Some(new), None)) => {
                        if !available(new) {
                            num_unavailable += 1;
                        }
                    }
                    Some((None, Some(old))) => {
                        if !available(old) {
                            allowed.push(name_of(old));
                        } else if num_unavailable < max_unavailable {
                            candidates.push(name_of(old));
                        }
                    }
                }
            }
            let remaining = (max_unavailable - num_unavailable).max(0) as usize;
            allowed.extend(candidates.into_iter().take(remaining));
            let delete = allowed.into_iter().map(|n| (n, None)).collect();
            self.sync_nodes(pods, delete, Vec::new());
            return;
        }
        let mut delete: Vec<String> = Vec::new();
        let mut should_not_run: Vec<String> = Vec::new();
        let mut candidate_nodes: Vec<String> = Vec::new();
        let mut allowed_nodes: Vec<String> = Vec::new();
        let (mut num_surge, mut num_available) = (0, 0);
        for (node_name, on) in &by_node {
            let Some((new, old)) = self.updated_on_node(on) else {
                num_surge += 1;
                continue;
            };
            if let Some(p) = old.or(new) {
                if available(p) {
                    num_available += 1;
                }
            }
            let should_run = || {
                self.nodes
                    .iter()
                    .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()))
                    .is_some_and(|n| node_should_run(n, self.ds).0)
            };
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) => {
                    if !available(old) {
                        if should_run() {
                            allowed_nodes.push(node_name.clone());
                        } else {
                            delete.push(name_of(old));
                        }
                    } else if !should_run() {
                        should_not_run.push(name_of(old));
                    } else if num_surge < max_surge {
                        candidate_nodes.push(node_name.clone());
                    }
                }
                (Some(new), Some(old)) => {
                    if available(new) {
                        delete.push(name_of(old));
                    } else {
                        num_surge += 1;
                    }
                }
            }
        }
        let deletable = (num_available - desired).max(0) as usize;
        delete.extend(should_not_run.into_iter().take(deletable));
        let remaining = (max_surge - num_surge).max(0) as usize;
        allowed_nodes.extend(candidate_nodes.into_iter().take(remaining));
        self.sync_nodes(
            pods,
            delete.into_iter().map(|n| (n, None)).collect(),
            allowed_nodes,
        );
    }

    /// `updateDaemonSetStatus`.
    fn update_status(&mut self, pods: &[PodRef], next: &mut Next) {
        let by_node = self.by_node(pods, false);
        let (mut desired, mut current, mut misscheduled, mut ready, mut updated, mut available) =
            (0, 0, 0, 0, 0, 0);
        let min_ready = self.min_ready();
        for node in self.nodes {
            let (should_run, _) = node_should_run(node, self.ds);
            let on = node
                .metadata
                .name
                .as_ref()
                .and_then(|n| by_node.get(n))
                .filter(|v| !v.is_empty());
            if should_run {
                desired += 1;
                let Some(on) = on else { continue };
                current += 1;
                let Some(pod) = on.iter().copied().min_by(|a, b| by_creation_and_phase(a, b)) else {
                    continue;
                };
                if is_pod_ready(pod) {
                    ready += 1;
                    if is_pod_available(pod, min_ready, self.now) {
                        available += 1;
                    } else if let Some(t) = available_at(pod, min_ready) {
                        next.at(t);
                    }
                }
                if self.is_updated(pod) {
                    updated += 1;
                }
            } else if on.is_some() {
                misscheduled += 1;
            }
        }
        let old = self.ds.status.clone().unwrap_or_default();
        let status = DaemonSetStatus {
            desired_number_scheduled: desired,
            current_number_scheduled: current,
            number_misscheduled: misscheduled,
            number_ready: ready,
            number_available: non_zero(available),
            number_unavailable: non_zero(desired - available),
            updated_number_scheduled: non_zero(updated),
            observed_generation: self.ds.metadata.generation,
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
        };
        if self.ds.status.as_ref() == Some(&status) {
            return;
        }
        let (ns, name) = (self.ns().to_string(), self.name().to_string());
        if let Some(Object::DaemonSet(mut cur)) = self
            .store
            .get_obj(Kind::DaemonSet, &ns, &name)
            .map(|o| (*o).clone())
        {
            cur.status = Some(status);
            update_if_changed(self.store, Object::DaemonSet(cur));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset::tests::{
        at, insert, pods_of, selector, store, t0, template, with_ctx,
    };
    use crate::controllers::replicaset::update_spec;
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn add_node(s: &mut Store, name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) {
        let node = Object::Node(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        });
        insert(s, t0(), node);
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some("true".into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn new_ds(s: &mut Store, f: impl FnOnce(&mut DaemonSetSpec)) -> DaemonSet {
        let mut spec = DaemonSetSpec {
            selector: selector(&[("app", "agent")]),
            template: template(&[("app", "agent")], "agent:1"),
            ..Default::default()
        };
        f(&mut spec);
        let ds = Object::DaemonSet(DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        });
        match insert(s, t0(), ds) {
            Object::DaemonSet(ds) => ds,
            _ => unreachable!(),
        }
    }

    fn get_ds(s: &Store) -> DaemonSet {
        match s.get_obj(Kind::DaemonSet, "default", "agent").as_deref() {
            Some(Object::DaemonSet(d)) => d.clone(),
            _ => panic!("no daemonset"),
        }
    }

    fn targets(s: &Store, ds: &DaemonSet) -> Vec<String> {
        let mut v: Vec<String> = pods_of(s, ds.metadata.uid.as_deref().unwrap_or(""))
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(target_node_name)
            .collect();
        v.sort();
        v
    }

    /// A fake scheduler + kubelet honouring the pinned node: binds, makes Running and Ready,
    /// finishes terminations.
    fn kubelet(s: &mut Store, now: Timestamp) {
        for e in s.list(Kind::Pod, None).map(|e| e.obj.clone()).collect::<Vec<_>>() {
            let Object::Pod(pod) = e.as_ref() else { continue };
            let name = pod.metadata.name.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                s.remove(Kind::Pod, "default", &name);
                continue;
            }
            let mut p = pod.clone();
            let target = target_node_name(&p);
            let spec = p.spec.get_or_insert_with(Default::default);
            if spec.node_name.is_none() {
                spec.node_name = target;
            }
            let st = p.status.get_or_insert_with(Default::default);
            st.phase = Some("Running".into());
            if !is_pod_ready(pod) {
                st.conditions = Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(now)),
                    ..Default::default()
                }]);
            }
            if &p != pod {
                s.replace(Object::Pod(p));
            }
        }
    }

    fn pass(s: &mut Store, now: Timestamp) -> Next {
        with_ctx(now, |ctx| reconcile(s, ctx))
    }

    fn status(s: &Store) -> DaemonSetStatus {
        get_ds(s).status.unwrap_or_default()
    }

    #[test]
    fn covers_eligible_nodes_only() {
        let mut s = store();
        add_node(&mut s, "node-a", &[], vec![]);
        add_node(&mut s, "node-b", &[], vec![taint("dedicated", "NoSchedule")]);
        add_node(
            &mut s,
            "node-c",
            &[("disk", "ssd")],
            vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")],
        );
        let ds = new_ds(&mut s, |_| {});
        pass(&mut s, t0());
        assert_eq!(
            targets(&s, &ds),
            ["node-a", "node-c"],
            "tainted node skipped; unschedulable tolerated"
        );
        let pods = pods_of(&s, ds.metadata.uid.as_deref().unwrap_or(""));
        for p in &pods {
            let spec = p.spec.clone().unwrap_or_default();
            assert!(spec.node_name.is_none(), "the scheduler binds daemon pods");
            let tol = spec.tolerations.unwrap_or_default();
            let not_ready = tol
                .iter()
                .find(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                (not_ready.effect.as_deref(), not_ready.toleration_seconds),
                (Some("NoExecute"), None)
            );
            assert!(tol
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/disk-pressure")));
            assert!(!tol
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
            let labels = p.metadata.labels.clone().unwrap_or_default();
            assert_eq!(labels.get(TEMPLATE_GENERATION).map(String::as_str), Some("1"));
            assert!(labels.contains_key(REVISION_HASH));
        }
        let st = status(&s);
        assert_eq!(
            (
                st.desired_number_scheduled,
                st.current_number_scheduled,
                st.number_ready,
                st.number_unavailable
            ),
            (2, 2, 0, Some(2))
        );
        kubelet(&mut s, at(1));
        pass(&mut s, at(2));
        let st = status(&s);
        assert_eq!(
            (
                st.number_ready,
                st.number_available,
                st.number_unavailable,
                st.updated_number_scheduled,
                st.number_misscheduled,
                st.observed_generation
            ),
            (2, Some(2), None, Some(2), 0, Some(1))
        );
        let rv = s.rv();
        pass(&mut s, at(3));
        assert_eq!(s.rv(), rv, "idle pass writes nothing");
    }

    #[test]
    fn node_selector_and_tolerations() {
        let mut s = store();
        add_node(&mut s, "node-a", &[], vec![]);
        add_node(
            &mut s,
            "node-b",
            &[("disk", "ssd")],
            vec![taint("dedicated", "NoSchedule")],
        );
        add_node(&mut s, "node-c", &[("disk", "ssd")], vec![]);
        let ds = new_ds(&mut s, |spec| {
            if let Some(p) = spec.template.spec.as_mut() {
                p.node_selector = Some([("disk".to_string(), "ssd".to_string())].into());
                p.tolerations = Some(vec![Toleration {
                    key: Some("dedicated".into()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]);
            }
        });
        pass(&mut s, t0());
        assert_eq!(targets(&s, &ds), ["node-b", "node-c"]);
        assert_eq!(status(&s).desired_number_scheduled, 2);
    }

    #[test]
    fn taints_added_later() {
        let mut s = store();
        add_node(&mut s, "node-a", &[], vec![]);
        add_node(&mut s, "node-b", &[], vec![]);
        let ds = new_ds(&mut s, |_| {});
        pass(&mut s, t0());
        kubelet(&mut s, at(1));
        let set_taints = |s: &mut Store, name: &str, taints: Vec<Taint>| {
            if let Some(Object::Node(mut n)) = s.get_obj(Kind::Node, "", name).map(|o| (*o).clone()) {
                n.spec.get_or_insert_with(Default::default).taints = Some(taints);
                s.replace(Object::Node(n));
            }
        };
        set_taints(&mut s, "node-a", vec![taint("maintenance", "NoSchedule")]);
        set_taints(&mut s, "node-b", vec![taint("maintenance", "NoExecute")]);
        pass(&mut s, at(2));
        assert_eq!(
            targets(&s, &ds),
            ["node-a"],
            "NoSchedule keeps the running pod; NoExecute evicts"
        );
        let st = status(&s);
        assert_eq!(
            (st.desired_number_scheduled, st.number_misscheduled),
            (0, 2),
            "the terminating pod still counts"
        );
    }

    #[test]
    fn deletes_pods_of_removed_nodes() {
        let mut s = store();
        add_node(&mut s, "node-a", &[], vec![]);
        add_node(&mut s, "node-b", &[], vec![]);
        add_node(&mut s, "node-c", &[], vec![]);
        let ds = new_ds(&mut s, |_| {});
        pass(&mut s, t0());
        kubelet(&mut s, at(1)); // a, b and c bound
        add_node(&mut s, "node-d", &[], vec![]);
        pass(&mut s, at(2)); // node-d's pod stays unbound
        assert_eq!(targets(&s, &ds).len(), 4);
        s.remove(Kind::Node, "", "node-b");
        s.remove(Kind::Node, "", "node-d");
        pass(&mut s, at(3));
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let left: Vec<String> = pods_of(&s, &uid).iter().filter_map(target_node_name).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|n| n == "node-a" || n == "node-c"));
        assert_eq!(status(&s).desired_number_scheduled, 2);
    }

    #[test]
    fn rolling_update_replaces_one_pod_at_a_time() {
        let mut s = store();
        for n in ["node-a", "node-b", "node-c"] {
            add_node(&mut s, n, &[], vec![]);
        }
        let ds = new_ds(&mut s, |spec| {
            spec.update_strategy = Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            });
        });
        pass(&mut s, t0());
        kubelet(&mut s, at(1));
        pass(&mut s, at(1));
        let mut d = get_ds(&s);
        if let Some(spec) = d.spec.as_mut() {
            spec.template = template(&[("app", "agent")], "agent:2");
        }
        update_spec(&mut s, Object::DaemonSet(d));
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        for i in 0..12 {
            pass(&mut s, at(2 + i));
            let live: Vec<Pod> = pods_of(&s, &uid)
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = live.iter().filter(|p| is_pod_ready(p)).count();
            assert!(ready >= 2, "more than maxUnavailable down at pass {i}");
            kubelet(&mut s, at(2 + i));
        }
        pass(&mut s, at(20));
        let st = status(&s);
        assert_eq!(
            (
                st.updated_number_scheduled,
                st.number_available,
                st.observed_generation
            ),
            (Some(3), Some(3), Some(2))
        );
        assert!(pods_of(&s, &uid).iter().all(|p| p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEMPLATE_GENERATION))
            .map(String::as_str)
            == Some("2")));
    }

    #[test]
    fn surge_update_keeps_every_node_covered() {
        let mut s = store();
        for n in ["node-a", "node-b"] {
            add_node(&mut s, n, &[], vec![]);
        }
        let ds = new_ds(&mut s, |spec| {
            spec.update_strategy = Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            });
        });
        pass(&mut s, t0());
        kubelet(&mut s, at(1));
        pass(&mut s, at(1));
        let mut d = get_ds(&s);
        if let Some(spec) = d.spec.as_mut() {
            spec.template = template(&[("app", "agent")], "agent:2");
        }
        update_spec(&mut s, Object::DaemonSet(d));
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let mut max_per_node = 0;
        for i in 0..12 {
            pass(&mut s, at(2 + i));
            let live: Vec<Pod> = pods_of(&s, &uid)
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            for node in ["node-a", "node-b"] {
                let on: Vec<&Pod> = live
                    .iter()
                    .filter(|p| target_node_name(p).as_deref() == Some(node))
                    .collect();
                assert!(on.iter().any(|p| is_pod_ready(p)), "{node} uncovered at pass {i}");
                max_per_node = max_per_node.max(on.len());
            }
            kubelet(&mut s, at(2 + i));
        }
        assert_eq!(max_per_node, 2, "a new pod surged beside the old one");
        let st = status(&s);
        assert_eq!(
            (st.updated_number_scheduled, st.number_available),
            (Some(2), Some(2))
        );
        assert_eq!(pods_of(&s, &uid).len(), 2);
    }

    #[test]
    fn node_affinity_expressions() {
        let node = |labels: &[(&str, &str)]| Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = |op: &str, values: &[&str]| PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "zone".into(),
                                operator: op.into(),
                                values: Some(values.iter().map(|v| v.to_string()).collect()),
                            }]),
                            match_fields: None,
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(affinity_matches(
            &spec("In", &["a", "b"]),
            &node(&[("zone", "a")])
        ));
        assert!(!affinity_matches(&spec("In", &["a"]), &node(&[("zone", "c")])));
        assert!(affinity_matches(&spec("NotIn", &["a"]), &node(&[])));
        assert!(affinity_matches(&spec("Gt", &["3"]), &node(&[("zone", "4")])));
        assert!(!affinity_matches(
            &spec("DoesNotExist", &[]),
            &node(&[("zone", "4")])
        ));
        let pinned = PodSpec {
            affinity: Some(pin_to_node(None, "n1")),
            ..Default::default()
        };
        assert!(affinity_matches(&pinned, &node(&[])));
    }
}
