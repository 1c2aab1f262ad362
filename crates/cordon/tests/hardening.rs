//! The runtime process hardens itself before it holds any secret: no core dumps (and the
//! limit at zero), memory locked when the limit allows, and it says which.

mod common;
use common::*;

#[test]
fn the_runtime_disables_core_dumps_and_says_whether_memory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    // A training-only runtime needs no KBS to boot.
    std::fs::write(
        p("rt.toml"),
        format!(
            "kbs_url = \"http://127.0.0.1:9\"\nkbs_public_key = \"{}\"\n\n[training]\n",
            "11".repeat(32)
        ),
    )
    .unwrap();
    let (rt, _) = start_runtime(dir.path(), &p("rt.toml"), "rt");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", rt.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{core}");
    let log = rt.log();
    assert!(log.contains("core dumps disabled"), "{log}");
    // Either locked, or a warning that names the limit to raise: never silent.
    let status = std::fs::read_to_string(format!("/proc/{}/status", rt.child.id())).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    if locked_kb > 0 {
        assert!(log.contains("memory locked"), "{log}");
    } else {
        assert!(log.contains("memory not locked: RLIMIT_MEMLOCK"), "{log}");
    }
}

/// A runtime whose port is taken stops before it asks the KBS anything: it binds first, then
/// boots. (Booting first released, and audited, keys to a runtime that then died at once.) The
/// KBS here is a bare listener that records whether anyone connected.
#[test]
fn a_runtime_that_cannot_listen_asks_the_kbs_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    ok(&["keygen", "--out", &s(&p("owner.key"))]);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    let lr = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/breast_cancer_lr.onnx"
    );
    ok(&[
        "seal",
        lr,
        "--out",
        &s(&p("lr.sealed")),
        "--key-out",
        &s(&p("lr.dek")),
        "--owner-key",
        &s(&p("owner.key")),
        "--name",
        "lr",
    ]);
    let kbs = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let signer = std::fs::read_to_string(p("owner.pub")).unwrap();
    std::fs::write(
        p("rt.toml"),
        format!(
            "kbs_url = \"http://{}\"\nkbs_public_key = \"{}\"\n\n[[models]]\nname = \"lr\"\n\
             path = \"{}\"\nsigner = \"{}\"\n",
            kbs.local_addr().unwrap(),
            "11".repeat(32),
            s(&p("lr.sealed")),
            signer.trim()
        ),
    )
    .unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let err = fails(&[
        "runtime",
        "serve",
        "--config",
        &s(&p("rt.toml")),
        "--listen",
        &listen,
        "--platform",
        "sim",
        "--sim-hardware-key",
        &s(&p("hw.key")),
    ]);
    assert!(err.contains(&format!("binding {listen}")), "{err}");
    kbs.set_nonblocking(true).unwrap();
    match kbs.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("the runtime connected to the KBS ({from}) before binding: {err}"),
        Err(e) => panic!("{e}"),
    }
}

/// `RUST_LOG` filters the logs when `CORDON_LOG` is unset (README, `cordon --help`): the
/// runtime's INFO line about core dumps is there by default and gone with `RUST_LOG=error`.
#[test]
fn rust_log_filters_the_logs_when_cordon_log_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["sim", "keygen", "--out", &s(&dir.path().join("hw.key"))]);
    std::fs::write(
        dir.path().join("rt.toml"),
        format!(
            "kbs_url = \"http://127.0.0.1:9\"\nkbs_public_key = \"{}\"\n\n[training]\n",
            "11".repeat(32)
        ),
    )
    .unwrap();
    // A port taken: the runtime logs its hardening, then stops at the bind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let run = |rust_log: Option<&str>| {
        let mut c = std::process::Command::new(BIN);
        c.args([
            "runtime",
            "serve",
            "--config",
            &s(&dir.path().join("rt.toml")),
            "--listen",
            &taken.local_addr().unwrap().to_string(),
            "--platform",
            "sim",
            "--sim-hardware-key",
            &s(&dir.path().join("hw.key")),
        ])
        .env_remove("CORDON_LOG")
        .env_remove("RUST_LOG");
        if let Some(level) = rust_log {
            c.env("RUST_LOG", level);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(None).contains("core dumps disabled"), "{}", run(None));
    let quiet = run(Some("error"));
    assert!(!quiet.contains("core dumps disabled"), "{quiet}");
    assert!(quiet.contains("binding"), "{quiet}");
}
