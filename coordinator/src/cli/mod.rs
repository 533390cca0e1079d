//! The `flotilla` operator CLI: a client of the coordinator's Fleet gRPC API over mTLS.

pub mod error;
pub mod render;
pub mod spec;
