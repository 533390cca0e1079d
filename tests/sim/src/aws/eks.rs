//! The EKS API (restJson1, as aws-sdk-eks and the AWS CLI send it): routes, validation with the
//! real error codes and messages, and the JSON shapes of clusters, node groups, updates,
//! insights and add-ons. Timed work is handed to [`super::effects`].

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::catalog;
use super::effects;
use super::{
    ami_for, k8s_effect, release_version, uuid, uuid_from, Aws, AwsError, EksCluster, ErrorDetail, Group,
    Managed, Update, UpdateTarget, ACCOUNT_ID,
};
use crate::object::Object;
use crate::resources::Kind;
use crate::scenario::eks::{valid_label, valid_nodegroup_name, InsightCategory, InsightStatusValue};
use crate::scenario::{
    Amount, CapacitySpec, KubeVersion, NodeGroupSpec, NodeGroupType, TaintEffect, TaintSpec,
    MAX_KUBELET_SKEW, SUPPORTED_MINORS,
};

/// Answers one EKS request: `(status, body)` or the error to send.
pub fn handle(
    aws: &Arc<Aws>,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<(u16, Value), AwsError> {
    let segs: Vec<String> = path.trim_matches('/').split('/').map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q: BTreeMap<String, Vec<String>> =
        form_urlencoded::parse(query.as_bytes()).fold(BTreeMap::new(), |mut m, (k, v)| {
            m.entry(k.into_owned())
                .or_insert_with(Vec::new)
                .push(v.into_owned());
            m
        });
    let body = || parse_body(body);
    let about = if segs.first() == Some(&"clusters") {
        segs.get(1).copied()
    } else {
        None
    };
    if aws.throttled(about) {
        return Err(AwsError::throttling());
    }
    let m = method.clone();
    match (m, segs.as_slice()) {
        (Method::GET, ["clusters"]) => list_clusters(aws, &q),
        (Method::GET, ["clusters", name]) => describe_cluster(aws, name),
        (Method::POST, ["clusters", name, "updates"]) => update_cluster_version(aws, name, &body()?),
        (Method::GET, ["clusters", name, "updates"]) => list_updates(aws, name, &q),
        (Method::GET, ["clusters", name, "updates", id]) => describe_update(aws, name, id, &q),
        (Method::GET, ["clusters", name, "node-groups"]) => list_nodegroups(aws, name, &q),
        (Method::POST, ["clusters", name, "node-groups"]) => create_nodegroup(aws, name, &body()?),
        (Method::GET, ["clusters", name, "node-groups", ng]) => describe_nodegroup(aws, name, ng),
        (Method::DELETE, ["clusters", name, "node-groups", ng]) => delete_nodegroup(aws, name, ng),
        (Method::POST, ["clusters", name, "node-groups", ng, "update-version"]) => {
            update_nodegroup_version(aws, name, ng, &body()?)
        }
        (Method::POST, ["clusters", name, "insights"]) => list_insights(aws, name, &body()?),
        (Method::GET, ["clusters", name, "insights", id]) => describe_insight(aws, name, id),
        (Method::GET, ["clusters", name, "addons"]) => list_addons(aws, name, &q),
        (Method::GET, ["clusters", name, "addons", addon]) => describe_addon(aws, name, addon),
        (Method::POST, ["clusters", name, "addons", addon, "update"]) => {
            update_addon(aws, name, addon, &body()?)
        }
        (Method::GET, ["addons", "supported-versions"]) => describe_addon_versions(&q),
        (Method::GET, ["cluster-versions"]) => describe_cluster_versions(&q),
        (m, _) => Err(AwsError::new(
            "UnknownOperationException",
            404,
            format!("{m} {path} is not an EKS operation the simulator serves"),
        )),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_body(body: &[u8]) -> Result<Value, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(AwsError::bad_request("The request body must be a JSON object.")),
        Err(e) => Err(AwsError::bad_request(format!(
            "Could not parse request body into json: {e}"
        ))),
    }
}

/// Epoch seconds with milliseconds, as restJson1 timestamps are written.
pub fn ts(t: Timestamp) -> Value {
    json!(t.as_millisecond() as f64 / 1000.0)
}

fn opt_str(body: &Value, field: &str) -> Result<Option<String>, AwsError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AwsError::invalid_parameter(format!("{field} must be a string"))),
    }
}

fn opt_bool(body: &Value, field: &str) -> Result<bool, AwsError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(AwsError::invalid_parameter(format!("{field} must be a boolean"))),
    }
}

fn opt_u32(body: &Value, field: &str) -> Result<Option<u32>, AwsError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| AwsError::invalid_parameter(format!("{field} must be a non-negative integer"))),
    }
}

fn str_list(body: &Value, field: &str) -> Result<Option<Vec<String>>, AwsError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| AwsError::invalid_parameter(format!("{field} must be a list of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(AwsError::invalid_parameter(format!(
            "{field} must be a list of strings"
        ))),
    }
}

fn str_map(body: &Value, field: &str) -> Result<BTreeMap<String, String>, AwsError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| AwsError::invalid_parameter(format!("{field} values must be strings")))
            })
            .collect(),
        Some(_) => Err(AwsError::invalid_parameter(format!(
            "{field} must be a map of strings"
        ))),
    }
}

fn q1<'a>(q: &'a BTreeMap<String, Vec<String>>, k: &str) -> Option<&'a str> {
    q.get(k).and_then(|v| v.first()).map(String::as_str)
}

/// Parses `"1.34"` as EKS accepts it.
fn parse_version(s: &str) -> Option<u32> {
    KubeVersion::parse(s).ok().map(KubeVersion::minor)
}

/// One page of `items`: `maxResults` (1..=100) and an opaque `nextToken`.
fn page<T: Clone>(
    items: &[T],
    max: Option<&str>,
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let max = match max {
        None => 100,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(AwsError::invalid_parameter(format!(
                    "1 validation error detected: Value '{m}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100"
                )))
            }
        },
    };
    let start = match token {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("flotilla-sim:")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| AwsError::invalid_parameter("The nextToken provided is invalid."))?,
    };
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| format!("flotilla-sim:{end}"));
    Ok((items[start..end].to_vec(), next))
}

fn with_cluster<R>(
    aws: &Aws,
    name: &str,
    f: impl FnOnce(&mut EksCluster) -> Result<R, AwsError>,
) -> Result<R, AwsError> {
    let mut st = aws.lock();
    let c = st
        .clusters
        .get_mut(name)
        .ok_or_else(|| AwsError::no_cluster(name))?;
    f(c)
}

fn no_nodegroup(cluster: &str, ng: &str) -> AwsError {
    AwsError::not_found(format!("No node group found for name: {ng}."))
        .cluster(cluster)
        .nodegroup(ng)
}

fn managed_group<'a>(c: &'a mut EksCluster, ng: &str) -> Result<&'a mut Group, AwsError> {
    let name = c.name.clone();
    c.groups
        .get_mut(ng)
        .filter(|g| g.managed.is_some())
        .ok_or_else(|| no_nodegroup(&name, ng))
}

// ---------------------------------------------------------------------------------------------
// Shapes.
// ---------------------------------------------------------------------------------------------

/// `Cluster`.
pub fn cluster_json(c: &EksCluster) -> Value {
    let h = |p: &str, n| super::hex_from(&[&c.name, p], n);
    json!({
        "name": c.name,
        "arn": c.arn(),
        "createdAt": ts(c.created_at),
        "version": format!("1.{}", c.minor),
        "endpoint": c.endpoint,
        "roleArn": format!("arn:aws:iam::{ACCOUNT_ID}:role/{}-cluster-role", c.name),
        "resourcesVpcConfig": {
            "subnetIds": super::subnets(&c.name),
            "securityGroupIds": [],
            "clusterSecurityGroupId": format!("sg-0{}", h("cluster-sg", 16)),
            "vpcId": format!("vpc-0{}", h("vpc", 16)),
            "endpointPublicAccess": true,
            "endpointPrivateAccess": true,
            "publicAccessCidrs": ["0.0.0.0/0"]
        },
        "kubernetesNetworkConfig": {"serviceIpv4Cidr": "172.20.0.0/16", "ipFamily": "ipv4", "elasticLoadBalancing": {"enabled": false}},
        "logging": {"clusterLogging": [{"types": ["api", "audit", "authenticator", "controllerManager", "scheduler"], "enabled": false}]},
        "identity": {"oidc": {"issuer": format!("https://oidc.eks.{}.amazonaws.com/id/{}", c.region, h("oidc", 32).to_uppercase())}},
        "status": c.status,
        "certificateAuthority": {"data": c.ca_data},
        "platformVersion": platform_version(c.minor),
        "tags": {},
        "id": c.id,
        "health": {"issues": []},
        "accessConfig": {"authenticationMode": "API_AND_CONFIG_MAP"},
        "upgradePolicy": {"supportType": "STANDARD"},
        "deletionProtection": false
    })
}

fn platform_version(minor: u32) -> String {
    format!("eks.{}", 3 + minor % 7)
}

/// `Nodegroup`.
pub fn nodegroup_json(c: &EksCluster, g: &Group, m: &Managed) -> Value {
    let mut update_config = Map::new();
    if let Some(n) = m.max_unavailable {
        update_config.insert("maxUnavailable".into(), json!(n));
    }
    if let Some(p) = m.max_unavailable_percentage {
        update_config.insert("maxUnavailablePercentage".into(), json!(p));
    }
    let mut v = json!({
        "nodegroupName": g.name,
        "nodegroupArn": format!("arn:aws:eks:{}:{ACCOUNT_ID}:nodegroup/{}/{}/{}", c.region, c.name, g.name, uuid_from(&[&c.name, &g.name, "ng"])),
        "clusterName": c.name,
        "version": format!("1.{}", m.version),
        "releaseVersion": m.release_version,
        "createdAt": ts(m.created_at),
        "modifiedAt": ts(m.modified_at),
        "status": m.status,
        "capacityType": m.capacity_type,
        "scalingConfig": {"minSize": g.min, "maxSize": g.max, "desiredSize": g.desired},
        "instanceTypes": m.instance_types,
        "subnets": m.subnets,
        "amiType": m.ami_type,
        "nodeRole": m.node_role,
        "labels": m.labels,
        "resources": {"autoScalingGroups": [{"name": g.asg_name}]},
        "health": {"issues": m.health.iter().map(|i| json!({"code": i.code, "message": i.message, "resourceIds": i.resource_ids})).collect::<Vec<_>>()},
        "updateConfig": update_config,
        "tags": m.tags,
    });
    if let Value::Object(o) = &mut v {
        if !m.taints.is_empty() {
            let taints: Vec<Value> = m
                .taints
                .iter()
                .map(|(k, val, e)| {
                    let mut t = json!({"key": k, "effect": e});
                    if let (Some(val), Value::Object(t)) = (val, &mut t) {
                        t.insert("value".into(), json!(val));
                    }
                    t
                })
                .collect();
            o.insert("taints".into(), json!(taints));
        }
        if let Some(d) = m.disk_size {
            o.insert("diskSize".into(), json!(d));
        }
        if let Some(lt) = &m.launch_template {
            o.insert("launchTemplate".into(), lt.clone());
        }
    }
    v
}

/// `Update`.
pub fn update_json(u: &Update) -> Value {
    json!({
        "id": u.id,
        "status": u.status,
        "type": u.kind,
        "params": u.params.iter().map(|(t, v)| json!({"type": t, "value": v})).collect::<Vec<_>>(),
        "createdAt": ts(u.created_at),
        "errors": u.errors.iter().map(error_json).collect::<Vec<_>>(),
    })
}

fn error_json(e: &ErrorDetail) -> Value {
    json!({"errorCode": e.code, "errorMessage": e.message, "resourceIds": e.resource_ids})
}

fn addon_json(c: &EksCluster, a: &super::Addon) -> Value {
    let mut v = json!({
        "addonName": a.name,
        "clusterName": c.name,
        "status": a.status,
        "addonVersion": a.version,
        "health": {"issues": a.health.iter().map(|i| json!({"code": i.code, "message": i.message, "resourceIds": i.resource_ids})).collect::<Vec<_>>()},
        "addonArn": format!("arn:aws:eks:{}:{ACCOUNT_ID}:addon/{}/{}/{}", c.region, c.name, a.name, uuid_from(&[&c.name, &a.name, "addon"])),
        "createdAt": ts(a.created_at),
        "modifiedAt": ts(a.modified_at),
        "tags": {},
        "publisher": "eks",
        "owner": "aws",
    });
    if let Value::Object(o) = &mut v {
        if let Some(r) = &a.service_account_role_arn {
            o.insert("serviceAccountRoleArn".into(), json!(r));
        }
        if let Some(cv) = &a.configuration_values {
            o.insert("configurationValues".into(), json!(cv));
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Clusters and updates.
// ---------------------------------------------------------------------------------------------

fn list_clusters(aws: &Aws, q: &BTreeMap<String, Vec<String>>) -> Result<(u16, Value), AwsError> {
    let names: Vec<String> = aws.lock().clusters.keys().cloned().collect();
    let (items, next) = page(&names, q1(q, "maxResults"), q1(q, "nextToken"))?;
    Ok((200, with_next(json!({"clusters": items}), next)))
}

fn with_next(mut v: Value, next: Option<String>) -> Value {
    if let (Some(n), Value::Object(o)) = (next, &mut v) {
        o.insert("nextToken".into(), json!(n));
    }
    v
}

fn describe_cluster(aws: &Aws, name: &str) -> Result<(u16, Value), AwsError> {
    with_cluster(aws, name, |c| Ok((200, json!({"cluster": cluster_json(c)}))))
}

fn update_cluster_version(aws: &Arc<Aws>, name: &str, body: &Value) -> Result<(u16, Value), AwsError> {
    let version = opt_str(body, "version")?;
    let force = opt_bool(body, "force")?;
    let insights = insights(aws, name)?;
    let update = with_cluster(aws, name, |c| {
        let Some(version) = version else {
            return Err(AwsError::invalid_parameter("version is required").cluster(name));
        };
        let target = parse_version(&version).ok_or_else(|| {
            AwsError::invalid_parameter(format!("unsupported Kubernetes version {version}")).cluster(name)
        })?;
        if let Some(u) = c.update_in_progress(&UpdateTarget::Cluster) {
            return Err(AwsError::in_use(format!(
                "Cannot VersionUpdate because cluster {name} currently has update {} in progress",
                u.id
            ))
            .cluster(name));
        }
        if target == c.minor {
            return Err(AwsError::invalid_parameter(format!(
                "Cluster is already at the desired configuration with version: 1.{target}"
            ))
            .cluster(name));
        }
        if target != c.minor + 1 {
            return Err(AwsError::invalid_parameter(format!(
                "Unsupported Kubernetes minor version update from 1.{} to 1.{target}",
                c.minor
            ))
            .cluster(name));
        }
        if !SUPPORTED_MINORS.contains(&target) {
            return Err(
                AwsError::invalid_parameter(format!("unsupported Kubernetes version 1.{target}"))
                    .cluster(name),
            );
        }
        let lagging: Vec<&str> = c
            .managed()
            .filter(|(_, m)| m.version < c.minor)
            .map(|(g, _)| g.name.as_str())
            .collect();
        if !lagging.is_empty() {
            return Err(AwsError::invalid_parameter(format!(
                "Nodegroups {} must be updated to match cluster version 1.{} before updating cluster version",
                lagging.join(", "),
                c.minor
            ))
            .cluster(name));
        }
        let blocking = insights.iter().any(|i| {
            i.category == InsightCategory::UpgradeReadiness
                && i.kubernetes_version == target
                && i.status == InsightStatusValue::Error
        });
        if blocking && !force {
            return Err(AwsError::new(
                "InvalidStateException",
                400,
                "Upgrade readiness issues detected. Call the EKS ListInsights API to view upgrade blocking issues detected by EKS. Pass the force flag to override upgrade readiness errors and proceed with upgrade.",
            )
            .cluster(name));
        }
        let u = Update {
            id: uuid(),
            target: UpdateTarget::Cluster,
            kind: "VersionUpdate",
            status: "InProgress",
            params: vec![
                ("Version".into(), format!("1.{target}")),
                ("PlatformVersion".into(), platform_version(target)),
            ],
            created_at: Timestamp::now(),
            errors: Vec::new(),
        };
        c.status = "UPDATING";
        c.updates.push(u.clone());
        Ok(u)
    })?;
    effects::spawn(
        aws,
        effects::cluster_update(aws.clone(), name.to_string(), update.id.clone()),
    );
    Ok((200, json!({"update": update_json(&update)})))
}

/// Which updates a request is about (`nodegroupName` / `addonName`), checked to exist.
fn update_target(c: &EksCluster, q: &BTreeMap<String, Vec<String>>) -> Result<UpdateTarget, AwsError> {
    if let Some(ng) = q1(q, "nodegroupName") {
        if c.groups.get(ng).is_none_or(|g| g.managed.is_none()) {
            return Err(no_nodegroup(&c.name, ng));
        }
        return Ok(UpdateTarget::Nodegroup(ng.to_string()));
    }
    if let Some(a) = q1(q, "addonName") {
        if !c.addons.contains_key(a) {
            return Err(no_addon(&c.name, a));
        }
        return Ok(UpdateTarget::Addon(a.to_string()));
    }
    Ok(UpdateTarget::Cluster)
}

fn list_updates(aws: &Aws, name: &str, q: &BTreeMap<String, Vec<String>>) -> Result<(u16, Value), AwsError> {
    with_cluster(aws, name, |c| {
        let target = update_target(c, q)?;
        let ids: Vec<String> = c
            .updates
            .iter()
            .filter(|u| u.target == target)
            .map(|u| u.id.clone())
            .collect();
        let (items, next) = page(&ids, q1(q, "maxResults"), q1(q, "nextToken"))?;
        Ok((200, with_next(json!({"updateIds": items}), next)))
    })
}

fn describe_update(
    aws: &Aws,
    name: &str,
    id: &str,
    q: &BTreeMap<String, Vec<String>>,
) -> Result<(u16, Value), AwsError> {
    with_cluster(aws, name, |c| {
        let target = update_target(c, q)?;
        c.updates
            .iter()
            .find(|u| u.id == id && u.target == target)
            .map(|u| (200, json!({"update": update_json(u)})))
            .ok_or_else(|| AwsError::not_found(format!("No update found for ID: {id}")).cluster(name))
    })
}

// ---------------------------------------------------------------------------------------------
// Node groups.
// ---------------------------------------------------------------------------------------------

fn list_nodegroups(
    aws: &Aws,
    name: &str,
    q: &BTreeMap<String, Vec<String>>,
) -> Result<(u16, Value), AwsError> {
    with_cluster(aws, name, |c| {
        let names: Vec<String> = c.managed().map(|(g, _)| g.name.clone()).collect();
        let (items, next) = page(&names, q1(q, "maxResults"), q1(q, "nextToken"))?;
        Ok((200, with_next(json!({"nodegroups": items}), next)))
    })
}

fn describe_nodegroup(aws: &Aws, name: &str, ng: &str) -> Result<(u16, Value), AwsError> {
    with_cluster(aws, name, |c| {
        let g = c.groups.get(ng).ok_or_else(|| no_nodegroup(name, ng))?;
        let m = g.managed.as_ref().ok_or_else(|| no_nodegroup(name, ng))?;
        Ok((200, json!({"nodegroup": nodegroup_json(c, g, m)})))
    })
}

/// vCPU, memory and max pods (the VPC CNI's ENI limit) of common instance types.
fn instance_capacity(instance_type: &str) -> Option<(&'static str, &'static str, u32)> {
    Some(match instance_type {
        "t3.medium" | "t3a.medium" => ("2", "4Gi", 17),
        "t3.large" | "t3a.large" => ("2", "8Gi", 35),
        "t3.xlarge" | "t3a.xlarge" => ("4", "16Gi", 58),
        "m5.large" | "m6i.large" | "m6a.large" | "m7i.large" | "m6g.large" | "m7g.large" => ("2", "8Gi", 29),
        "m5.xlarge" | "m6i.xlarge" | "m6a.xlarge" | "m7i.xlarge" | "m6g.xlarge" | "m7g.xlarge" => {
            ("4", "16Gi", 58)
        }
        "m5.2xlarge" | "m6i.2xlarge" | "m6a.2xlarge" | "m7i.2xlarge" | "m6g.2xlarge" | "m7g.2xlarge" => {
            ("8", "32Gi", 58)
        }
        "c5.large" | "c6i.large" | "c6g.large" | "c7g.large" => ("2", "4Gi", 29),
        "c5.xlarge" | "c6i.xlarge" | "c6g.xlarge" | "c7g.xlarge" => ("4", "8Gi", 58),
        "r5.large" | "r6i.large" | "r6g.large" => ("2", "16Gi", 29),
        "r5.xlarge" | "r6i.xlarge" | "r6g.xlarge" => ("4", "32Gi", 58),
        _ => return None,
    })
}

fn capacity_for(instance_type: &str) -> CapacitySpec {
    instance_capacity(instance_type)
        .and_then(|(cpu, mem, pods)| {
            Some(CapacitySpec {
                pods,
                cpu: Amount::parse(cpu).ok()?,
                memory: Amount::parse(mem).ok()?,
            })
        })
        .unwrap_or_default()
}

fn create_nodegroup(aws: &Arc<Aws>, name: &str, body: &Value) -> Result<(u16, Value), AwsError> {
    let bad = |msg: String| AwsError::invalid_parameter(msg).cluster(name);
    let ng = opt_str(body, "nodegroupName")?.ok_or_else(|| bad("nodegroupName is required".into()))?;
    let bad_ng = |msg: String| AwsError::invalid_parameter(msg).cluster(name).nodegroup(&ng);
    if !valid_nodegroup_name(&ng) {
        return Err(bad_ng(format!(
            "Nodegroup name {ng} is invalid: it must be 1-63 characters of letters, digits, hyphens and underscores, starting with a letter or digit"
        )));
    }
    let subnets = str_list(body, "subnets")?.unwrap_or_default();
    if subnets.is_empty() {
        return Err(bad_ng("Subnets are required".into()));
    }
    let node_role = opt_str(body, "nodeRole")?.ok_or_else(|| bad_ng("nodeRole is required".into()))?;
    let scaling = body.get("scalingConfig").cloned().unwrap_or(json!({}));
    let min = opt_u32(&scaling, "minSize")?.unwrap_or(1);
    let max = opt_u32(&scaling, "maxSize")?.unwrap_or(2);
    let desired = opt_u32(&scaling, "desiredSize")?.unwrap_or(2.max(min).min(max));
    check_scaling(min, max, desired).map_err(&bad_ng)?;
    let instance_types = str_list(body, "instanceTypes")?.unwrap_or_else(|| vec!["t3.medium".into()]);
    let Some(instance_type) = instance_types.first().cloned() else {
        return Err(bad_ng("instanceTypes must not be empty".into()));
    };
    let labels = str_map(body, "labels")?;
    if let Some((k, v)) = labels.iter().find(|(k, v)| !valid_label(k, v)) {
        return Err(bad_ng(format!("Label {k}={v} is not a valid Kubernetes label")));
    }
    let mut taints = Vec::new();
    let mut taint_specs = Vec::new();
    if let Some(list) = body.get("taints").and_then(Value::as_array) {
        if list.len() > 50 {
            return Err(bad_ng("A node group can have at most 50 taints".into()));
        }
        for t in list {
            let key = opt_str(t, "key")?.unwrap_or_default();
            let value = opt_str(t, "value")?;
            let effect = opt_str(t, "effect")?.unwrap_or_default();
            let k8s = k8s_effect(&effect).ok_or_else(|| {
                bad_ng(format!(
                    "Taint effect {effect} is invalid; use NO_SCHEDULE, NO_EXECUTE or PREFER_NO_SCHEDULE"
                ))
            })?;
            if !valid_label(&key, value.as_deref().unwrap_or("")) || key.is_empty() {
                return Err(bad_ng(format!("Taint key {key:?} or value is invalid")));
            }
            let effect_spec = match k8s {
                "NoExecute" => TaintEffect::NoExecute,
                "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
                _ => TaintEffect::NoSchedule,
            };
            taint_specs.push(TaintSpec {
                key: key.clone(),
                value: value.clone().unwrap_or_default(),
                effect: effect_spec,
            });
            taints.push((key, value, effect));
        }
    }
    let update_cfg = body.get("updateConfig").cloned().unwrap_or(json!({}));
    let (mu, mup) = (
        opt_u32(&update_cfg, "maxUnavailable")?,
        opt_u32(&update_cfg, "maxUnavailablePercentage")?,
    );
    check_update_config(mu, mup).map_err(&bad_ng)?;
    let capacity_type = opt_str(body, "capacityType")?.unwrap_or_else(|| "ON_DEMAND".into());
    if !["ON_DEMAND", "SPOT", "CAPACITY_BLOCK"].contains(&capacity_type.as_str()) {
        return Err(bad_ng(format!("capacityType {capacity_type} is invalid")));
    }
    let version = opt_str(body, "version")?;
    let release = opt_str(body, "releaseVersion")?;
    let tags = str_map(body, "tags")?;
    let disk_size = match body.get("diskSize") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| bad_ng("diskSize must be an integer".into()))?,
        ),
    };
    let launch_template = body.get("launchTemplate").filter(|v| !v.is_null()).cloned();
    let ami_type = opt_str(body, "amiType")?.unwrap_or_else(|| {
        if crate::scenario::build::architecture(&instance_type) == "arm64" {
            "AL2023_ARM_64_STANDARD".into()
        } else {
            "AL2023_x86_64_STANDARD".into()
        }
    });
    let now = Timestamp::now();
    let (out, stuck) = with_cluster(aws, name, |c| {
        if c.groups.contains_key(&ng) {
            return Err(AwsError::in_use(format!(
                "NodeGroup already exists with name {ng} and cluster name {name}"
            ))
            .cluster(name)
            .nodegroup(&ng));
        }
        let minor = match &version {
            None => c.minor,
            Some(v) => {
                let m = parse_version(v)
                    .ok_or_else(|| bad_ng(format!("Requested Nodegroup version {v} is invalid.")))?;
                if m > c.minor || m + MAX_KUBELET_SKEW < c.minor {
                    return Err(bad_ng(format!(
                        "Requested Nodegroup version {v} is invalid. Allowed version is 1.{}",
                        c.minor
                    )));
                }
                m
            }
        };
        let rel = release_version(minor);
        if let Some(r) = &release {
            if *r != rel {
                return Err(bad_ng(format!(
                    "Requested Nodegroup release version {r} is invalid. Allowed release version is {rel}"
                )));
            }
        }
        let spec = NodeGroupSpec {
            name: ng.clone(),
            kind: NodeGroupType::Managed,
            nodes: desired,
            instance_type: instance_type.clone(),
            capacity: capacity_for(&instance_type),
            labels: labels.clone(),
            taints: taint_specs,
            kubelet_version: Some(KubeVersion::new(minor)),
        };
        let managed = Managed {
            status: "CREATING",
            version: minor,
            release_version: rel.clone(),
            created_at: now,
            modified_at: now,
            instance_types: instance_types.clone(),
            subnets,
            ami_type,
            node_role,
            labels,
            taints,
            capacity_type,
            max_unavailable: if mu.is_none() && mup.is_none() {
                Some(1)
            } else {
                mu
            },
            max_unavailable_percentage: mup,
            disk_size: if launch_template.is_some() {
                disk_size
            } else {
                Some(disk_size.unwrap_or(20))
            },
            tags,
            health: Vec::new(),
            launch_template,
        };
        let g = Group {
            name: ng.clone(),
            spec,
            managed: Some(managed),
            asg_name: format!("eks-{ng}-{}", uuid()),
            asg_created: now,
            min,
            max,
            desired,
            members: Vec::new(),
            next_index: 0,
            minor,
            ami: ami_for(name, &ng, &rel),
            busy: true,
            deleting: false,
        };
        let stuck = c.faults.stuck_creating.contains(&ng);
        let out = g
            .managed
            .as_ref()
            .map(|m| nodegroup_json(c, &g, m))
            .unwrap_or(Value::Null);
        c.groups.insert(ng.clone(), g);
        Ok((out, stuck))
    })?;
    if !stuck {
        effects::spawn(
            aws,
            effects::nodegroup_create(aws.clone(), name.to_string(), ng.clone()),
        );
    }
    Ok((200, json!({"nodegroup": out})))
}

fn check_scaling(min: u32, max: u32, desired: u32) -> Result<(), String> {
    if max < 1 {
        return Err(format!("Maximum capacity {max} must be at least 1"));
    }
    if min > max {
        return Err(format!(
            "Minimum capacity {min} can't be greater than max size {max}"
        ));
    }
    if desired < min {
        return Err(format!(
            "Minimum capacity {min} can't be greater than desired size {desired}"
        ));
    }
    if desired > max {
        return Err(format!(
            "Desired capacity {desired} can't be greater than max size {max}"
        ));
    }
    Ok(())
}

fn check_update_config(mu: Option<u32>, mup: Option<u32>) -> Result<(), String> {
    match (mu, mup) {
        (Some(_), Some(_)) => {
            Err("Only one of maxUnavailable and maxUnavailablePercentage can be set".into())
        }
        (Some(n), None) if !(1..=100).contains(&n) => {
            Err(format!("maxUnavailable {n} must be between 1 and 100"))
        }
        (None, Some(p)) if !(1..=100).contains(&p) => {
            Err(format!("maxUnavailablePercentage {p} must be between 1 and 100"))
        }
        _ => Ok(()),
    }
}

fn delete_nodegroup(aws: &Arc<Aws>, name: &str, ng: &str) -> Result<(u16, Value), AwsError> {
    let out = with_cluster(aws, name, |c| {
        let in_progress = c
            .update_in_progress(&UpdateTarget::Nodegroup(ng.to_string()))
            .map(|u| u.id.clone());
        let g = managed_group(c, ng)?;
        let status = g.managed.as_ref().map_or("", |m| m.status);
        if status == "DELETING" || status == "UPDATING" || in_progress.is_some() {
            return Err(AwsError::in_use(format!(
                "Nodegroup {ng} cannot be deleted because it is currently {status}"
            ))
            .cluster(name)
            .nodegroup(ng));
        }
        if let Some(m) = g.managed.as_mut() {
            m.status = "DELETING";
            m.modified_at = Timestamp::now();
        }
        g.busy = true;
        let g = g.clone();
        Ok(g.managed
            .as_ref()
            .map(|m| nodegroup_json(c, &g, m))
            .unwrap_or(Value::Null))
    })?;
    effects::spawn(
        aws,
        effects::nodegroup_delete(aws.clone(), name.to_string(), ng.to_string()),
    );
    Ok((200, json!({"nodegroup": out})))
}

fn update_nodegroup_version(
    aws: &Arc<Aws>,
    name: &str,
    ng: &str,
    body: &Value,
) -> Result<(u16, Value), AwsError> {
    let version = opt_str(body, "version")?;
    let release = opt_str(body, "releaseVersion")?;
    let force = opt_bool(body, "force")?;
    let update = with_cluster(aws, name, |c| {
        let cp = c.minor;
        let target = UpdateTarget::Nodegroup(ng.to_string());
        let in_progress = c.update_in_progress(&target).map(|u| u.id.clone());
        let g = managed_group(c, ng)?;
        let bad = |msg: String| AwsError::invalid_parameter(msg).cluster(name).nodegroup(ng);
        let Some(m) = g.managed.as_mut() else {
            return Err(no_nodegroup(name, ng));
        };
        if let Some(id) = in_progress {
            return Err(AwsError::in_use(format!(
                "Cannot VersionUpdate because nodegroup {ng} currently has update {id} in progress"
            ))
            .cluster(name)
            .nodegroup(ng));
        }
        if m.status != "ACTIVE" && m.status != "DEGRADED" {
            return Err(AwsError::in_use(format!(
                "Nodegroup {ng} is currently {} and cannot be updated",
                m.status
            ))
            .cluster(name)
            .nodegroup(ng));
        }
        let minor = match &version {
            None => m.version,
            Some(v) => {
                let t = parse_version(v)
                    .ok_or_else(|| bad(format!("Requested Nodegroup version {v} is invalid.")))?;
                if t > cp {
                    return Err(bad(format!(
                        "Requested Nodegroup version {v} is invalid. Nodegroup version cannot be newer than the cluster version 1.{cp}"
                    )));
                }
                if t < m.version {
                    return Err(bad(format!(
                        "Requested Nodegroup version {v} is invalid. Allowed version is 1.{cp}"
                    )));
                }
                t
            }
        };
        let rel = release_version(minor);
        if let Some(r) = &release {
            if *r != rel {
                return Err(bad(format!(
                    "Requested Nodegroup release version {r} is invalid. Allowed release version is {rel}"
                )));
            }
        }
        m.status = "UPDATING";
        m.modified_at = Timestamp::now();
        g.busy = true;
        let u = Update {
            id: uuid(),
            target,
            kind: "VersionUpdate",
            status: "InProgress",
            params: vec![
                ("Version".into(), format!("1.{minor}")),
                ("ReleaseVersion".into(), rel),
            ],
            created_at: Timestamp::now(),
            errors: Vec::new(),
        };
        c.updates.push(u.clone());
        Ok((u, minor))
    })?;
    let (update, minor) = update;
    effects::spawn(
        aws,
        effects::nodegroup_update(
            aws.clone(),
            name.to_string(),
            ng.to_string(),
            update.id.clone(),
            minor,
            force,
        ),
    );
    Ok((200, json!({"update": update_json(&update)})))
}

// ---------------------------------------------------------------------------------------------
// Insights.
// ---------------------------------------------------------------------------------------------

/// One computed (or scenario-set) insight.
#[derive(Debug, Clone)]
pub struct InsightRec {
    /// Stable id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Category.
    pub category: InsightCategory,
    /// Minor it is about.
    pub kubernetes_version: u32,
    /// Status.
    pub status: InsightStatusValue,
    /// Status reason.
    pub reason: String,
    /// Description.
    pub description: String,
    /// Recommendation.
    pub recommendation: String,
    /// Resources: (Kubernetes URI, status, reason).
    pub resources: Vec<(String, InsightStatusValue, String)>,
    /// Deprecated API details.
    pub deprecations: Vec<Value>,
    /// Add-on compatibility details.
    pub addon_compat: Vec<Value>,
}

fn worst(a: InsightStatusValue, b: InsightStatusValue) -> InsightStatusValue {
    let rank = |s| match s {
        InsightStatusValue::Passing => 0,
        InsightStatusValue::Unknown => 1,
        InsightStatusValue::Warning => 2,
        InsightStatusValue::Error => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The kubelet minor a node reports (`v1.33.5-eks-…` → 33).
fn kubelet_minor(obj: &Object) -> Option<u32> {
    let Object::Node(n) = obj else { return None };
    let v = n
        .status
        .as_ref()?
        .node_info
        .as_ref()?
        .kubelet_version
        .trim_start_matches('v')
        .to_string();
    v.strip_prefix("1.")?.split(['.', '-']).next()?.parse().ok()
}

/// The upgrade insights of cluster `name`, computed from its live state and the scenario's.
pub fn insights(aws: &Aws, name: &str) -> Result<Vec<InsightRec>, AwsError> {
    let (minor, addons, set) = with_cluster(aws, name, |c| {
        Ok((
            c.minor,
            c.addons
                .values()
                .map(|a| (a.name.clone(), a.version.clone()))
                .collect::<Vec<_>>(),
            c.insights.clone(),
        ))
    })?;
    let next = minor + 1;
    let nodes: Vec<(String, Option<u32>)> = aws
        .cluster(name)
        .map(|c| {
            c.lock()
                .list(Kind::Node, None)
                .map(|e| (e.obj.name().to_string(), kubelet_minor(&e.obj)))
                .collect()
        })
        .unwrap_or_default();
    // The calls the cluster's API server sees (its audit log, as EKS reads it).
    let deprecated = aws
        .cluster(name)
        .map(|c| c.behaviour().deprecated_api_requests)
        .unwrap_or_default();
    let rec = |n: &str, status, reason: &str, description: &str, recommendation: &str| InsightRec {
        id: uuid_from(&[name, n, &next.to_string(), "insight"]),
        name: n.to_string(),
        category: InsightCategory::UpgradeReadiness,
        kubernetes_version: next,
        status,
        reason: reason.into(),
        description: description.into(),
        recommendation: recommendation.into(),
        resources: Vec::new(),
        deprecations: Vec::new(),
        addon_compat: Vec::new(),
    };
    let mut out = Vec::new();
    // Kubelet version skew.
    let mut skew = rec(
        "Kubelet version skew",
        InsightStatusValue::Passing,
        "Node kubelet versions match the cluster version.",
        "Checks for kubelet versions of worker nodes in the cluster to see if upgrade would cause noncompliance with supported Kubernetes kubelet version skew policy.",
        "Upgrade your worker nodes to match the Kubernetes version of your cluster control plane.",
    );
    for (node, k) in &nodes {
        let (st, why) = match k {
            None => (InsightStatusValue::Unknown, "The node reports no kubelet version.".to_string()),
            Some(k) if k + MAX_KUBELET_SKEW < next => (
                InsightStatusValue::Error,
                format!("Kubelet 1.{k} would be more than {MAX_KUBELET_SKEW} minor versions behind a 1.{next} control plane."),
            ),
            Some(k) if *k < minor => (InsightStatusValue::Warning, format!("Kubelet 1.{k} is older than the control plane 1.{minor}.")),
            Some(k) => (InsightStatusValue::Passing, format!("Kubelet 1.{k}.")),
        };
        skew.status = worst(skew.status, st);
        skew.resources.push((format!("/api/v1/nodes/{node}"), st, why));
    }
    if skew.status == InsightStatusValue::Error {
        skew.reason = "Node kubelet versions would be outside the supported skew after the upgrade.".into();
    } else if skew.status == InsightStatusValue::Warning {
        skew.reason = "Node kubelet versions lag the control plane.".into();
    }
    out.push(skew);
    let mut apis = rec(
        &format!("Deprecated APIs removed in Kubernetes v1.{next}"),
        InsightStatusValue::Passing,
        "No deprecated API usage detected within the last 30 days.",
        &format!("Checks for usage of deprecated APIs that are scheduled for removal in Kubernetes v1.{next}. Upgrading your cluster before migrating to the updated APIs supported by v1.{next} could cause application impact."),
        "Update manifests and API clients to use newer Kubernetes APIs if applicable before upgrading.",
    );
    // The audit log's view of the clients still calling an API the next minor removes.
    for d in deprecated.iter().filter(|d| d.removed_release.minor() == next) {
        apis.status = InsightStatusValue::Error;
        apis.reason = "Deprecated API usage detected within last 30 days.".into();
        apis.deprecations.push(deprecation(
            &d.api,
            d.replaced_with.as_deref(),
            d.removed_release,
            None,
            &d.user_agent,
            1,
        ));
    }
    out.push(apis);
    let mut compat = rec(
        "Amazon EKS add-on version compatibility",
        InsightStatusValue::Passing,
        "All installed add-on versions are compatible with the next Kubernetes version.",
        "Checks version of installed EKS add-ons to ensure they are compatible with the next version of Kubernetes.",
        "Upgrade your EKS add-on to a newer version that is supported by the next Kubernetes version.",
    );
    for (addon, version) in &addons {
        let ok = catalog::find(addon, version).is_some_and(|v| v.compatible_with(next));
        if !ok {
            compat.status = InsightStatusValue::Error;
            compat.reason =
                "Add-on versions installed are not compatible with the next Kubernetes version.".into();
            let versions: Vec<String> = catalog::versions(addon)
                .into_iter()
                .filter(|v| v.compatible_with(next))
                .map(|v| v.version)
                .collect();
            compat
                .addon_compat
                .push(json!({"name": addon, "compatibleVersions": versions}));
        }
    }
    out.push(compat);
    out.push(rec(
        "Cluster health issues",
        InsightStatusValue::Passing,
        "No cluster health issues detected.",
        "Checks for any cluster health issues that prevent successful upgrade to the next Kubernetes version on EKS.",
        "Refer to the cluster health issues documentation to resolve them.",
    ));
    for s in &set {
        let kv = s.kubernetes_version.map_or(next, KubeVersion::minor);
        let mut r = InsightRec {
            id: uuid_from(&[name, &s.name, &kv.to_string(), "insight"]),
            name: s.name.clone(),
            category: s.category,
            kubernetes_version: kv,
            status: s.status,
            reason: s.reason.clone().unwrap_or_else(|| match s.status {
                InsightStatusValue::Passing => "No issues detected.".into(),
                InsightStatusValue::Error if !s.deprecated_apis.is_empty() => {
                    "Deprecated API usage detected within last 30 days.".into()
                }
                _ => "Issues detected.".into(),
            }),
            description: s.description.clone().unwrap_or_default(),
            recommendation: s.recommendation.clone().unwrap_or_default(),
            resources: Vec::new(),
            deprecations: s
                .deprecated_apis
                .iter()
                .map(|d| {
                    deprecation(
                        &d.usage,
                        d.replaced_with.as_deref(),
                        d.stop_serving_version,
                        d.start_serving_replacement_version,
                        &d.user_agent,
                        d.requests_last_30_days,
                    )
                })
                .collect(),
            addon_compat: Vec::new(),
        };
        match out.iter_mut().find(|o| o.name == s.name) {
            Some(existing) => {
                if r.description.is_empty() {
                    r.description = existing.description.clone();
                }
                if r.recommendation.is_empty() {
                    r.recommendation = existing.recommendation.clone();
                }
                *existing = r;
            }
            None => out.push(r),
        }
    }
    Ok(out)
}

/// One `deprecationDetails` entry of DescribeInsight.
fn deprecation(
    usage: &str,
    replaced_with: Option<&str>,
    stop_serving: KubeVersion,
    start_serving_replacement: Option<KubeVersion>,
    user_agent: &str,
    requests: u32,
) -> Value {
    let mut v = json!({
        "usage": usage,
        "stopServingVersion": stop_serving.to_string(),
        "clientStats": [{"userAgent": user_agent, "numberOfRequestsLast30Days": requests, "lastRequestTime": ts(Timestamp::now())}],
    });
    if let Value::Object(o) = &mut v {
        if let Some(r) = replaced_with {
            o.insert("replacedWith".into(), json!(r));
        }
        if let Some(r) = start_serving_replacement {
            o.insert("startServingReplacementVersion".into(), json!(r.to_string()));
        }
    }
    v
}

fn insight_summary(i: &InsightRec, now: Timestamp) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "category": i.category.as_str(),
        "kubernetesVersion": format!("1.{}", i.kubernetes_version),
        "lastRefreshTime": ts(now),
        "lastTransitionTime": ts(now),
        "description": i.description,
        "insightStatus": {"status": i.status.as_str(), "reason": i.reason},
    })
}

fn list_insights(aws: &Aws, name: &str, body: &Value) -> Result<(u16, Value), AwsError> {
    let all = insights(aws, name)?;
    let filter = body.get("filter").cloned().unwrap_or(json!({}));
    let cats = str_list(&filter, "categories")?;
    let versions = str_list(&filter, "kubernetesVersions")?;
    let statuses = str_list(&filter, "statuses")?;
    for c in cats.iter().flatten() {
        if c != "UPGRADE_READINESS" && c != "MISCONFIGURATION" {
            return Err(AwsError::invalid_parameter(format!("Invalid category {c}")).cluster(name));
        }
    }
    for s in statuses.iter().flatten() {
        if !["PASSING", "WARNING", "ERROR", "UNKNOWN"].contains(&s.as_str()) {
            return Err(AwsError::invalid_parameter(format!("Invalid status {s}")).cluster(name));
        }
    }
    let picked: Vec<InsightRec> = all
        .into_iter()
        .filter(|i| {
            cats.as_ref()
                .is_none_or(|c| c.is_empty() || c.iter().any(|c| c == i.category.as_str()))
        })
        .filter(|i| {
            versions
                .as_ref()
                .is_none_or(|v| v.is_empty() || v.contains(&format!("1.{}", i.kubernetes_version)))
        })
        .filter(|i| {
            statuses
                .as_ref()
                .is_none_or(|s| s.is_empty() || s.iter().any(|s| s == i.status.as_str()))
        })
        .collect();
    let max = opt_u32(body, "maxResults")?.map(|m| m.to_string());
    let token = opt_str(body, "nextToken")?;
    let (items, next) = page(&picked, max.as_deref(), token.as_deref())?;
    let now = Timestamp::now();
    let list: Vec<Value> = items.iter().map(|i| insight_summary(i, now)).collect();
    Ok((200, with_next(json!({"insights": list}), next)))
}

fn describe_insight(aws: &Aws, name: &str, id: &str) -> Result<(u16, Value), AwsError> {
    let all = insights(aws, name)?;
    let i = all
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| AwsError::not_found(format!("No insight found for id: {id}")).cluster(name))?;
    let now = Timestamp::now();
    let mut v = insight_summary(i, now);
    if let Value::Object(o) = &mut v {
        o.insert("recommendation".into(), json!(i.recommendation));
        o.insert(
            "additionalInfo".into(),
            json!({"EKS update cluster documentation": "https://docs.aws.amazon.com/eks/latest/userguide/update-cluster.html"}),
        );
        o.insert(
            "resources".into(),
            json!(i
                .resources
                .iter()
                .map(|(uri, st, why)| json!({"insightStatus": {"status": st.as_str(), "reason": why}, "kubernetesResourceUri": uri}))
                .collect::<Vec<_>>()),
        );
        o.insert(
            "categorySpecificSummary".into(),
            json!({"deprecationDetails": i.deprecations, "addonCompatibilityDetails": i.addon_compat}),
        );
    }
    Ok((200, json!({"insight": v})))
}

// ---------------------------------------------------------------------------------------------
// Add-ons.
// ---------------------------------------------------------------------------------------------

fn no_addon(cluster: &str, addon: &str) -> AwsError {
    AwsError::not_found(format!("No addon: {addon} found in cluster: {cluster}"))
        .cluster(cluster)
        .addon(addon)
}

fn list_addons(aws: &Aws, name: &str, q: &BTreeMap<String, Vec<String>>) -> Result<(u16, Value), AwsError> {
    with_cluster(aws, name, |c| {
        let names: Vec<String> = c.addons.keys().cloned().collect();
        let (items, next) = page(&names, q1(q, "maxResults"), q1(q, "nextToken"))?;
        Ok((200, with_next(json!({"addons": items}), next)))
    })
}

fn describe_addon(aws: &Aws, name: &str, addon: &str) -> Result<(u16, Value), AwsError> {
    with_cluster(aws, name, |c| {
        let a = c.addons.get(addon).ok_or_else(|| no_addon(name, addon))?;
        Ok((200, json!({"addon": addon_json(c, a)})))
    })
}

fn describe_addon_versions(q: &BTreeMap<String, Vec<String>>) -> Result<(u16, Value), AwsError> {
    let minor = match q1(q, "kubernetesVersion") {
        None => None,
        Some(v) => Some(
            parse_version(v)
                .ok_or_else(|| AwsError::invalid_parameter(format!("Kubernetes version {v} is not valid")))?,
        ),
    };
    let names: Vec<&str> = match q1(q, "addonName") {
        Some(n) => catalog::ADDONS.iter().copied().filter(|a| *a == n).collect(),
        None => catalog::ADDONS.to_vec(),
    };
    let list_filter = |k: &str, have: &str| {
        q.get(k)
            .is_none_or(|v| v.iter().flat_map(|s| s.split(',')).any(|x| x == have))
    };
    let mut infos = Vec::new();
    for a in names {
        if !list_filter("types", "networking")
            || !list_filter("publishers", "eks")
            || !list_filter("owners", "aws")
        {
            continue;
        }
        let versions: Vec<Value> = catalog::versions(a)
            .into_iter()
            .filter(|v| minor.is_none_or(|m| v.compatible_with(m)))
            .map(|v| {
                let compat: Vec<Value> = v
                    .compatible
                    .iter()
                    .filter(|m| minor.is_none_or(|x| x == **m))
                    .map(|m| json!({"clusterVersion": format!("1.{m}"), "platformVersions": ["*"], "defaultVersion": v.default_for.contains(m)}))
                    .collect();
                json!({
                    "addonVersion": v.version,
                    "architecture": ["amd64", "arm64"],
                    "computeTypes": ["ec2"],
                    "compatibilities": compat,
                    "requiresConfiguration": false,
                    "requiresIamPermissions": a == "vpc-cni",
                })
            })
            .collect();
        if versions.is_empty() {
            continue;
        }
        infos.push(json!({
            "addonName": a,
            "type": "networking",
            "addonVersions": versions,
            "publisher": "eks",
            "owner": "aws",
            "defaultNamespace": "kube-system",
        }));
    }
    let (items, next) = page(&infos, q1(q, "maxResults"), q1(q, "nextToken"))?;
    Ok((200, with_next(json!({"addons": items}), next)))
}

/// DescribeClusterVersions: the Kubernetes versions clusters can run, [`SUPPORTED_MINORS`]; the
/// two newest in standard support, older ones in extended support, the newest but one the
/// default (release and end-of-support dates are left out: the simulator has no calendar).
fn describe_cluster_versions(q: &BTreeMap<String, Vec<String>>) -> Result<(u16, Value), AwsError> {
    let newest = *SUPPORTED_MINORS.end();
    let status_filter = q1(q, "versionStatus").or(q1(q, "status"));
    if let Some(s) = status_filter {
        if !["STANDARD_SUPPORT", "EXTENDED_SUPPORT", "UNSUPPORTED"].contains(&s) {
            return Err(AwsError::invalid_parameter(format!(
                "1 validation error detected: Value '{s}' at 'versionStatus' failed to satisfy constraint: Member must satisfy enum value set: [UNSUPPORTED, STANDARD_SUPPORT, EXTENDED_SUPPORT]"
            )));
        }
    }
    let wanted: Option<Vec<&str>> = q
        .get("clusterVersions")
        .map(|v| v.iter().flat_map(|s| s.split(',')).collect());
    let eks_type = q1(q, "clusterType").is_none_or(|t| t == "eks");
    let default_only = q1(q, "defaultOnly") == Some("true");
    let versions: Vec<Value> = SUPPORTED_MINORS
        .rev()
        .filter(|_| eks_type)
        .map(|m| {
            let status = if m + 1 >= newest {
                "STANDARD_SUPPORT"
            } else {
                "EXTENDED_SUPPORT"
            };
            (m, status, m + 1 == newest)
        })
        .filter(|(m, status, default)| {
            status_filter.is_none_or(|s| s == *status)
                && (!default_only || *default)
                && wanted
                    .as_ref()
                    .is_none_or(|w| w.contains(&format!("1.{m}").as_str()))
        })
        .map(|(m, status, default)| {
            json!({
                "clusterVersion": format!("1.{m}"),
                "clusterType": "eks",
                "defaultPlatformVersion": "eks.1",
                "defaultVersion": default,
                "status": status,
                "versionStatus": status,
                "kubernetesPatchVersion": format!("1.{m}.0"),
            })
        })
        .collect();
    let (items, next) = page(&versions, q1(q, "maxResults"), q1(q, "nextToken"))?;
    Ok((200, with_next(json!({"clusterVersions": items}), next)))
}

fn update_addon(aws: &Arc<Aws>, name: &str, addon: &str, body: &Value) -> Result<(u16, Value), AwsError> {
    let version = opt_str(body, "addonVersion")?;
    let resolve = opt_str(body, "resolveConflicts")?;
    let role = opt_str(body, "serviceAccountRoleArn")?;
    let config = opt_str(body, "configurationValues")?;
    if let Some(r) = &resolve {
        if !["OVERWRITE", "NONE", "PRESERVE"].contains(&r.as_str()) {
            return Err(AwsError::invalid_parameter(format!(
                "resolveConflicts {r} is invalid; use OVERWRITE, NONE or PRESERVE"
            ))
            .cluster(name)
            .addon(addon));
        }
    }
    if let Some(cv) = &config {
        if serde_json::from_str::<Value>(cv).is_err()
            && serde_yaml::from_str::<serde_yaml::Value>(cv).is_err()
        {
            return Err(
                AwsError::invalid_parameter("configurationValues is not valid JSON or YAML")
                    .cluster(name)
                    .addon(addon),
            );
        }
    }
    let update = with_cluster(aws, name, |c| {
        let minor = c.minor;
        let target = UpdateTarget::Addon(addon.to_string());
        if let Some(u) = c.update_in_progress(&target) {
            return Err(AwsError::in_use(format!(
                "Addon {addon} cannot be updated because it has update {} in progress",
                u.id
            ))
            .cluster(name)
            .addon(addon));
        }
        let a = c.addons.get_mut(addon).ok_or_else(|| no_addon(name, addon))?;
        let v = version.clone().unwrap_or_else(|| a.version.clone());
        if !catalog::find(addon, &v).is_some_and(|x| x.compatible_with(minor)) {
            return Err(
                AwsError::invalid_parameter("Addon version specified is not supported")
                    .cluster(name)
                    .addon(addon),
            );
        }
        a.status = "UPDATING";
        a.modified_at = Timestamp::now();
        let mut params = vec![("AddonVersion".to_string(), v)];
        if let Some(r) = &resolve {
            params.push(("ResolveConflicts".into(), r.clone()));
        }
        if let Some(r) = &role {
            params.push(("ServiceAccountRoleArn".into(), r.clone()));
        }
        if let Some(cv) = &config {
            params.push(("ConfigurationValues".into(), cv.clone()));
        }
        let u = Update {
            id: uuid(),
            target,
            kind: "AddonUpdate",
            status: "InProgress",
            params,
            created_at: Timestamp::now(),
            errors: Vec::new(),
        };
        c.updates.push(u.clone());
        Ok(u)
    })?;
    effects::spawn(
        aws,
        effects::addon_update(
            aws.clone(),
            name.to_string(),
            addon.to_string(),
            update.id.clone(),
            role,
            config,
        ),
    );
    Ok((200, json!({"update": update_json(&update)})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_tokens() {
        let items: Vec<u32> = (0..5).collect();
        let (a, n) = page(&items, Some("2"), None).unwrap();
        assert_eq!((a, n.as_deref()), (vec![0, 1], Some("flotilla-sim:2")));
        let (b, n) = page(&items, Some("4"), n.as_deref()).unwrap();
        assert_eq!((b, n), (vec![2, 3, 4], None));
        assert_eq!(
            page(&items, Some("0"), None).unwrap_err().code,
            "InvalidParameterException"
        );
        assert_eq!(
            page(&items, None, Some("junk")).unwrap_err().code,
            "InvalidParameterException"
        );
    }

    #[test]
    fn decodes_paths() {
        assert_eq!(percent_decode("ng%2Da"), "ng-a");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }

    #[test]
    fn scaling_rules() {
        assert!(check_scaling(1, 3, 2).is_ok());
        assert!(check_scaling(2, 3, 1).is_err());
        assert!(check_scaling(1, 2, 3).is_err());
        assert!(check_scaling(0, 0, 0).is_err());
    }
}
