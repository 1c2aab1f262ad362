//! `cordon bench serve`: what confidentiality costs, measured side by side in one run.
//!
//! For each model, on the same ONNX file and the same rows:
//! 1. the engines in process: tract's compute on decoded tensors (`engine`), the runtime's whole
//!    in-process path from OIP JSON tensors and back (`engine_oip`), the optional ONNX Runtime
//!    engine's compute (`engine_ort`, when its library is at hand), and ONNX Runtime through its
//!    Python package (`onnxruntime`, single thread) when that is installed;
//! 2. the runtime over loopback HTTP with encryption off (`plaintext_inference`, the development
//!    switch);
//! 3. one-shot HPKE per request; 4. session mode; 5. an unmodified OIP client (plain HTTP + JSON)
//!    through the verifying proxy (`cordon_client::proxy`, in process on the client side), which
//!    forwards in session mode;
//!
//! and beneath them all the machine's floor (`tcp_floor`): a raw TCP round trip of the request's
//! size between two threads, so a reader sees how much of a path's latency no server can remove.
//!
//! The runtime is the real router (`cordon_runtime::serve`) on its own tokio runtime (two worker
//! threads) in this process, with the simulated TEE. Sequential latency is measured from a client
//! on a single-threaded tokio runtime, throughput from clients on two worker threads, and the proxy
//! runs on a runtime of its own (one worker thread): as separate processes on one machine would.

use crate::deploy::{self, DEV_MODELS};
use crate::util;
use anyhow::{anyhow, bail, Context, Result};
use cordon_attest::{Endorsements, Platform, Policy, PolicyDocument};
use cordon_proto::oip::{InferRequest, Tensor};
use cordon_proto::{RuntimeKeys, ServiceKeyPair};
use cordon_runtime::{
    Engine, OnnxModel, OnnxRuntimeLibrary, OnnxRuntimeOptions, RuntimeState, ServedModel,
    ServingOptions,
};
use cordon_tee::{SimHardwareKey, SimTee};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Models to measure, as NAME=MODEL.onnx:INPUT.json (INPUT.json: an OIP request whose first
    /// input is [N, F]); default: the breast-cancer LR and MLP, and the fraud GBDT when present.
    #[arg(long = "model", value_name = "NAME=ONNX:INPUT")]
    models: Vec<String>,
    /// Timed single-row requests per path.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Concurrent clients for the throughput figure.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds of the throughput measurement per path.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rows per batch for the batch figure.
    #[arg(long, default_value_t = 1024)]
    batch_rows: usize,
    /// Run the runtime with dynamic batching of at most this many rows (0: off).
    #[arg(long, default_value_t = 0)]
    batch_max_rows: usize,
    /// Dynamic batching delay, in microseconds.
    #[arg(long, default_value_t = 0)]
    batch_max_delay_us: u64,
    /// Only these paths (comma-separated: tcp_floor, engine, engine_oip, engine_ort, onnxruntime,
    /// plain_http, hpke_oneshot, session, session_binary, proxy, proxy_binary); default all.
    #[arg(long)]
    paths: Option<String>,
    /// Skip ONNX Runtime.
    #[arg(long)]
    no_ort: bool,
    /// Serve from the real deployment of `cordon dev up` (KBS and runtime as their own processes,
    /// sealed models, attested key release; plaintext inference switched on for the `plain_http`
    /// path) instead of the runtime's router in this process. Default models only.
    #[arg(long)]
    runtime_process: bool,
    /// ONNX Runtime's shared library for the `engine_ort` path (default: CORDON_ONNXRUNTIME_LIB,
    /// or what scripts/fetch-onnxruntime.sh fetched).
    #[arg(long, value_name = "LIBRARY")]
    onnxruntime_library: Option<PathBuf>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
}

struct BenchModel {
    name: String,
    /// The name the runtime serves it under.
    served: String,
    onnx: PathBuf,
    rows: Vec<Vec<Value>>,
    input_name: String,
    datatype: String,
}

fn read_model(spec: &str) -> Result<BenchModel> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--model {spec:?}: expected NAME=MODEL.onnx:INPUT.json"))?;
    let (onnx, input) = rest
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--model {spec:?}: expected NAME=MODEL.onnx:INPUT.json"))?;
    let req: InferRequest = serde_json::from_str(
        &std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?,
    )
    .with_context(|| format!("{input} is not an OIP request"))?;
    let t = req
        .inputs
        .first()
        .ok_or_else(|| anyhow!("{input}: no inputs"))?;
    let [n, f] = t.shape[..] else {
        bail!("{input}: first input must be [N, F], is {:?}", t.shape)
    };
    let flat = t
        .data
        .as_array()
        .ok_or_else(|| anyhow!("{input}: data must be a flat array"))?;
    if n <= 0 || f <= 0 || flat.len() != (n * f) as usize {
        bail!("{input}: data does not fill shape {:?}", t.shape);
    }
    Ok(BenchModel {
        name: name.into(),
        served: name.into(),
        onnx: onnx.into(),
        rows: flat.chunks(f as usize).map(|r| r.to_vec()).collect(),
        input_name: t.name.clone(),
        datatype: t.datatype.clone(),
    })
}

/// The default models: LR and MLP on the breast-cancer test rows; the fraud GBDT if present.
fn default_models(tmp: &Path) -> Result<Vec<BenchModel>> {
    let test: Value = serde_json::from_str(&std::fs::read_to_string(
        "models/reference/breast_cancer_test.json",
    )?)?;
    let rows = test["inputs"]
        .as_array()
        .ok_or_else(|| anyhow!("breast_cancer_test.json: no inputs"))?;
    let flat: Vec<Value> = rows
        .iter()
        .flat_map(|r| r.as_array().cloned().unwrap_or_default())
        .collect();
    let input = tmp.join("breast_cancer.input.json");
    std::fs::write(
        &input,
        serde_json::to_vec(&json!({"inputs": [{
            "name": "input", "shape": [rows.len(), 30], "datatype": "FP32", "data": flat
        }]}))?,
    )?;
    let input = input.display().to_string();
    let mut specs = vec![
        format!("breast_cancer_lr=models/breast_cancer_lr.onnx:{input}"),
        format!("breast_cancer_mlp=models/breast_cancer_mlp.onnx:{input}"),
    ];
    if Path::new("models/fraud/fraud_gbdt.onnx").exists() {
        specs.push(
            "fraud_gbdt=models/fraud/fraud_gbdt.onnx:models/fraud/fraud_gbdt.input.json".into(),
        );
    }
    specs.iter().map(|s| read_model(s)).collect()
}

impl BenchModel {
    fn request(&self, first: usize, n: usize) -> InferRequest {
        let data: Vec<Value> = (0..n)
            .flat_map(|i| self.rows[(first + i) % self.rows.len()].iter().cloned())
            .collect();
        InferRequest {
            id: None,
            inputs: vec![Tensor {
                name: self.input_name.clone(),
                shape: vec![n as i64, self.rows[0].len() as i64],
                datatype: self.datatype.clone(),
                data: Value::Array(data),
                parameters: None,
            }],
            outputs: None,
            parameters: None,
        }
    }
}

#[derive(Default, Clone, serde::Serialize)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    /// Single-row requests per second with `concurrency` clients.
    rps: f64,
    /// Rows per second in batches of `batch_rows`, one client.
    batch_rows_per_s: f64,
}

/// A rate as a whole number; blank where the path does not measure it.
fn whole(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// One way of sending a request (a path of the benchmark).
#[derive(Clone)]
enum Path_ {
    Plain(reqwest::Client, String),
    /// The binary tensor data extension (what the stock clients send), to the proxy.
    Binary(reqwest::Client, String),
    Oneshot(cordon_client::VerifiedRuntime),
    Session(cordon_client::VerifiedRuntime),
    /// The binary tensor data extension inside a session, without the proxy.
    SessionBinary(cordon_client::VerifiedRuntime),
}

/// A client of one path: sessions are per client, as a real stream would keep one.
enum Client {
    Http(reqwest::Client, String),
    HttpBinary(reqwest::Client, String),
    Oneshot(Box<cordon_client::VerifiedRuntime>),
    // Boxed: a session holds its key schedules.
    Session(Box<cordon_client::Session>),
    SessionBinary(Box<cordon_client::Session>),
}

/// A request as its client holds it before sending: JSON tensors, and for the binary paths the
/// binary extension's body made from them once, outside the timing (a binary client has its
/// tensors as bytes already, as NumPy arrays are).
struct Prepared {
    request: InferRequest,
    binary: Option<(bytes::Bytes, usize)>,
}

impl Path_ {
    async fn client(&self) -> Result<Client> {
        Ok(match self {
            Path_::Plain(h, url) => Client::Http(h.clone(), url.clone()),
            Path_::Binary(h, url) => Client::HttpBinary(h.clone(), url.clone()),
            Path_::Oneshot(rt) => Client::Oneshot(Box::new(rt.clone())),
            Path_::Session(rt) => Client::Session(Box::new(rt.open_session().await?)),
            Path_::SessionBinary(rt) => Client::SessionBinary(Box::new(rt.open_session().await?)),
        })
    }
}

impl Client {
    fn prepare(&self, request: InferRequest) -> Result<Prepared> {
        let binary = match self {
            Client::HttpBinary(..) | Client::SessionBinary(_) => {
                let (body, header_len) = binary_body(&request)?;
                Some((body.into(), header_len))
            }
            _ => None,
        };
        Ok(Prepared { request, binary })
    }

    async fn infer(&self, model: &str, p: &Prepared) -> Result<()> {
        let req = &p.request;
        match self {
            Client::Http(http, url) => {
                let r = http
                    .post(format!("{url}/v2/models/{model}/infer"))
                    .json(req)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("{}: {}", r.status(), r.text().await.unwrap_or_default());
                }
                r.bytes().await?;
            }
            Client::HttpBinary(http, url) => {
                let (body, header_len) = p.binary.clone().context("no binary body")?;
                let r = http
                    .post(format!("{url}/v2/models/{model}/infer"))
                    .header("content-type", "application/octet-stream")
                    .header("inference-header-content-length", header_len)
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("{}: {}", r.status(), r.text().await.unwrap_or_default());
                }
                r.bytes().await?;
            }
            Client::SessionBinary(s) => {
                let (body, header_len) = p.binary.clone().context("no binary body")?;
                let inner = cordon_proto::runtime::InnerRequest {
                    method: "POST".into(),
                    path: format!("/v2/models/{model}/infer"),
                    headers: [(
                        cordon_proto::runtime::INFERENCE_HEADER_CONTENT_LENGTH.to_string(),
                        header_len.to_string(),
                    )]
                    .into(),
                    raw_body: Some(body.to_vec()),
                    ..Default::default()
                };
                let resp = s.send(inner).await?;
                if resp.status != 200 || resp.raw_body.is_none() {
                    bail!("{}: {}", resp.status, resp.body);
                }
            }
            Client::Oneshot(rt) => {
                rt.infer(model, req).await?;
            }
            Client::Session(s) => {
                s.infer(model, req).await?;
            }
        }
        Ok(())
    }
}

/// `req` in the binary tensor data extension, every input and output binary, as a client
/// encodes it from its arrays: the body and the JSON header's length.
fn binary_body(req: &InferRequest) -> Result<(Vec<u8>, usize)> {
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut tensors = Vec::new();
    for t in &req.inputs {
        let bytes = cordon_proto::oip_binary::encode_elements(&t.datatype, &t.data)
            .map_err(|e| anyhow!("input {}: {e}", t.name))?;
        inputs.push(
            json!({"name": t.name, "shape": t.shape, "datatype": t.datatype,
            "parameters": {"binary_data_size": bytes.len()}}),
        );
        tensors.extend(bytes);
    }
    let header = json!({ "inputs": inputs, "parameters": { "binary_data_output": true } });
    let mut body = serde_json::to_vec(&header)?;
    let header_len = body.len();
    body.extend(tensors);
    Ok((body, header_len))
}

/// Sequential figures: single-row p50/p99 and batch throughput, one client.
async fn measure_sequential(path: &Path_, m: &BenchModel, a: &ServeArgs) -> Result<Figures> {
    let client = path.client().await?;
    for i in 0..50 {
        client
            .infer(&m.served, &client.prepare(m.request(i, 1))?)
            .await?;
    }
    let mut times = Vec::with_capacity(a.calls);
    for i in 0..a.calls {
        let req = client.prepare(m.request(i, 1))?;
        let t = Instant::now();
        client.infer(&m.served, &req).await?;
        times.push(t.elapsed());
    }
    times.sort();
    let batch = client.prepare(m.request(0, a.batch_rows))?;
    client.infer(&m.served, &batch).await?;
    let mut runs = 0;
    let t = Instant::now();
    while runs < 5 || t.elapsed() < Duration::from_secs(1) {
        client.infer(&m.served, &batch).await?;
        runs += 1;
    }
    Ok(Figures {
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
        rps: f64::NAN,
        batch_rows_per_s: (runs * a.batch_rows) as f64 / t.elapsed().as_secs_f64(),
    })
}

/// Throughput: `concurrency` clients, each sending single rows one after another, for `seconds`.
async fn measure_load(path: &Path_, m: &BenchModel, a: &ServeArgs) -> Result<f64> {
    let mut clients = Vec::new();
    for c in 0..a.concurrency {
        let client = path.client().await?;
        let reqs = (0..64)
            .map(|i| client.prepare(m.request(c * 64 + i, 1)))
            .collect::<Result<Vec<_>>>()?;
        client.infer(&m.served, &reqs[0]).await?;
        clients.push((client, reqs));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, reqs) in clients {
        let name = m.served.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                client.infer(&name, &reqs[n % reqs.len()]).await?;
                n += 1;
            }
            Ok::<usize, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The machine's floor under every loopback path: a raw TCP round trip of `bytes` each way
/// between this thread and an echo thread (blocking sockets, no HTTP, no JSON, no crypto). On a
/// virtual machine most of it is waking the other vCPU, which every request over loopback pays too.
fn measure_tcp_floor(bytes: usize, calls: usize) -> Result<Figures> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; bytes];
        // Until the client hangs up.
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = vec![0x5a_u8; bytes];
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls + 50 {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        if i >= 50 {
            times.push(t.elapsed());
        }
    }
    drop(s);
    echo.join().map_err(|_| anyhow!("echo thread panicked"))??;
    times.sort();
    Ok(Figures {
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
        rps: f64::NAN,
        batch_rows_per_s: f64::NAN,
    })
}

/// The paths to measure, with clients made on the runtime this runs on.
async fn make_paths(
    url: &str,
    proxy_url: &str,
    policy: &Policy,
    endorsements: &Endorsements,
) -> Result<Vec<(&'static str, Path_)>> {
    let verified =
        cordon_client::connect_with(url, policy, endorsements, SystemTime::now()).await?;
    let http = reqwest::Client::new();
    Ok(vec![
        ("plain_http", Path_::Plain(http.clone(), url.to_string())),
        ("hpke_oneshot", Path_::Oneshot(verified.clone())),
        ("session", Path_::Session(verified.clone())),
        ("session_binary", Path_::SessionBinary(verified)),
        ("proxy", Path_::Plain(http.clone(), proxy_url.to_string())),
        ("proxy_binary", Path_::Binary(http, proxy_url.to_string())),
    ])
}

/// An engine alone, in process, on this thread: its compute on decoded tensors (what ONNX
/// Runtime's `session.run` on NumPy arrays is compared with), or with `oip` the runtime's whole
/// in-process path from the protocol's JSON tensors and back (`OnnxModel::infer`).
fn measure_engine(model: &OnnxModel, m: &BenchModel, a: &ServeArgs, oip: bool) -> Result<Figures> {
    let run = |r: &InferRequest, d: &cordon_runtime::DecodedRequest| -> Result<()> {
        if oip {
            std::hint::black_box(model.infer(r)?);
        } else {
            std::hint::black_box(model.compute(&d.inputs)?);
        }
        Ok(())
    };
    let reqs: Vec<InferRequest> = (0..m.rows.len()).map(|i| m.request(i, 1)).collect();
    let decoded = reqs
        .iter()
        .map(|r| model.decode(r))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..50 {
        run(&reqs[i % reqs.len()], &decoded[i % reqs.len()])?;
    }
    let mut times = Vec::with_capacity(a.calls);
    for i in 0..a.calls {
        let t = Instant::now();
        run(&reqs[i % reqs.len()], &decoded[i % reqs.len()])?;
        times.push(t.elapsed());
    }
    times.sort();
    let batch = m.request(0, a.batch_rows);
    let batch_decoded = model.decode(&batch)?;
    run(&batch, &batch_decoded)?;
    let mut runs = 0;
    let t = Instant::now();
    while runs < 5 || t.elapsed() < Duration::from_secs(1) {
        run(&batch, &batch_decoded)?;
        runs += 1;
    }
    let p50 = percentile(&times, 0.5);
    Ok(Figures {
        p50_us: p50,
        p99_us: percentile(&times, 0.99),
        rps: 1e6 / p50,
        batch_rows_per_s: (runs * a.batch_rows) as f64 / t.elapsed().as_secs_f64(),
    })
}

/// The ONNX Runtime library for the `engine_ort` path: `--onnxruntime-library`, else where
/// scripts/fetch-onnxruntime.sh puts it.
fn onnxruntime_engine(a: &ServeArgs) -> Result<Arc<OnnxRuntimeLibrary>> {
    onnxruntime_for_bench(a.onnxruntime_library.clone(), 1)
}

/// ONNX Runtime's library as the runtime loads it (pinned by its digest, one session), with
/// `intra_op_threads`: `library`, else where scripts/fetch-onnxruntime.sh puts it. For the
/// benchmarks that time it beside Cordon's engine.
pub(crate) fn onnxruntime_for_bench(
    library: Option<PathBuf>,
    intra_op_threads: usize,
) -> Result<Arc<OnnxRuntimeLibrary>> {
    let library = library
        .or_else(|| cordon_runtime::locate_onnxruntime_library(Path::new(".")))
        .ok_or_else(|| {
            anyhow!("no library: pass --onnxruntime-library or run scripts/fetch-onnxruntime.sh")
        })?;
    let choice = crate::deploy::OnnxRuntimeChoice::for_library(&library, vec![])?;
    Ok(OnnxRuntimeLibrary::load(&OnnxRuntimeOptions {
        sessions_per_model: Some(1),
        intra_op_threads,
        ..choice.options
    })?)
}

/// ONNX Runtime's single-thread figures from scripts/bench_trees_ort.py, or why there are none.
fn onnx_runtime(
    models: &[BenchModel],
    a: &ServeArgs,
    tmp: &Path,
) -> Result<BTreeMap<String, Figures>> {
    let dir = tmp.join("ort");
    std::fs::create_dir_all(&dir)?;
    for m in models {
        std::fs::copy(&m.onnx, dir.join(format!("{}.onnx", m.name)))?;
        let req = m.request(0, m.rows.len());
        std::fs::write(
            dir.join(format!("{}.input.json", m.name)),
            serde_json::to_vec(&req)?,
        )?;
    }
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    let out = Command::new("python3")
        .arg("scripts/bench_trees_ort.py")
        .arg(&dir)
        .args(["--models", &names.join(",")])
        .args(["--rows", &a.batch_rows.to_string()])
        .args(["--calls", &a.calls.to_string()])
        .arg("--json")
        .output()
        .context("running python3 scripts/bench_trees_ort.py")?;
    if !out.status.success() {
        bail!(
            "bench_trees_ort.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    let mut map = BTreeMap::new();
    for (name, f) in doc["models"].as_object().into_iter().flatten() {
        let g = |k: &str| f[k].as_f64().unwrap_or(f64::NAN);
        map.insert(
            name.clone(),
            Figures {
                p50_us: g("p50_us"),
                p99_us: g("p99_us"),
                rps: 1e6 / g("p50_us"),
                batch_rows_per_s: g("batch_rows_per_s"),
            },
        );
    }
    Ok(map)
}

pub fn run(a: ServeArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; benchmark with --release");
    }
    let tmp = tempfile::tempdir()?;
    let mut models = if a.models.is_empty() {
        default_models(tmp.path())?
    } else {
        a.models
            .iter()
            .map(|s| read_model(s))
            .collect::<Result<_>>()?
    };
    if a.runtime_process {
        if !a.models.is_empty() {
            bail!("--runtime-process serves the default models only (no --model)");
        }
        // `cordon dev up`'s names for the same models.
        for m in &mut models {
            m.served = m.name.replace('_', "-");
        }
    }
    let mut loaded = BTreeMap::new();
    for m in &models {
        let bytes = std::fs::read(&m.onnx).with_context(|| format!("reading {:?}", m.onnx))?;
        loaded.insert(
            m.name.clone(),
            Arc::new(OnnxModel::load(&m.name, "1", &bytes)?),
        );
    }

    let wanted = |p: &str| {
        a.paths
            .as_deref()
            .is_none_or(|list| list.split(',').any(|x| x.trim() == p))
    };
    // 1. Engine alone and ONNX Runtime.
    let mut table: BTreeMap<String, BTreeMap<&'static str, Figures>> = BTreeMap::new();
    for m in models.iter() {
        for (label, oip) in [("engine", false), ("engine_oip", true)] {
            if wanted(label) {
                let f = measure_engine(&loaded[&m.name], m, &a, oip)?;
                table.entry(m.name.clone()).or_default().insert(label, f);
            }
        }
    }
    // The same models on the optional ONNX Runtime engine, when its library is at hand.
    if wanted("engine_ort") {
        match onnxruntime_engine(&a) {
            Ok(library) => {
                for m in &models {
                    let bytes = std::fs::read(&m.onnx)?;
                    let model =
                        OnnxModel::load_on(&m.name, "1", &bytes, Engine::OnnxRuntime(&library))?;
                    let f = measure_engine(&model, m, &a, false)?;
                    table
                        .entry(m.name.clone())
                        .or_default()
                        .insert("engine_ort", f);
                }
            }
            Err(e) => eprintln!("the onnxruntime engine not measured: {e:#}"),
        }
    }
    let ort = if a.no_ort || !wanted("onnxruntime") {
        None
    } else {
        match onnx_runtime(&models, &a, tmp.path()) {
            Ok(map) => Some(map),
            Err(e) => {
                eprintln!("ONNX Runtime not measured: {e:#}");
                None
            }
        }
    };
    for (name, f) in ort.iter().flatten() {
        table
            .entry(name.clone())
            .or_default()
            .insert("onnxruntime", f.clone());
    }

    // 2-5. The runtime over loopback: in this process on its own tokio runtime, or (with
    // --runtime-process) the real deployment of `cordon dev up`, KBS and runtime as processes.
    let mut deployment = None;
    let mut server_rt = None;
    let (url, policy, endorsements) = if a.runtime_process {
        let d = deploy::deploy(
            &tmp.path().join("deployment"),
            DEV_MODELS,
            &["--dev-plaintext-inference".to_string()],
            None,
            deploy::DeployPlatform::Sim,
            &util::tokio_runtime()?,
            deploy::DeployOptions::default(),
        )?;
        let doc = d.client_doc.clone();
        let url = d.runtime_url.clone();
        deployment = Some(d);
        (url, doc.policy, doc.endorsements.unwrap_or_default())
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let hw = SimHardwareKey::generate();
        let endorsements = Endorsements {
            sim_trust_anchors: vec![hw.public_key()],
            ..Default::default()
        };
        let measurement = [0x5e; 48];
        let tee = Arc::new(SimTee::new(hw, measurement, [0; 32], false));
        let service_key = ServiceKeyPair::generate(0);
        let signing_key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        let runtime_keys = RuntimeKeys {
            hpke_public_key: service_key.public_key(),
            hpke_key_id: 0,
            signing_public_key: signing_key.verifying_key().to_bytes(),
        };
        let served = loaded
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    ServedModel {
                        model: m.clone(),
                        manifest_sha256: [0; 32],
                    },
                )
            })
            .collect();
        let state = Arc::new(RuntimeState::new(
            service_key,
            signing_key,
            runtime_keys,
            tee,
            served,
            ServingOptions {
                plaintext_inference: true,
                batching: (a.batch_max_rows > 0).then(|| cordon_runtime::BatchOptions {
                    max_rows: a.batch_max_rows,
                    max_delay: Duration::from_micros(a.batch_max_delay_us),
                }),
                ..ServingOptions::default()
            },
        ));
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        rt.spawn(cordon_runtime::serve(
            state,
            listener,
            std::future::pending(),
        ));
        server_rt = Some(rt);
        (
            url,
            Policy::new(vec![Platform::Sim], vec![measurement.to_vec()]),
            endorsements,
        )
    };

    // Sequential latency from a client on one thread, as a small client process would have;
    // throughput from clients on two worker threads; the proxy on its own runtime, as the
    // sidecar process it is.
    let latency_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // The verifying proxy: the application speaks plain OIP to it.
    let proxy = cordon_client::proxy::Proxy::new(cordon_client::proxy::ProxyConfig::new(
        url.clone(),
        PolicyDocument {
            policy: policy.clone(),
            endorsements: Some(endorsements.clone()),
        },
    ))?;
    let proxy_listener = proxy_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let proxy_url = format!("http://{}", proxy_listener.local_addr()?);
    proxy_rt.spawn(proxy.serve(proxy_listener, std::future::pending()));

    if wanted("tcp_floor") {
        for m in &models {
            let bytes = serde_json::to_vec(&m.request(0, 1))?.len();
            let f = measure_tcp_floor(bytes, a.calls).context("tcp_floor")?;
            table
                .entry(m.name.clone())
                .or_default()
                .insert("tcp_floor", f);
        }
    }
    latency_rt.block_on(async {
        let paths = make_paths(&url, &proxy_url, &policy, &endorsements).await?;
        for m in &models {
            for (label, path) in paths.iter().filter(|(l, _)| wanted(l)) {
                let f = measure_sequential(path, m, &a)
                    .await
                    .with_context(|| format!("{label} on {}", m.name))?;
                table.entry(m.name.clone()).or_default().insert(label, f);
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    load_rt.block_on(async {
        let paths = make_paths(&url, &proxy_url, &policy, &endorsements).await?;
        for m in &models {
            for (label, path) in paths.iter().filter(|(l, _)| wanted(l)) {
                let rps = measure_load(path, m, &a)
                    .await
                    .with_context(|| format!("{label} on {}", m.name))?;
                if let Some(f) = table.get_mut(&m.name).and_then(|t| t.get_mut(label)) {
                    f.rps = rps;
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    drop(proxy_rt);
    drop(server_rt);
    drop(deployment);

    if a.json {
        println!("{}", serde_json::to_string_pretty(&table)?);
        return Ok(());
    }
    println!(
        "cordon bench serve: single-row p50/p99 (µs, sequential), throughput (single-row req/s, {} clients), \
         batch-{} rows/s (one client); dynamic batching {}; SIMULATED TEE",
        a.concurrency,
        a.batch_rows,
        if a.batch_max_rows > 0 {
            format!(
                "up to {} rows, {} µs",
                a.batch_max_rows, a.batch_max_delay_us
            )
        } else {
            "off".into()
        }
    );
    // Single-row latency on a VM depends on how idle vCPUs wake (see cordon_runtime::IdleWait).
    println!("idle vCPUs: {}", cordon_runtime::IdleWait::read());
    println!(
        "| model | path | p50 µs | p99 µs | req/s | batch rows/s | req/s vs plain HTTP | batch vs ONNX Runtime |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (model, rows) in &table {
        let plain = rows.get("plain_http").map(|f| f.rps);
        let ort_batch = rows.get("onnxruntime").map(|f| f.batch_rows_per_s);
        for label in [
            "tcp_floor",
            "engine",
            "engine_oip",
            "engine_ort",
            "onnxruntime",
            "plain_http",
            "hpke_oneshot",
            "session",
            "session_binary",
            "proxy",
            "proxy_binary",
        ] {
            let Some(f) = rows.get(label) else { continue };
            let vs_plain = match (label, plain) {
                ("tcp_floor" | "engine" | "engine_oip" | "engine_ort" | "onnxruntime", _)
                | (_, None) => "".to_string(),
                (_, Some(p)) => format!("{:.2}", f.rps / p),
            };
            let vs_ort = match (label, ort_batch) {
                ("engine" | "engine_oip" | "engine_ort", Some(o)) => {
                    format!("{:.2}", f.batch_rows_per_s / o)
                }
                _ => String::new(),
            };
            println!(
                "| {model} | {label} | {:.1} | {:.1} | {} | {} | {vs_plain} | {vs_ort} |",
                f.p50_us,
                f.p99_us,
                whole(f.rps),
                whole(f.batch_rows_per_s)
            );
        }
    }
    Ok(())
}
