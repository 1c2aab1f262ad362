//! The inference engine: ONNX models through tract, speaking Open Inference Protocol tensors.

use cordon_proto::oip::{InferRequest, InferResponse, ModelMetadata, Tensor, TensorMetadata};
use serde_json::Value;
use std::sync::Arc;
use thiserror::Error;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Why a model could not be loaded or a request evaluated. Messages name the tensor and both values,
/// and never contain input data.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    #[error("model {model}: cannot load ONNX: {reason}")]
    Load { model: String, reason: String },
    #[error("input tensor {0:?} is required but missing")]
    MissingInput(String),
    #[error("input tensor {0:?} is not an input of this model")]
    UnknownInput(String),
    #[error("input {name:?}: datatype {found}, the model expects {expected}")]
    Datatype {
        name: String,
        found: String,
        expected: String,
    },
    #[error("input {name:?}: shape {found:?} does not fit the model's {expected:?}")]
    Shape {
        name: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("input {name:?}: shape {shape:?} holds {expected} elements, data has {found}")]
    DataLength {
        name: String,
        shape: Vec<i64>,
        expected: usize,
        found: usize,
    },
    #[error("input {name:?}: element {index} is not a valid {datatype}")]
    DataValue {
        name: String,
        index: usize,
        datatype: String,
    },
    #[error("input {name:?}: datatype {datatype} is not supported by this engine")]
    UnsupportedDatatype { name: String, datatype: String },
    #[error("output {0:?} is not an output of this model")]
    UnknownOutput(String),
    #[error("inference failed: {0}")]
    Run(String),
}

impl EngineError {
    /// The HTTP status an Open Inference Protocol server answers this error with: the request's
    /// fault (400) unless the engine itself failed (500).
    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::Run(_) | EngineError::Load { .. } => 500,
            _ => 400,
        }
    }
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded ONNX model.
pub struct OnnxModel {
    name: String,
    version: String,
    plan: Plan,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

fn onnx_datatype(elem_type: i32) -> &'static str {
    match elem_type {
        1 => "FP32",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "BYTES",
        9 => "BOOL",
        10 => "FP16",
        11 => "FP64",
        12 => "UINT32",
        13 => "UINT64",
        _ => "UNKNOWN",
    }
}

fn datum_name(dt: DatumType) -> &'static str {
    match dt {
        DatumType::F32 => "FP32",
        DatumType::F64 => "FP64",
        DatumType::F16 => "FP16",
        DatumType::I64 => "INT64",
        DatumType::I32 => "INT32",
        DatumType::I16 => "INT16",
        DatumType::I8 => "INT8",
        DatumType::U64 => "UINT64",
        DatumType::U32 => "UINT32",
        DatumType::U16 => "UINT16",
        DatumType::U8 => "UINT8",
        DatumType::Bool => "BOOL",
        DatumType::String => "BYTES",
        _ => "UNKNOWN",
    }
}

fn tensor_metadata(v: &pb::ValueInfoProto) -> TensorMetadata {
    let (datatype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => {
            let shape = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(pb::tensor_shape_proto::dimension::Value::DimValue(n))
                                if n > 0 =>
                            {
                                n
                            }
                            _ => -1,
                        })
                        .collect()
                })
                .unwrap_or_default();
            (onnx_datatype(t.elem_type), shape)
        }
        None => ("UNKNOWN", vec![]),
    };
    TensorMetadata {
        name: v.name.clone(),
        datatype: datatype.into(),
        shape,
    }
}

impl OnnxModel {
    /// Parses, optimizes and prepares an ONNX model from bytes held in memory.
    pub fn load(name: &str, version: &str, bytes: &[u8]) -> Result<OnnxModel, EngineError> {
        let err = |e: TractError| EngineError::Load {
            model: name.into(),
            reason: format!("{e:#}"),
        };
        let onnx = cordon_trees::onnx_parser();
        let proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(err)?;
        let graph = proto.graph.as_ref().ok_or_else(|| EngineError::Load {
            model: name.into(),
            reason: "model has no graph".into(),
        })?;
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<TensorMetadata> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(tensor_metadata)
            .collect();
        let mut outputs: Vec<TensorMetadata> = graph.output.iter().map(tensor_metadata).collect();
        // Tree operators come from cordon-trees (tract's own cannot load most exported tree
        // models); input dimensions the exporter left unnamed become symbols.
        let plan = cordon_trees::model_from_proto(&onnx, &proto)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(err)?;
        // An output ONNX types as something other than a tensor (ZipMap's sequence of maps) is
        // served as the tensor the plan computes: describe it from the plan.
        for (meta, outlet) in outputs
            .iter_mut()
            .zip(plan.model().output_outlets().map_err(err)?)
        {
            if meta.datatype == "UNKNOWN" {
                let fact = plan.model().outlet_fact(*outlet).map_err(err)?;
                meta.datatype = datum_name(fact.datum_type).into();
                meta.shape = fact
                    .shape
                    .iter()
                    .map(|d| d.to_i64().unwrap_or(-1))
                    .collect();
            }
        }
        Ok(OnnxModel {
            name: name.into(),
            version: version.into(),
            plan,
            inputs,
            outputs,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn metadata(&self) -> ModelMetadata {
        ModelMetadata {
            name: self.name.clone(),
            versions: vec![self.version.clone()],
            platform: "onnx_tract".into(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
        }
    }

    /// Evaluates an Open Inference Protocol request. Inputs are checked against the model's metadata
    /// before anything runs.
    pub fn infer(&self, request: &InferRequest) -> Result<InferResponse, EngineError> {
        for t in &request.inputs {
            if !self.inputs.iter().any(|m| m.name == t.name) {
                return Err(EngineError::UnknownInput(t.name.clone()));
            }
        }
        let wanted: Option<Vec<&str>> = request
            .outputs
            .as_ref()
            .map(|o| o.iter().map(|o| o.name.as_str()).collect());
        if let Some(w) = &wanted {
            for name in w {
                if !self.outputs.iter().any(|m| m.name == *name) {
                    return Err(EngineError::UnknownOutput(name.to_string()));
                }
            }
        }
        let mut values: TVec<TValue> = tvec![];
        for meta in &self.inputs {
            let t = request
                .inputs
                .iter()
                .find(|t| t.name == meta.name)
                .ok_or_else(|| EngineError::MissingInput(meta.name.clone()))?;
            values.push(to_tract(meta, t)?.into());
        }
        let results = self
            .plan
            .run(values)
            .map_err(|e| EngineError::Run(format!("{e:#}")))?;
        let mut outputs = Vec::new();
        // tract may rename outputs internally; the ONNX graph's outputs are matched by position.
        for (meta, value) in self.outputs.iter().zip(results.iter()) {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.contains(&meta.name.as_str()))
            {
                continue;
            }
            outputs.push(from_tract(&meta.name, value)?);
        }
        Ok(InferResponse {
            model_name: self.name.clone(),
            model_version: Some(self.version.clone()),
            id: request.id.clone(),
            outputs,
        })
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn to_tract(meta: &TensorMetadata, t: &Tensor) -> Result<Tensor_, EngineError> {
    if t.datatype != meta.datatype {
        return Err(EngineError::Datatype {
            name: t.name.clone(),
            found: t.datatype.clone(),
            expected: meta.datatype.clone(),
        });
    }
    let shape_ok = t.shape.len() == meta.shape.len()
        && t.shape
            .iter()
            .zip(&meta.shape)
            .all(|(&f, &e)| f >= 0 && (e < 0 || f == e));
    if !shape_ok {
        return Err(EngineError::Shape {
            name: t.name.clone(),
            found: t.shape.clone(),
            expected: meta.shape.clone(),
        });
    }
    let dims: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX);
    let mut flat = Vec::new();
    flatten(&t.data, &mut flat);
    if flat.len() != expected {
        return Err(EngineError::DataLength {
            name: t.name.clone(),
            shape: t.shape.clone(),
            expected,
            found: flat.len(),
        });
    }
    let bad = |index: usize| EngineError::DataValue {
        name: t.name.clone(),
        index,
        datatype: t.datatype.clone(),
    };
    let run_err = |e: TractError| EngineError::Run(format!("{e:#}"));
    let tensor = |r: Result<Tensor_, TractError>| r.map_err(run_err);
    match meta.datatype.as_str() {
        "FP32" => {
            let data = flat
                .iter()
                .enumerate()
                .map(|(i, v)| float_or_null(v).map(|x| x as f32).ok_or_else(|| bad(i)))
                .collect::<Result<Vec<f32>, _>>()?;
            tensor(Tensor_::from_shape(&dims, &data))
        }
        "FP64" => {
            let data = flat
                .iter()
                .enumerate()
                .map(|(i, v)| float_or_null(v).ok_or_else(|| bad(i)))
                .collect::<Result<Vec<f64>, _>>()?;
            tensor(Tensor_::from_shape(&dims, &data))
        }
        "FP16" => {
            let data = flat
                .iter()
                .enumerate()
                .map(|(i, v)| float_or_null(v).map(f16::from_f64).ok_or_else(|| bad(i)))
                .collect::<Result<Vec<f16>, _>>()?;
            tensor(Tensor_::from_shape(&dims, &data))
        }
        "INT64" => tensor(Tensor_::from_shape(&dims, &signed::<i64>(&flat, bad)?)),
        "INT32" => tensor(Tensor_::from_shape(&dims, &signed::<i32>(&flat, bad)?)),
        "INT16" => tensor(Tensor_::from_shape(&dims, &signed::<i16>(&flat, bad)?)),
        "INT8" => tensor(Tensor_::from_shape(&dims, &signed::<i8>(&flat, bad)?)),
        "UINT64" => tensor(Tensor_::from_shape(&dims, &unsigned::<u64>(&flat, bad)?)),
        "UINT32" => tensor(Tensor_::from_shape(&dims, &unsigned::<u32>(&flat, bad)?)),
        "UINT16" => tensor(Tensor_::from_shape(&dims, &unsigned::<u16>(&flat, bad)?)),
        "UINT8" => tensor(Tensor_::from_shape(&dims, &unsigned::<u8>(&flat, bad)?)),
        "BOOL" => {
            let data = flat
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_bool().ok_or_else(|| bad(i)))
                .collect::<Result<Vec<bool>, _>>()?;
            tensor(Tensor_::from_shape(&dims, &data))
        }
        "BYTES" => {
            let data = flat
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| bad(i)))
                .collect::<Result<Vec<String>, _>>()?;
            // Strings are not `Copy`: build the array, then the tensor.
            tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(&dims), data)
                .map(Tensor_::from)
                .map_err(|e| EngineError::Run(e.to_string()))
        }
        other => Err(EngineError::UnsupportedDatatype {
            name: t.name.clone(),
            datatype: other.into(),
        }),
    }
}

/// Integer elements that must fit `T` exactly (no rounding, no wrap).
fn signed<T: TryFrom<i64>>(
    flat: &[&Value],
    bad: impl Fn(usize) -> EngineError,
) -> Result<Vec<T>, EngineError> {
    flat.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_i64()
                .and_then(|x| T::try_from(x).ok())
                .ok_or_else(|| bad(i))
        })
        .collect()
}

fn unsigned<T: TryFrom<u64>>(
    flat: &[&Value],
    bad: impl Fn(usize) -> EngineError,
) -> Result<Vec<T>, EngineError> {
    flat.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|x| T::try_from(x).ok())
                .ok_or_else(|| bad(i))
        })
        .collect()
}

type Tensor_ = tract_onnx::prelude::Tensor;

/// A float element: JSON has no NaN, so `null` stands for a missing value (NaN), which tree
/// models route by their missing-value tracks.
fn float_or_null(v: &Value) -> Option<f64> {
    match v {
        Value::Null => Some(f64::NAN),
        v => v.as_f64(),
    }
}

fn from_tract(name: &str, value: &TValue) -> Result<Tensor, EngineError> {
    let shape: Vec<i64> = value.shape().iter().map(|&d| d as i64).collect();
    let run_err = |e: TractError| EngineError::Run(format!("output {name}: {e:#}"));
    // tract's optimizer may carry int64 values it derived from shapes as symbolic
    // dimensions (TDim); by the end of a run they are plain integers.
    if value.datum_type() == DatumType::TDim {
        let ints = value.cast_to::<i64>().map_err(run_err)?.into_owned();
        return from_tract(name, &ints.into_tvalue());
    }
    fn values<T: Datum + Clone + Into<Value>>(
        value: &TValue,
        run_err: impl Fn(TractError) -> EngineError,
    ) -> Result<Value, EngineError> {
        Ok(Value::from(
            value
                .to_plain_array_view::<T>()
                .map_err(run_err)?
                .iter()
                .cloned()
                .map(Into::into)
                .collect::<Vec<Value>>(),
        ))
    }
    let (datatype, data) = match value.datum_type() {
        DatumType::F32 => ("FP32", values::<f32>(value, run_err)?),
        DatumType::F64 => ("FP64", values::<f64>(value, run_err)?),
        DatumType::F16 => {
            let widened = value.cast_to::<f32>().map_err(run_err)?.into_owned();
            ("FP16", values::<f32>(&widened.into_tvalue(), run_err)?)
        }
        DatumType::I64 => ("INT64", values::<i64>(value, run_err)?),
        DatumType::I32 => ("INT32", values::<i32>(value, run_err)?),
        DatumType::I16 => ("INT16", values::<i16>(value, run_err)?),
        DatumType::I8 => ("INT8", values::<i8>(value, run_err)?),
        DatumType::U64 => ("UINT64", values::<u64>(value, run_err)?),
        DatumType::U32 => ("UINT32", values::<u32>(value, run_err)?),
        DatumType::U16 => ("UINT16", values::<u16>(value, run_err)?),
        DatumType::U8 => ("UINT8", values::<u8>(value, run_err)?),
        DatumType::Bool => ("BOOL", values::<bool>(value, run_err)?),
        DatumType::String => ("BYTES", values::<String>(value, run_err)?),
        other => {
            return Err(EngineError::Run(format!(
                "output {name}: datatype {other:?} not supported"
            )))
        }
    };
    Ok(Tensor {
        name: name.into(),
        shape,
        datatype: datatype.into(),
        data,
        parameters: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const LR: &[u8] = include_bytes!("../../../models/breast_cancer_lr.onnx");
    const MLP: &[u8] = include_bytes!("../../../models/breast_cancer_mlp.onnx");
    const TEST_SET: &str = include_str!("../../../models/reference/breast_cancer_test.json");

    #[derive(Deserialize)]
    struct TestSet {
        inputs: Vec<Vec<f64>>,
    }

    #[derive(Deserialize)]
    struct Expected {
        onnxruntime_labels: Vec<i64>,
        onnxruntime_probabilities: Vec<Vec<f64>>,
        sklearn_labels: Vec<i64>,
    }

    fn request(rows: &[Vec<f64>]) -> InferRequest {
        let data: Vec<f64> = rows.iter().flatten().copied().collect();
        serde_json::from_value(serde_json::json!({
            "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32", "data": data}]
        }))
        .unwrap()
    }

    fn check_against_reference(bytes: &[u8], expected_json: &str) {
        let model = OnnxModel::load("m", "1", bytes).unwrap();
        let test: TestSet = serde_json::from_str(TEST_SET).unwrap();
        let expected: Expected = serde_json::from_str(expected_json).unwrap();
        // The whole test split in one batch, and row by row: both must equal the reference.
        let resp = model.infer(&request(&test.inputs)).unwrap();
        assert_eq!(resp.outputs[0].name, "label");
        let labels: Vec<i64> = serde_json::from_value(resp.outputs[0].data.clone()).unwrap();
        assert_eq!(labels, expected.onnxruntime_labels);
        assert_eq!(labels, expected.sklearn_labels);
        let probs: Vec<f64> = serde_json::from_value(resp.outputs[1].data.clone()).unwrap();
        assert_eq!(resp.outputs[1].shape, vec![test.inputs.len() as i64, 2]);
        for (i, (p, e)) in probs
            .iter()
            .zip(expected.onnxruntime_probabilities.iter().flatten())
            .enumerate()
        {
            assert!(
                (p - e).abs() < 1e-5,
                "probability {i}: tract {p}, onnxruntime {e}"
            );
        }
        for (i, row) in test.inputs.iter().enumerate().step_by(17) {
            let one = model.infer(&request(std::slice::from_ref(row))).unwrap();
            let l: Vec<i64> = serde_json::from_value(one.outputs[0].data.clone()).unwrap();
            assert_eq!(l, vec![expected.onnxruntime_labels[i]], "row {i}");
        }
    }

    #[test]
    fn logistic_regression_matches_onnxruntime_and_sklearn() {
        check_against_reference(
            LR,
            include_str!("../../../models/reference/breast_cancer_lr.expected.json"),
        );
    }

    #[test]
    fn mlp_matches_onnxruntime_and_sklearn() {
        check_against_reference(
            MLP,
            include_str!("../../../models/reference/breast_cancer_mlp.expected.json"),
        );
    }

    #[test]
    fn metadata_comes_from_the_onnx_graph() {
        let m = OnnxModel::load("lr", "1", LR).unwrap().metadata();
        assert_eq!(
            m.inputs,
            vec![TensorMetadata {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 30]
            }]
        );
        assert_eq!(m.outputs[0].name, "label");
        assert_eq!(m.outputs[0].datatype, "INT64");
        assert_eq!(
            m.outputs[1],
            TensorMetadata {
                name: "probabilities".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 2]
            }
        );
    }

    #[test]
    fn bad_requests_get_named_errors() {
        let model = OnnxModel::load("lr", "1", LR).unwrap();
        let mut r = request(&[vec![0.0; 30]]);
        r.inputs[0].shape = vec![1, 29];
        assert!(matches!(model.infer(&r), Err(EngineError::Shape { .. })));
        let mut r = request(&[vec![0.0; 30]]);
        r.inputs[0].datatype = "INT64".into();
        assert!(matches!(model.infer(&r), Err(EngineError::Datatype { .. })));
        let mut r = request(&[vec![0.0; 30]]);
        r.inputs[0].shape = vec![2, 30];
        assert!(matches!(
            model.infer(&r),
            Err(EngineError::DataLength {
                expected: 60,
                found: 30,
                ..
            })
        ));
        let mut r = request(&[vec![0.0; 30]]);
        r.inputs[0].data = serde_json::json!(vec!["x"; 30]);
        assert!(matches!(
            model.infer(&r),
            Err(EngineError::DataValue { index: 0, .. })
        ));
        let mut r = request(&[vec![0.0; 30]]);
        r.inputs[0].name = "other".into();
        assert!(matches!(model.infer(&r), Err(EngineError::UnknownInput(_))));
        let mut r = request(&[vec![0.0; 30]]);
        r.inputs.clear();
        assert!(matches!(model.infer(&r), Err(EngineError::MissingInput(_))));
        assert!(matches!(
            OnnxModel::load("junk", "1", b"not onnx"),
            Err(EngineError::Load { .. })
        ));
    }
}
