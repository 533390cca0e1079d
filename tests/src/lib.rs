//! flotilla-tests: end-to-end tests and benchmarks that run Flotilla's binaries and clients against
//! the simulated fleet. The code lives in `benches/` (and, as they come, `tests/`); this library is empty.
