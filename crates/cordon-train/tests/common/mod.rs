//! Shared by the integration tests: the committed training data.
#![allow(dead_code)]

use cordon_train::{read_table, DataFormat, Schema, Table};
use std::path::{Path, PathBuf};

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/training")
}

/// The 30 feature names of the breast cancer CSVs (header order, label last).
pub fn schema() -> Schema {
    let text = std::fs::read_to_string(testdata().join("breast_cancer_test.csv")).unwrap();
    let header = text.lines().next().unwrap();
    let mut names: Vec<String> = header.split(',').map(str::to_string).collect();
    let label = names.pop().unwrap();
    assert_eq!(label, "label");
    Schema {
        features: names,
        label,
    }
}

pub fn load(file: &str) -> Table {
    let format = if file.ends_with(".parquet") {
        DataFormat::Parquet
    } else {
        DataFormat::Csv
    };
    let bytes = std::fs::read(testdata().join(file)).unwrap();
    read_table(&bytes, format, &schema()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(testdata().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}
