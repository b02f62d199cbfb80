//! Traffic volumes from NetFlow v9 and IPFIX exporters (routers, softflowd): a pure decoder
//! ([`decode`]), a UDP collector thread around it ([`collector`]), and a small NetFlow v9
//! encoder for generators, benchmarks and tests ([`encode`]). [`config`] is the collector's
//! `[volume.flow]` table.
pub mod collector;
pub mod config;
pub mod decode;
pub mod encode;

pub use collector::{
    CollectorError, CollectorSettings, FlowCollector, RecordSink, SharedExporterStats,
};
pub use config::{FlowConfig, SamplingOverride};
pub use decode::{
    DecodeSummary, DecoderSettings, DirectionFilter, ErrorCounts, ErrorKind, ExporterStats,
    FlowDecoder, FlowRecord,
};
