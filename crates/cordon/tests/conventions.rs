//! The command-line conventions users expect: shell completions and man pages generated from the
//! CLI definition, `--json`, `-` for stdin/stdout, `--force`, XDG default paths, the default KBS
//! URL, RFC 3339 times, examples in every `--help`.

mod common;

use common::*;

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
}
