//! Test support: a throwaway PostgreSQL cluster for the PostgreSQL store's tests (this crate's
//! and the `cordon` CLI's). Not for production use.
//!
//! With `CORDON_TEST_DATABASE_URL` set, that server is used (each test gets a database of its
//! own); otherwise a cluster is made with Debian's `postgresql` package (`initdb`, `pg_ctl`) in a
//! temporary directory, listening on a Unix socket there only. PostgreSQL refuses to run as root:
//! as root, the cluster runs as the `postgres` user (through `runuser`). A missing PostgreSQL is a
//! test failure, never a skip.
//!
//! The cluster is stopped when dropped, and also by a watchdog process when the process that made
//! it exits (a test binary's shared cluster, in a `static`, is never dropped).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// A running PostgreSQL server to make test databases on.
pub struct PgCluster {
    /// How to reach the server, without a database name (`key=value` form).
    base: String,
    /// The cluster made here (none with `CORDON_TEST_DATABASE_URL`).
    owned: Option<Owned>,
    /// Where `pg_dump` and friends are.
    bin: PathBuf,
}

struct Owned {
    dir: PathBuf,
    run_as: Option<&'static str>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn is_root() -> bool {
    // SAFETY: geteuid(2) only reads the process's credentials.
    unsafe { libc::geteuid() == 0 }
}

/// The directory holding PostgreSQL's server programs.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    // Debian puts them under /usr/lib/postgresql/VERSION/bin, off the PATH; the newest wins.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: install Debian's \
             `postgresql` package (.ci/run does), or set CORDON_TEST_DATABASE_URL"
        )
    })
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `program` run as `user` when given (through runuser), else as ourselves.
fn command_as(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl PgCluster {
    /// The server named by `CORDON_TEST_DATABASE_URL`, or a fresh cluster with `fsync=off`
    /// (tests: what they check does not depend on the disk, and they run faster).
    pub fn start() -> PgCluster {
        PgCluster::start_with(false)
    }

    /// Like [`PgCluster::start`], but a fresh cluster keeps PostgreSQL's durable defaults
    /// (`fsync=on`, `synchronous_commit=on`): every acknowledged commit is on disk, as in
    /// production. For benchmarks set beside SQLite at `synchronous=FULL`.
    pub fn start_durable() -> PgCluster {
        PgCluster::start_with(true)
    }

    // The watchdog is never waited for: it must outlive this process, to stop the cluster after.
    #[allow(clippy::zombie_processes)]
    fn start_with(durable: bool) -> PgCluster {
        let bin = bin_dir();
        if let Ok(url) = std::env::var("CORDON_TEST_DATABASE_URL") {
            let config: postgres::Config = url.parse().expect("CORDON_TEST_DATABASE_URL");
            return PgCluster {
                base: key_values(&config),
                owned: None,
                bin,
            };
        }
        let dir = std::env::temp_dir().join(format!(
            "cordon-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the cluster's directory");
        let run_as = is_root().then_some("postgres");
        if run_as.is_some() {
            // The server's own user makes its data directory and socket in here.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .expect("opening the cluster's directory to the postgres user");
        }
        let data = dir.join("data");
        run(
            command_as(run_as, &bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "cordon", "--auth=trust", "-N", "-E", "UTF8"])
                .args(["--locale=C"]),
            "initdb (as root, the `postgres` user must exist: Debian's postgresql package makes it)",
        );
        // The watchdog stops the cluster once this process is gone, however it ended.
        let stop = format!(
            "{} -D '{}' -m immediate stop",
            match run_as {
                Some(u) => format!("runuser -u {u} -- '{}'", bin.join("pg_ctl").display()),
                None => format!("'{}'", bin.join("pg_ctl").display()),
            },
            data.display()
        );
        let options = format!(
            "-k '{}' -c listen_addresses='' -c fsync={} -c max_connections=200",
            dir.display(),
            if durable { "on" } else { "off" }
        );
        run(
            command_as(run_as, &bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-o", &options, "-w", "start"]),
            "pg_ctl start",
        );
        let watchdog = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{}'",
            std::process::id(),
            dir.display()
        );
        Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the cluster's watchdog");
        PgCluster {
            base: format!("host={} user=cordon", dir.display()),
            owned: Some(Owned { dir, run_as }),
            bin,
        }
    }

    /// A new, empty database on this server: its connection string.
    pub fn database(&self) -> String {
        let name = format!(
            "cordon_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut admin =
            postgres::Client::connect(&format!("{} dbname=postgres", self.base), postgres::NoTls)
                .expect("connecting to the test PostgreSQL server");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a test database");
        format!("{} dbname={name}", self.base)
    }

    /// `pg_dump` of a database, whole (schema and data), as plain SQL.
    pub fn dump(&self, url: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .expect("running pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(o) = &self.owned {
            let _ = command_as(o.run_as, &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(o.dir.join("data"))
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&o.dir);
        }
    }
}

/// A configuration's server and credentials as `key=value` pairs, to add a `dbname=` to.
fn key_values(c: &postgres::Config) -> String {
    let mut parts = vec![];
    if let Some(h) = c.get_hosts().first() {
        match h {
            postgres::config::Host::Tcp(h) => parts.push(format!("host={h}")),
            postgres::config::Host::Unix(p) => parts.push(format!("host={}", p.display())),
        }
    }
    if let Some(p) = c.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = c.get_user() {
        parts.push(format!("user={u}"));
    }
    if let Some(p) = c.get_password() {
        parts.push(format!("password='{}'", String::from_utf8_lossy(p)));
    }
    parts.join(" ")
}
