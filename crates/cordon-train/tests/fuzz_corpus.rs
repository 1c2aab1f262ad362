//! Replays the committed fuzz corpus (fuzz/corpus/training_data) through the fuzz entry point: a fast
//! check in CI that no known input panics. Long fuzzing runs use `cargo fuzz` (see fuzz/README.md).
//! The seeds are written by `scripts/make_fuzz_training_seeds.py`.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        f(&data);
        // Truncations and a flipped byte of every corpus entry, too.
        for len in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
            f(&data[..len]);
        }
        let mut flipped = data.clone();
        if let Some(b) = flipped.get_mut(data.len() / 3) {
            *b ^= 0xff;
        }
        f(&flipped);
        n += 1;
    }
    n
}

#[test]
fn training_data_corpus_never_panics() {
    assert!(replay("training_data", cordon_train::fuzzing::training_data) >= 6);
}

#[test]
fn seeds_reach_training() {
    // The target is deep only if its seeds parse with its schema: check that they still do.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/training_data");
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
