//! xdpguard: an XDP host firewall.
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod decision;
pub mod metrics;
pub mod owner;
pub mod prefix;
