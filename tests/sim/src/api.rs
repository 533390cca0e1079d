//! The API verbs with the rules a real kube-apiserver applies: create, replace, patch, delete
//! (graceful for pods, finalizers, propagation), status and scale subresources, preconditions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use crate::defaults;
use crate::error::ApiError;
use crate::object::Object;
use crate::patch::{apply_patch, PatchType};
use crate::resources::{Kind, ResourceInfo};
use crate::store::{Entry, Store};

/// What a write is aimed at: the object itself or its `status` subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The main resource (status changes are ignored where status is a subresource).
    Main,
    /// The `status` subresource (only status changes are kept).
    Status,
}

/// `DeleteOptions` as far as the simulator honours them.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `propagationPolicy` (`Orphan`, `Background`, `Foreground`).
    pub propagation: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body (may be empty) merged with query parameters already parsed.
    pub fn merge_body(mut self, body: &Value) -> DeleteOptions {
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            self.grace_period_seconds = Some(g);
        }
        if let Some(p) = body.get("preconditions") {
            if let Some(u) = p.get("uid").and_then(Value::as_str) {
                self.uid = Some(u.into());
            }
            if let Some(r) = p.get("resourceVersion").and_then(Value::as_str) {
                self.resource_version = Some(r.into());
            }
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation = Some(p.into());
        }
        if let Some(d) = body.get("dryRun").and_then(Value::as_array) {
            self.dry_run |= d.iter().any(|v| v == "All");
        }
        self
    }
}

/// Result of a delete: the object is gone, or it now waits (graceful pod deletion, finalizers).
#[derive(Debug)]
pub enum Deleted {
    /// Removed from the store; the entry as it was.
    Gone(Entry),
    /// Still there with `deletionTimestamp` set.
    Pending(Entry),
}

/// The current time as a Kubernetes `Time`.
pub fn time(now: Timestamp) -> Time {
    Time(now.round(k8s_openapi::jiff::Unit::Second).unwrap_or(now))
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6] & 0x0f, b[7], 8 | (b[8] & 3), b[8] >> 4, b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// Five random characters from the alphabet Kubernetes uses for generated names.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks a name as a DNS-1123 subdomain; the message is the real validator's.
fn validate_name(info: &ResourceInfo, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            info,
            name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        ))
    }
}

/// Checks the object against the rules that matter to workloads (selector vs template labels,
/// replicas, PDB fields).
fn validate(obj: &Object) -> Result<(), ApiError> {
    let info = obj.kind().info();
    let name = obj.name();
    let selector_matches = |sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
                            labels: Option<&BTreeMap<String, String>>| {
        sel.match_labels
            .as_ref()
            .is_none_or(|ml| ml.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)))
    };
    match obj {
        Object::Deployment(d) => {
            let spec = d
                .spec
                .as_ref()
                .ok_or_else(|| ApiError::invalid(info, name, "spec", "Required value"))?;
            if spec.replicas.unwrap_or(1) < 0 {
                return Err(ApiError::invalid(
                    info,
                    name,
                    "spec.replicas",
                    "Invalid value: must be greater than or equal to 0",
                ));
            }
            if spec.selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && spec
                    .selector
                    .match_expressions
                    .as_ref()
                    .is_none_or(|m| m.is_empty())
            {
                return Err(ApiError::invalid(
                    info,
                    name,
                    "spec.selector",
                    "Invalid value: empty selector is invalid for deployment",
                ));
            }
            if !selector_matches(
                &spec.selector,
                spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
            ) {
                return Err(ApiError::invalid(
                    info,
                    name,
                    "spec.template.metadata.labels",
                    "Invalid value: `selector` does not match template `labels`",
                ));
            }
            if spec
                .template
                .spec
                .as_ref()
                .is_none_or(|s| s.containers.is_empty())
            {
                return Err(ApiError::invalid(
                    info,
                    name,
                    "spec.template.spec.containers",
                    "Required value",
                ));
            }
        }
        Object::ReplicaSet(r) => {
            if let Some(spec) = &r.spec {
                if spec.replicas.unwrap_or(1) < 0 {
                    return Err(ApiError::invalid(
                        info,
                        name,
                        "spec.replicas",
                        "Invalid value: must be greater than or equal to 0",
                    ));
                }
            }
        }
        Object::Pod(p) => {
            if p.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
                return Err(ApiError::invalid(info, name, "spec.containers", "Required value"));
            }
        }
        Object::PodDisruptionBudget(p) => {
            if let Some(spec) = &p.spec {
                if spec.min_available.is_some() && spec.max_unavailable.is_some() {
                    return Err(ApiError::invalid(
                        info,
                        name,
                        "spec",
                        "Invalid value: minAvailable and maxUnavailable cannot be both set",
                    ));
                }
            }
        }
        Object::HorizontalPodAutoscaler(h) => {
            if let Some(spec) = &h.spec {
                if spec.min_replicas.unwrap_or(1) > spec.max_replicas {
                    return Err(ApiError::invalid(
                        info,
                        name,
                        "spec.maxReplicas",
                        "Invalid value: must be greater than or equal to `minReplicas`",
                    ));
                }
                if spec.max_replicas < 1 {
                    return Err(ApiError::invalid(
                        info,
                        name,
                        "spec.maxReplicas",
                        "Invalid value: must be greater than 0",
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn decode(kind: Kind, value: Value) -> Result<Object, ApiError> {
    Object::from_json(kind, value)
        .map_err(|e| ApiError::bad_request(format!("error decoding {}: {}", kind.info().kind_name, e)))
}

fn check_type(info: &ResourceInfo, body: &Value) -> Result<(), ApiError> {
    let kind = body.get("kind").and_then(Value::as_str);
    let av = body.get("apiVersion").and_then(Value::as_str);
    if let Some(k) = kind {
        if k != info.kind_name {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                av.unwrap_or(""),
                info.api_version()
            ))
            .tap_kind(k, info));
        }
    }
    Ok(())
}

trait TapKind {
    fn tap_kind(self, got: &str, info: &ResourceInfo) -> Self;
}

impl TapKind for ApiError {
    fn tap_kind(mut self, got: &str, info: &ResourceInfo) -> Self {
        self.message = format!(
            "kind {got} does not match the expected kind {} for this resource",
            info.kind_name
        );
        self
    }
}

/// Creates an object from a request body, as `POST` on a collection.
pub fn create(
    store: &mut Store,
    now: Timestamp,
    kind: Kind,
    ns: &str,
    body: Value,
    dry_run: bool,
) -> Result<Entry, ApiError> {
    let info = kind.info();
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    check_type(info, &body)?;
    let mut obj = decode(kind, body)?;
    let meta = obj.meta_mut();
    if info.namespaced {
        match meta.namespace.as_deref() {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => meta.namespace = Some(ns.to_string()),
        }
    } else {
        meta.namespace = None;
    }
    if meta.name.as_deref().is_none_or(str::is_empty) {
        match meta.generate_name.as_deref() {
            Some(g) if !g.is_empty() => meta.name = Some(format!("{g}{}", random_suffix())),
            _ => {
                return Err(ApiError::invalid(
                    info,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ))
            }
        }
    }
    let name = meta.name.clone().unwrap_or_default();
    validate_name(info, &name)?;
    if info.namespaced && store.get(Kind::Namespace, "", ns).is_none() {
        return Err(ApiError::namespace_not_found(ns));
    }
    if let Some(nso) = store.get_obj(Kind::Namespace, "", ns) {
        if info.namespaced && nso.meta().deletion_timestamp.is_some() {
            return Err(ApiError::forbidden(
                info,
                &name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            ));
        }
    }
    if store.get(kind, obj.namespace(), &name).is_some() {
        return Err(ApiError::already_exists(info, &name));
    }
    prepare_for_create(&mut obj, now);
    if kind == Kind::Pod || kind != Kind::Node {
        // Nodes may be created with status (the kubelet registers that way); others start clean.
        clear_status_on_create(&mut obj);
    }
    defaults::apply(&mut obj);
    validate(&obj)?;
    if dry_run {
        return Ok(Entry {
            json: serde_json::to_vec(&obj.to_json()).unwrap_or_default().into(),
            obj: obj.into(),
        });
    }
    Ok(store.insert(obj))
}

/// Stamps uid, creation time and generation, for any object entering the store.
pub fn prepare_for_create(obj: &mut Object, now: Timestamp) {
    let tracks = obj.kind().info().tracks_generation;
    let meta = obj.meta_mut();
    meta.uid = Some(new_uid());
    meta.creation_timestamp = Some(time(now));
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.resource_version = None;
    meta.managed_fields = None;
    meta.generation = tracks.then_some(1);
}

fn clear_status_on_create(obj: &mut Object) {
    match obj {
        Object::Deployment(d) => d.status = None,
        Object::ReplicaSet(r) => r.status = None,
        Object::DaemonSet(d) => d.status = None,
        Object::HorizontalPodAutoscaler(h) => h.status = None,
        Object::PodDisruptionBudget(p) => p.status = None,
        Object::Pod(p) => p.status = None,
        _ => {}
    }
}

fn spec_json(obj: &Object) -> Value {
    obj.to_json().get("spec").cloned().unwrap_or(Value::Null)
}

/// Replaces an object from a request body (`PUT`), honouring a resourceVersion precondition.
pub fn replace(
    store: &mut Store,
    kind: Kind,
    ns: &str,
    name: &str,
    body: Value,
    target: Target,
    dry_run: bool,
) -> Result<Entry, ApiError> {
    let info = kind.info();
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    check_type(info, &body)?;
    let current = store
        .get_obj(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(info, name))?;
    let obj = decode(kind, body)?;
    let body_name = obj.name().to_string();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    match obj.meta().resource_version.as_deref() {
        Some(rv) if !rv.is_empty() => {
            if Some(rv) != current.meta().resource_version.as_deref() {
                return Err(ApiError::stale(info, name));
            }
        }
        _ => {
            // Unconditional update; Kubernetes allows it for the kinds served here.
        }
    }
    if let Some(uid) = obj.meta().uid.as_deref() {
        if !uid.is_empty() && Some(uid) != current.meta().uid.as_deref() {
            return Err(ApiError::conflict(
                info,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current.meta().uid.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    let next = merge_update(&current, obj, target);
    validate(&next)?;
    commit(store, current.as_ref(), next, dry_run)
}

/// Keeps what a write may not change: identity, creation time, deletion state, and either
/// status (main resource) or everything but status (status subresource).
fn merge_update(current: &Object, mut next: Object, target: Target) -> Object {
    let info = current.kind().info();
    if target == Target::Status {
        let mut base = current.clone();
        copy_status(&next, &mut base);
        // The status subresource may change labels? No: only status; keep metadata from current.
        next = base;
    } else if info.has_status {
        copy_status(current, &mut next);
    }
    let cm = current.meta();
    let nm = next.meta_mut();
    nm.name = cm.name.clone();
    nm.namespace = cm.namespace.clone();
    nm.uid = cm.uid.clone();
    nm.creation_timestamp = cm.creation_timestamp.clone();
    nm.deletion_timestamp = cm.deletion_timestamp.clone();
    nm.deletion_grace_period_seconds = cm.deletion_grace_period_seconds;
    nm.generation = cm.generation;
    nm.generate_name = cm.generate_name.clone();
    nm.managed_fields = None;
    if info.tracks_generation && target == Target::Main && spec_json(current) != spec_json(&next) {
        next.meta_mut().generation = Some(cm.generation.unwrap_or(0) + 1);
    }
    if let Object::Pod(p) = &mut next {
        // spec.nodeName is set only through the binding subresource once scheduled.
        if let (Object::Pod(cur), Some(spec)) = (current, p.spec.as_mut()) {
            let cur_node = cur.spec.as_ref().and_then(|s| s.node_name.clone());
            if cur_node.is_some() {
                spec.node_name = cur_node;
            }
        }
    }
    next
}

fn copy_status(from: &Object, to: &mut Object) {
    match (from, to) {
        (Object::Pod(f), Object::Pod(t)) => t.status = f.status.clone(),
        (Object::Node(f), Object::Node(t)) => t.status = f.status.clone(),
        (Object::Namespace(f), Object::Namespace(t)) => t.status = f.status.clone(),
        (Object::Deployment(f), Object::Deployment(t)) => t.status = f.status.clone(),
        (Object::ReplicaSet(f), Object::ReplicaSet(t)) => t.status = f.status.clone(),
        (Object::DaemonSet(f), Object::DaemonSet(t)) => t.status = f.status.clone(),
        (Object::HorizontalPodAutoscaler(f), Object::HorizontalPodAutoscaler(t)) => {
            t.status = f.status.clone()
        }
        (Object::PodDisruptionBudget(f), Object::PodDisruptionBudget(t)) => t.status = f.status.clone(),
        _ => {}
    }
}

/// Writes `next` over `current`, unless nothing changed (then the stored entry is returned, as a
/// real server skips no-op writes). An object being deleted whose finalizers are now empty goes.
fn commit(store: &mut Store, current: &Object, next: Object, dry_run: bool) -> Result<Entry, ApiError> {
    let mut cmp = next.clone();
    cmp.meta_mut().resource_version = current.meta().resource_version.clone();
    if &cmp == current {
        return store
            .get(current.kind(), current.namespace(), current.name())
            .cloned()
            .ok_or_else(|| ApiError::not_found(current.kind().info(), current.name()));
    }
    if dry_run {
        return Ok(Entry {
            json: serde_json::to_vec(&next.to_json()).unwrap_or_default().into(),
            obj: next.into(),
        });
    }
    let finalizers_done = next.meta().finalizers.as_ref().is_none_or(|f| f.is_empty());
    if next.meta().deletion_timestamp.is_some() && finalizers_done && next.kind() != Kind::Pod {
        let kind = next.kind();
        let (ns, name) = (next.namespace().to_string(), next.name().to_string());
        store.replace(next);
        return store
            .remove(kind, &ns, &name)
            .ok_or_else(|| ApiError::not_found(kind.info(), &name));
    }
    Ok(store.replace(next))
}

/// Applies a `PATCH` body. A resourceVersion inside the patch acts as a precondition.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &mut Store,
    kind: Kind,
    ns: &str,
    name: &str,
    body: &[u8],
    ty: PatchType,
    target: Target,
    dry_run: bool,
) -> Result<Entry, ApiError> {
    let info = kind.info();
    let current = store
        .get(kind, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(info, name))?;
    let doc: Value = serde_json::from_slice(&current.json).unwrap_or(Value::Null);
    let patched = apply_patch(kind, &doc, body, ty)?;
    let obj = decode(kind, patched)?;
    if let Some(rv) = obj.meta().resource_version.as_deref() {
        if Some(rv) != current.obj.meta().resource_version.as_deref() {
            return Err(ApiError::stale(info, name));
        }
    }
    let next = merge_update(&current.obj, obj, target);
    validate(&next)?;
    commit(store, &current.obj, next, dry_run)
}

/// Deletes an object as `DELETE` does: pods bound to a node terminate gracefully (the kubelet
/// finishes the job), objects with finalizers wait for them, dependents follow the propagation policy.
pub fn delete(
    store: &mut Store,
    now: Timestamp,
    kind: Kind,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Deleted, ApiError> {
    let info = kind.info();
    let current = store
        .get_obj(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(info, name))?;
    let meta = current.meta();
    if let Some(uid) = &opts.uid {
        if Some(uid) != meta.uid.as_ref() {
            return Err(ApiError::conflict(
                info,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta.uid.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        if Some(rv) != meta.resource_version.as_ref() {
            return Err(ApiError::conflict(info, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", meta.resource_version.as_deref().unwrap_or(""))));
        }
    }
    let mut next = (*current).clone();
    let mut graceful = false;
    if let Object::Pod(p) = current.as_ref() {
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let terminal = phase == "Succeeded" || phase == "Failed";
        let grace = opts
            .grace_period_seconds
            .or(p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0);
        if bound && !terminal && grace > 0 {
            let deadline = now + SignedDuration::from_secs(grace);
            let existing = p.metadata.deletion_timestamp.as_ref().map(|t| t.0);
            if existing.is_some_and(|e| e <= deadline) {
                // Already terminating at least this soon: nothing changes.
                return Ok(Deleted::Pending(
                    store
                        .get(kind, ns, name)
                        .cloned()
                        .ok_or_else(|| ApiError::not_found(info, name))?,
                ));
            }
            let m = next.meta_mut();
            m.deletion_timestamp = Some(time(deadline));
            m.deletion_grace_period_seconds = Some(grace);
            graceful = true;
        }
    }
    let has_finalizers = meta.finalizers.as_ref().is_some_and(|f| !f.is_empty());
    if has_finalizers && !graceful {
        if meta.deletion_timestamp.is_some() {
            return Ok(Deleted::Pending(
                store
                    .get(kind, ns, name)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(info, name))?,
            ));
        }
        let m = next.meta_mut();
        m.deletion_timestamp = Some(time(now));
        m.deletion_grace_period_seconds = Some(0);
        graceful = true;
    }
    if kind == Kind::Namespace {
        if let Object::Namespace(n) = &mut next {
            n.status.get_or_insert_with(Default::default).phase = Some("Terminating".into());
        }
        if next.meta().deletion_timestamp.is_none() {
            next.meta_mut().deletion_timestamp = Some(time(now));
            next.meta_mut().deletion_grace_period_seconds = Some(0);
        }
        graceful = true;
    }
    if opts.dry_run {
        let entry = Entry {
            json: serde_json::to_vec(&next.to_json()).unwrap_or_default().into(),
            obj: next.into(),
        };
        return Ok(if graceful {
            Deleted::Pending(entry)
        } else {
            Deleted::Gone(entry)
        });
    }
    if opts.propagation.as_deref() == Some("Orphan") {
        orphan_dependents(store, meta.uid.as_deref().unwrap_or(""));
    }
    if graceful {
        if info.tracks_generation {
            let g = next.meta().generation.unwrap_or(0);
            next.meta_mut().generation = Some(g + 1);
        }
        return Ok(Deleted::Pending(store.replace(next)));
    }
    store
        .remove(kind, ns, name)
        .map(Deleted::Gone)
        .ok_or_else(|| ApiError::not_found(info, name))
}

/// Removes owner references to `uid` from every object (propagationPolicy=Orphan).
fn orphan_dependents(store: &mut Store, uid: &str) {
    let mut changed = Vec::new();
    for kind in [Kind::ReplicaSet, Kind::Pod] {
        for e in store.list(kind, None) {
            if let Some(refs) = &e.obj.meta().owner_references {
                if refs.iter().any(|r| r.uid == uid) {
                    let mut o = (*e.obj).clone();
                    if let Some(r) = o.meta_mut().owner_references.as_mut() {
                        r.retain(|r| r.uid != uid);
                    }
                    changed.push(o);
                }
            }
        }
    }
    for o in changed {
        store.replace(o);
    }
}

/// The `autoscaling/v1 Scale` view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Object) -> Option<Value> {
    let (spec_replicas, status_replicas, selector, meta) = match obj {
        Object::Deployment(d) => (
            d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            d.spec.as_ref().map(|s| &s.selector),
            &d.metadata,
        ),
        Object::ReplicaSet(r) => (
            r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            r.status.as_ref().map(|s| s.replicas).unwrap_or(0),
            r.spec.as_ref().map(|s| &s.selector),
            &r.metadata,
        ),
        _ => return None,
    };
    let selector = selector
        .and_then(|s| s.match_labels.as_ref())
        .map(|ml| {
            ml.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Some(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
            "creationTimestamp": meta.creation_timestamp,
        },
        "spec": {"replicas": spec_replicas},
        "status": {"replicas": status_replicas, "selector": selector},
    }))
}

/// Writes `spec.replicas` from a Scale (`PUT .../scale`, or a patch applied to the Scale view).
pub fn set_scale(
    store: &mut Store,
    kind: Kind,
    ns: &str,
    name: &str,
    scale: &Value,
    dry_run: bool,
) -> Result<Entry, ApiError> {
    let info = kind.info();
    let current = store
        .get_obj(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(info, name))?;
    if let Some(rv) = scale.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        if !rv.is_empty() && Some(rv) != current.meta().resource_version.as_deref() {
            return Err(ApiError::stale(info, name));
        }
    }
    let replicas = scale
        .pointer("/spec/replicas")
        .map(|r| r.as_i64().ok_or(()))
        .transpose()
        .map_err(|_| ApiError::bad_request("Scale.spec.replicas: expected an integer"))?
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            info,
            name,
            "spec.replicas",
            &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let replicas = i32::try_from(replicas)
        .map_err(|_| ApiError::invalid(info, name, "spec.replicas", "Invalid value: too large"))?;
    let mut next = (*current).clone();
    match &mut next {
        Object::Deployment(d) => d.spec.get_or_insert_with(Default::default).replicas = Some(replicas),
        Object::ReplicaSet(r) => r.spec.get_or_insert_with(Default::default).replicas = Some(replicas),
        _ => return Err(ApiError::no_route()),
    }
    let next = merge_update(&current, next, Target::Main);
    commit(store, &current, next, dry_run)
}
