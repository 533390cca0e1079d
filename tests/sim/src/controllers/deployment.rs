//! The Deployment controller (`pkg/controller/deployment`): owns ReplicaSets named
//! `<deployment>-<pod-template-hash>`, rolls template changes out per RollingUpdate
//! (maxSurge/maxUnavailable) or Recreate, scales proportionally across ReplicaSets mid-rollout,
//! keeps `revisionHistoryLimit` old ReplicaSets, and reports the status and the Available and
//! Progressing conditions that `kubectl rollout status` reads.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::replicaset::{
    adopt, as_pod, compute_hash, controller_of, controller_ref, emit, emit_once, is_pod_terminal,
    namespace_active, non_zero, release, selector_is_empty, template_key, update_spec, PodIndex,
};
use super::{create, update_if_changed, Ctx, Next};
use crate::api::{self, DeleteOptions};
use crate::object::Object;
use crate::resources::Kind;
use crate::selector::LabelSelector;
use crate::store::Store;

const COMPONENT: &str = "deployment-controller";
/// The label (and selector term) that tells a Deployment's ReplicaSets apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// A ReplicaSet's (and its Deployment's) rollout revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last scaled the ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last scaled the ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deployment.kubernetes.io/error-selector-overlapping-with",
    "deployment.kubernetes.io/selector-updated-at",
];
const MAX_REV_HISTORY_CHARS: usize = 2000;

const AVAILABLE: &str = "Available";
const PROGRESSING: &str = "Progressing";
const REPLICA_FAILURE: &str = "ReplicaFailure";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";

/// Reconciles every Deployment once. Wants to run again when a rollout's progress deadline
/// would pass.
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    let mut next = Next::default();
    let deployments: Vec<Arc<Object>> = store
        .list(Kind::Deployment, None)
        .map(|e| e.obj.clone())
        .collect();
    if deployments.is_empty() {
        return next;
    }
    let index = RsIndex::build(store);
    let mut pods: Option<PodIndex> = None;
    for obj in &deployments {
        if let Object::Deployment(d) = obj.as_ref() {
            sync_deployment(store, ctx.now, d, &index, &mut pods, &mut next);
        }
    }
    next
}

/// ReplicaSets indexed once per pass: by controller uid, and controller-less ones by namespace.
struct RsIndex {
    by_controller: HashMap<String, Vec<Arc<Object>>>,
    orphans: HashMap<String, Vec<Arc<Object>>>,
}

impl RsIndex {
    fn build(store: &Store) -> RsIndex {
        let mut by_controller: HashMap<String, Vec<Arc<Object>>> = HashMap::new();
        let mut orphans: HashMap<String, Vec<Arc<Object>>> = HashMap::new();
        for e in store.list(Kind::ReplicaSet, None) {
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
        RsIndex {
            by_controller,
            orphans,
        }
    }

    fn candidates<'a>(&'a self, uid: &str, ns: &str) -> impl Iterator<Item = &'a ReplicaSet> + 'a {
        let owned = self.by_controller.get(uid).map_or(&[][..], Vec::as_slice);
        let orphans = self.orphans.get(ns).map_or(&[][..], Vec::as_slice);
        owned.iter().chain(orphans).filter_map(|o| match o.as_ref() {
            Object::ReplicaSet(rs) => Some(rs),
            _ => None,
        })
    }
}

fn sync_deployment(
    store: &mut Store,
    now: Timestamp,
    d: &Deployment,
    index: &RsIndex,
    pods: &mut Option<PodIndex>,
    next: &mut Next,
) {
    let Some(spec) = d.spec.as_ref() else { return };
    let Some(uid) = d.metadata.uid.as_deref() else {
        return;
    };
    let ns = d.metadata.namespace.as_deref().unwrap_or("");
    if selector_is_empty(&spec.selector) {
        let obj = Object::Deployment(d.clone());
        emit_once(
            store,
            now,
            &obj,
            "Warning",
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.",
            COMPONENT,
        );
        let mut cur = d.clone();
        let status = cur.status.get_or_insert_with(Default::default);
        if status.observed_generation < d.metadata.generation {
            status.observed_generation = d.metadata.generation;
            update_if_changed(store, Object::Deployment(cur));
        }
        return;
    }
    let Ok(selector) = LabelSelector::from_k8s(&spec.selector) else {
        return;
    };
    let rss = claim_replica_sets(store, d, &selector, index.candidates(uid, ns));
    let keys = rss
        .iter()
        .map(|rs| {
            let key = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(|t| template_key(t, Some(POD_TEMPLATE_HASH)));
            (rs_uid(rs).to_string(), key.unwrap_or(Value::Null))
        })
        .collect();
    let mut run = Run {
        store,
        now,
        d: d.clone(),
        d_key: template_key(&spec.template, None),
        keys,
        rss,
        new_uid: None,
    };

    if d.metadata.deletion_timestamp.is_some() {
        if run.get_new_replica_set(false).is_ok() {
            run.sync_deployment_status();
        }
    } else {
        run.check_paused_conditions();
        if paused(d) || run.is_scaling_event() {
            run.sync();
        } else if is_recreate(d) {
            if pods.is_none() {
                *pods = Some(PodIndex::build(run.store));
            }
            if let Some(pods) = pods.as_ref() {
                run.rollout_recreate(pods, &selector);
            }
        } else {
            run.rollout_rolling();
        }
    }
    run.finish(next);
}

/// `ClaimReplicaSets`: keeps owned ReplicaSets whose labels match, releases the others, adopts
/// matching orphans (neither while the Deployment is being deleted).
fn claim_replica_sets<'a>(
    store: &mut Store,
    d: &Deployment,
    selector: &LabelSelector,
    candidates: impl Iterator<Item = &'a ReplicaSet>,
) -> Vec<ReplicaSet> {
    let uid = d.metadata.uid.as_deref().unwrap_or("");
    let ns = d.metadata.namespace.as_deref().unwrap_or("");
    let deleting = d.metadata.deletion_timestamp.is_some();
    let mut out = Vec::new();
    for rs in candidates {
        if rs.metadata.namespace.as_deref().unwrap_or("") != ns {
            continue;
        }
        let matches = selector.matches(rs.metadata.labels.as_ref());
        match controller_of(&rs.metadata) {
            Some(c) if c.uid == uid => {
                if matches {
                    out.push(rs.clone());
                } else if !deleting {
                    release(store, Object::ReplicaSet(rs.clone()), uid);
                }
            }
            Some(_) => {}
            None => {
                if deleting || !matches || rs.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let owner = controller_ref(Kind::Deployment, &d.metadata);
                if let Object::ReplicaSet(adopted) = adopt(store, Object::ReplicaSet(rs.clone()), owner) {
                    out.push(adopted);
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Field access with the apps/v1 defaults the API server would have filled in.
// ---------------------------------------------------------------------------------------------

fn d_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    let secs = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    (secs != i32::MAX).then_some(secs)
}

fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)
}

fn rs_uid(rs: &ReplicaSet) -> &str {
    rs.metadata.uid.as_deref().unwrap_or("")
}

fn rs_name(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or("")
}

/// `ReplicaSetsByCreationTimestamp`: older first, then by name.
fn by_creation(a: &ObjectMeta, b: &ObjectMeta) -> Ordering {
    let ta = a.creation_timestamp.as_ref().map(|t| t.0);
    let tb = b.creation_timestamp.as_ref().map(|t| t.0);
    ta.cmp(&tb).then_with(|| a.name.cmp(&b.name))
}

/// `intstr.GetScaledValueFromIntOrPercent`.
fn scaled(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => match s.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) {
            Some(p) => {
                let x = p * f64::from(total) / 100.0;
                (if round_up { x.ceil() } else { x.floor() }) as i32
            }
            None => s.trim().parse().unwrap_or(0),
        },
    }
}

fn rolling_params(d: &Deployment) -> (IntOrString, IntOrString) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let default = || IntOrString::String("25%".into());
    (
        ru.and_then(|r| r.max_surge.clone()).unwrap_or_else(default),
        ru.and_then(|r| r.max_unavailable.clone()).unwrap_or_else(default),
    )
}

/// `ResolveFenceposts`: surge rounds up, unavailability down; both zero means one unavailable.
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let (surge, unavailable) = rolling_params(d);
    let desired = d_replicas(d);
    let (s, u) = (
        scaled(&surge, desired, true),
        scaled(&unavailable, desired, false),
    );
    if s == 0 && u == 0 {
        (0, 1)
    } else {
        (s, u)
    }
}

fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) {
        0
    } else {
        fenceposts(d).0
    }
}

fn max_unavailable(d: &Deployment) -> i32 {
    let desired = d_replicas(d);
    if is_recreate(d) || desired == 0 {
        0
    } else {
        fenceposts(d).1.min(desired)
    }
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(&rs.metadata, key)?.parse().ok()
}

/// The revision annotation (0 when absent, an error when unparseable).
fn revision(rs: &ReplicaSet) -> Result<i64, ()> {
    match annotation(&rs.metadata, REVISION) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| ()),
    }
}

fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let anns = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut updated = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if anns.get(key) != Some(&value) {
            anns.insert(key.to_string(), value);
            updated = true;
        }
    }
    updated
}

fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(&rs.metadata, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(&rs.metadata, MAX_REPLICAS) != Some(max.to_string().as_str())
}

/// `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises the revision
/// (keeping the history of revisions a rolled-back-to ReplicaSet served), and on creation sets
/// the replica annotations.
fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: &str, exists: bool) -> bool {
    let mut changed = false;
    let anns = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if SKIPPED_ANNOTATIONS.contains(&k.as_str()) || anns.get(k) == Some(v) {
            continue;
        }
        anns.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = anns.get(REVISION).cloned();
    let old_int = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    let Ok(new_int) = new_revision.parse::<i64>() else {
        return false;
    };
    if old_int < new_int {
        anns.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = anns.get(REVISION_HISTORY).cloned().unwrap_or_default();
            let olds: Vec<&str> = history.split(',').collect();
            if olds.first().is_none_or(|o| o.is_empty()) {
                anns.insert(REVISION_HISTORY.to_string(), old);
            } else {
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < olds.len() {
                    total -= olds[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    let mut kept: Vec<&str> = olds[start..].to_vec();
                    kept.push(&old);
                    anns.insert(REVISION_HISTORY.to_string(), kept.join(","));
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, d_replicas(d), d_replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let anns = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if anns.get(REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    anns.insert(REVISION.to_string(), revision.to_string());
    true
}

// ---------------------------------------------------------------------------------------------
// Conditions.
// ---------------------------------------------------------------------------------------------

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(api::time(now)),
        last_transition_time: Some(api::time(now)),
    }
}

fn get_condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// `SetDeploymentCondition`: no-op when status and reason are unchanged; keeps the transition
/// time when only the reason changes; the condition moves to the end of the list.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = get_condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    let conds = status.conditions.get_or_insert_with(Vec::new);
    conds.retain(|c| c.type_ != cond.type_);
    conds.push(cond);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conds) = status.conditions.as_mut() {
        conds.retain(|c| c.type_ != type_);
        if conds.is_empty() {
            status.conditions = None;
        }
    }
}

fn v(n: Option<i32>) -> i32 {
    n.unwrap_or(0)
}

/// `DeploymentComplete`: every desired replica updated and available, no old ones, observed.
fn deployment_complete(d: &Deployment, st: &DeploymentStatus) -> bool {
    let want = d_replicas(d);
    v(st.updated_replicas) == want
        && v(st.replicas) == want
        && v(st.available_replicas) == want
        && st.observed_generation >= d.metadata.generation
}

/// `DeploymentProgressing`: more updated, ready or available replicas, or fewer old ones.
fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old = v(old.replicas) - v(old.updated_replicas);
    let new_old = v(new.replicas) - v(new.updated_replicas);
    v(new.updated_replicas) > v(old.updated_replicas)
        || new_old < old_old
        || v(new.ready_replicas) > v(old.ready_replicas)
        || v(new.available_replicas) > v(old.available_replicas)
}

/// `DeploymentTimedOut`: the Progressing condition has not moved for `progressDeadlineSeconds`.
fn deployment_timed_out(d: &Deployment, st: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(cond) = get_condition(st, PROGRESSING) else {
        return false;
    };
    match cond.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => cond
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0 + SignedDuration::from_secs(i64::from(deadline)) < now),
    }
}

// ---------------------------------------------------------------------------------------------
// One Deployment's sync.
// ---------------------------------------------------------------------------------------------

/// The state of one sync: the Deployment (status and annotations are changed in place and
/// written at the end) and its ReplicaSets (written as they change).
struct Run<'s> {
    store: &'s mut Store,
    now: Timestamp,
    d: Deployment,
    /// The Deployment's template, normalised.
    d_key: Value,
    /// Each ReplicaSet's template without the hash label, normalised, by uid.
    keys: HashMap<String, Value>,
    rss: Vec<ReplicaSet>,
    new_uid: Option<String>,
}

impl Run<'_> {
    fn status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    fn status_mut(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_with(Default::default)
    }

    fn find(&self, uid: &str) -> Option<usize> {
        self.rss.iter().position(|rs| rs_uid(rs) == uid)
    }

    fn new_rs(&self) -> Option<&ReplicaSet> {
        let uid = self.new_uid.as_deref()?;
        self.rss.iter().find(|rs| rs_uid(rs) == uid)
    }

    fn is_new(&self, rs: &ReplicaSet) -> bool {
        self.new_uid.as_deref() == Some(rs_uid(rs))
    }

    /// Uids of the old ReplicaSets (all but the new one), oldest first.
    fn old_uids(&self) -> Vec<String> {
        let mut olds: Vec<&ReplicaSet> = self.rss.iter().filter(|rs| !self.is_new(rs)).collect();
        olds.sort_by(|a, b| by_creation(&a.metadata, &b.metadata));
        olds.into_iter().map(|rs| rs_uid(rs).to_string()).collect()
    }

    fn get(&self, uid: &str) -> Option<&ReplicaSet> {
        self.find(uid).map(|i| &self.rss[i])
    }

    fn replicas_of(&self, uid: &str) -> i32 {
        self.get(uid).map_or(0, rs_replicas)
    }

    fn total_replicas(&self) -> i32 {
        self.rss.iter().map(rs_replicas).sum()
    }

    fn event(&mut self, message: &str) {
        let obj = Object::Deployment(self.d.clone());
        emit(
            self.store,
            self.now,
            &obj,
            "Normal",
            "ScalingReplicaSet",
            message,
            COMPONENT,
        );
    }

    /// Writes a ReplicaSet and refreshes the local copy from the store.
    fn write_rs(&mut self, rs: ReplicaSet) {
        let (ns, name, uid) = (
            rs.metadata.namespace.clone().unwrap_or_default(),
            rs_name(&rs).to_string(),
            rs_uid(&rs).to_string(),
        );
        update_spec(self.store, Object::ReplicaSet(rs));
        if let (Some(i), Some(Object::ReplicaSet(cur))) = (
            self.find(&uid),
            self.store.get_obj(Kind::ReplicaSet, &ns, &name).as_deref(),
        ) {
            self.rss[i] = cur.clone();
        }
    }

    /// `getNewReplicaSet`: finds the ReplicaSet whose template is the Deployment's (syncing its
    /// annotations and the Deployment's revision), or creates it when `create`. `Err` stops the
    /// sync (hash collision, terminating namespace).
    fn get_new_replica_set(&mut self, create_new: bool) -> Result<(), ()> {
        self.rss.sort_by(|a, b| by_creation(&a.metadata, &b.metadata));
        let existing = self
            .rss
            .iter()
            .position(|rs| self.keys.get(rs_uid(rs)) == Some(&self.d_key));
        let max_old = self
            .rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != existing)
            .filter_map(|(_, rs)| revision(rs).ok())
            .max()
            .unwrap_or(0)
            .max(0);
        let new_revision = (max_old + 1).to_string();
        let has_deadline = progress_deadline(&self.d).is_some();

        if let Some(i) = existing {
            let mut copy = self.rss[i].clone();
            self.new_uid = Some(rs_uid(&copy).to_string());
            let annotations_changed = set_new_rs_annotations(&self.d, &mut copy, &new_revision, true);
            let want_min_ready = min_ready_seconds(&self.d);
            let spec = copy.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != want_min_ready;
            if annotations_changed || min_ready_changed {
                if min_ready_changed {
                    spec.min_ready_seconds = non_zero(want_min_ready);
                }
                self.write_rs(copy);
                return Ok(());
            }
            let rev = annotation(&copy.metadata, REVISION).unwrap_or("").to_string();
            set_deployment_revision(&mut self.d, &rev);
            if has_deadline && get_condition(&self.status(), PROGRESSING).is_none() {
                let cond = new_condition(
                    PROGRESSING,
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{}\"", rs_name(&copy)),
                    self.now,
                );
                set_condition(self.status_mut(), cond);
            }
            return Ok(());
        }

        self.new_uid = None;
        if !create_new {
            return Ok(());
        }
        let ns = self.d.metadata.namespace.clone().unwrap_or_default();
        if !namespace_active(self.store, &ns) {
            return Err(());
        }
        let Some(spec) = self.d.spec.as_ref() else {
            return Err(());
        };
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&spec.template, collision_count);
        let mut template: PodTemplateSpec = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.metadata.name.as_deref().unwrap_or(""));
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![controller_ref(Kind::Deployment, &self.d.metadata)]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let count = self.new_rs_new_replicas(0);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(count);
        }
        set_new_rs_annotations(&self.d, &mut rs, &new_revision, false);

        let d_uid = self.d.metadata.uid.clone().unwrap_or_default();
        if let Some(cur) = self.store.get_obj(Kind::ReplicaSet, &ns, &name) {
            // Already there: ours (a stale view) or a hash collision.
            if let Object::ReplicaSet(cur) = cur.as_ref() {
                let ours = controller_of(&cur.metadata).is_some_and(|c| c.uid == d_uid);
                let same = cur
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .map(|t| template_key(t, Some(POD_TEMPLATE_HASH)))
                    == Some(self.d_key.clone());
                if ours && same {
                    self.new_uid = Some(rs_uid(cur).to_string());
                    if self.find(rs_uid(cur)).is_none() {
                        self.keys.insert(rs_uid(cur).to_string(), self.d_key.clone());
                        self.rss.push(cur.clone());
                    }
                    set_deployment_revision(&mut self.d, &new_revision);
                    return Ok(());
                }
            }
            let st = self.status_mut();
            st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
            return Err(());
        }
        let Some(entry) = create(self.store, self.now, Object::ReplicaSet(rs)) else {
            return Err(());
        };
        let Object::ReplicaSet(created) = entry.obj.as_ref() else {
            return Err(());
        };
        self.new_uid = Some(rs_uid(created).to_string());
        self.keys.insert(rs_uid(created).to_string(), self.d_key.clone());
        self.rss.push(created.clone());
        if count > 0 {
            self.event(&format!("Scaled up replica set {name} to {count}"));
        }
        set_deployment_revision(&mut self.d, &new_revision);
        if has_deadline {
            let cond = new_condition(
                PROGRESSING,
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{name}\""),
                self.now,
            );
            set_condition(self.status_mut(), cond);
        }
        Ok(())
    }

    /// `NewRSNewReplicas`: how far the new ReplicaSet may grow now.
    fn new_rs_new_replicas(&self, new_replicas: i32) -> i32 {
        let want = d_replicas(&self.d);
        if is_recreate(&self.d) {
            return want;
        }
        let surge = scaled(&rolling_params(&self.d).0, want, true);
        let current = self.total_replicas();
        let max_total = want + surge;
        if current >= max_total {
            return new_replicas;
        }
        new_replicas + (max_total - current).min(want - new_replicas)
    }

    /// `scaleReplicaSet`: sets the size and the replica annotations; records an event when the
    /// size changed. Returns whether it did.
    fn scale_rs(&mut self, uid: &str, new_scale: i32, operation: &str) -> bool {
        let Some(rs) = self.get(uid) else { return false };
        let old = rs_replicas(rs);
        let desired = d_replicas(&self.d);
        let max = desired + max_surge(&self.d);
        let size_changed = old != new_scale;
        if !size_changed && !replicas_annotations_need_update(rs, desired, max) {
            return false;
        }
        let mut copy = rs.clone();
        copy.spec.get_or_insert_with(Default::default).replicas = Some(new_scale);
        set_replicas_annotations(&mut copy, desired, max);
        let name = rs_name(&copy).to_string();
        self.write_rs(copy);
        if size_changed {
            self.event(&format!(
                "Scaled {operation} replica set {name} to {new_scale} from {old}"
            ));
        }
        size_changed
    }

    /// `scaleReplicaSetAndRecordEvent`.
    fn scale_rs_and_record(&mut self, uid: &str, new_scale: i32) -> bool {
        let current = self.replicas_of(uid);
        if current == new_scale {
            return false;
        }
        let op = if current < new_scale { "up" } else { "down" };
        self.scale_rs(uid, new_scale, op)
    }

    /// `calculateStatus`.
    fn calculate_status(&self) -> DeploymentStatus {
        let available: i32 = self.rss.iter().map(rs_available).sum();
        let total = self.total_replicas();
        let unavailable = (total - available).max(0);
        let old = self.status();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: non_zero(self.rss.iter().map(rs_status_replicas).sum()),
            updated_replicas: non_zero(self.new_rs().map_or(0, rs_status_replicas)),
            ready_replicas: non_zero(self.rss.iter().map(rs_ready).sum()),
            available_replicas: non_zero(available),
            unavailable_replicas: non_zero(unavailable),
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
            terminating_replicas: old.terminating_replicas,
        };
        let cond = if available >= d_replicas(&self.d) - max_unavailable(&self.d) {
            new_condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                self.now,
            )
        } else {
            new_condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                self.now,
            )
        };
        set_condition(&mut status, cond);
        status
    }

    /// `syncDeploymentStatus`.
    fn sync_deployment_status(&mut self) {
        self.d.status = Some(self.calculate_status());
    }

    /// `syncRolloutStatus`: status plus the Progressing condition and replica failures.
    fn sync_rollout_status(&mut self) {
        let mut st = self.calculate_status();
        let deadline = progress_deadline(&self.d);
        if deadline.is_none() {
            remove_condition(&mut st, PROGRESSING);
        }
        let old = self.status();
        let current = get_condition(&old, PROGRESSING).cloned();
        let complete_rollout = v(st.replicas) == v(st.updated_replicas)
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
        let new_name = self.new_rs().map(|rs| rs_name(rs).to_string());
        let d_name = self.d.metadata.name.clone().unwrap_or_default();
        let subject = |what: &str| match &new_name {
            Some(n) => format!("ReplicaSet \"{n}\" {what}"),
            None => format!("Deployment \"{d_name}\" {what}"),
        };
        if deadline.is_some() && !complete_rollout {
            if deployment_complete(&self.d, &st) {
                set_condition(
                    &mut st,
                    new_condition(
                        PROGRESSING,
                        "True",
                        NEW_RS_AVAILABLE,
                        subject("has successfully progressed."),
                        self.now,
                    ),
                );
            } else if deployment_progressing(&old, &st) {
                let mut cond = new_condition(
                    PROGRESSING,
                    "True",
                    "ReplicaSetUpdated",
                    subject("is progressing."),
                    self.now,
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        cond.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut st, PROGRESSING);
                }
                set_condition(&mut st, cond);
            } else if deployment_timed_out(&self.d, &st, self.now) {
                set_condition(
                    &mut st,
                    new_condition(
                        PROGRESSING,
                        "False",
                        TIMED_OUT,
                        subject("has timed out progressing."),
                        self.now,
                    ),
                );
            }
        }
        match self.replica_failure() {
            Some(c) => set_condition(&mut st, c),
            None => remove_condition(&mut st, REPLICA_FAILURE),
        }
        self.d.status = Some(st);
    }

    /// `getReplicaFailures`: the new ReplicaSet's ReplicaFailure condition, else any old one's.
    fn replica_failure(&self) -> Option<DeploymentCondition> {
        let of = |rs: &ReplicaSet| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == REPLICA_FAILURE)
                .map(|c| DeploymentCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                    last_update_time: c.last_transition_time.clone(),
                })
        };
        self.new_rs()
            .and_then(of)
            .or_else(|| self.rss.iter().find_map(of))
    }

    /// `checkPausedConditions`.
    fn check_paused_conditions(&mut self) {
        if progress_deadline(&self.d).is_none() {
            return;
        }
        let status = self.status();
        let cond = get_condition(&status, PROGRESSING);
        if cond.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT)) {
            return;
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(PAUSED));
        if paused(&self.d) && !paused_cond {
            let c = new_condition(
                PROGRESSING,
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
                self.now,
            );
            set_condition(self.status_mut(), c);
        } else if !paused(&self.d) && paused_cond {
            let c = new_condition(
                PROGRESSING,
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
                self.now,
            );
            set_condition(self.status_mut(), c);
        }
    }

    /// `isScalingEvent`: an active ReplicaSet was last scaled for another `spec.replicas`.
    fn is_scaling_event(&mut self) -> bool {
        if self.get_new_replica_set(false).is_err() {
            return false;
        }
        let want = d_replicas(&self.d);
        self.rss
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| int_annotation(rs, DESIRED_REPLICAS).is_some_and(|d| d != want))
    }

    /// `sync`: scaling events and paused Deployments.
    fn sync(&mut self) {
        if self.get_new_replica_set(false).is_err() {
            return;
        }
        self.scale();
        if paused(&self.d) {
            self.cleanup();
        }
        self.sync_deployment_status();
    }

    /// `scale`: one active ReplicaSet takes the whole size; otherwise sizes change in
    /// proportion (`GetProportion`), leftovers to the largest.
    fn scale(&mut self) {
        let want = d_replicas(&self.d);
        let mut olds: Vec<String> = self.old_uids();
        olds.reverse(); // newest first, as FindActiveOrLatest sorts them
        let new = self.new_uid.clone();
        let active: Vec<String> = olds
            .iter()
            .chain(new.iter())
            .filter(|u| self.replicas_of(u) > 0)
            .cloned()
            .collect();
        let target = match active.len() {
            0 => new.clone().or_else(|| olds.first().cloned()),
            1 => active.first().cloned(),
            _ => None,
        };
        if let Some(uid) = target {
            if self.replicas_of(&uid) != want {
                self.scale_rs_and_record(&uid, want);
            }
            return;
        }
        if self.is_saturated() {
            for uid in olds
                .iter()
                .filter(|u| self.replicas_of(u) > 0)
                .cloned()
                .collect::<Vec<_>>()
            {
                self.scale_rs_and_record(&uid, 0);
            }
            return;
        }
        if is_recreate(&self.d) {
            return;
        }
        let mut all: Vec<String> = self
            .old_uids()
            .into_iter()
            .chain(new)
            .filter(|u| self.replicas_of(u) > 0)
            .collect();
        let all_replicas: i32 = all.iter().map(|u| self.replicas_of(u)).sum();
        let allowed = if want > 0 { want + max_surge(&self.d) } else { 0 };
        let to_add = allowed - all_replicas;
        let meta = |u: &String| self.get(u).map(|rs| rs.metadata.clone()).unwrap_or_default();
        let op = match to_add.cmp(&0) {
            Ordering::Greater => {
                all.sort_by(|a, b| {
                    self.replicas_of(b)
                        .cmp(&self.replicas_of(a))
                        .then_with(|| by_creation(&meta(b), &meta(a)))
                });
                "up"
            }
            Ordering::Less => {
                all.sort_by(|a, b| {
                    self.replicas_of(b)
                        .cmp(&self.replicas_of(a))
                        .then_with(|| by_creation(&meta(a), &meta(b)))
                });
                "down"
            }
            Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for uid in &all {
            let current = self.replicas_of(uid);
            if to_add != 0 {
                let p = self.proportion(uid, to_add, added);
                sizes.push(current + p);
                added += p;
            } else {
                sizes.push(current);
            }
        }
        for (i, uid) in all.iter().enumerate() {
            if i == 0 && to_add != 0 {
                sizes[0] = (sizes[0] + to_add - added).max(0);
            }
            self.scale_rs(uid, sizes[i], op);
        }
    }

    /// `GetProportion`.
    fn proportion(&self, uid: &str, to_add: i32, added: i32) -> i32 {
        let Some(rs) = self.get(uid) else { return 0 };
        let replicas = rs_replicas(rs);
        if replicas == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// `getReplicaSetFraction`.
    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        let replicas = rs_replicas(rs);
        let want = d_replicas(&self.d);
        if want == 0 {
            return -replicas;
        }
        let deployment_replicas = want + max_surge(&self.d);
        let annotated = int_annotation(rs, MAX_REPLICAS).unwrap_or_else(|| v(self.status().replicas));
        if annotated == 0 {
            return 0;
        }
        let size = f64::from(replicas.saturating_mul(deployment_replicas)) / f64::from(annotated);
        size.round() as i32 - replicas
    }

    /// `IsSaturated`.
    fn is_saturated(&self) -> bool {
        let Some(rs) = self.new_rs() else { return false };
        let want = d_replicas(&self.d);
        int_annotation(rs, DESIRED_REPLICAS) == Some(want)
            && rs_replicas(rs) == want
            && rs_available(rs) == want
    }

    /// `cleanupDeployment`: deletes the oldest old ReplicaSets past `revisionHistoryLimit` that
    /// are fully scaled down and observed.
    fn cleanup(&mut self) {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        if limit == i32::MAX {
            return;
        }
        let mut cleanable: Vec<ReplicaSet> = self
            .rss
            .iter()
            .filter(|rs| !self.is_new(rs) && rs.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return;
        }
        cleanable.sort_by(|a, b| match (revision(a), revision(b)) {
            (Ok(x), Ok(y)) if x != y => x.cmp(&y),
            _ => by_creation(&a.metadata, &b.metadata),
        });
        for rs in cleanable.iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status_replicas(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let ns = rs.metadata.namespace.clone().unwrap_or_default();
            if let Ok(api::Deleted::Gone(_)) = api::delete(
                self.store,
                self.now,
                Kind::ReplicaSet,
                &ns,
                rs_name(rs),
                &DeleteOptions::default(),
            ) {
                let uid = rs_uid(rs).to_string();
                self.rss.retain(|r| rs_uid(r) != uid);
            }
        }
    }

    /// `rolloutRolling`.
    fn rollout_rolling(&mut self) {
        if self.get_new_replica_set(true).is_err() {
            return;
        }
        if self.reconcile_new_replica_set() || self.reconcile_old_replica_sets() {
            self.sync_rollout_status();
            return;
        }
        let status = self.status();
        if deployment_complete(&self.d, &status) {
            self.cleanup();
        }
        self.sync_rollout_status();
    }

    /// `reconcileNewReplicaSet`: grows the new ReplicaSet within maxSurge (or shrinks it to the
    /// desired size).
    fn reconcile_new_replica_set(&mut self) -> bool {
        let Some(uid) = self.new_uid.clone() else {
            return false;
        };
        let current = self.replicas_of(&uid);
        let want = d_replicas(&self.d);
        if current == want {
            return false;
        }
        if current > want {
            return self.scale_rs_and_record(&uid, want);
        }
        let count = self.new_rs_new_replicas(current);
        self.scale_rs_and_record(&uid, count)
    }

    /// `reconcileOldReplicaSets`: shrinks old ReplicaSets, unhealthy replicas first, without
    /// dropping below `replicas - maxUnavailable` available.
    fn reconcile_old_replica_sets(&mut self) -> bool {
        let Some(new) = self.new_rs() else { return false };
        let new_unavailable = rs_replicas(new) - rs_available(new);
        let new_uid = rs_uid(new).to_string();
        let olds: Vec<String> = self
            .old_uids()
            .into_iter()
            .filter(|u| self.replicas_of(u) > 0)
            .collect();
        let old_pods: i32 = olds.iter().map(|u| self.replicas_of(u)).sum();
        if old_pods == 0 {
            return false;
        }
        let all_pods = self.total_replicas();
        let min_available = d_replicas(&self.d) - max_unavailable(&self.d);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let Some(cleaned) = self.cleanup_unhealthy_replicas(&olds, max_scaled_down) else {
            return false;
        };
        let Some(scaled) = self.scale_down_old_for_rolling_update(&olds, &new_uid) else {
            return false;
        };
        cleaned + scaled > 0
    }

    /// `cleanupUnhealthyReplicas`: scales old ReplicaSets down by their unavailable replicas.
    fn cleanup_unhealthy_replicas(&mut self, olds: &[String], max_cleanup: i32) -> Option<i32> {
        let mut total = 0;
        for uid in olds {
            if total >= max_cleanup {
                break;
            }
            let Some(rs) = self.get(uid) else { continue };
            let (replicas, available) = (rs_replicas(rs), rs_available(rs));
            if replicas == 0 || replicas == available {
                continue;
            }
            let count = (max_cleanup - total).min(replicas - available);
            let new_count = replicas - count;
            if new_count > replicas {
                return None;
            }
            self.scale_rs_and_record(uid, new_count);
            total += count;
        }
        Some(total)
    }

    /// `scaleDownOldReplicaSetsForRollingUpdate`.
    fn scale_down_old_for_rolling_update(&mut self, olds: &[String], new_uid: &str) -> Option<i32> {
        let min_available = d_replicas(&self.d) - max_unavailable(&self.d);
        let available: i32 = olds
            .iter()
            .chain(std::iter::once(&new_uid.to_string()))
            .filter_map(|u| self.get(u))
            .map(rs_available)
            .sum();
        if available <= min_available {
            return Some(0);
        }
        let target = available - min_available;
        let mut total = 0;
        for uid in olds {
            if total >= target {
                break;
            }
            let replicas = self.replicas_of(uid);
            if replicas == 0 {
                continue;
            }
            let count = replicas.min(target - total);
            let new_count = replicas - count;
            if new_count > replicas {
                return None;
            }
            self.scale_rs_and_record(uid, new_count);
            total += count;
        }
        Some(total)
    }

    /// `rolloutRecreate`: old ReplicaSets to zero, wait for their pods to go, then the new one.
    fn rollout_recreate(&mut self, pods: &PodIndex, selector: &LabelSelector) {
        if self.get_new_replica_set(false).is_err() {
            return;
        }
        let mut scaled_down = false;
        for uid in self.old_uids() {
            if self.replicas_of(&uid) > 0 && self.scale_rs_and_record(&uid, 0) {
                scaled_down = true;
            }
        }
        if scaled_down || self.old_pods_running(pods, selector) {
            self.sync_rollout_status();
            return;
        }
        if self.new_uid.is_none() && self.get_new_replica_set(true).is_err() {
            return;
        }
        if let Some(uid) = self.new_uid.clone() {
            let want = d_replicas(&self.d);
            self.scale_rs_and_record(&uid, want);
        }
        let status = self.status();
        if deployment_complete(&self.d, &status) {
            self.cleanup();
        }
        self.sync_rollout_status();
    }

    /// `oldPodsRunning`.
    fn old_pods_running(&self, pods: &PodIndex, selector: &LabelSelector) -> bool {
        let olds = self.old_uids();
        if olds
            .iter()
            .filter_map(|u| self.get(u))
            .map(rs_status_replicas)
            .sum::<i32>()
            > 0
        {
            return true;
        }
        olds.iter().any(|uid| {
            pods.owned(uid)
                .iter()
                .filter_map(|o| as_pod(o))
                .any(|p| selector.matches(p.metadata.labels.as_ref()) && !is_pod_terminal(p))
        })
    }

    /// Writes the Deployment (status and revision annotation) and says when the progress
    /// deadline needs checking.
    fn finish(self, next: &mut Next) {
        if let (Some(deadline), false) = (progress_deadline(&self.d), paused(&self.d)) {
            let status = self.status();
            if let Some(cond) = get_condition(&status, PROGRESSING) {
                let settled = matches!(cond.reason.as_deref(), Some(TIMED_OUT) | Some(NEW_RS_AVAILABLE));
                if !settled && !deployment_complete(&self.d, &status) {
                    if let Some(t) = &cond.last_update_time {
                        next.at(t.0 + SignedDuration::from_secs(i64::from(deadline) + 1));
                    }
                }
            }
        }
        update_if_changed(self.store, Object::Deployment(self.d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset::tests::{
        at, get_rs, insert, kubelet, live_pods, pods_of, selector, store, t0, template, with_ctx,
    };
    use crate::controllers::replicaset::{self, is_pod_ready};
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn new_deployment(s: &mut Store, replicas: i32, strategy: Option<DeploymentStrategy>) -> Deployment {
        let d = Object::Deployment(Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: selector(&[("app", "web")]),
                template: template(&[("app", "web")], "nginx:1"),
                strategy,
                ..Default::default()
            }),
            status: None,
        });
        match insert(s, t0(), d) {
            Object::Deployment(d) => d,
            _ => unreachable!(),
        }
    }

    fn get_d(s: &Store) -> Deployment {
        match s.get_obj(Kind::Deployment, "default", "web").as_deref() {
            Some(Object::Deployment(d)) => d.clone(),
            _ => panic!("no deployment"),
        }
    }

    fn edit(s: &mut Store, f: impl FnOnce(&mut DeploymentSpec)) {
        let mut d = get_d(s);
        if let Some(spec) = d.spec.as_mut() {
            f(spec);
        }
        update_spec(s, Object::Deployment(d));
    }

    fn rs_list(s: &Store) -> Vec<ReplicaSet> {
        let mut v: Vec<ReplicaSet> = s
            .list(Kind::ReplicaSet, None)
            .filter_map(|e| match e.obj.as_ref() {
                Object::ReplicaSet(rs) => Some(rs.clone()),
                _ => None,
            })
            .collect();
        v.sort_by(|a, b| by_creation(&a.metadata, &b.metadata));
        v
    }

    /// One controller pass (deployment then replicaset).
    fn pass(s: &mut Store, now: Timestamp) -> Next {
        with_ctx(now, |ctx| {
            let mut n = reconcile(s, ctx);
            n.merge(replicaset::reconcile(s, ctx));
            n
        })
    }

    /// Passes with the fake kubelet in between until nothing changes.
    fn settle(s: &mut Store, from: i64) -> i64 {
        let mut t = from;
        loop {
            let rv = s.rv();
            pass(s, at(t));
            kubelet(s, at(t), "node-1", &[]);
            t += 1;
            if s.rv() == rv {
                return t;
            }
            assert!(t < from + 100, "did not settle");
        }
    }

    fn cond<'a>(d: &'a Deployment, type_: &str) -> &'a DeploymentCondition {
        d.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == type_))
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    fn scaling_events(s: &Store) -> Vec<String> {
        s.list(Kind::Event, None)
            .filter_map(|e| match e.obj.as_ref() {
                Object::Event(ev) if ev.reason.as_deref() == Some("ScalingReplicaSet") => {
                    assert_eq!(
                        ev.source.as_ref().and_then(|s| s.component.as_deref()),
                        Some(COMPONENT)
                    );
                    ev.message.clone()
                }
                _ => None,
            })
            .collect()
    }

    fn rolling(surge: i32, unavailable: i32) -> Option<DeploymentStrategy> {
        Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(surge)),
                max_unavailable: Some(IntOrString::Int(unavailable)),
            }),
        })
    }

    #[test]
    fn creates_a_replica_set_and_pods() {
        let mut s = store();
        let d = new_deployment(&mut s, 4, None);
        pass(&mut s, t0());
        let rss = rs_list(&s);
        assert_eq!(rss.len(), 1);
        let rs = &rss[0];
        let hash = rs
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH))
            .cloned()
            .unwrap_or_default();
        assert!(!hash.is_empty());
        assert_eq!(rs_name(rs), format!("web-{hash}"));
        assert_eq!(
            rs.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref())
                .and_then(|m| m.get(POD_TEMPLATE_HASH)),
            Some(&hash)
        );
        let c = controller_of(&rs.metadata)
            .cloned()
            .unwrap_or_else(|| panic!("no owner"));
        assert_eq!(
            (c.kind.as_str(), c.uid.as_str()),
            ("Deployment", d.metadata.uid.as_deref().unwrap_or(""))
        );
        assert_eq!(annotation(&rs.metadata, REVISION), Some("1"));
        assert_eq!(annotation(&rs.metadata, DESIRED_REPLICAS), Some("4"));
        assert_eq!(annotation(&rs.metadata, MAX_REPLICAS), Some("5"));
        assert_eq!(rs_replicas(rs), 4);
        let pods = pods_of(&s, rs_uid(rs));
        assert_eq!(pods.len(), 4);
        assert!(pods
            .iter()
            .all(|p| p.metadata.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH)) == Some(&hash)));
        assert_eq!(
            scaling_events(&s),
            [format!("Scaled up replica set web-{hash} to 4")]
        );
        let d = get_d(&s);
        assert_eq!(annotation(&d.metadata, REVISION), Some("1"));
        assert_eq!(
            cond(&d, PROGRESSING).reason.as_deref(),
            Some("NewReplicaSetCreated")
        );
        assert_eq!(cond(&d, AVAILABLE).status, "False");
        let st = d.status.clone().unwrap_or_default();
        assert_eq!(
            (st.observed_generation, st.replicas, st.unavailable_replicas),
            (Some(1), None, Some(4))
        );

        settle(&mut s, 1);
        let d = get_d(&s);
        let st = d.status.clone().unwrap_or_default();
        assert_eq!(
            (
                st.replicas,
                st.updated_replicas,
                st.ready_replicas,
                st.available_replicas,
                st.unavailable_replicas
            ),
            (Some(4), Some(4), Some(4), Some(4), None)
        );
        assert_eq!(
            cond(&d, AVAILABLE).reason.as_deref(),
            Some("MinimumReplicasAvailable")
        );
        let p = cond(&d, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("True", Some(NEW_RS_AVAILABLE))
        );
        assert_eq!(
            p.message.as_deref(),
            Some(format!("ReplicaSet \"web-{hash}\" has successfully progressed.").as_str())
        );
        let types: Vec<&str> = st.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [AVAILABLE, PROGRESSING]);
        // Idle: nothing written.
        let rv = s.rv();
        pass(&mut s, at(200));
        assert_eq!(s.rv(), rv);
    }

    #[test]
    fn scaling_keeps_the_same_replica_set() {
        let mut s = store();
        new_deployment(&mut s, 4, None);
        let t = settle(&mut s, 0);
        let name = rs_name(&rs_list(&s)[0]).to_string();
        edit(&mut s, |spec| spec.replicas = Some(8));
        pass(&mut s, at(t));
        let rss = rs_list(&s);
        assert_eq!(rss.len(), 1);
        assert_eq!(rs_replicas(&rss[0]), 8);
        assert_eq!(annotation(&rss[0].metadata, DESIRED_REPLICAS), Some("8"));
        assert_eq!(annotation(&rss[0].metadata, MAX_REPLICAS), Some("10"));
        assert_eq!(live_pods(&s).len(), 8);
        assert!(scaling_events(&s).contains(&format!("Scaled up replica set {name} to 8 from 4")));
        settle(&mut s, t + 1);
        let st = get_d(&s).status.unwrap_or_default();
        assert_eq!(
            (st.replicas, st.available_replicas, st.observed_generation),
            (Some(8), Some(8), Some(2))
        );
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailability() {
        let mut s = store();
        new_deployment(&mut s, 4, rolling(1, 1));
        let t = settle(&mut s, 0);
        let old = rs_list(&s)[0].clone();
        edit(&mut s, |spec| {
            spec.template = template(&[("app", "web")], "nginx:2")
        });
        let mut saw_two = false;
        for i in 0..60 {
            pass(&mut s, at(t + i));
            let rss = rs_list(&s);
            saw_two |= rss.len() == 2;
            let total: i32 = rss.iter().map(rs_replicas).sum();
            assert!(total <= 5, "replica sets sum to {total} > replicas + maxSurge");
            let live = live_pods(&s);
            assert!(live.len() <= 5, "{} live pods", live.len());
            let ready = live.iter().filter(|p| is_pod_ready(p)).count();
            assert!(ready >= 3, "only {ready} ready pods at pass {i}");
            kubelet(&mut s, at(t + i), "node-1", &[]);
        }
        assert!(saw_two);
        let rss = rs_list(&s);
        assert_eq!(rss.len(), 2, "the old ReplicaSet is kept as history");
        let new = rss
            .iter()
            .find(|rs| rs_uid(rs) != rs_uid(&old))
            .cloned()
            .unwrap_or_else(|| panic!("no new rs"));
        assert_eq!(
            (rs_replicas(&new), rs_replicas(&get_rs(&s, rs_name(&old)))),
            (4, 0)
        );
        assert_eq!(annotation(&new.metadata, REVISION), Some("2"));
        let d = get_d(&s);
        assert_eq!(annotation(&d.metadata, REVISION), Some("2"));
        let st = d.status.clone().unwrap_or_default();
        assert_eq!(
            (st.replicas, st.updated_replicas, st.available_replicas),
            (Some(4), Some(4), Some(4))
        );
        assert_eq!(cond(&d, PROGRESSING).reason.as_deref(), Some(NEW_RS_AVAILABLE));
        assert!(live_pods(&s)
            .iter()
            .all(|p| controller_of(&p.metadata).is_some_and(|c| c.uid == rs_uid(&new))));
    }

    #[test]
    fn percent_fenceposts_round_surge_up_and_unavailability_down() {
        let mut s = store();
        let d = new_deployment(&mut s, 10, None);
        assert_eq!(fenceposts(&d), (3, 2));
        let mut zero = d.clone();
        if let Some(spec) = zero.spec.as_mut() {
            spec.strategy = rolling(0, 0);
        }
        assert_eq!(fenceposts(&zero), (0, 1));
        assert_eq!(max_unavailable(&zero), 1);
    }

    #[test]
    fn recreate_scales_old_down_before_creating_new() {
        let mut s = store();
        new_deployment(
            &mut s,
            3,
            Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
        );
        let t = settle(&mut s, 0);
        edit(&mut s, |spec| {
            spec.template = template(&[("app", "web")], "nginx:2")
        });
        pass(&mut s, at(t));
        let rss = rs_list(&s);
        assert_eq!(rss.len(), 1, "no new ReplicaSet while old pods run");
        assert_eq!(rs_replicas(&rss[0]), 0);
        assert!(live_pods(&s).is_empty());
        assert_eq!(
            pods_of(&s, rs_uid(&rss[0])).len(),
            3,
            "old pods still terminating"
        );
        pass(&mut s, at(t + 1));
        assert_eq!(rs_list(&s).len(), 1, "still waiting for the old pods");
        kubelet(&mut s, at(t + 1), "node-1", &[]);
        pass(&mut s, at(t + 2));
        let rss = rs_list(&s);
        assert_eq!(rss.len(), 2);
        assert_eq!(rs_replicas(&rss[1]), 3);
        assert_eq!(live_pods(&s).len(), 3);
    }

    #[test]
    fn paused_deployment_does_not_roll() {
        let mut s = store();
        new_deployment(&mut s, 2, None);
        let t = settle(&mut s, 0);
        edit(&mut s, |spec| {
            spec.paused = Some(true);
            spec.template = template(&[("app", "web")], "nginx:2");
        });
        pass(&mut s, at(t));
        assert_eq!(rs_list(&s).len(), 1);
        let d = get_d(&s);
        let p = cond(&d, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("Unknown", Some(PAUSED))
        );
        assert_eq!(d.status.and_then(|s| s.observed_generation), Some(2));
        edit(&mut s, |spec| spec.paused = Some(false));
        pass(&mut s, at(t + 1));
        assert_eq!(rs_list(&s).len(), 2, "resumed: rolls");
        let t = settle(&mut s, t + 2);
        assert_eq!(
            cond(&get_d(&s), PROGRESSING).reason.as_deref(),
            Some(NEW_RS_AVAILABLE)
        );
        assert!(t > 0);
    }

    #[test]
    fn old_replica_sets_beyond_history_limit_are_deleted() {
        let mut s = store();
        new_deployment(&mut s, 1, None);
        edit(&mut s, |spec| spec.revision_history_limit = Some(1));
        let mut t = settle(&mut s, 0);
        for image in ["nginx:2", "nginx:3", "nginx:4"] {
            edit(&mut s, |spec| spec.template = template(&[("app", "web")], image));
            t = settle(&mut s, t);
        }
        let rss = rs_list(&s);
        assert_eq!(rss.len(), 2, "new + one old");
        let revs: Vec<&str> = rss
            .iter()
            .filter_map(|rs| annotation(&rs.metadata, REVISION))
            .collect();
        assert_eq!(revs, ["3", "4"]);
    }

    #[test]
    fn rollback_reuses_the_old_replica_set() {
        let mut s = store();
        new_deployment(&mut s, 1, None);
        let t = settle(&mut s, 0);
        let first = rs_list(&s)[0].clone();
        edit(&mut s, |spec| {
            spec.template = template(&[("app", "web")], "nginx:2")
        });
        let t = settle(&mut s, t);
        edit(&mut s, |spec| {
            spec.template = template(&[("app", "web")], "nginx:1")
        });
        settle(&mut s, t);
        let rss = rs_list(&s);
        assert_eq!(rss.len(), 2);
        let back = get_rs(&s, rs_name(&first));
        assert_eq!(rs_replicas(&back), 1);
        assert_eq!(annotation(&back.metadata, REVISION), Some("3"));
        assert_eq!(annotation(&back.metadata, REVISION_HISTORY), Some("1"));
    }

    #[test]
    fn progress_deadline_exceeded() {
        let mut s = store();
        new_deployment(&mut s, 2, None);
        edit(&mut s, |spec| spec.progress_deadline_seconds = Some(30));
        let next = pass(&mut s, t0());
        assert_eq!(next.0, Some(at(31)));
        // The ReplicaSet reports its pods: progress, so the deadline moves.
        let next = pass(&mut s, at(1));
        assert_eq!(next.0, Some(at(32)));
        assert_eq!(
            cond(&get_d(&s), PROGRESSING).reason.as_deref(),
            Some("ReplicaSetUpdated")
        );
        let rv = s.rv();
        let next = pass(&mut s, at(20));
        assert_eq!(
            (next.0, s.rv()),
            (Some(at(32)), rv),
            "no progress, nothing written"
        );
        pass(&mut s, at(32));
        let d = get_d(&s);
        let p = cond(&d, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("False", Some(TIMED_OUT))
        );
        assert!(p
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with("has timed out progressing.")));
    }

    #[test]
    fn proportional_scaling_mid_rollout() {
        let mut s = store();
        new_deployment(&mut s, 10, rolling(3, 2));
        let t = settle(&mut s, 0);
        let old = rs_list(&s)[0].clone();
        edit(&mut s, |spec| {
            spec.template = template(&[("app", "web")], "nginx:2")
        });
        // New pods never become ready: the rollout stalls at old 8, new 5.
        pass(&mut s, at(t));
        pass(&mut s, at(t + 1));
        let (o, n) = {
            let rss = rs_list(&s);
            (rs_replicas(&rss[0]), rs_replicas(&rss[1]))
        };
        assert_eq!((o, n), (8, 5));
        edit(&mut s, |spec| spec.replicas = Some(20));
        pass(&mut s, at(t + 2));
        let rss = rs_list(&s);
        let (o, n) = (rs_replicas(&rss[0]), rs_replicas(&rss[1]));
        // allowed = 20 + 3 surge = 23; the 10 added split 8:5 against max-replicas 13:
        // old round(8 * 23 / 13) - 8 = 6, new round(5 * 23 / 13) - 5 = 4.
        assert_eq!((o, n), (14, 9));
        assert_eq!(rs_uid(&rss[0]), rs_uid(&old));
        assert!(rss
            .iter()
            .all(|rs| annotation(&rs.metadata, DESIRED_REPLICAS) == Some("20")));
    }

    fn workloads(s: &mut Store, now: Timestamp) -> Next {
        with_ctx(now, |ctx| crate::controllers::reconcile_workloads(s, ctx))
    }

    fn add_node(s: &mut Store) {
        let node = Object::Node(k8s_openapi::api::core::v1::Node {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        insert(s, t0(), node);
    }

    #[test]
    fn deleting_a_deployment_cascades_through_the_garbage_collector() {
        let mut s = store();
        add_node(&mut s);
        new_deployment(&mut s, 3, None);
        for t in 0..5 {
            workloads(&mut s, at(t));
            kubelet(&mut s, at(t), "node-1", &[]);
        }
        assert_eq!((rs_list(&s).len(), live_pods(&s).len()), (1, 3));
        let _ = api::delete(
            &mut s,
            at(10),
            Kind::Deployment,
            "default",
            "web",
            &DeleteOptions::default(),
        );
        workloads(&mut s, at(10));
        assert!(rs_list(&s).is_empty(), "ReplicaSet collected");
        assert!(live_pods(&s).is_empty(), "pods terminating, not replaced");
        kubelet(&mut s, at(11), "node-1", &[]);
        workloads(&mut s, at(11));
        assert_eq!(s.count(Kind::Pod), 0);
    }

    #[test]
    fn idle_pass_over_five_thousand_pods_is_cheap_and_writes_nothing() {
        let mut s = store();
        add_node(&mut s);
        for i in 0..50 {
            let name = format!("app-{i}");
            let d = Object::Deployment(Deployment {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                spec: Some(DeploymentSpec {
                    replicas: Some(100),
                    selector: selector(&[("app", &name)]),
                    template: template(&[("app", &name)], "nginx:1"),
                    ..Default::default()
                }),
                status: None,
            });
            insert(&mut s, t0(), d);
        }
        let mut t = 0;
        loop {
            let rv = s.rv();
            workloads(&mut s, at(t));
            kubelet(&mut s, at(t), "node-1", &[]);
            t += 1;
            if s.rv() == rv {
                break;
            }
            assert!(t < 20, "did not settle");
        }
        assert_eq!(live_pods(&s).len(), 5000);
        let rv = s.rv();
        let started = std::time::Instant::now();
        let next = workloads(&mut s, at(t + 1));
        let took = started.elapsed();
        assert_eq!(s.rv(), rv, "an idle pass writes nothing");
        assert!(next.0.is_none());
        assert!(
            took < std::time::Duration::from_secs(2),
            "idle pass took {took:?}"
        );
    }

    #[test]
    fn empty_selector_warns_once() {
        let mut s = store();
        let mut d = new_deployment(&mut s, 1, None);
        if let Some(spec) = d.spec.as_mut() {
            spec.selector = Default::default();
        }
        update_spec(&mut s, Object::Deployment(d));
        pass(&mut s, at(1));
        assert!(rs_list(&s).is_empty());
        assert_eq!(get_d(&s).status.and_then(|s| s.observed_generation), Some(2));
        let rv = s.rv();
        pass(&mut s, at(2));
        assert_eq!(s.rv(), rv);
    }
}
