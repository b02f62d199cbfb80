//! The last lines that scored each address, handed to the owner with its block (`explain`
//! shows them). Bounded three ways: lines per address, bytes per line, and addresses (least
//! recently scored go first), so a flood of sources costs at most a few megabytes.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
};

use crate::enforce::owner::{MAX_EVIDENCE_LINE_BYTES, MAX_EVIDENCE_LINES};

/// Addresses whose lines are kept at most.
pub const MAX_ADDRESSES: usize = 10_000;

pub struct Evidence {
    max_addresses: usize,
    lines: HashMap<IpAddr, (VecDeque<String>, u64)>,
    /// seq → address, least recently scored first.
    order: BTreeMap<u64, IpAddr>,
    next_seq: u64,
}

impl Default for Evidence {
    fn default() -> Self {
        Self::new(MAX_ADDRESSES)
    }
}

impl Evidence {
    pub fn new(max_addresses: usize) -> Self {
        Self {
            max_addresses,
            lines: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// `line` scored `address`.
    pub fn add(&mut self, address: IpAddr, line: &str) {
        if self.max_addresses == 0 {
            return;
        }
        let mut cut = line.len().min(MAX_EVIDENCE_LINE_BYTES);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = match self.lines.get_mut(&address) {
            Some(entry) => {
                let _: Option<IpAddr> = self.order.remove(&entry.1);
                entry
            }
            None => {
                if self.lines.len() >= self.max_addresses
                    && let Some((_, oldest)) = self.order.pop_first()
                {
                    let _ = self.lines.remove(&oldest);
                }
                self.lines.entry(address).or_default()
            }
        };
        entry.1 = seq;
        if entry.0.len() == MAX_EVIDENCE_LINES {
            let _: Option<String> = entry.0.pop_front();
        }
        entry.0.push_back(line[..cut].to_owned());
        let _: Option<IpAddr> = self.order.insert(seq, address);
    }

    /// The lines kept for `address`, oldest first.
    pub fn lines(&self, address: IpAddr) -> Vec<String> {
        self.lines
            .get(&address)
            .map(|(lines, _)| lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn keeps_the_last_lines_per_address_cut_and_bounded_by_addresses() {
        let mut evidence = Evidence::new(2);
        for i in 0..7 {
            evidence.add(ip("203.0.113.1"), &format!("a{i}"));
        }
        assert_eq!(
            evidence.lines(ip("203.0.113.1")),
            ["a2", "a3", "a4", "a5", "a6"]
        );
        evidence.add(ip("203.0.113.2"), &"ü".repeat(MAX_EVIDENCE_LINE_BYTES));
        let long = evidence.lines(ip("203.0.113.2"));
        assert!(long[0].len() <= MAX_EVIDENCE_LINE_BYTES && long[0].starts_with('ü'));
        // A third address pushes out the least recently scored (203.0.113.1).
        evidence.add(ip("203.0.113.3"), "c");
        assert_eq!(evidence.len(), 2);
        assert!(evidence.lines(ip("203.0.113.1")).is_empty());
        assert_eq!(evidence.lines(ip("203.0.113.3")), ["c"]);
    }
}
