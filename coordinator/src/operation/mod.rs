//! Operations: one migration or one upgrade hop of one cluster, driven step by step through its
//! plan by a pure state machine ([`state::next`]) whose every state is written to sled before it
//! is acted on.

pub mod state;

pub use state::{next, Action, Event, OperationState, RunMode, StepFailure, StepOutputs};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod upgrade_tests;
