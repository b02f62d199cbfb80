//! Frame builders for the kernel tests and benchmarks.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_LLDP: u16 = 0x88cc;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// Ethernet header with VLAN tags (`(tpid, vid)`, outermost first) ending in `ether_type`.
pub fn eth(ether_type: u16, vlans: &[(u16, u16)]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (tpid, vid) in vlans {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame
}

/// IPv4 header (with `option_words` 4-byte option words) plus an 8-byte UDP header.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, option_words: u8, frag_offset: u16) -> Vec<u8> {
    let ihl = 5 + option_words;
    let total = u16::from(ihl) * 4 + 8;
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag_offset.to_be_bytes());
    h.extend_from_slice(&[64, 17, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    for _ in 0..option_words {
        h.extend_from_slice(&[1, 1, 1, 1]); // NOP options
    }
    h.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
    h
}

/// IPv6 fixed header plus an 8-byte UDP header.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
    h
}

pub fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A plain Ethernet + IPv4 + UDP frame from `src`.
pub fn udp4(src: Ipv4Addr) -> Vec<u8> {
    concat(&[
        &eth(ETH_P_IPV4, &[]),
        &ipv4(src, Ipv4Addr::new(198, 51, 100, 1), 0, 0),
    ])
}

/// A plain Ethernet + IPv6 + UDP frame from `src`.
pub fn udp6(src: Ipv6Addr) -> Vec<u8> {
    concat(&[
        &eth(ETH_P_IPV6, &[]),
        &ipv6(src, "2001:db8::1".parse().unwrap()),
    ])
}
