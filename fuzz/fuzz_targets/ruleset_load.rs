//! `ruleset::parse` on ruleset text, then the rulesets over sample log lines.
#![no_main]

#[path = "../../agent/tests/fuzzing/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _outcome = checks::ruleset(data);
});
