//! The HorizontalPodAutoscaler controller (`pkg/controller/podautoscaler`, autoscaling/v2) in a
//! cluster without a metrics server: every metric fails to fetch, so, as the real controller
//! does then, it only enforces `minReplicas`/`maxReplicas` on the target's scale (a Deployment's
//! or ReplicaSet's `spec.replicas`) and reports why it cannot compute a replica count.

use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec,
    MetricStatus,
};
use k8s_openapi::jiff::Timestamp;

use super::replicaset::{emit, non_zero, update_spec};
use super::{update_if_changed, Ctx, Next};
use crate::api;
use crate::object::Object;
use crate::resources::Kind;
use crate::store::Store;

const COMPONENT: &str = "horizontal-pod-autoscaler";

/// Reconciles every HorizontalPodAutoscaler once. Nothing here changes with time alone (there
/// are no metrics), so it never asks to run again.
pub fn reconcile(store: &mut Store, ctx: &Ctx) -> Next {
    let hpas: Vec<Arc<Object>> = store
        .list(Kind::HorizontalPodAutoscaler, None)
        .map(|e| e.obj.clone())
        .collect();
    for obj in &hpas {
        if let Object::HorizontalPodAutoscaler(hpa) = obj.as_ref() {
            sync_hpa(store, ctx.now, hpa);
        }
    }
    Next::default()
}

/// `setConditionInList`: the transition time moves only when the status does.
fn set_condition(
    status: &mut HorizontalPodAutoscalerStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let i = match conds.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conds.push(HorizontalPodAutoscalerCondition {
                type_: type_.to_string(),
                ..Default::default()
            });
            conds.len() - 1
        }
    };
    let c = &mut conds[i];
    if c.status != value {
        c.last_transition_time = Some(api::time(now));
    }
    c.status = value.to_string();
    c.reason = Some(reason.to_string());
    c.message = Some(message);
}

/// The target's `(kind, spec.replicas, selector as a string)`, or the error the scale client
/// would report.
fn get_scale(
    store: &Store,
    ns: &str,
    api_version: Option<&str>,
    kind: &str,
    name: &str,
) -> Result<(Kind, i32, String), String> {
    let group = api_version.unwrap_or("").rsplit_once('/').map_or("", |(g, _)| g);
    let k = match (group, kind) {
        ("apps", "Deployment") => Kind::Deployment,
        ("apps", "ReplicaSet") => Kind::ReplicaSet,
        _ => return Err(format!("no matches for kind \"{kind}\" in group \"{group}\"")),
    };
    let obj = store
        .get_obj(k, ns, name)
        .ok_or_else(|| format!("{} \"{name}\" not found", k.info().qualified()))?;
    let (replicas, selector) = match obj.as_ref() {
        Object::Deployment(d) => (
            d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            d.spec.as_ref().map(|s| &s.selector),
        ),
        Object::ReplicaSet(r) => (
            r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            r.spec.as_ref().map(|s| &s.selector),
        ),
        _ => return Err(format!("{} \"{name}\" not found", k.info().qualified())),
    };
    let mut terms: Vec<String> = selector
        .and_then(|s| s.match_labels.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector
        .and_then(|s| s.match_expressions.as_ref())
        .into_iter()
        .flatten()
    {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    Ok((k, replicas, terms.join(",")))
}

/// Why fetching a metric fails without metrics APIs: `(condition reason, inner error, error as
/// computeReplicasForMetric wraps it)`.
fn metric_failure(spec: &MetricSpec, ns: &str) -> (&'static str, String, String) {
    const NOT_FOUND: &str = "the server could not find the requested resource";
    match spec.type_.as_str() {
        "Resource" => {
            let (name, usage) = match &spec.resource {
                Some(r) => (r.name.clone(), r.target.average_value.is_some()),
                None => ("cpu".to_string(), false),
            };
            let inner = format!(
                "failed to get {name} {}: unable to get metrics for resource {name}: unable to fetch metrics from resource metrics API: {NOT_FOUND} (get pods.metrics.k8s.io)",
                if usage { "usage" } else { "utilization" }
            );
            let outer = format!("failed to get {name} resource metric value: {inner}");
            ("FailedGetResourceMetric", inner, outer)
        }
        "ContainerResource" => {
            let name = spec
                .container_resource
                .as_ref()
                .map_or("cpu".to_string(), |r| r.name.clone());
            let inner = format!(
                "failed to get {name} utilization: unable to get metrics for resource {name}: unable to fetch metrics from resource metrics API: {NOT_FOUND} (get pods.metrics.k8s.io)"
            );
            let outer = format!("failed to get {name} container metric value: {inner}");
            ("FailedGetContainerResourceMetric", inner, outer)
        }
        "Pods" => {
            let name = spec
                .pods
                .as_ref()
                .map_or(String::new(), |p| p.metric.name.clone());
            let inner = format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: {NOT_FOUND} (get pods.custom.metrics.k8s.io *)");
            let outer = format!("failed to get pods metric value: {inner}");
            ("FailedGetPodsMetric", inner, outer)
        }
        "Object" => {
            let (name, kind, obj) =
                spec.object
                    .as_ref()
                    .map_or((String::new(), String::new(), String::new()), |o| {
                        (
                            o.metric.name.clone(),
                            o.described_object.kind.clone(),
                            o.described_object.name.clone(),
                        )
                    });
            let inner = format!("unable to get metric {name}: {kind} on {ns} {obj}/unable to fetch metrics from custom metrics API: {NOT_FOUND}");
            let outer = format!("failed to get object metric value: {inner}");
            ("FailedGetObjectMetric", inner, outer)
        }
        "External" => {
            let name = spec
                .external
                .as_ref()
                .map_or(String::new(), |e| e.metric.name.clone());
            let inner = format!("unable to get external metric {ns}/{name}/nil: unable to fetch metrics from external metrics API: {NOT_FOUND} (get {name}.external.metrics.k8s.io)");
            let outer = format!("failed to get {name} external metric value: {inner}");
            ("FailedGetExternalMetric", inner, outer)
        }
        other => {
            let inner = format!("unknown metric source type \"{other}\"");
            ("InvalidMetricSourceType", inner.clone(), inner)
        }
    }
}

/// The default metric when none is listed: 80% average CPU utilisation.
fn default_metrics() -> Vec<MetricSpec> {
    use k8s_openapi::api::autoscaling::v2::{MetricTarget, ResourceMetricSource};
    vec![MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(80),
                ..Default::default()
            },
        }),
        ..Default::default()
    }]
}

/// `reconcileAutoscaler` with failing metrics.
fn sync_hpa(store: &mut Store, now: Timestamp, hpa: &HorizontalPodAutoscaler) {
    let Some(spec) = hpa.spec.as_ref() else { return };
    let ns = hpa.metadata.namespace.as_deref().unwrap_or("");
    let mut status = hpa.status.clone().unwrap_or_default();
    let mut events: Vec<(&str, &str, String)> = Vec::new();
    let target = &spec.scale_target_ref;
    let scale = get_scale(
        store,
        ns,
        target.api_version.as_deref(),
        &target.kind,
        &target.name,
    );
    let (kind, current, selector) = match scale {
        Ok(s) => s,
        Err(e) => {
            set_condition(
                &mut status,
                "AbleToScale",
                "False",
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {e}"),
                now,
            );
            events.push(("Warning", "FailedGetScale", e));
            write(store, now, hpa, status, &events, false);
            return;
        }
    };
    set_condition(
        &mut status,
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
        now,
    );
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let (desired, reason) = if current == 0 && min != 0 {
        set_condition(
            &mut status,
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
            now,
        );
        (None, "")
    } else if current > max {
        (Some(max), "Current number of replicas above Spec.MaxReplicas")
    } else if current < min {
        (Some(min), "Current number of replicas below Spec.MinReplicas")
    } else {
        // computeReplicasForMetrics: every metric fails.
        if selector.is_empty() {
            events.push(("Warning", "SelectorRequired", "selector is required".into()));
            set_condition(
                &mut status,
                "ScalingActive",
                "False",
                "InvalidSelector",
                "the HPA target's scale is missing a selector".into(),
                now,
            );
        } else {
            let metrics = match spec.metrics.as_deref() {
                Some(m) if !m.is_empty() => m.to_vec(),
                _ => default_metrics(),
            };
            let failures: Vec<_> = metrics.iter().map(|m| metric_failure(m, ns)).collect();
            for (reason, inner, _) in &failures {
                events.push(("Warning", reason, inner.clone()));
            }
            if let Some((reason, inner, outer)) = failures.first() {
                set_condition(
                    &mut status,
                    "ScalingActive",
                    "False",
                    reason,
                    format!("the HPA was unable to compute the replica count: {inner}"),
                    now,
                );
                events.push((
                    "Warning",
                    "FailedComputeMetricsReplicas",
                    format!(
                        "invalid metrics ({} invalid out of {}), first error is: {outer}",
                        failures.len(),
                        failures.len()
                    ),
                ));
            }
            status.current_metrics = Some(vec![MetricStatus::default(); metrics.len()]);
        }
        status.current_replicas = non_zero(current);
        write(store, now, hpa, status, &events, false);
        return;
    };
    let mut rescaled = false;
    if let Some(desired) = desired {
        if let Some(mut obj) = store.get_obj(kind, ns, &target.name).map(|o| (*o).clone()) {
            match &mut obj {
                Object::Deployment(d) => d.spec.get_or_insert_with(Default::default).replicas = Some(desired),
                Object::ReplicaSet(r) => r.spec.get_or_insert_with(Default::default).replicas = Some(desired),
                _ => {}
            }
            update_spec(store, obj);
            set_condition(
                &mut status,
                "AbleToScale",
                "True",
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
                now,
            );
            events.push((
                "Normal",
                "SuccessfulRescale",
                format!("New size: {desired}; reason: {reason}"),
            ));
            rescaled = true;
        }
    }
    status.current_replicas = non_zero(current);
    status.desired_replicas = if rescaled {
        desired.unwrap_or(current)
    } else {
        current
    };
    status.current_metrics = None;
    if rescaled {
        status.last_scale_time = Some(api::time(now));
    }
    write(store, now, hpa, status, &events, rescaled);
}

/// Writes the status if it changed; records the events only then (or on a rescale), so an idle
/// cluster writes nothing.
fn write(
    store: &mut Store,
    now: Timestamp,
    hpa: &HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
    events: &[(&str, &str, String)],
    force_events: bool,
) {
    let changed = hpa.status.as_ref() != Some(&status);
    if changed {
        let mut next = hpa.clone();
        next.status = Some(status);
        update_if_changed(store, Object::HorizontalPodAutoscaler(next));
    }
    if changed || force_events {
        let obj = Object::HorizontalPodAutoscaler(hpa.clone());
        for (type_, reason, message) in events {
            emit(store, now, &obj, type_, reason, message, COMPONENT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset::tests::{at, insert, selector, store, t0, template, with_ctx};
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::autoscaling::v2::{CrossVersionObjectReference, HorizontalPodAutoscalerSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(s: &mut Store, replicas: i32) {
        let d = Object::Deployment(Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: selector(&[("app", "web")]),
                template: template(&[("app", "web")], "nginx:1"),
                ..Default::default()
            }),
            status: None,
        });
        insert(s, t0(), d);
    }

    fn hpa(s: &mut Store, target: &str, min: i32, max: i32) {
        let h = Object::HorizontalPodAutoscaler(HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: target.into(),
                },
                min_replicas: Some(min),
                max_replicas: max,
                metrics: None,
                behavior: None,
            }),
            status: None,
        });
        insert(s, t0(), h);
    }

    fn replicas(s: &Store) -> (Option<i32>, Option<i64>) {
        match s.get_obj(Kind::Deployment, "default", "web").as_deref() {
            Some(Object::Deployment(d)) => (d.spec.as_ref().and_then(|s| s.replicas), d.metadata.generation),
            _ => (None, None),
        }
    }

    fn status(s: &Store) -> HorizontalPodAutoscalerStatus {
        match s
            .get_obj(Kind::HorizontalPodAutoscaler, "default", "web")
            .as_deref()
        {
            Some(Object::HorizontalPodAutoscaler(h)) => h.status.clone().unwrap_or_default(),
            _ => panic!("no hpa"),
        }
    }

    fn cond(st: &HorizontalPodAutoscalerStatus, type_: &str) -> (String, String, String) {
        let c = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .cloned()
            .unwrap_or_else(|| panic!("no {type_}"));
        (
            c.status,
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default(),
        )
    }

    fn events(s: &Store, reason: &str) -> Vec<String> {
        s.list(Kind::Event, None)
            .filter_map(|e| match e.obj.as_ref() {
                Object::Event(ev) if ev.reason.as_deref() == Some(reason) => ev.message.clone(),
                _ => None,
            })
            .collect()
    }

    fn pass(s: &mut Store, secs: i64) {
        with_ctx(at(secs), |ctx| reconcile(s, ctx));
    }

    #[test]
    fn raises_replicas_below_min() {
        let mut s = store();
        deployment(&mut s, 2);
        hpa(&mut s, "web", 6, 10);
        pass(&mut s, 1);
        assert_eq!(
            replicas(&s),
            (Some(6), Some(2)),
            "scaled through spec.replicas, generation bumped"
        );
        let st = status(&s);
        assert_eq!((st.current_replicas, st.desired_replicas), (Some(2), 6));
        assert_eq!(st.last_scale_time.as_ref().map(|t| t.0), Some(api::time(at(1)).0));
        assert_eq!(cond(&st, "AbleToScale").1, "SucceededRescale");
        assert_eq!(
            events(&s, "SuccessfulRescale"),
            ["New size: 6; reason: Current number of replicas below Spec.MinReplicas"]
        );

        // Within range now: metrics cannot be fetched.
        pass(&mut s, 2);
        let st = status(&s);
        assert_eq!((st.current_replicas, st.desired_replicas), (Some(6), 6));
        assert_eq!(cond(&st, "AbleToScale").0, "True");
        let (active, reason, message) = cond(&st, "ScalingActive");
        assert_eq!(
            (active.as_str(), reason.as_str()),
            ("False", "FailedGetResourceMetric")
        );
        assert!(
            message.starts_with(
                "the HPA was unable to compute the replica count: failed to get cpu utilization"
            ),
            "{message}"
        );
        assert_eq!(st.current_metrics.as_ref().map(Vec::len), Some(1));
        assert_eq!(replicas(&s).0, Some(6));
        assert_eq!(events(&s, "FailedComputeMetricsReplicas").len(), 1);
        let metric = events(&s, "FailedGetResourceMetric");
        assert_eq!(metric.len(), 1);
        assert!(metric[0].ends_with("(get pods.metrics.k8s.io)"), "{metric:?}");

        let rv = s.rv();
        pass(&mut s, 30);
        assert_eq!(s.rv(), rv, "idle pass writes nothing");
    }

    #[test]
    fn caps_replicas_above_max() {
        let mut s = store();
        deployment(&mut s, 12);
        hpa(&mut s, "web", 1, 5);
        pass(&mut s, 1);
        assert_eq!(replicas(&s).0, Some(5));
        assert_eq!(
            events(&s, "SuccessfulRescale"),
            ["New size: 5; reason: Current number of replicas above Spec.MaxReplicas"]
        );
        assert_eq!(status(&s).desired_replicas, 5);
    }

    #[test]
    fn zero_replicas_disables_scaling() {
        let mut s = store();
        deployment(&mut s, 0);
        hpa(&mut s, "web", 2, 5);
        pass(&mut s, 1);
        assert_eq!(replicas(&s).0, Some(0));
        let st = status(&s);
        assert_eq!(cond(&st, "ScalingActive").1, "ScalingDisabled");
        assert_eq!(
            (st.current_replicas, st.desired_replicas, st.last_scale_time),
            (None, 0, None)
        );
    }

    #[test]
    fn missing_target_fails_get_scale() {
        let mut s = store();
        hpa(&mut s, "nope", 1, 5);
        pass(&mut s, 1);
        let (able, reason, message) = cond(&status(&s), "AbleToScale");
        assert_eq!((able.as_str(), reason.as_str()), ("False", "FailedGetScale"));
        assert_eq!(message, "the HPA controller was unable to get the target's current scale: deployments.apps \"nope\" not found");
        assert_eq!(
            events(&s, "FailedGetScale"),
            ["deployments.apps \"nope\" not found"]
        );
    }
}
