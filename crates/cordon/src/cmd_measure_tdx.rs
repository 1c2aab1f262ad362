//! `cordon measure tdx`: MRTD from a TDVF image (`cordon_measure::tdx`), RTMR0..3 replayed from a
//! CCEL event log (`cordon_attest::eventlog`), and the replay checked against a quote's RTMRs.

use anyhow::{bail, Context, Result};
use cordon_attest::eventlog::{self, EventClaim};
use cordon_measure::tdx::{self, AddOrder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true).args(["tdvf", "event_log"])))]
pub struct TdxArgs {
    /// TDVF firmware image (e.g. OVMF.inteltdx.fd, or an OVMF.fd built with TDX support): prints MRTD.
    #[arg(long)]
    tdvf: Option<PathBuf>,
    /// How the host adds a section's pages: `per-page` (each page added, then its chunks extended:
    /// upstream Linux KVM with QEMU) or `per-section` (all pages, then all chunks: some earlier
    /// TDX host stacks).
    #[arg(long, value_enum, default_value = "per-page", requires = "tdvf")]
    order: Order,
    /// CCEL event log (e.g. a copy of /sys/firmware/acpi/tables/data/CCEL): prints RTMR0..3 replayed
    /// from it.
    #[arg(long)]
    event_log: Option<PathBuf>,
    /// A TDX quote (binary or hex text) to check the replayed RTMRs against. Its signature is not
    /// verified here: `cordon attest verify` does that.
    #[arg(long, requires = "event_log")]
    quote: Option<PathBuf>,
    /// List the event log's events.
    #[arg(long, requires = "event_log")]
    events: bool,
    /// Print JSON: the inputs (path, SHA-256) and the values.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Order {
    PerPage,
    PerSection,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn input(path: &Path, bytes: &[u8]) -> Value {
    json!({ "path": path.display().to_string(), "sha256": hex::encode(Sha256::digest(bytes)) })
}

/// RTMR0..3 of a TDX quote, read without verifying it.
fn quote_rtmrs(path: &Path) -> Result<[[u8; 48]; 4]> {
    let raw = read(path)?;
    let bytes = cordon_attest::decode_evidence(&raw);
    let parsed = cordon_attest::dcap::inspect(&bytes)
        .with_context(|| format!("{} is not a DCAP quote", path.display()))?;
    if parsed["header"]["tee"] != "tdx" {
        bail!("{} is an SGX quote: RTMRs are TDX's", path.display());
    }
    let mut rtmrs = [[0u8; 48]; 4];
    for (i, slot) in rtmrs.iter_mut().enumerate() {
        let field = format!("rtmr{i}");
        let value = parsed["body"][&field]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|v| <[u8; 48]>::try_from(v).ok())
            .with_context(|| format!("{}: no {field} in the quote body", path.display()))?;
        *slot = value;
    }
    Ok(rtmrs)
}

fn short(digest: &[u8]) -> String {
    let h = hex::encode(digest);
    format!("{}…", h.get(..16).unwrap_or(&h))
}

fn print_events(claims: &[EventClaim]) {
    for c in claims {
        let name = c.event_type_name.as_deref().unwrap_or("?");
        let replay = if c.replayed { "" } else { " (not extended)" };
        let text = c
            .text
            .as_deref()
            .map(|t| format!("  {t}"))
            .unwrap_or_default();
        println!(
            "  {:>3}  {:<5}  {:#010x} {:<32} {}{replay}{text}",
            c.number,
            c.register,
            c.event_type,
            name,
            short(&c.digest)
        );
    }
}

pub fn run(a: TdxArgs) -> Result<()> {
    let mut out = serde_json::Map::new();
    let mut mismatched = Vec::new();
    if let Some(path) = &a.tdvf {
        let image = read(path)?;
        let order = match a.order {
            Order::PerPage => AddOrder::PerPage,
            Order::PerSection => AddOrder::PerSection,
        };
        let meta = tdx::parse_tdvf(&image).with_context(|| path.display().to_string())?;
        let mrtd = meta
            .mrtd(&image, order)
            .with_context(|| path.display().to_string())?;
        if a.json {
            out.insert(
                "tdvf".into(),
                json!({
                    "input": input(path, &image),
                    "order": order,
                    "sections": meta.sections,
                    "mrtd": hex::encode(mrtd),
                }),
            );
        } else if a.event_log.is_none() {
            println!("{}", hex::encode(mrtd));
        } else {
            println!("MRTD   {}", hex::encode(mrtd));
        }
    }
    if let Some(path) = &a.event_log {
        let log = read(path)?;
        let parsed = eventlog::parse(&log).with_context(|| path.display().to_string())?;
        let replayed = parsed.replay();
        let claims = parsed.claims();
        let quote = a.quote.as_deref().map(quote_rtmrs).transpose()?;
        let matches: Option<Vec<bool>> =
            quote.map(|q| q.iter().zip(&replayed).map(|(q, r)| q == r).collect());
        if let Some(m) = &matches {
            mismatched = (0..4).filter(|i| !m[*i]).collect();
        }
        if a.json {
            let mut doc = json!({
                "input": input(path, &log),
                "length": parsed.length,
                "event_count": parsed.events.len(),
                "rtmrs": replayed.iter().map(hex::encode).collect::<Vec<_>>(),
            });
            if a.events {
                doc["events"] = serde_json::to_value(&claims)?;
            }
            if let (Some(q), Some(m), Some(p)) = (quote, &matches, &a.quote) {
                doc["quote"] = json!({
                    "input": input(p, &read(p)?),
                    "signature_verified": false,
                    "rtmrs": q.iter().map(hex::encode).collect::<Vec<_>>(),
                    "matches": m,
                });
            }
            out.insert("event_log".into(), doc);
        } else {
            for (i, r) in replayed.iter().enumerate() {
                let verdict = match (&quote, &matches) {
                    (Some(q), Some(m)) if !m[i] => {
                        format!("  differs: the quote has {}", hex::encode(q[i]))
                    }
                    (Some(_), Some(_)) => "  matches the quote".to_string(),
                    _ => String::new(),
                };
                println!("RTMR{i}  {}{verdict}", hex::encode(r));
            }
            if a.events {
                println!("events ({} in {} bytes):", claims.len(), parsed.length);
                print_events(&claims);
            }
            if quote.is_some() {
                eprintln!(
                    "note: the quote's signature was not verified here (`cordon attest verify` does)"
                );
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    }
    if !mismatched.is_empty() {
        let names: Vec<String> = mismatched.iter().map(|i| format!("RTMR{i}")).collect();
        bail!(
            "the event log does not replay to the quote's {}",
            names.join(", ")
        );
    }
    Ok(())
}
