//! `flotilla-coordinator serve` as a library: opens the store, connects one EKS client per
//! configured cluster, resumes every unfinished operation and rollout, and serves `Fleet`, `AgentGateway`,
//! gRPC health and reflection over mTLS (client certificates from our CA required). The binary,
//! the demo and the tests all start it through [`Coordinator::start`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::fleet::v1::agent_gateway_server::AgentGatewayServer;
use flotilla_proto::fleet::v1::fleet_server::FleetServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::ca::tls::{self, TlsError};
use crate::config::ClustersFile;
use crate::eks::aws::{AwsConnector, AwsEks, ConnectOptions};
use crate::eks::EksError;
use crate::engine::rollouts::{RolloutError, Rollouts};
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::fleet::FleetService;
use crate::metrics::CoordinatorMetrics;
use crate::sessions::gateway::Gateway;
use crate::sessions::Sessions;
use crate::store::{SledStore, Store, StoreError};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open calls (watches, agent streams) to end before cutting them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening the store waits for a previous process (or instance) to release its lock.
const STORE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Errors starting or stopping the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS files are missing or unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error("store at {}: {source}", .dir.display())]
    Store {
        /// The data dir.
        dir: PathBuf,
        /// The error.
        #[source]
        source: StoreError,
    },
    /// A cluster's EKS client could not be built.
    #[error("cluster {cluster}: {source}")]
    Eks {
        /// The cluster.
        cluster: String,
        /// The error.
        #[source]
        source: EksError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Resuming operations failed.
    #[error("resuming operations: {0}")]
    Engine(#[from] EngineError),
    /// Resuming rollouts failed.
    #[error("resuming rollouts: {0}")]
    Rollouts(#[from] RolloutError),
    /// gRPC reflection could not be built from the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(String),
}

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port; see [`CoordinatorHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The sled data dir.
    pub data_dir: PathBuf,
    /// The CA dir: `ca.pem`, `coordinator.pem`, `coordinator-key.pem`.
    pub tls_dir: PathBuf,
    /// The clusters the coordinator manages.
    pub clusters: ClustersFile,
    /// The agents' heartbeat interval; a session silent for three of them is dropped.
    pub heartbeat_interval: Duration,
    /// How operations wait: for their retries, and on EKS.
    pub engine: EngineOptions,
    /// How the EKS and Auto Scaling clients connect (retries, timeouts, credentials).
    pub eks: ConnectOptions,
    /// Where the coordinator counts what it does (serve its registry on `--metrics-listen`).
    pub metrics: CoordinatorMetrics,
}

impl ServeOptions {
    /// Options with production defaults: 10 s heartbeats, EKS polls from 5 s to 60 s, standard AWS credentials.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, tls_dir: PathBuf, clusters: ClustersFile) -> Self {
        ServeOptions {
            listen,
            data_dir,
            tls_dir,
            clusters,
            heartbeat_interval: Duration::from_secs(10),
            engine: EngineOptions::default(),
            eks: ConnectOptions::default(),
            metrics: CoordinatorMetrics::new(),
        }
    }
}

/// The coordinator server.
#[derive(Debug)]
pub struct Coordinator;

/// A running coordinator.
pub struct CoordinatorHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    acceptor: JoinHandle<()>,
    engine: Engine<AwsEks>,
    rollouts: Rollouts<AwsEks>,
    sessions: Arc<Sessions>,
    store: Arc<dyn Store>,
    health: tonic_health::server::HealthReporter,
}

impl std::fmt::Debug for CoordinatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Starts serving; returns once the listener is bound and every unfinished operation resumed.
    pub async fn start(opts: ServeOptions) -> Result<CoordinatorHandle, ServerError> {
        let tls_config = tls::server_config(&opts.tls_dir)?;
        let store: Arc<dyn Store> = Arc::new(open_store(&opts.data_dir).await?);
        let records: Vec<_> = opts.clusters.clusters.iter().map(|c| c.record()).collect();
        let writer = store.clone();
        tokio::task::spawn_blocking(move || writer.put_clusters(&records))
            .await
            .map_err(|e| StoreError::backend(std::io::Error::other(e.to_string())))
            .and_then(|r| r)
            .map_err(|source| ServerError::Store {
                dir: opts.data_dir.clone(),
                source,
            })?;
        let mut eks = HashMap::new();
        let mut connector = AwsConnector::new(opts.eks.clone());
        for c in &opts.clusters.clusters {
            let client = connector
                .connect(&c.eks())
                .await
                .map_err(|source| ServerError::Eks {
                    cluster: c.name.clone(),
                    source,
                })?
                .with_metrics(opts.metrics.eks_errors());
            eks.insert(c.name.clone(), Arc::new(client));
        }
        let sessions = Arc::new(Sessions::new());
        let engine = Engine::with_metrics(
            store.clone(),
            eks,
            sessions.clone(),
            opts.engine,
            opts.metrics.clone(),
        );
        let resumed = engine.resume_all().await?;

        let clusters = Arc::new(opts.clusters.clone());
        let rollouts = Rollouts::new(engine.clone(), clusters.clone());
        let resumed_rollouts = rollouts.resume_all().await?;
        let fleet = FleetService::new(
            engine.clone(),
            rollouts.clone(),
            sessions.clone(),
            clusters.clone(),
        );
        let gateway = Gateway::new(
            engine.clone(),
            sessions.clone(),
            clusters.clusters.iter().map(|c| c.name.clone()),
            opts.heartbeat_interval,
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<FleetServer<FleetService<AwsEks>>>().await;
        health.set_serving::<AgentGatewayServer<Gateway<AwsEks>>>().await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(flotilla_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(flotilla_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;

        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: opts.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let (conns, incoming) = mpsc::channel(1024);
        let acceptor = tokio::spawn(accept(
            listener,
            TlsAcceptor::from(tls_config),
            conns,
            stopped.clone(),
        ));
        let mut stopped_rx = stopped;
        let grpc_metrics = opts.metrics.grpc_layer();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .trace_fn(flotilla_proto::telemetry::grpc_server_span)
                .layer(grpc_metrics)
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(FleetServer::new(fleet))
                .add_service(AgentGatewayServer::new(gateway))
                .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
                    let _ = stopped_rx.wait_for(|s| *s).await;
                }),
        );
        tracing::info!(%local_addr, clusters = clusters.clusters.len(), resumed, resumed_rollouts, "coordinator serving");
        Ok(CoordinatorHandle {
            local_addr,
            stop,
            server,
            acceptor,
            engine,
            rollouts,
            sessions,
            store,
            health,
        })
    }
}

impl CoordinatorHandle {
    /// The address the coordinator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine (operations API, updates).
    pub fn engine(&self) -> &Engine<AwsEks> {
        &self.engine
    }

    /// The rollout runner.
    pub fn rollouts(&self) -> &Rollouts<AwsEks> {
        &self.rollouts
    }

    /// The agents' sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Stops gracefully: health turns NOT_SERVING, no new connections, agent streams end (agents
    /// reconnect elsewhere or later), calls get a few seconds to finish, every operation's actor
    /// stops (all state is already persisted), and the store is flushed.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        tracing::info!("coordinator shutting down");
        self.health
            .set_not_serving::<FleetServer<FleetService<AwsEks>>>()
            .await;
        let _ = self.stop.send(true);
        self.sessions.close_all();
        self.rollouts.shutdown().await;
        self.engine.shutdown().await;
        let mut server = self.server;
        let result = match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
            Ok(Ok(r)) => r.map_err(|e| ServerError::Serve(e.to_string())),
            Ok(Err(e)) => Err(ServerError::Serve(e.to_string())),
            Err(_) => {
                server.abort();
                Ok(())
            }
        };
        self.acceptor.abort();
        let store = self.store.clone();
        let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::error!(error = %e, "flushing the store at shutdown failed");
        }
        drop(self.rollouts);
        drop(self.engine);
        drop(self.store);
        result
    }
}

/// Opens the store, waiting a little for a previous owner to release the directory lock.
async fn open_store(dir: &std::path::Path) -> Result<SledStore, ServerError> {
    let deadline = tokio::time::Instant::now() + STORE_LOCK_WAIT;
    loop {
        let d = dir.to_owned();
        let r = tokio::task::spawn_blocking(move || SledStore::open(&d))
            .await
            .map_err(|e| StoreError::backend(std::io::Error::other(e.to_string())))
            .and_then(|r| r);
        match r {
            Err(StoreError::Backend(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(s) => return Ok(s),
            Err(source) => {
                return Err(ServerError::Store {
                    dir: dir.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Accepts TCP connections and runs each TLS handshake in its own task; refused handshakes (no
/// client certificate, another CA, expired) are logged with the peer and the reason.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = stopped.wait_for(|s| *s).await; } => return,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, conns) = (acceptor.clone(), conns.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send(Ok(tls)).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%remote, reason = %e, "refused: TLS handshake failed");
                }
                Err(_) => tracing::warn!(%remote, "refused: TLS handshake timed out"),
            }
        });
    }
}
