//! The SNP launch digest checked byte for byte against an independent implementation,
//! sev-snp-measure 0.0.13 (PyPI), on Debian's OVMF builds (ovmf 2025.02-8+deb13u1's OVMF.fd,
//! ovmf-amdsev 2026.08+ds-2's OVMF.amdsev.fd) and on synthetic images written to files, for
//! several vCPU counts and types, guest features, and kernel/initrd/command line combinations.
//!
//! The references come from scripts/fetch-snp-measure-refs.sh (PyPI and Debian's archive, hash
//! checked, cached in the temp directory). This test fetches them and never skips: when the
//! fetch fails, the test fails saying what failed.

mod common;

use common::Synth;
use cordon_measure::snp::{
    launch_digest, vmsa_page, KernelHashes, OvmfImage, SnpError, SnpLaunch, VcpuType,
    BSP_RESET_EIP, DEFAULT_GUEST_FEATURES,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// Bump with the pins in scripts/fetch-snp-measure-refs.sh.
const REFS_DIR: &str = "cordon-snp-measure-refs-ssm0.0.13-ovmf2025.02-8+deb13u1-amdsev2026.08+ds-2";

struct Refs {
    sev_snp_measure: PathBuf,
    ovmf: PathBuf,
    ovmf_amdsev: PathBuf,
}

fn refs() -> &'static Refs {
    static REFS: OnceLock<Refs> = OnceLock::new();
    REFS.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-snp-measure-refs.sh");
        let out = std::env::temp_dir().join(REFS_DIR);
        let o = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
        assert!(
            o.status.success(),
            "fetching the sev-snp-measure references failed ({}; {} {}): {}",
            o.status,
            script.display(),
            out.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        let get = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("the fetch script printed no {name}= line: {stdout}"))
        };
        Refs {
            sev_snp_measure: get("sev-snp-measure"),
            ovmf: get("ovmf"),
            ovmf_amdsev: get("ovmf-amdsev"),
        }
    })
}

#[derive(Clone, Debug)]
struct Case {
    ovmf: PathBuf,
    vcpus: u32,
    vcpu_type: VcpuType,
    /// `None`: leave sev-snp-measure at its default (0x1) and use ours.
    features: Option<u64>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
}

impl Case {
    fn new(ovmf: &Path, vcpus: u32, vcpu_type: VcpuType) -> Case {
        Case {
            ovmf: ovmf.to_path_buf(),
            vcpus,
            vcpu_type,
            features: None,
            kernel: None,
            initrd: None,
            append: None,
        }
    }

    fn ours(&self) -> Result<[u8; 48], SnpError> {
        let firmware = std::fs::read(&self.ovmf).unwrap();
        let kernel = self.kernel.as_ref().map(|k| {
            let initrd = self.initrd.as_ref().map(|i| std::fs::read(i).unwrap());
            KernelHashes::from_contents(
                &std::fs::read(k).unwrap(),
                initrd.as_deref(),
                self.append.as_deref(),
            )
        });
        launch_digest(&SnpLaunch {
            firmware: &firmware,
            kernel,
            vcpus: self.vcpus,
            vcpu_type: self.vcpu_type,
            guest_features: self.features.unwrap_or(DEFAULT_GUEST_FEATURES),
        })
    }

    /// sev-snp-measure's answer: Ok(hex) or Err(stderr).
    fn theirs(&self, cwd: &Path) -> Result<String, String> {
        let mut c = Command::new(&refs().sev_snp_measure);
        c.current_dir(cwd)
            .args(["--mode", "snp", "--vcpus", &self.vcpus.to_string()])
            .args(["--vcpu-type", self.vcpu_type.name()])
            .arg("--ovmf")
            .arg(&self.ovmf);
        if let Some(f) = self.features {
            c.args(["--guest-features", &format!("{f:#x}")]);
        }
        if let Some(k) = &self.kernel {
            c.arg("--kernel").arg(k);
        }
        if let Some(i) = &self.initrd {
            c.arg("--initrd").arg(i);
        }
        if let Some(a) = &self.append {
            c.args(["--append", a]);
        }
        let o = c.output().expect("running sev-snp-measure");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }
}

/// Runs every case through both implementations (four sev-snp-measure processes at a time) and
/// fails listing every disagreement.
fn compare(cases: &[Case]) {
    let cwd = tempfile::tempdir().unwrap();
    let mut mismatches = Vec::new();
    for chunk in cases.chunks(4) {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|case| s.spawn(|| (case.ours(), case.theirs(cwd.path()))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (case, (ours, theirs)) in chunk.iter().zip(results) {
            match (&ours, &theirs) {
                (Ok(o), Ok(t)) if hex::encode(o) == *t => {}
                _ => mismatches.push(format!(
                    "{case:?}\n  ours:   {ours:?}\n  theirs: {theirs:?}"
                )),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

struct Blobs {
    _dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn blobs() -> Blobs {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&kernel, common::filler(150_001, 7)).unwrap();
    std::fs::write(&initrd, common::filler(70_003, 8)).unwrap();
    Blobs {
        _dir: dir,
        kernel,
        initrd,
    }
}

const VCPU_COUNTS: [u32; 5] = [1, 2, 4, 16, 64];
const SOME_TYPES: [VcpuType; 5] = [
    VcpuType::Epyc,
    VcpuType::EpycRome,
    VcpuType::EpycMilan,
    VcpuType::EpycGenoaV1,
    VcpuType::EpycTurin,
];

/// Counts × a few types, every type at one count, and non-default guest features.
fn firmware_cases(ovmf: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for vcpus in VCPU_COUNTS {
        cases.push(Case::new(ovmf, vcpus, VcpuType::EpycMilan));
    }
    for t in VcpuType::ALL {
        cases.push(Case::new(ovmf, 2, t));
    }
    for (vcpus, t, f) in [
        (1, VcpuType::EpycGenoa, 0x21),
        (4, VcpuType::EpycMilan, 0x21),
        (16, VcpuType::EpycRomeV2, 0x3),
        (64, VcpuType::EpycTurin, 0x1_0021),
        (4, VcpuType::EpycMilan, 0x1),
    ] {
        let mut c = Case::new(ovmf, vcpus, t);
        c.features = Some(f);
        cases.push(c);
    }
    cases
}

/// Kernel, initrd and command line in every combination sev-snp-measure accepts.
fn kernel_cases(ovmf: &Path, b: &Blobs) -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, (initrd, append)) in [
        (false, None),
        (true, None),
        (false, Some("console=ttyS0 root=/dev/vda1")),
        (true, Some("console=ttyS0 earlyprintk=serial ünïcödé")),
        (true, Some("")),
    ]
    .into_iter()
    .enumerate()
    {
        let vcpus = VCPU_COUNTS[i % VCPU_COUNTS.len()];
        let mut c = Case::new(ovmf, vcpus, SOME_TYPES[i % SOME_TYPES.len()]);
        c.kernel = Some(b.kernel.clone());
        c.initrd = initrd.then(|| b.initrd.clone());
        c.append = append.map(str::to_string);
        if i == 3 {
            c.features = Some(0x21);
        }
        cases.push(c);
    }
    cases
}

#[test]
fn debian_ovmf_fd() {
    let ovmf = &refs().ovmf;
    let image = std::fs::read(ovmf).unwrap();
    let parsed = OvmfImage::parse(&image).unwrap();
    assert!(
        parsed.hashes_table().is_none(),
        "OVMF.fd has no hashes table"
    );
    assert!(parsed.sections().len() >= 5);
    compare(&firmware_cases(ovmf));

    // A kernel needs the hashes table: both implementations refuse.
    let b = blobs();
    let mut c = Case::new(ovmf, 4, VcpuType::EpycMilan);
    c.kernel = Some(b.kernel.clone());
    assert_eq!(c.ours(), Err(SnpError::NoKernelHashesSection));
    let theirs = c.theirs(b._dir.path()).unwrap_err();
    assert!(theirs.contains("SNP_KERNEL_HASHES"), "{theirs}");

    // The figure for docs/measure.md: one digest of this image with 64 vCPUs.
    let start = Instant::now();
    let d = launch_digest(&SnpLaunch {
        firmware: &image,
        kernel: None,
        vcpus: 64,
        vcpu_type: VcpuType::EpycMilan,
        guest_features: DEFAULT_GUEST_FEATURES,
    })
    .unwrap();
    eprintln!(
        "launch digest of Debian OVMF.fd ({} KiB), 64 vCPUs: {:?} ({})",
        image.len() / 1024,
        start.elapsed(),
        hex::encode(d)
    );
}

#[test]
fn debian_ovmf_amdsev_fd() {
    let ovmf = &refs().ovmf_amdsev;
    let image = std::fs::read(ovmf).unwrap();
    assert!(OvmfImage::parse(&image).unwrap().hashes_table().is_some());
    let b = blobs();
    let mut cases = firmware_cases(ovmf);
    cases.extend(kernel_cases(ovmf, &b));
    compare(&cases);
}

#[test]
fn synthetic_images() {
    let dir = tempfile::tempdir().unwrap();
    let b = blobs();
    let mut cases = Vec::new();
    // The default synthetic image, one with another order, an SVSM_CAA-less layout and another
    // AP reset vector, and one without a hashes table.
    let mut other = Synth::new();
    other.pages = 200;
    other.seed = 99;
    other.sections.swap(0, 4);
    other.sections.retain(|s| s.2 != common::SVSM_CAA);
    other.set_entry(
        cordon_measure::snp::SEV_ES_RESET_BLOCK_GUID,
        common::u32s(&[0x0080_C104]),
    );
    other.set_entry(
        cordon_measure::snp::SEV_HASH_TABLE_RV_GUID,
        common::u32s(&[0x0080_9010, 0x200]),
    );
    for (name, synth) in [
        ("synth-a.fd", Synth::new()),
        ("synth-b.fd", other),
        ("synth-c.fd", Synth::without_hashes_table()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, synth.build()).unwrap();
        for vcpus in VCPU_COUNTS {
            cases.push(Case::new(&path, vcpus, SOME_TYPES[vcpus as usize % 5]));
        }
        let mut c = Case::new(&path, 3, VcpuType::EpycGenoa);
        c.features = Some(0x21);
        cases.push(c);
        if name != "synth-c.fd" {
            cases.extend(kernel_cases(&path, &b));
        }
    }
    compare(&cases);
}

/// The VMSA pages themselves, against sev-snp-measure's `--dump-vmsa`.
#[test]
fn vmsa_pages_match_dumped_ones() {
    let ovmf = &refs().ovmf_amdsev;
    let image = std::fs::read(ovmf).unwrap();
    let ap_eip = OvmfImage::parse(&image).unwrap().ap_reset_eip();
    let cwd = tempfile::tempdir().unwrap();
    let o = Command::new(&refs().sev_snp_measure)
        .current_dir(cwd.path())
        .args(["--mode", "snp", "--vcpus", "2", "--vcpu-type", "EPYC-Genoa"])
        .args(["--guest-features", "0x21", "--dump-vmsa", "--ovmf"])
        .arg(ovmf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sig = VcpuType::EpycGenoa.signature();
    let bsp = std::fs::read(cwd.path().join("vmsa0.bin")).unwrap();
    let ap = std::fs::read(cwd.path().join("vmsa1.bin")).unwrap();
    assert_eq!(&bsp[..], &vmsa_page(BSP_RESET_EIP, 0x21, sig)[..]);
    assert_eq!(&ap[..], &vmsa_page(ap_eip, 0x21, sig)[..]);
    assert_ne!(bsp, ap);
}
