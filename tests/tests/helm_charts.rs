//! The Helm charts in `deploy/helm`, checked through Helm itself (helm-python-sdk embeds Helm as a
//! library; `tests/helm_tool.py` drives it): lint; render with the minimal and the example values;
//! every rendered manifest parsed into its k8s-openapi type without losing a field; the properties
//! operators rely on; what `values.schema.json` refuses; the agent's ClusterRole against
//! `flotilla_agent::cluster::kube::RBAC`, and that list against the requests a `KubeCluster` makes
//! on the simulator. Also the Dockerfiles against the workspace, and no OpenSSL in either binary.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_agent::cluster::kube::{RBAC, URL_RBAC};
use flotilla_agent::cluster::{
    Cluster, DeploymentPatch, EventNote, EventType, Eviction, HpaPatch, KubeCluster, ObjectRef,
    Result as ClusterResult, WatchStream, Watched,
};
use flotilla_sim::fleet::{Fleet, FleetOptions};
use flotilla_sim::scenario::Scenario;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, Pod, PodSpec, Probe, Secret, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const AGENT: &str = "deploy/helm/flotilla-agent";
const COORDINATOR: &str = "deploy/helm/flotilla-coordinator";
const NAMESPACE: &str = "flotilla";
/// What an operator must set for the agent, as the README's `helm install` does.
const AGENT_MINIMAL: &str = "cluster=prod-eu-1,coordinator.address=https://flotilla.example.com:8443,\
                             tls.existingSecret=flotilla-agent-tls";
/// What an operator must set for the coordinator.
const COORDINATOR_MINIMAL: &str = "tls.existingSecret=flotilla-coordinator-tls";
/// The `nonroot` user and group of gcr.io/distroless/cc-debian12:nonroot.
const NONROOT: i64 = 65532;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

// === Helm, through tests/helm_tool.py ===

/// One values source, applied in order as helm's `-f`, `--set` and `--set-file` are.
#[derive(Debug, Clone)]
enum Values {
    File(PathBuf),
    Set(String),
    SetFile(String),
}

impl Values {
    fn json(&self) -> Value {
        match self {
            Values::File(p) => json!({ "file": p }),
            Values::Set(e) => json!({ "set": e }),
            Values::SetFile(e) => json!({ "set_file": e }),
        }
    }
}

fn set(expr: &str) -> Values {
    Values::Set(expr.to_string())
}

fn example(file: &str) -> Values {
    Values::File(repo().join("deploy/examples").join(file))
}

/// Runs tests/helm_tool.py with one request. A missing python3 or helm-python-sdk fails the test
/// with the reason: nothing here is skipped for want of a tool.
fn helm_tool(request: Value) -> Value {
    let script = repo().join("tests/helm_tool.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `python3 {}`: {e}; python3 with helm-python-sdk==0.2.2 is required \
                 (scripts/test.sh installs it)",
                script.display()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("send the request to helm_tool.py");
    let out = child.wait_with_output().expect("helm_tool.py runs");
    assert!(
        out.status.success(),
        "helm_tool.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "helm_tool.py answered no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn release(chart: &str) -> &str {
    chart.rsplit('/').next().expect("chart directory")
}

/// `helm lint` findings as (severity, path, message); severity 1 info, 2 warning, 3 error.
fn lint(chart: &str, values: &[Values]) -> Vec<(u64, String, String)> {
    let answer = helm_tool(json!({
        "op": "lint",
        "chart": repo().join(chart),
        "values": values.iter().map(Values::json).collect::<Vec<_>>(),
        "namespace": NAMESPACE,
    }));
    assert_eq!(answer["ok"], true, "lint of {chart} failed: {answer}");
    answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["severity"].as_u64().expect("severity"),
                m["path"].as_str().unwrap_or_default().to_string(),
                m["error"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A rendered manifest, parsed into its k8s-openapi type.
#[derive(Debug, Clone)]
enum Object {
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Secret(Secret),
    ConfigMap(ConfigMap),
    Service(Service),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

/// A chart rendered by Helm: its objects (by template) and its NOTES.txt.
#[derive(Debug)]
struct Rendered {
    objects: Vec<(String, Object)>,
    notes: String,
}

impl Rendered {
    /// Every object as `Kind/name`.
    fn names(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .map(|(_, o)| {
                let (kind, meta) = match o {
                    Object::ServiceAccount(x) => ("ServiceAccount", &x.metadata),
                    Object::ClusterRole(x) => ("ClusterRole", &x.metadata),
                    Object::ClusterRoleBinding(x) => ("ClusterRoleBinding", &x.metadata),
                    Object::Secret(x) => ("Secret", &x.metadata),
                    Object::ConfigMap(x) => ("ConfigMap", &x.metadata),
                    Object::Service(x) => ("Service", &x.metadata),
                    Object::Deployment(x) => ("Deployment", &x.metadata),
                    Object::StatefulSet(x) => ("StatefulSet", &x.metadata),
                };
                format!("{kind}/{}", meta.name.as_deref().unwrap_or_default())
            })
            .collect()
    }

    fn all<'a, T>(&'a self, pick: impl Fn(&'a Object) -> Option<&'a T>) -> Vec<&'a T> {
        self.objects.iter().filter_map(|(_, o)| pick(o)).collect()
    }

    fn only<'a, T>(&'a self, what: &str, pick: impl Fn(&'a Object) -> Option<&'a T>) -> &'a T {
        let all = self.all(pick);
        assert_eq!(all.len(), 1, "expected one {what} in {:?}", self.names());
        all[0]
    }

    fn deployment(&self) -> &Deployment {
        self.only("Deployment", |o| match o {
            Object::Deployment(x) => Some(x),
            _ => None,
        })
    }

    fn statefulset(&self) -> &StatefulSet {
        self.only("StatefulSet", |o| match o {
            Object::StatefulSet(x) => Some(x),
            _ => None,
        })
    }

    fn service_account(&self) -> &ServiceAccount {
        self.only("ServiceAccount", |o| match o {
            Object::ServiceAccount(x) => Some(x),
            _ => None,
        })
    }

    fn cluster_role(&self) -> &ClusterRole {
        self.only("ClusterRole", |o| match o {
            Object::ClusterRole(x) => Some(x),
            _ => None,
        })
    }

    fn cluster_role_binding(&self) -> &ClusterRoleBinding {
        self.only("ClusterRoleBinding", |o| match o {
            Object::ClusterRoleBinding(x) => Some(x),
            _ => None,
        })
    }

    fn secret(&self) -> &Secret {
        self.only("Secret", |o| match o {
            Object::Secret(x) => Some(x),
            _ => None,
        })
    }

    fn config_map(&self) -> &ConfigMap {
        self.only("ConfigMap", |o| match o {
            Object::ConfigMap(x) => Some(x),
            _ => None,
        })
    }

    fn service(&self, name: &str) -> &Service {
        self.only(&format!("Service {name}"), |o| match o {
            Object::Service(x) if x.metadata.name.as_deref() == Some(name) => Some(x),
            _ => None,
        })
    }
}

/// Renders a chart as `helm install RELEASE CHART -n flotilla` would; `Err` carries Helm's refusal.
fn try_render(chart: &str, values: &[Values]) -> Result<Rendered, String> {
    let answer = helm_tool(json!({
        "op": "render",
        "chart": repo().join(chart),
        "values": values.iter().map(Values::json).collect::<Vec<_>>(),
        "name": release(chart),
        "namespace": NAMESPACE,
    }));
    if answer["ok"] != true {
        return Err(format!(
            "{}: {}",
            answer["kind"].as_str().unwrap_or_default(),
            answer["error"].as_str().unwrap_or_default()
        ));
    }
    let mut objects = Vec::new();
    let mut notes = String::new();
    let manifests = answer["manifests"].as_object().expect("manifests");
    for (template, text) in manifests {
        let text = text.as_str().expect("manifest text");
        if template.ends_with("NOTES.txt") {
            notes = text.to_string();
            continue;
        }
        assert!(
            template.ends_with(".yaml"),
            "{template}: templates render YAML manifests (or NOTES.txt)"
        );
        for doc in serde_yaml::Deserializer::from_str(text) {
            let doc =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{template} is not YAML: {e}\n{text}"));
            if doc.is_null() {
                continue;
            }
            objects.push((template.clone(), parse(template, &doc)));
        }
    }
    Ok(Rendered { objects, notes })
}

fn render(chart: &str, values: &[Values]) -> Rendered {
    try_render(chart, values).unwrap_or_else(|e| panic!("{chart} does not render: {e}"))
}

/// Parses one manifest into its k8s-openapi type; an unknown kind fails.
fn parse(template: &str, doc: &Value) -> Object {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "ServiceAccount") => Object::ServiceAccount(typed(template, doc)),
        ("v1", "Secret") => Object::Secret(typed(template, doc)),
        ("v1", "ConfigMap") => Object::ConfigMap(typed(template, doc)),
        ("v1", "Service") => Object::Service(typed(template, doc)),
        ("apps/v1", "Deployment") => Object::Deployment(typed(template, doc)),
        ("apps/v1", "StatefulSet") => Object::StatefulSet(typed(template, doc)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(typed(template, doc)),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(typed(template, doc))
        }
        other => panic!("{template}: unexpected kind {other:?}; add it to `parse` with its k8s-openapi type"),
    }
}

/// Deserializes `doc` into `T` and serializes it back: a field k8s-openapi does not know (a typo,
/// a misplaced key) would be dropped on the way, so any difference fails.
fn typed<T: DeserializeOwned + Serialize>(template: &str, doc: &Value) -> T {
    let value: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{template}: not a valid {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&value).expect("serialize");
    if let Some(d) = first_difference("", doc, &back) {
        panic!("{template}: the manifest changes through its k8s-openapi type (a misspelt field?): {d}");
    }
    value
}

fn first_difference(path: &str, rendered: &Value, typed: &Value) -> Option<String> {
    match (rendered, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
                let here = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => {
                        if let Some(d) = first_difference(&here, x, y) {
                            return Some(d);
                        }
                    }
                    (Some(x), None) => return Some(format!("{here} = {x} is dropped")),
                    (None, Some(y)) => return Some(format!("{here} = {y} appears")),
                    (None, None) => {}
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: {a} becomes {b}")),
    }
}

// === Shared assertions ===

fn pod_spec(template: &Option<k8s_openapi::api::core::v1::PodTemplateSpec>) -> &PodSpec {
    template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .expect("pod template spec")
}

fn only_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1, "one container");
    assert!(spec.init_containers.is_none(), "no init containers");
    &spec.containers[0]
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    env(c, name).and_then(|e| e.value.clone())
}

fn volume<'a>(spec: &'a PodSpec, name: &str) -> &'a Volume {
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("volume {name}"))
}

fn mount_path(c: &Container, volume: &str) -> (String, bool) {
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume)
        .unwrap_or_else(|| panic!("mount of volume {volume}"));
    (m.mount_path.clone(), m.read_only == Some(true))
}

/// Non-root, read-only root filesystem, no privilege escalation, all capabilities dropped, the
/// runtime's seccomp profile; a writable /tmp; the service account token only where asked.
fn assert_hardened(spec: &PodSpec, c: &Container) {
    let pod = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod.run_as_non_root, Some(true));
    assert_eq!(pod.run_as_user, Some(NONROOT));
    assert_eq!(pod.run_as_group, Some(NONROOT));
    assert_eq!(
        pod.fs_group,
        Some(NONROOT),
        "fsGroup makes the 0440 certificate files readable"
    );
    assert_eq!(
        pod.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    let sc = c.security_context.as_ref().expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, None);
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert!(sc.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_none());
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(spec.host_network.is_none() && spec.host_pid.is_none());
    let tmp = volume(spec, "tmp");
    assert!(tmp.empty_dir.is_some(), "/tmp is an emptyDir");
    assert_eq!(mount_path(c, "tmp").0, "/tmp");
    let res = c.resources.as_ref().expect("resources");
    assert!(res
        .requests
        .as_ref()
        .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")));
    assert!(res.limits.as_ref().is_some_and(|l| l.contains_key("memory")));
}

/// The TLS directory: a projected volume mapping Secret keys to file names, mounted read-only at
/// `--tls-dir`. Returns (secret, key) → file.
fn tls_files(spec: &PodSpec, c: &Container) -> BTreeMap<(String, String), String> {
    let v = volume(spec, "tls");
    let projected = v.projected.as_ref().expect("tls is a projected volume");
    assert_eq!(projected.default_mode, Some(0o440));
    let mut files = BTreeMap::new();
    for source in projected.sources.iter().flatten() {
        let s = source.secret.as_ref().expect("tls comes from Secrets only");
        for item in s.items.iter().flatten() {
            files.insert((s.name.clone(), item.key.clone()), item.path.clone());
        }
    }
    let (path, read_only) = mount_path(c, "tls");
    assert!(read_only, "tls is mounted read-only");
    assert!(
        c.args.iter().flatten().any(|a| *a == format!("--tls-dir={path}")),
        "--tls-dir is the mount path {path}: {:?}",
        c.args
    );
    files
}

fn map(pairs: &[(&str, &str, &str)]) -> BTreeMap<(String, String), String> {
    pairs
        .iter()
        .map(|(s, k, f)| ((s.to_string(), k.to_string()), f.to_string()))
        .collect()
}

fn port_named(c: &Container, name: &str) -> Option<i32> {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

fn annotations(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

fn pod_annotations(t: &Option<k8s_openapi::api::core::v1::PodTemplateSpec>) -> BTreeMap<String, String> {
    t.as_ref()
        .and_then(|t| t.metadata.as_ref())
        .map(annotations)
        .unwrap_or_default()
}

fn assert_prometheus(ann: &BTreeMap<String, String>, on: bool) {
    let expected: BTreeMap<String, String> = [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "9090"),
        ("prometheus.io/path", "/metrics"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let got: BTreeMap<String, String> = ann
        .iter()
        .filter(|(k, _)| k.starts_with("prometheus.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, if on { expected } else { BTreeMap::new() });
}

fn tcp_probe_port(p: &Option<Probe>) -> Option<IntOrString> {
    let p = p.as_ref()?;
    assert!(
        p.grpc.is_none() && p.http_get.is_none() && p.exec.is_none(),
        "tcpSocket probe: {p:?}"
    );
    p.tcp_socket.as_ref().map(|t| t.port.clone())
}

fn service_ports(s: &Service) -> BTreeMap<String, (i32, IntOrString)> {
    s.spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            (
                p.name.unwrap_or_default(),
                (p.port, p.target_port.expect("targetPort")),
            )
        })
        .collect()
}

fn selects(s: &Service, labels: &Option<BTreeMap<String, String>>) -> bool {
    let selector = s
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let labels = labels.clone().unwrap_or_default();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pem_file(dir: &Path, name: &str, label: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("-----BEGIN {label}-----\n{name}\n-----END {label}-----\n"),
    )
    .expect("write PEM");
    path.display().to_string()
}

// === Lint ===

#[test]
fn both_charts_lint_without_warnings() {
    for (chart, values) in [
        (AGENT, vec![set(AGENT_MINIMAL)]),
        (AGENT, vec![example("agent-values.yaml")]),
        (COORDINATOR, vec![set(COORDINATOR_MINIMAL)]),
        (COORDINATOR, vec![example("coordinator-values.yaml")]),
    ] {
        let messages = lint(chart, &values);
        let bad: Vec<_> = messages
            .iter()
            .filter(|(severity, _, _)| *severity >= 2)
            .collect();
        assert!(bad.is_empty(), "helm lint {chart} with {values:?}: {bad:#?}");
    }
    // Lint reads values.schema.json too: without the required values it reports errors.
    let messages = lint(AGENT, &[]);
    assert!(
        messages.iter().any(|(s, _, m)| *s == 3 && m.contains("/cluster")),
        "lint without a cluster name: {messages:#?}"
    );
}

// === The agent chart ===

#[test]
fn agent_renders_a_hardened_single_agent() {
    let r = render(AGENT, &[set(AGENT_MINIMAL)]);
    assert_eq!(
        r.names(),
        [
            "ClusterRole/flotilla-agent",
            "ClusterRoleBinding/flotilla-agent",
            "Deployment/flotilla-agent",
            "Service/flotilla-agent",
            "ServiceAccount/flotilla-agent",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "no Secret with tls.existingSecret, and deliberately no PodDisruptionBudget"
    );
    assert!(r.notes.contains("prod-eu-1"), "NOTES: {}", r.notes);

    let d = r.deployment();
    assert_eq!(d.metadata.namespace.as_deref(), Some(NAMESPACE));
    let ds = d.spec.as_ref().expect("spec");
    assert_eq!(ds.replicas, Some(1), "one agent per cluster");
    assert_eq!(
        ds.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "an upgrade never runs two agents"
    );
    let spec = pod_spec(&Some(ds.template.clone())).clone();
    let c = only_container(&spec);
    assert_hardened(&spec, c);
    assert_eq!(c.image.as_deref(), Some("ghcr.io/flotilla/flotilla-agent:0.1.0"));
    assert_eq!(
        c.args.clone().unwrap_or_default(),
        [
            "--coordinator=https://flotilla.example.com:8443",
            "--cluster=prod-eu-1",
            "--tls-dir=/etc/flotilla/tls",
            "--metrics-listen=0.0.0.0:9090",
        ]
    );
    assert!(c.command.is_none(), "the image's entrypoint runs");
    // In-cluster configuration: the ServiceAccount's token, no kubeconfig.
    assert!(env(c, "KUBECONFIG").is_none() && !c.args.iter().flatten().any(|a| a.contains("kubeconfig")));
    assert_eq!(spec.automount_service_account_token, Some(true));
    // Events name the reporting pod.
    let pod_name = env(c, "POD_NAME").expect("POD_NAME");
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name")
    );
    assert_eq!(env_value(c, "FLOTILLA_LOG_FORMAT").as_deref(), Some("json"));
    assert_eq!(
        env_value(c, "OTEL_SERVICE_NAME").as_deref(),
        Some("flotilla-agent")
    );
    assert!(
        env(c, "OTEL_EXPORTER_OTLP_ENDPOINT").is_none(),
        "no export unless an endpoint is set"
    );
    assert!(
        env_value(c, "OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("k8s.cluster.name=prod-eu-1"))
    );

    // The certificate from the existing Secret, under the file names the agent reads.
    assert_eq!(
        tls_files(&spec, c),
        map(&[
            ("flotilla-agent-tls", "ca.pem", "ca.pem"),
            ("flotilla-agent-tls", "agent-prod-eu-1.pem", "agent-prod-eu-1.pem"),
            (
                "flotilla-agent-tls",
                "agent-prod-eu-1-key.pem",
                "agent-prod-eu-1-key.pem"
            ),
        ])
    );
    assert!(!pod_annotations(&Some(ds.template.clone())).contains_key("checksum/tls"));

    // It tolerates its own migration taint (and only NoSchedule: it is evicted with its node).
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("flotilla.io/migrating")
                && t.operator.as_deref() == Some("Exists")
                && t.effect.as_deref() == Some("NoSchedule")),
        "{tolerations:?}"
    );
    assert!(tolerations
        .iter()
        .all(|t| t.effect.as_deref() != Some("NoExecute") && t.key.is_some()));
    assert!(spec.priority_class_name.is_none());

    // Metrics: the port, probes on it, the Service port `metrics`, the Prometheus annotations.
    assert_eq!(port_named(c, "metrics"), Some(9090));
    assert_eq!(
        tcp_probe_port(&c.liveness_probe),
        Some(IntOrString::String("metrics".into()))
    );
    assert_eq!(
        tcp_probe_port(&c.readiness_probe),
        Some(IntOrString::String("metrics".into()))
    );
    assert_prometheus(&pod_annotations(&Some(ds.template.clone())), true);
    let svc = r.service("flotilla-agent");
    assert_eq!(
        service_ports(svc),
        [(
            "metrics".to_string(),
            (9090, IntOrString::String("metrics".into()))
        )]
        .into(),
    );
    assert!(selects(
        svc,
        &ds.template.metadata.as_ref().and_then(|m| m.labels.clone())
    ));

    // The ServiceAccount the pod runs as is the one bound to the ClusterRole.
    let sa = r.service_account();
    assert_eq!(spec.service_account_name, sa.metadata.name);
    let binding = r.cluster_role_binding();
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(binding.role_ref.name.clone()),
        r.cluster_role().metadata.name
    );
    let subjects = binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(subjects[0].name.clone()), sa.metadata.name);
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
}

#[test]
fn agent_renders_the_example_values() {
    let r = render(AGENT, &[example("agent-values.yaml")]);
    let d = r.deployment();
    let template = &d.spec.as_ref().expect("spec").template;
    let spec = pod_spec(&Some(template.clone())).clone();
    let c = only_container(&spec);
    assert_hardened(&spec, c);
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert!(c
        .args
        .iter()
        .flatten()
        .any(|a| a == "--coordinator=https://flotilla.internal.example.com:8443"));
    assert_eq!(
        env_value(c, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://otel-collector.observability:4317")
    );
    let headers = env(c, "OTEL_EXPORTER_OTLP_HEADERS").expect("extraEnv");
    assert_eq!(
        headers
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| s.name.as_str()),
        Some("otel-auth")
    );
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("1Gi"));
    assert_eq!(
        tls_files(&spec, c),
        map(&[
            ("flotilla-agent-tls", "ca.pem", "ca.pem"),
            ("flotilla-agent-tls", "agent-prod-eu-1.pem", "agent-prod-eu-1.pem"),
            (
                "flotilla-agent-tls",
                "agent-prod-eu-1-key.pem",
                "agent-prod-eu-1-key.pem"
            ),
        ])
    );
}

#[test]
fn agent_makes_its_certificate_secret_from_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = pem_file(dir.path(), "ca.pem", "CERTIFICATE");
    let cert = pem_file(dir.path(), "agent-dev-1.pem", "CERTIFICATE");
    let key = pem_file(dir.path(), "agent-dev-1-key.pem", "PRIVATE KEY");
    let values = [
        set("cluster=dev-1,coordinator.address=https://10.0.0.5:8443"),
        Values::SetFile(format!("tls.ca={ca},tls.cert={cert},tls.key={key}")),
    ];
    let r = render(AGENT, &values);
    let secret = r.secret();
    assert_eq!(secret.metadata.name.as_deref(), Some("flotilla-agent-tls"));
    let data: BTreeMap<String, String> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("PEM text")))
        .collect();
    let read = |p: &str| std::fs::read_to_string(p).expect("read PEM");
    assert_eq!(
        data,
        [
            ("ca.pem".to_string(), read(&ca)),
            ("agent-dev-1.pem".to_string(), read(&cert)),
            ("agent-dev-1-key.pem".to_string(), read(&key)),
        ]
        .into()
    );
    let template = &r.deployment().spec.as_ref().expect("spec").template;
    let spec = pod_spec(&Some(template.clone())).clone();
    assert_eq!(
        tls_files(&spec, only_container(&spec)),
        map(&[
            ("flotilla-agent-tls", "ca.pem", "ca.pem"),
            ("flotilla-agent-tls", "agent-dev-1.pem", "agent-dev-1.pem"),
            ("flotilla-agent-tls", "agent-dev-1-key.pem", "agent-dev-1-key.pem"),
        ])
    );
    // A new certificate rolls the pod.
    assert!(pod_annotations(&Some(template.clone())).contains_key("checksum/tls"));
}

#[test]
fn agent_options_change_what_they_say() {
    // Secrets from other tools (cert-manager's key names, a shared CA bundle).
    let r = render(
        AGENT,
        &[set(&format!(
            "{AGENT_MINIMAL},tls.existingSecret=agent-cert,tls.caSecret=fleet-ca,tls.keys.ca=ca.crt,\
             tls.keys.cert=tls.crt,tls.keys.key=tls.key"
        ))],
    );
    let spec = pod_spec(&Some(
        r.deployment().spec.as_ref().expect("spec").template.clone(),
    ))
    .clone();
    assert_eq!(
        tls_files(&spec, only_container(&spec)),
        map(&[
            ("agent-cert", "tls.crt", "agent-prod-eu-1.pem"),
            ("agent-cert", "tls.key", "agent-prod-eu-1-key.pem"),
            ("fleet-ca", "ca.crt", "ca.pem"),
        ])
    );

    // Metrics off: no port, probes, Service, annotations or flag.
    let r = render(AGENT, &[set(&format!("{AGENT_MINIMAL},metrics.enabled=false"))]);
    assert!(
        !r.names().iter().any(|n| n.starts_with("Service/")),
        "{:?}",
        r.names()
    );
    let template = r.deployment().spec.as_ref().expect("spec").template.clone();
    let spec = pod_spec(&Some(template.clone())).clone();
    let c = only_container(&spec);
    assert!(c.ports.is_none() && c.liveness_probe.is_none() && c.readiness_probe.is_none());
    assert!(!c.args.iter().flatten().any(|a| a.starts_with("--metrics-listen")));
    assert_prometheus(&pod_annotations(&Some(template)), false);

    // Annotations off, another port.
    let r = render(
        AGENT,
        &[set(&format!(
            "{AGENT_MINIMAL},metrics.prometheusAnnotations=false,metrics.port=9464"
        ))],
    );
    let template = r.deployment().spec.as_ref().expect("spec").template.clone();
    assert_prometheus(&pod_annotations(&Some(template.clone())), false);
    let spec = pod_spec(&Some(template)).clone();
    assert!(only_container(&spec)
        .args
        .iter()
        .flatten()
        .any(|a| a == "--metrics-listen=0.0.0.0:9464"));
    assert_eq!(port_named(only_container(&spec), "metrics"), Some(9464));

    // Another taint key; extra tolerations come in addition.
    let r = render(
        AGENT,
        &[
            set(&format!("{AGENT_MINIMAL},migrationTaintKey=example.com/moving")),
            set("tolerations[0].key=dedicated,tolerations[0].operator=Equal,tolerations[0].value=ops,tolerations[0].effect=NoSchedule"),
        ],
    );
    let spec = pod_spec(&Some(
        r.deployment().spec.as_ref().expect("spec").template.clone(),
    ))
    .clone();
    let keys: Vec<_> = spec
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.clone())
        .collect();
    assert_eq!(keys, ["example.com/moving", "dedicated"]);

    // No RBAC objects when asked, and the ServiceAccount must then be named.
    let r = render(
        AGENT,
        &[set(&format!(
            "{AGENT_MINIMAL},rbac.create=false,serviceAccount.create=false,serviceAccount.name=ops-agent"
        ))],
    );
    assert_eq!(
        r.names(),
        ["Deployment/flotilla-agent", "Service/flotilla-agent"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let spec = pod_spec(&Some(
        r.deployment().spec.as_ref().expect("spec").template.clone(),
    ))
    .clone();
    assert_eq!(spec.service_account_name.as_deref(), Some("ops-agent"));
    let err = try_render(
        AGENT,
        &[set(&format!("{AGENT_MINIMAL},serviceAccount.create=false"))],
    )
    .expect_err("an unnamed existing ServiceAccount is refused");
    assert!(err.contains("serviceAccount.name is required"), "{err}");
}

// === The coordinator chart ===

/// The clusters file as issue 6 specifies it (`serve --clusters FILE`).
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClustersFile {
    clusters: Vec<ClusterEntry>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterEntry {
    name: String,
    region: String,
    eks_cluster_name: String,
    role_arn: Option<String>,
    eks_endpoint_url: Option<String>,
    autoscaling_endpoint_url: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The clusters file the coordinator reads: the ConfigMap key behind `--clusters`.
fn clusters_file(r: &Rendered, spec: &PodSpec, c: &Container) -> ClustersFile {
    let arg = c
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--clusters="))
        .expect("--clusters");
    let (dir, key) = arg.rsplit_once('/').expect("a file path");
    let config = volume(spec, "config")
        .config_map
        .as_ref()
        .expect("config is a ConfigMap volume");
    let cm = r.config_map();
    assert_eq!(Some(config.name.clone()), cm.metadata.name);
    assert_eq!(mount_path(c, "config"), (dir.to_string(), true));
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .expect("the clusters file key");
    // What the coordinator itself reads from it.
    flotilla_coordinator::config::ClustersFile::parse(Path::new(arg), text)
        .unwrap_or_else(|e| panic!("the coordinator refuses the rendered clusters file: {e}\n{text}"));
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("clusters file: {e}\n{text}"))
}

#[test]
fn coordinator_renders_one_stateful_replica() {
    let r = render(COORDINATOR, &[set(COORDINATOR_MINIMAL)]);
    assert_eq!(
        r.names(),
        [
            "ConfigMap/flotilla-coordinator",
            "Service/flotilla-coordinator",
            "Service/flotilla-coordinator-headless",
            "ServiceAccount/flotilla-coordinator",
            "StatefulSet/flotilla-coordinator",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "no Secret with tls.existingSecret, no RBAC: the coordinator never calls Kubernetes"
    );
    assert!(
        r.notes.contains("flotilla-coordinator.flotilla:8443"),
        "NOTES: {}",
        r.notes
    );
    let sts = r.statefulset();
    let s = sts.spec.as_ref().expect("spec");
    assert_eq!(s.replicas, Some(1), "sled is single-writer");
    let headless = r.service("flotilla-coordinator-headless");
    assert_eq!(s.service_name, headless.metadata.name);
    assert_eq!(
        headless.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );

    let spec = pod_spec(&Some(s.template.clone())).clone();
    let c = only_container(&spec);
    assert_hardened(&spec, c);
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/flotilla/flotilla-coordinator:0.1.0")
    );
    assert_eq!(
        c.args.clone().unwrap_or_default(),
        [
            "serve",
            "--listen=0.0.0.0:8443",
            "--data-dir=/var/lib/flotilla",
            "--tls-dir=/etc/flotilla/tls",
            "--clusters=/etc/flotilla/config/clusters.yaml",
            "--metrics-listen=0.0.0.0:9090",
        ]
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(r.service_account().automount_service_account_token, Some(false));
    assert_eq!(spec.service_account_name, r.service_account().metadata.name);
    assert!(annotations(&r.service_account().metadata).is_empty());
    assert_eq!(
        env_value(c, "AWS_STS_REGIONAL_ENDPOINTS").as_deref(),
        Some("regional")
    );
    assert!(env(c, "AWS_REGION").is_none());

    // The store: a ReadWriteOnce claim of 10Gi mounted at --data-dir, kept on uninstall.
    let claims = s.volume_claim_templates.clone().unwrap_or_default();
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    let cs = claim.spec.as_ref().expect("claim spec");
    assert_eq!(cs.access_modes.clone().unwrap_or_default(), ["ReadWriteOnce"]);
    assert_eq!(
        cs.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.as_str()),
        Some("10Gi")
    );
    assert!(
        cs.storage_class_name.is_none(),
        "the cluster's default StorageClass"
    );
    assert!(
        !spec.volumes.iter().flatten().any(|v| v.name == "data"),
        "the claim, not a pod volume"
    );
    assert_eq!(mount_path(c, "data"), ("/var/lib/flotilla".into(), false));
    assert_eq!(
        s.persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_deleted.as_deref()),
        Some("Retain")
    );

    // Probes: TCP on the gRPC port (mTLS keeps the kubelet's gRPC probe out).
    for p in [&c.startup_probe, &c.liveness_probe, &c.readiness_probe] {
        assert_eq!(tcp_probe_port(p), Some(IntOrString::String("grpc".into())));
    }
    assert_eq!(port_named(c, "grpc"), Some(8443));
    assert_eq!(port_named(c, "metrics"), Some(9090));
    let svc = r.service("flotilla-coordinator");
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.type_.as_deref()),
        Some("ClusterIP")
    );
    assert_eq!(
        service_ports(svc),
        [
            ("grpc".to_string(), (8443, IntOrString::String("grpc".into()))),
            (
                "metrics".to_string(),
                (9090, IntOrString::String("metrics".into()))
            ),
        ]
        .into()
    );
    assert!(selects(
        svc,
        &s.template.metadata.as_ref().and_then(|m| m.labels.clone())
    ));
    let ann = pod_annotations(&Some(s.template.clone()));
    assert_prometheus(&ann, true);
    assert!(
        ann.contains_key("checksum/clusters"),
        "a new clusters file restarts the pod"
    );

    assert_eq!(
        tls_files(&spec, c),
        map(&[
            ("flotilla-coordinator-tls", "ca.pem", "ca.pem"),
            ("flotilla-coordinator-tls", "coordinator.pem", "coordinator.pem"),
            (
                "flotilla-coordinator-tls",
                "coordinator-key.pem",
                "coordinator-key.pem"
            ),
        ])
    );
    assert_eq!(clusters_file(&r, &spec, c), ClustersFile { clusters: vec![] });
}

#[test]
fn coordinator_renders_the_example_values() {
    let r = render(COORDINATOR, &[example("coordinator-values.yaml")]);
    let s = r.statefulset().spec.as_ref().expect("spec");
    let spec = pod_spec(&Some(s.template.clone())).clone();
    let c = only_container(&spec);
    assert_hardened(&spec, c);

    let file = clusters_file(&r, &spec, c);
    let names: Vec<_> = file.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["dev-eu-1", "prod-eu-1", "prod-us-1"]);
    assert_eq!(
        file.clusters[1],
        ClusterEntry {
            name: "prod-eu-1".into(),
            region: "eu-west-1".into(),
            eks_cluster_name: "prod-eu-1".into(),
            role_arn: Some("arn:aws:iam::222233334444:role/flotilla-prod".into()),
            eks_endpoint_url: None,
            autoscaling_endpoint_url: None,
            labels: BTreeMap::from([("env".into(), "prod".into())]),
        }
    );
    assert_eq!(file.clusters[2].labels["team/payments"], "true");

    // IRSA on the ServiceAccount.
    assert_eq!(
        annotations(&r.service_account().metadata)
            .get("eks.amazonaws.com/role-arn")
            .map(String::as_str),
        Some("arn:aws:iam::111122223333:role/flotilla-coordinator")
    );
    assert_eq!(env_value(c, "AWS_REGION").as_deref(), Some("eu-west-1"));
    // An internal NLB in front of the gRPC port.
    let svc = r.service("flotilla-coordinator");
    let ss = svc.spec.as_ref().expect("spec");
    assert_eq!(ss.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        ss.load_balancer_source_ranges.clone().unwrap_or_default(),
        ["10.0.0.0/8"]
    );
    assert_eq!(
        annotations(&svc.metadata)
            .get("service.beta.kubernetes.io/aws-load-balancer-scheme")
            .map(String::as_str),
        Some("internal")
    );
    let claim = &s.volume_claim_templates.as_ref().expect("claim")[0];
    let cs = claim.spec.as_ref().expect("claim spec");
    assert_eq!(cs.storage_class_name.as_deref(), Some("gp3"));
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert_eq!(
        env_value(c, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://otel-collector.observability:4317")
    );
    assert_eq!(
        env_value(c, "OTEL_TRACES_SAMPLER").as_deref(),
        Some("parentbased_always_on")
    );
    let ann = pod_annotations(&Some(s.template.clone()));
    assert_eq!(
        ann.get("cluster-autoscaler.kubernetes.io/safe-to-evict")
            .map(String::as_str),
        Some("false")
    );
}

#[test]
fn coordinator_options_change_what_they_say() {
    // Inline PEM: the chart's Secret, a checksum that rolls the pod.
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = pem_file(dir.path(), "ca.pem", "CERTIFICATE");
    let cert = pem_file(dir.path(), "coordinator.pem", "CERTIFICATE");
    let key = pem_file(dir.path(), "coordinator-key.pem", "PRIVATE KEY");
    let r = render(
        COORDINATOR,
        &[Values::SetFile(format!(
            "tls.ca={ca},tls.cert={cert},tls.key={key}"
        ))],
    );
    let secret = r.secret();
    assert_eq!(secret.metadata.name.as_deref(), Some("flotilla-coordinator-tls"));
    let keys: BTreeSet<_> = secret.data.iter().flatten().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["ca.pem", "coordinator-key.pem", "coordinator.pem"].into());
    let template = r.statefulset().spec.as_ref().expect("spec").template.clone();
    assert!(pod_annotations(&Some(template)).contains_key("checksum/tls"));

    // No persistence: an emptyDir store, no claim.
    let r = render(
        COORDINATOR,
        &[set(&format!("{COORDINATOR_MINIMAL},persistence.enabled=false"))],
    );
    let s = r.statefulset().spec.as_ref().expect("spec");
    assert!(s.volume_claim_templates.is_none() && s.persistent_volume_claim_retention_policy.is_none());
    let spec = pod_spec(&Some(s.template.clone())).clone();
    assert!(volume(&spec, "data").empty_dir.is_some());
    assert_eq!(mount_path(only_container(&spec), "data").0, "/var/lib/flotilla");

    // Metrics off; another gRPC port, followed by the probes and both Services.
    let r = render(
        COORDINATOR,
        &[set(&format!(
            "{COORDINATOR_MINIMAL},metrics.enabled=false,grpcPort=9443"
        ))],
    );
    let s = r.statefulset().spec.as_ref().expect("spec");
    let spec = pod_spec(&Some(s.template.clone())).clone();
    let c = only_container(&spec);
    assert!(c.args.iter().flatten().any(|a| a == "--listen=0.0.0.0:9443"));
    assert!(!c.args.iter().flatten().any(|a| a.starts_with("--metrics-listen")));
    assert_eq!(port_named(c, "grpc"), Some(9443));
    assert_eq!(port_named(c, "metrics"), None);
    assert_prometheus(&pod_annotations(&Some(s.template.clone())), false);
    for name in ["flotilla-coordinator", "flotilla-coordinator-headless"] {
        assert_eq!(
            service_ports(r.service(name)),
            [("grpc".to_string(), (9443, IntOrString::String("grpc".into())))].into()
        );
    }

    // The same cluster twice is refused, naming it.
    let err = try_render(
        COORDINATOR,
        &[
            set(COORDINATOR_MINIMAL),
            set(
                "clusters[0].name=a,clusters[0].region=eu-west-1,clusters[0].eksClusterName=a,\
                 clusters[1].name=a,clusters[1].region=us-east-1,clusters[1].eksClusterName=a",
            ),
        ],
    )
    .expect_err("duplicate cluster names");
    assert!(err.contains("\"a\" is listed twice"), "{err}");
}

// === values.schema.json ===

#[test]
fn schemas_refuse_bad_values_naming_the_field() {
    let cases: &[(&str, Vec<Values>, &[&str])] = &[
        (AGENT, vec![], &["/cluster"]),
        (
            AGENT,
            vec![set("coordinator.address=https://c:8443,tls.existingSecret=s")],
            &["/cluster", "minLength"],
        ),
        (AGENT, vec![set(AGENT_MINIMAL), set("cluster=Prod_1")], &["/cluster", "Prod_1"]),
        (
            AGENT,
            vec![set(AGENT_MINIMAL), set("coordinator.address=flotilla.example.com:8443")],
            &["/coordinator/address"],
        ),
        (
            AGENT,
            vec![set(AGENT_MINIMAL), set("coordinator.address=http://flotilla.example.com:8443")],
            &["/coordinator/address"],
        ),
        (
            AGENT,
            vec![set("cluster=prod-eu-1,coordinator.address=https://c:8443")],
            &["/tls"],
        ),
        (
            AGENT,
            vec![set("cluster=prod-eu-1,coordinator.address=https://c:8443,tls.cert=x,tls.key=y")],
            &["/tls"],
        ),
        (AGENT, vec![set(AGENT_MINIMAL), set("logFormat=xml")], &["/logFormat"]),
        (AGENT, vec![set(AGENT_MINIMAL), set("metrics.port=70000")], &["/metrics/port"]),
        (AGENT, vec![set(AGENT_MINIMAL), set("clusterName=prod")], &["clusterName"]),
        (AGENT, vec![set(AGENT_MINIMAL), set("rbac.forceDelete=maybe")], &["/rbac/forceDelete"]),
        (
            AGENT,
            vec![set(AGENT_MINIMAL), set("migrationTaintKey=not a key")],
            &["/migrationTaintKey"],
        ),
        (AGENT, vec![set(AGENT_MINIMAL), set("image.digest=latest")], &["/image/digest"]),
        (COORDINATOR, vec![], &["/tls"]),
        (
            COORDINATOR,
            vec![set(COORDINATOR_MINIMAL), set("clusters[0].name=a,clusters[0].eksClusterName=a")],
            &["/clusters/0", "region"],
        ),
        (
            COORDINATOR,
            vec![
                set(COORDINATOR_MINIMAL),
                set("clusters[0].name=Prod,clusters[0].region=eu-west-1,clusters[0].eksClusterName=a"),
            ],
            &["/clusters/0/name"],
        ),
        (
            COORDINATOR,
            vec![
                set(COORDINATOR_MINIMAL),
                set("clusters[0].name=a,clusters[0].region=eu-west-1,clusters[0].eksClusterName=a,clusters[0].labels.env=pr od"),
            ],
            &["/clusters/0/labels/env"],
        ),
        (
            COORDINATOR,
            vec![
                set(COORDINATOR_MINIMAL),
                set("clusters[0].name=a,clusters[0].region=eu-west-1,clusters[0].eksClusterName=a,clusters[0].rolearn=x"),
            ],
            &["rolearn"],
        ),
        (
            COORDINATOR,
            vec![set(COORDINATOR_MINIMAL), set("serviceAccount.roleArn=flotilla")],
            &["/serviceAccount/roleArn"],
        ),
        (COORDINATOR, vec![set(COORDINATOR_MINIMAL), set("persistence.size=lots")], &["/persistence/size"]),
        (COORDINATOR, vec![set(COORDINATOR_MINIMAL), set("service.type=Ingress")], &["/service/type"]),
        (COORDINATOR, vec![set(COORDINATOR_MINIMAL), set("replicas=3")], &["replicas"]),
    ];
    for (chart, values, needles) in cases {
        let err = match try_render(chart, values) {
            Ok(r) => panic!(
                "{chart} with {values:?} should be refused, rendered {:?}",
                r.names()
            ),
            Err(e) => e,
        };
        assert!(
            err.starts_with("HelmValuesError"),
            "{chart} {values:?}: refused by the schema, not a template: {err}"
        );
        for needle in *needles {
            assert!(
                err.contains(needle),
                "{chart} with {values:?}: the refusal should name {needle:?}: {err}"
            );
        }
    }
}

// === The agent's RBAC ===

/// (apiGroup, resource, verb); a non-resource URL is `("", "/metrics", "get")` (resources never
/// start with `/`).
type Rule = (String, String, String);

fn url_rule(url: &str, verb: &str) -> Rule {
    (String::new(), url.to_string(), verb.to_string())
}

/// `RBAC` and `URL_RBAC` from the agent crate as rules.
fn rbac_of_the_code() -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for access in URL_RBAC {
        assert!(
            access.url.starts_with('/') && !access.used_by.trim().is_empty(),
            "{access:?}"
        );
        for verb in access.verbs {
            assert!(
                rules.insert(url_rule(access.url, verb)),
                "{access:?}: {verb} listed twice"
            );
        }
    }
    for access in RBAC {
        assert!(
            !access.used_by.trim().is_empty(),
            "{access:?}: say which steps use it"
        );
        for verb in access.verbs {
            let new = rules.insert((
                access.group.to_string(),
                access.resource.to_string(),
                verb.to_string(),
            ));
            assert!(new, "{access:?}: {verb} listed twice");
        }
    }
    rules
}

fn rbac_of_the_chart(role: &ClusterRole) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none(), "{rule:?}");
        if let Some(urls) = &rule.non_resource_urls {
            assert!(
                rule.api_groups.is_none() && rule.resources.is_none(),
                "a nonResourceURLs rule names no resources: {rule:?}"
            );
            for url in urls {
                for verb in &rule.verbs {
                    assert!(!url.contains('*') && verb != "*", "no wildcards: {rule:?}");
                    rules.insert(url_rule(url, verb));
                }
            }
            continue;
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert!(
                        ![group, resource, verb].iter().any(|s| s.contains('*')),
                        "no wildcards: {rule:?}"
                    );
                    rules.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    rules
}

#[test]
fn agent_cluster_role_grants_exactly_what_the_code_lists() {
    let code = rbac_of_the_code();
    let r = render(AGENT, &[set(AGENT_MINIMAL)]);
    assert_eq!(
        rbac_of_the_chart(r.cluster_role()),
        code,
        "templates/clusterrole.yaml vs RBAC in agent/src/cluster/kube.rs"
    );

    // Without forceDelete, only pod deletion goes.
    let r = render(AGENT, &[set(&format!("{AGENT_MINIMAL},rbac.forceDelete=false"))]);
    let mut expected = code.clone();
    assert!(expected.remove(&(String::new(), "pods".into(), "delete".into())));
    assert_eq!(rbac_of_the_chart(r.cluster_role()), expected);
}

/// Every [`Cluster`] method, in one list; [`Exercised`] records which were called.
const METHODS: &[&str] = &[
    "version",
    "api_server_metrics",
    "nodes",
    "node",
    "replace_node",
    "pods",
    "deployments",
    "replica_sets",
    "daemon_sets",
    "patch_deployment",
    "hpas",
    "patch_hpa",
    "pdbs",
    "watch_pods",
    "watch_pdbs",
    "evict",
    "delete_pod",
    "record_event",
];

/// A [`Cluster`] that records the methods called and passes them on. It implements every method
/// by hand, so a new method on the trait does not compile here until it is added, to `METHODS`
/// and to [`exercise`] too — and then its API call meets the RBAC check.
struct Exercised<C> {
    inner: C,
    called: Mutex<BTreeSet<&'static str>>,
}

impl<C: Cluster> Exercised<C> {
    fn note(&self, method: &'static str) {
        self.called.lock().expect("lock").insert(method);
    }
}

impl<C: Cluster> Cluster for Exercised<C> {
    async fn version(&self) -> ClusterResult<String> {
        self.note("version");
        self.inner.version().await
    }
    async fn api_server_metrics(&self) -> ClusterResult<String> {
        self.note("api_server_metrics");
        self.inner.api_server_metrics().await
    }
    async fn nodes(&self) -> ClusterResult<Vec<Node>> {
        self.note("nodes");
        self.inner.nodes().await
    }
    async fn node(&self, name: &str) -> ClusterResult<Node> {
        self.note("node");
        self.inner.node(name).await
    }
    async fn replace_node(&self, node: &Node) -> ClusterResult<Node> {
        self.note("replace_node");
        self.inner.replace_node(node).await
    }
    async fn pods(&self, node: Option<&str>) -> ClusterResult<Vec<Pod>> {
        self.note("pods");
        self.inner.pods(node).await
    }
    async fn deployments(&self) -> ClusterResult<Vec<Deployment>> {
        self.note("deployments");
        self.inner.deployments().await
    }
    async fn replica_sets(&self) -> ClusterResult<Vec<ReplicaSet>> {
        self.note("replica_sets");
        self.inner.replica_sets().await
    }
    async fn daemon_sets(&self, namespace: &str) -> ClusterResult<Vec<DaemonSet>> {
        self.note("daemon_sets");
        self.inner.daemon_sets(namespace).await
    }
    async fn patch_deployment(
        &self,
        namespace: &str,
        name: &str,
        patch: &DeploymentPatch,
    ) -> ClusterResult<Deployment> {
        self.note("patch_deployment");
        self.inner.patch_deployment(namespace, name, patch).await
    }
    async fn hpas(&self) -> ClusterResult<Vec<HorizontalPodAutoscaler>> {
        self.note("hpas");
        self.inner.hpas().await
    }
    async fn patch_hpa(
        &self,
        namespace: &str,
        name: &str,
        patch: &HpaPatch,
    ) -> ClusterResult<HorizontalPodAutoscaler> {
        self.note("patch_hpa");
        self.inner.patch_hpa(namespace, name, patch).await
    }
    async fn pdbs(&self) -> ClusterResult<Vec<PodDisruptionBudget>> {
        self.note("pdbs");
        self.inner.pdbs().await
    }
    fn watch_pods(&self, node: Option<&str>) -> WatchStream<Pod> {
        self.note("watch_pods");
        self.inner.watch_pods(node)
    }
    fn watch_pdbs(&self) -> WatchStream<PodDisruptionBudget> {
        self.note("watch_pdbs");
        self.inner.watch_pdbs()
    }
    async fn evict(&self, namespace: &str, name: &str) -> ClusterResult<Eviction> {
        self.note("evict");
        self.inner.evict(namespace, name).await
    }
    async fn delete_pod(&self, namespace: &str, name: &str) -> ClusterResult<()> {
        self.note("delete_pod");
        self.inner.delete_pod(namespace, name).await
    }
    async fn record_event(&self, event: &EventNote) -> ClusterResult<()> {
        self.note("record_event");
        self.inner.record_event(event).await
    }
}

/// Calls every [`Cluster`] method once against the default scenario, each succeeding.
async fn exercise<C: Cluster>(cluster: &C) {
    let meta = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    cluster.version().await.expect("version");
    let metrics = cluster.api_server_metrics().await.expect("/metrics");
    assert!(
        metrics.contains("apiserver_requested_deprecated_apis"),
        "{metrics}"
    );
    let nodes = cluster.nodes().await.expect("nodes");
    let node = cluster
        .node(nodes[0].metadata.name.as_deref().expect("node name"))
        .await
        .expect("node");
    let mut changed = node.clone();
    changed
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("flotilla.test/rbac".into(), "checked".into());
    cluster.replace_node(&changed).await.expect("replace node");
    let pods = cluster.pods(None).await.expect("pods");
    cluster
        .pods(node.metadata.name.as_deref())
        .await
        .expect("pods on a node");
    let deployments = cluster.deployments().await.expect("deployments");
    cluster.replica_sets().await.expect("replicasets");
    let daemon_sets = cluster.daemon_sets("kube-system").await.expect("daemonsets");
    assert!(
        daemon_sets
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some("kube-proxy")),
        "the default scenario runs kube-proxy in kube-system"
    );
    let (ns, name) = meta(&deployments[0].metadata);
    let mut annotations = BTreeMap::new();
    annotations.insert("flotilla.test/rbac".to_string(), Some("checked".to_string()));
    cluster
        .patch_deployment(
            &ns,
            &name,
            &DeploymentPatch {
                annotations: annotations.clone(),
                replicas: None,
            },
        )
        .await
        .expect("patch deployment");
    let hpas = cluster.hpas().await.expect("hpas");
    let (ns, name) = meta(&hpas.first().expect("the default scenario has an HPA").metadata);
    cluster
        .patch_hpa(
            &ns,
            &name,
            &HpaPatch {
                annotations,
                ..Default::default()
            },
        )
        .await
        .expect("patch hpa");
    cluster.pdbs().await.expect("pdbs");
    // A watch lists, then watches: poll past the list so that the watch request goes out too
    // (nothing needs to arrive on it; the timeout only bounds the wait).
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let mut pod_watch = cluster.watch_pods(Some(&node_name));
    assert!(
        matches!(pod_watch.next().await, Some(Ok(Watched::Listed(_)))),
        "the pods on a node are listed first"
    );
    let _ = tokio::time::timeout(Duration::from_millis(300), pod_watch.next()).await;
    let mut pdb_watch = cluster.watch_pdbs();
    assert!(
        matches!(pdb_watch.next().await, Some(Ok(Watched::Listed(_)))),
        "the budgets are listed first"
    );
    let _ = tokio::time::timeout(Duration::from_millis(300), pdb_watch.next()).await;
    // Evict a pod a ReplicaSet owns (the server may let it go or answer 429: both are answers).
    let managed = pods
        .iter()
        .find(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "ReplicaSet")
        })
        .expect("a Deployment's pod");
    let (ns, name) = meta(&managed.metadata);
    cluster.evict(&ns, &name).await.expect("evict");
    // Delete the standalone pod outright (what force-after does to a blocked pod).
    let standalone = pods
        .iter()
        .find(|p| p.metadata.owner_references.as_ref().is_none_or(|o| o.is_empty()))
        .expect("the default scenario's standalone pod");
    let (ns, name) = meta(&standalone.metadata);
    cluster.delete_pod(&ns, &name).await.expect("delete pod");
    cluster
        .record_event(&EventNote {
            regarding: ObjectRef::deployment(&deployments[0]),
            type_: EventType::Normal,
            reason: "FlotillaRbacChecked".into(),
            message: "every API call the agent makes".into(),
        })
        .await
        .expect("record event");
}

/// What Kubernetes' authorizer sees of a request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Resource(Rule),
    NonResource(String),
}

/// The RBAC attributes of a request, as the API server's request-info resolver derives them.
fn access(method: &http::Method, uri: &http::Uri) -> Access {
    let path = uri.path();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return Access::NonResource(path.to_string()),
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [r] | [r, _] => r.to_string(),
        [r, _, sub, ..] => format!("{r}/{sub}"),
        [] => unreachable!("rest is not empty"),
    };
    let named = rest.len() >= 2;
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET | http::Method::HEAD if watch => "watch",
        http::Method::GET | http::Method::HEAD if named => "get",
        http::Method::GET | http::Method::HEAD => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        ref other => panic!("unexpected method {other} {uri}"),
    };
    Access::Resource((group.to_string(), resource, verb.to_string()))
}

#[test]
fn request_attributes_follow_the_api_server() {
    let get = |u: &str| access(&http::Method::GET, &u.parse().expect("uri"));
    let r = |g: &str, res: &str, v: &str| Access::Resource((g.into(), res.into(), v.into()));
    assert_eq!(get("/api/v1/nodes?limit=500"), r("", "nodes", "list"));
    assert_eq!(get("/api/v1/nodes/n1"), r("", "nodes", "get"));
    assert_eq!(
        get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"),
        r("", "pods", "list")
    );
    assert_eq!(
        get("/api/v1/namespaces/shop/pods?watch=true"),
        r("", "pods", "watch")
    );
    assert_eq!(get("/api/v1/namespaces/shop"), r("", "namespaces", "get"));
    assert_eq!(get("/apis/apps/v1/deployments"), r("apps", "deployments", "list"));
    assert_eq!(
        access(
            &http::Method::POST,
            &"/api/v1/namespaces/shop/pods/web-1/eviction"
                .parse()
                .expect("uri")
        ),
        r("", "pods/eviction", "create")
    );
    assert_eq!(
        access(
            &http::Method::PATCH,
            &"/apis/apps/v1/namespaces/shop/deployments/web/scale"
                .parse()
                .expect("uri")
        ),
        r("apps", "deployments/scale", "patch")
    );
    assert_eq!(
        access(
            &http::Method::DELETE,
            &"/api/v1/namespaces/shop/pods".parse().expect("uri")
        ),
        r("", "pods", "deletecollection")
    );
    assert_eq!(get("/version"), Access::NonResource("/version".into()));
}

/// Non-resource paths every authenticated user may read (`system:public-info-viewer`).
const PUBLIC_PATHS: &[&str] = &["/version"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_api_calls_are_exactly_its_rbac() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::start_scenario(&Scenario::default_scenario(), 1, FleetOptions::default())
        .await
        .expect("fleet starts");
    fleet.write_files(dir.path()).expect("fleet files");
    fleet
        .wait_settled(Duration::from_secs(60))
        .await
        .expect("fleet settles");
    let kubeconfig =
        kube::config::Kubeconfig::read_from(dir.path().join("kubeconfig-sim-1.yaml")).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.default_retry = false;

    // Every request the client sends, as (method, path and query), before the cluster URL is added.
    let log: Arc<Mutex<Vec<(http::Method, http::Uri)>>> = Arc::default();
    let record = {
        let log = log.clone();
        tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
            log.lock()
                .expect("lock")
                .push((req.method().clone(), req.uri().clone()));
            req
        })
    };
    let client = kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&record)
        .build();
    let cluster = Exercised {
        inner: KubeCluster::new(client),
        called: Mutex::default(),
    };
    exercise(&cluster).await;
    assert_eq!(
        cluster.called.lock().expect("lock").clone(),
        METHODS.iter().copied().collect(),
        "every Cluster method is exercised"
    );

    let mut made = BTreeSet::new();
    for (method, uri) in log.lock().expect("lock").iter() {
        match access(method, uri) {
            Access::Resource(rule) => {
                made.insert(rule);
            }
            Access::NonResource(path) if PUBLIC_PATHS.contains(&path.as_str()) => {}
            Access::NonResource(path) => {
                assert_eq!(*method, http::Method::GET, "{method} {uri}");
                made.insert(url_rule(&path, "get"));
            }
        }
    }
    let code = rbac_of_the_code();
    let missing: Vec<_> = made.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "calls without an RBAC entry in agent/src/cluster/kube.rs: {missing:?}"
    );
    let unused: Vec<_> = code.difference(&made).collect();
    assert!(unused.is_empty(), "RBAC entries no call needs: {unused:?}");
    fleet.shutdown().await;
}

// === Images ===

fn cargo(args: &[&str]) -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

/// A Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (instr, rest) = current.trim().split_once(' ').expect("INSTRUCTION args");
                out.push((
                    instr.to_uppercase(),
                    rest.split_whitespace().collect::<Vec<_>>().join(" "),
                ));
                current.clear();
            }
        }
    }
    out
}

fn yaml_file(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("read")).expect("YAML")
}

#[test]
fn dockerfiles_build_the_binaries_the_charts_run() {
    let metadata = cargo(&["metadata", "--format-version", "1", "--no-deps", "--locked"]);
    // binary -> (package, version, rust-version)
    let mut bins = BTreeMap::new();
    for p in metadata["packages"].as_array().expect("packages") {
        for t in p["targets"].as_array().expect("targets") {
            if t["kind"].as_array().expect("kind").iter().any(|k| k == "bin") {
                bins.insert(
                    t["name"].as_str().expect("name").to_string(),
                    (
                        p["name"].as_str().expect("name").to_string(),
                        p["version"].as_str().expect("version").to_string(),
                        p["rust_version"].as_str().expect("rust-version set").to_string(),
                    ),
                );
            }
        }
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the context leaves target/ out"
    );

    for (chart, bin) in [(AGENT, "flotilla-agent"), (COORDINATOR, "flotilla-coordinator")] {
        let (package, version, rust) = bins
            .get(bin)
            .unwrap_or_else(|| panic!("no binary {bin} in the workspace"));
        let path = repo().join(format!("deploy/docker/{bin}.Dockerfile"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ins = instructions(&text);
        let all = |name: &str| {
            ins.iter()
                .filter(|(i, _)| i == name)
                .map(|(_, a)| a.as_str())
                .collect::<Vec<_>>()
        };
        let from = all("FROM");
        assert_eq!(
            from,
            [
                format!("rust:{rust}-bookworm AS build").as_str(),
                "gcr.io/distroless/cc-debian12:nonroot"
            ],
            "{bin}: the workspace's toolchain on Debian 12, then distroless Debian 12 (same glibc)"
        );
        let run = all("RUN").join("\n");
        for needle in [
            format!("cargo build --release --locked -p {package} --bin {bin}"),
            "--mount=type=cache,target=/usr/local/cargo/registry".to_string(),
            "--mount=type=cache,target=/src/target".to_string(),
            format!("target/release/{bin} /out/{bin}"),
        ] {
            assert!(run.contains(&needle), "{bin}: RUN lacks `{needle}`:\n{run}");
        }
        assert_eq!(all("WORKDIR"), ["/src"]);
        assert_eq!(
            all("COPY"),
            [". .", &format!("--from=build /out/{bin} /usr/local/bin/{bin}")]
        );
        assert_eq!(all("USER"), [format!("{NONROOT}:{NONROOT}")]);
        assert_eq!(all("ENTRYPOINT"), [format!("[\"/usr/local/bin/{bin}\"]")]);

        // The chart runs this image, as this user, at this version.
        let values = yaml_file(&repo().join(chart).join("values.yaml"));
        assert!(
            values["image"]["repository"]
                .as_str()
                .is_some_and(|r| r.ends_with(&format!("/{bin}"))),
            "{chart}: image.repository names {bin}"
        );
        assert_eq!(values["podSecurityContext"]["runAsUser"].as_i64(), Some(NONROOT));
        assert_eq!(values["podSecurityContext"]["runAsGroup"].as_i64(), Some(NONROOT));
        let meta = yaml_file(&repo().join(chart).join("Chart.yaml"));
        assert_eq!(
            meta["appVersion"].as_str(),
            Some(version.as_str()),
            "{chart}: appVersion is {package}'s version"
        );
    }
}

#[test]
fn binaries_link_no_openssl() {
    let metadata = cargo(&["metadata", "--format-version", "1", "--locked"]);
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p["name"].as_str().expect("name")))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    for root in ["flotilla-agent", "flotilla-coordinator"] {
        let id = names
            .iter()
            .find(|(_, n)| **n == root)
            .map(|(id, _)| *id)
            .expect("workspace package");
        // Normal (linked) dependencies only: build scripts run on the builder, not in the image.
        let mut seen = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            for dep in nodes[id]["deps"].as_array().expect("deps") {
                if dep["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|k| k["kind"].is_null())
                {
                    todo.push(dep["pkg"].as_str().expect("pkg"));
                }
            }
        }
        let linked: BTreeSet<&str> = seen.iter().map(|id| names[id]).collect();
        assert!(
            linked.contains("ring") && linked.contains("rustls"),
            "{root}: rustls with ring"
        );
        for banned in ["openssl-sys", "openssl", "native-tls", "aws-lc-sys", "aws-lc-rs"] {
            assert!(
                !linked.contains(banned),
                "{root} links {banned}; the distroless/cc image has no OpenSSL"
            );
        }
    }
}

/// The binary's short help text (`program args... -h`): one line per flag after its name.
fn help(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .arg("-h")
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("running {} --help: {e}", program.display()));
    assert!(out.status.success(), "{} --help failed", program.display());
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// Every `--flag` the container passes and every `FLOTILLA_*` variable it sets is one the binary
/// knows (its `--help` lists the flag and `[env: NAME=]`), and a variable with fixed choices gets
/// one of them: a chart setting a name the binary does not read would silently do nothing.
fn assert_binary_reads(c: &Container, help: &str, what: &str) {
    for arg in c.args.iter().flatten().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap_or_default();
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{what}: the chart passes {arg} but the binary has no {flag}:\n{help}"
        );
    }
    for var in c.env.iter().flatten().filter(|e| e.name.starts_with("FLOTILLA_")) {
        let marker = format!("[env: {}=", var.name);
        let at = help.find(&marker).unwrap_or_else(|| {
            panic!(
                "{what}: the chart sets {} but the binary reads no such variable:\n{help}",
                var.name
            )
        });
        // `[env: NAME=] [default: ..] [possible values: a, b]` ends the flag's line.
        let rest = &help[at..];
        let paragraph = &rest[..rest.find('\n').unwrap_or(rest.len())];
        if let (Some(choices), Some(value)) = (paragraph.split("[possible values: ").nth(1), &var.value) {
            let choices: Vec<&str> = choices.trim_end_matches(']').split(", ").collect();
            assert!(
                choices.contains(&value.as_str()),
                "{what}: {}={value} is not one of {choices:?}",
                var.name
            );
        }
    }
}

#[test]
fn charts_pass_only_flags_and_variables_the_binaries_read() {
    let bins = flotilla_tests::bins::bins().expect("the binaries build");
    let agent = render(
        AGENT,
        &[set(AGENT_MINIMAL), set("logFormat=json,metrics.enabled=true")],
    );
    let template = agent.deployment().spec.as_ref().expect("spec").template.clone();
    let spec = pod_spec(&Some(template)).clone();
    let c = only_container(&spec);
    assert_eq!(env_value(c, "FLOTILLA_LOG_FORMAT").as_deref(), Some("json"));
    assert!(c
        .args
        .iter()
        .flatten()
        .any(|a| a.starts_with("--metrics-listen=")));
    assert_binary_reads(c, &help(&bins.agent, &[]), "flotilla-agent");

    let coordinator = render(
        COORDINATOR,
        &[
            set(COORDINATOR_MINIMAL),
            set("logFormat=json,metrics.enabled=true"),
        ],
    );
    let template = coordinator
        .statefulset()
        .spec
        .as_ref()
        .expect("spec")
        .template
        .clone();
    let spec = pod_spec(&Some(template)).clone();
    let c = only_container(&spec);
    assert_eq!(env_value(c, "FLOTILLA_LOG_FORMAT").as_deref(), Some("json"));
    assert!(c
        .args
        .iter()
        .flatten()
        .any(|a| a.starts_with("--metrics-listen=")));
    let args: Vec<String> = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    assert_binary_reads(
        c,
        &help(&bins.coordinator, &["serve"]),
        "flotilla-coordinator serve",
    );
}
