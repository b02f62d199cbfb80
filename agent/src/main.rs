//! The `xdpguard` command: parse the arguments, carry the command out, say how it ended.
mod cli;
mod logging;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    logging::init();
    let exit = cli::main(cli::Cli::parse());
    std::process::ExitCode::from(exit as u8)
}
