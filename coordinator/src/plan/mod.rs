//! Step plans: the ordered steps of an operation, who runs each, how each is retried, and how
//! each is picked up again after the coordinator restarts.

pub mod migration;

pub use migration::{ResumeMode, RetryPolicy, Runner, Step, MIGRATION};
