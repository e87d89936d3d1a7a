//! `cargo fuzz run manifest` (see hack/fuzz.sh); the checks are in harness/manifest.rs.
#![no_main]

#[path = "../harness/manifest.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
