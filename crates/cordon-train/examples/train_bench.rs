//! Training time on a synthetic table: `cargo run --release -p cordon-train --example
//! train_bench -- [rows] [trees]` (defaults 100000 rows, 100 trees). 30 features, labels from a
//! seeded logistic ground truth with an interaction, so both models have something to learn.

use cordon_train::metrics::roc_auc;
use cordon_train::{holdout_split, train, Algorithm, GbdtParams, LogisticParams, Table};
use std::time::Instant;

const FEATURES: usize = 30;

fn synthetic(rows: usize, seed: u64) -> Table {
    let mut s = seed;
    let mut uniform = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let weights: Vec<f64> = (0..FEATURES)
        .map(|j| ((j * 7 % 11) as f64 - 5.0) / 5.0)
        .collect();
    let mut features = Vec::with_capacity(rows * FEATURES);
    let mut labels = Vec::with_capacity(rows);
    for _ in 0..rows {
        let row: Vec<f64> = (0..FEATURES).map(|_| uniform() * 2.0 - 1.0).collect();
        let z: f64 =
            row.iter().zip(&weights).map(|(x, w)| x * w).sum::<f64>() + 2.0 * row[0] * row[1];
        let p = 1.0 / (1.0 + (-z).exp());
        labels.push(if uniform() < p { 1.0 } else { 0.0 });
        features.extend(row.iter().map(|&x| x as f32));
    }
    Table::new(features, labels, FEATURES).expect("finite synthetic data")
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(100_000);
    let trees = args.get(1).copied().unwrap_or(100) as u32;
    let table = synthetic(rows, 42);
    let (train_rows, test_rows) = holdout_split(rows, 0.2, 1);
    let (train_table, test) = (table.select(&train_rows), table.select(&test_rows));
    println!(
        "{} training rows x {FEATURES} features, {} test rows",
        train_table.n_rows(),
        test.n_rows()
    );
    for algorithm in [
        Algorithm::LogisticRegression(LogisticParams::default()),
        Algorithm::Gbdt(GbdtParams {
            n_estimators: trees,
            ..GbdtParams::default()
        }),
    ] {
        let start = Instant::now();
        let model = train(&algorithm, &train_table).expect("training");
        let secs = start.elapsed().as_secs_f64();
        let auc = roc_auc(test.labels(), &model.predict_proba(&test)).unwrap_or(f64::NAN);
        println!(
            "{:>20}: {secs:8.2} s, test AUC {auc:.4}",
            model.algorithm_name()
        );
    }
}
