//! `SurgeScale`: every Deployment with pods on the old nodes, plus kube-system `coredns` and
//! `aws-load-balancer-controller`, scaled up by the surge (default 100%). The original replicas
//! (and HPA min/maxReplicas) are written to annotations before anything is scaled, and a
//! Deployment owned by a HorizontalPodAutoscaler is raised through the HPA. If the new nodes
//! cannot fit the surge, the step says so before scaling anything.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Serialize;

use super::{Progress, ProgressSink, StepError, StepKind};
use crate::cluster::{Cluster, DeploymentPatch, HpaPatch, ObjectRef};
use crate::model::{self, Owners, Resources};
use crate::placement::Placement;
use crate::{events, inventory};

/// Deployments surged whether or not they have pods on the old nodes (if they exist).
pub const ALWAYS_SURGED: [&str; 2] = ["kube-system/coredns", "kube-system/aws-load-balancer-controller"];

pub use flotilla_proto::limits::{MAX_SURGE_COUNT, MAX_SURGE_PERCENT};

/// How much to add: a share of the current replicas or a fixed count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Surge {
    /// `100%` doubles each Deployment (at least one extra pod).
    Percent(u32),
    /// `3` adds three pods to each Deployment.
    Count(u32),
}

impl Default for Surge {
    fn default() -> Surge {
        Surge::Percent(100)
    }
}

impl Surge {
    /// The surged replica count for `original` replicas.
    pub fn target(&self, original: i32) -> i32 {
        if original <= 0 {
            return original;
        }
        match *self {
            Surge::Percent(p) => {
                let extra = ((i64::from(original) * i64::from(p) + 99) / 100).max(1);
                original.saturating_add(extra as i32)
            }
            Surge::Count(n) => original.saturating_add(i32::try_from(n).unwrap_or(i32::MAX)),
        }
    }
}

impl FromStr for Surge {
    type Err = StepError;

    fn from_str(s: &str) -> Result<Surge, StepError> {
        let bad = |why: &str| {
            StepError::invalid(
                "surge",
                format!("`{s}` {why}; write a share such as 100% or a pod count such as 2"),
            )
        };
        let s = s.trim();
        let (num, pct) = match s.strip_suffix('%') {
            Some(n) => (n, true),
            None => (s, false),
        };
        let n: u32 = num.trim().parse().map_err(|_| bad("is not a number"))?;
        if n == 0 {
            return Err(bad("adds no pods, so draining would lower availability"));
        }
        if pct && n > MAX_SURGE_PERCENT {
            return Err(bad(&format!("is above {MAX_SURGE_PERCENT}%")));
        }
        if !pct && n > MAX_SURGE_COUNT {
            return Err(bad(&format!("is above {MAX_SURGE_COUNT} pods")));
        }
        Ok(if pct { Surge::Percent(n) } else { Surge::Count(n) })
    }
}

impl std::fmt::Display for Surge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Surge::Percent(p) => write!(f, "{p}%"),
            Surge::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The old node group (Deployments with pods there are surged).
    pub from: String,
    /// The new node group (the surge must fit there).
    pub to: String,
    /// How much to add.
    pub surge: Surge,
    /// Deployments (`namespace/name`) surged even without pods on the old nodes, if they exist.
    pub always: Vec<String>,
}

impl Params {
    /// Surges from `from` onto `to` by `surge`, with the default always-surged Deployments.
    pub fn new(from: &str, to: &str, surge: Surge) -> Params {
        Params {
            from: from.into(),
            to: to.into(),
            surge,
            always: ALWAYS_SURGED.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), StepError> {
        if self.from.trim().is_empty() {
            return Err(StepError::invalid(
                "from",
                "empty; name the old node group, e.g. ng-old",
            ));
        }
        if self.to.trim().is_empty() {
            return Err(StepError::invalid(
                "to",
                "empty; name the new node group, e.g. ng-new",
            ));
        }
        if self.from == self.to {
            return Err(StepError::invalid(
                "to",
                format!("`{}` is also --from; migrate to a different node group", self.to),
            ));
        }
        match self.surge {
            Surge::Percent(0) | Surge::Count(0) => {
                Err(StepError::invalid("surge", "adds no pods; use e.g. 100%"))
            }
            Surge::Percent(p) if p > MAX_SURGE_PERCENT => Err(StepError::invalid(
                "surge",
                format!("{p}% is above {MAX_SURGE_PERCENT}%; use a smaller share"),
            )),
            Surge::Count(n) if n > MAX_SURGE_COUNT => Err(StepError::invalid(
                "surge",
                format!("{n} pods is above {MAX_SURGE_COUNT}; use a smaller count"),
            )),
            _ => Ok(()),
        }
    }
}

/// An HPA raised for the surge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HpaPlan {
    /// `namespace/name`.
    pub name: String,
    /// `minReplicas` before the surge.
    pub original_min: i32,
    /// `maxReplicas` before the surge.
    pub original_max: i32,
    /// `minReplicas` now.
    pub current_min: i32,
    /// `maxReplicas` now.
    pub current_max: i32,
    /// The originals are not yet recorded on the HPA.
    pub needs_annotation: bool,
}

/// One Deployment's surge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    /// `namespace/name`.
    pub deployment: String,
    /// Replicas before the surge (recorded, or current).
    pub original: i32,
    /// Replicas during the migration.
    pub target: i32,
    /// `spec.replicas` now.
    pub current: i32,
    /// The HPA scaling it, if any.
    pub hpa: Option<HpaPlan>,
    /// The originals are not yet recorded on the Deployment.
    pub needs_annotation: bool,
    /// Requests of one of its pods.
    #[serde(skip)]
    pub pod_requests: Resources,
    /// What its pods ask of their node (taints tolerated, nodeSelector, required affinity).
    #[serde(skip)]
    pub placement: Placement,
}

impl Planned {
    /// Namespace and name.
    pub fn ns_name(&self) -> (&str, &str) {
        self.deployment.split_once('/').unwrap_or(("", &self.deployment))
    }
}

fn int_annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<i32> {
    model::annotation(meta, key).and_then(|v| v.trim().parse().ok())
}

/// Decides which Deployments to surge and to what (pure). Recorded originals win over current
/// values, so a re-run after a kill aims at the same targets.
pub fn plan(
    old_nodes: &BTreeSet<String>,
    deployments: &[Deployment],
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
    hpas: &[HorizontalPodAutoscaler],
    surge: Surge,
    always: &[String],
) -> Vec<Planned> {
    let owners = Owners::new(replica_sets);
    let mut wanted: BTreeSet<String> = pods
        .iter()
        .filter(|p| !model::terminating(&p.metadata))
        .filter(|p| model::pod_node(p).is_some_and(|n| old_nodes.contains(n)))
        .filter_map(|p| owners.deployment_of(p))
        .collect();
    wanted.extend(always.iter().cloned());
    let hpa_of = inventory::hpa_targets(hpas);
    let hpa_by_key: BTreeMap<String, &HorizontalPodAutoscaler> =
        hpas.iter().map(|h| (model::key(&h.metadata), h)).collect();
    let mut out = Vec::new();
    for d in deployments {
        let key = model::key(&d.metadata);
        let recorded = int_annotation(&d.metadata, model::ORIGINAL_REPLICAS_ANNOTATION);
        if !wanted.contains(&key) && recorded.is_none() {
            continue;
        }
        let current = model::deployment_replicas(d);
        let original = recorded.unwrap_or(current);
        if original <= 0 {
            continue;
        }
        let target = int_annotation(&d.metadata, model::SURGE_REPLICAS_ANNOTATION)
            .unwrap_or_else(|| surge.target(original));
        let hpa = hpa_of.get(&key).and_then(|h| hpa_by_key.get(h)).map(|h| {
            let spec = h.spec.clone().unwrap_or_default();
            let cur_min = spec.min_replicas.unwrap_or(1);
            let rec_min = int_annotation(&h.metadata, model::ORIGINAL_MIN_REPLICAS_ANNOTATION);
            let rec_max = int_annotation(&h.metadata, model::ORIGINAL_MAX_REPLICAS_ANNOTATION);
            HpaPlan {
                name: model::key(&h.metadata),
                original_min: rec_min.unwrap_or(cur_min),
                original_max: rec_max.unwrap_or(spec.max_replicas),
                current_min: cur_min,
                current_max: spec.max_replicas,
                needs_annotation: rec_min.is_none() || rec_max.is_none(),
            }
        });
        let template = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let pod_requests = template.map(model::pod_requests).unwrap_or(Resources {
            pods: 1,
            ..Default::default()
        });
        let placement = template.map(Placement::of).unwrap_or_default();
        out.push(Planned {
            deployment: key,
            original,
            target,
            current,
            hpa,
            needs_annotation: recorded.is_none(),
            pod_requests,
            placement,
        });
    }
    out
}

/// One pod the surge still has to place.
struct Demand<'a> {
    deployment: &'a str,
    requests: Resources,
    placement: Placement,
    /// The new group's nodes (indexes) it may go to, resources aside.
    eligible: Vec<usize>,
}

/// Checks (pure) that the pods the surge still has to create, plus pods of surged Deployments
/// not yet placed, fit onto the new group's nodes: each only onto nodes it may go to (Ready, not
/// cordoned, its taints tolerated, nodeSelector and required node affinity matched), the most
/// constrained first, then by size (first fit). On failure, names each Deployment that does not
/// fit and why.
pub fn check_capacity(
    plans: &[Planned],
    new_nodes: &[Node],
    pods: &[Pod],
    owners: &Owners,
    group: &str,
) -> Result<(), StepError> {
    let mut free: Vec<Resources> = new_nodes
        .iter()
        .map(|n| {
            let name = model::name(&n.metadata);
            let used = pods
                .iter()
                .filter(|p| model::pod_node(p) == Some(name) && !model::pod_finished(p))
                .filter_map(|p| p.spec.as_ref().map(model::pod_requests))
                .fold(Resources::default(), |a, r| a.plus(&r));
            model::node_allocatable(n).minus(&used)
        })
        .collect();
    let eligible = |placement: &Placement| -> Vec<usize> {
        (0..new_nodes.len())
            .filter(|i| placement.refusal(&new_nodes[*i]).is_none())
            .collect()
    };
    let mut demand: Vec<Demand> = Vec::new();
    for p in plans {
        let missing = (p.target - p.current).max(0);
        if missing > 0 {
            let ok = eligible(&p.placement);
            demand.extend((0..missing).map(|_| Demand {
                deployment: &p.deployment,
                requests: p.pod_requests,
                placement: p.placement.clone(),
                eligible: ok.clone(),
            }));
        }
    }
    let by_name: BTreeMap<&str, &Planned> = plans.iter().map(|p| (p.deployment.as_str(), p)).collect();
    for pod in pods
        .iter()
        .filter(|p| model::pod_node(p).is_none() && !model::terminating(&p.metadata))
    {
        let Some(pl) = owners
            .deployment_of(pod)
            .and_then(|d| by_name.get(d.as_str()).copied())
        else {
            continue;
        };
        let (requests, placement) = match pod.spec.as_ref() {
            Some(spec) => (model::pod_requests(spec), Placement::of(spec)),
            None => (pl.pod_requests, pl.placement.clone()),
        };
        let ok = eligible(&placement);
        demand.push(Demand {
            deployment: &pl.deployment,
            requests,
            placement,
            eligible: ok,
        });
    }
    if demand.is_empty() {
        return Ok(());
    }
    demand.sort_by_key(|d| {
        (
            d.eligible.len(),
            std::cmp::Reverse((d.requests.cpu_millis, d.requests.memory_bytes)),
        )
    });
    let free_total = new_nodes
        .iter()
        .zip(&free)
        .filter(|(n, _)| model::node_unschedulable_reason(n).is_none())
        .fold(Resources::default(), |a, (_, r)| a.plus(&r.max_zero()));
    let mut unplaced: BTreeMap<&str, (usize, &Demand)> = BTreeMap::new();
    for d in &demand {
        match d.eligible.iter().find(|i| d.requests.fits(&free[**i])) {
            Some(i) => free[*i] = free[*i].minus(&d.requests),
            None => unplaced.entry(d.deployment).or_insert((0, d)).0 += 1,
        }
    }
    if unplaced.is_empty() {
        return Ok(());
    }
    let needed = demand
        .iter()
        .fold(Resources::default(), |a, d| a.plus(&d.requests));
    let why = |d: &Demand| -> String {
        if d.eligible.is_empty() {
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for n in new_nodes {
                if let Some(r) = d.placement.refusal(n) {
                    *reasons.entry(r).or_default() += 1;
                }
            }
            let list: Vec<String> = reasons
                .into_iter()
                .map(|(r, n)| format!("{n} node(s): {r}"))
                .collect();
            if list.is_empty() {
                format!("{group} has no nodes")
            } else {
                format!("no node of {group} admits its pods ({})", list.join("; "))
            }
        } else {
            let left = d
                .eligible
                .iter()
                .fold(Resources::default(), |a, i| a.plus(&free[*i].max_zero()));
            format!(
                "each pod requests {}; the {} node(s) of {group} it may use have {} left",
                d.requests,
                d.eligible.len(),
                left
            )
        }
    };
    Err(StepError::InsufficientCapacity {
        group: group.to_string(),
        needed,
        free: free_total,
        unplaced: unplaced
            .into_iter()
            .map(|(name, (n, d))| format!("{name} ({n} pod(s)): {}", why(d)))
            .collect(),
    })
}

/// One Deployment surged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Surged {
    /// `namespace/name`.
    pub deployment: String,
    /// Replicas before.
    pub original: i32,
    /// Replicas now.
    pub target: i32,
    /// `namespace/name` of the HPA raised, if any.
    pub hpa: Option<String>,
    /// Whether this run changed it (false on a re-run).
    pub changed: bool,
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Every surged Deployment.
    pub deployments: Vec<Surged>,
}

/// Records originals, checks capacity, then scales.
pub async fn run<C: Cluster>(
    cluster: &C,
    p: &Params,
    progress: &dyn ProgressSink,
) -> Result<Output, StepError> {
    let nodes = cluster.nodes().await?;
    let old: BTreeSet<String> = inventory::group_nodes(&nodes, &p.from)?
        .iter()
        .map(|n| model::name(&n.metadata).to_string())
        .collect();
    let new_nodes = inventory::group_nodes(&nodes, &p.to)?;
    let deployments = cluster.deployments().await?;
    let replica_sets = cluster.replica_sets().await?;
    let pods = cluster.pods(None).await?;
    let hpas = cluster.hpas().await?;
    let plans = plan(
        &old,
        &deployments,
        &replica_sets,
        &pods,
        &hpas,
        p.surge,
        &p.always,
    );
    check_capacity(&plans, &new_nodes, &pods, &Owners::new(&replica_sets), &p.to)?;
    let total = plans.len() as u64;
    let by_key: BTreeMap<String, &Deployment> =
        deployments.iter().map(|d| (model::key(&d.metadata), d)).collect();

    // 1. Record the originals before anything changes.
    for (i, pl) in plans.iter().enumerate() {
        let (ns, name) = pl.ns_name();
        if pl.needs_annotation {
            let mut patch = DeploymentPatch::default();
            patch.annotations.insert(
                model::ORIGINAL_REPLICAS_ANNOTATION.into(),
                Some(pl.original.to_string()),
            );
            patch.annotations.insert(
                model::SURGE_REPLICAS_ANNOTATION.into(),
                Some(pl.target.to_string()),
            );
            cluster.patch_deployment(ns, name, &patch).await?;
        }
        if let Some(h) = pl.hpa.as_ref().filter(|h| h.needs_annotation) {
            let (hns, hname) = h.name.split_once('/').unwrap_or(("", &h.name));
            let mut patch = HpaPatch::default();
            patch.annotations.insert(
                model::ORIGINAL_MIN_REPLICAS_ANNOTATION.into(),
                Some(h.original_min.to_string()),
            );
            patch.annotations.insert(
                model::ORIGINAL_MAX_REPLICAS_ANNOTATION.into(),
                Some(h.original_max.to_string()),
            );
            cluster.patch_hpa(hns, hname, &patch).await?;
        }
        progress.report(Progress::new(
            StepKind::SurgeScale,
            0,
            total,
            format!("recorded originals of {} of {total} Deployments", i + 1),
        ));
    }

    // 2. Scale: through the HPA when there is one.
    let mut out = Vec::new();
    for (i, pl) in plans.iter().enumerate() {
        let (ns, name) = pl.ns_name();
        let mut changed = false;
        match &pl.hpa {
            Some(h) => {
                let want_max = h.original_max.max(pl.target);
                if h.current_min != pl.target || h.current_max != want_max {
                    let (hns, hname) = h.name.split_once('/').unwrap_or(("", &h.name));
                    let patch = HpaPatch {
                        min_replicas: Some(pl.target),
                        max_replicas: Some(want_max),
                        ..Default::default()
                    };
                    cluster.patch_hpa(hns, hname, &patch).await?;
                    changed = true;
                }
            }
            None => {
                if pl.current != pl.target {
                    cluster
                        .patch_deployment(
                            ns,
                            name,
                            &DeploymentPatch {
                                replicas: Some(pl.target),
                                ..Default::default()
                            },
                        )
                        .await?;
                    changed = true;
                }
            }
        }
        if changed {
            tracing::info!(deployment = %pl.deployment, original = pl.original, target = pl.target, "surged");
            if let Some(d) = by_key.get(&pl.deployment) {
                let via = pl
                    .hpa
                    .as_ref()
                    .map(|h| format!(" through HPA {}", h.name))
                    .unwrap_or_default();
                let msg = format!(
                    "Flotilla migration: surged from {} to {} replicas{via} (original recorded in {})",
                    pl.original,
                    pl.target,
                    model::ORIGINAL_REPLICAS_ANNOTATION
                );
                events::normal(cluster, ObjectRef::deployment(d), "FlotillaSurgeScaled", msg).await;
            }
        }
        out.push(Surged {
            deployment: pl.deployment.clone(),
            original: pl.original,
            target: pl.target,
            hpa: pl.hpa.as_ref().map(|h| h.name.clone()),
            changed,
        });
        progress.report(Progress::new(
            StepKind::SurgeScale,
            i as u64 + 1,
            total,
            format!("{} of {total} Deployments scaled", i + 1),
        ));
    }
    Ok(Output { deployments: out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::GroupKind;
    use crate::steps::NoProgress;

    fn cluster() -> FakeCluster {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 4000, 20);
        fake.add_node("old-2", "ng-old", GroupKind::SelfManaged, 4000, 20);
        fake.add_deployment("shop", "web", 4, 100);
        fake.add_deployment("shop", "api", 3, 100);
        fake.add_deployment("kube-system", "coredns", 2, 100);
        fake.add_hpa("shop", "api", 3, 4);
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 4000, 20);
        fake.add_node("new-2", "ng-new", GroupKind::Managed, 4000, 20);
        crate::cluster::fake::taint_node(&fake, "old-1", model::DEFAULT_TAINT_KEY);
        crate::cluster::fake::taint_node(&fake, "old-2", model::DEFAULT_TAINT_KEY);
        fake
    }

    #[test]
    fn surge_parses_and_computes_targets() {
        assert_eq!("100%".parse::<Surge>().ok(), Some(Surge::Percent(100)));
        assert_eq!("2".parse::<Surge>().ok(), Some(Surge::Count(2)));
        assert_eq!(Surge::Percent(100).target(4), 8);
        assert_eq!(Surge::Percent(25).target(3), 4);
        assert_eq!(Surge::Percent(10).target(1), 2);
        assert_eq!(Surge::Count(2).target(3), 5);
        let err = "0%".parse::<Surge>().unwrap_err().to_string();
        assert!(err.contains("surge") && err.contains("100%"), "{err}");
        assert!("lots".parse::<Surge>().is_err());
        // A count that would wrap as an i32 is refused, and never lowers a target.
        let err = "4294967295".parse::<Surge>().unwrap_err().to_string();
        assert!(err.contains("above 1000"), "{err}");
        assert!(Params::new("a", "b", Surge::Count(u32::MAX)).validate().is_err());
        assert_eq!(Surge::Count(u32::MAX).target(3), i32::MAX);
    }

    #[tokio::test]
    async fn surges_records_originals_and_goes_through_the_hpa() {
        let fake = cluster();
        let out = run(
            &fake,
            &Params::new("ng-old", "ng-new", Surge::Percent(100)),
            &NoProgress,
        )
        .await
        .expect("surge");
        let names: Vec<_> = out
            .deployments
            .iter()
            .map(|s| (s.deployment.as_str(), s.original, s.target))
            .collect();
        assert_eq!(
            names,
            vec![
                ("kube-system/coredns", 2, 4),
                ("shop/api", 3, 6),
                ("shop/web", 4, 8)
            ]
        );
        let st = fake.state();
        let web = &st.deployments["shop/web"];
        assert_eq!(model::deployment_replicas(web), 8);
        assert_eq!(
            model::annotation(&web.metadata, model::ORIGINAL_REPLICAS_ANNOTATION),
            Some("4")
        );
        let hpa = &st.hpas["shop/api"];
        let spec = hpa.spec.as_ref().expect("spec");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(6), 6));
        assert_eq!(
            model::annotation(&hpa.metadata, model::ORIGINAL_MIN_REPLICAS_ANNOTATION),
            Some("3")
        );
        assert_eq!(
            model::annotation(&hpa.metadata, model::ORIGINAL_MAX_REPLICAS_ANNOTATION),
            Some("4")
        );
        assert_eq!(model::deployment_replicas(&st.deployments["shop/api"]), 6);
        // New pods landed on the new nodes only (old ones are tainted).
        let new_pods = st
            .pods
            .values()
            .filter(|p| model::pod_node(p).is_some_and(|n| n.starts_with("new-")))
            .count();
        assert_eq!(new_pods, 4 + 3 + 2);
        assert_eq!(
            st.events
                .iter()
                .filter(|e| e.reason == "FlotillaSurgeScaled")
                .count(),
            3
        );
    }

    #[tokio::test]
    async fn a_rerun_keeps_the_recorded_originals() {
        let fake = cluster();
        let p = Params::new("ng-old", "ng-new", Surge::Percent(100));
        run(&fake, &p, &NoProgress).await.expect("surge");
        let again = run(&fake, &p, &NoProgress).await.expect("surge again");
        assert!(again.deployments.iter().all(|s| !s.changed));
        assert_eq!(
            model::deployment_replicas(&fake.state().deployments["shop/web"]),
            8
        );
        assert_eq!(
            again
                .deployments
                .iter()
                .find(|s| s.deployment == "shop/web")
                .map(|s| s.original),
            Some(4)
        );
    }

    #[tokio::test]
    async fn killed_at_every_write_then_rerun_ends_the_same() {
        let reference = cluster();
        let p = Params::new("ng-old", "ng-new", Surge::Percent(100));
        run(&reference, &p, &NoProgress).await.expect("surge");
        let want_writes = reference.state().writes;
        for kill_after in 0..want_writes {
            let fake = cluster();
            fake.state().hang_after_writes = Some(kill_after);
            let killed =
                tokio::time::timeout(std::time::Duration::from_millis(50), run(&fake, &p, &NoProgress)).await;
            assert!(killed.is_err(), "run should hang at write {kill_after}");
            fake.state().hang_after_writes = None;
            let out = run(&fake, &p, &NoProgress).await.expect("rerun");
            let got: Vec<_> = out
                .deployments
                .iter()
                .map(|s| (s.deployment.clone(), s.original, s.target))
                .collect();
            let st = fake.state();
            let rst = reference.state();
            assert_eq!(got.len(), 3, "after kill at {kill_after}");
            for (k, d) in &st.deployments {
                assert_eq!(
                    d.metadata.annotations, rst.deployments[k].metadata.annotations,
                    "{k} after kill at {kill_after}"
                );
                assert_eq!(
                    model::deployment_replicas(d),
                    model::deployment_replicas(&rst.deployments[k]),
                    "{k}"
                );
            }
            assert_eq!(st.hpas["shop/api"].spec, rst.hpas["shop/api"].spec);
            assert_eq!(
                st.hpas["shop/api"].metadata.annotations,
                rst.hpas["shop/api"].metadata.annotations
            );
        }
    }

    #[tokio::test]
    async fn a_surge_that_does_not_fit_changes_nothing() {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 4000, 20);
        fake.add_deployment("shop", "web", 4, 500);
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 1000, 20);
        let err = run(
            &fake,
            &Params::new("ng-old", "ng-new", Surge::Percent(100)),
            &NoProgress,
        )
        .await
        .unwrap_err();
        match &err {
            StepError::InsufficientCapacity { unplaced, needed, .. } => {
                assert_eq!(
                    unplaced,
                    &vec![
                        "shop/web (2 pod(s)): each pod requests cpu 500m, memory 0Mi, 1 pods; \
                         the 1 node(s) of ng-new it may use have cpu 0m, memory 65536Mi, 18 pods left"
                            .to_string()
                    ]
                );
                assert_eq!(needed.cpu_millis, 2000);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(fake.state().writes, 0, "nothing written");
    }

    /// Sets what a Deployment's pods ask of their node.
    fn constrain(
        fake: &FakeCluster,
        key: &str,
        change: impl FnOnce(&mut k8s_openapi::api::core::v1::PodSpec),
    ) {
        let mut st = fake.state();
        let d = st.deployments.get_mut(key).expect("deployment");
        let spec = d
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .expect("template");
        change(spec);
    }

    fn set_node(fake: &FakeCluster, node: &str, label: (&str, &str), taint: Option<(&str, &str)>) {
        let mut st = fake.state();
        let n = st.nodes.get_mut(node).expect("node");
        n.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(label.0.into(), label.1.into());
        if let Some((k, v)) = taint {
            n.spec
                .get_or_insert_with(Default::default)
                .taints
                .get_or_insert_with(Vec::new)
                .push(k8s_openapi::api::core::v1::Taint {
                    key: k.into(),
                    value: Some(v.into()),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                });
        }
    }

    #[tokio::test]
    async fn the_capacity_check_counts_only_nodes_a_pod_may_use() {
        use k8s_openapi::api::core::v1::{
            Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Toleration,
        };
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 8000, 30);
        fake.add_deployment("shop", "web", 2, 100);
        fake.add_deployment("shop", "api", 2, 100);
        fake.add_deployment("batch", "job", 1, 100);
        crate::cluster::fake::taint_node(&fake, "old-1", model::DEFAULT_TAINT_KEY);
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 8000, 30);
        fake.add_node("new-2", "ng-new", GroupKind::Managed, 8000, 30);
        // new-1 is dedicated to batch work; new-2 has spinning disks.
        set_node(
            &fake,
            "new-1",
            ("kubernetes.io/hostname", "new-1"),
            Some(("dedicated", "batch")),
        );
        set_node(&fake, "new-2", ("disktype", "hdd"), None);
        set_node(&fake, "new-2", ("kubernetes.io/hostname", "new-2"), None);
        // web wants SSDs, which no new node has; job tolerates the batch taint and must run on
        // new-1 (required affinity on the hostname label); api goes anywhere it is let.
        constrain(&fake, "shop/web", |s| {
            s.node_selector = Some([("disktype".to_string(), "ssd".to_string())].into());
        });
        constrain(&fake, "batch/job", |s| {
            s.tolerations = Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("batch".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]);
            s.affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "kubernetes.io/hostname".into(),
                                operator: "In".into(),
                                values: Some(vec!["new-1".into()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        });
        let p = Params::new("ng-old", "ng-new", Surge::Percent(100));
        let err = run(&fake, &p, &NoProgress).await.unwrap_err();
        let StepError::InsufficientCapacity { unplaced, group, .. } = &err else {
            panic!("unexpected {err:?}")
        };
        assert_eq!(group, "ng-new");
        assert_eq!(
            unplaced,
            &vec![
                "shop/web (2 pod(s)): no node of ng-new admits its pods (1 node(s): nodeSelector disktype=ssd \
                 not matched; 1 node(s): taint dedicated=batch:NoSchedule not tolerated)"
                    .to_string()
            ],
            "only web is named; job and api fit"
        );
        assert_eq!(fake.state().writes, 0, "nothing written before the check");

        // With a selector the new group matches, everything fits and lands where it may.
        constrain(&fake, "shop/web", |s| {
            s.node_selector = Some([("disktype".to_string(), "hdd".to_string())].into());
        });
        run(&fake, &p, &NoProgress).await.expect("surge");
        let st = fake.state();
        let on = |prefix: &str, node: &str| {
            st.pods
                .values()
                .filter(|x| model::key(&x.metadata).starts_with(prefix) && model::pod_node(x) == Some(node))
                .count()
        };
        assert_eq!((on("shop/web-", "new-2"), on("shop/web-", "new-1")), (2, 0));
        assert_eq!((on("batch/job-", "new-1"), on("batch/job-", "new-2")), (1, 0));
        assert_eq!(
            on("shop/api-", "new-1"),
            0,
            "api does not tolerate the batch taint"
        );
    }

    #[tokio::test]
    async fn a_pod_that_fits_only_where_room_has_run_out_is_named_with_what_is_left() {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 8000, 30);
        fake.add_deployment("shop", "web", 2, 600);
        fake.add_deployment("batch", "job", 2, 600);
        crate::cluster::fake::taint_node(&fake, "old-1", model::DEFAULT_TAINT_KEY);
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 1000, 30);
        fake.add_node("new-2", "ng-new", GroupKind::Managed, 4000, 30);
        set_node(&fake, "new-2", ("pool", "batch"), Some(("dedicated", "batch")));
        // web may use only new-1 (1000m: one of its two new pods); job tolerates the taint and
        // has new-2 to itself. First fit places the most constrained first, so job's pods do not
        // take new-1's room.
        constrain(&fake, "batch/job", |s| {
            s.tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]);
        });
        let err = run(
            &fake,
            &Params::new("ng-old", "ng-new", Surge::Percent(100)),
            &NoProgress,
        )
        .await
        .unwrap_err();
        let StepError::InsufficientCapacity { unplaced, .. } = &err else {
            panic!("unexpected {err:?}")
        };
        assert_eq!(
            unplaced,
            &vec![
                "shop/web (1 pod(s)): each pod requests cpu 600m, memory 0Mi, 1 pods; the 1 node(s) of \
                 ng-new it may use have cpu 400m, memory 65536Mi, 29 pods left"
                    .to_string()
            ]
        );
        assert!(err.to_string().contains("cannot fit the surge"), "{err}");
        assert_eq!(fake.state().writes, 0);
    }
}
