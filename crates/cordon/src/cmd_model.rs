//! `cordon model run`: evaluate a model in process, exactly as the runtime would load it, for
//! model authors checking a model before they seal it.

use anyhow::{Context, Result};
use cordon_proto::oip::InferRequest;
use cordon_runtime::OnnxModel;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Evaluate MODEL.onnx on an Open Inference Protocol request (no TEE, no server) and print
    /// the response's outputs as JSON on stdout. Float data may use `null` for NaN (missing).
    Run {
        /// The ONNX model (plaintext; a sealed artifact must be unsealed first).
        model: PathBuf,
        /// `{"inputs":[{"name","shape","datatype","data"}]}`, data flattened row-major.
        #[arg(long)]
        input: PathBuf,
        /// Print the model's inputs and outputs (names, datatypes, shapes) first, on stderr.
        #[arg(long)]
        describe: bool,
    },
}

pub fn run(c: ModelCommand) -> Result<()> {
    match c {
        ModelCommand::Run {
            model,
            input,
            describe,
        } => {
            let bytes = std::fs::read(&model).with_context(|| format!("reading {model:?}"))?;
            let name = model
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .to_string();
            let loaded = OnnxModel::load(&name, "1", &bytes)?;
            if describe {
                eprintln!("{}", serde_json::to_string_pretty(&loaded.metadata())?);
            }
            let text =
                std::fs::read_to_string(&input).with_context(|| format!("reading {input:?}"))?;
            let request: InferRequest = serde_json::from_str(&text)
                .with_context(|| format!("{input:?} is not an Open Inference Protocol request"))?;
            let response = loaded.infer(&request)?;
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({ "outputs": response.outputs }))?
            );
            Ok(())
        }
    }
}
