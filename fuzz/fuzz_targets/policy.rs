//! Fuzzes policy files: parsing (release policy and client policy document), the TOML round trip,
//! and appraisal of real claims with whatever parsed.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_attest::fuzzing::policy(data);
});
