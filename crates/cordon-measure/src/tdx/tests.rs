//! MRTD tests: synthetic TDVF images whose MRTD is computed here independently (every record
//! written out into one buffer, hashed once), every error, and the metadata of Debian's OVMF.fd.

use super::*;

/// (DataOffset, RawDataSize, MemoryAddress, MemoryDataSize, Type, Attributes)
type Raw = (u32, u32, u64, u64, u32, u32);

const SIZE: usize = 0x10000;
const DESCRIPTOR_AT: usize = 0xE000;

fn guid_bytes(text: &str) -> [u8; 16] {
    let hexed: String = text.chars().filter(|c| *c != '-').collect();
    let b = hex::decode(hexed).unwrap();
    // Text order → on-disk order: the first three fields are little-endian.
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    out[4..6].copy_from_slice(&[b[5], b[4]]);
    out[6..8].copy_from_slice(&[b[7], b[6]]);
    out[8..].copy_from_slice(&b[8..]);
    out
}

fn descriptor(sections: &[Raw]) -> Vec<u8> {
    let mut d = b"TDVF".to_vec();
    d.extend((16 + 32 * sections.len() as u32).to_le_bytes());
    d.extend(1u32.to_le_bytes());
    d.extend((sections.len() as u32).to_le_bytes());
    for (off, raw, addr, mem, ty, attr) in sections {
        d.extend(off.to_le_bytes());
        d.extend(raw.to_le_bytes());
        d.extend(addr.to_le_bytes());
        d.extend(mem.to_le_bytes());
        d.extend(ty.to_le_bytes());
        d.extend(attr.to_le_bytes());
    }
    d
}

/// A GUIDed table (entries, then the footer) ending 32 bytes before the end of `image`.
fn put_table(image: &mut [u8], entries: &[(&str, Vec<u8>)]) {
    let mut table = Vec::new();
    for (guid, data) in entries {
        table.extend(data);
        table.extend(((data.len() + 18) as u16).to_le_bytes());
        table.extend(guid_bytes(guid));
    }
    let len = table.len() + 18;
    table.extend((len as u16).to_le_bytes());
    table.extend(guid_bytes("96b582de-1fb2-45f7-baea-a366c55a082d"));
    let end = image.len() - 32;
    image[end - table.len()..end].copy_from_slice(&table);
}

/// A 64 KiB image whose bytes count up, with `sections` in a descriptor at 0xE000.
fn image(sections: &[Raw]) -> Vec<u8> {
    let mut img: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    let d = descriptor(sections);
    img[DESCRIPTOR_AT..DESCRIPTOR_AT + d.len()].copy_from_slice(&d);
    let offset = ((SIZE - DESCRIPTOR_AT) as u32).to_le_bytes().to_vec();
    put_table(
        &mut img,
        &[
            ("7255371f-3a3b-4b04-927b-1da6efa8d454", vec![0; 8]),
            ("e47a6535-984a-4798-865e-4685a7bf8ec2", offset),
            ("dc886566-984a-4798-a75e-5585a7bf67cc", vec![1, 2, 3, 4]),
        ],
    );
    img
}

/// An OVMF-like layout: an extended BFV of 3 pages, an unextended CFV, TD_HOB and TempMem, and a
/// PermMem added later with PAGE.AUG.
fn ovmf_like() -> Vec<Raw> {
    vec![
        (0x2000, 0x3000, 0xFFFF_D000, 0x3000, 0, ATTRIBUTE_MR_EXTEND),
        (0x0000, 0x2000, 0xFFFF_B000, 0x2000, 1, 0),
        (0, 0, 0x80_0000, 0x2000, 2, 0),
        (0, 0, 0x80_2000, 0x1000, 3, 0),
        (0, 0, 0x100_0000, 0x10_0000, 4, ATTRIBUTE_PAGE_AUG),
    ]
}

/// MRTD written out independently: the whole record stream in one buffer, one SHA-384.
fn expected_mrtd(img: &[u8], sections: &[Raw], per_page: bool) -> [u8; 48] {
    fn rec(op: &str, gpa: u64) -> Vec<u8> {
        let mut r = vec![0u8; 128];
        r[..op.len()].copy_from_slice(op.as_bytes());
        r[16..24].copy_from_slice(&gpa.to_le_bytes());
        r
    }
    let mut stream = Vec::new();
    for &(off, _, addr, mem, ty, attr) in sections {
        if attr & 2 != 0 {
            continue;
        }
        let pages = mem / 4096;
        let mut adds = Vec::new();
        let mut extends = Vec::new();
        for p in 0..pages {
            let mut page_ext = Vec::new();
            if attr & 1 != 0 {
                for c in 0..16u64 {
                    let gpa = addr + p * 4096 + c * 256;
                    page_ext.extend(rec("MR.EXTEND", gpa));
                    let at = off as usize + (p * 4096 + c * 256) as usize;
                    if ty <= 1 {
                        page_ext.extend(&img[at..at + 256]);
                    } else {
                        page_ext.extend([0u8; 256]);
                    }
                }
            }
            if per_page {
                stream.extend(rec("MEM.PAGE.ADD", addr + p * 4096));
                stream.extend(page_ext);
            } else {
                adds.extend(rec("MEM.PAGE.ADD", addr + p * 4096));
                extends.extend(page_ext);
            }
        }
        stream.extend(adds);
        stream.extend(extends);
    }
    Sha384::digest(&stream).into()
}

#[test]
fn mrtd_matches_independent_computation() {
    let sections = ovmf_like();
    let img = image(&sections);
    let meta = parse_tdvf(&img).unwrap();
    assert_eq!(meta.descriptor_offset, DESCRIPTOR_AT);
    assert_eq!(meta.sections.len(), 5);
    assert_eq!(meta.sections[0].section_type, SectionType::Bfv);
    assert!(meta.sections[0].mr_extend() && meta.sections[0].page_add());
    assert!(!meta.sections[4].page_add());
    let per_page = mrtd(&img, AddOrder::PerPage).unwrap();
    let per_section = mrtd(&img, AddOrder::PerSection).unwrap();
    assert_eq!(per_page, expected_mrtd(&img, &sections, true));
    assert_eq!(per_section, expected_mrtd(&img, &sections, false));
    // With a multi-page extended section the order matters.
    assert_ne!(per_page, per_section);
    // The image's bytes count: change one byte of the BFV, MRTD changes; of the CFV, it does not
    // (the firmware measures the CFV into RTMR0 instead).
    let mut bfv = img.clone();
    bfv[0x2000 + 0x1234] ^= 1;
    assert_ne!(mrtd(&bfv, AddOrder::PerPage).unwrap(), per_page);
    let mut cfv = img.clone();
    cfv[0x10] ^= 1;
    assert_eq!(mrtd(&cfv, AddOrder::PerPage).unwrap(), per_page);
}

#[test]
fn order_only_matters_for_extended_sections() {
    let sections: Vec<Raw> = vec![
        (0x0000, 0x2000, 0xFFFF_B000, 0x2000, 1, 0),
        (0, 0, 0x80_0000, 0x4000, 3, 0),
    ];
    let img = image(&sections);
    let a = mrtd(&img, AddOrder::PerPage).unwrap();
    assert_eq!(a, mrtd(&img, AddOrder::PerSection).unwrap());
    assert_eq!(a, expected_mrtd(&img, &sections, true));
    // An extended TempMem measures zero chunks.
    let ext: Vec<Raw> = vec![(0, 0, 0x80_0000, 0x2000, 3, ATTRIBUTE_MR_EXTEND)];
    let img = image(&ext);
    assert_eq!(
        mrtd(&img, AddOrder::PerPage).unwrap(),
        expected_mrtd(&img, &ext, true)
    );
    assert_eq!(
        mrtd(&img, AddOrder::PerSection).unwrap(),
        expected_mrtd(&img, &ext, false)
    );
}

#[test]
fn page_aug_sections_are_not_measured() {
    let mut sections = ovmf_like();
    let with = mrtd(&image(&sections), AddOrder::PerPage).unwrap();
    sections.pop();
    let img = image(&sections);
    assert_eq!(with, mrtd(&img, AddOrder::PerPage).unwrap());
    // All of a large guest's RAM as PermMem costs nothing to measure.
    sections.push((0, 0, 1 << 32, 1 << 40, 4, ATTRIBUTE_PAGE_AUG));
    assert_eq!(with, mrtd(&image(&sections), AddOrder::PerPage).unwrap());
    // An empty descriptor measures nothing: MRTD is SHA-384 of the empty stream.
    let empty = image(&[]);
    assert_eq!(
        mrtd(&empty, AddOrder::PerPage).unwrap(),
        <[u8; 48]>::from(Sha384::digest(b""))
    );
}

#[test]
fn metadata_serializes_for_the_cli() {
    let img = image(&ovmf_like());
    let json = serde_json::to_value(parse_tdvf(&img).unwrap()).unwrap();
    assert_eq!(json["sections"][0]["section_type"], "Bfv");
    assert_eq!(json["sections"][0]["memory_address"], 0xFFFF_D000u64);
    assert_eq!(
        serde_json::to_value(AddOrder::PerSection).unwrap(),
        "per-section"
    );
    assert_eq!(SectionType::TdHob.to_string(), "TD_HOB");
}

fn err(sections: &[Raw]) -> TdvfError {
    parse_tdvf(&image(sections)).unwrap_err()
}

#[test]
fn table_errors() {
    assert_eq!(parse_tdvf(&[0; 40]), Err(TdvfError::TooShort(40)));
    assert_eq!(parse_tdvf(&[0; 4096]), Err(TdvfError::NoFooter));
    let good = image(&ovmf_like());
    let footer_len_at = SIZE - 32 - 18;
    for bad in [0u16, 17, u16::MAX] {
        let mut img = good.clone();
        img[footer_len_at..footer_len_at + 2].copy_from_slice(&bad.to_le_bytes());
        let e = parse_tdvf(&img).unwrap_err();
        assert_eq!(
            e,
            TdvfError::TableLength {
                length: bad.into(),
                max: SIZE - 32
            },
            "{bad}"
        );
    }
    // A table shorter than its entries: the walk meets an entry that crosses the table start.
    let mut short = good.clone();
    short[footer_len_at..footer_len_at + 2].copy_from_slice(&30u16.to_le_bytes());
    assert!(matches!(
        parse_tdvf(&short),
        Err(TdvfError::EntryLength { .. })
    ));
    // An entry length under 18 bytes.
    let mut tiny = good.clone();
    tiny[footer_len_at - 18..footer_len_at - 16].copy_from_slice(&3u16.to_le_bytes());
    let e = parse_tdvf(&tiny).unwrap_err();
    assert_eq!(
        e,
        TdvfError::EntryLength {
            guid: "dc886566-984a-4798-a75e-5585a7bf67cc".into(),
            offset: footer_len_at,
            length: 3,
        }
    );
    // No TDX entry: an OVMF without TDX support.
    let mut plain = vec![0u8; SIZE];
    put_table(
        &mut plain,
        &[("7255371f-3a3b-4b04-927b-1da6efa8d454", vec![0; 8])],
    );
    assert_eq!(parse_tdvf(&plain), Err(TdvfError::NoTdxMetadata));
    let mut wrong = vec![0u8; SIZE];
    put_table(
        &mut wrong,
        &[("e47a6535-984a-4798-865e-4685a7bf8ec2", vec![0; 8])],
    );
    assert_eq!(parse_tdvf(&wrong), Err(TdvfError::OffsetEntrySize(8)));
    for offset in [0u32, SIZE as u32 + 1] {
        let mut img = vec![0u8; SIZE];
        put_table(
            &mut img,
            &[(
                "e47a6535-984a-4798-865e-4685a7bf8ec2",
                offset.to_le_bytes().to_vec(),
            )],
        );
        assert_eq!(
            parse_tdvf(&img),
            Err(TdvfError::MetadataOffset { offset, len: SIZE })
        );
    }
    let mut img = vec![0u8; SIZE];
    put_table(
        &mut img,
        &[(
            "e47a6535-984a-4798-865e-4685a7bf8ec2",
            8u32.to_le_bytes().to_vec(),
        )],
    );
    assert!(matches!(
        parse_tdvf(&img),
        Err(TdvfError::Truncated {
            what: "the TDVF descriptor",
            ..
        })
    ));
}

#[test]
fn descriptor_errors() {
    let good = image(&ovmf_like());
    let with = |at: usize, bytes: &[u8]| {
        let mut img = good.clone();
        img[DESCRIPTOR_AT + at..DESCRIPTOR_AT + at + bytes.len()].copy_from_slice(bytes);
        parse_tdvf(&img).unwrap_err()
    };
    assert_eq!(with(0, b"TDVX"), TdvfError::Signature("TDVX".into()));
    assert_eq!(with(0, b"\x00DVF"), TdvfError::Signature("\\x00DVF".into()));
    assert_eq!(with(8, &2u32.to_le_bytes()), TdvfError::Version(2));
    assert_eq!(
        with(4, &100u32.to_le_bytes()),
        TdvfError::DescriptorLength {
            length: 100,
            sections: 5,
            expected: 176
        }
    );
    let mut many = Vec::new();
    many.extend((16 + 32 * 300u32).to_le_bytes());
    many.extend(1u32.to_le_bytes());
    many.extend(300u32.to_le_bytes());
    assert_eq!(with(4, &many), TdvfError::TooManySections(300));
    // Sections that run past the image.
    let mut past = Vec::new();
    past.extend((16 + 32 * 256u32).to_le_bytes());
    past.extend(1u32.to_le_bytes());
    past.extend(256u32.to_le_bytes());
    assert!(matches!(
        with(4, &past),
        TdvfError::Truncated {
            what: "the TDVF sections",
            needed: 8192,
            ..
        }
    ));
}

#[test]
fn section_errors() {
    let bfv = |attr: u32| (0x2000u32, 0x3000u32, 0xFFFF_D000u64, 0x3000u64, 0u32, attr);
    assert_eq!(
        err(&[(0, 0, 0, 0x1000, 7, 0)]),
        TdvfError::SectionType {
            index: 0,
            section_type: 7
        }
    );
    assert_eq!(
        err(&[bfv(0x5)]),
        TdvfError::ReservedAttributes {
            index: 0,
            section_type: SectionType::Bfv,
            attributes: 5
        }
    );
    assert!(matches!(
        err(&[(0, 0, 0x80_0010, 0x1000, 3, 0)]),
        TdvfError::Unaligned {
            field: "MemoryAddress",
            value: 0x80_0010,
            ..
        }
    ));
    assert!(matches!(
        err(&[(0, 0, 0x80_0000, 0x1800, 3, 0)]),
        TdvfError::Unaligned {
            field: "MemoryDataSize",
            ..
        }
    ));
    assert_eq!(
        err(&[(0x2000, 0x4000, 0xFFFF_D000, 0x3000, 0, 1)]),
        TdvfError::RawExceedsMemory {
            index: 0,
            section_type: SectionType::Bfv,
            raw: 0x4000,
            memory: 0x3000
        }
    );
    assert_eq!(
        err(&[(0xF000, 0x1000, 0xFFFF_D000, 0x3000, 0, 1)]),
        TdvfError::DataOutsideImage {
            index: 0,
            section_type: SectionType::Bfv,
            start: 0xF000,
            end: 0x12000,
            len: SIZE,
        }
    );
    // Huge sizes never overflow.
    let huge = !0xFFFu64;
    assert!(matches!(
        err(&[(0x10, 1, 0, huge, 0, 0)]),
        TdvfError::DataOutsideImage { .. }
    ));
    let reason = |sections: &[Raw]| match err(sections) {
        TdvfError::Section { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason(&[(0, 0, 0x80_0000, 0, 3, 0)]), "MemoryDataSize is 0");
    assert_eq!(
        reason(&[(0, 0, huge, 0x2000, 3, 0)]),
        "the section's guest addresses wrap around"
    );
    assert!(reason(&[bfv(3)]).starts_with("MR.EXTEND together with PAGE.AUG"));
    assert_eq!(
        reason(&[(0x2000, 0, 0xFFFF_D000, 0x3000, 0, 1)]),
        "a firmware volume with RawDataSize 0"
    );
    assert!(reason(&[(0, 0x10, 0x80_0000, 0x1000, 3, 0)]).starts_with("a memory-only section"));
    for ty in [2, 5, 6] {
        assert!(reason(&[(0, 0, 0x80_0000, 0x1000, ty, 1)])
            .starts_with("MR.EXTEND of content the host"));
    }
    // Payload sections without MR.EXTEND are added like TempMem.
    let payload: Vec<Raw> = vec![(0, 0, 0x80_0000, 0x1000, 5, 0)];
    let img = image(&payload);
    assert_eq!(
        mrtd(&img, AddOrder::PerPage).unwrap(),
        expected_mrtd(&img, &payload, true)
    );
    assert_eq!(
        err(&[
            (0, 0, 0x80_0000, 0x2000, 3, 0),
            (0, 0, 0x80_1000, 0x1000, 2, 0)
        ]),
        TdvfError::Overlap {
            first: 0,
            second: 1
        }
    );
    // Overlap with a PAGE.AUG section is no overlap of added pages.
    assert!(parse_tdvf(&image(&[
        (0, 0, 0x80_0000, 0x2000, 3, 0),
        (0, 0, 0x80_1000, 0x1000, 4, 2)
    ]))
    .is_ok());
    assert_eq!(
        err(&[(0, 0, 0, 2 << 30, 3, 0)]),
        TdvfError::TooLarge(2 << 30)
    );
    // Hand-made metadata is checked again before measuring.
    let img = image(&ovmf_like());
    let mut meta = parse_tdvf(&img).unwrap();
    meta.sections[0].memory_data_size = !0xFFFu64;
    assert!(meta.mrtd(&img, AddOrder::PerPage).is_err());
}

#[test]
fn every_flip_and_truncation_of_the_tail_is_handled() {
    let good = image(&ovmf_like());
    for i in DESCRIPTOR_AT..SIZE {
        let mut img = good.clone();
        img[i] ^= 0xA5;
        let _ = mrtd(&img, AddOrder::PerPage);
    }
    for len in (0..SIZE).step_by(97) {
        let _ = mrtd(&good[..len], AddOrder::PerSection);
    }
}

/// The last 4 KiB of `/usr/share/ovmf/OVMF.fd` from Debian's `ovmf` 2022.11-6+deb12u2 (a unified
/// OVMF with TDX support): the GUIDed table and the TDVF descriptor, placed at the end of an image of
/// the original size.
#[test]
fn debian_ovmf_metadata() {
    let tail =
        include_bytes!("../../../../testdata/measure/tdx/debian_ovmf_2022.11-6+deb12u2_tail4k.bin");
    let mut img = vec![0u8; 2_097_152];
    let at = img.len() - tail.len();
    img[at..].copy_from_slice(tail);
    let meta = parse_tdvf(&img).unwrap();
    assert_eq!(meta.descriptor_offset, 2_095_040);
    let got: Vec<Raw> = meta
        .sections
        .iter()
        .map(|s| {
            let ty = s.section_type as u32;
            (
                s.data_offset,
                s.raw_data_size,
                s.memory_address,
                s.memory_data_size,
                ty,
                s.attributes,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0x20000, 0x1E0000, 0xFFE2_0000, 0x1E0000, 0, 1), // BFV, MR.EXTEND
            (0, 0x20000, 0xFFE0_0000, 0x20000, 1, 0),         // CFV
            (0, 0, 0x81_0000, 0x10000, 3, 0),                 // TempMem
            (0, 0, 0x80_B000, 0x2000, 3, 0),                  // TempMem
            (0, 0, 0x80_9000, 0x2000, 2, 0),                  // TD_HOB
            (0, 0, 0x80_0000, 0x6000, 3, 0),                  // TempMem
        ]
    );
    // The zeros standing in for the BFV measure to the independent computation too.
    assert_eq!(
        mrtd(&img, AddOrder::PerPage).unwrap(),
        expected_mrtd(&img, &got, true)
    );
}
