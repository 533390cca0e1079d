//! What the coordinator and the agent share: the wire protocol (the `flotilla.fleet.v1` protobuf
//! messages and the tonic servers and clients generated from `proto/fleet/v1/*.proto`), the
//! bounds both check step parameters against, and telemetry.
//!
//! # Layout
//!
//! - `AgentGateway` (`agent.proto`): the agent's one bidirectional session with the coordinator —
//!   Hello, Heartbeat, StepProgress and StepResult up; RunStep, CancelStep and Ack down.
//! - Steps (`steps.proto`): one parameter message per agent step, their outputs, and the typed
//!   `StepError` whose codes equal the agent's `StepError::code()`.
//! - Inventory (`inventory.proto`): versions, node groups, nodes, Deployments, blocking PDBs.
//! - `Fleet` (`fleet.proto`): clusters, per-cluster operations and staged rollouts.
//!
//! - [`limits`]: the largest surge, drain concurrency and wait a step accepts.
//! - [`telemetry`]: what both binaries share for observability — logs (text or JSON), OTLP trace
//!   export, W3C trace context across gRPC calls and the agent stream, the `/metrics` endpoint.
//!
//! The agent converts these types to and from its domain types at its uplink
//! (`flotilla_agent::uplink::convert`); the coordinator's steps, plans and store keep its
//! operations' domain types, while its engine and sessions pass agent messages through as they
//! are.

pub mod limits;
pub mod telemetry;

/// Generated code for package `flotilla.fleet.v1`.
pub mod fleet {
    /// Version 1 of the fleet protocol.
    // `RolloutEvent.event` carries a whole `Rollout` in one variant and small ones in the others;
    // generated code keeps prost's plain layout (boxing would change the API).
    #[allow(clippy::large_enum_variant)]
    pub mod v1 {
        tonic::include_proto!("flotilla.fleet.v1");
    }
}

/// The encoded `FileDescriptorSet` of every `flotilla.fleet.v1` file, for gRPC reflection
/// (`tonic_reflection::server::Builder::register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fleet_v1_descriptor.bin"));
