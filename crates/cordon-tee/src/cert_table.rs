//! The certificate table of an SNP extended guest request: what configfs-tsm's `auxblob` holds for
//! the `sev_guest` provider. AMD "SEV-ES Guest-Hypervisor Communication Block Standardization"
//! (publication 56421), section "SNP Extended Guest Request", table "Certificate Table Entry":
//! entries of GUID (16 bytes), offset (u32 LE) and length (u32 LE), offsets from the start of the
//! table, terminated by an entry of all zeros; the certificates follow. GUIDs are stored in the byte
//! order of their text form, as AMD's own tools write them.

use thiserror::Error;

/// Length of one table entry: GUID, offset, length.
const ENTRY_LEN: usize = 24;

/// GUID of the VCEK entry, `63da758d-e664-4564-adc5-f4b93be8accd`.
pub const GUID_VCEK: [u8; 16] = guid(0x63da758d_e664_4564_adc5_f4b93be8accd);
/// GUID of the VLEK entry, `a8074bc2-a25a-483e-aae6-39c045a0b8a1`.
pub const GUID_VLEK: [u8; 16] = guid(0xa8074bc2_a25a_483e_aae6_39c045a0b8a1);
/// GUID of the ASK (or, with a VLEK, ASVK) entry, `4ab7b379-bbac-4fe4-a02f-05aef327c782`.
pub const GUID_ASK: [u8; 16] = guid(0x4ab7b379_bbac_4fe4_a02f_05aef327c782);
/// GUID of the ARK entry, `c0b406a4-a803-4952-9743-3fb6014cd0ae`.
pub const GUID_ARK: [u8; 16] = guid(0xc0b406a4_a803_4952_9743_3fb6014cd0ae);

const fn guid(v: u128) -> [u8; 16] {
    v.to_be_bytes()
}

/// Why a certificate table could not be read. Offsets are from the start of the table.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CertTableError {
    #[error("certificate table: entry {index} at offset {offset} is cut short ({len} bytes in all) before the all-zero terminator")]
    Truncated {
        index: usize,
        offset: usize,
        len: usize,
    },
    #[error("certificate table: entry {index} ({guid}) has length 0")]
    EmptyEntry { index: usize, guid: String },
    #[error("certificate table: entry {index} ({guid}) spans {start}..{end}, outside the {len} bytes given")]
    OutOfBounds {
        index: usize,
        guid: String,
        start: usize,
        end: usize,
        len: usize,
    },
    #[error("certificate table: entry {index} ({guid}) at {start}..{end} overlaps the table itself (0..{table_end})")]
    OverlapsTable {
        index: usize,
        guid: String,
        start: usize,
        end: usize,
        table_end: usize,
    },
    #[error("certificate table: entries {first} and {second} overlap ({first_range} and {second_range})")]
    Overlap {
        first: usize,
        second: usize,
        first_range: String,
        second_range: String,
    },
    #[error("certificate table: GUID {guid} appears twice (entries {first} and {second})")]
    Duplicate {
        guid: String,
        first: usize,
        second: usize,
    },
}

/// One certificate of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTableEntry {
    pub guid: [u8; 16],
    /// The certificate's bytes (DER for AMD's).
    pub data: Vec<u8>,
}

/// A GUID in its text form, for messages.
pub fn guid_text(g: &[u8; 16]) -> String {
    let h = hex::encode(g);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn le32(bytes: &[u8]) -> usize {
    let mut a = [0u8; 4];
    a.copy_from_slice(bytes);
    u32::from_le_bytes(a) as usize
}

/// Parses a certificate table. An empty input is an empty table (a host that supplies no
/// certificates). Bytes after the last certificate (page padding) are allowed. Entries may not
/// overlap the table, each other, or run past the end; a GUID may appear once.
pub fn parse_cert_table(bytes: &[u8]) -> Result<Vec<CertTableEntry>, CertTableError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut raw = Vec::new();
    loop {
        let index = raw.len();
        let offset = index * ENTRY_LEN;
        let entry = offset
            .checked_add(ENTRY_LEN)
            .and_then(|end| bytes.get(offset..end))
            .ok_or(CertTableError::Truncated {
                index,
                offset,
                len: bytes.len(),
            })?;
        if entry.iter().all(|&b| b == 0) {
            break;
        }
        let mut g = [0u8; 16];
        g.copy_from_slice(&entry[..16]);
        raw.push((g, le32(&entry[16..20]), le32(&entry[20..24])));
    }
    let table_end = (raw.len() + 1) * ENTRY_LEN;
    let mut ranges: Vec<(usize, usize, usize)> = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for (index, (g, start, length)) in raw.into_iter().enumerate() {
        let name = guid_text(&g);
        if length == 0 {
            return Err(CertTableError::EmptyEntry { index, guid: name });
        }
        if let Some(first) = out.iter().position(|e: &CertTableEntry| e.guid == g) {
            return Err(CertTableError::Duplicate {
                guid: name,
                first,
                second: index,
            });
        }
        let end = start.saturating_add(length);
        let data = bytes.get(start..end).ok_or(CertTableError::OutOfBounds {
            index,
            guid: name.clone(),
            start,
            end,
            len: bytes.len(),
        })?;
        if start < table_end {
            return Err(CertTableError::OverlapsTable {
                index,
                guid: name,
                start,
                end,
                table_end,
            });
        }
        if let Some(&(first, s, e)) = ranges.iter().find(|(_, s, e)| start < *e && *s < end) {
            return Err(CertTableError::Overlap {
                first,
                second: index,
                first_range: format!("{s}..{e}"),
                second_range: format!("{start}..{end}"),
            });
        }
        ranges.push((index, start, end));
        out.push(CertTableEntry {
            guid: g,
            data: data.to_vec(),
        });
    }
    Ok(out)
}

/// Writes a certificate table: the entries, the all-zero terminator, then the certificates in the
/// order given.
pub fn encode_cert_table(entries: &[CertTableEntry]) -> Vec<u8> {
    if entries.is_empty() {
        return Vec::new();
    }
    let table_len = (entries.len() + 1) * ENTRY_LEN;
    let mut head = Vec::with_capacity(table_len);
    let mut body = Vec::new();
    for e in entries {
        // Offsets and lengths are u32 on the wire; certificates are a few KiB.
        let offset = u32::try_from(table_len + body.len()).unwrap_or(u32::MAX);
        let length = u32::try_from(e.data.len()).unwrap_or(u32::MAX);
        head.extend_from_slice(&e.guid);
        head.extend_from_slice(&offset.to_le_bytes());
        head.extend_from_slice(&length.to_le_bytes());
        body.extend_from_slice(&e.data);
    }
    head.extend_from_slice(&[0u8; ENTRY_LEN]);
    head.extend_from_slice(&body);
    head
}

/// The certificates a verifier needs from a table, in chain order: the VCEK or VLEK, then the ASK
/// (ASVK) and the ARK where present. Other entries (a CRL, vendor data) are left out.
pub fn snp_certs(entries: &[CertTableEntry]) -> Vec<Vec<u8>> {
    [GUID_VCEK, GUID_VLEK, GUID_ASK, GUID_ARK]
        .iter()
        .filter_map(|g| entries.iter().find(|e| &e.guid == g))
        .map(|e| e.data.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(guid: [u8; 16], data: &[u8]) -> CertTableEntry {
        CertTableEntry {
            guid,
            data: data.to_vec(),
        }
    }

    /// A table written by hand: entries, terminator, then data at the offsets the entries name.
    fn table(entries: &[([u8; 16], u32, u32)], tail: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for (g, off, len) in entries {
            t.extend_from_slice(g);
            t.extend_from_slice(&off.to_le_bytes());
            t.extend_from_slice(&len.to_le_bytes());
        }
        t.extend_from_slice(&[0; 24]);
        t.extend_from_slice(tail);
        t
    }

    #[test]
    fn guids_read_as_the_ghcb_spec_writes_them() {
        assert_eq!(
            guid_text(&GUID_VCEK),
            "63da758d-e664-4564-adc5-f4b93be8accd"
        );
        assert_eq!(
            guid_text(&GUID_VLEK),
            "a8074bc2-a25a-483e-aae6-39c045a0b8a1"
        );
        assert_eq!(guid_text(&GUID_ASK), "4ab7b379-bbac-4fe4-a02f-05aef327c782");
        assert_eq!(guid_text(&GUID_ARK), "c0b406a4-a803-4952-9743-3fb6014cd0ae");
        assert_eq!(&GUID_VCEK[..4], &[0x63, 0xda, 0x75, 0x8d]);
    }

    #[test]
    fn round_trip_and_chain_order() {
        let entries = vec![
            entry(GUID_ARK, b"ark der"),
            entry(GUID_VCEK, b"vcek der"),
            entry(GUID_ASK, b"ask"),
        ];
        let bytes = encode_cert_table(&entries);
        // Three entries and the terminator, then the data; the first offset is right after.
        assert_eq!(bytes.len(), 4 * 24 + 7 + 8 + 3);
        assert_eq!(le32(&bytes[16..20]), 96);
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 4000]);
        for b in [&bytes, &padded] {
            let parsed = parse_cert_table(b).unwrap();
            assert_eq!(parsed, entries);
            assert_eq!(
                snp_certs(&parsed),
                vec![b"vcek der".to_vec(), b"ask".to_vec(), b"ark der".to_vec()]
            );
        }
        assert_eq!(parse_cert_table(&[]).unwrap(), vec![]);
        assert_eq!(encode_cert_table(&[]), Vec::<u8>::new());
        // A table of the terminator alone: no certificates.
        assert_eq!(parse_cert_table(&[0; 24]).unwrap(), vec![]);
    }

    #[test]
    fn truncated_tables_are_refused_at_every_length() {
        let bytes = encode_cert_table(&[entry(GUID_VCEK, b"vcek"), entry(GUID_ASK, b"ask")]);
        for len in 1..bytes.len() {
            let err = parse_cert_table(&bytes[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    CertTableError::Truncated { .. } | CertTableError::OutOfBounds { .. }
                ),
                "length {len}: {err}"
            );
        }
        let err = parse_cert_table(&bytes[..30]).unwrap_err();
        assert_eq!(
            err,
            CertTableError::Truncated {
                index: 1,
                offset: 24,
                len: 30
            }
        );
        // No terminator at all: the entries run into the certificate bytes and past the end.
        let no_term = table(&[(GUID_VCEK, 24, 4)], b"");
        assert!(matches!(
            parse_cert_table(&no_term[..24]),
            Err(CertTableError::Truncated { index: 1, .. })
        ));
    }

    #[test]
    fn entries_out_of_bounds_or_empty_are_refused() {
        let t = table(&[(GUID_VCEK, 48, 100)], b"short");
        let err = parse_cert_table(&t).unwrap_err();
        assert!(
            matches!(
                err,
                CertTableError::OutOfBounds {
                    index: 0,
                    start: 48,
                    end: 148,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("63da758d"), "{err}");
        let huge = table(&[(GUID_VCEK, u32::MAX, u32::MAX)], b"x");
        assert!(matches!(
            parse_cert_table(&huge),
            Err(CertTableError::OutOfBounds { .. })
        ));
        let empty = table(&[(GUID_VCEK, 48, 0)], b"x");
        assert!(matches!(
            parse_cert_table(&empty),
            Err(CertTableError::EmptyEntry { index: 0, .. })
        ));
    }

    #[test]
    fn overlapping_entries_and_duplicates_are_refused() {
        // Two entries sharing bytes.
        let t = table(&[(GUID_VCEK, 72, 8), (GUID_ASK, 76, 8)], &[1; 16]);
        let err = parse_cert_table(&t).unwrap_err();
        assert_eq!(
            err,
            CertTableError::Overlap {
                first: 0,
                second: 1,
                first_range: "72..80".into(),
                second_range: "76..84".into()
            }
        );
        // The same range twice.
        let t = table(&[(GUID_VCEK, 72, 8), (GUID_ASK, 72, 8)], &[1; 16]);
        assert!(matches!(
            parse_cert_table(&t),
            Err(CertTableError::Overlap { .. })
        ));
        // Adjacent ranges are fine.
        let t = table(&[(GUID_VCEK, 72, 8), (GUID_ASK, 80, 8)], &[1; 16]);
        assert_eq!(parse_cert_table(&t).unwrap().len(), 2);
        // An entry pointing into the table itself (its own header or the terminator).
        let t = table(&[(GUID_VCEK, 0, 24)], &[1; 8]);
        assert!(matches!(
            parse_cert_table(&t),
            Err(CertTableError::OverlapsTable { table_end: 48, .. })
        ));
        let t = table(&[(GUID_VCEK, 40, 16)], &[1; 8]);
        assert!(matches!(
            parse_cert_table(&t),
            Err(CertTableError::OverlapsTable { .. })
        ));
        let t = table(&[(GUID_VCEK, 72, 4), (GUID_VCEK, 76, 4)], &[1; 8]);
        assert!(matches!(
            parse_cert_table(&t),
            Err(CertTableError::Duplicate {
                first: 0,
                second: 1,
                ..
            })
        ));
    }

    #[test]
    fn unknown_entries_are_kept_but_not_handed_to_verifiers() {
        let other = [0x11; 16];
        let bytes = encode_cert_table(&[entry(other, b"crl"), entry(GUID_VLEK, b"vlek")]);
        let parsed = parse_cert_table(&bytes).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(snp_certs(&parsed), vec![b"vlek".to_vec()]);
    }
}
