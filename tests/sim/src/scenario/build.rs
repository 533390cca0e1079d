//! Builders: one cluster's scenario into the typed objects its API server starts with, defaulted
//! as the real API server (and, for nodes, the kubelet and EKS) would have them. Pure functions:
//! the same input always gives the same objects.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec as K8sDaemonSetSpec, DaemonSetStatus, DaemonSetUpdateStrategy, Deployment,
    DeploymentSpec as K8sDeploymentSpec, DeploymentStatus, DeploymentStrategy, RollingUpdateDaemonSet,
    RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, ContainerPort, DaemonEndpoint, DownwardAPIProjection,
    DownwardAPIVolumeFile, EmptyDirVolumeSource, KeyToPath, Namespace, NamespaceSpec, NamespaceStatus, Node,
    NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
    ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, PodStatus, PodTemplateSpec, ProjectedVolumeSource,
    ResourceRequirements, ServiceAccountTokenProjection, Taint, Toleration, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::{
    Amount, ClusterScenario, DaemonSetSpec, DeploymentSpec, IntOrPercent, KubeVersion, NodeGroupSpec,
    NodeGroupType, StandalonePodSpec, TolerationOperator, TolerationSpec,
};
use crate::object::Object;

/// The AWS account serving EKS images in most regions.
const EKS_ECR_ACCOUNT: &str = "602401143452";
/// Root volume of eksctl / EKS managed nodes (80 GiB) as the kubelet reports it.
const EPHEMERAL_STORAGE_KI: u128 = 83_873_772;
/// AL2023 EKS-optimized AMI details the kubelet reports.
const OS_IMAGE: &str = "Amazon Linux 2023.9.20251110";
const KERNEL: &str = "6.1.155-176.282.amzn2023";
const CONTAINER_RUNTIME: &str = "containerd://1.7.27";
/// What a kubelet says while the CNI (aws-node) has not set up the node's network.
const NOT_READY_MESSAGE: &str = "container runtime network not ready: NetworkReady=false \
     reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

/// Initial objects of one cluster, in creation order: namespaces, nodes, daemon sets, deployments
/// (pod templates defaulted as the API server does), PDBs, HPAs, standalone pods (admitted as the
/// API server does, Pending). Nodes of a `notReadyNodes` fault are built NotReady.
pub fn build_cluster(scn: &ClusterScenario, cluster: &str, now: Timestamp) -> Vec<Object> {
    let mut out = Vec::new();
    for ns in scn.all_namespaces() {
        out.push(Object::Namespace(build_namespace(ns, now)));
    }
    for group in &scn.node_groups {
        let kubelet = scn.kubelet_version(group).to_string();
        for index in 0..group.nodes {
            let ready = scn.node_becomes_ready(&group.name, index);
            out.push(Object::Node(build_node(
                group,
                cluster,
                &scn.region,
                index,
                &kubelet,
                ready,
                now,
            )));
        }
    }
    for ds in &scn.daemon_sets {
        out.push(Object::DaemonSet(build_daemon_set(
            ds,
            &scn.region,
            scn.kubernetes_version,
            now,
        )));
    }
    for d in &scn.deployments {
        out.push(Object::Deployment(build_deployment(
            d,
            &scn.region,
            scn.kubernetes_version,
            now,
        )));
    }
    for d in &scn.deployments {
        if let Some(pdb) = build_pdb(d, now) {
            out.push(Object::PodDisruptionBudget(pdb));
        }
    }
    for d in &scn.deployments {
        if let Some(hpa) = build_hpa(d, now) {
            out.push(Object::HorizontalPodAutoscaler(hpa));
        }
    }
    for p in &scn.pods {
        out.push(Object::Pod(build_pod(
            p,
            &scn.region,
            scn.kubernetes_version,
            now,
        )));
    }
    out
}

/// A namespace as the API server stores it: `kubernetes.io/metadata.name` label, the
/// `kubernetes` finalizer, phase Active.
pub fn build_namespace(name: &str, now: Timestamp) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[("kubernetes.io/metadata.name", name)])),
            creation_timestamp: Some(Time(now)),
            ..Default::default()
        },
        spec: Some(NamespaceSpec {
            finalizers: Some(vec!["kubernetes".into()]),
        }),
        status: Some(NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes.
// ---------------------------------------------------------------------------------------------

/// FNV-1a over the parts, separated so that ("ab","c") and ("a","bc") differ.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn hex(parts: &[&str], len: usize) -> String {
    let mut out = String::new();
    let mut round = 0u32;
    while out.len() < len {
        let mut p: Vec<&str> = parts.to_vec();
        let r = round.to_string();
        p.push(&r);
        out.push_str(&format!("{:016x}", fnv(&p)));
        round += 1;
    }
    out.truncate(len);
    out
}

/// Private IPv4 address of node `index` of `group`: groups get a hashed start in 10.0.0.0/8
/// and their nodes consecutive addresses, so nodes of one cluster practically never collide.
fn node_ip(cluster: &str, group: &str, index: u32) -> String {
    const SPACE: u64 = 256 * 256 * 254;
    let h = (fnv(&[cluster, group]) % SPACE + u64::from(index)) % SPACE;
    format!("10.{}.{}.{}", h / (256 * 254), (h / 254) % 256, h % 254 + 1)
}

fn private_dns_domain(region: &str) -> String {
    if region == "us-east-1" {
        "ec2.internal".into()
    } else {
        format!("{region}.compute.internal")
    }
}

/// The name EKS nodes get from their private DNS name, e.g.
/// `ip-10-0-1-23.us-west-2.compute.internal`; deterministic in cluster, group and index.
pub fn node_name(cluster: &str, group: &str, region: &str, index: u32) -> String {
    format!(
        "ip-{}.{}",
        node_ip(cluster, group, index).replace('.', "-"),
        private_dns_domain(region)
    )
}

/// The kubelet's version string on EKS AMIs for Kubernetes 1.`minor`, e.g. `v1.33.5-eks-3025e55`.
pub fn kubelet_version(minor: u32) -> String {
    let (patch, build) = eks_patch(minor);
    format!("v1.{minor}.{patch}-eks-{build}")
}

/// Patch release and build hash of the EKS AMIs' kubelet per minor.
fn eks_patch(minor: u32) -> (u32, String) {
    let (patch, build) = match minor {
        29 => (15, "b3126f4"),
        30 => (14, "b3126f4"),
        31 => (13, "113cf36"),
        32 => (9, "113cf36"),
        33 => (5, "3025e55"),
        34 => (2, "c39b1d0"),
        35 => (0, "a4f3e1c"),
        _ => (0, ""),
    };
    let build = if build.is_empty() {
        hex(&["eks-build", &minor.to_string()], 7)
    } else {
        build.into()
    };
    (patch, build)
}

/// `"1.33"`, `"v1.33"`, `"33"` or `"1.33.5"` → the kubelet's full version string; anything else
/// is reported as written (with a `v`).
fn kubelet_git_version(kubelet_minor: &str) -> (Option<u32>, String) {
    let s = kubelet_minor.trim().trim_start_matches('v');
    let minor_text = s
        .strip_prefix("1.")
        .map(|r| r.split('.').next().unwrap_or(""))
        .unwrap_or(s);
    match minor_text.parse::<u32>() {
        Ok(m) if !minor_text.is_empty() => (Some(m), kubelet_version(m)),
        _ => (None, format!("v{s}")),
    }
}

/// The CPU EKS AMIs reserve for the kubelet (kube-reserved), in millicores: 6% of the first
/// core, 1% of the second, 0.5% of the third and fourth, 0.25% of the rest.
pub fn reserved_cpu_millis(capacity_millis: u128) -> u128 {
    let c = capacity_millis;
    let tier = |from: u128, to: u128, per_10k: u128| (c.min(to).saturating_sub(from)) * per_10k / 10_000;
    tier(0, 1000, 600) + tier(1000, 2000, 100) + tier(2000, 4000, 50) + tier(4000, u128::MAX, 25)
}

/// The memory EKS AMIs hold back from pods, in bytes: kube-reserved `11 × maxPods + 255` MiB plus
/// the 100Mi hard eviction threshold.
pub fn reserved_memory_bytes(max_pods: u32) -> u128 {
    (11 * u128::from(max_pods) + 255 + 100) << 20
}

fn cpu_text(millis: u128) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

fn bytes_text(bytes: u128) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// `amd64`, or `arm64` for Graviton instance types (a `g` after the generation: m6g, c7gn, t4g; and a1).
pub fn architecture(instance_type: &str) -> &'static str {
    let family = instance_type.split('.').next().unwrap_or("");
    let after_letters = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let attributes = after_letters.trim_start_matches(|c: char| c.is_ascii_digit());
    if family == "a1" || attributes.contains('g') {
        "arm64"
    } else {
        "amd64"
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, now: Timestamp) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn uuid_like(parts: &[&str]) -> String {
    let h = hex(parts, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One node as EKS would register it. `kubelet_minor` is like `"1.33"`. A node that is not
/// `ready` reports the kubelet's CNI-not-initialized NotReady condition and carries the
/// `node.kubernetes.io/not-ready` taints the node lifecycle controller adds.
pub fn build_node(
    group: &NodeGroupSpec,
    cluster: &str,
    region: &str,
    index: u32,
    kubelet_minor: &str,
    ready: bool,
    now: Timestamp,
) -> Node {
    let idx = index.to_string();
    let name = node_name(cluster, &group.name, region, index);
    let ip = node_ip(cluster, &group.name, index);
    let zone = format!("{region}{}", ["a", "b", "c"][(index % 3) as usize]);
    let arch = architecture(&group.instance_type);
    let instance_id = format!("i-0{}", hex(&[cluster, &group.name, &idx, "instance"], 16));
    let (minor, kubelet) = kubelet_git_version(kubelet_minor);

    let mut node_labels: BTreeMap<String, String> = group.labels.clone();
    let mut set = |k: &str, v: &str| {
        node_labels.insert(k.to_string(), v.to_string());
    };
    set("beta.kubernetes.io/arch", arch);
    set("beta.kubernetes.io/instance-type", &group.instance_type);
    set("beta.kubernetes.io/os", "linux");
    set("failure-domain.beta.kubernetes.io/region", region);
    set("failure-domain.beta.kubernetes.io/zone", &zone);
    set("kubernetes.io/arch", arch);
    set("kubernetes.io/hostname", &name);
    set("kubernetes.io/os", "linux");
    set("node.kubernetes.io/instance-type", &group.instance_type);
    set("topology.kubernetes.io/region", region);
    set("topology.kubernetes.io/zone", &zone);
    match group.kind {
        NodeGroupType::SelfManaged => {
            set("alpha.eksctl.io/cluster-name", cluster);
            set("alpha.eksctl.io/nodegroup-name", &group.name);
        }
        NodeGroupType::Managed => {
            set("eks.amazonaws.com/capacityType", "ON_DEMAND");
            set("eks.amazonaws.com/nodegroup", &group.name);
            set(
                "eks.amazonaws.com/nodegroup-image",
                &format!("ami-0{}", hex(&[cluster, &group.name, "ami"], 16)),
            );
        }
    }

    let mut taints: Vec<Taint> = group
        .taints
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: (!t.value.is_empty()).then(|| t.value.clone()),
            effect: t.effect.as_str().into(),
            time_added: None,
        })
        .collect();
    if !ready {
        taints.push(Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        taints.push(Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(now)),
            ..Default::default()
        });
    }

    let cap = &group.capacity;
    let cpu_millis = cap.cpu.millis();
    let memory = cap.memory.value();
    let ephemeral = EPHEMERAL_STORAGE_KI * 1024;
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", cpu_text(cpu_millis)),
        ("ephemeral-storage", format!("{EPHEMERAL_STORAGE_KI}Ki")),
        ("hugepages-1Gi", "0".into()),
        ("hugepages-2Mi", "0".into()),
        ("memory", bytes_text(memory)),
        ("pods", cap.pods.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    let alloc_memory = memory.saturating_sub(reserved_memory_bytes(cap.pods));
    let allocatable: BTreeMap<String, Quantity> = [
        (
            "cpu",
            cpu_text(cpu_millis.saturating_sub(reserved_cpu_millis(cpu_millis))),
        ),
        (
            "ephemeral-storage",
            (ephemeral - (1 << 30) - ephemeral.div_ceil(10)).to_string(),
        ),
        ("hugepages-1Gi", "0".into()),
        ("hugepages-2Mi", "0".into()),
        ("memory", format!("{}Ki", alloc_memory / 1024)),
        ("pods", cap.pods.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();

    let ready_condition = if ready {
        condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            now,
        )
    } else {
        condition("Ready", false, "KubeletNotReady", NOT_READY_MESSAGE, now)
    };
    let kernel_arch = if arch == "arm64" { "aarch64" } else { "x86_64" };

    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(node_labels),
            annotations: Some(labels(&[
                ("alpha.kubernetes.io/provided-node-ip", &ip),
                ("node.alpha.kubernetes.io/ttl", "0"),
                ("volumes.kubernetes.io/controller-managed-attach-detach", "true"),
            ])),
            creation_timestamp: Some(Time(now)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("aws:///{zone}/{instance_id}")),
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip,
                },
                NodeAddress {
                    type_: "InternalDNS".into(),
                    address: name.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name,
                },
            ]),
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    false,
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                    now,
                ),
                condition(
                    "DiskPressure",
                    false,
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                    now,
                ),
                condition(
                    "PIDPressure",
                    false,
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                    now,
                ),
                ready_condition,
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: arch.into(),
                boot_id: uuid_like(&[cluster, &group.name, &idx, "boot"]),
                container_runtime_version: CONTAINER_RUNTIME.into(),
                kernel_version: format!("{KERNEL}.{kernel_arch}"),
                // Kubelets from 1.33 on leave this deprecated field empty (DisableNodeKubeProxyVersion).
                kube_proxy_version: if minor.is_some_and(|m| m < 33) {
                    kubelet.clone()
                } else {
                    String::new()
                },
                kubelet_version: kubelet,
                machine_id: hex(&[cluster, &group.name, &idx, "machine"], 32),
                operating_system: "linux".into(),
                os_image: OS_IMAGE.into(),
                swap: None,
                system_uuid: format!("ec2{}", &uuid_like(&[cluster, &group.name, &idx, "uuid"])[3..]),
            }),
            ..Default::default()
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads.
// ---------------------------------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn app_labels(name: &str) -> BTreeMap<String, String> {
    labels(&[("app", name)])
}

fn meta(name: &str, namespace: &str, now: Timestamp, generation: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(app_labels(name)),
        creation_timestamp: Some(Time(now)),
        generation: generation.then_some(1),
        ..Default::default()
    }
}

fn selector(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(app_labels(name)),
        ..Default::default()
    }
}

fn port(number: i32, protocol: &str, name: &str) -> ContainerPort {
    ContainerPort {
        container_port: number,
        protocol: Some(protocol.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Image, ports and command of a well-known workload; a plain nginx otherwise.
struct Profile {
    image: String,
    ports: Vec<ContainerPort>,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
}

fn profile(name: &str, region: &str, version: KubeVersion) -> Profile {
    let ecr = format!("{EKS_ECR_ACCOUNT}.dkr.ecr.{region}.amazonaws.com");
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    let mut p = Profile {
        image: "public.ecr.aws/nginx/nginx:1.27".into(),
        ports: vec![],
        command: None,
        args: None,
    };
    match name {
        "web" => p.ports = vec![port(80, "TCP", "http")],
        "api" => {
            p.image = "public.ecr.aws/docker/library/python:3.13-slim".into();
            p.command = strings(&["python", "-m", "http.server", "8080"]);
            p.ports = vec![port(8080, "TCP", "http")];
        }
        "worker" => {
            p.image = "public.ecr.aws/docker/library/python:3.13-slim".into();
            p.command = strings(&["sleep", "infinity"]);
        }
        "cache" => {
            p.image = "public.ecr.aws/docker/library/redis:7.4".into();
            p.ports = vec![port(6379, "TCP", "redis")];
        }
        "debug-shell" => {
            p.image = "public.ecr.aws/docker/library/busybox:1.37".into();
            p.command = strings(&["sleep", "infinity"]);
        }
        "coredns" => {
            let tag = match version.minor() {
                m if m <= 33 => "v1.11.4-eksbuild.2",
                34 => "v1.12.3-eksbuild.1",
                _ => "v1.12.4-eksbuild.1",
            };
            p.image = format!("{ecr}/eks/coredns:{tag}");
            p.args = strings(&["-conf", "/etc/coredns/Corefile"]);
            p.ports = vec![
                port(53, "UDP", "dns"),
                port(53, "TCP", "dns-tcp"),
                port(9153, "TCP", "metrics"),
            ];
        }
        "aws-load-balancer-controller" => {
            p.image = "public.ecr.aws/eks/aws-load-balancer-controller:v2.13.3".into();
            p.ports = vec![
                port(9443, "TCP", "webhook-server"),
                port(8080, "TCP", "metrics-server"),
            ];
        }
        "aws-node" => {
            p.image = format!("{ecr}/amazon-k8s-cni:v1.20.4-eksbuild.1");
            p.ports = vec![port(61678, "TCP", "metrics")];
        }
        "kube-proxy" => {
            let (patch, _) = eks_patch(version.minor());
            p.image = format!("{ecr}/eks/kube-proxy:v{version}.{patch}-minimal-eksbuild.1");
            p.command = strings(&[
                "kube-proxy",
                "--v=2",
                "--config=/var/lib/kube-proxy-config/config",
            ]);
        }
        _ => {}
    }
    p
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent` (the API server's default).
fn pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn tolerations(ts: &[TolerationSpec]) -> Option<Vec<Toleration>> {
    if ts.is_empty() {
        return None;
    }
    Some(
        ts.iter()
            .map(|t| Toleration {
                key: (!t.key.is_empty()).then(|| t.key.clone()),
                operator: Some(match t.operator {
                    TolerationOperator::Equal => "Equal".into(),
                    TolerationOperator::Exists => "Exists".into(),
                }),
                value: (!t.value.is_empty()).then(|| t.value.clone()),
                effect: t.effect.map(|e| e.as_str().to_string()),
                toleration_seconds: t.toleration_seconds,
            })
            .collect(),
    )
}

/// What a pod template needs from any workload kind.
struct Template<'a> {
    name: &'a str,
    image: Option<&'a str>,
    cpu: Option<&'a Amount>,
    memory: Option<&'a Amount>,
    empty_dir: bool,
    grace: u32,
    node_selector: &'a BTreeMap<String, String>,
    tolerations: &'a [TolerationSpec],
    priority_class_name: Option<&'a str>,
    host_network: bool,
}

/// A pod spec with the API server's defaults filled in.
fn pod_spec(t: &Template<'_>, region: &str, version: KubeVersion) -> PodSpec {
    let p = profile(t.name, region, version);
    let image = t.image.map(str::to_string).unwrap_or(p.image);
    let mut requests = BTreeMap::new();
    if let Some(cpu) = t.cpu {
        requests.insert("cpu".to_string(), cpu.to_quantity());
    }
    if let Some(memory) = t.memory {
        requests.insert("memory".to_string(), memory.to_quantity());
    }
    let mut ports = p.ports;
    if t.host_network {
        for port in &mut ports {
            port.host_port = Some(port.container_port);
        }
    }
    let container = Container {
        name: t.name.into(),
        image_pull_policy: Some(pull_policy(&image).into()),
        image: Some(image),
        command: p.command,
        args: p.args,
        ports: (!ports.is_empty()).then_some(ports),
        resources: Some(ResourceRequirements {
            requests: (!requests.is_empty()).then_some(requests),
            ..Default::default()
        }),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        volume_mounts: t.empty_dir.then(|| {
            vec![VolumeMount {
                name: "scratch".into(),
                mount_path: "/scratch".into(),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    PodSpec {
        containers: vec![container],
        dns_policy: Some("ClusterFirst".into()),
        host_network: t.host_network.then_some(true),
        node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
        priority_class_name: t.priority_class_name.map(str::to_string),
        restart_policy: Some("Always".into()),
        scheduler_name: Some("default-scheduler".into()),
        security_context: Some(PodSecurityContext::default()),
        termination_grace_period_seconds: Some(i64::from(t.grace)),
        tolerations: tolerations(t.tolerations),
        volumes: t.empty_dir.then(|| {
            vec![Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]
        }),
        ..Default::default()
    }
}

fn template(name: &str, spec: PodSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(app_labels(name)),
            ..Default::default()
        }),
        spec: Some(spec),
    }
}

/// A Deployment as the API server stores it after create (progressDeadlineSeconds 600,
/// revisionHistoryLimit 10, RollingUpdate strategy, defaulted pod template, empty status).
pub fn build_deployment(
    d: &DeploymentSpec,
    region: &str,
    version: KubeVersion,
    now: Timestamp,
) -> Deployment {
    let spec = pod_spec(
        &Template {
            name: &d.name,
            image: d.image.as_deref(),
            cpu: d.cpu.as_ref(),
            memory: d.memory.as_ref(),
            empty_dir: d.empty_dir,
            grace: d.termination_grace_period_seconds,
            node_selector: &d.node_selector,
            tolerations: &d.tolerations,
            priority_class_name: d.priority_class_name.as_deref(),
            host_network: false,
        },
        region,
        version,
    );
    Deployment {
        metadata: meta(&d.name, &d.namespace, now, true),
        spec: Some(K8sDeploymentSpec {
            replicas: Some(i32::try_from(d.replicas).unwrap_or(i32::MAX)),
            selector: selector(&d.name),
            template: template(&d.name, spec),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(d.max_surge.to_int_or_string()),
                    max_unavailable: Some(d.max_unavailable.to_int_or_string()),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..Default::default()
        }),
        status: Some(DeploymentStatus::default()),
    }
}

/// A DaemonSet as the API server stores it after create (RollingUpdate with maxSurge 0,
/// revisionHistoryLimit 10, defaulted pod template, zero status).
pub fn build_daemon_set(d: &DaemonSetSpec, region: &str, version: KubeVersion, now: Timestamp) -> DaemonSet {
    let spec = pod_spec(
        &Template {
            name: &d.name,
            image: d.image.as_deref(),
            cpu: d.cpu.as_ref(),
            memory: d.memory.as_ref(),
            empty_dir: false,
            grace: d.termination_grace_period_seconds,
            node_selector: &d.node_selector,
            tolerations: &d.tolerations,
            priority_class_name: d.priority_class_name.as_deref(),
            host_network: d.host_network,
        },
        region,
        version,
    );
    DaemonSet {
        metadata: meta(&d.name, &d.namespace, now, true),
        spec: Some(K8sDaemonSetSpec {
            selector: selector(&d.name),
            template: template(&d.name, spec),
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(d.max_unavailable.to_int_or_string()),
                }),
            }),
            revision_history_limit: Some(10),
            ..Default::default()
        }),
        status: Some(DaemonSetStatus::default()),
    }
}

/// The deployment's PodDisruptionBudget (named like it), if it has one.
pub fn build_pdb(d: &DeploymentSpec, now: Timestamp) -> Option<PodDisruptionBudget> {
    let p = d.pdb.as_ref()?;
    Some(PodDisruptionBudget {
        metadata: meta(&d.name, &d.namespace, now, true),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(selector(&d.name)),
            min_available: p.min_available.map(IntOrPercent::to_int_or_string),
            max_unavailable: p.max_unavailable.map(IntOrPercent::to_int_or_string),
            unhealthy_pod_eviction_policy: p.unhealthy_pod_eviction_policy.map(|u| format!("{u:?}")),
        }),
        status: Some(PodDisruptionBudgetStatus::default()),
    })
}

/// The deployment's autoscaling/v2 HPA (named like it, on CPU utilization), if it has one.
pub fn build_hpa(d: &DeploymentSpec, now: Timestamp) -> Option<HorizontalPodAutoscaler> {
    let h = d.hpa.as_ref()?;
    let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    Some(HorizontalPodAutoscaler {
        metadata: meta(&d.name, &d.namespace, now, true),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: d.name.clone(),
            },
            min_replicas: Some(int(h.min_replicas)),
            max_replicas: int(h.max_replicas),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(int(h.target_cpu_utilization)),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            behavior: None,
        }),
        status: Some(HorizontalPodAutoscalerStatus::default()),
    })
}

/// A standalone pod as the API server stores it after create: defaulted, admitted
/// ([`admit_pod`]), Pending, unscheduled.
pub fn build_pod(p: &StandalonePodSpec, region: &str, version: KubeVersion, now: Timestamp) -> Pod {
    let spec = pod_spec(
        &Template {
            name: &p.name,
            image: p.image.as_deref(),
            cpu: p.cpu.as_ref(),
            memory: p.memory.as_ref(),
            empty_dir: p.empty_dir,
            grace: p.termination_grace_period_seconds,
            node_selector: &p.node_selector,
            tolerations: &p.tolerations,
            priority_class_name: None,
            host_network: false,
        },
        region,
        version,
    );
    let mut pod = Pod {
        metadata: meta(&p.name, &p.namespace, now, false),
        spec: Some(spec),
        status: None,
    };
    admit_pod(&mut pod);
    pod
}

const KUBE_API_ACCESS_PREFIX: &str = "kube-api-access-";
const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the API server does to a pod on create, besides naming it: pod defaults (restart, DNS
/// and pull policies, scheduler, termination message, grace period, service links), Priority
/// admission (`priority`, `preemptionPolicy`), ServiceAccount admission (the `default` account and
/// its projected `kube-api-access-*` token volume mounted in every container),
/// DefaultTolerationSeconds (not-ready / unreachable for 300s), and a Pending status with the QoS
/// class. Idempotent; the controllers use it for the pods they create.
pub fn admit_pod(pod: &mut Pod) {
    let seed = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata
            .name
            .as_deref()
            .or(pod.metadata.generate_name.as_deref())
            .unwrap_or("")
    );
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.enable_service_links.get_or_insert(true);
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
    let priority = match spec.priority_class_name.as_deref() {
        Some("system-node-critical") => 2_000_001_000,
        Some("system-cluster-critical") => 2_000_000_000,
        _ => 0,
    };
    spec.priority.get_or_insert(priority);
    let account = spec
        .service_account_name
        .get_or_insert_with(|| "default".into())
        .clone();
    spec.service_account.get_or_insert(account);

    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let tolerated = tolerations.iter().any(|t| {
            (t.key.as_deref() == Some(key) || t.key.as_deref().unwrap_or("").is_empty())
                && matches!(t.effect.as_deref(), Some("NoExecute") | None | Some(""))
        });
        if !tolerated {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                value: None,
            });
        }
    }

    if spec.automount_service_account_token != Some(false) {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        let existing = volumes
            .iter()
            .find(|v| v.name.starts_with(KUBE_API_ACCESS_PREFIX))
            .map(|v| v.name.clone());
        let volume_name = match existing {
            Some(name) => name,
            None => {
                const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                let mut h = fnv(&[&seed, "kube-api-access"]);
                let suffix: String = (0..5)
                    .map(|_| {
                        let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
                        h /= ALPHABET.len() as u64;
                        c
                    })
                    .collect();
                let name = format!("{KUBE_API_ACCESS_PREFIX}{suffix}");
                volumes.push(kube_api_access_volume(&name));
                name
            }
        };
        for c in &mut spec.containers {
            let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
            if !mounts.iter().any(|m| m.mount_path == SERVICE_ACCOUNT_MOUNT) {
                mounts.push(VolumeMount {
                    name: volume_name.clone(),
                    mount_path: SERVICE_ACCOUNT_MOUNT.into(),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
        }
    }

    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        let policy = pull_policy(c.image.as_deref().unwrap_or(""));
        c.image_pull_policy.get_or_insert_with(|| policy.into());
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy.get_or_insert_with(|| "File".into());
        c.resources.get_or_insert_with(ResourceRequirements::default);
    }

    let qos = qos_class(spec);
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.phase.get_or_insert_with(|| "Pending".into());
    status.qos_class.get_or_insert_with(|| qos.into());
}

fn kube_api_access_volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(3607),
                        path: "token".into(),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".into()),
                                field_path: "metadata.namespace".into(),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}

/// The pod's QoS class from its containers' cpu/memory requests and limits.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        for res in ["cpu", "memory"] {
            let req = requests.and_then(|m| m.get(res));
            let lim = limits.and_then(|m| m.get(res));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            let same = match (req, lim) {
                (Some(r), Some(l)) => {
                    Amount::parse(&r.0).ok().map(|a| a.millis())
                        == Amount::parse(&l.0).ok().map(|a| a.millis())
                }
                (None, Some(_)) => true,
                _ => false,
            };
            guaranteed &= same;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::resources::Kind;
    use crate::scenario::{CapacitySpec, Scenario, TaintEffect, TaintSpec};

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn default_objects() -> Vec<Object> {
        build_cluster(&Scenario::default_scenario().for_cluster("sim-1"), "sim-1", now())
    }

    fn find<'a>(objs: &'a [Object], kind: Kind, ns: &str, name: &str) -> &'a Object {
        objs.iter()
            .find(|o| o.kind() == kind && o.namespace() == ns && o.name() == name)
            .unwrap_or_else(|| panic!("no {kind} {ns}/{name}"))
    }

    fn group(name: &str) -> NodeGroupSpec {
        NodeGroupSpec {
            name: name.into(),
            kind: NodeGroupType::SelfManaged,
            nodes: 1,
            instance_type: "m5.xlarge".into(),
            capacity: CapacitySpec::default(),
            labels: BTreeMap::new(),
            taints: vec![],
            kubelet_version: None,
        }
    }

    #[test]
    fn default_cluster_has_exactly_the_specified_objects_in_order() {
        let objs = default_objects();
        let kinds: Vec<Kind> = objs.iter().map(Object::kind).collect();
        let mut expected = vec![Kind::Namespace; 5];
        expected.extend([Kind::Node; 4]);
        expected.extend([Kind::DaemonSet; 2]);
        expected.extend([Kind::Deployment; 6]);
        expected.extend([Kind::PodDisruptionBudget; 5]);
        expected.push(Kind::HorizontalPodAutoscaler);
        expected.push(Kind::Pod);
        assert_eq!(kinds, expected);
        let namespaces: Vec<&str> = objs
            .iter()
            .filter(|o| o.kind() == Kind::Namespace)
            .map(Object::name)
            .collect();
        assert_eq!(
            namespaces,
            ["default", "kube-system", "kube-public", "kube-node-lease", "shop"]
        );

        let replicas = |name: &str, ns: &str| match find(&objs, Kind::Deployment, ns, name) {
            Object::Deployment(d) => d.spec.as_ref().unwrap().replicas.unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(replicas("web", "shop"), 4);
        assert_eq!(replicas("api", "shop"), 3);
        assert_eq!(replicas("worker", "shop"), 2);
        assert_eq!(replicas("cache", "shop"), 1);
        assert_eq!(replicas("coredns", "kube-system"), 2);
        assert_eq!(replicas("aws-load-balancer-controller", "kube-system"), 2);

        let pdb = |ns: &str, name: &str| match find(&objs, Kind::PodDisruptionBudget, ns, name) {
            Object::PodDisruptionBudget(p) => {
                let s = p.spec.clone().unwrap();
                assert_eq!(s.selector.unwrap().match_labels.unwrap()["app"], name);
                (s.min_available, s.max_unavailable)
            }
            _ => unreachable!(),
        };
        assert_eq!(pdb("shop", "web"), (Some(IntOrString::Int(3)), None));
        assert_eq!(pdb("shop", "api"), (None, Some(IntOrString::Int(1))));
        assert_eq!(pdb("shop", "cache"), (Some(IntOrString::Int(1)), None));
        assert_eq!(pdb("kube-system", "coredns"), (None, Some(IntOrString::Int(1))));
        assert_eq!(
            pdb("kube-system", "aws-load-balancer-controller"),
            (None, Some(IntOrString::Int(1)))
        );

        let Object::HorizontalPodAutoscaler(hpa) =
            find(&objs, Kind::HorizontalPodAutoscaler, "shop", "worker")
        else {
            unreachable!()
        };
        let spec = hpa.spec.as_ref().unwrap();
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
        assert_eq!(
            (
                spec.scale_target_ref.kind.as_str(),
                spec.scale_target_ref.name.as_str()
            ),
            ("Deployment", "worker")
        );
        let target = &spec.metrics.as_ref().unwrap()[0]
            .resource
            .as_ref()
            .unwrap()
            .target;
        assert_eq!(
            (target.type_.as_str(), target.average_utilization),
            ("Utilization", Some(70))
        );

        for ds in ["aws-node", "kube-proxy"] {
            let Object::DaemonSet(d) = find(&objs, Kind::DaemonSet, "kube-system", ds) else {
                unreachable!()
            };
            let t = d
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .tolerations
                .clone()
                .unwrap();
            assert_eq!(
                t,
                vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]
            );
        }

        let Object::Pod(pod) = find(&objs, Kind::Pod, "shop", "debug-shell") else {
            unreachable!()
        };
        assert!(pod.metadata.owner_references.is_none());
        assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
        assert!(pod.spec.as_ref().unwrap().node_name.is_none());
    }

    #[test]
    fn only_worker_has_an_empty_dir() {
        let objs = default_objects();
        for o in &objs {
            if let Object::Deployment(d) = o {
                let spec = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
                let has = spec.volumes.iter().flatten().any(|v| v.empty_dir.is_some());
                assert_eq!(has, o.name() == "worker", "{}", o.name());
                if has {
                    let mounts = spec.containers[0].volume_mounts.as_ref().unwrap();
                    assert_eq!(mounts[0].name, spec.volumes.as_ref().unwrap()[0].name);
                }
            }
        }
    }

    #[test]
    fn workloads_are_labelled_and_defaulted_like_the_api_server() {
        let objs = default_objects();
        let Object::Deployment(web) = find(&objs, Kind::Deployment, "shop", "web") else {
            unreachable!()
        };
        assert_eq!(web.metadata.labels.as_ref().unwrap()["app"], "web");
        let spec = web.spec.as_ref().unwrap();
        assert_eq!(spec.selector.match_labels.as_ref().unwrap()["app"], "web");
        assert_eq!(
            spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()["app"],
            "web"
        );
        assert_eq!(
            (spec.progress_deadline_seconds, spec.revision_history_limit),
            (Some(600), Some(10))
        );
        let ru = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("25%".into())));

        let json = Object::Deployment(web.clone()).to_json();
        let pod = &json["spec"]["template"]["spec"];
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["schedulerName"], "default-scheduler");
        assert_eq!(pod["securityContext"], serde_json::json!({}));
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        let c = &pod["containers"][0];
        assert_eq!(c["name"], "web");
        assert_eq!(c["image"], "public.ecr.aws/nginx/nginx:1.27");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(
            c["resources"],
            serde_json::json!({"requests": {"cpu": "100m", "memory": "128Mi"}})
        );
        assert_eq!(json["status"], serde_json::json!({}));

        let Object::Deployment(coredns) = find(&objs, Kind::Deployment, "kube-system", "coredns") else {
            unreachable!()
        };
        let image = coredns
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone();
        assert_eq!(
            image.as_deref(),
            Some("602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.11.4-eksbuild.2")
        );

        // Every object survives the store's JSON round trip.
        for o in &objs {
            assert_eq!(&Object::from_json(o.kind(), o.to_json()).unwrap(), o);
        }
    }

    #[test]
    fn default_nodes_look_like_eks_nodes() {
        let objs = default_objects();
        let nodes: Vec<&Node> = objs
            .iter()
            .filter_map(|o| if let Object::Node(n) = o { Some(n) } else { None })
            .collect();
        assert_eq!(nodes.len(), 4);
        let names: BTreeSet<&str> = nodes
            .iter()
            .map(|n| n.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names.len(), 4);
        for n in nodes {
            let name = n.metadata.name.clone().unwrap();
            let ip = name
                .strip_prefix("ip-")
                .unwrap()
                .strip_suffix(".us-west-2.compute.internal")
                .unwrap();
            assert_eq!(ip.split('-').count(), 4, "{name}");
            assert!(ip.split('-').all(|o| o.parse::<u8>().is_ok()), "{name}");
            let l = n.metadata.labels.as_ref().unwrap();
            assert_eq!(l["alpha.eksctl.io/nodegroup-name"], "ng-old");
            assert_eq!(l["kubernetes.io/hostname"], name);
            assert_eq!(l["kubernetes.io/os"], "linux");
            assert_eq!(l["kubernetes.io/arch"], "amd64");
            assert_eq!(l["node.kubernetes.io/instance-type"], "m5.xlarge");
            assert_eq!(l["topology.kubernetes.io/region"], "us-west-2");
            assert!(l["topology.kubernetes.io/zone"].starts_with("us-west-2"));
            let spec = n.spec.as_ref().unwrap();
            let provider = spec.provider_id.as_deref().unwrap();
            assert!(
                provider.starts_with(&format!("aws:///{}/i-0", l["topology.kubernetes.io/zone"])),
                "{provider}"
            );
            assert_eq!(provider.rsplit('/').next().unwrap().len(), 19);
            assert!(spec.taints.is_none());
            let st = n.status.as_ref().unwrap();
            let cap = st.capacity.as_ref().unwrap();
            let alloc = st.allocatable.as_ref().unwrap();
            assert_eq!(
                (
                    cap["pods"].0.as_str(),
                    cap["cpu"].0.as_str(),
                    cap["memory"].0.as_str()
                ),
                ("30", "4", "16777216Ki")
            );
            assert_eq!(
                (alloc["pods"].0.as_str(), alloc["cpu"].0.as_str()),
                ("30", "3920m")
            );
            // 16Gi less (11 × 30 + 255)Mi kube-reserved and 100Mi eviction.
            assert_eq!(alloc["memory"].0, format!("{}Ki", (16u64 << 20) - 685 * 1024));
            let info = st.node_info.as_ref().unwrap();
            assert_eq!(info.kubelet_version, "v1.33.5-eks-3025e55");
            assert_eq!(info.kube_proxy_version, "");
            assert!(info.os_image.starts_with("Amazon Linux 2023"));
            assert!(info.container_runtime_version.starts_with("containerd://1.7"));
            assert_eq!(
                (info.architecture.as_str(), info.operating_system.as_str()),
                ("amd64", "linux")
            );
            let conds = st.conditions.as_ref().unwrap();
            let by_type: BTreeMap<&str, (&str, &str)> = conds
                .iter()
                .map(|c| {
                    (
                        c.type_.as_str(),
                        (c.status.as_str(), c.reason.as_deref().unwrap()),
                    )
                })
                .collect();
            assert_eq!(by_type["Ready"], ("True", "KubeletReady"));
            assert_eq!(by_type["MemoryPressure"], ("False", "KubeletHasSufficientMemory"));
            assert_eq!(by_type["DiskPressure"], ("False", "KubeletHasNoDiskPressure"));
            assert_eq!(by_type["PIDPressure"], ("False", "KubeletHasSufficientPID"));
            let addrs: Vec<&str> = st
                .addresses
                .as_ref()
                .unwrap()
                .iter()
                .map(|a| a.type_.as_str())
                .collect();
            assert_eq!(addrs, ["InternalIP", "InternalDNS", "Hostname"]);
        }
    }

    #[test]
    fn not_ready_nodes_are_built_not_ready_and_tainted() {
        let text = "faults:\n  notReadyNodes: [{nodeGroup: ng-old, count: 1}]\n";
        let s = Scenario::from_yaml(text, "f.yaml").unwrap();
        let objs = build_cluster(&s.for_cluster("sim-1"), "sim-1", now());
        let ready: Vec<bool> = objs
            .iter()
            .filter_map(|o| match o {
                Object::Node(n) => {
                    let c = n
                        .status
                        .as_ref()?
                        .conditions
                        .as_ref()?
                        .iter()
                        .find(|c| c.type_ == "Ready")?;
                    Some(c.status == "True")
                }
                _ => None,
            })
            .collect();
        assert_eq!(ready, [true, true, true, false]);

        let n = build_node(&group("g"), "c", "us-west-2", 0, "1.33", false, now());
        let ready = n
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert!(ready.message.unwrap().contains("cni plugin not initialized"));
        let taints = n.spec.unwrap().taints.unwrap();
        let effects: Vec<(&str, &str)> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            effects,
            [
                ("node.kubernetes.io/not-ready", "NoSchedule"),
                ("node.kubernetes.io/not-ready", "NoExecute")
            ]
        );
    }

    #[test]
    fn managed_arm64_tainted_group() {
        let mut g = group("ng-arm");
        g.kind = NodeGroupType::Managed;
        g.instance_type = "m6g.large".into();
        g.labels.insert("team".into(), "a".into());
        g.taints.push(TaintSpec {
            key: "dedicated".into(),
            value: "batch".into(),
            effect: TaintEffect::NoSchedule,
        });
        let n = build_node(&g, "sim-1", "eu-central-1", 4, "1.31", true, now());
        let l = n.metadata.labels.as_ref().unwrap();
        assert_eq!(l["eks.amazonaws.com/nodegroup"], "ng-arm");
        assert_eq!(l["eks.amazonaws.com/capacityType"], "ON_DEMAND");
        assert!(!l.contains_key("alpha.eksctl.io/nodegroup-name"));
        assert_eq!(l["team"], "a");
        assert_eq!(l["kubernetes.io/arch"], "arm64");
        assert_eq!(l["topology.kubernetes.io/zone"], "eu-central-1b");
        assert!(n
            .metadata
            .name
            .as_deref()
            .unwrap()
            .ends_with(".eu-central-1.compute.internal"));
        let info = n.status.as_ref().unwrap().node_info.clone().unwrap();
        assert!(info.kubelet_version.starts_with("v1.31."));
        assert_eq!(info.kube_proxy_version, info.kubelet_version);
        assert!(info.kernel_version.ends_with("aarch64"));
        let t = &n.spec.as_ref().unwrap().taints.as_ref().unwrap()[0];
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("batch"), "NoSchedule")
        );
    }

    #[test]
    fn node_names_are_deterministic_and_unique() {
        assert_eq!(
            node_name("sim-1", "ng-old", "us-west-2", 0),
            node_name("sim-1", "ng-old", "us-west-2", 0)
        );
        assert_ne!(
            node_name("sim-1", "ng-old", "us-west-2", 0),
            node_name("sim-2", "ng-old", "us-west-2", 0)
        );
        assert!(node_name("c", "g", "us-east-1", 0).ends_with(".ec2.internal"));
        let mut seen = BTreeSet::new();
        for g in 0..20 {
            for i in 0..100 {
                assert!(seen.insert(node_name("sim-1", &format!("ng-{g}"), "us-west-2", i)));
            }
        }
        let a = build_node(&group("g"), "c", "us-west-2", 3, "1.33", true, now());
        let b = build_node(&group("g"), "c", "us-west-2", 3, "1.33", true, now());
        assert_eq!(a, b);
    }

    #[test]
    fn eks_reservations_and_architectures() {
        assert_eq!(reserved_cpu_millis(4000), 80);
        assert_eq!(reserved_cpu_millis(2000), 70);
        assert_eq!(reserved_cpu_millis(8000), 90);
        assert_eq!(reserved_memory_bytes(30), 685 << 20);
        for (t, a) in [
            ("m5.xlarge", "amd64"),
            ("m6g.large", "arm64"),
            ("c7gn.xlarge", "arm64"),
            ("t4g.micro", "arm64"),
            ("g5.xlarge", "amd64"),
            ("a1.large", "arm64"),
            ("m7i.large", "amd64"),
        ] {
            assert_eq!(architecture(t), a, "{t}");
        }
        assert_eq!(kubelet_version(33), "v1.33.5-eks-3025e55");
        assert!(kubelet_version(99).starts_with("v1.99.0-eks-"));
    }

    #[test]
    fn admitted_pods_match_the_api_server() {
        let objs = default_objects();
        let Object::Pod(pod) = find(&objs, Kind::Pod, "shop", "debug-shell") else {
            unreachable!()
        };
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert_eq!((spec.priority, spec.enable_service_links), (Some(0), Some(true)));
        assert_eq!(spec.preemption_policy.as_deref(), Some("PreemptLowerPriority"));
        let tol: Vec<(&str, Option<i64>)> = spec
            .tolerations
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| (t.key.as_deref().unwrap(), t.toleration_seconds))
            .collect();
        assert_eq!(
            tol,
            [
                ("node.kubernetes.io/not-ready", Some(300)),
                ("node.kubernetes.io/unreachable", Some(300))
            ]
        );
        let vol = &spec.volumes.as_ref().unwrap()[0];
        assert!(vol.name.starts_with("kube-api-access-") && vol.name.len() == 21);
        let mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (mount.name.as_str(), mount.mount_path.as_str()),
            (vol.name.as_str(), SERVICE_ACCOUNT_MOUNT)
        );
        assert_eq!(
            pod.status.as_ref().unwrap().qos_class.as_deref(),
            Some("Burstable")
        );
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("public.ecr.aws/docker/library/busybox:1.37")
        );

        let mut again = pod.clone();
        admit_pod(&mut again);
        assert_eq!(&again, pod);

        let mut bare = Pod {
            metadata: ObjectMeta {
                name: Some("x".into()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                priority_class_name: Some("system-node-critical".into()),
                tolerations: Some(vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        admit_pod(&mut bare);
        let spec = bare.spec.as_ref().unwrap();
        assert_eq!(spec.priority, Some(2_000_001_000));
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            bare.status.as_ref().unwrap().qos_class.as_deref(),
            Some("BestEffort")
        );
    }

    #[test]
    fn versions_follow_the_cluster() {
        let s = Scenario::from_yaml("kubernetesVersion: \"1.35\"\n", "f.yaml").unwrap();
        let objs = build_cluster(&s.for_cluster("a"), "a", now());
        let Object::DaemonSet(kp) = find(&objs, Kind::DaemonSet, "kube-system", "kube-proxy") else {
            unreachable!()
        };
        let image = kp
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap();
        assert!(image.contains("/eks/kube-proxy:v1.35."), "{image}");
        let Object::Node(n) = objs.iter().find(|o| o.kind() == Kind::Node).unwrap() else {
            unreachable!()
        };
        assert!(n
            .status
            .as_ref()
            .unwrap()
            .node_info
            .as_ref()
            .unwrap()
            .kubelet_version
            .starts_with("v1.35."));
    }
}
