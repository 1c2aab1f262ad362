//! `cordon bench kbs --quick` runs end to end and reports releases it checked (no timing asserted).

use std::process::Command;

mod common;
use common::*;

#[test]
fn bench_kbs_quick_reports_checked_releases() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("kbs.json");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/attestation");
    let out = Command::new(BIN)
        .args([
            "bench",
            "kbs",
            "--quick",
            "--postgres",
            "--sync",
            "full,normal",
            "--fixtures",
            fixtures,
            "--dir",
            &s(dir.path()),
            "--json",
            &s(&json),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refused at binding"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let loads = doc["loads"].as_array().unwrap();
    for path in ["sim_release", "snp_verified_refused_at_binding", "healthz"] {
        for sync in ["full", "normal"] {
            let row = loads
                .iter()
                .find(|r| r["path"] == path && r["synchronous"] == sync)
                .unwrap_or_else(|| panic!("no {path} row for {sync}"));
            assert!(row["count"].as_u64().unwrap() > 0, "{row}");
            if path == "sim_release" {
                assert!(row["dek_checked"].as_u64().unwrap() > 0, "{row}");
            }
        }
    }
    assert_eq!(doc["rotation"]["rewrapped"], 1001);
    // PostgreSQL, one and two replicas: releases counted (and the servers stopped without a
    // panic: the synchronous client must not be dropped inside the server's runtime).
    let pg = doc["postgres"].as_array().unwrap();
    for replicas in [1, 2] {
        let row = pg
            .iter()
            .find(|r| r["replicas"] == replicas)
            .unwrap_or_else(|| panic!("no PostgreSQL row for {replicas} replicas"));
        assert!(row["count"].as_u64().unwrap() > 0, "{row}");
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
