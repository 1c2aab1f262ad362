//! `cordon bench`: measured side by side, in one run, against baselines measured in the same run.

use anyhow::{ensure, Context, Result};
use cordon_attest::{dcap, snp};
use cordon_seal::{FormatVersion, KeyFile, OwnerKey, SealOptions};
use std::hint::black_box;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Seal and unseal throughput (format 2 and format 1), in memory, against AES-256-GCM, BLAKE3 and
    /// SHA-256 alone.
    Seal {
        /// Plaintext size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: usize,
        /// Repetitions; the best (least disturbed) is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Chunk size in bytes.
        #[arg(long, default_value_t = cordon_seal::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
    },
    /// Attestation verification on one thread: an SNP report (fresh verifier, and VCEK chain
    /// cached), and the TDX and SGX quotes through dcap-qvl alone (baseline), Cordon's uncached
    /// verification and Cordon's collateral cache.
    Attest {
        /// Seconds of measurement per row; the iteration count comes from a short calibration run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// A fixed iteration count per row instead (0: from --seconds).
        #[arg(long, default_value_t = 0)]
        iterations: usize,
        /// The fixtures: this repository's testdata/attestation.
        #[arg(long, default_value = "testdata/attestation")]
        fixtures: PathBuf,
    },
    /// Tree ensembles (models/trees): Cordon's engine against tract's own operators and ONNX
    /// Runtime, single-row latency and batch throughput on one thread.
    Trees(crate::cmd_bench_trees::TreesArgs),
    /// Dense neural networks (models/dense): the built-in engine's dense plan against tract alone
    /// and ONNX Runtime's C API, single-row latency and batch throughput.
    Dense(crate::cmd_bench_dense::DenseArgs),
    /// Serving: the engine in process and ONNX Runtime, then the runtime over loopback with
    /// encryption off (development switch), one-shot HPKE and session mode.
    Serve(crate::cmd_bench_serve::ServeArgs),
    /// Training: a confidential job (KBS and runtime on loopback, simulated TEE) against the same
    /// algorithm on plaintext in process, and scikit-learn with --sklearn.
    Train(crate::cmd_bench_train::TrainArgs),
    /// Key broker: attest + release throughput and latency with sim evidence, the
    /// verify-and-appraise path with real SNP evidence (refused at binding), against /healthz and
    /// the store's operations alone; KEK rotation of 100,000 keys.
    Kbs(crate::cmd_bench_kbs::KbsArgs),
}

fn best_of(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

pub fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Seal {
            size_mib,
            runs,
            chunk_size,
        } => seal(size_mib, runs, chunk_size),
        BenchCommand::Attest {
            seconds,
            iterations,
            fixtures,
        } => attest(seconds, iterations, &fixtures),
        BenchCommand::Trees(args) => crate::cmd_bench_trees::run(args),
        BenchCommand::Dense(args) => crate::cmd_bench_dense::run(args),
        BenchCommand::Serve(args) => crate::cmd_bench_serve::run(args),
        BenchCommand::Train(args) => crate::cmd_bench_train::run(args),
        BenchCommand::Kbs(args) => crate::cmd_bench_kbs::run(args),
    }
}

fn seal(size_mib: usize, runs: usize, chunk_size: u32) -> Result<()> {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use sha2::Digest;
    let size = size_mib << 20;
    let plain: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3])
        .collect();
    let owner = OwnerKey::generate();
    let options = SealOptions {
        chunk_size,
        ..SealOptions::default()
    };
    let mut sealed = Cursor::new(Vec::with_capacity(size + size / 1000 + 4096));
    let mut key: Option<KeyFile> = None;

    // Baselines: the primitives sealing is made of, over the same bytes and chunking. Sealing uses
    // ring's AES-256-GCM; RustCrypto's aes-gcm is shown for comparison.
    let mut buf = plain.clone();
    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7u8; 32])
            .map_err(|_| anyhow::anyhow!("ring key"))?,
    );
    let nonce_for = |i: usize| {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        nonce
    };
    let t_aead = best_of(runs, || {
        for (i, chunk) in buf.chunks_mut(chunk_size as usize).enumerate() {
            let n = ring::aead::Nonce::assume_unique_for_key(nonce_for(i));
            let _tag = ring_key
                .seal_in_place_separate_tag(n, ring::aead::Aad::empty(), chunk)
                .map_err(|_| anyhow::anyhow!("ring aes-gcm"))?;
        }
        Ok(())
    })?;
    let cipher = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
    let t_rustcrypto = best_of(runs, || {
        for (i, chunk) in buf.chunks_mut(chunk_size as usize).enumerate() {
            cipher
                .encrypt_in_place_detached(&nonce_for(i).into(), b"", chunk)
                .map_err(|_| anyhow::anyhow!("aes-gcm"))?;
        }
        Ok(())
    })?;
    let t_sha = best_of(runs, || {
        std::hint::black_box(sha2::Sha256::digest(&plain));
        Ok(())
    })?;
    let t_ring_sha = best_of(runs, || {
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, &plain));
        Ok(())
    })?;
    let t_blake3 = best_of(runs, || {
        std::hint::black_box(blake3::hash(&plain));
        Ok(())
    })?;
    // Each format sealed and unsealed (streaming, and in memory as the runtime does).
    let mut timed = Vec::new();
    for format in [FormatVersion::V2, FormatVersion::V1] {
        let options = SealOptions {
            format,
            ..options.clone()
        };
        let t_seal = best_of(runs, || {
            sealed.get_mut().clear();
            sealed.set_position(0);
            let (_, k) = cordon_seal::seal(
                &plain[..],
                size as u64,
                &mut sealed,
                &owner,
                &options,
                &mut |_| {},
            )?;
            key = Some(k);
            Ok(())
        })?;
        let key = key.take().ok_or_else(|| anyhow::anyhow!("no run"))?;
        let sealed_bytes = sealed.get_ref().clone();
        let mut out = Vec::with_capacity(size);
        let t_unseal = best_of(runs, || {
            out.clear();
            cordon_seal::unseal(&sealed_bytes[..], &key, &mut out, &mut |_| {})?;
            Ok(())
        })?;
        anyhow::ensure!(out == plain, "round trip differs");
        let t_to_vec = best_of(runs, || {
            let (_, back) = cordon_seal::unseal_to_vec(&sealed_bytes, &key)?;
            std::hint::black_box(back);
            Ok(())
        })?;
        timed.push((format, t_seal, t_unseal, t_to_vec));
    }

    let gbps = |t: f64| size as f64 / t / 1e9;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cordon bench seal: {size_mib} MiB, chunk {chunk_size} B, best of {runs}; primitives on one \
         thread, seal and unseal on up to two ({threads} CPUs here)"
    );
    println!("| operation | GB/s | vs AES-256-GCM alone |");
    println!("|---|---|---|");
    let mut rows: Vec<(String, f64)> = vec![
        ("AES-256-GCM alone, ring (baseline)".into(), t_aead),
        (
            "AES-256-GCM alone, RustCrypto aes-gcm (comparison)".into(),
            t_rustcrypto,
        ),
        ("BLAKE3 alone (format 2's digest)".into(), t_blake3),
        ("SHA-256 alone, sha2 (format 1's digest)".into(), t_sha),
        ("SHA-256 alone, ring (comparison)".into(), t_ring_sha),
    ];
    for (format, t_seal, t_unseal, t_to_vec) in &timed {
        let n = format.number();
        rows.push((format!("seal, format {n}"), *t_seal));
        rows.push((format!("unseal (streaming), format {n}"), *t_unseal));
        rows.push((
            format!("unseal into memory (the runtime's), format {n}"),
            *t_to_vec,
        ));
    }
    for (name, t) in rows {
        println!("| {name} | {:.2} | {:.2}x |", gbps(t), t_aead / t);
    }
    if let [(_, seal2, unseal2, _), (_, seal1, unseal1, _)] = timed[..] {
        println!(
            "format 2 against format 1 in this run: seal {:.2}x, unseal {:.2}x",
            seal1 / seal2,
            unseal1 / unseal2
        );
    }
    Ok(())
}

/// One measured operation: per-iteration wall times, in seconds.
struct Row {
    name: String,
    iterations: usize,
    mean: f64,
    p50: f64,
    p99: f64,
}

/// Runs `op` for about `seconds` (after a calibration run of at least 0.2 s, which also warms
/// caches), or exactly `iterations` times, timing each call.
fn measure(
    name: &str,
    seconds: f64,
    iterations: usize,
    mut op: impl FnMut() -> Result<()>,
) -> Result<Row> {
    let start = Instant::now();
    let mut calls = 0u32;
    while calls < 5 || start.elapsed() < Duration::from_millis(200) {
        op()?;
        calls += 1;
    }
    let n = match iterations {
        0 => ((seconds / (start.elapsed().as_secs_f64() / f64::from(calls))) as usize).max(10),
        n => n,
    };
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    // Nearest rank.
    let rank = |p: f64| times[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    Ok(Row {
        name: name.into(),
        iterations: n,
        mean: times.iter().sum::<f64>() / n as f64,
        p50: rank(0.50),
        p99: rank(0.99),
    })
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// Inside every fixture's validity window (testdata/attestation/README.md).
const SNP_TIME: u64 = 1_735_732_800; // 2025-01-01T12:00:00Z
const DCAP_TIME: u64 = 1_751_328_000; // 2025-07-01T00:00:00Z

fn attest(seconds: f64, iterations: usize, fixtures: &Path) -> Result<()> {
    let snp_now = UNIX_EPOCH + Duration::from_secs(SNP_TIME);
    let dcap_now = UNIX_EPOCH + Duration::from_secs(DCAP_TIME);
    let report = read(fixtures, "snp/trustee_test-report.bin")?;
    let certs = vec![read(fixtures, "snp/trustee_test-vcek.der")?];
    let snp_cached = snp::Verifier::default();
    ensure!(
        snp_cached.verify(&report, &certs, snp_now)? == snp::verify(&report, &certs, snp_now)?,
        "SNP: cached and fresh verifiers disagree"
    );

    let mut rows = Vec::new();
    rows.push(measure(
        "SNP report, fresh verifier (VCEK chain verified each time)",
        seconds,
        iterations,
        || {
            black_box(snp::verify(&report, &certs, snp_now)?);
            Ok(())
        },
    )?);
    rows.push(measure(
        "SNP report, VCEK chain cached (`snp::Verifier`)",
        seconds,
        iterations,
        || {
            black_box(snp_cached.verify(&report, &certs, snp_now)?);
            Ok(())
        },
    )?);
    // The floor under an SNP verification: its report signature alone (ECDSA P-384, SHA-384 over
    // the signed part), with the implementation `snp` uses (aws-lc-rs) and, for comparison,
    // RustCrypto's and ring's (what `snp` used before).
    let parsed = snp::AttestationReport::parse(&report)?;
    let endorsement = snp::endorsement_key(snp::parse_certificate(&certs[0])?)?;
    let key = endorsement.public_key;
    let signed = &report[..snp::SIGNED_LEN];
    let signature = p384::ecdsa::Signature::from_scalars(parsed.signature_r, parsed.signature_s)?;
    rows.push(measure(
        "P-384 signature of the SNP report alone, RustCrypto p384 (comparison)",
        seconds,
        iterations,
        || {
            use p384::ecdsa::signature::Verifier as _;
            key.verify(black_box(signed), &signature)
                .map_err(|_| anyhow::anyhow!("p384 verify"))
        },
    )?);
    let point = key.to_encoded_point(false);
    let ring_key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P384_SHA384_FIXED,
        point.as_bytes().to_vec(),
    );
    let rs = [parsed.signature_r, parsed.signature_s].concat();
    rows.push(measure(
        "P-384 signature of the SNP report alone, ring (comparison; what `snp` used before)",
        seconds,
        iterations,
        || {
            ring_key
                .verify(black_box(signed), &rs)
                .map_err(|_| anyhow::anyhow!("ring P-384 verify"))
        },
    )?);
    rows.push(measure(
        "P-384 signature of the SNP report alone, aws-lc-rs (what `snp` uses)",
        seconds,
        iterations,
        || {
            snp::verify_report_signature(black_box(&report), &parsed, &endorsement)
                .map_err(|e| anyhow::anyhow!("aws-lc-rs P-384 verify: {e}"))
        },
    )?);
    let mut stats = Vec::new();
    for (tee, dir) in [("TDX", "tdx/tdx_quote"), ("SGX", "sgx/sgx_quote")] {
        let quote = read(fixtures, dir)?;
        let collateral =
            dcap::DcapCollateral::from_json(&read(fixtures, &format!("{dir}_collateral.json"))?)?;
        let cached = dcap::Verifier::new();
        ensure!(
            cached.verify(&quote, &collateral, dcap_now)?
                == dcap::verify(&quote, &collateral, dcap_now)?,
            "{tee}: cached and uncached verification disagree"
        );
        rows.push(measure(
            &format!("{tee} quote, `dcap_qvl::verify::verify` (baseline)"),
            seconds,
            iterations,
            || {
                black_box(
                    dcap_qvl::verify::verify(&quote, collateral.inner(), DCAP_TIME)
                        .map_err(|e| anyhow::anyhow!("dcap-qvl: {e:#}"))?,
                );
                Ok(())
            },
        )?);
        rows.push(measure(
            &format!("{tee} quote, Cordon uncached (`dcap::verify`)"),
            seconds,
            iterations,
            || {
                black_box(dcap::verify(&quote, &collateral, dcap_now)?);
                Ok(())
            },
        )?);
        rows.push(measure(
            &format!("{tee} quote, Cordon collateral cache (`dcap::Verifier`)"),
            seconds,
            iterations,
            || {
                black_box(cached.verify(&quote, &collateral, dcap_now)?);
                Ok(())
            },
        )?);
        let s = cached.stats();
        ensure!(
            s.misses == 1,
            "{tee}: the cache missed after the first call ({s:?})"
        );
        stats.push((tee, s));
    }

    // Evidence as a client receives it from a runtime: with its endorsements shipped beside it
    // (the wire JSON decoded each time), verified by a client's fresh verifier (one `connect`:
    // cold) and by a long-lived one (the proxy's, a KBS's: cached).
    let tdx_quote = read(fixtures, "tdx/tdx_quote")?;
    let tdx_collateral =
        dcap::DcapCollateral::from_json(&read(fixtures, "tdx/tdx_quote_collateral.json")?)?;
    for (label, evidence, shipped, now) in [
        (
            "SNP report, its VCEK shipped",
            &report,
            cordon_attest::ShippedEndorsements {
                snp_certs: certs.clone(),
                dcap_collateral: None,
                tdx_event_log: None,
            },
            snp_now,
        ),
        (
            "TDX quote, its collateral shipped",
            &tdx_quote,
            cordon_attest::ShippedEndorsements {
                snp_certs: vec![],
                dcap_collateral: Some(tdx_collateral.clone()),
                tdx_event_log: None,
            },
            dcap_now,
        ),
    ] {
        let wire = serde_json::to_vec(&cordon_proto::WireEndorsements::from_shipped(&shipped))?;
        let long_lived = cordon_attest::Verifier::new(cordon_attest::Endorsements::default());
        let verify = |verifier: &cordon_attest::Verifier| -> Result<()> {
            let decoded: cordon_proto::WireEndorsements = serde_json::from_slice(&wire)?;
            black_box(verifier.verify_shipped(evidence, &decoded.decode()?, now)?);
            Ok(())
        };
        rows.push(measure(
            &format!("{label} (wire decoded; fresh verifier per connect: cold)"),
            seconds,
            iterations,
            || {
                verify(&cordon_attest::Verifier::new(
                    cordon_attest::Endorsements::default(),
                ))
            },
        )?);
        rows.push(measure(
            &format!("{label} (wire decoded; long-lived verifier: cached)"),
            seconds,
            iterations,
            || verify(&long_lived),
        )?);
    }

    let baseline = |tee: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(tee) && r.name.contains("(baseline)"))
            .map(|r| r.mean)
            .unwrap_or(f64::NAN)
    };
    let (tdx_base, sgx_base) = (baseline("TDX"), baseline("SGX"));
    let ms = |t: f64| format!("{:.3} ms", t * 1e3);
    println!(
        "cordon bench attest: one thread; {}; times pinned inside the fixtures' windows \
         (SNP 2025-01-01T12:00:00Z, TDX and SGX 2025-07-01T00:00:00Z)",
        match iterations {
            0 => format!("iterations per row sized for {seconds} s"),
            n => format!("{n} iterations per row"),
        }
    );
    println!("| operation | iterations | mean | p50 | p99 | mean vs dcap-qvl baseline |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let (base, which) = if r.name.starts_with("SGX") {
            (sgx_base, "SGX")
        } else {
            (tdx_base, "TDX")
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.3}x of {which} ({:.2}x faster) |",
            r.name,
            r.iterations,
            ms(r.mean),
            ms(r.p50),
            ms(r.p99),
            r.mean / base,
            base / r.mean
        );
    }
    for (tee, s) in &stats {
        println!(
            "{tee} collateral cache: {} hits, {} miss (the first call), {} entry",
            s.hits, s.misses, s.entries
        );
    }
    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix))
            .context("row missing")
    };
    let tdx_cached = find("TDX quote, Cordon collateral cache")?;
    let snp = find("SNP report, VCEK chain cached")?;
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let speedup = tdx_base / tdx_cached.mean;
    println!(
        "goal: TDX with collateral cache at least 3x faster than the uncached dcap-qvl call: \
         {speedup:.2}x ({} vs {}): {}",
        ms(tdx_cached.mean),
        ms(tdx_base),
        verdict(speedup >= 3.0)
    );
    println!(
        "goal: SNP (VCEK chain cached) under 0.6 ms on one core: mean {}, p50 {}, p99 {}: {}",
        ms(snp.mean),
        ms(snp.p50),
        ms(snp.p99),
        verdict(snp.mean < 0.6e-3)
    );
    Ok(())
}
