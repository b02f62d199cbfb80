//! Points `src/baseline.rs` at the benchmark baselines' objects. The agent's build script
//! builds every program in `agent-ebpf` (aya-build builds the whole package) and names the
//! directory it left them in through its `links` metadata, so the eBPF package is built once;
//! the agent embeds only `xdpguard`, the baselines are embedded here.
use std::env;

/// `cargo::metadata=objects=DIR` of the agent (`links = "xdpguard-ebpf"`).
const OBJECTS_DIR: &str = "DEP_XDPGUARD_EBPF_OBJECTS";

fn main() {
    println!("cargo::rerun-if-env-changed={OBJECTS_DIR}");
    if env::var_os("CARGO_FEATURE_BASELINES").is_none() {
        return;
    }
    let dir = env::var(OBJECTS_DIR).expect("the agent's build script names its objects directory");
    println!("cargo::rustc-env=XDPGUARD_EBPF_OBJECTS={dir}");
}
