//! placeholder until scenario lands
fn main() {}
