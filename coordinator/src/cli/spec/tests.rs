//! Tests of template and rollout spec parsing: good input and each kind of bad input with its message.

use std::path::Path;

use flotilla_proto::fleet::v1 as pb;

use super::*;

const GOOD_TEMPLATE: &str = "\
nodegroupName: ng-managed
instanceTypes: [m6i.large, m6a.large]
scalingConfig:
  minSize: 3
  maxSize: 6
  desiredSize: 3
subnets: [subnet-0a, subnet-0b]
nodeRole: arn:aws:iam::111122223333:role/nodes
labels:
  pool: general
taints:
  - {key: dedicated, value: web, effect: NO_SCHEDULE}
amiType: AL2023_x86_64_STANDARD
capacityType: ON_DEMAND
updateConfig:
  maxUnavailablePercentage: 33
";

fn template(text: &str) -> Result<pb::NodegroupTemplate, SpecError> {
    parse_template(Path::new("ng.yaml"), text)
}

fn template_err(text: &str) -> String {
    template(text)
        .expect_err("template should be refused")
        .to_string()
}

#[test]
fn good_template_maps_every_field() {
    let t = template(GOOD_TEMPLATE).unwrap();
    assert_eq!(t.nodegroup_name, "ng-managed");
    assert_eq!(t.instance_types, ["m6i.large", "m6a.large"]);
    let s = t.scaling_config.unwrap();
    assert_eq!((s.min_size, s.max_size, s.desired_size), (3, 6, 3));
    assert_eq!(t.subnets, ["subnet-0a", "subnet-0b"]);
    assert_eq!(t.node_role, "arn:aws:iam::111122223333:role/nodes");
    assert_eq!(t.labels.get("pool").map(String::as_str), Some("general"));
    assert_eq!(
        t.taints,
        [pb::NodegroupTaint {
            key: "dedicated".into(),
            value: "web".into(),
            effect: "NO_SCHEDULE".into()
        }]
    );
    assert_eq!(t.ami_type, "AL2023_x86_64_STANDARD");
    assert_eq!(t.capacity_type, "ON_DEMAND");
    assert_eq!(t.update_config.unwrap().max_unavailable_percentage, Some(33));
}

#[test]
fn minimal_template_leaves_optional_fields_empty() {
    let t = template("nodegroupName: ng\nscalingConfig: {minSize: 0, maxSize: 1, desiredSize: 1}\n").unwrap();
    assert!(t.instance_types.is_empty() && t.subnets.is_empty() && t.node_role.is_empty());
    assert!(t.update_config.is_none());
}

#[test]
fn unknown_field_names_file_line_path_and_fix() {
    let err = template_err(
        "nodegroupName: ng\nscalingConfig: {minSize: 1, maxSize: 2, desiredSize: 1}\ndiskSize: 20\n",
    );
    assert!(err.starts_with("ng.yaml:3:1"), "{err}");
    assert!(err.contains("unknown field `diskSize`"), "{err}");
    assert!(err.contains("expected one of `nodegroupName`"), "{err}");
    assert!(err.contains("remove the field or fix its spelling"), "{err}");
}

#[test]
fn nested_unknown_field_has_its_path() {
    let err = template_err("nodegroupName: ng\nscalingConfig:\n  minSize: 1\n  maxSize: 2\n  desired: 1\n");
    assert!(err.contains("ng.yaml:5:3"), "{err}");
    assert!(
        err.contains("field `scalingConfig`") || err.contains("field `scalingConfig.desired`"),
        "{err}"
    );
    assert!(err.contains("unknown field `desired`"), "{err}");
}

#[test]
fn sizes_out_of_order_are_refused() {
    let err =
        template_err("nodegroupName: ng\nscalingConfig:\n  minSize: 1\n  maxSize: 3\n  desiredSize: 5\n");
    assert!(err.contains("field `scalingConfig`"), "{err}");
    assert!(
        err.contains("desiredSize (5) is above maxSize (3); lower desiredSize or raise maxSize"),
        "{err}"
    );
    assert!(err.starts_with("ng.yaml:"), "{err}");
    let err = template_err("nodegroupName: ng\nscalingConfig: {minSize: 4, maxSize: 3, desiredSize: 3}\n");
    assert!(err.contains("minSize (4) is above maxSize (3)"), "{err}");
    let err = template_err("nodegroupName: ng\nscalingConfig: {minSize: 2, maxSize: 3, desiredSize: 1}\n");
    assert!(err.contains("desiredSize (1) is below minSize (2)"), "{err}");
    let err = template_err("nodegroupName: ng\nscalingConfig: {minSize: -1, maxSize: 3, desiredSize: 1}\n");
    assert!(err.contains("minSize (-1) is negative"), "{err}");
}

#[test]
fn missing_field_says_add_it() {
    let err = template_err("nodegroupName: ng\n");
    assert!(err.contains("missing field `scalingConfig`; add it"), "{err}");
}

#[test]
fn kubernetes_taint_effect_spelling_gets_the_eks_one() {
    let err = template_err(
        "nodegroupName: ng\nscalingConfig: {minSize: 1, maxSize: 2, desiredSize: 1}\ntaints:\n  - {key: a, effect: NoSchedule}\n",
    );
    assert!(err.contains("field `taints[0].effect`"), "{err}");
    assert!(
        err.contains("`NoSchedule` is not a valid effect; write `NO_SCHEDULE`"),
        "{err}"
    );
    assert!(err.starts_with("ng.yaml:4:"), "{err}");
    let err = template_err(
        "nodegroupName: ng\nscalingConfig: {minSize: 1, maxSize: 2, desiredSize: 1}\ntaints:\n  - {key: a, effect: Never}\n",
    );
    assert!(
        err.contains("use one of NO_EXECUTE, NO_SCHEDULE, PREFER_NO_SCHEDULE"),
        "{err}"
    );
}

#[test]
fn enumerations_come_from_eks() {
    let err = template_err("nodegroupName: ng\nscalingConfig: {minSize: 1, maxSize: 2, desiredSize: 1}\ncapacityType: on-demand\n");
    assert!(err.contains("field `capacityType`"), "{err}");
    assert!(err.contains("write `ON_DEMAND`"), "{err}");
    let err = template_err(
        "nodegroupName: ng\nscalingConfig: {minSize: 1, maxSize: 2, desiredSize: 1}\namiType: UBUNTU\n",
    );
    assert!(
        err.contains("`UBUNTU` is not a valid amiType; use one of"),
        "{err}"
    );
    assert!(err.contains("AL2023_x86_64_STANDARD"), "{err}");
}

#[test]
fn bad_values_name_their_field() {
    let base = "scalingConfig: {minSize: 1, maxSize: 2, desiredSize: 1}\n";
    let err = template_err(&format!("nodegroupName: ng_old!\n{base}"));
    assert!(
        err.contains("field `nodegroupName`") && err.contains("is not a node group name"),
        "{err}"
    );
    let err = template_err(&format!("nodegroupName: ng\n{base}instanceTypes: [large]\n"));
    assert!(
        err.contains("field `instanceTypes[0]`") && err.contains("write FAMILY.SIZE"),
        "{err}"
    );
    let err = template_err(&format!("nodegroupName: ng\n{base}subnets: [sn-1]\n"));
    assert!(
        err.contains("field `subnets[0]`") && err.contains("`subnet-...`"),
        "{err}"
    );
    let err = template_err(&format!("nodegroupName: ng\n{base}nodeRole: nodes\n"));
    assert!(
        err.contains("field `nodeRole`") && err.contains("arn:aws:iam::ACCOUNT:role/NAME"),
        "{err}"
    );
    let err = template_err(&format!(
        "nodegroupName: ng\n{base}updateConfig: {{maxUnavailable: 1, maxUnavailablePercentage: 10}}\n"
    ));
    assert!(
        err.contains("field `updateConfig`") && err.contains("exactly one of"),
        "{err}"
    );
    let err = template_err(&format!("nodegroupName: ng\n{base}labels: {{tier: [a]}}\n"));
    assert!(
        err.contains("field `labels.tier`") && err.contains("invalid type"),
        "{err}"
    );
}

#[test]
fn empty_and_broken_files() {
    let err = template_err("# nothing here\n\n");
    assert!(
        err.starts_with("ng.yaml: the file is empty; write YAML like:"),
        "{err}"
    );
    let err = template_err("nodegroupName: [unclosed\n");
    assert!(err.starts_with("ng.yaml:"), "{err}");
    let err = load_template(Path::new("/nonexistent/ng.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/nonexistent/ng.yaml: cannot read the file"),
        "{err}"
    );
}

#[test]
fn value_syntaxes() {
    assert_eq!(
        parse_duration("90s").unwrap(),
        prost_types::Duration {
            seconds: 90,
            nanos: 0
        }
    );
    assert_eq!(parse_duration("10m").unwrap().seconds, 600);
    assert_eq!(parse_duration("1h30m").unwrap().seconds, 5400);
    assert!(parse_duration("90")
        .unwrap_err()
        .contains("has no unit; write e.g. `90s`"));
    assert!(parse_duration("soon").unwrap_err().contains("is not a duration"));
    assert!(parse_duration("0s").unwrap_err().contains("longer than zero"));

    assert_eq!(parse_surge("100%").unwrap(), Surge::Percent(100));
    assert_eq!(parse_surge("2").unwrap(), Surge::Count(2));
    assert!(parse_surge("0").is_err() && parse_surge("2000%").is_err() && parse_surge("x").is_err());

    use pb::on_blocked::Policy;
    assert!(matches!(
        parse_on_blocked("fail").unwrap().policy,
        Some(Policy::Fail(_))
    ));
    assert!(matches!(
        parse_on_blocked("skip-node").unwrap().policy,
        Some(Policy::SkipNode(_))
    ));
    match parse_on_blocked("force-after=5m").unwrap().policy {
        Some(Policy::ForceAfter(d)) => assert_eq!(d.seconds, 300),
        other => panic!("{other:?}"),
    }
    assert!(parse_on_blocked("force-after=5").unwrap_err().contains("no unit"));
    assert!(parse_on_blocked("skip")
        .unwrap_err()
        .contains("use `fail`, `skip-node` or `force-after=DURATION`"));

    assert_eq!(parse_concurrency("10").unwrap(), Concurrency::Count(10));
    assert_eq!(parse_concurrency("25%").unwrap(), Concurrency::Percent(25));
    assert!(parse_concurrency("0").is_err() && parse_concurrency("150%").is_err());
    assert_eq!(Concurrency::Percent(25).resolve(10), 3);
    assert_eq!(Concurrency::Percent(100).resolve(4), 4);
    assert_eq!(Concurrency::Percent(10).resolve(0), 1);
    assert_eq!(Concurrency::Count(7).resolve(2), 7);

    assert_eq!(parse_version("1.34").unwrap(), "1.34");
    assert!(parse_version("v1.34").is_err() && parse_version("1").is_err());
}

#[test]
fn selectors() {
    for ok in [
        "",
        "env=prod",
        "env==prod,team!=data",
        "env in (dev, staging),!canary",
        "example.com/tier",
        "a=",
        "tier notin (x)",
    ] {
        check_selector(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let err = check_selector("env:prod").unwrap_err();
    assert!(
        err.contains("`env:prod` in selector `env:prod` has an invalid key; use `key=value`"),
        "{err}"
    );
    assert!(check_selector("env in dev")
        .unwrap_err()
        .contains("needs its values in parentheses"));
    assert!(check_selector("env in (dev")
        .unwrap_err()
        .contains("without its `)`"));
    assert!(check_selector("env=prod,").unwrap_err().contains("empty term"));
}

const GOOD_ROLLOUT: &str = "\
name: migrate-fleet
work:
  migration:
    fromNodegroup: ng-old
    nodegroupTemplate:
      nodegroupName: ng-managed
      instanceTypes: [m6i.large]
      scalingConfig: {minSize: 2, maxSize: 4, desiredSize: 2}
    surge: 100%
    onBlocked: force-after=10m
    drainConcurrency: 2
    nodeTimeout: 15m
selector: team=payments
stages:
  - {name: dev, selector: env=dev, maxConcurrency: 100%, soak: 1m, maxFailures: 1}
  - {name: prod, selector: env=prod, maxConcurrency: 10, soak: 10m, maxFailures: 1, requireApproval: true}
";

fn rollout(text: &str) -> Result<RolloutPlan, SpecError> {
    parse_rollout(Path::new("spec.yaml"), text)
}

fn rollout_err(text: &str) -> String {
    rollout(text).expect_err("spec should be refused").to_string()
}

#[test]
fn good_rollout_maps_onto_create_rollout_request() {
    let plan = rollout(GOOD_ROLLOUT).unwrap();
    let req = &plan.request;
    assert_eq!(req.name, "migrate-fleet");
    let Some(pb::work::Kind::Migration(m)) = req.work.as_ref().and_then(|w| w.kind.clone()) else {
        panic!("not a migration: {:?}", req.work)
    };
    assert_eq!(m.from_nodegroup, "ng-old");
    assert_eq!(m.nodegroup.unwrap().nodegroup_name, "ng-managed");
    assert_eq!(m.surge, Some(pb::migration_params::Surge::SurgePercent(100)));
    assert_eq!(m.drain_concurrency, 2);
    assert_eq!(m.node_timeout.unwrap().seconds, 900);
    assert!(matches!(
        m.on_blocked.unwrap().policy,
        Some(pb::on_blocked::Policy::ForceAfter(prost_types::Duration {
            seconds: 600,
            ..
        }))
    ));
    assert_eq!(req.stages.len(), 2);
    assert_eq!(req.selector, "team=payments");
    assert_eq!(req.stages[0].selector, "env=dev");
    assert_eq!(req.stages[0].max_parallel_percent, 100);
    assert_eq!(req.stages[0].max_parallel, 0);
    assert_eq!(req.stages[0].soak.unwrap().seconds, 60);
    assert_eq!(req.stages[0].max_failures, 1);
    assert_eq!(req.stages[1].max_parallel, 10);
    assert_eq!(req.stages[1].max_parallel_percent, 0);
    assert!(req.stages[1].require_approval && !req.stages[0].require_approval);
    assert!(req.agent_disconnect_timeout.is_none());
}

#[test]
fn agent_disconnect_timeout_is_passed_on() {
    let plan = rollout(&format!("{GOOD_ROLLOUT}agentDisconnectTimeout: 5m\n")).unwrap();
    assert_eq!(plan.request.agent_disconnect_timeout.unwrap().seconds, 300);
}

#[test]
fn upgrade_rollout() {
    let plan = rollout(
        "name: up\nwork:\n  upgrade: {targetVersion: \"1.35\", force: true}\nstages:\n  - {name: all}\n",
    )
    .unwrap();
    let Some(pb::work::Kind::Upgrade(u)) = plan.request.work.clone().unwrap().kind else {
        panic!()
    };
    assert_eq!(u.target_version, "1.35");
    assert!(u.force && !u.migrate_self_managed && u.migration.is_none());
    assert_eq!(plan.request.stages[0].max_parallel, 0);
    assert_eq!(plan.request.stages[0].max_parallel_percent, 0);
}

#[test]
fn unquoted_version_is_refused() {
    let err = rollout_err("name: up\nwork:\n  upgrade: {targetVersion: 1.30}\nstages:\n  - {name: all}\n");
    assert!(err.contains("field `work.upgrade.targetVersion`"), "{err}");
    assert!(err.contains("(quote it)"), "{err}");
    assert!(err.starts_with("spec.yaml:3:"), "{err}");
}

#[test]
fn migrate_self_managed_needs_a_migration() {
    let err = rollout_err(
        "name: up\nwork:\n  upgrade: {targetVersion: \"1.35\", migrateSelfManaged: true}\nstages:\n  - {name: all}\n",
    );
    assert!(
        err.contains("field `work.upgrade.migration`") && err.contains("migrateSelfManaged is set"),
        "{err}"
    );
}

#[test]
fn rollout_errors_name_their_field() {
    let cases = [
        (
            GOOD_ROLLOUT.replace("soak: 1m", "soak: 60"),
            "stages[0].soak",
            "`60` has no unit",
        ),
        (
            GOOD_ROLLOUT.replace("maxConcurrency: 10,", "maxConcurrency: 0,"),
            "stages[1].maxConcurrency",
            "is not a concurrency",
        ),
        (
            GOOD_ROLLOUT.replace("maxConcurrency: 100%", "maxConcurrency: 150%"),
            "stages[0].maxConcurrency",
            "write 1% to 100%",
        ),
        (
            GOOD_ROLLOUT.replace("selector: env=prod", "selector: \"env:prod\""),
            "stages[1].selector",
            "has an invalid key",
        ),
        (
            GOOD_ROLLOUT.replace("name: prod", "name: dev"),
            "stages",
            "two stages are named `dev`",
        ),
        (
            GOOD_ROLLOUT.replace("surge: 100%", "surge: lots"),
            "work.migration.surge",
            "is not a surge",
        ),
        (
            GOOD_ROLLOUT.replace("onBlocked: force-after=10m", "onBlocked: wait"),
            "work.migration.onBlocked",
            "is not a policy",
        ),
        (
            GOOD_ROLLOUT.replace("maxFailures: 1}", "maxFailure: 1}"),
            "stages[0].maxFailure",
            "unknown field `maxFailure`",
        ),
        (
            GOOD_ROLLOUT.replace("desiredSize: 2", "desiredSize: 9"),
            "work.migration.nodegroupTemplate.scalingConfig",
            "desiredSize (9) is above maxSize (4)",
        ),
        (
            GOOD_ROLLOUT.replace("name: migrate-fleet\n", ""),
            "",
            "missing field `name`; add it",
        ),
    ];
    for (text, path, message) in cases {
        let err = rollout_err(&text);
        assert!(err.starts_with("spec.yaml:"), "{err}");
        if !path.is_empty() {
            assert!(
                err.contains(&format!("field `{path}`")),
                "want path {path}: {err}"
            );
        }
        assert!(err.contains(message), "want {message}: {err}");
    }
}

#[test]
fn work_needs_exactly_one_kind_and_a_template() {
    let err = rollout_err("name: x\nwork: {}\nstages:\n  - {name: all}\n");
    assert!(
        err.contains("field `work`") && err.contains("exactly one of `migration` and `upgrade`"),
        "{err}"
    );
    let err = rollout_err("name: x\nwork:\n  migration: {fromNodegroup: ng-old}\nstages:\n  - {name: all}\n");
    assert!(
        err.contains("field `work.migration`") && err.contains("nodegroupTemplateFile"),
        "{err}"
    );
    let err = rollout_err("name: x\nwork:\n  upgrade: {targetVersion: \"1.35\"}\nstages: []\n");
    assert!(err.contains("at least one stage"), "{err}");
}

#[test]
fn template_file_is_read_relative_to_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ng.yaml"),
        "nodegroupName: ng-new\nscalingConfig: {minSize: 1, maxSize: 2, desiredSize: 1}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "nodegroupName: ng-new\nscalingConfig: {minSize: 1, maxSize: 2, desiredSize: 3}\n",
    )
    .unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "name: x\nwork:\n  migration: {nodegroupTemplateFile: ng.yaml}\nstages:\n  - {name: all}\n",
    )
    .unwrap();
    let plan = load_rollout(&spec).unwrap();
    let Some(pb::work::Kind::Migration(m)) = plan.request.work.unwrap().kind else {
        panic!()
    };
    assert_eq!(m.nodegroup.unwrap().nodegroup_name, "ng-new");
    std::fs::write(
        &spec,
        "name: x\nwork:\n  migration: {nodegroupTemplateFile: bad.yaml}\nstages:\n  - {name: all}\n",
    )
    .unwrap();
    let err = load_rollout(&spec).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}:2:16: field `scalingConfig`",
            dir.path().join("bad.yaml").display()
        )),
        "{err}"
    );
    assert!(err.contains("desiredSize (3) is above maxSize (2)"), "{err}");
}
