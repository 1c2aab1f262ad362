//! The dense zoo (models/dense, made by scripts/make_dense_zoo.py): every model the plan compiles
//! gives ONNX Runtime's outputs within the zoo's tolerance, on the whole input set as one batch and
//! row by row; models with operators outside the plan are refused by name, never run wrongly.

use cordon_dense::{DensePlan, InputData, OutputData};
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

/// The tensors of a zoo file (`NAME.input.json`'s "inputs", `NAME.expected.json`'s "outputs"):
/// name, shape and elements, in file order.
fn tensors(file: &str, key: &str) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let doc = read_json(&zoo().join(file));
    let numbers = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    doc[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = numbers(&t["shape"])
                .into_iter()
                .map(|d| d as usize)
                .collect();
            (
                t["name"].as_str().unwrap().to_string(),
                shape,
                numbers(&t["data"]),
            )
        })
        .collect()
}

/// (shape, data) of each input, in file order.
fn inputs(name: &str) -> Vec<(Vec<usize>, Vec<f32>)> {
    tensors(&format!("{name}.input.json"), "inputs")
        .into_iter()
        .map(|(_, shape, data)| (shape, data.into_iter().map(|v| v as f32).collect()))
        .collect()
}

fn expected(name: &str) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    tensors(&format!("{name}.expected.json"), "outputs")
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
                assert_eq!(v.len(), want.len(), "{name}/{out}: element count");
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
    let models = models();
    assert!(models.len() >= 17, "the zoo lists {} models", models.len());
    for (name, _ops) in models {
        let plan = DensePlan::compile(&load(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(plan.rows_independent(), "{name}");
        // Debug shows the interface and the steps, never the weights (the model owner's secret).
        let debug = format!("{plan:?}");
        assert!(
            debug.contains("steps") && debug.len() < 4096,
            "{name}: {debug}"
        );
        let ins = inputs(&name);
        let want = expected(&name);
        let rows = ins[0].0[0];
        let worst = check(&name, &run_rows(&plan, &ins, 0, rows), &want, 0, rows);
        for r in 0..rows {
            check(&name, &run_rows(&plan, &ins, r, 1), &want, r, 1);
        }
        // Small batches too (faer's small-matrix path, buffers reused within a call).
        for (first, n) in [(0, 2), (5, 3), (rows - 7, 7)] {
            check(&name, &run_rows(&plan, &ins, first, n), &want, first, n);
        }
        eprintln!("{name}: {rows} rows, largest scaled difference {worst:.2e}");
    }
}

/// A standardisation is one pass, and each product takes the bias and activation after it: the
/// steps left are what the plan runs.
#[test]
fn scalers_biases_and_activations_are_folded() {
    let steps = |name: &str| DensePlan::compile(&load(name)).unwrap().to_string();
    // Sub, Div, Gemm, Relu, Gemm, Sigmoid, Sub, Concat, Neg, Concat, ArgMax.
    let plan = steps("d_bc_gemm_16_relu");
    // The logit is read twice (Sigmoid, Neg): the second product keeps it.
    assert!(
        plan.starts_with("scale 30 (Div)\nmatmul 30x16 +bias Relu\nmatmul 16x1 +bias\nSigmoid\n"),
        "{plan}"
    );
    // PyTorch style: MatMul, Add, Relu.
    let plan = steps("d_digits_torch_256x256_relu");
    assert!(
        plan.contains("matmul 64x256 +bias Relu\nmatmul 256x256 +bias Relu\n"),
        "{plan}"
    );
    // skl2onnx: Scaler (Sub, Mul), MatMul, Add, Relu; labels gathered from the classes.
    let plan = steps("d_bc_skl2onnx_32x32_relu");
    assert!(
        plan.starts_with("scale 30 (Mul)\nmatmul 30x32 +bias Relu\n"),
        "{plan}"
    );
    // Labels gathered, then copied by the Reshape that gives them their shape and the Cast to int64.
    assert!(
        plan.ends_with("argmax\ngather 2\nconcat 1\nconcat 1\n"),
        "{plan}"
    );
}

/// An attribute `name` holding the integer `i`, declared of type `kind`.
fn int_attr(name: &str, i: i64, kind: i32) -> tract_onnx::pb::AttributeProto {
    tract_onnx::pb::AttributeProto {
        name: name.into(),
        r#type: kind,
        i,
        ..Default::default()
    }
}

/// What the plan does not implement is refused by name, so that the runtime runs it on tract.
#[test]
fn operators_outside_the_plan_are_refused_by_name() {
    let refused = |edit: &dyn Fn(&mut tract_onnx::pb::ModelProto)| {
        let mut model = load("d_bc_gemm_16_relu");
        edit(&mut model);
        DensePlan::compile(&model).unwrap_err().to_string()
    };
    let node = |m: &mut tract_onnx::pb::ModelProto, op: &str| -> usize {
        let g = m.graph.as_mut().unwrap();
        g.node.iter().position(|n| n.op_type == op).unwrap()
    };
    let err = refused(&|m| {
        let i = node(m, "Relu");
        m.graph.as_mut().unwrap().node[i].op_type = "Elu".into();
    });
    assert!(
        err.contains("Elu") && err.contains("not in the dense plan"),
        "{err}"
    );
    let err = refused(&|m| {
        let i = node(m, "Relu");
        m.graph.as_mut().unwrap().node[i].domain = "com.example".into();
    });
    assert!(err.contains("com.example"), "{err}");
    // Gemm with the left operand transposed.
    let err = refused(&|m| {
        let i = node(m, "Gemm");
        let a = int_attr("transA", 1, 2);
        m.graph.as_mut().unwrap().node[i].attribute.push(a);
    });
    assert!(err.contains("transA"), "{err}");
    // Softmax along the batch axis.
    let err = refused(&|m| {
        let i = node(m, "Relu");
        let n = &mut m.graph.as_mut().unwrap().node[i];
        n.op_type = "Softmax".into();
        let a = int_attr("axis", 0, 2);
        n.attribute.push(a);
    });
    assert!(err.contains("axis 0"), "{err}");
    // An input of rank 3.
    let err = refused(&|m| {
        let g = m.graph.as_mut().unwrap();
        if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
            g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            let shape = t.shape.as_mut().unwrap();
            shape.dim.push(shape.dim[1].clone());
        }
    });
    assert!(err.contains("rank 3"), "{err}");
    // An attribute of the wrong type (ONNX Runtime refuses the model; reading another field
    // would compute something else).
    let err = refused(&|m| {
        let i = node(m, "Gemm");
        let a = int_attr("alpha", 2, 2);
        m.graph.as_mut().unwrap().node[i].attribute.push(a);
    });
    assert!(err.contains("attribute alpha has type 2"), "{err}");
    // A node output named like an initializer: a second definition.
    let err = refused(&|m| {
        let g = m.graph.as_mut().unwrap();
        let name = g.initializer[0].name.clone();
        let i = g.node.iter().position(|n| n.op_type == "Relu").unwrap();
        let old = std::mem::replace(&mut g.node[i].output[0], name.clone());
        for n in &mut g.node {
            n.input
                .iter_mut()
                .filter(|x| **x == old)
                .for_each(|x| *x = name.clone());
        }
    });
    assert!(err.contains("defined more than once"), "{err}");
    // An empty weight matrix declaring 2^40 columns: no bytes of model, terabytes per batch.
    let err = refused(&|m| {
        let g = m.graph.as_mut().unwrap();
        let i = g.node.iter().position(|n| n.op_type == "Gemm").unwrap();
        let b = g.node[i].input[1].clone();
        let t = g.initializer.iter_mut().find(|t| t.name == b).unwrap();
        t.dims = vec![0, 1 << 40];
        t.raw_data.clear();
        t.float_data.clear();
    });
    assert!(err.contains("no elements"), "{err}");
    // Two inputs with different batch dimensions.
    let err = {
        let mut model = load("d_bc_2in_32x32_relu");
        let g = model.graph.as_mut().unwrap();
        if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
            g.input[1].r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape.as_mut().unwrap().dim[0].value =
                Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimParam("M".into()));
        }
        DensePlan::compile(&model).unwrap_err().to_string()
    };
    assert!(err.contains("two batch sizes"), "{err}");
    // An initializer whose bytes do not fill its dimensions.
    let err = refused(&|m| {
        let g = m.graph.as_mut().unwrap();
        let t = g
            .initializer
            .iter_mut()
            .find(|t| !t.raw_data.is_empty() || !t.float_data.is_empty())
            .unwrap();
        if t.raw_data.is_empty() {
            t.float_data.pop();
        } else {
            t.raw_data.truncate(t.raw_data.len() - 4);
        }
    });
    assert!(err.contains("malformed") || err.contains("hold"), "{err}");
}

/// A float32 input `[dim0, cols]` for a hand-made graph.
fn tensor_input(
    name: &str,
    dim0: tract_onnx::pb::tensor_shape_proto::dimension::Value,
    cols: i64,
) -> tract_onnx::pb::ValueInfoProto {
    use tract_onnx::pb;
    let dim = |v| pb::tensor_shape_proto::Dimension {
        value: Some(v),
        ..Default::default()
    };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        dim(dim0),
                        dim(pb::tensor_shape_proto::dimension::Value::DimValue(cols)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An input whose first dimension the graph fixes (a context row broadcast against the batch) is
/// that many rows, whatever the batch: served, and refused with another count.
#[test]
fn an_input_of_fixed_rows_broadcasts_against_the_batch() {
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            node: vec![pb::NodeProto {
                input: vec!["x".into(), "ctx".into()],
                output: vec!["y".into()],
                op_type: "Add".into(),
                ..Default::default()
            }],
            input: vec![
                tensor_input("x", Dim::DimParam("N".into()), 3),
                tensor_input("ctx", Dim::DimValue(1), 3),
            ],
            output: vec![tensor_input("y", Dim::DimParam("N".into()), 3)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let plan = DensePlan::compile(&model).unwrap();
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let out = plan
        .run(&[
            InputData { rows: 2, data: &x },
            InputData {
                rows: 1,
                data: &[10.0, 20.0, 30.0],
            },
        ])
        .unwrap();
    assert_eq!(out[0].shape, vec![2, 3]);
    assert_eq!(
        out[0].data,
        OutputData::F32(vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0])
    );
    // The context row is shared by every row of a batch: requests may not be merged.
    assert!(!plan.rows_independent());
    let err = plan
        .run(&[
            InputData {
                rows: 1,
                data: &x[..3],
            },
            InputData { rows: 2, data: &x },
        ])
        .unwrap_err();
    assert!(err.to_string().contains("the model fixes 1"), "{err}");
}

/// A one-node-per-line graph for the refusal tests: float32 inputs `[dim0, cols]`, nodes
/// `(op, inputs, output)`, outputs declared float32 `[N, ?]`.
fn graph(
    inputs: Vec<tract_onnx::pb::ValueInfoProto>,
    nodes: &[(&str, &[&str], &str)],
    initializers: Vec<tract_onnx::pb::TensorProto>,
    output: &str,
) -> tract_onnx::pb::ModelProto {
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            node: nodes
                .iter()
                .map(|(op, ins, out)| pb::NodeProto {
                    input: ins.iter().map(|s| s.to_string()).collect(),
                    output: vec![out.to_string()],
                    op_type: op.to_string(),
                    attribute: if *op == "Concat" {
                        vec![int_attr("axis", 1, 2)]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                })
                .collect(),
            input: inputs,
            initializer: initializers,
            output: vec![tensor_input(output, Dim::DimParam("N".into()), 1)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn float_constant(name: &str, dims: &[i64]) -> tract_onnx::pb::TensorProto {
    let n: i64 = dims.iter().product();
    tract_onnx::pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: vec![0; n as usize * 4],
        ..Default::default()
    }
}

/// A small model must not make a call allocate gigabytes: values wider than the plan takes, or
/// fixed values larger than it takes, are refused at load.
#[test]
fn small_models_that_would_make_huge_values_are_refused() {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    // Concat of a value with itself, 30 times: [N, 4] -> [N, 2^32] in a few hundred bytes.
    let names: Vec<String> = (0..=30).map(|i| format!("v{i}")).collect();
    let nodes: Vec<(&str, [&str; 2], &str)> = (0..30)
        .map(|i| {
            (
                "Concat",
                [names[i].as_str(), names[i].as_str()],
                names[i + 1].as_str(),
            )
        })
        .collect();
    let nodes: Vec<(&str, &[&str], &str)> =
        nodes.iter().map(|(o, i, n)| (*o, &i[..], *n)).collect();
    let model = graph(
        vec![tensor_input("v0", Dim::DimParam("N".into()), 4)],
        &nodes,
        vec![],
        "v30",
    );
    let err = DensePlan::compile(&model).unwrap_err().to_string();
    assert!(err.contains("at most 1048576 columns"), "{err}");
    // The outer product of two constant vectors, recomputed at every call: 4096 x 65536.
    let model = graph(
        vec![tensor_input("x", Dim::DimParam("N".into()), 1)],
        &[
            ("Mul", &["col", "row"], "outer"),
            ("Add", &["x", "outer"], "y"),
        ],
        vec![
            float_constant("col", &[4096, 1]),
            float_constant("row", &[1, 65536]),
        ],
        "y",
    );
    let err = DensePlan::compile(&model).unwrap_err().to_string();
    assert!(err.contains("elements of fixed size"), "{err}");
    // One 4 MiB weight matrix named by 40 products: a copy each would hold 160 MiB.
    let names: Vec<String> = (0..=40).map(|i| format!("h{i}")).collect();
    let nodes: Vec<(&str, [&str; 2], &str)> = (0..40)
        .map(|i| ("MatMul", [names[i].as_str(), "w"], names[i + 1].as_str()))
        .collect();
    let nodes: Vec<(&str, &[&str], &str)> =
        nodes.iter().map(|(o, i, n)| (*o, &i[..], *n)).collect();
    let model = graph(
        vec![tensor_input("h0", Dim::DimParam("N".into()), 1024)],
        &nodes,
        vec![float_constant("w", &[1024, 1024])],
        "h40",
    );
    let err = DensePlan::compile(&model).unwrap_err().to_string();
    assert!(err.contains("copied into the plan's steps"), "{err}");
    // Within the caps, a batch whose values would pass 4 GiB is refused at the call, not left to
    // fail an allocation: [N, 1] x [1, 2^20] is 16 MiB a row (the product and its output copy).
    let model = graph(
        vec![tensor_input("x", Dim::DimParam("N".into()), 1)],
        &[("MatMul", &["x", "w"], "y")],
        vec![float_constant("w", &[1, 1 << 20])],
        "y",
    );
    let plan = DensePlan::compile(&model).unwrap();
    let x = vec![1.0f32; 300];
    assert!(plan
        .run(&[InputData {
            rows: 2,
            data: &x[..2]
        }])
        .is_ok());
    let err = plan
        .run(&[InputData {
            rows: 300,
            data: &x,
        }])
        .unwrap_err();
    assert!(
        matches!(err, cordon_dense::RunError::TooLarge { rows: 300 }),
        "{err}"
    );
    // Two inputs whose first dimensions are unnamed: independent sizes for ONNX Runtime.
    let model = graph(
        vec![
            tensor_input("a", Dim::DimParam(String::new()), 3),
            tensor_input("b", Dim::DimParam(String::new()), 3),
        ],
        &[("Add", &["a", "b"], "y")],
        vec![],
        "y",
    );
    let err = DensePlan::compile(&model).unwrap_err().to_string();
    assert!(err.contains("unnamed first dimension"), "{err}");
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
