//! `cordon policy new` and the configuration checks of `cordon runtime measure`: the user's path on
//! hardware is measure, write the policies, register; each step refuses what a later one would.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cordon");
const MEASUREMENT: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn runtime_toml() -> String {
    format!(
        "kbs_url = \"http://127.0.0.1:8100\"\n\n[[models]]\nname = \"lr\"\npath = \"lr.sealed\"\nsigner = \"{}\"\n",
        "11".repeat(32)
    )
}

#[test]
fn an_snp_policy_pins_the_runtime_configuration_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("runtime.toml"), runtime_toml()).unwrap();
    let chip = "07".repeat(64);
    let (code, out, err) = run(
        d,
        &[
            "policy",
            "new",
            "--platform",
            "snp",
            "--measurement",
            MEASUREMENT,
            "--runtime-config",
            "runtime.toml",
            "--chip-id",
            &chip,
            "--min-tcb",
            "microcode=219",
            "--release-out",
            "release.toml",
            "--client-out",
            "client.toml",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("release.toml") && out.contains("client.toml"),
        "{out}"
    );
    assert!(!err.contains("WARNING"), "{err}");
    let release = std::fs::read_to_string(d.join("release.toml")).unwrap();
    let policy = cordon_attest::Policy::from_toml(&release).unwrap();
    let host_data = Sha256::digest(runtime_toml().as_bytes()).to_vec();
    // What `measure runtime` prints is what the policy pins.
    let (code, measured, err) = run(
        d,
        &[
            "measure",
            "runtime",
            "--config",
            "runtime.toml",
            "--platform",
            "snp",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(measured.trim(), hex::encode(&host_data));
    let (_, mrconfigid, _) = run(
        d,
        &[
            "measure",
            "runtime",
            "--config",
            "runtime.toml",
            "--platform",
            "tdx",
        ],
    );
    assert_eq!(mrconfigid.trim().len(), 96, "{mrconfigid}");
    assert_eq!(policy.workload_data, Some(host_data));
    assert_eq!(policy.allowed_chip_ids, Some(vec![vec![7; 64]]));
    assert_eq!(policy.min_tcb.unwrap()["microcode"], 219);
    // The client policy needs no [endorsements] on hardware.
    let client = std::fs::read_to_string(d.join("client.toml")).unwrap();
    let doc = cordon_attest::PolicyDocument::from_toml(&client).unwrap();
    assert!(doc.endorsements.is_none());
    assert!(doc.verification_endorsements().is_some());
    // Existing files are kept unless --force.
    let (code, _, err) = run(
        d,
        &[
            "policy",
            "new",
            "--platform",
            "snp",
            "--measurement",
            MEASUREMENT,
            "--runtime-config",
            "runtime.toml",
            "--release-out",
            "release.toml",
            "--client-out",
            "client.toml",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("release.toml")).unwrap(),
        release
    );
}

#[test]
fn policies_the_kbs_or_a_client_would_refuse_are_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let new = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "new",
            "--measurement",
            MEASUREMENT,
            "--release-out",
            "r.toml",
            "--client-out",
            "c.toml",
        ];
        args.extend_from_slice(extra);
        run(d, &args)
    };
    // Hardware without the configuration pinned.
    let (code, _, err) = new(&["--platform", "tdx"]);
    assert_eq!(code, 1);
    assert!(err.contains("must pin the runtime configuration"), "{err}");
    // A chip id of the wrong size.
    let (code, _, err) = new(&[
        "--platform",
        "snp",
        "--workload-data",
        &"00".repeat(32),
        "--chip-id",
        "0707",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("SNP CHIP_IDs are 64 bytes"), "{err}");
    // Sim without the trust anchor a client verifies with.
    let (code, _, err) = new(&["--platform", "sim"]);
    assert_eq!(code, 1);
    assert!(err.contains("--sim-trust-anchor"), "{err}");
    // A runtime configuration that is a picture.
    std::fs::write(d.join("pic.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe").unwrap();
    let (code, _, err) = new(&["--platform", "snp", "--runtime-config", "pic.png"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("pic.png") && err.contains("not UTF-8"),
        "{err}"
    );
    assert!(!d.join("r.toml").exists() && !d.join("c.toml").exists());
    // Accepting emulated evidence is said loudly.
    let (code, _, err) = new(&[
        "--platform",
        "snp",
        "--workload-data",
        &"00".repeat(32),
        "--emulated-root",
        &"ab".repeat(32),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("WARNING") && err.contains("EMULATED"), "{err}");
}

#[test]
fn runtime_measure_checks_the_configuration_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("runtime.toml"), runtime_toml()).unwrap();
    let (code, out, err) = run(d, &["runtime", "measure", "--config", "runtime.toml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim().len(), 96, "{out}");
    let no_signer = runtime_toml().replace(&format!("signer = \"{}\"\n", "11".repeat(32)), "");
    std::fs::write(d.join("bad.toml"), no_signer).unwrap();
    let (code, out, err) = run(d, &["runtime", "measure", "--config", "bad.toml"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("bad.toml") && err.contains("signer"), "{err}");
    std::fs::write(d.join("pic.png"), b"\x89PNG\r\n\x1a\n\xff").unwrap();
    let (code, _, err) = run(d, &["runtime", "measure", "--config", "pic.png"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("pic.png") && err.contains("not UTF-8"),
        "{err}"
    );
}
