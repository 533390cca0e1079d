//! Kubernetes versions as the upgrade deals with them: a `major.minor` ([`MinorVersion`]) read
//! from EKS (`1.33`), the API server or a kubelet (`v1.33.4-eks-1234567`), and add-on versions
//! (`v1.11.4-eksbuild.2`) compared by their numbers.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::UpgradeError;

/// A Kubernetes `major.minor`, e.g. `1.34`. Serialised as that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinorVersion {
    /// The major version (1).
    pub major: u32,
    /// The minor version.
    pub minor: u32,
}

impl MinorVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        MinorVersion { major, minor }
    }

    /// Parses a target as an operator writes it: `1.34` (a leading `v` is accepted). Patch
    /// versions are refused: EKS upgrades by minor.
    pub fn parse(s: &str) -> Result<Self, UpgradeError> {
        let bad = |reason: &str| UpgradeError::InvalidVersion {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let t = s.trim().trim_start_matches('v');
        let mut parts = t.split('.');
        let (Some(major), Some(minor), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(
                "write a Kubernetes minor version as MAJOR.MINOR, e.g. \"1.34\"",
            ));
        };
        let num = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        };
        match (num(major), num(minor)) {
            (Some(1), Some(minor)) => Ok(MinorVersion::new(1, minor)),
            (Some(_), Some(_)) => Err(bad("only Kubernetes 1.x exists")),
            _ => Err(bad(
                "write a Kubernetes minor version as MAJOR.MINOR, e.g. \"1.34\"",
            )),
        }
    }

    /// Reads the minor out of any Kubernetes version string: `1.33`, `v1.33.4`,
    /// `v1.33.4-eks-1234567`, `1.33.5-20250101`. `None` when there is none.
    pub fn of_kubernetes(s: &str) -> Option<Self> {
        let t = s.trim().trim_start_matches('v');
        let mut it = t.split(['.', '-', '+']);
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some(MinorVersion::new(major, minor))
    }

    /// The next minor.
    pub fn next(self) -> Self {
        MinorVersion::new(self.major, self.minor + 1)
    }

    /// The previous minor (`None` for `x.0`).
    pub fn prev(self) -> Option<Self> {
        self.minor
            .checked_sub(1)
            .map(|m| MinorVersion::new(self.major, m))
    }

    /// The targets of the hops from `from` to `to`, one minor each (`1.33 → 1.35` is `[1.34,
    /// 1.35]`); empty when `to <= from`.
    pub fn hops(from: MinorVersion, to: MinorVersion) -> Vec<MinorVersion> {
        if from.major != to.major {
            return Vec::new();
        }
        (from.minor + 1..=to.minor)
            .map(|m| MinorVersion::new(from.major, m))
            .collect()
    }
}

impl fmt::Display for MinorVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for MinorVersion {
    type Err = UpgradeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MinorVersion::parse(s)
    }
}

impl Serialize for MinorVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MinorVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MinorVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Compares two add-on (or image) versions such as `v1.11.4-eksbuild.2` and
/// `v1.33.5-minimal-eksbuild.1`: by the dotted numbers, then by the `eksbuild.N` number. `None`
/// when either has no leading dotted number.
pub fn compare_addon_versions(a: &str, b: &str) -> Option<Ordering> {
    fn key(v: &str) -> Option<(Vec<u64>, u64)> {
        let t = v.trim().trim_start_matches('v');
        let core = t.split(['-', '+']).next()?;
        let nums = core
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()?;
        let build = t
            .find("eksbuild.")
            .and_then(|i| {
                t[i + "eksbuild.".len()..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0);
        Some((nums, build))
    }
    Some(key(a)?.cmp(&key(b)?))
}

/// The version tag of a container image (`…/eks/coredns:v1.11.4-eksbuild.2` →
/// `v1.11.4-eksbuild.2`); `None` for a digest-only or untagged image.
pub fn image_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next()?;
    let last = name.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets_and_names_the_fix() {
        assert_eq!(MinorVersion::parse("1.34").unwrap(), MinorVersion::new(1, 34));
        assert_eq!(MinorVersion::parse("v1.35").unwrap().to_string(), "1.35");
        for bad in ["1.34.2", "1", "1.x", "2.1", "", "1.-1", "1.3 4"] {
            let e = MinorVersion::parse(bad).unwrap_err();
            assert_eq!(e.code(), "INVALID_PARAMETER", "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        let v: MinorVersion = serde_json::from_str(r#""1.33""#).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), r#""1.33""#);
        assert!(serde_json::from_str::<MinorVersion>(r#""1.33.1""#).is_err());
    }

    #[test]
    fn reads_minors_of_any_kubernetes_version() {
        for (s, m) in [
            ("1.33", 33),
            ("v1.33.4", 33),
            ("v1.34.1-eks-abc1234", 34),
            ("1.35.0+k3s1", 35),
        ] {
            assert_eq!(
                MinorVersion::of_kubernetes(s),
                Some(MinorVersion::new(1, m)),
                "{s}"
            );
        }
        assert_eq!(MinorVersion::of_kubernetes("latest"), None);
    }

    #[test]
    fn hops_are_one_minor_each() {
        let v = |m| MinorVersion::new(1, m);
        assert_eq!(MinorVersion::hops(v(33), v(35)), [v(34), v(35)]);
        assert!(MinorVersion::hops(v(35), v(35)).is_empty());
        assert!(MinorVersion::hops(v(35), v(33)).is_empty());
        assert_eq!(v(33).next(), v(34));
        assert_eq!(v(0).prev(), None);
    }

    #[test]
    fn addon_versions_compare_by_numbers_then_build() {
        use Ordering::*;
        let c = compare_addon_versions;
        assert_eq!(c("v1.11.4-eksbuild.2", "v1.12.3-eksbuild.1"), Some(Less));
        assert_eq!(c("v1.12.3-eksbuild.2", "v1.12.3-eksbuild.1"), Some(Greater));
        assert_eq!(c("v1.33.5-minimal-eksbuild.1", "v1.33.5-eksbuild.1"), Some(Equal));
        assert_eq!(c("v1.9.0", "v1.10.0"), Some(Less));
        assert_eq!(c("latest", "v1.0"), None);
        assert_eq!(
            image_tag("602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.11.4-eksbuild.2"),
            Some("v1.11.4-eksbuild.2")
        );
        assert_eq!(image_tag("localhost:5000/kube-proxy"), None);
        assert_eq!(image_tag("repo/img:v1@sha256:abc"), Some("v1"));
    }
}
