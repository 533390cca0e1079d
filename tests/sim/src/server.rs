//! The HTTPS front of the simulated fleet: one listener, each cluster under `/clusters/<name>`,
//! speaking the Kubernetes REST API (JSON, Table for kubectl, chunked watch streams).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::{debug, info_span, warn, Instrument};

use crate::api::{self, DeleteOptions, Deleted, Target};
use crate::cluster::Cluster;
use crate::discovery;
use crate::error::ApiError;
use crate::metrics;
use crate::object::Object;
use crate::patch::PatchType;
use crate::printers::{self, IncludeObject};
use crate::resources::{self, Kind, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, EventType, Past, Store};

/// Response body type.
pub type Body = BoxBody<Bytes, Infallible>;

/// The clusters served, by name.
pub type Clusters = Arc<HashMap<String, Arc<Cluster>>>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn value_response(code: u16, v: &Value) -> Response<Body> {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = value_response(e.code, &e.status());
    if let Some(s) = e.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// Serves `clusters` over TLS on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    clusters: Clusters,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { warn!(error = %e, "accept failed"); continue; }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let clusters = clusters.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let clusters = clusters.clone();
                async move { Ok::<_, Infallible>(handle(clusters, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r { debug!(%peer, error = %e, "connection ended"); },
                _ = conn_shutdown.changed() => {}
            }
        });
    }
}

/// A request, read in full.
struct Req {
    method: Method,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    body: Bytes,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    fn wants_table(&self) -> bool {
        self.accept
            .split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
            || (self.accept.contains("as=Table") && !self.accept.contains("application/json,"))
    }

    fn body_json(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        let ct = self.content_type.split(';').next().unwrap_or("").trim();
        match ct {
            "" | "application/json" | "*/*" => serde_json::from_slice(&self.body).map_err(|e| {
                ApiError::bad_request(format!("the body of the request was in an unknown format: {e}"))
            }),
            "application/yaml" => serde_yaml::from_slice(&self.body).map_err(|e| {
                ApiError::bad_request(format!("the body of the request was in an unknown format: {e}"))
            }),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The bearer token of cluster `name`'s kubeconfig.
pub fn token_of(name: &str) -> String {
    format!("flotilla-sim.{name}")
}

fn cluster_of_token(token: &str) -> Option<&str> {
    token.strip_prefix("flotilla-sim.")
}

async fn handle(clusters: Clusters, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    // Each cluster is served under `/clusters/<name>`. A client that sends an absolute path
    // without that prefix (`kubectl get --raw /metrics` drops the server URL's path) is routed
    // by its kubeconfig's token, the way separate API servers would be told apart by host.
    let (cluster, rest) = if segs.len() >= 2 && segs[0] == "clusters" {
        (clusters.get(&segs[1]).cloned(), 2)
    } else {
        let by_token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(cluster_of_token)
            .and_then(|name| clusters.get(name).cloned());
        (by_token, 0)
    };
    let Some(cluster) = cluster else {
        return error_response(&ApiError::no_route());
    };
    let segs = segs[rest..].to_vec();
    let method = req.method().clone();
    let span = info_span!("request", cluster = %cluster.name, %method, path = %path);
    async move {
        let behaviour = cluster.behaviour();
        if !behaviour.api_latency.is_zero() {
            tokio::time::sleep(behaviour.api_latency).await;
        }
        if behaviour.api_error_rate > 0.0 && rand::random::<f64>() < behaviour.api_error_rate {
            return error_response(&ApiError::unavailable());
        }
        let header = |h: header::HeaderName| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        if segs == ["metrics"] {
            if method != Method::GET {
                return error_response(&ApiError::method_not_allowed(method.as_str()));
            }
            let minor = cluster.minor().parse().unwrap_or(0);
            let mut r = Response::new(full(metrics::render(minor, &behaviour.deprecated_api_requests)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            return r;
        }
        let accept = header(header::ACCEPT);
        let content_type = header(header::CONTENT_TYPE);
        let query = parse_query(req.uri().query());
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error_response(&ApiError::bad_request(format!("reading the request body: {e}")))
            }
        };
        let r = Req {
            method,
            query,
            accept,
            content_type,
            body,
        };
        if !r.accept.is_empty()
            && !r.accept.contains("json")
            && !r.accept.contains("*/*")
            && !r.accept.contains("yaml")
        {
            return error_response(&ApiError::not_acceptable());
        }
        match route(&cluster, &segs, r).await {
            Ok(resp) => resp,
            Err(e) => {
                debug!(code = e.code, message = %e.message, "answered with an error");
                error_response(&e)
            }
        }
    }
    .instrument(span)
    .await
}

async fn route(cluster: &Arc<Cluster>, segs: &[String], r: Req) -> Result<Response<Body>, ApiError> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get_only = |v: Value| {
        if r.method == Method::GET {
            Ok(value_response(200, &v))
        } else {
            Err(ApiError::method_not_allowed(r.method.as_str()))
        }
    };
    match s.as_slice() {
        ["version"] => get_only(discovery::version(&cluster.minor())),
        ["healthz" | "livez" | "readyz", ..] => Ok(json_response(200, "ok")),
        ["api"] => get_only(discovery::core_versions()),
        ["apis"] => get_only(discovery::group_list()),
        ["api", "v1"] => get_only(discovery::resource_list("", "v1").ok_or_else(ApiError::no_route)?),
        ["apis", g] => get_only(discovery::api_group(g).ok_or_else(ApiError::no_route)?),
        ["apis", g, v] => get_only(discovery::resource_list(g, v).ok_or_else(ApiError::no_route)?),
        ["api", "v1", rest @ ..] => resource(cluster, "", "v1", rest, r).await,
        ["apis", g, v, rest @ ..] => resource(cluster, g, v, rest, r).await,
        _ => Err(ApiError::no_route()),
    }
}

/// A resource path, resolved.
struct Target3<'a> {
    info: &'static ResourceInfo,
    ns: Option<&'a str>,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn resolve<'a>(group: &str, version: &str, rest: &[&'a str]) -> Result<(Target3<'a>, bool), ApiError> {
    let (legacy_watch, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    if let ["namespaces", ns, plural, tail @ ..] = rest {
        if let Some(info) = resources::lookup(group, version, plural).filter(|i| i.namespaced) {
            if tail.len() > 2 {
                return Err(ApiError::no_route());
            }
            return Ok((
                Target3 {
                    info,
                    ns: Some(ns),
                    name: tail.first().copied(),
                    sub: tail.get(1).copied(),
                },
                legacy_watch,
            ));
        }
    }
    let [plural, tail @ ..] = rest else {
        return Err(ApiError::no_route());
    };
    let info = resources::lookup(group, version, plural).ok_or_else(ApiError::no_route)?;
    if tail.len() > 2 || (info.namespaced && !tail.is_empty()) {
        return Err(ApiError::no_route());
    }
    Ok((
        Target3 {
            info,
            ns: None,
            name: tail.first().copied(),
            sub: tail.get(1).copied(),
        },
        legacy_watch,
    ))
}

async fn resource(
    cluster: &Arc<Cluster>,
    group: &str,
    version: &str,
    rest: &[&str],
    r: Req,
) -> Result<Response<Body>, ApiError> {
    let (t, legacy_watch) = resolve(group, version, rest)?;
    let info = t.info;
    let kind = info.kind;
    let ns = t.ns.unwrap_or("");
    let now = Timestamp::now();
    match (&r.method, t.name, t.sub) {
        (&Method::GET, None, None) => {
            if legacy_watch || r.flag("watch") {
                watch(cluster.clone(), info, t.ns.map(str::to_string), &r).await
            } else {
                list(cluster, info, t.ns, &r)
            }
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            let store = cluster.lock();
            let e = store
                .get(kind, ns, name)
                .ok_or_else(|| ApiError::not_found(info, name))?;
            if r.wants_table() {
                let include = IncludeObject::parse(r.q("includeObject")).map_err(ApiError::bad_request)?;
                let t = printers::table(
                    kind,
                    &[e.obj.as_ref()],
                    include,
                    now,
                    json!({"resourceVersion": store.rv().to_string()}),
                );
                return Ok(value_response(200, &t));
            }
            Ok(json_response(200, e.json.clone()))
        }
        (&Method::GET, Some(name), Some("scale")) if has_sub(info, "scale") => {
            let store = cluster.lock();
            let e = store
                .get(kind, ns, name)
                .ok_or_else(|| ApiError::not_found(info, name))?;
            Ok(value_response(
                200,
                &api::scale_of(&e.obj).ok_or_else(ApiError::no_route)?,
            ))
        }
        (&Method::POST, None, None) => {
            if info.namespaced && t.ns.is_none() {
                return Err(ApiError::method_not_allowed("POST"));
            }
            let body = r.body_json()?;
            let dry = r.dry_run();
            let e = cluster.write(|s| api::create(s, now, kind, ns, body, dry))?;
            Ok(json_response(201, e.json))
        }
        (&Method::POST, Some(name), Some("eviction")) if kind == Kind::Pod => {
            let body = r.body_json()?;
            let dry = r.dry_run();
            let out = cluster.write(|s| {
                let out = crate::eviction::evict(s, now, ns, name, &body, dry);
                if !dry {
                    if let Ok(o) = &out {
                        s.stats_mut().eviction(o.allowed);
                    } else if matches!(&out, Err(e) if e.code == 429 || e.code == 403 || e.code == 500) {
                        s.stats_mut().eviction(false);
                    }
                }
                out
            })?;
            if let Some(e) = out.error {
                return Err(e);
            }
            Ok(value_response(out.code, &out.status))
        }
        (&Method::POST, Some(name), Some("binding")) if kind == Kind::Pod => {
            let body = r.body_json()?;
            cluster.write(|s| bind(s, ns, name, &body))?;
            Ok(value_response(
                201,
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}),
            ))
        }
        (&Method::PUT, Some(name), None | Some("status")) => {
            let body = r.body_json()?;
            let target = if t.sub == Some("status") {
                Target::Status
            } else {
                Target::Main
            };
            let dry = r.dry_run();
            let e = cluster.write(|s| api::replace(s, kind, ns, name, body, target, dry))?;
            Ok(json_response(200, e.json))
        }
        (&Method::PUT, Some(name), Some("scale")) if has_sub(info, "scale") => {
            let body = r.body_json()?;
            let dry = r.dry_run();
            let e = cluster.write(|s| api::set_scale(s, kind, ns, name, &body, dry))?;
            Ok(value_response(
                200,
                &api::scale_of(&e.obj).ok_or_else(ApiError::no_route)?,
            ))
        }
        (&Method::PATCH, Some(name), None | Some("status")) => {
            let ty = PatchType::from_content_type(&r.content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(&r.content_type))?;
            let target = if t.sub == Some("status") {
                Target::Status
            } else {
                Target::Main
            };
            let dry = r.dry_run();
            let e = cluster.write(|s| api::patch(s, kind, ns, name, &r.body, ty, target, dry))?;
            Ok(json_response(200, e.json))
        }
        (&Method::PATCH, Some(name), Some("scale")) if has_sub(info, "scale") => {
            let ty = PatchType::from_content_type(&r.content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(&r.content_type))?;
            let dry = r.dry_run();
            let e = cluster.write(|s| {
                let cur = s
                    .get_obj(kind, ns, name)
                    .ok_or_else(|| ApiError::not_found(info, name))?;
                let scale = api::scale_of(&cur).ok_or_else(ApiError::no_route)?;
                let patched = crate::patch::apply_scale_patch(&scale, &r.body, ty)?;
                api::set_scale(s, kind, ns, name, &patched, dry)
            })?;
            Ok(value_response(
                200,
                &api::scale_of(&e.obj).ok_or_else(ApiError::no_route)?,
            ))
        }
        (&Method::DELETE, Some(name), None) => {
            let opts = delete_options(&r)?;
            let out = cluster.write(|s| api::delete(s, now, kind, ns, name, &opts))?;
            Ok(match out {
                Deleted::Pending(e) => json_response(200, e.json),
                Deleted::Gone(e) if kind == Kind::Pod => json_response(200, e.json),
                Deleted::Gone(e) => value_response(
                    200,
                    &json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": info.group, "kind": info.plural, "uid": e.obj.meta().uid},
                    }),
                ),
            })
        }
        (&Method::DELETE, None, None) => {
            let opts = delete_options(&r)?;
            let (lsel, fsel) = selectors(&r)?;
            let out = cluster.write(|s| {
                let victims: Vec<(String, String)> = s
                    .list(kind, t.ns)
                    .filter(|e| matches(&e.obj, &lsel, &fsel).unwrap_or(false))
                    .map(|e| (e.obj.namespace().to_string(), e.obj.name().to_string()))
                    .collect();
                let mut items = Vec::new();
                for (vns, vname) in victims {
                    if let Ok(Deleted::Gone(e) | Deleted::Pending(e)) =
                        api::delete(s, now, kind, &vns, &vname, &opts)
                    {
                        items.push(e.json);
                    }
                }
                items
            });
            Ok(json_response(
                200,
                list_body(info, &cluster.lock().rv().to_string(), None, None, &out),
            ))
        }
        (_, Some(_), Some(sub)) if !info.subresources.iter().any(|s| s.name == sub) && sub != "status" => {
            Err(ApiError::no_route())
        }
        (m, _, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

fn has_sub(info: &ResourceInfo, name: &str) -> bool {
    info.subresources.iter().any(|s| s.name == name)
}

fn delete_options(r: &Req) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        dry_run: r.dry_run(),
        ..Default::default()
    };
    if let Some(g) = r.q("gracePeriodSeconds") {
        o.grace_period_seconds = Some(g.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "gracePeriodSeconds: invalid value {g:?}: expected an integer"
            ))
        })?);
    }
    o.propagation = r.q("propagationPolicy").map(str::to_string);
    let body = r.body_json()?;
    Ok(o.merge_body(&body))
}

/// `pods/binding`: what the scheduler posts.
fn bind(store: &mut Store, ns: &str, name: &str, body: &Value) -> Result<(), ApiError> {
    let info = Kind::Pod.info();
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(info, name, "target.name", "Required value"))?;
    let cur = store
        .get_obj(Kind::Pod, ns, name)
        .ok_or_else(|| ApiError::not_found(info, name))?;
    let Object::Pod(mut pod) = (*cur).clone() else {
        return Err(ApiError::not_found(info, name));
    };
    let spec = pod.spec.get_or_insert_with(Default::default);
    if let Some(existing) = &spec.node_name {
        return Err(ApiError::conflict(
            info,
            name,
            &format!("pod {name} is already assigned to node \"{existing}\""),
        ));
    }
    spec.node_name = Some(node.to_string());
    store.replace(Object::Pod(pod));
    Ok(())
}

fn selectors(r: &Req) -> Result<(Option<LabelSelector>, Option<FieldSelector>), ApiError> {
    let l = r
        .q("labelSelector")
        .filter(|s| !s.is_empty())
        .map(LabelSelector::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let f = r
        .q("fieldSelector")
        .filter(|s| !s.is_empty())
        .map(FieldSelector::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    Ok((l, f))
}

fn matches(obj: &Object, l: &Option<LabelSelector>, f: &Option<FieldSelector>) -> Result<bool, String> {
    if let Some(l) = l {
        if !l.matches(obj.meta().labels.as_ref()) {
            return Ok(false);
        }
    }
    match f {
        Some(f) => f.matches(obj),
        None => Ok(true),
    }
}

/// Checks the field selector is supported for the kind even when there is nothing to match.
fn check_fields(kind: Kind, f: &Option<FieldSelector>) -> Result<(), ApiError> {
    if let Some(f) = f {
        f.validate(kind).map_err(ApiError::bad_request)?;
    }
    Ok(())
}

fn list_body(
    info: &ResourceInfo,
    rv: &str,
    cont: Option<String>,
    remaining: Option<usize>,
    items: &[Bytes],
) -> Bytes {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(n) = remaining {
        meta["remainingItemCount"] = json!(n);
    }
    let head = json!({"kind": format!("{}List", info.kind_name), "apiVersion": info.api_version(), "metadata": meta});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let mut out = Vec::with_capacity(head.len() + items.iter().map(|i| i.len() + 1).sum::<usize>() + 16);
    out.extend_from_slice(&head[..head.len() - 1]);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    out.into()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    ns: String,
    name: String,
}

fn list(
    cluster: &Arc<Cluster>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let (lsel, fsel) = selectors(r)?;
    check_fields(info.kind, &fsel)?;
    let limit = match r.q("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?,
        None => 0,
    };
    let token = match r.q("continue").filter(|c| !c.is_empty()) {
        Some(c) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice::<Continue>(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?,
        ),
        None => None,
    };
    let store = cluster.lock();
    let rv = token.as_ref().map_or(store.rv(), |t| t.rv);
    let start = token
        .as_ref()
        .map(|t| (t.ns.clone(), t.name.clone()))
        .unwrap_or_default();
    let mut picked: Vec<&crate::store::Entry> = Vec::new();
    let mut more = None;
    let mut remaining = 0usize;
    for (key, e) in store.list_after(info.kind, start) {
        if ns.is_some_and(|n| key.0 != n) {
            continue;
        }
        if !matches(&e.obj, &lsel, &fsel).map_err(ApiError::bad_request)? {
            continue;
        }
        if limit > 0 && picked.len() == limit {
            if more.is_none() {
                let last = picked
                    .last()
                    .map(|e| (e.obj.namespace().to_string(), e.obj.name().to_string()))
                    .unwrap_or_default();
                more = Some(last);
            }
            remaining += 1;
            continue;
        }
        picked.push(e);
    }
    let cont = more.map(|(ns, name)| {
        base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&Continue { rv, ns, name }).unwrap_or_default())
    });
    let remaining = (cont.is_some() && lsel.is_none() && fsel.is_none()).then_some(remaining);
    if r.wants_table() {
        let include = IncludeObject::parse(r.q("includeObject")).map_err(ApiError::bad_request)?;
        let objs: Vec<&Object> = picked.iter().map(|e| e.obj.as_ref()).collect();
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(c) = &cont {
            meta["continue"] = json!(c);
        }
        return Ok(value_response(
            200,
            &printers::table(info.kind, &objs, include, Timestamp::now(), meta),
        ));
    }
    let items: Vec<Bytes> = picked.iter().map(|e| e.json.clone()).collect();
    Ok(json_response(
        200,
        list_body(info, &rv.to_string(), cont, remaining, &items),
    ))
}

fn event_line(ty: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    out.into()
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": info.kind_name, "apiVersion": info.api_version(), "metadata": meta});
    event_line("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
}

/// What a watcher sees of a change: the event type after selector transitions, or nothing.
fn classify(
    cur: &Object,
    prev: Option<&Object>,
    ty: EventType,
    ns: &Option<String>,
    l: &Option<LabelSelector>,
    f: &Option<FieldSelector>,
) -> Option<&'static str> {
    if ns.as_deref().is_some_and(|n| n != cur.namespace()) {
        return None;
    }
    let now = matches(cur, l, f).unwrap_or(false);
    if ty == EventType::Deleted {
        return now.then_some("DELETED");
    }
    let before = prev.map(|p| matches(p, l, f).unwrap_or(false));
    match (before, now) {
        (None, true) => Some(ty.as_str()),
        (Some(true), true) => Some("MODIFIED"),
        (Some(false), true) => Some("ADDED"),
        (Some(true), false) => Some("DELETED"),
        _ => None,
    }
}

fn past_line(
    kind: Kind,
    p: &Past,
    ns: &Option<String>,
    l: &Option<LabelSelector>,
    f: &Option<FieldSelector>,
) -> Option<Bytes> {
    let read = |b: &Bytes| {
        serde_json::from_slice::<Value>(b)
            .ok()
            .and_then(|v| Object::from_json(kind, v).ok())
    };
    let cur = read(&p.json)?;
    let prev = p.prev_json.as_ref().and_then(read);
    let ty = if p.prev_json.is_none() && p.ty == EventType::Modified {
        EventType::Added
    } else {
        p.ty
    };
    classify(&cur, prev.as_ref(), ty, ns, l, f).map(|t| event_line(t, &p.json))
}

async fn watch(
    cluster: Arc<Cluster>,
    info: &'static ResourceInfo,
    ns: Option<String>,
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let (lsel, fsel) = selectors(r)?;
    check_fields(info.kind, &fsel)?;
    let bookmarks = r.flag("allowWatchBookmarks");
    let send_initial = r.q("sendInitialEvents") == Some("true");
    let timeout = r
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let rv_param = r
        .q("resourceVersion")
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let start_rv = match rv_param.as_deref() {
        None | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::invalid(
                info,
                "",
                "resourceVersion",
                &format!("Invalid value: \"{v}\": must be a valid resource version"),
            )
        })?),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut lines = Vec::new();
    let (mut changes, mut last_rv) = {
        let store = cluster.lock();
        let current = store.rv();
        match start_rv {
            Some(rv) if !send_initial => match store.since(info.kind, rv) {
                Ok(past) => {
                    for p in &past {
                        if let Some(line) = past_line(info.kind, p, &ns, &lsel, &fsel) {
                            lines.push(line);
                        }
                    }
                }
                Err(expired) => {
                    let status =
                        ApiError::expired(format!("too old resource version: {rv} ({})", expired.oldest))
                            .status();
                    lines.push(event_line(
                        "ERROR",
                        &serde_json::to_vec(&status).unwrap_or_default(),
                    ));
                    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
                    for l in lines {
                        let _ = tx.try_send(l);
                    }
                    drop(tx);
                    return Ok(stream_response(stream));
                }
            },
            _ => {
                for e in store.list(info.kind, ns.as_deref()) {
                    if matches(&e.obj, &lsel, &fsel).unwrap_or(false) {
                        lines.push(event_line("ADDED", &e.json));
                    }
                }
                if send_initial {
                    lines.push(bookmark(info, current, true));
                }
            }
        }
        (store.subscribe(), current)
    };
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let kind = info.kind;
    tokio::spawn(
        async move {
            for l in lines {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tokio::select! {
                    c = changes.recv() => match c {
                        Ok(change) => {
                            if change.rv <= last_rv {
                                continue; // already sent while catching up
                            }
                            last_rv = change.rv;
                            if let Some(line) = change_line(kind, &change, &ns, &lsel, &fsel) {
                                if tx.send(line).await.is_err() { return; }
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // Fell behind the live feed: catch up from the history, as the watch
                            // cache serves a slow watcher; past the history, 410 as a real server.
                            debug!(missed = n, "watcher fell behind; catching up from the history");
                            let (past, rx) = {
                                let store = cluster.lock();
                                (store.since(kind, last_rv), store.subscribe())
                            };
                            changes = rx;
                            match past {
                                Ok(past) => {
                                    for p in &past {
                                        last_rv = last_rv.max(p.rv);
                                        if let Some(line) = past_line(kind, p, &ns, &lsel, &fsel) {
                                            if tx.send(line).await.is_err() { return; }
                                        }
                                    }
                                }
                                Err(expired) => {
                                    let status = ApiError::expired(format!("too old resource version: {last_rv} ({})", expired.oldest)).status();
                                    let _ = tx.send(event_line("ERROR", &serde_json::to_vec(&status).unwrap_or_default())).await;
                                    return;
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(bookmark(kind.info(), last_rv, false)).await.is_err() { return; }
                    }
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                }
            }
        }
        .instrument(tracing::Span::current()),
    );
    Ok(stream_response(stream))
}

fn change_line(
    kind: Kind,
    c: &Change,
    ns: &Option<String>,
    l: &Option<LabelSelector>,
    f: &Option<FieldSelector>,
) -> Option<Bytes> {
    if c.kind != kind {
        return None;
    }
    classify(&c.entry.obj, c.prev.as_deref(), c.ty, ns, l, f).map(|t| event_line(t, &c.entry.json))
}

fn stream_response<S>(stream: S) -> Response<Body>
where
    S: tokio_stream::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static,
{
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind_listener(addr: SocketAddr) -> Result<TcpListener, crate::error::SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::error::SimError::Bind {
            addr: addr.to_string(),
            source,
        })
}
