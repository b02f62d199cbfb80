//! Decisions from outside this host: CrowdSec's local API, the other agents of the fleet, and
//! the routing table an ASN block follows (`announced`); CrowdSec and the fleet are
//! read into typed decisions and turned into orders for the decision owner's front door
//! ([`orders`]). The wire formats stay inside each peer's module.
pub mod announced;
pub mod crowdsec;
pub mod fleet;
pub mod orders;
pub mod runtime;
