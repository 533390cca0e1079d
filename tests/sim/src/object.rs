//! Typed objects as the simulator stores them, one variant per served kind.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::resources::Kind;

/// One stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// core/v1 Namespace
    Namespace(Namespace),
    /// core/v1 Node
    Node(Node),
    /// core/v1 Pod
    Pod(Pod),
    /// core/v1 Event
    Event(Event),
    /// apps/v1 Deployment
    Deployment(Deployment),
    /// apps/v1 ReplicaSet
    ReplicaSet(ReplicaSet),
    /// apps/v1 DaemonSet
    DaemonSet(DaemonSet),
    /// autoscaling/v2 HorizontalPodAutoscaler
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    /// policy/v1 PodDisruptionBudget
    PodDisruptionBudget(PodDisruptionBudget),
    /// coordination.k8s.io/v1 Lease
    Lease(Lease),
}

/// Runs `$body` with `$o` bound to the inner typed object, whatever the variant.
macro_rules! each_object {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Object::Namespace($o) => $body,
            Object::Node($o) => $body,
            Object::Pod($o) => $body,
            Object::Event($o) => $body,
            Object::Deployment($o) => $body,
            Object::ReplicaSet($o) => $body,
            Object::DaemonSet($o) => $body,
            Object::HorizontalPodAutoscaler($o) => $body,
            Object::PodDisruptionBudget($o) => $body,
            Object::Lease($o) => $body,
        }
    };
}

impl Object {
    /// The kind of this object.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Event(_) => Kind::Event,
            Object::Deployment(_) => Kind::Deployment,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::DaemonSet(_) => Kind::DaemonSet,
            Object::HorizontalPodAutoscaler(_) => Kind::HorizontalPodAutoscaler,
            Object::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
            Object::Lease(_) => Kind::Lease,
        }
    }

    /// An empty object of `kind` (for checking which fields a kind supports).
    pub fn empty(kind: Kind) -> Object {
        match kind {
            Kind::Namespace => Object::Namespace(Default::default()),
            Kind::Node => Object::Node(Default::default()),
            Kind::Pod => Object::Pod(Default::default()),
            Kind::Event => Object::Event(Default::default()),
            Kind::Deployment => Object::Deployment(Default::default()),
            Kind::ReplicaSet => Object::ReplicaSet(Default::default()),
            Kind::DaemonSet => Object::DaemonSet(Default::default()),
            Kind::HorizontalPodAutoscaler => Object::HorizontalPodAutoscaler(Default::default()),
            Kind::PodDisruptionBudget => Object::PodDisruptionBudget(Default::default()),
            Kind::Lease => Object::Lease(Default::default()),
        }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each_object!(self, o => &o.metadata)
    }

    /// The object's metadata, mutable.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_object!(self, o => &mut o.metadata)
    }

    /// Namespace (empty for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        self.meta().namespace.as_deref().unwrap_or("")
    }

    /// Name.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    /// The object as JSON, with `apiVersion` and `kind` set.
    pub fn to_json(&self) -> Value {
        let mut v = each_object!(self, o => serde_json::to_value(o)).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            let info = self.kind().info();
            map.insert("apiVersion".into(), Value::String(info.api_version()));
            map.insert("kind".into(), Value::String(info.kind_name.into()));
        }
        v
    }

    /// Reads an object of `kind` from JSON. The error says which field did not fit, as
    /// `serde_path_to_error` names it.
    pub fn from_json(kind: Kind, value: Value) -> Result<Object, String> {
        fn de<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    e.inner().to_string()
                } else {
                    format!("{}: {}", path, e.inner())
                }
            })
        }
        Ok(match kind {
            Kind::Namespace => Object::Namespace(de(value)?),
            Kind::Node => Object::Node(de(value)?),
            Kind::Pod => Object::Pod(de(value)?),
            Kind::Event => Object::Event(de(value)?),
            Kind::Deployment => Object::Deployment(de(value)?),
            Kind::ReplicaSet => Object::ReplicaSet(de(value)?),
            Kind::DaemonSet => Object::DaemonSet(de(value)?),
            Kind::HorizontalPodAutoscaler => Object::HorizontalPodAutoscaler(de(value)?),
            Kind::PodDisruptionBudget => Object::PodDisruptionBudget(de(value)?),
            Kind::Lease => Object::Lease(de(value)?),
        })
    }

    /// The value of a field-selector field, or `None` where this kind does not support it
    /// (the server then answers 400 as a real one does). Missing values read as `""`.
    pub fn field(&self, path: &str) -> Option<String> {
        let meta = self.meta();
        match path {
            "metadata.name" => return Some(meta.name.clone().unwrap_or_default()),
            "metadata.namespace" if self.kind().info().namespaced => {
                return Some(meta.namespace.clone().unwrap_or_default())
            }
            _ => {}
        }
        let s = |o: Option<&String>| Some(o.cloned().unwrap_or_default());
        match self {
            Object::Pod(p) => {
                let spec = p.spec.as_ref();
                let status = p.status.as_ref();
                match path {
                    "spec.nodeName" => s(spec.and_then(|s| s.node_name.as_ref())),
                    "spec.restartPolicy" => s(spec.and_then(|s| s.restart_policy.as_ref())),
                    "spec.schedulerName" => s(spec.and_then(|s| s.scheduler_name.as_ref())),
                    "spec.serviceAccountName" => s(spec.and_then(|s| s.service_account_name.as_ref())),
                    "spec.hostNetwork" => {
                        Some(spec.and_then(|s| s.host_network).unwrap_or(false).to_string())
                    }
                    "status.phase" => s(status.and_then(|s| s.phase.as_ref())),
                    "status.podIP" => s(status.and_then(|s| s.pod_ip.as_ref())),
                    "status.nominatedNodeName" => s(status.and_then(|s| s.nominated_node_name.as_ref())),
                    _ => None,
                }
            }
            Object::Node(n) => match path {
                "spec.unschedulable" => Some(
                    n.spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false)
                        .to_string(),
                ),
                _ => None,
            },
            Object::Namespace(n) => match path {
                "status.phase" => s(n.status.as_ref().and_then(|s| s.phase.as_ref())),
                _ => None,
            },
            Object::Event(e) => {
                let io = &e.involved_object;
                match path {
                    "involvedObject.kind" => s(io.kind.as_ref()),
                    "involvedObject.namespace" => s(io.namespace.as_ref()),
                    "involvedObject.name" => s(io.name.as_ref()),
                    "involvedObject.uid" => s(io.uid.as_ref()),
                    "involvedObject.apiVersion" => s(io.api_version.as_ref()),
                    "involvedObject.resourceVersion" => s(io.resource_version.as_ref()),
                    "involvedObject.fieldPath" => s(io.field_path.as_ref()),
                    "reason" => s(e.reason.as_ref()),
                    "reportingComponent" => s(e.reporting_component.as_ref()),
                    "source" => s(e.source.as_ref().and_then(|s| s.component.as_ref())),
                    "type" => s(e.type_.as_ref()),
                    _ => None,
                }
            }
            Object::ReplicaSet(r) => match path {
                "status.replicas" => Some(r.status.as_ref().map(|s| s.replicas).unwrap_or(0).to_string()),
                _ => None,
            },
            _ => None,
        }
    }
}
