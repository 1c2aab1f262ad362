//! `cordon attest fetch`: fetch a piece of evidence's endorsements (AMD KDS VCEK and CRL, or Intel
//! PCS/PCCS DCAP collateral) into a directory that `cordon attest verify` reads. Optional: nothing
//! else in Cordon fetches endorsements, and verification never touches the network.

use crate::util;
use anyhow::{bail, Result};
use cordon_attest::snp::Product;
use cordon_fetch::{Fetcher, Options, AMD_KDS_URL, INTEL_PCS_URL};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The evidence: a raw SNP report (VCEK-signed) or a DCAP quote (binary or hex text); `-`
    /// reads standard input.
    evidence: PathBuf,
    /// Directory to write into (created if missing): `vcek.der` and `crl.der`, or the DCAP
    /// collateral files that `cordon attest verify --collateral DIR` reads.
    #[arg(long)]
    out: PathBuf,
    /// Cache directory; answers in it are reused without the network (CRLs, TCB info and QE
    /// identity while younger than --max-age-hours, VCEKs always).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// AMD KDS base URL.
    #[arg(long, value_parser = crate::util::base_url, default_value = AMD_KDS_URL)]
    kds_url: String,
    /// Intel PCS base URL, or a PCCS (e.g. https://pccs:8081).
    #[arg(long, value_parser = crate::util::base_url, default_value = INTEL_PCS_URL)]
    pcs_url: String,
    /// Intel SGX Root CA CRL URL. Default: Intel's CRL distribution point with Intel PCS, the
    /// PCCS `/sgx/certification/v4/rootcacrl` endpoint otherwise.
    #[arg(long)]
    root_ca_crl_url: Option<String>,
    /// SNP product line (Milan, Genoa, Turin), for version 2 reports, which do not name it.
    #[arg(long)]
    product: Option<String>,
    /// Only read the cache (--cache), never the network.
    #[arg(long)]
    offline: bool,
    /// Refetch cached CRLs, TCB info and QE identity older than this.
    #[arg(long, default_value_t = 24)]
    max_age_hours: u64,
    /// Timeout of each request, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    #[command(flatten)]
    json: util::JsonArg,
}

fn product(name: &str) -> Result<Product> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "milan" => Product::Milan,
        "genoa" => Product::Genoa,
        "turin" => Product::Turin,
        _ => bail!("--product {name:?}: expected Milan, Genoa or Turin"),
    })
}

pub fn fetch(a: FetchArgs) -> Result<u8> {
    let raw = util::read_input(&a.evidence, "evidence")?;
    let opts = Options {
        kds_url: a.kds_url,
        pcs_url: a.pcs_url,
        root_ca_crl_url: a.root_ca_crl_url,
        product: a.product.as_deref().map(product).transpose()?,
        cache_dir: a.cache,
        max_age: Duration::from_secs(a.max_age_hours.saturating_mul(3600)),
        offline: a.offline,
        timeout: Duration::from_secs(a.timeout_secs),
        ..Options::default()
    };
    let fetcher = Fetcher::new(opts)?;
    let fetched = util::tokio_runtime()?.block_on(fetcher.fetch(&raw, &a.out))?;
    for s in &fetched.sources {
        let from = if s.from_cache { "cache" } else { "network" };
        eprintln!("  {from:<8} {}", s.url);
    }
    let mut command = vec![
        "cordon".to_string(),
        "attest".into(),
        "verify".into(),
        a.evidence.display().to_string(),
    ];
    command.extend(fetched.verify_args());
    if a.json.json {
        let what = match &fetched.endorsement {
            cordon_fetch::Endorsement::Snp { product, .. } => serde_json::json!({
                "kind": "snp", "product": product.name(),
            }),
            cordon_fetch::Endorsement::Dcap { tee, fmspc, ca, .. } => serde_json::json!({
                "kind": "dcap", "tee": tee.to_string(), "fmspc": fmspc.to_string(), "pck_ca": ca.to_string(),
            }),
        };
        util::print_json(&serde_json::json!({
            "out": util::path_json(&a.out),
            "endorsement": what,
            "sources": fetched.sources.iter().map(|s| serde_json::json!({
                "url": s.url.to_string(), "from_cache": s.from_cache,
            })).collect::<Vec<_>>(),
            "verify_command": command,
        }))?;
        return Ok(0);
    }
    match &fetched.endorsement {
        cordon_fetch::Endorsement::Snp { product, .. } => {
            println!(
                "fetched the VCEK and {} CRL into {}",
                product.name(),
                a.out.display()
            )
        }
        cordon_fetch::Endorsement::Dcap { tee, fmspc, ca, .. } => println!(
            "fetched {} collateral (FMSPC {fmspc}, PCK {ca} CA) into {}",
            tee.to_uppercase(),
            a.out.display()
        ),
    }
    println!("verify with:");
    println!(
        "  {}",
        command
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(0)
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
