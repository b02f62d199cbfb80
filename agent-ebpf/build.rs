//! Rebuild the eBPF object when bpf-linker changes: it is not a cargo dependency, so cargo
//! cannot see it otherwise.
use std::{env, path::PathBuf};

fn main() {
    let linker = which::which("bpf-linker").or_else(|_| {
        env::var_os("CARGO_HOME")
            .map(|home| PathBuf::from(home).join("bin").join("bpf-linker"))
            .filter(|path| path.exists())
            .ok_or(())
    });
    if let Ok(linker) = linker {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
