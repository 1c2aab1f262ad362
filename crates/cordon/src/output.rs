//! Output files written whole or not at all.
//!
//! A [`TempOutput`] is a temporary file next to its destination (so the final rename stays on one
//! file system and is atomic), created exclusively (`O_CREAT|O_EXCL`: a file or symlink planted at
//! the name makes creation fail instead of redirecting the write) under an unpredictable name, with
//! mode 0600 from the start, so plaintext or key material in it is never readable by others, even
//! half written. It becomes the destination only when complete and synced ([`commit_all`]). Until
//! then it is removed on error (drop), and on SIGINT, SIGTERM or SIGHUP: while any temporary
//! output exists the process handles those signals by removing every temporary output, then
//! dying of the signal as it would have (so the exit status still says which signal). A signal
//! the process ignores (SIGHUP under nohup) stays ignored; once the last temporary output is gone,
//! the previous actions are back.
//!
//! Several outputs are put in place together: all of them or, if one fails, none (the files they
//! replace are set aside first and put back), with the interrupt signals held back only while
//! they are renamed (the data is synced before).

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Final mode of files whose content is public (sealed artifacts, receipts, address files), less
/// the umask, as open(2) would give it: 0644 under the usual umask 022, 0600 under 077.
pub const PUBLIC: u32 = 0o666;
/// Final mode of plaintext and key material (less the umask, which can only narrow it).
pub const SECRET: u32 = 0o600;

/// `mode` less the process's umask.
pub fn with_umask(mode: u32) -> u32 {
    mode & !umask()
}

/// The process's umask, read once from `/proc/self/status` (Linux 4.7 and later say it there
/// without changing it). Elsewhere the usual 022 is assumed: reading the umask would mean setting
/// it, briefly wrong for other threads, and it only ever narrows files whose content is public.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
            & 0o777
    })
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The directory `path` is in (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A hidden name next to `dest` that nobody can guess: `.name.<128 random bits>.suffix`. The
/// destination's name is cut to 200 bytes so that the whole stays within NAME_MAX (255).
fn hidden_sibling(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dir_of(dest).join(format!(".{}.{}.{suffix}", cut(&name, 200), random_hex()))
}

/// A file being written for `dest`; see the module documentation.
pub struct TempOutput {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    slot: Option<cleanup::Slot>,
}

impl TempOutput {
    /// Creates the temporary file for `dest` in `dest`'s directory, which must exist.
    pub fn create(dest: &Path) -> Result<TempOutput> {
        if dest.file_name().is_none() {
            bail!("{} does not name a file", dest.display());
        }
        let mut last_err = None;
        for _ in 0..8 {
            // Hidden, and not guessable, so nobody can plant a file or a symlink at it in advance
            // (and O_EXCL refuses one anyway).
            let tmp = hidden_sibling(dest, "tmp");
            // Registered before it exists: a signal in between removes nothing of anyone's (the
            // name is fresh), while the other order could leave the file behind.
            let slot = cleanup::register(&tmp)
                .with_context(|| format!("registering {} for cleanup", tmp.display()))?;
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(SECRET);
            }
            match opts.open(&tmp) {
                Ok(file) => {
                    return Ok(TempOutput {
                        dest: dest.to_path_buf(),
                        tmp,
                        file: Some(file),
                        slot: Some(slot),
                    })
                }
                Err(e) => {
                    cleanup::unregister(slot);
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(e).with_context(|| {
                            format!("creating a temporary file next to {}", dest.display())
                        });
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("no free name")))
            .with_context(|| format!("creating a temporary file next to {}", dest.display()))
    }

    /// The open temporary file (readable and writable, at its current position).
    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("a TempOutput holds its file until committed")
    }

    /// Gives the file its final `mode` (less the umask) and syncs it: what may take long (a
    /// multi-GB file), done before the signals are held.
    fn finish(&mut self, mode: u32) -> std::io::Result<()> {
        let file = self
            .file
            .take()
            .expect("a TempOutput holds its file until committed");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(with_umask(mode)))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        file.sync_all()
    }

    /// Moves the finished file to its destination: over what is there when `replace`, else only
    /// if nothing is (`AlreadyExists` otherwise, checked atomically by link(2) where the file
    /// system has hard links). With `keep`, a file it replaces is first set aside under a hidden
    /// name, returned, so that the caller can put it back ([`commit_all`]).
    fn place(&mut self, replace: bool, keep: bool) -> std::io::Result<Option<PathBuf>> {
        let mut kept = None;
        if replace {
            if keep {
                kept = set_aside(&self.dest)?;
            }
            if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
                if let Some(k) = &kept {
                    // Best effort: the caller reports what it could not put back.
                    let _ = restore(k, &self.dest);
                }
                return Err(e);
            }
        } else {
            match std::fs::hard_link(&self.tmp, &self.dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.tmp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(e),
                Err(_) => {
                    // No hard links on this file system: check, then rename (not atomic).
                    if std::fs::symlink_metadata(&self.dest).is_ok() {
                        return Err(std::io::ErrorKind::AlreadyExists.into());
                    }
                    std::fs::rename(&self.tmp, &self.dest)?;
                }
            }
        }
        // Nothing left to remove: forget the temporary name.
        if let Some(slot) = self.slot.take() {
            cleanup::unregister(slot);
        }
        Ok(kept)
    }
}

/// Sets the file (or symlink) at `dest` aside under a hidden name in the same directory, so that
/// it can be put back by renaming it over `dest`: a hard link, so that `dest` stays in place
/// meanwhile; where the file system has none, `dest` itself is renamed. `None` when there is
/// nothing to keep (no file, or a directory, which the rename over it then refuses).
fn set_aside(dest: &Path) -> std::io::Result<Option<PathBuf>> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(m) if m.is_dir() => return Ok(None),
        Ok(_) => {}
    }
    let kept = hidden_sibling(dest, "old");
    if std::fs::hard_link(dest, &kept).is_err() {
        std::fs::rename(dest, &kept)?;
    }
    Ok(Some(kept))
}

/// Puts a file set aside by [`set_aside`] back at `dest`. When `dest` is still the same file (a
/// hard link was set aside and nothing replaced `dest`), rename(2) does nothing, so the hidden
/// link is removed rather than left behind as a second name of the file (a key file's, perhaps).
fn restore(kept: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::rename(kept, dest)?;
    match std::fs::remove_file(kept) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.file.take();
            let _ = std::fs::remove_file(&self.tmp);
            cleanup::unregister(slot);
        }
    }
}

/// Commits a sealed artifact (`out`, complete) together with its key file (`key_text` written to
/// `key_path`): the key first, both or neither (see [`commit_all`]).
pub fn commit_with_key(
    out: TempOutput,
    key_path: &Path,
    key_text: &str,
    replace: bool,
) -> Result<()> {
    use std::io::Write;
    let mut key_out = TempOutput::create(key_path)?;
    key_out
        .file()
        .write_all(key_text.as_bytes())
        .with_context(|| format!("writing {}", key_path.display()))?;
    commit_all(vec![(key_out, SECRET), (out, PUBLIC)], replace, true)
}

/// Commits several outputs in order, each with its final mode (less the umask): all of them, or
/// none. First each is synced (with the signals not held, so that Ctrl-C during the fsync of a
/// large file acts at once); then, with the interrupt signals held back, each is renamed into
/// place, so that a signal ends the process after all of them are in place, never between two
/// (e.g. a key file without its sealed artifact). If one fails, the temporary files are removed
/// and the ones already committed are undone: a file one replaced (`replace`) was set aside
/// beforehand and is put back, one that did not exist before is removed. So a failed
/// `--force` never leaves a new key next to an old artifact, or loses the old key.
/// `force_hint`: name `--force` in the error.
///
/// The signals are held in this thread only: a caller with several outputs runs no other thread
/// (no tokio runtime) while committing.
pub fn commit_all(outputs: Vec<(TempOutput, u32)>, replace: bool, force_hint: bool) -> Result<()> {
    let mut outputs: Vec<TempOutput> = outputs
        .into_iter()
        .map(|(mut out, mode)| {
            out.finish(mode)
                .with_context(|| format!("writing {}", out.dest.display()))?;
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let dirs: Vec<PathBuf> = outputs
        .iter()
        .map(|o| dir_of(&o.dest).to_path_buf())
        .collect();
    let last = outputs.len().saturating_sub(1);
    // Files the commit could not put back or clean up, with why: named in the outcome.
    let mut not_undone: Vec<(PathBuf, std::io::Error)> = Vec::new();
    let failed = {
        let _held = cleanup::hold_signals();
        // (destination, the file it replaced, set aside)
        let mut placed: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
        let mut failed = None;
        for (i, out) in outputs.iter_mut().enumerate() {
            // The last one needs nothing set aside: a failed rename leaves its destination as it
            // was, and nothing comes after it that could fail.
            match out.place(replace, i < last) {
                Ok(kept) => placed.push((out.dest.clone(), kept)),
                Err(e) => {
                    failed = Some((out.dest.clone(), e));
                    break;
                }
            }
        }
        if failed.is_some() {
            for (dest, kept) in placed.iter().rev() {
                let undone = match kept {
                    Some(k) => restore(k, dest).map_err(|e| (k.clone(), e)),
                    None => std::fs::remove_file(dest).map_err(|e| (dest.clone(), e)),
                };
                if let Err(left) = undone {
                    not_undone.push(left);
                }
            }
        } else {
            for (_, kept) in &placed {
                if let Some(k) = kept {
                    if let Err(e) = std::fs::remove_file(k) {
                        not_undone.push((k.clone(), e));
                    }
                }
            }
        }
        // The temporary files not placed are removed here, still under the held signals.
        outputs.clear();
        failed
    };
    // Make the renames durable; some file systems cannot sync a directory, which is no error.
    let mut synced: Vec<&PathBuf> = Vec::new();
    for dir in &dirs {
        if !synced.contains(&dir) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            synced.push(dir);
        }
    }
    let leftovers = not_undone
        .iter()
        .map(|(p, e)| format!("{} ({e})", p.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let Some((dest, e)) = failed else {
        if !not_undone.is_empty() {
            eprintln!("warning: could not remove the replaced files set aside: {leftovers}");
        }
        return Ok(());
    };
    if !not_undone.is_empty() {
        bail!(
            "writing {} failed ({e}), and these could not be put back or removed: {leftovers}; \
             check them by hand",
            dest.display()
        );
    }
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        if force_hint {
            bail!(
                "{} already exists; refusing to overwrite it (pass --force to replace it)",
                dest.display()
            );
        }
        bail!(
            "{} already exists; refusing to overwrite it",
            dest.display()
        );
    }
    Err(e).with_context(|| format!("writing {}", dest.display()))
}

/// Checks, before any work, that `dest` (given as `flag`) may be written: never one of `inputs`
/// (same path, or the same file by device and inode, e.g. through a link), even with `force`; not
/// an existing file unless `force`; never a directory.
pub fn check_dest(dest: &Path, flag: &str, force: bool, inputs: &[&Path]) -> Result<()> {
    for input in inputs {
        if same_file(dest, input) {
            bail!(
                "{flag} {} is the input {}: refusing to overwrite it (even with --force)",
                dest.display(),
                input.display()
            );
        }
    }
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => bail!("{flag} {} is a directory", dest.display()),
        Ok(_) if !force => bail!(
            "{flag} {} already exists; refusing to overwrite it (pass --force to replace it)",
            dest.display()
        ),
        _ => Ok(()),
    }
}

/// Whether two paths name the same file: the same device and inode (links, `./x` and `x`), or,
/// for paths that do not exist yet, the same absolute path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    absolute(a) == absolute(b)
}

fn absolute(p: &Path) -> PathBuf {
    match (std::fs::canonicalize(dir_of(p)), p.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
    }
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The signal side: which temporary files exist, for a handler that may run at any instruction.
#[cfg(unix)]
#[allow(unsafe_code)]
mod cleanup {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::ptr;
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::Mutex;

    /// SIGINT and SIGTERM, and SIGHUP: a closed terminal must not leave plaintext behind either.
    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    const SLOTS: usize = 32;

    /// The temporary paths, as C strings the handler passes to unlink(2). A path is never freed
    /// (a few dozen bytes per output, in a short-lived CLI): the handler may still be reading a
    /// pointer just taken out of its slot.
    static PATHS: [AtomicPtr<libc::c_char>; SLOTS] =
        [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];

    struct Installed {
        /// Registered paths.
        count: usize,
        /// The actions replaced while any path is registered, restored after the last one.
        previous: Vec<(libc::c_int, libc::sigaction)>,
    }

    static STATE: Mutex<Installed> = Mutex::new(Installed {
        count: 0,
        previous: Vec::new(),
    });

    pub struct Slot(usize);

    pub fn register(path: &Path) -> std::io::Result<Slot> {
        let c = CString::new(path.as_os_str().as_bytes())?;
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let p = c.into_raw();
        let Some(slot) = PATHS.iter().position(|s| {
            s.compare_exchange(ptr::null_mut(), p, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        }) else {
            // SAFETY: `p` came from `into_raw` just above and was published nowhere.
            drop(unsafe { CString::from_raw(p) });
            return Err(std::io::Error::other("too many temporary outputs at once"));
        };
        if state.count == 0 {
            install(&mut state);
        }
        state.count += 1;
        Ok(Slot(slot))
    }

    pub fn unregister(slot: Slot) {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        PATHS[slot.0].store(ptr::null_mut(), Ordering::SeqCst);
        state.count -= 1;
        if state.count == 0 {
            for (sig, action) in state.previous.drain(..) {
                // SAFETY: puts back the action sigaction(2) reported for this signal.
                unsafe { libc::sigaction(sig, &action, ptr::null_mut()) };
            }
        }
    }

    /// Handles [`SIGNALS`] with [`on_signal`], except a signal the process ignores (a background
    /// job's SIGINT, SIGHUP under nohup stay ignored).
    fn install(state: &mut Installed) {
        for sig in SIGNALS {
            // SAFETY: plain C structs, zero is a valid bit pattern; every pointer passed is valid.
            unsafe {
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, ptr::null(), &mut previous) != 0
                    || previous.sa_sigaction == libc::SIG_IGN
                {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                // One shot: the default action is back once the handler runs, so the signal it
                // raises again ends the process.
                action.sa_flags = libc::SA_RESETHAND;
                libc::sigemptyset(&mut action.sa_mask);
                for s in SIGNALS {
                    libc::sigaddset(&mut action.sa_mask, s);
                }
                if libc::sigaction(sig, &action, &mut previous) == 0 {
                    state.previous.push((sig, previous));
                }
            }
        }
    }

    /// Removes every registered temporary file, then dies of the same signal. Only
    /// async-signal-safe calls: atomic loads, unlink(2), raise(3). The signal is blocked while the
    /// handler runs (and SA_RESETHAND restored the default action), so the raised one is delivered,
    /// and ends the process, as the handler returns.
    extern "C" fn on_signal(sig: libc::c_int) {
        for slot in &PATHS {
            let p = slot.load(Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: a NUL-terminated string that is never freed.
                unsafe { libc::unlink(p) };
            }
        }
        // SAFETY: raise(3) is async-signal-safe.
        unsafe { libc::raise(sig) };
    }

    /// Holds [`SIGNALS`] back in this thread until dropped; one that arrives meanwhile is delivered
    /// then. (Only this thread: the commands that commit several outputs run no other.)
    pub struct Held(libc::sigset_t);

    pub fn hold_signals() -> Held {
        // SAFETY: sigset_t is a plain C struct initialized by sigemptyset; pointers are valid.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in SIGNALS {
                libc::sigaddset(&mut set, s);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            Held(old)
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            // SAFETY: restores the mask saved by `hold_signals`.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, ptr::null_mut()) };
        }
    }
}

#[cfg(not(unix))]
mod cleanup {
    pub struct Slot;
    pub fn register(_: &std::path::Path) -> std::io::Result<Slot> {
        Ok(Slot)
    }
    pub fn unregister(_: Slot) {}
    pub struct Held;
    pub fn hold_signals() -> Held {
        Held
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_temporary_output_is_0600_and_gone_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut t = TempOutput::create(&dest).unwrap();
        t.file().write_all(b"secret").unwrap();
        let names = entries(dir.path());
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with(".out.") && names[0].ends_with(".tmp"));
        let mode = std::fs::metadata(dir.path().join(&names[0]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(t);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn commit_refuses_an_existing_destination_unless_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        std::fs::write(&dest, b"old").unwrap();
        let mut t = TempOutput::create(&dest).unwrap();
        t.file().write_all(b"new").unwrap();
        let err = commit_all(vec![(t, SECRET)], false, true).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(entries(dir.path()), vec!["out"]);
        let mut t = TempOutput::create(&dest).unwrap();
        t.file().write_all(b"new").unwrap();
        commit_all(vec![(t, SECRET)], true, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(entries(dir.path()), vec!["out"]);
    }

    #[test]
    fn a_link_at_the_destination_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let dest = dir.path().join("out");
        std::os::unix::fs::symlink(&target, &dest).unwrap();
        let mut t = TempOutput::create(&dest).unwrap();
        t.file().write_all(b"new").unwrap();
        commit_all(vec![(t, PUBLIC)], true, false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&dest)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
    }

    #[test]
    fn write_atomic_and_write_secret_go_through_no_planted_file() {
        // The old `write_atomic` wrote through `path.tmp`: a symlink planted there redirected the
        // write to its target.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let addr = dir.path().join("kbs.addr");
        std::os::unix::fs::symlink(&victim, dir.path().join("kbs.tmp")).unwrap();
        crate::util::write_atomic(&addr, b"127.0.0.1:1").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&addr).unwrap(), b"127.0.0.1:1");
        let mode = std::fs::metadata(&addr).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, with_umask(PUBLIC));
        // A secret replaces a link at its path instead of writing through it, 0600.
        let token = dir.path().join("token");
        std::os::unix::fs::symlink(&victim, &token).unwrap();
        let err = crate::util::write_secret(&token, b"s3cret", false).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        crate::util::write_secret(&token, b"s3cret", true).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&token)
            .unwrap()
            .file_type()
            .is_symlink());
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, SECRET);
        let mut names = entries(dir.path());
        names.sort();
        assert_eq!(names, ["kbs.addr", "kbs.tmp", "token", "victim"]);
    }

    #[test]
    fn the_same_file_is_found_through_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        std::fs::hard_link(&a, dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink(&a, dir.path().join("c")).unwrap();
        let dotted = dir.path().join(".").join("a");
        for other in [dir.path().join("b"), dir.path().join("c"), dotted] {
            assert!(same_file(&a, &other), "{}", other.display());
            let err = check_dest(&other, "--out", true, &[&a]).unwrap_err();
            assert!(err.to_string().contains("is the input"), "{err}");
        }
        assert!(!same_file(&a, &dir.path().join("new")));
        assert!(same_file(&dir.path().join("new"), &dir.path().join("new")));
        check_dest(&dir.path().join("new"), "--out", false, &[&a]).unwrap();
    }

    /// Two outputs that replace two files, the second of which cannot be put in place.
    fn replace_two_failing_the_second(dir: &Path, break_second: impl FnOnce(&TempOutput)) {
        let (a, b) = (dir.join("a.key"), dir.join("b.sealed"));
        let mut ta = TempOutput::create(&a).unwrap();
        ta.file().write_all(b"new key").unwrap();
        let mut tb = TempOutput::create(&b).unwrap();
        tb.file().write_all(b"new artifact").unwrap();
        break_second(&tb);
        let err = commit_all(vec![(ta, SECRET), (tb, PUBLIC)], true, true).unwrap_err();
        assert!(
            format!("{err:#}").contains(&b.display().to_string()),
            "{err:#}"
        );
    }

    /// The first output (a key file, set aside as a hard link before it is replaced) fails: the
    /// old key stays, and no second name of it is left behind.
    #[test]
    fn a_failed_first_replacement_leaves_no_second_link_of_the_old_key() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.sealed"));
        std::fs::write(&a, b"old key").unwrap();
        std::fs::write(&b, b"old artifact").unwrap();
        let mut ta = TempOutput::create(&a).unwrap();
        ta.file().write_all(b"new key").unwrap();
        let mut tb = TempOutput::create(&b).unwrap();
        tb.file().write_all(b"new artifact").unwrap();
        // Gone when it is to be renamed (its open file is still synced and given its mode).
        std::fs::remove_file(&ta.tmp).unwrap();
        let err = commit_all(vec![(ta, SECRET), (tb, PUBLIC)], true, true).unwrap_err();
        assert!(format!("{err:#}").contains("a.key"), "{err:#}");
        assert_eq!(std::fs::read(&a).unwrap(), b"old key");
        assert_eq!(std::fs::read(&b).unwrap(), b"old artifact");
        assert_eq!(std::fs::metadata(&a).unwrap().nlink(), 1);
        assert_eq!(entries(dir.path()), ["a.key", "b.sealed"]);
    }

    #[test]
    fn a_failed_replacement_puts_every_old_file_back() {
        // The temporary file of the second output is gone when it is to be renamed: the first
        // output (the key) is already in place by then, and must be undone.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.sealed"));
        std::fs::write(&a, b"old key").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&b, b"old artifact").unwrap();
        replace_two_failing_the_second(dir.path(), |tb| {
            std::fs::remove_file(&tb.tmp).unwrap();
        });
        assert_eq!(std::fs::read(&a).unwrap(), b"old key");
        assert_eq!(std::fs::read(&b).unwrap(), b"old artifact");
        let m = std::fs::metadata(&a).unwrap().permissions().mode();
        assert_eq!(m & 0o777, 0o600);
        // No temporary file, no file set aside.
        assert_eq!(entries(dir.path()), ["a.key", "b.sealed"]);

        // A directory in the way of the second: the old first file is back, the directory
        // untouched.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.sealed"));
        std::fs::write(&a, b"old key").unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("inside"), b"x").unwrap();
        replace_two_failing_the_second(dir.path(), |_| {});
        assert_eq!(std::fs::read(&a).unwrap(), b"old key");
        assert_eq!(entries(&b), ["inside"]);
        assert_eq!(entries(dir.path()), ["a.key", "b.sealed"]);

        // Nothing there before: a failure leaves nothing.
        let dir = tempfile::tempdir().unwrap();
        replace_two_failing_the_second(dir.path(), |tb| {
            std::fs::remove_file(&tb.tmp).unwrap();
        });
        assert!(entries(dir.path()).is_empty());

        // And when it works, both are replaced and nothing is left aside.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.sealed"));
        std::fs::write(&a, b"old key").unwrap();
        std::fs::write(&b, b"old artifact").unwrap();
        let mut ta = TempOutput::create(&a).unwrap();
        ta.file().write_all(b"new key").unwrap();
        let mut tb = TempOutput::create(&b).unwrap();
        tb.file().write_all(b"new artifact").unwrap();
        commit_all(vec![(ta, SECRET), (tb, PUBLIC)], true, true).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new key");
        assert_eq!(std::fs::read(&b).unwrap(), b"new artifact");
        assert_eq!(entries(dir.path()), ["a.key", "b.sealed"]);
    }

    #[test]
    fn without_replace_a_later_refusal_removes_the_earlier_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.sealed"));
        std::fs::write(&b, b"there").unwrap();
        let mut ta = TempOutput::create(&a).unwrap();
        ta.file().write_all(b"new key").unwrap();
        let mut tb = TempOutput::create(&b).unwrap();
        tb.file().write_all(b"new artifact").unwrap();
        let err = commit_all(vec![(ta, SECRET), (tb, PUBLIC)], false, true).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read(&b).unwrap(), b"there");
        assert_eq!(entries(dir.path()), ["b.sealed"]);
    }

    #[test]
    fn a_long_non_ascii_name_gets_a_temporary_name_within_name_max() {
        let dir = tempfile::tempdir().unwrap();
        // 84 three-byte characters: 252 bytes, a valid name; cut by characters (160) the
        // temporary name would have had 1 + 252 + 1 + 32 + 4 bytes.
        let name: String = "€".repeat(84);
        let dest = dir.path().join(&name);
        let mut t = TempOutput::create(&dest).unwrap();
        t.file().write_all(b"x").unwrap();
        for n in entries(dir.path()) {
            assert!(n.len() <= 255, "{} bytes", n.len());
        }
        commit_all(vec![(t, PUBLIC)], false, false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
        assert_eq!(cut("a€b", 2), "a");
        assert_eq!(cut("a€b", 4), "a€");
        assert_eq!(cut("ab", 200), "ab");
    }

    #[test]
    fn public_files_follow_the_umask() {
        assert_eq!(with_umask(PUBLIC), 0o666 & !umask());
        // What open(2) gives a new file: the same rule.
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&probe)
            .unwrap();
        let m = std::fs::metadata(&probe).unwrap().permissions().mode();
        assert_eq!(m & 0o777, with_umask(PUBLIC));
    }
}
