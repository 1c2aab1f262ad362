//! Fuzzes evidence detection (hex decoding included), inspection and verification of every format.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_attest::fuzzing::evidence(data);
});
