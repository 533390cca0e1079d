//! A migration rollout over three simulated clusters in three stages (`env=dev`, `env=staging`,
//! `env=prod`), each cluster with its own agent process, and the coordinator SIGKILLed while the
//! staging stage is Running (its cluster's SurgeScale in flight), then started again on the same
//! address and data directory: the rollout goes on from sled and ends Succeeded with every cluster
//! Succeeded; each cluster has exactly one operation, every step of it succeeded at its first
//! attempt and is logged once; each cluster is migrated with no PodDisruptionBudget violated and no
//! Deployment below its starting availability.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use flotilla_proto::fleet::v1 as pb;
use flotilla_proto::fleet::v1::fleet_client::FleetClient;
use flotilla_tests::coordinator::OPERATOR;
use flotilla_tests::world::{World, WorldOptions};
use serde_json::json;
use tonic::transport::Channel;

const CLUSTERS: [&str; 3] = ["sim-1", "sim-2", "sim-3"];
const ENVS: [&str; 3] = ["dev", "staging", "prod"];
/// The cluster of the stage that is running when the coordinator dies.
const KILLED_IN: &str = "sim-2";

fn spec() -> String {
    let stages: String = ENVS
        .iter()
        .enumerate()
        .map(|(i, env)| {
            let soak = if i + 1 < ENVS.len() { ", soak: 1s" } else { "" };
            format!("  - {{name: {env}, selector: env={env}, maxConcurrency: 1{soak}}}\n")
        })
        .collect();
    format!(
        "name: e2e-migrate-restart\n\
         work:\n\
         \x20 migration:\n\
         \x20   fromNodegroup: {OLD_GROUP}\n\
         \x20   nodegroupTemplate:\n\
         \x20     nodegroupName: {NEW_GROUP}\n\
         \x20     instanceTypes: [m5.xlarge]\n\
         \x20     scalingConfig: {{minSize: 4, maxSize: 8, desiredSize: 4}}\n\
         \x20     nodeRole: arn:aws:iam::111122223333:role/eks-node\n\
         \x20   drainConcurrency: 2\n\
         \x20   force: true\n\
         \x20   deleteEmptydirData: true\n\
         stages:\n{stages}"
    )
}

async fn get_rollout(fleet: &mut FleetClient<Channel>, id: &str) -> Option<pb::Rollout> {
    fleet
        .get_rollout(pb::GetRolloutRequest {
            rollout_id: id.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

fn final_state(state: i32) -> bool {
    [
        pb::RolloutState::Succeeded,
        pb::RolloutState::Failed,
        pb::RolloutState::Cancelled,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

fn cluster_of<'a>(r: &'a pb::Rollout, cluster: &str) -> Option<(&'a pb::Stage, &'a pb::ClusterState)> {
    r.stages.iter().find_map(|s| {
        s.clusters
            .iter()
            .find(|c| c.cluster_id == cluster)
            .map(|c| (s, c))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_sigkilled_while_a_stage_runs_and_the_rollout_completes() {
    let labels = ENVS
        .iter()
        .map(|e| BTreeMap::from([("env".to_string(), e.to_string())]))
        .collect();
    let mut world = World::start(
        "rollout-restart",
        WorldOptions {
            clusters: CLUSTERS.len(),
            all_agents: true,
            labels,
            ..WorldOptions::default()
        },
    )
    .await
    .expect("world starts");
    for c in CLUSTERS {
        world
            .wait_connected(c, true, Duration::from_secs(60))
            .await
            .expect("the agent connects");
    }
    let befores = settle_and_record_all(&world.sim, &CLUSTERS).await;
    // The staging cluster's Kubernetes API answers slowly, so its agent steps are still running
    // when the coordinator dies.
    world
        .sim
        .set_faults(KILLED_IN, &json!({"apiLatency": "150ms"}))
        .await
        .expect("set faults");

    let path = world.dir().join("rollout.yaml");
    std::fs::write(&path, spec()).expect("write the spec");
    let id = create_rollout(&world, &path).await;

    // Wait until the staging stage is Running and its cluster's SurgeScale is in flight.
    let mut fleet = world.coordinator.fleet(OPERATOR).await.expect("fleet client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let (operation, before_kill) = loop {
        let r = get_rollout(&mut fleet, &id).await.expect("GetRollout");
        assert!(!final_state(r.state), "the rollout ended before the kill: {r:#?}");
        if let Some((stage, c)) = cluster_of(&r, KILLED_IN) {
            if let Some(op) = c
                .operation_id
                .clone()
                .filter(|_| stage.state == pb::RolloutState::Running as i32)
            {
                let o = fleet
                    .get_operation(pb::GetOperationRequest {
                        operation_id: op.clone(),
                    })
                    .await
                    .expect("GetOperation")
                    .into_inner();
                if running(&o, "SurgeScale") {
                    break (op, r);
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the staging stage never ran SurgeScale: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    world.coordinator.kill().await.expect("SIGKILL");
    let (stage, _) = cluster_of(&before_kill, KILLED_IN).expect("staged");
    assert_eq!(stage.spec.as_ref().map(|s| s.name.as_str()), Some("staging"));
    assert_eq!(
        cluster_of(&before_kill, "sim-1").map(|(_, c)| c.state),
        Some(pb::RolloutState::Succeeded as i32),
        "dev was done before staging began: {before_kill:#?}"
    );
    world
        .coordinator
        .restart()
        .await
        .expect("the coordinator restarts");
    world
        .sim
        .set_faults(KILLED_IN, &json!({}))
        .await
        .expect("clear faults");

    let mut fleet = world.coordinator.fleet(OPERATOR).await.expect("fleet client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let done = loop {
        if let Some(r) = get_rollout(&mut fleet, &id)
            .await
            .filter(|r| final_state(r.state))
        {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not end after the restart: {:#?}",
            get_rollout(&mut fleet, &id).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        done.state,
        pb::RolloutState::Succeeded as i32,
        "rollout: {done:#?}"
    );

    for before in &befores {
        let cluster = before.cluster.as_str();
        let (_, c) = cluster_of(&done, cluster).expect("every cluster is staged");
        assert_eq!(c.state, pb::RolloutState::Succeeded as i32, "{cluster}: {c:#?}");
        // One operation per cluster: the restart re-ensured the one in flight, it made no other.
        let ops = fleet
            .list_operations(pb::ListOperationsRequest {
                cluster_id: cluster.into(),
                rollout_id: id.clone(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .expect("ListOperations")
            .into_inner()
            .operations;
        assert_eq!(ops.len(), 1, "{cluster}'s operations: {ops:#?}");
        let op = wait_operation(&mut fleet, &ops[0].id, Duration::from_secs(10), ended).await;
        if cluster == KILLED_IN {
            assert_eq!(
                op.id, operation,
                "the operation in flight at the kill is the one that finished"
            );
        }
        // Every step succeeded at attempt 1, logged once: nothing ran twice.
        check_steps_once(&mut fleet, &op).await;
        assert_eq!(
            managed_groups_of(&world.sim, cluster).await,
            vec![NEW_GROUP.to_string()],
            "{cluster}: one managed group, created once"
        );
        // Migrated, no PodDisruptionBudget violated, no Deployment below its start.
        check_migrated(&world.sim, before).await;
    }
}
