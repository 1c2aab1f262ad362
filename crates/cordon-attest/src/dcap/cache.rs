//! [`Verifier`]: DCAP verification that checks a collateral, and a platform's endorsement of its
//! attestation key under it, once.
//!
//! # What dcap-qvl lets a caller reuse
//!
//! dcap-qvl 0.7 verifies a quote in one private function (`verify_impl`): the CRLs, the TCB info
//! and QE identity signatures and chains, the PCK chain with revocation (webpki, inside its private
//! `utils` module), the QE report, the quote signature and the TCB level matching. None of those
//! steps is public, and webpki is not a dependency of this crate. Checking a new platform's PCK
//! chain against collateral checked earlier would mean re-implementing X.509 path validation and
//! CRL checking; evaluating a new QE report or new TCB SVNs per quote would mean copying roughly
//! 400 lines of dcap-qvl's QE identity, TCB level and TD attribute logic (its steps 4 to 10).
//! Neither is done. What is public, and used here: the quote parser, dcap-qvl's claims
//! ([`QuoteClaims`], with the collateral's validity window), and its ECDSA P-256 algorithm and
//! signature encoder.
//!
//! # What is cached, and why the result is the same as [`super::verify`]
//!
//! An entry is dcap-qvl's verified result for one collateral and one *endorsement*: every byte of
//! a quote except the quote signature and the fields that hold the workload's measurements and
//! report data (TDX: MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0..3, REPORTDATA; SGX:
//! MRENCLAVE, MRSIGNER, CONFIGID, ISVPRODID, ISVSVN, CONFIGSVN, ISVFAMILYID, REPORTDATA). The
//! endorsement is the header, the platform's TCB fields of the body (TEE_TCB_SVN, MRSIGNERSEAM,
//! SEAMATTRIBUTES, TDATTRIBUTES, XFAM, …), and the signature data: attestation key, QE report and
//! its signature, QE authentication data and the PCK chain. It is keyed by SHA-384 over the
//! collateral's digest ([`DcapCollateral::digest`]) and those bytes.
//!
//! dcap-qvl 0.7.1 reads none of the masked fields to reach its verdict (they are only copied into
//! its claims' `report`), so for two quotes that agree outside them it takes the same decision in
//! every step except one: the quote signature over header and body, which the masked fields are
//! part of. A quote whose key is cached is therefore verified, at every call, by:
//!
//! 1. this module's own gates ([`super::checked_quote`]: header, one encoding, QE vendor id, PCK
//!    chain framing and root copy);
//! 2. the validity window at `now`: dcap-qvl's `latest_issue_date <= now < earliest_expiration_date`
//!    over the TCB info, QE identity, both CRLs and every certificate of the verified paths
//!    (see below);
//! 3. the quote signature: ECDSA P-256 over the quote header and body with the attestation key
//!    (Intel SGX ECDSA Quote Library API, appendix A.4, "Quote Signature Data Structure": ISV
//!    Enclave Report Signature; Intel TDX DCAP Quoting Library API, "ECDSA 256-bit Quote Signature
//!    Data Structure", Quote Signature), with dcap-qvl's own algorithm object and encoder, as its
//!    step 7 does;
//!
//! and its claims are the entry's with this quote's header and body. If the window or the
//! signature fails, the quote goes through [`super::verify`] instead, so every error is the
//! uncached path's error, word for word.
//!
//! **The window.** Every time check of dcap-qvl is bounded by a date in its claims' window: TCB
//! info and QE identity `issueDate ..= nextUpdate`; webpki's certificate validity
//! (`notBefore ..= notAfter`) for each certificate of a verified path; a CRL is refused from its
//! `nextUpdate` on. The window also holds dates nobody checks (CRL `thisUpdate`, the root CA's
//! validity), which only narrows it, and its end is taken as exclusive. Inside it, the verdict is
//! unchanged as long as webpki builds the same paths, which holds when no chain has a certificate
//! to spare: an entry is stored only when the TCB info and QE identity issuer chains hold two
//! certificates each and the quote carries its PCK chain (certification data type 5, none in the
//! collateral) with three, the last being the root the quote is verified under (Intel's, or a named emulated root). Other quotes are verified in full
//! at every call.
//!
//! **Cost.** The first quote of each platform endorsement under a collateral pays dcap-qvl's full
//! verification (a new platform, a re-provisioned quoting enclave, a TDX module update, new TD
//! attributes); after that each quote costs one ECDSA verification, a SHA-384 over the quote, and
//! building the claims.

use super::anchor::Anchor;
use super::{checked_quote, claims, unix_secs, verify_with_dcap_qvl, DcapCollateral, DcapError};
use crate::Claims;
use dcap_qvl::config::{CryptoProvider, EcdsaSigEncoder};
use dcap_qvl::crypto::RustCryptoCrypto;
use dcap_qvl::quote::{AuthData, Quote, Report};
use dcap_qvl::signature::DerSigEncoder;
use dcap_qvl::QuoteClaims;
use sha2::{Digest, Sha384};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Entries kept at most; when full, the cache starts over (only accepted quotes add entries).
const CAPACITY: usize = 1024;

/// Verifies DCAP quotes like [`super::verify`], caching what dcap-qvl established for each
/// collateral and platform endorsement (see the module documentation for what a cache hit still
/// checks). Validity windows are checked at every call's `now`.
#[derive(Default)]
pub struct Verifier {
    entries: Mutex<HashMap<[u8; 48], Arc<QuoteClaims>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How often [`Verifier::verify`] answered from its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Quotes verified from a cached entry (gates, window, quote signature).
    pub hits: u64,
    /// Quotes verified by dcap-qvl in full (no entry, outside its window, or refused).
    pub misses: u64,
    /// Entries held.
    pub entries: usize,
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Verifies `quote` against `collateral` at `now`: the same result as [`super::verify`].
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: &DcapCollateral,
        now: SystemTime,
    ) -> Result<Claims, DcapError> {
        self.verify_with_roots(quote, collateral, &[], now)
    }

    /// Verifies `quote` against `collateral` at `now`, also under the emulated roots named:
    /// the same result as [`super::verify_with_roots`]. Entries are keyed by the root too, and
    /// the root is judged against `emulated_roots` before any lookup, so a verdict reached under
    /// an emulated root never answers a call that does not name it.
    pub fn verify_with_roots(
        &self,
        quote: &[u8],
        collateral: &DcapCollateral,
        emulated_roots: &[[u8; 32]],
        now: SystemTime,
    ) -> Result<Claims, DcapError> {
        let now_secs = unix_secs(now)?;
        let (parsed, anchor) = checked_quote(quote, collateral, emulated_roots)?;
        let key = endorsement_key(quote, &parsed, &anchor, collateral);
        if let Some(entry) = self.lookup(&key) {
            if within_window(&entry, now_secs) && quote_signature_verifies(quote, &parsed) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                let verified = QuoteClaims {
                    header: parsed.header,
                    tee_type: parsed.header.tee_type,
                    report: parsed.report.clone(),
                    ..QuoteClaims::clone(&entry)
                };
                return claims(&parsed, &anchor, &verified);
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let verified = verify_with_dcap_qvl(quote, &parsed, &anchor, collateral, now_secs)?;
        if has_unique_paths(&parsed, collateral) {
            self.store(key, verified.clone());
        }
        claims(&parsed, &anchor, &verified)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.lock().map(|m| m.len()).unwrap_or(0),
        }
    }

    fn lookup(&self, key: &[u8; 48]) -> Option<Arc<QuoteClaims>> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    fn store(&self, key: [u8; 48], verified: QuoteClaims) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY && !entries.contains_key(&key) {
                entries.clear();
            }
            entries.insert(key, Arc::new(verified));
        }
    }
}

/// dcap-qvl's collateral window, end exclusive (a CRL is refused from its `nextUpdate` on).
fn within_window(verified: &QuoteClaims, now: u64) -> bool {
    verified.latest_issue_date <= now && now < verified.earliest_expiration_date
}

/// Header (48 bytes), then for quote version 5 the body descriptor (type 2, size 4).
fn body_offset(quote: &Quote) -> usize {
    if quote.header.version == 5 {
        54
    } else {
        48
    }
}

/// The bytes a cached entry does not fix: the workload's measurements and report data, and the
/// quote signature (the first 64 bytes after the 4-byte signature data length).
fn per_quote_ranges(quote: &Quote) -> Vec<Range<usize>> {
    let body = body_offset(quote);
    let at = |r: Range<usize>| body + r.start..body + r.end;
    let mut ranges = match &quote.report {
        // Enclave report body (see inspect.rs): MRENCLAVE @64, MRSIGNER @128, CONFIGID @192,
        // ISVPRODID, ISVSVN, CONFIGSVN @256..262, ISVFAMILYID @304, REPORTDATA @320..384.
        Report::SgxEnclave(_) => vec![at(64..96), at(128..160), at(192..262), at(304..384)],
        // TD quote body: MRTD @136 through REPORTDATA, ending at 584.
        Report::TD10(_) | Report::TD15(_) | Report::TD15Ex(_) => vec![at(136..584)],
    };
    let signature = quote.signed_length() + 4;
    ranges.push(signature..signature + 64);
    ranges
}

/// SHA-384 over the root's fingerprint, the collateral digest and the quote with
/// [`per_quote_ranges`] zeroed.
fn endorsement_key(
    quote: &[u8],
    parsed: &Quote,
    anchor: &Anchor,
    collateral: &DcapCollateral,
) -> [u8; 48] {
    let mut masked = quote.to_vec();
    for range in per_quote_ranges(parsed) {
        if let Some(bytes) = masked.get_mut(range) {
            bytes.fill(0);
        }
    }
    let mut h = Sha384::new();
    h.update(b"cordon dcap endorsement v2");
    h.update(anchor.fingerprint());
    h.update(collateral.digest());
    h.update(&masked);
    h.finalize().into()
}

/// The quote signature: ECDSA P-256 (SHA-256) over header and body by the attestation key, both
/// taken raw (`r ‖ s`, `x ‖ y`) from the signature data, verified as dcap-qvl's step 7 does.
fn quote_signature_verifies(quote: &[u8], parsed: &Quote) -> bool {
    let (signature, key) = match &parsed.auth_data {
        AuthData::V3(a) => (&a.ecdsa_signature, &a.ecdsa_attestation_key),
        AuthData::V4(a) => (&a.ecdsa_signature, &a.ecdsa_attestation_key),
    };
    let Some(signed) = quote.get(..parsed.signed_length()) else {
        return false;
    };
    let (r, s) = signature.split_at(32);
    let Ok(der_signature) = DerSigEncoder::encode_ecdsa_sig(r, s) else {
        return false;
    };
    let mut point = [0x04; 65];
    point[1..].copy_from_slice(key);
    RustCryptoCrypto::sig_algo()
        .verify_signature(&point, signed, &der_signature)
        .is_ok()
}

/// Whether every chain dcap-qvl verified has exactly the certificates of its path (plus the root
/// copy), so that webpki can build no other path at another time (module docs, "The window").
fn has_unique_paths(quote: &Quote, collateral: &DcapCollateral) -> bool {
    let c = collateral.inner();
    let pem_blocks = |text: &[u8]| {
        text.windows(b"-----BEGIN".len())
            .filter(|w| w == b"-----BEGIN")
            .count()
    };
    c.pck_certificate_chain.is_none()
        && quote.inner_cert_type() == 5
        && pem_blocks(quote.inner_cert_data()) == 3
        && pem_blocks(c.tcb_info_issuer_chain.as_bytes()) == 2
        && pem_blocks(c.qe_identity_issuer_chain.as_bytes()) == 2
}

#[cfg(test)]
impl Verifier {
    /// The cached entries' windows `[start, end)`, for tests.
    pub(super) fn windows(&self) -> Vec<(u64, u64)> {
        self.entries
            .lock()
            .map(|m| {
                m.values()
                    .map(|c| (c.latest_issue_date, c.earliest_expiration_date))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
pub(super) fn key_for_tests(quote: &[u8], collateral: &DcapCollateral) -> Option<[u8; 48]> {
    let (parsed, anchor) = checked_quote(quote, collateral, &[]).ok()?;
    Some(endorsement_key(quote, &parsed, &anchor, collateral))
}
