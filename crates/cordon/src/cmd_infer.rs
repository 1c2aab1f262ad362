//! `cordon infer`: verify, then one encrypted inference.

use crate::util;
use anyhow::Result;
use cordon_proto::oip::InferRequest;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(clap::Args)]
pub struct InferArgs {
    /// Runtime base URL (http:// or https://).
    #[arg(long, value_parser = crate::util::base_url)]
    runtime: String,
    #[command(flatten)]
    ca: util::CaCertArg,
    /// Client policy (TOML): what the runtime must prove; for `sim`, an [endorsements] section with its trust anchors.
    #[arg(long)]
    policy: PathBuf,
    /// Model name.
    #[arg(long)]
    model: String,
    /// Open Inference Protocol request (JSON): {"inputs":[{"name","shape","datatype","data"}]};
    /// `-` reads standard input.
    #[arg(long)]
    input: PathBuf,
    /// Refuse unless the runtime's evidence binds this model to exactly this sealed manifest
    /// (SHA-256, hex, as `cordon seal` prints it).
    #[arg(long, value_name = "SHA256")]
    require_manifest: Option<String>,
    /// The response is printed as JSON with or without it (accepted as every command accepts it).
    #[arg(long)]
    json: bool,
}

pub fn run(a: InferArgs) -> Result<()> {
    let doc = util::load_policy_doc(&a.policy, "client policy")?;
    let request: InferRequest = util::read_infer_request(&a.input)?;
    let tls = a.ca.tls()?;
    util::tokio_runtime()?.block_on(async {
        let runtime = cordon_client::connect_tls(&a.runtime, &doc, &tls, SystemTime::now()).await?;
        let c = runtime.claims();
        eprintln!(
            "verified runtime: platform {}{}, launch measurement {}, debug {}",
            c.platform,
            crate::util::provenance(c),
            hex::encode(&c.launch_measurement),
            c.debug
        );
        for m in runtime.models() {
            eprintln!(
                "bound model: {} version {} sealed manifest sha256 {}",
                m.name,
                m.version,
                hex::encode(m.manifest_sha256)
            );
        }
        if let Some(digest) = &a.require_manifest {
            runtime.require_model(&a.model, digest)?;
        }
        eprintln!(
            "encrypting to bound HPKE key {}",
            hex::encode(runtime.keys().hpke_public_key)
        );
        let response = runtime.infer(&a.model, &request).await?;
        println!("{}", serde_json::to_string_pretty(&response)?);
        Ok(())
    })
}
