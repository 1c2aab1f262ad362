//! The hardware path end to end on an emulated platform: `quickstart` and `dev up` with
//! `--emulate`, the runtime started with `--platform hardware` (configfs-tsm, the vendor's chain and
//! TCB checks, the configuration binding), clients through `infer` and the proxy, and every refusal
//! the sim flow has, tried through the real processes: a production policy, a debug TEE, an old
//! TCB, another launch measurement, expired collateral, another configuration.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `cordon dev up --emulate PLATFORM` in `dir`, kept running; its stdout lines once ready.
fn dev_up(dir: &Path, platform: &str) -> (Proc, Vec<String>) {
    let log = dir.join("dev-up.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(BIN)
        .args(["dev", "up", "--emulate", platform, "--data-dir"])
        .arg(dir.join("deployment"))
        // Free ports: tests run side by side (the defaults are fixed).
        .args(["--kbs-port", "0", "--runtime-port", "0"])
        .env("CORDON_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut dev = Proc::adopt(child, log);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let text = dev.log();
        if text.contains("Ctrl-C stops") {
            return (dev, text.lines().map(String::from).collect());
        }
        if let Some(status) = dev.child.try_wait().unwrap() {
            panic!("dev up exited with {status}:\n{text}");
        }
        assert!(Instant::now() < deadline, "dev up not ready:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn field(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{}", lines.join("\n")))
        .trim()
        .to_string()
}

/// Copies the emulated platform's state (same keys, so the same root) to `to`.
fn copy_platform(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Launches a copy of the deployment's emulated platform with `flags` and starts a second runtime
/// on it with the deployment's configuration: Ok(url) if it came up, Err(its log) if not.
fn runtime_on_launch(
    dir: &Path,
    deployment: &Path,
    platform: &str,
    name: &str,
    config: &Path,
    flags: &[&str],
    runtime_flags: &[&str],
) -> (Proc, Result<String, String>) {
    let emulator = dir.join(name);
    copy_platform(&deployment.join(format!("emulator-{platform}")), &emulator);
    let mut args = vec![
        "emulator".to_string(),
        "launch".into(),
        "--dir".into(),
        s(&emulator),
        "--config".into(),
        s(config),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    let out = cordon(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = dir.join(format!("{name}.addr"));
    let config = s(&deployment.join("runtime.toml"));
    let (emulator, addr_arg) = (s(&emulator), s(&addr));
    let mut args = vec![
        "runtime",
        "serve",
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--platform",
        "hardware",
        "--emulator",
        &emulator,
        "--addr-file",
        &addr_arg,
    ];
    args.extend_from_slice(runtime_flags);
    let mut rt = Proc::start(&args, dir.join(format!("{name}.log")));
    let url = rt.wait_ready(&addr);
    (rt, url)
}

fn infer(runtime: &str, policy: &Path, input: &Path) -> std::process::Output {
    cordon(&[
        "infer",
        "--runtime",
        runtime,
        "--policy",
        &s(policy),
        "--model",
        "breast-cancer-lr",
        "--input",
        &s(input),
    ])
}

fn the_hardware_path_on(platform: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let deployment: PathBuf = d.join("deployment");
    let (_dev, lines) = dev_up(d, platform);
    let text = lines.join("\n");
    let upper = platform.to_uppercase();
    assert!(text.contains(&format!("EMULATED {upper}")), "{text}");
    let runtime = field(&lines, "runtime URL:");
    let policy = PathBuf::from(field(&lines, "client policy:"));
    let input = deployment.join("demo-input.json");
    let runtime_log = std::fs::read_to_string(deployment.join("run/runtime.log")).unwrap();
    assert!(
        runtime_log.contains(&format!("WARNING: EMULATED {upper} platform")),
        "{runtime_log}"
    );

    // A client with the printed policy (which names the emulated root) verifies and infers.
    let out = infer(&runtime, &policy, &input);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "platform {platform} -- EMULATED, NOT hardware-backed"
        )),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("probabilities"));

    // The same through the verifying proxy, for an unmodified client.
    let (_proxy, proxy_url) = start_proxy(d, &runtime, &policy, "proxy", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{proxy_url}/v2/models/breast-cancer-lr/infer"))
            .header("content-type", "application/json")
            .body(std::fs::read(&input).unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["model_name"], "breast-cancer-lr", "{body}");
    assert_eq!(body["outputs"][0]["data"], serde_json::json!([1]), "{body}");

    // A production policy (the same reference values, no emulated root) refuses the runtime.
    let production = d.join("production.toml");
    let client_text = std::fs::read_to_string(&policy).unwrap();
    let kept: Vec<&str> = client_text
        .lines()
        .filter(|l| !l.starts_with("emulated_roots"))
        .collect();
    std::fs::write(&production, kept.join("\n")).unwrap();
    let out = infer(&runtime, &production, &input);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.to_lowercase().contains("emulated"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("probabilities"));

    if platform == "tdx" {
        // The TD ships its event log; the client replays it against the RTMRs (a log that does
        // not replay is refused), so a policy can pin the RTMRs the log explains.
        let log = std::fs::read(deployment.join("emulator-tdx/ccel.bin")).unwrap();
        let rtmrs = cordon_attest::eventlog::parse(&log).unwrap().replay();
        for (name, first, accepted) in [
            ("rtmrs", rtmrs[0], true),
            ("wrong-rtmr0", [0x11; 48], false),
        ] {
            let list: Vec<String> = std::iter::once(first)
                .chain(rtmrs[1..].iter().copied())
                .map(|r| format!("\"{}\"", hex::encode(r)))
                .collect();
            let path = d.join(format!("{name}.toml"));
            std::fs::write(
                &path,
                format!("{client_text}rtmrs = [{}]\n", list.join(", ")),
            )
            .unwrap();
            let out = infer(&runtime, &path, &input);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.success(), accepted, "{name}: {err}");
            if !accepted {
                assert!(err.contains("rtmr0"), "{err}");
            }
        }
    }
    // Machine and guest rules: a policy naming another PPID (TDX) or requiring SINGLE_SOCKET in
    // the guest policy, which the host did not set (SNP), refuses the runtime.
    let (rule, needle) = if platform == "tdx" {
        (
            format!("allowed_ppids = [\"{}\"]\n", "cd".repeat(16)),
            "ppid:",
        )
    } else {
        (
            "guest_policy_mask = 0x100000\nguest_policy_value = 0x100000\n".to_string(),
            "guest_policy:",
        )
    };
    let ruled = d.join("ruled.toml");
    std::fs::write(&ruled, format!("{client_text}{rule}")).unwrap();
    let out = infer(&runtime, &ruled, &input);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(needle), "{err}");
    if platform == "snp" {
        // A machine allowlist: the launched chip passes, any other chip is refused.
        let shown = ok(&[
            "emulator",
            "show",
            "--dir",
            &s(&deployment.join("emulator-snp")),
        ]);
        let chip = shown
            .lines()
            .find_map(|l| l.strip_prefix("chip id:"))
            .expect("emulator show prints the chip id")
            .trim()
            .to_string();
        for (name, allowed, accepted) in [
            ("this-chip", chip.clone(), true),
            ("other-chip", "ab".repeat(64), false),
        ] {
            let path = d.join(format!("{name}.toml"));
            std::fs::write(
                &path,
                format!("{client_text}allowed_chip_ids = [\"{allowed}\"]\n"),
            )
            .unwrap();
            let out = infer(&runtime, &path, &input);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.success(), accepted, "{name}: {err}");
            if !accepted {
                assert!(
                    err.contains("chip_id") && err.contains(&"ab".repeat(64)),
                    "{err}"
                );
            }
        }
    }

    let config = deployment.join("runtime.toml");
    if platform == "snp" {
        // A guest without configfs-tsm: the runtime asks /dev/sev-guest for extended reports,
        // whose certificate table (the host's) carries the VCEK chain to the KBS and to a client
        // whose policy has no certificates of its own.
        let via = ["--emulator-interface", "sev-guest"];
        let (_rt, result) =
            runtime_on_launch(d, &deployment, platform, "ioctl", &config, &[], &via);
        let url = result.unwrap_or_else(|log| panic!("no runtime on /dev/sev-guest:\n{log}"));
        let log = std::fs::read_to_string(d.join("ioctl.log")).unwrap();
        assert!(log.contains("WARNING: EMULATED SNP platform"), "{log}");
        assert!(
            log.contains("emulated guest interface: (emulated)/dev/sev-guest"),
            "{log}"
        );
        let out = infer(&url, &policy, &input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("EMULATED, NOT hardware-backed"), "{err}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("probabilities"));
        // The same refusals hold on that path: a debug guest gets no key.
        let (_rt, result) = runtime_on_launch(
            d,
            &deployment,
            platform,
            "ioctl-debug",
            &config,
            &["--debug"],
            &via,
        );
        let log = result.expect_err("a debug guest came up on /dev/sev-guest");
        assert!(log.contains("debug"), "{log}");
    }

    // Launches the KBS must refuse: the runtime gets no key and exits, naming why.
    let other_measurement = "11".repeat(48);
    let mut cases = vec![
        ("debug", vec!["--debug"], "debug"),
        (
            "measurement",
            vec!["--measurement", other_measurement.as_str()],
            "launch_measurement",
        ),
    ];
    if platform == "tdx" {
        cases.push(("old-tcb", vec!["--tcb-status", "out-of-date"], "OutOfDate"));
        cases.push(("expired", vec!["--collateral-age-days", "31"], "expired"));
    } else {
        cases.push((
            "old-tcb",
            vec!["--tcb-status", "out-of-date"],
            "below the default minimum",
        ));
        cases.push(("migration-agent", vec!["--migration-agent"], "migrate_ma"));
    }
    for (name, flags, needle) in cases {
        let (_rt, result) = runtime_on_launch(d, &deployment, platform, name, &config, &flags, &[]);
        let log = result
            .err()
            .unwrap_or_else(|| panic!("{name}: a runtime came up"));
        assert!(log.contains(needle), "{name}: {needle} not in:\n{log}");
        if name == "measurement" {
            // The refusal says what to do about it.
            assert!(log.contains("measure again"), "{log}");
        }
    }
    // A configuration other than the one the host launched with: the runtime itself refuses.
    let edited = d.join("edited.toml");
    std::fs::write(
        &edited,
        format!("# edited\n{}", std::fs::read_to_string(&config).unwrap()),
    )
    .unwrap();
    let (_rt, result) = runtime_on_launch(d, &deployment, platform, "edited", &edited, &[], &[]);
    let log = result.expect_err("a runtime came up under another configuration");
    let field = if platform == "tdx" {
        "MRCONFIGID"
    } else {
        "HOST_DATA"
    };
    assert!(log.contains(field), "{log}");
}

#[test]
fn the_hardware_path_on_an_emulated_td() {
    the_hardware_path_on("tdx");
}

#[test]
fn the_hardware_path_on_an_emulated_snp_guest() {
    the_hardware_path_on("snp");
}

/// `quickstart --emulate PLATFORM`: the whole flow once, the client's claims labelled EMULATED.
fn quickstart_on(platform: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = cordon(&[
        "quickstart",
        "--emulate",
        platform,
        "--data-dir",
        &s(dir.path()),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let label = format!(
        "{platform} -- EMULATED {}, NOT hardware-backed",
        platform.to_uppercase()
    );
    assert!(stdout.contains(&label), "{stdout}");
    assert!(
        stdout.contains("equals the same engine in process on the plaintext model: yes"),
        "{stdout}"
    );
    assert!(stdout.contains("key_released"), "{stdout}");
}

#[test]
fn quickstart_runs_on_an_emulated_snp_guest() {
    quickstart_on("snp");
}

#[test]
fn quickstart_runs_on_an_emulated_td() {
    quickstart_on("tdx");
}

/// Collaborative training on the hardware path: the trainer and the serving runtime each launched on
/// the emulated machine, the KBS releasing dataset keys to the trainer's evidence, the receipt
/// carrying its endorsements and verified offline, the joint model served to a verifying client.
#[test]
fn demo_hospitals_runs_on_emulated_platforms() {
    for platform in ["snp", "tdx"] {
        let dir = tempfile::tempdir().unwrap();
        let out = cordon(&[
            "demo",
            "hospitals",
            "--emulate",
            platform,
            "--data-dir",
            &s(dir.path()),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{platform}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let upper = platform.to_uppercase();
        assert!(
            stdout.contains(&format!("Platform: EMULATED {upper}")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("bound by {platform} evidence"))
                && stdout.contains("receipt valid"),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("client verified {platform} evidence")),
            "{stdout}"
        );
        // The receipt carries the endorsements its evidence needs: it verifies offline, later,
        // with nothing but the policy.
        let receipt = dir.path().join("output/receipt.json");
        let body: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
        let shipped = &body["body"]["attestation"]["endorsements"];
        assert!(
            shipped["snp_certs"].is_array() || shipped["dcap_collateral"].is_string(),
            "{platform}: {shipped}"
        );
        let verified = ok(&[
            "job",
            "receipt",
            "verify",
            "--receipt",
            &s(&receipt),
            "--policy",
            &s(&dir.path().join("trainer-policy.toml")),
        ]);
        assert!(
            verified.contains("EMULATED, NOT hardware-backed"),
            "{verified}"
        );
    }
}

/// The operator's tools on an emulated machine: `attest report` writes its evidence, `emulator show`
/// names its reference values, `policy new` writes a test policy naming the root, and `attest
/// verify` accepts the report with it and refuses it with the production policy.
#[test]
fn attest_report_policy_new_and_verify_on_an_emulated_snp_machine() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let machine = d.join("machine");
    ok(&[
        "emulator",
        "init",
        "--platform",
        "snp",
        "--dir",
        &s(&machine),
    ]);
    let out = ok(&[
        "attest",
        "report",
        "--emulator",
        &s(&machine),
        "--out",
        &s(&d.join("report.bin")),
    ]);
    assert!(out.contains("snp evidence (1184 bytes)"), "{out}");
    let shown = ok(&["emulator", "show", "--dir", &s(&machine)]);
    let value = |prefix: &str| {
        shown
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {shown}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let (root, measurement, workload) = (
        value("root fingerprint:"),
        value("launch measurement:"),
        value("workload data:"),
    );
    let policies = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "policy".to_string(),
            "new".into(),
            "--platform".into(),
            "snp".into(),
            "--measurement".into(),
            measurement.clone(),
            "--workload-data".into(),
            workload.clone(),
            "--release-out".into(),
            s(&d.join(format!("{name}-release.toml"))),
            "--client-out".into(),
            s(&d.join(format!("{name}-client.toml"))),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        ok(&args);
        d.join(format!("{name}-client.toml"))
    };
    let test_policy = policies("test", &["--emulated-root", &root]);
    let production = policies("production", &[]);
    let verify = |policy: &Path| {
        cordon(&[
            "attest",
            "verify",
            &s(&d.join("report.bin")),
            "--cert",
            &s(&machine.join("vcek.der")),
            "--cert",
            &s(&machine.join("ask.der")),
            "--cert",
            &s(&machine.join("ark.der")),
            "--policy",
            &s(policy),
        ])
    };
    let accepted = verify(&test_policy);
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        accepted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(stdout.contains("EMULATED, NOT hardware-backed"), "{stdout}");
    let refused = verify(&production);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains(&root) && err.contains("emulated root"),
        "{err}"
    );
}
