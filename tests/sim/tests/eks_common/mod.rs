//! Shared set-up for the simulated EKS / Auto Scaling tests: real aws-sdk-eks and
//! aws-sdk-autoscaling clients pointed at the fleet's AWS listener, and a raw HTTP helper for
//! checking wire shapes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls;
use flotilla_sim::fleet::Fleet;

/// The SDK configuration for the fleet: dummy static credentials, its region, its endpoint, no
/// retries (so injected throttling is seen).
pub async fn sdk_config(fleet: &Fleet) -> aws_config::SdkConfig {
    let url = fleet.aws_url.clone().expect("fleet serves AWS");
    let region = fleet.aws().expect("aws").region.clone();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(region))
        .credentials_provider(Credentials::new(
            "AKIDFLOTILLASIM",
            "not-a-secret",
            None,
            None,
            "flotilla-sim-tests",
        ))
        .endpoint_url(url)
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

/// An EKS client.
pub async fn eks(fleet: &Fleet) -> aws_sdk_eks::Client {
    aws_sdk_eks::Client::new(&sdk_config(fleet).await)
}

/// An Auto Scaling client.
pub async fn asg(fleet: &Fleet) -> aws_sdk_autoscaling::Client {
    aws_sdk_autoscaling::Client::new(&sdk_config(fleet).await)
}

/// A raw HTTP/1.1 exchange: (status, headers lower-cased, body).
pub fn raw(
    fleet: &Fleet,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let url = fleet.aws_url.clone().expect("aws url");
    let addr = url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// A syntactically valid SigV4 header for `service` in `region` (the signature is not checked).
pub fn auth(service: &str, region: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIDFLOTILLASIM/20250101/{region}/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a fleet from a scenario and writes its files, without waiting for workloads to settle.
pub async fn start(scenario: &flotilla_sim::scenario::Scenario, n: usize) -> (Fleet, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::start_scenario(scenario, n, Default::default())
        .await
        .expect("fleet starts");
    fleet.write_files(dir.path()).expect("files written");
    (fleet, dir)
}

/// A scenario from YAML.
pub fn scenario(yaml: &str) -> flotilla_sim::scenario::Scenario {
    flotilla_sim::scenario::Scenario::from_yaml(yaml, "test.yaml").expect("scenario parses")
}

/// A kube-rs client for one cluster.
pub async fn kube(dir: &tempfile::TempDir, cluster: &str) -> kube::Client {
    let path = dir.path().join(format!("kubeconfig-{cluster}.yaml"));
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}
