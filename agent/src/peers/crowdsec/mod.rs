//! xdpguard as CrowdSec's XDP bouncer: the local API's decision stream ([`stream`]), the
//! decisions held from it ([`tracker`]), and the thread that polls it ([`bouncer`]), which
//! blocks and unblocks on behalf of `crowdsec:ORIGIN` through the owner's front door.
pub mod bouncer;
pub mod config;
pub mod metrics;
pub mod stream;
pub mod tracker;
