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
