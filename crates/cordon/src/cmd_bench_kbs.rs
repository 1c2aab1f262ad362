//! `cordon bench kbs`: the key broker's release path, measured side by side in one run.
//!
//! - **release, sim evidence**: N concurrent clients, each repeating challenge → attest (one key)
//!   against a KBS served in this process by a real axum server on 127.0.0.1 (its own tokio
//!   runtime; the clients on another), SQLite store, file KEK. Only releases are counted: every
//!   response must release the one key asked for, and every `--check-every`-th sealed DEK is
//!   opened and compared with the registered one; at the end the store's audit log must hold one
//!   `key_released` event per counted release.
//! - **SNP verify-and-appraise path, refused at binding**: the same loop with the real SNP report
//!   of testdata/attestation, the VCEK chain cached by the KBS's verifier, the KBS's clock inside
//!   the fixture's window. The report binds someone else's report_data, so every request is
//!   verified in full and then refused at the binding check (403 `report_data_mismatch`); only
//!   such refusals are counted.
//! - **baselines**, same run: `GET /healthz` on the same server with the same clients (HTTP
//!   alone); the store work of one release in process on one thread, with the store's own
//!   methods (the key lookup; one attestation committed alone; 32 per commit, as group commit
//!   does under load), on SQLite and, with `--postgres`, on one PostgreSQL connection; a raw
//!   write + fdatasync on the same file system; the CPU work of one release without I/O (sim
//!   evidence made, verified, appraised, the DEK sealed and opened; SNP verified with the chain
//!   cached).
//! - **`--postgres`**: the release rows again on one and two KBS replicas sharing a throwaway
//!   PostgreSQL cluster started with its durable defaults (`fsync` on).
//! - **KEK rotation**: a store of `--rotate-keys` wrapped keys (filled in one transaction),
//!   `Store::open` on it, then `Store::rewrap_all` under a new file KEK.
//!
//! `--sync normal` (bench only) sets SQLite's `synchronous=NORMAL` on the benchmark's stores, to
//! measure what it would give; the KBS itself always runs with `FULL`.

use anyhow::{anyhow, bail, ensure, Context, Result};
use cordon_attest::{appraise, Endorsements, Platform, Policy, Verifier};
use cordon_kbs::custody::{dek_binding, wrap_aad, FileKek, MemoryKek, Slot};
use cordon_kbs::{
    AttestationCommit, AttestationOutcome, Kbs, KbsConfig, Kek, Keks, KeyStore, NewAuditEvent,
    PendingEvent, PgStore, Store, Synchronous,
};
use cordon_proto::kbs::{AttestRequest, AttestResponse, Challenge, ErrorBody, RELEASE_INFO};
use cordon_proto::{channel, report_data, RuntimeKeys, ServiceKeyPair};
use cordon_tee::{EvidenceProvider, SimHardwareKey, SimTee};
use serde_json::{json, Value};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct KbsArgs {
    /// Concurrent clients, comma-separated: one throughput row per value.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    clients: Vec<usize>,
    /// Seconds of measurement per throughput row (after a warm-up of a fifth of it, at most 1 s).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// SQLite `synchronous` of the benchmark's stores, comma-separated: `full` (what the KBS
    /// runs with) and/or `normal` (bench only: measures what it would give).
    #[arg(long, value_delimiter = ',', default_value = "full")]
    sync: Vec<SyncMode>,
    /// Keys in the store for the KEK rotation (0: skip the rotation).
    #[arg(long, default_value_t = 100_000)]
    rotate_keys: usize,
    /// Rows re-wrapped per transaction in the rotation (`kbs rotate-kek`'s default).
    #[arg(long, default_value_t = 500)]
    rotate_batch: usize,
    /// Open and compare every N-th released DEK (1: every one).
    #[arg(long, default_value_t = 4)]
    check_every: usize,
    /// Iterations of each in-process baseline.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Where the stores are made (a fresh directory inside it); the file system matters, since
    /// each commit is an fsync. Default: the system's temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The fixtures: this repository's testdata/attestation.
    #[arg(long, default_value = "testdata/attestation")]
    fixtures: PathBuf,
    /// Tiny parameters (tests): 2 clients, 0.3 s per row, 1,000 keys to rotate, 50 iterations.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also measure sim releases on PostgreSQL, with one and two KBS replicas (in this process,
    /// each its own server and connection) on one database of a throwaway cluster started from
    /// the system's PostgreSQL (`initdb`/`pg_ctl`, as the tests do).
    #[arg(long)]
    postgres: bool,
}

/// `replicas` KBSs on one PostgreSQL database (`db`), each served on 127.0.0.1 by `server_rt`,
/// sharing one file KEK (as replicas must): their URLs, and the stops of their servers.
fn serve_pg(
    server_rt: &tokio::runtime::Runtime,
    root: &Path,
    setup: &Setup,
    db: &str,
    replicas: usize,
) -> Result<(Vec<Served>, Keks)> {
    let dir = tempfile::tempdir_in(root)?;
    let kek: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&dir.path().join("kbs.kek"))?);
    let keks = Keks::new(kek);
    let policy = Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]).to_toml();
    {
        let mut store = PgStore::connect(db, keks.clone())?;
        let event = NewAuditEvent {
            time: unix_now(),
            kind: "key_registered",
            key_id: Some(KEY_ID),
            claims_digest: None,
            verdict: "accepted",
            measurement: None,
            detail: "bench",
        };
        store.put_key_audited(KEY_ID, &setup.dek, &policy, &event)?;
    }
    let mut served = Vec::new();
    for _ in 0..replicas {
        let mut config = KbsConfig::new(
            dir.path().join("unused"),
            Endorsements {
                sim_trust_anchors: vec![setup.sim_anchor],
                ..Default::default()
            },
        );
        config.keks = Some(keks.clone());
        let store = PgStore::connect(db, keks.clone())?;
        let kbs = Kbs::open_with_store(config, Box::new(store))?;
        let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        server_rt.spawn(async move {
            if let Err(e) = kbs
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
            {
                eprintln!("bench KBS server: {e}");
            }
        });
        served.push(Served {
            url,
            data_dir: PathBuf::new(),
            stop: Some(stop),
            _dir: tempfile::tempdir_in(root)?,
        });
    }
    // The KEK file's directory lives as long as the first replica's.
    if let Some(first) = served.first_mut() {
        first._dir = dir;
    }
    Ok((served, keks))
}

/// `n` clients with runtime keys and sim TEEs of their own, sharing one HTTP pool; client `i`
/// talks to `urls[i % urls.len()]`.
fn make_clients(
    n: usize,
    urls: &[&str],
    setup: &Setup,
    snp_report: &Arc<Vec<u8>>,
) -> Result<Vec<Arc<Client>>> {
    ensure!(!urls.is_empty(), "no KBS to send requests to");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()?;
    (0..n)
        .map(|i| {
            let kp = ServiceKeyPair::generate(0);
            let keys = runtime_keys(&kp);
            Ok(Arc::new(Client {
                http: http.clone(),
                url: urls[i % urls.len()].to_string(),
                kp,
                keys,
                tee: Some(SimTee::new(
                    SimHardwareKey::from_file_contents(&setup.hw_seed)?,
                    MEASUREMENT,
                    [0; 32],
                    false,
                )),
                snp_report: snp_report.clone(),
                dek: setup.dek,
            }))
        })
        .collect()
}

/// One PostgreSQL row: sim releases against `replicas` replicas.
struct PgRow {
    replicas: usize,
    clients: usize,
    ops: usize,
    checked: usize,
    seconds: f64,
    p50: f64,
    p99: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SyncMode {
    Full,
    Normal,
}

impl SyncMode {
    fn label(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL (bench only)",
        }
    }
    fn store(self) -> Synchronous {
        match self {
            SyncMode::Full => Synchronous::Full,
            SyncMode::Normal => Synchronous::Normal,
        }
    }
}

const KEY_ID: &str = "bench-key";
const MEASUREMENT: [u8; 48] = [0x5b; 48];
/// The SNP fixture's window (as in `cordon bench attest`).
const SNP_TIME: u64 = 1_735_732_800; // 2025-01-01T12:00:00Z

/// Per-operation wall times, in seconds, sorted.
fn summary(mut times: Vec<f64>) -> (f64, f64, f64) {
    if times.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let rank = |p: f64| times[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    (times.iter().sum::<f64>() / n as f64, rank(0.5), rank(0.99))
}

fn us(t: f64) -> String {
    if t >= 0.01 {
        format!("{:.1} ms", t * 1e3)
    } else {
        format!("{:.0} µs", t * 1e6)
    }
}

/// What the loopback clients do, one operation each time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Healthz,
    SimRelease,
    SnpRefused,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Healthz => "GET /healthz, same server (HTTP baseline)",
            Op::SimRelease => "challenge → attest → release, sim evidence",
            Op::SnpRefused => {
                "challenge → attest, real SNP evidence (VCEK chain cached): verify-and-appraise path, \
                 refused at binding, as expected"
            }
        }
    }
    fn key(self) -> &'static str {
        match self {
            Op::Healthz => "healthz",
            Op::SimRelease => "sim_release",
            Op::SnpRefused => "snp_verified_refused_at_binding",
        }
    }
}

/// One throughput row.
struct LoadRow {
    op: Op,
    sync: SyncMode,
    clients: usize,
    ops: usize,
    checked: usize,
    seconds: f64,
    mean: f64,
    p50: f64,
    p99: f64,
}

impl LoadRow {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
}

/// A client's fixed material: a runtime key pair and, for sim, the simulated TEE.
struct Client {
    http: reqwest::Client,
    url: String,
    kp: ServiceKeyPair,
    keys: RuntimeKeys,
    tee: Option<SimTee>,
    snp_report: Arc<Vec<u8>>,
    dek: [u8; 32],
}

/// One operation; `Ok(true)` when a released DEK was opened and compared.
async fn one(c: &Client, op: Op, check: bool) -> Result<bool> {
    if op == Op::Healthz {
        let r = c.http.get(format!("{}/healthz", c.url)).send().await?;
        ensure!(r.status() == 200, "/healthz answered {}", r.status());
        black_box(r.bytes().await?);
        return Ok(false);
    }
    let r = c
        .http
        .post(format!("{}/kbs/v1/challenge", c.url))
        .send()
        .await?;
    ensure!(r.status() == 200, "challenge answered {}", r.status());
    let ch: Challenge = r.json().await?;
    let nonce = hex::decode(&ch.nonce)?;
    let evidence = match (&c.tee, op) {
        (Some(tee), Op::SimRelease) => tee.evidence(&report_data(&nonce, &c.keys, &[]))?,
        _ => c.snp_report.as_ref().clone(),
    };
    let req = AttestRequest {
        nonce: ch.nonce,
        evidence,
        endorsements: Default::default(),
        runtime_keys: c.keys.clone(),
        key_ids: vec![KEY_ID.into()],
        models: vec![],
        sealed_job: None,
    };
    let r = c
        .http
        .post(format!("{}/kbs/v1/attest", c.url))
        .json(&req)
        .send()
        .await?;
    let status = r.status();
    if op == Op::SnpRefused {
        let body: ErrorBody = r.json().await.context("the refusal's body")?;
        ensure!(
            status == 403 && body.code == "report_data_mismatch",
            "expected 403 report_data_mismatch (verified, refused at binding), got {status} {}: {}",
            body.code,
            body.error
        );
        return Ok(false);
    }
    if status != 200 {
        let text = r.text().await.unwrap_or_default();
        bail!("attest answered {status}: {text}");
    }
    let resp: AttestResponse = r.json().await?;
    ensure!(
        resp.denied.is_empty() && resp.released.len() == 1 && resp.released[0].key_id == KEY_ID,
        "not a release of {KEY_ID}: released {:?}, denied {:?}",
        resp.released.iter().map(|k| &k.key_id).collect::<Vec<_>>(),
        resp.denied.iter().map(|d| &d.reasons).collect::<Vec<_>>()
    );
    if check {
        let dek =
            c.kp.open_sealed(
                RELEASE_INFO,
                KEY_ID.as_bytes(),
                &resp.released[0].sealed_dek,
            )
            .map_err(|e| anyhow!("the released DEK does not open: {e}"))?;
        ensure!(
            dek.as_slice() == c.dek,
            "the released DEK is not the registered one"
        );
    }
    Ok(check)
}

/// `clients` tasks repeating `op` for `seconds` after a warm-up; counts and times each.
async fn load(
    clients: &[Arc<Client>],
    op: Op,
    seconds: f64,
    check_every: usize,
) -> Result<(usize, usize, f64, Vec<f64>)> {
    let warm = Duration::from_secs_f64((seconds / 5.0).min(1.0));
    let start = Instant::now() + warm;
    let end = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let (mut n, mut checked) = (0usize, 0usize);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let check = check_every > 0 && n % check_every == 0;
                let opened = one(&c, op, check).await?;
                // Checks count during the warm-up too: on a loaded machine a short run may time
                // no checked release after it, and each check is as good as any other.
                checked += usize::from(opened);
                if t >= start {
                    times.push(t.elapsed().as_secs_f64());
                }
                n += 1;
            }
            Ok::<_, anyhow::Error>((times, checked))
        }));
    }
    let (mut times, mut checked) = (Vec::new(), 0);
    for t in tasks {
        let (t, c) = t.await??;
        times.extend(t);
        checked += c;
    }
    Ok((times.len(), checked, seconds, times))
}

/// A KBS served on 127.0.0.1 by `server_rt`, with its store in a fresh directory.
struct Served {
    url: String,
    data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Setup {
    hw_seed: String,
    sim_anchor: [u8; 32],
    vcek: Vec<u8>,
    dek: [u8; 32],
}

fn serve(
    server_rt: &tokio::runtime::Runtime,
    root: &Path,
    setup: &Setup,
    op: Op,
    sync: SyncMode,
) -> Result<Served> {
    let dir = tempfile::tempdir_in(root)?;
    let data_dir = dir.path().join("kbs");
    let kek: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&dir.path().join("kbs.kek"))?);
    let keks = Keks::new(kek);
    // The SNP fixture is refused at the binding check, before any policy is appraised.
    let policy = Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]).to_toml();
    Store::open(&data_dir, keks.clone())?.put_key(KEY_ID, &setup.dek, &policy, unix_now())?;
    let mut config = KbsConfig::new(
        data_dir.clone(),
        Endorsements {
            sim_trust_anchors: vec![setup.sim_anchor],
            snp_certs: vec![setup.vcek.clone()],
            ..Default::default()
        },
    );
    let keks_for_kbs = keks.clone();
    config.keks = Some(keks);
    if op == Op::SnpRefused {
        // A clock that moves, from inside the fixture's certificates' window.
        let base = UNIX_EPOCH + Duration::from_secs(SNP_TIME);
        let started = Instant::now();
        config.clock = Arc::new(move || base + started.elapsed());
    }
    // The store opened here, so that the bench-only sync mode is set before the KBS takes it.
    let store = Store::open(&data_dir, keks_for_kbs)?;
    store.set_synchronous(sync.store())?;
    let kbs = Kbs::open_with_store(config, Box::new(store))?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    server_rt.spawn(async move {
        if let Err(e) = kbs
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
        {
            eprintln!("bench KBS server: {e}");
        }
    });
    Ok(Served {
        url,
        data_dir,
        stop: Some(stop),
        _dir: dir,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Audit events of `kind` in a store, read through a second connection.
fn audit_count(data_dir: &Path, kind: &str) -> Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("kbs.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    Ok(
        conn.query_row("SELECT COUNT(*) FROM audit WHERE kind = ?1", [kind], |r| {
            r.get(0)
        })?,
    )
}

/// One in-process baseline row.
struct Baseline {
    name: String,
    iterations: usize,
    mean: f64,
    p50: f64,
    p99: f64,
}

fn time_each(
    name: &str,
    iterations: usize,
    mut op: impl FnMut(usize) -> Result<()>,
) -> Result<Baseline> {
    for i in 0..iterations.min(20) {
        op(i)?;
    }
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        op(i + 20)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let (mean, p50, p99) = summary(times);
    Ok(Baseline {
        name: name.into(),
        iterations,
        mean,
        p50,
        p99,
    })
}

/// The store work of one release, on one thread, with the store's own methods: the key read,
/// then the attestation's commit (nonce spent, release recorded) alone, then `batch` attestations
/// per commit (what the KBS's group commit does under load), per attestation.
fn store_baselines(
    root: &Path,
    setup: &Setup,
    sync: SyncMode,
    iterations: usize,
    batch: usize,
) -> Result<Vec<Baseline>> {
    let dir = tempfile::tempdir_in(root)?;
    let data_dir = dir.path().join("kbs");
    let kek: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&dir.path().join("kbs.kek"))?);
    let store = Store::open(&data_dir, Keks::new(kek))?;
    store.set_synchronous(sync.store())?;
    store_rows(
        Box::new(store),
        &format!("store (SQLite, synchronous={})", sync.label()),
        setup,
        iterations,
        batch,
    )
}

/// [`store_baselines`] on any store: `label` names it in each row.
fn store_rows(
    mut store: Box<dyn KeyStore>,
    label: &str,
    setup: &Setup,
    iterations: usize,
    batch: usize,
) -> Result<Vec<Baseline>> {
    let policy = Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]).to_toml();
    store.put_key_audited(
        KEY_ID,
        &setup.dek,
        &policy,
        &NewAuditEvent {
            time: unix_now(),
            kind: "key_registered",
            key_id: Some(KEY_ID),
            claims_digest: None,
            verdict: "accepted",
            measurement: None,
            detail: "",
        },
    )?;
    let now = unix_now();
    let attestation = || AttestationCommit {
        nonce: rand::random::<[u8; 32]>().to_vec(),
        expires_at: now + 60,
        releases: vec![PendingEvent {
            time: now,
            kind: "key_released",
            key_id: Some(KEY_ID.into()),
            claims_digest: Some("00".into()),
            verdict: "accepted",
            measurement: Some("5b".into()),
            detail: String::new(),
        }],
        events: vec![],
        job_runtime: None,
    };
    let commit = |store: &mut dyn KeyStore, n: usize| -> Result<()> {
        let commits: Vec<AttestationCommit> = (0..n).map(|_| attestation()).collect();
        let outcomes = store.commit_attestations(&commits, now)?;
        ensure!(
            outcomes
                .iter()
                .all(|o| *o == AttestationOutcome::Committed { withheld: vec![] }),
            "an attestation was not committed: {outcomes:?}"
        );
        Ok(())
    };
    let mut rows = Vec::new();
    rows.push(time_each(
        &format!("{label}: key read and unwrap (`get_key`), no write"),
        iterations,
        |_| {
            let k = store.get_key(KEY_ID)?.context("the key is missing")?;
            ensure!(k.dek.as_slice() == setup.dek, "the stored DEK differs");
            Ok(())
        },
    )?);
    rows.push(time_each(
        &format!(
            "{label}: one attestation committed alone (`commit_attestations`: nonce spent, \
             release recorded; one commit)"
        ),
        iterations,
        |_| commit(store.as_mut(), 1),
    )?);
    let mut group = time_each(
        &format!("{label}: {batch} attestations per commit (group commit), per attestation"),
        iterations.div_ceil(batch).max(5),
        |_| commit(store.as_mut(), batch),
    )?;
    let b = batch as f64;
    group.iterations *= batch;
    (group.mean, group.p50, group.p99) = (group.mean / b, group.p50 / b, group.p99 / b);
    rows.push(group);
    Ok(rows)
}

/// The same file system's floor under a commit: 4 KiB appended, then fdatasync; alone, then
/// with another thread spinning meanwhile. (On a virtual machine whose vCPUs are otherwise idle,
/// the wake-up after the disk's answer can cost more than the write: under load, as in the
/// loopback rows, the commits are cheaper than on an idle machine.)
fn fsync_baselines(root: &Path, iterations: usize) -> Result<Vec<Baseline>> {
    let dir = tempfile::tempdir_in(root)?;
    let mut f = std::fs::File::create(dir.path().join("fsync.bin"))?;
    let page = [0x5au8; 4096];
    let mut sync = |_: usize| -> Result<()> {
        f.write_all(&page)?;
        f.sync_data()?;
        Ok(())
    };
    let idle = time_each(
        "file system: 4 KiB write + fdatasync (the floor under one commit)",
        iterations,
        &mut sync,
    )?;
    let busy = with_spinner(|| {
        time_each(
            "file system: 4 KiB write + fdatasync, another thread spinning meanwhile",
            iterations,
            &mut sync,
        )
    })?;
    Ok(vec![idle, busy])
}

/// Runs `f` while another thread spins (keeps a vCPU awake).
fn with_spinner<T>(f: impl FnOnce() -> T) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spinner = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    });
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let _ = spinner.join();
    out
}

/// The CPU work of one release without I/O, client's and KBS's, on one thread.
fn cpu_baselines(setup: &Setup, snp_report: &[u8], iterations: usize) -> Result<Vec<Baseline>> {
    let tee = SimTee::new(
        SimHardwareKey::from_file_contents(&setup.hw_seed)?,
        MEASUREMENT,
        [0; 32],
        false,
    );
    let kp = ServiceKeyPair::generate(0);
    let keys = runtime_keys(&kp);
    let nonce = [7u8; 32];
    let rd = report_data(&nonce, &keys, &[]);
    let evidence = tee.evidence(&rd)?;
    let verifier = Verifier::new(Endorsements {
        sim_trust_anchors: vec![setup.sim_anchor],
        snp_certs: vec![setup.vcek.clone()],
        ..Default::default()
    });
    let policy = Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]).to_toml();
    let sealed = channel::seal_to(
        &keys.hpke_public_key,
        RELEASE_INFO,
        KEY_ID.as_bytes(),
        &setup.dek,
    )?;
    let snp_now = UNIX_EPOCH + Duration::from_secs(SNP_TIME);
    verifier.verify(snp_report, snp_now)?;
    Ok(vec![
        time_each(
            "client: sim evidence made (report_data + Ed25519 signature)",
            iterations,
            |_| {
                black_box(tee.evidence(&report_data(&nonce, &keys, &[]))?);
                Ok(())
            },
        )?,
        time_each(
            "KBS: sim evidence verified + policy parsed and appraised + DEK sealed (HPKE)",
            iterations,
            |_| {
                let claims = verifier.verify(&evidence, SystemTime::now())?;
                ensure!(claims.report_data == rd, "binding");
                let verdict = appraise(&claims, &Policy::from_toml(&policy)?);
                ensure!(verdict.failures.is_empty(), "appraisal failed");
                black_box(claims.digest());
                black_box(channel::seal_to(
                    &keys.hpke_public_key,
                    RELEASE_INFO,
                    KEY_ID.as_bytes(),
                    &setup.dek,
                )?);
                Ok(())
            },
        )?,
        time_each("client: released DEK opened (HPKE)", iterations, |_| {
            black_box(kp.open_sealed(RELEASE_INFO, KEY_ID.as_bytes(), &sealed)?);
            Ok(())
        })?,
        time_each(
            "KBS: SNP report verified, VCEK chain cached (`Verifier`)",
            iterations,
            |_| {
                black_box(verifier.verify(snp_report, snp_now)?);
                Ok(())
            },
        )?,
    ])
}

fn runtime_keys(kp: &ServiceKeyPair) -> RuntimeKeys {
    RuntimeKeys {
        hpke_public_key: kp.public_key(),
        hpke_key_id: kp.key_id(),
        signing_public_key: [9; 32],
    }
}

struct Rotation {
    keys: usize,
    batch: usize,
    fill_s: f64,
    open_s: f64,
    rewrap_s: f64,
    rewrapped: u64,
    open_after_s: f64,
}

/// A store of `keys` wrapped keys under one file KEK; its open time; its rotation to another.
fn rotation(root: &Path, keys: usize, batch: usize) -> Result<Rotation> {
    let dir = tempfile::tempdir_in(root)?;
    let data = dir.path().join("kbs");
    let old: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&dir.path().join("old.kek"))?);
    let new: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&dir.path().join("new.kek"))?);
    let dek = |i: usize| {
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&(i as u64).to_le_bytes());
        d[31] = 0xEE;
        d
    };
    let t = Instant::now();
    {
        let store = Store::open(&data, Keks::new(old.clone()))?;
        store.init_identity_seed(&[0x61; 32], 1)?;
        store.put_key("k0", &dek(0), "p", 1)?;
    }
    {
        // The rest in one transaction, wrapped as the store wraps them.
        let mut conn = rusqlite::Connection::open(data.join("kbs.sqlite3"))?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, kind, kek_id)
                 VALUES (?1, ?2, 'p', 1, 1, 'admin', ?3)",
            )?;
            for i in 1..keys {
                let id = format!("k{i}");
                let binding = dek_binding(&id, "admin", None, "p");
                let wrapped = old.wrap(&wrap_aad(Slot::Dek, &binding), &dek(i))?;
                insert.execute(rusqlite::params![id, wrapped, old.id()])?;
            }
        }
        tx.commit()?;
    }
    let fill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let store = Store::open(&data, Keks::new(old.clone()))?;
    let open_s = t.elapsed().as_secs_f64();
    drop(store);
    let mut store = Store::open(
        &data,
        Keks {
            current: new.clone(),
            previous: Some(old),
        },
    )?;
    let t = Instant::now();
    let rewrapped = store.rewrap_all(batch, |_| {})?;
    let rewrap_s = t.elapsed().as_secs_f64();
    drop(store);
    let t = Instant::now();
    let store = Store::open(&data, Keks::new(new))?;
    let open_after_s = t.elapsed().as_secs_f64();
    ensure!(
        rewrapped == keys as u64 + 1,
        "re-wrapped {rewrapped} secrets, expected {} keys and the identity seed",
        keys
    );
    for i in [0, keys / 2, keys - 1] {
        let k = store
            .get_key(&format!("k{i}"))?
            .with_context(|| format!("k{i} missing after the rotation"))?;
        ensure!(
            k.dek.as_slice() == dek(i),
            "k{i} differs after the rotation"
        );
    }
    Ok(Rotation {
        keys,
        batch,
        fill_s,
        open_s,
        rewrap_s,
        rewrapped,
        open_after_s,
    })
}

pub fn run(mut a: KbsArgs) -> Result<()> {
    if a.quick {
        a.clients = vec![2];
        a.seconds = 0.3;
        a.rotate_keys = a.rotate_keys.min(1_000);
        a.iterations = 50;
    }
    ensure!(
        !a.clients.is_empty() && a.clients.iter().all(|&c| c > 0),
        "--clients: at least one, each > 0"
    );
    ensure!(!a.sync.is_empty(), "--sync: at least one of full, normal");
    ensure!(a.seconds > 0.0, "--seconds must be > 0");
    ensure!(a.iterations > 0, "--iterations must be > 0");
    let root = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let snp_report = Arc::new(
        std::fs::read(a.fixtures.join("snp/trustee_test-report.bin"))
            .with_context(|| format!("reading the SNP report under {}", a.fixtures.display()))?,
    );
    let vcek = std::fs::read(a.fixtures.join("snp/trustee_test-vcek.der"))
        .with_context(|| format!("reading the VCEK under {}", a.fixtures.display()))?;
    let hw = SimHardwareKey::generate();
    let setup = Setup {
        hw_seed: hw.to_file_contents().to_string(),
        sim_anchor: hw.public_key(),
        vcek,
        dek: rand::random(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The KBS on a runtime of its own (as `kbs serve` runs, one worker per core); the clients on
    // another. Both share the machine's cores: the clients' work (sim evidence, HPKE opens,
    // JSON) is part of what the figures pay for, shown below as a baseline.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-kbs")
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.min(2))
        .enable_all()
        .thread_name("bench-client")
        .build()?;

    let mut loads = Vec::new();
    let mut audit_checks = Vec::new();
    for &sync in &a.sync {
        for &clients in &a.clients {
            for op in [Op::Healthz, Op::SimRelease, Op::SnpRefused] {
                // A fresh KBS (and store) per row: rows do not inherit each other's tables.
                let served = serve(&server_rt, &root, &setup, op, sync)?;
                let cs = make_clients(clients, &[served.url.as_str()], &setup, &snp_report)?;
                let (ops, checked, seconds, times) =
                    client_rt.block_on(load(&cs, op, a.seconds, a.check_every))?;
                drop(cs);
                // Let the server finish writing before its store is read.
                std::thread::sleep(Duration::from_millis(50));
                if op == Op::SimRelease {
                    ensure!(ops > 0, "no release was measured");
                    ensure!(
                        a.check_every == 0 || checked > 0,
                        "no released DEK was opened"
                    );
                    let released = audit_count(&served.data_dir, "key_released")?;
                    // Warm-up releases are logged too, not counted: at least as many events.
                    ensure!(
                        released >= ops as i64,
                        "the audit log holds {released} releases, fewer than the {ops} counted"
                    );
                    audit_checks.push((clients, sync, ops, released));
                }
                if op == Op::SnpRefused {
                    let refused = audit_count(&served.data_dir, "attestation_failed")?;
                    ensure!(
                        refused >= ops as i64,
                        "the audit log holds {refused} refusals, fewer than the {ops} counted"
                    );
                }
                drop(served);
                let (mean, p50, p99) = summary(times);
                loads.push(LoadRow {
                    op,
                    sync,
                    clients,
                    ops,
                    checked,
                    seconds,
                    mean,
                    p50,
                    p99,
                });
            }
        }
    }
    let mut pg_rows = Vec::new();
    let mut pg_baselines = Vec::new();
    if a.postgres {
        let cluster = cordon_kbs::testing::PgCluster::start_durable();
        let kek: Arc<dyn Kek> = Arc::new(MemoryKek::new(rand::random()));
        pg_baselines = store_rows(
            Box::new(PgStore::connect(&cluster.database(), Keks::new(kek))?),
            "store (PostgreSQL, one connection)",
            &setup,
            a.iterations,
            32,
        )?;
        for &clients in &a.clients {
            for replicas in [1usize, 2] {
                let db = cluster.database();
                let (served, keks) = serve_pg(&server_rt, &root, &setup, &db, replicas)?;
                // Clients spread over the replicas, as a load balancer would.
                let urls: Vec<&str> = served.iter().map(|s| s.url.as_str()).collect();
                let cs = make_clients(clients, &urls, &setup, &snp_report)?;
                let (ops, checked, seconds, times) =
                    client_rt.block_on(load(&cs, Op::SimRelease, a.seconds, a.check_every))?;
                drop(cs);
                std::thread::sleep(Duration::from_millis(50));
                ensure!(ops > 0, "no release was measured on PostgreSQL");
                let released = PgStore::connect(&db, keks)?
                    .audit_events()?
                    .iter()
                    .filter(|e| e.kind == "key_released")
                    .count();
                ensure!(
                    released >= ops,
                    "the PostgreSQL audit log holds {released} releases, fewer than the {ops} counted"
                );
                drop(served);
                let (_, p50, p99) = summary(times);
                pg_rows.push(PgRow {
                    replicas,
                    clients,
                    ops,
                    checked,
                    seconds,
                    p50,
                    p99,
                });
            }
        }
    }
    drop(client_rt);
    drop(server_rt);

    let mut baselines = Vec::new();
    baselines.extend(fsync_baselines(&root, a.iterations)?);
    for &sync in &a.sync {
        baselines.extend(store_baselines(&root, &setup, sync, a.iterations, 32)?);
        let mut spun = with_spinner(|| store_baselines(&root, &setup, sync, a.iterations, 32))?;
        if spun.len() > 1 {
            let mut alone = spun.swap_remove(1);
            alone.name = format!("{}, another thread spinning meanwhile", alone.name);
            baselines.push(alone);
        }
    }
    baselines.append(&mut pg_baselines);
    baselines.extend(cpu_baselines(&setup, &snp_report, a.iterations)?);
    let rot = match a.rotate_keys {
        0 => None,
        n => Some(rotation(&root, n, a.rotate_batch)?),
    };

    // The table.
    let load_avg = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    println!(
        "cordon bench kbs: {cores} cores, load average {load_avg} at the end; KBS in this process \
         (axum on 127.0.0.1, its own tokio runtime), clients on a second runtime ({} workers); \
         SQLite (WAL) under {}; file KEK; {} s per row after warm-up",
        cores.min(2),
        root.display(),
        a.seconds
    );
    println!();
    println!("| path | synchronous | clients | counted | per s | p50 | p99 | vs /healthz (same clients) |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &loads {
        let base = loads
            .iter()
            .find(|b| b.op == Op::Healthz && b.clients == r.clients && b.sync == r.sync)
            .map_or(f64::NAN, LoadRow::rate);
        let counted = match r.op {
            Op::SimRelease => format!(
                "{} releases ({} DEKs opened and compared)",
                r.ops, r.checked
            ),
            Op::SnpRefused => format!("{} refusals at binding", r.ops),
            Op::Healthz => format!("{} requests", r.ops),
        };
        println!(
            "| {} | {} | {} | {counted} | {:.0} | {} | {} | {:.2}x |",
            r.op.label(),
            r.sync.label(),
            r.clients,
            r.rate(),
            us(r.p50),
            us(r.p99),
            r.rate() / base
        );
    }
    for (clients, sync, ops, released) in &audit_checks {
        println!(
            "audit check ({clients} clients, {}): {released} key_released events for {ops} counted \
             releases (the rest: warm-up)",
            sync.label()
        );
    }
    println!();
    println!("Baselines, one thread, in process:");
    println!();
    println!("| operation | iterations | mean | p50 | p99 | ceiling (1/mean) per s |");
    println!("|---|---|---|---|---|---|");
    for b in &baselines {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} |",
            b.name,
            b.iterations,
            us(b.mean),
            us(b.p50),
            us(b.p99),
            1.0 / b.mean
        );
    }
    if let Some(r) = &rot {
        println!();
        println!(
            "KEK rotation, {} keys (file KEK → file KEK, {} rows per transaction): rewrap_all {:.2} s \
             ({:.0} keys/s, {} secrets with the identity seed); Store::open of the {}-key store {:.3} s \
             before, {:.3} s after; filling it (one transaction) took {:.2} s",
            r.keys,
            r.batch,
            r.rewrap_s,
            r.rewrapped as f64 / r.rewrap_s,
            r.rewrapped,
            r.keys,
            r.open_s,
            r.open_after_s,
            r.fill_s
        );
    }
    let goal = loads
        .iter()
        .filter(|r| r.op == Op::SimRelease && r.sync == SyncMode::Full)
        .map(LoadRow::rate)
        .fold(f64::NAN, f64::max);
    if !goal.is_nan() {
        println!(
            "goal: at least 2,000 releases/s with sim evidence on SQLite (synchronous=FULL): best \
             {goal:.0}/s: {}",
            if goal >= 2000.0 { "met" } else { "NOT met" }
        );
    }

    if !pg_rows.is_empty() {
        // Each a ratio against the SQLite (FULL) row with as many clients, measured in this run.
        println!("\nSim releases on PostgreSQL (synchronous_commit on), replicas on one database:");
        println!(
            "{:>8} {:>8} {:>12} {:>10} {:>10} {:>16}",
            "replicas", "clients", "releases/s", "p50", "p99", "vs SQLite FULL"
        );
        for r in &pg_rows {
            let rate = r.ops as f64 / r.seconds;
            let sqlite = loads
                .iter()
                .find(|l| {
                    l.op == Op::SimRelease && l.sync == SyncMode::Full && l.clients == r.clients
                })
                .map(|l| l.rate());
            println!(
                "{:>8} {:>8} {:>12.0} {:>10} {:>10} {:>16}",
                r.replicas,
                r.clients,
                rate,
                us(r.p50),
                us(r.p99),
                sqlite
                    .map(|s| format!("{:.2}x", rate / s))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "postgres": pg_rows.iter().map(|r| json!({
                "replicas": r.replicas,
                "clients": r.clients,
                "count": r.ops,
                "dek_checked": r.checked,
                "per_second": r.ops as f64 / r.seconds,
                "p50_s": r.p50,
                "p99_s": r.p99,
            })).collect::<Vec<Value>>(),
            "cores": cores,
            "load_average_at_end": load_avg,
            "seconds_per_row": a.seconds,
            "store_dir": root.display().to_string(),
            "server": "in process: axum on 127.0.0.1, own tokio runtime",
            "loads": loads.iter().map(|r| json!({
                "path": r.op.key(),
                "label": r.op.label(),
                "synchronous": match r.sync { SyncMode::Full => "full", SyncMode::Normal => "normal" },
                "clients": r.clients,
                "count": r.ops,
                "dek_checked": r.checked,
                "per_second": r.rate(),
                "mean_s": r.mean,
                "p50_s": r.p50,
                "p99_s": r.p99,
            })).collect::<Vec<Value>>(),
            "baselines": baselines.iter().map(|b| json!({
                "name": b.name,
                "iterations": b.iterations,
                "mean_s": b.mean,
                "p50_s": b.p50,
                "p99_s": b.p99,
            })).collect::<Vec<Value>>(),
            "rotation": rot.as_ref().map(|r| json!({
                "keys": r.keys,
                "batch": r.batch,
                "rewrapped": r.rewrapped,
                "rewrap_s": r.rewrap_s,
                "keys_per_second": r.rewrapped as f64 / r.rewrap_s,
                "open_s": r.open_s,
                "open_after_s": r.open_after_s,
                "fill_s": r.fill_s,
            })),
            "goal_sim_releases_per_second": 2000,
            "best_sim_releases_per_second_full": goal,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
