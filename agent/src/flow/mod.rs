//! Traffic volumes from NetFlow v9 and IPFIX exporters (routers, softflowd): a pure decoder
//! ([`decode`]), a UDP collector thread around it ([`collector`]), and a small NetFlow v9
//! encoder for generators, benchmarks and tests ([`encode`]).
pub mod collector;
pub mod decode;
pub mod encode;

pub use collector::{
    CollectorError, CollectorSettings, FlowCollector, RecordSink, SharedExporterStats,
};
pub use decode::{
    DecodeSummary, DecoderSettings, DirectionFilter, ErrorCounts, ErrorKind, ExporterStats,
    FlowDecoder, FlowRecord,
};
