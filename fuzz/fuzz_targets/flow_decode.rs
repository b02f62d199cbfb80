//! The NetFlow v9 / IPFIX decoder with its template state: one input is a sequence of
//! datagrams from up to four exporters over time (`checks::flow_datagrams`), fed to one decoder.
#![no_main]

#[path = "../../agent/tests/fuzzing/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _records: u64 = checks::flow(&checks::flow_datagrams(data));
});
