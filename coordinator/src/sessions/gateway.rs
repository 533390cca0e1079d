//! `AgentGateway.Connect`: one bidirectional stream per agent. The certificate names the agent's
//! cluster; its Hello (and every later message) must speak for that cluster. Messages from the
//! agent feed the registry (liveness, inventory) and the engine (progress, results); the engine's
//! messages for the agent come back through the registry's queue. A session ends when the stream
//! ends, when no message arrives within three heartbeat intervals, or when a reconnect replaces it.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::agent_gateway_server::AgentGateway;
use futures::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::Sessions;
use crate::auth;
use crate::eks::Eks;
use crate::engine::{DeliverError, Engine};
use crate::metrics::ConnectedAgent;

/// How long an agent has to send its Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The `AgentGateway` service.
pub struct Gateway<E> {
    engine: Engine<E>,
    sessions: Arc<Sessions>,
    clusters: Arc<BTreeSet<String>>,
    heartbeat: Duration,
}

impl<E: Eks + 'static> Gateway<E> {
    /// A gateway accepting agents of `clusters` (the clusters file), expecting a message at least
    /// every `heartbeat` (a session is dropped after three silent intervals).
    pub fn new(
        engine: Engine<E>,
        sessions: Arc<Sessions>,
        clusters: impl IntoIterator<Item = String>,
        heartbeat: Duration,
    ) -> Self {
        Gateway {
            engine,
            sessions,
            clusters: Arc::new(clusters.into_iter().collect()),
            heartbeat,
        }
    }
}

/// Refuses with PermissionDenied, logging who, what and why.
fn refuse(cluster: &str, what: &str, why: String) -> Status {
    tracing::warn!(who = %format!("spiffe://flotilla/agent/{cluster}"), what, reason = %why, "refused");
    Status::permission_denied(why)
}

#[tonic::async_trait]
impl<E: Eks + 'static> AgentGateway for Gateway<E> {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let method = "AgentGateway/Connect";
        let traceparent = auth::traceparent(&request).unwrap_or_default();
        let cluster = auth::agent(&request, method)?;
        if !self.clusters.contains(&cluster) {
            tracing::warn!(%cluster, what = method, reason = "cluster not in the clusters file", "refused");
            return Err(Status::not_found(format!(
                "cluster {cluster} is not in the coordinator's clusters file; add it there (name: {cluster}) and restart the coordinator"
            )));
        }
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no Hello within {}s of connecting",
                    HELLO_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Status::cancelled("stream closed before Hello")),
            Ok(Ok(Some(m))) => m,
        };
        let hello = match first.message {
            Some(pb::agent_message::Message::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "message: the first message of a session must be `hello`",
                ))
            }
        };
        if hello.cluster_id != cluster {
            return Err(refuse(
                &cluster,
                method,
                format!(
                    "hello.cluster_id {:?} is not the cluster in the agent's certificate ({cluster}); an agent may speak only for its own cluster",
                    hello.cluster_id
                ),
            ));
        }
        let opened = self
            .sessions
            .open(&cluster, &hello.agent_version, hello.inventory.clone());
        let session = opened.id;
        let span = tracing::info_span!("session", %cluster, session, traceparent = %traceparent);
        span.in_scope(|| {
            tracing::info!(
                agent_version = %hello.agent_version,
                replaced = opened.replaced,
                running = hello.running.len(),
                "agent connected"
            );
            for r in &hello.running {
                tracing::info!(operation = %r.operation_id, step = %r.step_id, attempt = r.attempt, "agent still runs this step");
            }
        });
        // In-flight steps of this cluster's operations are sent (again) now.
        self.engine.agent_connected(&cluster);

        let reader = Reader {
            _connected: self.engine.metrics().agent_connected(),
            engine: self.engine.clone(),
            sessions: self.sessions.clone(),
            cluster,
            session,
            silence: self.heartbeat * 3,
        };
        let stopped = opened.stopped;
        tokio::spawn(reader.run(inbound, stopped).instrument(span));
        let out = UnboundedReceiverStream::new(opened.rx);
        Ok(Response::new(Box::pin(out)))
    }
}

/// Reads one session's messages until it ends.
struct Reader<E> {
    /// Holds `flotilla_coordinator_connected_agents` up while the session lasts.
    _connected: ConnectedAgent,
    engine: Engine<E>,
    sessions: Arc<Sessions>,
    cluster: String,
    session: u64,
    silence: Duration,
}

impl<E: Eks + 'static> Reader<E> {
    async fn run(
        self,
        mut inbound: Streaming<pb::AgentMessage>,
        mut stopped: tokio::sync::oneshot::Receiver<()>,
    ) {
        let why = loop {
            let next = tokio::select! {
                _ = &mut stopped => break "replaced by a newer session".to_string(),
                next = tokio::time::timeout(self.silence, inbound.message()) => next,
            };
            let msg = match next {
                Err(_) => {
                    break format!(
                        "no message for {}s (3 heartbeat intervals)",
                        self.silence.as_secs()
                    )
                }
                Ok(Err(status)) => break format!("stream error: {}", status.message()),
                Ok(Ok(None)) => break "stream ended".to_string(),
                Ok(Ok(Some(m))) => m,
            };
            self.sessions.touch(&self.cluster, self.session);
            if let Err(status) = self.handle(msg).await {
                self.sessions.fail(&self.cluster, self.session, status.clone());
                self.engine.agent_disconnected(&self.cluster);
                tracing::warn!(reason = %status.message(), code = ?status.code(), "session ended by the coordinator");
                return;
            }
        };
        if self.sessions.close(&self.cluster, self.session) {
            self.engine.agent_disconnected(&self.cluster);
        }
        tracing::info!(reason = %why, "agent disconnected");
    }

    async fn handle(&self, msg: pb::AgentMessage) -> Result<(), Status> {
        let deliver_err = |e: DeliverError, what: &str| match e {
            DeliverError::OtherCluster { .. } => refuse(&self.cluster, what, e.to_string()),
            DeliverError::Bad(b) => {
                tracing::warn!(what, reason = %b, "malformed message");
                Status::invalid_argument(b.to_string())
            }
        };
        match msg.message {
            Some(pb::agent_message::Message::Heartbeat(_)) => Ok(()),
            Some(pb::agent_message::Message::Hello(h)) => {
                if h.cluster_id != self.cluster {
                    return Err(refuse(
                        &self.cluster,
                        "Hello",
                        format!(
                            "hello.cluster_id {:?} is not the cluster in the agent's certificate ({})",
                            h.cluster_id, self.cluster
                        ),
                    ));
                }
                if let Some(inv) = h.inventory {
                    self.sessions.set_inventory(&self.cluster, inv);
                }
                Ok(())
            }
            Some(pb::agent_message::Message::Progress(p)) => self
                .engine
                .progress(&self.cluster, p)
                .map_err(|e| deliver_err(e, "StepProgress")),
            Some(pb::agent_message::Message::Result(r)) => {
                tracing::info!(operation = %r.operation_id, step = %r.step_id, attempt = r.attempt, "step result");
                self.engine
                    .deliver_result(&self.cluster, r)
                    .await
                    .map_err(|e| deliver_err(e, "StepResult"))
            }
            None => Err(Status::invalid_argument("message: empty agent message")),
        }
    }
}
