//! flotilla-agent: the in-cluster side of Flotilla. It does the local work of a migration from a
//! self-managed node group to an EKS managed node group — taint, cordon, surge-scale, verify,
//! drain through the Eviction API, restore — as idempotent, resumable steps.
//!
//! # Layout
//!
//! - [`cluster`]: the `Cluster` trait (the operations steps need), its kube-rs implementation
//!   and, for unit tests, an in-memory fake.
//! - [`steps`]: one module per step, `enum Step` to dispatch them, progress and `StepError`.
//! - [`inventory`], [`events`], [`model`], [`placement`]: what the steps share.
//! - [`uplink`]: the session with the coordinator (mTLS gRPC, dial out, run the steps it sends,
//!   re-send results until acked) — what `flotilla-agent --coordinator URL` runs, and what a demo
//!   embeds in-process with [`uplink::run`].
//! - [`metrics`]: the Prometheus metrics the agent serves on `--metrics-listen`.
//! - [`local`], [`args`], [`cli`]: the local runner (`flotilla-agent local migrate`), the
//!   command line, and what each command does.
#![forbid(unsafe_code)]

pub mod args;
pub mod cli;
pub mod cluster;
pub mod deprecated_apis;
pub mod error;
pub mod events;
pub mod inventory;
pub mod local;
pub mod metrics;
pub mod model;
pub mod placement;
pub mod steps;
pub mod uplink;
