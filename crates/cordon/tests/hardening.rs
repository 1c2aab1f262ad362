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

/// In `dir`: an owner key, a sim hardware key, the breast-cancer LR sealed as `lr`, and a runtime
/// configuration `rt.toml` serving it with its key from a KBS at `kbs_addr` (host:port).
fn lr_runtime_config(dir: &std::path::Path, kbs_addr: &str) {
    let p = |f: &str| dir.join(f);
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
    let signer = std::fs::read_to_string(p("owner.pub")).unwrap();
    std::fs::write(
        p("rt.toml"),
        format!(
            "kbs_url = \"http://{kbs_addr}\"\nkbs_public_key = \"{}\"\n\n[[models]]\nname = \"lr\"\n\
             path = \"{}\"\nsigner = \"{}\"\n",
            "11".repeat(32),
            s(&p("lr.sealed")),
            signer.trim()
        ),
    )
    .unwrap();
}

/// A runtime whose port is taken stops before it asks the KBS anything: it binds first, then
/// boots. (Booting first released, and audited, keys to a runtime that then died at once.) The
/// KBS here is a bare listener that records whether anyone connected.
#[test]
fn a_runtime_that_cannot_listen_asks_the_kbs_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    let kbs = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    lr_runtime_config(dir.path(), &kbs.local_addr().unwrap().to_string());
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

/// A key broker that is not up yet (connection refused) is waited for, with backoff, saying so
/// on the log: here it comes up a second later and the runtime's retry reaches it. One that
/// never comes up fails the start after --kbs-wait-secs, naming the refused connection.
#[test]
fn a_runtime_waits_for_a_key_broker_that_is_not_up_yet() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    // A port nobody listens on yet.
    let kbs_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    lr_runtime_config(dir.path(), &kbs_addr.to_string());
    let serve = |wait: &str| -> Vec<String> {
        [
            "runtime",
            "serve",
            "--config",
            &s(&p("rt.toml")),
            "--listen",
            "127.0.0.1:0",
            "--platform",
            "sim",
            "--sim-hardware-key",
            &s(&p("hw.key")),
            "--kbs-wait-secs",
            wait,
        ]
        .map(str::to_string)
        .to_vec()
    };
    let err = fails(&serve("1"));
    assert!(
        err.contains(&format!("key broker at http://{kbs_addr}"))
            && err.contains("not reachable after 1 s of retrying")
            && err.contains("Connection refused"),
        "{err}"
    );

    let rt = Proc::start(&serve("60"), p("rt.log"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let log = rt.log();
    assert!(
        log.contains("waiting for the key broker") && log.contains("Connection refused"),
        "{log}"
    );
    // The KBS comes up: the runtime's next try reaches it.
    let kbs = std::net::TcpListener::bind(kbs_addr).unwrap();
    kbs.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match kbs.accept() {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the runtime never tried again: {}",
                    rt.log()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
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
