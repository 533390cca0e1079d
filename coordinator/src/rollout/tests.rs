//! Unit and property-style tests of the rollout state machine.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::spec::{OnBlocked, Surge, DEFAULT_TAINT_KEY};
use super::state::{Failure, Stop};
use super::*;
use crate::eks::{NodegroupTemplate, ScalingConfig};

// === fixtures ===

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid timestamp")
}

fn at(secs: u64) -> Timestamp {
    t0().checked_add(Duration::from_secs(secs)).expect("in range")
}

fn v(s: &str) -> MinorVersion {
    MinorVersion::parse_target(s).expect("valid version")
}

fn migration_spec() -> MigrationSpec {
    MigrationSpec {
        from_nodegroup: None,
        nodegroup: NodegroupTemplate {
            nodegroup_name: "ng-new".into(),
            instance_types: vec!["m6i.large".into()],
            scaling_config: ScalingConfig {
                min_size: 1,
                max_size: 4,
                desired_size: 2,
            },
            subnets: vec![],
            node_role: "arn:aws:iam::111122223333:role/nodes".into(),
            labels: BTreeMap::new(),
            taints: vec![],
            ami_type: None,
            capacity_type: None,
            update_config: None,
        },
        taint_key: DEFAULT_TAINT_KEY.into(),
        surge: Surge::Percent(100),
        ready_timeout: None,
        drain_concurrency: None,
        node_timeout: None,
        on_blocked: OnBlocked::Fail,
        delete_emptydir_data: false,
        force: false,
        delete_nodegroup_on_rollback: false,
    }
}

fn upgrade(target: &str, migrate: bool) -> Work {
    Work::Upgrade(UpgradeSpec {
        target: v(target),
        force: false,
        migrate_self_managed: migrate,
        migration: migrate.then(migration_spec),
    })
}

fn stage(name: &str, selector: &str) -> StageSpec {
    StageSpec {
        name: name.into(),
        selector: Selector::parse(selector).expect("valid selector"),
        max_concurrency: Concurrency::Count(1),
        soak: Duration::ZERO,
        max_failures: 1,
        require_approval: false,
    }
}

fn spec(work: Work, stages: Vec<StageSpec>) -> RolloutSpec {
    RolloutSpec {
        name: "test".into(),
        work,
        selector: Selector::everything(),
        stages,
        agent_disconnect_timeout: Duration::from_secs(600),
        start_paused: false,
    }
}

fn cluster(name: &str, env: &str, version: &str) -> ClusterFacts {
    ClusterFacts {
        name: name.into(),
        labels: [("env".to_string(), env.to_string())].into(),
        connected: true,
        last_seen: Some(t0()),
        inventory: Some(ClusterInventory {
            version: version.into(),
            self_managed_nodegroups: vec![],
        }),
    }
}

fn with_groups(mut c: ClusterFacts, groups: &[&str]) -> ClusterFacts {
    if let Some(inv) = c.inventory.as_mut() {
        inv.self_managed_nodegroups = groups.iter().map(|g| g.to_string()).collect();
    }
    c
}

fn started(spec: RolloutSpec, clusters: Vec<ClusterFacts>) -> (Rollout, Vec<Action>) {
    let r = Rollout::new("r1", spec, "tester", t0());
    next(&r, &Event::Start { clusters }, t0())
}

/// The (cluster, operation id) of every StartOperation in `actions`.
fn starts(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartOperation {
                cluster,
                operation_id,
                ..
            } => Some((cluster.clone(), operation_id.clone())),
            _ => None,
        })
        .collect()
}

fn start_works(actions: &[Action]) -> Vec<OperationWork> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartOperation { work, .. } => Some(work.clone()),
            _ => None,
        })
        .collect()
}

fn finished(cluster: &str, op: &str, outcome: Outcome) -> Event {
    Event::OperationFinished {
        cluster: cluster.into(),
        operation_id: op.into(),
        outcome,
    }
}

fn failed(step: &str) -> Outcome {
    Outcome::Failed {
        step: step.into(),
        code: Some("DRAIN_BLOCKED".into()),
        reason: "pod web-1 blocked by PDB web".into(),
    }
}

fn status(r: &Rollout, name: &str) -> ClusterStatus {
    let (k, i) = r.find(name).expect("cluster in rollout");
    r.stages[k].clusters[i].status
}

fn run(r: &Rollout, name: &str) -> ClusterRun {
    let (k, i) = r.find(name).expect("cluster in rollout");
    (*r.stages[k].clusters[i]).clone()
}

// === membership and planning ===

#[test]
fn clusters_join_the_first_matching_stage() {
    let mut s = spec(
        upgrade("1.35", false),
        vec![
            stage("canary", "canary"),
            stage("dev", "env=dev"),
            stage("rest", ""),
        ],
    );
    s.selector = Selector::parse("env!=lab").expect("valid");
    let mut c1 = cluster("a-dev", "dev", "1.34");
    c1.labels.insert("canary".into(), "true".into());
    let (r, _) = started(
        s,
        vec![
            c1,
            cluster("b-dev", "dev", "1.34"),
            cluster("c-prod", "prod", "1.34"),
            cluster("d-lab", "lab", "1.34"),
        ],
    );
    let names = |k: usize| {
        r.stages[k]
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(0), ["a-dev"]);
    assert_eq!(names(1), ["b-dev"]);
    assert_eq!(names(2), ["c-prod"]);
    assert!(r.find("d-lab").is_none());
    assert!(r.unstaged.is_empty());
}

#[test]
fn clusters_the_rollout_selects_but_no_stage_does_are_skipped() {
    let mut s = spec(upgrade("1.35", false), vec![stage("dev", "env=dev")]);
    s.selector = Selector::parse("team=web").expect("valid");
    let mut web_prod = cluster("web-prod", "prod", "1.34");
    web_prod.labels.insert("team".into(), "web".into());
    let mut web_dev = cluster("web-dev", "dev", "1.34");
    web_dev.labels.insert("team".into(), "web".into());
    let (r, _) = started(s, vec![web_prod, web_dev, cluster("data-dev", "dev", "1.34")]);
    assert_eq!(r.unstaged.len(), 1);
    assert_eq!(r.unstaged[0].name, "web-prod");
    assert_eq!(r.unstaged[0].status, ClusterStatus::Skipped);
    assert!(r.unstaged[0].reason.as_deref().unwrap_or("").contains("no stage"));
    assert!(r.find("data-dev").is_none());
    assert_eq!(status(&r, "web-dev"), ClusterStatus::Running);
}

#[test]
fn upgrade_runs_one_operation_per_minor_hop() {
    let (r, actions) = started(
        spec(upgrade("1.35", false), vec![stage("all", "")]),
        vec![cluster("a", "dev", "v1.33.4-eks-1")],
    );
    assert_eq!(starts(&actions), [("a".to_string(), "r1/a/1".to_string())]);
    assert_eq!(
        start_works(&actions),
        [OperationWork::Upgrade {
            from: v("1.33"),
            to: v("1.34"),
            force: false,
            goal: v("1.35"),
        }]
    );
    assert_eq!(run(&r, "a").plan.len(), 2);
    let (r, actions) = next(&r, &finished("a", "r1/a/1", Outcome::Succeeded), at(10));
    assert_eq!(starts(&actions), [("a".to_string(), "r1/a/2".to_string())]);
    assert_eq!(
        start_works(&actions),
        [OperationWork::Upgrade {
            from: v("1.34"),
            to: v("1.35"),
            force: false,
            goal: v("1.35"),
        }]
    );
    let (r, _) = next(&r, &finished("a", "r1/a/2", Outcome::Succeeded), at(20));
    assert_eq!(status(&r, "a"), ClusterStatus::Succeeded);
    assert_eq!(r.phase, Phase::Succeeded);
    assert_eq!(r.state(), RolloutState::Succeeded);
    assert_eq!(r.finished_at, Some(at(20)));
}

#[test]
fn upgrade_migrates_self_managed_groups_first_when_asked() {
    let (_, actions) = started(
        spec(upgrade("1.35", true), vec![stage("all", "")]),
        vec![with_groups(cluster("a", "dev", "1.34"), &["ng-old"])],
    );
    assert!(matches!(start_works(&actions)[..], [OperationWork::Migration(_)]));
    // Without migrateSelfManaged the upgrade goes straight on (its preflight will object).
    let (_, actions) = started(
        spec(upgrade("1.35", false), vec![stage("all", "")]),
        vec![with_groups(cluster("a", "dev", "1.34"), &["ng-old"])],
    );
    assert!(matches!(
        start_works(&actions)[..],
        [OperationWork::Upgrade { .. }]
    ));
}

#[test]
fn clusters_at_or_past_the_target_do_nothing() {
    let (r, actions) = started(
        spec(upgrade("1.35", false), vec![stage("all", "")]),
        vec![cluster("at", "dev", "1.35"), cluster("past", "dev", "1.36")],
    );
    assert!(starts(&actions).is_empty());
    assert_eq!(status(&r, "at"), ClusterStatus::Succeeded);
    assert_eq!(run(&r, "at").reason.as_deref(), Some("already at 1.35"));
    assert_eq!(status(&r, "past"), ClusterStatus::Skipped);
    assert!(run(&r, "past")
        .reason
        .unwrap_or_default()
        .contains("newer than the target"));
    assert_eq!(r.phase, Phase::Succeeded);
}

#[test]
fn unknown_version_fails_the_cluster() {
    let mut c = cluster("a", "dev", "1.34");
    c.inventory = None;
    let (r, _) = started(spec(upgrade("1.35", false), vec![stage("all", "")]), vec![c]);
    assert_eq!(status(&r, "a"), ClusterStatus::Failed);
    assert!(run(&r, "a")
        .failure
        .expect("failure")
        .reason
        .contains("version is unknown"));
    assert!(matches!(r.phase, Phase::Failed { .. }));
}

#[test]
fn migration_skips_clusters_without_the_group_and_fails_ambiguous_ones() {
    let (r, actions) = started(
        spec(Work::Migration(migration_spec()), vec![stage("all", "")]),
        vec![
            with_groups(cluster("done", "dev", "1.34"), &[]),
            with_groups(cluster("two", "dev", "1.34"), &["a", "b"]),
        ],
    );
    assert!(starts(&actions).is_empty());
    assert_eq!(status(&r, "done"), ClusterStatus::Skipped);
    assert_eq!(status(&r, "two"), ClusterStatus::Failed);
    assert!(run(&r, "two")
        .failure
        .expect("failure")
        .reason
        .contains("fromNodegroup"));

    let mut m = migration_spec();
    m.from_nodegroup = Some("b".into());
    let (r, actions) = started(
        spec(Work::Migration(m), vec![stage("all", "")]),
        vec![with_groups(cluster("two", "dev", "1.34"), &["a", "b"])],
    );
    assert_eq!(starts(&actions).len(), 1);
    assert_eq!(status(&r, "two"), ClusterStatus::Running);
}

// === concurrency, stages, soak, approval ===

#[test]
fn concurrency_is_a_count_or_a_rounded_up_percentage() {
    let fleet: Vec<_> = (0..10)
        .map(|i| cluster(&format!("c{i:02}"), "dev", "1.34"))
        .collect();
    let mut st = stage("all", "");
    st.max_concurrency = Concurrency::Count(3);
    let (_, actions) = started(spec(upgrade("1.35", false), vec![st.clone()]), fleet.clone());
    assert_eq!(starts(&actions).len(), 3);
    st.max_concurrency = Concurrency::Percent(25);
    let (r, actions) = started(spec(upgrade("1.35", false), vec![st]), fleet);
    let s = starts(&actions);
    assert_eq!(s.len(), 3, "25% of 10 rounds up to 3");
    // One finishes: exactly one more starts, in name order.
    let (_, actions) = next(&r, &finished(&s[0].0, &s[0].1, Outcome::Succeeded), at(5));
    assert_eq!(starts(&actions), [("c03".to_string(), "r1/c03/1".to_string())]);
}

#[test]
fn soak_then_approval_gate_the_next_stage() {
    let mut dev = stage("dev", "env=dev");
    dev.soak = Duration::from_secs(300);
    let mut prod = stage("prod", "env=prod");
    prod.require_approval = true;
    let (r, actions) = started(
        spec(upgrade("1.35", false), vec![dev, prod]),
        vec![cluster("d", "dev", "1.34"), cluster("p", "prod", "1.34")],
    );
    assert_eq!(starts(&actions).len(), 1);
    let (r, _) = next(&r, &finished("d", "r1/d/1", Outcome::Succeeded), at(100));
    assert_eq!(r.stages[0].status, StageStatus::Soaking);
    assert_eq!(r.stages[0].soak_until, Some(at(400)));
    assert_eq!(r.state(), RolloutState::Soaking);
    assert_eq!(r.next_deadline(), Some(at(400)));
    let (r, actions) = next(&r, &Event::Tick, at(399));
    assert!(starts(&actions).is_empty());
    assert_eq!(r.stages[0].status, StageStatus::Soaking);
    let (r, actions) = next(&r, &Event::Tick, at(400));
    assert!(starts(&actions).is_empty());
    assert_eq!(r.stages[1].status, StageStatus::WaitingForApproval);
    assert_eq!(r.state(), RolloutState::WaitingForApproval);
    assert_eq!(
        r.cluster_state(Some(1), &run(&r, "p")),
        RolloutState::WaitingForApproval
    );
    // Approving the wrong stage is refused and ignored.
    let wrong = Event::Approve {
        stage: 0,
        by: "alice".into(),
        comment: String::new(),
    };
    assert!(matches!(
        r.check(&wrong, at(1000)),
        Err(CommandError::NoApprovalNeeded { .. })
    ));
    assert_eq!(next(&r, &wrong, at(401)).0, r);
    let approve = Event::Approve {
        stage: 1,
        by: "alice".into(),
        comment: "dev looks fine".into(),
    };
    assert_eq!(r.check(&approve, at(1000)), Ok(()));
    let (r, actions) = next(&r, &approve, at(500));
    assert_eq!(starts(&actions), [("p".to_string(), "r1/p/1".to_string())]);
    assert_eq!(
        r.stages[1].approval.as_ref().map(|a| a.by.as_str()),
        Some("alice")
    );
    assert_eq!(r.stages[1].started_at, Some(at(500)));
}

#[test]
fn empty_stages_are_skipped_and_the_last_stage_does_not_soak() {
    let mut last = stage("prod", "env=prod");
    last.soak = Duration::from_secs(3600);
    let (r, _) = started(
        spec(upgrade("1.35", false), vec![stage("none", "env=nothing"), last]),
        vec![cluster("p", "prod", "1.34")],
    );
    assert_eq!(r.stages[0].status, StageStatus::Skipped);
    let (r, _) = next(&r, &finished("p", "r1/p/1", Outcome::Succeeded), at(10));
    assert_eq!(r.phase, Phase::Succeeded);
}

#[test]
fn the_first_stage_can_require_approval() {
    let mut s = stage("all", "");
    s.require_approval = true;
    let (r, actions) = started(
        spec(upgrade("1.35", false), vec![s]),
        vec![cluster("a", "dev", "1.34")],
    );
    assert!(starts(&actions).is_empty());
    assert_eq!(r.state(), RolloutState::WaitingForApproval);
}

// === failures ===

#[test]
fn reaching_max_failures_halts_and_stops_running_operations() {
    let mut st = stage("all", "");
    st.max_concurrency = Concurrency::Count(3);
    st.max_failures = 2;
    let fleet: Vec<_> = (0..5).map(|i| cluster(&format!("c{i}"), "dev", "1.34")).collect();
    let (r, actions) = started(spec(upgrade("1.35", false), vec![st, stage("later", "")]), fleet);
    assert_eq!(starts(&actions).len(), 3);
    // One failure is under the limit: the next cluster starts.
    let (r, actions) = next(&r, &finished("c0", "r1/c0/1", failed("Drain")), at(10));
    assert_eq!(starts(&actions), [("c3".to_string(), "r1/c3/1".to_string())]);
    let f = run(&r, "c0").failure.expect("failure");
    assert_eq!(
        f,
        Failure {
            step: Some("Drain".into()),
            code: Some("DRAIN_BLOCKED".into()),
            reason: "pod web-1 blocked by PDB web".into()
        }
    );
    // The second reaches it: nothing new starts, the running ones are told to halt.
    let (r, actions) = next(&r, &finished("c1", "r1/c1/1", failed("Preflight")), at(20));
    assert!(starts(&actions).is_empty());
    let halts: BTreeSet<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::HaltOperation { operation_id, .. } => Some(operation_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(halts, ["r1/c2/1".to_string(), "r1/c3/1".to_string()].into());
    assert!(matches!(r.phase, Phase::Halting { .. }));
    assert_eq!(r.state(), RolloutState::Running);
    assert!(r.reason().unwrap_or_default().contains("halting"));
    assert_eq!(status(&r, "c4"), ClusterStatus::Skipped);
    assert_eq!(r.stages[0].status, StageStatus::Failed);
    assert_eq!(r.stages[1].status, StageStatus::Skipped);
    let (r, _) = next(&r, &finished("c2", "r1/c2/1", Outcome::Halted), at(30));
    assert!(matches!(r.phase, Phase::Halting { .. }));
    assert_eq!(status(&r, "c2"), ClusterStatus::Cancelled);
    // A halted operation that managed to succeed counts as a success.
    let (r, actions) = next(&r, &finished("c3", "r1/c3/1", Outcome::Succeeded), at(40));
    assert!(starts(&actions).is_empty());
    assert_eq!(status(&r, "c3"), ClusterStatus::Succeeded);
    assert!(matches!(&r.phase, Phase::Failed { reason } if reason.contains("maxFailures 2")));
    assert_eq!(r.state(), RolloutState::Failed);
}

#[test]
fn failures_under_the_limit_let_the_rollout_finish_failed() {
    let mut st = stage("all", "");
    st.max_failures = 3;
    let (r, _) = started(
        spec(upgrade("1.35", false), vec![st]),
        vec![cluster("a", "dev", "1.34"), cluster("b", "dev", "1.34")],
    );
    let (r, _) = next(&r, &finished("a", "r1/a/1", failed("UpgradeControlPlane")), at(1));
    let (r, _) = next(&r, &finished("b", "r1/b/1", Outcome::Succeeded), at(2));
    assert_eq!(r.stages[0].status, StageStatus::Succeeded);
    assert!(matches!(&r.phase, Phase::Failed { reason } if reason.contains("1 of 2 clusters failed (a)")));
}

#[test]
fn a_halt_between_two_hops_stops_the_cluster() {
    let mut st = stage("all", "");
    st.max_concurrency = Concurrency::Count(2);
    let (r, _) = started(
        spec(upgrade("1.35", false), vec![st]),
        vec![cluster("a", "dev", "1.33"), cluster("b", "dev", "1.34")],
    );
    let (r, _) = next(&r, &Event::AgentDisconnected { cluster: "a".into() }, at(1));
    // a's first hop ends while its agent is away: its second hop waits for it.
    let (r, actions) = next(&r, &finished("a", "r1/a/1", Outcome::Succeeded), at(2));
    assert!(starts(&actions).is_empty());
    assert_eq!(status(&r, "a"), ClusterStatus::Running);
    assert!(run(&r, "a").reason.unwrap_or_default().contains("waits for it"));
    let (r, actions) = next(&r, &finished("b", "r1/b/1", failed("Preflight")), at(3));
    assert!(actions.iter().all(|a| !matches!(a, Action::HaltOperation { .. })));
    assert_eq!(status(&r, "a"), ClusterStatus::Cancelled);
    assert!(matches!(r.phase, Phase::Failed { .. }));
}

// === disconnected agents ===

#[test]
fn a_disconnected_cluster_waits_then_fails() {
    let mut st = stage("all", "");
    st.max_failures = 5;
    let mut away = cluster("a", "dev", "1.34");
    away.connected = false;
    away.last_seen = Some(at(0));
    let (r, actions) = started(
        spec(upgrade("1.35", false), vec![st]),
        vec![away, cluster("b", "dev", "1.34")],
    );
    // b takes the slot while a waits.
    assert_eq!(starts(&actions), [("b".to_string(), "r1/b/1".to_string())]);
    assert_eq!(status(&r, "a"), ClusterStatus::Pending);
    assert!(run(&r, "a")
        .reason
        .unwrap_or_default()
        .starts_with("agent disconnected since"));
    assert_eq!(r.next_deadline(), Some(at(600)));
    let (r, _) = next(&r, &Event::Tick, at(599));
    assert_eq!(status(&r, "a"), ClusterStatus::Pending);
    let (r, _) = next(&r, &Event::Tick, at(600));
    assert_eq!(status(&r, "a"), ClusterStatus::Failed);
    let f = run(&r, "a").failure.expect("failure");
    assert_eq!(f.step, None);
    assert!(f.reason.contains("agent disconnected since"));
}

#[test]
fn a_disconnected_cluster_starts_when_its_agent_returns() {
    let mut away = cluster("a", "dev", "1.34");
    away.connected = false;
    let (r, actions) = started(spec(upgrade("1.35", false), vec![stage("all", "")]), vec![away]);
    assert!(starts(&actions).is_empty());
    let (r, actions) = next(
        &r,
        &Event::AgentConnected {
            cluster: "a".into(),
            inventory: Some(ClusterInventory {
                version: "1.33".into(),
                self_managed_nodegroups: vec![],
            }),
        },
        at(30),
    );
    // Planned from the fresh inventory: 1.33 -> 1.34 first.
    assert_eq!(
        start_works(&actions),
        [OperationWork::Upgrade {
            from: v("1.33"),
            to: v("1.34"),
            force: false,
            goal: v("1.35"),
        }]
    );
    assert_eq!(status(&r, "a"), ClusterStatus::Running);
}

// === pause, resume, cancel ===

#[test]
fn pause_starts_nothing_new_and_resume_goes_on() {
    let fleet: Vec<_> = (0..3).map(|i| cluster(&format!("c{i}"), "dev", "1.33")).collect();
    let (r, _) = started(spec(upgrade("1.35", false), vec![stage("all", "")]), fleet);
    let (r, _) = next(
        &r,
        &Event::Pause {
            reason: "lunch".into(),
        },
        at(1),
    );
    assert_eq!(r.state(), RolloutState::Paused);
    assert_eq!(r.cluster_state(Some(0), &run(&r, "c1")), RolloutState::Paused);
    // The running cluster continues with its next hop; no new cluster starts.
    let (r, actions) = next(&r, &finished("c0", "r1/c0/1", Outcome::Succeeded), at(2));
    assert_eq!(starts(&actions), [("c0".to_string(), "r1/c0/2".to_string())]);
    let (r, actions) = next(&r, &finished("c0", "r1/c0/2", Outcome::Succeeded), at(3));
    assert!(starts(&actions).is_empty());
    assert_eq!(status(&r, "c1"), ClusterStatus::Pending);
    let (r, actions) = next(&r, &Event::Resume, at(4));
    assert_eq!(starts(&actions), [("c1".to_string(), "r1/c1/1".to_string())]);
    assert_eq!(r.state(), RolloutState::Running);
}

#[test]
fn start_paused_waits_for_resume() {
    let mut s = spec(upgrade("1.35", false), vec![stage("all", "")]);
    s.start_paused = true;
    let (r, actions) = started(s, vec![cluster("a", "dev", "1.34")]);
    assert!(starts(&actions).is_empty());
    assert_eq!(r.state(), RolloutState::Paused);
    let (_, actions) = next(&r, &Event::Resume, at(1));
    assert_eq!(starts(&actions).len(), 1);
}

#[test]
fn cancel_cancels_running_operations_and_ends_when_they_do() {
    let mut st = stage("all", "");
    st.max_concurrency = Concurrency::Count(2);
    let fleet: Vec<_> = (0..3).map(|i| cluster(&format!("c{i}"), "dev", "1.34")).collect();
    let (r, _) = started(
        spec(upgrade("1.35", false), vec![st, stage("later", "env=x")]),
        fleet,
    );
    let (r, actions) = next(
        &r,
        &Event::Cancel {
            reason: "wrong target".into(),
        },
        at(5),
    );
    let cancels: Vec<_> = actions
        .iter()
        .filter(|a| matches!(a, Action::CancelOperation { .. }))
        .collect();
    assert_eq!(cancels.len(), 2);
    assert_eq!(status(&r, "c2"), ClusterStatus::Cancelled);
    assert_eq!(r.state(), RolloutState::Running);
    assert!(r
        .check(
            &Event::Pause {
                reason: String::new()
            },
            at(1000)
        )
        .is_err());
    // A repeated cancel changes nothing.
    assert_eq!(
        next(
            &r,
            &Event::Cancel {
                reason: "again".into()
            },
            at(6)
        )
        .0,
        r
    );
    let (r, _) = next(&r, &finished("c0", "r1/c0/1", Outcome::Cancelled), at(7));
    assert!(matches!(r.phase, Phase::Cancelling { .. }));
    let (r, _) = next(&r, &finished("c1", "r1/c1/1", Outcome::Succeeded), at(8));
    assert_eq!(status(&r, "c1"), ClusterStatus::Succeeded);
    assert!(matches!(&r.phase, Phase::Cancelled { reason } if reason == "wrong target"));
    assert_eq!(r.stages[0].status, StageStatus::Cancelled);
    assert_eq!(r.stages[1].status, StageStatus::Cancelled);
    assert!(matches!(
        r.check(&Event::Resume, at(1000)),
        Err(CommandError::Over { .. })
    ));
}

#[test]
fn cancel_before_start_ends_at_once() {
    let r = Rollout::new(
        "r1",
        spec(upgrade("1.35", false), vec![stage("all", "")]),
        "t",
        t0(),
    );
    let (r, actions) = next(
        &r,
        &Event::Cancel {
            reason: "oops".into(),
        },
        t0(),
    );
    assert!(matches!(r.phase, Phase::Cancelled { .. }));
    assert!(starts(&actions).is_empty());
    let (r2, _) = next(
        &r,
        &Event::Start {
            clusters: vec![cluster("a", "dev", "1.34")],
        },
        t0(),
    );
    assert_eq!(r2, r);
}

// === replays and restarts ===

#[test]
fn stale_and_duplicate_results_are_ignored() {
    let (r, _) = started(
        spec(upgrade("1.35", false), vec![stage("all", "")]),
        vec![cluster("a", "dev", "1.33")],
    );
    let (r, _) = next(&r, &finished("a", "r1/a/1", Outcome::Succeeded), at(1));
    for e in [
        finished("a", "r1/a/1", Outcome::Succeeded),
        finished("a", "r1/a/1", failed("Drain")),
        finished("a", "other", Outcome::Succeeded),
        finished("nobody", "r1/a/2", Outcome::Succeeded),
        Event::OperationStarted {
            cluster: "a".into(),
            operation_id: "r1/a/1".into(),
        },
    ] {
        assert_eq!(next(&r, &e, at(2)), (r.clone(), vec![]), "{e:?}");
    }
}

#[test]
fn a_late_replay_of_the_last_result_changes_nothing() {
    let (r, _) = started(
        spec(upgrade("1.35", false), vec![stage("all", "")]),
        vec![cluster("a", "dev", "1.34")],
    );
    let fail = finished("a", "r1/a/1", failed("Drain"));
    let (r, _) = next(&r, &fail, at(1));
    assert_eq!(status(&r, "a"), ClusterStatus::Failed);
    assert_eq!(next(&r, &fail, at(500)), (r.clone(), vec![]));
    assert_eq!(
        next(&r, &finished("a", "r1/a/1", Outcome::Succeeded), at(501)),
        (r.clone(), vec![])
    );
}

#[test]
fn restart_reissues_operations_in_flight_and_stops() {
    let mut st = stage("all", "");
    st.max_concurrency = Concurrency::Count(2);
    st.max_failures = 1;
    let fleet = vec![
        cluster("a", "dev", "1.34"),
        cluster("b", "dev", "1.34"),
        cluster("c", "dev", "1.34"),
    ];
    let (r, _) = started(spec(upgrade("1.35", false), vec![st]), fleet);
    let (r, _) = next(
        &r,
        &Event::OperationStarted {
            cluster: "a".into(),
            operation_id: "r1/a/1".into(),
        },
        at(1),
    );
    let (r2, actions) = next(&r, &Event::Restarted, at(2));
    assert_eq!(r2, r);
    assert_eq!(
        starts(&actions),
        [
            ("a".to_string(), "r1/a/1".to_string()),
            ("b".to_string(), "r1/b/1".to_string())
        ]
    );
    // While halting, a restart re-sends the halt too.
    let (r, _) = next(&r, &finished("a", "r1/a/1", failed("Drain")), at(3));
    let (_, actions) = next(&r, &Event::Restarted, at(4));
    assert!(actions.contains(&Action::HaltOperation {
        cluster: "b".into(),
        operation_id: "r1/b/1".into()
    }));
    assert_eq!(starts(&actions), [("b".to_string(), "r1/b/1".to_string())]);
}

#[test]
fn step_changes_show_on_the_cluster() {
    let (r, _) = started(
        spec(upgrade("1.35", false), vec![stage("all", "")]),
        vec![cluster("a", "dev", "1.34")],
    );
    let e = Event::StepChanged {
        cluster: "a".into(),
        operation_id: "r1/a/1".into(),
        step: "UpgradeControlPlane".into(),
    };
    let (r, _) = next(&r, &e, at(1));
    assert_eq!(run(&r, "a").step.as_deref(), Some("UpgradeControlPlane"));
}

#[test]
fn commands_are_checked() {
    let mut gate = stage("prod", "env=prod");
    gate.require_approval = true;
    let (r, _) = started(
        spec(upgrade("1.35", false), vec![stage("dev", "env=dev"), gate]),
        vec![cluster("d", "dev", "1.34"), cluster("p", "prod", "1.34")],
    );
    let approve = |stage| Event::Approve {
        stage,
        by: "bob".into(),
        comment: String::new(),
    };
    assert!(matches!(
        r.check(&approve(7), at(1000)),
        Err(CommandError::NoSuchStage { count: 2, .. })
    ));
    assert!(matches!(
        r.check(&approve(1), at(1000)),
        Err(CommandError::NotWaiting { .. })
    ));
    assert_eq!(next(&r, &approve(1), at(1)).0, r);
    assert_eq!(r.check(&Event::Pause { reason: "x".into() }, at(1000)), Ok(()));
    assert_eq!(r.check(&Event::Resume, at(1000)), Ok(()));
    assert_eq!(r.check(&Event::Cancel { reason: "x".into() }, at(1000)), Ok(()));
    let msg = r.check(&approve(1), at(1000)).expect_err("refused").to_string();
    assert!(msg.contains("not waiting for approval"), "{msg}");
}

// === property-style: random event orders ===

/// The engine's side as the tests model it: operations it was told to start, and stops.
#[derive(Default)]
struct Engine {
    /// op id -> (cluster, stop asked, ended)
    ops: BTreeMap<String, (String, Option<Stop>, bool)>,
    /// Every operation id ever started, in order.
    started_ids: Vec<String>,
    /// Events the engine owes the machine (outcomes of re-issued, already ended operations).
    owed: Vec<Event>,
}

fn random_spec(rng: &mut StdRng) -> RolloutSpec {
    let envs = ["dev", "staging", "prod"];
    let n_stages = rng.random_range(1..=3);
    let stages = (0..n_stages)
        .map(|k| StageSpec {
            name: format!("s{k}"),
            selector: if k + 1 == n_stages && rng.random_bool(0.3) {
                Selector::everything()
            } else {
                Selector::parse(&format!("env={}", envs[k])).expect("valid")
            },
            max_concurrency: if rng.random_bool(0.5) {
                Concurrency::Count(rng.random_range(1..=3))
            } else {
                Concurrency::Percent(rng.random_range(1..=100))
            },
            soak: Duration::from_secs(if rng.random_bool(0.5) { 0 } else { 300 }),
            max_failures: rng.random_range(1..=3),
            require_approval: rng.random_bool(0.4),
        })
        .collect();
    let work = match rng.random_range(0..3) {
        0 => Work::Migration(migration_spec()),
        1 => upgrade("1.35", false),
        _ => upgrade("1.35", true),
    };
    let mut s = spec(work, stages);
    if rng.random_bool(0.3) {
        s.selector = Selector::parse("env!=lab").expect("valid");
    }
    s.start_paused = rng.random_bool(0.1);
    s
}

fn random_fleet(rng: &mut StdRng) -> Vec<ClusterFacts> {
    let envs = ["dev", "staging", "prod", "lab"];
    let n = rng.random_range(1..=12);
    (0..n)
        .map(|i| {
            let version = format!("1.{}", rng.random_range(32..=36));
            let mut c = cluster(
                &format!("c{i:02}"),
                envs[rng.random_range(0..envs.len())],
                &version,
            );
            c.connected = rng.random_bool(0.8);
            if rng.random_bool(0.1) {
                c.inventory = None;
            }
            let groups: &[&str] = match rng.random_range(0..4) {
                0 => &[],
                1 | 2 => &["ng-old"],
                _ => &["ng-a", "ng-b"],
            };
            with_groups(c, groups)
        })
        .collect()
}

/// Checks what must hold after every transition; `actions` are the transition's.
fn check_invariants(before: &Rollout, r: &Rollout, actions: &[Action], engine: &Engine, now: Timestamp) {
    // Never more than maxConcurrency running in a stage; only the current stage runs clusters.
    for (k, stage) in r.stages.iter().enumerate() {
        let running = stage
            .clusters
            .iter()
            .filter(|c| c.status == ClusterStatus::Running)
            .count();
        assert!(
            running <= r.stage_limit(k),
            "stage {k}: {running} running > {}",
            r.stage_limit(k)
        );
        if running > 0 && r.phase == Phase::Active {
            assert_eq!(
                stage.status,
                StageStatus::Running,
                "stage {k} has running clusters"
            );
        }
    }
    // Stage k+1 never begins before stage k is done and soaked, and approved when gated.
    for (k, stage) in r.stages.iter().enumerate() {
        if stage.started_at.is_none() {
            continue;
        }
        if r.spec.stages[k].require_approval {
            assert!(stage.approval.is_some(), "stage {k} began without approval");
        }
        for (j, earlier) in r.stages[..k].iter().enumerate() {
            assert!(
                matches!(earlier.status, StageStatus::Succeeded | StageStatus::Skipped)
                    || matches!(earlier.status, StageStatus::Cancelled) && !matches!(r.phase, Phase::Active),
                "stage {k} began while stage {j} is {:?}",
                earlier.status
            );
            if let (Some(until), Some(began)) = (earlier.soak_until, stage.started_at) {
                assert!(
                    began >= until,
                    "stage {k} began at {began} before stage {j}'s soak ended {until}"
                );
            }
        }
    }
    // New operations only while active; new clusters only while not paused.
    for a in actions {
        let Action::StartOperation {
            cluster,
            operation_id,
            ..
        } = a
        else {
            continue;
        };
        let new = !engine.ops.contains_key(operation_id);
        if new {
            assert!(
                matches!(before.phase, Phase::Active | Phase::Pending),
                "new operation {operation_id} while {:?}",
                before.phase
            );
            assert_eq!(
                r.phase,
                Phase::Active,
                "new operation {operation_id} leaves {:?}",
                r.phase
            );
            let first = operation_id.ends_with("/1");
            let was_pending = before
                .find(cluster)
                .map(|(k, i)| before.stages[k].clusters[i].status == ClusterStatus::Pending)
                .unwrap_or(false);
            if first && was_pending {
                assert!(r.paused.is_none(), "cluster {cluster} started while paused");
            }
            let (k, _) = r.find(cluster).expect("started cluster is staged");
            assert_eq!(
                r.stages[k].status,
                StageStatus::Running,
                "start in a stage that is not running"
            );
        }
    }
    // Halted and cancelled rollouts have no cluster waiting for its turn.
    if matches!(
        r.phase,
        Phase::Halting { .. } | Phase::Failed { .. } | Phase::Cancelling { .. } | Phase::Cancelled { .. }
    ) && r.started_at.is_some()
    {
        assert!(r.clusters().all(|(_, c)| c.status != ClusterStatus::Pending));
    }
    // Final means nothing runs.
    if r.is_final() {
        assert_eq!(r.running_operations(), 0);
        assert!(r.clusters().all(|(_, c)| c.status.is_terminal()));
        assert!(r.finished_at.is_some());
    }
    // Time is never in the future.
    assert!(r.finished_at.is_none_or(|t| t <= now));
    // Stored verbatim.
    let json = serde_json::to_string(r).expect("serialise");
    assert_eq!(&serde_json::from_str::<Rollout>(&json).expect("deserialise"), r);
}

/// Applies the engine's side of `actions`.
fn perform(engine: &mut Engine, actions: &[Action]) {
    for a in actions {
        match a {
            Action::StartOperation {
                cluster,
                operation_id,
                ..
            } => match engine.ops.get(operation_id) {
                None => {
                    engine
                        .ops
                        .insert(operation_id.clone(), (cluster.clone(), None, false));
                    engine.started_ids.push(operation_id.clone());
                }
                // Ensure semantics: an operation that already ended reports its outcome again.
                Some((_, stop, true)) => engine.owed.push(finished(
                    cluster,
                    operation_id,
                    match stop {
                        Some(Stop::Cancel) => Outcome::Cancelled,
                        Some(Stop::Halt) => Outcome::Halted,
                        None => Outcome::Succeeded,
                    },
                )),
                Some(_) => {}
            },
            Action::CancelOperation { operation_id, .. } => {
                if let Some(op) = engine.ops.get_mut(operation_id) {
                    op.1 = Some(Stop::Cancel);
                }
            }
            Action::HaltOperation { operation_id, .. } => {
                if let Some(op) = engine.ops.get_mut(operation_id) {
                    op.1.get_or_insert(Stop::Halt);
                }
            }
            Action::RecordEvent { .. } => {}
        }
    }
}

/// An outcome for a running operation, honouring a stop.
fn random_outcome(rng: &mut StdRng, stop: Option<Stop>) -> Outcome {
    let roll = rng.random_range(0..10);
    match (stop, roll) {
        (_, 0) => failed("Drain"),
        (Some(Stop::Cancel), 1..=7) => Outcome::Cancelled,
        (Some(Stop::Halt), 1..=7) => Outcome::Halted,
        (None, 1) => Outcome::Cancelled,
        _ => Outcome::Succeeded,
    }
}

fn random_event(rng: &mut StdRng, r: &Rollout, engine: &mut Engine, history: &[Event]) -> Event {
    let names: Vec<String> = r.clusters().map(|(_, c)| c.name.clone()).collect();
    let live: Vec<(String, String, Option<Stop>)> = engine
        .ops
        .iter()
        .filter(|(_, (_, _, ended))| !ended)
        .map(|(id, (c, stop, _))| (id.clone(), c.clone(), *stop))
        .collect();
    if !engine.owed.is_empty() && rng.random_bool(0.5) {
        return engine.owed.remove(0);
    }
    loop {
        match rng.random_range(0..100) {
            0..=44 if !live.is_empty() => {
                let (id, cluster, stop) = live[rng.random_range(0..live.len())].clone();
                return match rng.random_range(0..4) {
                    0 => Event::OperationStarted {
                        cluster,
                        operation_id: id,
                    },
                    1 => Event::StepChanged {
                        cluster,
                        operation_id: id,
                        step: ["Preflight", "Drain", "UpgradeNodegroups"][rng.random_range(0..3)].into(),
                    },
                    _ => {
                        if let Some(op) = engine.ops.get_mut(&id) {
                            op.2 = true;
                        }
                        finished(&cluster, &id, random_outcome(rng, stop))
                    }
                };
            }
            45..=59 => return Event::Tick,
            60..=69 if !names.is_empty() => {
                let cluster = names[rng.random_range(0..names.len())].clone();
                return if rng.random_bool(0.5) {
                    Event::AgentDisconnected { cluster }
                } else {
                    Event::AgentConnected {
                        cluster,
                        inventory: None,
                    }
                };
            }
            70..=74 => {
                return Event::Approve {
                    stage: rng.random_range(0..r.stages.len() + 1),
                    by: "op".into(),
                    comment: String::new(),
                }
            }
            75..=78 => return Event::Pause { reason: "p".into() },
            79..=84 => return Event::Resume,
            85 => return Event::Cancel { reason: "c".into() },
            86..=89 => return Event::Restarted,
            90..=99 if !history.is_empty() => {
                // A replay of an earlier operation event, as after a crash.
                let old = &history[rng.random_range(0..history.len())];
                if matches!(
                    old,
                    Event::OperationFinished { .. } | Event::OperationStarted { .. }
                ) {
                    return old.clone();
                }
            }
            _ => {}
        }
    }
}

/// Ends every running operation, connects every agent, opens gates and lets time pass until
/// the rollout is final; returns how many rounds it took.
fn drain_to_end(rng: &mut StdRng, mut r: Rollout, engine: &mut Engine, mut now: Timestamp) -> Rollout {
    for round in 0..10_000 {
        if r.is_final() {
            return r;
        }
        now = now.checked_add(Duration::from_secs(3600)).expect("in range");
        let mut events: Vec<Event> = std::mem::take(&mut engine.owed);
        events.push(Event::Resume);
        for (_, c) in r.clusters() {
            if !c.connected {
                events.push(Event::AgentConnected {
                    cluster: c.name.clone(),
                    inventory: None,
                });
            }
        }
        for (k, s) in r.stages.iter().enumerate() {
            if s.status == StageStatus::WaitingForApproval {
                events.push(Event::Approve {
                    stage: k,
                    by: "op".into(),
                    comment: String::new(),
                });
            }
        }
        let live: Vec<_> = engine
            .ops
            .iter()
            .filter(|(_, (_, _, ended))| !ended)
            .map(|(id, (c, stop, _))| (id.clone(), c.clone(), *stop))
            .collect();
        for (id, cluster, stop) in live {
            if let Some(op) = engine.ops.get_mut(&id) {
                op.2 = true;
            }
            events.push(finished(&cluster, &id, random_outcome(rng, stop)));
        }
        events.push(Event::Tick);
        for e in events {
            let (n, actions) = next(&r, &e, now);
            check_invariants(&r, &n, &actions, engine, now);
            perform(engine, &actions);
            r = n;
        }
        assert!(round < 9_999, "rollout never ended: {:?}", r.phase);
    }
    r
}

#[test]
fn random_event_orders_keep_the_invariants() {
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let spec = random_spec(&mut rng);
        let fleet = random_fleet(&mut rng);
        let mut engine = Engine::default();
        let mut now = t0();
        let r0 = Rollout::new("r", spec, "prop", now);
        let (mut r, actions) = next(&r0, &Event::Start { clusters: fleet }, now);
        check_invariants(&r0, &r, &actions, &engine, now);
        perform(&mut engine, &actions);
        let mut history = Vec::new();
        for _ in 0..rng.random_range(0..200) {
            let e = random_event(&mut rng, &r, &mut engine, &history);
            now = now
                .checked_add(Duration::from_secs(rng.random_range(0..200)))
                .expect("in range");
            let (n, actions) = next(&r, &e, now);
            check_invariants(&r, &n, &actions, &engine, now);
            if history.contains(&e)
                && matches!(
                    e,
                    Event::OperationFinished { .. } | Event::OperationStarted { .. }
                )
            {
                // A late replay of an operation event does nothing but what time alone does.
                assert_eq!(
                    next(&r, &Event::Tick, now),
                    (n.clone(), actions.clone()),
                    "seed {seed}: replay of {e:?}"
                );
            }
            // The same event again (a replay, at the same moment) changes nothing.
            let (again, _) = next(&n, &e, now);
            assert_eq!(again, n, "seed {seed}: replaying {e:?} changed the state");
            perform(&mut engine, &actions);
            history.push(e);
            r = n;
        }
        let r = drain_to_end(&mut rng, r, &mut engine, now);
        // Every started operation's cluster ended, and so did every operation.
        for id in &engine.started_ids {
            let (cluster, _, ended) = &engine.ops[id];
            assert!(ended, "seed {seed}: operation {id} never ended");
            assert!(
                status(&r, cluster).is_terminal(),
                "seed {seed}: cluster {cluster} of {id} is {:?}",
                status(&r, cluster)
            );
        }
        assert!(r.clusters().all(|(_, c)| c.status.is_terminal()), "seed {seed}");
        assert!(r.state().is_final());
    }
}

#[test]
fn a_fleet_without_trouble_succeeds_in_stage_order() {
    for seed in 0..100u64 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let mut spec = random_spec(&mut rng);
        spec.work = upgrade("1.36", false);
        spec.start_paused = false;
        let fleet: Vec<_> = random_fleet(&mut rng)
            .into_iter()
            .map(|mut c| {
                c.connected = true;
                c.inventory = Some(ClusterInventory {
                    version: "1.34".into(),
                    self_managed_nodegroups: vec![],
                });
                c
            })
            .collect();
        let mut engine = Engine::default();
        let mut now = t0();
        let r0 = Rollout::new("r", spec, "prop", now);
        let (mut r, actions) = next(&r0, &Event::Start { clusters: fleet }, now);
        perform(&mut engine, &actions);
        let mut order = Vec::new();
        while !r.is_final() {
            now = now.checked_add(Duration::from_secs(400)).expect("in range");
            let mut events = vec![Event::Tick];
            for (k, s) in r.stages.iter().enumerate() {
                if s.status == StageStatus::WaitingForApproval {
                    events.push(Event::Approve {
                        stage: k,
                        by: "op".into(),
                        comment: String::new(),
                    });
                }
            }
            for (id, (cluster, _, ended)) in engine.ops.iter_mut() {
                if !*ended {
                    *ended = true;
                    events.push(finished(cluster, id, Outcome::Succeeded));
                }
            }
            for e in events {
                let (n, actions) = next(&r, &e, now);
                check_invariants(&r, &n, &actions, &engine, now);
                for (cluster, _) in starts(&actions) {
                    order.push(r.find(&cluster).map(|(k, _)| k).unwrap_or(usize::MAX));
                }
                perform(&mut engine, &actions);
                r = n;
            }
        }
        assert_eq!(r.phase, Phase::Succeeded, "seed {seed}");
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "seed {seed}: stages out of order {order:?}"
        );
        let ops_per_cluster = 2;
        assert_eq!(
            engine.started_ids.len(),
            r.clusters().count() * ops_per_cluster,
            "seed {seed}"
        );
    }
}

// === copy-on-write clusters ===

/// The names [`Rollout::changed_clusters`] reports for `after` against `before`.
fn changed(after: &Rollout, before: &Rollout) -> Vec<String> {
    after
        .changed_clusters(before)
        .map(|(_, _, c)| c.name.clone())
        .collect()
}

/// How many clusters `after` still shares (same allocation) with `before`.
fn shared(after: &Rollout, before: &Rollout) -> usize {
    after
        .stages
        .iter()
        .zip(&before.stages)
        .map(|(a, b)| {
            a.clusters
                .iter()
                .zip(&b.clusters)
                .filter(|(x, y)| std::sync::Arc::ptr_eq(x, y))
                .count()
        })
        .sum()
}

#[test]
fn a_transition_copies_only_the_clusters_it_changes() {
    let names = ["a", "b", "c", "d", "e"];
    let (r0, _) = started(
        spec(upgrade("1.34", false), vec![stage("all", "")]),
        names.iter().map(|n| cluster(n, "dev", "v1.33.4-eks-1")).collect(),
    );
    assert_eq!(
        changed(&r0, &Rollout::new("r1", r0.spec.clone(), "tester", t0())),
        names
    );

    // A tick that changes nothing shares every cluster.
    let (r1, _) = next(&r0, &Event::Tick, at(1));
    assert_eq!(r1, r0);
    assert_eq!(shared(&r1, &r0), 5);
    assert!(changed(&r1, &r0).is_empty());

    // A step change touches its cluster only.
    let step = Event::StepChanged {
        cluster: "a".into(),
        operation_id: "r1/a/1".into(),
        step: "UpgradeControlPlane".into(),
    };
    let (r2, _) = next(&r1, &step, at(2));
    assert_eq!(changed(&r2, &r1), ["a"]);
    assert_eq!(shared(&r2, &r1), 4);

    // The same step again is no change, and copies nothing.
    let (r3, _) = next(&r2, &step, at(3));
    assert_eq!(shared(&r3, &r2), 5);

    // An end starts the next cluster: both change, the other three stay shared.
    let (r4, _) = next(&r3, &finished("a", "r1/a/1", Outcome::Succeeded), at(4));
    assert_eq!(changed(&r4, &r3), ["a", "b"]);
    assert_eq!(shared(&r4, &r3), 3);

    // An agent of a pending cluster going away changes that cluster; going away again does not.
    let away = Event::AgentDisconnected { cluster: "e".into() };
    let (r5, _) = next(&r4, &away, at(5));
    assert_eq!(changed(&r5, &r4), ["e"]);
    let (r6, _) = next(&r5, &away, at(6));
    assert_eq!(shared(&r6, &r5), 5);
}
