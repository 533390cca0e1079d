//! TEMPORARY shim until the real eviction module lands.
use crate::error::ApiError;
use crate::store::Store;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
pub struct EvictOutcome {
    pub allowed: bool,
    pub status: Value,
}
pub fn evict(
    store: &mut Store,
    now: Timestamp,
    ns: &str,
    pod: &str,
    _body: &Value,
    _dry: bool,
) -> Result<EvictOutcome, ApiError> {
    crate::api::delete(
        store,
        now,
        crate::resources::Kind::Pod,
        ns,
        pod,
        &Default::default(),
    )?;
    Ok(EvictOutcome {
        allowed: true,
        status: json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}),
    })
}
