//! The API server's `/metrics` (Prometheus text format): `apiserver_requested_deprecated_apis`,
//! the gauge the kube-apiserver sets to 1 for each deprecated API a client has called since it
//! started, labelled with the release that removes it.

use std::fmt::Write;

use crate::scenario::eks::DeprecatedApiRequestSpec;

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics text of an API server at 1.`minor` whose clients call `requests`. An API the
/// server no longer serves (removed at or before `minor`) is answered 404 and not counted.
pub fn render(minor: u32, requests: &[DeprecatedApiRequestSpec]) -> String {
    let mut lines: Vec<String> = requests
        .iter()
        .filter(|r| r.removed_release.minor() > minor)
        .filter_map(|r| {
            let p = r.parts()?;
            Some(format!(
                "apiserver_requested_deprecated_apis{{group=\"{}\",removed_release=\"{}\",resource=\"{}\",subresource=\"{}\",version=\"{}\"}} 1",
                p.group, r.removed_release, p.resource, p.subresource, p.version
            ))
        })
        .collect();
    lines.sort();
    lines.dedup();
    let mut out = String::from(
        "# HELP apiserver_requested_deprecated_apis [STABLE] Gauge of deprecated APIs that have been requested, broken out by API group, version, resource, subresource, and removed_release.\n\
         # TYPE apiserver_requested_deprecated_apis gauge\n",
    );
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::KubeVersion;

    fn req(api: &str, removed: u32) -> DeprecatedApiRequestSpec {
        DeprecatedApiRequestSpec {
            api: api.into(),
            removed_release: KubeVersion::new(removed),
            replaced_with: None,
            user_agent: "kubectl".into(),
        }
    }

    #[test]
    fn served_deprecated_apis_are_counted_and_removed_ones_are_not() {
        let text = render(
            33,
            &[
                req("/apis/resource.k8s.io/v1beta1/resourceclaims", 34),
                req(
                    "/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas/status",
                    36,
                ),
                req("/apis/resource.k8s.io/v1beta1/resourceclaims", 34),
            ],
        );
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "apiserver_requested_deprecated_apis{group=\"flowcontrol.apiserver.k8s.io\",removed_release=\"1.36\",resource=\"flowschemas\",subresource=\"status\",version=\"v1beta3\"} 1",
                "apiserver_requested_deprecated_apis{group=\"resource.k8s.io\",removed_release=\"1.34\",resource=\"resourceclaims\",subresource=\"\",version=\"v1beta1\"} 1",
            ]
        );
        // After the upgrade to 1.34 the v1beta1 API is gone: its calls fail and are not counted.
        let after = render(34, &[req("/apis/resource.k8s.io/v1beta1/resourceclaims", 34)]);
        assert!(!after.contains("resourceclaims"), "{after}");
        assert!(after.contains("# TYPE apiserver_requested_deprecated_apis gauge"));
    }
}
