//! What the demo runs: the simulated clusters' scenario (the default one — Kubernetes 1.33, the
//! self-managed `ng-old`, a shop app, EKS managed add-ons — made upgradable), the `env` label of
//! each cluster, and the two rollout specs (migration, then upgrade to 1.35) written as the YAML an
//! operator gives `flotilla rollout create -f`, parsed by the CLI's own spec parser.

use std::path::Path;
use std::time::Duration;

use flotilla_coordinator::cli::spec::{self, RolloutPlan, SpecError};
use flotilla_sim::scenario::{Scenario, TimingPreset, TimingSpec};

/// The environments, in stage order; a third of the clusters each.
pub const ENVS: [&str; 3] = ["dev", "staging", "prod"];
/// The self-managed node group every simulated cluster starts with.
pub const OLD_NODEGROUP: &str = "ng-old";
/// The EKS managed node group the migration creates.
pub const NEW_NODEGROUP: &str = "ng-managed";
/// The Kubernetes version the simulated clusters start at.
pub const START_VERSION: &str = "1.33";
/// The upgrade rollout's target (two hops from 1.33).
pub const TARGET_VERSION: &str = "1.35";
/// The migration rollout's name.
pub const MIGRATION_ROLLOUT: &str = "demo-migrate-to-managed";
/// The upgrade rollout's name.
pub const UPGRADE_ROLLOUT: &str = "demo-upgrade-1.35";

/// The environment of cluster `index` (0-based) among `n`: the first third `dev`, the second
/// `staging`, the rest `prod` (4/4/4 of 12; 2/1/1 of 4; all `dev` of 1).
pub fn env_of(index: usize, n: usize) -> &'static str {
    ENVS[(index * ENVS.len() / n.max(1)).min(ENVS.len() - 1)]
}

/// How many of `n` clusters each environment gets, in [`ENVS`] order.
pub fn env_counts(n: usize) -> [usize; 3] {
    let mut counts = [0; 3];
    for i in 0..n {
        let env = env_of(i, n);
        counts[ENVS.iter().position(|e| *e == env).unwrap_or(0)] += 1;
    }
    counts
}

/// The scenario of every simulated cluster: the simulator's default scenario, with the `cache`
/// Deployment at 2 replicas instead of 1, and the `fast` delays times `time_scale`.
///
/// Why `cache` changes: its PodDisruptionBudget (`minAvailable: 1`) over a single replica allows
/// no disruption at all. The migration copes (it surges `cache` to 2 before draining), but an EKS
/// managed node group update cannot evict that pod, and the upgrade's preflight rightly stops on
/// it (`PDB_ZERO_DISRUPTIONS`). An SRE would scale it up before the upgrade; the demo's fleet
/// starts that way.
pub fn scenario(time_scale: f64) -> Scenario {
    let mut s = Scenario::default_scenario();
    for d in &mut s.deployments {
        if d.namespace == "shop" && d.name == "cache" {
            d.replicas = 2;
        }
    }
    s.timing = TimingSpec {
        preset: TimingPreset::Fast,
        time_scale,
        ..TimingSpec::default()
    };
    s
}

/// The rollout spec of the migration: `ng-old` → the managed group `ng-managed` (4 × m5.xlarge,
/// subnets and node role taken from the old group where the template leaves them out), surge
/// 100%, two nodes drained at once, pods without a controller and emptyDir pods evicted; in
/// stages dev (all at once), staging (half at once), prod (two at once), `soak` after each.
pub fn migration_yaml(counts: [usize; 3], soak: Duration) -> String {
    format!(
        "# Every cluster's workloads move from the self-managed group {OLD_NODEGROUP} to a new EKS managed\n\
         # node group, one stage of clusters after the other.\n\
         name: {MIGRATION_ROLLOUT}\n\
         work:\n\
         \x20 migration:\n\
         \x20   fromNodegroup: {OLD_NODEGROUP}\n\
         \x20   nodegroupTemplate:\n\
         \x20     nodegroupName: {NEW_NODEGROUP}\n\
         \x20     instanceTypes: [m5.xlarge]\n\
         \x20     scalingConfig: {{minSize: 4, maxSize: 8, desiredSize: 4}}\n\
         \x20     nodeRole: arn:aws:iam::111122223333:role/eks-node\n\
         \x20     updateConfig: {{maxUnavailable: 1}}\n\
         \x20   surge: 100%\n\
         \x20   drainConcurrency: 2\n\
         \x20   nodeTimeout: 2m\n\
         \x20   readyTimeout: 5m\n\
         \x20   force: true\n\
         \x20   deleteEmptydirData: true\n\
         stages:\n{}",
        stages_yaml(counts, soak)
    )
}

/// The rollout spec of the upgrade to [`TARGET_VERSION`] (1.33 → 1.34 → 1.35: control plane, then
/// node groups, then add-ons, per hop), in the same stages as the migration.
pub fn upgrade_yaml(counts: [usize; 3], soak: Duration) -> String {
    format!(
        "# Every cluster goes to Kubernetes {TARGET_VERSION}, one minor version at a time: control plane,\n\
         # then managed node groups, then EKS add-ons, checked before and after each hop.\n\
         name: {UPGRADE_ROLLOUT}\n\
         work:\n\
         \x20 upgrade:\n\
         \x20   targetVersion: \"{TARGET_VERSION}\"\n\
         stages:\n{}",
        stages_yaml(counts, soak)
    )
}

/// The stages with at least one cluster: dev 100% at once, staging 50%, prod 2 at a time.
fn stages_yaml(counts: [usize; 3], soak: Duration) -> String {
    let concurrency = ["100%", "50%", "2"];
    let soak = match soak.as_millis() {
        0 => String::new(),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    };
    let mut out = String::new();
    for (i, env) in ENVS.iter().enumerate() {
        if counts[i] == 0 {
            continue;
        }
        // No soak after the last stage: nothing follows it.
        let last = counts[i + 1..].iter().all(|c| *c == 0);
        let soak = if last || soak.is_empty() {
            String::new()
        } else {
            format!(", soak: {soak}")
        };
        out.push_str(&format!(
            "  - {{name: {env}, selector: env={env}, maxConcurrency: {}{soak}}}\n",
            concurrency[i]
        ));
    }
    out
}

/// Parses a spec with the CLI's parser: the same checks `flotilla rollout create -f` makes.
pub fn parse(file: &Path, yaml: &str) -> Result<RolloutPlan, SpecError> {
    spec::parse_rollout(file, yaml)
}

/// How many of a stage's `clusters` run at once: its count, or its percentage rounded up (at
/// least 1), as the coordinator resolves them.
pub fn at_once(stage: &flotilla_proto::fleet::v1::StageSpec, clusters: usize) -> usize {
    let n = if stage.max_parallel_percent > 0 {
        (clusters * stage.max_parallel_percent as usize).div_ceil(100)
    } else {
        stage.max_parallel as usize
    };
    n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::fleet::v1 as pb;

    #[test]
    fn environments_split_in_thirds() {
        assert_eq!(env_counts(12), [4, 4, 4]);
        assert_eq!(env_counts(4), [2, 1, 1]);
        assert_eq!(env_counts(3), [1, 1, 1]);
        assert_eq!(env_counts(1), [1, 0, 0]);
        assert_eq!(env_counts(2), [1, 1, 0]);
        assert_eq!(env_counts(1000).iter().sum::<usize>(), 1000);
        assert_eq!(env_of(0, 12), "dev");
        assert_eq!(env_of(11, 12), "prod");
    }

    #[test]
    fn the_scenario_is_valid_and_upgradable() {
        let s = scenario(2.0);
        s.validate().expect("valid");
        let cache = s.deployments.iter().find(|d| d.name == "cache").unwrap();
        assert_eq!(cache.replicas, 2);
        assert_eq!(s.kubernetes_version.to_string(), START_VERSION);
        assert_eq!(s.node_groups[0].name, OLD_NODEGROUP);
    }

    #[test]
    fn the_specs_parse_with_the_cli_parser() {
        let counts = env_counts(12);
        let m = parse(
            Path::new("migrate.yaml"),
            &migration_yaml(counts, Duration::from_secs(5)),
        )
        .expect("migration spec");
        let names: Vec<_> = m.request.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dev", "staging", "prod"]);
        let parallel: Vec<_> = m
            .request
            .stages
            .iter()
            .zip(counts)
            .map(|(s, n)| at_once(s, n))
            .collect();
        assert_eq!(parallel, [4, 2, 2]);
        assert!(m.request.stages[0].soak.is_some() && m.request.stages[2].soak.is_none());
        let Some(pb::work::Kind::Migration(params)) = m.request.work.and_then(|w| w.kind) else {
            panic!("not a migration")
        };
        assert_eq!(params.from_nodegroup, OLD_NODEGROUP);
        assert_eq!(params.nodegroup.unwrap().nodegroup_name, NEW_NODEGROUP);

        let u = parse(
            Path::new("upgrade.yaml"),
            &upgrade_yaml([1, 0, 0], Duration::ZERO),
        )
        .expect("upgrade spec");
        assert_eq!(u.request.stages.len(), 1);
        let Some(pb::work::Kind::Upgrade(params)) = u.request.work.and_then(|w| w.kind) else {
            panic!("not an upgrade")
        };
        assert_eq!(params.target_version, TARGET_VERSION);
    }
}
