//! The initial VMSA (VM save area) page of each vCPU, as QEMU and KVM launch an SEV-SNP guest,
//! and the vCPU types whose CPUID signature QEMU puts in RDX.
//!
//! Layout: AMD64 Architecture Programmer's Manual Vol. 2 (pub. 24593), Appendix B, Table B-4
//! "VMSA Layout, State Save Area for SEV-ES" (segment registers as in Table B-2's VMCB segment
//! format: selector `u16`, attributes `u16`, limit `u32`, base `u64`). Register values: the x86
//! reset state (APM Vol. 2 §14.1.3, Table 14-1) with what KVM sets on top (EFER.SVME, CR4.MCE)
//! and QEMU's x87/SSE reset values (FCW 0x37F, MXCSR 0x1F80). Every other byte is zero.

use std::fmt;
use std::str::FromStr;

use super::PAGE_SIZE;

/// The BSP starts at the architectural reset vector.
pub const BSP_RESET_EIP: u32 = 0xFFFF_FFF0;

// Table B-4 offsets of the fields that are nonzero at launch.
const ES: usize = 0x000;
const CS: usize = 0x010;
const SS: usize = 0x020;
const DS: usize = 0x030;
const FS: usize = 0x040;
const GS: usize = 0x050;
const GDTR: usize = 0x060;
const LDTR: usize = 0x070;
const IDTR: usize = 0x080;
const TR: usize = 0x090;
const EFER: usize = 0x0D0;
const CR4: usize = 0x148;
const CR0: usize = 0x158;
const DR7: usize = 0x160;
const DR6: usize = 0x168;
const RFLAGS: usize = 0x170;
const RIP: usize = 0x178;
const G_PAT: usize = 0x268;
const RDX: usize = 0x310;
const SEV_FEATURES: usize = 0x3B0;
const XCR0: usize = 0x3E8;
const MXCSR: usize = 0x408;
const X87_FCW: usize = 0x410;

/// Code segment attributes at reset (present, code, readable, accessed), and the data, TR and
/// LDTR attributes, as KVM/QEMU encode them in the VMCB attribute format.
const CS_ATTR: u16 = 0x9B;
const DATA_ATTR: u16 = 0x93;
const LDTR_ATTR: u16 = 0x82;
const TR_ATTR: u16 = 0x8B;
/// PAT MSR reset value (APM Vol. 2 §A.3).
const PAT_RESET: u64 = 0x0007_0406_0007_0406;

fn put(page: &mut [u8; PAGE_SIZE], at: usize, bytes: &[u8]) {
    // Offsets are the constants above, all well inside the page.
    if let Some(dst) = page.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn segment(page: &mut [u8; PAGE_SIZE], at: usize, selector: u16, attrib: u16, base: u64) {
    put(page, at, &selector.to_le_bytes());
    put(page, at + 2, &attrib.to_le_bytes());
    put(page, at + 4, &0xFFFFu32.to_le_bytes());
    put(page, at + 8, &base.to_le_bytes());
}

/// The VMSA page of a vCPU that starts at `eip` (real mode: CS base is the upper half, RIP the
/// lower half), with `sev_features` and the CPUID signature `vcpu_sig` in RDX.
pub fn vmsa_page(eip: u32, sev_features: u64, vcpu_sig: u32) -> Box<[u8; PAGE_SIZE]> {
    let mut page = Box::new([0u8; PAGE_SIZE]);
    let p = &mut *page;
    segment(p, ES, 0, DATA_ATTR, 0);
    segment(p, CS, 0xF000, CS_ATTR, u64::from(eip & 0xFFFF_0000));
    segment(p, SS, 0, DATA_ATTR, 0);
    segment(p, DS, 0, DATA_ATTR, 0);
    segment(p, FS, 0, DATA_ATTR, 0);
    segment(p, GS, 0, DATA_ATTR, 0);
    segment(p, GDTR, 0, 0, 0);
    segment(p, LDTR, 0, LDTR_ATTR, 0);
    segment(p, IDTR, 0, 0, 0);
    segment(p, TR, 0, TR_ATTR, 0);
    put(p, EFER, &0x1000u64.to_le_bytes()); // EFER.SVME, set by KVM
    put(p, CR4, &0x40u64.to_le_bytes()); // CR4.MCE, set by KVM
    put(p, CR0, &0x10u64.to_le_bytes()); // CR0.ET
    put(p, DR7, &0x400u64.to_le_bytes());
    put(p, DR6, &0xFFFF_0FF0u64.to_le_bytes());
    put(p, RFLAGS, &0x2u64.to_le_bytes());
    put(p, RIP, &u64::from(eip & 0xFFFF).to_le_bytes());
    put(p, G_PAT, &PAT_RESET.to_le_bytes());
    put(p, RDX, &u64::from(vcpu_sig).to_le_bytes());
    put(p, SEV_FEATURES, &sev_features.to_le_bytes());
    put(p, XCR0, &0x1u64.to_le_bytes());
    put(p, MXCSR, &0x1F80u32.to_le_bytes());
    put(p, X87_FCW, &0x37Fu16.to_le_bytes());
    page
}

/// The CPUID Fn0000_0001_EAX signature of a family, model and stepping (AMD CPUID Specification,
/// pub. 25481: BaseFamily is 0xF and ExtFamily the rest when the family is above 0xF).
pub const fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (base_family, ext_family) = if family > 0xF {
        (0xF, (family - 0xF) & 0xFF)
    } else {
        (family, 0)
    };
    (ext_family << 20)
        | (((model >> 4) & 0xF) << 16)
        | (base_family << 8)
        | ((model & 0xF) << 4)
        | (stepping & 0xF)
}

/// A QEMU vCPU model (`-cpu NAME`) of an AMD EPYC generation: the ones sev-snp-measure 0.0.13
/// knows, with the family, model and stepping QEMU's `builtin_x86_defs` give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VcpuType {
    Epyc,
    EpycV1,
    EpycV2,
    EpycIbpb,
    EpycV3,
    EpycV4,
    EpycRome,
    EpycRomeV1,
    EpycRomeV2,
    EpycRomeV3,
    EpycMilan,
    EpycMilanV1,
    EpycMilanV2,
    EpycGenoa,
    EpycGenoaV1,
    EpycTurin,
}

impl VcpuType {
    /// Every type, in the order of QEMU's model list.
    pub const ALL: [VcpuType; 16] = [
        VcpuType::Epyc,
        VcpuType::EpycV1,
        VcpuType::EpycV2,
        VcpuType::EpycIbpb,
        VcpuType::EpycV3,
        VcpuType::EpycV4,
        VcpuType::EpycRome,
        VcpuType::EpycRomeV1,
        VcpuType::EpycRomeV2,
        VcpuType::EpycRomeV3,
        VcpuType::EpycMilan,
        VcpuType::EpycMilanV1,
        VcpuType::EpycMilanV2,
        VcpuType::EpycGenoa,
        VcpuType::EpycGenoaV1,
        VcpuType::EpycTurin,
    ];

    /// QEMU's name for it.
    pub fn name(self) -> &'static str {
        match self {
            VcpuType::Epyc => "EPYC",
            VcpuType::EpycV1 => "EPYC-v1",
            VcpuType::EpycV2 => "EPYC-v2",
            VcpuType::EpycIbpb => "EPYC-IBPB",
            VcpuType::EpycV3 => "EPYC-v3",
            VcpuType::EpycV4 => "EPYC-v4",
            VcpuType::EpycRome => "EPYC-Rome",
            VcpuType::EpycRomeV1 => "EPYC-Rome-v1",
            VcpuType::EpycRomeV2 => "EPYC-Rome-v2",
            VcpuType::EpycRomeV3 => "EPYC-Rome-v3",
            VcpuType::EpycMilan => "EPYC-Milan",
            VcpuType::EpycMilanV1 => "EPYC-Milan-v1",
            VcpuType::EpycMilanV2 => "EPYC-Milan-v2",
            VcpuType::EpycGenoa => "EPYC-Genoa",
            VcpuType::EpycGenoaV1 => "EPYC-Genoa-v1",
            VcpuType::EpycTurin => "EPYC-Turin",
        }
    }

    /// Family, model and stepping.
    pub fn family_model_stepping(self) -> (u32, u32, u32) {
        match self {
            VcpuType::Epyc
            | VcpuType::EpycV1
            | VcpuType::EpycV2
            | VcpuType::EpycIbpb
            | VcpuType::EpycV3
            | VcpuType::EpycV4 => (23, 1, 2),
            VcpuType::EpycRome
            | VcpuType::EpycRomeV1
            | VcpuType::EpycRomeV2
            | VcpuType::EpycRomeV3 => (23, 49, 0),
            VcpuType::EpycMilan | VcpuType::EpycMilanV1 | VcpuType::EpycMilanV2 => (25, 1, 1),
            VcpuType::EpycGenoa | VcpuType::EpycGenoaV1 => (25, 17, 0),
            VcpuType::EpycTurin => (26, 0, 0),
        }
    }

    /// The CPUID signature QEMU puts in the vCPUs' RDX at reset.
    pub fn signature(self) -> u32 {
        let (f, m, s) = self.family_model_stepping();
        cpu_signature(f, m, s)
    }
}

impl fmt::Display for VcpuType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A vCPU type name that is not one of [`VcpuType::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown vCPU type {given:?}; known: {}", VcpuType::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownVcpuType {
    /// What was given.
    pub given: String,
}

impl FromStr for VcpuType {
    type Err = UnknownVcpuType;

    /// QEMU's name, exactly (QEMU's `-cpu` is case sensitive too).
    fn from_str(s: &str) -> Result<VcpuType, UnknownVcpuType> {
        VcpuType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownVcpuType {
                given: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_cpuid_fn1_eax() {
        // Milan: family 0x19 = 0xF + 0xA, model 0x01, stepping 1.
        assert_eq!(VcpuType::EpycMilan.signature(), 0x00A0_0F11);
        // Rome: family 0x17, model 0x31.
        assert_eq!(VcpuType::EpycRome.signature(), 0x0083_0F10);
        // Genoa: family 0x19, model 0x11.
        assert_eq!(VcpuType::EpycGenoa.signature(), 0x00A1_0F10);
        assert_eq!(VcpuType::EpycTurin.signature(), 0x00B0_0F00);
        // A pre-0xF family keeps ExtFamily 0.
        assert_eq!(cpu_signature(6, 0x55, 4), 0x0005_0654);
    }

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        for t in VcpuType::ALL {
            assert_eq!(t.name().parse::<VcpuType>(), Ok(t));
        }
        let err = "epyc-milan".parse::<VcpuType>().unwrap_err();
        assert!(err.to_string().contains("EPYC-Milan-v2"), "{err}");
    }

    #[test]
    fn vmsa_fields_at_table_b4_offsets() {
        let p = vmsa_page(0x0080_B004, 0x1, 0x00A0_0F11);
        // CS: selector 0xF000, attributes 0x9B, limit 0xFFFF, base = upper half of EIP.
        assert_eq!(
            &p[0x10..0x20],
            &[0x00, 0xF0, 0x9B, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            u64::from_le_bytes(p[RIP..RIP + 8].try_into().unwrap()),
            0xB004
        );
        assert_eq!(
            u64::from_le_bytes(p[RDX..RDX + 8].try_into().unwrap()),
            0x00A0_0F11
        );
        assert_eq!(
            u64::from_le_bytes(p[SEV_FEATURES..SEV_FEATURES + 8].try_into().unwrap()),
            1
        );
        // Nothing past the x87 control word is set.
        assert!(p[X87_FCW + 2..].iter().all(|&b| b == 0));
        let bsp = vmsa_page(BSP_RESET_EIP, 0x1, 0x00A0_0F11);
        assert_eq!(
            u64::from_le_bytes(bsp[RIP..RIP + 8].try_into().unwrap()),
            0xFFF0
        );
        assert_eq!(
            u64::from_le_bytes(bsp[CS + 8..CS + 16].try_into().unwrap()),
            0xFFFF_0000
        );
    }
}
