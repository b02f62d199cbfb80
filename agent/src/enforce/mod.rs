//! Enforcement: the decision owner (the only writer of the kernel lists), the crash-safe
//! decision store, and the data path that holds the XDP program and its maps.
pub mod dataplane;
pub mod decision;
pub mod owner;
