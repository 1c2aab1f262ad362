//! Synthetic OVMF-like images: a footer GUID table, SEV metadata and a reset block around
//! deterministic filler bytes, laid out as edk2's ResetVectorVtf0.asm and OvmfSevMetadata.asm
//! lay them out, so that tests control every field (and can break each one).

#![allow(dead_code)]

use cordon_measure::snp::{
    SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID, TABLE_FOOTER_GUID,
};

pub const SEC_MEM: u32 = 1;
pub const SECRETS: u32 = 2;
pub const CPUID: u32 = 3;
pub const SVSM_CAA: u32 = 4;
pub const KERNEL_HASHES: u32 = 0x10;

/// Where the `ASEV` header sits, counted from the end of the image.
pub const METADATA_OFFSET: u32 = 0x1000;

/// One GUID table entry: its data, GUID, and the length field (normally data + 18).
#[derive(Clone)]
pub struct Entry {
    pub data: Vec<u8>,
    pub guid: [u8; 16],
    pub length: Option<u16>,
}

impl Entry {
    pub fn new(guid: [u8; 16], data: Vec<u8>) -> Entry {
        Entry {
            data,
            guid,
            length: None,
        }
    }
}

#[derive(Clone)]
pub struct Synth {
    /// Image size in pages.
    pub pages: usize,
    /// Seed of the filler bytes.
    pub seed: u64,
    /// GUID table entries, first to last (the footer is added after them).
    pub entries: Vec<Entry>,
    /// Metadata sections: (gpa, size, type).
    pub sections: Vec<(u32, u32, u32)>,
    pub signature: [u8; 4],
    pub version: u32,
}

pub fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Synth {
    /// A well-formed image: 64 pages, an AP reset vector, a hashes table at 0x80_9C00 inside an
    /// SNP_KERNEL_HASHES page, and sections of every kind in OVMF.amdsev.fd's (unsorted) order.
    pub fn new() -> Synth {
        Synth {
            pages: 64,
            seed: 1,
            entries: vec![
                Entry::new(SEV_ES_RESET_BLOCK_GUID, u32s(&[0xFFFF_B004])),
                Entry::new(SEV_HASH_TABLE_RV_GUID, u32s(&[0x0080_9C00, 0x400])),
                Entry::new(SEV_METADATA_GUID, u32s(&[METADATA_OFFSET])),
            ],
            sections: vec![
                (0x0080_0000, 0x3000, SEC_MEM),
                (0x0080_4000, 0x1000, SECRETS),
                (0x0080_5000, 0x1000, CPUID),
                (0x0080_6000, 0x1000, SVSM_CAA),
                (0x0080_A000, 0x2000, SEC_MEM),
                (0x0080_9000, 0x1000, KERNEL_HASHES),
            ],
            signature: *b"ASEV",
            version: 1,
        }
    }

    /// Without a hashes table (base 0, as OVMF.fd has it) and without its section.
    pub fn without_hashes_table() -> Synth {
        let mut s = Synth::new();
        s.set_entry(SEV_HASH_TABLE_RV_GUID, u32s(&[0, 0]));
        s.sections.retain(|x| x.2 != KERNEL_HASHES);
        s
    }

    pub fn set_entry(&mut self, guid: [u8; 16], data: Vec<u8>) {
        for e in &mut self.entries {
            if e.guid == guid {
                e.data = data;
                return;
            }
        }
        self.entries.push(Entry::new(guid, data));
    }

    pub fn remove_entry(&mut self, guid: [u8; 16]) {
        self.entries.retain(|e| e.guid != guid);
    }

    /// The GUID table bytes, footer included (its length counts the whole table).
    pub fn table(&self) -> Vec<u8> {
        let mut t = Vec::new();
        for e in &self.entries {
            t.extend_from_slice(&e.data);
            let len = e.length.unwrap_or((e.data.len() + 18) as u16);
            t.extend_from_slice(&len.to_le_bytes());
            t.extend_from_slice(&e.guid);
        }
        let total = (t.len() + 18) as u16;
        t.extend_from_slice(&total.to_le_bytes());
        t.extend_from_slice(&TABLE_FOOTER_GUID);
        t
    }

    pub fn build(&self) -> Vec<u8> {
        let len = self.pages * 4096;
        let mut img = filler(len, self.seed);
        let table = self.table();
        let end = len - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        // The ASEV header and its section descriptors.
        let mut meta = Vec::new();
        meta.extend_from_slice(&self.signature);
        let meta_len = 16 + 12 * self.sections.len() as u32;
        meta.extend_from_slice(&u32s(&[meta_len, self.version, self.sections.len() as u32]));
        for (gpa, size, kind) in &self.sections {
            meta.extend_from_slice(&u32s(&[*gpa, *size, *kind]));
        }
        let start = len - METADATA_OFFSET as usize;
        img[start..start + meta.len()].copy_from_slice(&meta);
        img
    }
}

/// Deterministic filler (xorshift64*), so that every page hashes differently.
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
