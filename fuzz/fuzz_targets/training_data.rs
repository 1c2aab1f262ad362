//! Fuzzes a data owner's training file as CSV and as Parquet, and training, scoring and ONNX export
//! of whatever table results.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's panic hook aborts on every panic, even one `read_table` contains (it runs the
    // parquet reader under catch_unwind, as the runtime does). The default hook lets a contained
    // panic be an error; an uncaught one still aborts at the FFI boundary and is reported.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    cordon_train::fuzzing::training_data(data);
});
