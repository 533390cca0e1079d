//! The resources the simulated API server serves, as discovery describes them.

use std::fmt;

/// Every kind of object the simulator stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// core/v1 Namespace
    Namespace,
    /// core/v1 Node
    Node,
    /// core/v1 Pod
    Pod,
    /// core/v1 Event
    Event,
    /// apps/v1 Deployment
    Deployment,
    /// apps/v1 ReplicaSet
    ReplicaSet,
    /// apps/v1 DaemonSet
    DaemonSet,
    /// autoscaling/v2 HorizontalPodAutoscaler
    HorizontalPodAutoscaler,
    /// policy/v1 PodDisruptionBudget
    PodDisruptionBudget,
    /// coordination.k8s.io/v1 Lease
    Lease,
}

/// A subresource and the kind it speaks.
#[derive(Debug, Clone, Copy)]
pub struct Subresource {
    /// Path segment after the object name, e.g. `scale`.
    pub name: &'static str,
    /// Group of the subresource's kind (`""` for core).
    pub group: &'static str,
    /// Version of the subresource's kind.
    pub version: &'static str,
    /// Kind the subresource accepts and returns.
    pub kind: &'static str,
    /// Verbs allowed on it.
    pub verbs: &'static [&'static str],
}

/// Static description of one served resource.
#[derive(Debug)]
pub struct ResourceInfo {
    /// Our kind.
    pub kind: Kind,
    /// API group (`""` for core).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kubernetes kind name.
    pub kind_name: &'static str,
    /// Plural resource name (the URL segment).
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Whether `status` is a subresource (main-resource writes then ignore status).
    pub has_status: bool,
    /// Whether `metadata.generation` is tracked for spec changes.
    pub tracks_generation: bool,
    /// Further subresources.
    pub subresources: &'static [Subresource],
}

const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

const SCALE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: STATUS_VERBS,
};

/// All served resources, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        kind: Kind::Namespace,
        group: "",
        version: "v1",
        kind_name: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        has_status: true,
        tracks_generation: false,
        subresources: &[],
    },
    ResourceInfo {
        kind: Kind::Node,
        group: "",
        version: "v1",
        kind_name: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        has_status: true,
        tracks_generation: false,
        subresources: &[],
    },
    ResourceInfo {
        kind: Kind::Pod,
        group: "",
        version: "v1",
        kind_name: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        has_status: true,
        tracks_generation: false,
        subresources: &[
            Subresource {
                name: "eviction",
                group: "policy",
                version: "v1",
                kind: "Eviction",
                verbs: &["create"],
            },
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            },
        ],
    },
    ResourceInfo {
        kind: Kind::Event,
        group: "",
        version: "v1",
        kind_name: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_status: false,
        tracks_generation: false,
        subresources: &[],
    },
    ResourceInfo {
        kind: Kind::Deployment,
        group: "apps",
        version: "v1",
        kind_name: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        has_status: true,
        tracks_generation: true,
        subresources: &[SCALE],
    },
    ResourceInfo {
        kind: Kind::ReplicaSet,
        group: "apps",
        version: "v1",
        kind_name: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        has_status: true,
        tracks_generation: true,
        subresources: &[SCALE],
    },
    ResourceInfo {
        kind: Kind::DaemonSet,
        group: "apps",
        version: "v1",
        kind_name: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        namespaced: true,
        short_names: &["ds"],
        categories: &["all"],
        has_status: true,
        tracks_generation: true,
        subresources: &[],
    },
    ResourceInfo {
        kind: Kind::HorizontalPodAutoscaler,
        group: "autoscaling",
        version: "v2",
        kind_name: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: &["all"],
        has_status: true,
        tracks_generation: true,
        subresources: &[],
    },
    ResourceInfo {
        kind: Kind::PodDisruptionBudget,
        group: "policy",
        version: "v1",
        kind_name: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        has_status: true,
        tracks_generation: true,
        subresources: &[],
    },
    ResourceInfo {
        kind: Kind::Lease,
        group: "coordination.k8s.io",
        version: "v1",
        kind_name: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        tracks_generation: false,
        subresources: &[],
    },
];

/// The API groups served under `/apis`, each with its one version.
pub static GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("autoscaling", "v2"),
    ("policy", "v1"),
    ("coordination.k8s.io", "v1"),
];

impl Kind {
    /// The static description of this kind.
    pub fn info(self) -> &'static ResourceInfo {
        RESOURCES
            .iter()
            .find(|r| r.kind == self)
            .expect("every kind is registered")
    }

    /// `apiVersion` as written in objects (`v1`, `apps/v1`, …).
    pub fn api_version(self) -> String {
        self.info().api_version()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().kind_name)
    }
}

impl ResourceInfo {
    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as Kubernetes names a resource in messages (`deployments.apps`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Looks up a resource by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}
