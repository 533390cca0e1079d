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
//! - [`upgrade`]: the coordinator's upgrade steps (preflight, control plane, node groups,
//!   add-ons) over [`eks::Eks`], with typed outputs and errors.
//! - [`metrics`]: the Prometheus metrics the coordinator serves, with where each is bumped.
//! - [`cli`]: the `flotilla` operator CLI (a client of the Fleet gRPC API; `src/bin/flotilla.rs`).
//! - [`config`]: the clusters file (`serve --clusters FILE`).
//! - [`params`]: an operation's parameters as stored, defaults filled in, validated.
//! - [`server`]: `serve` as a library ([`server::Coordinator::start`]): mTLS, health, reflection.
//! - [`auth`]: the caller's identity from its certificate, and what it may do.
//! - [`sessions`]: agent sessions (connected, last seen, inventory) and `AgentGateway.Connect`.
//! - [`engine`]: drives every operation: persist, then act; agent steps over the sessions,
//!   coordinator steps against EKS; resume after a restart.
//! - [`fleet`]: the `Fleet` gRPC service; [`selector`]: label selectors over cluster labels (one
//!   parser for `ListClusters` and rollouts).
//! - [`convert`]: protobuf to and from the coordinator's types.
//! - [`rollout`]: fleet rollouts: label selectors, the validated spec, and the pure state machine
//!   that runs stages (concurrency, soak, failure budget, approval gates, pause, cancel).

pub mod auth;
pub mod ca;
pub mod cli;
pub mod config;
pub mod convert;
pub mod eks;
pub mod engine;
pub mod fleet;
pub mod metrics;
pub mod operation;
pub mod params;
pub mod plan;
pub mod rollout;
pub mod selector;
pub mod server;
pub mod sessions;
pub mod store;
pub mod upgrade;
