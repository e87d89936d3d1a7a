//! `cargo fuzz run unpack` (see hack/fuzz.sh); the checks are in harness/unpack.rs.
#![no_main]

#[path = "../harness/unpack.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
