//! docs/tutorial.md, run as written: every fenced block whose info string names a terminal
//! (```` ```sh terminal=N ````) runs in bash, in document order, with `cordon` (this build) on
//! PATH and HOME in a temporary directory. A terminal keeps its working directory from one block
//! to the next, as a shell would. A block marked `waits-for=ADDR` starts a server that keeps
//! running: the next block starts once ADDR accepts connections. Servers are stopped at the end,
//! on success and on failure.

mod common;

use common::BIN;
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TUTORIAL: &str = include_str!("../../../docs/tutorial.md");

/// One block the test runs.
#[derive(Debug)]
struct Block {
    /// The line of the opening fence, for messages.
    line: usize,
    terminal: String,
    waits_for: Option<String>,
    script: String,
}

/// The runnable blocks of `markdown`, in order. A fence with a `terminal=` attribute must be `sh`.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Vec<&str>, Vec<&str>)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some((i + 1, info.split_whitespace().collect(), Vec::new()));
            }
            (Some(_), Some("")) => {
                let (at, info, body) = open.take().unwrap();
                let attr = |name: &str| {
                    info.iter()
                        .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                        .map(str::to_string)
                };
                if let Some(terminal) = attr("terminal") {
                    assert_eq!(
                        info.first(),
                        Some(&"sh"),
                        "line {at}: a terminal block is sh"
                    );
                    out.push(Block {
                        line: at,
                        terminal,
                        waits_for: attr("waits-for"),
                        script: body.join("\n"),
                    });
                }
            }
            (Some((_, _, body)), _) => body.push(line),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code fence");
    out
}

/// Servers started by `waits-for` blocks: each in its own process group, stopped on drop.
struct Servers(Vec<(usize, Child, PathBuf)>);

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            // SAFETY: kill(2) on the process group this test created; no memory is involved.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_tutorial_runs_as_written() {
    let blocks = blocks(TUTORIAL);
    assert!(
        blocks.len() >= 10,
        "only {} runnable blocks found in docs/tutorial.md",
        blocks.len()
    );
    for addr in blocks.iter().filter_map(|b| b.waits_for.as_deref()) {
        assert!(
            TcpStream::connect(addr).is_err(),
            "{addr} is already in use on this machine; the tutorial needs it free"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let state = tmp.path().join("terminals");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bash = |script: &str| {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(script)
            .current_dir(&home)
            .env("HOME", &home)
            .env("PATH", &path)
            .env("CORDON_LOG", "warn")
            .env_remove("CORDON_CA_CERT")
            .env_remove("CORDON_OWNER_KEY")
            .stdin(Stdio::null());
        c
    };

    let mut servers = Servers(Vec::new());
    let mut transcript: BTreeMap<usize, String> = BTreeMap::new();
    for block in &blocks {
        let cwd = state.join(format!("cwd-{}", block.terminal));
        // The terminal's working directory from its last block, then the block, then (for a block
        // that ends) the directory it left the terminal in.
        let mut script = format!(
            "set -euo pipefail\nif [ -f '{cwd}' ]; then cd \"$(cat '{cwd}')\"; fi\n{}\n",
            block.script,
            cwd = cwd.display()
        );
        match &block.waits_for {
            Some(addr) => {
                let log = tmp.path().join(format!("server-{}.log", block.line));
                let file = std::fs::File::create(&log).unwrap();
                use std::os::unix::process::CommandExt;
                let child = bash(&script)
                    .stdout(file.try_clone().unwrap())
                    .stderr(file)
                    .process_group(0)
                    .spawn()
                    .unwrap();
                servers.0.push((block.line, child, log.clone()));
                let deadline = Instant::now() + Duration::from_secs(120);
                while TcpStream::connect(addr.as_str()).is_err() {
                    let (_, child, _) = servers.0.last_mut().unwrap();
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!(
                            "docs/tutorial.md line {}: the server exited ({status}) before \
                             listening on {addr}:\n{}",
                            block.line,
                            log_of(&log)
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "docs/tutorial.md line {}: nothing listens on {addr} after 120 s:\n{}",
                        block.line,
                        log_of(&log)
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            None => {
                script.push_str(&format!("pwd > '{}'\n", cwd.display()));
                let out = bash(&script).output().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if !out.status.success() {
                    let logs: Vec<String> = servers
                        .0
                        .iter()
                        .map(|(line, _, log)| format!("-- server of line {line}:\n{}", log_of(log)))
                        .collect();
                    panic!(
                        "docs/tutorial.md line {} failed ({}):\n{}\n{text}\n{}",
                        block.line,
                        out.status,
                        block.script,
                        logs.join("\n")
                    );
                }
                transcript.insert(block.line, text);
            }
        }
    }

    // What the tutorial says happens, happened.
    let all: String = transcript.values().cloned().collect();
    let dir = home.join("cordon-tutorial");
    for file in [
        "owner.key",
        "owner.pub",
        "model.sealed",
        "model.dek",
        "runtime.toml",
        "release.toml",
        "client.toml",
        "kbs.pub",
        "admin.token",
    ] {
        assert!(dir.join(file).is_file(), "{file} was not written");
    }
    assert!(all.contains("SIMULATED"), "{all}");
    // `cordon infer` and the unmodified client through the proxy both got the model's answer.
    assert!(
        all.contains("\"model_name\": \"breast-cancer-lr\""),
        "{all}"
    );
    assert!(all.contains("\"model_name\":\"breast-cancer-lr\""), "{all}");
    assert!(all.contains("\"state\":\"verified\""), "{all}");
    // The release is in the audit log.
    assert!(all.contains("key_released"), "{all}");
}

#[test]
fn blocks_are_found_with_their_terminals_and_servers() {
    let md = "text\n```sh\nnot run\n```\n```sh terminal=2 waits-for=127.0.0.1:1\nserve\n```\n\
              ```toml\nx = 1\n```\n```sh terminal=1\na\nb\n```\n";
    let found = blocks(md);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].terminal, "2");
    assert_eq!(found[0].waits_for.as_deref(), Some("127.0.0.1:1"));
    assert_eq!(found[0].script, "serve");
    assert_eq!(found[1].terminal, "1");
    assert_eq!(found[1].waits_for, None);
    assert_eq!(found[1].script, "a\nb");
    assert_eq!(found[1].line, 11);
}
