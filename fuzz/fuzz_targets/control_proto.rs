//! The control protocol: a line decoded as a request and as an answer; what decodes encodes
//! back to itself.
#![no_main]

#[path = "../../agent/tests/fuzzing/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _outcome = checks::control(data);
});
