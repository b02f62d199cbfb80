//! IP prefixes as the block and allow lists hold them.
//!
//! Two normalisations happen here, once, so every list sees the same key for the same network:
//! - host bits below the prefix length are cleared (`192.0.2.77/24` becomes `192.0.2.0/24`);
//!   [`Prefix::parse`] reports whether it did, so a CLI can say so;
//! - IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, `::ffff:192.0.2.0/120`) become the IPv4
//!   address or prefix, because the XDP program looks mapped sources up in the IPv4 lists.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// A network: an address with all host bits zero, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("{input:?} is not an IP address or CIDR prefix")]
    NotAnAddress { input: String },
    #[error("prefix length in {input:?} is not a number from 0 to {max}")]
    BadLength { input: String, max: u8 },
}

impl Prefix {
    /// The network `addr/len`, host bits cleared. IPv4-mapped IPv6 becomes IPv4.
    ///
    /// # Errors
    /// When `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let (addr, len) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if len >= 96 => (IpAddr::V4(v4), len - 96),
                _ => (addr, len),
            },
            IpAddr::V4(_) => (addr, len),
        };
        let max = max_len(addr);
        if len > max {
            return Err(PrefixError::BadLength {
                input: format!("{addr}/{len}"),
                max,
            });
        }
        Ok(Self {
            addr: mask(addr, len),
            len,
        })
    }

    /// A single host (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            IpAddr::V4(_) => addr,
        };
        Self {
            addr,
            len: max_len(addr),
        }
    }

    /// Parse `ADDR` or `ADDR/LEN`. Returns the prefix and whether host bits had to be cleared.
    ///
    /// # Errors
    /// When the text is not an address, or the length is not a number that fits the family.
    pub fn parse(input: &str) -> Result<(Self, bool), PrefixError> {
        let input = input.trim();
        let not_an_address = || PrefixError::NotAnAddress {
            input: input.to_owned(),
        };
        let (addr_text, len_text) = match input.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (input, None),
        };
        let addr = IpAddr::from_str(addr_text).map_err(|_| not_an_address())?;
        let Some(len_text) = len_text else {
            return Ok((Self::host(addr), false));
        };
        let max = max_len(addr);
        let len = len_text
            .parse::<u8>()
            .ok()
            .filter(|len| *len <= max && len_text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| PrefixError::BadLength {
                input: input.to_owned(),
                max,
            })?;
        let prefix = Self::new(addr, len)?;
        let unmapped_addr = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && len >= 96 => {
                IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
            }
            _ => addr,
        };
        Ok((prefix, prefix.addr != unmapped_addr))
    }

    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    pub const fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// A single address, not a network.
    pub const fn is_host(&self) -> bool {
        self.len
            == match self.addr {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            }
    }

    /// Whether `addr` is inside this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = Self::host(addr).addr;
        addr.is_ipv4() == self.addr.is_ipv4() && mask(addr, self.len) == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input).map(|(prefix, _)| prefix)
    }
}

const fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared_and_reported() {
        let (prefix, cleared) = Prefix::parse("198.51.100.77/24").unwrap();
        assert_eq!(prefix.to_string(), "198.51.100.0/24");
        assert!(cleared);
        let (prefix, cleared) = Prefix::parse("2001:db8::1/32").unwrap();
        assert_eq!(prefix.to_string(), "2001:db8::/32");
        assert!(cleared);
        let (_, cleared) = Prefix::parse("198.51.100.0/24").unwrap();
        assert!(!cleared);
    }

    #[test]
    fn ipv4_mapped_ipv6_becomes_ipv4() {
        assert_eq!(
            Prefix::parse("::ffff:203.0.113.9").unwrap(),
            (Prefix::parse("203.0.113.9").unwrap().0, false)
        );
        let (prefix, cleared) = Prefix::parse("::ffff:203.0.113.0/120").unwrap();
        assert_eq!(prefix.to_string(), "203.0.113.0/24");
        assert!(!cleared);
        // Shorter than /96 is not a mapped IPv4 network: it stays IPv6.
        let prefix: Prefix = "::ffff:203.0.113.0/64".parse().unwrap();
        assert!(!prefix.is_ipv4());
    }

    #[test]
    fn bad_input_names_the_value() {
        for input in [
            "",
            "hello",
            "198.51.100.1/",
            "198.51.100.1/33",
            "2001:db8::/129",
            "1.2.3.4/+8",
            "1.2.3.4/-1",
        ] {
            let err = Prefix::parse(input).unwrap_err();
            assert!(err.to_string().contains(input.trim()), "{input:?}: {err}");
        }
    }

    #[test]
    fn host_and_contains() {
        let host = Prefix::host("203.0.113.5".parse().unwrap());
        assert!(host.is_host());
        assert_eq!(host.to_string(), "203.0.113.5/32");
        let net: Prefix = "203.0.113.0/24".parse().unwrap();
        assert!(net.contains("203.0.113.200".parse().unwrap()));
        assert!(net.contains("::ffff:203.0.113.200".parse().unwrap()));
        assert!(!net.contains("198.51.100.1".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let zero: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(zero.contains("198.51.100.1".parse().unwrap()));
    }
}
