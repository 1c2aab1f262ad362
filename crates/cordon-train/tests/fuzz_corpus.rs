//! Replays the committed fuzz corpus (fuzz/corpus/training_data) through the fuzz entry point: a fast
//! check in CI that no known input panics. Long fuzzing runs use `cargo fuzz` (see fuzz/README.md).
//! The seeds are written by `scripts/make_fuzz_training_seeds.py`.

#[path = "../../../fuzz/replay.rs"]
mod replay;
use replay::{corpus, replay};

#[test]
fn training_data_corpus_never_panics() {
    assert!(replay("training_data", cordon_train::fuzzing::training_data) >= 6);
}

#[test]
fn seeds_reach_training() {
    // The target is deep only if its seeds parse with its schema: check that they still do.
    let dir = corpus("training_data");
    let schema = cordon_train::fuzzing::schema();
    for (name, format) in [
        ("small.csv", cordon_train::DataFormat::Csv),
        ("quoted.csv", cordon_train::DataFormat::Csv),
        ("small.parquet", cordon_train::DataFormat::Parquet),
        ("hospital_c.parquet", cordon_train::DataFormat::Parquet),
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let table = cordon_train::read_table(&bytes, format, &schema)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(table.n_rows() >= 8, "{name}");
    }
}
