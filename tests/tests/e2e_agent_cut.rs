//! The agent process SIGKILLed mid-drain and started again, then the stream between agent and
//! coordinator cut (a TCP proxy between them closes every connection) while the restarted agent
//! finishes the drain: the result, held by the agent until acked, arrives after the stream comes
//! back and is applied once — the Drain step succeeds at attempt 1 with one success line in the
//! event log — and the migration completes without downtime.

mod common;

use std::time::Duration;

use common::*;
use flotilla_tests::agent::{field, field_str, message};
use flotilla_tests::coordinator::OPERATOR;
use flotilla_tests::world::{World, WorldOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_drain_and_stream_cut_result_arrives_once() {
    let t0 = std::time::Instant::now();
    // Phase times, shown when the test fails (or with --nocapture).
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let mut world = World::start(
        "agent-cut",
        WorldOptions {
            proxy: true,
            ..WorldOptions::default()
        },
    )
    .await
    .expect("world starts");
    phase("the world is up (binaries built, simulator, coordinator, proxy, agent started)");
    world
        .wait_connected(CLUSTER, true, Duration::from_secs(60))
        .await
        .expect("the agent connects through the proxy");
    let before = settle_and_record(&world.sim).await;
    // A slow Kubernetes API keeps the drain going long enough to kill and cut in the middle.
    world
        .sim
        .set_faults(CLUSTER, &json!({"apiLatency": "150ms"}))
        .await
        .expect("set faults");

    phase("settled: migrating");
    let id = start_migration(&world).await;
    let mut fleet = world.coordinator.fleet(OPERATOR).await.expect("fleet client");

    // Mid-drain: at least one pod evicted, the drain still running.
    wait_operation(&mut fleet, &id, Duration::from_secs(300), |op| {
        running(op, "Drain") && step(op, "Drain").progress.as_ref().is_some_and(|p| p.done >= 1)
    })
    .await;
    phase("mid-drain: killing the agent");
    world.kill_agent().await.expect("SIGKILL the agent");
    world.start_agent().expect("start the agent again");

    // The new agent gets the drain again (the same attempt) and runs it.
    let agent = world.agent.as_mut().expect("agent");
    let (started, line) = agent
        .wait_log(
            0,
            "the restarted agent starting Drain",
            Duration::from_secs(120),
            |v| message(v) == "step started" && field_str(v, "kind") == "Drain",
        )
        .await
        .expect("the restarted agent runs the drain");
    assert_eq!(
        field(&line, "attempt").and_then(|a| a.as_u64()),
        Some(1),
        "the drain is handed over as the same attempt: {line}"
    );

    phase("the restarted agent runs the drain: cutting the stream");
    // Cut the stream while the drain runs: its result is made with no coordinator to take it.
    // The Kubernetes API is fast again, so the drain ends while the stream is cut.
    world.proxy.as_ref().expect("proxy").cut();
    world
        .sim
        .set_faults(CLUSTER, &json!({}))
        .await
        .expect("clear faults");
    let agent = world.agent.as_mut().expect("agent");
    agent
        .wait_log(started, "the session lost", Duration::from_secs(60), |v| {
            message(v) == "coordinator session lost; reconnecting"
        })
        .await
        .expect("the agent notices the cut");
    let (finished, _) = agent
        .wait_log(started, "Drain finishing", Duration::from_secs(300), |v| {
            message(v) == "step succeeded" && field_str(v, "kind") == "Drain"
        })
        .await
        .expect("the drain finishes while cut off");
    phase("the drain finished while cut off");
    world
        .wait_connected(CLUSTER, false, Duration::from_secs(60))
        .await
        .expect("the coordinator sees the agent gone");
    // The cut lasts while the agent keeps retrying (each attempt is refused by the proxy).
    let refused = world.proxy.as_ref().expect("proxy").accepted();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while world.proxy.as_ref().expect("proxy").accepted() < refused + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent stopped trying to reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    phase("restoring the stream");
    world.proxy.as_ref().expect("proxy").restore();

    // Reconnected, the agent re-sends the result it still holds.
    let agent = world.agent.as_mut().expect("agent");
    agent
        .wait_log(
            finished,
            "a reconnect re-sending the result",
            Duration::from_secs(120),
            |v| {
                message(v) == "connected to the coordinator"
                    && field(v, "resent").and_then(|r| r.as_u64()).unwrap_or(0) >= 1
            },
        )
        .await
        .expect("the agent reconnects and re-sends the drain's result");

    phase("the result was re-sent");
    let op = wait_operation(&mut fleet, &id, Duration::from_secs(300), ended).await;
    let log = check_steps_once(&mut fleet, &op).await;
    assert!(
        count(&log, "agent disconnected during Drain") >= 1,
        "the cut is in the event log: {log:#?}"
    );
    phase("checking the cluster");
    check_migrated(&world.sim, &before).await;
}
