//! The object store of one simulated cluster: typed objects, resource versions and the watch history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::object::Object;
use crate::resources::Kind;
use crate::stats::StatsTracker;

/// Namespace and name of an object (namespace empty for cluster-scoped kinds).
pub type Key = (String, String);

/// A stored object with its serialized form (shared by reads and watch events).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The typed object.
    pub obj: Arc<Object>,
    /// `obj` as JSON with `apiVersion`, `kind` and `metadata.resourceVersion`.
    pub json: Bytes,
}

/// Watch event types, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `ADDED`
    Added,
    /// `MODIFIED`
    Modified,
    /// `DELETED`
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to the store, as watchers see it.
#[derive(Debug)]
pub struct Change {
    /// The resource version this change created.
    pub rv: u64,
    /// Kind of the changed object.
    pub kind: Kind,
    /// What happened.
    pub ty: EventType,
    /// The object after the change (for deletions: as it was, at the deletion's version).
    pub entry: Entry,
    /// The object before the change (for filtered watches: an object leaving a selector is DELETED).
    pub prev: Option<Arc<Object>>,
}

/// A change kept for watches that start from an older resource version. Only the serialized
/// forms are kept, to bound memory; selectors re-read them when needed.
#[derive(Debug, Clone)]
pub struct Past {
    /// The resource version.
    pub rv: u64,
    /// What happened.
    pub ty: EventType,
    /// The object after the change.
    pub json: Bytes,
    /// The object before the change.
    pub prev_json: Option<Bytes>,
}

/// Answer of [`Store::since`] when the history no longer reaches back far enough.
#[derive(Debug, Clone, Copy)]
pub struct Expired {
    /// The oldest resource version still served.
    pub oldest: u64,
}

/// All objects of one cluster.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    tables: BTreeMap<Kind, BTreeMap<Key, Entry>>,
    history: HashMap<Kind, VecDeque<Past>>,
    /// Per kind: the newest resource version that fell out of `history`.
    compacted: HashMap<Kind, u64>,
    history_len: usize,
    tx: broadcast::Sender<Arc<Change>>,
    stats: StatsTracker,
}

impl Store {
    /// An empty store keeping `history_len` past changes per kind for watches.
    pub fn new(history_len: usize, tx: broadcast::Sender<Arc<Change>>) -> Store {
        Store {
            rv: 1,
            tables: BTreeMap::new(),
            history: HashMap::new(),
            compacted: HashMap::new(),
            history_len: history_len.max(1),
            tx,
            stats: StatsTracker::default(),
        }
    }

    /// The newest resource version.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// One object.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Entry> {
        self.tables.get(&kind)?.get(&(ns.to_string(), name.to_string()))
    }

    /// One object, typed.
    pub fn get_obj(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Object>> {
        self.get(kind, ns, name).map(|e| e.obj.clone())
    }

    /// Objects of a kind, in key order; `ns` narrows to one namespace.
    pub fn list<'a>(&'a self, kind: Kind, ns: Option<&'a str>) -> impl Iterator<Item = &'a Entry> + 'a {
        let table = self.tables.get(&kind);
        let range: Box<dyn Iterator<Item = (&Key, &Entry)>> = match (table, ns) {
            (None, _) => Box::new(std::iter::empty()),
            (Some(t), None) => Box::new(t.iter()),
            (Some(t), Some(ns)) => Box::new(
                t.range((ns.to_string(), String::new())..)
                    .take_while(move |(k, _)| k.0 == ns),
            ),
        };
        range.map(|(_, e)| e)
    }

    /// Objects of a kind after `after` (exclusive), in key order: for paged lists.
    pub fn list_after<'a>(
        &'a self,
        kind: Kind,
        after: Key,
    ) -> impl Iterator<Item = (&'a Key, &'a Entry)> + 'a {
        use std::ops::Bound;
        self.tables
            .get(&kind)
            .into_iter()
            .flat_map(move |t| t.range((Bound::Excluded(after.clone()), Bound::Unbounded)))
    }

    /// How many objects of a kind there are.
    pub fn count(&self, kind: Kind) -> usize {
        self.tables.get(&kind).map_or(0, |t| t.len())
    }

    /// Stores a new object (the caller checked it does not exist), stamping its resource version.
    pub fn insert(&mut self, obj: Object) -> Entry {
        self.write(obj, EventType::Added)
    }

    /// Replaces an existing object, stamping a new resource version.
    pub fn replace(&mut self, obj: Object) -> Entry {
        self.write(obj, EventType::Modified)
    }

    /// Removes an object; the DELETED event carries it at a new resource version.
    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Entry> {
        let key = (ns.to_string(), name.to_string());
        let old = self.tables.get_mut(&kind)?.remove(&key)?;
        self.rv += 1;
        let mut obj = (*old.obj).clone();
        obj.meta_mut().resource_version = Some(self.rv.to_string());
        let entry = Self::entry(obj);
        self.record(kind, EventType::Deleted, entry.clone(), Some(old));
        Some(entry)
    }

    fn write(&mut self, mut obj: Object, ty: EventType) -> Entry {
        self.rv += 1;
        obj.meta_mut().resource_version = Some(self.rv.to_string());
        let kind = obj.kind();
        let key = (obj.namespace().to_string(), obj.name().to_string());
        let entry = Self::entry(obj);
        let prev = self.tables.entry(kind).or_default().insert(key, entry.clone());
        self.record(kind, ty, entry.clone(), prev);
        entry
    }

    fn entry(obj: Object) -> Entry {
        let json = serde_json::to_vec(&obj.to_json()).unwrap_or_default();
        Entry {
            obj: Arc::new(obj),
            json: Bytes::from(json),
        }
    }

    fn record(&mut self, kind: Kind, ty: EventType, entry: Entry, prev: Option<Entry>) {
        let history = self.history.entry(kind).or_default();
        history.push_back(Past {
            rv: self.rv,
            ty,
            json: entry.json.clone(),
            prev_json: prev.as_ref().map(|p| p.json.clone()),
        });
        while history.len() > self.history_len {
            if let Some(old) = history.pop_front() {
                self.compacted.insert(kind, old.rv);
            }
        }
        let change = Change {
            rv: self.rv,
            kind,
            ty,
            entry,
            prev: prev.map(|p| p.obj),
        };
        self.stats.observe(&change);
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(Arc::new(change));
    }

    /// Past changes of `kind` newer than `rv`, or [`Expired`] when `rv` is older than the history.
    pub fn since(&self, kind: Kind, rv: u64) -> Result<Vec<Past>, Expired> {
        let compacted = self.compacted.get(&kind).copied().unwrap_or(0);
        if rv < compacted {
            return Err(Expired {
                oldest: compacted + 1,
            });
        }
        Ok(self
            .history
            .get(&kind)
            .map(|h| h.iter().filter(|p| p.rv > rv).cloned().collect())
            .unwrap_or_default())
    }

    /// The zero-downtime statistics of this cluster.
    pub fn stats(&self) -> &StatsTracker {
        &self.stats
    }

    /// The statistics, to count evictions or reset.
    pub fn stats_mut(&mut self) -> &mut StatsTracker {
        &mut self.stats
    }

    /// A receiver of every future change.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }
}
