//! The coordinator's own steps, run against the cluster's EKS and Auto Scaling APIs through the
//! [`Eks`] trait: for a migration, create the managed node group and wait until it is ACTIVE,
//! remove the self-managed group's Auto Scaling group, delete the new group on rollback; for an
//! upgrade, preflight, the control plane, the managed node groups and the add-ons (the
//! [`crate::upgrade`] functions, their progress fed to the engine). Each looks at the world first,
//! so running it again (a retry, or a re-check after a restart) issues only what is still missing.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::eks::{self, AsgInfo, AsgSize, Backoff, Eks, EksError, NodegroupStatus, WaitOptions};
use crate::operation::{RunMode, StepOutputs};
use crate::params::{MigrationParams, Params, UpgradeParams};
use crate::plan::Step;
use crate::upgrade::{
    self, learn, pace_issued, AgentInventory, Issued, Progress, StepReport, UpdateDurations, UpgradeError,
    UpgradeOptions,
};

/// How the coordinator's steps wait on EKS and Auto Scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EksWaits {
    /// Waiting for a node group to be ACTIVE or deleted.
    pub nodegroup: WaitOptions,
    /// Waiting for an Auto Scaling group's instances to be gone, and the group itself.
    pub asg: WaitOptions,
    /// Waiting for an upgrade's EKS update (control plane, node group, add-on) to end.
    pub update: WaitOptions,
}

impl Default for EksWaits {
    fn default() -> Self {
        EksWaits {
            nodegroup: WaitOptions::default(),
            asg: WaitOptions {
                backoff: Backoff::default(),
                timeout: Duration::from_secs(30 * 60),
            },
            update: UpgradeOptions::default().wait,
        }
    }
}

/// Why a coordinator step attempt failed, as the state machine takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code, e.g. `EKS_TIMEOUT`, `SUBNETS_UNKNOWN`.
    pub code: String,
    /// Whether trying again, unchanged, may succeed.
    pub retryable: bool,
    /// What happened and what to do.
    pub message: String,
}

impl From<EksError> for Failure {
    fn from(e: EksError) -> Self {
        let retryable = e.retryable() || matches!(e, EksError::Timeout { .. });
        Failure {
            code: format!("EKS_{}", e.metric_label().to_ascii_uppercase()),
            retryable,
            message: e.to_string(),
        }
    }
}

fn fail(code: &str, retryable: bool, message: impl Into<String>) -> Failure {
    Failure {
        code: code.to_string(),
        retryable,
        message: message.into(),
    }
}

fn outputs(summary: String, detail: serde_json::Value) -> StepOutputs {
    StepOutputs {
        summary,
        evictable_pods_left: None,
        detail: Some(detail.to_string()),
    }
}

impl From<UpgradeError> for Failure {
    fn from(e: UpgradeError) -> Self {
        Failure {
            code: e.code().to_string(),
            retryable: e.retryable(),
            message: e.to_string(),
        }
    }
}

/// What a coordinator step needs besides EKS.
pub struct StepInput<'a> {
    /// The operation's parameters.
    pub params: &'a Params,
    /// The agent's inventory from the upgrade's `Inventory` step, once it succeeded.
    pub inventory: Option<&'a AgentInventory>,
    /// Where the step's progress goes.
    pub progress: &'a dyn Progress,
    /// What EKS updates have taken across the fleet (paces the polls of the next ones).
    pub durations: Option<Arc<UpdateDurations>>,
}

/// Runs coordinator step `step`. The one place coordinator steps are dispatched.
pub async fn run<E: Eks + ?Sized>(
    eks: &E,
    step: Step,
    mode: RunMode,
    input: &StepInput<'_>,
    waits: &EksWaits,
) -> Result<StepOutputs, Failure> {
    let migration = || {
        input.params.migration().ok_or_else(|| {
            fail(
                "BAD_PARAMETERS",
                false,
                format!("{step} is a migration step but the operation is not a migration"),
            )
        })
    };
    let upgrade = || {
        input.params.upgrade().ok_or_else(|| {
            fail(
                "BAD_PARAMETERS",
                false,
                format!("{step} is an upgrade step but the operation is not an upgrade"),
            )
        })
    };
    let durations = input.durations.as_deref();
    match step {
        Step::CreateManagedNodegroup => {
            create_managed_nodegroup(eks, mode, migration()?, waits, durations).await
        }
        Step::RemoveSelfManagedNodegroup => {
            remove_self_managed_nodegroup(eks, migration()?, waits, durations).await
        }
        Step::DeleteManagedNodegroup => delete_managed_nodegroup(eks, migration()?, waits, durations).await,
        Step::Preflight | Step::UpgradeControlPlane | Step::UpgradeNodegroups | Step::UpgradeAddons => {
            run_upgrade_step(eks, step, mode, upgrade()?, input, waits).await
        }
        Step::WaitNodesReady
        | Step::Taint
        | Step::SurgeScale
        | Step::VerifyReady
        | Step::Drain
        | Step::RestoreScale
        | Step::Rollback
        | Step::Inventory
        | Step::Postflight => Err(fail(
            "NOT_A_COORDINATOR_STEP",
            false,
            format!("{step} is run by the agent, not the coordinator"),
        )),
    }
}

/// An upgrade's coordinator step, through the [`crate::upgrade`] functions.
async fn run_upgrade_step<E: Eks + ?Sized>(
    eks: &E,
    step: Step,
    mode: RunMode,
    params: &UpgradeParams,
    input: &StepInput<'_>,
    waits: &EksWaits,
) -> Result<StepOutputs, Failure> {
    let target = params.target;
    let opts = UpgradeOptions {
        force: params.force,
        wait: waits.update,
        durations: input.durations.clone(),
        goal: params.goal,
    };
    let progress = input.progress;
    match step {
        Step::Preflight => {
            let Some(inventory) = input.inventory else {
                return Err(fail(
                    "INVENTORY_MISSING",
                    false,
                    "preflight needs the agent's inventory, and the Inventory step's output cannot be read; start the upgrade again",
                ));
            };
            Ok(upgrade::preflight(eks, target, inventory, &opts, progress)
                .await?
                .outputs())
        }
        Step::UpgradeControlPlane => Ok(upgrade::upgrade_control_plane(eks, target, mode, &opts, progress)
            .await?
            .outputs()),
        Step::UpgradeNodegroups => Ok(upgrade::upgrade_nodegroups(eks, target, mode, &opts, progress)
            .await?
            .outputs()),
        Step::UpgradeAddons => {
            Ok(
                upgrade::upgrade_addons(eks, target, input.inventory, mode, &opts, progress)
                    .await?
                    .outputs(),
            )
        }
        _ => Err(fail(
            "NOT_A_COORDINATOR_STEP",
            false,
            format!("{step} is not an upgrade coordinator step"),
        )),
    }
}

/// Step 1: the managed node group from the template, then wait until it is ACTIVE.
async fn create_managed_nodegroup<E: Eks + ?Sized>(
    eks: &E,
    mode: RunMode,
    params: &MigrationParams,
    waits: &EksWaits,
    durations: Option<&UpdateDurations>,
) -> Result<StepOutputs, Failure> {
    let name = &params.nodegroup.nodegroup_name;
    let cluster = eks.cluster_name().to_string();
    // Look first, in either mode: a retry after a create whose answer was lost, or a re-check
    // after a restart, must not create twice.
    let existing = match eks.describe_nodegroup(name).await {
        Ok(ng) => Some(ng),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    // The create this attempt issued, if it did.
    let mut created = None;
    let mut subnets = params.nodegroup.subnets.clone();
    match existing {
        Some(ng) if ng.status.is_failed() => {
            return Err(fail(
                "NODEGROUP_FAILED",
                false,
                format!(
                    "node group {cluster}/{name} is {}: {}; delete it (aws eks delete-nodegroup) and start the migration again",
                    ng.status,
                    ng.health_issues.join("; ")
                ),
            ))
        }
        Some(ng) if ng.status == NodegroupStatus::Deleting => {
            return Err(fail(
                "NODEGROUP_DELETING",
                true,
                format!("node group {cluster}/{name} is being deleted; retrying once it is gone"),
            ))
        }
        Some(ng) => {
            tracing::info!(nodegroup = %name, status = %ng.status, ?mode, "node group exists; waiting for ACTIVE");
        }
        None => {
            // The group being replaced must exist before anything is created: a typo in
            // fromNodegroup would otherwise leave a new group and its instances behind.
            let old = old_group(eks, &params.from_nodegroup).await?;
            let mut template = params.nodegroup.clone();
            if template.subnets.is_empty() {
                subnets = old_group_subnets(&old, &params.from_nodegroup)?;
                template.subnets = subnets.clone();
            }
            let issued = Issued::now("nodegroup-create", 1);
            match eks.create_nodegroup(&template).await {
                Ok(_) => created = Some(issued),
                // Created concurrently (or by an earlier attempt whose answer was lost).
                Err(e) if e.code() == Some("ResourceInUseException") => {}
                Err(EksError::InvalidTemplate { field, reason }) => {
                    return Err(fail(
                        "INVALID_TEMPLATE",
                        false,
                        format!("work.migration.nodegroup.{field}: {reason}"),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
            tracing::info!(nodegroup = %name, subnets = ?template.subnets, "CreateNodegroup issued");
        }
    }
    pace_issued(durations, created.as_ref(), &waits.nodegroup, || async {
        Ok((eks.describe_nodegroup(name).await?.status != NodegroupStatus::Creating).then_some(()))
    })
    .await?;
    let ng = eks::wait_nodegroup(eks, name, NodegroupStatus::Active, &waits.nodegroup).await?;
    learn(durations, created.as_ref());
    Ok(outputs(
        format!(
            "node group {name} ACTIVE ({} nodes desired){}",
            ng.desired_size.unwrap_or_default(),
            if created.is_some() {
                ""
            } else {
                "; it already existed"
            }
        ),
        json!({"nodegroup": name, "status": ng.status.as_wire(), "created": created.is_some(), "subnets": subnets}),
    ))
}

/// The Auto Scaling group of the self-managed group being replaced; none is a failure that
/// names `fromNodegroup`.
async fn old_group<E: Eks + ?Sized>(eks: &E, from: &str) -> Result<AsgInfo, Failure> {
    eks.find_self_managed_asg(from).await?.ok_or_else(|| {
        fail(
            "NODE_GROUP_NOT_FOUND",
            false,
            format!(
                "work.migration.fromNodegroup: no Auto Scaling group is tagged as self-managed node group {from} of cluster {}; nothing was created; name an existing self-managed group",
                eks.cluster_name()
            ),
        )
    })
}

/// The subnets of the self-managed group being replaced, from its Auto Scaling group.
fn old_group_subnets(asg: &AsgInfo, from: &str) -> Result<Vec<String>, Failure> {
    if asg.subnets.is_empty() {
        return Err(fail(
            "SUBNETS_UNKNOWN",
            false,
            format!(
                "work.migration.nodegroup.subnets is empty and the Auto Scaling group {} of node group {from} lists no subnets; set the subnets in the template",
                asg.name
            ),
        ));
    }
    Ok(asg.subnets.clone())
}

/// Step 7: the old group's Auto Scaling group scaled to 0, its instances gone, then deleted.
async fn remove_self_managed_nodegroup<E: Eks + ?Sized>(
    eks: &E,
    params: &MigrationParams,
    waits: &EksWaits,
    durations: Option<&UpdateDurations>,
) -> Result<StepOutputs, Failure> {
    let from = &params.from_nodegroup;
    let Some(asg) = eks.find_self_managed_asg(from).await? else {
        return Ok(outputs(
            format!("no Auto Scaling group for node group {from}; already removed"),
            json!({"nodegroup": from, "removed": false}),
        ));
    };
    let name = asg.name.clone();
    let before = asg.desired_capacity;
    // The scale-in this attempt issued, if it did (and there were instances to terminate).
    let mut scaled = None;
    if asg.desired_capacity != 0 || asg.min_size != 0 || asg.max_size != 0 {
        let issued = Issued::now("asg-instances-terminate", 1);
        eks.scale_asg(
            &name,
            AsgSize {
                desired: 0,
                min: 0,
                max: 0,
            },
        )
        .await?;
        tracing::info!(asg = %name, before, "Auto Scaling group scaled to 0");
        scaled = (asg.instances > 0).then_some(issued);
    }
    let instances_left = || async {
        Ok(match eks.find_self_managed_asg(from).await? {
            Some(a) if a.instances > 0 => Err(format!("{} instances left", a.instances)),
            _ => Ok(()),
        })
    };
    pace_issued(durations, scaled.as_ref(), &waits.asg, || async {
        Ok(instances_left().await?.ok())
    })
    .await?;
    let what = format!("the instances of Auto Scaling group {name} to terminate");
    poll(&what, &waits.asg, instances_left).await?;
    learn(durations, scaled.as_ref());
    match eks.delete_asg(&name, false).await {
        Ok(()) => {}
        // Gone already (deleted by an earlier attempt whose answer was lost).
        Err(e) if e.code() == Some("ValidationError") && e.to_string().contains("not found") => {}
        Err(e) => return Err(e.into()),
    }
    let what = format!("Auto Scaling group {name} to be deleted");
    poll(&what, &waits.asg, || async {
        Ok(match eks.find_self_managed_asg(from).await? {
            Some(a) => Err(format!("{} still listed", a.name)),
            None => Ok(()),
        })
    })
    .await?;
    Ok(outputs(
        format!("Auto Scaling group {name} of node group {from} scaled from {before} to 0 and deleted"),
        json!({"nodegroup": from, "autoScalingGroup": name, "desiredBefore": before, "removed": true}),
    ))
}

/// Rollback: the new managed group deleted (after any create in progress has ended).
async fn delete_managed_nodegroup<E: Eks + ?Sized>(
    eks: &E,
    params: &MigrationParams,
    waits: &EksWaits,
    durations: Option<&UpdateDurations>,
) -> Result<StepOutputs, Failure> {
    let name = &params.nodegroup.nodegroup_name;
    let ng = match eks.describe_nodegroup(name).await {
        Ok(ng) => ng,
        Err(e) if e.is_not_found() => {
            return Ok(outputs(
                format!("node group {name} does not exist; nothing to delete"),
                json!({"nodegroup": name, "deleted": false}),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if ng.status == NodegroupStatus::Creating {
        // EKS refuses to delete a group while it is being created; let the create end first.
        let what = format!("node group {name} to finish creating");
        poll(&what, &waits.nodegroup, || async {
            match eks.describe_nodegroup(name).await {
                Ok(ng) if ng.status == NodegroupStatus::Creating => Ok(Err("CREATING".to_string())),
                Ok(_) => Ok(Ok(())),
                Err(e) if e.is_not_found() => Ok(Ok(())),
                Err(e) => Err(e),
            }
        })
        .await?;
    }
    // The delete this attempt issued, if it did.
    let mut deleted = None;
    if ng.status != NodegroupStatus::Deleting {
        let issued = Issued::now("nodegroup-delete", 1);
        match eks.delete_nodegroup(name).await {
            Ok(()) => deleted = Some(issued),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    pace_issued(durations, deleted.as_ref(), &waits.nodegroup, || async {
        match eks.describe_nodegroup(name).await {
            Ok(ng) => Ok((ng.status != NodegroupStatus::Deleting).then_some(())),
            Err(e) if e.is_not_found() => Ok(Some(())),
            Err(e) => Err(e),
        }
    })
    .await?;
    eks::wait_nodegroup_deleted(eks, name, &waits.nodegroup).await?;
    learn(durations, deleted.as_ref());
    Ok(outputs(
        format!("node group {name} deleted"),
        json!({"nodegroup": name, "deleted": true}),
    ))
}

/// Polls `check` (Ok(Ok) done, Ok(Err(seen)) not yet, Err a call failed) with backoff until done
/// or `opts.timeout`. Retryable call errors are waited through.
async fn poll<F, Fut>(what: &str, opts: &WaitOptions, mut check: F) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Result<(), String>, EksError>>,
{
    let start = tokio::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        let last = match check().await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(seen)) => seen,
            Err(e) if e.retryable() => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        let waited = start.elapsed();
        if waited >= opts.timeout {
            return Err(EksError::Timeout {
                what: what.to_string(),
                waited,
                last,
            }
            .into());
        }
        let delay = opts.backoff.delay(attempt, rand::random::<f64>());
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay.min(opts.timeout - waited)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eks::fake::FakeEks;

    fn params() -> Params {
        Params::Migration(Box::new(crate::params::tests::params()))
    }

    fn input(p: &Params) -> StepInput<'_> {
        StepInput {
            params: p,
            inventory: None,
            progress: &upgrade::NoProgress,
            durations: None,
        }
    }

    fn waits() -> EksWaits {
        let w = WaitOptions {
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(5),
                factor: 2.0,
                jitter: 0.0,
            },
            timeout: Duration::from_secs(5),
        };
        EksWaits {
            nodegroup: w,
            asg: w,
            update: w,
        }
    }

    fn size(n: i32) -> AsgSize {
        AsgSize {
            desired: n,
            min: n,
            max: n,
        }
    }

    #[tokio::test]
    async fn create_fills_subnets_from_the_old_group_and_is_idempotent() {
        let eks = FakeEks::new("c", "1.33");
        eks.add_self_managed_asg("asg-old", "ng-old", size(3));
        let out = run(
            &eks,
            Step::CreateManagedNodegroup,
            RunMode::Fresh,
            &input(&params()),
            &waits(),
        )
        .await
        .unwrap();
        assert!(out.summary.contains("ACTIVE"), "{out:?}");
        assert!(out.detail.unwrap().contains("subnet-ng-old-a"));
        // A re-check after a restart describes, finds it, and creates nothing.
        let out = run(
            &eks,
            Step::CreateManagedNodegroup,
            RunMode::Recheck,
            &input(&params()),
            &waits(),
        )
        .await
        .unwrap();
        assert!(out.summary.contains("already existed"), "{out:?}");
        let creates = eks
            .calls()
            .iter()
            .filter(|c| c.starts_with("CreateNodegroup"))
            .count();
        assert_eq!(creates, 1);
    }

    #[tokio::test]
    async fn create_refuses_a_missing_old_group_before_creating_anything() {
        let eks = FakeEks::new("c", "1.33");
        eks.add_self_managed_asg("asg-other", "ng-other", size(3));
        // Even with the subnets given, a typo in fromNodegroup creates nothing.
        let mut m = crate::params::tests::params();
        m.nodegroup.subnets = vec!["subnet-1".into()];
        let p = Params::Migration(Box::new(m));
        let err = run(
            &eks,
            Step::CreateManagedNodegroup,
            RunMode::Fresh,
            &input(&p),
            &waits(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, "NODE_GROUP_NOT_FOUND");
        assert!(!err.retryable);
        assert!(
            err.message.contains("work.migration.fromNodegroup") && err.message.contains("ng-old"),
            "{}",
            err.message
        );
        let calls = eks.calls();
        assert!(
            !calls.iter().any(|c| c.starts_with("CreateNodegroup")),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn remove_scales_to_zero_then_deletes_and_is_idempotent() {
        let eks = FakeEks::new("c", "1.33");
        eks.add_self_managed_asg("asg-old", "ng-old", size(3));
        let out = run(
            &eks,
            Step::RemoveSelfManagedNodegroup,
            RunMode::Fresh,
            &input(&params()),
            &waits(),
        )
        .await
        .unwrap();
        assert!(out.summary.contains("scaled from 3 to 0 and deleted"), "{out:?}");
        let calls = eks.calls();
        let scale = calls
            .iter()
            .position(|c| c.starts_with("UpdateAutoScalingGroup asg-old 0/0/0"));
        let delete = calls
            .iter()
            .position(|c| c.starts_with("DeleteAutoScalingGroup asg-old force=false"));
        assert!(scale.is_some() && delete.is_some() && scale < delete, "{calls:?}");
        let out = run(
            &eks,
            Step::RemoveSelfManagedNodegroup,
            RunMode::Recheck,
            &input(&params()),
            &waits(),
        )
        .await
        .unwrap();
        assert!(out.summary.contains("already removed"), "{out:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn node_group_create_and_delete_waits_are_paced_once_the_fleet_has_timed_them() {
        let p = params();
        let durations = UpdateDurations::default();
        let paced = StepInput {
            durations: Some(Arc::new(durations)),
            ..input(&p)
        };
        let durations = paced.durations.as_deref().expect("set");
        let mut w = waits();
        w.nodegroup = WaitOptions {
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(5),
                factor: 2.0,
                jitter: 0.0,
            },
            timeout: Duration::from_secs(600),
        };
        let eks = FakeEks::new("c", "1.33");
        eks.add_self_managed_asg("asg-old", "ng-old", size(3));
        let describes = |eks: &FakeEks| {
            eks.calls()
                .iter()
                .filter(|c| c.starts_with("DescribeNodegroup"))
                .count()
        };
        // Not yet timed: the look for an existing group, then the backoff's polls (0 s, 1 s,
        // 3 s; CREATING for two of them); the create's 3 s is learnt.
        let t = tokio::time::Instant::now();
        run(&eks, Step::CreateManagedNodegroup, RunMode::Fresh, &paced, &w)
            .await
            .unwrap();
        assert_eq!((describes(&eks), t.elapsed()), (4, Duration::from_secs(3)));
        assert_eq!(durations.low("nodegroup-create"), None);
        // Later creates took a minute (the last 32 count), deletes 40 s.
        for _ in 0..32 {
            durations.record("nodegroup-create", Duration::from_secs(60));
        }
        for _ in 0..3 {
            durations.record("nodegroup-delete", Duration::from_secs(40));
        }
        // Timed: the look, the early look at 1 s (CREATING), then nothing until one backoff
        // step short of the 60 s such creates took, when it is ACTIVE.
        let eks = FakeEks::new("c", "1.33");
        eks.add_self_managed_asg("asg-old", "ng-old", size(3));
        eks.with_state(|s| s.polls = 1);
        let t = tokio::time::Instant::now();
        run(&eks, Step::CreateManagedNodegroup, RunMode::Fresh, &paced, &w)
            .await
            .unwrap();
        assert_eq!((describes(&eks), t.elapsed()), (3, Duration::from_secs(59)));
        // The rollback's delete likewise: the look, the early look, then at 39 s it is gone.
        let t = tokio::time::Instant::now();
        let out = run(&eks, Step::DeleteManagedNodegroup, RunMode::Fresh, &paced, &w)
            .await
            .unwrap();
        assert!(out.summary.contains("deleted"), "{out:?}");
        assert_eq!((describes(&eks), t.elapsed()), (6, Duration::from_secs(39)));
        // Both ends are learnt: the delete's 39 s is now the shortest of four; one 59 s create
        // among 31 of 60 s leaves their 10th percentile at 60 s.
        assert_eq!(durations.low("nodegroup-create"), Some(Duration::from_secs(60)));
        assert_eq!(durations.low("nodegroup-delete"), Some(Duration::from_secs(39)));
    }

    #[tokio::test]
    async fn throttling_is_retryable_and_agent_steps_are_refused() {
        let eks = FakeEks::new("c", "1.33");
        eks.fail_next(EksError::Api {
            operation: "DescribeNodegroup",
            resource: "nodegroup c/ng-new".into(),
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
            status: Some(400),
        });
        let err = run(
            &eks,
            Step::DeleteManagedNodegroup,
            RunMode::Fresh,
            &input(&params()),
            &waits(),
        )
        .await
        .unwrap_err();
        assert!(err.retryable && err.code == "EKS_API_RETRYABLE", "{err:?}");
        let out = run(
            &eks,
            Step::DeleteManagedNodegroup,
            RunMode::Fresh,
            &input(&params()),
            &waits(),
        )
        .await
        .unwrap();
        assert!(out.summary.contains("nothing to delete"));
        let err = run(&eks, Step::Drain, RunMode::Fresh, &input(&params()), &waits())
            .await
            .unwrap_err();
        assert_eq!(err.code, "NOT_A_COORDINATOR_STEP");
    }
}
