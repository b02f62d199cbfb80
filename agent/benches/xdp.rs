//! `cargo xtask bench xdp`: see docs/BENCHMARKS.md.
fn main() {}
