//! The exported ONNX models run in the serving engine (tract with `cordon-trees`' operators)
//! and agree with the Rust `predict_proba`: probabilities within 1e-5, labels = p > 0.5.

mod common;

use cordon_train::{train, Algorithm, GbdtParams, LogisticParams, Table, TrainedModel};
use tract_onnx::prelude::*;

/// Runs the exported model on `table` as the runtime would; returns (labels, P(class 1)).
fn run_onnx(model: &TrainedModel, table: &Table) -> (Vec<i64>, Vec<f32>) {
    let bytes = model.to_onnx();
    let plan = cordon_trees::load_inference_model(&bytes)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("load: {e:#}"));
    let x = Tensor::from_shape(&[table.n_rows(), table.n_features()], table.features()).unwrap();
    let out = plan.run(tvec!(x.into())).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].shape(), &[table.n_rows(), 2]);
    let labels = out[0]
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<i64>()
        .unwrap()
        .to_vec();
    let probs = out[1]
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    for pair in probs.chunks(2) {
        assert!((pair[0] + pair[1] - 1.0).abs() < 1e-6, "{pair:?}");
    }
    (labels, probs.chunks(2).map(|p| p[1]).collect())
}

fn check(algorithm: Algorithm, tolerance: f64) {
    let train_table = common::load("breast_cancer_train.csv");
    let test = common::load("breast_cancer_test.csv");
    let model = train(&algorithm, &train_table).unwrap();
    for table in [&test, &train_table] {
        let want = model.predict_proba(table);
        let (labels, got) = run_onnx(&model, table);
        let mut worst = 0f64;
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            worst = worst.max((f64::from(g) - w).abs());
            assert!(
                (f64::from(g) - w).abs() <= tolerance,
                "row {i}: onnx {g}, rust {w}"
            );
            // A label may differ only where the probability is 0.5 to within the tolerance.
            if (w - 0.5).abs() > tolerance {
                assert_eq!(labels[i], i64::from(w > 0.5), "row {i}: p {w}");
            }
        }
        println!(
            "{}: {} rows, worst |onnx - rust| {worst:.2e}",
            model.algorithm_name(),
            table.n_rows()
        );
    }
}

#[test]
fn gbdt_onnx_matches_predict_proba() {
    check(Algorithm::Gbdt(GbdtParams::default()), 1e-6);
}

#[test]
fn logistic_onnx_matches_predict_proba() {
    check(
        Algorithm::LogisticRegression(LogisticParams::default()),
        1e-5,
    );
}

/// The graph has the project's interface: opsets, names, a symbolic batch dimension.
#[test]
fn exported_interface() {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value as Dim, type_proto::Value};
    let t = common::load("hospital_c.csv");
    for algorithm in [
        Algorithm::Gbdt(GbdtParams {
            n_estimators: 3,
            ..GbdtParams::default()
        }),
        Algorithm::LogisticRegression(LogisticParams::default()),
    ] {
        let model = train(&algorithm, &t).unwrap();
        let proto = cordon_train::onnx_export::to_proto(&model);
        let opsets: Vec<(&str, i64)> = proto
            .opset_import
            .iter()
            .map(|o| (o.domain.as_str(), o.version))
            .collect();
        assert_eq!(opsets, [("", 13), ("ai.onnx.ml", 3)]);
        let graph = proto.graph.as_ref().unwrap();
        let names = |v: &[tract_onnx::pb::ValueInfoProto]| {
            v.iter().map(|i| i.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&graph.input), ["input"]);
        assert_eq!(names(&graph.output), ["label", "probabilities"]);
        let Some(Value::TensorType(input)) = graph.input[0]
            .r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
        else {
            panic!("input type");
        };
        assert_eq!(input.elem_type, 1);
        let dims: Vec<_> = input
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.value.clone())
            .collect();
        assert_eq!(
            dims,
            [Some(Dim::DimParam("N".into())), Some(Dim::DimValue(30))]
        );
        // Also the bytes load when a batch of one row arrives.
        let one = t.select(&[0]);
        let (labels, probs) = run_onnx(&model, &one);
        assert_eq!((labels.len(), probs.len()), (1, 1));
    }
}

/// A tree whose every weight is >= 0 would trip ONNX Runtime's "raw > 0.5" binary label rule;
/// the export must still label by p > 0.5. One stump on data where it cannot split helps: all
/// features constant, so the only tree is one leaf.
#[test]
fn all_positive_weights_still_label_by_probability() {
    // 3 of 4 rows positive: prior log-odds ln 3 ≈ 1.1, p = 0.75; the leaf value is 0.
    let t = Table::new(vec![1.0; 8], vec![1.0, 1.0, 1.0, 0.0], 2).unwrap();
    let model = train(
        &Algorithm::Gbdt(GbdtParams {
            n_estimators: 1,
            ..GbdtParams::default()
        }),
        &t,
    )
    .unwrap();
    let (labels, probs) = run_onnx(&model, &t);
    assert!(labels.iter().all(|&l| l == 1), "{labels:?}");
    assert!((f64::from(probs[0]) - 0.75).abs() < 1e-6);
}
