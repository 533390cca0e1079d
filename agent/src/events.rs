//! Kubernetes Events on the nodes and Deployments each step touches. Best effort: a failed
//! Event is logged, never fails the step.

use crate::cluster::{Cluster, EventNote, EventType, ObjectRef};

/// Records a `Normal` Event.
pub async fn normal<C: Cluster>(cluster: &C, regarding: ObjectRef, reason: &str, message: impl Into<String>) {
    record(cluster, regarding, EventType::Normal, reason, message.into()).await;
}

/// Records a `Warning` Event.
pub async fn warning<C: Cluster>(
    cluster: &C,
    regarding: ObjectRef,
    reason: &str,
    message: impl Into<String>,
) {
    record(cluster, regarding, EventType::Warning, reason, message.into()).await;
}

/// An Event to record later with [`send`].
pub fn note(regarding: ObjectRef, type_: EventType, reason: &str, message: impl Into<String>) -> EventNote {
    EventNote {
        regarding,
        type_,
        reason: reason.to_string(),
        message: message.into(),
    }
}

async fn record<C: Cluster>(
    cluster: &C,
    regarding: ObjectRef,
    type_: EventType,
    reason: &str,
    message: String,
) {
    send(cluster, note(regarding, type_, reason, message)).await;
}

/// Records an Event made with [`note`].
pub async fn send<C: Cluster>(cluster: &C, note: EventNote) {
    if let Err(e) = cluster.record_event(&note).await {
        tracing::warn!(error = %e, reason = %note.reason, object = %note.regarding.name, "could not record event");
    }
}
