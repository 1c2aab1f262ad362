//! TLS on the wire, across real processes on loopback, with the test-only certificates of
//! `testdata/tls` (see its README): a KBS and a runtime serving https, the CLI and the proxy
//! talking to them with `--ca-cert`, a runtime whose measured configuration pins the KBS's CA;
//! and the refusals: no CA, a certificate for another name, plaintext to a TLS port.
//!
//! TLS is defence in depth only: everything here would be just as confidential over http.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

const LR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/breast_cancer_lr.onnx"
);
const DEMO_INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/demo_input.json");
const HOSPITAL_A: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/training/hospital_a.csv"
);

fn tls(name: &str) -> String {
    s(&Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tls")
        .join(name))
}

fn ca_pem() -> String {
    std::fs::read_to_string(tls("ca.pem")).unwrap()
}

/// The https URL of a server that wrote its address file (host:port, as without TLS), from the
/// `http://` URL that `common` makes of that file.
fn https(url: &str) -> String {
    let hostport = url.strip_prefix("http://").expect("addr file is host:port");
    assert!(!hostport.contains("://"), "{url}");
    format!("https://{hostport}")
}

/// Whether `err` refuses a server certificate that no trusted CA issued, as rustls names it (not
/// merely an error that mentions a certificate, such as one about the `--ca-cert` file).
fn unknown_issuer(err: &str) -> bool {
    err.contains("certificate") && err.contains("UnknownIssuer")
}

/// `cordon kbs serve` over TLS with `cert` and `key`, the sim trust anchor `dir/hw.pub`, the
/// admin token `dir/token`, its store in `dir/{name}-store` (two run at once in one directory);
/// its https URL.
fn start_kbs_tls(dir: &Path, name: &str, cert: &str, key: &str) -> (Proc, String) {
    let (kbs, url) = start_kbs_with(
        dir,
        name,
        &format!("{name}-store"),
        "info",
        &["--tls-cert", &tls(cert), "--tls-key", &tls(key)],
    );
    (kbs, https(&url))
}

/// `cordon runtime serve` (sim) with `config`; over TLS with `cert_key` when given. Its URL, or
/// its log if it exits first.
fn start_runtime_tls(
    dir: &Path,
    config: &Path,
    name: &str,
    cert_key: Option<(&str, &str)>,
) -> Result<(Proc, String), String> {
    let extra = match cert_key {
        Some((cert, key)) => vec![
            "--tls-cert".to_string(),
            tls(cert),
            "--tls-key".into(),
            tls(key),
        ],
        None => vec![],
    };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (rt, url) = try_start_runtime(dir, config, name, &extra);
    let url = url?;
    let url = match cert_key {
        Some(_) => https(&url),
        None => url,
    };
    Ok((rt, url))
}

/// Starts the server `args` with `--addr-file dir/{name}.addr` added; it must refuse to start:
/// its log, once it exited unsuccessfully. Bounded: a server that starts after all fails the test
/// instead of keeping it waiting.
fn refuses_to_start(dir: &Path, name: &str, args: &[&str]) -> String {
    let addr = dir.join(format!("{name}.addr"));
    let addr_arg = s(&addr);
    let mut args = args.to_vec();
    args.extend(["--addr-file", &addr_arg]);
    let mut server = Proc::start(&args, dir.join(format!("{name}.log")));
    match server.wait_ready(&addr) {
        Ok(url) => panic!("cordon {args:?} started at {url}:\n{}", server.log()),
        Err(log) => {
            let status = server.child.wait().unwrap();
            assert!(!status.success(), "cordon {args:?}: {status}\n{log}");
            log
        }
    }
}

/// A runtime configuration with the KBS at `kbs_url`, pinning `ca` (PEM) if given, and `extra`.
fn runtime_config(kbs_url: &str, ca: Option<&str>, extra: &str) -> String {
    let mut c = format!("kbs_url = \"{kbs_url}\"\n");
    if let Some(pem) = ca {
        c.push_str(&format!("kbs_ca_cert = '''\n{pem}'''\n"));
    }
    c.push_str(extra);
    c
}

fn model_section(dir: &Path) -> String {
    let signer = std::fs::read_to_string(dir.join("owner.pub")).unwrap();
    format!(
        "\n[[models]]\nname = \"lr\"\npath = \"{}\"\nsigner = \"{}\"\n",
        s(&dir.join("lr.sealed")),
        signer.trim()
    )
}

/// The owner key, the simulated hardware key and the sealed LR model in a new directory.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    ok(&["keygen", "--out", &s(&p("owner.key"))]);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    ok(&[
        "seal",
        LR,
        "--out",
        &s(&p("lr.sealed")),
        "--key-out",
        &s(&p("lr.dek")),
        "--owner-key",
        &s(&p("owner.key")),
        "--name",
        "lr",
    ]);
    dir
}

#[test]
fn kbs_runtime_cli_and_proxy_over_https() {
    let dir = setup();
    let p = |n: &str| dir.path().join(n);
    let ca = tls("ca.pem");
    let (kbs, kbs_url) = start_kbs_tls(dir.path(), "kbs", "server.pem", "server.key");
    assert!(kbs.log().contains("serving HTTPS"), "{}", kbs.log());
    let identity = std::fs::read_to_string(p("kbs.identity")).unwrap();

    // The identity as the KBS answers it over TLS, with the test CA.
    let answered = ok(&["kbs", "identity", "--kbs", &kbs_url, "--ca-cert", &ca]);
    assert_eq!(answered.trim(), identity.trim());
    // Without the CA (the web PKI roots alone) the KBS's certificate is refused; in plaintext
    // the TLS port answers nothing. Nothing falls back to http.
    let err = fails(&["kbs", "identity", "--kbs", &kbs_url]);
    assert!(unknown_issuer(&err), "{err}");
    let plain = kbs_url.replacen("https://", "http://", 1);
    let err = fails(&["kbs", "identity", "--kbs", &plain, "--ca-cert", &ca]);
    assert!(err.contains("connecting to KBS"), "{err}");

    // The runtime pins the test CA in its measured configuration, and reaches the KBS by name.
    let port = kbs_url.rsplit(':').next().unwrap();
    let config = runtime_config(
        &format!("https://localhost:{port}"),
        Some(&ca_pem()),
        &model_section(dir.path()),
    );
    std::fs::write(p("runtime.toml"), &config).unwrap();
    let (release, client, _) = sim_policies(dir.path(), &p("runtime.toml"), "runtime");
    let register = |ca: Option<&str>| {
        let mut args = vec![
            "kbs".to_string(),
            "register".into(),
            "--kbs".into(),
            kbs_url.clone(),
            "--kbs-key".into(),
            s(&p("kbs.identity")),
            "--token-file".into(),
            s(&p("token")),
            "--key".into(),
            s(&p("lr.dek")),
            "--policy".into(),
            s(&release),
        ];
        if let Some(ca) = ca {
            args.extend(["--ca-cert".into(), ca.to_string()]);
        }
        args
    };
    let err = fails(&register(None));
    assert!(unknown_issuer(&err), "{err}");
    let out = ok(&register(Some(&ca)));
    assert!(out.contains("registered key"), "{out}");

    let (runtime, rt_url) = start_runtime_tls(
        dir.path(),
        &p("runtime.toml"),
        "runtime",
        Some(("server.pem", "server-sec1.key")),
    )
    .unwrap_or_else(|e| panic!("runtime did not boot over TLS: {e}"));
    let log = runtime.log();
    assert!(log.contains("talking to the key broker over TLS"), "{log}");
    assert!(log.contains("kbs_ca_cert only"), "{log}");
    assert!(log.contains("serving HTTPS"), "{log}");

    // Inference over https, the CA from --ca-cert and from CORDON_CA_CERT: the answer is the
    // model's own (`cordon model run`).
    let reference = reference_output(LR, DEMO_INPUT);
    let infer = |ca_arg: bool| {
        let mut args = vec![
            "infer".to_string(),
            "--runtime".into(),
            rt_url.clone(),
            "--policy".into(),
            s(&client),
            "--model".into(),
            "lr".into(),
            "--input".into(),
            DEMO_INPUT.into(),
        ];
        if ca_arg {
            args.extend(["--ca-cert".into(), ca.clone()]);
        }
        args
    };
    for (args, env) in [(infer(true), None), (infer(false), Some(ca.as_str()))] {
        let out = ok_env(&args, env);
        assert!(out.contains("\"label\""), "{out}");
        let answer: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(probabilities(&answer), probabilities(&reference), "{out}");
    }
    // Without the CA, the client refuses the runtime's certificate before anything else.
    let err = fails(&infer(false));
    assert!(unknown_issuer(&err), "{err}");

    // The audit log over TLS: the key went to the runtime.
    let audit = ok_env(
        &[
            "kbs",
            "audit",
            "--kbs",
            &kbs_url,
            "--kbs-key",
            &s(&p("kbs.identity")),
            "--token-file",
            &s(&p("token")),
        ],
        Some(&ca),
    );
    assert!(audit.contains("key_released"), "{audit}");
    // Without --kbs-key: the identity the KBS serves over TLS, vouched for by the admin token.
    let audit = ok_env(
        &[
            "kbs",
            "audit",
            "--kbs",
            &kbs_url,
            "--token-file",
            &s(&p("token")),
        ],
        Some(&ca),
    );
    assert!(audit.contains("key_released"), "{audit}");

    // The verifying proxy: https to the runtime with --ca-cert, and https to the application.
    let (proxy, proxy_url) = start_proxy(
        dir.path(),
        &rt_url,
        &client,
        "proxy",
        &[
            "--ca-cert",
            &ca,
            "--tls-cert",
            &tls("server.pem"),
            "--tls-key",
            &tls("server.key"),
        ],
    );
    let proxy_url = https(&proxy_url);
    // The proxy writes its address file after the lines that announce it.
    assert!(
        proxy.log().contains(&format!("{proxy_url}/v2")),
        "{}",
        proxy.log()
    );
    let input = std::fs::read_to_string(DEMO_INPUT).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let trust =
            cordon_client::ClientTls::with_extra_ca_pem(ca_pem().as_bytes(), "test CA").unwrap();
        let http = trust.client(std::time::Duration::from_secs(30)).unwrap();
        let status: Value = http
            .get(format!("{proxy_url}/cordon/v1/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["state"], "verified", "{status}");
        let resp = http
            .post(format!("{proxy_url}/v2/models/lr/infer"))
            .header("content-type", "application/json")
            .body(input)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let body: Value = resp.json().await.unwrap();
        assert!(body["outputs"].is_array(), "{body}");
        assert_eq!(probabilities(&body), probabilities(&reference), "{body}");
        // Without the CA, the application's client refuses the proxy's certificate too.
        let err = cordon_client::ClientTls::default()
            .client(std::time::Duration::from_secs(5))
            .unwrap()
            .get(format!("{proxy_url}/cordon/v1/status"))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err}");
    });
}

#[test]
fn runtimes_and_clients_refuse_the_wrong_certificate() {
    let dir = setup();
    let p = |n: &str| dir.path().join(n);
    let ca = tls("ca.pem");
    // A KBS whose certificate (from the trusted CA) is for other.invalid, not 127.0.0.1.
    let (_other, other_url) = start_kbs_tls(dir.path(), "other", "other.pem", "other.key");
    let err = fails(&["kbs", "identity", "--kbs", &other_url, "--ca-cert", &ca]);
    assert!(err.contains("not valid for name"), "{err}");
    let rt_config = |name: &str, kbs_url: &str, ca: Option<&str>| {
        let path = p(name);
        std::fs::write(
            &path,
            runtime_config(kbs_url, ca, &model_section(dir.path())),
        )
        .unwrap();
        path
    };
    // A runtime pinning the right CA refuses it as well, before asking for anything.
    let config = rt_config("pinned-other.toml", &other_url, Some(&ca_pem()));
    let err = start_runtime_tls(dir.path(), &config, "pinned-other", None)
        .err()
        .expect("runtime must not boot");
    assert!(err.contains("not valid for name"), "{err}");

    // A KBS with the right name: a runtime without kbs_ca_cert verifies it against the web PKI
    // roots, which do not hold the test CA: refused.
    let (_kbs, kbs_url) = start_kbs_tls(dir.path(), "kbs", "server.pem", "server.key");
    let config = rt_config("web-pki.toml", &kbs_url, None);
    let err = start_runtime_tls(dir.path(), &config, "web-pki", None)
        .err()
        .expect("runtime must not boot");
    assert!(unknown_issuer(&err), "{err}");
    // kbs_ca_cert with an http:// KBS would pin nothing: refused at boot.
    let plain = kbs_url.replacen("https://", "http://", 1);
    let config = rt_config("plain.toml", &plain, Some(&ca_pem()));
    let err = start_runtime_tls(dir.path(), &config, "plain", None)
        .err()
        .expect("runtime must not boot");
    assert!(err.contains("kbs_ca_cert is set but kbs_url"), "{err}");
    // A kbs_ca_cert that holds no certificate: refused at boot.
    let config = rt_config("garbage.toml", &kbs_url, Some("not a certificate\n"));
    let err = start_runtime_tls(dir.path(), &config, "garbage", None)
        .err()
        .expect("runtime must not boot");
    assert!(err.contains("kbs_ca_cert"), "{err}");
    // A server whose key does not match its certificate does not start.
    let err = refuses_to_start(
        dir.path(),
        "mismatch",
        &[
            "kbs",
            "serve",
            "--data-dir",
            &s(&p("mismatch-store")),
            "--listen",
            "127.0.0.1:0",
            "--init-admin-token-file",
            &s(&p("token2")),
            "--tls-cert",
            &tls("server.pem"),
            "--tls-key",
            &tls("other.key"),
        ],
    );
    assert!(err.contains("TLS certificate"), "{err}");
    // --tls-cert without --tls-key is a usage error.
    let err = refuses_to_start(
        dir.path(),
        "no-key",
        &[
            "kbs",
            "serve",
            "--data-dir",
            &s(&p("mismatch-store")),
            "--tls-cert",
            &tls("server.pem"),
        ],
    );
    assert!(err.contains("--tls-key"), "{err}");
}

/// One party trains over https: the dataset key registered with the KBS, the sealed dataset
/// uploaded, the job run (the runtime fetches the dataset key from the KBS over TLS, pinned by its
/// configuration's kbs_ca_cert) and its output registered with the KBS for serving, over TLS too.
#[test]
fn a_training_job_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let ca = tls("ca.pem");
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    let (_kbs, kbs_url) = start_kbs_tls(dir.path(), "kbs", "server.pem", "server.key");
    let kbs_key = kbs_key(dir.path(), "kbs");
    let config = runtime_config(
        &kbs_url,
        Some(&ca_pem()),
        &format!("kbs_public_key = \"{kbs_key}\"\n\n[training]\nmax_dataset_mib = 16\n"),
    );
    std::fs::write(p("trainer.toml"), config).unwrap();
    let (release, verify, _) = sim_policies(dir.path(), &p("trainer.toml"), "trainer");
    let (_trainer, runtime) = start_runtime_tls(
        dir.path(),
        &p("trainer.toml"),
        "trainer",
        Some(("server.pem", "server.key")),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let clinic = new_party(dir.path(), "clinic", HOSPITAL_A, "csv");
    let register = dataset_register_args(&clinic, &release, &kbs_url, &kbs_key);
    let err = fails(&register);
    assert!(unknown_issuer(&err), "{err}");
    ok_env(&register, Some(&ca));
    let upload = dataset_upload_args(&clinic, &runtime, &verify);
    let err = fails(&upload);
    assert!(unknown_issuer(&err), "{err}");
    ok_env(&upload, Some(&ca));

    let features = csv_features(&std::fs::read_to_string(HOSPITAL_A).unwrap());
    let spec = serde_json::json!({
        "name": "clinic over https",
        "parties": [clinic.entry],
        "datasets": [clinic.dataset],
        "schema": {"features": features, "label": "label"},
        "algorithm": {"kind": "logistic_regression", "c": 1.0},
        "evaluation": {"test_fraction": 0.3, "seed": 5},
        "outputs": {
            "recipients": ["clinic"],
            "serve": {"policy": std::fs::read_to_string(&release).unwrap()},
        },
    });
    std::fs::write(p("job.json"), serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    // A job command as the clinic, over https with the CA from CORDON_CA_CERT.
    let with = |args: &[&str]| -> String {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--party".to_string(),
            s(&clinic.file),
            "--runtime".into(),
            runtime.clone(),
            "--policy".into(),
            s(&verify),
        ]);
        ok_env(&a, Some(&ca))
    };
    let created = with(&["job", "create", "--spec", &s(&p("job.json"))]);
    let hash = job_hash(&created);
    with(&[
        "job",
        "approve",
        "--job",
        &hash,
        "--spec",
        &s(&p("job.json")),
    ]);
    // Finished means the runtime fetched the dataset key and registered the output's key with
    // the KBS, both over TLS.
    let done = with(&["job", "submit", "--job", &hash, "--wait", "120"]);
    assert!(done.contains("finished"), "{done}");
    with(&["job", "result", "--job", &hash, "--out-dir", &s(&p("out"))]);
    assert!(p("out/model.sealed").exists());
    let audit = ok_env(
        &[
            "kbs",
            "audit",
            "--kbs",
            &kbs_url,
            "--kbs-key",
            &kbs_key,
            "--token-file",
            &s(&p("token")),
        ],
        Some(&ca),
    );
    assert!(audit.contains("job_output_registered"), "{audit}");
}
