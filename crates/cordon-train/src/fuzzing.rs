//! Entry point shared by the cargo-fuzz target (`fuzz/`) and the corpus replay test that CI runs
//! (`tests/fuzz_corpus.rs`). It must return normally for any input.

use crate::{read_table, train, Algorithm, DataFormat, GbdtParams, LogisticParams, Schema};

/// The schema the target reads with: two features and the label of the hospital fixtures.
pub fn schema() -> Schema {
    Schema {
        features: vec!["mean_radius".into(), "mean_texture".into()],
        label: "label".into(),
    }
}

/// A data owner's file as CSV and as Parquet; whatever table results is trained on (logistic
/// regression with few Newton steps, GBDT with two shallow trees: cheap enough to run per input),
/// scored and exported to ONNX, as the runtime does with a job's data.
pub fn training_data(data: &[u8]) {
    let schema = schema();
    for format in [DataFormat::Csv, DataFormat::Parquet] {
        let Ok(table) = read_table(data, format, &schema) else {
            continue;
        };
        let algorithms = [
            Algorithm::LogisticRegression(LogisticParams {
                max_iter: 3,
                ..LogisticParams::default()
            }),
            Algorithm::Gbdt(GbdtParams {
                n_estimators: 2,
                max_depth: 2,
                max_bins: 16,
                ..GbdtParams::default()
            }),
        ];
        for algorithm in &algorithms {
            if let Ok(model) = train(algorithm, &table) {
                let p = model.predict_proba(&table);
                assert_eq!(p.len(), table.n_rows(), "one probability per row");
                let _ = crate::metrics::accuracy(table.labels(), &p);
                let _ = crate::metrics::roc_auc(table.labels(), &p);
                let _ = crate::metrics::log_loss(table.labels(), &p);
                let _ = model.to_onnx();
            }
        }
    }
}
