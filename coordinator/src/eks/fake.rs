//! An in-memory [`Eks`] for tests: node groups, updates, add-ons and Auto Scaling groups whose
//! statuses move on a script, one step per poll, upgrade insights (or their absence), plus
//! injected errors and failing updates. No time passes inside the fake; callers' waits use tokio
//! time, which tests pause.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::{
    Addon, AddonStatus, AddonVersions, AsgInfo, AsgSize, ClusterInfo, Eks, EksError, InsightDetail, Insights,
    Nodegroup, NodegroupStatus, NodegroupTemplate, Result, Update, UpdateConfig, UpdateErrorDetail,
    UpdateStatus, UpdateSubject,
};

/// A fake cluster. Cheap to build; share it by reference.
#[derive(Debug)]
pub struct FakeEks {
    cluster: String,
    state: Mutex<FakeState>,
}

/// Everything the fake holds; tests may read and change it through [`FakeEks::with_state`].
#[derive(Debug, Default)]
pub struct FakeState {
    /// The control plane's `major.minor`.
    pub version: String,
    /// The control plane's status.
    pub status: String,
    /// Managed node groups by name.
    pub nodegroups: BTreeMap<String, FakeNodegroup>,
    /// Updates by id.
    pub updates: BTreeMap<String, FakeUpdate>,
    /// Auto Scaling groups by name.
    pub asgs: BTreeMap<String, FakeAsg>,
    /// Managed add-ons by name.
    pub addons: BTreeMap<String, FakeAddon>,
    /// What DescribeAddonVersions answers, by (add-on, Kubernetes `major.minor`).
    pub addon_versions: BTreeMap<(String, String), AddonVersions>,
    /// What DescribeClusterVersions answers; `None`: 1.20 to 1.40.
    pub cluster_versions: Option<std::result::Result<Vec<String>, EksError>>,
    /// Upgrade insights with their details (ListInsights filters them by version).
    pub insights: Vec<InsightDetail>,
    /// When set, ListInsights is unavailable with this reason.
    pub insights_unavailable: Option<String>,
    /// Updates started on these subjects ([`subject_key`]) end `Failed` with these errors.
    pub update_failures: BTreeMap<String, Vec<UpdateErrorDetail>>,
    /// Errors the next calls return, one per call, before doing anything.
    pub errors: VecDeque<EksError>,
    /// Every call made, as `Operation target`.
    pub calls: Vec<String>,
    /// How many polls a new node group stays `CREATING` and a new update `InProgress`.
    pub polls: usize,
    next_update: u64,
}

/// A fake managed node group.
#[derive(Debug, Clone)]
pub struct FakeNodegroup {
    /// What DescribeNodegroup returns.
    pub nodegroup: Nodegroup,
    /// Statuses the next DescribeNodegroup calls move through, one per call; the last sticks.
    pub script: VecDeque<NodegroupStatus>,
}

/// A fake update.
#[derive(Debug, Clone)]
pub struct FakeUpdate {
    /// What DescribeUpdate returns.
    pub update: Update,
    /// Statuses the next DescribeUpdate calls move through, one per call; the last sticks.
    pub script: VecDeque<UpdateStatus>,
    /// The node group it belongs to, if any.
    pub nodegroup: Option<String>,
    /// The add-on it belongs to, if any.
    pub addon: Option<String>,
    /// Its subject ([`subject_key`]); `None` (updates added by [`FakeEks::add_update`]) answers
    /// DescribeUpdate for any subject.
    pub subject: Option<String>,
    /// Errors it ends with when its script ends `Failed`.
    pub failure: Vec<UpdateErrorDetail>,
    /// The version the cluster takes when a cluster update succeeds.
    pub target_version: Option<String>,
}

/// A fake managed add-on.
#[derive(Debug, Clone)]
pub struct FakeAddon {
    /// What DescribeAddon returns.
    pub addon: Addon,
    /// Statuses the next DescribeAddon calls move through, one per call; the last sticks.
    pub script: VecDeque<AddonStatus>,
}

/// The key of an update's subject in [`FakeState::update_failures`]: `cluster`,
/// `nodegroup/<name>` or `addon/<name>`.
pub fn subject_key(subject: UpdateSubject<'_>) -> String {
    match subject {
        UpdateSubject::Cluster => "cluster".into(),
        UpdateSubject::Nodegroup(n) => format!("nodegroup/{n}"),
        UpdateSubject::Addon(a) => format!("addon/{a}"),
    }
}

/// The `1.N` of a `1.N` version, for the fake's checks.
fn minor_of(v: &str) -> Option<u32> {
    v.strip_prefix("1.")?.split('.').next()?.parse().ok()
}

/// A fake Auto Scaling group.
#[derive(Debug, Clone)]
pub struct FakeAsg {
    /// Its sizes.
    pub info: AsgInfo,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

fn not_found(operation: &'static str, resource: String, message: String) -> EksError {
    EksError::Api {
        operation,
        resource,
        code: "ResourceNotFoundException".into(),
        message,
        status: Some(404),
    }
}

impl FakeEks {
    /// A fake `ACTIVE` cluster at `version`, with no node groups; new groups and updates take
    /// two polls to finish.
    pub fn new(cluster: &str, version: &str) -> Self {
        FakeEks {
            cluster: cluster.to_string(),
            state: Mutex::new(FakeState {
                version: version.to_string(),
                status: "ACTIVE".into(),
                polls: 2,
                ..FakeState::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.lock())
    }

    /// Makes the next call fail with `err` (queued behind earlier injected errors).
    pub fn fail_next(&self, err: EksError) {
        self.lock().errors.push_back(err);
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Adds node group `name` whose DescribeNodegroup moves through `script`.
    pub fn add_nodegroup(&self, name: &str, script: impl IntoIterator<Item = NodegroupStatus>) {
        let mut script: VecDeque<_> = script.into_iter().collect();
        let status = script.pop_front().unwrap_or(NodegroupStatus::Active);
        let version = self.lock().version.clone();
        self.lock().nodegroups.insert(
            name.to_string(),
            FakeNodegroup {
                nodegroup: Nodegroup {
                    name: name.to_string(),
                    status,
                    version: Some(version),
                    release_version: None,
                    desired_size: Some(2),
                    min_size: Some(1),
                    max_size: Some(4),
                    health_issues: Vec::new(),
                    update_config: Some(UpdateConfig {
                        max_unavailable: Some(1),
                        max_unavailable_percentage: None,
                    }),
                },
                script,
            },
        );
    }

    /// Adds `ACTIVE` managed add-on `name` at `version`.
    pub fn add_addon(&self, name: &str, version: &str) {
        self.lock().addons.insert(
            name.to_string(),
            FakeAddon {
                addon: Addon {
                    name: name.to_string(),
                    version: version.to_string(),
                    status: AddonStatus::Active,
                    health_issues: Vec::new(),
                },
                script: VecDeque::new(),
            },
        );
    }

    /// Declares the versions of `addon` for Kubernetes `kubernetes_version`, the first being the
    /// default.
    pub fn set_addon_versions(&self, addon: &str, kubernetes_version: &str, versions: &[&str]) {
        self.lock().addon_versions.insert(
            (addon.to_string(), kubernetes_version.to_string()),
            AddonVersions {
                addon: addon.to_string(),
                kubernetes_version: kubernetes_version.to_string(),
                default_version: versions.first().map(|v| v.to_string()),
                versions: versions.iter().map(|v| v.to_string()).collect(),
            },
        );
    }

    /// Adds update `id` whose DescribeUpdate moves through `script`.
    pub fn add_update(&self, id: &str, script: impl IntoIterator<Item = UpdateStatus>) {
        let mut script: VecDeque<_> = script.into_iter().collect();
        let status = script.pop_front().unwrap_or(UpdateStatus::Successful);
        self.lock().updates.insert(
            id.to_string(),
            FakeUpdate {
                update: Update {
                    id: id.to_string(),
                    status,
                    kind: Some("VersionUpdate".into()),
                    errors: Vec::new(),
                    error_details: Vec::new(),
                    params: Vec::new(),
                },
                script,
                nodegroup: None,
                addon: None,
                subject: None,
                failure: Vec::new(),
                target_version: None,
            },
        );
    }

    /// Adds the Auto Scaling group of self-managed node group `nodegroup`, tagged as eksctl does.
    pub fn add_self_managed_asg(&self, asg: &str, nodegroup: &str, size: AsgSize) {
        let tags = BTreeMap::from([
            (
                "alpha.eksctl.io/nodegroup-name".to_string(),
                nodegroup.to_string(),
            ),
            (
                format!("kubernetes.io/cluster/{}", self.cluster),
                "owned".to_string(),
            ),
        ]);
        self.lock().asgs.insert(
            asg.to_string(),
            FakeAsg {
                info: AsgInfo {
                    name: asg.to_string(),
                    min_size: size.min,
                    max_size: size.max,
                    desired_capacity: size.desired,
                    instances: usize::try_from(size.desired).unwrap_or(0),
                    subnets: vec![format!("subnet-{nodegroup}-a"), format!("subnet-{nodegroup}-b")],
                },
                tags,
            },
        );
    }

    /// Records the call and returns an injected error, if one is queued.
    fn enter(&self, call: String) -> Result<MutexGuard<'_, FakeState>> {
        let mut st = self.lock();
        st.calls.push(call);
        match st.errors.pop_front() {
            Some(e) => Err(e),
            None => Ok(st),
        }
    }

    fn new_update(&self, st: &mut FakeState, subject: UpdateSubject<'_>, target: Option<String>) -> Update {
        st.next_update += 1;
        let id = format!("fake-update-{}", st.next_update);
        let key = subject_key(subject);
        let failure = st.update_failures.get(&key).cloned().unwrap_or_default();
        let mut script: VecDeque<_> = std::iter::repeat_n(UpdateStatus::InProgress, st.polls).collect();
        script.push_back(if failure.is_empty() {
            UpdateStatus::Successful
        } else {
            UpdateStatus::Failed
        });
        let (kind, param) = match subject {
            UpdateSubject::Addon(_) => ("AddonUpdate", "AddonVersion"),
            _ => ("VersionUpdate", "Version"),
        };
        let update = Update {
            id: id.clone(),
            status: UpdateStatus::InProgress,
            kind: Some(kind.into()),
            errors: Vec::new(),
            error_details: Vec::new(),
            params: target.iter().map(|v| (param.to_string(), v.clone())).collect(),
        };
        st.updates.insert(
            id,
            FakeUpdate {
                update: update.clone(),
                script,
                nodegroup: subject.nodegroup().map(str::to_string),
                addon: subject.addon().map(str::to_string),
                subject: Some(key),
                failure,
                target_version: target,
            },
        );
        update
    }

    /// The update in progress on `subject`, if any.
    fn in_progress(st: &FakeState, subject: UpdateSubject<'_>) -> Option<String> {
        let key = subject_key(subject);
        st.updates
            .values()
            .find(|u| {
                u.subject.as_deref() == Some(key.as_str()) && u.update.status == UpdateStatus::InProgress
            })
            .map(|u| u.update.id.clone())
    }

    fn in_use(&self, operation: &'static str, resource: String, message: String) -> EksError {
        EksError::Api {
            operation,
            resource,
            code: "ResourceInUseException".into(),
            message,
            status: Some(409),
        }
    }
}

impl Eks for FakeEks {
    fn cluster_name(&self) -> &str {
        &self.cluster
    }

    async fn describe_cluster(&self) -> Result<ClusterInfo> {
        let st = self.enter("DescribeCluster".into())?;
        Ok(ClusterInfo {
            name: self.cluster.clone(),
            version: st.version.clone(),
            status: st.status.clone(),
        })
    }

    async fn list_nodegroups(&self) -> Result<Vec<String>> {
        let st = self.enter("ListNodegroups".into())?;
        Ok(st.nodegroups.keys().cloned().collect())
    }

    async fn describe_nodegroup(&self, name: &str) -> Result<Nodegroup> {
        let mut st = self.enter(format!("DescribeNodegroup {name}"))?;
        let Some(ng) = st.nodegroups.get_mut(name) else {
            return Err(not_found(
                "DescribeNodegroup",
                format!("nodegroup {}/{name}", self.cluster),
                format!("No node group found for name: {name}."),
            ));
        };
        if let Some(next) = ng.script.pop_front() {
            ng.nodegroup.status = next;
        }
        let out = ng.nodegroup.clone();
        if out.status == NodegroupStatus::Deleting && ng.script.is_empty() {
            st.nodegroups.remove(name);
        }
        Ok(out)
    }

    async fn create_nodegroup(&self, template: &NodegroupTemplate) -> Result<Nodegroup> {
        template.validate()?;
        let name = template.nodegroup_name.clone();
        let mut st = self.enter(format!("CreateNodegroup {name}"))?;
        if st.nodegroups.contains_key(&name) {
            return Err(EksError::Api {
                operation: "CreateNodegroup",
                resource: format!("nodegroup {}/{name}", self.cluster),
                code: "ResourceInUseException".into(),
                message: format!(
                    "NodeGroup already exists with name {name} and cluster name {}",
                    self.cluster
                ),
                status: Some(409),
            });
        }
        let s = template.scaling_config;
        let ng = Nodegroup {
            name: name.clone(),
            status: NodegroupStatus::Creating,
            version: Some(st.version.clone()),
            release_version: None,
            desired_size: Some(s.desired_size),
            min_size: Some(s.min_size),
            max_size: Some(s.max_size),
            health_issues: Vec::new(),
            update_config: template.update_config,
        };
        let mut script: VecDeque<_> = std::iter::repeat_n(NodegroupStatus::Creating, st.polls).collect();
        script.push_back(NodegroupStatus::Active);
        st.nodegroups.insert(
            name,
            FakeNodegroup {
                nodegroup: ng.clone(),
                script,
            },
        );
        Ok(ng)
    }

    async fn delete_nodegroup(&self, name: &str) -> Result<()> {
        let mut st = self.enter(format!("DeleteNodegroup {name}"))?;
        let polls = st.polls;
        let Some(ng) = st.nodegroups.get_mut(name) else {
            return Err(not_found(
                "DeleteNodegroup",
                format!("nodegroup {}/{name}", self.cluster),
                format!("No node group found for name: {name}."),
            ));
        };
        ng.nodegroup.status = NodegroupStatus::Deleting;
        ng.script = std::iter::repeat_n(NodegroupStatus::Deleting, polls).collect();
        Ok(())
    }

    async fn update_cluster_version(&self, version: &str) -> Result<Update> {
        let mut st = self.enter(format!("UpdateClusterVersion {version}"))?;
        let resource = format!("cluster {}", self.cluster);
        if let Some(id) = Self::in_progress(&st, UpdateSubject::Cluster) {
            return Err(self.in_use(
                "UpdateClusterVersion",
                resource,
                format!(
                    "Cannot VersionUpdate because cluster {} currently has update {id} in progress",
                    self.cluster
                ),
            ));
        }
        match (minor_of(&st.version), minor_of(version)) {
            (Some(cur), Some(want)) if want == cur + 1 => {}
            _ => {
                return Err(EksError::Api {
                    operation: "UpdateClusterVersion",
                    resource,
                    code: "InvalidParameterException".into(),
                    message: format!(
                        "Unsupported Kubernetes minor version update from {} to {version}",
                        st.version
                    ),
                    status: Some(400),
                })
            }
        }
        st.status = "UPDATING".into();
        Ok(self.new_update(&mut st, UpdateSubject::Cluster, Some(version.to_string())))
    }

    async fn update_nodegroup_version(
        &self,
        nodegroup: &str,
        version: Option<&str>,
        force: bool,
    ) -> Result<Update> {
        let mut st = self.enter(format!(
            "UpdateNodegroupVersion {nodegroup} {} force={force}",
            version.unwrap_or("-")
        ))?;
        if !st.nodegroups.contains_key(nodegroup) {
            return Err(not_found(
                "UpdateNodegroupVersion",
                format!("nodegroup {}/{nodegroup}", self.cluster),
                format!("No node group found for name: {nodegroup}."),
            ));
        }
        let subject = UpdateSubject::Nodegroup(nodegroup);
        if let Some(id) = Self::in_progress(&st, subject) {
            return Err(self.in_use(
                "UpdateNodegroupVersion",
                format!("nodegroup {}/{nodegroup}", self.cluster),
                format!("Cannot VersionUpdate because nodegroup {nodegroup} currently has update {id} in progress"),
            ));
        }
        let target = version.map(str::to_string).unwrap_or_else(|| st.version.clone());
        if let Some(g) = st.nodegroups.get_mut(nodegroup) {
            g.nodegroup.status = NodegroupStatus::Updating;
        }
        Ok(self.new_update(&mut st, subject, Some(target)))
    }

    async fn describe_update_of(&self, update_id: &str, subject: UpdateSubject<'_>) -> Result<Update> {
        let mut st = self.enter(format!("DescribeUpdate {update_id}"))?;
        let key = subject_key(subject);
        let Some(u) = st
            .updates
            .get_mut(update_id)
            .filter(|u| u.subject.as_ref().is_none_or(|s| *s == key))
        else {
            return Err(not_found(
                "DescribeUpdate",
                format!("update {update_id} of {subject} of cluster {}", self.cluster),
                format!("No update found for ID: {update_id}."),
            ));
        };
        if let Some(next) = u.script.pop_front() {
            u.update.status = next;
        }
        if u.update.status == UpdateStatus::Failed
            && u.update.error_details.is_empty()
            && !u.failure.is_empty()
        {
            u.update.error_details = u.failure.clone();
            u.update.errors = u
                .failure
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
        }
        let out = u.update.clone();
        let ended = u.script.is_empty() && out.status != UpdateStatus::InProgress;
        let done = out.status == UpdateStatus::Successful && u.script.is_empty();
        let ng = u.nodegroup.clone();
        let addon = u.addon.clone();
        let target = if done { u.target_version.take() } else { None };
        if let Some(v) = target {
            match (ng.or(subject.nodegroup().map(str::to_string)), addon) {
                (Some(ng), _) => {
                    if let Some(g) = st.nodegroups.get_mut(&ng) {
                        g.nodegroup.version = Some(v);
                    }
                }
                (None, Some(a)) => {
                    if let Some(x) = st.addons.get_mut(&a) {
                        x.addon.version = v;
                    }
                }
                (None, None) => {
                    st.version = v;
                    st.status = "ACTIVE".into();
                }
            }
        }
        if ended {
            // The subject is no longer being updated.
            match (&out.status, subject) {
                (_, UpdateSubject::Nodegroup(ng)) => {
                    if let Some(g) = st.nodegroups.get_mut(ng) {
                        if g.nodegroup.status == NodegroupStatus::Updating {
                            g.nodegroup.status = NodegroupStatus::Active;
                        }
                    }
                }
                (_, UpdateSubject::Addon(a)) => {
                    if let Some(x) = st.addons.get_mut(a) {
                        if x.addon.status == AddonStatus::Updating {
                            x.addon.status = AddonStatus::Active;
                        }
                    }
                }
                (UpdateStatus::Failed | UpdateStatus::Cancelled, UpdateSubject::Cluster) => {
                    st.status = "ACTIVE".into();
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn list_updates(&self, subject: UpdateSubject<'_>) -> Result<Vec<String>> {
        let st = self.enter(format!("ListUpdates {}", subject_key(subject)))?;
        let key = subject_key(subject);
        Ok(st
            .updates
            .values()
            .filter(|u| u.subject.as_deref() == Some(key.as_str()))
            .map(|u| u.update.id.clone())
            .collect())
    }

    async fn list_addons(&self) -> Result<Vec<String>> {
        let st = self.enter("ListAddons".into())?;
        Ok(st.addons.keys().cloned().collect())
    }

    async fn describe_addon(&self, name: &str) -> Result<Addon> {
        let mut st = self.enter(format!("DescribeAddon {name}"))?;
        let Some(a) = st.addons.get_mut(name) else {
            return Err(not_found(
                "DescribeAddon",
                format!("add-on {}/{name}", self.cluster),
                format!("No addon: {name} found in cluster: {}", self.cluster),
            ));
        };
        if let Some(next) = a.script.pop_front() {
            a.addon.status = next;
        }
        Ok(a.addon.clone())
    }

    async fn describe_cluster_versions(&self) -> Result<Vec<String>> {
        let st = self.enter("DescribeClusterVersions".to_string())?;
        st.cluster_versions
            .clone()
            .unwrap_or_else(|| Ok((20..=40).map(|m| format!("1.{m}")).collect()))
    }

    async fn describe_addon_versions(&self, addon: &str, kubernetes_version: &str) -> Result<AddonVersions> {
        let st = self.enter(format!("DescribeAddonVersions {addon} {kubernetes_version}"))?;
        Ok(st
            .addon_versions
            .get(&(addon.to_string(), kubernetes_version.to_string()))
            .cloned()
            .unwrap_or_else(|| AddonVersions {
                addon: addon.to_string(),
                kubernetes_version: kubernetes_version.to_string(),
                default_version: None,
                versions: Vec::new(),
            }))
    }

    async fn update_addon(&self, addon: &str, version: &str) -> Result<Update> {
        let mut st = self.enter(format!("UpdateAddon {addon} {version}"))?;
        let resource = format!("add-on {}/{addon}", self.cluster);
        if !st.addons.contains_key(addon) {
            return Err(not_found(
                "UpdateAddon",
                resource,
                format!("No addon: {addon} found in cluster: {}", self.cluster),
            ));
        }
        let subject = UpdateSubject::Addon(addon);
        if let Some(id) = Self::in_progress(&st, subject) {
            return Err(self.in_use(
                "UpdateAddon",
                resource,
                format!("Addon {addon} cannot be updated because it has update {id} in progress"),
            ));
        }
        let compatible = st
            .addon_versions
            .get(&(addon.to_string(), st.version.clone()))
            .is_some_and(|v| v.versions.iter().any(|x| x == version));
        if !compatible {
            return Err(EksError::Api {
                operation: "UpdateAddon",
                resource,
                code: "InvalidParameterException".into(),
                message: "Addon version specified is not supported".into(),
                status: Some(400),
            });
        }
        if let Some(a) = st.addons.get_mut(addon) {
            a.addon.status = AddonStatus::Updating;
        }
        Ok(self.new_update(&mut st, subject, Some(version.to_string())))
    }

    async fn list_insights(&self, kubernetes_version: Option<&str>) -> Result<Insights> {
        let st = self.enter(format!("ListInsights {}", kubernetes_version.unwrap_or("-")))?;
        if let Some(reason) = &st.insights_unavailable {
            return Ok(Insights::Unavailable {
                reason: reason.clone(),
            });
        }
        Ok(Insights::Listed(
            st.insights
                .iter()
                .map(|d| d.insight.clone())
                .filter(|i| kubernetes_version.is_none_or(|v| i.kubernetes_version.as_deref() == Some(v)))
                .collect(),
        ))
    }

    async fn describe_insight(&self, id: &str) -> Result<InsightDetail> {
        let st = self.enter(format!("DescribeInsight {id}"))?;
        st.insights
            .iter()
            .find(|d| d.insight.id == id)
            .cloned()
            .ok_or_else(|| {
                not_found(
                    "DescribeInsight",
                    format!("insight {id} of cluster {}", self.cluster),
                    format!("No insight found for id: {id}"),
                )
            })
    }

    async fn find_self_managed_asg(&self, nodegroup: &str) -> Result<Option<AsgInfo>> {
        let st = self.enter(format!("DescribeAutoScalingGroups {nodegroup}"))?;
        let owner = format!("kubernetes.io/cluster/{}", self.cluster);
        let found: Vec<&FakeAsg> = st
            .asgs
            .values()
            .filter(|a| {
                a.tags.get("alpha.eksctl.io/nodegroup-name").map(String::as_str) == Some(nodegroup)
                    && a.tags.get(&owner).map(String::as_str) == Some("owned")
            })
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.info.clone())),
            many => Err(EksError::AmbiguousAsg {
                cluster: self.cluster.clone(),
                nodegroup: nodegroup.to_string(),
                count: many.len(),
                names: many
                    .iter()
                    .map(|a| a.info.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    async fn scale_asg(&self, asg: &str, size: AsgSize) -> Result<()> {
        let mut st = self.enter(format!(
            "UpdateAutoScalingGroup {asg} {}/{}/{}",
            size.desired, size.min, size.max
        ))?;
        let Some(a) = st.asgs.get_mut(asg) else {
            return Err(EksError::Api {
                operation: "UpdateAutoScalingGroup",
                resource: format!("autoscaling group {asg}"),
                code: "ValidationError".into(),
                message: format!("AutoScalingGroup name not found - {asg}"),
                status: Some(400),
            });
        };
        a.info.desired_capacity = size.desired;
        a.info.min_size = size.min;
        a.info.max_size = size.max;
        a.info.instances = usize::try_from(size.desired).unwrap_or(0);
        Ok(())
    }

    async fn delete_asg(&self, asg: &str, force: bool) -> Result<()> {
        let mut st = self.enter(format!("DeleteAutoScalingGroup {asg} force={force}"))?;
        let Some(a) = st.asgs.get(asg) else {
            return Err(EksError::Api {
                operation: "DeleteAutoScalingGroup",
                resource: format!("autoscaling group {asg}"),
                code: "ValidationError".into(),
                message: format!("AutoScalingGroup name not found - {asg}"),
                status: Some(400),
            });
        };
        if a.info.instances > 0 && !force {
            return Err(EksError::Api {
                operation: "DeleteAutoScalingGroup",
                resource: format!("autoscaling group {asg}"),
                code: "ResourceInUse".into(),
                message: "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group.".into(),
                status: Some(400),
            });
        }
        st.asgs.remove(asg);
        Ok(())
    }
}
