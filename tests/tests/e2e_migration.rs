//! One cluster of the default scenario migrated end to end across separate processes: the
//! simulator, the coordinator, the agent and the `flotilla` CLI (`migrate --wait -o json`). The
//! result is checked from outside through real clients: the managed group through the EKS API, the
//! old Auto Scaling group through the Auto Scaling API, the workloads through kube-rs, and zero
//! downtime through the simulator's statistics.

mod common;

use std::time::Duration;

use common::*;
use flotilla_tests::world::{World, WorldOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_migrates_one_cluster_end_to_end_without_downtime() {
    let world = World::start("migration", WorldOptions::default())
        .await
        .expect("world starts");
    world
        .wait_connected(CLUSTER, true, Duration::from_secs(60))
        .await
        .expect("the agent connects");
    let before = settle_and_record(&world.sim).await;
    assert!(
        managed_groups(&world.sim).await.is_empty(),
        "the default scenario has no managed group yet"
    );

    let template = write_template(world.dir());
    let template = template.to_str().expect("utf-8 path");
    let run = world
        .cli
        .run(&migrate_args(template, &["--wait", "-o", "json"]))
        .await
        .expect("flotilla migrate runs");
    assert_eq!(run.code, Some(0), "{run}");
    let lines = run.json_lines().expect("JSON lines");
    let summary = lines
        .iter()
        .rev()
        .find(|l| text(l, "/type") == "summary")
        .unwrap_or_else(|| panic!("no summary line: {run}"));
    assert_eq!(text(summary, "/operation/state"), "Succeeded", "{run}");
    let steps: Vec<(&str, &str)> = summary["operation"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (text(s, "/kind"), text(s, "/state")))
        .collect();
    assert_eq!(
        steps,
        MIGRATION_STEPS
            .iter()
            .map(|s| (*s, "Succeeded"))
            .collect::<Vec<_>>(),
        "{run}"
    );
    // The watch showed the steps as they went: a log line per step's success.
    for step in MIGRATION_STEPS {
        assert!(
            lines
                .iter()
                .any(|l| text(l, "/type") == "log"
                    && text(l, "/message").contains(&format!("{step} succeeded"))),
            "no log line for {step}: {run}"
        );
    }

    check_migrated(&world.sim, &before).await;
    assert_eq!(managed_groups(&world.sim).await, vec![NEW_GROUP.to_string()]);

    // The same operation, as `operations list` and `get` show it afterwards.
    let id = text(summary, "/operation/id").to_string();
    let list = world
        .cli
        .run(&["operations", "list", "--cluster", CLUSTER, "-o", "json"])
        .await
        .expect("operations list");
    assert_eq!(list.code, Some(0), "{list}");
    let ops = list.json().expect("json");
    assert_eq!(ops["operations"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(text(&ops, "/operations/0/id"), id);
    let mut fleet = world
        .coordinator
        .fleet(flotilla_tests::coordinator::OPERATOR)
        .await
        .expect("fleet client");
    let op = wait_operation(&mut fleet, &id, Duration::from_secs(5), ended).await;
    check_steps_once(&mut fleet, &op).await;
}
