//! The edge between the wire protocol and the steps: a `RunStep`'s parameters become a [`Step`],
//! and a step's output, typed error and progress become `StepOutput`, `StepError` and
//! `StepProgress` messages. Protobuf types go no further into the agent than this module.
//!
//! Unset (or zero) parameters take the local runner's defaults: timeouts 10 minutes, polls as
//! each step's `Params::new`, drain concurrency 5 and 128 evictions in flight, restore step
//! timeout 2 minutes, taint key `flotilla.io/migrating`, and an empty `always` list means the
//! Deployments DESIGN.md always surges (`kube-system/coredns`, `aws-load-balancer-controller`).
//! Booleans (`force`, `delete_emptydir_data`) are taken as sent.

use std::time::{Duration, SystemTime};

use flotilla_proto::fleet::v1 as pb;
use pb::step_error::Detail;

use crate::cluster::ClusterError;
use crate::deprecated_apis::DeprecatedApiScan;
use crate::inventory::{DeploymentInfo, Inventory, NodeGroup, NodeInfo, PdbInfo};
use crate::model::{GroupKind, Resources};
use crate::steps::drain::{self, OnBlocked};
use crate::steps::surge_scale::{self, Surge};
use crate::steps::{
    postflight, restore_scale, taint, verify_ready, wait_nodes_ready, Blocker, NodeIssue, Progress,
    RefusedPod, Shortfall, Step, StepError, StepKind, StepOutput, MAX_WAIT,
};

/// Default wait of `WaitNodesReady` and `VerifyReady` when the `RunStep` leaves it unset.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

// === RunStep → Step ===

/// The step a `RunStep` asks for, with its parameters checked for wire-level problems (a missing
/// step, a negative duration); the step's own `validate` checks the rest when it runs.
pub fn step_from_proto(step: Option<pb::run_step::Step>) -> Result<Step, StepError> {
    use pb::run_step::Step as S;
    let step = step.ok_or_else(|| {
        StepError::invalid(
            "step",
            "the RunStep names no step; set one of inventory, wait_nodes_ready, taint, surge_scale, \
             verify_ready, drain, restore_scale, rollback, postflight",
        )
    })?;
    Ok(match step {
        S::Inventory(pb::InventoryParams {}) => Step::Inventory,
        S::WaitNodesReady(p) => Step::WaitNodesReady(wait_nodes_ready::Params {
            timeout: duration_or("wait_nodes_ready.timeout", p.timeout, DEFAULT_WAIT)?,
            poll: duration_or("wait_nodes_ready.poll", p.poll, Duration::from_secs(1))?,
            ..wait_nodes_ready::Params::new(&p.group, p.count, DEFAULT_WAIT)
        }),
        S::Taint(p) => Step::Taint(taint_params(p.group, p.taint_key)),
        S::SurgeScale(p) => {
            let surge = match p.surge {
                None => Surge::default(),
                Some(pb::surge_scale_params::Surge::Percent(n)) => Surge::Percent(n),
                Some(pb::surge_scale_params::Surge::Count(n)) => Surge::Count(n),
            };
            let mut params = surge_scale::Params::new(&p.from, &p.to, surge);
            if !p.always.is_empty() {
                params.always = p.always;
            }
            Step::SurgeScale(params)
        }
        S::VerifyReady(p) => Step::VerifyReady(verify_ready::Params {
            timeout: duration_or("verify_ready.timeout", p.timeout, DEFAULT_WAIT)?,
            poll: duration_or("verify_ready.poll", p.poll, Duration::from_millis(500))?,
            ..verify_ready::Params::new(&p.from, &p.to, DEFAULT_WAIT)
        }),
        S::Drain(p) => {
            let defaults = drain::Params::new(&p.group);
            let on_blocked = match p.on_blocked.and_then(|o| o.policy) {
                None | Some(pb::on_blocked::Policy::Fail(_)) => OnBlocked::Fail,
                Some(pb::on_blocked::Policy::SkipNode(_)) => OnBlocked::SkipNode,
                Some(pb::on_blocked::Policy::ForceAfter(d)) => {
                    OnBlocked::ForceAfter(duration("drain.on_blocked.force_after", d)?)
                }
            };
            Step::Drain(drain::Params {
                concurrency: nonzero(p.concurrency).unwrap_or(defaults.concurrency),
                node_timeout: duration_or("drain.node_timeout", p.node_timeout, defaults.node_timeout)?,
                on_blocked,
                delete_emptydir_data: p.delete_emptydir_data,
                force: p.force,
                poll: duration_or("drain.poll", p.poll, defaults.poll)?,
                max_in_flight: nonzero(p.max_in_flight).unwrap_or(defaults.max_in_flight),
                ..defaults
            })
        }
        S::RestoreScale(p) => {
            let defaults = restore_scale::Params::default();
            Step::RestoreScale(restore_scale::Params {
                keep_if_pods_on: p.keep_if_pods_on.filter(|g| !g.is_empty()),
                step_timeout: duration_or(
                    "restore_scale.step_timeout",
                    p.step_timeout,
                    defaults.step_timeout,
                )?,
                poll: duration_or("restore_scale.poll", p.poll, defaults.poll)?,
            })
        }
        S::Rollback(p) => Step::Rollback(taint_params(p.group, p.taint_key)),
        S::Postflight(p) => Step::Postflight(postflight::Params { minor: p.minor }),
    })
}

/// The step kind a `RunStep` names, if any (for results of steps that could not be built).
pub fn kind_of(step: &Option<pb::run_step::Step>) -> pb::StepKind {
    use pb::run_step::Step as S;
    match step {
        None => pb::StepKind::Unspecified,
        Some(S::Inventory(_)) => pb::StepKind::Inventory,
        Some(S::WaitNodesReady(_)) => pb::StepKind::WaitNodesReady,
        Some(S::Taint(_)) => pb::StepKind::Taint,
        Some(S::SurgeScale(_)) => pb::StepKind::SurgeScale,
        Some(S::VerifyReady(_)) => pb::StepKind::VerifyReady,
        Some(S::Drain(_)) => pb::StepKind::Drain,
        Some(S::RestoreScale(_)) => pb::StepKind::RestoreScale,
        Some(S::Rollback(_)) => pb::StepKind::Rollback,
        Some(S::Postflight(_)) => pb::StepKind::Postflight,
    }
}

fn taint_params(group: String, taint_key: String) -> taint::Params {
    let mut p = taint::Params::new(&group);
    if !taint_key.is_empty() {
        p.taint_key = taint_key;
    }
    p
}

fn nonzero(n: u32) -> Option<usize> {
    (n > 0).then_some(n as usize)
}

/// A wire duration as a std duration; a negative one, or one past [`MAX_WAIT`], is an invalid
/// `field`.
fn duration(field: &str, d: prost_types::Duration) -> Result<Duration, StepError> {
    let d = Duration::try_from(d)
        .map_err(|e| StepError::invalid(field, format!("{e}; send a non-negative duration, e.g. 600s")))?;
    if d > MAX_WAIT {
        return Err(StepError::invalid(
            field,
            format!(
                "{}s is longer than the {}s (7 days) a step may wait",
                d.as_secs(),
                MAX_WAIT.as_secs()
            ),
        ));
    }
    Ok(d)
}

/// As [`duration`]; unset or zero means `default`.
fn duration_or(
    field: &str,
    d: Option<prost_types::Duration>,
    default: Duration,
) -> Result<Duration, StepError> {
    match d {
        None => Ok(default),
        Some(d) => {
            let d = duration(field, d)?;
            Ok(if d.is_zero() { default } else { d })
        }
    }
}

// === Step → wire ===

/// The wire kind of a step.
pub fn kind_to_proto(kind: StepKind) -> pb::StepKind {
    match kind {
        StepKind::Inventory => pb::StepKind::Inventory,
        StepKind::WaitNodesReady => pb::StepKind::WaitNodesReady,
        StepKind::Taint => pb::StepKind::Taint,
        StepKind::SurgeScale => pb::StepKind::SurgeScale,
        StepKind::VerifyReady => pb::StepKind::VerifyReady,
        StepKind::Drain => pb::StepKind::Drain,
        StepKind::RestoreScale => pb::StepKind::RestoreScale,
        StepKind::Rollback => pb::StepKind::Rollback,
        StepKind::Postflight => pb::StepKind::Postflight,
    }
}

/// A wire timestamp.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// A wire duration (saturating at the protobuf maximum, which no step reaches).
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: 315_576_000_000,
        nanos: 0,
    })
}

/// One progress report as the wire carries it; `at` is when the agent observed it.
pub fn progress_to_proto(
    operation_id: &str,
    step_id: &str,
    attempt: u32,
    p: &Progress,
    at: SystemTime,
) -> pb::StepProgress {
    pb::StepProgress {
        operation_id: operation_id.to_string(),
        step_id: step_id.to_string(),
        attempt,
        kind: kind_to_proto(p.step) as i32,
        done: p.done,
        total: p.total,
        message: p.message.clone(),
        blockers: p.blockers.iter().map(blocker).collect(),
        at: Some(timestamp(at)),
        // The runner adds the step span's trace context.
        trace_context: Default::default(),
    }
}

/// A blocking pod with its PodDisruptionBudgets.
pub fn blocker(b: &Blocker) -> pb::Blocker {
    pb::Blocker {
        pod: b.pod.clone(),
        node: b.node.clone(),
        pdbs: b.pdbs.clone(),
        reason: b.reason.clone(),
        blocked_for: Some(duration_to_proto(b.for_)),
    }
}

/// The inventory as the wire carries it (in `Hello` and the Inventory step's output).
pub fn inventory_to_proto(inv: &Inventory) -> pb::Inventory {
    pb::Inventory {
        version: inv.version.clone(),
        node_groups: inv.node_groups.iter().map(node_group).collect(),
        nodes: inv.nodes.iter().map(node).collect(),
        deployments: inv.deployments.iter().map(deployment).collect(),
        blocking_pdbs: inv.blocking_pdbs.iter().map(pdb).collect(),
        addon_workloads: inv
            .addon_workloads
            .iter()
            .flatten()
            .map(|w| pb::AddonWorkload {
                addon: w.addon.clone(),
                image: w.image.clone(),
            })
            .collect(),
        addon_workloads_reported: inv.addon_workloads.is_some(),
        deprecated_api_scan: inv.deprecated_apis.as_ref().map(deprecated_api_scan),
    }
}

fn deprecated_api_scan(scan: &DeprecatedApiScan) -> pb::DeprecatedApiScan {
    match scan {
        DeprecatedApiScan::Checked(apis) => pb::DeprecatedApiScan {
            apis: apis
                .iter()
                .map(|a| pb::DeprecatedApi {
                    group: a.group.clone(),
                    version: a.version.clone(),
                    resource: a.resource.clone(),
                    subresource: a.subresource.clone(),
                    removed_release: a.removed_release.clone(),
                })
                .collect(),
            unavailable_reason: String::new(),
        },
        DeprecatedApiScan::Unavailable(why) => pb::DeprecatedApiScan {
            apis: Vec::new(),
            unavailable_reason: why.clone(),
        },
    }
}

fn group_kind(kind: Option<GroupKind>) -> pb::NodeGroupKind {
    match kind {
        None => pb::NodeGroupKind::Unspecified,
        Some(GroupKind::SelfManaged) => pb::NodeGroupKind::SelfManaged,
        Some(GroupKind::Managed) => pb::NodeGroupKind::Managed,
    }
}

fn node_group(g: &NodeGroup) -> pb::NodeGroup {
    pb::NodeGroup {
        name: g.name.clone(),
        kind: group_kind(Some(g.kind)) as i32,
        node_count: g.nodes,
        ready_count: g.ready,
        kubelet_versions: g.kubelet_versions.clone(),
    }
}

fn node(n: &NodeInfo) -> pb::Node {
    pb::Node {
        name: n.name.clone(),
        group: n.group.clone(),
        group_kind: group_kind(n.group_kind) as i32,
        kubelet_version: n.kubelet_version.clone(),
        ready: n.ready,
        schedulable: n.schedulable,
    }
}

fn deployment(d: &DeploymentInfo) -> pb::Deployment {
    pb::Deployment {
        name: d.name.clone(),
        replicas: d.replicas,
        available: d.available,
        hpa: d.hpa.clone(),
    }
}

fn pdb(p: &PdbInfo) -> pb::PodDisruptionBudget {
    pb::PodDisruptionBudget {
        name: p.name.clone(),
        expected: p.expected,
        healthy: p.healthy,
        desired: p.desired,
    }
}

/// A step's output as the wire carries it.
pub fn output_to_proto(out: &StepOutput) -> pb::StepOutput {
    use pb::step_output::Output as O;
    let output = match out {
        StepOutput::Inventory(inv) => O::Inventory(inventory_to_proto(inv)),
        StepOutput::WaitNodesReady(o) => O::WaitNodesReady(pb::WaitNodesReadyOutput {
            group: o.group.clone(),
            ready: o.ready.clone(),
        }),
        StepOutput::Taint(o) => O::Taint(pb::TaintOutput {
            nodes: o.nodes.clone(),
            changed: o.changed.clone(),
        }),
        StepOutput::SurgeScale(o) => O::SurgeScale(pb::SurgeScaleOutput {
            deployments: o
                .deployments
                .iter()
                .map(|s| pb::Surged {
                    deployment: s.deployment.clone(),
                    original: s.original,
                    target: s.target,
                    hpa: s.hpa.clone(),
                    changed: s.changed,
                })
                .collect(),
        }),
        StepOutput::VerifyReady(o) => O::VerifyReady(pb::VerifyReadyOutput {
            deployments: o
                .deployments
                .iter()
                .map(|v| pb::Verified {
                    deployment: v.deployment.clone(),
                    target: v.target,
                    available: v.available,
                    ready_on_new: v.ready_on_new,
                })
                .collect(),
        }),
        StepOutput::Drain(o) => O::Drain(pb::DrainOutput {
            drained: o.drained.clone(),
            skipped: o
                .skipped
                .iter()
                .map(|s| pb::SkippedNode {
                    node: s.node.clone(),
                    blockers: s.blockers.iter().map(blocker).collect(),
                })
                .collect(),
            evicted: o.evicted,
            forced: o
                .forced
                .iter()
                .map(|f| pb::ForcedDeletion {
                    pod: f.pod.clone(),
                    node: f.node.clone(),
                    pdbs: f.pdbs.clone(),
                    blocked_for: Some(duration_to_proto(f.blocked_for)),
                })
                .collect(),
            skipped_pods: o.skipped_pods,
            refusals: o.refusals,
            elapsed: Some(duration_to_proto(o.elapsed)),
        }),
        StepOutput::RestoreScale(o) => O::RestoreScale(restore_output(o)),
        StepOutput::Rollback(o) => O::Rollback(pb::RollbackOutput {
            nodes: o.nodes.clone(),
            restored: Some(restore_output(&o.restored)),
        }),
        StepOutput::Postflight(o) => O::Postflight(pb::PostflightOutput {
            version: o.version.clone(),
            nodes: o.nodes,
            deployments: o.deployments,
        }),
    };
    pb::StepOutput { output: Some(output) }
}

fn restore_output(o: &restore_scale::Output) -> pb::RestoreScaleOutput {
    pb::RestoreScaleOutput {
        deployments: o
            .deployments
            .iter()
            .map(|r| pb::Restored {
                deployment: r.deployment.clone(),
                replicas: r.replicas,
                hpa: r.hpa.clone(),
                steps: r.steps,
                past_budget: r.past_budget,
            })
            .collect(),
        hpas: o.hpas.clone(),
        kept: o.kept.clone(),
    }
}

/// The wire code of an error; equal by name to [`StepError::code`].
pub fn code_to_proto(e: &StepError) -> pb::step_error::Code {
    use pb::step_error::Code;
    match e {
        StepError::InvalidParameter { .. } => Code::InvalidParameter,
        StepError::NodeGroupNotFound { .. } => Code::NodeGroupNotFound,
        StepError::NodesNotReady { .. } => Code::NodesNotReady,
        StepError::InsufficientCapacity { .. } => Code::InsufficientCapacity,
        StepError::DeploymentsNotReady { .. } => Code::DeploymentsNotReady,
        StepError::DrainRefused { .. } => Code::DrainRefused,
        StepError::DrainBlocked { .. } => Code::DrainBlocked,
        StepError::PostflightFailed { .. } => Code::PostflightFailed,
        StepError::Cluster(_) => Code::KubernetesApi,
        StepError::Cancelled { .. } => Code::Cancelled,
    }
}

fn resources(r: &Resources) -> pb::Resources {
    pb::Resources {
        cpu_millis: r.cpu_millis,
        memory_bytes: r.memory_bytes,
        pods: r.pods,
    }
}

fn node_issue(n: &NodeIssue) -> pb::NodeIssue {
    pb::NodeIssue {
        node: n.node.clone(),
        reason: n.reason.clone(),
    }
}

fn shortfall(s: &Shortfall) -> pb::Shortfall {
    pb::Shortfall {
        deployment: s.deployment.clone(),
        want: s.want,
        available: s.available,
        reason: s.reason.clone(),
    }
}

fn refused(r: &RefusedPod) -> pb::RefusedPod {
    pb::RefusedPod {
        pod: r.pod.clone(),
        node: r.node.clone(),
        reason: r.reason.clone(),
    }
}

/// A step's typed error as the wire carries it: code, message (`Display`), retryable, the
/// blocking pods with their PodDisruptionBudgets, and the structured detail.
pub fn error_to_proto(e: &StepError) -> pb::StepError {
    use pb::step_error as se;
    let mut blockers = Vec::new();
    let detail = match e {
        StepError::InvalidParameter { field, message } => Detail::InvalidParameter(se::InvalidParameter {
            field: field.clone(),
            message: message.clone(),
        }),
        StepError::NodeGroupNotFound { group, labels, known } => {
            Detail::NodeGroupNotFound(se::NodeGroupNotFound {
                group: group.clone(),
                labels: labels.clone(),
                known: known.clone(),
            })
        }
        StepError::NodesNotReady {
            group,
            want,
            ready,
            not_ready,
            waited,
        } => Detail::NodesNotReady(se::NodesNotReady {
            group: group.clone(),
            want: *want,
            ready: *ready,
            not_ready: not_ready.iter().map(node_issue).collect(),
            waited: Some(duration_to_proto(*waited)),
        }),
        StepError::InsufficientCapacity {
            group,
            needed,
            free,
            unplaced,
        } => Detail::InsufficientCapacity(se::InsufficientCapacity {
            group: group.clone(),
            needed: Some(resources(needed)),
            free: Some(resources(free)),
            unplaced: unplaced.clone(),
        }),
        StepError::DeploymentsNotReady { short, waited } => {
            Detail::DeploymentsNotReady(se::DeploymentsNotReady {
                short: short.iter().map(shortfall).collect(),
                waited: Some(duration_to_proto(*waited)),
            })
        }
        StepError::DrainRefused { refused: pods } => Detail::DrainRefused(se::DrainRefused {
            refused: pods.iter().map(refused).collect(),
        }),
        StepError::DrainBlocked {
            node,
            blockers: left,
            waited,
        } => {
            blockers = left.iter().map(blocker).collect();
            Detail::DrainBlocked(se::DrainBlocked {
                node: node.clone(),
                waited: Some(duration_to_proto(*waited)),
            })
        }
        StepError::PostflightFailed { problems } => Detail::PostflightFailed(se::PostflightFailed {
            problems: problems.clone(),
        }),
        StepError::Cluster(c) => Detail::KubernetesApi(kubernetes_api(c)),
        StepError::Cancelled { reason } => Detail::Cancelled(se::Cancelled {
            reason: reason.clone(),
        }),
    };
    pb::StepError {
        code: code_to_proto(e) as i32,
        message: e.to_string(),
        retryable: e.retryable(),
        blockers,
        detail: Some(detail),
    }
}

fn kubernetes_api(e: &ClusterError) -> pb::step_error::KubernetesApi {
    let (what, http_status, reason) = match e {
        ClusterError::NotFound { what } => (what, 404, "NotFound"),
        ClusterError::Conflict { what, .. } => (what, 409, "Conflict"),
        ClusterError::Api {
            what, code, reason, ..
        } => (what, u32::from(*code), reason.as_str()),
        ClusterError::Transport { what, .. } => (what, 0, ""),
    };
    pb::step_error::KubernetesApi {
        what: what.clone(),
        http_status,
        reason: reason.to_string(),
    }
}

/// A finished step attempt as the wire carries it.
pub fn result_to_proto(
    operation_id: &str,
    step_id: &str,
    attempt: u32,
    outcome: &Result<StepOutput, StepError>,
    finished_at: SystemTime,
) -> pb::StepResult {
    use pb::step_result::Outcome;
    pb::StepResult {
        operation_id: operation_id.to_string(),
        step_id: step_id.to_string(),
        attempt,
        finished_at: Some(timestamp(finished_at)),
        outcome: Some(match outcome {
            Ok(out) => Outcome::Ok(output_to_proto(out)),
            Err(e) => Outcome::Error(error_to_proto(e)),
        }),
        // The runner adds the step span's trace context.
        trace_context: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::run_step::Step as S;

    fn d(secs: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        })
    }

    #[test]
    fn unset_parameters_take_the_local_runners_defaults() {
        let step = step_from_proto(Some(S::Drain(pb::DrainParams {
            group: "ng-old".into(),
            delete_emptydir_data: true,
            ..Default::default()
        })))
        .expect("drain");
        assert_eq!(step, Step::Drain(drain::Params::new("ng-old")));

        let step = step_from_proto(Some(S::Taint(pb::TaintParams {
            group: "ng-old".into(),
            taint_key: String::new(),
        })))
        .expect("taint");
        assert_eq!(step, Step::Taint(taint::Params::new("ng-old")));

        let Step::SurgeScale(p) = step_from_proto(Some(S::SurgeScale(pb::SurgeScaleParams {
            from: "a".into(),
            to: "b".into(),
            surge: None,
            always: vec![],
        })))
        .expect("surge") else {
            panic!("surge")
        };
        assert_eq!(p, surge_scale::Params::new("a", "b", Surge::Percent(100)));

        let Step::WaitNodesReady(p) = step_from_proto(Some(S::WaitNodesReady(pb::WaitNodesReadyParams {
            group: "ng-new".into(),
            count: 3,
            timeout: None,
            poll: None,
        })))
        .expect("wait") else {
            panic!("wait")
        };
        assert_eq!(
            (p.count, p.timeout, p.poll),
            (3, DEFAULT_WAIT, Duration::from_secs(1))
        );
    }

    #[test]
    fn given_parameters_are_taken_as_sent() {
        let step = step_from_proto(Some(S::Drain(pb::DrainParams {
            group: "ng-old".into(),
            concurrency: 3,
            node_timeout: d(120),
            on_blocked: Some(pb::OnBlocked {
                policy: Some(pb::on_blocked::Policy::ForceAfter(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                })),
            }),
            delete_emptydir_data: false,
            force: true,
            poll: Some(prost_types::Duration {
                seconds: 0,
                nanos: 50_000_000,
            }),
            max_in_flight: 7,
        })))
        .expect("drain");
        assert_eq!(
            step,
            Step::Drain(drain::Params {
                group: "ng-old".into(),
                concurrency: 3,
                node_timeout: Duration::from_secs(120),
                on_blocked: OnBlocked::ForceAfter(Duration::from_secs(30)),
                delete_emptydir_data: false,
                force: true,
                poll: Duration::from_millis(50),
                max_in_flight: 7,
            })
        );
        let step = step_from_proto(Some(S::SurgeScale(pb::SurgeScaleParams {
            from: "a".into(),
            to: "b".into(),
            surge: Some(pb::surge_scale_params::Surge::Count(2)),
            always: vec!["x/y".into()],
        })))
        .expect("surge");
        assert_eq!(
            step,
            Step::SurgeScale(surge_scale::Params {
                from: "a".into(),
                to: "b".into(),
                surge: Surge::Count(2),
                always: vec!["x/y".into()],
            })
        );
        let step = step_from_proto(Some(S::RestoreScale(pb::RestoreScaleParams {
            keep_if_pods_on: Some("ng-old".into()),
            step_timeout: d(5),
            poll: None,
        })))
        .expect("restore");
        assert_eq!(
            step,
            Step::RestoreScale(restore_scale::Params {
                keep_if_pods_on: Some("ng-old".into()),
                step_timeout: Duration::from_secs(5),
                ..Default::default()
            })
        );
    }

    #[test]
    fn wire_problems_name_the_field() {
        let err = step_from_proto(None).unwrap_err();
        assert!(
            matches!(&err, StepError::InvalidParameter { field, .. } if field == "step"),
            "{err}"
        );
        let err = step_from_proto(Some(S::Drain(pb::DrainParams {
            group: "g".into(),
            node_timeout: d(-5),
            ..Default::default()
        })))
        .unwrap_err();
        assert!(
            matches!(&err, StepError::InvalidParameter { field, .. } if field == "drain.node_timeout"),
            "{err}"
        );
    }

    #[test]
    fn errors_keep_code_blockers_and_detail() {
        let b = Blocker {
            pod: "shop/cache-0".into(),
            node: "n1".into(),
            pdbs: vec!["shop/cache".into()],
            reason: "blocked by PodDisruptionBudget".into(),
            for_: Duration::from_secs(12),
        };
        let e = StepError::DrainBlocked {
            node: "n1".into(),
            blockers: vec![b],
            waited: Duration::from_secs(600),
        };
        let p = error_to_proto(&e);
        assert_eq!(p.code, pb::step_error::Code::DrainBlocked as i32);
        assert_eq!(
            pb::step_error::Code::try_from(p.code)
                .expect("code")
                .as_str_name(),
            e.code()
        );
        assert!(p.retryable);
        assert_eq!(p.message, e.to_string());
        assert_eq!(p.blockers.len(), 1);
        assert_eq!(p.blockers[0].pdbs, vec!["shop/cache".to_string()]);
        assert_eq!(p.blockers[0].blocked_for, d(12));
        assert_eq!(
            p.detail,
            Some(Detail::DrainBlocked(pb::step_error::DrainBlocked {
                node: "n1".into(),
                waited: d(600),
            }))
        );

        let e = StepError::Cluster(ClusterError::Api {
            what: "node n1".into(),
            code: 403,
            reason: "Forbidden".into(),
            message: "no".into(),
        });
        let p = error_to_proto(&e);
        assert!(!p.retryable);
        assert_eq!(
            p.detail,
            Some(Detail::KubernetesApi(pb::step_error::KubernetesApi {
                what: "node n1".into(),
                http_status: 403,
                reason: "Forbidden".into(),
            }))
        );
    }

    #[test]
    fn every_code_has_the_same_name_on_the_wire() {
        let errors = [
            StepError::invalid("f", "m"),
            StepError::NodeGroupNotFound {
                group: "g".into(),
                labels: "l".into(),
                known: "k".into(),
            },
            StepError::NodesNotReady {
                group: "g".into(),
                want: 1,
                ready: 0,
                not_ready: vec![],
                waited: Duration::ZERO,
            },
            StepError::InsufficientCapacity {
                group: "g".into(),
                needed: Resources::default(),
                free: Resources::default(),
                unplaced: vec![],
            },
            StepError::DeploymentsNotReady {
                short: vec![],
                waited: Duration::ZERO,
            },
            StepError::DrainRefused { refused: vec![] },
            StepError::DrainBlocked {
                node: "n".into(),
                blockers: vec![],
                waited: Duration::ZERO,
            },
            StepError::PostflightFailed { problems: vec![] },
            StepError::Cluster(ClusterError::Transport {
                what: "w".into(),
                message: "m".into(),
            }),
            StepError::Cancelled { reason: "r".into() },
        ];
        for e in errors {
            assert_eq!(code_to_proto(&e).as_str_name(), e.code());
        }
    }

    #[test]
    fn progress_carries_blocking_pods_and_budgets() {
        let mut p = Progress::new(StepKind::Drain, 3, 10, "pods moved");
        p.blockers.push(Blocker {
            pod: "shop/cache-0".into(),
            node: "n1".into(),
            pdbs: vec!["shop/cache".into()],
            reason: "blocked by PodDisruptionBudget".into(),
            for_: Duration::from_secs(1),
        });
        let w = progress_to_proto("op", "drain", 2, &p, SystemTime::UNIX_EPOCH);
        assert_eq!((w.done, w.total, w.attempt), (3, 10, 2));
        assert_eq!(w.kind, pb::StepKind::Drain as i32);
        assert_eq!(w.blockers[0].pod, "shop/cache-0");
        assert_eq!(w.blockers[0].pdbs, vec!["shop/cache".to_string()]);
        assert_eq!(w.at, Some(prost_types::Timestamp { seconds: 0, nanos: 0 }));
    }
}
