//! `cordon bench dense`: dense neural networks (models/dense, and any directory of
//! `NAME.onnx` + `NAME.input.json`) on the built-in engine's dense plan, on tract alone, and on
//! ONNX Runtime's C API, all three through the runtime's model API (`OnnxModel::compute` on
//! decoded tensors), same inputs, in one run.

use crate::cmd_bench_trees::{read_requests, select_models, time_model, Timing, TimingOptions};
use anyhow::{anyhow, Context, Result};
use cordon_runtime::{Engine, OnnxModel};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DenseArgs {
    /// A directory of models with their input sets (NAME.onnx, NAME.input.json); repeat for more.
    #[arg(long = "zoo", default_values = ["models/dense"])]
    pub zoos: Vec<PathBuf>,
    /// Comma-separated model names, looked up in the --zoo directories in order (default: all).
    #[arg(long)]
    pub models: Option<String>,
    #[command(flatten)]
    pub timing: TimingOptions,
    /// Skip tract.
    #[arg(long)]
    pub no_tract: bool,
    /// Skip ONNX Runtime.
    #[arg(long)]
    pub no_ort: bool,
    /// Cores for the batch figures: Cordon's engines run this many batches at once (one per
    /// thread, as the runtime runs concurrent requests), ONNX Runtime one batch at a time with this
    /// many intra-op threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// ONNX Runtime's shared library (default: CORDON_ONNXRUNTIME_LIB, or what
    /// scripts/fetch-onnxruntime.sh fetched).
    #[arg(long, value_name = "LIBRARY")]
    pub onnxruntime_library: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DenseArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; benchmark with --release");
    }
    let options = args.timing;
    let threads = args.threads as usize;
    let models = select_models(&args.zoos, args.models.as_deref())?;
    let library = match args.no_ort {
        true => Err(anyhow!("skipped (--no-ort)")),
        false => {
            crate::cmd_bench_serve::onnxruntime_for_bench(args.onnxruntime_library.clone(), threads)
        }
    };
    let mut results: BTreeMap<String, BTreeMap<&str, Timing>> = BTreeMap::new();
    let mut notes = Vec::new();
    for (zoo, name) in &models {
        let bytes = std::fs::read(zoo.join(format!("{name}.onnx")))
            .with_context(|| format!("model {name}"))?;
        let (rows, batch) = read_requests(
            &zoo.join(format!("{name}.input.json")),
            args.timing.rows as usize,
        )?;
        let mut row = BTreeMap::new();
        let builtin = OnnxModel::load_on(name, "1", &bytes, Engine::Tract)?;
        if builtin.plan_name() != "dense" {
            notes.push(format!(
                "{name}: not a dense graph, the built-in engine runs it on tract"
            ));
        }
        row.insert(
            "builtin",
            time_model(&builtin, &rows, &batch, options, threads)?,
        );
        if !args.no_tract {
            let tract = OnnxModel::load_on(name, "1", &bytes, Engine::TractOnly)?;
            row.insert(
                "tract",
                time_model(&tract, &rows, &batch, options, threads)?,
            );
        }
        if let Ok(library) = &library {
            let ort = OnnxModel::load_on(name, "1", &bytes, Engine::OnnxRuntime(library))?;
            row.insert("ort_c_api", time_model(&ort, &rows, &batch, options, 1)?);
        }
        results.insert(name.clone(), row);
    }
    let ort_note = match &library {
        Ok(_) => "ONNX Runtime by its C API (ort crate)".to_string(),
        Err(e) => format!("ONNX Runtime: not measured ({e:#})"),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rows": args.timing.rows, "calls": args.timing.calls, "threads": args.threads,
                "onnxruntime": ort_note, "models": results, "notes": notes,
            }))?
        );
        return Ok(());
    }
    println!(
        "dense models through the runtime's model API: single-row latency p50/p99 (µs) over {} calls, batch of {} rows (rows/s); {ort_note}",
        args.timing.calls, args.timing.rows
    );
    println!(
        "batches on {threads} core(s): {}",
        match threads {
            1 => "one thread each".to_string(),
            n => format!("Cordon's engines {n} batches at once, ONNX Runtime {n} intra-op threads"),
        }
    );
    println!(
        "{:<34} {:>15} {:>10} | {:>15} {:>10} | {:>15} {:>10} | {:>6} {:>6}",
        "model",
        "dense p50/p99",
        "rows/s",
        "tract p50/p99",
        "rows/s",
        "ORT p50/p99",
        "rows/s",
        "1-row×",
        "batch×"
    );
    let cell = |t: Option<&Timing>| match t {
        Some(t) => (
            format!("{:.2}/{:.2}", t.p50_us, t.p99_us),
            format!("{:.0}", t.batch_rows_per_s),
        ),
        None => ("n/a".into(), "n/a".into()),
    };
    for (name, row) in &results {
        let (d1, d2) = cell(row.get("builtin"));
        let (t1, t2) = cell(row.get("tract"));
        let (o1, o2) = cell(row.get("ort_c_api"));
        let (r1, r2) = match (row.get("builtin"), row.get("ort_c_api")) {
            (Some(d), Some(o)) => (
                format!("{:.2}", o.p50_us / d.p50_us),
                format!("{:.2}", d.batch_rows_per_s / o.batch_rows_per_s),
            ),
            _ => ("n/a".into(), "n/a".into()),
        };
        println!("{name:<34} {d1:>15} {d2:>10} | {t1:>15} {t2:>10} | {o1:>15} {o2:>10} | {r1:>6} {r2:>6}");
    }
    println!("1-row× = ORT p50 / built-in p50; batch× = built-in rows/s / ORT rows/s (above 1: Cordon faster)");
    for n in notes {
        println!("note: {n}");
    }
    Ok(())
}
