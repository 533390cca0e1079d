//! The ReplicaSet controller (`pkg/controller/replicaset`): keeps `spec.replicas` active pods per
//! ReplicaSet, adopting matching orphans and releasing pods that stopped matching, and reports
//! status. Also holds what the workload controllers share, as `pkg/controller/controller_utils.go`
//! does: pod readiness and availability, controller references, pods from templates, the
//! `ActivePods` deletion ranking, template hashing, and writes that bump `metadata.generation`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as K8sSelector, ObjectMeta, OwnerReference,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::{create, record_event, update_if_changed, Ctx, Next};
use crate::api::{self, DeleteOptions, Deleted};
use crate::object::Object;
use crate::resources::Kind;
use crate::selector::LabelSelector;
use crate::store::Store;

const COMPONENT: &str = "replicaset-controller";
/// Most pods one ReplicaSet creates or deletes in one pass (the controller's `BurstReplicas`).
const BURST_REPLICAS: usize = 500;
/// Annotation ranking pods for deletion (lower cost goes first).
const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Reconciles every ReplicaSet once: claims pods, creates or deletes pods to reach
/// `spec.replicas`, and writes status. Wants to run again when a ready pod becomes available
/// (`minReadySeconds`).
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    let mut next = Next::default();
    let sets: Vec<Arc<Object>> = store
        .list(Kind::ReplicaSet, None)
        .map(|e| e.obj.clone())
        .collect();
    if sets.is_empty() {
        return next;
    }
    let pods = PodIndex::build(store);
    // ReplicaSets that share a controller (a Deployment's), for the "doubled up" deletion rank.
    let mut siblings: HashMap<String, Vec<String>> = HashMap::new();
    for obj in &sets {
        if let Object::ReplicaSet(rs) = obj.as_ref() {
            if let (Some(c), Some(uid)) = (controller_of(&rs.metadata), rs.metadata.uid.as_ref()) {
                siblings.entry(c.uid.clone()).or_default().push(uid.clone());
            }
        }
    }
    for obj in &sets {
        if let Object::ReplicaSet(rs) = obj.as_ref() {
            sync_replica_set(store, ctx, rs, &pods, &siblings, &mut next);
        }
    }
    next
}

fn sync_replica_set(
    store: &mut Store,
    ctx: &Ctx,
    rs: &ReplicaSet,
    pods: &PodIndex,
    siblings: &HashMap<String, Vec<String>>,
    next: &mut Next,
) {
    let Some(spec) = rs.spec.as_ref() else { return };
    let Some(uid) = rs.metadata.uid.as_deref() else {
        return;
    };
    let ns = rs.metadata.namespace.as_deref().unwrap_or("");
    let Ok(selector) = LabelSelector::from_k8s(&spec.selector) else {
        return;
    };
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let candidates = pods
        .owned(uid)
        .iter()
        .chain(pods.orphans(ns))
        .filter(|o| as_pod(o).is_some_and(is_pod_active));
    let mut active = claim_pods(
        store,
        Kind::ReplicaSet,
        &rs.metadata,
        &spec.selector,
        &selector,
        candidates,
    );

    if !deleting {
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        manage_replicas(store, ctx.now, rs, want, &mut active, pods, siblings);
    }

    // Status, as calculateStatus does, over the active pods after this pass's changes.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
    for pod in &active {
        if labels_contain(pod.metadata.labels.as_ref(), template_labels) {
            fully_labeled += 1;
        }
        if is_pod_ready(pod) {
            ready += 1;
            if is_pod_available(pod, min_ready, ctx.now) {
                available += 1;
            } else if let Some(t) = available_at(pod, min_ready) {
                next.at(t);
            }
        }
    }
    let mut status = rs.status.clone().unwrap_or_default();
    if let Some(conds) = status.conditions.as_mut() {
        // No create or delete failed this pass: a ReplicaFailure condition no longer applies.
        conds.retain(|c| c.type_ != "ReplicaFailure");
    }
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }
    status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: non_zero(fully_labeled),
        ready_replicas: non_zero(ready),
        available_replicas: non_zero(available),
        observed_generation: rs.metadata.generation,
        ..status
    };
    if rs.status.as_ref() != Some(&status) {
        if let Some(Object::ReplicaSet(mut cur)) = store
            .get_obj(Kind::ReplicaSet, ns, rs.metadata.name.as_deref().unwrap_or(""))
            .map(|o| (*o).clone())
        {
            cur.status = Some(status);
            update_if_changed(store, Object::ReplicaSet(cur));
        }
    }
}

/// Creates or deletes pods so that `active` holds `want` pods (`manageReplicas`).
fn manage_replicas(
    store: &mut Store,
    now: Timestamp,
    rs: &ReplicaSet,
    want: usize,
    active: &mut Vec<PodRef>,
    pods: &PodIndex,
    siblings: &HashMap<String, Vec<String>>,
) {
    let ns = rs.metadata.namespace.as_deref().unwrap_or("").to_string();
    let owner = Object::ReplicaSet(rs.clone());
    if active.len() < want {
        let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
            return;
        };
        if template.spec.is_none() || !namespace_active(store, &ns) {
            // A terminating namespace refuses new content; the real controller gives up quietly.
            return;
        }
        let cref = controller_ref(Kind::ReplicaSet, &rs.metadata);
        let count = (want - active.len()).min(BURST_REPLICAS);
        for _ in 0..count {
            let pod = pod_from_template(
                template,
                rs.metadata.name.as_deref().unwrap_or(""),
                &ns,
                cref.clone(),
            );
            match create_pod(store, now, pod) {
                Some(created) => {
                    let name = created.metadata.name.clone().unwrap_or_default();
                    emit(
                        store,
                        now,
                        &owner,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {name}"),
                        COMPONENT,
                    );
                    active.push(PodRef::owned(created));
                }
                None => {
                    emit(
                        store,
                        now,
                        &owner,
                        "Warning",
                        "FailedCreate",
                        "Error creating: pods already exist",
                        COMPONENT,
                    );
                    break;
                }
            }
        }
    } else if active.len() > want {
        let count = (active.len() - want).min(BURST_REPLICAS);
        if count < active.len() {
            // Rank by how many related pods (this ReplicaSet's and its siblings') share each node.
            let mut on_node: HashMap<String, usize> = HashMap::new();
            let related: Vec<&str> = match controller_of(&rs.metadata).and_then(|c| siblings.get(&c.uid)) {
                Some(uids) => uids.iter().map(String::as_str).collect(),
                None => Vec::new(),
            };
            for uid in related {
                for pod in pods
                    .owned(uid)
                    .iter()
                    .filter_map(|o| as_pod(o))
                    .filter(|p| is_pod_active(p))
                {
                    *on_node.entry(node_name(pod).to_string()).or_default() += 1;
                }
            }
            sort_for_deletion(active, &on_node, now);
        }
        let doomed: Vec<PodRef> = active.drain(..count).collect();
        for pod in doomed {
            let name = pod.metadata.name.clone().unwrap_or_default();
            match delete_pod(store, now, &ns, &name, None) {
                PodDeletion::Failed => {}
                _ => emit(
                    store,
                    now,
                    &owner,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                    COMPONENT,
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the workload controllers.
// ---------------------------------------------------------------------------------------------

/// `Some(n)` unless `n` is zero: the JSON of an `omitempty` integer field.
pub(crate) fn non_zero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// The pod inside an object, if it is one.
pub(crate) fn as_pod(obj: &Object) -> Option<&Pod> {
    match obj {
        Object::Pod(p) => Some(p),
        _ => None,
    }
}

/// The pod's phase (`""` when unset).
pub(crate) fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The node the pod is bound to (`""` when unscheduled).
pub(crate) fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Succeeded or Failed.
pub(crate) fn is_pod_terminal(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// Neither terminal nor terminating (`controller.IsPodActive`).
pub(crate) fn is_pod_active(pod: &Pod) -> bool {
    !is_pod_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition last became True, if it is True now.
pub(crate) fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
        })
}

/// The pod's Ready condition is True (`podutil.IsPodReady`).
pub(crate) fn is_pod_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for longer than `min_ready_seconds` (`podutil.IsPodAvailable`).
pub(crate) fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => {
            t != Timestamp::UNIX_EPOCH && t + SignedDuration::from_secs(i64::from(min_ready_seconds)) < now
        }
    }
}

/// When a ready pod that is not yet available will be (for `Next`).
pub(crate) fn available_at(pod: &Pod, min_ready_seconds: i32) -> Option<Timestamp> {
    if min_ready_seconds <= 0 {
        return None;
    }
    let t = ready_since(pod)?;
    Some(t + SignedDuration::from_secs(i64::from(min_ready_seconds)) + SignedDuration::from_millis(1))
}

/// The owner reference marked `controller: true`.
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `meta` of `kind` (`metav1.NewControllerRef`).
pub(crate) fn controller_ref(kind: Kind, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: kind.api_version(),
        kind: kind.info().kind_name.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether every label of `want` is in `have` with the same value (an empty `want` matches all).
pub(crate) fn labels_contain(
    have: Option<&BTreeMap<String, String>>,
    want: Option<&BTreeMap<String, String>>,
) -> bool {
    want.is_none_or(|w| w.iter().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v)))
}

/// A selector with neither labels nor expressions (which controllers treat as selecting nothing).
pub(crate) fn selector_is_empty(sel: &K8sSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Whether the namespace exists and is not terminating (the API refuses new content otherwise).
pub(crate) fn namespace_active(store: &Store, ns: &str) -> bool {
    store
        .get_obj(Kind::Namespace, "", ns)
        .is_some_and(|n| n.meta().deletion_timestamp.is_none())
}

/// Releases `obj` from the controller with `uid` (it no longer matches the selector), as the
/// ControllerRefManager does: the reference goes, and an empty list with it.
pub(crate) fn release(store: &mut Store, mut obj: Object, uid: &str) {
    let meta = obj.meta_mut();
    if let Some(refs) = meta.owner_references.as_mut() {
        refs.retain(|r| r.uid != uid);
    }
    if meta.owner_references.as_ref().is_some_and(Vec::is_empty) {
        meta.owner_references = None;
    }
    update_if_changed(store, obj);
}

/// Adopts an orphan `obj` under the controller reference `owner`; returns it as stored.
pub(crate) fn adopt(store: &mut Store, mut obj: Object, owner: OwnerReference) -> Object {
    obj.meta_mut()
        .owner_references
        .get_or_insert_with(Vec::new)
        .push(owner);
    update_if_changed(store, obj.clone());
    obj
}

/// Records an Event unless the object's namespace refuses new content (a terminating namespace).
pub(crate) fn emit(
    store: &mut Store,
    now: Timestamp,
    obj: &Object,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = obj.namespace();
    let ns = if ns.is_empty() { "default" } else { ns };
    if namespace_active(store, ns) {
        record_event(store, now, obj, type_, reason, message, component);
    }
}

/// Records an Event only if the object has none with this reason yet (for warnings a real
/// controller repeats on every sync, which would otherwise make every pass write).
pub(crate) fn emit_once(
    store: &mut Store,
    now: Timestamp,
    obj: &Object,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let uid = obj.meta().uid.as_deref();
    let ns = if obj.namespace().is_empty() {
        "default"
    } else {
        obj.namespace()
    };
    let seen = store.list(Kind::Event, Some(ns)).any(|e| match e.obj.as_ref() {
        Object::Event(ev) => ev.involved_object.uid.as_deref() == uid && ev.reason.as_deref() == Some(reason),
        _ => false,
    });
    if !seen {
        emit(store, now, obj, type_, reason, message, component);
    }
}

/// Writes `obj` if it changed, bumping `metadata.generation` when its spec changed, as the API
/// server does for spec updates.
pub(crate) fn update_spec(store: &mut Store, mut obj: Object) -> bool {
    let Some(cur) = store.get_obj(obj.kind(), obj.namespace(), obj.name()) else {
        return false;
    };
    let spec_changed = match (cur.as_ref(), &obj) {
        (Object::Deployment(a), Object::Deployment(b)) => a.spec != b.spec,
        (Object::ReplicaSet(a), Object::ReplicaSet(b)) => a.spec != b.spec,
        (Object::DaemonSet(a), Object::DaemonSet(b)) => a.spec != b.spec,
        (Object::HorizontalPodAutoscaler(a), Object::HorizontalPodAutoscaler(b)) => a.spec != b.spec,
        _ => false,
    };
    let generation = cur.meta().generation;
    obj.meta_mut().generation = if spec_changed {
        Some(generation.unwrap_or(0) + 1)
    } else {
        generation
    };
    update_if_changed(store, obj)
}

/// A pod for `template`, owned by `controller` (`controller.GetPodFromTemplate`).
pub(crate) fn pod_from_template(
    template: &PodTemplateSpec,
    owner_name: &str,
    ns: &str,
    controller: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            generate_name: Some(format!("{owner_name}-")),
            namespace: Some(ns.to_string()),
            owner_references: Some(vec![controller]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Creates a pod named from its `generateName` (trimmed to leave room for the five random
/// characters, as the API server does); `None` if no free name was found.
pub(crate) fn create_pod(store: &mut Store, now: Timestamp, mut pod: Pod) -> Option<Pod> {
    let mut base = pod.metadata.generate_name.clone().unwrap_or_default();
    if base.len() > 58 {
        let mut cut = 58;
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        base.truncate(cut);
    }
    for _ in 0..8 {
        pod.metadata.name = Some(format!("{base}{}", api::random_suffix()));
        if let Some(entry) = create(store, now, Object::Pod(pod.clone())) {
            return as_pod(&entry.obj).cloned();
        }
    }
    None
}

/// What deleting a pod did.
pub(crate) enum PodDeletion {
    /// Removed from the store (unbound pods, grace period 0).
    Gone,
    /// Now terminating; the kubelet finishes the job.
    Terminating(Box<Pod>),
    /// Already gone, or refused.
    Failed,
}

/// Deletes a pod through the API's rules (graceful for bound pods).
pub(crate) fn delete_pod(
    store: &mut Store,
    now: Timestamp,
    ns: &str,
    name: &str,
    grace: Option<i64>,
) -> PodDeletion {
    let opts = DeleteOptions {
        grace_period_seconds: grace,
        ..Default::default()
    };
    match api::delete(store, now, Kind::Pod, ns, name, &opts) {
        Ok(Deleted::Gone(_)) => PodDeletion::Gone,
        Ok(Deleted::Pending(entry)) => match as_pod(&entry.obj) {
            Some(p) => PodDeletion::Terminating(Box::new(p.clone())),
            None => PodDeletion::Failed,
        },
        Err(_) => PodDeletion::Failed,
    }
}

/// A cheaply cloned handle on a pod (the stored object, shared).
#[derive(Debug, Clone)]
pub(crate) struct PodRef(Arc<Object>);

impl PodRef {
    /// Wraps a pod that is not shared yet.
    pub(crate) fn owned(pod: Pod) -> PodRef {
        PodRef(Arc::new(Object::Pod(pod)))
    }
}

static EMPTY_POD: LazyLock<Pod> = LazyLock::new(Pod::default);

impl Deref for PodRef {
    type Target = Pod;

    fn deref(&self) -> &Pod {
        // Only ever built from pods; anything else reads as an empty pod.
        as_pod(&self.0).unwrap_or(&EMPTY_POD)
    }
}

/// Pods indexed once per pass: by controller uid, and controller-less ones by namespace.
pub(crate) struct PodIndex {
    by_controller: HashMap<String, Vec<Arc<Object>>>,
    orphans: HashMap<String, Vec<Arc<Object>>>,
}

impl PodIndex {
    /// Indexes every pod in the store.
    pub(crate) fn build(store: &Store) -> PodIndex {
        let mut by_controller: HashMap<String, Vec<Arc<Object>>> = HashMap::new();
        let mut orphans: HashMap<String, Vec<Arc<Object>>> = HashMap::new();
        for e in store.list(Kind::Pod, None) {
            match controller_of(e.obj.meta()) {
                Some(c) => by_controller
                    .entry(c.uid.clone())
                    .or_default()
                    .push(e.obj.clone()),
                None => orphans
                    .entry(e.obj.namespace().to_string())
                    .or_default()
                    .push(e.obj.clone()),
            }
        }
        PodIndex {
            by_controller,
            orphans,
        }
    }

    /// Pods whose controller has this uid.
    pub(crate) fn owned(&self, uid: &str) -> &[Arc<Object>] {
        self.by_controller.get(uid).map_or(&[], Vec::as_slice)
    }

    /// Pods without a controller in this namespace.
    pub(crate) fn orphans(&self, ns: &str) -> &[Arc<Object>] {
        self.orphans.get(ns).map_or(&[], Vec::as_slice)
    }
}

/// `ClaimPods`: keeps the owner's pods that still match, releases those that do not, and adopts
/// matching orphans (neither while the owner is being deleted). Returns the claimed pods.
pub(crate) fn claim_pods<'a>(
    store: &mut Store,
    kind: Kind,
    owner: &ObjectMeta,
    k8s_selector: &K8sSelector,
    selector: &LabelSelector,
    candidates: impl Iterator<Item = &'a Arc<Object>>,
) -> Vec<PodRef> {
    let uid = owner.uid.as_deref().unwrap_or("");
    let ns = owner.namespace.as_deref().unwrap_or("");
    let owner_deleting = owner.deletion_timestamp.is_some();
    let empty = selector_is_empty(k8s_selector);
    let mut claimed = Vec::new();
    for obj in candidates {
        let Some(pod) = as_pod(obj) else { continue };
        if pod.metadata.namespace.as_deref().unwrap_or("") != ns {
            continue;
        }
        let matches = !empty && selector.matches(pod.metadata.labels.as_ref());
        match controller_of(&pod.metadata) {
            Some(c) if c.uid == uid => {
                if matches {
                    claimed.push(PodRef(obj.clone()));
                } else if !owner_deleting {
                    release(store, Object::Pod(pod.clone()), uid);
                }
            }
            Some(_) => {}
            None => {
                if owner_deleting || !matches || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if let Object::Pod(adopted) =
                    adopt(store, Object::Pod(pod.clone()), controller_ref(kind, owner))
                {
                    claimed.push(PodRef::owned(adopted));
                }
            }
        }
    }
    claimed
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod_phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
}

/// Highest restart count of regular containers, then of restartable init (sidecar) containers.
fn max_restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let sidecars: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(&c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

/// Base-2 logarithmic age ranks of two times relative to now (`logarithmicRankDiff`).
fn log_rank_diff(t1: Timestamp, t2: Timestamp, now: Timestamp) -> i64 {
    let rank = |t: Timestamp| {
        let d = now.duration_since(t).as_nanos();
        if d > 0 {
            (d as f64).log2() as i64
        } else {
            -1
        }
    };
    rank(t1) - rank(t2)
}

/// `afterOrZero` as an ordering: a missing time sorts first, then the later time.
fn after_or_zero(t1: Option<Timestamp>, t2: Option<Timestamp>) -> Ordering {
    match (t1, t2) {
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(a), Some(b)) if a > b => Ordering::Less,
        _ => Ordering::Greater,
    }
}

fn uid_order(a: &Pod, b: &Pod) -> Ordering {
    a.metadata.uid.cmp(&b.metadata.uid)
}

/// `ActivePodsWithRanks.Less` as an ordering: pods to delete first sort first. `rank_a`/`rank_b`
/// count related pods on the same node ("doubled up" pods go first).
pub(crate) fn deletion_order(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: Timestamp) -> Ordering {
    // 1. Unassigned < assigned.
    let (na, nb) = (node_name(a), node_name(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 2. Pending < Unknown < Running.
    let (pa, pb) = (phase_ordinal(a), phase_ordinal(b));
    if pa != pb {
        return pa.cmp(&pb);
    }
    // 3. Not ready < ready.
    let (ra, rb) = (ready_since(a), ready_since(b));
    if ra.is_some() != rb.is_some() {
        return if ra.is_none() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 4. Lower pod-deletion-cost first.
    let (ca, cb) = (deletion_cost(a), deletion_cost(b));
    if ca != cb {
        return ca.cmp(&cb);
    }
    // 5. Doubled up < not doubled up.
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    // 6. Ready for a shorter time first (logarithmic buckets, then uid).
    if let (Some(ta), Some(tb)) = (ra, rb) {
        if ta != tb {
            let (za, zb) = (
                (ta != Timestamp::UNIX_EPOCH).then_some(ta),
                (tb != Timestamp::UNIX_EPOCH).then_some(tb),
            );
            return match (za, zb) {
                (Some(x), Some(y)) => match log_rank_diff(x, y, now) {
                    0 => uid_order(a, b),
                    d if d < 0 => Ordering::Less,
                    _ => Ordering::Greater,
                },
                _ => after_or_zero(za, zb),
            };
        }
    }
    // 7. More restarts first.
    let (xa, xb) = (max_restarts(a), max_restarts(b));
    if xa.0 != xb.0 {
        return xb.0.cmp(&xa.0);
    }
    if xa.1 != xb.1 {
        return xb.1.cmp(&xa.1);
    }
    // 8. Newer first (logarithmic buckets, then uid).
    let (ta, tb) = (
        a.metadata.creation_timestamp.as_ref().map(|t| t.0),
        b.metadata.creation_timestamp.as_ref().map(|t| t.0),
    );
    if ta != tb {
        return match (ta, tb) {
            (Some(x), Some(y)) => match log_rank_diff(x, y, now) {
                0 => uid_order(a, b),
                d if d < 0 => Ordering::Less,
                _ => Ordering::Greater,
            },
            _ => after_or_zero(ta, tb),
        };
    }
    Ordering::Equal
}

/// Sorts pods so that the ones to delete first come first.
pub(crate) fn sort_for_deletion(pods: &mut [PodRef], on_node: &HashMap<String, usize>, now: Timestamp) {
    let rank = |p: &Pod| on_node.get(node_name(p)).copied().unwrap_or(0);
    pods.sort_by(|a, b| deletion_order(a, rank(a), b, rank(b), now));
}

/// Drops nulls, empty arrays and empty objects, so that values equal up to Go's nil-versus-empty
/// distinction compare equal (as `apiequality.Semantic.DeepEqual` treats them).
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => {
            for x in a.iter_mut() {
                prune(x);
            }
            !a.is_empty()
        }
        Value::Object(m) => {
            m.retain(|_, x| prune(x));
            !m.is_empty()
        }
        _ => true,
    }
}

/// A template as the API server would hold it (pod spec defaults applied), with `strip_label`
/// removed from its labels, normalised for comparison and hashing.
pub(crate) fn template_key(template: &PodTemplateSpec, strip_label: Option<&str>) -> Value {
    let mut t = template.clone();
    if let Some(spec) = t.spec.as_mut() {
        crate::defaults::pod_spec(spec);
    }
    if let (Some(label), Some(labels)) = (strip_label, t.metadata.as_mut().and_then(|m| m.labels.as_mut())) {
        labels.remove(label);
    }
    let mut v = serde_json::to_value(&t).unwrap_or(Value::Null);
    prune(&mut v);
    v
}

/// `controller.ComputeHash`: FNV-32a over the template (and the collision count), encoded with
/// the alphabet Kubernetes uses for generated names.
pub(crate) fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let key = template_key(template, None);
    let mut bytes = serde_json::to_vec(&key).unwrap_or_default();
    if let Some(c) = collision_count {
        let mut extra = [0u8; 8];
        extra[..4].copy_from_slice(&(c as u32).to_le_bytes());
        bytes.extend_from_slice(&extra);
    }
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::controllers::Behaviour;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{Container, Namespace, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A store with the `default` namespace.
    pub(crate) fn store() -> Store {
        let mut s = Store::new(1000, tokio::sync::broadcast::channel(16).0);
        let mut ns = Object::Namespace(Namespace {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        api::prepare_for_create(&mut ns, t0());
        crate::defaults::apply(&mut ns);
        s.insert(ns);
        s
    }

    /// The tests' start time.
    pub(crate) fn t0() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// `t0` plus `secs` seconds.
    pub(crate) fn at(secs: i64) -> Timestamp {
        t0() + SignedDuration::from_secs(secs)
    }

    /// Runs `f` with a context at `now`.
    pub(crate) fn with_ctx<R>(now: Timestamp, f: impl FnOnce(&Ctx) -> R) -> R {
        let b = Behaviour::default();
        let ctx = Ctx {
            now,
            behaviour: &b,
            version: "1.33",
        };
        f(&ctx)
    }

    /// A pod template with `labels` and one container running `image`.
    pub(crate) fn template(labels: &[(&str, &str)], image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    /// A label selector on `labels`.
    pub(crate) fn selector(labels: &[(&str, &str)]) -> K8sSelector {
        K8sSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// Inserts an object as the API server would create it.
    pub(crate) fn insert(store: &mut Store, now: Timestamp, obj: Object) -> Object {
        let e = create(store, now, obj);
        e.map(|e| (*e.obj).clone())
            .unwrap_or_else(|| panic!("object exists already"))
    }

    /// All pods, typed.
    pub(crate) fn pods(store: &Store) -> Vec<Pod> {
        store
            .list(Kind::Pod, None)
            .filter_map(|e| as_pod(&e.obj).cloned())
            .collect()
    }

    /// Pods not terminating.
    pub(crate) fn live_pods(store: &Store) -> Vec<Pod> {
        pods(store)
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Pods controlled by the object with `uid`.
    pub(crate) fn pods_of(store: &Store, uid: &str) -> Vec<Pod> {
        pods(store)
            .into_iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|c| c.uid == uid))
            .collect()
    }

    /// One ReplicaSet, typed.
    pub(crate) fn get_rs(store: &Store, name: &str) -> ReplicaSet {
        match store.get_obj(Kind::ReplicaSet, "default", name).as_deref() {
            Some(Object::ReplicaSet(rs)) => rs.clone(),
            _ => panic!("no replicaset {name}"),
        }
    }

    /// A fake scheduler and kubelet: binds unscheduled pods to `node`, makes pods Running and
    /// Ready (except those whose name is in `not_ready`), and removes terminating pods.
    pub(crate) fn kubelet(store: &mut Store, now: Timestamp, node: &str, not_ready: &[&str]) {
        for pod in pods(store) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                store.remove(Kind::Pod, "default", &name);
                continue;
            }
            let mut p = pod.clone();
            let spec = p.spec.get_or_insert_with(Default::default);
            if spec.node_name.is_none() {
                spec.node_name = Some(node.to_string());
            }
            let status = p.status.get_or_insert_with(Default::default);
            status.phase = Some("Running".into());
            if !not_ready.contains(&name.as_str()) && !is_pod_ready(&pod) {
                status.conditions = Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(now)),
                    ..Default::default()
                }]);
            }
            if Object::Pod(p.clone()) != Object::Pod(pod) {
                store.replace(Object::Pod(p));
            }
        }
    }

    fn new_rs(store: &mut Store, name: &str, replicas: i32) -> ReplicaSet {
        let rs = Object::ReplicaSet(ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: selector(&[("app", name)]),
                template: Some(template(&[("app", name)], "nginx:1")),
                ..Default::default()
            }),
            status: None,
        });
        match insert(store, t0(), rs) {
            Object::ReplicaSet(rs) => rs,
            _ => unreachable!(),
        }
    }

    fn set_replicas(store: &mut Store, name: &str, n: i32) {
        let mut rs = get_rs(store, name);
        rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
        update_spec(store, Object::ReplicaSet(rs));
    }

    fn events(store: &Store, reason: &str) -> Vec<String> {
        store
            .list(Kind::Event, None)
            .filter_map(|e| match e.obj.as_ref() {
                Object::Event(ev) if ev.reason.as_deref() == Some(reason) => ev.message.clone(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn creates_pods_and_reports_status() {
        let mut s = store();
        let rs = new_rs(&mut s, "web", 3);
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        with_ctx(t0(), |ctx| reconcile(&mut s, ctx));
        let owned = pods_of(&s, &uid);
        assert_eq!(owned.len(), 3);
        for p in &owned {
            let name = p.metadata.name.clone().unwrap_or_default();
            assert!(name.starts_with("web-") && name.len() == 9, "{name}");
            assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
            assert_eq!(
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app"))
                    .map(String::as_str),
                Some("web")
            );
            let c = controller_of(&p.metadata)
                .cloned()
                .unwrap_or_else(|| panic!("no controller"));
            assert_eq!(
                (c.kind.as_str(), c.name.as_str(), c.block_owner_deletion),
                ("ReplicaSet", "web", Some(true))
            );
            assert!(p.spec.as_ref().is_some_and(|s| s.node_name.is_none()));
        }
        // record_event names events `<object>.<now>`, so one pass keeps only its last event.
        let created = events(&s, "SuccessfulCreate");
        assert!(
            !created.is_empty() && created.iter().all(|m| m.starts_with("Created pod: web-")),
            "{created:?}"
        );
        let st = get_rs(&s, "web").status.unwrap_or_default();
        assert_eq!(
            (
                st.replicas,
                st.ready_replicas,
                st.available_replicas,
                st.fully_labeled_replicas
            ),
            (3, None, None, Some(3))
        );
        assert_eq!(st.observed_generation, Some(1));

        kubelet(&mut s, at(1), "node-1", &[]);
        with_ctx(at(2), |ctx| reconcile(&mut s, ctx));
        let st = get_rs(&s, "web").status.unwrap_or_default();
        assert_eq!(
            (st.replicas, st.ready_replicas, st.available_replicas),
            (3, Some(3), Some(3))
        );

        // Idle: nothing is written.
        let rv = s.rv();
        with_ctx(at(3), |ctx| reconcile(&mut s, ctx));
        assert_eq!(s.rv(), rv);
    }

    #[test]
    fn replaces_a_terminating_pod_at_once() {
        let mut s = store();
        let rs = new_rs(&mut s, "web", 2);
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        with_ctx(t0(), |ctx| reconcile(&mut s, ctx));
        kubelet(&mut s, at(1), "node-1", &[]);
        let victim = pods_of(&s, &uid)[0].metadata.name.clone().unwrap_or_default();
        let _ = delete_pod(&mut s, at(2), "default", &victim, None);
        assert!(
            pods_of(&s, &uid)
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some()),
            "bound pod terminates gracefully"
        );
        with_ctx(at(2), |ctx| reconcile(&mut s, ctx));
        let all = pods_of(&s, &uid);
        assert_eq!(all.len(), 3, "replacement made while the old pod terminates");
        assert_eq!(all.iter().filter(|p| is_pod_active(p)).count(), 2);
        assert_eq!(get_rs(&s, "web").status.map(|s| s.replicas), Some(2));
    }

    #[test]
    fn scale_down_deletes_not_ready_pods_first() {
        let mut s = store();
        let rs = new_rs(&mut s, "web", 4);
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        with_ctx(t0(), |ctx| reconcile(&mut s, ctx));
        let names: Vec<String> = pods_of(&s, &uid)
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        kubelet(&mut s, at(1), "node-1", &[names[1].as_str(), names[3].as_str()]);
        set_replicas(&mut s, "web", 2);
        with_ctx(at(5), |ctx| reconcile(&mut s, ctx));
        let left: Vec<String> = pods_of(&s, &uid)
            .iter()
            .filter(|p| is_pod_active(p))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(left.len(), 2);
        assert!(
            left.contains(&names[0]) && left.contains(&names[2]),
            "ready pods kept: {left:?}"
        );
        let deleted = events(&s, "SuccessfulDelete");
        assert!(
            !deleted.is_empty() && deleted.iter().all(|m| m.starts_with("Deleted pod: web-")),
            "{deleted:?}"
        );
        let st = get_rs(&s, "web").status.unwrap_or_default();
        assert_eq!(
            (st.replicas, st.ready_replicas, st.observed_generation),
            (2, Some(2), Some(2))
        );
    }

    #[test]
    fn adopts_orphans_and_releases_mismatches() {
        let mut s = store();
        let mut orphan = pod_from_template(
            &template(&[("app", "web")], "nginx:1"),
            "x",
            "default",
            controller_ref(Kind::ReplicaSet, &ObjectMeta::default()),
        );
        orphan.metadata.owner_references = None;
        orphan.metadata.name = Some("stray".into());
        insert(&mut s, t0(), Object::Pod(orphan));
        let rs = new_rs(&mut s, "web", 1);
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        with_ctx(t0(), |ctx| reconcile(&mut s, ctx));
        let owned = pods_of(&s, &uid);
        assert_eq!(owned.len(), 1, "the orphan is adopted instead of creating a pod");
        assert_eq!(owned[0].metadata.name.as_deref(), Some("stray"));

        // Relabel it: released, and a replacement is made.
        let mut p = owned[0].clone();
        p.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        s.replace(Object::Pod(p));
        with_ctx(at(1), |ctx| reconcile(&mut s, ctx));
        let owned = pods_of(&s, &uid);
        assert_eq!(owned.len(), 1);
        assert_ne!(owned[0].metadata.name.as_deref(), Some("stray"));
        assert!(pods(&s)
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("stray") && p.metadata.owner_references.is_none()));
    }

    #[test]
    fn min_ready_seconds_sets_a_deadline() {
        let mut s = store();
        let mut rs = new_rs(&mut s, "web", 1);
        rs.spec.get_or_insert_with(Default::default).min_ready_seconds = Some(10);
        update_spec(&mut s, Object::ReplicaSet(rs));
        with_ctx(t0(), |ctx| reconcile(&mut s, ctx));
        kubelet(&mut s, at(1), "node-1", &[]);
        let next = with_ctx(at(2), |ctx| reconcile(&mut s, ctx));
        assert_eq!(get_rs(&s, "web").status.and_then(|s| s.available_replicas), None);
        let due = next.0.unwrap_or_else(|| panic!("no deadline"));
        assert!(due > at(11) && due < at(12), "{due}");
        with_ctx(at(12), |ctx| reconcile(&mut s, ctx));
        assert_eq!(
            get_rs(&s, "web").status.and_then(|s| s.available_replicas),
            Some(1)
        );
    }

    #[test]
    fn deletion_order_ranks_like_active_pods() {
        let now = at(10_000);
        let mk = |name: &str, node: Option<&str>, phase: &str, ready: Option<i64>, created: i64| {
            let mut p = Pod::default();
            p.metadata.name = Some(name.into());
            p.metadata.uid = Some(name.into());
            p.metadata.creation_timestamp = Some(Time(at(created)));
            p.spec = Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            });
            p.status = Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.map(|r| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(r))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            });
            p
        };
        let mut restarted = mk("restarted", Some("n"), "Running", Some(10), 0);
        if let Some(st) = restarted.status.as_mut() {
            st.container_statuses = Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: "app".into(),
                restart_count: 3,
                ..Default::default()
            }]);
        }
        let mut v: Vec<PodRef> = vec![
            mk("old-ready", Some("n"), "Running", Some(10), 0),
            restarted,
            mk("new-ready", Some("n"), "Running", Some(9_000), 8_999),
            mk("not-ready", Some("n"), "Running", None, 5),
            mk("pending", Some("n"), "Pending", None, 5),
            mk("unscheduled", None, "Pending", None, 5),
        ]
        .into_iter()
        .map(PodRef::owned)
        .collect();
        sort_for_deletion(&mut v, &HashMap::new(), now);
        let order: Vec<&str> = v.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "new-ready",
                "restarted",
                "old-ready"
            ]
        );
        // Doubled up: of two otherwise equal pods, the one sharing its node goes first.
        let mut v: Vec<PodRef> = vec![
            mk("alone", Some("a"), "Running", Some(10), 0),
            mk("crowded", Some("b"), "Running", Some(10), 0),
        ]
        .into_iter()
        .map(PodRef::owned)
        .collect();
        let on_node: HashMap<String, usize> = [("a".to_string(), 1), ("b".to_string(), 3)].into();
        sort_for_deletion(&mut v, &on_node, now);
        assert_eq!(v[0].metadata.name.as_deref(), Some("crowded"));
    }

    #[test]
    fn hash_is_stable_and_template_sensitive() {
        let a = template(&[("app", "web")], "nginx:1");
        let b = template(&[("app", "web")], "nginx:2");
        assert_eq!(compute_hash(&a, None), compute_hash(&a.clone(), None));
        assert_ne!(compute_hash(&a, None), compute_hash(&b, None));
        assert_ne!(compute_hash(&a, None), compute_hash(&a, Some(1)));
        let mut defaulted = a.clone();
        if let Some(spec) = defaulted.spec.as_mut() {
            crate::defaults::pod_spec(spec);
        }
        assert_eq!(
            compute_hash(&a, None),
            compute_hash(&defaulted, None),
            "defaults do not change the hash"
        );
        assert!(compute_hash(&a, None)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
