//! Every shipped ruleset against its sample log (exact scores per address), and the injection
//! corpus: text an attacker controls must never be the address that gets scored.
use std::{collections::BTreeMap, io::Cursor, net::IpAddr, path::Path};

use xdpguard::{
    detect::logs::ruleset::{self, Outcome, apply_all},
    detect::logs::score::ScoringPolicy,
    tools::check::check,
};

fn rulesets_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets")
}

fn scores(ruleset: &str, log: &str) -> (BTreeMap<IpAddr, (i64, Option<u64>)>, u64) {
    let sets = ruleset::load(&rulesets_dir().join(ruleset)).unwrap();
    let policy = ScoringPolicy {
        threshold: 10,
        exclude_local: false,
        ..ScoringPolicy::default()
    };
    let report = check(&sets, Cursor::new(log.as_bytes()), policy, false).unwrap();
    let map = report
        .addresses
        .iter()
        .map(|a| (a.address, (a.score, a.blocked_at_line)))
        .collect();
    (map, report.bad_addresses)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// `samples/NAME.expect`: `ADDRESS SCORE LINE` per scored address (LINE: the sample line whose
/// match took the score over the threshold of 10, or `-`); `#` starts a comment.
fn expected_scores(path: &Path) -> BTreeMap<IpAddr, (i64, Option<u64>)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err} (every ruleset has one)", path.display()));
    let mut out = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [address, score, at] = fields[..] else {
            panic!("{}:{}: want ADDRESS SCORE LINE", path.display(), number + 1);
        };
        let at = (at != "-").then(|| at.parse().unwrap());
        assert!(
            out.insert(ip(address), (score.parse().unwrap(), at))
                .is_none(),
            "{}:{}: {address} twice",
            path.display(),
            number + 1
        );
    }
    out
}

/// The shipped ruleset files (`rulesets/*.toml`), by file stem.
fn shipped_files() -> Vec<String> {
    let mut stems: Vec<String> = std::fs::read_dir(rulesets_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    stems
}

/// Every shipped ruleset against its sample log: exact final scores, and where the threshold
/// (10) was crossed, as `samples/NAME.expect` says. Addresses that appear only in client text
/// are absent on purpose.
#[test]
fn every_sample_scores_exactly() {
    let stems = shipped_files();
    assert!(stems.len() >= 7, "{stems:?}");
    for stem in stems {
        let log = std::fs::read_to_string(rulesets_dir().join(format!("samples/{stem}.log")))
            .unwrap_or_else(|err| panic!("samples/{stem}.log: {err}"));
        let (scores, bad) = scores(&format!("{stem}.toml"), &log);
        let expected = expected_scores(&rulesets_dir().join(format!("samples/{stem}.expect")));
        assert_eq!(scores, expected, "{stem}");
        assert_eq!(bad, 0, "{stem}: matches without a usable address");
    }
}

/// `samples/NAME.inject`: crafted lines in which a field the client controls (a user name, a
/// request, a header) carries 198.51.100.66. It is never scored, in any mode; and the crafted
/// lines reach the ruleset (at least one of them is matched).
#[test]
fn every_injection_corpus_never_scores_the_injected_address() {
    let injected = ip("198.51.100.66");
    for stem in shipped_files() {
        let path = rulesets_dir().join(format!("samples/{stem}.inject"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err} (every ruleset has one)", path.display()));
        let base = ruleset::load(&rulesets_dir().join(format!("{stem}.toml"))).unwrap();
        let mut reached = false;
        for ruleset in &base {
            let modes: Vec<Option<String>> = if ruleset.modes().next().is_none() {
                vec![None]
            } else {
                ruleset.modes().map(|m| Some(m.to_owned())).collect()
            };
            for mode in modes {
                let mut ruleset = ruleset.clone();
                if let Some(mode) = &mode {
                    ruleset.set_mode(mode).unwrap();
                }
                for line in text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                {
                    let (outcome, _) = ruleset.apply_indexed(line);
                    reached |= outcome != Outcome::Skipped;
                    if let Outcome::Scored { address, .. } = outcome {
                        assert_ne!(
                            address, injected,
                            "{stem} ({mode:?}) scored the injected address: {line}"
                        );
                    }
                }
            }
        }
        assert!(reached, "{stem}: no crafted line reaches the ruleset");
    }
}

/// Lines where attacker-controlled text (user names, client versions) carries an address.
/// The scored address must be the real one, or nothing (an ambiguous line).
#[test]
fn sshd_injection_corpus_never_scores_the_injected_address() {
    let sets = ruleset::load(&rulesets_dir().join("sshd.toml")).unwrap();
    let injected = ip("192.0.2.66");
    let real = ip("203.0.113.5");
    let lines = [
        // User name carrying a whole "from ADDR port N ssh2" tail.
        "Nov 22 10:00:01 h sshd[1]: Failed password for invalid user x from 192.0.2.66 port 22 ssh2 from 203.0.113.5 port 51234 ssh2",
        "Nov 22 10:00:01 h sshd[1]: Invalid user x from 192.0.2.66 port 22 from 203.0.113.5 port 4000",
        "Nov 22 10:00:01 h sshd[1]: Connection closed by invalid user a 192.0.2.66 port 1 [preauth] 203.0.113.5 port 3322 [preauth]",
        "Nov 22 10:00:01 h sshd[1]: Failed publickey for a from 192.0.2.66 port 1 ssh2: RSA x from 203.0.113.5 port 2222 ssh2: RSA SHA256:abc",
        // Client version strings are not scored at all.
        "Nov 22 10:00:01 h sshd[1]: Bad protocol version identification 'SSH-2.0-x from 192.0.2.66 port 22 ssh2' from 203.0.113.5 port 1",
        // A reverse-DNS name shaped like an address is not an address.
        "Nov 22 10:00:01 h sshd[1]: Failed password for root from 192.0.2.66.example.net port 22 ssh2",
        // The address must sit where sshd writes it: a line from another program is ignored.
        "Nov 22 10:00:01 h sudo[1]: Failed password for root from 192.0.2.66 port 22 ssh2",
        "Nov 22 10:00:01 h notsshd[1]: Failed password for root from 192.0.2.66 port 22 ssh2",
        // NUL and control bytes inside the user name.
        "Nov 22 10:00:01 h sshd[1]: Failed password for invalid user \x00192.0.2.66\t from 203.0.113.5 port 1 ssh2",
    ];
    for line in lines {
        for (_, outcome, _) in apply_all(&sets, line) {
            if let Outcome::Scored { address, .. } = outcome {
                assert_ne!(address, injected, "scored the injected address: {line}");
                assert_eq!(address, real, "{line}");
            }
        }
    }
    // And a line split by an embedded newline: the second half is not an sshd line.
    let report = check(
        &sets,
        Cursor::new("Nov 22 10:00:01 h sshd[1]: Invalid user a\nFailed password for root from 192.0.2.66 port 22 ssh2\n".as_bytes()),
        ScoringPolicy { exclude_local: false, ..ScoringPolicy::default() },
        false,
    )
    .unwrap();
    assert!(report.addresses.is_empty(), "{:?}", report.addresses);
}

#[test]
fn long_and_invalid_lines_are_counted_not_fatal() {
    let sets = ruleset::load(&rulesets_dir().join("sshd.toml")).unwrap();
    let mut log = Vec::new();
    log.extend_from_slice(
        b"Nov 22 10:00:01 h sshd[1]: Failed password for root from 203.0.113.5 port 1 ssh2\n",
    );
    log.extend_from_slice(&vec![b'a'; 40_000]);
    log.push(b'\n');
    log.extend_from_slice(
        b"Nov 22 10:00:01 h sshd[1]: Failed password for \xff\xfe from 203.0.113.5 port 1 ssh2\n",
    );
    log.extend_from_slice(
        b"Nov 22 10:00:01 h sshd[1]: Failed password for root from 203.0.113.5 port 1 ssh2",
    );
    let policy = ScoringPolicy {
        exclude_local: false,
        ..ScoringPolicy::default()
    };
    let report = check(&sets, Cursor::new(log), policy, false).unwrap();
    assert_eq!(
        (
            report.lines,
            report.truncated_lines,
            report.invalid_utf8_lines
        ),
        (4, 1, 1)
    );
    assert_eq!(report.addresses[0].score, 15);
}

#[test]
fn every_shipped_ruleset_loads() {
    let sets = ruleset::load_dir(&rulesets_dir()).unwrap();
    assert!(sets.iter().any(|s| s.name == "sshd"));
}

#[test]
fn shipped_rulesets_pass_lint() {
    let sets = ruleset::load_dir(&rulesets_dir()).unwrap();
    let findings = xdpguard::tools::lint::lint(&sets);
    assert!(findings.is_empty(), "{findings:#?}");
}

/// The shipped rulesets take a small part of the default limits: all of them compile within
/// a quarter of the default budget (32 of 128 MiB), half the rules (1024 of 2048) and half
/// the files (64 of 128).
#[test]
fn shipped_rulesets_fit_the_default_limits_many_times_over() {
    let limits = ruleset::RulesetLimits {
        max_files: 64,
        max_rules: 1024,
        max_compiled_bytes: 32 << 20,
        ..ruleset::RulesetLimits::default()
    };
    let sets = ruleset::load_paths(&[rulesets_dir()], &limits).unwrap();
    assert!(sets.len() >= shipped_files().len());
}

/// The file limit counts every path given, directories and files together.
#[test]
fn the_file_limit_counts_across_paths() {
    let shipped = shipped_files().len();
    let limits = ruleset::RulesetLimits {
        max_files: u32::try_from(shipped).unwrap(),
        ..ruleset::RulesetLimits::default()
    };
    ruleset::load_paths(&[rulesets_dir()], &limits).unwrap();
    let err = ruleset::load_paths(&[rulesets_dir(), rulesets_dir().join("sshd.toml")], &limits)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ruleset::RulesetError::Limit {
                limit: ruleset::Limit::Files,
                ..
            }
        ),
        "{err}"
    );
}

/// The two shapes found resolved by position before: a user name that carries nginx's whole
/// fixed text around a made-up client, and sshd's "from A port 1 ssh2: from B port 2 ssh2".
/// Neither address is scored; both lines count as ambiguous, and `check` lists them.
#[test]
fn the_lines_that_name_two_clients_are_ambiguous_not_scored() {
    for (ruleset, line) in [
        (
            "nginx.toml",
            r#"2012/04/09 11:53:36 [error] 2865#0: *66647 user "xyz": password mismatch, client: 198.51.100.66, server: www.myhost.com, request: "GET / HTTP/1.1", host: "www.myhost.com"": password mismatch, client: 203.0.113.2, server: www.myhost.com, request: "GET / HTTP/1.1", host: "www.myhost.com""#,
        ),
        (
            "sshd.toml",
            "Nov 11 08:04:52 redbamboo sshd[2737]: Failed password for invalid user test from 198.51.100.66 port 58946 ssh2: from 203.0.113.2 port 55555 ssh2",
        ),
    ] {
        let sets = ruleset::load(&rulesets_dir().join(ruleset)).unwrap();
        let policy = ScoringPolicy {
            exclude_local: false,
            ..ScoringPolicy::default()
        };
        let report = check(&sets, Cursor::new(line.as_bytes()), policy, false).unwrap();
        assert!(
            report.addresses.is_empty(),
            "{ruleset}: {:?}",
            report.addresses
        );
        assert_eq!(report.ambiguous, 1, "{ruleset}");
        assert_eq!(
            (
                report.ambiguous_lines[0].first.as_str(),
                report.ambiguous_lines[0].last.as_str()
            ),
            ("198.51.100.66", "203.0.113.2"),
            "{ruleset}"
        );
    }
}

/// The speed-ups (one first pass over all whole-line rulesets, a program's line that no rule
/// can take left before any variable is made, the first-byte table) change no outcome: every
/// sample, injection and (when installed) fail2ban test log line, through all shipped
/// rulesets at once, scores the same as through `explain`, which takes none of them.
#[test]
fn the_shortcuts_change_no_outcome() {
    use xdpguard::detect::logs::{
        correlate::{SessionLimits, Sessions},
        prefix,
        ruleset::{FirstPass, Memory, RulesetLimits, apply_all_passed},
    };
    let sets = ruleset::load_dir(&rulesets_dir()).unwrap();
    let all: Vec<&ruleset::Ruleset> = sets.iter().collect();
    let pass = FirstPass::new(all.iter().copied(), &RulesetLimits::default());
    assert!(
        pass.len() >= 5,
        "the web rulesets share the first pass: {}",
        pass.len()
    );
    let mut logs: Vec<std::path::PathBuf> = std::fs::read_dir(rulesets_dir().join("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log" || e == "inject"))
        .collect();
    let fail2ban = Path::new("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs");
    if let Ok(dir) = std::fs::read_dir(fail2ban) {
        logs.extend(dir.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    logs.sort();
    let (mut lines, mut scored) = (0, 0);
    for log in &logs {
        let Ok(text) = std::fs::read(log) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let mut fast = Sessions::new(SessionLimits::default());
        let mut slow = Sessions::new(SessionLimits::default());
        for (number, line) in text.lines().enumerate() {
            let now_ms = number as u64 * 1000;
            let quick: Vec<(String, Outcome)> =
                apply_all_passed(&all, &pass, line, Some(&mut fast), now_ms)
                    .into_iter()
                    .map(|(r, o, _)| (r.name.clone(), o))
                    .collect();
            let parsed = prefix::parse(line);
            let mut plain = Vec::new();
            for ruleset in &sets {
                let memory = Memory {
                    sessions: &mut slow,
                    now_ms,
                };
                let (outcome, _, _) = ruleset.explain(line, Some(&parsed), Some(memory));
                if outcome == Outcome::Skipped {
                    continue;
                }
                plain.push((ruleset.name.clone(), outcome));
                if ruleset.last {
                    break;
                }
            }
            assert_eq!(quick, plain, "{}:{}: {line}", log.display(), number + 1);
            lines += 1;
            scored += quick
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Scored { .. }))
                .count();
        }
    }
    println!(
        "{} logs, {lines} lines, {scored} scored; {} rulesets in the first pass",
        logs.len(),
        pass.len()
    );
    assert!(
        lines > 1000 && scored > 300,
        "{lines} lines, {scored} scored"
    );
}
