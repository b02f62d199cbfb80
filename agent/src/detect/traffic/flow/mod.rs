//! Traffic volumes from NetFlow v9 and IPFIX exporters (routers, softflowd): a pure decoder
//! ([`decode`]) and a UDP collector thread around it ([`collector`]). [`config`] is the
//! collector's `[volume.flow]` table. [`pairing`] matches the two directions of flows and
//! counts one-way and reflection flows per source prefix.
pub mod collector;
pub mod config;
pub mod decode;
pub mod lru;
pub mod pairing;

pub use collector::{
    CollectorError, CollectorSettings, FlowCollector, RecordSink, SharedExporterStats,
};
pub use config::{FlowConfig, PairingConfig, SamplingOverride};
pub use decode::{
    DEFAULT_MAX_TEMPLATES_PER_DOMAIN, DEFAULT_MAX_TEMPLATES_PER_EXPORTER, DecodeSummary,
    DecoderSettings, DirectionFilter, ErrorCounts, ErrorKind, ExporterStats, FlowDecoder,
    FlowRecord,
};
pub use pairing::{
    DEFAULT_REFLECTION_PORTS, FlowPairing, IntervalAnomalies, PairingCounts, PairingError,
    PairingSettings,
};
