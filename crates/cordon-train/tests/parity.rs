//! Parity with scikit-learn (testdata/training/reference.json, from
//! scripts/make_training_data.py): trained on breast_cancer_train.csv, evaluated on
//! breast_cancer_test.csv. Logistic regression accuracy within 0.01 of scikit-learn's, GBDT AUC
//! within 0.01. Run with `--nocapture` for the figures.

mod common;

use cordon_train::metrics::{accuracy, log_loss, roc_auc};
use cordon_train::{train, Algorithm, GbdtParams, LogisticParams, Table, TrainedModel};
use std::time::Instant;

fn evaluate(model: &TrainedModel, test: &Table) -> (f64, f64, f64) {
    let p = model.predict_proba(test);
    (
        accuracy(test.labels(), &p),
        roc_auc(test.labels(), &p).unwrap(),
        log_loss(test.labels(), &p),
    )
}

fn fit(algorithm: &Algorithm, train_table: &Table) -> (TrainedModel, f64) {
    let start = Instant::now();
    let model = train(algorithm, train_table).unwrap();
    (model, start.elapsed().as_secs_f64())
}

#[test]
fn logistic_regression_matches_sklearn_accuracy() {
    let (train_table, test) = (
        common::load("breast_cancer_train.csv"),
        common::load("breast_cancer_test.csv"),
    );
    let reference = common::reference();
    let want = &reference["whole_train"]["logistic_regression"];
    let (model, secs) = fit(
        &Algorithm::LogisticRegression(LogisticParams::default()),
        &train_table,
    );
    let (acc, auc, ll) = evaluate(&model, &test);
    let sk_acc = want["accuracy"].as_f64().unwrap();
    println!(
        "logistic regression: accuracy {acc:.4} (sklearn {sk_acc:.4}), AUC {auc:.4} (sklearn {:.4}), \
         log-loss {ll:.4} (sklearn {:.4}), {secs:.3} s",
        want["auc"].as_f64().unwrap(),
        want["log_loss"].as_f64().unwrap()
    );
    assert!(
        (acc - sk_acc).abs() <= 0.01,
        "accuracy {acc} vs sklearn {sk_acc}"
    );
    // Same objective, solved exactly: the log-loss agrees far closer than the accuracy must.
    assert!(
        (ll - want["log_loss"].as_f64().unwrap()).abs() < 0.005,
        "log-loss {ll}"
    );
}

#[test]
fn gbdt_matches_sklearn_auc() {
    let (train_table, test) = (
        common::load("breast_cancer_train.csv"),
        common::load("breast_cancer_test.csv"),
    );
    let reference = common::reference();
    let want = &reference["whole_train"]["gbdt"];
    let (model, secs) = fit(&Algorithm::Gbdt(GbdtParams::default()), &train_table);
    let (acc, auc, ll) = evaluate(&model, &test);
    let sk_auc = want["auc"].as_f64().unwrap();
    println!(
        "gbdt: AUC {auc:.4} (sklearn {sk_auc:.4}), accuracy {acc:.4} (sklearn {:.4}), \
         log-loss {ll:.4} (sklearn {:.4}), {secs:.3} s",
        want["accuracy"].as_f64().unwrap(),
        want["log_loss"].as_f64().unwrap()
    );
    assert!(
        (auc - sk_auc).abs() <= 0.01,
        "AUC {auc} vs sklearn {sk_auc}"
    );
}

/// The federated story: each hospital alone (skewed, small) against all three pooled.
#[test]
fn pooled_hospitals_against_each_alone() {
    let test = common::load("breast_cancer_test.csv");
    let reference = common::reference();
    let hospitals = ["hospital_a.csv", "hospital_b.csv", "hospital_c.csv"];
    let tables: Vec<Table> = hospitals.iter().map(|h| common::load(h)).collect();
    let pooled = Table::concat(&tables.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(
        pooled.n_rows(),
        common::load("breast_cancer_train.csv").n_rows()
    );
    for (name, algorithm) in [
        (
            "logistic_regression",
            Algorithm::LogisticRegression(LogisticParams::default()),
        ),
        ("gbdt", Algorithm::Gbdt(GbdtParams::default())),
    ] {
        let (model, _) = fit(&algorithm, &pooled);
        let (pooled_acc, pooled_auc, _) = evaluate(&model, &test);
        println!("{name}: pooled accuracy {pooled_acc:.4}, AUC {pooled_auc:.4}");
        for (h, t) in hospitals.iter().zip(&tables) {
            let key = format!("hospital_{}", &h[9..10]);
            let want = &reference["hospitals"][&key][name];
            let (model, _) = fit(&algorithm, t);
            let (acc, auc, _) = evaluate(&model, &test);
            println!(
                "  {key} alone ({} rows): accuracy {acc:.4} (sklearn {:.4}), AUC {auc:.4} (sklearn {:.4})",
                t.n_rows(),
                want["accuracy"].as_f64().unwrap(),
                want["auc"].as_f64().unwrap()
            );
            assert!(
                pooled_auc >= auc - 0.005,
                "{name}: pooling lost to {key} alone"
            );
        }
    }
}
