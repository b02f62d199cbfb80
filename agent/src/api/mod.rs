//! Adapters for the outside: the control socket (the CLI) and the metrics HTTP listener, and
//! the connection engine they share (`listener`).
pub mod control;
pub mod listener;
pub mod metrics;
