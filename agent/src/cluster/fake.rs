//! An in-memory [`Cluster`] for unit tests: nodes, pods, Deployments (with an instant
//! Deployment controller and scheduler), HPAs and PodDisruptionBudgets that evictions honour.
//! It can hang every write after the n-th, which is how tests kill a step mid-way. Watches
//! compare the state after every change with what they last sent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, DeploymentSpec, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
};
use k8s_openapi::api::core::v1::{
    Container, Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodSpec,
    PodStatus, PodTemplateSpec, ResourceRequirements, Taint, Volume,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    Cluster, ClusterError, DeploymentPatch, EventNote, Eviction, HpaPatch, Result, WatchStream, Watched,
};
use crate::model::{self, GroupKind};
use crate::placement::Placement;

/// Everything the fake cluster holds; tests may read and change it through [`FakeCluster::state`].
#[derive(Debug, Default)]
pub struct FakeState {
    /// Served version.
    pub version: String,
    /// What `/metrics` answers; `None`: 403 Forbidden (no RBAC for it).
    pub metrics: Option<String>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Pods by `namespace/name`.
    pub pods: BTreeMap<String, Pod>,
    /// Deployments by `namespace/name`.
    pub deployments: BTreeMap<String, Deployment>,
    /// ReplicaSets by `namespace/name` (one per Deployment).
    pub replica_sets: BTreeMap<String, ReplicaSet>,
    /// DaemonSets by `namespace/name`.
    pub daemon_sets: BTreeMap<String, DaemonSet>,
    /// HPAs by `namespace/name`.
    pub hpas: BTreeMap<String, HorizontalPodAutoscaler>,
    /// PDBs by `namespace/name` (status computed on read).
    pub pdbs: BTreeMap<String, PodDisruptionBudget>,
    /// Events recorded.
    pub events: Vec<EventNote>,
    /// Deployments (`namespace/name`) whose pods never become Ready.
    pub never_ready: BTreeSet<String>,
    /// Writes so far (node replaces, patches, evictions, deletions).
    pub writes: usize,
    /// Every write after this many hangs forever (a killed agent).
    pub hang_after_writes: Option<usize>,
    /// Evictions the fake allowed.
    pub evictions: usize,
    /// Evictions refused with 429.
    pub refusals: usize,
    /// Pods deleted outright.
    pub deletions: usize,
    /// Lowest available count seen per Deployment while its replicas were at least the start count.
    pub min_available: BTreeMap<String, i32>,
    next_id: u64,
}

/// The in-memory fake.
#[derive(Debug)]
pub struct FakeCluster {
    state: Arc<Mutex<FakeState>>,
    /// Bumped after every change, waking the watches.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for FakeCluster {
    fn default() -> FakeCluster {
        FakeCluster::new()
    }
}

/// The locked state; watches are woken when a guard that was written through is dropped.
#[derive(Debug)]
pub struct StateGuard<'a> {
    guard: MutexGuard<'a, FakeState>,
    changes: &'a tokio::sync::watch::Sender<u64>,
    written: bool,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = FakeState;

    fn deref(&self) -> &FakeState {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut FakeState {
        self.written = true;
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if self.written {
            self.changes.send_modify(|n| *n += 1);
        }
    }
}

impl FakeCluster {
    /// An empty cluster at `v1.33.4`.
    pub fn new() -> FakeCluster {
        FakeCluster {
            state: Arc::new(Mutex::new(FakeState {
                version: "v1.33.4".into(),
                ..Default::default()
            })),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Locks the state (changes made through it reach the watches when the guard is dropped).
    pub fn state(&self) -> StateGuard<'_> {
        StateGuard {
            guard: self.state.lock().unwrap_or_else(|p| p.into_inner()),
            changes: &self.changes,
            written: false,
        }
    }

    /// A watch over what `read` picks from the state, keyed by `namespace/name`: a list first,
    /// then, after every change, what differs from what it last sent.
    fn watch<K>(
        &self,
        read: impl Fn(&FakeState) -> BTreeMap<String, K> + Send + Sync + 'static,
    ) -> WatchStream<K>
    where
        K: Clone + PartialEq + Send + Sync + 'static,
    {
        struct Feed<K> {
            state: Arc<Mutex<FakeState>>,
            changes: tokio::sync::watch::Receiver<u64>,
            sent: Option<BTreeMap<String, K>>,
            queue: VecDeque<Watched<K>>,
        }
        let read = Arc::new(read);
        let feed = Feed {
            state: Arc::clone(&self.state),
            changes: self.changes.subscribe(),
            sent: None,
            queue: VecDeque::new(),
        };
        let snapshot = move |state: &Arc<Mutex<FakeState>>| {
            let st = state.lock().unwrap_or_else(|p| p.into_inner());
            read(&st)
        };
        futures::stream::unfold(feed, move |mut feed| {
            let snapshot = snapshot.clone();
            async move {
                loop {
                    if let Some(ev) = feed.queue.pop_front() {
                        return Some((Ok(ev), feed));
                    }
                    let Some(sent) = feed.sent.take() else {
                        let now = snapshot(&feed.state);
                        feed.queue
                            .push_back(Watched::Listed(now.values().cloned().collect()));
                        feed.sent = Some(now);
                        continue;
                    };
                    if feed.changes.changed().await.is_err() {
                        return None;
                    }
                    let now = snapshot(&feed.state);
                    for (k, old) in &sent {
                        if !now.contains_key(k) {
                            feed.queue.push_back(Watched::Deleted(old.clone()));
                        }
                    }
                    for (k, new) in &now {
                        if sent.get(k) != Some(new) {
                            feed.queue.push_back(Watched::Applied(new.clone()));
                        }
                    }
                    feed.sent = Some(now);
                }
            }
        })
        .boxed()
    }

    /// Adds a Ready node in a group, with room for `pods` pods and `cpu_millis` of CPU.
    pub fn add_node(&self, name: &str, group: &str, kind: GroupKind, cpu_millis: i64, pods: i64) {
        let label = match kind {
            GroupKind::Managed => model::MANAGED_LABEL,
            GroupKind::SelfManaged => model::SELF_MANAGED_LABEL,
        };
        let mut alloc = BTreeMap::new();
        alloc.insert("cpu".to_string(), Quantity(format!("{cpu_millis}m")));
        alloc.insert("memory".to_string(), Quantity("64Gi".into()));
        alloc.insert("pods".to_string(), Quantity(pods.to_string()));
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-node-{name}")),
                resource_version: Some("1".into()),
                labels: Some([(label.to_string(), group.to_string())].into_iter().collect()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(alloc),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                node_info: Some(NodeSystemInfo {
                    kubelet_version: "v1.33.4".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        self.state().nodes.insert(name.into(), node);
    }

    /// Adds a Deployment (and its ReplicaSet) whose pods request `cpu_millis` each, and lets the
    /// fake controllers create its pods.
    pub fn add_deployment(&self, ns: &str, name: &str, replicas: i32, cpu_millis: i64) {
        let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())].into_iter().collect();
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels.clone()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(
                            [("cpu".to_string(), Quantity(format!("{cpu_millis}m")))]
                                .into_iter()
                                .collect(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                uid: Some(format!("uid-deploy-{ns}-{name}")),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: template.clone(),
                ..Default::default()
            }),
            status: None,
        };
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{name}-rs")),
                namespace: Some(ns.into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: name.into(),
                    uid: format!("uid-deploy-{ns}-{name}"),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut st = self.state();
        st.deployments.insert(format!("{ns}/{name}"), d);
        st.replica_sets.insert(format!("{ns}/{name}-rs"), rs);
        st.settle();
    }

    /// Adds a PodDisruptionBudget over `app=<app>` with `minAvailable` or `maxUnavailable`.
    pub fn add_pdb(
        &self,
        ns: &str,
        name: &str,
        app: &str,
        min_available: Option<IntOrString>,
        max_unavailable: Option<IntOrString>,
    ) {
        let pdb = PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), app.to_string())].into_iter().collect()),
                    ..Default::default()
                }),
                min_available,
                max_unavailable,
                ..Default::default()
            }),
            status: None,
        };
        self.state().pdbs.insert(format!("{ns}/{name}"), pdb);
    }

    /// Adds an HPA over a Deployment.
    pub fn add_hpa(&self, ns: &str, deployment: &str, min: i32, max: i32) {
        let hpa = HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some(deployment.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(HorizontalPodAutoscalerSpec {
                min_replicas: Some(min),
                max_replicas: max,
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: deployment.into(),
                },
                ..Default::default()
            }),
            status: None,
        };
        let mut st = self.state();
        st.hpas.insert(format!("{ns}/{deployment}"), hpa);
        st.settle();
    }

    /// Adds a bare pod (no controller) on a node, optionally with an emptyDir volume.
    pub fn add_bare_pod(&self, ns: &str, name: &str, node: &str, empty_dir: bool) {
        let mut st = self.state();
        let volumes = empty_dir.then(|| {
            vec![Volume {
                name: "scratch".into(),
                empty_dir: Some(Default::default()),
                ..Default::default()
            }]
        });
        let pod = ready_pod(ns, name, node, BTreeMap::new(), None, volumes, true);
        st.pods.insert(format!("{ns}/{name}"), pod);
    }

    /// Adds a DaemonSet-owned pod on a node.
    pub fn add_daemon_pod(&self, ns: &str, name: &str, node: &str) {
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: name.into(),
            uid: format!("uid-ds-{name}"),
            controller: Some(true),
            ..Default::default()
        };
        let pod = ready_pod(
            ns,
            &format!("{name}-{node}"),
            node,
            BTreeMap::new(),
            Some(owner),
            None,
            true,
        );
        self.state().pods.insert(format!("{ns}/{name}-{node}"), pod);
    }

    fn write_gate(&self) -> bool {
        let mut st = self.state();
        st.writes += 1;
        st.hang_after_writes.is_some_and(|n| st.writes > n)
    }

    async fn gate(&self) {
        if self.write_gate() {
            std::future::pending::<()>().await;
        }
    }
}

fn ready_pod(
    ns: &str,
    name: &str,
    node: &str,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
    volumes: Option<Vec<Volume>>,
    ready: bool,
) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(format!("uid-pod-{ns}-{name}")),
            labels: Some(labels),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            volumes,
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(if node.is_empty() { "Pending" } else { "Running" }.into()),
            conditions: Some(if node.is_empty() {
                vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/0 nodes are available: no node fits".into()),
                    ..Default::default()
                }]
            } else {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
    }
}

/// The desired healthy count of a PDB over `expected` pods (as the disruption controller computes it).
pub fn desired_healthy(spec: &PodDisruptionBudgetSpec, expected: i32) -> i32 {
    let pct = |s: &str, round_up: bool| -> i32 {
        let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
        let v = p * f64::from(expected) / 100.0;
        if round_up {
            v.ceil() as i32
        } else {
            v.floor() as i32
        }
    };
    match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(n)), _) => *n,
        (Some(IntOrString::String(s)), _) => pct(s, true),
        (None, Some(IntOrString::Int(n))) => (expected - n).max(0),
        (None, Some(IntOrString::String(s))) => (expected - pct(s, true)).max(0),
        (None, None) => expected,
    }
}

impl FakeState {
    fn fresh_rv(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    fn pdb_status(&self, pdb: &PodDisruptionBudget) -> PodDisruptionBudgetStatus {
        let ns = model::namespace(&pdb.metadata);
        let spec = pdb.spec.clone().unwrap_or_default();
        let sel = spec.selector.clone().unwrap_or_default();
        let pods: Vec<&Pod> = self
            .pods
            .values()
            .filter(|p| model::namespace(&p.metadata) == ns && !model::terminating(&p.metadata))
            .filter(|p| model::selector_matches(&sel, p.metadata.labels.as_ref()))
            .collect();
        let expected = pods.len() as i32;
        let healthy = pods.iter().filter(|p| model::pod_ready(p)).count() as i32;
        let desired = desired_healthy(&spec, expected);
        PodDisruptionBudgetStatus {
            current_healthy: healthy,
            desired_healthy: desired,
            disruptions_allowed: (healthy - desired).max(0),
            expected_pods: expected,
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    /// The least loaded node a pod asking `placement` may go to (taints, tolerations,
    /// nodeSelector and affinity as the scheduler filters them; a pod count for capacity).
    fn schedulable_node(&self, placement: &Placement) -> Option<String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in self.pods.values() {
            if let Some(n) = model::pod_node(p) {
                *counts.entry(n).or_default() += 1;
            }
        }
        self.nodes
            .values()
            .filter(|n| placement.refusal(n).is_none())
            .filter(|n| {
                let cap = model::node_allocatable(n).pods as usize;
                counts.get(model::name(&n.metadata)).copied().unwrap_or(0) < cap
            })
            .min_by_key(|n| counts.get(model::name(&n.metadata)).copied().unwrap_or(0))
            .and_then(|n| n.metadata.name.clone())
    }

    /// Runs the fake controllers until the cluster matches every Deployment's (HPA-clamped) replicas.
    pub fn settle(&mut self) {
        // HPAs clamp their targets into [min, max].
        for hpa in self.hpas.values() {
            let ns = model::namespace(&hpa.metadata).to_string();
            let Some(spec) = hpa.spec.as_ref() else { continue };
            let key = format!("{ns}/{}", spec.scale_target_ref.name);
            if let Some(d) = self.deployments.get_mut(&key) {
                let s = d.spec.get_or_insert_with(Default::default);
                let cur = s.replicas.unwrap_or(1);
                s.replicas = Some(cur.clamp(spec.min_replicas.unwrap_or(1), spec.max_replicas.max(1)));
            }
        }
        let keys: Vec<String> = self.deployments.keys().cloned().collect();
        for key in keys {
            let d = self.deployments[&key].clone();
            let (ns, name) = key.split_once('/').unwrap_or_default();
            let rs_name = format!("{name}-rs");
            let want = model::deployment_replicas(&d);
            let owned = |p: &Pod| {
                model::namespace(&p.metadata) == ns
                    && model::controller_of(&p.metadata).is_some_and(|o| o.name == rs_name)
                    && !model::terminating(&p.metadata)
            };
            // Place pending pods where possible.
            let pending: Vec<String> = self
                .pods
                .iter()
                .filter(|(_, p)| owned(p) && model::pod_node(p).is_none())
                .map(|(k, _)| k.clone())
                .collect();
            let placement = d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .map(Placement::of)
                .unwrap_or_default();
            for pk in pending {
                if let Some(node) = self.schedulable_node(&placement) {
                    let ready = !self.never_ready.contains(&key);
                    let old = self.pods[&pk].clone();
                    let pod = ready_pod(
                        ns,
                        model::name(&old.metadata),
                        &node,
                        old.metadata.labels.clone().unwrap_or_default(),
                        model::controller_of(&old.metadata).cloned(),
                        None,
                        ready,
                    );
                    self.pods.insert(pk, pod);
                }
            }
            let mut mine: Vec<String> = self
                .pods
                .iter()
                .filter(|(_, p)| owned(p))
                .map(|(k, _)| k.clone())
                .collect();
            while (mine.len() as i32) < want {
                self.next_id += 1;
                let pod_name = format!("{name}-{}", self.next_id);
                let node = self.schedulable_node(&placement).unwrap_or_default();
                let owner = OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: rs_name.clone(),
                    uid: format!("uid-rs-{ns}-{rs_name}"),
                    controller: Some(true),
                    ..Default::default()
                };
                let labels = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.clone());
                let ready = !self.never_ready.contains(&key);
                let mut pod = ready_pod(
                    ns,
                    &pod_name,
                    &node,
                    labels.unwrap_or_default(),
                    Some(owner),
                    None,
                    ready,
                );
                if let Some(s) = pod.spec.as_mut() {
                    s.containers = d
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.spec.as_ref())
                        .map(|t| t.containers.clone())
                        .unwrap_or_default();
                }
                self.pods.insert(format!("{ns}/{pod_name}"), pod);
                mine.push(format!("{ns}/{pod_name}"));
            }
            if (mine.len() as i32) > want {
                // Scale down: unscheduled pods first, then the newest.
                mine.sort_by_key(|k| {
                    (
                        self.pods[k]
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_name.clone())
                            .is_some(),
                        std::cmp::Reverse(k.clone()),
                    )
                });
                for k in mine.iter().take(mine.len() - want.max(0) as usize) {
                    self.pods.remove(k);
                }
            }
            let live: Vec<&Pod> = self.pods.values().filter(|p| owned(p)).collect();
            let available = live.iter().filter(|p| model::pod_ready(p)).count() as i32;
            let replicas = live.len() as i32;
            if let Some(d) = self.deployments.get_mut(&key) {
                d.status = Some(DeploymentStatus {
                    replicas: Some(replicas),
                    available_replicas: Some(available),
                    ready_replicas: Some(available),
                    updated_replicas: Some(replicas),
                    observed_generation: d.metadata.generation,
                    ..Default::default()
                });
            }
            let low = self.min_available.entry(key.clone()).or_insert(available);
            *low = (*low).min(available);
        }
    }

    /// Evicts as the API server would, honouring PodDisruptionBudgets.
    fn evict(&mut self, ns: &str, name: &str) -> Eviction {
        let key = format!("{ns}/{name}");
        let Some(pod) = self.pods.get(&key).cloned() else {
            return Eviction::Gone;
        };
        if model::terminating(&pod.metadata) {
            return Eviction::Evicted;
        }
        let mut blocking = Vec::new();
        for pdb in self.pdbs.values() {
            if model::namespace(&pdb.metadata) != ns {
                continue;
            }
            let sel = pdb
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            if !model::selector_matches(&sel, pod.metadata.labels.as_ref()) {
                continue;
            }
            let st = self.pdb_status(pdb);
            let ok = if model::pod_ready(&pod) {
                st.disruptions_allowed > 0
            } else {
                st.current_healthy >= st.desired_healthy
            };
            if !ok {
                blocking.push(model::name(&pdb.metadata).to_string());
            }
        }
        if !blocking.is_empty() {
            self.refusals += 1;
            return Eviction::Blocked {
                pdbs: blocking,
                message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            };
        }
        self.evictions += 1;
        self.pods.remove(&key);
        self.settle();
        Eviction::Evicted
    }
}

fn not_found(what: String) -> ClusterError {
    ClusterError::NotFound { what }
}

impl Cluster for FakeCluster {
    async fn version(&self) -> Result<String> {
        Ok(self.state().version.clone())
    }

    async fn api_server_metrics(&self) -> Result<String> {
        self.state().metrics.clone().ok_or_else(|| ClusterError::Api {
            what: "get /metrics".into(),
            code: 403,
            reason: "Forbidden".into(),
            message: "forbidden: User \"system:serviceaccount:flotilla:flotilla-agent\" cannot get path \"/metrics\"".into(),
        })
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        Ok(self.state().nodes.values().cloned().collect())
    }

    async fn node(&self, name: &str) -> Result<Node> {
        self.state()
            .nodes
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(format!("node {name}")))
    }

    async fn replace_node(&self, node: &Node) -> Result<Node> {
        self.gate().await;
        let mut st = self.state();
        let name = model::name(&node.metadata).to_string();
        let cur = st
            .nodes
            .get(&name)
            .ok_or_else(|| not_found(format!("node {name}")))?;
        if cur.metadata.resource_version != node.metadata.resource_version {
            return Err(ClusterError::Conflict {
                what: format!("replace node {name}"),
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            });
        }
        let mut next = node.clone();
        next.metadata.resource_version = Some(st.fresh_rv());
        st.nodes.insert(name, next.clone());
        st.settle();
        Ok(next)
    }

    async fn pods(&self, node: Option<&str>) -> Result<Vec<Pod>> {
        let st = self.state();
        Ok(st
            .pods
            .values()
            .filter(|p| node.is_none() || model::pod_node(p) == node)
            .cloned()
            .collect())
    }

    async fn deployments(&self) -> Result<Vec<Deployment>> {
        Ok(self.state().deployments.values().cloned().collect())
    }

    async fn replica_sets(&self) -> Result<Vec<ReplicaSet>> {
        Ok(self.state().replica_sets.values().cloned().collect())
    }

    async fn daemon_sets(&self, namespace: &str) -> Result<Vec<DaemonSet>> {
        let prefix = format!("{namespace}/");
        Ok(self
            .state()
            .daemon_sets
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, d)| d.clone())
            .collect())
    }

    async fn patch_deployment(
        &self,
        namespace: &str,
        name: &str,
        patch: &DeploymentPatch,
    ) -> Result<Deployment> {
        self.gate().await;
        let mut st = self.state();
        let key = format!("{namespace}/{name}");
        let d = st
            .deployments
            .get_mut(&key)
            .ok_or_else(|| not_found(format!("deployment {key}")))?;
        apply_annotations(&mut d.metadata, &patch.annotations);
        if let Some(r) = patch.replicas {
            d.spec.get_or_insert_with(Default::default).replicas = Some(r);
            d.metadata.generation = Some(d.metadata.generation.unwrap_or(1) + 1);
        }
        st.settle();
        Ok(st.deployments[&key].clone())
    }

    async fn hpas(&self) -> Result<Vec<HorizontalPodAutoscaler>> {
        Ok(self.state().hpas.values().cloned().collect())
    }

    async fn patch_hpa(
        &self,
        namespace: &str,
        name: &str,
        patch: &HpaPatch,
    ) -> Result<HorizontalPodAutoscaler> {
        self.gate().await;
        let mut st = self.state();
        let key = format!("{namespace}/{name}");
        let h = st
            .hpas
            .get_mut(&key)
            .ok_or_else(|| not_found(format!("horizontalpodautoscaler {key}")))?;
        apply_annotations(&mut h.metadata, &patch.annotations);
        let spec = h.spec.get_or_insert_with(Default::default);
        if let Some(m) = patch.min_replicas {
            spec.min_replicas = Some(m);
        }
        if let Some(m) = patch.max_replicas {
            spec.max_replicas = m;
        }
        st.settle();
        Ok(st.hpas[&key].clone())
    }

    async fn pdbs(&self) -> Result<Vec<PodDisruptionBudget>> {
        let st = self.state();
        Ok(st
            .pdbs
            .values()
            .map(|p| {
                let mut p = p.clone();
                p.status = Some(st.pdb_status(&p));
                p
            })
            .collect())
    }

    fn watch_pods(&self, node: Option<&str>) -> WatchStream<Pod> {
        let node = node.map(str::to_string);
        self.watch(move |st| {
            st.pods
                .iter()
                .filter(|(_, p)| node.is_none() || model::pod_node(p) == node.as_deref())
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect()
        })
    }

    fn watch_pdbs(&self) -> WatchStream<PodDisruptionBudget> {
        self.watch(|st| {
            st.pdbs
                .iter()
                .map(|(k, p)| {
                    let mut p = p.clone();
                    p.status = Some(st.pdb_status(&p));
                    (k.clone(), p)
                })
                .collect()
        })
    }

    async fn evict(&self, namespace: &str, name: &str) -> Result<Eviction> {
        self.gate().await;
        Ok(self.state().evict(namespace, name))
    }

    async fn delete_pod(&self, namespace: &str, name: &str) -> Result<()> {
        self.gate().await;
        let mut st = self.state();
        if st.pods.remove(&format!("{namespace}/{name}")).is_some() {
            st.deletions += 1;
            st.settle();
        }
        Ok(())
    }

    async fn record_event(&self, event: &EventNote) -> Result<()> {
        self.state().events.push(event.clone());
        Ok(())
    }
}

fn apply_annotations(meta: &mut ObjectMeta, changes: &BTreeMap<String, Option<String>>) {
    let a = meta.annotations.get_or_insert_with(Default::default);
    for (k, v) in changes {
        match v {
            Some(v) => a.insert(k.clone(), v.clone()),
            None => a.remove(k),
        };
    }
}

/// Cordons a node directly (test set-up, bypassing the write gate).
pub fn cordon_node(fake: &FakeCluster, node: &str) {
    if let Some(spec) = fake.state().nodes.get_mut(node).and_then(|n| n.spec.as_mut()) {
        spec.unschedulable = Some(true);
    }
}

/// Adds a `NoSchedule` taint to a node directly (test set-up, bypassing the write gate).
pub fn taint_node(fake: &FakeCluster, node: &str, key: &str) {
    let mut st = fake.state();
    if let Some(n) = st.nodes.get_mut(node) {
        n.spec
            .get_or_insert_with(Default::default)
            .taints
            .get_or_insert_with(Vec::new)
            .push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
    }
}
