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
