//! `cordon attest verify | inspect` on the real fixtures (testdata/attestation/README.md): every
//! verdict there, its exit code, and what an expired window is called.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cordon");

fn td(p: &str) -> String {
    format!(
        "{}/../../testdata/attestation/{p}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn snp_verdicts_and_exit_codes() {
    let report = td("snp/trustee_test-report.bin");
    let vcek = td("snp/trustee_test-vcek.der");
    let (code, out, err) = run(&[
        "attest",
        "verify",
        &report,
        "--cert",
        &vcek,
        "--at",
        "2025-01-01T00:00:00Z",
        "--json",
    ]);
    // The report verifies, but its 2023 TCB (bootloader 3, SNP SPL 8, microcode 115) is below the
    // default Milan floor that every SNP appraisal applies (cordon_attest::snp::floor).
    assert_eq!(code, 1, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bytes = std::fs::read(&report).unwrap();
    assert_eq!(
        json["claims"]["launch_measurement"],
        hex::encode(&bytes[0x90..0xC0])
    );
    assert_eq!(json["claims"]["platform"], "snp");
    assert_eq!(json["verified"], true);
    assert_eq!(json["accepted"], false);
    assert_eq!(
        json["failures"].as_array().unwrap().len(),
        3,
        "{}",
        json["failures"]
    );
    for needle in [
        "tcb.bootloader: 3 is below the default minimum 4 for Milan",
        "tcb.snp: 8 is below the default minimum 27 for Milan",
        "tcb.microcode: 115 is below the default minimum 222 for Milan",
    ] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }

    // A policy that pins the report's measurement and HOST_DATA and drops the floor explicitly
    // (an old test report) accepts it, and the tool warns about the lowered floor.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("old-tcb.toml");
    std::fs::write(
        &policy,
        format!(
            "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\nworkload_data = \"{}\"\nmin_tcb_floor = \"none\"\n",
            hex::encode(&bytes[0x90..0xC0]),
            hex::encode(&bytes[0xC0..0xE0])
        ),
    )
    .unwrap();
    let (code, out, err) = run(&[
        "attest",
        "verify",
        &report,
        "--cert",
        &vcek,
        "--at",
        "2025-01-01T00:00:00Z",
        "--policy",
        &policy.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accepted"), "{out}");
    assert!(
        err.contains("WARNING: policy sets min_tcb_floor = \"none\""),
        "{err}"
    );

    let (code, _, err) = run(&[
        "attest",
        "verify",
        &td("snp/gosev_attestation.bin"),
        "--cert",
        &td("snp/gosev_vcek.der"),
        "--at",
        "2025-01-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("debug"), "{err}");

    let (code, _, err) = run(&[
        "attest",
        "verify",
        &td("snp/trustee_test-vlek-report.bin"),
        "--cert",
        &td("snp/trustee_test-vlek.der"),
        "--at",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("VLEK expired at 2025-12-10"), "{err}");
    // Inside its window it verifies; its TCB (SEV firmware 1.55.29: SNP SPL 24, microcode 217 on a
    // Milan B1) predates AMD-SB-3020, so the default appraisal refuses it, naming both.
    let (code, _, err) = run(&[
        "attest",
        "verify",
        &td("snp/trustee_test-vlek-report.bin"),
        "--cert",
        &td("snp/trustee_test-vlek.der"),
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("tcb.snp: 24 is below the default minimum 27 for Milan"),
        "{err}"
    );
    assert!(
        err.contains("tcb.microcode: 217 is below the default minimum 222 for Milan"),
        "{err}"
    );
    assert!(!err.contains("rejected: vmpl"), "{err}");
}

#[test]
fn dcap_verdicts_and_exit_codes() {
    let (code, out, err) = run(&[
        "attest",
        "verify",
        &td("tdx/tdx_quote"),
        "--collateral",
        &td("tdx/tdx_quote_collateral.json"),
        "--at",
        "2025-07-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("TCB status          UpToDate"), "{out}");

    let (code, _, err) = run(&[
        "attest",
        "verify",
        &td("tdx/tdx_quote"),
        "--collateral",
        &td("tdx/tdx_quote_collateral.json"),
        "--at",
        "2026-07-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("expired"), "{err}");

    let (code, _, err) = run(&[
        "attest",
        "verify",
        &td("tdx/tdx_quote_outdated"),
        "--collateral",
        &td("tdx/tdx_quote_outdated_collateral.json"),
        "--at",
        "2026-03-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("TCB level"), "{err}");

    let sgx = td("sgx/sgx_quote");
    let col = td("sgx/sgx_quote_collateral.json");
    let (code, out, _) = run(&[
        "attest",
        "verify",
        &sgx,
        "--collateral",
        &col,
        "--at",
        "2025-07-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["claims"]["tcb"]["status"],
        "ConfigurationAndSWHardeningNeeded"
    );
    let advisories = json["claims"]["tcb"]["advisory_ids"].to_string();
    assert!(
        advisories.contains("INTEL-SA-00289") && advisories.contains("INTEL-SA-00615"),
        "{advisories}"
    );

    // A policy that narrows the TCB statuses refuses the same quote, naming the status.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    let mrenclave = json["claims"]["launch_measurement"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&policy, format!("platforms = [\"sgx\"]\nlaunch_measurements = [\"{mrenclave}\"]\ntcb_statuses = [\"UpToDate\"]\n")).unwrap();
    let (code, _, err) = run(&[
        "attest",
        "verify",
        &sgx,
        "--collateral",
        &col,
        "--at",
        "2025-07-01T00:00:00Z",
        "--policy",
        &policy.to_string_lossy(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("tcb.status: ConfigurationAndSWHardeningNeeded"),
        "{err}"
    );

    // The quote as hex text is accepted too.
    let hex_quote = dir.path().join("q.hex");
    std::fs::write(&hex_quote, hex::encode(std::fs::read(&sgx).unwrap())).unwrap();
    let (code, _, err) = run(&[
        "attest",
        "verify",
        &hex_quote.to_string_lossy(),
        "--collateral",
        &col,
        "--at",
        "2025-07-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unusable_input_exits_2_and_inspect_says_not_verified() {
    let (code, _, err) = run(&["attest", "verify", &td("README.md")]);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognised evidence format"), "{err}");
    let (code, _, err) = run(&["attest", "verify", &td("tdx/tdx_quote")]);
    assert_eq!(
        code, 2,
        "a quote without collateral is a usage error: {err}"
    );
    assert!(err.contains("collateral"), "{err}");
    let (code, _, err) = run(&["attest", "verify", &td("snp/trustee_test-report.bin")]);
    assert_eq!(code, 2, "a report without its VCEK is a usage error: {err}");
    assert!(err.contains("--cert"), "{err}");
    let (code, _, _) = run(&[
        "attest",
        "verify",
        &td("snp/trustee_test-report.bin"),
        "--at",
        "not a time",
    ]);
    assert_eq!(code, 2);
    let (code, out, _) = run(&["attest", "inspect", &td("sgx/sgx_quote")]);
    assert_eq!(code, 0);
    assert!(out.starts_with("NOT VERIFIED"), "{out}");
}

#[test]
fn a_crl_that_is_not_one_is_refused_naming_the_crl() {
    let report = td("snp/trustee_test-report.bin");
    let vcek = td("snp/trustee_test-vcek.der");
    let (code, _, err) = run(&[
        "attest",
        "verify",
        &report,
        "--cert",
        &vcek,
        "--crl",
        &vcek,
        "--at",
        "2025-01-01T00:00:00Z",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("CRL"), "{err}");
}

/// A file that is not a certificate given as --cert is unusable input (2), not a rejection of the
/// evidence (1), and the error names the file; collateral of the other TEE type is unusable too,
/// and says so.
#[test]
fn a_certificate_that_is_not_one_exits_2_and_collateral_of_the_other_tee_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pic = dir.path().join("pic.png");
    std::fs::write(&pic, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let (code, _, err) = run(&[
        "attest",
        "verify",
        &td("snp/trustee_test-report.bin"),
        "--cert",
        pic.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pic.png is not an X.509 certificate"), "{err}");
    let (code, _, err) = run(&[
        "attest",
        "verify",
        &td("sgx/sgx_quote"),
        "--collateral",
        &td("tdx/tdx_quote_collateral.json"),
        "--at",
        "2025-07-01T00:00:00Z",
    ]);
    assert_eq!(code, 2, "a mix-up of inputs, not a verdict: {err}");
    assert!(
        err.contains("collateral is for TDX") && err.contains("the quote is from SGX"),
        "{err}"
    );
}
