//! The `xdpguard` command: parse the arguments, carry the command out, say how it ended.
mod cli;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli::run(cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xdpguard: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
