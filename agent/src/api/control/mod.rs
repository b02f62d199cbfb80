//! The control socket: an adapter from the CLI's JSON lines onto the owner's [`Handle`].
//! `proto` is the wire format (serde types only), `server` the daemon's side, `client` the
//! CLI's, `metrics` the socket's section of the metrics page. Only root may connect (socket
//! mode 0600, and the peer's uid is checked).
//!
//! [`Handle`]: crate::enforce::owner::Handle
pub mod client;
pub mod metrics;
pub mod proto;
pub mod server;

pub use client::{ControlError, call};
pub use proto::{Answer, PROTOCOL_VERSION, Request};
pub use server::ControlServer;
