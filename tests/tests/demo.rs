//! The one-command demo end to end, as the README runs it but smaller: 4 simulated clusters
//! (dev, dev, staging, prod), the coordinator, 4 agents over mTLS, a migration rollout and an
//! upgrade rollout to 1.35 in three stages, then the JSON summary checked field by field. And the
//! binary refusing bad flags by name.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_coordinator::cli::{Io, LiveTarget};
use flotilla_tests::demo::{self, DemoOptions};

/// Failure bound on the whole demo (never a measure of speed).
const BOUND: Duration = Duration::from_secs(20 * 60);

/// Progress output, kept for the assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

const MIGRATION_STEPS: [&str; 8] = [
    "CreateManagedNodegroup",
    "WaitNodesReady",
    "Taint",
    "SurgeScale",
    "VerifyReady",
    "Drain",
    "RemoveSelfManagedNodegroup",
    "RestoreScale",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_migrates_and_upgrades_a_small_fleet_without_downtime() {
    let progress = Captured::default();
    let mut io = Io {
        out: Box::new(progress.clone()),
        err: Box::new(progress.clone()),
        live: false,
        live_target: LiveTarget::Stdout,
    };
    let opts = DemoOptions {
        clusters: 4,
        time_scale: 1.0,
        soak: Duration::from_secs(1),
        work_dir: None,
    };
    let summary = tokio::time::timeout(BOUND, demo::run(opts, &mut io))
        .await
        .expect("the demo ends within the bound")
        .unwrap_or_else(|e| panic!("the demo runs: {e}\nprogress:\n{}", progress.text()));
    let text = progress.text();
    let json = serde_json::to_value(&summary).expect("summary serializes");
    let pretty = serde_json::to_string_pretty(&json).expect("json");
    assert!(
        summary.ok,
        "problems: {:?}\n{pretty}\nprogress:\n{text}",
        summary.problems
    );

    // Both rollouts, in order, succeeded.
    let rollouts = json["rollouts"].as_array().expect("rollouts");
    let kinds: Vec<&str> = rollouts.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["migration", "upgrade"], "{pretty}");
    for r in rollouts {
        assert!(!r["id"].as_str().unwrap().is_empty(), "{pretty}");
        assert_eq!(r["status"], "Succeeded", "{pretty}");
    }

    // Every cluster: succeeded, at 1.35, only the managed group left, no PDB violation, never a
    // Deployment below its starting available count during the migration.
    let clusters = json["clusters"].as_array().expect("clusters");
    let names: Vec<&str> = clusters.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sim-1", "sim-2", "sim-3", "sim-4"]);
    let envs: Vec<&str> = clusters.iter().map(|c| c["env"].as_str().unwrap()).collect();
    assert_eq!(envs, ["dev", "dev", "staging", "prod"]);
    for c in clusters {
        let name = c["name"].as_str().unwrap();
        assert_eq!(c["status"], "Succeeded", "{name}: {pretty}");
        assert_eq!(c["version"], "1.35", "{name}: {pretty}");
        assert_eq!(c["pdbViolations"], 0, "{name}: {pretty}");
        let groups = c["nodeGroups"].as_array().unwrap();
        assert!(
            groups.iter().all(|g| g["kind"] == "managed"),
            "{name}: a self-managed group is left: {pretty}"
        );
        let managed = groups
            .iter()
            .find(|g| g["name"] == "ng-managed")
            .unwrap_or_else(|| panic!("{name}: no ng-managed: {pretty}"));
        assert_eq!(managed["nodes"], managed["ready"], "{name}: {pretty}");
        for v in managed["kubeletVersions"].as_array().unwrap() {
            assert!(
                v.as_str().unwrap().starts_with("v1.35."),
                "{name}: kubelet {v}: {pretty}"
            );
        }
        // The overall lowest ratio covers the upgrade too, where EKS replaces nodes and evicts
        // within the budgets (a Deployment may dip by what its budget allows); the design's
        // zero-downtime bar is the migration's.
        let overall = c["minAvailableRatio"]
            .as_f64()
            .expect("minAvailableRatio measured");
        assert!((0.0..=1.0).contains(&overall), "{name}: {pretty}");
        let migration = c["availability"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["phase"] == "migration")
            .unwrap_or_else(|| panic!("{name}: no migration figures: {pretty}"));
        assert!(
            migration["minAvailableRatio"].as_f64().unwrap() >= 1.0,
            "{name}: a Deployment went below its starting available count during the migration: {pretty}"
        );
        assert!(migration["evictions"].as_u64().unwrap() > 0, "{name}: {pretty}");

        // Steps: the migration's eight, then the upgrade's per hop (1.34, then 1.35), each
        // succeeded (or skipped) with a duration.
        let steps = c["steps"].as_array().unwrap();
        let migration_steps: Vec<&str> = steps
            .iter()
            .filter(|s| s["operation"] == "migration")
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(migration_steps, MIGRATION_STEPS, "{name}: {pretty}");
        for hop in ["1.34", "1.35"] {
            for step in [
                "Preflight",
                "UpgradeControlPlane",
                "UpgradeNodegroups",
                "UpgradeAddons",
                "Postflight",
            ] {
                assert!(
                    steps
                        .iter()
                        .any(|s| s["operation"] == "upgrade" && s["hop"] == hop && s["name"] == step),
                    "{name}: no {step} for hop {hop}: {pretty}"
                );
            }
        }
        for s in steps {
            assert!(
                s["status"] == "Succeeded" || s["status"] == "Skipped",
                "{name}: step {s}: {pretty}"
            );
            assert!(s["seconds"].as_f64().unwrap() >= 0.0, "{name}: {pretty}");
        }
    }

    // The progress showed both rollouts stage by stage, clusters by name.
    for needle in [
        "agent(s) connected over mTLS",
        "== 1/2: migration ==",
        "== 2/2: upgrade ==",
        "stage dev",
        "stage staging",
        "stage prod",
        "cluster sim-4",
    ] {
        assert!(text.contains(needle), "progress lacks {needle:?}:\n{text}");
    }
    // The table for people says the same.
    let table = summary.table();
    assert!(table.contains("OK: 4 cluster(s)"), "{table}");
}

#[test]
fn the_binary_refuses_bad_flags_by_name() {
    for (args, needle) in [
        (&["--clusters", "0"][..], "--clusters"),
        (&["--clusters", "1001"][..], "--clusters"),
        (&["--clusters", "many"][..], "--clusters"),
        (&["--output", "xml"][..], "--output"),
        (&["--time-scale", "0"][..], "--time-scale"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-demo"))
            .args(args)
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}
