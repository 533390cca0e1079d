//! The seam between the steps and the Kubernetes API: the small set of operations steps need.
//! One real implementation ([`KubeCluster`], kube-rs) and, for unit tests, an in-memory fake
//! (`fake::FakeCluster`).

#[cfg(test)]
pub mod fake;
pub mod kube;

use std::collections::BTreeMap;
use std::future::Future;

use futures::stream::BoxStream;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;

#[cfg(test)]
pub use self::fake::FakeCluster;
pub use self::kube::KubeCluster;

/// What went wrong talking to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The object does not exist (HTTP 404).
    #[error("{what}: not found")]
    NotFound {
        /// The object or call, e.g. `node ip-10-0-1-1`.
        what: String,
    },
    /// A write carried a stale resourceVersion (HTTP 409); read again and retry.
    #[error("{what}: conflict: {message}")]
    Conflict {
        /// The object or call.
        what: String,
        /// The server's message.
        message: String,
    },
    /// The server refused or failed the call.
    #[error("{what}: HTTP {code} {reason}: {message}")]
    Api {
        /// The object or call.
        what: String,
        /// HTTP status code.
        code: u16,
        /// The Status reason (`Forbidden`, `TooManyRequests`, …).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The call did not reach the server or its answer could not be read.
    #[error("{what}: {message}")]
    Transport {
        /// The object or call.
        what: String,
        /// What failed.
        message: String,
    },
}

impl ClusterError {
    /// Whether retrying the same call later may succeed (conflicts, throttling, 5xx, transport).
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::NotFound { .. } => false,
            ClusterError::Conflict { .. } | ClusterError::Transport { .. } => true,
            ClusterError::Api { code, .. } => *code == 429 || *code >= 500,
        }
    }
}

/// Result of cluster calls.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// The answer to one eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// The pod is being deleted.
    Evicted,
    /// The pod was already gone.
    Gone,
    /// A PodDisruptionBudget refused (HTTP 429); `pdbs` as named by the server, if it did.
    Blocked {
        /// Names of the blocking budgets found in the answer's causes.
        pdbs: Vec<String>,
        /// The server's message.
        message: String,
    },
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched<K> {
    /// Every object the watch covers, as of now: sent first, and again after the watch had to
    /// start over (a re-list); it replaces everything known before.
    Listed(Vec<K>),
    /// An object was created or changed.
    Applied(K),
    /// An object was deleted (its last state).
    Deleted(K),
}

/// A never-ending stream of changes; errors are reported as they happen and the watch goes on
/// (re-listing when it must), so a consumer decides which errors are fatal.
pub type WatchStream<K> = BoxStream<'static, Result<Watched<K>>>;

/// Changes to a Deployment, sent as a JSON merge patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentPatch {
    /// Annotations to set (`Some`) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
    /// New `spec.replicas`.
    pub replicas: Option<i32>,
}

/// Changes to a HorizontalPodAutoscaler, sent as a JSON merge patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HpaPatch {
    /// Annotations to set (`Some`) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
    /// New `spec.minReplicas`.
    pub min_replicas: Option<i32>,
    /// New `spec.maxReplicas`.
    pub max_replicas: Option<i32>,
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// `v1`, `apps/v1`, …
    pub api_version: String,
    /// `Node`, `Deployment`, `Pod`, …
    pub kind: String,
    /// Namespace (`None` for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID, when known.
    pub uid: Option<String>,
}

impl ObjectRef {
    /// A reference to a node.
    pub fn node(node: &Node) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "Node".into(),
            namespace: None,
            name: node.metadata.name.clone().unwrap_or_default(),
            uid: node.metadata.uid.clone(),
        }
    }

    /// A reference to a Deployment.
    pub fn deployment(d: &Deployment) -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: d.metadata.namespace.clone(),
            name: d.metadata.name.clone().unwrap_or_default(),
            uid: d.metadata.uid.clone(),
        }
    }

    /// A reference to a pod.
    pub fn pod(p: &Pod) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: p.metadata.namespace.clone(),
            name: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone(),
        }
    }
}

/// `Normal` or `Warning`, as Kubernetes Events have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// Routine progress.
    Normal,
    /// Something an operator should look at (forced deletions, skipped nodes, failures).
    Warning,
}

/// One Kubernetes Event to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventNote {
    /// What the Event is about.
    pub regarding: ObjectRef,
    /// Normal or Warning.
    pub type_: EventType,
    /// Short CamelCase reason (`Tainted`, `SurgeScaled`, `Drained`, …).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// The operations the agent's steps perform on their cluster.
///
/// Futures are `Send` so a step can run on any tokio worker and be aborted at any await point.
pub trait Cluster: Send + Sync {
    /// The API server's version (`v1.33.4-eks-…`).
    fn version(&self) -> impl Future<Output = Result<String>> + Send;
    /// The API server's `/metrics` in the Prometheus text format (needs `get` on the
    /// non-resource URL `/metrics`).
    fn api_server_metrics(&self) -> impl Future<Output = Result<String>> + Send;
    /// All nodes.
    fn nodes(&self) -> impl Future<Output = Result<Vec<Node>>> + Send;
    /// One node by name ([`ClusterError::NotFound`] if absent).
    fn node(&self, name: &str) -> impl Future<Output = Result<Node>> + Send;
    /// Replaces a node; the node's resourceVersion guards against lost updates
    /// ([`ClusterError::Conflict`] when stale).
    fn replace_node(&self, node: &Node) -> impl Future<Output = Result<Node>> + Send;
    /// Pods in every namespace, or only those bound to `node`.
    fn pods(&self, node: Option<&str>) -> impl Future<Output = Result<Vec<Pod>>> + Send;
    /// Deployments in every namespace.
    fn deployments(&self) -> impl Future<Output = Result<Vec<Deployment>>> + Send;
    /// ReplicaSets in every namespace.
    fn replica_sets(&self) -> impl Future<Output = Result<Vec<ReplicaSet>>> + Send;
    /// DaemonSets in one namespace (the inventory reads kube-system's add-on images).
    fn daemon_sets(&self, namespace: &str) -> impl Future<Output = Result<Vec<DaemonSet>>> + Send;
    /// Patches a Deployment's annotations and replicas.
    fn patch_deployment(
        &self,
        namespace: &str,
        name: &str,
        patch: &DeploymentPatch,
    ) -> impl Future<Output = Result<Deployment>> + Send;
    /// HorizontalPodAutoscalers (autoscaling/v2) in every namespace.
    fn hpas(&self) -> impl Future<Output = Result<Vec<HorizontalPodAutoscaler>>> + Send;
    /// Patches a HorizontalPodAutoscaler's annotations and replica bounds.
    fn patch_hpa(
        &self,
        namespace: &str,
        name: &str,
        patch: &HpaPatch,
    ) -> impl Future<Output = Result<HorizontalPodAutoscaler>> + Send;
    /// PodDisruptionBudgets (policy/v1) in every namespace, with their status.
    fn pdbs(&self) -> impl Future<Output = Result<Vec<PodDisruptionBudget>>> + Send;
    /// Watches the pods bound to `node`, or every pod in the cluster (a list, then every change).
    fn watch_pods(&self, node: Option<&str>) -> WatchStream<Pod>;
    /// Watches PodDisruptionBudgets in every namespace, with their status.
    fn watch_pdbs(&self) -> WatchStream<PodDisruptionBudget>;
    /// Evicts a pod through the Eviction API (PodDisruptionBudgets honoured by the server).
    fn evict(&self, namespace: &str, name: &str) -> impl Future<Output = Result<Eviction>> + Send;
    /// Deletes a pod outright (no PodDisruptionBudget check); `Ok` if it was already gone.
    fn delete_pod(&self, namespace: &str, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Records a Kubernetes Event.
    fn record_event(&self, event: &EventNote) -> impl Future<Output = Result<()>> + Send;
}
