//! `Postflight`: every node's kubelet is at the given minor and every Deployment is available.

use serde::Serialize;

use super::{Progress, ProgressSink, StepError, StepKind};
use crate::cluster::Cluster;
use crate::model;

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The minor every kubelet must run, e.g. `1.34`.
    pub minor: String,
}

impl Params {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), StepError> {
        match model::minor_of(&self.minor) {
            Some(m) if m == self.minor.trim().trim_start_matches('v') => Ok(()),
            _ => Err(StepError::invalid(
                "minor",
                format!("`{}` is not a Kubernetes minor; write it as 1.34", self.minor),
            )),
        }
    }
}

/// What the step found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The control plane's version.
    pub version: String,
    /// Nodes checked.
    pub nodes: u32,
    /// Deployments checked.
    pub deployments: u32,
}

/// Checks kubelet minors and Deployment availability once.
pub async fn run<C: Cluster>(
    cluster: &C,
    p: &Params,
    progress: &dyn ProgressSink,
) -> Result<Output, StepError> {
    let want = model::minor_of(&p.minor).unwrap_or_default();
    let version = cluster.version().await?;
    let nodes = cluster.nodes().await?;
    let deployments = cluster.deployments().await?;
    let mut problems = Vec::new();
    for n in &nodes {
        let v = model::kubelet_version(n);
        if model::minor_of(v).as_deref() != Some(want.as_str()) {
            problems.push(format!(
                "node {} kubelet {} is not at {want}",
                model::name(&n.metadata),
                if v.is_empty() { "unknown" } else { v }
            ));
        }
    }
    for d in &deployments {
        let (want_r, avail) = (model::deployment_replicas(d), model::deployment_available(d));
        if avail < want_r {
            problems.push(format!(
                "deployment {} has {avail}/{want_r} available",
                model::key(&d.metadata)
            ));
        }
    }
    let total = (nodes.len() + deployments.len()) as u64;
    progress.report(Progress::new(
        StepKind::Postflight,
        total - problems.len().min(total as usize) as u64,
        total,
        format!("{} problem(s)", problems.len()),
    ));
    if !problems.is_empty() {
        return Err(StepError::PostflightFailed { problems });
    }
    Ok(Output {
        version,
        nodes: nodes.len() as u32,
        deployments: deployments.len() as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::GroupKind;
    use crate::steps::NoProgress;

    #[tokio::test]
    async fn reports_old_kubelets_and_unavailable_deployments() {
        let fake = FakeCluster::new();
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 8000, 30);
        fake.add_deployment("shop", "web", 2, 100);
        let ok = run(&fake, &Params { minor: "1.33".into() }, &NoProgress)
            .await
            .expect("postflight");
        assert_eq!((ok.nodes, ok.deployments), (1, 1));
        fake.state().never_ready.insert("shop/api".into());
        fake.add_deployment("shop", "api", 1, 100);
        let err = run(&fake, &Params { minor: "1.34".into() }, &NoProgress)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("node new-1 kubelet v1.33.4 is not at 1.34"), "{err}");
        assert!(err.contains("deployment shop/api has 0/1 available"), "{err}");
    }

    #[test]
    fn minor_must_look_like_one() {
        assert!(Params { minor: "1.34".into() }.validate().is_ok());
        let err = Params { minor: "134".into() }.validate().unwrap_err().to_string();
        assert!(err.contains("minor") && err.contains("1.34"), "{err}");
    }
}
