//! TEMPORARY shim until the real printers module lands.
use crate::object::Object; use crate::resources::Kind; use k8s_openapi::jiff::Timestamp; use serde_json::{json, Value};
pub enum IncludeObject { None, Metadata, Object }
impl IncludeObject { pub fn parse(s: Option<&str>) -> Result<IncludeObject, String> { Ok(match s { Some("None") => IncludeObject::None, Some("Object") => IncludeObject::Object, _ => IncludeObject::Metadata }) } }
pub fn table(_kind: Kind, objects: &[&Object], _include: IncludeObject, _now: Timestamp, list_metadata: Value) -> Value { json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":list_metadata,"columnDefinitions":[{"name":"Name","type":"string","format":"name","description":"","priority":0}],"rows": objects.iter().map(|o| json!({"cells":[o.name()],"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":o.meta()}})).collect::<Vec<_>>()}) }
