//! `cordon model run` as a model author uses it: a real process, OIP JSON in and out, on every
//! model of the tree zoo (whole graphs: ZipMap, Scaler, string labels, NaN as null), compared
//! with ONNX Runtime's recorded outputs; and clear errors for unusable input.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cordon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cordon"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-6
}

fn compare(model: &str, got: &Value, want: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let got = got["outputs"].as_array().expect("outputs");
    let want = want["outputs"].as_array().expect("outputs");
    if got.len() != want.len() {
        return vec![format!(
            "{model}: {} outputs, expected {}",
            got.len(),
            want.len()
        )];
    }
    for (g, w) in got.iter().zip(want) {
        let name = w["name"].as_str().unwrap_or("?");
        if g["name"] != w["name"] || g["shape"] != w["shape"] || g["datatype"] != w["datatype"] {
            errors.push(format!(
                "{model}.{name}: got {} {} {}, expected {} {} {}",
                g["name"], g["datatype"], g["shape"], w["name"], w["datatype"], w["shape"]
            ));
            continue;
        }
        let (gd, wd) = (g["data"].as_array().unwrap(), w["data"].as_array().unwrap());
        for (i, (a, b)) in gd.iter().zip(wd).enumerate() {
            let ok = match (a.as_f64(), b.as_f64()) {
                _ if w["datatype"] == "INT64" || w["datatype"] == "BYTES" => a == b,
                (Some(x), Some(y)) => close(x, y),
                _ => a.is_null() && b.is_null(),
            };
            if !ok {
                errors.push(format!("{model}.{name}[{i}]: {a}, expected {b}"));
                break;
            }
        }
    }
    errors
}

#[test]
fn model_run_matches_onnx_runtime_on_the_whole_zoo() {
    let zoo = root().join("models/trees");
    let mut names: Vec<String> = std::fs::read_dir(&zoo)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".onnx"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 60);
    let mut failures = Vec::new();
    for name in &names {
        let out = cordon()
            .args(["model", "run"])
            .arg(zoo.join(format!("{name}.onnx")))
            .arg("--input")
            .arg(zoo.join(format!("{name}.input.json")))
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{name}: exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let got: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(zoo.join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        failures.extend(compare(name, &got, &want));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn model_run_works_on_the_neural_models_too() {
    let out = cordon()
        .args(["model", "run"])
        .arg(root().join("models/breast_cancer_mlp.onnx"))
        .arg("--input")
        .arg(root().join("models/demo_input.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outputs"][0]["datatype"], "INT64");
    assert_eq!(v["outputs"][1]["shape"], serde_json::json!([1, 2]));
    // --describe says what evaluates it: the dense plan, step by step; a tree model, tract.
    let describe = |model: &str| {
        let out = cordon()
            .args(["model", "run", "--describe"])
            .arg(root().join(model))
            .arg("--input")
            .arg(root().join("models/demo_input.json"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mlp = describe("models/breast_cancer_mlp.onnx");
    assert!(
        mlp.contains("engine: dense plan:\nscale 30 (Div)\nmatmul 30x16 +bias Relu\n"),
        "{mlp}"
    );
    let trees = describe("models/trees/bc_rf_clf.onnx");
    assert!(trees.contains("engine: tract"), "{trees}");
}

/// `--onnxruntime-library`: the same command on ONNX Runtime gives ONNX Runtime's recorded outputs
/// on tree models and the built-in engine's answers on the MLP, and names the library's digest.
#[test]
fn model_run_on_onnxruntime_agrees() {
    let library = cordon_runtime::locate_onnxruntime_library(&root())
        .expect("ONNX Runtime's library is needed: run scripts/fetch-onnxruntime.sh");
    let run = |model: &Path, input: &Path, ort: bool| {
        let mut c = cordon();
        c.args(["model", "run"])
            .arg(model)
            .arg("--input")
            .arg(input);
        if ort {
            c.arg("--onnxruntime-library").arg(&library);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{model:?}: {stderr}");
        (
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            stderr,
        )
    };
    let zoo = root().join("models/trees");
    for name in ["bc_gb_clf", "diab_hgb_reg_nan", "wine_lgbm_clf"] {
        let (got, stderr) = run(
            &zoo.join(format!("{name}.onnx")),
            &zoo.join(format!("{name}.input.json")),
            true,
        );
        assert!(stderr.contains("onnxruntime library sha256 "), "{stderr}");
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(zoo.join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        let failures = compare(name, &got, &want);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
    let mlp = root().join("models/breast_cancer_mlp.onnx");
    let input = root().join("models/demo_input.json");
    let (on_ort, _) = run(&mlp, &input, true);
    let (on_tract, _) = run(&mlp, &input, false);
    let failures = compare("mlp", &on_ort, &on_tract);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run_err(model: &Path, input: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("input.json");
    std::fs::write(&input_path, input).unwrap();
    let out = cordon()
        .args(["model", "run"])
        .arg(model)
        .arg("--input")
        .arg(&input_path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "must fail");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn model_run_says_what_is_wrong() {
    let rf = root().join("models/trees/bc_rf_clf.onnx");
    let e = run_err(
        &rf,
        r#"{"inputs":[{"name":"input","shape":[1,29],"datatype":"FP32","data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}"#,
    );
    assert!(e.contains("shape [1, 29]"), "{e}");
    let e = run_err(
        &rf,
        r#"{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[1]}]}"#,
    );
    assert!(e.contains("holds 30 elements, data has 1"), "{e}");
    let e = run_err(
        &rf,
        r#"{"inputs":[{"name":"x","shape":[1,30],"datatype":"FP32","data":[]}]}"#,
    );
    assert!(e.contains("\"x\" is not an input"), "{e}");
    let e = run_err(&rf, "not json");
    assert!(
        e.contains("not an Open Inference Protocol infer request"),
        "{e}"
    );

    // A truncated model file, and one whose tree points to a node that does not exist.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&rf).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = run_err(&truncated, "{}");
    assert!(e.contains("cannot load ONNX"), "{e}");
    assert!(
        e.contains(&format!("{} is not an ONNX model", truncated.display())),
        "{e}"
    );
    // A picture: named as not a model.
    let png = dir.path().join("pic.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let e = run_err(&png, "{}");
    assert!(e.contains("pic.png is not an ONNX model"), "{e}");
    // A sealed model: says what to do instead of a Protobuf error.
    let sealed = dir.path().join("m.sealed");
    let mut file = std::fs::File::create(&sealed).unwrap();
    let options = cordon_seal::SealOptions {
        name: "m".into(),
        version: "1".into(),
        media_type: "application/onnx".into(),
        chunk_size: cordon_seal::DEFAULT_CHUNK_SIZE,
        ..Default::default()
    };
    cordon_seal::seal_with_header(
        &bytes[..],
        bytes.len() as u64,
        &mut file,
        &cordon_seal::OwnerKey::generate(),
        &options,
        &mut |_| {},
    )
    .unwrap();
    drop(file);
    let e = run_err(&sealed, "{}");
    assert!(
        e.contains("is a Cordon sealed artifact, not an ONNX model"),
        "{e}"
    );
    assert!(e.contains("cordon unseal"), "{e}");
    assert!(!e.contains("Protobuf"), "{e}");
}

#[test]
fn model_examples_writes_the_repository_demo_models_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("examples");
    let run = |extra: &[&str]| {
        let mut c = cordon();
        c.args(["model", "examples", "--out"]).arg(&out).args(extra);
        c.output().unwrap()
    };
    let first = run(&[]);
    assert!(first.status.success(), "{first:?}");
    // The same bytes as the repository's files.
    for (written, repo) in [
        ("breast_cancer_lr.onnx", "models/breast_cancer_lr.onnx"),
        ("breast_cancer_mlp.onnx", "models/breast_cancer_mlp.onnx"),
        ("fraud_gbdt.onnx", "models/fraud/fraud_gbdt.onnx"),
        ("demo_input.json", "models/demo_input.json"),
    ] {
        assert_eq!(
            std::fs::read(out.join(written)).unwrap(),
            std::fs::read(root().join(repo)).unwrap(),
            "{written}"
        );
    }
    // A second run refuses, naming the file, and changes nothing; --force replaces.
    std::fs::write(out.join("demo_input.json"), b"mine").unwrap();
    let again = run(&[]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("breast_cancer_lr.onnx") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("demo_input.json")).unwrap(), b"mine");
    assert!(run(&["--force"]).status.success());
    assert_ne!(std::fs::read(out.join("demo_input.json")).unwrap(), b"mine");
}
