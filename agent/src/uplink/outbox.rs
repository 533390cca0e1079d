//! The results of finished step attempts, keyed by (operation, step, attempt): each is re-sent
//! (on every reconnect and periodically) until the coordinator acks it, so a cut stream loses
//! nothing. Acked results are remembered a while longer (the newest [`ACKED_KEPT`]), so a
//! `RunStep` repeated after its ack gets the stored result instead of running the step again.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use tokio::time::Instant;

/// How many acked results are kept to answer repeated `RunStep`s.
pub const ACKED_KEPT: usize = 64;

/// One step attempt: the triple the coordinator deduplicates by, and so does the agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepKey {
    /// The operation the step belongs to.
    pub operation_id: String,
    /// The step's id within the operation.
    pub step_id: String,
    /// The attempt (1 for the first).
    pub attempt: u32,
}

impl StepKey {
    /// The key of a `RunStep`.
    pub fn of_run(m: &pb::RunStep) -> StepKey {
        StepKey::new(&m.operation_id, &m.step_id, m.attempt)
    }

    /// The key of a `CancelStep`.
    pub fn of_cancel(m: &pb::CancelStep) -> StepKey {
        StepKey::new(&m.operation_id, &m.step_id, m.attempt)
    }

    /// The key of an `Ack`.
    pub fn of_ack(m: &pb::Ack) -> StepKey {
        StepKey::new(&m.operation_id, &m.step_id, m.attempt)
    }

    /// The key of a `StepResult`.
    pub fn of_result(m: &pb::StepResult) -> StepKey {
        StepKey::new(&m.operation_id, &m.step_id, m.attempt)
    }

    /// A key from its parts.
    pub fn new(operation_id: &str, step_id: &str, attempt: u32) -> StepKey {
        StepKey {
            operation_id: operation_id.to_string(),
            step_id: step_id.to_string(),
            attempt,
        }
    }

    /// Whether `other` is the same step of the same operation (any attempt).
    pub fn same_step(&self, other: &StepKey) -> bool {
        self.operation_id == other.operation_id && self.step_id == other.step_id
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.operation_id, self.step_id, self.attempt)
    }
}

#[derive(Debug)]
struct Pending {
    result: pb::StepResult,
    last_sent: Option<Instant>,
}

/// Results waiting for their ack, and the recently acked ones.
#[derive(Debug, Default)]
pub struct Outbox {
    unacked: BTreeMap<StepKey, Pending>,
    acked: BTreeMap<StepKey, pb::StepResult>,
    /// `acked`'s keys, oldest first, to forget the oldest beyond [`ACKED_KEPT`].
    acked_order: VecDeque<StepKey>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Stores a finished attempt's result, not yet sent. A result for a key already stored is
    /// ignored (the first result of an attempt is its result).
    pub fn insert(&mut self, result: pb::StepResult) -> StepKey {
        let key = StepKey::of_result(&result);
        if !self.acked.contains_key(&key) {
            self.unacked.entry(key.clone()).or_insert(Pending {
                result,
                last_sent: None,
            });
        }
        key
    }

    /// The stored result of an attempt, acked or not.
    pub fn get(&self, key: &StepKey) -> Option<&pb::StepResult> {
        self.unacked
            .get(key)
            .map(|p| &p.result)
            .or_else(|| self.acked.get(key))
    }

    /// Whether the attempt's result is stored and acked.
    pub fn is_acked(&self, key: &StepKey) -> bool {
        self.acked.contains_key(key)
    }

    /// The newest attempt of `key`'s step above `key.attempt` with a stored result, if any.
    pub fn newest_attempt_after(&self, key: &StepKey) -> Option<u32> {
        let from = StepKey {
            attempt: key.attempt.checked_add(1)?,
            ..key.clone()
        };
        let to = StepKey {
            attempt: u32::MAX,
            ..key.clone()
        };
        let newest = |m: Option<&StepKey>| m.map(|k| k.attempt);
        let unacked = newest(
            self.unacked
                .range(from.clone()..=to.clone())
                .next_back()
                .map(|(k, _)| k),
        );
        let acked = newest(self.acked.range(from..=to).next_back().map(|(k, _)| k));
        unacked.max(acked)
    }

    /// Records that `key`'s result was just sent.
    pub fn mark_sent(&mut self, key: &StepKey, now: Instant) {
        if let Some(p) = self.unacked.get_mut(key) {
            p.last_sent = Some(now);
        }
    }

    /// The coordinator stored the result: stop re-sending it. Returns whether it was unacked.
    pub fn ack(&mut self, key: &StepKey) -> bool {
        let Some(p) = self.unacked.remove(key) else {
            return false;
        };
        self.acked.insert(key.clone(), p.result);
        self.acked_order.push_back(key.clone());
        while self.acked_order.len() > ACKED_KEPT {
            if let Some(old) = self.acked_order.pop_front() {
                self.acked.remove(&old);
            }
        }
        true
    }

    /// Unacked results not sent within `every` (or never sent), marked as sent `now`.
    pub fn due(&mut self, now: Instant, every: Duration) -> Vec<pb::StepResult> {
        self.unacked
            .values_mut()
            .filter(|p| p.last_sent.is_none_or(|t| now.duration_since(t) >= every))
            .map(|p| {
                p.last_sent = Some(now);
                p.result.clone()
            })
            .collect()
    }

    /// Every unacked result (for a new session), marked as sent `now`.
    pub fn all_unacked(&mut self, now: Instant) -> Vec<pb::StepResult> {
        self.due(now, Duration::ZERO)
    }

    /// Results waiting for an ack.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(op: &str, attempt: u32) -> pb::StepResult {
        pb::StepResult {
            operation_id: op.into(),
            step_id: "taint".into(),
            attempt,
            ..Default::default()
        }
    }

    #[test]
    fn results_are_resent_until_acked() {
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let mut o = Outbox::new();
        let key = o.insert(result("op-1", 1));
        assert_eq!(o.due(t0, every).len(), 1, "a new result is due at once");
        assert!(o.due(t0 + Duration::from_secs(1), every).is_empty());
        assert_eq!(o.due(t0 + Duration::from_secs(5), every).len(), 1);
        assert_eq!(o.all_unacked(t0 + Duration::from_secs(6)).len(), 1);
        assert!(o.ack(&key));
        assert!(!o.ack(&key), "a second ack changes nothing");
        assert!(o.due(t0 + Duration::from_secs(60), every).is_empty());
        assert!(o.all_unacked(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(
            o.get(&key),
            Some(&result("op-1", 1)),
            "kept to answer a repeated RunStep"
        );
        assert!(o.is_acked(&key));
        // A late duplicate of an acked result is not queued again.
        o.insert(result("op-1", 1));
        assert_eq!(o.unacked_len(), 0);
    }

    #[test]
    fn the_first_result_of_an_attempt_stays() {
        let mut o = Outbox::new();
        let mut first = result("op-1", 1);
        first.finished_at = Some(prost_types::Timestamp { seconds: 1, nanos: 0 });
        let key = o.insert(first.clone());
        o.insert(result("op-1", 1));
        assert_eq!(o.get(&key), Some(&first));
        assert_eq!(o.unacked_len(), 1);
    }

    #[test]
    fn newer_attempts_of_the_same_step_are_found() {
        let mut o = Outbox::new();
        let k2 = o.insert(result("op", 2));
        o.insert(result("op", 5));
        o.ack(&k2);
        o.insert(result("other", 9));
        let probe = StepKey::new("op", "taint", 1);
        assert_eq!(o.newest_attempt_after(&probe), Some(5));
        assert_eq!(o.newest_attempt_after(&StepKey::new("op", "taint", 5)), None);
        assert_eq!(o.newest_attempt_after(&StepKey::new("op", "drain", 1)), None);
    }

    #[test]
    fn only_the_newest_acked_results_are_kept() {
        let mut o = Outbox::new();
        for i in 0..(ACKED_KEPT as u32 + 10) {
            let key = o.insert(result("op", i + 1));
            o.ack(&key);
        }
        assert!(o.get(&StepKey::new("op", "taint", 1)).is_none());
        assert!(o
            .get(&StepKey::new("op", "taint", ACKED_KEPT as u32 + 10))
            .is_some());
        assert_eq!(o.acked.len(), ACKED_KEPT);
    }
}
