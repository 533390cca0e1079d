//! The plain-HTTP loopback listener of the simulated AWS APIs: checks SigV4, tells EKS
//! (restJson1) from Auto Scaling (query protocol) by the credential scope's service, and writes
//! answers with the headers real AWS sends (`x-amzn-RequestId`, `x-amzn-ErrorType`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use super::{autoscaling, eks, sigv4, uuid, Aws, AwsError};

/// Largest request body accepted.
const MAX_BODY: usize = 4 << 20;

/// Serves until `shutdown` turns true.
pub async fn serve(listener: TcpListener, aws: Arc<Aws>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        aws.count_connection();
        let aws = aws.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let aws = aws.clone();
                async move { Ok::<_, Infallible>(route(&aws, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                debug!(error = %e, "aws connection ended");
            }
        });
    }
}

enum Api {
    Eks,
    AutoScaling,
}

fn respond(
    code: u16,
    content_type: &'static str,
    body: impl Into<Bytes>,
    request_id: &str,
    error: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if let Some(e) = error.and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert("x-amzn-errortype", e);
    }
    r
}

fn error(api: &Api, e: &AwsError, request_id: &str) -> Response<Full<Bytes>> {
    match api {
        Api::Eks => respond(
            e.status,
            "application/json",
            serde_json::to_vec(&e.json_body()).unwrap_or_default(),
            request_id,
            Some(e.code),
        ),
        Api::AutoScaling => respond(e.status, "text/xml", e.xml_body(request_id), request_id, None),
    }
}

/// An EKS request's shape: its method and path with names and ids as `*`
/// (`GET /clusters/*/updates/*`).
fn eks_shape(method: &http::Method, path: &str) -> String {
    const WORDS: [&str; 9] = [
        "clusters",
        "updates",
        "node-groups",
        "update-version",
        "insights",
        "addons",
        "update",
        "supported-versions",
        "cluster-versions",
    ];
    let mut shape = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        shape.push('/');
        shape.push_str(if WORDS.contains(&seg) { seg } else { "*" });
    }
    shape.replacen('/', " /", 1)
}

async fn route(aws: &Arc<Aws>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = uuid();
    let (parts, body) = req.into_parts();
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let credential = sigv4::parse(auth);
    let api = match &credential {
        Ok(c) if c.service == "autoscaling" => Api::AutoScaling,
        Ok(c) if c.service == "eks" => Api::Eks,
        _ if form && parts.uri.path() == "/" => Api::AutoScaling,
        _ => Api::Eks,
    };
    let credential = match credential {
        Ok(c) => c,
        Err(e) => return error(&api, &e, &request_id),
    };
    if credential.service != "eks" && credential.service != "autoscaling" {
        let e = AwsError::new(
            "InvalidSignatureException",
            403,
            format!("Credential should be scoped to correct service: 'eks' or 'autoscaling', not '{}'. The simulator serves EKS and Auto Scaling only.", credential.service),
        );
        return error(&api, &e, &request_id);
    }
    if let Err(e) = sigv4::check_region(&credential, &aws.region) {
        return error(&api, &e, &request_id);
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = AwsError::new(
                "SerializationException",
                413,
                "The request body is too large or could not be read.",
            );
            return error(&api, &e, &request_id);
        }
    };
    aws.count_call(match api {
        Api::Eks => eks_shape(&parts.method, parts.uri.path()),
        Api::AutoScaling => {
            let input = if parts.method == http::Method::GET {
                parts.uri.query().unwrap_or("").as_bytes()
            } else {
                &body[..]
            };
            let action = form_urlencoded::parse(input)
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            format!("autoscaling {action}")
        }
    });
    match api {
        Api::Eks => {
            let query = parts.uri.query().unwrap_or("");
            match eks::handle(aws, &parts.method, parts.uri.path(), query, &body) {
                Ok((code, v)) => respond(
                    code,
                    "application/json",
                    serde_json::to_vec(&v).unwrap_or_default(),
                    &request_id,
                    None,
                ),
                Err(e) => {
                    debug!(code = e.code, message = %e.message, "eks error");
                    error(&api, &e, &request_id)
                }
            }
        }
        Api::AutoScaling => {
            if parts.method != http::Method::POST && parts.method != http::Method::GET {
                let e = AwsError::new("InvalidAction", 400, "The query protocol takes POST or GET.");
                return error(&api, &e, &request_id);
            }
            let input: Bytes = if parts.method == http::Method::GET {
                Bytes::from(parts.uri.query().unwrap_or("").to_string())
            } else {
                body
            };
            match autoscaling::handle(aws, &input, &request_id) {
                Ok(xml) => respond(200, "text/xml", xml, &request_id, None),
                Err(e) => {
                    debug!(code = e.code, message = %e.message, "autoscaling error");
                    error(&api, &e, &request_id)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eks_calls_are_counted_by_shape() {
        assert_eq!(
            eks_shape(&http::Method::GET, "/clusters/sim-1/updates/0f1e"),
            "GET /clusters/*/updates/*"
        );
        assert_eq!(
            eks_shape(
                &http::Method::POST,
                "/clusters/sim-1/node-groups/ng-a/update-version"
            ),
            "POST /clusters/*/node-groups/*/update-version"
        );
        assert_eq!(
            eks_shape(&http::Method::GET, "/addons/supported-versions"),
            "GET /addons/supported-versions"
        );
    }
}
