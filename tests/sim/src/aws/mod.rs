//! The simulated AWS side of the fleet: an EKS API (restJson1, as aws-sdk-eks and the AWS CLI
//! speak it) and the Auto Scaling calls Flotilla uses (the query protocol), on one plain-HTTP
//! loopback listener, wired to the simulated clusters: node groups own real nodes in the cluster
//! stores, control-plane updates change the served version, node group updates replace nodes
//! through the Eviction API.
//!
//! [`Aws`] holds the state (clusters, node groups and their Auto Scaling groups, updates,
//! add-ons); [`eks`] and [`autoscaling`] answer requests; [`effects`] runs the timed work one
//! tokio task per operation; [`sigv4`] checks the Authorization header; [`catalog`] is the add-on
//! catalog.

pub mod autoscaling;
pub mod catalog;
pub mod effects;
pub mod eks;
pub mod error;
pub mod http;
pub mod sigv4;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::object::Object;
use crate::resources::Kind;
use crate::scenario::eks::{EksFaultSpec, InsightSpec};
use crate::scenario::{node_name, EksTiming, NodeGroupSpec, NodeGroupType, Scenario};
use crate::server::Clusters;

pub use error::AwsError;

/// The AWS account every simulated resource belongs to (the documentation example account).
pub const ACCOUNT_ID: &str = "111122223333";

/// The simulated AWS APIs of one fleet.
#[derive(Debug)]
pub struct Aws {
    /// The region every cluster is in (the base scenario's).
    pub region: String,
    clusters: Clusters,
    state: Mutex<State>,
    base_throttle: f64,
    shutdown: watch::Receiver<bool>,
    calls: Mutex<BTreeMap<String, u64>>,
    connections: std::sync::atomic::AtomicU64,
}

/// Everything the APIs know.
#[derive(Debug, Default)]
pub struct State {
    /// EKS clusters by name (the simulated clusters' names).
    pub clusters: BTreeMap<String, EksCluster>,
}

/// One EKS cluster.
#[derive(Debug)]
pub struct EksCluster {
    /// Name (`sim-1`).
    pub name: String,
    /// Region.
    pub region: String,
    /// Unique id.
    pub id: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Control-plane minor (33 for 1.33).
    pub minor: u32,
    /// `ACTIVE` or `UPDATING`.
    pub status: &'static str,
    /// The simulated Kubernetes API server URL of this cluster.
    pub endpoint: String,
    /// The CA that signs the API server's certificate, base64 PEM.
    pub ca_data: String,
    /// Delays.
    pub timing: EksTiming,
    /// Faults.
    pub faults: EksFaultSpec,
    /// Scenario-set insights.
    pub insights: Vec<InsightSpec>,
    /// Node groups (managed and self-managed), each with its Auto Scaling group.
    pub groups: BTreeMap<String, Group>,
    /// Every update ever started, oldest first.
    pub updates: Vec<Update>,
    /// Installed managed add-ons.
    pub addons: BTreeMap<String, Addon>,
}

impl EksCluster {
    /// `arn:aws:eks:<region>:<account>:cluster/<name>`.
    pub fn arn(&self) -> String {
        format!("arn:aws:eks:{}:{ACCOUNT_ID}:cluster/{}", self.region, self.name)
    }

    /// The update in progress on `target`, if any.
    pub fn update_in_progress(&self, target: &UpdateTarget) -> Option<&Update> {
        self.updates
            .iter()
            .find(|u| u.target == *target && u.status == "InProgress")
    }

    /// An update by id.
    pub fn update_mut(&mut self, id: &str) -> Option<&mut Update> {
        self.updates.iter_mut().find(|u| u.id == id)
    }

    /// The managed node groups.
    pub fn managed(&self) -> impl Iterator<Item = (&Group, &Managed)> {
        self.groups
            .values()
            .filter_map(|g| g.managed.as_ref().map(|m| (g, m)))
    }
}

/// What an update changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateTarget {
    /// The control plane.
    Cluster,
    /// A managed node group.
    Nodegroup(String),
    /// A managed add-on.
    Addon(String),
}

/// One EKS update.
#[derive(Debug, Clone)]
pub struct Update {
    /// UUID.
    pub id: String,
    /// What it changes.
    pub target: UpdateTarget,
    /// `VersionUpdate` or `AddonUpdate`.
    pub kind: &'static str,
    /// `InProgress`, `Successful`, `Failed` or `Cancelled`.
    pub status: &'static str,
    /// `(type, value)` pairs, as `params`.
    pub params: Vec<(String, String)>,
    /// Start.
    pub created_at: Timestamp,
    /// Errors of a failed update.
    pub errors: Vec<ErrorDetail>,
}

/// An error of a failed update, or a health issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    /// `errorCode` / `code`.
    pub code: String,
    /// The message.
    pub message: String,
    /// Resources concerned.
    pub resource_ids: Vec<String>,
}

/// One instance of an Auto Scaling group: a node of the cluster.
#[derive(Debug, Clone)]
pub struct Member {
    /// The Kubernetes node name.
    pub node: String,
    /// EC2 instance id.
    pub instance_id: String,
    /// Availability zone.
    pub zone: String,
    /// Kubelet minor.
    pub minor: u32,
    /// AMI id (`eks.amazonaws.com/nodegroup-image` on managed nodes).
    pub ami: String,
    /// Being terminated.
    pub terminating: bool,
}

/// A node group and its Auto Scaling group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Node group name.
    pub name: String,
    /// How nodes are built.
    pub spec: NodeGroupSpec,
    /// EKS fields of a managed node group; `None` for a self-managed (eksctl) group.
    pub managed: Option<Managed>,
    /// Auto Scaling group name.
    pub asg_name: String,
    /// Auto Scaling group creation time.
    pub asg_created: Timestamp,
    /// ASG / scaling config minimum.
    pub min: u32,
    /// ASG / scaling config maximum.
    pub max: u32,
    /// ASG / scaling config desired capacity.
    pub desired: u32,
    /// Instances, oldest first.
    pub members: Vec<Member>,
    /// Next node index (names and instance ids derive from it).
    pub next_index: u32,
    /// Kubelet minor of new nodes.
    pub minor: u32,
    /// AMI of new nodes.
    pub ami: String,
    /// A scaling activity, update or deletion is running.
    pub busy: bool,
    /// ASG deletion in progress.
    pub deleting: bool,
}

impl Group {
    /// The Auto Scaling group ARN.
    pub fn asg_arn(&self, region: &str) -> String {
        let uuid = uuid_from(&[&self.asg_name, "asg"]);
        format!(
            "arn:aws:autoscaling:{region}:{ACCOUNT_ID}:autoScalingGroup:{uuid}:autoScalingGroupName/{}",
            self.asg_name
        )
    }

    /// Members not being terminated.
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.terminating)
    }
}

/// EKS fields of a managed node group.
#[derive(Debug, Clone)]
pub struct Managed {
    /// `CREATING`, `ACTIVE`, `UPDATING`, `DELETING`, `CREATE_FAILED`, `DELETE_FAILED`, `DEGRADED`.
    pub status: &'static str,
    /// Kubernetes minor.
    pub version: u32,
    /// AMI release version.
    pub release_version: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub modified_at: Timestamp,
    /// Instance types.
    pub instance_types: Vec<String>,
    /// Subnets.
    pub subnets: Vec<String>,
    /// AMI type.
    pub ami_type: String,
    /// Node IAM role.
    pub node_role: String,
    /// Kubernetes labels EKS applies.
    pub labels: BTreeMap<String, String>,
    /// Taints, in EKS form (`NO_SCHEDULE`).
    pub taints: Vec<(String, Option<String>, String)>,
    /// `ON_DEMAND` / `SPOT`.
    pub capacity_type: String,
    /// `updateConfig.maxUnavailable`.
    pub max_unavailable: Option<u32>,
    /// `updateConfig.maxUnavailablePercentage`.
    pub max_unavailable_percentage: Option<u32>,
    /// Disk size (GiB).
    pub disk_size: Option<i64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Health issues.
    pub health: Vec<ErrorDetail>,
    /// `launchTemplate` as given.
    pub launch_template: Option<serde_json::Value>,
}

/// An installed managed add-on.
#[derive(Debug, Clone)]
pub struct Addon {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `ACTIVE`, `UPDATING`, `UPDATE_FAILED`, …
    pub status: &'static str,
    /// Installed at.
    pub created_at: Timestamp,
    /// Last change.
    pub modified_at: Timestamp,
    /// IRSA role.
    pub service_account_role_arn: Option<String>,
    /// Configuration values.
    pub configuration_values: Option<String>,
    /// Health issues.
    pub health: Vec<ErrorDetail>,
}

/// A random v4 UUID.
pub fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    format_uuid(b)
}

fn format_uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A UUID derived from `parts` (stable across runs).
pub fn uuid_from(parts: &[&str]) -> String {
    let mut b = [0u8; 16];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, chunk) in b.chunks_mut(8).enumerate() {
        for part in parts.iter().chain(std::iter::once(&"")) {
            for byte in part.bytes().chain([0, i as u8]) {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        chunk.copy_from_slice(&h.to_be_bytes());
    }
    format_uuid(b)
}

/// A stable hex string of `len` characters derived from `parts`.
pub fn hex_from(parts: &[&str], len: usize) -> String {
    let mut out = String::new();
    let mut round = 0;
    while out.len() < len {
        let r = round.to_string();
        let mut p = parts.to_vec();
        p.push(&r);
        out.push_str(&uuid_from(&p).replace('-', ""));
        round += 1;
    }
    out.truncate(len);
    out
}

/// The AMI release version EKS reports for Kubernetes 1.`minor` (`1.33.5-20251120`).
pub fn release_version(minor: u32) -> String {
    let kubelet = crate::scenario::kubelet_version(minor);
    let semver = kubelet
        .trim_start_matches('v')
        .split('-')
        .next()
        .unwrap_or("")
        .to_string();
    format!("{semver}-20251120")
}

/// The AMI id of a managed group's nodes at a release.
pub fn ami_for(cluster: &str, group: &str, release: &str) -> String {
    format!("ami-0{}", hex_from(&[cluster, group, release, "ami"], 16))
}

/// Reads a node's instance id and zone from its `spec.providerID` (`aws:///us-west-2a/i-0…`),
/// and its `eks.amazonaws.com/nodegroup-image` label.
pub fn instance_of(obj: &Object) -> Option<(String, String, Option<String>)> {
    let Object::Node(n) = obj else { return None };
    let p = n.spec.as_ref()?.provider_id.as_deref()?;
    let mut parts = p.trim_start_matches("aws:///").split('/');
    let zone = parts.next()?.to_string();
    let id = parts.next()?.to_string();
    let ami = n.metadata.labels.as_ref().and_then(|l| l.get(AMI_LABEL)).cloned();
    Some((id, zone, ami))
}

/// The label EKS puts on managed nodes naming their AMI.
pub const AMI_LABEL: &str = "eks.amazonaws.com/nodegroup-image";

impl Aws {
    /// The AWS state for `names` (clusters of `clusters`, started from `scenario`); `server_url` is
    /// the Kubernetes API listener and `ca_pem` its CA.
    pub fn new(
        scenario: &Scenario,
        names: &[String],
        clusters: Clusters,
        server_url: &str,
        ca_pem: &str,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Aws> {
        use base64::Engine;
        let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let created_at = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(24 * 30);
        let mut state = State::default();
        for name in names {
            let cs = scenario.for_cluster(name);
            let minor = cs.kubernetes_version.minor();
            let store_nodes: BTreeMap<String, (String, String, Option<String>)> = clusters
                .get(name)
                .map(|c| {
                    c.lock()
                        .list(Kind::Node, None)
                        .filter_map(|e| instance_of(&e.obj).map(|i| (e.obj.name().to_string(), i)))
                        .collect()
                })
                .unwrap_or_default();
            let mut groups = BTreeMap::new();
            for g in &cs.node_groups {
                let kubelet = cs.kubelet_version(g).minor();
                let mut build_ami = ami_for(name, &g.name, &release_version(kubelet));
                let members: Vec<Member> = (0..g.nodes)
                    .filter_map(|i| {
                        let node = node_name(name, &g.name, &cs.region, i);
                        let (instance_id, zone, ami) = store_nodes.get(&node)?.clone();
                        Some(Member {
                            node,
                            instance_id,
                            zone,
                            minor: kubelet,
                            ami: ami.unwrap_or_else(|| build_ami.clone()),
                            terminating: false,
                        })
                    })
                    .collect();
                if let Some(m) = members.first() {
                    build_ami = m.ami.clone();
                }
                let managed = (g.kind == NodeGroupType::Managed).then(|| Managed {
                    status: "ACTIVE",
                    version: kubelet,
                    release_version: release_version(kubelet),
                    created_at,
                    modified_at: created_at,
                    instance_types: vec![g.instance_type.clone()],
                    subnets: subnets(name),
                    ami_type: if crate::scenario::build::architecture(&g.instance_type) == "arm64" {
                        "AL2023_ARM_64_STANDARD".into()
                    } else {
                        "AL2023_x86_64_STANDARD".into()
                    },
                    node_role: format!("arn:aws:iam::{ACCOUNT_ID}:role/{name}-node-role"),
                    labels: g.labels.clone(),
                    taints: g
                        .taints
                        .iter()
                        .map(|t| {
                            (
                                t.key.clone(),
                                (!t.value.is_empty()).then(|| t.value.clone()),
                                eks_effect(t.effect.as_str()).to_string(),
                            )
                        })
                        .collect(),
                    capacity_type: "ON_DEMAND".into(),
                    max_unavailable: Some(1),
                    max_unavailable_percentage: None,
                    disk_size: Some(20),
                    tags: BTreeMap::new(),
                    health: Vec::new(),
                    launch_template: None,
                });
                let asg_name = match g.kind {
                    NodeGroupType::Managed => {
                        format!("eks-{}-{}", g.name, uuid_from(&[name, &g.name, "managed-asg"]))
                    }
                    NodeGroupType::SelfManaged => {
                        format!(
                            "eksctl-{name}-nodegroup-{}-NodeGroup-{}",
                            g.name,
                            hex_from(&[name, &g.name, "cfn"], 12).to_uppercase()
                        )
                    }
                };
                groups.insert(
                    g.name.clone(),
                    Group {
                        name: g.name.clone(),
                        spec: g.clone(),
                        managed,
                        asg_name,
                        asg_created: created_at,
                        min: g.nodes.min(1),
                        max: g.nodes.max(1) * 2,
                        desired: g.nodes,
                        members,
                        next_index: g.nodes,
                        minor: kubelet,
                        ami: build_ami,
                        busy: false,
                        deleting: false,
                    },
                );
            }
            let addons = cs
                .eks_addons()
                .into_iter()
                .map(|(a, v)| {
                    let addon = Addon {
                        name: a.clone(),
                        version: v,
                        status: "ACTIVE",
                        created_at,
                        modified_at: created_at,
                        service_account_role_arn: None,
                        configuration_values: None,
                        health: Vec::new(),
                    };
                    (a, addon)
                })
                .collect();
            state.clusters.insert(
                name.clone(),
                EksCluster {
                    name: name.clone(),
                    region: cs.region.clone(),
                    id: uuid_from(&[name, "cluster-id"]),
                    created_at,
                    minor,
                    status: "ACTIVE",
                    endpoint: format!("{server_url}/clusters/{name}"),
                    ca_data: ca_data.clone(),
                    timing: cs.eks_timing(),
                    faults: cs.eks.faults.clone(),
                    insights: cs.eks.insights.clone(),
                    groups,
                    updates: Vec::new(),
                    addons,
                },
            );
        }
        Arc::new(Aws {
            region: scenario.region.clone(),
            clusters,
            state: Mutex::new(state),
            base_throttle: scenario.eks.faults.throttle_rate,
            shutdown,
            calls: Mutex::default(),
            connections: Default::default(),
        })
    }

    /// Counts one call answered (throttled and failed ones too), by its shape: `GET
    /// /clusters/*/updates/*` for EKS, `autoscaling <Action>` for Auto Scaling.
    pub fn count_call(&self, shape: String) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(shape)
            .or_default() += 1;
    }

    /// Calls answered so far, by shape (see [`Aws::count_call`]).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counts one TCP connection accepted by the AWS listener.
    pub fn count_connection(&self) {
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// TCP connections accepted so far by the AWS listener (a client that pools its connections
    /// opens about as many as it has calls in flight at once).
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Locks the state. Lock order: this before any cluster store, never the other way round.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The simulated cluster `name`.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// Whether this call is throttled: by `cluster`'s `eks.faults.throttleRate`, or the base
    /// scenario's for calls about no cluster.
    pub fn throttled(&self, cluster: Option<&str>) -> bool {
        let rate = match cluster {
            Some(c) => self
                .lock()
                .clusters
                .get(c)
                .map_or(self.base_throttle, |c| c.faults.throttle_rate),
            None => self.base_throttle,
        };
        rate > 0.0 && rand::random::<f64>() < rate
    }

    /// A receiver that turns true when the fleet shuts down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

/// Subnet ids of a cluster's VPC (one per zone).
pub fn subnets(cluster: &str) -> Vec<String> {
    ["a", "b", "c"]
        .iter()
        .map(|z| format!("subnet-0{}", hex_from(&[cluster, z, "subnet"], 16)))
        .collect()
}

/// Kubernetes taint effect → EKS enum (`NoSchedule` → `NO_SCHEDULE`).
pub fn eks_effect(k8s: &str) -> &'static str {
    match k8s {
        "NoExecute" => "NO_EXECUTE",
        "PreferNoSchedule" => "PREFER_NO_SCHEDULE",
        _ => "NO_SCHEDULE",
    }
}

/// EKS taint effect → Kubernetes (`NO_SCHEDULE` → `NoSchedule`).
pub fn k8s_effect(eks: &str) -> Option<&'static str> {
    match eks {
        "NO_SCHEDULE" => Some("NoSchedule"),
        "NO_EXECUTE" => Some("NoExecute"),
        "PREFER_NO_SCHEDULE" => Some("PreferNoSchedule"),
        _ => None,
    }
}
