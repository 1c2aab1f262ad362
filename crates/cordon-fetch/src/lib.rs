//! Optional fetcher of attestation endorsements, with an on-disk cache.
//!
//! Verification (`cordon-attest`) never does I/O: it takes VCEKs, CRLs and DCAP collateral as
//! input. This crate is the separate piece that gets them from the vendors, for operators who want
//! them fetched: it is never used by verification, by tests other than its own, or by default (the
//! only caller is `cordon attest fetch`).
//!
//! - **AMD KDS** (SEV-SNP, VCEK-signed reports): `GET {kds}/vcek/v1/{Milan|Genoa|Turin}/{hwid}?…SPL=…`
//!   with the report's REPORTED_TCB, and `GET {kds}/vcek/v1/{product}/crl`; written as `vcek.der`
//!   and `crl.der`. Turin's hwID is the first 8 bytes of CHIP_ID and its query adds `fmcSPL`.
//! - **Intel PCS v4 or a PCCS** (TDX and SGX quotes): TCB info, QE identity, PCK CRL (for the CA
//!   that issued the quote's PCK certificate) and the Intel SGX Root CA CRL, with their issuer
//!   chains from the response headers; written as the directory of raw PCS responses that
//!   [`cordon_attest::dcap::DcapCollateral::from_dir`] reads, and loaded with it before returning.
//!
//! Base URLs, the root CA CRL URL, the clock, timeouts, the response size limit, the cache and its
//! maximum age are all in [`Options`]. Every response is checked for shape only (a certificate
//! parses, a CRL parses, issuer chains are PEM certificates): whether any of it is *trusted* is for
//! verification to decide, at its own time.

mod cache;
mod http;
mod kds;
mod pcs;

use cordon_attest::snp::Product;
use cordon_attest::{decode_evidence, detect, EvidenceKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use thiserror::Error;

pub use kds::vcek_path;
pub use pcs::{parse_issuer_chain, percent_decode, INTEL_ROOT_CA_CRL_URL};

/// AMD's Key Distribution Service.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";
/// Intel's Provisioning Certification Service.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";
/// Default limit on one response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The time source, injectable for tests (cache ages are judged against it).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Where and how to fetch. `Options::default()` talks to AMD KDS and Intel PCS, with no cache.
#[derive(Clone)]
pub struct Options {
    /// AMD KDS base URL (default [`AMD_KDS_URL`]).
    pub kds_url: String,
    /// Intel PCS or PCCS base URL (default [`INTEL_PCS_URL`]); a trailing
    /// `/sgx/certification/v4` or `/tdx/certification/v4` is ignored.
    pub pcs_url: String,
    /// Where the Intel SGX Root CA CRL comes from. `None`: [`INTEL_ROOT_CA_CRL_URL`] (the CRL
    /// distribution point of the root certificate) when `pcs_url` is Intel's PCS, else the PCCS
    /// endpoint `{pcs_url}/sgx/certification/v4/rootcacrl`.
    pub root_ca_crl_url: Option<String>,
    /// The SNP product line, for reports that do not name it (version 2 has no CPUID fields), or
    /// to check the one they name.
    pub product: Option<Product>,
    /// On-disk cache directory; `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Cached CRLs, TCB info and QE identities older than this are fetched again (they change).
    /// VCEKs are reused whatever their age: a VCEK for a given chip and TCB never changes.
    pub max_age: Duration,
    /// Read only the cache, never the network. Cached entries are used whatever their age:
    /// verification judges validity windows at its own time.
    pub offline: bool,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// The clock.
    pub clock: Clock,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            kds_url: AMD_KDS_URL.into(),
            pcs_url: INTEL_PCS_URL.into(),
            root_ca_crl_url: None,
            product: None,
            cache_dir: None,
            max_age: Duration::from_secs(24 * 3600),
            offline: false,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            clock: Arc::new(SystemTime::now),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("kds_url", &self.kds_url)
            .field("pcs_url", &self.pcs_url)
            .field("root_ca_crl_url", &self.root_ca_crl_url)
            .field("product", &self.product)
            .field("cache_dir", &self.cache_dir)
            .field("max_age", &self.max_age)
            .field("offline", &self.offline)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// Why fetching failed. Network errors name the URL; HTTP errors also the status.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("evidence: {0}")]
    Evidence(String),
    #[error(
        "the SNP report's chip id is masked (MASK_CHIP_KEY = 1): AMD KDS cannot be asked for its \
         VCEK; get the VCEK from the host (extended report certificates) and pass it with --cert"
    )]
    MaskedChipId,
    #[error(
        "the SNP report is signed by a VLEK: AMD KDS serves VLEKs only to the cloud provider, with \
         its credentials, so they cannot be fetched here; get the VLEK from the host (extended \
         report certificates) and pass it with --cert"
    )]
    VlekNotFetchable,
    #[error(
        "the SNP report does not name its product line (version {version} has no CPUID fields): \
         give it (--product Milan|Genoa|Turin)"
    )]
    UnknownProduct { version: u32 },
    #[error("product line: the report's CPUID says {report}, the option says {given}")]
    ProductMismatch {
        report: &'static str,
        given: &'static str,
    },
    #[error("GET {url}: HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("GET {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("GET {url}: response larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: usize },
    #[error("GET {url}: no {header} header")]
    MissingHeader { url: String, header: &'static str },
    #[error("GET {url}: {header} header: {reason}")]
    BadHeader {
        url: String,
        header: &'static str,
        reason: String,
    },
    #[error("GET {url}: body: {reason}")]
    BadBody { url: String, reason: String },
    #[error("offline: {url} is not in the cache{}", .cache.as_ref().map(|c| format!(" ({})", c.display())).unwrap_or_default())]
    NotCached { url: String, cache: Option<PathBuf> },
    #[error("offline: the cached copy of {url} is unusable: {reason}")]
    BadCacheEntry { url: String, reason: String },
    #[error("offline mode needs a cache directory")]
    OfflineWithoutCache,
    #[error("cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("writing {path}: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error("the fetched collateral in {path} does not load: {reason}")]
    Collateral { path: PathBuf, reason: String },
    #[error("HTTP client: {0}")]
    Client(String),
}

/// One request and where its answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub url: String,
    /// Answered from the cache, without the network.
    pub from_cache: bool,
}

/// What was fetched for a piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endorsement {
    /// An SNP report: its VCEK and the product line's CRL.
    Snp {
        product: Product,
        vcek: PathBuf,
        crl: PathBuf,
    },
    /// A DCAP quote: a directory of raw PCS responses.
    Dcap {
        /// `tdx` or `sgx`.
        tee: &'static str,
        /// FMSPC, upper-case hex.
        fmspc: String,
        /// The PCK certificate's CA: `processor` or `platform`.
        ca: &'static str,
        dir: PathBuf,
    },
}

/// The result of [`Fetcher::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub endorsement: Endorsement,
    /// Every request, in order.
    pub sources: Vec<Source>,
}

impl Fetched {
    /// The `cordon attest verify` arguments that use what was fetched (after the evidence path).
    pub fn verify_args(&self) -> Vec<String> {
        match &self.endorsement {
            Endorsement::Snp { vcek, crl, .. } => vec![
                "--cert".into(),
                vcek.display().to_string(),
                "--crl".into(),
                crl.display().to_string(),
            ],
            Endorsement::Dcap { dir, .. } => {
                vec!["--collateral".into(), dir.display().to_string()]
            }
        }
    }
}

/// Fetches endorsements for evidence; see the crate documentation.
pub struct Fetcher {
    opts: Options,
    http: http::Http,
}

impl Fetcher {
    pub fn new(opts: Options) -> Result<Fetcher, FetchError> {
        if opts.offline && opts.cache_dir.is_none() {
            return Err(FetchError::OfflineWithoutCache);
        }
        let http = http::Http::new(&opts)?;
        Ok(Fetcher { opts, http })
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Detects the evidence (raw or hex text, as `cordon attest verify` reads it) and fetches its
    /// endorsements into `out` (created if missing).
    pub async fn fetch(&self, evidence: &[u8], out: &Path) -> Result<Fetched, FetchError> {
        let bytes = decode_evidence(evidence);
        match detect(&bytes).map_err(|e| FetchError::Evidence(e.to_string()))? {
            EvidenceKind::SnpReport => self.fetch_snp(&bytes, out).await,
            EvidenceKind::DcapQuote => self.fetch_dcap(&bytes, out).await,
            EvidenceKind::Sim => Err(FetchError::Evidence(
                "Cordon sim evidence has no vendor endorsements to fetch (its trust anchors are \
                 given in the policy)"
                    .into(),
            )),
        }
    }

    /// An SNP report's VCEK and its product line's CRL, as `out/vcek.der` and `out/crl.der`.
    pub async fn fetch_snp(&self, report: &[u8], out: &Path) -> Result<Fetched, FetchError> {
        let mut sources = Vec::new();
        let endorsement = kds::fetch(self, report, out, &mut sources).await?;
        Ok(Fetched {
            endorsement,
            sources,
        })
    }

    /// A DCAP quote's collateral, as the directory of raw PCS responses `out`.
    pub async fn fetch_dcap(&self, quote: &[u8], out: &Path) -> Result<Fetched, FetchError> {
        let mut sources = Vec::new();
        let endorsement = pcs::fetch(self, quote, out, &mut sources).await?;
        Ok(Fetched {
            endorsement,
            sources,
        })
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes one output file, naming it in the error.
pub(crate) fn write_output(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, FetchError> {
    let path = dir.join(name);
    write_atomic(&path, bytes).map_err(|e| FetchError::Output {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(path)
}

pub(crate) fn create_out_dir(dir: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(dir).map_err(|e| FetchError::Output {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Base URL without trailing slashes.
pub(crate) fn trim_base(url: &str) -> &str {
    url.trim_end_matches('/')
}
