//! Zero-downtime bookkeeping per cluster, kept exactly on every pod change: evictions allowed and
//! refused, deletions that took pods below a PodDisruptionBudget, and the lowest available
//! replica count each Deployment reached against its count at the start.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::object::Object;
use crate::selector::LabelSelector;
use crate::store::{Change, EventType};

/// One deletion that left a PodDisruptionBudget with fewer healthy pods than it wants.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// `namespace/pod`.
    pub pod: String,
    /// `namespace/pdb`.
    pub pdb: String,
    /// Healthy pods left.
    pub healthy: i32,
    /// Healthy pods the budget wants.
    pub desired: i32,
}

/// Availability of one Deployment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeploymentStats {
    /// `spec.replicas` now.
    pub replicas: i32,
    /// Available replicas now (Ready, Running, not terminating).
    pub available: i64,
    /// Available replicas when the baseline was taken: the first time the Deployment was fully
    /// available, or at the last reset. `None` until then.
    pub available_at_start: Option<i64>,
    /// Lowest available count since the baseline.
    pub min_available: Option<i64>,
}

/// The statistics of one cluster, as served at `stats_url`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterStats {
    /// Evictions the API allowed.
    pub evictions_allowed: u64,
    /// Evictions refused (429 from a PodDisruptionBudget, or the other refusals).
    pub evictions_refused: u64,
    /// Deletions that left a PodDisruptionBudget below its desired healthy count. Deletions of a
    /// Deployment's surplus pods (scale-in, rolling update) are not disruptions and do not count.
    pub pdb_violations: u64,
    /// The most recent violations (at most 100).
    pub violations: Vec<Violation>,
    /// Per `namespace/name`.
    pub deployments: BTreeMap<String, DeploymentStats>,
}

#[derive(Debug)]
struct PodState {
    labels: BTreeMap<String, String>,
    healthy: bool,
}

struct Budget {
    selector: Option<LabelSelector>,
    desired: i32,
}

/// Tracks [`ClusterStats`] from the stream of store changes.
#[derive(Default)]
pub struct StatsTracker {
    stats: ClusterStats,
    rs_owner: HashMap<(String, String), String>,
    pods: HashMap<(String, String), PodState>,
    budgets: HashMap<(String, String), Budget>,
}

impl std::fmt::Debug for StatsTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsTracker")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn healthy(obj: &Object) -> bool {
    let Object::Pod(p) = obj else { return false };
    if p.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let status = p.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl StatsTracker {
    /// The statistics so far.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// Counts an eviction.
    pub fn eviction(&mut self, allowed: bool) {
        if allowed {
            self.stats.evictions_allowed += 1;
        } else {
            self.stats.evictions_refused += 1;
        }
    }

    /// Starts measuring afresh: counters to zero, every Deployment's baseline = available now.
    pub fn reset(&mut self) {
        self.stats.evictions_allowed = 0;
        self.stats.evictions_refused = 0;
        self.stats.pdb_violations = 0;
        self.stats.violations.clear();
        for d in self.stats.deployments.values_mut() {
            d.available_at_start = Some(d.available);
            d.min_available = Some(d.available);
        }
    }

    /// Takes one change into account.
    pub fn observe(&mut self, change: &Change) {
        let obj = change.entry.obj.as_ref();
        let key = (obj.namespace().to_string(), obj.name().to_string());
        let gone = change.ty == EventType::Deleted;
        match obj {
            Object::ReplicaSet(rs) => {
                if gone {
                    self.rs_owner.remove(&key);
                } else if let Some(owner) = rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|r| r.controller == Some(true) && r.kind == "Deployment")
                {
                    self.rs_owner.insert(key, owner.name.clone());
                }
            }
            Object::Deployment(d) => {
                let id = format!("{}/{}", key.0, key.1);
                if gone {
                    self.stats.deployments.remove(&id);
                } else {
                    let entry = self.stats.deployments.entry(id).or_default();
                    entry.replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    Self::baseline(entry);
                }
            }
            Object::PodDisruptionBudget(p) => {
                if gone {
                    self.budgets.remove(&key);
                } else {
                    let selector = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .and_then(|s| LabelSelector::from_k8s(s).ok());
                    let desired = p.status.as_ref().map(|s| s.desired_healthy).unwrap_or(0);
                    self.budgets.insert(key, Budget { selector, desired });
                }
            }
            Object::Pod(p) => self.observe_pod(key, p, obj, gone),
            _ => {}
        }
    }

    fn observe_pod(
        &mut self,
        key: (String, String),
        p: &k8s_openapi::api::core::v1::Pod,
        obj: &Object,
        gone: bool,
    ) {
        let now_healthy = !gone && healthy(obj);
        let deleting = gone || p.metadata.deletion_timestamp.is_some();
        let deployment = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true) && r.kind == "ReplicaSet")
            .and_then(|r| self.rs_owner.get(&(key.0.clone(), r.name.clone())).cloned());
        let was_healthy = self.pods.get(&key).is_some_and(|s| s.healthy);
        // A Deployment with more healthy pods than it wants is scaling in (or rolling): its
        // ReplicaSets remove the surplus, which is the owner's choice, not a disruption.
        let surplus = deployment.as_ref().is_some_and(|d| {
            self.stats
                .deployments
                .get(&format!("{}/{}", key.0, d))
                .is_some_and(|d| d.available > i64::from(d.replicas))
        });
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if gone {
            self.pods.remove(&key);
        } else {
            self.pods.insert(
                key.clone(),
                PodState {
                    labels: labels.clone(),
                    healthy: now_healthy,
                },
            );
        }
        if was_healthy == now_healthy {
            return;
        }
        if let Some(d) = deployment {
            let id = format!("{}/{}", key.0, d);
            let entry = self.stats.deployments.entry(id).or_default();
            entry.available += if now_healthy { 1 } else { -1 };
            Self::baseline(entry);
        }
        if was_healthy && deleting && !surplus {
            self.check_budgets(&key, &labels);
        }
    }

    fn baseline(entry: &mut DeploymentStats) {
        if entry.available_at_start.is_none()
            && entry.replicas > 0
            && entry.available >= i64::from(entry.replicas)
        {
            entry.available_at_start = Some(entry.available);
        }
        if entry.available_at_start.is_some() {
            entry.min_available = Some(
                entry
                    .min_available
                    .map_or(entry.available, |m| m.min(entry.available)),
            );
        }
    }

    fn check_budgets(&mut self, pod: &(String, String), labels: &BTreeMap<String, String>) {
        for ((ns, name), budget) in &self.budgets {
            if *ns != pod.0 {
                continue;
            }
            let Some(sel) = budget.selector.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            if !sel.matches(Some(labels)) {
                continue;
            }
            let healthy = self
                .pods
                .iter()
                .filter(|((pns, _), s)| *pns == *ns && s.healthy && sel.matches(Some(&s.labels)))
                .count() as i32;
            if healthy < budget.desired {
                self.stats.pdb_violations += 1;
                self.stats.violations.push(Violation {
                    pod: format!("{}/{}", pod.0, pod.1),
                    pdb: format!("{ns}/{name}"),
                    healthy,
                    desired: budget.desired,
                });
                if self.stats.violations.len() > 100 {
                    self.stats.violations.remove(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::{
        PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as K8sSelector, ObjectMeta, OwnerReference,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use crate::object::Object;
    use crate::resources::Kind;
    use crate::store::Store;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        }
    }

    fn owner(kind: &str, name: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            kind: kind.into(),
            name: name.into(),
            controller: Some(true),
            uid: format!("{name}-uid"),
            api_version: "apps/v1".into(),
            ..Default::default()
        }])
    }

    fn ready_pod(name: &str) -> Object {
        let mut m = meta(name);
        m.owner_references = owner("ReplicaSet", "web-1");
        Object::Pod(Pod {
            metadata: m,
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn deployment(replicas: i32) -> Object {
        Object::Deployment(Deployment {
            metadata: meta("web"),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        })
    }

    /// web: 4 ready pods, a PDB wanting 3 healthy.
    fn cluster() -> Store {
        let mut s = Store::new(100, tokio::sync::broadcast::channel(16).0);
        s.insert(deployment(4));
        let mut rs = meta("web-1");
        rs.owner_references = owner("Deployment", "web");
        s.insert(Object::ReplicaSet(ReplicaSet {
            metadata: rs,
            ..Default::default()
        }));
        for i in 0..4 {
            s.insert(ready_pod(&format!("web-{i}")));
        }
        s.insert(Object::PodDisruptionBudget(PodDisruptionBudget {
            metadata: meta("web"),
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(3)),
                selector: Some(K8sSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PodDisruptionBudgetStatus {
                desired_healthy: 3,
                current_healthy: 4,
                ..Default::default()
            }),
        }));
        s
    }

    #[test]
    fn deletions_below_the_budget_count_and_availability_is_tracked() {
        let mut s = cluster();
        let d = &s.stats().stats().deployments["shop/web"];
        assert_eq!(
            (d.available, d.available_at_start, d.min_available),
            (4, Some(4), Some(4))
        );
        s.remove(Kind::Pod, "shop", "web-0");
        assert_eq!(
            s.stats().stats().pdb_violations,
            0,
            "4 -> 3 healthy meets minAvailable 3"
        );
        s.remove(Kind::Pod, "shop", "web-1");
        let st = s.stats().stats().clone();
        assert_eq!(st.pdb_violations, 1, "3 -> 2 healthy is below minAvailable 3");
        assert_eq!(
            (st.violations[0].pod.as_str(), st.violations[0].pdb.as_str()),
            ("shop/web-1", "shop/web")
        );
        assert_eq!(st.deployments["shop/web"].min_available, Some(2));
    }

    #[test]
    fn surplus_removed_after_a_scale_in_is_not_a_disruption() {
        let mut s = cluster();
        for i in 4..8 {
            s.insert(ready_pod(&format!("web-{i}")));
        }
        s.replace(deployment(1));
        for i in 0..7 {
            s.remove(Kind::Pod, "shop", &format!("web-{i}"));
        }
        assert_eq!(
            s.stats().stats().pdb_violations,
            0,
            "scaling in to 1 is the owner's choice"
        );
        s.replace(deployment(1));
        s.remove(Kind::Pod, "shop", "web-7");
        assert_eq!(
            s.stats().stats().pdb_violations,
            1,
            "deleting the last wanted pod is a disruption"
        );
    }
}
