//! TDX RTMR replay from the event log TDX firmware writes to the ACPI CCEL table.
//!
//! The CCEL table (ACPI 6.5, "CC Event Log ACPI Table") points at a TCG crypto-agile event log
//! (TCG PC Client Platform Firmware Profile Specification, "PFP", version 1.05, section 10):
//!
//! - the first record is a `TCG_PCClientPCREvent` (PFP 10.2.1: MR index, event type EV_NO_ACTION,
//!   a 20-byte SHA-1 digest field, event size, event data) whose data is the `TCG_EfiSpecIdEvent`
//!   (PFP 10.4.5.1: signature `"Spec ID Event03\0"`, platform class, spec version, UINTN size, the
//!   number of algorithms and each algorithm's id and digest size, vendor info);
//! - every further record is a `TCG_PCR_EVENT2` (PFP 10.2.2: MR index, event type,
//!   `TPML_DIGEST_VALUES` = a count and that many `TPMT_HA` (algorithm id, digest of the size the
//!   header gives), event size, event data);
//! - the rest of the table's log area is padding: the firmware fills it with 0xFF (some loaders
//!   with 0x00), so a record boundary followed by nothing but 0xFF or 0x00 bytes ends the log.
//!
//! The MR index is the UEFI CC measurement protocol's (UEFI 2.10, section 38.4,
//! `EFI_CC_MEASUREMENT_PROTOCOL`; for TDX: 0 = MRTD, 1..4 = RTMR0..3). The TDX module extends an RTMR
//! as `RTMR_new = SHA-384(RTMR_old || digest)` from 48 zero bytes (TDG.MR.RTMR.EXTEND, Intel TDX
//! Module ABI); EV_NO_ACTION records are informational and never extended (PFP 10.4.1). MRTD is
//! measured by the TDX module while the TD is built, not by the firmware, so a measured event at MR
//! index 0 cannot be replayed and is refused.
//!
//! [`parse`] reads a log (no I/O), [`EventLog::replay`] computes RTMR0..3, [`check_rtmrs`] compares
//! the replay with a quote's RTMRs, and [`check_claims`] does that for the verified [`Claims`] of a
//! TDX quote. Each returns the events as serializable [`EventClaim`]s.

use crate::{Claims, Platform};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};
use thiserror::Error;

#[cfg(test)]
mod tests;

/// TPM_ALG_SHA384 (TCG Algorithm Registry).
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// SHA-384 digest size: the size of an RTMR.
pub const RTMR_LEN: usize = 48;
/// EV_NO_ACTION (PFP 10.4.1): informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// The Spec ID event's signature (PFP 10.4.5.1), NUL included.
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// The longest readable form kept for an event, in characters.
const MAX_TEXT_CHARS: usize = 4096;

/// Why an event log was refused, or did not match a quote.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EventLogError {
    #[error("event log: empty")]
    Empty,
    #[error("event log: truncated at byte {offset}: {what} needs {needed} bytes, {found} remain")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        found: usize,
    },
    #[error("event log: the first event has type {0:#x}, where the Spec ID event has EV_NO_ACTION (0x3)")]
    HeaderEventType(u32),
    #[error("event log: the first event is not a Spec ID Event03 (signature {0})")]
    HeaderSignature(String),
    #[error("event log: the Spec ID event lists no digest algorithm")]
    NoAlgorithms,
    #[error("event log: the Spec ID event lists algorithm {0:#06x} twice")]
    DuplicateAlgorithm(u16),
    #[error(
        "event log: the Spec ID event lists no SHA-384 (0x000c), which RTMRs use; it lists {0}"
    )]
    NoSha384(String),
    #[error("event log: the Spec ID event gives SHA-384 a digest size of {0} bytes, not 48")]
    Sha384Size(u16),
    #[error("event log: the Spec ID event gives algorithm {algorithm:#06x} a digest size of 0")]
    ZeroDigestSize { algorithm: u16 },
    #[error("event log: event {event} (byte {offset}) has MR index {index}; TDX has 0 (MRTD) to 4 (RTMR3)")]
    MrIndex {
        event: usize,
        offset: usize,
        index: u32,
    },
    #[error("event log: event {event} (byte {offset}) of type {event_type:#x} is measured into MR index 0 (MRTD), which no event can extend")]
    MrtdEvent {
        event: usize,
        offset: usize,
        event_type: u32,
    },
    #[error("event log: event {event} (byte {offset}) carries {found} digests, the Spec ID event lists {expected} algorithms")]
    DigestCount {
        event: usize,
        offset: usize,
        found: u32,
        expected: usize,
    },
    #[error("event log: event {event} (byte {offset}) carries a digest of algorithm {algorithm:#06x}, which the Spec ID event does not list")]
    UnlistedAlgorithm {
        event: usize,
        offset: usize,
        algorithm: u16,
    },
    #[error("event log: event {event} (byte {offset}) carries two digests of algorithm {algorithm:#06x}")]
    DuplicateDigest {
        event: usize,
        offset: usize,
        algorithm: u16,
    },
    #[error("event log: event {event} (byte {offset}) declares {size} bytes of event data, {remaining} remain")]
    EventSize {
        event: usize,
        offset: usize,
        size: u32,
        remaining: usize,
    },
    #[error("RTMR{rtmr} does not match the event log: the quote has {quote}, replaying the log gives {replayed}")]
    Mismatch {
        rtmr: usize,
        quote: String,
        replayed: String,
    },
    #[error("event log: the claims are of a {0} quote; RTMRs are TDX's")]
    NotTdx(Platform),
    #[error("event log: the claims carry {0}, where a TDX quote has four 48-byte RTMRs")]
    ClaimsRtmrs(String),
}

/// One digest algorithm of the Spec ID event (PFP 10.4.5.1, `TCG_EfiSpecIdEventAlgorithmSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlgorithmSize {
    /// TCG algorithm id (TPM_ALG_*).
    pub algorithm: u16,
    /// Its digest size in bytes.
    pub digest_size: u16,
}

/// The Spec ID event (PFP 10.4.5.1, `TCG_EfiSpecIdEvent`): what the log's digests are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecId {
    /// The MR index the header record was written with (firmware writes 0 or 1; it is not extended).
    pub mr_index: u32,
    pub platform_class: u32,
    /// specVersionMajor, specVersionMinor, specErrata.
    pub spec_version: (u8, u8, u8),
    /// 1 for 32-bit UINTN, 2 for 64-bit.
    pub uintn_size: u8,
    pub algorithms: Vec<AlgorithmSize>,
    #[serde(with = "crate::hexser")]
    pub vendor_info: Vec<u8>,
}

/// One `TCG_PCR_EVENT2` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log: the Spec ID event is 0, so records count from 1.
    pub number: usize,
    /// Byte offset of the record in the log.
    pub offset: usize,
    /// CC MR index: 0 MRTD, 1..4 RTMR0..3.
    pub mr_index: u32,
    pub event_type: u32,
    /// The SHA-384 digest, the one RTMRs are extended with.
    pub sha384: [u8; RTMR_LEN],
    /// Every digest of the record, in its order: (algorithm, digest).
    pub digests: Vec<(u16, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Event {
    /// Whether replay extends this event into an RTMR (every event but EV_NO_ACTION).
    pub fn is_measured(&self) -> bool {
        self.event_type != EV_NO_ACTION
    }

    /// The RTMR this event extends (0..=3), or `None` for MR index 0 (MRTD).
    pub fn rtmr(&self) -> Option<usize> {
        match self.mr_index {
            1..=4 => usize::try_from(self.mr_index - 1).ok(),
            _ => None,
        }
    }

    /// The event as a claim: what it measured, in a form people read.
    pub fn claim(&self) -> EventClaim {
        EventClaim {
            number: self.number,
            mr_index: self.mr_index,
            register: register_name(self.mr_index).to_string(),
            event_type: self.event_type,
            event_type_name: event_type_name(self.event_type).map(str::to_string),
            digest: self.sha384.to_vec(),
            data_size: self.data.len(),
            text: readable_text(self.event_type, &self.data),
            replayed: self.is_measured(),
        }
    }
}

/// A parsed event log: the Spec ID event and the records after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    pub spec_id: SpecId,
    pub events: Vec<Event>,
    /// Bytes the log takes, before the padding.
    pub length: usize,
}

impl EventLog {
    /// RTMR0..3 as the TDX module computes them from these events: each starts as 48 zero bytes and
    /// every measured event extends its register with `SHA-384(RTMR || digest)`.
    pub fn replay(&self) -> [[u8; RTMR_LEN]; 4] {
        let mut rtmrs = [[0u8; RTMR_LEN]; 4];
        for event in self.events.iter().filter(|e| e.is_measured()) {
            if let Some(rtmr) = event.rtmr().and_then(|i| rtmrs.get_mut(i)) {
                *rtmr = extend(rtmr, &event.sha384);
            }
        }
        rtmrs
    }

    /// Every event as a claim, in log order.
    pub fn claims(&self) -> Vec<EventClaim> {
        self.events.iter().map(Event::claim).collect()
    }
}

/// `SHA-384(register || digest)`: one TDG.MR.RTMR.EXTEND.
pub fn extend(register: &[u8; RTMR_LEN], digest: &[u8; RTMR_LEN]) -> [u8; RTMR_LEN] {
    let mut h = Sha384::new();
    h.update(register);
    h.update(digest);
    h.finalize().into()
}

/// One event of a log, as an auditor reads it. Serializable: a verifier reports these after the
/// replay matched the quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventClaim {
    /// Position in the log (the Spec ID event is 0).
    pub number: usize,
    /// CC MR index: 0 MRTD, 1..4 RTMR0..3.
    pub mr_index: u32,
    /// `MRTD` or `RTMR0`..`RTMR3`.
    pub register: String,
    pub event_type: u32,
    /// The PFP name of the event type, where it is a known one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type_name: Option<String>,
    /// The SHA-384 digest the register was extended with.
    #[serde(with = "crate::hexser")]
    pub digest: Vec<u8>,
    pub data_size: usize,
    /// A short readable form of the event data where it is text: command lines, actions, blob and
    /// table descriptions, variable names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// False for EV_NO_ACTION events, which no register includes.
    pub replayed: bool,
}

/// `MRTD` for MR index 0, `RTMR0`..`RTMR3` for 1..4.
pub fn register_name(mr_index: u32) -> &'static str {
    match mr_index {
        0 => "MRTD",
        1 => "RTMR0",
        2 => "RTMR1",
        3 => "RTMR2",
        4 => "RTMR3",
        _ => "?",
    }
}

/// Event type names (PFP 10.4.1, "Event Types"; UEFI ones from EV_EFI_EVENT_BASE 0x80000000).
pub fn event_type_name(event_type: u32) -> Option<&'static str> {
    Some(match event_type {
        0x0000_0000 => "EV_PREBOOT_CERT",
        0x0000_0001 => "EV_POST_CODE",
        0x0000_0002 => "EV_UNUSED",
        0x0000_0003 => "EV_NO_ACTION",
        0x0000_0004 => "EV_SEPARATOR",
        0x0000_0005 => "EV_ACTION",
        0x0000_0006 => "EV_EVENT_TAG",
        0x0000_0007 => "EV_S_CRTM_CONTENTS",
        0x0000_0008 => "EV_S_CRTM_VERSION",
        0x0000_0009 => "EV_CPU_MICROCODE",
        0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
        0x0000_000B => "EV_TABLE_OF_DEVICES",
        0x0000_000C => "EV_COMPACT_HASH",
        0x0000_000D => "EV_IPL",
        0x0000_000E => "EV_IPL_PARTITION_DATA",
        0x0000_000F => "EV_NONHOST_CODE",
        0x0000_0010 => "EV_NONHOST_CONFIG",
        0x0000_0011 => "EV_NONHOST_INFO",
        0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => return None,
    })
}

/// Bounds-checked little-endian reads over the log.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let remaining = self.bytes.len().saturating_sub(self.pos);
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or(EventLogError::Truncated {
                what,
                offset: self.pos,
                needed: n,
                found: remaining,
            })?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], EventLogError> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }
}

/// Parses a CCEL event log (the table's whole log area, padding included, or just the log).
pub fn parse(log: &[u8]) -> Result<EventLog, EventLogError> {
    if log.is_empty() {
        return Err(EventLogError::Empty);
    }
    let mut r = Reader { bytes: log, pos: 0 };
    let spec_id = parse_spec_id(&mut r)?;
    let mut events = Vec::new();
    while !at_padding(r.remaining()) {
        let number = events.len() + 1;
        events.push(parse_event(&mut r, number, &spec_id.algorithms)?);
    }
    Ok(EventLog {
        spec_id,
        events,
        length: r.pos,
    })
}

/// Whether the log ends here: nothing left, or only 0xFF / 0x00 fill. Only a record that starts
/// like fill (MR index 0xFFFFFFFF, or MR index and type both 0) triggers the scan, so a log is
/// scanned to its end at most once: a real record starting so fails its own checks right after.
fn at_padding(rest: &[u8]) -> bool {
    let starts_like_fill = rest.get(..4) == Some(&[0xFF; 4]) || rest.get(..8) == Some(&[0; 8]);
    rest.is_empty()
        || (starts_like_fill && (rest.iter().all(|b| *b == 0xFF) || rest.iter().all(|b| *b == 0)))
}

fn check_mr_index(index: u32, event: usize, offset: usize) -> Result<(), EventLogError> {
    if index > 4 {
        return Err(EventLogError::MrIndex {
            event,
            offset,
            index,
        });
    }
    Ok(())
}

/// The first record (PFP 10.2.1) and its Spec ID event data (PFP 10.4.5.1).
fn parse_spec_id(r: &mut Reader<'_>) -> Result<SpecId, EventLogError> {
    let mr_index = r.u32("the Spec ID event's MR index")?;
    check_mr_index(mr_index, 0, 0)?;
    let event_type = r.u32("the Spec ID event's type")?;
    if event_type != EV_NO_ACTION {
        return Err(EventLogError::HeaderEventType(event_type));
    }
    r.take(20, "the Spec ID event's SHA-1 digest field")?;
    let size = r.u32("the Spec ID event's size")?;
    let remaining = r.remaining().len();
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= remaining)
        .ok_or(EventLogError::EventSize {
            event: 0,
            offset: 0,
            size,
            remaining,
        })?;
    let data = r.take(size, "the Spec ID event")?;
    let mut d = Reader {
        bytes: data,
        pos: 0,
    };
    let signature = d.take(16, "the Spec ID signature")?;
    if signature != SPEC_ID_SIGNATURE {
        return Err(EventLogError::HeaderSignature(printable(signature)));
    }
    let platform_class = d.u32("the Spec ID platform class")?;
    let minor = d.u8("the Spec ID version")?;
    let major = d.u8("the Spec ID version")?;
    let errata = d.u8("the Spec ID errata")?;
    let uintn_size = d.u8("the Spec ID UINTN size")?;
    let count = d.u32("the Spec ID algorithm count")?;
    if count == 0 {
        return Err(EventLogError::NoAlgorithms);
    }
    let mut algorithms: Vec<AlgorithmSize> = Vec::new();
    for _ in 0..count {
        let algorithm = d.u16("a Spec ID algorithm id")?;
        let digest_size = d.u16("a Spec ID digest size")?;
        if algorithms.iter().any(|a| a.algorithm == algorithm) {
            return Err(EventLogError::DuplicateAlgorithm(algorithm));
        }
        if digest_size == 0 {
            return Err(EventLogError::ZeroDigestSize { algorithm });
        }
        algorithms.push(AlgorithmSize {
            algorithm,
            digest_size,
        });
    }
    match algorithms.iter().find(|a| a.algorithm == TPM_ALG_SHA384) {
        None => {
            let listed: Vec<String> = algorithms
                .iter()
                .map(|a| format!("{:#06x}", a.algorithm))
                .collect();
            return Err(EventLogError::NoSha384(listed.join(", ")));
        }
        Some(a) if usize::from(a.digest_size) != RTMR_LEN => {
            return Err(EventLogError::Sha384Size(a.digest_size));
        }
        Some(_) => {}
    }
    let vendor_size = d.u8("the Spec ID vendor info size")?;
    let vendor_info = d.take(vendor_size.into(), "the Spec ID vendor info")?;
    Ok(SpecId {
        mr_index,
        platform_class,
        spec_version: (major, minor, errata),
        uintn_size,
        algorithms,
        vendor_info: vendor_info.to_vec(),
    })
}

/// One `TCG_PCR_EVENT2` (PFP 10.2.2).
fn parse_event(
    r: &mut Reader<'_>,
    number: usize,
    algorithms: &[AlgorithmSize],
) -> Result<Event, EventLogError> {
    let offset = r.pos;
    let mr_index = r.u32("an event's MR index")?;
    check_mr_index(mr_index, number, offset)?;
    let event_type = r.u32("an event's type")?;
    let count = r.u32("an event's digest count")?;
    if usize::try_from(count).ok() != Some(algorithms.len()) {
        return Err(EventLogError::DigestCount {
            event: number,
            offset,
            found: count,
            expected: algorithms.len(),
        });
    }
    let mut digests: Vec<(u16, Vec<u8>)> = Vec::with_capacity(algorithms.len());
    let mut sha384 = None;
    for _ in 0..count {
        let algorithm = r.u16("a digest's algorithm id")?;
        let size = algorithms
            .iter()
            .find(|a| a.algorithm == algorithm)
            .ok_or(EventLogError::UnlistedAlgorithm {
                event: number,
                offset,
                algorithm,
            })?
            .digest_size;
        if digests.iter().any(|(a, _)| *a == algorithm) {
            return Err(EventLogError::DuplicateDigest {
                event: number,
                offset,
                algorithm,
            });
        }
        let digest = r.take(size.into(), "a digest")?;
        if algorithm == TPM_ALG_SHA384 {
            // The Spec ID check made the SHA-384 size 48.
            sha384 = <[u8; RTMR_LEN]>::try_from(digest).ok();
        }
        digests.push((algorithm, digest.to_vec()));
    }
    // Every listed algorithm appears once, SHA-384 among them (the Spec ID check requires it).
    let sha384 = sha384.ok_or(EventLogError::DigestCount {
        event: number,
        offset,
        found: count,
        expected: algorithms.len(),
    })?;
    let size = r.u32("an event's data size")?;
    let remaining = r.remaining().len();
    let data_len = usize::try_from(size)
        .ok()
        .filter(|s| *s <= remaining)
        .ok_or(EventLogError::EventSize {
            event: number,
            offset,
            size,
            remaining,
        })?;
    let data = r.take(data_len, "an event's data")?;
    if mr_index == 0 && event_type != EV_NO_ACTION {
        return Err(EventLogError::MrtdEvent {
            event: number,
            offset,
            event_type,
        });
    }
    Ok(Event {
        number,
        offset,
        mr_index,
        event_type,
        sha384,
        digests,
        data: data.to_vec(),
    })
}

/// Parses `log`, replays it and compares RTMR0..3 with a quote's; the events as claims when all four
/// match, else the first RTMR that differs with both values.
pub fn check_rtmrs(
    log: &[u8],
    quote_rtmrs: &[[u8; RTMR_LEN]; 4],
) -> Result<Vec<EventClaim>, EventLogError> {
    let parsed = parse(log)?;
    let replayed = parsed.replay();
    for (rtmr, (quote, replay)) in quote_rtmrs.iter().zip(replayed.iter()).enumerate() {
        if quote != replay {
            return Err(EventLogError::Mismatch {
                rtmr,
                quote: hex::encode(quote),
                replayed: hex::encode(replay),
            });
        }
    }
    Ok(parsed.claims())
}

/// [`check_rtmrs`] against the RTMRs of verified TDX claims ([`crate::verify`] of a TDX quote puts
/// RTMR0..3 in [`Claims::runtime_measurements`]).
pub fn check_claims(claims: &Claims, log: &[u8]) -> Result<Vec<EventClaim>, EventLogError> {
    if claims.platform != Platform::Tdx {
        return Err(EventLogError::NotTdx(claims.platform));
    }
    let rtmrs = rtmrs_of(&claims.runtime_measurements)?;
    check_rtmrs(log, &rtmrs)
}

/// Four 48-byte values, or an error saying what there is instead.
fn rtmrs_of(values: &[Vec<u8>]) -> Result<[[u8; RTMR_LEN]; 4], EventLogError> {
    let sizes = || {
        let sizes: Vec<String> = values.iter().map(|v| v.len().to_string()).collect();
        format!("{} values of [{}] bytes", values.len(), sizes.join(", "))
    };
    if values.len() != 4 {
        return Err(EventLogError::ClaimsRtmrs(sizes()));
    }
    let mut out = [[0u8; RTMR_LEN]; 4];
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = <[u8; RTMR_LEN]>::try_from(value.as_slice())
            .map_err(|_| EventLogError::ClaimsRtmrs(sizes()))?;
    }
    Ok(out)
}

/// Printable ASCII, other bytes as `\xNN`: for error messages about outside bytes.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

/// A readable form of the event data where the PFP or UEFI structure holds text.
fn readable_text(event_type: u32, data: &[u8]) -> Option<String> {
    match event_type {
        // Strings: ASCII (GRUB's `grub_cmd …` and `kernel_cmdline …`, firmware actions, td-shim)
        // or UTF-16LE (systemd-stub command lines, CRTM versions).
        0x0000_0001 | 0x0000_0005 | 0x0000_0008 | 0x0000_000A | 0x0000_000D | 0x0000_0012
        | 0x8000_0007 => text(data),
        // TCG_PCClientTaggedEvent (PFP 10.4.2.1): tag id (4), data size (4), data.
        0x0000_0006 => {
            let size =
                usize::try_from(u32::from_le_bytes(data.get(4..8)?.try_into().ok()?)).ok()?;
            text(data.get(8..8usize.checked_add(size)?)?)
        }
        // UEFI_PLATFORM_FIRMWARE_BLOB2 / UEFI_HANDOFF_TABLE_POINTERS2 (PFP 10.4.4 and 10.4.5.2):
        // a one-byte description size, then the description.
        0x8000_000A | 0x8000_000B => {
            let size = usize::from(*data.first()?);
            text(data.get(1..1 + size)?)
        }
        // UEFI_VARIABLE_DATA (PFP 10.4.6): VariableName GUID (16), UnicodeNameLength (8, in
        // characters), VariableDataLength (8), UnicodeName (UTF-16), VariableData.
        0x8000_0001 | 0x8000_0002 | 0x8000_000C | 0x8000_00E0 => {
            let chars = u64::from_le_bytes(data.get(16..24)?.try_into().ok()?);
            let len = usize::try_from(chars).ok()?.checked_mul(2)?;
            let name = data.get(32..32usize.checked_add(len)?)?;
            utf16(name)
        }
        _ => None,
    }
}

/// UTF-16LE when the bytes look like it (even length, NUL high bytes in the first characters),
/// else ASCII/UTF-8; up to the first NUL; `None` unless every character is printable.
fn text(data: &[u8]) -> Option<String> {
    let looks_utf16 = data.len() >= 4
        && data.len() % 2 == 0
        && data.get(1) == Some(&0)
        && data.get(3) == Some(&0);
    if looks_utf16 {
        return utf16(data);
    }
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let s = std::str::from_utf8(data.get(..end)?).ok()?;
    readable(s.to_string())
}

fn utf16(data: &[u8]) -> Option<String> {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    readable(String::from_utf16(&units).ok()?)
}

fn readable(s: String) -> Option<String> {
    let s = s.trim_end_matches(['\n', '\r', ' ']).to_string();
    if s.is_empty() || s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return None;
    }
    if s.chars().count() > MAX_TEXT_CHARS {
        let mut cut: String = s.chars().take(MAX_TEXT_CHARS).collect();
        cut.push('…');
        return Some(cut);
    }
    Some(s)
}
