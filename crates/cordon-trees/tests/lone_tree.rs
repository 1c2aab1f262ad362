//! A lone deep regression tree writes its outputs straight from the leaves a batch reaches
//! (`lone_outputs` in engine.rs). Those outputs must be bit for bit what the general path gives:
//! the same rows one at a time (which take the general path), and the generic walker.

mod common;

use common::{floats, ints, strings};
use cordon_trees::engine::Label;
use cordon_trees::{onnx, CompiledEnsemble};
use tract_onnx::pb::{AttributeProto, NodeProto};

/// One tree, a chain of `depth` branches: branch k (id 2k) tests `x[k % 3] <= k / 10` and sends
/// the row to leaf 2k + 1 (weight k + 0.3) or on to branch k + 1; the last leaf is id 2·depth.
/// Every third branch sends a missing value to the true side (a negated comparison).
fn chain(depth: i64, aggregate: &str, base: Option<f32>) -> NodeProto {
    let n = 2 * depth + 1;
    let mut modes = Vec::new();
    let (mut features, mut values, mut trues, mut falses, mut missing) =
        (vec![], vec![], vec![], vec![], vec![]);
    for id in 0..n {
        let (k, branch) = (id / 2, id % 2 == 0 && id < n - 1);
        modes.push(if branch { "BRANCH_LEQ" } else { "LEAF" });
        features.push(if branch { k % 3 } else { 0 });
        values.push(if branch { k as f32 / 10.0 } else { 0.0 });
        trues.push(if branch { id + 1 } else { 0 });
        falses.push(if branch { id + 2 } else { 0 });
        missing.push(i64::from(branch && k % 3 == 0));
    }
    let leaves: Vec<i64> = (0..n).filter(|id| id % 2 == 1 || *id == n - 1).collect();
    let weights: Vec<f32> = leaves.iter().map(|&id| id as f32 / 2.0 + 0.3).collect();
    let mut attribute = vec![
        ints("nodes_treeids", &vec![0; n as usize]),
        ints("nodes_nodeids", &(0..n).collect::<Vec<_>>()),
        ints("nodes_featureids", &features),
        strings("nodes_modes", &modes),
        floats("nodes_values", &values),
        ints("nodes_truenodeids", &trues),
        ints("nodes_falsenodeids", &falses),
        ints("nodes_missing_value_tracks_true", &missing),
        ints("target_treeids", &vec![0; leaves.len()]),
        ints("target_nodeids", &leaves),
        ints("target_ids", &vec![0; leaves.len()]),
        floats("target_weights", &weights),
        AttributeProto {
            name: "aggregate_function".into(),
            s: aggregate.as_bytes().to_vec(),
            ..Default::default()
        },
    ];
    if let Some(b) = base {
        attribute.push(floats("base_values", &[b]));
    }
    NodeProto {
        op_type: "TreeEnsembleRegressor".into(),
        attribute,
        ..Default::default()
    }
}

#[test]
fn lone_tree_batches_match_rows_one_at_a_time_and_the_generic_walker() {
    let n_rows = 300;
    let mut seed = 0x2545_f491_u32;
    let rows: Vec<f32> = (0..n_rows * 3)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            // Some missing values, and values on both sides of every threshold.
            if i % 17 == 0 {
                f32::NAN
            } else {
                (seed % 1600) as f32 / 1000.0 - 0.1
            }
        })
        .collect();
    for (aggregate, base) in [
        ("SUM", None),
        ("SUM", Some(0.1f32)),
        ("AVERAGE", Some(-7.25)),
    ] {
        let ensemble = onnx::regressor(&chain(14, aggregate, base)).expect("valid chain");
        let compiled = CompiledEnsemble::new(ensemble).expect("compiles");
        assert!(compiled.is_fast());
        let mut batch = vec![0f32; n_rows];
        compiled
            .eval_f32(&rows, 3, &mut batch, &mut [], false)
            .expect("batch");
        let mut generic = vec![0f32; n_rows];
        compiled
            .eval_f32(&rows, 3, &mut generic, &mut [], true)
            .expect("generic");
        let mut ends = std::collections::BTreeSet::new();
        for r in 0..n_rows {
            let mut one = [0f32];
            let mut label = [Label::Index(0); 0];
            compiled
                .eval_f32(&rows[r * 3..r * 3 + 3], 3, &mut one, &mut label, false)
                .expect("one row");
            let what = format!("{aggregate} {base:?} row {r}");
            assert_eq!(batch[r].to_bits(), one[0].to_bits(), "{what}");
            assert_eq!(batch[r].to_bits(), generic[r].to_bits(), "{what}");
            ends.insert(batch[r].to_bits());
        }
        // The rows reach many leaves, near the root and deep down.
        assert!(
            ends.len() >= 8,
            "{aggregate}: {} distinct outputs",
            ends.len()
        );
    }
}
