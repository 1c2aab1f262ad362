//! Reading the tree operators' attributes from an ONNX `NodeProto` into an [`Ensemble`].
//!
//! Attribute names and defaults are those of the ai.onnx.ml operator specification:
//! `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (opsets 1 and 3; opset 3 adds the
//! `*_as_tensor` forms, which take precedence and may be doubles) and `TreeEnsemble` (opset 5).

use crate::ensemble::{
    parse_aggregate, parse_post_transform, Aggregate, ClassLabels, Ensemble, FlatEnsemble, Output,
    PostTransform, Precision, Tree, V5Ensemble,
};
use crate::TreeError;
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &NodeProto, name: &str) -> Vec<i64> {
    attr(node, name).map(|a| a.ints.clone()).unwrap_or_default()
}

fn floats(node: &NodeProto, name: &str) -> Vec<f64> {
    attr(node, name)
        .map(|a| a.floats.iter().map(|&v| v as f64).collect())
        .unwrap_or_default()
}

fn strings(node: &NodeProto, name: &str) -> Result<Vec<String>, TreeError> {
    let Some(a) = attr(node, name) else {
        return Ok(Vec::new());
    };
    a.strings
        .iter()
        .map(|s| {
            String::from_utf8(s.clone()).map_err(|_| TreeError::Attribute {
                name: name.into(),
                reason: "a value is not UTF-8".into(),
            })
        })
        .collect()
}

fn string(node: &NodeProto, name: &str, default: &str) -> Result<String, TreeError> {
    match attr(node, name) {
        None => Ok(default.into()),
        Some(a) => String::from_utf8(a.s.clone()).map_err(|_| TreeError::Attribute {
            name: name.into(),
            reason: "the value is not UTF-8".into(),
        }),
    }
}

fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

/// ONNX `TensorProto.DataType` codes used here.
const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT32: i32 = 6;
const INT64: i32 = 7;
const DOUBLE: i32 = 11;

/// A tensor attribute's values, widened to f64, and whether they were doubles.
fn tensor_values(name: &str, t: &TensorProto) -> Result<(Vec<f64>, bool), TreeError> {
    let err = |reason: String| TreeError::Attribute {
        name: name.into(),
        reason,
    };
    if t.data_location == Some(1) {
        return Err(err("external tensor data is not supported".into()));
    }
    let raw = &t.raw_data;
    let from_raw = |width: usize| -> Result<Vec<&[u8]>, TreeError> {
        if raw.len() % width != 0 {
            return Err(err(format!(
                "raw data of {} bytes is not a whole number of {width}-byte values",
                raw.len()
            )));
        }
        Ok(raw.chunks_exact(width).collect())
    };
    let values: Vec<f64> = match t.data_type {
        FLOAT if !raw.is_empty() => from_raw(4)?
            .into_iter()
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        FLOAT => t.float_data.iter().map(|&v| v as f64).collect(),
        DOUBLE if !raw.is_empty() => from_raw(8)?
            .into_iter()
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        DOUBLE => t.double_data.clone(),
        UINT8 if !raw.is_empty() => raw.iter().map(|&b| b as f64).collect(),
        UINT8 | INT32 => t.int32_data.iter().map(|&v| v as f64).collect(),
        INT64 if !raw.is_empty() => from_raw(8)?
            .into_iter()
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64)
            .collect(),
        INT64 => t.int64_data.iter().map(|&v| v as f64).collect(),
        other => return Err(err(format!("tensor element type {other} is not supported"))),
    };
    Ok((values, t.data_type == DOUBLE))
}

/// `name_as_tensor` when present (opset 3), else the float list `name`; and whether doubles.
fn values(node: &NodeProto, name: &str) -> Result<(Vec<f64>, bool), TreeError> {
    let tensor_name = format!("{name}_as_tensor");
    match attr(node, &tensor_name).and_then(|a| a.t.as_ref()) {
        Some(t) => {
            if attr(node, name).is_some_and(|a| !a.floats.is_empty()) {
                return Err(TreeError::Attribute {
                    name: tensor_name,
                    reason: format!("given together with {name}; only one is allowed"),
                });
            }
            tensor_values(&tensor_name, t)
        }
        None => Ok((floats(node, name), false)),
    }
}

fn check_base_values(base: &[f64], n: usize) -> Result<(), TreeError> {
    let ok = base.is_empty() || base.len() == n || (base.len() == 1 && n <= 2);
    if ok {
        Ok(())
    } else {
        Err(TreeError::Attribute {
            name: "base_values".into(),
            reason: format!("has {} values for {n} outputs", base.len()),
        })
    }
}

/// What the flat layout of opsets 1–3 yields, for a classifier or a regressor alike.
struct Flat {
    trees: Vec<Tree>,
    n_features: usize,
    base_values: Vec<f64>,
    precision: Precision,
}

/// Reads the `nodes_*`, leaf (`class_*` or `target_*`, by `prefix`) and `base_values`
/// attributes and builds the trees; `n_outputs` bounds the leaf target ids.
fn read_flat(node: &NodeProto, prefix: &'static str, n_outputs: usize) -> Result<Flat, TreeError> {
    let (nodes_values, d1) = values(node, "nodes_values")?;
    let (weights, d2) = values(node, &format!("{prefix}_weights"))?;
    let (base_values, d3) = values(node, "base_values")?;
    check_base_values(&base_values, n_outputs)?;
    let flat = FlatEnsemble {
        nodes_treeids: ints(node, "nodes_treeids"),
        nodes_nodeids: ints(node, "nodes_nodeids"),
        nodes_featureids: ints(node, "nodes_featureids"),
        nodes_modes: strings(node, "nodes_modes")?,
        nodes_values,
        nodes_truenodeids: ints(node, "nodes_truenodeids"),
        nodes_falsenodeids: ints(node, "nodes_falsenodeids"),
        nodes_missing_value_tracks_true: ints(node, "nodes_missing_value_tracks_true"),
        leaf_treeids: ints(node, &format!("{prefix}_treeids")),
        leaf_nodeids: ints(node, &format!("{prefix}_nodeids")),
        leaf_targetids: ints(node, &format!("{prefix}_ids")),
        leaf_weights: weights,
        leaf_prefix: prefix,
    };
    let (trees, n_features) = flat.build(n_outputs)?;
    Ok(Flat {
        trees,
        n_features,
        base_values,
        // The reference sums in double when any of these attributes is a double tensor.
        precision: if d1 || d2 || d3 {
            Precision::F64
        } else {
            Precision::F32
        },
    })
}

/// `TreeEnsembleClassifier`.
pub fn classifier(node: &NodeProto) -> Result<Ensemble, TreeError> {
    let int_labels = ints(node, "classlabels_int64s");
    let string_labels = strings(node, "classlabels_strings")?;
    let labels = match (int_labels.is_empty(), string_labels.is_empty()) {
        (false, true) => ClassLabels::Int64(int_labels),
        (true, false) => ClassLabels::Strings(string_labels),
        (true, true) => {
            return Err(TreeError::Attribute {
                name: "classlabels_int64s".into(),
                reason: "neither classlabels_int64s nor classlabels_strings is given".into(),
            })
        }
        (false, false) => {
            return Err(TreeError::Attribute {
                name: "classlabels_strings".into(),
                reason: "given together with classlabels_int64s; only one is allowed".into(),
            })
        }
    };
    let n_classes = labels.len();
    if n_classes < 2 {
        return Err(TreeError::Attribute {
            name: "classlabels".into(),
            reason: format!("{n_classes} class label; a classifier needs at least 2"),
        });
    }
    let flat = read_flat(node, "class", n_classes)?;
    Ok(Ensemble {
        trees: flat.trees,
        n_targets: n_classes,
        n_features: flat.n_features,
        aggregate: Aggregate::Sum,
        post_transform: parse_post_transform(&string(node, "post_transform", "NONE")?)?,
        base_values: flat.base_values,
        precision: flat.precision,
        output: Output::Classifier(labels),
        member_sets: Vec::new(),
    })
}

/// `TreeEnsembleRegressor`.
pub fn regressor(node: &NodeProto) -> Result<Ensemble, TreeError> {
    let n_targets = int(node, "n_targets", 1);
    let n_targets = usize::try_from(n_targets)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| TreeError::Attribute {
            name: "n_targets".into(),
            reason: format!("{n_targets} is not a positive count"),
        })?;
    let flat = read_flat(node, "target", n_targets)?;
    Ok(Ensemble {
        trees: flat.trees,
        n_targets,
        n_features: flat.n_features,
        aggregate: parse_aggregate(&string(node, "aggregate_function", "SUM")?)?,
        post_transform: parse_post_transform(&string(node, "post_transform", "NONE")?)?,
        base_values: flat.base_values,
        precision: flat.precision,
        output: Output::Regressor,
        member_sets: Vec::new(),
    })
}

/// A required tensor attribute of `TreeEnsemble`.
fn tensor(node: &NodeProto, name: &str) -> Result<(Vec<f64>, bool), TreeError> {
    match attr(node, name).and_then(|a| a.t.as_ref()) {
        Some(t) => tensor_values(name, t),
        None => Err(TreeError::Attribute {
            name: name.into(),
            reason: "required tensor attribute is missing".into(),
        }),
    }
}

/// `TreeEnsemble` (ai.onnx.ml opset 5).
pub fn tree_ensemble(node: &NodeProto) -> Result<Ensemble, TreeError> {
    let n_targets = int(node, "n_targets", 0);
    let n_targets = usize::try_from(n_targets)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| TreeError::Attribute {
            name: "n_targets".into(),
            reason: format!("{n_targets} is not a positive count"),
        })?;
    let (splits, double) = tensor(node, "nodes_splits")?;
    let (leaf_weights, _) = tensor(node, "leaf_weights")?;
    let (modes, _) = tensor(node, "nodes_modes")?;
    let membership_values = match attr(node, "membership_values").and_then(|a| a.t.as_ref()) {
        Some(t) => tensor_values("membership_values", t)?.0,
        None => Vec::new(),
    };
    let aggregate = match int(node, "aggregate_function", 1) {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        other => {
            return Err(TreeError::Attribute {
                name: "aggregate_function".into(),
                reason: format!("unknown code {other}"),
            })
        }
    };
    let post_transform = match int(node, "post_transform", 0) {
        0 => PostTransform::None,
        // The spec numbers SOFTMAX 1 and LOGISTIC 2; ONNX Runtime, the reference, reads them
        // the other way round (it casts the integer to its own enum). Models validated against
        // it get what their authors saw; docs/architecture.md lists every such choice.
        1 => PostTransform::Logistic,
        2 => PostTransform::Softmax,
        3 => PostTransform::SoftmaxZero,
        4 => PostTransform::Probit,
        other => {
            return Err(TreeError::Attribute {
                name: "post_transform".into(),
                reason: format!("unknown code {other}"),
            })
        }
    };
    let v5 = V5Ensemble {
        tree_roots: ints(node, "tree_roots"),
        nodes_featureids: ints(node, "nodes_featureids"),
        nodes_modes: modes.iter().map(|&m| m as i64).collect(),
        nodes_splits: splits,
        nodes_truenodeids: ints(node, "nodes_truenodeids"),
        nodes_trueleafs: ints(node, "nodes_trueleafs"),
        nodes_falsenodeids: ints(node, "nodes_falsenodeids"),
        nodes_falseleafs: ints(node, "nodes_falseleafs"),
        nodes_missing_value_tracks_true: ints(node, "nodes_missing_value_tracks_true"),
        leaf_targetids: ints(node, "leaf_targetids"),
        leaf_weights,
        membership_values,
    };
    let (trees, n_features, member_sets) = v5.build(n_targets)?;
    Ok(Ensemble {
        trees,
        n_targets,
        n_features,
        aggregate,
        post_transform,
        base_values: Vec::new(),
        precision: if double {
            Precision::F64
        } else {
            Precision::F32
        },
        output: Output::V5,
        member_sets,
    })
}
