//! The clusters file `flotilla-coordinator serve --clusters FILE` reads: every cluster the
//! coordinator manages, where its EKS API is and as whom to call it, and the labels rollouts select
//! on. Errors name the file, the entry (by index and name) and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::eks::aws::EksClusterConfig;
use crate::selector::{validate_key, validate_value};
use crate::store::ClusterRecord;

/// Errors reading the clusters file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape, or a value is invalid.
    #[error("{}: {at}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where: `clusters[1] (sim-2).region`, or `clusters` for the document.
        at: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// One cluster, as written in the file (camelCase keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Flotilla's name for the cluster: the name in its agent's certificate (a DNS-1123 label).
    pub name: String,
    /// The AWS region, e.g. `us-east-1`.
    pub region: String,
    /// The cluster's name in the EKS API.
    pub eks_cluster_name: String,
    /// A role to assume through STS for this cluster's EKS and Auto Scaling calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// An EKS endpoint other than the region's (a VPC endpoint, or the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks_endpoint_url: Option<String>,
    /// An Auto Scaling endpoint other than the region's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling_endpoint_url: Option<String>,
    /// Labels rollout stages select on, e.g. `env: prod`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ClusterConfig {
    /// Where and as whom to reach this cluster's EKS control plane.
    pub fn eks(&self) -> EksClusterConfig {
        EksClusterConfig {
            region: self.region.clone(),
            eks_cluster_name: self.eks_cluster_name.clone(),
            role_arn: self.role_arn.clone(),
            eks_endpoint_url: self.eks_endpoint_url.clone(),
            autoscaling_endpoint_url: self.autoscaling_endpoint_url.clone(),
        }
    }

    /// The store's record of this cluster (not connected, never seen).
    pub fn record(&self) -> ClusterRecord {
        ClusterRecord {
            name: self.name.clone(),
            region: self.region.clone(),
            eks_cluster_name: self.eks_cluster_name.clone(),
            labels: self.labels.clone(),
            connected: false,
            last_seen: None,
        }
    }

    /// Checks every field; `Err((field, message))` names the first bad one.
    fn validate(&self) -> Result<(), (String, String)> {
        check_name(&self.name).map_err(|m| ("name".to_string(), m))?;
        let nonempty = |field: &str, v: &str| {
            if v.trim().is_empty() {
                Err((field.to_string(), "must not be empty".to_string()))
            } else {
                Ok(())
            }
        };
        nonempty("region", &self.region)?;
        nonempty("eksClusterName", &self.eks_cluster_name)?;
        if let Some(r) = &self.role_arn {
            if !r.starts_with("arn:") {
                return Err((
                    "roleArn".into(),
                    format!("{r:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
                ));
            }
        }
        for (field, url) in [
            ("eksEndpointUrl", &self.eks_endpoint_url),
            ("autoscalingEndpointUrl", &self.autoscaling_endpoint_url),
        ] {
            if let Some(u) = url {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err((
                        field.into(),
                        format!("{u:?} is not an http(s) URL, e.g. http://127.0.0.1:4566"),
                    ));
                }
            }
        }
        for (k, v) in &self.labels {
            validate_key(k).map_err(|m| (format!("labels.{k}"), format!("label key {k:?}: {m}")))?;
            validate_value(v).map_err(|m| (format!("labels.{k}"), format!("label value {v:?}: {m}")))?;
        }
        Ok(())
    }
}

/// The clusters file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClustersFile {
    /// The clusters, in file order.
    pub clusters: Vec<ClusterConfig>,
}

impl ClustersFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks the file's text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let invalid = |at: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            at,
            message,
        };
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| invalid("document".into(), e.to_string()))?;
        let serde_yaml::Value::Mapping(mut top) = doc else {
            return Err(invalid(
                "document".into(),
                "expected a mapping with a `clusters:` list".into(),
            ));
        };
        let entries = match top.remove("clusters") {
            Some(serde_yaml::Value::Sequence(entries)) => entries,
            Some(serde_yaml::Value::Null) | None => {
                return Err(invalid(
                    "clusters".into(),
                    "missing: list the clusters, e.g. `clusters: [{name: prod-1, region: us-east-1, eksClusterName: prod-1}]`".into(),
                ))
            }
            Some(_) => return Err(invalid("clusters".into(), "must be a list".into())),
        };
        if let Some((k, _)) = top.iter().next() {
            let key = serde_yaml::to_string(k).unwrap_or_default();
            return Err(invalid(
                key.trim().to_string(),
                "unknown key; the file has only `clusters`".into(),
            ));
        }
        let mut clusters = Vec::with_capacity(entries.len());
        let mut seen = BTreeSet::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let name = entry.get("name").and_then(|n| n.as_str()).map(str::to_string);
            let at = |field: &str| match (&name, field.is_empty()) {
                (Some(n), true) => format!("clusters[{i}] ({n})"),
                (Some(n), false) => format!("clusters[{i}] ({n}).{field}"),
                (None, true) => format!("clusters[{i}]"),
                (None, false) => format!("clusters[{i}].{field}"),
            };
            let c: ClusterConfig = serde_path_to_error::deserialize(entry).map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." { String::new() } else { field };
                invalid(at(&field), e.into_inner().to_string())
            })?;
            c.validate()
                .map_err(|(field, message)| invalid(at(&field), message))?;
            if !seen.insert(c.name.clone()) {
                return Err(invalid(
                    at("name"),
                    format!("duplicate cluster name {:?}; every name must be unique", c.name),
                ));
            }
            clusters.push(c);
        }
        Ok(ClustersFile { clusters })
    }

    /// The cluster named `name`.
    pub fn get(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// A cluster name is a DNS-1123 label, as agent certificates require.
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS-1123 label (1-63 lowercase letters, digits or '-', starting and \
             ending with a letter or digit), as the agent's certificate names it, e.g. prod-eu-1"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClustersFile, String> {
        ClustersFile::parse(Path::new("clusters.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_issue_example_with_labels() {
        let f = parse(
            "clusters:\n  - name: sim-1\n    region: us-east-1\n    eksClusterName: sim-1\n    roleArn: arn:aws:iam::111122223333:role/flotilla\n    eksEndpointUrl: http://127.0.0.1:4566\n    autoscalingEndpointUrl: http://127.0.0.1:4566\n    labels: {env: dev, team/x: a}\n  - name: sim-2\n    region: us-east-1\n    eksClusterName: eks-2\n",
        )
        .unwrap();
        assert_eq!(f.clusters.len(), 2);
        let c = f.get("sim-1").unwrap();
        assert_eq!(c.eks().eks_endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(c.labels["env"], "dev");
        assert_eq!(f.get("sim-2").unwrap().record().eks_cluster_name, "eks-2");
    }

    #[test]
    fn errors_name_the_entry_and_the_field() {
        let e = parse("clusters:\n  - name: a\n    region: r\n    eksClusterName: a\n  - name: b\n    eksClusterName: b\n").unwrap_err();
        assert!(e.contains("clusters[1] (b)") && e.contains("region"), "{e}");
        let e = parse("clusters:\n  - name: a\n    region: r\n    eksClusterName: a\n    roleArn: nope\n")
            .unwrap_err();
        assert!(e.contains("clusters[0] (a).roleArn") && e.contains("ARN"), "{e}");
        let e = parse("clusters:\n  - name: a\n    region: r\n    eksClusterName: a\n    regoin: x\n")
            .unwrap_err();
        assert!(e.contains("clusters[0] (a)") && e.contains("regoin"), "{e}");
        let e = parse("clusters:\n  - name: Bad_Name\n    region: r\n    eksClusterName: a\n").unwrap_err();
        assert!(
            e.contains("clusters[0] (Bad_Name).name") && e.contains("DNS-1123"),
            "{e}"
        );
        let e = parse("clusters:\n  - name: a\n    region: r\n    eksClusterName: a\n    labels: {\"env\": \"pr od\"}\n").unwrap_err();
        assert!(e.contains("labels.env"), "{e}");
        let e = parse(
            "clusters:\n  - name: a\n    region: r\n    eksClusterName: a\n    eksEndpointUrl: localhost:1\n",
        )
        .unwrap_err();
        assert!(e.contains("eksEndpointUrl"), "{e}");
        let e = parse("cluster: []\n").unwrap_err();
        assert!(e.contains("clusters"), "{e}");
        let e = parse("clusters:\n  - region: r\n").unwrap_err();
        assert!(e.contains("clusters[0]") && e.contains("name"), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e = parse("clusters:\n  - {name: a, region: r, eksClusterName: a}\n  - {name: a, region: r, eksClusterName: b}\n").unwrap_err();
        assert!(
            e.contains("clusters[1] (a).name") && e.contains("duplicate"),
            "{e}"
        );
    }
}
