//! Who is calling: the identity in the peer's client certificate (already verified against our CA
//! by the TLS handshake), and what it may do. Operators with role `viewer` may read; role
//! `operator` may also start and steer work; agents may only hold their own cluster's session.
//! Every refusal is logged with who, what and why.

use tonic::{Request, Status};

use crate::ca::{self, Identity, Role};

/// What a Fleet call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Get, List, Watch: any operator certificate.
    Read,
    /// Start, Cancel, steer: role `operator`.
    Mutate,
}

/// The identity of the caller of `req`, from its client certificate.
///
/// `Unauthenticated` when there is no certificate (the server requires one, so only an in-process
/// caller without TLS gets here) or it carries no Flotilla identity.
pub fn identity<T>(req: &Request<T>, method: &str) -> Result<Identity, Status> {
    let Some(certs) = req.peer_certs() else {
        let why = "no client certificate";
        tracing::warn!(method, remote = ?req.remote_addr(), reason = why, "refused");
        return Err(Status::unauthenticated(format!(
            "{why}: connect with a certificate issued by `flotilla-coordinator ca issue`"
        )));
    };
    let Some(leaf) = certs.first() else {
        tracing::warn!(method, reason = "empty certificate chain", "refused");
        return Err(Status::unauthenticated("empty client certificate chain"));
    };
    ca::identity_of(leaf).map_err(|e| {
        tracing::warn!(method, remote = ?req.remote_addr(), reason = %e, "refused");
        Status::unauthenticated(format!("client certificate: {e}"))
    })
}

/// An operator allowed `access` to a Fleet method; returns its identity.
pub fn operator<T>(req: &Request<T>, method: &str, access: Access) -> Result<Identity, Status> {
    let id = identity(req, method)?;
    match (&id, access) {
        (Identity::Operator { .. }, Access::Read)
        | (
            Identity::Operator {
                role: Role::Operator, ..
            },
            Access::Mutate,
        ) => Ok(id),
        (Identity::Operator { role, name }, Access::Mutate) => {
            let who = id.uri();
            tracing::warn!(%who, method, %role, reason = "viewer may not mutate", "refused");
            Err(Status::permission_denied(format!(
                "{method}: operator {name} has role {role}, which may only read; ask for a certificate with --role operator"
            )))
        }
        (Identity::Agent { cluster }, _) => {
            let who = id.uri();
            tracing::warn!(%who, method, reason = "agents may not call the Fleet API", "refused");
            Err(Status::permission_denied(format!(
                "{method}: the agent of cluster {cluster} may not call the Fleet API; use an operator certificate"
            )))
        }
    }
}

/// An agent; returns the cluster its certificate names.
pub fn agent<T>(req: &Request<T>, method: &str) -> Result<String, Status> {
    match identity(req, method)? {
        Identity::Agent { cluster } => Ok(cluster),
        other => {
            let who = other.uri();
            tracing::warn!(%who, method, reason = "only agents may open a session", "refused");
            Err(Status::permission_denied(format!(
                "{method}: {who} is not an agent; only agent certificates (ca issue --agent CLUSTER) may connect here"
            )))
        }
    }
}

/// The `traceparent` metadata (W3C trace context) of a request, if any.
pub fn traceparent<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
