//! Fitted models as ONNX-ML graphs, with the interface of every other Cordon classifier:
//!
//! - input `input`: float32 `[N, n_features]` (N symbolic), raw features in schema order;
//! - output `label`: int64 `[N]`, 1 when the probability of class 1 exceeds 0.5;
//! - output `probabilities`: float32 `[N, 2]`, columns class 0 and class 1.
//!
//! Opsets: ai.onnx 13 and ai.onnx.ml 3; IR version 8. One node each:
//!
//! - GBDT → `TreeEnsembleClassifier` laid out as skl2onnx exports a binary
//!   `GradientBoostingClassifier`: labels [0, 1], one target (class id 0) holding the raw score,
//!   `base_values` = the prior log-odds, leaf weights = learning rate × leaf value,
//!   `post_transform` LOGISTIC. ONNX Runtime (and `cordon-trees`, which follows it) completes
//!   such a one-column binary score to `[1 − p, p]`.
//! - Logistic regression → `LinearClassifier` with two coefficient rows `[0…0, w]`, intercepts
//!   `[0, b]` and SOFTMAX: `softmax(0, z) = [1 − σ(z), σ(z)]`; the label is the argmax, so 1
//!   exactly when z > 0. (Two explicit rows avoid ONNX Runtime's one-row binary layout, which
//!   ignores SOFTMAX.)

use crate::gbdt::{GbdtModel, Node};
use crate::linear::LogisticModel;
use crate::TrainedModel;
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, tensor_shape_proto::Dimension,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

const IR_VERSION: i64 = 8;
const ONNX_FLOAT: i32 = 1;
const ONNX_INT64: i32 = 7;

/// The model's ONNX bytes.
pub fn to_onnx(model: &TrainedModel) -> Vec<u8> {
    to_proto(model).encode_to_vec()
}

/// The model as an ONNX `ModelProto`.
pub fn to_proto(model: &TrainedModel) -> ModelProto {
    let (node, n_features) = match model {
        TrainedModel::Gbdt(m) => (tree_node(m), m.n_features),
        TrainedModel::LogisticRegression(m) => (linear_node(m), m.coefficients.len()),
    };
    let graph = GraphProto {
        node: vec![node],
        name: format!("cordon_train_{}", model.algorithm_name()),
        input: vec![value_info(
            "input",
            ONNX_FLOAT,
            &[Dim::Param("N"), Dim::Value(n_features as i64)],
        )],
        output: vec![
            value_info("label", ONNX_INT64, &[Dim::Param("N")]),
            value_info(
                "probabilities",
                ONNX_FLOAT,
                &[Dim::Param("N"), Dim::Value(2)],
            ),
        ],
        ..Default::default()
    };
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            },
            OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 3,
            },
        ],
        producer_name: "cordon-train".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: vec![StringStringEntryProto {
            key: "cordon_algorithm".into(),
            value: model.algorithm_name().into(),
        }],
        ..Default::default()
    }
}

enum Dim {
    Param(&'static str),
    Value(i64),
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Param(p) => dimension::Value::DimParam((*p).into()),
                Dim::Value(v) => dimension::Value::DimValue(*v),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v,
        ..Default::default()
    }
}

fn floats(name: &str, v: Vec<f32>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Floats as i32,
        floats: v,
        ..Default::default()
    }
}

fn strings(name: &str, v: Vec<&str>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Strings as i32,
        strings: v.into_iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn ml_node(op_type: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: vec!["input".into()],
        output: vec!["label".into(), "probabilities".into()],
        name: op_type.into(),
        op_type: op_type.into(),
        domain: "ai.onnx.ml".into(),
        attribute,
        ..Default::default()
    }
}

fn tree_node(m: &GbdtModel) -> NodeProto {
    let mut treeids = Vec::new();
    let mut nodeids = Vec::new();
    let mut featureids = Vec::new();
    let mut modes = Vec::new();
    let mut values = Vec::new();
    let mut trues = Vec::new();
    let mut falses = Vec::new();
    let mut class_treeids = Vec::new();
    let mut class_nodeids = Vec::new();
    let mut class_weights = Vec::new();
    for (t, tree) in m.trees.iter().enumerate() {
        for (id, node) in tree.nodes.iter().enumerate() {
            treeids.push(t as i64);
            nodeids.push(id as i64);
            match node {
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    featureids.push(*feature as i64);
                    modes.push("BRANCH_LEQ");
                    // The threshold is a training f32 value: see the invariant in `gbdt`.
                    values.push(*threshold);
                    trues.push(*left as i64);
                    falses.push(*right as i64);
                }
                Node::Leaf { weight } => {
                    featureids.push(0);
                    modes.push("LEAF");
                    values.push(0.0);
                    trues.push(0);
                    falses.push(0);
                    class_treeids.push(t as i64);
                    class_nodeids.push(id as i64);
                    class_weights.push(*weight as f32);
                }
            }
        }
    }
    // ONNX Runtime labels a one-column binary ensemble whose weights are all >= 0 by
    // "raw score > 0.5" instead of "raw score > 0" (a quirk `cordon-trees` reproduces). A
    // one-leaf tree of the smallest negative normal weight keeps the usual rule and changes no
    // score: adding it to any f32 sum but 0 or a subnormal leaves the sum unchanged.
    if class_weights.iter().all(|&w| w >= 0.0) {
        let t = m.trees.len() as i64;
        treeids.push(t);
        nodeids.push(0);
        featureids.push(0);
        modes.push("LEAF");
        values.push(0.0);
        trues.push(0);
        falses.push(0);
        class_treeids.push(t);
        class_nodeids.push(0);
        class_weights.push(-f32::MIN_POSITIVE);
    }
    let n_leaves = class_weights.len();
    ml_node(
        "TreeEnsembleClassifier",
        vec![
            floats("base_values", vec![m.init as f32]),
            ints("class_ids", vec![0; n_leaves]),
            ints("class_nodeids", class_nodeids),
            ints("class_treeids", class_treeids),
            floats("class_weights", class_weights),
            ints("classlabels_int64s", vec![0, 1]),
            ints("nodes_falsenodeids", falses),
            ints("nodes_featureids", featureids),
            strings("nodes_modes", modes),
            ints("nodes_nodeids", nodeids),
            ints("nodes_treeids", treeids),
            ints("nodes_truenodeids", trues),
            floats("nodes_values", values),
            string("post_transform", "LOGISTIC"),
        ],
    )
}

fn linear_node(m: &LogisticModel) -> NodeProto {
    let d = m.coefficients.len();
    let mut coefficients = vec![0f32; d];
    coefficients.extend(m.coefficients.iter().map(|&w| w as f32));
    ml_node(
        "LinearClassifier",
        vec![
            ints("classlabels_ints", vec![0, 1]),
            floats("coefficients", coefficients),
            floats("intercepts", vec![0.0, m.intercept as f32]),
            int("multi_class", 0),
            string("post_transform", "SOFTMAX"),
        ],
    )
}
