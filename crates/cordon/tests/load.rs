//! Load, bounded in requests and loopback only: the runtime (one worker, a queue of four) and the
//! KBS at a concurrency far above their pools. Nothing fails except by explicit backpressure
//! (503 with Retry-After), oversized bodies get 413, both processes stay under a stated memory
//! bound, and the latency percentiles are printed (`--nocapture`), never asserted.

mod common;
use common::*;

use cordon_attest::PolicyDocument;
use cordon_proto::kbs::{AttestRequest, Challenge};
use cordon_proto::oip::InferRequest;
use cordon_proto::{report_data, RuntimeKeys, ServiceKeyPair};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Peak resident memory (VmHWM) each server process may reach under this load.
const RUNTIME_BOUND_MIB: u64 = 256;
const KBS_BOUND_MIB: u64 = 128;
const INFER_REQUESTS: usize = 3000;
const INFER_CONCURRENCY: usize = 64;
const KBS_ROUNDS: usize = 400;
const KBS_CONCURRENCY: usize = 32;

/// The pid of the process whose command line contains `needle`.
fn pid_of(needle: &str) -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
        {
            return pid;
        }
    }
    panic!("no process with {needle:?} in its command line");
}

fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

#[test]
fn runtime_and_kbs_under_load_fail_only_by_backpressure_within_memory_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(BIN)
        .args([
            "dev",
            "up",
            "--data-dir",
            &s(dir.path()),
            "--workers",
            "1",
            "--max-queue",
            "4",
            // Free ports: tests run side by side (the defaults are fixed).
            "--kbs-port",
            "0",
            "--runtime-port",
            "0",
        ])
        .env("CORDON_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = dev.stdout.take().unwrap();
    let _dev = Proc::adopt(dev, dir.path().join("unused.log"));
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("Ctrl-C stops");
        lines.push(line);
        if done {
            break;
        }
    }
    let field = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {lines:?}"))
            .trim()
            .to_string()
    };
    let (runtime, kbs, policy) = (
        field("runtime URL:"),
        field("KBS URL:"),
        field("client policy:"),
    );
    let runtime_pid = pid_of(&s(&dir.path().join("run/runtime.addr")));
    let kbs_pid = pid_of(&s(&dir.path().join("run/kbs.addr")));
    let doc = PolicyDocument::from_toml(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    let request: InferRequest =
        serde_json::from_str(include_str!("../../../models/demo_input.json")).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The runtime: one-shot encrypted inference from 64 tasks against 1 worker + 4 queued.
        let verified = Arc::new(cordon_client::connect(&runtime, &doc, SystemTime::now()).await.unwrap());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..INFER_CONCURRENCY {
            let (v, req, next) = (verified.clone(), request.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut busy, mut other, mut lat) = (0, 0, Vec::new(), Vec::new());
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < INFER_REQUESTS {
                    let t = Instant::now();
                    match v.infer("breast-cancer-mlp", &req).await {
                        Ok(_) => {
                            ok += 1;
                            lat.push(t.elapsed());
                        }
                        Err(cordon_client::ClientError::Server { status: 503, .. }) => busy += 1,
                        Err(e) => other.push(e.to_string()),
                    }
                }
                (ok, busy, other, lat)
            }));
        }
        let (mut ok, mut busy, mut other, mut lat) = (0, 0, Vec::new(), Vec::new());
        for t in tasks {
            let (o, b, e, l) = t.await.unwrap();
            ok += o;
            busy += b;
            other.extend(e);
            lat.extend(l);
        }
        let elapsed = started.elapsed().as_secs_f64();
        assert!(other.is_empty(), "errors other than backpressure: {:?}", &other[..other.len().min(5)]);
        assert_eq!(ok + busy, INFER_REQUESTS);
        assert!(ok > 0);
        eprintln!(
            "runtime: {INFER_REQUESTS} encrypted requests at concurrency {INFER_CONCURRENCY} (1 worker, queue 4) in {elapsed:.2}s: {ok} ok, {busy} answered 503 (backpressure); ok latency {}",
            percentiles(lat)
        );

        // An oversized body is refused with 413 before it is read whole.
        let big = vec![b'x'; 9 << 20];
        let resp = reqwest::Client::new().post(format!("{runtime}/v1/encrypted")).body(big.clone()).send().await;
        if let Ok(r) = resp {
            assert_eq!(r.status(), 413);
        }
        let resp = reqwest::Client::new()
            .post(format!("{kbs}/kbs/v1/attest"))
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await;
        if let Ok(r) = resp {
            assert_eq!(r.status(), 413);
        }

        // The KBS: challenge + attest rounds from 32 tasks (evidence made here with the sim
        // hardware key; the key asked for is unknown, so each round is a full verification and a
        // denial, which is audited).
        let hw = cordon_tee::SimHardwareKey::from_file_contents(
            &std::fs::read_to_string(dir.path().join("keys/sim-hardware.key")).unwrap(),
        )
        .unwrap();
        let tee = Arc::new(cordon_tee::SimTee::new(hw, [1; 48], [0; 32], false));
        let http = reqwest::Client::new();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..KBS_CONCURRENCY {
            let (tee, http, kbs, next) = (tee.clone(), http.clone(), kbs.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                use cordon_tee::EvidenceProvider;
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < KBS_ROUNDS {
                    let t = Instant::now();
                    let c: Challenge = http.post(format!("{kbs}/kbs/v1/challenge")).send().await.unwrap().json().await.unwrap();
                    let kp = ServiceKeyPair::generate(0);
                    let rk = RuntimeKeys { hpke_public_key: kp.public_key(), hpke_key_id: 0, signing_public_key: [3; 32] };
                    let evidence = tee.evidence(&report_data(&hex::decode(&c.nonce).unwrap(), &rk, &[])).unwrap();
                    let req = AttestRequest { endorsements: Default::default(), nonce: c.nonce, evidence, runtime_keys: rk, key_ids: vec!["unknown".into()], models: vec![], sealed_job: None };
                    let resp = http.post(format!("{kbs}/kbs/v1/attest")).json(&req).send().await.unwrap();
                    if resp.status() != 200 {
                        errors.push(resp.status().as_u16());
                    }
                    lat.push(t.elapsed());
                }
                (lat, errors)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            let (l, e) = t.await.unwrap();
            assert!(e.is_empty(), "KBS errors under load: {e:?}");
            lat.extend(l);
        }
        eprintln!(
            "kbs: {KBS_ROUNDS} challenge+attest rounds at concurrency {KBS_CONCURRENCY} in {:.2}s; round latency {}",
            started.elapsed().as_secs_f64(),
            percentiles(lat)
        );
    });
    let (runtime_mib, kbs_mib) = (peak_mib(runtime_pid), peak_mib(kbs_pid));
    eprintln!("peak resident memory: runtime {runtime_mib} MiB (bound {RUNTIME_BOUND_MIB}), kbs {kbs_mib} MiB (bound {KBS_BOUND_MIB})");
    assert!(
        runtime_mib < RUNTIME_BOUND_MIB,
        "runtime peaked at {runtime_mib} MiB"
    );
    assert!(kbs_mib < KBS_BOUND_MIB, "kbs peaked at {kbs_mib} MiB");
}
