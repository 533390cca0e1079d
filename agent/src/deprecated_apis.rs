//! The agent's own deprecated-API check: the API server's `apiserver_requested_deprecated_apis`
//! gauge (from `/metrics`), which names every deprecated API a client has called since that API
//! server instance started, with the release that stops serving it.

use serde::Serialize;

use crate::cluster::{Cluster, ClusterError};

/// The API server metric read.
pub const METRIC: &str = "apiserver_requested_deprecated_apis";

/// One deprecated API a client called.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DeprecatedApi {
    /// API group (`""` for the core group).
    pub group: String,
    /// Version, e.g. `v1beta1`.
    pub version: String,
    /// Resource, e.g. `flowschemas`.
    pub resource: String,
    /// Subresource, e.g. `status`, or `""`.
    pub subresource: String,
    /// The release that stops serving it, e.g. `1.32`; `""` when none is scheduled.
    pub removed_release: String,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DeprecatedApiScan {
    /// `/metrics` was read: the deprecated APIs requested, sorted (empty when none were).
    Checked(Vec<DeprecatedApi>),
    /// `/metrics` could not be read or parsed: why, and what to do.
    Unavailable(String),
}

/// Reads `/metrics` and lists the deprecated APIs clients called. Never fails: a server that
/// refuses or garbles `/metrics` gives [`DeprecatedApiScan::Unavailable`] with the reason.
pub async fn scan<C: Cluster>(cluster: &C) -> DeprecatedApiScan {
    match cluster.api_server_metrics().await {
        Ok(text) => match parse(&text) {
            Ok(apis) => DeprecatedApiScan::Checked(apis),
            Err(e) => DeprecatedApiScan::Unavailable(format!("GET /metrics: {e}")),
        },
        Err(ClusterError::Api { code: 403, .. }) => DeprecatedApiScan::Unavailable(
            "GET /metrics is forbidden: grant the agent's ClusterRole `get` on nonResourceURLs [\"/metrics\"] (the Helm chart does)".into(),
        ),
        Err(e) => DeprecatedApiScan::Unavailable(e.to_string()),
    }
}

/// The deprecated APIs in a Prometheus text exposition: the [`METRIC`] samples above zero.
pub fn parse(text: &str) -> Result<Vec<DeprecatedApi>, String> {
    // A big API server's /metrics runs to megabytes; only this metric's lines are parsed.
    let ours = |l: &&str| {
        l.strip_prefix("# TYPE ")
            .or_else(|| l.strip_prefix("# HELP "))
            .unwrap_or(l)
            .strip_prefix(METRIC)
            .is_some_and(|rest| rest.starts_with(['{', ' ']))
    };
    let scrape = prometheus_parse::Scrape::parse(text.lines().filter(ours).map(|l| Ok(l.to_string())))
        .map_err(|e| format!("not in the Prometheus text format: {e}"))?;
    let mut apis: Vec<DeprecatedApi> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == METRIC)
        .filter(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v > 0.0,
            _ => false,
        })
        .map(|s| {
            let label = |k: &str| s.labels.get(k).unwrap_or_default().to_string();
            DeprecatedApi {
                group: label("group"),
                version: label("version"),
                resource: label("resource"),
                subresource: label("subresource"),
                removed_release: label("removed_release"),
            }
        })
        .filter(|a| !a.version.is_empty() && !a.resource.is_empty())
        .collect();
    apis.sort();
    apis.dedup();
    Ok(apis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;

    /// As a kube-apiserver exposes it (labels sorted, other metrics around it).
    const METRICS: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 42
# HELP apiserver_requested_deprecated_apis [STABLE] Gauge of deprecated APIs that have been requested, broken out by API group, version, resource, subresource, and removed_release.
# TYPE apiserver_requested_deprecated_apis gauge
apiserver_requested_deprecated_apis{group="flowcontrol.apiserver.k8s.io",removed_release="1.32",resource="flowschemas",subresource="status",version="v1beta3"} 1
apiserver_requested_deprecated_apis{group="",removed_release="1.25",resource="podsecuritypolicies",subresource="",version="v1beta1"} 0
apiserver_requested_deprecated_apis{group="",removed_release="",resource="componentstatuses",subresource="",version="v1"} 1
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.721234567e+09
"#;

    #[test]
    fn requested_deprecated_apis_are_read_from_the_gauge() {
        let apis = parse(METRICS).unwrap();
        let api = |group: &str, version: &str, resource: &str, sub: &str, removed: &str| DeprecatedApi {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            subresource: sub.into(),
            removed_release: removed.into(),
        };
        assert_eq!(
            apis,
            [
                api("", "v1", "componentstatuses", "", ""),
                api(
                    "flowcontrol.apiserver.k8s.io",
                    "v1beta3",
                    "flowschemas",
                    "status",
                    "1.32"
                ),
            ]
        );
        assert_eq!(parse("# nothing here\n").unwrap(), Vec::new());
    }

    #[tokio::test]
    async fn a_forbidden_or_missing_endpoint_is_unavailable_with_the_fix() {
        let fake = FakeCluster::new();
        match scan(&fake).await {
            DeprecatedApiScan::Unavailable(why) => {
                assert!(why.contains("nonResourceURLs"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        fake.state().metrics = Some(METRICS.into());
        assert!(matches!(scan(&fake).await, DeprecatedApiScan::Checked(a) if a.len() == 2));
    }
}
