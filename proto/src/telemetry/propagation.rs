//! W3C trace context (`traceparent`, `tracestate`) between processes: into and out of tonic
//! metadata for whole calls, and into and out of the `trace_context` map the agent stream's
//! `RunStep`, `StepProgress` and `StepResult` carry (gRPC metadata is per call, and those
//! messages share one long stream).
//!
//! A span's context exists only when the OTLP layer is installed ([`super::init`] with an
//! endpoint): without it [`inject`] gives an empty map and [`extract`] a context that
//! [`set_parent`] ignores — so nothing here needs to know whether tracing is on.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `trace_context` field of `RunStep`, `StepProgress` and `StepResult`: W3C headers by
/// lower-case name (`traceparent`, and `tracestate` when there is one).
pub type TraceContext = HashMap<String, String>;

/// The W3C `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C trace context of `span`, for a message's `trace_context` field (empty when the span
/// is not recorded by OpenTelemetry).
pub fn inject(span: &tracing::Span) -> TraceContext {
    let mut map = TraceContext::new();
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut map);
    }
    map
}

/// `span`'s `traceparent` header value (`00-TRACEID-SPANID-FLAGS`), if it has one.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    inject(span).remove(TRACEPARENT)
}

/// Adds `span`'s W3C trace context to outgoing gRPC metadata (nothing when it has none).
pub fn inject_metadata(span: &tracing::Span, metadata: &mut MetadataMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// The remote parent a message's `trace_context` names (an empty context when it names none
/// or is malformed).
pub fn extract(trace_context: &TraceContext) -> Context {
    TraceContextPropagator::new().extract(trace_context)
}

/// The remote parent a gRPC request's metadata names.
pub fn extract_metadata(metadata: &MetadataMap) -> Context {
    TraceContextPropagator::new().extract(&MetadataExtractor(metadata))
}

/// The remote parent HTTP headers name (a tower layer's or tonic `trace_fn`'s view of a call).
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The span a gRPC server handles one call in — for tonic's
/// `Server::builder().trace_fn(telemetry::grpc_server_span)`: named `grpc` with the call's
/// `method` (`/flotilla.fleet.v1.Fleet/ListClusters`), its OpenTelemetry parent the caller's span
/// when the request's `traceparent` names one.
pub fn grpc_server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!("grpc", method = %request.uri().path());
    set_parent(&span, extract_headers(request.headers()));
    span
}

/// The remote parent one `traceparent` header value names.
pub fn extract_traceparent(traceparent: &str) -> Context {
    let mut map = TraceContext::new();
    map.insert(TRACEPARENT.to_string(), traceparent.to_string());
    extract(&map)
}

/// Makes `parent` the OpenTelemetry parent of `span` when it names a remote span; returns
/// whether it did. Call it right after creating `span`, before it is entered (an entered span
/// has started and keeps its parent). Without a remote parent `span` keeps its own: its
/// enclosing `tracing` span, or a new trace.
pub fn set_parent(span: &tracing::Span, parent: Context) -> bool {
    if !parent.span().span_context().is_valid() {
        return false;
    }
    match span.set_parent(parent) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "trace parent not set");
            false
        }
    }
}

/// Makes `span` start a trace of its own in OpenTelemetry, while it stays inside its enclosing
/// `tracing` span for logs — for work under a span that lasts the whole process (one trace per
/// agent session rather than one per agent lifetime). Call it before `span` is entered.
pub fn set_parent_root(span: &tracing::Span) {
    if let Err(e) = span.set_parent(Context::new()) {
        tracing::debug!(error = %e, "trace root not set");
    }
}

/// A tonic client interceptor adding the current span's trace context to every request, so the
/// server's span joins the caller's trace:
/// `FleetClient::with_interceptor(channel, TraceContextInterceptor)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_metadata(&tracing::Span::current(), request.metadata_mut());
        Ok(request)
    }
}

/// Writes W3C headers into tonic metadata (ASCII keys; invalid values are skipped).
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Reads W3C headers out of HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Reads W3C headers out of tonic metadata.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Runs `f` under a subscriber recording spans with OpenTelemetry (no exporter).
    fn traced<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn ids(cx: &Context) -> (TraceId, SpanId) {
        let sc = cx.span().span_context().clone();
        (sc.trace_id(), sc.span_id())
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_child_span_continues_the_remote_trace_and_round_trips() {
        traced(|| {
            let remote = extract_traceparent(PARENT);
            let (trace, parent_span) = ids(&remote);
            assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(parent_span.to_string(), "00f067aa0ba902b7");

            let span = tracing::info_span!("step", step = "drain");
            assert!(set_parent(&span, remote));
            let map = inject(&span);
            let header = map.get(TRACEPARENT).expect("traceparent").clone();
            assert_eq!(traceparent(&span).as_deref(), Some(header.as_str()));
            assert!(
                header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{header}"
            );
            assert!(header.ends_with("-01"), "sampled: {header}");

            // The map and metadata carriers read back the same context: the span's own id
            // under the remote trace.
            let (t, s) = ids(&extract(&map));
            assert_eq!(t, trace);
            assert_ne!(s, parent_span, "the child's id, not the parent's");
            let mut md = MetadataMap::new();
            inject_metadata(&span, &mut md);
            assert_eq!(
                md.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
                Some(header.as_str())
            );
            assert_eq!(ids(&extract_metadata(&md)), (t, s));
        });
    }

    #[test]
    fn spans_without_a_remote_parent_start_their_own_trace() {
        traced(|| {
            let span = tracing::info_span!("session");
            assert!(!set_parent(&span, extract(&TraceContext::new())));
            let header = traceparent(&span).expect("recorded spans have a context");
            assert!(!header.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
            // Malformed headers are no parent.
            for bad in [
                "",
                "00-xyz-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ] {
                assert!(
                    !extract_traceparent(bad).span().span_context().is_valid(),
                    "{bad}"
                );
            }
        });
    }

    #[test]
    fn a_grpc_server_span_joins_the_callers_trace() {
        traced(|| {
            let req = http::Request::builder()
                .uri("/flotilla.fleet.v1.Fleet/ListClusters")
                .header(TRACEPARENT, PARENT)
                .body(())
                .expect("request");
            let span = grpc_server_span(&req);
            let (trace, _) = ids(&extract(&inject(&span)));
            assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(
                ids(&extract_headers(req.headers())),
                ids(&extract_traceparent(PARENT))
            );
            // Without a traceparent the call starts its own trace.
            let plain = http::Request::builder().uri("/x.Y/Z").body(()).expect("request");
            let (other, _) = ids(&extract(&inject(&grpc_server_span(&plain))));
            assert_ne!(other, trace);
        });
    }

    #[test]
    fn a_root_span_leaves_its_enclosing_trace() {
        traced(|| {
            let outer = tracing::info_span!("uplink");
            let _in = outer.enter();
            let child = tracing::info_span!("child");
            let session = tracing::info_span!("session");
            set_parent_root(&session);
            let trace_of = |s: &tracing::Span| ids(&extract(&inject(s))).0;
            assert_eq!(trace_of(&child), trace_of(&outer));
            assert_ne!(trace_of(&session), trace_of(&outer));
        });
    }

    #[test]
    fn without_the_otel_layer_nothing_is_injected() {
        let span = tracing::info_span!("untraced");
        assert!(inject(&span).is_empty());
        let mut md = MetadataMap::new();
        inject_metadata(&span, &mut md);
        assert!(md.is_empty());
        // The interceptor works the same way: nothing to add, the request passes.
        let mut i = TraceContextInterceptor;
        let req = tonic::service::Interceptor::call(&mut i, tonic::Request::new(())).expect("passes");
        assert!(req.metadata().get(TRACEPARENT).is_none());
    }

    #[test]
    fn the_interceptor_adds_the_current_span() {
        traced(|| {
            let span = tracing::info_span!("call");
            let _e = span.enter();
            let mut i = TraceContextInterceptor;
            let req = tonic::service::Interceptor::call(&mut i, tonic::Request::new(())).expect("passes");
            let sent = req
                .metadata()
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            assert_eq!(sent, traceparent(&span));
        });
    }
}
