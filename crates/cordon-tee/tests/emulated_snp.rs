//! The emulated SEV-SNP platform through public APIs only, as the CLI and CI flows use it: a state
//! directory made once and reopened, evidence through `ConfigFsTsm`, verification with nothing but
//! the shipped certificates and the root's fingerprint, appraisal with policy files.

use cordon_attest::snp::Product;
use cordon_attest::{appraise, verify, Endorsements, Policy};
use cordon_tee::emulated::{EmulatedSnp, EmulatedSnpOptions, LaunchParams};
use cordon_tee::{ConfigFsTsm, EvidenceProvider};
use std::time::SystemTime;

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn policy_file(measurement: &[u8], host_data: &[u8], roots: &[[u8; 32]]) -> String {
    let roots: Vec<String> = roots
        .iter()
        .map(|r| format!("\"{}\"", hex::encode(r)))
        .collect();
    format!(
        "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\nworkload_data = \"{}\"\n{}",
        hex::encode(measurement),
        hex::encode(host_data),
        if roots.is_empty() {
            String::new()
        } else {
            format!("emulated_roots = [{}]\n", roots.join(", "))
        }
    )
}

#[test]
fn an_emulated_guest_attests_through_configfs_and_only_a_test_policy_accepts_it() {
    let dir = Dir(std::env::temp_dir().join(format!(
        "cordon-tee-emulated-snp-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    )));
    let measurement = [0xA1; 48];
    let host_data = [0xB2; 32];
    let options =
        EmulatedSnpOptions::new(Product::Genoa, LaunchParams::new(measurement, host_data));
    let made = EmulatedSnp::create(&dir.0, options).unwrap();
    let root = made.root_fingerprint();
    drop(made);

    // Another process (the runtime) opens the same machine.
    let emu = EmulatedSnp::open(&dir.0).unwrap();
    assert_eq!(emu.root_fingerprint(), root);
    let tsm = ConfigFsTsm::emulated_snp(emu).unwrap();
    assert!(tsm.is_emulated());

    // The runtime binds its keys into report_data; the verifier gets the bundle.
    let report_data = [0x3C; 64];
    let bundle = tsm.evidence_bundle(&report_data).unwrap();
    assert_eq!(bundle.snp_certs.len(), 3, "VCEK, ASK, ARK from auxblob");
    let endorsements = Endorsements {
        snp_certs: bundle.snp_certs.clone(),
        emulated_roots: vec![root],
        ..Endorsements::default()
    };
    let claims = verify(&bundle.evidence, &endorsements, SystemTime::now()).unwrap();
    assert!(claims.is_emulated() && !claims.hardware_backed);
    assert_eq!(claims.report_data, report_data);
    assert_eq!(claims.raw["product"], "Genoa");

    let test_policy = Policy::from_toml(&policy_file(&measurement, &host_data, &[root])).unwrap();
    assert!(test_policy
        .warnings()
        .iter()
        .any(|w| w.contains("EMULATED")));
    let verdict = appraise(&claims, &test_policy);
    assert!(verdict.is_accepted(), "{}", verdict.reasons());

    // The same guest, the same evidence, a production policy file: refused for being emulated.
    let production = Policy::from_toml(&policy_file(&measurement, &host_data, &[])).unwrap();
    let verdict = appraise(&claims, &production);
    assert!(!verdict.is_accepted());
    assert!(
        verdict.reasons().contains("EMULATED"),
        "{}",
        verdict.reasons()
    );

    // And a production verifier (no emulated roots) does not even produce claims.
    let production_endorsements = Endorsements {
        snp_certs: bundle.snp_certs,
        ..Endorsements::default()
    };
    let err = verify(
        &bundle.evidence,
        &production_endorsements,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains(&hex::encode(root)), "{err}");
}
