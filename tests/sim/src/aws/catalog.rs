//! The simulated EKS add-on catalog: which versions of `vpc-cni`, `coredns` and `kube-proxy`
//! exist, which Kubernetes minors each is compatible with, and which one is the default per minor
//! (what DescribeAddonVersions answers). Version strings follow the real catalog's pattern and the
//! images the scenario's kube-system workloads run; the list itself is a plausible subset, not a
//! copy of the live catalog.

use crate::scenario::{kubelet_version, SUPPORTED_MINORS};

/// Names of the add-ons the simulator knows.
pub const ADDONS: [&str; 3] = ["coredns", "kube-proxy", "vpc-cni"];

/// One version of an add-on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogVersion {
    /// E.g. `v1.20.4-eksbuild.1`.
    pub version: String,
    /// Kubernetes minors this version runs on.
    pub compatible: Vec<u32>,
    /// Minors for which this is the default version.
    pub default_for: Vec<u32>,
}

impl CatalogVersion {
    /// Whether the version runs on Kubernetes 1.`minor`.
    pub fn compatible_with(&self, minor: u32) -> bool {
        self.compatible.contains(&minor)
    }
}

fn range(lo: u32, hi: u32) -> Vec<u32> {
    (lo..=hi).filter(|m| SUPPORTED_MINORS.contains(m)).collect()
}

/// The patch release of the EKS kube-proxy / kubelet builds for 1.`minor` (`5` for 1.33).
fn patch_of(minor: u32) -> String {
    kubelet_version(minor)
        .trim_start_matches('v')
        .split(['.', '-'])
        .nth(2)
        .unwrap_or("0")
        .to_string()
}

/// Every version of `addon`, newest first; empty for an unknown add-on.
pub fn versions(addon: &str) -> Vec<CatalogVersion> {
    let lo = *SUPPORTED_MINORS.start();
    let hi = *SUPPORTED_MINORS.end();
    let v = |version: String, compatible: Vec<u32>, default_for: Vec<u32>| CatalogVersion {
        version,
        compatible,
        default_for,
    };
    match addon {
        "vpc-cni" => vec![
            v("v1.20.4-eksbuild.1".into(), range(lo, hi), range(lo, hi)),
            v("v1.19.6-eksbuild.7".into(), range(lo, hi), vec![]),
        ],
        "coredns" => vec![
            v("v1.12.4-eksbuild.1".into(), range(34, 36), range(35, 36)),
            v("v1.12.3-eksbuild.1".into(), range(33, 35), vec![34]),
            v("v1.11.4-eksbuild.2".into(), range(31, 34), range(0, 33)),
        ],
        "kube-proxy" => (lo..=hi)
            .rev()
            .map(|m| {
                v(
                    format!("v1.{m}.{}-eksbuild.1", patch_of(m)),
                    range(m, m + 1),
                    vec![m],
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The default version of `addon` for Kubernetes 1.`minor`.
pub fn default_version(addon: &str, minor: u32) -> Option<String> {
    versions(addon)
        .into_iter()
        .find(|v| v.default_for.contains(&minor))
        .map(|v| v.version)
}

/// The catalog entry of `addon` at `version`.
pub fn find(addon: &str, version: &str) -> Option<CatalogVersion> {
    versions(addon).into_iter().find(|v| v.version == version)
}

/// The container image an add-on version runs as, in `region` (what the kube-system workload's
/// first container is set to when the add-on is updated).
pub fn image(addon: &str, version: &str, region: &str) -> Option<String> {
    let ecr = format!("602401143452.dkr.ecr.{region}.amazonaws.com");
    match addon {
        "vpc-cni" => Some(format!("{ecr}/amazon-k8s-cni:{version}")),
        "coredns" => Some(format!("{ecr}/eks/coredns:{version}")),
        "kube-proxy" => Some(format!(
            "{ecr}/eks/kube-proxy:{}",
            version.replacen("-eksbuild", "-minimal-eksbuild", 1)
        )),
        _ => None,
    }
}

/// The kube-system workload an add-on manages: (kind is DaemonSet?, name).
pub fn workload(addon: &str) -> Option<(bool, &'static str)> {
    match addon {
        "vpc-cni" => Some((true, "aws-node")),
        "kube-proxy" => Some((true, "kube-proxy")),
        "coredns" => Some((false, "coredns")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_minor_has_one_default_per_addon() {
        for addon in ADDONS {
            for m in SUPPORTED_MINORS {
                let defaults = versions(addon)
                    .iter()
                    .filter(|v| v.default_for.contains(&m))
                    .count();
                assert_eq!(defaults, 1, "{addon} 1.{m}");
                let d = default_version(addon, m).unwrap();
                assert!(find(addon, &d).unwrap().compatible_with(m));
            }
        }
    }

    #[test]
    fn images_match_the_scenario_workloads() {
        assert_eq!(
            image("kube-proxy", "v1.33.5-eksbuild.1", "us-west-2").unwrap(),
            "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/kube-proxy:v1.33.5-minimal-eksbuild.1"
        );
        assert_eq!(default_version("kube-proxy", 33).unwrap(), "v1.33.5-eksbuild.1");
        assert_eq!(default_version("coredns", 33).unwrap(), "v1.11.4-eksbuild.2");
    }
}
