//! An in-memory [`Store`] for unit tests of other modules: same contract as the sled one (versions,
//! conflicts, event sequence and retention), nothing on disk.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::{
    apply_update, ClusterRecord, EventRecord, NewEvent, OperationRecord, Result, Store, StoreError,
    DEFAULT_EVENT_RETENTION,
};

/// An in-memory [`Store`].
#[derive(Debug)]
pub struct MemStore {
    inner: Mutex<Inner>,
    event_retention: u64,
}

#[derive(Debug, Default)]
struct Inner {
    clusters: BTreeMap<String, ClusterRecord>,
    operations: BTreeMap<String, OperationRecord>,
    /// operation -> (last seq, retained events)
    events: BTreeMap<String, (u64, VecDeque<EventRecord>)>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::with_retention(DEFAULT_EVENT_RETENTION)
    }
}

// === impl MemStore ===

impl MemStore {
    /// An empty store keeping at most `event_retention` events per operation (at least 1).
    pub fn with_retention(event_retention: u64) -> Self {
        Self {
            inner: Mutex::default(),
            event_retention: event_retention.max(1),
        }
    }

    /// Appends to a known operation's log, applying retention.
    fn push_event(&self, inner: &mut Inner, operation: &str, event: NewEvent) -> EventRecord {
        let (last, log) = inner.events.entry(operation.to_owned()).or_default();
        *last += 1;
        let record = EventRecord {
            seq: *last,
            at: event.at,
            step: event.step,
            message: event.message,
        };
        log.push_back(record.clone());
        while log.len() as u64 > self.event_retention {
            log.pop_front();
        }
        record
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent maps (every change is one insert).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemStore {
    fn put_cluster(&self, cluster: &ClusterRecord) -> Result<()> {
        self.lock().clusters.insert(cluster.name.clone(), cluster.clone());
        Ok(())
    }

    fn get_cluster(&self, name: &str) -> Result<Option<ClusterRecord>> {
        Ok(self.lock().clusters.get(name).cloned())
    }

    fn list_clusters(&self) -> Result<Vec<ClusterRecord>> {
        Ok(self.lock().clusters.values().cloned().collect())
    }

    fn create_operation(&self, op: &OperationRecord) -> Result<OperationRecord> {
        let mut inner = self.lock();
        if inner.operations.contains_key(&op.id) {
            return Err(StoreError::Exists(op.id.clone()));
        }
        let mut op = op.clone();
        op.version = 1;
        inner.operations.insert(op.id.clone(), op.clone());
        Ok(op)
    }

    fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>> {
        Ok(self.lock().operations.get(id).cloned())
    }

    fn list_operations(&self, cluster: Option<&str>) -> Result<Vec<OperationRecord>> {
        Ok(self
            .lock()
            .operations
            .values()
            .filter(|op| cluster.is_none_or(|c| op.cluster == c))
            .cloned()
            .collect())
    }

    fn update_operation(
        &self,
        id: &str,
        expected_version: u64,
        f: &mut dyn FnMut(&mut OperationRecord),
    ) -> Result<OperationRecord> {
        let mut inner = self.lock();
        let Some(current) = inner.operations.get(id) else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let next = apply_update(current, expected_version, f)?;
        inner.operations.insert(id.to_owned(), next.clone());
        Ok(next)
    }

    fn commit(
        &self,
        id: &str,
        expected_version: u64,
        f: &mut dyn FnMut(&mut OperationRecord),
        events: &[NewEvent],
    ) -> Result<(OperationRecord, Vec<EventRecord>)> {
        let mut inner = self.lock();
        let Some(current) = inner.operations.get(id) else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let next = apply_update(current, expected_version, f)?;
        inner.operations.insert(id.to_owned(), next.clone());
        let records = events
            .iter()
            .map(|e| self.push_event(&mut inner, id, e.clone()))
            .collect();
        Ok((next, records))
    }

    fn append_event(&self, operation: &str, event: NewEvent) -> Result<EventRecord> {
        let mut inner = self.lock();
        if !inner.operations.contains_key(operation) {
            return Err(StoreError::NotFound(operation.to_owned()));
        }
        Ok(self.push_event(&mut inner, operation, event))
    }

    fn list_events(&self, operation: &str, since: u64) -> Result<Vec<EventRecord>> {
        Ok(self
            .lock()
            .events
            .get(operation)
            .map(|(_, log)| log.iter().filter(|e| e.seq > since).cloned().collect())
            .unwrap_or_default())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
