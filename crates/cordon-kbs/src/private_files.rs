//! Modes of the KBS data directory and its store: the directory 0700, the SQLite database and its
//! `-wal`, `-shm` and `-journal` files 0600, whatever the umask. The store holds every DEK in
//! plaintext (docs/threat-model.md), so no other local user may read it, or even list it.
//!
//! SQLite creates a database `0644` less the umask, and gives the files it creates beside it
//! (`-wal`, `-shm`, `-journal`) the database file's mode (`robust_open` with the mode from
//! `findCreateFileMode`, and an `fchmod` when the umask took bits away). So the database file is
//! created here, 0600, before SQLite opens it; existing files (from a build that did not do this)
//! lose their group and other bits, with a warning.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The files SQLite keeps beside a database, by suffix.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Creates `dir` with mode 0700 (its missing parents with the default mode), or takes group and
/// other permissions away from an existing one.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        // Exactly 0700 (a umask such as 0277 would have left it unwritable).
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
            tighten(dir, "data directory");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Creates the database file `db` with mode 0600 unless it exists, and takes group and other
/// permissions away from an existing database and its side files. Best effort: a file that cannot
/// be created here is left to SQLite's open, which reports why (a read-only directory, say), and
/// [`tighten_side_files`] runs again once it is open.
pub(crate) fn private_db(db: &Path) {
    let mut opts = OpenOptions::new();
    // Never through a link planted at the store's name.
    opts.write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW);
    match opts.open(db) {
        Ok(f) => {
            if let Err(e) = f.set_permissions(Permissions::from_mode(0o600)) {
                tracing::warn!(path = %db.display(), error = %e, "could not set the store's mode to 0600");
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(db, "store"),
        Err(_) => {}
    }
    tighten_side_files(db);
}

/// Takes group and other permissions away from SQLite's side files of `db` that exist.
pub(crate) fn tighten_side_files(db: &Path) {
    for suffix in SIDE_FILES {
        tighten(&side_file(db, suffix), "store file");
    }
}

/// `db` with `suffix` appended to its file name (`kbs.sqlite3` → `kbs.sqlite3-wal`).
pub(crate) fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes group and other permission bits (and set-id and sticky bits) from `path` if it exists
/// and has any, with a warning. Owner bits are kept as they are: a store made read-only on purpose
/// stays read-only (and is then refused as such by `Store::open`). A failure is a warning too: a
/// directory or file that belongs to another user cannot be changed, and SQLite's open says
/// whether it can be used at all. The file is opened without following a link and changed through
/// that descriptor, so a link (planted, or swapped in meanwhile) is never followed:
/// [`check_private`] refuses it.
fn tighten(path: &Path, what: &str) {
    // O_NONBLOCK: a FIFO planted at the name does not block the open.
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return;
    };
    let mode = match file.metadata() {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => return,
    };
    if mode & !0o700 == 0 {
        return;
    }
    let tight = mode & 0o700;
    match file.set_permissions(Permissions::from_mode(tight)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            "{what} was mode {mode:o}, open to other users: now {tight:o}"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "{what} is mode {mode:o}, open to other users, and could not be restricted"
        ),
    }
}

/// Refuses a data directory or store that another user controls, or that is still open to other
/// users, or that is a symbolic link: tightening is best effort, this is not. Another user who owns
/// the directory (a pre-made `/tmp/kbs`, say) could read every key or plant a store of their own.
/// The KBS's own user is learnt from a file it creates in the directory. When it cannot create one,
/// the directory is not writable to it: only links are refused here, and SQLite's open then refuses
/// the unwritable store, saying so ([`crate::store::Store::open`] checks again once it is open,
/// when the directory is known to be writable).
pub(crate) fn check_private(dir: &Path, db: &Path) -> io::Result<()> {
    let uid = own_uid(dir);
    let mut paths = vec![(dir.to_path_buf(), "data directory")];
    paths.push((db.to_path_buf(), "store"));
    for suffix in SIDE_FILES {
        paths.push((side_file(db, suffix), "store file"));
    }
    for (path, what) in paths {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let refuse = |why: String| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{what} {}: {why}; refusing to keep keys there",
                    path.display()
                ),
            ))
        };
        if meta.file_type().is_symlink() {
            return refuse("is a symbolic link".into());
        }
        let Some(uid) = uid else { continue };
        if meta.uid() != uid {
            return refuse(format!(
                "belongs to uid {}, not to the key broker's user (uid {uid})",
                meta.uid()
            ));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return refuse(format!("is mode {mode:o}, open to other users"));
        }
    }
    Ok(())
}

/// The uid files created in `dir` get (the KBS's effective uid), learnt without `unsafe` from a
/// probe file created exclusively and removed at once. `None` if none can be created.
fn own_uid(dir: &Path) -> Option<u32> {
    use rand::RngCore;
    let mut tag = [0u8; 8];
    rand::rng().fill_bytes(&mut tag);
    let probe = dir.join(format!(".owner-probe-{}", hex::encode(tag)));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&probe)
        .ok()?;
    let uid = file.metadata().ok().map(|m| m.uid());
    drop(file);
    let _ = std::fs::remove_file(&probe);
    uid
}

/// Creates the secret file `path` (a KEK) with mode 0600, never through a link: `Ok(None)` if
/// something exists at that name already (the caller then reads it with [`read_secret_file`]).
pub(crate) fn create_secret_file(path: &Path) -> io::Result<Option<std::fs::File>> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => {
            // Exactly 0600, whatever the umask.
            f.set_permissions(Permissions::from_mode(0o600))?;
            Ok(Some(f))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a secret file (a KEK), refusing a link, a file that is not regular, one that another
/// user owns, or one that other users may read or write: whoever can read it can read the keys,
/// whoever can write it can lock them away.
pub(crate) fn read_secret_file(path: &Path) -> io::Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(io::ErrorKind::PermissionDenied, "is a symbolic link")
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !meta.is_file() {
        return refuse("is not a regular file".into());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return refuse(format!(
            "is mode {mode:o}, open to other users (chmod 600 it)"
        ));
    }
    if let Some(parent) = path.parent() {
        let dir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Some(uid) = own_uid(dir) {
            if meta.uid() != uid {
                return refuse(format!(
                    "belongs to uid {}, not to the key broker's user (uid {uid})",
                    meta.uid()
                ));
            }
        }
    }
    // A KEK is 32 bytes; read a little more so that a wrong file is reported by its size.
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(64));
    file.by_ref().take(4096).read_to_end(&mut out)?;
    Ok(out)
}

/// Flushes the directory entry of a file just created, so that it survives a crash.
pub(crate) fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}
