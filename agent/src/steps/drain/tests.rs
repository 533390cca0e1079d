//! Unit tests of the drain: the pure plan and scheduler, and runs against the fake cluster.

use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::cluster::fake::taint_node;
use crate::cluster::FakeCluster;
use crate::model::GroupKind;
use crate::steps::{surge_scale, NoProgress};

/// Two old nodes with web (4, PDB maxUnavailable 1) and api (2, no PDB), surged onto two new nodes.
async fn migrating() -> FakeCluster {
    let fake = FakeCluster::new();
    fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 8000, 30);
    fake.add_node("old-2", "ng-old", GroupKind::SelfManaged, 8000, 30);
    fake.add_deployment("shop", "web", 4, 100);
    fake.add_deployment("shop", "api", 2, 100);
    fake.add_pdb("shop", "web", "web", None, Some(IntOrString::Int(1)));
    fake.add_daemon_pod("kube-system", "aws-node", "old-1");
    fake.add_daemon_pod("kube-system", "aws-node", "old-2");
    fake.add_node("new-1", "ng-new", GroupKind::Managed, 8000, 30);
    fake.add_node("new-2", "ng-new", GroupKind::Managed, 8000, 30);
    taint_node(&fake, "old-1", model::DEFAULT_TAINT_KEY);
    taint_node(&fake, "old-2", model::DEFAULT_TAINT_KEY);
    surge_scale::run(
        &fake,
        &surge_scale::Params::new("ng-old", "ng-new", Default::default()),
        &NoProgress,
    )
    .await
    .expect("surge");
    fake
}

fn evictable_on_old(fake: &FakeCluster) -> Vec<String> {
    fake.state()
        .pods
        .values()
        .filter(|p| model::pod_node(p).is_some_and(|n| n.starts_with("old-")))
        .filter(|p| model::controller_of(&p.metadata).is_none_or(|o| o.kind != "DaemonSet"))
        .map(|p| model::key(&p.metadata))
        .collect()
}

fn fast(group: &str) -> Params {
    Params {
        poll: Duration::from_millis(100),
        ..Params::new(group)
    }
}

#[test]
fn plan_follows_kubectl_filters() {
    let fake = FakeCluster::new();
    fake.add_node("old-1", "ng-old", GroupKind::SelfManaged, 8000, 30);
    fake.add_deployment("shop", "web", 1, 100);
    fake.add_daemon_pod("kube-system", "kube-proxy", "old-1");
    fake.add_bare_pod("shop", "scratch", "old-1", true);
    fake.add_bare_pod("shop", "lonely", "old-1", false);
    fake.add_bare_pod("kube-system", "static", "old-1", false);
    {
        let mut st = fake.state();
        let s = st.pods.get_mut("kube-system/static").expect("static");
        s.metadata.annotations = Some(
            [(model::MIRROR_POD_ANNOTATION.to_string(), "x".to_string())]
                .into_iter()
                .collect(),
        );
    }
    let snap = Snapshot {
        pods: fake.state().pods.values().cloned().collect(),
        pdbs: Vec::new(),
    };
    let strict = Params {
        delete_emptydir_data: false,
        ..Params::new("ng-old")
    };
    let actions: BTreeMap<String, Action> = plan(&snap, &strict)
        .pods
        .into_iter()
        .map(|p| (p.pod, p.action))
        .collect();
    assert_eq!(
        actions["kube-system/kube-proxy-old-1"],
        Action::Skip(SkipReason::DaemonSet)
    );
    assert_eq!(actions["kube-system/static"], Action::Skip(SkipReason::Mirror));
    assert!(matches!(&actions["shop/scratch"], Action::Refuse(r) if r.contains("--delete-emptydir-data")));
    assert!(matches!(&actions["shop/lonely"], Action::Refuse(r) if r.contains("--force")));
    assert_eq!(
        actions
            .iter()
            .filter(|(k, _)| k.starts_with("shop/web-"))
            .map(|(_, a)| a.clone())
            .collect::<Vec<_>>(),
        vec![Action::Evict]
    );
    let loose = Params {
        force: true,
        ..Params::new("ng-old")
    };
    let actions: BTreeMap<String, Action> = plan(&snap, &loose)
        .pods
        .into_iter()
        .map(|p| (p.pod, p.action))
        .collect();
    assert_eq!(actions["shop/scratch"], Action::Evict);
    assert_eq!(actions["shop/lonely"], Action::Evict);
}

#[test]
fn policies_parse_with_clear_errors() {
    assert_eq!("fail".parse::<OnBlocked>().ok(), Some(OnBlocked::Fail));
    assert_eq!("skip-node".parse::<OnBlocked>().ok(), Some(OnBlocked::SkipNode));
    assert_eq!(
        "force-after=5m".parse::<OnBlocked>().ok(),
        Some(OnBlocked::ForceAfter(Duration::from_secs(300)))
    );
    let err = "force".parse::<OnBlocked>().unwrap_err().to_string();
    assert!(
        err.contains("on-blocked") && err.contains("force-after=DURATION"),
        "{err}"
    );
    let err = "force-after=soon".parse::<OnBlocked>().unwrap_err().to_string();
    assert!(err.contains("on-blocked") && err.contains("soon"), "{err}");
    let p = Params {
        on_blocked: OnBlocked::ForceAfter(Duration::from_secs(900)),
        ..Params::new("ng-old")
    };
    assert!(p.validate().unwrap_err().to_string().contains("node-timeout"));
    let p = Params {
        concurrency: 0,
        ..Params::new("ng-old")
    };
    assert!(p
        .validate()
        .unwrap_err()
        .to_string()
        .contains("drain-concurrency"));
}

#[test]
fn backoff_grows_to_a_cap() {
    assert_eq!(backoff(1, 1.0), Duration::from_millis(250));
    assert_eq!(backoff(2, 1.0), Duration::from_millis(500));
    assert_eq!(backoff(30, 1.0), Duration::from_secs(5));
    assert_eq!(backoff(30, 1.5), Duration::from_millis(7500));
    assert_eq!(backoff(1, 0.5), Duration::from_millis(125));
}

#[tokio::test(start_paused = true)]
async fn schedule_paces_by_disruptions_allowed() {
    let fake = migrating().await;
    let pods: Vec<Pod> = fake
        .state()
        .pods
        .values()
        .filter(|p| model::pod_node(p).is_some_and(|n| n.starts_with("old-")))
        .cloned()
        .collect();
    let snap = Snapshot {
        pods,
        pdbs: crate::cluster::Cluster::pdbs(&fake).await.expect("pdbs"),
    };
    // web has 8 pods with maxUnavailable 1: one web eviction at a time; api has no PDB: both go.
    let params = Params::new("ng-old");
    let pl = plan(&snap, &params);
    let active: BTreeSet<String> = ["old-1".to_string(), "old-2".to_string()].into();
    let mut pacing = Pacing::default();
    let now = Instant::now();
    let calls = schedule(&pl.refs(), &snap.pdbs, &active, &params, &mut pacing, now);
    let web = calls
        .iter()
        .filter(|c| matches!(c, Call::Evict { pod, .. } if pod.starts_with("shop/web-")))
        .count();
    let api = calls
        .iter()
        .filter(|c| matches!(c, Call::Evict { pod, .. } if pod.starts_with("shop/api-")))
        .count();
    assert_eq!((web, api), (1, 2));
    let blocked: Vec<&PodTrack> = pacing
        .pods
        .values()
        .filter(|t| t.first_blocked.is_some())
        .collect();
    assert_eq!(blocked.len(), 3);
    assert!(blocked.iter().all(|t| t.pdbs == vec!["shop/web".to_string()]));
    let web_calls = |calls: &[Call]| {
        calls
            .iter()
            .filter(|c| matches!(c, Call::Evict { pod, .. } if pod.starts_with("shop/web-")))
            .count()
    };
    // The other web pods are next in line while web's budget is spent by the eviction under
    // way: reported as waiting, not as blocked.
    let refs = pl.refs();
    let waiting: Vec<Blocker> = ["old-1", "old-2"]
        .iter()
        .flat_map(|n| blockers_on(&refs, n, &pacing, now))
        .filter(|b| b.pod.starts_with("shop/web-") && b.reason == WAITING)
        .collect();
    assert_eq!(waiting.len(), 3, "{waiting:?}");
    // While the calls are in flight, nothing is sent twice and the budget stays spent.
    let again = schedule(&pl.refs(), &snap.pdbs, &active, &params, &mut pacing, now);
    assert!(again.is_empty(), "{again:?}");
    // Granted, but the budget's status does not show it yet (still 1): no second web eviction.
    for c in &calls {
        if let Call::Evict { pod, spends, .. } = c {
            pacing.grant(pod, spends, now);
        }
    }
    let t1 = now + Duration::from_millis(100);
    assert_eq!(
        web_calls(&schedule(
            &pl.refs(),
            &snap.pdbs,
            &active,
            &params,
            &mut pacing,
            t1
        )),
        0
    );
    // The status records the grant (disruptedPods) and allows nothing: blocked, then one probe
    // after the probe interval.
    let granted_pod = calls
        .iter()
        .map(Call::pod)
        .find(|p| p.starts_with("shop/web-"))
        .expect("web call")
        .to_string();
    let mut zero = snap.pdbs.clone();
    let st = zero[0].status.as_mut().expect("status");
    st.disruptions_allowed = 0;
    st.disrupted_pods = Some(
        [(
            granted_pod.trim_start_matches("shop/").to_string(),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
        )]
        .into_iter()
        .collect(),
    );
    pacing.saw_pdb(&zero[0], t1);
    assert_eq!(pacing.unconfirmed("shop/web"), 0, "the status now counts it");
    let t2 = now + Duration::from_secs(1);
    assert_eq!(
        web_calls(&schedule(&pl.refs(), &zero, &active, &params, &mut pacing, t2)),
        0
    );
    let t3 = now + PROBE_INTERVAL + Duration::from_secs(1);
    let probe = schedule(&pl.refs(), &zero, &active, &params, &mut pacing, t3);
    assert_eq!(web_calls(&probe), 1);
    for c in &probe {
        pacing.release(c.pod());
    }
    // The budget rises to 1: one eviction at once, not after a poll or probe interval.
    let mut one = zero.clone();
    one[0].status.as_mut().expect("status").disruptions_allowed = 1;
    pacing.saw_pdb(&one[0], t3);
    let t4 = t3 + Duration::from_millis(10);
    assert_eq!(
        web_calls(&schedule(&pl.refs(), &one, &active, &params, &mut pacing, t4)),
        1
    );
    // Granted evictions the status never records are forgotten after CONFIRM_TIMEOUT.
    let mut fresh = Pacing::default();
    let first = schedule(&pl.refs(), &snap.pdbs, &active, &params, &mut fresh, now);
    for c in &first {
        if let Call::Evict { pod, spends, .. } = c {
            fresh.grant(pod, spends, now);
        }
    }
    assert_eq!(fresh.unconfirmed("shop/web"), 1);
    fresh.confirm(now + CONFIRM_TIMEOUT);
    assert_eq!(fresh.unconfirmed("shop/web"), 0);
}

#[tokio::test(start_paused = true)]
async fn drains_every_old_node_without_violating_budgets() {
    let fake = migrating().await;
    let progress = Mutex::new(Vec::new());
    let out = run(&fake, &fast("ng-old"), &progress).await.expect("drain");
    assert_eq!(out.drained.len(), 2);
    assert_eq!(out.evicted, 6);
    assert_eq!(out.skipped_pods, 2);
    assert!(evictable_on_old(&fake).is_empty());
    let st = fake.state();
    assert!(st
        .nodes
        .values()
        .filter(|n| model::in_group(n, "ng-old"))
        .all(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)));
    assert!(st.events.iter().any(|e| e.reason == "FlotillaDrained"));
    // web (8 after the surge) never went below 7 available: one disruption at a time.
    assert!(st.min_available["shop/web"] >= 4, "{:?}", st.min_available);
    let reports = progress.lock().expect("progress");
    assert!(
        reports.last().is_some_and(|r| r.done == r.total && r.total == 6),
        "{:?}",
        reports.last()
    );
}

#[tokio::test(start_paused = true)]
async fn many_nodes_at_once_share_one_watch_of_every_pod() {
    let fake = migrating().await;
    fake.add_node("old-3", "ng-old", GroupKind::SelfManaged, 8000, 30);
    fake.add_bare_pod("shop", "debug", "old-3", false);
    let p = Params {
        concurrency: WATCH_PER_NODE_UP_TO + 1,
        ..fast("ng-old")
    };
    // The refusal comes from the watch's first list, before anything changes.
    let writes = fake.state().writes;
    let err = run(&fake, &p, &NoProgress).await.unwrap_err();
    assert!(err.to_string().contains("shop/debug on old-3"), "{err}");
    assert_eq!(fake.state().writes, writes, "nothing cordoned or evicted");
    fake.state().pods.remove("shop/debug");
    let progress = Mutex::new(Vec::new());
    let out = run(&fake, &p, &progress).await.expect("drain");
    assert_eq!(out.drained.len(), 3);
    assert_eq!(out.evicted, 6);
    assert!(evictable_on_old(&fake).is_empty());
    assert!(fake.state().min_available["shop/web"] >= 4);
    let reports = progress.lock().expect("progress");
    assert!(reports.last().is_some_and(|r| r.done == r.total && r.total == 6));
}

#[tokio::test(start_paused = true)]
async fn a_pod_without_a_controller_is_refused_before_anything_changes() {
    let fake = migrating().await;
    fake.add_bare_pod("shop", "debug", "old-1", false);
    let writes = fake.state().writes;
    let err = run(&fake, &fast("ng-old"), &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), "DRAIN_REFUSED");
    assert!(err.to_string().contains("shop/debug on old-1"), "{err}");
    assert_eq!(fake.state().writes, writes, "nothing cordoned or evicted");
    let forced = Params {
        force: true,
        ..fast("ng-old")
    };
    run(&fake, &forced, &NoProgress)
        .await
        .expect("drain with --force");
    assert!(evictable_on_old(&fake).is_empty());
}

/// A budget that can never allow a disruption: `cache` (1 pod) with minAvailable 1.
async fn stuck() -> FakeCluster {
    let fake = migrating().await;
    fake.add_pdb("shop", "cache", "cache", Some(IntOrString::Int(10)), None);
    fake.add_bare_pod("shop", "cache-0", "old-2", false);
    {
        let mut st = fake.state();
        let pod = st.pods.get_mut("shop/cache-0").expect("pod");
        pod.metadata.labels = Some([("app".to_string(), "cache".to_string())].into_iter().collect());
    }
    fake
}

#[tokio::test(start_paused = true)]
async fn fail_names_the_blocking_pod_and_budget() {
    let fake = stuck().await;
    let p = Params {
        node_timeout: Duration::from_secs(30),
        force: true,
        ..fast("ng-old")
    };
    let err = run(&fake, &p, &NoProgress).await.unwrap_err();
    match &err {
        StepError::DrainBlocked { node, blockers, .. } => {
            assert_eq!(node, "old-2");
            assert_eq!(blockers.len(), 1);
            assert_eq!(blockers[0].pod, "shop/cache-0");
            assert_eq!(blockers[0].pdbs, vec!["shop/cache".to_string()]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("shop/cache-0 on old-2: blocked by PodDisruptionBudget (shop/cache)"),
        "{err}"
    );
    // Paced: a handful of probes in 30 s, not a 429 storm.
    assert!(fake.state().refusals <= 10, "refusals {}", fake.state().refusals);
    assert!(fake
        .state()
        .events
        .iter()
        .any(|e| e.reason == "FlotillaDrainBlocked" && e.message.contains("shop/cache-0")));
}

#[tokio::test(start_paused = true)]
async fn skip_node_leaves_it_cordoned_and_reports_it() {
    let fake = stuck().await;
    let p = Params {
        node_timeout: Duration::from_secs(30),
        force: true,
        on_blocked: OnBlocked::SkipNode,
        ..fast("ng-old")
    };
    let out = run(&fake, &p, &NoProgress).await.expect("drain");
    assert_eq!(out.drained, vec!["old-1".to_string()]);
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(out.skipped[0].node, "old-2");
    assert_eq!(out.skipped[0].blockers[0].pdbs, vec!["shop/cache".to_string()]);
    assert_eq!(evictable_on_old(&fake), vec!["shop/cache-0".to_string()]);
    let st = fake.state();
    assert_eq!(
        st.nodes["old-2"].spec.as_ref().and_then(|s| s.unschedulable),
        Some(true)
    );
    assert!(st.events.iter().any(|e| e.reason == "FlotillaDrainSkipped"));
}

/// Keeps what the drain observed (for metrics).
#[derive(Default)]
struct Observed(Mutex<Vec<Observation>>);

impl ProgressSink for Observed {
    fn report(&self, _progress: Progress) {}

    fn observe(&self, o: Observation) {
        self.0.lock().expect("observed").push(o);
    }
}

#[tokio::test(start_paused = true)]
async fn evictions_refusals_and_node_drains_are_observed() {
    let fake = stuck().await;
    let p = Params {
        node_timeout: Duration::from_secs(30),
        force: true,
        on_blocked: OnBlocked::SkipNode,
        ..fast("ng-old")
    };
    let seen = Observed::default();
    let out = run(&fake, &p, &seen).await.expect("drain");
    let seen = seen.0.into_inner().expect("observed");
    let allowed = seen
        .iter()
        .filter(|o| **o == Observation::Eviction(EvictionOutcome::Allowed))
        .count() as u64;
    assert_eq!(allowed, out.evicted);
    let refused: Vec<&Vec<String>> = seen
        .iter()
        .filter_map(|o| match o {
            Observation::Eviction(EvictionOutcome::Refused429 { pdbs }) => Some(pdbs),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len() as u64, out.refusals);
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|p| p.as_slice() == ["shop/cache".to_string()]),
        "{refused:?}"
    );
    let nodes: Vec<(NodeDrainOutcome, Duration)> = seen
        .iter()
        .filter_map(|o| match o {
            Observation::NodeDrain { outcome, took } => Some((*outcome, *took)),
            _ => None,
        })
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes.iter().any(|(o, _)| *o == NodeDrainOutcome::Drained));
    assert!(nodes
        .iter()
        .any(|(o, took)| *o == NodeDrainOutcome::Skipped && *took >= Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn force_after_deletes_and_records_it_loudly() {
    let fake = stuck().await;
    let p = Params {
        node_timeout: Duration::from_secs(60),
        force: true,
        on_blocked: OnBlocked::ForceAfter(Duration::from_secs(10)),
        ..fast("ng-old")
    };
    let out = run(&fake, &p, &NoProgress).await.expect("drain");
    assert_eq!(out.drained.len(), 2);
    assert_eq!(out.forced.len(), 1);
    assert_eq!(out.forced[0].pod, "shop/cache-0");
    assert_eq!(out.forced[0].pdbs, vec!["shop/cache".to_string()]);
    assert!(out.forced[0].blocked_for >= Duration::from_secs(10));
    assert!(evictable_on_old(&fake).is_empty());
    let st = fake.state();
    assert_eq!(st.deletions, 1);
    let forced: Vec<_> = st
        .events
        .iter()
        .filter(|e| e.reason == "FlotillaForcedDeletion")
        .collect();
    assert_eq!(forced.len(), 2, "on the node and on the pod");
    assert!(forced
        .iter()
        .all(|e| e.type_ == crate::cluster::EventType::Warning));
}

#[tokio::test(start_paused = true)]
async fn killed_at_every_write_then_rerun_ends_drained() {
    let reference = migrating().await;
    let before = reference.state().writes;
    run(&reference, &fast("ng-old"), &NoProgress)
        .await
        .expect("drain");
    let writes = reference.state().writes - before;
    for kill_after in 0..writes {
        let fake = migrating().await;
        let base = fake.state().writes;
        fake.state().hang_after_writes = Some(base + kill_after);
        let killed =
            tokio::time::timeout(Duration::from_secs(60), run(&fake, &fast("ng-old"), &NoProgress)).await;
        assert!(killed.is_err(), "run should hang at write {kill_after}");
        fake.state().hang_after_writes = None;
        let out = run(&fake, &fast("ng-old"), &NoProgress).await.expect("rerun");
        assert_eq!(out.drained.len(), 2, "after kill at {kill_after}");
        assert!(evictable_on_old(&fake).is_empty());
        let st = fake.state();
        assert_eq!(
            model::annotation(
                &st.deployments["shop/web"].metadata,
                model::ORIGINAL_REPLICAS_ANNOTATION
            ),
            Some("4")
        );
        assert!(st
            .nodes
            .values()
            .filter(|n| model::in_group(n, "ng-old"))
            .all(|n| model::annotation(&n.metadata, model::CORDONED_ANNOTATION) == Some("true")));
    }
}
