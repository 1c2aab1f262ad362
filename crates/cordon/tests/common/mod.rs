//! Helpers shared by the end-to-end tests: run the `cordon` binary, and child processes on
//! loopback that are killed on drop.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cordon");

/// Runs `cordon args` with `CORDON_LOG=warn` and no `CORDON_CA_CERT`: no variable of the caller's
/// environment changes what a test sees.
pub fn cordon<S: AsRef<OsStr>>(args: &[S]) -> Output {
    cordon_env(args, None)
}

/// [`cordon`] with `CORDON_CA_CERT` set to `ca` (a CA file), or removed when `None`.
pub fn cordon_env<S: AsRef<OsStr>>(args: &[S], ca: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env("CORDON_LOG", "warn");
    match ca {
        Some(ca) => c.env("CORDON_CA_CERT", ca),
        None => c.env_remove("CORDON_CA_CERT"),
    };
    c.output().expect("run cordon")
}

/// The arguments as text, for messages.
pub fn argv<S: AsRef<OsStr>>(args: &[S]) -> Vec<String> {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// Runs `cordon args`, which must succeed; its stdout.
pub fn ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    ok_env(args, None)
}

/// [`ok`] with `CORDON_CA_CERT` as [`cordon_env`] sets it.
pub fn ok_env<S: AsRef<OsStr>>(args: &[S], ca: Option<&str>) -> String {
    let out = cordon_env(args, ca);
    assert!(
        out.status.success(),
        "cordon {:?} failed:\n{}",
        argv(args),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cordon args`, which must fail; its stderr.
pub fn fails<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = cordon(args);
    assert!(
        !out.status.success(),
        "cordon {:?} succeeded:\n{}",
        argv(args),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    pub fn start<S: AsRef<OsStr>>(args: &[S], log: PathBuf) -> Proc {
        Proc::start_logging(args, log, "info")
    }

    /// Starts `cordon args` with `CORDON_LOG=level` (and no `CORDON_CA_CERT`, as [`cordon`]),
    /// stdout and stderr into `log`.
    pub fn start_logging<S: AsRef<OsStr>>(args: &[S], log: PathBuf, level: &str) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("CORDON_LOG", level)
            .env_remove("CORDON_CA_CERT")
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
    start_kbs_with(dir, name, "kbs", level, &[])
}

/// The arguments of `cordon kbs serve` on a free port with its store in `dir/{store}`, the sim
/// trust anchor `dir/hw.pub`, the admin token file `dir/token` (the token of the first store
/// made in `dir`; a further new store, which never overwrites another's token, writes
/// `dir/{store}.token`), the address file `dir/{name}.addr` and the identity file
/// `dir/{name}.identity`.
pub fn kbs_serve_args(dir: &Path, name: &str, store: &str) -> Vec<String> {
    let p = |f: &str| s(&dir.join(f));
    let token = if dir.join("token").exists() && !dir.join(store).join("kbs.sqlite3").exists() {
        format!("{store}.token")
    } else {
        "token".to_string()
    };
    [
        "kbs",
        "serve",
        "--data-dir",
        &p(store),
        "--listen",
        "127.0.0.1:0",
        "--sim-trust-anchor",
        &p("hw.pub"),
        "--init-admin-token-file",
        &p(&token),
        "--addr-file",
        &p(&format!("{name}.addr")),
        "--identity-file",
        &p(&format!("{name}.identity")),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// Starts `cordon kbs serve` with [`kbs_serve_args`] and `extra` arguments, `CORDON_LOG=level`,
/// its log in `dir/{name}.log`; the process and its URL (`http://host:port`, whatever the scheme it
/// serves).
pub fn start_kbs_with(
    dir: &Path,
    name: &str,
    store: &str,
    level: &str,
    extra: &[&str],
) -> (Proc, String) {
    let addr = dir.join(format!("{name}.addr"));
    // A file left by an earlier process of the same name would be read as this one's address.
    let _ = std::fs::remove_file(&addr);
    let mut args = kbs_serve_args(dir, name, store);
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut kbs = Proc::start_logging(&args, dir.join(format!("{name}.log")), level);
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
    try_admin_request(http, method, url, kbs_key, path, token, body)
        .await
        .unwrap()
}

/// [`admin_request`], for a KBS that may not answer.
pub async fn try_admin_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    kbs_key: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> Result<reqwest::Response, reqwest::Error> {
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
    req.body(body).send().await
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
    try_admin_register(http, url, kbs_key, token, key_id, dek, policy)
        .await
        .unwrap()
}

/// [`admin_register`], for a KBS that may not answer.
pub async fn try_admin_register(
    http: &reqwest::Client,
    url: &str,
    kbs_key: &str,
    token: &str,
    key_id: &str,
    dek: &[u8; 32],
    policy: &str,
) -> Result<reqwest::Response, reqwest::Error> {
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
    try_admin_request(
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
    let (rt, url) = try_start_runtime(dir, config, name, &[]);
    (
        rt,
        url.unwrap_or_else(|log| panic!("runtime {name}: {log}")),
    )
}

/// Starts `cordon runtime serve` (sim, hardware key `dir/hw.key`) with `config` and `extra`
/// arguments on a free port, its log in `dir/{name}.log`: the process, and its URL
/// (`http://host:port`, whatever the scheme it serves) or, if it exits first, its log.
pub fn try_start_runtime(
    dir: &Path,
    config: &Path,
    name: &str,
    extra: &[&str],
) -> (Proc, Result<String, String>) {
    let addr = dir.join(format!("{name}.addr"));
    // A file left by an earlier process of the same name would be read as this one's address.
    let _ = std::fs::remove_file(&addr);
    let mut args = vec![
        "runtime".to_string(),
        "serve".into(),
        "--config".into(),
        s(config),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--platform".into(),
        "sim".into(),
        "--sim-hardware-key".into(),
        s(&dir.join("hw.key")),
        "--addr-file".into(),
        s(&addr),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut rt = Proc::start(&args, dir.join(format!("{name}.log")));
    let url = rt.wait_ready(&addr);
    (rt, url)
}

/// Starts `cordon proxy` in front of `upstream` with the client policy `policy` and `extra`
/// arguments on a free port, its log in `dir/{name}.log`; the process and its URL
/// (`http://host:port`, whatever the scheme it serves).
pub fn start_proxy(
    dir: &Path,
    upstream: &str,
    policy: &Path,
    name: &str,
    extra: &[&str],
) -> (Proc, String) {
    let addr = dir.join(format!("{name}.addr"));
    // A file left by an earlier process of the same name would be read as this one's address.
    let _ = std::fs::remove_file(&addr);
    let mut args = vec![
        "proxy".to_string(),
        "--upstream".into(),
        upstream.into(),
        "--policy".into(),
        s(policy),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--addr-file".into(),
        s(&addr),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut proxy = Proc::start(&args, dir.join(format!("{name}.log")));
    let url = proxy.url(&addr);
    (proxy, url)
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

/// The release policy that names the sim measurement of `config` (written to
/// `dir/{name}-release.toml`), and the client policy: the same with the sim trust anchor
/// `dir/hw.pub` (`dir/{name}-client.toml`); and the release policy's text.
pub fn sim_policies(dir: &Path, config: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let measurement = ok(&["runtime", "measure", "--config", &s(config)]);
    let policy = format!(
        "platforms = [\"sim\"]\nlaunch_measurements = [\"{}\"]\nallow_debug = false\n",
        measurement.trim()
    );
    let release = dir.join(format!("{name}-release.toml"));
    std::fs::write(&release, &policy).unwrap();
    let anchor = std::fs::read_to_string(dir.join("hw.pub")).unwrap();
    let client = dir.join(format!("{name}-client.toml"));
    std::fs::write(
        &client,
        format!(
            "{policy}\n[endorsements]\nsim_trust_anchors = [\"{}\"]\n",
            anchor.trim()
        ),
    )
    .unwrap();
    (release, client, policy)
}

/// The feature columns of a CSV dataset (`csv` is its text): every column of its header but
/// `label`.
pub fn csv_features(csv: &str) -> Vec<String> {
    csv.lines()
        .next()
        .unwrap()
        .split(',')
        .filter(|c| *c != "label")
        .map(str::to_string)
        .collect()
}

/// The job hash (64 hex digits) that `cordon job create` printed.
pub fn job_hash(create_output: &str) -> String {
    create_output
        .split_whitespace()
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no job hash in {create_output}"))
        .to_string()
}

/// A data party made by the CLI: its key file, its dataset sealed, and the entries a job spec
/// lists for it.
#[derive(Clone)]
pub struct Party {
    pub name: String,
    /// The party key file (`cordon party keygen`).
    pub file: PathBuf,
    /// The dataset's DEK file (`dataset seal --key-out`).
    pub key: PathBuf,
    /// The sealed dataset.
    pub sealed: PathBuf,
    /// The spec's `parties` entry, as `party keygen` printed it.
    pub entry: serde_json::Value,
    /// The spec's `datasets` entry, as `dataset seal` printed it.
    pub dataset: serde_json::Value,
}

/// `cordon party keygen` as `name` into `dir/{name}.party`, and `cordon dataset seal` of `input`
/// (`format`: csv or parquet) into `dir/{name}.sealed`, its key in `dir/{name}.key`.
pub fn new_party(dir: &Path, name: &str, input: &str, format: &str) -> Party {
    let file = dir.join(format!("{name}.party"));
    let key = dir.join(format!("{name}.key"));
    let sealed = dir.join(format!("{name}.sealed"));
    let entry = ok(&["party", "keygen", "--name", name, "--out", &s(&file)]);
    let dataset = ok(&[
        "dataset",
        "seal",
        "--party",
        &s(&file),
        "--input",
        input,
        "--format",
        format,
        "--out",
        &s(&sealed),
        "--key-out",
        &s(&key),
    ]);
    Party {
        name: name.to_string(),
        file,
        key,
        sealed,
        entry: serde_json::from_str(&entry).unwrap(),
        dataset: serde_json::from_str(&dataset).unwrap(),
    }
}

/// `cordon dataset register` of the party's dataset key under the release policy `policy` with the
/// KBS at `kbs`, identity `kbs_key` (hex or a file).
pub fn dataset_register_args(p: &Party, policy: &Path, kbs: &str, kbs_key: &str) -> Vec<String> {
    [
        "dataset",
        "register",
        "--party",
        &s(&p.file),
        "--key",
        &s(&p.key),
        "--policy",
        &s(policy),
        "--kbs",
        kbs,
        "--kbs-key",
        kbs_key,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// `cordon dataset upload` of the party's sealed dataset to the training runtime at `runtime`,
/// verified with the client policy `policy`.
pub fn dataset_upload_args(p: &Party, runtime: &str, policy: &Path) -> Vec<String> {
    [
        "dataset",
        "upload",
        "--party",
        &s(&p.file),
        "--runtime",
        runtime,
        "--policy",
        &s(policy),
        "--sealed",
        &s(&p.sealed),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// The `probabilities` output's data of an OIP response.
pub fn probabilities(response: &serde_json::Value) -> Vec<serde_json::Value> {
    response["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap_or_else(|| panic!("no probabilities in {response}"))["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// The answer `cordon model run` gives (the reference a runtime must match).
pub fn reference_output(model: &str, input: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&["model", "run", model, "--input", input])).unwrap()
}

/// The Python with the stock KServe v2 / Triton clients (tritonclient from PyPI, pinned), made by
/// scripts/fetch-python-clients.sh once per machine; a test that needs them fails, never skips,
/// when that fails.
pub fn python_clients() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fetched = Command::new("bash")
        .arg(root.join("scripts/fetch-python-clients.sh"))
        .arg(std::env::temp_dir().join("cordon-python-clients"))
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "fetching the Python clients failed: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    String::from_utf8(fetched.stdout)
        .unwrap()
        .trim()
        .to_string()
}
