//! Conformance: every model of the reference zoos (models/trees, made by
//! scripts/make_tree_models.py, and models/trees2, made by scripts/make_tree_zoo2.py) loads as a
//! whole graph in tract with Cordon's tree operators, and its outputs on the committed input set
//! equal ONNX Runtime's: labels exactly, scores within `|a-b| <= 1e-5·max(|a|,|b|) + 1e-6`. The
//! fast and the generic walker must both agree.
//! The fraud-scoring example's model (models/fraud, made by scripts/make_fraud_model.py) is held
//! to the same rule: a realistic GBDT, 300 trees over 20 features with NaN inputs.

use serde_json::Value;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

/// The reference zoos: a directory under models/, and the fewest models it must hold.
const ZOOS: &[(&str, usize)] = &[("trees", 60), ("trees2", 15)];

fn zoo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(name)
}

fn fraud_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fraud")
}

const FRAUD: &str = "fraud_gbdt";

fn models(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".onnx"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn float(v: &Value) -> f64 {
    match v {
        Value::Null => f64::NAN,
        v => v.as_f64().expect("number or null"),
    }
}

/// An OIP JSON tensor as a tract tensor.
fn to_tensor(t: &Value) -> Tensor {
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = t["data"].as_array().unwrap();
    match t["datatype"].as_str().unwrap() {
        "FP32" => {
            let v: Vec<f32> = data.iter().map(|x| float(x) as f32).collect();
            Tensor::from_shape(&shape, &v).unwrap()
        }
        "FP64" => {
            let v: Vec<f64> = data.iter().map(float).collect();
            Tensor::from_shape(&shape, &v).unwrap()
        }
        "INT64" => {
            let v: Vec<i64> = data.iter().map(|x| x.as_i64().unwrap()).collect();
            Tensor::from_shape(&shape, &v).unwrap()
        }
        "INT32" => {
            let v: Vec<i32> = data.iter().map(|x| x.as_i64().unwrap() as i32).collect();
            Tensor::from_shape(&shape, &v).unwrap()
        }
        other => panic!("input datatype {other}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-6
}

/// Compares one output; returns a description of the first mismatches.
fn compare(name: &str, got: &Tensor, want: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let data = want["data"].as_array().unwrap();
    let shape: Vec<usize> = want["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    if got.shape() != shape.as_slice() {
        errors.push(format!(
            "{name}: shape {:?}, expected {:?}",
            got.shape(),
            shape
        ));
        return errors;
    }
    match want["datatype"].as_str().unwrap() {
        "INT64" => {
            let got = got.cast_to::<i64>().unwrap();
            let got = got.try_as_plain_ram().unwrap();
            let got = got.as_slice::<i64>().unwrap();
            for (i, (g, w)) in got.iter().zip(data).enumerate() {
                if *g != w.as_i64().unwrap() {
                    errors.push(format!("{name}[{i}]: label {g}, expected {w}"));
                }
            }
        }
        "BYTES" => {
            let got = got.try_as_plain_ram().unwrap();
            let got = got.as_slice::<String>().unwrap();
            for (i, (g, w)) in got.iter().zip(data).enumerate() {
                if g != w.as_str().unwrap() {
                    errors.push(format!("{name}[{i}]: label {g:?}, expected {w}"));
                }
            }
        }
        "FP32" | "FP64" => {
            let got = got.cast_to::<f64>().unwrap();
            let got = got.try_as_plain_ram().unwrap();
            let got = got.as_slice::<f64>().unwrap();
            for (i, (g, w)) in got.iter().zip(data).enumerate() {
                if !close(*g, float(w)) {
                    errors.push(format!("{name}[{i}]: {g}, expected {w}"));
                }
            }
        }
        other => errors.push(format!("{name}: unexpected datatype {other}")),
    }
    errors.truncate(5);
    errors
}

fn run_model(dir: &Path, name: &str, generic: bool) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).map_err(|e| e.to_string())?;
    let model = cordon_trees::load_inference_model_with(&bytes, generic)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| format!("{name}: load: {e:#}"))?;
    let input = read_json(&dir.join(format!("{name}.input.json")));
    let inputs: TVec<TValue> = input["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| to_tensor(t).into())
        .collect();
    let outputs = model
        .run(inputs)
        .map_err(|e| format!("{name}: run: {e:#}"))?;
    let expected = read_json(&dir.join(format!("{name}.expected.json")));
    let expected = expected["outputs"].as_array().unwrap();
    if outputs.len() != expected.len() {
        return Err(format!(
            "{name}: {} outputs, expected {}",
            outputs.len(),
            expected.len()
        ));
    }
    let mut errors = Vec::new();
    for (got, want) in outputs.iter().zip(expected) {
        let out_name = format!("{name}.{}", want["name"].as_str().unwrap());
        errors.extend(compare(&out_name, got, want));
    }
    Ok(errors)
}

fn check_all(generic: bool) {
    let mut failures = Vec::new();
    for &(zoo_name, min_models) in ZOOS {
        let dir = zoo(zoo_name);
        let names = models(&dir);
        assert!(
            names.len() >= min_models,
            "models/{zoo_name} has {} models",
            names.len()
        );
        for name in &names {
            match run_model(&dir, name, generic) {
                Ok(errors) => failures.extend(errors),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches against ONNX Runtime:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_zoo_model_matches_onnx_runtime() {
    check_all(false);
}

#[test]
fn generic_walker_matches_onnx_runtime_too() {
    check_all(true);
}

#[test]
fn fraud_model_matches_onnx_runtime_with_both_walkers() {
    for generic in [false, true] {
        let errors = run_model(&fraud_dir(), FRAUD, generic).unwrap_or_else(|e| vec![e]);
        assert!(
            errors.is_empty(),
            "generic walker {generic}: mismatches against ONNX Runtime:\n{}",
            errors.join("\n")
        );
    }
}

/// The reference rows must exercise what the model is for: missing values, and both sides of
/// the decision (otherwise agreeing with ONNX Runtime on them would prove little).
#[test]
fn fraud_reference_rows_cover_nan_and_both_classes() {
    let input = read_json(&fraud_dir().join(format!("{FRAUD}.input.json")));
    let data = input["inputs"][0]["data"].as_array().unwrap();
    assert!(data.iter().any(Value::is_null), "no NaN in the input set");
    let expected = read_json(&fraud_dir().join(format!("{FRAUD}.expected.json")));
    let probs = expected["outputs"][1]["data"].as_array().unwrap();
    let fraud_p: Vec<f64> = probs.iter().skip(1).step_by(2).map(float).collect();
    assert!(fraud_p.iter().any(|&p| p > 0.9) && fraud_p.iter().any(|&p| p < 0.01));
}

/// The zoos' real models, and the fraud model, must take the fast path (the generic one is for
/// EQ/NEQ/MEMBER).
#[test]
fn real_models_compile_to_the_fast_walker() {
    let mut paths: Vec<(String, PathBuf)> = ZOOS
        .iter()
        .flat_map(|&(zoo_name, _)| {
            let dir = zoo(zoo_name);
            models(&dir)
                .into_iter()
                .filter(|n| !n.starts_with("hb_"))
                .map(move |n| (n.clone(), dir.join(format!("{n}.onnx"))))
        })
        .collect();
    paths.push((FRAUD.into(), fraud_dir().join(format!("{FRAUD}.onnx"))));
    for (name, path) in &paths {
        let proto = tract_onnx::onnx().proto_model_for_path(path).unwrap();
        let graph = proto.graph.as_ref().unwrap();
        for node in &graph.node {
            let ensemble = match node.op_type.as_str() {
                "TreeEnsembleClassifier" => cordon_trees::onnx::classifier(node),
                "TreeEnsembleRegressor" => cordon_trees::onnx::regressor(node),
                "TreeEnsemble" => cordon_trees::onnx::tree_ensemble(node),
                _ => continue,
            }
            .unwrap();
            let compiled = cordon_trees::CompiledEnsemble::new(ensemble).unwrap();
            assert!(compiled.is_fast(), "{name} does not take the fast walker");
        }
    }
}
