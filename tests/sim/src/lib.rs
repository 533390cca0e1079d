//! flotilla-sim: a simulated EKS fleet on loopback.
pub mod object;
pub mod resources;
