//! The scenario's optional `eks` section: how the simulated EKS and Auto Scaling APIs behave for a
//! cluster — delays of control-plane, node group and add-on operations, injected faults
//! (throttling, failed updates, node groups stuck in CREATING), upgrade insights and the managed
//! add-ons installed. Every duration is scaled by `timing.timeScale`; defaults follow
//! `timing.preset` (`fast` for tests, `realistic` for demos).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    format_duration, is_node_group_name, opt_duration_text, scale_duration, ClusterScenario, Issue,
    KubeVersion, Section, Seg, TimingPreset, MAX_DELAY,
};
use crate::aws::catalog;

/// The `eks` section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an eks mapping (timing, faults, insights, deprecatedApiRequests, addons)"
)]
pub struct EksSpec {
    /// Delays of EKS operations (before `timing.timeScale`).
    #[serde(default, skip_serializing_if = "EksTimingSpec::is_empty")]
    pub timing: EksTimingSpec,
    /// Injected EKS / Auto Scaling faults.
    #[serde(default, skip_serializing_if = "EksFaultSpec::is_empty")]
    pub faults: EksFaultSpec,
    /// Upgrade insights that replace (same name) or add to the computed ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insights: Vec<InsightSpec>,
    /// Clients that keep calling deprecated Kubernetes APIs: the API server counts them in its
    /// `apiserver_requested_deprecated_apis` metric while it still serves the API, and the computed
    /// insight `Deprecated APIs removed in Kubernetes v1.<next>` lists those the next minor removes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deprecated_api_requests: Vec<DeprecatedApiRequestSpec>,
    /// Managed add-ons installed; absent: `vpc-cni`, `coredns` and `kube-proxy` at the default
    /// version of the cluster's Kubernetes version. `[]` installs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addons: Option<Vec<AddonSpec>>,
}

impl EksSpec {
    /// Whether nothing is set (the section can be left out when writing the scenario).
    pub fn is_default(&self) -> bool {
        *self == EksSpec::default()
    }
}

/// `eks.timing`: per-operation delays, each overriding the preset's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an eks timing mapping"
)]
pub struct EksTimingSpec {
    /// UpdateClusterVersion: InProgress -> Successful (realistic: 8m).
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub control_plane_update: Option<Duration>,
    /// CreateNodegroup: instances launched (then they register and become Ready after
    /// `timing.nodeReadyDelay`; the group turns ACTIVE when all are Ready).
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub nodegroup_create: Option<Duration>,
    /// DeleteNodegroup: after the nodes are drained, until the group is gone.
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub nodegroup_delete: Option<Duration>,
    /// UpdateNodegroupVersion: per replaced node, from its drain to its termination (on top of the
    /// surge node's `timing.nodeReadyDelay`).
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub node_replacement: Option<Duration>,
    /// UpdateAddon: InProgress -> Successful.
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub addon_update: Option<Duration>,
    /// How long a node group update keeps retrying an eviction a PDB refuses before it fails with
    /// `PodEvictionFailure` (EKS: 15 minutes).
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub eviction_timeout: Option<Duration>,
    /// How long new instances may take to register Ready before a node group create fails with
    /// `NodeCreationFailure`.
    #[serde(default, with = "opt_duration_text", skip_serializing_if = "Option::is_none")]
    pub node_join_timeout: Option<Duration>,
}

impl EksTimingSpec {
    fn is_empty(&self) -> bool {
        *self == EksTimingSpec::default()
    }

    fn fields(&self) -> [(&'static str, Option<Duration>); 7] {
        [
            ("controlPlaneUpdate", self.control_plane_update),
            ("nodegroupCreate", self.nodegroup_create),
            ("nodegroupDelete", self.nodegroup_delete),
            ("nodeReplacement", self.node_replacement),
            ("addonUpdate", self.addon_update),
            ("evictionTimeout", self.eviction_timeout),
            ("nodeJoinTimeout", self.node_join_timeout),
        ]
    }
}

/// Effective EKS delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EksTiming {
    /// UpdateClusterVersion duration.
    pub control_plane_update: Duration,
    /// CreateNodegroup: until instances launch.
    pub nodegroup_create: Duration,
    /// DeleteNodegroup: after the drain, until gone.
    pub nodegroup_delete: Duration,
    /// Per replaced node: drain to termination.
    pub node_replacement: Duration,
    /// UpdateAddon duration.
    pub addon_update: Duration,
    /// Eviction retries before `PodEvictionFailure`.
    pub eviction_timeout: Duration,
    /// New instances' registration deadline.
    pub node_join_timeout: Duration,
    /// Pause between eviction retries.
    pub eviction_retry: Duration,
}

impl EksTiming {
    /// The preset's delays, before `timeScale`.
    pub fn preset(p: TimingPreset) -> EksTiming {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        match p {
            TimingPreset::Fast => EksTiming {
                control_plane_update: ms(1000),
                nodegroup_create: ms(300),
                nodegroup_delete: ms(300),
                node_replacement: ms(200),
                addon_update: ms(500),
                eviction_timeout: s(3),
                node_join_timeout: s(30),
                eviction_retry: ms(100),
            },
            TimingPreset::Realistic => EksTiming {
                control_plane_update: s(8 * 60),
                nodegroup_create: s(90),
                nodegroup_delete: s(120),
                node_replacement: s(60),
                addon_update: s(60),
                eviction_timeout: s(15 * 60),
                node_join_timeout: s(15 * 60),
                eviction_retry: s(5),
            },
        }
    }
}

/// `eks.faults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an eks faults mapping"
)]
pub struct EksFaultSpec {
    /// Share of EKS and Auto Scaling calls about this cluster answered with a throttling error
    /// (`ThrottlingException` / `Throttling`), `0.0..=1.0`.
    #[serde(default)]
    pub throttle_rate: f64,
    /// Every UpdateClusterVersion ends `Failed` (the version stays).
    #[serde(default)]
    pub fail_control_plane_update: bool,
    /// Managed node groups whose UpdateNodegroupVersion ends `Failed` with `NodeCreationFailure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_nodegroup_updates: Vec<String>,
    /// Add-ons whose UpdateAddon ends `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_addon_updates: Vec<String>,
    /// Node group names that, when created with CreateNodegroup, stay `CREATING` for ever.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck_creating: Vec<String>,
}

impl EksFaultSpec {
    fn is_empty(&self) -> bool {
        *self == EksFaultSpec::default()
    }
}

/// Insight categories, as EKS names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InsightCategory {
    /// `UPGRADE_READINESS`
    #[default]
    UpgradeReadiness,
    /// `MISCONFIGURATION`
    Misconfiguration,
}

impl InsightCategory {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            InsightCategory::UpgradeReadiness => "UPGRADE_READINESS",
            InsightCategory::Misconfiguration => "MISCONFIGURATION",
        }
    }
}

/// Insight status values, as EKS names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InsightStatusValue {
    /// `PASSING`
    #[default]
    Passing,
    /// `WARNING`
    Warning,
    /// `ERROR`
    Error,
    /// `UNKNOWN`
    Unknown,
}

impl InsightStatusValue {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            InsightStatusValue::Passing => "PASSING",
            InsightStatusValue::Warning => "WARNING",
            InsightStatusValue::Error => "ERROR",
            InsightStatusValue::Unknown => "UNKNOWN",
        }
    }
}

/// One insight a scenario sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an insight such as {name: \"Deprecated APIs removed in Kubernetes v1.34\", status: ERROR}"
)]
pub struct InsightSpec {
    /// The insight's name; one of the computed names (`Kubelet version skew`, `Deprecated APIs
    /// removed in Kubernetes v1.<next>`, `Amazon EKS add-on version compatibility`, `Cluster
    /// health issues`) replaces that insight.
    pub name: String,
    /// The Kubernetes version it is about (default: the next minor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<KubeVersion>,
    /// `UPGRADE_READINESS` (default) or `MISCONFIGURATION`.
    #[serde(default)]
    pub category: InsightCategory,
    /// `PASSING`, `WARNING`, `ERROR` or `UNKNOWN`.
    #[serde(default)]
    pub status: InsightStatusValue,
    /// Status reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Recommendation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<String>,
    /// Deprecated API use (a deprecated-API insight's details).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deprecated_apis: Vec<DeprecatedApiSpec>,
}

/// One deprecated API in use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a deprecated API such as {usage: /apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas, replacedWith: /apis/flowcontrol.apiserver.k8s.io/v1/flowschemas, stopServingVersion: \"1.32\"}"
)]
pub struct DeprecatedApiSpec {
    /// The deprecated API path in use.
    pub usage: String,
    /// Its replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_with: Option<String>,
    /// The version that stops serving it.
    pub stop_serving_version: KubeVersion,
    /// The version that started serving the replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_serving_replacement_version: Option<KubeVersion>,
    /// The client using it.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// Requests in the last 30 days.
    #[serde(default = "one_request")]
    pub requests_last_30_days: u32,
}

/// A client that keeps calling a deprecated Kubernetes API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a deprecated API request such as {api: /apis/resource.k8s.io/v1beta1/resourceclaims, removedRelease: \"1.34\"}"
)]
pub struct DeprecatedApiRequestSpec {
    /// The API path: `/apis/<group>/<version>/<resource>[/<subresource>]` or
    /// `/api/v1/<resource>[/<subresource>]`.
    pub api: String,
    /// The release that stops serving it (the metric's `removed_release` label).
    pub removed_release: KubeVersion,
    /// Its replacement's path, for the insight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_with: Option<String>,
    /// The client calling it.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
}

/// A deprecated API as the API server's metric labels it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiParts {
    /// API group (`""` for the core group).
    pub group: String,
    /// Version, e.g. `v1beta1`.
    pub version: String,
    /// Resource (plural), e.g. `resourceclaims`.
    pub resource: String,
    /// Subresource, e.g. `status`, or `""`.
    pub subresource: String,
}

impl DeprecatedApiRequestSpec {
    /// The group, version, resource and subresource of [`Self::api`]; `None` when it is not an
    /// API resource path.
    pub fn parts(&self) -> Option<ApiParts> {
        let segs: Vec<&str> = self.api.strip_prefix('/')?.split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let (resource, subresource) = match rest {
            [r] => (*r, ""),
            [r, sub] => (*r, *sub),
            _ => return None,
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !ok(version) || !ok(resource) || !(subresource.is_empty() || ok(subresource)) {
            return None;
        }
        if !group.is_empty() && !ok(group) {
            return None;
        }
        Some(ApiParts {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            subresource: subresource.into(),
        })
    }
}

fn default_user_agent() -> String {
    "kubectl/v1.33.5 (linux/amd64) kubernetes/3025e55".into()
}

fn one_request() -> u32 {
    1
}

/// One installed managed add-on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an add-on such as {name: coredns, version: v1.11.4-eksbuild.2}"
)]
pub struct AddonSpec {
    /// `vpc-cni`, `coredns` or `kube-proxy`.
    pub name: String,
    /// A version from the catalog compatible with the cluster (default: the default version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl ClusterScenario {
    /// Effective EKS delays: the preset's, this cluster's `eks.timing` overrides, `timeScale` applied.
    pub fn eks_timing(&self) -> EksTiming {
        let p = EksTiming::preset(self.timing.preset);
        let t = &self.eks.timing;
        let sc = |v: Option<Duration>, d: Duration| self.timing.scale(v.unwrap_or(d));
        EksTiming {
            control_plane_update: sc(t.control_plane_update, p.control_plane_update),
            nodegroup_create: sc(t.nodegroup_create, p.nodegroup_create),
            nodegroup_delete: sc(t.nodegroup_delete, p.nodegroup_delete),
            node_replacement: sc(t.node_replacement, p.node_replacement),
            addon_update: sc(t.addon_update, p.addon_update),
            eviction_timeout: sc(t.eviction_timeout, p.eviction_timeout),
            node_join_timeout: sc(t.node_join_timeout, p.node_join_timeout),
            eviction_retry: sc(None, p.eviction_retry).max(Duration::from_millis(10)),
        }
    }

    /// The add-ons installed at start, with their versions.
    pub fn eks_addons(&self) -> Vec<(String, String)> {
        let minor = self.kubernetes_version.minor();
        match &self.eks.addons {
            None => catalog::ADDONS
                .iter()
                .filter_map(|a| catalog::default_version(a, minor).map(|v| (a.to_string(), v)))
                .collect(),
            Some(list) => list
                .iter()
                .map(|a| {
                    let v = a
                        .version
                        .clone()
                        .or_else(|| catalog::default_version(&a.name, minor))
                        .unwrap_or_default();
                    (a.name.clone(), v)
                })
                .collect(),
        }
    }

    /// Checks the `eks` section.
    pub(super) fn check_eks(&self) -> Result<(), Issue> {
        let s = Section::Eks;
        let e = &self.eks;
        for (field, d) in e.timing.fields() {
            if let Some(d) = d {
                if scale_duration(d, self.timing.time_scale).is_none_or(|x| x > MAX_DELAY) {
                    return Err(Issue::new(
                        s,
                        at!["eks", "timing", field],
                        format!(
                            "{} is too long; at most 24h after timing.timeScale",
                            format_duration(d)
                        ),
                    ));
                }
            }
        }
        if e.timing.eviction_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Issue::new(
                s,
                at!["eks", "timing", "evictionTimeout"],
                "must be more than 0; EKS waits 15m",
            ));
        }
        let f = &e.faults;
        if !f.throttle_rate.is_finite() || !(0.0..=1.0).contains(&f.throttle_rate) {
            return Err(Issue::new(
                s,
                at!["eks", "faults", "throttleRate"],
                format!("{} is not a share of calls; use a number from 0.0 to 1.0 (0.1 = one call in ten is throttled)", f.throttle_rate),
            ));
        }
        for (field, list) in [
            ("failNodegroupUpdates", &f.fail_nodegroup_updates),
            ("stuckCreating", &f.stuck_creating),
        ] {
            for (i, n) in list.iter().enumerate() {
                if !is_node_group_name(n) {
                    return Err(Issue::new(s, at!["eks", "faults", field, i], format!(
                        "{n:?} is not a valid node group name: use 1-63 letters, digits, '-' and '_', starting with a letter or digit"
                    )));
                }
            }
        }
        for (i, a) in f.fail_addon_updates.iter().enumerate() {
            if !catalog::ADDONS.contains(&a.as_str()) {
                return Err(Issue::new(
                    s,
                    at!["eks", "faults", "failAddonUpdates", i],
                    format!(
                        "unknown add-on {a:?}; the simulator has {}",
                        catalog::ADDONS.join(", ")
                    ),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, ins) in e.insights.iter().enumerate() {
            if ins.name.trim().is_empty() {
                return Err(Issue::new(
                    s,
                    at!["eks", "insights", i, "name"],
                    "must not be empty",
                ));
            }
            if !names.insert(ins.name.as_str()) {
                return Err(Issue::new(
                    s,
                    at!["eks", "insights", i, "name"],
                    format!("duplicate insight {:?}; give each name once", ins.name),
                ));
            }
            for (j, d) in ins.deprecated_apis.iter().enumerate() {
                if !d.usage.starts_with('/') {
                    return Err(Issue::new(s, at!["eks", "insights", i, "deprecatedApis", j, "usage"], format!(
                        "{:?} is not an API path; write one like /apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas", d.usage
                    )));
                }
            }
        }
        for (i, d) in e.deprecated_api_requests.iter().enumerate() {
            if d.parts().is_none() {
                return Err(Issue::new(s, at!["eks", "deprecatedApiRequests", i, "api"], format!(
                    "{:?} is not an API resource path; write one like /apis/resource.k8s.io/v1beta1/resourceclaims or /api/v1/componentstatuses", d.api
                )));
            }
            if d.removed_release <= self.kubernetes_version {
                return Err(Issue::new(s, at!["eks", "deprecatedApiRequests", i, "removedRelease"], format!(
                    "{} is not after the cluster's {}: an API removed already is not served, so no client can call it; give a later release",
                    d.removed_release, self.kubernetes_version
                )));
            }
        }
        if let Some(addons) = &e.addons {
            let minor = self.kubernetes_version.minor();
            let mut seen = BTreeSet::new();
            for (i, a) in addons.iter().enumerate() {
                if !catalog::ADDONS.contains(&a.name.as_str()) {
                    return Err(Issue::new(
                        s,
                        at!["eks", "addons", i, "name"],
                        format!(
                            "unknown add-on {:?}; the simulator has {}",
                            a.name,
                            catalog::ADDONS.join(", ")
                        ),
                    ));
                }
                if !seen.insert(a.name.as_str()) {
                    return Err(Issue::new(
                        s,
                        at!["eks", "addons", i, "name"],
                        format!("duplicate add-on {:?}; list each once", a.name),
                    ));
                }
                if let Some(v) = &a.version {
                    let ok: Vec<String> = catalog::versions(&a.name)
                        .into_iter()
                        .filter(|c| c.compatible_with(minor))
                        .map(|c| c.version)
                        .collect();
                    if !ok.contains(v) {
                        return Err(Issue::new(
                            s,
                            at!["eks", "addons", i, "version"],
                            format!(
                                "{v:?} is not a {} version for Kubernetes {}; use one of {}",
                                a.name,
                                self.kubernetes_version,
                                ok.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `key=value` is a valid Kubernetes label (qualified key, label value).
pub fn valid_label(key: &str, value: &str) -> bool {
    super::is_qualified_name(key) && super::is_label_value(value)
}

/// Whether `s` is a valid EKS node group name (1-63 letters, digits, `-`, `_`).
pub fn valid_nodegroup_name(s: &str) -> bool {
    is_node_group_name(s)
}

#[cfg(test)]
mod tests {
    use super::super::Scenario;
    use super::*;

    #[test]
    fn eks_section_parses_and_resolves_timing() {
        let s = Scenario::from_yaml(
            "timing: {preset: realistic, timeScale: 0.5}\neks:\n  timing: {nodeReplacement: 1m}\n  faults: {throttleRate: 0.25, stuckCreating: [ng-x]}\n  addons: [{name: coredns}]\n",
            "t.yaml",
        )
        .unwrap();
        let cs = s.for_cluster("sim-1");
        let t = cs.eks_timing();
        assert_eq!(t.control_plane_update, Duration::from_secs(240));
        assert_eq!(t.node_replacement, Duration::from_secs(30));
        assert_eq!(
            cs.eks_addons(),
            vec![("coredns".to_string(), "v1.11.4-eksbuild.2".to_string())]
        );
        assert_eq!(Scenario::from_yaml(&s.to_yaml(), "again.yaml").unwrap(), s);
        let d = Scenario::default_scenario().for_cluster("sim-1");
        assert_eq!(d.eks_timing().control_plane_update, Duration::from_secs(1));
        assert_eq!(d.eks_addons().len(), 3);
    }

    #[test]
    fn deprecated_api_paths_split_as_the_metric_labels_them() {
        let spec = |api: &str| DeprecatedApiRequestSpec {
            api: api.into(),
            removed_release: KubeVersion::new(34),
            replaced_with: None,
            user_agent: default_user_agent(),
        };
        let p = spec("/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas/status")
            .parts()
            .unwrap();
        assert_eq!(
            (
                p.group.as_str(),
                p.version.as_str(),
                p.resource.as_str(),
                p.subresource.as_str()
            ),
            ("flowcontrol.apiserver.k8s.io", "v1beta3", "flowschemas", "status")
        );
        let p = spec("/api/v1/componentstatuses").parts().unwrap();
        assert_eq!((p.group.as_str(), p.resource.as_str()), ("", "componentstatuses"));
        for bad in [
            "apis/a/v1/x",
            "/apis/a/v1",
            "/apis/a/v1/x/y/z",
            "/api/v2/x",
            "/apis/A/v1/x",
        ] {
            assert!(spec(bad).parts().is_none(), "{bad}");
        }
    }

    #[test]
    fn eks_errors_are_located_and_name_the_field() {
        let e = Scenario::from_yaml("eks:\n  faults:\n    throttleRate: 2\n", "f.yaml").unwrap_err();
        assert_eq!(e.path(), "eks.faults.throttleRate");
        assert_eq!(e.line(), Some(3));
        let e = Scenario::from_yaml("eks:\n  addons:\n    - {name: coredns, version: v9}\n", "f.yaml")
            .unwrap_err();
        assert_eq!(e.path(), "eks.addons[0].version");
        assert!(e.message().contains("v1.11.4-eksbuild.2"), "{}", e.message());
        let e = Scenario::from_yaml(
            "eks:\n  deprecatedApiRequests:\n    - {api: /apis/resource.k8s.io, removedRelease: \"1.34\"}\n",
            "f.yaml",
        )
        .unwrap_err();
        assert_eq!(e.path(), "eks.deprecatedApiRequests[0].api");
        let e = Scenario::from_yaml(
            "eks:\n  deprecatedApiRequests:\n    - {api: /apis/resource.k8s.io/v1beta1/resourceclaims, removedRelease: \"1.33\"}\n",
            "f.yaml",
        )
        .unwrap_err();
        assert_eq!(e.path(), "eks.deprecatedApiRequests[0].removedRelease");
        assert!(
            e.message().contains("not after the cluster's 1.33"),
            "{}",
            e.message()
        );
        let e = Scenario::from_yaml("eks:\n  bogus: 1\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Scenario::from_yaml(
            "overrides:\n  sim-2:\n    eks:\n      faults: {failAddonUpdates: [nope]}\n",
            "f.yaml",
        )
        .unwrap_err();
        assert_eq!(e.path(), "overrides.sim-2.eks.faults.failAddonUpdates[0]");
    }
}
