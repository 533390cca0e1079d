//! The agent's Prometheus metrics: steps run and how long they took, evictions by answer, the
//! PodDisruptionBudgets that refused them, how long each node took to drain, and the state of
//! the session with the coordinator. Served on `--metrics-listen ADDR` at `/metrics`.
//!
//! One [`AgentMetrics`] per process (cheap to clone: handles share the registry). The step
//! runner and session bump them; steps report what they see through
//! [`ProgressSink::observe`](crate::steps::ProgressSink::observe), so steps themselves stay free of
//! Prometheus.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::steps::{EvictionOutcome, NodeDrainOutcome, Observation, StepError, StepKind};

/// Buckets of step durations, in seconds: a taint takes a second, a drain can take an hour.
const STEP_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// Buckets of one node's drain, in seconds (the default per-node timeout is 10 minutes).
const NODE_DRAIN_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// The agent's metrics and the registry serving them.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    registry: Registry,
    /// `flotilla_agent_steps_total{kind, result}`: step attempts the agent ran that ended;
    /// `result` is `ok` or the lower-case error code (`drain_blocked`, `cancelled`, …).
    steps: IntCounterVec,
    /// `flotilla_agent_step_duration_seconds{kind}`: how long step attempts ran.
    step_duration: HistogramVec,
    /// `flotilla_agent_evictions_total{result}`: eviction calls by answer — `allowed`,
    /// `refused_429` (a PodDisruptionBudget said no), `error`, `forced_delete`.
    evictions: IntCounterVec,
    /// `flotilla_agent_eviction_429_total{pdb}`: 429 refusals by the budget that refused
    /// (`namespace/name`, or `unknown` when the server named none).
    refusals: IntCounterVec,
    /// `flotilla_agent_node_drain_duration_seconds{result}`: from cordon to empty (`drained`),
    /// or to the per-node timeout (`skipped`, `blocked`).
    node_drain: HistogramVec,
    /// `flotilla_agent_session_connected`: 1 while the stream to the coordinator is up.
    connected: IntGauge,
    /// `flotilla_agent_reconnects_total`: sessions that were lost and dialled again.
    reconnects: IntCounter,
    /// `flotilla_agent_steps_running`: step attempts running now.
    running: IntGauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Names, labels and buckets are constants: a failure here is a programming error caught by
    // the unit tests.
    r.unwrap_or_else(|e| panic!("agent metric definition: {e}"))
}

impl AgentMetrics {
    /// Every agent metric, registered in a new registry (with `flotilla_agent_build_info`).
    pub fn new() -> AgentMetrics {
        let registry = Registry::new();
        let steps = must(IntCounterVec::new(
            Opts::new(
                "flotilla_agent_steps_total",
                "Step attempts that ended, by kind and result.",
            ),
            &["kind", "result"],
        ));
        let step_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "flotilla_agent_step_duration_seconds",
                "How long step attempts ran, by kind.",
            )
            .buckets(STEP_BUCKETS.to_vec()),
            &["kind"],
        ));
        let evictions = must(IntCounterVec::new(
            Opts::new(
                "flotilla_agent_evictions_total",
                "Eviction calls by answer: allowed, refused_429, error, forced_delete.",
            ),
            &["result"],
        ));
        let refusals = must(IntCounterVec::new(
            Opts::new(
                "flotilla_agent_eviction_429_total",
                "Evictions a PodDisruptionBudget refused (HTTP 429), by budget.",
            ),
            &["pdb"],
        ));
        let node_drain = must(HistogramVec::new(
            HistogramOpts::new(
                "flotilla_agent_node_drain_duration_seconds",
                "How long one node took to drain (drained) or waited until its timeout (skipped, blocked).",
            )
            .buckets(NODE_DRAIN_BUCKETS.to_vec()),
            &["result"],
        ));
        let connected = must(IntGauge::new(
            "flotilla_agent_session_connected",
            "1 while the session with the coordinator is up.",
        ));
        let reconnects = must(IntCounter::new(
            "flotilla_agent_reconnects_total",
            "Coordinator sessions lost and dialled again.",
        ));
        let running = must(IntGauge::new(
            "flotilla_agent_steps_running",
            "Step attempts running now.",
        ));
        let build = must(IntCounterVec::new(
            Opts::new("flotilla_agent_build_info", "The agent's version (always 1)."),
            &["version"],
        ));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).inc();
        for c in [
            Box::new(steps.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(step_duration.clone()),
            Box::new(evictions.clone()),
            Box::new(refusals.clone()),
            Box::new(node_drain.clone()),
            Box::new(connected.clone()),
            Box::new(reconnects.clone()),
            Box::new(running.clone()),
            Box::new(build),
        ] {
            must(registry.register(c));
        }
        // Every eviction answer shows from the start, at 0, so rates work before the first drain.
        for r in ["allowed", "refused_429", "error", "forced_delete"] {
            evictions.with_label_values(&[r]);
        }
        AgentMetrics {
            registry,
            steps,
            step_duration,
            evictions,
            refusals,
            node_drain,
            connected,
            reconnects,
            running,
        }
    }

    /// The registry to serve (see `flotilla_proto::telemetry::serve_metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A step attempt started.
    pub fn step_started(&self) {
        self.running.inc();
    }

    /// A started step attempt ended after `took` with `result`; `None` when it was stopped by
    /// the agent's shutdown (no result, not counted as an outcome).
    pub fn step_ended(&self, kind: StepKind, took: Duration, result: Option<Result<(), &StepError>>) {
        self.running.dec();
        if let Some(result) = result {
            let code = match result {
                Ok(()) => "ok".to_string(),
                Err(e) => e.code().to_ascii_lowercase(),
            };
            self.steps.with_label_values(&[kind_label(kind), &code]).inc();
            self.step_duration
                .with_label_values(&[kind_label(kind)])
                .observe(took.as_secs_f64());
        }
    }

    /// What a running step observed.
    pub fn observe(&self, o: &Observation) {
        match o {
            Observation::Eviction(outcome) => {
                let result = match outcome {
                    EvictionOutcome::Allowed => "allowed",
                    EvictionOutcome::Refused429 { pdbs } => {
                        if pdbs.is_empty() {
                            self.refusals.with_label_values(&["unknown"]).inc();
                        }
                        for pdb in pdbs {
                            self.refusals.with_label_values(&[pdb.as_str()]).inc();
                        }
                        "refused_429"
                    }
                    EvictionOutcome::Error => "error",
                    EvictionOutcome::ForcedDelete => "forced_delete",
                };
                self.evictions.with_label_values(&[result]).inc();
            }
            Observation::NodeDrain { outcome, took } => {
                let result = match outcome {
                    NodeDrainOutcome::Drained => "drained",
                    NodeDrainOutcome::Skipped => "skipped",
                    NodeDrainOutcome::Blocked => "blocked",
                };
                self.node_drain
                    .with_label_values(&[result])
                    .observe(took.as_secs_f64());
            }
        }
    }

    /// The session with the coordinator came up (`true`) or went down (`false`).
    pub fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// A lost session is about to be dialled again.
    pub fn reconnecting(&self) {
        self.reconnects.inc();
    }
}

/// A step kind as a metric label: `drain`, `surge_scale`, …
pub fn kind_label(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Inventory => "inventory",
        StepKind::WaitNodesReady => "wait_nodes_ready",
        StepKind::Taint => "taint",
        StepKind::SurgeScale => "surge_scale",
        StepKind::VerifyReady => "verify_ready",
        StepKind::Drain => "drain",
        StepKind::RestoreScale => "restore_scale",
        StepKind::Rollback => "rollback",
        StepKind::Postflight => "postflight",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &AgentMetrics) -> String {
        flotilla_proto::telemetry::metrics::encode(m.registry())
    }

    #[test]
    fn steps_evictions_and_the_session_are_counted_with_their_labels() {
        let m = AgentMetrics::new();
        assert!(text(&m).contains("flotilla_agent_evictions_total{result=\"refused_429\"} 0"));
        m.step_started();
        m.step_ended(StepKind::SurgeScale, Duration::from_millis(1500), Some(Ok(())));
        m.step_started();
        let blocked = StepError::Cancelled { reason: "x".into() };
        m.step_ended(StepKind::Drain, Duration::from_secs(40), Some(Err(&blocked)));
        m.step_started();
        m.step_ended(StepKind::Drain, Duration::from_secs(1), None);
        m.observe(&Observation::Eviction(EvictionOutcome::Allowed));
        m.observe(&Observation::Eviction(EvictionOutcome::Refused429 {
            pdbs: vec!["shop/cache".into()],
        }));
        m.observe(&Observation::Eviction(EvictionOutcome::Refused429 {
            pdbs: vec![],
        }));
        m.observe(&Observation::NodeDrain {
            outcome: NodeDrainOutcome::Drained,
            took: Duration::from_secs(7),
        });
        m.set_connected(true);
        m.reconnecting();
        let t = text(&m);
        for line in [
            "flotilla_agent_steps_total{kind=\"surge_scale\",result=\"ok\"} 1",
            "flotilla_agent_steps_total{kind=\"drain\",result=\"cancelled\"} 1",
            "flotilla_agent_step_duration_seconds_bucket{kind=\"surge_scale\",le=\"2.5\"} 1",
            "flotilla_agent_step_duration_seconds_bucket{kind=\"surge_scale\",le=\"1\"} 0",
            "flotilla_agent_step_duration_seconds_count{kind=\"drain\"} 1",
            "flotilla_agent_evictions_total{result=\"allowed\"} 1",
            "flotilla_agent_evictions_total{result=\"refused_429\"} 2",
            "flotilla_agent_eviction_429_total{pdb=\"shop/cache\"} 1",
            "flotilla_agent_eviction_429_total{pdb=\"unknown\"} 1",
            "flotilla_agent_node_drain_duration_seconds_count{result=\"drained\"} 1",
            "flotilla_agent_session_connected 1",
            "flotilla_agent_reconnects_total 1",
            "flotilla_agent_steps_running 0",
        ] {
            assert!(t.contains(line), "{line} missing from:\n{t}");
        }
        assert!(t.contains("flotilla_agent_build_info{version=\""), "{t}");
        // Stopped by shutdown: no outcome, no duration.
        assert!(!t.contains("flotilla_agent_step_duration_seconds_count{kind=\"drain\"} 2"));
    }
}
