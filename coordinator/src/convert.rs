//! Protobuf at the edge: the `flotilla.fleet.v1` messages to and from the coordinator's own types —
//! operation records to `Operation`, the cluster registry to `Cluster`, `MigrationParams` both
//! ways, a plan step to the agent's `RunStep`, and the agent's `StepResult` to a state machine
//! event.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use flotilla_proto::fleet::v1 as pb;
use jiff::Timestamp;
use prost::Message as _;

use crate::config::ClusterConfig;
use crate::eks::{NodegroupTemplate, ScalingConfig, Taint, TaintEffect, UpdateConfig};
use crate::engine::record::step_of;
use crate::operation::{Event, OperationState as Machine, StepOutputs};
use crate::params::{
    MigrationParams, OnBlocked, ParamError, Params, Surge, UpgradeParams, DEFAULT_DRAIN_CONCURRENCY,
    DEFAULT_NODE_TIMEOUT, DEFAULT_READY_TIMEOUT, DEFAULT_TAINT_KEY,
};
use crate::plan::{Runner, Step};
use crate::sessions::SessionInfo;
use crate::store::{OperationKind, OperationRecord, StepRecord, StepState};
use crate::upgrade::{
    AddonWorkload, AgentInventory, DeprecatedApi, DeprecatedApiScan, GroupKind, InventoryNode,
    InventoryNodeGroup, InventoryPdb,
};

/// Deployments surged whatever runs on the old nodes (DESIGN.md, step 4).
pub const ALWAYS_SURGED: [&str; 2] = ["kube-system/coredns", "kube-system/aws-load-balancer-controller"];

// === time ===

/// A protobuf timestamp.
pub fn ts(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

/// A protobuf duration.
pub fn dur(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A duration from the wire; negative or malformed ones are refused naming `field` (as
/// CreateRollout does).
fn from_dur(d: &prost_types::Duration, field: &str) -> Result<Duration, ParamError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ParamError::new(field, "must not be negative"));
    }
    if d.nanos >= 1_000_000_000 {
        return Err(ParamError::new(
            field,
            "nanos must be below one second; carry whole seconds into `seconds`",
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

// === parameters ===

/// The migration's parameters from the wire, defaults filled in. Not yet validated: an empty
/// `fromNodegroup` is resolved by the caller first, then [`MigrationParams::validate`] runs.
pub fn migration_params(p: &pb::MigrationParams) -> Result<MigrationParams, ParamError> {
    let Some(template) = &p.nodegroup else {
        return Err(ParamError::new(
            "nodegroup",
            "missing: give the managed node group to create (nodegroupName, instanceTypes, scalingConfig, ...)",
        ));
    };
    let surge = match p.surge {
        None => Surge::Percent(100),
        Some(pb::migration_params::Surge::SurgePercent(n)) => Surge::Percent(n),
        Some(pb::migration_params::Surge::SurgeCount(n)) => Surge::Count(n),
    };
    let on_blocked = match p.on_blocked.as_ref().and_then(|o| o.policy.as_ref()) {
        None | Some(pb::on_blocked::Policy::Fail(_)) => OnBlocked::Fail,
        Some(pb::on_blocked::Policy::SkipNode(_)) => OnBlocked::SkipNode,
        Some(pb::on_blocked::Policy::ForceAfter(d)) => {
            OnBlocked::ForceAfter(from_dur(d, "onBlocked.forceAfter")?)
        }
    };
    Ok(MigrationParams {
        from_nodegroup: p.from_nodegroup.trim().to_string(),
        nodegroup: nodegroup_template(template)?,
        taint_key: if p.taint_key.is_empty() {
            DEFAULT_TAINT_KEY.to_string()
        } else {
            p.taint_key.clone()
        },
        surge,
        ready_timeout: match &p.ready_timeout {
            Some(d) => from_dur(d, "readyTimeout")?,
            None => DEFAULT_READY_TIMEOUT,
        },
        drain_concurrency: if p.drain_concurrency == 0 {
            DEFAULT_DRAIN_CONCURRENCY
        } else {
            p.drain_concurrency
        },
        node_timeout: match &p.node_timeout {
            Some(d) => from_dur(d, "nodeTimeout")?,
            None => DEFAULT_NODE_TIMEOUT,
        },
        on_blocked,
        delete_emptydir_data: p.delete_emptydir_data,
        force: p.force,
        delete_nodegroup_on_rollback: p.delete_nodegroup_on_rollback,
    })
}

fn nodegroup_template(t: &pb::NodegroupTemplate) -> Result<NodegroupTemplate, ParamError> {
    let Some(s) = t.scaling_config else {
        return Err(ParamError::new(
            "nodegroup.scalingConfig",
            "missing: give minSize, maxSize and desiredSize",
        ));
    };
    let taints = t
        .taints
        .iter()
        .enumerate()
        .map(|(i, taint)| {
            let effect = match taint.effect.as_str() {
                "NO_SCHEDULE" => TaintEffect::NoSchedule,
                "NO_EXECUTE" => TaintEffect::NoExecute,
                "PREFER_NO_SCHEDULE" => TaintEffect::PreferNoSchedule,
                other => {
                    return Err(ParamError::new(
                        format!("nodegroup.taints[{i}].effect"),
                        format!("{other:?} is not NO_SCHEDULE, NO_EXECUTE or PREFER_NO_SCHEDULE"),
                    ))
                }
            };
            Ok(Taint {
                key: taint.key.clone(),
                value: (!taint.value.is_empty()).then(|| taint.value.clone()),
                effect,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(NodegroupTemplate {
        nodegroup_name: t.nodegroup_name.clone(),
        instance_types: t.instance_types.clone(),
        scaling_config: ScalingConfig {
            min_size: s.min_size,
            max_size: s.max_size,
            desired_size: s.desired_size,
        },
        subnets: t.subnets.clone(),
        node_role: t.node_role.clone(),
        labels: t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        taints,
        ami_type: opt(&t.ami_type),
        capacity_type: opt(&t.capacity_type),
        update_config: t.update_config.map(|u| UpdateConfig {
            max_unavailable: u.max_unavailable,
            max_unavailable_percentage: u.max_unavailable_percentage,
        }),
    })
}

/// The parameters back on the wire (for `Operation.work`).
pub fn migration_params_to_proto(p: &MigrationParams) -> pb::MigrationParams {
    let t = &p.nodegroup;
    pb::MigrationParams {
        from_nodegroup: p.from_nodegroup.clone(),
        nodegroup: Some(pb::NodegroupTemplate {
            nodegroup_name: t.nodegroup_name.clone(),
            instance_types: t.instance_types.clone(),
            scaling_config: Some(pb::NodegroupScalingConfig {
                min_size: t.scaling_config.min_size,
                max_size: t.scaling_config.max_size,
                desired_size: t.scaling_config.desired_size,
            }),
            subnets: t.subnets.clone(),
            node_role: t.node_role.clone(),
            labels: t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            taints: t
                .taints
                .iter()
                .map(|x| pb::NodegroupTaint {
                    key: x.key.clone(),
                    value: x.value.clone().unwrap_or_default(),
                    effect: match x.effect {
                        TaintEffect::NoSchedule => "NO_SCHEDULE",
                        TaintEffect::NoExecute => "NO_EXECUTE",
                        TaintEffect::PreferNoSchedule => "PREFER_NO_SCHEDULE",
                    }
                    .into(),
                })
                .collect(),
            ami_type: t.ami_type.clone().unwrap_or_default(),
            capacity_type: t.capacity_type.clone().unwrap_or_default(),
            update_config: t.update_config.map(|u| pb::NodegroupUpdateConfig {
                max_unavailable: u.max_unavailable,
                max_unavailable_percentage: u.max_unavailable_percentage,
            }),
        }),
        taint_key: p.taint_key.clone(),
        surge: Some(match p.surge {
            Surge::Percent(n) => pb::migration_params::Surge::SurgePercent(n),
            Surge::Count(n) => pb::migration_params::Surge::SurgeCount(n),
        }),
        ready_timeout: Some(dur(p.ready_timeout)),
        drain_concurrency: p.drain_concurrency,
        node_timeout: Some(dur(p.node_timeout)),
        on_blocked: Some(on_blocked(p.on_blocked)),
        delete_emptydir_data: p.delete_emptydir_data,
        force: p.force,
        delete_nodegroup_on_rollback: p.delete_nodegroup_on_rollback,
    }
}

fn on_blocked(o: OnBlocked) -> pb::OnBlocked {
    pb::OnBlocked {
        policy: Some(match o {
            OnBlocked::Fail => pb::on_blocked::Policy::Fail(pb::on_blocked::Fail {}),
            OnBlocked::SkipNode => pb::on_blocked::Policy::SkipNode(pb::on_blocked::SkipNode {}),
            OnBlocked::ForceAfter(d) => pb::on_blocked::Policy::ForceAfter(dur(d)),
        }),
    }
}

// === agent steps ===

/// The `RunStep` of agent step (`step`, `attempt`) of an operation with parameters `params`;
/// `None` for coordinator steps and for a step of the other plan.
pub fn run_step(operation_id: &str, step: Step, attempt: u32, params: &Params) -> Option<pb::RunStep> {
    use pb::run_step::Step as S;
    let kind = match (step, params) {
        (Step::Inventory, Params::Upgrade(_)) => S::Inventory(pb::InventoryParams {}),
        (Step::Postflight, Params::Upgrade(u)) => S::Postflight(pb::PostflightParams {
            minor: u.target.to_string(),
        }),
        (_, Params::Migration(p)) => migration_run_step(step, p)?,
        (_, Params::Upgrade(_)) => return None,
    };
    Some(pb::RunStep {
        operation_id: operation_id.to_string(),
        step_id: crate::engine::record::step_id(step),
        attempt,
        step: Some(kind),
        // The step's trace continues in the agent under the span that sends it.
        trace_context: flotilla_proto::telemetry::inject(&tracing::Span::current()),
    })
}

/// The parameters of a migration's agent step.
fn migration_run_step(step: Step, p: &MigrationParams) -> Option<pb::run_step::Step> {
    use pb::run_step::Step as S;
    let from = p.from_nodegroup.clone();
    let to = p.nodegroup.nodegroup_name.clone();
    let kind = match step {
        Step::WaitNodesReady => S::WaitNodesReady(pb::WaitNodesReadyParams {
            group: to,
            count: u32::try_from(p.nodegroup.scaling_config.desired_size.max(1)).unwrap_or(1),
            timeout: Some(dur(p.ready_timeout)),
            poll: Some(dur(Duration::from_secs(1))),
        }),
        Step::Taint => S::Taint(pb::TaintParams {
            group: from,
            taint_key: p.taint_key.clone(),
        }),
        Step::SurgeScale => S::SurgeScale(pb::SurgeScaleParams {
            from,
            to,
            surge: Some(match p.surge {
                Surge::Percent(n) => pb::surge_scale_params::Surge::Percent(n),
                Surge::Count(n) => pb::surge_scale_params::Surge::Count(n),
            }),
            always: ALWAYS_SURGED.iter().map(|s| s.to_string()).collect(),
        }),
        Step::VerifyReady => S::VerifyReady(pb::VerifyReadyParams {
            from,
            to,
            timeout: Some(dur(p.ready_timeout)),
            poll: Some(dur(Duration::from_millis(500))),
        }),
        Step::Drain => S::Drain(pb::DrainParams {
            group: from,
            concurrency: p.drain_concurrency,
            node_timeout: Some(dur(p.node_timeout)),
            on_blocked: Some(on_blocked(p.on_blocked)),
            delete_emptydir_data: p.delete_emptydir_data,
            force: p.force,
            poll: Some(dur(Duration::from_millis(200))),
            max_in_flight: 128,
        }),
        // The old group is gone by now; deployments with pods still on it (none, since the
        // drain reported it empty) would be kept surged.
        Step::RestoreScale => S::RestoreScale(pb::RestoreScaleParams {
            keep_if_pods_on: Some(from),
            step_timeout: Some(dur(Duration::from_secs(120))),
            poll: Some(dur(Duration::from_millis(200))),
        }),
        Step::Rollback => S::Rollback(pb::RollbackParams {
            group: from,
            taint_key: p.taint_key.clone(),
        }),
        Step::CreateManagedNodegroup
        | Step::RemoveSelfManagedNodegroup
        | Step::DeleteManagedNodegroup
        | Step::Inventory
        | Step::Preflight
        | Step::UpgradeControlPlane
        | Step::UpgradeNodegroups
        | Step::UpgradeAddons
        | Step::Postflight => return None,
    };
    Some(kind)
}

/// The agent's inventory (wire) in the upgrade's own types.
pub fn agent_inventory(inv: &pb::Inventory) -> AgentInventory {
    let kind = |k: i32| match pb::NodeGroupKind::try_from(k) {
        Ok(pb::NodeGroupKind::SelfManaged) => GroupKind::SelfManaged,
        _ => GroupKind::Managed,
    };
    AgentInventory {
        api_server_version: inv.version.clone(),
        node_groups: inv
            .node_groups
            .iter()
            .map(|g| InventoryNodeGroup {
                name: g.name.clone(),
                kind: kind(g.kind),
                nodes: g.node_count,
                ready: g.ready_count,
                kubelet_versions: g.kubelet_versions.clone(),
            })
            .collect(),
        nodes: inv
            .nodes
            .iter()
            .map(|n| InventoryNode {
                name: n.name.clone(),
                group: n.group.clone(),
                kubelet_version: n.kubelet_version.clone(),
                ready: n.ready,
            })
            .collect(),
        blocking_pdbs: inv
            .blocking_pdbs
            .iter()
            .map(|p| InventoryPdb {
                name: p.name.clone(),
                expected: p.expected,
                healthy: p.healthy,
                desired: p.desired,
            })
            .collect(),
        addon_workloads: inv.addon_workloads_reported.then(|| {
            inv.addon_workloads
                .iter()
                .map(|w| AddonWorkload {
                    addon: w.addon.clone(),
                    image: w.image.clone(),
                })
                .collect()
        }),
        deprecated_apis: inv.deprecated_api_scan.as_ref().map(|scan| {
            if scan.unavailable_reason.is_empty() {
                DeprecatedApiScan::Checked(
                    scan.apis
                        .iter()
                        .map(|a| DeprecatedApi {
                            group: a.group.clone(),
                            version: a.version.clone(),
                            resource: a.resource.clone(),
                            subresource: a.subresource.clone(),
                            removed_release: a.removed_release.clone(),
                        })
                        .collect(),
                )
            } else {
                DeprecatedApiScan::Unavailable(scan.unavailable_reason.clone())
            }
        }),
    }
}

/// The inventory an upgrade's `Inventory` step reported (its stored output), if it succeeded.
pub fn inventory_of(r: &OperationRecord) -> Option<AgentInventory> {
    let s = r
        .steps
        .iter()
        .find(|s| s.id == crate::engine::record::step_id(Step::Inventory))?;
    if s.state != StepState::Succeeded {
        return None;
    }
    let outputs: StepOutputs = serde_json::from_value(s.outputs.clone()).ok()?;
    match decode::<pb::StepOutput>(outputs.detail.as_deref()?)?.output? {
        pb::step_output::Output::Inventory(inv) => Some(agent_inventory(&inv)),
        _ => None,
    }
}

/// A result the agent sent that cannot be applied, naming the bad field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadResult {
    /// The field, e.g. `result.outcome`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The state machine event for an agent's `StepResult` of `step`, and (for a failure) the typed
/// error wire-encoded for the record.
pub fn result_event(step: Step, r: &pb::StepResult) -> Result<(Event, Option<String>), BadResult> {
    if r.attempt == 0 {
        return Err(BadResult {
            field: "result.attempt",
            message: "must be 1 or more".into(),
        });
    }
    match &r.outcome {
        None => Err(BadResult {
            field: "result.outcome",
            message: "neither ok nor error; send the step's output or its typed error".into(),
        }),
        Some(pb::step_result::Outcome::Ok(out)) => {
            let evictable_pods_left = match &out.output {
                Some(pb::step_output::Output::Drain(d)) => {
                    Some(d.skipped.iter().map(|s| s.blockers.len() as u64).sum())
                }
                _ => None,
            };
            if step == Step::Drain && evictable_pods_left.is_none() {
                return Err(BadResult {
                    field: "result.ok.output",
                    message: "a Drain result must carry the drain output".into(),
                });
            }
            Ok((
                Event::StepSucceeded {
                    step,
                    attempt: r.attempt,
                    outputs: StepOutputs {
                        summary: output_summary(out),
                        evictable_pods_left,
                        detail: Some(base64::engine::general_purpose::STANDARD.encode(out.encode_to_vec())),
                    },
                },
                None,
            ))
        }
        Some(pb::step_result::Outcome::Error(e)) => {
            let code = pb::step_error::Code::try_from(e.code)
                .unwrap_or(pb::step_error::Code::Unspecified)
                .as_str_name()
                .to_string();
            Ok((
                Event::StepFailed {
                    step,
                    attempt: r.attempt,
                    code,
                    retryable: e.retryable,
                    message: e.message.clone(),
                },
                Some(base64::engine::general_purpose::STANDARD.encode(e.encode_to_vec())),
            ))
        }
    }
}

/// One line saying what an agent step did.
fn output_summary(out: &pb::StepOutput) -> String {
    use pb::step_output::Output as O;
    match &out.output {
        Some(O::WaitNodesReady(o)) => format!("{} nodes of {} Ready", o.ready.len(), o.group),
        Some(O::Taint(o)) => format!("{} nodes tainted ({} changed)", o.nodes.len(), o.changed.len()),
        Some(O::SurgeScale(o)) => format!("{} Deployments surged", o.deployments.len()),
        Some(O::VerifyReady(o)) => format!("{} Deployments ready on the new nodes", o.deployments.len()),
        Some(O::Drain(o)) => format!(
            "{} nodes drained, {} pods evicted, {} nodes skipped",
            o.drained.len(),
            o.evicted,
            o.skipped.len()
        ),
        Some(O::RestoreScale(o)) => format!(
            "{} Deployments restored, {} kept surged",
            o.deployments.len(),
            o.kept.len()
        ),
        Some(O::Rollback(o)) => format!("{} nodes untainted and uncordoned", o.nodes.len()),
        Some(O::Postflight(o)) => format!("{} nodes and {} Deployments checked", o.nodes, o.deployments),
        Some(O::Inventory(i)) => format!("inventory: {} nodes", i.nodes.len()),
        None => "done".into(),
    }
}

// === operations ===

/// The operation's state on the wire.
pub fn operation_state(r: &OperationRecord) -> pb::OperationState {
    use pb::OperationState as P;
    match &r.machine {
        Some(Machine::Pending) => P::Pending,
        Some(Machine::Running { .. } | Machine::WaitingRetry { .. } | Machine::Cancelling { .. }) => {
            P::Running
        }
        Some(Machine::RollingBack { .. }) => P::RollingBack,
        Some(Machine::Succeeded) => P::Succeeded,
        Some(Machine::Failed { .. }) => P::Failed,
        Some(Machine::Cancelled) => P::Cancelled,
        Some(Machine::RolledBack { .. }) => P::RolledBack,
        None => match r.state {
            crate::store::OperationState::Pending => P::Pending,
            crate::store::OperationState::Running => P::Running,
            crate::store::OperationState::RollingBack => P::RollingBack,
            crate::store::OperationState::Succeeded => P::Succeeded,
            crate::store::OperationState::Failed => P::Failed,
            crate::store::OperationState::Cancelled => P::Cancelled,
        },
    }
}

fn step_kind(step: Option<Step>) -> pb::OperationStepKind {
    use pb::OperationStepKind as K;
    match step {
        Some(Step::CreateManagedNodegroup) => K::CreateManagedNodegroup,
        Some(Step::WaitNodesReady) => K::WaitNodesReady,
        Some(Step::Taint) => K::Taint,
        Some(Step::SurgeScale) => K::SurgeScale,
        Some(Step::VerifyReady) => K::VerifyReady,
        Some(Step::Drain) => K::Drain,
        Some(Step::RemoveSelfManagedNodegroup) => K::RemoveSelfManagedNodegroup,
        Some(Step::RestoreScale) => K::RestoreScale,
        Some(Step::Rollback) => K::Rollback,
        Some(Step::DeleteManagedNodegroup) => K::DeleteManagedNodegroup,
        Some(Step::Inventory) => K::Inventory,
        Some(Step::Preflight) => K::Preflight,
        Some(Step::UpgradeControlPlane) => K::UpgradeControlPlane,
        Some(Step::UpgradeNodegroups) => K::UpgradeNodegroups,
        Some(Step::UpgradeAddons) => K::UpgradeAddons,
        Some(Step::Postflight) => K::Postflight,
        None => K::Unspecified,
    }
}

fn step_state(s: StepState) -> pb::StepState {
    match s {
        StepState::Pending => pb::StepState::Pending,
        StepState::Running => pb::StepState::Running,
        StepState::Succeeded => pb::StepState::Succeeded,
        StepState::Failed => pb::StepState::Failed,
        StepState::Skipped => pb::StepState::Skipped,
        StepState::Cancelled => pb::StepState::Cancelled,
    }
}

fn decode<M: prost::Message + Default>(b64: &str) -> Option<M> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    M::decode(bytes.as_slice()).ok()
}

/// One step on the wire; `progress` is the live progress if this step is the one running.
pub fn operation_step(
    r: &OperationRecord,
    s: &StepRecord,
    progress: Option<&pb::StepProgress>,
) -> pb::OperationStep {
    let step = step_of(r, &s.id);
    let outputs: Option<StepOutputs> = serde_json::from_value(s.outputs.clone()).ok();
    let agent = step.is_some_and(|st| st.runner() == Runner::Agent);
    let output = outputs
        .as_ref()
        .filter(|_| agent)
        .and_then(|o| o.detail.as_deref())
        .and_then(decode::<pb::StepOutput>);
    let error = s
        .error_detail
        .as_deref()
        .and_then(decode::<pb::StepError>)
        .or_else(|| {
            s.error.as_ref().filter(|_| agent).map(|m| pb::StepError {
                code: s
                    .error_code
                    .as_deref()
                    .and_then(pb::step_error::Code::from_str_name)
                    .unwrap_or(pb::step_error::Code::Unspecified) as i32,
                message: m.clone(),
                ..Default::default()
            })
        });
    let detail = match (&outputs, &s.error) {
        (_, Some(e)) if !agent => format!("{}: {e}", s.error_code.as_deref().unwrap_or("ERROR")),
        (Some(o), _) if !o.summary.is_empty() => o.summary.clone(),
        _ => String::new(),
    };
    let hop = match r.kind {
        OperationKind::Upgrade => serde_json::from_value::<UpgradeParams>(r.params.clone())
            .map(|p| p.target.to_string())
            .unwrap_or_default(),
        OperationKind::Migration => String::new(),
    };
    pb::OperationStep {
        step_id: s.id.clone(),
        kind: step_kind(step) as i32,
        hop,
        state: step_state(s.state) as i32,
        attempt: s.attempts,
        started_at: s.started_at.map(ts),
        finished_at: s.finished_at.map(ts),
        progress: progress
            .filter(|p| p.step_id == s.id && p.attempt == s.attempts && s.state == StepState::Running)
            .cloned(),
        output,
        error,
        detail,
    }
}

/// An operation on the wire, with the running step's live progress if any.
pub fn operation(r: &OperationRecord, progress: Option<&pb::StepProgress>) -> pb::Operation {
    let work = match r.kind {
        OperationKind::Migration => serde_json::from_value::<MigrationParams>(r.params.clone())
            .ok()
            .map(|p| pb::Work {
                kind: Some(pb::work::Kind::Migration(migration_params_to_proto(&p))),
            }),
        OperationKind::Upgrade => serde_json::from_value::<UpgradeParams>(r.params.clone())
            .ok()
            .map(|p| pb::Work {
                kind: Some(pb::work::Kind::Upgrade(pb::UpgradeParams {
                    target_version: p.target.to_string(),
                    force: p.force,
                    ..Default::default()
                })),
            }),
    };
    let failure = match &r.machine {
        Some(Machine::Failed { step, error }) => {
            format!(
                "{step} failed (attempt {}): {}: {}",
                error.attempt, error.code, error.message
            )
        }
        _ => String::new(),
    };
    pb::Operation {
        id: r.id.clone(),
        cluster_id: r.cluster.clone(),
        work,
        state: operation_state(r) as i32,
        steps: r.steps.iter().map(|s| operation_step(r, s, progress)).collect(),
        rollout_id: r.rollout_id.clone(),
        created_by: r.created_by.clone(),
        created_at: Some(ts(r.created_at)),
        started_at: r.started_at.map(ts),
        finished_at: r.finished_at.map(ts),
        failure,
    }
}

// === clusters ===

/// A cluster on the wire: its registration, its agent's session and its running operation.
pub fn cluster(c: &ClusterConfig, s: &SessionInfo, current_operation: Option<String>) -> pb::Cluster {
    pb::Cluster {
        id: c.name.clone(),
        eks_name: c.eks_cluster_name.clone(),
        region: c.region.clone(),
        labels: c
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect(),
        connected: s.connected,
        agent_version: s.agent_version.clone(),
        last_seen: s.last_seen.map(ts),
        inventory: s.inventory.as_deref().cloned(),
        current_operation_id: current_operation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_params() -> pb::MigrationParams {
        pb::MigrationParams {
            from_nodegroup: "ng-old".into(),
            nodegroup: Some(pb::NodegroupTemplate {
                nodegroup_name: "ng-new".into(),
                instance_types: vec!["m5.large".into()],
                scaling_config: Some(pb::NodegroupScalingConfig {
                    min_size: 1,
                    max_size: 5,
                    desired_size: 4,
                }),
                node_role: "arn:aws:iam::1:role/n".into(),
                taints: vec![pb::NodegroupTaint {
                    key: "k".into(),
                    value: String::new(),
                    effect: "NO_SCHEDULE".into(),
                }],
                ..Default::default()
            }),
            on_blocked: Some(pb::OnBlocked {
                policy: Some(pb::on_blocked::Policy::SkipNode(pb::on_blocked::SkipNode {})),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn params_get_defaults_and_round_trip() {
        let p = migration_params(&wire_params()).unwrap();
        assert_eq!(p.taint_key, DEFAULT_TAINT_KEY);
        assert_eq!(p.surge, Surge::Percent(100));
        assert_eq!(p.drain_concurrency, DEFAULT_DRAIN_CONCURRENCY);
        assert_eq!(p.on_blocked, OnBlocked::SkipNode);
        assert_eq!(p.validate(), Ok(()));
        let back = migration_params(&migration_params_to_proto(&p)).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn bad_params_name_the_field() {
        let mut w = wire_params();
        w.nodegroup.as_mut().unwrap().taints[0].effect = "NoSchedule".into();
        assert_eq!(
            migration_params(&w).unwrap_err().field,
            "nodegroup.taints[0].effect"
        );
        let mut w = wire_params();
        w.nodegroup.as_mut().unwrap().scaling_config = None;
        assert_eq!(migration_params(&w).unwrap_err().field, "nodegroup.scalingConfig");
        let mut w = wire_params();
        w.nodegroup = None;
        assert_eq!(migration_params(&w).unwrap_err().field, "nodegroup");
        let mut w = wire_params();
        w.node_timeout = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        assert_eq!(migration_params(&w).unwrap_err().field, "nodeTimeout");
    }

    #[test]
    fn run_steps_carry_the_template_and_the_policies() {
        let p = Params::Migration(Box::new(migration_params(&wire_params()).unwrap()));
        let r = run_step("op-1", Step::WaitNodesReady, 2, &p).unwrap();
        assert_eq!((r.step_id.as_str(), r.attempt), ("WaitNodesReady", 2));
        let Some(pb::run_step::Step::WaitNodesReady(w)) = r.step else {
            panic!()
        };
        assert_eq!((w.group.as_str(), w.count), ("ng-new", 4));
        let Some(pb::run_step::Step::Drain(d)) = run_step("op-1", Step::Drain, 1, &p).unwrap().step else {
            panic!()
        };
        assert_eq!(d.group, "ng-old");
        assert!(matches!(
            d.on_blocked.and_then(|o| o.policy),
            Some(pb::on_blocked::Policy::SkipNode(_))
        ));
        assert!(run_step("op-1", Step::CreateManagedNodegroup, 1, &p).is_none());
    }

    #[test]
    fn drain_results_count_the_pods_left() {
        let result = |skipped: Vec<pb::SkippedNode>| pb::StepResult {
            operation_id: "op".into(),
            step_id: "Drain".into(),
            attempt: 1,
            finished_at: None,
            trace_context: Default::default(),
            outcome: Some(pb::step_result::Outcome::Ok(pb::StepOutput {
                output: Some(pb::step_output::Output::Drain(pb::DrainOutput {
                    skipped,
                    ..Default::default()
                })),
            })),
        };
        let (e, _) = result_event(Step::Drain, &result(vec![])).unwrap();
        assert!(
            matches!(e, Event::StepSucceeded { ref outputs, .. } if outputs.evictable_pods_left == Some(0))
        );
        let blocked = pb::SkippedNode {
            node: "n1".into(),
            blockers: vec![pb::Blocker::default(), pb::Blocker::default()],
        };
        let (e, _) = result_event(Step::Drain, &result(vec![blocked])).unwrap();
        assert!(
            matches!(e, Event::StepSucceeded { ref outputs, .. } if outputs.evictable_pods_left == Some(2))
        );
        let mut bad = result(vec![]);
        bad.outcome = None;
        assert_eq!(
            result_event(Step::Drain, &bad).unwrap_err().field,
            "result.outcome"
        );
        let mut failed = result(vec![]);
        failed.outcome = Some(pb::step_result::Outcome::Error(pb::StepError {
            code: pb::step_error::Code::DrainBlocked as i32,
            message: "blocked".into(),
            retryable: true,
            ..Default::default()
        }));
        let (e, wire) = result_event(Step::Drain, &failed).unwrap();
        assert!(matches!(e, Event::StepFailed { ref code, retryable: true, .. } if code == "DRAIN_BLOCKED"));
        assert!(decode::<pb::StepError>(&wire.unwrap()).is_some());
    }
}
