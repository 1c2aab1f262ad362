//! The SEV hashes table: SHA-256 of the kernel, initrd and command line that QEMU writes into the
//! firmware's hashes-table page before launch, so that the launch digest covers them and OVMF can
//! check what it loads against them.
//!
//! Layout: QEMU `target/i386/sev.c` (`SevHashTable`, `SevHashTableEntry`, `PaddedSevHashTable`)
//! and OVMF `OvmfPkg/AmdSev/BlobVerifierLibSevHashes`: a GUID and `u16` length header, then three
//! entries (command line, initrd, kernel) each of GUID, `u16` length and the 32-byte hash; padded
//! with zeros to a multiple of 16 bytes.

use sha2::{Digest, Sha256};

use super::ovmf::efi_guid_bytes;

const TABLE_HEADER_GUID: [u8; 16] = efi_guid_bytes("9438d606-4f22-4cc9-b479-a793d411fd21");
const KERNEL_ENTRY_GUID: [u8; 16] = efi_guid_bytes("4de79437-abd2-427f-b835-d5b172d2045b");
const INITRD_ENTRY_GUID: [u8; 16] = efi_guid_bytes("44baf731-3a2f-4bd7-9af1-41e29169781d");
const CMDLINE_ENTRY_GUID: [u8; 16] = efi_guid_bytes("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");

const ENTRY_LEN: usize = 16 + 2 + 32;
const TABLE_LEN: usize = 16 + 2 + 3 * ENTRY_LEN;
/// The table as QEMU writes it: padded to a multiple of 16 bytes.
pub const PADDED_TABLE_LEN: usize = TABLE_LEN.div_ceil(16) * 16;

/// The three SHA-256 digests the hashes table carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel file, as given to QEMU's `-kernel`.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd file (of no bytes when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line followed by one NUL byte (just the NUL when there is none).
    pub cmdline: [u8; 32],
}

impl KernelHashes {
    /// From the kernel's and the initrd's SHA-256 (computed by the caller, who may stream large
    /// files) and the command line (`-append`).
    pub fn from_digests(
        kernel_sha256: [u8; 32],
        initrd_sha256: Option<[u8; 32]>,
        append: Option<&str>,
    ) -> KernelHashes {
        let mut cmdline = Sha256::new();
        cmdline.update(append.unwrap_or("").as_bytes());
        cmdline.update([0u8]);
        KernelHashes {
            kernel: kernel_sha256,
            initrd: initrd_sha256.unwrap_or_else(|| Sha256::digest([]).into()),
            cmdline: cmdline.finalize().into(),
        }
    }

    /// From the kernel's and the initrd's bytes and the command line.
    pub fn from_contents(kernel: &[u8], initrd: Option<&[u8]>, append: Option<&str>) -> Self {
        KernelHashes::from_digests(
            Sha256::digest(kernel).into(),
            initrd.map(|i| Sha256::digest(i).into()),
            append,
        )
    }

    /// The padded table's bytes.
    pub fn table(&self) -> [u8; PADDED_TABLE_LEN] {
        let mut t = [0u8; PADDED_TABLE_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = t.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        put(&TABLE_HEADER_GUID);
        put(&(TABLE_LEN as u16).to_le_bytes());
        for (guid, hash) in [
            (CMDLINE_ENTRY_GUID, &self.cmdline),
            (INITRD_ENTRY_GUID, &self.initrd),
            (KERNEL_ENTRY_GUID, &self.kernel),
        ] {
            put(&guid);
            put(&(ENTRY_LEN as u16).to_le_bytes());
            put(hash);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        assert_eq!(TABLE_LEN, 168);
        assert_eq!(PADDED_TABLE_LEN, 176);
        let h = KernelHashes::from_contents(b"kernel", None, None);
        let t = h.table();
        assert_eq!(&t[..16], &TABLE_HEADER_GUID);
        assert_eq!(&t[16..18], &168u16.to_le_bytes());
        assert_eq!(&t[18..34], &CMDLINE_ENTRY_GUID);
        assert_eq!(&t[34..36], &50u16.to_le_bytes());
        // No command line: the hash of one NUL byte; no initrd: the hash of nothing.
        assert_eq!(&t[36..68], Sha256::digest([0u8]).as_slice());
        assert_eq!(&t[68 + 18..68 + 50], Sha256::digest([]).as_slice());
        assert_eq!(&t[118 + 18..118 + 50], Sha256::digest(b"kernel").as_slice());
        assert!(t[168..].iter().all(|&b| b == 0));
        // The command line is hashed with its terminating NUL.
        let with = KernelHashes::from_contents(b"kernel", Some(b"rd"), Some("console=ttyS0"));
        assert_eq!(
            with.cmdline.as_slice(),
            Sha256::digest(b"console=ttyS0\0").as_slice()
        );
        assert_eq!(with.initrd.as_slice(), Sha256::digest(b"rd").as_slice());
    }
}
