//! Rendering tests: tables, JSON and YAML carry the right content.

use std::collections::HashMap;

use flotilla_proto::fleet::v1 as pb;
use jiff::Timestamp;

use super::*;

fn ts(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

const NOW: i64 = 1_750_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn cluster() -> pb::Cluster {
    pb::Cluster {
        id: "prod-eu-1".into(),
        eks_name: "prod-eu-1-eks".into(),
        region: "eu-west-1".into(),
        labels: HashMap::from([("env".into(), "prod".into()), ("team".into(), "payments".into())]),
        connected: true,
        agent_version: "0.1.0".into(),
        last_seen: ts(NOW - 12),
        inventory: Some(pb::Inventory {
            addon_workloads: Vec::new(),
            addon_workloads_reported: false,
            deprecated_api_scan: None,
            version: "v1.33.4-eks-1234567".into(),
            node_groups: vec![
                pb::NodeGroup {
                    name: "ng-old".into(),
                    kind: pb::NodeGroupKind::SelfManaged as i32,
                    node_count: 3,
                    ready_count: 3,
                    kubelet_versions: vec!["v1.33.4".into()],
                },
                pb::NodeGroup {
                    name: "ng-new".into(),
                    kind: pb::NodeGroupKind::Managed as i32,
                    node_count: 2,
                    ready_count: 1,
                    kubelet_versions: vec!["v1.33.4".into()],
                },
            ],
            nodes: vec![pb::Node {
                name: "ip-10-0-1-1".into(),
                group: Some("ng-old".into()),
                group_kind: pb::NodeGroupKind::SelfManaged as i32,
                kubelet_version: "v1.33.4".into(),
                ready: true,
                schedulable: true,
            }],
            deployments: vec![],
            blocking_pdbs: vec![pb::PodDisruptionBudget {
                name: "shop/web".into(),
                expected: 3,
                healthy: 2,
                desired: 2,
            }],
        }),
        current_operation_id: Some("op-1".into()),
    }
}

fn blocker() -> pb::Blocker {
    pb::Blocker {
        pod: "shop/web-7d9f-abcde".into(),
        node: "ip-10-0-1-1".into(),
        pdbs: vec!["shop/web".into()],
        reason: "blocked by PodDisruptionBudget".into(),
        blocked_for: Some(prost_types::Duration {
            seconds: 125,
            nanos: 0,
        }),
    }
}

fn operation() -> pb::Operation {
    pb::Operation {
        id: "op-1".into(),
        cluster_id: "prod-eu-1".into(),
        work: Some(pb::Work {
            kind: Some(pb::work::Kind::Migration(pb::MigrationParams {
                from_nodegroup: "ng-old".into(),
                nodegroup: Some(pb::NodegroupTemplate {
                    nodegroup_name: "ng-new".into(),
                    ..Default::default()
                }),
                surge: Some(pb::migration_params::Surge::SurgePercent(100)),
                ..Default::default()
            })),
        }),
        state: pb::OperationState::Running as i32,
        steps: vec![
            pb::OperationStep {
                step_id: "1".into(),
                kind: pb::OperationStepKind::Taint as i32,
                state: pb::StepState::Succeeded as i32,
                attempt: 1,
                started_at: ts(NOW - 300),
                finished_at: ts(NOW - 290),
                output: Some(pb::StepOutput {
                    output: Some(pb::step_output::Output::Taint(pb::TaintOutput {
                        nodes: vec!["a".into(), "b".into(), "c".into()],
                        changed: vec!["a".into()],
                    })),
                }),
                ..Default::default()
            },
            pb::OperationStep {
                step_id: "2".into(),
                kind: pb::OperationStepKind::Drain as i32,
                state: pb::StepState::Running as i32,
                attempt: 2,
                started_at: ts(NOW - 200),
                progress: Some(pb::StepProgress {
                    done: 12,
                    total: 40,
                    message: "pods evicted".into(),
                    blockers: vec![blocker()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::OperationStep {
                step_id: "3".into(),
                kind: pb::OperationStepKind::RestoreScale as i32,
                state: pb::StepState::Pending as i32,
                ..Default::default()
            },
        ],
        rollout_id: None,
        created_by: "operator:alice".into(),
        created_at: ts(NOW - 310),
        started_at: ts(NOW - 300),
        finished_at: None,
        failure: String::new(),
    }
}

#[test]
fn durations_for_people() {
    assert_eq!(human_duration(0.2), "0s");
    assert_eq!(human_duration(45.0), "45s");
    assert_eq!(human_duration(192.0), "3m12s");
    assert_eq!(human_duration(3900.0), "1h05m");
    assert_eq!(human_duration(2.0 * 86400.0 + 3.0 * 3600.0), "2d03h");
    assert_eq!(age(None, now()), "-");
    assert_eq!(age(ts(NOW - 90).as_ref(), now()), "1m30s");
}

#[test]
fn table_aligns_columns() {
    let mut t = Table::new(&["A", "LONGER"]);
    t.row(vec!["wide-cell".into(), "x".into()]);
    assert_eq!(t.render(), "A           LONGER\nwide-cell   x\n");
}

#[test]
fn clusters_table_shows_inventory() {
    let out = clusters_table(&[cluster()], now());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("NODE GROUPS"),
        "{out}"
    );
    for want in [
        "prod-eu-1",
        "eu-west-1",
        "v1.33.4-eks-1234567",
        "connected",
        "12s ago",
        "ng-old(self,3) ng-new(managed,2)",
        "op-1",
        "env=prod,team=payments",
    ] {
        assert!(lines[1].contains(want), "missing {want}: {out}");
    }
    // Columns line up: every header starts where its cell starts.
    let col = lines[0].find("REGION").unwrap();
    assert_eq!(&lines[1][col..col + 9], "eu-west-1");
    assert_eq!(clusters_table(&[], now()), "No clusters.\n");
}

#[test]
fn cluster_detail_lists_groups_and_blocking_pdbs() {
    let out = cluster_detail(&cluster(), now());
    assert!(out.contains("Version:        v1.33.4-eks-1234567"), "{out}");
    assert!(out.contains("Agent:          connected, version 0.1.0"), "{out}");
    assert!(out.contains("Last seen:      12s ago (2025-"), "{out}");
    assert!(out.contains("Operation:      op-1"), "{out}");
    let ng = out
        .lines()
        .find(|l| l.trim_start().starts_with("ng-new"))
        .unwrap();
    assert!(
        ng.contains("managed") && ng.contains(" 2 ") && ng.contains(" 1 "),
        "{ng}"
    );
    assert!(out.contains("shop/web"), "{out}");
}

#[test]
fn cluster_json_and_yaml_are_camel_case() {
    let view = ClusterView::from(&cluster());
    let json: serde_json::Value = serde_json::from_str(&render(Format::Json, &view, String::new)).unwrap();
    assert_eq!(json["id"], "prod-eu-1");
    assert_eq!(json["eksName"], "prod-eu-1-eks");
    assert_eq!(json["lastSeen"], "2025-06-15T15:06:28Z");
    assert_eq!(json["nodeGroups"][0]["kind"], "self-managed");
    assert_eq!(json["nodeGroups"][1]["ready"], 1);
    assert_eq!(json["currentOperation"], "op-1");
    assert_eq!(json["blockingPdbs"][0]["name"], "shop/web");
    let yaml = render(Format::Yaml, &view, String::new);
    let back: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back["agentVersion"], serde_yaml::Value::from("0.1.0"));
    assert_eq!(back["labels"]["team"], serde_yaml::Value::from("payments"));
}

#[test]
fn operation_detail_shows_steps_progress_and_blockers() {
    let out = operation_detail(&operation(), now());
    assert!(
        out.contains("Work:        migrate ng-old -> ng-new (managed)"),
        "{out}"
    );
    assert!(out.contains("State:       Running"), "{out}");
    assert!(out.contains("Running:     5m00s"), "{out}");
    let taint = out.lines().find(|l| l.starts_with("Taint")).unwrap();
    assert!(
        taint.contains("Succeeded") && taint.contains("10s") && taint.contains("tainted 3 nodes (1 changed)"),
        "{taint}"
    );
    let drain = out.lines().find(|l| l.starts_with("Drain")).unwrap();
    assert!(
        drain.contains("Running") && drain.contains("3m20s") && drain.contains("12/40 pods evicted"),
        "{drain}"
    );
    assert!(
        out.contains("pod web-7d9f-abcde in namespace shop on ip-10-0-1-1: blocked by PodDisruptionBudget (PDB shop/web) for 2m05s"),
        "{out}"
    );
}

#[test]
fn operation_json_names_states_and_kinds() {
    let view = OperationView::new(&operation(), now());
    let json: serde_json::Value = serde_json::from_str(&render(Format::Json, &view, String::new)).unwrap();
    assert_eq!(json["kind"], "migration");
    assert_eq!(json["state"], "Running");
    assert_eq!(json["work"]["migration"]["fromNodegroup"], "ng-old");
    assert_eq!(json["work"]["migration"]["surge"], "100%");
    assert_eq!(
        json["work"]["migration"]["nodegroupTemplate"]["nodegroupName"],
        "ng-new"
    );
    assert_eq!(json["steps"][1]["kind"], "Drain");
    assert_eq!(json["steps"][1]["progress"]["done"], 12);
    assert_eq!(json["steps"][1]["progress"]["blockers"][0]["namespace"], "shop");
    assert_eq!(
        json["steps"][1]["progress"]["blockers"][0]["pod"],
        "web-7d9f-abcde"
    );
    assert_eq!(json["steps"][0]["seconds"], 10.0);
    assert!(json.get("failure").is_none());
}

#[test]
fn operations_table_shows_current_step() {
    let out = operations_table(&[operation()], now());
    let row = out.lines().nth(1).unwrap();
    for want in [
        "op-1",
        "prod-eu-1",
        "migration",
        "Running",
        "Drain",
        "5m10s",
        "5m00s",
    ] {
        assert!(row.contains(want), "missing {want}: {out}");
    }
}

fn rollout() -> pb::Rollout {
    let mut failed = pb::ClusterState {
        cluster_id: "dev-2".into(),
        state: pb::RolloutState::Failed as i32,
        operation_id: Some("op-3".into()),
        failed_step: pb::OperationStepKind::Drain as i32,
        error: Some(pb::StepError {
            code: pb::step_error::Code::DrainBlocked as i32,
            message: "node ip-1 not empty after 10m".into(),
            blockers: vec![blocker()],
            ..Default::default()
        }),
        ..Default::default()
    };
    failed.reason = "Drain failed".into();
    pb::Rollout {
        id: "ro-1".into(),
        name: "migrate-fleet".into(),
        work: operation().work,
        state: pb::RolloutState::WaitingForApproval as i32,
        stages: vec![
            pb::Stage {
                index: 0,
                spec: Some(pb::StageSpec {
                    name: "dev".into(),
                    selector: "env=dev".into(),
                    max_parallel: 2,
                    soak: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    max_failures: 2,
                    require_approval: false,
                    max_parallel_percent: 0,
                }),
                state: pb::RolloutState::Succeeded as i32,
                clusters: vec![
                    pb::ClusterState {
                        cluster_id: "dev-1".into(),
                        state: pb::RolloutState::Succeeded as i32,
                        ..Default::default()
                    },
                    failed,
                ],
                failures: 1,
                ..Default::default()
            },
            pb::Stage {
                index: 1,
                spec: Some(pb::StageSpec {
                    name: "prod".into(),
                    selector: "env=prod".into(),
                    max_parallel: 10,
                    require_approval: true,
                    ..Default::default()
                }),
                state: pb::RolloutState::WaitingForApproval as i32,
                clusters: vec![pb::ClusterState {
                    cluster_id: "prod-1".into(),
                    state: pb::RolloutState::Pending as i32,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
        created_by: "operator:alice".into(),
        created_at: ts(NOW - 3600),
        finished_at: None,
        reason: String::new(),
        ..Default::default()
    }
}

#[test]
fn rollout_detail_shows_stages_clusters_and_failures() {
    let out = rollout_detail(&rollout(), now());
    assert!(out.contains("Rollout:   ro-1 (migrate-fleet)"), "{out}");
    assert!(out.contains("State:     WaitingForApproval"), "{out}");
    let dev = out.lines().find(|l| l.starts_with("0 ")).unwrap();
    for want in ["dev", "env=dev", "Succeeded", "2/2", "1/2", "1m00s"] {
        assert!(dev.contains(want), "missing {want}: {dev}");
    }
    let prod = out.lines().find(|l| l.starts_with("1 ")).unwrap();
    assert!(
        prod.contains("WaitingForApproval") && prod.contains("required") && prod.contains("0/1"),
        "{prod}"
    );
    let failed = out.lines().find(|l| l.contains("dev-2")).unwrap();
    assert!(
        failed.contains("Failed")
            && failed.contains("Drain")
            && failed.contains("DRAIN_BLOCKED: node ip-1 not empty"),
        "{failed}"
    );
    assert!(
        out.contains("dev-2: pod web-7d9f-abcde in namespace shop"),
        "{out}"
    );
}

#[test]
fn rollout_json_and_list() {
    let view = RolloutView::from(&rollout());
    let json: serde_json::Value = serde_json::from_str(&render(Format::Json, &view, String::new)).unwrap();
    assert_eq!(json["state"], "WaitingForApproval");
    assert_eq!(json["stages"][0]["soakSeconds"], 60.0);
    assert_eq!(json["stages"][1]["requireApproval"], true);
    assert_eq!(json["stages"][0]["clusters"][1]["failedStep"], "Drain");
    assert_eq!(json["stages"][0]["clusters"][1]["error"]["code"], "DRAIN_BLOCKED");
    let out = rollouts_table(&[rollout()], now());
    let row = out.lines().nth(1).unwrap();
    for want in [
        "ro-1",
        "migrate-fleet",
        "migration",
        "WaitingForApproval",
        "2/2 prod",
        "2/3 done",
        "1h00m",
    ] {
        assert!(row.contains(want), "missing {want}: {out}");
    }
}
