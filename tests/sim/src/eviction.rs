//! The `pods/eviction` subresource, as `pkg/registry/core/pod/storage/eviction.go` decides: terminal,
//! pending and terminating pods go at once; otherwise the pod's one PodDisruptionBudget must allow
//! the disruption, which is then recorded in its status before the pod is deleted gracefully.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::api::{self, DeleteOptions};
use crate::controllers::disruption::update_disruption_allowed_condition;
use crate::controllers::kubelet::pod_ready;
use crate::controllers::nodelifecycle::update_pod_condition;
use crate::controllers::update_if_changed;
use crate::error::ApiError;
use crate::object::Object;
use crate::resources::Kind;
use crate::selector::LabelSelector;
use crate::store::Store;

/// `MaxDisruptedPodSize`: evictions the disruption controller has not yet confirmed, at most.
pub const MAX_DISRUPTED_PODS: usize = 2000;

const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";
const MULTIPLE: &str =
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

/// What an eviction request came to, when it was well formed and the pod exists.
#[derive(Debug, Clone)]
pub struct EvictOutcome {
    /// Whether the pod was evicted (in a dry run: would have been).
    pub allowed: bool,
    /// The HTTP status to answer with (201 when allowed).
    pub code: u16,
    /// The `Status` object to answer with.
    pub status: Value,
    /// The PodDisruptionBudget that allowed or refused the eviction, if one was consulted.
    pub pdb: Option<String>,
    /// For a refusal: the error as the server answers it (carries `Retry-After`).
    pub error: Option<ApiError>,
}

impl EvictOutcome {
    fn allowed(pdb: Option<String>) -> EvictOutcome {
        EvictOutcome {
            allowed: true,
            code: 201,
            status: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            pdb,
            error: None,
        }
    }

    fn refused(pdb: Option<String>, e: ApiError) -> EvictOutcome {
        EvictOutcome {
            allowed: false,
            code: e.code,
            status: e.status(),
            pdb,
            error: Some(e),
        }
    }
}

/// `canIgnorePDB`: terminal, pending and terminating pods need no budget.
fn can_ignore_pdb(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    matches!(phase, "Succeeded" | "Failed" | "Pending") || pod.metadata.deletion_timestamp.is_some()
}

/// The budgets whose non-empty selector matches the pod (`getPodDisruptionBudgets`).
pub fn pdbs_for_pod(store: &Store, pod: &Pod) -> Vec<PodDisruptionBudget> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    store
        .list(Kind::PodDisruptionBudget, Some(ns))
        .filter_map(|e| match e.obj.as_ref() {
            Object::PodDisruptionBudget(p) => {
                let sel = LabelSelector::from_k8s(p.spec.as_ref()?.selector.as_ref()?).ok()?;
                (!sel.is_empty() && sel.matches(pod.metadata.labels.as_ref())).then(|| p.clone())
            }
            _ => None,
        })
        .collect()
}

fn pdb_forbidden(name: &str, why: &str) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!("poddisruptionbudget.policy \"{name}\" is forbidden: {why}"),
        details: Some(json!({"name": name, "group": "policy", "kind": "poddisruptionbudget"})),
        retry_after: None,
    }
}

fn cause(message: String) -> Value {
    json!({"reason": "DisruptionBudget", "message": message})
}

fn pod_conflict(name: &str, why: String) -> ApiError {
    ApiError {
        code: 409,
        reason: "Conflict",
        message: format!("Operation cannot be fulfilled on Pod \"{name}\": {why}"),
        details: Some(json!({"name": name, "kind": "Pod"})),
        retry_after: None,
    }
}

/// `checkAndDecrement`: takes one disruption from the budget and records the pod as disrupted.
fn check_and_decrement(
    store: &mut Store,
    now: Timestamp,
    pod: &str,
    mut pdb: PodDisruptionBudget,
    dry_run: bool,
) -> Result<(), ApiError> {
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let generation = pdb.metadata.generation.unwrap_or(0);
    let st = pdb.status.get_or_insert_with(Default::default);
    if st.observed_generation.unwrap_or(0) < generation {
        let why = format!("The disruption budget {name} is still being processed by the server.");
        return Err(ApiError::too_many_requests(VIOLATION, 10, vec![cause(why)]));
    }
    if st.disruptions_allowed < 0 {
        return Err(pdb_forbidden(&name, "pdb disruptions allowed is negative"));
    }
    if st.disrupted_pods.as_ref().map_or(0, |m| m.len()) > MAX_DISRUPTED_PODS {
        return Err(pdb_forbidden(
            &name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if st.disruptions_allowed == 0 {
        let why = format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            st.desired_healthy, st.current_healthy
        );
        return Err(ApiError::too_many_requests(VIOLATION, 0, vec![cause(why)]));
    }
    st.disruptions_allowed -= 1;
    if st.disruptions_allowed == 0 {
        update_disruption_allowed_condition(st, now);
    }
    if dry_run {
        return Ok(());
    }
    st.disrupted_pods
        .get_or_insert_with(Default::default)
        .insert(pod.to_string(), Time(now));
    update_if_changed(store, Object::PodDisruptionBudget(pdb));
    Ok(())
}

/// `addConditionAndDeletePod`: marks the pod with the DisruptionTarget condition, then deletes it
/// with the eviction's options (gracefully, for a pod on a node).
fn delete_pod(
    store: &mut Store,
    now: Timestamp,
    ns: &str,
    name: &str,
    mut opts: DeleteOptions,
) -> Result<(), ApiError> {
    if !opts.dry_run {
        let Some(Object::Pod(mut pod)) = store.get_obj(Kind::Pod, ns, name).map(|o| (*o).clone()) else {
            return Err(ApiError::not_found(Kind::Pod.info(), name));
        };
        let meta = &pod.metadata;
        if let Some(uid) = opts.uid.as_deref().filter(|u| !u.is_empty()) {
            let actual = meta.uid.as_deref().unwrap_or("");
            if uid != actual {
                return Err(pod_conflict(name, format!("the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated")));
            }
        }
        if let Some(rv) = opts.resource_version.as_deref().filter(|r| !r.is_empty()) {
            let actual = meta.resource_version.as_deref().unwrap_or("");
            if rv != actual {
                return Err(pod_conflict(name, format!("the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({actual}). The object might have been modified")));
            }
        }
        let status = pod.status.get_or_insert_with(Default::default);
        let cond = PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("EvictionByEvictionAPI".into()),
            message: Some("Eviction API: evicting".into()),
            ..Default::default()
        };
        update_pod_condition(status.conditions.get_or_insert_with(Vec::new), cond, now);
        update_if_changed(store, Object::Pod(pod));
        if opts.resource_version.is_some() {
            // We made the last write; the precondition now names it.
            opts.resource_version = store
                .get_obj(Kind::Pod, ns, name)
                .and_then(|o| o.meta().resource_version.clone());
        }
    }
    api::delete(store, now, Kind::Pod, ns, name, &opts).map(|_| ())
}

/// Evicts `ns/pod` as `POST .../pods/{pod}/eviction` with a policy/v1 (or v1beta1) Eviction body.
/// `dry_run` is the request's `dryRun=All`. Malformed requests, a missing pod and failed deletes
/// are errors; budget refusals are outcomes (not allowed) so callers can count them per PDB.
pub fn evict(
    store: &mut Store,
    now: Timestamp,
    ns: &str,
    pod: &str,
    body: &Value,
    dry_run: bool,
) -> Result<EvictOutcome, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != "Eviction" {
            return Err(ApiError::bad_request(format!(
                "not a Eviction object: *core.{kind}"
            )));
        }
    }
    let name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name != pod {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let mut opts = DeleteOptions {
        dry_run,
        ..Default::default()
    };
    if let Some(d) = body.get("deleteOptions").filter(|d| d.is_object()) {
        opts = opts.merge_body(d);
    }
    let Some(Object::Pod(current)) = store.get_obj(Kind::Pod, ns, pod).map(|o| (*o).clone()) else {
        return Err(ApiError::not_found(Kind::Pod.info(), pod));
    };
    if can_ignore_pdb(&current) {
        delete_pod(store, now, ns, pod, opts)?;
        return Ok(EvictOutcome::allowed(None));
    }
    let mut pdbs = pdbs_for_pod(store, &current);
    if pdbs.len() > 1 {
        return Ok(EvictOutcome::refused(None, ApiError::internal(MULTIPLE)));
    }
    let Some(pdb) = pdbs.pop() else {
        delete_pod(store, now, ns, pod, opts)?;
        return Ok(EvictOutcome::allowed(None));
    };
    let pdb_name = pdb.metadata.name.clone();
    let st = pdb.status.clone().unwrap_or_default();
    let always_allow = pdb
        .spec
        .as_ref()
        .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
        == Some("AlwaysAllow");
    // An unready pod does not count towards healthy: it may go without a decrement.
    let unhealthy_may_go = !pod_ready(&current)
        && (always_allow || (st.current_healthy >= st.desired_healthy && st.desired_healthy > 0));
    if !unhealthy_may_go {
        if let Err(e) = check_and_decrement(store, now, pod, pdb, opts.dry_run) {
            return Ok(EvictOutcome::refused(pdb_name, e));
        }
    }
    delete_pod(store, now, ns, pod, opts)?;
    Ok(EvictOutcome::allowed(pdb_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::disruption;
    use crate::controllers::{Behaviour, Ctx};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as K8sSelector, ObjectMeta, OwnerReference,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use std::collections::BTreeMap;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn store() -> Store {
        Store::new(1000, tokio::sync::broadcast::channel(16).0)
    }

    fn labels() -> Option<BTreeMap<String, String>> {
        Some([("app".to_string(), "web".to_string())].into())
    }

    /// `n` pods of ReplicaSet `web-1` (Deployment `web`, `n` replicas) on node `a`, Ready or not.
    fn workload(s: &mut Store, n: usize, ready: bool) {
        let dep = k8s_openapi::api::apps::v1::Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("dep".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                replicas: Some(n as i32),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.insert(Object::Deployment(dep));
        let rs = k8s_openapi::api::apps::v1::ReplicaSet {
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
            ..Default::default()
        };
        s.insert(Object::ReplicaSet(rs));
        for i in 0..n {
            add_pod(s, &format!("web-{i}"), "Running", ready);
        }
    }

    fn add_pod(s: &mut Store, name: &str, phase: &str, ready: bool) {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                uid: Some(format!("uid-{name}")),
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
            spec: Some(PodSpec {
                node_name: (phase != "Pending").then(|| "a".to_string()),
                termination_grace_period_seconds: Some(30),
                containers: vec![Container {
                    name: "web".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        s.insert(Object::Pod(pod));
    }

    fn add_pdb(s: &mut Store, name: &str, min: i32) {
        let pdb = PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(min)),
                selector: Some(K8sSelector {
                    match_labels: labels(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        };
        s.insert(Object::PodDisruptionBudget(pdb));
    }

    fn sync(s: &mut Store, now: Timestamp) {
        let b = Behaviour::default();
        disruption::reconcile(
            s,
            &Ctx {
                now,
                behaviour: &b,
                version: "1.33",
            },
        );
    }

    fn body(name: &str) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "shop"}})
    }

    fn pdb_status(s: &Store, name: &str) -> k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus {
        match s.get_obj(Kind::PodDisruptionBudget, "shop", name).as_deref() {
            Some(Object::PodDisruptionBudget(p)) => p.status.clone().unwrap_or_default(),
            _ => panic!("no pdb"),
        }
    }

    fn terminating(s: &Store, name: &str) -> bool {
        s.get_obj(Kind::Pod, "shop", name)
            .is_some_and(|p| p.meta().deletion_timestamp.is_some())
    }

    #[test]
    fn allowed_eviction_decrements_then_the_next_is_refused() {
        let mut s = store();
        workload(&mut s, 4, true);
        add_pdb(&mut s, "web", 3);
        sync(&mut s, t(0));
        assert_eq!(pdb_status(&s, "web").disruptions_allowed, 1);

        let out = evict(&mut s, t(1), "shop", "web-0", &body("web-0"), false).unwrap();
        assert!(out.allowed);
        assert_eq!(out.code, 201);
        assert_eq!(out.pdb.as_deref(), Some("web"));
        assert_eq!(
            out.status,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
        );
        let st = pdb_status(&s, "web");
        assert_eq!(st.disruptions_allowed, 0);
        assert_eq!(
            st.disrupted_pods.as_ref().unwrap().get("web-0"),
            Some(&Time(t(1)))
        );
        let c = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "DisruptionAllowed")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientPods")
        );
        assert!(terminating(&s, "web-0"), "deleted gracefully");
        let pod = s.get_obj(Kind::Pod, "shop", "web-0").unwrap();
        let Object::Pod(pod) = pod.as_ref() else {
            unreachable!()
        };
        assert!(pod
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .any(|c| c.type_ == "DisruptionTarget" && c.reason.as_deref() == Some("EvictionByEvictionAPI")));

        sync(&mut s, t(2));
        let out = evict(&mut s, t(3), "shop", "web-1", &body("web-1"), false).unwrap();
        assert!(!out.allowed);
        assert_eq!(out.code, 429);
        assert_eq!(out.pdb.as_deref(), Some("web"));
        assert_eq!(
            out.status["message"],
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
        assert_eq!(out.status["reason"], "TooManyRequests");
        assert_eq!(
            out.status["details"]["causes"],
            json!([{"reason": "DisruptionBudget", "message": "The disruption budget web needs 3 healthy pods and has 3 currently"}])
        );
        assert!(out.status["details"].get("retryAfterSeconds").is_none());
        assert!(!terminating(&s, "web-1"));
    }

    #[test]
    fn pending_pods_go_regardless_and_unready_pods_with_a_healthy_budget() {
        let mut s = store();
        workload(&mut s, 3, true);
        add_pod(&mut s, "web-new", "Pending", false);
        add_pod(&mut s, "web-sick", "Running", false);
        add_pdb(&mut s, "web", 3);
        sync(&mut s, t(0));
        assert_eq!(pdb_status(&s, "web").disruptions_allowed, 0);
        let out = evict(&mut s, t(1), "shop", "web-new", &body("web-new"), false).unwrap();
        assert!(out.allowed);
        assert!(
            s.get_obj(Kind::Pod, "shop", "web-new").is_none(),
            "an unbound pod goes at once"
        );
        let out = evict(&mut s, t(1), "shop", "web-sick", &body("web-sick"), false).unwrap();
        assert!(out.allowed, "unready pod with currentHealthy >= desiredHealthy");
        assert_eq!(pdb_status(&s, "web").disruptions_allowed, 0, "no decrement");
        assert!(terminating(&s, "web-sick"));
    }

    #[test]
    fn two_budgets_are_a_500_and_stale_budgets_a_429() {
        let mut s = store();
        workload(&mut s, 4, true);
        add_pdb(&mut s, "a", 1);
        add_pdb(&mut s, "b", 1);
        let out = evict(&mut s, t(1), "shop", "web-0", &body("web-0"), false).unwrap();
        assert_eq!(out.code, 500);
        assert_eq!(
            out.status,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": MULTIPLE, "code": 500})
        );
        s.remove(Kind::PodDisruptionBudget, "shop", "b");
        let out = evict(&mut s, t(1), "shop", "web-0", &body("web-0"), false).unwrap();
        assert_eq!(out.code, 429, "status not yet observed");
        assert_eq!(out.error.as_ref().unwrap().retry_after, Some(10));
        assert_eq!(
            out.status["details"]["causes"][0]["message"],
            "The disruption budget a is still being processed by the server."
        );
    }

    #[test]
    fn dry_run_changes_nothing() {
        let mut s = store();
        workload(&mut s, 4, true);
        add_pdb(&mut s, "web", 3);
        sync(&mut s, t(0));
        let rv = s.rv();
        let out = evict(&mut s, t(1), "shop", "web-0", &body("web-0"), true).unwrap();
        assert!(out.allowed);
        let mut b = body("web-0");
        b["deleteOptions"] = json!({"dryRun": ["All"]});
        assert!(evict(&mut s, t(1), "shop", "web-0", &b, false).unwrap().allowed);
        assert_eq!(s.rv(), rv);
        assert_eq!(pdb_status(&s, "web").disruptions_allowed, 1);
        assert!(!terminating(&s, "web-0"));
    }

    #[test]
    fn bad_requests() {
        let mut s = store();
        workload(&mut s, 1, true);
        let e = evict(&mut s, t(1), "shop", "web-0", &body("other"), false).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "name in URL does not match name in Eviction object")
        );
        let e = evict(&mut s, t(1), "shop", "nope", &body("nope"), false).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (404, "pods \"nope\" not found"));
        let out = evict(&mut s, t(1), "shop", "web-0", &body("web-0"), false).unwrap();
        assert!(out.allowed && out.pdb.is_none(), "no budget, no limit");
    }

    #[test]
    fn negative_budget_is_forbidden() {
        let mut s = store();
        workload(&mut s, 2, true);
        add_pdb(&mut s, "web", 1);
        sync(&mut s, t(0));
        let Some(Object::PodDisruptionBudget(mut p)) = s
            .get_obj(Kind::PodDisruptionBudget, "shop", "web")
            .map(|o| (*o).clone())
        else {
            unreachable!()
        };
        p.status.as_mut().unwrap().disruptions_allowed = -1;
        s.replace(Object::PodDisruptionBudget(p));
        let out = evict(&mut s, t(1), "shop", "web-0", &body("web-0"), false).unwrap();
        assert_eq!(out.code, 403);
        assert_eq!(
            out.status["message"],
            "poddisruptionbudget.policy \"web\" is forbidden: pdb disruptions allowed is negative"
        );
    }

    /// Runs the node controllers until nothing changes and no deadline falls before `until`.
    fn settle(s: &mut Store, b: &Behaviour, mut now: Timestamp, until: Timestamp) -> Timestamp {
        for _ in 0..100 {
            let rv = s.rv();
            let next = crate::controllers::reconcile_nodes(
                s,
                &Ctx {
                    now,
                    behaviour: b,
                    version: "1.33",
                },
            );
            if s.rv() != rv {
                continue;
            }
            match next.0 {
                Some(n) if n <= until => {
                    assert!(n > now, "a deadline that has passed must not be asked for again");
                    now = n;
                }
                _ => return now,
            }
        }
        panic!("the node controllers do not settle");
    }

    fn unbound_pod(s: &mut Store, name: &str, now: Timestamp) {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
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
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some("nginx:1.27".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        crate::controllers::create(s, now, Object::Pod(pod));
    }

    fn node_of(s: &Store, name: &str) -> Option<String> {
        match s.get_obj(Kind::Pod, "shop", name).as_deref() {
            Some(Object::Pod(p)) => p.spec.as_ref().and_then(|s| s.node_name.clone()),
            _ => None,
        }
    }

    #[test]
    fn drain_end_to_end() {
        let mut s = store();
        let b = Behaviour::default();
        for n in ["a", "b"] {
            let node = k8s_openapi::api::core::v1::Node {
                metadata: ObjectMeta {
                    name: Some(n.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            crate::controllers::create(&mut s, t(0), Object::Node(node));
        }
        workload(&mut s, 0, true);
        for i in 0..4 {
            unbound_pod(&mut s, &format!("web-{i}"), t(0));
        }
        add_pdb(&mut s, "web", 3);
        let now = settle(&mut s, &b, t(0), t(60));
        let on_a: Vec<String> = (0..4)
            .map(|i| format!("web-{i}"))
            .filter(|p| node_of(&s, p).as_deref() == Some("a"))
            .collect();
        assert_eq!(on_a.len(), 2, "spread over both nodes");
        let st = pdb_status(&s, "web");
        assert_eq!((st.current_healthy, st.disruptions_allowed), (4, 1));

        // Cordon a, evict its pods: one goes, the other waits for a replacement.
        let Some(Object::Node(mut a)) = s.get_obj(Kind::Node, "", "a").map(|o| (*o).clone()) else {
            unreachable!()
        };
        a.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
        s.replace(Object::Node(a));
        let now = settle(&mut s, &b, now, now);
        assert!(
            evict(&mut s, now, "shop", &on_a[0], &body(&on_a[0]), false)
                .unwrap()
                .allowed
        );
        let refused = evict(&mut s, now, "shop", &on_a[1], &body(&on_a[1]), false).unwrap();
        assert_eq!(refused.code, 429);
        let now = settle(&mut s, &b, now, plus_ms(now, 5_000));
        assert!(
            s.get_obj(Kind::Pod, "shop", &on_a[0]).is_none(),
            "the evicted pod is gone"
        );
        unbound_pod(&mut s, "web-new", now);
        let now = settle(&mut s, &b, now, plus_ms(now, 5_000));
        assert_eq!(
            node_of(&s, "web-new").as_deref(),
            Some("b"),
            "the cordoned node gets no new pods"
        );
        assert!(
            evict(&mut s, now, "shop", &on_a[1], &body(&on_a[1]), false)
                .unwrap()
                .allowed
        );
        let now = settle(&mut s, &b, now, plus_ms(now, 5_000));
        assert!(s.get_obj(Kind::Pod, "shop", &on_a[1]).is_none());
        let rv = s.rv();
        crate::controllers::reconcile_nodes(
            &mut s,
            &Ctx {
                now,
                behaviour: &b,
                version: "1.33",
            },
        );
        assert_eq!(s.rv(), rv, "a settled cluster writes nothing");
    }

    fn plus_ms(t: Timestamp, ms: u64) -> Timestamp {
        crate::controllers::nodelifecycle::plus(t, std::time::Duration::from_millis(ms))
    }
}
