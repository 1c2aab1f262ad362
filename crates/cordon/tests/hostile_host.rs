//! The host is hostile: it runs the machines, the network, the disk and the clock, and Cordon
//! promises that it never sees a model, a row, an input, an output or a key. These tests put a
//! recording, replaying and tampering relay (`common/relay.rs`) between every pair of parties of
//! end-to-end runs of real `cordon` processes on loopback, and check that
//!
//! 1. nothing secret is in any byte the relays carried, in any encoding (raw, hex in both cases,
//!    base64 and base64url at every alignment), nor in the answers to the requests below, nor in
//!    the processes' logs (the host keeps them); a positive control shows that each secret is
//!    found in its own plaintext form, so the scan is not vacuous;
//! 2. every request carried, sent again after the run, is refused and changes nothing: no key
//!    released, no job started, no audit entry other than a denial, no runtime counter moved
//!    (except the refusal counters) — apart from the requests of [`expectation`]'s exception
//!    list, which carry no authority and no data (they are sent again too, and must change
//!    nothing). The requests that went to the KBS are also replayed after the host killed and
//!    restarted it on the same store;
//! 3. every request with one byte flipped (first, middle and last byte of the body; the last
//!    digit of the signature, nonce and time headers of signed requests) is refused and changes
//!    nothing. Bodiless requests have no body to flip; the nonce in the query of
//!    `GET /v1/attestation` is not flipped, since a changed nonce is just a new verifier's
//!    request, which anyone may send;
//! 4. the key messages, flipped in flight (where a replay would prove nothing, since a replay is
//!    refused anyway), make the flow fail closed: the runtime does not boot, the job fails, or
//!    the client refuses the answer, and no plaintext comes out.
//!
//! Three flows: the quickstart by hand (owner → KBS, runtime → KBS, client → runtime, and the
//! operator's own metadata and metrics reads); a `dev up`-like deployment of two models behind
//! the verifying proxy (proxy → runtime); and a training job of three hospitals whose model is
//! then served (party → KBS, party → runtime, training runtime → KBS, serving runtime → KBS,
//! client → serving runtime). The leg from an application to `cordon proxy` is plaintext by
//! design (it stays on the application's machine) and is not relayed.
//!
//! Not covered, because the test cannot read them: the KBS's identity secret and the runtimes'
//! HPKE and signing secrets (they never leave their processes). The relay is plain threads and
//! blocking sockets, so the tests are plain `#[test]`s that drive the CLI with blocking calls.

mod common;
#[path = "common/relay.rs"]
mod relay;

use common::*;
use relay::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MODEL_LR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/breast_cancer_lr.onnx"
);
const MODEL_MLP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/breast_cancer_mlp.onnx"
);
const DEMO_INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/demo_input.json");
const HOSPITALS: [(&str, &str); 3] = [
    (
        "hospital-a",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/training/hospital_a.csv"
        ),
    ),
    (
        "hospital-b",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/training/hospital_b.csv"
        ),
    ),
    (
        "hospital-c",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/training/hospital_c.csv"
        ),
    ),
];

// ---------------------------------------------------------------------------------------------
// What must not leak
// ---------------------------------------------------------------------------------------------

/// Named secrets to scan the captures for.
#[derive(Default)]
struct Secrets(Vec<(String, Vec<u8>)>);

impl Secrets {
    fn add(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        let name = name.into();
        assert!(bytes.len() >= MIN_SECRET, "secret {name} too short to scan");
        self.0.push((name, bytes));
    }

    /// A hex field of a JSON key file (a DEK, a party's or the owner's secret key).
    fn json_hex(&mut self, name: &str, file: &Path, field: &str) {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let hex_text = v[field]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no {field}", file.display()));
        self.add(name, hex::decode(hex_text).unwrap());
    }

    /// A file of one line of hex (the admin token).
    fn hex_file(&mut self, name: &str, file: &Path) {
        let text = std::fs::read_to_string(file).unwrap();
        self.add(name, hex::decode(text.trim()).unwrap());
    }

    /// The DEK of a key file (`cordon seal` / `dataset seal` / `job result`).
    fn dek(&mut self, name: &str, key_file: &Path) {
        self.json_hex(&format!("DEK {name}"), key_file, "dek");
    }

    /// Both secrets of a party key file.
    fn party(&mut self, name: &str, party_file: &Path) {
        self.json_hex(&format!("{name} signing key"), party_file, "signing_key");
        self.json_hex(&format!("{name} hpke seed"), party_file, "hpke_seed");
    }

    /// Four 24-byte windows of a model's plaintext, taken where the bytes are binary (weights),
    /// not the protobuf's strings (op and tensor names, which the metadata legitimately names).
    fn model(&mut self, name: &str, onnx: &[u8]) {
        let mut taken = 0;
        for quarter in 1..=4 {
            let mut at = onnx.len() * quarter / 5;
            while at + 24 <= onnx.len() {
                let w = &onnx[at..at + 24];
                if w.iter().filter(|b| !b.is_ascii_graphic()).count() >= 8 {
                    self.add(format!("model {name} plaintext @{at}"), w.to_vec());
                    taken += 1;
                    break;
                }
                at += 1;
            }
        }
        assert!(taken >= 2, "no binary windows in model {name}");
    }

    /// Every data line of a CSV dataset.
    fn csv(&mut self, name: &str, text: &str) {
        for (i, line) in text.lines().enumerate().skip(1) {
            if line.len() >= MIN_SECRET {
                self.add(format!("{name} row {i}"), line.as_bytes().to_vec());
            }
        }
    }

    /// An OIP request's input data: its JSON text, runs of three values of it, and the values
    /// as little-endian f32 (a binary tensor).
    fn input(&mut self, name: &str, request: &str) {
        let v: Value = serde_json::from_str(request).unwrap();
        for (k, input) in v["inputs"].as_array().unwrap().iter().enumerate() {
            let data = input["data"].as_array().unwrap();
            self.add(
                format!("{name} input {k} data"),
                serde_json::to_string(data).unwrap().into_bytes(),
            );
            // Compact (as serde_json writes it) and with spaces (as the request file has it).
            for sep in [",", ", "] {
                for (j, w) in data.windows(3).enumerate() {
                    let text = w
                        .iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(sep);
                    if text.len() >= 20 {
                        self.add(
                            format!("{name} input {k} values {j}..{} {sep:?}", j + 3),
                            text.into(),
                        );
                    }
                }
            }
            let f32le: Vec<u8> = data
                .iter()
                .flat_map(|x| (x.as_f64().unwrap() as f32).to_le_bytes())
                .collect();
            self.add(format!("{name} input {k} as f32"), f32le);
        }
    }

    /// An OIP response's probabilities, as the client printed them.
    fn output(&mut self, name: &str, response: &Value) {
        let data = probabilities(response);
        self.add(
            format!("{name} output probabilities"),
            serde_json::to_string(&data).unwrap().into_bytes(),
        );
        for (i, x) in data.iter().enumerate() {
            let text = x.to_string();
            if text.len() >= MIN_SECRET {
                self.add(format!("{name} output probability {i}"), text.into_bytes());
            }
        }
    }
}

fn assert_no_leaks(flow: &str, exchanges: &[Exchange], secrets: &Secrets) {
    let t = Instant::now();
    let findings = scan(exchanges, &secrets.0);
    println!(
        "{flow}: scanned {} exchanges ({} bytes) for {} secrets in {:.1?}",
        exchanges.len(),
        exchanges
            .iter()
            .map(|e| e.req_raw.len().max(e.req_body.len()) + e.resp_raw.len().max(e.resp_body.len()))
            .sum::<usize>(),
        secrets.0.len(),
        t.elapsed()
    );
    assert!(
        findings.is_empty(),
        "{flow}: secrets in captured traffic:\n{}",
        findings
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The logs of every process a flow started (KBS, runtimes, proxies: `*.log` in its
/// directory), as exchanges to scan: the host keeps them on its disk.
fn log_files(dir: &Path) -> Vec<Exchange> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            out.push(Exchange {
                leg: format!("log {}", path.file_name().unwrap().to_string_lossy()),
                resp_body: read(&path),
                ..Default::default()
            });
        }
    }
    assert!(!out.is_empty(), "no logs in {}", dir.display());
    out
}

/// The scan is not vacuous: every secret is found (in some encoding) in the plaintext forms
/// the test holds (key files, datasets, models, requests and answers as JSON), presented as if
/// they had crossed a relay. Only the binary f32 form of an input has no such plaintext.
fn positive_control(flow: &str, secrets: &Secrets, samples: Vec<Vec<u8>>) {
    let fake: Vec<Exchange> = samples
        .into_iter()
        .enumerate()
        .map(|(i, body)| Exchange {
            leg: "plaintext".into(),
            seq: i,
            method: "GET".into(),
            target: "/".into(),
            status: 200,
            resp_body: body,
            ..Default::default()
        })
        .collect();
    let found: std::collections::HashSet<String> = scan(&fake, &secrets.0)
        .into_iter()
        .map(|f| f.secret)
        .collect();
    let missing: Vec<&str> = secrets
        .0
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !found.contains(*n) && !n.ends_with(" as f32"))
        .collect();
    assert!(
        missing.is_empty(),
        "{flow}: the scanner does not find these secrets in their own plaintext: {missing:?}"
    );
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// The plaintexts every flow holds: the admin token, the sim hardware key, the owner key, the
/// demo request (as the file has it, and compact as a client sends it).
fn base_samples(dir: &Path) -> Vec<Vec<u8>> {
    let demo: Value = serde_json::from_slice(&read(DEMO_INPUT)).unwrap();
    vec![
        read(dir.join("token")),
        read(dir.join("hw.key")),
        read(dir.join("owner.key")),
        read(DEMO_INPUT),
        serde_json::to_vec(&demo).unwrap(),
    ]
}

/// Every in-flight tampering must have flipped something, or it proves nothing: `carried` is
/// what the relay carried meanwhile.
fn check_flipped(carried: &[Exchange], what: &str, failures: &mut Vec<String>) {
    let flips: Vec<String> = carried.iter().filter_map(|e| e.tampered.clone()).collect();
    if flips.is_empty() || flips.iter().any(|f| f.contains("nothing to flip")) {
        failures.push(format!(
            "{what}: the relay did not flip a byte as asked ({flips:?}); the check proves nothing"
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// State: what a replay or a tampered message must not change
// ---------------------------------------------------------------------------------------------

/// Where to read the state of a deployment: the KBS's audit log (through the admin API, read
/// directly, not through a relay) and every runtime's metrics.
struct World {
    kbs_url: String,
    kbs_key: String,
    token: PathBuf,
    runtimes: Vec<(String, String)>,
}

struct Snapshot {
    audit: Vec<Value>,
    /// Per runtime, every sample line except the refusal counters.
    metrics: Vec<(String, BTreeMap<String, String>)>,
}

impl World {
    fn audit(&self) -> Vec<Value> {
        let out = ok(&[
            "kbs",
            "audit",
            "--kbs",
            &self.kbs_url,
            "--kbs-key",
            &self.kbs_key,
            "--token-file",
            &s(&self.token),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kbs audit: {e}:\n{out}"))
    }

    fn snapshot(&self) -> Snapshot {
        let metrics = self
            .runtimes
            .iter()
            .map(|(name, url)| (name.clone(), runtime_metrics(url)))
            .collect();
        Snapshot {
            audit: self.audit(),
            metrics,
        }
    }

    /// Takes a snapshot and records, in `failures`, whatever changed since `before` that must
    /// not have ([`World::changes_except`] with `allowed`), as changed by `what`; the snapshot.
    fn expect_unchanged(
        &self,
        before: &Snapshot,
        allowed: &[&str],
        what: &str,
        failures: &mut Vec<String>,
    ) -> Snapshot {
        let after = self.snapshot();
        for c in self.changes_except(before, &after, allowed) {
            failures.push(format!("STATE CHANGED by {what}: {c}"));
        }
        after
    }

    /// What changed between two snapshots that must not: an audit event that is not a
    /// rejection (a release, a registration), an event rewritten, a runtime counter other than
    /// the refusals; not counting the metric samples named in `expected` (what the untampered
    /// part of a flow legitimately moves, such as the attestation a client makes before it sends
    /// the request that was tampered with).
    fn changes_except(
        &self,
        before: &Snapshot,
        after: &Snapshot,
        expected: &[&str],
    ) -> Vec<String> {
        let mut out = Vec::new();
        if after.audit.len() < before.audit.len()
            || after.audit[..before.audit.len()] != before.audit[..]
        {
            out.push("the audit log's earlier events changed".to_string());
        }
        for e in after.audit.iter().skip(before.audit.len()) {
            if e["verdict"] != "rejected" {
                out.push(format!("new audit event that is not a rejection: {e}"));
            }
        }
        for ((name, b), (_, a)) in before.metrics.iter().zip(&after.metrics) {
            let keep = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
                m.iter()
                    .filter(|(k, _)| !expected.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let (a, b) = (&keep(a), &keep(b));
            if a != b {
                let mut diff = Vec::new();
                for (k, v) in a {
                    if b.get(k) != Some(v) {
                        diff.push(format!("{k}: {:?} -> {v}", b.get(k)));
                    }
                }
                for k in b.keys().filter(|k| !a.contains_key(*k)) {
                    diff.push(format!("{k}: gone"));
                }
                out.push(format!("runtime {name} metrics moved: {}", diff.join(", ")));
            }
        }
        out
    }
}

fn runtime_metrics(url: &str) -> BTreeMap<String, String> {
    let (status, body) = http(url, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{url}/metrics");
    String::from_utf8_lossy(&body)
        .lines()
        // Refusal counters and the replay memories' sizes move with every refusal and every
        // expiry sweep: they are not state a refused message may not change.
        .filter(|l| {
            !l.starts_with('#')
                && !l.starts_with("cordon_runtime_refusals")
                && !l.starts_with("cordon_runtime_replay_remembered")
        })
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn count_kind(audit: &[Value], kind: &str) -> usize {
    audit.iter().filter(|e| e["kind"] == kind).count()
}

// ---------------------------------------------------------------------------------------------
// Replays and flipped bytes
// ---------------------------------------------------------------------------------------------

/// What a replayed request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Carries no authority and no data, and its repeat changes no security state: sent again
    /// and checked for state changes, but may be answered.
    Exempt(&'static str),
    /// Refused with this status (and, at the KBS, this error code).
    Refused(u16, Option<&'static str>),
    /// Not in the table: a request the flows are not expected to send. It must be refused like
    /// any other, and the table extended (a failure until it is).
    Unlisted,
}

/// The replay table (issue 15, item 8).
fn expectation(method: &str, path: &str) -> Expect {
    use Expect::*;
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, seg.as_slice()) {
        // A fresh nonce each time: the nonce it answered is single use, and only the attest
        // request that spends it carries anything.
        ("POST", ["kbs", "v1", "challenge"]) => Exempt("issues a fresh single-use nonce"),
        ("GET", ["kbs", "v1", "identity"]) => Exempt("the KBS's public identity key"),
        ("GET", ["healthz"]) => Exempt("liveness"),
        ("GET", ["metrics"]) => Exempt("counters the operator already sees"),
        ("GET", ["v2"]) => Exempt("public server metadata"),
        ("GET", ["v2", "health", ..]) => Exempt("liveness / readiness"),
        ("GET", ["v2", "models", ..]) => Exempt("public model metadata (names, shapes)"),
        ("PUT", ["kbs", "v1", "admin", "keys", _]) => Refused(409, Some("request_replayed")),
        ("GET", ["kbs", "v1", "admin", ..]) => Refused(409, Some("request_replayed")),
        ("PUT", ["kbs", "v1", "datasets", _]) => Refused(409, Some("request_replayed")),
        ("PUT", ["kbs", "v1", "jobs", _, "output"]) => Refused(409, Some("request_replayed")),
        ("POST", ["kbs", "v1", "attest"]) => Refused(403, Some("nonce_replayed")),
        // Fresh evidence for a nonce its verifier already checked once: nothing to gain, and
        // remembering unauthenticated nonces would let anyone fill the runtime's replay memory.
        ("GET", ["v1", "attestation"]) => Exempt("fresh evidence for a nonce already checked"),
        ("POST", ["v1", "encrypted"]) => Refused(409, None),
        ("POST", ["v1", "session"]) => Refused(409, None),
        ("POST", ["v1", "session", "message"]) => Refused(409, None),
        ("PUT", ["v1", "datasets"]) => Refused(409, None),
        _ => Unlisted,
    }
}

/// The runtime's counter of attestations it answered.
const ATTESTATION_EVENT: &str = "cordon_runtime_events_total{event=\"attestation\"}";

const SESSION_OPENED: &str = "cordon_runtime_events_total{event=\"session_opened\"}";
const SESSIONS_OPEN: &str = "cordon_runtime_sessions_open";

type Headers = Vec<(String, String)>;

const SIGNED_HEADERS: [&str; 3] = ["x-cordon-signature", "x-cordon-nonce", "x-cordon-time"];

#[derive(Default)]
struct Tally {
    /// The answers to the replays and flipped requests: the host sees them too, so they are
    /// scanned like the captures.
    answers: Vec<Exchange>,
    exchanges: usize,
    replays: usize,
    exempt: usize,
    flips: usize,
    inflight: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exchanges captured, {} replayed ({} exempt), {} flipped requests sent, {} in-flight tamperings",
            self.exchanges, self.replays, self.exempt, self.flips, self.inflight
        )
    }
}

/// The answer to a request sent again, as an exchange to scan.
fn answer_of(ex: &Exchange, what: &str, status: u16, body: &[u8]) -> Exchange {
    Exchange {
        leg: format!("{} #{} {what}", ex.leg, ex.seq),
        status,
        req_raw: vec![],
        req_body: vec![],
        resp_raw: vec![],
        resp_headers: vec![],
        resp_body: body.to_vec(),
        tampered: None,
        ..ex.clone()
    }
}

fn body_text(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body);
    if t.len() > 400 {
        format!("{}… ({} bytes)", &t[..400], body.len())
    } else {
        t.into_owned()
    }
}

/// How a server refuses a request it will not act on: a client error, or 503 (busy: the replay
/// or nonce memory is full). Not a 5xx otherwise, nor no answer at all.
fn is_refusal(status: u16) -> bool {
    (400..500).contains(&status) || status == 503
}

fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
}

/// Sends every captured request again, then with flipped bytes, checking that each is refused
/// and that the state did not change; failures are collected, not panicked on, so one run
/// reports them all.
fn replay_and_flip(
    world: &World,
    exchanges: &[Exchange],
    tally: &mut Tally,
    failures: &mut Vec<String>,
) {
    for ex in exchanges {
        tally.exchanges += 1;
        let expect = expectation(&ex.method, ex.path());
        let before = world.snapshot();
        let (status, body) = replay(ex);
        tally.answers.push(answer_of(ex, "replayed", status, &body));
        tally.replays += 1;
        match expect {
            Expect::Exempt(_) => tally.exempt += 1,
            Expect::Refused(..) | Expect::Unlisted => {
                let (want, code) = match expect {
                    Expect::Refused(want, code) => (want, code),
                    _ => {
                        failures.push(format!(
                            "UNLISTED REQUEST on the wire: {} (extend the replay table)",
                            ex.describe()
                        ));
                        (0, None)
                    }
                };
                let refused = !(200..300).contains(&status);
                let status_ok = want == 0 || status == want;
                let code_ok = code.is_none() || error_code(&body).as_deref() == code;
                if !refused || !status_ok || !code_ok {
                    failures.push(format!(
                        "REPLAY ACCEPTED OR MISANSWERED: {} replayed: got {status}, expected {}{}: {}",
                        ex.describe(),
                        if want == 0 { "a refusal".to_string() } else { want.to_string() },
                        code.map(|c| format!(" {c}")).unwrap_or_default(),
                        body_text(&body)
                    ));
                }
                // Flipped bytes: the body at three places, and the signed headers.
                let mut variants: Vec<(String, Headers, Vec<u8>)> = Vec::new();
                for pos in [Pos::First, Pos::Middle, Pos::Last] {
                    let mut b = ex.req_body.clone();
                    if let Some(what) = flip_body(&mut b, &pos) {
                        variants.push((what, ex.req_headers.clone(), b));
                    }
                }
                if ex.req_header("x-cordon-signature").is_some() {
                    for h in SIGNED_HEADERS {
                        let mut hs = ex.req_headers.clone();
                        if let Some(what) = flip_header(&mut hs, h) {
                            variants.push((what, hs, ex.req_body.clone()));
                        }
                    }
                }
                for (what, headers, b) in variants {
                    tally.flips += 1;
                    let (status, body) = resend(ex, &headers, &b);
                    tally
                        .answers
                        .push(answer_of(ex, &format!("with {what}"), status, &body));
                    if (200..300).contains(&status) {
                        failures.push(format!(
                            "FLIPPED REQUEST ACCEPTED: {} with {what}: got {status}: {}",
                            ex.describe(),
                            body_text(&body)
                        ));
                    } else if !is_refusal(status) {
                        // A 500 (a panic, an unhandled error) or no answer is a failure too.
                        failures.push(format!(
                            "FLIPPED REQUEST MISANSWERED: {} with {what}: got {status}, expected a refusal (4xx, or 503 busy): {}",
                            ex.describe(),
                            body_text(&body)
                        ));
                    }
                }
            }
        }
        // An attestation answered again counts as one more attestation, and nothing else.
        let counted: &[&str] = if ex.path().starts_with("/v1/attestation") {
            &[ATTESTATION_EVENT]
        } else {
            &[]
        };
        world.expect_unchanged(
            &before,
            counted,
            &format!("the replay or the flips of {} ({expect:?})", ex.describe()),
            failures,
        );
    }
}

/// Kills the KBS (no graceful shutdown: what it stored must already be durable), starts it
/// again on the same store, and replays every captured request that went to it at the new
/// address: the new KBS process and the tally.
fn restart_kbs_and_replay(
    dir: &Path,
    kbs: Proc,
    old_url: &str,
    world: &World,
    exchanges: &[Exchange],
    failures: &mut Vec<String>,
) -> (Proc, Tally) {
    drop(kbs);
    std::fs::remove_file(dir.join("kbs.addr")).unwrap();
    // Keep the first process's log for the scan of the logs.
    std::fs::rename(dir.join("kbs.log"), dir.join("kbs-before-restart.log")).unwrap();
    let (kbs, url) = start_kbs(dir, "kbs");
    assert_eq!(
        kbs_key(dir, "kbs"),
        world.kbs_key,
        "the KBS kept its identity"
    );
    let world = World {
        kbs_url: url.clone(),
        kbs_key: world.kbs_key.clone(),
        token: world.token.clone(),
        runtimes: world.runtimes.clone(),
    };
    let moved: Vec<Exchange> = exchanges
        .iter()
        .filter(|e| e.upstream == old_url)
        .map(|e| {
            let mut e = e.clone();
            e.upstream = url.clone();
            e.leg = format!("{} (KBS restarted)", e.leg);
            e
        })
        .collect();
    assert!(!moved.is_empty());
    let mut tally = Tally::default();
    replay_and_flip(&world, &moved, &mut tally, failures);
    (kbs, tally)
}

fn legs_summary(relays: &[&Relay]) -> String {
    relays
        .iter()
        .map(|r| {
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for e in r.captured() {
                let p = e.path();
                let key = format!("{} {}", e.method, generic_path(p));
                *kinds.entry(key).or_default() += 1;
            }
            format!(
                "  {} ({} exchanges): {}",
                r.leg(),
                r.count(),
                kinds
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A path with its ids replaced by `*`.
fn generic_path(p: &str) -> String {
    p.split('/')
        .map(|seg| {
            if seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `(relay, method, path)` of `expect` was carried: the legs carried what the flow is made
/// of. A path that ends in `/` is a prefix (an id follows); any other is the whole path (the
/// query aside).
fn assert_legs_carried(expect: &[(&Relay, &str, &str)], relays: &[&Relay]) {
    for (relay, method, path) in expect {
        let carried = |p: &str| {
            if path.ends_with('/') {
                p.starts_with(path)
            } else {
                p == *path
            }
        };
        assert!(
            relay
                .captured()
                .iter()
                .any(|e| e.method == *method && carried(e.path())),
            "{} carried no {method} {path}:\n{}",
            relay.leg(),
            legs_summary(relays)
        );
    }
}

/// Clears a relay's tamper rule when dropped: a step that panics leaves no rule behind.
struct ClearTamper<'a>(&'a Relay);

impl Drop for ClearTamper<'_> {
    fn drop(&mut self) {
        self.0.set_tamper(None);
    }
}

/// One in-flight tampering: sets `t` on `relay`, counts it in `tally`, runs the step, and clears
/// the rule (even if the step panics). The step's result, and what the relay carried meanwhile.
fn tampered<R>(
    relay: &Relay,
    t: Tamper,
    tally: &mut Tally,
    run: impl FnOnce() -> R,
) -> (R, Vec<Exchange>) {
    tally.inflight += 1;
    let from = relay.count();
    relay.set_tamper(Some(t));
    let result = {
        let _clear = ClearTamper(relay);
        run()
    };
    (result, relay.since(from))
}

/// The end of a flow: the answers to its replayed and flipped requests and the processes' logs
/// scanned, then a summary, and every failure it collected reported.
struct Flow<'a> {
    name: &'a str,
    dir: &'a Path,
    started: Instant,
    relays: &'a [&'a Relay],
    secrets: &'a Secrets,
}

impl Flow<'_> {
    fn finish(&self, tally: &Tally, failures: &[String]) {
        let flow = self.name;
        assert_no_leaks(
            &format!("{flow}: answers to replayed and flipped requests"),
            &tally.answers,
            self.secrets,
        );
        assert_no_leaks(
            &format!("{flow}: process logs"),
            &log_files(self.dir),
            self.secrets,
        );
        println!(
            "{flow}: {tally} in {:.1?}\n{}",
            self.started.elapsed(),
            legs_summary(self.relays)
        );
        assert!(
            failures.is_empty(),
            "{flow}: {} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// [`Flow::finish`], after the host restarted the KBS to make it forget what it saw: replayed
    /// at the restarted KBS (same store), the requests of `all` that went to it must be refused
    /// the same way.
    fn finish_with_restart(
        &self,
        kbs: Proc,
        kbs_url: &str,
        world: &World,
        all: &[Exchange],
        tally: &Tally,
        failures: &mut Vec<String>,
    ) {
        let flow = self.name;
        let (_kbs, restart) = restart_kbs_and_replay(self.dir, kbs, kbs_url, world, all, failures);
        println!("{flow}, after a KBS restart: {restart}");
        assert_no_leaks(
            &format!("{flow}: answers after a KBS restart"),
            &restart.answers,
            self.secrets,
        );
        self.finish(tally, failures);
    }
}

// ---------------------------------------------------------------------------------------------
// Deployment helpers
// ---------------------------------------------------------------------------------------------

/// `cordon args` expected to fail: its (stdout, stderr), or a failure note if it succeeded.
fn must_fail<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    what: &str,
    failures: &mut Vec<String>,
) -> (String, String) {
    let out = cordon(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        failures.push(format!(
            "TAMPERING ACCEPTED: {what}: `cordon {}` succeeded:\n{stdout}",
            argv(args).join(" ")
        ));
    }
    (stdout, stderr)
}

/// Seals `model` as `name` with the owner key `dir/owner.key`: the sealed path, the key file and
/// the sealed manifest's SHA-256.
fn seal_model(dir: &Path, model: &str, name: &str) -> (PathBuf, PathBuf, String) {
    let sealed = dir.join(format!("{name}.sealed"));
    let key = dir.join(format!("{name}.key"));
    let out = ok(&[
        "seal",
        model,
        "--out",
        &s(&sealed),
        "--key-out",
        &s(&key),
        "--owner-key",
        &s(&dir.join("owner.key")),
        "--name",
        name,
        "--version",
        "1",
    ]);
    let manifest = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("manifest sha256"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no manifest digest in:\n{out}"))
        .to_string();
    (sealed, key, manifest)
}

fn register_args<'a>(
    kbs: &'a str,
    kbs_key: &'a str,
    token: &'a str,
    key: &'a str,
    policy: &'a str,
) -> Vec<&'a str> {
    vec![
        "kbs",
        "register",
        "--kbs",
        kbs,
        "--kbs-key",
        kbs_key,
        "--token-file",
        token,
        "--key",
        key,
        "--policy",
        policy,
    ]
}

fn owner_pub(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("owner.pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// The common start of every flow: sim hardware key, owner key, the KBS.
fn base(dir: &Path) -> (Proc, String, String) {
    ok(&["sim", "keygen", "--out", &s(&dir.join("hw.key"))]);
    ok(&["keygen", "--out", &s(&dir.join("owner.key"))]);
    let (kbs, url) = start_kbs(dir, "kbs");
    let key = kbs_key(dir, "kbs");
    (kbs, url, key)
}

fn base_secrets(dir: &Path) -> Secrets {
    let mut sec = Secrets::default();
    sec.hex_file("admin token", &dir.join("token"));
    sec.json_hex("sim hardware key", &dir.join("hw.key"), "secret_key");
    sec.json_hex("owner secret key", &dir.join("owner.key"), "secret_key");
    sec
}

fn infer_args<'a>(runtime: &'a str, policy: &'a str, model: &'a str) -> Vec<&'a str> {
    vec![
        "infer",
        "--runtime",
        runtime,
        "--policy",
        policy,
        "--model",
        model,
        "--input",
        DEMO_INPUT,
    ]
}

/// Whether any of the output secrets is in `text`.
fn shows_output(text: &str, outputs: &Secrets) -> bool {
    outputs
        .0
        .iter()
        .any(|(_, b)| text.contains(&*String::from_utf8_lossy(b)))
}

// ---------------------------------------------------------------------------------------------
// Flow 1: the quickstart, by hand
// ---------------------------------------------------------------------------------------------

#[test]
fn quickstart_leaks_nothing_and_refuses_replayed_and_tampered_messages() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n);
    let (kbs, kbs_url, kbs_key) = base(d);
    let (lr_sealed, lr_key, lr_manifest) = seal_model(d, MODEL_LR, "breast-cancer-lr");

    let owner_kbs = Relay::start("owner→kbs", &kbs_url);
    let rt_kbs = Relay::start("runtime→kbs", &kbs_url);
    let config = p("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "kbs_url = \"{}\"\nkbs_public_key = \"{kbs_key}\"\n\n[[models]]\nname = \"breast-cancer-lr\"\npath = \"{}\"\nsigner = \"{}\"\nmanifest_sha256 = \"{lr_manifest}\"\n",
            rt_kbs.url,
            s(&lr_sealed),
            owner_pub(d)
        ),
    )
    .unwrap();
    let (release, client, _) = sim_policies(d, &config, "runtime");
    let token = s(&p("token"));
    ok(&register_args(
        &owner_kbs.url,
        &kbs_key,
        &token,
        &s(&lr_key),
        &s(&release),
    ));
    // An administrator's read travels the same leg.
    ok(&[
        "kbs",
        "audit",
        "--kbs",
        &owner_kbs.url,
        "--kbs-key",
        &kbs_key,
        "--token-file",
        &token,
    ]);

    let (_rt, rt_url) = start_runtime(d, &config, "runtime");
    let client_rt = Relay::start("client→runtime", &rt_url);
    let out = ok(&infer_args(&client_rt.url, &s(&client), "breast-cancer-lr"));
    let answer: Value = serde_json::from_str(&out).unwrap();
    let reference = reference_output(MODEL_LR, DEMO_INPUT);
    assert_eq!(probabilities(&answer), probabilities(&reference), "{out}");

    let mut secrets = base_secrets(d);
    secrets.dek("breast-cancer-lr", &lr_key);
    secrets.model("breast-cancer-lr", &std::fs::read(MODEL_LR).unwrap());
    let demo = std::fs::read_to_string(DEMO_INPUT).unwrap();
    secrets.input("demo", &demo);
    let mut outputs = Secrets::default();
    outputs.output("breast-cancer-lr", &answer);
    secrets.0.extend(outputs.0.iter().cloned());

    // The operator's own traffic: monitoring and public metadata, outside the channel.
    let operator_rt = Relay::start("operator→runtime", &rt_url);
    let operator_kbs = Relay::start("operator→kbs", &kbs_url);
    for (relay, path) in [
        (&operator_rt, "/metrics"),
        (&operator_rt, "/v2"),
        (&operator_rt, "/v2/health/live"),
        (&operator_rt, "/v2/health/ready"),
        (&operator_rt, "/v2/models/breast-cancer-lr"),
        (&operator_rt, "/v2/models/breast-cancer-lr/ready"),
        (&operator_kbs, "/healthz"),
        (&operator_kbs, "/kbs/v1/identity"),
    ] {
        let (status, body) = http(&relay.url, "GET", path, b"");
        assert_eq!(status, 200, "{path}: {}", body_text(&body));
    }
    let relays = [&owner_kbs, &rt_kbs, &client_rt, &operator_rt, &operator_kbs];
    let all: Vec<Exchange> = relays.iter().flat_map(|r| r.captured()).collect();
    let mut samples = base_samples(d);
    samples.extend([
        read(&lr_key),
        read(MODEL_LR),
        out.clone().into_bytes(),
        serde_json::to_vec(&answer).unwrap(),
    ]);
    positive_control("quickstart", &secrets, samples);
    assert_no_leaks("quickstart", &all, &secrets);
    assert_legs_carried(
        &[
            (&owner_kbs, "PUT", "/kbs/v1/admin/keys/"),
            (&owner_kbs, "GET", "/kbs/v1/admin/audit"),
            (&rt_kbs, "POST", "/kbs/v1/challenge"),
            (&rt_kbs, "POST", "/kbs/v1/attest"),
            (&client_rt, "GET", "/v1/attestation"),
            (&client_rt, "POST", "/v1/encrypted"),
        ],
        &relays,
    );

    let world = World {
        kbs_url: kbs_url.clone(),
        kbs_key: kbs_key.clone(),
        token: p("token"),
        runtimes: vec![("runtime".into(), rt_url.clone())],
    };
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    replay_and_flip(&world, &all, &mut tally, &mut failures);

    // ---- In flight: the runtime's attest request and the KBS's answer. Same relay, so the same
    // configuration and measurement: only the flipped byte differs from a boot that works.
    let cases = [
        (Dir::Request, Pos::First),
        (Dir::Request, Pos::Middle),
        (Dir::Request, Pos::Last),
        (Dir::Response, Pos::Field("sealed_dek".into())),
        (Dir::Response, Pos::First),
        (Dir::Response, Pos::Last),
    ];
    for (i, (dir, pos)) in cases.into_iter().enumerate() {
        let before = world.audit();
        let tamper = Tamper::new("POST", "/kbs/v1/attest", dir, pos.clone());
        let ((_p, booted), carried) = tampered(&rt_kbs, tamper, &mut tally, || {
            try_start_runtime(d, &config, &format!("rt-tamper-{i}"), &[])
        });
        let what = format!("runtime→KBS attest {dir:?} flipped at {pos:?}");
        let flipped = carried.iter().filter(|e| e.tampered.is_some()).count();
        if flipped != 1 {
            failures.push(format!(
                "{what}: the relay flipped {flipped} messages, expected 1"
            ));
        }
        if let Ok(url) = booted {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the runtime booted at {url}"
            ));
        }
        let after = world.audit();
        let released = count_kind(&after, "key_released") - count_kind(&before, "key_released");
        let accepted: Vec<&Value> = after[before.len()..]
            .iter()
            .filter(|e| e["verdict"] != "rejected")
            .collect();
        match dir {
            // A flipped request is refused by the KBS: nothing released.
            Dir::Request if !accepted.is_empty() => failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the KBS recorded {accepted:?}"
            )),
            // A flipped answer: the KBS did release (and says so); the runtime got nothing usable.
            Dir::Response if released > 1 || accepted.len() != released => {
                failures.push(format!("{what}: unexpected audit events {accepted:?}"))
            }
            _ => {}
        }
        assert_no_leaks(&what, &carried, &secrets);
    }

    // ---- In flight: the owner's key registration (a second sealing of the model, new key id).
    let (_, lr2_key, _) = seal_model(d, MODEL_LR, "breast-cancer-lr-2");
    secrets.dek("breast-cancer-lr-2", &lr2_key);
    let lr2_id = serde_json::from_str::<Value>(&std::fs::read_to_string(&lr2_key).unwrap())
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    for pos in [
        Pos::Middle,
        Pos::Field("sealed".into()),
        Pos::Field("policy".into()),
        Pos::Header("x-cordon-signature".into()),
    ] {
        let before = world.snapshot();
        let what = format!("owner's key registration flipped at {pos:?}");
        let tamper = Tamper::new("PUT", "/kbs/v1/admin/keys/", Dir::Request, pos.clone());
        let (_, carried) = tampered(&owner_kbs, tamper, &mut tally, || {
            must_fail(
                &register_args(&owner_kbs.url, &kbs_key, &token, &s(&lr2_key), &s(&release)),
                &what,
                &mut failures,
            )
        });
        check_flipped(&carried, &what, &mut failures);
        let after = world.expect_unchanged(&before, &[], &what, &mut failures);
        if after.audit.iter().any(|e| e["key_id"] == lr2_id.as_str()) {
            failures.push(format!("{what}: key {lr2_id} is in the audit log"));
        }
        assert_no_leaks(&what, &carried, &secrets);
    }
    // Untampered, the same registration goes through: the flips were what was refused.
    ok(&register_args(
        &owner_kbs.url,
        &kbs_key,
        &token,
        &s(&lr2_key),
        &s(&release),
    ));

    // ---- In flight: the runtime's attestation answer to the client, the encrypted request and
    // the encrypted answer. The client must refuse, print nothing, and (for the attestation)
    // send nothing after it.
    let client_cases = [
        ("GET", "/v1/attestation", Dir::Response, Pos::Middle),
        (
            "GET",
            "/v1/attestation",
            Dir::Response,
            Pos::Field("evidence".into()),
        ),
        (
            "GET",
            "/v1/attestation",
            Dir::Response,
            Pos::Field("hpke_public_key".into()),
        ),
        (
            "GET",
            "/v1/attestation",
            Dir::Response,
            Pos::Field("manifest_sha256".into()),
        ),
        ("POST", "/v1/encrypted", Dir::Request, Pos::Middle),
        ("POST", "/v1/encrypted", Dir::Response, Pos::First),
        ("POST", "/v1/encrypted", Dir::Response, Pos::Middle),
        ("POST", "/v1/encrypted", Dir::Response, Pos::Last),
    ];
    for (method, path, dir, pos) in client_cases {
        let before = world.snapshot();
        let what = format!("{method} {path} {dir:?} flipped at {pos:?}");
        let tamper = Tamper::new(method, path, dir, pos.clone());
        let ((stdout, stderr), carried) = tampered(&client_rt, tamper, &mut tally, || {
            must_fail(
                &infer_args(&client_rt.url, &s(&client), "breast-cancer-lr"),
                &what,
                &mut failures,
            )
        });
        check_flipped(&carried, &what, &mut failures);
        if shows_output(&stdout, &outputs) || shows_output(&stderr, &outputs) {
            failures.push(format!(
                "{what}: the client printed the answer:\n{stdout}{stderr}"
            ));
        }
        if path == "/v1/attestation" && carried.iter().any(|e| e.path() == "/v1/encrypted") {
            failures.push(format!(
                "{what}: the client sent a request to a runtime it could not verify"
            ));
        }
        if dir == Dir::Request {
            // The runtime refused the flipped request before running anything (the client's
            // attestation, before it, is counted).
            world.expect_unchanged(&before, &[ATTESTATION_EVENT], &what, &mut failures);
        }
        assert_no_leaks(&what, &carried, &secrets);
    }

    let flow = Flow {
        name: "quickstart",
        dir: d,
        started,
        relays: &relays,
        secrets: &secrets,
    };
    flow.finish_with_restart(kbs, &kbs_url, &world, &all, &tally, &mut failures);
}

// ---------------------------------------------------------------------------------------------
// Flow 2: a `dev up`-like deployment behind the verifying proxy
// ---------------------------------------------------------------------------------------------

/// Waits for the proxy's status to leave `unverified`; its state.
fn proxy_state(proxy: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http(proxy, "GET", "/cordon/v1/status", b"");
        if status == 200 {
            let v: Value = serde_json::from_slice(&body).unwrap();
            let state = v["state"].as_str().unwrap_or("").to_string();
            if state != "unverified" || Instant::now() > deadline {
                return state;
            }
        }
        assert!(
            Instant::now() < deadline,
            "proxy {proxy} not up: {status} {}",
            body_text(&body)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn proxied_deployment_leaks_nothing_and_refuses_replayed_and_tampered_messages() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n);
    let (_kbs, kbs_url, kbs_key) = base(d);
    let models = [
        ("breast-cancer-lr", MODEL_LR),
        ("breast-cancer-mlp", MODEL_MLP),
    ];
    let owner_kbs = Relay::start("owner→kbs", &kbs_url);
    let rt_kbs = Relay::start("runtime→kbs", &kbs_url);
    let mut config = format!(
        "kbs_url = \"{}\"\nkbs_public_key = \"{kbs_key}\"\n",
        rt_kbs.url
    );
    let mut keys = Vec::new();
    for (name, model) in models {
        let (sealed, key, manifest) = seal_model(d, model, name);
        config.push_str(&format!(
            "\n[[models]]\nname = \"{name}\"\npath = \"{}\"\nsigner = \"{}\"\nmanifest_sha256 = \"{manifest}\"\n",
            s(&sealed),
            owner_pub(d)
        ));
        keys.push(key);
    }
    std::fs::write(p("runtime.toml"), &config).unwrap();
    let (release, client, _) = sim_policies(d, &p("runtime.toml"), "runtime");
    let token = s(&p("token"));
    for key in &keys {
        ok(&register_args(
            &owner_kbs.url,
            &kbs_key,
            &token,
            &s(key),
            &s(&release),
        ));
    }
    let (_rt, rt_url) = start_runtime(d, &p("runtime.toml"), "runtime");
    let proxy_rt = Relay::start("proxy→runtime", &rt_url);
    let (_proxy, proxy) = start_proxy(d, &proxy_rt.url, &client, "proxy", &[]);
    assert_eq!(proxy_state(&proxy), "verified");

    // The application: plain OIP to the proxy on loopback (not relayed: that leg is the
    // application's own machine).
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/breast-cancer-lr",
        "/v2/models/breast-cancer-mlp/ready",
    ] {
        let (status, body) = http(&proxy, "GET", path, b"");
        assert_eq!(status, 200, "{path}: {}", body_text(&body));
    }
    let demo = std::fs::read_to_string(DEMO_INPUT).unwrap();
    let mut secrets = base_secrets(d);
    let mut outputs = Secrets::default();
    for (name, model) in models {
        let reference = reference_output(model, DEMO_INPUT);
        for _ in 0..3 {
            let (status, body) = http(
                &proxy,
                "POST",
                &format!("/v2/models/{name}/infer"),
                demo.as_bytes(),
            );
            assert_eq!(status, 200, "{name}: {}", body_text(&body));
            let answer: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(probabilities(&answer), probabilities(&reference), "{name}");
        }
        outputs.output(name, &reference);
        secrets.model(name, &std::fs::read(model).unwrap());
    }
    for (key, (name, _)) in keys.iter().zip(models) {
        secrets.dek(name, key);
    }
    secrets.input("demo", &demo);
    secrets.0.extend(outputs.0.iter().cloned());

    let relays = [&owner_kbs, &rt_kbs, &proxy_rt];
    let all: Vec<Exchange> = relays.iter().flat_map(|r| r.captured()).collect();
    let mut samples = base_samples(d);
    for (key, (_, model)) in keys.iter().zip(models) {
        samples.push(read(key));
        samples.push(read(model));
        samples.push(ok(&["model", "run", model, "--input", DEMO_INPUT]).into_bytes());
    }
    positive_control("proxied deployment", &secrets, samples);
    assert_no_leaks("proxied deployment", &all, &secrets);
    assert_legs_carried(
        &[
            (&proxy_rt, "GET", "/v1/attestation"),
            (&proxy_rt, "POST", "/v1/session"),
            (&proxy_rt, "POST", "/v1/session/message"),
        ],
        &[&proxy_rt],
    );

    let world = World {
        kbs_url: kbs_url.clone(),
        kbs_key: kbs_key.clone(),
        token: p("token"),
        runtimes: vec![("runtime".into(), rt_url.clone())],
    };
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    replay_and_flip(&world, &all, &mut tally, &mut failures);

    let infer_through = |proxy: &str| {
        http(
            proxy,
            "POST",
            "/v2/models/breast-cancer-lr/infer",
            demo.as_bytes(),
        )
    };

    // ---- In flight: a session answer flipped. The proxy must refuse it (502), not pass on
    // what it could not authenticate.
    for pos in [Pos::First, Pos::Middle, Pos::Last] {
        let tamper = Tamper::new("POST", "/v1/session/message", Dir::Response, pos.clone());
        let ((status, body), carried) =
            tampered(&proxy_rt, tamper, &mut tally, || infer_through(&proxy));
        let what = format!("session answer flipped at {pos:?}");
        let text = String::from_utf8_lossy(&body).into_owned();
        if (200..300).contains(&status) || shows_output(&text, &outputs) {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the proxy answered {status}: {}",
                body_text(&body)
            ));
        }
        if !carried.iter().any(|e| e.tampered.is_some()) {
            failures.push(format!(
                "{what}: no session message was flipped (the proxy sent none)"
            ));
        }
        assert_no_leaks(&what, &carried, &secrets);
    }
    // A session request flipped: the runtime refuses it before running anything.
    {
        let before = world.snapshot();
        let what = "a flipped session request";
        let tamper = Tamper::new("POST", "/v1/session/message", Dir::Request, Pos::Middle);
        let ((status, body), carried) =
            tampered(&proxy_rt, tamper, &mut tally, || infer_through(&proxy));
        check_flipped(&carried, "session request flipped", &mut failures);
        if (200..300).contains(&status) {
            failures.push(format!(
                "TAMPERING ACCEPTED: session request flipped: the proxy answered {status}: {}",
                body_text(&body)
            ));
        }
        // The proxy opens a new session for it (its earlier ones were dropped on the flipped
        // answers): that is counted; running the request would be too.
        world.expect_unchanged(
            &before,
            &[SESSION_OPENED, SESSIONS_OPEN],
            what,
            &mut failures,
        );
    }

    // ---- In flight: the session grant, to a fresh proxy (its pool is empty). Every grant is
    // flipped: the proxy must not use a session it could not open; it may answer through a
    // one-shot request instead, and then correctly.
    {
        let what = "session grant flipped";
        let from = proxy_rt.count();
        let every_grant = || Tamper::new("POST", "/v1/session", Dir::Response, Pos::Middle).every();
        let ((_proxy2, (status, body)), carried) =
            tampered(&proxy_rt, every_grant(), &mut tally, || {
                let (proxy2, url) = start_proxy(d, &proxy_rt.url, &client, "proxy2", &[]);
                assert_eq!(proxy_state(&url), "verified");
                (proxy2, infer_through(&url))
            });
        if !carried
            .iter()
            .any(|e| e.path() == "/v1/session" && e.tampered.is_some())
        {
            failures.push(format!("{what}: the proxy opened no session"));
        }
        if carried.iter().any(|e| e.path() == "/v1/session/message") {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the proxy sent session messages after a grant it could not have opened"
            ));
        }
        if (200..300).contains(&status) {
            let answer: Value = serde_json::from_slice(&body).unwrap();
            let reference = reference_output(MODEL_LR, DEMO_INPUT);
            if probabilities(&answer) != probabilities(&reference) {
                failures.push(format!("{what}: wrong answer {}", body_text(&body)));
            }
        }
        // The client library, directly: opening a session whose grant was flipped fails.
        let doc =
            cordon_attest::PolicyDocument::from_toml(&std::fs::read_to_string(&client).unwrap())
                .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (opened, _) = tampered(&proxy_rt, every_grant(), &mut tally, || {
            rt.block_on(async {
                let verified =
                    cordon_client::connect(&proxy_rt.url, &doc, std::time::SystemTime::now())
                        .await
                        .expect("verify through the relay");
                verified.open_session().await.map(|s| s.grant().session_id)
            })
        });
        if let Ok(id) = opened {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the client library opened session {id:?} from a flipped grant"
            ));
        }
        // Both steps, and whatever the fresh proxy sent between them.
        assert_no_leaks(what, &proxy_rt.since(from), &secrets);
    }

    // ---- In flight: the attestation answer, to a fresh proxy: it must stay unverified and
    // answer 503 without sending anything.
    for (k, pos) in [
        Pos::Field("evidence".into()),
        Pos::Field("hpke_public_key".into()),
    ]
    .into_iter()
    .enumerate()
    {
        let tamper = Tamper::new("GET", "/v1/attestation", Dir::Response, pos.clone()).every();
        let ((_proxy3, state, (status, body)), carried) =
            tampered(&proxy_rt, tamper, &mut tally, || {
                let name = format!("proxy3-{k}");
                let (proxy3, url) = start_proxy(d, &proxy_rt.url, &client, &name, &[]);
                let state = proxy_state(&url);
                (proxy3, state, infer_through(&url))
            });
        let what = format!("attestation answer to the proxy flipped at {pos:?}");
        check_flipped(&carried, &what, &mut failures);
        if state == "verified" || (200..300).contains(&status) {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: proxy state {state}, answer {status}: {}",
                body_text(&body)
            ));
        }
        if carried.iter().any(|e| e.path() != "/v1/attestation") {
            failures.push(format!(
                "{what}: the proxy sent more than attestation requests to an unverified runtime"
            ));
        }
    }

    let flow = Flow {
        name: "proxied deployment",
        dir: d,
        started,
        relays: &relays,
        secrets: &secrets,
    };
    flow.finish(&tally, &failures);
}

// ---------------------------------------------------------------------------------------------
// Flow 3: three hospitals train a model, which is then served
// ---------------------------------------------------------------------------------------------

#[test]
fn training_job_leaks_nothing_and_refuses_replayed_and_tampered_messages() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n);
    let (kbs, kbs_url, kbs_key) = base(d);
    let party_kbs = Relay::start("party→kbs", &kbs_url);
    let trainer_kbs = Relay::start("trainer→kbs", &kbs_url);
    let serving_kbs = Relay::start("serving runtime→kbs", &kbs_url);

    std::fs::write(
        p("trainer.toml"),
        format!(
            "kbs_url = \"{}\"\nkbs_public_key = \"{kbs_key}\"\n\n[training]\nmax_dataset_mib = 16\n",
            trainer_kbs.url
        ),
    )
    .unwrap();
    let (trainer_release, trainer_client, _) = sim_policies(d, &p("trainer.toml"), "trainer");
    let (_trainer, trainer_url) = start_runtime(d, &p("trainer.toml"), "trainer");
    let party_rt = Relay::start("party→trainer", &trainer_url);

    // The serving runtime's configuration names the model the job will seal, signed by the
    // trainer's attested signing key: its release policy is what the parties approve.
    let (status, body) = http(
        &trainer_url,
        "GET",
        &format!("/v1/attestation?nonce={}", hex::encode(rand_bytes())),
        b"",
    );
    assert_eq!(status, 200, "{}", body_text(&body));
    let att: Value = serde_json::from_slice(&body).unwrap();
    let trainer_signer = att["runtime_keys"]["signing_public_key"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::create_dir_all(p("serve")).unwrap();
    let served = p("serve/joint.sealed");
    std::fs::write(
        p("serving.toml"),
        format!(
            "kbs_url = \"{}\"\nkbs_public_key = \"{kbs_key}\"\n\n[[models]]\nname = \"joint\"\npath = \"{}\"\nsigner = \"{trainer_signer}\"\n",
            serving_kbs.url,
            s(&served)
        ),
    )
    .unwrap();
    let (_, serving_client, serving_policy) = sim_policies(d, &p("serving.toml"), "serving");

    let mut secrets = base_secrets(d);
    let mut hospitals = Vec::new();
    for (name, csv) in HOSPITALS {
        let party = new_party(d, name, csv, "csv");
        ok(&dataset_register_args(
            &party,
            &trainer_release,
            &party_kbs.url,
            &kbs_key,
        ));
        ok(&dataset_upload_args(&party, &party_rt.url, &trainer_client));
        secrets.party(name, &party.file);
        secrets.dek(name, &party.key);
        secrets.csv(name, &std::fs::read_to_string(csv).unwrap());
        hospitals.push(party);
    }
    let parties: Vec<&Value> = hospitals.iter().map(|h| &h.entry).collect();
    let datasets: Vec<&Value> = hospitals.iter().map(|h| &h.dataset).collect();
    let features = csv_features(&std::fs::read_to_string(HOSPITALS[0].1).unwrap());
    let trainer_client_path = s(&trainer_client);
    // A party's job command, through the party→trainer relay: (success, stdout, stderr).
    let job_try = |args: &[&str], party: &str| -> (bool, String, String) {
        let party_file = s(&p(&format!("{party}.party")));
        let mut a: Vec<&str> = args.to_vec();
        a.extend([
            "--party",
            party_file.as_str(),
            "--runtime",
            party_rt.url.as_str(),
            "--policy",
            trainer_client_path.as_str(),
        ]);
        let out = cordon(&a);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let job = |args: &[&str], party: &str| -> String {
        let (success, stdout, stderr) = job_try(args, party);
        assert!(success, "cordon {args:?} as {party} failed:\n{stderr}");
        stdout
    };
    // A job (the evaluation seed tells variants apart), created and approved by every party.
    let new_job = |seed: u64| -> String {
        let spec = serde_json::json!({
            "name": "three hospitals under a hostile host",
            "parties": parties,
            "datasets": datasets,
            "schema": {"features": features, "label": "label"},
            "algorithm": {"kind": "logistic_regression", "c": 1.0},
            "evaluation": {"test_fraction": 0.25, "seed": seed},
            "outputs": {"recipients": ["hospital-a"], "serve": {"policy": serving_policy}},
        });
        let spec_path = s(&p(&format!("job-{seed}.json")));
        std::fs::write(&spec_path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
        let created = job(&["job", "create", "--spec", &spec_path], "hospital-a");
        let hash = job_hash(&created);
        for (name, _) in HOSPITALS {
            job(
                &["job", "approve", "--job", &hash, "--spec", &spec_path],
                name,
            );
        }
        hash
    };
    let hash = new_job(42);
    let done = job(
        &["job", "submit", "--job", &hash, "--wait", "120"],
        "hospital-b",
    );
    assert!(done.contains("finished"), "{done}");
    let out_dir = s(&p("out"));
    job(
        &["job", "result", "--job", &hash, "--out-dir", &out_dir],
        "hospital-a",
    );
    job(&["job", "status", "--job", &hash], "hospital-c");
    ok(&[
        "unseal",
        &s(&p("out/model.sealed")),
        "--key",
        &s(&p("out/model.key")),
        "--out",
        &s(&p("joint.onnx")),
    ]);
    let joint = std::fs::read(p("joint.onnx")).unwrap();
    secrets.model("joint", &joint);
    secrets.dek("joint model", &p("out/model.key"));

    // Serving: the runtime gets the joint model's key from the KBS, where the trainer put it.
    std::fs::copy(p("out/model.sealed"), &served).unwrap();
    let (_serving, serving_url) = start_runtime(d, &p("serving.toml"), "serving");
    let client_rt = Relay::start("client→serving runtime", &serving_url);
    let out = ok(&infer_args(&client_rt.url, &s(&serving_client), "joint"));
    let answer: Value = serde_json::from_str(&out).unwrap();
    std::fs::write(p("joint-plain.onnx"), &joint).unwrap();
    let reference = reference_output(&s(&p("joint-plain.onnx")), DEMO_INPUT);
    assert_eq!(probabilities(&answer), probabilities(&reference), "{out}");
    let demo = std::fs::read_to_string(DEMO_INPUT).unwrap();
    secrets.input("demo", &demo);
    let mut outputs = Secrets::default();
    outputs.output("joint", &answer);
    secrets.0.extend(outputs.0.iter().cloned());

    let relays = [
        &party_kbs,
        &party_rt,
        &trainer_kbs,
        &serving_kbs,
        &client_rt,
    ];
    let all: Vec<Exchange> = relays.iter().flat_map(|r| r.captured()).collect();
    let mut samples = base_samples(d);
    for (name, csv) in HOSPITALS {
        samples.push(read(p(&format!("{name}.party"))));
        samples.push(read(p(&format!("{name}.key"))));
        samples.push(read(csv));
    }
    samples.extend([
        read(p("out/model.key")),
        joint.clone(),
        out.clone().into_bytes(),
        serde_json::to_vec(&answer).unwrap(),
    ]);
    positive_control("training", &secrets, samples);
    assert_no_leaks("training", &all, &secrets);
    assert_legs_carried(
        &[
            (&party_kbs, "PUT", "/kbs/v1/datasets/"),
            (&party_rt, "PUT", "/v1/datasets"),
            (&party_rt, "POST", "/v1/encrypted"),
            (&trainer_kbs, "POST", "/kbs/v1/attest"),
            (&trainer_kbs, "PUT", "/kbs/v1/jobs/"),
            (&serving_kbs, "POST", "/kbs/v1/attest"),
        ],
        &relays,
    );

    let world = World {
        kbs_url: kbs_url.clone(),
        kbs_key: kbs_key.clone(),
        token: p("token"),
        runtimes: vec![
            ("trainer".into(), trainer_url.clone()),
            ("serving".into(), serving_url.clone()),
        ],
    };
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    replay_and_flip(&world, &all, &mut tally, &mut failures);
    // The job is as it was: finished once, nothing started again.
    let status = job(&["job", "status", "--job", &hash], "hospital-c");
    if !status.contains("finished") {
        failures.push(format!(
            "after the replays the job is not finished: {status}"
        ));
    }

    // ---- In flight: a dataset key registration (hospital-a registers its key again, which
    // its owner may do) and a dataset upload, each flipped: refused, nothing recorded.
    let hospital_a = &hospitals[0];
    let register_a = dataset_register_args(hospital_a, &trainer_release, &party_kbs.url, &kbs_key);
    for pos in [
        Pos::Middle,
        Pos::Field("sealed".into()),
        Pos::Field("policy".into()),
        Pos::Header("x-cordon-signature".into()),
    ] {
        let before = world.snapshot();
        let what = format!("dataset key registration flipped at {pos:?}");
        let tamper = Tamper::new("PUT", "/kbs/v1/datasets/", Dir::Request, pos.clone());
        let (_, carried) = tampered(&party_kbs, tamper, &mut tally, || {
            must_fail(&register_a, &what, &mut failures)
        });
        check_flipped(&carried, &what, &mut failures);
        world.expect_unchanged(&before, &[], &what, &mut failures);
        assert_no_leaks(&what, &carried, &secrets);
    }
    let upload_a = dataset_upload_args(hospital_a, &party_rt.url, &trainer_client);
    for pos in [Pos::Middle, Pos::Header("x-cordon-signature".into())] {
        let before = world.snapshot();
        let what = format!("dataset upload flipped at {pos:?}");
        let tamper = Tamper::new("PUT", "/v1/datasets", Dir::Request, pos.clone());
        let (_, carried) = tampered(&party_rt, tamper, &mut tally, || {
            must_fail(&upload_a, &what, &mut failures)
        });
        check_flipped(&carried, &what, &mut failures);
        world.expect_unchanged(&before, &[ATTESTATION_EVENT], &what, &mut failures);
    }

    // ---- In flight: the job API in the channel. A flipped request is refused before it is
    // routed; a flipped answer (the result: the sealed model and its sealed key) is refused by
    // the party, which writes nothing.
    {
        let before = world.snapshot();
        let what = "job request flipped in the channel";
        let tamper = Tamper::new("POST", "/v1/encrypted", Dir::Request, Pos::Middle);
        let ((accepted, stdout, _), carried) = tampered(&party_rt, tamper, &mut tally, || {
            job_try(&["job", "status", "--job", &hash], "hospital-c")
        });
        check_flipped(&carried, what, &mut failures);
        if accepted {
            failures.push(format!("TAMPERING ACCEPTED: {what}: {stdout}"));
        }
        world.expect_unchanged(&before, &[ATTESTATION_EVENT], what, &mut failures);
    }
    for pos in [Pos::First, Pos::Middle, Pos::Last] {
        let out_dir = p(&format!("out-tampered-{pos:?}"));
        let tamper = Tamper::new("POST", "/v1/encrypted", Dir::Response, pos.clone());
        let ((accepted, stdout, _), carried) = tampered(&party_rt, tamper, &mut tally, || {
            job_try(
                &["job", "result", "--job", &hash, "--out-dir", &s(&out_dir)],
                "hospital-a",
            )
        });
        let what = format!("job result answer flipped at {pos:?}");
        check_flipped(&carried, &what, &mut failures);
        if accepted || out_dir.join("model.key").exists() {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the party took the answer: {stdout}"
            ));
        }
    }

    // ---- In flight, between the trainer and the KBS: the dataset keys on their way to the
    // trainer, and the trained model's key on its way to the KBS. Each needs a job of its own
    // (another evaluation seed, approved again by every party): the job must fail, with no
    // model for anyone and nothing registered for serving.
    let trainer_cases = [
        (
            43,
            Tamper::new(
                "POST",
                "/kbs/v1/attest",
                Dir::Response,
                Pos::Field("sealed_dek".into()),
            ),
        ),
        (
            44,
            Tamper::new("POST", "/kbs/v1/attest", Dir::Request, Pos::Middle),
        ),
        (
            45,
            Tamper::new("PUT", "/kbs/v1/jobs/", Dir::Request, Pos::Middle),
        ),
        (
            46,
            Tamper::new(
                "PUT",
                "/kbs/v1/jobs/",
                Dir::Request,
                Pos::Header("x-cordon-signature".into()),
            ),
        ),
    ];
    for (seed, tamper) in trainer_cases {
        let seeded = new_job(seed);
        let what = format!(
            "trainer→KBS {} {} {:?} flipped at {:?}",
            tamper.method, tamper.path, tamper.dir, tamper.pos
        );
        let before = world.audit();
        let ((_, stdout, stderr), carried) = tampered(&trainer_kbs, tamper, &mut tally, || {
            job_try(
                &["job", "submit", "--job", &seeded, "--wait", "120"],
                "hospital-b",
            )
        });
        check_flipped(&carried, &what, &mut failures);
        if stdout.contains("finished") {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the job finished:\n{stdout}{stderr}"
            ));
        }
        let out_dir = p(&format!("out-{seed}"));
        let (got, _, _) = job_try(
            &["job", "result", "--job", &seeded, "--out-dir", &s(&out_dir)],
            "hospital-a",
        );
        if got || out_dir.join("model.key").exists() {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the recipient got a model"
            ));
        }
        let after = world.audit();
        let registered: Vec<&Value> = after[before.len()..]
            .iter()
            .filter(|e| e["kind"] != "key_released" && e["verdict"] != "rejected")
            .collect();
        if !registered.is_empty() {
            failures.push(format!(
                "TAMPERING ACCEPTED: {what}: the KBS recorded {registered:?}"
            ));
        }
        assert_no_leaks(&what, &carried, &secrets);
    }

    let flow = Flow {
        name: "training",
        dir: d,
        started,
        relays: &relays,
        secrets: &secrets,
    };
    flow.finish_with_restart(kbs, &kbs_url, &world, &all, &tally, &mut failures);
}

fn rand_bytes() -> [u8; 32] {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b
}

// ---------------------------------------------------------------------------------------------
// The relay and the scanner themselves
// ---------------------------------------------------------------------------------------------

fn exchange_with(part: &str, bytes: Vec<u8>) -> Exchange {
    let mut ex = Exchange {
        leg: "test".into(),
        method: "POST".into(),
        target: "/x".into(),
        status: 200,
        ..Default::default()
    };
    match part {
        "request" => ex.req_raw = bytes,
        "target" => ex.target = String::from_utf8(bytes).unwrap(),
        _ => ex.resp_body = bytes,
    }
    ex
}

#[test]
fn scanner_finds_a_secret_in_every_encoding_at_every_offset() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    let secret: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let secrets = vec![("k".to_string(), secret.clone())];
    for prefix in 0..6usize {
        for suffix in 0..3usize {
            let mut data = vec![0xA5u8; prefix];
            data.extend_from_slice(&secret);
            data.extend(std::iter::repeat_n(0x5Au8, suffix));
            let cases: Vec<(&str, Vec<u8>, String)> = vec![
                ("raw", data.clone(), "raw".into()),
                ("hex", hex::encode(&data).into_bytes(), "hex".into()),
                ("HEX", hex::encode_upper(&data).into_bytes(), "HEX".into()),
                (
                    "base64",
                    format!("{{\"sealed\":\"{}\"}}", STANDARD.encode(&data)).into_bytes(),
                    format!("base64@{}", prefix % 3),
                ),
                (
                    "base64url",
                    URL_SAFE.encode(&data).into_bytes(),
                    format!("base64url@{}", prefix % 3),
                ),
                (
                    "base64url, no padding",
                    URL_SAFE_NO_PAD.encode(&data).into_bytes(),
                    format!("base64url@{}", prefix % 3),
                ),
            ];
            for (what, bytes, encoding) in cases {
                for part in ["request", "response body"] {
                    let f = scan(&[exchange_with(part, bytes.clone())], &secrets);
                    assert!(
                        f.iter().any(|f| f.encoding == encoding),
                        "{what} at offset {prefix}+{suffix} in {part}: {f:?}"
                    );
                }
            }
        }
    }
    // In a URL's query, percent-encoded or not.
    let f = scan(
        &[exchange_with(
            "target",
            format!("/v1/attestation?nonce={}", hex::encode(&secret)).into_bytes(),
        )],
        &secrets,
    );
    assert!(f.iter().any(|f| f.encoding == "hex"), "{f:?}");
    let escaped: String = STANDARD
        .encode(&secret)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let f = scan(
        &[exchange_with(
            "target",
            format!("/x?k={escaped}").into_bytes(),
        )],
        &secrets,
    );
    assert!(
        f.iter()
            .any(|f| f.part == "request target" && f.encoding == "base64@0"),
        "{f:?}"
    );

    // A near miss (one byte in the middle differs) or a part of the secret is not a finding.
    let mut near = secret.clone();
    near[16] ^= 0x40;
    let half = secret[..16].to_vec();
    for bytes in [near, half] {
        for enc in [
            bytes.clone(),
            hex::encode(&bytes).into_bytes(),
            hex::encode_upper(&bytes).into_bytes(),
            STANDARD.encode(&bytes).into_bytes(),
            URL_SAFE_NO_PAD.encode(&bytes).into_bytes(),
        ] {
            let f = scan(&[exchange_with("response body", enc.clone())], &secrets);
            assert!(f.is_empty(), "near miss reported: {f:?}");
        }
    }
    // Random ciphertext does not match by chance.
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(scan(&[exchange_with("response body", noise)], &secrets).is_empty());
}

/// What the tiny upstream received: (request line, x-test header, body) per request.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A tiny HTTP/1.1 upstream, independent of the relay's own parser: `/echo` answers the
/// request line and the body, `/chunked` answers a chunked body, anything else 404. Each request
/// it got is pushed to `seen` as (request line, x-test header, body).
fn tiny_upstream() -> (String, Seen) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let line = head.lines().next().unwrap().to_string();
                let get = |name: &str| {
                    head.lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.trim().to_string())
                };
                let len: usize = get("content-length")
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                conn.read_exact(&mut body).unwrap();
                log.lock().unwrap().push((
                    line.clone(),
                    get("x-test").unwrap_or_default(),
                    body.clone(),
                ));
                let target = line.split(' ').nth(1).unwrap().to_string();
                let resp = if target.starts_with("/echo") {
                    let mut b = format!("{line}\n").into_bytes();
                    b.extend_from_slice(&body);
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-upstream: yes\r\ncontent-length: {}\r\n\r\n",
                        b.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&b);
                    r
                } else if target.starts_with("/chunked") {
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\nhello, \r\n5\r\nworld\r\n0\r\n\r\n".to_vec()
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope".to_vec()
                };
                let _ = conn.write_all(&resp);
            });
        }
    });
    (url, seen)
}

#[test]
fn relay_records_forwards_tampers_and_replays() {
    let (upstream, seen) = tiny_upstream();
    let relay = Relay::start("test", &upstream);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One client: its requests share a kept-alive connection to the relay.
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: &'static [u8]| {
        let req = client
            .request(method, format!("{}{path}", relay.url))
            .header("x-test", "t")
            .body(body);
        rt.block_on(async {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let upstream_header = resp
                .headers()
                .get("x-upstream")
                .map(|v| v.to_str().unwrap().to_string());
            (
                status,
                upstream_header,
                resp.bytes().await.unwrap().to_vec(),
            )
        })
    };

    let (status, hdr, body) = send(reqwest::Method::GET, "/echo?nonce=00ff", b"");
    assert_eq!((status, hdr.as_deref()), (200, Some("yes")));
    assert_eq!(body, b"GET /echo?nonce=00ff HTTP/1.1\n");
    let (status, _, body) = send(reqwest::Method::POST, "/echo/body", b"0123456789");
    assert_eq!(status, 200);
    assert!(body.ends_with(b"\n0123456789"), "{body:?}");
    let (status, _, body) = send(reqwest::Method::GET, "/chunked", b"");
    assert_eq!((status, body.as_slice()), (200, &b"hello, world"[..]));
    let (status, _, body) = send(reqwest::Method::PUT, "/missing", b"x");
    assert_eq!((status, body.as_slice()), (404, &b"nope"[..]));

    let captured = relay.captured();
    assert_eq!(captured.len(), 4);
    assert_eq!(captured[0].method, "GET");
    assert_eq!(captured[0].target, "/echo?nonce=00ff");
    assert_eq!(captured[0].path(), "/echo");
    assert_eq!(captured[0].req_header("x-test"), Some("t"));
    assert!(captured[0]
        .req_raw
        .starts_with(b"GET /echo?nonce=00ff HTTP/1.1\r\n"));
    assert_eq!(captured[1].req_body, b"0123456789");
    assert!(captured[1].req_raw.ends_with(b"\r\n\r\n0123456789"));
    assert_eq!(captured[2].resp_body, b"hello, world");
    assert!(
        captured[2].resp_raw.ends_with(b"0\r\n\r\n"),
        "raw keeps the chunk framing"
    );
    assert_eq!(captured[3].status, 404);
    assert!(captured
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i && e.tampered.is_none()));
    assert_eq!(seen.lock().unwrap().len(), 4);

    // Tamper: the second POST to /echo from now on, request body, middle byte.
    relay.set_tamper(Some(Tamper {
        method: "POST".into(),
        path: "/echo".into(),
        nth: Some(1),
        dir: Dir::Request,
        pos: Pos::Middle,
    }));
    let (_, _, first) = send(reqwest::Method::POST, "/echo/a", b"0123456789");
    assert!(first.ends_with(b"\n0123456789"), "the first match passes");
    let (_, _, second) = send(reqwest::Method::POST, "/echo/a", b"0123456789");
    assert!(
        second.ends_with(b"\n0123466789"),
        "byte 5 flipped: {second:?}"
    );
    let (_, _, third) = send(reqwest::Method::POST, "/echo/a", b"0123456789");
    assert!(third.ends_with(b"\n0123456789"), "only the nth");
    let c = relay.captured();
    assert_eq!(
        c[5].req_body, b"0123456789",
        "the record keeps what the client sent"
    );
    assert!(c[5].tampered.as_deref().unwrap().contains("byte 5"));
    assert!(c[4].tampered.is_none() && c[6].tampered.is_none());
    assert_eq!(
        seen.lock().unwrap()[5].2,
        b"0123466789",
        "the upstream got the flip"
    );

    // Tamper every response of a path: the client sees the flip, the record the original.
    relay.set_tamper(Some(
        Tamper::new("GET", "/chunked", Dir::Response, Pos::First).every(),
    ));
    for _ in 0..2 {
        let (_, _, body) = send(reqwest::Method::GET, "/chunked", b"");
        assert_eq!(body, b"iello, world");
    }
    assert_eq!(relay.captured().last().unwrap().resp_body, b"hello, world");
    // A JSON field and a header.
    relay.set_tamper(Some(Tamper::new(
        "POST",
        "/echo",
        Dir::Request,
        Pos::Field("dek".into()),
    )));
    send(
        reqwest::Method::POST,
        "/echo",
        b"{\"dek\":\"abcd\",\"x\":\"zz\"}",
    );
    assert_eq!(
        seen.lock().unwrap().last().unwrap().2,
        b"{\"dek\":\"abdd\",\"x\":\"zz\"}"
    );
    relay.set_tamper(Some(Tamper::new(
        "POST",
        "/echo",
        Dir::Request,
        Pos::Header("x-test".into()),
    )));
    send(reqwest::Method::POST, "/echo", b"1");
    assert_eq!(seen.lock().unwrap().last().unwrap().1, "u");
    relay.set_tamper(None);

    // Replay: the upstream gets the request again, byte for byte.
    let n = seen.lock().unwrap().len();
    let (status, body) = replay(&relay.captured()[1]);
    assert_eq!(status, 200);
    assert!(body.ends_with(b"\n0123456789"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), n + 1);
    assert_eq!(seen[n].0, "POST /echo/body HTTP/1.1");
    assert_eq!(seen[n].1, "t");
    assert_eq!(seen[n].2, b"0123456789");

    // The relay's capture feeds the scanner: a secret sent in the query, in hex, is found.
    let secret = b"a secret of some length".to_vec();
    drop(seen);
    send(
        reqwest::Method::GET,
        &format!("/echo?k={}", hex::encode(&secret)),
        b"",
    );
    let f = scan(&relay.captured(), &[("s".into(), secret)]);
    assert!(
        f.iter().any(|f| f.encoding == "hex" && f.part == "request"),
        "{f:?}"
    );
}

#[test]
fn the_flip_changes_exactly_one_byte_and_keeps_hex_and_base64_well_formed() {
    for b in 0..=255u8 {
        assert_ne!(flip_byte(b), b);
    }
    for c in b"0123456789abcdefABCDEF".iter() {
        assert!(flip_byte(*c).is_ascii_hexdigit());
    }
    for c in b"ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ".iter() {
        assert!(flip_byte(*c).is_ascii_alphanumeric());
    }
    let mut body = b"{\"a\":1}".to_vec();
    flip_body(&mut body, &Pos::Last).unwrap();
    assert_eq!(body, b"{\"a\":1|");
    assert!(flip_body(&mut [], &Pos::First).is_none());
}
