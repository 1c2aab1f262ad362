//! `cordon bench trees`: Cordon's tree engine against tract's own operators and ONNX Runtime
//! (through scripts/bench_trees_ort.py, when Python has onnxruntime), same models, same inputs,
//! one thread, in one run; and Cordon's engine against ONNX Runtime's C API (the `ort` crate, the
//! library scripts/fetch-onnxruntime.sh fetches), both through the runtime's model API, so that
//! the single-row baseline carries no Python call.

use anyhow::{anyhow, Context, Result};
use cordon_proto::oip::{InferRequest, Tensor as OipTensor};
use cordon_runtime::{Engine, OnnxModel};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

#[derive(clap::Args)]
pub struct TreesArgs {
    /// A directory of models with their input sets (NAME.onnx, NAME.input.json); repeat for more.
    /// The default is the reference zoo and the fraud-scoring model.
    #[arg(long = "zoo", default_values = ["models/trees", "models/fraud"])]
    pub zoos: Vec<PathBuf>,
    /// Comma-separated model names, looked up in the --zoo directories in order (default: every
    /// model not named hb_*, i.e. the trained ones).
    #[arg(long)]
    pub models: Option<String>,
    #[command(flatten)]
    pub timing: TimingOptions,
    /// Skip tract's own operators (slow on ensembles: milliseconds a row).
    #[arg(long)]
    pub no_tract: bool,
    /// Skip ONNX Runtime (both its Python package and its C API).
    #[arg(long)]
    pub no_ort: bool,
    /// Cores for the batch figure of the C API table: Cordon's engine runs this many batches at
    /// once (one per thread, as the runtime runs concurrent requests: the engine does not split
    /// a batch), ONNX Runtime one batch at a time with this many intra-op threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// ONNX Runtime's shared library for the C API columns (default: CORDON_ONNXRUNTIME_LIB, or
    /// what scripts/fetch-onnxruntime.sh fetched).
    #[arg(long, value_name = "LIBRARY")]
    pub onnxruntime_library: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Timing {
    pub p50_us: f64,
    pub p99_us: f64,
    pub batch_rows_per_s: f64,
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// The model's input set: the tensor name is ignored (one input), rows as tensors of one row,
/// and a batch of `rows` rows tiled from them.
struct Inputs {
    rows: Vec<TValue>,
    batch: TValue,
}

fn read_inputs(path: &Path, batch_rows: usize) -> Result<Inputs> {
    let doc: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let t = &doc["inputs"][0];
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .context("shape")?
        .iter()
        .filter_map(Value::as_u64)
        .map(|d| d as usize)
        .collect();
    let [n, f] = shape[..] else {
        return Err(anyhow!("{path:?}: input is not [N, F]"));
    };
    if n == 0 {
        return Err(anyhow!("{path:?}: the input set has no rows"));
    }
    let data: Vec<f64> = t["data"]
        .as_array()
        .context("data")?
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    if data.len() != n * f {
        return Err(anyhow!(
            "{path:?}: shape [{n}, {f}] holds {} values, data has {}",
            n * f,
            data.len()
        ));
    }
    let make = |values: &[f64], rows: usize| -> Result<Tensor> {
        Ok(match t["datatype"].as_str() {
            Some("FP32") => {
                let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
                Tensor::from_shape(&[rows, f], &v)?
            }
            Some("FP64") => Tensor::from_shape(&[rows, f], values)?,
            Some("INT64") => {
                let v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
                Tensor::from_shape(&[rows, f], &v)?
            }
            Some("INT32") => {
                let v: Vec<i32> = values.iter().map(|&x| x as i32).collect();
                Tensor::from_shape(&[rows, f], &v)?
            }
            other => return Err(anyhow!("{path:?}: datatype {other:?}")),
        })
    };
    let rows = (0..n)
        .map(|r| make(&data[r * f..(r + 1) * f], 1).map(TValue::from))
        .collect::<Result<Vec<_>>>()?;
    let tiled: Vec<f64> = (0..batch_rows)
        .flat_map(|r| data[(r % n) * f..(r % n + 1) * f].iter().copied())
        .collect();
    Ok(Inputs {
        rows,
        batch: make(&tiled, batch_rows)?.into(),
    })
}

fn time_plan(
    plan: &Arc<TypedRunnableModel>,
    inputs: &Inputs,
    args: TimingOptions,
) -> Result<Timing> {
    for r in inputs.rows.iter().cycle().take(200) {
        plan.run(tvec![r.clone()])?;
    }
    let mut times = Vec::with_capacity(args.calls as usize);
    for r in inputs.rows.iter().cycle().take(args.calls as usize) {
        let input = tvec![r.clone()];
        let t = Instant::now();
        let out = plan.run(input)?;
        times.push(t.elapsed());
        drop(out);
    }
    times.sort();
    for _ in 0..3 {
        plan.run(tvec![inputs.batch.clone()])?;
    }
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 5 || start.elapsed().as_secs_f64() < args.batch_seconds {
        let input = tvec![inputs.batch.clone()];
        let t = Instant::now();
        plan.run(input)?;
        runs.push(t.elapsed());
    }
    runs.sort();
    let median = runs[runs.len() / 2].as_secs_f64();
    Ok(Timing {
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
        batch_rows_per_s: args.rows as f64 / median,
    })
}

/// The model's input set as protocol requests: one per row, and one batch of `rows` rows tiled
/// from them (JSON `null`, the zoo's NaN, as the protocol's `"NaN"`). Every input is `[N, F]`,
/// with the same N.
pub(crate) fn read_requests(
    path: &Path,
    batch_rows: usize,
) -> Result<(Vec<InferRequest>, InferRequest)> {
    let doc: InferRequest = serde_json::from_slice(&std::fs::read(path)?)?;
    let mut inputs = Vec::new();
    for t in &doc.inputs {
        let [n, f] = t.shape[..] else {
            return Err(anyhow!("{path:?}: input {:?} is not [N, F]", t.name));
        };
        let (n, f) = (usize::try_from(n)?, usize::try_from(f)?);
        let data: Vec<Value> = t
            .data
            .as_array()
            .context("data")?
            .iter()
            .map(|v| match v {
                Value::Null => Value::from("NaN"),
                v => v.clone(),
            })
            .collect();
        if n == 0 || data.len() != n * f {
            return Err(anyhow!(
                "{path:?}: {} values for shape [{n}, {f}]",
                data.len()
            ));
        }
        inputs.push((t, n, f, data));
    }
    let n = inputs.first().map(|i| i.1).context("no input")?;
    if inputs.iter().any(|i| i.1 != n) {
        return Err(anyhow!("{path:?}: inputs of different row counts"));
    }
    let request = |first: usize, rows: usize| InferRequest {
        id: None,
        inputs: inputs
            .iter()
            .map(|(t, n, f, data)| OipTensor {
                name: t.name.clone(),
                shape: vec![rows as i64, *f as i64],
                datatype: t.datatype.clone(),
                data: Value::Array(
                    (0..rows)
                        .flat_map(|i| {
                            let r = (first + i) % n;
                            data[r * f..(r + 1) * f].iter().cloned()
                        })
                        .collect(),
                ),
                parameters: None,
            })
            .collect(),
        outputs: None,
        parameters: None,
    };
    Ok((
        (0..n).map(|i| request(i, 1)).collect(),
        request(0, batch_rows),
    ))
}

/// How long and how much the model benchmarks (`bench trees`, `bench dense`) measure.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct TimingOptions {
    /// Timed single-row calls per engine and model.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub calls: u64,
    /// Rows per batch.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,
    /// Least seconds of batch runs per engine and model.
    #[arg(long, default_value_t = 0.5)]
    pub batch_seconds: f64,
}

/// [`time_plan`]'s measurement through the runtime's model API (`OnnxModel::compute` on decoded
/// tensors), the same for either engine.
pub(crate) fn time_model(
    model: &OnnxModel,
    rows: &[InferRequest],
    batch: &InferRequest,
    args: TimingOptions,
    streams: usize,
) -> Result<Timing> {
    let rows = rows
        .iter()
        .map(|r| model.decode(r))
        .collect::<Result<Vec<_>, _>>()?;
    for r in rows.iter().cycle().take(200) {
        std::hint::black_box(model.compute(&r.inputs)?);
    }
    let mut times = Vec::with_capacity(args.calls as usize);
    for r in rows.iter().cycle().take(args.calls as usize) {
        let t = Instant::now();
        let out = model.compute(&r.inputs)?;
        times.push(t.elapsed());
        drop(out);
    }
    times.sort();
    let batch = model.decode(batch)?;
    for _ in 0..3 {
        model.compute(&batch.inputs)?;
    }
    let batch_rows_per_s = if streams == 1 {
        let mut runs = Vec::new();
        let start = Instant::now();
        while runs.len() < 5 || start.elapsed().as_secs_f64() < args.batch_seconds {
            let t = Instant::now();
            std::hint::black_box(model.compute(&batch.inputs)?);
            runs.push(t.elapsed());
        }
        runs.sort();
        args.rows as f64 / runs[runs.len() / 2].as_secs_f64()
    } else {
        // `streams` threads, each running batches for the same wall time: rows over that time.
        let start = Instant::now();
        let batches = std::thread::scope(|scope| -> Result<usize> {
            let workers: Vec<_> = (0..streams)
                .map(|_| {
                    scope.spawn(|| -> Result<usize> {
                        let mut n = 0;
                        while n < 5 || start.elapsed().as_secs_f64() < args.batch_seconds {
                            std::hint::black_box(model.compute(&batch.inputs)?);
                            n += 1;
                        }
                        Ok(n)
                    })
                })
                .collect();
            workers.into_iter().try_fold(0, |all, w| {
                Ok(all + w.join().map_err(|_| anyhow!("a batch thread panicked"))??)
            })
        })?;
        (batches as u64 * args.rows) as f64 / start.elapsed().as_secs_f64()
    };
    Ok(Timing {
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
        batch_rows_per_s,
    })
}

fn plan_with(parser: &tract_onnx::Onnx, bytes: &[u8]) -> TractResult<Arc<TypedRunnableModel>> {
    cordon_trees::load_with_parser(parser, bytes)?
        .into_optimized()?
        .into_runnable()
}

/// The models to time, as (directory, name): every `NAME.onnx` with a `NAME.input.json` beside
/// it, hand-built `hb_*` models left out, or the names asked for. A name is taken from the first
/// directory that has it (results are keyed by name).
pub(crate) fn select_models(
    zoos: &[PathBuf],
    wanted: Option<&str>,
) -> Result<Vec<(PathBuf, String)>> {
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    for zoo in zoos {
        let mut names: Vec<String> = std::fs::read_dir(zoo)
            .with_context(|| format!("reading {zoo:?}"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".onnx"))
                    .map(str::to_string)
            })
            .filter(|n| zoo.join(format!("{n}.input.json")).is_file())
            .collect();
        names.sort();
        names.retain(|n| !found.iter().any(|(_, f)| f == n));
        found.extend(names.into_iter().map(|n| (zoo.clone(), n)));
    }
    match wanted {
        None => Ok(found
            .into_iter()
            .filter(|(_, n)| !n.starts_with("hb_"))
            .collect()),
        Some(list) => list
            .split(',')
            .map(|name| {
                found
                    .iter()
                    .find(|(_, n)| n == name)
                    .cloned()
                    .ok_or_else(|| anyhow!("model {name:?} is in none of {zoos:?}"))
            })
            .collect(),
    }
}

/// ONNX Runtime's figures from the Python script, or why there are none.
fn onnx_runtime(
    args: &TreesArgs,
    zoo: &Path,
    names: &[String],
) -> Result<(String, BTreeMap<String, Timing>)> {
    let script = Path::new("scripts/bench_trees_ort.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(zoo)
        .args(["--models", &names.join(",")])
        .args(["--rows", &args.timing.rows.to_string()])
        .args(["--calls", &args.timing.calls.to_string()])
        .arg("--json")
        .output()
        .context("running python3 scripts/bench_trees_ort.py")?;
    if !out.status.success() {
        return Err(anyhow!(
            "bench_trees_ort.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    let version = doc["version"].as_str().unwrap_or("?").to_string();
    let mut map = BTreeMap::new();
    if let Some(models) = doc["models"].as_object() {
        for (name, m) in models {
            let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
            map.insert(
                name.clone(),
                Timing {
                    p50_us: f("p50_us"),
                    p99_us: f("p99_us"),
                    batch_rows_per_s: f("batch_rows_per_s"),
                },
            );
        }
    }
    Ok((version, map))
}

pub fn run(args: TreesArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; benchmark with --release");
    }
    let models = select_models(&args.zoos, args.models.as_deref())?;
    let cordon = cordon_trees::onnx_parser();
    let tract = tract_onnx::onnx();
    let mut results: BTreeMap<String, BTreeMap<&str, Option<Timing>>> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    let library = match args.no_ort {
        true => Err(anyhow!("skipped (--no-ort)")),
        false => crate::cmd_bench_serve::onnxruntime_for_bench(
            args.onnxruntime_library.clone(),
            args.threads as usize,
        ),
    };
    for (zoo, name) in &models {
        let bytes = std::fs::read(zoo.join(format!("{name}.onnx")))
            .with_context(|| format!("model {name}"))?;
        let inputs = read_inputs(
            &zoo.join(format!("{name}.input.json")),
            args.timing.rows as usize,
        )?;
        let mut row = BTreeMap::new();
        let plan = plan_with(&cordon, &bytes).map_err(|e| anyhow!("{name}: {e:#}"))?;
        row.insert("cordon", Some(time_plan(&plan, &inputs, args.timing)?));
        let tract_timing = match plan_with(&tract, &bytes) {
            _ if args.no_tract => None,
            Ok(plan) => match time_plan(&plan, &inputs, args.timing) {
                Ok(t) => Some(t),
                Err(e) => {
                    notes.push(format!("{name}: tract fails at run: {e:#}"));
                    None
                }
            },
            Err(e) => {
                let msg = format!("{e:#}");
                let msg = msg.lines().last().unwrap_or("").to_string();
                notes.push(format!("{name}: tract cannot load it: {msg}"));
                None
            }
        };
        row.insert("tract", tract_timing);
        // Both engines through the runtime's model API: ONNX Runtime by its C API, no Python.
        if let Ok(library) = &library {
            let (rows, batch) = read_requests(
                &zoo.join(format!("{name}.input.json")),
                args.timing.rows as usize,
            )?;
            // The onnxruntime engine serves tensor outputs only (no ZipMap): such a model is
            // noted and left out of these columns.
            match OnnxModel::load_on(name, "1", &bytes, Engine::OnnxRuntime(library)) {
                Ok(theirs) => {
                    let ours = OnnxModel::load(name, "1", &bytes)?;
                    row.insert(
                        "cordon_api",
                        Some(time_model(
                            &ours,
                            &rows,
                            &batch,
                            args.timing,
                            args.threads as usize,
                        )?),
                    );
                    row.insert(
                        "ort_c_api",
                        Some(time_model(&theirs, &rows, &batch, args.timing, 1)?),
                    );
                }
                Err(e) => notes.push(format!("{name}: the onnxruntime engine refuses it: {e}")),
            }
        }
        results.insert(name.clone(), row);
    }
    let ort = if args.no_ort {
        Err(anyhow!("skipped (--no-ort)"))
    } else {
        // One script run per directory, since the script reads the models of one directory.
        args.zoos
            .iter()
            .map(|zoo| {
                let names: Vec<String> = models
                    .iter()
                    .filter(|(z, _)| z == zoo)
                    .map(|(_, n)| n.clone())
                    .collect();
                (zoo, names)
            })
            .filter(|(_, names)| !names.is_empty())
            .try_fold(
                (String::new(), BTreeMap::new()),
                |(_, mut all), (zoo, names)| {
                    let (version, map) = onnx_runtime(&args, zoo, &names)?;
                    all.extend(map);
                    Ok::<_, anyhow::Error>((version, all))
                },
            )
    };
    let ort_version = match &ort {
        Ok((v, map)) => {
            for (name, t) in map {
                if let Some(row) = results.get_mut(name) {
                    row.insert("onnxruntime", Some(*t));
                }
            }
            format!("onnxruntime {v}")
        }
        Err(e) => format!("onnxruntime: not measured ({e:#})"),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rows": args.timing.rows, "calls": args.timing.calls, "onnxruntime": ort_version,
                "models": results, "notes": notes,
            }))?
        );
        return Ok(());
    }
    println!(
        "tree ensembles, one thread: single-row latency p50/p99 (µs) over {} calls, batch of {} rows (rows/s)",
        args.timing.calls, args.timing.rows
    );
    println!("{ort_version}; ONNX Runtime's single-row times include the Python call");
    println!(
        "{:<22} {:>17} {:>11} | {:>17} {:>11} | {:>17} {:>11} | {:>7} {:>7}",
        "model",
        "cordon p50/p99",
        "rows/s",
        "tract p50/p99",
        "rows/s",
        "ORT p50/p99",
        "rows/s",
        "1-row×",
        "batch×"
    );
    let cell = |t: &Option<&Option<Timing>>| match t {
        Some(Some(t)) => (
            format!("{:.2}/{:.2}", t.p50_us, t.p99_us),
            format!("{:.0}", t.batch_rows_per_s),
        ),
        _ => ("n/a".into(), "n/a".into()),
    };
    for (name, row) in &results {
        let (c1, c2) = cell(&row.get("cordon"));
        let (t1, t2) = cell(&row.get("tract"));
        let (o1, o2) = cell(&row.get("onnxruntime"));
        let ratios = match (row.get("cordon"), row.get("onnxruntime")) {
            (Some(Some(c)), Some(Some(o))) => (
                format!("{:.2}", o.p50_us / c.p50_us),
                format!("{:.2}", c.batch_rows_per_s / o.batch_rows_per_s),
            ),
            _ => ("n/a".into(), "n/a".into()),
        };
        println!(
            "{name:<22} {c1:>17} {c2:>11} | {t1:>17} {t2:>11} | {o1:>17} {o2:>11} | {:>7} {:>7}",
            ratios.0, ratios.1
        );
    }
    println!("1-row× = ORT p50 / Cordon p50; batch× = Cordon rows/s / ORT rows/s (above 1: Cordon faster)");
    match &library {
        Ok(_) => {
            println!();
            println!(
                "both engines through the runtime's model API (OnnxModel::compute on decoded tensors); \
                 ONNX Runtime by its C API (ort crate), no Python; batches on {} core(s): {}",
                args.threads,
                match args.threads {
                    1 => "one thread each".to_string(),
                    n => format!(
                        "Cordon {n} batches at once on {n} threads, ONNX Runtime {n} intra-op threads"
                    ),
                }
            );
            println!(
                "{:<26} {:>17} {:>11} | {:>17} {:>11} | {:>7} {:>7}",
                "model",
                "cordon p50/p99",
                "rows/s",
                "ORT C API p50/p99",
                "rows/s",
                "1-row×",
                "batch×"
            );
            for (name, row) in &results {
                let (c1, c2) = cell(&row.get("cordon_api"));
                let (o1, o2) = cell(&row.get("ort_c_api"));
                let ratios = match (row.get("cordon_api"), row.get("ort_c_api")) {
                    (Some(Some(c)), Some(Some(o))) => (
                        format!("{:.2}", o.p50_us / c.p50_us),
                        format!("{:.2}", c.batch_rows_per_s / o.batch_rows_per_s),
                    ),
                    _ => ("n/a".into(), "n/a".into()),
                };
                println!(
                    "{name:<26} {c1:>17} {c2:>11} | {o1:>17} {o2:>11} | {:>7} {:>7}",
                    ratios.0, ratios.1
                );
            }
        }
        Err(e) => println!("ONNX Runtime's C API: not measured ({e:#})"),
    }
    for n in notes {
        println!("note: {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, names: &[&str]) {
        for n in names {
            std::fs::write(dir.join(n), b"").unwrap();
        }
    }

    #[test]
    fn models_come_from_every_zoo_in_order_and_by_name() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        touch(
            a.path(),
            &[
                "m1.onnx",
                "m1.input.json",
                "hb_x.onnx",
                "hb_x.input.json",
                "no_input.onnx",
                "dup.onnx",
                "dup.input.json",
            ],
        );
        touch(
            b.path(),
            &["m0.onnx", "m0.input.json", "dup.onnx", "dup.input.json"],
        );
        let zoos = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        let named = |v: Vec<(PathBuf, String)>| -> Vec<(usize, String)> {
            v.into_iter()
                .map(|(z, n)| (zoos.iter().position(|x| *x == z).unwrap(), n))
                .collect()
        };
        // Default: trained models only, those without an input set skipped, directories in order,
        // a name only once.
        assert_eq!(
            named(select_models(&zoos, None).unwrap()),
            vec![
                (0, "dup".to_string()),
                (0, "m1".to_string()),
                (1, "m0".to_string())
            ]
        );
        // By name: hand-built ones too, the first directory that has the model wins.
        assert_eq!(
            named(select_models(&zoos, Some("m0,hb_x,dup")).unwrap()),
            vec![
                (1, "m0".to_string()),
                (0, "hb_x".to_string()),
                (0, "dup".to_string())
            ]
        );
        let err = select_models(&zoos, Some("m1,nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\""), "{err}");
        assert!(select_models(&[a.path().join("missing")], None).is_err());
    }
}
