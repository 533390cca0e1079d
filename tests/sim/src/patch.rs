//! Applies PATCH bodies (JSON, merge, strategic merge, apply) to stored objects as kube-apiserver 1.33 does.
//!
//! Everything here is pure: [`apply_patch`] takes the stored object as JSON and the request body and
//! returns the patched object (or the error the real server would answer with). It follows
//! `k8s.io/apiserver/pkg/endpoints/handlers/patch.go` for the flow and status codes,
//! `gopkg.in/evanphx/json-patch.v4` for JSON and merge patches and
//! `k8s.io/apimachinery/pkg/util/strategicpatch` for strategic merge patches, whose
//! `patchStrategy`/`patchMergeKey` struct tags are reproduced in the tables below.

use std::collections::{HashMap, HashSet};

use json_patch::jsonptr::Pointer;
use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::{Map, Value};

use crate::object::Object;
use crate::resources::Kind;

/// The most operations one JSON patch may carry (`maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The media types the server lists when it refuses a Content-Type, in its order.
const ACCEPTED_PATCH_TYPES: &str = "application/json-patch+json, application/merge-patch+json, \
     application/strategic-merge-patch+json, application/apply-patch+yaml";

/// The message of every 422 the server builds with `NewGenericServerResponse`.
const REJECTED: &str = "the server rejected our request due to an error in our request";

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// The kinds of PATCH kube-apiserver accepts for built-in resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json`: an RFC 6902 list of operations.
    Json,
    /// `application/merge-patch+json`: an RFC 7386 merge patch (`null` deletes).
    Merge,
    /// `application/strategic-merge-patch+json`: Kubernetes' strategic merge patch.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply, simplified (see [`apply_patch`]).
    Apply,
}

impl PatchType {
    /// Every patch type, in the order the server lists them.
    pub const ALL: [PatchType; 4] = [
        PatchType::Json,
        PatchType::Merge,
        PatchType::StrategicMerge,
        PatchType::Apply,
    ];

    /// From a request Content-Type; parameters such as `; charset=utf-8` are ignored. `None` for
    /// anything else (the server then answers [`PatchError::UnsupportedMediaType`]), including
    /// `application/apply-patch+cbor`, which 1.33 serves only behind an alpha feature gate.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        PatchType::ALL.into_iter().find(|t| t.content_type() == base)
    }

    /// The Content-Type that selects this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a PATCH failed. `Display` is the `message` of the Status a real kube-apiserver answers
/// with; [`PatchError::code`] and [`PatchError::reason`] give its `code` and `reason`.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body could not be decoded, uses a directive in a malformed way, or names another
    /// object (400 BadRequest).
    #[error("{0}")]
    BadRequest(String),
    /// The Content-Type is not a patch type (415 UnsupportedMediaType).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: {}",
        ACCEPTED_PATCH_TYPES
    )]
    UnsupportedMediaType,
    /// A JSON patch operation did not apply (a failed `test`, a missing path, an unknown `op`),
    /// or a strategic merge patch nests lists in lists (422 Invalid). The server's Status carries
    /// only the generic message; `detail` keeps the reason, worded as evanphx/json-patch does.
    #[error("{}", REJECTED)]
    Unprocessable {
        /// The specific reason, for logs.
        detail: String,
    },
    /// The patched object no longer decodes as its kind (422 Invalid). The server names neither
    /// kind nor object here, hence the message's odd start: ` "" is invalid: patch: ...`.
    #[error(" \"\" is invalid: patch: Invalid value: {}: {}", go_quote(.value), .detail)]
    InvalidObject {
        /// The patched object (JSON and merge patches) or the patch (strategic, apply), as the
        /// server prints it.
        value: String,
        /// What did not decode.
        detail: String,
    },
    /// A JSON patch with more than [`MAX_JSON_PATCH_OPERATIONS`] operations (413).
    #[error("Request entity too large: The allowed maximum operations in a JSON patch is {}, got {}", MAX_JSON_PATCH_OPERATIONS, .0)]
    TooManyOperations(usize),
    /// A strategic merge patch the merge code refuses (an item without its merge key, an unknown
    /// `$patch` value, mixed element types, ...). The real server passes these errors through
    /// unconverted: code 500 and no reason at all.
    #[error("{0}")]
    Internal(String),
}

impl PatchError {
    /// The HTTP status code of the Status.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::UnsupportedMediaType => 415,
            PatchError::Unprocessable { .. } | PatchError::InvalidObject { .. } => 422,
            PatchError::TooManyOperations(_) => 413,
            PatchError::Internal(_) => 500,
        }
    }

    /// The Status `reason`; empty for [`PatchError::Internal`], whose Status has none (omit it).
    pub fn reason(&self) -> &'static str {
        match self {
            PatchError::BadRequest(_) => "BadRequest",
            PatchError::UnsupportedMediaType => "UnsupportedMediaType",
            PatchError::Unprocessable { .. } | PatchError::InvalidObject { .. } => "Invalid",
            PatchError::TooManyOperations(_) => "RequestEntityTooLarge",
            PatchError::Internal(_) => "",
        }
    }
}

/// Applies `body` of type `ty` to `doc` (the stored object as JSON, with apiVersion/kind) for an
/// object of `kind`, and returns the new object as JSON.
///
/// As on the real server, the result is then decoded as `kind` (a value of the wrong type is a 422),
/// its namespace is made to agree with the stored one (filled in when the patch removed it, cleared
/// for cluster-scoped kinds; a different one is a 400), and its name must still be the stored one
/// (else 400). The returned JSON is that decoded object re-encoded, so unknown fields, `null`s and
/// patch directives never reach the store, and emptied `metadata` labels, annotations, finalizers
/// and ownerReferences are dropped as Go's `omitempty` drops them. Comparing `metadata.resourceVersion` (409 Conflict) and
/// status-subresource rules are the caller's.
///
/// [`PatchType::Apply`] is a simplified server-side apply: the body (YAML or JSON) must name this
/// object's apiVersion, kind and metadata.name, and the applied configuration is then merged into
/// the live object with strategic-merge rules (fields it names are set, `null` removes a field,
/// merge lists merge by key). Field ownership (`managedFields`) is not tracked, so fields the
/// configuration omits are never removed, `force` and conflicts between managers do not exist, and
/// `$`-directives in the configuration are ignored.
pub fn apply_patch(kind: Kind, doc: &Value, body: &[u8], ty: PatchType) -> Result<Value, PatchError> {
    match ty {
        PatchType::Json => {
            let patched = json_patch_document(doc, body)?;
            finish(kind, doc, patched, |v| v.to_string())
        }
        PatchType::Merge => {
            let patched = merge_patch_document(doc, body)?;
            finish(kind, doc, patched, |v| v.to_string())
        }
        PatchType::StrategicMerge => {
            let patch = decode_strategic_patch(body)?;
            let shown = go_fmt(&Value::Object(patch.clone()));
            let patched = Strategic { kind }.patch_document(doc, patch)?;
            finish(kind, doc, patched, |_| shown)
        }
        PatchType::Apply => {
            let config = decode_apply_configuration(kind, doc, body)?;
            let shown = go_fmt(&Value::Object(config.clone()));
            let patched = Strategic { kind }.patch_document(doc, config)?;
            finish(kind, doc, patched, |_| shown)
        }
    }
}

/// Applies a patch to an `autoscaling/v1 Scale` (the `scale` subresource). Scale has no lists, so a
/// strategic merge patch or an apply configuration merges as a merge patch does.
pub fn apply_scale_patch(doc: &Value, body: &[u8], ty: PatchType) -> Result<Value, PatchError> {
    match ty {
        PatchType::Json => json_patch_document(doc, body),
        PatchType::Merge | PatchType::StrategicMerge => merge_patch_document(doc, body),
        PatchType::Apply => {
            let config: Value = serde_yaml::from_slice(body)
                .map_err(|e| PatchError::BadRequest(format!("error decoding YAML: {e}")))?;
            let mut patched = doc.clone();
            json_patch::merge(&mut patched, &config);
            Ok(patched)
        }
    }
}

/// Decodes the patched JSON as the typed object and enforces the namespace and name of the stored
/// object, as `jsonPatcher`/`smpPatcher` and `patcher.applyPatch` do.
fn finish(
    kind: Kind,
    doc: &Value,
    patched: Value,
    shown: impl FnOnce(&Value) -> String,
) -> Result<Value, PatchError> {
    let mut object = match Object::from_json(kind, patched.clone()) {
        Ok(object) => object,
        Err(detail) => {
            return Err(PatchError::InvalidObject {
                value: shown(&patched),
                detail,
            })
        }
    };
    let stored = |field: &str| {
        doc.pointer(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let url_name = stored("/metadata/name");
    let url_namespace = if kind.info().namespaced {
        stored("/metadata/namespace")
    } else {
        String::new()
    };

    // rest.EnsureObjectNamespaceMatchesRequestNamespace
    let meta = object.meta_mut();
    let namespace = meta.namespace.clone().unwrap_or_default();
    if namespace != url_namespace {
        if namespace.is_empty() {
            meta.namespace = Some(url_namespace);
        } else if url_namespace.is_empty() {
            meta.namespace = None;
        } else {
            return Err(PatchError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            ));
        }
    }
    // Go omits these when empty; keep `kubectl label x-` from leaving `labels: {}` behind.
    if meta.labels.as_ref().is_some_and(|m| m.is_empty()) {
        meta.labels = None;
    }
    if meta.annotations.as_ref().is_some_and(|m| m.is_empty()) {
        meta.annotations = None;
    }
    if meta.finalizers.as_ref().is_some_and(|f| f.is_empty()) {
        meta.finalizers = None;
    }
    if meta.owner_references.as_ref().is_some_and(|o| o.is_empty()) {
        meta.owner_references = None;
    }
    // handlers.checkName
    let name = meta.name.clone().unwrap_or_default();
    if name != url_name {
        return Err(name_mismatch(&name, &url_name));
    }
    Ok(object.to_json())
}

fn name_mismatch(name: &str, url_name: &str) -> PatchError {
    PatchError::BadRequest(format!(
        "the name of the object ({name}) does not match the name on the URL ({url_name})"
    ))
}

// ---------------------------------------------------------------------------------------------
// JSON patch (RFC 6902) and merge patch (RFC 7386)
// ---------------------------------------------------------------------------------------------

/// Decodes and applies an RFC 6902 patch as `jsonpatch.DecodePatch` + `Patch.Apply` do.
fn json_patch_document(doc: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let decoded: Value =
        serde_json::from_slice(body).map_err(|e| PatchError::BadRequest(go_json_error(body, &e)))?;
    let ops = match decoded {
        Value::Null => Vec::new(),
        Value::Array(ops) => ops,
        other => {
            return Err(PatchError::BadRequest(cannot_unmarshal(
                &other,
                "jsonpatch.Patch",
            )))
        }
    };
    if let Some(bad) = ops
        .iter()
        .find(|op| !matches!(op, Value::Object(_) | Value::Null))
    {
        return Err(PatchError::BadRequest(cannot_unmarshal(
            bad,
            "jsonpatch.Operation",
        )));
    }
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations(ops.len()));
    }
    let mut patched = doc.clone();
    for op in &ops {
        apply_operation(&mut patched, op).map_err(|detail| PatchError::Unprocessable { detail })?;
    }
    Ok(patched)
}

/// Applies one operation; the error is evanphx/json-patch's wording of the failure.
fn apply_operation(doc: &mut Value, op: &Value) -> Result<(), String> {
    let empty = Map::new();
    let fields = op.as_object().unwrap_or(&empty);
    let kind = fields.get("op").and_then(Value::as_str).unwrap_or("unknown");
    if !matches!(kind, "add" | "remove" | "replace" | "move" | "copy" | "test") {
        return Err(format!("Unexpected kind: {kind}"));
    }
    let path = match fields.get("path") {
        Some(Value::String(path)) => path.as_str(),
        None | Some(Value::Null) => {
            return Err(format!(
                "{kind} operation failed to decode path: operation missing path field: missing value"
            ))
        }
        Some(other) => {
            return Err(format!(
                "{kind} operation failed to decode path: {}",
                cannot_unmarshal(other, "string")
            ))
        }
    };
    let value = fields.get("value").cloned().unwrap_or(Value::Null);
    let missing_path =
        || format!("{kind} operation does not apply: doc is missing path: \"{path}\": missing value");
    if kind == "test" {
        return test_operation(doc, path, &value);
    }

    let from = fields.get("from").and_then(Value::as_str);
    if matches!(kind, "move" | "copy") && from.is_none() {
        return Err(format!(
            "{kind} operation failed to decode from: operation missing from field: missing value"
        ));
    }
    let mut spec = Map::new();
    spec.insert("op".into(), Value::String(kind.into()));
    spec.insert("path".into(), Value::String(path.into()));
    if let Some(from) = from {
        spec.insert("from".into(), Value::String(from.into()));
    }
    if matches!(kind, "add" | "replace") {
        spec.insert("value".into(), value);
    }
    let from_missing = || {
        format!(
            "{kind} operation does not apply: doc is missing from path: {}: missing value",
            from.unwrap_or_default()
        )
    };
    if from.is_some_and(|from| Pointer::parse(from).is_err()) {
        return Err(from_missing());
    }
    let operation: PatchOperation =
        serde_json::from_value(Value::Object(spec)).map_err(|_| missing_path())?;
    json_patch::patch_unsafe(doc, std::slice::from_ref(&operation)).map_err(|e| match e.kind {
        PatchErrorKind::InvalidFromPointer => from_missing(),
        PatchErrorKind::CannotMoveInsideItself => {
            format!("{kind} operation does not apply: cannot move the value inside itself")
        }
        _ => match kind {
            "remove" => {
                format!("error in remove for path: '{path}': Unable to remove nonexistent key: missing value")
            }
            "replace" => {
                format!("replace operation does not apply: doc is missing key: {path}: missing value")
            }
            _ => missing_path(),
        },
    })
}

/// The `test` operation as evanphx/json-patch runs it: numbers compare by value and an absent
/// member of an existing object equals `null`.
fn test_operation(doc: &Value, path: &str, expected: &Value) -> Result<(), String> {
    let missing = || format!("test operation does not apply: is missing path: {path}: missing value");
    let failed = || format!("testing value {path} failed: test failed");
    let pointer = Pointer::parse(path).map_err(|_| missing())?;
    match doc.pointer(pointer.as_str()) {
        Some(actual) if json_equal(actual, expected) => Ok(()),
        Some(_) => Err(failed()),
        None => {
            let parent = pointer.parent().and_then(|parent| doc.pointer(parent.as_str()));
            match parent {
                Some(Value::Object(_)) if expected.is_null() => Ok(()),
                Some(Value::Object(_)) => Err(failed()),
                _ => Err(missing()),
            }
        }
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`), as Go compares decoded JSON.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64().is_some_and(|x| y.as_f64() == Some(x)),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Applies an RFC 7386 merge patch as `jsonpatch.MergePatch` does: anything but an object or an
/// array is "Invalid JSON Patch"; an array replaces the whole document (which then fails to decode).
fn merge_patch_document(doc: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let invalid = || PatchError::BadRequest("Invalid JSON Patch".into());
    let patch: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    match patch {
        Value::Object(_) => {
            let mut patched = doc.clone();
            json_patch::merge(&mut patched, &patch);
            Ok(prune_nulls(patched))
        }
        Value::Array(_) => Ok(prune_nulls(patch)),
        _ => Err(invalid()),
    }
}

/// Drops `null` members of objects at any depth (evanphx's `pruneNulls`); `null` array items stay.
fn prune_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, prune_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(prune_nulls).collect()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: the field tables
// ---------------------------------------------------------------------------------------------

/// How a strategic merge patch treats a list field (its Go `patchStrategy`/`patchMergeKey` tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No strategy: the patch's list replaces the stored one.
    Replace,
    /// `patchStrategy:"merge" patchMergeKey:"<key>"`: items merge by the value of that key.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` on a list of strings: the lists merge as sets.
    MergePrimitives,
}

impl ListStrategy {
    fn merge_key(self) -> Option<&'static str> {
        match self {
            ListStrategy::MergeByKey(key) => Some(key),
            _ => None,
        }
    }
}

use ListStrategy::{MergeByKey, MergePrimitives};

/// Merge lists of `metav1.ObjectMeta`, relative to wherever an ObjectMeta sits.
const OBJECT_META_LISTS: &[(&str, ListStrategy)] = &[
    ("finalizers", MergePrimitives),
    ("ownerReferences", MergeByKey("uid")),
];

/// Merge lists of `core/v1.PodSpec`, relative to wherever a PodSpec sits. `tolerations`,
/// `readinessGates`, `envFrom`, `resizePolicy`, ... have no strategy and are replaced.
const POD_SPEC_LISTS: &[(&str, ListStrategy)] = &[
    ("volumes", MergeByKey("name")),
    ("initContainers", MergeByKey("name")),
    ("containers", MergeByKey("name")),
    ("ephemeralContainers", MergeByKey("name")),
    ("imagePullSecrets", MergeByKey("name")),
    ("hostAliases", MergeByKey("ip")),
    ("topologySpreadConstraints", MergeByKey("topologyKey")),
    ("schedulingGates", MergeByKey("name")),
    ("resourceClaims", MergeByKey("name")),
    ("initContainers.ports", MergeByKey("containerPort")),
    ("initContainers.env", MergeByKey("name")),
    ("initContainers.volumeMounts", MergeByKey("mountPath")),
    ("initContainers.volumeDevices", MergeByKey("devicePath")),
    ("containers.ports", MergeByKey("containerPort")),
    ("containers.env", MergeByKey("name")),
    ("containers.volumeMounts", MergeByKey("mountPath")),
    ("containers.volumeDevices", MergeByKey("devicePath")),
    ("ephemeralContainers.ports", MergeByKey("containerPort")),
    ("ephemeralContainers.env", MergeByKey("name")),
    ("ephemeralContainers.volumeMounts", MergeByKey("mountPath")),
    ("ephemeralContainers.volumeDevices", MergeByKey("devicePath")),
];

/// Merge lists outside ObjectMeta and PodSpec, by kind and path from the object's root (list
/// positions left out). Node `spec.taints`, HPA `spec.metrics` and every other list not named in
/// these tables are replaced.
const KIND_LISTS: &[(Kind, &str, ListStrategy)] = &[
    (Kind::Pod, "status.conditions", MergeByKey("type")),
    (Kind::Pod, "status.hostIPs", MergeByKey("ip")),
    (Kind::Pod, "status.podIPs", MergeByKey("ip")),
    (Kind::Pod, "status.resourceClaimStatuses", MergeByKey("name")),
    (Kind::Node, "spec.podCIDRs", MergePrimitives),
    (Kind::Node, "status.conditions", MergeByKey("type")),
    (Kind::Node, "status.addresses", MergeByKey("type")),
    (Kind::Namespace, "status.conditions", MergeByKey("type")),
    (Kind::Deployment, "status.conditions", MergeByKey("type")),
    (Kind::ReplicaSet, "status.conditions", MergeByKey("type")),
    (Kind::DaemonSet, "status.conditions", MergeByKey("type")),
    (
        Kind::HorizontalPodAutoscaler,
        "status.conditions",
        MergeByKey("type"),
    ),
    (Kind::PodDisruptionBudget, "status.conditions", MergeByKey("type")),
];

/// Maps with `patchStrategy:"replace"`: the patch's map replaces the stored one.
const REPLACED_MAPS: &[(Kind, &str)] = &[(Kind::PodDisruptionBudget, "spec.selector")];

/// Where ObjectMetas sit in objects of `kind`.
fn object_meta_paths(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Deployment | Kind::ReplicaSet | Kind::DaemonSet => &["metadata", "spec.template.metadata"],
        _ => &["metadata"],
    }
}

/// Where the PodSpec sits in objects of `kind`, if they have one.
fn pod_spec_path(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Pod => Some("spec"),
        Kind::Deployment | Kind::ReplicaSet | Kind::DaemonSet => Some("spec.template.spec"),
        _ => None,
    }
}

fn relative<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?.strip_prefix('.')
}

/// The strategy of the list at `path` (dotted field names from the root, list positions omitted).
fn list_strategy(kind: Kind, path: &str) -> ListStrategy {
    if let Some(&(_, _, strategy)) = KIND_LISTS.iter().find(|(k, p, _)| *k == kind && *p == path) {
        return strategy;
    }
    let in_meta = object_meta_paths(kind)
        .iter()
        .filter_map(|prefix| relative(path, prefix));
    for rest in in_meta {
        if let Some(&(_, strategy)) = OBJECT_META_LISTS.iter().find(|(p, _)| *p == rest) {
            return strategy;
        }
    }
    let in_pod_spec = pod_spec_path(kind).and_then(|prefix| relative(path, prefix));
    if let Some(&(_, strategy)) = in_pod_spec.and_then(|rest| POD_SPEC_LISTS.iter().find(|(p, _)| *p == rest))
    {
        return strategy;
    }
    ListStrategy::Replace
}

fn map_is_replaced(kind: Kind, path: &str) -> bool {
    REPLACED_MAPS.iter().any(|(k, p)| *k == kind && *p == path)
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: decoding and merging
// ---------------------------------------------------------------------------------------------

/// Decodes a strategic merge patch body into a map as `kjson.UnmarshalCaseSensitivePreserveInts`
/// does; `null` is an empty patch.
fn decode_strategic_patch(body: &[u8]) -> Result<Map<String, Value>, PatchError> {
    let decoded: Value =
        serde_json::from_slice(body).map_err(|e| PatchError::BadRequest(go_json_error(body, &e)))?;
    match decoded {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(PatchError::BadRequest(cannot_unmarshal(
            &other,
            "map[string]interface {}",
        ))),
    }
}

/// Decodes an apply configuration and checks it names this object, as the field manager's
/// version check and the patch handler's name check do.
fn decode_apply_configuration(
    kind: Kind,
    doc: &Value,
    body: &[u8],
) -> Result<Map<String, Value>, PatchError> {
    let decoded: Value = serde_yaml::from_slice(body).map_err(|e| {
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        let line = e
            .location()
            .map(|l| format!("line {}: ", l.line()))
            .unwrap_or_default();
        PatchError::BadRequest(format!(
            "error decoding YAML: error converting YAML to JSON: yaml: {line}{message}"
        ))
    })?;
    let config = match decoded {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::BadRequest(format!(
                "error decoding YAML: error unmarshaling JSON: while decoding JSON: {}",
                cannot_unmarshal(&other, "map[string]interface {}")
            )))
        }
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = text(config.get("apiVersion"));
    let kind_name = text(config.get("kind"));
    if api_version != kind.api_version() || kind_name != kind.info().kind_name {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version.as_str()));
        return Err(PatchError::BadRequest(format!(
            "invalid object type: {group}/{version}, Kind={kind_name}"
        )));
    }
    let metadata = config.get("metadata");
    if metadata
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|f| !f.is_null())
    {
        return Err(PatchError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let name = text(metadata.and_then(|m| m.get("name")));
    let url_name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != url_name {
        return Err(name_mismatch(&name, url_name));
    }
    Ok(ignore_directives(config))
}

/// Removes every `$`-key: directives mean nothing in an apply configuration.
fn ignore_directives(map: Map<String, Value>) -> Map<String, Value> {
    fn walk(value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(ignore_directives(map)),
            Value::Array(items) => Value::Array(items.into_iter().map(walk).collect()),
            other => other,
        }
    }
    map.into_iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k, walk(v)))
        .collect()
}

/// The element type of one or more lists, as `sliceElementType` tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Map,
    Scalar(&'static str),
}

/// `sliceElementType`: all items must share one Go type, and none may be a list.
fn element_type(lists: &[&[Value]]) -> Result<Element, PatchError> {
    let mut found: Option<&'static str> = None;
    for item in lists.iter().flat_map(|list| list.iter()) {
        let ty = go_type(item);
        match found {
            None if ty == "[]interface {}" => {
                return Err(PatchError::Unprocessable {
                    detail: "lists of lists are not supported".into(),
                })
            }
            None if ty == "<nil>" => return Err(not_identical(lists)),
            None => found = Some(ty),
            Some(previous) if previous != ty => return Err(not_identical(lists)),
            Some(_) => {}
        }
    }
    match found {
        Some("map[string]interface {}") => Ok(Element::Map),
        Some(ty) => Ok(Element::Scalar(ty)),
        None => Err(PatchError::Internal(
            "no elements in any of the given slices".into(),
        )),
    }
}

fn not_identical(lists: &[&[Value]]) -> PatchError {
    let shown: Vec<String> = lists.iter().map(|list| go_fmt_list(list)).collect();
    PatchError::Internal(format!(
        "list element types are not identical: [{}]",
        shown.join(" ")
    ))
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::Internal(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt_map(map)
    ))
}

fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    PatchError::Internal(format!(
        "expected a {expected}, but received a {}",
        go_type(actual)
    ))
}

fn bad_patch_type(directive: &Value, map: &Map<String, Value>) -> PatchError {
    let directive = match directive {
        Value::String(s) => s.clone(),
        Value::Null => "%!s(<nil>)".into(),
        other => format!("%!s({}={})", go_type(other), go_fmt(other)),
    };
    PatchError::Internal(format!(
        "unknown patch type: {directive} in map: {}",
        go_fmt_map(map)
    ))
}

/// `extractKey`: the field a `$setElementOrder/<field>` or `$deleteFromPrimitiveList/<field>` names.
fn directive_field(key: &str, prefix: &str) -> Result<String, PatchError> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(field.to_string()),
        _ if prefix == SET_ELEMENT_ORDER => Err(PatchError::BadRequest(
            "invalid patch format of setElementOrder list".into(),
        )),
        _ => Err(PatchError::BadRequest(
            "invalid patch format of primitive list".into(),
        )),
    }
}

/// What typed decoding on the real server drops from a value taken from the patch as a whole:
/// `null` members (`discardNullValuesFromPatch`), maps carrying `$patch` (`removeDirectives`;
/// `None` means the value itself goes) and the other directive keys.
fn clean(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.get(DIRECTIVE).is_some_and(|d| !d.is_null()) {
                return None;
            }
            Some(Value::Object(clean_map(map)))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(clean).collect())),
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(items: Vec<Value>) -> Vec<Value> {
    items.into_iter().filter_map(clean).collect()
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// A hashable identity for a JSON value (Go compares these interface values with `==`).
fn identity(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The identity an item has in an ordered list: its merge key's value for maps (absent reads as
/// `nil`, as in Go), the item itself for primitives.
fn item_identity(item: &Value, merge_key: Option<&str>) -> String {
    match merge_key {
        Some(key) => item.get(key).map_or_else(|| "\u{0}nil".to_string(), identity),
        None => identity(item),
    }
}

/// Positions of items in an ordering list, by identity (first occurrence wins, as Go's `index`).
struct Order(HashMap<String, usize>);

impl Order {
    fn new(list: &[Value], merge_key: Option<&str>) -> Order {
        let mut positions = HashMap::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            positions.entry(item_identity(item, merge_key)).or_insert(i);
        }
        Order(positions)
    }

    fn position(&self, item: &Value, merge_key: Option<&str>) -> Option<usize> {
        self.0.get(&item_identity(item, merge_key)).copied()
    }
}

/// `normalizeSliceOrder`: sorts `items` by their position in `order` (stable), with `$patch:
/// delete` items last.
fn normalize_slice_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: Option<&str>,
    maps: bool,
) -> Result<Vec<Value>, PatchError> {
    let mut items = items;
    let mut to_delete = Vec::new();
    if maps {
        let key = merge_key.unwrap_or_default();
        for item in items.iter().chain(order) {
            let Value::Object(map) = item else {
                return Err(bad_arg_type("map[string]interface {}", item));
            };
            if !map.contains_key(key) {
                return Err(no_merge_key(map, key));
            }
        }
        let (delete, keep): (Vec<Value>, Vec<Value>) = items
            .into_iter()
            .partition(|item| item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete"));
        items = keep;
        to_delete = delete;
    }
    let positions = Order::new(order, merge_key);
    items.sort_by_key(|item| positions.position(item, merge_key).unwrap_or(usize::MAX));
    items.extend(to_delete);
    Ok(items)
}

/// `normalizeElementOrder` + `mergeSortedSlice`: patch items keep the patch's order, server-only
/// items the server's, and the two are interleaved by the server's order where both are known.
/// Patch items the server never had therefore come before the server-only items that follow them.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
    maps: bool,
) -> Result<Vec<Value>, PatchError> {
    let right = normalize_slice_order(patch_items, patch_order, merge_key, maps)?;
    let left = normalize_slice_order(server_only, server_order, merge_key, maps)?;
    let positions = Order::new(server_order, merge_key);
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (positions.position(l, merge_key), positions.position(r, merge_key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        merged.extend(if take_left { left.next() } else { right.next() });
    }
    Ok(merged)
}

/// Splits `items` into those present in `by` and the rest, keeping their order.
fn partition(
    items: Vec<Value>,
    by: &[Value],
    merge_key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = HashSet::with_capacity(by.len());
    match merge_key {
        None => {
            if items.iter().chain(by).any(|v| v.is_object() || v.is_array()) {
                // Go hashes the items here and panics on maps; the server answers 500.
                return Err(PatchError::Internal(
                    "runtime error: hash of unhashable type map[string]interface {}".into(),
                ));
            }
            present.extend(by.iter().map(identity));
        }
        Some(key) => {
            for (i, item) in by.iter().enumerate() {
                let Value::Object(map) = item else {
                    return Err(PatchError::Internal(format!("value for key {i} is not a map")));
                };
                if let Some(value) = map.get(key) {
                    present.insert(identity(value));
                }
            }
            for item in &items {
                let Value::Object(map) = item else {
                    return Err(bad_arg_type("map[string]interface {}", item));
                };
                if !map.contains_key(key) {
                    return Err(no_merge_key(map, key));
                }
            }
        }
    }
    Ok(items
        .into_iter()
        .partition(|item| present.contains(&item_identity(item, merge_key))))
}

/// The strategic merge of one kind of object.
struct Strategic {
    kind: Kind,
}

impl Strategic {
    /// `StrategicMergeMapPatch` on the stored object.
    fn patch_document(&self, doc: &Value, patch: Map<String, Value>) -> Result<Value, PatchError> {
        let Value::Object(original) = doc else {
            return Err(PatchError::BadRequest("invalid JSON document".into()));
        };
        Ok(Value::Object(self.merge_map(original.clone(), patch, "")?))
    }

    /// `mergeMap`.
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        path: &str,
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.get(DIRECTIVE) {
            return match directive.as_str() {
                Some("replace") => {
                    patch.remove(DIRECTIVE);
                    Ok(clean_map(patch))
                }
                Some("delete") => Ok(Map::new()),
                _ => Err(bad_patch_type(directive, &patch)),
            };
        }
        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_element_orders(&mut original, &mut patch, path)?;

        for (key, patch_value) in patch {
            let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
                (directive_field(&key, DELETE_FROM_PRIMITIVE_LIST)?, true)
            } else {
                (key, false)
            };
            if patch_value.is_null() {
                original.remove(&key);
                continue;
            }
            let child = child_path(path, &key);
            let merged = match (original.remove(&key), patch_value) {
                (None, _) if is_delete_list => continue,
                (None, patch_value) => clean(patch_value),
                (Some(Value::Object(stored)), Value::Object(patch_map)) => {
                    if map_is_replaced(self.kind, &child) {
                        Some(Value::Object(clean_map(patch_map)))
                    } else {
                        Some(Value::Object(self.merge_map(stored, patch_map, &child)?))
                    }
                }
                (Some(Value::Array(stored)), Value::Array(patch_list)) => {
                    let strategy = list_strategy(self.kind, &child);
                    if strategy == ListStrategy::Replace && !is_delete_list {
                        Some(Value::Array(clean_list(patch_list)))
                    } else {
                        Some(Value::Array(self.merge_slice(
                            stored,
                            patch_list,
                            &child,
                            strategy,
                            is_delete_list,
                        )?))
                    }
                }
                (Some(stored), _) if is_delete_list => Some(stored),
                (Some(_), patch_value) => clean(patch_value),
            };
            if let Some(value) = merged {
                original.insert(key, value);
            }
        }
        Ok(original)
    }

    /// `mergeSlice`.
    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        path: &str,
        strategy: ListStrategy,
        is_delete_list: bool,
    ) -> Result<Vec<Value>, PatchError> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let merge_key = strategy.merge_key();
        let element = element_type(&[&original, &patch])?;
        let (merged, original, patch) = match element {
            Element::Scalar(_) => {
                if is_delete_list {
                    let doomed: HashSet<String> = patch.iter().map(identity).collect();
                    return Ok(original
                        .into_iter()
                        .filter(|v| !doomed.contains(&identity(v)))
                        .collect());
                }
                let mut seen = HashSet::new();
                let merged = original
                    .iter()
                    .chain(&patch)
                    .filter(|v| seen.insert(identity(v)))
                    .cloned()
                    .collect();
                (merged, original, patch)
            }
            Element::Map => {
                let Some(key) = merge_key else {
                    let of = if strategy == MergePrimitives {
                        "string"
                    } else {
                        "struct"
                    };
                    return Err(PatchError::Internal(format!(
                        "cannot merge lists without merge key for {of}"
                    )));
                };
                let (original, patch) = merge_slice_with_special_elements(original, patch, key)?;
                let merged =
                    self.merge_slice_without_special_elements(original.clone(), &patch, key, path)?;
                (merged, original, patch)
            }
        };
        let (patch_items, server_only) = partition(merged, &patch, merge_key)?;
        normalize_element_order(
            patch_items,
            server_only,
            &patch,
            &original,
            merge_key,
            element == Element::Map,
        )
    }

    /// `mergeSliceWithoutSpecialElements`: items matching a stored item by merge key merge into
    /// it, the others are appended.
    fn merge_slice_without_special_elements(
        &self,
        mut original: Vec<Value>,
        patch: &[Value],
        key: &str,
        path: &str,
    ) -> Result<Vec<Value>, PatchError> {
        for item in patch {
            let Value::Object(item_map) = item else {
                return Err(bad_arg_type("map[string]interface {}", item));
            };
            let Some(key_value) = item_map.get(key) else {
                return Err(no_merge_key(item_map, key));
            };
            let found = original
                .iter()
                .position(|stored| stored.get(key) == Some(key_value));
            match found.and_then(|i| original.get_mut(i)) {
                Some(stored) => {
                    let stored_map = match std::mem::take(stored) {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    *stored = Value::Object(self.merge_map(stored_map, item_map.clone(), path)?);
                }
                None => original.extend(clean(item.clone())),
            }
        }
        Ok(original)
    }

    /// `mergePatchIntoOriginal`: merges each list that has a `$setElementOrder/<field>` and puts
    /// its items in that order.
    fn merge_element_orders(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        path: &str,
    ) -> Result<(), PatchError> {
        let keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
            .cloned()
            .collect();
        for directive_key in keys {
            let Some(order_value) = patch.remove(&directive_key) else {
                continue;
            };
            let Value::Array(order) = order_value else {
                return Err(bad_arg_type("[]interface {}", &order_value));
            };
            let field = directive_field(&directive_key, SET_ELEMENT_ORDER)?;
            let as_list = |value: Option<&Value>| match value {
                None => Ok(None),
                Some(Value::Array(items)) => Ok(Some(items.clone())),
                Some(other) => Err(bad_arg_type("[]interface {}", other)),
            };
            let stored = as_list(original.get(&field))?;
            let patched = as_list(patch.get(&field))?;
            let child = child_path(path, &field);
            let strategy = list_strategy(self.kind, &child);
            let merge_key = strategy.merge_key();
            validate_patch_with_set_order_list(patched.as_deref().unwrap_or_default(), &order, merge_key)?;

            let merged = match (stored.clone(), patched.clone()) {
                (Some(stored), None) => stored,
                (None, Some(patched)) => clean_list(patched),
                (Some(_), Some(patched)) if strategy == ListStrategy::Replace => clean_list(patched),
                (Some(stored), Some(patched)) => {
                    self.merge_slice(stored, patched, &child, strategy, false)?
                }
                (None, None) => continue,
            };
            let (patch_items, server_only) = partition(merged, &order, merge_key)?;
            let stored = stored.unwrap_or_default();
            let element = element_type(&[&stored, patched.as_deref().unwrap_or_default()])?;
            let ordered = normalize_element_order(
                patch_items,
                server_only,
                &order,
                &stored,
                merge_key,
                element == Element::Map,
            )?;
            original.insert(field.clone(), Value::Array(ordered));
            patch.remove(&field);
        }
        Ok(())
    }
}

/// `mergeSliceWithSpecialElements`: `$patch: delete` items remove the stored items with their
/// merge key, `$patch: replace` makes the rest of the patch list replace the stored list.
fn merge_slice_with_special_elements(
    original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = &item else {
            return Err(bad_arg_type("map[string]interface {}", &item));
        };
        let Some(directive) = map.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(key_value) = map.get(key) else {
                    return Err(no_merge_key(map, key));
                };
                original.retain(|stored| stored.get(key) != Some(key_value));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(PatchError::Internal(
                    "merging lists cannot yet be specified in the patch".into(),
                ))
            }
            _ => return Err(bad_patch_type(directive, map)),
        }
    }
    if replace {
        Ok((clean_list(plain), Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// `applyRetainKeysDirective`: stored keys not listed go; patch keys must all be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let invalid = || PatchError::BadRequest("invalid patch format of retainKeys".into());
    let Value::Array(list) = retain else {
        return Err(invalid());
    };
    let keep: HashSet<&str> = list.iter().filter_map(Value::as_str).collect();
    let unlisted = patch.iter().any(|(k, v)| {
        !v.is_null()
            && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !k.starts_with(SET_ELEMENT_ORDER)
            && !keep.contains(k.as_str())
    });
    if unlisted {
        return Err(invalid());
    }
    original.retain(|k, _| keep.contains(k.as_str()));
    Ok(())
}

/// `validatePatchWithSetOrderList`: the patch list's items must appear in the order list, in order.
fn validate_patch_with_set_order_list(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut candidates = Vec::with_capacity(patch_list.len());
    for item in patch_list {
        if merge_key.is_some() {
            let Value::Object(map) = item else {
                return Err(bad_arg_type("map[string]interface {}", item));
            };
            if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        candidates.push(item);
    }
    let (mut p, mut o) = (0, 0);
    while p < candidates.len() && o < order.len() {
        if candidates[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if merge_key_value_equal(candidates[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < candidates.len() && o >= order.len() {
        return Err(PatchError::Internal(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            go_fmt_list(patch_list),
            go_fmt_list(order)
        )));
    }
    Ok(())
}

fn merge_key_value_equal(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool, PatchError> {
    let Some(key) = merge_key else {
        return Ok(left == right);
    };
    let Value::Object(left) = left else {
        return Err(bad_arg_type("map[string]interface {}", left));
    };
    let Value::Object(right) = right else {
        return Err(bad_arg_type("map[string]interface {}", right));
    };
    let Some(l) = left.get(key) else {
        return Err(no_merge_key(left, key));
    };
    let Some(r) = right.get(key) else {
        return Err(no_merge_key(right, key));
    };
    Ok(l == r)
}

// ---------------------------------------------------------------------------------------------
// Go-flavoured messages
// ---------------------------------------------------------------------------------------------

/// The Go type a decoded JSON value has (`reflect.TypeOf`), as error messages print it.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() => "int64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// `json: cannot unmarshal <kind> into Go value of type <ty>`.
fn cannot_unmarshal(value: &Value, ty: &str) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    format!("json: cannot unmarshal {kind} into Go value of type {ty}")
}

/// A decoded JSON value as Go's `%v` prints it (`map[a:1 b:[x y]]`).
fn go_fmt(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => go_fmt_list(items),
        Value::Object(map) => go_fmt_map(map),
    }
}

fn go_fmt_list(items: &[Value]) -> String {
    let shown: Vec<String> = items.iter().map(go_fmt).collect();
    format!("[{}]", shown.join(" "))
}

fn go_fmt_map(map: &Map<String, Value>) -> String {
    let mut shown: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{}", go_fmt(v))).collect();
    shown.sort();
    format!("map[{}]", shown.join(" "))
}

/// Go's `%q` of a string.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `quoteChar` of the byte the JSON scanner stopped at.
fn go_quote_char(byte: u8) -> String {
    match byte {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        b => {
            let quoted = go_quote(&char::from(b).to_string());
            format!("'{}'", &quoted[1..quoted.len() - 1])
        }
    }
}

/// The message Go's `encoding/json` gives for a body serde_json could not parse.
fn go_json_error(body: &[u8], err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let full = err.to_string();
    let message = full.rsplit_once(" at line ").map_or(full.as_str(), |(m, _)| m);
    match err.classify() {
        Category::Eof => return "unexpected end of JSON input".into(),
        Category::Syntax => {}
        Category::Data | Category::Io => return message.to_string(),
    }
    if message.starts_with("recursion limit exceeded") {
        return "exceeded max depth".into();
    }
    let Some(offset) = error_offset(body, err.line(), err.column()) else {
        return message.to_string();
    };
    let Some(&byte) = body.get(offset) else {
        return message.to_string();
    };
    let context = if message.starts_with("expected value") {
        "looking for beginning of value".to_string()
    } else if message.starts_with("expected `:`") {
        "after object key".into()
    } else if message.starts_with("expected `,` or `}`") {
        "after object key:value pair".into()
    } else if message.starts_with("expected `,` or `]`") {
        "after array element".into()
    } else if message.starts_with("key must be a string")
        || (message.starts_with("trailing comma") && byte == b'}')
    {
        "looking for beginning of object key string".into()
    } else if message.starts_with("trailing comma") {
        "looking for beginning of value".into()
    } else if message.starts_with("trailing characters") {
        "after top-level value".into()
    } else if message.starts_with("control character") {
        "in string literal".into()
    } else if message.starts_with("invalid escape") {
        "in string escape code".into()
    } else if message.starts_with("invalid number") {
        "in numeric literal".into()
    } else if message.starts_with("expected ident") {
        literal_context(body, offset)
    } else {
        return message.to_string();
    };
    format!("invalid character {} {context}", go_quote_char(byte))
}

/// `in literal null (expecting 'u')` for a misspelt `null`/`true`/`false`.
fn literal_context(body: &[u8], offset: usize) -> String {
    let start = body[..offset]
        .iter()
        .rposition(|b| !b.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    let literal = match body.get(start) {
        Some(b'n') => "null",
        Some(b't') => "true",
        Some(b'f') => "false",
        _ => return "looking for beginning of value".into(),
    };
    match literal.as_bytes().get(offset - start) {
        Some(&expected) => format!("in literal {literal} (expecting {})", go_quote_char(expected)),
        None => "looking for beginning of value".into(),
    }
}

/// The byte offset of serde_json's 1-based line/column.
fn error_offset(body: &[u8], line: usize, column: usize) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += body.get(start..)?.iter().position(|&b| b == b'\n')? + 1;
    }
    Some(start + column.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0",
                "namespace": "shop",
                "uid": "1111",
                "resourceVersion": "7",
                "labels": {"app": "web", "tier": "front"},
                "finalizers": ["a.example.com/keep", "b.example.com/keep"],
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs-1", "controller": true}
                ]
            },
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.25",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "0"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                    },
                    {"name": "sidecar", "image": "envoy:1.30"}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
                "nodeName": "node-1"
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}
                ]
            }
        })
    }

    fn node() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
            "spec": {
                "podCIDRs": ["10.0.1.0/24"],
                "taints": [{"key": "old", "value": "x", "effect": "NoSchedule"}]
            },
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.5"},
                    {"type": "Hostname", "address": "node-1"}
                ],
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady"}
                ]
            }
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "generation": 3},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "nginx:1.25"},
                            {"name": "sidecar", "image": "envoy:1.30"}
                        ]
                    }
                }
            },
            "status": {
                "replicas": 3,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                ]
            }
        })
    }

    fn patch(kind: Kind, doc: &Value, body: &str, ty: PatchType) -> Result<Value, PatchError> {
        apply_patch(kind, doc, body.as_bytes(), ty)
    }

    fn ok(kind: Kind, doc: &Value, body: &str, ty: PatchType) -> Value {
        match patch(kind, doc, body, ty) {
            Ok(v) => {
                assert_no_directives(&v);
                v
            }
            Err(e) => panic!("patch {body} failed: {} ({}): {e}", e.code(), e.reason()),
        }
    }

    fn err(kind: Kind, doc: &Value, body: &str, ty: PatchType) -> PatchError {
        match patch(kind, doc, body, ty) {
            Ok(v) => panic!("patch {body} succeeded: {v}"),
            Err(e) => e,
        }
    }

    fn assert_no_directives(value: &Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    assert!(!k.starts_with('$'), "directive {k} leaked into {value}");
                    assert_no_directives(v);
                }
            }
            Value::Array(items) => items.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    fn names(list: &Value, key: &str) -> Vec<String> {
        list.as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i[key].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn content_types_map_to_patch_types() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("application/apply-patch+cbor"), None);
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::from_content_type(""), None);
        for ty in PatchType::ALL {
            assert_eq!(PatchType::from_content_type(ty.content_type()), Some(ty));
        }
        let e = PatchError::UnsupportedMediaType;
        assert_eq!((e.code(), e.reason()), (415, "UnsupportedMediaType"));
        assert!(e
            .to_string()
            .ends_with("application/strategic-merge-patch+json, application/apply-patch+yaml"));
    }

    #[test]
    fn kubectl_taint_replaces_the_taint_list() {
        let body = r#"{"spec":{"taints":[{"effect":"NoSchedule","key":"old","value":"x"},{"effect":"NoExecute","key":"dedicated","value":"gpu"}]}}"#;
        let out = ok(Kind::Node, &node(), body, PatchType::StrategicMerge);
        assert_eq!(out["spec"]["taints"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            out["spec"]["taints"][1],
            json!({"effect": "NoExecute", "key": "dedicated", "value": "gpu"})
        );
        // Taints have no patch strategy: a one-item list replaces, it does not merge.
        let out = ok(
            Kind::Node,
            &node(),
            r#"{"spec":{"taints":[{"effect":"NoSchedule","key":"new"}]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(names(&out["spec"]["taints"], "key"), ["new"]);
        // `kubectl taint node node-1 old-` leaves no taints: the field is nulled.
        let out = ok(
            Kind::Node,
            &node(),
            r#"{"spec":{"taints":null}}"#,
            PatchType::StrategicMerge,
        );
        assert!(out["spec"].get("taints").is_none());
        assert_eq!(out["spec"]["podCIDRs"], json!(["10.0.1.0/24"]));
    }

    #[test]
    fn kubectl_cordon_and_uncordon() {
        let out = ok(
            Kind::Node,
            &node(),
            r#"{"spec":{"unschedulable":true}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(out["spec"]["unschedulable"], json!(true));
        assert_eq!(out["spec"]["taints"], node()["spec"]["taints"]);
        assert_eq!(out["status"], node()["status"]);
        let out = ok(
            Kind::Node,
            &out,
            r#"{"spec":{"unschedulable":null}}"#,
            PatchType::StrategicMerge,
        );
        assert!(out["spec"].get("unschedulable").is_none());
    }

    #[test]
    fn kubectl_scale_merge_patch() {
        let out = ok(
            Kind::Deployment,
            &deployment(),
            r#"{"spec":{"replicas":8}}"#,
            PatchType::Merge,
        );
        assert_eq!(out["spec"]["replicas"], json!(8));
        assert_eq!(out["spec"]["template"], deployment()["spec"]["template"]);
        assert_eq!(out["metadata"]["name"], json!("web"));
    }

    #[test]
    fn kubectl_label_and_annotate_merge_patch() {
        let body = r#"{"metadata":{"labels":{"env":"prod","tier":null}}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::Merge);
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "env": "prod"}));
        let body = r#"{"metadata":{"annotations":{"note":"hello"}}}"#;
        let out = ok(Kind::Pod, &out, body, PatchType::Merge);
        assert_eq!(out["metadata"]["annotations"], json!({"note": "hello"}));
        let out = ok(
            Kind::Pod,
            &out,
            r#"{"metadata":{"annotations":{"note":null}}}"#,
            PatchType::Merge,
        );
        assert!(out["metadata"].get("annotations").is_none());
        // Merge patches replace lists whole.
        let out = ok(
            Kind::Pod,
            &pod(),
            r#"{"metadata":{"finalizers":["c"]}}"#,
            PatchType::Merge,
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c"]));
    }

    #[test]
    fn container_image_changes_by_name() {
        let body = r#"{"spec":{"template":{"spec":{"containers":[{"image":"nginx:1.27","name":"web"}]}}}}"#;
        let out = ok(Kind::Deployment, &deployment(), body, PatchType::StrategicMerge);
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers, "name"), ["web", "sidecar"]);
        assert_eq!(containers[0]["image"], json!("nginx:1.27"));
        assert_eq!(containers[1]["image"], json!("envoy:1.30"));

        let body = r#"{"spec":{"containers":[{"name":"web","env":[{"name":"DEBUG","value":"1"}],"ports":[{"containerPort":80,"name":"http"}]}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        let web = &out["spec"]["containers"][0];
        assert_eq!(web["image"], json!("nginx:1.25"));
        assert_eq!(
            web["env"],
            json!([{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "1"}])
        );
        assert_eq!(
            web["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
    }

    #[test]
    fn volume_mounts_merge_by_mount_path() {
        let body = r#"{"spec":{"containers":[{"name":"web","volumeMounts":[{"name":"data","mountPath":"/data","readOnly":true},{"name":"cache","mountPath":"/cache"}]}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        let mounts = &out["spec"]["containers"][0]["volumeMounts"];
        assert_eq!(names(mounts, "mountPath"), ["/data", "/cache"]);
        assert_eq!(mounts[0]["readOnly"], json!(true));
    }

    #[test]
    fn new_merge_list_items_go_first_without_an_order() {
        // What the real server does: new items are placed before the stored ones they do not follow.
        let body = r#"{"spec":{"template":{"spec":{"containers":[{"name":"proxy","image":"haproxy"}]}}}}"#;
        let out = ok(Kind::Deployment, &deployment(), body, PatchType::StrategicMerge);
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"], "name"),
            ["proxy", "web", "sidecar"]
        );
        let body = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"a"},{"name":"proxy","image":"haproxy"}]}}}}"#;
        let out = ok(Kind::Deployment, &deployment(), body, PatchType::StrategicMerge);
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"], "name"),
            ["web", "proxy", "sidecar"]
        );
    }

    #[test]
    fn set_element_order_orders_and_is_stripped() {
        let body = r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"proxy"},{"name":"web"}],"containers":[{"image":"haproxy","name":"proxy"}]}}}}"#;
        let out = ok(Kind::Deployment, &deployment(), body, PatchType::StrategicMerge);
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers, "name"), ["sidecar", "proxy", "web"]);
        assert_eq!(containers[2]["image"], json!("nginx:1.25"));

        // Reordering alone, with no list in the patch.
        let body = r#"{"spec":{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"web"}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(names(&out["spec"]["containers"], "name"), ["sidecar", "web"]);

        // kubelet's status patch: conditions ordered and merged by type.
        let body = r#"{"status":{"$setElementOrder/conditions":[{"type":"PodScheduled"},{"type":"Initialized"},{"type":"Ready"}],"conditions":[{"type":"Ready","status":"False","reason":"ContainersNotReady"}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(
            names(&out["status"]["conditions"], "type"),
            ["PodScheduled", "Initialized", "Ready"]
        );
        assert_eq!(out["status"]["conditions"][2]["status"], json!("False"));

        // A patch list that contradicts the order list is refused.
        let body = r#"{"spec":{"$setElementOrder/containers":[{"name":"web"}],"containers":[{"name":"nope","image":"x"}]}}"#;
        let e = err(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(e.code(), 500);
        assert!(e.to_string().starts_with("The order in patch list:"), "{e}");
        // A malformed directive key is a bad request.
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"spec":{"$setElementOrdercontainers":[]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (400, "invalid patch format of setElementOrder list")
        );
    }

    #[test]
    fn patch_delete_directive_in_lists_and_maps() {
        let body = r#"{"spec":{"containers":[{"$patch":"delete","name":"sidecar"}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(names(&out["spec"]["containers"], "name"), ["web"]);

        let body = r#"{"spec":{"containers":[{"name":"web","env":[{"$patch":"delete","name":"MODE"}]}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "DEBUG", "value": "0"}])
        );

        // `$patch: delete` on a map empties it; on a field the object lacks, nothing is added.
        let body = r#"{"metadata":{"labels":{"$patch":"delete"},"annotations":{"$patch":"delete"}}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert!(out["metadata"].get("labels").is_none());
        assert!(out["metadata"].get("annotations").is_none());

        // `$patch: replace` in a map and in a list.
        let body = r#"{"metadata":{"labels":{"$patch":"replace","only":"this"}}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
        let body = r#"{"spec":{"containers":[{"name":"solo","image":"busybox"},{"$patch":"replace"}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(names(&out["spec"]["containers"], "name"), ["solo"]);

        // A delete item without its merge key, and unknown directives, are refused.
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"spec":{"containers":[{"$patch":"delete"}]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!((e.code(), e.reason()), (500, ""));
        assert_eq!(
            e.to_string(),
            "map: map[$patch:delete] does not contain declared merge key: name"
        );
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"metadata":{"labels":{"$patch":"merge"}}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(
            e.to_string(),
            "unknown patch type: merge in map: map[$patch:merge]"
        );
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"spec":{"containers":[{"$patch":"merge"}]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(
            e.to_string(),
            "merging lists cannot yet be specified in the patch"
        );
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        let body = r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a.example.com/keep"]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(out["metadata"]["finalizers"], json!(["b.example.com/keep"]));

        let body = r#"{"metadata":{"finalizers":["b.example.com/keep","c.example.com/new"]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["a.example.com/keep", "b.example.com/keep", "c.example.com/new"])
        );

        // kubectl's two-way patch for "drop a, add c" carries all three directives.
        let body = r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a.example.com/keep"],"$setElementOrder/finalizers":["b.example.com/keep","c.example.com/new"],"finalizers":["c.example.com/new"]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["b.example.com/keep", "c.example.com/new"])
        );

        // Deleting from a list the object lacks is a no-op; a malformed key is a 400.
        let body = r#"{"spec":{"$deleteFromPrimitiveList/podCIDRs":["10.0.1.0/24"]}}"#;
        let out = ok(Kind::Node, &node(), body, PatchType::StrategicMerge);
        assert!(out["spec"].get("podCIDRs").is_none_or(|l| l == &json!([])));
        let out = ok(
            Kind::Pod,
            &pod(),
            r#"{"spec":{"$deleteFromPrimitiveList/args":["x"]}}"#,
            PatchType::StrategicMerge,
        );
        assert!(out["spec"].get("args").is_none());
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"metadata":{"$deleteFromPrimitiveListfinalizers":["x"]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(
            (e.code(), e.reason(), e.to_string().as_str()),
            (400, "BadRequest", "invalid patch format of primitive list")
        );
    }

    #[test]
    fn conditions_merge_by_type() {
        let body =
            r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady"}]}}"#;
        let out = ok(Kind::Node, &node(), body, PatchType::StrategicMerge);
        let conditions = &out["status"]["conditions"];
        assert_eq!(names(conditions, "type"), ["MemoryPressure", "Ready"]);
        assert_eq!(
            conditions[1],
            json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady"})
        );

        let body = r#"{"status":{"conditions":[{"type":"Available","status":"False"}]}}"#;
        let out = ok(Kind::Deployment, &deployment(), body, PatchType::StrategicMerge);
        assert_eq!(
            names(&out["status"]["conditions"], "type"),
            ["Available", "Progressing"]
        );
        assert_eq!(
            out["status"]["conditions"][0]["reason"],
            json!("MinimumReplicasAvailable")
        );
        assert_eq!(out["status"]["conditions"][0]["status"], json!("False"));

        let body = r#"{"status":{"addresses":[{"type":"ExternalIP","address":"1.2.3.4"}]}}"#;
        let out = ok(Kind::Node, &node(), body, PatchType::StrategicMerge);
        assert_eq!(out["status"]["addresses"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let body = r#"{"spec":{"tolerations":[{"key":"c","operator":"Exists"}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(names(&out["spec"]["tolerations"], "key"), ["c"]);
        let body = r#"{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Node","name":"node-1","uid":"n-1"}]}}"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::StrategicMerge);
        assert_eq!(names(&out["metadata"]["ownerReferences"], "uid"), ["n-1", "rs-1"]);
        // PodDisruptionBudget's selector has patchStrategy replace.
        let pdb = json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}
        });
        let out = ok(
            Kind::PodDisruptionBudget,
            &pdb,
            r#"{"spec":{"selector":{"matchLabels":{"tier":"front"}}}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"tier": "front"}}));
        let out = ok(
            Kind::PodDisruptionBudget,
            &pdb,
            r#"{"spec":{"selector":{"matchLabels":{"tier":"front"}}}}"#,
            PatchType::Merge,
        );
        assert_eq!(
            out["spec"]["selector"],
            json!({"matchLabels": {"app": "web", "tier": "front"}})
        );
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        let body = r#"{"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate","rollingUpdate":null}}}"#;
        let out = ok(Kind::Deployment, &deployment(), body, PatchType::StrategicMerge);
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let body = r#"{"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate","rollingUpdate":{"maxSurge":1}}}}"#;
        let e = err(Kind::Deployment, &deployment(), body, PatchType::StrategicMerge);
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (400, "invalid patch format of retainKeys")
        );
        let e = err(
            Kind::Deployment,
            &deployment(),
            r#"{"spec":{"strategy":{"$retainKeys":"type"}}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(e.code(), 400);
    }

    #[test]
    fn json_patch_operations() {
        let body = r#"[
            {"op":"add","path":"/metadata/labels/env","value":"prod"},
            {"op":"remove","path":"/metadata/labels/tier"},
            {"op":"replace","path":"/spec/containers/0/image","value":"nginx:1.27"},
            {"op":"add","path":"/spec/tolerations/-","value":{"key":"c","operator":"Exists"}},
            {"op":"copy","from":"/metadata/labels/app","path":"/metadata/labels/copied"},
            {"op":"test","path":"/metadata/resourceVersion","value":"7"}
        ]"#;
        let out = ok(Kind::Pod, &pod(), body, PatchType::Json);
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "prod", "copied": "web"})
        );
        assert_eq!(out["spec"]["containers"][0]["image"], json!("nginx:1.27"));
        assert_eq!(names(&out["spec"]["tolerations"], "key"), ["a", "b", "c"]);

        let out = ok(
            Kind::Deployment,
            &deployment(),
            r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
            PatchType::Json,
        );
        assert_eq!(out["spec"]["replicas"], json!(5));
        // A `test` of an absent member against null passes; numbers compare by value.
        ok(
            Kind::Pod,
            &pod(),
            r#"[{"op":"test","path":"/metadata/annotations","value":null}]"#,
            PatchType::Json,
        );
        ok(
            Kind::Deployment,
            &deployment(),
            r#"[{"op":"test","path":"/spec/replicas","value":3.0}]"#,
            PatchType::Json,
        );
        // `null` decodes to an empty patch.
        assert_eq!(
            ok(Kind::Pod, &pod(), "null", PatchType::Json),
            ok(Kind::Pod, &pod(), "[]", PatchType::Json)
        );
    }

    #[test]
    fn json_patch_failures_are_422_and_atomic() {
        let body = r#"[{"op":"add","path":"/metadata/labels/x","value":"1"},{"op":"test","path":"/metadata/resourceVersion","value":"6"}]"#;
        let e = err(Kind::Pod, &pod(), body, PatchType::Json);
        assert_eq!((e.code(), e.reason()), (422, "Invalid"));
        assert_eq!(
            e.to_string(),
            "the server rejected our request due to an error in our request"
        );
        match &e {
            PatchError::Unprocessable { detail } => {
                assert_eq!(
                    detail,
                    "testing value /metadata/resourceVersion failed: test failed"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
        for body in [
            r#"[{"op":"remove","path":"/metadata/labels/nope"}]"#,
            r#"[{"op":"replace","path":"/spec/nope","value":1}]"#,
            r#"[{"op":"add","path":"/metadata/nothere/x","value":"1"}]"#,
            r#"[{"op":"add","path":"/spec/containers/9","value":{}}]"#,
            r#"[{"op":"move","from":"/nope","path":"/spec/x"}]"#,
            r#"[{"op":"add","path":"no-slash","value":1}]"#,
            r#"[{"op":"frobnicate","path":"/spec"}]"#,
            r#"[{"path":"/spec"}]"#,
            r#"[{"op":"add"}]"#,
            r#"[null]"#,
            r#"[{"op":"test","path":"/nope/deeper","value":null}]"#,
        ] {
            let e = err(Kind::Pod, &pod(), body, PatchType::Json);
            assert_eq!((e.code(), e.reason()), (422, "Invalid"), "{body}: {e}");
        }
        let e = err(
            Kind::Pod,
            &pod(),
            r#"[{"op":"frobnicate","path":"/spec"}]"#,
            PatchType::Json,
        );
        assert!(
            matches!(&e, PatchError::Unprocessable { detail } if detail == "Unexpected kind: frobnicate"),
            "{e:?}"
        );
    }

    #[test]
    fn too_many_json_patch_operations() {
        let op = r#"{"op":"test","path":"/kind","value":"Pod"}"#;
        let body = format!("[{}]", vec![op; MAX_JSON_PATCH_OPERATIONS + 1].join(","));
        let e = err(Kind::Pod, &pod(), &body, PatchType::Json);
        assert_eq!((e.code(), e.reason()), (413, "RequestEntityTooLarge"));
        assert_eq!(
            e.to_string(),
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
        let body = format!("[{}]", vec![op; MAX_JSON_PATCH_OPERATIONS].join(","));
        ok(Kind::Pod, &pod(), &body, PatchType::Json);
    }

    #[test]
    fn malformed_bodies_are_400_with_go_messages() {
        let cases: &[(PatchType, &str, &str)] = &[
            (PatchType::Json, "not json", "invalid character 'o' in literal null (expecting 'u')"),
            (PatchType::Json, "x", "invalid character 'x' looking for beginning of value"),
            (PatchType::Json, "", "unexpected end of JSON input"),
            (PatchType::Json, "[{\"op\":\"add\"", "unexpected end of JSON input"),
            (PatchType::Json, "{}", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
            (PatchType::Json, "[1]", "json: cannot unmarshal number into Go value of type jsonpatch.Operation"),
            (PatchType::Json, "[] x", "invalid character 'x' after top-level value"),
            (PatchType::Merge, "{oops", "Invalid JSON Patch"),
            (PatchType::Merge, "null", "Invalid JSON Patch"),
            (PatchType::Merge, "42", "Invalid JSON Patch"),
            (PatchType::StrategicMerge, "{\"spec\" 1}", "invalid character '1' after object key"),
            (PatchType::StrategicMerge, "{\"a\":1,}", "invalid character '}' looking for beginning of object key string"),
            (PatchType::StrategicMerge, "[]", "json: cannot unmarshal array into Go value of type map[string]interface {}"),
            (PatchType::StrategicMerge, "\"spec\"", "json: cannot unmarshal string into Go value of type map[string]interface {}"),
            (
                PatchType::Apply,
                "- a\n- b\n",
                "error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal array into Go value of type map[string]interface {}",
            ),
        ];
        for (ty, body, message) in cases {
            let e = err(Kind::Pod, &pod(), body, *ty);
            assert_eq!((e.code(), e.reason()), (400, "BadRequest"), "{ty:?} {body}: {e}");
            assert_eq!(e.to_string(), *message, "{ty:?} {body}");
        }
        let e = err(Kind::Pod, &pod(), "a: [b\nc: d:\n", PatchType::Apply);
        assert_eq!(e.code(), 400);
        assert!(
            e.to_string()
                .starts_with("error decoding YAML: error converting YAML to JSON: yaml: "),
            "{e}"
        );
        // An empty strategic patch is a no-op.
        assert_eq!(
            ok(Kind::Pod, &pod(), "null", PatchType::StrategicMerge),
            ok(Kind::Pod, &pod(), "{}", PatchType::StrategicMerge)
        );
    }

    #[test]
    fn results_that_do_not_decode_are_422_invalid() {
        let e = err(
            Kind::Deployment,
            &deployment(),
            r#"{"spec":{"replicas":"three"}}"#,
            PatchType::Merge,
        );
        assert_eq!((e.code(), e.reason()), (422, "Invalid"));
        let message = e.to_string();
        assert!(
            message.starts_with(" \"\" is invalid: patch: Invalid value: \"{\\\"apiVersion\\\""),
            "{message}"
        );
        assert!(message.contains("replicas"), "{message}");
        let e = err(
            Kind::Deployment,
            &deployment(),
            r#"{"spec":{"replicas":"three"}}"#,
            PatchType::StrategicMerge,
        );
        assert!(
            e.to_string()
                .starts_with(" \"\" is invalid: patch: Invalid value: \"map[spec:map[replicas:three]]\": "),
            "{e}"
        );
        // A merge patch that is an array replaces the whole object, which then fails to decode.
        let e = err(Kind::Pod, &pod(), "[1]", PatchType::Merge);
        assert_eq!(e.code(), 422);
        let e = err(
            Kind::Pod,
            &pod(),
            r#"[{"op":"replace","path":"/kind","value":"Node"}]"#,
            PatchType::Json,
        );
        assert_eq!(e.code(), 422);
    }

    #[test]
    fn name_and_namespace_are_fixed() {
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"metadata":{"name":"other"}}"#,
            PatchType::Merge,
        );
        assert_eq!((e.code(), e.reason()), (400, "BadRequest"));
        assert_eq!(
            e.to_string(),
            "the name of the object (other) does not match the name on the URL (web-0)"
        );
        let e = err(
            Kind::Pod,
            &pod(),
            r#"[{"op":"replace","path":"/metadata/namespace","value":"prod"}]"#,
            PatchType::Json,
        );
        assert_eq!(
            e.to_string(),
            "the namespace of the provided object does not match the namespace sent on the request"
        );
        // A removed namespace is put back; a namespace on a cluster-scoped object is dropped.
        let out = ok(
            Kind::Pod,
            &pod(),
            r#"{"metadata":{"namespace":null}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(out["metadata"]["namespace"], json!("shop"));
        let out = ok(
            Kind::Node,
            &node(),
            r#"{"metadata":{"namespace":"x"}}"#,
            PatchType::Merge,
        );
        assert!(out["metadata"].get("namespace").is_none());
    }

    #[test]
    fn apply_merges_without_deleting_omitted_fields() {
        let body = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    team: shop\nspec:\n  replicas: 5\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n";
        let out = ok(Kind::Deployment, &deployment(), body, PatchType::Apply);
        assert_eq!(out["spec"]["replicas"], json!(5));
        assert_eq!(out["metadata"]["labels"], json!({"team": "shop"}));
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers, "name"), ["web", "sidecar"]);
        assert_eq!(containers[0]["image"], json!("nginx:1.27"));
        assert_eq!(out["spec"]["strategy"], deployment()["spec"]["strategy"]);
        // JSON is YAML too.
        let out = ok(
            Kind::Deployment,
            &deployment(),
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"shop"},"spec":{"paused":true}}"#,
            PatchType::Apply,
        );
        assert_eq!(out["spec"]["paused"], json!(true));
    }

    #[test]
    fn apply_must_name_the_object() {
        let cases = [
            ("kind: Deployment\nmetadata:\n  name: web\n", "invalid object type: /, Kind=Deployment"),
            ("apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: web\n", "invalid object type: apps/v1, Kind=StatefulSet"),
            ("apiVersion: v1\nkind: Deployment\nmetadata:\n  name: web\n", "invalid object type: /v1, Kind=Deployment"),
            ("", "invalid object type: /, Kind="),
            ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n", "the name of the object (api) does not match the name on the URL (web)"),
            ("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 1\n", "the name of the object () does not match the name on the URL (web)"),
            (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  managedFields:\n  - manager: x\n",
                "metadata.managedFields must be nil",
            ),
            (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: prod\n",
                "the namespace of the provided object does not match the namespace sent on the request",
            ),
        ];
        for (body, message) in cases {
            let e = err(Kind::Deployment, &deployment(), body, PatchType::Apply);
            assert_eq!((e.code(), e.reason()), (400, "BadRequest"), "{body}");
            assert_eq!(e.to_string(), message, "{body}");
        }
    }

    #[test]
    fn strategic_errors_match_the_server() {
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"spec":{"containers":[{"image":"x"}]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!((e.code(), e.reason()), (500, ""));
        assert_eq!(
            e.to_string(),
            "map: map[image:x] does not contain declared merge key: name"
        );
        let mut with_empty_list = pod();
        with_empty_list["spec"]["imagePullSecrets"] = json!([]);
        let body = r#"{"spec":{"imagePullSecrets":[["x"]]}}"#;
        let e = err(Kind::Pod, &with_empty_list, body, PatchType::StrategicMerge);
        assert_eq!(
            (e.code(), e.reason(), e.to_string().as_str()),
            (422, "Invalid", REJECTED)
        );
        assert!(
            matches!(&e, PatchError::Unprocessable { detail } if detail == "lists of lists are not supported")
        );
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"spec":{"containers":[["x"]]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(e.code(), 500);
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"spec":{"containers":["x"]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(e.code(), 500);
        assert!(
            e.to_string()
                .starts_with("list element types are not identical: "),
            "{e}"
        );
        let e = err(
            Kind::Pod,
            &pod(),
            r#"{"metadata":{"finalizers":[{"a":1}]}}"#,
            PatchType::StrategicMerge,
        );
        assert_eq!(e.code(), 500);
    }

    #[test]
    fn hostile_bodies_never_panic() {
        let bodies = [
            "", " ", "null", "true", "1", "-", "\"x\"", "[]", "{}", "[[]]", "[{}]", "{\"$patch\":\"delete\"}",
            "{\"$patch\":\"replace\"}", "{\"$patch\":1}", "{\"$retainKeys\":[1,{}]}", "{\"metadata\":{\"$setElementOrder/finalizers\":\"x\"}}",
            "{\"metadata\":{\"$setElementOrder/finalizers\":[{\"a\":1}],\"finalizers\":[]}}",
            "{\"metadata\":{\"$setElementOrder/finalizers\":[],\"finalizers\":[]}}",
            "{\"spec\":{\"$setElementOrder/tolerations\":[{\"key\":\"a\"}]}}",
            "{\"spec\":{\"$setElementOrder/containers\":[1,2],\"containers\":[{\"name\":\"web\"}]}}",
            "{\"spec\":{\"$setElementOrder/containers\":[{\"name\":\"web\"}],\"containers\":null}}",
            "{\"spec\":{\"containers\":[null]}}", "{\"spec\":{\"containers\":[{\"name\":null}]}}",
            "{\"spec\":{\"containers\":[{\"name\":{\"a\":1}}]}}", "{\"spec\":{\"containers\":{}}}", "{\"spec\":[]}",
            "{\"spec\":{\"$deleteFromPrimitiveList/containers\":[{\"name\":\"web\"}]}}",
            "{\"spec\":{\"$deleteFromPrimitiveList/tolerations\":[{\"key\":\"a\"}]}}",
            "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"$patch\":\"delete\"},{\"$patch\":\"replace\"}]}}",
            "[{\"op\":\"move\",\"from\":\"/spec\",\"path\":\"/spec/x\"}]", "[{\"op\":\"copy\",\"path\":\"/x\"}]",
            "[{\"op\":\"add\",\"path\":\"\",\"value\":[]}]", "[{\"op\":\"remove\",\"path\":\"\"}]",
            "[{\"op\":\"test\",\"path\":\"/spec/containers/-\"}]", "[{\"op\":\"add\",\"path\":\"/~2\",\"value\":1}]",
            "\u{feff}{}", "{\"a\":\"\\ud800\"}", "1e999", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ];
        for body in bodies {
            for ty in PatchType::ALL {
                for (kind, doc) in [
                    (Kind::Pod, pod()),
                    (Kind::Node, node()),
                    (Kind::Deployment, deployment()),
                ] {
                    if let Ok(out) = apply_patch(kind, &doc, body.as_bytes(), ty) {
                        assert_no_directives(&out);
                    }
                }
            }
        }
        let deep = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
        let e = err(Kind::Pod, &pod(), &deep, PatchType::StrategicMerge);
        assert_eq!(e.to_string(), "exceeded max depth");
    }

    #[test]
    fn error_codes_and_reasons() {
        let cases = [
            (PatchError::BadRequest("x".into()), 400, "BadRequest"),
            (PatchError::Unprocessable { detail: "x".into() }, 422, "Invalid"),
            (
                PatchError::InvalidObject {
                    value: "v".into(),
                    detail: "d".into(),
                },
                422,
                "Invalid",
            ),
            (
                PatchError::TooManyOperations(10_001),
                413,
                "RequestEntityTooLarge",
            ),
            (PatchError::Internal("x".into()), 500, ""),
        ];
        for (e, code, reason) in cases {
            assert_eq!((e.code(), e.reason()), (code, reason), "{e:?}");
        }
        let e = PatchError::InvalidObject {
            value: "a\"b\n".into(),
            detail: "bad".into(),
        };
        assert_eq!(
            e.to_string(),
            " \"\" is invalid: patch: Invalid value: \"a\\\"b\\n\": bad"
        );
    }

    #[test]
    fn list_strategy_table() {
        assert_eq!(list_strategy(Kind::Pod, "spec.containers"), MergeByKey("name"));
        assert_eq!(
            list_strategy(Kind::Pod, "spec.containers.ports"),
            MergeByKey("containerPort")
        );
        assert_eq!(
            list_strategy(Kind::Pod, "spec.initContainers.volumeMounts"),
            MergeByKey("mountPath")
        );
        assert_eq!(
            list_strategy(Kind::Pod, "spec.tolerations"),
            ListStrategy::Replace
        );
        assert_eq!(list_strategy(Kind::Pod, "metadata.finalizers"), MergePrimitives);
        assert_eq!(
            list_strategy(Kind::Pod, "spec.template.spec.containers"),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy(Kind::DaemonSet, "spec.template.spec.containers.env"),
            MergeByKey("name")
        );
        assert_eq!(
            list_strategy(Kind::ReplicaSet, "spec.template.metadata.ownerReferences"),
            MergeByKey("uid")
        );
        assert_eq!(list_strategy(Kind::Node, "spec.taints"), ListStrategy::Replace);
        assert_eq!(list_strategy(Kind::Node, "status.addresses"), MergeByKey("type"));
        assert_eq!(
            list_strategy(Kind::HorizontalPodAutoscaler, "spec.metrics"),
            ListStrategy::Replace
        );
        assert_eq!(
            list_strategy(Kind::HorizontalPodAutoscaler, "status.conditions"),
            MergeByKey("type")
        );
        assert_eq!(
            list_strategy(Kind::Lease, "status.conditions"),
            ListStrategy::Replace
        );
        assert!(map_is_replaced(Kind::PodDisruptionBudget, "spec.selector"));
        assert!(!map_is_replaced(Kind::Deployment, "spec.selector"));
    }
}
