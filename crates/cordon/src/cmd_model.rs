//! `cordon model run`: evaluate a model in process, exactly as the runtime would load it, for
//! model authors checking a model before they seal it.

use anyhow::{Context, Result};
use cordon_proto::oip::InferRequest;
use cordon_runtime::{Engine, OnnxModel, OnnxRuntimeLibrary};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Evaluate MODEL.onnx on an Open Inference Protocol request (no TEE, no server) and print
    /// the response's outputs as JSON on stdout. Float data may use `null` for NaN (missing).
    Run {
        /// The ONNX model (plaintext; a sealed artifact must be unsealed first); `-` reads
        /// standard input.
        model: PathBuf,
        /// `{"inputs":[{"name","shape","datatype","data"}]}`, data flattened row-major; `-` reads
        /// standard input.
        #[arg(long)]
        input: PathBuf,
        /// Print the model's inputs and outputs (names, datatypes, shapes), and what evaluates it (the
        /// dense plan's steps, or tract), first, on stderr.
        #[arg(long)]
        describe: bool,
        /// Evaluate on ONNX Runtime, loaded from this shared library, instead of the built-in
        /// engine: the runtime's `engine = "onnxruntime"` (its digest is printed on stderr, for
        /// the runtime configuration's `[onnxruntime] sha256`).
        #[arg(long, value_name = "LIBRARY")]
        onnxruntime_library: Option<PathBuf>,
        /// The response is printed as JSON with or without it (accepted as every command accepts it).
        #[arg(long)]
        json: bool,
    },
    /// Write the demo models this binary carries (the breast-cancer logistic regression and MLP,
    /// the synthetic fraud GBDT; models/README.md says how each was made) and an infer request
    /// both breast-cancer models take, to seal and serve by hand (docs/tutorial.md).
    Examples {
        /// Directory to write them to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Replace files that exist.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: crate::util::JsonArg,
    },
}

/// The files `model examples` writes: name, contents.
fn examples() -> [(&'static str, &'static [u8]); 4] {
    use crate::deploy::{BREAST_CANCER_LR, BREAST_CANCER_MLP, DEMO_INPUT, FRAUD_GBDT};
    [
        ("breast_cancer_lr.onnx", BREAST_CANCER_LR.onnx),
        ("breast_cancer_mlp.onnx", BREAST_CANCER_MLP.onnx),
        ("fraud_gbdt.onnx", FRAUD_GBDT.onnx),
        ("demo_input.json", DEMO_INPUT.as_bytes()),
    ]
}

pub fn run(c: ModelCommand) -> Result<()> {
    match c {
        ModelCommand::Examples { out, force, json } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            // All or nothing: refuse before writing anything.
            if !force {
                if let Some((name, _)) = examples().iter().find(|(n, _)| out.join(n).exists()) {
                    anyhow::bail!(
                        "{} exists; pass --force to replace it",
                        out.join(name).display()
                    );
                }
            }
            let mut written = Vec::new();
            for (name, bytes) in examples() {
                let path = out.join(name);
                crate::util::write_atomic(&path, bytes)?;
                if !json.json {
                    println!("{}", path.display());
                }
                written.push(crate::util::path_json(&path));
            }
            if json.json {
                crate::util::print_json(&serde_json::json!({ "written": written }))?;
            }
            Ok(())
        }
        ModelCommand::Run {
            model,
            input,
            describe,
            onnxruntime_library,
            json: _,
        } => {
            let bytes = crate::util::read_input(&model, "model")?;
            let name = model
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .to_string();
            let library = match &onnxruntime_library {
                Some(path) => {
                    let choice = crate::deploy::OnnxRuntimeChoice::for_library(path, vec![])?;
                    eprintln!("onnxruntime library sha256 {}", choice.options.sha256);
                    Some(OnnxRuntimeLibrary::load(&choice.options)?)
                }
                None => None,
            };
            let engine = match &library {
                Some(l) => Engine::OnnxRuntime(l),
                None => Engine::Tract,
            };
            if bytes.starts_with(cordon_seal::MAGIC) {
                anyhow::bail!(
                    "{} is a Cordon sealed artifact, not an ONNX model: `model run` takes the plain \
                     file. Unseal it (`cordon unseal`, with its key file) or serve it (`cordon \
                     runtime serve`, which gets its key from the KBS)",
                    model.display()
                );
            }
            let loaded = OnnxModel::load_on(&name, "1", &bytes, engine).with_context(|| {
                format!("{} is not an ONNX model this engine loads", model.display())
            })?;
            if describe {
                eprintln!("{}", serde_json::to_string_pretty(&loaded.metadata())?);
                eprintln!("engine: {}", loaded.describe_plan().trim_end());
            }
            let request: InferRequest = crate::util::read_infer_request(&input)?;
            let response = loaded.infer(&request)?;
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({ "outputs": response.outputs }))?
            );
            Ok(())
        }
    }
}
