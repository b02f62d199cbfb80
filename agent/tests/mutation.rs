//! A seeded mutation loop over the four inputs the daemon takes from outside (flow datagrams,
//! ruleset files, the configuration, control lines): real seeds (`fuzzing/seeds.rs`) mutated
//! by byte flips, inserts, deletions, truncation, splices of other seeds and tokens of the
//! input's syntax, each checked by `fuzzing/checks.rs` (the same checks the `cargo xtask fuzz`
//! targets run). Deterministic: a failure prints the seed and iteration to reproduce it with
//! `XDPGUARD_MUTATION_SEED=<seed> cargo test -p xdpguard --test mutation`. A few seconds.
use std::panic::{AssertUnwindSafe, catch_unwind};

use xdpguard::{
    api::control::{Request, proto},
    detect::traffic::flow::{ErrorKind, FlowDecoder},
};

#[path = "fuzzing/checks.rs"]
mod checks;
#[path = "fuzzing/seeds.rs"]
mod seeds;

use checks::{ConfigOutcome, RulesetOutcome};

const DEFAULT_SEED: u64 = 0x00c0_ffee_d00d_f00d;

/// xorshift64: no dependency, and the same numbers on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// 0..n (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// The seed of this run: `XDPGUARD_MUTATION_SEED` (decimal or 0x-hex) or the fixed default.
fn run_seed() -> u64 {
    std::env::var("XDPGUARD_MUTATION_SEED")
        .ok()
        .and_then(|text| match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        })
        .unwrap_or(DEFAULT_SEED)
}

/// Pieces of TOML, JSON and regex syntax, and values at the edges of their types.
const TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\n",
    "#",
    ",",
    ".",
    ":",
    "\"\"\"",
    "'''",
    "\\",
    "\\u{",
    "\\uD800",
    "null",
    "true",
    "-1",
    "0",
    "4294967296",
    "18446744073709551616",
    "9223372036854775808",
    "1e999",
    "nan",
    "inf",
    "1970-01-01T00:00:00Z",
    "é",
    "\u{10ffff}",
    "🦀",
    "\u{0}",
    "(?P<address>",
    ".*",
    "$",
    "\\d{1000}",
    "(a*)*",
    "\"op\"",
    "\"result\"",
    "\"protocol\":",
    "\"prefixes\":[",
    "[[ruleset]]",
    "[[interfaces]]",
    "[volume.flow]",
    "score = ",
    "name = ",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>], text: bool) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => input[rng.below(len)] ^= 1 << rng.below(8),
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = [0, 0xff, 0x7f, 0x80, rng.byte()][rng.below(5)];
            }
            2 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..=rng.below(8)).map(|_| rng.byte()).collect();
                let _ = input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                let _ = input.drain(at..end);
            }
            4 => input.truncate(rng.below(len + 1)),
            5 => {
                // A piece of another seed, inserted or written over.
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let piece = &other[from..(from + 1 + rng.below(64)).min(other.len())];
                let at = rng.below(len + 1);
                let end = if rng.below(2) == 0 {
                    at
                } else {
                    (at + piece.len()).min(len)
                };
                let _ = input.splice(at..end, piece.iter().copied());
            }
            6 if text => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let at = rng.below(len + 1);
                let _ = input.splice(at..at, token.iter().copied());
            }
            6 if len >= 2 => {
                // A length-like field: small, at the edge, or anything.
                let at = rng.below(len - 1);
                let value: u16 = match rng.below(4) {
                    0 => u16::try_from(rng.below(8)).unwrap(),
                    1 => u16::MAX,
                    2 => u16::MAX - u16::try_from(rng.below(4)).unwrap(),
                    _ => u16::from_le_bytes([rng.byte(), rng.byte()]),
                };
                input[at..at + 2].copy_from_slice(&value.to_be_bytes());
            }
            7 if len > 0 => {
                // A piece of itself again (repeated tables, sets, records).
                let from = rng.below(len);
                let piece = input[from..(from + 1 + rng.below(128)).min(len)].to_vec();
                let at = rng.below(len + 1);
                let _ = input.splice(at..at, piece);
            }
            _ => {
                // Two seeds spliced: the head of this one, the tail of another.
                let other = &seeds[rng.below(seeds.len())];
                input.truncate(rng.below(len + 1));
                input.extend_from_slice(&other[rng.below(other.len() + 1)..]);
            }
        }
    }
}

/// The input, readable, for a failure message.
fn shown(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(&input[..input.len().min(4096)]);
    format!("{} bytes: {text:?}", input.len())
}

/// Mutates `seeds` `iterations` times, each mutated from a seed (a quarter of them from the
/// last mutant instead, so mutations stack), and runs `check` on each, which says whether the
/// input was accepted. Both must happen: mutants that are all refused (or all accepted) would
/// test one path only.
fn mutation_loop(
    name: &str,
    seeds: &[Vec<u8>],
    iterations: usize,
    text: bool,
    check: impl Fn(&[u8]) -> bool,
) {
    let seed = run_seed()
        ^ name
            .bytes()
            .fold(0u64, |hash, b| hash.rotate_left(5) ^ u64::from(b));
    let mut rng = Rng::new(seed);
    let mut input = Vec::new();
    let mut accepted = 0;
    for iteration in 0..iterations {
        if input.is_empty() || rng.below(4) != 0 {
            input.clone_from(&seeds[rng.below(seeds.len())]);
        }
        mutate(&mut rng, &mut input, seeds, text);
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(_) => panic!(
                "{name}: iteration {iteration} of run seed {:#x} (XDPGUARD_MUTATION_SEED) failed on {}",
                run_seed(),
                shown(&input)
            ),
        }
    }
    eprintln!(
        "{name}: {iterations} mutants of run seed {:#x}, {accepted} accepted",
        run_seed()
    );
    assert!(
        (1..iterations).contains(&accepted),
        "{name}: {accepted} of {iterations} accepted"
    );
}

/// Accepted: gave records.
fn flow_check(input: &[u8]) -> bool {
    checks::flow(&checks::flow_datagrams(input)) > 0
}

#[test]
fn mutated_flow_datagrams() {
    let seeds = seeds::flow_seeds();
    for seed in &seeds {
        flow_check(seed);
    }
    mutation_loop("flow_decode", &seeds, 20_000, false, flow_check);
}

fn ruleset_check(input: &[u8]) -> bool {
    matches!(checks::ruleset(input), RulesetOutcome::Parsed(_))
}

#[test]
fn mutated_rulesets() {
    let seeds: Vec<Vec<u8>> = seeds::ruleset_seeds()
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert!(seeds.len() >= 5, "the shipped rulesets");
    for seed in &seeds {
        assert!(matches!(checks::ruleset(seed), RulesetOutcome::Parsed(n) if n > 0));
    }
    mutation_loop("ruleset_load", &seeds, 400, true, ruleset_check);
}

fn config_check(input: &[u8]) -> bool {
    matches!(checks::config(input), ConfigOutcome::Parsed)
}

#[test]
fn mutated_configs() {
    let seeds: Vec<Vec<u8>> = seeds::config_seeds()
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    for seed in &seeds {
        assert!(
            matches!(checks::config(seed), ConfigOutcome::Parsed),
            "{}",
            shown(seed)
        );
    }
    mutation_loop("config_load", &seeds, 1_500, true, config_check);
}

/// A valid configuration cut anywhere parses or says where (`checks::config` panics on an
/// error naming no place); cut inside a table it needs, it is refused, not taken with a
/// default.
#[test]
fn truncated_configs_parse_or_name_a_line() {
    let mut refused = 0;
    for (name, seed) in seeds::config_seeds() {
        let text = String::from_utf8(seed).unwrap();
        let mut cuts: Vec<usize> = text.match_indices('\n').map(|(at, _)| at).collect();
        // And inside lines: every 31st byte that is a character boundary.
        cuts.extend(
            (0..text.len())
                .step_by(31)
                .filter(|&at| text.is_char_boundary(at)),
        );
        for cut in cuts {
            let cut_text = &text.as_bytes()[..cut];
            match catch_unwind(|| checks::config(cut_text)) {
                Ok(ConfigOutcome::Refused(_)) => refused += 1,
                Ok(_) => {}
                Err(_) => panic!("{name} cut at byte {cut}: {}", shown(cut_text)),
            }
        }
        // Without its interfaces, the configuration is refused (interfaces are required).
        let head = &text[..text.find("[[interfaces]]").unwrap()];
        assert!(
            matches!(checks::config(head.as_bytes()), ConfigOutcome::Refused(_)),
            "{name} without interfaces"
        );
    }
    assert!(refused > 0);
}

/// Cut at every third line (each cut compiles the regexes before it: debug builds are slow
/// at that), a shipped ruleset parses (fewer rules) or the error names the file and an
/// existing line (`checks::ruleset` panics otherwise).
#[test]
fn truncated_rulesets_parse_or_name_the_file() {
    for (name, seed) in seeds::ruleset_seeds() {
        let text = String::from_utf8(seed).unwrap();
        for (cut, _) in text.match_indices('\n').step_by(3) {
            if catch_unwind(|| checks::ruleset(&text.as_bytes()[..cut])).is_err() {
                panic!("{name} cut at byte {cut}");
            }
        }
    }
}

/// Accepted: a request or an answer.
fn control_check(input: &[u8]) -> bool {
    let outcome = checks::control(input);
    outcome.request || outcome.answer
}

#[test]
fn mutated_control_lines() {
    let mut seeds = seeds::control_seeds();
    // And what this build's CLI writes.
    for request in [
        Request::Status,
        Request::Top,
        Request::List {
            source: None,
            covering: Some("203.0.113.5".into()),
        },
        Request::Unblock {
            prefixes: vec!["203.0.113.7".into()],
        },
    ] {
        seeds.push(proto::encode(&request).unwrap());
    }
    for seed in &seeds {
        let outcome = checks::control(seed);
        assert!(
            outcome.object && (outcome.request != outcome.answer),
            "a seed that is not a request or an answer: {}",
            shown(seed)
        );
        // Every cut before the closing brace is not JSON: refused, never half a message.
        let end = seed.iter().rposition(|&b| b == b'}').unwrap();
        for cut in 0..end {
            assert!(
                !checks::control(&seed[..cut]).object,
                "{}",
                shown(&seed[..cut])
            );
        }
    }
    mutation_loop("control_proto", &seeds, 20_000, true, control_check);
}

/// Set boundaries of a NetFlow v9 or IPFIX datagram: where a cut leaves a shorter valid one.
fn set_boundaries(datagram: &[u8]) -> Vec<usize> {
    let header = if datagram[1] == 9 { 20 } else { 16 };
    let mut at = header;
    let mut out = vec![at];
    while at + 4 <= datagram.len() {
        at += usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        out.push(at);
    }
    out
}

/// A datagram cut anywhere but between its sets is counted as an error, never decoded as
/// if it were whole (IPFIX: any cut, its header gives the length).
#[test]
fn truncated_datagrams_are_errors() {
    let datagrams = seeds::flow_datagram_seeds();
    for (index, datagram) in datagrams.iter().enumerate() {
        let ipfix = datagram[1] == 10;
        let boundaries = if ipfix {
            Vec::new()
        } else {
            set_boundaries(datagram)
        };
        for cut in 0..datagram.len() {
            if boundaries.contains(&cut) {
                continue;
            }
            // A decoder that knows every template, so the data datagrams are decoded too.
            let mut decoder = FlowDecoder::new(checks::flow_settings());
            let exporter = "198.51.100.9:2055".parse().unwrap();
            for template in &datagrams {
                let _ = decoder.decode(exporter, template, 0, |_| {});
            }
            let summary = decoder.decode(exporter, &datagram[..cut], 0, |_| {});
            assert!(
                summary.errors.total() > 0,
                "seed {index} cut at {cut} of {}: {summary:?}",
                datagram.len()
            );
            assert_eq!(summary.errors.get(ErrorKind::TooMany), 0);
        }
    }
}
