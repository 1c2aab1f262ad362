//! `cordon measure snp` against sev-snp-measure 0.0.13 on Debian's OVMF images (fetched by
//! scripts/fetch-snp-measure-refs.sh, as crates/cordon-measure/tests/snp_reference.rs does; this
//! test too fails, never skips, when the fetch fails), its JSON, and its refusals.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_cordon");
/// The same directory as cordon-measure's reference test: one fetch serves both.
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
            "fetching the sev-snp-measure references failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
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

fn run(program: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cordon(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["measure", "snp"];
    all.extend_from_slice(args);
    run(Path::new(BIN), &all)
}

fn reference(args: &[&str]) -> String {
    let mut all = vec!["--mode", "snp"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&refs().sev_snp_measure, &all);
    assert_eq!(code, 0, "sev-snp-measure {all:?}: {err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn prints_what_sev_snp_measure_prints() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd");
    std::fs::write(&kernel, vec![0x5Au8; 300_000]).unwrap();
    std::fs::write(&initrd, b"an initrd").unwrap();
    let amdsev = s(&refs().ovmf_amdsev);
    let ovmf = s(&refs().ovmf);
    let cases: Vec<Vec<&str>> = vec![
        vec!["--ovmf", ovmf, "--vcpus", "64", "--vcpu-type", "EPYC-Milan"],
        vec![
            "--ovmf",
            ovmf,
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Rome-v1",
        ],
        vec![
            "--ovmf",
            amdsev,
            "--vcpus",
            "16",
            "--vcpu-type",
            "EPYC-Genoa",
            "--guest-features",
            "0x21",
        ],
        vec![
            "--ovmf",
            amdsev,
            "--kernel",
            s(&kernel),
            "--initrd",
            s(&initrd),
            "--append",
            "console=ttyS0 root=/dev/vda",
            "--vcpus",
            "4",
            "--vcpu-type",
            "EPYC-v4",
        ],
        vec![
            "--ovmf",
            amdsev,
            "--kernel",
            s(&kernel),
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC-Turin",
        ],
    ];
    for args in cases {
        let (code, out, err) = cordon(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        // One line, so that `$(cordon measure snp ...)` is the hex and nothing else.
        assert_eq!(out.lines().count(), 1, "{out}");
        assert_eq!(out.trim_end().len(), 96, "{out}");
        assert_eq!(out, reference(&args), "{args:?}");
    }
    // Hex without 0x is accepted too.
    let (_, with_0x, _) = cordon(&[
        "--ovmf",
        amdsev,
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC",
        "--guest-features",
        "0x21",
    ]);
    let (_, bare, _) = cordon(&[
        "--ovmf",
        amdsev,
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC",
        "--guest-features",
        "21",
    ]);
    assert_eq!(with_0x, bare);
}

#[test]
fn json_names_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel bytes").unwrap();
    let amdsev = s(&refs().ovmf_amdsev);
    let args = [
        "--ovmf",
        amdsev,
        "--kernel",
        s(&kernel),
        "--append",
        "quiet",
        "--vcpus",
        "8",
        "--vcpu-type",
        "EPYC-Milan-v2",
        "--guest-features",
        "0x21",
    ];
    let (code, plain, err) = cordon(&args);
    assert_eq!(code, 0, "{err}");
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let (code, out, err) = cordon(&with_json);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["platform"], "snp");
    assert_eq!(j["vmm"], "qemu");
    assert_eq!(j["launch_measurement"], plain.trim());
    let i = &j["inputs"];
    let firmware = std::fs::read(&refs().ovmf_amdsev).unwrap();
    assert_eq!(i["ovmf"]["sha256"], hex::encode(Sha256::digest(&firmware)));
    assert_eq!(i["ovmf"]["path"], amdsev);
    assert_eq!(
        i["kernel"]["sha256"],
        hex::encode(Sha256::digest(b"kernel bytes"))
    );
    assert_eq!(i["initrd"], serde_json::Value::Null);
    assert_eq!(i["append"], "quiet");
    assert_eq!(i["vcpus"], 8);
    assert_eq!(i["vcpu_type"], "EPYC-Milan-v2");
    assert_eq!(i["vcpu_signature"], "0x00a00f11");
    assert_eq!(i["guest_features"], "0x21");
}

#[test]
fn refusals_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"k").unwrap();
    let absent = dir.path().join("absent.fd");
    let zeros = dir.path().join("zeros.fd");
    std::fs::write(&zeros, vec![0u8; 8192]).unwrap();
    let ovmf = s(&refs().ovmf);
    let base = ["--vcpus", "2", "--vcpu-type", "EPYC-Milan"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // OVMF.fd has no hashes table.
        (
            vec!["--ovmf", ovmf, "--kernel", s(&kernel)],
            "no SNP_KERNEL_HASHES section",
        ),
        (vec!["--ovmf", s(&zeros)], "no OVMF GUID table"),
        (vec!["--ovmf", s(&absent)], "absent.fd"),
        (vec!["--ovmf", ovmf, "--initrd", s(&kernel)], "--kernel"),
        (vec!["--ovmf", ovmf, "--append", "x"], "--kernel"),
    ];
    for (mut args, needle) in cases {
        args.extend_from_slice(&base);
        let (code, out, err) = cordon(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    for (args, needle) in [
        (
            ["--vcpus", "0", "--vcpu-type", "EPYC"],
            "0 vCPUs: the count must be 1 to 4096",
        ),
        (["--vcpus", "5000", "--vcpu-type", "EPYC"], "5000 vCPUs"),
        (
            ["--vcpus", "2", "--vcpu-type", "EPYC-Bergamo"],
            "unknown vCPU type \"EPYC-Bergamo\"",
        ),
        (["--vcpus", "2", "--vcpu-type", "epyc"], "EPYC-Milan-v2"),
    ] {
        let mut all = vec!["--ovmf", ovmf];
        all.extend_from_slice(&args);
        let (code, _, err) = cordon(&all);
        assert_ne!(code, 0, "{all:?}");
        assert!(err.contains(needle), "{all:?}: {err}");
    }
    let (code, _, err) = cordon(&[
        "--ovmf",
        ovmf,
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC",
        "--guest-features",
        "0xZZ",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("not a 64-bit hex number"), "{err}");
}
