//! Builds the XDP programs in `agent-ebpf` for the BPF target and leaves the objects in
//! `OUT_DIR`, where `src/enforce/dataplane` embeds `xdpguard`. The benchmark baselines (`bench-pass`,
//! `bench-lpm`) are not embedded in the agent: the directory is passed on as `links` metadata
//! (`DEP_XDPGUARD_EBPF_OBJECTS`) to `agent-testkit`, which embeds them. With `AYA_BUILD_SKIP=1`
//! (check, clippy, docs without the eBPF toolchain) empty objects stand in, and loading reports
//! that.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const EBPF_PACKAGE: &str = "xdpguard-ebpf";
const OBJECTS: [&str; 3] = ["xdpguard", "bench-pass", "bench-lpm"];

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    for object in OBJECTS {
        let path = out_dir.join(object);
        if !path.exists() {
            fs::write(&path, b"").with_context(|| format!("writing {}", path.display()))?;
        }
    }
    println!("cargo::metadata=objects={}", out_dir.display());
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .context("eBPF manifest has no parent directory")?;
    aya_build::build_ebpf(
        [Package {
            name: EBPF_PACKAGE,
            root_dir: root_dir.as_str(),
            ..Package::default()
        }],
        Toolchain::default(),
    )
}
