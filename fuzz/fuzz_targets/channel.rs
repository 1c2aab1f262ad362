//! Fuzzes HPKE envelopes: the server side of the encrypted request channel, the client's response
//! decryption with a fixed context, and single-shot sealed keys.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_proto::fuzzing::channel(data);
});
