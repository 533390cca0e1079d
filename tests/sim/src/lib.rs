//! flotilla-sim: a simulated EKS fleet on loopback.
pub mod object;
pub mod resources;
pub mod api;
pub mod defaults;
pub mod error;
pub mod patch;
pub mod store;
pub mod controllers;
pub mod selector;
pub mod stats;
pub mod tls;
pub mod discovery;
pub mod cluster;
pub mod printers;
pub mod eviction;
pub mod server;
pub mod fleet;
