//! One simulated cluster: its store behind a lock, its behaviour, and the control loop that
//! runs every controller whenever something changed or a timer (readiness, termination) is due.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{broadcast, watch, Notify};
use tracing::{debug, info_span, Instrument};

use crate::controllers::{self, Behaviour, Ctx};
use crate::object::Object;
use crate::store::Store;

/// A simulated Kubernetes cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's name (`sim-1`, …).
    pub name: String,
    store: Mutex<Store>,
    wake: Notify,
    behaviour: RwLock<Behaviour>,
    minor: RwLock<String>,
}

impl Cluster {
    /// A cluster holding `objects`, at Kubernetes `1.<minor>`, keeping `history` past changes
    /// per kind for watches.
    pub fn new(
        name: &str,
        minor: &str,
        objects: Vec<Object>,
        behaviour: Behaviour,
        history: usize,
    ) -> Arc<Cluster> {
        let (tx, _) = broadcast::channel(1024);
        let mut store = Store::new(history, tx);
        for obj in objects {
            let mut obj = obj;
            if obj.meta().uid.is_none() {
                // Keep the creation time the seed chose (initial objects predate the start).
                let created = obj
                    .meta()
                    .creation_timestamp
                    .as_ref()
                    .map_or_else(Timestamp::now, |t| t.0);
                crate::api::prepare_for_create(&mut obj, created);
                crate::defaults::apply(&mut obj);
            }
            store.insert(obj);
        }
        Arc::new(Cluster {
            name: name.to_string(),
            store: Mutex::new(store),
            wake: Notify::new(),
            behaviour: RwLock::new(behaviour),
            minor: RwLock::new(minor.to_string()),
        })
    }

    /// Locks the store. Writers must call [`Cluster::changed`] afterwards (or use [`Cluster::write`]).
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the store and wakes the controllers if it wrote anything.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.lock();
        let before = store.rv();
        let out = f(&mut store);
        let wrote = store.rv() != before;
        drop(store);
        if wrote {
            self.changed();
        }
        out
    }

    /// Wakes the control loop.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// The cluster's delays and faults.
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes delays and faults at run time.
    pub fn set_behaviour(&self, b: Behaviour) {
        *self.behaviour.write().unwrap_or_else(|p| p.into_inner()) = b;
        self.changed();
    }

    /// Replaces the injected faults at run time (the `faults` section of a scenario). Every
    /// Deployment and node group named must exist; on error nothing changes.
    pub fn set_faults(&self, faults: &crate::scenario::FaultSpec) -> Result<(), String> {
        use crate::resources::Kind;
        if !(0.0..=1.0).contains(&faults.api_error_rate) {
            return Err(format!(
                "faults.apiErrorRate: {} is outside 0.0..=1.0; give the share of calls to fail, e.g. 0.05",
                faults.api_error_rate
            ));
        }
        let store = self.lock();
        for (i, f) in faults.never_ready.iter().enumerate() {
            if store.get(Kind::Deployment, &f.namespace, &f.deployment).is_none() {
                return Err(format!(
                    "faults.neverReady[{i}]: no Deployment {}/{} in cluster {}; name an existing one",
                    f.namespace, f.deployment, self.name
                ));
            }
        }
        let mut not_ready = Vec::new();
        for (i, f) in faults.not_ready_nodes.iter().enumerate() {
            let mut nodes: Vec<(Option<k8s_openapi::jiff::Timestamp>, String)> = store
                .list(Kind::Node, None)
                .filter(|e| {
                    e.obj.meta().labels.as_ref().is_some_and(|l| {
                        l.get("alpha.eksctl.io/nodegroup-name") == Some(&f.node_group)
                            || l.get("eks.amazonaws.com/nodegroup") == Some(&f.node_group)
                    })
                })
                .map(|e| {
                    (
                        e.obj.meta().creation_timestamp.as_ref().map(|t| t.0),
                        e.obj.name().to_string(),
                    )
                })
                .collect();
            if nodes.len() < f.count as usize {
                return Err(format!(
                    "faults.notReadyNodes[{i}]: node group {} has {} node(s) in cluster {}, fewer than count {}",
                    f.node_group,
                    nodes.len(),
                    self.name,
                    f.count
                ));
            }
            nodes.sort();
            not_ready.extend(nodes.into_iter().rev().take(f.count as usize).map(|(_, n)| n));
        }
        drop(store);
        let mut b = self.behaviour();
        b.api_latency = faults.api_latency;
        b.api_error_rate = faults.api_error_rate;
        b.never_ready = faults
            .never_ready
            .iter()
            .map(|f| (f.namespace.clone(), f.deployment.clone()))
            .collect();
        b.not_ready_nodes = not_ready;
        self.set_behaviour(b);
        Ok(())
    }

    /// The Kubernetes minor version served (`"33"` for 1.33).
    pub fn minor(&self) -> String {
        self.minor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the served minor version (a finished control-plane upgrade).
    pub fn set_minor(&self, minor: &str) {
        *self.minor.write().unwrap_or_else(|p| p.into_inner()) = minor.to_string();
        self.changed();
    }

    /// Whether every Deployment and DaemonSet is fully rolled out and available, every pod is
    /// bound, and every PodDisruptionBudget's status is current (what tests wait for after start).
    pub fn settled(&self) -> bool {
        use crate::resources::Kind;
        let store = self.lock();
        let deployments = store.list(Kind::Deployment, None).all(|e| match e.obj.as_ref() {
            Object::Deployment(d) => {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                d.status.as_ref().is_some_and(|s| {
                    s.observed_generation == d.metadata.generation
                        && s.available_replicas.unwrap_or(0) == want
                        && s.updated_replicas.unwrap_or(0) == want
                        && s.replicas.unwrap_or(0) == want
                })
            }
            _ => true,
        });
        let daemonsets = store.list(Kind::DaemonSet, None).all(|e| match e.obj.as_ref() {
            Object::DaemonSet(d) => d.status.as_ref().is_some_and(|s| {
                s.desired_number_scheduled > 0 && s.number_ready == s.desired_number_scheduled
            }),
            _ => true,
        });
        let pods = store.list(Kind::Pod, None).all(|e| match e.obj.as_ref() {
            Object::Pod(p) => p.spec.as_ref().is_some_and(|s| s.node_name.is_some()),
            _ => true,
        });
        let pdbs = store
            .list(Kind::PodDisruptionBudget, None)
            .all(|e| match e.obj.as_ref() {
                Object::PodDisruptionBudget(p) => p
                    .status
                    .as_ref()
                    .is_some_and(|s| Some(s.observed_generation.unwrap_or(0)) == p.metadata.generation),
                _ => true,
            });
        deployments && daemonsets && pods && pdbs
    }

    /// One pass of every controller; returns when the next timer is due, and whether it wrote.
    pub fn reconcile(&self) -> (Option<Timestamp>, bool) {
        let behaviour = self.behaviour();
        let version = format!("1.{}", self.minor());
        let mut store = self.lock();
        let before = store.rv();
        let ctx = Ctx {
            now: Timestamp::now(),
            behaviour: &behaviour,
            version: &version,
        };
        let mut next = controllers::reconcile_workloads(&mut store, &ctx);
        next.merge(controllers::reconcile_nodes(&mut store, &ctx));
        (next.0, store.rv() != before)
    }

    /// The control loop, until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let span = info_span!("controllers", cluster = %self.name);
        async move {
            loop {
                let (next, wrote) = self.reconcile();
                if wrote {
                    // Controllers react to each other's writes: run again, but let requests in.
                    tokio::task::yield_now().await;
                    continue;
                }
                let sleep = next
                    .map(|t| {
                        let d = t.duration_since(Timestamp::now());
                        Duration::try_from(d).unwrap_or(Duration::ZERO) + Duration::from_millis(1)
                    })
                    .unwrap_or(Duration::from_secs(3600));
                debug!(?sleep, "idle");
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
        .instrument(span)
        .await
    }
}
