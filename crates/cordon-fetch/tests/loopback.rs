//! The fetcher against a loopback server that serves the fixtures in testdata/attestation (see
//! its README for provenance and validity windows), the way AMD KDS and Intel PCS/PCCS serve them.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cordon_attest::snp::Product;
use cordon_attest::{Endorsements, Platform};
use cordon_fetch::{Endorsement, FetchError, Fetched, Fetcher, Options};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/attestation");

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(TESTDATA).join(path)).unwrap()
}

/// An RFC 3339 time.
fn at(text: &str) -> SystemTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .into()
}

/// Inside the trustee VCEK's validity (2023-01-24 .. 2030-01-24).
const SNP_TIME: &str = "2025-01-01T12:00:00Z";
/// Inside the TDX (2025-06-19T10:32:27Z .. 2025-07-19T10:00:35Z) and SGX (2025-06-19T10:56:11Z ..
/// 2025-07-19T10:01:18Z) collateral windows.
const DCAP_TIME: &str = "2025-07-01T00:00:00Z";

// ---------------------------------------------------------------------------------------------
// The loopback server: canned responses by path and query, and a log of every request.

#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Canned {
    fn ok(body: Vec<u8>) -> Canned {
        Canned {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }

    fn with_header(mut self, name: &str, value: String) -> Canned {
        self.headers.push((name.into(), value));
        self
    }
}

#[derive(Default)]
struct Server {
    routes: Mutex<HashMap<String, Canned>>,
    log: Mutex<Vec<String>>,
}

impl Server {
    fn route(&self, path_and_query: &str, canned: Canned) {
        self.routes
            .lock()
            .unwrap()
            .insert(path_and_query.into(), canned);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

async fn answer(State(server): State<Arc<Server>>, uri: Uri) -> Response {
    let key = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    server.log.lock().unwrap().push(key.clone());
    let Some(canned) = server.routes.lock().unwrap().get(&key).cloned() else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut response = (
        StatusCode::from_u16(canned.status).unwrap(),
        canned.body.clone(),
    )
        .into_response();
    for (name, value) in canned.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

/// Starts a server; returns it and its base URL.
async fn serve() -> (Arc<Server>, String) {
    let server = Arc::new(Server::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (server, base)
}

/// A settable clock.
fn clock(start: SystemTime) -> (Arc<Mutex<SystemTime>>, cordon_fetch::Clock) {
    let now = Arc::new(Mutex::new(start));
    let read = now.clone();
    (now, Arc::new(move || *read.lock().unwrap()))
}

fn options(base: &str, cache: Option<&Path>) -> Options {
    Options {
        kds_url: base.into(),
        pcs_url: base.into(),
        cache_dir: cache.map(Path::to_path_buf),
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

// ---------------------------------------------------------------------------------------------
// AMD KDS

/// The trustee report: version 2 (no CPUID, so Milan is given), unmasked chip id, VCEK-signed.
const SNP_REPORT: &str = "snp/trustee_test-report.bin";
const SNP_VCEK: &str = "snp/trustee_test-vcek.der";

/// The VCEK request for the trustee report, built here from the SNP ABI offsets (CHIP_ID at 0x1A0,
/// REPORTED_TCB at 0x180: Milan's BOOT_LOADER byte 0, TEE byte 1, SNP byte 6, MICROCODE byte 7).
fn expected_vcek_path(report: &[u8]) -> String {
    let tcb = &report[0x180..0x188];
    format!(
        "/vcek/v1/Milan/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        hex::encode(&report[0x1A0..0x1E0]),
        tcb[0],
        tcb[1],
        tcb[6],
        tcb[7]
    )
}

/// AMD's CRLs cannot be re-signed here and none is among the fixtures, so the KDS CRL endpoint
/// serves a DER CRL of the right shape (Intel's root CA CRL); the test checks it is passed through.
fn stand_in_crl() -> Vec<u8> {
    let bundle: serde_json::Value =
        serde_json::from_slice(&fixture("tdx/tdx_quote_collateral.json")).unwrap();
    hex::decode(bundle["root_ca_crl"].as_str().unwrap()).unwrap()
}

fn kds_routes(server: &Server, report: &[u8]) {
    server.route(&expected_vcek_path(report), Canned::ok(fixture(SNP_VCEK)));
    server.route("/vcek/v1/Milan/crl", Canned::ok(stand_in_crl()));
}

fn snp_paths(fetched: &Fetched) -> (std::path::PathBuf, std::path::PathBuf) {
    match &fetched.endorsement {
        Endorsement::Snp { product, vcek, crl } => {
            assert_eq!(*product, Product::Milan);
            (vcek.clone(), crl.clone())
        }
        other => panic!("expected SNP endorsements, got {other:?}"),
    }
}

#[tokio::test]
async fn snp_vcek_is_fetched_verifies_and_is_cached() {
    let (server, base) = serve().await;
    let report = fixture(SNP_REPORT);
    kds_routes(&server, &report);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (now, clock) = clock(at(SNP_TIME));
    let opts = Options {
        product: Some(Product::Milan),
        clock,
        ..options(&base, Some(cache.path()))
    };
    let fetcher = Fetcher::new(opts.clone()).unwrap();

    let fetched = fetcher.fetch(&report, out.path()).await.unwrap();
    let vcek_path = expected_vcek_path(&report);
    assert_eq!(server.log(), [vcek_path.as_str(), "/vcek/v1/Milan/crl"]);
    assert!(fetched.sources.iter().all(|s| !s.from_cache));
    assert_eq!(fetched.sources[0].url, format!("{base}{vcek_path}"));
    let (vcek, crl) = snp_paths(&fetched);
    assert_eq!(vcek, out.path().join("vcek.der"));
    assert_eq!(std::fs::read(&vcek).unwrap(), fixture(SNP_VCEK));
    assert_eq!(std::fs::read(&crl).unwrap(), stand_in_crl());
    assert_eq!(
        fetched.verify_args(),
        [
            "--cert".to_string(),
            vcek.display().to_string(),
            "--crl".into(),
            crl.display().to_string()
        ]
    );

    // The fetched VCEK verifies the report (what `cordon attest verify --cert` does).
    let endorsements = Endorsements {
        snp_certs: vec![std::fs::read(&vcek).unwrap()],
        ..Endorsements::default()
    };
    let claims = cordon_attest::verify(&report, &endorsements, at(SNP_TIME)).unwrap();
    assert_eq!(claims.platform, Platform::Snp);
    assert_eq!(claims.platform_id.as_deref(), Some(&report[0x1A0..0x1E0]));
    // The stand-in CRL reaches verification, which finds it is not AMD's.
    let with_crl = Endorsements {
        snp_crls: vec![std::fs::read(&crl).unwrap()],
        ..endorsements
    };
    let err = cordon_attest::verify(&report, &with_crl, at(SNP_TIME)).unwrap_err();
    assert!(err.to_string().contains("no CRL"), "{err}");

    // Second fetch: from the cache, no request.
    let again = fetcher.fetch(&report, out.path()).await.unwrap();
    assert_eq!(server.log().len(), 2);
    assert!(again.sources.iter().all(|s| s.from_cache), "{again:?}");

    // A day and a bit later the CRL is fetched again; the VCEK never expires from the cache.
    *now.lock().unwrap() += opts.max_age + Duration::from_secs(1);
    let later = fetcher.fetch(&report, out.path()).await.unwrap();
    assert_eq!(server.log().len(), 3);
    assert_eq!(server.log()[2], "/vcek/v1/Milan/crl");
    assert!(later.sources[0].from_cache && !later.sources[1].from_cache);

    // Offline, with the cache filled: no request, whatever the age.
    *now.lock().unwrap() += Duration::from_secs(365 * 86_400);
    let offline = Fetcher::new(Options {
        offline: true,
        ..opts
    })
    .unwrap();
    let fetched = offline.fetch(&report, out.path()).await.unwrap();
    assert!(fetched.sources.iter().all(|s| s.from_cache));
    assert_eq!(server.log().len(), 3);
}

#[tokio::test]
async fn snp_reports_kds_cannot_serve_are_refused_before_any_request() {
    let (server, base) = serve().await;
    let report = fixture(SNP_REPORT);
    let out = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(options(&base, None)).unwrap();

    // Version 2 has no CPUID: the product line must be given.
    let err = fetcher.fetch(&report, out.path()).await.unwrap_err();
    assert!(
        matches!(err, FetchError::UnknownProduct { version: 2 }),
        "{err}"
    );
    assert!(err.to_string().contains("--product"), "{err}");

    let milan = Fetcher::new(Options {
        product: Some(Product::Milan),
        ..options(&base, None)
    })
    .unwrap();
    // MASK_CHIP_KEY (bit 1 of the flags at 0x48).
    let mut masked = report.clone();
    masked[0x48] |= 0x2;
    let err = milan.fetch(&masked, out.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::MaskedChipId), "{err}");
    assert!(err.to_string().contains("masked"), "{err}");

    // VLEK-signed.
    let vlek = fixture("snp/trustee_test-vlek-report.bin");
    let err = milan.fetch(&vlek, out.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::VlekNotFetchable), "{err}");
    assert!(err.to_string().contains("VLEK"), "{err}");

    // The VLEK report is version 3 and names Milan in CPUID; asking for Genoa is a contradiction.
    let genoa = Fetcher::new(Options {
        product: Some(Product::Genoa),
        ..options(&base, None)
    })
    .unwrap();
    let mut vcek_signed_v3 = vlek.clone();
    vcek_signed_v3[0x48] &= !(0x7 << 2);
    let err = genoa.fetch(&vcek_signed_v3, out.path()).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::ProductMismatch {
                report: "Milan",
                given: "Genoa"
            }
        ),
        "{err}"
    );

    let err = milan.fetch(b"not evidence", out.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::Evidence(_)), "{err}");
    assert!(server.log().is_empty(), "{:?}", server.log());
}

#[test]
fn turin_vcek_path_uses_eight_bytes_of_chip_id_and_fmc() {
    let mut chip_id = [0u8; 64];
    for (i, b) in chip_id.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    let turin = cordon_attest::snp::TcbVersion::decode(0x0900_0000_0403_0201, Product::Turin);
    assert_eq!(
        cordon_fetch::vcek_path(Product::Turin, &chip_id, &turin),
        "/vcek/v1/Turin/0102030405060708?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=9"
    );
    let genoa = cordon_attest::snp::TcbVersion::decode(0x0917_0000_0000_0803, Product::Genoa);
    assert_eq!(
        cordon_fetch::vcek_path(Product::Genoa, &chip_id, &genoa),
        format!(
            "/vcek/v1/Genoa/{}?blSPL=3&teeSPL=8&snpSPL=23&ucodeSPL=9",
            hex::encode(chip_id)
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Intel PCS / PCCS

/// Percent-encodes everything but unreserved characters, as Intel PCS encodes its chain headers.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Dcap {
    quote: Vec<u8>,
    bundle: serde_json::Value,
    tee: &'static str,
    fmspc: &'static str,
    ca: &'static str,
}

fn tdx() -> Dcap {
    Dcap {
        quote: fixture("tdx/tdx_quote"),
        bundle: serde_json::from_slice(&fixture("tdx/tdx_quote_collateral.json")).unwrap(),
        tee: "tdx",
        fmspc: "B0C06F000000",
        ca: "platform",
    }
}

fn sgx() -> Dcap {
    Dcap {
        quote: fixture("sgx/sgx_quote"),
        bundle: serde_json::from_slice(&fixture("sgx/sgx_quote_collateral.json")).unwrap(),
        tee: "sgx",
        fmspc: "00A067110000",
        ca: "processor",
    }
}

impl Dcap {
    fn text(&self, field: &str) -> String {
        self.bundle[field].as_str().unwrap().to_string()
    }

    fn paths(&self) -> [String; 4] {
        let tee = self.tee;
        [
            format!("/{tee}/certification/v4/tcb?fmspc={}", self.fmspc),
            format!("/{tee}/certification/v4/qe/identity"),
            format!("/sgx/certification/v4/pckcrl?ca={}&encoding=der", self.ca),
            "/sgx/certification/v4/rootcacrl".into(),
        ]
    }

    /// The bundle split back into the raw responses PCS (and, for the root CA CRL, a PCCS: hex
    /// text) would send, headers included.
    fn routes(&self, server: &Server) {
        let [tcb, qe, pck_crl, root] = self.paths();
        server.route(
            &tcb,
            Canned::ok(
                format!(
                    r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                    self.text("tcb_info"),
                    self.text("tcb_info_signature")
                )
                .into_bytes(),
            )
            .with_header(
                "TCB-Info-Issuer-Chain",
                percent_encode(&self.text("tcb_info_issuer_chain")),
            ),
        );
        server.route(
            &qe,
            Canned::ok(
                format!(
                    r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                    self.text("qe_identity"),
                    self.text("qe_identity_signature")
                )
                .into_bytes(),
            )
            .with_header(
                "SGX-Enclave-Identity-Issuer-Chain",
                percent_encode(&self.text("qe_identity_issuer_chain")),
            ),
        );
        server.route(
            &pck_crl,
            Canned::ok(hex::decode(self.text("pck_crl")).unwrap()).with_header(
                "SGX-PCK-CRL-Issuer-Chain",
                percent_encode(&self.text("pck_crl_issuer_chain")),
            ),
        );
        server.route(&root, Canned::ok(self.text("root_ca_crl").into_bytes()));
    }
}

#[tokio::test]
async fn dcap_collateral_is_fetched_as_a_pcs_directory_that_verifies() {
    for case in [tdx(), sgx()] {
        let (server, base) = serve().await;
        case.routes(&server);
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("collateral");
        // A PCCS base URL given with its API path works the same.
        let fetcher = Fetcher::new(Options {
            pcs_url: format!("{base}/sgx/certification/v4/"),
            clock: clock(at(DCAP_TIME)).1,
            ..options(&base, Some(cache.path()))
        })
        .unwrap();

        let fetched = fetcher.fetch(&case.quote, &dir).await.unwrap();
        assert_eq!(server.log(), case.paths(), "{}", case.tee);
        assert_eq!(
            fetched.endorsement,
            Endorsement::Dcap {
                tee: case.tee,
                fmspc: case.fmspc.into(),
                ca: case.ca,
                dir: dir.clone(),
            }
        );
        assert_eq!(
            fetched.verify_args(),
            ["--collateral".to_string(), dir.display().to_string()]
        );

        // The directory loads with cordon-attest's loader, equals the bundle, and verifies the quote.
        let from_dir = cordon_attest::dcap::DcapCollateral::from_dir(&dir).unwrap();
        let from_json = cordon_attest::dcap::DcapCollateral::from_json(
            &serde_json::to_vec(&case.bundle).unwrap(),
        )
        .unwrap();
        assert_eq!(from_dir, from_json, "{}", case.tee);
        let endorsements = Endorsements {
            dcap_collateral: Some(from_dir),
            ..Endorsements::default()
        };
        let claims = cordon_attest::verify(&case.quote, &endorsements, at(DCAP_TIME)).unwrap();
        let expected = if case.tee == "tdx" {
            Platform::Tdx
        } else {
            Platform::Sgx
        };
        assert_eq!(claims.platform, expected);
        assert_eq!(
            claims.platform_id.as_deref().map(hex::encode_upper),
            Some(case.fmspc.to_string())
        );

        // Second fetch: every answer from the cache.
        let again = fetcher.fetch(&case.quote, &dir).await.unwrap();
        assert_eq!(server.log().len(), 4, "{}", case.tee);
        assert!(again.sources.iter().all(|s| s.from_cache), "{again:?}");
    }
}

#[tokio::test]
async fn root_ca_crl_url_is_configurable_and_der_is_taken_as_is() {
    let (server, base) = serve().await;
    let case = tdx();
    case.routes(&server);
    server.route(
        "/IntelSGXRootCA.der",
        Canned::ok(hex::decode(case.text("root_ca_crl")).unwrap()),
    );
    let out = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Options {
        root_ca_crl_url: Some(format!("{base}/IntelSGXRootCA.der")),
        ..options(&base, None)
    })
    .unwrap();
    fetcher.fetch(&case.quote, out.path()).await.unwrap();
    assert_eq!(server.log()[3], "/IntelSGXRootCA.der");
    assert_eq!(
        std::fs::read(out.path().join("root_ca_crl.der")).unwrap(),
        hex::decode(case.text("root_ca_crl")).unwrap()
    );
}

#[test]
fn default_root_ca_crl_url_is_the_pinned_roots_distribution_point() {
    let root = include_bytes!("../../cordon-attest/src/dcap/intel_sgx_root_ca.der");
    let url = cordon_fetch::INTEL_ROOT_CA_CRL_URL.as_bytes();
    assert!(root.windows(url.len()).any(|w| w == url));
}

// ---------------------------------------------------------------------------------------------
// Failures

#[tokio::test]
async fn offline_with_an_empty_cache_fails_naming_the_url() {
    let (server, base) = serve().await;
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Options {
        offline: true,
        ..options(&base, Some(cache.path()))
    })
    .unwrap();
    let case = tdx();
    let err = fetcher.fetch(&case.quote, out.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::NotCached { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("offline"), "{text}");
    assert!(
        text.contains(&format!("{base}{}", case.paths()[0])),
        "{text}"
    );
    assert!(server.log().is_empty());

    let err = Fetcher::new(Options {
        offline: true,
        ..options(&base, None)
    })
    .err()
    .unwrap();
    assert!(matches!(err, FetchError::OfflineWithoutCache), "{err}");
}

#[tokio::test]
async fn http_error_names_url_and_status() {
    let (server, base) = serve().await;
    let out = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Options {
        product: Some(Product::Milan),
        ..options(&base, None)
    })
    .unwrap();
    let report = fixture(SNP_REPORT);
    let err = fetcher.fetch(&report, out.path()).await.unwrap_err();
    let url = format!("{base}{}", expected_vcek_path(&report));
    assert!(
        matches!(&err, FetchError::Http { url: u, status: 404 } if *u == url),
        "{err}"
    );
    assert_eq!(err.to_string(), format!("GET {url}: HTTP 404"));
    assert_eq!(server.log().len(), 1);
    assert!(!out.path().join("vcek.der").exists());
}

#[tokio::test]
async fn oversized_response_is_refused() {
    let (server, base) = serve().await;
    let report = fixture(SNP_REPORT);
    kds_routes(&server, &report);
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Options {
        product: Some(Product::Milan),
        max_response_bytes: 1000,
        ..options(&base, Some(cache.path()))
    })
    .unwrap();
    let err = fetcher.fetch(&report, out.path()).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 1000, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&expected_vcek_path(&report)),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

/// Without Content-Length (chunked), the limit is enforced while reading.
#[tokio::test]
async fn oversized_chunked_response_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..4 {
            response.extend_from_slice(b"200\r\n");
            response.extend_from_slice(&[b'x'; 0x200]);
            response.extend_from_slice(b"\r\n");
        }
        response.extend_from_slice(b"0\r\n\r\n");
        let _ = socket.write_all(&response).await;
    });
    let out = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(Options {
        product: Some(Product::Milan),
        max_response_bytes: 1000,
        ..options(&base, None)
    })
    .unwrap();
    let err = fetcher
        .fetch(&fixture(SNP_REPORT), out.path())
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 1000, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_issuer_chain_header_is_refused_and_not_cached() {
    let case = tdx();
    let tcb_path = case.paths()[0].clone();
    let good_chain = percent_encode(&case.text("tcb_info_issuer_chain"));
    let mut truncated = case.text("tcb_info_issuer_chain");
    truncated.truncate(truncated.find("-----END").unwrap());
    for (header, value, expect) in [
        (
            "TCB-Info-Issuer-Chain",
            "not%20a%20certificate".to_string(),
            "expected -----BEGIN CERTIFICATE-----",
        ),
        (
            "TCB-Info-Issuer-Chain",
            good_chain.replacen('%', "%Z", 1),
            "invalid percent escape",
        ),
        (
            "TCB-Info-Issuer-Chain",
            percent_encode(&truncated),
            "no -----END CERTIFICATE-----",
        ),
        (
            "TCB-Info-Issuer-Chain",
            format!("{good_chain}trailing"),
            "expected -----BEGIN CERTIFICATE-----",
        ),
        (
            "X-Unrelated",
            good_chain.clone(),
            "no TCB-Info-Issuer-Chain header",
        ),
    ] {
        let (server, base) = serve().await;
        case.routes(&server);
        let mut canned = server.routes.lock().unwrap()[&tcb_path].clone();
        canned.headers = vec![(header.into(), value)];
        server.route(&tcb_path, canned);
        let cache = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(options(&base, Some(cache.path()))).unwrap();
        let err = fetcher.fetch(&case.quote, out.path()).await.unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::BadHeader { .. } | FetchError::MissingHeader { .. }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(expect), "{text}");
        assert!(text.contains(&format!("{base}{tcb_path}")), "{text}");
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
        assert!(!out.path().join("tcb_info.json").exists());
    }
}

#[tokio::test]
async fn bodies_of_the_wrong_shape_are_refused_and_bad_cache_entries_refetched() {
    let (server, base) = serve().await;
    let report = fixture(SNP_REPORT);
    let vcek_path = expected_vcek_path(&report);
    server.route(&vcek_path, Canned::ok(b"<html>busy</html>".to_vec()));
    server.route("/vcek/v1/Milan/crl", Canned::ok(stand_in_crl()));
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = Options {
        product: Some(Product::Milan),
        ..options(&base, Some(cache.path()))
    };
    let fetcher = Fetcher::new(opts.clone()).unwrap();
    let err = fetcher.fetch(&report, out.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::BadBody { .. }), "{err}");
    assert!(err.to_string().contains(&vcek_path), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);

    // A good answer is cached; a damaged entry is fetched again online, refused offline.
    kds_routes(&server, &report);
    fetcher.fetch(&report, out.path()).await.unwrap();
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 2);
    for entry in &entries {
        std::fs::write(entry, b"garbage").unwrap();
    }
    let offline = Fetcher::new(Options {
        offline: true,
        ..opts
    })
    .unwrap();
    let err = offline.fetch(&report, out.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::BadCacheEntry { .. }), "{err}");
    let requests = server.log().len();
    let fetched = fetcher.fetch(&report, out.path()).await.unwrap();
    assert!(fetched.sources.iter().all(|s| !s.from_cache));
    assert_eq!(server.log().len(), requests + 2);
    assert_eq!(
        std::fs::read(out.path().join("vcek.der")).unwrap(),
        fixture(SNP_VCEK)
    );
}
