//! The KBS attests its own identity key (`kbs serve --tee sim`), and owners and parties verify that
//! evidence against a KBS policy of their own (`--kbs-policy`) before they seal a key to it. Each
//! refusal must happen before anything is sent: the KBS's audit log stays without a registration.

mod common;
use common::*;
use std::path::Path;

/// Writes a KBS policy naming `measurement` (hex) and the sim trust anchor `dir/hw.pub`.
fn kbs_policy(dir: &Path, file: &str, measurement: &str, allow_debug: bool) -> String {
    let anchor = std::fs::read_to_string(dir.join("hw.pub")).unwrap();
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!(
            "platforms = [\"sim\"]\nlaunch_measurements = [\"{measurement}\"]\n\
             allow_debug = {allow_debug}\n\n[endorsements]\nsim_trust_anchors = [\"{}\"]\n",
            anchor.trim()
        ),
    )
    .unwrap();
    s(&path)
}

fn register_args(dir: &Path, url: &str, dek: &str, kbs_policy: &str) -> Vec<String> {
    let p = |f: &str| s(&dir.join(f));
    [
        "kbs",
        "register",
        "--kbs",
        url,
        "--token-file",
        &p("token"),
        "--key",
        &p(dek),
        "--policy",
        &p("release.toml"),
        "--kbs-policy",
        kbs_policy,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn registered_keys(dir: &Path, url: &str) -> Vec<String> {
    let audit = ok(&[
        "kbs",
        "audit",
        "--kbs",
        url,
        "--token-file",
        &s(&dir.join("token")),
    ]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    events
        .iter()
        .filter(|e| e["kind"] == "key_registered" || e["kind"] == "dataset_key_registered")
        .map(|e| e["key_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn owners_and_parties_verify_the_kbs_before_sealing_a_key_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |f: &str| s(&d.join(f));
    ok(&["sim", "keygen", "--out", &p("hw.key")]);
    let (kbs, url) = start_kbs_with(
        d,
        "kbs",
        "kbs",
        "info",
        &["--tee", "sim", "--sim-hardware-key", &p("hw.key")],
    );
    let log = kbs.log();
    assert!(
        log.contains("SIMULATED") && log.contains("NOT hardware-backed"),
        "{log}"
    );
    // The reference value a party computes on its own machine, from the binary and the anchors.
    let measurement = ok(&["kbs", "measure", "--sim-trust-anchor", &p("hw.pub")])
        .trim()
        .to_string();
    assert_eq!(measurement.len(), 96, "{measurement}");
    assert!(log.contains(&measurement), "{log}");
    let good = kbs_policy(d, "kbs-policy.toml", &measurement, false);

    // `kbs identity --kbs-policy`: the attested key, and a loud SIMULATED.
    let out = cordon(&["kbs", "identity", "--kbs", &url, "--kbs-policy", &good]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        kbs_key(d, "kbs")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SIMULATED, NOT hardware-backed"), "{err}");

    ok(&["keygen", "--out", &p("owner.key")]);
    std::fs::write(d.join("model.bin"), b"a model").unwrap();
    let seal = |n: &str| {
        ok(&[
            "seal",
            &p("model.bin"),
            "--out",
            &p(&format!("{n}.sealed")),
            "--key-out",
            &p(&format!("{n}.dek")),
            "--owner-key",
            &p("owner.key"),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join(format!("{n}.dek"))).unwrap())
                .unwrap();
        v["key_id"].as_str().unwrap().to_string()
    };
    let (refused_id, accepted_id) = (seal("refused"), seal("accepted"));
    std::fs::write(
        d.join("release.toml"),
        format!(
            "platforms = [\"sim\"]\nlaunch_measurements = [\"{}\"]\n",
            "11".repeat(48)
        ),
    )
    .unwrap();

    // A measurement the owner's policy does not list: refused, naming the measurement.
    let other = kbs_policy(d, "other-policy.toml", &"ab".repeat(48), false);
    let err = fails(&register_args(d, &url, "refused.dek", &other));
    assert!(err.contains("launch_measurement"), "{err}");
    assert!(err.contains(&measurement), "{err}");
    assert!(err.contains("nothing was sealed"), "{err}");
    // A key pinned alongside the policy must be the attested one.
    let mut pinned_other = register_args(d, &url, "refused.dek", &good);
    pinned_other.extend(["--kbs-key".to_string(), "22".repeat(32)]);
    let err = fails(&pinned_other);
    assert!(err.contains("is not the pinned key"), "{err}");
    assert!(registered_keys(d, &url).is_empty());

    // The happy path: the owner registers with the attested key, no pin needed.
    let mut pinned_same = register_args(d, &url, "accepted.dek", &good);
    pinned_same.extend(["--kbs-key".to_string(), kbs_key(d, "kbs")]);
    ok(&pinned_same);
    assert_eq!(registered_keys(d, &url), vec![accepted_id.clone()]);
    assert!(!registered_keys(d, &url).contains(&refused_id));

    // A party registers its dataset key with --kbs-policy instead of --kbs-key.
    std::fs::write(d.join("data.csv"), "a,b,label\n1,2,0\n3,4,1\n").unwrap();
    let party = new_party(d, "hospital-a", &p("data.csv"), "csv");
    let mut args = dataset_register_args(&party, &d.join("release.toml"), &url, "unused");
    let at = args.iter().position(|a| a == "--kbs-key").unwrap();
    args.drain(at..at + 2);
    let err = fails(&args);
    assert!(
        err.contains("--kbs-key") || err.contains("kbs-policy"),
        "{err}"
    );
    let mut bad = args.clone();
    bad.extend(["--kbs-policy".to_string(), other.clone()]);
    let err = fails(&bad);
    assert!(err.contains("launch_measurement"), "{err}");
    args.extend(["--kbs-policy".to_string(), good.clone()]);
    ok(&args);
    let dataset_key = party.dataset["key_id"].as_str().unwrap().to_string();
    assert!(registered_keys(d, &url).contains(&dataset_key));
}

#[test]
fn a_kbs_without_evidence_or_in_debug_mode_is_refused_by_a_kbs_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |f: &str| s(&d.join(f));
    ok(&["sim", "keygen", "--out", &p("hw.key")]);
    let measurement = ok(&["kbs", "measure", "--sim-trust-anchor", &p("hw.pub")])
        .trim()
        .to_string();
    let strict = kbs_policy(d, "strict.toml", &measurement, false);
    let lenient = kbs_policy(d, "lenient.toml", &measurement, true);

    // Without --tee (as before): no evidence, so a party with a KBS policy sends nothing.
    let (_plain, plain_url) = start_kbs(d, "plain");
    let err = fails(&[
        "kbs",
        "identity",
        "--kbs",
        &plain_url,
        "--kbs-policy",
        &strict,
    ]);
    assert!(err.contains("no TEE evidence"), "{err}");
    // Without a policy the key is still printed, as before.
    let key = ok(&["kbs", "identity", "--kbs", &plain_url]);
    assert_eq!(key.trim(), kbs_key(d, "plain"));

    // A debug KBS: refused unless the policy allows debug.
    let (_debug, debug_url) = start_kbs_with(
        d,
        "debug",
        "debug-store",
        "info",
        &[
            "--tee",
            "sim",
            "--sim-hardware-key",
            &p("hw.key"),
            "--sim-debug",
        ],
    );
    let err = fails(&[
        "kbs",
        "identity",
        "--kbs",
        &debug_url,
        "--kbs-policy",
        &strict,
    ]);
    assert!(err.contains("debug"), "{err}");
    let key = ok(&[
        "kbs",
        "identity",
        "--kbs",
        &debug_url,
        "--kbs-policy",
        &lenient,
    ]);
    assert_eq!(key.trim(), kbs_key(d, "debug"));

    // --sim-debug without --tee sim is a mistake, not a silent no-op.
    let mut args = kbs_serve_args(d, "bad", "bad-store");
    args.push("--sim-debug".into());
    let out = cordon(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tee sim only"));
}
