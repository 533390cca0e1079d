//! The Auto Scaling calls Flotilla uses, in the query protocol aws-sdk-autoscaling and the AWS CLI
//! send (form-encoded `Action=…&Version=2011-01-01`, XML answers): DescribeAutoScalingGroups,
//! UpdateAutoScalingGroup, DeleteAutoScalingGroup and TerminateInstanceInAutoScalingGroup. Every
//! node group of every simulated cluster is backed by one Auto Scaling group whose instances are
//! the group's nodes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use super::error::xml_escape;
use super::{effects, Aws, AwsError, ErrorDetail, Group, ACCOUNT_ID};

const NS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";

/// Answers one query-protocol request: the XML body, or the error to send.
pub fn handle(aws: &Arc<Aws>, body: &[u8], request_id: &str) -> Result<String, AwsError> {
    let params: BTreeMap<String, String> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let action = params.get("Action").map(String::as_str).unwrap_or("");
    let cluster_of_asg = |name: Option<&String>| name.and_then(|n| find(aws, n)).map(|(c, _)| c);
    let throttle_cluster = match action {
        "UpdateAutoScalingGroup" | "DeleteAutoScalingGroup" => {
            cluster_of_asg(params.get("AutoScalingGroupName"))
        }
        "TerminateInstanceInAutoScalingGroup" => params
            .get("InstanceId")
            .and_then(|i| find_instance(aws, i))
            .map(|(c, _)| c),
        _ => None,
    };
    if aws.throttled(throttle_cluster.as_deref()) {
        return Err(AwsError::new("Throttling", 400, "Rate exceeded"));
    }
    if let Some(v) = params.get("Version") {
        if v != "2011-01-01" {
            return Err(AwsError::new(
                "InvalidAction",
                400,
                format!("Could not find operation {action} for version {v}"),
            ));
        }
    }
    let result = match action {
        "DescribeAutoScalingGroups" => describe(aws, &params)?,
        "UpdateAutoScalingGroup" => {
            update(aws, &params)?;
            String::new()
        }
        "DeleteAutoScalingGroup" => {
            delete(aws, &params)?;
            String::new()
        }
        "TerminateInstanceInAutoScalingGroup" => terminate(aws, &params)?,
        "" => return Err(AwsError::new("MissingAction", 400, "Missing Action")),
        other => {
            return Err(AwsError::new(
                "InvalidAction",
                400,
                format!("Could not find operation {other} for version 2011-01-01 (the simulator serves DescribeAutoScalingGroups, UpdateAutoScalingGroup, DeleteAutoScalingGroup, TerminateInstanceInAutoScalingGroup)"),
            ))
        }
    };
    let result = if result.is_empty() {
        String::new()
    } else {
        format!("  <{action}Result>\n{result}  </{action}Result>\n")
    };
    Ok(format!(
        "<{action}Response xmlns=\"{NS}\">\n{result}  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n"
    ))
}

/// ISO 8601 with milliseconds, as the query protocol writes timestamps.
pub fn iso(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn not_found(name: &str) -> AwsError {
    AwsError::validation(format!(
        "AutoScalingGroup name not found - AutoScalingGroup '{name}' not found"
    ))
}

fn required(params: &BTreeMap<String, String>, key: &str, member: &str) -> Result<String, AwsError> {
    params.get(key).cloned().ok_or_else(|| {
        AwsError::validation(format!("1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"))
    })
}

fn int(params: &BTreeMap<String, String>, key: &str) -> Result<Option<u32>, AwsError> {
    params
        .get(key)
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                AwsError::validation(format!(
                    "Value '{v}' for parameter {key} is invalid. It must be a non-negative integer."
                ))
            })
        })
        .transpose()
}

fn boolean(params: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, AwsError> {
    params
        .get(key)
        .map(|v| match v.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(AwsError::validation(format!(
                "Value '{v}' for parameter {key} is invalid. It must be true or false."
            ))),
        })
        .transpose()
}

/// `Prefix.member.1`, `Prefix.member.2`, … in order.
fn members(params: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    let mut out: Vec<(usize, String)> = params
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)?
                .strip_prefix(".member.")?
                .parse::<usize>()
                .ok()
                .map(|i| (i, v.clone()))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, v)| v).collect()
}

/// The (cluster, node group) of Auto Scaling group `asg`.
fn find(aws: &Aws, asg: &str) -> Option<(String, String)> {
    let st = aws.lock();
    st.clusters.values().find_map(|c| {
        c.groups
            .values()
            .find(|g| g.asg_name == asg)
            .map(|g| (c.name.clone(), g.name.clone()))
    })
}

/// The (cluster, node group) an instance belongs to.
fn find_instance(aws: &Aws, instance: &str) -> Option<(String, String)> {
    let st = aws.lock();
    st.clusters.values().find_map(|c| {
        c.groups
            .values()
            .find(|g| g.members.iter().any(|m| m.instance_id == instance))
            .map(|g| (c.name.clone(), g.name.clone()))
    })
}

/// The tags of a group's ASG, as eksctl (self-managed) or EKS (managed) set them.
pub fn tags(cluster: &str, g: &Group) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = match &g.managed {
        Some(_) => vec![
            ("eks:cluster-name".into(), cluster.into()),
            ("eks:nodegroup-name".into(), g.name.clone()),
            ("k8s.io/cluster-autoscaler/enabled".into(), "true".into()),
            (format!("k8s.io/cluster-autoscaler/{cluster}"), "owned".into()),
            (format!("kubernetes.io/cluster/{cluster}"), "owned".into()),
        ],
        None => vec![
            ("Name".into(), format!("{cluster}-{}-Node", g.name)),
            ("alpha.eksctl.io/cluster-name".into(), cluster.into()),
            ("alpha.eksctl.io/nodegroup-name".into(), g.name.clone()),
            ("alpha.eksctl.io/nodegroup-type".into(), "unmanaged".into()),
            (
                "aws:cloudformation:stack-name".into(),
                format!("eksctl-{cluster}-nodegroup-{}", g.name),
            ),
            (
                "eksctl.cluster.k8s.io/v1alpha1/cluster-name".into(),
                cluster.into(),
            ),
            (format!("kubernetes.io/cluster/{cluster}"), "owned".into()),
        ],
    };
    t.sort();
    t
}

fn matches_filters(tags: &[(String, String)], name: &str, filters: &[(String, Vec<String>)]) -> bool {
    filters.iter().all(|(f, values)| {
        if let Some(key) = f.strip_prefix("tag:") {
            return tags.iter().any(|(k, v)| k == key && values.contains(v));
        }
        match f.as_str() {
            "tag-key" => tags.iter().any(|(k, _)| values.contains(k)),
            "tag-value" => tags.iter().any(|(_, v)| values.contains(v)),
            "auto-scaling-group-name" => values.iter().any(|v| v == name),
            _ => false,
        }
    })
}

fn describe(aws: &Aws, params: &BTreeMap<String, String>) -> Result<String, AwsError> {
    let names = members(params, "AutoScalingGroupNames");
    let mut filters = Vec::new();
    for i in 1.. {
        let Some(name) = params.get(&format!("Filters.member.{i}.Name")) else {
            break;
        };
        let known = name.starts_with("tag:")
            || ["tag-key", "tag-value", "auto-scaling-group-name"].contains(&name.as_str());
        if !known {
            return Err(AwsError::validation(format!("Filter name '{name}' is invalid. Valid filter names are tag-key, tag-value, tag:<key> and auto-scaling-group-name.")));
        }
        filters.push((
            name.clone(),
            members(params, &format!("Filters.member.{i}.Values")),
        ));
    }
    let max = match int(params, "MaxRecords")? {
        None => 50,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(n) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{n}' at 'maxRecords' failed to satisfy constraint: Member must have value less than or equal to 100"
            )))
        }
    };
    let start = match params.get("NextToken") {
        None => 0,
        Some(t) => t
            .strip_prefix("flotilla-sim:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| AwsError::new("InvalidNextToken", 400, "The token provided is not valid."))?,
    };
    let st = aws.lock();
    let mut xml: Vec<String> = Vec::new();
    for c in st.clusters.values() {
        for g in c.groups.values() {
            let t = tags(&c.name, g);
            if (!names.is_empty() && !names.contains(&g.asg_name))
                || !matches_filters(&t, &g.asg_name, &filters)
            {
                continue;
            }
            let ready = aws.cluster(&c.name).map(|k| {
                let store = k.lock();
                g.members
                    .iter()
                    .map(|m| effects_ready(&store, &m.node))
                    .collect::<Vec<_>>()
            });
            xml.push(group_xml(
                &c.region,
                &c.name,
                g,
                &t,
                ready.as_deref().unwrap_or(&[]),
            ));
        }
    }
    let total = xml.len();
    let end = (start + max).min(total);
    let mut out = String::from("    <AutoScalingGroups>\n");
    for g in xml.get(start.min(total)..end).unwrap_or(&[]) {
        out.push_str(g);
    }
    out.push_str("    </AutoScalingGroups>\n");
    if end < total {
        let _ = writeln!(out, "    <NextToken>flotilla-sim:{end}</NextToken>");
    }
    Ok(out)
}

fn effects_ready(store: &crate::store::Store, node: &str) -> bool {
    match store.get_obj(crate::resources::Kind::Node, "", node).as_deref() {
        Some(crate::object::Object::Node(n)) => n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        _ => false,
    }
}

fn group_xml(region: &str, cluster: &str, g: &Group, tags: &[(String, String)], ready: &[bool]) -> String {
    let e = xml_escape;
    let lt_id = format!("lt-0{}", super::hex_from(&[cluster, &g.name, "lt"], 16));
    let lt_name = match &g.managed {
        Some(_) => format!("eks-{}", super::uuid_from(&[cluster, &g.name, "lt"])),
        None => format!("eksctl-{cluster}-nodegroup-{}", g.name),
    };
    let lt = format!(
        "<LaunchTemplate><LaunchTemplateId>{lt_id}</LaunchTemplateId><LaunchTemplateName>{}</LaunchTemplateName><Version>1</Version></LaunchTemplate>",
        e(&lt_name)
    );
    let zones: Vec<String> = ["a", "b", "c"].iter().map(|z| format!("{region}{z}")).collect();
    let mut s = String::from("      <member>\n");
    let mut f = |k: &str, v: &str| {
        let _ = writeln!(s, "        <{k}>{v}</{k}>");
    };
    f("AutoScalingGroupName", &e(&g.asg_name));
    f("AutoScalingGroupARN", &e(&g.asg_arn(region)));
    f("MinSize", &g.min.to_string());
    f("MaxSize", &g.max.to_string());
    f("DesiredCapacity", &g.desired.to_string());
    f("DefaultCooldown", "300");
    f(
        "AvailabilityZones",
        &zones
            .iter()
            .map(|z| format!("<member>{z}</member>"))
            .collect::<String>(),
    );
    f("LoadBalancerNames", "");
    f("TargetGroupARNs", "");
    f("HealthCheckType", "EC2");
    f(
        "HealthCheckGracePeriod",
        if g.managed.is_some() { "15" } else { "0" },
    );
    let mut instances = String::new();
    for (i, m) in g.members.iter().enumerate() {
        let state = if m.terminating {
            "Terminating"
        } else if ready.get(i).copied().unwrap_or(false) {
            "InService"
        } else {
            "Pending"
        };
        let _ = write!(
            instances,
            "<member><InstanceId>{}</InstanceId><InstanceType>{}</InstanceType><AvailabilityZone>{}</AvailabilityZone><LifecycleState>{state}</LifecycleState><HealthStatus>Healthy</HealthStatus>{lt}<ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>",
            e(&m.instance_id),
            e(&g.spec.instance_type),
            e(&m.zone)
        );
    }
    f("Instances", &instances);
    f("CreatedTime", &iso(g.asg_created));
    f("SuspendedProcesses", "");
    f("VPCZoneIdentifier", &super::subnets(cluster).join(","));
    f("EnabledMetrics", "");
    if g.deleting {
        f("Status", "Delete in progress");
    }
    let tag_xml: String = tags
        .iter()
        .map(|(k, v)| {
            format!(
                "<member><ResourceId>{}</ResourceId><ResourceType>auto-scaling-group</ResourceType><Key>{}</Key><Value>{}</Value><PropagateAtLaunch>true</PropagateAtLaunch></member>",
                e(&g.asg_name),
                e(k),
                e(v)
            )
        })
        .collect();
    f("Tags", &tag_xml);
    f(
        "TerminationPolicies",
        if g.managed.is_some() {
            "<member>AllocationStrategy</member><member>OldestLaunchTemplate</member><member>OldestInstance</member>"
        } else {
            "<member>Default</member>"
        },
    );
    f("NewInstancesProtectedFromScaleIn", "false");
    f(
        "ServiceLinkedRoleARN",
        &format!("arn:aws:iam::{ACCOUNT_ID}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"),
    );
    f("CapacityRebalance", "false");
    s.push_str("      </member>\n");
    s
}

/// Picks `n` instances to terminate on scale-in: from the zone with the most instances, newest
/// first (the default policy balances zones; the rest is close to arbitrary).
fn pick_victims(g: &Group, n: usize) -> Vec<String> {
    let mut live: Vec<(String, String)> = g.live().map(|m| (m.zone.clone(), m.node.clone())).collect();
    let mut out = Vec::new();
    while out.len() < n && !live.is_empty() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (z, _) in &live {
            *counts.entry(z.as_str()).or_default() += 1;
        }
        let Some(zone) = counts.iter().max_by_key(|(_, c)| **c).map(|(z, _)| z.to_string()) else {
            break;
        };
        let Some(pos) = live.iter().rposition(|(z, _)| *z == zone) else {
            break;
        };
        out.push(live.remove(pos).1);
    }
    out
}

/// Brings the group to its desired capacity: launches the shortfall, terminates the surplus.
fn converge(aws: &Arc<Aws>, cluster: &str, ng: &str) {
    let (launch, victims, managed) = {
        let mut st = aws.lock();
        let Some(g) = st.clusters.get_mut(cluster).and_then(|c| c.groups.get_mut(ng)) else {
            return;
        };
        let live = g.live().count() as u32;
        let victims = if live > g.desired {
            pick_victims(g, (live - g.desired) as usize)
        } else {
            Vec::new()
        };
        for m in g.members.iter_mut().filter(|m| victims.contains(&m.node)) {
            m.terminating = true;
        }
        (g.desired.saturating_sub(live), victims, g.managed.is_some())
    };
    effects::launch(aws, cluster, ng, launch);
    if !victims.is_empty() {
        effects::spawn(
            aws,
            effects::terminate(aws.clone(), cluster.to_string(), ng.to_string(), victims, managed),
        );
    }
}

fn update(aws: &Arc<Aws>, params: &BTreeMap<String, String>) -> Result<(), AwsError> {
    let name = required(params, "AutoScalingGroupName", "autoScalingGroupName")?;
    let (min, max, desired) = (
        int(params, "MinSize")?,
        int(params, "MaxSize")?,
        int(params, "DesiredCapacity")?,
    );
    let (cluster, ng) = find(aws, &name).ok_or_else(|| not_found(&name))?;
    {
        let mut st = aws.lock();
        let g = st
            .clusters
            .get_mut(&cluster)
            .and_then(|c| c.groups.get_mut(&ng))
            .ok_or_else(|| not_found(&name))?;
        if g.deleting {
            return Err(AwsError::new(
                "ScalingActivityInProgress",
                400,
                "AutoScalingGroup is pending delete.",
            ));
        }
        let new_min = min.unwrap_or(g.min);
        let new_max = max.unwrap_or(g.max);
        if new_min > new_max {
            return Err(AwsError::validation(format!(
                "Max bound, {new_max}, must be greater than or equal to min bound, {new_min}"
            )));
        }
        let new_desired = match desired {
            Some(d) => {
                if d < new_min || d > new_max {
                    return Err(AwsError::validation(format!(
                        "Desired capacity:{d} must be between the specified min size:{new_min} and max size:{new_max}"
                    )));
                }
                d
            }
            None => g.desired.clamp(new_min, new_max),
        };
        g.min = new_min;
        g.max = new_max;
        g.desired = new_desired;
    }
    converge(aws, &cluster, &ng);
    Ok(())
}

fn delete(aws: &Arc<Aws>, params: &BTreeMap<String, String>) -> Result<(), AwsError> {
    let name = required(params, "AutoScalingGroupName", "autoScalingGroupName")?;
    let force = boolean(params, "ForceDelete")?.unwrap_or(false);
    let (cluster, ng) = find(aws, &name).ok_or_else(|| not_found(&name))?;
    let (nodes, managed) = {
        let mut st = aws.lock();
        let g = st
            .clusters
            .get_mut(&cluster)
            .and_then(|c| c.groups.get_mut(&ng))
            .ok_or_else(|| not_found(&name))?;
        if g.deleting {
            return Err(AwsError::new(
                "ScalingActivityInProgress",
                400,
                "AutoScalingGroup is pending delete.",
            ));
        }
        if !g.members.is_empty() && !force {
            return Err(AwsError::new(
                "ResourceInUse",
                400,
                "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group.",
            ));
        }
        g.deleting = true;
        for m in g.members.iter_mut() {
            m.terminating = true;
        }
        (
            g.members.iter().map(|m| m.node.clone()).collect::<Vec<_>>(),
            g.managed.is_some(),
        )
    };
    let aws2 = aws.clone();
    effects::spawn(aws, async move {
        effects::terminate(aws2.clone(), cluster.clone(), ng.clone(), nodes, false).await;
        let mut st = aws2.lock();
        let Some(c) = st.clusters.get_mut(&cluster) else {
            return;
        };
        if managed {
            // EKS still knows the node group; its ASG is gone.
            if let Some(g) = c.groups.get_mut(&ng) {
                g.deleting = false;
                g.desired = 0;
                g.min = 0;
                if let Some(m) = g.managed.as_mut() {
                    m.status = "DEGRADED";
                    m.health.push(ErrorDetail {
                        code: "AutoScalingGroupNotFound".into(),
                        message: format!(
                            "We couldn't find Autoscaling group {name} attached to the node group."
                        ),
                        resource_ids: vec![name.clone()],
                    });
                }
            }
        } else {
            c.groups.remove(&ng);
        }
    });
    Ok(())
}

fn terminate(aws: &Arc<Aws>, params: &BTreeMap<String, String>) -> Result<String, AwsError> {
    let instance = required(params, "InstanceId", "instanceId")?;
    let decrement = boolean(params, "ShouldDecrementDesiredCapacity")?.ok_or_else(|| {
        AwsError::validation("1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null")
    })?;
    let (cluster, ng) = find_instance(aws, &instance).ok_or_else(|| {
        AwsError::validation(format!(
            "Instance Id not found - No managed instance found for instance ID: {instance}"
        ))
    })?;
    let now = Timestamp::now();
    let (asg, node, zone, before, after, managed) = {
        let mut st = aws.lock();
        let c = st
            .clusters
            .get_mut(&cluster)
            .ok_or_else(|| AwsError::validation("Instance Id not found"))?;
        let g = c
            .groups
            .get_mut(&ng)
            .ok_or_else(|| AwsError::validation("Instance Id not found"))?;
        let before = g.desired;
        if decrement {
            if g.desired <= g.min {
                return Err(AwsError::validation(format!(
                    "Currently, desiredSize equals minSize ({}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.",
                    g.min
                )));
            }
            g.desired -= 1;
        }
        let m = g
            .members
            .iter_mut()
            .find(|m| m.instance_id == instance)
            .ok_or_else(|| AwsError::validation("Instance Id not found"))?;
        m.terminating = true;
        (
            g.asg_name.clone(),
            m.node.clone(),
            m.zone.clone(),
            before,
            g.desired,
            g.managed.is_some(),
        )
    };
    effects::spawn(
        aws,
        effects::terminate(aws.clone(), cluster.clone(), ng.clone(), vec![node], managed),
    );
    if !decrement {
        converge(aws, &cluster, &ng);
    }
    let shrink = if decrement {
        format!(", shrinking the capacity from {before} to {after}")
    } else {
        String::new()
    };
    let e = xml_escape;
    Ok(format!(
        "    <Activity>\n      <ActivityId>{}</ActivityId>\n      <AutoScalingGroupName>{}</AutoScalingGroupName>\n      <Description>Terminating EC2 instance: {}</Description>\n      <Cause>At {} instance {} was taken out of service in response to a user request{shrink}.</Cause>\n      <StartTime>{}</StartTime>\n      <StatusCode>InProgress</StatusCode>\n      <Progress>0</Progress>\n      <Details>{}</Details>\n    </Activity>\n",
        super::uuid(),
        e(&asg),
        e(&instance),
        iso(now).replace(".000", ""),
        e(&instance),
        iso(now),
        e(&format!("{{\"Subnet ID\":\"{}\",\"Availability Zone\":\"{zone}\"}}", super::subnets(&cluster).first().cloned().unwrap_or_default()))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lists_in_order() {
        let p: BTreeMap<String, String> = [
            ("A.member.2", "b"),
            ("A.member.1", "a"),
            ("A.member.10", "c"),
            ("B.member.1", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(members(&p, "A"), vec!["a", "b", "c"]);
    }

    #[test]
    fn tag_filters() {
        let t = vec![("alpha.eksctl.io/nodegroup-name".to_string(), "ng-old".to_string())];
        assert!(matches_filters(
            &t,
            "asg",
            &[("tag:alpha.eksctl.io/nodegroup-name".into(), vec!["ng-old".into()])]
        ));
        assert!(!matches_filters(
            &t,
            "asg",
            &[("tag-value".into(), vec!["other".into()])]
        ));
        assert!(matches_filters(
            &t,
            "asg",
            &[("tag-key".into(), vec!["alpha.eksctl.io/nodegroup-name".into()])]
        ));
    }
}
