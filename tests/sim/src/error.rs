//! Errors: the Kubernetes `Status` answers of the simulated API, and the simulator's own failures.

use serde_json::{json, Value};

use crate::resources::ResourceInfo;

/// A failed API call, answered as a `meta/v1 Status` object with the same code, reason and
/// message a real kube-apiserver sends.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, …).
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the real server sends any.
    pub details: Option<Value>,
    /// `Retry-After` seconds to send, if any.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// The Status object.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        if self.reason.is_empty() {
            if let Some(m) = v.as_object_mut() {
                m.remove("reason");
            }
        }
        v
    }

    /// 404 for a missing object.
    pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", info.qualified(), name),
        )
        .with_details(details(info, name))
    }

    /// 404 for a namespace that does not exist, on create.
    pub fn namespace_not_found(ns: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
            .with_details(json!({"name": ns, "kind": "namespaces"}))
    }

    /// 404 for a path that names nothing served.
    pub fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 AlreadyExists.
    pub fn already_exists(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", info.qualified(), name),
        )
        .with_details(details(info, name))
    }

    /// 409 Conflict on a stale resourceVersion or a failed precondition.
    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                info.qualified(),
                name,
                why
            ),
        )
        .with_details(details(info, name))
    }

    /// 409 Conflict for a write with an old resourceVersion.
    pub fn stale(info: &ResourceInfo, name: &str) -> ApiError {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 422 Invalid, naming the field.
    pub fn invalid(info: &ResourceInfo, name: &str, field: &str, problem: &str) -> ApiError {
        let msg = format!(
            "{} \"{}\" is invalid: {}: {}",
            info.kind_name, name, field, problem
        );
        ApiError::new(422, "Invalid", msg).with_details(json!({
            "name": name,
            "group": info.group,
            "kind": info.kind_name,
            "causes": [{"reason": "FieldValueInvalid", "message": problem, "field": field}],
        }))
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
        .with_details(json!({}))
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"))
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable() -> ApiError {
        ApiError::new(406, "NotAcceptable", "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io")
    }

    /// 410 Expired: a watch or list continuation from a compacted resource version.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 429 TooManyRequests, with causes and an optional Retry-After.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u32, causes: Vec<Value>) -> ApiError {
        let mut details = json!({ "causes": causes });
        if retry_after > 0 {
            details["retryAfterSeconds"] = json!(retry_after);
        }
        let mut e = ApiError::new(429, "TooManyRequests", message).with_details(details);
        e.retry_after = (retry_after > 0).then_some(retry_after);
        e
    }

    /// 403 Forbidden.
    pub fn forbidden(info: &ResourceInfo, name: &str, why: &str) -> ApiError {
        ApiError::new(
            403,
            "Forbidden",
            format!("{} \"{}\" is forbidden: {}", info.qualified(), name, why),
        )
        .with_details(details(info, name))
    }

    /// 500 with a bare message, as the eviction handler sends for a pod under two PDBs.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "", message)
    }

    /// 503 from an injected fault.
    pub fn unavailable() -> ApiError {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
        .with_details(json!({"retryAfterSeconds": 1}))
    }

    /// 504 Timeout.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(504, "Timeout", message)
    }
}

impl From<crate::patch::PatchError> for ApiError {
    fn from(e: crate::patch::PatchError) -> ApiError {
        ApiError {
            code: e.code(),
            reason: e.reason(),
            message: e.to_string(),
            details: None,
            retry_after: None,
        }
    }
}

fn details(info: &ResourceInfo, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": info.plural});
    if !info.group.is_empty() {
        d["group"] = json!(info.group);
    }
    d
}

/// Failures of the simulator itself (start-up, files, TLS).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be made.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
}
