//! The library's boundary error: what stops the agent before any step can run (kubeconfig,
//! client). Step failures are [`crate::steps::StepError`] and live in reports.

/// Why the agent could not start its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file (or `default` for the inferred configuration).
        path: String,
        /// What went wrong, and what to check.
        message: String,
    },
    /// The Kubernetes client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
    /// The coordinator session cannot start (certificates, URL, settings).
    #[error(transparent)]
    Uplink(#[from] crate::uplink::UplinkError),
    /// Metrics cannot be served (the `--metrics-listen` address is taken or not ours).
    #[error(transparent)]
    Telemetry(#[from] flotilla_proto::telemetry::TelemetryError),
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}
