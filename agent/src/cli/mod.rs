//! The binary's side: arguments (`args`), carrying a command out (`commands`), the human
//! output of answers (`output`), and the man pages and completions made from the arguments
//! (`generate`). The library knows nothing of it.
mod args;
mod commands;
mod generate;
mod output;

pub use args::Cli;
pub use commands::main;
