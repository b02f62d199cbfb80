//! Traffic volumes from NetFlow v9 and IPFIX exporters (routers, softflowd): a pure decoder
//! ([`decode`]) and a UDP collector thread around it ([`collector`]). [`config`] is the
//! collector's `[volume.flow]` table.
pub mod collector;
pub mod config;
pub mod decode;

pub use collector::{
    CollectorError, CollectorSettings, FlowCollector, RecordSink, SharedExporterStats,
};
pub use config::{FlowConfig, SamplingOverride};
pub use decode::{
    DecodeSummary, DecoderSettings, DirectionFilter, ErrorCounts, ErrorKind, ExporterStats,
    FlowDecoder, FlowRecord,
};
