//! The simulator as a process: `flotilla-sim serve --clusters N --out DIR` started and waited on
//! (it prints `ready`), its `endpoints.json` read, and clients for what it serves: kube-rs per
//! cluster, aws-sdk-eks and aws-sdk-autoscaling, and its statistics and fault endpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls;
use serde::Deserialize;
use serde_json::Value;
use tokio::process::Command;

use crate::bins::bins;
use crate::process::{Proc, Stream};
use crate::{http, Error, Result};

/// One simulated cluster, as `endpoints.json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct SimCluster {
    /// Its name (`sim-1`, …).
    pub name: String,
    /// Its kubeconfig file.
    pub kubeconfig: PathBuf,
    /// Its Kubernetes API URL.
    pub server: String,
    /// Its name in the EKS API.
    pub eks_cluster_name: String,
}

/// `endpoints.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    /// The clusters.
    pub clusters: Vec<SimCluster>,
    /// `GET` for statistics; `POST <stats_url>/reset`.
    pub stats_url: String,
    /// The CA of the Kubernetes API servers.
    pub ca: PathBuf,
    /// The AWS region.
    pub region: String,
    /// The simulated EKS API.
    pub eks_endpoint: String,
    /// The simulated Auto Scaling API.
    pub autoscaling_endpoint: String,
}

/// A running simulator.
#[derive(Debug)]
pub struct Sim {
    /// The process.
    pub proc: Proc,
    /// Its `--out` directory.
    pub dir: PathBuf,
    /// What it serves.
    pub endpoints: Endpoints,
}

/// Dummy static credentials: the simulator does not check signatures.
pub fn dummy_credentials() -> Credentials {
    Credentials::new("AKIDFLOTILLAE2E", "not-a-secret", None, None, "flotilla-e2e")
}

impl Sim {
    /// Starts `flotilla-sim serve --clusters N --out <dir>/sim` with `extra` flags, logging to
    /// `<dir>/logs/sim.log`, and waits for `ready`.
    pub async fn start(dir: &Path, clusters: usize, extra: &[&str]) -> Result<Sim> {
        let out = dir.join("sim");
        let mut cmd = Command::new(&bins()?.sim);
        cmd.arg("serve")
            .arg("--clusters")
            .arg(clusters.to_string())
            .arg("--out")
            .arg(&out)
            .args(extra)
            .env("RUST_LOG", "info");
        let mut proc = Proc::spawn("sim", cmd, &dir.join("logs"))?;
        proc.wait_line(Stream::Stdout, "`ready`", Duration::from_secs(60), |l| {
            l.trim() == "ready"
        })
        .await?;
        let path = out.join("endpoints.json");
        let text =
            std::fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
        let endpoints: Endpoints = serde_json::from_str(&text).map_err(|e| Error::Parse {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(Sim {
            proc,
            dir: out,
            endpoints,
        })
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Result<&SimCluster> {
        self.endpoints
            .clusters
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::Parse {
                what: "endpoints.json".into(),
                detail: format!("no cluster {name}"),
            })
    }

    /// Every cluster's statistics (`GET /stats`): `{"clusters": {"sim-1": {...}}}`.
    pub async fn stats(&self) -> Result<Value> {
        http::get_json(&self.endpoints.stats_url).await
    }

    /// One cluster's statistics.
    pub async fn cluster_stats(&self, name: &str) -> Result<Value> {
        let all = self.stats().await?;
        all.pointer(&format!("/clusters/{name}"))
            .cloned()
            .ok_or_else(|| Error::Parse {
                what: "simulator stats".into(),
                detail: format!("no cluster {name} in {all}"),
            })
    }

    /// Starts measuring afresh (`POST /stats/reset`): counters to zero, baselines = now.
    pub async fn reset_stats(&self) -> Result<Value> {
        let url = format!("{}/reset", self.endpoints.stats_url);
        http::send_json("POST", &url, &Value::Null).await
    }

    /// Replaces a cluster's faults (`PUT /clusters/<name>/faults`), e.g. `{"apiLatency": "200ms"}`.
    pub async fn set_faults(&self, cluster: &str, faults: &Value) -> Result<Value> {
        let base = self
            .endpoints
            .stats_url
            .strip_suffix("/stats")
            .unwrap_or(&self.endpoints.stats_url);
        http::send_json("PUT", &format!("{base}/clusters/{cluster}/faults"), faults).await
    }

    /// A kube-rs client for `cluster` (no client-side retries: tests see the server's answers).
    pub async fn kube(&self, cluster: &str) -> Result<kube::Client> {
        let path = &self.cluster(cluster)?.kubeconfig;
        let err = |e: String| Error::Client {
            what: format!("kube client from {}", path.display()),
            detail: e,
        };
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| err(e.to_string()))?;
        cfg.default_retry = false;
        kube::Client::try_from(cfg).map_err(|e| err(e.to_string()))
    }

    /// The AWS SDK configuration for the simulator (dummy credentials, its region and endpoint,
    /// ring TLS, no retries).
    pub async fn aws(&self) -> aws_config::SdkConfig {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(self.endpoints.region.clone()))
            .credentials_provider(dummy_credentials())
            .endpoint_url(self.endpoints.eks_endpoint.clone())
            .retry_config(RetryConfig::disabled())
            .load()
            .await
    }

    /// An EKS client.
    pub async fn eks(&self) -> aws_sdk_eks::Client {
        aws_sdk_eks::Client::new(&self.aws().await)
    }

    /// An Auto Scaling client.
    pub async fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        let cfg = self.aws().await;
        let conf = aws_sdk_autoscaling::config::Builder::from(&cfg)
            .endpoint_url(self.endpoints.autoscaling_endpoint.clone())
            .build();
        aws_sdk_autoscaling::Client::from_conf(conf)
    }

    /// The clusters file for the coordinator: every simulated cluster with the simulator's EKS
    /// and Auto Scaling endpoints.
    pub fn clusters_file(&self) -> String {
        self.clusters_file_with_labels(&[])
    }

    /// [`Sim::clusters_file`] with labels: `labels[i]` for the `i`th cluster (`sim-1` first);
    /// clusters past the end of `labels` get none.
    pub fn clusters_file_with_labels(&self, labels: &[BTreeMap<String, String>]) -> String {
        let mut yaml = String::from("clusters:\n");
        for (i, c) in self.endpoints.clusters.iter().enumerate() {
            yaml.push_str(&format!(
                "  - name: {}\n    region: {}\n    eksClusterName: {}\n    eksEndpointUrl: {}\n    autoscalingEndpointUrl: {}\n",
                c.name,
                self.endpoints.region,
                c.eks_cluster_name,
                self.endpoints.eks_endpoint,
                self.endpoints.autoscaling_endpoint
            ));
            if let Some(labels) = labels.get(i).filter(|l| !l.is_empty()) {
                yaml.push_str("    labels:\n");
                for (k, v) in labels {
                    yaml.push_str(&format!("      {k}: {v:?}\n"));
                }
            }
        }
        yaml
    }
}
