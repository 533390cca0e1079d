//! The simulated EKS API through the stock AWS CLI (`aws eks … --endpoint-url`), with dummy
//! credentials: describe-cluster, create-nodegroup, describe-nodegroup, update-cluster-version,
//! describe-update, and the CLI's rendering of a real error.

mod eks_common;

use std::process::Command;

use eks_common::*;
use serde_json::Value;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn aws(url: &str, args: &[&str]) -> Out {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("aws")
            .args(&args)
            .args([
                "--endpoint-url",
                &url,
                "--region",
                "us-west-2",
                "--output",
                "json",
            ])
            .env("AWS_ACCESS_KEY_ID", "AKIDFLOTILLASIM")
            .env("AWS_SECRET_ACCESS_KEY", "not-a-secret")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .expect("the AWS CLI runs (scripts/test.sh installs it from PyPI)");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("aws task")
}

fn json(o: &Out) -> Value {
    assert_eq!(o.code, 0, "aws failed: {}", o.stderr);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_drives_the_simulated_eks() {
    // A slow control-plane update, so that a second one meets the first in progress.
    let (fleet, _dir) = start(&scenario("eks:\n  timing:\n    controlPlaneUpdate: 60s\n"), 1).await;
    let url = fleet.aws_url.clone().unwrap();

    let c = json(&aws(&url, &["eks", "describe-cluster", "--name", "sim-1"]).await);
    assert_eq!(c["cluster"]["version"], "1.33");
    assert_eq!(c["cluster"]["status"], "ACTIVE");

    let ng = json(
        &aws(
            &url,
            &[
                "eks",
                "create-nodegroup",
                "--cluster-name",
                "sim-1",
                "--nodegroup-name",
                "ng-cli",
                "--subnets",
                "subnet-0a",
                "subnet-0b",
                "--node-role",
                "arn:aws:iam::111122223333:role/node",
                "--scaling-config",
                "minSize=1,maxSize=3,desiredSize=2",
                "--instance-types",
                "m5.large",
                "--labels",
                "team=cli",
                "--taints",
                "key=dedicated,value=cli,effect=NO_SCHEDULE",
            ],
        )
        .await,
    );
    assert_eq!(ng["nodegroup"]["status"], "CREATING");
    assert_eq!(ng["nodegroup"]["scalingConfig"]["desiredSize"], 2);
    let d = json(
        &aws(
            &url,
            &[
                "eks",
                "describe-nodegroup",
                "--cluster-name",
                "sim-1",
                "--nodegroup-name",
                "ng-cli",
            ],
        )
        .await,
    );
    assert_eq!(d["nodegroup"]["labels"]["team"], "cli");
    assert_eq!(d["nodegroup"]["taints"][0]["effect"], "NO_SCHEDULE");
    assert_eq!(d["nodegroup"]["instanceTypes"][0], "m5.large");
    assert_eq!(d["nodegroup"]["version"], "1.33");

    let u = json(
        &aws(
            &url,
            &[
                "eks",
                "update-cluster-version",
                "--name",
                "sim-1",
                "--kubernetes-version",
                "1.34",
            ],
        )
        .await,
    );
    assert_eq!(u["update"]["status"], "InProgress");
    let id = u["update"]["id"].as_str().unwrap().to_string();
    let du = json(
        &aws(
            &url,
            &["eks", "describe-update", "--name", "sim-1", "--update-id", &id],
        )
        .await,
    );
    assert_eq!(du["update"]["id"], id.as_str());
    assert_eq!(du["update"]["params"][0]["type"], "Version");
    assert_eq!(du["update"]["params"][0]["value"], "1.34");

    let e = aws(&url, &["eks", "describe-cluster", "--name", "nope"]).await;
    assert_ne!(e.code, 0);
    assert!(
        e.stderr.contains("An error occurred (ResourceNotFoundException) when calling the DescribeCluster operation: No cluster found for name: nope."),
        "{}",
        e.stderr
    );
    let e = aws(
        &url,
        &[
            "eks",
            "update-cluster-version",
            "--name",
            "sim-1",
            "--kubernetes-version",
            "1.35",
        ],
    )
    .await;
    assert!(e.stderr.contains("ResourceInUseException"), "{}", e.stderr);

    let g = json(&aws(&url, &["autoscaling", "describe-auto-scaling-groups"]).await);
    let groups = g["AutoScalingGroups"].as_array().unwrap();
    assert!(groups
        .iter()
        .any(|g| g["AutoScalingGroupName"].as_str().unwrap().contains("ng-old")));
    fleet.shutdown().await;
}
