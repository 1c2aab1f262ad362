//! Real-time fraud scoring through a verified, encrypted channel.
//!
//! ```text
//! cargo run --release -p cordon-client --example fraud_scoring -- \
//!     --url URL --policy FILE [--model fraud-gbdt] [--rows N] [--threshold T] [--data CSV]
//! ```
//!
//! Verifies the runtime at URL against the client policy (a `PolicyDocument`, TOML, with an
//! `[endorsements]` section), then streams the held-out transactions of
//! `models/fraud/fraud_test.csv` one by one, as an authorization system would: one single-row
//! Open Inference Protocol request per transaction, in session mode (one HPKE setup to the attested
//! key, then one AES-256-GCM per request, sequence-numbered). It reports
//! precision, recall and F1 at the threshold (default: the one in
//! `models/fraud/fraud_gbdt.metrics.json`), the confusion counts, per-transaction latency
//! (p50/p90/p99/max) and throughput, and how far the runtime's probabilities are from ONNX
//! Runtime's, which the CSV records per row.
//!
//! The runtime must serve `models/fraud/fraud_gbdt.onnx` under the model name given (see
//! models/fraud/README.md for the features and outputs).

use anyhow::{bail, Context, Result};
use clap::Parser;
use cordon_attest::PolicyDocument;
use cordon_client::VerifiedRuntime;
use cordon_proto::oip::{InferRequest, InferResponse, ModelMetadata, Tensor};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const FRAUD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/fraud");
/// The model's output whose column 1 is P(fraud).
const PROBABILITIES: &str = "probabilities";

#[derive(Parser)]
#[command(about = "Stream card transactions through a verified Cordon runtime and score them")]
struct Args {
    /// Runtime base URL.
    #[arg(long)]
    url: String,
    /// Client policy (TOML): what the runtime must prove; for `sim`, an [endorsements] section with its trust anchors.
    #[arg(long)]
    policy: PathBuf,
    /// Model name the runtime serves the fraud model under.
    #[arg(long, default_value = "fraud-gbdt")]
    model: String,
    /// Score only the first N transactions of the stream.
    #[arg(long)]
    rows: Option<usize>,
    /// Flag a transaction when P(fraud) >= this (default: the model's, from its metrics file).
    #[arg(long)]
    threshold: Option<f32>,
    /// The transactions (CSV as written by scripts/make_fraud_model.py).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/fraud/fraud_test.csv"))]
    data: PathBuf,
}

/// One transaction of the stream.
#[derive(Debug, Clone, PartialEq)]
struct Transaction {
    /// The model's input row; NaN is a missing value.
    features: Vec<f32>,
    /// 1 = reported fraud.
    fraud: bool,
    /// ONNX Runtime's P(fraud) for this row, when the file records it.
    reference_p: Option<f32>,
}

/// Reads the CSV: a header naming the feature columns, then `label`, then optional extra
/// columns (`ort_p_fraud` is used when present); an empty field is NaN.
fn parse_transactions(text: &str) -> Result<Vec<Transaction>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty file")?.split(',').collect();
    let label = header
        .iter()
        .position(|h| *h == "label")
        .context("no `label` column")?;
    if label == 0 {
        bail!("no feature columns before `label`");
    }
    let reference = header.iter().position(|h| *h == "ort_p_fraud");
    let number = |field: &str, line: usize, col: usize| -> Result<f32> {
        if field.is_empty() {
            return Ok(f32::NAN);
        }
        field
            .parse::<f32>()
            .with_context(|| format!("line {line}, column {}: {field:?}", header[col]))
    };
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != header.len() {
            bail!(
                "line {line_no}: {} fields, the header has {}",
                fields.len(),
                header.len()
            );
        }
        let features = (0..label)
            .map(|c| number(fields[c], line_no, c))
            .collect::<Result<Vec<f32>>>()?;
        let fraud = match fields[label] {
            "0" => false,
            "1" => true,
            other => bail!("line {line_no}: label {other:?} is not 0 or 1"),
        };
        let reference_p = reference
            .map(|c| number(fields[c], line_no, c))
            .transpose()?;
        out.push(Transaction {
            features,
            fraud,
            reference_p,
        });
    }
    Ok(out)
}

/// A single-row infer request; NaN goes as `null`, as the runtime expects.
fn one_row_request(input: &str, row: &[f32]) -> InferRequest {
    let data: Vec<Value> = row
        .iter()
        .map(|&v| {
            if v.is_nan() {
                Value::Null
            } else {
                Value::from(v)
            }
        })
        .collect();
    InferRequest {
        id: None,
        inputs: vec![Tensor {
            name: input.into(),
            shape: vec![1, row.len() as i64],
            datatype: "FP32".into(),
            data: Value::Array(data),
            parameters: None,
        }],
        outputs: None,
        parameters: None,
    }
}

/// P(fraud) from a single-row response: column 1 of the `[1, 2]` probabilities output.
fn fraud_probability(resp: &InferResponse) -> Result<f32> {
    let t = resp
        .outputs
        .iter()
        .find(|t| t.name == PROBABILITIES)
        .with_context(|| format!("no {PROBABILITIES:?} output in the response"))?;
    if t.shape != [1, 2] {
        bail!("{PROBABILITIES:?} has shape {:?}, expected [1, 2]", t.shape);
    }
    let p = t
        .data
        .get(1)
        .and_then(Value::as_f64)
        .with_context(|| format!("{PROBABILITIES:?}[0, 1] is not a number"))?;
    Ok(p as f32)
}

/// Confusion counts for "fraud" as the positive class.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Confusion {
    tp: u64,
    fp: u64,
    fn_: u64,
    tn: u64,
}

impl Confusion {
    fn add(&mut self, flagged: bool, fraud: bool) {
        match (flagged, fraud) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    /// None when nothing was flagged (precision is undefined, not 0).
    fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// None when there was no fraud to find.
    fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The flagging rule of models/fraud/README.md: P(fraud) >= threshold, in float32.
fn flag(p: f32, threshold: f32) -> bool {
    p >= threshold
}

/// Nearest-rank percentile (`p` in (0, 100]) of sorted samples: the smallest sample with at
/// least p% of the samples at or below it.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    // p·n first: for whole percentages the product is exact, so the rank is too.
    let rank = (p * sorted.len() as f64 / 100.0).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.4}"))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), |d| format!("{:.3} ms", d.as_secs_f64() * 1e3))
}

/// The threshold the model was tuned for, from its metrics file.
fn default_threshold() -> Result<f32> {
    let path = PathBuf::from(FRAUD_DIR).join("fraud_gbdt.metrics.json");
    let doc: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let t = doc["threshold"]
        .as_f64()
        .with_context(|| format!("{}: no threshold", path.display()))?;
    Ok(t as f32)
}

/// The model's single input: its name, and the row width it takes.
async fn model_input(runtime: &VerifiedRuntime, model: &str) -> Result<(String, Option<usize>)> {
    let resp = runtime
        .request("GET", &format!("/v2/models/{model}"), None)
        .await?;
    if resp.status != 200 {
        bail!(
            "model {model:?}: runtime answered {}: {}",
            resp.status,
            resp.body
        );
    }
    let meta: ModelMetadata = serde_json::from_value(resp.body)?;
    let [input] = meta.inputs.as_slice() else {
        bail!(
            "model {model:?} has {} inputs, expected 1",
            meta.inputs.len()
        );
    };
    let width = match input.shape.as_slice() {
        [_, f] if *f > 0 => Some(*f as usize),
        _ => None,
    };
    Ok((input.name.clone(), width))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let policy = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?;
    let doc = PolicyDocument::from_toml(&policy)?;
    let threshold = match args.threshold {
        Some(t) => t,
        None => default_threshold()?,
    };
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("reading {}", args.data.display()))?;
    let mut stream =
        parse_transactions(&text).with_context(|| format!("parsing {}", args.data.display()))?;
    if let Some(n) = args.rows {
        stream.truncate(n);
    }

    let runtime = cordon_client::connect(&args.url, &doc, SystemTime::now()).await?;
    let c = runtime.claims();
    println!(
        "verified runtime: platform {}{}, launch measurement {}",
        c.platform,
        if c.hardware_backed {
            ""
        } else {
            " (SIMULATED, not hardware-backed)"
        },
        hex::encode(&c.launch_measurement),
    );
    let (input, width) = model_input(&runtime, &args.model).await?;
    if let (Some(w), Some(t)) = (width, stream.first()) {
        if w != t.features.len() {
            bail!(
                "model {:?} takes {w} features, the data has {}",
                args.model,
                t.features.len()
            );
        }
    }

    // Session mode: one HPKE setup to the attested key, then one AES-256-GCM per transaction.
    let mut session = runtime.open_session().await?;
    println!(
        "session open until unix {} (one HPKE setup, then one AEAD per transaction)",
        session.grant().expires_at
    );

    let mut cordon = Confusion::default();
    let mut reference = Confusion::default();
    let mut latencies = Vec::with_capacity(stream.len());
    let (mut max_diff, mut disagreements) = (0f32, 0u64);
    let started = Instant::now();
    for tx in &stream {
        let t0 = Instant::now();
        let request = one_row_request(&input, &tx.features);
        if session.is_spent(SystemTime::now()) {
            session = runtime.open_session().await?;
        }
        let response = session.infer(&args.model, &request).await?;
        let p = fraud_probability(&response)?;
        latencies.push(t0.elapsed());
        cordon.add(flag(p, threshold), tx.fraud);
        if let Some(r) = tx.reference_p {
            reference.add(flag(r, threshold), tx.fraud);
            max_diff = max_diff.max((p - r).abs());
            disagreements += u64::from(flag(p, threshold) != flag(r, threshold));
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();

    let frauds = stream.iter().filter(|t| t.fraud).count();
    println!(
        "scored {} transactions ({frauds} labelled fraud) one at a time, model {:?}, threshold {threshold}",
        stream.len(),
        args.model
    );
    println!(
        "confusion: TP {} FP {} FN {} TN {}",
        cordon.tp, cordon.fp, cordon.fn_, cordon.tn
    );
    println!(
        "precision {}  recall {}  F1 {}",
        fmt_ratio(cordon.precision()),
        fmt_ratio(cordon.recall()),
        fmt_ratio(cordon.f1())
    );
    println!(
        "latency per transaction (encrypt, send, infer, decrypt): p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied())
    );
    println!(
        "throughput: {:.0} transactions/s (one request in flight)",
        stream.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    if stream.iter().any(|t| t.reference_p.is_some()) {
        println!(
            "against ONNX Runtime's recorded probabilities: max |difference| {max_diff:.3e}, \
             {disagreements} decisions differ; ORT's confusion TP {} FP {} FN {} TN {}",
            reference.tp, reference.fp, reference.fn_, reference.tn
        );
    }
    if disagreements > 0 {
        // Expected only when the runtime serves another model than the one the file was scored
        // with; otherwise the engine and ONNX Runtime disagree, which the tests forbid.
        eprintln!("warning: {disagreements} decisions differ from ONNX Runtime's on the same rows");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_f1_on_a_hand_made_case() {
        // 10 frauds, 990 legitimate: 8 caught, 2 missed, 4 false alarms.
        let mut c = Confusion::default();
        for _ in 0..8 {
            c.add(true, true);
        }
        for _ in 0..2 {
            c.add(false, true);
        }
        for _ in 0..4 {
            c.add(true, false);
        }
        for _ in 0..986 {
            c.add(false, false);
        }
        assert_eq!(
            c,
            Confusion {
                tp: 8,
                fp: 4,
                fn_: 2,
                tn: 986
            }
        );
        assert_eq!(c.precision(), Some(8.0 / 12.0));
        assert_eq!(c.recall(), Some(0.8));
        // F1 = 2PR/(P+R) = 2·(2/3)·0.8 / (2/3 + 0.8) = 16/22
        assert!((c.f1().unwrap() - 16.0 / 22.0).abs() < 1e-12);
    }

    #[test]
    fn undefined_ratios_are_none_not_zero() {
        let mut c = Confusion::default();
        c.add(false, false);
        assert_eq!((c.precision(), c.recall(), c.f1()), (None, None, None));
        c.add(false, true);
        assert_eq!(
            (c.precision(), c.recall(), c.f1()),
            (None, Some(0.0), Some(0.0))
        );
    }

    #[test]
    fn flag_is_inclusive_at_the_threshold() {
        assert!(flag(0.08, 0.08));
        assert!(!flag(f32::from_bits(0.08f32.to_bits() - 1), 0.08));
        assert!(!flag(f32::NAN, 0.08));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: u64| Duration::from_millis(v);
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&samples, 50.0), Some(ms(50)));
        assert_eq!(percentile(&samples, 90.0), Some(ms(90)));
        assert_eq!(percentile(&samples, 99.0), Some(ms(99)));
        assert_eq!(percentile(&samples, 100.0), Some(ms(100)));
        assert_eq!(percentile(&samples, 0.5), Some(ms(1)));
        // Few samples: p99 of 10 is the largest, p50 the 5th.
        let ten: Vec<Duration> = (1..=10).map(ms).collect();
        assert_eq!(percentile(&ten, 99.0), Some(ms(10)));
        assert_eq!(percentile(&ten, 50.0), Some(ms(5)));
        assert_eq!(percentile(&[ms(7)], 90.0), Some(ms(7)));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&samples, 0.0), None);
        assert_eq!(percentile(&samples, 101.0), None);
    }

    #[test]
    fn csv_rows_with_missing_values_and_reference() {
        let text = "a,b,c,label,pattern,ort_p_fraud\n1.5,,3,1,2,0.75\n0,2,-1,0,0,0.001\n";
        let rows = parse_transactions(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].features[0], 1.5);
        assert!(rows[0].features[1].is_nan());
        assert!(rows[0].fraud && !rows[1].fraud);
        assert_eq!(rows[1].reference_p, Some(0.001));
        let err = parse_transactions("a,label\n1,2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not 0 or 1"), "{err}");
        let err = parse_transactions("a,label\n1\n").unwrap_err().to_string();
        assert!(err.contains("1 fields"), "{err}");
        assert!(parse_transactions("a,b\n1,2\n").is_err());
        assert!(parse_transactions("a,label\nx,1\n").is_err());
    }

    #[test]
    fn request_sends_nan_as_null_and_reads_column_one() {
        let req = one_row_request("input", &[1.0, f32::NAN, 2.5]);
        assert_eq!(req.inputs[0].shape, vec![1, 3]);
        assert_eq!(req.inputs[0].data, serde_json::json!([1.0, null, 2.5]));
        let resp: InferResponse = serde_json::from_value(serde_json::json!({
            "model_name": "m",
            "outputs": [
                {"name": "label", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.25, 0.75]}
            ]
        }))
        .unwrap();
        assert_eq!(fraud_probability(&resp).unwrap(), 0.75);
        let mut wrong = resp.clone();
        wrong.outputs[1].shape = vec![2, 2];
        assert!(fraud_probability(&wrong).is_err());
    }

    /// The committed stream parses, and the recorded ONNX Runtime probabilities reproduce the
    /// figures of models/fraud/fraud_gbdt.metrics.json (which README.md quotes) with this
    /// example's own rule and counting.
    #[test]
    fn committed_stream_reproduces_the_recorded_figures() {
        let dir = PathBuf::from(FRAUD_DIR);
        let rows =
            parse_transactions(&std::fs::read_to_string(dir.join("fraud_test.csv")).unwrap())
                .unwrap();
        let metrics: Value =
            serde_json::from_slice(&std::fs::read(dir.join("fraud_gbdt.metrics.json")).unwrap())
                .unwrap();
        let threshold = default_threshold().unwrap();
        let mut c = Confusion::default();
        for r in &rows {
            assert_eq!(r.features.len(), 20);
            c.add(flag(r.reference_p.unwrap(), threshold), r.fraud);
        }
        let test = &metrics["metrics"]["test"];
        assert_eq!(test["rows"], rows.len());
        assert_eq!(
            [c.tp, c.fp, c.fn_, c.tn],
            [&test["tp"], &test["fp"], &test["fn"], &test["tn"]].map(|v| v.as_u64().unwrap())
        );
        let close = |a: Option<f64>, b: &Value| (a.unwrap() - b.as_f64().unwrap()).abs() < 1e-6;
        assert!(close(c.precision(), &test["precision"]));
        assert!(close(c.recall(), &test["recall"]));
        assert!(close(c.f1(), &test["f1"]));
    }
}
