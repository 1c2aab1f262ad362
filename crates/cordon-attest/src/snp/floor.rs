//! The default minimum TCB of SEV-SNP reports, per product line (and, for microcode, per CPU stepping).
//!
//! AMD publishes no "up to date" verdict for SNP as Intel does for DCAP: a verifier must compare the
//! report's REPORTED_TCB (the TCB its VCEK certifies) with floors taken from AMD's security bulletins.
//! Without a floor, a host running firmware or microcode with a known SEV-SNP break (AMD-SB-3019,
//! EntrySign: the host loads its own microcode; AMD-SB-3020, RMP initialisation: the host writes the
//! guest's RMP before launch) still gets keys released. [`crate::appraise`] applies these floors to
//! every SNP report unless the policy says `min_tcb_floor = "none"`; a policy's `[min_tcb]` may raise
//! any component above them (see the module documentation of the policy).
//!
//! The values and where they come from:
//!
//! | line | component | floor | source |
//! |---|---|---|---|
//! | all | snp (SNP firmware SPL) | Milan 0x1B, Genoa 0x1B, Turin 0x04 | AMD-SB-3020 (CVE-2025-0033); the same values gate SEV-ES in Linux (AMD-SB-3023) |
//! | Milan | bootloader | 4 | GCP-2025-007 (Google's bulletin for AMD-SB-3019) |
//! | all | microcode | per stepping, below | AMD-SB-3020 |
//! | all | tee, fmc; Genoa/Turin bootloader | none | no public minimum found (see [`DEFAULT_FLOORS`]) |
//!
//! These floors must track AMD's bulletins: raise them (and the date below) when AMD raises its own
//! (AMD-SB-3027, CVE-2025-29943, which needs an SMT sibling, already asks for Turin microcode 0x51;
//! its Genoa values equal the ones below). Values read in 2026-12 from the sources named next to each;
//! amd.com itself could not be reached from the build machine, so the AMD-SB-3020 values come from the
//! copies described at the `SB_3020` constant below and should be checked against the bulletin before
//! a release.

use super::Product;

/// One component's default minimum and the public source of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorValue {
    /// A key of `claims.tcb.components`: `bootloader`, `tee`, `snp`, `microcode`, `fmc`.
    pub component: &'static str,
    pub minimum: u64,
    /// The bulletin (or other public source) the value comes from, as named in failure messages.
    pub source: &'static str,
}

/// A microcode floor for one CPU family/model/stepping (the report's CPUID_FAM_ID, CPUID_MOD_ID,
/// CPUID_STEP, version 3 and later). The microcode TCB component is the low byte of the microcode
/// patch level (AMD-SB-3027's "TCB value for attestation" column), so it is comparable only within
/// one stepping: Milan-X (stepping 2) numbers its patches from 0x4x while Milan (stepping 1) is at
/// 0xDx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicrocodeFloor {
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
    pub minimum: u64,
    /// Which part this is, for failure messages.
    pub part: &'static str,
}

/// The floors of one product line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductFloor {
    pub product: Product,
    /// Component floors that do not depend on the stepping.
    pub components: &'static [FloorValue],
    /// Microcode floors per stepping. A report whose stepping is not listed (or a version 2 report,
    /// which carries no CPUID) gets the highest of them: fail closed, lowered only by the policy.
    pub microcode: &'static [MicrocodeFloor],
    pub microcode_source: &'static str,
}

/// AMD-SB-3020, "AMD SEV-SNP RMP initialization vulnerability" (CVE-2025-0033),
/// <https://www.amd.com/en/resources/product-security/bulletin/amd-sb-3020.html>. Its tables give,
/// per line, the SEV firmware with the fix and its SNP SPL, and the microcode patch of each stepping.
/// The SPL values (Milan and Genoa 0x1B, Turin 0x04) are also those that Linux's
/// `drivers/crypto/ccp/sev-dev.c` (`sev_firmware_allows_es`, "Documented in AMD-SB-3023", reviewed by
/// AMD) uses to tell the fixed SEV firmware of Zen 3/Zen 4 (0x1b) and Zen 5 (0x4) apart. The
/// microcode values are from third-party transcriptions of the bulletin's table (two independent
/// ones agree for Genoa and Turin; Milan's was found in one only, and is consistent with Google's
/// AMD-SB-3019 minimum of 219 = 0xDB, which it exceeds). We could not fetch amd.com from here.
const SB_3020: &str = "AMD-SB-3020 (CVE-2025-0033)";
/// Google Cloud security bulletin GCP-2025-007 (2025-02-03), for AMD-SB-3019 (CVE-2024-56161,
/// EntrySign) on Google's SEV-SNP Confidential VMs (Milan): "psp_bootloader_version: 4,
/// snp_firmware_version: 24 (0x18), microcode_version: 219". <https://cloud.google.com/support/bulletins>
const GCP_2025_007: &str = "AMD-SB-3019 as published in Google's GCP-2025-007";

/// The default floors. Components not listed have no default floor: for `tee` (PSP OS SVN) and `fmc`
/// (Turin), and for the Genoa and Turin `bootloader`, no AMD bulletin we found names a minimum (AMD
/// states its SEV-SNP fixes as an SNP SPL and a microcode level); choosing a number here would be a
/// guess that could refuse patched platforms, while the SNP SPL floor already requires the SEV
/// firmware release that carries the fixed bootloader and OS. A policy can add them with `[min_tcb]`.
pub const DEFAULT_FLOORS: &[ProductFloor] = &[
    ProductFloor {
        product: Product::Milan,
        components: &[
            FloorValue {
                component: "snp",
                minimum: 0x1B,
                source: SB_3020,
            },
            FloorValue {
                component: "bootloader",
                minimum: 4,
                source: GCP_2025_007,
            },
        ],
        microcode: &[
            // Milan B1, patch 0x0A0011DE.
            MicrocodeFloor {
                family: 0x19,
                model: 0x01,
                stepping: 1,
                minimum: 0xDE,
                part: "Milan (19h/01h/1)",
            },
            // Milan-X B2, patch 0x0A001245.
            MicrocodeFloor {
                family: 0x19,
                model: 0x01,
                stepping: 2,
                minimum: 0x45,
                part: "Milan-X (19h/01h/2)",
            },
        ],
        microcode_source: SB_3020,
    },
    ProductFloor {
        product: Product::Genoa,
        components: &[FloorValue {
            component: "snp",
            minimum: 0x1B,
            source: SB_3020,
        }],
        microcode: &[
            // Genoa B1, patch 0x0A101156.
            MicrocodeFloor {
                family: 0x19,
                model: 0x11,
                stepping: 1,
                minimum: 0x56,
                part: "Genoa (19h/11h/1)",
            },
            // Genoa-X B2, patch 0x0A101251.
            MicrocodeFloor {
                family: 0x19,
                model: 0x11,
                stepping: 2,
                minimum: 0x51,
                part: "Genoa-X (19h/11h/2)",
            },
            // Bergamo and Siena (family 19h model A0h) are certified by Genoa VCEKs.
            MicrocodeFloor {
                family: 0x19,
                model: 0xA0,
                stepping: 2,
                minimum: 0x1B,
                part: "Bergamo/Siena (19h/A0h/2)",
            },
        ],
        microcode_source: SB_3020,
    },
    ProductFloor {
        product: Product::Turin,
        components: &[FloorValue {
            component: "snp",
            minimum: 0x04,
            source: SB_3020,
        }],
        microcode: &[
            // Turin C1, patch 0x0B002150.
            MicrocodeFloor {
                family: 0x1A,
                model: 0x02,
                stepping: 1,
                minimum: 0x50,
                part: "Turin (1Ah/02h/1)",
            },
            // Turin Dense, patch 0x0B10104D.
            MicrocodeFloor {
                family: 0x1A,
                model: 0x11,
                stepping: 0,
                minimum: 0x4D,
                part: "Turin Dense (1Ah/11h/0)",
            },
        ],
        microcode_source: SB_3020,
    },
];

/// The default floor for a report of `product` whose CPUID (family, model, stepping) is `cpuid`
/// (`None` for version 2 reports, or when it is all zero). Microcode: the stepping's floor when the
/// table has it, else the highest floor of the line.
pub fn default_min_tcb(product: Product, cpuid: Option<(u8, u8, u8)>) -> Vec<FloorValue> {
    let Some(line) = DEFAULT_FLOORS.iter().find(|f| f.product == product) else {
        return Vec::new();
    };
    let mut out = line.components.to_vec();
    let stepping = cpuid.and_then(|(family, model, stepping)| {
        line.microcode
            .iter()
            .find(|m| m.family == family && m.model == model && m.stepping == stepping)
    });
    let microcode = match stepping {
        Some(m) => Some(m.minimum),
        None => line.microcode.iter().map(|m| m.minimum).max(),
    };
    if let Some(minimum) = microcode {
        out.push(FloorValue {
            component: "microcode",
            minimum,
            source: line.microcode_source,
        });
    }
    out
}

/// A product line by the name verification puts in `claims.raw["product"]`.
pub fn product_by_name(name: &str) -> Option<Product> {
    [Product::Milan, Product::Genoa, Product::Turin]
        .into_iter()
        .find(|p| p.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_has_an_spl_and_a_microcode_floor() {
        for p in [Product::Milan, Product::Genoa, Product::Turin] {
            let f = default_min_tcb(p, None);
            assert!(
                f.iter().any(|v| v.component == "snp" && v.minimum > 0),
                "{p:?}"
            );
            assert!(
                f.iter()
                    .any(|v| v.component == "microcode" && v.minimum > 0),
                "{p:?}"
            );
            assert_eq!(product_by_name(p.name()), Some(p));
        }
    }

    #[test]
    fn microcode_floor_follows_the_stepping_and_fails_closed_without_one() {
        let mc = |p, cpuid| {
            default_min_tcb(p, cpuid)
                .into_iter()
                .find(|v| v.component == "microcode")
                .unwrap()
                .minimum
        };
        assert_eq!(mc(Product::Milan, Some((0x19, 0x01, 1))), 0xDE);
        assert_eq!(mc(Product::Milan, Some((0x19, 0x01, 2))), 0x45);
        // No CPUID (a version 2 report) or a stepping the table does not know: the strictest.
        assert_eq!(mc(Product::Milan, None), 0xDE);
        assert_eq!(mc(Product::Genoa, Some((0x19, 0x11, 7))), 0x56);
        assert_eq!(mc(Product::Genoa, Some((0x19, 0xA0, 2))), 0x1B);
        assert_eq!(mc(Product::Turin, None), 0x50);
    }
}
