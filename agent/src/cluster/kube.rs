//! The one real [`Cluster`]: kube-rs against the cluster's API server.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::{
    Cluster, ClusterError, DeploymentPatch, EventNote, EventType, Eviction, HpaPatch, Result, WatchStream,
    Watched,
};

/// Name under which the agent records Events and field managers.
pub const COMPONENT: &str = "flotilla-agent";

/// One Kubernetes RBAC permission the agent needs: what [`KubeCluster`] calls, and which steps
/// make the call. `GET /version` needs no rule (every authenticated user may read it, through the
/// built-in `system:public-info-viewer` ClusterRole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiAccess {
    /// API group (`""` for the core group, `apps`, `policy`, …).
    pub group: &'static str,
    /// Resource, with `/subresource` where the call is on one (`pods/eviction`).
    pub resource: &'static str,
    /// Verbs in Kubernetes' RBAC terms (`list`, `update`, `patch`, `create`, …).
    pub verbs: &'static [&'static str],
    /// The [`KubeCluster`] methods making the calls, and the steps using them.
    pub used_by: &'static str,
}

/// Every permission [`KubeCluster`] needs, and nothing more. This is the one list: the agent's Helm
/// chart (`deploy/helm/flotilla-agent/templates/clusterrole.yaml`) grants exactly these rules,
/// and `tests/tests/helm_charts.rs` checks the chart against this list and this list against the
/// requests a [`KubeCluster`] makes when every [`Cluster`] method is called on the simulator. A
/// new call without its entry here, or an entry no call needs, fails that test.
pub const RBAC: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["list", "get", "update"],
        used_by: "nodes(): inventory and every step; node() re-reads and replace_node() writes a node's \
                  taints and cordon in Taint, Drain (cordon) and Rollback (untaint, uncordon)",
    },
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
        used_by: "pods(): SurgeScale, VerifyReady, Drain and RestoreScale find pods by node; \
                  watch_pods(): Drain follows the pods of the nodes it is draining",
    },
    ApiAccess {
        group: "",
        resource: "pods/eviction",
        verbs: &["create"],
        used_by: "evict(): Drain evicts through the Eviction API, PodDisruptionBudgets honoured",
    },
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["delete"],
        used_by: "delete_pod(): Drain with `on-blocked force-after=DURATION` only, for pods a \
                  PodDisruptionBudget kept blocking past the deadline",
    },
    ApiAccess {
        group: "",
        resource: "events",
        verbs: &["create"],
        used_by: "record_event(): Events on the nodes, Deployments and pods every step touches",
    },
    ApiAccess {
        group: "apps",
        resource: "deployments",
        verbs: &["list", "patch"],
        used_by: "deployments(): inventory, SurgeScale, VerifyReady, RestoreScale, Postflight; \
                  patch_deployment(): replicas and the recorded-scale annotation in SurgeScale, \
                  RestoreScale and Rollback",
    },
    ApiAccess {
        group: "apps",
        resource: "replicasets",
        verbs: &["list"],
        used_by: "replica_sets(): SurgeScale, VerifyReady and RestoreScale map pods to their Deployment",
    },
    ApiAccess {
        group: "apps",
        resource: "daemonsets",
        verbs: &["list"],
        used_by: "daemon_sets(): inventory reads the images of kube-system's kube-proxy and aws-node, \
                  so an upgrade can report a self-managed add-on that lags the new minor",
    },
    ApiAccess {
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        verbs: &["list", "patch"],
        used_by: "hpas(): inventory, SurgeScale, RestoreScale; patch_hpa(): minReplicas raised in \
                  SurgeScale and restored in RestoreScale and Rollback",
    },
    ApiAccess {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["list", "watch"],
        used_by: "pdbs(): inventory (budgets allowing no disruption), Drain, RestoreScale; \
                  watch_pdbs(): Drain paces evictions by the budgets as they change",
    },
];

/// One permission on a non-resource URL the agent needs (a ClusterRole's `nonResourceURLs` rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlAccess {
    /// The URL path, e.g. `/metrics`.
    pub url: &'static str,
    /// Verbs (`get`).
    pub verbs: &'static [&'static str],
    /// The [`KubeCluster`] methods making the calls, and the steps using them.
    pub used_by: &'static str,
}

/// Every non-resource URL [`KubeCluster`] reads besides the public `/version`; checked like
/// [`RBAC`].
pub const URL_RBAC: &[UrlAccess] = &[UrlAccess {
    url: "/metrics",
    verbs: &["get"],
    used_by: "api_server_metrics(): Inventory reads apiserver_requested_deprecated_apis, the \
              agent's own deprecated-API check before an upgrade",
}];

/// A [`Cluster`] backed by a kube-rs [`Client`].
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    /// Page size of list calls.
    page: u32,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("page", &self.page)
            .finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// Wraps a client. Build it with `default_retry = false`: this type retries what is safe to
    /// retry itself, and evictions' 429s must reach the drain, which paces them.
    pub fn new(client: Client) -> KubeCluster {
        KubeCluster { client, page: 500 }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `call` again on throttling, server errors and transport failures (not on conflicts,
    /// and never for evictions, whose 429s the drain paces itself), up to 5 times, 100 ms doubling
    /// to 2 s.
    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
        T: Send,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            match call().await {
                Err(e) if retryable(&e) && attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                r => return r,
            }
        }
    }

    async fn list_all<K>(&self, api: Api<K>, what: &str, lp: ListParams) -> Result<Vec<K>>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    {
        let mut out = Vec::new();
        let mut lp = lp.limit(self.page);
        loop {
            let page = self
                .retry(|| async {
                    api.list(&lp)
                        .await
                        .map_err(|e| convert(e, &format!("list {what}")))
                })
                .await?;
            out.extend(page.items);
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                _ => return Ok(out),
            }
        }
    }
}

/// A kube-rs watcher as a [`WatchStream`]: list, then watch; the initial and every later list
/// arrive as one [`Watched::Listed`]. A 410 (the watch fell behind the server's history) is
/// routine: the watcher lists again at once, without an error. Other failures are reported and
/// retried after a backoff (250 ms doubling to 10 s, with jitter), reset by any success.
fn watch<K>(api: Api<K>, config: watcher::Config, what: String) -> WatchStream<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let mut listing: Option<Vec<K>> = None;
    let mut failures: u32 = 0;
    watcher(api, config)
        .filter_map(move |ev| {
            let mut delay = Duration::ZERO;
            let out = match ev {
                Ok(ev) => {
                    failures = 0;
                    match ev {
                        watcher::Event::Init => {
                            listing = Some(Vec::new());
                            None
                        }
                        watcher::Event::InitApply(k) => {
                            listing.get_or_insert_with(Vec::new).push(k);
                            None
                        }
                        watcher::Event::InitDone => {
                            Some(Ok(Watched::Listed(listing.take().unwrap_or_default())))
                        }
                        watcher::Event::Apply(k) => Some(Ok(Watched::Applied(k))),
                        watcher::Event::Delete(k) => Some(Ok(Watched::Deleted(k))),
                    }
                }
                Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                    tracing::debug!(watch = %what, message = %s.message, "watch expired; listing again");
                    None
                }
                Err(e) => {
                    failures += 1;
                    let base =
                        Duration::from_millis(250).saturating_mul(1 << failures.min(6).saturating_sub(1));
                    delay = base
                        .min(Duration::from_secs(10))
                        .mul_f64(rand::random_range(0.5..1.5));
                    Some(Err(convert_watch(e, &what)))
                }
            };
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                out
            }
        })
        .boxed()
}

/// Maps a watcher error onto [`ClusterError`], naming the watch.
fn convert_watch(e: watcher::Error, what: &str) -> ClusterError {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => convert(e, what),
        watcher::Error::WatchError(s) => convert(kube::Error::Api(s), what),
        watcher::Error::NoResourceVersion => ClusterError::Transport {
            what: what.to_string(),
            message: "no metadata.resourceVersion in the list; the server does not support watch here".into(),
        },
    }
}

fn retryable(e: &ClusterError) -> bool {
    match e {
        ClusterError::Transport { .. } => true,
        ClusterError::Api { code, .. } => matches!(code, 429 | 500 | 502 | 503 | 504),
        ClusterError::NotFound { .. } | ClusterError::Conflict { .. } => false,
    }
}

/// Maps a kube-rs error onto [`ClusterError`], naming the call.
pub fn convert(e: kube::Error, what: &str) -> ClusterError {
    match e {
        kube::Error::Api(s) => match s.code {
            404 => ClusterError::NotFound {
                what: what.to_string(),
            },
            409 => ClusterError::Conflict {
                what: what.to_string(),
                message: s.message,
            },
            code => ClusterError::Api {
                what: what.to_string(),
                code,
                reason: s.reason,
                message: s.message,
            },
        },
        other => ClusterError::Transport {
            what: what.to_string(),
            message: other.to_string(),
        },
    }
}

fn merge_annotations(annotations: &std::collections::BTreeMap<String, Option<String>>) -> Value {
    let map: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_ref().map_or(Value::Null, |v| Value::String(v.clone())),
            )
        })
        .collect();
    Value::Object(map)
}

/// The JSON merge patch for a [`DeploymentPatch`].
pub fn deployment_patch_body(patch: &DeploymentPatch) -> Value {
    let mut body = json!({});
    if !patch.annotations.is_empty() {
        body["metadata"] = json!({ "annotations": merge_annotations(&patch.annotations) });
    }
    if let Some(r) = patch.replicas {
        body["spec"] = json!({ "replicas": r });
    }
    body
}

/// The JSON merge patch for a [`HpaPatch`].
pub fn hpa_patch_body(patch: &HpaPatch) -> Value {
    let mut body = json!({});
    if !patch.annotations.is_empty() {
        body["metadata"] = json!({ "annotations": merge_annotations(&patch.annotations) });
    }
    let mut spec = Map::new();
    if let Some(m) = patch.min_replicas {
        spec.insert("minReplicas".into(), json!(m));
    }
    if let Some(m) = patch.max_replicas {
        spec.insert("maxReplicas".into(), json!(m));
    }
    if !spec.is_empty() {
        body["spec"] = Value::Object(spec);
    }
    body
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

/// PodDisruptionBudget names from a 429's causes (`The disruption budget web needs …`).
fn pdbs_from_status(s: &kube::core::Status) -> Vec<String> {
    s.details
        .iter()
        .flat_map(|d| d.causes.iter())
        .filter(|c| c.reason == "DisruptionBudget")
        .filter_map(|c| {
            c.message
                .strip_prefix("The disruption budget ")
                .and_then(|m| m.split(' ').next())
        })
        .map(str::to_string)
        .collect()
}

impl Cluster for KubeCluster {
    async fn version(&self) -> Result<String> {
        let info = self
            .retry(|| async {
                self.client
                    .apiserver_version()
                    .await
                    .map_err(|e| convert(e, "get /version"))
            })
            .await?;
        Ok(info.git_version)
    }

    async fn api_server_metrics(&self) -> Result<String> {
        self.retry(|| async {
            let req =
                http::Request::get("/metrics")
                    .body(Vec::new())
                    .map_err(|e| ClusterError::Transport {
                        what: "get /metrics".into(),
                        message: e.to_string(),
                    })?;
            self.client
                .request_text(req)
                .await
                .map_err(|e| convert(e, "get /metrics"))
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        self.list_all(Api::all(self.client.clone()), "nodes", ListParams::default())
            .await
    }

    async fn node(&self, name: &str) -> Result<Node> {
        let api: Api<Node> = Api::all(self.client.clone());
        self.retry(|| async {
            api.get(name)
                .await
                .map_err(|e| convert(e, &format!("get node {name}")))
        })
        .await
    }

    async fn replace_node(&self, node: &Node) -> Result<Node> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let api: Api<Node> = Api::all(self.client.clone());
        let pp = PostParams {
            field_manager: Some(COMPONENT.into()),
            ..Default::default()
        };
        self.retry(|| async {
            api.replace(&name, &pp, node)
                .await
                .map_err(|e| convert(e, &format!("replace node {name}")))
        })
        .await
    }

    async fn pods(&self, node: Option<&str>) -> Result<Vec<Pod>> {
        let lp = match node {
            Some(n) => ListParams::default().fields(&format!("spec.nodeName={n}")),
            None => ListParams::default(),
        };
        let what = node.map_or_else(|| "pods".to_string(), |n| format!("pods on {n}"));
        self.list_all(Api::all(self.client.clone()), &what, lp).await
    }

    async fn deployments(&self) -> Result<Vec<Deployment>> {
        self.list_all(
            Api::all(self.client.clone()),
            "deployments",
            ListParams::default(),
        )
        .await
    }

    async fn replica_sets(&self) -> Result<Vec<ReplicaSet>> {
        self.list_all(
            Api::all(self.client.clone()),
            "replicasets",
            ListParams::default(),
        )
        .await
    }

    async fn daemon_sets(&self, namespace: &str) -> Result<Vec<DaemonSet>> {
        self.list_all(
            Api::namespaced(self.client.clone(), namespace),
            "daemonsets",
            ListParams::default(),
        )
        .await
    }

    async fn patch_deployment(
        &self,
        namespace: &str,
        name: &str,
        patch: &DeploymentPatch,
    ) -> Result<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let body = deployment_patch_body(patch);
        let what = format!("patch deployment {namespace}/{name}");
        self.retry(|| async {
            api.patch(name, &patch_params(), &Patch::Merge(&body))
                .await
                .map_err(|e| convert(e, &what))
        })
        .await
    }

    async fn hpas(&self) -> Result<Vec<HorizontalPodAutoscaler>> {
        self.list_all(
            Api::all(self.client.clone()),
            "horizontalpodautoscalers",
            ListParams::default(),
        )
        .await
    }

    async fn patch_hpa(
        &self,
        namespace: &str,
        name: &str,
        patch: &HpaPatch,
    ) -> Result<HorizontalPodAutoscaler> {
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), namespace);
        let body = hpa_patch_body(patch);
        let what = format!("patch horizontalpodautoscaler {namespace}/{name}");
        self.retry(|| async {
            api.patch(name, &patch_params(), &Patch::Merge(&body))
                .await
                .map_err(|e| convert(e, &what))
        })
        .await
    }

    async fn pdbs(&self) -> Result<Vec<PodDisruptionBudget>> {
        self.list_all(
            Api::all(self.client.clone()),
            "poddisruptionbudgets",
            ListParams::default(),
        )
        .await
    }

    fn watch_pods(&self, node: Option<&str>) -> WatchStream<Pod> {
        // `any_semantic`: the first list may come from the API server's watch cache.
        let config = watcher::Config::default().any_semantic().page_size(self.page);
        let (config, what) = match node {
            Some(n) => (
                config.fields(&format!("spec.nodeName={n}")),
                format!("watch pods on {n}"),
            ),
            None => (config, "watch pods".to_string()),
        };
        watch(Api::all(self.client.clone()), config, what)
    }

    fn watch_pdbs(&self) -> WatchStream<PodDisruptionBudget> {
        let config = watcher::Config::default().any_semantic().page_size(self.page);
        watch(
            Api::all(self.client.clone()),
            config,
            "watch poddisruptionbudgets".into(),
        )
    }

    async fn evict(&self, namespace: &str, name: &str) -> Result<Eviction> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api.evict(name, &EvictParams::default()).await {
            Ok(_) => Ok(Eviction::Evicted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Eviction::Gone),
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Blocked {
                pdbs: pdbs_from_status(&s),
                message: s.message.clone(),
            }),
            Err(e) => Err(convert(e, &format!("evict pod {namespace}/{name}"))),
        }
    }

    async fn delete_pod(&self, namespace: &str, name: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("delete pod {namespace}/{name}");
        self.retry(|| async {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(convert(e, &what)),
            }
        })
        .await
    }

    async fn record_event(&self, event: &EventNote) -> Result<()> {
        let ns = event
            .regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    event.regarding.name,
                    now.as_nanosecond() as u64
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(event.regarding.api_version.clone()),
                kind: Some(event.regarding.kind.clone()),
                name: Some(event.regarding.name.clone()),
                namespace: event.regarding.namespace.clone(),
                uid: event.regarding.uid.clone(),
                ..Default::default()
            },
            reason: Some(event.reason.clone()),
            message: Some(event.message.chars().take(1024).collect()),
            type_: Some(match event.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(std::env::var("POD_NAME").unwrap_or_else(|_| COMPONENT.into())),
            action: Some(event.reason.clone()),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let what = format!(
            "create event for {} {}",
            event.regarding.kind, event.regarding.name
        );
        self.retry(|| async {
            api.create(&PostParams::default(), &ev)
                .await
                .map(|_| ())
                .map_err(|e| convert(e, &what))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn merge_patches_set_and_remove_annotations() {
        let mut annotations = BTreeMap::new();
        annotations.insert("a".to_string(), Some("1".to_string()));
        annotations.insert("b".to_string(), None);
        let body = deployment_patch_body(&DeploymentPatch {
            annotations,
            replicas: Some(8),
        });
        assert_eq!(
            body,
            json!({"metadata": {"annotations": {"a": "1", "b": null}}, "spec": {"replicas": 8}})
        );
        let body = hpa_patch_body(&HpaPatch {
            min_replicas: Some(4),
            ..Default::default()
        });
        assert_eq!(body, json!({"spec": {"minReplicas": 4}}));
    }

    #[test]
    fn pdb_names_come_from_causes() {
        let s: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure", "code": 429, "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget web needs 3 healthy pods and has 3 currently"}]}
        }))
        .expect("status");
        assert_eq!(pdbs_from_status(&s), vec!["web".to_string()]);
    }
}
