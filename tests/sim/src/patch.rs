//! TEMPORARY shim until the real patch module lands (merge patch only).
use crate::resources::Kind;
pub enum PatchType { Json, Merge, StrategicMerge, Apply }
impl PatchType { pub fn from_content_type(ct: &str) -> Option<PatchType> { let ct = ct.split(';').next().unwrap_or("").trim(); match ct { "application/json-patch+json" => Some(PatchType::Json), "application/merge-patch+json" => Some(PatchType::Merge), "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge), "application/apply-patch+yaml" => Some(PatchType::Apply), _ => None } } }
#[derive(Debug, thiserror::Error)] pub enum PatchError { #[error("{0}")] Bad(String) }
impl PatchError { pub fn code(&self) -> u16 { 400 } pub fn reason(&self) -> &'static str { "BadRequest" } }
pub fn apply_patch(_kind: Kind, doc: &serde_json::Value, body: &[u8], _ty: PatchType) -> Result<serde_json::Value, PatchError> { let p: serde_json::Value = serde_json::from_slice(body).map_err(|e| PatchError::Bad(e.to_string()))?; let mut d = doc.clone(); json_patch::merge(&mut d, &p); Ok(d) }
