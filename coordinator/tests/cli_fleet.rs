//! Cross-process tests of the `flotilla` CLI: the real binary against an in-test Fleet server over
//! mTLS on 127.0.0.1 — outputs, watches to their end, error mapping and exit codes.

mod cli_support;

use cli_support::{Harness, Run};

const TEMPLATE: &str = "\
nodegroupName: ng-managed
instanceTypes: [m6i.large]
scalingConfig: {minSize: 2, maxSize: 4, desiredSize: 2}
nodeRole: arn:aws:iam::111122223333:role/eks-node
labels: {pool: general}
";

fn ok(run: &Run) {
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn clusters_list_and_get_in_every_format() {
    let h = Harness::start().await;
    let run = h.run("alice", &["clusters", "list"]).await;
    ok(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LAST SEEN"),
        "{}",
        run.stdout
    );
    assert_eq!(lines.len(), 6, "{}", run.stdout);
    let dev3 = lines.iter().find(|l| l.starts_with("dev-3")).unwrap();
    assert!(
        dev3.contains("disconnected") && dev3.contains("ng-old(self,3)"),
        "{dev3}"
    );

    let run = h
        .run("bob", &["clusters", "list", "-l", "env=dev", "-o", "json"])
        .await;
    ok(&run);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let ids: Vec<&str> = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dev-1", "dev-2", "dev-3"]);
    assert_eq!(h.recorded.lock().unwrap().selectors.last().unwrap(), "env=dev");

    let run = h.run("bob", &["clusters", "get", "prod-1", "-o", "yaml"]).await;
    ok(&run);
    let v: serde_yaml::Value = serde_yaml::from_str(&run.stdout).unwrap();
    assert_eq!(v["eksName"].as_str(), Some("prod-1-eks"));
    assert_eq!(v["nodeGroups"][0]["kind"].as_str(), Some("self-managed"));

    let run = h.run("bob", &["clusters", "get", "prod-1"]).await;
    ok(&run);
    assert!(
        run.stdout.contains("Version:        v1.33.4-eks-1"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Node groups:"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_cluster_is_the_servers_not_found() {
    let h = Harness::start().await;
    let run = h.run("alice", &["clusters", "get", "nope"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("error: cluster_id: cluster \"nope\" not found"),
        "{}",
        run.stderr
    );
    let run = h.run("alice", &["operations", "get", "op-zzz"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("operation \"op-zzz\" not found"),
        "{}",
        run.stderr
    );
    let run = h.run("alice", &["rollout", "watch", "ro-404"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("rollout \"ro-404\" not found"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_sends_the_template_and_flags() {
    let h = Harness::start().await;
    let template = h.file("ng.yaml", TEMPLATE);
    let run = h
        .run(
            "alice",
            &[
                "migrate",
                "dev-1",
                "--from",
                "ng-old",
                "--nodegroup-template",
                template.to_str().unwrap(),
                "--surge",
                "2",
                "--on-blocked",
                "skip-node",
                "--drain-concurrency",
                "4",
                "--node-timeout",
                "20m",
                "--delete-emptydir-data",
            ],
        )
        .await;
    ok(&run);
    assert!(
        run.stdout
            .contains("Started operation op-dev-1 on dev-1: migrate ng-old -> ng-managed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("flotilla operations watch op-dev-1"),
        "{}",
        run.stdout
    );
    let started = h.recorded.lock().unwrap().started.clone();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].cluster_id, "dev-1");
    assert!(!started[0].dry_run);
    let Some(flotilla_proto::fleet::v1::work::Kind::Migration(m)) = started[0].work.clone().unwrap().kind
    else {
        panic!("not a migration")
    };
    let t = m.nodegroup.unwrap();
    assert_eq!(t.nodegroup_name, "ng-managed");
    assert_eq!(t.scaling_config.unwrap().desired_size, 2);
    assert_eq!(t.labels.get("pool").map(String::as_str), Some("general"));
    assert_eq!(m.from_nodegroup, "ng-old");
    assert_eq!(
        m.surge,
        Some(flotilla_proto::fleet::v1::migration_params::Surge::SurgeCount(2))
    );
    assert_eq!(m.drain_concurrency, 4);
    assert_eq!(m.node_timeout.unwrap().seconds, 1200);
    assert!(m.delete_emptydir_data && !m.force);
    assert!(matches!(
        m.on_blocked.unwrap().policy,
        Some(flotilla_proto::fleet::v1::on_blocked::Policy::SkipNode(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_template_is_refused_before_any_call() {
    let h = Harness::start().await;
    let template = h.file(
        "ng.yaml",
        "nodegroupName: ng-managed\nscalingConfig:\n  minSize: 2\n  maxSize: 4\n  desiredSize: 2\ntaints:\n  - {key: a, effect: NoSchedule}\n",
    );
    let run = h
        .run(
            "alice",
            &[
                "migrate",
                "dev-1",
                "--nodegroup-template",
                template.to_str().unwrap(),
            ],
        )
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    let want = format!("error: {}:7:", template.display());
    assert!(run.stderr.contains(&want), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("field `taints[0].effect`: `NoSchedule` is not a valid effect; write `NO_SCHEDULE`"),
        "{}",
        run.stderr
    );
    assert!(h.recorded.lock().unwrap().started.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_wait_follows_to_success() {
    let h = Harness::start().await;
    let template = h.file("ng.yaml", TEMPLATE);
    let run = h
        .run(
            "alice",
            &[
                "migrate",
                "dev-1",
                "--nodegroup-template",
                template.to_str().unwrap(),
                "--wait",
            ],
        )
        .await;
    ok(&run);
    let out = &run.stdout;
    assert!(out.contains("operation op-dev-1 on dev-1: Running"), "{out}");
    assert!(out.contains("[Taint] taint started"), "{out}");
    assert!(out.contains("Drain: 5/10 pods evicted"), "{out}");
    assert!(
        out.contains("blocked: pod web-7d9f in namespace shop on ip-10-0-1-1: blocked by PodDisruptionBudget (PDB shop/web-pdb) for 1m30s"),
        "{out}"
    );
    assert!(out.contains("Drain: Succeeded in 47s"), "{out}");
    assert!(out.contains("operation op-dev-1: Succeeded"), "{out}");
    // The summary.
    assert!(out.contains("State:       Succeeded"), "{out}");
    assert!(out.contains("Took:        1m39s"), "{out}");
    assert!(
        run.stderr.contains("watching operation op-dev-1"),
        "{}",
        run.stderr
    );
    assert_eq!(h.recorded.lock().unwrap().watches[0].since_sequence, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_operation_exits_1_with_blockers_and_json_lines() {
    let h = Harness::start().await;
    let run = h.run("bob", &["operations", "watch", "op-fail-1"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("Drain: Failed in 47s — DRAIN_BLOCKED: node ip-10-0-1-1 not empty after 10m"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Failure:     Drain: DRAIN_BLOCKED"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Blocked by:\n  pod web-7d9f in namespace shop"),
        "{}",
        run.stdout
    );

    let run = h
        .run("bob", &["operations", "watch", "op-fail-1", "-o", "json"])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    let lines = json_lines(&run.stdout);
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["snapshot", "log", "step", "step", "progress", "step", "state", "summary"]
    );
    assert_eq!(lines[4]["progress"]["blockers"][0]["pdbs"][0], "shop/web-pdb");
    assert_eq!(lines[5]["step"]["error"]["code"], "DRAIN_BLOCKED");
    assert_eq!(lines[7]["operation"]["state"], "Failed");
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn operations_get_list_cancel() {
    let h = Harness::start().await;
    let run = h.run("bob", &["operations", "list"]).await;
    ok(&run);
    let failed = run.stdout.lines().find(|l| l.starts_with("op-fail-1")).unwrap();
    assert!(
        failed.contains("Failed") && failed.contains("Drain") && failed.contains("migration"),
        "{failed}"
    );

    let run = h
        .run("bob", &["operations", "get", "op-dev-1", "-o", "json"])
        .await;
    ok(&run);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["state"], "Succeeded");
    assert_eq!(v["steps"][0]["kind"], "CreateManagedNodegroup");

    let run = h
        .run(
            "alice",
            &["operations", "cancel", "op-dev-1", "--reason", "wrong group"],
        )
        .await;
    ok(&run);
    assert!(
        run.stdout
            .contains("Cancelling operation op-dev-1 on dev-1: now RollingBack"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("A rollback keeps the new managed group ng-managed"),
        "{}",
        run.stdout
    );
    assert_eq!(h.recorded.lock().unwrap().cancelled[0].reason, "wrong group");
}

#[tokio::test(flavor = "multi_thread")]
async fn viewer_may_only_read() {
    let h = Harness::start().await;
    let run = h.run("bob", &["operations", "cancel", "op-dev-1"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("permission denied: identity `bob` has the viewer role, which may only read"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--role operator"), "{}", run.stderr);
    assert!(h.recorded.lock().unwrap().cancelled.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_refusal_is_printed() {
    let h = Harness::start().await;
    let run = h.run("alice", &["upgrade", "dev-1", "--to", "1.34"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("does not support this: work.upgrade: upgrades are not supported yet"),
        "{}",
        run.stderr
    );
    let started = h.recorded.lock().unwrap().started.clone();
    let Some(flotilla_proto::fleet::v1::work::Kind::Upgrade(u)) = started[0].work.clone().unwrap().kind
    else {
        panic!("not an upgrade")
    };
    assert_eq!(u.target_version, "1.34");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_errors() {
    let h = Harness::start().await;
    // Missing certificate files name the path and the command that issues them.
    let run = h.run("carol", &["clusters", "list"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let path = h.tls_dir().join("operator-carol.pem");
    assert!(
        run.stderr.contains(&format!("{}: no such file", path.display())),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "flotilla-coordinator ca issue --dir {} --operator carol --role operator",
            h.tls_dir().display()
        )),
        "{}",
        run.stderr
    );
    // Nothing listens: the URL is named with what to check.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{closed}");
    let tls = h.tls_dir().to_str().unwrap().to_owned();
    let run = h
        .run_env(
            &[
                ("FLOTILLA_COORDINATOR", &url),
                ("FLOTILLA_TLS_DIR", &tls),
                ("FLOTILLA_IDENTITY", "alice"),
            ],
            &["clusters", "list"],
        )
        .await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the coordinator at {url}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("check that `flotilla-coordinator serve` runs there"),
        "{}",
        run.stderr
    );
    // No coordinator at all is a usage error.
    let run = h.run_env(&[], &["clusters", "list"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("--coordinator https://HOST:PORT or set FLOTILLA_COORDINATOR"),
        "{}",
        run.stderr
    );
    // A CA the coordinator's certificate is not signed by.
    let other = tempfile::tempdir().unwrap();
    flotilla_coordinator::ca::create(other.path(), &Default::default()).unwrap();
    flotilla_coordinator::ca::issue(
        other.path(),
        &flotilla_coordinator::ca::Identity::operator("alice", "operator").unwrap(),
        flotilla_coordinator::ca::Validity::days(1),
    )
    .unwrap();
    let other_dir = other.path().to_str().unwrap().to_owned();
    let run = h
        .run_env(
            &[
                ("FLOTILLA_COORDINATOR", &h.url),
                ("FLOTILLA_TLS_DIR", &other_dir),
                ("FLOTILLA_IDENTITY", "alice"),
            ],
            &["clusters", "list"],
        )
        .await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the coordinator at {}", h.url)),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
}

const SPEC: &str = "\
name: migrate-fleet
work:
  migration:
    fromNodegroup: ng-old
    nodegroupTemplateFile: ng.yaml
    onBlocked: force-after=10m
selector: team=payments
stages:
  - {name: dev, selector: env=dev, maxConcurrency: 50%, soak: 1m, maxFailures: 1}
  - {name: prod, selector: env=prod, maxConcurrency: 10, soak: 10m, requireApproval: true}
";

#[tokio::test(flavor = "multi_thread")]
async fn rollout_create_passes_percentages_and_the_selector_and_waits() {
    let h = Harness::start().await;
    h.file("ng.yaml", TEMPLATE);
    let spec = h.file("spec.yaml", SPEC);
    let run = h
        .run(
            "alice",
            &["rollout", "create", "-f", spec.to_str().unwrap(), "--wait"],
        )
        .await;
    ok(&run);
    let created = h.recorded.lock().unwrap().created.clone();
    assert_eq!(created.len(), 1);
    let req = &created[0];
    assert_eq!(req.name, "migrate-fleet");
    // The coordinator resolves the percentage and ANDs the rollout's selector into each stage's.
    assert_eq!(req.selector, "team=payments");
    assert_eq!(req.stages[0].selector, "env=dev");
    assert_eq!(req.stages[0].max_parallel_percent, 50);
    assert_eq!(req.stages[0].max_parallel, 0);
    assert_eq!(req.stages[1].max_parallel, 10);
    assert!(req.stages[1].require_approval);
    assert_eq!(req.stages[1].soak.unwrap().seconds, 600);
    let out = &run.stdout;
    assert!(out.contains("Created rollout ro-1 (migrate-fleet)"), "{out}");
    assert!(
        out.contains("cluster dev-1 Running Drain 3/10 pods evicted"),
        "{out}"
    );
    assert!(out.contains("blocked: pod web-7d9f in namespace shop"), "{out}");
    assert!(
        out.contains("stage prod: WaitingForApproval: run `flotilla rollout approve ro-1 prod`"),
        "{out}"
    );
    assert!(out.contains("rollout ro-1: Succeeded"), "{out}");
    assert!(out.contains("State:     Succeeded"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_rollout_watch_exits_1() {
    let h = Harness::start().await;
    let run = h.run("bob", &["rollout", "watch", "ro-fail"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("cluster dev-2 Failed Drain — DRAIN_BLOCKED"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Reason:    stage dev reached its failure limit (1)"),
        "{}",
        run.stdout
    );
    let run = h.run("bob", &["rollout", "watch", "ro-fail", "-o", "json"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.first().unwrap()["type"], "snapshot");
    assert_eq!(lines.last().unwrap()["type"], "summary");
    assert_eq!(lines.last().unwrap()["rollout"]["state"], "Failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_steering() {
    let h = Harness::start().await;
    let run = h
        .run(
            "alice",
            &["rollout", "approve", "ro-1", "prod", "--comment", "go"],
        )
        .await;
    ok(&run);
    assert!(
        run.stdout.contains("Approved stage prod (#1) of rollout ro-1"),
        "{}",
        run.stdout
    );
    let approved = h.recorded.lock().unwrap().approved.clone();
    assert_eq!((approved[0].stage_index, approved[0].comment.as_str()), (1, "go"));

    let run = h.run("alice", &["rollout", "approve", "ro-1", "qa"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("rollout ro-1 has no stage `qa`; name one of: dev (#0), prod (#1)"),
        "{}",
        run.stderr
    );

    let run = h
        .run("alice", &["rollout", "pause", "ro-1", "--reason", "incident"])
        .await;
    ok(&run);
    assert!(run.stdout.contains("Rollout ro-1 is Paused"), "{}", run.stdout);
    let run = h.run("alice", &["rollout", "resume", "ro-1", "-o", "json"]).await;
    ok(&run);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["state"], "Running");
    let run = h.run("alice", &["rollout", "cancel", "ro-1"]).await;
    ok(&run);
    assert!(run.stdout.contains("Rollout ro-1 is Cancelled"), "{}", run.stdout);
    let run = h.run("bob", &["rollout", "pause", "ro-1"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("viewer role, which may only read"),
        "{}",
        run.stderr
    );

    let run = h.run("bob", &["rollout", "list"]).await;
    ok(&run);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("ro-fail") && l.contains("Failed")),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("more: add --page-token page-2"),
        "{}",
        run.stderr
    );
    let run = h.run("bob", &["rollout", "get", "ro-1"]).await;
    ok(&run);
    assert!(
        run.stdout.contains("Rollout:   ro-1 (migrate-fleet)"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rollout_spec_is_refused_before_any_call() {
    let h = Harness::start().await;
    h.file("ng.yaml", TEMPLATE);
    let spec = h.file("spec.yaml", &SPEC.replace("soak: 1m", "soak: 60"));
    let run = h
        .run("alice", &["rollout", "create", "-f", spec.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&format!("error: {}:9:", spec.display())),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("field `stages[0].soak`: `60` has no unit; write e.g. `60s` or `60m`"),
        "{}",
        run.stderr
    );
    assert!(h.recorded.lock().unwrap().created.is_empty());
    assert!(h.recorded.lock().unwrap().selectors.is_empty());
}
