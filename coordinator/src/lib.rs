//! The Flotilla coordinator: drives EKS fleet migrations and upgrades, talking gRPC over mTLS to
//! in-cluster agents and operator CLIs.
//!
//! # Layout
//!
//! - [`ca`]: the certificate authority (`flotilla-coordinator ca init | issue`), the identities
//!   certificates carry, and the rustls configurations for mTLS ([`ca::tls`]).
//! - [`eks`]: the EKS and Auto Scaling seam (trait [`eks::Eks`], the aws-sdk implementation, a fake)
//!   and the waits that poll it with backoff.
//! - [`store`]: the durable store (trait [`store::Store`], sled implementation): clusters, operations
//!   with their steps, rollouts, and per-operation and per-rollout event logs.
//! - [`plan`]: the ordered step plans (who runs each step, retry policy, resume rule).
//! - [`operation`]: the pure state machine that drives one operation through its plan.
//! - [`rollout`]: fleet rollouts: label selectors, the validated spec, and the pure state machine
//!   that runs stages (concurrency, soak, failure budget, approval gates, pause, cancel).

pub mod ca;
pub mod eks;
pub mod operation;
pub mod plan;
pub mod rollout;
pub mod store;
