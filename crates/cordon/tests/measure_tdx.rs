//! `cordon measure tdx`: MRTD of a TDVF image, RTMR replay of the real CCEL log against its quote
//! (testdata/attestation/README.md), and the exit codes.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cordon");

fn td(p: &str) -> String {
    format!("{}/../../testdata/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LIVE_RTMR0: &str = "5aca07b1e885e17d1aeaf9d94edb2674767a61547cf8a49f26b73b4a43baeb04d147ba1953310852bbdcb13f0cfcac17";

#[test]
fn event_log_replays_to_its_quote() {
    let log = td("attestation/tdx/ccel_live.bin");
    let quote = td("attestation/tdx/ccel_live_quote.dat");
    let (code, out, err) = run(&["measure", "tdx", "--event-log", &log, "--quote", &quote]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], format!("RTMR0  {LIVE_RTMR0}  matches the quote"));
    assert!(
        lines.iter().all(|l| l.ends_with("matches the quote")),
        "{out}"
    );
    assert!(err.contains("signature was not verified"), "{err}");

    // Without a quote: the four values; with --events, the events too.
    let (code, out, _) = run(&["measure", "tdx", "--event-log", &log, "--events"]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("RTMR0  {LIVE_RTMR0}\n")), "{out}");
    assert!(out.contains("events (20 in 2120 bytes):"), "{out}");
    assert!(out.contains("EV_EFI_ACTION"), "{out}");
    assert!(
        out.contains("Calling EFI Application from Boot Option"),
        "{out}"
    );
    assert!(out.contains("LOADED_IMAGE::LoadOptions"), "{out}");
}

#[test]
fn event_log_against_another_quote_names_the_rtmrs() {
    let log = td("attestation/tdx/ccel_live.bin");
    let quote = td("attestation/tdx/tdx_quote");
    let (code, out, err) = run(&[
        "measure",
        "tdx",
        "--event-log",
        &log,
        "--quote",
        &quote,
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    // RTMR3 is zero in both.
    assert!(
        err.contains("does not replay to the quote's RTMR0, RTMR1, RTMR2"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let q = &v["event_log"]["quote"];
    assert_eq!(q["matches"], serde_json::json!([false, false, false, true]));
    assert_eq!(q["signature_verified"], false);
    assert_eq!(v["event_log"]["rtmrs"][0], LIVE_RTMR0);
    assert_eq!(v["event_log"]["event_count"], 20);
    assert_eq!(
        v["event_log"]["input"]["sha256"].as_str().unwrap().len(),
        64
    );

    // An SGX quote has no RTMRs; a malformed log is refused with its reason.
    let sgx = td("attestation/sgx/sgx_quote");
    let (code, _, err) = run(&["measure", "tdx", "--event-log", &log, "--quote", &sgx]);
    assert_eq!(code, 1);
    assert!(err.contains("SGX quote"), "{err}");
    let (code, _, err) = run(&["measure", "tdx", "--event-log", &quote]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not a Spec ID Event03") || err.contains("event log:"),
        "{err}"
    );
}

/// Debian's OVMF.fd metadata (its last 4 KiB) at the end of a zero-filled image of its size.
fn tdvf_image(dir: &std::path::Path) -> (String, Vec<u8>) {
    let tail = std::fs::read(td("measure/tdx/debian_ovmf_2022.11-6+deb12u2_tail4k.bin")).unwrap();
    let mut img = vec![0u8; 2_097_152];
    let at = img.len() - tail.len();
    img[at..].copy_from_slice(&tail);
    let path = dir.join("OVMF.fd");
    std::fs::write(&path, &img).unwrap();
    (path.display().to_string(), img)
}

#[test]
fn mrtd_of_a_tdvf_image() {
    use cordon_measure::tdx::{mrtd, AddOrder};
    let dir = tempfile::tempdir().unwrap();
    let (path, img) = tdvf_image(dir.path());
    let (code, out, err) = run(&["measure", "tdx", "--tdvf", &path]);
    assert_eq!(code, 0, "{err}");
    let expected = hex::encode(mrtd(&img, AddOrder::PerPage).unwrap());
    assert_eq!(out, format!("{expected}\n"));

    let (code, out, _) = run(&[
        "measure",
        "tdx",
        "--tdvf",
        &path,
        "--order",
        "per-section",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let per_section = hex::encode(mrtd(&img, AddOrder::PerSection).unwrap());
    assert_eq!(v["tdvf"]["mrtd"], per_section);
    assert_ne!(per_section, expected);
    assert_eq!(v["tdvf"]["order"], "per-section");
    assert_eq!(v["tdvf"]["sections"].as_array().unwrap().len(), 6);
    assert_eq!(v["tdvf"]["input"]["path"], path);

    // Both inputs: labelled lines.
    let log = td("attestation/tdx/ccel_live.bin");
    let (code, out, _) = run(&["measure", "tdx", "--tdvf", &path, "--event-log", &log]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("MRTD   {expected}\nRTMR0  {LIVE_RTMR0}\n")),
        "{out}"
    );

    // Not a TDVF image; no input; a quote without a log.
    let (code, _, err) = run(&["measure", "tdx", "--tdvf", &log]);
    assert_eq!(code, 1);
    assert!(err.contains("no OVMF GUIDed table footer"), "{err}");
    let (code, _, _) = run(&["measure", "tdx"]);
    assert_eq!(code, 2);
    let quote = td("attestation/tdx/ccel_live_quote.dat");
    let (code, _, _) = run(&["measure", "tdx", "--tdvf", &path, "--quote", &quote]);
    assert_eq!(code, 2);
}
