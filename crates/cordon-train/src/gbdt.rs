//! Gradient-boosted decision trees for binary classification, as scikit-learn's
//! `GradientBoostingClassifier` with log-loss: the raw score starts at the prior log-odds; each
//! tree is a least-squares regression tree on the residuals `y − p` (split gain
//! `n_L·n_R/n·(mean_L − mean_R)²`, Friedman's criterion, which ranks splits as the variance
//! reduction does); each leaf then takes the Newton value `Σ(y − p) / Σ p(1 − p)`, shrunk by
//! the learning rate.
//!
//! Split finding uses histograms: every feature is cut into at most `max_bins` bins at
//! quantiles of the training rows, and a node's candidate splits are the bin boundaries.
//!
//! **Threshold invariant.** Every bin's upper edge is an actual f32 value of the training data,
//! and a row falls in bin `b` exactly when `edge[b−1] < x <= edge[b]`. So the training split
//! "bin ≤ b" is exactly the f32 comparison `x <= edge[b]`, which is what the exported ONNX
//! (`BRANCH_LEQ` on f32 inputs) and [`GbdtModel::predict_proba`] evaluate: a training row
//! reaches the same leaf in training, in Rust prediction and in the serving runtime.
//!
//! Deterministic: no randomness, and sums are taken in a fixed order (rows in fixed chunks,
//! chunks added in order) whatever the number of threads.

use crate::{sigmoid, Table, TrainError};
use serde::{Deserialize, Serialize};

/// Parameters of [`crate::Algorithm::Gbdt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbdtParams {
    pub n_estimators: u32,
    pub learning_rate: f64,
    /// Depth of each tree (3: at most 8 leaves), at most [`MAX_DEPTH`].
    pub max_depth: u32,
    pub min_samples_leaf: u32,
    /// Bins per feature for split finding, 2 to 256.
    pub max_bins: u32,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            n_estimators: 100,
            learning_rate: 0.1,
            max_depth: 3,
            min_samples_leaf: 1,
            max_bins: 255,
        }
    }
}

/// The deepest tree accepted (2^16 leaves): deeper is no gradient boosting anyone runs, and
/// the bound keeps node ids and recursion small.
pub const MAX_DEPTH: u32 = 16;

/// One node of a tree; node 0 is the root.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Rows with `x[feature] <= threshold` go to `left`, the others to `right`.
    Split {
        feature: usize,
        threshold: f32,
        left: usize,
        right: usize,
    },
    /// Adds `weight` (learning rate × Newton value) to the raw score.
    Leaf { weight: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The weight of the leaf `row` reaches.
    pub fn eval(&self, row: &[f32]) -> f64 {
        let mut at = 0;
        loop {
            match self.nodes.get(at) {
                Some(Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                }) => {
                    let x = row.get(*feature).copied().unwrap_or(f32::NAN);
                    at = if x <= *threshold { *left } else { *right };
                }
                Some(Node::Leaf { weight }) => return *weight,
                None => return 0.0,
            }
        }
    }
}

/// A fitted ensemble: `P(y=1|x) = σ(init + Σ tree(x))`.
#[derive(Debug, Clone, PartialEq)]
pub struct GbdtModel {
    pub n_features: usize,
    /// Prior log-odds of class 1 on the training rows.
    pub init: f64,
    pub learning_rate: f64,
    pub trees: Vec<Tree>,
}

impl GbdtModel {
    /// The raw score (log-odds of class 1) of one row.
    pub fn decision(&self, row: &[f32]) -> f64 {
        self.init + self.trees.iter().map(|t| t.eval(row)).sum::<f64>()
    }

    pub fn predict_proba(&self, table: &Table) -> Vec<f64> {
        assert_eq!(table.n_features(), self.n_features, "feature count");
        (0..table.n_rows())
            .map(|i| sigmoid(self.decision(table.row(i))))
            .collect()
    }
}

/// Bins per histogram slot: indices are `u8`.
const SLOTS: usize = 256;

/// Per-feature bin edges and the rows' bin indices (row-major, like the table).
struct Binned {
    edges: Vec<Vec<f32>>,
    bins: Vec<u8>,
    d: usize,
}

/// Quantile edges are taken from at most this many rows (evenly spaced): enough for 256 bins,
/// and it keeps the sort cheap on millions of rows.
const EDGE_SAMPLE: usize = 1 << 18;

fn bin_features(table: &Table, max_bins: usize) -> Binned {
    let n = table.n_rows();
    let d = table.n_features();
    let sample: Vec<usize> = if n > EDGE_SAMPLE {
        (0..EDGE_SAMPLE).map(|k| k * n / EDGE_SAMPLE).collect()
    } else {
        (0..n).collect()
    };
    let mut edges = Vec::with_capacity(d);
    let mut column = Vec::with_capacity(sample.len());
    for j in 0..d {
        column.clear();
        column.extend(sample.iter().map(|&i| table.row(i)[j]));
        column.sort_by(f32::total_cmp);
        // The true maximum, so every training row falls in some bin.
        let max = (0..n)
            .map(|i| table.row(i)[j])
            .fold(f32::NEG_INFINITY, f32::max);
        let mut e: Vec<f32> = Vec::new();
        let mut unique = column.clone();
        unique.dedup();
        if unique.len() <= max_bins {
            e = unique;
        } else {
            let m = column.len();
            for k in 1..max_bins {
                let v = column[(k * m) / max_bins - 1];
                if e.last().is_none_or(|&last| v > last) {
                    e.push(v);
                }
            }
        }
        if e.last().is_none_or(|&last| max > last) {
            e.push(max);
        }
        edges.push(e);
    }
    let mut bins = vec![0u8; n * d];
    for i in 0..n {
        for (j, &x) in table.row(i).iter().enumerate() {
            // First edge >= x: x lies in (edge[b-1], edge[b]].
            let b = edges[j].partition_point(|&e| e < x);
            bins[i * d + j] = b.min(SLOTS - 1) as u8;
        }
    }
    Binned { edges, bins, d }
}

/// Residual sum and row count per (feature, bin).
#[derive(Clone)]
struct Hist {
    sum: Vec<f64>,
    count: Vec<u32>,
}

impl Hist {
    fn zero(d: usize) -> Hist {
        Hist {
            sum: vec![0.0; d * SLOTS],
            count: vec![0; d * SLOTS],
        }
    }

    fn add(&mut self, other: &Hist) {
        self.sum
            .iter_mut()
            .zip(&other.sum)
            .for_each(|(a, b)| *a += b);
        self.count
            .iter_mut()
            .zip(&other.count)
            .for_each(|(a, b)| *a += b);
    }

    /// `self − other`: the sibling's histogram from the parent's and one child's.
    fn sub(&self, other: &Hist) -> Hist {
        Hist {
            sum: self
                .sum
                .iter()
                .zip(&other.sum)
                .map(|(a, b)| a - b)
                .collect(),
            count: self
                .count
                .iter()
                .zip(&other.count)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }
}

/// Rows per chunk when histograms are built in parallel. Fixed, so the order of additions —
/// and so the result — does not depend on the machine's thread count.
const CHUNK: usize = 1 << 15;

fn build_hist(binned: &Binned, residual: &[f64], rows: &[u32]) -> Hist {
    let d = binned.d;
    let one = |rows: &[u32]| {
        let mut h = Hist::zero(d);
        for &i in rows {
            let i = i as usize;
            let r = residual[i];
            let bins = &binned.bins[i * d..(i + 1) * d];
            for (j, &b) in bins.iter().enumerate() {
                let slot = j * SLOTS + b as usize;
                h.sum[slot] += r;
                h.count[slot] += 1;
            }
        }
        h
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if rows.len() <= CHUNK || threads == 1 {
        // One chunk or sequential chunks: the same sums as the parallel path.
        let mut total = Hist::zero(d);
        for chunk in rows.chunks(CHUNK) {
            total.add(&one(chunk));
        }
        return total;
    }
    let chunks: Vec<&[u32]> = rows.chunks(CHUNK).collect();
    let per_thread = chunks.len().div_ceil(threads);
    let parts: Vec<Vec<Hist>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .chunks(per_thread)
            .map(|group| s.spawn(move || group.iter().map(|c| one(c)).collect::<Vec<Hist>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut total = Hist::zero(d);
    let mut added = 0;
    for h in parts.iter().flatten() {
        total.add(h);
        added += 1;
    }
    if added != chunks.len() {
        // A worker panicked (it cannot on this code, but never trust a silent gap): redo it
        // sequentially, in the same chunk order.
        total = Hist::zero(d);
        for chunk in &chunks {
            total.add(&one(chunk));
        }
    }
    total
}

struct Split {
    feature: usize,
    bin: usize,
    gain: f64,
}

struct Grower<'a> {
    binned: &'a Binned,
    residual: &'a [f64],
    hessian: &'a [f64],
    raw: &'a mut [f64],
    rows: Vec<u32>,
    scratch: Vec<u32>,
    nodes: Vec<Node>,
    max_depth: usize,
    min_leaf: usize,
    learning_rate: f64,
}

impl Grower<'_> {
    fn best_split(&self, hist: &Hist, total: f64, n: usize) -> Option<Split> {
        let mut best: Option<Split> = None;
        let parent = total * total / n as f64;
        for (j, edges) in self.binned.edges.iter().enumerate() {
            let mut left_sum = 0.0;
            let mut left_n = 0usize;
            // Splitting after the last bin would leave the right side empty.
            for b in 0..edges.len().saturating_sub(1) {
                let slot = j * SLOTS + b;
                left_sum += hist.sum[slot];
                left_n += hist.count[slot] as usize;
                let right_n = n - left_n;
                if left_n < self.min_leaf {
                    continue;
                }
                if right_n < self.min_leaf {
                    break;
                }
                let right_sum = total - left_sum;
                let gain = left_sum * left_sum / left_n as f64
                    + right_sum * right_sum / right_n as f64
                    - parent;
                if best.as_ref().is_none_or(|s| gain > s.gain) {
                    best = Some(Split {
                        feature: j,
                        bin: b,
                        gain,
                    });
                }
            }
        }
        best
    }

    fn leaf(&mut self, lo: usize, hi: usize) -> usize {
        let (mut g, mut h) = (0.0, 0.0);
        for &i in &self.rows[lo..hi] {
            g += self.residual[i as usize];
            h += self.hessian[i as usize];
        }
        // scikit-learn's guard: no curvature, no step.
        let value = if h.abs() < 1e-150 { 0.0 } else { g / h };
        let weight = self.learning_rate * value;
        for &i in &self.rows[lo..hi] {
            self.raw[i as usize] += weight;
        }
        self.nodes.push(Node::Leaf { weight });
        self.nodes.len() - 1
    }

    /// Grows the subtree over `rows[lo..hi]`; returns its node id.
    fn grow(&mut self, lo: usize, hi: usize, depth: usize, hist: Option<Hist>) -> usize {
        let n = hi - lo;
        if depth >= self.max_depth || n < 2 || n < 2 * self.min_leaf {
            return self.leaf(lo, hi);
        }
        let (mut total, mut squares) = (0.0, 0.0);
        for &i in &self.rows[lo..hi] {
            let r = self.residual[i as usize];
            total += r;
            squares += r * r;
        }
        // Equal residuals: nothing to separate (scikit-learn's impurity <= EPSILON rule).
        let impurity = squares / n as f64 - (total / n as f64).powi(2);
        if impurity <= f64::EPSILON {
            return self.leaf(lo, hi);
        }
        let hist =
            hist.unwrap_or_else(|| build_hist(self.binned, self.residual, &self.rows[lo..hi]));
        let Some(split) = self.best_split(&hist, total, n) else {
            return self.leaf(lo, hi);
        };
        // Stable partition: left rows keep their order, then right rows.
        let d = self.binned.d;
        let j = split.feature;
        self.scratch.clear();
        let mut w = lo;
        for k in lo..hi {
            let i = self.rows[k];
            if (self.binned.bins[i as usize * d + j] as usize) <= split.bin {
                self.rows[w] = i;
                w += 1;
            } else {
                self.scratch.push(i);
            }
        }
        let mid = w;
        self.rows[mid..hi].copy_from_slice(&self.scratch);
        // Children that will split need histograms: build the smaller, subtract for the other.
        let (left_hist, right_hist) = if depth + 1 < self.max_depth {
            if mid - lo <= hi - mid {
                let small = build_hist(self.binned, self.residual, &self.rows[lo..mid]);
                let big = hist.sub(&small);
                (Some(small), Some(big))
            } else {
                let small = build_hist(self.binned, self.residual, &self.rows[mid..hi]);
                let big = hist.sub(&small);
                (Some(big), Some(small))
            }
        } else {
            (None, None)
        };
        drop(hist);
        let id = self.nodes.len();
        self.nodes.push(Node::Leaf { weight: 0.0 }); // replaced below
        let left = self.grow(lo, mid, depth + 1, left_hist);
        let right = self.grow(mid, hi, depth + 1, right_hist);
        self.nodes[id] = Node::Split {
            feature: j,
            threshold: self.binned.edges[j][split.bin],
            left,
            right,
        };
        id
    }
}

/// Most trees a job may ask for: training time and the model's size grow with it, and the runtime
/// is shared by every party.
pub const MAX_ESTIMATORS: u32 = 2_000;

pub(crate) fn check(params: &GbdtParams) -> Result<(), TrainError> {
    let bad = |param, reason| Err(TrainError::InvalidParam { param, reason });
    if params.n_estimators == 0 || params.n_estimators > MAX_ESTIMATORS {
        return bad("n_estimators", "must be 1 to 2000");
    }
    if !(params.learning_rate > 0.0 && params.learning_rate.is_finite()) {
        return bad("learning_rate", "must be a positive number");
    }
    if params.max_depth == 0 || params.max_depth > MAX_DEPTH {
        return bad("max_depth", "must be 1 to 16");
    }
    if params.min_samples_leaf == 0 {
        return bad("min_samples_leaf", "must be at least 1");
    }
    if !(2..=SLOTS as u32).contains(&params.max_bins) {
        return bad("max_bins", "must be 2 to 256");
    }
    Ok(())
}

pub(crate) fn fit(params: &GbdtParams, table: &Table) -> Result<GbdtModel, TrainError> {
    fit_with_raw(params, table).map(|(m, _)| m)
}

/// As [`fit`], also returning the training rows' final raw scores as training computed them
/// (from bins, not thresholds: the invariant test compares the two).
fn fit_with_raw(params: &GbdtParams, table: &Table) -> Result<(GbdtModel, Vec<f64>), TrainError> {
    check(params)?;
    let n = table.n_rows();
    if n == 0 {
        return Err(TrainError::Empty);
    }
    if u32::try_from(n).is_err() {
        return Err(TrainError::InvalidParam {
            param: "rows",
            reason: "at most 2^32 - 1 rows",
        });
    }
    let positives = table.labels().iter().filter(|&&y| y == 1.0).count();
    if positives == 0 || positives == n {
        return Err(TrainError::OneClass);
    }
    let prior = positives as f64 / n as f64;
    let init = (prior / (1.0 - prior)).ln();
    let binned = bin_features(table, params.max_bins as usize);
    let mut raw = vec![init; n];
    let mut residual = vec![0.0; n];
    let mut hessian = vec![0.0; n];
    let mut trees = Vec::with_capacity(params.n_estimators as usize);
    let mut rows: Vec<u32> = Vec::with_capacity(n);
    for _ in 0..params.n_estimators {
        for i in 0..n {
            let p = sigmoid(raw[i]);
            residual[i] = f64::from(table.label(i)) - p;
            hessian[i] = p * (1.0 - p);
        }
        rows.clear();
        rows.extend(0..n as u32);
        let mut grower = Grower {
            binned: &binned,
            residual: &residual,
            hessian: &hessian,
            raw: &mut raw,
            rows: std::mem::take(&mut rows),
            scratch: Vec::new(),
            nodes: Vec::new(),
            max_depth: params.max_depth as usize,
            min_leaf: params.min_samples_leaf as usize,
            learning_rate: params.learning_rate,
        };
        grower.grow(0, n, 0, None);
        rows = std::mem::take(&mut grower.rows);
        trees.push(Tree {
            nodes: grower.nodes,
        });
        if raw.iter().any(|r| !r.is_finite()) {
            return Err(TrainError::Diverged("non-finite raw score"));
        }
    }
    Ok((
        GbdtModel {
            n_features: table.n_features(),
            init,
            learning_rate: params.learning_rate,
            trees,
        },
        raw,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize, seed: u64) -> Table {
        // Values on a coarse grid (many ties) and a fine one, labels from a noisy rule.
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) as f32
        };
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let a = (next() * 10.0).floor() / 10.0;
            let b = next() * 3.0 - 1.5;
            let c = next();
            features.extend_from_slice(&[a, b, c]);
            let y = (a + b * b * 0.3 + 0.2 * next()) > 0.8;
            labels.push(if y { 1.0 } else { 0.0 });
        }
        Table::new(features, labels, 3).unwrap()
    }

    /// The threshold invariant: prediction through thresholds reproduces training's raw scores
    /// (computed from bins) exactly, row by row.
    #[test]
    fn thresholds_reproduce_the_training_bins_exactly() {
        let t = table(3000, 1);
        let params = GbdtParams {
            n_estimators: 20,
            max_bins: 16,
            max_depth: 4,
            ..GbdtParams::default()
        };
        let (model, raw) = fit_with_raw(&params, &t).unwrap();
        for (i, r) in raw.iter().enumerate() {
            let mut via_thresholds = model.init;
            for tree in &model.trees {
                via_thresholds += tree.eval(t.row(i));
            }
            assert_eq!(via_thresholds.to_bits(), r.to_bits(), "row {i}");
        }
    }

    #[test]
    fn training_is_deterministic_and_learns() {
        let t = table(2000, 2);
        let params = GbdtParams {
            n_estimators: 30,
            ..GbdtParams::default()
        };
        let a = fit(&params, &t).unwrap();
        assert_eq!(a, fit(&params, &t).unwrap());
        let p = a.predict_proba(&t);
        let acc = crate::metrics::accuracy(t.labels(), &p);
        assert!(acc > 0.85, "{acc}");
    }

    #[test]
    fn edges_are_data_values_and_every_row_has_a_bin() {
        let t = table(1000, 3);
        let binned = bin_features(&t, 8);
        for (j, e) in binned.edges.iter().enumerate() {
            assert!(e.len() <= 8 && e.windows(2).all(|w| w[0] < w[1]));
            for &edge in e {
                assert!((0..t.n_rows()).any(|i| t.row(i)[j] == edge));
            }
            for i in 0..t.n_rows() {
                let b = binned.bins[i * 3 + j] as usize;
                let x = t.row(i)[j];
                assert!(x <= e[b] && (b == 0 || x > e[b - 1]));
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let t = table(10, 4);
        for p in [
            GbdtParams {
                n_estimators: 0,
                ..GbdtParams::default()
            },
            GbdtParams {
                learning_rate: f64::NAN,
                ..GbdtParams::default()
            },
            GbdtParams {
                max_depth: 0,
                ..GbdtParams::default()
            },
            GbdtParams {
                max_bins: 257,
                ..GbdtParams::default()
            },
            GbdtParams {
                min_samples_leaf: 0,
                ..GbdtParams::default()
            },
        ] {
            assert!(
                matches!(fit(&p, &t), Err(TrainError::InvalidParam { .. })),
                "{p:?}"
            );
        }
    }
}
