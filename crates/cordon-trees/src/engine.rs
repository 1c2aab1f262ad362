//! Evaluation: walk every tree, aggregate the leaves' weights per row, then finalize the scores
//! (base values, post transform, labels).
//!
//! Aggregation and finalization follow the ONNX-ML operator specification; where the
//! specification is silent (two classes with one weight column, base values of unexpected
//! length, which transforms apply to a single target) they follow ONNX Runtime's
//! `TreeEnsembleCommon` (onnxruntime/core/providers/cpu/ml/tree_ensemble_aggregator.h, ml_common.h),
//! the reference the conformance tests compare against, including its float arithmetic for the
//! transforms. Scores are summed in the model's own precision, tree by tree in model order, as
//! the reference does, so results agree to the last bits in most rows.

use crate::compiled::{walk_lanes, walk_rows, Walker};
use crate::ensemble::{Aggregate, ClassLabels, Ensemble, Output, PostTransform, Precision};
use crate::float::Float;
use crate::TreeError;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows processed together (the unit of scratch accumulators); a model too large for cache is
/// walked tree by tree over the whole block, so each tree's nodes are fetched once per block.
const BLOCK: usize = 256;

/// Lanes of a streamed walk ([`crate::compiled::walk_stream`]): each lane keeps a node and a row
/// offset, and eight or nine keep them in registers where sixteen spilled to the stack
/// (`diab_dt_reg` batches 13% faster than sixteen). Measured with checks every 2 steps: 9 lanes
/// 92.5M rows/s, 8 lanes 91.3M, 10 lanes 90.5M (6 lanes: 80M with checks every 3 steps).
const STREAM_LANES: usize = 9;

/// Leaf weights in the accumulation type `A`.
#[derive(Debug, Clone)]
struct Leaves<A> {
    /// `start[l]..start[l + 1]` indexes `weights` for leaf `l`.
    start: Vec<u32>,
    weights: Vec<(u32, A)>,
    /// With one target and SUM/AVERAGE: each leaf's weight.
    single: Vec<A>,
    /// `single` by compiled node (0 for branches), saving a lookup per tree and row.
    by_node: Vec<A>,
    /// Every leaf carries exactly one weight and scores are summed: `by_node` with
    /// `target_by_node` says everything (boosted models, binary forests).
    one_weight: bool,
    target_by_node: Vec<u32>,
}

impl<A: Float> Leaves<A> {
    /// Fills `by_node` from a walker's node order (the same for every comparison type).
    fn index_nodes<C>(mut self, walker: &Walker<C>) -> Leaves<A> {
        self.by_node = walker
            .leaf_of
            .iter()
            .map(|&l| self.single.get(l as usize).copied().unwrap_or(A::ZERO))
            .collect();
        self.target_by_node = walker
            .leaf_of
            .iter()
            .map(|&l| {
                let from = self.start.get(l as usize).copied().unwrap_or(0) as usize;
                self.weights.get(from).map_or(0, |&(target, _)| target)
            })
            .collect();
        self.one_weight = self.start.windows(2).all(|w| w[1] == w[0] + 1);
        self
    }

    fn new(ensemble: &Ensemble) -> Leaves<A> {
        let mut start = vec![0u32];
        let mut weights = Vec::new();
        let mut single = Vec::new();
        for tree in &ensemble.trees {
            for leaf in &tree.leaves {
                for &(target, w) in &leaf.weights {
                    weights.push((target, A::from_f64(w)));
                }
                // With one target the reference keeps only a leaf's first weight.
                single.push(
                    leaf.weights
                        .first()
                        .map_or(A::ZERO, |&(_, w)| A::from_f64(w)),
                );
                start.push(weights.len() as u32);
            }
        }
        Leaves {
            start,
            weights,
            single,
            by_node: Vec::new(),
            one_weight: false,
            target_by_node: Vec::new(),
        }
    }
}

/// Running score of one target of one row.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Score<A> {
    value: A,
    has: bool,
}

/// A compiled ensemble, ready to evaluate rows.
#[derive(Debug)]
pub struct CompiledEnsemble {
    ensemble: Ensemble,
    walk_f32: Option<Walker<f32>>,
    walk_f64: OnceLock<Walker<f64>>,
    leaves_f32: Option<Leaves<f32>>,
    leaves_f64: Option<Leaves<f64>>,
    /// Two classes and every leaf weight on one of them (spec: one score column).
    binary_case: bool,
    weights_all_positive: bool,
    /// The sum path for one target with no has-score bookkeeping.
    single_sum: bool,
    /// SUM or AVERAGE.
    sums: bool,
    /// For a lone deep regression tree: each node's output as `finalize` computes it from that
    /// one leaf, so batches write outputs straight from the leaves they reach.
    lone_outputs: Option<Vec<f64>>,
}

/// Labels one classifier row chose: an index into the class labels, or (two classes, weights on
/// both) the reference's literal positive/negative label 1 or 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Index(usize),
    Literal(i64),
}

impl CompiledEnsemble {
    pub fn new(ensemble: Ensemble) -> Result<CompiledEnsemble, TreeError> {
        if ensemble.n_features > FEATURE_LIMIT {
            return Err(TreeError::Attribute {
                name: "nodes_featureids".into(),
                reason: format!("feature id {} is too large", ensemble.n_features - 1),
            });
        }
        let (walk_f32, walk_f64) = match ensemble.precision {
            Precision::F32 => (Some(Walker::compile(&ensemble)), OnceLock::new()),
            Precision::F64 => (None, OnceLock::from(Walker::compile(&ensemble))),
        };
        let (leaves_f32, leaves_f64) = match (&walk_f32, walk_f64.get()) {
            (Some(w), _) => (Some(Leaves::new(&ensemble).index_nodes(w)), None),
            (None, Some(w)) => (None, Some(Leaves::new(&ensemble).index_nodes(w))),
            (None, None) => return Err(TreeError::Internal("no walker compiled".into())),
        };
        let mut classes_used = std::collections::BTreeSet::new();
        let mut weights_all_positive = true;
        for tree in &ensemble.trees {
            for leaf in &tree.leaves {
                for &(target, w) in &leaf.weights {
                    classes_used.insert(target);
                    weights_all_positive &= w >= 0.0;
                }
            }
        }
        let binary_case = matches!(ensemble.output, Output::Classifier(_))
            && ensemble.n_targets == 2
            && classes_used.len() == 1;
        let lone = match (&walk_f32, walk_f64.get(), &leaves_f32, &leaves_f64) {
            (Some(w), _, Some(l), _) => lone_outputs(&ensemble, w, l),
            (None, Some(w), _, Some(l)) => lone_outputs(&ensemble, w, l),
            _ => None,
        };
        let ensemble_aggregate = ensemble.aggregate;
        let single_sum = ensemble.n_targets == 1
            && matches!(ensemble.aggregate, Aggregate::Sum | Aggregate::Average);
        Ok(CompiledEnsemble {
            ensemble,
            walk_f32,
            walk_f64,
            leaves_f32,
            leaves_f64,
            binary_case,
            weights_all_positive,
            single_sum,
            sums: matches!(ensemble_aggregate, Aggregate::Sum | Aggregate::Average),
            lone_outputs: lone,
        })
    }

    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }

    /// Columns of the score output.
    pub fn n_outputs(&self) -> usize {
        self.ensemble.n_targets
    }

    /// Whether the fast (predicated) walker serves this ensemble.
    pub fn is_fast(&self) -> bool {
        match self.ensemble.precision {
            Precision::F32 => self.walk_f32.as_ref().is_some_and(|w| w.fast.is_some()),
            Precision::F64 => self.walk_f64.get().is_some_and(|w| w.fast.is_some()),
        }
    }

    fn walker_f64(&self) -> &Walker<f64> {
        self.walk_f64
            .get_or_init(|| Walker::compile(&self.ensemble))
    }

    /// Evaluates `rows` (row-major, `n_cols` per row) compared in f32; the model's thresholds
    /// must be f32 (else use [`CompiledEnsemble::eval_f64`]).
    pub fn eval_f32<O: Float>(
        &self,
        rows: &[f32],
        n_cols: usize,
        scores: &mut [O],
        labels: &mut [Label],
        generic: bool,
    ) -> Result<(), TreeError> {
        let walker = match &self.walk_f32 {
            Some(w) => w,
            None => {
                let wide: Vec<f64> = rows.iter().map(|&v| v as f64).collect();
                return self.eval_f64(&wide, n_cols, scores, labels, generic);
            }
        };
        match &self.leaves_f32 {
            Some(leaves) => self.run(walker, leaves, rows, n_cols, scores, labels, generic),
            None => Err(TreeError::Internal("f32 leaves missing".into())),
        }
    }

    /// Evaluates `rows` compared in f64.
    pub fn eval_f64<O: Float>(
        &self,
        rows: &[f64],
        n_cols: usize,
        scores: &mut [O],
        labels: &mut [Label],
        generic: bool,
    ) -> Result<(), TreeError> {
        let walker = self.walker_f64();
        match (&self.leaves_f32, &self.leaves_f64) {
            (Some(leaves), _) => self.run(walker, leaves, rows, n_cols, scores, labels, generic),
            (None, Some(leaves)) => self.run(walker, leaves, rows, n_cols, scores, labels, generic),
            (None, None) => Err(TreeError::Internal("leaves missing".into())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run<C: Float + RowScratch, A: Float + Scratch, O: Float>(
        &self,
        walker: &Walker<C>,
        leaves: &Leaves<A>,
        rows: &[C],
        n_cols: usize,
        scores: &mut [O],
        labels: &mut [Label],
        generic: bool,
    ) -> Result<(), TreeError> {
        let e = &self.ensemble;
        if n_cols < e.n_features {
            return Err(TreeError::Input(format!(
                "rows have {n_cols} features, the model reads feature {}",
                e.n_features - 1
            )));
        }
        let n_rows = rows.len().checked_div(n_cols).unwrap_or(0);
        if n_rows * n_cols != rows.len() {
            return Err(TreeError::Input(format!(
                "{} values do not make rows of {n_cols}",
                rows.len()
            )));
        }
        let t = e.n_targets;
        if scores.len() != n_rows * t {
            return Err(TreeError::Internal(format!(
                "score buffer holds {}, expected {}",
                scores.len(),
                n_rows * t
            )));
        }
        if let (Some(outputs), Some(nodes), false, 8..) =
            (&self.lone_outputs, walker.fast.as_deref(), generic, n_rows)
        {
            self.lone_tree(walker, nodes, outputs, rows, n_cols, scores);
            return Ok(());
        }
        let classifier = matches!(e.output, Output::Classifier(_));
        if classifier && labels.len() != n_rows {
            return Err(TreeError::Internal("label buffer length".into()));
        }
        A::with_scratch(BLOCK.min(n_rows.max(1)) * t, |acc: &mut [Score<A>]| {
            for start in (0..n_rows).step_by(BLOCK) {
                let end = (start + BLOCK).min(n_rows);
                let block = &rows[start * n_cols..end * n_cols];
                let acc = &mut acc[..(end - start) * t];
                acc.fill(Score::default());
                self.accumulate(walker, leaves, block, n_cols, acc, generic);
                for r in 0..end - start {
                    let out = &mut scores[(start + r) * t..(start + r + 1) * t];
                    let label = self.finalize(&mut acc[r * t..(r + 1) * t], out);
                    if classifier {
                        labels[start + r] = label;
                    }
                }
            }
        });
        Ok(())
    }

    /// Adds every tree's leaf to each row of the block, tree by tree.
    fn accumulate<C: Float + RowScratch, A: Float>(
        &self,
        walker: &Walker<C>,
        leaves: &Leaves<A>,
        block: &[C],
        n_cols: usize,
        acc: &mut [Score<A>],
        generic: bool,
    ) {
        let n_rows = block.len() / n_cols.max(1);
        let t = self.ensemble.n_targets;
        let row = |r: usize| &block[r * n_cols..(r + 1) * n_cols];
        let fast = if generic {
            None
        } else {
            walker.fast.as_deref()
        };
        let Some(nodes) = fast else {
            for tree in 0..walker.roots.len() {
                for r in 0..n_rows {
                    let leaf = walker.generic_leaf(tree, row(r));
                    self.add_leaf(leaves, leaf, &mut acc[r * t..(r + 1) * t]);
                }
            }
            return;
        };
        let walk = |block: &[C], n_cols: usize, acc: &mut [Score<A>]| {
            if n_rows < 8 {
                // Few rows: walk several trees of one row at a time.
                self.few_rows::<C, A, 16>(walker, leaves, nodes, block, n_cols, acc);
            } else {
                self.batch::<C, A, 16>(walker, leaves, nodes, block, n_cols, acc);
            }
        };
        with_walk_rows(walker, block, n_cols, |rows, cols| walk(rows, cols, acc))
    }

    /// A lone tree's outputs straight from its leaves (see `lone_outputs`), for batches.
    fn lone_tree<C: Float + RowScratch, O: Float>(
        &self,
        walker: &Walker<C>,
        nodes: &[crate::compiled::Node<C>],
        outputs: &[f64],
        rows: &[C],
        n_cols: usize,
        scores: &mut [O],
    ) {
        let root = walker.roots[0];
        for (block, out) in rows
            .chunks(BLOCK * n_cols.max(1))
            .zip(scores.chunks_mut(BLOCK))
        {
            // Each output is written as its walk ends; a buffer of leaf ids and a second pass over
            // it cost 6% in a full `bench trees` run (84.5M against 90.0-90.6M rows/s).
            with_walk_rows(walker, block, n_cols, |rows, cols| {
                crate::compiled::walk_stream::<C, STREAM_LANES>(
                    nodes,
                    root,
                    rows,
                    cols,
                    out.len(),
                    |r, node| out[r] = O::from_f64(outputs[node as usize]),
                );
            })
        }
    }

    /// Rows one at a time, `L` trees in lockstep.
    fn few_rows<C: Float, A: Float, const L: usize>(
        &self,
        walker: &Walker<C>,
        leaves: &Leaves<A>,
        nodes: &[crate::compiled::Node<C>],
        block: &[C],
        n_cols: usize,
        acc: &mut [Score<A>],
    ) {
        let n_rows = block.len() / n_cols.max(1);
        let t = self.ensemble.n_targets;
        let row = |r: usize| &block[r * n_cols..(r + 1) * n_cols];
        for r in 0..n_rows {
            let x = row(r);
            let out = &mut acc[r * t..(r + 1) * t];
            let mut tree = 0;
            while tree + L <= walker.roots.len() {
                let mut at = [0u32; L];
                at.copy_from_slice(&walker.roots[tree..tree + L]);
                let depth = walker.depths[tree..tree + L]
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(0);
                let reached = walk_lanes::<C, L>(nodes, at, [x; L], depth);
                for node in reached {
                    self.add_node(walker, leaves, node, out);
                }
                tree += L;
            }
            for tr in tree..walker.roots.len() {
                let at = [walker.roots[tr]];
                let reached = walk_lanes::<C, 1>(nodes, at, [x], walker.depths[tr]);
                self.add_node(walker, leaves, reached[0], out);
            }
        }
    }

    /// Batches of rows: `L` rows walk each tree in lockstep.
    fn batch<C: Float, A: Float, const L: usize>(
        &self,
        walker: &Walker<C>,
        leaves: &Leaves<A>,
        nodes: &[crate::compiled::Node<C>],
        block: &[C],
        n_cols: usize,
        acc: &mut [Score<A>],
    ) {
        let n_rows = block.len() / n_cols.max(1);
        let t = self.ensemble.n_targets;
        let row = |r: usize| &block[r * n_cols..(r + 1) * n_cols];
        let mut first_row = 0;
        // A model that fits in cache is walked L rows at a time through every tree, so the
        // rows' running scores stay in registers or L1; a larger one tree by tree (below), so
        // each tree's nodes are fetched once per block.
        const CACHE_BYTES: usize = 512 * 1024;
        let fits = std::mem::size_of_val(nodes) <= CACHE_BYTES;
        if walker.streams {
            // Deep trees: each tree streams the block's rows through its lanes.
            with_buffer(&LEAF_IDS, n_rows, |reached| {
                for tree in 0..walker.roots.len() {
                    crate::compiled::walk_stream::<C, STREAM_LANES>(
                        nodes,
                        walker.roots[tree],
                        block,
                        n_cols,
                        n_rows,
                        |r, node| reached[r] = node,
                    );
                    for (r, &node) in reached.iter().enumerate() {
                        self.add_node(walker, leaves, node, &mut acc[r * t..(r + 1) * t]);
                    }
                }
            });
            return;
        }
        if fits && self.register_sum_target(leaves).is_none() {
            while first_row + L <= n_rows {
                let r = first_row;
                let offsets: [usize; L] = std::array::from_fn(|l| (r + l) * n_cols);
                for tree in 0..walker.roots.len() {
                    let reached = walk_tree(walker, nodes, tree, block, offsets);
                    for (l, node) in reached.into_iter().enumerate() {
                        let out = &mut acc[(r + l) * t..(r + l + 1) * t];
                        self.add_node(walker, leaves, node, out);
                    }
                }
                first_row += L;
            }
        }
        if let Some(target) = self.register_sum_target(leaves).filter(|_| fits) {
            // Every tree adds one weight to the same output: the sums live in registers.
            while first_row + L <= n_rows {
                let r = first_row;
                let offsets: [usize; L] = std::array::from_fn(|l| (r + l) * n_cols);
                let mut sums = [A::ZERO; L];
                for tree in 0..walker.roots.len() {
                    let reached = walk_tree(walker, nodes, tree, block, offsets);
                    for l in 0..L {
                        sums[l] = sums[l] + leaves.by_node[reached[l] as usize];
                    }
                }
                for (l, sum) in sums.into_iter().enumerate() {
                    acc[(r + l) * t + target] = Score {
                        value: sum,
                        has: !walker.roots.is_empty(),
                    };
                }
                first_row += L;
            }
        }
        for tree in 0..walker.roots.len() {
            let root = walker.roots[tree];
            let depth = walker.depths[tree];
            let mut r = first_row;
            while r + L <= n_rows {
                let offsets: [usize; L] = std::array::from_fn(|l| (r + l) * n_cols);
                let reached = walk_tree(walker, nodes, tree, block, offsets);
                for (l, node) in reached.into_iter().enumerate() {
                    let out = &mut acc[(r + l) * t..(r + l + 1) * t];
                    self.add_node(walker, leaves, node, out);
                }
                r += L;
            }
            for r in r..n_rows {
                let reached = walk_lanes::<C, 1>(nodes, [root], [row(r)], depth);
                let out = &mut acc[r * t..(r + 1) * t];
                self.add_node(walker, leaves, reached[0], out);
            }
        }
    }

    /// The output every leaf adds its one weight to, when there is one (single-target sums,
    /// binary classifiers with one score column) and the nodes fit in cache.
    fn register_sum_target<A>(&self, leaves: &Leaves<A>) -> Option<usize> {
        if self.single_sum {
            return Some(0);
        }
        if leaves.one_weight && self.sums && self.binary_case {
            return Some(
                leaves
                    .weights
                    .first()
                    .map_or(0, |&(target, _)| target as usize),
            );
        }
        None
    }

    /// Adds the leaf at compiled node `node`.
    #[inline(always)]
    fn add_node<C, A: Float>(
        &self,
        walker: &Walker<C>,
        leaves: &Leaves<A>,
        node: u32,
        out: &mut [Score<A>],
    ) {
        if self.single_sum {
            out[0].value = out[0].value + leaves.by_node[node as usize];
        } else if leaves.one_weight && self.sums {
            let s = &mut out[leaves.target_by_node[node as usize] as usize];
            s.value = s.value + leaves.by_node[node as usize];
            s.has = true;
        } else {
            self.add_leaf(leaves, walker.leaf_of[node as usize], out);
        }
    }

    #[inline(always)]
    fn add_leaf<A: Float>(&self, leaves: &Leaves<A>, leaf: u32, out: &mut [Score<A>]) {
        let leaf = leaf as usize;
        if self.single_sum {
            out[0].value = out[0].value + leaves.single[leaf];
            return;
        }
        let (from, to) = (leaves.start[leaf] as usize, leaves.start[leaf + 1] as usize);
        for &(target, w) in &leaves.weights[from..to] {
            let s = &mut out[target as usize];
            s.value = match self.ensemble.aggregate {
                Aggregate::Sum | Aggregate::Average => s.value + w,
                Aggregate::Min => {
                    if !s.has || w < s.value {
                        w
                    } else {
                        s.value
                    }
                }
                Aggregate::Max => {
                    if !s.has || w > s.value {
                        w
                    } else {
                        s.value
                    }
                }
            };
            s.has = true;
        }
    }

    /// Base values, averaging, post transform and label of one row.
    fn finalize<A: Float, O: Float>(&self, acc: &mut [Score<A>], out: &mut [O]) -> Label {
        let e = &self.ensemble;
        let b = |k: usize| A::from_f64(e.base_values[k]);
        let n_trees = A::from_usize(e.trees.len());
        match &e.output {
            Output::Classifier(_) => self.finalize_classifier(acc, out),
            Output::Regressor | Output::V5 => {
                if e.n_targets == 1 {
                    // The reference's one-output path: only PROBIT applies.
                    let v = one_target(e, acc[0]);
                    out[0] = if e.post_transform == PostTransform::Probit {
                        O::from_f32(probit(v.to_f32()))
                    } else {
                        O::from_f64(v.to_f64())
                    };
                    return Label::Index(0);
                }
                let use_base = e.base_values.len() == e.n_targets;
                for (k, s) in acc.iter_mut().enumerate() {
                    let base = if use_base { b(k) } else { A::ZERO };
                    s.value = match e.aggregate {
                        // The reference leaves a target no leaf voted for at 0, base value
                        // not added.
                        Aggregate::Sum | Aggregate::Average if !s.has => A::ZERO,
                        Aggregate::Sum => s.value + base,
                        Aggregate::Average => s.value / n_trees + base,
                        Aggregate::Min | Aggregate::Max => {
                            base + if s.has { s.value } else { A::ZERO }
                        }
                    };
                }
                write_scores(acc, e.post_transform, out, -1);
                Label::Index(0)
            }
        }
    }

    fn finalize_classifier<A: Float, O: Float>(
        &self,
        acc: &mut [Score<A>],
        out: &mut [O],
    ) -> Label {
        let e = &self.ensemble;
        let b = |k: usize| A::from_f64(e.base_values[k]);
        if e.n_targets > 2 {
            for k in 0..e.base_values.len().min(acc.len()) {
                if acc[k].has {
                    acc[k].value = acc[k].value + b(k);
                } else {
                    acc[k] = Score {
                        value: b(k),
                        has: true,
                    };
                }
            }
            let mut best: Option<(usize, A)> = None;
            for (k, s) in acc.iter().enumerate() {
                if s.has && best.is_none_or(|(_, v)| s.value > v) {
                    best = Some((k, s.value));
                }
            }
            write_scores(acc, e.post_transform, out, -1);
            return Label::Index(best.map_or(0, |(k, _)| k));
        }
        // Two classes.
        let mut add_second = -1;
        let mut len = 2;
        match e.base_values.len() {
            2 => {
                if acc[1].has {
                    acc[1].value = b(1) + acc[0].value;
                    acc[0].value = neg(acc[1].value);
                    acc[1].has = true;
                } else {
                    acc[1].value = acc[1].value + b(1);
                    acc[0].value = acc[0].value + b(0);
                }
            }
            1 => {
                acc[0].value = acc[0].value + b(0);
                if !acc[1].has {
                    len = 1;
                }
            }
            _ => {
                add_second = 3;
                if !acc[1].has {
                    len = 1;
                }
            }
        }
        let (s0, h0) = (acc[0].value, acc[0].has);
        let (s1, h1) = if len == 2 && acc[1].has {
            (acc[1].value, true)
        } else {
            (A::ZERO, false)
        };
        let positive = if h1 {
            s1
        } else if h0 {
            s0
        } else {
            A::ZERO
        };
        let label = if self.binary_case {
            if self.weights_all_positive {
                if positive > A::from_f64(0.5) {
                    add_second = 0;
                    Label::Index(1)
                } else {
                    add_second = 1;
                    Label::Index(0)
                }
            } else if positive > A::ZERO {
                add_second = 2;
                Label::Index(1)
            } else {
                add_second = 3;
                Label::Index(0)
            }
        } else if positive > A::ZERO {
            Label::Literal(1)
        } else {
            Label::Literal(0)
        };
        write_scores(&mut acc[..len], e.post_transform, out, add_second);
        label
    }
}

/// A lone deep single-target regression tree's output at each node, computed from the node's
/// leaf weight exactly as [`CompiledEnsemble::finalize`] computes it from a row's sum (`0 + w`,
/// then [`one_target`], in `A`); NaN on branches, where no finished walk ends.
/// `None` for every other model. Only PROBIT applies to one target, and it is left out here.
fn lone_outputs<C, A: Float>(
    e: &Ensemble,
    walker: &Walker<C>,
    leaves: &Leaves<A>,
) -> Option<Vec<f64>> {
    let lone = matches!(e.output, Output::Regressor | Output::V5)
        && e.n_targets == 1
        && walker.roots.len() == 1
        && walker.streams
        && e.post_transform != PostTransform::Probit
        && matches!(e.aggregate, Aggregate::Sum | Aggregate::Average);
    if !lone {
        return None;
    }
    let outputs = walker
        .leaf_of
        .iter()
        .zip(&leaves.by_node)
        .map(|(&leaf, &w)| {
            if leaf == u32::MAX {
                return f64::NAN;
            }
            // The sum a batch row would hold: zero plus the leaf's weight.
            let sum = Score {
                value: A::ZERO + w,
                has: true,
            };
            one_target(e, sum).to_f64()
        })
        .collect();
    Some(outputs)
}

/// A single-target row's value from its summed score, as the reference's one-output path computes
/// it: the sum or average plus the one base value (a target no leaf voted for under MIN or MAX is
/// the base value alone).
fn one_target<A: Float>(e: &Ensemble, s: Score<A>) -> A {
    let origin = if e.base_values.len() == 1 {
        A::from_f64(e.base_values[0])
    } else {
        A::ZERO
    };
    match e.aggregate {
        Aggregate::Sum => s.value + origin,
        Aggregate::Average => s.value / A::from_usize(e.trees.len()) + origin,
        Aggregate::Min | Aggregate::Max => {
            if s.has {
                s.value + origin
            } else {
                origin
            }
        }
    }
}

/// Runs `f` on the rows a fast walk reads: `block` itself, or, when negated branches read `-x`
/// from a second half of each row, rows of 2F values [x_0 .. x_F-1, -x_0 .. -x_F-1] written
/// once, so the walk never negates.
fn with_walk_rows<C: Float + RowScratch, R>(
    walker: &Walker<C>,
    block: &[C],
    n_cols: usize,
    f: impl FnOnce(&[C], usize) -> R,
) -> R {
    if !walker.negates {
        return f(block, n_cols);
    }
    let n_rows = block.len() / n_cols.max(1);
    let width = walker.width;
    C::with_rows(n_rows * 2 * width, |doubled| {
        for r in 0..n_rows {
            let x = &block[r * n_cols..r * n_cols + width];
            let (plain, negated) = doubled[r * 2 * width..(r + 1) * 2 * width].split_at_mut(width);
            plain.copy_from_slice(x);
            for (n, &v) in negated.iter_mut().zip(x) {
                *n = v.negate_if(0x8000_0000);
            }
        }
        f(doubled, 2 * width)
    })
}

/// Walks `L` rows through tree `tree`. Deep trees (12 levels or more, where most paths end
/// well before the deepest leaf) stop as soon as every walk has reached its leaf.
#[inline(always)]
fn walk_tree<C: Float, const L: usize>(
    walker: &Walker<C>,
    nodes: &[crate::compiled::Node<C>],
    tree: usize,
    block: &[C],
    offsets: [usize; L],
) -> [u32; L] {
    let root = walker.roots[tree];
    let depths = (walker.min_depths[tree], walker.depths[tree]);
    if depths.1 >= 12 {
        walk_rows::<C, L, true>(nodes, root, block, offsets, depths)
    } else {
        walk_rows::<C, L, false>(nodes, root, block, offsets, depths)
    }
}

/// The reference's cap on feature ids, far above any real model; bit 31 of a node's feature
/// field carries the sign flip.
const FEATURE_LIMIT: usize = 1 << 31;

fn neg<A: Float>(v: A) -> A {
    v.negate_if(0x8000_0000)
}

/// `1 / (1 + exp(-|v|))`, mirrored for negative v (as the reference computes it).
pub(crate) fn logistic(v: f32) -> f32 {
    let p = 1.0 / (1.0 + (-v.abs()).exp());
    if v < 0.0 {
        1.0 - p
    } else {
        p
    }
}

/// The reference's inverse error function (Winitzki's approximation, a = 0.147).
fn erf_inv(x: f32) -> f32 {
    let sgn = if x < 0.0 { -1.0f32 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sgn * v3.sqrt()
}

fn probit(v: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * v - 1.0)
}

/// Writes the scores through the post transform, in f32 arithmetic as the reference does.
/// `add_second` is the reference's "add second class" code for one-column binary scores.
fn write_scores<A: Float, O: Float>(
    scores: &mut [Score<A>],
    post: PostTransform,
    out: &mut [O],
    add_second: i32,
) {
    if scores.len() >= 2 {
        match post {
            PostTransform::Probit => {
                for (o, s) in out.iter_mut().zip(scores.iter()) {
                    *o = O::from_f32(probit(s.value.to_f32()));
                }
            }
            PostTransform::Logistic => {
                for (o, s) in out.iter_mut().zip(scores.iter()) {
                    *o = O::from_f32(logistic(s.value.to_f32()));
                }
            }
            PostTransform::Softmax => {
                let max = scores
                    .iter()
                    .map(|s| s.value.to_f32())
                    .fold(-f32::MAX, |m, v| if v > m { v } else { m });
                let mut sum = 0.0f32;
                for (o, s) in out.iter_mut().zip(scores.iter()) {
                    let e = (s.value.to_f32() - max).exp();
                    sum += e;
                    *o = O::from_f32(e);
                }
                for o in out.iter_mut().take(scores.len()) {
                    *o = O::from_f32(o.to_f32() / sum);
                }
            }
            PostTransform::SoftmaxZero => {
                let max = scores
                    .iter()
                    .map(|s| s.value.to_f32())
                    .fold(-f32::MAX, |m, v| if v > m { v } else { m });
                let exp_neg_max = (-max).exp();
                let mut sum = 0.0f32;
                for (o, s) in out.iter_mut().zip(scores.iter()) {
                    let v = s.value.to_f32();
                    let e = if !(-0.000_000_1..=0.000_000_1).contains(&v) {
                        let e = (v - max).exp();
                        sum += e;
                        e
                    } else {
                        v * exp_neg_max
                    };
                    *o = O::from_f32(e);
                }
                for o in out.iter_mut().take(scores.len()) {
                    *o = O::from_f32(o.to_f32() / sum);
                }
            }
            PostTransform::None => {
                for (o, s) in out.iter_mut().zip(scores.iter()) {
                    *o = O::from_f64(s.value.to_f64());
                }
            }
        }
        return;
    }
    let s = scores.first().map_or(A::ZERO, |s| s.value);
    let pair = |a: f32, b: f32, out: &mut [O]| {
        if let [o0, o1, ..] = out {
            *o0 = O::from_f32(a);
            *o1 = O::from_f32(b);
        }
    };
    if post == PostTransform::Probit {
        if let Some(o) = out.first_mut() {
            *o = O::from_f32(probit(s.to_f32()));
        }
        return;
    }
    match add_second {
        0 | 1 => {
            // ONNX Runtime 1.32 applies LOGISTIC to the one score before completing the pair.
            if post == PostTransform::Logistic {
                let v = logistic(s.to_f32());
                pair(1.0 - v, v, out);
            } else {
                let v = s.to_f64();
                pair((1.0 - v) as f32, v as f32, out);
            }
        }
        2 | 3 => {
            if post == PostTransform::Logistic {
                let v = s.to_f32();
                pair(logistic(-v), logistic(v), out);
            } else {
                let v = s.to_f64();
                pair((-v) as f32, v as f32, out);
            }
        }
        _ => {
            if let Some(o) = out.first_mut() {
                *o = O::from_f64(s.to_f64());
            }
        }
    }
}

/// Labels as an i64 column (int labels) — `Literal` values pass through as the reference does.
pub fn int_label(labels: &ClassLabels, label: Label) -> i64 {
    match (labels, label) {
        (ClassLabels::Int64(v), Label::Index(i)) => v.get(i).copied().unwrap_or(0),
        (_, Label::Literal(l)) => l,
        (ClassLabels::Strings(_), Label::Index(i)) => i as i64,
    }
}

/// Labels as strings (string labels): a literal 1/0 is the index of the positive/negative class.
pub fn string_label(labels: &[String], label: Label) -> String {
    let i = match label {
        Label::Index(i) => i,
        Label::Literal(l) => l as usize,
    };
    labels.get(i).cloned().unwrap_or_default()
}

/// Per-thread scratch for running scores, so a request allocates only its outputs.
pub(crate) trait Scratch: Sized {
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Score<Self>]) -> R) -> R;
}

thread_local! {
    static SCRATCH_F32: RefCell<Vec<Score<f32>>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<Score<f64>>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// Leaf node ids of a block's rows, for streamed walks.
    static LEAF_IDS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the first `len` elements of a per-thread buffer, grown as needed (a fresh one if
/// the thread's buffer is already in use).
fn with_buffer<T: Clone + Default, R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    cell.with(|c| match c.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, T::default());
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

impl Scratch for f32 {
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Score<f32>]) -> R) -> R {
        with_buffer(&SCRATCH_F32, len, f)
    }
}

impl Scratch for f64 {
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Score<f64>]) -> R) -> R {
        with_buffer(&SCRATCH_F64, len, f)
    }
}

/// Per-thread scratch for rows with their negations appended.
pub(crate) trait RowScratch: Sized {
    fn with_rows<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

thread_local! {
    static ROWS_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ROWS_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

impl RowScratch for f32 {
    fn with_rows<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        with_buffer(&ROWS_F32, len, f)
    }
}

impl RowScratch for f64 {
    fn with_rows<R>(len: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
        with_buffer(&ROWS_F64, len, f)
    }
}
