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
//! 1. this module's own gates: header, one encoding, QE vendor id and the collateral's TEE type
//!    at every call; the PCK chain's framing and root, and the collateral chains' roots, passed
//!    when the entry was stored for these same bytes (the key covers the chain and the
//!    collateral), so a hit only asks again whether this call accepts the entry's root (an
//!    emulated root must be named);
//! 2. the validity window at `now`: dcap-qvl's `latest_issue_date <= now < earliest_expiration_date`
//!    over the TCB info, QE identity, both CRLs and every certificate of the verified paths
//!    (see below);
//! 3. the quote signature: ECDSA P-256 over the quote header and body with the attestation key
//!    (Intel SGX ECDSA Quote Library API, appendix A.4, "Quote Signature Data Structure": ISV
//!    Enclave Report Signature; Intel TDX DCAP Quoting Library API, "ECDSA 256-bit Quote Signature
//!    Data Structure", Quote Signature), as dcap-qvl's step 7 checks it, but with aws-lc-rs and
//!    the key parsed once per entry (a test checks both give the same verdict, on the genuine
//!    quotes and on flipped bytes);
//!
//! and its claims are the entry's with this quote's header and body (in [`Claims::raw`], only the
//! report body is read again: the rest is fixed by the entry's key).
//!
//! If the root, the window or the signature fails, the quote goes through [`super::verify`]'s
//! steps instead, so every error is the uncached path's error, word for word. (What the gates
//! read of the collateral alone, its TEE type and the root each issuer chain ends with, is read
//! once when a [`DcapCollateral`] is made.)
//!
//! **The window.** Every time check of dcap-qvl is bounded by a date in its claims' window: TCB
//! info and QE identity `issueDate ..= nextUpdate`; webpki's certificate validity
//! (`notBefore ..= notAfter`) for each certificate of a verified path; a CRL is refused from its
//! `nextUpdate` on. The window also holds dates nobody checks (CRL `thisUpdate`, the root CA's
//! validity), which only narrows it, and its end is taken as exclusive. Inside it, the verdict is
//! unchanged as long as webpki builds the same paths, which holds when no chain has a certificate
//! to spare: an entry is stored only when the TCB info and QE identity issuer chains hold two
//! certificates each and the quote carries its PCK chain (certification data type 5, none in the
//! collateral) with three, the last being the root the quote is verified under (Intel's, or a
//! named emulated root). Other quotes are verified in full at every call.
//!
//! **Cost.** The first quote of each platform endorsement under a collateral pays dcap-qvl's full
//! verification (a new platform, a re-provisioned quoting enclave, a TDX module update, new TD
//! attributes); after that each quote costs one ECDSA verification, a SHA-384 over the quote, and
//! building the claims: about 0.06 ms (docs/benchmarks.md).

use super::anchor::Anchor;
use super::{
    checked_anchor, claims_with_raw, gated_quote, inspect, raw_claims, unix_secs,
    verify_with_dcap_qvl, DcapCollateral, DcapError,
};
use crate::Claims;
use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED};
use dcap_qvl::quote::{AuthData, Quote, Report};
use dcap_qvl::QuoteClaims;
use serde_json::Value;
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
    entries: Mutex<HashMap<[u8; 48], Arc<Entry>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What dcap-qvl established for one collateral and platform endorsement, and what a hit needs
/// of it ready-made.
struct Entry {
    /// The root the quote's PCK chain ends with, which the collateral's chains end with too.
    anchor: Anchor,
    verified: QuoteClaims,
    /// The attestation key (fixed by the endorsement), parsed once for the quote signature.
    attestation_key: ParsedPublicKey,
    /// [`Claims::raw`] of the quote that made the entry. Of it, only the report body differs
    /// between quotes that share the endorsement (see [`raw_for_hit`]).
    raw: Value,
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
        let parsed = gated_quote(quote, collateral)?;
        let key = endorsement_key(quote, &parsed, collateral);
        if let Some(entry) = self.lookup(&key) {
            // The entry's key covers the PCK chain and the collateral, so the root gates passed
            // for these very bytes when it was stored; only whether this call accepts its root is
            // asked again.
            if entry.anchor.accepted_with(emulated_roots)
                && within_window(&entry.verified, now_secs)
                && quote_signature_verifies(quote, &parsed, &entry.attestation_key)
            {
                self.hits.fetch_add(1, Ordering::Relaxed);
                let verified = QuoteClaims {
                    header: parsed.header,
                    tee_type: parsed.header.tee_type,
                    report: parsed.report.clone(),
                    ..entry.verified.clone()
                };
                let raw = raw_for_hit(&entry.raw, &parsed);
                return claims_with_raw(&parsed, &entry.anchor, &verified, raw);
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let anchor = checked_anchor(&parsed, collateral, emulated_roots)?;
        let verified = verify_with_dcap_qvl(quote, &parsed, &anchor, collateral, now_secs)?;
        let raw = raw_claims(&parsed, &anchor, &verified);
        if has_unique_paths(&parsed, collateral) {
            // dcap-qvl verified the quote signature with this key, so it is a valid P-256 point;
            // were aws-lc-rs to refuse it anyway, the quote is simply not cached.
            if let Ok(attestation_key) = parse_attestation_key(&parsed) {
                self.store(
                    key,
                    Entry {
                        anchor: anchor.clone(),
                        verified: verified.clone(),
                        attestation_key,
                        raw: raw.clone(),
                    },
                );
            }
        }
        claims_with_raw(&parsed, &anchor, &verified, raw)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.lock().map(|m| m.len()).unwrap_or(0),
        }
    }

    fn lookup(&self, key: &[u8; 48]) -> Option<Arc<Entry>> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    fn store(&self, key: [u8; 48], entry: Entry) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY && !entries.contains_key(&key) {
                entries.clear();
            }
            entries.insert(key, Arc::new(entry));
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

/// SHA-384 over the collateral digest and the quote with [`per_quote_ranges`] zeroed. The PCK
/// chain, and so the root, is part of those bytes.
fn endorsement_key(quote: &[u8], parsed: &Quote, collateral: &DcapCollateral) -> [u8; 48] {
    let mut masked = quote.to_vec();
    for range in per_quote_ranges(parsed) {
        if let Some(bytes) = masked.get_mut(range) {
            bytes.fill(0);
        }
    }
    let mut h = Sha384::new();
    h.update(b"cordon dcap endorsement v3");
    h.update(collateral.digest());
    h.update(&masked);
    h.finalize().into()
}

/// The attestation key (`x ‖ y` in the signature data) as an uncompressed P-256 point, parsed
/// and checked on the curve once, for [`quote_signature_verifies`].
fn parse_attestation_key(parsed: &Quote) -> Result<ParsedPublicKey, aws_lc_rs::error::KeyRejected> {
    let key = match &parsed.auth_data {
        AuthData::V3(a) => &a.ecdsa_attestation_key,
        AuthData::V4(a) => &a.ecdsa_attestation_key,
    };
    let mut point = [0x04; 65];
    point[1..].copy_from_slice(key);
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
}

/// The quote signature: ECDSA P-256 (SHA-256) over header and body by the attestation key, the
/// signature taken raw (`r ‖ s`) from the signature data, as dcap-qvl's step 7 checks it. Same
/// verdict as dcap-qvl's RustCrypto check (a test compares them); aws-lc-rs takes a third of the
/// time, which is most of a cache hit.
fn quote_signature_verifies(quote: &[u8], parsed: &Quote, key: &ParsedPublicKey) -> bool {
    let signature = match &parsed.auth_data {
        AuthData::V3(a) => &a.ecdsa_signature,
        AuthData::V4(a) => &a.ecdsa_signature,
    };
    let Some(signed) = quote.get(..parsed.signed_length()) else {
        return false;
    };
    key.verify_sig(signed, signature).is_ok()
}

/// [`Claims::raw`] for a quote that hit `entry_raw`'s entry. Two quotes that share an entry differ
/// only in [`per_quote_ranges`]: the report body's measurements and report data, and the quote
/// signature. So those two members are read again from this quote; the rest (header, the other
/// signature data, what dcap-qvl established) is the entry's.
fn raw_for_hit(entry_raw: &Value, parsed: &Quote) -> Value {
    let mut raw = entry_raw.clone();
    if let Some(body) = raw.pointer_mut("/quote/body") {
        *body = inspect::report_json(&parsed.report);
    }
    if let Some(signature) = raw.pointer_mut("/quote/auth_data/ecdsa_signature") {
        let bytes = match &parsed.auth_data {
            AuthData::V3(a) => &a.ecdsa_signature,
            AuthData::V4(a) => &a.ecdsa_signature,
        };
        *signature = Value::String(hex::encode(bytes));
    }
    raw
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
                    .map(|e| {
                        (
                            e.verified.latest_issue_date,
                            e.verified.earliest_expiration_date,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The raw claims a hit gives `quote` from an entry made by `first`, against those the uncached
/// path gives it (for tests).
#[cfg(test)]
pub(super) fn raw_for_hit_for_tests(
    first: &[u8],
    quote: &[u8],
    collateral: &DcapCollateral,
    now_secs: u64,
) -> Option<(Value, Value)> {
    let (entry_quote, anchor) = super::checked_quote(first, collateral, &[]).ok()?;
    let verified = verify_with_dcap_qvl(first, &entry_quote, &anchor, collateral, now_secs).ok()?;
    let (parsed, _) = super::checked_quote(quote, collateral, &[]).ok()?;
    let entry_raw = raw_claims(&entry_quote, &anchor, &verified);
    let mut fresh = verified.clone();
    fresh.report = parsed.report.clone();
    Some((
        raw_for_hit(&entry_raw, &parsed),
        raw_claims(&parsed, &anchor, &fresh),
    ))
}

/// Whether the cache's aws-lc-rs check and dcap-qvl's RustCrypto check of the quote signature
/// agree on `quote` (for tests).
#[cfg(test)]
pub(super) fn signature_checks_for_tests(
    quote: &[u8],
    collateral: &DcapCollateral,
) -> Option<(bool, bool)> {
    use dcap_qvl::config::{CryptoProvider, EcdsaSigEncoder};
    let (parsed, _) = super::checked_quote(quote, collateral, &[]).ok()?;
    let key = parse_attestation_key(&parsed).ok()?;
    let ours = quote_signature_verifies(quote, &parsed, &key);
    let (signature, raw_key) = match &parsed.auth_data {
        AuthData::V3(a) => (&a.ecdsa_signature, &a.ecdsa_attestation_key),
        AuthData::V4(a) => (&a.ecdsa_signature, &a.ecdsa_attestation_key),
    };
    let (r, s) = signature.split_at(32);
    let der = dcap_qvl::signature::DerSigEncoder::encode_ecdsa_sig(r, s).ok()?;
    let mut point = [0x04; 65];
    point[1..].copy_from_slice(raw_key);
    let theirs = dcap_qvl::crypto::RustCryptoCrypto::sig_algo()
        .verify_signature(&point, quote.get(..parsed.signed_length())?, &der)
        .is_ok();
    Some((ours, theirs))
}

#[cfg(test)]
pub(super) fn key_for_tests(quote: &[u8], collateral: &DcapCollateral) -> Option<[u8; 48]> {
    let (parsed, _) = super::checked_quote(quote, collateral, &[]).ok()?;
    Some(endorsement_key(quote, &parsed, collateral))
}
