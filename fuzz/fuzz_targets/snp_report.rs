//! Fuzzes the SNP report parser and verifier: any bytes must give a typed error or claims, never a
//! panic. Verification runs with a real VCEK so that signature and chain code is reached.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_attest::fuzzing::snp_report(data);
});
