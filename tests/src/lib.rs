//! flotilla-tests: end-to-end tests, benchmarks and the one-command demo, which run Flotilla's
//! binaries and clients against the simulated fleet.
//!
//! - [`demo`]: the demo (`flotilla-demo`, `src/bin/flotilla-demo.rs`) as a library, which the
//!   end-to-end tests in `tests/` reuse.
//! - `benches/`: benchmarks; `tests/`: end-to-end tests.

pub mod demo;
