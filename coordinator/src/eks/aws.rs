//! The real [`Eks`]: aws-sdk-eks and aws-sdk-autoscaling for one cluster, over a ring rustls HTTP
//! client, with the standard credential chain (optionally assuming a role through STS) and the
//! SDK's standard retry mode (throttling and transient errors retried with backoff).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_autoscaling::types::Filter;
use aws_sdk_eks::config::http::HttpResponse;
use aws_sdk_eks::config::SharedCredentialsProvider;
use aws_sdk_eks::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_eks::types as eks_types;
use aws_smithy_http_client::tls;
use serde::{Deserialize, Serialize};

use super::{
    Addon, AddonStatus, AddonVersions, AsgInfo, AsgSize, ClusterInfo, DeprecatedApiUse, Eks, EksError,
    Insight, InsightDetail, InsightStatus, Insights, Nodegroup, NodegroupStatus, NodegroupTemplate, Result,
    TaintEffect, Update, UpdateConfig, UpdateErrorDetail, UpdateStatus, UpdateSubject,
};
use crate::metrics::EksErrorCounter;

/// Where and as whom to reach one cluster's EKS control plane (part of a cluster's registration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EksClusterConfig {
    /// The AWS region, e.g. `us-west-2`.
    pub region: String,
    /// The cluster's name in EKS.
    pub eks_cluster_name: String,
    /// A role to assume through STS (from the standard chain's credentials) for this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// An EKS endpoint other than the region's (a VPC endpoint, or a simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks_endpoint_url: Option<String>,
    /// An Auto Scaling endpoint other than the region's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling_endpoint_url: Option<String>,
}

impl EksClusterConfig {
    /// Checks the fields, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.region.trim().is_empty() {
            return Err(EksError::Config("region must not be empty".into()));
        }
        if self.eks_cluster_name.trim().is_empty() {
            return Err(EksError::Config("eksClusterName must not be empty".into()));
        }
        if let Some(r) = &self.role_arn {
            if !r.starts_with("arn:") {
                return Err(EksError::Config(format!("roleArn {r:?} is not an ARN")));
            }
        }
        for (field, url) in [
            ("eksEndpointUrl", &self.eks_endpoint_url),
            ("autoscalingEndpointUrl", &self.autoscaling_endpoint_url),
        ] {
            if let Some(u) = url {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(EksError::Config(format!("{field} {u:?} is not an http(s) URL")));
                }
            }
        }
        Ok(())
    }
}

/// Knobs for [`AwsEks::connect_with`]; [`Default`] is what production uses.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The SDK retry policy.
    pub retry: RetryConfig,
    /// Per-attempt and connect timeouts.
    pub timeouts: TimeoutConfig,
    /// Credentials to use instead of the standard chain (tests).
    pub credentials: Option<SharedCredentialsProvider>,
    /// The STS session name when assuming `roleArn`.
    pub session_name: String,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            retry: default_retry(),
            timeouts: TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
            credentials: None,
            session_name: "flotilla-coordinator".into(),
        }
    }
}

/// The SDK's standard retry mode with more attempts than its default three, so a throttled fleet
/// (200 clusters polling one account's EKS API) rides through `ThrottlingException` bursts.
pub fn default_retry() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(Duration::from_millis(500))
        .with_max_backoff(Duration::from_secs(20))
}

/// The HTTP client every SDK client here uses: hyper + rustls with the ring provider (no aws-lc).
/// One per process, shared by every cluster's clients (it pools connections per endpoint): a
/// client of its own per cluster cost ~90 KiB each, 900 MiB for a 10,000-cluster clusters file.
pub fn http_client() -> aws_sdk_eks::config::SharedHttpClient {
    static CLIENT: std::sync::OnceLock<aws_sdk_eks::config::SharedHttpClient> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                .build_https()
        })
        .clone()
}

/// Connects [`AwsEks`] clients for many clusters, sharing what they can: the SDK configuration
/// (credential chain, identity cache) is loaded once per region, and the assumed-role credentials
/// once per (region, role). A configuration of its own per cluster cost ~90 KiB each.
#[derive(Debug)]
pub struct AwsConnector {
    opts: ConnectOptions,
    /// Loaded configurations by (region, role ARN or "").
    loaded: HashMap<(String, String), SdkConfig>,
    /// DescribeAddonVersions and DescribeClusterVersions answers by (region, EKS endpoint or ""),
    /// shared by the clusters there.
    versions: HashMap<(String, String), Arc<VersionsCache>>,
}

/// How long a DescribeAddonVersions or DescribeClusterVersions answer is reused: the versions
/// EKS offers change with releases (weeks apart), not between the clusters of one rollout.
pub const VERSIONS_TTL: Duration = Duration::from_secs(10 * 60);

/// DescribeAddonVersions answers by (add-on, Kubernetes version) and the DescribeClusterVersions
/// answer, each kept for [`VERSIONS_TTL`]: a rollout asks the same questions for every cluster,
/// and the answers are the same for every cluster of a region.
#[derive(Debug, Default)]
pub struct VersionsCache {
    answers: Mutex<HashMap<(String, String), (Instant, AddonVersions)>>,
    cluster_versions: Mutex<Option<(Instant, Vec<String>)>>,
}

impl VersionsCache {
    fn cluster_versions(&self) -> Option<Vec<String>> {
        let v = self.cluster_versions.lock().unwrap_or_else(|p| p.into_inner());
        v.as_ref()
            .filter(|(at, _)| at.elapsed() < VERSIONS_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put_cluster_versions(&self, versions: &[String]) {
        *self.cluster_versions.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), versions.to_vec()));
    }

    fn get(&self, addon: &str, kubernetes_version: &str) -> Option<AddonVersions> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .get(&(addon.to_string(), kubernetes_version.to_string()))
            .filter(|(at, _)| at.elapsed() < VERSIONS_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, v: &AddonVersions) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.retain(|_, (at, _)| at.elapsed() < VERSIONS_TTL);
        answers.insert(
            (v.addon.clone(), v.kubernetes_version.clone()),
            (Instant::now(), v.clone()),
        );
    }
}

impl AwsConnector {
    /// A connector that has loaded nothing yet.
    pub fn new(opts: ConnectOptions) -> AwsConnector {
        AwsConnector {
            opts,
            loaded: HashMap::new(),
            versions: HashMap::new(),
        }
    }

    /// The client of one cluster. Nothing is sent until its first call.
    pub async fn connect(&mut self, cfg: &EksClusterConfig) -> Result<AwsEks> {
        cfg.validate()?;
        let sdk = self.sdk_config(&cfg.region, cfg.role_arn.as_deref()).await;
        let mut eks = AwsEks::from_sdk_config(
            &cfg.eks_cluster_name,
            &sdk,
            cfg.eks_endpoint_url.as_deref(),
            cfg.autoscaling_endpoint_url.as_deref(),
        );
        eks.versions = self
            .versions
            .entry((
                cfg.region.clone(),
                cfg.eks_endpoint_url.clone().unwrap_or_default(),
            ))
            .or_default()
            .clone();
        Ok(eks)
    }

    /// The configuration for `region`, with `role` assumed through STS when given.
    async fn sdk_config(&mut self, region: &str, role: Option<&str>) -> SdkConfig {
        let key = (region.to_string(), role.unwrap_or_default().to_string());
        if let Some(sdk) = self.loaded.get(&key) {
            return sdk.clone();
        }
        let base_key = (region.to_string(), String::new());
        let base = match self.loaded.get(&base_key) {
            Some(sdk) => sdk.clone(),
            None => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(http_client())
                    .region(Region::new(region.to_string()))
                    .retry_config(self.opts.retry.clone())
                    .timeout_config(self.opts.timeouts.clone())
                    // Every EKS and Auto Scaling answer is a small JSON or XML body, bounded by
                    // the attempt timeout above; the throughput watch on each body cost ~3% of
                    // the coordinator's CPU in the rollout benchmark.
                    .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
                if let Some(c) = self.opts.credentials.clone() {
                    loader = loader.credentials_provider(c);
                }
                let sdk = loader.load().await;
                self.loaded.insert(base_key, sdk.clone());
                sdk
            }
        };
        let Some(role) = role else {
            return base;
        };
        let provider = aws_config::sts::AssumeRoleProvider::builder(role.to_string())
            .session_name(self.opts.session_name.clone())
            .region(Region::new(region.to_string()))
            .configure(&base)
            .build()
            .await;
        let sdk = base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        self.loaded.insert(key, sdk.clone());
        sdk
    }
}

/// [`Eks`] on aws-sdk-eks and aws-sdk-autoscaling, bound to one cluster.
#[derive(Debug, Clone)]
pub struct AwsEks {
    cluster: String,
    eks: aws_sdk_eks::Client,
    asg: aws_sdk_autoscaling::Client,
    /// Where failed calls are counted, when set ([`AwsEks::with_metrics`]).
    errors: Option<EksErrorCounter>,
    /// DescribeAddonVersions and DescribeClusterVersions answers, shared with the region's other
    /// clusters by [`AwsConnector`].
    versions: Arc<VersionsCache>,
}

impl AwsEks {
    /// Connects with production defaults: the standard credential chain, [`default_retry`].
    pub async fn connect(cfg: &EksClusterConfig) -> Result<Self> {
        Self::connect_with(cfg, ConnectOptions::default()).await
    }

    /// Connects with explicit options. Nothing is sent until the first call. To connect many
    /// clusters, use one [`AwsConnector`]: it loads the SDK configuration once per region and role.
    pub async fn connect_with(cfg: &EksClusterConfig, opts: ConnectOptions) -> Result<Self> {
        AwsConnector::new(opts).connect(cfg).await
    }

    /// From an already loaded SDK configuration, with optional per-service endpoints.
    pub fn from_sdk_config(
        cluster: &str,
        sdk: &SdkConfig,
        eks_endpoint: Option<&str>,
        autoscaling_endpoint: Option<&str>,
    ) -> Self {
        let mut eks = aws_sdk_eks::config::Builder::from(sdk);
        if let Some(u) = eks_endpoint {
            eks = eks.endpoint_url(u);
        }
        let mut asg = aws_sdk_autoscaling::config::Builder::from(sdk);
        if let Some(u) = autoscaling_endpoint {
            asg = asg.endpoint_url(u);
        }
        AwsEks {
            cluster: cluster.to_string(),
            eks: aws_sdk_eks::Client::from_conf(eks.build()),
            asg: aws_sdk_autoscaling::Client::from_conf(asg.build()),
            errors: None,
            versions: Arc::default(),
        }
    }

    /// DescribeAddonVersions, every page: the versions of `addon` for `kubernetes_version`.
    async fn fetch_addon_versions(&self, addon: &str, kubernetes_version: &str) -> Result<AddonVersions> {
        let res = || format!("add-on {addon} versions for Kubernetes {kubernetes_version}");
        let mut out = AddonVersions {
            addon: addon.to_string(),
            kubernetes_version: kubernetes_version.to_string(),
            default_version: None,
            versions: Vec::new(),
        };
        let mut token: Option<String> = None;
        loop {
            let page = self
                .eks
                .describe_addon_versions()
                .addon_name(addon)
                .kubernetes_version(kubernetes_version)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.sdk_error("DescribeAddonVersions", res(), e))?;
            for info in page.addons().iter().filter(|i| i.addon_name() == Some(addon)) {
                for v in info.addon_versions() {
                    let Some(version) = v.addon_version() else {
                        continue;
                    };
                    let here: Vec<_> = v
                        .compatibilities()
                        .iter()
                        .filter(|c| c.cluster_version() == Some(kubernetes_version))
                        .collect();
                    if here.is_empty() {
                        continue;
                    }
                    if here.iter().any(|c| c.default_version()) && out.default_version.is_none() {
                        out.default_version = Some(version.to_string());
                    }
                    if !out.versions.iter().any(|x| x == version) {
                        out.versions.push(version.to_string());
                    }
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Counts every failed EKS and Auto Scaling call (after the SDK's own retries) in
    /// `flotilla_coordinator_eks_errors_total{operation, kind}`
    /// (`CoordinatorMetrics::eks_errors()`).
    pub fn with_metrics(mut self, errors: EksErrorCounter) -> Self {
        self.errors = Some(errors);
        self
    }

    /// Counts a failed call and hands its error on.
    fn failed(&self, operation: &'static str, e: EksError) -> EksError {
        if let Some(c) = &self.errors {
            c.count(operation, &e);
        }
        e
    }

    /// An SDK error as an [`EksError`], counted.
    fn sdk_error<E>(
        &self,
        operation: &'static str,
        resource: String,
        e: SdkError<E, HttpResponse>,
    ) -> EksError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.failed(operation, map_err(operation, resource, e))
    }

    /// A response without the part asked for, counted.
    fn missing(&self, operation: &'static str, resource: String, what: &str) -> EksError {
        self.failed(operation, missing(operation, resource, what))
    }

    fn ng_resource(&self, ng: &str) -> String {
        format!("nodegroup {}/{ng}", self.cluster)
    }

    fn cluster_resource(&self) -> String {
        format!("cluster {}", self.cluster)
    }
}

/// Maps an SDK error, keeping the AWS error code and message of service errors.
fn map_err<E>(operation: &'static str, resource: String, e: SdkError<E, HttpResponse>) -> EksError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &e {
        SdkError::ServiceError(ctx) => {
            let err = ctx.err();
            EksError::Api {
                operation,
                resource,
                code: err.code().unwrap_or("Unknown").to_string(),
                message: err.message().unwrap_or_default().to_string(),
                status: Some(ctx.raw().status().as_u16()),
            }
        }
        SdkError::ConstructionFailure(_) => EksError::Config(format!(
            "{operation} ({resource}): request could not be built: {}",
            DisplayErrorContext(&e)
        )),
        _ => EksError::Transport {
            operation,
            resource,
            message: DisplayErrorContext(&e).to_string(),
        },
    }
}

fn to_nodegroup(name: &str, ng: &eks_types::Nodegroup) -> Nodegroup {
    let scaling = ng.scaling_config();
    Nodegroup {
        name: ng.nodegroup_name().unwrap_or(name).to_string(),
        status: ng
            .status()
            .map(|s| NodegroupStatus::from_wire(s.as_str()))
            .unwrap_or_else(|| NodegroupStatus::Other(String::new())),
        version: ng.version().map(str::to_string),
        release_version: ng.release_version().map(str::to_string),
        desired_size: scaling.and_then(|s| s.desired_size()),
        min_size: scaling.and_then(|s| s.min_size()),
        max_size: scaling.and_then(|s| s.max_size()),
        health_issues: ng
            .health()
            .map(|h| {
                h.issues()
                    .iter()
                    .map(|i| {
                        format!(
                            "{}: {}",
                            i.code().map(|c| c.as_str()).unwrap_or("Unknown"),
                            i.message().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        update_config: ng.update_config().map(|u| UpdateConfig {
            max_unavailable: u.max_unavailable(),
            max_unavailable_percentage: u.max_unavailable_percentage(),
        }),
    }
}

fn to_update(u: &eks_types::Update) -> Update {
    Update {
        id: u.id().unwrap_or_default().to_string(),
        status: u
            .status()
            .map(|s| UpdateStatus::from_wire(s.as_str()))
            .unwrap_or_else(|| UpdateStatus::Other(String::new())),
        kind: u.r#type().map(|t| t.as_str().to_string()),
        errors: u
            .errors()
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.error_code().map(|c| c.as_str()).unwrap_or("Unknown"),
                    e.error_message().unwrap_or_default()
                )
            })
            .collect(),
        error_details: u
            .errors()
            .iter()
            .map(|e| UpdateErrorDetail {
                code: e
                    .error_code()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| "Unknown".into()),
                message: e.error_message().unwrap_or_default().to_string(),
                resource_ids: e.resource_ids().to_vec(),
            })
            .collect(),
        params: u
            .params()
            .iter()
            .map(|p| {
                (
                    p.r#type().map(|t| t.as_str().to_string()).unwrap_or_default(),
                    p.value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    }
}

fn to_addon(name: &str, a: &eks_types::Addon) -> Addon {
    Addon {
        name: a.addon_name().unwrap_or(name).to_string(),
        version: a.addon_version().unwrap_or_default().to_string(),
        status: a
            .status()
            .map(|s| AddonStatus::from_wire(s.as_str()))
            .unwrap_or_else(|| AddonStatus::Other(String::new())),
        health_issues: a
            .health()
            .map(|h| {
                h.issues()
                    .iter()
                    .map(|i| {
                        format!(
                            "{}: {}",
                            i.code().map(|c| c.as_str()).unwrap_or("Unknown"),
                            i.message().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Summary fields shared by `InsightSummary` and `Insight`.
fn to_insight(
    id: Option<&str>,
    name: Option<&str>,
    category: Option<&eks_types::Category>,
    kubernetes_version: Option<&str>,
    status: Option<&eks_types::InsightStatus>,
    description: Option<&str>,
) -> Insight {
    Insight {
        id: id.unwrap_or_default().to_string(),
        name: name.unwrap_or_default().to_string(),
        category: category.map(|c| c.as_str().to_string()).unwrap_or_default(),
        kubernetes_version: kubernetes_version.map(str::to_string),
        status: status
            .and_then(|s| s.status())
            .map(|s| InsightStatus::from_wire(s.as_str()))
            .unwrap_or(InsightStatus::Unknown),
        reason: status.and_then(|s| s.reason()).unwrap_or_default().to_string(),
        description: description.unwrap_or_default().to_string(),
    }
}

fn missing(operation: &'static str, resource: String, what: &str) -> EksError {
    EksError::Transport {
        operation,
        resource,
        message: format!("response has no {what}"),
    }
}

fn to_asg(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> AsgInfo {
    AsgInfo {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        min_size: g.min_size().unwrap_or(0),
        max_size: g.max_size().unwrap_or(0),
        desired_capacity: g.desired_capacity().unwrap_or(0),
        instances: g.instances().len(),
        subnets: g
            .vpc_zone_identifier()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

// === impl Eks ===

impl Eks for AwsEks {
    fn cluster_name(&self) -> &str {
        &self.cluster
    }

    async fn describe_cluster(&self) -> Result<ClusterInfo> {
        let op = "DescribeCluster";
        let out = self
            .eks
            .describe_cluster()
            .name(&self.cluster)
            .send()
            .await
            .map_err(|e| self.sdk_error(op, self.cluster_resource(), e))?;
        let c = out
            .cluster()
            .ok_or_else(|| self.missing(op, self.cluster_resource(), "cluster"))?;
        Ok(ClusterInfo {
            name: c.name().unwrap_or(&self.cluster).to_string(),
            version: c.version().unwrap_or_default().to_string(),
            status: c.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        })
    }

    async fn list_nodegroups(&self) -> Result<Vec<String>> {
        self.eks
            .list_nodegroups()
            .cluster_name(&self.cluster)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| self.sdk_error("ListNodegroups", self.cluster_resource(), e))
    }

    async fn describe_nodegroup(&self, name: &str) -> Result<Nodegroup> {
        let op = "DescribeNodegroup";
        let out = self
            .eks
            .describe_nodegroup()
            .cluster_name(&self.cluster)
            .nodegroup_name(name)
            .send()
            .await
            .map_err(|e| self.sdk_error(op, self.ng_resource(name), e))?;
        let ng = out
            .nodegroup()
            .ok_or_else(|| self.missing(op, self.ng_resource(name), "nodegroup"))?;
        Ok(to_nodegroup(name, ng))
    }

    async fn create_nodegroup(&self, t: &NodegroupTemplate) -> Result<Nodegroup> {
        t.validate()?;
        let op = "CreateNodegroup";
        let name = &t.nodegroup_name;
        let res = || self.ng_resource(name);
        let scaling = eks_types::NodegroupScalingConfig::builder()
            .min_size(t.scaling_config.min_size)
            .max_size(t.scaling_config.max_size)
            .desired_size(t.scaling_config.desired_size)
            .build();
        let taints = t
            .taints
            .iter()
            .map(|taint| {
                eks_types::Taint::builder()
                    .key(&taint.key)
                    .set_value(taint.value.clone())
                    .effect(match taint.effect {
                        TaintEffect::NoSchedule => eks_types::TaintEffect::NoSchedule,
                        TaintEffect::NoExecute => eks_types::TaintEffect::NoExecute,
                        TaintEffect::PreferNoSchedule => eks_types::TaintEffect::PreferNoSchedule,
                    })
                    .build()
            })
            .collect::<Vec<_>>();
        let update_config = t.update_config.map(|u| {
            eks_types::NodegroupUpdateConfig::builder()
                .set_max_unavailable(u.max_unavailable)
                .set_max_unavailable_percentage(u.max_unavailable_percentage)
                .build()
        });
        let labels: HashMap<String, String> = t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let out = self
            .eks
            .create_nodegroup()
            .cluster_name(&self.cluster)
            .nodegroup_name(name)
            .set_instance_types(Some(t.instance_types.clone()))
            .scaling_config(scaling)
            .set_subnets(Some(t.subnets.clone()))
            .node_role(&t.node_role)
            .set_labels((!labels.is_empty()).then_some(labels))
            .set_taints((!taints.is_empty()).then_some(taints))
            .set_ami_type(t.ami_type.as_deref().map(eks_types::AmiTypes::from))
            .set_capacity_type(t.capacity_type.as_deref().map(eks_types::CapacityTypes::from))
            .set_update_config(update_config)
            .send()
            .await
            .map_err(|e| self.sdk_error(op, res(), e))?;
        let ng = out
            .nodegroup()
            .ok_or_else(|| self.missing(op, res(), "nodegroup"))?;
        Ok(to_nodegroup(name, ng))
    }

    async fn delete_nodegroup(&self, name: &str) -> Result<()> {
        self.eks
            .delete_nodegroup()
            .cluster_name(&self.cluster)
            .nodegroup_name(name)
            .send()
            .await
            .map_err(|e| self.sdk_error("DeleteNodegroup", self.ng_resource(name), e))?;
        Ok(())
    }

    async fn update_cluster_version(&self, version: &str) -> Result<Update> {
        let op = "UpdateClusterVersion";
        let out = self
            .eks
            .update_cluster_version()
            .name(&self.cluster)
            .version(version)
            .send()
            .await
            .map_err(|e| self.sdk_error(op, self.cluster_resource(), e))?;
        let u = out
            .update()
            .ok_or_else(|| self.missing(op, self.cluster_resource(), "update"))?;
        Ok(to_update(u))
    }

    async fn update_nodegroup_version(
        &self,
        nodegroup: &str,
        version: Option<&str>,
        force: bool,
    ) -> Result<Update> {
        let op = "UpdateNodegroupVersion";
        let out = self
            .eks
            .update_nodegroup_version()
            .cluster_name(&self.cluster)
            .nodegroup_name(nodegroup)
            .set_version(version.map(str::to_string))
            .force(force)
            .send()
            .await
            .map_err(|e| self.sdk_error(op, self.ng_resource(nodegroup), e))?;
        let u = out
            .update()
            .ok_or_else(|| self.missing(op, self.ng_resource(nodegroup), "update"))?;
        Ok(to_update(u))
    }

    async fn describe_update_of(&self, update_id: &str, subject: UpdateSubject<'_>) -> Result<Update> {
        let op = "DescribeUpdate";
        let res = || format!("update {update_id} of {subject} of cluster {}", self.cluster);
        let out = self
            .eks
            .describe_update()
            .name(&self.cluster)
            .update_id(update_id)
            .set_nodegroup_name(subject.nodegroup().map(str::to_string))
            .set_addon_name(subject.addon().map(str::to_string))
            .send()
            .await
            .map_err(|e| self.sdk_error(op, res(), e))?;
        let u = out.update().ok_or_else(|| self.missing(op, res(), "update"))?;
        Ok(to_update(u))
    }

    async fn list_updates(&self, subject: UpdateSubject<'_>) -> Result<Vec<String>> {
        self.eks
            .list_updates()
            .name(&self.cluster)
            .set_nodegroup_name(subject.nodegroup().map(str::to_string))
            .set_addon_name(subject.addon().map(str::to_string))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| {
                self.sdk_error(
                    "ListUpdates",
                    format!("updates of {subject} of cluster {}", self.cluster),
                    e,
                )
            })
    }

    async fn list_addons(&self) -> Result<Vec<String>> {
        self.eks
            .list_addons()
            .cluster_name(&self.cluster)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| self.sdk_error("ListAddons", self.cluster_resource(), e))
    }

    async fn describe_addon(&self, name: &str) -> Result<Addon> {
        let op = "DescribeAddon";
        let res = || format!("add-on {}/{name}", self.cluster);
        let out = self
            .eks
            .describe_addon()
            .cluster_name(&self.cluster)
            .addon_name(name)
            .send()
            .await
            .map_err(|e| self.sdk_error(op, res(), e))?;
        let a = out.addon().ok_or_else(|| self.missing(op, res(), "addon"))?;
        Ok(to_addon(name, a))
    }

    async fn describe_addon_versions(&self, addon: &str, kubernetes_version: &str) -> Result<AddonVersions> {
        if let Some(v) = self.versions.get(addon, kubernetes_version) {
            return Ok(v);
        }
        let v = self.fetch_addon_versions(addon, kubernetes_version).await?;
        self.versions.put(&v);
        Ok(v)
    }

    async fn describe_cluster_versions(&self) -> Result<Vec<String>> {
        if let Some(v) = self.versions.cluster_versions() {
            return Ok(v);
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .eks
                .describe_cluster_versions()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.sdk_error("DescribeClusterVersions", "Kubernetes versions".into(), e))?;
            out.extend(
                page.cluster_versions()
                    .iter()
                    .filter_map(|v| v.cluster_version())
                    .map(str::to_string),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        self.versions.put_cluster_versions(&out);
        Ok(out)
    }

    async fn update_addon(&self, addon: &str, version: &str) -> Result<Update> {
        let op = "UpdateAddon";
        let res = || format!("add-on {}/{addon}", self.cluster);
        let out = self
            .eks
            .update_addon()
            .cluster_name(&self.cluster)
            .addon_name(addon)
            .addon_version(version)
            .resolve_conflicts(eks_types::ResolveConflicts::Preserve)
            .send()
            .await
            .map_err(|e| self.sdk_error(op, res(), e))?;
        let u = out.update().ok_or_else(|| self.missing(op, res(), "update"))?;
        Ok(to_update(u))
    }

    async fn list_insights(&self, kubernetes_version: Option<&str>) -> Result<Insights> {
        let mut filter =
            eks_types::InsightsFilter::builder().categories(eks_types::Category::UpgradeReadiness);
        if let Some(v) = kubernetes_version {
            filter = filter.kubernetes_versions(v);
        }
        let filter = filter.build();
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let sent = self
                .eks
                .list_insights()
                .cluster_name(&self.cluster)
                .filter(filter.clone())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.sdk_error("ListInsights", self.cluster_resource(), e));
            let out = match sent {
                Ok(out) => out,
                Err(e) if e.is_unavailable_operation() => {
                    tracing::warn!(cluster = %self.cluster, error = %e, "EKS upgrade insights unavailable");
                    return Ok(Insights::Unavailable {
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            };
            found.extend(out.insights().iter().map(|i| {
                to_insight(
                    i.id(),
                    i.name(),
                    i.category(),
                    i.kubernetes_version(),
                    i.insight_status(),
                    i.description(),
                )
            }));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(Insights::Listed(found)),
            }
        }
    }

    async fn describe_insight(&self, id: &str) -> Result<InsightDetail> {
        let op = "DescribeInsight";
        let res = || format!("insight {id} of cluster {}", self.cluster);
        let out = self
            .eks
            .describe_insight()
            .cluster_name(&self.cluster)
            .id(id)
            .send()
            .await
            .map_err(|e| self.sdk_error(op, res(), e))?;
        let i = out.insight().ok_or_else(|| self.missing(op, res(), "insight"))?;
        let deprecations = i
            .category_specific_summary()
            .map(|c| {
                c.deprecation_details()
                    .iter()
                    .map(|d| DeprecatedApiUse {
                        usage: d.usage().unwrap_or_default().to_string(),
                        replaced_with: d.replaced_with().map(str::to_string),
                        stop_serving_version: d.stop_serving_version().map(str::to_string),
                        clients: d
                            .client_stats()
                            .iter()
                            .map(|c| {
                                format!(
                                    "{} ({} requests in 30 days)",
                                    c.user_agent().unwrap_or("unknown client"),
                                    c.number_of_requests_last30_days()
                                )
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let resources = i
            .resources()
            .iter()
            .filter(|r| {
                r.insight_status()
                    .and_then(|s| s.status())
                    .is_some_and(|s| s.as_str() != "PASSING")
            })
            .map(|r| {
                let st = r.insight_status();
                format!(
                    "{}: {}: {}",
                    r.kubernetes_resource_uri().or(r.arn()).unwrap_or("?"),
                    st.and_then(|s| s.status())
                        .map(|s| s.as_str())
                        .unwrap_or("UNKNOWN"),
                    st.and_then(|s| s.reason()).unwrap_or_default()
                )
            })
            .collect();
        Ok(InsightDetail {
            insight: to_insight(
                i.id(),
                i.name(),
                i.category(),
                i.kubernetes_version(),
                i.insight_status(),
                i.description(),
            ),
            recommendation: i.recommendation().unwrap_or_default().to_string(),
            deprecations,
            resources,
        })
    }

    async fn find_self_managed_asg(&self, nodegroup: &str) -> Result<Option<AsgInfo>> {
        let op = "DescribeAutoScalingGroups";
        let res = || format!("self-managed nodegroup {}/{nodegroup}", self.cluster);
        let filters = [
            Filter::builder()
                .name("tag:alpha.eksctl.io/nodegroup-name")
                .values(nodegroup)
                .build(),
            Filter::builder()
                .name(format!("tag:kubernetes.io/cluster/{}", self.cluster))
                .values("owned")
                .build(),
        ];
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .asg
                .describe_auto_scaling_groups()
                .set_filters(Some(filters.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.sdk_error(op, res(), e))?;
            found.extend(out.auto_scaling_groups().iter().map(to_asg));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        if found.len() > 1 {
            return Err(EksError::AmbiguousAsg {
                cluster: self.cluster.clone(),
                nodegroup: nodegroup.to_string(),
                count: found.len(),
                names: found
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(found.pop())
    }

    async fn scale_asg(&self, asg: &str, size: AsgSize) -> Result<()> {
        self.asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(asg)
            .desired_capacity(size.desired)
            .min_size(size.min)
            .max_size(size.max)
            .send()
            .await
            .map_err(|e| self.sdk_error("UpdateAutoScalingGroup", format!("autoscaling group {asg}"), e))?;
        Ok(())
    }

    async fn delete_asg(&self, asg: &str, force: bool) -> Result<()> {
        self.asg
            .delete_auto_scaling_group()
            .auto_scaling_group_name(asg)
            .force_delete(force)
            .send()
            .await
            .map_err(|e| self.sdk_error("DeleteAutoScalingGroup", format!("autoscaling group {asg}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_camel_case_and_rejects_unknown_fields() {
        let c: EksClusterConfig = serde_json::from_str(
            r#"{"region":"us-west-2","eksClusterName":"prod-1","roleArn":"arn:aws:iam::1:role/x"}"#,
        )
        .unwrap();
        assert_eq!(c.eks_cluster_name, "prod-1");
        assert!(c.validate().is_ok());
        let e = serde_json::from_str::<EksClusterConfig>(
            r#"{"region":"us-west-2","eksClusterName":"p","rolearn":"x"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("rolearn"), "{e}");
        let bad = EksClusterConfig {
            eks_endpoint_url: Some("localhost:1".into()),
            ..c
        };
        assert!(matches!(bad.validate(), Err(EksError::Config(m)) if m.contains("eksEndpointUrl")));
    }
}
