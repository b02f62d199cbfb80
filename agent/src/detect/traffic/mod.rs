//! Traffic volumes: flow records from exporters and the XDP program's per-source counts,
//! aggregated and scored by the volume detectors.
pub mod flow;
pub mod volume;
