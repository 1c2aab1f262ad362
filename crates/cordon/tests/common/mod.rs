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
    // A file left by an earlier process of the same name would be read as this one's address.
    let _ = std::fs::remove_file(&addr);
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
            "--identity-file",
            &s(&p(&format!("{name}.identity"))),
        ],
        p(&format!("{name}.log")),
        level,
    );
    let url = kbs.url(&addr);
    (kbs, url)
}

/// The identity key (hex) of the KBS [`start_kbs`] started as `name` in `dir`: what owners,
/// parties and runtime configurations pin.
pub fn kbs_key(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.identity")))
        .unwrap()
        .trim()
        .to_string()
}

fn kbs_key_bytes(kbs_key: &str) -> [u8; 32] {
    hex::decode(kbs_key).unwrap().try_into().unwrap()
}

/// An admin request to the KBS, signed with the admin token for the KBS `kbs_key` (hex).
pub async fn admin_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    kbs_key: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let key = cordon_proto::auth::admin_key(token).unwrap();
    let mut req = http.request(method.clone(), format!("{url}{path}"));
    for (name, value) in cordon_proto::auth::sign_request(
        &key,
        method.as_str(),
        path,
        &body,
        &kbs_key_bytes(kbs_key),
        std::time::SystemTime::now(),
    ) {
        req = req.header(name, value);
    }
    req.body(body).send().await.unwrap()
}

/// Registers `dek` under `policy` as the administrator (sealed to the KBS `kbs_key`).
pub async fn admin_register(
    http: &reqwest::Client,
    url: &str,
    kbs_key: &str,
    token: &str,
    key_id: &str,
    dek: &[u8; 32],
    policy: &str,
) -> reqwest::Response {
    use cordon_proto::kbs::{policy_context, seal_dek_for_kbs, DekPurpose, RegisterKey};
    let admin = cordon_proto::auth::admin_key(token).unwrap();
    let sealed_dek = seal_dek_for_kbs(
        &kbs_key_bytes(kbs_key),
        DekPurpose::AdminKey,
        key_id,
        &admin.verifying_key().to_bytes(),
        &policy_context(policy),
        dek,
    )
    .unwrap();
    let body = serde_json::to_vec(&RegisterKey {
        sealed_dek,
        policy: policy.to_string(),
    })
    .unwrap();
    admin_request(
        http,
        reqwest::Method::PUT,
        url,
        kbs_key,
        &format!("/kbs/v1/admin/keys/{key_id}"),
        token,
        body,
    )
    .await
}

/// Starts `cordon runtime serve` (sim, hardware key `dir/hw.key`) with `config` on a free port.
pub fn start_runtime(dir: &Path, config: &Path, name: &str) -> (Proc, String) {
    let addr = dir.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&addr);
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

/// `GET {url}{path}` signed with the KBS admin token for the KBS `kbs_key`, decoded from JSON
/// (panics on any failure).
pub async fn admin_get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    kbs_key: &str,
    path: &str,
    token: &str,
) -> T {
    let resp = admin_request(
        http,
        reqwest::Method::GET,
        url,
        kbs_key,
        path,
        token,
        vec![],
    )
    .await;
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}
