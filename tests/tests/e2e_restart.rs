//! The coordinator process SIGKILLed while an agent step is in flight — once during SurgeScale,
//! once during Drain — and started again on the same address and data directory: the operation
//! continues where it stood and completes, every step succeeding once (at attempt 1, one success
//! line in the event log), with the cluster migrated and no downtime.

mod common;

use std::time::Duration;

use common::*;
use flotilla_tests::agent::{field_str, json_lines, message};
use flotilla_tests::coordinator::OPERATOR;
use flotilla_tests::process::Stream;
use flotilla_tests::world::{World, WorldOptions};
use serde_json::{json, Value};

/// Whether a coordinator JSON log line says `msg` about `step`.
fn says(line: &str, msg: &str, step: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| message(&v) == msg && field_str(&v, "step") == step)
}

/// Waits until the coordinator has sent `step`'s RunStep to the agent, SIGKILLs it at once,
/// checks the killed process had not received the step's result, and starts it again.
async fn kill_during(world: &mut World, step: &str) {
    world
        .coordinator
        .proc
        .wait_line(
            Stream::Stderr,
            &format!("RunStep of {step} sent to the agent"),
            Duration::from_secs(300),
            |l| says(l, "RunStep sent to the agent", step),
        )
        .await
        .expect("the step is sent");
    world.coordinator.kill().await.expect("SIGKILL");
    let results: Vec<Value> = json_lines(&world.coordinator.proc)
        .into_iter()
        .filter(|v| message(v) == "step result" && field_str(v, "step") == step)
        .collect();
    assert!(
        results.is_empty(),
        "the coordinator had {step}'s result before it was killed, so it was not killed during the step: {results:?}"
    );
    world
        .coordinator
        .restart()
        .await
        .expect("the coordinator restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_sigkilled_during_surge_scale_and_drain_resumes_and_completes_once() {
    let mut world = World::start("restart", WorldOptions::default())
        .await
        .expect("world starts");
    world
        .wait_connected(CLUSTER, true, Duration::from_secs(60))
        .await
        .expect("the agent connects");
    let before = settle_and_record(&world.sim).await;
    // Every Kubernetes API call of the cluster takes a while, so the agent's steps are still
    // running when the coordinator dies.
    world
        .sim
        .set_faults(CLUSTER, &json!({"apiLatency": "150ms"}))
        .await
        .expect("set faults");

    let id = start_migration(&world).await;

    kill_during(&mut world, "SurgeScale").await;
    kill_during(&mut world, "Drain").await;
    world
        .sim
        .set_faults(CLUSTER, &json!({}))
        .await
        .expect("clear faults");

    let mut fleet = world.coordinator.fleet(OPERATOR).await.expect("fleet client");
    let op = wait_operation(&mut fleet, &id, Duration::from_secs(300), ended).await;
    let log = check_steps_once(&mut fleet, &op).await;
    // Each restart found the step in flight and handed it to the agent again, not anew.
    for step in ["SurgeScale", "Drain"] {
        assert_eq!(
            count(&log, &format!("{step} started (attempt 2)")),
            0,
            "{step} was started again as a new attempt: {log:#?}"
        );
    }

    // `operations get` agrees: every step succeeded at its first attempt.
    let get = world
        .cli
        .run(&["operations", "get", &id, "-o", "json"])
        .await
        .expect("operations get");
    assert_eq!(get.code, Some(0), "{get}");
    let view = get.json().expect("json");
    assert_eq!(text(&view, "/state"), "Succeeded", "{get}");
    for s in view["steps"].as_array().expect("steps") {
        assert_eq!(
            (text(s, "/state"), s["attempt"].as_u64()),
            ("Succeeded", Some(1)),
            "{s}"
        );
    }

    check_migrated(&world.sim, &before).await;
}
