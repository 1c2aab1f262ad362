//! Fuzzes the key broker's request and response bodies and what follows each: report_data and job
//! checks, evidence verification, the release policy, and opening released keys.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_proto::fuzzing::kbs_requests(data);
});
