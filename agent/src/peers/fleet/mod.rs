//! The fleet: decisions shared between agents through a NATS JetStream key-value bucket.
//! Each agent writes its own decisions under keys that start with its host name
//! ([`outbox`], [`wire`]) and applies every other host's as `fleet:HOST` through the
//! owner's front door ([`remote`]), so its own guards and allowlist still decide. The
//! connection, full reads and reconnection are [`agent`]'s.
pub mod agent;
pub mod config;
pub mod metrics;
pub mod outbox;
pub mod remote;
pub mod wire;
