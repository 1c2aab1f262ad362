//! `cordon kbs audit --verify`: an administrator who saves the KBS's signed checkpoints detects a
//! store restored from an older copy (its audit log rolled back), online and offline.

mod common;
use common::*;
use std::path::Path;

/// Copies the store directory `from` to `to` (files only, modes kept), as a host restoring or
/// keeping an old copy of the KBS's data would.
fn copy_store(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir(to).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn saved_checkpoints_detect_a_rolled_back_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    ok(&["keygen", "--out", &s(&p("owner.key"))]);
    std::fs::write(p("model.bin"), b"a model").unwrap();
    std::fs::write(
        p("release.toml"),
        format!(
            "platforms = [\"sim\"]\nlaunch_measurements = [\"{}\"]\n",
            "11".repeat(48)
        ),
    )
    .unwrap();
    let register = |url: &str, n: u32| {
        let dek = p(&format!("model{n}.dek"));
        ok(&[
            "seal",
            &s(&p("model.bin")),
            "--out",
            &s(&p(&format!("model{n}.sealed"))),
            "--key-out",
            &s(&dek),
            "--owner-key",
            &s(&p("owner.key")),
        ]);
        ok(&[
            "kbs",
            "register",
            "--kbs",
            url,
            "--token-file",
            &s(&p("token")),
            "--key",
            &s(&dek),
            "--policy",
            &s(&p("release.toml")),
        ]);
    };
    let audit = |url: &str, extra: &[&str]| {
        let mut args = vec!["kbs", "audit", "--kbs", url, "--token-file"];
        let token = s(&p("token"));
        args.push(&token);
        args.push("--verify");
        args.extend_from_slice(extra);
        cordon(&args)
    };

    let (kbs, url) = start_kbs(dir.path(), "kbs");
    register(&url, 1);
    let cp1 = s(&p("cp1.json"));
    let out = audit(&url, &["--checkpoint-out", &cp1]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(p("entries1.json"), &out.stdout).unwrap();
    drop(kbs);
    copy_store(&p("kbs"), &p("kbs-old"));

    // More events: the new checkpoint extends the saved one.
    let (kbs, url) = start_kbs(dir.path(), "kbs");
    register(&url, 2);
    let cp2 = s(&p("cp2.json"));
    let out = audit(&url, &["--since", &cp1, "--checkpoint-out", &cp2]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("extends the earlier checkpoint"), "{err}");
    drop(kbs);

    // Offline: the saved events against the saved checkpoint, no KBS; then the events edited.
    let offline = |entries: &str, checkpoint: &str| {
        cordon(&[
            "kbs",
            "audit",
            "--verify",
            "--entries",
            entries,
            "--checkpoint",
            checkpoint,
            "--token-file",
            &s(&p("token")),
        ])
    };
    let out = offline(&s(&p("entries1.json")), &cp1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edited = std::fs::read_to_string(p("entries1.json"))
        .unwrap()
        .replace("key_registered", "key_denied");
    std::fs::write(p("edited.json"), edited).unwrap();
    let out = offline(&s(&p("edited.json")), &cp1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("AUDIT LOG VERIFICATION FAILED"), "{err}");

    // The host restores the older copy of the store: its chain is intact, but the log is shorter
    // than the checkpoint the administrator saved.
    copy_store(&p("kbs-old"), &p("kbs"));
    let (_kbs, url) = start_kbs(dir.path(), "kbs");
    let out = audit(&url, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = audit(&url, &["--since", &cp2]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a rolled-back store passed");
    assert!(err.contains("ROLLED BACK"), "{err}");
}
