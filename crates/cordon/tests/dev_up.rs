//! `cordon dev up`: the demo deployment stays up in the foreground, serves the demo models to
//! `cordon infer` and `cordon proxy` with the policy it prints, and takes its children down on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cordon");

/// Kills the process on drop, should the test fail before it stops it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
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

#[test]
fn dev_up_serves_the_demo_models_until_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Guard(
        Command::new(BIN)
            .args(["dev", "up", "--data-dir", &dir.path().to_string_lossy()])
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
    let addr_file = dir.path().join("proxy.addr");
    let mut proxy = Guard(
        Command::new(BIN)
            .args(["proxy", "--upstream", &runtime, "--policy", &policy])
            .args(["--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .env("CORDON_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let proxy_url = wait_for(&addr_file, &mut proxy.0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ready = rt.block_on(async {
        let r = reqwest::get(format!("{proxy_url}/v2/models/breast-cancer-mlp/ready"))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert!(ready.1.contains("\"ready\":true"), "{}", ready.1);
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
