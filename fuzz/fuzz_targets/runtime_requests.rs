//! Fuzzes the runtime's request and response bodies: inner requests, OIP inference, attestation
//! responses, job specs, approvals, status, results, receipts, party key files and signed requests.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_proto::fuzzing::runtime_requests(data);
});
