//! An in-memory [`Store`] for unit tests of other modules: same contract as the sled one (versions,
//! conflicts, event sequence and retention, for operations and rollouts), nothing on disk.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;

use super::{
    apply_update, committed, ClusterRecord, EventRecord, NewEvent, NewRolloutEvent, OperationRecord, Result,
    RolloutEventRecord, RolloutRecord, Store, StoreError, DEFAULT_EVENT_RETENTION,
};
use crate::rollout::Rollout;

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
    rollouts: BTreeMap<String, RolloutRecord>,
    /// rollout -> (last seq, retained events)
    rollout_events: BTreeMap<String, (u64, VecDeque<RolloutEventRecord>)>,
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
    fn put_clusters(&self, clusters: &[ClusterRecord]) -> Result<()> {
        let mut state = self.lock();
        for cluster in clusters {
            state.clusters.insert(cluster.name.clone(), cluster.clone());
        }
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

    fn create_rollout(&self, rollout: &RolloutRecord) -> Result<RolloutRecord> {
        let mut inner = self.lock();
        let id = rollout.rollout.id.clone();
        if inner.rollouts.contains_key(&id) {
            return Err(StoreError::RolloutExists(id));
        }
        let mut record = rollout.clone();
        record.version = 1;
        inner.rollouts.insert(id, record.clone());
        Ok(record)
    }

    fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        Ok(self.lock().rollouts.get(id).cloned())
    }

    fn list_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        Ok(self.lock().rollouts.values().cloned().collect())
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
        {
            let mut inner = self.lock();
            let Some(current) = inner.rollouts.get(id) else {
                return Err(StoreError::RolloutNotFound(id.to_owned()));
            };
            if current.version != prev.version {
                return Err(StoreError::RolloutConflict {
                    id: id.to_owned(),
                    expected: prev.version,
                    found: current.version,
                });
            }
            inner.rollouts.insert(id.to_owned(), record.clone());
        }
        let events = self.append_rollout_events(id, events)?;
        Ok((record, events))
    }

    fn append_rollout_events(
        &self,
        rollout: &str,
        events: &[NewRolloutEvent],
    ) -> Result<Vec<RolloutEventRecord>> {
        let mut inner = self.lock();
        if !inner.rollouts.contains_key(rollout) {
            return Err(StoreError::RolloutNotFound(rollout.to_owned()));
        }
        let (last, log) = inner.rollout_events.entry(rollout.to_owned()).or_default();
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            *last += 1;
            let record = RolloutEventRecord {
                seq: *last,
                at: event.at,
                cluster: event.cluster.clone(),
                message: event.message.clone(),
            };
            log.push_back(record.clone());
            records.push(record);
        }
        while log.len() as u64 > self.event_retention {
            log.pop_front();
        }
        Ok(records)
    }

    fn list_rollout_events(&self, rollout: &str, since: u64) -> Result<Vec<RolloutEventRecord>> {
        Ok(self
            .lock()
            .rollout_events
            .get(rollout)
            .map(|(_, log)| log.iter().filter(|e| e.seq > since).cloned().collect())
            .unwrap_or_default())
    }
}
