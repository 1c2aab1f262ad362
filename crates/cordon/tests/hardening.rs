//! The runtime process hardens itself before it holds any secret: no core dumps (and the
//! limit at zero), memory locked when the limit allows, and it says which.

mod common;
use common::*;

#[test]
fn the_runtime_disables_core_dumps_and_says_whether_memory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    // A training-only runtime needs no KBS to boot.
    std::fs::write(
        p("rt.toml"),
        format!(
            "kbs_url = \"http://127.0.0.1:9\"\nkbs_public_key = \"{}\"\n\n[training]\n",
            "11".repeat(32)
        ),
    )
    .unwrap();
    let (rt, _) = start_runtime(dir.path(), &p("rt.toml"), "rt");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", rt.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{core}");
    let log = rt.log();
    assert!(log.contains("core dumps disabled"), "{log}");
    // Either locked, or a warning that names the limit to raise: never silent.
    let status = std::fs::read_to_string(format!("/proc/{}/status", rt.child.id())).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    if locked_kb > 0 {
        assert!(log.contains("memory locked"), "{log}");
    } else {
        assert!(log.contains("memory not locked: RLIMIT_MEMLOCK"), "{log}");
    }
}
