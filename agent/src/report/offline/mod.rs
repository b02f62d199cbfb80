//! `xdpguard report` without a history: the same [`Summary`] built from logs run through
//! rulesets ([`logs`]) or from nfcapd flow files read with nfdump ([`nfcapd`]), as an
//! analysis notebook would build it.
//!
//! Both end their range at the newest time the input holds: `until` is that second + 1, and
//! `since` is `until` minus the span asked for (`--since`), so "the last 7 days of this log"
//! means the log's last 7 days, not the calendar's. Bins start at multiples of the bin size
//! (UTC), from the one holding `since`, every bin present, as the history's summaries do.
pub mod logs;
pub mod nfcapd;

use std::{collections::HashSet, io, net::IpAddr, path::PathBuf};

use crate::{
    history::model::{Bin, RulesetBin, TopRow},
    origins::OriginTable,
};

/// More bins than this is a mistake (a 1-second bin over a year), not a report; the
/// history's own bound.
const MAX_BINS: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bins of 0 seconds")]
    ZeroBin,
    #[error(
        "{count} bins of {bin} seconds (at most {MAX_BINS}): use a larger --bin or a shorter --since"
    )]
    TooManyBins { count: u64, bin: u64 },
    #[error("no line of {what} has a time that could be read: nothing to place in bins")]
    NoTimes { what: String },
    #[error("nfdump was not found ({source}): install Debian's nfdump package")]
    NfdumpMissing {
        #[source]
        source: io::Error,
    },
    #[error("running nfdump")]
    NfdumpSpawn {
        #[source]
        source: io::Error,
    },
    #[error("nfdump -R {dir} failed ({status}): {stderr}")]
    NfdumpFailed {
        dir: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("nfdump output line {line}: {problem}: {text:?}")]
    NfdumpOutput {
        line: u64,
        problem: String,
        text: String,
    },
    #[error("nfdump printed more than {max} flows: report on fewer files")]
    TooManyFlows { max: usize },
    #[error("flow pairing")]
    Pairing(#[from] crate::detect::traffic::flow::PairingError),
}

/// The report's range and bins: `[since, until)` in bins of `bin_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub since: u64,
    pub until: u64,
    pub bin_seconds: u64,
}

impl Range {
    /// The `span_seconds` up to and including second `latest` (the input's newest time).
    pub const fn ending_at(latest: u64, span_seconds: u64, bin_seconds: u64) -> Self {
        let until = latest.saturating_add(1);
        Self {
            since: until.saturating_sub(span_seconds),
            until,
            bin_seconds,
        }
    }

    pub const fn contains(&self, time: u64) -> bool {
        time >= self.since && time < self.until
    }
}

/// Every bin of a range, empty, and which one a time falls in.
#[derive(Debug)]
pub(crate) struct Bins {
    first: u64,
    bin: u64,
    pub(crate) bins: Vec<Bin>,
}

impl Bins {
    /// As the history aligns them: from the multiple of `bin_seconds` at or before `since`.
    pub(crate) fn new(range: Range) -> Result<Self, OfflineError> {
        let bin = range.bin_seconds;
        if bin == 0 {
            return Err(OfflineError::ZeroBin);
        }
        let first = range.since - range.since % bin;
        let count = if range.until > range.since {
            (range.until - first).div_ceil(bin)
        } else {
            0
        };
        if count > MAX_BINS {
            return Err(OfflineError::TooManyBins { count, bin });
        }
        let bins = (0..count)
            .map(|i| Bin {
                start: first + i * bin,
                seconds: bin,
                ..Bin::default()
            })
            .collect();
        Ok(Self { first, bin, bins })
    }

    /// The bin holding `time`, if the range has one.
    pub(crate) fn index(&self, time: u64) -> Option<usize> {
        let offset = time.checked_sub(self.first)?;
        usize::try_from(offset / self.bin)
            .ok()
            .filter(|&i| i < self.bins.len())
    }
}

/// IPv4-mapped IPv6 as IPv4: one source, one count, as the history stores it.
pub(crate) const fn canonical(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

/// The /24 (IPv4) or /64 (IPv6) holding `address`, as the history's network counts and the
/// top lists key them.
pub(crate) fn network_of(address: IpAddr) -> (IpAddr, u8) {
    match canonical(address) {
        IpAddr::V4(v4) => (IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()), 24),
        IpAddr::V6(v6) => (
            IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            64,
        ),
    }
}

/// One ruleset's distinct sources, networks and (with a table) origins in one bin.
pub(crate) fn ruleset_bin(
    ruleset: String,
    addresses: &HashSet<IpAddr>,
    origins: Option<&OriginTable>,
) -> RulesetBin {
    let networks: HashSet<(IpAddr, u8)> = addresses.iter().map(|&a| network_of(a)).collect();
    let distinct_origins: HashSet<String> = origins
        .map(|table| {
            addresses
                .iter()
                .filter_map(|&a| table.lookup(a).map(|found| found.origin.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let len = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    RulesetBin {
        ruleset,
        sources: len(addresses.len()),
        networks: len(networks.len()),
        origins: len(distinct_origins.len()),
        truncated: false,
    }
}

/// Rows of one ranking by bytes (then packets), largest first, names breaking ties; at most
/// `limit`. The volume rankings are the only ones offline sources fill.
pub(crate) fn top_by_bytes(mut rows: Vec<TopRow>, limit: usize) -> Vec<TopRow> {
    rows.sort_by(|a, b| {
        (b.bytes, b.packets)
            .cmp(&(a.bytes, a.packets))
            .then_with(|| a.key.cmp(&b.key))
    });
    rows.truncate(limit);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_align_to_multiples_and_cover_the_range() {
        // 10:20 to 12:05 in hours: 10:00, 11:00, 12:00.
        let bins = Bins::new(Range {
            since: 10 * 3600 + 1200,
            until: 12 * 3600 + 300,
            bin_seconds: 3600,
        })
        .unwrap();
        let starts: Vec<u64> = bins.bins.iter().map(|b| b.start).collect();
        assert_eq!(starts, [36_000, 39_600, 43_200]);
        assert_eq!(bins.index(36_000 + 1199), Some(0));
        assert_eq!(bins.index(39_600), Some(1));
        assert_eq!(bins.index(43_200 + 3599), Some(2));
        assert_eq!(bins.index(46_800), None);
        assert_eq!(bins.index(35_999), None);
        assert!(matches!(
            Bins::new(Range {
                since: 0,
                until: 10,
                bin_seconds: 0
            }),
            Err(OfflineError::ZeroBin)
        ));
        assert!(matches!(
            Bins::new(Range {
                since: 0,
                until: 2_000_000,
                bin_seconds: 1
            }),
            Err(OfflineError::TooManyBins { .. })
        ));
    }

    #[test]
    fn a_range_ends_one_second_after_the_newest_time() {
        let range = Range::ending_at(1000, 600, 60);
        assert_eq!((range.since, range.until), (401, 1001));
        assert!(range.contains(1000) && range.contains(401) && !range.contains(400));
        assert_eq!(Range::ending_at(5, 600, 60).since, 0);
    }

    #[test]
    fn networks_are_slash_24_and_slash_64_and_mapped_addresses_count_as_ipv4() {
        let addresses: HashSet<IpAddr> = [
            "203.0.113.1",
            "203.0.113.200",
            "203.0.114.1",
            "2001:db8:0:1::1",
            "2001:db8:0:1::2",
            "2001:db8:0:2::1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let counted = ruleset_bin("sshd".into(), &addresses, None);
        assert_eq!(
            (counted.sources, counted.networks, counted.origins),
            (6, 4, 0)
        );
        assert_eq!(
            network_of("::ffff:203.0.113.9".parse().unwrap()),
            ("203.0.113.0".parse().unwrap(), 24)
        );
    }
}
