//! Cordon training: what the attested runtime runs when several data owners train one model
//! together. Pure computation over bytes — no network, no files, no clock:
//!
//! - [`data`]: each owner's CSV or Parquet bytes → a checked [`Table`] (columns by name, every
//!   cell a finite number; errors name row and column, never a value).
//! - [`linear`]: L2-regularised logistic regression, scikit-learn's objective, solved exactly
//!   by Newton's method on standardised features.
//! - [`gbdt`]: gradient-boosted trees with binary log-loss, as scikit-learn's
//!   `GradientBoostingClassifier`, with histogram split finding.
//! - [`onnx_export`]: the fitted model as an ONNX-ML graph with the project's model interface
//!   (`input` → `label`, `probabilities`), which the serving runtime loads.
//! - [`metrics`], [`holdout_split`]: evaluation.
//!
//! The algorithms are written here by hand rather than taken from a crate, deliberately: the
//! ONNX-ML export needs the exact tree structure and thresholds, results must be bit-for-bit
//! reproducible from the same data and seed (so every party can check a job's output), and the
//! code that sees the plaintext inside the TEE should stay small enough to audit.

pub mod data;
#[doc(hidden)]
pub mod fuzzing;
pub mod gbdt;
pub mod linear;
pub mod metrics;
pub mod onnx_export;
mod split;

pub use data::{read_table, DataError, DataFormat, Schema, Table};
pub use gbdt::{GbdtModel, GbdtParams, MAX_ESTIMATORS};
pub use linear::{LogisticModel, LogisticParams, MAX_ITER};
pub use split::holdout_split;

use serde::{Deserialize, Serialize};

/// The training algorithm of a job, with its parameters (JSON: `{"kind": "gbdt", ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Algorithm {
    LogisticRegression(LogisticParams),
    Gbdt(GbdtParams),
}

/// Why training failed. Like [`DataError`], never carries data values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("row {row}: label is not 0 or 1")]
    NotBinary { row: usize },
    #[error("the labels hold one class only; binary classification needs both")]
    OneClass,
    #[error("no rows to train on")]
    Empty,
    #[error("parameter {param}: {reason}")]
    InvalidParam {
        param: &'static str,
        reason: &'static str,
    },
    #[error("training diverged: {0}")]
    Diverged(&'static str),
}

/// A fitted binary classifier.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainedModel {
    LogisticRegression(LogisticModel),
    Gbdt(GbdtModel),
}

impl TrainedModel {
    /// The probability of class 1 for every row. Panics if the table's feature count differs
    /// from the model's (a caller's bug: the job's schema fixes both).
    pub fn predict_proba(&self, table: &Table) -> Vec<f64> {
        match self {
            TrainedModel::LogisticRegression(m) => m.predict_proba(table),
            TrainedModel::Gbdt(m) => m.predict_proba(table),
        }
    }

    /// `"logistic_regression"` or `"gbdt"`, as in [`Algorithm`]'s JSON.
    pub fn algorithm_name(&self) -> &'static str {
        match self {
            TrainedModel::LogisticRegression(_) => "logistic_regression",
            TrainedModel::Gbdt(_) => "gbdt",
        }
    }

    pub fn n_features(&self) -> usize {
        match self {
            TrainedModel::LogisticRegression(m) => m.coefficients.len(),
            TrainedModel::Gbdt(m) => m.n_features,
        }
    }

    /// The model as ONNX bytes (see [`onnx_export`] for the interface).
    pub fn to_onnx(&self) -> Vec<u8> {
        onnx_export::to_onnx(self)
    }
}

impl Algorithm {
    /// Checks every parameter against its range (upper bounds included), before any data is
    /// read: what a runtime does when a job is created, so an unrunnable job is never approved.
    pub fn check(&self) -> Result<(), TrainError> {
        match self {
            Algorithm::LogisticRegression(p) => linear::check(p),
            Algorithm::Gbdt(p) => gbdt::check(p),
        }
    }
}

/// Trains a binary classifier on `table` (labels must be 0 or 1).
pub fn train(algorithm: &Algorithm, table: &Table) -> Result<TrainedModel, TrainError> {
    check_binary(table)?;
    Ok(match algorithm {
        Algorithm::LogisticRegression(p) => {
            TrainedModel::LogisticRegression(linear::fit(p, table)?)
        }
        Algorithm::Gbdt(p) => TrainedModel::Gbdt(gbdt::fit(p, table)?),
    })
}

fn check_binary(table: &Table) -> Result<(), TrainError> {
    if table.n_rows() == 0 {
        return Err(TrainError::Empty);
    }
    if let Some(row) = table.labels().iter().position(|&y| y != 0.0 && y != 1.0) {
        return Err(TrainError::NotBinary { row });
    }
    let ones = table.labels().iter().filter(|&&y| y == 1.0).count();
    if ones == 0 || ones == table.n_rows() {
        return Err(TrainError::OneClass);
    }
    Ok(())
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}
