//! Reference values computed from images: what a TEE's launch measurement will be, derived from
//! the bytes a guest is launched with, so that a policy can name it before the guest ever runs.
//!
//! Pure computation on bytes: no file, network or clock access. Callers read the images.
//!
//! - [`snp`]: the AMD SEV-SNP launch digest (`MEASUREMENT` of an attestation report) of a QEMU
//!   guest booted from OVMF, optionally with a kernel, initrd and command line measured through
//!   OVMF's SEV hashes table.
//! - [`tdx`]: the Intel TDX MRTD of a TD booted from a TDVF image.

pub mod snp;
pub mod tdx;
