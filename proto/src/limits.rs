//! Bounds on step parameters that the coordinator checks before it accepts work and the agent
//! checks again before it runs a step, so both sides refuse the same values.

use std::time::Duration;

/// The longest timeout or wait a step takes (7 days): longer ones are typos, and would overflow
/// the clock arithmetic of deadlines.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most pods a surge may add to one Deployment.
pub const MAX_SURGE_COUNT: u32 = 1000;

/// The largest share a surge may add to one Deployment, in percent.
pub const MAX_SURGE_PERCENT: u32 = 1000;

/// The most nodes one drain empties at once.
pub const MAX_DRAIN_CONCURRENCY: u32 = 100;
