//! `flotilla-sim`: serves a simulated EKS fleet on loopback.
fn main() {}
