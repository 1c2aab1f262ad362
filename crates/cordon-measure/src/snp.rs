//! The AMD SEV-SNP launch digest of a QEMU guest booted from an OVMF image: the value the
//! firmware reports as `MEASUREMENT` in every attestation report of that guest, computed from the
//! image, the optional kernel/initrd/command line, the vCPU count and type and the guest features.
//!
//! What is measured, in order (SEV-SNP Firmware ABI Specification, AMD pub. 56860, chapter
//! "SNP_LAUNCH_UPDATE" and section "Measurement of the launch digest"; the pages as QEMU
//! launches them):
//! 1. the firmware image, mapped to end at 4 GiB, as NORMAL pages;
//! 2. each section of the firmware's SEV metadata, in the metadata's order: `SNP_SEC_MEM` and
//!    `SVSM_CAA` as ZERO pages, `SNP_SECRETS` as a SECRETS page, `CPUID` as a CPUID page,
//!    `SNP_KERNEL_HASHES` as a NORMAL page holding the SEV hashes table when a kernel is given,
//!    else as ZERO pages;
//! 3. one VMSA page per vCPU: the BSP's starting at the reset vector, the APs' at the SEV-ES
//!    reset block's AP reset vector.
//!
//! Each page extends the digest with `SHA-384(PAGE_INFO)` ([`page_info`]). Only QEMU as the VMM
//! is modelled (not EC2's or GCE's initial register state, not an SVSM).

mod hashes;
mod ovmf;
mod vmsa;

pub use hashes::{KernelHashes, PADDED_TABLE_LEN};
pub use ovmf::{
    HashesTableArea, MetadataSection, OvmfImage, SectionKind, SEV_ES_RESET_BLOCK_GUID,
    SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID, TABLE_FOOTER_GUID,
};
pub use vmsa::{cpu_signature, vmsa_page, UnknownVcpuType, VcpuType, BSP_RESET_EIP};

use sha2::{Digest, Sha384};

/// Bytes of a launch digest (SHA-384).
pub const LAUNCH_DIGEST_LEN: usize = 48;
/// Bytes of a page.
pub const PAGE_SIZE: usize = 4096;
/// sev-snp-measure's default guest features: `SNPActive` only (SEV_FEATURES bit 0).
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;
/// The most vCPUs a guest can have: QEMU's q35 machine and KVM (`KVM_MAX_VCPUS` with
/// `CONFIG_MAXSMP`) stop at 4096.
pub const MAX_VCPUS: u32 = 4096;

const FOUR_GIB: u64 = 1 << 32;
/// KVM gives VMSA pages the GPA `(u64)-1`; PAGE_INFO records it page aligned with the bits above
/// 51 cleared.
const VMSA_GPA: u64 = 0x0000_FFFF_FFFF_F000;

/// Why an image or a request cannot be measured. Every variant names the field and the values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnpError {
    #[error("firmware image is {len} bytes: it must be a nonzero multiple of 4096 bytes and at most 4 GiB (it is mapped to end at 4 GiB)")]
    FirmwareSize { len: usize },
    #[error("firmware image is {len} bytes, too small to hold the OVMF GUID table footer")]
    FirmwareTooSmall { len: usize },
    #[error("no OVMF GUID table: the footer entry 50 bytes before the end of the image has GUID {found}, not 96b582de-1fb2-45f7-baea-a366c55a082d (is this an OVMF image built with SEV support?)")]
    NoGuidTable { found: String },
    #[error("OVMF GUID table length {length} does not fit: it must be at least 18 and at most {available} bytes precede the footer")]
    GuidTableLength { length: u16, available: usize },
    #[error("OVMF GUID table has {count} bytes left over that do not form an entry")]
    GuidTableTrailingBytes { count: usize },
    #[error("OVMF GUID table entry {guid} has length {length}; it must be at least 18 and at most the {available} bytes left in the table")]
    GuidTableEntryLength {
        guid: String,
        length: u16,
        available: usize,
    },
    #[error("OVMF GUID table has entry {guid} twice")]
    DuplicateGuidTableEntry { guid: String },
    #[error("OVMF GUID table entry {entry} has {length} data bytes, needs {need}")]
    TableEntryTooShort {
        entry: &'static str,
        length: usize,
        need: usize,
    },
    #[error("OVMF GUID table has no {entry} entry ({guid}): the firmware cannot launch an SEV-SNP guest")]
    MissingGuidTableEntry { entry: &'static str, guid: String },
    #[error("SEV metadata offset {offset} from the end of the image lies outside the {image_len}-byte image (or leaves no room for its 16-byte header)")]
    MetadataOutOfBounds { offset: u32, image_len: usize },
    #[error("SEV metadata signature is {found:02x?}, not \"ASEV\"")]
    MetadataSignature { found: [u8; 4] },
    #[error("SEV metadata version is {found}, not 1")]
    MetadataVersion { found: u32 },
    #[error("SEV metadata length {length} is below its 16-byte header or beyond the {available} bytes to the end of the image")]
    MetadataLength { length: u32, available: usize },
    #[error("SEV metadata declares {count} sections, but its length {length} holds {fits}")]
    MetadataSectionCount {
        count: u32,
        length: u32,
        fits: usize,
    },
    #[error("SEV metadata section {index} has unknown type {kind:#x}")]
    UnknownSectionType { index: usize, kind: u32 },
    #[error("SEV metadata section {index} ({kind}) at GPA {gpa:#x}, {size:#x} bytes: base and length must be page aligned and the length nonzero")]
    SectionAlignment {
        index: usize,
        kind: &'static str,
        gpa: u32,
        size: u32,
    },
    #[error(
        "SEV metadata section {index} ({kind}) is {size:#x} bytes; it must be one page (0x1000)"
    )]
    SectionSize {
        index: usize,
        kind: &'static str,
        size: u32,
    },
    #[error("SEV metadata section {index} ({kind}) at GPA {gpa:#x}, {size:#x} bytes, reaches into the firmware at {firmware_gpa:#x}")]
    SectionOverlapsFirmware {
        index: usize,
        kind: &'static str,
        gpa: u32,
        size: u32,
        firmware_gpa: u64,
    },
    #[error(
        "SEV metadata sections {first} and {second} overlap: a page can be launched only once"
    )]
    SectionsOverlap { first: usize, second: usize },
    #[error("{count} vCPUs: the count must be 1 to {MAX_VCPUS}")]
    Vcpus { count: u32 },
    #[error("{vcpus} vCPUs, but the SEV-ES reset block's AP reset vector is 0: the firmware cannot start application processors")]
    NoApResetVector { vcpus: u32 },
    #[error("a kernel is to be measured, but the firmware's SEV metadata has no SNP_KERNEL_HASHES section (use an image built with the SEV hashes table, such as OVMF.amdsev.fd)")]
    NoKernelHashesSection,
    #[error("a kernel is to be measured, but the firmware's GUID table names no SEV hashes table (use an image built with it, such as OVMF.amdsev.fd)")]
    NoHashesTable,
    #[error("the SEV hashes table at GPA {table_gpa:#x} ({table_size:#x} bytes) does not lie within the SNP_KERNEL_HASHES section at {section_gpa:#x} ({section_size:#x} bytes)")]
    HashesTableOutsideSection {
        table_gpa: u32,
        table_size: u32,
        section_gpa: u32,
        section_size: u32,
    },
    #[error("the SEV hashes table area is {size} bytes; the table needs {need}")]
    HashesTableTooSmall { size: u32, need: usize },
    #[error("a kernel is to be measured, but the SNP_KERNEL_HASHES section is {size:#x} bytes; it must be one page (0x1000)")]
    KernelHashesSectionSize { size: u32 },
}

/// What an SEV-SNP launch is made of.
#[derive(Clone, Debug)]
pub struct SnpLaunch<'a> {
    /// The OVMF image (`-bios`), whole.
    pub firmware: &'a [u8],
    /// Kernel, initrd and command line (`-kernel`, `-initrd`, `-append` with
    /// `kernel-hashes=on`), when the firmware boots a kernel QEMU hands it.
    pub kernel: Option<KernelHashes>,
    /// Number of vCPUs (`-smp`).
    pub vcpus: u32,
    /// vCPU model (`-cpu`): its CPUID signature is in every VMSA's RDX.
    pub vcpu_type: VcpuType,
    /// SEV_FEATURES of every VMSA ([`DEFAULT_GUEST_FEATURES`] unless the guest enables more).
    pub guest_features: u64,
}

/// Page types of PAGE_INFO (SEV-SNP Firmware ABI, SNP_LAUNCH_UPDATE, table "Page Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    Normal = 1,
    Vmsa = 2,
    Zero = 3,
    Unmeasured = 4,
    Secrets = 5,
    Cpuid = 6,
}

/// Bytes of PAGE_INFO.
const PAGE_INFO_LEN: usize = 0x70;

/// The PAGE_INFO structure that one launched page extends the digest with (SEV-SNP Firmware ABI,
/// SNP_LAUNCH_UPDATE, table "Layout of the PAGE_INFO Structure"): DIGEST_CUR (48), CONTENTS (48),
/// LENGTH `u16` (0x70), PAGE_TYPE `u8`, IMI_PAGE `u8`, VMPL3/2/1_PERMS `u8` each, a reserved
/// byte, GPA `u64`. IMI and VMPL permissions are 0 for a launch by the hypervisor.
pub fn page_info(
    digest_cur: &[u8; LAUNCH_DIGEST_LEN],
    contents: &[u8; LAUNCH_DIGEST_LEN],
    page_type: PageType,
    gpa: u64,
) -> [u8; PAGE_INFO_LEN] {
    let mut p = [0u8; PAGE_INFO_LEN];
    p[..48].copy_from_slice(digest_cur);
    p[48..96].copy_from_slice(contents);
    p[96..98].copy_from_slice(&(PAGE_INFO_LEN as u16).to_le_bytes());
    p[98] = page_type as u8;
    p[104..112].copy_from_slice(&gpa.to_le_bytes());
    p
}

/// The running launch digest.
struct Digest48([u8; LAUNCH_DIGEST_LEN]);

impl Digest48 {
    fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; LAUNCH_DIGEST_LEN]) {
        self.0 = Sha384::digest(page_info(&self.0, contents, page_type, gpa)).into();
    }

    /// Pages whose CONTENTS is zero (ZERO, SECRETS, CPUID, UNMEASURED), from `gpa` for `size`.
    fn update_empty(&mut self, page_type: PageType, gpa: u32, size: u32) {
        let mut at = u64::from(gpa);
        let end = u64::from(gpa) + u64::from(size);
        while at < end {
            self.update(page_type, at, &[0; LAUNCH_DIGEST_LEN]);
            at += PAGE_SIZE as u64;
        }
    }
}

/// The launch digest of `launch`, or why it cannot be computed.
pub fn launch_digest(launch: &SnpLaunch<'_>) -> Result<[u8; LAUNCH_DIGEST_LEN], SnpError> {
    if launch.vcpus == 0 || launch.vcpus > MAX_VCPUS {
        return Err(SnpError::Vcpus {
            count: launch.vcpus,
        });
    }
    let image = OvmfImage::parse(launch.firmware)?;
    if launch.vcpus > 1 && image.ap_reset_eip() == 0 {
        return Err(SnpError::NoApResetVector {
            vcpus: launch.vcpus,
        });
    }
    let hashes_page = match &launch.kernel {
        Some(k) => Some(hashes_page(&image, k)?),
        None => None,
    };

    let mut ld = Digest48([0; LAUNCH_DIGEST_LEN]);
    for (i, page) in image.bytes().chunks_exact(PAGE_SIZE).enumerate() {
        let contents: [u8; 48] = Sha384::digest(page).into();
        ld.update(
            PageType::Normal,
            image.gpa() + (i * PAGE_SIZE) as u64,
            &contents,
        );
    }
    for s in image.sections() {
        match (s.kind, &hashes_page) {
            (SectionKind::SnpSecMem | SectionKind::SvsmCaa, _)
            | (SectionKind::SnpKernelHashes, None) => {
                ld.update_empty(PageType::Zero, s.gpa, s.size)
            }
            (SectionKind::SnpSecrets, _) => ld.update_empty(PageType::Secrets, s.gpa, s.size),
            (SectionKind::Cpuid, _) => ld.update_empty(PageType::Cpuid, s.gpa, s.size),
            (SectionKind::SnpKernelHashes, Some(page)) => {
                let contents: [u8; 48] = Sha384::digest(&page[..]).into();
                ld.update(PageType::Normal, u64::from(s.gpa), &contents);
            }
        }
    }
    let sig = launch.vcpu_type.signature();
    let bsp: [u8; 48] =
        Sha384::digest(&vmsa_page(BSP_RESET_EIP, launch.guest_features, sig)[..]).into();
    let ap: [u8; 48] =
        Sha384::digest(&vmsa_page(image.ap_reset_eip(), launch.guest_features, sig)[..]).into();
    for i in 0..launch.vcpus {
        ld.update(PageType::Vmsa, VMSA_GPA, if i == 0 { &bsp } else { &ap });
    }
    Ok(ld.0)
}

/// The page QEMU fills with the hashes table: zeros with the table at the table's offset in its
/// page, after checking that the firmware has a place for it that the metadata launches.
fn hashes_page(
    image: &OvmfImage<'_>,
    kernel: &KernelHashes,
) -> Result<Box<[u8; PAGE_SIZE]>, SnpError> {
    let mut sections = image
        .sections()
        .iter()
        .filter(|s| s.kind == SectionKind::SnpKernelHashes);
    let section = sections.next().ok_or(SnpError::NoKernelHashesSection)?;
    let area = image.hashes_table().ok_or(SnpError::NoHashesTable)?;
    if section.size as usize != PAGE_SIZE {
        return Err(SnpError::KernelHashesSectionSize { size: section.size });
    }
    // QEMU refuses an area smaller than the padded table (target/i386/sev.c).
    if (area.size as usize) < PADDED_TABLE_LEN {
        return Err(SnpError::HashesTableTooSmall {
            size: area.size,
            need: PADDED_TABLE_LEN,
        });
    }
    let outside = SnpError::HashesTableOutsideSection {
        table_gpa: area.gpa,
        table_size: area.size,
        section_gpa: section.gpa,
        section_size: section.size,
    };
    // One SNP_KERNEL_HASHES section, and the table inside it.
    let offset = match area.gpa.checked_sub(section.gpa) {
        Some(o) if (o as usize).saturating_add(PADDED_TABLE_LEN) <= PAGE_SIZE => o,
        _ => return Err(outside),
    };
    if sections.next().is_some() {
        return Err(outside);
    }
    let mut page = Box::new([0u8; PAGE_SIZE]);
    let at = offset as usize;
    if let Some(dst) = page.get_mut(at..at + PADDED_TABLE_LEN) {
        dst.copy_from_slice(&kernel.table());
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_info_layout() {
        let cur = [0xAA; 48];
        let contents = [0xBB; 48];
        let p = page_info(&cur, &contents, PageType::Cpuid, 0x0080_E000);
        assert_eq!(&p[..48], &cur);
        assert_eq!(&p[48..96], &contents);
        assert_eq!(&p[96..104], &[0x70, 0x00, 6, 0, 0, 0, 0, 0]);
        assert_eq!(&p[104..], &0x0080_E000u64.to_le_bytes());
    }

    #[test]
    fn vcpu_count_bounds() {
        for count in [0, MAX_VCPUS + 1, u32::MAX] {
            let launch = SnpLaunch {
                firmware: &[],
                kernel: None,
                vcpus: count,
                vcpu_type: VcpuType::EpycMilan,
                guest_features: DEFAULT_GUEST_FEATURES,
            };
            assert_eq!(launch_digest(&launch), Err(SnpError::Vcpus { count }));
        }
    }
}
