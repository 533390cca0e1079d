//! `RestoreScale`: every Deployment (and HPA) carrying Flotilla's annotations goes back to the
//! recorded replicas (and minReplicas/maxReplicas). A Deployment covered by a
//! PodDisruptionBudget comes down in steps no larger than the budget's `disruptionsAllowed`, each
//! once the budget has seen the previous one, so the scale-in never takes it below what it
//! promises. The annotations go in the last write, so a re-run finds nothing left to do.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;
use tokio::time::Instant;

use super::{Progress, ProgressSink, StepError, StepKind};
use crate::cluster::{Cluster, DeploymentPatch, HpaPatch, ObjectRef};
use crate::model::{self, Owners};
use crate::{events, inventory};

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Leave surged the Deployments that still have pods on this group's nodes (after a drain
    /// that skipped nodes), so draining those later stays safe.
    pub keep_if_pods_on: Option<String>,
    /// How long one Deployment may wait for its budget to allow the next step down; past it,
    /// the rest comes down at once (scale-in is not bound by budgets) and the output says so.
    pub step_timeout: Duration,
    /// How often to look again.
    pub poll: Duration,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            keep_if_pods_on: None,
            step_timeout: Duration::from_secs(120),
            poll: Duration::from_millis(200),
        }
    }
}

impl Params {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), StepError> {
        if self.poll.is_zero() {
            return Err(StepError::invalid("poll", "must be above zero, e.g. 200ms"));
        }
        Ok(())
    }
}

/// One Deployment restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    /// `namespace/name`.
    pub deployment: String,
    /// Replicas now (the recorded original, within the HPA's bounds).
    pub replicas: i32,
    /// The HPA restored with it, if any.
    pub hpa: Option<String>,
    /// Scale-in steps taken.
    pub steps: u32,
    /// The budget allowed no step within the step timeout; the rest came down at once.
    pub past_budget: bool,
}

/// What the step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Deployments restored by this run.
    pub deployments: Vec<Restored>,
    /// HPAs restored by this run.
    pub hpas: Vec<String>,
    /// Deployments left surged because pods of theirs are still on the old nodes.
    pub kept: Vec<String>,
}

fn int(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> Option<i32> {
    model::annotation(meta, key).and_then(|v| v.trim().parse().ok())
}

/// The next replica count for a Deployment at `current` going to `original` (pure): `None` to
/// wait (a budget has not seen the last step yet, or allows nothing now).
pub fn next_step(d: &Deployment, current: i32, original: i32, pdbs: &[PodDisruptionBudget]) -> Option<i32> {
    if current <= original {
        return Some(original);
    }
    let ns = model::namespace(&d.metadata);
    let labels = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let mut allowed = current - original;
    for b in pdbs.iter().filter(|b| model::namespace(&b.metadata) == ns) {
        let Some(sel) = b.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        if !model::selector_matches(sel, labels) {
            continue;
        }
        let st = b.status.clone().unwrap_or_default();
        let seen = st
            .observed_generation
            .is_some_and(|g| Some(g) >= b.metadata.generation)
            && st.expected_pods == current;
        if !seen {
            return None;
        }
        allowed = allowed.min(st.disruptions_allowed);
    }
    (allowed > 0).then(|| (current - allowed).max(original))
}

struct Pending<'a> {
    d: &'a Deployment,
    original: i32,
    hpa: Option<String>,
    steps: u32,
    waiting_since: Option<Instant>,
}

/// Restores every recorded HPA and Deployment.
pub async fn run<C: Cluster>(
    cluster: &C,
    p: &Params,
    progress: &dyn ProgressSink,
) -> Result<Output, StepError> {
    let deployments = cluster.deployments().await?;
    let hpas = cluster.hpas().await?;
    let hpa_of = inventory::hpa_targets(&hpas);
    let mut out = Output::default();

    // Deployments that must stay surged: pods still on the group's nodes.
    let mut keep: Vec<String> = Vec::new();
    if let Some(group) = &p.keep_if_pods_on {
        let nodes = cluster.nodes().await?;
        let owners = Owners::new(&cluster.replica_sets().await?);
        for n in nodes.iter().filter(|n| model::in_group(n, group)) {
            for pod in cluster.pods(Some(model::name(&n.metadata))).await? {
                if let Some(d) = owners
                    .deployment_of(&pod)
                    .filter(|_| !model::terminating(&pod.metadata))
                {
                    if !keep.contains(&d) {
                        keep.push(d);
                    }
                }
            }
        }
        keep.sort();
    }

    // HPAs first: a Deployment's annotations go last, so a killed run is picked up again.
    let mut hpa_bounds: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    for h in &hpas {
        let (Some(min), Some(max)) = (
            int(&h.metadata, model::ORIGINAL_MIN_REPLICAS_ANNOTATION),
            int(&h.metadata, model::ORIGINAL_MAX_REPLICAS_ANNOTATION),
        ) else {
            continue;
        };
        let key = model::key(&h.metadata);
        let target = h
            .spec
            .as_ref()
            .map(|s| format!("{}/{}", model::namespace(&h.metadata), s.scale_target_ref.name));
        if target.is_some_and(|t| keep.contains(&t)) {
            continue;
        }
        let mut patch = HpaPatch {
            min_replicas: Some(min),
            max_replicas: Some(max),
            ..Default::default()
        };
        patch
            .annotations
            .insert(model::ORIGINAL_MIN_REPLICAS_ANNOTATION.into(), None);
        patch
            .annotations
            .insert(model::ORIGINAL_MAX_REPLICAS_ANNOTATION.into(), None);
        cluster
            .patch_hpa(model::namespace(&h.metadata), model::name(&h.metadata), &patch)
            .await?;
        tracing::info!(hpa = %key, min, max, "HPA restored");
        hpa_bounds.insert(key.clone(), (min, max));
        out.hpas.push(key);
    }
    for h in &hpas {
        if let Some(s) = h.spec.as_ref() {
            hpa_bounds
                .entry(model::key(&h.metadata))
                .or_insert((s.min_replicas.unwrap_or(1), s.max_replicas));
        }
    }

    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    for d in &deployments {
        let Some(original) = int(&d.metadata, model::ORIGINAL_REPLICAS_ANNOTATION) else {
            continue;
        };
        let key = model::key(&d.metadata);
        if keep.contains(&key) {
            out.kept.push(key);
            continue;
        }
        let hpa = hpa_of.get(&key).cloned();
        // Behind an HPA, stay within its (restored) bounds; the HPA takes it from there.
        let original = match hpa.as_ref().and_then(|h| hpa_bounds.get(h)) {
            Some((min, max)) => original.clamp(*min, (*max).max(*min)),
            None => original,
        };
        pending.insert(
            key,
            Pending {
                d,
                original,
                hpa,
                steps: 0,
                waiting_since: None,
            },
        );
    }
    let total = pending.len() as u64;

    while !pending.is_empty() {
        let current: BTreeMap<String, i32> = cluster
            .deployments()
            .await?
            .iter()
            .map(|d| (model::key(&d.metadata), model::deployment_replicas(d)))
            .collect();
        let pdbs = cluster.pdbs().await?;
        let now = Instant::now();
        let mut finished = Vec::new();
        for (key, pd) in pending.iter_mut() {
            let (ns, name) = (model::namespace(&pd.d.metadata), model::name(&pd.d.metadata));
            let Some(&cur) = current.get(key) else {
                finished.push((key.clone(), None));
                continue;
            };
            let mut past_budget = false;
            let next = match next_step(pd.d, cur, pd.original, &pdbs) {
                Some(n) => Some(n),
                None => {
                    let since = *pd.waiting_since.get_or_insert(now);
                    if now.duration_since(since) >= p.step_timeout {
                        past_budget = true;
                        Some(pd.original)
                    } else {
                        None
                    }
                }
            };
            let Some(next) = next else { continue };
            pd.waiting_since = None;
            let last = next == pd.original;
            let mut patch = DeploymentPatch {
                replicas: Some(next),
                ..Default::default()
            };
            if last {
                patch
                    .annotations
                    .insert(model::ORIGINAL_REPLICAS_ANNOTATION.into(), None);
                patch
                    .annotations
                    .insert(model::SURGE_REPLICAS_ANNOTATION.into(), None);
            }
            cluster.patch_deployment(ns, name, &patch).await?;
            if cur != next {
                pd.steps += 1;
            }
            tracing::debug!(deployment = %key, from = cur, to = next, "scaled in");
            if last {
                if past_budget {
                    let msg = format!("Flotilla migration: PodDisruptionBudget allowed no scale-in step for {}; replicas set to {next} at once", super::format_duration(p.step_timeout));
                    events::warning(cluster, ObjectRef::deployment(pd.d), "FlotillaScaleRestored", msg).await;
                } else {
                    let msg = format!(
                        "Flotilla migration: replicas restored to {next} (in {} step(s))",
                        pd.steps
                    );
                    events::normal(cluster, ObjectRef::deployment(pd.d), "FlotillaScaleRestored", msg).await;
                }
                tracing::info!(deployment = %key, replicas = next, steps = pd.steps, "scale restored");
                finished.push((
                    key.clone(),
                    Some(Restored {
                        deployment: key.clone(),
                        replicas: next,
                        hpa: pd.hpa.clone(),
                        steps: pd.steps,
                        past_budget,
                    }),
                ));
            }
        }
        for (key, restored) in finished {
            pending.remove(&key);
            out.deployments.extend(restored);
        }
        let done = total - pending.len() as u64;
        progress.report(Progress::new(
            StepKind::RestoreScale,
            done,
            total,
            format!("{done} of {total} Deployments restored"),
        ));
        if !pending.is_empty() {
            tokio::time::sleep(p.poll).await;
        }
    }
    if total == 0 {
        progress.report(Progress::new(StepKind::RestoreScale, 0, 0, "nothing to restore"));
    }
    out.deployments.sort_by(|a, b| a.deployment.cmp(&b.deployment));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeCluster;
    use crate::model::GroupKind;
    use crate::steps::{surge_scale, NoProgress};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn cluster() -> FakeCluster {
        let fake = FakeCluster::new();
        fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 8000, 30);
        fake.add_deployment("shop", "web", 3, 100);
        fake.add_deployment("shop", "api", 2, 100);
        fake.add_hpa("shop", "api", 2, 3);
        fake.add_pdb("shop", "web", "web", None, Some(IntOrString::Int(1)));
        fake.add_node("new-1", "ng-new", GroupKind::Managed, 8000, 30);
        fake
    }

    fn surge() -> surge_scale::Params {
        surge_scale::Params::new("ng-old", "ng-new", Default::default())
    }

    #[tokio::test(start_paused = true)]
    async fn restores_replicas_and_hpa_bounds_and_clears_annotations() {
        let fake = cluster();
        surge_scale::run(&fake, &surge(), &NoProgress)
            .await
            .expect("surge");
        assert_eq!(
            model::deployment_replicas(&fake.state().deployments["shop/api"]),
            4
        );
        let out = run(&fake, &Params::default(), &NoProgress)
            .await
            .expect("restore");
        assert_eq!(out.deployments.len(), 2);
        assert_eq!(out.hpas, vec!["shop/api".to_string()]);
        // web (6 -> 3) under maxUnavailable 1 comes down one pod at a time.
        let web = out
            .deployments
            .iter()
            .find(|r| r.deployment == "shop/web")
            .expect("web");
        assert_eq!((web.replicas, web.steps, web.past_budget), (3, 3, false));
        {
            let st = fake.state();
            assert_eq!(model::deployment_replicas(&st.deployments["shop/web"]), 3);
            assert_eq!(model::deployment_replicas(&st.deployments["shop/api"]), 2);
            let spec = st.hpas["shop/api"].spec.clone().expect("spec");
            assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 3));
            for d in st.deployments.values() {
                assert!(model::annotation(&d.metadata, model::ORIGINAL_REPLICAS_ANNOTATION).is_none());
                assert!(model::annotation(&d.metadata, model::SURGE_REPLICAS_ANNOTATION).is_none());
            }
            assert!(model::annotation(
                &st.hpas["shop/api"].metadata,
                model::ORIGINAL_MIN_REPLICAS_ANNOTATION
            )
            .is_none());
        }
        let again = run(&fake, &Params::default(), &NoProgress)
            .await
            .expect("restore again");
        assert!(again.deployments.is_empty() && again.hpas.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_that_never_allows_is_waited_for_then_passed_loudly() {
        let fake = cluster();
        fake.add_pdb("shop", "api", "api", None, Some(IntOrString::Int(0)));
        surge_scale::run(&fake, &surge(), &NoProgress)
            .await
            .expect("surge");
        let p = Params {
            step_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let out = run(&fake, &p, &NoProgress).await.expect("restore");
        let api = out
            .deployments
            .iter()
            .find(|r| r.deployment == "shop/api")
            .expect("api");
        assert!(api.past_budget);
        assert_eq!(
            model::deployment_replicas(&fake.state().deployments["shop/api"]),
            2
        );
        assert!(fake
            .state()
            .events
            .iter()
            .any(|e| e.reason == "FlotillaScaleRestored" && e.type_ == crate::cluster::EventType::Warning));
    }

    #[tokio::test(start_paused = true)]
    async fn deployments_with_pods_left_on_old_nodes_stay_surged() {
        let fake = cluster();
        crate::cluster::fake::taint_node(&fake, "old-1", model::DEFAULT_TAINT_KEY);
        surge_scale::run(&fake, &surge(), &NoProgress)
            .await
            .expect("surge");
        let p = Params {
            keep_if_pods_on: Some("ng-old".into()),
            ..Default::default()
        };
        let out = run(&fake, &p, &NoProgress).await.expect("restore");
        assert_eq!(out.kept, vec!["shop/api".to_string(), "shop/web".to_string()]);
        assert!(out.deployments.is_empty() && out.hpas.is_empty());
        assert_eq!(
            model::deployment_replicas(&fake.state().deployments["shop/web"]),
            6
        );
    }

    #[tokio::test(start_paused = true)]
    async fn killed_at_every_write_then_rerun_restores_the_same() {
        let reference = cluster();
        surge_scale::run(&reference, &surge(), &NoProgress)
            .await
            .expect("surge");
        let base = reference.state().writes;
        run(&reference, &Params::default(), &NoProgress)
            .await
            .expect("restore");
        let writes = reference.state().writes - base;
        for kill_after in 0..writes {
            let fake = cluster();
            surge_scale::run(&fake, &surge(), &NoProgress)
                .await
                .expect("surge");
            let base = fake.state().writes;
            fake.state().hang_after_writes = Some(base + kill_after);
            let killed = tokio::time::timeout(
                Duration::from_secs(30),
                run(&fake, &Params::default(), &NoProgress),
            )
            .await;
            assert!(killed.is_err());
            fake.state().hang_after_writes = None;
            run(&fake, &Params::default(), &NoProgress).await.expect("rerun");
            let (st, rst) = (fake.state(), reference.state());
            for (k, d) in &st.deployments {
                assert_eq!(
                    d.spec.as_ref().and_then(|s| s.replicas),
                    rst.deployments[k].spec.as_ref().and_then(|s| s.replicas),
                    "{k}"
                );
                assert_eq!(
                    model::annotation(&d.metadata, model::ORIGINAL_REPLICAS_ANNOTATION),
                    None
                );
            }
            assert_eq!(st.hpas["shop/api"].spec, rst.hpas["shop/api"].spec);
        }
    }
}
