//! Garbage collection, as three kube-controller-manager loops do it: the garbage collector
//! (`pkg/controller/garbagecollector`: dependents whose owners are all gone are deleted in the
//! background, dangling references beside live owners are dropped, `foregroundDeletion` and
//! `orphan` finalizers are honoured), the namespace controller (`pkg/controller/namespace`:
//! a terminating namespace's content is deleted, then its `kubernetes` finalizer, then the
//! namespace), and the pod GC's collection of pods bound to nodes that no longer exist.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, PodCondition};
use k8s_openapi::jiff::Timestamp;

use super::{update_if_changed, Ctx, Next};
use crate::api::{self, DeleteOptions};
use crate::object::Object;
use crate::resources::{Kind, RESOURCES};
use crate::store::Store;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// The namespace controller's finalizer in `spec.finalizers`.
const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Runs namespace deletion, the owner-reference garbage collector and the pod GC once.
/// Everything they wait for (pods terminating, finalizers) wakes them by changing the store,
/// so they never ask to run at a set time.
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    delete_namespaces(store, ctx.now);
    collect_garbage(store, ctx.now);
    collect_pods_on_missing_nodes(store, ctx.now);
    Next::default()
}

/// Deletes an object as the garbage collector does (background propagation; pods terminate
/// gracefully).
fn delete(store: &mut Store, now: Timestamp, kind: Kind, ns: &str, name: &str) {
    let opts = DeleteOptions {
        propagation: Some("Background".into()),
        ..Default::default()
    };
    // NotFound and the like mean someone else got there first.
    let _ = api::delete(store, now, kind, ns, name, &opts);
}

/// The served kind an owner reference names (group from `apiVersion`, and `kind`), if any.
fn served_kind(api_version: &str, kind: &str) -> Option<Kind> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    RESOURCES
        .iter()
        .find(|r| r.kind_name == kind && r.group == group)
        .map(|r| r.kind)
}

fn namespaced(kind: Kind) -> bool {
    kind.info().namespaced
}

fn has_finalizer(obj: &Object, f: &str) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|fs| fs.iter().any(|x| x == f))
}

/// Removes `finalizer` from an object being deleted; the object goes once none remain.
fn drop_finalizer(store: &mut Store, mut obj: Object, finalizer: &str) {
    if let Some(fs) = obj.meta_mut().finalizers.as_mut() {
        fs.retain(|f| f != finalizer);
    }
    let done = obj.meta().finalizers.as_ref().is_none_or(Vec::is_empty);
    let (kind, ns, name) = (obj.kind(), obj.namespace().to_string(), obj.name().to_string());
    update_if_changed(store, obj);
    if done {
        store.remove(kind, &ns, &name);
    }
}

/// What one look at the store decided.
#[derive(Default)]
struct Plan {
    /// Objects to delete.
    delete: Vec<(Kind, String, String)>,
    /// Objects to rewrite without these owner references (dangling ones, or orphaned ones).
    strip: Vec<(Kind, String, String, HashSet<String>)>,
    /// Owners being deleted whose `foregroundDeletion` or `orphan` finalizer can go now.
    finalize: Vec<(Kind, String, String, &'static str)>,
}

/// `attemptToDeleteItem` over every object, repeated so that chains (Deployment → ReplicaSet →
/// Pod) go in one pass.
fn collect_garbage(store: &mut Store, now: Timestamp) {
    for _ in 0..8 {
        let plan = plan_garbage(store);
        if plan.delete.is_empty() && plan.strip.is_empty() && plan.finalize.is_empty() {
            return;
        }
        for (kind, ns, name, uids) in plan.strip {
            if let Some(mut obj) = store.get_obj(kind, &ns, &name).map(|o| (*o).clone()) {
                let meta = obj.meta_mut();
                if let Some(refs) = meta.owner_references.as_mut() {
                    refs.retain(|r| !uids.contains(&r.uid));
                }
                if meta.owner_references.as_ref().is_some_and(Vec::is_empty) {
                    meta.owner_references = None;
                }
                update_if_changed(store, obj);
            }
        }
        for (kind, ns, name) in plan.delete {
            delete(store, now, kind, &ns, &name);
        }
        for (kind, ns, name, finalizer) in plan.finalize {
            if let Some(obj) = store.get_obj(kind, &ns, &name).map(|o| (*o).clone()) {
                drop_finalizer(store, obj, finalizer);
            }
        }
    }
}

fn plan_garbage(store: &Store) -> Plan {
    struct Owner<'a> {
        kind: Kind,
        ns: &'a str,
        name: &'a str,
        foreground: bool,
        orphan: bool,
    }
    let mut owners: HashMap<&str, Owner> = HashMap::new();
    for info in RESOURCES {
        for e in store.list(info.kind, None) {
            let meta = e.obj.meta();
            if let Some(uid) = meta.uid.as_deref() {
                let deleting = meta.deletion_timestamp.is_some();
                owners.insert(
                    uid,
                    Owner {
                        kind: info.kind,
                        ns: e.obj.namespace(),
                        name: e.obj.name(),
                        foreground: deleting && has_finalizer(&e.obj, FOREGROUND),
                        orphan: deleting && has_finalizer(&e.obj, ORPHAN),
                    },
                );
            }
        }
    }
    let mut plan = Plan::default();
    // Dependents per owner in foreground deletion.
    let mut dependents: HashMap<&str, usize> = HashMap::new();
    let mut orphaned: HashMap<(Kind, &str, &str), HashSet<String>> = HashMap::new();
    for info in RESOURCES {
        for e in store.list(info.kind, None) {
            let meta = e.obj.meta();
            let Some(refs) = meta.owner_references.as_ref().filter(|r| !r.is_empty()) else {
                continue;
            };
            let ns = e.obj.namespace();
            let (mut solid, mut dangling, mut waiting) = (0, HashSet::new(), HashSet::new());
            for r in refs {
                let Some(kind) = served_kind(&r.api_version, &r.kind) else {
                    // An owner of a kind this cluster does not serve cannot be looked up: the
                    // real collector leaves such dependents alone.
                    solid += 1;
                    continue;
                };
                let owner = owners
                    .get(r.uid.as_str())
                    .filter(|o| o.kind == kind && (o.ns == ns || !namespaced(kind)));
                match owner {
                    Some(o) if o.orphan => {
                        orphaned
                            .entry((info.kind, ns, e.obj.name()))
                            .or_default()
                            .insert(r.uid.clone());
                    }
                    Some(o) if o.foreground => {
                        *dependents.entry(r.uid.as_str()).or_default() += 1;
                        waiting.insert(r.uid.clone());
                    }
                    Some(_) => solid += 1,
                    None => {
                        dangling.insert(r.uid.clone());
                    }
                }
            }
            if meta.deletion_timestamp.is_some() {
                continue;
            }
            let key = || (info.kind, ns.to_string(), e.obj.name().to_string());
            if solid > 0 {
                if !dangling.is_empty() || !waiting.is_empty() {
                    let (k, n, m) = key();
                    plan.strip
                        .push((k, n, m, dangling.into_iter().chain(waiting).collect()));
                }
            } else if !dangling.is_empty() || !waiting.is_empty() {
                plan.delete.push(key());
            }
        }
    }
    for ((kind, ns, name), uids) in orphaned {
        plan.strip.push((kind, ns.to_string(), name.to_string(), uids));
    }
    for (uid, o) in &owners {
        if o.orphan {
            plan.finalize
                .push((o.kind, o.ns.to_string(), o.name.to_string(), ORPHAN));
        } else if o.foreground && !dependents.contains_key(uid) {
            plan.finalize
                .push((o.kind, o.ns.to_string(), o.name.to_string(), FOREGROUND));
        }
    }
    plan
}

/// The namespace controller: for each terminating namespace, deletes its content, reports
/// what remains in the status conditions, and once it is empty removes the `kubernetes`
/// finalizer and then the namespace.
fn delete_namespaces(store: &mut Store, now: Timestamp) {
    let terminating: Vec<Namespace> = store
        .list(Kind::Namespace, None)
        .filter_map(|e| match e.obj.as_ref() {
            Object::Namespace(n) if n.metadata.deletion_timestamp.is_some() => Some(n.clone()),
            _ => None,
        })
        .collect();
    for ns in terminating {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let finalized = !ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|x| x == NAMESPACE_FINALIZER));
        if !finalized {
            delete_content(store, now, &name);
            let (remaining, finalizers) = remaining_content(store, &name);
            let mut next = ns.clone();
            update_namespace_conditions(&mut next, &remaining, &finalizers, now);
            if remaining.is_empty() {
                if let Some(f) = next.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
                    f.retain(|x| x != NAMESPACE_FINALIZER);
                }
            } else {
                update_if_changed(store, Object::Namespace(next));
                continue;
            }
            update_if_changed(store, Object::Namespace(next));
        }
        // Finalized: the API server removes it once no metadata finalizers remain either.
        let still = store.get_obj(Kind::Namespace, "", &name);
        if still.is_some_and(|n| n.meta().finalizers.as_ref().is_none_or(Vec::is_empty)) {
            store.remove(Kind::Namespace, "", &name);
        }
    }
}

fn namespaced_kinds() -> impl Iterator<Item = Kind> {
    RESOURCES.iter().filter(|r| r.namespaced).map(|r| r.kind)
}

/// Deletes every object in the namespace (pods gracefully, as a `deletecollection` does).
fn delete_content(store: &mut Store, now: Timestamp, ns: &str) {
    for kind in namespaced_kinds() {
        let names: Vec<String> = store
            .list(kind, Some(ns))
            .filter(|e| e.obj.meta().deletion_timestamp.is_none())
            .map(|e| e.obj.name().to_string())
            .collect();
        for name in names {
            delete(store, now, kind, ns, &name);
        }
    }
}

/// `"<resource>.<group>" → count` of objects left, and `finalizer → count`.
fn remaining_content(store: &Store, ns: &str) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut remaining = BTreeMap::new();
    let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
    for kind in namespaced_kinds() {
        let mut n = 0;
        for e in store.list(kind, Some(ns)) {
            n += 1;
            for f in e.obj.meta().finalizers.iter().flatten() {
                *finalizers.entry(f.clone()).or_default() += 1;
            }
        }
        if n > 0 {
            let info = kind.info();
            remaining.insert(format!("{}.{}", info.plural, info.group), n);
        }
    }
    (remaining, finalizers)
}

/// `namespaceConditionUpdater.Update`: the five deletion conditions, "ok" unless content or
/// finalizers remain.
fn update_namespace_conditions(
    ns: &mut Namespace,
    remaining: &BTreeMap<String, usize>,
    finalizers: &BTreeMap<String, usize>,
    now: Timestamp,
) {
    let content = (!remaining.is_empty()).then(|| {
        let parts: Vec<String> = remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        (
            "True",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    });
    let finalizing = (!finalizers.is_empty()).then(|| {
        let parts: Vec<String> = finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        (
            "True",
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    });
    let wanted: [(&str, (&str, &str, String)); 5] = [
        (
            "NamespaceDeletionDiscoveryFailure",
            (
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            (
                "False",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".into(),
            ),
        ),
        (
            "NamespaceDeletionContentFailure",
            (
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            ),
        ),
        (
            "NamespaceContentRemaining",
            content.unwrap_or((
                "False",
                "ContentRemoved",
                "All content successfully removed".into(),
            )),
        ),
        (
            "NamespaceFinalizersRemaining",
            finalizing.unwrap_or((
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )),
        ),
    ];
    let conds = ns
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new);
    for (type_, (status, reason, message)) in wanted {
        match conds.iter_mut().find(|c| c.type_ == type_) {
            None => conds.push(NamespaceCondition {
                type_: type_.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(api::time(now)),
            }),
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(api::time(now));
                }
                c.status = status.into();
                c.reason = Some(reason.into());
                c.message = Some(message);
            }
        }
    }
}

/// The pod GC's `gcOrphaned`: pods bound to a node that no longer exists are marked Failed with
/// a DisruptionTarget condition and force-deleted.
fn collect_pods_on_missing_nodes(store: &mut Store, now: Timestamp) {
    let nodes: HashSet<String> = store
        .list(Kind::Node, None)
        .map(|e| e.obj.name().to_string())
        .collect();
    let orphans: Vec<Object> = store
        .list(Kind::Pod, None)
        .filter(|e| match e.obj.as_ref() {
            Object::Pod(p) => p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty() && !nodes.contains(n)),
            _ => false,
        })
        .map(|e| (*e.obj).clone())
        .collect();
    for mut obj in orphans {
        if let Object::Pod(p) = &mut obj {
            let st = p.status.get_or_insert_with(Default::default);
            if !matches!(st.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
                st.phase = Some("Failed".into());
                let conds = st.conditions.get_or_insert_with(Vec::new);
                conds.retain(|c| c.type_ != "DisruptionTarget");
                conds.push(PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("DeletionByPodGC".into()),
                    message: Some("PodGC: node no longer exists".into()),
                    last_transition_time: Some(api::time(now)),
                    ..Default::default()
                });
            }
        }
        let (ns, name) = (obj.namespace().to_string(), obj.name().to_string());
        update_if_changed(store, obj);
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let _ = api::delete(store, now, Kind::Pod, &ns, &name, &opts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset::tests::{
        at, insert, kubelet, pods, selector, store, t0, template, with_ctx,
    };
    use crate::controllers::replicaset::{controller_ref, pod_from_template};
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{Node, Pod};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pass(s: &mut Store, secs: i64) {
        with_ctx(at(secs), |ctx| reconcile(s, ctx));
    }

    fn rs(s: &mut Store, name: &str, owner: Option<OwnerReference>) -> ReplicaSet {
        let obj = Object::ReplicaSet(ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                selector: selector(&[("app", name)]),
                template: Some(template(&[("app", name)], "x:1")),
                ..Default::default()
            }),
            status: None,
        });
        match insert(s, t0(), obj) {
            Object::ReplicaSet(r) => r,
            _ => unreachable!(),
        }
    }

    fn pod(s: &mut Store, name: &str, owner: OwnerReference) -> Pod {
        let mut p = pod_from_template(&template(&[("app", "x")], "x:1"), "x", "default", owner);
        p.metadata.name = Some(name.into());
        match insert(s, t0(), Object::Pod(p)) {
            Object::Pod(p) => p,
            _ => unreachable!(),
        }
    }

    /// The node the test kubelet binds pods to.
    fn node(s: &mut Store) {
        insert(
            s,
            t0(),
            Object::Node(Node {
                metadata: ObjectMeta {
                    name: Some("node-1".into()),
                    ..Default::default()
                },
                ..Default::default()
            }),
        );
    }

    fn exists(s: &Store, kind: Kind, name: &str) -> bool {
        s.get(kind, "default", name).is_some()
    }

    #[test]
    fn deletes_orphans_down_the_chain() {
        let mut s = store();
        node(&mut s);
        let d = insert(
            &mut s,
            t0(),
            Object::Deployment(Deployment {
                metadata: ObjectMeta {
                    name: Some("web".into()),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                spec: Some(DeploymentSpec {
                    selector: selector(&[("app", "web")]),
                    template: template(&[("app", "web")], "x:1"),
                    ..Default::default()
                }),
                status: None,
            }),
        );
        let owned = rs(&mut s, "web-1", Some(controller_ref(Kind::Deployment, d.meta())));
        pod(
            &mut s,
            "web-1-a",
            controller_ref(Kind::ReplicaSet, &owned.metadata),
        );
        let lone = rs(&mut s, "lone", None);
        pod(&mut s, "lone-a", controller_ref(Kind::ReplicaSet, &lone.metadata));
        kubelet(&mut s, at(1), "node-1", &[]);
        let rv = s.rv();
        pass(&mut s, 2);
        assert_eq!(s.rv(), rv, "nothing to collect");

        s.remove(Kind::Deployment, "default", "web");
        pass(&mut s, 3);
        assert!(
            !exists(&s, Kind::ReplicaSet, "web-1"),
            "ReplicaSet of a deleted Deployment is collected"
        );
        let p = pods(&s)
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some("web-1-a"));
        assert!(
            p.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
            "its bound pod terminates gracefully in the same pass"
        );
        assert!(
            exists(&s, Kind::ReplicaSet, "lone") && exists(&s, Kind::Pod, "lone-a"),
            "live owners keep dependents"
        );
    }

    #[test]
    fn owner_with_same_name_but_new_uid_does_not_count() {
        let mut s = store();
        let old = rs(&mut s, "web", None);
        pod(&mut s, "web-a", controller_ref(Kind::ReplicaSet, &old.metadata));
        s.remove(Kind::ReplicaSet, "default", "web");
        rs(&mut s, "web", None);
        pass(&mut s, 1);
        assert!(
            !exists(&s, Kind::Pod, "web-a"),
            "unbound orphan pod deleted at once"
        );
    }

    #[test]
    fn dangling_reference_beside_a_live_owner_is_dropped() {
        let mut s = store();
        let a = rs(&mut s, "a", None);
        let mut gone = controller_ref(
            Kind::ReplicaSet,
            &ObjectMeta {
                name: Some("gone".into()),
                uid: Some("no-such-uid".into()),
                ..Default::default()
            },
        );
        gone.controller = None;
        let mut p = pod_from_template(
            &template(&[("app", "x")], "x:1"),
            "x",
            "default",
            controller_ref(Kind::ReplicaSet, &a.metadata),
        );
        p.metadata.name = Some("p".into());
        p.metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(gone);
        insert(&mut s, t0(), Object::Pod(p));
        pass(&mut s, 1);
        let refs = pods(&s)
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some("p"))
            .and_then(|p| p.metadata.owner_references)
            .unwrap_or_default();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].name, "a");
    }

    #[test]
    fn unknown_owner_kinds_are_left_alone() {
        let mut s = store();
        let owner = OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "j".into(),
            uid: "u".into(),
            ..Default::default()
        };
        pod(&mut s, "job-pod", owner);
        pass(&mut s, 1);
        assert!(exists(&s, Kind::Pod, "job-pod"));
    }

    #[test]
    fn foreground_deletion_waits_for_dependents() {
        let mut s = store();
        node(&mut s);
        let owner = rs(&mut s, "web", None);
        pod(&mut s, "web-a", controller_ref(Kind::ReplicaSet, &owner.metadata));
        kubelet(&mut s, at(1), "node-1", &[]);
        let mut o = Object::ReplicaSet(owner);
        o.meta_mut().finalizers = Some(vec![FOREGROUND.into()]);
        o.meta_mut().deletion_timestamp = Some(api::time(at(2)));
        s.replace(o);
        pass(&mut s, 2);
        assert!(exists(&s, Kind::ReplicaSet, "web"), "owner waits");
        assert!(pods(&s).iter().all(|p| p.metadata.deletion_timestamp.is_some()));
        kubelet(&mut s, at(3), "node-1", &[]);
        pass(&mut s, 3);
        assert!(
            !exists(&s, Kind::ReplicaSet, "web"),
            "gone once its dependents are"
        );
    }

    #[test]
    fn namespace_deletion_empties_then_removes_it() {
        let mut s = store();
        node(&mut s);
        let owner = rs(&mut s, "web", None);
        pod(&mut s, "web-a", controller_ref(Kind::ReplicaSet, &owner.metadata));
        kubelet(&mut s, at(1), "node-1", &[]);
        let _ = api::delete(
            &mut s,
            at(2),
            Kind::Namespace,
            "",
            "default",
            &DeleteOptions::default(),
        );
        pass(&mut s, 2);
        assert!(!exists(&s, Kind::ReplicaSet, "web"));
        let ns = match s.get_obj(Kind::Namespace, "", "default").as_deref() {
            Some(Object::Namespace(n)) => n.clone(),
            _ => panic!("namespace gone before its pods"),
        };
        let conds = ns.status.and_then(|s| s.conditions).unwrap_or_default();
        let remaining = conds
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .cloned()
            .unwrap_or_default();
        assert_eq!(remaining.status, "True");
        assert_eq!(
            remaining.message.as_deref(),
            Some("Some resources are remaining: pods. has 1 resource instances")
        );
        assert_eq!(conds.len(), 5);
        kubelet(&mut s, at(3), "node-1", &[]);
        pass(&mut s, 3);
        assert!(
            s.get(Kind::Namespace, "", "default").is_none(),
            "removed once empty"
        );
        assert_eq!(s.count(Kind::Pod), 0);
    }

    #[test]
    fn pods_on_vanished_nodes_are_force_deleted() {
        let mut s = store();
        node(&mut s);
        let owner = rs(&mut s, "web", None);
        pod(&mut s, "web-a", controller_ref(Kind::ReplicaSet, &owner.metadata));
        kubelet(&mut s, at(1), "node-1", &[]);
        pass(&mut s, 2);
        assert!(exists(&s, Kind::Pod, "web-a"));
        s.remove(Kind::Node, "", "node-1");
        pass(&mut s, 3);
        assert!(!exists(&s, Kind::Pod, "web-a"));
    }
}
