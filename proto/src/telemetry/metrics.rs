//! The Prometheus endpoint both binaries serve on `--metrics-listen ADDR`: `GET /metrics` in the
//! text exposition format from a `prometheus::Registry` the binary fills with its own metrics.
//! Plain HTTP/1.1 (hyper); anything else answers 404 or 405.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio::net::TcpListener;
/// The shutdown signal [`serve_metrics`] takes (re-exported so callers need no tokio-util).
pub use tokio_util::sync::CancellationToken;

use super::TelemetryError;

/// The path metrics are served on.
pub const METRICS_PATH: &str = "/metrics";

/// A running metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server stopped (its shutdown token was cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// The registry's metrics in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Listens on `addr` and serves `GET /metrics` from `registry` until `shutdown` is cancelled.
/// Binding happens before this returns, so a taken port is an error here, not later; the bound
/// address is logged (`serving metrics`, field `addr`) and returned.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<MetricsServer, TelemetryError> {
    let listener = TcpListener::bind(addr).await.map_err(|e| TelemetryError::Bind {
        addr: addr.to_string(),
        message: e.to_string(),
    })?;
    let bound = listener.local_addr().map_err(|e| TelemetryError::Bind {
        addr: addr.to_string(),
        message: e.to_string(),
    })?;
    tracing::info!(addr = %bound, path = METRICS_PATH, "serving metrics");
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, keep serving.
                        tracing::warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let registry = registry.clone();
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry)) }
            });
            tokio::spawn(async move {
                let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = conn {
                    tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                }
            });
        }
    });
    Ok(MetricsServer { addr: bound, task })
}

fn respond(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != METRICS_PATH {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("not found; metrics are at {METRICS_PATH}\n"),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".into());
    }
    reply(StatusCode::OK, prometheus::TEXT_FORMAT, encode(registry))
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, Empty};
    use prometheus::{IntCounterVec, Opts};

    use super::*;

    async fn get(addr: SocketAddr, method: Method, path: &str) -> (StatusCode, String, String) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, ctype, String::from_utf8_lossy(&body).to_string())
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_text_format() {
        let registry = Registry::new();
        let c = IntCounterVec::new(Opts::new("demo_total", "A demo counter."), &["kind"]).expect("metric");
        registry.register(Box::new(c.clone())).expect("register");
        c.with_label_values(&["drain"]).inc_by(3);
        let shutdown = CancellationToken::new();
        let server = serve_metrics("127.0.0.1:0".parse().expect("addr"), registry, shutdown.clone())
            .await
            .expect("serves");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let (status, ctype, body) = get(addr, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        assert!(body.contains("# TYPE demo_total counter"), "{body}");
        assert!(body.contains("demo_total{kind=\"drain\"} 3"), "{body}");
        assert_eq!(get(addr, Method::GET, "/").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(addr, Method::POST, "/metrics").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );

        // A taken port is refused up front, naming the flag.
        let err = serve_metrics(addr, Registry::new(), CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--metrics-listen") && err.contains(&addr.to_string()),
            "{err}"
        );

        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(30), server.stopped())
            .await
            .expect("stops within the bound");
    }
}
