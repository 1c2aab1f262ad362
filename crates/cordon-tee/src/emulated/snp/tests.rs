//! The emulated SNP platform, produced here and verified with cordon-attest, as a verifier on another
//! machine would: through `cordon_attest::verify` with endorsements, then `appraise` with a policy.

use super::*;
use crate::testutil::TestDir;
use crate::{ConfigFsTsm, EvidenceProvider, TeeError};
use cordon_attest::snp::{AttestationReport, SnpError, POLICY_DEBUG, POLICY_MIGRATE_MA};
use cordon_attest::{
    appraise, verify, AppraisalFailure, Claims, Endorsements, EvidenceError, MinTcbFloor, Platform,
    Policy,
};
use std::sync::OnceLock;

const MEASUREMENT: [u8; 48] = [0x4D; 48];
const HOST_DATA: [u8; 32] = [0xC0; 32];

/// One Milan emulator for the tests of this file: two RSA keys are generated once.
fn milan() -> &'static EmulatedSnp {
    static EMU: OnceLock<EmulatedSnp> = OnceLock::new();
    EMU.get_or_init(|| {
        EmulatedSnp::generate(EmulatedSnpOptions::new(
            Product::Milan,
            LaunchParams::new(MEASUREMENT, HOST_DATA),
        ))
        .unwrap()
    })
}

/// A second test root, for the tests that need another chain.
fn other_root() -> &'static EmulatedSnp {
    static EMU: OnceLock<EmulatedSnp> = OnceLock::new();
    EMU.get_or_init(|| {
        EmulatedSnp::generate(EmulatedSnpOptions::new(
            Product::Milan,
            LaunchParams::new(MEASUREMENT, HOST_DATA),
        ))
        .unwrap()
    })
}

fn endorsed(emu: &EmulatedSnp) -> Endorsements {
    Endorsements {
        snp_certs: emu.certificates(),
        emulated_roots: vec![emu.root_fingerprint()],
        ..Endorsements::default()
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// What a test deployment's policy says: this measurement and HOST_DATA, this root, the default TCB
/// floor, VMPL 0.
fn test_policy(emu: &EmulatedSnp) -> Policy {
    Policy {
        workload_data: Some(HOST_DATA.to_vec()),
        emulated_roots: vec![emu.root_fingerprint().to_vec()],
        ..Policy::new(vec![Platform::Snp], vec![MEASUREMENT.to_vec()])
    }
}

fn claims_of(emu: &EmulatedSnp, report_data: &[u8; 64]) -> Claims {
    verify(&emu.report(report_data), &endorsed(emu), now()).unwrap()
}

#[test]
fn report_verifies_with_its_root_named_and_claims_are_as_launched() {
    let emu = milan();
    let rd = [0x5A; 64];
    let report = emu.report(&rd);
    let c = verify(&report, &endorsed(emu), now()).unwrap();
    assert_eq!(c.platform, Platform::Snp);
    assert!(!c.hardware_backed && c.is_emulated());
    assert_eq!(c.emulated_root(), Some(emu.root_fingerprint().to_vec()));
    assert_eq!(c.report_data, rd);
    assert_eq!(c.launch_measurement, MEASUREMENT);
    assert_eq!(c.workload_data, HOST_DATA);
    assert_eq!(c.platform_id.as_deref(), Some(&emu.options().chip_id[..]));
    assert!(!c.debug);
    let tcb = &c.tcb.as_ref().unwrap().components;
    let t = SnpTcb::up_to_date(Product::Milan);
    assert_eq!(tcb["bootloader"], u64::from(t.bootloader));
    assert_eq!(tcb["snp"], u64::from(t.snp));
    assert_eq!(tcb["microcode"], u64::from(t.microcode));
    assert_eq!(c.raw["policy"], LaunchParams::DEFAULT_POLICY);
    assert_eq!(c.raw["vmpl"], 0);
    assert_eq!(c.raw["product"], "Milan");
    assert_eq!(c.raw["vcek_product_name"], "Milan-B1");
    assert_eq!(c.raw["migrate_ma"], false);
    // The attestation key is the SHA-384 of the VCEK's SEC1 point, as for a real VCEK.
    let point = emu.vcek_key.verifying_key().to_encoded_point(false);
    assert_eq!(c.attestation_key, Sha384::digest(point.as_bytes()).to_vec());
    // The test policy accepts it, and says why nothing failed.
    let v = appraise(&c, &test_policy(emu));
    assert!(v.is_accepted(), "{}", v.reasons());
}

#[test]
fn report_layout_follows_the_abi_table_and_the_signature_is_firmware_style() {
    use p384::ecdsa::signature::Verifier as _;
    let emu = milan();
    let rd = [0x11; 64];
    let report = emu.report(&rd);
    // Offsets from the SNP ABI's ATTESTATION_REPORT table, read here independently of the parser.
    assert_eq!(u32::from_le_bytes(report[0..4].try_into().unwrap()), 3);
    assert_eq!(
        u32::from_le_bytes(report[0x34..0x38].try_into().unwrap()),
        1
    );
    assert_eq!(report[0x50..0x90], rd);
    assert_eq!(report[0x90..0xC0], MEASUREMENT);
    assert_eq!(report[0xC0..0xE0], HOST_DATA);
    assert_eq!(report[0x188..0x18B], [0x19, 0x01, 1]);
    assert_eq!(report[0x1A0..0x1E0], emu.options().chip_id);
    assert_eq!(report[0x140..0x160], emu.options().report_id);
    let parsed = AttestationReport::parse(&report).unwrap();
    assert_eq!(parsed.product_from_cpuid(), Some(Product::Milan));
    assert_eq!(
        parsed.reported_tcb,
        emu.options().reported_tcb.encode(Product::Milan)
    );
    assert_eq!((parsed.current_major, parsed.current_minor), (1, 55));
    // R and S: 48 little-endian bytes at 0x2A0 and 0x2E8, verified by RustCrypto directly.
    let mut r = report[0x2A0..0x2A0 + 48].to_vec();
    let mut s = report[0x2E8..0x2E8 + 48].to_vec();
    r.reverse();
    s.reverse();
    let sig = p384::ecdsa::Signature::from_scalars(
        <[u8; 48]>::try_from(r).unwrap(),
        <[u8; 48]>::try_from(s).unwrap(),
    )
    .unwrap();
    emu.vcek_key
        .verifying_key()
        .verify(&report[..SIGNED_LEN], &sig)
        .unwrap();
    assert!(report[0x2A0 + 48..0x2E8].iter().all(|&b| b == 0));
    assert!(report[0x2E8 + 48..].iter().all(|&b| b == 0));
    // A fresh report per request: another report_data, another signature.
    assert_ne!(emu.report(&[0x12; 64])[0x2A0..0x2E8], report[0x2A0..0x2E8]);
}

#[test]
fn refused_without_its_root_naming_the_root() {
    let emu = milan();
    let report = emu.report(&[1; 64]);
    let fp = hex::encode(emu.root_fingerprint());
    // Production endorsements: the certificates shipped with the report, no emulated root.
    let production = Endorsements {
        snp_certs: emu.certificates(),
        ..Endorsements::default()
    };
    let another = Endorsements {
        emulated_roots: vec![other_root().root_fingerprint()],
        ..production.clone()
    };
    for e in [&production, &another] {
        let err = verify(&report, e, now()).unwrap_err();
        assert!(
            matches!(&err, EvidenceError::Snp(SnpError::UnnamedRoot { fingerprint, .. }) if *fingerprint == fp),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("not a pinned AMD root nor a named emulated root"),
            "{text}"
        );
        assert!(text.contains("EMULATED"), "the root's subject: {text}");
    }
    // The VCEK alone: its issuer is no pinned ASK and nothing else was given.
    let alone = Endorsements {
        snp_certs: vec![emu.certificates()[0].clone()],
        emulated_roots: vec![emu.root_fingerprint()],
        ..Endorsements::default()
    };
    assert!(matches!(
        verify(&report, &alone, now()),
        Err(EvidenceError::Snp(SnpError::UnknownIssuer(_)))
    ));
    // The ASK without its ARK.
    let certs = emu.certificates();
    let no_ark = Endorsements {
        snp_certs: certs[..2].to_vec(),
        ..alone.clone()
    };
    let err = verify(&report, &no_ark, now()).unwrap_err();
    assert!(
        err.to_string().contains("without a self-signed ARK"),
        "{err}"
    );
    // The plain `snp::verify` of existing callers knows no emulated root.
    let err = cordon_attest::snp::verify(&report, &certs, now()).unwrap_err();
    assert!(matches!(err, SnpError::UnnamedRoot { .. }), "{err}");
}

#[test]
fn production_policies_refuse_emulated_evidence() {
    let emu = milan();
    let c = claims_of(emu, &[2; 64]);
    // The inspection default (any measurement): still refused, for being emulated.
    let v = appraise(&c, &Policy::hardware_default());
    assert_eq!(v.failures.len(), 1, "{}", v.reasons());
    assert!(
        matches!(&v.failures[0], AppraisalFailure::EmulatedNotAllowed { root, allowed } if *root == hex::encode(emu.root_fingerprint()) && allowed.is_empty()),
        "{}",
        v.reasons()
    );
    // A release policy that pins exactly this guest, but names no emulated root.
    let release = Policy {
        emulated_roots: Vec::new(),
        ..test_policy(emu)
    };
    let v = appraise(&c, &release);
    assert!(v.reasons().contains("EMULATED"), "{}", v.reasons());
    // A test policy naming another test root.
    let other = Policy {
        emulated_roots: vec![other_root().root_fingerprint().to_vec()],
        ..test_policy(emu)
    };
    assert!(!appraise(&c, &other).is_accepted());
}

/// Verifies the emulator's report and appraises it with `policy`; returns the failures' text.
fn refusal(emu: &EmulatedSnp, policy: &Policy) -> String {
    let c = claims_of(emu, &[3; 64]);
    let v = appraise(&c, policy);
    assert!(!v.is_accepted(), "accepted: {c:?}");
    v.reasons()
}

#[test]
fn the_sim_flow_refusals_hold_on_emulated_snp() {
    let emu = milan();
    let base = test_policy(emu);
    assert!(appraise(&claims_of(emu, &[3; 64]), &base).is_accepted());

    // Wrong measurement: the guest launched another image.
    let other_image = emu
        .with_launch(LaunchParams::new([0x99; 48], HOST_DATA))
        .unwrap();
    let r = refusal(&other_image, &base);
    assert!(
        r.contains("launch_measurement") && r.contains(&hex::encode([0x99; 48])),
        "{r}"
    );

    // Debug guest.
    let mut debug = LaunchParams::new(MEASUREMENT, HOST_DATA);
    debug.policy |= POLICY_DEBUG;
    let r = refusal(&emu.with_launch(debug).unwrap(), &base);
    assert!(r.contains("debug"), "{r}");

    // MIGRATE_MA.
    let mut ma = LaunchParams::new(MEASUREMENT, HOST_DATA);
    ma.policy |= POLICY_MIGRATE_MA;
    let r = refusal(&emu.with_launch(ma).unwrap(), &base);
    assert!(r.contains("migrate_ma"), "{r}");

    // Wrong workload data (HOST_DATA the host chose).
    let r = refusal(
        &emu.with_launch(LaunchParams::new(MEASUREMENT, [0x01; 32]))
            .unwrap(),
        &base,
    );
    assert!(r.contains("workload_data"), "{r}");

    // A report requested for a less privileged VMPL than the policy allows.
    let vmpl2 = ConfigFsTsm::emulated_snp(
        emu.with_launch(LaunchParams::new(MEASUREMENT, HOST_DATA))
            .unwrap(),
    )
    .unwrap()
    .with_privlevel(2);
    let c = verify(&vmpl2.evidence(&[3; 64]).unwrap(), &endorsed(emu), now()).unwrap();
    assert!(appraise(&c, &base)
        .reasons()
        .contains("vmpl: report from VMPL 2"));

    // Unlisted chip.
    let listed = Policy {
        allowed_chip_ids: Some(vec![[0x77; 64].to_vec()]),
        ..base.clone()
    };
    let r = refusal(emu, &listed);
    assert!(
        r.contains("chip_id") && r.contains(&hex::encode(emu.options().chip_id)),
        "{r}"
    );
    let this_chip = Policy {
        allowed_chip_ids: Some(vec![emu.options().chip_id.to_vec()]),
        ..base.clone()
    };
    assert!(appraise(&claims_of(emu, &[3; 64]), &this_chip).is_accepted());
}

#[test]
fn old_tcb_is_refused_by_the_default_floor() {
    let emu = milan();
    let mut options = emu.options().clone();
    // SNP firmware SPL 0x18, before AMD-SB-3020's fix: certified by its own VCEK, so it verifies.
    options.reported_tcb.snp = 0x18;
    let old = emu.under_same_root(options).unwrap();
    assert_eq!(old.root_fingerprint(), emu.root_fingerprint());
    let c = claims_of(&old, &[4; 64]);
    assert_eq!(c.tcb.as_ref().unwrap().components["snp"], 0x18);
    let r = refusal(&old, &test_policy(emu));
    assert!(
        r.contains("tcb.snp: 24 is below the default minimum 27 for Milan"),
        "{r}"
    );
    // The old chip's report with the new chip's VCEK: the VCEK does not certify it.
    let mixed = Endorsements {
        snp_certs: emu.certificates(),
        emulated_roots: vec![emu.root_fingerprint()],
        ..Endorsements::default()
    };
    assert!(verify(&old.report(&[4; 64]), &mixed, now()).is_err());
}

#[test]
fn reported_tcb_must_be_the_certified_one() {
    let emu = milan();
    // A VCEK issued for one TCB, the firmware reporting another (committed differs, reported lower).
    let mut options = emu.options().clone();
    options.committed_tcb = Some(options.reported_tcb);
    options.reported_tcb.microcode -= 1;
    let lowered = emu.under_same_root(options).unwrap();
    // Its own VCEK certifies the lowered reported TCB: fine.
    assert!(verify(&lowered.report(&[0; 64]), &endorsed(&lowered), now()).is_ok());
    // Under the first emulator's VCEK (another chip, another key): refused.
    let with_other_vcek = Endorsements {
        snp_certs: emu.certificates(),
        ..endorsed(&lowered)
    };
    let err = verify(&lowered.report(&[0; 64]), &with_other_vcek, now()).unwrap_err();
    assert!(
        matches!(err, EvidenceError::Snp(SnpError::BadSignature { .. })),
        "{err}"
    );
}

#[test]
fn report_data_binds_and_every_tampered_byte_is_refused() {
    let emu = milan();
    let verifier = cordon_attest::Verifier::new(endorsed(emu));
    let rd = [0x42; 64];
    let report = emu.report(&rd);
    let c = verifier.verify(&report, now()).unwrap();
    // The report binds the report_data it was made for, not another.
    assert_eq!(c.report_data, rd);
    assert_ne!(c.report_data, [0x43; 64]);
    // Swapping in another report_data (binding the attacker's keys) breaks the signature.
    let mut swapped = report;
    swapped[0x50..0x90].copy_from_slice(&[0x43; 64]);
    assert!(matches!(
        verifier.verify(&swapped, now()),
        Err(EvidenceError::Snp(SnpError::BadSignature { key: "VCEK" }))
    ));
    for i in 0..REPORT_LEN {
        let mut bad = report;
        bad[i] ^= 0x01;
        assert!(
            verifier.verify(&bad, now()).is_err(),
            "flipped report byte {i:#x} accepted"
        );
    }
}

#[test]
fn every_tampered_vcek_byte_is_refused() {
    let emu = milan();
    let report = emu.report(&[5; 64]);
    let certs = emu.certificates();
    for i in 0..certs[0].len() {
        let mut bad = certs.clone();
        bad[0][i] ^= 0x01;
        let e = Endorsements {
            snp_certs: bad,
            ..endorsed(emu)
        };
        // A fresh verifier each time: nothing cached.
        assert!(
            verify(&report, &e, now()).is_err(),
            "flipped VCEK byte {i} accepted"
        );
    }
    // A tampered ASK or ARK is refused too (a few bytes of each: the signature, the key).
    for which in [1, 2] {
        let len = certs[which].len();
        for i in [len - 1, len - 100, len / 2] {
            let mut bad = certs.clone();
            bad[which][i] ^= 0x01;
            let e = Endorsements {
                snp_certs: bad,
                ..endorsed(emu)
            };
            assert!(verify(&report, &e, now()).is_err(), "cert {which} byte {i}");
        }
    }
}

#[test]
fn a_chain_under_another_test_root_is_refused() {
    let (emu, other) = (milan(), other_root());
    let report = other.report(&[6; 64]);
    // The other emulator's own chain, only the first root named.
    let e = Endorsements {
        snp_certs: other.certificates(),
        emulated_roots: vec![emu.root_fingerprint()],
        ..Endorsements::default()
    };
    let err = verify(&report, &e, now()).unwrap_err();
    assert!(
        matches!(&err, EvidenceError::Snp(SnpError::UnnamedRoot { fingerprint, .. }) if *fingerprint == hex::encode(other.root_fingerprint())),
        "{err}"
    );
    // Its VCEK presented with the named root's ASK and ARK (same names, other keys).
    let mut spliced = emu.certificates();
    spliced[0] = other.certificates()[0].clone();
    let e = Endorsements {
        snp_certs: spliced,
        emulated_roots: vec![emu.root_fingerprint()],
        ..Endorsements::default()
    };
    let err = verify(&report, &e, now()).unwrap_err();
    assert!(
        matches!(
            err,
            EvidenceError::Snp(SnpError::ChainSignature { cert: "VCEK", .. })
        ),
        "{err}"
    );
}

#[test]
fn the_key_cache_does_not_carry_a_root_to_another_endorsement_set() {
    let emu = milan();
    let verifier = cordon_attest::snp::Verifier::default();
    let report = emu.report(&[7; 64]);
    let certs = emu.certificates();
    let root = [emu.root_fingerprint()];
    assert!(verifier
        .verify_with_roots(&report, &certs, &[], &root, now())
        .is_ok());
    // Same verifier, the key now cached: a set that does not name the root is refused.
    let err = verifier
        .verify_with_roots(&report, &certs, &[], &[], now())
        .unwrap_err();
    assert!(matches!(err, SnpError::UnnamedRoot { .. }), "{err}");
    let err = verifier
        .verify_with_roots(
            &report,
            &certs,
            &[],
            &[other_root().root_fingerprint()],
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, SnpError::UnnamedRoot { .. }), "{err}");
    assert!(verifier.verify(&report, &certs, now()).is_err());
    // And naming it again still works.
    assert!(verifier
        .verify_with_roots(&report, &certs, &[], &root, now())
        .is_ok());
}

#[test]
fn validity_windows_of_the_test_chain_are_checked() {
    let emu = milan();
    let report = emu.report(&[8; 64]);
    let e = endorsed(emu);
    let later = now() + Duration::from_secs(8 * 365 * 86_400);
    assert!(matches!(
        verify(&report, &e, later),
        Err(EvidenceError::Snp(SnpError::Expired { cert: "VCEK", .. }))
    ));
    let earlier = now() - Duration::from_secs(86_400);
    assert!(matches!(
        verify(&report, &e, earlier),
        Err(EvidenceError::Snp(SnpError::NotYetValid { .. }))
    ));
}

#[test]
fn genoa_and_turin_version_5_and_a_masked_chip() {
    for product in [Product::Genoa, Product::Turin] {
        let mut options =
            EmulatedSnpOptions::new(product, LaunchParams::new(MEASUREMENT, HOST_DATA));
        options.report_version = 5;
        let emu = EmulatedSnp::generate(options).unwrap();
        let report = emu.report(&[9; 64]);
        assert_eq!(report[0], 5);
        let c = verify(&report, &endorsed(&emu), now()).unwrap();
        assert_eq!(c.raw["product"], product.name());
        assert_eq!(c.raw["version"], 5);
        assert!(c.is_emulated());
        let tcb = &c.tcb.as_ref().unwrap().components;
        assert_eq!(tcb.contains_key("fmc"), product == Product::Turin);
        assert!(
            appraise(&c, &test_policy(&emu)).is_accepted(),
            "{product:?}: {}",
            appraise(&c, &test_policy(&emu)).reasons()
        );
        // Masked chip id: no platform id, and a chip allowlist refuses it.
        let mut masked = emu.options().clone();
        masked.mask_chip_id = true;
        let masked = emu.under_same_root(masked).unwrap();
        let report = masked.report(&[9; 64]);
        assert!(report[0x1A0..0x1E0].iter().all(|&b| b == 0));
        let c = verify(&report, &endorsed(&masked), now()).unwrap();
        assert_eq!(c.platform_id, None);
        let listed = Policy {
            allowed_chip_ids: Some(vec![masked.options().chip_id.to_vec()]),
            ..test_policy(&masked)
        };
        assert!(appraise(&c, &listed).reasons().contains("a masked chip id"));
    }
    // Options that cannot be emulated.
    let mut v2 = EmulatedSnpOptions::new(Product::Milan, LaunchParams::new(MEASUREMENT, HOST_DATA));
    v2.report_version = 2;
    assert!(matches!(
        milan().under_same_root(v2),
        Err(SnpEmulatorError::Options(_))
    ));
    let mut turin =
        EmulatedSnpOptions::new(Product::Turin, LaunchParams::new(MEASUREMENT, HOST_DATA));
    turin.reported_tcb.fmc = None;
    assert!(matches!(
        EmulatedSnp::generate(turin),
        Err(SnpEmulatorError::Options(_))
    ));
}

#[test]
fn no_floor_and_no_minimum_accepts_only_through_the_policy() {
    // min_tcb_floor = none with an old TCB: accepted by a test policy that says so, so the
    // floor refusal above is the floor's doing and nothing else.
    let emu = milan();
    let mut options = emu.options().clone();
    options.reported_tcb.snp = 0x18;
    let old = emu.under_same_root(options).unwrap();
    let no_floor = Policy {
        min_tcb_floor: MinTcbFloor::None,
        ..test_policy(emu)
    };
    assert!(appraise(&claims_of(&old, &[0; 64]), &no_floor).is_accepted());
}

#[test]
fn state_directory_round_trips_with_private_keys() {
    let tmp = TestDir::new("emu-state");
    let dir = tmp.path().join("snp");
    let emu = EmulatedSnp::create(&dir, milan().options().clone()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ark.key", "ask.key", "vcek.key"] {
            let mode = std::fs::metadata(dir.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let toml = std::fs::read_to_string(dir.join("emulator.toml")).unwrap();
    assert!(toml.contains("EMULATED") && toml.contains(&hex::encode(emu.root_fingerprint())));
    assert!(!format!("{emu:?}").contains("PRIVATE"));

    let back = EmulatedSnp::open(&dir).unwrap();
    assert_eq!(back.root_fingerprint(), emu.root_fingerprint());
    assert_eq!(back.certificates(), emu.certificates());
    assert_eq!(back.options(), emu.options());
    // The reopened VCEK key signs reports that verify under the saved chain.
    let c = verify(&back.report(&[1; 64]), &endorsed(&emu), now()).unwrap();
    assert_eq!(c.report_data, [1; 64]);

    // A second create does not overwrite.
    assert!(matches!(
        EmulatedSnp::create(&dir, milan().options().clone()),
        Err(SnpEmulatorError::Exists(_))
    ));
}

#[test]
fn state_directory_errors_name_the_file() {
    let tmp = TestDir::new("emu-bad");
    let dir = tmp.path().join("snp");
    let emu = milan();
    emu.save(&dir).unwrap();
    let saved = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let restore = |f: &str, data: &[u8]| std::fs::write(dir.join(f), data).unwrap();

    let toml = saved("emulator.toml");
    restore("emulator.toml", b"product = \"Rome\"\n");
    let err = EmulatedSnp::open(&dir).unwrap_err();
    assert!(
        matches!(&err, SnpEmulatorError::Toml { path, .. } if path.ends_with("emulator.toml")),
        "{err}"
    );
    // The TOML names a TCB its VCEK does not certify.
    let edited = String::from_utf8(toml.clone())
        .unwrap()
        .replace("snp = 29", "snp = 30");
    assert_ne!(edited.as_bytes(), toml.as_slice());
    restore("emulator.toml", edited.as_bytes());
    let err = EmulatedSnp::open(&dir).unwrap_err();
    assert!(
        matches!(&err, SnpEmulatorError::Inconsistent { path, .. } if path.ends_with("vcek.der")),
        "{err}"
    );
    restore("emulator.toml", &toml);

    // Another emulator's VCEK key.
    let key = saved("vcek.key");
    let other = TestDir::new("emu-other");
    other_root().save(other.path()).unwrap();
    restore(
        "vcek.key",
        &std::fs::read(other.path().join("vcek.key")).unwrap(),
    );
    let err = EmulatedSnp::open(&dir).unwrap_err();
    assert!(
        matches!(&err, SnpEmulatorError::Inconsistent { path, .. } if path.ends_with("vcek.key")),
        "{err}"
    );
    restore("vcek.key", b"garbage");
    let err = EmulatedSnp::open(&dir).unwrap_err();
    assert!(
        matches!(&err, SnpEmulatorError::Key { path, .. } if path.ends_with("vcek.key")),
        "{err}"
    );
    restore("vcek.key", &key);

    let ask = saved("ask.der");
    restore("ask.der", &ask[..ask.len() - 5]);
    let err = EmulatedSnp::open(&dir).unwrap_err();
    assert!(
        matches!(&err, SnpEmulatorError::Certificate { path, .. } if path.ends_with("ask.der")),
        "{err}"
    );
    std::fs::remove_file(dir.join("ask.der")).unwrap();
    let err = EmulatedSnp::open(&dir).unwrap_err();
    assert!(
        matches!(&err, SnpEmulatorError::Io { path, .. } if path.ends_with("ask.der")),
        "{err}"
    );
    restore("ask.der", &ask);
    assert!(EmulatedSnp::open(&dir).is_ok());
}

#[test]
fn configfs_tsm_end_to_end_on_the_emulator() {
    let emu = milan();
    let tsm =
        ConfigFsTsm::emulated_snp(emu.with_launch(emu.options().launch.clone()).unwrap()).unwrap();
    assert_eq!(tsm.platform(), Platform::Snp);
    assert!(tsm.is_emulated());
    let rd = [0x21; 64];
    // The bundle: report plus the certificate table from auxblob, enough for a verifier that has
    // nothing but the root's fingerprint.
    let bundle = tsm.evidence_bundle(&rd).unwrap();
    assert_eq!(bundle.snp_certs, emu.certificates());
    let e = Endorsements {
        snp_certs: bundle.snp_certs.clone(),
        emulated_roots: vec![emu.root_fingerprint()],
        ..Endorsements::default()
    };
    let c = verify(&bundle.evidence, &e, now()).unwrap();
    assert_eq!(c.report_data, rd);
    assert!(c.is_emulated());
    assert!(appraise(&c, &test_policy(emu)).is_accepted());
    // Plain evidence: a fresh report for each request.
    let again = tsm.evidence(&[0x22; 64]).unwrap();
    assert_eq!(verify(&again, &e, now()).unwrap().report_data, [0x22; 64]);
    // Without the root named, the same bundle is refused.
    let production = Endorsements {
        snp_certs: bundle.snp_certs,
        ..Endorsements::default()
    };
    assert!(verify(&bundle.evidence, &production, now()).is_err());
}

#[test]
fn configfs_privlevel_follows_the_guest_vmpl() {
    let emu = milan();
    let mut launch = LaunchParams::new(MEASUREMENT, HOST_DATA);
    launch.vmpl = 2;
    let svsm_guest =
        || ConfigFsTsm::emulated_snp(emu.with_launch(launch.clone()).unwrap()).unwrap();
    let c = verify(
        &svsm_guest().evidence(&[0; 64]).unwrap(),
        &endorsed(emu),
        now(),
    )
    .unwrap();
    assert_eq!(c.raw["vmpl"], 2);
    let c = verify(
        &svsm_guest().with_privlevel(3).evidence(&[0; 64]).unwrap(),
        &endorsed(emu),
        now(),
    )
    .unwrap();
    assert_eq!(c.raw["vmpl"], 3);
    // Below the floor: the kernel refuses the write.
    let err = svsm_guest()
        .with_privlevel(1)
        .evidence(&[0; 64])
        .unwrap_err();
    assert!(
        matches!(&err, TeeError::Access { op: "write", path, .. } if path.ends_with("privlevel")),
        "{err}"
    );
    assert!(emu.report_at_vmpl(&[0; 64], 4).is_err());
}

/// A CRL in AMD's KDS form issued by the emulator's ARK, revoking `revoked`.
fn crl(emu: &EmulatedSnp, revoked: &[&SerialNumber]) -> Vec<u8> {
    use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
    let ark = &emu.ark.cert;
    let t = |offset: i64| {
        let at = if offset < 0 {
            now() - Duration::from_secs(offset.unsigned_abs())
        } else {
            now() + Duration::from_secs(offset as u64)
        };
        x509_time(whole_seconds(at)).unwrap()
    };
    let tbs = TbsCertList {
        version: Version::V2,
        signature: ark.signature_algorithm.clone(),
        issuer: ark.tbs_certificate.subject.clone(),
        this_update: t(-3600),
        next_update: Some(t(86_400)),
        revoked_certificates: (!revoked.is_empty()).then(|| {
            revoked
                .iter()
                .map(|s| RevokedCert {
                    serial_number: (*s).clone(),
                    revocation_date: t(-60),
                    crl_entry_extensions: None,
                })
                .collect()
        }),
        crl_extensions: None,
    };
    let signer = rsa::pss::BlindedSigningKey::<Sha384>::new(emu.ark.key.clone());
    let sig = signer.sign_with_rng(&mut OsRng, &tbs.to_der().unwrap());
    CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: ark.signature_algorithm.clone(),
        signature: BitString::from_bytes(&sig.to_bytes()).unwrap(),
    }
    .to_der()
    .unwrap()
}

#[test]
fn revocation_under_an_emulated_root_is_checked_against_its_ark() {
    let emu = milan();
    let report = emu.report(&[0x0C; 64]);
    let vcek = Certificate::from_der(&emu.certificates()[0]).unwrap();
    let vcek_serial = vcek.tbs_certificate.serial_number.clone();
    let ask_serial = emu.ask.cert.tbs_certificate.serial_number.clone();
    let with = |crls: Vec<Vec<u8>>| Endorsements {
        snp_crls: crls,
        ..endorsed(emu)
    };
    assert!(verify(&report, &with(vec![crl(emu, &[])]), now()).is_ok());
    for (serial, cert) in [(&vcek_serial, "VCEK"), (&ask_serial, "ASK")] {
        let err = verify(&report, &with(vec![crl(emu, &[serial])]), now()).unwrap_err();
        assert!(
            matches!(&err, EvidenceError::Snp(SnpError::Revoked { cert: c, .. }) if *c == cert),
            "{err}"
        );
    }
    // A CRL from another test root (same names, other key) is no CRL of this one.
    let err = verify(&report, &with(vec![crl(other_root(), &[])]), now()).unwrap_err();
    assert!(matches!(err, EvidenceError::Snp(SnpError::Crl(_))), "{err}");
}

/// `/dev/sev-guest` on the emulator: the three guest requests through [`crate::SevGuest`], the
/// provider a guest without configfs-tsm uses.
mod sev_guest_device {
    use super::*;
    use crate::cert_table::CertTableEntry;
    use crate::sev_guest::{GuestRequests, SnpExtReportReq, SNP_GET_EXT_REPORT};
    use crate::{guest_field, DerivedKeyRequest, RootKey, SevGuest};

    fn device(launch: LaunchParams) -> SevGuest {
        SevGuest::emulated_snp(milan().with_launch(launch).unwrap())
    }

    fn production() -> SevGuest {
        device(LaunchParams::new(MEASUREMENT, HOST_DATA))
    }

    #[test]
    fn ext_report_struct_matches_linux_sev_guest_h() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<SnpExtReportReq>(), 112);
        assert_eq!(offset_of!(SnpExtReportReq, data), 0);
        assert_eq!(offset_of!(SnpExtReportReq, certs_address), 96);
        assert_eq!(offset_of!(SnpExtReportReq, certs_len), 104);
        // _IOWR('S', 2, 32).
        assert_eq!(SNP_GET_EXT_REPORT, 0xC020_5302);
    }

    #[test]
    fn the_extended_report_ships_the_vcek_chain_a_verifier_needs() {
        let emu = milan();
        let dev = production();
        assert!(dev.is_emulated());
        assert!(format!("{dev:?}").contains("emulated: true"));
        let rd = [0x31; 64];
        let bundle = dev.evidence_bundle(&rd).unwrap();
        assert_eq!(bundle.snp_certs, emu.certificates());
        // Nothing but the root's fingerprint on the verifier's side.
        let e = Endorsements {
            snp_certs: bundle.snp_certs.clone(),
            emulated_roots: vec![emu.root_fingerprint()],
            ..Endorsements::default()
        };
        let c = verify(&bundle.evidence, &e, now()).unwrap();
        assert_eq!(c.report_data, rd);
        assert!(c.is_emulated());
        assert!(appraise(&c, &test_policy(emu)).is_accepted());
        // The plain report (SNP_GET_REPORT) verifies under the same chain.
        let plain = dev.evidence(&[0x32; 64]).unwrap();
        assert_eq!(verify(&plain, &e, now()).unwrap().report_data, [0x32; 64]);
        // A production verifier refuses the shipped chain.
        let production = Endorsements {
            snp_certs: bundle.snp_certs,
            ..Endorsements::default()
        };
        assert!(verify(&bundle.evidence, &production, now()).is_err());
    }

    #[test]
    fn the_device_answers_buffer_sizes_as_the_kernel_does() {
        // A host that adds a vendor entry after the chain, so that its table spans two pages.
        let mut dev = SnpGuestDevice::new(
            milan()
                .with_launch(milan().options().launch.clone())
                .unwrap(),
        );
        dev.host_extra.push(CertTableEntry {
            guid: [0x5E; 16],
            data: vec![0xD7; PAGE_LEN],
        });
        let req = crate::sev_guest::report_request(&[7; 64], 0);
        let mut resp = SnpReportResp { data: [0; 4000] };
        let table = dev.host_table();
        assert!(table.len() > PAGE_LEN && table.len() <= 2 * PAGE_LEN);

        // One page is too small: EIO, INVALID_LEN in exitinfo2's upper half, the size needed.
        let mut one_page = vec![0u8; PAGE_LEN];
        let (result, exitinfo2, needed) = dev.get_ext_report(&req, &mut resp, &mut one_page);
        assert_eq!(result.unwrap_err().raw_os_error(), Some(5));
        assert_eq!(exitinfo2, u64::from(VMM_ERR_INVALID_LEN) << 32);
        assert_eq!(needed as usize, table.len().div_ceil(PAGE_LEN) * PAGE_LEN);

        // Not page-aligned, or above SEV_FW_BLOB_MAX_SIZE: EINVAL.
        for len in [100, PAGE_LEN + 1, CERTS_MAX_LEN + PAGE_LEN] {
            let mut buf = vec![0u8; len];
            let (result, exitinfo2, _) = dev.get_ext_report(&req, &mut resp, &mut buf);
            assert_eq!(result.unwrap_err().raw_os_error(), Some(22), "{len}");
            assert_eq!(exitinfo2, 0);
        }

        // No buffer: the report alone.
        let (result, exitinfo2, _) = dev.get_ext_report(&req, &mut resp, &mut []);
        assert!(result.is_ok() && exitinfo2 == 0);
        assert_eq!(&resp.data[4..8], &(REPORT_LEN as u32).to_le_bytes());

        // The size asked for: the table, then zeros.
        let mut buf = vec![0xEE; needed as usize];
        let (result, _, len) = dev.get_ext_report(&req, &mut resp, &mut buf);
        assert!(result.is_ok());
        assert_eq!(len, needed);
        assert_eq!(&buf[..table.len()], table.as_slice());
        assert!(buf[table.len()..].iter().all(|&b| b == 0));

        // Through the provider: the chain, without the vendor entry.
        let provider = SevGuest::on_emulated_device(std::sync::Arc::new(dev));
        let bundle = provider.evidence_bundle(&[8; 64]).unwrap();
        assert_eq!(bundle.snp_certs, milan().certificates());
    }

    #[test]
    fn a_report_for_a_more_privileged_vmpl_is_refused_by_the_firmware() {
        let mut launch = LaunchParams::new(MEASUREMENT, HOST_DATA);
        launch.vmpl = 2;
        let svsm_guest = device(launch);
        let c = verify(
            &svsm_guest.evidence(&[0; 64]).unwrap(),
            &endorsed(milan()),
            now(),
        )
        .unwrap();
        assert_eq!(c.raw["vmpl"], 2);
        for vmpl in [0, 1, 4] {
            let dev = device({
                let mut l = LaunchParams::new(MEASUREMENT, HOST_DATA);
                l.vmpl = 2;
                l
            })
            .with_vmpl(vmpl);
            let err = dev.evidence(&[0; 64]).unwrap_err();
            assert!(
                matches!(err, TeeError::SnpReportStatus { status: 0x16, .. }),
                "{vmpl}: {err}"
            );
            assert!(err.to_string().contains(SevGuest::EMULATED_PATH), "{err}");
            let err = dev.evidence_bundle(&[0; 64]).unwrap_err();
            assert!(
                matches!(err, TeeError::SnpReportStatus { status: 0x16, .. }),
                "{vmpl}: {err}"
            );
        }
    }

    const KEY: DerivedKeyRequest = DerivedKeyRequest {
        root_key: RootKey::Vcek,
        guest_field_select: guest_field::GUEST_POLICY | guest_field::MEASUREMENT,
        vmpl: 0,
        guest_svn: 0,
        tcb_version: 0,
    };

    #[test]
    fn derived_keys_depend_on_exactly_what_the_request_selects() {
        let key = |dev: &SevGuest, req: &DerivedKeyRequest| *dev.derived_key(req).unwrap();
        let k = key(&production(), &KEY);
        assert_eq!(
            k,
            key(&production(), &KEY),
            "the same request, the same key"
        );
        // Another measurement: another key when MEASUREMENT is selected, the same when not.
        let other_code = device(LaunchParams::new([0x99; 48], HOST_DATA));
        assert_ne!(k, key(&other_code, &KEY));
        let policy_only = DerivedKeyRequest {
            guest_field_select: guest_field::GUEST_POLICY,
            ..KEY
        };
        assert_eq!(
            key(&production(), &policy_only),
            key(&other_code, &policy_only)
        );
        assert_ne!(key(&production(), &policy_only), k);
        // A debuggable launch: another key when the policy is selected.
        let mut debug = LaunchParams::new(MEASUREMENT, HOST_DATA);
        debug.policy |= POLICY_DEBUG;
        assert_ne!(k, key(&device(debug), &KEY));
        // Another VMPL, another key.
        assert_ne!(k, key(&production(), &DerivedKeyRequest { vmpl: 1, ..KEY }));
        // Another chip under the same root: another key.
        let mut other_chip = milan().options().clone();
        other_chip.chip_id = [0x42; 64];
        let other_chip = SevGuest::emulated_snp(milan().under_same_root(other_chip).unwrap());
        assert_ne!(k, key(&other_chip, &KEY));
        // An older TCB may be asked for, and gives another key; a newer one may not.
        let tcb = SnpTcb::up_to_date(Product::Milan).encode(Product::Milan);
        let at = |t: u64| DerivedKeyRequest {
            guest_field_select: KEY.guest_field_select | guest_field::TCB_VERSION,
            tcb_version: t,
            ..KEY
        };
        assert_eq!(key(&production(), &at(tcb)), key(&production(), &at(tcb)));
        assert_ne!(
            key(&production(), &at(tcb)),
            key(&production(), &at(tcb - 1))
        );
        let err = production().derived_key(&at(tcb + 1)).unwrap_err();
        assert!(
            matches!(err, TeeError::SnpDerivedKeyStatus { status: 0x16, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_firmware_refuses_key_requests_beyond_the_guest() {
        let mut launch = LaunchParams::new(MEASUREMENT, HOST_DATA);
        launch.vmpl = 1;
        launch.guest_svn = 3;
        let dev = device(launch);
        let refused = [
            DerivedKeyRequest { vmpl: 0, ..KEY },
            DerivedKeyRequest { vmpl: 4, ..KEY },
            DerivedKeyRequest {
                vmpl: 1,
                root_key: RootKey::Vmrk,
                ..KEY
            },
            DerivedKeyRequest {
                vmpl: 1,
                guest_field_select: guest_field::GUEST_SVN,
                guest_svn: 4,
                ..KEY
            },
        ];
        for req in refused {
            let err = dev.derived_key(&req).unwrap_err();
            assert!(
                matches!(err, TeeError::SnpDerivedKeyStatus { status: 0x16, .. }),
                "{req:?}: {err}"
            );
        }
        let svn = DerivedKeyRequest {
            vmpl: 1,
            guest_field_select: guest_field::GUEST_SVN,
            guest_svn: 3,
            ..KEY
        };
        assert!(dev.derived_key(&svn).is_ok());
        // The VM root key exists for a guest with a migration agent.
        let mut ma = LaunchParams::new(MEASUREMENT, HOST_DATA);
        ma.policy |= POLICY_MIGRATE_MA;
        let vmrk = DerivedKeyRequest {
            root_key: RootKey::Vmrk,
            ..KEY
        };
        assert_ne!(
            *device(ma.clone()).derived_key(&vmrk).unwrap(),
            *device(ma).derived_key(&KEY).unwrap()
        );
    }

    #[test]
    fn derived_keys_survive_a_restart_of_the_emulated_machine() {
        let tmp = TestDir::new("emu-derived");
        let dir = tmp.path().join("snp");
        milan().save(&dir).unwrap();
        let before = *production().derived_key(&KEY).unwrap();
        let reopened = SevGuest::emulated_snp(EmulatedSnp::open(&dir).unwrap());
        assert_eq!(*reopened.derived_key(&KEY).unwrap(), before);
        // Another machine (another root) derives another key for the same guest.
        let other = SevGuest::emulated_snp(
            other_root()
                .with_launch(LaunchParams::new(MEASUREMENT, HOST_DATA))
                .unwrap(),
        );
        assert_ne!(*other.derived_key(&KEY).unwrap(), before);
    }

    #[test]
    fn tcb_versions_are_compared_component_by_component() {
        let tcb = SnpTcb::up_to_date(Product::Milan).encode(Product::Milan);
        // Below the committed TCB as a number, but its microcode (top byte) lower and its
        // bootloader (bottom byte) higher: refused, as the firmware compares each component.
        let mixed = tcb - (1 << 56) + 1;
        assert!(mixed < tcb);
        let req = DerivedKeyRequest {
            guest_field_select: KEY.guest_field_select | guest_field::TCB_VERSION,
            tcb_version: mixed,
            ..KEY
        };
        let err = production().derived_key(&req).unwrap_err();
        assert!(
            matches!(err, TeeError::SnpDerivedKeyStatus { status: 0x16, .. }),
            "{err}"
        );
    }

    #[test]
    fn reserved_fields_and_unknown_select_bits_are_refused_by_the_firmware() {
        let dev = SnpGuestDevice::new(
            milan()
                .with_launch(milan().options().launch.clone())
                .unwrap(),
        );
        let raw = |f: &dyn Fn(&mut SnpDerivedKeyReq)| {
            let mut req = crate::sev_guest::derived_key_request(&KEY);
            f(&mut req);
            let mut resp = SnpDerivedKeyResp { data: [0xAA; 64] };
            let (result, exitinfo2) = dev.get_derived_key(&req, &mut resp);
            assert!(result.is_ok() && exitinfo2 == 0);
            (
                u32::from_le_bytes(resp.data[0..4].try_into().unwrap()),
                resp.data,
            )
        };
        let (status, data) = raw(&|_| {});
        assert_eq!(status, 0);
        assert!(data[0x20..].iter().any(|&b| b != 0));
        for (what, f) in [
            (
                "rsvd",
                &(|r: &mut SnpDerivedKeyReq| r.rsvd = 1) as &dyn Fn(&mut SnpDerivedKeyReq),
            ),
            ("select bit 6", &|r: &mut SnpDerivedKeyReq| {
                r.guest_field_select |= 1 << 6
            }),
            ("root key 2", &|r: &mut SnpDerivedKeyReq| {
                r.root_key_select = 2
            }),
        ] {
            let (status, data) = raw(f);
            assert_eq!(status, 0x16, "{what}");
            assert!(
                data[0x20..].iter().all(|&b| b == 0),
                "{what}: no key with a refusal"
            );
        }
        // A report request with reserved bytes set: refused, no report.
        let mut req = crate::sev_guest::report_request(&[1; 64], 0);
        req.rsvd[3] = 1;
        let mut resp = SnpReportResp { data: [0; 4000] };
        let _ = dev.get_report(&req, &mut resp);
        assert_eq!(&resp.data[0..4], &0x16u32.to_le_bytes());
        assert!(resp.data[0x20..0x20 + REPORT_LEN].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_masked_chip_key_derives_an_all_zero_vcek_key() {
        let mut masked = milan().options().clone();
        masked.mask_chip_id = true;
        let dev = SevGuest::emulated_snp(milan().under_same_root(masked).unwrap());
        assert_eq!(*dev.derived_key(&KEY).unwrap(), [0; 32]);
    }

    /// A host whose certificate table is larger than the kernel carries, and a host whose table
    /// is malformed, through the provider.
    #[test]
    fn oversized_and_malformed_host_tables_through_the_provider() {
        let mut big = SnpGuestDevice::new(
            milan()
                .with_launch(milan().options().launch.clone())
                .unwrap(),
        );
        big.host_extra.push(CertTableEntry {
            guid: [0x5E; 16],
            data: vec![1; CERTS_MAX_LEN],
        });
        // The plain report, no certificates: they are an optimisation, never required.
        let bundle = SevGuest::on_emulated_device(std::sync::Arc::new(big))
            .evidence_bundle(&[9; 64])
            .unwrap();
        assert!(bundle.snp_certs.is_empty());
        let c = verify(&bundle.evidence, &endorsed(milan()), now()).unwrap();
        assert_eq!(c.report_data, [9; 64]);

        // A table whose entry points past its end: an error naming the device.
        struct Malformed(SnpGuestDevice);
        impl GuestRequests for Malformed {
            fn get_report(
                &self,
                q: &SnpReportReq,
                r: &mut SnpReportResp,
            ) -> (std::io::Result<()>, u64) {
                self.0.get_report(q, r)
            }
            fn get_ext_report(
                &self,
                q: &SnpReportReq,
                r: &mut SnpReportResp,
                certs: &mut [u8],
            ) -> (std::io::Result<()>, u64, u32) {
                let out = self.0.get_ext_report(q, r, certs);
                certs[20..24].copy_from_slice(&u32::MAX.to_le_bytes()); // VCEK length
                out
            }
            fn get_derived_key(
                &self,
                q: &SnpDerivedKeyReq,
                r: &mut SnpDerivedKeyResp,
            ) -> (std::io::Result<()>, u64) {
                self.0.get_derived_key(q, r)
            }
        }
        let dev = Malformed(SnpGuestDevice::new(
            milan()
                .with_launch(milan().options().launch.clone())
                .unwrap(),
        ));
        let err = SevGuest::on_emulated_device(std::sync::Arc::new(dev))
            .evidence_bundle(&[0; 64])
            .unwrap_err();
        assert!(matches!(err, TeeError::CertTable { .. }), "{err}");
        assert!(err.to_string().contains(SevGuest::EMULATED_PATH), "{err}");
    }
}
