//! Fuzzes a data owner's training file as CSV and as Parquet, and training, scoring and ONNX export
//! of whatever table results.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_train::fuzzing::training_data(data);
});
