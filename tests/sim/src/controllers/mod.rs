//! The cluster's control loops: each reconciles the whole store once per pass, the way the
//! kube-controller-manager, kube-scheduler and kubelets would, and says when it next needs to run.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

use crate::api;
use crate::object::Object;
use crate::resources::Kind;
use crate::scenario::eks::DeprecatedApiRequestSpec;
use crate::store::Store;

/// How a cluster's simulated kubelets, nodes and API clients behave: delays and injected faults.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Scheduled pod → containers running.
    pub pod_start_delay: Duration,
    /// Running → Ready (default for every pod).
    pub readiness_delay: Duration,
    /// Per `namespace/deployment`: a readiness delay overriding the default.
    pub readiness_overrides: HashMap<(String, String), Duration>,
    /// How long containers take to exit after SIGTERM (bounded by the grace period).
    pub termination: Duration,
    /// New node registered → Ready.
    pub node_ready_delay: Duration,
    /// Pods of these `namespace/deployment`s never become Ready.
    pub never_ready: Vec<(String, String)>,
    /// Nodes (by name) that stay NotReady.
    pub not_ready_nodes: Vec<String>,
    /// Added to every API call.
    pub api_latency: Duration,
    /// Share of API calls answered 503 (0.0 ..= 1.0).
    pub api_error_rate: f64,
    /// Clients that keep calling deprecated APIs (the API server's `/metrics` counts them).
    pub deprecated_api_requests: Vec<DeprecatedApiRequestSpec>,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            pod_start_delay: Duration::from_millis(100),
            readiness_delay: Duration::from_millis(300),
            readiness_overrides: HashMap::new(),
            termination: Duration::from_millis(500),
            node_ready_delay: Duration::from_secs(1),
            never_ready: Vec::new(),
            not_ready_nodes: Vec::new(),
            api_latency: Duration::ZERO,
            api_error_rate: 0.0,
            deprecated_api_requests: Vec::new(),
        }
    }
}

/// What one reconcile pass knows: the time and the cluster's behaviour.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Now.
    pub now: Timestamp,
    /// Delays and faults.
    pub behaviour: &'a Behaviour,
    /// The cluster's Kubernetes minor version, e.g. `"1.33"`.
    pub version: &'a str,
}

/// When a controller wants to run again without being woken by a change.
#[derive(Debug, Default, Clone, Copy)]
pub struct Next(pub Option<Timestamp>);

impl Next {
    /// Keeps the earlier of the two deadlines.
    pub fn at(&mut self, t: Timestamp) {
        self.0 = Some(match self.0 {
            Some(cur) if cur <= t => cur,
            _ => t,
        });
    }

    /// Merges another controller's wish.
    pub fn merge(&mut self, other: Next) {
        if let Some(t) = other.0 {
            self.at(t);
        }
    }
}

/// Most Events kept per cluster (oldest dropped first), bounding memory in large fleets.
pub const MAX_EVENTS: usize = 1000;

/// Records a Kubernetes Event about `obj`, or bumps the count of an identical recent one, as
/// client-go's event recorder does.
pub fn record_event(
    store: &mut Store,
    now: Timestamp,
    obj: &Object,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let meta = obj.meta();
    let ns = if obj.namespace().is_empty() {
        "default".to_string()
    } else {
        obj.namespace().to_string()
    };
    let same = store
        .list(Kind::Event, Some(&ns))
        .find(|e| match e.obj.as_ref() {
            Object::Event(ev) => {
                ev.involved_object.uid == meta.uid
                    && ev.reason.as_deref() == Some(reason)
                    && ev.message.as_deref() == Some(message)
            }
            _ => false,
        })
        .map(|e| e.obj.clone());
    if let Some(existing) = same {
        if let Object::Event(mut ev) = (*existing).clone() {
            ev.count = Some(ev.count.unwrap_or(1) + 1);
            ev.last_timestamp = Some(api::time(now));
            store.replace(Object::Event(ev));
        }
        return;
    }
    let info = obj.kind().info();
    // The time plus the store's next resource version: unique even for several events about one
    // object in one pass.
    let name = format!(
        "{}.{:x}",
        obj.name(),
        (now.as_nanosecond() as u64).wrapping_add(store.rv())
    );
    let mut ev = Object::Event(Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(info.api_version()),
            kind: Some(info.kind_name.to_string()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            field_path: None,
        },
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(type_.to_string()),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: None,
        }),
        first_timestamp: Some(api::time(now)),
        last_timestamp: Some(api::time(now)),
        event_time: Some(MicroTime(now)),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(component.to_string()),
        count: Some(1),
        ..Default::default()
    });
    api::prepare_for_create(&mut ev, now);
    store.insert(ev);
    if store.count(Kind::Event) > MAX_EVENTS {
        let oldest = store
            .list(Kind::Event, None)
            .min_by_key(|e| e.obj.meta().creation_timestamp.as_ref().map(|t| t.0))
            .map(|e| (e.obj.namespace().to_string(), e.obj.name().to_string()));
        if let Some((ns, name)) = oldest {
            store.remove(Kind::Event, &ns, &name);
        }
    }
}

/// Writes `obj` over the stored object of the same key if it differs (resourceVersion aside).
/// Controllers must only write through this (or insert/remove), so that a pass that changes
/// nothing writes nothing, and the loop settles.
pub fn update_if_changed(store: &mut Store, mut obj: Object) -> bool {
    let Some(cur) = store.get_obj(obj.kind(), obj.namespace(), obj.name()) else {
        return false;
    };
    obj.meta_mut().resource_version = cur.meta().resource_version.clone();
    if *cur == obj {
        return false;
    }
    store.replace(obj);
    true
}

/// Creates an object from a controller (uid, creation time, defaults as the API server would).
pub fn create(store: &mut Store, now: Timestamp, mut obj: Object) -> Option<crate::store::Entry> {
    if store.get(obj.kind(), obj.namespace(), obj.name()).is_some() {
        return None;
    }
    api::prepare_for_create(&mut obj, now);
    crate::defaults::apply(&mut obj);
    Some(store.insert(obj))
}
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod gc;
pub mod hpa;
pub mod kubelet;
pub mod nodelifecycle;
pub mod replicaset;
pub mod scheduler;

/// Runs the workload controllers of the kube-controller-manager once, in order: garbage
/// collector (with namespace deletion and the pod GC), Deployment, ReplicaSet, DaemonSet,
/// HorizontalPodAutoscaler. Returns the earliest time any of them wants to run again.
pub fn reconcile_workloads(store: &mut Store, ctx: &Ctx) -> Next {
    let mut next = Next::default();
    next.merge(gc::reconcile(store, ctx));
    next.merge(deployment::reconcile(store, ctx));
    next.merge(replicaset::reconcile(store, ctx));
    next.merge(daemonset::reconcile(store, ctx));
    next.merge(hpa::reconcile(store, ctx));
    next
}

/// The node side of a pass: node lifecycle, scheduler, kubelets, then the disruption controller.
pub fn reconcile_nodes(store: &mut Store, ctx: &Ctx) -> Next {
    let mut next = nodelifecycle::reconcile(store, ctx);
    next.merge(scheduler::reconcile(store, ctx));
    next.merge(kubelet::reconcile(store, ctx));
    next.merge(disruption::reconcile(store, ctx));
    next
}
