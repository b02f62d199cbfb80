//! The Debian package `cargo xtask deb` builds (`XDPGUARD_DEB` names it; `cargo xtask test`
//! builds it first): lintian has nothing to say at warning level or above, and the package
//! installs into a scratch root with dpkg, works there, is verified by systemd, keeps a changed
//! conffile over a reinstall, and leaves what it should on remove and on purge.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A scratch root with an empty dpkg database; removed on drop.
struct ScratchRoot(PathBuf);

impl ScratchRoot {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("xdpguard-deb-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
            std::fs::write(root.join(file), "").unwrap();
        }
        Self(root)
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.0.join(inside.trim_start_matches('/'))
    }

    /// dpkg on this root. The maintainer scripts run outside it, with `DPKG_ROOT` set (they
    /// then touch no systemd and no pins of the host); the libc the package depends on is the
    /// host's, not in this database.
    fn dpkg(&self, args: &[&str]) -> Output {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", self.0.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--force-confold",
                "--log=/dev/null",
            ])
            .args(args)
            .output()
            .expect("dpkg");
        assert!(
            out.status.success(),
            "dpkg {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{}: {err}", Path::new(program).display()))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn deb() -> PathBuf {
    let deb = std::env::var_os("XDPGUARD_DEB")
        .map(PathBuf::from)
        .expect("XDPGUARD_DEB: the package to test (`cargo xtask test` builds it)");
    assert!(deb.is_file(), "{} is not a file", deb.display());
    deb
}

/// The names under `dir`, files only.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
#[ignore = "needs root, dpkg and lintian: run by `cargo xtask test`"]
fn lintian_finds_no_errors_or_warnings() {
    let out = run(
        "lintian",
        &["--fail-on", "error,warning", deb().to_str().unwrap()],
    );
    let said = text(&out);
    assert!(out.status.success(), "lintian:\n{said}");
    let tags: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(tags.is_empty(), "{tags:?}");
}

#[test]
#[ignore = "needs root, dpkg and lintian: run by `cargo xtask test`"]
fn installs_works_upgrades_removes_and_purges_in_a_scratch_root() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let root = ScratchRoot::new();
    let deb = deb();
    let said = text(&root.dpkg(&["-i", deb.to_str().unwrap()]));
    assert!(said.contains("attaches to no interface"), "{said}");

    // The files, where Debian puts them.
    let listed: BTreeSet<String> = String::from_utf8_lossy(&root.dpkg(&["-L", "xdpguard"]).stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    for path in [
        "/usr/sbin/xdpguard",
        "/lib/systemd/system/xdpguard.service",
        "/etc/xdpguard/xdpguard.toml",
        "/etc/xdpguard/conf.d",
        "/etc/xdpguard/rulesets.d",
        "/usr/share/man/man8/xdpguard.8.gz",
        "/usr/share/bash-completion/completions/xdpguard",
        "/usr/share/zsh/vendor-completions/_xdpguard",
        "/usr/share/fish/vendor_completions.d/xdpguard.fish",
        "/usr/share/doc/xdpguard/README.md",
        "/usr/share/doc/xdpguard/ARCHITECTURE.md",
        "/usr/share/doc/xdpguard/copyright",
        "/usr/share/doc/xdpguard/changelog.gz",
        "/usr/share/doc/xdpguard/examples/xdpguard.toml",
        "/usr/share/doc/xdpguard/examples/grafana/xdpguard.json",
        "/usr/share/doc/xdpguard/examples/prometheus/xdpguard-rules.yml",
    ] {
        assert!(listed.contains(path), "{path} is not in the package");
    }
    let shipped: BTreeSet<String> = names(&workspace.join("rulesets"))
        .into_iter()
        .filter(|n| n.ends_with(".toml"))
        .collect();
    assert!(!shipped.is_empty());
    assert_eq!(names(&root.path("/usr/share/xdpguard/rulesets")), shipped);
    let conffiles = run(
        "dpkg-query",
        &[
            &format!("--admindir={}", root.path("/var/lib/dpkg").display()),
            "-W",
            "-f=${Conffiles}",
            "xdpguard",
        ],
    );
    assert!(
        text(&conffiles).contains("/etc/xdpguard/xdpguard.toml"),
        "{}",
        text(&conffiles)
    );
    assert_eq!(
        std::fs::read_to_string(root.path("/etc/xdpguard/xdpguard.toml")).unwrap(),
        std::fs::read_to_string(workspace.join("packaging/xdpguard.toml")).unwrap()
    );

    // The installed binary runs, and has a man page for every command it lists.
    let binary = root.path("/usr/sbin/xdpguard");
    let version = run(&binary, &["--version"]);
    assert_eq!(
        text(&version).trim(),
        format!("xdpguard {}", env!("CARGO_PKG_VERSION"))
    );
    let help = text(&run(&binary, &["--help"]));
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        commands.contains(&"block") && commands.contains(&"config"),
        "{help}"
    );
    let pages = names(&root.path("/usr/share/man/man8"));
    assert_eq!(
        pages.len(),
        commands.len() + 1,
        "{pages:?} for {commands:?}"
    );
    for page in std::iter::once("xdpguard".to_owned())
        .chain(commands.iter().map(|c| format!("xdpguard-{c}")))
    {
        let path = root.path(&format!("/usr/share/man/man8/{page}.8.gz"));
        let out = Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(&path)
            .env("MANWIDTH", "100")
            .output()
            .expect("man (man-db)");
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -l {}: {}",
            path.display(),
            text(&out)
        );
        assert!(
            shown.contains("NAME") && shown.contains("EXIT STATUS"),
            "{shown}"
        );
    }
    let root_page = text(
        &Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(root.path("/usr/share/man/man8/xdpguard.8.gz"))
            .env("MANWIDTH", "200")
            .output()
            .unwrap(),
    );
    assert!(root_page.contains("xdpguard-block(8)"), "{root_page}");
    assert!(root_page.contains("/etc/xdpguard/conf.d"), "{root_page}");
    let bash = run(
        "bash",
        &[
            "-n",
            root.path("/usr/share/bash-completion/completions/xdpguard")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(bash.status.success(), "{}", text(&bash));

    // systemd accepts the installed unit. The root gets the host's targets and slices, and
    // kill, which the unit refers to; --man=no: the pages are checked with man -l above.
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".target") || name.ends_with(".slice") {
            let _ = std::fs::copy(&path, root.path(&format!("/lib/systemd/system/{name}")));
        }
    }
    std::fs::create_dir_all(root.path("/bin")).unwrap();
    std::fs::copy("/bin/kill", root.path("/bin/kill")).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.0.display()))
        .arg("/lib/systemd/system/xdpguard.service")
        .output()
        .unwrap();
    assert!(
        verify.status.success() && text(&verify).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );

    // Nothing is attached until the operator names an interface; a drop-in that does makes
    // the configuration valid, with the shipped rulesets, and rulesets.d masks one by name.
    let config = root.path("/etc/xdpguard/xdpguard.toml");
    let config = config.to_str().unwrap();
    let unconfigured = run(&binary, &["config", "--config", config]);
    assert!(!unconfigured.status.success());
    assert!(
        text(&unconfigured).contains("interfaces"),
        "{}",
        text(&unconfigured)
    );
    std::fs::write(
        root.path("/etc/xdpguard/conf.d/50-test.toml"),
        format!(
            "rulesets_dir = [\"{}\", \"{}\"]\n\n[[interfaces]]\nname = \"xg-test0\"\n",
            root.path("/usr/share/xdpguard/rulesets").display(),
            root.path("/etc/xdpguard/rulesets.d").display()
        ),
    )
    .unwrap();
    let rulesets = |binary: &Path| -> Vec<String> {
        let out = run(binary, &["--json", "config", "--config", config]);
        assert!(out.status.success(), "{}", text(&out));
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(answer["interfaces"][0], "xg-test0", "{answer}");
        answer["rulesets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    };
    let all = rulesets(&binary);
    assert!(all.iter().any(|r| r == "sshd"), "{all:?}");
    std::fs::write(root.path("/etc/xdpguard/rulesets.d/sshd.toml"), "").unwrap();
    let masked = rulesets(&binary);
    assert!(!masked.iter().any(|r| r == "sshd"), "{masked:?}");
    assert!(masked.len() < all.len() && !masked.is_empty());

    // A reinstall (an upgrade's steps) keeps the operator's change to the conffile.
    let edited = std::fs::read_to_string(config).unwrap() + "\n# changed by the operator\n";
    std::fs::write(config, &edited).unwrap();
    root.dpkg(&["-i", deb.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(config).unwrap(), edited);

    // Remove: the program goes, the configuration and the decisions stay.
    let state = root.path("/var/lib/xdpguard/decisions.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, "{}").unwrap();
    root.dpkg(&["-r", "xdpguard"]);
    assert!(!binary.exists());
    assert!(!root.path("/lib/systemd/system/xdpguard.service").exists());
    assert!(!root.path("/usr/share/man/man8/xdpguard.8.gz").exists());
    assert!(Path::new(config).exists(), "remove keeps the conffile");
    assert!(state.exists(), "remove keeps the decisions");

    // Purge: the conffile and the state go; the operator's own drop-in stays.
    root.dpkg(&["-P", "xdpguard"]);
    assert!(!Path::new(config).exists(), "purge removes the conffile");
    assert!(
        !root.path("/var/lib/xdpguard").exists(),
        "purge removes the state"
    );
    assert!(root.path("/etc/xdpguard/conf.d/50-test.toml").exists());
    let status = std::fs::read_to_string(root.path("/var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("Package: xdpguard"), "{status}");
}
