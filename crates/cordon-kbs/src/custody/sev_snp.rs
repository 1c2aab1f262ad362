//! The `sev-snp:` KEK: a key the SEV-SNP firmware derives for this KBS's launch
//! (`SNP_GET_DERIVED_KEY`, MSG_KEY_REQ), so that only the same KBS code, launched with the same
//! policy, on the same chip, can unwrap what it wrapped. The key is asked for once at open, held
//! zeroized-on-drop in memory, and never written anywhere.
//!
//! # What the key is bound to
//!
//! The request ([`derived_key_request`]) selects, in MSG_KEY_REQ `GUEST_FIELD_SELECT`:
//! - `MEASUREMENT` (bit 3): other code (another KBS build, a tampered image) derives another key;
//! - `GUEST_POLICY` (bit 0): the same code launched debuggable or migratable derives another key;
//! - `TCB_VERSION` (bit 5) only when asked (`sev-snp:…;bind-tcb`), with the committed TCB of the
//!   platform at open.
//!
//! Not `IMAGE_ID`/`FAMILY_ID` (bits 1, 2: names the launcher chooses in the ID block, which the
//! measurement already pins the code past) nor `GUEST_SVN` (bit 4: the KBS has no SVN scheme).
//!
//! The root key is the VCEK (`ROOT_KEY_SELECT` 0): the key exists on this chip only, so a store
//! moved to another host (a restored backup, a new machine) does not unwrap there; the VMRK would
//! follow the VM through a migration agent, which Cordon's KBS does not use.
//!
//! Trade-offs, which an operator must plan for:
//! - **A new KBS build is a new measurement, hence a new key.** Before upgrading, the running KBS
//!   must re-wrap its store under a KEK the new build can open (`rotate-kek` to `pkcs11:` or a
//!   temporary `file:`, upgrade, then rotate to `sev-snp:` again).
//! - **Binding the TCB** means that a firmware or microcode update (which raises the committed
//!   TCB) changes the key: the KBS must `rotate-kek` around every update. In exchange, firmware
//!   rolled back below that TCB cannot derive the key. Off by default.
//! - **Chip-bound**: losing the machine loses the keys; keep an offline backup of the DEKs
//!   wrapped under another KEK (an HSM), or accept that.

use super::{aead_unwrap, aead_wrap, key_fingerprint, CustodyError, Kek, UnwrapFailed};
use cordon_attest::snp::AttestationReport;
use cordon_tee::{guest_field, DerivedKeyRequest, EvidenceProvider, RootKey, SevGuest, TeeError};
use std::fmt;
use zeroize::Zeroizing;

/// What the platform says about key derivation, read from an attestation report at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformKeyState {
    /// The committed TCB (report offset 0x1E0): the highest TCB_VERSION a key may be bound to.
    pub committed_tcb: u64,
    /// The report's MASK_CHIP_KEY flag: the host told the firmware not to use the chip key, so a
    /// VCEK-rooted key would not be bound to this chip. Refused.
    pub chip_key_masked: bool,
}

/// Where derived keys come from: the firmware ([`SevGuest`]) or, in tests, a fake that derives
/// from a fake measurement.
pub trait DerivedKeySource: Send + Sync {
    /// Names the source in errors (the device path).
    fn describe(&self) -> String;
    /// The key the firmware derives for `req`.
    fn derived_key(&self, req: &DerivedKeyRequest) -> Result<Zeroizing<[u8; 32]>, TeeError>;
    /// The platform's key-derivation state (from a fresh attestation report).
    fn key_state(&self) -> Result<PlatformKeyState, TeeError>;
}

impl DerivedKeySource for SevGuest {
    fn describe(&self) -> String {
        self.path().display().to_string()
    }

    fn derived_key(&self, req: &DerivedKeyRequest) -> Result<Zeroizing<[u8; 32]>, TeeError> {
        SevGuest::derived_key(self, req)
    }

    fn key_state(&self) -> Result<PlatformKeyState, TeeError> {
        let report = self.evidence(&[0; 64])?;
        let parsed = AttestationReport::parse(&report).map_err(|e| TeeError::Malformed {
            path: self.path().to_path_buf(),
            reason: format!("attestation report does not parse: {e}"),
        })?;
        Ok(PlatformKeyState {
            committed_tcb: parsed.committed_tcb,
            chip_key_masked: parsed.mask_chip_key,
        })
    }
}

/// The MSG_KEY_REQ the KEK is derived with: VCEK root, VMPL 0, measurement and policy, and the
/// TCB when `tcb` is given.
pub fn derived_key_request(tcb: Option<u64>) -> DerivedKeyRequest {
    let base = guest_field::GUEST_POLICY | guest_field::MEASUREMENT;
    DerivedKeyRequest {
        root_key: RootKey::Vcek,
        guest_field_select: match tcb {
            Some(_) => base | guest_field::TCB_VERSION,
            None => base,
        },
        vmpl: 0,
        guest_svn: 0,
        tcb_version: tcb.unwrap_or(0),
    }
}

/// The KEK the SEV-SNP firmware derives for this KBS (see the module documentation).
pub struct SevSnpKek {
    key: Zeroizing<[u8; 32]>,
    id: String,
    source: String,
    bound_tcb: Option<u64>,
}

impl fmt::Debug for SevSnpKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SevSnpKek")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("bound_tcb", &self.bound_tcb)
            .finish_non_exhaustive()
    }
}

impl SevSnpKek {
    /// Asks `source` for the KEK: bound to measurement and policy, and to the committed TCB when
    /// `bind_tcb`.
    pub fn open(source: &dyn DerivedKeySource, bind_tcb: bool) -> Result<SevSnpKek, CustodyError> {
        let what = source.describe();
        let tee = |e: TeeError| CustodyError::Tee(format!("{what}: {e}"));
        let state = source.key_state().map_err(tee)?;
        if state.chip_key_masked {
            return Err(CustodyError::Tee(format!(
                "{what}: the host set MASK_CHIP_KEY, so the firmware's derived keys are not bound \
                 to this chip; refusing to use one as the KEK"
            )));
        }
        let tcb = bind_tcb.then_some(state.committed_tcb);
        let key = source.derived_key(&derived_key_request(tcb)).map_err(tee)?;
        if key.iter().all(|&b| b == 0) {
            return Err(CustodyError::Tee(format!(
                "{what}: the firmware returned an all-zero derived key"
            )));
        }
        // The host can set MASK_CHIP_KEY at any time (SNP_SET_CONFIG): checked again after the
        // derivation, so that a mask set between the first report and the key request is caught
        // (a mask set and cleared again in between is not: docs/deployment.md).
        if source.key_state().map_err(tee)?.chip_key_masked {
            return Err(CustodyError::Tee(format!(
                "{what}: the host set MASK_CHIP_KEY while the key was derived; refusing it"
            )));
        }
        let id = key_fingerprint("sev-snp", &key);
        Ok(SevSnpKek {
            key,
            id,
            source: what,
            bound_tcb: tcb,
        })
    }

    /// The committed TCB the key is bound to, if it is.
    pub fn bound_tcb(&self) -> Option<u64> {
        self.bound_tcb
    }
}

impl Kek for SevSnpKek {
    fn id(&self) -> &str {
        &self.id
    }
    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CustodyError> {
        aead_wrap(&self.key, aad, secret)
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnwrapFailed> {
        aead_unwrap(&self.key, aad, wrapped)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::path::PathBuf;

    /// Stands in for the firmware: derives from a fake chip secret and the launch's measurement
    /// and policy as selected, as the firmware mixes the selected fields into its KDF.
    pub struct FakeFirmware {
        pub chip_secret: [u8; 32],
        pub measurement: [u8; 48],
        pub policy: u64,
        pub committed_tcb: u64,
        pub chip_key_masked: bool,
        pub status: u32,
    }

    impl FakeFirmware {
        pub fn new(measurement: u8) -> FakeFirmware {
            FakeFirmware {
                chip_secret: [0x5a; 32],
                measurement: [measurement; 48],
                policy: 0x3_0000,
                committed_tcb: 0x1100_0000_0000_0003,
                chip_key_masked: false,
                status: 0,
            }
        }
    }

    impl DerivedKeySource for FakeFirmware {
        fn describe(&self) -> String {
            "fake-sev-guest".into()
        }
        fn derived_key(&self, req: &DerivedKeyRequest) -> Result<Zeroizing<[u8; 32]>, TeeError> {
            if self.status != 0 {
                return Err(TeeError::SnpDerivedKeyStatus {
                    path: PathBuf::from("fake-sev-guest"),
                    status: self.status,
                });
            }
            let mut h = Sha256::new();
            h.update(self.chip_secret);
            h.update(format!("{:?}", req.root_key));
            h.update(req.guest_field_select.to_le_bytes());
            h.update(req.vmpl.to_le_bytes());
            let sel = |bit: u64| req.guest_field_select & bit != 0;
            if sel(guest_field::GUEST_POLICY) {
                h.update(self.policy.to_le_bytes());
            }
            if sel(guest_field::MEASUREMENT) {
                h.update(self.measurement);
            }
            if sel(guest_field::TCB_VERSION) {
                h.update(req.tcb_version.to_le_bytes());
            }
            Ok(Zeroizing::new(h.finalize().into()))
        }
        fn key_state(&self) -> Result<PlatformKeyState, TeeError> {
            Ok(PlatformKeyState {
                committed_tcb: self.committed_tcb,
                chip_key_masked: self.chip_key_masked,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeFirmware;
    use super::*;
    use crate::custody::{wrap_aad, Slot};

    #[test]
    fn the_request_binds_measurement_and_policy_to_the_vcek_and_the_tcb_only_when_asked() {
        let r = derived_key_request(None);
        assert_eq!(r.root_key, RootKey::Vcek);
        assert_eq!(r.guest_field_select, 0b1001);
        assert_eq!((r.vmpl, r.guest_svn, r.tcb_version), (0, 0, 0));
        let r = derived_key_request(Some(0x42));
        assert_eq!(r.guest_field_select, 0b10_1001);
        assert_eq!(r.tcb_version, 0x42);
    }

    #[test]
    fn same_measurement_same_key_across_reopens() {
        let a = SevSnpKek::open(&FakeFirmware::new(1), false).unwrap();
        let b = SevSnpKek::open(&FakeFirmware::new(1), false).unwrap();
        assert_eq!(a.id(), b.id());
        assert!(a.id().starts_with("sev-snp:"), "{}", a.id());
        let aad = wrap_aad(Slot::Dek, "k1");
        let w = a.wrap(&aad, b"dek bytes").unwrap();
        assert_eq!(b.unwrap(&aad, &w).unwrap().as_slice(), b"dek bytes");
        assert!(b.unwrap(&wrap_aad(Slot::Dek, "k2"), &w).is_err());
        let dbg = format!("{a:?}");
        assert!(dbg.contains(a.id()) && !dbg.contains("key:"), "{dbg}");
    }

    #[test]
    fn another_measurement_or_policy_cannot_unwrap() {
        let a = SevSnpKek::open(&FakeFirmware::new(1), false).unwrap();
        let aad = wrap_aad(Slot::Dek, "k1");
        let w = a.wrap(&aad, b"dek bytes").unwrap();

        let other = SevSnpKek::open(&FakeFirmware::new(2), false).unwrap();
        assert_ne!(a.id(), other.id());
        assert_eq!(other.unwrap(&aad, &w), Err(UnwrapFailed));

        let mut debug_launch = FakeFirmware::new(1);
        debug_launch.policy |= 1 << 19;
        let other = SevSnpKek::open(&debug_launch, false).unwrap();
        assert_ne!(a.id(), other.id());
        assert_eq!(other.unwrap(&aad, &w), Err(UnwrapFailed));

        let mut other_chip = FakeFirmware::new(1);
        other_chip.chip_secret = [0xa5; 32];
        let other = SevSnpKek::open(&other_chip, false).unwrap();
        assert_eq!(other.unwrap(&aad, &w), Err(UnwrapFailed));
    }

    #[test]
    fn a_tcb_bound_key_changes_with_the_committed_tcb_and_only_then() {
        let fw = FakeFirmware::new(1);
        let unbound = SevSnpKek::open(&fw, false).unwrap();
        let bound = SevSnpKek::open(&fw, true).unwrap();
        assert_eq!(unbound.bound_tcb(), None);
        assert_eq!(bound.bound_tcb(), Some(fw.committed_tcb));
        assert_ne!(unbound.id(), bound.id());

        let mut updated = FakeFirmware::new(1);
        updated.committed_tcb += 1;
        assert_eq!(SevSnpKek::open(&updated, false).unwrap().id(), unbound.id());
        let after = SevSnpKek::open(&updated, true).unwrap();
        assert_ne!(after.id(), bound.id());
        let aad = wrap_aad(Slot::IdentitySeed, "1");
        let w = bound.wrap(&aad, b"seed").unwrap();
        assert_eq!(after.unwrap(&aad, &w), Err(UnwrapFailed));
    }

    #[test]
    fn a_masked_chip_key_and_firmware_errors_are_refused_by_name() {
        let mut fw = FakeFirmware::new(1);
        fw.chip_key_masked = true;
        let e = SevSnpKek::open(&fw, false).unwrap_err().to_string();
        assert!(
            e.contains("MASK_CHIP_KEY") && e.contains("fake-sev-guest"),
            "{e}"
        );

        let mut fw = FakeFirmware::new(1);
        fw.status = 0x16;
        let e = SevSnpKek::open(&fw, false).unwrap_err();
        assert!(matches!(e, CustodyError::Tee(_)), "{e}");
        assert!(e.to_string().contains("0x16"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_is_not_sev_guest_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("sev-guest");
        std::fs::write(&dev, b"").unwrap();
        let e = SevSnpKek::open(&SevGuest::new(&dev), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SNP_GET_REPORT") && e.contains(&dev.display().to_string()),
            "{e}"
        );
        let e = SevSnpKek::open(&SevGuest::new(dir.path().join("absent")), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("open") && e.contains("absent"), "{e}");
    }

    /// The KEK through the real `SevGuest` provider (report for the key state, then
    /// SNP_GET_DERIVED_KEY), on an emulated SNP machine's `/dev/sev-guest`.
    #[test]
    fn the_kek_on_an_emulated_sev_guest_device() {
        use cordon_attest::snp::Product;
        use cordon_tee::emulated::{EmulatedSnp, EmulatedSnpOptions, LaunchParams};
        let machine = EmulatedSnp::generate(EmulatedSnpOptions::new(
            Product::Milan,
            LaunchParams::new([0x4B; 48], [0; 32]),
        ))
        .unwrap();
        let guest =
            |launch: LaunchParams| SevGuest::emulated_snp(machine.with_launch(launch).unwrap());
        let kbs = guest(LaunchParams::new([0x4B; 48], [0; 32]));
        let kek = SevSnpKek::open(&kbs, false).unwrap();
        assert!(kek.id().starts_with("sev-snp:"), "{}", kek.id());
        let aad = wrap_aad(Slot::Dek, "k1");
        let w = kek.wrap(&aad, b"dek bytes").unwrap();
        // The same KBS launched again unwraps it.
        let again = SevSnpKek::open(&guest(LaunchParams::new([0x4B; 48], [0; 32])), false).unwrap();
        assert_eq!(again.unwrap(&aad, &w).unwrap().as_slice(), b"dek bytes");
        // Another build of the KBS (another measurement) or a debuggable launch cannot.
        let other = SevSnpKek::open(&guest(LaunchParams::new([0x4C; 48], [0; 32])), false).unwrap();
        assert_eq!(other.unwrap(&aad, &w), Err(UnwrapFailed));
        let mut debug = LaunchParams::new([0x4B; 48], [0; 32]);
        debug.policy |= 1 << 19;
        let other = SevSnpKek::open(&guest(debug), false).unwrap();
        assert_eq!(other.unwrap(&aad, &w), Err(UnwrapFailed));
        // Bound to the TCB: the committed TCB read from the emulator's report.
        let bound = SevSnpKek::open(&kbs, true).unwrap();
        assert!(bound.bound_tcb().is_some());
        assert_eq!(bound.unwrap(&aad, &w), Err(UnwrapFailed));
        // A host that masks the chip key: refused, naming the device.
        let mut masked = machine.options().clone();
        masked.mask_chip_id = true;
        let masked = SevGuest::emulated_snp(machine.under_same_root(masked).unwrap());
        let e = SevSnpKek::open(&masked, false).unwrap_err().to_string();
        assert!(
            e.contains("MASK_CHIP_KEY") && e.contains(SevGuest::EMULATED_PATH),
            "{e}"
        );
    }
}
