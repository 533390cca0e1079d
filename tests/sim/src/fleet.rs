//! A running simulated fleet: the clusters, their control loops, the HTTPS API listener, the
//! plain-HTTP statistics endpoint, and the kubeconfig / endpoints.json files for clients.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::aws::Aws;
use crate::cluster::Cluster;
use crate::controllers::Behaviour;
use crate::error::SimError;
use crate::object::Object;
use crate::scenario::{self, Scenario};
use crate::server::{self, Clusters};
use crate::tls::Certificates;

/// What one cluster starts with.
#[derive(Debug, Clone)]
pub struct ClusterSeed {
    /// Cluster name.
    pub name: String,
    /// Kubernetes minor version served, e.g. `"33"`.
    pub minor: String,
    /// Initial objects.
    pub objects: Vec<Object>,
    /// Delays and faults.
    pub behaviour: Behaviour,
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// HTTPS API listener (port 0: any free port).
    pub listen: SocketAddr,
    /// Plain-HTTP statistics listener (port 0: any free port).
    pub stats_listen: SocketAddr,
    /// Past changes kept per kind and cluster for watches that resume (older ones get 410 Gone).
    pub watch_history: usize,
    /// Plain-HTTP listener of the simulated EKS and Auto Scaling APIs (fleets started from a
    /// scenario; port 0: any free port).
    pub aws_listen: SocketAddr,
}

impl Default for FleetOptions {
    fn default() -> FleetOptions {
        FleetOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            stats_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 1000,
            aws_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// A running fleet. Dropping it without [`Fleet::shutdown`] leaves its tasks to end with the runtime.
#[derive(Debug)]
pub struct Fleet {
    clusters: Vec<Arc<Cluster>>,
    by_name: Clusters,
    /// `https://127.0.0.1:PORT`; each cluster is served under `/clusters/<name>`.
    pub server_url: String,
    /// `http://127.0.0.1:PORT/stats`.
    pub stats_url: String,
    /// The CA that signed the server certificate, PEM.
    pub ca_pem: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    aws: Option<Arc<Aws>>,
    /// `http://127.0.0.1:PORT` of the simulated EKS and Auto Scaling APIs (fleets started from a scenario).
    pub aws_url: Option<String>,
}

impl Fleet {
    /// Starts every cluster and both listeners.
    pub async fn start(seeds: Vec<ClusterSeed>, opts: FleetOptions) -> Result<Fleet, SimError> {
        let certs = Certificates::generate()?;
        let tls = certs.server_config()?;
        let listener = server::bind_listener(opts.listen).await?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: opts.listen.to_string(),
            source,
        })?;
        let stats_listener = server::bind_listener(opts.stats_listen).await?;
        let stats_addr = stats_listener.local_addr().map_err(|source| SimError::Bind {
            addr: opts.stats_listen.to_string(),
            source,
        })?;
        let (shutdown, rx) = watch::channel(false);
        let mut clusters = Vec::with_capacity(seeds.len());
        let mut tasks = Vec::new();
        for seed in seeds {
            let c = Cluster::new(
                &seed.name,
                &seed.minor,
                seed.objects,
                seed.behaviour,
                opts.watch_history,
            );
            tasks.push(tokio::spawn(c.clone().run(rx.clone())));
            clusters.push(c);
        }
        let by_name: Clusters = Arc::new(
            clusters
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect::<HashMap<_, _>>(),
        );
        tasks.push(tokio::spawn(server::serve(
            listener,
            tls,
            by_name.clone(),
            rx.clone(),
        )));
        tasks.push(tokio::spawn(serve_stats(stats_listener, by_name.clone(), rx)));
        info!(clusters = clusters.len(), %addr, %stats_addr, "simulated fleet serving");
        Ok(Fleet {
            clusters,
            by_name,
            server_url: format!("https://{addr}"),
            stats_url: format!("http://{stats_addr}/stats"),
            ca_pem: certs.ca_pem,
            shutdown,
            tasks,
            aws: None,
            aws_url: None,
        })
    }

    /// Starts `clusters` clusters (`sim-1` … `sim-N`) from a scenario.
    pub async fn start_scenario(
        scenario: &Scenario,
        clusters: usize,
        opts: FleetOptions,
    ) -> Result<Fleet, SimError> {
        let names: Vec<String> = (1..=clusters).map(|i| format!("sim-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let unknown = scenario.unknown_overrides(&refs);
        if !unknown.is_empty() {
            return Err(SimError::Invalid(format!(
                "scenario overrides name clusters that are not started ({}); this fleet has sim-1 … sim-{clusters}",
                unknown.join(", ")
            )));
        }
        let seeds = names.iter().map(|n| seed(scenario, n)).collect();
        let aws_listen = opts.aws_listen;
        let mut fleet = Fleet::start(seeds, opts).await?;
        fleet.start_aws(scenario, &names, aws_listen).await?;
        Ok(fleet)
    }

    /// Starts the simulated EKS and Auto Scaling APIs for this fleet's clusters.
    async fn start_aws(
        &mut self,
        scenario: &Scenario,
        names: &[String],
        listen: SocketAddr,
    ) -> Result<(), SimError> {
        let listener = server::bind_listener(listen).await?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let aws = Aws::new(
            scenario,
            names,
            self.by_name.clone(),
            &self.server_url,
            &self.ca_pem,
            self.shutdown.subscribe(),
        );
        self.tasks.push(tokio::spawn(crate::aws::http::serve(
            listener,
            aws.clone(),
            self.shutdown.subscribe(),
        )));
        info!(%addr, region = %aws.region, "simulated EKS and Auto Scaling serving");
        self.aws_url = Some(format!("http://{addr}"));
        self.aws = Some(aws);
        Ok(())
    }

    /// The simulated AWS APIs (fleets started from a scenario).
    pub fn aws(&self) -> Option<&Arc<Aws>> {
        self.aws.as_ref()
    }

    /// The clusters, in order.
    pub fn clusters(&self) -> &[Arc<Cluster>] {
        &self.clusters
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.by_name.get(name)
    }

    /// The API server URL of one cluster.
    pub fn cluster_url(&self, name: &str) -> String {
        format!("{}/clusters/{name}", self.server_url)
    }

    /// A kubeconfig for one cluster (works with kubectl and kube-rs as is).
    pub fn kubeconfig(&self, name: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\ncurrent-context: {name}\nusers:\n- name: {name}-admin\n  user:\n    token: {token}\npreferences: {{}}\n",
            server = self.cluster_url(name),
            token = crate::server::token_of(name),
        )
    }

    /// Writes `kubeconfig-<cluster>.yaml` for each cluster, `ca.pem` and `endpoints.json` into `dir`.
    pub fn write_files(&self, dir: &Path) -> Result<PathBuf, SimError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SimError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut entries = Vec::new();
        for c in &self.clusters {
            let path = dir.join(format!("kubeconfig-{}.yaml", c.name));
            std::fs::write(&path, self.kubeconfig(&c.name)).map_err(io(&path))?;
            let mut entry = json!({"name": c.name, "kubeconfig": path.display().to_string(), "server": self.cluster_url(&c.name)});
            if let (Some(_), Value::Object(e)) = (&self.aws, &mut entry) {
                e.insert("eks_cluster_name".into(), json!(c.name));
            }
            entries.push(entry);
        }
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &self.ca_pem).map_err(io(&ca))?;
        let endpoints = dir.join("endpoints.json");
        let mut doc =
            json!({"clusters": entries, "stats_url": self.stats_url, "ca": ca.display().to_string()});
        if let (Some(aws), Some(url), Value::Object(d)) = (&self.aws, &self.aws_url, &mut doc) {
            d.insert("region".into(), json!(aws.region));
            d.insert("eks_endpoint".into(), json!(url));
            d.insert("autoscaling_endpoint".into(), json!(url));
        }
        std::fs::write(&endpoints, serde_json::to_vec_pretty(&doc).unwrap_or_default())
            .map_err(io(&endpoints))?;
        Ok(endpoints)
    }

    /// The statistics of every cluster, as served at `stats_url`.
    pub fn stats(&self) -> Value {
        stats_doc(&self.by_name)
    }

    /// Waits until every cluster has [settled](Cluster::settled), or fails naming those that did not.
    pub async fn wait_settled(&self, timeout: std::time::Duration) -> Result<(), SimError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending: Vec<&str> = self
                .clusters
                .iter()
                .filter(|c| !c.settled())
                .map(|c| c.name.as_str())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let shown = pending.iter().take(10).copied().collect::<Vec<_>>().join(", ");
                return Err(SimError::Invalid(format!(
                    "{} cluster(s) not settled after {timeout:?}: {shown}",
                    pending.len()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops serving and every control loop.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// What cluster `name` starts with under `scenario`: objects, version, delays and faults.
pub fn seed(scenario: &Scenario, name: &str) -> ClusterSeed {
    let cs = scenario.for_cluster(name);
    let timing = cs.timing();
    let mut behaviour = Behaviour {
        pod_start_delay: timing.pod_start_delay,
        readiness_delay: timing.pod_readiness_delay,
        termination: timing.termination,
        node_ready_delay: timing.node_ready_delay,
        api_latency: cs.api_latency(),
        api_error_rate: cs.api_error_rate(),
        deprecated_api_requests: cs.eks.deprecated_api_requests.clone(),
        ..Behaviour::default()
    };
    for d in cs.deployments.iter().filter(|d| d.readiness_delay.is_some()) {
        behaviour.readiness_overrides.insert(
            (d.namespace.clone(), d.name.clone()),
            cs.readiness_delay(&d.namespace, &d.name),
        );
    }
    behaviour.never_ready = cs
        .faults()
        .never_ready
        .iter()
        .map(|f| (f.namespace.clone(), f.deployment.clone()))
        .collect();
    for group in &cs.node_groups {
        for index in (0..group.nodes).filter(|i| !cs.node_becomes_ready(&group.name, *i)) {
            behaviour
                .not_ready_nodes
                .push(scenario::node_name(name, &group.name, &cs.region, index));
        }
    }
    // The cluster has been up for a while: objects are an hour old, nodes long since Ready.
    let created = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
    ClusterSeed {
        name: name.to_string(),
        minor: cs.kubernetes_version.minor().to_string(),
        objects: scenario::build_cluster(&cs, name, created),
        behaviour,
    }
}

fn stats_doc(clusters: &Clusters) -> Value {
    let mut names: Vec<&String> = clusters.keys().collect();
    names.sort();
    let map: serde_json::Map<String, Value> = names
        .into_iter()
        .map(|n| {
            (
                n.clone(),
                serde_json::to_value(clusters[n].lock().stats().stats()).unwrap_or(Value::Null),
            )
        })
        .collect();
    json!({ "clusters": map })
}

async fn serve_stats(listener: TcpListener, clusters: Clusters, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let clusters = clusters.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let clusters = clusters.clone();
                async move { Ok::<_, Infallible>(stats_route(&clusters, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                debug!(error = %e, "stats connection ended");
            }
        });
    }
}

/// The statistics and fault-control endpoint: `GET /stats`, `POST /stats/reset`,
/// `PUT /clusters/<name>/faults` (body: a scenario `faults` section, as JSON).
async fn stats_route(clusters: &Clusters, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, v: Value| {
        let mut r = Response::new(Full::new(Bytes::from(
            serde_json::to_vec_pretty(&v).unwrap_or_default(),
        )));
        *r.status_mut() = code;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats") => reply(StatusCode::OK, stats_doc(clusters)),
        (&Method::POST, "/stats/reset") => {
            for c in clusters.values() {
                c.lock().stats_mut().reset();
            }
            reply(StatusCode::OK, stats_doc(clusters))
        }
        (&Method::PUT, path) if path.starts_with("/clusters/") && path.ends_with("/faults") => {
            let name = path
                .trim_start_matches("/clusters/")
                .trim_end_matches("/faults")
                .to_string();
            let Some(cluster) = clusters.get(&name).cloned() else {
                return reply(
                    StatusCode::NOT_FOUND,
                    json!({"error": format!("no cluster named {name:?}")}),
                );
            };
            let body = match http_body_util::BodyExt::collect(req.into_body()).await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": format!("reading the body: {e}")}),
                    )
                }
            };
            let mut de = serde_json::Deserializer::from_slice(&body);
            let faults: scenario::FaultSpec = match serde_path_to_error::deserialize(&mut de) {
                Ok(f) => f,
                Err(e) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": format!("faults.{}: {}", e.path(), e.inner())}),
                    )
                }
            };
            match cluster.set_faults(&faults) {
                Ok(()) => reply(StatusCode::OK, json!({"cluster": name, "faults": faults})),
                Err(e) => reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"error": e})),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "not found: GET /stats, POST /stats/reset, PUT /clusters/<name>/faults"}),
        ),
    }
}
