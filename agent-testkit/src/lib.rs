//! What xdpguard's tests, benchmarks and the xtask demo share, kept out of the shipped crate.
//!
//! - [`chromium`]: headless Chromium's DOM dumps and screenshots, for the HTML report;
//! - [`netns`]: two network namespaces joined by a veth pair, deleted on drop;
//! - [`daemon`]: a real `xdpguard run` in the sandbox, driven through the CLI;
//! - [`frames`]: Ethernet/VLAN/IP/UDP frame builders;
//! - [`flows`]: real flow exporters (tcpdump, softflowd);
//! - [`encode`]: a NetFlow v9 encoder for generated streams;
//! - `baseline` (feature `baselines`): the benchmark baseline XDP programs;
//! - [`prometheus`]: a real Prometheus scraping the daemon;
//! - [`crowdsec`]: a real CrowdSec local API with a bouncer key;
//! - [`report`]: what the benchmarks' Markdown reports share.
#[cfg(feature = "baselines")]
pub mod baseline;
pub mod chromium;
pub mod crowdsec;
pub mod daemon;
pub mod encode;
pub mod flows;
pub mod frames;
pub mod nats;
pub mod netns;
pub mod prometheus;
pub mod report;
