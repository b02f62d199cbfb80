//! Frame parsing shared by the xdpguard XDP program and the benchmark baselines.
//!
//! Everything here is written for the verifier: every read goes through [`Cursor`], which
//! checks `start + len <= data_end` before handing out a pointer, so no frame length can make
//! the program read out of bounds.
#![no_std]

use aya_ebpf::programs::XdpContext;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// A bounds-checked read position in the frame.
pub struct Cursor {
    pos: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            pos: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// The next `size_of::<T>()` bytes as a `T`, or `None` when the frame is shorter.
    /// `T` must be made of byte arrays only (no alignment requirement).
    #[inline(always)]
    pub fn read<T: Copy>(&mut self) -> Option<T> {
        let start = self.pos;
        if start + size_of::<T>() > self.end {
            return None;
        }
        self.pos = start + size_of::<T>();
        // SAFETY: bounds checked above; `T` has alignment 1 (byte arrays only).
        Some(unsafe { *(start as *const T) })
    }

    /// The `T` at `offset` bytes ahead, if the frame is long enough to hold `len` bytes from
    /// here; the cursor does not move. Lets a parser check a header's full length once and
    /// read only the fields it needs.
    #[inline(always)]
    pub fn peek_at<T: Copy>(&self, offset: usize, len: usize) -> Option<T> {
        let start = self.pos;
        if start + len > self.end || offset + size_of::<T>() > len {
            return None;
        }
        // SAFETY: `offset + size_of::<T>() <= len` and `start + len <= end`; `T` has
        // alignment 1.
        Some(unsafe { *((start + offset) as *const T) })
    }

    /// Skip `len` bytes, or `None` when the frame is shorter.
    #[inline(always)]
    pub fn skip(&mut self, len: usize) -> Option<()> {
        if self.pos + len > self.end {
            return None;
        }
        self.pos += len;
        Some(())
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct EthHeader {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VlanTag {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

/// The part of the IPv4 header up to and including the source address.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Head {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    protocol: u8,
    checksum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Head {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The source address of an IP frame, and the family the frame was seen as.
#[derive(Clone, Copy)]
pub enum Source {
    V4([u8; 4]),
    V6([u8; 16]),
    /// An IPv6 frame whose source is IPv4-mapped (`::ffff:a.b.c.d`): looked up as IPv4,
    /// counted as IPv6.
    V6MappedV4([u8; 4]),
    /// The headers are whole, but the source was not read (no list to look it up in).
    Unread {
        ipv6: bool,
    },
}

/// How far parsing got.
pub enum Parsed {
    Ip(Source),
    /// Not IPv4 or IPv6: ARP, LLDP, a third VLAN tag, ...
    NonIp,
    /// Truncated or inconsistent headers.
    Malformed,
}

#[inline(always)]
fn ether_type_after_vlans(cursor: &mut Cursor) -> Option<u16> {
    let eth: EthHeader = cursor.read()?;
    let mut ether_type = u16::from_be_bytes(eth.ether_type);
    // Up to two tags (802.1ad outer + 802.1Q inner); unrolled so the verifier sees no loop.
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tag: VlanTag = cursor.read()?;
        ether_type = u16::from_be_bytes(tag.ether_type);
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            let tag: VlanTag = cursor.read()?;
            ether_type = u16::from_be_bytes(tag.ether_type);
        }
    }
    Some(ether_type)
}

/// Find the source address of the frame; with `read_source` false only check the headers
/// (no block list holds anything and volume accounting is off: the address is not needed).
#[inline(always)]
pub fn parse_source(ctx: &XdpContext, read_source: bool) -> Parsed {
    let mut cursor = Cursor::new(ctx);
    let Some(ether_type) = ether_type_after_vlans(&mut cursor) else {
        return Parsed::Malformed;
    };
    match ether_type {
        ETH_P_IPV4 => parse_ipv4(&mut cursor, read_source).map_or(Parsed::Malformed, Parsed::Ip),
        ETH_P_IPV6 => parse_ipv6(&mut cursor, read_source).map_or(Parsed::Malformed, Parsed::Ip),
        _ => Parsed::NonIp,
    }
}

#[inline(always)]
fn parse_ipv4(cursor: &mut Cursor, read_source: bool) -> Option<Source> {
    let head: Ipv4Head = cursor.read()?;
    let ihl = usize::from(head.version_ihl & 0x0f);
    if head.version_ihl >> 4 != 4 || ihl < 5 {
        return None;
    }
    // The options the IHL announces must be in the frame too, or the header is truncated.
    cursor.skip((ihl - 5) * 4)?;
    Some(if read_source {
        Source::V4(head.src)
    } else {
        Source::Unread { ipv6: false }
    })
}

/// Offset of the source address in the IPv6 header.
const IPV6_SRC: usize = 8;
const _: () = assert!(core::mem::offset_of!(Ipv6Head, src) == IPV6_SRC);

#[inline(always)]
fn parse_ipv6(cursor: &mut Cursor, read_source: bool) -> Option<Source> {
    // The whole fixed header must be there; only the version and the source are read.
    let version: u8 = cursor.peek_at(0, size_of::<Ipv6Head>())?;
    if version >> 4 != 6 {
        return None;
    }
    if !read_source {
        return Some(Source::Unread { ipv6: true });
    }
    let s: [u8; 16] = cursor.peek_at(IPV6_SRC, size_of::<Ipv6Head>())?;
    // ::ffff:a.b.c.d, compared as two words rather than ten bytes.
    let high = u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
    let middle = u32::from_be_bytes([s[8], s[9], s[10], s[11]]);
    let mapped = high == 0 && middle == 0x0000_ffff;
    Some(if mapped {
        Source::V6MappedV4([s[12], s[13], s[14], s[15]])
    } else {
        Source::V6(s)
    })
}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
