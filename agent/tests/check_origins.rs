//! `xdpguard check --origins DUMP`: every address gets its origin AS and announced prefix in
//! `--json` (left out when unknown), the blocked ones are counted per origin, and a bad dump
//! is an error naming the file and line. Root-free.
use std::{path::PathBuf, process::Command};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "xdpguard-check-origins-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sshd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rulesets/sshd.toml")
}

/// Five failed passwords from each of two addresses (both over the threshold), one from an
/// address no dump announces.
fn write_log(dir: &std::path::Path) -> PathBuf {
    let mut log = String::new();
    for (pid, address) in [(10, "12.34.56.7"), (20, "12.34.57.8")] {
        for i in 0..5 {
            log.push_str(&format!(
                "Jan  5 01:00:{:02} h sshd[{}]: Failed password for root from {address} port 22 ssh2\n",
                pid + i,
                pid + i
            ));
        }
    }
    log.push_str(
        "Jan  5 01:00:40 h sshd[40]: Failed password for root from 5.6.7.8 port 22 ssh2\n",
    );
    let path = dir.join("auth.log");
    std::fs::write(&path, log).unwrap();
    path
}

fn check(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xdpguard"))
        .arg("check")
        .arg("--ruleset")
        .arg(sshd())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_names_origin_and_announced_prefix_per_address() {
    let dir = scratch("json");
    let dump = dir.join("dump.txt");
    std::fs::write(
        &dump,
        "% RIS whois dump\n64500\t12.34.56.0/24\t50\n{64501,64502}\t12.34.0.0/16\t50\n",
    )
    .unwrap();
    let log = write_log(&dir);
    let output = check(&[
        "--origins".as_ref(),
        dump.as_os_str(),
        "--json".as_ref(),
        log.as_os_str(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let address = |text: &str| {
        report["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["address"] == text)
            .unwrap_or_else(|| panic!("{text} in {report}"))
            .clone()
    };
    let first = address("12.34.56.7");
    assert_eq!(first["origin"], "AS64500");
    assert_eq!(first["announced"], "12.34.56.0/24");
    assert!(first["blocked_at_line"].is_u64());
    let second = address("12.34.57.8");
    assert_eq!(second["origin"], "{AS64501,AS64502}");
    assert_eq!(second["announced"], "12.34.0.0/16");
    let unknown = address("5.6.7.8");
    assert!(unknown.get("origin").is_none() && unknown.get("announced").is_none());
    let by_origin = &report["blocked_by_origin"];
    assert_eq!(
        by_origin["top"],
        serde_json::json!([
            { "origin": "AS64500", "addresses": 1 },
            { "origin": "{AS64501,AS64502}", "addresses": 1 },
        ])
    );
    assert_eq!(by_origin["not_announced"], 0);

    // With --config and no --origins: the configuration's [origins] files.
    let config = dir.join("xdpguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[interfaces]]\nname = \"eth0\"\n[origins]\nfiles = [\"{}\"]\n",
            dump.display()
        ),
    )
    .unwrap();
    let output = check(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--json".as_ref(),
        log.as_os_str(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["blocked_by_origin"]["top"][0]["origin"], "AS64500");

    // Without a dump: no origin fields, no summary.
    let output = check(&["--json".as_ref(), log.as_os_str()]);
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report.get("blocked_by_origin").is_none());
    assert!(report["addresses"][0].get("origin").is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_dump_is_an_error_naming_file_and_line() {
    let dir = scratch("bad");
    let dump = dir.join("broken.txt");
    let mut text = "64500\t12.34.56.0/24\t50\n".to_owned();
    for i in 0..12 {
        text.push_str(&format!("not a row {i}\n"));
    }
    std::fs::write(&dump, text).unwrap();
    let log = write_log(&dir);
    let output = check(&["--origins".as_ref(), dump.as_os_str(), log.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}: 12 malformed lines of 13", dump.display()))
            && stderr.contains("the first, line 2:"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
