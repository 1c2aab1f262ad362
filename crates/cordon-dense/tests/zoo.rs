//! The dense zoo (models/dense, made by scripts/make_dense_zoo.py): every model the plan compiles
//! gives ONNX Runtime's outputs within the zoo's tolerance, on the whole input set as one batch and
//! row by row; models with operators outside the plan are refused by name, never run wrongly.

use cordon_dense::{CompileError, DensePlan, InputData, OutputData};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::Framework;

fn zoo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/dense")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn load(name: &str) -> tract_onnx::pb::ModelProto {
    let path = zoo().join(format!("{name}.onnx"));
    let bytes = std::fs::read(path).unwrap();
    tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .unwrap()
}

/// (shape, data) of each input, in file order.
fn inputs(name: &str) -> Vec<(Vec<usize>, Vec<f32>)> {
    let doc = read_json(&zoo().join(format!("{name}.input.json")));
    doc["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let data = t["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (shape, data)
        })
        .collect()
}

fn expected(name: &str) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let doc = read_json(&zoo().join(format!("{name}.expected.json")));
    doc["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let data = t["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            (t["name"].as_str().unwrap().to_string(), shape, data)
        })
        .collect()
}

fn models() -> Vec<(String, Vec<String>)> {
    let manifest = read_json(&zoo().join("manifest.json"));
    manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let ops = m["ops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap().to_string())
                .collect();
            (m["name"].as_str().unwrap().to_string(), ops)
        })
        .collect()
}

/// Rows `first..first + n` of every input.
fn run_rows(
    plan: &DensePlan,
    ins: &[(Vec<usize>, Vec<f32>)],
    first: usize,
    n: usize,
) -> Vec<cordon_dense::Output> {
    let parts: Vec<InputData<'_>> = ins
        .iter()
        .map(|(shape, data)| InputData {
            rows: n,
            data: &data[first * shape[1]..(first + n) * shape[1]],
        })
        .collect();
    plan.run(&parts).unwrap()
}

/// Checks outputs for rows `first..first + n` against the expected set; returns the largest
/// scaled difference.
fn check(
    name: &str,
    got: &[cordon_dense::Output],
    want: &[(String, Vec<usize>, Vec<f64>)],
    first: usize,
    n: usize,
) -> f64 {
    assert_eq!(got.len(), want.len(), "{name}: output count");
    let mut worst = 0.0f64;
    for (g, (out, shape, data)) in got.iter().zip(want) {
        let per_row = shape[1..].iter().product::<usize>();
        let mut want_shape = shape.clone();
        want_shape[0] = n;
        assert_eq!(g.shape, want_shape, "{name}/{out}: shape");
        let want = &data[first * per_row..(first + n) * per_row];
        match &g.data {
            OutputData::I64(v) => {
                let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                assert_eq!(v, want, "{name}/{out}: labels, rows {first}..{}", first + n);
            }
            OutputData::F32(v) => {
                for (i, (&a, &b)) in v.iter().zip(want).enumerate() {
                    let d = (a as f64 - b).abs() / b.abs().max(1.0);
                    assert!(
                        d <= 1e-5,
                        "{name}/{out}: element {} is {a}, ONNX Runtime {b}",
                        first * per_row + i
                    );
                    worst = worst.max(d);
                }
            }
        }
    }
    worst
}

#[test]
fn every_dense_model_equals_onnx_runtime_in_batch_and_row_by_row() {
    let mut compiled = 0;
    for (name, ops) in models() {
        let plan = match DensePlan::compile(&load(&name)) {
            Ok(plan) => plan,
            Err(e) => {
                // Only a model with an operator outside the default domain (skl2onnx's ai.onnx.ml
                // Scaler and ArrayFeatureExtractor) may be left to tract.
                assert!(
                    ops.iter().any(|o| o.starts_with("ai.onnx.ml:")),
                    "{name}: {e}"
                );
                assert!(matches!(e, CompileError::Unsupported { .. }), "{name}: {e}");
                continue;
            }
        };
        compiled += 1;
        let ins = inputs(&name);
        let want = expected(&name);
        let rows = ins[0].0[0];
        let worst = check(&name, &run_rows(&plan, &ins, 0, rows), &want, 0, rows);
        for r in 0..rows {
            check(&name, &run_rows(&plan, &ins, r, 1), &want, r, 1);
        }
        eprintln!("{name}: {rows} rows, largest scaled difference {worst:.2e}");
    }
    assert!(compiled >= 14, "only {compiled} models compiled");
}

#[test]
fn a_plan_refuses_inputs_of_the_wrong_count_length_or_rows() {
    let plan = DensePlan::compile(&load("d_bc_2in_32x32_relu")).unwrap();
    let widths: Vec<usize> = plan.inputs().map(|i| i.features).collect();
    assert_eq!(widths.len(), 2);
    let a = vec![0.5f32; widths[0] * 3];
    let b = vec![0.5f32; widths[1] * 3];
    let err = plan.run(&[InputData { rows: 3, data: &a }]).unwrap_err();
    assert!(
        err.to_string().contains("1 inputs given, the plan takes 2"),
        "{err}"
    );
    let err = plan
        .run(&[
            InputData {
                rows: 3,
                data: &a[1..],
            },
            InputData { rows: 3, data: &b },
        ])
        .unwrap_err();
    assert!(err.to_string().contains("values"), "{err}");
    let err = plan
        .run(&[
            InputData { rows: 3, data: &a },
            InputData {
                rows: 2,
                data: &b[..widths[1] * 2],
            },
        ])
        .unwrap_err();
    assert!(err.to_string().contains("has 2 rows"), "{err}");
    let err = plan
        .run(&[
            InputData {
                rows: usize::MAX,
                data: &a,
            },
            InputData { rows: 3, data: &b },
        ])
        .unwrap_err();
    assert!(
        matches!(err, cordon_dense::RunError::InputLength { .. }),
        "{err}"
    );
    // Zero rows is a batch too.
    let out = plan
        .run(&[
            InputData { rows: 0, data: &[] },
            InputData { rows: 0, data: &[] },
        ])
        .unwrap();
    assert!(out.iter().all(|o| o.shape[0] == 0));
}

/// Every byte of a model flipped in turn, and truncations: the parser or the compiler refuses it,
/// or the plan it compiles runs; nothing panics.
#[test]
fn mangled_models_are_refused_or_run_never_panic() {
    let bytes = std::fs::read(zoo().join("d_wine_gemm_8_logistic.onnx")).unwrap();
    let onnx = tract_onnx::onnx();
    let mut outcomes = [0usize; 3];
    let mut attempt = |b: &[u8]| {
        let Ok(proto) = onnx.proto_model_for_read(&mut &b[..]) else {
            outcomes[0] += 1;
            return;
        };
        match DensePlan::compile(&proto) {
            Err(_) => outcomes[1] += 1,
            Ok(plan) => {
                let inputs: Vec<Vec<f32>> =
                    plan.inputs().map(|i| vec![0.25; i.features * 2]).collect();
                let parts: Vec<InputData<'_>> = inputs
                    .iter()
                    .map(|d| InputData { rows: 2, data: d })
                    .collect();
                let _ = plan.run(&parts);
                outcomes[2] += 1;
            }
        }
    };
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            attempt(&b);
        }
    }
    for len in (0..bytes.len()).step_by(7) {
        attempt(&bytes[..len]);
    }
    // Each way out is taken: the test reaches the compiler and the plan, not only the parser.
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}
