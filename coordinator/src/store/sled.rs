//! The sled implementation of [`Store`]: one tree per kind, JSON values, compare-and-swap for
//! operation and rollout updates (a rollout's clusters each under their own key), and a flush
//! (shared by concurrent writers) after every accepted write so a SIGKILL loses nothing
//! acknowledged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use ::sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use ::sled::{Db, IVec, Tree};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    apply_update, committed, ClusterRecord, EventRecord, NewEvent, NewRolloutEvent, OperationRecord, Result,
    RolloutEventRecord, RolloutRecord, Store, StoreError, DEFAULT_EVENT_RETENTION, SCHEMA_VERSION,
};
use crate::rollout::{ClusterRun, Rollout};

/// Key of the schema version in the `meta` tree (value: the version as decimal ASCII).
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Options for [`SledStore::open_with`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Events kept per operation (at least 1); the oldest are dropped beyond it.
    pub event_retention: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            event_retention: DEFAULT_EVENT_RETENTION,
        }
    }
}

/// A [`Store`] in a sled database under a data dir.
#[derive(Debug, Clone)]
pub struct SledStore {
    /// The data dir, for error messages.
    dir: PathBuf,
    db: Db,
    /// name -> ClusterRecord
    clusters: Tree,
    /// id -> OperationRecord
    operations: Tree,
    /// (cluster, id) -> () index for [`Store::list_operations`] by cluster.
    ops_by_cluster: Tree,
    /// (operation, seq) -> EventRecord
    events: Tree,
    /// operation -> last assigned seq (u64 big-endian); survives retention dropping every old event.
    event_seq: Tree,
    /// id -> RolloutRecord without its clusters (the "head": spec, phase, stages).
    rollouts: Tree,
    /// (rollout, slot, index) -> ClusterRun: each cluster of a rollout under its own key, so a
    /// transition rewrites the clusters it changed, not the fleet ([`cluster_key`]).
    rollout_clusters: Tree,
    /// (rollout, seq) -> RolloutEventRecord
    rollout_events: Tree,
    /// rollout -> last assigned seq (u64 big-endian).
    rollout_event_seq: Tree,
    /// Events kept per operation and per rollout.
    event_retention: u64,
    /// Shares flushes between concurrent writers.
    flusher: Arc<GroupFlush>,
}

/// Group commit of flushes: a flush covers every write made before it started.
#[derive(Debug, Default)]
struct GroupFlush {
    state: Mutex<FlushState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct FlushState {
    /// Tickets handed out: one per `durable` call, after its write.
    requested: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A flush is running.
    flushing: bool,
}

impl GroupFlush {
    /// Returns once a flush that started after this call began has succeeded (or with the error
    /// of the flush that was to cover it).
    fn durable(&self, flush: impl Fn() -> Result<()>) -> Result<()> {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = lock();
        st.requested += 1;
        let ticket = st.requested;
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if !st.flushing {
                st.flushing = true;
                let covers = st.requested;
                drop(st);
                let r = flush();
                st = lock();
                st.flushing = false;
                if r.is_ok() {
                    st.durable = st.durable.max(covers);
                }
                self.done.notify_all();
                r?;
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

// === impl SledStore ===

impl SledStore {
    /// Opens (creating if needed) the store in `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SledOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`. A new store gets [`SCHEMA_VERSION`]; an existing
    /// one must carry it, else [`StoreError::Schema`].
    pub fn open_with(dir: &Path, options: SledOptions) -> Result<Self> {
        let db = ::sled::Config::new()
            .path(dir)
            .open()
            .map_err(StoreError::backend)?;
        let tree = |name: &str| db.open_tree(name).map_err(StoreError::backend);
        let store = Self {
            dir: dir.to_owned(),
            clusters: tree("clusters")?,
            operations: tree("operations")?,
            ops_by_cluster: tree("ops_by_cluster")?,
            events: tree("events")?,
            event_seq: tree("event_seq")?,
            rollouts: tree("rollouts")?,
            rollout_clusters: tree("rollout_clusters")?,
            rollout_events: tree("rollout_events")?,
            rollout_event_seq: tree("rollout_event_seq")?,
            event_retention: options.event_retention.max(1),
            flusher: Arc::default(),
            db,
        };
        store.check_schema()?;
        Ok(store)
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the schema version into an empty store, or checks the one found.
    fn check_schema(&self) -> Result<()> {
        let meta = self.db.open_tree("meta").map_err(StoreError::backend)?;
        let found = match meta.get(SCHEMA_KEY).map_err(StoreError::backend)? {
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0),
            None => {
                let empty = [
                    &self.clusters,
                    &self.operations,
                    &self.events,
                    &self.event_seq,
                    &self.rollouts,
                    &self.rollout_clusters,
                    &self.rollout_events,
                    &self.rollout_event_seq,
                ]
                .iter()
                .all(|t| t.is_empty());
                if !empty {
                    0
                } else {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                        .map_err(StoreError::backend)?;
                    self.durable()?;
                    SCHEMA_VERSION
                }
            }
        };
        if found == 2 {
            self.migrate_rollouts_from_v2()?;
            meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                .map_err(StoreError::backend)?;
            self.durable()?;
            tracing::info!(dir = %self.dir.display(), "store migrated from schema 2 to {SCHEMA_VERSION}: rollout clusters stored one per key");
            return Ok(());
        }
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema {
                dir: self.dir.clone(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Retention for one log in `log` (operation or rollout events): drops everything older than
    /// the newest `event_retention` events of `owner`, given the last sequence number. Outside the
    /// transaction (sled transactions cannot scan); a crash here only leaves a few extra events
    /// until the next append.
    fn prune(&self, log: &Tree, owner: &str, last_seq: u64) -> Result<()> {
        if last_seq > self.event_retention {
            let first_kept = last_seq - self.event_retention + 1;
            for kv in log.range(event_key(owner, 0)..event_key(owner, first_kept)) {
                let (k, _) = kv.map_err(StoreError::backend)?;
                log.remove(k).map_err(StoreError::backend)?;
            }
        }
        Ok(())
    }

    /// Schema 2 stored each rollout whole under its id; schema 3 stores the head there and each
    /// cluster under its own key. Rewriting a rollout already split changes nothing, so a
    /// migration cut short runs again on the next open.
    fn migrate_rollouts_from_v2(&self) -> Result<()> {
        for kv in self.rollouts.iter() {
            let (k, v) = kv.map_err(StoreError::backend)?;
            let id = String::from_utf8_lossy(&k).into_owned();
            let record: RolloutRecord = decode(|| format!("rollout {id}"), &v)?;
            if record.rollout.clusters().next().is_none() && record.rollout.unstaged.is_empty() {
                continue;
            }
            let empty = empty_like(&record.rollout);
            let head = encode(|| format!("rollout {id}"), &head_of(&record))?;
            let rows = cluster_rows(&id, &record.rollout, &empty)?;
            let r = (&self.rollouts, &self.rollout_clusters).transaction(|(heads, clusters)| {
                heads.insert(id.as_bytes(), head.as_slice())?;
                for (key, value) in &rows {
                    clusters.insert(key.as_slice(), value.as_slice())?;
                }
                Ok(())
            });
            tx_result::<()>(r)?;
        }
        Ok(())
    }

    /// The rollout whose head is `head`, with its clusters read back in place.
    fn with_clusters(&self, id: &str, head: &[u8]) -> Result<RolloutRecord> {
        let mut record: RolloutRecord = decode(|| format!("rollout {id}"), head)?;
        for kv in self.rollout_clusters.scan_prefix(composite(id, &[])) {
            let (k, v) = kv.map_err(StoreError::backend)?;
            let Some((slot, _)) = parse_cluster_key(id, &k) else {
                continue;
            };
            let cluster: ClusterRun = decode(|| format!("cluster of rollout {id}"), &v)?;
            match slot {
                UNSTAGED => record.rollout.unstaged.push(Arc::new(cluster)),
                k => match record.rollout.stages.get_mut(k as usize) {
                    Some(stage) => stage.clusters.push(Arc::new(cluster)),
                    None => {
                        return Err(StoreError::Codec {
                            what: format!("rollout {id}"),
                            source: serde::de::Error::custom(format!(
                                "a cluster is stored for stage {k}, which the rollout does not have"
                            )),
                        })
                    }
                },
            }
        }
        Ok(record)
    }

    /// Makes every write made before this call durable; called after every accepted write.
    /// Group commit: writers that call it while a flush runs wait for the next one, which covers
    /// all of them, instead of each flushing in turn.
    fn durable(&self) -> Result<()> {
        self.flusher
            .durable(|| self.db.flush().map(drop).map_err(StoreError::backend))
    }
}

/// `len(a) ‖ a ‖ b`: a composite key whose first part may hold any bytes, and whose `len(a) ‖ a`
/// prefix selects exactly the keys of `a`.
fn composite(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + a.len() + b.len());
    // Ids are short; a length beyond u32 cannot be stored anyway.
    k.extend_from_slice(&u32::try_from(a.len()).unwrap_or(u32::MAX).to_be_bytes());
    k.extend_from_slice(a.as_bytes());
    k.extend_from_slice(b);
    k
}

fn event_key(operation: &str, seq: u64) -> Vec<u8> {
    composite(operation, &seq.to_be_bytes())
}

/// The slot of clusters that matched no stage.
const UNSTAGED: u32 = u32::MAX;

/// `rollout ‖ slot ‖ index` (both big-endian u32): a rollout's clusters in stage order, then
/// the unstaged ones, each in the order the rollout holds them.
fn cluster_key(rollout: &str, stage: Option<usize>, index: usize) -> Vec<u8> {
    let slot = stage.map_or(UNSTAGED, |k| u32::try_from(k).unwrap_or(UNSTAGED - 1));
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&slot.to_be_bytes());
    b[4..].copy_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes());
    composite(rollout, &b)
}

/// The (slot, index) of a [`cluster_key`] of `rollout`.
fn parse_cluster_key(rollout: &str, key: &[u8]) -> Option<(u32, u32)> {
    let rest = key.get(4 + rollout.len()..)?;
    let slot = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let index = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?);
    Some((slot, index))
}

/// The record without its clusters: what the `rollouts` tree holds.
fn head_of(record: &RolloutRecord) -> RolloutRecord {
    RolloutRecord {
        rollout: empty_like(&record.rollout),
        ..record.clone()
    }
}

/// A rollout with no clusters: what a new one is compared with (every cluster is new).
fn empty_like(rollout: &Rollout) -> Rollout {
    let mut empty = rollout.clone();
    empty.unstaged.clear();
    for stage in &mut empty.stages {
        stage.clusters.clear();
    }
    empty
}

/// The encoded clusters of `next` that differ from `prev`, keyed.
fn cluster_rows(id: &str, next: &Rollout, prev: &Rollout) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    next.changed_clusters(prev)
        .map(|(stage, i, c)| {
            let v = encode(|| format!("cluster {} of rollout {id}", c.name), c)?;
            Ok((cluster_key(id, stage, i), v))
        })
        .collect()
}

/// The keys of `prev`'s clusters that `next` no longer has (the state machine only ever adds
/// clusters; this keeps the store exact if that changes).
fn dropped_rows(id: &str, next: &Rollout, prev: &Rollout) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for (k, stage) in prev.stages.iter().enumerate() {
        let kept = next.stages.get(k).map_or(0, |s| s.clusters.len());
        keys.extend((kept..stage.clusters.len()).map(|i| cluster_key(id, Some(k), i)));
    }
    keys.extend((next.unstaged.len()..prev.unstaged.len()).map(|i| cluster_key(id, None, i)));
    keys
}

/// Only the version of a stored rollout head.
#[derive(serde::Deserialize)]
struct StoredVersion {
    #[serde(default)]
    version: u64,
}

fn encode<T: Serialize>(what: impl Fn() -> String, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| StoreError::Codec { what: what(), source })
}

fn decode<T: DeserializeOwned>(what: impl Fn() -> String, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Codec { what: what(), source })
}

fn decode_seq(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map(u64::from_be_bytes).unwrap_or(0)
}

/// Appends one event inside a transaction over the events and sequence trees.
fn append_in(
    events: &::sled::transaction::TransactionalTree,
    seqs: &::sled::transaction::TransactionalTree,
    operation: &str,
    event: &NewEvent,
) -> std::result::Result<EventRecord, ConflictableTransactionError<StoreError>> {
    let seq = seqs
        .get(operation.as_bytes())?
        .map(|v| decode_seq(&v))
        .unwrap_or(0)
        + 1;
    let record = EventRecord {
        seq,
        at: event.at,
        step: event.step.clone(),
        message: event.message.clone(),
    };
    let v = match encode(|| format!("event {operation}#{seq}"), &record) {
        Ok(v) => v,
        Err(e) => return abort(e),
    };
    events.insert(event_key(operation, seq), v)?;
    seqs.insert(operation.as_bytes(), &seq.to_be_bytes())?;
    Ok(record)
}

/// Appends a rollout's events inside a transaction over its log and sequence trees.
fn append_rollout_events_in(
    log: &::sled::transaction::TransactionalTree,
    seqs: &::sled::transaction::TransactionalTree,
    rollout: &str,
    events: &[NewRolloutEvent],
) -> std::result::Result<Vec<RolloutEventRecord>, ConflictableTransactionError<StoreError>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut seq = seqs.get(rollout.as_bytes())?.map(|v| decode_seq(&v)).unwrap_or(0);
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let record = RolloutEventRecord {
            seq,
            at: event.at,
            cluster: event.cluster.clone(),
            message: event.message.clone(),
        };
        let v = match encode(|| format!("event {rollout}#{seq}"), &record) {
            Ok(v) => v,
            Err(e) => return abort(e),
        };
        log.insert(event_key(rollout, seq), v)?;
        records.push(record);
    }
    seqs.insert(rollout.as_bytes(), &seq.to_be_bytes())?;
    Ok(records)
}

/// Turns a transaction's outcome into ours.
fn tx_result<T>(r: std::result::Result<T, TransactionError<StoreError>>) -> Result<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::backend(e),
    })
}

fn abort<T>(e: StoreError) -> std::result::Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

impl Store for SledStore {
    fn put_clusters(&self, clusters: &[ClusterRecord]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for cluster in clusters {
            let v = encode(|| format!("cluster {}", cluster.name), cluster)?;
            batch.insert(cluster.name.as_bytes(), v);
        }
        self.clusters.apply_batch(batch).map_err(StoreError::backend)?;
        self.durable()
    }

    fn get_cluster(&self, name: &str) -> Result<Option<ClusterRecord>> {
        match self.clusters.get(name.as_bytes()).map_err(StoreError::backend)? {
            Some(v) => Ok(Some(decode(|| format!("cluster {name}"), &v)?)),
            None => Ok(None),
        }
    }

    fn list_clusters(&self) -> Result<Vec<ClusterRecord>> {
        self.clusters
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(StoreError::backend)?;
                decode(|| format!("cluster {}", String::from_utf8_lossy(&k)), &v)
            })
            .collect()
    }

    fn create_operation(&self, op: &OperationRecord) -> Result<OperationRecord> {
        let mut op = op.clone();
        op.version = 1;
        let v = encode(|| format!("operation {}", op.id), &op)?;
        let idx = composite(&op.cluster, op.id.as_bytes());
        let r = (&self.operations, &self.ops_by_cluster).transaction(|(ops, by_cluster)| {
            if ops.get(op.id.as_bytes())?.is_some() {
                return abort(StoreError::Exists(op.id.clone()));
            }
            ops.insert(op.id.as_bytes(), v.as_slice())?;
            by_cluster.insert(idx.as_slice(), &[])?;
            Ok(())
        });
        tx_result(r)?;
        self.durable()?;
        Ok(op)
    }

    fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>> {
        match self.operations.get(id.as_bytes()).map_err(StoreError::backend)? {
            Some(v) => Ok(Some(decode(|| format!("operation {id}"), &v)?)),
            None => Ok(None),
        }
    }

    fn list_operations(&self, cluster: Option<&str>) -> Result<Vec<OperationRecord>> {
        let decode_kv = |kv: ::sled::Result<(IVec, IVec)>| {
            let (k, v) = kv.map_err(StoreError::backend)?;
            decode(|| format!("operation {}", String::from_utf8_lossy(&k)), &v)
        };
        let Some(cluster) = cluster else {
            return self.operations.iter().map(decode_kv).collect();
        };
        let prefix = composite(cluster, &[]);
        let mut out = Vec::new();
        for kv in self.ops_by_cluster.scan_prefix(&prefix) {
            let (k, _) = kv.map_err(StoreError::backend)?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            // The index is written with the record, in one transaction; a missing record is skipped.
            if let Some(op) = self.get_operation(&id)? {
                out.push(op);
            }
        }
        Ok(out)
    }

    fn update_operation(
        &self,
        id: &str,
        expected_version: u64,
        f: &mut dyn FnMut(&mut OperationRecord),
    ) -> Result<OperationRecord> {
        let Some(old) = self.operations.get(id.as_bytes()).map_err(StoreError::backend)? else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let current: OperationRecord = decode(|| format!("operation {id}"), &old)?;
        let next = apply_update(&current, expected_version, f)?;
        let v = encode(|| format!("operation {id}"), &next)?;
        match self
            .operations
            .compare_and_swap(id.as_bytes(), Some(old), Some(v))
            .map_err(StoreError::backend)?
        {
            Ok(()) => {
                self.durable()?;
                Ok(next)
            }
            Err(cas) => {
                let found = match cas.current {
                    Some(bytes) => decode::<OperationRecord>(|| format!("operation {id}"), &bytes)?.version,
                    None => return Err(StoreError::NotFound(id.to_owned())),
                };
                Err(StoreError::Conflict {
                    id: id.to_owned(),
                    expected: expected_version,
                    found,
                })
            }
        }
    }

    fn commit(
        &self,
        id: &str,
        expected_version: u64,
        f: &mut dyn FnMut(&mut OperationRecord),
        events: &[NewEvent],
    ) -> Result<(OperationRecord, Vec<EventRecord>)> {
        // Apply `f` outside the transaction (whose closure may run more than once), then write only
        // if the record is still the one `f` saw: a compare-and-swap spanning the event log.
        let Some(old) = self.operations.get(id.as_bytes()).map_err(StoreError::backend)? else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let current: OperationRecord = decode(|| format!("operation {id}"), &old)?;
        let next = apply_update(&current, expected_version, f)?;
        let v = encode(|| format!("operation {id}"), &next)?;
        let r = (&self.operations, &self.events, &self.event_seq).transaction(|(ops, evs, seqs)| {
            match ops.get(id.as_bytes())? {
                None => return abort(StoreError::NotFound(id.to_owned())),
                Some(now) if now != old => {
                    let found = decode::<OperationRecord>(|| format!("operation {id}"), &now)
                        .map(|o| o.version)
                        .unwrap_or(0);
                    return abort(StoreError::Conflict {
                        id: id.to_owned(),
                        expected: expected_version,
                        found,
                    });
                }
                Some(_) => {}
            }
            ops.insert(id.as_bytes(), v.as_slice())?;
            let mut records = Vec::with_capacity(events.len());
            for event in events {
                records.push(append_in(evs, seqs, id, event)?);
            }
            Ok(records)
        });
        let records = tx_result(r)?;
        if let Some(last) = records.last() {
            self.prune(&self.events, id, last.seq)?;
        }
        self.durable()?;
        Ok((next, records))
    }

    fn append_event(&self, operation: &str, event: NewEvent) -> Result<EventRecord> {
        let r = (&self.operations, &self.events, &self.event_seq).transaction(|(ops, events, seqs)| {
            if ops.get(operation.as_bytes())?.is_none() {
                return abort(StoreError::NotFound(operation.to_owned()));
            }
            append_in(events, seqs, operation, &event)
        });
        let record = tx_result(r)?;
        self.prune(&self.events, operation, record.seq)?;
        self.durable()?;
        Ok(record)
    }

    fn list_events(&self, operation: &str, since: u64) -> Result<Vec<EventRecord>> {
        let Some(start) = since.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.events
            .range(event_key(operation, start)..=event_key(operation, u64::MAX))
            .map(|kv| {
                let (_, v) = kv.map_err(StoreError::backend)?;
                decode(|| format!("event of {operation}"), &v)
            })
            .collect()
    }

    fn flush(&self) -> Result<()> {
        self.durable()
    }

    fn create_rollout(&self, rollout: &RolloutRecord) -> Result<RolloutRecord> {
        let mut record = rollout.clone();
        record.version = 1;
        let id = record.rollout.id.clone();
        let head = encode(|| format!("rollout {id}"), &head_of(&record))?;
        let rows = cluster_rows(&id, &record.rollout, &empty_like(&record.rollout))?;
        let r = (&self.rollouts, &self.rollout_clusters).transaction(|(heads, clusters)| {
            if heads.get(id.as_bytes())?.is_some() {
                return abort(StoreError::RolloutExists(id.clone()));
            }
            heads.insert(id.as_bytes(), head.as_slice())?;
            for (key, value) in &rows {
                clusters.insert(key.as_slice(), value.as_slice())?;
            }
            Ok(())
        });
        tx_result(r)?;
        self.durable()?;
        Ok(record)
    }

    fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        match self.rollouts.get(id.as_bytes()).map_err(StoreError::backend)? {
            Some(v) => Ok(Some(self.with_clusters(id, &v)?)),
            None => Ok(None),
        }
    }

    fn list_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        self.rollouts
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(StoreError::backend)?;
                self.with_clusters(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    fn commit_rollout(
        &self,
        prev: &RolloutRecord,
        next: &Rollout,
        updated_at: Timestamp,
        events: &[NewRolloutEvent],
    ) -> Result<(RolloutRecord, Vec<RolloutEventRecord>)> {
        let id = prev.rollout.id.as_str();
        let record = committed(prev, next, updated_at);
        let head = encode(|| format!("rollout {id}"), &head_of(&record))?;
        let rows = cluster_rows(id, next, &prev.rollout)?;
        let dropped = dropped_rows(id, next, &prev.rollout);
        let trees = (
            &self.rollouts,
            &self.rollout_clusters,
            &self.rollout_events,
            &self.rollout_event_seq,
        );
        let r = trees.transaction(|(heads, clusters, log, seqs)| {
            let Some(stored) = heads.get(id.as_bytes())? else {
                return abort(StoreError::RolloutNotFound(id.to_owned()));
            };
            let found = match decode::<StoredVersion>(|| format!("rollout {id}"), &stored) {
                Ok(v) => v.version,
                Err(e) => return abort(e),
            };
            if found != prev.version {
                return abort(StoreError::RolloutConflict {
                    id: id.to_owned(),
                    expected: prev.version,
                    found,
                });
            }
            heads.insert(id.as_bytes(), head.as_slice())?;
            for (key, value) in &rows {
                clusters.insert(key.as_slice(), value.as_slice())?;
            }
            for key in &dropped {
                clusters.remove(key.as_slice())?;
            }
            append_rollout_events_in(log, seqs, id, events)
        });
        let appended = tx_result(r)?;
        if let Some(last) = appended.last() {
            self.prune(&self.rollout_events, id, last.seq)?;
        }
        self.durable()?;
        Ok((record, appended))
    }

    fn append_rollout_events(
        &self,
        rollout: &str,
        events: &[NewRolloutEvent],
    ) -> Result<Vec<RolloutEventRecord>> {
        let r = (&self.rollouts, &self.rollout_events, &self.rollout_event_seq).transaction(
            |(rollouts, log, seqs)| {
                if rollouts.get(rollout.as_bytes())?.is_none() {
                    return abort(StoreError::RolloutNotFound(rollout.to_owned()));
                }
                append_rollout_events_in(log, seqs, rollout, events)
            },
        );
        let records = tx_result(r)?;
        if let Some(last) = records.last() {
            self.prune(&self.rollout_events, rollout, last.seq)?;
        }
        self.durable()?;
        Ok(records)
    }

    fn list_rollout_events(&self, rollout: &str, since: u64) -> Result<Vec<RolloutEventRecord>> {
        let Some(start) = since.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.rollout_events
            .range(event_key(rollout, start)..=event_key(rollout, u64::MAX))
            .map(|kv| {
                let (_, v) = kv.map_err(StoreError::backend)?;
                decode(|| format!("event of rollout {rollout}"), &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod group_flush_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn concurrent_writers_share_flushes_and_each_waits_for_one_that_covers_it() {
        let g = GroupFlush::default();
        let flushes = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..50 {
                        g.durable(|| {
                            flushes.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..=800).contains(&n), "{n} flushes for 800 writes");
        let st = g.state.lock().unwrap();
        assert_eq!((st.requested, st.durable, st.flushing), (800, 800, false));
    }

    #[test]
    fn a_failed_flush_fails_its_caller_and_the_next_call_flushes_again() {
        let g = GroupFlush::default();
        let failed = g.durable(|| Err(StoreError::backend(std::io::Error::other("disk gone"))));
        assert!(matches!(failed, Err(StoreError::Backend(_))));
        let flushes = AtomicUsize::new(0);
        g.durable(|| {
            flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }
}
