//! Malformed ensembles fail at load with an error naming what is wrong; nothing reaches
//! inference. Each test starts from a valid two-tree regressor and breaks one thing.

mod common;

use common::{floats, ints, string, strings};
use cordon_trees::{onnx, CompiledEnsemble, TreeError};
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

/// Tree 0: node 0 (x0 <= 0.5) → leaves 1 (weight 1) / 2 (weight 2).
/// Tree 1: node 0 (x1 < 1.5) → leaves 1 (weight 10) / 2 (weight 20).
fn regressor() -> NodeProto {
    NodeProto {
        op_type: "TreeEnsembleRegressor".into(),
        attribute: vec![
            ints("n_targets", &[]),
            ints("nodes_treeids", &[0, 0, 0, 1, 1, 1]),
            ints("nodes_nodeids", &[0, 1, 2, 0, 1, 2]),
            ints("nodes_featureids", &[0, 0, 0, 1, 0, 0]),
            strings(
                "nodes_modes",
                &["BRANCH_LEQ", "LEAF", "LEAF", "BRANCH_LT", "LEAF", "LEAF"],
            ),
            floats("nodes_values", &[0.5, 0.0, 0.0, 1.5, 0.0, 0.0]),
            ints("nodes_truenodeids", &[1, 0, 0, 1, 0, 0]),
            ints("nodes_falsenodeids", &[2, 0, 0, 2, 0, 0]),
            ints("target_treeids", &[0, 0, 1, 1]),
            ints("target_nodeids", &[1, 2, 1, 2]),
            ints("target_ids", &[0, 0, 0, 0]),
            floats("target_weights", &[1.0, 2.0, 10.0, 20.0]),
        ]
        .into_iter()
        .map(|mut a| {
            if a.name == "n_targets" {
                a.i = 1;
            }
            a
        })
        .collect(),
        ..Default::default()
    }
}

fn with(node: NodeProto, attr: AttributeProto) -> NodeProto {
    let mut node = node;
    node.attribute.retain(|a| a.name != attr.name);
    node.attribute.push(attr);
    node
}

fn error_of(node: NodeProto) -> TreeError {
    onnx::regressor(&node)
        .and_then(CompiledEnsemble::new)
        .expect_err("must be rejected")
}

fn eval(node: NodeProto, rows: &[f32], n_cols: usize) -> Vec<f32> {
    let compiled = CompiledEnsemble::new(onnx::regressor(&node).unwrap()).unwrap();
    let mut out = vec![0f32; rows.len() / n_cols];
    compiled
        .eval_f32(rows, n_cols, &mut out, &mut [], false)
        .unwrap();
    let mut generic = vec![0f32; rows.len() / n_cols];
    compiled
        .eval_f32(rows, n_cols, &mut generic, &mut [], true)
        .unwrap();
    assert_eq!(out, generic, "fast and generic walkers disagree");
    out
}

#[test]
fn the_valid_base_evaluates() {
    // x0 <= 0.5 → 1 else 2; x1 < 1.5 → 10 else 20
    let rows = [0.5, 1.4, 0.6, 1.5, f32::NAN, f32::NAN];
    assert_eq!(eval(regressor(), &rows, 2), vec![11.0, 22.0, 22.0]);
}

#[test]
fn dangling_child_is_rejected() {
    let e = error_of(with(
        regressor(),
        ints("nodes_truenodeids", &[7, 0, 0, 1, 0, 0]),
    ));
    assert!(
        matches!(&e, TreeError::Tree { tree: 0, reason } if reason.contains("node 7, which does not exist")),
        "{e}"
    );
}

#[test]
fn cycle_is_rejected() {
    // Tree 0 gains nodes 3 and 4 pointing at each other (leaves 5 and 6 on their other sides):
    // root 0 is still the only parentless node, and 3, 4, 5, 6 hang in a cycle apart from it.
    let node = regressor();
    let node = with(node, ints("nodes_treeids", &[0, 0, 0, 0, 0, 0, 0, 1, 1, 1]));
    let node = with(node, ints("nodes_nodeids", &[0, 1, 2, 3, 4, 5, 6, 0, 1, 2]));
    let node = with(node, ints("nodes_featureids", &[0; 10]));
    let node = with(
        node,
        strings(
            "nodes_modes",
            &[
                "BRANCH_LEQ",
                "LEAF",
                "LEAF",
                "BRANCH_LEQ",
                "BRANCH_LEQ",
                "LEAF",
                "LEAF",
                "BRANCH_LT",
                "LEAF",
                "LEAF",
            ],
        ),
    );
    let node = with(node, floats("nodes_values", &[0.5; 10]));
    let node = with(
        node,
        ints("nodes_truenodeids", &[1, 0, 0, 4, 3, 0, 0, 1, 0, 0]),
    );
    let node = with(
        node,
        ints("nodes_falsenodeids", &[2, 0, 0, 5, 6, 0, 0, 2, 0, 0]),
    );
    let e = error_of(node);
    assert_eq!(
        e,
        TreeError::Tree {
            tree: 0,
            reason: "4 of its 7 nodes are not reachable from root 0: they form a cycle".into()
        }
    );
}

#[test]
fn self_loop_is_rejected() {
    let e = error_of(with(
        regressor(),
        ints("nodes_falsenodeids", &[0, 0, 0, 2, 0, 0]),
    ));
    assert!(e.to_string().contains("points to itself"), "{e}");
}

#[test]
fn two_roots_are_rejected() {
    // Node 2 of tree 0 loses its parent: node 0 now points to 1 on both sides.
    let e = error_of(with(
        regressor(),
        ints("nodes_falsenodeids", &[1, 0, 0, 2, 0, 0]),
    ));
    assert!(e.to_string().contains("both branches"), "{e}");
}

#[test]
fn inconsistent_attribute_lengths_are_rejected() {
    let e = error_of(with(regressor(), floats("nodes_values", &[0.5, 0.0])));
    assert_eq!(
        e,
        TreeError::Attribute {
            name: "nodes_values".into(),
            reason: "has 2 values, nodes_nodeids has 6".into()
        }
    );
    let e = error_of(with(regressor(), floats("target_weights", &[1.0])));
    assert!(e.to_string().contains("target_weights"), "{e}");
}

#[test]
fn target_out_of_range_is_rejected() {
    let e = error_of(with(regressor(), ints("target_ids", &[0, 0, 3, 0])));
    assert!(e.to_string().contains("out of range"), "{e}");
}

#[test]
fn negative_feature_id_is_rejected() {
    let e = error_of(with(
        regressor(),
        ints("nodes_featureids", &[-1, 0, 0, 1, 0, 0]),
    ));
    assert!(e.to_string().contains("nodes_featureids"), "{e}");
}

#[test]
fn weight_on_a_branch_is_rejected() {
    let e = error_of(with(regressor(), ints("target_nodeids", &[0, 2, 1, 2])));
    assert!(e.to_string().contains("a branch"), "{e}");
}

#[test]
fn unknown_mode_and_transform_are_rejected() {
    let e = error_of(with(
        regressor(),
        strings(
            "nodes_modes",
            &["BRANCH_XX", "LEAF", "LEAF", "BRANCH_LT", "LEAF", "LEAF"],
        ),
    ));
    assert!(e.to_string().contains("BRANCH_XX"), "{e}");
    let e = error_of(with(regressor(), string("post_transform", "SQUARE")));
    assert!(e.to_string().contains("SQUARE"), "{e}");
    let e = error_of(with(regressor(), string("aggregate_function", "MEDIAN")));
    assert!(e.to_string().contains("MEDIAN"), "{e}");
}

#[test]
fn empty_ensemble_is_rejected() {
    let mut node = regressor();
    for a in &mut node.attribute {
        a.ints.clear();
        a.floats.clear();
        a.strings.clear();
    }
    node.attribute.retain(|a| a.name != "n_targets");
    let e = error_of(node);
    assert!(e.to_string().contains("no nodes"), "{e}");
}

#[test]
fn rows_narrower_than_the_features_read_are_refused_at_inference() {
    let compiled = CompiledEnsemble::new(onnx::regressor(&regressor()).unwrap()).unwrap();
    let mut out = vec![0f32; 2];
    let e = compiled
        .eval_f32(&[0.0, 1.0], 1, &mut out, &mut [], false)
        .unwrap_err();
    assert!(matches!(e, TreeError::Input(_)), "{e}");
}

#[test]
fn v5_cycle_and_dangling_leaf_are_rejected() {
    let tensor_f = |name: &str, v: &[f32]| AttributeProto {
        name: name.into(),
        t: Some(TensorProto {
            data_type: 1,
            dims: vec![v.len() as i64],
            float_data: v.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tensor_u8 = |name: &str, v: &[i32]| AttributeProto {
        name: name.into(),
        t: Some(TensorProto {
            data_type: 2,
            dims: vec![v.len() as i64],
            int32_data: v.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut n_targets = ints("n_targets", &[]);
    n_targets.i = 1;
    // node 0 → node 1 (true) / leaf 0; node 1 → node 0 (true: a cycle) / leaf 1
    let node = NodeProto {
        op_type: "TreeEnsemble".into(),
        attribute: vec![
            n_targets,
            ints("tree_roots", &[0]),
            ints("nodes_featureids", &[0, 0]),
            tensor_u8("nodes_modes", &[0, 0]),
            tensor_f("nodes_splits", &[0.5, 1.5]),
            ints("nodes_truenodeids", &[1, 0]),
            ints("nodes_trueleafs", &[0, 0]),
            ints("nodes_falsenodeids", &[0, 1]),
            ints("nodes_falseleafs", &[1, 1]),
            ints("leaf_targetids", &[0, 0]),
            tensor_f("leaf_weights", &[1.0, 2.0]),
        ],
        ..Default::default()
    };
    let e = onnx::tree_ensemble(&node).unwrap_err();
    assert!(e.to_string().contains("reached twice"), "{e}");
    let node = with(node, ints("nodes_truenodeids", &[1, 5]));
    let node = with(node, ints("nodes_trueleafs", &[0, 1]));
    let e = onnx::tree_ensemble(&node).unwrap_err();
    assert!(
        e.to_string().contains("leaf 5, which does not exist"),
        "{e}"
    );
}
