//! ONNX graph → [`DensePlan`]. Operator semantics after the ONNX operator specification
//! (<https://onnx.ai/onnx/operators/>), for the opsets 7 and later of the default domain; each
//! handler takes the subset a dense plan expresses and refuses the rest by name.

use crate::kernels::{BinaryOp, UnaryOp};
use crate::{
    pb, CompileError, ConstData, DType, DensePlan, PlanInput, Rows, Step, ValueId, ValueInfo,
};
use std::collections::{HashMap, HashSet};

/// `TensorProto.DataType` values.
const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;

pub(crate) fn compile(model: &pb::ModelProto) -> Result<DensePlan, CompileError> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| CompileError::Malformed("the model imports no ai.onnx opset".into()))?;
    if opset < 7 {
        // Before opset 7, Gemm and the arithmetic operators broadcast by attribute.
        return Err(CompileError::Unsupported {
            node: String::new(),
            op: "(model)".into(),
            reason: format!("ai.onnx opset {opset}: the dense plan takes opset 7 and later"),
        });
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| CompileError::Malformed("the model has no graph".into()))?;
    let mut b = Builder {
        opset,
        initializers: graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect(),
        names: HashMap::new(),
        values: Vec::new(),
        consts: Vec::new(),
        steps: Vec::new(),
        unsettled: HashSet::new(),
        held: std::cell::Cell::new(0),
        budget: 2usize
            .saturating_mul(constant_bytes(graph))
            .saturating_add(HELD_SLACK),
    };
    let inputs = b.inputs(graph)?;
    for node in &graph.node {
        b.node(node)?;
    }
    let outputs = b.outputs(graph)?;
    Ok(b.finish(inputs, outputs))
}

struct Builder<'g> {
    opset: i64,
    initializers: HashMap<&'g str, &'g pb::TensorProto>,
    names: HashMap<String, ValueId>,
    values: Vec<ValueInfo>,
    consts: Vec<Option<ConstData>>,
    steps: Vec<Step>,
    /// Values whose ONNX shape differs from the plan's until a Reshape names it (gathered labels).
    unsettled: HashSet<ValueId>,
    /// Bytes of constant data copied into steps (weights, biases, scale rows, label tables)...
    held: std::cell::Cell<usize>,
    /// ...and how many the model may make: twice its own constants' bytes, plus [`HELD_SLACK`].
    budget: usize,
}

/// What the steps may hold beyond twice the model's constants (widened scalars, say).
const HELD_SLACK: usize = 64 << 20;

/// The bytes of a graph's constants: initializers and Constant nodes' values.
fn constant_bytes(graph: &pb::GraphProto) -> usize {
    let tensor = |t: &pb::TensorProto| {
        t.raw_data.len()
            + 4 * (t.float_data.len() + t.int32_data.len())
            + 8 * (t.int64_data.len() + t.double_data.len())
    };
    let nodes = graph
        .node
        .iter()
        .flat_map(|n| &n.attribute)
        .map(|a| a.t.as_ref().map_or(0, tensor) + 4 * a.floats.len() + 8 * a.ints.len());
    graph.initializer.iter().map(tensor).chain(nodes).sum()
}

fn unsupported(node: &pb::NodeProto, reason: impl Into<String>) -> CompileError {
    CompileError::Unsupported {
        node: node.name.clone(),
        op: node.op_type.clone(),
        reason: reason.into(),
    }
}

fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// `AttributeProto.AttributeType` values.
const ATTR_FLOAT: i32 = 1;
const ATTR_INT: i32 = 2;
const ATTR_TENSOR: i32 = 4;
const ATTR_FLOATS: i32 = 6;
const ATTR_INTS: i32 = 7;

/// The attribute of that name, refused when it is there with another type than `kind` (ONNX
/// Runtime refuses such a model; reading the wrong field would compute something else).
fn typed_attr<'n>(
    node: &'n pb::NodeProto,
    name: &str,
    kind: i32,
) -> Result<Option<&'n pb::AttributeProto>, CompileError> {
    match attr(node, name) {
        Some(a) if a.r#type != kind => Err(CompileError::Malformed(format!(
            "node {:?} ({}): attribute {name} has type {}, the operator takes {kind}",
            node.name, node.op_type, a.r#type
        ))),
        other => Ok(other),
    }
}

fn attr_int(node: &pb::NodeProto, name: &str, default: i64) -> Result<i64, CompileError> {
    Ok(typed_attr(node, name, ATTR_INT)?.map_or(default, |a| a.i))
}

fn attr_float(node: &pb::NodeProto, name: &str, default: f32) -> Result<f32, CompileError> {
    Ok(typed_attr(node, name, ATTR_FLOAT)?.map_or(default, |a| a.f))
}

/// The input at `i`, when given (an empty name is an omitted optional input).
fn input(node: &pb::NodeProto, i: usize) -> Option<&str> {
    node.input
        .get(i)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// `[rows, cols]` of a 2-D view, `dims` being a constant's dimensions (rank 2 or less).
fn view(dims: &[usize]) -> (Rows, usize) {
    match dims {
        [] => (Rows::Fixed(1), 1),
        [c] => (Rows::Fixed(1), *c),
        [r, c, ..] => (Rows::Fixed(*r), *c),
    }
}

/// The widest value the plan makes (columns): far above any dense layer, far below what would
/// let a small model ask a call for gigabytes per row (a `Concat` of a value with itself, repeated).
pub(crate) const MAX_COLUMNS: usize = 1 << 20;
/// The most elements of a value whose rows are fixed (not one per sample): constants and what is
/// computed from them alone (an outer product of two constant vectors, say).
pub(crate) const MAX_FIXED_ELEMENTS: usize = 1 << 26;

impl<'g> Builder<'g> {
    /// Counts `elements` more copied into the steps; refused past the model's budget (a small model
    /// naming one large weight matrix in many nodes would otherwise make a copy per node).
    fn hold(&self, elements: usize) -> Result<(), CompileError> {
        let held = elements
            .checked_mul(8)
            .and_then(|b| b.checked_add(self.held.get()))
            .filter(|&h| h <= self.budget)
            .ok_or_else(|| CompileError::Unsupported {
                node: String::new(),
                op: "(model)".into(),
                reason: format!(
                    "its constants, copied into the plan's steps, would take more than {} bytes",
                    self.budget
                ),
            })?;
        self.held.set(held);
        Ok(())
    }

    fn add_value(
        &mut self,
        info: ValueInfo,
        data: Option<ConstData>,
    ) -> Result<ValueId, CompileError> {
        let fixed = match info.rows {
            Rows::Fixed(r) => r.checked_mul(info.cols),
            Rows::Batch => Some(0),
        };
        if info.cols > MAX_COLUMNS || fixed.is_none_or(|n| n > MAX_FIXED_ELEMENTS) {
            return Err(CompileError::Unsupported {
                node: String::new(),
                op: "(value)".into(),
                reason: format!(
                    "a value of {} rows x {} columns (the plan makes at most {MAX_COLUMNS} columns, \
                     {MAX_FIXED_ELEMENTS} elements of fixed size)",
                    info.rows_text(),
                    info.cols
                ),
            });
        }
        self.values.push(info);
        self.consts.push(data);
        Ok(self.values.len() - 1)
    }

    /// How many of the graph's listed inputs are initializers (IR before 4 lists them).
    fn initializers_listed(&self, graph: &pb::GraphProto) -> usize {
        graph
            .input
            .iter()
            .filter(|v| self.initializers.contains_key(v.name.as_str()))
            .count()
    }

    fn define(&mut self, name: &str, id: ValueId) -> Result<(), CompileError> {
        // A node output or graph input named like an initializer is a second definition too.
        let shadows = self.initializers.contains_key(name) && self.consts[id].is_none();
        if self.names.insert(name.to_string(), id).is_some() || shadows {
            return Err(CompileError::Malformed(format!(
                "value {name:?} is defined more than once"
            )));
        }
        Ok(())
    }

    fn inputs(
        &mut self,
        graph: &pb::GraphProto,
    ) -> Result<Vec<(PlanInput, ValueId)>, CompileError> {
        let mut inputs = Vec::new();
        // The name of the inputs' symbolic first dimension ("" when unnamed): one batch dimension.
        let mut batch_name: Option<String> = None;
        for v in &graph.input {
            // Before IR 4 an initializer is also listed as an input (its default value).
            if self.initializers.contains_key(v.name.as_str()) {
                continue;
            }
            let refuse = |reason: String| CompileError::Interface {
                what: "input",
                name: v.name.clone(),
                reason,
            };
            let Some(pb::type_proto::Value::TensorType(t)) =
                v.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                return Err(refuse("not a tensor".into()));
            };
            if t.elem_type != FLOAT {
                return Err(refuse(format!(
                    "element type {} (the dense plan takes float32)",
                    t.elem_type
                )));
            }
            let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
            use pb::tensor_shape_proto::dimension::Value as Dim;
            let (rows, features) = match dims {
                [r, f] => {
                    let features = match f.value {
                        Some(Dim::DimValue(n)) if n > 0 => n as usize,
                        _ => return Err(refuse("its feature count is not fixed".into())),
                    };
                    // A fixed first dimension is that many rows whatever the batch (a context
                    // row broadcast against it, say); a symbolic one is the batch, and all
                    // inputs share it.
                    let unnamed = matches!(&r.value, Some(Dim::DimParam(p)) if p.is_empty());
                    let rows = match if unnamed { &None } else { &r.value } {
                        Some(Dim::DimValue(n)) if *n > 0 => Rows::Fixed(*n as usize),
                        Some(Dim::DimValue(n)) => {
                            return Err(refuse(format!("first dimension {n}")))
                        }
                        Some(Dim::DimParam(p)) => {
                            if batch_name.get_or_insert_with(|| p.clone()) != p {
                                return Err(refuse(format!(
                                    "first dimension {p:?}, another input's is {:?}: two batch sizes",
                                    batch_name.unwrap_or_default()
                                )));
                            }
                            Rows::Batch
                        }
                        // Unnamed: each input its own size for ONNX Runtime and tract; as the
                        // batch only when it is the one input.
                        None if graph.input.len() - self.initializers_listed(graph) <= 1 => {
                            Rows::Batch
                        }
                        None => {
                            return Err(refuse(
                                "an unnamed first dimension beside other inputs".into(),
                            ))
                        }
                    };
                    (rows, features)
                }
                _ => {
                    return Err(refuse(format!(
                        "rank {} (the dense plan takes [N, F])",
                        dims.len()
                    )))
                }
            };
            let id = self.add_value(
                ValueInfo {
                    dtype: DType::F32,
                    rows,
                    cols: features,
                    rank: 2,
                },
                None,
            )?;
            self.define(&v.name, id)?;
            inputs.push((
                PlanInput {
                    name: v.name.clone(),
                    features,
                    rows: match rows {
                        Rows::Fixed(n) => Some(n),
                        Rows::Batch => None,
                    },
                },
                id,
            ));
        }
        Ok(inputs)
    }

    fn outputs(&mut self, graph: &pb::GraphProto) -> Result<Vec<(String, ValueId)>, CompileError> {
        let mut outputs = Vec::new();
        for v in &graph.output {
            let id = self.value(&v.name)?;
            let info = self.values[id];
            if self.unsettled.contains(&id) || info.dtype == DType::I32 {
                return Err(CompileError::Interface {
                    what: "output",
                    name: v.name.clone(),
                    reason: "int32 labels, or labels of ONNX Runtime's [1, N] shape".into(),
                });
            }
            let Some(pb::type_proto::Value::TensorType(t)) =
                v.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                // The runtime's metadata comes from the declaration: it must say what is served.
                return Err(CompileError::Interface {
                    what: "output",
                    name: v.name.clone(),
                    reason: "not declared as a tensor".into(),
                });
            };
            {
                let ours = match info.dtype {
                    DType::F32 => FLOAT,
                    DType::I64 | DType::I32 => INT64,
                };
                let rank = t.shape.as_ref().map(|s| s.dim.len());
                if t.elem_type != ours || rank.is_some_and(|r| r != info.rank as usize) {
                    return Err(CompileError::Interface {
                        what: "output",
                        name: v.name.clone(),
                        reason: format!(
                            "declared as element type {} of rank {rank:?}, computed as {:?} of rank {}",
                            t.elem_type, info.dtype, info.rank
                        ),
                    });
                }
            }
            outputs.push((v.name.clone(), id));
        }
        Ok(outputs)
    }

    /// The value of that name: defined earlier, or an initializer (made a constant on first use).
    fn value(&mut self, name: &str) -> Result<ValueId, CompileError> {
        if let Some(&id) = self.names.get(name) {
            return Ok(id);
        }
        let t = *self.initializers.get(name).ok_or_else(|| {
            CompileError::Malformed(format!("value {name:?} is read but nothing defines it"))
        })?;
        let id = self.constant(t, name)?;
        self.define(name, id)?;
        Ok(id)
    }

    fn constant(&mut self, t: &pb::TensorProto, name: &str) -> Result<ValueId, CompileError> {
        let malformed =
            |reason: String| CompileError::Malformed(format!("constant {name:?}: {reason}"));
        let dims: Vec<usize> = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| malformed(format!("dimension {d}"))))
            .collect::<Result<_, _>>()?;
        if dims.len() > 2 {
            return Err(CompileError::Unsupported {
                node: String::new(),
                op: "(constant)".into(),
                reason: format!(
                    "{name:?} has rank {}: the dense plan's values have rank 2 or less",
                    dims.len()
                ),
            });
        }
        if t.data_location == Some(1) || !t.external_data.is_empty() || t.segment.is_some() {
            return Err(CompileError::Unsupported {
                node: String::new(),
                op: "(constant)".into(),
                reason: format!("{name:?} is stored outside the model or in segments"),
            });
        }
        let count = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| malformed(format!("dimensions {dims:?} overflow")))?;
        // An empty constant could give a value any number of columns for no bytes of model (and
        // a batch as much memory): none of the graphs the plan serves has one.
        if count == 0 {
            return Err(CompileError::Unsupported {
                node: String::new(),
                op: "(constant)".into(),
                reason: format!("{name:?} has no elements (dimensions {dims:?})"),
            });
        }
        let data = match t.data_type {
            FLOAT => ConstData::F32(if t.raw_data.is_empty() {
                t.float_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            }),
            INT64 => ConstData::I64(if t.raw_data.is_empty() {
                t.int64_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect()
            }),
            // Held as int64: such a constant is only taken where the plan's int64 handling is
            // what ONNX does with it (class labels gathered and cast to int64); an output declared
            // int32 is refused at the graph's outputs.
            INT32 => ConstData::I64(if t.raw_data.is_empty() {
                t.int32_data.iter().map(|&v| v as i64).collect()
            } else {
                t.raw_data
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                    .collect()
            }),
            other => {
                return Err(CompileError::Unsupported {
                    node: String::new(),
                    op: "(constant)".into(),
                    reason: format!("{name:?} has element type {other}"),
                })
            }
        };
        let size = if t.data_type == INT64 { 8 } else { 4 };
        let len = match &data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        };
        let raw_ok = t.raw_data.is_empty() || Some(t.raw_data.len()) == count.checked_mul(size);
        if len != count || !raw_ok {
            return Err(malformed(format!(
                "dimensions {dims:?} hold {count} elements, its data {} bytes / {len} elements",
                t.raw_data.len()
            )));
        }
        let (rows, cols) = view(&dims);
        let dtype = match (&data, t.data_type) {
            (ConstData::F32(_), _) => DType::F32,
            (ConstData::I64(_), INT32) => DType::I32,
            (ConstData::I64(_), _) => DType::I64,
        };
        self.add_value(
            ValueInfo {
                dtype,
                rows,
                cols,
                rank: dims.len() as u8,
            },
            Some(data),
        )
    }

    fn const_f32(&self, id: ValueId) -> Option<&[f32]> {
        match &self.consts[id] {
            Some(ConstData::F32(v)) => Some(v),
            _ => None,
        }
    }

    fn push(
        &mut self,
        node: &pb::NodeProto,
        info: ValueInfo,
        step: impl FnOnce(ValueId) -> Step,
    ) -> Result<(), CompileError> {
        let out = self.add_value(info, None)?;
        self.steps.push(step(out));
        let name = node.output.first().ok_or_else(|| {
            CompileError::Malformed(format!("node {:?} has no output", node.name))
        })?;
        self.define(name, out)
    }

    /// The node's first output is `id` under another name.
    fn alias(
        &mut self,
        node: &pb::NodeProto,
        id: ValueId,
        info: ValueInfo,
    ) -> Result<(), CompileError> {
        let name = node.output.first().ok_or_else(|| {
            CompileError::Malformed(format!("node {:?} has no output", node.name))
        })?;
        let id = if info == self.values[id] {
            id
        } else {
            // Same elements, another shape: a view of the same buffer would need shape per slot, so
            // the reshaped value is a copy made by an identity step.
            let out = self.add_value(info, None)?;
            self.steps.push(Step::Concat { xs: vec![id], out });
            if self.unsettled.contains(&id) {
                self.unsettled.insert(out);
            }
            out
        };
        self.define(name, id)
    }

    fn operand(&mut self, node: &pb::NodeProto, i: usize) -> Result<ValueId, CompileError> {
        let name = input(node, i).ok_or_else(|| {
            CompileError::Malformed(format!(
                "node {:?} ({}) lacks input {i}",
                node.name, node.op_type
            ))
        })?;
        self.value(name)
    }

    fn node(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        if node.domain == "ai.onnx.ml" {
            return match node.op_type.as_str() {
                "Scaler" => self.scaler(node),
                "ArrayFeatureExtractor" => self.array_feature_extractor(node),
                other => Err(unsupported(
                    node,
                    format!("operator ai.onnx.ml {other} is not in the dense plan"),
                )),
            };
        }
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(unsupported(node, format!("domain {:?}", node.domain)));
        }
        if node.output.iter().skip(1).any(|o| !o.is_empty()) && node.op_type != "Dropout" {
            return Err(unsupported(node, "more than one output"));
        }
        match node.op_type.as_str() {
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Add" => self.binary(node, BinaryOp::Add),
            "Sub" => self.binary(node, BinaryOp::Sub),
            "Mul" => self.binary(node, BinaryOp::Mul),
            "Div" => self.binary(node, BinaryOp::Div),
            "Relu" => self.unary(node, UnaryOp::Relu),
            "LeakyRelu" => self.unary(node, UnaryOp::LeakyRelu(attr_float(node, "alpha", 0.01)?)),
            "Sigmoid" => self.unary(node, UnaryOp::Sigmoid),
            "Tanh" => self.unary(node, UnaryOp::Tanh),
            "Neg" => self.unary(node, UnaryOp::Neg),
            "Abs" => self.unary(node, UnaryOp::Abs),
            "Softmax" => self.softmax(node),
            "Concat" => self.concat(node),
            "ArgMax" => self.argmax(node),
            "Identity" => {
                let x = self.operand(node, 0)?;
                self.alias(node, x, self.values[x])
            }
            "Dropout" => {
                // Inference: the identity. A mask output or a training-mode input is not.
                if node.output.get(1).is_some_and(|o| !o.is_empty()) || input(node, 2).is_some() {
                    return Err(unsupported(node, "a mask output or training_mode input"));
                }
                let x = self.operand(node, 0)?;
                self.alias(node, x, self.values[x])
            }
            "Flatten" => {
                let x = self.operand(node, 0)?;
                let info = self.values[x];
                let axis = attr_int(node, "axis", 1)?;
                if info.rank != 2 || !(axis == 1 || axis == -1) {
                    return Err(unsupported(
                        node,
                        format!("axis {axis} of a rank-{} value", info.rank),
                    ));
                }
                self.alias(node, x, info)
            }
            "Reshape" => self.reshape(node),
            "Cast" => {
                let x = self.operand(node, 0)?;
                let info = self.values[x];
                let to = attr_int(node, "to", 0)?;
                match (info.dtype, to) {
                    (DType::F32, 1) | (DType::I64, 7) | (DType::I32, 6) => {
                        self.alias(node, x, info)
                    }
                    // int32 is held as int64: the cast only retypes.
                    (DType::I32, 7) => self.alias(
                        node,
                        x,
                        ValueInfo {
                            dtype: DType::I64,
                            ..info
                        },
                    ),
                    _ => Err(unsupported(
                        node,
                        format!("cast from {:?} to type {to}", info.dtype),
                    )),
                }
            }
            "Constant" => self.constant_node(node),
            other => Err(unsupported(
                node,
                format!("operator {other} is not in the dense plan"),
            )),
        }
    }

    /// A float32 value of rank 2 computed at run time (the left operand of a product).
    fn dynamic_matrix(
        &mut self,
        node: &pb::NodeProto,
        i: usize,
    ) -> Result<(ValueId, ValueInfo), CompileError> {
        let a = self.operand(node, i)?;
        let info = self.values[a];
        if info.dtype != DType::F32 || info.rank != 2 || self.consts[a].is_some() {
            return Err(unsupported(
                node,
                format!("operand {i} is not a float32 matrix computed at run time"),
            ));
        }
        Ok((a, info))
    }

    /// A constant float32 matrix: `(rows, cols, data)`.
    fn const_matrix(
        &mut self,
        node: &pb::NodeProto,
        i: usize,
    ) -> Result<(usize, usize, Vec<f32>), CompileError> {
        let b = self.operand(node, i)?;
        let info = self.values[b];
        match (self.const_f32(b), info.rank, info.rows) {
            (Some(data), 2, Rows::Fixed(rows)) => {
                self.hold(data.len())?;
                Ok((rows, info.cols, data.to_vec()))
            }
            _ => Err(unsupported(
                node,
                format!("operand {i} is not a constant float32 matrix"),
            )),
        }
    }

    /// ONNX Gemm: `Y = alpha * A' · B' + beta * C`.
    fn gemm(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        if attr_int(node, "transA", 0)? != 0 {
            return Err(unsupported(node, "transA"));
        }
        let (a, ainfo) = self.dynamic_matrix(node, 0)?;
        let (r, c, data) = self.const_matrix(node, 1)?;
        let trans_b = attr_int(node, "transB", 0)? != 0;
        if (if trans_b { c } else { r }) != ainfo.cols {
            return Err(CompileError::Malformed(format!(
                "node {:?} (Gemm): A has {} columns, B' {} rows",
                node.name,
                ainfo.cols,
                if trans_b { c } else { r }
            )));
        }
        let (k, n, weights) = if trans_b {
            let mut t = vec![0.0; data.len()];
            for i in 0..r {
                for j in 0..c {
                    t[j * r + i] = data[i * c + j];
                }
            }
            (c, r, t)
        } else {
            (r, c, data)
        };
        if k != ainfo.cols {
            return Err(CompileError::Malformed(format!(
                "node {:?} (Gemm): A has {} columns, B {k} rows",
                node.name, ainfo.cols
            )));
        }
        if input(node, 2).is_none() && self.opset < 11 {
            return Err(unsupported(node, "C is required before opset 11"));
        }
        let beta = attr_float(node, "beta", 1.0)?;
        let bias = match input(node, 2) {
            None => None,
            Some(name) => {
                let id = self.value(name)?;
                let info = self.values[id];
                let Some(c) = self.const_f32(id) else {
                    return Err(unsupported(node, "C is not a float32 constant"));
                };
                self.hold(n)?;
                let bias: Vec<f32> = match (info.rows, info.cols) {
                    (Rows::Fixed(1), cols) if cols == n => c.iter().map(|v| beta * v).collect(),
                    (Rows::Fixed(1), 1) => vec![beta * c[0]; n],
                    _ => {
                        return Err(unsupported(
                            node,
                            format!(
                                "C of {} rows × {} columns is not one row of {n}",
                                info.rows_text(),
                                info.cols
                            ),
                        ))
                    }
                };
                (beta != 0.0).then_some(bias)
            }
        };
        let alpha = attr_float(node, "alpha", 1.0)?;
        self.push_product(node, (a, ainfo), (k, n, weights), alpha, bias)
    }

    /// The step `alpha * a · weights (+ bias)`, `weights` `[k, n]`.
    fn push_product(
        &mut self,
        node: &pb::NodeProto,
        (a, ainfo): (ValueId, ValueInfo),
        (k, n, weights): (usize, usize, Vec<f32>),
        alpha: f32,
        bias: Option<Vec<f32>>,
    ) -> Result<(), CompileError> {
        let info = ValueInfo {
            dtype: DType::F32,
            rows: ainfo.rows,
            cols: n,
            rank: 2,
        };
        self.push(node, info, |out| Step::MatMul {
            a,
            weights,
            k,
            n,
            alpha,
            bias,
            activation: None,
            out,
        })
    }

    fn matmul(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        let (a, ainfo) = self.dynamic_matrix(node, 0)?;
        let (k, n, weights) = self.const_matrix(node, 1)?;
        if k != ainfo.cols {
            return Err(CompileError::Malformed(format!(
                "node {:?} (MatMul): A has {} columns, B {k} rows",
                node.name, ainfo.cols
            )));
        }
        self.push_product(node, (a, ainfo), (k, n, weights), 1.0, None)
    }

    fn binary(&mut self, node: &pb::NodeProto, op: BinaryOp) -> Result<(), CompileError> {
        let a = self.operand(node, 0)?;
        let b = self.operand(node, 1)?;
        let (x, y) = (self.values[a], self.values[b]);
        if x.dtype != DType::F32 || y.dtype != DType::F32 {
            return Err(unsupported(node, "an operand is not float32"));
        }
        // A per-sample vector `[N]` aligns with the other operand's last axis under numpy's rules:
        // not a broadcast the plan expresses.
        if [x, y].iter().any(|v| v.rank == 1 && v.rows == Rows::Batch) {
            return Err(unsupported(
                node,
                "an operand is a per-sample vector of rank 1",
            ));
        }
        let rows_of = |v: ValueInfo| if v.rank < 2 { Rows::Fixed(1) } else { v.rows };
        let rows = match (rows_of(x), rows_of(y)) {
            (Rows::Batch, Rows::Batch) => Rows::Batch,
            (Rows::Batch, Rows::Fixed(1)) | (Rows::Fixed(1), Rows::Batch) => Rows::Batch,
            (Rows::Batch, Rows::Fixed(r)) | (Rows::Fixed(r), Rows::Batch) => {
                return Err(unsupported(
                    node,
                    format!("a constant of {r} rows against the batch"),
                ))
            }
            (Rows::Fixed(p), Rows::Fixed(q)) if p == q || q == 1 => Rows::Fixed(p),
            (Rows::Fixed(1), Rows::Fixed(q)) => Rows::Fixed(q),
            (Rows::Fixed(p), Rows::Fixed(q)) => {
                return Err(CompileError::Malformed(format!(
                    "node {:?} ({}): {p} rows against {q}",
                    node.name, node.op_type
                )))
            }
        };
        let cols = match (x.cols, y.cols) {
            (p, q) if p == q || q == 1 => p,
            (1, q) => q,
            (p, q) => {
                return Err(CompileError::Malformed(format!(
                    "node {:?} ({}): {p} columns against {q}",
                    node.name, node.op_type
                )))
            }
        };
        let rank = x.rank.max(y.rank);
        let info = ValueInfo {
            dtype: DType::F32,
            rows: if rank < 2 { Rows::Fixed(1) } else { rows },
            cols,
            rank,
        };
        self.push(node, info, |out| Step::Binary { op, a, b, out })
    }

    fn unary(&mut self, node: &pb::NodeProto, op: UnaryOp) -> Result<(), CompileError> {
        let x = self.operand(node, 0)?;
        let info = self.values[x];
        if info.dtype != DType::F32 {
            return Err(unsupported(node, "the operand is not float32"));
        }
        self.push(node, info, |out| Step::Unary { op, x, out })
    }

    /// The axis a rank-2 operator works along must be the last (features); a negative axis only
    /// from opset 11, where ONNX allows it.
    fn last_axis(
        &self,
        node: &pb::NodeProto,
        info: ValueInfo,
        axis: i64,
    ) -> Result<(), CompileError> {
        if axis < 0 && self.opset < 11 {
            return Err(unsupported(node, format!("axis {axis} before opset 11")));
        }
        if info.rank != 2 || !(axis == 1 || axis == -1) {
            return Err(unsupported(
                node,
                format!(
                    "axis {axis} of a rank-{} value (the plan works along the last of two)",
                    info.rank
                ),
            ));
        }
        Ok(())
    }

    fn softmax(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        let x = self.operand(node, 0)?;
        let info = self.values[x];
        // Opset 13 made the default axis -1; before, 1 with the input coerced to 2-D: the same for
        // a rank-2 input.
        let axis = attr_int(node, "axis", if self.opset >= 13 { -1 } else { 1 })?;
        self.last_axis(node, info, axis)?;
        if info.dtype != DType::F32 {
            return Err(unsupported(node, "the operand is not float32"));
        }
        self.push(node, info, |out| Step::Softmax { x, out })
    }

    fn concat(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        let axis = typed_attr(node, "axis", ATTR_INT)?
            .map(|a| a.i)
            .ok_or_else(|| {
                CompileError::Malformed(format!("node {:?} (Concat) has no axis", node.name))
            })?;
        let xs = (0..node.input.len())
            .map(|i| self.operand(node, i))
            .collect::<Result<Vec<_>, _>>()?;
        let first = *xs.first().ok_or_else(|| {
            CompileError::Malformed(format!("node {:?} (Concat) has no input", node.name))
        })?;
        let first = self.values[first];
        let mut cols = 0usize;
        for &id in &xs {
            let info = self.values[id];
            self.last_axis(node, info, axis)?;
            if info.dtype != first.dtype || info.rows != first.rows {
                return Err(unsupported(node, "inputs of different types or row counts"));
            }
            cols = cols
                .checked_add(info.cols)
                .ok_or_else(|| CompileError::Malformed("Concat: too many columns".into()))?;
        }
        let info = ValueInfo { cols, ..first };
        self.push(node, info, |out| Step::Concat { xs, out })
    }

    fn argmax(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        let x = self.operand(node, 0)?;
        let info = self.values[x];
        self.last_axis(node, info, attr_int(node, "axis", 0)?)?;
        if info.dtype != DType::F32 || info.cols == 0 {
            return Err(unsupported(
                node,
                "the operand is not float32 with at least one column",
            ));
        }
        let keepdims = attr_int(node, "keepdims", 1)? != 0;
        if !keepdims && info.rows != Rows::Batch {
            return Err(unsupported(node, "keepdims=0 on a constant"));
        }
        let last = attr_int(node, "select_last_index", 0)? != 0;
        let out = ValueInfo {
            dtype: DType::I64,
            rows: info.rows,
            cols: 1,
            rank: if keepdims { 2 } else { 1 },
        };
        self.push(node, out, |out| Step::ArgMax { x, last, out })
    }

    /// ai.onnx.ml Scaler: `(x - offset) * scale`, each attribute one value or one per feature, as
    /// a subtraction and a multiplication by constant rows (what ONNX Runtime computes, in float).
    fn scaler(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        let x = self.operand(node, 0)?;
        let info = self.values[x];
        if info.dtype != DType::F32 || info.rank != 2 {
            return Err(unsupported(node, "the operand is not a float32 matrix"));
        }
        let row = |name: &str| -> Result<Vec<f32>, CompileError> {
            let v = typed_attr(node, name, ATTR_FLOATS)?
                .map(|a| a.floats.clone())
                .unwrap_or_default();
            match v.len() {
                n if n == info.cols || n == 1 => Ok(v),
                n => Err(CompileError::Malformed(format!(
                    "Scaler {:?}: {name} has {n} values for {} features",
                    node.name, info.cols
                ))),
            }
        };
        let (offset, scale) = (row("offset")?, row("scale")?);
        self.hold(offset.len() + scale.len())?;
        let constant = |b: &mut Self, v: Vec<f32>| {
            let info = ValueInfo {
                dtype: DType::F32,
                rows: Rows::Fixed(1),
                cols: v.len(),
                rank: 1,
            };
            b.add_value(info, Some(ConstData::F32(v)))
        };
        let offset = constant(self, offset)?;
        let scale = constant(self, scale)?;
        let centered = self.add_value(info, None)?;
        self.steps.push(Step::Binary {
            op: BinaryOp::Sub,
            a: x,
            b: offset,
            out: centered,
        });
        self.push(node, info, |out| Step::Binary {
            op: BinaryOp::Mul,
            a: centered,
            b: scale,
            out,
        })
    }

    /// ai.onnx.ml ArrayFeatureExtractor as classifiers end: a constant table of integer labels
    /// `[C]` indexed by one int64 index per row (`[N, 1]`, an ArgMax). ONNX Runtime gives
    /// `[1, N]`; the plan holds the same elements as `[N]`, which every reshape it takes reads
    /// alike, and refuses the value as a graph output (declared rank 2).
    fn array_feature_extractor(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        // The gathered labels have ONNX Runtime's shape [1, N] (tract's [N, 1]); the plan's [N] is
        // right only after a Reshape names the shape: until then not a graph output.
        let table = self.operand(node, 0)?;
        let index = self.operand(node, 1)?;
        let (t, i) = (self.values[table], self.values[index]);
        let Some(ConstData::I64(labels)) = &self.consts[table] else {
            return Err(unsupported(node, "the table is not an integer constant"));
        };
        if t.rank != 1
            || i.dtype != DType::I64
            || i.rank != 2
            || i.cols != 1
            || i.rows != Rows::Batch
        {
            return Err(unsupported(
                node,
                "not a [C] table indexed by one int64 per row",
            ));
        }
        let labels = labels.clone();
        self.hold(labels.len())?;
        // The index is an ArgMax over no more columns than the table has labels, so every index
        // the call computes is inside the table.
        let in_range = self.steps.iter().any(|s| match s {
            Step::ArgMax { x, out, .. } => *out == index && self.values[*x].cols <= labels.len(),
            _ => false,
        });
        if !in_range {
            return Err(unsupported(
                node,
                "the index is not an ArgMax over at most as many columns as the table has labels",
            ));
        }
        let info = ValueInfo {
            dtype: t.dtype,
            rows: Rows::Batch,
            cols: 1,
            rank: 1,
        };
        self.push(node, info, |out| Step::Gather {
            table: labels,
            index,
            out,
        })?;
        let out = self.values.len() - 1;
        self.unsettled.insert(out);
        Ok(())
    }

    /// Reshapes that only name the shape the value has, or move between `[N]` and `[N, 1]`.
    fn reshape(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        let x = self.operand(node, 0)?;
        let s = self.operand(node, 1)?;
        let info = self.values[x];
        let Some(ConstData::I64(shape)) = &self.consts[s] else {
            return Err(unsupported(node, "the shape is not an int64 constant"));
        };
        if self.values[s].rank != 1 || self.values[s].dtype != DType::I64 {
            return Err(unsupported(node, "the shape is not an int64 vector"));
        }
        let allowzero = attr_int(node, "allowzero", 0)? != 0;
        let cols = info.cols as i64;
        let target = match (info.rank, info.rows, shape.as_slice()) {
            (2, _, [-1 | 0, c]) if *c == cols && !allowzero => info,
            (2, _, [-1, c]) if *c == cols => info,
            (2, Rows::Batch, [-1]) if cols == 1 => ValueInfo { rank: 1, ..info },
            (1, Rows::Batch, [-1]) => info,
            (1, Rows::Batch, [0]) if !allowzero => info,
            (1, Rows::Batch, [-1 | 0, 1]) if !allowzero || shape[0] == -1 => {
                ValueInfo { rank: 2, ..info }
            }
            _ => {
                return Err(unsupported(
                    node,
                    format!(
                        "shape {shape:?} of a rank-{} value of {cols} columns",
                        info.rank
                    ),
                ))
            }
        };
        if self.unsettled.contains(&x) {
            // ONNX Runtime's [1, N]: a 0 in the shape would copy its 1, not the plan's N.
            if shape.contains(&0) {
                return Err(unsupported(node, "a 0 in the shape of gathered labels"));
            }
            // A copy, so that the reshaped value is another than the one of unsettled shape.
            let out = self.add_value(target, None)?;
            self.steps.push(Step::Concat { xs: vec![x], out });
            let name = node.output.first().ok_or_else(|| {
                CompileError::Malformed(format!("node {:?} has no output", node.name))
            })?;
            return self.define(name, out);
        }
        self.alias(node, x, target)
    }

    fn constant_node(&mut self, node: &pb::NodeProto) -> Result<(), CompileError> {
        let name = node.output.first().ok_or_else(|| {
            CompileError::Malformed(format!("node {:?} has no output", node.name))
        })?;
        let a = node.attribute.first().ok_or_else(|| {
            CompileError::Malformed(format!("Constant {:?} has no value", node.name))
        })?;
        let kind = match a.name.as_str() {
            "value" => ATTR_TENSOR,
            "value_float" => ATTR_FLOAT,
            "value_floats" => ATTR_FLOATS,
            "value_int" => ATTR_INT,
            "value_ints" => ATTR_INTS,
            _ => a.r#type,
        };
        if a.r#type != kind {
            return Err(CompileError::Malformed(format!(
                "Constant {:?}: {} of attribute type {}",
                node.name, a.name, a.r#type
            )));
        }
        let (info, data) = match a.name.as_str() {
            "value" => {
                let t = a.t.as_ref().ok_or_else(|| {
                    CompileError::Malformed(format!("Constant {:?}: no tensor", node.name))
                })?;
                let id = self.constant(t, name)?;
                return self.define(name, id);
            }
            "value_float" => ((Rows::Fixed(1), 1, 0), ConstData::F32(vec![a.f])),
            "value_floats" => (
                (Rows::Fixed(1), a.floats.len(), 1),
                ConstData::F32(a.floats.clone()),
            ),
            "value_int" => ((Rows::Fixed(1), 1, 0), ConstData::I64(vec![a.i])),
            "value_ints" => (
                (Rows::Fixed(1), a.ints.len(), 1),
                ConstData::I64(a.ints.clone()),
            ),
            other => return Err(unsupported(node, format!("value given as {other}"))),
        };
        let dtype = match data {
            ConstData::F32(_) => DType::F32,
            ConstData::I64(_) => DType::I64,
        };
        let id = self.add_value(
            ValueInfo {
                dtype,
                rows: info.0,
                cols: info.1,
                rank: info.2,
            },
            Some(data),
        )?;
        self.define(name, id)
    }

    /// A constant row usable against a value of `cols` columns: its elements, one per column.
    fn const_row(&self, id: ValueId, cols: usize) -> Option<Vec<f32>> {
        let data = self.const_f32(id)?;
        let info = self.values[id];
        if info.rows != Rows::Fixed(1) || !(info.cols == cols || info.cols == 1) {
            return None;
        }
        // Past the budget the standardisation or bias is simply not folded.
        self.hold(cols).ok()?;
        Some(
            (0..cols)
                .map(|j| data[if info.cols == 1 { 0 } else { j }])
                .collect(),
        )
    }

    /// A standardisation, `(x - offset) / scale` or `(x - offset) * scale` by constant rows,
    /// in one pass instead of two (the same two operations on each element).
    fn fuse_scalers(&self, steps: Vec<Step>, outputs: &HashSet<ValueId>) -> Vec<Step> {
        let single = read_once(&steps, outputs);
        let alone = |id: ValueId| single.contains(&id);
        let mut fused: Vec<Step> = Vec::with_capacity(steps.len());
        // Where in `fused` each `x - offset` is.
        let mut centered: HashMap<ValueId, usize> = HashMap::new();
        for step in steps {
            if let Step::Binary {
                op: op @ (BinaryOp::Div | BinaryOp::Mul),
                a,
                b,
                out,
            } = step
            {
                let cols = self.values[out].cols;
                let scale = self.const_row(b, cols);
                if let (Some(&i), Some(scale)) = (centered.get(&a), scale) {
                    if let Step::Binary {
                        a: x, b: offset, ..
                    } = fused[i]
                    {
                        if alone(a) && self.values[out] == self.values[a] {
                            if let Some(offset) = self.const_row(offset, cols) {
                                fused[i] = Step::Scale {
                                    x,
                                    offset,
                                    op,
                                    scale,
                                    out,
                                };
                                continue;
                            }
                        }
                    }
                }
            }
            if let Step::Binary {
                op: BinaryOp::Sub,
                a,
                b,
                out,
            } = step
            {
                let cols = self.values[out].cols;
                let fits = self.values[a] == self.values[out] && self.consts[a].is_none();
                if fits && self.const_row(b, cols).is_some() {
                    centered.insert(out, fused.len());
                }
            }
            fused.push(step);
        }
        fused
    }

    /// Folds into each product the bias `Add` and the activation that follow it when nothing else
    /// reads the product, so that one pass over it does both. The arithmetic is the same, in the
    /// same order: a product without a bias of its own gets the `Add`'s constant row as its bias.
    fn fuse(&self, steps: Vec<Step>, outputs: &HashSet<ValueId>) -> Vec<Step> {
        let single = read_once(&steps, outputs);
        let alone = |id: ValueId| single.contains(&id);
        let mut fused: Vec<Step> = Vec::with_capacity(steps.len());
        // Where in `fused` the product of each value is.
        let mut products: HashMap<ValueId, usize> = HashMap::new();
        for step in steps {
            let folded = match &step {
                Step::Binary {
                    op: BinaryOp::Add,
                    a,
                    b,
                    out,
                } => [(*a, *b), (*b, *a)].into_iter().find_map(|(p, c)| {
                    let i = *products.get(&p)?;
                    let Step::MatMul {
                        bias: None,
                        activation: None,
                        n,
                        ..
                    } = fused[i]
                    else {
                        return None;
                    };
                    if !alone(p) || self.values[*out] != self.values[p] {
                        return None;
                    }
                    let bias = self.const_row(c, n)?;
                    Some((i, p, *out, Some(bias), None))
                }),
                Step::Unary { op, x, out } => products.get(x).and_then(|&i| {
                    let fits = matches!(
                        fused[i],
                        Step::MatMul {
                            activation: None,
                            ..
                        }
                    );
                    (alone(*x) && fits).then_some((i, *x, *out, None, Some(*op)))
                }),
                _ => None,
            };
            match folded {
                Some((i, product, result, new_bias, new_activation)) => {
                    if let Step::MatMul {
                        bias,
                        activation,
                        out,
                        ..
                    } = &mut fused[i]
                    {
                        if new_bias.is_some() {
                            *bias = new_bias;
                        }
                        if new_activation.is_some() {
                            *activation = new_activation;
                        }
                        *out = result;
                    }
                    products.remove(&product);
                    products.insert(result, i);
                }
                None => {
                    if let Step::MatMul { out, .. } = step {
                        products.insert(out, fused.len());
                    }
                    fused.push(step);
                }
            }
        }
        fused
    }

    /// Drops the steps no output needs and marks where each buffer is read for the last time.
    fn finish(
        mut self,
        inputs: Vec<(PlanInput, ValueId)>,
        outputs: Vec<(String, ValueId)>,
    ) -> DensePlan {
        let output_ids: HashSet<ValueId> = outputs.iter().map(|&(_, id)| id).collect();
        let steps = std::mem::take(&mut self.steps);
        let steps = self.fuse_scalers(steps, &output_ids);
        let steps = self.fuse(steps, &output_ids);
        let mut needed = output_ids;
        let mut steps: Vec<Step> = steps
            .into_iter()
            .rev()
            .filter(|s| {
                let keep = needed.contains(&s.writes());
                if keep {
                    needed.extend(s.reads());
                }
                keep
            })
            .collect();
        steps.reverse();
        let kept: HashSet<ValueId> = outputs.iter().map(|&(_, id)| id).collect();
        let mut last_read: HashMap<ValueId, usize> = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            for id in s.reads() {
                last_read.insert(id, i);
            }
        }
        // Constants folded into steps (weights, biases, scales) are not kept a second time.
        let mut consts = self.consts;
        let read: HashSet<ValueId> = steps.iter().flat_map(Step::reads).collect();
        for (id, c) in consts.iter_mut().enumerate() {
            if !read.contains(&id) && !kept.contains(&id) {
                *c = None;
            }
        }
        let mut release_after = vec![Vec::new(); steps.len()];
        for (id, i) in last_read {
            if !kept.contains(&id) {
                release_after[i].push(id);
            }
        }
        let call_values = steps
            .iter()
            .map(Step::writes)
            .chain(outputs.iter().map(|&(_, id)| id))
            .collect();
        DensePlan {
            inputs,
            outputs,
            values: self.values,
            consts,
            steps,
            release_after,
            call_values,
        }
    }
}

/// The values exactly one step reads and no graph output is: what a fusion may fold away.
fn read_once(steps: &[Step], outputs: &HashSet<ValueId>) -> HashSet<ValueId> {
    let mut readers: HashMap<ValueId, usize> = HashMap::new();
    for id in steps.iter().flat_map(Step::reads) {
        *readers.entry(id).or_default() += 1;
    }
    readers
        .into_iter()
        .filter(|&(id, n)| n == 1 && !outputs.contains(&id))
        .map(|(id, _)| id)
        .collect()
}

impl ValueInfo {
    fn rows_text(&self) -> String {
        match self.rows {
            Rows::Batch => "N".into(),
            Rows::Fixed(r) => r.to_string(),
        }
    }
}
