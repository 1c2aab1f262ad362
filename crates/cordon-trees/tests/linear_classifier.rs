//! Conformance of the `LinearClassifier` operator: every model in testdata/training/linear
//! (made by scripts/make_training_data.py: two skl2onnx exports, a binary breast cancer
//! pipeline and a 3-class iris model, and hand-built nodes for every post transform, string
//! labels and ONNX Runtime's one-row binary layout) loads in tract with Cordon's operators and
//! gives ONNX Runtime's outputs on the committed inputs: labels exactly, scores within 1e-5.

use serde_json::Value;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/training/linear")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn shape(t: &Value) -> Vec<usize> {
    t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn run(name: &str) -> Vec<String> {
    let bytes = std::fs::read(dir().join(format!("{name}.onnx"))).unwrap();
    let model = cordon_trees::load_inference_model(&bytes)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("{name}: load: {e:#}"));
    let input = &read_json(&dir().join(format!("{name}.input.json")))["inputs"][0];
    let x: Vec<f32> = input["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let x = Tensor::from_shape(&shape(input), &x).unwrap();
    let outputs = model
        .run(tvec!(x.into()))
        .unwrap_or_else(|e| panic!("{name}: run: {e:#}"));
    let expected = read_json(&dir().join(format!("{name}.expected.json")));
    let expected = expected["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), expected.len(), "{name}: output count");
    let mut errors = Vec::new();
    for (got, want) in outputs.iter().zip(expected) {
        let out = format!("{name}.{}", want["name"].as_str().unwrap());
        if got.shape() != shape(want).as_slice() {
            errors.push(format!(
                "{out}: shape {:?}, expected {:?}",
                got.shape(),
                shape(want)
            ));
            continue;
        }
        let data = want["data"].as_array().unwrap();
        match want["datatype"].as_str().unwrap() {
            "INT64" => {
                let got = got.try_as_plain_ram().unwrap();
                for (i, (g, w)) in got.as_slice::<i64>().unwrap().iter().zip(data).enumerate() {
                    if *g != w.as_i64().unwrap() {
                        errors.push(format!("{out}[{i}]: {g}, expected {w}"));
                    }
                }
            }
            "BYTES" => {
                let got = got.try_as_plain_ram().unwrap();
                for (i, (g, w)) in got
                    .as_slice::<String>()
                    .unwrap()
                    .iter()
                    .zip(data)
                    .enumerate()
                {
                    if g != w.as_str().unwrap() {
                        errors.push(format!("{out}[{i}]: {g:?}, expected {w}"));
                    }
                }
            }
            "FP32" => {
                let got = got.try_as_plain_ram().unwrap();
                for (i, (g, w)) in got.as_slice::<f32>().unwrap().iter().zip(data).enumerate() {
                    let w = w.as_f64().unwrap();
                    if (f64::from(*g) - w).abs() > 1e-5 {
                        errors.push(format!("{out}[{i}]: {g}, expected {w}"));
                    }
                }
            }
            other => errors.push(format!("{out}: unexpected datatype {other}")),
        }
    }
    errors.truncate(5);
    errors
}

#[test]
fn linear_classifiers_match_onnx_runtime() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("testdata/training/linear exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".onnx"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 12, "{} models", names.len());
    for must in [
        "lc_bc_skl2onnx",
        "lc_iris_skl2onnx",
        "lc_binary_1row_softmax",
    ] {
        assert!(names.iter().any(|n| n == must), "{must} missing");
    }
    let failures: Vec<String> = names.iter().flat_map(|n| run(n)).collect();
    assert!(
        failures.is_empty(),
        "{} mismatches against ONNX Runtime:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn node(attrs: Vec<tract_onnx::pb::AttributeProto>) -> tract_onnx::pb::NodeProto {
    tract_onnx::pb::NodeProto {
        op_type: "LinearClassifier".into(),
        domain: "ai.onnx.ml".into(),
        attribute: attrs,
        ..Default::default()
    }
}

fn floats(name: &str, v: &[f32]) -> tract_onnx::pb::AttributeProto {
    tract_onnx::pb::AttributeProto {
        name: name.into(),
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> tract_onnx::pb::AttributeProto {
    tract_onnx::pb::AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        ..Default::default()
    }
}

#[test]
fn malformed_linear_classifiers_fail_at_load() {
    use cordon_trees::tract_ops::parse_linear_classifier as parse;
    let labels = ints("classlabels_ints", &[0, 1, 2]);
    let cases = [
        (
            "no labels",
            node(vec![
                floats("coefficients", &[1.0]),
                floats("intercepts", &[0.0]),
            ]),
        ),
        (
            "no intercepts",
            node(vec![labels.clone(), floats("coefficients", &[1.0; 6])]),
        ),
        (
            "rows do not divide",
            node(vec![
                labels.clone(),
                floats("coefficients", &[1.0; 7]),
                floats("intercepts", &[0.0; 3]),
            ]),
        ),
        (
            "one row, three labels",
            node(vec![
                labels.clone(),
                floats("coefficients", &[1.0; 2]),
                floats("intercepts", &[0.0]),
            ]),
        ),
        (
            "two rows, three labels",
            node(vec![
                labels.clone(),
                floats("coefficients", &[1.0; 4]),
                floats("intercepts", &[0.0; 2]),
            ]),
        ),
        (
            "not finite",
            node(vec![
                labels,
                floats("coefficients", &[f32::NAN, 1.0, 1.0]),
                floats("intercepts", &[0.0; 3]),
            ]),
        ),
    ];
    for (what, n) in cases {
        assert!(parse(&n).is_err(), "{what} was accepted");
    }
}
