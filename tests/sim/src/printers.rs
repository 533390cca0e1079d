//! Server-side `meta.k8s.io/v1` Table output, with the columns and cell formats of the
//! kube-apiserver's printers (`pkg/printers/internalversion/printers.go`) for the kinds we serve.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec, MetricStatus, MetricTarget};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Event, Namespace, Node, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sLabelSelector, MicroTime, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::object::Object;
use crate::resources::Kind;
use crate::selector::{go_quote, LabelSelector};

/// What each row's `object` carries, from the `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `None`: `"object": null`.
    None,
    /// `Metadata` (the default): a `meta.k8s.io/v1` PartialObjectMetadata.
    #[default]
    Metadata,
    /// `Object`: the full object.
    Object,
}

impl IncludeObject {
    /// Reads the `includeObject` query parameter (absent or empty means `Metadata`). The error
    /// is the real server's 400 message for any other value.
    pub fn parse(s: Option<&str>) -> Result<IncludeObject, String> {
        match s.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(format!(
                "Unable to convert to Table as requested: includeObject: Invalid value: {}: must be 'Metadata', \
                 'Object', 'None', or empty",
                go_quote(other)
            )),
        }
    }
}

/// A `TableColumnDefinition`.
struct Column {
    name: &'static str,
    type_: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: OBJECT_META_NAME,
    priority: 0,
};
const AGE: Column = col("Age", "string", OBJECT_META_CREATION);
const CONTAINERS: Column = wide("Containers", "string", "Names of each container in the template.");
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

// Descriptions are the types' swagger docs, as k8s-openapi carries them for v1.33. Where the
// real printers quote extensions/v1beta1 or autoscaling/v2beta1 docs we use apps/v1 and
// autoscaling/v2 ones; kubectl never shows descriptions.
const OBJECT_META_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const OBJECT_META_CREATION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const POD_STATUS_POD_IP: &str =
    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const POD_SPEC_NODE_NAME: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const POD_STATUS_NOMINATED: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const POD_SPEC_READINESS_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
const POD_SPEC_NODE_SELECTOR: &str = "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/";
const RS_SPEC_REPLICAS: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const RS_STATUS_READY: &str =
    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";
const RS_SPEC_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const DS_STATUS_DESIRED: &str = "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const DS_STATUS_CURRENT: &str = "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const DS_STATUS_READY: &str = "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.";
const DS_STATUS_UPDATED: &str = "The total number of nodes that are running updated daemon pod";
const DS_STATUS_AVAILABLE: &str = "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)";
const DS_SPEC_SELECTOR: &str = "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const DEPLOY_STATUS_UPDATED: &str =
    "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";
const DEPLOY_STATUS_AVAILABLE: &str = "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";
const DEPLOY_SPEC_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.";
const NODE_INFO_KUBELET: &str = "Kubelet Version reported by the node.";
const NODE_STATUS_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const NODE_INFO_OS_IMAGE: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const NODE_INFO_KERNEL: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const NODE_INFO_RUNTIME: &str =
    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
const EVENT_LAST_TIMESTAMP: &str = "The time at which the most recent occurrence of this event was recorded.";
const EVENT_TYPE: &str = "Type of this event (Normal, Warning), new types could be added in the future";
const EVENT_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const EVENT_INVOLVED_OBJECT: &str = "The object that this event is about.";
const OBJECT_REFERENCE_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const EVENT_SOURCE: &str =
    "The component reporting this event. Should be a short machine understandable string.";
const EVENT_MESSAGE: &str = "A human-readable description of the status of this operation.";
const EVENT_FIRST_TIMESTAMP: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const EVENT_COUNT: &str = "The number of times this event has occurred.";
const HPA_SPEC_SCALE_TARGET_REF: &str = "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.";
const HPA_SPEC_METRICS: &str = "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).  The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods.  Ergo, metrics used must decrease as the pod count is increased, and vice-versa.  See the individual metric source types for more information about how each type of metric must respond. If not set, the default metric will be set to 80% average CPU utilization.";
const HPA_SPEC_MIN_REPLICAS: &str = "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured.  Scaling is active as long as at least one metric value is available.";
const HPA_SPEC_MAX_REPLICAS: &str = "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas.";
const HPA_STATUS_CURRENT_REPLICAS: &str = "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.";
const LEASE_SPEC_HOLDER: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";

const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this \
         pod has restarted.",
    ),
    AGE,
    wide("IP", "string", POD_STATUS_POD_IP),
    wide("Node", "string", POD_SPEC_NODE_NAME),
    wide("Nominated Node", "string", POD_STATUS_NOMINATED),
    wide("Readiness Gates", "string", POD_SPEC_READINESS_GATES),
];

const PDB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", RS_SPEC_REPLICAS),
    col("Current", "integer", RS_STATUS_REPLICAS),
    col("Ready", "integer", RS_STATUS_READY),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", RS_SPEC_SELECTOR),
];

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", DS_STATUS_DESIRED),
    col("Current", "integer", DS_STATUS_CURRENT),
    col("Ready", "integer", DS_STATUS_READY),
    col("Up-to-date", "integer", DS_STATUS_UPDATED),
    col("Available", "integer", DS_STATUS_AVAILABLE),
    col("Node Selector", "string", POD_SPEC_NODE_SELECTOR),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", DS_SPEC_SELECTOR),
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", NODE_INFO_KUBELET),
    wide("Internal-IP", "string", NODE_STATUS_ADDRESSES),
    wide("External-IP", "string", NODE_STATUS_ADDRESSES),
    wide("OS-Image", "string", NODE_INFO_OS_IMAGE),
    wide("Kernel-Version", "string", NODE_INFO_KERNEL),
    wide("Container-Runtime", "string", NODE_INFO_RUNTIME),
];

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", EVENT_LAST_TIMESTAMP),
    col("Type", "string", EVENT_TYPE),
    col("Reason", "string", EVENT_REASON),
    col("Object", "string", EVENT_INVOLVED_OBJECT),
    wide("Subobject", "string", OBJECT_REFERENCE_FIELD_PATH),
    wide("Source", "string", EVENT_SOURCE),
    col("Message", "string", EVENT_MESSAGE),
    wide("First Seen", "string", EVENT_FIRST_TIMESTAMP),
    wide("Count", "string", EVENT_COUNT),
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: OBJECT_META_NAME,
        priority: 1,
    },
];

const NAMESPACE_COLUMNS: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "string", DEPLOY_STATUS_UPDATED),
    col("Available", "string", DEPLOY_STATUS_AVAILABLE),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", DEPLOY_SPEC_SELECTOR),
];

const HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "string", HPA_SPEC_SCALE_TARGET_REF),
    col("Targets", "string", HPA_SPEC_METRICS),
    col("MinPods", "string", HPA_SPEC_MIN_REPLICAS),
    col("MaxPods", "string", HPA_SPEC_MAX_REPLICAS),
    col("Replicas", "string", HPA_STATUS_CURRENT_REPLICAS),
    AGE,
];

const LEASE_COLUMNS: &[Column] = &[NAME, col("Holder", "string", LEASE_SPEC_HOLDER), AGE];

fn columns(kind: Kind) -> &'static [Column] {
    match kind {
        Kind::Namespace => NAMESPACE_COLUMNS,
        Kind::Node => NODE_COLUMNS,
        Kind::Pod => POD_COLUMNS,
        Kind::Event => EVENT_COLUMNS,
        Kind::Deployment => DEPLOYMENT_COLUMNS,
        Kind::ReplicaSet => REPLICA_SET_COLUMNS,
        Kind::DaemonSet => DAEMON_SET_COLUMNS,
        Kind::HorizontalPodAutoscaler => HPA_COLUMNS,
        Kind::PodDisruptionBudget => PDB_COLUMNS,
        Kind::Lease => LEASE_COLUMNS,
    }
}

/// A `meta.k8s.io/v1` Table of `objects` (all of `kind`; any other is left out) as JSON, with
/// every column including the `-o wide` ones (priority 1), as the real server always sends them.
/// `list_metadata` becomes the table's `metadata` (`resourceVersion`, `continue`, ...); `now`
/// is the clock AGE and the other durations are measured against.
pub fn table(
    kind: Kind,
    objects: &[&Object],
    include: IncludeObject,
    now: Timestamp,
    list_metadata: Value,
) -> Value {
    let column_definitions: Vec<Value> = columns(kind)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .filter(|o| o.kind() == kind)
        .map(|o| row(o, include, now))
        .collect();
    let metadata = if list_metadata.is_object() {
        list_metadata
    } else {
        json!({})
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

fn row(obj: &Object, include: IncludeObject, now: Timestamp) -> Value {
    let (cells, conditions) = match obj {
        Object::Namespace(o) => (print_namespace(o, now), None),
        Object::Node(o) => (print_node(o, now), None),
        Object::Pod(o) => print_pod(o, now),
        Object::Event(o) => (print_event(o, now), None),
        Object::Deployment(o) => (print_deployment(o, now), None),
        Object::ReplicaSet(o) => (print_replica_set(o, now), None),
        Object::DaemonSet(o) => (print_daemon_set(o, now), None),
        Object::HorizontalPodAutoscaler(o) => (print_hpa(o, now), None),
        Object::PodDisruptionBudget(o) => (print_pdb(o, now), None),
        Object::Lease(o) => (print_lease(o, now), None),
    };
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": serde_json::to_value(obj.meta()).unwrap_or_else(|_| json!({})),
        }),
        IncludeObject::Object => obj.to_json(),
    };
    let mut row = serde_json::Map::new();
    row.insert("cells".into(), Value::Array(cells));
    if let Some(c) = conditions {
        row.insert("conditions".into(), c);
    }
    row.insert("object".into(), object);
    Value::Object(row)
}

// --- durations ----------------------------------------------------------------------------------

/// Kubernetes' `duration.HumanDuration`: a short, ~2-3 significant figure rendering
/// (`"5s"`, `"3m20s"`, `"2d3h"`, `"2y4d"`, ...).
pub fn human_duration(d: Duration) -> String {
    human_duration_nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `HumanDuration` of a signed Go `time.Duration` (nanoseconds): a little negative reads
/// `"0s"`, more reads `"<invalid>"`.
fn human_duration_nanos(d: i64) -> String {
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    let seconds = d / SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z), which Kubernetes treats like an unset time.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

fn is_zero(t: Timestamp) -> bool {
    t.as_second() == GO_ZERO_TIME_SECONDS && t.subsec_nanosecond() == 0
}

/// `translateTimestampSince`: elapsed time since `t`, or `<unknown>` when unset.
fn since(now: Timestamp, t: Option<Timestamp>) -> String {
    match t {
        Some(t) if !is_zero(t) => {
            let nanos = now.as_nanosecond() - t.as_nanosecond();
            human_duration_nanos(i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX }))
        }
        _ => "<unknown>".to_string(),
    }
}

fn ts(t: Option<&Time>) -> Option<Timestamp> {
    t.map(|t| t.0).filter(|t| !is_zero(*t))
}

fn micro(t: Option<&MicroTime>) -> Option<Timestamp> {
    t.map(|t| t.0).filter(|t| !is_zero(*t))
}

fn age(now: Timestamp, obj_meta_created: Option<&Time>) -> Value {
    Value::String(since(now, ts(obj_meta_created)))
}

// --- small formatters ---------------------------------------------------------------------------

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn int(v: impl Into<i64>) -> Value {
    Value::from(v.into())
}

fn or_none(v: Option<&str>) -> String {
    match v {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "<none>".to_string(),
    }
}

/// `labels.FormatLabels`: `k=v,...` sorted by key, `<none>` when empty.
fn format_labels(m: Option<&BTreeMap<String, String>>) -> String {
    let l = m
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    if l.is_empty() {
        "<none>".to_string()
    } else {
        l
    }
}

/// `metav1.FormatLabelSelector`: the selector's string, `<none>` when empty, `<error>` if invalid.
fn format_label_selector(sel: Option<&K8sLabelSelector>) -> String {
    let Some(sel) = sel else {
        return "<none>".to_string();
    };
    match LabelSelector::from_k8s(sel) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s.to_string(),
        Err(_) => "<error>".to_string(),
    }
}

/// `layoutContainerCells`: container names and images, comma-joined.
fn layout_containers(template: Option<&PodTemplateSpec>) -> (Value, Value) {
    let containers: &[Container] = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    let names = containers
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let images = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(",");
    (s(names), s(images))
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// `(*resource.Quantity).String()` of an optional quantity (Go prints `<nil>` for nil). The
/// quantity is shown as stored, not re-canonicalised.
fn quantity(q: Option<&Quantity>) -> String {
    q.map(|q| q.0.clone()).unwrap_or_else(|| "<nil>".to_string())
}

// --- printers -----------------------------------------------------------------------------------

fn print_namespace(o: &Namespace, now: Timestamp) -> Vec<Value> {
    let phase = o
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    vec![
        s(o.metadata.name.clone().unwrap_or_default()),
        s(phase),
        age(now, o.metadata.creation_timestamp.as_ref()),
    ]
}

fn print_lease(o: &Lease, now: Timestamp) -> Vec<Value> {
    let holder = o
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    vec![
        s(o.metadata.name.clone().unwrap_or_default()),
        s(holder),
        age(now, o.metadata.creation_timestamp.as_ref()),
    ]
}

fn print_node(o: &Node, now: Timestamp) -> Vec<Value> {
    let status = o.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().rev().find(|c| c.type_ == "Ready"));
    let mut conditions: Vec<String> = match ready {
        Some(c) if c.status == "True" => vec![c.type_.clone()],
        Some(c) => vec![format!("Not{}", c.type_)],
        None => vec!["Unknown".to_string()],
    };
    if o.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        conditions.push("SchedulingDisabled".to_string());
    }

    let mut roles: Vec<&str> = Vec::new();
    for (k, v) in o.metadata.labels.iter().flatten() {
        let role = match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => role,
            None if k == "kubernetes.io/role" => v.as_str(),
            None => "",
        };
        if !role.is_empty() && !roles.contains(&role) {
            roles.push(role);
        }
    }
    roles.sort_unstable();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };

    let info = status.and_then(|s| s.node_info.as_ref());
    let info_or_unknown = |f: fn(&k8s_openapi::api::core::v1::NodeSystemInfo) -> &String| match info.map(f) {
        Some(v) if !v.is_empty() => v.clone(),
        _ => "<unknown>".to_string(),
    };
    let address = |kind: &str| {
        status
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == kind))
            .map(|a| a.address.clone())
            .unwrap_or_else(|| "<none>".to_string())
    };
    vec![
        s(o.metadata.name.clone().unwrap_or_default()),
        s(conditions.join(",")),
        s(roles),
        age(now, o.metadata.creation_timestamp.as_ref()),
        s(info.map(|i| i.kubelet_version.clone()).unwrap_or_default()),
        s(address("InternalIP")),
        s(address("ExternalIP")),
        s(info_or_unknown(|i| &i.os_image)),
        s(info_or_unknown(|i| &i.kernel_version)),
        s(info_or_unknown(|i| &i.container_runtime_version)),
    ]
}

fn is_restartable_init_container(c: Option<&Container>) -> bool {
    c.and_then(|c| c.restart_policy.as_deref()) == Some("Always")
}

/// `metav1.Time.Before` with `None` as Go's zero time.
fn before(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// `printPod`: the cells, and the row conditions for completed pods.
fn print_pod(pod: &Pod, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    let spec: Option<&PodSpec> = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let init_containers = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or(&[]);
    let pod_conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);

    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let mut total_containers = containers.len();
    let mut ready_containers = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let mut reason = phase.clone();
    if let Some(r) = status.and_then(|s| s.reason.as_deref()).filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    for c in pod_conditions {
        if c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated") {
            reason = "SchedulingGated".to_string();
        }
    }

    let row_conditions = match phase.as_str() {
        "Succeeded" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }])),
        "Failed" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed.",
        }])),
        _ => None,
    };

    let init_container = |name: &str| init_containers.iter().rev().find(|c| c.name == name);
    total_containers += init_containers
        .iter()
        .filter(|c| is_restartable_init_container(Some(c)))
        .count();

    let mut initializing = false;
    let init_statuses = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or(&[]);
    for (i, cs) in init_statuses.iter().enumerate() {
        restarts += i64::from(cs.restart_count);
        let last_terminated = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        if let Some(t) = last_terminated {
            let finished = ts(t.finished_at.as_ref());
            if before(last_restart, finished) {
                last_restart = finished;
            }
        }
        let restartable = is_restartable_init_container(init_container(&cs.name));
        if restartable {
            restartable_init_restarts += i64::from(cs.restart_count);
            if let Some(t) = last_terminated {
                let finished = ts(t.finished_at.as_ref());
                if before(last_restartable_init_restart, finished) {
                    last_restartable_init_restart = finished;
                }
            }
        }
        let terminated = cs.state.as_ref().and_then(|s| s.terminated.as_ref());
        let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
        let waiting_reason = waiting.and_then(|w| w.reason.as_deref()).unwrap_or("");
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        } else if restartable && cs.started == Some(true) {
            if cs.ready {
                ready_containers += 1;
            }
            continue;
        } else if let Some(t) = terminated {
            reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => match t.signal.unwrap_or(0) {
                    0 => format!("Init:ExitCode:{}", t.exit_code),
                    sig => format!("Init:Signal:{sig}"),
                },
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{}/{}", i, init_containers.len());
        }
        initializing = true;
        break;
    }

    let initialized = pod_conditions
        .iter()
        .find(|c| c.type_ == "Initialized")
        .is_some_and(|c| c.status == "True");
    if !initializing || initialized {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        let statuses = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or(&[]);
        for cs in statuses.iter().rev() {
            restarts += i64::from(cs.restart_count);
            if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                let finished = ts(t.finished_at.as_ref());
                if before(last_restart, finished) {
                    last_restart = finished;
                }
            }
            let state = cs.state.as_ref();
            let waiting_reason = state
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref());
            let terminated = state.and_then(|s| s.terminated.as_ref());
            if let Some(r) = waiting_reason.filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if let Some(t) = terminated {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None => match t.signal.unwrap_or(0) {
                        0 => format!("ExitCode:{}", t.exit_code),
                        sig => format!("Signal:{sig}"),
                    },
                };
            } else if cs.ready && state.is_some_and(|s| s.running.is_some()) {
                has_running = true;
                ready_containers += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = pod_conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    if pod.metadata.deletion_timestamp.is_some() {
        if status.and_then(|s| s.reason.as_deref()) == Some("NodeLost") {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(now, Some(t))),
        _ => restarts.to_string(),
    };

    // The internal PodStatus's first pod IP: podIP wins over podIPs[0], as conversion does.
    let pod_ip = status
        .and_then(|s| s.pod_ip.clone().filter(|ip| !ip.is_empty()))
        .or_else(|| {
            status
                .and_then(|s| s.pod_ips.as_ref())
                .and_then(|ips| ips.first())
                .map(|ip| ip.ip.clone())
        });
    let readiness_gates = match spec.and_then(|s| s.readiness_gates.as_deref()) {
        Some(gates) if !gates.is_empty() => {
            let true_conditions = gates
                .iter()
                .filter(|g| {
                    pod_conditions
                        .iter()
                        .find(|c| c.type_ == g.condition_type)
                        .is_some_and(|c| c.status == "True")
                })
                .count();
            format!("{}/{}", true_conditions, gates.len())
        }
        _ => "<none>".to_string(),
    };

    let cells = vec![
        s(pod.metadata.name.clone().unwrap_or_default()),
        s(format!("{ready_containers}/{total_containers}")),
        s(reason),
        s(restarts_str),
        age(now, pod.metadata.creation_timestamp.as_ref()),
        s(or_none(pod_ip.as_deref())),
        s(or_none(spec.and_then(|s| s.node_name.as_deref()))),
        s(or_none(status.and_then(|s| s.nominated_node_name.as_deref()))),
        s(readiness_gates),
    ];
    (cells, row_conditions)
}

fn print_pdb(o: &PodDisruptionBudget, now: Timestamp) -> Vec<Value> {
    let spec = o.spec.as_ref();
    let or_na = |v: Option<&IntOrString>| v.map(int_or_string).unwrap_or_else(|| "N/A".to_string());
    vec![
        s(o.metadata.name.clone().unwrap_or_default()),
        s(or_na(spec.and_then(|s| s.min_available.as_ref()))),
        s(or_na(spec.and_then(|s| s.max_unavailable.as_ref()))),
        int(o.status.as_ref().map(|s| s.disruptions_allowed).unwrap_or(0)),
        age(now, o.metadata.creation_timestamp.as_ref()),
    ]
}

fn print_replica_set(o: &ReplicaSet, now: Timestamp) -> Vec<Value> {
    let spec = o.spec.as_ref();
    let status = o.status.as_ref();
    let (names, images) = layout_containers(spec.and_then(|s| s.template.as_ref()));
    vec![
        s(o.metadata.name.clone().unwrap_or_default()),
        int(spec.and_then(|s| s.replicas).unwrap_or(1)),
        int(status.map(|s| s.replicas).unwrap_or(0)),
        int(status.and_then(|s| s.ready_replicas).unwrap_or(0)),
        age(now, o.metadata.creation_timestamp.as_ref()),
        names,
        images,
        s(format_label_selector(spec.map(|s| &s.selector))),
    ]
}

fn print_daemon_set(o: &DaemonSet, now: Timestamp) -> Vec<Value> {
    let spec = o.spec.as_ref();
    let status = o.status.as_ref();
    let template = spec.map(|s| &s.template);
    let node_selector = template
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.node_selector.as_ref());
    let (names, images) = layout_containers(template);
    vec![
        s(o.metadata.name.clone().unwrap_or_default()),
        int(status.map(|s| s.desired_number_scheduled).unwrap_or(0)),
        int(status.map(|s| s.current_number_scheduled).unwrap_or(0)),
        int(status.map(|s| s.number_ready).unwrap_or(0)),
        int(status.and_then(|s| s.updated_number_scheduled).unwrap_or(0)),
        int(status.and_then(|s| s.number_available).unwrap_or(0)),
        s(format_labels(node_selector)),
        age(now, o.metadata.creation_timestamp.as_ref()),
        names,
        images,
        s(format_label_selector(spec.map(|s| &s.selector))),
    ]
}

fn print_deployment(o: &Deployment, now: Timestamp) -> Vec<Value> {
    let spec = o.spec.as_ref();
    let status = o.status.as_ref();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    // `LabelSelectorAsSelector(...).String()`: no `<none>` here, an unparsable one is `<invalid>`.
    let selector = match spec.map(|s| LabelSelector::from_k8s(&s.selector)) {
        None => String::new(),
        Some(Ok(sel)) => sel.to_string(),
        Some(Err(_)) => "<invalid>".to_string(),
    };
    let (names, images) = layout_containers(spec.map(|s| &s.template));
    vec![
        s(o.metadata.name.clone().unwrap_or_default()),
        s(format!("{ready}/{desired}")),
        int(status.and_then(|s| s.updated_replicas).unwrap_or(0)),
        int(status.and_then(|s| s.available_replicas).unwrap_or(0)),
        age(now, o.metadata.creation_timestamp.as_ref()),
        names,
        images,
        s(selector),
    ]
}

/// One metric's `current/target` for `formatHPAMetrics`.
fn format_hpa_metric(spec: &MetricSpec, status: Option<&MetricStatus>) -> String {
    const UNKNOWN: &str = "<unknown>";
    let default_target = MetricTarget::default();
    match spec.type_.as_str() {
        "External" | "Object" => {
            let (target, current) = if spec.type_ == "External" {
                (
                    spec.external.as_ref().map(|e| &e.target),
                    status.and_then(|s| s.external.as_ref()).map(|e| &e.current),
                )
            } else {
                (
                    spec.object.as_ref().map(|o| &o.target),
                    status.and_then(|s| s.object.as_ref()).map(|o| &o.current),
                )
            };
            let target = target.unwrap_or(&default_target);
            if let Some(avg) = target.average_value.as_ref() {
                let current = current
                    .and_then(|c| c.average_value.as_ref())
                    .map(|q| q.0.clone())
                    .unwrap_or_else(|| UNKNOWN.to_string());
                format!("{current}/{} (avg)", avg.0)
            } else {
                let current = current
                    .map(|c| quantity(c.value.as_ref()))
                    .unwrap_or_else(|| UNKNOWN.to_string());
                format!("{current}/{}", quantity(target.value.as_ref()))
            }
        }
        "Pods" => {
            let current = status
                .and_then(|s| s.pods.as_ref())
                .map(|p| quantity(p.current.average_value.as_ref()))
                .unwrap_or_else(|| UNKNOWN.to_string());
            let target = spec.pods.as_ref().map(|p| &p.target).unwrap_or(&default_target);
            format!("{current}/{}", quantity(target.average_value.as_ref()))
        }
        "Resource" | "ContainerResource" => {
            let (name, target, current) = if spec.type_ == "Resource" {
                (
                    spec.resource.as_ref().map(|r| r.name.as_str()),
                    spec.resource.as_ref().map(|r| &r.target),
                    status.and_then(|s| s.resource.as_ref()).map(|r| &r.current),
                )
            } else {
                (
                    spec.container_resource.as_ref().map(|r| r.name.as_str()),
                    spec.container_resource.as_ref().map(|r| &r.target),
                    status
                        .and_then(|s| s.container_resource.as_ref())
                        .map(|r| &r.current),
                )
            };
            let name = name.unwrap_or("");
            let target = target.unwrap_or(&default_target);
            if let Some(avg) = target.average_value.as_ref() {
                let current = current
                    .map(|c| quantity(c.average_value.as_ref()))
                    .unwrap_or_else(|| UNKNOWN.to_string());
                format!("{name}: {current}/{}", avg.0)
            } else {
                let current = current
                    .and_then(|c| c.average_utilization)
                    .map(|u| format!("{u}%"))
                    .unwrap_or_else(|| UNKNOWN.to_string());
                let target = target
                    .average_utilization
                    .map(|u| format!("{u}%"))
                    .unwrap_or_else(|| "<auto>".to_string());
                format!("{name}: {current}/{target}")
            }
        }
        _ => "<unknown type>".to_string(),
    }
}

/// `formatHPAMetrics`: at most two metrics, then `+ N more...`; `<none>` without metrics.
fn format_hpa_metrics(specs: &[MetricSpec], statuses: &[MetricStatus]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 2;
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| format_hpa_metric(spec, statuses.get(i)))
        .collect();
    let count = list.len();
    if count > MAX {
        format!("{} + {} more...", list[..MAX].join(", "), count - MAX)
    } else {
        list.join(", ")
    }
}

fn print_hpa(o: &HorizontalPodAutoscaler, now: Timestamp) -> Vec<Value> {
    let spec = o.spec.as_ref();
    let status = o.status.as_ref();
    let reference = spec
        .map(|s| format!("{}/{}", s.scale_target_ref.kind, s.scale_target_ref.name))
        .unwrap_or_else(|| "/".to_string());
    let metrics = format_hpa_metrics(
        spec.and_then(|s| s.metrics.as_deref()).unwrap_or(&[]),
        status.and_then(|s| s.current_metrics.as_deref()).unwrap_or(&[]),
    );
    let min_pods = spec
        .and_then(|s| s.min_replicas)
        .map(|m| m.to_string())
        .unwrap_or_else(|| "<unset>".to_string());
    vec![
        s(o.metadata.name.clone().unwrap_or_default()),
        s(reference),
        s(metrics),
        s(min_pods),
        int(spec.map(|s| s.max_replicas).unwrap_or(0)),
        int(status.and_then(|s| s.current_replicas).unwrap_or(0)),
        age(now, o.metadata.creation_timestamp.as_ref()),
    ]
}

fn print_event(o: &Event, now: Timestamp) -> Vec<Value> {
    let first_seen = match ts(o.first_timestamp.as_ref()) {
        Some(t) => since(now, Some(t)),
        None => since(now, micro(o.event_time.as_ref())),
    };
    let mut last_seen = match ts(o.last_timestamp.as_ref()) {
        Some(t) => since(now, Some(t)),
        None => first_seen.clone(),
    };
    let mut count = o.count.unwrap_or(0);
    if let Some(series) = o.series.as_ref() {
        last_seen = since(now, micro(series.last_observed_time.as_ref()));
        count = series.count.unwrap_or(0);
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }
    let io = &o.involved_object;
    let kind = io.kind.as_deref().unwrap_or("").to_lowercase();
    let target = match io.name.as_deref() {
        Some(name) if !name.is_empty() => format!("{kind}/{name}"),
        _ => kind,
    };
    let first_non_empty = |a: Option<&String>, b: Option<&String>| {
        a.filter(|v| !v.is_empty())
            .or(b.filter(|v| !v.is_empty()))
            .cloned()
            .unwrap_or_default()
    };
    let source_ref = o.source.as_ref();
    let component = first_non_empty(
        source_ref.and_then(|s| s.component.as_ref()),
        o.reporting_component.as_ref(),
    );
    let host = first_non_empty(
        source_ref.and_then(|s| s.host.as_ref()),
        o.reporting_instance.as_ref(),
    );
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        s(last_seen),
        s(o.type_.clone().unwrap_or_default()),
        s(o.reason.clone().unwrap_or_default()),
        s(target),
        s(io.field_path.clone().unwrap_or_default()),
        s(source),
        s(o.message.as_deref().unwrap_or("").trim()),
        s(first_seen),
        int(count),
        s(o.metadata.name.clone().unwrap_or_default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::autoscaling::v2::{
        CrossVersionObjectReference, HorizontalPodAutoscalerSpec, HorizontalPodAutoscalerStatus,
        MetricValueStatus, PodsMetricSource, ResourceMetricSource, ResourceMetricStatus,
    };
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, ObjectReference,
        PodCondition, PodStatus,
    };
    use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NOW: i64 = 1_750_000_000;

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).expect("valid")
    }

    /// A time `secs` seconds before NOW.
    fn ago(secs: i64) -> Time {
        Time(Timestamp::from_second(NOW - secs).expect("valid"))
    }

    fn meta(name: &str, age_secs: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            creation_timestamp: Some(ago(age_secs)),
            resource_version: Some("42".into()),
            ..Default::default()
        }
    }

    /// The single row's cells of a one-object table.
    fn cells(obj: Object) -> Vec<Value> {
        let t = table(obj.kind(), &[&obj], IncludeObject::None, now(), json!({}));
        t["rows"][0]["cells"].as_array().cloned().expect("cells")
    }

    #[test]
    fn human_duration_boundaries() {
        let h = |secs: u64| human_duration(Duration::from_secs(secs));
        assert_eq!(h(0), "0s");
        assert_eq!(human_duration(Duration::from_millis(999)), "0s");
        assert_eq!(h(5), "5s");
        assert_eq!(h(119), "119s");
        assert_eq!(h(120), "2m");
        assert_eq!(h(200), "3m20s");
        assert_eq!(h(599), "9m59s");
        assert_eq!(h(600), "10m");
        assert_eq!(h(3 * 3600 - 1), "179m");
        assert_eq!(h(3 * 3600), "3h");
        assert_eq!(h(3 * 3600 + 60), "3h1m");
        assert_eq!(h(8 * 3600 - 1), "7h59m");
        assert_eq!(h(8 * 3600), "8h");
        assert_eq!(h(48 * 3600 - 1), "47h");
        assert_eq!(h(48 * 3600), "2d");
        assert_eq!(h(51 * 3600), "2d3h");
        assert_eq!(h(8 * 86400 - 1), "7d23h");
        assert_eq!(h(8 * 86400), "8d");
        assert_eq!(h(730 * 86400 - 1), "729d");
        assert_eq!(h(730 * 86400), "2y");
        assert_eq!(h(734 * 86400), "2y4d");
        assert_eq!(h(8 * 365 * 86400), "8y");
        assert_eq!(h(u64::MAX), "292y", "saturates like Go's time.Duration");
        assert_eq!(human_duration_nanos(-1_500_000_000), "0s");
        assert_eq!(human_duration_nanos(-2_000_000_000), "<invalid>");
    }

    #[test]
    fn include_object_param() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("Object")), Ok(IncludeObject::Object));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("all")),
            Err(
                "Unable to convert to Table as requested: includeObject: Invalid value: \"all\": must be \
                 'Metadata', 'Object', 'None', or empty"
                    .to_string()
            )
        );
    }

    fn node(ready: &str, unschedulable: bool, labels: &[(&str, &str)]) -> Object {
        Object::Node(Node {
            metadata: ObjectMeta {
                name: Some("ip-10-0-1-5".into()),
                creation_timestamp: Some(ago(3 * 86400 + 4 * 3600)),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..Default::default()
                    },
                    NodeCondition {
                        type_: "Ready".into(),
                        status: ready.into(),
                        ..Default::default()
                    },
                ]),
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: "10.0.1.5".into(),
                }]),
                node_info: Some(NodeSystemInfo {
                    kubelet_version: "v1.33.1-eks-1".into(),
                    os_image: "Amazon Linux 2023".into(),
                    container_runtime_version: "containerd://1.7.27".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn node_table() {
        let cordoned = node(
            "True",
            true,
            &[
                ("node-role.kubernetes.io/worker", ""),
                ("kubernetes.io/role", "spot"),
            ],
        );
        assert_eq!(
            cells(cordoned),
            vec![
                json!("ip-10-0-1-5"),
                json!("Ready,SchedulingDisabled"),
                json!("spot,worker"),
                json!("3d4h"),
                json!("v1.33.1-eks-1"),
                json!("10.0.1.5"),
                json!("<none>"),
                json!("Amazon Linux 2023"),
                json!("<unknown>"),
                json!("containerd://1.7.27"),
            ]
        );
        let not_ready = cells(node("Unknown", false, &[("eks.amazonaws.com/nodegroup", "ng")]));
        assert_eq!(not_ready[1], json!("NotReady"));
        assert_eq!(not_ready[2], json!("<none>"));
        let no_status = cells(Object::Node(Node::default()));
        assert_eq!(no_status[1], json!("Unknown"));
        assert_eq!(no_status[3], json!("<unknown>"), "no creationTimestamp");

        let t = table(
            Kind::Node,
            &[],
            IncludeObject::Metadata,
            now(),
            json!({"resourceVersion": "7"}),
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .expect("cols")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(t["columnDefinitions"][0]["format"], json!("name"));
        assert_eq!(t["columnDefinitions"][5]["priority"], json!(1));
        assert_eq!(t["metadata"], json!({"resourceVersion": "7"}));
        assert_eq!(t["rows"], json!([]));
    }

    fn container_status(name: &str, ready: bool, restarts: i32, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            restart_count: restarts,
            state: Some(state),
            ..Default::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }
    }

    fn pod(statuses: Vec<ContainerStatus>, phase: &str) -> Pod {
        Pod {
            metadata: meta("web-7d4b9c-x2x9q", 300),
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "app".into(),
                        ..Default::default()
                    },
                    Container {
                        name: "sidecar".into(),
                        ..Default::default()
                    },
                ],
                node_name: Some("ip-10-0-1-5".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: Some("10.0.1.17".into()),
                container_statuses: Some(statuses),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pod_table_running_and_restarted() {
        let mut restarted = container_status("sidecar", true, 3, running());
        restarted.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                finished_at: Some(ago(90)),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = pod(
            vec![container_status("app", true, 0, running()), restarted],
            "Running",
        );
        assert_eq!(
            cells(Object::Pod(p)),
            vec![
                json!("web-7d4b9c-x2x9q"),
                json!("2/2"),
                json!("Running"),
                json!("3 (90s ago)"),
                json!("5m"),
                json!("10.0.1.17"),
                json!("ip-10-0-1-5"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_table_waiting_and_terminating() {
        let creating = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = pod(
            vec![container_status("app", false, 0, creating.clone())],
            "Pending",
        );
        let c = cells(Object::Pod(p.clone()));
        assert_eq!(
            (c[1].clone(), c[2].clone(), c[3].clone()),
            (json!("0/2"), json!("ContainerCreating"), json!("0"))
        );

        let mut terminating = pod(vec![container_status("app", true, 0, running())], "Running");
        terminating.metadata.deletion_timestamp = Some(ago(10));
        assert_eq!(cells(Object::Pod(terminating))[2], json!("Terminating"));

        let mut lost = pod(vec![], "Running");
        lost.metadata.deletion_timestamp = Some(ago(10));
        if let Some(s) = lost.status.as_mut() {
            s.reason = Some("NodeLost".into());
        }
        assert_eq!(cells(Object::Pod(lost))[2], json!("Unknown"));

        // A pending pod without any status at all.
        let bare = Pod {
            metadata: meta("bare", 1),
            ..Default::default()
        };
        assert_eq!(
            cells(Object::Pod(bare))[..4],
            [json!("bare"), json!("0/0"), json!(""), json!("0")]
        );
    }

    #[test]
    fn pod_table_init_and_completed() {
        let mut p = pod(vec![], "Pending");
        if let Some(spec) = p.spec.as_mut() {
            spec.init_containers = Some(vec![Container {
                name: "init".into(),
                ..Default::default()
            }]);
        }
        if let Some(status) = p.status.as_mut() {
            status.init_container_statuses = Some(vec![container_status("init", false, 0, running())]);
        }
        assert_eq!(cells(Object::Pod(p))[2], json!("Init:0/1"));

        let done = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Completed".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = pod(vec![container_status("app", false, 0, done)], "Succeeded");
        let obj = Object::Pod(p);
        let t = table(Kind::Pod, &[&obj], IncludeObject::Metadata, now(), json!({}));
        assert_eq!(t["rows"][0]["cells"][2], json!("Completed"));
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], json!("Succeeded"));
        assert_eq!(
            t["rows"][0]["object"],
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": serde_json::to_value(obj.meta()).expect("meta"),
            })
        );
    }

    #[test]
    fn deployment_table() {
        let d = Deployment {
            metadata: meta("web", 7200),
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                selector: K8sLabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![
                            Container {
                                name: "app".into(),
                                image: Some("nginx:1.27".into()),
                                ..Default::default()
                            },
                            Container {
                                name: "log".into(),
                                image: Some("fluent-bit:3".into()),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                ready_replicas: Some(2),
                updated_replicas: Some(3),
                available_replicas: Some(2),
                ..Default::default()
            }),
        };
        let obj = Object::Deployment(d);
        assert_eq!(
            cells(obj.clone()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("120m"),
                json!("app,log"),
                json!("nginx:1.27,fluent-bit:3"),
                json!("app=web"),
            ]
        );
        let t = table(Kind::Deployment, &[&obj], IncludeObject::Object, now(), json!({}));
        assert_eq!(t["rows"][0]["object"], obj.to_json());
        assert_eq!(t["rows"][0]["object"]["kind"], json!("Deployment"));
        // Objects of another kind are left out.
        let other = Object::Lease(Lease::default());
        let t = table(
            Kind::Deployment,
            &[&obj, &other],
            IncludeObject::None,
            now(),
            json!({}),
        );
        assert_eq!(t["rows"].as_array().map(Vec::len), Some(1));
        assert_eq!(t["rows"][0]["object"], Value::Null);
    }

    #[test]
    fn pdb_table() {
        let pdb = |min: Option<IntOrString>, max: Option<IntOrString>| {
            Object::PodDisruptionBudget(PodDisruptionBudget {
                metadata: meta("web-pdb", 45),
                spec: Some(PodDisruptionBudgetSpec {
                    min_available: min,
                    max_unavailable: max,
                    ..Default::default()
                }),
                status: Some(PodDisruptionBudgetStatus {
                    disruptions_allowed: 1,
                    ..Default::default()
                }),
            })
        };
        assert_eq!(
            cells(pdb(Some(IntOrString::Int(2)), None)),
            vec![json!("web-pdb"), json!("2"), json!("N/A"), json!(1), json!("45s")]
        );
        let c = cells(pdb(None, Some(IntOrString::String("25%".into()))));
        assert_eq!((c[1].clone(), c[2].clone()), (json!("N/A"), json!("25%")));
    }

    fn cpu(target: Option<i32>) -> MetricSpec {
        MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: target,
                    ..Default::default()
                },
            }),
            ..Default::default()
        }
    }

    fn hpa(metrics: Option<Vec<MetricSpec>>, current: Option<Vec<MetricStatus>>) -> Object {
        Object::HorizontalPodAutoscaler(HorizontalPodAutoscaler {
            metadata: meta("web", 600),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: "web".into(),
                },
                min_replicas: Some(2),
                max_replicas: 10,
                metrics,
                ..Default::default()
            }),
            status: Some(HorizontalPodAutoscalerStatus {
                current_replicas: Some(3),
                current_metrics: current,
                ..Default::default()
            }),
        })
    }

    #[test]
    fn hpa_table() {
        assert_eq!(
            cells(hpa(Some(vec![cpu(Some(80))]), None)),
            vec![
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: <unknown>/80%"),
                json!("2"),
                json!(10),
                json!(3),
                json!("10m"),
            ]
        );
        let observed = MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: "cpu".into(),
                current: MetricValueStatus {
                    average_utilization: Some(45),
                    ..Default::default()
                },
            }),
            ..Default::default()
        };
        assert_eq!(
            cells(hpa(Some(vec![cpu(Some(80))]), Some(vec![observed])))[2],
            json!("cpu: 45%/80%")
        );
        assert_eq!(cells(hpa(None, None))[2], json!("<none>"));
        assert_eq!(
            cells(hpa(Some(vec![cpu(None)]), None))[2],
            json!("cpu: <unknown>/<auto>")
        );
        let pods = MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                target: MetricTarget {
                    average_value: Some(Quantity("100".into())),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            cells(hpa(
                Some(vec![cpu(Some(80)), pods, cpu(Some(50)), cpu(Some(60))]),
                None
            ))[2],
            json!("cpu: <unknown>/80%, <unknown>/100 + 2 more...")
        );
    }

    #[test]
    fn event_namespace_lease_tables() {
        let e = Event {
            metadata: meta("web-1.17f3", 400),
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web-1".into()),
                field_path: Some("spec.containers{app}".into()),
                ..Default::default()
            },
            type_: Some("Warning".into()),
            reason: Some("BackOff".into()),
            message: Some("Back-off restarting failed container\n".into()),
            first_timestamp: Some(ago(400)),
            last_timestamp: Some(ago(30)),
            count: Some(7),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("kubelet".into()),
                host: Some("ip-10-0-1-5".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            cells(Object::Event(e)),
            vec![
                json!("30s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, ip-10-0-1-5"),
                json!("Back-off restarting failed container"),
                json!("6m40s"),
                json!(7),
                json!("web-1.17f3"),
            ]
        );
        let singleton = Event {
            event_time: Some(MicroTime(Timestamp::from_second(NOW - 5).expect("valid"))),
            reporting_component: Some("scheduler".into()),
            ..Default::default()
        };
        let c = cells(Object::Event(singleton));
        assert_eq!(
            (c[0].clone(), c[3].clone(), c[5].clone(), c[8].clone()),
            (json!("5s"), json!(""), json!("scheduler"), json!(1))
        );

        let ns = Namespace {
            metadata: meta("kube-system", 90_000),
            status: Some(k8s_openapi::api::core::v1::NamespaceStatus {
                phase: Some("Active".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            cells(Object::Namespace(ns)),
            vec![json!("kube-system"), json!("Active"), json!("25h")]
        );
        let lease = Lease {
            metadata: meta("ip-10-0-1-5", 60),
            spec: Some(LeaseSpec {
                holder_identity: Some("ip-10-0-1-5".into()),
                ..Default::default()
            }),
        };
        assert_eq!(
            cells(Object::Lease(lease)),
            vec![json!("ip-10-0-1-5"), json!("ip-10-0-1-5"), json!("60s")]
        );
    }

    #[test]
    fn every_kind_has_matching_cells_and_columns() {
        for info in crate::resources::RESOURCES {
            let obj = Object::from_json(info.kind, json!({"metadata": {"name": "x"}}))
                .or_else(|_| {
                    Object::from_json(
                        info.kind,
                        json!({"metadata": {"name": "x"}, "involvedObject": {}}),
                    )
                })
                .expect("minimal object");
            let t = table(info.kind, &[&obj], IncludeObject::Metadata, now(), json!({}));
            let ncols = t["columnDefinitions"].as_array().map(Vec::len);
            assert_eq!(
                t["rows"][0]["cells"].as_array().map(Vec::len),
                ncols,
                "{:?}",
                info.kind
            );
        }
    }
}
