//! The emulated TDX platform end to end: quotes made through configfs-tsm (`ConfigFsTsm`), verified
//! by cordon-attest (dcap-qvl under the emulated root), appraised by a policy; and every refusal the
//! sim flow has, tried on emulated evidence.

use cordon_attest::dcap::{self, DcapCollateral, DcapError};
use cordon_attest::{
    appraise, verify, AppraisalFailure, Claims, Endorsements, EvidenceError, Platform, Policy,
    Verifier,
};
use cordon_tee::emulated::tdx::{
    CollateralOptions, EmulatedTcbStatus, EmulatedTdx, EmulatedTdxOptions, EmulatorError,
    TdxLaunch, EMULATED_ADVISORY, EMULATED_FMSPC,
};
use cordon_tee::{ConfigFsTsm, EvidenceProvider};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

const MR_TD: [u8; 48] = [0x11; 48];
const MR_CONFIG_ID: [u8; 48] = [0x22; 48];
const REPORT_DATA: [u8; 64] = [0x5A; 64];

fn launch() -> TdxLaunch {
    TdxLaunch {
        mr_td: MR_TD,
        mr_config_id: MR_CONFIG_ID,
        mr_owner: [0x33; 48],
        mr_owner_config: [0x44; 48],
        rtmrs: [[0xA0; 48], [0xA1; 48], [0xA2; 48], [0xA3; 48]],
        debug: false,
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn emulator(launch: TdxLaunch, collateral: CollateralOptions) -> EmulatedTdx {
    EmulatedTdx::generate(EmulatedTdxOptions {
        launch,
        collateral,
        ..EmulatedTdxOptions::new(now())
    })
    .unwrap()
}

fn default_emulator() -> EmulatedTdx {
    emulator(launch(), CollateralOptions::fresh(now()))
}

fn collateral(tdx: &EmulatedTdx) -> DcapCollateral {
    DcapCollateral::from_json(&tdx.collateral_json().unwrap()).unwrap()
}

fn endorsements(collateral: DcapCollateral, roots: &[[u8; 32]]) -> Endorsements {
    Endorsements {
        dcap_collateral: Some(collateral),
        emulated_roots: roots.to_vec(),
        ..Endorsements::default()
    }
}

/// A test policy for `tdx`: its launch, its root named.
fn policy(tdx: &EmulatedTdx) -> Policy {
    Policy {
        workload_data: Some(MR_CONFIG_ID.to_vec()),
        emulated_roots: vec![tdx.root_fingerprint().to_vec()],
        ..Policy::new(vec![Platform::Tdx], vec![MR_TD.to_vec()])
    }
}

/// Quote and collateral through the configfs-tsm provider, verified with the root named.
fn claims_via_configfs(tdx: EmulatedTdx, report_data: &[u8; 64]) -> Result<Claims, EvidenceError> {
    let root = tdx.root_fingerprint();
    let tsm = ConfigFsTsm::emulated_tdx(tdx).unwrap();
    let bundle = tsm.evidence_bundle(report_data).unwrap();
    let c = DcapCollateral::from_json(&bundle.dcap_collateral.unwrap()).unwrap();
    verify(&bundle.evidence, &endorsements(c, &[root]), now())
}

fn failures(claims: &Claims, policy: &Policy) -> Vec<AppraisalFailure> {
    appraise(claims, policy).failures
}

#[test]
fn quote_through_configfs_verifies_under_its_named_root_with_the_launch_claims() {
    let tdx = default_emulator();
    let root = tdx.root_fingerprint();
    let p = policy(&tdx);
    let tsm = ConfigFsTsm::emulated_tdx(tdx).unwrap();
    assert_eq!(tsm.platform(), Platform::Tdx);
    let bundle = tsm.evidence_bundle(&REPORT_DATA).unwrap();
    assert!(bundle.snp_certs.is_empty());
    let c = DcapCollateral::from_json(bundle.dcap_collateral.as_deref().unwrap()).unwrap();
    let claims = verify(&bundle.evidence, &endorsements(c, &[root]), now()).unwrap();

    assert_eq!(claims.platform, Platform::Tdx);
    assert!(!claims.hardware_backed && claims.is_emulated());
    assert_eq!(claims.emulated_root(), Some(root.to_vec()));
    assert_eq!(claims.launch_measurement, MR_TD.to_vec());
    assert_eq!(claims.workload_data, MR_CONFIG_ID.to_vec());
    let rtmrs: Vec<Vec<u8>> = (0..4).map(|i| vec![0xA0 + i; 48]).collect();
    assert_eq!(claims.runtime_measurements, rtmrs);
    assert_eq!(claims.report_data, REPORT_DATA);
    assert!(!claims.debug);
    assert_eq!(claims.platform_id, Some(EMULATED_FMSPC.to_vec()));
    let tcb = claims.tcb.as_ref().unwrap();
    assert_eq!(tcb.status.as_deref(), Some("UpToDate"));
    assert!(tcb.advisory_ids.is_empty());
    assert_eq!(tcb.components.get("pce_svn"), Some(&11));
    assert_eq!(tcb.components.get("qe_isv_svn"), Some(&4));
    assert_eq!(tcb.components.get("tee_tcb_svn_00"), Some(&5));
    // MROWNER and MROWNERCONFIG are in the raw quote fields.
    let raw = claims.raw.to_string();
    assert!(raw.contains(&hex::encode([0x33; 48])), "{raw}");

    let verdict = appraise(&claims, &p);
    assert!(verdict.is_accepted(), "{}", verdict.reasons());
    // The test policy says so when loaded.
    assert!(p.warnings().iter().any(|w| w.contains("EMULATED")));
}

#[test]
fn production_endorsements_and_production_policy_refuse_emulated_evidence() {
    let tdx = default_emulator();
    let root = tdx.root_fingerprint();
    let c = collateral(&tdx);
    let quote = tdx.quote(&REPORT_DATA).unwrap();

    // Production endorsements name no emulated root: verification refuses, naming the root.
    let err = verify(&quote, &endorsements(c.clone(), &[]), now()).unwrap_err();
    match &err {
        EvidenceError::Dcap(DcapError::UnknownRoot { fingerprint }) => {
            assert_eq!(fingerprint, &hex::encode(root))
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains(&hex::encode(root)), "{err}");
    assert!(
        err.to_string().contains("not the Intel SGX Root CA"),
        "{err}"
    );
    // The uncached entry point agrees.
    assert!(matches!(
        dcap::verify(&quote, &c, now()),
        Err(DcapError::UnknownRoot { .. })
    ));

    // Verified under the named root, a production policy (no emulated roots) still refuses.
    let claims = verify(&quote, &endorsements(c, &[root]), now()).unwrap();
    let production = Policy {
        emulated_roots: Vec::new(),
        ..policy(&tdx)
    };
    let f = failures(&claims, &production);
    assert!(
        matches!(f.as_slice(), [AppraisalFailure::EmulatedNotAllowed { root: r, .. }] if *r == hex::encode(root)),
        "{f:?}"
    );
    // Even one that accepts anything else (debug, any TCB status).
    let loose = Policy {
        allow_debug: true,
        tcb_statuses: Some(vec!["UpToDate".into(), "OutOfDate".into()]),
        ..production
    };
    assert!(!appraise(&claims, &loose).is_accepted());
}

#[test]
fn wrong_measurement_is_refused() {
    let tdx = emulator(
        TdxLaunch {
            mr_td: [0x99; 48],
            ..launch()
        },
        CollateralOptions::fresh(now()),
    );
    let p = policy(&tdx);
    let claims = claims_via_configfs(tdx, &REPORT_DATA).unwrap();
    let f = failures(&claims, &p);
    assert!(
        matches!(f.as_slice(), [AppraisalFailure::MeasurementNotAllowed { found, .. }] if *found == hex::encode([0x99; 48])),
        "{f:?}"
    );
}

#[test]
fn debug_td_is_refused_unless_the_policy_allows_debug() {
    let tdx = emulator(
        TdxLaunch {
            debug: true,
            ..launch()
        },
        CollateralOptions::fresh(now()),
    );
    let p = policy(&tdx);
    let claims = claims_via_configfs(tdx, &REPORT_DATA).unwrap();
    assert!(claims.debug);
    let f = failures(&claims, &p);
    assert!(
        matches!(f.as_slice(), [AppraisalFailure::DebugNotAllowed]),
        "{f:?}"
    );
    let debug_ok = Policy {
        allow_debug: true,
        ..p
    };
    assert!(appraise(&claims, &debug_ok).is_accepted());
}

#[test]
fn out_of_date_tcb_is_refused_by_default() {
    let tdx = emulator(
        launch(),
        CollateralOptions {
            tcb_status: EmulatedTcbStatus::OutOfDate,
            ..CollateralOptions::fresh(now())
        },
    );
    let p = policy(&tdx);
    let claims = claims_via_configfs(tdx, &REPORT_DATA).unwrap();
    let tcb = claims.tcb.as_ref().unwrap();
    assert_eq!(tcb.status.as_deref(), Some("OutOfDate"));
    assert_eq!(tcb.advisory_ids, vec![EMULATED_ADVISORY.to_string()]);
    let f = failures(&claims, &p);
    assert!(
        f.iter().any(|f| matches!(f, AppraisalFailure::TcbStatusNotAllowed { found, .. } if found == "OutOfDate")),
        "{f:?}"
    );
}

#[test]
fn wrong_workload_data_is_refused() {
    let tdx = emulator(
        TdxLaunch {
            mr_config_id: [0x77; 48],
            ..launch()
        },
        CollateralOptions::fresh(now()),
    );
    let p = policy(&tdx);
    let claims = claims_via_configfs(tdx, &REPORT_DATA).unwrap();
    let f = failures(&claims, &p);
    assert!(
        matches!(f.as_slice(), [AppraisalFailure::WorkloadDataMismatch { found, expected }]
            if *found == hex::encode([0x77; 48]) && *expected == hex::encode(MR_CONFIG_ID)),
        "{f:?}"
    );
}

#[test]
fn expired_and_not_yet_valid_collateral_are_refused() {
    let tdx = default_emulator();
    let root = tdx.root_fingerprint();
    let e = endorsements(collateral(&tdx), &[root]);
    let quote = tdx.quote(&REPORT_DATA).unwrap();
    let next_update = tdx.collateral_options().next_update;
    // At nextUpdate - 1 s it verifies; past it, refused as expired.
    assert!(verify(&quote, &e, next_update - Duration::from_secs(1)).is_ok());
    let err = verify(&quote, &e, next_update + Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(&err, EvidenceError::Dcap(DcapError::Expired { .. })),
        "{err}"
    );
    // Before its issue date: not yet valid.
    let issue = tdx.collateral_options().issue_date;
    let err = verify(&quote, &e, issue - Duration::from_secs(60)).unwrap_err();
    assert!(
        matches!(&err, EvidenceError::Dcap(DcapError::NotYetValid { .. })),
        "{err}"
    );

    // Collateral issued with a window already past.
    let stale = emulator(
        launch(),
        CollateralOptions {
            issue_date: now() - Duration::from_secs(40 * 86_400),
            next_update: now() - Duration::from_secs(10 * 86_400),
            ..CollateralOptions::fresh(now())
        },
    );
    let err = claims_via_configfs(stale, &REPORT_DATA).unwrap_err();
    assert!(
        matches!(&err, EvidenceError::Dcap(DcapError::Expired { .. })),
        "{err}"
    );
}

#[test]
fn report_data_is_bound_by_the_quote_signature() {
    let tdx = default_emulator();
    let root = tdx.root_fingerprint();
    let e = endorsements(collateral(&tdx), &[root]);
    let quote = tdx.quote(&REPORT_DATA).unwrap();
    let claims = verify(&quote, &e, now()).unwrap();
    assert_eq!(claims.report_data, REPORT_DATA);
    // REPORTDATA is the last 64 bytes of the 584-byte body after the 48-byte header; rebinding the
    // quote to another nonce breaks the attestation key's signature.
    let mut rebound = quote.clone();
    rebound[48 + 520..48 + 584].copy_from_slice(&[0xA5; 64]);
    let err = verify(&rebound, &e, now()).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    // Each report_data gets its own quote.
    let other = tdx.quote(&[1; 64]).unwrap();
    assert_eq!(verify(&other, &e, now()).unwrap().report_data, [1; 64]);
}

#[test]
fn tampered_quote_bytes_are_refused() {
    let tdx = default_emulator();
    let root = tdx.root_fingerprint();
    let e = endorsements(collateral(&tdx), &[root]);
    let quote = tdx.quote(&REPORT_DATA).unwrap();
    let verifier = Verifier::new(e.clone());
    assert!(verifier.verify(&quote, now()).is_ok());
    // Header, body (TEE_TCB_SVN, MRTD, MRCONFIGID, RTMR3, TD attributes), quote signature,
    // attestation key, QE report and its signature, QE auth data, the PCK chain.
    let body = 48;
    let sig_data = body + 584 + 4;
    let qe_report = sig_data + 64 + 64 + 6;
    let offsets = [
        8,
        body,
        body + 120,
        body + 136,
        body + 184,
        body + 520 - 1,
        sig_data + 10,
        sig_data + 64 + 10,
        qe_report + 10,
        qe_report + 330,
        qe_report + 384 + 10,
        qe_report + 384 + 64 + 2 + 5,
        quote.len() - 100,
    ];
    for at in offsets {
        let mut bad = quote.clone();
        bad[at] ^= 0x01;
        assert!(verify(&bad, &e, now()).is_err(), "byte {at} flipped");
        // The caching verifier, which has seen the good quote, refuses it too.
        assert!(verifier.verify(&bad, now()).is_err(), "byte {at} (cached)");
    }
}

#[test]
fn revoked_pck_certificate_is_refused() {
    let tdx = emulator(
        launch(),
        CollateralOptions {
            revoke_pck: true,
            ..CollateralOptions::fresh(now())
        },
    );
    let err = claims_via_configfs(tdx, &REPORT_DATA).unwrap_err();
    assert!(err.to_string().contains("Revoked"), "{err}");
}

#[test]
fn chains_and_collateral_under_another_test_root_are_refused() {
    let a = default_emulator();
    let b = default_emulator();
    let (ra, rb) = (a.root_fingerprint(), b.root_fingerprint());
    assert_ne!(ra, rb);
    let quote_b = b.quote(&REPORT_DATA).unwrap();

    // B's quote where only A's root is named: unknown root, named by its fingerprint.
    let err = verify(&quote_b, &endorsements(collateral(&b), &[ra]), now()).unwrap_err();
    assert!(
        matches!(&err, EvidenceError::Dcap(DcapError::UnknownRoot { fingerprint }) if *fingerprint == hex::encode(rb)),
        "{err}"
    );

    // A's quote with B's collateral, both roots named: the collateral's chains end elsewhere.
    let quote_a = a.quote(&REPORT_DATA).unwrap();
    let err = verify(&quote_a, &endorsements(collateral(&b), &[ra, rb]), now()).unwrap_err();
    assert!(
        matches!(&err, EvidenceError::Dcap(DcapError::CollateralRoot { expected, found, .. })
            if *expected == hex::encode(ra) && *found == hex::encode(rb)),
        "{err}"
    );

    // A's collateral whose TCB info signature is B's (the same TCB info text, signed by B's TCB
    // signing key): dcap-qvl refuses the signature under A's chain.
    let options = *a.collateral_options();
    let mut b_same = default_emulator();
    b_same.set_collateral(options);
    let json_a: serde_json::Value = serde_json::from_slice(&a.collateral_json().unwrap()).unwrap();
    let json_b: serde_json::Value =
        serde_json::from_slice(&b_same.collateral_json().unwrap()).unwrap();
    assert_eq!(json_a["tcb_info"], json_b["tcb_info"]);
    let mut spliced = json_a.clone();
    spliced["tcb_info_signature"] = json_b["tcb_info_signature"].clone();
    let c = DcapCollateral::from_json(spliced.to_string().as_bytes()).unwrap();
    let err = verify(&quote_a, &endorsements(c, &[ra, rb]), now()).unwrap_err();
    assert!(err.to_string().contains("tcb_info"), "{err}");
    // And the QE identity's.
    let mut spliced = json_a;
    spliced["qe_identity_signature"] = json_b["qe_identity_signature"].clone();
    let c = DcapCollateral::from_json(spliced.to_string().as_bytes()).unwrap();
    let err = verify(&quote_a, &endorsements(c, &[ra, rb]), now()).unwrap_err();
    assert!(err.to_string().contains("qe_identity"), "{err}");
}

#[test]
fn cached_verdicts_under_an_emulated_root_never_serve_a_verifier_without_it() {
    let tdx = default_emulator();
    let root = tdx.root_fingerprint();
    let c = collateral(&tdx);
    let q1 = tdx.quote(&[1; 64]).unwrap();
    let q2 = tdx.quote(&[2; 64]).unwrap();

    let cache = dcap::Verifier::new();
    assert!(cache.verify_with_roots(&q1, &c, &[root], now()).is_ok());
    let second = cache.verify_with_roots(&q2, &c, &[root], now()).unwrap();
    assert_eq!(second.report_data, [2; 64]);
    assert!(second.is_emulated());
    // A hit answers with the claims the uncached path gives the second quote, raw members too.
    assert_eq!(
        second,
        dcap::verify_with_roots(&q2, &c, &[root], now()).unwrap()
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1), "{stats:?}");
    // The same cache, asked without the root: refused, and not from the cache.
    assert!(matches!(
        cache.verify(&q2, &c, now()),
        Err(DcapError::UnknownRoot { .. })
    ));
    assert!(matches!(
        cache.verify_with_roots(&q2, &c, &[[7; 32]], now()),
        Err(DcapError::UnknownRoot { .. })
    ));
    assert_eq!(cache.stats().hits, 1);

    // Through the evidence verifier: endorsements carry the roots to the cache.
    let v = Verifier::new(endorsements(c, &[root]));
    assert!(v.verify(&q1, now()).is_ok());
    assert!(v.verify(&q2, now()).is_ok());
    assert_eq!(v.dcap_stats().hits, 1);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "cordon-emulated-tdx-{name}-{}-{:016x}",
            std::process::id(),
            rand_u64()
        ));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

#[test]
fn state_directory_round_trips_with_private_keys() {
    let tmp = TempDir::new("state");
    let dir = tmp.0.join("emu");
    let options = EmulatedTdxOptions {
        launch: launch(),
        ..EmulatedTdxOptions::new(now())
    };
    let created = EmulatedTdx::create(&dir, options.clone()).unwrap();
    for stem in ["root_ca", "pck_ca", "pck", "tcb_signing", "attestation"] {
        let key = dir.join(format!("{stem}.key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        assert!(key.exists());
    }
    let toml = std::fs::read_to_string(dir.join("emulator.toml")).unwrap();
    assert!(
        toml.contains("EMULATED") && toml.contains(&hex::encode(MR_TD)),
        "{toml}"
    );

    let opened = EmulatedTdx::open(&dir).unwrap();
    assert_eq!(opened.root_fingerprint(), created.root_fingerprint());
    assert_eq!(opened.launch(), &launch());
    assert_eq!(
        opened.collateral_json().unwrap(),
        created.collateral_json().unwrap()
    );
    // A quote of the reopened platform verifies with the collateral of the one created.
    let quote = opened.quote(&REPORT_DATA).unwrap();
    let e = endorsements(collateral(&created), &[created.root_fingerprint()]);
    assert_eq!(
        verify(&quote, &e, now()).unwrap().launch_measurement,
        MR_TD.to_vec()
    );

    // A changed launch is saved and read back.
    let mut relaunched = opened;
    relaunched.set_launch(TdxLaunch {
        debug: true,
        ..launch()
    });
    relaunched.save_state(&dir).unwrap();
    assert!(EmulatedTdx::open(&dir).unwrap().launch().debug);

    // Creating over an existing state is refused.
    assert!(matches!(
        EmulatedTdx::create(&dir, options),
        Err(EmulatorError::Exists { .. })
    ));
}

#[test]
fn damaged_state_directories_get_typed_errors() {
    let tmp = TempDir::new("damaged");
    let fresh = |name: &str| {
        let dir = tmp.0.join(name);
        EmulatedTdx::create(&dir, EmulatedTdxOptions::new(now())).unwrap();
        dir
    };

    let dir = fresh("missing");
    std::fs::remove_file(dir.join("pck.key")).unwrap();
    let err = EmulatedTdx::open(&dir).unwrap_err();
    assert!(
        matches!(&err, EmulatorError::Io { path, op: "read", .. } if path.ends_with("pck.key")),
        "{err}"
    );

    let dir = fresh("badkey");
    std::fs::write(dir.join("attestation.key"), "zz\n").unwrap();
    let err = EmulatedTdx::open(&dir).unwrap_err();
    assert!(
        matches!(&err, EmulatorError::Key { path, .. } if path.ends_with("attestation.key")),
        "{err}"
    );
    std::fs::write(dir.join("attestation.key"), "00".repeat(32)).unwrap();
    assert!(matches!(
        EmulatedTdx::open(&dir),
        Err(EmulatorError::Key { .. })
    ));

    let dir = fresh("swapped");
    std::fs::copy(dir.join("pck_ca.pem"), dir.join("pck.pem")).unwrap();
    let err = EmulatedTdx::open(&dir).unwrap_err();
    assert!(
        matches!(&err, EmulatorError::Certificate { path, reason } if path.ends_with("pck.pem") && reason.contains("public key")),
        "{err}"
    );

    let dir = fresh("notpem");
    std::fs::write(dir.join("root_ca.pem"), "not a certificate").unwrap();
    assert!(matches!(
        EmulatedTdx::open(&dir),
        Err(EmulatorError::Certificate { .. })
    ));

    let dir = fresh("toml");
    let state = dir.join("emulator.toml");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("mr_td = \"", "mr_td = \"ff")).unwrap();
    let err = EmulatedTdx::open(&dir).unwrap_err();
    assert!(
        matches!(&err, EmulatorError::State { reason, .. } if reason.contains("mr_td") && reason.contains("49 bytes")),
        "{err}"
    );
    std::fs::write(&state, "launch = 3").unwrap();
    assert!(matches!(
        EmulatedTdx::open(&dir),
        Err(EmulatorError::State { .. })
    ));
}

#[test]
fn expired_test_pki_is_refused_naming_the_certificate() {
    let year = Duration::from_secs(365 * 86_400);
    let tdx = EmulatedTdx::generate(EmulatedTdxOptions {
        launch: launch(),
        certificates_valid: (now() - 3 * year, now() - year),
        ..EmulatedTdxOptions::new(now())
    })
    .unwrap();
    let err = claims_via_configfs(tdx, &REPORT_DATA).unwrap_err();
    match &err {
        EvidenceError::Dcap(DcapError::Expired { item, .. }) => {
            assert!(item.contains("EMULATED"), "{item}")
        }
        other => panic!("unexpected {other}"),
    }
}

/// A TD's event log shipped with its quote: the verifier replays it against the quote's RTMRs and
/// lists its events in the claims; a log that does not replay to them (an event altered, dropped or
/// added by the host) is never shown as what was measured.
#[test]
fn a_shipped_event_log_is_replayed_against_the_rtmrs_and_never_shown_when_it_lies() {
    const CCEL: &[u8] = include_bytes!("../../../testdata/attestation/tdx/ccel_live.bin");
    let log = cordon_attest::eventlog::parse(CCEL).unwrap();
    let tdx = emulator(
        TdxLaunch {
            rtmrs: log.replay(),
            ..launch()
        },
        CollateralOptions::fresh(now()),
    );
    let root = tdx.root_fingerprint();
    let tsm = cordon_tee::TdxEventLog::from_bytes(
        Box::new(ConfigFsTsm::emulated_tdx(tdx).unwrap()),
        CCEL,
    )
    .unwrap();
    let bundle = tsm.evidence_bundle(&REPORT_DATA).unwrap();
    let shipped = cordon_attest::ShippedEndorsements {
        snp_certs: vec![],
        dcap_collateral: Some(DcapCollateral::from_json(&bundle.dcap_collateral.unwrap()).unwrap()),
        tdx_event_log: bundle.tdx_event_log.clone(),
    };
    let verifier = Verifier::new(Endorsements {
        emulated_roots: vec![root],
        ..Endorsements::default()
    });
    let claims = verifier
        .verify_shipped(&bundle.evidence, &shipped, now())
        .unwrap();
    let events = claims.raw[cordon_attest::EVENT_LOG_CLAIM]
        .as_array()
        .unwrap();
    assert_eq!(events.len(), log.events.len());
    // An event's digest altered: the replay no longer gives RTMRs the quote signed. (Only the
    // digests are bound by the RTMRs; an event's data is shown as the log has it.)
    let mut altered = shipped.clone();
    let mut bytes = bundle.tdx_event_log.clone().unwrap();
    let digest = log.events[5].sha384;
    let at = bytes
        .windows(48)
        .position(|w| w == digest)
        .expect("the event's digest is in the log");
    bytes[at + 7] ^= 1;
    altered.tdx_event_log = Some(bytes);
    let not_taken = |shipped: &cordon_attest::ShippedEndorsements| {
        let claims = verifier
            .verify_shipped(&bundle.evidence, shipped, now())
            .unwrap();
        assert!(claims.raw.get(cordon_attest::EVENT_LOG_CLAIM).is_none());
        claims.raw[cordon_attest::EVENT_LOG_ERROR_CLAIM]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The quote stands (its RTMRs are signed and policies pin them), but the log's events are
    // never claims, and the claims say why.
    let err = not_taken(&altered);
    assert!(
        err.contains("RTMR0") || err.contains("rtmr0") || err.contains("RTMR 0"),
        "{err}"
    );
    // A log from another boot of the same firmware (RTMR2 differs): not taken, naming RTMR2.
    let other = include_bytes!("../../../testdata/attestation/tdx/ccel_live_tdreport_log.bin");
    let swapped = cordon_attest::ShippedEndorsements {
        tdx_event_log: Some(other.to_vec()),
        ..shipped.clone()
    };
    let err = not_taken(&swapped);
    assert!(
        err.contains("RTMR2") || err.contains("rtmr2") || err.contains("RTMR 2"),
        "{err}"
    );
    // Junk: not taken either.
    let junk = cordon_attest::ShippedEndorsements {
        tdx_event_log: Some(b"not a log".to_vec()),
        ..shipped.clone()
    };
    assert!(not_taken(&junk).contains("event log"));
    // Without a log, the quote still verifies; the claims then list no events.
    let none = cordon_attest::ShippedEndorsements {
        tdx_event_log: None,
        ..shipped
    };
    let claims = verifier
        .verify_shipped(&bundle.evidence, &none, now())
        .unwrap();
    assert!(claims.raw.get(cordon_attest::EVENT_LOG_CLAIM).is_none());
}
