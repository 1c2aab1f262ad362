//! Intel TDX: MRTD from a TDVF (TDX virtual firmware, e.g. OVMF built for TDX) image.
//!
//! # Where the metadata is
//!
//! Intel "TDX Virtual Firmware Design Guide" (rev. 1.01), section 11 "TDVF Metadata", as OVMF lays it
//! out (edk2 `OvmfPkg/ResetVector`): the last 32 bytes of the image are the reset vector area; right
//! before them ends the OVMF GUIDed table, whose footer is a 2-byte table length (the whole table,
//! footer included) and the GUID 96b582de-1fb2-45f7-baea-a366c55a082d. Entries are read backwards
//! from the footer, each ending with its own 2-byte length (data, length and GUID) and GUID. The
//! entry with GUID e47a6535-984a-4798-865e-4685a7bf8ec2 holds a 4-byte offset, counted back from the
//! end of the image, of the `TDVF_DESCRIPTOR` (guide 11.2, table 11-2): signature "TDVF", length
//! (16 + 32 per section), version 1, number of sections, then the `TDVF_SECTION`s (table 11-3):
//! DataOffset (4), RawDataSize (4), MemoryAddress (8), MemoryDataSize (8), Type (4), Attributes (4).
//! Types (table 11-4): 0 BFV, 1 CFV, 2 TD_HOB, 3 TempMem, 4 PermMem, 5 Payload, 6 PayloadParam.
//! Attributes (table 11-5): bit 0 MR.EXTEND, bit 1 PAGE.AUG; the others are reserved.
//!
//! # What MRTD is
//!
//! The TDX module measures the TD while the host builds it (Intel TDX Module Base Architecture
//! Specification, "Measurement and Attestation", MRTD; TDX Module ABI, TDH.MEM.PAGE.ADD and
//! TDH.MR.EXTEND): MRTD is one SHA-384 over a stream of records, started by TDH.MNG.INIT and
//! finalized by TDH.MR.FINALIZE:
//!
//! - each TDH.MEM.PAGE.ADD adds a 128-byte record: "MEM.PAGE.ADD" (ASCII, zero-padded to 16
//!   bytes), the page's guest physical address (8 bytes little-endian), 104 zero bytes;
//! - each TDH.MR.EXTEND adds a 128-byte record "MR.EXTEND" + the 256-byte chunk's GPA in the same
//!   layout, then the chunk's 256 bytes.
//!
//! The host (QEMU, per the guide's section 11.3) adds every page of every section whose attributes
//! lack PAGE.AUG, in metadata order, and extends every 256-byte chunk of the sections with MR.EXTEND.
//! Pages of BFV and CFV hold `MemoryDataSize` bytes of the image from `DataOffset`; TD_HOB,
//! TempMem and PermMem pages start zeroed (a TD_HOB is filled by the host with a HOB that depends on
//! the VM's memory size, so an MR.EXTEND on it is not computable from the image and is refused, as
//! is one on Payload sections, whose content the host loads).
//!
//! Hosts differ in one thing: the order of adds and extends within a section. Upstream Linux KVM
//! (`KVM_TDX_INIT_MEM_REGION`, 6.16 and later) with QEMU adds a page and extends its 16 chunks
//! before the next page ([`AddOrder::PerPage`], the default); some earlier TDX host stacks added all
//! of a section's pages before extending any ([`AddOrder::PerSection`]). The two give different
//! MRTDs for the same image; the quote of a TD on the target host tells which one it uses.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};
use thiserror::Error;

#[cfg(test)]
mod tests;

/// OVMF GUIDed table footer GUID 96b582de-1fb2-45f7-baea-a366c55a082d, in its on-disk byte order.
pub const TABLE_FOOTER_GUID: [u8; 16] = guid(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// TDX metadata offset GUID e47a6535-984a-4798-865e-4685a7bf8ec2, in its on-disk byte order.
pub const TDX_METADATA_OFFSET_GUID: [u8; 16] = guid(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);

/// An EFI_GUID as stored: the first three fields little-endian, the last eight bytes as written.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// The reset vector area after the GUIDed table (edk2 `ResetVectorVtf0.asm`).
const BYTES_AFTER_TABLE: usize = 0x20;
/// A table entry's trailer: 2-byte length and 16-byte GUID.
const ENTRY_TRAILER: usize = 18;
const DESCRIPTOR_HEADER: usize = 16;
const SECTION_LEN: usize = 32;
const PAGE: u64 = 0x1000;
const CHUNK: usize = 0x100;
/// More sections than any TDVF has (OVMF has 6 to 9): bounds the work a crafted image causes.
const MAX_SECTIONS: usize = 256;
/// At most 1 GiB of pages added: TDVF sections are a few MiB; bounds the hashing a crafted image
/// can ask for.
const MAX_ADDED_BYTES: u64 = 1 << 30;

/// TDVF section attribute bit 0: the host extends MRTD with the section's content.
pub const ATTRIBUTE_MR_EXTEND: u32 = 1 << 0;
/// TDVF section attribute bit 1: the pages are added after the build with TDH.MEM.PAGE.AUG, unmeasured.
pub const ATTRIBUTE_PAGE_AUG: u32 = 1 << 1;

/// Why an image's TDVF metadata was refused, or its MRTD cannot be computed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TdvfError {
    #[error("TDVF image: {0} bytes, too short for the OVMF GUIDed table footer")]
    TooShort(usize),
    #[error("TDVF image: no OVMF GUIDed table footer (GUID 96b582de-1fb2-45f7-baea-a366c55a082d) {BYTES_AFTER_TABLE} bytes before the end: not an OVMF/TDVF image")]
    NoFooter,
    #[error("TDVF image: the GUIDed table length {length} is not within 18..={max}")]
    TableLength { length: usize, max: usize },
    #[error("TDVF image: GUIDed table entry {guid} at byte {offset} has length {length}, outside the table")]
    EntryLength {
        guid: String,
        offset: usize,
        length: usize,
    },
    #[error("TDVF image: the GUIDed table has no TDX metadata offset entry (GUID e47a6535-984a-4798-865e-4685a7bf8ec2): firmware without TDX support")]
    NoTdxMetadata,
    #[error("TDVF image: the TDX metadata offset entry holds {0} bytes, not 4")]
    OffsetEntrySize(usize),
    #[error(
        "TDVF image: TDX metadata offset {offset} (from the end) is outside the {len}-byte image"
    )]
    MetadataOffset { offset: u32, len: usize },
    #[error("TDVF metadata: truncated at byte {offset}: {what} needs {needed} bytes")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("TDVF metadata: descriptor signature {0:?}, not \"TDVF\"")]
    Signature(String),
    #[error("TDVF metadata: descriptor version {0}, where this code knows version 1")]
    Version(u32),
    #[error("TDVF metadata: descriptor length {length} does not match its {sections} sections (16 + 32 each = {expected})")]
    DescriptorLength {
        length: u32,
        sections: u32,
        expected: u64,
    },
    #[error("TDVF metadata: {0} sections (at most {MAX_SECTIONS} accepted)")]
    TooManySections(u32),
    #[error("TDVF section {index}: unknown type {section_type}")]
    SectionType { index: usize, section_type: u32 },
    #[error(
        "TDVF section {index} ({section_type}): reserved attribute bits set ({attributes:#x})"
    )]
    ReservedAttributes {
        index: usize,
        section_type: SectionType,
        attributes: u32,
    },
    #[error(
        "TDVF section {index} ({section_type}): {field} {value:#x} is not a multiple of 4 KiB"
    )]
    Unaligned {
        index: usize,
        section_type: SectionType,
        field: &'static str,
        value: u64,
    },
    #[error("TDVF section {index} ({section_type}): RawDataSize {raw:#x} exceeds MemoryDataSize {memory:#x}")]
    RawExceedsMemory {
        index: usize,
        section_type: SectionType,
        raw: u32,
        memory: u64,
    },
    #[error("TDVF section {index} ({section_type}): image bytes {start:#x}..{end:#x} are outside the {len}-byte image")]
    DataOutsideImage {
        index: usize,
        section_type: SectionType,
        start: u64,
        end: u64,
        len: usize,
    },
    #[error("TDVF section {index} ({section_type}): {reason}")]
    Section {
        index: usize,
        section_type: SectionType,
        reason: &'static str,
    },
    #[error("TDVF sections {first} and {second} overlap in guest memory")]
    Overlap { first: usize, second: usize },
    #[error(
        "TDVF metadata: the sections add {0} bytes of pages, more than the 1 GiB this accepts"
    )]
    TooLarge(u64),
}

/// TDVF section types (TDVF Design Guide, table 11-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SectionType {
    /// Boot firmware volume: the firmware code, measured into MRTD.
    Bfv = 0,
    /// Configuration firmware volume: UEFI variables, measured by the firmware into RTMR0.
    Cfv = 1,
    /// The TD HOB the host builds (memory map).
    TdHob = 2,
    /// Temporary memory the firmware uses before it accepts memory.
    TempMem = 3,
    /// Permanent memory (added with PAGE.AUG).
    PermMem = 4,
    /// A payload (kernel) the host loads (td-shim).
    Payload = 5,
    /// The payload's parameters (command line).
    PayloadParam = 6,
}

impl SectionType {
    fn from_u32(value: u32) -> Option<SectionType> {
        Some(match value {
            0 => SectionType::Bfv,
            1 => SectionType::Cfv,
            2 => SectionType::TdHob,
            3 => SectionType::TempMem,
            4 => SectionType::PermMem,
            5 => SectionType::Payload,
            6 => SectionType::PayloadParam,
            _ => return None,
        })
    }

    /// Whether the section's pages hold bytes of the image.
    fn holds_image_bytes(self) -> bool {
        matches!(self, SectionType::Bfv | SectionType::Cfv)
    }
}

impl std::fmt::Display for SectionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SectionType::Bfv => "BFV",
            SectionType::Cfv => "CFV",
            SectionType::TdHob => "TD_HOB",
            SectionType::TempMem => "TempMem",
            SectionType::PermMem => "PermMem",
            SectionType::Payload => "Payload",
            SectionType::PayloadParam => "PayloadParam",
        })
    }
}

/// One `TDVF_SECTION` (TDVF Design Guide, table 11-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdvfSection {
    /// Offset of the section's data in the image.
    pub data_offset: u32,
    /// Bytes of the image the section holds (0 for memory-only sections).
    pub raw_data_size: u32,
    /// Guest physical address the section is placed at.
    pub memory_address: u64,
    /// Bytes of guest memory the section takes.
    pub memory_data_size: u64,
    pub section_type: SectionType,
    pub attributes: u32,
}

impl TdvfSection {
    /// Whether the host extends MRTD with this section's content (TDH.MR.EXTEND).
    pub fn mr_extend(&self) -> bool {
        self.attributes & ATTRIBUTE_MR_EXTEND != 0
    }

    /// Whether the host adds this section's pages while building the TD (TDH.MEM.PAGE.ADD), so
    /// that MRTD covers their addresses.
    pub fn page_add(&self) -> bool {
        self.attributes & ATTRIBUTE_PAGE_AUG == 0
    }

    fn pages(&self) -> u64 {
        self.memory_data_size / PAGE
    }
}

/// The TDVF metadata of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdvfMetadata {
    /// Where the `TDVF_DESCRIPTOR` starts in the image.
    pub descriptor_offset: usize,
    pub version: u32,
    pub sections: Vec<TdvfSection>,
}

/// The order in which a host adds a section's pages and extends its chunks (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddOrder {
    /// Each page is added, then its 16 chunks extended (upstream Linux KVM 6.16+ with QEMU).
    #[default]
    PerPage,
    /// All pages of a section are added, then all its chunks extended.
    PerSection,
}

fn read<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    read(bytes, offset).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    read(bytes, offset).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    read(bytes, offset).map(u64::from_le_bytes)
}

/// The GUID in its usual text form, from its on-disk bytes.
fn guid_text(g: &[u8; 16]) -> String {
    let a = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let b = u16::from_le_bytes([g[4], g[5]]);
    let c = u16::from_le_bytes([g[6], g[7]]);
    format!(
        "{a:08x}-{b:04x}-{c:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

/// The data of the OVMF GUIDed table entry with `wanted` (read backwards from the footer).
fn guided_entry<'a>(image: &'a [u8], wanted: &[u8; 16]) -> Result<Option<&'a [u8]>, TdvfError> {
    let footer_end = image
        .len()
        .checked_sub(BYTES_AFTER_TABLE)
        .filter(|end| *end >= ENTRY_TRAILER)
        .ok_or(TdvfError::TooShort(image.len()))?;
    let footer_start = footer_end - ENTRY_TRAILER;
    if read::<16>(image, footer_start + 2) != Some(TABLE_FOOTER_GUID) {
        return Err(TdvfError::NoFooter);
    }
    let length = usize::from(u16_at(image, footer_start).ok_or(TdvfError::NoFooter)?);
    if !(ENTRY_TRAILER..=footer_end).contains(&length) {
        return Err(TdvfError::TableLength {
            length,
            max: footer_end,
        });
    }
    let table_start = footer_end - length;
    // Entries end where the footer starts; each ends with its length and GUID.
    let mut end = footer_start;
    while end > table_start {
        let entry_error = |guid: &[u8; 16], length| TdvfError::EntryLength {
            guid: guid_text(guid),
            offset: end,
            length,
        };
        let trailer = end
            .checked_sub(ENTRY_TRAILER)
            .filter(|t| *t >= table_start)
            .ok_or_else(|| entry_error(&[0; 16], end - table_start))?;
        let guid = read::<16>(image, trailer + 2).ok_or(TdvfError::NoFooter)?;
        let length = usize::from(u16_at(image, trailer).ok_or(TdvfError::NoFooter)?);
        let start = end
            .checked_sub(length)
            .filter(|s| length >= ENTRY_TRAILER && *s >= table_start)
            .ok_or_else(|| entry_error(&guid, length))?;
        if &guid == wanted {
            return Ok(image.get(start..trailer));
        }
        end = start;
    }
    Ok(None)
}

/// Finds and checks the TDVF metadata of `image` (the whole firmware file, e.g. `OVMF.inteltdx.fd`
/// or a unified `OVMF.fd` built with TDX support).
pub fn parse_tdvf(image: &[u8]) -> Result<TdvfMetadata, TdvfError> {
    let entry = guided_entry(image, &TDX_METADATA_OFFSET_GUID)?.ok_or(TdvfError::NoTdxMetadata)?;
    let offset = <[u8; 4]>::try_from(entry)
        .map(u32::from_le_bytes)
        .map_err(|_| TdvfError::OffsetEntrySize(entry.len()))?;
    let descriptor_offset = usize::try_from(offset)
        .ok()
        .and_then(|o| image.len().checked_sub(o))
        .filter(|_| offset > 0)
        .ok_or(TdvfError::MetadataOffset {
            offset,
            len: image.len(),
        })?;
    let truncated = |what, at: usize, needed| TdvfError::Truncated {
        what,
        offset: at,
        needed,
    };
    let header: [u8; DESCRIPTOR_HEADER] = read(image, descriptor_offset).ok_or(truncated(
        "the TDVF descriptor",
        descriptor_offset,
        DESCRIPTOR_HEADER,
    ))?;
    let field = |i: usize| u32_at(&header, i).unwrap_or_default();
    if header.get(..4) != Some(b"TDVF".as_slice()) {
        let sig: String = header
            .iter()
            .take(4)
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        return Err(TdvfError::Signature(sig));
    }
    let (length, version, count) = (field(4), field(8), field(12));
    if version != 1 {
        return Err(TdvfError::Version(version));
    }
    let expected = DESCRIPTOR_HEADER as u64 + SECTION_LEN as u64 * u64::from(count);
    if u64::from(length) != expected {
        return Err(TdvfError::DescriptorLength {
            length,
            sections: count,
            expected,
        });
    }
    let n = usize::try_from(count)
        .ok()
        .filter(|n| *n <= MAX_SECTIONS)
        .ok_or(TdvfError::TooManySections(count))?;
    let table_at = descriptor_offset + DESCRIPTOR_HEADER;
    if image.len() - table_at < SECTION_LEN * n {
        return Err(truncated("the TDVF sections", table_at, SECTION_LEN * n));
    }
    let mut sections = Vec::with_capacity(n);
    for index in 0..n {
        let at = table_at + SECTION_LEN * index;
        let raw: [u8; SECTION_LEN] =
            read(image, at).ok_or(truncated("a TDVF section", at, SECTION_LEN))?;
        let section = section_from(&raw, index)?;
        check_section(&section, index, image.len())?;
        sections.push(section);
    }
    check_layout(&sections)?;
    Ok(TdvfMetadata {
        descriptor_offset,
        version,
        sections,
    })
}

/// One `TDVF_SECTION` from its 32 bytes.
fn section_from(raw: &[u8; SECTION_LEN], index: usize) -> Result<TdvfSection, TdvfError> {
    // The reads cannot fail on 32 bytes; `unwrap_or` keeps library code free of panics anyway.
    let type_value = u32_at(raw, 24).unwrap_or(u32::MAX);
    let section_type = SectionType::from_u32(type_value).ok_or(TdvfError::SectionType {
        index,
        section_type: type_value,
    })?;
    Ok(TdvfSection {
        data_offset: u32_at(raw, 0).unwrap_or_default(),
        raw_data_size: u32_at(raw, 4).unwrap_or_default(),
        memory_address: u64_at(raw, 8).unwrap_or_default(),
        memory_data_size: u64_at(raw, 16).unwrap_or_default(),
        section_type,
        attributes: u32_at(raw, 28).unwrap_or_default(),
    })
}

/// The guide's rules for one section (11.3), and what computing its measurement needs.
fn check_section(s: &TdvfSection, index: usize, image_len: usize) -> Result<(), TdvfError> {
    let section_type = s.section_type;
    let reason = |reason| TdvfError::Section {
        index,
        section_type,
        reason,
    };
    if s.attributes & !(ATTRIBUTE_MR_EXTEND | ATTRIBUTE_PAGE_AUG) != 0 {
        return Err(TdvfError::ReservedAttributes {
            index,
            section_type,
            attributes: s.attributes,
        });
    }
    for (field, value) in [
        ("MemoryAddress", s.memory_address),
        ("MemoryDataSize", s.memory_data_size),
    ] {
        if value % PAGE != 0 {
            return Err(TdvfError::Unaligned {
                index,
                section_type,
                field,
                value,
            });
        }
    }
    if u64::from(s.raw_data_size) > s.memory_data_size {
        return Err(TdvfError::RawExceedsMemory {
            index,
            section_type,
            raw: s.raw_data_size,
            memory: s.memory_data_size,
        });
    }
    if s.memory_data_size == 0 {
        return Err(reason("MemoryDataSize is 0"));
    }
    if s.memory_address.checked_add(s.memory_data_size).is_none() {
        return Err(reason("the section's guest addresses wrap around"));
    }
    if s.mr_extend() && !s.page_add() {
        return Err(reason(
            "MR.EXTEND together with PAGE.AUG: pages added after the build cannot be measured",
        ));
    }
    if section_type.holds_image_bytes() {
        if s.raw_data_size == 0 {
            return Err(reason("a firmware volume with RawDataSize 0"));
        }
        // The host copies MemoryDataSize bytes of the image from DataOffset.
        let start = u64::from(s.data_offset);
        let end = start.saturating_add(s.memory_data_size);
        if end > image_len as u64 {
            return Err(TdvfError::DataOutsideImage {
                index,
                section_type,
                start,
                end,
                len: image_len,
            });
        }
    } else if s.raw_data_size != 0 {
        return Err(reason(
            "a memory-only section with RawDataSize other than 0",
        ));
    }
    if s.mr_extend()
        && matches!(
            section_type,
            SectionType::TdHob | SectionType::Payload | SectionType::PayloadParam
        )
    {
        return Err(reason(
            "MR.EXTEND of content the host builds or loads: not computable from the image",
        ));
    }
    Ok(())
}

/// Sections added to the TD must not overlap (TDH.MEM.PAGE.ADD of a mapped page fails), and the
/// pages added stay within the bound.
fn check_layout(sections: &[TdvfSection]) -> Result<(), TdvfError> {
    let added: Vec<(usize, &TdvfSection)> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.page_add())
        .collect();
    let mut total: u64 = 0;
    for (i, (first, a)) in added.iter().enumerate() {
        total = total.saturating_add(a.memory_data_size);
        for (second, b) in added.iter().skip(i + 1) {
            let a_end = a.memory_address + a.memory_data_size;
            let b_end = b.memory_address + b.memory_data_size;
            if a.memory_address < b_end && b.memory_address < a_end {
                return Err(TdvfError::Overlap {
                    first: *first,
                    second: *second,
                });
            }
        }
    }
    if total > MAX_ADDED_BYTES {
        return Err(TdvfError::TooLarge(total));
    }
    Ok(())
}

/// A 128-byte TDX module measurement record: the operation name, zero-padded to 16 bytes, then the
/// GPA, then zeros.
fn record(operation: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    for (dst, src) in r.iter_mut().zip(operation.iter().take(16)) {
        *dst = *src;
    }
    for (dst, src) in r.iter_mut().skip(16).zip(gpa.to_le_bytes()) {
        *dst = src;
    }
    r
}

impl TdvfMetadata {
    /// MRTD of a TD built from `image` (the image these metadata were parsed from) with `order`.
    pub fn mrtd(&self, image: &[u8], order: AddOrder) -> Result<[u8; 48], TdvfError> {
        // The fields are public: check again what `parse_tdvf` checked, so that the arithmetic
        // below stays in range whoever built these metadata.
        for (index, s) in self.sections.iter().enumerate() {
            check_section(s, index, image.len())?;
        }
        check_layout(&self.sections)?;
        let mut h = Sha384::new();
        // PAGE.AUG sections (often all of RAM) are added after the build: nothing to measure.
        for (index, s) in self
            .sections
            .iter()
            .enumerate()
            .filter(|(_, s)| s.page_add())
        {
            let content = section_content(s, index, image)?;
            let add = |h: &mut Sha384, page: u64| {
                if s.page_add() {
                    h.update(record(b"MEM.PAGE.ADD", s.memory_address + page * PAGE));
                }
            };
            let extend = |h: &mut Sha384, page: u64| {
                if !s.mr_extend() {
                    return;
                }
                let base = s.memory_address + page * PAGE;
                for chunk in 0..(PAGE as usize / CHUNK) {
                    h.update(record(b"MR.EXTEND", base + (chunk * CHUNK) as u64));
                    let at = page as usize * PAGE as usize + chunk * CHUNK;
                    match content.and_then(|c| c.get(at..at + CHUNK)) {
                        Some(bytes) => h.update(bytes),
                        None => h.update([0u8; CHUNK]),
                    }
                }
            };
            match order {
                AddOrder::PerPage => {
                    for page in 0..s.pages() {
                        add(&mut h, page);
                        extend(&mut h, page);
                    }
                }
                AddOrder::PerSection => {
                    for page in 0..s.pages() {
                        add(&mut h, page);
                    }
                    for page in 0..s.pages() {
                        extend(&mut h, page);
                    }
                }
            }
        }
        Ok(h.finalize().into())
    }
}

/// The image bytes a BFV/CFV section's pages hold; `None` for zero-filled sections.
fn section_content<'a>(
    s: &TdvfSection,
    index: usize,
    image: &'a [u8],
) -> Result<Option<&'a [u8]>, TdvfError> {
    if !s.section_type.holds_image_bytes() {
        return Ok(None);
    }
    let start = u64::from(s.data_offset);
    let end = start.saturating_add(s.memory_data_size);
    let range = usize::try_from(start).ok().zip(usize::try_from(end).ok());
    range
        .and_then(|(a, b)| image.get(a..b))
        .map(Some)
        .ok_or(TdvfError::DataOutsideImage {
            index,
            section_type: s.section_type,
            start,
            end,
            len: image.len(),
        })
}

/// MRTD of a TD built from the TDVF `image` with `order`: [`parse_tdvf`], then [`TdvfMetadata::mrtd`].
pub fn mrtd(image: &[u8], order: AddOrder) -> Result<[u8; 48], TdvfError> {
    parse_tdvf(image)?.mrtd(image, order)
}
