//! What `cordon seal`, `unseal` and `dataset seal` leave on disk: an interrupted run (SIGINT,
//! SIGTERM, SIGHUP) leaves neither its output nor a temporary file, the temporary file is 0600 while it
//! exists, the plaintext is 0600 in its place, and no run overwrites an existing file without
//! `--force`, or an input even with it.

mod common;

use common::{cordon, ok, s, BIN};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("CORDON_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    err
}

fn wait(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("{what}: cordon did not exit within 60 s of the signal");
}

/// The first file in `dir` that was not in `before` and holds at least `min_len` bytes: the
/// command's temporary output, once it has written that much.
fn wait_for_temp(
    dir: &Path,
    before: &BTreeSet<String>,
    min_len: u64,
    child: &mut Child,
) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for name in entries(dir).difference(before) {
            let p = dir.join(name);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.len() >= min_len) {
                return p;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "cordon exited ({status}) before it could be interrupted: {}",
                stderr_of(child)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no temporary output of {min_len} bytes within 120 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `sig` to a command that is writing `temp`, and checks what it leaves: the temporary file
/// was 0600, and now neither it, nor any output, nor any other new file is there.
fn interrupt(
    child: &mut Child,
    sig: libc::c_int,
    dir: &Path,
    before: &BTreeSet<String>,
    temp: &Path,
    outputs: &[&Path],
) {
    let what = format!("signal {sig}");
    assert_eq!(
        mode(temp),
        0o600,
        "{what}: temporary file {}",
        temp.display()
    );
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    let status = wait(child, &what);
    assert!(!status.success(), "{what}: exited successfully");
    assert_eq!(
        status.signal(),
        Some(sig),
        "{what}: not ended by the signal ({status}): {}",
        stderr_of(child)
    );
    for out in outputs {
        assert!(
            std::fs::symlink_metadata(out).is_err(),
            "{what}: {} exists",
            out.display()
        );
    }
    assert!(
        !temp.exists(),
        "{what}: temporary {} left behind",
        temp.display()
    );
    assert_eq!(&entries(dir), before, "{what}: files left behind");
}

fn keygen(dir: &Path) -> String {
    let key = s(&dir.join("owner.key"));
    ok(&["keygen", "--out", &key]);
    key
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn an_interrupted_unseal_leaves_no_plaintext_behind() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let owner = keygen(dir.path());
        let plain = data(4 << 20);
        std::fs::write(p("plain.bin"), &plain).unwrap();
        ok(&[
            "seal",
            &s(&p("plain.bin")),
            "--out",
            &s(&p("a.sealed")),
            "--key-out",
            &s(&p("a.dek")),
            "--owner-key",
            &owner,
            "--chunk-size",
            "65536",
        ]);
        let sealed = std::fs::read(p("a.sealed")).unwrap();
        // The artifact reaches `cordon unseal` through a FIFO that the test feeds: three quarters of
        // it, and then nothing. Unseal writes the plaintext of the chunks it got and waits for the
        // rest, so the signal finds it mid-write every time, however fast the machine.
        let fifo = p("feed");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let out = p("out.bin");
        let before = entries(dir.path());
        let mut child = spawn(&[
            "unseal",
            &s(&fifo),
            "--key",
            &s(&p("a.dek")),
            "--out",
            &s(&out),
        ]);
        let mut feed = open_fifo_writer(&fifo, &mut child);
        let part = sealed[..sealed.len() * 3 / 4].to_vec();
        let feeder = std::thread::spawn(move || {
            // Fails with EPIPE once cordon is gone; the write end stays open until then.
            let _ = feed.write_all(&part);
            feed
        });
        let temp = wait_for_temp(dir.path(), &before, 1 << 20, &mut child);
        // What it holds is plaintext: the reason it must be 0600 and must not survive.
        let held = std::fs::read(&temp).unwrap();
        assert!(held.len() >= 1 << 20 && plain.starts_with(&held[..1 << 20]));
        interrupt(&mut child, sig, dir.path(), &before, &temp, &[&out]);
        drop(feeder.join().unwrap());
    }
}

/// Opens the write end of `fifo` once `child` has opened the read end (a non-blocking open fails
/// with ENXIO until then), then makes it blocking.
fn open_fifo_writer(fifo: &Path, child: &mut Child) -> File {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => {
                use std::os::fd::AsRawFd;
                // SAFETY: fcntl(2) on a descriptor we own.
                unsafe {
                    let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
                    libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
                }
                return f;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("opening {}: {e}", fifo.display()),
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "cordon exited ({status}) before reading: {}",
                stderr_of(child)
            );
        }
        assert!(Instant::now() < deadline, "cordon never opened the FIFO");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_interrupted_seal_leaves_nothing_behind() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let owner = keygen(dir.path());
        // The input reaches `cordon seal` through a FIFO that the test feeds: part of it, and then
        // nothing. Seal reads a pipe whole before it encrypts (the manifest names the size first),
        // with its temporary output already created, and waits for the rest; so the signal finds
        // the temporary output there every time, however fast the machine, and no run can
        // finish and write its outputs before the signal.
        let fifo = p("feed");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (out, key) = (p("big.sealed"), p("big.dek"));
        let before = entries(dir.path());
        let mut child = spawn(&[
            "seal",
            &s(&fifo),
            "--out",
            &s(&out),
            "--key-out",
            &s(&key),
            "--owner-key",
            &owner,
        ]);
        let mut feed = open_fifo_writer(&fifo, &mut child);
        let part = data(3 << 20);
        let feeder = std::thread::spawn(move || {
            // Fails with EPIPE once cordon is gone; the write end stays open until then.
            let _ = feed.write_all(&part);
            feed
        });
        let temp = wait_for_temp(dir.path(), &before, 0, &mut child);
        interrupt(&mut child, sig, dir.path(), &before, &temp, &[&out, &key]);
        drop(feeder.join().unwrap());
    }
}

#[test]
fn seal_reads_a_pipe_whole_and_makes_the_output_directories() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let owner = keygen(dir.path());
    let plain = data(200_000);
    std::fs::write(p("plain.bin"), &plain).unwrap();
    // A pipe as the input (its size is not known in advance), both outputs in directories that
    // do not exist yet.
    let (out, key) = (p("sealed/a/x.sealed"), p("keys/b/x.dek"));
    let mut child = Command::new(BIN)
        .args([
            "seal",
            "/dev/stdin",
            "--out",
            &s(&out),
            "--key-out",
            &s(&key),
            "--owner-key",
            &owner,
            "--chunk-size",
            "65536",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let fed = plain.clone();
    let feeder = std::thread::spawn(move || stdin.write_all(&fed).unwrap());
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(200000 bytes)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    ok(&[
        "unseal",
        &s(&out),
        "--key",
        &s(&key),
        "--out",
        &s(&p("back")),
    ]);
    assert_eq!(std::fs::read(p("back")).unwrap(), plain);
}

#[test]
fn public_files_follow_the_umask_and_keygen_keeps_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // `keygen` writes the secret key 0600 and the public key as open(2) would under the umask.
    for (umask, public) in [("022", 0o644), ("077", 0o600), ("002", 0o664)] {
        let key = p(&format!("owner-{umask}.key"));
        let o = Command::new("sh")
            .args([
                "-c",
                &format!("umask {umask} && exec \"$0\" keygen --out \"$1\""),
                BIN,
                &s(&key),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(mode(&key), 0o600, "umask {umask}");
        assert_eq!(mode(&key.with_extension("pub")), public, "umask {umask}");
    }
    // The public key goes next to the secret one with .pub: a key file named *.pub would be
    // overwritten by its own public key. Refused, nothing written.
    let err = fails(&["keygen", "--out", &s(&p("mine.pub"))]);
    assert!(err.contains("mine.pub"), "{err}");
    assert!(!p("mine.pub").exists());
    // A symlink planted at the .pub path: refused without --force (naming it), and with it
    // replaced, never written through.
    std::fs::write(p("victim"), b"keep").unwrap();
    std::os::unix::fs::symlink(p("victim"), p("other.pub")).unwrap();
    let err = fails(&["keygen", "--out", &s(&p("other.key"))]);
    assert!(
        err.contains("other.pub") && err.contains("--force"),
        "{err}"
    );
    assert!(!p("other.key").exists());
    ok(&["keygen", "--out", &s(&p("other.key")), "--force"]);
    assert_eq!(std::fs::read(p("victim")).unwrap(), b"keep");
    assert!(!std::fs::symlink_metadata(p("other.pub"))
        .unwrap()
        .file_type()
        .is_symlink());
    let names: Vec<String> = entries(dir.path())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// Runs `cordon args`, which must fail; its stderr.
fn fails(args: &[&str]) -> String {
    let out = cordon(args);
    assert!(!out.status.success(), "cordon {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn seal_and_unseal_overwrite_nothing_without_force_and_no_input_ever() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| s(&dir.path().join(n));
    let owner = keygen(dir.path());
    let plain = data(300_000);
    std::fs::write(p("x"), &plain).unwrap();
    let seal = |input: &str, out: &str, key: &str, force: bool| {
        let mut args = vec![
            "seal",
            input,
            "--out",
            out,
            "--key-out",
            key,
            "--owner-key",
            &owner,
        ];
        if force {
            args.push("--force");
        }
        cordon(&args)
    };
    let failed = |o: std::process::Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };

    // `seal x --out x` destroyed its input: refused, with and without --force, also under
    // another name for the same file; the input is unchanged.
    std::fs::hard_link(p("x"), p("x-link")).unwrap();
    for (out, force) in [
        (p("x"), false),
        (p("x"), true),
        (format!("{}/./x", s(dir.path())), true),
        (p("x-link"), true),
    ] {
        let err = failed(seal(&p("x"), &out, &p("k"), force));
        assert!(err.contains("is the input"), "{out} {force}: {err}");
        assert_eq!(std::fs::read(p("x")).unwrap(), plain);
        assert!(!dir.path().join("k").exists());
    }
    let err = failed(seal(&p("x"), &p("k"), &p("x"), true));
    assert!(
        err.contains("--key-out") && err.contains("is the input"),
        "{err}"
    );
    assert_eq!(std::fs::read(p("x")).unwrap(), plain);
    let err = failed(seal(&p("x"), &p("same"), &p("same"), true));
    assert!(err.contains("both name"), "{err}");

    // A first seal; a second one to the same outputs is refused without --force, naming the path.
    assert!(seal(&p("x"), &p("x.sealed"), &p("x.dek"), false)
        .status
        .success());
    let (sealed1, key1) = (
        std::fs::read(p("x.sealed")).unwrap(),
        std::fs::read(p("x.dek")).unwrap(),
    );
    assert_eq!(mode(&dir.path().join("x.dek")), 0o600);
    let err = failed(seal(&p("x"), &p("x.sealed"), &p("other.dek"), false));
    assert!(
        err.contains(&p("x.sealed")) && err.contains("--force"),
        "{err}"
    );
    let err = failed(seal(&p("x"), &p("other.sealed"), &p("x.dek"), false));
    assert!(
        err.contains(&p("x.dek")) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(p("x.sealed")).unwrap(), sealed1);
    assert_eq!(std::fs::read(p("x.dek")).unwrap(), key1);
    assert!(!dir.path().join("other.sealed").exists() && !dir.path().join("other.dek").exists());
    // With --force both are replaced (a fresh DEK), and they open together.
    assert!(seal(&p("x"), &p("x.sealed"), &p("x.dek"), true)
        .status
        .success());
    assert_ne!(std::fs::read(p("x.sealed")).unwrap(), sealed1);
    assert_ne!(std::fs::read(p("x.dek")).unwrap(), key1);
    assert_eq!(mode(&dir.path().join("x.dek")), 0o600);

    // unseal: the plaintext is 0600 in place; an existing output is refused without --force and
    // replaced with it; the artifact and the key file are never the output.
    ok(&[
        "unseal",
        &p("x.sealed"),
        "--key",
        &p("x.dek"),
        "--out",
        &p("back"),
    ]);
    assert_eq!(std::fs::read(p("back")).unwrap(), plain);
    assert_eq!(mode(&dir.path().join("back")), 0o600);
    std::fs::write(p("back"), b"old").unwrap();
    std::fs::set_permissions(p("back"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(&[
        "unseal",
        &p("x.sealed"),
        "--key",
        &p("x.dek"),
        "--out",
        &p("back"),
    ]);
    assert!(err.contains(&p("back")) && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(p("back")).unwrap(), b"old");
    ok(&[
        "unseal",
        &p("x.sealed"),
        "--key",
        &p("x.dek"),
        "--out",
        &p("back"),
        "--force",
    ]);
    assert_eq!(std::fs::read(p("back")).unwrap(), plain);
    assert_eq!(
        mode(&dir.path().join("back")),
        0o600,
        "replaced file keeps 0644"
    );
    let sealed = std::fs::read(p("x.sealed")).unwrap();
    let key = std::fs::read(p("x.dek")).unwrap();
    for out in [p("x.sealed"), p("x.dek")] {
        let err = fails(&[
            "unseal",
            &p("x.sealed"),
            "--key",
            &p("x.dek"),
            "--out",
            &out,
            "--force",
        ]);
        assert!(err.contains("is the input"), "{err}");
    }
    assert_eq!(std::fs::read(p("x.sealed")).unwrap(), sealed);
    assert_eq!(std::fs::read(p("x.dek")).unwrap(), key);

    // Nothing else was left in the directory (no temporary files).
    let names: Vec<String> = entries(dir.path()).into_iter().collect();
    assert_eq!(
        names,
        [
            "back",
            "owner.key",
            "owner.pub",
            "x",
            "x-link",
            "x.dek",
            "x.sealed"
        ],
    );
}

#[test]
fn dataset_seal_overwrites_nothing_without_force_and_no_input_ever() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| s(&dir.path().join(n));
    ok(&[
        "party",
        "keygen",
        "--name",
        "clinic",
        "--out",
        &p("clinic.party"),
    ]);
    let csv = "age,label\n30,0\n40,1\n";
    std::fs::write(p("data.csv"), csv).unwrap();
    let (party, input) = (p("clinic.party"), p("data.csv"));
    let seal = |out: &str, key: &str, force: bool| {
        let mut args = vec![
            "dataset",
            "seal",
            "--party",
            &party,
            "--input",
            &input,
            "--out",
            out,
            "--key-out",
            key,
        ];
        if force {
            args.push("--force");
        }
        cordon(&args)
    };
    assert!(seal(&p("d.sealed"), &p("d.key"), false).status.success());
    assert_eq!(mode(&dir.path().join("d.key")), 0o600);
    let sealed = std::fs::read(p("d.sealed")).unwrap();
    for (out, key) in [(p("d.sealed"), p("new.key")), (p("new.sealed"), p("d.key"))] {
        let o = seal(&out, &key, false);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("--force"), "{err}");
    }
    assert_eq!(std::fs::read(p("d.sealed")).unwrap(), sealed);
    for (out, key) in [
        (p("data.csv"), p("new.key")),
        (p("new.sealed"), p("data.csv")),
        (p("clinic.party"), p("new.key")),
    ] {
        let o = seal(&out, &key, true);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("is the input"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(p("data.csv")).unwrap(), csv);
    assert!(seal(&p("d.sealed"), &p("d.key"), true).status.success());
    assert_ne!(std::fs::read(p("d.sealed")).unwrap(), sealed);
    let names: Vec<String> = entries(dir.path()).into_iter().collect();
    assert_eq!(names, ["clinic.party", "d.key", "d.sealed", "data.csv"]);
}
