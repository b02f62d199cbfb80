//! The binary's side: arguments (`args`), carrying a command out (`commands`), and the human
//! output of answers (`output`). The library knows nothing of it.
mod args;
mod commands;
mod output;

pub use args::Cli;
pub use commands::run;
