//! The Flotilla coordinator: drives EKS fleet migrations and upgrades, talking gRPC over mTLS to
//! in-cluster agents and operator CLIs.
//!
//! # Layout
//!
//! - [`ca`]: the certificate authority (`flotilla-coordinator ca init | issue`), the identities
//!   certificates carry, and the rustls configurations for mTLS ([`ca::tls`]).
//! - [`eks`]: the EKS and Auto Scaling seam (trait [`eks::Eks`], the aws-sdk implementation, a fake)
//!   and the waits that poll it with backoff.

pub mod ca;
pub mod eks;
