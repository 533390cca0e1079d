//! Telemetry both binaries share: `tracing` logs (text or JSON) filtered by `--log` /
//! `FLOTILLA_LOG` / `RUST_LOG`, OTLP trace export through tracing-opentelemetry when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, W3C trace context carried in gRPC metadata and in the
//! agent stream's messages ([`propagation`]), and the Prometheus `/metrics` endpoint
//! ([`metrics`]).
//!
//! # Use
//!
//! ```no_run
//! # async fn run() -> Result<(), flotilla_proto::telemetry::TelemetryError> {
//! use flotilla_proto::telemetry::{self, LogFormat};
//! let filter = telemetry::log_filter(None, "info");
//! let guard = telemetry::init("flotilla-agent", LogFormat::Json, &filter)?;
//! // ... run; spans go to the collector in batches ...
//! guard.shutdown(); // flushes the spans not yet exported (dropping the guard does too)
//! # Ok(()) }
//! ```
//!
//! # Standard variables
//!
//! Traces are exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, over OTLP/gRPC (tonic). The OpenTelemetry SDK
//! reads the rest: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the service name passed
//! to [`init`] is used when neither names one), `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_BSP_*` (batching), `OTEL_EXPORTER_OTLP_{TRACES_,}{TIMEOUT,HEADERS,COMPRESSION,INSECURE}`.
//! For an `https://` endpoint the collector's CA comes from `OTEL_EXPORTER_OTLP_CERTIFICATE`
//! (and a client certificate from `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` /
//! `OTEL_EXPORTER_OTLP_CLIENT_KEY`), each also in its `_TRACES_` form. `OTEL_SDK_DISABLED=true`
//! or `OTEL_TRACES_EXPORTER=none` turn export off.

pub mod metrics;
pub mod propagation;

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use self::metrics::{serve_metrics, CancellationToken, MetricsServer};
pub use self::propagation::{
    extract, extract_headers, extract_metadata, extract_traceparent, grpc_server_span, inject,
    inject_metadata, set_parent, set_parent_root, traceparent, TraceContext, TraceContextInterceptor,
};

/// Which spans and events go to the OTLP exporter: every `info` span and event of our crates;
/// never the transport's own (the exporter talks through tonic, h2 and hyper, and exporting
/// those would feed itself).
const EXPORT_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
                             opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// How long [`TelemetryGuard::shutdown`] waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why telemetry could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error(
        "log filter `{filter}` (--log / FLOTILLA_LOG / RUST_LOG): {message}; write it as a level \
         (`info`) or per-target directives (`info,flotilla_agent=debug`)"
    )]
    InvalidFilter {
        /// The filter given.
        filter: String,
        /// What is wrong with it.
        message: String,
    },
    /// The OTLP exporter cannot be built from the `OTEL_*` variables.
    #[error("OTLP trace export ({variable}): {message}")]
    Exporter {
        /// The variable at fault (`OTEL_EXPORTER_OTLP_ENDPOINT`, …).
        variable: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A global `tracing` subscriber is already installed (telemetry initialised twice).
    #[error("a tracing subscriber is already installed; call telemetry::init once per process")]
    AlreadyInitialized,
    /// The metrics address cannot be listened on.
    #[error("--metrics-listen {addr}: cannot listen: {message}; pick a free port or another address")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The operating system's reason.
        message: String,
    },
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields and the list of enclosing spans
    /// (cluster, operation, step, attempt, rollout).
    Json,
}

/// The log filter to use: `explicit` (a `--log` flag, which clap also fills from
/// `FLOTILLA_LOG`), else `RUST_LOG`, else `default`.
pub fn log_filter(explicit: Option<&str>, default: &str) -> String {
    if let Some(f) = explicit.filter(|f| !f.trim().is_empty()) {
        return f.to_string();
    }
    match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => f,
        _ => default.to_string(),
    }
}

/// Keeps the trace exporter alive; [`TelemetryGuard::shutdown`] (or dropping it) exports the
/// spans still buffered. Hold it until the process is about to exit.
#[must_use = "dropping the guard shuts the trace exporter down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter (bounded by 10 s). Blocks the
    /// calling thread: from async code on a multi-thread runtime this is fine (the runtime's
    /// other workers drive the export); on a current-thread runtime call it from
    /// `spawn_blocking`.
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let stop = move || {
            if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                // The subscriber may already be gone at exit; say it on stderr too.
                tracing::warn!(error = %e, "trace exporter shutdown incomplete; some spans may be lost");
            }
        };
        // Inside a multi-thread runtime, let the scheduler move other tasks (the exporter's
        // connection) off this worker while it blocks.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(stop)
            }
            _ => stop(),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

/// Installs the process's `tracing` subscriber: logs to stderr in `format`, filtered by
/// `filter` (see [`log_filter`]); and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces
/// variant) is set, an OTLP/gRPC exporter of `info` spans named `service_name` unless
/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` say otherwise. Also installs the W3C trace
/// context propagator globally. Call once, from within the tokio runtime (the exporter's
/// channel lives on it).
pub fn init(service_name: &str, format: LogFormat, filter: &str) -> Result<TelemetryGuard, TelemetryError> {
    let log_filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| TelemetryError::InvalidFilter {
            filter: filter.to_string(),
            message: e.to_string(),
        })?;
    // Colour only for a terminal: a file, journald or `kubectl logs` would keep the escapes.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(true).boxed(),
    }
    .with_filter(log_filter);
    let provider = tracer_provider(service_name)?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("flotilla"))
            .with_filter(EnvFilter::new(EXPORT_FILTER))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialized)?;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
        tracing::info!(
            endpoint = %otlp_endpoint().map(|(_, e)| e).unwrap_or_default(),
            "exporting traces over OTLP"
        );
    }
    Ok(TelemetryGuard { provider })
}

/// The OTLP traces endpoint from the environment, with the variable it came from.
fn otlp_endpoint() -> Option<(&'static str, String)> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|v| match std::env::var(v) {
        Ok(e) if !e.trim().is_empty() => Some((v, e.trim().to_string())),
        _ => None,
    })
}

/// `OTEL_EXPORTER_OTLP_TRACES_<suffix>`, else `OTEL_EXPORTER_OTLP_<suffix>`, with its name.
fn otlp_var(suffix: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|v| match std::env::var(&v) {
        Ok(x) if !x.trim().is_empty() => Some((v, x.trim().to_string())),
        _ => None,
    })
}

fn env_is(var: &str, value: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
}

/// The tracer provider exporting over OTLP/gRPC, or `None` when no endpoint is configured or
/// export is switched off.
fn tracer_provider(service_name: &str) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some((endpoint_var, endpoint)) = otlp_endpoint() else {
        return Ok(None);
    };
    if env_is("OTEL_SDK_DISABLED", "true") || env_is("OTEL_TRACES_EXPORTER", "none") {
        return Ok(None);
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if endpoint.starts_with("https://") {
        builder = builder.with_tls_config(tls_config(endpoint_var)?);
    }
    let exporter = builder.build().map_err(|e| TelemetryError::Exporter {
        variable: endpoint_var.to_string(),
        message: error_chain(&e),
    })?;
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, _)| k.trim() == "service.name")
            })
        });
    let mut resource = Resource::builder();
    if !named_by_env {
        resource = resource.with_service_name(service_name.to_string());
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// TLS towards an `https://` collector: its CA from `OTEL_EXPORTER_OTLP_CERTIFICATE`, and a
/// client certificate when both `..._CLIENT_CERTIFICATE` and `..._CLIENT_KEY` are set.
fn tls_config(endpoint_var: &str) -> Result<ClientTlsConfig, TelemetryError> {
    let read = |(var, path): (String, String)| {
        std::fs::read_to_string(&path).map_err(|e| TelemetryError::Exporter {
            variable: var.clone(),
            message: format!("cannot read `{path}`: {e}; point {var} at a PEM file"),
        })
    };
    let Some(ca) = otlp_var("CERTIFICATE") else {
        return Err(TelemetryError::Exporter {
            variable: endpoint_var.to_string(),
            message: "an https:// endpoint needs the collector's CA; set OTEL_EXPORTER_OTLP_CERTIFICATE \
                      to its PEM file, or use http:// for a plaintext collector"
                .into(),
        });
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    match (otlp_var("CLIENT_CERTIFICATE"), otlp_var("CLIENT_KEY")) {
        (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => {}
        (Some((var, _)), None) | (None, Some((var, _))) => {
            return Err(TelemetryError::Exporter {
                variable: var,
                message: "a client certificate needs both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
                          OTEL_EXPORTER_OTLP_CLIENT_KEY"
                    .into(),
            })
        }
    }
    Ok(tls)
}

/// An error with its sources, `: `-separated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_filters_win_over_the_default() {
        assert_eq!(log_filter(Some("debug"), "info"), "debug");
        // Empty means unset (an empty FLOTILLA_LOG in a manifest).
        let from_env = std::env::var("RUST_LOG").ok().filter(|f| !f.trim().is_empty());
        assert_eq!(
            log_filter(Some("  "), "info"),
            from_env.unwrap_or_else(|| "info".into())
        );
    }

    #[test]
    fn a_bad_filter_names_the_flag_and_the_fix() {
        let err = init("test", LogFormat::Text, "info,=[").unwrap_err().to_string();
        assert!(
            err.contains("--log") && err.contains("info,flotilla_agent=debug"),
            "{err}"
        );
    }

    /// Set in the child process of the test below.
    const CHILD: &str = "FLOTILLA_TELEMETRY_LOG_CHILD";

    #[test]
    fn text_logs_into_a_pipe_carry_no_colour_escapes() {
        if std::env::var_os(CHILD).is_some() {
            // The child: a fresh process, so the subscriber can be installed.
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let _in_rt = rt.enter();
            let _guard = init("flotilla-test", LogFormat::Text, "info").expect("init");
            let span = tracing::info_span!("operation", cluster = "sim-1");
            let _entered = span.enter();
            tracing::warn!(step = "Drain", "logged from the child");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "telemetry::tests::text_logs_into_a_pipe_carry_no_colour_escapes",
            ])
            .env(CHILD, "1")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("logged from the child"))
            .unwrap_or_else(|| panic!("no log line in {stderr:?}"));
        assert!(
            line.contains("WARN") && line.contains("cluster=\"sim-1\"") && line.contains("step=\"Drain\""),
            "{line:?}"
        );
        assert!(!line.contains('\x1b'), "escape codes in {line:?}");
    }
}
