//! Helpers shared by the end-to-end tests: run the `cordon` binary, and child processes on
//! loopback that are killed on drop.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cordon");

pub fn cordon(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("CORDON_LOG", "warn")
        .output()
        .expect("run cordon")
}

/// Runs `cordon args`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = cordon(args);
    assert!(
        out.status.success(),
        "cordon {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    log: PathBuf,
    /// Stop with SIGTERM first: a process that supervises children of its own (`cordon dev up`)
    /// takes them down only when it gets to exit.
    graceful: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.graceful && matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn start(args: &[&str], log: PathBuf) -> Proc {
        Proc::start_logging(args, log, "info")
    }

    /// Starts `cordon args` with `CORDON_LOG=level`, stdout and stderr into `log`.
    pub fn start_logging(args: &[&str], log: PathBuf, level: &str) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("CORDON_LOG", level)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc {
            child,
            log,
            graceful: false,
        }
    }

    /// Takes charge of a child started otherwise (through a shell that sets limits, or `dev up`);
    /// it is stopped with SIGTERM on drop, and killed if still running 30 s later.
    pub fn adopt(child: Child, log: PathBuf) -> Proc {
        Proc {
            child,
            log,
            graceful: true,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the address file the process writes once it listens; its URL, or, if the
    /// process exits first, Err with its log.
    pub fn wait_ready(&mut self, addr_file: &Path) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(a) = std::fs::read_to_string(addr_file) {
                return Ok(format!("http://{}", a.trim()));
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("not ready in 120 s:\n{}", self.log());
    }

    /// [`Proc::wait_ready`] for a process that must come up.
    pub fn url(&mut self, addr_file: &Path) -> String {
        self.wait_ready(addr_file).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Starts `cordon kbs serve` on a free port with its store in `dir/kbs`, the sim trust anchor
/// `dir/hw.pub` and the admin token file `dir/token`; `name` names its address file and log.
pub fn start_kbs(dir: &Path, name: &str) -> (Proc, String) {
    start_kbs_logging(dir, name, "info")
}

/// [`start_kbs`] with `CORDON_LOG=level`.
pub fn start_kbs_logging(dir: &Path, name: &str, level: &str) -> (Proc, String) {
    let p = |f: &str| dir.join(f);
    let addr = p(&format!("{name}.addr"));
    let mut kbs = Proc::start_logging(
        &[
            "kbs",
            "serve",
            "--data-dir",
            &s(&p("kbs")),
            "--listen",
            "127.0.0.1:0",
            "--sim-trust-anchor",
            &s(&p("hw.pub")),
            "--init-admin-token-file",
            &s(&p("token")),
            "--addr-file",
            &s(&addr),
        ],
        p(&format!("{name}.log")),
        level,
    );
    let url = kbs.url(&addr);
    (kbs, url)
}

/// Starts `cordon runtime serve` (sim, hardware key `dir/hw.key`) with `config` on a free port.
pub fn start_runtime(dir: &Path, config: &Path, name: &str) -> (Proc, String) {
    let addr = dir.join(format!("{name}.addr"));
    let mut rt = Proc::start(
        &[
            "runtime",
            "serve",
            "--config",
            &s(config),
            "--listen",
            "127.0.0.1:0",
            "--platform",
            "sim",
            "--sim-hardware-key",
            &s(&dir.join("hw.key")),
            "--addr-file",
            &s(&addr),
        ],
        dir.join(format!("{name}.log")),
    );
    let url = rt.url(&addr);
    (rt, url)
}

/// `GET {url}{path}` with the KBS admin token, decoded from JSON (panics on any failure).
pub async fn admin_get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    token: &str,
) -> T {
    http.get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
