//! The parts of an OVMF image that decide an SEV-SNP launch: the GUIDed table at the end of the
//! image, the SEV-ES reset block, the SEV hashes table area and the SEV metadata with its sections.
//!
//! Layouts from edk2: `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm` (the table, which ends 32
//! bytes before the end of the image, read backwards from its footer entry; each entry is its data
//! followed by a little-endian `u16` length that counts the whole entry, then the GUID) and
//! `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm` (the `ASEV` header and its section descriptors).
//! QEMU reads the same structures (`hw/i386/pc_sysfw_ovmf.c`, `target/i386/sev.c`).

use super::{SnpError, PAGE_SIZE};

/// The GUID table ends this many bytes before the end of the image (the reset vector's last 32
/// bytes: the JMP and padding at 0xFFFFFFF0, see ResetVectorVtf0.asm).
const TABLE_END_FROM_IMAGE_END: usize = 32;
/// An entry's trailer: `u16` length, then the 16-byte GUID.
const ENTRY_TRAILER_LEN: usize = 18;
/// Bytes of the `ASEV` header: signature, length, version, number of sections (all `u32`).
const METADATA_HEADER_LEN: usize = 16;
/// Bytes of one section descriptor: base GPA, length, type (all `u32`).
const SECTION_DESC_LEN: usize = 12;
/// The only metadata version there is (OvmfSevMetadata.asm).
const METADATA_VERSION: u32 = 1;

/// Converts a GUID's canonical text into its EFI_GUID byte layout (Data1, Data2, Data3 little
/// endian, Data4 as written). Compile time only, on the constants below.
pub(crate) const fn efi_guid_bytes(text: &str) -> [u8; 16] {
    const fn hex(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not a hex digit in a GUID constant"),
        }
    }
    let s = text.as_bytes();
    let mut be = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < s.len() {
        if s[i] == b'-' {
            i += 1;
            continue;
        }
        be[n] = (hex(s[i]) << 4) | hex(s[i + 1]);
        n += 1;
        i += 2;
    }
    assert!(n == 16, "a GUID constant has 32 hex digits");
    [
        be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], be[8], be[9], be[10], be[11],
        be[12], be[13], be[14], be[15],
    ]
}

/// The GUID text of EFI_GUID bytes, for messages.
pub(crate) fn guid_text(g: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

/// The footer entry that closes the table (ResetVectorVtf0.asm `guidedStructureEnd`).
pub const TABLE_FOOTER_GUID: [u8; 16] = efi_guid_bytes("96b582de-1fb2-45f7-baea-a366c55a082d");
/// SEV-ES reset block: the AP reset vector, `u32` (ResetVectorVtf0.asm `sevEsResetBlock`).
pub const SEV_ES_RESET_BLOCK_GUID: [u8; 16] =
    efi_guid_bytes("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// SEV hashes table area: base GPA and length, both `u32` (`PcdQemuHashTableBase`/`Size`).
pub const SEV_HASH_TABLE_RV_GUID: [u8; 16] = efi_guid_bytes("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// SEV metadata: the `ASEV` header's offset from the end of the image, `u32`.
pub const SEV_METADATA_GUID: [u8; 16] = efi_guid_bytes("dc886566-984a-4798-a75e-5585a7bf67cc");

/// A section type of the SEV metadata (OvmfSevMetadata.asm `OVMF_SECTION_TYPE_*`), which decides
/// the SNP page type its pages are launched as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    /// `SNP_SEC_MEM` (1): memory the firmware validates itself early; launched as ZERO pages.
    SnpSecMem,
    /// `SNP_SECRETS` (2): the secrets page; a SECRETS page.
    SnpSecrets,
    /// `CPUID` (3): the CPUID table page; a CPUID page.
    Cpuid,
    /// `SVSM_CAA` (4): the SVSM calling area; ZERO pages.
    SvsmCaa,
    /// `SNP_KERNEL_HASHES` (0x10): the page holding the SEV hashes table; a NORMAL page with the
    /// table when a kernel is measured, else ZERO pages.
    SnpKernelHashes,
}

impl SectionKind {
    fn from_u32(v: u32) -> Option<SectionKind> {
        Some(match v {
            1 => SectionKind::SnpSecMem,
            2 => SectionKind::SnpSecrets,
            3 => SectionKind::Cpuid,
            4 => SectionKind::SvsmCaa,
            0x10 => SectionKind::SnpKernelHashes,
            _ => return None,
        })
    }

    /// The name OVMF's sources give it.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::SnpSecMem => "SNP_SEC_MEM",
            SectionKind::SnpSecrets => "SNP_SECRETS",
            SectionKind::Cpuid => "CPUID",
            SectionKind::SvsmCaa => "SVSM_CAA",
            SectionKind::SnpKernelHashes => "SNP_KERNEL_HASHES",
        }
    }
}

/// One section of the SEV metadata: guest memory QEMU launches besides the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataSection {
    /// Guest physical address (page aligned).
    pub gpa: u32,
    /// Length in bytes (a nonzero multiple of the page size).
    pub size: u32,
    /// What the section is, hence how it is measured.
    pub kind: SectionKind,
}

impl MetadataSection {
    fn end(&self) -> u64 {
        u64::from(self.gpa) + u64::from(self.size)
    }
}

/// The SEV hashes table area the GUID table names (`PcdQemuHashTableBase`, `...Size`): where
/// QEMU writes the kernel, initrd and command line hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashesTableArea {
    /// Guest physical address of the table.
    pub gpa: u32,
    /// Bytes reserved for it.
    pub size: u32,
}

/// A parsed OVMF image: its bytes and the structures the SNP launch reads from them.
#[derive(Clone, Debug)]
pub struct OvmfImage<'a> {
    bytes: &'a [u8],
    gpa: u64,
    ap_reset_eip: u32,
    hashes_table: Option<HashesTableArea>,
    sections: Vec<MetadataSection>,
}

/// Reads a little-endian `u32` at the start of a table entry's data.
fn entry_u32(data: &[u8], at: usize, entry: &'static str) -> Result<u32, SnpError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(SnpError::TableEntryTooShort {
            entry,
            length: data.len(),
            need: at + 4,
        })
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

/// A GUID table entry: its GUID and its data.
type TableEntry<'a> = ([u8; 16], &'a [u8]);

/// The GUID table's entries, last first (the order they are read in).
fn guid_table(image: &[u8]) -> Result<Vec<TableEntry<'_>>, SnpError> {
    let too_small = SnpError::FirmwareTooSmall { len: image.len() };
    let footer_end = image
        .len()
        .checked_sub(TABLE_END_FROM_IMAGE_END)
        .ok_or(too_small.clone())?;
    let footer_start = footer_end
        .checked_sub(ENTRY_TRAILER_LEN)
        .ok_or(too_small.clone())?;
    let footer = image.get(footer_start..footer_end).ok_or(too_small)?;
    let (length, guid) = split_trailer(footer);
    if guid != TABLE_FOOTER_GUID {
        return Err(SnpError::NoGuidTable {
            found: guid_text(&guid),
        });
    }
    let table_len =
        usize::from(length)
            .checked_sub(ENTRY_TRAILER_LEN)
            .ok_or(SnpError::GuidTableLength {
                length,
                available: footer_start,
            })?;
    let table_start = footer_start
        .checked_sub(table_len)
        .ok_or(SnpError::GuidTableLength {
            length,
            available: footer_start,
        })?;
    let mut rest = image
        .get(table_start..footer_start)
        .ok_or(SnpError::GuidTableLength {
            length,
            available: footer_start,
        })?;
    let mut entries: Vec<TableEntry<'_>> = Vec::new();
    while !rest.is_empty() {
        let trailer_start = rest
            .len()
            .checked_sub(ENTRY_TRAILER_LEN)
            .ok_or(SnpError::GuidTableTrailingBytes { count: rest.len() })?;
        let trailer = rest.get(trailer_start..).unwrap_or_default();
        let (size, guid) = split_trailer(trailer);
        let size_us = usize::from(size);
        let entry_start = rest.len().checked_sub(size_us);
        let (Some(entry_start), true) = (entry_start, size_us >= ENTRY_TRAILER_LEN) else {
            return Err(SnpError::GuidTableEntryLength {
                guid: guid_text(&guid),
                length: size,
                available: rest.len(),
            });
        };
        let data = rest.get(entry_start..trailer_start).unwrap_or_default();
        if entries.iter().any(|(g, _)| *g == guid) {
            return Err(SnpError::DuplicateGuidTableEntry {
                guid: guid_text(&guid),
            });
        }
        entries.push((guid, data));
        rest = rest.get(..entry_start).unwrap_or_default();
    }
    Ok(entries)
}

/// An entry trailer's length and GUID; `trailer` is exactly [`ENTRY_TRAILER_LEN`] bytes.
fn split_trailer(trailer: &[u8]) -> (u16, [u8; 16]) {
    let mut guid = [0u8; 16];
    let mut length = [0u8; 2];
    if let (Some(l), Some(g)) = (trailer.get(..2), trailer.get(2..ENTRY_TRAILER_LEN)) {
        length.copy_from_slice(l);
        guid.copy_from_slice(g);
    }
    (u16::from_le_bytes(length), guid)
}

impl<'a> OvmfImage<'a> {
    /// Parses `bytes` as an OVMF image mapped to end at 4 GiB, as QEMU maps `-bios`/pflash
    /// firmware, checking every offset and length.
    pub fn parse(bytes: &'a [u8]) -> Result<OvmfImage<'a>, SnpError> {
        let len = bytes.len();
        if len == 0 || len % PAGE_SIZE != 0 || len as u64 > super::FOUR_GIB {
            return Err(SnpError::FirmwareSize { len });
        }
        let gpa = super::FOUR_GIB - len as u64;
        let table = guid_table(bytes)?;
        let find = |g: [u8; 16]| table.iter().find(|(guid, _)| *guid == g).map(|(_, d)| *d);

        let reset = find(SEV_ES_RESET_BLOCK_GUID).ok_or(SnpError::MissingGuidTableEntry {
            entry: "SEV-ES reset block",
            guid: guid_text(&SEV_ES_RESET_BLOCK_GUID),
        })?;
        let ap_reset_eip = entry_u32(reset, 0, "SEV-ES reset block")?;

        let hashes_table = match find(SEV_HASH_TABLE_RV_GUID) {
            Some(d) => {
                let gpa = entry_u32(d, 0, "SEV hashes table")?;
                let size = entry_u32(d, 4, "SEV hashes table")?;
                // OVMF builds without a hashes table still carry the entry, with base 0.
                (gpa != 0).then_some(HashesTableArea { gpa, size })
            }
            None => None,
        };

        let meta = find(SEV_METADATA_GUID).ok_or(SnpError::MissingGuidTableEntry {
            entry: "SEV metadata",
            guid: guid_text(&SEV_METADATA_GUID),
        })?;
        let offset = entry_u32(meta, 0, "SEV metadata")?;
        let sections = parse_metadata(bytes, offset, gpa)?;
        Ok(OvmfImage {
            bytes,
            gpa,
            ap_reset_eip,
            hashes_table,
            sections,
        })
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Guest physical address of the first byte (the image ends at 4 GiB).
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// The APs' reset vector from the SEV-ES reset block (0 when the firmware has none).
    pub fn ap_reset_eip(&self) -> u32 {
        self.ap_reset_eip
    }

    /// The SEV hashes table area, when the firmware has one (a nonzero base).
    pub fn hashes_table(&self) -> Option<HashesTableArea> {
        self.hashes_table
    }

    /// The SEV metadata sections, in the order they are launched.
    pub fn sections(&self) -> &[MetadataSection] {
        &self.sections
    }
}

/// Parses the `ASEV` header `offset` bytes before the end of `image` and its sections, and checks
/// that every section is page aligned, that none overlaps another or the firmware (at
/// `firmware_gpa`): a page can be launched only once.
fn parse_metadata(
    image: &[u8],
    offset: u32,
    firmware_gpa: u64,
) -> Result<Vec<MetadataSection>, SnpError> {
    let out_of_bounds = SnpError::MetadataOutOfBounds {
        offset,
        image_len: image.len(),
    };
    let start = image
        .len()
        .checked_sub(offset as usize)
        .ok_or(out_of_bounds.clone())?;
    let header = image
        .get(start..start.saturating_add(METADATA_HEADER_LEN))
        .ok_or(out_of_bounds)?;
    let mut signature = [0u8; 4];
    signature.copy_from_slice(header.get(..4).unwrap_or(&[0; 4]));
    if &signature != b"ASEV" {
        return Err(SnpError::MetadataSignature { found: signature });
    }
    let (Some(length), Some(version), Some(count)) =
        (le_u32(header, 4), le_u32(header, 8), le_u32(header, 12))
    else {
        return Err(SnpError::MetadataOutOfBounds {
            offset,
            image_len: image.len(),
        });
    };
    if version != METADATA_VERSION {
        return Err(SnpError::MetadataVersion { found: version });
    }
    let available = image.len() - start;
    if (length as usize) < METADATA_HEADER_LEN || length as usize > available {
        return Err(SnpError::MetadataLength { length, available });
    }
    let descs = image
        .get(start + METADATA_HEADER_LEN..start + length as usize)
        .unwrap_or_default();
    let need = (count as u64) * SECTION_DESC_LEN as u64;
    if need > descs.len() as u64 {
        return Err(SnpError::MetadataSectionCount {
            count,
            length,
            fits: descs.len() / SECTION_DESC_LEN,
        });
    }
    let mut sections = Vec::with_capacity(count as usize);
    for (index, d) in descs
        .chunks_exact(SECTION_DESC_LEN)
        .take(count as usize)
        .enumerate()
    {
        let (Some(gpa), Some(size), Some(kind)) = (le_u32(d, 0), le_u32(d, 4), le_u32(d, 8)) else {
            // chunks_exact gives 12 bytes: unreachable, but not a panic.
            return Err(SnpError::MetadataLength { length, available });
        };
        let kind =
            SectionKind::from_u32(kind).ok_or(SnpError::UnknownSectionType { index, kind })?;
        let page = PAGE_SIZE as u32;
        if size == 0 || gpa % page != 0 || size % page != 0 {
            return Err(SnpError::SectionAlignment {
                index,
                kind: kind.name(),
                gpa,
                size,
            });
        }
        // QEMU launches the whole section; sev-snp-measure one page of these two. They agree,
        // and OVMF declares them, only at one page: refuse anything else.
        if matches!(kind, SectionKind::SnpSecrets | SectionKind::Cpuid) && size != page {
            return Err(SnpError::SectionSize {
                index,
                kind: kind.name(),
                size,
            });
        }
        let s = MetadataSection { gpa, size, kind };
        if s.end() > firmware_gpa {
            return Err(SnpError::SectionOverlapsFirmware {
                index,
                kind: kind.name(),
                gpa,
                size,
                firmware_gpa,
            });
        }
        sections.push(s);
    }
    let mut by_gpa: Vec<(usize, MetadataSection)> = sections.iter().copied().enumerate().collect();
    by_gpa.sort_by_key(|(_, s)| s.gpa);
    for pair in by_gpa.windows(2) {
        if let [(ia, a), (ib, b)] = pair {
            if a.end() > u64::from(b.gpa) {
                return Err(SnpError::SectionsOverlap {
                    first: (*ia).min(*ib),
                    second: (*ia).max(*ib),
                });
            }
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_constants_have_efi_layout() {
        // The footer GUID's bytes as they sit in every OVMF image (Data1..3 little endian).
        assert_eq!(
            TABLE_FOOTER_GUID,
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
        assert_eq!(
            guid_text(&SEV_METADATA_GUID),
            "dc886566-984a-4798-a75e-5585a7bf67cc"
        );
    }
}
