//! Defaulting as the API server applies it on create (the `SetDefaults_*` functions); pods also go
//! through admission ([`crate::scenario::admit_pod`]: default tolerations, service account, QoS).

use k8s_openapi::api::apps::v1::{
    DaemonSetUpdateStrategy, DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::object::Object;

/// Fills the defaults the API server sets on create.
pub fn apply(obj: &mut Object) {
    match obj {
        Object::Pod(p) => {
            // Pods start Pending whatever the request said; admission fills the rest.
            p.status = None;
            crate::scenario::admit_pod(p);
        }
        Object::Deployment(d) => {
            if let Some(spec) = d.spec.as_mut() {
                spec.replicas.get_or_insert(1);
                spec.revision_history_limit.get_or_insert(10);
                spec.progress_deadline_seconds.get_or_insert(600);
                let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
                let ty = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
                if ty == "RollingUpdate" {
                    let ru = strategy
                        .rolling_update
                        .get_or_insert_with(RollingUpdateDeployment::default);
                    ru.max_surge.get_or_insert(IntOrString::String("25%".into()));
                    ru.max_unavailable
                        .get_or_insert(IntOrString::String("25%".into()));
                }
                if let Some(ps) = spec.template.spec.as_mut() {
                    pod_spec(ps);
                }
            }
        }
        Object::ReplicaSet(r) => {
            if let Some(spec) = r.spec.as_mut() {
                spec.replicas.get_or_insert(1);
                if let Some(ps) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
                    pod_spec(ps);
                }
            }
        }
        Object::DaemonSet(ds) => {
            if let Some(spec) = ds.spec.as_mut() {
                spec.revision_history_limit.get_or_insert(10);
                let us = spec
                    .update_strategy
                    .get_or_insert_with(DaemonSetUpdateStrategy::default);
                let ty = us.type_.get_or_insert_with(|| "RollingUpdate".into());
                if ty == "RollingUpdate" {
                    let ru = us
                        .rolling_update
                        .get_or_insert_with(RollingUpdateDaemonSet::default);
                    ru.max_unavailable.get_or_insert(IntOrString::Int(1));
                    ru.max_surge.get_or_insert(IntOrString::Int(0));
                }
                if let Some(ps) = spec.template.spec.as_mut() {
                    pod_spec(ps);
                }
            }
        }
        Object::Namespace(n) => {
            let spec = n.spec.get_or_insert_with(Default::default);
            spec.finalizers.get_or_insert_with(|| vec!["kubernetes".into()]);
            let st = n.status.get_or_insert_with(Default::default);
            st.phase.get_or_insert_with(|| "Active".into());
        }
        _ => {}
    }
}

/// Pod spec defaults (also applied to pod templates).
pub fn pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy.get_or_insert_with(|| "File".into());
        let latest = c.image.as_deref().is_none_or(|i| {
            let last = i.rsplit('/').next().unwrap_or(i);
            !last.contains(':') || last.ends_with(":latest")
        });
        c.image_pull_policy.get_or_insert_with(|| {
            if latest {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
    }
}
