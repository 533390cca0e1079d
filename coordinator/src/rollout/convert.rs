//! Rollout state to the wire: `Rollout`, `Stage` and `ClusterState` messages for GetRollout,
//! ListRollouts and WatchRollout, the `RolloutEvent` changes between two states, and the spec
//! back to a `CreateRolloutRequest` (it round-trips through [`RolloutSpec::from_proto`]).

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use jiff::Timestamp;

use super::spec::{Concurrency, MigrationSpec, OnBlocked, RolloutSpec, StageSpec, Surge, Work};
use super::state::{ClusterRun, Rollout, RolloutState};
use crate::eks::{NodegroupTemplate, TaintEffect};

/// The wire enum of a rollout, stage or cluster state.
pub fn state_to_proto(s: RolloutState) -> pb::RolloutState {
    match s {
        RolloutState::Pending => pb::RolloutState::Pending,
        RolloutState::Running => pb::RolloutState::Running,
        RolloutState::WaitingForApproval => pb::RolloutState::WaitingForApproval,
        RolloutState::Soaking => pb::RolloutState::Soaking,
        RolloutState::Succeeded => pb::RolloutState::Succeeded,
        RolloutState::Failed => pb::RolloutState::Failed,
        RolloutState::Skipped => pb::RolloutState::Skipped,
        RolloutState::Paused => pb::RolloutState::Paused,
        RolloutState::Cancelled => pb::RolloutState::Cancelled,
    }
}

/// The domain state of a wire state (`None` for `UNSPECIFIED` or an unknown number), e.g. for
/// ListRollouts' state filter.
pub fn state_from_proto(value: i32) -> Option<RolloutState> {
    Some(match pb::RolloutState::try_from(value).ok()? {
        pb::RolloutState::Unspecified => return None,
        pb::RolloutState::Pending => RolloutState::Pending,
        pb::RolloutState::Running => RolloutState::Running,
        pb::RolloutState::WaitingForApproval => RolloutState::WaitingForApproval,
        pb::RolloutState::Soaking => RolloutState::Soaking,
        pb::RolloutState::Succeeded => RolloutState::Succeeded,
        pb::RolloutState::Failed => RolloutState::Failed,
        pb::RolloutState::Skipped => RolloutState::Skipped,
        pb::RolloutState::Paused => RolloutState::Paused,
        pb::RolloutState::Cancelled => RolloutState::Cancelled,
    })
}

/// The whole rollout, as GetRollout answers and WatchRollout's first event carries it.
pub fn rollout_to_proto(r: &Rollout) -> pb::Rollout {
    pb::Rollout {
        id: r.id.clone(),
        name: r.spec.name.clone(),
        work: Some(work_to_proto(&r.spec.work)),
        state: state_to_proto(r.state()) as i32,
        stages: (0..r.stages.len()).map(|k| stage_to_proto(r, k)).collect(),
        created_by: r.created_by.clone(),
        created_at: Some(timestamp(r.created_at)),
        finished_at: r.finished_at.map(timestamp),
        reason: r.reason().unwrap_or_default(),
        selector: r.spec.selector.to_string(),
        agent_disconnect_timeout: Some(duration(r.spec.agent_disconnect_timeout)),
        unstaged: r.unstaged.iter().map(|c| cluster_to_proto(r, None, c)).collect(),
    }
}

/// Stage `index` with its clusters (panics if out of range, like indexing).
pub fn stage_to_proto(r: &Rollout, index: usize) -> pb::Stage {
    let stage = &r.stages[index];
    pb::Stage {
        index: index as u32,
        spec: Some(stage_spec_to_proto(&r.spec.stages[index])),
        state: state_to_proto(r.stage_state(index)) as i32,
        clusters: stage
            .clusters
            .iter()
            .map(|c| cluster_to_proto(r, Some(index), c))
            .collect(),
        failures: r.stage_failures(index) as u32,
        approved_by: stage.approval.as_ref().map(|a| a.by.clone()).unwrap_or_default(),
        started_at: stage.started_at.map(timestamp),
        soak_until: stage.soak_until.map(timestamp),
        finished_at: stage.finished_at.map(timestamp),
    }
}

/// One cluster's part (`stage`: its stage's index, `None` for an unstaged cluster). `progress`
/// is left empty: the caller may fill it from the running operation's latest report.
pub fn cluster_to_proto(r: &Rollout, stage: Option<usize>, c: &ClusterRun) -> pb::ClusterState {
    let failure = c.failure.as_ref();
    let error = failure.and_then(|f| {
        let code = pb::step_error::Code::from_str_name(f.code.as_deref()?)?;
        Some(pb::StepError {
            code: code as i32,
            message: f.reason.clone(),
            ..Default::default()
        })
    });
    pb::ClusterState {
        cluster_id: c.name.clone(),
        state: state_to_proto(r.cluster_state(stage, c)) as i32,
        operation_id: c.operation.as_ref().map(|o| o.id.clone()),
        current_step: c.step.as_deref().map_or(0, |s| step_kind(s) as i32),
        progress: None,
        failed_step: failure
            .and_then(|f| f.step.as_deref())
            .map_or(0, |s| step_kind(s) as i32),
        error,
        reason: c.reason.clone().unwrap_or_default(),
        started_at: c.started_at.map(timestamp),
        finished_at: c.finished_at.map(timestamp),
    }
}

/// The wire step kind of a step as the plans name it (`UpgradeControlPlane`, `Drain`); also
/// accepts the wire's own spelling. Unknown names are `UNSPECIFIED`.
pub fn step_kind(step: &str) -> pb::OperationStepKind {
    let mut snake = String::with_capacity(step.len() + 8);
    let mut prev_lower = false;
    for ch in step.chars() {
        if ch.is_ascii_uppercase() && prev_lower {
            snake.push('_');
        }
        prev_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        snake.push(ch.to_ascii_uppercase());
    }
    let name = if snake.starts_with("OPERATION_STEP_KIND_") {
        snake
    } else {
        format!("OPERATION_STEP_KIND_{snake}")
    };
    pb::OperationStepKind::from_str_name(&name).unwrap_or(pb::OperationStepKind::Unspecified)
}

/// What changed between two states of one rollout, as WatchRollout events (without sequence
/// numbers): each changed stage (its spec, state, approval, soak, timing), each changed cluster,
/// and the rollout's state when it changed. Nothing when the two are equal.
pub fn changes(before: &Rollout, after: &Rollout) -> Vec<pb::rollout_event::Event> {
    use pb::rollout_event::Event;
    let mut out = Vec::new();
    for k in 0..after.stages.len() {
        let (b, a) = (before.stages.get(k), &after.stages[k]);
        let stage_changed = b.is_none_or(|b| {
            b.status != a.status
                || b.approval != a.approval
                || b.started_at != a.started_at
                || b.finished_at != a.finished_at
                || b.soak_until != a.soak_until
                || b.reason != a.reason
        }) || before.stage_state(k) != after.stage_state(k);
        if stage_changed {
            let mut stage = stage_to_proto(after, k);
            stage.clusters.clear();
            out.push(Event::Stage(stage));
        }
        // A cluster's shown state also depends on its stage's and the rollout's (pending ones
        // show WaitingForApproval or Paused); otherwise a cluster still shared with `before` is
        // unchanged.
        let context_changed =
            stage_changed || before.paused.is_some() != after.paused.is_some() || before.phase != after.phase;
        for (i, c) in a.clusters.iter().enumerate() {
            let shared = b
                .and_then(|b| b.clusters.get(i))
                .is_some_and(|o| Arc::ptr_eq(o, c));
            if shared && !context_changed {
                continue;
            }
            let old = b.and_then(|b| {
                b.clusters
                    .binary_search_by(|x| x.name.cmp(&c.name))
                    .ok()
                    .map(|i| &b.clusters[i])
            });
            let changed = old.is_none_or(|o| {
                o != c || before.cluster_state(Some(k), o) != after.cluster_state(Some(k), c)
            });
            if changed {
                out.push(Event::Cluster(cluster_to_proto(after, Some(k), c)));
            }
        }
    }
    for c in &after.unstaged {
        if !before.unstaged.contains(c) {
            out.push(Event::Cluster(cluster_to_proto(after, None, c)));
        }
    }
    if before.state() != after.state() {
        out.push(Event::State(state_to_proto(after.state()) as i32));
    }
    out
}

// === spec to the wire ===

/// The spec as a `CreateRolloutRequest` (what `flotilla rollout get -o yaml` can show).
pub fn spec_to_request(spec: &RolloutSpec) -> pb::CreateRolloutRequest {
    pb::CreateRolloutRequest {
        name: spec.name.clone(),
        work: Some(work_to_proto(&spec.work)),
        stages: spec.stages.iter().map(stage_spec_to_proto).collect(),
        start_paused: spec.start_paused,
        selector: spec.selector.to_string(),
        agent_disconnect_timeout: Some(duration(spec.agent_disconnect_timeout)),
    }
}

/// A stage's spec on the wire.
pub fn stage_spec_to_proto(s: &StageSpec) -> pb::StageSpec {
    let (max_parallel, max_parallel_percent) = match s.max_concurrency {
        Concurrency::Count(n) => (n, 0),
        Concurrency::Percent(p) => (0, p),
    };
    pb::StageSpec {
        name: s.name.clone(),
        selector: s.selector.to_string(),
        max_parallel,
        soak: Some(duration(s.soak)),
        max_failures: s.max_failures,
        require_approval: s.require_approval,
        max_parallel_percent,
    }
}

/// The work on the wire.
pub fn work_to_proto(w: &Work) -> pb::Work {
    let kind = match w {
        Work::Migration(m) => pb::work::Kind::Migration(migration_to_proto(m)),
        Work::Upgrade(u) => pb::work::Kind::Upgrade(pb::UpgradeParams {
            target_version: u.target.to_string(),
            force: u.force,
            migrate_self_managed: u.migrate_self_managed,
            migration: u.migration.as_ref().map(migration_to_proto),
        }),
    };
    pb::Work { kind: Some(kind) }
}

/// Migration parameters on the wire.
pub fn migration_to_proto(m: &MigrationSpec) -> pb::MigrationParams {
    pb::MigrationParams {
        from_nodegroup: m.from_nodegroup.clone().unwrap_or_default(),
        nodegroup: Some(template_to_proto(&m.nodegroup)),
        taint_key: m.taint_key.clone(),
        surge: Some(match m.surge {
            Surge::Percent(p) => pb::migration_params::Surge::SurgePercent(p),
            Surge::Count(n) => pb::migration_params::Surge::SurgeCount(n),
        }),
        ready_timeout: m.ready_timeout.map(duration),
        drain_concurrency: m.drain_concurrency.unwrap_or(0),
        node_timeout: m.node_timeout.map(duration),
        on_blocked: Some(pb::OnBlocked {
            policy: Some(match m.on_blocked {
                OnBlocked::Fail => pb::on_blocked::Policy::Fail(pb::on_blocked::Fail {}),
                OnBlocked::ForceAfter(d) => pb::on_blocked::Policy::ForceAfter(duration(d)),
                OnBlocked::SkipNode => pb::on_blocked::Policy::SkipNode(pb::on_blocked::SkipNode {}),
            }),
        }),
        delete_emptydir_data: m.delete_emptydir_data,
        force: m.force,
        delete_nodegroup_on_rollback: m.delete_nodegroup_on_rollback,
    }
}

fn template_to_proto(t: &NodegroupTemplate) -> pb::NodegroupTemplate {
    pb::NodegroupTemplate {
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
            .map(|taint| pb::NodegroupTaint {
                key: taint.key.clone(),
                value: taint.value.clone().unwrap_or_default(),
                effect: match taint.effect {
                    TaintEffect::NoSchedule => "NO_SCHEDULE",
                    TaintEffect::NoExecute => "NO_EXECUTE",
                    TaintEffect::PreferNoSchedule => "PREFER_NO_SCHEDULE",
                }
                .to_string(),
            })
            .collect(),
        ami_type: t.ami_type.clone().unwrap_or_default(),
        capacity_type: t.capacity_type.clone().unwrap_or_default(),
        update_config: t.update_config.map(|u| pb::NodegroupUpdateConfig {
            max_unavailable: u.max_unavailable,
            max_unavailable_percentage: u.max_unavailable_percentage,
        }),
    }
}

/// A wire timestamp.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

/// A wire duration (saturating at `i64::MAX` seconds).
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::selector::Selector;
    use super::super::spec::{MinorVersion, UpgradeSpec};
    use super::super::state::{next, ClusterFacts, ClusterInventory, Event, Outcome};
    use super::*;
    use crate::eks::{ScalingConfig, Taint, UpdateConfig};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }

    fn full_migration() -> MigrationSpec {
        MigrationSpec {
            from_nodegroup: Some("ng-old".into()),
            nodegroup: NodegroupTemplate {
                nodegroup_name: "ng-new".into(),
                instance_types: vec!["m6i.large".into(), "m5.large".into()],
                scaling_config: ScalingConfig {
                    min_size: 1,
                    max_size: 5,
                    desired_size: 3,
                },
                subnets: vec!["subnet-1".into()],
                node_role: "arn:aws:iam::1:role/nodes".into(),
                labels: BTreeMap::from([("pool".to_string(), "general".to_string())]),
                taints: vec![Taint {
                    key: "dedicated".into(),
                    value: Some("web".into()),
                    effect: TaintEffect::PreferNoSchedule,
                }],
                ami_type: Some("AL2023_x86_64_STANDARD".into()),
                capacity_type: Some("SPOT".into()),
                update_config: Some(UpdateConfig {
                    max_unavailable: None,
                    max_unavailable_percentage: Some(20),
                }),
            },
            taint_key: "example.com/moving".into(),
            surge: Surge::Count(2),
            ready_timeout: Some(Duration::from_secs(900)),
            drain_concurrency: Some(4),
            node_timeout: Some(Duration::from_secs(1200)),
            on_blocked: OnBlocked::ForceAfter(Duration::from_secs(600)),
            delete_emptydir_data: true,
            force: true,
            delete_nodegroup_on_rollback: true,
        }
    }

    fn spec() -> RolloutSpec {
        RolloutSpec {
            name: "q3".into(),
            work: Work::Upgrade(UpgradeSpec {
                target: MinorVersion::parse_target("1.35").expect("valid"),
                force: true,
                migrate_self_managed: true,
                migration: Some(full_migration()),
            }),
            selector: Selector::parse("team=web").expect("valid"),
            stages: vec![
                StageSpec {
                    name: "dev".into(),
                    selector: Selector::parse("env=dev").expect("valid"),
                    max_concurrency: Concurrency::Percent(50),
                    soak: Duration::from_secs(600),
                    max_failures: 2,
                    require_approval: false,
                },
                StageSpec {
                    name: "prod".into(),
                    selector: Selector::parse("env in (prod)").expect("valid"),
                    max_concurrency: Concurrency::Count(1),
                    soak: Duration::ZERO,
                    max_failures: 1,
                    require_approval: true,
                },
            ],
            agent_disconnect_timeout: Duration::from_secs(120),
            start_paused: false,
        }
    }

    fn facts(name: &str, env: &str, version: &str) -> ClusterFacts {
        ClusterFacts {
            name: name.into(),
            labels: BTreeMap::from([("env".into(), env.into()), ("team".into(), "web".into())]),
            connected: true,
            last_seen: None,
            inventory: Some(ClusterInventory {
                version: version.into(),
                self_managed_nodegroups: vec![],
            }),
        }
    }

    #[test]
    fn specs_roundtrip_through_the_wire() {
        let s = spec();
        assert_eq!(RolloutSpec::from_proto(&spec_to_request(&s)).expect("valid"), s);
        let mut m = spec();
        m.work = Work::Migration(full_migration());
        assert_eq!(RolloutSpec::from_proto(&spec_to_request(&m)).expect("valid"), m);
    }

    #[test]
    fn step_names_map_to_wire_kinds() {
        assert_eq!(
            step_kind("UpgradeControlPlane"),
            pb::OperationStepKind::UpgradeControlPlane
        );
        assert_eq!(step_kind("Drain"), pb::OperationStepKind::Drain);
        assert_eq!(
            step_kind("RemoveSelfManagedNodegroup"),
            pb::OperationStepKind::RemoveSelfManagedNodegroup
        );
        assert_eq!(
            step_kind("WAIT_NODES_READY"),
            pb::OperationStepKind::WaitNodesReady
        );
        assert_eq!(step_kind("nonsense"), pb::OperationStepKind::Unspecified);
        for s in [
            RolloutState::Pending,
            RolloutState::Paused,
            RolloutState::Cancelled,
        ] {
            assert_eq!(state_from_proto(state_to_proto(s) as i32), Some(s));
        }
        assert_eq!(state_from_proto(0), None);
    }

    #[test]
    fn a_rollout_on_the_wire() {
        let mut s = spec();
        s.work = Work::Upgrade(UpgradeSpec {
            target: MinorVersion::parse_target("1.35").expect("valid"),
            force: false,
            migrate_self_managed: false,
            migration: None,
        });
        let r = Rollout::new("r7", s, "alice", t(0));
        let mut lab = facts("lab", "lab", "1.34");
        lab.labels.insert("team".into(), "web".into());
        let clusters = vec![
            facts("d1", "dev", "1.34"),
            facts("d2", "dev", "1.35"),
            facts("p1", "prod", "1.34"),
            lab,
        ];
        let (r, _) = next(&r, &Event::Start { clusters }, t(1));
        let (r, _) = next(
            &r,
            &Event::StepChanged {
                cluster: "d1".into(),
                operation_id: "r7/d1/1".into(),
                step: "Preflight".into(),
            },
            t(2),
        );
        let before = r.clone();
        let (r, _) = next(
            &r,
            &Event::OperationFinished {
                cluster: "d1".into(),
                operation_id: "r7/d1/1".into(),
                outcome: Outcome::Failed {
                    step: "Drain".into(),
                    code: Some("DRAIN_BLOCKED".into()),
                    reason: "pod a/web-1 blocked by PDB a/web".into(),
                },
            },
            t(3),
        );
        let p = rollout_to_proto(&r);
        assert_eq!(
            (p.id.as_str(), p.name.as_str(), p.created_by.as_str()),
            ("r7", "q3", "alice")
        );
        assert_eq!(p.selector, "team=web");
        assert_eq!(p.agent_disconnect_timeout.map(|d| d.seconds), Some(120));
        assert_eq!(p.unstaged.len(), 1);
        assert_eq!(p.unstaged[0].state, pb::RolloutState::Skipped as i32);
        let dev = &p.stages[0];
        assert_eq!(dev.failures, 1);
        assert_eq!(dev.spec.as_ref().map(|s| s.max_parallel_percent), Some(50));
        let d1 = &dev.clusters[0];
        assert_eq!(d1.cluster_id, "d1");
        assert_eq!(d1.state, pb::RolloutState::Failed as i32);
        assert_eq!(d1.operation_id.as_deref(), Some("r7/d1/1"));
        assert_eq!(d1.failed_step, pb::OperationStepKind::Drain as i32);
        let err = d1.error.as_ref().expect("typed error");
        assert_eq!(err.code, pb::step_error::Code::DrainBlocked as i32);
        assert!(d1.reason.contains("failed at Drain"));
        let d2 = &dev.clusters[1];
        assert_eq!(d2.state, pb::RolloutState::Succeeded as i32);
        assert_eq!(d2.reason, "already at 1.35");
        // maxFailures 2 not reached: the stage is done (soaking) and prod waits behind it.
        assert_eq!(dev.state, pb::RolloutState::Soaking as i32);
        assert!(dev.soak_until.is_some());
        assert_eq!(p.state, pb::RolloutState::Soaking as i32);
        assert_eq!(p.stages[1].state, pb::RolloutState::Pending as i32);

        // The changes since before: d1 failed, which let d2 (50% of 2 = 1 at a time) take its
        // turn and find nothing to do; the dev stage and the rollout's state changed too.
        let events = changes(&before, &r);
        let clusters: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                pb::rollout_event::Event::Cluster(c) => Some(c.cluster_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(clusters, ["d1", "d2"]);
        assert!(events.iter().any(
            |e| matches!(e, pb::rollout_event::Event::Stage(s) if s.index == 0 && s.clusters.is_empty())
        ));
        assert!(events.contains(&pb::rollout_event::Event::State(pb::RolloutState::Soaking as i32)));
        assert!(changes(&r, &r).is_empty());
    }

    #[test]
    fn times_convert_exactly() {
        let ts = Timestamp::new(1_800_000_000, 123_456_789).expect("valid");
        assert_eq!(
            timestamp(ts),
            prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 123_456_789
            }
        );
        assert_eq!(
            duration(Duration::from_millis(1500)),
            prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
    }
}
