//! Benchmark baseline: one stock LPM-trie lookup per packet, every entry (hosts included) in
//! the trie, as a simple prefix filter would do it.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};
use xdpguard_ebpf::{Parsed, Source, parse_source};

#[map(name = "REF_LPM_V4")]
static REF_LPM_V4: LpmTrie<[u8; 4], u64> = LpmTrie::with_max_entries(2_097_152, 0);
#[map(name = "REF_LPM_V6")]
static REF_LPM_V6: LpmTrie<[u8; 16], u64> = LpmTrie::with_max_entries(2_097_152, 0);

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[xdp] hands the context over by value"
)]
pub fn bench_lpm(ctx: XdpContext) -> u32 {
    let hit = match parse_source(&ctx, true) {
        Parsed::Ip(Source::V4(addr) | Source::V6MappedV4(addr)) => {
            REF_LPM_V4.get(Key::new(32, addr)).is_some()
        }
        Parsed::Ip(Source::V6(addr)) => REF_LPM_V6.get(Key::new(128, addr)).is_some(),
        Parsed::Ip(Source::Unread { .. }) | Parsed::NonIp | Parsed::Malformed => false,
    };
    if hit {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
