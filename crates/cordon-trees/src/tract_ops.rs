//! The engine inside tract: the tree operators registered with tract's ONNX parser in place of
//! its own, so a whole graph (Cast, Scaler, Normalizer, ArgMax, Concat… around the trees) still
//! loads and runs in one tract plan.
//!
//! Also registered, because scikit-learn and onnxmltools exports wrap trees in them and tract
//! 0.23 has neither: `Scaler` (ai.onnx.ml, `(x - offset) * scale`), and `ZipMap`, which in ONNX
//! turns the score tensor into a sequence of maps. Open Inference Protocol responses are tensors,
//! so here `ZipMap` passes the `[N, classes]` score tensor through unchanged; the class order is
//! the one of the classifier's labels. And `LinearClassifier` (scikit-learn's linear models as
//! skl2onnx exports them, and Cordon's trained logistic regressions), as ONNX Runtime computes
//! it: see [`LinearClassifierOp`].

use crate::engine::{int_label, string_label, CompiledEnsemble, Label};
use crate::ensemble::{ClassLabels, Output, PostTransform, Precision};
use crate::float::Float;
use crate::TreeError;
use std::sync::Arc;
use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// Registers the tree operators, `Scaler`, `ZipMap` and `LinearClassifier` with an ONNX parser
/// (replacing tract's own `TreeEnsembleClassifier` and `LinearClassifier`).
pub fn register(onnx: &mut tract_onnx::Onnx) {
    register_with(onnx, false);
}

/// As [`register`]; `generic` forces the generic walker everywhere (for differential tests and
/// benchmarks).
pub fn register_with(onnx: &mut tract_onnx::Onnx, generic: bool) {
    let reg: &mut OnnxOpRegister = &mut onnx.op_register;
    if generic {
        reg.insert("TreeEnsembleClassifier", |_, n| {
            build(n, crate::onnx::classifier, true)
        });
        reg.insert("TreeEnsembleRegressor", |_, n| {
            build(n, crate::onnx::regressor, true)
        });
        reg.insert("TreeEnsemble", |_, n| {
            build(n, crate::onnx::tree_ensemble, true)
        });
    } else {
        reg.insert("TreeEnsembleClassifier", tree_classifier);
        reg.insert("TreeEnsembleRegressor", tree_regressor);
        reg.insert("TreeEnsemble", tree_ensemble);
    }
    reg.insert("Scaler", scaler);
    reg.insert("ZipMap", zipmap);
    reg.insert("LinearClassifier", linear_classifier);
}

fn build(
    node: &NodeProto,
    parse: fn(&NodeProto) -> Result<crate::Ensemble, TreeError>,
    generic: bool,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let label = if node.name.is_empty() {
        node.op_type.clone()
    } else {
        format!("{} ({})", node.name, node.op_type)
    };
    let compiled = parse(node)
        .and_then(CompiledEnsemble::new)
        .map_err(|e| format_err!("{label}: {e}"))?;
    Ok((
        expand(TreeExpansion {
            op: TreeOp {
                compiled: Arc::new(compiled),
                generic,
            },
        }),
        vec![],
    ))
}

fn tree_classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    build(node, crate::onnx::classifier, false)
}

fn tree_regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    build(node, crate::onnx::regressor, false)
}

fn tree_ensemble(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    build(node, crate::onnx::tree_ensemble, false)
}

/// The typed operator: evaluates a compiled ensemble.
#[derive(Debug, Clone)]
pub struct TreeOp {
    pub compiled: Arc<CompiledEnsemble>,
    /// Force the generic walker (for differential tests).
    pub generic: bool,
}

impl PartialEq for TreeOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.compiled, &other.compiled) && self.generic == other.generic
    }
}
impl Eq for TreeOp {}

impl TreeOp {
    fn op_name(&self) -> &'static str {
        match self.compiled.ensemble().output {
            Output::Classifier(_) => "TreeEnsembleClassifier",
            Output::Regressor => "TreeEnsembleRegressor",
            Output::V5 => "TreeEnsemble",
        }
    }

    /// The score output's element type.
    fn score_type(&self, input: DatumType) -> DatumType {
        match self.compiled.ensemble().output {
            Output::V5 if input == DatumType::F64 => DatumType::F64,
            _ => DatumType::F32,
        }
    }

    fn run(&self, input: &Tensor) -> TractResult<TVec<TValue>> {
        let e = self.compiled.ensemble();
        let shape = input.shape();
        let (n_rows, n_cols) = match *shape {
            [n, f] => (n, f),
            [f] => (1, f),
            _ => bail!(
                "{}: input must be [N, features], got shape {:?}",
                self.op_name(),
                shape
            ),
        };
        let t = self.compiled.n_outputs();
        let classifier = matches!(e.output, Output::Classifier(_));
        let mut labels = vec![Label::Index(0); if classifier { n_rows } else { 0 }];
        let scores = if self.score_type(input.datum_type()) == DatumType::F64 {
            let mut out = vec![0f64; n_rows * t];
            self.dispatch(input, n_cols, &mut out, &mut labels)?;
            tract_ndarray::Array2::from_shape_vec((n_rows, t), out)?.into_tvalue()
        } else {
            let mut out = vec![0f32; n_rows * t];
            self.dispatch(input, n_cols, &mut out, &mut labels)?;
            tract_ndarray::Array2::from_shape_vec((n_rows, t), out)?.into_tvalue()
        };
        match &e.output {
            Output::Classifier(l @ ClassLabels::Int64(_)) => {
                let v: Vec<i64> = labels.iter().map(|&x| int_label(l, x)).collect();
                Ok(tvec!(tensor1(&v).into_tvalue(), scores))
            }
            Output::Classifier(ClassLabels::Strings(s)) => {
                let v: Vec<String> = labels.iter().map(|&x| string_label(s, x)).collect();
                Ok(tvec!(tensor1(&v).into_tvalue(), scores))
            }
            Output::Regressor | Output::V5 => Ok(tvec!(scores)),
        }
    }

    /// Evaluates in the comparison type the reference uses: the threshold type, widened to f64
    /// for f64 inputs; integer inputs are converted to the threshold type first.
    fn dispatch<O: Float>(
        &self,
        input: &Tensor,
        n_cols: usize,
        out: &mut [O],
        labels: &mut [Label],
    ) -> TractResult<()> {
        let c = &self.compiled;
        let g = self.generic;
        let precision = c.ensemble().precision;
        let result = match (input.datum_type(), precision) {
            (DatumType::F32, Precision::F32) => c.eval_f32(
                input.try_as_plain_ram()?.as_slice::<f32>()?,
                n_cols,
                out,
                labels,
                g,
            ),
            (DatumType::F64, _) => c.eval_f64(
                input.try_as_plain_ram()?.as_slice::<f64>()?,
                n_cols,
                out,
                labels,
                g,
            ),
            (DatumType::F32 | DatumType::I64 | DatumType::I32, Precision::F64) => {
                let wide = input.cast_to::<f64>()?;
                c.eval_f64(
                    wide.try_as_plain_ram()?.as_slice::<f64>()?,
                    n_cols,
                    out,
                    labels,
                    g,
                )
            }
            (DatumType::I64 | DatumType::I32, Precision::F32) => {
                let narrow = input.cast_to::<f32>()?;
                c.eval_f32(
                    narrow.try_as_plain_ram()?.as_slice::<f32>()?,
                    n_cols,
                    out,
                    labels,
                    g,
                )
            }
            (other, _) => bail!("{}: input type {other:?} is not supported", self.op_name()),
        };
        result.map_err(|e| format_err!("{}: {e}", self.op_name()))
    }
}

impl Op for TreeOp {
    fn name(&self) -> StaticName {
        self.op_name().into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let e = self.compiled.ensemble();
        Ok(vec![format!(
            "cordon-trees: {} trees, {} outputs, {} walker",
            e.trees.len(),
            e.n_targets,
            if self.compiled.is_fast() && !self.generic {
                "fast"
            } else {
                "generic"
            }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for TreeOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        self.run(&input)
    }
}

impl TypedOp for TreeOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = inputs[0].shape[0].clone();
        let t = self.compiled.n_outputs();
        let scores = self
            .score_type(inputs[0].datum_type)
            .fact(&[n.clone(), t.to_dim()]);
        Ok(match &self.compiled.ensemble().output {
            Output::Classifier(ClassLabels::Int64(_)) => tvec!(i64::fact(&[n]), scores),
            Output::Classifier(ClassLabels::Strings(_)) => tvec!(String::fact(&[n]), scores),
            Output::Regressor | Output::V5 => tvec!(scores),
        })
    }

    as_op!();
}

/// The inference-time (shape and type rules) face of [`TreeOp`].
#[derive(Debug, Clone)]
struct TreeExpansion {
    op: TreeOp,
}

impl Expansion for TreeExpansion {
    fn name(&self) -> StaticName {
        self.op.op_name().into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(match self.op.compiled.ensemble().output {
            Output::Classifier(_) => 2,
            Output::Regressor | Output::V5 => 1,
        })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, self.nboutputs()?)?;
        s.equals(&inputs[0].rank, 2)?;
        let t = self.op.compiled.n_outputs().to_dim();
        let scores = outputs.len() - 1;
        s.equals(&outputs[scores].rank, 2)?;
        s.equals(&outputs[scores].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[scores].shape[1], t)?;
        match &self.op.compiled.ensemble().output {
            Output::Classifier(labels) => {
                let dt = match labels {
                    ClassLabels::Int64(_) => DatumType::I64,
                    ClassLabels::Strings(_) => DatumType::String,
                };
                s.equals(&outputs[0].datum_type, dt)?;
                s.equals(&outputs[0].rank, 1)?;
                s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
                s.equals(&outputs[1].datum_type, DatumType::F32)?;
            }
            Output::Regressor => s.equals(&outputs[0].datum_type, DatumType::F32)?,
            Output::V5 => s.given(&inputs[0].datum_type, move |s, dt| {
                let out = if dt == DatumType::F64 {
                    DatumType::F64
                } else {
                    DatumType::F32
                };
                s.equals(&outputs[0].datum_type, out)
            })?,
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.op.clone(), inputs)
    }
}

/// ai.onnx.ml `Scaler`: `y = (x - offset) * scale`, as f32.
#[derive(Debug, Clone)]
struct Scaler {
    op: ScalerOp,
}

/// The typed `Scaler`, after a cast to f32: `(x - offset) * scale` in one pass over the rows,
/// rounding after the subtraction and after the multiplication as the reference does. `offset`
/// and `scale` hold one value or one per column. (tract's broadcasting Sub and Mul, which this
/// replaces, took about 40% of a 50-tree forest's batch time.)
#[derive(Debug, Clone)]
pub struct ScalerOp {
    offset: Arc<[f32]>,
    scale: Arc<[f32]>,
}

impl PartialEq for ScalerOp {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &[f32], b: &[f32]| {
            a.iter()
                .map(|x| x.to_bits())
                .eq(b.iter().map(|x| x.to_bits()))
        };
        same(&self.offset, &other.offset) && same(&self.scale, &other.scale)
    }
}
impl Eq for ScalerOp {}

impl ScalerOp {
    /// Refuses `offset` or `scale` of a length that is neither 1 nor the row width.
    fn check_width(&self, width: usize) -> TractResult<()> {
        for (name, v) in [("offset", &self.offset), ("scale", &self.scale)] {
            if v.len() != 1 && v.len() != width {
                bail!(
                    "Scaler: {name} has {} values, rows have {width} (it needs 1 or {width})",
                    v.len()
                );
            }
        }
        Ok(())
    }

    /// The op with one value per column of rows `width` wide (a single value repeated), so
    /// `run` zips rows with both vectors and allocates nothing; done once, when the graph is
    /// wired with a known row width.
    fn per_column(&self, width: usize) -> TractResult<ScalerOp> {
        self.check_width(width)?;
        let widen = |v: &Arc<[f32]>| -> Arc<[f32]> {
            if v.len() == width {
                v.clone()
            } else {
                vec![v[0]; width].into()
            }
        };
        Ok(ScalerOp {
            offset: widen(&self.offset),
            scale: widen(&self.scale),
        })
    }

    /// The scaled copy of `input` (f32, rows in its last dimension); writes into `input`'s
    /// buffer when nothing else holds it.
    pub fn run(&self, input: TValue) -> TractResult<TVec<TValue>> {
        let width = input.shape().last().copied().unwrap_or(1);
        self.check_width(width)?;
        let mut y = input.into_tensor();
        let mut view = y.try_as_plain_ram_mut()?;
        let values = view.as_slice_mut::<f32>()?;
        let (offset, scale) = (&*self.offset, &*self.scale);
        if offset.len() == width && scale.len() == width {
            for row in values.chunks_exact_mut(width.max(1)) {
                for ((x, &o), &s) in row.iter_mut().zip(offset).zip(scale) {
                    *x = (*x - o) * s;
                }
            }
        } else {
            // A row width unknown when the graph was wired: a single value stands for every
            // column (`check_width` allowed only 1 or `width` values).
            let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            for row in values.chunks_exact_mut(width.max(1)) {
                for (i, x) in row.iter_mut().enumerate() {
                    *x = (*x - at(offset, i)) * at(scale, i);
                }
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl Op for ScalerOp {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ScalerOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        self.run(input)
    }
}

impl TypedOp for ScalerOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        // A row width known from the model is checked here, at load, not at the first request.
        if let Some(Ok(width)) = inputs[0].shape.last().map(|d| d.to_usize()) {
            self.check_width(width)?;
        }
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

fn scaler(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let get = |name: &str| -> Vec<f32> {
        node.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.floats.clone())
            .unwrap_or_default()
    };
    let (offset, scale) = (get("offset"), get("scale"));
    let offset = if offset.is_empty() { vec![0.0] } else { offset };
    let scale = if scale.is_empty() { vec![1.0] } else { scale };
    Ok((
        expand(Scaler {
            op: ScalerOp {
                offset: offset.into(),
                scale: scale.into(),
            },
        }),
        vec![],
    ))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x = model.wire_node(
            format!("{prefix}.cast"),
            tract_onnx::tract_core::ops::cast::cast(f32::datum_type()),
            inputs,
        )?;
        let width = model.outlet_fact(x[0])?.shape.last().map(|d| d.to_usize());
        let op = match width {
            Some(Ok(width)) => self.op.per_column(width)?,
            _ => self.op.clone(),
        };
        model.wire_node(prefix, op, &x)
    }
}

/// ai.onnx.ml `ZipMap`, as a tensor pass-through (see the module docs).
#[derive(Debug, Clone)]
struct ZipMap;

fn zipmap(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(ZipMap), vec![]))
}

impl Expansion for ZipMap {
    fn name(&self) -> StaticName {
        "ZipMap".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        _prefix: &str,
        _model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        Ok(inputs.into())
    }
}

/// ai.onnx.ml `LinearClassifier` (opset 1), evaluated as ONNX Runtime does. tract 0.23 has its
/// own, but without `SOFTMAX_ZERO` and with another binary layout, so Cordon registers this one.
///
/// Scores are `x · coefficients[k] + intercepts[k]` for each of the K coefficient rows
/// (accumulated in f64, then f32 as the reference's float scores). Then, as ONNX Runtime 1.32:
/// - K ≥ 2 rows (one per class label): the label is the class of the highest raw score (the
///   first on ties); the scores go through `post_transform` (NONE, LOGISTIC, SOFTMAX or
///   SOFTMAX_ZERO). `multi_class` changes nothing there.
/// - K = 1 row with 2 class labels (the binary layout): the label is the second class when the
///   raw score s > 0, else the first; the scores are `[1 − σ(s), σ(s)]` for LOGISTIC and
///   `[1 − s, s]` for every other transform (the reference applies no SOFTMAX to one score).
///
/// PROBIT and missing intercepts are refused at load, as the reference refuses them or gives
/// NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearClassifierOp {
    /// K × n_features, row-major.
    coefficients: Arc<Vec<f32>>,
    intercepts: Arc<Vec<f32>>,
    labels: Arc<ClassLabels>,
    post: PostTransform,
    n_features: usize,
}

impl Eq for LinearClassifierOp {}

fn linear_classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let label = if node.name.is_empty() {
        "LinearClassifier".to_string()
    } else {
        format!("{} (LinearClassifier)", node.name)
    };
    let op = parse_linear_classifier(node).map_err(|e| format_err!("{label}: {e}"))?;
    Ok((expand(LinearClassifierExpansion { op }), vec![]))
}

/// Reads and checks the attributes: every malformed node fails here, at load.
pub fn parse_linear_classifier(node: &NodeProto) -> Result<LinearClassifierOp, TreeError> {
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let bad = |name: &str, reason: String| TreeError::Attribute {
        name: name.into(),
        reason,
    };
    let ints = attr("classlabels_ints")
        .map(|a| a.ints.clone())
        .unwrap_or_default();
    let strings: Vec<String> = attr("classlabels_strings")
        .map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8(s.clone()))
                .collect::<Result<_, _>>()
        })
        .transpose()
        .map_err(|_| bad("classlabels_strings", "a value is not UTF-8".into()))?
        .unwrap_or_default();
    let labels = match (ints.is_empty(), strings.is_empty()) {
        (false, true) => ClassLabels::Int64(ints),
        (true, false) => ClassLabels::Strings(strings),
        (true, true) => {
            return Err(bad(
                "classlabels_ints",
                "neither classlabels_ints nor classlabels_strings is given".into(),
            ))
        }
        (false, false) => {
            return Err(bad(
                "classlabels_ints",
                "both classlabels_ints and classlabels_strings are given".into(),
            ))
        }
    };
    let coefficients = attr("coefficients")
        .map(|a| a.floats.clone())
        .unwrap_or_default();
    if coefficients.is_empty() {
        return Err(bad("coefficients", "missing or empty".into()));
    }
    let intercepts = attr("intercepts")
        .map(|a| a.floats.clone())
        .unwrap_or_default();
    if intercepts.is_empty() {
        return Err(bad(
            "intercepts",
            "missing or empty (ONNX Runtime refuses such a model too)".into(),
        ));
    }
    let k = intercepts.len();
    if coefficients.len() % k != 0 {
        return Err(bad(
            "coefficients",
            format!(
                "{} values do not make {k} rows (one per intercept)",
                coefficients.len()
            ),
        ));
    }
    let n_classes = labels.len();
    if k == 1 && n_classes != 2 {
        return Err(bad(
            "classlabels_ints",
            format!("one coefficient row needs exactly 2 class labels, got {n_classes}"),
        ));
    }
    if k > 1 && k != n_classes {
        return Err(bad(
            "intercepts",
            format!("{k} coefficient rows for {n_classes} class labels"),
        ));
    }
    let post = attr("post_transform")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_else(|| "NONE".into());
    let post = crate::ensemble::parse_post_transform(&post)?;
    if post == PostTransform::Probit {
        return Err(bad("post_transform", "PROBIT is not supported".into()));
    }
    if coefficients
        .iter()
        .chain(&intercepts)
        .any(|v| !v.is_finite())
    {
        return Err(bad("coefficients", "a value is not finite".into()));
    }
    Ok(LinearClassifierOp {
        n_features: coefficients.len() / k,
        coefficients: Arc::new(coefficients),
        intercepts: Arc::new(intercepts),
        labels: Arc::new(labels),
        post,
    })
}

impl LinearClassifierOp {
    /// Columns of the score output.
    fn n_scores(&self) -> usize {
        if self.intercepts.len() == 1 {
            2
        } else {
            self.intercepts.len()
        }
    }

    /// Scores and label index of one row; `out` has `n_scores()` slots.
    fn row(&self, x: &[f32], out: &mut [f32]) -> usize {
        let k = self.intercepts.len();
        let f = self.n_features;
        for (c, o) in out.iter_mut().take(k).enumerate() {
            let w = &self.coefficients[c * f..(c + 1) * f];
            let dot: f64 = w
                .iter()
                .zip(x)
                .map(|(&w, &x)| f64::from(w) * f64::from(x))
                .sum();
            *o = (dot + f64::from(self.intercepts[c])) as f32;
        }
        if k == 1 {
            let s = out[0];
            let label = usize::from(s > 0.0);
            let v = if self.post == PostTransform::Logistic {
                crate::engine::logistic(s)
            } else {
                s
            };
            out[0] = 1.0 - v;
            out[1] = v;
            return label;
        }
        let scores = &mut out[..k];
        let mut best = 0;
        for (c, &s) in scores.iter().enumerate() {
            if s > scores[best] {
                best = c;
            }
        }
        match self.post {
            PostTransform::None | PostTransform::Probit => {}
            PostTransform::Logistic => {
                scores
                    .iter_mut()
                    .for_each(|s| *s = crate::engine::logistic(*s));
            }
            PostTransform::Softmax => {
                let max = scores.iter().fold(-f32::MAX, |m, &v| m.max(v));
                let mut sum = 0.0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                scores.iter_mut().for_each(|s| *s /= sum);
            }
            PostTransform::SoftmaxZero => {
                // The reference's rule: a score within 1e-7 of zero stays (about) zero and
                // takes no part in the sum.
                let max = scores.iter().fold(-f32::MAX, |m, &v| m.max(v));
                let exp_neg_max = (-max).exp();
                let mut sum = 0.0f32;
                for s in scores.iter_mut() {
                    if (-0.000_000_1..=0.000_000_1).contains(s) {
                        *s *= exp_neg_max;
                    } else {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                }
                scores.iter_mut().for_each(|s| *s /= sum);
            }
        }
        best
    }

    fn run(&self, input: &Tensor) -> TractResult<TVec<TValue>> {
        let (n_rows, n_cols) = match *input.shape() {
            [n, f] => (n, f),
            [f] => (1, f),
            _ => bail!(
                "LinearClassifier: input must be [N, features], got shape {:?}",
                input.shape()
            ),
        };
        if n_cols != self.n_features {
            bail!(
                "LinearClassifier: input has {n_cols} features, the coefficients {}",
                self.n_features
            );
        }
        // The reference computes in float whatever the input type.
        let x = input.cast_to::<f32>()?;
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let t = self.n_scores();
        let mut scores = vec![0f32; n_rows * t];
        let mut labels = Vec::with_capacity(n_rows);
        for (row, out) in x
            .chunks_exact(n_cols.max(1))
            .zip(scores.chunks_exact_mut(t))
        {
            labels.push(self.row(row, out));
        }
        let scores = tract_ndarray::Array2::from_shape_vec((n_rows, t), scores)?.into_tvalue();
        Ok(match &*self.labels {
            ClassLabels::Int64(l) => {
                let v: Vec<i64> = labels
                    .iter()
                    .map(|&i| l.get(i).copied().unwrap_or(0))
                    .collect();
                tvec!(tensor1(&v).into_tvalue(), scores)
            }
            ClassLabels::Strings(l) => {
                let v: Vec<String> = labels
                    .iter()
                    .map(|&i| l.get(i).cloned().unwrap_or_default())
                    .collect();
                tvec!(tensor1(&v).into_tvalue(), scores)
            }
        })
    }
}

impl Op for LinearClassifierOp {
    fn name(&self) -> StaticName {
        "LinearClassifier".into()
    }

    op_as_typed_op!();
}

impl EvalOp for LinearClassifierOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        self.run(&input)
    }
}

impl TypedOp for LinearClassifierOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = inputs[0].shape[0].clone();
        let scores = f32::fact(&[n.clone(), self.n_scores().to_dim()]);
        Ok(match &*self.labels {
            ClassLabels::Int64(_) => tvec!(i64::fact(&[n]), scores),
            ClassLabels::Strings(_) => tvec!(String::fact(&[n]), scores),
        })
    }

    as_op!();
}

/// The inference-time face of [`LinearClassifierOp`].
#[derive(Debug, Clone)]
struct LinearClassifierExpansion {
    op: LinearClassifierOp,
}

impl Expansion for LinearClassifierExpansion {
    fn name(&self) -> StaticName {
        "LinearClassifier".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&inputs[0].rank, 2)?;
        let dt = match &*self.op.labels {
            ClassLabels::Int64(_) => DatumType::I64,
            ClassLabels::Strings(_) => DatumType::String,
        };
        s.equals(&outputs[0].datum_type, dt)?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[1], self.op.n_scores().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.op.clone(), inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(op: &ScalerOp, shape: &[usize], x: Vec<f32>) -> TractResult<Vec<f32>> {
        let t = tract_ndarray::ArrayD::from_shape_vec(shape, x)?.into_tvalue();
        let out = op.run(t)?.remove(0).into_tensor();
        assert_eq!(out.shape(), shape);
        Ok(out.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    /// Per-column and single values, rounding as `(x - o) * s` in f32 twice (what tract's Sub
    /// then Mul computed), NaN passed through; a vector of the wrong length is refused.
    #[test]
    fn scaler_matches_subtract_then_multiply() -> TractResult<()> {
        let op = ScalerOp {
            offset: vec![0.1, -2.0, 1e-3].into(),
            scale: vec![3.0, 0.5, -7.25].into(),
        };
        let x = vec![1.0, 2.5, f32::NAN, -0.3, 1e20, 0.0];
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| (v - op.offset[i % 3]) * op.scale[i % 3])
            .collect();
        let got = scale(&op, &[2, 3], x.clone())?;
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(g.to_bits() == w.to_bits(), "{g} != {w}");
        }
        // A single row as a vector.
        assert_eq!(scale(&op, &[3], x[..3].to_vec())?[1], want[1]);
        // Widened at wiring to one value per column: the same op, the same results.
        assert_eq!(op.per_column(3)?, op);
        assert!(op.per_column(2).is_err());

        let single = ScalerOp {
            offset: vec![1.0].into(),
            scale: vec![2.0].into(),
        };
        assert_eq!(
            scale(&single, &[2, 2], vec![1.0, 2.0, 3.0, 4.0])?,
            [0.0, 2.0, 4.0, 6.0]
        );
        let widened = single.per_column(2)?;
        assert_eq!(&*widened.offset, [1.0, 1.0]);
        assert_eq!(
            scale(&widened, &[2, 2], vec![1.0, 2.0, 3.0, 4.0])?,
            [0.0, 2.0, 4.0, 6.0]
        );

        let err = scale(&op, &[2, 2], vec![0.0; 4]).unwrap_err().to_string();
        assert!(err.contains("offset has 3 values, rows have 2"), "{err}");
        // A model whose row width is known is refused when it is typed, at load.
        let fact = f32::fact([5usize, 2]);
        let err = op.output_facts(&[&fact]).unwrap_err().to_string();
        assert!(err.contains("offset has 3 values, rows have 2"), "{err}");
        assert!(op.output_facts(&[&f32::fact([5usize, 3])]).is_ok());
        Ok(())
    }
}
