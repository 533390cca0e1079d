//! TEMPORARY shim until the real selector module lands.
use std::collections::BTreeMap;
pub struct LabelSelector { reqs: Vec<(String, String, Vec<String>)> }
impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> { let mut reqs = vec![]; for p in s.split(',').filter(|p| !p.trim().is_empty()) { if let Some((k, v)) = p.split_once("!=") { reqs.push((k.trim().into(), "NotIn".into(), vec![v.trim().into()])); } else if let Some((k, v)) = p.split_once('=') { reqs.push((k.trim().into(), "In".into(), vec![v.trim_start_matches('=').trim().into()])); } else { reqs.push((p.trim().into(), "Exists".into(), vec![])); } } Ok(LabelSelector { reqs }) }
    pub fn from_k8s(sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Result<LabelSelector, String> { let mut reqs = vec![]; for (k, v) in sel.match_labels.iter().flatten() { reqs.push((k.clone(), "In".into(), vec![v.clone()])); } for e in sel.match_expressions.iter().flatten() { reqs.push((e.key.clone(), e.operator.clone(), e.values.clone().unwrap_or_default())); } Ok(LabelSelector { reqs }) }
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool { self.reqs.iter().all(|(k, op, vals)| { let v = labels.and_then(|l| l.get(k)); match op.as_str() { "In" => v.is_some_and(|v| vals.contains(v)), "NotIn" => v.is_none_or(|v| !vals.contains(v)), "Exists" => v.is_some(), "DoesNotExist" => v.is_none(), _ => false } }) }
    pub fn is_empty(&self) -> bool { self.reqs.is_empty() }
}
pub struct FieldSelector { reqs: Vec<(String, bool, String)> }
impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, String> { let mut reqs = vec![]; for p in s.split(',').filter(|p| !p.is_empty()) { if let Some((k, v)) = p.split_once("!=") { reqs.push((k.into(), false, v.into())); } else if let Some((k, v)) = p.split_once('=') { reqs.push((k.into(), true, v.trim_start_matches('=').into())); } else { return Err(format!("invalid selector: '{s}'; can't understand '{p}'")); } } Ok(FieldSelector { reqs }) }
    pub fn matches(&self, obj: &crate::object::Object) -> Result<bool, String> { for (k, eq, v) in &self.reqs { let got = obj.field(k).ok_or_else(|| format!("field label not supported: {k}"))?; if (got == *v) != *eq { return Ok(false); } } Ok(true) }
    pub fn is_empty(&self) -> bool { self.reqs.is_empty() }
}
