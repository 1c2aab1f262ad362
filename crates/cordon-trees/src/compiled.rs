//! Trees compiled for the hardware.
//!
//! Every tree becomes a run of 12-byte nodes (f32 thresholds) in one contiguous array, laid out
//! depth-first so a path mostly walks forward, with the two children of every branch side by
//! side: a node stores only its first child, and a step is `at = left + !(x <= t)`, one addition
//! where a stored pair of children would need a second load that waits for the comparison.
//!
//! When every branch of the ensemble is an ordered comparison (LEQ, LT, GTE, GT, with or without
//! a missing-value track, which covers what scikit-learn, XGBoost and LightGBM export) each branch
//! is rewritten at load time into one form, `go to left iff (±x) <= t'`:
//!
//! | mode | missing → true | sign | t' | children |
//! |------|----------------|------|----|----------|
//! | LEQ  | no  | + | t               | as is   |
//! | LT   | no  | + | next_down(t)    | as is   |
//! | GTE  | no  | − | −t              | as is   |
//! | GT   | no  | − | next_down(−t)   | as is   |
//! | LEQ  | yes | − | next_down(−t)   | swapped |
//! | LT   | yes | − | −t              | swapped |
//! | GTE  | yes | + | next_down(t)    | swapped |
//! | GT   | yes | + | t               | swapped |
//!
//! (`x < t` ⇔ `x <= next_down(t)` for every x, NaN included, when t is not −∞; NaN compares
//! false, so swapping the children of the complement sends NaN to the original true child.)
//! The sign flip is exact for every value; the evaluator writes each row's negation once, after
//! the row, and a negated branch reads its feature from there, so the walk has no extra step.
//! The children are placed in the rewritten order (the child taken on `<=` first), so a swap
//! costs nothing at run time. A leaf has threshold NaN, which every comparison fails, and `left`
//! one below itself, so a step from a leaf stays there: a walk can take a fixed number of steps
//! with no branch on the data:
//! several walks (sixteen rows of one tree, or sixteen trees of one row) advance in lockstep and
//! the processor overlaps their loads.
//!
//! Ensembles with EQ, NEQ or set-membership branches, or thresholds where the rewrite is not
//! exact (NaN, or an infinity on the wrong side), use the generic walker: the same node array,
//! each step evaluating the branch's own mode.

use crate::ensemble::{Branch, Child, Ensemble, Mode};
use crate::float::Float;

/// Bit 31 of a node's `feature`: negate the feature value before comparing.
const NEGATE: u32 = 0x8000_0000;
const FEATURE: u32 = 0x7fff_ffff;

/// Batches stream rows through each tree ([`walk_stream`]) for models of at most this many trees
/// whose mean depth is at least [`STREAM_MIN_DEPTH`].
const STREAM_MAX_TREES: usize = 4;
const STREAM_MIN_DEPTH: usize = 12;

/// One node of the fast layout: a walk goes to `left` when `x[feature] <= threshold` and to
/// `left + 1` otherwise (NaN included). Leaves have threshold NaN and `left` = own index − 1
/// (wrapping), so a step from a leaf stays on it.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Node<C> {
    pub threshold: C,
    pub feature: u32,
    pub left: u32,
}

impl<C: Float> Node<C> {
    /// The node after this one for a row whose value of the node's feature is `x`.
    #[inline(always)]
    // `!(x <= t)` is not `x > t`: it holds for NaN, which is the point.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn next(&self, x: C) -> u32 {
        // NaN compares false: it takes the second child (a leaf: itself).
        self.left.wrapping_add(u32::from(!(x <= self.threshold)))
    }
}

/// One node of the generic layout.
#[derive(Debug, Clone, Copy)]
pub struct GenericNode<C> {
    pub threshold: C,
    pub feature: u32,
    pub mode: Mode,
    pub missing_true: bool,
    /// `[if_true, if_false]`, side by side in either order; a leaf points to itself on both.
    pub next: [u32; 2],
    pub leaf: bool,
}

/// The walkable form of an ensemble for comparisons in type `C`.
#[derive(Debug, Clone)]
pub struct Walker<C> {
    /// Fast layout, when every branch rewrites exactly.
    pub fast: Option<Vec<Node<C>>>,
    /// Whether any fast node reads a negated feature. Negated features are read from a second
    /// half of the row, `-x`, which the evaluator writes once per row: node `feature` fields
    /// then index a row of `2 * width` values, and the walk itself never negates.
    pub negates: bool,
    /// The model's feature count (`F`): a negated feature `f` is read at `F + f`.
    pub width: usize,
    pub generic: Vec<GenericNode<C>>,
    pub roots: Vec<u32>,
    pub depths: Vec<u32>,
    /// The shortest root-to-leaf path of each tree: a lockstep walk checks for its end only
    /// from there on.
    pub min_depths: Vec<u32>,
    /// Whether batches stream rows through each tree ([`walk_stream`]) rather than walking groups
    /// of rows in lockstep: for deep trees, whose paths end at very different depths.
    pub streams: bool,
    /// For each node, its leaf number (`u32::MAX` for branches).
    pub leaf_of: Vec<u32>,
    pub member_sets: Vec<Vec<f64>>,
}

/// A node to place: the child, the slot reserved for it, its depth.
type Placing = (Child, u32, u32);

/// The fast form of one branch, or `None` when the rewrite is not exact.
fn rewrite<C: Float>(b: &Branch) -> Option<(C, bool, bool)> {
    let t = C::from_f64(b.threshold);
    // A fast branch never has a NaN threshold: `walk_stream` tells leaves by theirs.
    if t.is_nan() {
        return None;
    }
    let inf = C::from_f64(f64::INFINITY);
    let neg_inf = C::from_f64(f64::NEG_INFINITY);
    let neg = |v: C| v.negate_if(NEGATE);
    // (negate, t', swap)
    let (negate, t2, swap) = match (b.mode, b.missing_true) {
        (Mode::Leq, false) => (false, t, false),
        (Mode::Lt, false) if t != neg_inf => (false, t.next_down(), false),
        (Mode::Gte, false) => (true, neg(t), false),
        (Mode::Gt, false) if t != inf => (true, neg(t).next_down(), false),
        (Mode::Leq, true) if t != inf => (true, neg(t).next_down(), true),
        (Mode::Lt, true) => (true, neg(t), true),
        (Mode::Gte, true) if t != neg_inf => (false, t.next_down(), true),
        (Mode::Gt, true) => (false, t, true),
        _ => return None,
    };
    Some((t2, negate, swap))
}

impl<C: Float> Walker<C> {
    pub fn compile(ensemble: &Ensemble) -> Walker<C> {
        let total: usize = ensemble
            .trees
            .iter()
            .map(|t| t.branches.len() + t.leaves.len())
            .sum();
        let mut generic = Vec::with_capacity(total);
        let mut leaf_of = Vec::with_capacity(total);
        let mut roots = Vec::with_capacity(ensemble.trees.len());
        let mut depths = Vec::with_capacity(ensemble.trees.len());
        let mut min_depths = Vec::with_capacity(ensemble.trees.len());
        let mut next_leaf = 0u32;
        let placeholder = GenericNode {
            threshold: C::ZERO,
            feature: 0,
            mode: Mode::Leq,
            missing_true: false,
            next: [u32::MAX, u32::MAX],
            leaf: false,
        };
        for tree in &ensemble.trees {
            // Depth-first, the two children of a branch reserved side by side when the branch is
            // placed, the one the fast form takes on `<=` first (the false child when the
            // missing-value track is true: the rewrite swaps those, see the table above).
            let root = generic.len() as u32;
            generic.push(placeholder);
            leaf_of.push(u32::MAX);
            let mut stack: Vec<Placing> = vec![(tree.root, root, 0)];
            let mut min_depth = u32::MAX;
            roots.push(root);
            depths.push(tree.depth);
            let leaf_base = next_leaf;
            while let Some((child, at, depth)) = stack.pop() {
                match child {
                    Child::Leaf(l) => {
                        min_depth = min_depth.min(depth);
                        generic[at as usize] = GenericNode {
                            next: [at, at],
                            leaf: true,
                            ..placeholder
                        };
                        leaf_of[at as usize] = leaf_base + l;
                    }
                    Child::Branch(b) => {
                        let br = &tree.branches[b as usize];
                        let first = generic.len() as u32;
                        generic.extend([placeholder; 2]);
                        leaf_of.extend([u32::MAX; 2]);
                        let (t, f) = if br.missing_true {
                            (first + 1, first)
                        } else {
                            (first, first + 1)
                        };
                        generic[at as usize] = GenericNode {
                            threshold: C::from_f64(br.threshold),
                            feature: br.feature,
                            mode: br.mode,
                            missing_true: br.missing_true,
                            next: [t, f],
                            leaf: false,
                        };
                        stack.push((br.if_false, f, depth + 1));
                        stack.push((br.if_true, t, depth + 1));
                    }
                }
            }
            min_depths.push(min_depth.min(tree.depth));
            next_leaf += tree.leaves.len() as u32;
        }

        let mut negates = false;
        let fast: Option<Vec<Node<C>>> = generic
            .iter()
            .enumerate()
            .map(|(i, g)| {
                if g.leaf {
                    return Some(Node {
                        threshold: C::from_f64(f64::NAN),
                        feature: 0,
                        left: (i as u32).wrapping_sub(1),
                    });
                }
                let branch = Branch {
                    feature: g.feature,
                    mode: g.mode,
                    threshold: g.threshold.to_f64(),
                    missing_true: g.missing_true,
                    if_true: Child::Leaf(0),
                    if_false: Child::Leaf(0),
                };
                let (t, negate, swap) = rewrite::<C>(&branch)?;
                negates |= negate;
                // Placement put the child taken on `<=` first; should it ever disagree with the
                // rewrite, the generic walker serves the model rather than a wrong layout.
                let (left, right) = if swap {
                    (g.next[1], g.next[0])
                } else {
                    (g.next[0], g.next[1])
                };
                if left.checked_add(1) != Some(right) {
                    return None;
                }
                Some(Node {
                    threshold: t,
                    feature: g.feature | if negate { NEGATE } else { 0 },
                    left,
                })
            })
            .collect();
        // Move negated reads to the second half of the row.
        let width = ensemble.n_features;
        let fast = fast.map(|nodes| {
            nodes
                .into_iter()
                .map(|mut n| {
                    if n.feature & NEGATE != 0 {
                        n.feature = (n.feature & FEATURE) + width as u32;
                    }
                    n
                })
                .collect()
        });
        // Streaming pays on a lone deep tree (a decision tree: +12% on `diab_dt_reg`, depth 17);
        // on ensembles, walking groups of rows through every tree keeps the running sums in
        // registers, which is worth more (`cordon bench trees`, docs/benchmarks.md).
        let mean_depth = depths.iter().map(|&d| d as usize).sum::<usize>() / depths.len().max(1);
        let streams = roots.len() <= STREAM_MAX_TREES && mean_depth >= STREAM_MIN_DEPTH;
        Walker {
            fast,
            negates,
            width,
            generic,
            roots,
            depths,
            min_depths,
            streams,
            leaf_of,
            member_sets: ensemble.member_sets.clone(),
        }
    }

    /// The leaf one row reaches in tree `tree`, by the generic walker.
    #[inline]
    pub fn generic_leaf(&self, tree: usize, row: &[C]) -> u32 {
        let mut i = self.roots[tree] as usize;
        loop {
            let n = &self.generic[i];
            if n.leaf {
                return self.leaf_of[i];
            }
            let x = row[n.feature as usize];
            let go_true = if x.is_nan() {
                n.missing_true || n.mode == Mode::Neq
            } else {
                n.mode
                    .holds(x.to_f64(), n.threshold.to_f64(), &self.member_sets)
            };
            i = n.next[usize::from(!go_true)] as usize;
        }
    }
}

/// One step of a fast walk.
#[inline(always)]
pub fn step<C: Float>(nodes: &[Node<C>], at: u32, row: &[C]) -> u32 {
    let n = &nodes[at as usize];
    n.next(row[n.feature as usize])
}

/// Walks `L` (tree, row) pairs in lockstep for `depth` steps; returns the nodes reached.
#[inline(always)]
pub fn walk_lanes<C: Float, const L: usize>(
    nodes: &[Node<C>],
    mut at: [u32; L],
    rows: [&[C]; L],
    depth: u32,
) -> [u32; L] {
    for _ in 0..depth {
        for l in 0..L {
            at[l] = step::<C>(nodes, at[l], rows[l]);
        }
    }
    at
}

/// Walks `L` rows of one tree in lockstep, the rows at `offsets` in `block`. With `EARLY`, stops
/// once every walk has reached its leaf (from the tree's shortest path on).
#[inline(always)]
pub fn walk_rows<C: Float, const L: usize, const EARLY: bool>(
    nodes: &[Node<C>],
    root: u32,
    block: &[C],
    offsets: [usize; L],
    (min_depth, depth): (u32, u32),
) -> [u32; L] {
    let mut at = [root; L];
    for step in 0..depth {
        let before = at;
        for l in 0..L {
            let n = &nodes[at[l] as usize];
            at[l] = n.next(block[offsets[l] + n.feature as usize]);
        }
        // Leaves point to themselves: when no walk moved, all have ended.
        if EARLY && step >= min_depth && before == at {
            break;
        }
    }
    at
}

/// Walks rows `0..n_rows` of `block` (each `n_cols` values) through one tree, `L` walks at a
/// time, and calls `reached(row, leaf)` once for each row, as it ends (rows end out of order).
/// Unlike [`walk_rows`], a walk that has ended
/// hands its lane to the next row, every `REFILL` steps: on deep, unbalanced trees, where one
/// group's longest path is far longer than the average one, the lanes stay on useful work.
/// A lane ended when it stands on a leaf, known by its NaN threshold (no branch has one). That
/// costs a load per lane and check, but a walk is seen to end as soon as it reaches its leaf;
/// asking instead whether the last step moved it needs one more step from the leaf, and missed
/// a walk that reached its leaf on the check's own step until the next check: 2.5 steps wasted
/// per row on average with checks every 4 steps, against 1.5 (`diab_dt_reg`: +3-4%). Checking
/// every 2 steps then wastes half a step and pays more (+5% more).
pub fn walk_stream<C: Float, const L: usize>(
    nodes: &[Node<C>],
    root: u32,
    block: &[C],
    n_cols: usize,
    n_rows: usize,
    mut reached: impl FnMut(usize, u32),
) {
    const REFILL: usize = 2;
    let mut at = [root; L];
    // usize::MAX: the lane has no row left (it keeps stepping on a leaf, harmlessly).
    let mut row: [usize; L] = std::array::from_fn(|l| if l < n_rows { l } else { usize::MAX });
    let mut offset: [usize; L] = std::array::from_fn(|l| if l < n_rows { l * n_cols } else { 0 });
    let mut next = L.min(n_rows);
    let mut live = next;
    while live > 0 {
        for _ in 0..REFILL {
            for l in 0..L {
                let n = &nodes[at[l] as usize];
                at[l] = n.next(block[offset[l] + n.feature as usize]);
            }
        }
        for l in 0..L {
            if nodes[at[l] as usize].threshold.is_nan() && row[l] != usize::MAX {
                reached(row[l], at[l]);
                if next < n_rows {
                    row[l] = next;
                    offset[l] = next * n_cols;
                    at[l] = root;
                    next += 1;
                } else {
                    row[l] = usize::MAX;
                    live -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A maximally unbalanced tree: branch `i` sends `x[i % 3] <= i/10` to a leaf and the rest
    /// one level deeper, so paths end anywhere between depth 1 and `depth`.
    fn chain(depth: u32) -> Vec<Node<f32>> {
        let leaf = |at: u32| Node {
            threshold: f32::NAN,
            feature: 0,
            left: at.wrapping_sub(1),
        };
        let mut nodes = Vec::new();
        for i in 0..depth {
            let at = nodes.len() as u32;
            nodes.push(Node {
                threshold: i as f32 / 10.0,
                feature: i % 3,
                left: at + 1,
            });
            nodes.push(leaf(at + 1));
        }
        nodes.push(leaf(nodes.len() as u32));
        nodes
    }

    /// A step from a leaf stays on it whatever the row holds (NaN and infinities included), and
    /// a branch sends NaN to its second child.
    #[test]
    fn leaves_hold_and_nan_takes_the_second_child() {
        let nodes = chain(3);
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e30] {
            let row = [x; 3];
            for leaf in [1u32, 3, 5, 6] {
                assert_eq!(step(&nodes, leaf, &row), leaf, "leaf {leaf}, x = {x}");
            }
        }
        assert_eq!(step(&nodes, 0, &[f32::NAN; 3]), 2);
        assert_eq!(step(&nodes, 0, &[0.0; 3]), 1);
        // The first node of the array is a leaf too in a model whose first tree is one leaf:
        // its `left` wraps below zero and back.
        let lone = [Node {
            threshold: f32::NAN,
            feature: 0,
            left: u32::MAX,
        }];
        assert_eq!(step(&lone, 0, &[1.0]), 0);
    }

    /// Streamed walks reach exactly the leaves lockstep walks reach, whatever the row count
    /// (none, fewer than the lanes, not a multiple of them).
    #[test]
    fn streamed_walks_reach_the_same_leaves() {
        let depth = 20;
        let nodes = chain(depth);
        let n_cols = 4;
        let mut seed = 0x9e37_79b9_u32;
        let mut value = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 2300) as f32 / 1000.0
        };
        for n_rows in [0usize, 1, 5, 16, 17, 100, 257] {
            let block: Vec<f32> = (0..n_rows * n_cols).map(|_| value()).collect();
            let mut streamed = vec![u32::MAX; n_rows];
            let mut calls = 0;
            walk_stream::<f32, 8>(&nodes, 0, &block, n_cols, n_rows, |r, leaf| {
                assert_eq!(streamed[r], u32::MAX, "row {r} reached twice");
                streamed[r] = leaf;
                calls += 1;
            });
            assert_eq!(calls, n_rows);
            for lanes in [9, 16] {
                let mut other = vec![u32::MAX; n_rows];
                let record = |r: usize, leaf| other[r] = leaf;
                match lanes {
                    9 => walk_stream::<f32, 9>(&nodes, 0, &block, n_cols, n_rows, record),
                    _ => walk_stream::<f32, 16>(&nodes, 0, &block, n_cols, n_rows, record),
                }
                assert_eq!(streamed, other, "{lanes} lanes");
            }
            for (r, &leaf) in streamed.iter().enumerate() {
                let [lockstep] =
                    walk_rows::<f32, 1, true>(&nodes, 0, &block, [r * n_cols], (1, depth));
                assert_eq!(leaf, lockstep, "row {r} of {n_rows}");
            }
            // The rows exercise short and long paths alike.
            if n_rows >= 100 {
                let ends: std::collections::BTreeSet<u32> = streamed.iter().copied().collect();
                assert!(ends.len() >= 8, "{ends:?}");
            }
        }
    }
}
