//! `cargo fuzz run cri` (see hack/fuzz.sh); the checks are in harness/cri.rs.
#![no_main]

#[path = "../harness/cri.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
