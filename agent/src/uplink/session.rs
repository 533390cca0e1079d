//! One agent's connection loop: dial, `Hello` (cluster, version, inventory, running steps), then
//! one task multiplexes coordinator messages, step events, heartbeats and result re-sends onto
//! the stream; when the stream breaks it waits (exponential backoff, full jitter, reset after a
//! healthy session) and dials again. Steps keep running while the agent is disconnected.
//!
//! Each connection runs in a `session` span whose W3C trace context goes in the `Connect`
//! call's metadata, so the coordinator's side of the session joins the agent's trace.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::agent_gateway_client::AgentGatewayClient;
use flotilla_proto::telemetry;
use pb::agent_message::Message as Up;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::Instrument;

use super::backoff::{Backoff, BackoffConfig};
use super::runner::{Event, Runner};
use super::{convert, error_chain, UplinkConfig, AGENT_VERSION};
use crate::cluster::Cluster;
use crate::inventory;
use crate::metrics::AgentMetrics;

/// Messages queued towards the coordinator before the session counts as congested. Results
/// that do not fit stay in the outbox and go out at the next re-send; progress and heartbeats
/// that do not fit are dropped (newer ones follow).
const OUTBOUND_CAPACITY: usize = 256;
/// Bound on collecting the inventory for `Hello`; past it, `Hello` goes without one.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings a session uses (the parts of [`UplinkConfig`] past dialling).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster's id.
    pub cluster: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Re-send interval of unacked results.
    pub resend: Duration,
    /// Minimum interval between two progress reports of one step.
    pub progress_every: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Bound on the coordinator's answer to `Connect`.
    pub connect_timeout: Duration,
    /// How long shutdown waits for steps to stop.
    pub shutdown_grace: Duration,
    /// Where steps, evictions and the session's state are counted.
    pub metrics: AgentMetrics,
}

impl From<&UplinkConfig> for Settings {
    fn from(c: &UplinkConfig) -> Settings {
        Settings {
            cluster: c.cluster.clone(),
            heartbeat: c.heartbeat,
            resend: c.resend,
            progress_every: c.progress_every,
            backoff: c.backoff,
            connect_timeout: c.connect_timeout,
            shutdown_grace: c.shutdown_grace,
            metrics: c.metrics.clone(),
        }
    }
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The agent is shutting down.
    Shutdown,
    /// The session broke; dial again.
    Lost {
        /// Why, for the log.
        reason: String,
        /// How long the stream was established (`None`: it never was).
        established_for: Option<Duration>,
    },
}

/// Runs sessions until `shutdown`, then stops the steps.
pub async fn run<C: Cluster + 'static>(
    settings: Settings,
    endpoint: Endpoint,
    cluster: Arc<C>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("uplink", cluster = %settings.cluster);
    async move {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut runner = Runner::new(
            cluster.clone(),
            &settings.cluster,
            settings.progress_every,
            shutdown.clone(),
            events_tx,
            settings.metrics.clone(),
        );
        let mut backoff = Backoff::new(settings.backoff);
        'sessions: loop {
            // One trace per connection (the uplink span lasts the process).
            let span = tracing::info_span!("session", cluster = %settings.cluster);
            telemetry::set_parent_root(&span);
            let end = Session {
                settings: &settings,
                endpoint: &endpoint,
                cluster: &*cluster,
                runner: &mut runner,
                events: &mut events,
                shutdown: &shutdown,
                span: &span,
            }
            .run()
            .instrument(span.clone())
            .await;
            settings.metrics.set_connected(false);
            let (reason, established_for) = match end {
                End::Shutdown => break,
                End::Lost {
                    reason,
                    established_for,
                } => (reason, established_for),
            };
            if let Some(lasted) = established_for {
                backoff.session_ended(lasted);
            }
            let delay = backoff.next_delay(&mut rand::rng());
            settings.metrics.reconnecting();
            tracing::warn!(
                error = %reason,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                failures = backoff.failures(),
                running = runner.running_len(),
                unacked = runner.unacked_len(),
                "coordinator session lost; reconnecting"
            );
            // Steps keep running; their results go to the outbox for the next session.
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'sessions,
                    _ = &mut wait => break,
                    Some(ev) = events.recv() => {
                        runner.on_event(ev, Instant::now());
                    }
                }
            }
        }
        let running = runner.running_len();
        if !runner.shutdown(settings.shutdown_grace).await {
            tracing::warn!(
                running,
                "steps still running after the shutdown grace; leaving them"
            );
        }
        while let Ok(ev) = events.try_recv() {
            runner.on_event(ev, Instant::now());
        }
        tracing::info!(stopped_steps = running, "uplink stopped");
    }
    .instrument(span)
    .await
}

/// One connection to the coordinator.
struct Session<'a, C> {
    settings: &'a Settings,
    endpoint: &'a Endpoint,
    cluster: &'a C,
    runner: &'a mut Runner<C>,
    events: &'a mut mpsc::UnboundedReceiver<Event>,
    shutdown: &'a CancellationToken,
    /// This connection's span; its trace context goes in the `Connect` metadata.
    span: &'a tracing::Span,
}

fn lost(reason: impl Into<String>, established: Option<Instant>) -> End {
    End::Lost {
        reason: reason.into(),
        established_for: established.map(|t| t.elapsed()),
    }
}

/// Queues a message without waiting; `Err` when the stream is gone.
fn send(tx: &mpsc::Sender<pb::AgentMessage>, m: pb::AgentMessage) -> Result<(), ()> {
    match tx.try_send(m) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(m)) => {
            // Results stay in the outbox and are re-sent; progress and heartbeats are replaced
            // by newer ones.
            let what = match m.message {
                Some(Up::Result(_)) => "result (kept for re-sending)",
                Some(Up::Progress(_)) => "progress",
                Some(Up::Heartbeat(_)) => "heartbeat",
                _ => "message",
            };
            tracing::debug!(what, "outbound queue full; not sent now");
            Ok(())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}

impl<C: Cluster + 'static> Session<'_, C> {
    async fn run(self) -> End {
        let Session {
            settings,
            endpoint,
            cluster,
            runner,
            events,
            shutdown,
            span,
        } = self;
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            r = endpoint.connect() => match r {
                Ok(c) => c,
                Err(e) => return lost(format!("dialling {}: {}", endpoint.uri(), error_chain(&e)), None),
            },
        };
        let inventory = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            r = tokio::time::timeout(INVENTORY_TIMEOUT, inventory::collect(cluster)) => match r {
                Ok(Ok(inv)) => Some(convert::inventory_to_proto(&inv)),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "inventory for Hello failed; sending Hello without it");
                    None
                }
                Err(_) => {
                    tracing::warn!(timeout_s = INVENTORY_TIMEOUT.as_secs(), "inventory for Hello timed out; sending Hello without it");
                    None
                }
            },
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let hello = pb::AgentMessage {
            message: Some(Up::Hello(pb::Hello {
                cluster_id: settings.cluster.clone(),
                agent_version: AGENT_VERSION.to_string(),
                inventory,
                running: runner.running(),
            })),
        };
        // Hello goes first, before the call: a coordinator may wait for it before answering.
        if send(&tx, hello).is_err() {
            return lost("outbound stream closed before Hello", None);
        }
        let mut client = AgentGatewayClient::new(channel);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        telemetry::inject_metadata(span, request.metadata_mut());
        let response = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            r = tokio::time::timeout(settings.connect_timeout, client.connect(request)) => r,
        };
        let mut inbound = match response {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                return lost(
                    format!("Connect refused: {} ({:?})", status.message(), status.code()),
                    None,
                )
            }
            Err(_) => {
                return lost(
                    format!(
                        "Connect not answered within {}s",
                        settings.connect_timeout.as_secs()
                    ),
                    None,
                )
            }
        };
        let established = Instant::now();
        settings.metrics.set_connected(true);
        let initial = runner.on_connect(established);
        tracing::info!(
            running = runner.running_len(),
            resent = initial.len(),
            "connected to the coordinator"
        );
        for m in initial {
            if send(&tx, m).is_err() {
                return lost("outbound stream closed", Some(established));
            }
        }
        let mut heartbeat = tokio::time::interval_at(established + settings.heartbeat, settings.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut resend = tokio::time::interval_at(established + settings.resend, settings.resend);
        resend.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let out = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                m = inbound.message() => match m {
                    Ok(Some(m)) => runner.on_message(m, Instant::now()),
                    Ok(None) => return lost("the coordinator ended the stream", Some(established)),
                    Err(status) => return lost(
                        format!("stream broken: {} ({:?})", status.message(), status.code()),
                        Some(established),
                    ),
                },
                Some(ev) = events.recv() => runner.on_event(ev, Instant::now()),
                _ = heartbeat.tick() => vec![runner.heartbeat()],
                _ = resend.tick() => runner.due(Instant::now(), settings.resend),
            };
            for m in out {
                if send(&tx, m).is_err() {
                    return lost("outbound stream closed", Some(established));
                }
            }
        }
    }
}
