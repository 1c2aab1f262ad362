//! The key broker when its disk fills up or its data directory turns read-only: clear errors, no
//! corruption, nothing half-stored, and everything acknowledged still there when space returns.

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

const POLICY: &str = "platforms = [\"sim\"]\nlaunch_measurements = [\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\"]\n";

async fn register(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    token: &str,
    id: &str,
) -> (u16, String) {
    let resp = admin_register(http, url, key, token, id, &rand::random(), POLICY).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn listed(http: &reqwest::Client, url: &str, key: &str, token: &str) -> Vec<String> {
    let keys: Vec<cordon_proto::kbs::KeyInfo> =
        admin_get(http, url, key, "/kbs/v1/admin/keys", token).await;
    keys.into_iter().map(|k| k.key_id).collect()
}

async fn audit_ok(http: &reqwest::Client, url: &str, key: &str, token: &str) -> usize {
    let events: Vec<cordon_proto::kbs::AuditEvent> =
        admin_get(http, url, key, "/kbs/v1/admin/audit", token).await;
    cordon_kbs::verify_audit_chain(&events)
        .unwrap_or_else(|seq| panic!("audit chain broken at {seq}"));
    events.len()
}

#[tokio::test]
async fn a_full_disk_refuses_writes_cleanly_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["sim", "keygen", "--out", &s(&dir.path().join("hw.key"))]);
    // The file size limit stands in for a full disk: writes past it fail (SIGXFSZ ignored, as a
    // process would see ENOSPC/EFBIG rather than die).
    let args = kbs_serve_args(dir.path(), "full", "kbs");
    let script = "trap '' XFSZ; ulimit -f 200; exec \"$0\" \"$@\"";
    let child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("full.log")).unwrap())
        .spawn()
        .unwrap();
    let mut limited = Proc::adopt(child, dir.path().join("full.log"));
    let url = limited.url(&dir.path().join("full.addr"));
    let token = std::fs::read_to_string(dir.path().join("token"))
        .unwrap()
        .trim()
        .to_string();
    let key = kbs_key(dir.path(), "full");
    let http = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let id = format!("k{i}");
        let (status, body) = register(&http, &url, &key, &token, &id).await;
        if status == 200 {
            acknowledged.push(id);
            continue;
        }
        refused = Some((id, status, body));
        break;
    }
    let (failed_id, status, body) = refused.expect("the disk never filled up");
    assert_eq!(status, 507, "{body}");
    assert!(
        body.contains("storage_full") && body.contains("nothing was stored"),
        "{body}"
    );
    assert!(!acknowledged.is_empty());
    // Still full: the KBS keeps answering, with the same clear error, and stays up.
    assert_eq!(register(&http, &url, &key, &token, "again").await.0, 507);
    assert!(
        limited.child.try_wait().unwrap().is_none(),
        "the KBS died: {}",
        limited.log()
    );
    assert!(
        limited.log().contains("storage is full"),
        "{}",
        limited.log()
    );
    drop(limited);

    // Space returns: a restart without the limit has every acknowledged key, none of the refused
    // ones, an intact audit chain, and takes new keys.
    let mut kbs = Proc::start(&args, dir.path().join("after.log"));
    std::fs::remove_file(dir.path().join("full.addr")).ok();
    let url = kbs.url(&dir.path().join("full.addr"));
    let keys = listed(&http, &url, &key, &token).await;
    for id in &acknowledged {
        assert!(keys.contains(id), "acknowledged key {id} lost");
    }
    assert!(
        !keys.contains(&failed_id) && !keys.contains(&"again".to_string()),
        "{keys:?}"
    );
    assert_eq!(
        audit_ok(&http, &url, &key, &token).await,
        acknowledged.len()
    );
    assert_eq!(register(&http, &url, &key, &token, "after").await.0, 200);
}

#[tokio::test]
async fn a_read_only_data_directory_is_refused_with_a_clear_error_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["sim", "keygen", "--out", &s(&dir.path().join("hw.key"))]);
    let args = kbs_serve_args(dir.path(), "ro", "kbs");
    let http = reqwest::Client::new();
    {
        let mut kbs = Proc::start(&args, dir.path().join("first.log"));
        let url = kbs.url(&dir.path().join("ro.addr"));
        let token = std::fs::read_to_string(dir.path().join("token"))
            .unwrap()
            .trim()
            .to_string();
        let key = kbs_key(dir.path(), "ro");
        assert_eq!(register(&http, &url, &key, &token, "kept").await.0, 200);
    }
    std::fs::remove_file(dir.path().join("ro.addr")).unwrap();

    // Make the store read-only. Permissions do not bind root, so as root the KBS runs as
    // `nobody` (setpriv) for this part.
    let root = std::fs::metadata(dir.path()).unwrap().uid() == 0;
    let set_mode = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let store = dir.path().join("kbs");
    for e in std::fs::read_dir(&store).unwrap() {
        set_mode(&e.unwrap().path(), 0o444);
    }
    set_mode(&store, 0o555);
    set_mode(dir.path(), 0o777);
    // The KEK beside the store stays readable to the KBS's user (`nobody` when run as root): the
    // test is about the store.
    let kek = dir.path().join("kbs.kek");
    let chown = |uid: u32| std::os::unix::fs::chown(&kek, Some(uid), Some(uid)).unwrap();
    if root {
        chown(65534);
    }
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    // Waited for through its address file: a KBS that starts after all fails the test rather
    // than keeping it waiting.
    let stderr_log = dir.path().join("read-only.log");
    let child = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .unwrap();
    let mut refused = Proc::adopt(child, stderr_log);
    let stderr = match refused.wait_ready(&dir.path().join("ro.addr")) {
        Ok(url) => panic!("started on a read-only store, at {url}:\n{}", refused.log()),
        Err(_) => refused.log(),
    };
    let status = refused.child.wait().unwrap();
    assert!(!status.success(), "started on a read-only store:\n{stderr}");
    assert!(stderr.contains("is read-only"), "{stderr}");
    assert!(!dir.path().join("ro.addr").exists());

    // Writable again: it starts, and what was stored is there.
    if root {
        chown(0);
    }
    set_mode(&store, 0o755);
    for e in std::fs::read_dir(&store).unwrap() {
        set_mode(&e.unwrap().path(), 0o644);
    }
    let mut kbs = Proc::start(&args, dir.path().join("after.log"));
    let url = kbs.url(&dir.path().join("ro.addr"));
    let token = std::fs::read_to_string(dir.path().join("token"))
        .unwrap()
        .trim()
        .to_string();
    let key = kbs_key(dir.path(), "ro");
    assert!(listed(&http, &url, &key, &token)
        .await
        .contains(&"kept".to_string()));
    audit_ok(&http, &url, &key, &token).await;
}
