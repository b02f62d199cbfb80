//! The `xdpguard` command: a thin shell over the library.
use clap::Parser;

#[derive(Parser)]
#[command(name = "xdpguard", version, about = "XDP host firewall")]
struct Cli {}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let _cli = Cli::parse();
}
