//! `cordon dev up`: the demo deployment stays up in the foreground, serves the demo models to
//! `cordon infer` and `cordon proxy` with the policy it prints, and takes its children down on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_cordon");

/// Stops the process on drop: SIGTERM first, so that `dev up` takes its KBS and runtime down with
/// it (a SIGKILL would leave them running), then SIGKILL if it has not exited within 30 s.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn field<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{}", lines.join("\n")))
        .trim()
}

fn answers(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_ok()
}

/// Starts `cordon dev up` with `extra` arguments and waits until it says it is ready; returns the
/// process, the lines it printed so far and the channel of the rest.
fn start_dev(dir: &Path, extra: &[&str]) -> (Guard, Vec<String>, mpsc::Receiver<String>) {
    let mut dev = Guard(
        Command::new(BIN)
            .args(["dev", "up", "--data-dir", &dir.to_string_lossy()])
            .args(extra)
            // Any free ports, unless the test names them (the defaults are fixed, 8100 and 8200,
            // and tests run side by side).
            .args(if extra.contains(&"--kbs-port") {
                &[][..]
            } else {
                &["--kbs-port", "0", "--runtime-port", "0"][..]
            })
            .env("CORDON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let stdout = dev.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lines.iter().any(|l: &String| l.contains("Ctrl-C stops")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(e) => panic!("dev up not ready ({e}):\n{}", lines.join("\n")),
        }
    }
    (dev, lines, rx)
}

async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn start_proxy(dir: &Path, runtime: &str, policy: &str) -> (Guard, String) {
    let addr_file = dir.join("proxy.addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut proxy = Guard(
        Command::new(BIN)
            .args(["proxy", "--upstream", runtime, "--policy", policy])
            .args(["--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .env("CORDON_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = wait_for(&addr_file, &mut proxy.0);
    (proxy, url)
}

/// With `--onnxruntime-library`, the runtime's measured configuration pins the library's digest and
/// serves every demo model on ONNX Runtime: an unmodified client sees KServe's `onnxruntime_onnx`
/// platform in the metadata and gets the same answers the built-in engine computes in process.
#[test]
fn dev_up_serves_on_onnxruntime_when_given_its_library() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let library = cordon_runtime::locate_onnxruntime_library(&workspace).unwrap_or_else(|| {
        panic!("ONNX Runtime's library is needed: run scripts/fetch-onnxruntime.sh")
    });
    let dir = tempfile::tempdir().unwrap();
    let (_dev, lines, _rx) = start_dev(
        dir.path(),
        &["--onnxruntime-library", &library.to_string_lossy()],
    );
    let runtime = field(&lines, "runtime URL:").to_string();
    let policy = field(&lines, "client policy:").to_string();
    let config = std::fs::read_to_string(dir.path().join("runtime.toml")).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&library).unwrap()))
    };
    assert!(config.contains(&digest), "{config}");
    assert_eq!(
        config.matches("engine = \"onnxruntime\"").count(),
        3,
        "{config}"
    );

    let (_proxy, proxy_url) = start_proxy(dir.path(), &runtime, &policy);
    let input: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.join("models/demo_input.json")).unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (model, file) in [
        ("breast-cancer-lr", "models/breast_cancer_lr.onnx"),
        ("breast-cancer-mlp", "models/breast_cancer_mlp.onnx"),
    ] {
        let http = reqwest::Client::new();
        let meta = rt.block_on(json(http.get(format!("{proxy_url}/v2/models/{model}"))));
        let answer = rt.block_on(json(
            http.post(format!("{proxy_url}/v2/models/{model}/infer"))
                .json(&input),
        ));
        assert_eq!(meta["platform"], "onnxruntime_onnx", "{model}: {meta}");
        let bytes = std::fs::read(workspace.join(file)).unwrap();
        let local = cordon_runtime::OnnxModel::load(model, "1", &bytes)
            .unwrap()
            .infer(&serde_json::from_value(input.clone()).unwrap())
            .unwrap();
        assert_eq!(
            answer["outputs"][0]["data"], local.outputs[0].data,
            "{model}: {answer}"
        );
        let served: Vec<f64> =
            serde_json::from_value(answer["outputs"][1]["data"].clone()).unwrap();
        let tract: Vec<f64> = serde_json::from_value(local.outputs[1].data.clone()).unwrap();
        assert_eq!(served.len(), tract.len());
        for (a, b) in served.iter().zip(&tract) {
            assert!((a - b).abs() < 1e-5, "{model}: {served:?} vs {tract:?}");
        }
    }
}

#[test]
fn dev_up_serves_the_demo_models_until_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, lines, rx) = start_dev(dir.path(), &[]);
    let text = lines.join("\n");
    assert!(text.contains("SIMULATED"), "{text}");
    let runtime = field(&lines, "runtime URL:").to_string();
    let kbs = field(&lines, "KBS URL:").to_string();
    let policy = field(&lines, "client policy:").to_string();
    assert_eq!(
        field(&lines, "models:"),
        "breast-cancer-lr, breast-cancer-mlp, fraud-gbdt"
    );
    assert!(
        text.contains(&format!(
            "cordon proxy --upstream {runtime} --policy {policy}"
        )),
        "{text}"
    );
    assert!(answers(&runtime) && answers(&kbs));

    // The printed policy works for `cordon infer`, on both models.
    let input = dir.path().join("demo-input.json");
    for model in ["breast-cancer-lr", "breast-cancer-mlp"] {
        let out = Command::new(BIN)
            .args([
                "infer",
                "--runtime",
                &runtime,
                "--policy",
                &policy,
                "--model",
                model,
            ])
            .arg("--input")
            .arg(&input)
            .env("CORDON_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("\"model_name\": \"{model}\"")),
            "{stdout}"
        );
    }

    // And for `cordon proxy`, as printed (on a free port).
    let (proxy, proxy_url) = start_proxy(dir.path(), &runtime, &policy);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ready = rt.block_on(async {
        let r = reqwest::get(format!("{proxy_url}/v2/models/breast-cancer-mlp/ready"))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert!(ready.1.contains("\"ready\":true"), "{}", ready.1);

    // Missing values as Python's json.dumps writes them (NaN, not null) reach the fraud GBDT
    // through the proxy and give the answer of the missing-value tracks, as null does.
    let fraud: serde_json::Value =
        serde_json::from_str(include_str!("../../../models/fraud/fraud_gbdt.input.json")).unwrap();
    let data = &fraud["inputs"][0]["data"].as_array().unwrap()[..20 * 8];
    assert!(data.iter().any(|v| v.is_null()), "no missing value to send");
    let with_null = serde_json::json!({"inputs": [{"name": "input", "shape": [8, 20],
        "datatype": "FP32", "data": data}]})
    .to_string();
    let with_nan = with_null.replace("null", "NaN");
    let post = |body: String| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{proxy_url}/v2/models/fraud-gbdt/infer"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let (status, by_null) = post(with_null);
    assert_eq!(status, 200, "{by_null}");
    let (status, by_nan) = post(with_nan);
    assert_eq!(status, 200, "{by_nan}");
    assert_eq!(by_nan, by_null);
    drop(proxy);

    // SIGTERM: dev up stops, and its KBS and runtime with it.
    let pid = dev.0.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "dev up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // The reader thread ends at EOF, which comes once dev up has exited.
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
    assert!(!answers(&runtime), "runtime still answers at {runtime}");
    assert!(!answers(&kbs), "KBS still answers at {kbs}");
}

fn wait_for(addr_file: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(a) = std::fs::read_to_string(addr_file) {
            return format!("http://{}", a.trim());
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("proxy exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("proxy not ready in 60 s");
}

/// A port nobody listens on now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A second `dev up` on the same directory and ports reuses the first one's state: the same
/// runtime URL and the very same client policy file, so that a proxy started with what the first
/// run printed verifies the second; the sealed models are reused, not sealed again.
#[test]
fn dev_up_keeps_its_state_and_ports_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (kbs_port, runtime_port) = (free_port(), free_port());
    let ports = [
        "--kbs-port",
        &kbs_port.to_string(),
        "--runtime-port",
        &runtime_port.to_string(),
    ]
    .map(str::to_string);
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    let policy_path = dir.path().join("client-policy.toml");
    let (first, lines, _rx) = start_dev(dir.path(), &ports);
    let runtime = field(&lines, "runtime URL:").to_string();
    assert_eq!(runtime, format!("http://127.0.0.1:{runtime_port}"));
    assert_eq!(
        field(&lines, "KBS URL:"),
        format!("http://127.0.0.1:{kbs_port}")
    );
    assert!(lines.iter().any(|l| l.starts_with("[owner]   sealed")));
    let policy = std::fs::read(&policy_path).unwrap();
    drop(first);

    let (_second, lines, _rx) = start_dev(dir.path(), &ports);
    let text = lines.join("\n");
    assert_eq!(field(&lines, "runtime URL:"), runtime);
    assert!(!text.contains("[owner]   sealed"), "{text}");
    assert_eq!(text.matches("[owner]   reusing").count(), 3, "{text}");
    assert!(text.contains("the 3 keys stay registered"), "{text}");
    assert_eq!(
        std::fs::read(&policy_path).unwrap(),
        policy,
        "the client policy changed"
    );
    let out = Command::new(BIN)
        .args(["infer", "--runtime", &runtime, "--policy"])
        .arg(&policy_path)
        .args(["--model", "breast-cancer-lr", "--input"])
        .arg(dir.path().join("demo-input.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The processes whose command line names `dir`: what a deployment there started.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// SIGTERM or SIGINT while `dev up` is still starting (the KBS up, the runtime not yet) takes the
/// children down with it: nothing keeps running, orphaned, holding a port.
#[test]
fn a_signal_during_the_start_leaves_no_process_behind() {
    for (delay_ms, signal) in [
        (100, libc::SIGTERM),
        (300, libc::SIGINT),
        (600, libc::SIGTERM),
        (1200, libc::SIGTERM),
        (2500, libc::SIGINT),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut dev = Command::new(BIN)
            .args(["dev", "up", "--data-dir"])
            .arg(dir.path())
            .args(["--kbs-port", "0", "--runtime-port", "0"])
            .env("CORDON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(dev.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = dev.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "dev up did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Stopped by the signal's default action (before the handlers were in place) or by its
        // handler, as a server ends: never an error exit.
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.success() || status.signal() == Some(signal),
            "signal {signal} at {delay_ms} ms: {status}"
        );
        let left = processes_under(dir.path());
        assert!(
            left.is_empty(),
            "after signal {signal} at {delay_ms} ms ({status}), still running:\n{}",
            left.join("\n")
        );
    }
}

/// The stock Python clients of the KServe v2 / Triton ecosystem (tritonclient.http and .grpc,
/// pinned, from PyPI by scripts/fetch-python-clients.sh; this test fails, never skips, when that
/// fails), on their default settings through `cordon proxy` and `--grpc-listen`: metadata, the
/// repository index (HTTP), binary tensors in and out and JSON, raw gRPC tensors, NaN inputs to
/// the fraud GBDT, error answers (crates/cordon/tests/stock_clients/*.py hold the checks); each
/// answer equals the runtime's own plaintext development route's for the same request.
#[test]
fn the_stock_triton_clients_work_through_the_proxy_over_http_and_grpc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = common::python_clients();

    let dir = tempfile::tempdir().unwrap();
    // The runtime's plaintext development route gives the reference answers: what the proxy
    // answers over the encrypted channel must be the same.
    let (_dev, lines, _rx) = start_dev(dir.path(), &["--dev-plaintext-inference"]);
    let runtime = field(&lines, "runtime URL:").to_string();
    let plaintext = runtime.trim_start_matches("http://").to_string();
    let policy = field(&lines, "client policy:").to_string();
    let (addr_file, grpc_addr_file) = (dir.path().join("p.addr"), dir.path().join("g.addr"));
    let mut proxy = Guard(
        Command::new(BIN)
            .args(["proxy", "--upstream", &runtime, "--policy", &policy])
            .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--grpc-addr-file")
            .arg(&grpc_addr_file)
            .env("CORDON_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = wait_for(&addr_file, &mut proxy.0);
    let http = http.trim_start_matches("http://").to_string();
    // The gRPC address is written before the HTTP one.
    let grpc = std::fs::read_to_string(&grpc_addr_file).unwrap();
    let run = |script: &str, addresses: &[&str]| -> serde_json::Value {
        let out = Command::new(&python)
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/stock_clients")
                    .join(script),
            )
            .args(addresses)
            .arg(root.join("models/demo_input.json"))
            .arg(root.join("models/fraud/fraud_gbdt.input.json"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{script}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
    };
    let over_http = run("triton_http.py", &[&http, &plaintext]);
    assert_eq!(over_http["lr_binary_True"], over_http["lr_binary_False"]);
    assert!(
        over_http["error"]
            .as_str()
            .unwrap()
            .contains("shape [1, 29]"),
        "{over_http}"
    );
    let over_grpc = run("triton_grpc.py", &[grpc.trim(), &plaintext]);
    assert_eq!(over_grpc["lr_labels"], over_http["lr_binary_True"]);
    assert!(
        over_grpc["error"]
            .as_str()
            .unwrap()
            .contains("shape [1, 29]"),
        "{over_grpc}"
    );
}
