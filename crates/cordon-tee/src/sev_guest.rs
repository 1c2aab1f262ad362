//! SEV-SNP reports through `/dev/sev-guest` (Linux `include/uapi/linux/sev-guest.h`,
//! `Documentation/virt/coco/sev-guest.rst`), for SNP guests whose kernel lacks configfs-tsm.
//!
//! The `SNP_GET_REPORT` ioctl carries a [`SnpGuestRequestIoctl`] pointing at a request (the 64 bytes
//! of report data and the VMPL) and a 4000-byte response buffer, into which the kernel copies the
//! firmware's MSG_REPORT_RSP (SNP firmware ABI): `STATUS` (u32) at 0, `REPORT_SIZE` (u32) at 4 and
//! the attestation report at 0x20.
//!
//! The `SNP_GET_DERIVED_KEY` ioctl carries the same [`SnpGuestRequestIoctl`], pointing at a
//! [`SnpDerivedKeyReq`] (the firmware's MSG_KEY_REQ fields) and a 64-byte response, into which the
//! kernel copies the firmware's MSG_KEY_RSP: `STATUS` (u32) at 0 and the 32-byte `DERIVED_KEY` at
//! 0x20 (SEV Secure Nested Paging Firmware ABI Specification, AMD publication 56860, section
//! "MSG_KEY_REQ", tables "MSG_KEY_REQ Message Structure" and "MSG_KEY_RSP Message Structure").
//!
//! The `SNP_GET_EXT_REPORT` ioctl carries a [`SnpExtReportReq`]: the report request plus a buffer
//! (`certs_address`, `certs_len`: page-aligned, at most `SEV_FW_BLOB_MAX_SIZE`) into which the
//! kernel copies the certificate table the host supplies (GHCB specification, "SNP Extended Guest
//! Request"): the VCEK or VLEK and its chain, so the guest can ship them with the report. A buffer
//! too small fails with `EIO`, `SNP_GUEST_VMM_ERR_INVALID_LEN` in `exitinfo2`'s upper half and the
//! size needed written back to `certs_len`. A host that supplies no certificates leaves the buffer
//! zeroed: an empty table.
//!
//! The requests go to the kernel driver through [`SevGuest::new`]'s device node or, in tests, to an
//! emulated machine ([`SevGuest::emulated_snp`]) that answers the same structures as the firmware
//! and the kernel would.

use crate::cert_table::{parse_cert_table, snp_certs};
use crate::configfs::SNP_REPORT_LEN;
use crate::{EvidenceBundle, EvidenceProvider, TeeError};
use cordon_attest::Platform;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

/// `struct snp_report_req`.
#[repr(C)]
pub(crate) struct SnpReportReq {
    pub user_data: [u8; 64],
    pub vmpl: u32,
    pub rsvd: [u8; 28],
}

/// `struct snp_ext_report_req`: a report request and where to copy the host's certificates.
#[repr(C)]
pub(crate) struct SnpExtReportReq {
    pub data: SnpReportReq,
    pub certs_address: u64,
    pub certs_len: u32,
}

/// `struct snp_report_resp`.
#[repr(C)]
pub(crate) struct SnpReportResp {
    pub data: [u8; 4000],
}

/// `struct snp_guest_request_ioctl`; `exitinfo2` is a union of `{ fw_error: u32, vmm_error: u32 }`.
#[repr(C)]
pub(crate) struct SnpGuestRequestIoctl {
    pub msg_version: u8,
    pub req_data: u64,
    pub resp_data: u64,
    pub exitinfo2: u64,
}

/// `struct snp_derived_key_req`: MSG_KEY_REQ without its reserved tail.
#[repr(C)]
pub(crate) struct SnpDerivedKeyReq {
    pub root_key_select: u32,
    pub rsvd: u32,
    pub guest_field_select: u64,
    pub vmpl: u32,
    pub guest_svn: u32,
    pub tcb_version: u64,
}

/// `struct snp_derived_key_resp`: the MSG_KEY_RSP the kernel copies back. It holds the derived
/// key: zeroized on drop.
#[repr(C)]
pub(crate) struct SnpDerivedKeyResp {
    pub data: [u8; 64],
}

impl Drop for SnpDerivedKeyResp {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

/// Linux `_IOWR(type, nr, size)` on x86 (the only SNP guest architecture).
const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    (3 << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}

/// `SNP_GET_REPORT = _IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
pub(crate) const SNP_GET_REPORT: u32 = iowr(b'S', 0x0, size_of::<SnpGuestRequestIoctl>());

/// `SNP_GET_DERIVED_KEY = _IOWR('S', 0x1, struct snp_guest_request_ioctl)`.
pub(crate) const SNP_GET_DERIVED_KEY: u32 = iowr(b'S', 0x1, size_of::<SnpGuestRequestIoctl>());

/// `SNP_GET_EXT_REPORT = _IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
pub(crate) const SNP_GET_EXT_REPORT: u32 = iowr(b'S', 0x2, size_of::<SnpGuestRequestIoctl>());

/// `SEV_FW_BLOB_MAX_SIZE`: the most certificate data the kernel carries (4 pages).
pub(crate) const CERTS_MAX_LEN: usize = 0x4000;
/// The page size `certs_len` must be a multiple of.
pub(crate) const PAGE_LEN: usize = 4096;
/// `SNP_GUEST_VMM_ERR_INVALID_LEN`: the certificate buffer is too small (`exitinfo2` upper half).
pub(crate) const VMM_ERR_INVALID_LEN: u32 = 1;

/// Offset of the report in MSG_REPORT_RSP.
const REPORT_OFFSET: usize = 0x20;
/// Offset of `DERIVED_KEY` in MSG_KEY_RSP.
const DERIVED_KEY_OFFSET: usize = 0x20;

/// Which root key the firmware derives from (MSG_KEY_REQ `ROOT_KEY_SELECT`, bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKey {
    /// The VCEK: a key of this chip at its current TCB. A key derived from it exists on this chip
    /// only; the same guest on another host derives another key.
    Vcek,
    /// The VM root key (VMRK), which the migration agent carries with the guest; only guests
    /// launched with a migration agent have one.
    Vmrk,
}

/// The guest fields a derived key is bound to: bits of MSG_KEY_REQ `GUEST_FIELD_SELECT`.
pub mod guest_field {
    /// The guest policy (bit 0): a debuggable or migratable launch derives another key.
    pub const GUEST_POLICY: u64 = 1 << 0;
    /// The ID block's IMAGE_ID (bit 1).
    pub const IMAGE_ID: u64 = 1 << 1;
    /// The ID block's FAMILY_ID (bit 2).
    pub const FAMILY_ID: u64 = 1 << 2;
    /// The launch measurement (bit 3): other code derives another key.
    pub const MEASUREMENT: u64 = 1 << 3;
    /// The request's GUEST_SVN (bit 4).
    pub const GUEST_SVN: u64 = 1 << 4;
    /// The request's TCB_VERSION (bit 5).
    pub const TCB_VERSION: u64 = 1 << 5;
    /// Every bit this crate knows (bits 0 to 5).
    pub const KNOWN: u64 = 0x3f;
}

/// A request for a key the SEV-SNP firmware derives for this guest (MSG_KEY_REQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DerivedKeyRequest {
    pub root_key: RootKey,
    /// [`guest_field`] bits: what of the guest's launch the key depends on.
    pub guest_field_select: u64,
    /// The VMPL mixed into the key; the firmware refuses levels more privileged than the guest's.
    pub vmpl: u32,
    /// Mixed in when [`guest_field::GUEST_SVN`] is selected; at most the guest's SVN.
    pub guest_svn: u32,
    /// Mixed in when [`guest_field::TCB_VERSION`] is selected; at most the committed TCB.
    pub tcb_version: u64,
}

/// What answers `/dev/sev-guest`'s guest requests in place of the kernel driver: an emulated
/// machine (tests and CI). Each method takes and fills the structures the ioctl of the same name
/// passes, and returns what the ioctl would: its result and `exitinfo2`.
pub(crate) trait GuestRequests: Send + Sync {
    fn get_report(&self, req: &SnpReportReq, resp: &mut SnpReportResp) -> (io::Result<()>, u64);
    /// `certs` is the buffer `certs_address` and `certs_len` describe (empty: no certificates
    /// asked for). Also returns the `certs_len` written back.
    fn get_ext_report(
        &self,
        req: &SnpReportReq,
        resp: &mut SnpReportResp,
        certs: &mut [u8],
    ) -> (io::Result<()>, u64, u32);
    fn get_derived_key(
        &self,
        req: &SnpDerivedKeyReq,
        resp: &mut SnpDerivedKeyResp,
    ) -> (io::Result<()>, u64);
}

/// SEV-SNP evidence from the `/dev/sev-guest` ioctls: the raw 1184-byte attestation report
/// (`SNP_GET_REPORT`) or, with its certificates, the extended report (`SNP_GET_EXT_REPORT`).
/// Prefer [`crate::ConfigFsTsm`] where the kernel has it.
pub struct SevGuest {
    path: PathBuf,
    vmpl: u32,
    /// `None`: the device node's kernel driver. `Some`: an emulated machine.
    emulated: Option<Arc<dyn GuestRequests>>,
}

impl std::fmt::Debug for SevGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SevGuest")
            .field("path", &self.path)
            .field("vmpl", &self.vmpl)
            .field("emulated", &self.emulated.is_some())
            .finish()
    }
}

impl SevGuest {
    /// The device node the `sev-guest` driver creates.
    pub const DEFAULT_PATH: &'static str = "/dev/sev-guest";

    /// Uses the device at `path` ([`Self::DEFAULT_PATH`] on a real system); nothing is opened
    /// until evidence is requested. Reports are requested for VMPL 0.
    pub fn new(path: impl Into<PathBuf>) -> SevGuest {
        SevGuest {
            path: path.into(),
            vmpl: 0,
            emulated: None,
        }
    }

    /// What an emulated device is called in errors: no such node exists.
    pub const EMULATED_PATH: &'static str = "(emulated)/dev/sev-guest";

    /// `/dev/sev-guest` in front of an emulated SEV-SNP machine (tests and CI): the kernel's and
    /// the firmware's answers to the three guest requests, modelled in memory, so that evidence,
    /// certificates and derived keys take the same path through this provider as on a real
    /// guest. EMULATED, NOT hardware-backed.
    pub fn emulated_snp(emulator: crate::emulated::EmulatedSnp) -> SevGuest {
        let vmpl = u32::from(emulator.options().launch.vmpl);
        let device = crate::emulated::snp::SnpGuestDevice::new(emulator);
        SevGuest::on_emulated_device(Arc::new(device)).with_vmpl(vmpl)
    }

    /// An emulated device, requests for VMPL 0.
    pub(crate) fn on_emulated_device(device: Arc<dyn GuestRequests>) -> SevGuest {
        SevGuest {
            path: PathBuf::from(Self::EMULATED_PATH),
            vmpl: 0,
            emulated: Some(device),
        }
    }

    /// Whether this device is an emulator's ([`SevGuest::emulated_snp`]), for tools to say
    /// EMULATED.
    pub fn is_emulated(&self) -> bool {
        self.emulated.is_some()
    }

    /// Requests reports for `vmpl` (`snp_report_req.vmpl`); the firmware refuses levels more
    /// privileged than the guest's own.
    pub fn with_vmpl(mut self, vmpl: u32) -> SevGuest {
        self.vmpl = vmpl;
        self
    }

    /// The device this provider uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A key the firmware derives for this guest (`SNP_GET_DERIVED_KEY`): the same request in the
    /// same guest (the fields `req` selects) on the same chip (or VM root key) gives the same key;
    /// anything else gets another. The key and the buffers it passed through are zeroized.
    pub fn derived_key(&self, req: &DerivedKeyRequest) -> Result<Zeroizing<[u8; 32]>, TeeError> {
        if req.guest_field_select & !guest_field::KNOWN != 0 {
            return Err(TeeError::Malformed {
                path: self.path.clone(),
                reason: format!(
                    "guest_field_select {:#x} has bits this version does not know (known: {:#x})",
                    req.guest_field_select,
                    guest_field::KNOWN
                ),
            });
        }
        let raw = derived_key_request(req);
        let mut resp = SnpDerivedKeyResp { data: [0; 64] };
        let (result, exitinfo2) = match &self.emulated {
            None => get_derived_key_ioctl(&self.open()?, &raw, &mut resp),
            Some(device) => device.get_derived_key(&raw, &mut resp),
        };
        check_guest_request(&self.path, "SNP_GET_DERIVED_KEY", result, exitinfo2)?;
        parse_derived_key_response(&self.path, &resp.data)
    }

    fn open(&self) -> Result<File, TeeError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|source| TeeError::Access {
                path: self.path.clone(),
                op: "open",
                source,
            })
    }
}

impl EvidenceProvider for SevGuest {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        let req = report_request(report_data, self.vmpl);
        let mut resp = Box::new(SnpReportResp { data: [0; 4000] });
        let (result, exitinfo2) = match &self.emulated {
            None => get_report_ioctl(&self.open()?, &req, &mut resp),
            Some(device) => device.get_report(&req, &mut resp),
        };
        check_guest_request(&self.path, "SNP_GET_REPORT", result, exitinfo2)?;
        parse_report_response(&self.path, &resp.data)
    }

    /// The extended report (`SNP_GET_EXT_REPORT`) and the certificates of its table (VCEK or
    /// VLEK, then ASK and ARK where the host supplied them); none where the host supplies none.
    /// A host table larger than the kernel carries (`SNP_GUEST_VMM_ERR_INVALID_LEN` for the
    /// largest buffer: the kernel has then already retried the request without certificates, so
    /// the guest's message sequence is intact) gets the plain report and no certificates: they
    /// are an optimisation for verifiers, which fall back to their own (or to an
    /// [`crate::EndorsementCache`]). Any other failure is an error naming `SNP_GET_EXT_REPORT`.
    fn evidence_bundle(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle, TeeError> {
        let req = report_request(report_data, self.vmpl);
        let mut resp = Box::new(SnpReportResp { data: [0; 4000] });
        let mut certs = Zeroizing::new(vec![0u8; CERTS_MAX_LEN]);
        let (result, exitinfo2, _) = match &self.emulated {
            None => get_ext_report_ioctl(&self.open()?, &req, &mut resp, &mut certs),
            Some(device) => device.get_ext_report(&req, &mut resp, &mut certs),
        };
        if result.is_err() && exitinfo2 == u64::from(VMM_ERR_INVALID_LEN) << 32 {
            return self.evidence(report_data).map(|evidence| EvidenceBundle {
                evidence,
                ..EvidenceBundle::default()
            });
        }
        check_guest_request(&self.path, "SNP_GET_EXT_REPORT", result, exitinfo2)?;
        let evidence = parse_report_response(&self.path, &resp.data)?;
        let entries = parse_cert_table(&certs).map_err(|source| TeeError::CertTable {
            path: self.path.clone(),
            source,
        })?;
        Ok(EvidenceBundle {
            evidence,
            snp_certs: snp_certs(&entries),
            ..EvidenceBundle::default()
        })
    }
}

pub(crate) fn report_request(report_data: &[u8; 64], vmpl: u32) -> SnpReportReq {
    SnpReportReq {
        user_data: *report_data,
        vmpl,
        rsvd: [0; 28],
    }
}

pub(crate) fn derived_key_request(req: &DerivedKeyRequest) -> SnpDerivedKeyReq {
    SnpDerivedKeyReq {
        root_key_select: match req.root_key {
            RootKey::Vcek => 0,
            RootKey::Vmrk => 1,
        },
        rsvd: 0,
        guest_field_select: req.guest_field_select,
        vmpl: req.vmpl,
        guest_svn: req.guest_svn,
        tcb_version: req.tcb_version,
    }
}

/// One of the three unsafe blocks in this crate (with [`get_derived_key_ioctl`] and
/// [`get_ext_report_ioctl`]). Returns the ioctl's result and the `exitinfo2` the kernel
/// wrote back.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn get_report_ioctl(
    dev: &File,
    req: &SnpReportReq,
    resp: &mut SnpReportResp,
) -> (io::Result<()>, u64) {
    use std::os::fd::AsRawFd;
    let mut arg = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: req as *const SnpReportReq as u64,
        resp_data: resp as *mut SnpReportResp as u64,
        exitinfo2: 0,
    };
    // SAFETY: `dev` is an open file for the whole call. The three structs are #[repr(C)] with the
    // layouts of linux/sev-guest.h (checked by tests), and SNP_GET_REPORT encodes the size of
    // `arg`. During this synchronous call the kernel reads `arg` and writes it back whole (only
    // `exitinfo2` changes),
    // reads `size_of::<SnpReportReq>()` bytes from `req`, and writes at most
    // `size_of::<SnpReportResp>()` bytes to `resp`; `arg` and `resp` are exclusively borrowed and
    // `req` is live, so all three pointers are valid for those accesses. A driver that does not
    // know the request (e.g. a regular file) fails with ENOTTY without touching them.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            SNP_GET_REPORT as libc::Ioctl,
            &mut arg as *mut SnpGuestRequestIoctl,
        )
    };
    let result = if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    (result, arg.exitinfo2)
}

/// The second unsafe block: `SNP_GET_DERIVED_KEY`, as [`get_report_ioctl`] does `SNP_GET_REPORT`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn get_derived_key_ioctl(
    dev: &File,
    req: &SnpDerivedKeyReq,
    resp: &mut SnpDerivedKeyResp,
) -> (io::Result<()>, u64) {
    use std::os::fd::AsRawFd;
    let mut arg = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: req as *const SnpDerivedKeyReq as u64,
        resp_data: resp as *mut SnpDerivedKeyResp as u64,
        exitinfo2: 0,
    };
    // SAFETY: as in `get_report_ioctl`: `dev` is open for the whole synchronous call; the structs
    // are #[repr(C)] with linux/sev-guest.h's layouts (checked by tests) and SNP_GET_DERIVED_KEY
    // encodes the size of `arg`; the kernel reads `arg` and writes it back whole (only
    // `exitinfo2` changes), reads
    // `size_of::<SnpDerivedKeyReq>()` bytes from `req` and writes at most
    // `size_of::<SnpDerivedKeyResp>()` bytes to `resp`, all valid, live and (for the writes)
    // exclusively borrowed. A file that is not sev-guest fails with ENOTTY untouched.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            SNP_GET_DERIVED_KEY as libc::Ioctl,
            &mut arg as *mut SnpGuestRequestIoctl,
        )
    };
    let result = if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    (result, arg.exitinfo2)
}

/// The third unsafe block: `SNP_GET_EXT_REPORT`, as [`get_report_ioctl`] does `SNP_GET_REPORT`,
/// with `certs` as the certificate buffer. Also returns the `certs_len` the kernel wrote back.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn get_ext_report_ioctl(
    dev: &File,
    req: &SnpReportReq,
    resp: &mut SnpReportResp,
    certs: &mut [u8],
) -> (io::Result<()>, u64, u32) {
    use std::os::fd::AsRawFd;
    let Ok(certs_len) = u32::try_from(certs.len()) else {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "certificate buffer over 4 GiB");
        return (Err(e), 0, 0);
    };
    let mut ext = SnpExtReportReq {
        data: report_request(&req.user_data, req.vmpl),
        certs_address: certs.as_mut_ptr() as u64,
        certs_len,
    };
    let mut arg = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: &mut ext as *mut SnpExtReportReq as u64,
        resp_data: resp as *mut SnpReportResp as u64,
        exitinfo2: 0,
    };
    // SAFETY: as in `get_report_ioctl`: `dev` is open for the whole synchronous call; the structs
    // are #[repr(C)] with linux/sev-guest.h's layouts (checked by tests) and SNP_GET_EXT_REPORT
    // encodes the size of `arg`. The kernel reads `arg` and writes it back whole (only
    // `exitinfo2` changes); reads
    // `ext` and writes back at most `size_of::<SnpExtReportReq>()` bytes to it (the `certs_len`
    // it needs); writes at most `size_of::<SnpReportResp>()` bytes to `resp`; and writes at most
    // `ext.certs_len` bytes, which is `certs.len()`, at `ext.certs_address`, which is
    // `certs`. All are live and exclusively borrowed for the call. A file that is not
    // sev-guest fails with ENOTTY untouched.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            SNP_GET_EXT_REPORT as libc::Ioctl,
            &mut arg as *mut SnpGuestRequestIoctl,
        )
    };
    let result = if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    (result, arg.exitinfo2, ext.certs_len)
}

#[cfg(not(target_os = "linux"))]
fn get_ext_report_ioctl(
    _dev: &File,
    _req: &SnpReportReq,
    _resp: &mut SnpReportResp,
    _certs: &mut [u8],
) -> (io::Result<()>, u64, u32) {
    let e = io::Error::new(
        io::ErrorKind::Unsupported,
        "SNP_GET_EXT_REPORT exists on Linux only",
    );
    (Err(e), 0, 0)
}

#[cfg(not(target_os = "linux"))]
fn get_derived_key_ioctl(
    _dev: &File,
    _req: &SnpDerivedKeyReq,
    _resp: &mut SnpDerivedKeyResp,
) -> (io::Result<()>, u64) {
    let e = io::Error::new(
        io::ErrorKind::Unsupported,
        "SNP_GET_DERIVED_KEY exists on Linux only",
    );
    (Err(e), 0)
}

#[cfg(not(target_os = "linux"))]
fn get_report_ioctl(
    _dev: &File,
    _req: &SnpReportReq,
    _resp: &mut SnpReportResp,
) -> (io::Result<()>, u64) {
    let e = io::Error::new(
        io::ErrorKind::Unsupported,
        "SNP_GET_REPORT exists on Linux only",
    );
    (Err(e), 0)
}

/// Fails if the ioctl failed or the kernel reported a firmware or VMM error in `exitinfo2`.
pub(crate) fn check_guest_request(
    path: &Path,
    op: &'static str,
    result: io::Result<()>,
    exitinfo2: u64,
) -> Result<(), TeeError> {
    let source = match result {
        Err(e) => e,
        Ok(()) if exitinfo2 != 0 => io::Error::other("the ioctl succeeded but exitinfo2 is not 0"),
        Ok(()) => return Ok(()),
    };
    Err(TeeError::SnpGuestRequest {
        path: path.to_path_buf(),
        op,
        source,
        fw_error: exitinfo2 as u32,
        vmm_error: (exitinfo2 >> 32) as u32,
    })
}

/// The attestation report in a MSG_REPORT_RSP, after checking its status and size.
pub(crate) fn parse_report_response(path: &Path, data: &[u8]) -> Result<Vec<u8>, TeeError> {
    let word = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(status), Some(size)) = (word(0), word(4)) else {
        return Err(wrong_length(path, data.len()));
    };
    if status != 0 {
        return Err(TeeError::SnpReportStatus {
            path: path.to_path_buf(),
            status,
        });
    }
    if size as usize != SNP_REPORT_LEN {
        return Err(wrong_length(path, size as usize));
    }
    data.get(REPORT_OFFSET..REPORT_OFFSET + SNP_REPORT_LEN)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wrong_length(path, data.len().saturating_sub(REPORT_OFFSET)))
}

/// The derived key in a MSG_KEY_RSP, after checking its status.
pub(crate) fn parse_derived_key_response(
    path: &Path,
    data: &[u8],
) -> Result<Zeroizing<[u8; 32]>, TeeError> {
    let status = data
        .get(0..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let key = data.get(DERIVED_KEY_OFFSET..DERIVED_KEY_OFFSET + 32);
    let (Some(status), Some(key)) = (status, key) else {
        return Err(TeeError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "MSG_KEY_RSP is {} bytes, expected at least {}",
                data.len(),
                DERIVED_KEY_OFFSET + 32
            ),
        });
    };
    if status != 0 {
        return Err(TeeError::SnpDerivedKeyStatus {
            path: path.to_path_buf(),
            status,
        });
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(key);
    Ok(out)
}

fn wrong_length(path: &Path, got: usize) -> TeeError {
    TeeError::WrongLength {
        path: path.to_path_buf(),
        platform: Platform::Snp,
        expected: SNP_REPORT_LEN,
        got,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestDir, SNP_REPORT};
    use std::mem::offset_of;

    const DEV: &str = "/dev/sev-guest";

    fn response(status: u32, size: u32, report: &[u8]) -> Vec<u8> {
        let mut resp = vec![0u8; size_of::<SnpReportResp>()];
        resp[0..4].copy_from_slice(&status.to_le_bytes());
        resp[4..8].copy_from_slice(&size.to_le_bytes());
        resp[REPORT_OFFSET..REPORT_OFFSET + report.len()].copy_from_slice(report);
        resp
    }

    #[test]
    fn structs_match_linux_sev_guest_h() {
        assert_eq!(size_of::<SnpReportReq>(), 96);
        assert_eq!(offset_of!(SnpReportReq, user_data), 0);
        assert_eq!(offset_of!(SnpReportReq, vmpl), 64);
        assert_eq!(offset_of!(SnpReportReq, rsvd), 68);
        assert_eq!(size_of::<SnpReportResp>(), 4000);
        assert_eq!(size_of::<SnpGuestRequestIoctl>(), 32);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, msg_version), 0);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, req_data), 8);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, resp_data), 16);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, exitinfo2), 24);
        // _IOWR('S', 0, 32): dir 3 << 30 | size 32 << 16 | 'S' << 8 | 0.
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
    }

    #[test]
    fn request_carries_report_data_and_vmpl() {
        let data: [u8; 64] = std::array::from_fn(|i| i as u8);
        let req = report_request(&data, 2);
        assert_eq!(req.user_data, data);
        assert_eq!(req.vmpl, 2);
        assert_eq!(req.rsvd, [0; 28]);
    }

    #[test]
    fn report_is_taken_from_offset_32_of_the_response() {
        let resp = response(0, 1184, SNP_REPORT);
        let report = parse_report_response(Path::new(DEV), &resp).unwrap();
        assert_eq!(report, SNP_REPORT);
    }

    #[test]
    fn firmware_status_is_an_error() {
        let resp = response(0x16, 1184, SNP_REPORT);
        let err = parse_report_response(Path::new(DEV), &resp).unwrap_err();
        assert!(
            matches!(err, TeeError::SnpReportStatus { status: 0x16, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/dev/sev-guest"), "{err}");
    }

    #[test]
    fn report_size_other_than_1184_is_an_error() {
        for size in [0, 1000, 4000, u32::MAX] {
            let resp = response(0, size, &[]);
            let err = parse_report_response(Path::new(DEV), &resp).unwrap_err();
            assert!(
                matches!(err, TeeError::WrongLength { expected: 1184, got, .. } if got == size as usize),
                "{err}"
            );
        }
        // A truncated buffer errors instead of panicking.
        let short = response(0, 1184, SNP_REPORT);
        assert!(parse_report_response(Path::new(DEV), &short[..100]).is_err());
        assert!(parse_report_response(Path::new(DEV), &short[..5]).is_err());
    }

    #[test]
    fn failed_ioctl_and_nonzero_exitinfo2_are_errors() {
        let p = Path::new(DEV);
        assert!(check_guest_request(p, "SNP_GET_REPORT", Ok(()), 0).is_ok());
        let exitinfo2 = (2u64 << 32) | 0x27;
        let err = check_guest_request(
            p,
            "SNP_GET_REPORT",
            Err(io::Error::from_raw_os_error(5)),
            exitinfo2,
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                TeeError::SnpGuestRequest {
                    fw_error: 0x27,
                    vmm_error: 2,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(DEV) && msg.contains("0x27"), "{msg}");
        let err = check_guest_request(p, "SNP_GET_DERIVED_KEY", Ok(()), 0x16).unwrap_err();
        assert!(
            matches!(
                err,
                TeeError::SnpGuestRequest {
                    op: "SNP_GET_DERIVED_KEY",
                    fw_error: 0x16,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("ioctl SNP_GET_DERIVED_KEY"),
            "{err}"
        );
    }

    #[test]
    fn absent_device_is_named() {
        let tmp = TestDir::new("sev-absent");
        let dev = tmp.path().join("dev/sev-guest");
        let err = SevGuest::new(&dev).evidence(&[0; 64]).unwrap_err();
        match &err {
            TeeError::Access {
                path,
                op: "open",
                source,
            } => {
                assert_eq!(path, &dev);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains("dev/sev-guest"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn ioctl_on_something_that_is_not_sev_guest_fails_cleanly() {
        // A regular file does not know SNP_GET_REPORT: the kernel answers ENOTTY.
        let tmp = TestDir::new("sev-file");
        let dev = tmp.file("sev-guest", b"");
        let err = SevGuest::new(&dev).evidence(&[0; 64]).unwrap_err();
        match &err {
            TeeError::SnpGuestRequest {
                path,
                op: "SNP_GET_REPORT",
                source,
                fw_error: 0,
                vmm_error: 0,
            } => {
                assert_eq!(path, &dev);
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_extended_request_on_something_that_is_not_sev_guest_fails_naming_it() {
        // SNP_GET_EXT_REPORT on a regular file: ENOTTY, an error naming the extended request
        // (no silent fallback that would hide why it failed).
        let tmp = TestDir::new("sev-ext-file");
        let dev = tmp.file("sev-guest", b"");
        let err = SevGuest::new(&dev).evidence_bundle(&[0; 64]).unwrap_err();
        match &err {
            TeeError::SnpGuestRequest {
                path,
                op: "SNP_GET_EXT_REPORT",
                source,
                ..
            } => {
                assert_eq!(path, &dev);
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("unexpected error {other}"),
        }
        let absent = tmp.path().join("absent");
        let err = SevGuest::new(&absent)
            .evidence_bundle(&[0; 64])
            .unwrap_err();
        assert!(matches!(&err, TeeError::Access { op: "open", .. }), "{err}");
    }

    const KEY_REQ: DerivedKeyRequest = DerivedKeyRequest {
        root_key: RootKey::Vcek,
        guest_field_select: guest_field::GUEST_POLICY | guest_field::MEASUREMENT,
        vmpl: 0,
        guest_svn: 0,
        tcb_version: 0,
    };

    fn key_response(status: u32, key: &[u8; 32]) -> [u8; 64] {
        let mut resp = [0u8; 64];
        resp[0..4].copy_from_slice(&status.to_le_bytes());
        resp[DERIVED_KEY_OFFSET..DERIVED_KEY_OFFSET + 32].copy_from_slice(key);
        resp
    }

    #[test]
    fn derived_key_structs_match_linux_sev_guest_h() {
        assert_eq!(size_of::<SnpDerivedKeyReq>(), 32);
        assert_eq!(offset_of!(SnpDerivedKeyReq, root_key_select), 0);
        assert_eq!(offset_of!(SnpDerivedKeyReq, rsvd), 4);
        assert_eq!(offset_of!(SnpDerivedKeyReq, guest_field_select), 8);
        assert_eq!(offset_of!(SnpDerivedKeyReq, vmpl), 16);
        assert_eq!(offset_of!(SnpDerivedKeyReq, guest_svn), 20);
        assert_eq!(offset_of!(SnpDerivedKeyReq, tcb_version), 24);
        assert_eq!(size_of::<SnpDerivedKeyResp>(), 64);
        // _IOWR('S', 1, 32).
        assert_eq!(SNP_GET_DERIVED_KEY, 0xC020_5301);
    }

    #[test]
    fn derived_key_request_carries_every_field() {
        let req = derived_key_request(&DerivedKeyRequest {
            root_key: RootKey::Vmrk,
            guest_field_select: guest_field::KNOWN,
            vmpl: 1,
            guest_svn: 7,
            tcb_version: 0x1122_3344_5566_7788,
        });
        assert_eq!(req.root_key_select, 1);
        assert_eq!(req.rsvd, 0);
        assert_eq!(req.guest_field_select, 0x3f);
        assert_eq!((req.vmpl, req.guest_svn), (1, 7));
        assert_eq!(req.tcb_version, 0x1122_3344_5566_7788);
        let req = derived_key_request(&KEY_REQ);
        assert_eq!(req.root_key_select, 0);
        assert_eq!(req.guest_field_select, 0b1001);
        // The bits the spec gives (MSG_KEY_REQ GUEST_FIELD_SELECT).
        assert_eq!(
            [
                guest_field::GUEST_POLICY,
                guest_field::IMAGE_ID,
                guest_field::FAMILY_ID,
                guest_field::MEASUREMENT,
                guest_field::GUEST_SVN,
                guest_field::TCB_VERSION
            ],
            [1, 2, 4, 8, 16, 32]
        );
    }

    #[test]
    fn derived_key_is_taken_from_offset_32_of_the_response() {
        let key: [u8; 32] = std::array::from_fn(|i| 0xA0 ^ i as u8);
        let resp = key_response(0, &key);
        assert_eq!(
            *parse_derived_key_response(Path::new(DEV), &resp).unwrap(),
            key
        );
    }

    #[test]
    fn derived_key_firmware_status_and_short_responses_are_errors() {
        let err =
            parse_derived_key_response(Path::new(DEV), &key_response(0x16, &[1; 32])).unwrap_err();
        assert!(
            matches!(err, TeeError::SnpDerivedKeyStatus { status: 0x16, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(DEV) && msg.contains("0x16"), "{msg}");
        let resp = key_response(0, &[1; 32]);
        for cut in [0, 3, 4, 0x20, 0x3f] {
            let err = parse_derived_key_response(Path::new(DEV), &resp[..cut]).unwrap_err();
            assert!(matches!(err, TeeError::Malformed { .. }), "{err}");
        }
    }

    #[test]
    fn unknown_guest_field_bits_are_refused_before_the_device_is_opened() {
        let tmp = TestDir::new("sev-bits");
        let dev = tmp.path().join("absent");
        let req = DerivedKeyRequest {
            guest_field_select: 1 << 6,
            ..KEY_REQ
        };
        let err = SevGuest::new(&dev).derived_key(&req).unwrap_err();
        assert!(matches!(err, TeeError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("0x40"), "{err}");
    }

    #[test]
    fn derived_key_from_an_absent_device_is_named() {
        let tmp = TestDir::new("sev-key-absent");
        let dev = tmp.path().join("dev/sev-guest");
        let err = SevGuest::new(&dev).derived_key(&KEY_REQ).unwrap_err();
        assert!(
            matches!(&err, TeeError::Access { op: "open", path, .. } if path == &dev),
            "{err}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn derived_key_ioctl_on_something_that_is_not_sev_guest_fails_cleanly() {
        let tmp = TestDir::new("sev-key-file");
        let dev = tmp.file("sev-guest", b"");
        let err = SevGuest::new(&dev).derived_key(&KEY_REQ).unwrap_err();
        match &err {
            TeeError::SnpGuestRequest {
                path,
                op: "SNP_GET_DERIVED_KEY",
                source,
                fw_error: 0,
                vmm_error: 0,
            } => {
                assert_eq!(path, &dev);
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains("SNP_GET_DERIVED_KEY"), "{err}");
    }
}
