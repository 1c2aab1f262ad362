//! Fuzzes the TDX CCEL event log parser and RTMR replay: any bytes must give a typed error or a log
//! whose replay matches itself, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_attest::fuzzing::eventlog(data);
});
