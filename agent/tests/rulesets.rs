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

/// (address, final score, line that took it over the threshold).
type Expected = (&'static str, i64, Option<u64>);

/// Every shipped ruleset against its sample log: exact final scores, and where the threshold
/// (10) was crossed. Addresses that appear only in client text are absent on purpose.
#[test]
fn every_sample_scores_exactly() {
    let cases: [(&str, &str, &[Expected]); 7] = [
        (
            "sshd.toml",
            "samples/sshd.log",
            // 2 failed passwords (5 each), then too many attempts (5): over 10 at line 3;
            // invalid user 3 + failed password 5 + preauth close 2: at the threshold, not over;
            // failed publickey 2 + preauth disconnect 2 (sshd-session, ISO timestamps).
            &[
                ("203.0.113.5", 15, Some(3)),
                ("203.0.113.6", 10, None),
                ("2001:db8:bad::7", 4, None),
                ("203.0.113.12", 2, None),
                ("203.0.113.13", 2, None),
                ("203.0.113.14", 3, None),
            ],
        ),
        (
            "rsyncd.toml",
            "samples/rsyncd.log",
            // One module connect; two unknown modules (4 each) and a failed password (5):
            // over 10 at line 7; a denied module; the syslog form.
            &[
                ("198.51.100.20", 1, None),
                ("203.0.113.9", 13, Some(7)),
                ("2001:db8:bad::20", 4, None),
                ("203.0.113.44", 5, None),
            ],
        ),
        (
            "nginx.toml",
            "samples/nginx.log",
            // wp-login, .env, xmlrpc under a directory: 3 probes of 4; a 401 (3), a phpMyAdmin
            // probe (4, any case), the error log's password mismatch (3); no password given (3)
            // and an unknown user whose name smuggles another address (3). 203.0.113.99 is
            // only ever client text.
            &[
                ("203.0.113.5", 12, Some(5)),
                ("203.0.113.6", 10, None),
                ("2001:db8:bad::8", 4, None),
                ("203.0.113.7", 6, None),
            ],
        ),
        (
            "apache.toml",
            "samples/apache.log",
            // Three auth failures (4 each) over 10 at line 3; the client text's addresses are
            // never scored; IPv6 client with its port; a shellshock-style CGI probe.
            &[
                ("203.0.113.5", 12, Some(3)),
                ("2001:db8:bad::9", 2, None),
                ("203.0.113.6", 4, None),
            ],
        ),
        (
            "postfix.toml",
            "samples/postfix.log",
            &[
                ("203.0.113.5", 10, None),
                ("203.0.113.6", 10, None),
                ("2001:db8:bad::7", 4, None),
            ],
        ),
        (
            "dovecot.toml",
            "samples/dovecot.log",
            // The third line's user name carries a whole fake tail: the real one is last.
            &[("203.0.113.8", 10, None), ("2001:db8:bad::8", 5, None)],
        ),
        (
            "vsftpd.toml",
            "samples/vsftpd.log",
            // IPv4-mapped IPv6 is the IPv4 address.
            &[("203.0.113.9", 15, Some(4)), ("2001:db8:bad::10", 5, None)],
        ),
    ];
    for (ruleset, sample, expected) in cases {
        let log = std::fs::read_to_string(rulesets_dir().join(sample)).unwrap();
        let (scores, bad) = scores(ruleset, &log);
        let expected: BTreeMap<IpAddr, (i64, Option<u64>)> =
            expected.iter().map(|(a, s, l)| (ip(a), (*s, *l))).collect();
        assert_eq!(scores, expected, "{ruleset}");
        assert_eq!(bad, 0, "{ruleset}");
    }
}

/// Lines where attacker-controlled text (user names, client versions) carries an address.
/// The scored address must be the real one, or nothing.
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
/// 4 MiB (the default budget is 128 MiB) and 16 files.
#[test]
fn shipped_rulesets_fit_the_default_limits_many_times_over() {
    let limits = ruleset::RulesetLimits {
        max_files: 16,
        max_rules: 128,
        max_compiled_bytes: 4 << 20,
        ..ruleset::RulesetLimits::default()
    };
    let sets = ruleset::load_paths(&[rulesets_dir()], &limits).unwrap();
    assert!(sets.len() >= 7);
}

/// The file limit counts every path given, directories and files together.
#[test]
fn the_file_limit_counts_across_paths() {
    let limits = ruleset::RulesetLimits {
        max_files: 7,
        ..ruleset::RulesetLimits::default()
    };
    let shipped = std::fs::read_dir(rulesets_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(shipped, 7, "update the limit above");
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
