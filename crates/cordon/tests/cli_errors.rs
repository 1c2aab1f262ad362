//! What a newcomer's mistakes print: a file of the wrong kind in each slot gets one line that
//! names the file, what it is and where it goes, never a parser's inner message, and nothing is
//! left behind.

use std::path::Path;
use std::process::Command;

fn cordon(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args(args)
        .env("HOME", home)
        .env_remove("CORDON_OWNER_KEY")
        .env_remove("CORDON_KBS_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

#[test]
fn files_of_the_wrong_kind_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    std::fs::write(d.join("notes.txt"), "meeting notes\n").unwrap();
    std::fs::write(
        d.join("model.onnx"),
        include_bytes!("../../../models/breast_cancer_lr.onnx"),
    )
    .unwrap();
    let ok = |args: &[&str]| {
        let (code, out, err) = cordon(d, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    };
    ok(&["keygen", "--out", &p("owner.key")]);
    ok(&["sim", "keygen", "--out", &p("sim.key")]);
    ok(&[
        "seal",
        &p("model.onnx"),
        "--out",
        &p("model.sealed"),
        "--key-out",
        &p("model.key"),
        "--owner-key",
        &p("owner.key"),
    ]);

    // Not a sealed artifact at all: said so, not "truncated".
    let (code, _, err) = cordon(d, &["inspect", &p("notes.txt")]);
    assert_eq!(code, 1);
    assert!(err.contains("not a Cordon sealed artifact"), "{err}");
    assert!(!err.contains("truncated"), "{err}");

    // Key files in each other's slots: named by what they are.
    let (code, _, err) = cordon(
        d,
        &[
            "seal",
            &p("model.onnx"),
            "--out",
            &p("x.sealed"),
            "--key-out",
            &p("x.key"),
            "--owner-key",
            &p("model.key"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("model.key is a sealed artifact's key file")
            && err.contains("expected here: owner key"),
        "{err}"
    );
    assert!(!d.join("x.sealed").exists() && !d.join("x.key").exists());
    let (code, _, err) = cordon(
        d,
        &[
            "unseal",
            &p("model.sealed"),
            "--key",
            &p("owner.key"),
            "--out",
            &p("plain.onnx"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("owner.key is a model owner's secret signing key")
            && err.contains("expected here: key file of a sealed artifact"),
        "{err}"
    );
    assert!(!d.join("plain.onnx").exists());

    // `kbs serve` on a new store in `d/kbs` with this trust anchor.
    let kbs_serve = |anchor: &str, extra: &[&str]| {
        let mut args = vec![
            "kbs".to_string(),
            "serve".into(),
            "--data-dir".into(),
            p("kbs"),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--sim-trust-anchor".into(),
            p(anchor),
            "--init-admin-token-file".into(),
            p("token"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        cordon(d, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // The sim SECRET key as a trust anchor: refused before any store exists, pointing at the
    // public half; the secret never appears in the message.
    let secret = std::fs::read_to_string(d.join("sim.key")).unwrap();
    let (code, _, err) = kbs_serve("sim.key", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("sim.key is a simulated TEE's SECRET hardware key")
            && err.contains("expected here: sim trust anchor")
            && err.contains(".pub file"),
        "{err}"
    );
    let seed: serde_json::Value = serde_json::from_str(&secret).unwrap();
    assert!(!err.contains(seed["secret_key"].as_str().unwrap()), "{err}");
    assert!(!d.join("kbs").exists() && !d.join("kbs.kek").exists());
    // A sim key of the older form (one line of hex, no marker) is still known for a secret by its
    // name and by the .pub file beside it; and a .pub file is never taken for the secret.
    std::fs::write(
        d.join("old.key"),
        format!("{}\n", seed["secret_key"].as_str().unwrap()),
    )
    .unwrap();
    std::fs::copy(d.join("sim.pub"), d.join("old.pub")).unwrap();
    let (code, _, err) = kbs_serve("old.key", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("old.key looks like a secret key") && err.contains("old.pub"),
        "{err}"
    );
    assert!(!err.contains(seed["secret_key"].as_str().unwrap()), "{err}");
    let hardware_key = p("old.pub");
    let (code, _, err) = kbs_serve(
        "sim.pub",
        &["--tee", "sim", "--sim-hardware-key", &hardware_key],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("old.pub is a public key") && err.contains("sim hardware key"),
        "{err}"
    );
    assert!(!d.join("kbs").exists() && !d.join("token").exists());
    // Its public half is the anchor, and is accepted by `policy` tools alike.
    assert!(std::fs::read_to_string(d.join("sim.pub"))
        .unwrap()
        .trim()
        .eq(seed["public_key"].as_str().unwrap()));
}
