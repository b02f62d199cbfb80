//! Adapters for the outside: the control socket (the CLI) and the metrics HTTP listener.
pub mod control;
pub mod metrics;
