//! The `flotilla` CLI's errors against a running coordinator and simulator: an unknown cluster
//! (NotFound naming it), a bad node group template (exit 2, naming file:line and the field, before
//! any call: nothing changes in the simulated fleet), an unreachable coordinator (exit 3 with its
//! URL), and a viewer identity's mutation refused (while its reads work).

mod common;

use std::time::Duration;

use common::*;
use flotilla_tests::cli::Cli;
use flotilla_tests::coordinator::VIEWER;
use flotilla_tests::world::{World, WorldOptions};

/// What must not change: operations on the coordinator, EKS node groups and Auto Scaling groups.
async fn fleet_state(world: &World) -> (usize, Vec<String>, Vec<String>) {
    let ops = world
        .cli
        .run(&["operations", "list", "-o", "json"])
        .await
        .expect("operations list");
    assert_eq!(ops.code, Some(0), "{ops}");
    let n = ops.json().expect("json")["operations"]
        .as_array()
        .map_or(0, Vec::len);
    (n, managed_groups(&world.sim).await, asg_names(&world.sim).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_name_the_problem_and_change_nothing() {
    let world = World::start(
        "cli-errors",
        WorldOptions {
            agent: false,
            ..WorldOptions::default()
        },
    )
    .await
    .expect("world starts");
    let unchanged = fleet_state(&world).await;
    assert_eq!(unchanged.0, 0);
    let good = write_template(world.dir());
    let good = good.to_str().expect("utf-8");

    // Unknown cluster: NotFound from the coordinator, naming it.
    for args in [
        vec!["clusters", "get", "prod-nope"],
        vec![
            "migrate",
            "prod-nope",
            "--from",
            OLD_GROUP,
            "--nodegroup-template",
            good,
        ],
    ] {
        let run = world.cli.run(&args).await.expect("run");
        assert_eq!(run.code, Some(3), "{run}");
        assert!(
            run.stderr.contains("\"prod-nope\" not found") && run.stderr.contains(CLUSTER),
            "the error names the unknown cluster and the known ones: {run}"
        );
    }

    // Bad templates: exit 2 before any call, naming file:line and the field.
    let bad_value = world.dir().join("bad-value.yaml");
    std::fs::write(
        &bad_value,
        "nodegroupName: ng-new\ninstanceTypes: [m5.xlarge]\nscalingConfig:\n  minSize: four\n  maxSize: 8\n  desiredSize: 4\n",
    )
    .expect("write");
    let typo = world.dir().join("typo.yaml");
    std::fs::write(
        &typo,
        "nodegroupName: ng-new\ninstanceType: m5.xlarge\nscalingConfig: {minSize: 4, maxSize: 8, desiredSize: 4}\n",
    )
    .expect("write");
    for (file, line, field) in [
        (&bad_value, 4, "`scalingConfig.minSize`"),
        (&typo, 2, "instanceType"),
    ] {
        let path = file.to_str().expect("utf-8");
        let run = world
            .cli
            .run(&[
                "migrate",
                CLUSTER,
                "--from",
                OLD_GROUP,
                "--nodegroup-template",
                path,
            ])
            .await
            .expect("run");
        assert_eq!(run.code, Some(2), "{run}");
        assert!(
            run.stderr.contains(&format!("{path}:{line}:")) && run.stderr.contains(field),
            "the error names {path}:{line} and {field}: {run}"
        );
    }
    assert_eq!(
        fleet_state(&world).await,
        unchanged,
        "a bad template changed the fleet"
    );

    // Unreachable coordinator: exit 3 with the URL.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("https://127.0.0.1:{port}");
    let nowhere = Cli::new(url.clone(), &world.pki.dir, flotilla_tests::coordinator::OPERATOR);
    let run = tokio::time::timeout(Duration::from_secs(60), nowhere.run(&["clusters", "list"]))
        .await
        .expect("the CLI gives up in time")
        .expect("run");
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the coordinator at {url}")),
        "{run}"
    );

    // A viewer may read but not start a migration.
    let viewer = world.cli.as_identity(VIEWER);
    let list = viewer
        .run(&["clusters", "list", "-o", "json"])
        .await
        .expect("run");
    assert_eq!(list.code, Some(0), "{list}");
    let run = viewer
        .run(&[
            "migrate",
            CLUSTER,
            "--from",
            OLD_GROUP,
            "--nodegroup-template",
            good,
        ])
        .await
        .expect("run");
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr.contains("permission denied") && run.stderr.contains("viewer role"),
        "{run}"
    );
    assert_eq!(
        fleet_state(&world).await,
        unchanged,
        "a refused call changed the fleet"
    );
}
