//! What may not be blocked: too broad a prefix (unless forced), ranges that are never a
//! unicast source (unless forced), this host's own addresses and the allowlist (never).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{OwnerConfig, Refusal};
use crate::prefix::Prefix;

/// Ranges no attacker sends from as a unicast source, and whose blocking breaks the host
/// instead (DHCP, neighbour discovery, cloud metadata, service discovery): refused unless
/// forced, when a block is, is inside or covers one.
fn not_unicast() -> [(Prefix, &'static str); 7] {
    let v4 = |a, b, c, d, len| Prefix::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len);
    let v6 = |addr: Ipv6Addr, len| Prefix::new(IpAddr::V6(addr), len);
    let ranges = [
        (v4(224, 0, 0, 0, 4), "multicast"),
        (v4(255, 255, 255, 255, 32), "broadcast"),
        (v4(0, 0, 0, 0, 32), "unspecified"),
        (v4(169, 254, 0, 0, 16), "link-local"),
        (
            v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
            "multicast",
        ),
        (v6(Ipv6Addr::UNSPECIFIED, 128), "unspecified"),
        (
            v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
            "link-local",
        ),
    ];
    // The lengths above fit their families.
    ranges.map(|(range, what)| (range.unwrap_or_else(|_| unreachable!()), what))
}

/// Whether one prefix is inside or covers the other.
fn overlaps(a: &Prefix, b: &Prefix) -> bool {
    a.is_ipv4() == b.is_ipv4()
        && ((a.prefix_len() <= b.prefix_len() && a.contains(b.addr()))
            || (b.prefix_len() <= a.prefix_len() && b.contains(a.addr())))
}

/// Why blocking `prefix` is refused, if it is.
pub fn block_refusal(
    prefix: &Prefix,
    config: &OwnerConfig,
    allows: &[Prefix],
    force: bool,
) -> Option<Refusal> {
    let limit = if prefix.is_ipv4() {
        config.min_prefix_len_v4
    } else {
        config.min_prefix_len_v6
    };
    if prefix.prefix_len() < limit && !force {
        return Some(Refusal::TooBroad {
            len: prefix.prefix_len(),
            limit,
        });
    }
    if !force
        && let Some((range, what)) = not_unicast()
            .into_iter()
            .find(|(range, _)| overlaps(range, prefix))
    {
        return Some(Refusal::NotUnicast { range, what });
    }
    if let Some(own) = config
        .own_addresses
        .iter()
        .find(|own| prefix.contains(own.addr()))
    {
        return Some(Refusal::OwnAddress(own.addr()));
    }
    if let Some(allow) = allows
        .iter()
        .find(|allow| allow.prefix_len() <= prefix.prefix_len() && allow.contains(prefix.addr()))
    {
        return Some(Refusal::Allowlisted { allow: *allow });
    }
    None
}
