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
