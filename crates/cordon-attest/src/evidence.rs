//! Evidence detection and the single entry point for verification.

use crate::dcap::{self, DcapCollateral};
use crate::error::EvidenceError;
use crate::{sim, snp, Claims};
use std::borrow::Cow;
use std::time::SystemTime;

/// The evidence formats Cordon knows, detected from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceKind {
    /// Cordon's simulated TEE evidence (`CORDNSIM` magic).
    Sim,
    /// A raw AMD SEV-SNP attestation report (1184 bytes, version 2, 3 or 5).
    SnpReport,
    /// An Intel DCAP quote (SGX v3, TDX v4/v5).
    DcapQuote,
}

/// Endorsements: what vouches for the keys that sign evidence. AMD's and Intel's roots are pinned in
/// the code; these are the per-chip and per-platform pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endorsements {
    /// Ed25519 public keys of simulated "hardware" trusted to sign sim evidence.
    pub sim_trust_anchors: Vec<[u8; 32]>,
    /// AMD VCEK or VLEK certificates (DER or PEM).
    pub snp_certs: Vec<Vec<u8>>,
    /// AMD CRLs (DER or PEM, from KDS). When present, revocation of the VCEK/VLEK and its ASK/ASVK is
    /// checked, and a CRL for the report's product line is required.
    pub snp_crls: Vec<Vec<u8>>,
    /// Intel DCAP collateral for quotes.
    pub dcap_collateral: Option<DcapCollateral>,
    /// Tests only: SHA-256 fingerprints (of the DER) of emulated root certificates (an emulated AMD
    /// ARK, an emulated Intel SGX Root CA). A chain ending at one of these verifies, and its claims
    /// are marked not hardware-backed ([`crate::Claims::is_emulated`]). Empty in production.
    pub emulated_roots: Vec<[u8; 32]>,
}

/// Endorsements shipped with one piece of evidence by whoever produced it (the runtime, from its
/// platform or a cache). They are input, never trust: every certificate is still checked up to a
/// pinned AMD or Intel root (or, in tests, an emulated root the verifier names), and a verifier's
/// own endorsements come first (see [`Verifier::verify_shipped`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShippedEndorsements {
    /// SNP: the VCEK or VLEK, and the ASK/ASVK and ARK where the platform gives them.
    pub snp_certs: Vec<Vec<u8>>,
    /// DCAP collateral for the quote.
    pub dcap_collateral: Option<DcapCollateral>,
    /// TDX: the TD's event log (the ACPI CCEL table's data), which the verifier replays against the
    /// quote's RTMRs and exposes as claims (`raw.event_log`). Not an endorsement: evidence of what
    /// was measured, which the RTMRs vouch for.
    pub tdx_event_log: Option<Vec<u8>>,
}

impl ShippedEndorsements {
    pub fn is_empty(&self) -> bool {
        self.snp_certs.is_empty() && self.dcap_collateral.is_none() && self.tdx_event_log.is_none()
    }
}

/// The key in [`Claims::raw`] under which the events of a replayed TDX event log are listed.
pub const EVENT_LOG_CLAIM: &str = "event_log";
/// The key in [`Claims::raw`] that says why a shipped TDX event log was not taken (malformed, or
/// not replaying to the quote's RTMRs): its events are then not claims.
pub const EVENT_LOG_ERROR_CLAIM: &str = "event_log_error";

/// Returns the evidence bytes, hex-decoded when the input is hex text (as some tools write quotes).
pub fn decode_evidence(bytes: &[u8]) -> Cow<'_, [u8]> {
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let text = text.strip_prefix(b"0x").unwrap_or(&text);
    if text.len() >= 96 && text.len() % 2 == 0 && text.iter().all(u8::is_ascii_hexdigit) {
        if let Ok(decoded) = hex::decode(text) {
            return Cow::Owned(decoded);
        }
    }
    Cow::Borrowed(bytes)
}

/// Detects the evidence format from its (already hex-decoded) bytes.
pub fn detect(bytes: &[u8]) -> Result<EvidenceKind, EvidenceError> {
    if bytes.is_empty() {
        return Err(EvidenceError::Empty);
    }
    if bytes.starts_with(sim::MAGIC) {
        return Ok(EvidenceKind::Sim);
    }
    if snp::is_snp_report(bytes) {
        return Ok(EvidenceKind::SnpReport);
    }
    if dcap::is_dcap_quote(bytes) {
        return Ok(EvidenceKind::DcapQuote);
    }
    let head = hex::encode(&bytes[..bytes.len().min(8)]);
    Err(EvidenceError::UnknownFormat(format!(
        "{} bytes starting with {head}: not Cordon sim evidence, not a 1184-byte SNP report \
         (version 2, 3 or 5), not a DCAP quote (version 3-5, ECDSA P-256, SGX or TDX)",
        bytes.len()
    )))
}

/// Verifies evidence at time `now` against `endorsements` and returns its claims.
///
/// Verification never reads the clock or the network: certificates, CRLs and collateral are judged
/// at `now`, and endorsements come from the caller.
pub fn verify(
    bytes: &[u8],
    endorsements: &Endorsements,
    now: SystemTime,
) -> Result<Claims, EvidenceError> {
    Verifier::new(endorsements.clone()).verify(bytes, now)
}

/// Parses evidence of any known kind without verifying anything (`cordon attest inspect`).
pub fn inspect(bytes: &[u8]) -> Result<(EvidenceKind, serde_json::Value), EvidenceError> {
    let kind = detect(bytes)?;
    let value = match kind {
        EvidenceKind::Sim => {
            let (r, sig) = sim::SimReport::parse(bytes)?;
            serde_json::json!({
                "version": sim::VERSION,
                "simulated": true,
                "launch_measurement": hex::encode(r.launch_measurement),
                "workload_data": hex::encode(r.workload_data),
                "report_data": hex::encode(r.report_data),
                "debug": r.debug,
                "signer": hex::encode(r.signer),
                "signature": hex::encode(sig),
            })
        }
        EvidenceKind::SnpReport => snp::inspect(bytes)?,
        EvidenceKind::DcapQuote => dcap::inspect(bytes)?,
    };
    Ok((kind, value))
}

/// A verifier holding endorsements and caches (verified SNP endorsement-key chains; checked DCAP
/// collateral with the platform endorsements verified under it), for services that verify many
/// pieces of evidence. Validity windows are checked at every call's `now`.
#[derive(Default)]
pub struct Verifier {
    endorsements: Endorsements,
    snp: snp::Verifier,
    dcap: dcap::Verifier,
}

impl Verifier {
    pub fn new(endorsements: Endorsements) -> Verifier {
        Verifier {
            endorsements,
            snp: snp::Verifier::default(),
            dcap: dcap::Verifier::default(),
        }
    }

    pub fn endorsements(&self) -> &Endorsements {
        &self.endorsements
    }

    /// How often DCAP quotes were answered from the collateral cache.
    pub fn dcap_stats(&self) -> dcap::CacheStats {
        self.dcap.stats()
    }

    pub fn verify(&self, bytes: &[u8], now: SystemTime) -> Result<Claims, EvidenceError> {
        self.verify_shipped(bytes, &ShippedEndorsements::default(), now)
    }

    /// [`Verifier::verify`] with the endorsements the evidence came with.
    ///
    /// Shipped endorsements are used only where the verifier has none of its own, and are checked
    /// up to a pinned root (or a named emulated root) like its own. SNP: a verifier given VCEKs
    /// (a KBS with `--snp-cert`) accepts those chips only, whatever VCEK the host ships. DCAP:
    /// collateral is signed by Intel, but older collateral stays valid until its `nextUpdate`, so a
    /// host could ship collateral from before a TCB recovery; a verifier that fetched its own
    /// (`cordon attest fetch`) is not overruled by it.
    pub fn verify_shipped(
        &self,
        bytes: &[u8],
        shipped: &ShippedEndorsements,
        now: SystemTime,
    ) -> Result<Claims, EvidenceError> {
        let e = &self.endorsements;
        match detect(bytes)? {
            EvidenceKind::Sim => sim::verify(bytes, &e.sim_trust_anchors),
            EvidenceKind::SnpReport => {
                // The verifier's own certificates pin the chips it accepts: shipped ones are used
                // only when it has none (a client, a KBS without --snp-cert), and then
                // `allowed_chip_ids` and the TCB floor are what limit the machines.
                let certs: &[Vec<u8>] = if e.snp_certs.is_empty() {
                    &shipped.snp_certs
                } else {
                    &e.snp_certs
                };
                Ok(self
                    .snp
                    .verify_with_roots(bytes, certs, &e.snp_crls, &e.emulated_roots, now)?)
            }
            EvidenceKind::DcapQuote => {
                let collateral = e
                    .dcap_collateral
                    .as_ref()
                    .or(shipped.dcap_collateral.as_ref())
                    .ok_or(EvidenceError::MissingCollateral)?;
                let mut claims =
                    self.dcap
                        .verify_with_roots(bytes, collateral, &e.emulated_roots, now)?;
                // A shipped event log becomes claims only if it replays to the quote's RTMRs
                // exactly. One that does not is never shown as what was measured; the quote itself
                // stands (its RTMRs are signed, and policies pin them), since a kernel may extend
                // an RTMR after boot with events the firmware's log does not hold.
                if let Some(log) = &shipped.tdx_event_log {
                    let entry = match crate::eventlog::check_claims(&claims, log) {
                        Ok(events) => (
                            EVENT_LOG_CLAIM,
                            serde_json::to_value(events).unwrap_or_default(),
                        ),
                        Err(e) => (
                            EVENT_LOG_ERROR_CLAIM,
                            serde_json::Value::String(e.to_string()),
                        ),
                    };
                    if let Some(raw) = claims.raw.as_object_mut() {
                        raw.insert(entry.0.into(), entry.1);
                    }
                }
                Ok(claims)
            }
        }
    }
}
