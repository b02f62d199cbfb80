//! `Config::parse` on configuration text: errors name the file and a place, or a missing key.
#![no_main]

#[path = "../../agent/tests/fuzzing/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _outcome = checks::config(data);
});
