//! Decisions from outside this host: CrowdSec's local API (and, next, the fleet), read into
//! typed decisions and turned into orders for the decision owner's front door. The wire
//! formats stay inside each peer's module.
pub mod crowdsec;
