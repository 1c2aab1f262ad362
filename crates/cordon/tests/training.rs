//! Collaborative training across real processes on loopback: the CLI as each party, a KBS and a
//! training runtime; and `cordon demo hospitals`, with a scan of every log and file for rows.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const HOSPITAL_A: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/training/hospital_a.csv"
);
const HOSPITAL_C_PARQUET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/training/hospital_c.parquet"
);
const HOSPITALS: [&str; 3] = [
    include_str!("../../../testdata/training/hospital_a.csv"),
    include_str!("../../../testdata/training/hospital_b.csv"),
    include_str!("../../../testdata/training/hospital_c.csv"),
];

#[test]
fn two_parties_train_with_the_cli_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    let (_kbs, kbs_url) = start_kbs(dir.path(), "kbs");
    let kbs_key = kbs_key(dir.path(), "kbs");
    std::fs::write(
        p("trainer.toml"),
        format!(
            "kbs_url = \"{kbs_url}\"\nkbs_public_key = \"{kbs_key}\"\n\n[training]\nmax_dataset_mib = 16\n"
        ),
    )
    .unwrap();
    let (release, verify, _) = sim_policies(dir.path(), &p("trainer.toml"), "trainer");
    let (_trainer, runtime) = start_runtime(dir.path(), &p("trainer.toml"), "trainer");

    // Each party: a key, its dataset sealed (CSV for one, Parquet for the other), the key
    // registered with the KBS, the sealed bytes uploaded.
    let clinic = new_party(dir.path(), "clinic", HOSPITAL_A, "csv");
    let lab = new_party(dir.path(), "lab", HOSPITAL_C_PARQUET, "parquet");
    for party in [&clinic, &lab] {
        ok(&dataset_register_args(party, &release, &kbs_url, &kbs_key));
        ok(&dataset_upload_args(party, &runtime, &verify));
    }
    // A party cannot register a key for a dataset another party sealed.
    let lab_with_clinics_key = Party {
        key: clinic.key.clone(),
        ..lab.clone()
    };
    let err = fails(&dataset_register_args(
        &lab_with_clinics_key,
        &release,
        &kbs_url,
        &kbs_key,
    ));
    assert!(err.contains("another party"), "{err}");

    let features = csv_features(HOSPITALS[0]);
    let parties = [&clinic.entry, &lab.entry];
    let datasets = [&clinic.dataset, &lab.dataset];
    let spec = serde_json::json!({
        "name": "clinic and lab",
        "parties": parties,
        "datasets": datasets,
        "schema": {"features": features, "label": "label"},
        "algorithm": {"kind": "logistic_regression", "c": 1.0},
        "evaluation": {"test_fraction": 0.3, "seed": 5},
        "outputs": {"recipients": ["lab"]},
    });
    std::fs::write(p("job.json"), serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let conn = |name: &str| {
        vec![
            "--party".to_string(),
            s(&p(&format!("{name}.party"))),
            "--runtime".into(),
            runtime.clone(),
            "--policy".into(),
            s(&verify),
        ]
    };
    let run = |args: &[&str], name: &str| {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(conn(name));
        a
    };
    let created = ok(&run(
        &["job", "create", "--spec", &s(&p("job.json"))],
        "clinic",
    ));
    let hash = job_hash(&created);
    assert_eq!(hash.len(), 64, "{created}");
    assert!(
        created.contains("awaiting approval from: clinic, lab"),
        "{created}"
    );

    ok(&run(
        &[
            "job",
            "approve",
            "--job",
            &hash,
            "--spec",
            &s(&p("job.json")),
        ],
        "clinic",
    ));
    // Submitting before every party approved: refused, naming the missing party.
    let err = fails(&run(&["job", "submit", "--job", &hash], "clinic"));
    assert!(err.contains("not_approved") && err.contains("lab"), "{err}");
    // A job that lists lab's signing key with another party's HPKE key (so that lab's output would
    // be sealed to someone else) is refused by lab's approve, before anything is signed.
    let mut evil = spec.clone();
    evil["parties"][1]["hpke_key"] = evil["parties"][0]["hpke_key"].clone();
    evil["outputs"]["recipients"] = serde_json::json!(["lab"]);
    std::fs::write(p("evil.json"), serde_json::to_string_pretty(&evil).unwrap()).unwrap();
    let evil_spec: cordon_proto::job::JobSpec = serde_json::from_value(evil).unwrap();
    let evil_hash = hex::encode(evil_spec.hash());
    let err = fails(&run(
        &[
            "job",
            "approve",
            "--job",
            &evil_hash,
            "--spec",
            &s(&p("evil.json")),
        ],
        "lab",
    ));
    assert!(err.contains("HPKE key"), "{err}");
    // --spec is required, and must hash to --job.
    let err = fails(&run(&["job", "approve", "--job", &hash], "lab"));
    assert!(err.contains("--spec"), "{err}");
    let err = fails(&run(
        &[
            "job",
            "approve",
            "--job",
            &evil_hash,
            "--spec",
            &s(&p("job.json")),
        ],
        "lab",
    ));
    assert!(err.contains("hashes to"), "{err}");
    let approved = ok(&run(
        &[
            "job",
            "approve",
            "--job",
            &hash,
            "--spec",
            &s(&p("job.json")),
        ],
        "lab",
    ));
    assert!(approved.contains("approved by: clinic, lab"), "{approved}");
    let done = ok(&run(
        &["job", "submit", "--job", &hash, "--wait", "120"],
        "clinic",
    ));
    assert!(done.contains("finished"), "{done}");
    assert!(done.contains("logistic_regression"), "{done}");

    // Only the recipient gets the model; the receipt verifies offline, and not once tampered.
    let err = fails(&run(
        &[
            "job",
            "result",
            "--job",
            &hash,
            "--out-dir",
            &s(&p("out-clinic")),
        ],
        "clinic",
    ));
    assert!(err.contains("not_a_recipient"), "{err}");
    ok(&run(
        &["job", "result", "--job", &hash, "--out-dir", &s(&p("out"))],
        "lab",
    ));
    // Written once; again only with --force.
    let err = fails(&run(
        &["job", "result", "--job", &hash, "--out-dir", &s(&p("out"))],
        "lab",
    ));
    assert!(err.contains("--force"), "{err}");
    ok(&run(
        &[
            "job",
            "result",
            "--job",
            &hash,
            "--out-dir",
            &s(&p("out")),
            "--force",
        ],
        "lab",
    ));
    let verified = ok(&[
        "job",
        "receipt",
        "verify",
        "--receipt",
        &s(&p("out/receipt.json")),
        "--policy",
        &s(&verify),
    ]);
    assert!(
        verified.contains("receipt valid") && verified.contains("SIMULATED"),
        "{verified}"
    );
    let receipt = std::fs::read_to_string(p("out/receipt.json")).unwrap();
    let tampered = receipt.replacen("\"party\": \"clinic\"", "\"party\": \"someone\"", 1);
    assert_ne!(tampered, receipt);
    std::fs::write(p("tampered.json"), tampered).unwrap();
    let err = fails(&[
        "job",
        "receipt",
        "verify",
        "--receipt",
        &s(&p("tampered.json")),
        "--policy",
        &s(&verify),
    ]);
    assert!(err.contains("signature"), "{err}");
    // The output opens with its key file and is an ONNX model the runtime runs.
    ok(&[
        "unseal",
        &s(&p("out/model.sealed")),
        "--key",
        &s(&p("out/model.key")),
        "--out",
        &s(&p("model.onnx")),
    ]);
    let onnx = std::fs::read(p("model.onnx")).unwrap();
    cordon_runtime::OnnxModel::load("joint", "1", &onnx).unwrap();
}

/// Every run of `features.len()`-long comma-joined cells of every row, as a log could print them.
fn row_needles() -> Vec<String> {
    let mut needles = Vec::new();
    for csv in HOSPITALS {
        for line in csv.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            // Three consecutive cells: specific to a row, never in hashes, ids or timings.
            needles.push(cells[..3].join(","));
            needles.push(cells[..3].join(", "));
        }
    }
    needles
}

fn scan(
    dir: &Path,
    needles: &[String],
    skip: &[&str],
    hits: &mut Vec<String>,
    scanned: &mut usize,
) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if skip.iter().any(|s| path.ends_with(s)) {
            continue;
        }
        if path.is_dir() {
            scan(&path, needles, skip, hits, scanned);
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        *scanned += 1;
        for n in needles {
            if text.contains(n.as_str()) {
                hits.push(format!("{}: {n}", path.display()));
            }
        }
    }
}

#[test]
fn demo_hospitals_beats_every_solo_model_and_leaks_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "hospitals", "--data-dir", &s(dir.path())])
        .env("CORDON_LOG", "trace")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "SIMULATED",
        "approved by: hospital-a, hospital-b, hospital-c",
        "receipt valid",
        "asks for the model: refused",
        "not_a_recipient",
        "equals the recipient's in-process run: yes",
        "its key registered with the KBS for serving under the job's policy",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // The joint model beats every hospital's solo model on the common benchmark.
    let accuracy = |line: &str| -> f64 {
        line.split("accuracy ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let section = stdout.split("== Solo vs joint").nth(1).unwrap();
    let joint = accuracy(
        section
            .lines()
            .find(|l| l.contains("joint (Cordon)"))
            .unwrap(),
    );
    let solos: Vec<f64> = section
        .lines()
        .filter(|l| l.trim_start().starts_with("hospital-"))
        .map(accuracy)
        .collect();
    assert_eq!(solos.len(), 3, "{section}");
    assert!(
        solos.iter().all(|&s| joint > s),
        "joint {joint} vs solo {solos:?}"
    );

    // No row in stdout, stderr, any log (trace level) or file the demo wrote, outside the KBS's
    // store (which holds keys, not rows) and the sealed datasets (ciphertext).
    let needles = row_needles();
    let mut hits = Vec::new();
    for n in &needles {
        if stdout.contains(n.as_str()) || stderr.contains(n.as_str()) {
            hits.push(format!("output: {n}"));
        }
    }
    let mut scanned = 0;
    scan(dir.path(), &needles, &["kbs"], &mut hits, &mut scanned);
    assert!(
        hits.is_empty(),
        "plaintext rows found:\n{}",
        hits.join("\n")
    );
    assert!(scanned >= 8, "scanned only {scanned} files");
    // The scan is not vacuous: trace logging was on, and the needles do occur in the plaintext.
    let trainer_log = std::fs::read_to_string(dir.path().join("run/trainer.log")).unwrap();
    assert!(
        trainer_log.contains("TRACE") || trainer_log.contains("DEBUG"),
        "{trainer_log}"
    );
    assert!(trainer_log.contains("job finished"), "{trainer_log}");
    assert!(HOSPITALS[0].contains(needles[0].as_str()));
}
