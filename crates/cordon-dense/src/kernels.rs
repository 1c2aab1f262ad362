//! The plan's arithmetic on row-major `[rows, cols]` buffers. Loops are written without
//! data-dependent branches so that the compiler vectorizes them; the transcendental functions are
//! polynomial approximations accurate to a few ulp (the engine's outputs are held to ONNX
//! Runtime's within 1e-5, which uses approximations of its own).

use faer::{Accum, MatMut, MatRef, Par};
use pulp::{Simd, WithSimd};

/// A kernel's loops, compiled once per instruction set: pulp picks, at run time, the widest this
/// CPU has (AVX2 + FMA on x86-64) and calls `with_simd` in a function compiled for it, where the
/// loops (always inlined) are vectorized. The binary itself targets baseline x86-64. The loops are
/// plain Rust; `S` is not used beyond choosing the instruction set.
macro_rules! kernel {
    ($name:ident<$lt:lifetime> { $($field:ident: $ty:ty),* $(,)? } => |$this:ident| $body:block) => {
        struct $name<$lt, const FMA: bool> { $($field: $ty),* }
        impl<const FMA: bool> WithSimd for $name<'_, FMA> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: Simd>(self, _: S) {
                let $this = self;
                $body
            }
        }
    };
}

kernel!(Epilogue<'a> { out: &'a mut [f32], alpha: f32, bias: Option<&'a [f32]>, n: usize, activation: Option<UnaryOp> } => |k| {
    // One pass over the product: alpha, bias and activation together.
    let Epilogue { out, alpha, bias, n, activation } = k;
    for row in out.chunks_exact_mut(n.max(1)) {
        if alpha != 1.0 {
            row.iter_mut().for_each(|o| *o *= alpha);
        }
        if let Some(bias) = bias {
            row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
        }
        if let Some(op) = activation {
            apply::<FMA>(op, row);
        }
    }
});

kernel!(Scale<'a> { out: &'a mut [f32], x: &'a [f32], offset: &'a [f32], op: BinaryOp, scale: &'a [f32] } => |k| {
    let Scale { out, x, offset, op, scale } = k;
    let cols = offset.len().max(1);
    for (o, x) in out.chunks_exact_mut(cols).zip(x.chunks_exact(cols)) {
        let rows = o.iter_mut().zip(x).zip(offset).zip(scale);
        match op {
            BinaryOp::Div => rows.for_each(|(((o, &x), &m), &s)| *o = (x - m) / s),
            _ => rows.for_each(|(((o, &x), &m), &s)| *o = (x - m) * s),
        }
    }
});

kernel!(Binary<'a> { op: BinaryOp, out: &'a mut [f32], cols: usize, a: Operand<'a>, b: Operand<'a> } => |k| {
    let Binary { op, out, cols, a, b } = k;
    match op {
        BinaryOp::Add => zip(out, cols, a, b, |x, y| x + y),
        BinaryOp::Sub => zip(out, cols, a, b, |x, y| x - y),
        BinaryOp::Mul => zip(out, cols, a, b, |x, y| x * y),
        BinaryOp::Div => zip(out, cols, a, b, |x, y| x / y),
    }
});

kernel!(Unary<'a> { op: UnaryOp, x: &'a mut [f32] } => |k| { apply::<FMA>(k.op, k.x) });

#[inline(always)]
fn apply<const FMA: bool>(op: UnaryOp, x: &mut [f32]) {
    match op {
        // NaN stays NaN (a comparison with NaN is false).
        UnaryOp::Relu => x
            .iter_mut()
            .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v }),
        UnaryOp::LeakyRelu(alpha) => x
            .iter_mut()
            .for_each(|v| *v = if *v < 0.0 { alpha * *v } else { *v }),
        UnaryOp::Sigmoid => x.iter_mut().for_each(|v| *v = sigmoid::<FMA>(*v)),
        UnaryOp::Tanh => x.iter_mut().for_each(|v| *v = tanh::<FMA>(*v)),
        UnaryOp::Neg => x.iter_mut().for_each(|v| *v = -*v),
        UnaryOp::Abs => x.iter_mut().for_each(|v| *v = v.abs()),
    }
}

kernel!(Softmax<'a> { x: &'a mut [f32], cols: usize } => |k| {
    // In three passes, so that the exponentials (the cost) are one loop over the whole batch,
    // vectorized however few the columns.
    for row in k.x.chunks_exact_mut(k.cols) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v -= max);
    }
    k.x.iter_mut().for_each(|v| *v = exp::<FMA>(*v));
    for row in k.x.chunks_exact_mut(k.cols) {
        let inv = 1.0 / row.iter().sum::<f32>();
        row.iter_mut().for_each(|v| *v *= inv);
    }
});

/// Calls a kernel with fused multiply-adds where the CPU has them (every x86-64 CPU with AVX2 that
/// a TEE runs on; in pulp's AVX2 path `mul_add` is one instruction), separate ones otherwise (a
/// library call per `mul_add` would be slower than both).
macro_rules! dispatch {
    ($name:ident { $($field:ident),* $(,)? }) => {
        if has_fma() {
            pulp::Arch::new().dispatch($name::<true> { $($field),* })
        } else {
            pulp::Arch::new().dispatch($name::<false> { $($field),* })
        }
    };
}

/// Whether pulp runs kernels in its AVX2 + FMA path (the same detection, so that the FMA kernels
/// never run in its scalar path, where `mul_add` would be a library call).
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return pulp::x86::V3::try_new().is_some();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `a * b + c`, fused (one rounding) with `FMA`.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The longest sum faer is given at once. Up to this depth its result for a row has the same bits
/// whatever the number of rows (measured over a grid of shapes, kept by
/// `products_do_not_depend_on_the_batch`); a deeper product is summed in slices of this depth, and
/// a single row is computed as two (a zero row added), which faer blocks like any batch.
const SLICE_DEPTH: usize = 512;

/// `out[m, n] = activation(alpha * (a[m, k] · w[k, n]) (+ bias[n]))`, all row-major, on one
/// thread (the runtime runs concurrent requests on its other cores). faer is given alpha 1 (its
/// single-row path would multiply alpha into the inputs, its batch path into the sums: other
/// bits); alpha is applied after, with the bias.
pub(crate) fn matmul(
    out: &mut [f32],
    a: &[f32],
    w: &[f32],
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    bias: Option<&[f32]>,
    activation: Option<UnaryOp>,
) {
    if k == 0 {
        out.fill(0.0);
    } else if m == 1 && k > SLICE_DEPTH {
        let mut padded = vec![0.0; 2 * k];
        padded[..k].copy_from_slice(a);
        let mut both = vec![0.0; 2 * n];
        matmul(&mut both, &padded, w, (2, k, n), 1.0, None, None);
        out.copy_from_slice(&both[..n]);
    } else {
        let a = MatRef::from_row_major_slice(a, m, k);
        let w = MatRef::from_row_major_slice(w, k, n);
        let mut start = 0;
        while start < k {
            let depth = SLICE_DEPTH.min(k - start);
            let accum = if start == 0 {
                Accum::Replace
            } else {
                Accum::Add
            };
            let o = MatMut::from_row_major_slice_mut(out, m, n);
            let (a, w) = (a.subcols(start, depth), w.subrows(start, depth));
            faer::linalg::matmul::matmul(o, accum, a, w, 1.0, Par::Seq);
            start += depth;
        }
    }
    if alpha != 1.0 || bias.is_some() || activation.is_some() {
        dispatch!(Epilogue {
            out,
            alpha,
            bias,
            n,
            activation
        });
    }
}

/// The elementwise binary operators, with ONNX's (numpy's) broadcasting over two dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// One operand of a binary operator: its buffer and its `[rows, cols]`, where a dimension of 1
/// is repeated along the output's.
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

/// `out = (x - offset) / scale`, or `* scale` for [`BinaryOp::Mul`], row by row.
pub(crate) fn scale(out: &mut [f32], x: &[f32], offset: &[f32], op: BinaryOp, scale: &[f32]) {
    dispatch!(Scale {
        out,
        x,
        offset,
        op,
        scale
    });
}

pub(crate) fn binary(op: BinaryOp, out: &mut [f32], cols: usize, a: Operand, b: Operand) {
    dispatch!(Binary {
        op,
        out,
        cols,
        a,
        b
    });
}

#[inline(always)]
fn zip(out: &mut [f32], cols: usize, a: Operand, b: Operand, f: impl Fn(f32, f32) -> f32) {
    if cols == 0 {
        return;
    }
    #[inline(always)]
    fn row_of<'a>(o: &Operand<'a>, i: usize) -> &'a [f32] {
        let r = if o.rows == 1 { 0 } else { i };
        &o.data[r * o.cols..(r + 1) * o.cols]
    }
    for (i, row) in out.chunks_exact_mut(cols).enumerate() {
        let (x, y) = (row_of(&a, i), row_of(&b, i));
        match (x.len() == cols, y.len() == cols) {
            (true, true) => {
                for ((o, &x), &y) in row.iter_mut().zip(x).zip(y) {
                    *o = f(x, y);
                }
            }
            (true, false) => {
                let y = y[0];
                for (o, &x) in row.iter_mut().zip(x) {
                    *o = f(x, y);
                }
            }
            (false, true) => {
                let x = x[0];
                for (o, &y) in row.iter_mut().zip(y) {
                    *o = f(x, y);
                }
            }
            (false, false) => row.fill(f(x[0], y[0])),
        }
    }
}

/// The elementwise unary operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum UnaryOp {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Neg,
    Abs,
}

/// Applies `op` to every element, in place.
pub(crate) fn unary(op: UnaryOp, x: &mut [f32]) {
    dispatch!(Unary { op, x });
}

/// e^x for the activations: Cody-Waite range reduction to r in [-ln2/2, ln2/2] and a degree-7
/// Taylor polynomial (truncation error below 6e-9 relative), scaled by 2^n through the exponent
/// bits. The argument is clamped to [-87, 88] so that 2^n stays a normal number: below, e^x is
/// 1.6e-38 instead of smaller; above, 1.65e38 instead of more. The activations below saturate
/// long before either matters. NaN stays NaN.
#[inline(always)]
pub(crate) fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two: the high part has few enough bits that n * LN2_HI is exact.
    const LN2_HI: f32 = 355.0 / 512.0;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer, whose bits are then the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // NaN stays NaN through clamp.
    let x = x.clamp(-87.0, 88.0);
    let t = madd::<FMA>(x, LOG2E, ROUND);
    let n = t - ROUND;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    let p = 1.0 / 5040.0;
    let p = madd::<FMA>(p, r, 1.0 / 720.0);
    let p = madd::<FMA>(p, r, 1.0 / 120.0);
    let p = madd::<FMA>(p, r, 1.0 / 24.0);
    let p = madd::<FMA>(p, r, 1.0 / 6.0);
    let p = madd::<FMA>(p, r, 0.5);
    let p = madd::<FMA>(p, r, 1.0);
    let p = madd::<FMA>(p, r, 1.0);
    let scale = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) as u32) << 23);
    p * scale
}

#[inline(always)]
fn sigmoid<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<FMA>(-x))
}

/// tanh as the 12th convergent of Lambert's continued fraction,
/// `x / (1 + x²/(3 + x²/(5 + ...)))`, written as `x·P(x²)/Q(x²)` (P and Q of degree 6, integer
/// coefficients divided by their constant term): one division and twelve multiply-adds, no
/// exponential. The argument is clamped to [-9, 9], where tanh is within 3e-8 of ±1; the error is
/// below 4e-7 everywhere and below 2e-7 relative near 0 (tested). NaN stays NaN through clamp.
#[inline(always)]
fn tanh<const FMA: bool>(x: f32) -> f32 {
    // The convergent's integer coefficients over its constant term, rounded once to f32.
    const D: f64 = 7_905_853_580_625.0;
    const P: [f32; 7] = [
        (7905853580625.0 / D) as f32,
        (1159525191825.0 / D) as f32,
        (41247931725.0 / D) as f32,
        (523783260.0 / D) as f32,
        (2552550.0 / D) as f32,
        (4095.0 / D) as f32,
        (1.0 / D) as f32,
    ];
    const Q: [f32; 7] = [
        (7905853580625.0 / D) as f32,
        (3794809718700.0 / D) as f32,
        (252070693875.0 / D) as f32,
        (5237832600.0 / D) as f32,
        (41351310.0 / D) as f32,
        (120120.0 / D) as f32,
        (91.0 / D) as f32,
    ];
    let c = x.clamp(-9.0, 9.0);
    let y = c * c;
    let horner = |k: &[f32; 7]| k.iter().rev().fold(0.0, |acc, &k| madd::<FMA>(acc, y, k));
    // Near ±9 the convergent is a few ulp above 1: held to tanh's range (NaN passes).
    (c * horner(&P) / horner(&Q)).clamp(-1.0, 1.0)
}

/// Softmax along each row of `x[.., cols]`, in place.
pub(crate) fn softmax(x: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    dispatch!(Softmax { x, cols });
}

/// The index of each row's largest element: the first one, or the last with `last`, as ONNX's
/// `select_last_index`. With NaN, as ONNX Runtime: a comparison with NaN is false, so a NaN at
/// index 0 stays the answer and a NaN elsewhere is never chosen.
pub(crate) fn argmax(x: &[f32], cols: usize, last: bool, out: &mut [i64]) {
    if cols == 0 {
        return;
    }
    for (row, o) in x.chunks_exact(cols).zip(out.iter_mut()) {
        let mut best = 0;
        for (j, &v) in row.iter().enumerate().skip(1) {
            let better = if last { v >= row[best] } else { v > row[best] };
            if better {
                best = j;
            }
        }
        *o = best as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error against f64's exact functions, over a dense sweep of the range that matters,
    /// with and without fused multiply-adds.
    #[test]
    fn approximations_stay_within_a_few_ulp() {
        approximations::<true>();
        approximations::<false>();
    }

    fn approximations<const FMA: bool>() {
        let mut worst = (0.0f64, 0.0f64, 0.0f64);
        let mut x = -30.0f32;
        while x < 30.0 {
            let e = (exp::<FMA>(x) as f64 - (x as f64).exp()).abs() / (x as f64).exp();
            let s_ref = 1.0 / (1.0 + (-(x as f64)).exp());
            let s = (sigmoid::<FMA>(x) as f64 - s_ref).abs() / s_ref;
            let t = (tanh::<FMA>(x) as f64 - (x as f64).tanh()).abs();
            worst = (worst.0.max(e), worst.1.max(s), worst.2.max(t));
            x += 0.000_37;
        }
        assert!(worst.0 < 4e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 4e-7, "sigmoid relative error {}", worst.1);
        assert!(worst.2 < 4e-7, "tanh absolute error {}", worst.2);
        // Tiny arguments: tanh(x) ~ x, relative.
        for x in [1e-30f32, -1e-8, 3e-5, 0.06] {
            assert!(
                ((tanh::<FMA>(x) - x.tanh()) / x.tanh()).abs() < 1e-6,
                "tanh({x})"
            );
        }
    }

    #[test]
    fn saturation_nan_and_infinities() {
        saturation::<true>();
        saturation::<false>();
    }

    fn saturation<const FMA: bool>() {
        assert!(exp::<FMA>(f32::NAN).is_nan());
        assert!(sigmoid::<FMA>(f32::NAN).is_nan());
        assert!(tanh::<FMA>(f32::NAN).is_nan());
        assert_eq!(sigmoid::<FMA>(f32::INFINITY), 1.0);
        assert!(sigmoid::<FMA>(f32::NEG_INFINITY) < 1e-37);
        assert!((tanh::<FMA>(f32::INFINITY) - 1.0).abs() < 4e-7);
        // Never out of tanh's range, where the convergent would round above 1.
        let mut x = 7.0f32;
        while x < 10.0 {
            assert!(
                tanh::<FMA>(x) <= 1.0 && tanh::<FMA>(-x) >= -1.0,
                "tanh({x})"
            );
            x += 0.001;
        }
        assert!((tanh::<FMA>(f32::NEG_INFINITY) + 1.0).abs() < 4e-7);
        assert_eq!(tanh::<FMA>(-0.0).to_bits(), (-0.0f32).to_bits());
        let mut x = [1000.0, 0.0, -1000.0];
        softmax(&mut x, 3);
        assert_eq!(x[0], 1.0);
        assert!(x[1] < 1e-37 && x[2] < 1e-37);
    }

    /// ONNX Runtime's rule: a later element wins only if greater (or, with `select_last_index`,
    /// not less) than the best so far, which starts at index 0; so a NaN there stays.
    #[test]
    fn argmax_ties_and_nan_as_onnx_runtime() {
        let nan = f32::NAN;
        let x = [1.0, 3.0, 3.0, nan, 2.0, 2.0, nan, nan, nan, 2.0, nan, 5.0];
        let mut first = [9; 4];
        let mut last = [9; 4];
        argmax(&x, 3, false, &mut first);
        argmax(&x, 3, true, &mut last);
        assert_eq!(first, [1, 0, 0, 2]);
        assert_eq!(last, [2, 0, 0, 2]);
    }

    /// A row's product has the same bits whether it is computed alone or in a batch: a client's
    /// answer does not depend on (or tell) what was batched with it.
    #[test]
    fn products_do_not_depend_on_the_batch() {
        let fill = |n: usize, seed: u32| -> Vec<f32> {
            let mut x = seed;
            (0..n)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 8) as f32 / 16_777_216.0 - 0.5
                })
                .collect()
        };
        for k in [1, 3, 30, 64, 200, 512, 513, 700, 1024, 2000] {
            for n in [1, 2, 3, 16, 64, 256] {
                let (a, w) = (fill(64 * k, 3), fill(k * n, 7));
                for alpha in [1.0, 0.1] {
                    let mut batch = vec![0.0; 64 * n];
                    matmul(&mut batch, &a, &w, (64, k, n), alpha, None, None);
                    for m in [1, 2, 3, 4, 7, 31] {
                        let mut part = vec![0.0; m * n];
                        matmul(&mut part, &a[..m * k], &w, (m, k, n), alpha, None, None);
                        assert!(
                            part == batch[..m * n],
                            "k={k} n={n} alpha={alpha}: {m} rows differ from a batch's"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn broadcasting_rows_columns_and_scalars() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [0.0; 6];
        let full = || Operand {
            data: &a,
            rows: 2,
            cols: 3,
        };
        binary(
            BinaryOp::Sub,
            &mut out,
            3,
            full(),
            Operand {
                data: &[1.0, 2.0, 3.0],
                rows: 1,
                cols: 3,
            },
        );
        assert_eq!(out, [0.0, 0.0, 0.0, 3.0, 3.0, 3.0]);
        binary(
            BinaryOp::Div,
            &mut out,
            3,
            full(),
            Operand {
                data: &[2.0, 4.0],
                rows: 2,
                cols: 1,
            },
        );
        assert_eq!(out, [0.5, 1.0, 1.5, 1.0, 1.25, 1.5]);
        binary(
            BinaryOp::Sub,
            &mut out,
            3,
            Operand {
                data: &[1.0],
                rows: 1,
                cols: 1,
            },
            full(),
        );
        assert_eq!(out, [0.0, -1.0, -2.0, -3.0, -4.0, -5.0]);
        let mut m = [0.0; 4];
        matmul(
            &mut m,
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0, 0.0, 0.0, 1.0],
            (2, 2, 2),
            2.0,
            Some(&[10.0, 20.0]),
            None,
        );
        assert_eq!(m, [12.0, 24.0, 16.0, 28.0]);
        // Bias and activation in one pass: relu(2·a·w + bias).
        matmul(
            &mut m,
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0, 0.0, 0.0, 1.0],
            (2, 2, 2),
            2.0,
            Some(&[-5.0, -30.0]),
            Some(UnaryOp::Relu),
        );
        assert_eq!(m, [0.0, 0.0, 1.0, 0.0]);
    }
}
