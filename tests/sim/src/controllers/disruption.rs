//! The disruption controller: keeps each PodDisruptionBudget's status (expected, healthy and
//! desired pods, disruptions allowed, the DisruptionAllowed condition, disruptedPods) as
//! `pkg/controller/disruption` does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::kubelet::pod_ready;
use super::nodelifecycle::plus;
use super::{record_event, update_if_changed, Ctx, Next};
use crate::object::Object;
use crate::resources::Kind;
use crate::selector;
use crate::store::Store;

/// How long an entry of `status.disruptedPods` waits for its pod to start terminating.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// The component the controller's events name.
const COMPONENT: &str = "controllermanager";

/// `pdbhelper.UpdateDisruptionAllowedCondition` with `apimeta.SetStatusCondition`: sets the
/// DisruptionAllowed condition from `disruptions_allowed`.
pub fn update_disruption_allowed_condition(status: &mut PodDisruptionBudgetStatus, now: Timestamp) {
    let (st, reason) = if status.disruptions_allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    set_condition(status, st, reason, "", now);
}

fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    st: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let generation = status.observed_generation;
    let conds = status.conditions.get_or_insert_with(Vec::new);
    match conds.iter_mut().find(|c| c.type_ == "DisruptionAllowed") {
        None => conds.push(Condition {
            type_: "DisruptionAllowed".into(),
            status: st.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
        Some(c) => {
            if c.status != st {
                c.status = st.into();
                c.last_transition_time = Time(now);
            }
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
    }
}

/// `pdbhelper.ConditionsAreUpToDate`.
fn conditions_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = pdb.status.as_ref() else {
        return false;
    };
    let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed")
    else {
        return false;
    };
    if status.observed_generation.unwrap_or(0) != pdb.metadata.generation.unwrap_or(0) {
        return false;
    }
    if status.disruptions_allowed > 0 {
        c.status == "True" && c.reason == "SufficientPods"
    } else {
        c.status == "False" && c.reason == "InsufficientPods"
    }
}

/// `intstr.GetScaledValueFromIntOrPercent(v, total, roundUp=true)`.
fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(num) = s.strip_suffix('%') else {
                return Err("invalid value for IntOrString: invalid type: string is not a percentage".into());
            };
            let pct: i64 = num
                .parse()
                .map_err(|_| format!("invalid value {s:?}: strconv.Atoi: parsing {num:?}: invalid syntax"))?;
            Ok(((pct as f64) * f64::from(total) / 100.0).ceil() as i32)
        }
    }
}

/// A label selector as Go's `LabelSelector.String()` prints it in events.
fn selector_string(sel: Option<&LabelSelector>) -> String {
    let Some(sel) = sel else { return "nil".into() };
    let labels: String = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let exprs: String = sel
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                e.key,
                e.operator,
                e.values.as_deref().unwrap_or(&[]).join(" ")
            )
        })
        .collect();
    format!("&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}")
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

fn controller_ref(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A found controller: its uid and `spec.replicas`.
type Scale = Option<(String, i32)>;

/// The controller finders in the real order: ReplicationController (not served), Deployment
/// through its ReplicaSet, ReplicaSet, StatefulSet (not served), then the scale subresource.
fn find_controller(store: &Store, ns: &str, r: &OwnerReference) -> Result<Scale, String> {
    let group = group_of(&r.api_version);
    let rs_ref = r.kind == "ReplicaSet" && (group == "apps" || group == "extensions");
    let rs = || match store.get_obj(Kind::ReplicaSet, ns, &r.name).as_deref() {
        Some(Object::ReplicaSet(rs)) if rs.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
            Some(rs.clone())
        }
        _ => None,
    };
    if rs_ref {
        if let Some(rs) = rs() {
            let owner = rs
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true));
            match owner {
                Some(o) if o.kind == "Deployment" => {
                    let g = group_of(&o.api_version);
                    if g == "apps" || g == "extensions" {
                        if let Some(Object::Deployment(d)) =
                            store.get_obj(Kind::Deployment, ns, &o.name).as_deref()
                        {
                            if d.metadata.uid.as_deref() == Some(o.uid.as_str()) {
                                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                                return Ok(Some((o.uid.clone(), replicas)));
                            }
                        }
                    }
                }
                _ => {
                    let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    return Ok(Some((r.uid.clone(), replicas)));
                }
            }
        }
    }
    // getScaleController: the RESTMapper, then GET .../scale.
    match (group, r.kind.as_str()) {
        ("apps", "Deployment") => Ok(match store.get_obj(Kind::Deployment, ns, &r.name).as_deref() {
            Some(Object::Deployment(d)) if d.metadata.uid.as_deref() == Some(r.uid.as_str()) => Some((
                r.uid.clone(),
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            )),
            _ => None,
        }),
        ("apps", "ReplicaSet") => Ok(rs().map(|rs| {
            (
                r.uid.clone(),
                rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            )
        })),
        ("apps", "DaemonSet") => Err("daemonsets.apps does not implement the scale subresource".into()),
        _ => Err(format!(
            "no matches for kind {:?} in version {:?}",
            r.kind, r.api_version
        )),
    }
}

/// `getExpectedScale`: the summed scale of the pods' controllers, and the pods without one.
fn expected_scale(
    store: &Store,
    pods: &[&Pod],
    cache: &mut HashMap<String, Result<Scale, String>>,
) -> Result<(i32, Vec<String>), String> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let name = || pod.metadata.name.clone().unwrap_or_default();
        let Some(r) = controller_ref(pod) else {
            unmanaged.push(name());
            continue;
        };
        if !cache.contains_key(&r.uid) {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("");
            cache.insert(r.uid.clone(), find_controller(store, ns, r));
        }
        match cache.get(&r.uid) {
            Some(Ok(Some((uid, scale)))) => {
                if !scales.contains_key(uid) {
                    scales.insert(uid.clone(), *scale);
                }
            }
            Some(Err(e)) => return Err(e.clone()),
            _ => return Err(format!("found no controllers for pod {:?}", name())),
        }
    }
    Ok((scales.values().sum(), unmanaged))
}

/// An event to record once the status is written.
struct Note {
    pod: Option<Arc<Object>>,
    type_: &'static str,
    reason: &'static str,
    message: String,
}

/// `trySync` and `updatePdbStatus` (or `failSafe`): the status the PDB should have.
fn sync(
    store: &Store,
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Object>],
    now: Timestamp,
    cache: &mut HashMap<String, Result<Scale, String>>,
    notes: &mut Vec<Note>,
    next: &mut Next,
) -> Option<PodDisruptionBudgetStatus> {
    let ns = pdb.metadata.namespace.as_deref().unwrap_or("");
    let generation = pdb.metadata.generation.unwrap_or(0);
    let spec = pdb.spec.clone().unwrap_or_default();
    // failSafe: only disruptionsAllowed and the condition change; observedGeneration stays.
    let fail = |err: String, notes: &mut Vec<Note>, reason: &'static str, message: String| {
        notes.push(Note {
            pod: None,
            type_: "Warning",
            reason,
            message,
        });
        let mut st = pdb.status.clone().unwrap_or_default();
        st.disruptions_allowed = 0;
        set_condition(&mut st, "False", "SyncFailed", &err, now);
        Some(st)
    };
    let matched: Vec<&Arc<Object>> = match spec.selector.as_ref() {
        None => Vec::new(),
        Some(sel) => match selector::LabelSelector::from_k8s(sel) {
            Ok(s) => pods
                .iter()
                .filter(|o| s.matches(o.meta().labels.as_ref()))
                .collect(),
            Err(e) => {
                let msg = format!("Failed to get pods: {e}");
                return fail(e, notes, "NoPods", msg);
            }
        },
    };
    let typed: Vec<&Pod> = matched
        .iter()
        .filter_map(|o| match o.as_ref() {
            Object::Pod(p) => Some(p),
            _ => None,
        })
        .collect();
    if typed.is_empty() {
        notes.push(Note {
            pod: None,
            type_: "Normal",
            reason: "NoPods",
            message: "No matching pods found".into(),
        });
    }
    let counted: Result<(i32, i32, Vec<String>), String> = if let Some(max) = &spec.max_unavailable {
        expected_scale(store, &typed, cache).and_then(|(expected, unmanaged)| {
            let max = scaled(max, expected)?;
            Ok((expected, (expected - max).max(0), unmanaged))
        })
    } else if let Some(min) = &spec.min_available {
        match min {
            IntOrString::Int(i) => Ok((typed.len() as i32, *i, Vec::new())),
            IntOrString::String(_) => expected_scale(store, &typed, cache)
                .and_then(|(expected, unmanaged)| Ok((expected, scaled(min, expected)?, unmanaged))),
        }
    } else {
        Ok((0, 0, Vec::new()))
    };
    let (expected, desired, unmanaged) = match counted {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("Failed to calculate the number of expected pods: {e}");
            return fail(e, notes, "CalculateExpectedPodCountFailed", msg);
        }
    };
    if !unmanaged.is_empty() {
        notes.push(Note {
            pod: None,
            type_: "Warning",
            reason: "UnmanagedPods",
            message: format!(
                "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                selector_string(spec.selector.as_ref())
            ),
        });
    }
    // buildDisruptedPodMap
    let old = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
    if !old.is_empty() {
        for (obj, pod) in matched.iter().zip(&typed) {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(when) = old.get(&name) else { continue };
            let expires = plus(when.0, DELETION_TIMEOUT);
            if expires < now {
                notes.push(Note {
                    pod: Some((*obj).clone()),
                    type_: "Warning",
                    reason: "NotDeleted",
                    message: format!("Pod was expected by PDB {ns}/{ns} to be deleted but it wasn't"),
                });
            } else {
                next.at(plus(expires, Duration::from_millis(1)));
                disrupted.insert(name, when.clone());
            }
        }
    }
    // countHealthyPods
    let healthy = typed
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let name = p.metadata.name.as_deref().unwrap_or("");
            disrupted
                .get(name)
                .is_none_or(|t| plus(t.0, DELETION_TIMEOUT) <= now)
        })
        .filter(|p| pod_ready(p))
        .count() as i32;
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let disrupted = (!disrupted.is_empty()).then_some(disrupted);
    let cur = pdb.status.clone().unwrap_or_default();
    if cur.current_healthy == healthy
        && cur.desired_healthy == desired
        && cur.expected_pods == expected
        && cur.disruptions_allowed == allowed
        && cur.disrupted_pods.as_ref().filter(|m| !m.is_empty()) == disrupted.as_ref()
        && cur.observed_generation.unwrap_or(0) == generation
        && conditions_up_to_date(pdb)
    {
        return None;
    }
    let mut st = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: disrupted,
        observed_generation: Some(generation),
        conditions: cur.conditions,
    };
    update_disruption_allowed_condition(&mut st, now);
    Some(st)
}

/// Keys of `matchLabels` used to find candidate pods quickly.
fn first_label(pdb: &PodDisruptionBudget) -> Option<(&str, &str)> {
    let ml = pdb.spec.as_ref()?.selector.as_ref()?.match_labels.as_ref()?;
    ml.iter().next().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// One pass over every PodDisruptionBudget.
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    let mut next = Next::default();
    let pdbs: Vec<Arc<Object>> = store
        .list(Kind::PodDisruptionBudget, None)
        .map(|e| e.obj.clone())
        .collect();
    if pdbs.is_empty() {
        return next;
    }
    let mut cache = HashMap::new();
    let mut writes = Vec::new();
    let mut i = 0;
    while i < pdbs.len() {
        let ns = pdbs[i].namespace().to_string();
        let end = pdbs[i..]
            .iter()
            .position(|p| p.namespace() != ns)
            .map_or(pdbs.len(), |k| i + k);
        let pods: Vec<Arc<Object>> = store.list(Kind::Pod, Some(&ns)).map(|e| e.obj.clone()).collect();
        // Candidate pods per (label, value) of the PDBs' first matchLabels entries.
        let keys: Vec<&str> = pdbs[i..end]
            .iter()
            .filter_map(|o| match o.as_ref() {
                Object::PodDisruptionBudget(p) => first_label(p).map(|(k, _)| k),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<&str>>()
            .into_iter()
            .collect();
        let mut index: HashMap<(&str, &str), Vec<Arc<Object>>> = HashMap::new();
        for p in &pods {
            if let Some(labels) = p.meta().labels.as_ref() {
                for k in &keys {
                    if let Some((lk, lv)) = labels.get_key_value(*k) {
                        index
                            .entry((lk.as_str(), lv.as_str()))
                            .or_default()
                            .push(p.clone());
                    }
                }
            }
        }
        for obj in &pdbs[i..end] {
            let Object::PodDisruptionBudget(pdb) = obj.as_ref() else {
                continue;
            };
            let candidates: &[Arc<Object>] = match first_label(pdb) {
                Some(kv) => index.get(&kv).map_or(&[], Vec::as_slice),
                None => &pods,
            };
            let mut notes = Vec::new();
            if let Some(st) = sync(store, pdb, candidates, ctx.now, &mut cache, &mut notes, &mut next) {
                let mut p = pdb.clone();
                p.status = Some(st);
                writes.push((p, notes));
            }
        }
        i = end;
    }
    for (pdb, notes) in writes {
        let (ns, name) = (
            pdb.metadata.namespace.clone().unwrap_or_default(),
            pdb.metadata.name.clone().unwrap_or_default(),
        );
        if !update_if_changed(store, Object::PodDisruptionBudget(pdb)) {
            continue;
        }
        let Some(after) = store.get_obj(Kind::PodDisruptionBudget, &ns, &name) else {
            continue;
        };
        for n in notes {
            let about = n.pod.unwrap_or_else(|| after.clone());
            record_event(store, ctx.now, &about, n.type_, n.reason, &n.message, COMPONENT);
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::Behaviour;
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn store() -> Store {
        Store::new(1000, tokio::sync::broadcast::channel(16).0)
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn labels() -> Option<BTreeMap<String, String>> {
        Some([("app".to_string(), "web".to_string())].into())
    }

    /// Deployment `web` (replicas) → ReplicaSet `web-1` → `ready` Ready pods of `total`.
    pub(crate) fn workload(s: &mut Store, replicas: i32, total: usize, ready: usize) {
        let dep = Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("dep".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.insert(Object::Deployment(dep));
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("rs".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: "dep".into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.insert(Object::ReplicaSet(rs));
        for i in 0..total {
            let is_ready = i < ready;
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(format!("web-1-{i}")),
                    namespace: Some("shop".into()),
                    uid: Some(format!("pod-{i}")),
                    labels: labels(),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: "web-1".into(),
                        uid: "rs".into(),
                        controller: Some(true),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(Default::default()),
                status: Some(PodStatus {
                    phase: Some("Running".into()),
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: if is_ready { "True" } else { "False" }.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            };
            s.insert(Object::Pod(pod));
        }
    }

    pub(crate) fn add_pdb(s: &mut Store, name: &str, min: Option<IntOrString>, max: Option<IntOrString>) {
        let pdb = PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                selector: Some(LabelSelector {
                    match_labels: labels(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        };
        s.insert(Object::PodDisruptionBudget(pdb));
    }

    pub(crate) fn status(s: &Store, name: &str) -> PodDisruptionBudgetStatus {
        match s.get_obj(Kind::PodDisruptionBudget, "shop", name).as_deref() {
            Some(Object::PodDisruptionBudget(p)) => p.status.clone().unwrap_or_default(),
            _ => panic!("no pdb {name}"),
        }
    }

    fn run(s: &mut Store, now: Timestamp) -> Next {
        let b = Behaviour::default();
        reconcile(
            s,
            &Ctx {
                now,
                behaviour: &b,
                version: "1.33",
            },
        )
    }

    fn allowed_condition(st: &PodDisruptionBudgetStatus) -> (String, String) {
        let c = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "DisruptionAllowed")
            .unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn min_available_three_of_four() {
        let mut s = store();
        workload(&mut s, 4, 4, 4);
        add_pdb(&mut s, "web", Some(IntOrString::Int(3)), None);
        run(&mut s, t(0));
        let st = status(&s, "web");
        assert_eq!(
            (
                st.expected_pods,
                st.current_healthy,
                st.desired_healthy,
                st.disruptions_allowed
            ),
            (4, 4, 3, 1)
        );
        assert_eq!(st.observed_generation, Some(1));
        assert_eq!(allowed_condition(&st), ("True".into(), "SufficientPods".into()));
        let rv = s.rv();
        run(&mut s, t(1));
        assert_eq!(s.rv(), rv, "an unchanged PDB is not rewritten");
    }

    #[test]
    fn max_unavailable_uses_the_deployment_scale() {
        let mut s = store();
        workload(&mut s, 5, 4, 3);
        add_pdb(&mut s, "web", None, Some(IntOrString::Int(1)));
        run(&mut s, t(0));
        let st = status(&s, "web");
        assert_eq!(
            (
                st.expected_pods,
                st.current_healthy,
                st.desired_healthy,
                st.disruptions_allowed
            ),
            (5, 3, 4, 0)
        );
        assert_eq!(
            allowed_condition(&st),
            ("False".into(), "InsufficientPods".into())
        );
    }

    #[test]
    fn percentages_round_up() {
        let mut s = store();
        workload(&mut s, 5, 5, 5);
        add_pdb(&mut s, "web", Some(IntOrString::String("50%".into())), None);
        run(&mut s, t(0));
        let st = status(&s, "web");
        assert_eq!(
            (st.expected_pods, st.desired_healthy, st.disruptions_allowed),
            (5, 3, 2)
        );
        let mut s = store();
        workload(&mut s, 5, 5, 5);
        add_pdb(&mut s, "web", None, Some(IntOrString::String("30%".into())));
        run(&mut s, t(0));
        let st = status(&s, "web");
        assert_eq!((st.desired_healthy, st.disruptions_allowed), (3, 2));
    }

    #[test]
    fn disrupted_pods_do_not_count_until_they_expire() {
        let mut s = store();
        workload(&mut s, 4, 4, 4);
        add_pdb(&mut s, "web", Some(IntOrString::Int(3)), None);
        run(&mut s, t(0));
        let mut pdb = match s.get_obj(Kind::PodDisruptionBudget, "shop", "web").as_deref() {
            Some(Object::PodDisruptionBudget(p)) => p.clone(),
            _ => unreachable!(),
        };
        let st = pdb.status.as_mut().unwrap();
        st.disruptions_allowed = 0;
        st.disrupted_pods = Some([("web-1-0".to_string(), Time(t(10)))].into());
        s.replace(Object::PodDisruptionBudget(pdb));
        let next = run(&mut s, t(20));
        let st = status(&s, "web");
        assert_eq!((st.current_healthy, st.disruptions_allowed), (3, 0));
        assert_eq!(next.0, Some(plus(t(130), Duration::from_millis(1))));
        run(&mut s, t(131));
        let st = status(&s, "web");
        assert_eq!((st.current_healthy, st.disruptions_allowed), (4, 1));
        assert!(st.disrupted_pods.is_none());
    }

    #[test]
    fn dangling_controller_fails_safe_and_unmanaged_pods_warn() {
        let mut s = store();
        workload(&mut s, 4, 4, 4);
        s.remove(Kind::ReplicaSet, "shop", "web-1");
        add_pdb(&mut s, "web", None, Some(IntOrString::Int(1)));
        run(&mut s, t(0));
        let st = status(&s, "web");
        assert_eq!(st.disruptions_allowed, 0);
        assert_eq!(st.observed_generation, None);
        let c = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "DisruptionAllowed")
            .unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "SyncFailed"));
        assert_eq!(c.message, "found no controllers for pod \"web-1-0\"");
        let rv = s.rv();
        run(&mut s, t(1));
        assert_eq!(s.rv(), rv, "a failing PDB settles too");
    }
}
