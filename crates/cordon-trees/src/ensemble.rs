//! A tree ensemble as the ONNX-ML operators define it, checked once and normalized: every tree is
//! a real tree (one root, no cycles, no shared or dangling children), every feature and target id
//! is in range, every attribute length agrees.
//!
//! Both attribute layouts end here: the flat `nodes_*` / `class_*` / `target_*` arrays of
//! `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (ai.onnx.ml opsets 1–3) through
//! [`FlatEnsemble`], and the `tree_roots` / `leaf_*` arrays of `TreeEnsemble` (opset 5) through
//! [`V5Ensemble`].

use crate::TreeError;
use std::collections::HashMap;

/// How a branch node compares the feature value `x` with its threshold `t` (spec: `nodes_modes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `x <= t`
    Leq,
    /// `x < t`
    Lt,
    /// `x >= t`
    Gte,
    /// `x > t`
    Gt,
    /// `x == t`
    Eq,
    /// `x != t`
    Neq,
    /// `x` is one of the values of a set (opset 5 `BRANCH_MEMBER`); the index names the set.
    Member(u32),
}

impl Mode {
    /// Whether `x` goes to the true child. NaN never compares true except through `Neq`, as in
    /// IEEE 754; the missing-value track is applied by the caller.
    pub fn holds(self, x: f64, t: f64, sets: &[Vec<f64>]) -> bool {
        match self {
            Mode::Leq => x <= t,
            Mode::Lt => x < t,
            Mode::Gte => x >= t,
            Mode::Gt => x > t,
            Mode::Eq => x == t,
            Mode::Neq => x != t,
            Mode::Member(set) => sets
                .get(set as usize)
                .is_some_and(|values| values.contains(&x)),
        }
    }
}

/// Where a branch leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Branch(u32),
    Leaf(u32),
}

/// An interior node.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub feature: u32,
    pub mode: Mode,
    /// The threshold, widened to f64 (exact for f32 thresholds); compiled back to the model's
    /// threshold type.
    pub threshold: f64,
    /// `nodes_missing_value_tracks_true`: a NaN feature value goes to the true child.
    pub missing_true: bool,
    pub if_true: Child,
    pub if_false: Child,
}

/// A leaf: what it adds to which targets (or classes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Leaf {
    pub weights: Vec<(u32, f64)>,
}

/// One tree; branch and leaf indices are local to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    pub root: Child,
    pub branches: Vec<Branch>,
    pub leaves: Vec<Leaf>,
    /// The number of branches on the longest root-to-leaf path.
    pub depth: u32,
}

/// `aggregate_function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// `post_transform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

/// The numeric type thresholds and weights are held and summed in: f32 for the float attributes,
/// f64 for `*_as_tensor` doubles and double `nodes_splits`. The reference implementation sums in
/// this type, so the engine does too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F64,
}

/// Class labels of a classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassLabels {
    Int64(Vec<i64>),
    Strings(Vec<String>),
}

impl ClassLabels {
    pub fn len(&self) -> usize {
        match self {
            ClassLabels::Int64(v) => v.len(),
            ClassLabels::Strings(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the operator returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `TreeEnsembleClassifier`: labels `[N]` and scores `[N, classes]`.
    Classifier(ClassLabels),
    /// `TreeEnsembleRegressor`: scores `[N, targets]`, f32.
    Regressor,
    /// `TreeEnsemble` (opset 5): scores `[N, targets]` in the input's type.
    V5,
}

/// A checked ensemble, ready to compile.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    pub trees: Vec<Tree>,
    /// Targets (regressors) or classes (classifiers).
    pub n_targets: usize,
    /// One more than the highest feature id any branch reads: the least row width accepted.
    pub n_features: usize,
    pub aggregate: Aggregate,
    pub post_transform: PostTransform,
    pub base_values: Vec<f64>,
    pub precision: Precision,
    pub output: Output,
    /// Value sets of `Mode::Member` branches.
    pub member_sets: Vec<Vec<f64>>,
}

/// Node modes of the flat layout, by their spec names.
pub fn parse_mode(name: &str) -> Result<Option<Mode>, TreeError> {
    Ok(Some(match name {
        "BRANCH_LEQ" => Mode::Leq,
        "BRANCH_LT" => Mode::Lt,
        "BRANCH_GTE" => Mode::Gte,
        "BRANCH_GT" => Mode::Gt,
        "BRANCH_EQ" => Mode::Eq,
        "BRANCH_NEQ" => Mode::Neq,
        "LEAF" => return Ok(None),
        other => {
            return Err(TreeError::Attribute {
                name: "nodes_modes".into(),
                reason: format!("unknown node mode {other:?}"),
            })
        }
    }))
}

pub fn parse_post_transform(name: &str) -> Result<PostTransform, TreeError> {
    Ok(match name {
        "NONE" => PostTransform::None,
        "SOFTMAX" => PostTransform::Softmax,
        "LOGISTIC" => PostTransform::Logistic,
        "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
        "PROBIT" => PostTransform::Probit,
        other => {
            return Err(TreeError::Attribute {
                name: "post_transform".into(),
                reason: format!("unknown post transform {other:?}"),
            })
        }
    })
}

pub fn parse_aggregate(name: &str) -> Result<Aggregate, TreeError> {
    Ok(match name {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => {
            return Err(TreeError::Attribute {
                name: "aggregate_function".into(),
                reason: format!("unknown aggregate function {other:?}"),
            })
        }
    })
}

fn length_error(name: &str, found: usize, expected: usize, of: &str) -> TreeError {
    TreeError::Attribute {
        name: name.into(),
        reason: format!("has {found} values, {of} has {expected}"),
    }
}

fn check_len(name: &str, found: usize, expected: usize, of: &str) -> Result<(), TreeError> {
    if found == expected {
        Ok(())
    } else {
        Err(length_error(name, found, expected, of))
    }
}

fn to_u32(name: &str, index: usize, value: i64) -> Result<u32, TreeError> {
    u32::try_from(value).map_err(|_| TreeError::Attribute {
        name: name.into(),
        reason: format!("value {value} at index {index} is not a valid id"),
    })
}

/// The flat attribute layout of `TreeEnsembleClassifier` / `TreeEnsembleRegressor` (opsets 1–3).
/// Leaf arrays are `class_*` for classifiers and `target_*` for regressors.
#[derive(Debug, Clone, Default)]
pub struct FlatEnsemble {
    pub nodes_treeids: Vec<i64>,
    pub nodes_nodeids: Vec<i64>,
    pub nodes_featureids: Vec<i64>,
    pub nodes_modes: Vec<String>,
    pub nodes_values: Vec<f64>,
    pub nodes_truenodeids: Vec<i64>,
    pub nodes_falsenodeids: Vec<i64>,
    /// Empty when the attribute is absent (every track false).
    pub nodes_missing_value_tracks_true: Vec<i64>,
    pub leaf_treeids: Vec<i64>,
    pub leaf_nodeids: Vec<i64>,
    pub leaf_targetids: Vec<i64>,
    pub leaf_weights: Vec<f64>,
    /// The leaf arrays' prefix, `class` or `target`, for error messages.
    pub leaf_prefix: &'static str,
}

/// A node still to place: its id, depth, and the parent slot (branch index, true side) to
/// patch, `None` for the root.
type Pending = (i64, u32, Option<(usize, bool)>);

/// A node of the flat layout before it is placed in a tree.
struct FlatNode {
    index: usize,
    mode: Option<Mode>,
}

impl FlatEnsemble {
    /// Builds the trees; `n_targets` bounds the leaf target ids.
    pub fn build(&self, n_targets: usize) -> Result<(Vec<Tree>, usize), TreeError> {
        let n = self.nodes_nodeids.len();
        if n == 0 {
            return Err(TreeError::Attribute {
                name: "nodes_nodeids".into(),
                reason: "the ensemble has no nodes".into(),
            });
        }
        let of = "nodes_nodeids";
        check_len("nodes_treeids", self.nodes_treeids.len(), n, of)?;
        check_len("nodes_featureids", self.nodes_featureids.len(), n, of)?;
        check_len("nodes_modes", self.nodes_modes.len(), n, of)?;
        check_len("nodes_values", self.nodes_values.len(), n, of)?;
        check_len("nodes_truenodeids", self.nodes_truenodeids.len(), n, of)?;
        check_len("nodes_falsenodeids", self.nodes_falsenodeids.len(), n, of)?;
        if !self.nodes_missing_value_tracks_true.is_empty() {
            check_len(
                "nodes_missing_value_tracks_true",
                self.nodes_missing_value_tracks_true.len(),
                n,
                of,
            )?;
        }
        let p = self.leaf_prefix;
        let leaf_ids = format!("{p}_ids");
        let m = self.leaf_targetids.len();
        check_len(
            &format!("{p}_treeids"),
            self.leaf_treeids.len(),
            m,
            &leaf_ids,
        )?;
        check_len(
            &format!("{p}_nodeids"),
            self.leaf_nodeids.len(),
            m,
            &leaf_ids,
        )?;
        check_len(
            &format!("{p}_weights"),
            self.leaf_weights.len(),
            m,
            &leaf_ids,
        )?;

        // Trees in order of first appearance; nodes keyed by (tree id, node id).
        let mut tree_order: Vec<i64> = Vec::new();
        let mut tree_index: HashMap<i64, usize> = HashMap::new();
        let mut nodes: Vec<HashMap<i64, FlatNode>> = Vec::new();
        for i in 0..n {
            let tree_id = self.nodes_treeids[i];
            let t = *tree_index.entry(tree_id).or_insert_with(|| {
                tree_order.push(tree_id);
                nodes.push(HashMap::new());
                nodes.len() - 1
            });
            let node_id = self.nodes_nodeids[i];
            let mode = parse_mode(&self.nodes_modes[i])?;
            if nodes[t]
                .insert(node_id, FlatNode { index: i, mode })
                .is_some()
            {
                return Err(TreeError::Tree {
                    tree: tree_id,
                    reason: format!("node id {node_id} appears twice"),
                });
            }
        }
        // Leaf weights, attached to (tree, node).
        let mut weights: Vec<HashMap<i64, Vec<(u32, f64)>>> = vec![HashMap::new(); nodes.len()];
        for j in 0..m {
            let tree_id = self.leaf_treeids[j];
            let node_id = self.leaf_nodeids[j];
            let t = *tree_index
                .get(&tree_id)
                .ok_or_else(|| TreeError::Attribute {
                    name: format!("{p}_treeids"),
                    reason: format!("weight {j} names tree {tree_id}, which has no nodes"),
                })?;
            match nodes[t].get(&node_id) {
                Some(FlatNode { mode: None, .. }) => {}
                Some(_) => {
                    return Err(TreeError::Tree {
                        tree: tree_id,
                        reason: format!("weight {j} is attached to node {node_id}, a branch"),
                    })
                }
                None => {
                    return Err(TreeError::Tree {
                        tree: tree_id,
                        reason: format!("weight {j} names node {node_id}, which does not exist"),
                    })
                }
            }
            let target = to_u32(&leaf_ids, j, self.leaf_targetids[j])?;
            if target as usize >= n_targets {
                return Err(TreeError::Attribute {
                    name: leaf_ids.clone(),
                    reason: format!(
                        "id {target} at index {j} is out of range: {n_targets} outputs"
                    ),
                });
            }
            weights[t]
                .entry(node_id)
                .or_default()
                .push((target, self.leaf_weights[j]));
        }

        let mut trees = Vec::with_capacity(nodes.len());
        let mut n_features = 0usize;
        for (t, tree_nodes) in nodes.iter().enumerate() {
            let tree_id = tree_order[t];
            let tree = self.build_tree(tree_id, tree_nodes, &mut weights[t])?;
            for b in &tree.branches {
                n_features = n_features.max(b.feature as usize + 1);
            }
            trees.push(tree);
        }
        Ok((trees, n_features))
    }

    fn build_tree(
        &self,
        tree_id: i64,
        nodes: &HashMap<i64, FlatNode>,
        weights: &mut HashMap<i64, Vec<(u32, f64)>>,
    ) -> Result<Tree, TreeError> {
        let tree_err = |reason: String| TreeError::Tree {
            tree: tree_id,
            reason,
        };
        // The root is the one node no branch points to.
        let mut has_parent: HashMap<i64, i64> = HashMap::new();
        for (&id, node) in nodes {
            if node.mode.is_none() {
                continue;
            }
            for child in [
                self.nodes_truenodeids[node.index],
                self.nodes_falsenodeids[node.index],
            ] {
                if !nodes.contains_key(&child) {
                    return Err(tree_err(format!(
                        "node {id} points to node {child}, which does not exist"
                    )));
                }
                if child == id {
                    return Err(tree_err(format!("node {id} points to itself")));
                }
                if let Some(other) = has_parent.insert(child, id) {
                    if other != id {
                        return Err(tree_err(format!(
                            "node {child} has two parents, {other} and {id}: not a tree"
                        )));
                    }
                    return Err(tree_err(format!(
                        "node {id} points to node {child} on both branches"
                    )));
                }
            }
        }
        let mut roots: Vec<i64> = nodes
            .keys()
            .filter(|id| !has_parent.contains_key(id))
            .copied()
            .collect();
        roots.sort_unstable();
        let root = match roots.as_slice() {
            [root] => *root,
            [] => return Err(tree_err("has no root: its nodes form a cycle".into())),
            several => {
                return Err(tree_err(format!(
                    "has {} roots (nodes {:?}): not one tree",
                    several.len(),
                    several
                )))
            }
        };

        // Depth-first from the root; every node is reached at most once (one parent each), and
        // every node must be reached (else it hangs in a cycle apart from the root).
        let mut tree = Tree {
            root: Child::Leaf(0),
            branches: Vec::new(),
            leaves: Vec::new(),
            depth: 0,
        };
        let mut reached = 0usize;
        // (node id, depth, where to write the child reference: (branch index, is_true) or root)
        let mut stack: Vec<Pending> = vec![(root, 0, None)];
        while let Some((id, depth, slot)) = stack.pop() {
            reached += 1;
            let node = &nodes[&id];
            let child = match node.mode {
                None => {
                    let leaf = Leaf {
                        weights: weights.remove(&id).unwrap_or_default(),
                    };
                    tree.leaves.push(leaf);
                    tree.depth = tree.depth.max(depth);
                    Child::Leaf((tree.leaves.len() - 1) as u32)
                }
                Some(mode) => {
                    let i = node.index;
                    let feature = to_u32("nodes_featureids", i, self.nodes_featureids[i])?;
                    let missing_true = self
                        .nodes_missing_value_tracks_true
                        .get(i)
                        .is_some_and(|&v| v != 0);
                    tree.branches.push(Branch {
                        feature,
                        mode,
                        threshold: self.nodes_values[i],
                        missing_true,
                        if_true: Child::Leaf(u32::MAX),
                        if_false: Child::Leaf(u32::MAX),
                    });
                    let b = tree.branches.len() - 1;
                    stack.push((self.nodes_falsenodeids[i], depth + 1, Some((b, false))));
                    stack.push((self.nodes_truenodeids[i], depth + 1, Some((b, true))));
                    Child::Branch(b as u32)
                }
            };
            match slot {
                None => tree.root = child,
                Some((b, true)) => tree.branches[b].if_true = child,
                Some((b, false)) => tree.branches[b].if_false = child,
            }
        }
        if reached != nodes.len() {
            return Err(tree_err(format!(
                "{} of its {} nodes are not reachable from root {root}: they form a cycle",
                nodes.len() - reached,
                nodes.len()
            )));
        }
        Ok(tree)
    }
}

/// The attribute layout of `TreeEnsemble` (ai.onnx.ml opset 5).
#[derive(Debug, Clone, Default)]
pub struct V5Ensemble {
    pub tree_roots: Vec<i64>,
    pub nodes_featureids: Vec<i64>,
    /// Mode codes: 0 LEQ, 1 LT, 2 GTE, 3 GT, 4 EQ, 5 NEQ, 6 MEMBER.
    pub nodes_modes: Vec<i64>,
    pub nodes_splits: Vec<f64>,
    pub nodes_truenodeids: Vec<i64>,
    pub nodes_trueleafs: Vec<i64>,
    pub nodes_falsenodeids: Vec<i64>,
    pub nodes_falseleafs: Vec<i64>,
    pub nodes_missing_value_tracks_true: Vec<i64>,
    pub leaf_targetids: Vec<i64>,
    pub leaf_weights: Vec<f64>,
    /// Sets of `BRANCH_MEMBER` nodes, in node order, each ended by NaN.
    pub membership_values: Vec<f64>,
}

impl V5Ensemble {
    /// Builds the trees and the member sets; `n_targets` bounds the leaf target ids.
    #[allow(clippy::type_complexity)]
    pub fn build(&self, n_targets: usize) -> Result<(Vec<Tree>, usize, Vec<Vec<f64>>), TreeError> {
        let n = self.nodes_featureids.len();
        let of = "nodes_featureids";
        check_len("nodes_modes", self.nodes_modes.len(), n, of)?;
        check_len("nodes_splits", self.nodes_splits.len(), n, of)?;
        check_len("nodes_truenodeids", self.nodes_truenodeids.len(), n, of)?;
        check_len("nodes_trueleafs", self.nodes_trueleafs.len(), n, of)?;
        check_len("nodes_falsenodeids", self.nodes_falsenodeids.len(), n, of)?;
        check_len("nodes_falseleafs", self.nodes_falseleafs.len(), n, of)?;
        if !self.nodes_missing_value_tracks_true.is_empty() {
            check_len(
                "nodes_missing_value_tracks_true",
                self.nodes_missing_value_tracks_true.len(),
                n,
                of,
            )?;
        }
        let m = self.leaf_targetids.len();
        check_len("leaf_weights", self.leaf_weights.len(), m, "leaf_targetids")?;
        if self.tree_roots.is_empty() {
            return Err(TreeError::Attribute {
                name: "tree_roots".into(),
                reason: "the ensemble has no trees".into(),
            });
        }

        // Member sets, in the order of the MEMBER nodes.
        let mut sets: Vec<Vec<f64>> = Vec::new();
        let mut current = Vec::new();
        for &v in &self.membership_values {
            if v.is_nan() {
                sets.push(std::mem::take(&mut current));
            } else {
                current.push(v);
            }
        }
        if !current.is_empty() {
            sets.push(current);
        }
        let mut modes = Vec::with_capacity(n);
        let mut member = 0u32;
        for (i, &code) in self.nodes_modes.iter().enumerate() {
            modes.push(match code {
                0 => Mode::Leq,
                1 => Mode::Lt,
                2 => Mode::Gte,
                3 => Mode::Gt,
                4 => Mode::Eq,
                5 => Mode::Neq,
                6 => {
                    member += 1;
                    if member as usize > sets.len() {
                        return Err(TreeError::Attribute {
                            name: "membership_values".into(),
                            reason: format!(
                                "node {i} is BRANCH_MEMBER number {member}, but only {} sets are given",
                                sets.len()
                            ),
                        });
                    }
                    Mode::Member(member - 1)
                }
                other => {
                    return Err(TreeError::Attribute {
                        name: "nodes_modes".into(),
                        reason: format!("unknown mode code {other} at node {i}"),
                    })
                }
            });
        }
        let mut node_used = vec![false; n];
        let mut trees = Vec::with_capacity(self.tree_roots.len());
        let mut n_features = 0usize;
        for (t, &root) in self.tree_roots.iter().enumerate() {
            let tree_err = |reason: String| TreeError::Tree {
                tree: t as i64,
                reason,
            };
            let mut tree = Tree {
                root: Child::Leaf(0),
                branches: Vec::new(),
                leaves: Vec::new(),
                depth: 0,
            };
            // (global node index, depth, slot)
            let mut stack: Vec<(i64, bool, u32, Option<(usize, bool)>)> =
                vec![(root, false, 0, None)];
            while let Some((id, is_leaf, depth, slot)) = stack.pop() {
                let child = if is_leaf {
                    let j = usize::try_from(id).ok().filter(|&j| j < m).ok_or_else(|| {
                        tree_err(format!("points to leaf {id}, which does not exist"))
                    })?;
                    // A leaf may be reached twice: the spec writes a one-leaf tree as a root
                    // whose both branches lead to the same leaf. Leaves end paths, so sharing
                    // one cannot make a cycle.
                    let target = to_u32("leaf_targetids", j, self.leaf_targetids[j])?;
                    if target as usize >= n_targets {
                        return Err(TreeError::Attribute {
                            name: "leaf_targetids".into(),
                            reason: format!(
                                "id {target} at index {j} is out of range: {n_targets} targets"
                            ),
                        });
                    }
                    tree.leaves.push(Leaf {
                        weights: vec![(target, self.leaf_weights[j])],
                    });
                    tree.depth = tree.depth.max(depth);
                    Child::Leaf((tree.leaves.len() - 1) as u32)
                } else {
                    let i = usize::try_from(id).ok().filter(|&i| i < n).ok_or_else(|| {
                        tree_err(format!("points to node {id}, which does not exist"))
                    })?;
                    if std::mem::replace(&mut node_used[i], true) {
                        return Err(tree_err(format!(
                            "node {i} is reached twice: a cycle or a shared subtree"
                        )));
                    }
                    let feature = to_u32("nodes_featureids", i, self.nodes_featureids[i])?;
                    n_features = n_features.max(feature as usize + 1);
                    tree.branches.push(Branch {
                        feature,
                        mode: modes[i],
                        threshold: self.nodes_splits[i],
                        missing_true: self
                            .nodes_missing_value_tracks_true
                            .get(i)
                            .is_some_and(|&v| v != 0),
                        if_true: Child::Leaf(u32::MAX),
                        if_false: Child::Leaf(u32::MAX),
                    });
                    let b = tree.branches.len() - 1;
                    stack.push((
                        self.nodes_falsenodeids[i],
                        self.nodes_falseleafs[i] != 0,
                        depth + 1,
                        Some((b, false)),
                    ));
                    stack.push((
                        self.nodes_truenodeids[i],
                        self.nodes_trueleafs[i] != 0,
                        depth + 1,
                        Some((b, true)),
                    ));
                    Child::Branch(b as u32)
                };
                match slot {
                    None => tree.root = child,
                    Some((b, true)) => tree.branches[b].if_true = child,
                    Some((b, false)) => tree.branches[b].if_false = child,
                }
            }
            trees.push(tree);
        }
        Ok((trees, n_features, sets))
    }
}
