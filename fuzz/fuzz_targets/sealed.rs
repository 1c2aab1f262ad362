//! Fuzzes sealed artifacts (header, manifest, signature, chunk decryption with a fixed key, truncation
//! and trailing data) and the DEK and owner key file formats.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_seal::fuzzing::sealed(data);
});
