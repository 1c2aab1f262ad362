//! The inference engines: ONNX models through the built-in engine (pure Rust: dense graphs on
//! Cordon's dense plan, everything else on tract with Cordon's tree operators) or ONNX Runtime
//! (loaded at boot from a library the configuration pins by digest), both speaking Open Inference
//! Protocol tensors. Which one runs a model is the model's configuration.

mod onnxruntime;

pub use onnxruntime::{
    locate_library as locate_onnxruntime_library, OnnxRuntimeLibrary, OnnxRuntimeOptions,
};

use cordon_proto::oip::{InferRequest, InferResponse, ModelMetadata, Tensor, TensorMetadata};
use cordon_proto::oip_json::Element;
use serde::{Deserialize, Serialize};
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
    #[error("input tensor {0:?} is given more than once")]
    DuplicateInput(String),
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
    #[error("input {name:?}: element {index} is not a valid {datatype} value (of another kind, or outside the range of {datatype})")]
    DataValue {
        name: String,
        index: usize,
        datatype: String,
    },
    #[error("input {name:?}: datatype {datatype} is not supported by this engine")]
    UnsupportedDatatype { name: String, datatype: String },
    /// Binary tensor bytes that are not whole elements of the datatype (names sizes, never data).
    #[error("input {name:?}: {reason}")]
    BinaryData { name: String, reason: String },
    #[error("output {0:?} is not an output of this model")]
    UnknownOutput(String),
    /// A batch the engine refuses for its size (the dense plan's memory budget per call): the
    /// request's fault, answered 400 like the others.
    #[error("{0}")]
    BatchTooLarge(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("ONNX Runtime library: {0}")]
    Library(String),
}

impl EngineError {
    /// The HTTP status an Open Inference Protocol server answers this error with: the request's
    /// fault (400) unless the engine itself failed (500).
    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::Run(_) | EngineError::Load { .. } | EngineError::Library(_) => 500,
            _ => 400,
        }
    }
}

type Plan = Arc<TypedRunnableModel>;

/// Which engine evaluates a model, chosen per model by the runtime's configuration
/// (`engine = "tract"` or `"onnxruntime"` under `[[models]]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The built-in engine (pure Rust): a dense graph (linear models, MLPs) compiled to Cordon's
    /// dense plan (`cordon-dense`), any other graph on tract with Cordon's tree-ensemble operators.
    #[default]
    Tract,
    /// ONNX Runtime, loaded at boot from the library the configuration names and pins by digest.
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl EngineKind {
    pub fn is_default(&self) -> bool {
        *self == EngineKind::Tract
    }
}

/// The engine to load a model on.
#[derive(Clone, Copy)]
pub enum Engine<'a> {
    /// The built-in engine: the dense plan when the graph compiles to one, tract otherwise.
    Tract,
    /// tract alone, even for a dense graph (to compare the two; the runtime never picks it).
    TractOnly,
    OnnxRuntime(&'a OnnxRuntimeLibrary),
}

enum Backend {
    Dense(cordon_dense::DensePlan),
    Tract(Plan),
    OnnxRuntime(onnxruntime::OrtModel),
}

/// A loaded ONNX model.
pub struct OnnxModel {
    name: String,
    version: String,
    backend: Backend,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

/// Typed elements of a tensor between the protocol's JSON and an engine, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
    U64(Vec<u64>),
    U32(Vec<u32>),
    U16(Vec<u16>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
    Bytes(Vec<String>),
}

/// Where an input's elements are when they are not in its JSON `data`.
#[derive(Debug, Clone, Copy)]
pub enum InputPart<'a> {
    /// Raw little-endian bytes (the binary tensor data extension).
    Bytes(&'a [u8]),
    /// JSON elements flattened while the request was parsed (`cordon_proto::oip_json`).
    Elements(&'a [Element]),
}

/// A tensor the engines take and give: a shape and typed elements.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

/// A request checked against the model's metadata and converted to typed tensors: the inputs in the
/// model's input order, and the outputs the client asked for (`None`: all).
#[derive(Debug, Clone)]
pub struct DecodedRequest {
    pub inputs: Vec<HostTensor>,
    wanted: Option<Vec<String>>,
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
    /// Parses, optimizes and prepares an ONNX model from bytes held in memory, on tract.
    pub fn load(name: &str, version: &str, bytes: &[u8]) -> Result<OnnxModel, EngineError> {
        OnnxModel::load_on(name, version, bytes, Engine::Tract)
    }

    /// Loads a model on the given engine. The graph's inputs and outputs (the model's metadata)
    /// come from the ONNX file itself, whichever engine runs it.
    pub fn load_on(
        name: &str,
        version: &str,
        bytes: &[u8],
        engine: Engine<'_>,
    ) -> Result<OnnxModel, EngineError> {
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
        let dense = match engine {
            Engine::Tract => cordon_dense::DensePlan::compile(&proto).map_err(|e| {
                tracing::debug!(model = name, "not a dense graph, loaded on tract: {e}");
            }),
            _ => Err(()),
        };
        let backend = match (engine, dense) {
            (_, Ok(plan)) => Backend::Dense(plan),
            (Engine::Tract | Engine::TractOnly, Err(())) => {
                // Tree operators come from cordon-trees (tract's own cannot load most exported
                // tree models); input dimensions the exporter left unnamed become symbols.
                let plan = cordon_trees::model_from_proto(&onnx, &proto)
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .map_err(err)?;
                // An output ONNX types as something other than a tensor (ZipMap's sequence of
                // maps) is served as the tensor the plan computes: describe it from the plan.
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
                Backend::Tract(plan)
            }
            (Engine::OnnxRuntime(library), Err(())) => {
                if let Some(m) = outputs.iter().find(|m| m.datatype == "UNKNOWN") {
                    return Err(EngineError::Load {
                        model: name.into(),
                        reason: format!(
                            "output {:?} is not a tensor (a ZipMap's sequence of maps?): the \
                             onnxruntime engine serves tensor outputs only; export without \
                             ZipMap or use the tract engine",
                            m.name
                        ),
                    });
                }
                Backend::OnnxRuntime(library.load_model(name, bytes, &outputs)?)
            }
        };
        Ok(OnnxModel {
            name: name.into(),
            version: version.into(),
            backend,
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

    /// The engine this model runs on.
    pub fn engine(&self) -> EngineKind {
        match self.backend {
            Backend::Dense(_) | Backend::Tract(_) => EngineKind::Tract,
            Backend::OnnxRuntime(_) => EngineKind::OnnxRuntime,
        }
    }

    /// Whether each output row is computed from the same row of the inputs alone, so that requests
    /// may be merged into one batch without one client's rows reaching another's answer: true only
    /// for a dense plan (its steps are row by row by construction) whose outputs and inputs are all
    /// per sample. Nothing is assumed of graphs on tract or ONNX Runtime.
    pub fn rows_independent(&self) -> bool {
        matches!(&self.backend, Backend::Dense(plan) if plan.rows_independent())
    }

    /// Whether the graph declares every output per sample (a symbolic first dimension).
    pub fn outputs_per_sample(&self) -> bool {
        self.outputs
            .iter()
            .all(|o| o.shape.first().is_some_and(|&d| d < 0))
    }

    /// What evaluates this model, for people: the engine, and for the dense plan its steps (sizes and
    /// operations, never weights).
    pub fn describe_plan(&self) -> String {
        match &self.backend {
            Backend::Dense(plan) => format!("dense plan:\n{plan}"),
            Backend::Tract(_) => "tract (not a dense graph)".into(),
            Backend::OnnxRuntime(_) => "onnxruntime".into(),
        }
    }

    /// What evaluates this model: `"dense"` (the built-in engine's dense plan), `"tract"` or
    /// `"onnxruntime"`.
    pub fn plan_name(&self) -> &'static str {
        match self.backend {
            Backend::Dense(_) => "dense",
            Backend::Tract(_) => "tract",
            Backend::OnnxRuntime(_) => "onnxruntime",
        }
    }

    pub fn metadata(&self) -> ModelMetadata {
        ModelMetadata {
            name: self.name.clone(),
            versions: vec![self.version.clone()],
            // The platform names KServe uses for the two engines.
            platform: match self.backend {
                Backend::Dense(_) | Backend::Tract(_) => "onnx_tract",
                Backend::OnnxRuntime(_) => "onnxruntime_onnx",
            }
            .into(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
        }
    }

    /// Evaluates an Open Inference Protocol request. Inputs are checked against the model's metadata
    /// before anything runs.
    pub fn infer(&self, request: &InferRequest) -> Result<InferResponse, EngineError> {
        let outputs = self
            .infer_parts(request, &[])?
            .into_iter()
            .map(|(name, value)| value.into_oip(&name))
            .collect();
        Ok(InferResponse {
            model_name: self.name.clone(),
            model_version: Some(self.version.clone()),
            id: request.id.clone(),
            outputs,
        })
    }

    /// Evaluates a request some of whose inputs are elsewhere than in their JSON `data`:
    /// `blobs[i]`, when given, holds the elements of `request.inputs[i]`, as raw little-endian
    /// bytes (the binary tensor data extension) or as elements parsed in one pass. Returns the outputs the request asks for
    /// (all by default), by name, in the graph's order, as typed tensors.
    pub fn infer_parts(
        &self,
        request: &InferRequest,
        blobs: &[Option<InputPart>],
    ) -> Result<Vec<(String, HostTensor)>, EngineError> {
        let decoded = self.decode_parts(request, blobs)?;
        let results = self.compute(&decoded.inputs)?;
        Ok(self
            .outputs
            .iter()
            .zip(results)
            .filter(|(meta, _)| {
                decoded
                    .wanted
                    .as_ref()
                    .is_none_or(|w| w.contains(&meta.name))
            })
            .map(|(meta, value)| (meta.name.clone(), value))
            .collect())
    }

    /// Checks a request against the model's metadata (names, datatypes, shapes, element values)
    /// and converts its tensors for [`OnnxModel::compute`].
    pub fn decode(&self, request: &InferRequest) -> Result<DecodedRequest, EngineError> {
        self.decode_parts(request, &[])
    }

    /// [`OnnxModel::decode`], taking the elements of `request.inputs[i]` from `blobs[i]` where it
    /// is given.
    pub fn decode_parts(
        &self,
        request: &InferRequest,
        blobs: &[Option<InputPart>],
    ) -> Result<DecodedRequest, EngineError> {
        for (i, t) in request.inputs.iter().enumerate() {
            if !self.inputs.iter().any(|m| m.name == t.name) {
                return Err(EngineError::UnknownInput(t.name.clone()));
            }
            // Which of two tensors of one name would be evaluated is not the client's to guess.
            if request.inputs[..i].iter().any(|u| u.name == t.name) {
                return Err(EngineError::DuplicateInput(t.name.clone()));
            }
        }
        let wanted: Option<Vec<String>> = request
            .outputs
            .as_ref()
            .map(|o| o.iter().map(|o| o.name.clone()).collect());
        if let Some(w) = &wanted {
            for name in w {
                if !self.outputs.iter().any(|m| m.name == *name) {
                    return Err(EngineError::UnknownOutput(name.to_string()));
                }
            }
        }
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for meta in &self.inputs {
            let i = request
                .inputs
                .iter()
                .position(|t| t.name == meta.name)
                .ok_or_else(|| EngineError::MissingInput(meta.name.clone()))?;
            let t = &request.inputs[i];
            inputs.push(match blobs.get(i).copied().flatten() {
                Some(InputPart::Bytes(bytes)) => decode_tensor_bytes(meta, t, bytes)?,
                Some(InputPart::Elements(elements)) => decode_tensor_elements(meta, t, elements)?,
                None => decode_tensor(meta, t)?,
            });
        }
        Ok(DecodedRequest { inputs, wanted })
    }

    /// Runs the model on decoded inputs (in the model's input order, as [`OnnxModel::decode`]
    /// gives them) and returns every output of the graph, in its order. The engine's own work,
    /// without the protocol's JSON.
    pub fn compute(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, EngineError> {
        if inputs.len() != self.inputs.len() {
            return Err(EngineError::Run(format!(
                "{} inputs given, the model has {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        match &self.backend {
            Backend::Dense(plan) => {
                let parts = inputs
                    .iter()
                    .zip(&self.inputs)
                    .map(|(t, meta)| match (&t.data, t.shape.first()) {
                        (HostData::F32(data), Some(&rows)) => {
                            Ok(cordon_dense::InputData { rows, data })
                        }
                        _ => Err(EngineError::Run(format!(
                            "input {:?}: the dense plan takes float32 [N, F]",
                            meta.name
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let results = plan.run(&parts).map_err(|e| match e {
                    cordon_dense::RunError::TooLarge { .. } => {
                        EngineError::BatchTooLarge(e.to_string())
                    }
                    e => EngineError::Run(e.to_string()),
                })?;
                Ok(results
                    .into_iter()
                    .map(|o| HostTensor {
                        shape: o.shape,
                        data: match o.data {
                            cordon_dense::OutputData::F32(v) => HostData::F32(v),
                            cordon_dense::OutputData::I64(v) => HostData::I64(v),
                        },
                    })
                    .collect())
            }
            Backend::Tract(plan) => {
                let values = inputs
                    .iter()
                    .map(|t| to_tract(t).map(TValue::from))
                    .collect::<Result<TVec<TValue>, _>>()?;
                let results = plan
                    .run(values)
                    .map_err(|e| EngineError::Run(format!("{e:#}")))?;
                // tract may rename outputs internally; the ONNX graph's outputs are matched by
                // position.
                self.outputs
                    .iter()
                    .zip(results.iter())
                    .map(|(meta, value)| from_tract(&meta.name, value))
                    .collect()
            }
            Backend::OnnxRuntime(model) => model.run(&self.inputs, inputs),
        }
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// The tensor's dimensions and element count, once its datatype and shape fit the model's.
fn checked_dims(meta: &TensorMetadata, t: &Tensor) -> Result<(Vec<usize>, usize), EngineError> {
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
    Ok((dims, expected))
}

/// A tensor whose elements arrived as raw bytes (the binary tensor data extension).
fn decode_tensor_bytes(
    meta: &TensorMetadata,
    t: &Tensor,
    bytes: &[u8],
) -> Result<HostTensor, EngineError> {
    let (dims, expected) = checked_dims(meta, t)?;
    let data = HostData::from_le_bytes(&meta.datatype, bytes).map_err(|reason| {
        EngineError::BinaryData {
            name: t.name.clone(),
            reason,
        }
    })?;
    if data.len() != expected {
        return Err(EngineError::DataLength {
            name: t.name.clone(),
            shape: t.shape.clone(),
            expected,
            found: data.len(),
        });
    }
    Ok(HostTensor { shape: dims, data })
}

fn decode_tensor(meta: &TensorMetadata, t: &Tensor) -> Result<HostTensor, EngineError> {
    let (_, expected) = checked_dims(meta, t)?;
    let mut flat = Vec::with_capacity(expected.min(1 << 20));
    flatten(&t.data, &mut flat);
    decode_elements(meta, t, &flat)
}

/// A tensor whose JSON elements were flattened while the request was parsed
/// (`cordon_proto::oip_json`): the same checks and conversions as for a JSON tensor.
fn decode_tensor_elements(
    meta: &TensorMetadata,
    t: &Tensor,
    elements: &[Element],
) -> Result<HostTensor, EngineError> {
    decode_elements(meta, t, elements)
}

/// One JSON element of a tensor's data, as a `serde_json::Value` leaf or as parsed in one pass.
trait JsonElement {
    /// A number, or `null` / `"NaN"` (NaN), `"Infinity"`, `"-Infinity"` (as
    /// [`cordon_proto::oip::parse_json_body`] reads Python's literals).
    fn float(&self) -> Option<f64>;
    /// An integer written as one (never a float, even `1.0`).
    fn int(&self) -> Option<i64>;
    fn uint(&self) -> Option<u64>;
    fn boolean(&self) -> Option<bool>;
    fn text(&self) -> Option<&str>;
}

fn non_finite(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

impl JsonElement for &Value {
    fn float(&self) -> Option<f64> {
        float_or_null(self)
    }
    fn int(&self) -> Option<i64> {
        self.as_i64()
    }
    fn uint(&self) -> Option<u64> {
        self.as_u64()
    }
    fn boolean(&self) -> Option<bool> {
        self.as_bool()
    }
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
}

impl JsonElement for Element {
    fn float(&self) -> Option<f64> {
        match self {
            Element::Null => Some(f64::NAN),
            Element::Str(s) => non_finite(s),
            Element::UInt(u) => Some(*u as f64),
            Element::Int(i) => Some(*i as f64),
            Element::Float(f) => Some(*f),
            Element::Bool(_) => None,
        }
    }
    fn int(&self) -> Option<i64> {
        match self {
            Element::Int(i) => Some(*i),
            Element::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }
    fn uint(&self) -> Option<u64> {
        match self {
            Element::UInt(u) => Some(*u),
            _ => None,
        }
    }
    fn boolean(&self) -> Option<bool> {
        match self {
            Element::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn text(&self) -> Option<&str> {
        match self {
            Element::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The elements as the model's datatype, once there are as many as the shape holds.
fn decode_elements<E: JsonElement>(
    meta: &TensorMetadata,
    t: &Tensor,
    flat: &[E],
) -> Result<HostTensor, EngineError> {
    let (dims, expected) = checked_dims(meta, t)?;
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
    let data = match meta.datatype.as_str() {
        "FP32" => HostData::F32(floats(flat, bad, |x| x as f32, f32::is_infinite)?),
        "FP64" => HostData::F64(floats(flat, bad, |x| x, f64::is_infinite)?),
        "FP16" => HostData::F16(floats(flat, bad, f16::from_f64, f16::is_infinite)?),
        "INT64" => HostData::I64(signed(flat, bad)?),
        "INT32" => HostData::I32(signed(flat, bad)?),
        "INT16" => HostData::I16(signed(flat, bad)?),
        "INT8" => HostData::I8(signed(flat, bad)?),
        "UINT64" => HostData::U64(unsigned(flat, bad)?),
        "UINT32" => HostData::U32(unsigned(flat, bad)?),
        "UINT16" => HostData::U16(unsigned(flat, bad)?),
        "UINT8" => HostData::U8(unsigned(flat, bad)?),
        "BOOL" => HostData::Bool(
            flat.iter()
                .enumerate()
                .map(|(i, v)| v.boolean().ok_or_else(|| bad(i)))
                .collect::<Result<_, _>>()?,
        ),
        "BYTES" => HostData::Bytes(
            flat.iter()
                .enumerate()
                .map(|(i, v)| v.text().map(str::to_string).ok_or_else(|| bad(i)))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(EngineError::UnsupportedDatatype {
                name: t.name.clone(),
                datatype: other.into(),
            })
        }
    };
    Ok(HostTensor { shape: dims, data })
}

/// Float elements (`null` or `"NaN"`: NaN; `"Infinity"`, `"-Infinity"`: infinities, as
/// [`cordon_proto::oip::parse_json_body`] reads Python's literals). A finite number the datatype
/// cannot hold (FP32 `1e39`) is refused, not rounded to infinity: the model would see a value the
/// client never sent.
fn floats<T: Copy, E: JsonElement>(
    flat: &[E],
    bad: impl Fn(usize) -> EngineError,
    convert: impl Fn(f64) -> T,
    is_infinite: impl Fn(T) -> bool,
) -> Result<Vec<T>, EngineError> {
    flat.iter()
        .enumerate()
        .map(|(i, v)| {
            v.float()
                .and_then(|x| {
                    let y = convert(x);
                    (!(x.is_finite() && is_infinite(y))).then_some(y)
                })
                .ok_or_else(|| bad(i))
        })
        .collect()
}

/// Integer elements that must fit `T` exactly (no rounding, no wrap).
fn signed<T: TryFrom<i64>, E: JsonElement>(
    flat: &[E],
    bad: impl Fn(usize) -> EngineError,
) -> Result<Vec<T>, EngineError> {
    flat.iter()
        .enumerate()
        .map(|(i, v)| {
            v.int()
                .and_then(|x| T::try_from(x).ok())
                .ok_or_else(|| bad(i))
        })
        .collect()
}

fn unsigned<T: TryFrom<u64>, E: JsonElement>(
    flat: &[E],
    bad: impl Fn(usize) -> EngineError,
) -> Result<Vec<T>, EngineError> {
    flat.iter()
        .enumerate()
        .map(|(i, v)| {
            v.uint()
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
        Value::String(s) => non_finite(s),
        v => v.as_f64(),
    }
}

fn to_tract(t: &HostTensor) -> Result<Tensor_, EngineError> {
    let run_err = |e: TractError| EngineError::Run(format!("{e:#}"));
    let dims = &t.shape;
    match &t.data {
        HostData::F32(d) => Tensor_::from_shape(dims, d),
        HostData::F64(d) => Tensor_::from_shape(dims, d),
        HostData::F16(d) => Tensor_::from_shape(dims, d),
        HostData::I64(d) => Tensor_::from_shape(dims, d),
        HostData::I32(d) => Tensor_::from_shape(dims, d),
        HostData::I16(d) => Tensor_::from_shape(dims, d),
        HostData::I8(d) => Tensor_::from_shape(dims, d),
        HostData::U64(d) => Tensor_::from_shape(dims, d),
        HostData::U32(d) => Tensor_::from_shape(dims, d),
        HostData::U16(d) => Tensor_::from_shape(dims, d),
        HostData::U8(d) => Tensor_::from_shape(dims, d),
        HostData::Bool(d) => Tensor_::from_shape(dims, d),
        // Strings are not `Copy`: build the array, then the tensor.
        HostData::Bytes(d) => {
            return tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(dims), d.clone())
                .map(Tensor_::from)
                .map_err(|e| EngineError::Run(e.to_string()))
        }
    }
    .map_err(run_err)
}

fn from_tract(name: &str, value: &TValue) -> Result<HostTensor, EngineError> {
    let shape = value.shape().to_vec();
    let run_err = |e: TractError| EngineError::Run(format!("output {name}: {e:#}"));
    // tract's optimizer may carry int64 values it derived from shapes as symbolic
    // dimensions (TDim); by the end of a run they are plain integers.
    if value.datum_type() == DatumType::TDim {
        let ints = value.cast_to::<i64>().map_err(run_err)?.into_owned();
        return from_tract(name, &ints.into_tvalue());
    }
    fn elements<T: Datum + Clone>(
        value: &TValue,
        run_err: impl Fn(TractError) -> EngineError,
    ) -> Result<Vec<T>, EngineError> {
        Ok(value
            .to_plain_array_view::<T>()
            .map_err(run_err)?
            .iter()
            .cloned()
            .collect())
    }
    let data = match value.datum_type() {
        DatumType::F32 => HostData::F32(elements(value, run_err)?),
        DatumType::F64 => HostData::F64(elements(value, run_err)?),
        DatumType::F16 => HostData::F16(elements(value, run_err)?),
        DatumType::I64 => HostData::I64(elements(value, run_err)?),
        DatumType::I32 => HostData::I32(elements(value, run_err)?),
        DatumType::I16 => HostData::I16(elements(value, run_err)?),
        DatumType::I8 => HostData::I8(elements(value, run_err)?),
        DatumType::U64 => HostData::U64(elements(value, run_err)?),
        DatumType::U32 => HostData::U32(elements(value, run_err)?),
        DatumType::U16 => HostData::U16(elements(value, run_err)?),
        DatumType::U8 => HostData::U8(elements(value, run_err)?),
        DatumType::Bool => HostData::Bool(elements(value, run_err)?),
        DatumType::String => HostData::Bytes(elements(value, run_err)?),
        other => {
            return Err(EngineError::Run(format!(
                "output {name}: datatype {other:?} not supported"
            )))
        }
    };
    Ok(HostTensor { shape, data })
}

impl HostTensor {
    /// The protocol's JSON tensor; FP16 elements are written as the numbers they are, NaN and
    /// infinities as `"NaN"`, `"Infinity"`, `"-Infinity"`.
    pub fn into_oip(self, name: &str) -> Tensor {
        fn json<T: Into<Value>>(v: Vec<T>) -> Value {
            Value::Array(v.into_iter().map(Into::into).collect())
        }
        // NaN and the infinities as the strings the channel carries them as
        // (`oip_binary::float_value`); the HTTP surfaces write them as Triton's literals.
        fn floats(v: impl Iterator<Item = f64>) -> Value {
            Value::Array(v.map(cordon_proto::oip_binary::float_value).collect())
        }
        let (datatype, data) = match self.data {
            HostData::F32(v) => ("FP32", floats(v.into_iter().map(f64::from))),
            HostData::F64(v) => ("FP64", floats(v.into_iter())),
            HostData::F16(v) => ("FP16", floats(v.into_iter().map(f64::from))),
            HostData::I64(v) => ("INT64", json(v)),
            HostData::I32(v) => ("INT32", json(v)),
            HostData::I16(v) => ("INT16", json(v)),
            HostData::I8(v) => ("INT8", json(v)),
            HostData::U64(v) => ("UINT64", json(v)),
            HostData::U32(v) => ("UINT32", json(v)),
            HostData::U16(v) => ("UINT16", json(v)),
            HostData::U8(v) => ("UINT8", json(v)),
            HostData::Bool(v) => ("BOOL", json(v)),
            HostData::Bytes(v) => ("BYTES", json(v)),
        };
        Tensor {
            name: name.into(),
            shape: self.shape.iter().map(|&d| d as i64).collect(),
            datatype: datatype.into(),
            data,
            parameters: None,
        }
    }
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
        // The same input twice: refused, whichever copy would have been read.
        let mut r = request(&[vec![0.0; 30]]);
        r.inputs.push(r.inputs[0].clone());
        assert!(matches!(
            model.infer(&r),
            Err(EngineError::DuplicateInput(name)) if name == "input"
        ));
        // A finite number FP32 cannot hold is refused, not rounded to infinity; the largest FP32
        // and NaN (`null`) are accepted.
        let mut r = request(&[vec![0.0; 30]]);
        r.inputs[0].data[3] = serde_json::json!(1e39);
        assert!(matches!(
            model.infer(&r),
            Err(EngineError::DataValue { index: 3, .. })
        ));
        r.inputs[0].data[3] = serde_json::json!(-1e39);
        assert!(matches!(
            model.infer(&r),
            Err(EngineError::DataValue { index: 3, .. })
        ));
        r.inputs[0].data[3] = serde_json::json!(f32::MAX as f64);
        r.inputs[0].data[4] = serde_json::Value::Null;
        assert!(model.infer(&r).is_ok());
        // Python's literals, as parse_json_body reads them: NaN and the infinities are values;
        // any other string is not a float.
        for (literal, value) in [
            ("NaN", f32::NAN),
            ("Infinity", f32::INFINITY),
            ("-Infinity", f32::NEG_INFINITY),
        ] {
            let mut r = request(&[vec![0.0; 30]]);
            r.inputs[0].data[5] = serde_json::json!(literal);
            let decoded = model.decode(&r).unwrap();
            let HostData::F32(data) = &decoded.inputs[0].data else {
                panic!("not FP32")
            };
            assert!(
                data[5].to_bits() == value.to_bits() || (data[5].is_nan() && value.is_nan()),
                "{literal}: {}",
                data[5]
            );
        }
        r.inputs[0].data[5] = serde_json::json!("nan");
        assert!(matches!(
            model.infer(&r),
            Err(EngineError::DataValue { index: 5, .. })
        ));
        assert!(matches!(
            OnnxModel::load("junk", "1", b"not onnx"),
            Err(EngineError::Load { .. })
        ));
    }
}
