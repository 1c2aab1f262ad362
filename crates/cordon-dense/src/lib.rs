//! Cordon's dense engine: ONNX graphs made of dense layers, compiled to a plan that runs on
//! faer's GEMM.
//!
//! Linear models and multilayer perceptrons are a few matrix products with elementwise work
//! between them. A general graph interpreter (tract) pays for its generality on every call; this
//! crate compiles such a graph, once at load, to a straight list of steps over row-major
//! `[rows, cols]` buffers:
//!
//! - `Gemm` and `MatMul` by a constant weight matrix (faer's GEMM, one thread), the bias added in
//!   the same pass;
//! - `Add`, `Sub`, `Mul`, `Div` with broadcasting; `Relu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Neg`,
//!   `Abs`; `Softmax` over the last axis; `Concat` along the features; `ArgMax` over the last axis;
//! - `Identity`, `Flatten`, `Dropout` (inference), `Reshape` and `Cast` where they change nothing
//!   but the view, resolved at compile time.
//!
//! Every input is `float32 [N, F]` (rows, features), and every value in the graph has rank two or
//! less. A graph with anything else (another operator, domain or datatype, a weight computed at
//! run time, a broadcast the plan cannot express) is refused with a [`CompileError`] naming the
//! node and why, and the caller runs it on a general engine instead: refusal is the normal way to
//! say "not a dense graph", not a failure.
//!
//! A compiled [`DensePlan`] is immutable and `Sync`: concurrent calls share it. [`DensePlan::run`]
//! checks its inputs' lengths and never panics on them.

mod compile;
mod kernels;

use kernels::{BinaryOp, Operand, UnaryOp};
use std::borrow::Cow;
use thiserror::Error;

pub use tract_onnx::pb;

/// Why a graph was not compiled. The runtime then evaluates it on tract.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompileError {
    /// An operator, domain or attribute value outside what the plan implements.
    #[error("node {node:?} ({op}): {reason}")]
    Unsupported {
        node: String,
        op: String,
        reason: String,
    },
    /// A graph input or output the plan cannot take or give (not float32 `[N, F]`, ...).
    #[error("graph {what} {name:?}: {reason}")]
    Interface {
        what: &'static str,
        name: String,
        reason: String,
    },
    /// A graph that is not valid ONNX: a value nothing defines, an initializer whose data does not
    /// fit its dimensions, shapes that do not agree.
    #[error("malformed graph: {0}")]
    Malformed(String),
}

/// Why a call was refused. Names sizes, never data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RunError {
    #[error("{given} inputs given, the plan takes {expected}")]
    InputCount { given: usize, expected: usize },
    #[error(
        "input {name:?}: {rows} rows of {features} features are {expected} values, {found} given"
    )]
    InputLength {
        name: String,
        rows: usize,
        features: usize,
        expected: usize,
        found: usize,
    },
    #[error("input {name:?} has {found} rows, input {first:?} has {expected}: every input has one row per sample")]
    RowCount {
        name: String,
        found: usize,
        first: String,
        expected: usize,
    },
    #[error("input {name:?} has {found} rows, the model fixes {expected}")]
    FixedRows {
        name: String,
        found: usize,
        expected: usize,
    },
    /// A batch whose values would take more than [`MAX_CALL_BYTES`].
    #[error("a batch of {rows} rows needs more than 4 GiB with this model: send fewer rows")]
    TooLarge { rows: usize },
}

/// A graph input: `float32 [rows, features]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    pub name: String,
    pub features: usize,
    /// The rows the graph fixes for it; `None`: one per sample of the batch.
    pub rows: Option<usize>,
}

/// One input's elements for [`DensePlan::run`], row-major.
#[derive(Debug, Clone, Copy)]
pub struct InputData<'a> {
    pub rows: usize,
    pub data: &'a [f32],
}

/// An output's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A graph output, in the graph's order: its shape and row-major elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub shape: Vec<usize>,
    pub data: OutputData,
}

type ValueId = usize;

/// The most memory one call's values may take (counted as if all were alive at once).
pub const MAX_CALL_BYTES: usize = 1 << 32;

/// How many rows a value has: one per sample (the inputs' first dimension), or fixed by the graph
/// (constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    Batch,
    Fixed(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DType {
    F32,
    I64,
    /// An int32 constant (labels), held as int64; never a graph output as such.
    I32,
}

/// A value's type and shape: `rank` 2 is `[rows, cols]`; rank 1 is `[cols]` for a constant and
/// `[rows]` (cols 1) for a per-sample value; rank 0 is a scalar (1 × 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValueInfo {
    dtype: DType,
    rows: Rows,
    cols: usize,
    rank: u8,
}

#[derive(Debug, Clone)]
enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone)]
enum Step {
    /// `out = activation(alpha * a · weights (+ bias))`; weights `[k, n]` row-major, bias `[n]`.
    MatMul {
        a: ValueId,
        weights: Vec<f32>,
        k: usize,
        n: usize,
        alpha: f32,
        bias: Option<Vec<f32>>,
        activation: Option<UnaryOp>,
        out: ValueId,
    },
    Binary {
        op: BinaryOp,
        a: ValueId,
        b: ValueId,
        out: ValueId,
    },
    Unary {
        op: UnaryOp,
        x: ValueId,
        out: ValueId,
    },
    Softmax {
        x: ValueId,
        out: ValueId,
    },
    Concat {
        xs: Vec<ValueId>,
        out: ValueId,
    },
    ArgMax {
        x: ValueId,
        last: bool,
        out: ValueId,
    },
    /// `out = (x - offset) / scale` (or `* scale`), by rows of one value per column.
    Scale {
        x: ValueId,
        offset: Vec<f32>,
        op: BinaryOp,
        scale: Vec<f32>,
        out: ValueId,
    },
    /// `out[r] = table[index[r]]`, every index inside the table (checked when compiled).
    Gather {
        table: Vec<i64>,
        index: ValueId,
        out: ValueId,
    },
}

impl Step {
    fn reads(&self) -> Vec<ValueId> {
        match self {
            Step::MatMul { a, .. } => vec![*a],
            Step::Binary { a, b, .. } => vec![*a, *b],
            Step::Unary { x, .. } | Step::Softmax { x, .. } | Step::ArgMax { x, .. } => vec![*x],
            Step::Concat { xs, .. } => xs.clone(),
            Step::Gather { index, .. } => vec![*index],
            Step::Scale { x, .. } => vec![*x],
        }
    }

    fn writes(&self) -> ValueId {
        match self {
            Step::MatMul { out, .. }
            | Step::Binary { out, .. }
            | Step::Unary { out, .. }
            | Step::Softmax { out, .. }
            | Step::Concat { out, .. }
            | Step::ArgMax { out, .. }
            | Step::Gather { out, .. }
            | Step::Scale { out, .. } => *out,
        }
    }
}

/// A compiled dense graph. It holds the model's weights: its `Debug` shows the interface and the
/// steps, never them.
#[derive(Clone)]
pub struct DensePlan {
    inputs: Vec<(PlanInput, ValueId)>,
    outputs: Vec<(String, ValueId)>,
    values: Vec<ValueInfo>,
    consts: Vec<Option<ConstData>>,
    steps: Vec<Step>,
    /// The values whose buffers can be given back after each step (last read there).
    release_after: Vec<Vec<ValueId>>,
    /// What a call allocates, for its memory budget: every step's result, then every output (each
    /// handed out as its own buffer; a value that is several outputs, an input or a constant that
    /// is one, is copied).
    call_values: Vec<ValueId>,
}

impl std::fmt::Debug for DensePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DensePlan")
            .field(
                "inputs",
                &self.inputs.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            )
            .field("outputs", &self.output_names().collect::<Vec<_>>())
            .field("steps", &self.to_string())
            .finish()
    }
}

/// The plan's steps, one per line: what runs, and on what sizes (never weights).
impl std::fmt::Display for DensePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for step in &self.steps {
            match step {
                Step::MatMul {
                    k,
                    n,
                    alpha,
                    bias,
                    activation,
                    ..
                } => {
                    write!(f, "matmul {k}x{n}")?;
                    if *alpha != 1.0 {
                        write!(f, " alpha")?;
                    }
                    if bias.is_some() {
                        write!(f, " +bias")?;
                    }
                    if let Some(a) = activation {
                        write!(f, " {a:?}")?;
                    }
                }
                Step::Scale { offset, op, .. } => write!(f, "scale {} ({op:?})", offset.len())?,
                Step::Binary { op, .. } => write!(f, "{op:?}")?,
                Step::Unary { op, .. } => write!(f, "{op:?}")?,
                Step::Softmax { .. } => write!(f, "softmax")?,
                Step::Concat { xs, .. } => write!(f, "concat {}", xs.len())?,
                Step::ArgMax { .. } => write!(f, "argmax")?,
                Step::Gather { table, .. } => write!(f, "gather {}", table.len())?,
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A value's buffer while a call runs.
enum Slot<'a> {
    Empty,
    F32(Cow<'a, [f32]>),
    I64(Vec<i64>),
}

impl DensePlan {
    /// Compiles a model's graph, or says why it is not a dense graph this plan runs.
    pub fn compile(model: &pb::ModelProto) -> Result<DensePlan, CompileError> {
        compile::compile(model)
    }

    /// The graph's inputs, in its order: what [`DensePlan::run`] takes.
    pub fn inputs(&self) -> impl ExactSizeIterator<Item = &PlanInput> {
        self.inputs.iter().map(|(i, _)| i)
    }

    /// Whether every output row is computed from the same row of the inputs alone: every input
    /// and output is per sample (the steps are row by row by construction: products by constant
    /// weights, elementwise work against constant rows, softmax and argmax along a row).
    pub fn rows_independent(&self) -> bool {
        self.inputs.iter().all(|(i, _)| i.rows.is_none())
            && self
                .outputs
                .iter()
                .all(|&(_, id)| self.values[id].rows == Rows::Batch)
    }

    /// The graph's output names, in its order.
    pub fn output_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.outputs.iter().map(|(n, _)| n.as_str())
    }

    /// Runs the plan on one batch: `inputs` in the graph's input order, each with the same number
    /// of rows. Returns every graph output, in the graph's order.
    pub fn run(&self, inputs: &[InputData<'_>]) -> Result<Vec<Output>, RunError> {
        let batch = self.check_inputs(inputs)?;
        let mut slots: Vec<Slot<'_>> = self
            .consts
            .iter()
            .map(|c| match c {
                Some(ConstData::F32(v)) => Slot::F32(Cow::Borrowed(v)),
                Some(ConstData::I64(v)) => Slot::I64(v.clone()),
                None => Slot::Empty,
            })
            .collect();
        for ((_, id), input) in self.inputs.iter().zip(inputs) {
            slots[*id] = Slot::F32(Cow::Borrowed(input.data));
        }
        // Buffers given back by values read for the last time, reused by later steps.
        let mut pool: Vec<Vec<f32>> = Vec::new();
        for (step, release) in self.steps.iter().zip(&self.release_after) {
            let out = step.writes();
            let produced = self.step(step, batch, &mut slots, &mut pool, release);
            slots[out] = produced;
            for &id in release {
                if let Slot::F32(Cow::Owned(v)) = std::mem::replace(&mut slots[id], Slot::Empty) {
                    pool.push(v);
                }
            }
        }
        // How many outputs still read each value: the last one takes the buffer, earlier ones
        // (a value that is two outputs) copy it.
        let mut readers = vec![0usize; slots.len()];
        self.outputs.iter().for_each(|&(_, id)| readers[id] += 1);
        Ok(self
            .outputs
            .iter()
            .map(|&(_, id)| {
                let info = self.values[id];
                let shape = match info.rank {
                    0 => vec![],
                    1 if info.rows == Rows::Batch => vec![batch],
                    1 => vec![info.cols],
                    _ => vec![self.rows(info, batch), info.cols],
                };
                readers[id] -= 1;
                let data = match (&mut slots[id], readers[id]) {
                    (Slot::F32(v), 0) => OutputData::F32(std::mem::take(v).into_owned()),
                    (Slot::I64(v), 0) => OutputData::I64(std::mem::take(v)),
                    (Slot::F32(v), _) => OutputData::F32(v.to_vec()),
                    (Slot::I64(v), _) => OutputData::I64(v.clone()),
                    // Every output is an input, a constant or a step's result.
                    (Slot::Empty, _) => OutputData::F32(Vec::new()),
                };
                Output { shape, data }
            })
            .collect())
    }

    /// Checks the inputs' count and lengths; returns the batch's rows.
    fn check_inputs(&self, inputs: &[InputData<'_>]) -> Result<usize, RunError> {
        if inputs.len() != self.inputs.len() {
            return Err(RunError::InputCount {
                given: inputs.len(),
                expected: self.inputs.len(),
            });
        }
        let mut batch: Option<(usize, &str)> = None;
        for ((meta, _), input) in self.inputs.iter().zip(inputs) {
            let expected = input.rows.checked_mul(meta.features);
            if expected != Some(input.data.len()) {
                return Err(RunError::InputLength {
                    name: meta.name.clone(),
                    rows: input.rows,
                    features: meta.features,
                    expected: expected.unwrap_or(usize::MAX),
                    found: input.data.len(),
                });
            }
            if let Some(fixed) = meta.rows {
                if input.rows != fixed {
                    return Err(RunError::FixedRows {
                        name: meta.name.clone(),
                        found: input.rows,
                        expected: fixed,
                    });
                }
                continue;
            }
            match batch {
                None => batch = Some((input.rows, &meta.name)),
                Some((rows, first)) if rows != input.rows => {
                    return Err(RunError::RowCount {
                        name: meta.name.clone(),
                        found: input.rows,
                        first: first.to_string(),
                        expected: rows,
                    })
                }
                Some(_) => {}
            }
        }
        let batch = batch.map_or(0, |(rows, _)| rows);
        // What the call could hold at once (every value it computes alive, 8 bytes an element at
        // most), refused above a budget rather than left to fail an allocation, which would abort
        // the process.
        let bytes = self.call_values.iter().try_fold(0usize, |all, &id| {
            let v = self.values[id];
            let n = self.rows(v, batch).checked_mul(v.cols)?;
            all.checked_add(n.checked_mul(8)?)
        });
        if bytes.is_none_or(|b| b > MAX_CALL_BYTES) {
            return Err(RunError::TooLarge { rows: batch });
        }
        Ok(batch)
    }

    fn rows(&self, info: ValueInfo, batch: usize) -> usize {
        match info.rows {
            Rows::Batch => batch,
            Rows::Fixed(r) => r,
        }
    }

    fn operand<'s>(&self, slots: &'s [Slot<'_>], id: ValueId, batch: usize) -> Operand<'s> {
        let info = self.values[id];
        let data: &[f32] = match &slots[id] {
            Slot::F32(v) => v,
            // The compiler types every operand of an f32 step as f32.
            _ => &[],
        };
        // A rank-1 constant `[C]` broadcasts as a row `[1, C]`.
        Operand {
            data,
            rows: if info.rank < 2 {
                1
            } else {
                self.rows(info, batch)
            },
            cols: info.cols,
        }
    }

    /// Takes `id`'s buffer to write over when this step reads it for the last time and owns it.
    fn reuse(
        slots: &mut [Slot<'_>],
        id: ValueId,
        release: &[ValueId],
        len: usize,
    ) -> Option<Vec<f32>> {
        if !release.contains(&id) {
            return None;
        }
        match &slots[id] {
            Slot::F32(Cow::Owned(v)) if v.len() == len => {}
            _ => return None,
        }
        match std::mem::replace(&mut slots[id], Slot::Empty) {
            Slot::F32(Cow::Owned(v)) => Some(v),
            _ => None,
        }
    }

    fn step<'a>(
        &self,
        step: &Step,
        batch: usize,
        slots: &mut [Slot<'a>],
        pool: &mut Vec<Vec<f32>>,
        release: &[ValueId],
    ) -> Slot<'a> {
        let out_info = self.values[step.writes()];
        let rows = self.rows(out_info, batch);
        let len = rows * out_info.cols;
        match step {
            Step::MatMul {
                a,
                weights,
                k,
                n,
                alpha,
                bias,
                activation,
                ..
            } => {
                let mut out = take_buffer(pool, len);
                let x = self.operand(slots, *a, batch);
                kernels::matmul(
                    &mut out,
                    x.data,
                    weights,
                    (rows, *k, *n),
                    *alpha,
                    bias.as_deref(),
                    *activation,
                );
                Slot::F32(Cow::Owned(out))
            }
            Step::Binary { op, a, b, .. } => {
                let mut out = take_buffer(pool, len);
                let (x, y) = (
                    self.operand(slots, *a, batch),
                    self.operand(slots, *b, batch),
                );
                kernels::binary(*op, &mut out, out_info.cols, x, y);
                Slot::F32(Cow::Owned(out))
            }
            Step::Unary { op, x, .. } => {
                let mut out = Self::reuse(slots, *x, release, len).unwrap_or_else(|| {
                    let mut out = take_buffer(pool, len);
                    out.copy_from_slice(self.operand(slots, *x, batch).data);
                    out
                });
                kernels::unary(*op, &mut out);
                Slot::F32(Cow::Owned(out))
            }
            Step::Softmax { x, .. } => {
                let mut out = Self::reuse(slots, *x, release, len).unwrap_or_else(|| {
                    let mut out = take_buffer(pool, len);
                    out.copy_from_slice(self.operand(slots, *x, batch).data);
                    out
                });
                kernels::softmax(&mut out, out_info.cols);
                Slot::F32(Cow::Owned(out))
            }
            Step::Concat { xs, .. } => match out_info.dtype {
                DType::F32 => {
                    let mut out = take_buffer(pool, len);
                    let parts: Vec<Operand<'_>> = xs
                        .iter()
                        .map(|&id| self.operand(slots, id, batch))
                        .collect();
                    concat_rows(&mut out, out_info.cols, &parts, |p| p.data, |p| p.cols);
                    Slot::F32(Cow::Owned(out))
                }
                DType::I64 | DType::I32 => {
                    let mut out = vec![0i64; len];
                    let parts: Vec<(&[i64], usize)> = xs
                        .iter()
                        .map(|&id| match &slots[id] {
                            Slot::I64(v) => (v.as_slice(), self.values[id].cols),
                            _ => (&[][..], 0),
                        })
                        .collect();
                    concat_rows(&mut out, out_info.cols, &parts, |p| p.0, |p| p.1);
                    Slot::I64(out)
                }
            },
            Step::ArgMax { x, last, .. } => {
                let mut out = vec![0i64; rows];
                let x = self.operand(slots, *x, batch);
                kernels::argmax(x.data, x.cols, *last, &mut out);
                Slot::I64(out)
            }
            Step::Scale {
                x,
                offset,
                op,
                scale,
                ..
            } => {
                let mut out = take_buffer(pool, len);
                let x = self.operand(slots, *x, batch);
                kernels::scale(&mut out, x.data, offset, *op, scale);
                Slot::F32(Cow::Owned(out))
            }
            Step::Gather { table, index, .. } => {
                let index: &[i64] = match &slots[*index] {
                    Slot::I64(v) => v,
                    _ => &[],
                };
                // The compiler checked that every index (an ArgMax's) is inside the table.
                let label = |&i: &i64| usize::try_from(i).ok().and_then(|i| table.get(i));
                Slot::I64(
                    index
                        .iter()
                        .map(|i| label(i).copied().unwrap_or(0))
                        .collect(),
                )
            }
        }
    }
}

/// Row `i` of the output is row `i` of every part, side by side.
fn concat_rows<T: Copy, P>(
    out: &mut [T],
    cols: usize,
    parts: &[P],
    data: impl Fn(&P) -> &[T],
    width: impl Fn(&P) -> usize,
) {
    if cols == 0 {
        return;
    }
    for (i, row) in out.chunks_exact_mut(cols).enumerate() {
        let mut at = 0;
        for p in parts {
            let w = width(p);
            row[at..at + w].copy_from_slice(&data(p)[i * w..(i + 1) * w]);
            at += w;
        }
    }
}

/// A buffer of `len` elements, from the pool when one there is large enough. A reused buffer keeps
/// the values it held (every step writes all of its output), so it costs no clearing.
fn take_buffer(pool: &mut Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    match pool.iter().position(|v| v.capacity() >= len) {
        Some(i) => {
            let mut v = pool.swap_remove(i);
            v.resize(len, 0.0);
            v.truncate(len);
            v
        }
        None => vec![0.0; len],
    }
}
