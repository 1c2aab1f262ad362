//! Cordon's tree-ensemble engine.
//!
//! Gradient-boosted trees and random forests are what fraud scoring and clinical risk models run
//! on. This crate evaluates the ONNX-ML operators `TreeEnsembleClassifier` and
//! `TreeEnsembleRegressor` (ai.onnx.ml opsets 1–3) and `TreeEnsemble` (opset 5), exactly as the
//! operator specification defines them and, where it is silent, as ONNX Runtime (the reference)
//! does. It is small, pure Rust with no `unsafe`, and fast:
//!
//! - [`ensemble`]: attributes → a checked [`Ensemble`] (one root per tree, no cycles, no dangling
//!   or shared children, ids and lengths consistent). Every malformed model fails here, at load,
//!   with a [`TreeError`] naming the attribute or tree; nothing is left to fail at inference.
//! - [`compiled`]: the checked ensemble → contiguous node arrays with branch modes folded into
//!   one comparison, walked without data-dependent branches, several walks in lockstep.
//! - [`engine`]: walking, aggregation, base values, post transforms and labels.
//! - [`tract_ops`]: the operators registered with tract's ONNX parser, so whole graphs with
//!   trees load in one tract plan. Use [`onnx_parser`] instead of `tract_onnx::onnx()`. Beside
//!   the trees: `Scaler` and `ZipMap` (which tract lacks), and `LinearClassifier` (scikit-learn's
//!   linear models; tract's own lacks `SOFTMAX_ZERO` and ONNX Runtime's binary layout).

pub mod compiled;
pub mod engine;
pub mod ensemble;
mod float;
pub mod onnx;
pub mod tract_ops;

pub use engine::CompiledEnsemble;
pub use ensemble::Ensemble;
pub use float::Float;

/// Why an ensemble could not be loaded or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("attribute {name}: {reason}")]
    Attribute { name: String, reason: String },
    #[error("tree {tree}: {reason}")]
    Tree { tree: i64, reason: String },
    #[error("input: {0}")]
    Input(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// tract's ONNX parser with Cordon's tree operators (and `Scaler`, `ZipMap`, `LinearClassifier`)
/// registered.
pub fn onnx_parser() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    tract_ops::register(&mut onnx);
    onnx
}

/// Parses an ONNX model with [`onnx_parser`], completing the input facts tract cannot infer
/// itself: a dimension the exporter left without value or name (scikit-learn's batch axis)
/// becomes a symbol, so the graph types without the caller spelling out shapes.
pub fn load_inference_model(
    bytes: &[u8],
) -> tract_onnx::prelude::TractResult<tract_onnx::prelude::InferenceModel> {
    load_inference_model_with(bytes, false)
}

/// As [`load_inference_model`]; `generic` forces the generic tree walker (for differential tests
/// and benchmarks).
pub fn load_inference_model_with(
    bytes: &[u8],
    generic: bool,
) -> tract_onnx::prelude::TractResult<tract_onnx::prelude::InferenceModel> {
    let mut onnx = tract_onnx::onnx();
    tract_ops::register_with(&mut onnx, generic);
    load_with_parser(&onnx, bytes)
}

/// As [`load_inference_model`] with any parser (e.g. `tract_onnx::onnx()` alone, for
/// comparisons with tract's own operators).
pub fn load_with_parser(
    parser: &tract_onnx::Onnx,
    bytes: &[u8],
) -> tract_onnx::prelude::TractResult<tract_onnx::prelude::InferenceModel> {
    use tract_onnx::prelude::Framework;
    let proto = parser.proto_model_for_read(&mut &bytes[..])?;
    model_from_proto(parser, &proto)
}

/// As [`load_with_parser`] for a model already decoded (so a caller that reads the graph's
/// metadata does not decode the bytes twice).
pub fn model_from_proto(
    parser: &tract_onnx::Onnx,
    proto: &tract_onnx::pb::ModelProto,
) -> tract_onnx::prelude::TractResult<tract_onnx::prelude::InferenceModel> {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value as Dim, type_proto::Value};
    use tract_onnx::prelude::*;
    let mut model = parser.model_for_proto_model(proto)?;
    let Some(graph) = proto.graph.as_ref() else {
        return Ok(model);
    };
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()));
    for (ix, input) in inputs.enumerate() {
        let Some(Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            continue;
        };
        let dt = match t.elem_type {
            1 => f32::datum_type(),
            11 => f64::datum_type(),
            7 => i64::datum_type(),
            6 => i32::datum_type(),
            _ => continue,
        };
        let Some(shape) = t.shape.as_ref() else {
            continue;
        };
        let dims: TVec<TDim> = shape
            .dim
            .iter()
            .enumerate()
            .map(|(d, dim)| match &dim.value {
                Some(Dim::DimValue(n)) if *n > 0 => (*n).to_dim(),
                Some(Dim::DimParam(p)) if !p.is_empty() => model.symbols.sym(p).into(),
                _ => model.symbols.sym(&format!("{}_{d}", input.name)).into(),
            })
            .collect();
        model.set_input_fact(ix, InferenceFact::dt_shape(dt, dims))?;
    }
    Ok(model)
}
