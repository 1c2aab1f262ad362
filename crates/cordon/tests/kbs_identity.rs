//! The KBS's identity as an administrator meets it: `cordon kbs audit|register` without `--kbs-key`
//! trust the identity the KBS serves only with the admin token's signature over it, so a host that
//! answers with another KBS (its own) gets nothing sealed to it.

mod common;
use common::*;

#[test]
fn admin_commands_check_the_served_identity_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    let (_kbs, url) = start_kbs(dir.path(), "kbs");
    // Without a pin: the served identity is vouched for by this token.
    let out = cordon(&[
        "kbs",
        "audit",
        "--kbs",
        &url,
        "--token-file",
        &s(&p("token")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A second KBS (the host's own, say) with its own token: the first KBS's token does not vouch
    // for its identity, so nothing is sent to it.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(p("hw.pub"), other.path().join("hw.pub")).unwrap();
    let (_other_kbs, other_url) = start_kbs(other.path(), "kbs");
    ok(&["keygen", "--out", &s(&p("owner.key"))]);
    std::fs::write(p("model.bin"), b"a model").unwrap();
    ok(&[
        "seal",
        &s(&p("model.bin")),
        "--out",
        &s(&p("model.sealed")),
        "--key-out",
        &s(&p("model.dek")),
        "--owner-key",
        &s(&p("owner.key")),
    ]);
    std::fs::write(
        p("release.toml"),
        format!(
            "platforms = [\"sim\"]\nlaunch_measurements = [\"{}\"]\n",
            "11".repeat(48)
        ),
    )
    .unwrap();
    let out = cordon(&[
        "kbs",
        "register",
        "--kbs",
        &other_url,
        "--token-file",
        &s(&p("token")),
        "--key",
        &s(&p("model.dek")),
        "--policy",
        &s(&p("release.toml")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "registered with another KBS");
    assert!(
        err.contains("not the one this admin token vouches for"),
        "{err}"
    );
    let events = cordon(&[
        "kbs",
        "audit",
        "--kbs",
        &other_url,
        "--token-file",
        &s(&other.path().join("token")),
    ]);
    assert!(events.status.success());
    assert_eq!(String::from_utf8_lossy(&events.stdout).trim(), "[]");

    // With the right pin, or none, the registration goes to the real KBS (a model sealed twice:
    // two key ids), and its audit log records both.
    ok(&[
        "seal",
        &s(&p("model.bin")),
        "--out",
        &s(&p("model2.sealed")),
        "--key-out",
        &s(&p("model2.dek")),
        "--owner-key",
        &s(&p("owner.key")),
    ]);
    let key_id = |dek: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p(dek)).unwrap()).unwrap();
        v["key_id"].as_str().unwrap().to_string()
    };
    assert_ne!(key_id("model.dek"), key_id("model2.dek"));
    let pin = kbs_key(dir.path(), "kbs");
    for (dek, pinned) in [("model.dek", Some(pin.as_str())), ("model2.dek", None)] {
        let mut args = vec![
            "kbs".to_string(),
            "register".into(),
            "--kbs".into(),
            url.clone(),
            "--token-file".into(),
            s(&p("token")),
            "--key".into(),
            s(&p(dek)),
            "--policy".into(),
            s(&p("release.toml")),
        ];
        if let Some(pin) = pinned {
            args.extend(["--kbs-key".into(), pin.to_string()]);
        }
        ok(&args);
    }
    let audit = ok(&[
        "kbs",
        "audit",
        "--kbs",
        &url,
        "--kbs-key",
        &pin,
        "--token-file",
        &s(&p("token")),
    ]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    for dek in ["model.dek", "model2.dek"] {
        let id = key_id(dek);
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "key_registered" && e["key_id"] == id.as_str()),
            "no key_registered event for {id} ({dek}): {audit}"
        );
    }
}

/// A KBS whose port is taken stops before it opens its store: it leaves no store and no KEK file
/// behind (it bound its port after making both).
#[test]
fn a_kbs_that_cannot_listen_leaves_no_store_behind() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["sim", "keygen", "--out", &s(&dir.path().join("hw.key"))]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("kbs");
    let err = fails(&[
        "kbs",
        "serve",
        "--data-dir",
        &s(&data),
        "--listen",
        &listen,
        "--sim-trust-anchor",
        &s(&dir.path().join("hw.pub")),
        "--init-admin-token-file",
        &s(&dir.path().join("token")),
    ]);
    assert!(err.contains(&format!("binding {listen}")), "{err}");
    assert!(!data.exists(), "a store was made");
    assert!(!dir.path().join("kbs.kek").exists(), "a KEK file was made");
    assert!(!dir.path().join("token").exists(), "a token was written");
}

/// A first start that fails after the port is bound leaves nothing either: without
/// --init-admin-token-file it stops before the store (which would have no administrator), and a
/// later failure (here, the identity file cannot be written) removes the new store, its KEK and
/// the token written for it. A start on the same directory then works.
#[test]
fn a_failed_first_start_leaves_no_store_behind() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["sim", "keygen", "--out", &s(&dir.path().join("hw.key"))]);
    let data = dir.path().join("kbs");
    let base = [
        "kbs".to_string(),
        "serve".into(),
        "--data-dir".into(),
        s(&data),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--sim-trust-anchor".into(),
        s(&dir.path().join("hw.pub")),
    ];
    let args = |extra: &[String]| -> Vec<String> { base.iter().chain(extra).cloned().collect() };
    let err = fails(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("needs --init-admin-token-file"), "{err}");
    assert!(!data.exists() && !dir.path().join("kbs.kek").exists());
    let token = dir.path().join("token");
    let unwritable = dir.path().join("no-such-dir/identity");
    let err = fails(
        &args(&[
            "--init-admin-token-file".into(),
            s(&token),
            "--identity-file".into(),
            s(&unwritable),
        ])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(!data.exists(), "a store was left");
    assert!(!dir.path().join("kbs.kek").exists(), "a KEK file was left");
    assert!(!token.exists(), "a token for a removed store was left");
    drop(start_kbs(dir.path(), "kbs"));
    assert!(data.join("kbs.sqlite3").exists());
}

/// What a failed start removes is only what it created: a second `kbs serve` on a store that a
/// running KBS holds stops at the lock and touches nothing of it; an existing token file is never
/// overwritten by a new store (it may be another store's token), and a data directory that is a
/// link is never removed.
#[test]
fn a_failed_start_removes_nothing_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    let (mut kbs, url) = start_kbs(dir.path(), "kbs");
    let addr = url.trim_start_matches("http://").to_string();
    let serve = |data: &str, token: &str| -> Vec<String> {
        [
            "kbs",
            "serve",
            "--data-dir",
            &s(&p(data)),
            "--listen",
            "127.0.0.1:0",
            "--sim-trust-anchor",
            &s(&p("hw.pub")),
            "--init-admin-token-file",
            &s(&p(token)),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let err = fails(&serve("kbs", "second.token"));
    assert!(err.contains("another `kbs serve` holds the store"), "{err}");
    assert!(p("kbs/kbs.sqlite3").exists() && p("kbs.kek").exists());
    assert!(!p("second.token").exists());
    assert!(
        kbs.child.try_wait().unwrap().is_none(),
        "the first KBS stopped"
    );
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    drop(kbs);

    // An existing token file and a new store: refused before anything is made.
    std::fs::write(p("mine.token"), "not this store's\n").unwrap();
    let err = fails(&serve("new", "mine.token"));
    assert!(err.contains("mine.token exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(p("mine.token")).unwrap(),
        "not this store's\n"
    );
    assert!(!p("new").exists() && !p("new.kek").exists());

    // A data directory that is a dangling link: the start fails, the link stays.
    std::os::unix::fs::symlink(p("nowhere/store"), p("link")).unwrap();
    fails(&serve("link", "link.token"));
    assert!(
        std::fs::symlink_metadata(p("link")).is_ok(),
        "the link was removed"
    );
}

/// `--init-admin-token-file` naming a new file, on a store that has its administrator already,
/// says that no token was written (it was silently ignored).
#[test]
fn a_second_admin_token_file_is_answered_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["sim", "keygen", "--out", &s(&dir.path().join("hw.key"))]);
    drop(start_kbs(dir.path(), "kbs"));
    let mut args = kbs_serve_args(dir.path(), "again", "kbs");
    let at = args
        .iter()
        .position(|a| a == "--init-admin-token-file")
        .unwrap();
    let other = dir.path().join("other.token");
    args[at + 1] = s(&other);
    let mut kbs = Proc::start(&args, dir.path().join("again.log"));
    kbs.url(&dir.path().join("again.addr"));
    let log = kbs.log();
    assert!(log.contains("already has an administrator"), "{log}");
    assert!(!other.exists(), "a second token was written");
}

/// A server URL without its scheme is refused saying what to write (it reached the HTTP client
/// as "relative URL without a base"); another scheme is refused too.
#[test]
fn a_url_without_its_scheme_is_refused_saying_what_to_write() {
    let err = fails(&[
        "kbs",
        "keys",
        "--kbs",
        "127.0.0.1:8100",
        "--token-file",
        "t",
    ]);
    assert!(
        err.contains("has no scheme: write http://127.0.0.1:8100 (or https://127.0.0.1:8100)"),
        "{err}"
    );
    let err = fails(&[
        "proxy",
        "--upstream",
        "ftp://runtime:8000",
        "--policy",
        "p.toml",
    ]);
    assert!(err.contains("only http:// and https://"), "{err}");
}
