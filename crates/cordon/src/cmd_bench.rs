//! `cordon bench`: measured side by side, in one run, against baselines measured in the same run.

use anyhow::Result;
use cordon_seal::{KeyFile, OwnerKey, SealOptions};
use std::io::Cursor;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Seal and unseal throughput on one thread, in memory, against AES-256-GCM and SHA-256 alone.
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
    let key = key.ok_or_else(|| anyhow::anyhow!("no run"))?;
    let sealed_bytes = sealed.into_inner();
    let mut out = Vec::with_capacity(size);
    let t_unseal = best_of(runs, || {
        out.clear();
        cordon_seal::unseal(&sealed_bytes[..], &key, &mut out, &mut |_| {})?;
        Ok(())
    })?;
    anyhow::ensure!(out == plain, "round trip differs");

    let gbps = |t: f64| size as f64 / t / 1e9;
    println!("cordon bench seal: {size_mib} MiB, chunk {chunk_size} B, best of {runs}, one thread");
    println!("| operation | GB/s | vs AES-256-GCM alone |");
    println!("|---|---|---|");
    for (name, t) in [
        ("AES-256-GCM alone, ring (baseline)", t_aead),
        (
            "AES-256-GCM alone, RustCrypto aes-gcm (comparison)",
            t_rustcrypto,
        ),
        ("SHA-256 alone, sha2 (baseline)", t_sha),
        ("SHA-256 alone, ring (comparison)", t_ring_sha),
        ("seal (AES-256-GCM + SHA-256 + manifest)", t_seal),
        ("unseal (verify + decrypt + SHA-256)", t_unseal),
    ] {
        println!("| {name} | {:.2} | {:.2}x |", gbps(t), t_aead / t);
    }
    let ceiling = size as f64 / (t_aead + t_sha) / 1e9;
    println!(
        "ceiling for one thread (AES-256-GCM time + SHA-256 time): {ceiling:.2} GB/s; \
         seal reaches {:.0}% of it, unseal {:.0}%",
        100.0 * gbps(t_seal) / ceiling,
        100.0 * gbps(t_unseal) / ceiling
    );
    Ok(())
}
