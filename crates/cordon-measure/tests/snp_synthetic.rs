//! The SNP launch digest on synthetic images (tests/common): what is parsed, that the digest is
//! deterministic and depends on every input, and that each malformed image or request gives its
//! own typed error and never a panic.

mod common;

use common::*;
use cordon_measure::snp::{
    launch_digest, KernelHashes, OvmfImage, SectionKind, SnpError, SnpLaunch, VcpuType,
    DEFAULT_GUEST_FEATURES, SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID,
};

fn launch(firmware: &[u8], vcpus: u32) -> SnpLaunch<'_> {
    SnpLaunch {
        firmware,
        kernel: None,
        vcpus,
        vcpu_type: VcpuType::EpycMilan,
        guest_features: DEFAULT_GUEST_FEATURES,
    }
}

fn digest(firmware: &[u8]) -> Result<[u8; 48], SnpError> {
    launch_digest(&launch(firmware, 4))
}

fn kernel() -> KernelHashes {
    KernelHashes::from_contents(b"kernel image", Some(b"initrd"), Some("console=ttyS0"))
}

#[test]
fn parses_what_the_builder_wrote() {
    let img = Synth::new().build();
    let ovmf = OvmfImage::parse(&img).unwrap();
    assert_eq!(ovmf.gpa(), (1u64 << 32) - 64 * 4096);
    assert_eq!(ovmf.ap_reset_eip(), 0xFFFF_B004);
    let table = ovmf.hashes_table().unwrap();
    assert_eq!((table.gpa, table.size), (0x0080_9C00, 0x400));
    let kinds: Vec<_> = ovmf.sections().iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            SectionKind::SnpSecMem,
            SectionKind::SnpSecrets,
            SectionKind::Cpuid,
            SectionKind::SvsmCaa,
            SectionKind::SnpSecMem,
            SectionKind::SnpKernelHashes
        ]
    );
    assert_eq!(ovmf.sections()[5].gpa, 0x0080_9000);
    // Base 0 means no hashes table.
    let img = Synth::without_hashes_table().build();
    assert_eq!(OvmfImage::parse(&img).unwrap().hashes_table(), None);
}

#[test]
fn digest_is_deterministic_and_depends_on_every_input() {
    let img = Synth::new().build();
    let base = digest(&img).unwrap();
    assert_eq!(digest(&img).unwrap(), base);
    assert_eq!(digest(&img.clone()).unwrap(), base);

    let mut seen = vec![base];
    let mut differs = |d: [u8; 48], what: &str| {
        assert!(!seen.contains(&d), "{what} did not change the digest");
        seen.push(d);
    };
    for vcpus in [1, 2, 3, 64] {
        differs(launch_digest(&launch(&img, vcpus)).unwrap(), "vcpus");
    }
    let mut l = launch(&img, 4);
    l.vcpu_type = VcpuType::EpycGenoa;
    differs(launch_digest(&l).unwrap(), "vcpu type");
    // Two names of one model have one signature, hence one digest.
    l.vcpu_type = VcpuType::EpycMilanV2;
    assert_eq!(launch_digest(&l).unwrap(), base);
    let mut l = launch(&img, 4);
    l.guest_features = 0x21;
    differs(launch_digest(&l).unwrap(), "guest features");
    let mut l = launch(&img, 4);
    l.kernel = Some(kernel());
    differs(launch_digest(&l).unwrap(), "kernel hashes");
    l.kernel = Some(KernelHashes::from_contents(b"kernel image", None, None));
    differs(launch_digest(&l).unwrap(), "initrd and command line");

    // One firmware byte.
    let mut flipped = img.clone();
    flipped[100] ^= 1;
    differs(digest(&flipped).unwrap(), "a firmware byte");
    // The AP reset vector.
    let mut s = Synth::new();
    s.set_entry(SEV_ES_RESET_BLOCK_GUID, u32s(&[0xFFFF_C004]));
    differs(digest(&s.build()).unwrap(), "the AP reset vector");
    // The order of the sections.
    let mut s = Synth::new();
    s.sections.swap(0, 1);
    differs(digest(&s.build()).unwrap(), "section order");
    // A section's type (the metadata is part of the firmware, so this also changes the bytes).
    let mut s = Synth::new();
    s.sections[1].2 = CPUID;
    s.sections[2].2 = SECRETS;
    differs(digest(&s.build()).unwrap(), "secrets and CPUID swapped");
}

fn err(s: &Synth) -> SnpError {
    digest(&s.build()).unwrap_err()
}

fn err_with_kernel(s: &Synth) -> SnpError {
    let img = s.build();
    let mut l = launch(&img, 4);
    l.kernel = Some(kernel());
    launch_digest(&l).unwrap_err()
}

#[test]
fn image_size_errors() {
    let img = Synth::new().build();
    for len in [0, 1, 50, 4095, img.len() - 1] {
        assert!(
            matches!(digest(&img[..len]), Err(SnpError::FirmwareSize { len: l }) if l == len),
            "{len}"
        );
    }
    // A page of zeros: a size that is fine, but no table.
    assert!(matches!(
        digest(&[0u8; 4096]),
        Err(SnpError::NoGuidTable { found }) if found == "00000000-0000-0000-0000-000000000000"
    ));
    // Cutting pages off the end loses the table.
    assert!(matches!(
        digest(&img[..img.len() - 4096]),
        Err(SnpError::NoGuidTable { .. })
    ));
}

#[test]
fn guid_table_errors() {
    let s = Synth::new();
    let table_len = s.table().len();
    let footer_len_at = 64 * 4096 - 32 - 18;

    // Footer length beyond the image.
    let mut img = s.build();
    img[footer_len_at..footer_len_at + 2].copy_from_slice(&0xFFFFu16.to_le_bytes());
    let mut big = vec![0u8; 0];
    big.extend_from_slice(&img[img.len() - 4096..]);
    assert!(matches!(
        digest(&big),
        Err(SnpError::GuidTableLength { length: 0xFFFF, .. })
    ));
    // Footer length below its own 18 bytes.
    img[footer_len_at..footer_len_at + 2].copy_from_slice(&17u16.to_le_bytes());
    assert!(matches!(
        digest(&img),
        Err(SnpError::GuidTableLength { length: 17, .. })
    ));
    // Footer length that leaves 5 bytes that are no entry.
    img[footer_len_at..footer_len_at + 2].copy_from_slice(&((table_len + 5) as u16).to_le_bytes());
    assert_eq!(
        digest(&img),
        Err(SnpError::GuidTableTrailingBytes { count: 5 })
    );

    // An entry length below 18, and one beyond the table.
    for bad in [0u16, 17, 2000] {
        let mut s = Synth::new();
        s.entries[1].length = Some(bad);
        assert!(
            matches!(err(&s), SnpError::GuidTableEntryLength { length, .. } if length == bad),
            "{bad}"
        );
    }
    // The same GUID twice.
    let mut s = Synth::new();
    s.entries.push(s.entries[0].clone());
    assert!(
        matches!(err(&s), SnpError::DuplicateGuidTableEntry { guid } if guid == "00f771de-1a7e-4fcb-890e-68c77e2fb44e")
    );
    // Entries too short for their fields.
    let mut s = Synth::new();
    s.set_entry(SEV_ES_RESET_BLOCK_GUID, vec![1, 2]);
    assert_eq!(
        err(&s),
        SnpError::TableEntryTooShort {
            entry: "SEV-ES reset block",
            length: 2,
            need: 4
        }
    );
    let mut s = Synth::new();
    s.set_entry(SEV_HASH_TABLE_RV_GUID, u32s(&[0x0080_9C00]));
    assert_eq!(
        err(&s),
        SnpError::TableEntryTooShort {
            entry: "SEV hashes table",
            length: 4,
            need: 8
        }
    );
    let mut s = Synth::new();
    s.set_entry(SEV_METADATA_GUID, vec![]);
    assert!(matches!(
        err(&s),
        SnpError::TableEntryTooShort {
            entry: "SEV metadata",
            ..
        }
    ));
    // Missing entries.
    let mut s = Synth::new();
    s.remove_entry(SEV_ES_RESET_BLOCK_GUID);
    assert!(matches!(
        err(&s),
        SnpError::MissingGuidTableEntry {
            entry: "SEV-ES reset block",
            ..
        }
    ));
    let mut s = Synth::new();
    s.remove_entry(SEV_METADATA_GUID);
    assert!(matches!(
        err(&s),
        SnpError::MissingGuidTableEntry {
            entry: "SEV metadata",
            ..
        }
    ));
    // Unknown entries are skipped, as QEMU skips them, but still measured as firmware bytes.
    let mut s = Synth::new();
    let base = digest(&s.build()).unwrap();
    s.entries.insert(0, Entry::new([7; 16], vec![1, 2, 3]));
    let other = digest(&s.build()).unwrap();
    assert_ne!(other, base);
}

#[test]
fn metadata_errors() {
    for offset in [0u32, 8, 64 * 4096 + 1, u32::MAX] {
        let mut s = Synth::new();
        s.set_entry(SEV_METADATA_GUID, u32s(&[offset]));
        assert!(
            matches!(err(&s), SnpError::MetadataOutOfBounds { offset: o, .. } if o == offset),
            "{offset}"
        );
    }
    // An offset that lands elsewhere in the image finds no signature.
    let mut s = Synth::new();
    s.set_entry(SEV_METADATA_GUID, u32s(&[0x2000]));
    assert!(matches!(err(&s), SnpError::MetadataSignature { .. }));
    let mut s = Synth::new();
    s.signature = *b"ASEW";
    assert_eq!(err(&s), SnpError::MetadataSignature { found: *b"ASEW" });
    let mut s = Synth::new();
    s.version = 2;
    assert_eq!(err(&s), SnpError::MetadataVersion { found: 2 });

    // Length field: below the header, beyond the image.
    let start = 64 * 4096 - METADATA_OFFSET as usize;
    for bad in [15u32, METADATA_OFFSET + 1, u32::MAX] {
        let mut img = Synth::new().build();
        img[start + 4..start + 8].copy_from_slice(&bad.to_le_bytes());
        assert!(
            matches!(digest(&img), Err(SnpError::MetadataLength { length, available: 0x1000 }) if length == bad),
            "{bad}"
        );
    }
    // More sections than the length holds.
    for count in [7u32, u32::MAX] {
        let mut img = Synth::new().build();
        img[start + 12..start + 16].copy_from_slice(&count.to_le_bytes());
        assert_eq!(
            digest(&img),
            Err(SnpError::MetadataSectionCount {
                count,
                length: 16 + 72,
                fits: 6
            })
        );
    }
    // Fewer sections than the length holds: the count rules (as in QEMU and sev-snp-measure).
    let mut img = Synth::new().build();
    img[start + 12..start + 16].copy_from_slice(&5u32.to_le_bytes());
    let ovmf = OvmfImage::parse(&img).unwrap();
    assert_eq!(ovmf.sections().len(), 5);
    assert_eq!(ovmf.sections()[4].gpa, 0x0080_A000);
}

#[test]
fn section_errors() {
    let mut s = Synth::new();
    s.sections[2].2 = 5;
    assert_eq!(err(&s), SnpError::UnknownSectionType { index: 2, kind: 5 });
    for (gpa, size) in [
        (0x0080_0001, 0x3000),
        (0x0080_0000, 0x3001),
        (0x0080_0000, 0),
    ] {
        let mut s = Synth::new();
        s.sections[0] = (gpa, size, SEC_MEM);
        assert_eq!(
            err(&s),
            SnpError::SectionAlignment {
                index: 0,
                kind: "SNP_SEC_MEM",
                gpa,
                size
            }
        );
    }
    let mut s = Synth::new();
    s.sections[2].1 = 0x2000;
    assert_eq!(
        err(&s),
        SnpError::SectionSize {
            index: 2,
            kind: "CPUID",
            size: 0x2000
        }
    );
    let mut s = Synth::new();
    s.sections[1].1 = 0x2000;
    assert!(matches!(
        err(&s),
        SnpError::SectionSize {
            index: 1,
            kind: "SNP_SECRETS",
            ..
        }
    ));
    // Overlaps: one page shared, one section inside another, the same section twice.
    let mut s = Synth::new();
    s.sections[4] = (0x0080_2000, 0x1000, SEC_MEM);
    assert_eq!(
        err(&s),
        SnpError::SectionsOverlap {
            first: 0,
            second: 4
        }
    );
    let mut s = Synth::new();
    s.sections.push((0x0080_9000, 0x1000, SEC_MEM));
    assert_eq!(
        err(&s),
        SnpError::SectionsOverlap {
            first: 5,
            second: 6
        }
    );
    let mut s = Synth::new();
    s.sections.push((0x007F_F000, 0x2000, SVSM_CAA));
    assert_eq!(
        err(&s),
        SnpError::SectionsOverlap {
            first: 0,
            second: 6
        }
    );
    // Into the firmware below 4 GiB, and across 4 GiB.
    let fw = (1u64 << 32) - 64 * 4096;
    for (gpa, size) in [
        (fw as u32 - 0x1000, 0x2000),
        (0xFFFF_F000, 0x1000),
        (0x1000, 0xFFFF_F000),
    ] {
        let mut s = Synth::new();
        s.sections.push((gpa, size, SEC_MEM));
        assert_eq!(
            err(&s),
            SnpError::SectionOverlapsFirmware {
                index: 6,
                kind: "SNP_SEC_MEM",
                gpa,
                size,
                firmware_gpa: fw
            }
        );
    }
}

#[test]
fn vcpu_errors() {
    let img = Synth::new().build();
    for count in [0, 4097, u32::MAX] {
        assert_eq!(
            launch_digest(&launch(&img, count)),
            Err(SnpError::Vcpus { count })
        );
    }
    assert!(launch_digest(&launch(&img, 4096)).is_ok());
    // No AP reset vector: one vCPU is fine, more are not.
    let mut s = Synth::new();
    s.set_entry(SEV_ES_RESET_BLOCK_GUID, u32s(&[0]));
    let img = s.build();
    assert!(launch_digest(&launch(&img, 1)).is_ok());
    assert_eq!(
        launch_digest(&launch(&img, 2)),
        Err(SnpError::NoApResetVector { vcpus: 2 })
    );
}

#[test]
fn kernel_errors() {
    // OVMF.fd's shape: no hashes table, no SNP_KERNEL_HASHES section.
    assert_eq!(
        err_with_kernel(&Synth::without_hashes_table()),
        SnpError::NoKernelHashesSection
    );
    // A section but no table.
    let mut s = Synth::new();
    s.set_entry(SEV_HASH_TABLE_RV_GUID, u32s(&[0, 0]));
    assert_eq!(err_with_kernel(&s), SnpError::NoHashesTable);
    let mut s = Synth::new();
    s.remove_entry(SEV_HASH_TABLE_RV_GUID);
    assert_eq!(err_with_kernel(&s), SnpError::NoHashesTable);
    // A table but no section.
    let mut s = Synth::new();
    s.sections.retain(|x| x.2 != KERNEL_HASHES);
    assert_eq!(err_with_kernel(&s), SnpError::NoKernelHashesSection);
    // The section must be one page.
    let mut s = Synth::new();
    s.sections[5].1 = 0x2000;
    s.sections[4].0 = 0x0080_B000;
    assert_eq!(
        err_with_kernel(&s),
        SnpError::KernelHashesSectionSize { size: 0x2000 }
    );
    // An area too small for the padded table.
    let mut s = Synth::new();
    s.set_entry(SEV_HASH_TABLE_RV_GUID, u32s(&[0x0080_9C00, 175]));
    assert_eq!(
        err_with_kernel(&s),
        SnpError::HashesTableTooSmall {
            size: 175,
            need: 176
        }
    );
    // The table outside the section's page: before it, after it, straddling its end.
    for table_gpa in [0x0080_8C00, 0x0080_A000, 0x0080_9F60] {
        let mut s = Synth::new();
        s.set_entry(SEV_HASH_TABLE_RV_GUID, u32s(&[table_gpa, 0x400]));
        assert!(
            matches!(err_with_kernel(&s), SnpError::HashesTableOutsideSection { table_gpa: t, section_gpa: 0x0080_9000, .. } if t == table_gpa),
            "{table_gpa:#x}"
        );
    }
    // The table exactly at the end of the page fits.
    let mut s = Synth::new();
    s.set_entry(SEV_HASH_TABLE_RV_GUID, u32s(&[0x0080_9F50, 0x400]));
    let img = s.build();
    let mut l = launch(&img, 1);
    l.kernel = Some(kernel());
    assert!(launch_digest(&l).is_ok());
    // Without a kernel, none of that matters.
    assert!(digest(&Synth::without_hashes_table().build()).is_ok());
}

#[test]
fn errors_say_what_was_wrong() {
    let mut s = Synth::new();
    s.sections[4] = (0x0080_2000, 0x1000, SEC_MEM);
    assert_eq!(
        err(&s).to_string(),
        "SEV metadata sections 0 and 4 overlap: a page can be launched only once"
    );
    let msg = err_with_kernel(&Synth::without_hashes_table()).to_string();
    assert!(msg.contains("no SNP_KERNEL_HASHES section"), "{msg}");
    assert!(msg.contains("OVMF.amdsev.fd"), "{msg}");
}

/// Every single-byte change and every cut of a valid image's last page (where the table and the
/// metadata are) gives a digest or an error, never a panic.
#[test]
fn mutated_images_never_panic() {
    let mut s = Synth::new();
    s.pages = 4;
    let img = s.build();
    let tail = img.len() - 4096;
    let mut outcomes = [0usize; 2];
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    for i in 0..1024 {
        let mut m = img.clone();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = tail + (x as usize % 4096);
        m[at] = m[at].wrapping_add(1 + (i % 255) as u8);
        let r = launch_digest(&launch(&m, 2));
        outcomes[r.is_ok() as usize] += 1;
        let mut l = launch(&m, 2);
        l.kernel = Some(kernel());
        let _ = launch_digest(&l);
    }
    // Most bytes of the last page are filler: changing one gives another digest.
    assert!(outcomes[1] > 0 && outcomes[0] > 0, "{outcomes:?}");
    for cut in 0..img.len() / 4096 {
        let mut m = img[cut * 4096..].to_vec();
        // Pages cut off the front: the table and metadata are still there, at a higher GPA.
        assert!(digest(&m).is_ok(), "{cut}");
        m.truncate(m.len() - 1);
        assert!(matches!(digest(&m), Err(SnpError::FirmwareSize { .. })));
    }
}
