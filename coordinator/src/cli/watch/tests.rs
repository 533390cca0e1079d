//! Watch tests.
