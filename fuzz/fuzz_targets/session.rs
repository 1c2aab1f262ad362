//! Fuzzes session mode: setup messages and session messages opened with the keys of a real setup,
//! with the runtime's sequence window.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_proto::fuzzing::session(data);
});
