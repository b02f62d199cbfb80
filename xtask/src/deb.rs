//! `cargo xtask deb`: `target/deb/xdpguard_VERSION_ARCH.deb` from the release build, with
//! dpkg-deb (no cargo-deb: every file's place, mode and owner is written here, next to the
//! maintainer scripts in packaging/debian/).
use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::status;

const PACKAGE: &str = "xdpguard";

/// Build the package from `binary` (the release `xdpguard`); returns its path.
pub fn build(root: &Path, binary: &Path) -> Result<PathBuf> {
    let version = workspace_version(root)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let out_dir = root.join("target/deb");
    let stage = out_dir.join(format!("{PACKAGE}_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let doc = "usr/share/doc/xdpguard";

    // The program, stripped (lintian: debug symbols belong in a -dbgsym package).
    let sbin = stage.join("usr/sbin/xdpguard");
    copy(binary, &sbin, 0o755)?;
    status(
        Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(&sbin),
    )?;
    let unit = fs::read_to_string(root.join("packaging/xdpguard.service"))?;
    if !unit.contains("ExecStart=/usr/sbin/xdpguard ") {
        bail!("packaging/xdpguard.service must start /usr/sbin/xdpguard");
    }
    write(
        &stage.join("lib/systemd/system/xdpguard.service"),
        &unit,
        0o644,
    )?;
    copy(
        &root.join("packaging/xdpguard.toml"),
        &stage.join("etc/xdpguard/xdpguard.toml"),
        0o644,
    )?;
    for dir in ["etc/xdpguard/conf.d", "etc/xdpguard/rulesets.d"] {
        mkdir(&stage.join(dir))?;
    }
    let mut rulesets = 0;
    for entry in sorted_dir(&root.join("rulesets"))? {
        if entry.extension().is_some_and(|e| e == "toml") {
            copy(
                &entry,
                &stage
                    .join("usr/share/xdpguard/rulesets")
                    .join(entry.file_name().context("a file name")?),
                0o644,
            )?;
            rulesets += 1;
        }
    }
    if rulesets == 0 {
        bail!("no rulesets in {}", root.join("rulesets").display());
    }

    // Man pages and completions, made by the binary from its own argument definitions.
    let generated = out_dir.join("generated");
    if generated.exists() {
        fs::remove_dir_all(&generated)?;
    }
    status(
        Command::new(binary)
            .args(["generate", "man"])
            .arg(generated.join("man")),
    )?;
    status(
        Command::new(binary)
            .args(["generate", "completions"])
            .arg(generated.join("completions")),
    )?;
    for page in sorted_dir(&generated.join("man"))? {
        let name = page.file_name().context("a file name")?.to_string_lossy();
        gzip(
            &page,
            &stage.join("usr/share/man/man8").join(format!("{name}.gz")),
        )?;
    }
    let completions = generated.join("completions");
    copy(
        &completions.join("xdpguard.bash"),
        &stage.join("usr/share/bash-completion/completions/xdpguard"),
        0o644,
    )?;
    copy(
        &completions.join("_xdpguard"),
        &stage.join("usr/share/zsh/vendor-completions/_xdpguard"),
        0o644,
    )?;
    copy(
        &completions.join("xdpguard.fish"),
        &stage.join("usr/share/fish/vendor_completions.d/xdpguard.fish"),
        0o644,
    )?;

    // Documentation.
    for (from, to) in [
        ("README.md", "README.md"),
        ("docs/ARCHITECTURE.md", "ARCHITECTURE.md"),
        ("docs/RULESETS.md", "RULESETS.md"),
        ("packaging/debian/copyright", "copyright"),
        ("packaging/xdpguard.toml", "examples/xdpguard.toml"),
        (
            "packaging/grafana/xdpguard.json",
            "examples/grafana/xdpguard.json",
        ),
        (
            "packaging/prometheus/xdpguard-rules.yml",
            "examples/prometheus/xdpguard-rules.yml",
        ),
    ] {
        copy(&root.join(from), &stage.join(doc).join(to), 0o644)?;
    }
    let changelog = stage.join(doc).join("changelog");
    write(&changelog, &debian_changelog(root, &version)?, 0o644)?;
    gzip(&changelog, &changelog.with_extension("gz"))?;
    fs::remove_file(&changelog)?;

    // Control files.
    let control_dir = stage.join("DEBIAN");
    mkdir(&control_dir)?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(
            &root.join("packaging/debian").join(script),
            &control_dir.join(script),
            0o755,
        )?;
    }
    write(
        &control_dir.join("conffiles"),
        "/etc/xdpguard/xdpguard.toml\n",
        0o644,
    )?;
    write(&control_dir.join("md5sums"), &md5sums(&stage)?, 0o644)?;
    let depends = shlib_depends(&out_dir, &sbin)?;
    let description = fs::read_to_string(root.join("packaging/debian/description"))?;
    let control = format!(
        "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\n\
         Maintainer: xdpguard developers <xdpguard@example.org>\n\
         Installed-Size: {}\nDepends: {depends}\nSection: net\nPriority: optional\n\
         Homepage: https://github.com/xdpguard/xdpguard\nDescription: {}",
        installed_size_kib(&stage)?,
        description.trim_end().to_owned() + "\n"
    );
    write(&control_dir.join("control"), &control, 0o644)?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    status(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    eprintln!("deb: {}", deb.display());
    Ok(deb)
}

fn workspace_version(root: &Path) -> Result<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    let value: toml::Table = manifest.parse().context("parsing Cargo.toml")?;
    value["workspace"]["package"]["version"]
        .as_str()
        .map(str::to_owned)
        .context("workspace.package.version in Cargo.toml")
}

/// A native package's changelog: one entry for this version, dated by the last commit (the
/// package is then the same for the same tree).
fn debian_changelog(root: &Path, version: &str) -> Result<String> {
    let date = Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%aD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty());
    let date = match date {
        Some(date) => date,
        None => output(Command::new("date").arg("-R"))?,
    };
    Ok(format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
         * Release {version}: see /usr/share/doc/xdpguard/README.md.\n\n \
         -- xdpguard developers <xdpguard@example.org>  {date}\n"
    ))
}

/// `Depends:` from dpkg-shlibdeps, which wants a debian/control to read; a scratch one.
fn shlib_depends(out_dir: &Path, binary: &Path) -> Result<String> {
    let scratch = out_dir.join("shlibdeps");
    mkdir(&scratch.join("debian"))?;
    fs::write(
        scratch.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let line = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(&scratch)
            .arg("-O")
            .arg(format!("-e{}", binary.display())),
    )?;
    let depends = line
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps said {line:?}"))?;
    Ok(depends.trim().to_owned())
}

fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    walk(stage, &mut files)?;
    files.sort();
    let mut out = String::new();
    for file in files {
        let relative = file.strip_prefix(stage)?;
        if relative.starts_with("DEBIAN") || relative.starts_with("etc") {
            continue;
        }
        let sum = output(Command::new("md5sum").arg(&file))?;
        let hash = sum.split_whitespace().next().context("md5sum output")?;
        let _ = writeln!(out, "{hash}  {}", relative.display());
    }
    Ok(out)
}

fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut files = Vec::new();
    walk(stage, &mut files)?;
    let mut bytes = 0;
    for file in files {
        if !file.strip_prefix(stage)?.starts_with("DEBIAN") {
            bytes += fs::metadata(&file)?.len().div_ceil(1024) * 1024;
        }
    }
    Ok(bytes.div_ceil(1024))
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in sorted_dir(dir)? {
        if entry.is_dir() {
            walk(&entry, files)?;
        } else {
            files.push(entry);
        }
    }
    Ok(())
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    Ok(entries)
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Every directory up to the stage: 0755 whatever the umask.
    let mut current = Some(dir);
    while let Some(path) = current {
        if path.ends_with("deb") {
            break;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        current = path.parent();
    }
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    mkdir(to.parent().context("a parent")?)?;
    let _: u64 = fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    mkdir(to.parent().context("a parent")?)?;
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `gzip -9n`: no name or time inside, as Debian policy asks of man pages and changelogs.
fn gzip(from: &Path, to: &Path) -> Result<()> {
    mkdir(to.parent().context("a parent")?)?;
    let out = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(from)
        .output()
        .with_context(|| format!("gzip {}", from.display()))?;
    if !out.status.success() {
        bail!(
            "gzip {}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(to, out.stdout)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
