//! xdpguard as CrowdSec's XDP bouncer: the local API's decision stream ([`stream`]) and the
//! decisions held from it ([`tracker`]), which become blocks and unblocks on behalf of
//! `crowdsec:ORIGIN`.
pub mod stream;
pub mod tracker;
