//! This site's prefixes (`volume.local`) and the split of traffic into local and external they
//! give, for the history's [`Traffic`].
//!
//! - XDP accounting sees what arrives here, by source address: `inbound_local` when the source
//!   is one of ours, else `inbound_external`.
//! - A flow record from one of ours to outside is `outbound_external`; from outside (to one of
//!   ours, to outside: transit, or to no address the template gives) `inbound_external`; from
//!   one of ours to one of ours, or to no address, `inbound_local` (judged by its source, as
//!   XDP is).
//! - `outbound_local` is never counted: nothing here sees traffic leave towards our own
//!   prefixes that is not also local to local.
//!
//! Without local prefixes every source is external. Flow records count whole (bytes as
//! exported), unlike the volume tries, which spread a long flow over its duration: the history
//! sums bytes over time, and spreading would drop most of a minute-long flow's bytes.
use std::{collections::HashSet, net::IpAddr};

use crate::{detect::traffic::flow::FlowRecord, history::model::Traffic, prefix::Prefix};

/// The site's prefixes, looked up once per distinct length (not per prefix), so millions of
/// sources an interval cost a few hash lookups each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNets {
    prefixes: HashSet<Prefix>,
    /// Distinct lengths per family (IPv4, IPv6), longest first.
    lens: [Vec<u8>; 2],
}

impl LocalNets {
    pub fn new(prefixes: &[Prefix]) -> Self {
        let mut lens: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for prefix in prefixes {
            let family = &mut lens[usize::from(!prefix.is_ipv4())];
            if !family.contains(&prefix.prefix_len()) {
                family.push(prefix.prefix_len());
            }
        }
        for family in &mut lens {
            family.sort_unstable_by(|a, b| b.cmp(a));
        }
        Self {
            prefixes: prefixes.iter().copied().collect(),
            lens,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether `address` (IPv4-mapped IPv6 read as IPv4) is inside one of the prefixes.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.lens[usize::from(!address.is_ipv4())]
            .iter()
            .any(|&len| {
                Prefix::new(address, len).is_ok_and(|network| self.prefixes.contains(&network))
            })
    }

    /// What XDP accounting counted from `source`.
    pub fn add_inbound(&self, traffic: &mut Traffic, source: IpAddr, bytes: u64) {
        let side = if self.contains(source) {
            &mut traffic.inbound_local
        } else {
            &mut traffic.inbound_external
        };
        *side = side.saturating_add(bytes);
    }

    /// One flow record (see the module documentation for which side it counts on).
    pub fn add_flow(&self, traffic: &mut Traffic, record: &FlowRecord) {
        let side = if !self.contains(record.source) {
            &mut traffic.inbound_external
        } else if record.destination.is_unspecified() || self.contains(record.destination) {
            &mut traffic.inbound_local
        } else {
            &mut traffic.outbound_external
        };
        *side = side.saturating_add(record.bytes);
    }
}

/// Both sides' sums.
pub fn add_traffic(total: &mut Traffic, more: &Traffic) {
    let Traffic {
        inbound_local,
        inbound_external,
        outbound_local,
        outbound_external,
    } = more;
    for (sum, value) in [
        (&mut total.inbound_local, inbound_local),
        (&mut total.inbound_external, inbound_external),
        (&mut total.outbound_local, outbound_local),
        (&mut total.outbound_external, outbound_external),
    ] {
        *sum = sum.saturating_add(*value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> LocalNets {
        LocalNets::new(&[
            "203.0.113.0/24".parse().unwrap(),
            "198.51.100.128/25".parse().unwrap(),
            "2001:db8:100::/48".parse().unwrap(),
        ])
    }

    #[test]
    fn membership_by_length_and_family() {
        let nets = nets();
        for (address, inside) in [
            ("203.0.113.7", true),
            ("::ffff:203.0.113.7", true),
            ("203.0.114.7", false),
            ("198.51.100.200", true),
            ("198.51.100.100", false),
            ("2001:db8:100:5::1", true),
            ("2001:db8:101::1", false),
        ] {
            assert_eq!(nets.contains(address.parse().unwrap()), inside, "{address}");
        }
        assert!(!LocalNets::default().contains("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn traffic_split_cases() {
        struct Case {
            name: &'static str,
            source: &'static str,
            /// `None`: a record without a destination.
            destination: Option<&'static str>,
            /// (inbound_local, inbound_external, outbound_external)
            want: (u64, u64, u64),
        }
        let cases = [
            Case {
                name: "outside to us",
                source: "192.0.2.1",
                destination: Some("203.0.113.7"),
                want: (0, 100, 0),
            },
            Case {
                name: "us to outside",
                source: "203.0.113.7",
                destination: Some("192.0.2.1"),
                want: (0, 0, 100),
            },
            Case {
                name: "us to us",
                source: "203.0.113.7",
                destination: Some("2001:db8:100::1"),
                want: (100, 0, 0),
            },
            Case {
                name: "transit counts as from outside",
                source: "192.0.2.1",
                destination: Some("192.0.2.2"),
                want: (0, 100, 0),
            },
            Case {
                name: "no destination: by source, ours",
                source: "203.0.113.7",
                destination: None,
                want: (100, 0, 0),
            },
            Case {
                name: "no destination: by source, outside",
                source: "2001:db8:200::1",
                destination: None,
                want: (0, 100, 0),
            },
        ];
        let nets = nets();
        for case in cases {
            let mut record = FlowRecord::new(case.source.parse().unwrap(), 100, 1);
            if let Some(destination) = case.destination {
                record.destination = destination.parse().unwrap();
            }
            let mut traffic = Traffic::default();
            nets.add_flow(&mut traffic, &record);
            assert_eq!(
                (
                    traffic.inbound_local,
                    traffic.inbound_external,
                    traffic.outbound_external
                ),
                case.want,
                "{}",
                case.name
            );
            assert_eq!(traffic.outbound_local, 0, "{}", case.name);
        }
        // Without local prefixes everything is from outside.
        let mut traffic = Traffic::default();
        let mut record = FlowRecord::new("203.0.113.7".parse().unwrap(), 100, 1);
        record.destination = "192.0.2.1".parse().unwrap();
        LocalNets::default().add_flow(&mut traffic, &record);
        assert_eq!(traffic.inbound_external, 100);
    }

    #[test]
    fn xdp_sees_inbound_by_source() {
        let nets = nets();
        let mut traffic = Traffic::default();
        nets.add_inbound(&mut traffic, "203.0.113.9".parse().unwrap(), 10);
        nets.add_inbound(&mut traffic, "192.0.2.9".parse().unwrap(), 7);
        nets.add_inbound(&mut traffic, "::ffff:203.0.113.9".parse().unwrap(), 1);
        assert_eq!((traffic.inbound_local, traffic.inbound_external), (11, 7));
        let mut total = traffic;
        add_traffic(&mut total, &traffic);
        assert_eq!(total.inbound_local, 22);
    }
}
