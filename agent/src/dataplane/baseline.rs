//! Benchmark baselines (`cargo xtask bench xdp`): an XDP program that only passes, and one
//! that does a single stock LPM-trie lookup per packet.
