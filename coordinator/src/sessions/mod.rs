//! Agent sessions: which cluster's agent is connected, since when, when it was last heard from, its
//! version and its latest inventory; and the one outbound queue per live session through which the
//! engine sends `RunStep`, `CancelStep` and `Ack`. A reconnect replaces the old session (whose
//! stream is then closed); [`gateway`] serves `AgentGateway.Connect` on top of this registry.

pub mod gateway;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_proto::fleet::v1::{CoordinatorMessage, Inventory};
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

/// What the gateway streams to an agent: messages, or a final error status.
pub type Outbound = Result<CoordinatorMessage, tonic::Status>;

/// What is known about one cluster's agent.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Whether a session is open now.
    pub connected: bool,
    /// When the current (or last) session opened.
    pub connected_at: Option<Timestamp>,
    /// When the agent was last heard from (any message).
    pub last_seen: Option<Timestamp>,
    /// The agent's version, from its last Hello.
    pub agent_version: String,
    /// The latest inventory it reported.
    pub inventory: Option<Arc<Inventory>>,
}

/// A live session's handle in the registry.
#[derive(Debug)]
struct Live {
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    /// Dropped when the session is replaced or closed: its reader stops.
    _stop: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Entry {
    live: Option<Live>,
    info: SessionInfo,
}

/// An opened session: its id, the queue the gateway streams to the agent, and the signal that
/// it was replaced.
#[derive(Debug)]
pub struct Opened {
    /// Session id (unique in this process).
    pub id: u64,
    /// Messages for the agent.
    pub rx: mpsc::UnboundedReceiver<Outbound>,
    /// Resolves (with an error) when the registry drops the session: replaced or closed.
    pub stopped: oneshot::Receiver<()>,
    /// Whether an older session of the same cluster was replaced.
    pub replaced: bool,
}

/// The registry of agent sessions, by cluster.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
}

impl Sessions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `cluster` after its Hello, replacing any older one.
    pub fn open(&self, cluster: &str, agent_version: &str, inventory: Option<Inventory>) -> Opened {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let now = Timestamp::now();
        let mut map = self.lock();
        let entry = map.entry(cluster.to_string()).or_default();
        let replaced = entry.live.is_some();
        entry.live = Some(Live { id, tx, _stop: stop });
        entry.info.connected = true;
        entry.info.connected_at = Some(now);
        entry.info.last_seen = Some(now);
        entry.info.agent_version = agent_version.to_string();
        if let Some(inv) = inventory {
            entry.info.inventory = Some(Arc::new(inv));
        }
        Opened {
            id,
            rx,
            stopped,
            replaced,
        }
    }

    /// Records that session `id` of `cluster` was heard from.
    pub fn touch(&self, cluster: &str, id: u64) {
        if let Some(e) = self.lock().get_mut(cluster) {
            if e.live.as_ref().is_some_and(|l| l.id == id) {
                e.info.last_seen = Some(Timestamp::now());
            }
        }
    }

    /// Replaces the cluster's inventory.
    pub fn set_inventory(&self, cluster: &str, inventory: Inventory) {
        if let Some(e) = self.lock().get_mut(cluster) {
            e.info.inventory = Some(Arc::new(inventory));
        }
    }

    /// Closes session `id` of `cluster`; false (and nothing changes) if a newer session replaced it.
    pub fn close(&self, cluster: &str, id: u64) -> bool {
        let mut map = self.lock();
        match map.get_mut(cluster) {
            Some(e) if e.live.as_ref().is_some_and(|l| l.id == id) => {
                e.live = None;
                e.info.connected = false;
                true
            }
            _ => false,
        }
    }

    /// Closes every session (shutdown): their streams end.
    pub fn close_all(&self) {
        for e in self.lock().values_mut() {
            e.live = None;
            e.info.connected = false;
        }
    }

    /// Queues `msg` for the cluster's live session; false if there is none (or it just closed).
    pub fn send(&self, cluster: &str, msg: CoordinatorMessage) -> bool {
        self.lock()
            .get(cluster)
            .and_then(|e| e.live.as_ref())
            .is_some_and(|l| l.tx.send(Ok(msg)).is_ok())
    }

    /// Ends session `id` of `cluster` with an error status sent to the agent.
    pub fn fail(&self, cluster: &str, id: u64, status: tonic::Status) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(cluster) {
            if let Some(l) = e.live.as_ref().filter(|l| l.id == id) {
                let _ = l.tx.send(Err(status));
                e.live = None;
                e.info.connected = false;
            }
        }
    }

    /// What is known about the cluster's agent (default if it never connected).
    pub fn info(&self, cluster: &str) -> SessionInfo {
        self.lock()
            .get(cluster)
            .map(|e| e.info.clone())
            .unwrap_or_default()
    }

    /// How many sessions are open.
    pub fn connected(&self) -> usize {
        self.lock().values().filter(|e| e.live.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::fleet::v1::{coordinator_message, Ack};

    fn ack() -> CoordinatorMessage {
        CoordinatorMessage {
            message: Some(coordinator_message::Message::Ack(Ack::default())),
        }
    }

    #[test]
    fn reconnect_replaces_and_only_the_current_session_closes() {
        let s = Sessions::new();
        assert!(!s.send("c", ack()));
        let mut first = s.open("c", "0.1.0", Some(Inventory::default()));
        assert!(!first.replaced);
        assert!(s.send("c", ack()));
        assert!(first.rx.try_recv().is_ok());
        let mut second = s.open("c", "0.1.1", None);
        assert!(second.replaced);
        // The first session's queue and stop signal are dropped with it.
        assert!(first.stopped.try_recv().is_err());
        assert!(matches!(
            first.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        // Closing the replaced session changes nothing.
        assert!(!s.close("c", first.id));
        let info = s.info("c");
        assert!(info.connected && info.agent_version == "0.1.1" && info.inventory.is_some());
        assert!(s.send("c", ack()));
        assert!(second.rx.try_recv().is_ok());
        assert!(s.close("c", second.id));
        assert!(!s.info("c").connected);
        assert_eq!(s.connected(), 0);
    }
}
