//! xdpguard: an XDP host firewall.
pub mod dataplane;
pub mod prefix;
