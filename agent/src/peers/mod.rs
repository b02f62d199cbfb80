//! Decisions from outside this host: CrowdSec's local API and the other agents of the fleet,
//! read into typed decisions and turned into orders for the decision owner's front door
//! ([`orders`]). The wire formats stay inside each peer's module.
pub mod crowdsec;
pub mod fleet;
pub mod orders;
pub mod runtime;
