//! The KBS data directory is 0700 and its SQLite files 0600, whatever the umask; directories and
//! files from before are tightened. The umask is per process, so the tests take turns.

use cordon_kbs::custody::MemoryKek;
use cordon_kbs::{Keks, Store};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

static UMASK: Mutex<()> = Mutex::new(());

fn keks() -> Keks {
    Keks::new(std::sync::Arc::new(MemoryKek::new([7; 32])))
}

/// Runs `f` with the process umask set to `mask`.
fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
    let _turn = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: umask(2) has no memory effects; the lock keeps the other tests of this binary from
    // creating files meanwhile.
    let old = unsafe { libc::umask(mask) };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    out
}

/// The permission bits, in octal (so that a failure reads `755`, not `493`).
fn mode(p: &Path) -> String {
    let m = std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode();
    format!("{:o}", m & 0o777)
}

fn octal(m: u32) -> String {
    format!("{m:o}")
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// The data directory and every store file, with their modes; the WAL and shared-memory files
/// must exist (the store is open and was written).
fn assert_private(data: &Path, what: &str) {
    assert_eq!(mode(data), "700", "{what}: data directory");
    for f in ["kbs.sqlite3", "kbs.sqlite3-wal", "kbs.sqlite3-shm"] {
        assert_eq!(mode(&data.join(f)), "600", "{what}: {f}");
    }
}

#[test]
fn a_new_store_is_private_whatever_the_umask() {
    for mask in [0o022, 0o002, 0o000] {
        with_umask(mask, || {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("var/kbs");
            let store = Store::open(&data, keks()).unwrap();
            store.set_admin(&[7; 32], &[7; 32], "00").unwrap();
            assert_private(&data, &format!("umask {mask:03o}"));
            // Parents are created as any directory is: only the data directory is private.
            assert_eq!(mode(&dir.path().join("var")), octal(0o777 & !mask));
            drop(store);
            // Opened again (SQLite removed -wal and -shm at close and makes them anew).
            let store = Store::open(&data, keks()).unwrap();
            store.set_admin(&[8; 32], &[8; 32], "00").unwrap();
            assert_private(&data, &format!("umask {mask:03o}, reopened"));
        });
    }
}

#[test]
fn an_existing_open_directory_and_store_are_tightened() {
    with_umask(0o022, || {
        // An empty data directory made beforehand, 0755.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kbs");
        std::fs::create_dir(&data).unwrap();
        set_mode(&data, 0o755);
        let store = Store::open(&data, keks()).unwrap();
        store.set_admin(&[7; 32], &[7; 32], "00").unwrap();
        assert_private(&data, "pre-made 0755 directory");
        drop(store);

        // A store as an earlier build left it: directory 0755, database 0644, and a WAL and
        // shared-memory file left by a crash, 0666.
        set_mode(&data, 0o755);
        set_mode(&data.join("kbs.sqlite3"), 0o644);
        for f in ["kbs.sqlite3-wal", "kbs.sqlite3-shm"] {
            let p = data.join(f);
            if !p.exists() {
                std::fs::File::create(&p).unwrap();
            }
            set_mode(&p, 0o666);
        }
        let store = Store::open(&data, keks()).unwrap();
        assert_eq!(store.admin_token_hash().unwrap(), Some([7; 32]));
        assert_private(&data, "store of an earlier build");
        // Group bits alone are taken away too (0750 becomes 0700). Tightening only removes group
        // and other bits; it keeps the owner's as they are and never adds one, which this mode
        // cannot show (a directory without the owner's write bit is a read-only store, refused).
        drop(store);
        set_mode(&data, 0o750);
        Store::open(&data, keks()).unwrap();
        assert_eq!(mode(&data), "700");
    });
}

#[test]
fn sqlite_gives_its_wal_and_shm_files_the_database_files_mode() {
    // What Store::open relies on: the -wal and -shm files SQLite creates get the database file's
    // mode, not SQLite's default (0644 less the umask, so 0644 under umask 0). 0640 tells the two
    // apart from both that default and 0600.
    with_umask(0o000, || {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.sqlite3");
        std::fs::File::create(&db).unwrap();
        set_mode(&db, 0o640);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        for f in ["t.sqlite3-wal", "t.sqlite3-shm"] {
            assert_eq!(mode(&dir.path().join(f)), "640", "{f}");
        }
        // And a database SQLite creates itself is 0644 less the umask: why Store::open makes it.
        let own = dir.path().join("own.sqlite3");
        let conn = rusqlite::Connection::open(&own).unwrap();
        conn.execute_batch("CREATE TABLE t (x);").unwrap();
        assert_eq!(mode(&own), "644");
    });
}

/// A store the KBS does not control is refused, not merely warned about: a link planted at the
/// store's name.
#[test]
fn a_store_reached_through_a_link_is_refused() {
    let _turn = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kbs");
    std::fs::create_dir(&data).unwrap();
    set_mode(&data, 0o700);
    let elsewhere = dir.path().join("elsewhere.sqlite3");
    std::os::unix::fs::symlink(&elsewhere, data.join("kbs.sqlite3")).unwrap();
    let err = Store::open(&data, keks())
        .err()
        .expect("a linked store was opened");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(
        !elsewhere.exists(),
        "the store was created through the link"
    );
    // A link to an existing file open to others: refused, and the file's mode is not touched
    // through the link.
    std::fs::write(&elsewhere, b"someone's file").unwrap();
    set_mode(&elsewhere, 0o644);
    let err = Store::open(&data, keks())
        .err()
        .expect("a linked store was opened");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(
        mode(&elsewhere),
        "644",
        "a mode was changed through the link"
    );
}

/// A data directory another user owns is refused: that user could read every key or plant a store
/// of their own. Only root can make one; as any other user the test says on stderr that it was
/// skipped (a pass that checked nothing would read as a pass).
#[test]
fn a_data_directory_another_user_owns_is_refused() {
    // SAFETY: geteuid(2) has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        // Written to the process's stderr, not through eprintln!, which the test harness
        // captures and shows only for failing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "a_data_directory_another_user_owns_is_refused: skipped: needs root (to make a directory another user owns)"
        );
        return;
    }
    let _turn = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    set_mode(&foreign, 0o777);
    std::os::unix::fs::chown(&foreign, Some(1234), Some(1234)).unwrap();
    let err = Store::open(&foreign, keks())
        .err()
        .expect("a foreign directory was used");
    assert!(err.to_string().contains("belongs to uid 1234"), "{err}");
}

// ---- SQLite's shared-memory lock after Store::open ----

/// The POSIX locks this process holds on `path`, from /proc/locks: (start, end) byte ranges.
fn own_posix_locks(path: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino();
    let pid = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "1: POSIX  ADVISORY  READ 1234 08:01:123456 128 128"
            let at = f.iter().position(|w| *w == "POSIX")?;
            let (p, dev, start, end) = (
                f.get(at + 3)?,
                f.get(at + 4)?,
                f.get(at + 5)?,
                f.get(at + 6)?,
            );
            let inode = dev.rsplit(':').next()?;
            (*p == pid && inode == ino.to_string()).then(|| (start.to_string(), end.to_string()))
        })
        .collect()
}

/// SQLite holds a shared lock on the `-shm` file's DMS byte (offset 128) for as long as a
/// connection has it mapped: another process that finds no such lock takes itself for the only
/// user and resets the file. A control: a plain connection holds it.
#[test]
fn a_plain_sqlite_connection_holds_the_shm_dms_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.sqlite3");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let shm = dir.path().join("t.sqlite3-shm");
    let locks = own_posix_locks(&shm);
    assert!(locks.iter().any(|(s, _)| s == "128"), "{locks:?}");
}

/// Store::open opens and closes the store's side files to check their modes, which drops the
/// process's POSIX locks on them; it then closes and reopens its connection, so that while the
/// store is open the process holds SQLite's lock on the `-shm` file's DMS byte again (without
/// it, another process opening the store resets that file under the KBS's mapping of it).
#[test]
fn store_open_leaves_the_writer_holding_the_shm_dms_lock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kbs");
    let store = Store::open(&data, keks()).unwrap();
    let shm = data.join("kbs.sqlite3-shm");
    let locks = own_posix_locks(&shm);
    assert!(
        locks.iter().any(|(s, _)| s == "128"),
        "no lock on the -shm file's DMS byte while the store is open: {locks:?}"
    );
    drop(store);
}
