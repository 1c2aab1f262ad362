//! The command-line conventions users expect: shell completions and man pages generated from the
//! CLI definition, `--json`, `-` for stdin/stdout, `--force`, XDG default paths, the default KBS
//! URL, RFC 3339 times, examples in every `--help`.

mod common;

use common::*;
use std::process::{Command, Output};

#[test]
fn completions_name_the_subcommands() {
    let bash = ok(&["completions", "bash"]);
    for sub in [
        "seal",
        "unseal",
        "inspect",
        "kbs",
        "serve",
        "register",
        "completions",
        "man",
    ] {
        assert!(bash.contains(sub), "no {sub} in the bash completions");
    }
    assert!(bash.contains("complete -F _cordon"), "{}", &bash[..200]);
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = ok(&["completions", shell]);
        assert!(script.contains("keygen"), "{shell}: {script}");
    }
    let err = fails(&["completions", "tcsh"]);
    assert!(err.contains("invalid value"), "{err}");
}

#[test]
fn man_writes_one_page_per_command_with_the_option_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let printed = ok(&["man", "--out", &s(&out)]);
    assert!(printed.contains("man pages"), "{printed}");
    let page = |name: &str| {
        std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let top = page("cordon.1");
    assert!(top.contains(".TH cordon 1"), "{top}");
    assert!(
        top.contains("cordon\\-seal(1)") || top.contains("seal"),
        "{top}"
    );
    let seal = page("cordon-seal.1");
    assert!(seal.contains("Where to write the key file"), "{seal}");
    assert!(seal.contains("key\\-out"), "{seal}");
    assert!(
        seal.contains("Examples:") && seal.contains("Exit status:"),
        "{seal}"
    );
    assert!(top.contains("CORDON_KBS_URL"), "{top}");
    let serve = page("cordon-kbs-serve.1");
    assert!(serve.contains("listen"), "{serve}");
    assert!(out.join("cordon-job-receipt-verify.1").exists());
    // Again: refused without --force, naming the file and the flag; replaced with it.
    let err = fails(&["man", "--out", &s(&out)]);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    ok(&["man", "--out", &s(&out), "--force"]);
}

/// Whether `text` holds a time written as RFC 3339 in UTC (`2025-06-01T12:00:00Z`).
fn has_rfc3339(text: &str) -> bool {
    let pattern = b"dddd-dd-ddTdd:dd:ddZ";
    text.as_bytes().windows(pattern.len()).any(|w| {
        w.iter().zip(pattern).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            p => c == p,
        })
    })
}

/// A KBS in a temporary directory with one registered key: the directory (hw.key, owner.key,
/// token, model.dek, release.toml), the process and its URL.
fn kbs_with_a_key() -> (tempfile::TempDir, Proc, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| s(&dir.path().join(f));
    ok(&["sim", "keygen", "--out", &p("hw.key")]);
    ok(&["keygen", "--out", &p("owner.key")]);
    std::fs::write(dir.path().join("model.bin"), b"a model").unwrap();
    std::fs::write(
        dir.path().join("release.toml"),
        format!(
            "platforms = [\"sim\"]\nlaunch_measurements = [\"{}\"]\n",
            "11".repeat(48)
        ),
    )
    .unwrap();
    ok(&[
        "seal",
        &p("model.bin"),
        "--out",
        &p("model.sealed"),
        "--key-out",
        &p("model.dek"),
        "--owner-key",
        &p("owner.key"),
        "--name",
        "fraud",
    ]);
    let (kbs, url) = start_kbs(dir.path(), "kbs");
    ok(&[
        "kbs",
        "register",
        "--kbs",
        &url,
        "--token-file",
        &p("token"),
        "--key",
        &p("model.dek"),
        "--policy",
        &p("release.toml"),
    ]);
    (dir, kbs, url)
}

#[test]
fn kbs_keys_and_audit_print_rfc3339_times() {
    let (dir, _kbs, url) = kbs_with_a_key();
    let token = s(&dir.path().join("token"));
    let admin = |cmd: &[&str]| {
        let mut args = vec!["kbs"];
        args.extend_from_slice(cmd);
        args.extend_from_slice(&["--kbs", &url, "--token-file", &token]);
        ok(&args)
    };
    // `kbs keys`: a table by default, JSON with --json; both with RFC 3339 times.
    let table = admin(&["keys"]);
    assert!(table.starts_with("KEY "), "{table}");
    assert!(table.contains("active") && has_rfc3339(&table), "{table}");
    let keys: serde_json::Value = serde_json::from_str(&admin(&["keys", "--json"])).unwrap();
    let key = &keys.as_array().unwrap()[0];
    assert!(key["created_at"].is_u64(), "{key}");
    assert!(
        has_rfc3339(key["created_at_rfc3339"].as_str().unwrap()),
        "{key}"
    );
    // `kbs audit`: the events as JSON, each time in Unix seconds (as the log holds it) and in
    // RFC 3339.
    let events: serde_json::Value = serde_json::from_str(&admin(&["audit"])).unwrap();
    let first = &events.as_array().unwrap()[0];
    assert_eq!(first["kind"], "key_registered", "{first}");
    let secs = first["time"].as_u64().unwrap();
    let shown = first["time_rfc3339"].as_str().unwrap();
    assert!(has_rfc3339(shown), "{first}");
    let parsed =
        time::OffsetDateTime::parse(shown, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(parsed.unix_timestamp() as u64, secs);
    let verified: serde_json::Value = serde_json::from_str(&admin(&["audit", "--verify"])).unwrap();
    assert!(has_rfc3339(verified[0]["time_rfc3339"].as_str().unwrap()));
    // A saved checkpoint is replaced only with --force, or when rolled forward from --since.
    let cp = s(&dir.path().join("cp.json"));
    admin(&["audit", "--verify", "--checkpoint-out", &cp]);
    let mut again = vec!["kbs", "audit", "--verify", "--checkpoint-out", &cp];
    again.extend_from_slice(&["--kbs", &url, "--token-file", &token]);
    let err = fails(&again);
    assert!(err.contains(&cp) && err.contains("--force"), "{err}");
    admin(&["audit", "--verify", "--since", &cp, "--checkpoint-out", &cp]);
    admin(&["audit", "--verify", "--checkpoint-out", &cp, "--force"]);
    // An input is never an output, even with --force: the admin token stays what it was.
    let before = std::fs::read(&token).unwrap();
    let mut over_token = vec![
        "kbs",
        "audit",
        "--verify",
        "--checkpoint-out",
        &token,
        "--force",
    ];
    over_token.extend_from_slice(&["--kbs", &url, "--token-file", &token]);
    let err = fails(&over_token);
    assert!(err.contains("is the input"), "{err}");
    assert_eq!(std::fs::read(&token).unwrap(), before);
}

/// Runs `cordon args` with HOME and XDG_CONFIG_HOME as given (None: unset).
fn cordon_home(home: &std::path::Path, xdg: Option<&std::path::Path>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CORDON_LOG", "warn")
        .env("HOME", home)
        .env_remove("CORDON_OWNER_KEY")
        .env_remove("CORDON_KBS_URL");
    match xdg {
        Some(x) => c.env("XDG_CONFIG_HOME", x),
        None => c.env_remove("XDG_CONFIG_HOME"),
    };
    c.output().unwrap()
}

fn succeeded(out: &Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}

#[test]
fn keys_default_to_the_xdg_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(dir.path().join("model.bin"), b"a model").unwrap();
    let seal = |home: &std::path::Path, xdg: Option<&std::path::Path>, n: &str| {
        cordon_home(
            home,
            xdg,
            &[
                "seal",
                &s(&dir.path().join("model.bin")),
                "--out",
                &s(&dir.path().join(format!("m{n}.sealed"))),
                "--key-out",
                &s(&dir.path().join(format!("m{n}.dek"))),
            ],
        )
    };
    // With XDG_CONFIG_HOME: keygen and sim keygen write there, seal reads from there.
    let (printed, _) = succeeded(&cordon_home(&home, Some(&xdg), &["keygen"]));
    assert!(xdg.join("cordon/owner.key").is_file(), "{printed}");
    assert!(xdg.join("cordon/owner.pub").is_file());
    succeeded(&cordon_home(&home, Some(&xdg), &["sim", "keygen"]));
    assert!(xdg.join("cordon/sim-hardware.key").is_file());
    assert!(xdg.join("cordon/sim-hardware.pub").is_file());
    let (sealed1, note) = succeeded(&seal(&home, Some(&xdg), "1"));
    assert!(!note.contains("old default location"), "{note}");
    // A second keygen does not overwrite the key.
    let out = cordon_home(&home, Some(&xdg), &["keygen"]);
    assert!(!out.status.success());
    // Without it: ~/.config/cordon.
    succeeded(&cordon_home(&home, None, &["keygen"]));
    assert!(home.join(".config/cordon/owner.key").is_file());
    assert!(!home.join(".cordon").exists());

    // An old ~/.cordon/owner.key is still read (said once on stderr) when the new one is missing,
    // and keygen refuses to shadow it.
    let old_home = dir.path().join("old-home");
    std::fs::create_dir_all(old_home.join(".cordon")).unwrap();
    std::fs::copy(
        xdg.join("cordon/owner.key"),
        old_home.join(".cordon/owner.key"),
    )
    .unwrap();
    let (sealed2, note) = succeeded(&seal(&old_home, None, "2"));
    assert_eq!(note.matches("old default location").count(), 1, "{note}");
    assert!(note.contains(".cordon/owner.key"), "{note}");
    let out = cordon_home(&old_home, None, &["keygen"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(".cordon/owner.key"),
        "{err}"
    );
    assert!(!old_home.join(".config/cordon/owner.key").exists());
    // The same signer sealed both.
    let signer = |printed: &str| {
        printed
            .lines()
            .find(|l| l.trim_start().starts_with("signer"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{printed}"))
    };
    assert_eq!(signer(&sealed1), signer(&sealed2));
}

/// Runs `cordon args` with `CORDON_KBS_URL` set to `url`, or removed.
fn cordon_kbs_env(url: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env("CORDON_LOG", "warn");
    match url {
        Some(u) => c.env("CORDON_KBS_URL", u),
        None => c.env_remove("CORDON_KBS_URL"),
    };
    c.output().unwrap()
}

#[test]
fn kbs_url_defaults_to_the_local_kbs() {
    // Without --kbs or CORDON_KBS_URL: the KBS `kbs serve` starts by default, on this machine.
    // Whatever listens on that port (usually nothing), the command went there.
    let out = cordon_kbs_env(None, &["kbs", "identity"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let key = String::from_utf8_lossy(&out.stdout);
        assert_eq!(key.trim().len(), 64, "{key}");
    } else {
        assert!(stderr.contains("KBS http://127.0.0.1:8100"), "{stderr}");
    }
    let help = ok(&["kbs", "keys", "--help"]);
    assert!(help.contains("[default: http://127.0.0.1:8100]"), "{help}");
    let help = ok(&["dataset", "register", "--help"]);
    assert!(help.contains("CORDON_KBS_URL"), "{help}");

    // CORDON_KBS_URL stands for --kbs.
    let (dir, _kbs, url) = kbs_with_a_key();
    let token = s(&dir.path().join("token"));
    let out = cordon_kbs_env(Some(&url), &["kbs", "keys", "--token-file", &token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("active"));
}

/// `cordon args --json`: stdout parses as one JSON document (nothing else on stdout).
fn json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("cordon {all:?}: {e}:\n{out}"))
}

#[test]
fn json_gives_json_only_on_stdout() {
    let (dir, _kbs, url) = kbs_with_a_key();
    let p = |f: &str| s(&dir.path().join(f));
    let owner = json(&["keygen", "--out", &p("owner2.key")]);
    assert_eq!(owner["public_key"].as_str().unwrap().len(), 64, "{owner}");
    let hw = json(&["sim", "keygen", "--out", &p("hw2.key")]);
    assert!(hw["trust_anchor_file"]
        .as_str()
        .unwrap()
        .ends_with("hw2.pub"));
    let sealed = json(&[
        "seal",
        &p("model.bin"),
        "--out",
        &p("m.sealed"),
        "--key-out",
        &p("m.dek"),
        "--owner-key",
        &p("owner2.key"),
    ]);
    assert_eq!(
        sealed["manifest"]["signer"], owner["public_key"],
        "{sealed}"
    );
    // `inspect` prints text before the manifest; with --json, JSON only.
    let inspected = json(&["inspect", &p("m.sealed")]);
    assert_eq!(inspected["manifest_sha256"], sealed["manifest_sha256"]);
    assert_eq!(inspected["signature_verified"], true);
    let unsealed = json(&[
        "unseal",
        &p("m.sealed"),
        "--key",
        &p("m.dek"),
        "--out",
        &p("m.out"),
    ]);
    assert_eq!(unsealed["plaintext_size"], 7, "{unsealed}");
    let examples = json(&["model", "examples", "--out", &p("examples")]);
    assert_eq!(examples["written"].as_array().unwrap().len(), 4);
    let config = format!(
        "kbs_url = \"{url}\"\n\n[[models]]\nname = \"m\"\npath = \"{}\"\nsigner = \"{}\"\n",
        p("m.sealed"),
        owner["public_key"].as_str().unwrap()
    );
    std::fs::write(dir.path().join("runtime.toml"), config).unwrap();
    let measured = json(&["runtime", "measure", "--config", &p("runtime.toml")]);
    let measurement = measured["launch_measurement"].as_str().unwrap().to_string();
    assert_eq!(measurement.len(), 96, "{measured}");
    let workload = json(&[
        "measure",
        "runtime",
        "--config",
        &p("runtime.toml"),
        "--platform",
        "snp",
    ]);
    assert_eq!(workload["workload_data"].as_str().unwrap().len(), 64);
    let policies = json(&[
        "policy",
        "new",
        "--platform",
        "sim",
        "--measurement",
        &measurement,
        "--sim-trust-anchor",
        &p("hw.pub"),
        "--release-out",
        &p("release2.toml"),
        "--client-out",
        &p("client2.toml"),
    ]);
    assert!(policies["client_policy"]
        .as_str()
        .unwrap()
        .ends_with("client2.toml"));
    // The KBS: identity, register, keys, revoke, audit.
    let token = p("token");
    let admin = |cmd: &[&str]| {
        let mut args = vec!["kbs"];
        args.extend_from_slice(cmd);
        args.extend_from_slice(&["--kbs", &url, "--token-file", &token]);
        json(&args)
    };
    let id = json(&["kbs", "identity", "--kbs", &url]);
    assert_eq!(id["kbs_public_key"].as_str().unwrap().len(), 64, "{id}");
    let registered = admin(&[
        "register",
        "--key",
        &p("m.dek"),
        "--policy",
        &p("release2.toml"),
    ]);
    let key_id = registered["registered"].as_str().unwrap().to_string();
    assert_eq!(key_id, sealed["manifest"]["key_id"].as_str().unwrap());
    let keys = admin(&["keys"]);
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    let revoked = admin(&["revoke", &key_id]);
    assert_eq!(
        revoked["key_id"].as_str(),
        Some(key_id.as_str()),
        "{revoked}"
    );
    assert!(has_rfc3339(revoked["revoked_at_rfc3339"].as_str().unwrap()));
    let events = admin(&["audit"]);
    assert!(events.as_array().unwrap().len() >= 3, "{events}");
    let measured = json(&["kbs", "measure", "--sim-trust-anchor", &p("hw.pub")]);
    assert_eq!(measured["launch_measurement"].as_str().unwrap().len(), 96);
}

/// Runs `cordon args` with `input` on its standard input.
fn cordon_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env("CORDON_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn a_dash_reads_stdin_and_writes_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| s(&dir.path().join(f));
    ok(&["keygen", "--out", &p("owner.key")]);
    let model = b"model bytes from a pipe".to_vec();
    // seal - --out -: the artifact on stdout, the key file on disk, the summary on stderr.
    let out = cordon_stdin(
        &[
            "seal",
            "-",
            "--out",
            "-",
            "--key-out",
            &p("k.dek"),
            "--owner-key",
            &p("owner.key"),
            "--name",
            "piped",
        ],
        &model,
    );
    let (sealed, summary) = (
        out.stdout.clone(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{summary}");
    assert!(
        sealed.starts_with(b"CORDSEAL"),
        "{:?}",
        &sealed[..sealed.len().min(16)]
    );
    assert!(summary.contains("key id"), "{summary}");
    assert!(dir.path().join("k.dek").is_file());
    // inspect -
    let out = cordon_stdin(&["inspect", "-", "--json"], &sealed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["manifest"]["name"], "piped");
    // unseal - --out -: the plaintext on stdout, exactly.
    let out = cordon_stdin(
        &["unseal", "-", "--key", &p("k.dek"), "--out", "-"],
        &sealed,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, model);
    // A tampered artifact: refused, and not one byte of plaintext on stdout.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let out = cordon_stdin(
        &["unseal", "-", "--key", &p("k.dek"), "--out", "-"],
        &tampered,
    );
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "plaintext of a rejected artifact on stdout"
    );
    // --json and --out - both want stdout: refused.
    let out = cordon_stdin(
        &["unseal", "-", "--key", &p("k.dek"), "--out", "-", "--json"],
        &sealed,
    );
    assert!(!out.status.success());
    // A key file never goes to stdout.
    let err = fails(&[
        "seal",
        &p("k.dek"),
        "--out",
        &p("x"),
        "--key-out",
        "-",
        "--owner-key",
        &p("owner.key"),
    ]);
    assert!(err.contains("--key-out"), "{err}");
    // model run MODEL --input -
    ok(&["model", "examples", "--out", &p("ex")]);
    let request = std::fs::read(dir.path().join("ex/demo_input.json")).unwrap();
    let out = cordon_stdin(
        &[
            "model",
            "run",
            &p("ex/breast_cancer_lr.onnx"),
            "--input",
            "-",
        ],
        &request,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(response["outputs"].is_array(), "{response}");
    // policy new --client-out -: the policy on stdout.
    ok(&["sim", "keygen", "--out", &p("hw.key")]);
    let policy = ok(&[
        "policy",
        "new",
        "--platform",
        "sim",
        "--measurement",
        &"ab".repeat(48),
        "--sim-trust-anchor",
        &p("hw.pub"),
        "--release-out",
        &p("release.toml"),
        "--client-out",
        "-",
    ]);
    // Nor does a policy go over a file it was made from, even with --force.
    let err = fails(&[
        "policy",
        "new",
        "--platform",
        "sim",
        "--measurement",
        &"ab".repeat(48),
        "--sim-trust-anchor",
        &p("hw.pub"),
        "--release-out",
        &p("hw.pub"),
        "--client-out",
        &p("client-x.toml"),
        "--force",
    ]);
    assert!(err.contains("is the input"), "{err}");
    assert!(
        policy.contains("[endorsements]") && policy.contains("sim_trust_anchors"),
        "{policy}"
    );
}

#[test]
fn files_are_overwritten_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| s(&dir.path().join(f));
    let refused = |args: &[&str], file: &str| {
        let err = fails(args);
        assert!(
            err.contains(file) && err.contains("--force"),
            "{args:?}: {err}"
        );
    };
    for keygen in [&["keygen"][..], &["sim", "keygen"][..]] {
        let mut args = keygen.to_vec();
        let key = p("a.key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(p("a.pub"));
        args.extend(["--out", key.as_str()]);
        ok(&args);
        let before = std::fs::read(&key).unwrap();
        refused(&args, &key);
        assert_eq!(
            std::fs::read(&key).unwrap(),
            before,
            "{keygen:?} replaced the key"
        );
        // A public key alone in the way is refused too.
        std::fs::remove_file(&key).unwrap();
        refused(&args, &p("a.pub"));
        args.push("--force");
        ok(&args);
    }
    let party = ["party", "keygen", "--name", "h1", "--out", &p("h1.party")];
    ok(&party);
    refused(&party, &p("h1.party"));
    ok(&[&party[..], &["--force"]].concat());
    ok(&["sim", "keygen", "--out", &p("hw.key"), "--force"]);
    let m = "cd".repeat(48);
    let policy = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "new",
            "--platform",
            "sim",
            "--measurement",
            &m,
            "--sim-trust-anchor",
        ];
        let (hw, release, client) = (p("hw.pub"), p("r.toml"), p("c.toml"));
        args.extend([
            hw.as_str(),
            "--release-out",
            release.as_str(),
            "--client-out",
            client.as_str(),
        ]);
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    ok(&policy(&[]));
    refused(
        &policy(&[]).iter().map(String::as_str).collect::<Vec<_>>(),
        "--release-out",
    );
    ok(&policy(&["--force"]));
}

#[test]
fn help_shows_examples_and_exit_statuses() {
    for cmd in [
        &["seal"][..],
        &["kbs", "keys"],
        &["attest", "verify"],
        &["job", "receipt", "verify"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = ok(&args);
        assert!(help.contains("Examples:\n  cordon"), "{cmd:?}: {help}");
        assert!(help.contains("Exit status: 0"), "{cmd:?}: {help}");
    }
    assert!(ok(&["attest", "verify", "--help"]).contains("1 rejected"));
    let top = ok(&["--help"]);
    for var in [
        "CORDON_LOG",
        "RUST_LOG",
        "CORDON_KBS_URL",
        "CORDON_OWNER_KEY",
        "XDG_CONFIG_HOME",
    ] {
        assert!(top.contains(var), "{var}: {top}");
    }
    // A usage error exits 2.
    let out = cordon(&["seal"]);
    assert_eq!(out.status.code(), Some(2));
}
